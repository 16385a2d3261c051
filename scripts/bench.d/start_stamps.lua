-- scripts/bench.d/start_stamps.lua: phases.lua (the configuration a user
-- gets) with inclusive CPU timers (os.clock) around the functions of the
-- start path; after each SIGUSR2 start, writes to stderr the CPU of each
-- and its calls (start_cpu.sh stamps:BUILD prints the last). Issue 15,
-- eighth session. The timers cost about 1 us a call.
--   orch run start_stamps.lua N PROG
local orch = require "orch"
local Instance = require "orch.supervisor.instance"
local cgroup = require "orch.supervisor.cgroup"
local persist = require "orch.supervisor.persist"
local log = require "orch.supervisor.log"
local clock = os.clock
local T, N = {}, {}
local timed = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua").timer(function(label, _, cpu)
  T[label] = T[label] + cpu
  N[label] = N[label] + 1
end)
local function wrap(tbl, name, label)
  T[label], N[label] = 0, 0
  timed(tbl, name, label)
end
wrap(Instance, "start", "Instance:start")
wrap(Instance, "launch", "Instance:launch")
wrap(Instance, "spawn", "Instance:spawn")
wrap(Instance, "spawn_done", "Instance:spawn_done")
wrap(Instance, "set_state", "Instance:set_state")
wrap(Instance, "log", "Instance:log")
wrap(Instance, "capture", "Instance:capture")
wrap(Instance, "mark_ready", "Instance:mark_ready")
wrap(cgroup, "prepare", "cgroup.prepare")
wrap(cgroup, "base", "cgroup.base")
wrap(orch.cgroup, "create", "orch.cgroup.create")
wrap(orch, "spawn_begin", "orch.spawn_begin")
wrap(persist, "spawned", "persist.spawned")
wrap(persist, "touch", "persist.touch")
wrap(persist, "flush", "persist.flush")
wrap(log, "capture", "log.capture")
local sup = require "orch.supervisor"
wrap(sup, "start", "sup.start")
local n, prog = tonumber(arg[1]), arg[2]
for i = 0, n - 1 do
  sup.service { name = "svc" .. i, cmd = { prog }, env = { SVC_INDEX = i }, backoff = 0, start_limit = false }
end
local function reset() for k in pairs(T) do T[k], N[k] = 0, 0 end end
orch.signal.on("USR1", function() sup.stop("all") end)
orch.signal.on("USR2", function()
  reset()
  local c0 = clock()
  sup.start("all")
  local total = clock() - c0
  local keys = {}
  for k in pairs(T) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return T[a] > T[b] end)
  local out = { string.format("handler %.0f us", total * 1e6) }
  for _, k in ipairs(keys) do out[#out + 1] = string.format("  %-22s %7.0f us %4d calls %6.1f us/call", k, T[k] * 1e6, N[k], N[k] > 0 and T[k] * 1e6 / N[k] or 0) end
  io.stderr:write(table.concat(out, "\n"), "\n")
end)
sup.run()
orch.timer.after(1e9, function() end)
