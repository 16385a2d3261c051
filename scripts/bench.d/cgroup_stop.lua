-- cgroup_stop.lua (run by `orch run`): stop of N services, each leaving a
-- double-forked setsid escapee (its own session, reparented away from the
-- service), against N services without one; cgroups on (the default). After
-- each stop every process of the services must be gone (checked through the
-- supervisor's cgroups: none may hold a process).
--   cgstop_plain_orch     ms  sup.stop("all") of N plain services
--   cgstop_escapee_orch   ms  the same, each with an escapee
--   cgstop_left_orch      processes left after the escapee stop (must be 0)
--   cgstop_cgroups_left_orch  services' cgroups left after either stop (0)
--   cgstop_plain_cpu_orch, cgstop_escapee_cpu_orch  ms of orch's CPU
--                         (os.clock()) in sup.stop("all"), best of ROUNDS
--   cgstop_wall_orch      the wall times' medians over the rounds, with
--                         their spread; cgstop_wall_ratio_orch each round's
--                         escapee / plain (the two stops of a round are run
--                         back to back, their order alternating by round)
-- Best of ROUNDS rounds. Usage: orch run scripts/bench.d/cgroup_stop.lua [N [ROUNDS]]
local orch = require "orch"
local N = tonumber(arg and arg[1]) or 100
local ROUNDS = tonumber(arg and arg[2]) or 3

-- ORCH_BENCH_SUBREAPER=1: orch a child subreaper (as for daemons with a
-- pidfile), so that each escapee is reparented to orch and is its child.
if os.getenv("ORCH_BENCH_SUBREAPER") == "1" then assert(orch.proc.subreaper(true)) end
local lib = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua")
local function round(escapee)
  -- Every service's processes are in place (with its escapee).
  local sup, base = lib.stop_fleet(N, escapee, "orch-bench-stop-" .. orch.getpid())
  local c0, t0 = os.clock(), orch.now()
  assert(sup.stop("all"))
  local ms, cpu = (orch.now() - t0) * 1000, (os.clock() - c0) * 1000
  local left, cgs = #base:procs(), #(base:children() or {})
  base:close()
  sup.close()
  return ms, left, cgs, cpu
end

local best = { plain = math.huge, escapee = math.huge }
local cpu = { plain = math.huge, escapee = math.huge }
local walls, ratios = { plain = {}, escapee = {} }, {}
local left, cgs = 0, 0
for r = 1, ROUNDS do
  -- The two kinds' order alternates (plain first in odd rounds), as in
  -- cgroup_stop_c: neither always follows the other's teardown.
  local kinds = r % 2 == 1 and { "plain", "escapee" } or { "escapee", "plain" }
  local this = {}
  for _, kind in ipairs(kinds) do
    local ms, l, c, t = round(kind == "escapee")
    best[kind], cpu[kind] = math.min(best[kind], ms), math.min(cpu[kind], t)
    table.insert(walls[kind], ms)
    this[kind] = ms
    if kind == "escapee" then left = math.max(left, l) end
    cgs = math.max(cgs, c)
  end
  ratios[#ratios + 1] = this.escapee / this.plain
end
-- The median of t and its least and greatest.
local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2, t[1], t[n]
end
print(("cgstop_plain_orch %.1f ms"):format(best.plain))
print(("cgstop_escapee_orch %.1f ms"):format(best.escapee))
print(("cgstop_left_orch %d processes"):format(left))
print(("cgstop_cgroups_left_orch %d cgroups"):format(cgs))
print(("cgstop_plain_cpu_orch %.1f ms"):format(cpu.plain))
print(("cgstop_escapee_cpu_orch %.1f ms"):format(cpu.escapee))
print(("cgstop_escapee_vs_plain_orch %.2f ratio"):format(best.escapee / best.plain))
local pm, plo, phi = median(walls.plain)
local em, elo, ehi = median(walls.escapee)
local rm, rlo, rhi = median(ratios)
print(("cgstop_wall_orch plain %.1f [%.1f-%.1f] escapee %.1f [%.1f-%.1f] ms (median [min-max] of %d)"):format(
  pm, plo, phi, em, elo, ehi, ROUNDS))
print(("cgstop_wall_ratio_orch %.2f [%.2f-%.2f] (each round's escapee / plain: median [min-max])"):format(rm, rlo, rhi))
print(("cgstop_wall_ratio_of_medians_orch %.2f ratio"):format(em / pm))
print(("cgstop_wall_extra_orch %.1f ms (the escapees' cost: escapee - plain, medians; the 1.5x target allows %.1f)"):format(
  em - pm, pm / 2))
