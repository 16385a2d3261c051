-- The process toolbox's details (issue 19): stopped and continued children
-- (WUNTRACED/WCONTINUED through the one reaper), the scheduling options of
-- orch.spawn and of services (nice, cpu_affinity, ioprio, checked against
-- the kernel's own view in /proc and ionice), orch.exec's argv[0], orch's own
-- environment (setenv/unsetenv) and limits (getrlimit/setrlimit).
local h = require "spec.helper"
local orch = h.orch
local u = require "spec.supervisor_util"

local prog = h.progs .. "/prog_proc"
local eventually = h.eventually

after_each(function()
  assert.are.same({}, h.children())
end)

-- Field n of /proc/PID/stat (proc(5) numbering), counted after the name.
local function stat_field(pid, n)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local rest = s:match("^.*%) (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return fields[n - 2]
end

local function status_line(pid, key)
  local f = assert(io.open("/proc/" .. pid .. "/status"))
  local s = f:read("a")
  f:close()
  return s:match("\n" .. key .. ":%s*([^\n]*)")
end

-- A shell in its own process group that kills nothing of ours (kill(1)).
local function sh_kill(sig, pid)
  assert(os.execute("kill -" .. sig .. " " .. pid))
end

describe("stopped and continued children", function()
  it("shows a stop and a continue sent from outside in status, tostring and events", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "100" })
      local stops, conts = {}, 0
      assert.are.equal(p, p:on_stop(function(sig) stops[#stops + 1] = sig end))
      assert.are.equal(p, p:on_continue(function() conts = conts + 1 end))
      sh_kill("STOP", p.pid)
      eventually(function() return #stops == 1 end, "on_stop ran")
      assert.are.same({ "STOP" }, stops)
      assert.are.same({ "stopped", nil, "STOP" }, { p:status() })
      assert.are.equal("orch.Process: pid=" .. p.pid .. " stopped STOP", tostring(p))
      assert.are.equal("T", stat_field(p.pid, 3))        -- the kernel agrees
      assert.is_true(p:running())                        -- not reaped: still ours
      sh_kill("CONT", p.pid)
      eventually(function() return conts == 1 end, "on_continue ran")
      assert.are.equal("running", p:status())
      assert.are.equal("orch.Process: pid=" .. p.pid .. " running", tostring(p))
      -- A terminal stop (TSTP) is named as such; the exit still comes once.
      p:kill("TSTP")
      eventually(function() return #stops == 2 end, "second stop")
      assert.are.equal("TSTP", stops[2])
      p:kill("KILL")                                      -- a stopped process dies of KILL
      assert.are.same({ nil, "KILL" }, { p:wait() })
      assert.are.same({ "killed", nil, "KILL" }, { p:status() })
      assert.are.equal(1, conts)
      -- Handlers given after the exit never run, and say so by returning p.
      assert.are.equal(p, p:on_stop(function() error("not called") end))
    end)
  end)

  it("keeps waiting through a stop: wait returns the exit only", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "100" })
      local waited = orch.task(function() return p:wait() end)
      local stopped = false
      p:on_stop(function() stopped = true end)
      p:kill("STOP")
      eventually(function() return stopped end, "stopped")
      assert.are.equal("stopped", p:status())
      p:kill("TERM")                                     -- pending while stopped
      p:kill("CONT")
      assert.are.same({ nil, "TERM" }, { waited:join() })
    end)
  end)

  it("rejects bad handlers", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "100" })
      h.check_raises {
        { function() p:on_stop() end, "bad argument #1 to 'on_stop' (function expected, got no value)" },
        { function() p:on_continue(1) end, "bad argument #1 to 'on_continue' (function expected, got number)" },
        { function() p:on_stop(print, 1) end, "bad argument #2 to 'on_stop' (no value expected)" },
      }
      p:kill("KILL")
      p:wait()
    end)
  end)
end)

describe("scheduling options of orch.spawn", function()
  it("sets nice, CPU affinity and I/O priority in the child before exec", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "100", nice = 7, cpu_affinity = { 0 },
                                   ioprio = { class = "best-effort", level = 6 } })
      assert.are.equal("7", stat_field(p.pid, 19))
      assert.are.equal(7, orch.proc.info(p.pid).nice)
      assert.are.equal("0", status_line(p.pid, "Cpus_allowed_list"))
      assert.are.equal("best-effort: prio 6", h.sh("ionice -p " .. p.pid))
      p:kill("KILL")
      p:wait()
      local q = assert(orch.spawn{ prog, "sleep", "100", ioprio = "idle" })
      assert.are.equal("idle", h.sh("ionice -p " .. q.pid))
      assert.are.equal(orch.proc.info(orch.getpid()).nice, orch.proc.info(q.pid).nice)   -- inherited
      q:kill("KILL")
      q:wait()
    end)
  end)

  it("reports what the kernel refuses as a spawn failure", function()
    h.run(function()
      -- No such CPU online: nothing is started.
      assert.are.same({ nil, "spawn: sched_setaffinity: invalid argument", "EINVAL" },
        { orch.spawn{ prog, "exit", "0", cpu_affinity = { 1023 } } })
    end)
  end)

  it("refuses a lower nice and the realtime class to an unprivileged user", function()
    local script = h.script([[
      print(select(2, orch.spawn{ "true", nice = -5 }))
      print(select(2, orch.spawn{ "true", ioprio = "realtime" }))
      print(orch.spawn{ "true", nice = 19 }:wait())
    ]])
    os.execute("chmod 755 " .. script:match("^(.*)/") .. " && chmod 644 " .. script)
    local out, ok = h.sh("setpriv --reuid=65534 --regid=65534 --clear-groups " .. h.bin .. " run " .. script .. " 2>&1")
    assert.is_true(ok, out)
    assert.are.equal("spawn: setpriority: permission denied\tEACCES\nspawn: ioprio_set: operation not permitted\tEPERM\n0\tnil", out)
  end)

  it("validates before anything is allocated", function()
    h.check_raises {
      { function() orch.spawn{ "true", nice = 20 } end, "(option 'nice': integer from -20 to 19 expected)" },
      { function() orch.spawn{ "true", nice = -21 } end, "(option 'nice': integer from -20 to 19 expected)" },
      { function() orch.spawn{ "true", nice = 1.5 } end, "(option 'nice': integer from -20 to 19 expected)" },
      { function() orch.spawn{ "true", nice = "5" } end, "(option 'nice': integer from -20 to 19 expected)" },
      { function() orch.spawn{ "true", cpu_affinity = {} } end, "(option 'cpu_affinity': a non-empty list of CPU numbers (0 to 1023) expected)" },
      { function() orch.spawn{ "true", cpu_affinity = 0 } end, "(option 'cpu_affinity': a non-empty list" },
      { function() orch.spawn{ "true", cpu_affinity = { -1 } } end, "(option 'cpu_affinity': a non-empty list" },
      { function() orch.spawn{ "true", cpu_affinity = { 1024 } } end, "(option 'cpu_affinity': a non-empty list" },
      { function() orch.spawn{ "true", cpu_affinity = { 0.5 } } end, "(option 'cpu_affinity': a non-empty list" },
      { function() orch.spawn{ "true", cpu_affinity = { 0, x = 1 } } end, "(option 'cpu_affinity': a non-empty list" },
      { function() orch.spawn{ "true", cpu_affinity = { [2] = 1 } } end, "(option 'cpu_affinity': a non-empty list" },
      { function() orch.spawn{ "true", ioprio = "fast" } end, "(option 'ioprio': 'realtime', 'best-effort' or 'idle' expected, got 'fast')" },
      { function() orch.spawn{ "true", ioprio = 3 } end, "(option 'ioprio': class name or table expected, got number)" },
      { function() orch.spawn{ "true", ioprio = { level = 1 } } end, "(option 'ioprio': 'class' expected" },
      { function() orch.spawn{ "true", ioprio = { class = "realtime", level = 8 } } end, "(option 'ioprio': level 0 to 7 expected)" },
      { function() orch.spawn{ "true", ioprio = { class = "idle", level = 2 } } end, "(option 'ioprio': the idle class has no level)" },
      { function() orch.spawn{ "true", ioprio = { class = "idle", prio = 2 } } end, "(option 'ioprio': unknown key 'prio')" },
    }
  end)
end)

describe("scheduling options of services, and a stopped service", function()
  it("starts a service with nice, cpu_affinity and ioprio, and shows it stopped while SIGSTOPped", function()
    u.with(function(s)
      s.service{ name = "niced", cmd = { prog, "sleep", "100" }, nice = 4, cpu_affinity = { 0 }, ioprio = "idle" }
      s.start("niced")
      local pid = eventually(function() local st = u.st(s, "niced") return st.state == "running" and st.pid end, "running")
      assert.are.equal("4", stat_field(pid, 19))
      assert.are.equal("0", status_line(pid, "Cpus_allowed_list"))
      assert.are.equal("idle", h.sh("ionice -p " .. pid))
      sh_kill("STOP", pid)
      eventually(function() return u.st(s, "niced").state == "stopped" end, "shown stopped")
      assert.are.equal("STOP", u.st(s, "niced").stop_signal)
      assert.are.equal(pid, u.st(s, "niced").pid)
      sh_kill("CONT", pid)
      eventually(function() return u.st(s, "niced").state == "running" end, "running again")
      assert.is_nil(u.st(s, "niced").stop_signal)
    end)
  end)

  it("stops a SIGSTOPped service with its stop signal (CONT after it), not by waiting for KILL", function()
    u.with(function(s, logs)
      s.service{ name = "paused", cmd = { prog, "sleep", "100" }, stop = { timeout = 120 } }
      s.start("paused")
      local pid = eventually(function() local st = u.st(s, "paused") return st.state == "running" and st.pid end, "running")
      sh_kill("STOP", pid)
      eventually(function() return u.st(s, "paused").state == "stopped" end, "shown stopped")
      s.stop("paused")   -- without the CONT: 120 s, past this test's deadline
      assert.are.equal("stopped", u.st(s, "paused").state)
      assert.are.equal("TERM", u.st(s, "paused").exit_signal)
      assert.is_nil(u.logged(logs, "sending KILL"))
    end)
  end)

  it("checks the options when the service is defined", function()
    h.run(function()
      local s = u.new()
      local function err(def)
        def.name = "x"
        def.cmd = { "true" }
        local ok, e = pcall(s.service, def)
        assert.is_false(ok)
        return e
      end
      assert.matches("key 'nice': integer from %-20 to 19 expected, got 20", err{ nice = 20 })
      assert.matches("key 'cpu_affinity': at least one CPU expected", err{ cpu_affinity = {} })
      assert.matches("key 'cpu_affinity%[1%]': CPU number from 0 to 1023 expected, got 4096", err{ cpu_affinity = { 4096 } })
      assert.matches("key 'ioprio': \"realtime\", \"best%-effort\", \"idle\" expected, got \"fast\"", err{ ioprio = "fast" })
      assert.matches("key 'ioprio.level': integer from 0 to 7 expected, got 9", err{ ioprio = { class = "realtime", level = 9 } })
      assert.matches("key 'ioprio': unknown key \"lvl\"", err{ ioprio = { class = "idle", lvl = 1 } })
      s.close()
    end)
  end)
end)

describe("orch.exec", function()
  it("gives the program an argv[0] of its own (args[0])", function()
    h.run(function()
      local p = assert(orch.fork(function()
        orch.exec("/bin/sh", { [0] = "renamed", "-c", 'test "$0" = renamed && exit 5' })
        return 1
      end))
      assert.are.same({ 5, nil }, { p:wait() })
      local q = assert(orch.fork(function()
        orch.exec("sh", { "-c", 'case "$0" in sh) exit 6;; esac; exit 1' })
        return 1
      end))
      assert.are.same({ 6, nil }, { q:wait() })
    end)
    h.check_raises {
      { function() orch.exec("sh", { [0] = 1 }) end, "bad argument #2 to 'exec' (argument 0: string expected, got number)" },
      { function() orch.exec("sh", { [0] = "a\0b" }) end, "bad argument #2 to 'exec' (argument 0 contains a zero byte)" },
    }
  end)
end)

describe("orch's own environment", function()
  it("sets and unsets variables that os.getenv and children see", function()
    local name = "ORCH_SPEC_ENV_" .. orch.getpid()
    h.run(function()
      assert.is_true(orch.setenv(name, "one two"))
      assert.are.equal("one two", os.getenv(name))
      local out = orch.capture{ "sh", "-c", 'printf %s "$' .. name .. '"' }
      assert.are.equal(0, out)
      assert.are.equal("one two", select(2, orch.capture{ "sh", "-c", 'printf %s "$' .. name .. '"' }))
      assert.is_true(orch.setenv(name, 42, false))      -- exists: left alone
      assert.are.equal("one two", os.getenv(name))
      assert.is_true(orch.setenv(name, 42))
      assert.are.equal("42", os.getenv(name))
      assert.is_true(orch.unsetenv(name))
      assert.is_nil(os.getenv(name))
      assert.are.equal("unset", select(2, orch.capture{ "sh", "-c", 'printf %s "${' .. name .. '-unset}"' }))
      assert.is_true(orch.unsetenv(name))               -- unsetting twice is fine
    end)
    h.check_raises {
      { function() orch.setenv("A=B", "x") end, "bad argument #1 to 'setenv' (variable name expected (not empty, no '=' or zero byte))" },
      { function() orch.setenv("", "x") end, "bad argument #1 to 'setenv' (variable name expected" },
      { function() orch.setenv("A\0B", "x") end, "bad argument #1 to 'setenv' (variable name expected" },
      { function() orch.setenv("A") end, "bad argument #2 to 'setenv' (string expected, got no value)" },
      { function() orch.setenv("A", "x\0y") end, "bad argument #2 to 'setenv' (value contains a zero byte)" },
      { function() orch.setenv("A", "x", 1) end, "bad argument #3 to 'setenv' (boolean expected, got number)" },
      { function() orch.setenv("A", "x", true, 1) end, "bad argument #4 to 'setenv' (no value expected)" },
      { function() orch.unsetenv("A=") end, "bad argument #1 to 'unsetenv' (variable name expected" },
      { function() orch.unsetenv() end, "bad argument #1 to 'unsetenv' (string expected, got no value)" },
    }
  end)
end)

describe("orch's own resource limits", function()
  it("reads and changes them as the kernel sees them", function()
    h.run(function()
      local p = assert(orch.fork(function()
        local soft, hard = orch.getrlimit("core")
        assert(soft ~= nil and hard ~= nil)
        assert(orch.setrlimit("core", 4096))            -- hard stays
        local s2, h2 = orch.getrlimit("core")
        assert(s2 == 4096 and h2 == hard, tostring(s2) .. " " .. tostring(h2))
        local f = assert(io.open("/proc/self/limits")):read("a")
        assert(f:match("Max core file size%s+4096%s"), f)
        assert(orch.setrlimit("core", 0, 8192))
        assert(select(2, orch.getrlimit("core")) == 8192)
        -- Children inherit it.
        local code, out = orch.capture{ "sh", "-c", "ulimit -c" }
        assert(code == 0 and out == "0\n", out)
        return 0
      end))
      assert.are.same({ 0, nil }, { p:wait() })
    end)
    h.check_raises {
      { function() orch.getrlimit("bogus") end, "bad argument #1 to 'getrlimit' (unknown limit 'bogus')" },
      { function() orch.getrlimit() end, "bad argument #1 to 'getrlimit' (string expected, got no value)" },
      { function() orch.getrlimit("core", 1) end, "bad argument #2 to 'getrlimit' (no value expected)" },
      { function() orch.setrlimit("core", -1) end, "bad argument #2 to 'setrlimit' (a non-negative integer or 'unlimited' expected)" },
      { function() orch.setrlimit("core", 1.5) end, "bad argument #2 to 'setrlimit' (a non-negative integer or 'unlimited' expected)" },
      { function() orch.setrlimit("core", 10, 5) end, "bad argument #2 to 'setrlimit' (soft limit above hard limit)" },
      { function() orch.setrlimit("core", "unlimited", 5) end, "bad argument #2 to 'setrlimit' (soft limit above hard limit)" },
      { function() orch.setrlimit("core", 1, 2, 3) end, "bad argument #4 to 'setrlimit' (no value expected)" },
    }
  end)

  it("returns the kernel's refusal for an unprivileged user", function()
    local script = h.script([[
      local _, hard = orch.getrlimit("nofile")
      print(orch.setrlimit("nofile", 16, 16))
      print(orch.setrlimit("nofile", 16, 32))
      print(orch.getrlimit("nofile"))
    ]])
    os.execute("chmod 755 " .. script:match("^(.*)/") .. " && chmod 644 " .. script)
    local out, ok = h.sh("setpriv --reuid=65534 --regid=65534 --clear-groups " .. h.bin .. " run " .. script .. " 2>&1")
    assert.is_true(ok, out)
    assert.are.equal("true\nnil\tsetrlimit: operation not permitted\tEPERM\n16\t16", out)
  end)
end)

describe("examples/stop_continue.lua", function()
  it("shows the service stopped in orch ctl status between STOP and CONT", function()
    -- orch run's own lock on a socket of this run's, not on the default
    -- /run/orch/stop_continue.sock, which another suite may hold meanwhile.
    local code, out, err = h.cli({ "run", h.root .. "/examples/stop_continue.lua" }, nil,
                                 { ORCH_SOCKET = h.tmpdir() .. "/stop_continue.sock" })
    assert.are.equal(0, code, err)
    assert.matches("%-%- running, at nice 15 %(orch ctl status exits 0%)\nNAME%s+STATE[^\n]*\ncruncher%s+running%s+(%d+)", out)
    local pid = out:match("cruncher%s+running%s+(%d+)")
    assert.matches("%-%- after kill %-STOP " .. pid .. " %(the kernel says state T%) %(orch ctl status exits 3%)\nNAME[^\n]*\ncruncher%s+stopped%s+" .. pid .. "%s", out)
    assert.matches("%-%- after kill %-CONT " .. pid .. " %(orch ctl status exits 0%)\nNAME[^\n]*\ncruncher%s+running%s+" .. pid .. "%s", out)
    assert.is_false(h.alive(tonumber(pid)))
  end)
end)
