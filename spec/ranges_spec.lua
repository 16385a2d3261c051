-- Out-of-range numbers (negative, zero where it spins, NaN, infinity,
-- beyond 32 bits) are refused with a bad-argument error instead of being
-- wrapped, clamped or silently rounded.
local h = require "spec.helper"
local orch = h.orch
local ctl = require "orch.ctl"

local nan, inf = 0 / 0, math.huge

describe("out-of-range values", function()
  it("raise bad-argument errors (table-driven)", function()
    local dir = h.tmpdir()
    h.write(dir .. "/m", ("x"):rep(4096))
    local key_range = "(option 'key': out of range (1 to 0xffffffff))"
    local cases = {
      -- SysV keys: -1 once became 0xffffffff
      { function() return orch.sem.open{ key = -1, create = true } end, "bad argument #1 to 'open' " .. key_range },
      { function() return orch.sem.open{ key = 2^32, create = true } end, "bad argument #1 to 'open' " .. key_range },
      { function() return orch.msg.open{ key = -1, create = true } end, "bad argument #1 to 'open' " .. key_range },
      { function() return orch.shm.open{ key = -2, size = 4096, create = true } end, "bad argument #1 to 'open' " .. key_range },
      { function() return orch.sem.open{ key = nan, create = true } end, "bad argument #1 to 'open' (option 'key'" },
      -- mmap sizes: -1 once mapped the whole file
      { function() return orch.mmap{ path = dir .. "/m", size = -1 } end, "bad argument #1 to 'mmap' (option 'size': size must be >= 1)" },
      { function() return orch.mmap{ path = dir .. "/m", size = 0 } end, "bad argument #1 to 'mmap' (option 'size': size must be >= 1)" },
      { function() return orch.mmap{ anonymous = true, size = -4096 } end, "bad argument #1 to 'mmap' (option 'size': size must be >= 1)" },
      { function() return orch.mmap{ anonymous = true, size = nan } end, "bad argument #1 to 'mmap' (option 'size'" },
      -- timers: every(0) once became 1 ms silently
      { function() return orch.timer.every(0, function() end) end, "bad argument #1 to 'every' (seconds must be > 0)" },
      { function() return orch.timer.every(nan, function() end) end, "bad argument #1 to 'every' (seconds must be a finite number >= 0)" },
      { function() return orch.timer.every(inf, function() end) end, "bad argument #1 to 'every' (seconds must be a finite number >= 0)" },
      { function() return orch.timer.after(-1, function() end) end, "bad argument #1 to 'after' (seconds must be a finite number >= 0)" },
      { function() return orch.timer.after(nan, function() end) end, "bad argument #1 to 'after' (seconds must be a finite number >= 0)" },
      { function() return orch.sleep(nan) end, "seconds must be a finite number >= 0" },
      -- exit codes: 256 would exit 0
      { function() return orch.exit(256) end, "bad argument #1 to 'exit' (exit code 0 to 255 expected)" },
      { function() return orch.exit(-1) end, "bad argument #1 to 'exit' (exit code 0 to 255 expected)" },
      -- the control server's limits
      { function() return ctl.serve{ socket = dir .. "/c.sock", idle_timeout = nan } end, "bad argument #1 to 'serve' (option 'idle_timeout': positive number expected)" },
      { function() return ctl.serve{ socket = dir .. "/c.sock", idle_timeout = inf } end, "bad argument #1 to 'serve' (option 'idle_timeout': positive number expected)" },
      { function() return ctl.serve{ socket = dir .. "/c.sock", idle_timeout = -1 } end, "bad argument #1 to 'serve' (option 'idle_timeout': positive number expected)" },
      { function() return ctl.serve{ socket = dir .. "/c.sock", max_connections = -1 } end, "bad argument #1 to 'serve' (option 'max_connections': positive integer expected)" },
      { function() return ctl.serve{ socket = dir .. "/c.sock", max_line = inf } end, "bad argument #1 to 'serve' (option 'max_line': positive integer expected)" },
    }
    h.run(function() h.check_raises(cases) end)
    -- Nothing was created by a refused call.
    assert.are.equal("m", h.sh("ls -A " .. h.shquote(dir)))
  end)

  it("a timer below the loop clock's millisecond still fires, repeatedly", function()
    h.run(function()
      local n = 0
      local t = orch.timer.every(0.0001, function() n = n + 1 end)
      h.eventually(function() return n >= 3 end, "three firings")
      t:stop()
    end)
  end)
end)
