--- orch.supervisor.run: one run of an instance, i.e. one process orch
-- spawned (or adopted after a reexec) and everything that lives exactly as
-- long as it. Events (exit, readiness, timers) carry their run and are
-- ignored once it is over, so a late event never acts on a newer process.
--
-- The run's own facts are plain fields, written only by instance.lua:
--   alive, pid, proc, started    the process and when it started
--   ready, stopping, forced      where it is in its life (forced: the reason
--   user_stop                    it was killed for a restart)
--   main_pid, main_start,        the daemon's main process when it is not
--   main_pgid                    the spawned one (pidfile, MAINPID=)
--   start_ticks                  its process's start time (clock ticks), for
--                                adopt.lua's checks
--   log_stream, log_done         the output pipe and its EOF
--   drained                      what its main process left in its cgroup
--                                got (or gets) the stop sequence
-- Resources that need cleaning up are parts: objects the modules make (the
-- readiness probe, the heartbeat deadline, the limits sampler, the start
-- timer, a pidfile reader) and hand to the run with run:own(key, obj,
-- close). run:drop(key) ends one early; run:release() ends every part when
-- the run is over. No module frees another's part. A part whose closer is
-- the same for every run (Run.closer: the cgroup's) is noted nowhere but in
-- its field: most runs have that part alone, and a table of parts per run
-- was 80 bytes a service (issue 14: memory per service).
local Event = require "orch.supervisor.event"

local Run = {}
Run.__index = Run

function Run.new(fields)
  local run = setmetatable(fields or {}, Run)
  if run.alive == nil then run.alive = false end
  return run
end

-- key -> the closer every run's part `key` has (Run.closer).
local closers = {}

--- Declares that the part `key` of every run is closed by close(obj): such
-- a part is its field alone (run[key] is set only by run:own).
function Run.closer(key, close) closers[key] = close end

--- Makes obj a part of the run under `key` (run[key] is obj until it is
-- dropped); close(obj) frees it (default obj:close()). Returns obj. A part
-- that ended by itself (a timer that fired) sets run[key] = nil.
function Run:own(key, obj, close)
  self:drop(key)
  self[key] = obj
  close = close or obj.close
  if closers[key] == close then return obj end
  local parts = self.parts
  if not parts then
    parts = {}
    self.parts = parts
  end
  parts[key] = close
  return obj
end

--- Ends the part `key` now (nothing when there is none).
function Run:drop(key)
  local parts = self.parts
  local close = parts and parts[key]
  if close then
    parts[key] = nil
  else
    close = closers[key]
    if not close then return end
  end
  local obj = self[key]
  self[key] = nil
  if obj ~= nil then close(obj) end
end

--- Ends every part (the run is over).
function Run:release()
  local parts = self.parts
  if parts then
    for key in pairs(parts) do self:drop(key) end
  end
  for key in pairs(closers) do
    if self[key] ~= nil then self:drop(key) end
  end
end

-- Common closers.
function Run.stop_timer(t) t:stop() end
function Run.cancel_task(t)
  local orch = require "orch"
  if t ~= orch.current() then t:cancel() end
end

--- Wakes the tasks waiting on this run (its end, its log's EOF).
function Run:changed()
  if self.event then self.event:signal() end
end

--- Waits (task only) until pred(run) is true or `timeout` seconds passed,
-- on the run's own event (made at the first wait): stopping hundreds of
-- services wakes each stop task once per event of its own run, not once per
-- state change of every service.
function Run:wait_until(pred, timeout)
  if pred(self) then return true end
  local ev = self.event
  if not ev then
    ev = Event.new()
    self.event = ev
  end
  return ev:wait_for(function() return pred(self) end, timeout)
end

local function over(run) return not run.alive end
local function log_over(run) return run.log_done end

--- Waits until the run is over; false after `timeout` seconds.
function Run:wait_over(timeout) return self:wait_until(over, timeout) end

--- Waits until its output pipe reached EOF; false after `timeout` seconds.
function Run:wait_log(timeout) return self:wait_until(log_over, timeout) end

--- The run's accounting: { time read, rss, cpu, cgroup figures..., queued }
-- (orch.supervisor.status reads and fills it), made on first use, never
-- read (-math.huge).
function Run:accounting()
  local a = self.acct
  if not a then
    a = { -math.huge }
    self.acct = a
  end
  return a
end

return Run
