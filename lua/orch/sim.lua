--- orch.sim: simulation testing of policies (doc/testing.md).
--
-- A world is a simulated process table on the virtual clock (orch.clock):
-- a command names a program, a list of behaviour steps (`sim.after(2,
-- sim.exit(1))`, `sim.ignore("TERM")`, `sim.ready_after(4)`, ...) run by a
-- task standing in for the process. While a world is installed, the process
-- table functions of the `orch` module (orch.spawn, orch.kill, orch.killpg,
-- orch.proc.info, orch.proc.start_time, orch.proc.children, orch.proc.list,
-- orch.proc.is_child, orch.proc.wait_exit, orch.heartbeat.open, and
-- orch.dgram for the supervisor's notify sockets) are the world's: the
-- supervisor, the scheduler and the watchdog look them up at each call, so
-- the code under test is the code that runs in production, unchanged.
-- Simulated pids start at 10,000,000, above any Linux pid_max: a simulated
-- pid never names a real process, and a real pid is never signalled from a
-- simulation.
--
-- Faults are drawn from a seeded generator (the world's own, apart from
-- math.random, which the world also seeds: backoff jitter is then
-- reproducible too); every event goes to the world's trace (virtual time,
-- text), and invariants are checked after every event. The same seed gives
-- the same trace, byte for byte.
local orch = require "orch"

local sim = {}

--- Worlds closed so far in this process, and the virtual seconds they
-- covered (orch test prints them).
sim.stats = { worlds = 0, virtual = 0 }

local PID_BASE = 10000000

-- ---------------------------------------------------------------- random

-- splitmix64: a small, fast generator whose sequence depends on the seed
-- only (Lua integers wrap around).
local function rng_new(seed)
  local s = seed
  return function()
    s = s + 0x9E3779B97F4A7C15
    local z = s
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    z = z ~ (z >> 31)
    return ((z >> 11) & 0x1FFFFFFFFFFFFF) / 9007199254740992.0
  end
end

-- ---------------------------------------------------------------- faults

--- The fault kinds and what their number means.
sim.FAULTS = {
  kill = "rate per virtual second per process of a KILL",
  term = "rate per virtual second per process of a stray TERM",
  spawn_fail = "probability that a spawn fails (EAGAIN)",
  slow_ready = "probability that a readiness notification comes up to 30 s late",
  late_beat = "probability that a heartbeat is lost",
}

--- "kill:0.01,spawn_fail:0.05" (or a table) -> { kill = 0.01, ... }.
-- Raises on an unknown kind or a bad number.
function sim.parse_faults(spec)
  if spec == nil or spec == "" then return {} end
  if type(spec) == "table" then
    local t = {}
    for k, v in pairs(spec) do
      if not sim.FAULTS[k] then error("faults: unknown fault '" .. tostring(k) .. "'", 2) end
      if type(v) ~= "number" or not (v >= 0 and v <= 1) then error("faults: " .. k .. ": number from 0 to 1 expected", 2) end
      t[k] = v
    end
    return t
  end
  if type(spec) ~= "string" then error("faults: string or table expected", 2) end
  local t = {}
  for item in spec:gmatch("[^,]+") do
    local k, v = item:match("^%s*([%w_]+)%s*:%s*([%d.eE+-]+)%s*$")
    local n = tonumber(v)
    if not k then error("faults: bad item '" .. item .. "' (KIND:NUMBER expected)", 2) end
    if not sim.FAULTS[k] then error("faults: unknown fault '" .. k .. "'", 2) end
    if not n or not (n >= 0 and n <= 1) then error("faults: " .. k .. ": number from 0 to 1 expected", 2) end
    t[k] = n
  end
  return t
end

-- ---------------------------------------------------------------- behaviours

-- A step is a function(p) run in the process's task; a program is a list
-- of steps, run in order; after the last one the process runs on until it
-- is signalled.

--- Waits `s` virtual seconds, then runs `step` (if any).
function sim.after(s, step)
  return function(p)
    p:sleep(s)
    if step then return step(p) end
  end
end
sim.sleep = function(s) return sim.after(s) end

--- Exits with `code` (default 0).
function sim.exit(code) return function(p) return p:exit(code or 0) end end

--- Dies of signal `sig` (default "SEGV").
function sim.crash(sig) return function(p) return p:die(nil, orch.signal.name(sig or "SEGV") or "SEGV") end end

--- Ignores the signals named.
function sim.ignore(...)
  local sigs = { ... }
  return function(p)
    p.ignored = p.ignored or {}
    for _, s in ipairs(sigs) do p.ignored[orch.signal.name(s) or s] = true end
  end
end

--- Runs `step` (in a task of its own) when `sig` arrives, instead of dying.
function sim.on_signal(sig, step)
  return function(p)
    p.handlers = p.handlers or {}
    p.handlers[orch.signal.name(sig) or sig] = step
  end
end

--- Tells the supervisor it is ready (sd_notify READY=1).
function sim.ready() return function(p) p:ready() end end
function sim.ready_after(s) return function(p) p:sleep(s); p:ready() end end

--- Beats every `s` seconds (heartbeat slot, or sd_notify WATCHDOG=1) until
-- stall() or the end.
function sim.beat_every(s) return function(p) p:beat_every(s) end end

--- Registers in the heartbeat table (the default key, or `key`) with
-- `timeout`, as a program using the heartbeat library does; beat_every
-- then beats that slot.
function sim.register(name, timeout, key)
  return function(p)
    local t = p.world:heartbeat_open { key = key }
    p.hb_slot = t:register(name, timeout, p.pid)
    p.world:event("register", p, string.format("slot %d, timeout %gs", p.hb_slot.index, timeout))
  end
end
function sim.stall() return function(p) p:stall() end end

--- Writes lines to stdout.
function sim.write_log(...)
  local lines = { ... }
  return function(p) for _, l in ipairs(lines) do p:write(l .. "\n") end end
end

--- Starts a child process (same process group, same stdout) running the
-- program `steps`.
function sim.fork_child(steps) return function(p) p:fork(steps) end end

--- Repeats `steps` forever.
function sim.loop(steps)
  return function(p)
    while true do
      for _, st in ipairs(steps) do st(p) end
      p:sleep(0)
    end
  end
end

--- A program whose spawn fails with `ename` ("ENOENT", "EACCES", ...).
function sim.spawn_fails(ename) return { spawn_fails = ename or "ENOENT" } end

-- ---------------------------------------------------------------- processes

local Proc = {}
Proc.__index = Proc
Proc.__name = "orch.SimProcess"

local Stream = {}
Stream.__index = Stream
Stream.__name = "orch.SimStream"

local function stream_new()
  return setmetatable({ holders = 0, buf = {} }, Stream)
end

--- stream:on_read(fn [, arg]): fn(chunk) for each chunk, fn(nil) at EOF
-- (fn(arg, chunk), fn(arg, nil) with an argument).
function Stream:on_read(fn, arg)
  if arg ~= nil then
    local f = fn
    fn = function(chunk) return f(arg, chunk) end
  end
  self.cb = fn
  local buf = self.buf
  self.buf = {}
  for _, c in ipairs(buf) do fn(c) end
  if self.eof and not self.eof_sent then
    self.eof_sent = true
    fn(nil)
  end
  return true
end

--- stream:read(): the next chunk (task), nil at EOF.
function Stream:read()
  while #self.buf == 0 and not self.eof do
    self.cond = self.cond or orch.cond()
    self.cond:wait()
  end
  if #self.buf > 0 then return table.remove(self.buf, 1) end
  return nil
end

function Stream:push(chunk)
  if self.closed then return end
  if self.cb then self.cb(chunk) else self.buf[#self.buf + 1] = chunk end
  if self.cond then self.cond:broadcast() end
end

function Stream:release()
  self.holders = self.holders - 1
  if self.holders > 0 or self.eof then return end
  self.eof = true
  if self.cb and not self.closed then
    self.eof_sent = true
    self.cb(nil)
  end
  if self.cond then self.cond:broadcast() end
end

function Stream:close() self.closed = true; self.cb = nil; return true end

-- A unix datagram socket of the world: the supervisor's notify sockets
-- (its runtime directory is sim.RUNTIME_DIR, which holds no real file) with
-- the face of an orch.Dgram it uses: recv, close. No file, no descriptor:
-- a simulated process sends to it by path (Proc:notify).
local Dgram = {}
Dgram.__index = Dgram
Dgram.__name = "orch.SimDgram"

--- dgram:recv(): the next datagram, nil (the sender has no address) and
-- its credentials { pid, uid, gid } (task); nil, "recv: socket closed",
-- "ECANCELED" once closed.
function Dgram:recv()
  while not self.closed and self.head > self.tail do self.cond:wait() end
  if self.closed then return nil, "recv: socket closed", "ECANCELED" end
  local h = self.head
  local msg, pid = self.msgs[2 * h - 1], self.msgs[2 * h]
  self.msgs[2 * h - 1], self.msgs[2 * h] = nil, nil
  self.head = h + 1
  return msg, nil, { pid = pid, uid = 0, gid = 0 }
end

function Dgram:deliver(msg, pid)
  if self.closed then return false end
  local t = self.tail + 1
  self.tail = t
  self.msgs[2 * t - 1], self.msgs[2 * t] = msg, pid
  self.cond:signal()
  return true
end

function Dgram:address() return self.path end

function Dgram:close()
  if self.closed then return true end
  self.closed = true
  if self.world.dgrams[self.path] == self then self.world.dgrams[self.path] = nil end
  self.cond:broadcast()
  return true
end

local World = {}
World.__index = World

-- A process is one table; what only some have (ignored signals, handlers,
-- exit handlers, tasks besides its main one, fault timers, a condition its
-- waiters wait on) comes with the first use.
local function proc_new(W, fields)
  local p = setmetatable(fields, Proc)
  p.world = W
  p.state = "alive"
  W.procs[p.pid] = p
  W.nlive = W.nlive + 1
  return p
end

function Proc:sleep(s)
  orch.sleep(s)
end

function Proc:alive() return self.state == "alive" end

function Proc:write(text)
  if self.state ~= "alive" then return end
  self.world:event("log", self, text:gsub("\n$", ""))
  if self.stdout then self.stdout:push(text) end
end

-- The instance this process was spawned for (its environment says which),
-- when its current run is this process.
function Proc:instance()
  local W, env = self.world, self.env or {}
  local svc, idx = env.ORCH_SERVICE, env.ORCH_INSTANCE
  if not (svc and W.sup) then return nil end
  local inst = W.sup.instance(svc) or W.sup.instance(svc .. ":" .. tostring(idx))
  if inst and inst.run and (inst.run.pid == self.pid or inst.run.main_pid == self.pid) then return inst end
  return nil
end

-- An sd_notify message ("READY=1") to the socket NOTIFY_SOCKET names: one
-- of the world's (the supervisor reads it as from a real one, the sender's
-- pid in its credentials), or else handed to the instance as a real socket
-- would pass it on (only the run's own process is heard).
function Proc:notify(msg)
  local path = self.env and self.env.NOTIFY_SOCKET
  if not path then return false end
  local sock = self.world.dgrams[path]
  if sock then return sock:deliver(msg, self.pid) end
  local inst = self:instance()
  if not inst then return false end
  inst:notify_message(inst.run, require("orch.supervisor.ready").parse(msg))
  return true
end

function Proc:ready()
  local W = self.world
  if self.state ~= "alive" then return end
  local slow = W.faults.slow_ready
  if slow and W.rng() < slow then
    local d = math.floor(W.rng() * 30000) / 1000
    W:event("fault", self, string.format("slow_ready: %.3fs late", d))
    self:sleep(d)
    if self.state ~= "alive" then return end
  end
  W:event("ready", self)
  self:notify("READY=1")
end

function Proc:beat()
  local W = self.world
  if self.state ~= "alive" then return end
  local lost = W.faults.late_beat
  if lost and W.rng() < lost then
    W:event("fault", self, "late_beat: a heartbeat is lost")
    return
  end
  local env = self.env or {}
  local slot = self.hb_slot
  if not slot and env.ORCH_HEARTBEAT_SLOT then
    local t = W.hb_tables[math.tointeger(tonumber(env.ORCH_HEARTBEAT_KEY))]
    slot = t and t.slots_by_index[math.tointeger(tonumber(env.ORCH_HEARTBEAT_SLOT))]
  end
  if slot and slot.pid == self.pid then slot.last_beat = orch.now() end
  if not slot then self:notify("WATCHDOG=1") end
  W:event("beat", self)
end

function Proc:beat_every(s)
  self:stall()
  self.beater = self:task(function()
    while true do
      self:beat()
      orch.sleep(s)
    end
  end)
end

function Proc:stall()
  if self.beater then
    self.world:event("stall", self)
    if self.beater ~= orch.current() then self.beater:cancel() end
    self.beater = nil
  end
end

-- A task of this process (ends with it).
function Proc:task(fn, ...)
  local t = orch.task(fn, ...)
  local tasks = self.tasks or {}
  self.tasks = tasks
  tasks[#tasks + 1] = t
  return t
end

-- Waits (task) until the process is reaped or `left` seconds passed.
function Proc:wait_reaped(left)
  self.exited = self.exited or orch.cond()
  return self.exited:wait(left)
end

function Proc:fork(steps)
  local W = self.world
  if self.state ~= "alive" then return end
  local c = W:new_proc {
    cmd = self.cmd, args = self.args, env = self.env, ppid = self.pid, pgid = self.pgid,
    stdout = self.stdout,
  }
  W:event("fork", c, "child of " .. self.pid)
  c:start(steps)
  return c
end

function Proc:start(steps)
  if self.stdout then self.stdout.holders = self.stdout.holders + 1 end
  self.main_task = self:task(function()
    for _, st in ipairs(steps) do
      st(self)
      if self.state ~= "alive" then return end
    end
  end)
end

function Proc:exit(code) return self:die(code, nil) end

--- Ends the process (exit code or signal name). Its exit reaches whoever
-- waits (on_exit, wait) in a task, as a reaped child's would.
function Proc:die(code, sig)
  if self.state ~= "alive" then return end
  local W = self.world
  self.state = "zombie"
  self.code, self.sig = code, sig
  W.nlive = W.nlive - 1
  W:event("exit", self, code and ("code " .. code) or ("signal " .. tostring(sig)))
  if self.timers then for _, t in ipairs(self.timers) do t:stop() end end
  W.inflight = W.inflight + 1
  orch.task(function()
    if self.stdout then self.stdout:release() end
    self.state = "reaped"
    W.procs[self.pid] = nil
    W:event("reaped", self)
    if self.on_exits then for _, fn in ipairs(self.on_exits) do W:task(fn, code, sig) end end
    if self.exited then self.exited:broadcast() end
    W.inflight = W.inflight - 1
  end)
  local me = orch.current()
  local self_task
  for _, t in ipairs(self.tasks or {}) do
    if t == me then self_task = t else t:cancel() end
  end
  if self_task then self_task:cancel() end
end

function Proc:signal(sig, why)
  local W = self.world
  if self.state ~= "alive" or sig == 0 then return end
  W:event("signal", self, sig .. (why and (" (" .. why .. ")") or ""))
  local h = self.handlers and self.handlers[sig]
  if h and sig ~= "KILL" and sig ~= "STOP" then
    self:task(h, self)
    return
  end
  if sig ~= "KILL" and sig ~= "STOP" and self.ignored and self.ignored[sig] then
    W:event("ignored", self, sig)
    return
  end
  if sig == "CHLD" or sig == "CONT" or sig == "WINCH" or sig == "URG" or sig == "STOP" then return end
  self:die(nil, sig)
end

-- The orch.Process face of a simulated process.
function Proc:on_exit(fn)
  if self.state == "reaped" then self.world:task(fn, self.code, self.sig)
  else
    local list = self.on_exits or {}
    self.on_exits = list
    list[#list + 1] = fn
  end
  return self
end

function Proc:kill(sig, opts)
  sig = sig or "TERM"
  local name = sig == 0 and 0 or orch.signal.name(sig)
  if not name then error("bad argument #1 to 'kill' (unknown signal '" .. tostring(sig) .. "')", 2) end
  if self.state == "reaped" then return nil, "kill: process " .. self.pid .. " has exited", "ESRCH" end
  if opts and opts.group then
    if self.pgid ~= self.pid then
      return nil, "kill: process " .. self.pid .. " does not lead a process group", "EINVAL"
    end
    return self.world:killpg(self.pid, name)
  end
  self:signal(name, "kill")
  return true
end

function Proc:wait(timeout)
  if self.state ~= "reaped" then
    local deadline = timeout and orch.now() + timeout
    while self.state ~= "reaped" do
      local left = deadline and deadline - orch.now()
      if left and left <= 0 then return nil, "wait: timed out", "ETIMEDOUT" end
      self:wait_reaped(left)
    end
  end
  return self.code, self.sig
end

function Proc:running() return self.state == "alive" end

function Proc:status()
  return self.state == "alive" and "running" or "exited"
end

function Proc:__tostring()
  return string.format("orch.SimProcess: pid=%d %s", self.pid, self:status())
end

-- ---------------------------------------------------------------- the world

-- A task whose end World:close waits for (exit handlers).
function World:task(fn, ...)
  self.inflight = self.inflight + 1
  return orch.task(function(...)
    local ok, err = pcall(fn, ...)
    self.inflight = self.inflight - 1
    if not ok then error(err, 0) end
  end, ...)
end

function World:new_proc(fields)
  self.next_pid = self.next_pid + 1
  fields.pid = self.next_pid
  self.nspawn = self.nspawn + 1
  fields.start_time = self.nspawn
  return proc_new(self, fields)
end

local function proc_name(p)
  if p.label then return p.label end
  local env = p.env or {}
  local svc = env.ORCH_SERVICE
  if svc then
    local inst = p.world.sup and (p.world.sup.instance(svc) and svc or (svc .. ":" .. tostring(env.ORCH_INSTANCE)))
    p.label = (inst or svc) .. "[" .. p.pid .. "]"
  else
    p.label = tostring(p.cmd) .. "[" .. p.pid .. "]"
  end
  return p.label
end

-- The text of an event of the supervisor's (sup.events): its kind, then
-- its fields in a fixed order ("exited pid 10000004 signal KILL after
-- 8.712s").
local function sup_event_text(ev)
  local out = { ev.event }
  if ev.pid then out[#out + 1] = "pid " .. ev.pid end
  if ev.code then out[#out + 1] = "code " .. ev.code end
  if ev.signal then out[#out + 1] = "signal " .. ev.signal end
  if ev.runtime then out[#out + 1] = string.format("after %.3fs", ev.runtime) end
  if ev.delay then out[#out + 1] = string.format("in %.3fs", ev.delay) end
  for _, k in ipairs { "kept", "restarted", "stopped", "added" } do
    if ev[k] and #ev[k] > 0 then out[#out + 1] = k .. " " .. table.concat(ev[k], ",") end
  end
  if ev.reason then out[#out + 1] = "(" .. ev.reason .. ")" end
  return table.concat(out, " ")
end

-- The trace is kept as records, four slots per event in one flat list
-- (virtual time, kind, who or false, text or false), and formatted only
-- when read (world.trace[i], world:text(), echo): a seeded run that passes
-- never formats its lines. A record of kind false is a finished line; a
-- text that is a table is an event of the supervisor's.
local function trace_line(rec, i)
  local b = 4 * i
  local kind, who, text = rec[b - 2], rec[b - 1] or nil, rec[b] or nil
  if kind == false then return text end
  if type(text) == "table" then text = sup_event_text(text) end
  return string.format("%12.3f %-8s %s%s", rec[b - 3], kind, who or "",
    text and ((who and " " or "") .. text) or "")
end

local trace_mt = {
  __index = function(t, i)
    local W = rawget(t, 0)
    if math.type(i) ~= "integer" or i < 1 or i > W.ntrace then return nil end
    return trace_line(W.records, i)
  end,
  __len = function(t) return rawget(t, 0).ntrace end,
  __newindex = function() error("world.trace is read-only", 2) end,
}

-- Appends a record; returns its index.
local function trace_add(W, t, kind, who, text)
  local n = W.ntrace + 1
  W.ntrace = n
  local rec, b = W.records, 4 * n
  rec[b - 3], rec[b - 2], rec[b - 1], rec[b] = t, kind, who or false, text or false
  if W.echo then W.echo(trace_line(rec, n)) end
  return n
end

--- Adds a line to the trace and checks the invariants. kind: spawn, exit,
-- reaped, signal, ignored, ready, beat, stall, log, fork, fault,
-- spawn_failed, sup (a supervisor log line), event (one of sup.events,
-- whose table is `text`), note.
function World:event(kind, p, text)
  local who = type(p) == "table" and proc_name(p) or p
  local now = orch.now()
  trace_add(self, now - self.t0, kind, who, text)
  if self.violation then return end
  -- The invariants that name this kind (or every kind), in the order they
  -- were added: most events (log lines, state changes) concern none.
  local list = self.inv_by_kind[kind]
  if not list then
    list = {}
    for _, inv in ipairs(self.invariants) do
      if not inv.on or inv.on[kind] then list[#list + 1] = inv end
    end
    self.inv_by_kind[kind] = list
  end
  if list[1] == nil then return end
  local ev = { kind = kind, proc = type(p) == "table" and p or nil, text = text, time = now }
  if type(text) == "table" then ev.event, ev.text = text, sup_event_text(text) end
  for _, inv in ipairs(list) do
    local ok, res, msg = pcall(inv.fn, self, ev)
    if not ok or res == false then
      self.violation = string.format("invariant '%s' broken at %.3f: %s", inv.name,
        orch.now() - self.t0, tostring(ok and (msg or "false") or res))
      trace_add(self, 0, false, false, "             VIOLATED " .. self.violation)
      return
    end
  end
end

function World:note(text) self:event("note", nil, text) end

--- world:program(name, steps): the behaviour of command `name`.
function World:program(name, steps)
  if type(name) ~= "string" then error("bad argument #1 to 'program' (string expected)", 2) end
  if type(steps) ~= "table" then error("bad argument #2 to 'program' (list of steps expected)", 2) end
  for i, st in ipairs(steps) do
    if type(st) ~= "function" then error("bad argument #2 to 'program' (step " .. i .. " is not a function)", 2) end
  end
  self.programs[name] = steps
  return name
end

--- world:service(def): a supervisor service whose command is a program:
-- def.program (a list of steps) becomes the program "sim:<name>".
function World:service(def)
  if type(def) ~= "table" then error("bad argument #1 to 'service' (table expected)", 2) end
  local d = {}
  for k, v in pairs(def) do d[k] = v end
  local steps = d.program
  d.program = nil
  if steps then
    local name = "sim:" .. tostring(d.name)
    if steps.spawn_fails then self.programs[name] = steps else self:program(name, steps) end
    d.cmd = d.cmd or { name }
  end
  return self.sup.service(d)
end

--- world:invariant(name, fn [, kinds]): fn(world, event) is called after
-- every event (of the kinds listed, when given); false (and a message)
-- breaks the run.
local function invariant_record(name, fn, kinds)
  local on
  if kinds then
    on = {}
    for _, k in ipairs(kinds) do on[k] = true end
  end
  return { name = name, fn = fn, on = on }
end

function World:invariant(name, fn, kinds)
  -- (A copy: the list may be shared with other worlds.)
  local list = table.move(self.invariants, 1, #self.invariants, 1, {})
  list[#list + 1] = invariant_record(name, fn, kinds)
  self.invariants = list
  self.inv_by_kind = {}
end

-- The invariants option of sim.world as records, and their index by kind:
-- made once for a list that many worlds are given (sim.explore), and made
-- again when the list or one of its entries is no longer the same.
local compiled_invariants = setmetatable({}, { __mode = "k" })

local function compile_invariants(list)
  local c = compiled_invariants[list]
  if c and #c.src == #list then
    local same = true
    for i, inv in ipairs(list) do
      local s = c.src[i]
      if s[1] ~= inv or s[2] ~= inv.name or s[3] ~= inv.fn or s[4] ~= inv.kinds then same = false break end
    end
    if same then return c end
  end
  c = { src = {}, invariants = {}, by_kind = {} }
  for i, inv in ipairs(list) do
    if type(inv) ~= "table" or type(inv.fn) ~= "function" then
      error("bad argument #1 to 'world' (option 'invariants': list of { name = ..., fn = ... } expected)", 3)
    end
    c.src[i] = { inv, inv.name, inv.fn, inv.kinds }
    c.invariants[i] = invariant_record(inv.name or "?", inv.fn, inv.kinds)
  end
  compiled_invariants[list] = c
  return c
end

--- Raises when an invariant broke (with the seed and the trace).
function World:check()
  if self.violation then error(self:report(self.violation), 2) end
  return true
end

function World:text()
  local rec, out = self.records, {}
  for i = 1, self.ntrace do out[i] = trace_line(rec, i) end
  return table.concat(out, "\n") .. "\n"
end

function World:report(msg)
  return string.format("%s\nsim: seed %d\n%s", tostring(msg), self.seed, self:text())
end

-- The process table functions a world stands in for.
function World:spawn(opts)
  if type(opts) ~= "table" or type(opts[1]) ~= "string" then
    error("bad argument #1 to 'spawn' (command table expected)", 2)
  end
  local name = opts[1]
  local prog = self.programs[name]
  if not prog then
    self:event("spawn_failed", nil, name .. ": ENOENT")
    return nil, "spawn: " .. name .. ": no such file or directory", "ENOENT"
  end
  if prog.spawn_fails then
    self:event("spawn_failed", nil, name .. ": " .. prog.spawn_fails)
    return nil, "spawn: " .. name .. ": " .. prog.spawn_fails, prog.spawn_fails
  end
  local f = self.faults.spawn_fail
  if f and self.rng() < f then
    self:event("fault", nil, "spawn_fail: " .. name)
    return nil, "spawn: " .. name .. ": resource temporarily unavailable", "EAGAIN"
  end
  local args = {}
  for i = 1, #opts do args[i] = opts[i] end
  local env = {}
  for k, v in pairs(opts.env or {}) do if v then env[k] = v end end
  local p = self:new_proc { cmd = name, args = args, env = env, ppid = orch.getpid(), main = true }
  p.pgid = (opts.pgroup or opts.setsid) and p.pid or orch.getpid()
  if opts.stdout == "pipe" then p.stdout = stream_new() end
  self:event("spawn", p, table.concat(args, " "))
  self:schedule_faults(p)
  p:start(prog)
  return p
end

function World:schedule_faults(p)
  for _, kind in ipairs { "kill", "term" } do
    local rate = self.faults[kind]
    if rate and rate > 0 then
      local u = self.rng()
      local at = -math.log(1 - u) / rate
      p.timers = p.timers or {}
      p.timers[#p.timers + 1] = orch.timer.after(at, function()
        if p.state == "alive" then
          self:event("fault", p, kind)
          p:signal(kind == "kill" and "KILL" or "TERM", "fault")
        end
      end)
    end
  end
end

local function sim_pid(pid) return math.type(pid) == "integer" and pid > PID_BASE end

function World:kill(pid, sig, start)
  local p = self.procs[pid]
  if not p then
    if sim_pid(pid) then return nil, "kill: no such process", "ESRCH" end
    return nil, "kill: pid " .. tostring(pid) .. " is not a simulated process", "EPERM"
  end
  if start and start ~= p.start_time then return nil, "kill: pid " .. pid .. " is gone or was reused", "ESRCH" end
  local name = (sig == 0) and 0 or orch.signal.name(sig or "TERM")
  if not name then error("bad argument #2 to 'kill' (unknown signal '" .. tostring(sig) .. "')", 2) end
  p:signal(name, "kill")
  return true
end

function World:killpg(pgid, sig)
  local name = (sig == 0) and 0 or orch.signal.name(sig or "TERM")
  if not name then error("bad argument #2 to 'killpg' (unknown signal '" .. tostring(sig) .. "')", 2) end
  local hit = {}
  for pid, p in pairs(self.procs) do
    if p.pgid == pgid and p.state ~= "reaped" then hit[#hit + 1] = pid end
  end
  if #hit == 0 then
    if sim_pid(pgid) then return nil, "killpg: no such process", "ESRCH" end
    return nil, "killpg: " .. tostring(pgid) .. " is not a simulated process group", "EPERM"
  end
  table.sort(hit)
  for _, pid in ipairs(hit) do self.procs[pid]:signal(name, "killpg") end
  return true
end

function World:info(pid)
  local p = self.procs[pid]
  if not p then
    if sim_pid(pid) then return nil, "proc.info: no such process", "ESRCH" end
    return self.real.info(pid)
  end
  return {
    pid = p.pid, state = p.state == "alive" and "S" or "Z", ppid = p.ppid, pgid = p.pgid, sid = p.pgid,
    uid = 0, name = p.cmd, cmdline = p.args, start_time = p.start_time, rss = 1048576, cpu = 0,
    threads = 1, exit_code = p.state ~= "alive" and p.code or nil,
    exit_signal = p.state ~= "alive" and p.sig or nil,
  }
end

function World:start_time(pid)
  local p = self.procs[pid]
  if p then return p.start_time end
  if sim_pid(pid) then return nil, "proc.start_time: no such process", "ESRCH" end
  return self.real.start_time(pid)
end

-- orch.proc.is_child: a simulated process the world spawned for orch (not
-- one of their children) and not yet reaped.
function World:is_child(pid)
  local p = self.procs[pid]
  if not p then
    if sim_pid(pid) then return false end
    return self.real.is_child(pid)
  end
  return p.ppid == orch.getpid()
end

function World:children(pid)
  if not sim_pid(pid) and pid ~= orch.getpid() then return self.real.children(pid) end
  local out = {}
  for cpid, p in pairs(self.procs) do
    if p.ppid == pid and p.state ~= "reaped" then out[#out + 1] = cpid end
  end
  table.sort(out)
  return out
end

function World:list()
  local out = self.real.list() or {}
  local sims = {}
  for pid in pairs(self.procs) do sims[#sims + 1] = pid end
  table.sort(sims)
  for _, pid in ipairs(sims) do out[#out + 1] = pid end
  return out
end

--- The directory of the world's sockets: below /dev/null, so that no real
-- file can ever have such a path.
sim.RUNTIME_DIR = "/dev/null/orch-sim"

-- orch.dgram: a socket bound below sim.RUNTIME_DIR is the world's; any
-- other is a real one.
function World:dgram(opts)
  local path = type(opts) == "table" and opts.unix
  if type(path) ~= "string" or path:sub(1, #sim.RUNTIME_DIR + 1) ~= sim.RUNTIME_DIR .. "/" then
    return self.real.dgram(opts)
  end
  if self.dgrams[path] then return nil, "dgram: address already in use", "EADDRINUSE" end
  local d = setmetatable({ world = self, path = path, msgs = {}, head = 1, tail = 0, cond = orch.cond() }, Dgram)
  self.dgrams[path] = d
  return d
end

-- A heartbeat table in the world: slots whose last beat is virtual time,
-- with the face of an orch.Heartbeat table that the supervisor (reserve,
-- assign, info, unregister) and the watchdog (slots, read, clear, changes)
-- use. A simulated process registers with sim.register.
local HbTable = {}
HbTable.__index = HbTable
HbTable.__name = "orch.SimHeartbeat"
local HbSlot = {}
HbSlot.__index = HbSlot

function World:heartbeat_open(opts)
  local key = opts and opts.key or orch.heartbeat.DEFAULT_KEY
  local t = self.hb_tables[key]
  if not t then
    t = setmetatable({ world = self, k = key, slots_by_index = {}, nchanges = 0, next_index = 0 }, HbTable)
    self.hb_tables[key] = t
  end
  return t
end

function HbTable:changed() self.nchanges = self.nchanges + 1 end
function HbTable:key() return self.k end
function HbTable:is_compat() return false end
function HbTable:changes() return self.nchanges end
function HbTable:count()
  local n = 0
  for _ in pairs(self.slots_by_index) do n = n + 1 end
  return n
end
function HbTable:reserve(name, timeout)
  local s = setmetatable({ name = name, timeout = timeout, last_beat = orch.now(), table = self,
                           generation = 0, pid = 0 }, HbSlot)
  self.next_index = self.next_index + 1
  s.index = self.next_index
  self.slots_by_index[s.index] = s
  self:changed()
  return s
end
--- table:register(name, timeout [, pid]): a slot held by pid at once.
function HbTable:register(name, timeout, pid)
  local s = self:reserve(name, timeout)
  s:assign(pid)
  return s
end
function HbTable:find(pid)
  for _, s in pairs(self.slots_by_index) do
    if s.pid == pid then return s end
  end
  return nil, "heartbeat.find: no slot of pid " .. tostring(pid), "ENOENT"
end
function HbTable:read(i)
  local s = self.slots_by_index[i]
  if not s then return nil, "heartbeat.read: slot " .. tostring(i) .. " is free", "ENOENT" end
  return s:info()
end
function HbTable:slots()
  local idx = {}
  for i in pairs(self.slots_by_index) do idx[#idx + 1] = i end
  table.sort(idx)
  local out = {}
  for _, i in ipairs(idx) do out[#out + 1] = self.slots_by_index[i]:info() end
  return out
end
function HbTable:clear(o)
  local s = self.slots_by_index[o.index]
  if not s or (o.pid and s.pid ~= o.pid) or (o.generation and s.generation ~= o.generation) then
    return nil, "heartbeat.clear: slot " .. tostring(o.index) .. " changed", "ESTALE"
  end
  s:unregister()
  return true
end
function HbTable:remove() return true end
function HbTable:close() return true end

function HbSlot:assign(pid)
  local W = self.table.world
  local p = W.procs[pid]
  self.pid, self.generation = pid, self.generation + 1
  self.start_time = p and p.start_time or nil
  self.last_beat = orch.now()
  self.table:changed()
  return true
end
function HbSlot:info()
  local reserved = self.pid == 0
  return { index = self.index, pid = self.pid, generation = self.generation, name = self.name,
           timeout = self.timeout, last_beat = self.last_beat, age = orch.now() - self.last_beat,
           start_time = self.start_time, uid = 0, reserved = reserved or nil, compat = false }
end
function HbSlot:beat() self.last_beat = orch.now(); return true end
function HbSlot:unregister()
  local t = self.table
  if t.slots_by_index[self.index] == self then
    t.slots_by_index[self.index] = nil
    t:changed()
  end
  return true
end

-- heartbeat.alive / heartbeat.start_time for simulated pids.
function World:hb_alive(pid, start)
  local p = self.procs[pid]
  if not p then
    if sim_pid(pid) then return false end
    return self.real.hb_alive(pid, start)
  end
  return p.state == "alive" and (start == nil or start == p.start_time)
end

function World:hb_start_time(pid)
  local p = self.procs[pid]
  if not p then
    if sim_pid(pid) then return nil, "heartbeat.start_time: no such process", "ESRCH" end
    return self.real.hb_start_time(pid)
  end
  return p.start_time
end

-- orch.proc.wait_exit for simulated pids: a zombie counts as exited.
function World:wait_exit(pid, start, timeout)
  local p = self.procs[pid]
  if not p then
    if sim_pid(pid) then return true end
    return self.real.wait_exit(pid, start, timeout)
  end
  if start and start ~= p.start_time then return true end
  local deadline = timeout and orch.now() + timeout
  while p.state == "alive" do
    local left = deadline and deadline - orch.now()
    if left and left <= 0 then return nil, "proc.wait_exit: timed out", "ETIMEDOUT" end
    p:wait_reaped(left)
  end
  return true
end

-- orch.spawn_begin in a world: a simulated process has no exec to wait
-- for, so the spawn is made at :finish(), where orch.spawn_begin's real
-- spawn reports its end; the trace is then the one orch.spawn gives.
local SimRequest = {}
SimRequest.__index = SimRequest

function SimRequest:finish()
  if self.finished then error("attempt to use a finished orch.SpawnRequest", 2) end
  self.finished = true
  return self.world:spawn(self.opts)
end

function World:spawn_begin(opts)
  return setmetatable({ world = self, opts = opts }, SimRequest)
end

-- ---------------------------------------------------------------- install

local installed

-- The functions the orch module gets while a world is installed: the
-- installed world's methods (made once, not per world).
local stand_in = {}
for field, method in pairs { spawn = "spawn", spawn_begin = "spawn_begin", kill = "kill", killpg = "killpg", dgram = "dgram", info = "info",
                             start_time = "start_time", children = "children", is_child = "is_child", list = "list",
                             wait_exit = "wait_exit", heartbeat_open = "heartbeat_open", hb_alive = "hb_alive",
                             hb_start_time = "hb_start_time" } do
  local m = World[method]
  stand_in[field] = function(...) return m(installed, ...) end
end

--- Makes `W` the process table of the orch module (see the top).
function World:install()
  if installed == self then return end
  if installed then error("orch.sim: another world is installed", 2) end
  local hb = orch.heartbeat
  self.real = {
    spawn = orch.spawn, spawn_begin = orch.spawn_begin, kill = orch.kill, killpg = orch.killpg,
    info = orch.proc.info,
    start_time = orch.proc.start_time, children = orch.proc.children, list = orch.proc.list,
    is_child = orch.proc.is_child,
    heartbeat_open = hb and hb.open, hb_alive = hb and hb.alive, hb_start_time = hb and hb.start_time,
    wait_exit = orch.proc.wait_exit, dgram = orch.dgram,
  }
  local s = stand_in
  orch.spawn, orch.kill, orch.killpg, orch.dgram = s.spawn, s.kill, s.killpg, s.dgram
  orch.spawn_begin = s.spawn_begin
  orch.proc.info, orch.proc.start_time, orch.proc.children = s.info, s.start_time, s.children
  orch.proc.is_child, orch.proc.list, orch.proc.wait_exit = s.is_child, s.list, s.wait_exit
  if hb then hb.open, hb.alive, hb.start_time = s.heartbeat_open, s.hb_alive, s.hb_start_time end
  installed = self
end

--- Gives the orch module its real process table back.
function World:uninstall()
  if installed ~= self then return end
  local r = self.real
  orch.spawn, orch.kill, orch.killpg = r.spawn, r.kill, r.killpg
  orch.spawn_begin = r.spawn_begin
  orch.proc.info, orch.proc.start_time, orch.proc.children, orch.proc.list = r.info, r.start_time, r.children, r.list
  orch.proc.wait_exit, orch.proc.is_child, orch.dgram = r.wait_exit, r.is_child, r.dgram
  if orch.heartbeat then
    orch.heartbeat.open, orch.heartbeat.alive, orch.heartbeat.start_time = r.heartbeat_open, r.hb_alive, r.hb_start_time
  end
  installed = nil
end

--- Stops the supervisor (every service, in order) and every simulated
-- process left, and uninstalls the world. Task only.
function World:close()
  if self.closed then return end
  self.closed = true
  sim.stats.worlds = sim.stats.worlds + 1
  sim.stats.virtual = sim.stats.virtual + (orch.now() - self.t0)
  self:note("closing the world")
  local sup = self.sup
  if sup then
    local ok, err = pcall(sup.close)
    if not ok then self:note("sup.close failed: " .. tostring(err)) end
  end
  local pids = {}
  for pid in pairs(self.procs) do pids[#pids + 1] = pid end
  table.sort(pids)
  for _, pid in ipairs(pids) do
    local p = self.procs[pid]
    if p and p.state == "alive" then p:die(nil, "KILL") end
  end
  -- Their exits reach the supervisor (a run ends, its resources close)
  -- before the world goes; a supervisor that starts something again then
  -- is stopped once more. Bounded: a policy that keeps doing so is a bug
  -- the trace shows.
  for _ = 1, 100 do
    orch.sleep(0)
    if self.inflight == 0 then
      local live
      for pid, p in pairs(self.procs) do
        if p.state == "alive" then
          live = true
          p:die(nil, "KILL")
        end
      end
      if not live then break end
    end
  end
  self:uninstall()
end

-- sim.parse_faults of a string, once per string (a world never writes
-- into its faults).
local parsed_faults = setmetatable({}, { __mode = "v" })
local function parse_faults_cached(spec)
  if type(spec) ~= "string" then return sim.parse_faults(spec) end
  local t = parsed_faults[spec]
  if not t then
    t = sim.parse_faults(spec)
    parsed_faults[spec] = t
  end
  return t
end

--- sim.world{ seed, faults, invariants, echo, supervisor }: a new world
-- (installed: the orch module's process table is its own until close).
-- seed: an integer (default: ORCH_SIM_SEED, else one from the clock, which
-- the world prints); faults: "kill:0.01,..." or a table; invariants: a
-- list of { name, fn } or sim.invariants.* values; echo: a function
-- receiving every trace line; supervisor = false: no supervisor.
function sim.world(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #1 to 'world' (table expected)", 2) end
  for k in pairs(opts) do
    if not ({ seed = 1, faults = 1, invariants = 1, echo = 1, supervisor = 1 })[k] then
      error("bad argument #1 to 'world' (unknown option '" .. tostring(k) .. "')", 2)
    end
  end
  local seed = opts.seed or math.tointeger(tonumber(os.getenv("ORCH_SIM_SEED") or ""))
  if seed == nil then
    seed = math.floor(orch.now() * 1e6) % 1000000007
    io.stderr:write("orch.sim: seed ", seed, "\n")
  end
  if math.type(seed) ~= "integer" then error("bad argument #1 to 'world' (option 'seed': integer expected)", 2) end
  local W = setmetatable({
    seed = seed, rng = rng_new(seed), faults = parse_faults_cached(opts.faults), invariants = {},
    procs = {}, programs = {}, records = {}, ntrace = 0, next_pid = PID_BASE, nspawn = 0, nlive = 0,
    inflight = 0, hb_tables = {}, dgrams = {}, t0 = orch.now(), echo = opts.echo, inv_by_kind = {},
  }, World)
  -- world.trace: the lines so far, a read-only list (formatted when read).
  W.trace = setmetatable({ [0] = W }, trace_mt)
  math.randomseed(seed)
  if opts.invariants then
    local c = compile_invariants(opts.invariants)
    W.invariants, W.inv_by_kind = c.invariants, c.by_kind
  end
  W:install()
  if opts.supervisor ~= false then
    local sup = require("orch.supervisor").new()
    W.sup = sup
    -- What the test asks for, marked in the trace and for the invariants.
    -- (A tail call: an argument error still names the test's line.)
    for _, verb in ipairs { "start", "restart", "stop" } do
      local f = sup[verb]
      sup[verb] = function(target, ...)
        W:event("user", nil, "sup." .. verb .. "(" .. tostring(target) .. ")")
        if verb ~= "stop" then W.user_start_at = orch.now() end
        return f(target, ...)
      end
    end
    sup.configure {
      cgroup = false, persist = false, exit_on_fatal = false, runtime_dir = sim.RUNTIME_DIR,
      log = function(msg) W:event("sup", nil, msg) end,
      output = function(name, line) W:event("output", nil, name .. " | " .. line) end,
      exit = function(code) W.exit_code = code end,
    }
    -- Its events (spawned, ready, exited, backoff, ...), as they happen.
    sup.events(function(ev) W:event("event", ev.name, ev) end)
  end
  return W
end

-- Runs fn on the virtual clock: in the calling task (switching the clock
-- for the time of fn when it is the real one), or as orch.run's main task.
local function on_virtual_time(fn)
  local was = orch.clock()
  if was ~= "virtual" then
    local ok, err = orch.clock("virtual")
    if not ok then error("orch.sim: " .. err, 3) end
  end
  local ok, res
  if orch.current() then ok, res = pcall(fn) else ok, res = pcall(orch.run, fn) end
  if was ~= "virtual" then orch.clock("real") end
  if not ok then error(res, 0) end
  return res
end

--- sim.run(fn [, opts]): fn(world, sup) in a new world on the virtual
-- clock (as the main task of orch.run, or at once inside a task); the world
-- is closed after. Raises fn's error or a broken invariant, with the seed
-- and the trace. Returns the world.
function sim.run(fn, opts)
  if type(fn) ~= "function" then error("bad argument #1 to 'run' (function expected)", 2) end
  local function body()
    local W = sim.world(opts)
    local ok, err = xpcall(fn, debug.traceback, W, W.sup)
    W:close()
    if not ok then error(W:report(err), 0) end
    W:check()
    return W
  end
  return on_virtual_time(body)
end

--- sim.explore{ runs, seed, faults, duration, setup, invariants }: `runs`
-- worlds with seeds seed, seed+1, ...: setup(world, sup) then `duration`
-- virtual seconds, every invariant checked after every event. Raises at the
-- first broken one (its seed and trace); returns the number of runs.
function sim.explore(o)
  if type(o) ~= "table" or type(o.setup) ~= "function" then
    error("bad argument #1 to 'explore' (table with a setup function expected)", 2)
  end
  local runs, seed, duration = o.runs or 100, o.seed or 1, o.duration or 600
  local function one(s)
    return sim.run(function(W, sup)
      o.setup(W, sup)
      local deadline = orch.now() + duration
      while not W.violation and orch.now() < deadline do orch.sleep(math.min(10, deadline - orch.now())) end
    end, { seed = s, faults = o.faults, invariants = o.invariants })
  end
  local function all()
    for i = 0, runs - 1 do
      one(seed + i)
      -- Under a generational collector (lua5.4's own default) the dead
      -- worlds' coroutines pile up as old objects that every minor
      -- collection walks again: a full collection now and then keeps each
      -- run as cheap as the first.
      if i % 64 == 63 then collectgarbage() end
    end
    return runs
  end
  return on_virtual_time(all)
end

-- ---------------------------------------------------------------- invariants

-- The supervisor instance a spawn event is for (looked up once per event:
-- several invariants ask).
local function spawned_instance(W, ev)
  local inst = ev.inst
  if inst == nil then
    local p = ev.proc
    local svc = ev.kind == "spawn" and p and p.main and W.sup and p.env.ORCH_SERVICE
    inst = svc and (W.sup.instance(svc) or W.sup.instance(svc .. ":" .. tostring(p.env.ORCH_INSTANCE))) or false
    ev.inst = inst
  end
  if not inst then return nil end
  return inst, ev.proc
end

sim.invariants = {}

--- Never two processes of one instance of `service` (default: any) at once.
function sim.invariants.single(service)
  return { name = "single instance" .. (service and (" of " .. service) or ""), kinds = { "spawn" }, fn = function(W, ev)
    local inst, p = spawned_instance(W, ev)
    if not inst or (service and inst.service ~= service) then return true end
    for pid, q in pairs(W.procs) do
      if pid ~= p.pid and q.main and q.state ~= "reaped" and q.env.ORCH_SERVICE == p.env.ORCH_SERVICE
         and q.env.ORCH_INSTANCE == p.env.ORCH_INSTANCE then
        return false, string.format("%s spawned pid %d while pid %d runs", inst.name, p.pid, pid)
      end
    end
    return true
  end }
end

--- `service` starts only while every instance of `dependency` is running.
function sim.invariants.requires(service, dependency)
  return { name = service .. " requires " .. dependency, kinds = { "spawn" }, fn = function(W, ev)
    local inst = spawned_instance(W, ev)
    if not inst or inst.service ~= service then return true end
    -- The instance objects (the service's own, or its numbered ones), not
    -- sup.status (which builds a record of every field, process details
    -- included, for each).
    local sup, i = W.sup, 0
    local d = sup.instance(dependency)
    if not d then
      i = 1
      d = sup.instance(dependency .. ":1")
    end
    while d do
      local state = d.frozen and "frozen" or d.state
      if d.service == dependency and state ~= "running" then
        return false, string.format("%s started while %s is %s", inst.name, d.name, state)
      end
      if i == 0 then break end
      i = i + 1
      d = sup.instance(dependency .. ":" .. i)
    end
    return true
  end }
end

--- No instance is started once a stop of it (or the shutdown) began.
function sim.invariants.no_start_after_stop()
  return { name = "no start after a stop began", kinds = { "spawn" }, fn = function(W, ev)
    local inst = spawned_instance(W, ev)
    if inst and inst.want == false then return false, inst.name .. " started after its stop began" end
    return true
  end }
end

--- A restart after a backoff comes no sooner than the policy's smallest
-- delay for that failure count (initial * factor^(fails-1), capped at max,
-- less the jitter).
-- An explicit sup.start or sup.restart (which starts an instance in backoff
-- at once, on purpose) is not a restart of the policy's.
function sim.invariants.backoff()
  -- world -> service -> instance (ORCH_INSTANCE) -> time of the last exit
  local exits = setmetatable({}, { __mode = "k" })
  return { name = "backoff never shorter than the policy", kinds = { "spawn", "reaped" }, fn = function(W, ev)
    local p = ev.proc
    local last_exit = exits[W]
    if not last_exit then
      last_exit = {}
      exits[W] = last_exit
    end
    if ev.kind == "reaped" then
      -- (A process of a service's; others, spawned by the test itself,
      -- have no ORCH_SERVICE.)
      local svc = p and p.main and p.env.ORCH_SERVICE
      if svc then
        local by_index = last_exit[svc] or {}
        last_exit[svc] = by_index
        by_index[p.env.ORCH_INSTANCE or false] = ev.time
      end
      return true
    end
    local inst = spawned_instance(W, ev)
    -- (sup.start launches what it starts at once: at the same virtual time.)
    if not inst or inst.state ~= "backoff" or W.user_start_at == ev.time then return true end
    local b, fails = inst.cfg.backoff, inst.fails or 0
    local by_index = last_exit[p.env.ORCH_SERVICE]
    local last = by_index and by_index[p.env.ORCH_INSTANCE or false]
    if fails < 1 or b.initial <= 0 or not last or type(inst.cfg.restart) == "function" then return true end
    local d = math.min(b.max, b.initial * b.factor ^ (fails - 1)) * (1 - b.jitter)
    local gap = ev.time - last
    if gap + 1e-6 < d then
      return false, string.format("%s restarted %.3fs after its exit; the policy says at least %.3fs (failure %d)",
        inst.name, gap, d, fails)
    end
    return true
  end }
end

-- ---------------------------------------------------------------- spec helpers

-- The world of the running test (orch test's helper makes one per test).
sim.current = nil

local function cur()
  if not sim.current then
    sim.current = sim.world()
  end
  return sim.current
end

--- sim.service(def): world:service on the current world.
function sim.service(def) return cur():service(def) end
--- sim.program(name, steps): world:program on the current world.
function sim.program(name, steps) return cur():program(name, steps) end
--- sim.supervisor(): the current world's supervisor.
function sim.supervisor() return cur().sup end
--- sim.advance(seconds): lets `seconds` of virtual time pass (task).
function sim.advance(s) orch.sleep(s) end
--- sim.trace(): the current world's trace, as text.
function sim.trace() return cur():text() end

--- Ends the current world (closes it); returns it.
function sim.reset()
  local W = sim.current
  sim.current = nil
  if W then W:close() end
  return W
end

return sim
