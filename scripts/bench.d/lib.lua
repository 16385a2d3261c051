-- scripts/bench.d/lib.lua: what the Lua benchmarks run by `orch run` share.
--   local lib = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua")
local orch = require "orch"
local lib = {}

-- lib.on_stop(x): what a benchmark removes when it is stopped before its
-- end (SIGINT, SIGTERM or SIGHUP: Ctrl-C, scripts/bench's trap, a
-- timeout): `orch run` dies of these signals running nothing, and a SysV
-- object or a process the script made would outlive it. x is an object
-- with :remove() (a queue, a semaphore set, a heartbeat table) or a
-- function; returned as it is:
--   local q <close> = lib.on_stop(assert(orch.msg.private()))
-- On a stop every one is removed (called), the last given first, then orch
-- exits with 128 + the signal's number. A handler runs when the loop does:
-- a loop that never yields (no wait that blocks) yields now and then.
local stops
function lib.on_stop(x)
  if not stops then
    stops = {}
    for name, num in pairs { HUP = 1, INT = 2, TERM = 15 } do
      orch.signal.on(name, function()
        for i = #stops, 1, -1 do
          local y = stops[i]
          if type(y) == "function" then pcall(y) else pcall(y.remove, y) end
        end
        orch.exit(128 + num)
      end)
    end
  end
  stops[#stops + 1] = x
  return x
end

-- lib.timer(rec): a function wrap(tbl, name, label) that replaces the
-- function tbl[name] with one that calls it and then rec(label, t0, cpu):
-- its start (orch.now(), CLOCK_MONOTONIC) and the CPU it took (os.clock(),
-- inclusive); its results are returned as they are. label may be a
-- function of the call's arguments (the label of each call). A name tbl
-- does not have raises (a timer that would measure nothing), unless
-- `optional`. Each call costs about 1 us.
function lib.timer(rec)
  local now, clock = orch.now, os.clock
  return function(tbl, name, label, optional)
    local f = tbl[name]
    if f == nil and optional then return end
    assert(f, name)
    local function done(l, t0, c0, ...)
      rec(l, t0, clock() - c0)
      return ...
    end
    tbl[name] = function(...)
      local l = label
      if type(l) == "function" then l = l(...) end
      local t0, c0 = now(), clock()
      return done(l, t0, c0, f(...))
    end
  end
end

-- lib.stop_fleet(N, escapee, parent): a supervisor with N services in
-- cgroups below `parent` (`sleep 1000`, or with escapee each leaving a
-- setsid double-forked escapee: the stop benchmarks of issue 14), started,
-- running, and every one of their processes in place (escapees included).
-- Returns the supervisor and the parent cgroup (orch.cgroup.open).
function lib.stop_fleet(N, escapee, parent)
  local sup = require("orch.supervisor").new()
  sup.configure { log = false, cgroup = parent }
  local cmd = escapee and { "sh", "-c", "(setsid sleep 1000 &); exec sleep 1000" } or { "sleep", "1000" }
  for i = 1, N do sup.service { name = "s" .. i, cmd = cmd, log = false } end
  assert(sup.start("all"))
  assert(sup.wait("all", "running", 60))
  local base = assert(orch.cgroup.open(parent))
  local want = escapee and 2 * N or N
  while #base:procs() < want do orch.sleep(0.01) end
  return sup, base
end

return lib
