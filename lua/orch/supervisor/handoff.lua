--- orch.supervisor.handoff: the supervisor's side of `orch ctl reexec`.
-- The running image hands its live processes over to the new image of orch
-- (the same pid, so they are still its children): handoff.export() lists
-- them with their log pipes; in the new image the first launch of each
-- instance adopts its process (handoff.adopt) instead of spawning one, and
-- what belongs to no service any more is stopped (handoff.drop).
-- Functions of the supervisor state S and of an instance.
local orch = require "orch"
local Run = require "orch.supervisor.run"
local schema = require "orch.supervisor.schema"

local handoff = {}

-- A definition as a string that compares like schema.equal (functions by
-- their compiled code), so that it crosses exec in JSON.
local HEX = {}
for i = 0, 255 do HEX[string.char(i)] = string.format("%02x", i) end

-- Keys of mixed types in a fixed order (one comparator, not one per table).
local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function sorted_keys(v)
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, key_order)
  return keys
end

local function canon(v, depth)
  depth = depth or 0
  local t = type(v)
  if depth > 50 then return "?" end
  if t == "function" then
    local ok, d = pcall(string.dump, v, true)
    return ok and ("f" .. d:gsub(".", HEX)) or tostring(v)
  elseif t == "table" then
    local keys = sorted_keys(v)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = canon(k, depth + 1) .. "=" .. canon(v[k], depth + 1) end
    return "{" .. table.concat(parts, ";") .. "}"
  elseif t == "string" then
    return string.format("%q", v)
  end
  return t:sub(1, 1) .. tostring(v)
end
handoff.canon = canon

local PRIME = 1099511628211
local byte = string.byte

-- The 64-bit FNV-1a state h after the bytes of s.
local function fnv(h, s)
  for i = 1, #s do h = (h ~ byte(s, i)) * PRIME end
  return h
end

-- fnv(h, canon(v, depth)), without making canon's text: the pieces are
-- hashed as they come (a digest is made for every service at its first
-- start, and the text and its parts were most of a mass start's garbage).
local function canon_fnv(h, v, depth)
  local t = type(v)
  if depth > 50 then return fnv(h, "?") end
  if t == "table" then
    h = fnv(h, "{")
    for i, k in ipairs(sorted_keys(v)) do
      if i > 1 then h = fnv(h, ";") end
      h = fnv(canon_fnv(h, k, depth + 1), "=")
      h = canon_fnv(h, v[k], depth + 1)
    end
    return fnv(h, "}")
  elseif t == "string" then
    return fnv(h, string.format("%q", v))
  elseif t == "function" then
    return fnv(h, canon(v, depth))
  end
  return fnv(fnv(h, t:sub(1, 1)), tostring(v))
end

--- A short digest of canon(def) (64-bit FNV-1a, hex), for the state record
-- of persist.lua, which is rewritten often: it tells a changed definition
-- from the same one without carrying the whole text.
function handoff.digest(def)
  return string.format("%016x", canon_fnv(-3750763034362895579, def, 0))   -- 0xcbf29ce484222325
end

--- handoff.digest of the definition a service's configuration cfg was
-- checked from (schema.definition(cfg, given)), without making it: the
-- digest is made for every service at its first start.
function handoff.digest_of(cfg, given)
  local value = schema.definition_value
  local keys = {}
  for k, c in next, cfg do
    if value(given, k, c) ~= nil then keys[#keys + 1] = k end
  end
  table.sort(keys, key_order)
  local h = fnv(-3750763034362895579, "{")
  for i, k in ipairs(keys) do
    if i > 1 then h = fnv(h, ";") end
    h = fnv(canon_fnv(h, k, 1), "=")
    h = canon_fnv(h, value(given, k, cfg[k]), 1)
  end
  return string.format("%016x", fnv(h, "}"))
end

--- What the supervisor hands over: every instance's counters and state,
-- and for those with a live process its pid and log pipe. Returns a
-- JSON-able state and the descriptors that must cross exec.
function handoff.export(S)
  local list, fds = {}, {}
  local now = orch.now()
  for _, inst in ipairs(S:all_instances()) do
    local e = {
      name = inst.name, want = inst.want and true or false, state = inst.state,
      restarts = inst.restarts, fails = inst.fails, reason = inst.reason,
      exit_code = inst.exit_code, exit_signal = inst.exit_signal, history = inst.history,
    }
    if inst.state == "backoff" and inst.backoff_until then
      e.backoff_left = math.max(0, inst.backoff_until - now)
    end
    local run = inst.run
    local pid = run and run.alive and (run.main_pid or run.pid)
    local info = pid and orch.proc.info(pid)
    if info then
      e.pid, e.pid_start, e.start_time = pid, info.start_time, inst.start_time
      e.uptime = now - (run.started or now)
      e.def = canon(S:definition(inst.service))
      -- A pipe that reached EOF is closed already: nothing to hand over.
      local fd = run.log_stream and not run.log_done and run.log_stream:fd()
      if math.type(fd) == "integer" and fd >= 0 then
        e.log_fd = fd
        fds[#fds + 1] = fd
      end
    end
    list[#list + 1] = e
  end
  return { version = 1, instances = list }, fds
end

--- In the image `orch ctl reexec` started: name -> what the previous one
-- handed over (read once; the log pipes become streams at once, so that
-- no child inherits them). false when there is nothing.
function handoff.load(S)
  if S.inherited ~= nil then return S.inherited end
  S.inherited = false
  if not os.getenv("ORCH_HANDOFF") then return false end
  local ok, ctl = pcall(require, "orch.ctl")
  local st = ok and ctl.inherited("supervisor")
  if type(st) ~= "table" or type(st.instances) ~= "table" then return false end
  local fdopen = require("orch").fdopen
  local h = {}
  for _, e in ipairs(st.instances) do
    if type(e) == "table" and type(e.name) == "string" and (e.pid == nil or math.type(e.pid) == "integer") then
      if math.type(e.log_fd) == "integer" then
        local s, err = fdopen(e.log_fd)
        e.log_stream = s
        if not s then S:log(e.name .. ": the log pipe was lost in the reexec: " .. tostring(err)) end
      end
      h[e.name] = e
    end
  end
  S.inherited = h
  return h
end

--- The hand-over entry of inst (taken: adopted at most once), or nil.
function handoff.take(S, inst)
  local h = S.inherited
  if h == nil then h = handoff.load(S) end
  if not h then return nil end
  local e = h[inst.name]
  h[inst.name] = nil
  return e
end

--- After sup.run: what was handed over and belongs to no service any more
-- is stopped (TERM to its group, as a removed service on reload).
function handoff.drop(S)
  local h = S.inherited
  if not h then return end
  S.inherited = false
  for name, e in pairs(h) do
    -- The output of a run whose stop was under way goes on into its
    -- service's log until its end: closed, the pipe would end the process
    -- with SIGPIPE at its next write, in the middle of its stop.
    local inst = e.log_stream and e.cgroup_stop and S.by_name[name]
    if inst then
      require("orch.supervisor.log").capture(inst:get_sink(), e.log_stream)
    elseif e.log_stream then
      e.log_stream:close()
    end
    local info = e.pid and orch.proc.info(e.pid)
    if info and info.start_time == e.pid_start and info.state ~= "Z" then
      S:log(string.format("%s: %s: stopping pid %d", name,
        S.by_name[name] and "its stop was under way" or "no longer defined", e.pid))
      S:track_orphans()
      -- In a cgroup of the previous orch's tree, its whole cgroup has its
      -- stop already (cgroup.sweep_strays).
      if not e.cgroup_stop then
        if info.pgid == e.pid then orch.killpg(e.pid, "TERM") else orch.kill(e.pid, "TERM", e.pid_start) end
      end
    end
  end
end

local function int(v) return math.tointeger(v) end

--- In the new image, before anything starts: the counters of every
-- instance that has a hand-over entry (restart count, failures in a row,
-- last exit and history), so that no restart is forgotten.
function handoff.restore(S, h)
  for name, e in pairs(h) do
    local inst = S.by_name[name]
    if inst and not e.killed then
      inst.restarts = int(e.restarts) or inst.restarts
      inst.fails = int(e.fails)
      inst.reason = type(e.reason) == "string" and e.reason or nil
      inst.exit_code = int(e.exit_code)
      inst.exit_signal = e.exit_signal
      if type(e.history) == "table" then inst.history = e.history end
    end
  end
end

--- An entry without a process: the instance goes on where the previous
-- image left it. Fatal and exited stay so, backoff waits out what was
-- left of its delay, stopped stays stopped; a process that ended during
-- the exec is started again (and counted as a restart). Returns true: the
-- instance is settled (sup.run starts nothing more for it).
function handoff.resume(inst, e)
  local st = e.state
  if not e.want or st == "stopped" then return true end
  if st == "fatal" or st == "exited" then
    inst.want = true
    inst:set_state(st)
    return true
  end
  if st == "backoff" then
    inst.want = true
    inst:backoff(tonumber(e.backoff_left) or 0)
    return true
  end
  inst.restarts = inst.restarts + 1
  inst:log(e.ended_unwatched and "its process ended while no orch watched it"
    or "its process ended during the reexec")
  inst:start()
  return true
end

-- Waits for the end of an adopted process that is not orch's child: a
-- pidfd, or /proc where there is none. Its exit status is its parent's
-- (init's) to collect; it is read from the zombie while init has not reaped
-- it yet, and is unknown otherwise.
local function watch_adopted(inst, run, pid, start)
  run:own("exit_watch", orch.task(function()
    if not orch.proc.wait_exit(pid, start) then
      while run.alive do
        local i = orch.proc.info(pid)
        if not i or i.state == "Z" or i.start_time ~= start then break end
        orch.sleep(0.5)
      end
    end
    run.exit_watch = nil
    local i = orch.proc.info(pid)
    if i and i.state == "Z" and i.start_time == start and (i.exit_code or i.exit_signal) then
      return inst:run_ended(run, i.exit_code, i.exit_signal)
    end
    inst:run_ended(run, nil, nil, "exit status unknown: not orch's child")
  end), Run.cancel_task)
end

-- Why a killed orch's process has no log pipe (persist.recover's
-- lost_log): it never reached the holder, or the holder is gone.
local LOST = {
  unsent = "its log pipe had not reached the fd holder yet (orch was killed first)",
  none = "its log pipe had not reached an fd holder (none was running yet)",
  gone = "its log pipe was lost (the fd holder is gone)",
}

--- Makes inst take over the process of a hand-over entry. After `orch ctl
-- reexec` it is still orch's child, and its exit comes as an orphan's;
-- after a killed orch (e.killed, see persist.lua) it is init's, watched
-- through a pidfd. Returns false when it ended meanwhile (then it is
-- spawned again as usual). A definition that changed in the re-read policy
-- restarts it, as sup.reload does; so does a log pipe that was lost.
function handoff.adopt(inst, e)
  local S = inst.sup
  local pid = e.pid
  local info = pid > 1 and pid ~= orch.getpid() and orch.proc.info(pid)
  if not info or info.state == "Z" or info.start_time ~= e.pid_start then
    if e.log_stream then e.log_stream:close() end
    -- It exited; what follows is a restart like any other.
    if not e.killed and e.want then inst.restarts = inst.restarts + 1 end
    inst:log(e.killed and "pid %d ended before it could be adopted" or "pid %d ended during the reexec", pid)
    return false
  end
  local run = Run.new { alive = true, adopted = true, pid = pid, main_pid = pid,
                        main_start = info.start_time, main_pgid = info.pgid }
  run.started = orch.now() - (tonumber(e.uptime) or 0)
  inst.run = run
  inst.pid = pid
  inst.restarts = math.tointeger(e.restarts) or inst.restarts
  inst.start_time = tonumber(e.start_time) or orch.time()
  if e.killed then
    watch_adopted(inst, run, pid, info.start_time)
  else
    S:track_orphans()
    S:watch_orphan(pid, inst, run)
  end
  if e.log_stream then inst:capture(run, e.log_stream) end
  inst:log(e.killed and "adopted pid %d (left running by a killed orch)" or "adopted pid %d after reexec", pid)
  inst:set_state("starting")
  if inst.cfg.heartbeat then require("orch.supervisor.heartbeat").adopt(inst, run) end
  local r = inst.cfg.ready
  if e.state == "starting" and r and (r.tcp or r.fn) then
    -- It was not ready yet when the exec came: its probe (a connect, a
    -- function) runs again; its dependents keep waiting for it.
    local ready = require "orch.supervisor.ready"
    ready.prepare(inst, run, { env = {} })
    ready.start(inst, run)
  else
    inst:mark_ready(run, nil)
  end
  local svc = S.services[inst.service]
  local changed
  if e.killed then
    changed = e.def ~= handoff.digest_of(svc.cfg, svc.given)
  else
    changed = e.def ~= canon(S:definition(inst.service))
  end
  local why = changed and "definition changed" or e.lost_log and LOST[e.lost_log]
  if why then
    inst:log("%s: restarting", why)
    run.user_stop = true
    inst:set_state("stopping")
    orch.task(function() inst:stop_run(run) end)
  end
  return true
end

return handoff
