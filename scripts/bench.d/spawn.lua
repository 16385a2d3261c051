-- spawn.lua (run by `orch run`): spawn-and-reap throughput of /bin/true
-- through orch.spawn + :wait(), the orch side of spawn_c.c.
--   spawn_serial_orch  one child at a time
--   spawn_16_orch      16 tasks, each spawning and waiting in a loop
--   spawn_cpu_orch     orch's own CPU time per spawn over the rounds
--                      (/proc/self/schedstat: hardly moved by the load; a
--                      child's time before its exec is the child's)
--   spawn_child_cpu_orch  a child's CPU time, its start in orch's memory
--                      and /bin/true's whole run (utime + stime of
--                      p:rusage(), mean of N more spawns)
--   spawn_preexec_cpu_orch  a child's CPU time when its exec fails (a
--                      program that does not exist): what orch's child
--                      does before exec, plus a failing execve and exit
--                      (cutime + cstime of /proc/self/stat over 10 N
--                      spawns, one clock tick of resolution over the sum)
-- Each rate is the best of ROUNDS rounds of N spawns.
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
local f = io.open("/proc/self/schedstat")
local cpu = f and tonumber(f:read("a"):match("^%d+"))
if f then f:close() end
if cpu then print(("spawn_cpu_orch %.2f us"):format(cpu / 1e3 / (2 * N * ROUNDS))) end
local child = 0
for _ = 1, N do
  local p = orch.spawn(cmd)
  p:wait()
  local ru = p:rusage()
  child = child + ru.utime + ru.stime
end
print(("spawn_child_cpu_orch %.2f us"):format(child / N * 1e6))

local function children_cpu()
  local f = assert(io.open("/proc/self/stat"))
  local s = f:read("a")
  f:close()
  local fields = {}
  for w in s:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = w end
  return tonumber(fields[14]) + tonumber(fields[15])     -- cutime, cstime (fields 16, 17)
end
local hz = 100
local p = io.popen("getconf CLK_TCK")
if p then hz = tonumber(p:read("l")) or 100 p:close() end
local c0, missing = children_cpu(), { "/nonexistent/orch-bench", path = false }
for _ = 1, 10 * N do assert(not orch.spawn(missing)) end
print(("spawn_preexec_cpu_orch %.2f us"):format((children_cpu() - c0) / hz / (10 * N) * 1e6))
