-- The supervisor: log capture (files with size rotation, timestamps,
-- filters, tails, orch's own log) and bounded memory under a flood.
local u = require "spec.supervisor_util"
local h, orch = u.h, u.orch

local function lines_of(path)
  local t = {}
  local f = io.open(path)
  if not f then return nil end
  for l in f:lines() do t[#t + 1] = l end
  f:close()
  return t
end

local function size_of(path)
  local f = io.open(path)
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

describe("supervisor logs", function()
  it("rotates log files by size and keeps `keep` of them", function()
    u.with(function(s, _, dir)
      -- 400 numbered lines of 100 bytes (99 + newline).
      s.service { name = "rot", restart = "never", log = { dir = dir, max_bytes = 2000, keep = 3 },
        cmd = u.sh("i=0; while [ $i -lt 400 ]; do printf 'line %04d %089d\\n' $i 0; i=$((i+1)); done") }
      s.start("rot")
      assert.is_true(s.wait("rot", "exited", 20))
      local base = dir .. "/rot.log"
      for _, p in ipairs { base, base .. ".1", base .. ".2", base .. ".3" } do
        local n = size_of(p)
        assert.truthy(n, p .. " missing")
        assert.is_true(n <= 2000 and n > 0)
      end
      assert.is_nil(size_of(base .. ".4"))
      -- The newest lines are in rot.log, the ones before in rot.log.1, ...
      local cur, prev = lines_of(base), lines_of(base .. ".1")
      assert.matches("^line 0399 ", cur[#cur])
      local last_prev = tonumber(prev[#prev]:match("^line (%d+)"))
      local first_cur = tonumber(cur[1]:match("^line (%d+)"))
      assert.are.equal(last_prev + 1, first_cur)
      assert.are.equal(20, #prev)
    end)
  end)

  it("keeps a tail, cuts long lines, stamps and filters lines", function()
    u.with(function(s, logs, dir)
      s.service { name = "tl", restart = "never", log = { dir = dir, tail = 3, max_line = 100, timestamps = true },
        cmd = u.sh("for i in 1 2 3 4 5; do echo l$i; done; printf '%0250d\\n' 7; printf 'no newline'") }
      s.service { name = "flt", restart = "never", log = { tail = 10, filter = function(line)
          if line:find("secret") then return nil end
          if line == "boom" then error("filter bug") end
          return line:upper()
        end },
        cmd = u.sh("echo public; echo secret stuff; echo boom; echo err >&2") }
      s.service { name = "noerr", restart = "never", log = { stderr = false, tail = 10 },
        cmd = u.sh("echo out; [ $(readlink /proc/$$/fd/2) = $(readlink /proc/$$/fd/1) ] && echo same >&2") }
      s.start("all")
      assert.is_true(s.wait("all", "exited", 10))
      assert.is_true(u.until_true(function() return #s.tail("tl") == 3 and s.tail("tl")[3] == "no newline" end))
      assert.are.same({ string.rep("0", 49) .. "7", "no newline" }, { s.tail("tl")[2], s.tail("tl")[3] })
      assert.are.same({ "no newline" }, s.tail("tl", 1))
      assert.are.same({}, s.tail("tl", 0))
      local file = lines_of(dir .. "/tl.log")
      assert.are.equal(9, #file)   -- 5 short lines, 250 bytes cut in 3, and the last one
      for _, l in ipairs(file) do
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ ", l)
      end
      assert.matches("Z l1$", file[1])
      assert.is_true(u.until_true(function() return #s.tail("flt") == 3 end))
      assert.are.same({ "PUBLIC", "boom", "ERR" }, s.tail("flt"))
      assert.truthy(u.logged(logs, "flt: log filter failed (1 times): "))
      assert.is_true(u.until_true(function() return #s.tail("noerr") == 1 end))
      assert.are.same({ "out" }, s.tail("noerr"))
    end)
  end)

  it("writes to orch's log without a directory, or inherits, or discards", function()
    u.with(function(s, _, dir, output)
      s.service { name = "own", restart = "never", cmd = u.sh("echo hello from own") }
      s.service { name = "null", restart = "never", log = "null", cmd = u.sh("echo hidden") }
      s.service { name = "inh", restart = "never", log = false, cmd = u.sh("echo inherited >/dev/null") }
      s.start("all")
      assert.is_true(s.wait("all", "exited", 10))
      assert.is_true(u.until_true(function() return output.own ~= nil end))
      assert.are.same({ "hello from own" }, output.own)
      assert.is_nil(output.null)
      assert.are.same({}, s.tail("null"))
      assert.are.equal(0, u.st(s, "null").log_lines)
      assert.are.equal(1, u.st(s, "own").log_lines)
    end)
  end)

  it("keeps orch's memory bounded while a service prints 100 MB", function()
    local function rss_kib()
      return tonumber(h.slurp("/proc/self/status"):match("VmRSS:%s*(%d+)"))
    end
    local text = "flooding the supervisor with a line of text, over and over, quickly"
    u.with(function(s, _, dir)
      s.service { name = "flood", restart = "never", log = { dir = dir, max_bytes = "8M", keep = 1 },
        cmd = u.sh("yes '" .. text .. "' | head -c 100000000") }
      s.service { name = "calm", cmd = u.sh("while :; do echo tick; sleep 0.05; done") }
      collectgarbage()
      local before, lua_before = rss_kib(), collectgarbage("count")
      local lua_peak = lua_before
      local t0 = orch.now()
      s.start("all")
      local peak = before
      local ticks_during = 0
      while u.st(s, "flood").state ~= "exited" and orch.now() - t0 < 120 do
        orch.sleep(0.05)
        peak = math.max(peak, rss_kib())
        lua_peak = math.max(lua_peak, collectgarbage("count"))
        ticks_during = u.st(s, "calm").log_lines
      end
      assert.are.equal("exited", u.st(s, "flood").state)
      local want = math.ceil(100000000 / (#text + 1))
      assert.is_true(u.until_true(function() return u.st(s, "flood").log_lines >= want end, 30))
      local st = u.st(s, "flood")
      -- Every line went through (the last one cut by head), none dropped...
      assert.are.equal(want, st.log_lines)
      assert.are.equal(0, st.log_dropped)
      -- ... the files hold at most max_bytes * (keep + 1) ...
      assert.is_true(size_of(dir .. "/flood.log") <= 8 * 1024 * 1024)
      assert.is_true(size_of(dir .. "/flood.log.1") <= 8 * 1024 * 1024)
      assert.is_nil(size_of(dir .. "/flood.log.2"))
      -- ... the other service was served meanwhile, and orch's memory stayed
      -- within a bound far below what went through it.
      assert.is_true(ticks_during > 0)
      local growth = peak - before
      -- Under ASan the allocator keeps freed memory in its quarantine (256 MiB
      -- by default), so the process's RSS says nothing there: the Lua heap
      -- is bounded instead.
      if h.slurp("/proc/self/maps"):find("libasan", 1, true) then
        growth = lua_peak - lua_before
      end
      if os.getenv("SUP_VERBOSE") then print(string.format("\nflood: %.2fs, rss before %d KiB, peak %d KiB, lua %.0f -> %.0f KiB, ticks %d", orch.now() - t0, before, peak, lua_before, lua_peak, ticks_during)) end
      assert.is_true(growth < 32 * 1024, string.format("memory grew by %.0f KiB (RSS before %d KiB)", growth, before))
    end, 180)
  end)
end)
