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
-- The time runs, as core_c.c's, from the first orch.task to the last
-- firing (the last task notes it). Also orch's own CPU for them (what a
-- loaded machine does not inflate) and its three parts per task: the
-- orch.task call, the first resume up to the sleep, the wake-up to the
-- end; the Lua heap per sleeping task; the heap a finished task leaves
-- after one full collection; and the same run with the collector stopped
-- (how much of the CPU is the collector's).
math.randomseed(1)
local n, fired, last = 100000, 0, nil
local function timers100k()
  fired = 0
  local c0, t = os.clock(), orch.now()
  local k0 = collectgarbage("count")
  for _ = 1, n do
    orch.task(function()
      orch.sleep(math.random(0, 99) / 1000)
      fired = fired + 1
      if fired == n then last = orch.now() end
    end)
  end
  local c1 = os.clock()
  orch.sleep(0)    -- every task started and sleeps
  local c2 = os.clock()
  local bytes = (collectgarbage("count") - k0) * 1024 / n
  while fired < n do orch.sleep(0.01) end
  local c3 = os.clock()
  collectgarbage("collect")
  return { ms = (last - t) * 1000, cpu = (c3 - c0) * 1000, bytes = bytes,
           create = (c1 - c0) * 1e6 / n, first = (c2 - c1) * 1e6 / n, wake = (c3 - c2) * 1e6 / n,
           left = (collectgarbage("count") - k0) * 1024 / n }
end
collectgarbage("collect")
local r = timers100k()
print(("core_timers100k_orch %.1f ms"):format(r.ms))
print(("core_timers100k_cpu_orch %.1f ms"):format(r.cpu))
print(("core_task_create_cpu_orch %.2f us"):format(r.create))
print(("core_task_first_cpu_orch %.2f us"):format(r.first))
print(("core_task_wake_cpu_orch %.2f us"):format(r.wake))
print(("core_task_heap_orch %.0f bytes"):format(r.bytes))
print(("core_task_left_orch %.0f bytes"):format(r.left))
collectgarbage("stop")
r = timers100k()
collectgarbage("restart")
collectgarbage("collect")
print(("core_timers100k_gcstop_orch %.1f ms"):format(r.ms))
print(("core_timers100k_gcstop_cpu_orch %.1f ms"):format(r.cpu))

-- Short tasks one after the other (orch.task(f):join()): the start, first
-- resume and end of a task, its coroutine reused; orch's CPU per task.
do
  local c0 = os.clock()
  for _ = 1, n do orch.task(function() end):join() end
  print(("core_task_short_cpu_orch %.2f us"):format((os.clock() - c0) * 1e6 / n))
end

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
