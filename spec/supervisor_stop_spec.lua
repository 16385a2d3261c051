-- The supervisor: stop sequences (group stop, TERM ignored -> KILL, stop
-- hooks), what orch does on SIGTERM/SIGINT and when a critical service goes
-- fatal (through the orch binary).
local u = require "spec.supervisor_util"
local h, orch = u.h, u.orch

-- The pid a service wrote into path (it may be running a moment before it
-- has written it).
local function pid_in(path)
  local pid
  u.until_true(function()
    pid = tonumber(h.slurp(path):match("%d+"))
    return pid ~= nil
  end, 20)
  return pid
end

describe("supervisor stop sequence", function()
  it("leaves no grandchild alive after a group stop", function()
    u.with(function(s, _, dir)
      s.service { name = "tree", stop = { timeout = 0.3 },
        cmd = u.sh("sleep 300 & echo $! > " .. dir .. "/gc1; " ..
                   "(trap '' TERM; sleep 300 & echo $! > " .. dir .. "/gc2; wait) & " ..
                   "echo started; wait") }
      s.start("tree")
      assert.is_true(u.until_true(function() return pid_in(dir .. "/gc1") and pid_in(dir .. "/gc2") end))
      local gc1, gc2 = pid_in(dir .. "/gc1"), pid_in(dir .. "/gc2")
      assert.is_true(u.alive(gc1) and u.alive(gc2))
      s.stop("tree")
      assert.is_true(u.until_true(function() return not u.alive(gc1) and not u.alive(gc2) end, 5))
    end)
  end)

  it("kills what the main process leaves behind when it exits", function()
    u.with(function(s, _, dir)
      s.service { name = "leaver", restart = "never",
        cmd = u.sh("sleep 300 & echo $! > " .. dir .. "/bg; sleep 0.1; exit 1") }
      s.start("leaver")
      assert.is_true(s.wait("leaver", "exited", 10))
      local bg = pid_in(dir .. "/bg")
      assert.is_true(u.until_true(function() return not u.alive(bg) end, 5))
    end)
  end)

  it("sends KILL to a child that ignores TERM after the timeout", function()
    u.with(function(s, logs)
      s.service { name = "stubborn", stop = { timeout = 0.3 },
        cmd = u.sh("trap '' TERM; echo trapped; while :; do sleep 0.05; done") }
      s.start("stubborn")
      assert.is_true(u.until_true(function() return s.tail("stubborn")[1] == "trapped" end))
      local t0 = orch.now()
      s.stop("stubborn")
      assert.is_true(orch.now() - t0 >= 0.3)
      local st = u.st(s, "stubborn")
      assert.are.equal("stopped", st.state)
      assert.are.equal("KILL", st.exit_signal)
      assert.truthy(u.logged(logs, "stubborn: still running 0.3s after TERM: sending KILL"))
    end)
  end)

  it("uses the stop signal and runs a stop hook first", function()
    u.with(function(s, logs)
      s.service { name = "int", cmd = u.sh("exec sleep 30"), stop = { signal = "INT" } }
      s.service { name = "hooked", stop = function(svc)
          assert(svc:signal("QUIT"))
          assert.is_false(svc:wait_exit(0.3))    -- it only prints on QUIT
        end,
        cmd = u.sh("trap 'echo dumped' QUIT; echo trapped; while :; do sleep 0.02; done") }
      s.service { name = "badhook", cmd = u.sh("exec sleep 30"), stop = function() error("no luck") end }
      s.start("all")
      assert.is_true(s.wait("all", "running", 10))
      assert.is_true(u.until_true(function() return s.tail("hooked")[1] == "trapped" end))
      s.stop("all")
      assert.are.equal("INT", u.st(s, "int").exit_signal)
      assert.are.same({ "trapped", "dumped" }, s.tail("hooked"))
      assert.are.equal("TERM", u.st(s, "hooked").exit_signal)
      assert.truthy(u.logged(logs, "badhook: stop hook failed: "))
      assert.are.equal("TERM", u.st(s, "badhook").exit_signal)
    end)
  end)

  it("a stop hook that never returns is cancelled after the stop timeout: the stop goes on and ends", function()
    u.with(function(s, logs)
      s.service { name = "stuck", cmd = u.sh("exec sleep 300"),
        stop = { fn = function() orch.sleep(1e6) end, timeout = 0.3 } }
      s.start("stuck")
      assert.is_true(s.wait("stuck", "running", 10))
      local pid = u.st(s, "stuck").pid
      assert.is_true(s.stop("stuck"))
      local st = u.st(s, "stuck")
      assert.are.same({ "stopped", "TERM" }, { st.state, st.exit_signal })
      assert.is_false(u.alive(pid))
      assert.truthy(u.logged(logs, "stuck: stop hook still running after 0.3s: cancelled"))
    end)
  end)

  it("stops every instance of a layer in parallel", function()
    u.with(function(s)
      for i = 1, 4 do
        s.service { name = "slow" .. i, stop = { timeout = 0.4 },
          cmd = u.sh("trap '' TERM; echo trapped; while :; do sleep 0.05; done") }
      end
      s.start("all")
      assert.is_true(u.until_true(function()
        for i = 1, 4 do if s.tail("slow" .. i)[1] ~= "trapped" then return false end end
        return true
      end))
      local t0 = orch.now()
      s.stop("all")
      -- Four 0.4 s grace periods side by side, not one after the other.
      assert.is_true(orch.now() - t0 < 1.5)
    end)
  end)

  it("begins the stops of a layer in definition order, whether it holds most services or a few", function()
    u.with(function(s)
      local names = { "zeta", "alpha", "mid", "beta", "omega", "gamma", "delta", "kappa", "iota", "eta" }
      for _, n in ipairs(names) do s.service { name = n, cmd = { "sleep", "100" } } end
      -- What "top" depends on stops after it, in a layer of its own.
      s.service { name = "top", cmd = { "sleep", "100" }, depends_on = { "kappa", "alpha" } }
      local stopping = {}
      s.events(function(ev) if ev.event == "stopping" then stopping[#stopping + 1] = ev.name end end)
      local function stops(target, want)
        s.start("all")
        assert.is_true(s.wait("all", "running", 10))
        stopping = {}
        assert.is_true(s.stop(target))
        assert.are.equal(table.concat(want, " "), table.concat(stopping, " "))
      end
      -- All (a walk of the definitions), then the layer of what "top" needs.
      stops("all", { "zeta", "mid", "beta", "omega", "gamma", "delta", "iota", "eta", "top", "alpha", "kappa" })
      -- A few of many (sorted).
      stops({ "iota", "zeta" }, { "zeta", "iota" })
    end)
  end)
end)

local function orch_run(script, token, stderr_path)
  -- Its own control socket: the default one (/run/orch/script.sock) and its
  -- lock would be shared by every test.
  return assert(orch.spawn { h.bin, "run", script, stdout = "null", stderr = stderr_path,
    env = { ORCH_SPEC_RUN = token, ORCH_SOCKET = stderr_path .. ".sock" } })
end

describe("supervisor under orch run", function()
  it("stops every service on SIGTERM, dependents first, and exits 0", function()
    u.with(function(_, _, dir, _, token)
      local script = h.script(string.format([[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = %q }
        sup.service { name = "db", cmd = { "sh", "-c", "echo $$ > %s/db.pid; exec sleep 300" } }
        sup.service { name = "web", depends_on = "db",
                      cmd = { "sh", "-c", "echo $$ > %s/web.pid; exec sleep 300" } }
        sup.run()
        assert(sup.wait("all", "running", 20))
        io.open(%q, "w"):close()
      ]], dir, dir, dir, dir .. "/up"))
      local p = orch_run(script, token, dir .. "/err")
      assert.is_true(u.until_true(function() return io.open(dir .. "/up") ~= nil end, 20))
      -- `running` is reached at spawn: wait for what the test reads, the
      -- pid files the shells write.
      assert.is_true(u.until_true(function() return pid_in(dir .. "/db.pid") and pid_in(dir .. "/web.pid") end, 20))
      local db, web = pid_in(dir .. "/db.pid"), pid_in(dir .. "/web.pid")
      assert.is_true(p:kill("TERM"))
      local code, sig = p:wait(20)
      assert.are.equal(0, code, h.slurp(dir .. "/err"))
      assert.is_nil(sig)
      assert.is_false(u.alive(db))
      assert.is_false(u.alive(web))
      local err = h.slurp(dir .. "/err")
      assert.matches("received TERM: stopping every service", err, 1, true)
      local iweb, idb = err:find("web: stopped", 1, true), err:find("db: stopped", 1, true)
      assert.truthy(iweb and idb and iweb < idb, err)
    end)
  end)

  it("escalates to KILL on a second signal and exits 5", function()
    u.with(function(_, _, dir, _, token)
      local script = h.script(string.format([[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = %q }
        sup.service { name = "deaf", stop = { timeout = 300 },
          cmd = { "sh", "-c", "trap '' TERM INT; echo $$ > %s/deaf.pid; while :; do sleep 0.05; done" } }
        sup.run()
        assert(sup.wait("all", "running", 20))
      ]], dir, dir))
      local p = orch_run(script, token, dir .. "/err")
      assert.is_true(u.until_true(function() return pid_in(dir .. "/deaf.pid") ~= nil end, 20))
      local deaf = pid_in(dir .. "/deaf.pid")
      orch.sleep(0.1)
      assert.is_true(p:kill("INT"))
      assert.is_true(u.until_true(function() return h.slurp(dir .. "/err"):find("received INT", 1, true) end))
      assert.is_nil(p:wait(0.3))     -- still in its 300 s grace period
      assert.is_true(p:kill("TERM"))
      local code = p:wait(20)
      assert.are.equal(5, code)      -- the stop had to KILL
      assert.is_false(u.alive(deaf))
      assert.matches("received TERM again: killing every service", h.slurp(dir .. "/err"), 1, true)
    end)
  end)

  it("orch.exit(code) from a task stops every service first, dependents first, then exits with code", function()
    u.with(function(_, _, dir, _, token)
      -- web handles TERM slowly: orch must wait for it, not exit under it.
      local script = h.script(string.format([[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = %q }
        sup.service { name = "db", cmd = { "sh", "-c", "echo $$ > %s/db.pid; exec sleep 300" } }
        sup.service { name = "web", depends_on = "db",
                      cmd = { "sh", "-c", "trap 'sleep 0.3; exit 0' TERM; echo $$ > %s/web.pid; while :; do sleep 0.05; done" } }
        sup.run()
        orch.task(function()
          assert(sup.wait("all", "running", 20))
          while not (io.open(%q) and io.open(%q)) do orch.sleep(0.02) end
          orch.exit(7)
          error("orch.exit returned")
        end)
      ]], dir, dir, dir, dir .. "/db.pid", dir .. "/web.pid"))
      local p = orch_run(script, token, dir .. "/err")
      assert.is_true(u.until_true(function() return pid_in(dir .. "/db.pid") and pid_in(dir .. "/web.pid") end, 20))
      local db, web = pid_in(dir .. "/db.pid"), pid_in(dir .. "/web.pid")
      local code, sig = p:wait(20)
      local err = h.slurp(dir .. "/err")
      assert.are.equal(7, code, err)
      assert.is_nil(sig)
      assert.is_false(u.alive(db))
      assert.is_false(u.alive(web))
      assert.matches("orch.exit(7): stopping every service", err, 1, true)
      assert.not_matches("orch.exit returned", err, 1, true)
      local iweb, idb = err:find("web: stopped", 1, true), err:find("db: stopped", 1, true)
      assert.truthy(iweb and idb and iweb < idb, err)
      -- Nothing is left for a next orch to adopt: the state record is gone.
      assert.is_nil(io.open(dir .. "/err.sock.state"))
    end)
  end)

  it("orch.exit from a stop hook neither hangs the stop nor cuts it short", function()
    u.with(function(_, _, dir, _, token)
      local script = h.script(string.format([[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = %q }
        sup.service { name = "other", cmd = { "sh", "-c", "echo $$ > %s/other.pid; exec sleep 300" } }
        sup.service { name = "hooked", cmd = { "sh", "-c", "echo $$ > %s/hooked.pid; exec sleep 300" },
          stop = function(svc) orch.exit(4) svc:signal("TERM") end }
        sup.run()
      ]], dir, dir, dir))
      local p = orch_run(script, token, dir .. "/err")
      assert.is_true(u.until_true(function() return pid_in(dir .. "/other.pid") and pid_in(dir .. "/hooked.pid") end, 20))
      local other, hooked = pid_in(dir .. "/other.pid"), pid_in(dir .. "/hooked.pid")
      -- `orch ctl stop hooked` runs the hook, whose orch.exit stops the rest
      -- (orch may exit before it answers: the client's status is not tested).
      h.cli({ "ctl", "--socket", dir .. "/err.sock", "stop", "hooked" })
      local ecode = p:wait(20)
      local err = h.slurp(dir .. "/err")
      assert.are.equal(4, ecode, err)
      assert.is_false(u.alive(other))
      assert.is_false(u.alive(hooked))
      assert.matches("orch.exit(4): stopping every service", err, 1, true)
    end)
  end)

  it("stops everything and exits 3 when a critical service goes fatal", function()
    local dir = h.tmpdir()
    local script = h.script(string.format([[
      local sup = require "orch.supervisor"
      sup.configure { runtime_dir = %q }
      sup.service { name = "other", cmd = { "sh", "-c", "echo $$ > %s/other.pid; exec sleep 300" } }
      sup.service { name = "vital", critical = true, cmd = { "sh", "-c", "sleep 0.2; exit 3" },
                    backoff = 0, start_limit = { burst = 2, interval = 60 } }
      sup.run()
    ]], dir, dir))
    local code, _, err = h.cli({ "run", script }, nil, { ORCH_SOCKET = dir .. "/ctl.sock" })
    assert.are.equal(3, code, err)
    assert.matches("vital: FATAL: start limit reached: 2 starts within 60s", err, 1, true)
    assert.matches("critical service vital is fatal: stopping every service", err, 1, true)
    local other = pid_in(dir .. "/other.pid")
    assert.is_false(u.alive(other))
  end)
end)
