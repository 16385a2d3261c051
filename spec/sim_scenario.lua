--- The supervisor under seeded faults: the scenario that
-- spec/sim_explore_spec.lua checks over thousands of seeds and
-- scripts/bench.d/sim.lua times (issue 18). One definition for both.
--
-- db (notify, slow to start) <- web (crashes every 20 s), db <- api (ignores
-- TERM, stopped and started again at times, with a start limit); random
-- KILLs, stray TERMs, spawn failures and late readiness; five invariants
-- checked after every event.
local orch = require "orch"
local sim = require "orch.sim"

local scenario = {}

scenario.FAULTS = "kill:0.02,term:0.01,spawn_fail:0.05,slow_ready:0.1"
scenario.DURATION = 30

scenario.INVARIANTS = {
  sim.invariants.requires("web", "db"), sim.invariants.requires("api", "db"), sim.invariants.single(),
  sim.invariants.no_start_after_stop(), sim.invariants.backoff(),
}

function scenario.setup(W, sup)
  W:service { name = "db", program = { sim.ready_after(1) }, ready = { notify = true }, restart = "always",
              backoff = { initial = 0.5, max = 5 }, start_timeout = 20 }
  W:service { name = "web", program = { sim.after(20, sim.exit(1)) }, depends_on = { "db" }, restart = "always",
              backoff = { initial = 0.5, max = 5 } }
  W:service { name = "api", program = { sim.ignore("TERM") }, depends_on = { "db" }, restart = "on-failure",
              backoff = { initial = 1, factor = 3, max = 9, jitter = 0.2 }, stop = { timeout = 2 },
              start_limit = { burst = 4, interval = 30 } }
  sup.start("all")
  orch.task(function()
    orch.sleep(7)
    sup.stop("api")
    orch.sleep(3)
    sup.start("api")
  end)
end

--- `runs` seeded runs from seed `first` (sim.explore): raises at the first
-- broken invariant; returns the number of runs.
function scenario.explore(first, runs)
  return sim.explore { runs = runs, seed = first, duration = scenario.DURATION, setup = scenario.setup,
                       invariants = scenario.INVARIANTS, faults = scenario.FAULTS }
end

--- One run of seed `seed` (sim.run): its world, with the trace.
function scenario.run(seed)
  return sim.run(function(W, sup)
    scenario.setup(W, sup)
    orch.sleep(scenario.DURATION)
  end, { seed = seed, faults = scenario.FAULTS, invariants = scenario.INVARIANTS })
end

return scenario
