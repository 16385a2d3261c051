-- The watchdog's deadlines, grace period and clean-ups on simulated
-- processes and virtual time (the real-process watchdog_spec stays; it
-- spends most of its 30 s waiting for deadlines).
local h = require "spec.helper"
local orch = h.orch
local sim = require "orch.sim"
local watchdog = require "orch.watchdog"

local KEY = 0x5157

local times = h.trace_times

-- fn(world) with a watchdog on the world's table KEY; stopped after.
local function with_watchdog(opts, fn, seed, faults)
  return sim.run(function(W)
    local o = { key = KEY, any_uid = true, log = function(msg) W:event("watchdog", nil, msg) end }
    for k, v in pairs(opts) do o[k] = v end
    local wd = assert(watchdog.start(o))
    fn(W, wd)
    wd:stop()
  end, { seed = seed or 1, faults = faults })
end

describe("watchdog in simulation", function()
  it("signals a process at last beat + timeout, its group when it leads one", function()
    local W = with_watchdog({ grace = 2 }, function(W, wd)
      W:program("worker", { sim.register("worker", 3, KEY), sim.beat_every(1), sim.after(10, sim.stall()) })
      W:program("steady", { sim.register("steady", 2, KEY), sim.beat_every(1) })
      local p = orch.spawn { "worker", pgroup = true }
      local q = orch.spawn { "steady" }
      orch.sleep(60)
      assert.are.same({ nil, "TERM" }, { p:wait() })
      assert.is_true(q:running())
      assert.are.equal(1, wd:status().timeouts)
      q:kill("KILL")
    end)
    -- Last beat at 9 (the stall at 10), timeout 3.
    assert.are.same({ 12 }, times(W, "'worker' pid %d+ timed out: no heartbeat for 3.000 s"))
    assert.are.same({ 12 }, times(W, "signal +worker%[%d+%] TERM %(killpg%)"))
    assert.are.same({}, times(W, "signal +steady%[%d+%] TERM"))
  end)

  it("sends KILL after the grace period to a process that ignores TERM", function()
    local W = with_watchdog({ grace = 4 }, function(W)
      W:program("stubborn", { sim.ignore("TERM"), sim.register("stubborn", 5, KEY), sim.beat_every(1),
                              sim.after(4, sim.stall()) })
      local p = orch.spawn { "stubborn" }
      orch.sleep(30)
      assert.are.same({ nil, "KILL" }, { p:wait() })
    end)
    assert.are.same({ 8 }, times(W, "signal +stubborn%[%d+%] TERM"))
    assert.are.same({ 12 }, times(W, "signal +stubborn%[%d+%] KILL"))
    assert.are.same({ 12 }, times(W, "exited 4.000 s after SIGTERM; slot 1 cleared"))
  end)

  it("clears the slot of a process that died, without a signal", function()
    local W = with_watchdog({}, function(W, wd)
      W:program("short", { sim.register("short", 100, KEY), sim.beat_every(1), sim.after(3, sim.exit(0)) })
      orch.spawn { "short" }
      orch.sleep(30)
      assert.are.equal(0, wd:status().watching)
    end)
    assert.are.same({}, times(W, "signal +short"))
    assert.are.equal(1, #times(W, "'short' pid %d+ no longer exists: slot 1 cleared %(no signal sent%)"))
  end)

  it("lets a lost beat through when the next one comes in time, and times out when too many are lost", function()
    local W = with_watchdog({}, function(W)
      W:program("flaky", { sim.register("flaky", 2.5, KEY), sim.beat_every(1) })
      for _ = 1, 5 do orch.spawn { "flaky" } end
      orch.sleep(120)
      for pid, p in pairs(W.procs) do if p.state == "alive" then orch.kill(pid, "KILL") end end
    end, 3, "late_beat:0.3")
    -- Three beats lost in a row (2.5 s of silence) is the only way to time out.
    local lost = #times(W, "fault +flaky%[%d+%] late_beat")
    local timeouts = #times(W, "timed out: no heartbeat")
    assert.is_true(lost >= 10, lost)
    assert.is_true(timeouts >= 1, timeouts)
    for _, line in ipairs(W.trace) do
      local s = line:match("timed out: no heartbeat for ([%d.]+) s")
      if s then assert.is_true(tonumber(s) >= 2.5, line) end
    end
  end)
end)
