-- Seeded fault injection against the supervisor: thousands of worlds, each
-- with random kills, stray TERMs, spawn failures and late readiness drawn
-- from its seed, every invariant checked after every event. A failure
-- names its seed: sim.run(..., { seed = N }) replays it, byte for byte.
local h = require "spec.helper"
local orch = h.orch
local sim = require "orch.sim"

-- The scenario (services, faults, invariants) is the benchmark's too.
local scenario = require "spec.sim_scenario"

-- Under ASan every run costs several times more: 2,000 seeds there (the
-- release pass runs them all).
local RUNS = h.sanitized and 2000 or 10000
local CHUNK = RUNS // 10

describe("the supervisor under seeded faults", function()
  for c = 0, 9 do
    local first = 1 + c * CHUNK
    it(string.format("keeps its invariants for seeds %d to %d", first, first + CHUNK - 1), function()
      assert.are.equal(CHUNK, scenario.explore(first, CHUNK))
    end)
  end

  it("gives the same trace for the same seed", function()
    local a, b, c = scenario.run(42):text(), scenario.run(42):text(), scenario.run(43):text()
    assert.are.equal(a, b)
    assert.are_not.equal(a, c)
  end)

  it("catches a supervisor that restarts a stopped service (and names the seed)", function()
    -- A broken stop: once the process is gone, it is spawned again.
    local Instance = require "orch.supervisor.instance"
    local exit = Instance.on.stopping.exit
    Instance.on.stopping.exit = function(self, ...)
      exit(self, ...)
      if self.state == "stopped" then self:spawn() end
    end
    -- (One service without a notify socket: what the broken supervisor
    -- leaves behind holds no descriptor.)
    local ok, err = pcall(sim.explore, { runs = 5, seed = 77, duration = 30, invariants = scenario.INVARIANTS,
      setup = function(W, sup)
        W:service { name = "web", program = {}, restart = "always" }
        sup.start("web")
        orch.task(function() orch.sleep(5); sup.stop("web") end)
      end })
    Instance.on.stopping.exit = exit
    assert.is_false(ok)
    assert.matches("invariant 'no start after a stop began' broken", err, 1, true)
    assert.matches("sim: seed 77", err, 1, true)
  end)
end)
