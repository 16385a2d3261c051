--- orch.supervisor.instance: one process slot of a service (a service with
-- numprocs = 3 has three) and its state machine, written as a table:
-- `Instance.on[state][event]` is the action taken when `event` happens in
-- `state` (s6-supervise's actions[state][event]). Every pair has an entry;
-- IGNORE says on purpose that nothing happens. The decisions (restart or
-- not, after how long, start limit) are pure functions in policy.lua.
--
--   stopped --start--> waiting --deps_ready--> starting --ready--> running
--      ^                  (skipped when no dependency waits)          |
--      |                                                      exit / stop
--   stopping <--stop-- starting|running                              v
--      |                                  policy: restart -> backoff -> starting
--      v                                          stop    -> exited
--   stopped                                       limit   -> fatal
--
-- Each spawn makes a Run (run.lua): the process and every resource that
-- lives as long as it, as parts that free themselves. Events that concern a
-- process (ready, exit, kill) carry their run and are dropped once that run
-- is over (or, for ready and kill, once it is ready or stopping), before the
-- table is consulted: a late event never acts on a newer process.
--
-- The fields documented in doc/supervisor.md (name, service, index, state,
-- pid, restarts, exit_code, exit_signal, start_time, history, status_text,
-- cfg) and the methods signal, wait_exit and status are what hooks and
-- restart functions may use.
local orch = require "orch"
local Run = require "orch.supervisor.run"
-- The parts a service may not use are loaded on first use: a supervisor's
-- memory follows what its services need.
local function lazy(name)
  return setmetatable({}, { __index = function(t, k)
    local m = require(name)
    setmetatable(t, { __index = m })
    return m[k]
  end })
end
local ready = lazy "orch.supervisor.ready"
local log = lazy "orch.supervisor.log"
local limits = lazy "orch.supervisor.limits"
local hb = lazy "orch.supervisor.heartbeat"
local health = lazy "orch.supervisor.health"
local handoff = lazy "orch.supervisor.handoff"
local adopt = lazy "orch.supervisor.adopt"
local cgroup = require "orch.supervisor.cgroup"
local status = require "orch.supervisor.status"
-- Not loaded on first use: a first restart would load it between the
-- exit and its spawn (its parse and compile took 250 us of the restart, a
-- third of it: doc/benchmarks.md, issue 15, seventh session). It is small.
local policy = require "orch.supervisor.policy"

local Instance = {}
Instance.__index = Instance

local HISTORY_MAX = 20

-- pid still names the process that started at start_time (not a zombie).
local function alive(pid, start_time)
  local i = orch.proc.stat(pid)
  return i ~= nil and i.state ~= "Z" and (not start_time or i.start_time == start_time)
end

-- Defaults of the class: an instance holds index and restarts only once
-- they differ (the documented fields read the same).
Instance.index, Instance.restarts = 1, 0

-- The log sink of each instance (made by get_sink) and the times of its
-- recent starts (the start limit's history): kept beside the instance
-- rather than in it, like `sup` (in the metatable every instance of a
-- supervisor shares) and the defaults above, so that an instance that runs
-- and never restarted holds at most 8 fields (cfg, service, name, state,
-- want, pid, start_time, run): an 8-slot hash, 248 bytes, instead of 16
-- slots (456 with malloc's header; a supervisor may hold thousands).
local sinks = setmetatable({}, { __mode = "k" })
local starts_of = setmetatable({}, { __mode = "k" })

-- Only what every instance needs is set here; want, fails, starts, history,
-- pid, run, timer... appear when first used (a table's size follows its
-- fields).
function Instance.new(sup, cfg, index, name)
  local mt = sup.instance_mt
  if not mt then
    mt = { __index = setmetatable({ sup = sup }, Instance) }
    sup.instance_mt = mt
  end
  local inst = setmetatable({ cfg = cfg, service = cfg.name, name = name, state = "stopped" }, mt)
  if index ~= 1 then inst.index = index end
  return inst
end

function Instance:log(fmt, ...)
  if self.loop_log then log.loop_summary(self) end
  if self.sup.log_off then return end
  self.sup:log(self.name .. ": " .. string.format(fmt, ...), self)
end

function Instance:set_state(s)
  local old = self.state
  if old == s then return end
  if self.unnoted then self:noted() end
  self.state = s
  -- The cgroup kept for a restart goes once none will come.
  if self.cgroup_idle and (s == "stopped" or s == "exited" or s == "fatal") then cgroup.release(self) end
  self.sup:state_changed(self, old)
end

-- ---------------------------------------------------------------- the table

--- Every state and every event, in the order of the table below.
Instance.STATES = { "stopped", "waiting", "starting", "running", "stopping", "backoff", "exited", "fatal" }
Instance.EVENTS = {
  "start",        -- sup.start: the instance is wanted up
  "stop",         -- sup.stop (task only; the action returns once stopped)
  "deps_ready",   -- a dependency became ready (Sup:kick)
  "backoff_done", -- the backoff delay passed
  "ready",        -- (run, how) the run's readiness probe succeeded
  "kill",         -- (run, reason) heartbeat, limits, start timeout, probe failure
  "exit",         -- (run, code, sig, reason) the run's main process ended
  "empty",        -- (run) the run's cgroup emptied after its main process exited 0
}

local function IGNORE() end
Instance.IGNORE = IGNORE

-- An immediate restart spawned first by the exit's own action (below,
-- after Instance:launch), and what the table's path does with it.
local respawn_early, respawn_left

--- Dispatches `event` to the action for the current state.
function Instance:handle(event, ...)
  return Instance.on[self.state][event](self, ...)
end

-- ---------------------------------------------------------------- actions

local function cancel_timer(self)
  if self.timer then
    self.timer:stop()
    self.timer = nil
  end
end

-- start in stopped, exited, backoff: launch now.
local function start_now(self)
  cancel_timer(self)
  self:launch()
end

-- start in fatal: an explicit start clears the start-limit history.
local function start_fatal(self)
  starts_of[self], self.fails, self.reason = nil, nil, nil
  start_now(self)
end

-- deps_ready in waiting, backoff_done in backoff.
local function relaunch(self)
  if self.want then self:launch() end
end

-- stop with no process: the instance is stopped at once.
local function stop_idle(self)
  cancel_timer(self)
  -- Said like a stop of a live process: a service stopped while in backoff
  -- (or waiting, or fatal) says so too.
  if self.state ~= "stopped" then self:log("stopped (from %s, no process running)", self.state) end
  self:set_state("stopped")
  local sink = sinks[self]
  if sink then sink:close() end
end

-- stop with a live process: the stop sequence, then its output to the end
-- (the pipe reaches EOF once the group is gone).
local function stop_running(self)
  local run = self.run
  if not (run and run.alive) then return stop_idle(self) end
  cancel_timer(self)
  run.user_stop = true
  self:set_state("stopping")
  self:stop_run(run)
  if run.log_stream then run:wait_log(2) end
  if self.state ~= "stopped" and not run.alive then self:set_state("stopped") end
  local sink = sinks[self]
  if sink then sink:close() end
end

-- ready in starting: the run is up.
local function become_running(self, run, how)
  run.ready = true
  run:drop("start_timer")
  if run.readiness then run.readiness:stop() end
  if self.cfg.limits then limits.start(self, run) end
  if self.cfg.heartbeat then hb.ready(self, run) end
  if self.cfg.health then health.start(self, run) end
  if how then self:log("ready (%s)", how) end
  self:set_state("running")
  self.sup:hook(self, "on_ready")
  -- After the hook, so that it runs before the dependents' on_start.
  self.sup:kick()
end

-- kill in starting, running: the stop sequence, then the restart policy.
local function kill_for_restart(self, run, reason)
  if run.forced then return end
  run.forced = reason
  self:log("%s: restarting", reason)
  orch.task(function() self:stop_run(run) end)
end

-- What the main process left behind in its group goes with it. A run in
-- a cgroup ended only once its cgroup was empty (run_ended): its group
-- went with it, and the sweep would only cost syscalls that fail.
local function sweep(self, run, contained)
  if self.cfg.stop.group and not contained then
    orch.killpg(run.pid, "KILL")
    if run.main_pgid and run.main_pgid == run.main_pid then orch.killpg(run.main_pid, "KILL") end
  end
end

-- How a run ended, as words.
local function ended_how(code, sig)
  return code and ("exited with code " .. code) or sig and ("killed by " .. sig) or "ended"
end

-- The exit's log line: "killed by KILL after 0.02s (reason)"; nil without a
-- run (a spawn that failed).
local function exit_line(code, sig, reason, runtime)
  if not runtime then return nil end
  return string.format("%s after %.2fs%s", ended_how(code, sig), runtime, reason and (" (" .. reason .. ")") or "")
end

-- The part of a run's end that its replacement's spawn does not need: the
-- history entry, the exit counters, the `exited` event and the on_exit
-- hook's task.
local function note_exit(self, run, code, sig, reason, runtime)
  local history = self.history or {}
  self.history = history
  history[#history + 1] = { time = orch.time(), code = code, signal = sig, runtime = runtime, reason = reason }
  if #history > HISTORY_MAX then table.remove(history, 1) end
  -- Counted by kind for orch_service_exits_total (orch.http).
  local kind = policy.exit_reason(self.cfg, run.user_stop, code, sig, reason)
  local exits = self.exits or {}
  self.exits = exits
  exits[kind] = (exits[kind] or 0) + 1
  self.sup:emit(self, "exited", { pid = run.main_pid or run.pid, code = code, signal = sig, reason = reason,
                                  runtime = runtime })
  self.sup:hook(self, "on_exit", code, sig)
end

-- The runs a stop of every instance may signal first without a walk of
-- the instances (Instance.signal_listed): per supervisor, the runs orch
-- spawned with no stop hook, each with its process and its stop signal
-- (kept only when it is not TERM: most services' is) and, for a group
-- stop without a cgroup, `true` in groups (its signal goes to its process
-- group and its descendants: group_signal; with a cgroup the main process
-- alone, signal_rest sends the cgroup's rest), in arrays kept as runs
-- start and end (run.pass_i:
-- its place). A run leaves the list as soon as signal_first would leave
-- it: its process exited, its stop began, it was signalled, frozen, or
-- another process became its main one; the listed pass then reads the
-- arrays alone before its kills. The first pass of a
-- stop of 100 read each instance, its run, its definition and its stop
-- table cold before each kill (about 4 us a kill beyond the kill itself).
local function pass_add(self, run)
  local st = self.cfg.stop
  if st.fn then return end
  local S = self.sup
  local list = S.pass_list
  if not list then
    list = { runs = {}, procs = {}, sigs = {}, groups = {}, n = 0 }
    S.pass_list = list
  end
  local n = list.n + 1
  list.runs[n], list.procs[n], list.n = run, run.proc, n
  if st.signal ~= "TERM" then list.sigs[n] = st.signal end
  if st.group and not run.cgroup then list.groups[n] = true end
  run.pass_i = n
end

local function pass_drop(self, run)
  local i = run.pass_i
  if not i then return end
  run.pass_i = nil
  local list = self.sup.pass_list
  local runs, procs, sigs, groups, n = list.runs, list.procs, list.sigs, list.groups, list.n
  if i ~= n then
    local last = runs[n]
    runs[i], procs[i], sigs[i], groups[i], last.pass_i = last, procs[n], sigs[n], groups[n], i
  end
  runs[n], procs[n], sigs[n], groups[n], list.n = nil, nil, nil, nil, n - 1
end

local GROUP = { group = true }

-- The stop signal of a group stop without a cgroup, to the run's own
-- process (run.proc) and its process group, and to what /proc shows
-- descending from it (a child that left the group with setsid). The
-- descendants are listed before any signal: once the main process has
-- died its children are reparented (to orch, a subreaper) and a setsid
-- one would escape. A leaf service costs one read of its children file.
local function signal_descendants(run, sig)
  for _, pid in ipairs(adopt.processes(run)) do
    if pid ~= run.pid and pid ~= run.main_pid then orch.kill(pid, sig) end
  end
end

local function group_kill(run, proc, sig)
  local ok, err, ename = proc:kill(sig, GROUP)
  if not ok and ename == "ESRCH" then ok, err, ename = orch.killpg(run.pid, sig) end
  return ok, err, ename
end

local function group_signal(run, proc, sig)
  signal_descendants(run, sig)
  return group_kill(run, proc, sig)
end

-- The bookkeeping of every end of a run; returns its runtime. With
-- `later`, note_exit waits for Instance:noted (exit_decide: an immediate
-- restart spawns first).
local function record_exit(self, run, code, sig, reason, later)
  run.alive = false
  pass_drop(self, run)
  -- A kept cgroup must not stay frozen for the next run (a frozen
  -- process still dies of SIGKILL).
  if self.frozen then cgroup.freeze(run, false) end
  self.frozen = nil
  run:changed()
  if run.cgroup then cgroup.end_run(self, run) end
  run:release()
  if run.main_pid then self.sup:unwatch_orphan(run.main_pid) end
  if self.pid == run.pid or self.pid == run.main_pid then self.pid = nil end
  self.reason = reason
  self.exit_code, self.exit_signal = code, sig
  local runtime = orch.now() - run.started
  if later then
    self.unnoted = { run, code, sig, reason, runtime }
  else
    note_exit(self, run, code, sig, reason, runtime)
  end
  return runtime
end

--- The end of the last run, noted now if record_exit left it for later:
-- before anything else of the instance is seen (an event, a state, a log
-- of the restart, a restart function reading the history).
function Instance:noted()
  local u = self.unnoted
  if u then
    self.unnoted = nil
    note_exit(self, u[1], u[2], u[3], u[4], u[5])
  end
end

-- exit in stopping: stopped, or started again when it was wanted meanwhile.
local function exit_stopped(self, run, code, sig, reason)
  local contained = run.cgroup ~= nil
  record_exit(self, run, code, sig, reason or run.forced)
  sweep(self, run, contained)
  self:log("stopped (%s)", ended_how(code, sig))
  if self.want then return self:launch() end
  return self:set_state("stopped")
end

-- exit in starting, running: the restart policy decides. An immediate
-- restart is spawned before the bookkeeping that can wait (the history, the
-- counters, the `exited` event and the on_exit hook, noted right after the
-- spawn and before anything of the new run; the log lines; the sweep of the
-- old process group): restart latency is what the users of a crashed
-- service wait for. Where nothing of the restart runs code of the
-- service's own or waits (respawn_early says when), its process is spawned
-- first of all, before the run's end is recorded; the same path as any
-- other restart then decides and takes it as its spawn (respawn_left: a
-- spawn it did not take is killed).
local function exit_decide(self, run, code, sig, reason)
  if run.user_stop or not self.want then return exit_stopped(self, run, code, sig, reason) end
  reason = reason or run.forced
  local early = respawn_early(self, run, code, sig, reason)
  local contained = run.cgroup ~= nil
  local runtime = record_exit(self, run, code, sig, reason, true)
  if runtime >= self.cfg.backoff.reset_after then self.fails = nil end
  self:after_exit(code, sig, reason, runtime)
  if early then respawn_left(self) end
  sweep(self, run, contained)
end

-- empty: the processes a daemonizing main process left in the run's cgroup
-- are all gone; the run ends with the main process's own status.
local function empty_decide(self, run)
  local e = run.main_exit
  return exit_decide(self, run, e.code, e.sig, "its cgroup emptied")
end
local function empty_stopped(self, run)
  local e = run.main_exit
  return exit_stopped(self, run, e.code, e.sig)
end

local A = {
  start_now = start_now, start_fatal = start_fatal, relaunch = relaunch, stop_idle = stop_idle,
  stop_running = stop_running, become_running = become_running, kill_for_restart = kill_for_restart,
  exit_stopped = exit_stopped, exit_decide = exit_decide, empty_decide = empty_decide,
  empty_stopped = empty_stopped,
}
Instance.actions = A

--- on[state][event]: the whole state machine. Events that carry a run are
-- checked against it first (Instance:run_event); a state without a live run
-- (stopped, waiting, backoff, exited, fatal) never sees them, and ignores
-- them explicitly.
Instance.on = {
  --           start          stop          deps_ready  backoff_done  ready           kill              exit            empty
  stopped  = { start = start_now,   stop = stop_idle,    deps_ready = IGNORE,   backoff_done = IGNORE,   ready = IGNORE,         kill = IGNORE,           exit = IGNORE,       empty = IGNORE },
  waiting  = { start = IGNORE,      stop = stop_idle,    deps_ready = relaunch, backoff_done = IGNORE,   ready = IGNORE,         kill = IGNORE,           exit = IGNORE,       empty = IGNORE },
  starting = { start = IGNORE,      stop = stop_running, deps_ready = IGNORE,   backoff_done = IGNORE,   ready = become_running, kill = kill_for_restart, exit = exit_decide,  empty = empty_decide },
  running  = { start = IGNORE,      stop = stop_running, deps_ready = IGNORE,   backoff_done = IGNORE,   ready = IGNORE,         kill = kill_for_restart, exit = exit_decide,  empty = empty_decide },
  stopping = { start = IGNORE,      stop = stop_running, deps_ready = IGNORE,   backoff_done = IGNORE,   ready = IGNORE,         kill = IGNORE,           exit = exit_stopped, empty = empty_stopped },
  backoff  = { start = start_now,   stop = stop_idle,    deps_ready = IGNORE,   backoff_done = relaunch, ready = IGNORE,         kill = IGNORE,           exit = IGNORE,       empty = IGNORE },
  exited   = { start = start_now,   stop = stop_idle,    deps_ready = IGNORE,   backoff_done = IGNORE,   ready = IGNORE,         kill = IGNORE,           exit = IGNORE,       empty = IGNORE },
  fatal    = { start = start_fatal, stop = stop_idle,    deps_ready = IGNORE,   backoff_done = IGNORE,   ready = IGNORE,         kill = IGNORE,           exit = IGNORE,       empty = IGNORE },
}

-- ---------------------------------------------------------------- entry points

--- Wants the instance up (sup.start). Idempotent.
function Instance:start()
  self.want = true
  return self:handle("start")
end

--- Stops the instance (sup.stop). Task only; returns when it is stopped.
function Instance:stop()
  self.want = false
  return self:handle("stop")
end

--- The probe (or the absence of one) says the run is ready.
function Instance:mark_ready(run, how)
  if not run.alive or run.ready or run.stopping then return end
  if self.cfg.pidfile and not run.main_pid then
    -- A forking daemon is ready once its pidfile names it (see adopt).
    run.probe_ready = true
    return
  end
  return self:handle("ready", run, how)
end

function Instance:probe_failed(run, msg)
  if not run.alive or run.ready then return end
  self:force_restart(run, msg)
end

--- Kills the run with its stop sequence and lets the restart policy act
-- (heartbeat missed, limit exceeded, not ready in time). Any context.
function Instance:force_restart(run, reason)
  if not run.alive or run.stopping then return end
  return self:handle("kill", run, reason)
end

--- The run's cgroup emptied after its main process had exited 0.
function Instance:cgroup_empty(run)
  if not run.alive then return end
  return self:handle("empty", run)
end

--- The run is over (its main process ended): clean up, then decide. What
-- the main process left in the run's cgroup goes first, with the stop
-- sequence (cgroup.drain): a restart never spawns beside a process of the
-- previous run, and a stop returns once none is left.
function Instance:run_ended(run, code, sig, reason)
  if not run.alive then return end
  if not run.drained and cgroup.left(self, run) then
    run.drained = true
    return cgroup.drain(self, run, function()
      if run.alive then self:handle("exit", run, code, sig, reason) end
    end)
  end
  return self:handle("exit", run, code, sig, reason)
end

-- ---------------------------------------------------------------- starting

-- A start of many (Instance.batch, below): the instance, run and request
-- of the spawn started and not finished yet.
local batching, pending, pending_run, pending_req = 0, nil, nil, nil

--- Starts the process now, or waits for the dependencies to be ready.
function Instance:launch()
  if not self.want then return end
  if pending == self then return end   -- launched already
  -- The supervisor's cgroup tree, before any adoption: one a killed orch
  -- of the same control socket left is taken over (and removed at the end).
  cgroup.base(self.sup)
  -- After `orch ctl reexec`, the process the previous image ran goes on.
  if self.sup.inherited ~= false then
    local e = self.sup:take_inherited(self)
    if e and e.pid then self:noted() end
    if e and e.pid and handoff.adopt(self, e) then
      cgroup.adopt(self, self.run)
      return
    end
  end
  -- A dependency's spawn started in this start of many counts once it is
  -- finished (a service is running from then on: see Instance:spawn).
  if pending and #self.cfg.depends_on > 0 then Instance.finish_pending() end
  local missing = self.sup:unready_dependency(self)
  if missing then
    if self.state ~= "waiting" then
      self:log("waiting for %s to be ready", missing)
      self:set_state("waiting")
    end
    return
  end
  self:spawn()
end

-- Variables of orch's own environment that never pass to a service (orch's
-- environment does not change while it runs: looked up once).
local INHERITED = {}
for _, k in ipairs { "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "ORCH_HEARTBEAT_KEY", "ORCH_HEARTBEAT_SLOT" } do
  INHERITED[k] = os.getenv(k) ~= nil
end

-- The instance whose restart is being launched (after_exit, backoff): its
-- spawn gives the CPU to the new process first (Instance:spawn).
local restarting

-- A start of many (sup.start, between Instance.batch(true) and
-- Instance.batch(false)) starts each spawn with orch.spawn_begin and
-- finishes it at the next spawn: orch's bookkeeping of one service (the
-- end of the previous one's spawn, the next one's options and cgroup) runs
-- while the child gets to its exec on the other CPU, instead of after it.
-- The spawn started and not finished yet is in pending, pending_run and
-- pending_req (three upvalues rather than a table a spawn: a start of many
-- makes no garbage for it). No Lua runs between its start and its finish
-- but this module's and the start's (no yield: sup.start finishes it
-- before each of its yields).

--- Finishes the started spawn (and any its end starts in turn).
function Instance.finish_pending()
  while pending do
    local inst, run, req = pending, pending_run, pending_req
    pending, pending_run, pending_req = nil, nil, nil
    inst:spawn_done(run, req:finish())
  end
end

--- Starts (true) or ends (false) a start of many; the spawn started last
-- is finished when the last one ends. A start ends its part before each
-- of its yields (another task's start may run then) and begins it again
-- after: nothing stays started across a loop turn.
function Instance.batch(on)
  batching = batching + (on and 1 or -1)
  if batching == 0 then Instance.finish_pending() end
end

-- A spawn's options. Those of the previous spawn are used again while the
-- definition and the supervisor's environment are the same tables (a
-- reload that changes a service gives it new instances, sup.configure a new
-- env), when nothing but this function writes them: a service without
-- env_file, readiness or heartbeat, whose preparations add to the
-- environment or the fds of each spawn. A restart then makes no table.
-- They are kept from the first restart on: a service that has never
-- restarted (most of a large fleet) holds no copy of its options (about
-- 0.6 KiB a service: issues 14 and 15, memory per service). `restart`:
-- the spawn is a restart not counted yet (respawn_early).
local function spawn_options(self, restart)
  local cfg = self.cfg
  local kept = self.spawn_opts
  if kept and kept.cfg == cfg and kept.env == self.sup.env then
    local opts = kept.opts
    opts.cgroup = nil                        -- cgroup.prepare's, each spawn
    return opts
  end
  local env = {}
  if self.sup.env then for k, v in pairs(self.sup.env) do env[k] = v end end
  -- What orch itself inherited from its own supervisor (systemd, another
  -- orch) is not the service's: ready/heartbeat set their own values.
  for k, present in pairs(INHERITED) do
    if present or env[k] ~= nil then env[k] = false end
  end
  if cfg.env then for k, v in pairs(cfg.env) do env[k] = v end end
  env.ORCH_SERVICE = cfg.name
  env.ORCH_INSTANCE = tostring(self.index)
  local opts = table.move(cfg.cmd, 1, #cfg.cmd, 1, {})
  opts.env = env
  opts.cwd = cfg.cwd
  opts.uid = cfg.user
  opts.gid = cfg.group
  opts.umask = cfg.umask
  opts.nice, opts.cpu_affinity, opts.ioprio = cfg.nice, cfg.cpu_affinity, cfg.ioprio
  if cfg.rlimits then
    local rl = {}
    for k, v in pairs(cfg.rlimits) do rl[k] = v end
    opts.rlimits = rl
  end
  if cfg.setsid then opts.setsid = true else opts.pgroup = true end
  opts.stdin = "null"
  local l = cfg.log
  if l.null then
    opts.stdout, opts.stderr = "null", "null"
  elseif not l.inherit then
    opts.stdout = "pipe"
    opts.stderr = l.stderr and "stdout" or "inherit"
  end
  if (restart or self.restarts > 0) and not (cfg.env_file or cfg.ready or cfg.heartbeat) then
    self.spawn_opts = { cfg = cfg, env = self.sup.env, opts = opts }
  end
  return opts
end

-- The restart spawned by the exit's action before its bookkeeping: the
-- instance, orch.spawn's results and the options it was given, taken by
-- that instance's next Instance:spawn, which the same action reaches
-- without a yield (nothing between runs code of the service's own).
local early_inst, early_p, early_err, early_opts
-- Its start time (orch.time() at its spawn), which the journal has too:
-- the instance's start_time once spawn_done takes that process (early_of).
local early_time, early_of

-- Spawns the restart of `self` at once, when the run's end restarts it
-- without a delay and nothing of the restart can run code of the service's
-- own (a restart function), prepare the spawn (an env file, a readiness or
-- heartbeat preparation, a pidfile's check), wait (a dependency not ready,
-- a drain of its cgroup) or read the cgroup first (a memory limit's OOM
-- kills, a frozen cgroup): asked of the same state, with the same pure
-- functions (policy.lua, graph.lua) after_exit and Instance:launch then
-- use. Its cgroup is the run's own, emptied (read by cgroup.left just
-- before), its CPU base read before the spawn (cgroup.reuse). True when it
-- spawned (or tried to).
function respawn_early(self, run, code, sig, reason)
  local cfg, S = self.cfg, self.sup
  if self.run ~= run or not run.proc or run.main_pid or self.frozen or pending or S.inherited ~= false
     or type(cfg.restart) == "function" or cfg.backoff.initial > 0
     or cfg.env_file or cfg.ready or cfg.heartbeat or cfg.pidfile
     or (#cfg.depends_on > 0 and S:unready_dependency(self)) then
    return false
  end
  if policy.decide(cfg, self, code, sig, reason) ~= "restart" then return false end
  if cfg.start_limit and policy.limit_reached(cfg.start_limit, starts_of[self] or {}, orch.now()) then return false end
  local cg = run.cgroup
  if cg then
    if not cgroup.reuse(self, run) then return false end
  elseif not S.cgroup_off then
    return false
  end
  local opts = spawn_options(self, true)
  opts.cgroup = cg
  early_inst, early_opts = self, opts
  early_p, early_err = orch.spawn(opts)
  if early_p then
    -- The new process gets the CPU first (see Instance:spawn), then the
    -- journal and the fd holder learn it, before the bookkeeping: a kill
    -- -9 of orch meanwhile leaves no process the next orch does not know.
    orch.sched_yield()
    early_time, early_of = orch.time(), early_p
    S:spawned_early(self, early_p, self.restarts + 1, early_time)
  end
  return true
end

-- After the exit's action: a spawn respawn_early made that the table's path
-- did not take (it decided otherwise: never, while respawn_early asks what
-- it asks) is killed, and said.
function respawn_left(self)
  if early_inst ~= self then return end
  local p = early_p
  early_inst, early_p, early_err, early_opts, early_time, early_of = nil, nil, nil, nil, nil, nil
  if not p then return end
  self:log("internal error: the restart spawned at the exit (pid %d) was not taken: killed", p.pid)
  self.sup:spawned_early(self, nil)
  p:kill("KILL")
  if p.stdout then p.stdout:close() end
end

--- The instance's log sink (made on first use; it outlives runs so that
-- the tail shows what a crashed process printed last).
function Instance:get_sink()
  local sink = sinks[self]
  if not sink then
    sink = log.sink(self.cfg.log, self.name, self.sup, self.cfg.user)
    sinks[self] = sink
  end
  return sink
end

--- The instance's log sink, or nil before its first output.
function Instance:log_sink()
  return sinks[self]
end

function Instance:spawn()
  local cfg = self.cfg
  local run = Run.new()
  self.run = run
  local early = early_inst == self
  local opts = early and early_opts or spawn_options(self)
  local ok, err = true, nil
  if cfg.env_file then
    -- Read at each start, as systemd does; the file's values win over env.
    local warnings
    ok, warnings = require("orch.supervisor.envfile").load(cfg.env_file, opts.env)
    if not ok then err = warnings
    else
      for _, w in ipairs(warnings) do self:log("%s", w) end
      -- ... except ORCH_SERVICE and ORCH_INSTANCE, which are orch's.
      opts.env.ORCH_SERVICE, opts.env.ORCH_INSTANCE = cfg.name, tostring(self.index)
    end
  end
  if ok and cfg.ready then ok, err = ready.prepare(self, run, opts) end
  if ok and cfg.heartbeat then ok, err = hb.prepare(self, run, opts) end
  if ok then ok, err = cgroup.prepare(self, run, opts) end
  if ok and (cfg.pidfile or (cfg.ready and cfg.ready.notify)) then
    -- Double-forking daemons (pidfile, MAINPID=) are reparented to orch so
    -- that their exit is still seen.
    self.sup:track_orphans()
  end
  if cfg.start_limit then
    local starts = starts_of[self] or {}
    starts_of[self] = starts
    starts[#starts + 1] = orch.now()
    if #starts > cfg.start_limit.burst + 1 then table.remove(starts, 1) end
  end
  if ok and cfg.pidfile then adopt.check_stale(self) end
  local p
  if ok and early then
    -- Spawned already by the exit's action (respawn_early), which gave
    -- the new process the CPU first.
    p, err = early_p, early_err
    early_inst, early_p, early_err, early_opts = nil, nil, nil, nil
    return self:spawn_done(run, p, err)
  elseif ok and batching > 0 and restarting ~= self then
    local req
    req, err = orch.spawn_begin(opts)
    if req then
      local inst, prun, preq = pending, pending_run, pending_req
      pending, pending_run, pending_req = self, run, req
      if inst then inst:spawn_done(prun, preq:finish()) end
      return
    end
  elseif ok then
    p, err = orch.spawn(opts)
  end
  -- A restart's new process finishes its exec before orch goes on with the
  -- bookkeeping below: on a busy machine the new process usually waits on
  -- orch's own CPU, and the users of a crashed service wait for it. Not
  -- in a start of many, where it would hand a CPU-bound service a whole
  -- time slice before each next spawn.
  if p and restarting == self then orch.sched_yield() end
  return self:spawn_done(run, p, err)
end

--- The end of a spawn: p the new process, or nil and the error.
function Instance:spawn_done(run, p, err)
  local cfg = self.cfg
  local start_time
  if p and self.unnoted then
    -- The state journal learns the new process before the previous run's
    -- end is noted (the `exited` event's subscribers run then): a kill -9
    -- of orch meanwhile leaves no process the next orch does not know.
    -- (A restart spawned by the exit's action was journaled at its spawn,
    -- with its time.)
    run.proc, run.pid, start_time = p, p.pid, early_of == p and early_time or orch.time()
    self.sup:spawned(self, run, start_time)
  end
  early_time, early_of = nil, nil
  -- The previous run's end, before anything of this one is seen.
  self:noted()
  if not p then
    run:release()
    self:log("cannot start: %s", tostring(err))
    self.reason = "spawn failed: " .. tostring(err)
    self.sup:emit(self, "spawn_failed", { reason = self.reason })
    return self:after_exit(nil, nil, self.reason)
  end
  run.proc, run.pid, run.alive = p, p.pid, true
  pass_add(self, run)
  self.stuck = nil
  -- The run's identity for adopt.lua's checks (a zombie still has it).
  if cfg.ready or cfg.pidfile then run.start_ticks = orch.proc.start_time(p.pid) end
  run.started = orch.now()
  self.pid = p.pid
  self.status_text = nil
  if start_time then
    self.start_time = start_time
  else
    self.start_time = orch.time()
    self.sup:spawned(self, run)
  end
  -- Every spawn is logged with its pid (a crash loop's only while its
  -- restarts are: see log.restart).
  local loop = self.loop_log
  if not (loop and loop.count > loop.burst) then self:log("started, pid %d", p.pid) end
  self.sup:emit(self, "spawned", { pid = p.pid })
  self:set_state("starting")
  if p.stdout then self:capture(run, p.stdout) end
  p:on_exit(function(code, sig) self:proc_exited(run, code, sig) end)
  if cfg.heartbeat then hb.start(self, run) end
  if cfg.ready or cfg.pidfile then
    run:own("start_timer", orch.timer.after(cfg.start_timeout, function()
      run.start_timer = nil
      if run.alive and not run.ready then
        self:force_restart(run, string.format("not ready after %gs", cfg.start_timeout))
      end
    end), Run.stop_timer)
  end
  self.sup:hook(self, "on_start")
  if cfg.ready then
    ready.start(self, run)
  elseif not cfg.pidfile then
    self:mark_ready(run, nil)
  end
end

local function log_ended(run)
  run.log_done = true
  run:changed()
end

--- Copies the run's output pipe into the sink until EOF.
function Instance:capture(run, stream)
  run.log_stream = stream
  log.capture(self:get_sink(), stream, log_ended, run)
end

--- One sd_notify datagram of the run, already parsed.
function Instance:notify_message(run, f)
  if not run.alive then return end
  if f.STATUS then self.status_text = f.STATUS end
  if f.WATCHDOG == "1" and run.beat then run.beat:ping() end
  if f.MAINPID then
    local pid = math.tointeger(tonumber(f.MAINPID))
    if pid and pid ~= run.main_pid then adopt.main(self, run, pid, "MAINPID") end
  end
  if f.READY == "1" then self:mark_ready(run, "sd_notify READY=1") end
  if f.STOPPING == "1" and not run.stopping then self:log("stopping (sd_notify)") end
end

--- Makes `pid` (start time `start`, process group `pgid`) the run's main
-- process: adopt.main decided it belongs to the run. Its exit status comes
-- through orch's reaper when orch is its parent (watch_orphan).
function Instance:set_main(run, pid, start, pgid)
  if run.main_pid then self.sup:unwatch_orphan(run.main_pid) end
  pass_drop(self, run)
  run.main_pid, run.main_start, run.main_pgid = pid, start, pgid
  self.pid = pid
  self.sup:watch_orphan(pid, self, run)
  self.sup:spawned(self, run)
end

-- ---------------------------------------------------------------- exits

--- The spawned process exited (on_exit of its orch.Process).
function Instance:proc_exited(run, code, sig)
  run.proc_done = true
  pass_drop(self, run)
  if run.cgroup and not run.main_pid then
    local oom = sig == "KILL" and cgroup.oom_reason(self, run)
    if oom then return self:run_ended(run, code, sig, oom) end
    if not self.cfg.pidfile and cgroup.goes_on(run, code) then
      -- Daemonized: the service is what is left in its cgroup.
      run.main_exit = { code = code, sig = sig }
      self:log("main process %d exited 0; the service goes on in its cgroup", run.pid)
      cgroup.watch_empty(run, function() self:cgroup_empty(run) end)
      return
    end
  end
  if run.main_pid and run.main_pid ~= run.pid then
    -- The launcher of a daemon that told us its main pid: only the main
    -- process's end counts, unless it is already gone.
    if run.alive and not alive(run.main_pid, run.main_start) then
      self:run_ended(run, code, sig)
    end
    return
  end
  if self.cfg.pidfile and code == 0 and run.alive and not run.stopping then
    run:own("adopting", orch.task(adopt.from_pidfile, self, run), Run.cancel_task)
    return
  end
  self:run_ended(run, code, sig)
end

--- Restart decision after a run that ended on its own (or failed to spawn:
-- no runtime). The exit's log line (with the run's runtime) is logged
-- before the decision's own, but after an immediate restart is under way.
function Instance:after_exit(code, sig, reason, runtime)
  local cfg = self.cfg
  -- A restart function is given the history: the exit is in it.
  if type(cfg.restart) == "function" then self:noted() end
  self.history = self.history or {}
  local decision, delay, err = policy.decide(cfg, self, code, sig, reason)
  local fatal
  if decision == "fatal" then
    fatal = "the restart function said fatal"
  elseif decision == "restart" and policy.limit_reached(cfg.start_limit, starts_of[self] or {}, orch.now()) then
    fatal = string.format("start limit reached: %d starts within %gs", cfg.start_limit.burst, cfg.start_limit.interval)
  end
  if decision == "restart" and not fatal then
    self.fails = (self.fails or 0) + 1
    delay = delay or policy.backoff(cfg.backoff, self.fails)
    self.restarts = self.restarts + 1
    self.last_delay = delay
    if delay <= 0 then
      restarting = self
      self:launch()
      restarting = nil
      self:noted()      -- a launch that did not spawn (nothing else noted it)
      log.restart(self, exit_line(code, sig, reason, runtime), err, "restarted")
      return
    end
  end
  self:noted()
  local line = exit_line(code, sig, reason, runtime)
  if decision == "restart" and not fatal then
    log.restart(self, line, err, string.format("restarting in %.2fs", delay))
  else
    if line then self:log("%s", line) end
    if err then self:log("%s", err) end
  end
  if fatal then return self:go_fatal(fatal) end
  if decision ~= "restart" then return self:set_state("exited") end
  self:backoff(delay)
end

--- Enters backoff: the next launch in `delay` seconds.
function Instance:backoff(delay)
  self:set_state("backoff")
  self.sup:emit(self, "backoff", { delay = delay })
  self.backoff_until = orch.now() + delay
  self.timer = orch.timer.after(delay, function(t)
    if self.timer ~= t then return end
    self.timer = nil
    restarting = self
    self:handle("backoff_done")
    restarting = nil
  end)
end

function Instance:go_fatal(reason)
  -- The last run's own reason (a spawn that failed: no such file) stays
  -- beside the verdict (start limit reached).
  local last = self.reason
  if last and last ~= reason and not reason:find(last, 1, true) then reason = reason .. " (last run: " .. last .. ")" end
  self.reason = reason
  self:log("FATAL: %s", reason)
  self.sup:emit(self, "fatal", { reason = reason })
  self:set_state("fatal")
  self.sup:hook(self, "on_fatal", reason)
  self.sup:instance_fatal(self)
end

-- ---------------------------------------------------------------- stopping

--- The first pass of a stop of many (graph.stop_ordered): the stop signal
-- to the run's main process alone, one kill(2) of the child orch spawned and
-- has not reaped (its pid cannot name another process meanwhile), before
-- any instance of the layer does its bookkeeping. The rest of a cgroup
-- follows in the same pass (Instance:signal_rest), the rest of a process
-- group without one in the instance's own stop (Instance:send); neither
-- sends this signal to the main process again: a process that handles it
-- gets it once. Nothing here waits. A group stop without a cgroup sends its whole group's signal
-- here (Instance:send: the /proc descendant scan must see the tree before
-- the main process dies, when its children are reparented and a setsid one
-- would escape), and the stop sends nothing more. Left to the stop itself:
-- a run already stopping, one with a stop hook (which runs before any
-- signal), a frozen one (thawed first), a daemon's adopted main process
-- (checked by its start time), and a shutdown's KILL. A run signalled
-- already (a shutdown's early pass, graph.signal_early) is left as it is.
-- True when it sent the signal.
function Instance:signal_first()
  local run = self.run
  if not (run and run.alive and run.proc and not run.proc_done and not run.stopping) then return end
  if run.signalled ~= nil or run.signalled_group ~= nil then return end
  local st = self.cfg.stop
  if st.fn or self.frozen or self.sup.escalated or (run.main_pid and run.main_pid ~= run.pid) then return end
  if st.group and not run.cgroup then
    if self:send(run, st.signal, true) then
      run.signalled_group, run.signalled_at = st.signal, orch.now()
      return true
    end
  elseif run.proc:kill(st.signal) then
    run.signalled, run.signalled_at = st.signal, orch.now()
    pass_drop(self, run)
    return true
  end
end

--- The first pass over the supervisor's list of runs (pass_add above),
-- before the walk of every instance (graph's first pass, for a stop of
-- every instance): each listed run gets its stop signal, as signal_first
-- would send it, and leaves the list (the walk then finds it signalled).
-- The kills read the list's arrays alone; the runs are noted after the
-- last (their signal's time: right after it). Returns how many it
-- signalled.
function Instance.signal_listed(S)
  local list = S.pass_list
  if not list or list.n == 0 or S.escalated then return 0 end
  local runs, procs, sigs, groups, n = list.runs, list.procs, list.sigs, list.groups, list.n
  local ok = {}
  for i = 1, n do
    if groups[i] then
      ok[i] = group_signal(runs[i], procs[i], sigs[i] or "TERM")
    else
      ok[i] = procs[i]:kill(sigs[i] or "TERM")
    end
  end
  local t, sent = orch.now(), 0
  for i = 1, n do
    local run = runs[i]
    run.pass_i = nil
    if ok[i] then
      if groups[i] then
        run.signalled_group, run.signalled_at = sigs[i] or "TERM", t
      else
        run.signalled, run.signalled_at = sigs[i] or "TERM", t
      end
      sent = sent + 1
    end
    runs[i], procs[i], sigs[i], groups[i] = nil, nil, nil, nil
  end
  list.n = 0
  return sent
end

-- The run whose cgroup's rest the first pass still has to signal, and
-- the signal: signal_first signalled its main process, the run has a
-- cgroup and the service stops its group.
local function rest_due(inst)
  local run = inst.run
  local sig = run and run.signalled
  if sig ~= nil and run.cgroup and inst.cfg.stop.group then return run, sig end
end

--- The second half of the first pass, once every main process of the
-- layer has its signal: the rest of the run's cgroup (what the main
-- process forked, a setsid escapee) gets it too, listed with the main
-- process left out, so that escapees die beside their main processes
-- rather than after each instance's bookkeeping. The stop that follows
-- (Instance:send) then sends nothing more.
function Instance:signal_rest()
  local run, sig = rest_due(self)
  if not run then return end
  run.signalled = nil
  cgroup.signal(run, sig, run.pid)
  run.signalled_group = sig
end

--- The walk of a first pass (graph's), after the listed runs' kills:
-- signal_first of each instance, then signal_rest of each, those whose
-- signal is the same and not KILL in one call (cgroup.signal_rests: the
-- listing of each cgroup without a Lua call and an options table each,
-- and without asking each cgroup whether one is below it when none is),
-- the others one by one. One walk of the instances for both. Returns how
-- many signal_first signalled.
function Instance.signal_pass(S, insts)
  local cgs, pids, runs, n, sig0, sent, others = nil, nil, nil, 0, nil, 0, nil
  for _, inst in ipairs(insts) do
    if inst:signal_first() then sent = sent + 1 end
    local run, sig = rest_due(inst)
    if run then
      if sig0 == nil and sig ~= "KILL" and sig ~= 9 then
        sig0, cgs, pids, runs = sig, {}, {}, {}
      end
      if sig == sig0 then
        n = n + 1
        cgs[n], pids[n], runs[n] = run.cgroup, run.pid, run
      else
        others = others or {}
        others[#others + 1] = inst
      end
    end
  end
  -- Every main process has its signal now: the rest of each cgroup.
  if n > 0 then
    cgroup.signal_rests(S, cgs, pids, sig0)
    for i = 1, n do
      local run = runs[i]
      run.signalled, run.signalled_group = nil, sig0
    end
  end
  if others then
    for _, inst in ipairs(others) do inst:signal_rest() end
  end
  return sent
end

--- Sends sig to the run's main process, or to its process group.
function Instance:send(run, sig, group)
  if not run.alive then return nil, "not running", "ESRCH" end
  -- The whole group has it already (signal_first without a cgroup, or
  -- signal_rest).
  if group and run.signalled_group ~= nil and run.signalled_group == sig then
    run.signalled_group = nil
    return true
  end
  -- The main process has it already (signal_first): only the rest, once.
  local first = run.signalled ~= nil and run.signalled == sig
  if first then run.signalled = nil end
  -- The group of a contained service is its cgroup: every process in it.
  if group and cgroup.signal(run, sig, first and run.pid or nil) then return true end
  -- Without a cgroup: what /proc shows descending from the run (a child
  -- that left the group with setsid) gets the signal too.
  if group and not run.cgroup then signal_descendants(run, sig) end
  if first then return true end
  local ok, err, ename
  if run.main_pid and (run.main_pid ~= run.pid or not run.proc) then
    if group and run.main_pgid == run.main_pid then
      ok, err, ename = orch.killpg(run.main_pid, sig)
    else
      ok, err, ename = orch.kill(run.main_pid, sig, run.main_start)
    end
    -- The launcher's group too, in case something is left there.
    if group and run.main_pid ~= run.pid then orch.killpg(run.pid, sig) end
    return ok, err, ename
  end
  if group then
    ok, err, ename = group_kill(run, run.proc, sig)
  else
    ok, err, ename = run.proc:kill(sig)
  end
  return ok, err, ename
end

--- Waits until the run is over; false after `timeout` seconds.
function Instance:wait_run(run, timeout)
  return run:wait_over(timeout)
end

--- The stop sequence of a run (task only): the stop hook if any, then the
-- stop signal (to the group), `timeout` seconds, KILL (to the group).
-- Returns once the run is over.
function Instance:stop_run(run)
  if not run.alive then return end
  if run.stopping then
    self:wait_run(run)
    return
  end
  run.stopping = true
  pass_drop(self, run)
  if run.readiness then run.readiness:stop() end
  local S, st = self.sup, self.cfg.stop
  if st.fn and not S.escalated then
    -- The hook runs in a task of its own for at most the stop timeout (as
    -- systemd bounds ExecStop= by TimeoutStopSec=): a hook that never
    -- returns must not hang the stop. Then the stop signal, timeout, KILL.
    -- An orch.exit from the hook must not wait for the stop it is part of.
    local hook = orch.task(function() return xpcall(st.fn, debug.traceback, self) end)
    S.stop_hook_tasks[hook] = true
    local ok, err, code = hook:join(st.timeout)
    S.stop_hook_tasks[hook] = nil
    if ok == nil and code == "ETIMEDOUT" then
      hook:cancel()
      self:log("stop hook still running after %gs: cancelled", st.timeout)
    elseif not ok then
      self:log("stop hook failed: %s", tostring(err))
    end
  end
  if not run.alive then return end
  local sig = S.escalated and "KILL" or st.signal
  -- The stop timeout counts from the signal: a stop of many sent it in its
  -- first pass (signal_first), before the bookkeeping of every stop of the
  -- layer (a shutdown's, before the shutdown's own), which took the grace
  -- of the last ones further and further past the signal.
  local sent_at = sig == st.signal and run.signalled_at or nil
  run.signalled_at = nil
  -- Frozen processes would take the stop signal only once thawed.
  if self.frozen then self:freeze(false) end
  self:send(run, sig, st.group)
  -- A process stopped from outside (SIGSTOP, SIGTSTP) takes the stop signal
  -- only once continued: CONT right after it, as systemd does.
  if sig ~= "KILL" and run.proc and run.proc:status() == "stopped" then self:send(run, "CONT", st.group) end
  if self:gone(run) then return end
  local grace = sent_at and math.max(0, st.timeout - (orch.now() - sent_at)) or st.timeout
  if sig ~= "KILL" and not self:wait_run(run, grace) then
    if not S.escalated then
      self:log("still running %gs after %s: sending KILL", st.timeout, sig)
    end
    S:killed_during_shutdown()
    self:send(run, "KILL", true)
    if self:gone(run) then return end
  end
  if self:wait_run(run, st.kill_timeout) or self:gone(run) then return end
  -- Still there after KILL: stuck in the kernel (D state), or not ours to
  -- kill. The stop does not wait for it: the run ends here with a reason
  -- that says what was left, and a late exit is ignored.
  local pid = run.main_pid or run.pid
  local info = orch.proc.info(pid)
  local what = string.format("pid %d did not die %gs after KILL (%s)", pid, st.kill_timeout,
    info and ("state " .. tostring(info.state) .. ", uid " .. tostring(info.uid)) or "gone")
  self:log("%s: left behind", what)
  self.stuck = what
  S:killed_during_shutdown()
  self:run_ended(run, nil, nil, what)
end

--- After a signal: a main process orch does not reap itself (adopted from
-- a pidfile or MAINPID=, its parent is another process) may be gone, or a
-- zombie its parent never reaps, without orch ever seeing its exit: then
-- the run ends here. True when the run is over.
function Instance:gone(run)
  if not run.alive then return true end
  local pid, start = run.main_pid, run.main_start
  if not pid or (pid == run.pid and run.proc and not run.proc_done) then return false end
  local info = orch.proc.info(pid)
  if info and (not start or info.start_time == start) then
    -- Alive, or a zombie orch reaps itself (its exit comes as an orphan's).
    if info.state ~= "Z" or info.ppid == orch.getpid() then return false end
  end
  local why = string.format("main process %d ended (its exit status was not seen)", pid)
  self:log("%s", why)
  self:run_ended(run, nil, nil, why)
  return true
end

-- ---------------------------------------------------------------- for users

--- svc:signal(sig [, {group = true}]): signals the running process (or its
-- group). Returns true or nil, message, ename.
function Instance:signal(sig, opts)
  local run = self.run
  if not run or not run.alive then
    return nil, "signal: " .. self.name .. " is not running", "ESRCH"
  end
  return self:send(run, sig, opts and opts.group)
end

--- svc:freeze(on): cgroup.freeze (true) or thaw (false) of the running
-- process's cgroup. True, or nil, message, ename.
function Instance:freeze(on)
  local run = self.run
  if not run or not run.alive then
    return nil, (on and "freeze: " or "thaw: ") .. self.name .. " is not running", "ESRCH"
  end
  local ok, err, ename = cgroup.freeze(run, on)
  if not ok then return nil, err, ename end
  self.frozen = on or nil
  -- A frozen run is thawed by its stop first: the list's pass leaves it
  -- (for good: after a thaw the walk signals it).
  if on then pass_drop(self, run) end
  self.sup.changed:signal()
  self.sup:emit(self, on and "frozen" or "thawed", { pid = self.pid })
  return true
end

--- svc:wait_exit([timeout]): in a task, waits until the current process has
-- ended (true) or the timeout passed (false).
function Instance:wait_exit(timeout)
  local run = self.run
  if not run or not run.alive then return true end
  return self:wait_run(run, timeout)
end

--- svc:config(): a plain copy of the service's configuration (self.cfg
-- with its defaults filled in, no read-only or shared table in it), for
-- next, rawget, # and cjson.encode, which see a shared table as empty.
function Instance:config()
  return require("orch.supervisor.schema").config_copy(self.cfg)
end

--- svc:status([defer]): the instance's status table (sup.status). The
-- figures (rss, cpu, the cgroup's) are read again when older than the
-- supervisor's accounting_max_age; with `defer` (a status of many
-- services), queued instead and shown as last read, with their age
-- (orch.supervisor.status).
function Instance:status(defer)
  local now = orch.now()
  local run, alive, state, stop_signal, pid, a = status.view(self, now, defer)
  local t = {
    name = self.name, service = self.service, index = self.index, state = state,
    pid = pid,
    start_time = alive and self.start_time or nil,
    uptime = alive and (now - run.started) or nil,
    restarts = self.restarts, exit_code = self.exit_code, exit_signal = self.exit_signal,
    status_text = self.status_text, reason = self.reason,
    log_lines = sinks[self] and sinks[self].lines or 0,
    log_dropped = sinks[self] and sinks[self].dropped or 0,
    stop_signal = stop_signal,
  }
  if a and a[1] > -math.huge then
    t.rss, t.cpu, t.accounting_age = a[2], a[3], now - a[1]
    cgroup.status(self, run, t, a[4], a[5], a[6], a[7], a[8])
  else
    cgroup.status(self, alive and run, t)
  end
  t.cgroup_off = self.sup.cgroup_off
  return t
end

return Instance
