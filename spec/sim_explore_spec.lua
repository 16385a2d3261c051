-- Seeded fault injection against the supervisor: thousands of worlds, each
-- with random kills, stray TERMs, spawn failures and late readiness drawn
-- from its seed, every invariant checked after every event. A failure
-- names its seed: sim.run(..., { seed = N }) replays it, byte for byte.
local h = require "spec.helper"
local orch = h.orch
local sim = require "orch.sim"

local INVARIANTS = {
  sim.invariants.requires("web", "db"), sim.invariants.requires("api", "db"), sim.invariants.single(),
  sim.invariants.no_start_after_stop(), sim.invariants.backoff(),
}

-- db (notify, slow to start) <- web (crashes every 20 s), db <- api
-- (stopped and started again at times), with a start limit on api.
local function setup(W, sup)
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

-- Under ASan every run costs several times more: 2,000 seeds there (the
-- release pass runs them all).
local RUNS = h.sanitized and 2000 or 10000
local CHUNK = RUNS // 10

describe("the supervisor under seeded faults", function()
  for c = 0, 9 do
    local first = 1 + c * CHUNK
    it(string.format("keeps its invariants for seeds %d to %d", first, first + CHUNK - 1), function()
      local n = sim.explore { runs = CHUNK, seed = first, duration = 30, setup = setup, invariants = INVARIANTS,
                              faults = "kill:0.02,term:0.01,spawn_fail:0.05,slow_ready:0.1" }
      assert.are.equal(CHUNK, n)
    end)
  end

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
    local ok, err = pcall(sim.explore, { runs = 5, seed = 77, duration = 30, invariants = INVARIANTS,
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
