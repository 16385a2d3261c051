-- Two tasks and a timer on one loop: `orch run examples/tasks.lua`
local fetch = orch.task(function(n) orch.sleep(0.1) return n * 2 end, 21)
local ticks = 0
local tick = orch.timer.every(0.03, function() ticks = ticks + 1 end)
print("result", fetch:join())
tick:stop()
print("ticks while waiting", ticks >= 1)
