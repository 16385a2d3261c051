-- The supervisor's restart, backoff, start-limit, readiness, dependency,
-- heartbeat and stop-order logic on simulated processes and virtual time
-- (orch.sim): the same code as in production, minutes of policy in
-- milliseconds, exact virtual timestamps. The real-process specs
-- (supervisor_*_spec.lua) stay; these cover what real time makes slow or
-- racy.
local h = require "spec.helper"
local orch = h.orch
local sim = require "orch.sim"

local times = h.trace_times

-- The text after the kind of the trace lines matching `pattern`.
local function lines(W, pattern)
  local out = {}
  for _, line in ipairs(W.trace) do
    if line:find(pattern) then out[#out + 1] = line:match("^%s*[%d.]+ %S+%s+(.*)$") end
  end
  return out
end

local NOJITTER = { initial = 1, factor = 2, max = 8, jitter = 0 }

describe("supervisor in simulation: restarts", function()
  it("backs off initial * factor^n up to max", function()
    local W = sim.run(function(W, sup)
      W:service { name = "web", program = { sim.after(2, sim.exit(1)) }, restart = "always", backoff = NOJITTER }
      sup.start("web")
      orch.sleep(60)
    end, { seed = 1 })
    -- Crash 2 s after each start; then 1, 2, 4, 8, 8, ... seconds of backoff.
    assert.are.same({ 0, 3, 7, 13, 23, 33, 43, 53 }, times(W, "spawn +web"))
    assert.are.same({ "web: restarting in 1.00s", "web: restarting in 2.00s", "web: restarting in 4.00s",
                      "web: restarting in 8.00s" }, { table.unpack(lines(W, "restarting in"), 1, 4) })
  end)

  it("restarts on failure only, and goes back to the first delay after a long run", function()
    local W = sim.run(function(W, sup)
      W:program("flaky", { sim.after(2, sim.exit(1)) })
      W:service { name = "ok", program = { sim.after(1, sim.exit(0)) }, restart = "on-failure" }
      W:service { name = "bad", cmd = { "flaky" }, restart = "on-failure",
                  backoff = { initial = 1, factor = 2, max = 8, jitter = 0, reset_after = 10 } }
      sup.start("all")
      orch.sleep(9)
      assert.are.equal("exited", sup.status("ok")[1].state)
      -- Fails 1, 2 (delays 1, 2): now a long run resets the count.
      W:program("flaky", { sim.after(20, sim.exit(1)) })
      orch.sleep(40)
    end, { seed = 1 })
    assert.are.same({ 0 }, times(W, "spawn +ok"))
    assert.are.same({ 0, 3, 7, 13 }, { table.unpack(times(W, "spawn +bad"), 1, 4) })
    assert.are.same({ "bad: restarting in 1.00s", "bad: restarting in 2.00s", "bad: restarting in 4.00s",
                      "bad: restarting in 1.00s" }, { table.unpack(lines(W, "bad: restarting in"), 1, 4) })
  end)

  it("goes fatal at the start limit; an explicit start clears it", function()
    local W = sim.run(function(W, sup)
      W:service { name = "web", program = { sim.after(1, sim.exit(3)) }, restart = "always",
                  backoff = { initial = 0, jitter = 0 }, start_limit = { burst = 3, interval = 10 } }
      sup.start("web")
      orch.sleep(5)
      local st = sup.status("web")[1]
      assert.are.same({ "fatal", 3, "start limit reached: 3 starts within 10s" }, { st.state, st.exit_code, st.reason })
      orch.sleep(100)
      assert.are.equal("fatal", sup.status("web")[1].state)
      sup.start("web")
      orch.sleep(0.5)
      assert.are.equal("running", sup.status("web")[1].state)
    end, { seed = 1 })
    assert.are.same({ 0, 1, 2, 105 }, times(W, "spawn +web"))
  end)

  it("retries a spawn that fails, with the backoff", function()
    local W = sim.run(function(W, sup)
      W:service { name = "web", program = sim.spawn_fails("ENOENT"), restart = "always", backoff = NOJITTER }
      sup.start("web")
      orch.sleep(10)
      assert.matches("spawn failed: spawn: sim:web: ENOENT", sup.status("web")[1].reason, 1, true)
    end, { seed = 1 })
    assert.are.same({ 0, 1, 3, 7 }, times(W, "spawn_failed sim:web"))
    assert.are.equal(4, #lines(W, "web: cannot start: spawn: sim:web: ENOENT"))
  end)
end)

describe("supervisor in simulation: readiness and dependencies", function()
  it("starts a dependent once its dependency is ready, and stops dependents first", function()
    local W = sim.run(function(W, sup)
      W:service { name = "db", program = { sim.ready_after(4) }, ready = { notify = true } }
      W:service { name = "api", program = { sim.ready_after(2) }, ready = { notify = true }, depends_on = { "db" } }
      W:service { name = "web", program = {}, depends_on = { "api" } }
      sup.start("web")
      orch.sleep(10)
      assert.are.equal("running", sup.status("web")[1].state)
      assert(sup.stop("db"))
    end, { seed = 1, invariants = { sim.invariants.requires("api", "db"), sim.invariants.requires("web", "api") } })
    assert.are.same({ 0 }, times(W, "spawn +db"))
    assert.are.same({ 4 }, times(W, "spawn +api"))
    assert.are.same({ 6 }, times(W, "spawn +web"))
    assert.are.same({ "web[10000003] TERM (killpg)", "api[10000002] TERM (killpg)", "db[10000001] TERM (killpg)" },
      lines(W, "^%s*[%d.]+ signal"))
  end)

  it("kills and restarts a service not ready within start_timeout", function()
    local W = sim.run(function(W, sup)
      W:service { name = "db", program = {}, ready = { notify = true }, start_timeout = 5,
                  restart = "always", backoff = NOJITTER }
      sup.start("db")
      orch.sleep(12)
    end, { seed = 1 })
    assert.are.same({ 5, 11 }, times(W, "db: not ready after 5s: restarting"))
    assert.are.same({ 0, 6 }, times(W, "spawn +db"))
  end)

  it("restarts a worker whose heartbeat stops", function()
    local W = sim.run(function(W, sup)
      W:service { name = "worker", program = { sim.beat_every(1), sim.after(10, sim.stall()) },
                  heartbeat = { timeout = 3 }, restart = "always", backoff = NOJITTER }
      sup.start("worker")
      orch.sleep(15)
      assert.are.equal(1, sup.status("worker")[1].restarts)
    end, { seed = 1 })
    -- Last beat at 9, deadline 12; restarted after 1 s of backoff.
    assert.are.same({ 12 }, times(W, "missed heartbeat: none for 3.0s %(timeout 3s%): restarting"))
    assert.are.same({ 0, 13 }, times(W, "spawn +worker"))
  end)
end)

describe("supervisor in simulation: stopping", function()
  it("sends KILL stop.timeout after a TERM the service ignores", function()
    local W = sim.run(function(W, sup)
      W:service { name = "web", program = { sim.ignore("TERM") }, stop = { timeout = 7 } }
      sup.start("web")
      orch.sleep(1)
      assert(sup.stop("web"))
      assert.are.equal("stopped", sup.status("web")[1].state)
    end, { seed = 1 })
    assert.are.same({ 1 }, times(W, "ignored +web%[%d+%] TERM"))
    assert.are.same({ 8 }, times(W, "signal +web%[%d+%] KILL"))
  end)

  it("takes a service's forked children down with it", function()
    local W = sim.run(function(W, sup)
      W:service { name = "web", program = { sim.fork_child { sim.ignore("TERM") }, sim.write_log("up") },
                  stop = { timeout = 3 } }
      sup.start("web")
      orch.sleep(1)
      assert.are.same({ "up" }, sup.tail("web"))
      assert(sup.stop("web"))
      for pid in pairs(W.procs) do error("pid " .. pid .. " is left") end
    end, { seed = 1 })
    -- The child ignores TERM; once the main process is gone, the rest of
    -- its group gets KILL at once.
    assert.are.same({ 1, 1 }, times(W, "ignored +web%[10000002%] TERM"))
    assert.are.same({ 1 }, times(W, "signal +web%[10000002%] KILL"))
  end)

  it("starts nothing once the shutdown began, and stops in dependency order", function()
    local W = sim.run(function(W, sup)
      W:service { name = "db", program = { sim.after(1, sim.exit(1)) }, restart = "always", backoff = NOJITTER }
      W:service { name = "web", program = { sim.on_signal("TERM", sim.after(3, sim.exit(0))) }, depends_on = { "db" } }
      sup.start("all")
      orch.sleep(0.5)
      sup.shutdown()
      orch.sleep(30)
      assert.are.equal(0, W.exit_code)
    end, { seed = 1, invariants = { sim.invariants.no_start_after_stop(), sim.invariants.single() } })
    -- db's crash at 1 s comes while web stops: no restart; it is over
    -- before its own turn to be stopped.
    assert.are.same({ 0 }, times(W, "spawn +db"))
    assert.are.same({ 1 }, times(W, "exit +db"))
    assert.are.same({ "web[10000002] TERM (killpg)" }, lines(W, "^%s*[%d.]+ signal"))
    assert.are.same({ 3.5 }, times(W, "event +web stopped$"))
  end)
end)
