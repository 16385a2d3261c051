-- scripts/bench.d/sim_specs.lua: how much policy time orch's simulation
-- specs cover per second of CPU (their real-time equivalents would wait at
-- least that long). Runs their tests under a minimal describe/it (luassert),
-- with spec.helper reduced to the orch module.
--   lua5.4 scripts/bench.d/sim_specs.lua BUILD_DIR SPEC...
local build = arg[1] or "build"
package.cpath = build .. "/lua/?.so;" .. package.cpath
local orch = require "orch"
package.preload["spec.helper"] = function() return { orch = orch, sanitized = false } end
local sim = require "orch.sim"
_G.assert = require "luassert"
local tests, failed = 0, 0
function _G.describe(_, fn) fn() end
function _G.it(name, fn)
  tests = tests + 1
  local ok, err = pcall(fn)
  if not ok then failed = failed + 1; io.stderr:write(name, ": ", tostring(err), "\n") end
end
for i = 2, #arg do
  local name = arg[i]:match("([%w_]+)%.lua$")
  local w0, v0 = sim.stats.worlds, sim.stats.virtual
  local c0 = os.clock()
  dofile(arg[i])
  local cpu = os.clock() - c0
  local virt = sim.stats.virtual - v0
  print(string.format("%s_virtual_s_orch %.0f s", name, virt))
  print(string.format("%s_cpu_s_orch %.3f s", name, cpu))
  print(string.format("%s_speedup_orch %.0f x", name, virt / cpu))
end
if failed > 0 then io.stderr:write(failed, " of ", tests, " tests failed\n"); os.exit(1) end
