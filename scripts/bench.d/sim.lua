-- scripts/bench.d/sim.lua: simulation testing (issue 18): a simulated day
-- of a 20-service supervisor with cron jobs and random crashes, seeded
-- fault-injection runs per second, determinism of the traces, and virtual
-- time covered per second of wall time.
--   build/orch run scripts/bench.d/sim.lua [runs]
local sim = require "orch.sim"
local sched = require "orch.scheduler"
local runs = tonumber(arg and arg[1]) or 2000
orch.set_budget(false)

local function say(name, value, unit) print(string.format("%s %.6g %s", name, value, unit)) end

-- Wall and CPU seconds of fn(), on the real clock (sim.run switches to the
-- virtual one inside and back after).
local function measure(fn)
  local w0, c0 = orch.now(), os.clock()
  local r = fn()
  return orch.now() - w0, os.clock() - c0, r
end

-- A day: 20 services (4 databases with sd_notify readiness, 8 web workers
-- depending on them, 4 heartbeat workers that stall now and then, 4
-- crash-looping batch services), 3 cron jobs, random KILLs and spawn
-- failures.
local function day(seed)
  return sim.run(function(W, sup)
    for i = 1, 4 do
      W:service { name = "db" .. i, program = { sim.ready_after(2) }, ready = { notify = true },
                  restart = "always", start_timeout = 30 }
    end
    for i = 1, 8 do
      W:service { name = "web" .. i, program = { sim.write_log("listening") }, depends_on = { "db" .. (i % 4 + 1) },
                  restart = "always" }
    end
    for i = 1, 4 do
      W:service { name = "worker" .. i, program = { sim.beat_every(5), sim.after(3600 * i, sim.stall()) },
                  heartbeat = { timeout = 20 }, restart = "always" }
    end
    for i = 1, 4 do
      W:service { name = "batch" .. i, program = { sim.after(600 * i, sim.exit(1)) }, restart = "on-failure",
                  backoff = { initial = 1, max = 60 } }
    end
    W:program("report", { sim.after(30, sim.exit(0)) })
    W:program("rotate", { sim.write_log("rotated"), sim.exit(0) })
    local jobs = {
      sched.cron("*/5 * * * *", { "report" }, { log = function() end }),
      sched.cron("0 * * * *", { "rotate" }, { log = function() end }),
      sched.at("03:30", { "report" }, { log = function() end }),
    }
    sup.start("all")
    orch.sleep(86400)
    for _, j in ipairs(jobs) do j:stop() end
  end, { seed = seed, faults = "kill:0.0002,spawn_fail:0.01" })
end

local wall, cpu, W = measure(function() return day(1) end)
local spawns = 0
for _, line in ipairs(W.trace) do if line:find(" spawn ", 1, true) then spawns = spawns + 1 end end
say("sim_day_wall_orch", wall, "s")
say("sim_day_cpu_orch", cpu, "s")
say("sim_day_events_orch", #W.trace, "events")
say("sim_day_spawns_orch", spawns, "spawns")
-- The day's world (77,000 trace records) is let go before the runs are
-- timed: every collection during them would walk it again.
W = nil
collectgarbage()

-- The invariant check of spec/sim_explore_spec.lua (one scenario for both).
local scenario = require "spec.sim_scenario"
local ewall, ecpu = measure(function() return scenario.explore(1, runs) end)
say("sim_runs_per_wall_s_orch", runs / ewall, "runs/s")
say("sim_runs_per_cpu_s_orch", runs / ecpu, "runs/s")

-- The same check on one crash-looping service (how the rate scales with
-- the size of the scenario).
local swall, scpu = measure(function()
  return sim.explore { runs = runs, seed = 1, duration = 30, faults = "kill:0.02,spawn_fail:0.05",
    invariants = { sim.invariants.single(), sim.invariants.no_start_after_stop(), sim.invariants.backoff() },
    setup = function(W, sup)
      W:service { name = "web", program = { sim.after(5, sim.exit(1)) }, restart = "always",
                  backoff = { initial = 0.5, max = 5 } }
      sup.start("web")
    end }
end)
say("sim_runs_small_per_cpu_s_orch", runs / scpu, "runs/s")
say("sim_runs_small_per_wall_s_orch", runs / swall, "runs/s")

-- Determinism: one seed, 100 times, every trace byte for byte the same.
local first, same = nil, 0
for _ = 1, 100 do
  local text = scenario.run(42):text()
  first = first or text
  if text == first then same = same + 1 end
end
say("sim_identical_traces_orch", same, "of_100")

-- Virtual time per wall second: the scenarios of spec/sim_supervisor_spec.lua
-- add up to about 400 s of policy time.
say("sim_day_speedup_orch", 86400 / wall, "x")
