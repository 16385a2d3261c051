--- orch.watchdog: stops the processes whose heartbeat is older than their
-- timeout (see doc/watchdog.md).
--
-- Event-driven: one task sleeps until the earliest deadline (last beat +
-- timeout) over every registration it knows; when it wakes it re-reads the
-- slots that are due, and a slot that beat meanwhile is simply re-armed. New
-- and released registrations are learned from the table header's `changes`
-- counter, polled every `scan` seconds (the classic table has no counter: it
-- is re-read whole at that pace). Each timed-out process is handled in its
-- own task (SIGTERM, grace, SIGKILL), so one that ignores SIGTERM never delays
-- another.
--
-- Safety: a process is signalled only when its pid is > 1, is not orch's, its
-- start time is the one recorded at registration (learned at first sight for
-- the classic table), and its real uid is allowed. Everything else is
-- cleared (dead, reused pid, garbage) or left alone (refused), never
-- signalled. Pure Lua on the public orch API.
local orch = require "orch"

local hb = orch.heartbeat

local M = {}

-- Slots due within this much of the earliest deadline are re-read in the
-- same wake-up: it costs nothing in latency and coalesces wake-ups when many
-- processes beat.
local COALESCE = 0.01
-- How often every known registration is re-read and checked for liveness
-- (kill(pid, 0) and /proc): dead processes with a long or no timeout, and
-- writers that change a slot without moving the change counter.
local SWEEP = 5
-- How often the table is looked for while it does not exist yet.
local REOPEN = 1
-- Without a pidfd (orch.proc.wait_exit failing: an old kernel, a
-- seccomp filter), the grace period polls the process this often.
local POLL = 0.02
-- Classic beats are whole wall-clock seconds; a beat older than the process
-- by more than this was not made by it.
local COMPAT_SLACK = 2
-- USER_HZ: the unit of /proc/<pid>/stat start times (100 on every Linux ABI
-- orch builds for).
local USER_HZ = 100

local Watchdog = {}
Watchdog.__index = Watchdog
Watchdog.__name = "orch.Watchdog"

-- ---------------------------------------------------------------- heap

-- A binary min-heap of {deadline, e, seq} nodes. Nodes are never removed
-- from the middle: an entry that moves bumps its seq and the old node is
-- dropped when it surfaces.
local function heap_push(h, node)
  local n = #h + 1
  h[n] = node
  while n > 1 do
    local p = n // 2
    if h[p].deadline <= node.deadline then break end
    h[n], h[p] = h[p], node
    n = p
  end
end

local function heap_pop(h)
  local top, n = h[1], #h
  local last = h[n]
  h[n] = nil
  n = n - 1
  if n > 0 then
    local i = 1
    while true do
      local l, r, m = 2 * i, 2 * i + 1, i
      local md = last.deadline
      if l <= n and h[l].deadline < md then m, md = l, h[l].deadline end
      if r <= n and h[r].deadline < md then m = r end
      if m == i then break end
      h[i] = h[m]
      i = m
    end
    h[i] = last
  end
  return top
end

-- ---------------------------------------------------------------- options

local check = require "orch.check"

local option_rules = {
  key = function(v)
    if type(v) ~= "number" then return false, "number expected, got " .. type(v) end
    return math.type(v) == "integer" and v > 0 and v <= 0xffffffff,
      "SysV key expected (an integer from 1 to 0xffffffff)"
  end,
  compat = "boolean", create = "boolean", grace = "seconds",
  log = "function|string|boolean", on_timeout = "function", on_event = "function",
  any_uid = "boolean", uids = "table", shared = "boolean",
  scan = function(v)
    if type(v) ~= "number" then return false, "number expected, got " .. type(v) end
    return v >= 0.001 and v <= 60, "seconds from 0.001 to 60"
  end,
  table = function(v)
    if type(v) ~= "userdata" then return false, "userdata expected, got " .. type(v) end
    local mt = getmetatable(v)
    return type(mt) == "table" and mt.__name == "orch.HeartbeatTable", "orch.HeartbeatTable"
  end,
}

local function argerror(msg)
  error("bad argument #1 to 'start' (" .. msg .. ")", 3)
end

local function check_options(o)
  if o == nil then argerror("table expected, got no value") end
  check.options("start", 1, o, option_rules, 2)
  if o.log == true then argerror("option 'log': function, file path or false expected") end
  if o.table ~= nil then
    if o.key ~= nil or o.compat ~= nil or o.create ~= nil or o.shared ~= nil then
      argerror("option 'table' excludes 'key', 'compat', 'create' and 'shared'")
    end
  end
  if o.shared and o.uids == nil and not o.any_uid then
    -- Any writer of a shared table can name any pid: whose processes may be
    -- signalled must be said, never defaulted (a root watchdog would
    -- otherwise signal root's processes on a stranger's word).
    argerror("option 'shared' needs 'uids' (or 'any_uid'): whose processes may be signalled")
  end
  if o.uids ~= nil then
    if o.any_uid then argerror("give either 'any_uid' or 'uids'") end
    for i, u in pairs(o.uids) do
      if math.type(i) ~= "integer" or math.type(u) ~= "integer" or u < 0 or u > 0xffffffff then
        argerror("option 'uids': list of uids expected")
      end
    end
  end
end

-- ---------------------------------------------------------------- logging

local function stamp() return require("orch.log").timestamp() end

local function make_logger(log)
  if log == false then return function() end, nil end
  if type(log) == "function" then return log, nil end
  if type(log) == "string" then
    -- Never through a symbolic link, only in a directory root or orch's
    -- user controls, created 0640, and never blocking on a FIFO
    -- (doc/security.md#log-files). Unbuffered: each line is one write(2).
    local f, err, ename = orch.logfile.open(log)
    if not f then return nil, err, ename end
    local failing = false
    return function(msg)
      local ok, werr = f:write_lines({ stamp() .. " watchdog: " .. msg })
      if not ok and not failing then
        io.stderr:write("watchdog: cannot write the log: ", tostring(werr), "\n")
      end
      failing = not ok
    end, f
  end
  local f = io.stderr
  return function(msg) f:write(stamp(), " watchdog: ", msg, "\n") end, f
end

-- ---------------------------------------------------------------- helpers

local function fmt_s(s)
  if s == math.floor(s) and s < 1e9 then return ("%d s"):format(s) end
  return ("%.3f s"):format(s)
end

-- Names come from whoever can write the table: no control characters (a
-- newline could forge a log line) reach the log.
local function clean(name)
  return (tostring(name or ""):gsub("%c", "?"))
end

local function who(e)
  return ("%s pid %d"):format(e.name ~= "" and ("'" .. e.name .. "'") or "(unnamed)", e.pid)
end

-- The boot time in wall-clock seconds (for the start times of processes).
local function boot_time()
  local f = io.open("/proc/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return tonumber(s:match("\nbtime (%d+)"))
end

function Watchdog:_event(ev, msg)
  ev.message = msg
  if msg then
    local ok, err = pcall(self.log, msg)
    if not ok then io.stderr:write("watchdog: log failed: ", tostring(err), "\n") end
  end
  if self.on_event then
    local ok, err = pcall(self.on_event, ev)
    if not ok then pcall(self.log, "on_event hook failed: " .. tostring(err)) end
  end
end

local function ev_of(e, name)
  return { event = name, pid = e.pid, name = e.name, index = e.index, timeout = e.timeout }
end

-- The deadline of a snapshot on the monotonic clock (math.huge: never).
local function deadline_of(info)
  if info.reserved then return math.huge end
  local timeout = info.timeout
  if not (timeout > 0) then return math.huge end
  if info.compat then
    -- atime is whole seconds: the beat may have been up to 1 s after it.
    return info.last_beat + timeout + 1
  end
  return info.last_beat + timeout
end

local function same_registration(e, info)
  return e.pid == info.pid and e.gen == info.generation
end

-- Makes sure the loop looks at e by `when` (a heap node; the deadline
-- itself is e.deadline).
function Watchdog:_arm(e, when)
  if when == math.huge then return end
  -- An earlier node will re-read it (1 ms of slack: classic deadlines are
  -- projected from the wall clock and wobble by microseconds).
  if e.armed and e.armed <= when + 0.001 then return end
  e.seq = e.seq + 1
  e.armed = when
  heap_push(self.heap, { deadline = when, e = e, seq = e.seq })
  if self.waiting and when < self.waiting then self.wake:signal() end
end

-- A refused registration is looked at again after this long: it may beat
-- again, or die (then the sweep clears it).
local function recheck_delay(e)
  local t = e.timeout
  if t >= 1 and t < 3600 then return t end
  return t >= 3600 and 3600 or 1
end

-- A fresh snapshot of a registration already known.
function Watchdog:_update(e, info)
  local d = deadline_of(info)
  e.name, e.timeout = clean(info.name), info.timeout
  if e.state == "refused" then
    if d <= e.deadline + 0.5 then return end  -- still silent: its re-check is armed
    e.state, e.refused = "watching", nil      -- it beat again
  end
  e.deadline = d
  self:_arm(e, d)
end

function Watchdog:_drop(e)
  if self.entries[e.index] == e then self.entries[e.index] = nil end
  e.seq = e.seq + 1
  e.dropped = true
end

function Watchdog:_clear(e)
  if self.stopped then return true end   -- a stopped watchdog touches nothing
  local ok, _, en = self.t:clear({ index = e.index, pid = e.pid, generation = e.gen })
  return ok or en == "ESTALE"
end

-- Is the slot's process still the one that registered? "ok", "gone"
-- (exited, or a zombie) or "reused" (the pid names another process now).
function Watchdog:_identify(e)
  if e.start_time and hb.alive(e.pid, e.start_time) then return "ok" end
  local st = hb.start_time(e.pid)
  if not st or not hb.alive(e.pid) then return "gone" end
  if e.start_time and st ~= e.start_time then return "reused" end
  return "ok"
end

-- Clears the slot of a process that no longer holds it; sends nothing.
function Watchdog:_release_dead(e, how)
  self:_drop(e)
  self:_clear(e)
  if how == "gone" then
    self:_event(ev_of(e, "gone"), ("%s no longer exists: slot %d cleared (no signal sent)"):format(who(e), e.index))
  else
    self:_event(ev_of(e, "reused"), ("%s: the pid now names another process (start time changed): slot %d cleared, not signalled"):format(who(e), e.index))
  end
end

-- A registration seen for the first time.
function Watchdog:_add(info)
  local e = { index = info.index, pid = info.pid, gen = info.generation, name = clean(info.name),
              timeout = info.timeout, seq = 0, state = "watching", compat = info.compat }
  if e.pid <= 0 then
    -- No process can hold it: garbage (or a writer's bug). Clearing sends nothing.
    self:_clear(e)
    self:_event(ev_of(e, "garbage"), ("slot %d holds garbage (pid %d): cleared"):format(e.index, e.pid))
    return
  end
  if info.compat then
    -- The classic layout records no start time: learn it now, and refuse a
    -- slot whose last beat predates the process (a dead writer's slot whose
    -- pid was reused before we first saw it).
    local st = hb.start_time(e.pid)
    if not st or not hb.alive(e.pid) then return self:_release_dead(e, "gone") end
    e.start_time = st
    local bt = self.btime
    if bt and info.atime < bt + st / USER_HZ - COMPAT_SLACK then
      return self:_release_dead(e, "reused")
    end
  elseif info.start_time and info.start_time > 0 then
    e.start_time = info.start_time
  end
  self.entries[e.index] = e
  e.deadline = deadline_of(info)
  self:_event(ev_of(e, "watch"), ("watching %s (slot %d, timeout %s)"):format(who(e), e.index,
    e.deadline == math.huge and "none" or fmt_s(e.timeout)))
  self:_arm(e, e.deadline)
end

-- Compares the table with what is known: new, changed and released slots.
function Watchdog:_rescan()
  local seen = {}
  for _, info in ipairs(self.t:slots()) do
    local idx = info.index
    seen[idx] = true
    local e = self.entries[idx]
    if e and same_registration(e, info) then
      if e.state ~= "handling" then self:_update(e, info) end
    else
      if e then self:_drop(e) end
      self:_add(info)
    end
  end
  for idx, e in pairs(self.entries) do
    if not seen[idx] and e.state ~= "handling" then
      self:_drop(e)
      self:_event(ev_of(e, "released"), ("%s released slot %d"):format(who(e), idx))
    end
  end
end

-- Clears the slots of processes that are gone (whatever their timeout).
function Watchdog:_sweep()
  local dead = {}
  for _, e in pairs(self.entries) do
    if e.state ~= "handling" and e.pid > 1 and e.pid ~= self.pid then
      local how = self:_identify(e)
      if how ~= "ok" then dead[#dead + 1] = { e, how } end
    end
  end
  for _, d in ipairs(dead) do self:_release_dead(d[1], d[2]) end
end

-- ---------------------------------------------------------------- a timeout

function Watchdog:_allowed(uid)
  if self.any_uid then return true end
  return self.uids[uid] == true
end

-- Sends sig to the process (or its group); the identity is checked against
-- the recorded start time right before.
function Watchdog:_send(e, sig, group)
  if group then
    local ok, err, en = orch.kill(e.pid, 0, e.start_time)
    if not ok then return nil, err, en end
    ok, err, en = orch.killpg(e.pid, sig)
    -- orch's own group is refused: then the process alone.
    if ok or en ~= "EPERM" then return ok, err, en end
  end
  return orch.kill(e.pid, sig, e.start_time)
end

-- Waits until the process is gone or `seconds` passed; true if it is gone.
-- A pidfd says when it exits (orch.proc.wait_exit); without one, the first
-- looks come quickly (most processes die at once on SIGTERM), then every
-- POLL seconds.
local function wait_gone(e, seconds)
  local deadline = orch.now() + seconds
  local ok, _, ename = orch.proc.wait_exit(e.pid, e.start_time, seconds)
  if ok then return true end
  if ename == "ETIMEDOUT" then return not hb.alive(e.pid, e.start_time) end
  local step = 0.002
  while hb.alive(e.pid, e.start_time) do
    local left = deadline - orch.now()
    if left <= 0 then return false end
    orch.sleep(left < step and left or step)
    step = math.min(step * 2, POLL)
  end
  return true
end

function Watchdog:_refuse(e, reason, late)
  e.state = "refused"
  if not e.refused then
    e.refused = true
    local ev = ev_of(e, "refused")
    ev.reason, ev.late = reason, late
    self:_event(ev, ("%s missed its deadline: not signalled (%s)"):format(who(e), reason))
  end
  self:_arm(e, orch.now() + recheck_delay(e))
end

-- Decides whether a timed-out registration may be signalled.
function Watchdog:_judge(e, late)
  if e.pid == 1 then return self:_refuse(e, "pid 1 is never signalled", late) end
  if e.pid == self.pid then return self:_refuse(e, "that is orch itself", late) end
  local how = self:_identify(e)
  if how ~= "ok" then return self:_release_dead(e, how) end
  if not e.start_time then
    return self:_refuse(e, "the slot records no start time: its identity cannot be checked", late)
  end
  local pi = orch.proc.info(e.pid)
  if not pi then return self:_release_dead(e, "gone") end
  if pi.start_time ~= e.start_time then return self:_release_dead(e, "reused") end
  if not self:_allowed(pi.uid) then
    return self:_refuse(e, ("uid %d is not allowed"):format(pi.uid), late)
  end
  e.state = "handling"
  e.group = pi.pgid == e.pid
  self.handling = self.handling + 1
  local task = orch.task(self._handle, self, e, late)
  self.tasks[task] = true
  e.task = task
end

-- The stop sequence of one timed-out process, in its own task.
function Watchdog:_handle(e, late)
  local ok, res = pcall(function()
    self.timeouts = self.timeouts + 1
    local ev = ev_of(e, "timeout")
    ev.late, ev.age = late, e.timeout + late
    self:_event(ev, ("%s timed out: no heartbeat for %s (timeout %s)"):format(who(e),
      ("%.3f s"):format(e.timeout + late), fmt_s(e.timeout)))
    local result = { pid = e.pid, name = e.name, index = e.index, timeout = e.timeout,
                     late = late, group = e.group, signal = "TERM", exited = false }
    local target = e.group and ("process group " .. e.pid) or ("pid " .. e.pid)
    if self.stopped then return end
    local sent, err, en = self:_send(e, "TERM", e.group)
    if not sent then
      if en == "ESRCH" then return self:_release_dead(e, self:_identify(e) == "reused" and "reused" or "gone") end
      e.state = "watching"
      return self:_refuse(e, "SIGTERM failed: " .. tostring(err), late)
    end
    local t0 = orch.now()
    result.late = t0 - e.deadline
    self.signals = self.signals + 1
    local sev = ev_of(e, "signal")
    sev.signal, sev.group, sev.late = "TERM", e.group, result.late
    self:_event(sev, ("%s: SIGTERM to %s"):format(who(e), target))
    local gone = wait_gone(e, self.grace)
    if self.stopped then return end
    if not gone then
      sent, err = self:_send(e, "KILL", e.group)
      if sent then
        self.signals = self.signals + 1
        result.signal = "KILL"
        local kev = ev_of(e, "signal")
        kev.signal, kev.group = "KILL", e.group
        self:_event(kev, ("%s still alive %s after SIGTERM: SIGKILL to %s"):format(who(e),
          fmt_s(self.grace), target))
        gone = wait_gone(e, 1)
        if self.stopped then return end
      else
        gone = not hb.alive(e.pid, e.start_time)
      end
    end
    result.exited = gone
    result.after = orch.now() - t0
    self:_drop(e)
    self:_clear(e)
    local xev = ev_of(e, gone and "exited" or "stuck")
    xev.after, xev.signal = result.after, result.signal
    if gone then
      self:_event(xev, ("%s exited %.3f s after SIGTERM; slot %d cleared"):format(who(e), result.after, e.index))
    else
      self:_event(xev, ("%s still alive after SIGKILL (uninterruptible?); slot %d cleared"):format(who(e), e.index))
    end
    if self.on_timeout then
      local hok, herr = pcall(self.on_timeout, result)
      if not hok then pcall(self.log, "on_timeout hook failed: " .. tostring(herr)) end
    end
  end)
  self.handling = self.handling - 1
  self.tasks[orch.current()] = nil
  if not ok then pcall(self.log, "internal error handling " .. who(e) .. ": " .. tostring(res)) end
end

-- ---------------------------------------------------------------- the loop

-- Re-reads a slot whose deadline came.
function Watchdog:_check(e, now)
  local info, _, en = self.t:read(e.index)
  if not info then
    if en == "EAGAIN" then return self:_arm(e, now + 0.005) end
    self:_drop(e)
    return self:_event(ev_of(e, "released"), ("%s released slot %d"):format(who(e), e.index))
  end
  if not same_registration(e, info) then
    self:_drop(e)
    return self:_add(info)
  end
  local deadline = deadline_of(info)
  if deadline > now then
    -- It beat (or this is an early read of a coalesced batch).
    return self:_update(e, info)
  end
  e.name, e.timeout = clean(info.name), info.timeout
  if e.state == "refused" then return self:_arm(e, now + recheck_delay(e)) end
  e.deadline = deadline
  return self:_judge(e, now - deadline)
end

function Watchdog:_due(now)
  local h = self.heap
  local batch = {}
  local horizon = now + COALESCE
  while h[1] and h[1].deadline <= horizon do
    local node = heap_pop(h)
    local e = node.e
    if e.seq == node.seq and not e.dropped and e.state ~= "handling" then
      e.armed = nil
      batch[#batch + 1] = e
    end
  end
  for _, e in ipairs(batch) do
    if not e.dropped then self:_check(e, now) end
  end
end

function Watchdog:_open()
  local t, err, en = hb.open { key = self.key, compat = self.compat or nil, create = self.create or nil,
                               shared = self.shared or nil, mode = self.shared and 438 --[[0666]] or nil }
  if t then
    self.t, self.owns_table, self.key = t, true, t:key()
    self.changes = nil
    self:_event({ event = "open", key = t:key() }, ("watching heartbeat table 0x%x%s (%d slots)"):format(
      t:key(), t:is_compat() and " (classic layout)" or "", t:count()))
    return true
  end
  if en == "EPERM" or en == "EACCES" then
    -- A table someone else could have forged: never watched (doc/security.md).
    if err ~= self.refused_logged then
      self.refused_logged = err
      self:_event({ event = "untrusted", key = self.key, reason = err }, err)
    end
    return nil, err, en
  end
  if en ~= "ENOENT" then return nil, err, en end
  if not self.waiting_logged then
    self.waiting_logged = true
    self:_event({ event = "waiting", key = self.key }, "no heartbeat table yet: waiting for one to appear")
  end
  return false
end

function Watchdog:_loop()
  local next_sweep = orch.now() + SWEEP
  while not self.stopped do
    local now = orch.now()
    local ok, err = pcall(function()
      if not self.t then
        local opened, oerr = self:_open()
        if opened == nil and oerr ~= self.open_error and oerr ~= self.refused_logged then pcall(self.log, oerr) end
        self.open_error = oerr
        self.next_scan = now + (self.t and 0 or REOPEN)
        if not self.t then return end
        now = orch.now()
      end
      if now >= self.next_scan then
        self.next_scan = now + self.scan
        local ch = self.t:changes()
        if self.compat or ch ~= self.changes or now >= next_sweep then
          self.changes = ch
          self:_rescan()
        end
        if now >= next_sweep then
          next_sweep = now + SWEEP
          self:_sweep()
        end
      end
      self:_due(orch.now())
    end)
    if not ok then pcall(self.log, "internal error: " .. tostring(err)) end
    if self.stopped then break end
    local wake = self.next_scan
    if self.heap[1] and self.heap[1].deadline < wake then wake = self.heap[1].deadline end
    local d = wake - orch.now()
    if d > 0 then
      self.waiting = wake
      self.wake:wait(d)
      self.waiting = nil
    else
      orch.sleep(0)
    end
  end
  self:_close_table()
end

-- ---------------------------------------------------------------- API

-- The watchdogs of this process that run (watchdog.list, /metrics).
local running = setmetatable({}, { __mode = "k" })
local nrunning = 0

--- watchdog.list() -> the running watchdogs of this process, oldest first.
function M.list()
  local out = {}
  for wd in pairs(running) do
    if not wd.stopped then out[#out + 1] = wd end
  end
  table.sort(out, function(a, b) return running[a] < running[b] end)
  return out
end

--- watchdog.start(opts) -> orch.Watchdog, or nil, message, ename
function M.start(opts)
  check_options(opts)
  local log, file, ename = make_logger(opts.log)
  if not log then
    return nil, "watchdog: cannot open the log: " .. tostring(file), ename
  end
  local self = setmetatable({
    key = opts.key, compat = opts.compat or false, create = opts.create or false, shared = opts.shared or false,
    grace = opts.grace or 5, scan = opts.scan or 0.25, log = log, log_file = file ~= io.stderr and file or nil,
    on_timeout = opts.on_timeout, on_event = opts.on_event, any_uid = opts.any_uid or false,
    uids = {}, entries = {}, heap = {}, tasks = {}, wake = orch.cond(), stopped = false,
    pid = orch.getpid(), timeouts = 0, signals = 0, handling = 0, next_scan = 0,
    btime = boot_time(),
  }, Watchdog)
  if opts.uids then
    for _, u in ipairs(opts.uids) do self.uids[u] = true end
  elseif not self.any_uid then
    local me = orch.proc.info(self.pid)
    self.uids[me and me.uid or 0] = true
  end
  if opts.table then
    self.t = opts.table
    self.compat, self.key = self.t:is_compat(), self.t:key()
  else
    local ok, err, en = self:_open()
    if ok == nil then
      if self.log_file then self.log_file:close() end
      return nil, err, en
    end
  end
  nrunning = nrunning + 1
  running[self] = nrunning
  self.task = orch.task(self._loop, self)
  return self
end

--- wd:stop(): stops watching. Processes in their grace period are left as
-- they are (no SIGKILL follows). Idempotent; returns true the first time.
function Watchdog:stop()
  if self.stopped then return false end
  self.stopped = true
  local cur = orch.current()
  for task in pairs(self.tasks) do
    if task ~= cur then task:cancel() end
  end
  self.tasks = {}
  self.wake:broadcast()
  if self.task and self.task ~= cur then
    self.task:cancel()
    self:_close_table()
  end
  -- Called from the loop itself (a hook): the loop closes the table on its way out.
  return true
end

function Watchdog:_close_table()
  if self.owns_table and self.t then self.t:close() end
  self.owns_table = false
  if self.log_file then self.log_file:close(); self.log_file = nil end
end

Watchdog.__close = Watchdog.stop

--- wd:status() -> table
function Watchdog:status()
  local now = orch.now()
  local list, next_deadline = {}, nil
  for _, e in pairs(self.entries) do
    local left = e.deadline and e.deadline ~= math.huge and e.deadline - now or nil
    list[#list + 1] = { index = e.index, pid = e.pid, name = e.name, timeout = e.timeout,
                        state = e.state, deadline = left }
    if left and e.state == "watching" and (not next_deadline or left < next_deadline) then next_deadline = left end
  end
  table.sort(list, function(a, b) return a.index < b.index end)
  return {
    running = not self.stopped, key = self.key, compat = self.compat,
    watching = #list, handling = self.handling, timeouts = self.timeouts, signals = self.signals,
    next_deadline = next_deadline, entries = list,
  }
end

--- wd:wait(): waits (in a task) until the watchdog is stopped.
function Watchdog:wait()
  if self.stopped then return true end
  self.task:join()
  return true
end

function Watchdog:__tostring()
  return ("orch.Watchdog: key=0x%x%s %d watched%s"):format(self.key or 0,
    self.compat and " compat" or "", (function() local n = 0 for _ in pairs(self.entries) do n = n + 1 end return n end)(),
    self.stopped and " stopped" or "")
end

M.Watchdog = Watchdog
return M
