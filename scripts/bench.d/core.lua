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
math.randomseed(1)
local n, fired = 100000, 0
t0 = orch.now()
for _ = 1, n do
  orch.task(function() orch.sleep(math.random(0, 99) / 1000); fired = fired + 1 end)
end
while fired < n do orch.sleep(0.01) end
print(("core_timers100k_orch %.1f ms"):format((orch.now() - t0) * 1000))

-- The same with orch.timer.after callbacks (each firing is a task).
fired = 0
t0 = orch.now()
for _ = 1, n do
  orch.timer.after(math.random(0, 99) / 1000, function() fired = fired + 1 end)
end
while fired < n do orch.sleep(0.01) end
print(("core_timers100k_after_orch %.1f ms"):format((orch.now() - t0) * 1000))
