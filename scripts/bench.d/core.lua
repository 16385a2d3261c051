-- core.lua (run by `orch run`): task switches per second and 100,000
-- concurrent timers, the orch side of core_c.c / core_luv.lua.
local N = tonumber(arg[1]) or 2000000

local t0 = orch.now()
for _ = 1, N do orch.sleep(0) end
print(("core_switch_orch %.0f switches/s"):format(N / (orch.now() - t0)))

-- Two tasks handing over to each other (each sleep(0) lets the other run).
local M = N // 2
t0 = orch.now()
local a = orch.task(function() for _ = 1, M do orch.sleep(0) end end)
local b = orch.task(function() for _ = 1, M do orch.sleep(0) end end)
a:join(); b:join()
print(("core_switch2_orch %.0f switches/s"):format(2 * M / (orch.now() - t0)))

-- 100,000 tasks each sleeping 0..100 ms (a sleeping task is a timer).
-- Also orch's own CPU for them (what a loaded machine does not inflate),
-- the Lua heap per sleeping task, and the same run with the collector
-- stopped (how much of the CPU is the collector's).
math.randomseed(1)
local n, fired = 100000, 0
local function timers100k()
  fired = 0
  local c0, t = os.clock(), orch.now()
  local k0 = collectgarbage("count")
  for _ = 1, n do
    orch.task(function() orch.sleep(math.random(0, 99) / 1000); fired = fired + 1 end)
  end
  orch.sleep(0)    -- every task started and sleeps
  local bytes = (collectgarbage("count") - k0) * 1024 / n
  while fired < n do orch.sleep(0.01) end
  return (orch.now() - t) * 1000, (os.clock() - c0) * 1000, bytes
end
collectgarbage("collect")
local ms, cpu, bytes = timers100k()
print(("core_timers100k_orch %.1f ms"):format(ms))
print(("core_timers100k_cpu_orch %.1f ms"):format(cpu))
print(("core_task_heap_orch %.0f bytes"):format(bytes))
collectgarbage("collect")
collectgarbage("stop")
ms, cpu = timers100k()
collectgarbage("restart")
collectgarbage("collect")
print(("core_timers100k_gcstop_orch %.1f ms"):format(ms))
print(("core_timers100k_gcstop_cpu_orch %.1f ms"):format(cpu))

-- The same with orch.timer.after callbacks (each firing is a task).
fired = 0
t0 = orch.now()
for _ = 1, n do
  orch.timer.after(math.random(0, 99) / 1000, function() fired = fired + 1 end)
end
while fired < n do orch.sleep(0.01) end
print(("core_timers100k_after_orch %.1f ms"):format((orch.now() - t0) * 1000))

-- The Lua time budget (orch.set_budget): its cost on task switches and on
-- Lua code (the count hook), and how long a task that never yields holds
-- the loop (a timer due 1 ms after it starts fires at budget + this).
local function spin_ops(n) local s = 0 for i = 1, n do s = s + i % 7 end return s end
local function rates()
  local t = orch.now()
  for _ = 1, M // 4 do orch.sleep(0) end
  local sw = (M // 4) / (orch.now() - t)
  t = orch.now()
  spin_ops(5e6)
  return sw, 5e6 / (orch.now() - t)
end
-- Alternating rounds with and without the budget, best of each (the
-- machine is shared: the best round is the least disturbed one).
local budget = orch.set_budget(0)
local best = { off = { 0, 0 }, on = { 0, 0 } }
for _ = 1, 5 do
  for _, mode in ipairs { "off", "on" } do
    orch.set_budget(mode == "on" and budget or 0)
    local sw, ops = rates()
    best[mode][1] = math.max(best[mode][1], sw)
    best[mode][2] = math.max(best[mode][2], ops)
  end
end
orch.set_budget(budget)
print(("core_switch_nobudget_orch %.0f switches/s"):format(best.off[1]))
print(("core_switch_budget_orch %.0f switches/s"):format(best.on[1]))
print(("core_luaops_nobudget_orch %.0f iterations/s"):format(best.off[2]))
print(("core_luaops_budget_orch %.0f iterations/s"):format(best.on[2]))
-- How long a task that never yields holds the loop past a 0.1 s budget:
-- a timer due 1 ms after it starts fires at 0.1 s + this. Best and worst
-- of 10 (the worst includes the machine's scheduling delays).
orch.set_budget(0.1)
local least, worst = math.huge, 0
for _ = 1, 10 do
  local t, fired = orch.now(), nil
  orch.timer.after(0.001, function() fired = orch.now() end)
  local spin = orch.task(function() while true do end end)
  pcall(spin.join, spin)
  while not fired do orch.sleep(0.001) end
  local over = (fired - t - 0.1) * 1000
  least, worst = math.min(least, over), math.max(worst, over)
end
orch.set_budget(budget)
print(("core_budget_overrun_best_orch %.1f ms"):format(least))
print(("core_budget_overrun_worst_orch %.1f ms"):format(worst))
