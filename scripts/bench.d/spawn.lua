-- spawn.lua (run by `orch run`): spawn-and-reap throughput of /bin/true
-- through orch.spawn + :wait(), the orch side of spawn_c.c.
--   spawn_serial_orch  one child at a time
--   spawn_16_orch      16 tasks, each spawning and waiting in a loop
-- Each figure is the best of ROUNDS rounds of N spawns.
-- Usage: orch run scripts/bench.d/spawn.lua [N [ROUNDS]]
local orch = require "orch"
local N = tonumber(arg and arg[1]) or 2000
local ROUNDS = tonumber(arg and arg[2]) or 3
local cmd = { "/bin/true" }

local function serial(n)
  local t0 = orch.now()
  for _ = 1, n do orch.spawn(cmd):wait() end
  return n / (orch.now() - t0)
end

local function inflight(n, k)
  local t0 = orch.now()
  local tasks = {}
  for i = 1, k do
    local share = n // k + (i <= n % k and 1 or 0)
    tasks[i] = orch.task(function()
      for _ = 1, share do orch.spawn(cmd):wait() end
    end)
  end
  for i = 1, k do tasks[i]:join() end
  return n / (orch.now() - t0)
end

local best_s, best_p = 0, 0
for _ = 1, ROUNDS do
  best_s = math.max(best_s, serial(N))
  best_p = math.max(best_p, inflight(N, 16))
end
print(("spawn_serial_orch %.0f spawns/s"):format(best_s))
print(("spawn_16_orch %.0f spawns/s"):format(best_p))
