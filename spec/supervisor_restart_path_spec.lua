-- The restart path of a crashed service: what runs between the exit and
-- the replacement's spawn is what its users wait for (issue 15).
local u = require "spec.supervisor_util"
local orch = u.orch

describe("a restart", function()
  it("loads no module between the exit and the spawn: the first start loaded them", function()
    u.with(function(s, logs)
      s.service { name = "lm", cmd = u.sh("exec sleep 30"), backoff = 0, start_limit = false }
      assert.is_true(s.start("lm"))
      assert.is_true(s.wait("lm", "running", 10))
      local pid = u.st(s, "lm").pid
      -- What is loaded once the service runs; a module loaded later is
      -- one the restart needed and loaded on its way to the spawn.
      local before = {}
      for name in pairs(package.loaded) do before[name] = true end
      local loaded = {}
      local spawn = orch.spawn
      orch.spawn = function(...)
        for name in pairs(package.loaded) do
          if not before[name] then loaded[#loaded + 1] = name end
        end
        return spawn(...)
      end
      local ok, err = pcall(function()
        orch.kill(pid, "KILL")
        assert.is_true(u.until_true(function()
          local st = u.st(s, "lm")
          return st.pid ~= pid and st.state == "running"
        end, 10))
      end)
      orch.spawn = spawn
      assert(ok, err)
      assert.truthy(u.logged(logs, "lm: killed by KILL"), "the restart logged")
      table.sort(loaded)
      assert.are.same({}, loaded)
    end)
  end)
end)

-- The restart spawned by the exit's own action (instance.lua,
-- respawn_early): before the run's end is recorded, and only where the
-- table's path then takes it as its spawn.
describe("a restart at the exit", function()
  -- Counts the spawns of service `name` while fn runs (orch.spawn and a
  -- start's orch.spawn_begin wrapped); each gives on_spawn(opts, how) a
  -- look first.
  local function counting(name, fn, on_spawn)
    local n = 0
    local spawn, begin = orch.spawn, orch.spawn_begin
    local function wrap(f, how)
      return function(opts)
        if opts.env and opts.env.ORCH_SERVICE == name then
          n = n + 1
          if on_spawn then on_spawn(opts, how) end
        end
        return f(opts)
      end
    end
    orch.spawn, orch.spawn_begin = wrap(spawn, "spawn"), wrap(begin, "begin")
    local ok, err = pcall(fn, function() return n end)
    orch.spawn, orch.spawn_begin = spawn, begin
    assert(ok, err)
    return n
  end

  it("spawns the replacement before the run's end is recorded; the bookkeeping follows", function()
    u.with(function(s, logs)
      s.service { name = "fr", cmd = u.sh("exec sleep 30"), backoff = 0, start_limit = false }
      assert.is_true(s.start("fr"))
      assert.is_true(s.wait("fr", "running", 10))
      local pid = u.st(s, "fr").pid
      local inst = s.instance("fr")
      local at_spawn
      counting("fr", function()
        orch.kill(pid, "KILL")
        assert.is_true(u.until_true(function()
          local st = u.st(s, "fr")
          return st.pid ~= pid and st.state == "running"
        end, 10))
      end, function()
        at_spawn = { exit_signal = inst.exit_signal or "none", restarts = inst.restarts,
                     history = inst.history and #inst.history or 0 }
      end)
      -- At the spawn, nothing of the exit was recorded yet...
      assert.are.same({ exit_signal = "none", restarts = 0, history = 0 }, at_spawn)
      -- ... and all of it is once the restart is under way.
      local st = u.st(s, "fr")
      assert.are.equal("KILL", st.exit_signal)
      assert.are.equal(1, st.restarts)
      assert.are.equal(1, #inst.history)
      assert.truthy(u.logged(logs, "fr: killed by KILL"))
      assert.is_false(u.alive(pid))
    end)
  end)

  it("spawns at the exit a service whose dependencies run; one whose dependency is down waits", function()
    u.with(function(s, logs)
      s.service { name = "dep", cmd = u.sh("exec sleep 30"), backoff = 60, start_limit = false }
      s.service { name = "user", cmd = u.sh("exec sleep 30"), depends_on = { "dep" }, backoff = 0,
                  start_limit = false }
      s.start("all")
      assert.is_true(s.wait("user", "running", 10))
      local inst = s.instance("user")
      local pid = u.st(s, "user").pid
      local counted
      local spawns = counting("user", function()
        assert(orch.kill(pid, "KILL"))
        assert.is_true(u.until_true(function() return u.st(s, "user").restarts == 1 end, 10))
      end, function() counted = inst.restarts end)
      assert.are.equal(1, spawns)
      -- Spawned at the exit: before the restart was counted.
      assert.are.equal(0, counted)
      assert.is_true(s.wait("user", "running", 10))
      assert.are.equal("running", u.st(s, "user").state)
      -- dep down (its restart 60 s away): user's restart waits for it.
      assert(orch.kill(u.st(s, "dep").pid, "KILL"))
      assert.is_true(s.wait("dep", "backoff", 10))
      spawns = counting("user", function()
        assert(orch.kill(u.st(s, "user").pid, "KILL"))
        assert.is_true(s.wait("user", "waiting", 10))
      end)
      assert.are.equal(0, spawns)
      assert.truthy(u.logged(logs, "user: waiting for dep to be ready"))
      s.stop("all")
    end)
  end)

  it("never respawns a service whose stop began before its exit was handled", function()
    u.with(function(s)
      s.service { name = "rs", cmd = u.sh("exec sleep 30"), backoff = 0, start_limit = false }
      for _ = 1, 10 do
        assert.is_true(s.start("rs"))
        assert.is_true(s.wait("rs", "running", 10))
        local pid = u.st(s, "rs").pid
        local spawns = counting("rs", function()
          -- The KILL and the stop in the same turn: the exit is handled
          -- once the stop has begun (want = false).
          orch.kill(pid, "KILL")
          assert(s.stop("rs"))
        end)
        assert.are.equal(0, spawns)
        local st = u.st(s, "rs")
        assert.are.equal("stopped", st.state)
        assert.is_nil(st.pid)
        assert.is_false(u.alive(pid))
      end
    end)
  end)

  it("never passes the start limit: the last exit within it turns the service fatal", function()
    u.with(function(s)
      s.service { name = "sl", cmd = u.sh("exit 1"), backoff = 0, start_limit = { burst = 3, interval = 600 } }
      local spawns = counting("sl", function()
        assert.is_true(s.start("sl"))
        assert.is_true(s.wait("sl", "fatal", 10))
      end)
      assert.are.equal(3, spawns)
      local st = u.st(s, "sl")
      assert.are.equal(2, st.restarts)
      assert.is_nil(st.pid)
    end)
  end)

  it("never respawns a crash-looping service once its stop returned", function()
    u.with(function(s, _, _, _, token)
      s.service { name = "cl", cmd = u.sh("exit 1"), backoff = 0, start_limit = false }
      assert.is_true(s.start("cl"))
      assert.is_true(u.until_true(function() return u.st(s, "cl").restarts >= 20 end, 10))
      local after = 0
      counting("cl", function(n)
        assert(s.stop("cl"))
        after = n()
        -- A start and stop of another service: loop turns in which a late
        -- exit of cl would be handled.
        s.service { name = "other", cmd = u.sh("exec sleep 30") }
        assert.is_true(s.start("other"))
        assert.is_true(s.wait("other", "running", 10))
        assert(s.stop("other"))
        assert.are.equal(after, n())
      end)
      assert.are.equal("stopped", u.st(s, "cl").state)
      assert.are.same({}, u.leftovers(token))
    end)
  end)

  it("kills a spawn the table's path did not take: the restart policy stays the one that decides", function()
    u.with(function(s, logs)
      local policy = require "orch.supervisor.policy"
      local decide, calls = policy.decide, 0
      -- The early check hears "restart", the table's path then "stop": a
      -- policy that changed its mind between the two (none does).
      policy.decide = function(cfg, ...)
        if cfg.name == "sn" then
          calls = calls + 1
          if calls == 2 then return "stop" end
        end
        return decide(cfg, ...)
      end
      local ok, err = pcall(function()
        s.service { name = "sn", restart = "always", cmd = u.sh("exec sleep 30"), backoff = 0, start_limit = false }
        assert.is_true(s.start("sn"))
        assert.is_true(s.wait("sn", "running", 10))
        local pid = u.st(s, "sn").pid
        local early
        local spawns = counting("sn", function()
          orch.kill(pid, "KILL")
          assert.is_true(s.wait("sn", "exited", 10))
        end, function() early = true end)
        assert.are.equal(1, spawns)
        assert.is_true(early)
        local i = u.logged(logs, "sn: internal error: the restart spawned at the exit (pid ")
        assert.truthy(i, "said")
        local killed = math.tointeger(tonumber(logs[i]:match("%(pid (%d+)%)")))
        assert.is_true(u.until_true(function() return not u.alive(killed) end, 10))
        assert.are.equal("exited", u.st(s, "sn").state)
      end)
      policy.decide = decide
      assert(ok, err)
    end)
  end)
end)
