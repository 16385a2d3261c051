-- scripts/bench.d/stop_stamps.lua: phases.lua (the configuration a user
-- gets) with a timeline of the stop via SIGTERM: each call of the stop
-- path's functions stamped with orch.now() (CLOCK_MONOTONIC, the clock of
-- the probe and of perf -k CLOCK_MONOTONIC) and the CPU it took
-- (os.clock(), inclusive). The stamps are kept in memory and written to
-- $STOP_STAMPS (lines "<start s> <cpu s> <label>") when the shutdown's
-- stop returns, before orch exits (stop_trace.sh reads them beside the
-- kernel's trace). Each stamp costs about 1 us. Issue 15, tenth session.
--   orch run stop_stamps.lua N PROG
local orch = require "orch"
local Instance = require "orch.supervisor.instance"
local cgroup = require "orch.supervisor.cgroup"
local graph = require "orch.supervisor.graph"
local log = require "orch.supervisor.log"
local now, clock = orch.now, os.clock
local buf, nb = {}, 0
local function stamp(label, t, c)
  nb = nb + 1
  buf[nb] = string.format("%.6f %.9f %s", t, c, label)
end
local wrap = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua").timer(stamp)
wrap(Instance, "signal_first", "signal_first")
wrap(Instance, "signal_rest", "signal_rest")
wrap(Instance, "signal_pass", "signal_pass")
wrap(Instance, "proc_exited", "proc_exited")
wrap(cgroup, "left", "cgroup.left")
wrap(orch, "sched_yield", "sched_yield")
wrap(Instance, "log", "Instance:log")
wrap(Instance, "set_state", function(_, s) return "set_state." .. s end)
-- The stop task's own part: Instance:stop until its first wait (the task
-- yields there), and the rest after its wake-up, stamped as one call each.
local stop = Instance.stop
Instance.stop = function(self)
  local t0, c0 = now(), clock()
  stamp("stop.begin", t0, 0)
  local a, b, c = stop(self)
  stamp("stop.end", now(), 0)
  return a, b, c
end
local capture = log.capture
log.capture = function(sink, stream, done, run)
  return capture(sink, stream, function(...)
    local t0, c0 = now(), clock()
    local a, b = done(...)
    stamp("log_ended", t0, clock() - c0)
    return a, b
  end, run)
end
local so = graph.stop_ordered
graph.stop_ordered = function(S, insts, signalled)
  local t0, c0 = now(), clock()
  stamp("stop_ordered.begin", t0, 0)
  local a, b = so(S, insts, signalled)
  stamp("stop_ordered.end", now(), clock() - c0)
  local path = os.getenv("STOP_STAMPS")
  if path then
    local f = assert(io.open(path, "w"))
    f:write(table.concat(buf, "\n", 1, nb), "\n")
    f:close()
  end
  buf, nb = {}, 0
  return a, b
end
local ts = orch.task
orch.task = function(...)
  local t0, c0 = now(), clock()
  local t = ts(...)
  stamp("orch.task", t0, clock() - c0)
  return t
end
-- The TERM handler's callback (sup.run's), from its entry.
local on = orch.signal.on
orch.signal.on = function(sig, fn, ...)
  if sig ~= "TERM" then return on(sig, fn, ...) end
  return on(sig, function(...)
    local t0, c0 = now(), clock()
    stamp("term.begin", t0, 0)
    local a, b = fn(...)
    stamp("term.cb", t0, clock() - c0)
    return a, b
  end, ...)
end
arg = { [0] = "phases.lua", arg[1], arg[2] }
dofile(debug.getinfo(1, "S").source:sub(2):gsub("stop_stamps%.lua$", "phases.lua"))
