-- cgroup_stopphases.lua (run by `orch run`): orch's CPU by phase of a stop
-- of N services with cgroups (sup.stop("all") of N `sleep 1000`, or with
-- "esc" each leaving a setsid escapee as in cgroup_stop.lua; with
-- NOCG=1 no cgroups), ROUNDS stops (5). os.clock() (the process's CPU) is
-- summed around the supervisor's functions, wrapped here: the first pass
-- (signal_first: the kill of each main process; signal_rest: the listing
-- of each cgroup), the instances' own sends, their state changes, the
-- exits' handling (proc_exited, of it cgroup.left: the rmdir, and the
-- exit's bookkeeping), the stop tasks' creation and waits. Prints, per
-- phase, the median and the least over the rounds, per service (µs).
-- Usage: orch run scripts/bench.d/cgroup_stopphases.lua [N [esc|plain [ROUNDS]]]
local orch = require "orch"
local Instance = require "orch.supervisor.instance"
local N = tonumber(arg and arg[1]) or 100
local escapee = arg and arg[2] == "esc"
local ROUNDS = tonumber(arg and arg[3]) or 5
local clock = os.clock
local acc = {}
local timed = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua").timer(function(key, _, cpu)
  acc[key] = (acc[key] or 0) + cpu
end)
local function wrap(tbl, name, key) timed(tbl, name, key, true) end
wrap(Instance, "signal_first", "1 signal_first")
wrap(Instance, "signal_rest", "2 signal_rest")
wrap(Instance, "send", "3 send (in stop)")
wrap(Instance, "proc_exited", "5 proc_exited (exit handling)")
wrap(Instance, "set_state", function(_, s) return "4 set_state " .. s end)
local cgm = require "orch.supervisor.cgroup"
wrap(cgm, "left", "6 cgroup.left (rmdir)")
wrap(cgm, "release", "7 cgroup.release")
wrap(Instance.on.stopping, "exit", "6 on.stopping.exit (record_exit..)")
wrap(orch, "task", "8 orch.task (create)")
local Run = require "orch.supervisor.run"
local wu = Run.wait_until
Run.wait_until = function(self, pred, timeout)
  local c0 = clock()
  if pred(self) then acc["9 wait_until (immediate)"] = (acc["9 wait_until (immediate)"] or 0) + clock() - c0 return true end
  local ev = self.event
  if not ev then ev = require("orch.supervisor.event").new(); self.event = ev end
  acc["9 wait_until setup"] = (acc["9 wait_until setup"] or 0) + clock() - c0
  return ev:wait_for(function() return pred(self) end, timeout)
end
-- ORCH_BENCH_SUBREAPER=1: orch a child subreaper (as for daemons with a
-- pidfile), so that each escapee is reparented to orch and is its child.
if os.getenv("ORCH_BENCH_SUBREAPER") == "1" then assert(orch.proc.subreaper(true)) end
local totals = {}
for r = 1, ROUNDS do
  local sup = require("orch.supervisor").new()
  local parent = "orch-bench-stopphases-" .. orch.getpid()
  sup.configure { log = false, cgroup = (not os.getenv("NOCG")) and parent or false }
  local cmd = escapee and { "sh", "-c", "(setsid sleep 1000 &); exec sleep 1000" } or { "sleep", "1000" }
  for i = 1, N do sup.service { name = "s" .. i, cmd = cmd, log = false } end
  assert(sup.start("all"))
  assert(sup.wait("all", "running", 60))
  if not os.getenv("NOCG") then
    local base = assert(orch.cgroup.open(parent))
    while #base:procs() < (escapee and 2 * N or N) do orch.sleep(0.01) end
    base:close()
  end
  orch.sleep(0.2)
  acc = {}
  local c0, t0 = clock(), orch.now()
  assert(sup.stop("all"))
  local c1, t1 = clock(), orch.now()
  acc["0 total"] = c1 - c0
  acc["0 wall"] = t1 - t0
  for k, v in pairs(acc) do totals[k] = totals[k] or {}; table.insert(totals[k], v) end
  sup.close()
end
local ks = {}
for k in pairs(totals) do ks[#ks + 1] = k end
table.sort(ks)
for _, k in ipairs(ks) do
  local t = totals[k]
  table.sort(t)
  print(string.format("%-36s median %7.1f us/service  (min %7.1f)", k, t[(#t + 1) // 2] / N * 1e6, t[1] / N * 1e6))
end
