--- orch.sim.busted: the busted helper of `orch test` (loaded with
-- --helper). Each test gets a fresh world (sim.current) whose seed is the
-- run's seed plus the test's number; the world is closed after the test,
-- and a failing test's timeline is printed with its seed.
local sim = require "orch.sim"

-- Only under orch test (which sets sim.defaults): required anywhere else
-- (a plain busted run that loads every module), it does nothing.
local d = sim.defaults
if not d then return {} end
local busted = require "busted"
local n = 0

busted.subscribe({ "test", "start" }, function()
  n = n + 1
  sim.reset()
  sim.current = sim.world { seed = (d.seed or 0) + n, faults = d.faults }
  return nil, true
end)

busted.subscribe({ "test", "end" }, function(element, parent, status)
  local W = sim.current
  local ok, err = pcall(sim.reset)
  if W and (status ~= "success" or d.trace or not ok or W.violation) then
    local name = element and element.name or "?"
    io.stdout:write("\n-- timeline of '", name, "' (seed ", W.seed, ")", status ~= "success" and (" [" .. status .. "]") or "", "\n")
    if W.violation then io.stdout:write("   ", W.violation, "\n") end
    if not ok then io.stdout:write("   closing the world failed: ", tostring(err), "\n") end
    io.stdout:write(W:text())
    io.stdout:flush()
  end
  return nil, true
end)

-- The summary: how much virtual time the run covered, in how much wall time
-- (the clock is virtual here: os.time/os.clock are not, and CPU time is
-- what a run costs).
local cpu0 = os.clock()
busted.subscribe({ "suite", "end" }, function()
  io.stdout:write(string.format("orch test: %d worlds, %.0f s of virtual time in %.3f s of CPU\n",
    sim.stats.worlds, sim.stats.virtual, os.clock() - cpu0))
  io.stdout:flush()
  return nil, true
end)

return {}
