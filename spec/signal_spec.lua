-- Signals: orch.signal.on/ignore/default/name/number, orch.kill, orch.killpg.
-- Real signals, sent by real processes (orch refuses to signal itself).
local h = require "spec.helper"
local orch = h.orch

local prog = h.progs .. "/prog_proc"

local eventually = h.eventually

-- Sends sig to this process from another process.
local function signal_me(sig)
  local p = assert(orch.spawn{ "kill", "-" .. sig, tostring(orch.getpid()) })
  assert.are.same({ 0, nil }, { p:wait() })
end

-- This process's ignored-signal mask (SigIgn in /proc/self/status).
local function ignored(signum)
  local mask = tonumber(h.slurp("/proc/self/status"):match("SigIgn:%s*(%x+)"), 16)
  return (mask >> (signum - 1)) & 1 == 1
end

-- No child may be left, not even a zombie (read from /proc).
after_each(function()
  assert.are.same({}, h.children())
end)

describe("orch.signal.name and number", function()
  it("convert both ways", function()
    assert.are.equal("TERM", orch.signal.name(15))
    assert.are.equal(15, orch.signal.number("TERM"))
    assert.are.equal(15, orch.signal.number("SIGTERM"))
    assert.are.equal(15, orch.signal.number("term"))
    assert.are.equal("KILL", orch.signal.name(9))
    assert.are.equal("TERM", orch.signal.name("SIGTERM"))
    assert.are.equal("CHLD", orch.signal.name("CLD"))
    assert.are.equal(10, orch.signal.number(10))
    assert.are.equal("RTMIN+1", orch.signal.name(orch.signal.number("RTMIN+1")))
    for n = 1, 31 do
      local name = orch.signal.name(n)
      assert.is_string(name)
      assert.are.equal(n, orch.signal.number(name))
    end
  end)

  it("return nil for unknown signals", function()
    assert.is_nil(orch.signal.name(0))
    assert.is_nil(orch.signal.name(999))
    assert.is_nil(orch.signal.name("NOPE"))
    assert.is_nil(orch.signal.number("NOPE"))
    assert.is_nil(orch.signal.number(-3))
    assert.is_nil(orch.signal.number(1.5))
  end)
end)

describe("orch.signal.on", function()
  it("runs the handler as a task with the signal's name", function()
    h.run(function()
      local got = {}
      local s = orch.signal.on("USR1", function(name)
        got[#got + 1] = { name, orch.current() ~= nil }
      end)
      assert.are.equal("orch.Signal: USR1 active", tostring(s))
      signal_me("USR1")
      eventually(function() return #got == 1 end, "USR1 handled")
      assert.are.same({ "USR1", true }, got[1])
      signal_me("USR1")
      eventually(function() return #got == 2 end, "USR1 handled twice")
      s:stop()
      assert.is_false(s:active())
      assert.are.equal("orch.Signal: stopped", tostring(s))
      s:stop()   -- idempotent
    end)
  end)

  it("accepts numbers and several handlers for one signal", function()
    h.run(function()
      local a, b = 0, 0
      local s1 = orch.signal.on(12, function() a = a + 1 end)
      local s2 = orch.signal.on("SIGUSR2", function() b = b + 1 end)
      signal_me("USR2")
      eventually(function() return a == 1 and b == 1 end, "both handlers")
      s1:stop()
      signal_me("USR2")
      eventually(function() return b == 2 end, "second handler only")
      assert.are.equal(1, a)
      s2:stop()
    end)
  end)

  it("does not keep orch running by itself", function()
    -- (were it ref'd, this run would never return)
    local s
    h.run(function() s = orch.signal.on("HUP", function() end) end)
    assert.is_true(s:active())
    s:stop()
  end)

  it("keeps running when the script drops the handle", function()
    h.run(function()
      local got = false
      local weak = setmetatable({}, { __mode = "v" })
      weak[1] = orch.signal.on("USR1", function() got = true end)
      collectgarbage(); collectgarbage()
      assert.is_not_nil(weak[1])          -- anchored while active
      signal_me("USR1")
      eventually(function() return got end, "a dropped handler still runs")
      weak[1]:stop()
    end)
  end)

  it("a handler that raises is reported and the loop goes on", function()
    h.run(function()
      local n = 0
      local s = orch.signal.on("WINCH", function() n = n + 1; error("handler failure (expected by signal_spec)") end)
      signal_me("WINCH")
      eventually(function() return n == 1 end, "WINCH")
      signal_me("WINCH")
      eventually(function() return n == 2 end, "WINCH again")
      s:stop()
    end)
  end)

  it("closes with <close>", function()
    h.run(function()
      local s
      do
        local c <close> = orch.signal.on("USR2", function() end)
        s = c
        assert.is_true(s:active())
      end
      assert.is_false(s:active())
    end)
  end)
end)

describe("orch.signal.ignore and default", function()
  it("set the disposition", function()
    h.run(function()
      assert.is_true(orch.signal.ignore("URG"))
      assert.is_true(ignored(23))
      signal_me("URG")
      assert.is_true(orch.signal.default("URG"))
      assert.is_false(ignored(23))
      -- an ignored TERM does not kill us
      assert.is_true(orch.signal.ignore("TERM"))
      signal_me("TERM")
      orch.sleep(0.05)
      assert.is_true(orch.signal.default("TERM"))
    end)
  end)

  it("refuse a signal that has active handlers", function()
    h.run(function()
      local s = orch.signal.on("USR1", function() end)
      assert.are.same({ nil, "signal.ignore: USR1 has active handlers (stop them first)", "EBUSY" },
        { orch.signal.ignore("USR1") })
      assert.are.same({ nil, "signal.default: USR1 has active handlers (stop them first)", "EBUSY" },
        { orch.signal.default("USR1") })
      s:stop()
    end)
  end)
end)

describe("orch.kill and orch.killpg", function()
  it("signal a process, with an optional start-time check", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "100" })
      assert.is_true(orch.kill(p.pid, 0))             -- existence check
      local start = assert(orch.proc.start_time(p.pid))
      assert.are.same({ nil, "kill: pid " .. p.pid .. " is gone or was reused", "ESRCH" },
        { orch.kill(p.pid, "TERM", start + 1) })
      assert.is_true(p:running())
      assert.is_true(orch.kill(p.pid, "TERM", start))
      assert.are.same({ nil, "TERM" }, { p:wait() })
      -- gone: both forms say so
      local q = assert(orch.spawn{ prog, "exit", "0" })
      local qs = assert(orch.proc.start_time(q.pid))
      q:wait()
      assert.are.same({ nil, "kill: pid " .. q.pid .. " is gone or was reused", "ESRCH" },
        { orch.kill(q.pid, "TERM", qs) })
    end)
  end)

  it("signal a process group", function()
    h.run(function()
      local p = assert(orch.spawn{ "sh", "-c", prog .. " sleep 100; exit 0", pgroup = true })
      assert.is_true(orch.killpg(p.pid, "KILL"))
      assert.are.same({ nil, "KILL" }, { p:wait() })
    end)
  end)

  it("refuse pid 1, pids <= 0, orch itself and orch's own group", function()
    local me = orch.getpid()
    local mygroup = orch.proc.info(me).pgid
    assert.are.same({ nil, "kill: refusing to signal pid 1", "EPERM" }, { orch.kill(1, "TERM") })
    assert.are.same({ nil, "kill: refusing to signal pid 0", "EPERM" }, { orch.kill(0, "TERM") })
    assert.are.same({ nil, "kill: refusing to signal pid 0", "EPERM" }, { orch.kill(-1, "KILL") })
    assert.are.same({ nil, "kill: refusing to signal orch itself", "EPERM" }, { orch.kill(me, "TERM") })
    assert.are.same({ nil, "killpg: refusing to signal pid 1", "EPERM" }, { orch.killpg(1, "TERM") })
    assert.are.same({ nil, "killpg: refusing to signal orch's own process group", "EPERM" }, { orch.killpg(mygroup, "TERM") })
  end)

  it("refuse the id of one of orch's own threads (kill(2) takes thread ids: orch would get the signal)", function()
    h.run(function()
      -- A semaphore wait runs on a waiter thread of orch's.
      local s = assert(orch.sem.private { init = 0 })
      local waiter = orch.task(function() return s:wait() end)
      local me = orch.getpid()
      local tids = h.eventually(function()
        local list = {}
        for tid in h.sh("ls /proc/" .. me .. "/task"):gmatch("%d+") do
          if tonumber(tid) ~= me then list[#list + 1] = tonumber(tid) end
        end
        return #list > 0 and list
      end, "a thread of orch's")
      for _, tid in ipairs(tids) do
        assert.are.same({ nil, "kill: refusing to signal orch itself", "EPERM" }, { orch.kill(tid, "TERM") })
      end
      assert(s:post())
      assert.is_true(waiter:join())
      s:remove()
    end)
  end)

  it("report a missing process", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "exit", "0" })
      p:wait()
      -- the reaped pid is free; it could be reused at any moment, so only
      -- check the message shape when it is indeed gone
      local ok, msg, ename = orch.kill(p.pid, 0)
      if not ok then
        assert.are.same({ "kill: no such process", "ESRCH" }, { msg, ename })
      end
    end)
  end)
end)

describe("bad arguments", function()
  local cases = {
    { function() orch.signal.on("NOPE", function() end) end, "bad argument #1 to 'on' (unknown signal 'NOPE')" },
    { function() orch.signal.on("KILL", function() end) end, "bad argument #1 to 'on' (cannot catch KILL)" },
    { function() orch.signal.on("STOP", function() end) end, "bad argument #1 to 'on' (cannot catch STOP)" },
    { function() orch.signal.on(0, function() end) end, "bad argument #1 to 'on' (cannot catch signal 0)" },
    { function() orch.signal.on(99, function() end) end, "bad argument #1 to 'on' (invalid signal number)" },
    { function() orch.signal.on("TERM") end, "bad argument #2 to 'on' (function expected, got no value)" },
    { function() orch.signal.on({}, print) end, "bad argument #1 to 'on' (signal name or number expected, got table)" },
    { function() orch.signal.on("TERM", print, 1) end, "bad argument #3 to 'on' (no value expected)" },
    { function() orch.signal.ignore("KILL") end, "bad argument #1 to 'ignore' (cannot ignore KILL)" },
    { function() orch.signal.ignore("CHLD") end, "bad argument #1 to 'ignore' (CHLD belongs to the process reaper)" },
    { function() orch.signal.default("CHLD") end, "bad argument #1 to 'default' (CHLD belongs to the process reaper)" },
    { function() orch.signal.default("STOP") end, "bad argument #1 to 'default' (cannot reset STOP)" },
    { function() orch.signal.default() end, "bad argument #1 to 'default' (signal name or number expected, got no value)" },
    { function() orch.signal.name() end, "bad argument #1 to 'name' (signal name or number expected, got no value)" },
    { function() orch.signal.number(true) end, "bad argument #1 to 'number' (signal name or number expected, got boolean)" },
    { function() orch.kill() end, "bad argument #1 to 'kill' (pid expected, got no value)" },
    { function() orch.kill("12", "TERM") end, "bad argument #1 to 'kill' (pid expected, got string)" },
    { function() orch.kill(1.5, "TERM") end, "bad argument #1 to 'kill' (invalid pid)" },
    { function() orch.kill(12, "NOPE") end, "bad argument #2 to 'kill' (unknown signal 'NOPE')" },
    { function() orch.kill(12, "TERM", 0) end, "bad argument #3 to 'kill' (start time must be positive)" },
    { function() orch.kill(12, "TERM", "x") end, "bad argument #3 to 'kill' (number expected, got string)" },
    { function() orch.killpg(12, "TERM", 1) end, "bad argument #3 to 'killpg' (no value expected)" },
    { function() orch.killpg(12, {}) end, "bad argument #2 to 'killpg' (signal name or number expected, got table)" },
  }
  for _, c in ipairs(cases) do
    it(c[2], function() assert.has_error(c[1], c[2]) end)
  end
end)
