-- The supervisor: definitions, restart policies, backoff, start limits,
-- hooks, status, numprocs, reload. Real processes everywhere; see
-- spec/supervisor_util.lua for the per-test supervisor and leak check.
local u = require "spec.supervisor_util"
local h, orch, supmod = u.h, u.orch, u.supmod

describe("supervisor definitions", function()
  local bad = {
    { { name = "web", cmd = { "true" }, restrat = "always" }, "service 'web': unknown key 'restrat'" },
    { { name = "web", cmd = { "true" }, restart = "sometimes" },
      "service 'web': key 'restart': \"always\", \"on-failure\", \"never\" expected, got \"sometimes\"" },
    { { name = "web", cmd = { "true" }, restart = 3 },
      "service 'web': key 'restart': \"always\", \"on-failure\", \"never\" or a function expected, got 3" },
    { { name = "web", cmd = {} }, "service 'web': key 'cmd': program name expected at index 1" },
    { { name = "web", cmd = { "true", {} } }, "service 'web': key 'cmd[2]': string expected, got table" },
    { { name = "web" }, "service 'web': key 'cmd': required" },
    { { cmd = { "true" } }, "service #1: key 'name': required" },
    { { name = "a b", cmd = { "true" } }, "service 'a b': key 'name': name (letters, digits, '_', '.', '@', '-') expected, got \"a b\"" },
    { { name = "web", cmd = { "true" }, numprocs = 0 }, "service 'web': key 'numprocs': integer from 1 to 10000 expected, got 0" },
    { { name = "web", cmd = { "true" }, numprocs = 1.5 }, "service 'web': key 'numprocs': integer from 1 to 10000 expected, got 1.5" },
    { { name = "web", cmd = { "true" }, backoff = { factor = 0.5 } }, "service 'web': key 'backoff.factor': number >= 1 expected, got 0.5" },
    { { name = "web", cmd = { "true" }, backoff = { initial = 5, max = 1 } }, "service 'web': key 'backoff.max': must be >= initial (5)" },
    { { name = "web", cmd = { "true" }, backoff = { jiter = 1 } }, "service 'web': unknown key 'backoff.jiter'" },
    { { name = "web", cmd = { "true" }, backoff = -1 }, "service 'web': key 'backoff': number of seconds >= 0 expected, got -1" },
    { { name = "web", cmd = { "true" }, start_limit = { burst = 0 } }, "service 'web': key 'start_limit.burst': integer >= 1 expected, got 0" },
    { { name = "web", cmd = { "true" }, ready = { notify = true, fd = 3 } }, "service 'web': key 'ready': exactly one of 'notify', 'fd' or 'tcp' expected" },
    { { name = "web", cmd = { "true" }, ready = { fd = 1 } }, "service 'web': key 'ready.fd': integer from 3 to 1023 expected, got 1" },
    { { name = "web", cmd = { "true" }, ready = { tcp = 70000 } }, "service 'web': key 'ready.tcp': port number from 1 to 65535 expected, got 70000" },
    { { name = "web", cmd = { "true" }, ready = "yes" }, "service 'web': key 'ready': table or function expected, got \"yes\"" },
    { { name = "web", cmd = { "true" }, start_timeout = 0 }, "service 'web': key 'start_timeout': number of seconds > 0 expected, got 0" },
    { { name = "web", cmd = { "true" }, stop = { signal = "NOPE" } }, "service 'web': key 'stop.signal': signal name or number expected, got \"NOPE\"" },
    { { name = "web", cmd = { "true" }, stop = { timeout = "10" } }, "service 'web': key 'stop.timeout': number of seconds >= 0 expected, got \"10\"" },
    { { name = "web", cmd = { "true" }, heartbeat = {} }, "service 'web': key 'heartbeat.timeout': required" },
    { { name = "web", cmd = { "true" }, limits = { rss = "lots" } }, "service 'web': key 'limits.rss': size (bytes, or a string like \"512M\") expected, got \"lots\"" },
    { { name = "web", cmd = { "true" }, limits = { for_seconds = 3 } }, "service 'web': key 'limits': a limit expected (rss, cpu_percent, memory_max, pids_max, cpu_max, ...)" },
    { { name = "web", cmd = { "true" }, log = { keep = -1 } }, "service 'web': key 'log.keep': integer from 0 to 1000 expected, got -1" },
    { { name = "web", cmd = { "true" }, log = { max_bytes = 0 } }, "service 'web': key 'log.max_bytes': size > 0 (bytes, or a string like \"512M\") expected, got 0" },
    { { name = "web", cmd = { "true" }, log = { filter = "x" } }, "service 'web': key 'log.filter': function expected, got \"x\"" },
    { { name = "web", cmd = { "true" }, env = { A = {} } }, "service 'web': key 'env.A': string, number or false expected, got table" },
    { { name = "web", cmd = { "true" }, env = { ["A=B"] = "x" } }, "service 'web': key 'env': invalid variable name \"A=B\"" },
    { { name = "web", cmd = { "true" }, rlimits = { nofiles = 10 } }, "service 'web': key 'rlimits': unknown limit \"nofiles\"" },
    { { name = "web", cmd = { "true" }, umask = 0x1000 }, "service 'web': key 'umask': mode from 0 to 511 (octal 0777) expected, got 4096" },
    { { name = "web", cmd = { "true" }, success_codes = { 0, 256 } }, "service 'web': key 'success_codes[2]': exit code from 0 to 255 expected, got 256" },
    { { name = "web", cmd = { "true" }, depends_on = { "web" } }, "service 'web': key 'depends_on': a service cannot depend on itself" },
    { { name = "web", cmd = { "true" }, on_exit = true }, "service 'web': key 'on_exit': function expected, got true" },
    { { name = "web", cmd = { "true" }, critical = "yes" }, "service 'web': key 'critical': boolean expected, got \"yes\"" },
    { { name = "web", cmd = { "true" }, numprocs = 2, pidfile = "/tmp/x.pid" }, "service 'web': key 'pidfile': not possible with numprocs > 1" },
    { "web", "service #1: table expected, got \"web\"" },
  }
  for i, case in ipairs(bad) do
    it("rejects bad definition " .. i .. ": " .. case[2], function()
      local s = supmod.new()
      local ok, err = pcall(s.service, case[1])
      assert.is_false(ok)
      assert.are.equal(case[2], err:gsub("^[^:]*:%d+: ", ""))
      assert.are.same({}, s.services())
    end)
  end

  it("reports the caller's line", function()
    local s = supmod.new()
    local ok, err = pcall(function() s.service { name = "x", cmd = { "true" }, bogus = 1 } end)
    assert.is_false(ok)
    assert.matches("supervisor_spec.lua:%d+: service 'x': unknown key 'bogus'", err)
  end)

  it("refuses a second definition of a name", function()
    local s = supmod.new()
    s.service { name = "a", cmd = { "true" } }
    assert.has_error(function() s.service { name = "a", cmd = { "true" } } end,
      "service 'a': already defined (sup.reload changes definitions)")
  end)

  it("checks dependencies before starting anything", function()
    u.with(function(s)
      s.service { name = "a", cmd = u.sh("sleep 30") }
      s.service { name = "b", cmd = u.sh("sleep 30"), depends_on = { "nosuch" } }
      local ok, err = pcall(s.start, "all")
      assert.is_false(ok)
      assert.matches("service 'b': key 'depends_on': unknown service 'nosuch'", err, 1, true)
      assert.are.equal("stopped", u.st(s, "a").state)
    end)
    u.with(function(s)
      s.service { name = "a", cmd = u.sh("sleep 30"), depends_on = "c" }
      s.service { name = "b", cmd = u.sh("sleep 30"), depends_on = { "a" } }
      s.service { name = "c", cmd = u.sh("sleep 30"), depends_on = { "b" } }
      local ok, err = pcall(s.run)
      assert.is_false(ok)
      assert.matches("key 'depends_on': dependency cycle a -> c -> b -> a", err, 1, true)
      for _, st in ipairs(s.status()) do assert.are.equal("stopped", st.state) end
    end)
  end)

  it("gives expected failures for unknown names", function()
    u.with(function(s)
      assert.are.same({ nil, "start: no such service 'nope'", "ENOENT" }, { s.start("nope") })
      assert.are.same({ nil, "stop: no such service 'nope'", "ENOENT" }, { s.stop("nope") })
      assert.are.same({ nil, "tail: no such service 'nope'", "ENOENT" }, { s.tail("nope") })
      assert.are.same({ nil, "status: no such service 'nope'", "ENOENT" }, { s.status("nope") })
      assert.has_error(function() s.signal("nope", "NOSIG") end,
        "bad argument #2 to 'signal' (signal name or number expected, got NOSIG)")
      assert.has_error(function() s.configure { bogus = 1 } end, "bad argument #1 to 'configure' (unknown option 'bogus')")
      -- A wait for a state that does not exist could only time out.
      s.service { name = "w", autostart = false, cmd = { "true" } }
      local unknown = "bad argument #2 to 'wait' (unknown state 'runing'; one of stopped, waiting, starting, "
        .. "running, stopping, backoff, exited, fatal expected)"
      assert.has_error(function() s.wait("w", "runing", 1) end, unknown)
      assert.has_error(function() s.wait("w", { "stopped", "runing" }, 1) end, unknown)
      assert.has_error(function() s.wait("w", 3) end, "bad argument #2 to 'wait' (state name or list expected)")
      assert.has_error(function() s.configure { exit_on_fatal = "some" } end,
        "bad argument #1 to 'configure' (option 'exit_on_fatal': \"all\", \"any\" or false expected)")
      assert.has_error(function() s.configure { exit_when_idle = 1 } end,
        "bad argument #1 to 'configure' (option 'exit_when_idle': boolean expected)")
    end)
  end)

  it("returns the definitions as given", function()
    local s = supmod.new()
    local hook = function() end
    s.service { name = "a", cmd = { "sleep", 1 }, on_exit = hook, backoff = 0 }
    s.service { name = "b", cmd = "exec sleep 1" }
    local defs = s.services()
    assert.are.same({ name = "a", cmd = { "sleep", 1 }, on_exit = hook, backoff = 0 }, defs[1])
    assert.are.same({ name = "b", cmd = "exec sleep 1" }, defs[2])
  end)
end)

describe("supervisor restarts", function()
  it("restarts a crashed service and counts it", function()
    u.with(function(s, logs)
      -- USR2 rather than SEGV: under ASan (LD_PRELOAD) the shell would catch SEGV.
      s.service { name = "crash", cmd = u.sh("sleep 0.1; kill -USR2 $$"), backoff = 0.05, start_limit = false }
      s.start("crash")
      assert.is_true(u.until_true(function() return u.st(s, "crash").restarts >= 2 end))
      local st = u.st(s, "crash")
      assert.are.equal("USR2", st.exit_signal)
      assert.is_nil(st.exit_code)
      assert.truthy(u.logged(logs, "crash: killed by USR2"))
      assert.truthy(u.logged(logs, "crash: restarting in 0.05s"))
    end)
  end)

  it("says nothing with log = false and logs again once a log function is configured", function()
    u.with(function(s, logs)
      s.configure { log = false }
      s.service { name = "quiet", cmd = u.sh("exec sleep 30"), backoff = 0 }
      s.start("quiet")
      assert.is_true(s.wait("quiet", "running", 10))
      s.stop("quiet")
      local lines = {}
      s.configure { log = function(msg) lines[#lines + 1] = msg end }
      s.start("quiet")
      assert.is_true(s.wait("quiet", "running", 10))
      s.stop("quiet")
      assert.are.equal(0, #logs)
      assert.truthy(lines[1] and lines[1]:find("quiet: started, pid %d+"))
      assert.truthy(lines[#lines]:find("quiet: stopped"))
      -- A bad value changes nothing: the function stays.
      assert.has_error(function() s.configure { log = 3 } end,
        "bad argument #1 to 'configure' (option 'log': function or false expected)")
      s.start("quiet")
      assert.is_true(s.wait("quiet", "running", 10))
      s.stop("quiet")
      assert.truthy(lines[#lines]:find("quiet: stopped"))
    end)
  end)

  it("keeps the pid of a running service and gives a new one after a crash", function()
    u.with(function(s)
      s.service { name = "w", cmd = u.sh("exec sleep 30"), backoff = 0 }
      s.start("w")
      assert.is_true(s.wait("w", "running", 10))
      local pid = u.st(s, "w").pid
      assert.is_true(u.alive(pid))
      orch.kill(pid, "KILL")
      assert.is_true(u.until_true(function()
        local st = u.st(s, "w")
        return st.state == "running" and st.pid ~= pid
      end))
      local st = u.st(s, "w")
      assert.are.equal(1, st.restarts)
      assert.are.equal("KILL", st.exit_signal)
    end)
  end)

  it("does not restart after a success under on-failure", function()
    u.with(function(s, logs)
      s.service { name = "ok", cmd = u.sh("exit 0"), restart = "on-failure", backoff = 0 }
      s.service { name = "ok3", cmd = u.sh("exit 3"), restart = "on-failure", success_codes = { 0, 3 } }
      s.service { name = "bad", cmd = u.sh("sleep 0.05; exit 4"), restart = "on-failure", backoff = 0,
                  start_limit = { burst = 3, interval = 60 } }
      s.start("all")
      assert.is_true(s.wait({ "ok", "ok3" }, "exited", 10))
      assert.is_true(s.wait("bad", "fatal", 10))
      local st = u.st(s, "ok")
      assert.are.equal(0, st.exit_code)
      assert.are.equal(0, st.restarts)
      assert.are.equal(3, u.st(s, "ok3").exit_code)
      assert.are.equal(0, u.st(s, "ok3").restarts)
      assert.are.equal(2, u.st(s, "bad").restarts)
    end)
  end)

  it("never restarts under restart = 'never', even after a crash", function()
    u.with(function(s)
      s.service { name = "n", cmd = u.sh("kill -KILL $$"), restart = "never" }
      s.start("n")
      assert.is_true(s.wait("n", "exited", 10))
      assert.are.equal("KILL", u.st(s, "n").exit_signal)
      assert.are.equal(0, u.st(s, "n").restarts)
    end)
  end)

  it("asks a restart function, with the history", function()
    u.with(function(s, logs)
      local calls = {}
      s.service { name = "f", cmd = u.sh("exit $((ORCH_INSTANCE + 6))"),
        restart = function(svc, code, signal, history)
          calls[#calls + 1] = { name = svc.name, code = code, signal = signal, n = #history }
          if #history < 3 then return 0.01 end
          return false
        end }
      s.service { name = "g", cmd = u.sh("exit 1"), restart = function() return "fatal" end }
      s.service { name = "e", cmd = u.sh("exit 1"), backoff = 0, start_limit = { burst = 2, interval = 60 },
        restart = function() error("policy bug") end }
      s.start("all")
      assert.is_true(s.wait("f", "exited", 10))
      assert.is_true(s.wait("g", "fatal", 10))
      assert.is_true(s.wait("e", "fatal", 10))
      assert.are.same({ { name = "f", code = 7, n = 1 }, { name = "f", code = 7, n = 2 }, { name = "f", code = 7, n = 3 } }, calls)
      assert.are.equal(2, u.st(s, "f").restarts)
      assert.are.equal("the restart function said fatal", u.st(s, "g").reason)
      assert.truthy(u.logged(logs, "e: restart function failed: "))
      assert.truthy(u.logged(logs, "policy bug"))
    end)
  end)

  it("backs off with growing delays", function()
    u.with(function(s)
      local starts = {}
      s.service { name = "b", cmd = u.sh("exit 1"), start_limit = false,
        backoff = { initial = 0.05, factor = 2, max = 10, jitter = 0 },
        on_start = function() starts[#starts + 1] = orch.now() end }
      s.start("b")
      assert.is_true(u.until_true(function() return #starts >= 5 end, 20))
      s.stop("b")
      local inst = s.instance("b")
      -- The delays chosen: 0.05, 0.1, 0.2, 0.4 (each twice the last) ...
      local gaps = {}
      for i = 2, 5 do gaps[#gaps + 1] = starts[i] - starts[i - 1] end
      for i = 1, 4 do
        local delay = 0.05 * 2 ^ (i - 1)
        -- ... and each measured gap is at least its delay.
        assert.is_true(gaps[i] >= delay - 0.005, string.format("gap %d = %.3f < %.3f", i, gaps[i], delay))
      end
      -- (The gaps themselves also hold each run's start-up, which a loaded
      -- machine can stretch past the growth: the delays chosen tell it.)
      assert.is_true(inst.last_delay >= 0.4)
    end)
  end)

  it("resets the backoff after a long enough run", function()
    local policy = require "orch.supervisor.policy"
    local b = { initial = 0.1, factor = 3, max = 2, jitter = 0, reset_after = 60 }
    for i, want in ipairs { 0.1, 0.3, 0.9, 2, 2 } do
      assert.near(want, policy.backoff(b, i), 1e-9)
    end
    b.jitter = 0.5
    for _ = 1, 100 do
      local d = policy.backoff(b, 2)
      assert.is_true(d >= 0.15 - 1e-9 and d <= 0.45 + 1e-9)
    end
    assert.are.equal(0, policy.backoff({ initial = 0, factor = 2, max = 1, jitter = 0.5 }, 7))
    u.with(function(s)
      s.service { name = "r", cmd = u.sh("sleep 0.3; exit 1"), start_limit = false,
        backoff = { initial = 0.01, factor = 10, max = 100, jitter = 0, reset_after = 0.2 } }
      s.start("r")
      assert.is_true(u.until_true(function() return u.st(s, "r").restarts >= 3 end, 20))
      -- Every run lasted longer than reset_after: the delay never grew.
      assert.are.equal(0.01, s.instance("r").last_delay)
    end)
  end)

  it("restarts at once with backoff = 0", function()
    u.with(function(s, logs)
      s.service { name = "z", cmd = u.sh("exit 1"), backoff = 0, start_limit = false }
      s.start("z")
      assert.is_true(u.until_true(function() return u.st(s, "z").restarts >= 20 end, 20))
      assert.truthy(u.logged(logs, "z: restarted"))
      assert.is_nil(u.logged(logs, "restarting in"))
    end)
  end)

  it("an immediate restart spawns before noting the exit, which is still seen first: events, history, counters, hooks", function()
    u.with(function(s, logs)
      local seen, hooks = {}, {}
      s.events(function(ev)
        if ev.name ~= "im" then return end
        local i = s.instance("im")
        local e = { event = ev.event, pid = ev.pid, code = ev.code, history = #(i.history or {}),
                    exits = i.exits and i.exits.failure or 0, inst_pid = i.pid }
        -- The replacement already runs when the exit is told (what the
        -- change is for): a child of this process, not the one that exited.
        if ev.event == "exited" then
          e.others = 0
          for _, pid in ipairs(u.h.children()) do
            if pid ~= ev.pid then e.others = e.others + 1 end
          end
        end
        seen[#seen + 1] = e
      end)
      s.service { name = "im", cmd = u.sh("sleep 0.05; exit 3"), backoff = 0, start_limit = false,
        on_start = function(svc) hooks[#hooks + 1] = "start " .. #(svc.history or {}) end,
        on_exit = function(svc, code) hooks[#hooks + 1] = "exit " .. code .. " " .. #svc.history end }
      s.start("im")
      assert.is_true(u.until_true(function() return u.st(s, "im").restarts >= 3 end))
      local snap = table.move(seen, 1, #seen, 1, {})      -- the stop's own events left out
      assert.is_true(s.stop("im"))
      -- spawned, ready, exited, spawned, ready, exited, ...: each exit of the
      -- process the spawn before it named, counted in the history and the
      -- counters by its own event, never by the next spawn's.
      local n, last = 0, nil
      for k, e in ipairs(snap) do
        if e.event == "spawned" then
          assert.are.equal(n, e.history)
          last = e.pid
        elseif e.event == "exited" then
          n = n + 1
          assert.are.equal(last, e.pid)
          assert.are.equal(3, e.code)
          assert.are.equal(n, e.history)
          assert.are.equal(n, e.exits)
          assert.is_nil(e.inst_pid)
          if snap[k + 1] and snap[k + 1].event == "spawned" then assert.is_true(e.others >= 1) end
        end
      end
      assert.is_true(n >= 3)
      local order = {}
      for _, e in ipairs(snap) do order[#order + 1] = e.event end
      assert.are.equal("spawned ready exited spawned ready exited spawned ready exited",
        table.concat(order, " "):match("^spawned ready exited spawned ready exited spawned ready exited"))
      -- The hooks: on_exit after its exit is in the history, before the next on_start.
      assert.is_true(u.until_true(function() return #hooks >= 6 end))
      for i = 1, 6 do
        local k = (i + 1) // 2
        assert.are.equal(i % 2 == 1 and ("start " .. (k - 1)) or ("exit 3 " .. k), hooks[i])
      end
      -- The log: the spawn's line, then the exit's, then the decision's.
      local a, b = u.logged(logs, "im: killed by") or u.logged(logs, "im: exited with code 3 after"), u.logged(logs, "im: restarted")
      assert.truthy(a)
      assert.is_true(a < b)
    end)
  end)

  it("says a service stopped while in backoff is stopped", function()
    u.with(function(s, logs)
      s.service { name = "b", cmd = u.sh("exit 1"), backoff = 60, start_limit = false }
      s.start("b")
      assert.is_true(s.wait("b", "backoff", 10))
      s.stop("b")
      assert.are.equal("stopped", u.st(s, "b").state)
      assert.truthy(u.logged(logs, "b: stopped (from backoff, no process running)"))
    end)
  end)

  it("goes fatal at the start limit, calls on_fatal, and sup.start clears it", function()
    u.with(function(s, logs)
      local fatal = {}
      s.service { name = "flap", cmd = u.sh("exit 2"), backoff = 0,
        start_limit = { burst = 4, interval = 60 },
        on_fatal = function(svc, reason) fatal[#fatal + 1] = { svc.name, reason } end }
      s.start("flap")
      assert.is_true(s.wait("flap", "fatal", 10))
      local st = u.st(s, "flap")
      assert.are.equal(3, st.restarts)
      assert.are.equal("start limit reached: 4 starts within 60s", st.reason)
      assert.truthy(u.logged(logs, "flap: FATAL: start limit reached: 4 starts within 60s"))
      assert.is_true(u.until_true(function() return #fatal == 1 end))
      assert.are.same({ "flap", "start limit reached: 4 starts within 60s" }, fatal[1])
      -- Fatal stays fatal...
      orch.sleep(0.1)
      assert.are.equal("fatal", u.st(s, "flap").state)
      -- ... until started again, which gives it a fresh limit.
      s.start("flap")
      assert.is_true(u.until_true(function() return #fatal == 2 end))
      assert.are.equal(6, u.st(s, "flap").restarts)
    end)
  end)

  it("reports a program that cannot start, then goes fatal", function()
    u.with(function(s, logs)
      s.service { name = "missing", cmd = { "/nonexistent/prog" }, backoff = 0, start_limit = { burst = 3, interval = 60 } }
      s.start("missing")
      assert.is_true(s.wait("missing", "fatal", 10))
      assert.truthy(u.logged(logs, "missing: cannot start: spawn: no such file: /nonexistent/prog"))
    end)
  end)
end)

describe("supervisor hooks", function()
  it("calls on_start, on_ready and on_exit, and survives failing hooks", function()
    u.with(function(s, logs)
      local seen = {}
      s.service { name = "hk", cmd = u.sh("sleep 0.2; exit 5"), restart = "never",
        on_start = function(svc) seen[#seen + 1] = "start " .. svc.pid end,
        on_ready = function(svc) seen[#seen + 1] = "ready " .. svc.state end,
        on_exit = function(svc, code, sig) seen[#seen + 1] = "exit " .. tostring(code) .. " " .. tostring(sig) end }
      s.service { name = "bad", cmd = u.sh("exit 0"), restart = "never",
        on_start = function() error("boom in on_start") end,
        on_exit = function() local x = nil; return x.field end }
      s.start("all")
      assert.is_true(s.wait({ "hk", "bad" }, "exited", 10))
      assert.is_true(u.until_true(function() return #seen == 3 end))
      assert.matches("^start %d+$", seen[1])
      assert.are.equal("ready running", seen[2])
      assert.are.equal("exit 5 nil", seen[3])
      assert.is_true(u.until_true(function() return u.logged(logs, "bad: on_exit hook failed") ~= nil end))
      assert.truthy(u.logged(logs, "bad: on_start hook failed"))
      assert.truthy(u.logged(logs, "boom in on_start"))
      -- The supervisor goes on.
      s.start("hk")
      assert.is_true(s.wait("hk", "running", 10))
    end)
  end)
end)

describe("supervisor status and control", function()
  it("a large start yields to the loop between batches of launches (and never runs into the Lua budget)", function()
    u.with(function(s)
      for i = 1, 100 do s.service { name = "n" .. i, cmd = u.sh("exec sleep 30") } end
      -- This task runs at the first moment sup.start lets the loop turn.
      local seen
      orch.task(function()
        seen = 0
        for _, st in ipairs(s.status()) do if st.state ~= "stopped" then seen = seen + 1 end end
      end)
      assert.is_true(s.start("all"))
      assert.is_true(seen ~= nil and seen > 0 and seen < 100, "launched before the first yield: " .. tostring(seen))
      assert.is_true(s.wait("all", "running", 30))
    end, 90)
  end)

  -- A start of 100 allocates about 325 KiB, most of it garbage: a start
  -- whose collection missed it leaves hundreds of KiB. What a collection
  -- finds right after the start's own is the test's and the loop's garbage
  -- since (13-14 KiB; 17 under ASan when the warm-up falls in that turn).
  local GARBAGE_KIB = 48

  it("a large start ends with a full collection once its spawns settled: its garbage does not stay in orch's memory", function()
    u.with(function(s)
      for i = 1, 100 do s.service { name = "g" .. i, cmd = u.sh("exec sleep 30") } end
      -- With the automatic collector stopped, only the start's own full
      -- collection finalizes this (garbage from before the start).
      -- The finalizer wakes this task: it runs in the loop turn of the
      -- start's collection, before other work of later turns makes garbage
      -- of its own (polling every 10 ms let a slow build's warm-up in).
      local collected, seen = false, orch.cond()
      collectgarbage("stop")
      setmetatable({}, { __gc = function() collected = true; seen:signal() end })
      local ok, err = pcall(function()
        assert.is_true(s.start("all"))
        -- Not inside the start: its last processes may still be starting.
        assert.is_false(collected)
        while not collected do assert(seen:wait(30), "never happened: the start's collection") end
        -- Checked in the loop turn that saw the collection: what one frees
        -- now is only what was made since.
        local before = collectgarbage("count")
        collectgarbage()
        local garbage = before - collectgarbage("count")
        assert.is_true(garbage < GARBAGE_KIB, string.format("%.1f KiB of garbage after the start's collection", garbage))
      end)
      collectgarbage("restart")
      assert(ok, err)
      assert.is_true(s.wait("all", "running", 30))
    end, 90)
  end)

  it("with a state record, the record's first sync after a large start collects again", function()
    u.with(function(s, _, dir)
      local sock = dir .. "/persist.sock"
      s.configure { persist = sock }
      for i = 1, 100 do s.service { name = "p" .. i, cmd = u.sh("exec sleep 30"), log = false } end
      assert.is_true(s.run())
      -- Checked in the same loop turn as the record is seen: what a
      -- collection frees now is what was made since the sync's own.
      local garbage
      h.eventually(function()
        local f = io.open(sock .. ".state")
        if not f then return false end
        f:close()
        local before = collectgarbage("count")
        collectgarbage()
        garbage = before - collectgarbage("count")
        return true
      end, "the state record")
      assert.is_true(garbage < GARBAGE_KIB, string.format("%.1f KiB of garbage after the record's sync", garbage))
      assert.is_true(s.wait("all", "running", 30))
    end, 90)
  end)

  -- A real `orch run` (the fd holder is `orch fdholder`): the holder takes
  -- no pipe at the spawns and refuses the sync that ends the start once,
  -- as when it has not bound its socket yet; the pipes go at a retry.
  it("after a large start, its collection waits for the fd holder to take every pipe", function()
    local d = h.tmpdir()
    local path = d .. "/policy.lua"
    h.write(path, string.format("local DIR = %q\n", d) .. [=[
local orch = require "orch"
local sup = require "orch.supervisor"
local holder = require "orch.supervisor.holder"
local send, refused, collected = holder.send, 0, nil
holder.hand_over = function() end
holder.send = function(...)
  if refused == 0 then
    refused = 1
    return nil
  end
  local ok = send(...)
  -- Garbage of the send that took the pipes: only a collection of the
  -- supervisor's own finalizes it (the automatic one is stopped).
  if ok and collected == nil then
    collected = false
    setmetatable({}, { __gc = function() collected = true end })
  end
  return ok
end
collectgarbage("stop")
sup.configure { log = false }
for i = 1, 100 do sup.service { name = "q" .. i, cmd = { "sleep", "30" }, log = { dir = DIR } } end
sup.run()
local P = sup.instance("q1").sup.persist
orch.task(function()
  while true do
    local n = 0
    for _ in pairs(P.held) do n = n + 1 end
    if n == 100 then break end
    orch.sleep(0.01)
  end
  print(string.format("refused %d collected %s", refused, tostring(collected)))
  orch.exit(0)
end)
]=])
    local code, out, err = h.cli({ "run", "--socket", d .. "/ctl.sock", path })
    assert.are.equal(0, code, err)
    assert.are.equal("refused 1 collected true", (out:gsub("%s+$", "")))
  end)

  it("sup.run starts its services in batches as well: the loop turns between them", function()
    u.with(function(s)
      for i = 1, 100 do s.service { name = "r" .. i, cmd = u.sh("exec sleep 30") } end
      local seen
      orch.task(function()
        seen = 0
        for _, st in ipairs(s.status()) do if st.state ~= "stopped" then seen = seen + 1 end end
      end)
      assert.is_true(s.run())
      assert.is_true(seen ~= nil and seen > 0 and seen < 100, "launched before the first yield: " .. tostring(seen))
      assert.is_true(s.wait("all", "running", 30))
    end, 90)
  end)

  it("reports status fields", function()
    u.with(function(s)
      s.service { name = "st", cmd = u.sh("exec sleep 30") }
      local before = orch.time()
      s.start("st")
      assert.is_true(s.wait("st", "running", 10))
      orch.sleep(0.05)
      local st = u.st(s, "st")
      assert.are.equal("st", st.name)
      assert.are.equal("st", st.service)
      assert.are.equal("running", st.state)
      assert.is_true(u.alive(st.pid))
      assert.is_true(st.start_time >= before - 1 and st.start_time <= orch.time())
      assert.is_true(st.uptime > 0)
      assert.are.equal(0, st.restarts)
      assert.is_true(st.rss > 0)
      assert.is_true(st.cpu >= 0)
      for _, v in pairs(st) do
        assert.is_true(type(v) ~= "table" and type(v) ~= "function" and type(v) ~= "userdata")
      end
      s.stop("st")
      st = u.st(s, "st")
      assert.are.equal("stopped", st.state)
      assert.is_nil(st.pid)
      assert.are.equal("TERM", st.exit_signal)
    end)
  end)

  it("keeps the rss and cpu figures for accounting_max_age seconds, per run; states and uptime are always fresh", function()
    u.with(function(s)
      s.configure { accounting_max_age = 3600 }
      s.service { name = "burn", cmd = u.sh("while :; do :; done") }
      s.start("burn")
      assert.is_true(s.wait("burn", "running", 10))
      local first = u.st(s, "burn")
      assert.is_number(first.cpu)
      assert.is_number(first.rss)
      -- The kernel's figure moves on; the status keeps its first reading.
      h.eventually(function()
        local ps = orch.proc.stat(first.pid)
        return ps and ps.cpu > first.cpu + 0.1
      end, "the service burned 0.1 s of CPU")
      local again = u.st(s, "burn")
      assert.are.equal(first.cpu, again.cpu)
      assert.are.equal(first.rss, again.rss)
      assert.is_true(again.uptime > first.uptime)
      -- The state is never cached: a stop signal shows at once.
      assert.is_true(s.signal("burn", "STOP"))
      h.eventually(function() return u.st(s, "burn").state == "stopped" end, "stopped shown")
      assert.is_true(s.signal("burn", "CONT"))
      h.eventually(function() return u.st(s, "burn").state == "running" end, "running again")
      -- Age 0: every status reads the kernel's figures.
      s.configure { accounting_max_age = 0 }
      local fresh = u.st(s, "burn")
      assert.is_true(fresh.cpu > first.cpu + 0.1, fresh.cpu .. " after " .. first.cpu)
      -- A new run is read at once, whatever the age of the last reading.
      s.configure { accounting_max_age = 3600 }
      assert.are.equal(fresh.cpu, u.st(s, "burn").cpu)
      s.restart("burn")
      assert.is_true(s.wait("burn", "running", 10))
      local new = u.st(s, "burn")
      assert.are_not.equal(first.pid, new.pid)
      assert.is_true(new.cpu < fresh.cpu, new.cpu .. " after a restart, " .. fresh.cpu .. " before")
    end)
    h.check_raises {
      { function() u.supmod.new().configure { accounting_max_age = -1 } end, "option 'accounting_max_age': number of seconds >= 0 expected" },
      { function() u.supmod.new().configure { accounting_max_age = "1" } end, "option 'accounting_max_age': number of seconds >= 0 expected" },
      { function() u.supmod.new().configure { accounting_max_age = math.huge } end, "option 'accounting_max_age': number of seconds >= 0 expected" },
      { function() u.supmod.new().configure { accounting_max_age = 0 / 0 } end, "option 'accounting_max_age': number of seconds >= 0 expected" },
    }
  end)

  it("signals a service and restarts it", function()
    u.with(function(s)
      s.service { name = "sig", cmd = u.sh("trap 'echo got USR1' USR1; echo trapped; while :; do sleep 0.02; done") }
      s.start("sig")
      assert.is_true(s.wait("sig", "running", 10))
      assert.is_true(u.until_true(function() return (s.tail("sig")[1]) == "trapped" end))
      assert.is_true(s.signal("sig", "USR1"))
      assert.is_true(u.until_true(function() return (s.tail("sig")[2]) == "got USR1" end))
      local pid = u.st(s, "sig").pid
      assert.is_true(s.restart("sig"))
      assert.is_true(s.wait("sig", "running", 10))
      assert.are_not.equal(pid, u.st(s, "sig").pid)
      assert.is_false(u.alive(pid))
      s.stop("sig")
      assert.are.same({ nil, "signal: sig is not running", "ESRCH" }, { s.signal("sig", "TERM") })
    end)
  end)

  it("spawns each restart with the definition's options, and with the supervisor's env as it is then", function()
    u.with(function(s)
      s.configure { env = { SUP_VAR = "a" } }
      s.service { name = "envr", backoff = 0, start_limit = false, env = { SVC_VAR = "x" },
                  cmd = u.sh("echo $SUP_VAR $SVC_VAR $ORCH_SERVICE $ORCH_INSTANCE $(pwd); exec sleep 30"), cwd = "/tmp" }
      s.start("envr")
      assert.is_true(s.wait("envr", "running", 10))
      local function crash()       -- the restart policy's immediate spawn
        local pid = u.st(s, "envr").pid
        assert.is_true(orch.kill(pid, "KILL"))
        assert.is_true(u.until_true(function()
          local st = u.st(s, "envr")
          return st.state == "running" and st.pid ~= nil and st.pid ~= pid
        end))
      end
      local function line(n, want)
        assert.is_true(u.until_true(function() return s.tail("envr")[n] ~= nil end))
        assert.are.equal(want, s.tail("envr")[n])
      end
      line(1, "a x envr 1 /tmp")
      -- The options are kept from the first restart on, and used again.
      assert.is_nil(s.instance("envr").spawn_opts)
      crash()
      line(2, "a x envr 1 /tmp")
      local kept = s.instance("envr").spawn_opts
      assert.is_table(kept)
      crash()
      line(3, "a x envr 1 /tmp")
      assert.are.equal(kept, s.instance("envr").spawn_opts)
      s.configure { env = { SUP_VAR = "b" } }
      crash()
      line(4, "b x envr 1 /tmp")
      s.configure { env = { SUP_VAR = "b", MORE = "m" } }
      crash()
      line(5, "b x envr 1 /tmp")
      s.stop("envr")
    end)
  end)

  it("follows output lines and keeps orch's own notify and heartbeat variables from services", function()
    u.with(function(s)
      s.configure { env = { NOTIFY_SOCKET = "/run/elsewhere", ORCH_HEARTBEAT_SLOT = "7", KEPT = "yes" } }
      local seen = {}
      s.service { name = "fol", restart = "never", cmd = u.sh("sleep 0.2; echo ${NOTIFY_SOCKET-unset} ${ORCH_HEARTBEAT_SLOT-unset} $KEPT") }
      s.service { name = "mine", restart = "never", env = { NOTIFY_SOCKET = "/mine" }, cmd = u.sh("echo $NOTIFY_SOCKET") }
      local stop = s.follow("fol", function(line) seen[#seen + 1] = line end)
      assert.are.equal("function", type(stop))
      assert.has_error(function() s.follow("fol", "x") end, "bad argument #2 to 'follow' (function expected)")
      assert.are.same({ nil, "follow: no such service 'x'", "ENOENT" }, { s.follow("x", print) })
      s.start("all")
      assert.is_true(s.wait("all", "exited", 10))
      assert.is_true(u.until_true(function() return #seen == 1 end))
      assert.are.same({ "unset unset yes" }, seen)
      assert.is_true(u.until_true(function() return s.tail("mine")[1] == "/mine" end))
      stop()
    end)
  end)

  it("runs numprocs instances", function()
    u.with(function(s)
      s.service { name = "pool", numprocs = 3, cmd = u.sh("echo instance $ORCH_INSTANCE of $ORCH_SERVICE; exec sleep 30") }
      s.start("pool")
      assert.is_true(s.wait("pool", "running", 10))
      local list = s.status("pool")
      assert.are.equal(3, #list)
      local pids = {}
      for i, st in ipairs(list) do
        assert.are.equal("pool:" .. i, st.name)
        assert.are.equal(i, st.index)
        pids[st.pid] = true
      end
      assert.is_true(u.until_true(function() return #s.tail("pool") == 3 end))
      assert.are.same({ "instance 2 of pool" }, s.tail("pool:2"))
      assert.are.same({ "[pool:1] instance 1 of pool", "[pool:2] instance 2 of pool", "[pool:3] instance 3 of pool" }, s.tail("pool"))
      local n = 0
      for _ in pairs(pids) do n = n + 1 end
      assert.are.equal(3, n)
      s.stop("pool:2")
      assert.are.equal("stopped", u.st(s, "pool:2").state)
      assert.are.equal("running", u.st(s, "pool:3").state)
    end)
  end)

  it("reloads: keeps unchanged services, restarts changed ones, stops removed ones", function()
    u.with(function(s)
      local function defs(changed)
        return {
          { name = "keep", cmd = u.sh("exec sleep 30"), on_exit = function() end },
          { name = "change", cmd = u.sh(changed and "exec sleep 31" or "exec sleep 30") },
          changed and { name = "new", cmd = u.sh("exec sleep 30") } or { name = "gone", cmd = u.sh("exec sleep 30") },
        }
      end
      for _, d in ipairs(defs(false)) do s.service(d) end
      s.run()
      assert.is_true(s.wait("all", "running", 10))
      local keep, change, gone = u.st(s, "keep").pid, u.st(s, "change").pid, u.st(s, "gone").pid
      -- A bad definition changes nothing.
      local bad = defs(true)
      bad[2].restart = "bogus"
      local ok, err = pcall(s.reload, bad)
      assert.is_false(ok)
      assert.matches("service 'change': ", err)
      -- An unchanged definition keeps its service's checked configuration,
      -- and is still refused when given twice.
      local twice = defs(false)
      twice[#twice + 1] = defs(false)[1]
      ok, err = pcall(s.reload, twice)
      assert.is_false(ok)
      assert.matches("service 'keep': defined twice", err)
      assert.are.equal(change, u.st(s, "change").pid)
      assert.are.equal(keep, u.st(s, "keep").pid)
      local res = s.reload(defs(true))
      assert.are.same({ kept = { "keep" }, restarted = { "change" }, stopped = { "gone" }, added = { "new" } }, res)
      assert.is_true(s.wait({ "keep", "change", "new" }, "running", 10))
      assert.are.equal(keep, u.st(s, "keep").pid)
      assert.are_not.equal(change, u.st(s, "change").pid)
      assert.is_false(u.alive(change))
      assert.is_false(u.alive(gone))
      assert.is_nil(s.status("gone"))
      local names = {}
      for i, d in ipairs(s.services()) do names[i] = d.name end
      assert.are.same({ "keep", "change", "new" }, names)
    end)
  end)
end)
