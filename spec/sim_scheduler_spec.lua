-- The scheduler's every (delay and rate, overlap), at and cron on
-- simulated processes and virtual time: a day of schedules in
-- milliseconds, exact virtual timestamps.
local h = require "spec.helper"
local orch = h.orch
local sim = require "orch.sim"
local sched = require "orch.scheduler"

local times = h.trace_times

local quiet = function() end

describe("scheduler in simulation", function()
  it("every, delay mode: run, wait for the exit, sleep, again", function()
    local W = sim.run(function(W)
      W:program("job", { sim.after(2, sim.exit(0)) })
      local j = sched.every(10, { "job" }, { log = quiet, max_runs = 4 })
      orch.sleep(100)
      assert.are.equal(4, j:status().runs)
    end, { seed = 1 })
    assert.are.same({ 0, 12, 24, 36 }, times(W, "spawn +job"))
  end)

  it("every, rate mode: a start every N seconds; a run still going skips a start", function()
    local W = sim.run(function(W)
      W:program("short", { sim.after(1, sim.exit(0)) })
      W:program("long", { sim.after(25, sim.exit(0)) })
      local a = sched.every(10, { "short" }, { log = quiet, mode = "rate", max_runs = 5 })
      local b = sched.every(10, { "long" }, { log = quiet, mode = "rate", overlap = "skip" })
      orch.sleep(55)
      b:stop()
      b:wait()
      assert.are.equal(4, b:status().skipped)
      assert.are.equal(5, a:status().runs)
    end, { seed = 1 })
    assert.are.same({ 0, 10, 20, 30, 40 }, times(W, "spawn +short"))
    -- 0: runs to 25, so 10 and 20 are skipped; 30 starts; 40 and 50 skipped.
    assert.are.same({ 0, 30 }, times(W, "spawn +long"))
  end)

  it("cron: every 15 minutes for a day, and a daily at", function()
    local W = sim.run(function(W)
      W:program("tick", { sim.exit(0) })
      W:program("daily", { sim.after(60, sim.exit(0)) })
      local t0 = orch.time()
      -- The virtual day starts at a whole hour; the schedules are on local
      -- time: the first quarter hour is the next one from now.
      local q = sched.cron("*/15 * * * *", { "tick" }, { log = quiet })
      local d = sched.at(os.date("%H:%M", math.floor(t0) + 3 * 3600), { "daily" }, { log = quiet })
      orch.sleep(86400 + 60)
      q:stop()
      d:stop()
      assert.are.equal(96, q:status().runs)
      assert.are.equal(1, d:status().runs)
    end, { seed = 1 })
    local ticks = times(W, "spawn +tick")
    assert.are.equal(96, #ticks)
    for i = 2, #ticks do assert.are.equal(900, ticks[i] - ticks[i - 1]) end
    assert.are.same({ 10800 }, times(W, "spawn +daily"))
  end)
end)
