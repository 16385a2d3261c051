-- orch.exit() in an orch.fork child after the parent used libuv's threadpool
-- (mmap:sync, a connect by host name, term.readline from a file): libuv's
-- exit-time teardown would join threads that do not exist in the child
-- (SIGSEGV or a spin). The child ends with _exit instead, with its code,
-- its to-be-closed variables closed and its stdio flushed.
local h = require "spec.helper"
local orch = h.orch

local uses = {
  mmap_sync = [[
    local f = io.open(DIR .. "/m", "w"); f:write(("x"):rep(4096)); f:close()
    local m = assert(orch.mmap{ path = DIR .. "/m" })
    assert(m:sync())
  ]],
  connect_by_name = [[
    local l = assert(orch.listen{ host = "127.0.0.1", port = 0 })
    local s = assert(orch.connect{ host = "localhost", port = l.port })
    s:close(); l:close()
  ]],
  readline_from_file = [[
    assert(orch.term.readline() == "a line")
  ]],
}

describe("orch.exit in an orch.fork child", function()
  for name, use in pairs(uses) do
    it("exits with its code after the parent used the threadpool (" .. name .. ")", function()
      local dir = h.tmpdir()
      local script = h.script("local orch = require 'orch'\nlocal DIR = " .. string.format("%q", dir) .. "\n"
        .. use .. [[
        local p = assert(orch.fork(function()
          local c <close> = setmetatable({}, { __close = function() io.stdout:write("closed ") end })
          io.stdout:write("child ")
          orch.exit(3)
        end))
        local code, sig = p:wait()
        print("parent", code, sig)
      ]])
      local code, out, err = h.cli({ "run", script }, "a line\n")
      assert.are.equal("", err)
      assert.are.equal("child closed parent\t3\tnil\n", out)
      assert.are.equal(0, code)
    end)
  end

  it("never returns into the host's code (orch.run from a host Lua)", function()
    local dir = h.tmpdir()
    h.run(function()
      h.write(dir .. "/m", ("x"):rep(4096))
      local m = assert(orch.mmap{ path = dir .. "/m" })
      assert(m:sync())
      local p = assert(orch.fork(function() orch.exit(7) end))
      assert.are.same({ 7 }, { p:wait() })
      -- A child with nothing left to wait for ends with 1, not in the host.
      local p2 = assert(orch.fork(function() orch.cond():wait() end))
      assert.are.same({ 1 }, { p2:wait() })
      m:unmap()
    end)
  end)
end)
