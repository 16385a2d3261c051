-- cgroup_stop_stamps.lua (run by `orch run`): the timeline of a stop of N
-- services with cgroups, with and without a setsid escapee each (as
-- cgroup_stop.lua), the two kinds alternating by round. Each phase's time
-- (ms after sup.stop("all") was called, orch.now()) and orch's CPU to
-- then (os.clock()); medians over the rounds of each kind:
--   signal_first    the last main process's kill (the first pass)
--   signal_rest     the last cgroup listed and its rest signalled
--   exit_first/last the first and last main process's exit handled
--   drain           drains started (an escapee still there when its main
--                   process's exit was handled) and the last one's end
--   stopped_last    the last instance set "stopped"
--   removals        the cgroups' rmdir at the stop's end: from the last
--                   "stopped" to the return (its own time and CPU)
--   total           sup.stop("all") returned
-- With STAMPS_PIDS=FILE the services' pids (main, then escapees: "m PID"
-- and "e PID" lines) and each round's "round KIND T0" (CLOCK_MONOTONIC s)
-- are written there, for a kernel trace of the exits (perf -k
-- CLOCK_MONOTONIC). With STAMPS_WINDOWS=1 each stop's "window KIND T0 T1
-- TR PID" goes to stderr (CLOCK_MONOTONIC s; TR: the last "stopped", where the
-- removals begin; PID: orch's), with STAMPS_EACH=1 each stop's drains,
-- orch's CPU in all and from the first pass's end to the last "stopped",
-- and its wall time. Usage: orch run cgroup_stop_stamps.lua [N [ROUNDS]]
local orch = require "orch"
local Instance = require "orch.supervisor.instance"
local cgm = require "orch.supervisor.cgroup"
local N = tonumber(arg and arg[1]) or 100
local ROUNDS = tonumber(arg and arg[2]) or 5
local now, clock = orch.now, os.clock
local st                 -- this round's stamps
local function mark(key, first)
  if not st then return end
  local v = st[key]
  if first and v then return end
  st[key] = { now() - st.t0, clock() - st.c0 }
end
local function count(key) if st then st[key] = (st[key] or 0) + 1 end end
local function after(tbl, name, fn)
  local f = tbl[name]
  tbl[name] = function(...)
    local a, b, c = f(...)
    fn(...)
    return a, b, c
  end
end
after(Instance, "signal_first", function() mark("signal_first") end)
after(Instance, "signal_rest", function() mark("signal_rest") end)
local pe = Instance.proc_exited
Instance.proc_exited = function(...)
  mark("exit_first", true)
  mark("exit_last")
  count("exits")
  return pe(...)
end
local drain = cgm.drain
cgm.drain = function(inst, run, done)
  count("drains")
  return drain(inst, run, function(...)
    mark("drain_last")
    return done(...)
  end)
end
after(Instance, "set_state", function(_, s) if s == "stopped" then mark("stopped_last") end end)

local pidf = os.getenv("STAMPS_PIDS") and assert(io.open(os.getenv("STAMPS_PIDS"), "w"))
local lib = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua")
local function round(escapee)
  local sup, base = lib.stop_fleet(N, escapee, "orch-bench-stopstamps-" .. orch.getpid())
  if pidf then
    local mains = {}
    for i = 1, N do
      local p = sup.status("s" .. i)[1].pid
      mains[p] = true
      pidf:write("m ", p, "\n")
    end
    for _, p in ipairs(base:procs()) do if not mains[p] then pidf:write("e ", p, "\n") end end
  end
  orch.sleep(0.1)
  st = { t0 = now(), c0 = clock() }
  if pidf then pidf:write(("round %s %.6f\n"):format(escapee and "escapee" or "plain", st.t0)) pidf:flush() end
  assert(sup.stop("all"))
  mark("total")
  local s = st
  if os.getenv("STAMPS_EACH") then
    io.stderr:write(("each %s drains %d cpu %.3f tail_cpu %.3f wall %.3f\n"):format(escapee and "escapee" or "plain",
      s.drains or 0, s.total[2] * 1e3, (s.stopped_last[2] - s.signal_rest[2]) * 1e3, s.total[1] * 1e3))
  end
  if os.getenv("STAMPS_WINDOWS") then
    io.stderr:write(("window %s %.6f %.6f %.6f %d\n"):format(escapee and "escapee" or "plain", s.t0, s.t0 + s.total[1],
      s.t0 + (s.stopped_last or s.total)[1], orch.getpid()))
  end
  st = nil
  assert(#base:procs() == 0, "processes left")
  base:close()
  sup.close()
  return s
end

local rows = { plain = {}, escapee = {} }
for r = 1, ROUNDS do
  local kinds = r % 2 == 1 and { "plain", "escapee" } or { "escapee", "plain" }
  for _, kind in ipairs(kinds) do table.insert(rows[kind], round(kind == "escapee")) end
end
if pidf then pidf:close() end
local median = dofile((arg[0]:match("^(.*)/") or ".") .. "/stats.lua").median
local keys = { "signal_first", "signal_rest", "exit_first", "exit_last", "drain_last", "stopped_last", "total" }
print(("%-14s %22s %22s"):format("phase (median)", "plain: ms / cpu ms", "escapee: ms / cpu ms"))
for _, k in ipairs(keys) do
  local cells = {}
  for _, kind in ipairs { "plain", "escapee" } do
    local w, c = {}, {}
    for _, s in ipairs(rows[kind]) do
      if s[k] then w[#w + 1] = s[k][1] * 1e3; c[#c + 1] = s[k][2] * 1e3 end
    end
    cells[#cells + 1] = #w > 0 and ("%8.2f / %6.2f"):format(median(w), median(c)) or "-"
  end
  print(("%-14s %22s %22s"):format(k, cells[1], cells[2]))
end
for _, k in ipairs { "exits", "drains" } do
  local cells = {}
  for _, kind in ipairs { "plain", "escapee" } do
    local v = {}
    for _, s in ipairs(rows[kind]) do v[#v + 1] = s[k] or 0 end
    cells[#cells + 1] = ("%g"):format(median(v))
  end
  print(("%-14s %22s %22s"):format(k, cells[1], cells[2]))
end
local rem = {}
for _, kind in ipairs { "plain", "escapee" } do
  local w, c = {}, {}
  for _, s in ipairs(rows[kind]) do
    local from = s.stopped_last or s.total
    w[#w + 1] = (s.total[1] - from[1]) * 1e3
    c[#c + 1] = (s.total[2] - from[2]) * 1e3
  end
  rem[#rem + 1] = ("%8.2f / %6.2f"):format(median(w), median(c))
end
print(("%-14s %22s %22s"):format("removals", rem[1], rem[2]))
