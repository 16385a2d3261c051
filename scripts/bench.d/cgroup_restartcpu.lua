-- cgroup_restartcpu.lua (run by `orch run`): the CPU orch spends on one
-- restart (a SIGKILL of the service's process -> its replacement's
-- on_start), K restarts of one `sleep` service, with its cgroup (the
-- default) or, with ORCH_BENCH_CGROUP=off, by process group only. CPU is
-- os.clock() of the orch process around each restart: unlike wall time it
-- hardly depends on the machine's load.
--   cgrestartcpu_on_orch / cgrestartcpu_off_orch   us  CPU per restart
-- Usage: orch run scripts/bench.d/cgroup_restartcpu.lua [K]
local orch = require "orch"
local K = tonumber(arg and arg[1]) or 300
local off = os.getenv("ORCH_BENCH_CGROUP") == "off"

orch.task(function()
  local sup = require("orch.supervisor").new()
  sup.configure { log = false, cgroup = (not off) and ("orch-bench-restartcpu-" .. orch.getpid()) or false }
  local started, cond = 0, orch.cond()
  sup.service { name = "r", cmd = { "sleep", "1000" }, log = false, backoff = 0, start_limit = false,
                on_start = function() started = started + 1; cond:broadcast() end }
  assert(sup.start("r"))
  assert(sup.wait("r", "running", 10))
  local total = 0
  for _ = 1, K do
    local want = started + 1
    local c0 = os.clock()
    assert(orch.kill(sup.status("r")[1].pid, "KILL"))
    while started < want do assert(cond:wait(10)) end
    total = total + (os.clock() - c0)
    orch.sleep(0.002)
  end
  print(("cgrestartcpu_%s_orch %.1f us"):format(off and "off" or "on", total / K * 1e6))
  assert(sup.stop("all"))
  sup.close()
end)
