-- A supervisor's own life under `orch run` (issue 11): it stays up until it
-- is told to go, its signals (TERM/INT ordered stop, a second one KILLs and
-- exits at once, HUP reloads, USR1 reopens logs), no restart once a stop has
-- begun, exit statuses, and stops that always end. Real `orch run`
-- processes, real signals, the real control socket.
local u = require "spec.supervisor_util"
local h, orch = u.h, u.orch
local ctl = require "orch.ctl"

local function pid_in(path)
  return tonumber(h.slurp(path):match("%d+"))
end

-- The processes a test spawned: killed (with their services) when it
-- fails, so that no orch outlives its test.
local spawned = {}
local function spawn(opts)
  local p = assert(orch.spawn(opts))
  spawned[#spawned + 1] = p
  return p
end

-- u.with, and whatever the test spawned is killed if it failed.
local function with(fn)
  return u.with(function(...)
    local ok, err = xpcall(fn, debug.traceback, ...)
    for _, p in ipairs(spawned) do
      if p:wait(0) == nil then p:kill("KILL") p:wait(5) end
    end
    spawned = {}
    if not ok then error(err, 0) end
  end)
end

-- `orch run script` in the background; its stderr goes to dir/err.
local function orch_run(script, token, dir, env)
  env = env or {}
  env.ORCH_SPEC_RUN = token
  -- The test's own socket: the default one and its lock would be shared.
  env.ORCH_SOCKET = env.ORCH_SOCKET or dir .. "/ctl.sock"
  return spawn { h.bin, "run", script, stdout = "null", stderr = dir .. "/err", env = env }
end

-- A policy script in dir: `local DIR, SOCK = ...` then src.
local function policy(dir, src)
  local path = dir .. "/policy.lua"
  h.write(path, string.format("local DIR, SOCK = %q, %q\n", dir, dir .. "/ctl.sock") .. src)
  return path
end

-- One control request (in a task); the reply table. (Some of these
-- orchestrators run as nobody: the client is told it means to talk to them.)
local NOBODY = 65534
local function request(dir, req)
  local c = assert(ctl.connect(dir .. "/ctl.sock", nil, NOBODY))
  local r = assert(c:request(req))
  c:close()
  return r
end

local function states(dir)
  local by = {}
  for _, s in ipairs(request(dir, { cmd = "status" }).services) do by[s.name] = s end
  return by
end

-- Waits until the control socket answers.
local function up(dir, p)
  h.eventually(function()
    assert(p:status() == "running" or p.pid, "orch run ended: " .. h.slurp(dir .. "/err"))
    local c = ctl.connect(dir .. "/ctl.sock", 1, NOBODY)
    if c then c:close() end
    return c ~= nil
  end, "the control socket answers")
end

local SERVE = [[
if not require("orch.ctl").reloading then assert(require("orch.ctl").serve { socket = SOCK }) end
]]

describe("a supervisor stays up", function()
  it("after every service is stopped, fatal or never started, until ctl shutdown", function()
    with(function(_, _, dir, _, token)
      local script = policy(dir, [[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = DIR }
        sup.service { name = "idle", autostart = false, cmd = { "sleep", "300" } }
        sup.service { name = "bad", cmd = { "sh", "-c", "exit 1" }, backoff = 0,
                      start_limit = { burst = 1, interval = 60 } }
        sup.service { name = "web", cmd = { "sleep", "300" } }
        sup.run()
      ]] .. SERVE)
      local p = orch_run(script, token, dir)
      up(dir, p)
      h.eventually(function()
        local st = states(dir)
        return st.bad.state == "fatal" and st.web.state == "running"
      end, "bad fatal, web running")
      local r = request(dir, { cmd = "stop", name = "all" })
      assert.is_true(r.ok, r.error)
      assert.are.same({}, r.also_stopped)     -- every instance is named
      -- Nothing runs, one service is fatal, one never started: orch answers.
      local st = states(dir)
      assert.are.equal("stopped", st.web.state)
      assert.are.equal("stopped", st.idle.state)
      assert.is_nil(p:wait(0))
      r = request(dir, { cmd = "start", name = "all" })
      assert.is_true(r.ok, r.error)
      h.eventually(function()
        local st = states(dir)
        return st.idle.state == "running" and st.bad.state == "fatal"
      end, "idle running, bad fatal again")
      assert.are.equal("running", states(dir).web.state)
      r = request(dir, { cmd = "shutdown" })
      assert.is_true(r.ok)
      local code, sig = p:wait(30)
      assert.are.equal(4, code, h.slurp(dir .. "/err"))   -- bad was fatal again at exit
      assert.is_nil(sig)
    end)
  end)

  it("with nothing defined to start (every service autostart = false)", function()
    with(function(_, _, dir, _, token)
      local script = policy(dir, [[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = DIR }
        sup.service { name = "later", autostart = false, cmd = { "sleep", "300" } }
        sup.run()
      ]] .. SERVE)
      local p = orch_run(script, token, dir)
      up(dir, p)
      assert.is_true(request(dir, { cmd = "start", name = "later" }).ok)
      h.eventually(function() return states(dir).later.state == "running" end, "later running")
      assert.is_true(p:kill("TERM"))
      local code = p:wait(30)
      assert.are.equal(0, code, h.slurp(dir .. "/err"))
    end)
  end)

  it("exits when idle with exit_when_idle = true, and a plain script still exits", function()
    with(function(_, _, dir, _, token)
      local script = policy(dir, [[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = DIR, exit_when_idle = true }
        sup.service { name = "once", restart = "never", cmd = { "sh", "-c", "exit 0" } }
        sup.run()
      ]])
      local p = orch_run(script, token, dir)
      assert.are.equal(0, p:wait(30), h.slurp(dir .. "/err"))
      local plain = h.script("orch.task(function() orch.sleep(0.01) end)")
      p = orch_run(plain, token, dir)
      assert.are.equal(0, p:wait(30), h.slurp(dir .. "/err"))
    end)
  end)
end)

describe("a supervisor's signals", function()
  it("HUP reloads the policy script", function()
    with(function(_, _, dir, _, token)
      h.write(dir .. "/names", "a\n")
      local script = policy(dir, [[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = DIR }
        for name in io.lines(DIR .. "/names") do
          sup.service { name = name, cmd = { "sleep", "300" } }
        end
        sup.run()
      ]] .. SERVE)
      local p = orch_run(script, token, dir)
      up(dir, p)
      h.eventually(function() return states(dir).a.state == "running" end, "a running")
      h.write(dir .. "/names", "a\nb\n")
      assert.is_true(p:kill("HUP"))
      h.eventually(function()
        local b = states(dir).b
        return b and b.state == "running"
      end, "b added by the reload")
      assert.matches("reload: 1 kept, 0 restarted, 0 stopped, 1 added", h.slurp(dir .. "/err"), 1, true)
      assert.is_true(p:kill("TERM"))
      assert.are.equal(0, p:wait(30), h.slurp(dir .. "/err"))
    end)
  end)

  it("USR1 reopens the log files (a file moved away is released) and does not end orch", function()
    with(function(_, _, dir, _, token)
      local script = policy(dir, [[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = DIR }
        sup.service { name = "talk", log = { dir = DIR },
                      cmd = { "sh", "-c", "while :; do echo tick; sleep 0.02; done" } }
        sup.run()
      ]] .. SERVE)
      local p = orch_run(script, token, dir)
      up(dir, p)
      h.eventually(function() return h.slurp(dir .. "/talk.log"):find("tick") end, "talk.log written")
      assert(os.rename(dir .. "/talk.log", dir .. "/talk.log.old"))
      assert.is_true(p:kill("USR1"))
      h.eventually(function() return h.slurp(dir .. "/err"):find("received USR1", 1, true) end, "USR1 logged")
      h.eventually(function() return h.slurp(dir .. "/talk.log"):find("tick") end, "a new talk.log")
      assert.are.equal("running", states(dir).talk.state)
      assert.is_true(p:kill("TERM"))
      assert.are.equal(0, p:wait(30), h.slurp(dir .. "/err"))
    end)
  end)

  it("a second TERM kills every group and exits at once, whatever a tracked pid does", function()
    with(function(_, _, dir, _, token)
      -- deaf ignores TERM (60 s grace). ghost's main process (from its
      -- pidfile) is the child of another process that never reaps it: once
      -- it dies orch never sees its exit.
      local script = policy(dir, [[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = DIR }
        sup.service { name = "deaf", stop = { timeout = 60, kill_timeout = 60 },
          cmd = { "sh", "-c", "trap '' TERM INT; echo $$ > " .. DIR .. "/deaf.pid; while :; do sleep 0.05; done" } }
        sup.service { name = "ghost", pidfile = DIR .. "/ghost.pid", stop = { timeout = 60, kill_timeout = 60, group = false },
          cmd = { "sh", "-c", "(sh -c 'trap \"\" TERM; echo $$ > " .. DIR .. "/ghost.tmp; exec sleep 300' & " ..
                  "while [ ! -s " .. DIR .. "/ghost.tmp ]; do sleep 0.01; done; " ..
                  "mv " .. DIR .. "/ghost.tmp " .. DIR .. "/ghost.pid; exec sleep 300) & exit 0" } }
        sup.run()
      ]] .. SERVE)
      local p = orch_run(script, token, dir)
      up(dir, p)
      h.eventually(function()
        local st = states(dir)
        return st.deaf.state == "running" and st.ghost.state == "running" and pid_in(dir .. "/deaf.pid")
      end, "both running")
      assert.is_true(p:kill("TERM"))
      h.eventually(function() return h.slurp(dir .. "/err"):find("received TERM", 1, true) end, "TERM logged")
      assert.is_nil(p:wait(0))          -- both are within their 60 s grace
      assert.is_true(p:kill("TERM"))
      -- Far less than the 60 s the stop would otherwise wait for.
      local code = p:wait(20)
      assert.are.equal(5, code, h.slurp(dir .. "/err"))
      assert.is_false(u.alive(pid_in(dir .. "/deaf.pid")))
      assert.matches("received TERM again: killing every service", h.slurp(dir .. "/err"), 1, true)
    end)
  end)
end)

describe("a supervisor's stop", function()
  it("restarts nothing once a shutdown has begun", function()
    with(function(_, _, dir, _, token)
      -- web stops only once db is dead; the spec kills db meanwhile (as an
      -- init forwarding TERM to every child would): db exits 1 and must not
      -- be restarted.
      local script = policy(dir, [[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = DIR }
        sup.service { name = "db", restart = "always", backoff = 0,
          cmd = { "sh", "-c", "trap 'exit 1' TERM; echo $$ >> " .. DIR .. "/db.pids; while :; do sleep 0.02; done" } }
        sup.service { name = "web", depends_on = "db", stop = { timeout = 60 },
          cmd = { "sh", "-c", "trap 'touch " .. DIR .. "/web.stopping; " ..
                  "while kill -0 $(head -1 " .. DIR .. "/db.pids) 2>/dev/null; do sleep 0.02; done; exit 0' TERM; " ..
                  "touch " .. DIR .. "/web.ready; while :; do sleep 0.02; done" } }
        sup.run()
      ]] .. SERVE)
      local p = orch_run(script, token, dir)
      up(dir, p)
      -- `running` is reached at spawn: wait until both shells set their traps.
      h.eventually(function() return pid_in(dir .. "/db.pids") and io.open(dir .. "/web.ready") end, "both trapping")
      assert.is_true(p:kill("TERM"))
      local ok, e = pcall(h.eventually, function() return io.open(dir .. "/web.stopping") end, "web stopping")
      assert(ok, tostring(e) .. "\n" .. h.slurp(dir .. "/err"))
      -- (Once, under load, db's first pid was already gone here: the log
      -- and the pids say whether orch stopped or restarted it before.)
      local killed, kerr = orch.kill(pid_in(dir .. "/db.pids"), "TERM")
      assert(killed, tostring(kerr) .. "\ndb.pids: " .. h.slurp(dir .. "/db.pids") .. "\n" .. h.slurp(dir .. "/err"))
      assert.are.equal(0, p:wait(30), h.slurp(dir .. "/err"))
      local err = h.slurp(dir .. "/err")
      assert.is_nil(err:find("restart", 1, true), err)
      local n = 0
      for _ in h.slurp(dir .. "/db.pids"):gmatch("%d+") do n = n + 1 end
      assert.are.equal(1, n, err)
    end)
  end)

  it("ends when the main process dies unseen, and never adopts a process that is not the service's", function()
    with(function(_, _, dir, _, token)
      -- orch runs as nobody. ghost: its main process (pidfile) is the child
      -- of another process that never reaps it. alien: its pidfile names a
      -- root process, which orch refuses to adopt.
      local alien = spawn { "sleep", "300", env = { ORCH_SPEC_RUN = token } }
      -- Sticky, as /tmp: orch (nobody) serves its control socket there,
      -- and a directory every user may write to without it is refused.
      os.execute("chmod 1777 " .. dir)
      local script = policy(dir, string.format([[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = DIR }
        sup.service { name = "ghost", pidfile = DIR .. "/ghost.pid", stop = { timeout = 0.2, group = false },
          cmd = { "sh", "-c", "(sh -c 'echo $$ > " .. DIR .. "/ghost.tmp; exec sleep 300' & " ..
                  "while [ ! -s " .. DIR .. "/ghost.tmp ]; do sleep 0.01; done; " ..
                  "mv " .. DIR .. "/ghost.tmp " .. DIR .. "/ghost.pid; exec sleep 300) & echo $! > " .. DIR .. "/ghost.parent; exit 0" } }
        sup.service { name = "alien", pidfile = DIR .. "/alien.pid",
                      stop = { timeout = 0.2, kill_timeout = 0.3, group = false },
                      cmd = { "sh", "-c", "echo %d > " .. DIR .. "/alien.pid" } }
        sup.run()
      ]], alien.pid) .. SERVE)
      local p = spawn { "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
        h.bin, "run", script, stdout = "null", stderr = dir .. "/err",
        env = { ORCH_SPEC_RUN = token, XDG_RUNTIME_DIR = dir } }
      up(dir, p)
      h.eventually(function()
        local st = states(dir)
        return st.ghost.state == "running" and st.alien.state == "starting"
          and h.slurp(dir .. "/err"):find("alien: ignoring pidfile", 1, true)
      end, "ghost running, alien's pidfile refused")
      local code, out, err = h.cli({ "ctl", "--socket", dir .. "/ctl.sock", "--trust-uid", tostring(NOBODY), "stop", "ghost" })
      assert.are.equal(0, code, out .. err .. h.slurp(dir .. "/err"))
      assert.matches("main process %d+ ended %(its exit status was not seen%)", h.slurp(dir .. "/err"))
      -- The parent that never reaped it is no part of the stop (group = false).
      orch.kill(pid_in(dir .. "/ghost.parent"), "KILL")
      -- alien's pidfile names a process that is not its own: refused (see
      -- spec/supervisor_adopt_spec.lua), so there is nothing it could fail
      -- to kill; the stop ends at once and the root process is untouched.
      code, out, err = h.cli({ "ctl", "--socket", dir .. "/ctl.sock", "--trust-uid", tostring(NOBODY), "stop", "alien" })
      assert.are.equal(0, code, out .. err)
      assert.matches("alien: ignoring pidfile " .. dir .. "/alien.pid: pid " .. alien.pid, h.slurp(dir .. "/err"), 1, true)
      local st = states(dir)
      assert.are.equal("stopped", st.alien.state)
      assert.is_true(u.alive(alien.pid))
      assert.is_true(p:kill("TERM"))
      assert.are.equal(0, p:wait(30), h.slurp(dir .. "/err"))
    end)
  end)
end)

describe("a supervisor as PID 1", function()
  it("stops once, in dependency order, with each service's stop signal, and restarts nothing", function()
    with(function(_, _, dir, _, token)
      -- c needs b needs a; b stops on QUIT (TERM would not stop it); a
      -- exits 1 on TERM and would be restarted (restart = "always").
      local script = policy(dir, [[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = DIR }
        local function svc(name, sig, code)
          return { "sh", "-c", "trap '' TERM INT QUIT; trap 'echo " .. name .. " >> " .. DIR .. "/stops; exit " .. code ..
                   "' " .. sig .. "; echo $$ > " .. DIR .. "/" .. name .. ".pid; while :; do sleep 0.02; done" }
        end
        sup.service { name = "a", restart = "always", backoff = 0, cmd = svc("a", "TERM", 1) }
        sup.service { name = "b", depends_on = "a", stop = { signal = "QUIT", timeout = 60 }, cmd = svc("b", "QUIT", 0) }
        sup.service { name = "c", depends_on = "b", stop = { timeout = 60 }, cmd = svc("c", "TERM", 0) }
        sup.run()
        assert(sup.wait("all", "running", 20))
        -- `running` is reached at spawn: the traps are set once the pid files exist.
        for _, n in ipairs { "a", "b", "c" } do
          while not io.open(DIR .. "/" .. n .. ".pid") do orch.sleep(0.01) end
        end
        io.open(DIR .. "/up", "w"):close()
      ]])
      local p = spawn { "unshare", "--pid", "--fork", "--mount-proc", h.bin, "run", script,
        stdout = "null", stderr = dir .. "/err", env = { ORCH_SPEC_RUN = token, ORCH_SOCKET = dir .. "/ctl.sock" } }
      h.eventually(function() return io.open(dir .. "/up") end, "every service running")
      -- orch is unshare's child (PID 1 in its namespace).
      local init = tonumber(h.slurp("/proc/" .. p.pid .. "/task/" .. p.pid .. "/children"):match("%d+"))
      assert.truthy(init)
      assert.is_true(orch.kill(init, "TERM"))
      local code = p:wait(30)
      local err = h.slurp(dir .. "/err")
      assert.are.equal(0, code, err)
      assert.are.equal("c\nb\na\n", h.slurp(dir .. "/stops"), err)
      assert.is_nil(err:find("restart", 1, true), err)
    end)
  end)
end)

describe("a supervisor's exit status", function()
  local function run_until_term(src, dir, token)
    local p = orch_run(policy(dir, src .. SERVE), token, dir)
    up(dir, p)
    return p
  end

  it("is 4 when a service was fatal at a requested stop, 5 when the stop needed KILL", function()
    with(function(_, _, dir, _, token)
      local p = run_until_term([[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = DIR }
        sup.service { name = "bad", cmd = { "sh", "-c", "exit 1" }, backoff = 0, start_limit = { burst = 1, interval = 60 } }
      ]] .. "require('orch.supervisor').run()\n", dir, token)
      h.eventually(function() return states(dir).bad.state == "fatal" end, "bad fatal")
      assert.is_true(p:kill("TERM"))
      assert.are.equal(4, p:wait(30), h.slurp(dir .. "/err"))
    end)
    with(function(_, _, dir, _, token)
      local p = run_until_term([[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = DIR }
        sup.service { name = "deaf", stop = { timeout = 0.2 },
          cmd = { "sh", "-c", "trap '' TERM; touch " .. DIR .. "/deaf.ready; while :; do sleep 0.02; done" } }
        sup.run()
      ]], dir, token)
      h.eventually(function() return io.open(dir .. "/deaf.ready") end, "deaf ignoring TERM")
      assert.is_true(p:kill("TERM"))
      assert.are.equal(5, p:wait(30), h.slurp(dir .. "/err"))
    end)
  end)

  it("is sup.shutdown's code, also when a TERM during that stop kills everything", function()
    with(function(_, _, dir, _, token)
      local p = orch_run(policy(dir, [[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = DIR }
        sup.service { name = "deaf", stop = { timeout = 60, kill_timeout = 60 },
          cmd = { "sh", "-c", "trap '' TERM; touch " .. DIR .. "/deaf.ready; while :; do sleep 0.02; done" } }
        sup.run()
        while not io.open(DIR .. "/deaf.ready") do orch.sleep(0.01) end
        orch.task(function() sup.shutdown(7) end)
        -- Runs once the task above waits in its stop.
        orch.task(function() io.open(DIR .. "/stopping", "w"):close() end)
      ]]), token, dir)
      h.eventually(function() return io.open(dir .. "/stopping") end, "the shutdown under way")
      -- The shutdown waits for deaf's 60 s timeout; a TERM now kills it.
      assert.is_true(p:kill("TERM"))
      assert.are.equal(7, p:wait(20), h.slurp(dir .. "/err"))
      assert.matches("received TERM again: killing every service", h.slurp(dir .. "/err"), 1, true)
    end)
  end)

  it("is 1 for a config error before anything started, and nothing starts", function()
    with(function(_, _, dir, _, token)
      local script = policy(dir, [[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = DIR }
        sup.service { name = "a", depends_on = "b", cmd = { "sh", "-c", "touch " .. DIR .. "/started; exec sleep 300" } }
        sup.service { name = "b", depends_on = "a", cmd = { "sh", "-c", "touch " .. DIR .. "/started; exec sleep 300" } }
        sup.run()
      ]])
      local p = orch_run(script, token, dir)
      assert.are.equal(1, p:wait(30))
      assert.matches("dependency cycle", h.slurp(dir .. "/err"), 1, true)
      assert.is_nil(io.open(dir .. "/started"))
    end)
  end)

  it("as PID 1, is 4 once every service is fatal (a container platform restarts it)", function()
    with(function(_, _, dir, _, token)
      local script = policy(dir, [[
        local sup = require "orch.supervisor"
        sup.configure { runtime_dir = DIR }
        sup.service { name = "a", cmd = { "sh", "-c", "exit 1" }, backoff = 0, start_limit = { burst = 1, interval = 60 } }
        sup.service { name = "b", cmd = { "sh", "-c", "exit 2" }, backoff = 0, start_limit = { burst = 2, interval = 60 } }
        sup.service { name = "c", autostart = false, cmd = { "sleep", "300" } }
        sup.run()
      ]])
      local p = spawn { "unshare", "--pid", "--fork", "--mount-proc", h.bin, "run", script,
        stdout = "null", stderr = dir .. "/err", env = { ORCH_SPEC_RUN = token, ORCH_SOCKET = dir .. "/ctl.sock" } }
      local code = p:wait(30)
      local err = h.slurp(dir .. "/err")
      assert.are.equal(4, code, err)
      assert.matches("every service is fatal: stopping", err, 1, true)
    end)
  end)
end)
