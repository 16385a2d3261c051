-- orch.sim: simulated processes on the virtual clock, the process table
-- they stand in for, seeded faults, invariants and traces.
local h = require "spec.helper"
local orch = h.orch
local sim = require "orch.sim"

-- The lines of a trace whose kind is one of `kinds`, without the padding.
local function events(W, kinds)
  local want = {}
  for k in kinds:gmatch("%S+") do want[k] = true end
  local out = {}
  for _, line in ipairs(W.trace) do
    local t, kind, rest = line:match("^%s*([%d.]+) (%S+)%s+(.*)$")
    if kind and want[kind] then out[#out + 1] = t .. " " .. kind .. " " .. rest end
  end
  return out
end

describe("orch.sim processes", function()
  it("run their program: log lines, exit codes, on_exit and wait", function()
    local W = sim.run(function(W)
      W:program("job", { sim.write_log("one", "two"), sim.after(3, sim.exit(4)) })
      local p = assert(orch.spawn { "job", "x", stdout = "pipe" })
      assert.is_true(p.pid > 10000000)
      local got, ended = {}, nil
      p.stdout:on_read(function(chunk) got[#got + 1] = chunk or "EOF" end)
      p:on_exit(function(code, sig) ended = { orch.now() - W.t0, code, sig } end)
      assert.are.same({ 4, nil }, { p:wait() })
      orch.sleep(0)
      assert.are.same({ "one\n", "two\n", "EOF" }, got)
      assert.are.same({ 3, 4 }, ended)
      assert.are.same({ nil, "kill: no such process", "ESRCH" }, { orch.kill(p.pid, "TERM") })
    end, { seed = 1 })
    assert.are.same({ "0.000 spawn job[10000001] job x", "3.000 exit job[10000001] code 4" },
      events(W, "spawn exit"))
  end)

  it("die of signals, ignore them or handle them", function()
    sim.run(function(W)
      W:program("plain", {})
      W:program("deaf", { sim.ignore("TERM", "INT") })
      W:program("polite", { sim.on_signal("TERM", sim.after(2, sim.exit(0))) })
      local a, b, c = orch.spawn { "plain" }, orch.spawn { "deaf" }, orch.spawn { "polite" }
      orch.sleep(1)
      for _, p in ipairs { a, b, c } do assert.is_true(orch.kill(p.pid, "SIGTERM")) end
      assert.are.same({ nil, "TERM" }, { a:wait() })
      assert.are.same({ nil, "wait: timed out", "ETIMEDOUT" }, { b:wait(10) })
      assert.are.same({ 0, nil }, { c:wait() })
      assert.is_true(b:kill(9))
      assert.are.same({ nil, "KILL" }, { b:wait() })
    end, { seed = 1 })
  end)

  it("fork children into their process group; killpg reaches them all", function()
    sim.run(function(W)
      W:program("parent", { sim.fork_child { sim.write_log("child up") }, sim.fork_child {} })
      local p = assert(orch.spawn { "parent", pgroup = true, stdout = "pipe" })
      orch.sleep(1)
      local kids = orch.proc.children(p.pid)
      assert.are.equal(2, #kids)
      local i = orch.proc.info(kids[1])
      assert.are.same({ p.pid, p.pid, "S" }, { i.ppid, i.pgid, i.state })
      assert.are.equal(p.pid, orch.proc.info(p.pid).pgid)
      assert.is_true(p:kill("TERM", { group = true }))
      p:wait()
      orch.sleep(0)
      assert.is_nil(orch.proc.info(kids[1]))
      assert.is_nil(orch.proc.info(kids[2]))
      -- The pipe ends once every holder is gone.
      assert.are.equal("child up\n", p.stdout:read())
      assert.is_nil(p.stdout:read())
    end, { seed = 1 })
  end)

  it("fail to spawn as their program says; unknown commands are ENOENT", function()
    sim.run(function(W)
      W:program("locked", sim.spawn_fails("EACCES"))
      assert.are.same({ nil, "spawn: locked: EACCES", "EACCES" }, { orch.spawn { "locked" } })
      assert.are.same({ nil, "spawn: nope: no such file or directory", "ENOENT" }, { orch.spawn { "nope" } })
    end, { seed = 1 })
  end)

  it("never signal a real process, and give the real table back after the run", function()
    local real_spawn = orch.spawn
    sim.run(function()
      assert.are_not.equal(real_spawn, orch.spawn)
      local ok, err, ename = orch.kill(orch.getpid(), "TERM")
      assert.are.same({ nil, "EPERM" }, { ok, ename })
      assert.matches("not a simulated process", err)
      assert.are.equal(orch.getpid(), orch.proc.info(orch.getpid()).pid)
    end, { seed = 1 })
    assert.are.equal(real_spawn, orch.spawn)
    assert.are.equal("real", orch.clock())
  end)
end)

describe("orch.sim notify sockets", function()
  it("are the world's: the supervisor's own notify loop hears its service and drops others", function()
    local W = sim.run(function(W, sup)
      -- db's readiness comes from a child it forks (a descendant: heard).
      W:service { name = "db", program = { sim.fork_child { sim.after(2, sim.ready()) } }, ready = { notify = true } }
      sup.start("db")
      orch.sleep(1)
      local p = W.procs[sup.status("db")[1].pid]
      local path = p.env.NOTIFY_SOCKET
      assert.are.equal(sim.RUNTIME_DIR .. "/", path:sub(1, #sim.RUNTIME_DIR + 1))
      assert.are.equal(path, W.dgrams[path]:address())
      -- Another process orch started, told the socket: not the service's.
      W:program("intruder", { sim.ready() })
      local intruder = assert(orch.spawn { "intruder", env = { NOTIFY_SOCKET = path } })
      orch.sleep(0.5)
      assert.are.equal("starting", sup.status("db")[1].state)
      orch.sleep(1)
      assert.are.equal("running", sup.status("db")[1].state)
      assert.is_true(intruder:kill("KILL"))
      sup.stop("db")
      -- The socket closes with the run.
      assert.is_nil(W.dgrams[path])
    end, { seed = 1 })
    local n = 0
    for _, l in ipairs(events(W, "sup")) do
      if l:find("db: dropped an sd_notify message from pid 10000003: it descends from pid 10000003, which orch "
                .. "started for something else", 1, true) then n = n + 1 end
    end
    assert.are.equal(1, n)
  end)

  it("wake a waiting recv when closed; leave every other datagram socket real", function()
    local dir = h.tmpdir()
    sim.run(function(W)
      local d = assert(orch.dgram { unix = sim.RUNTIME_DIR .. "/x.notify" })
      assert.are.same({ nil, "dgram: address already in use", "EADDRINUSE" },
        { orch.dgram { unix = sim.RUNTIME_DIR .. "/x.notify" } })
      local got
      orch.task(function() got = { d:recv() } end)
      orch.sleep(0)
      assert.is_true(d:close())
      orch.sleep(0)
      assert.are.same({ nil, "recv: socket closed", "ECANCELED" }, got)
      assert.is_nil(W.dgrams[sim.RUNTIME_DIR .. "/x.notify"])
      -- Elsewhere: a real socket and its file.
      local real = assert(orch.dgram { unix = dir .. "/real" })
      assert.are.equal("orch.Dgram", getmetatable(real).__name)
      assert.is_true(orch.proc.can_access(dir .. "/real", 0, 0, "w"))
      real:close()
    end, { seed = 1 })
  end)
end)

describe("orch.sim faults", function()
  it("parses fault specs and rejects bad ones", function()
    assert.are.same({ kill = 0.01, spawn_fail = 0.05 }, sim.parse_faults("kill:0.01, spawn_fail:0.05"))
    assert.has_error(function() sim.parse_faults("boom:0.1") end, "faults: unknown fault 'boom'")
    assert.has_error(function() sim.parse_faults("kill:2") end, "faults: kill: number from 0 to 1 expected")
    assert.has_error(function() sim.parse_faults("kill") end, "faults: bad item 'kill' (KIND:NUMBER expected)")
  end)

  it("inject kills and spawn failures from the seed; the same seed gives the same trace", function()
    local function scenario(seed)
      return sim.run(function(W, sup)
        W:service { name = "web", program = { sim.write_log("up") }, restart = "always",
                    backoff = { initial = 0.5, max = 4 } }
        sup.start("web")
        orch.sleep(600)
      end, { seed = seed, faults = "kill:0.05,spawn_fail:0.2" }):text()
    end
    local a, b, c = scenario(42), scenario(42), scenario(43)
    assert.are.equal(a, b)
    assert.are_not.equal(a, c)
    assert.matches("fault    web%[%d+%] kill", a)
    assert.matches("fault    spawn_fail: sim:web", a)
  end)
end)

describe("orch.sim invariants", function()
  it("break a run with the seed and the trace", function()
    local ok, err = pcall(sim.run, function(W, sup)
      W:service { name = "db", program = { sim.ready_after(5) }, ready = { notify = true } }
      W:service { name = "web", program = {} }
      sup.start("all")
      orch.sleep(10)
    end, { seed = 5, invariants = { sim.invariants.requires("web", "db") } })
    assert.is_false(ok)
    assert.matches("invariant 'web requires db' broken at 0.000: web started while db is starting", err, 1, true)
    assert.matches("sim: seed 5", err, 1, true)
    assert.matches("VIOLATED", err, 1, true)
  end)

  it("pass over the processes a test spawns itself (no service of the supervisor's)", function()
    local invs = { sim.invariants.requires("web", "db"), sim.invariants.single(), sim.invariants.no_start_after_stop(),
                   sim.invariants.backoff() }
    local W = sim.run(function(W, sup)
      W:program("job", { sim.after(1, sim.exit(3)) })
      W:service { name = "web", program = { sim.after(2, sim.exit(1)) }, restart = "always",
                  backoff = { initial = 1, jitter = 0 } }
      sup.start("web")
      for _ = 1, 3 do assert.are.same({ 3, nil }, { assert(orch.spawn { "job" }):wait() }) end
      orch.sleep(10)
    end, { seed = 1, invariants = invs })
    local jobs = 0
    for _, l in ipairs(events(W, "reaped")) do if l:find("reaped job[", 1, true) then jobs = jobs + 1 end end
    assert.are.equal(3, jobs)
  end)

  it("hold for a dependency chain, and catch a policy that breaks them", function()
    local invs = { sim.invariants.requires("web", "db"), sim.invariants.single(), sim.invariants.no_start_after_stop(),
                   sim.invariants.backoff() }
    sim.run(function(W, sup)
      W:service { name = "db", program = { sim.ready_after(2) }, ready = { notify = true }, restart = "always" }
      W:service { name = "web", program = { sim.after(5, sim.exit(1)) }, depends_on = { "db" }, restart = "always" }
      sup.start("web")
      orch.sleep(100)
    end, { seed = 1, invariants = invs })
    -- A bug in the backoff computation (restarts at once) is caught: the
    -- invariant computes the smallest delay from the configuration itself.
    local policy = require "orch.supervisor.policy"
    local backoff = policy.backoff
    policy.backoff = function() return 0.001 end
    local ok, err = pcall(sim.run, function(W, sup)
      W:service { name = "web", program = { sim.after(1, sim.exit(1)) }, restart = "always",
                  backoff = { initial = 4, jitter = 0 } }
      sup.start("web")
      orch.sleep(20)
    end, { seed = 1, invariants = invs })
    policy.backoff = backoff
    assert.is_false(ok)
    assert.matches("backoff never shorter than the policy", err, 1, true)
  end)
end)
