-- cgroup_stopcpu.lua (run by `orch run`): the CPU orch spends stopping N
-- services (sup.stop("all") of N `sleep 1000`), each in its own cgroup
-- (the default) or, with ORCH_BENCH_CGROUP=off, by process group only.
-- CPU is os.clock() of the orch process (every thread, user and system)
-- around the stop: unlike wall time it hardly depends on the machine's
-- load. Best of ROUNDS rounds.
--   cgstopcpu_on_orch / cgstopcpu_off_orch   ms  CPU of the stop of N
--   cgstopcpu_per_service_on_orch / _off_orch us  the same divided by N
-- Usage: orch run scripts/bench.d/cgroup_stopcpu.lua [N [ROUNDS]]
local orch = require "orch"
local N = tonumber(arg and arg[1]) or 1000
local ROUNDS = tonumber(arg and arg[2]) or 3
local off = os.getenv("ORCH_BENCH_CGROUP") == "off"
local tag = off and "off" or "on"

local function round()
  local sup = require("orch.supervisor").new()
  sup.configure { log = false, cgroup = (not off) and ("orch-bench-stopcpu-" .. orch.getpid()) or false }
  for i = 1, N do sup.service { name = "s" .. i, cmd = { "sleep", "1000" }, log = false } end
  assert(sup.start("all"))
  assert(sup.wait("all", "running", 120))
  local c0 = os.clock()
  assert(sup.stop("all"))
  local cpu = (os.clock() - c0) * 1000
  sup.close()
  return cpu
end

orch.task(function()
  local best = math.huge
  for _ = 1, ROUNDS do best = math.min(best, round()) end
  print(("cgstopcpu_%s_orch %.1f ms"):format(tag, best))
  print(("cgstopcpu_per_service_%s_orch %.1f us"):format(tag, best / N * 1000))
end)
