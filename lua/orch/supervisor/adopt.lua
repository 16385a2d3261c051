--- orch.supervisor.adopt: which processes belong to a run of a service.
--
-- orch acts on a process (takes its sd_notify datagrams, counts its TCP
-- listener, follows it as the main process named by a pidfile or MAINPID=)
-- only if it belongs to the run:
--
--  - it is the process orch spawned for the run, or the run's main process,
--    or descends from one of them (/proc parent links), or it is an orphan
--    that was reparented to orch (orch is a subreaper while it runs
--    forking daemons) and that no other service claims: a double-forked
--    daemon's parent link to its launcher is gone once the launcher exits;
--  - it started no earlier than the run's process (run.start_ticks, set at
--    the spawn; start times in clock ticks since boot, from /proc): a pid named by a stale pidfile that has
--    been reused by a younger unrelated process still fails the parent test;
--  - with `user =`, it runs as that user.
--
-- Cgroup membership, once services are cgroups, replaces the parent test.
-- Every check returns true, or nil and the reason in words, for the log.
--
-- Adoption (adopt.main, adopt.from_pidfile): a process accepted as the main
-- process is watched through a pidfd (orch.proc.wait_exit), so its end is
-- seen whether or not orch is its parent; when it is orch's (an orphan
-- reparented to orch), orch's reaper reports its exit status first.
local orch = require "orch"
local Run = require "orch.supervisor.run"

local adopt = {}

local MAX_DEPTH = 128        -- parent links followed before giving up
local MAX_PROCS = 4096       -- processes of one run looked at (tcp readiness)

-- cfg -> { uid, gid } or false (runs as orch's own user); cfgs are shared
-- by a service's instances and replaced on reload.
local ids_cache = setmetatable({}, { __mode = "k" })

--- The uid and gid the service runs as ({ uid = n, gid = n }) when it has
-- `user =` or `group =`, else false; nil and a message when they cannot be
-- resolved (the spawn fails then too).
function adopt.ids(cfg)
  local c = ids_cache[cfg]
  if c ~= nil then return c end
  if cfg.user == nil and cfg.group == nil then
    c = false
  else
    local uid, gid = orch.proc.user_ids(cfg.user, cfg.group)
    if not uid then return nil, gid end
    c = { uid = uid, gid = gid, user = cfg.user ~= nil }
  end
  ids_cache[cfg] = c
  return c
end

-- pid (whose /proc info is `info`) is the run's own process or its main one.
local function own(run, pid, info)
  if pid == run.pid then return run.start_ticks == nil or info.start_time == run.start_ticks end
  if pid == run.main_pid then return run.main_start == nil or info.start_time == run.main_start end
  return false
end

-- The service whose live run has `pid` as its process or main process.
local function claimed_by(inst, pid)
  for _, other in pairs(inst.sup.by_name) do
    local r = other.run
    if other ~= inst and r and r.alive and (r.pid == pid or r.main_pid == pid) then return other.name end
  end
end

--- Whether pid belongs to the run of inst: true (and "orphan" when it is
-- one reparented to orch), or nil and why not.
function adopt.check(inst, run, pid)
  local me = orch.getpid()
  if math.type(pid) ~= "integer" or pid <= 0 then return nil, "is not a process id" end
  if pid == 1 then return nil, "is init" end
  if pid == me then return nil, "is orch itself" end
  -- The process orch spawned and has not reaped: no other can have its pid
  -- (the common case, a service's own sd_notify pings: no /proc read).
  if pid == run.pid and run.proc and not run.proc_done then return true end
  local info = orch.proc.info(pid)
  if not info then return nil, "does not exist" end
  if info.state == "Z" then return nil, "has exited" end
  if own(run, pid, info) then return true end
  if run.start_ticks and info.start_time < run.start_ticks then
    return nil, string.format("started before the service (start time %d < %d clock ticks): not its process",
      info.start_time, run.start_ticks)
  end
  local ids = adopt.ids(inst.cfg)
  if ids and ids.user and info.uid ~= ids.uid then
    return nil, string.format("runs as uid %d, not as the service's uid %d", info.uid, ids.uid)
  end
  -- A contained run: membership of its cgroup is the test (a setsid
  -- double fork keeps it; nothing outside has it).
  if run.cgroup then
    if require("orch.supervisor.cgroup").member(run, pid) then return true end
    return nil, "is not in the service's cgroup " .. run.cgroup:path()
  end
  local child, p, pinfo = pid, info.ppid, nil
  for _ = 1, MAX_DEPTH do
    if p == me then
      -- `child` is a child of orch: one orch started for something else,
      -- or an orphan it adopted as a subreaper.
      if orch.proc.is_child(child) then
        return nil, string.format("descends from pid %d, which orch started for something else", child)
      end
      local other = claimed_by(inst, child)
      if other then return nil, string.format("belongs to service %s", other) end
      return true, "orphan"
    end
    if p <= 1 then
      return nil, string.format("does not descend from the service's process %d", run.pid)
    end
    pinfo = orch.proc.info(p)
    if not pinfo then return nil, string.format("its parent %d has gone", p) end
    if own(run, p, pinfo) then return true end
    child, p = p, pinfo.ppid
  end
  return nil, "its parent chain is too long"
end

--- The run's live processes: its own process while it runs, its main
-- process, and their descendants (a list of pids).
function adopt.processes(run)
  local out, seen = {}, {}
  local function add(pid)
    if pid and not seen[pid] and #out < MAX_PROCS then
      seen[pid] = true
      out[#out + 1] = pid
    end
  end
  if not run.proc_done then add(run.pid) end
  if run.main_pid then
    local i = orch.proc.info(run.main_pid)
    if i and i.state ~= "Z" and (not run.main_start or i.start_time == run.main_start) then add(run.main_pid) end
  end
  local i = 1
  while i <= #out do
    for _, c in ipairs(orch.proc.children(out[i]) or {}) do add(c) end
    i = i + 1
  end
  return out
end

-- The main process `pid` (started at `start`) of the run: its exit ends the
-- run. An orphan reparented to orch is reaped by orch, whose report (with
-- the exit status, through sup:watch_orphan) is queued before this task
-- resumes or follows the zombie state seen here; any other parent reaps it
-- itself, and the end is known only from the pidfd.
local function watch_main(inst, run, pid, start)
  local ok, err = orch.proc.wait_exit(pid, start)
  if not ok then
    inst:log("cannot watch pid %d: %s (its end is seen only if orch reaps it)", pid, tostring(err))
    return
  end
  if not run.alive or run.main_pid ~= pid then return end
  local i = orch.proc.info(pid)
  if i and i.start_time == start and i.state == "Z" and i.ppid == orch.getpid() then return end
  if not i then
    orch.sleep(0)      -- a report queued by orch's reaper meanwhile goes first
    if not run.alive or run.main_pid ~= pid then return end
  end
  local why = string.format("main process %d ended (its exit status was not seen)", pid)
  inst:log("%s", why)
  inst:run_ended(run, nil, nil, why)
end

--- Makes pid the run's main process (a daemon that forked away from the
-- process orch started) if it belongs to the run; otherwise logs why and
-- returns false, why. `how` says who named it ("MAINPID", "pidfile x").
function adopt.main(inst, run, pid, how)
  if pid == run.main_pid then return true end
  local ok, why = adopt.check(inst, run, pid)
  local info = ok and orch.proc.info(pid)
  if not info then
    why = why or "does not exist"
    inst:log("refusing %s %d as the main process: it %s", how, pid, why)
    return false, why
  end
  inst:set_main(run, pid, info.start_time, info.pgid)
  if pid ~= run.pid then
    run:own("main_watch", orch.task(watch_main, inst, run, pid, info.start_time), Run.cancel_task)
  end
  inst:log("main process is now %d (%s)", pid, how)
  return true
end

-- The pid in the pidfile, or nil and why (orch.proc.read_pidfile: no
-- symbolic link followed, never blocks on a FIFO, a regular file only).
local function read_pid(path)
  return orch.proc.read_pidfile(path)
end

--- Before the spawn of a service with a pidfile: a pidfile that is already
-- there is stale (from an earlier run or another program); it is reported,
-- and a pid it names is only ever accepted by the rules above.
function adopt.check_stale(inst)
  local path = inst.cfg.pidfile
  local pid, err, code = read_pid(path)
  if pid or code ~= "ENOENT" then
    inst:log("stale pidfile %s (%s) before the start: ignored until the service writes it", path,
      pid and ("pid " .. pid) or err)
  end
end

--- (task) A forking daemon's launcher exited 0: read the pidfile (it may
-- appear a little later) until start_timeout, and adopt the pid it names if
-- it belongs to the run. A pid that does not is reported (once per pid) and
-- waited past: the daemon may not have written its own yet.
function adopt.from_pidfile(inst, run)
  local path = inst.cfg.pidfile
  local deadline = run.started + inst.cfg.start_timeout
  local refused, last = {}, nil
  while run.alive and not run.stopping and orch.now() < deadline do
    local pid, err, code = read_pid(path)
    if not pid and code ~= "ENOENT" and err ~= last then
      last = err
      inst:log("ignoring pidfile %s: %s", path, err)
    end
    if pid and not refused[pid] then
      local ok, why = adopt.check(inst, run, pid)
      if ok then
        if adopt.main(inst, run, pid, "pidfile " .. path) then
          if not inst.cfg.ready or run.probe_ready then inst:mark_ready(run, "pidfile") end
          return
        end
      elseif why ~= "does not exist" then
        refused[pid] = true
        last = string.format("pid %d %s", pid, why)
        inst:log("ignoring pidfile %s: pid %d %s", path, pid, why)
      end
    end
    orch.sleep(0.05)
  end
  -- The launcher is gone and no main process was adopted: nothing is left
  -- to wait for (a stop under way ends here too).
  if run.alive then
    inst:run_ended(run, nil, nil, "pidfile " .. path .. " names no process of the service" ..
      (last and (" (" .. last .. ")") or ""))
  end
end

return adopt
