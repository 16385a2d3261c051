--- orch.supervisor: services with restart policies, backoff, start limits,
-- readiness, dependencies, heartbeats, limits, graceful group stop and log
-- capture, as a Lua policy on orch's public API (see doc/supervisor.md).
--
--   local sup = require "orch.supervisor"
--   sup.service { name = "web", cmd = { "./server", "--port", 8080 },
--                 ready = { tcp = 8080 }, depends_on = { "db" } }
--   sup.run()       -- TERM/INT stop everything; start every service
--
-- The module is a supervisor; `sup.new()` makes another, independent one
-- (specs use one per test). This file is the public API and the
-- supervisor's own state; the rest is split by concern: instance.lua (the
-- per-process state machine, a state x event table), run.lua (one process
-- and the resources that live as long as it), policy.lua (restart, backoff,
-- start limit), graph.lua (dependencies), handoff.lua (`orch ctl reexec`),
-- reload.lua (sup.reload, `orch ctl reload`), schema.lua (validation),
-- ready.lua, heartbeat.lua, limits.lua, log.lua, event.lua.
local orch = require "orch"
local schema = require "orch.supervisor.schema"
local Instance = require "orch.supervisor.instance"
local Event = require "orch.supervisor.event"
local graph = require "orch.supervisor.graph"
local handoff = require "orch.supervisor.handoff"
local persist = require "orch.supervisor.persist"
local reload = require "orch.supervisor.reload"
local cgroup = require "orch.supervisor.cgroup"
local status = require "orch.supervisor.status"

-- Launches between two yields of a large sup.start (see sup.start).
local START_BATCH = 16
-- Seconds after a large start before its garbage is collected (Sup:compact):
-- the state record's sync waits as long after a spawn.
local COMPACT_AFTER = 0.005
-- The collector's pause during a large start (see collect_sooner).
local START_PAUSE = 130

-- Exit statuses of a supervisor's shutdown (doc/cli.md, Exit statuses).
local EXIT = { ok = 0, critical = 3, fatal = 4, killed = 5 }
-- Seconds between the second TERM/INT (KILL to everything) and the exit,
-- whatever a tracked process does meanwhile.
local ESCALATE_GRACE = 0.5
-- The Lua time budget of the supervisor's own work (a stop's tasks, a
-- TERM handler's or orch.exit's shutdown pass, the cgroups' warm-up): at
-- least this, whatever smaller budget orch runs with (Sup.own_budget).
local OWN_BUDGET = 5

local Sup = {}
Sup.__index = Sup

--- The directory of the notify sockets: the configured one, or the control
-- socket's directory (/run/orch for root, $XDG_RUNTIME_DIR/orch, else
-- /tmp/orch-<uid>), created 0700 and checked on first use
-- (doc/security.md#the-runtime-directory). Returns it, or nil and why.
function Sup:get_runtime_dir()
  if self.runtime_dir then return self.runtime_dir end
  local dir, err = require("orch.ctl").ensure_socket_dir()
  if not dir then return nil, err end
  self.runtime_dir = dir
  return dir
end

-- The priority of a supervisor line (for the journal and JSON logs).
local WARNINGS = { "exited with code [1-9]", "killed by ", "sending KILL", "left behind", "missed heartbeat",
                   "not ready after", "log lines dropped", "failed" }
local function priority(msg)
  if msg:find("FATAL: ", 1, true) or msg:find("cannot start: ", 1, true) then return "err" end
  for _, p in ipairs(WARNINGS) do
    if msg:find(p) then return "warning" end
  end
  return "info"
end

-- The default log function: one record through orch.log, with the
-- service's name (and instance, pid) as fields when the line is about one.
local function default_log(msg, fields)
  local rec = { source = "orch.supervisor", message = msg, priority = priority(msg) }
  for k, v in pairs(fields or {}) do rec[k] = v end
  require("orch.log").write(rec)
end

-- A service's output without a log directory: "web | line" on stderr (one
-- write), a JSON object, or a journal record of the service's own.
local function default_output(name, line)
  local olog = require "orch.log"
  if olog.format() == "text" then
    io.stderr:write(name .. " | " .. line .. "\n")
  else
    olog.write{ source = "service", service = name, message = line, identifier = name, stream = "output" }
  end
end

local function new_state()
  local S = setmetatable({
    services = {},        -- name -> { cfg, def, instances }
    order = {},           -- service names, in definition order
    by_name = {},         -- instance name -> instance
    changed = Event.new(),
    events = Event.stream(),
    runtime_dir = nil,    -- configured, or ctl's socket directory on first use
    heartbeat_key = nil,
    tables = {},
    created_tables = {},
    orphans = {},
    escalated = false,
    nwaiting = 0,
    exit_when_idle = false,
    -- As PID 1 (a container's init), orch ends once every service is fatal,
    -- so that the platform can restart the container.
    exit_on_fatal = orch.getpid() == 1 and "all" or false,
    accounting_max_age = 1,   -- seconds a status may show old rss/cpu figures
    accounting_batch = 256,   -- a status of more reads them in the background, this many a loop turn
  }, Sup)
  -- orch.log: timestamped text on stderr, JSON lines (--log-format json)
  -- or the journal (under systemd), each record one write or datagram.
  S.stop_hook_tasks = setmetatable({}, { __mode = "k" })
  S.log_fn = default_log
  S.output = default_output
  S.exit = function(code) orch.exit(code) end
  return S
end

local slog, olog   -- orch.supervisor.log and orch.log, loaded by the first line

function Sup:log(msg, inst)
  -- log = false: no line is even made (a mass start logs one per service).
  if self.log_off then return end
  slog = slog or require "orch.supervisor.log"
  msg = slog.one_line(msg)
  -- The default function's text form, written straight away: the record
  -- and the fields are for the JSON and journal forms, and building them
  -- cost ten times the line itself (a restart logs two or three lines).
  if self.log_fn == default_log then
    olog = olog or require "orch.log"
    if olog.format() == "text" then
      local line = olog.timestamp() .. " orch.supervisor: " .. msg .. "\n"
      local held = self.log_held
      if held then held[#held + 1] = line else io.stderr:write(line) end
      return
    end
  end
  local fields = inst and { service = inst.service, instance = inst.name, pid = inst.pid } or nil
  local ok, err = pcall(self.log_fn, msg, fields)
  if not ok then io.stderr:write("orch.supervisor: log function failed: ", tostring(err), "\n") end
end

--- A start of many writes its text lines ("started, pid N" for each
-- service) in one write a batch rather than one each: held (on = true)
-- until it yields or ends (on = false), when nothing else can have written
-- meanwhile, so the lines keep their order among orch's others.
function Sup:log_hold(on)
  local held = self.log_held
  if on then
    if not held then self.log_held = {} end
    return
  end
  self.log_held = nil
  if held and #held > 0 then io.stderr:write(table.concat(held)) end
end

-- ---------------------------------------------------------------- services

--- cfg, given: schema.check_copy's (the service keeps of its definition
-- only what cfg does not hold as given: Sup:definition).
function Sup:add(cfg, given, pos)
  -- svc.instances, the list of its instances, is the service's own table
  -- (its integer keys): no list of one a service (72 bytes; issue 14).
  local svc = { cfg = cfg, given = given }
  svc.instances = svc
  for i = 1, cfg.numprocs do
    local name = cfg.numprocs > 1 and (cfg.name .. ":" .. i) or cfg.name
    local inst = Instance.new(self, cfg, i, name)
    svc.instances[i] = inst
    self.by_name[name] = inst
  end
  self.services[cfg.name] = svc
  self.graph_checked = nil
  self.all_cache = nil
  if pos then table.insert(self.order, pos, cfg.name) else self.order[#self.order + 1] = cfg.name end
  return svc
end

function Sup:remove(name)
  local svc = self.services[name]
  for _, inst in ipairs(svc.instances) do self.by_name[inst.name] = nil end
  self.services[name] = nil
  self.graph_checked = nil
  self.all_cache = nil
  -- The state record forgets its instances now (the journal's "gone"
  -- line), not at the next change: a kill -9 meanwhile left them named as
  -- stopped by hand, and a next orch given the service again kept it stopped.
  if self.persist then persist.touch(self) end
  for i, n in ipairs(self.order) do
    if n == name then
      table.remove(self.order, i)
      return i
    end
  end
end

--- The definition of service `name` as it was given (a new table).
function Sup:definition(name)
  local svc = self.services[name]
  return schema.definition(svc.cfg, svc.given)
end

function Sup:cfgs()
  local t = {}
  for name, svc in pairs(self.services) do t[name] = svc.cfg end
  return t
end

--- graph.check of the defined services, done again only after a service
-- was added or removed (sup.run starts every service through sup.start).
function Sup:check_graph()
  if self.graph_checked then return end
  graph.check(self:cfgs())
  self.graph_checked = true
end

function Sup:unready_dependency(inst) return graph.unready_dependency(self, inst) end
function Sup:stop_ordered(insts, signalled) return graph.stop_ordered(self, insts, signalled) end

-- ---------------------------------------------------------------- events

-- The states whose entry is an event of its own (the others are emitted
-- where more is known: spawned with its pid, exited with its code, backoff
-- with its delay, fatal with its reason).
local STATE_EVENTS = { running = "ready", waiting = "waiting", stopping = "stopping", stopped = "stopped" }

--- One event of the stream sup.events() gives (see event.lua); inst may be
-- nil (reloaded).
function Sup:emit(inst, kind, fields)
  local ev = fields or {}
  ev.event = kind
  if inst then ev.name, ev.service = inst.name, inst.service end
  local failed = self.events:emit(ev)
  if failed then self:log("event subscriber failed (removed): " .. failed) end
end

function Sup:state_changed(inst, old)
  if inst.state == "waiting" then self.nwaiting = self.nwaiting + 1
  elseif old == "waiting" then self.nwaiting = self.nwaiting - 1 end
  local kind = STATE_EVENTS[inst.state]
  if kind then self:emit(inst, kind, { pid = inst.state == "running" and inst.pid or nil }) end
  self.changed:signal()
  if self.persist then persist.touch(self, inst) end
end

--- inst's run has a new process (spawned, or a daemon's main process):
-- the state record learns it at once (persist.lua's journal), even when
-- the instance's state does not change.
function Sup:spawned(inst, run, start_time)
  if self.persist then persist.spawned(self, inst, run, start_time) end
end

--- inst's restart spawned by its exit's action, before the exit's
-- bookkeeping and before its run (p: its process, restarts: the count it
-- makes, start_time: its start time, orch.time()), learnt by the record at
-- once; p nil: that spawn was not taken.
function Sup:spawned_early(inst, p, restarts, start_time)
  if not self.persist then return end
  if p then persist.spawned_early(self, inst, p, restarts, start_time) else persist.early_dropped(self, inst) end
end

--- Launches the instances that waited for a dependency.
function Sup:kick()
  if self.nwaiting == 0 then return end
  for _, n in ipairs(self.order) do
    for _, inst in ipairs(self.services[n].instances) do
      if inst.state == "waiting" then inst:handle("deps_ready") end
    end
  end
end

--- Runs a hook as its own task; its errors are reported, never raised.
function Sup:hook(inst, name, ...)
  local fn = inst.cfg[name]
  if not fn then return end
  orch.task(function(...)
    local ok, err = xpcall(fn, debug.traceback, inst, ...)
    if not ok then self:log(string.format("%s: %s hook failed: %s", inst.name, name, tostring(err))) end
  end, ...)
end

function Sup:heartbeat_table(key)
  if not orch.heartbeat then return nil, "heartbeat: the heartbeat module is not built" end
  key = key or self.heartbeat_key
  if not key then
    local env = os.getenv("ORCH_HEARTBEAT_KEY")
    key = env and math.tointeger(tonumber(env)) or orch.heartbeat.DEFAULT_KEY
  end
  local t = self.tables[key]
  if t then return t end
  -- A table this supervisor creates is its own: removed by sup.close().
  -- One that already existed (shared with a watchdog) is only detached.
  local err, ename
  t, err, ename = orch.heartbeat.open { key = key, create = true, exclusive = true }
  if t then
    self.created_tables[key] = true
  elseif ename == "EEXIST" then
    t, err = orch.heartbeat.open { key = key, create = true }
  end
  if not t then return nil, err end
  self.tables[key] = t
  return t
end

function Sup:track_orphans()
  if self.orphan_watch then return end
  orch.proc.subreaper(true)
  self.orphan_watch = orch.proc.on_orphan_exit(function(pid, code, sig)
    local e = self.orphans[pid]
    if e then
      self.orphans[pid] = nil
      e.inst:run_ended(e.run, code, sig)
    end
  end)
end

function Sup:watch_orphan(pid, inst, run) self.orphans[pid] = { inst = inst, run = run } end
function Sup:unwatch_orphan(pid) self.orphans[pid] = nil end

-- ---------------------------------------------------------------- reexec

function Sup:take_inherited(inst) return handoff.take(self, inst) end

--- An instance went fatal: a `critical` one ends the supervisor, and so
-- does the exit_on_fatal rule ("any": one fatal instance; "all": every
-- wanted instance fatal).
function Sup:instance_fatal(inst)
  if inst.cfg.critical then
    self.critical = self.critical or inst.name
    if self.shutdown_task then return end
    self:log(string.format("critical service %s is fatal: stopping every service", inst.name))
    return self:shutdown()
  end
  local rule = self.exit_on_fatal
  if not rule or self.shutdown_task then return end
  if rule == "all" then
    for _, i in ipairs(self:all_instances()) do
      if i.want and i.state ~= "fatal" then return end
    end
  end
  self:log(rule == "all" and "every service is fatal: stopping" or
    string.format("%s is fatal: stopping every service", inst.name))
  self:shutdown()
end

--- A stop must end whatever Lua time budget orch runs with
-- (orch.set_budget, `orch run --lua-budget`): a budget of a few
-- milliseconds interrupted a stop of hundreds of services in the middle
-- (the removal of their cgroups, the first signal pass) and orch never
-- exited. So the supervisor's own work (bounded code that yields, or is
-- one pass over the services) runs with a budget of its own (task:set_budget):
-- OWN_BUDGET, or orch's if larger, none if orch has none. User code it
-- calls inline (a log function, an event subscriber) is bounded by that;
-- hooks run in their own tasks, with orch's budget. Given a task: sets its
-- budget, returns it. None: the running task's, until the value returned
-- is closed.
local restore_budget = { __close = function(r) r.task:set_budget(r.old) end }
local function own_budget()
  local b = orch.set_budget()
  if b == 0 then return false end
  return math.max(b, OWN_BUDGET)
end
function Sup.own_budget(task)
  if task then
    task:set_budget(own_budget())
    return task
  end
  task = orch.current()
  if not task then return nil end
  return setmetatable({ task = task, old = task:set_budget(own_budget()) }, restore_budget)
end

--- A stop during the shutdown needed KILL (or could not end a process).
function Sup:killed_during_shutdown()
  if self.shutdown_task then self.killed = true end
end

--- The exit status of a shutdown: 0 when every service stopped cleanly.
function Sup:exit_status()
  if self.critical then return EXIT.critical end
  if self.killed then return EXIT.killed end
  if self.fatal_at_exit then return EXIT.fatal end
  return EXIT.ok
end

--- A supervisor is a daemon: from sup.run() until shutdown (or close) it
-- keeps orch's loop alive, whatever its services do (an armed timer that
-- never fires in practice: no wake-ups), unless exit_when_idle is set.
function Sup:hold()
  if self.exit_when_idle or self.holder or self.shutdown_task then return end
  self.holder = orch.timer.every(1e9, function() end)
end

function Sup:release()
  if self.holder then
    self.holder:stop()
    self.holder = nil
  end
end

--- After a large start: one full collection, and the C heap's free pages
-- given back (orch.malloc_trim). A mass start leaves its garbage (spawn
-- options, journal lines, first output lines) all over the heap: without
-- this, the memory it used stays resident until it is reused. Not at once:
-- the start's last processes are still finishing their exec on these CPUs,
-- and the collection took 6% of a start's instructions. It waits until the
-- spawns settled: with a state record, its next sync (which waits for
-- them) collects before its own work and again after it
-- (persist.compact_in_sync); otherwise a timer does.
function Sup:compact()
  if persist.compact_in_sync(self) or self.compact_timer then return end
  self.compact_timer = orch.timer.after(COMPACT_AFTER, function()
    self.compact_timer = nil
    collectgarbage()
    orch.malloc_trim()
  end)
end

--- During a large start: the collector's pause (how far the heap grows
-- before the next cycle begins) at START_PAUSE instead of Lua's 200%, put
-- back when the returned value is closed. Most of what a start allocates
-- is garbage (spawn options, events, journal lines); collected sooner, its
-- blocks are reused by the next services' objects instead of staying as
-- holes between them once the start is over.
local function collect_sooner()
  local pause = collectgarbage("setpause", START_PAUSE)
  return setmetatable({}, { __close = function() collectgarbage("setpause", pause) end })
end

--- Every instance, in definition order. The list is cached until a service
-- is added or removed or the order changes (reload): a state record write
-- or a status walks it, and rebuilding it cost more than the walk at
-- thousands of services. Callers never modify it.
function Sup:all_instances()
  local out = self.all_cache
  if out and self.all_cache_order == self.order then return out end
  out = {}
  for _, n in ipairs(self.order) do
    for _, inst in ipairs(self.services[n].instances) do out[#out + 1] = inst end
  end
  self.all_cache, self.all_cache_order = out, self.order
  return out
end

-- The end of a shutdown: the tables this supervisor made go, then the exit
-- function (once). A step that fails is logged and the next one runs: the
-- exit function is called whatever happened before it.
local function finish_tables(self)
  for k, t in pairs(self.tables) do
    if self.created_tables[k] then t:remove() end
  end
end
local function finish_step(self, what, fn, ...)
  local ok, err = pcall(fn, ...)
  if not ok then self:log(string.format("shutdown: %s failed: %s", what, tostring(err))) end
end
function Sup:finish(code)
  if self.finished then return end
  self.finished = true
  local _ <close> = Sup.own_budget()
  if self.escalate_timer then self.escalate_timer:stop() self.escalate_timer = nil end
  finish_step(self, "removing the heartbeat tables", finish_tables, self)
  -- cgroup.close before persist.close: it names the tree after the socket.
  finish_step(self, "removing the cgroups", cgroup.close, self)
  finish_step(self, "closing the state record", persist.close, self)
  self:release()
  finish_step(self, "closing the HTTP endpoint", self.serve_http, self, nil, false)
  orch._exit_hook(self, nil)
  self.exit(code)
end

--- Stops everything (dependents first), then calls the exit function with
-- `code`, or with the status the shutdown earned (Sup:exit_status). From
-- its first moment nothing is restarted any more.
function Sup:shutdown(code)
  if not self.shutdown_task then
    -- The supervisor's own budget from the first signal on (Sup.own_budget):
    -- the first pass under orch's (a budget of 10 us, 1,000 services) was
    -- cut a few services in ("the stop's first signal pass failed"), and
    -- the others got their TERM only from their own stops, a turn later.
    local _ <close> = Sup.own_budget()
    local all = self:all_instances()
    -- The first layer's stop signals before anything else of the shutdown
    -- (its stop below then makes no second pass).
    local signalled = graph.signal_early(self, all)
    for _, inst in ipairs(all) do
      if inst.state == "fatal" and inst.want then self.fatal_at_exit = true end
      inst.want = false
    end
    self.shutdown_code = code
    self.shutdown_task = Sup.own_budget(orch.task(function()
      -- The last resort of a stop that failed (a bug, or user code it ran
      -- inline past even the stop's budget): KILL to every service, and the
      -- exit ESCALATE_GRACE later whatever is left. Not in the resume that
      -- failed: past the budget, its every instruction raises.
      local ok, err = pcall(self.stop_ordered, self, all, signalled)
      if not ok then
        orch.sleep(0)
        self:log("the shutdown's stop failed: " .. tostring(err) .. ": killing every service")
        return self:escalate()
      end
      local status = self.shutdown_code or self:exit_status()
      self:log(status == 0 and "every service is stopped" or
        string.format("every service is stopped (exit status %d)", status))
      self:finish(status)
    end))
  end
  return self.shutdown_task
end

--- Sends KILL to every running process group at once (second signal), and
-- ends the supervisor ESCALATE_GRACE seconds later whatever a tracked
-- process does (one not ours, stuck in the kernel, or whose exit orch never
-- sees): the log names what was left.
function Sup:escalate()
  self.escalated = true
  self.killed = true
  if not self.shutdown_task then self:shutdown() end
  local _ <close> = Sup.own_budget()
  for _, inst in ipairs(self:all_instances()) do
    local run = inst.run
    if run and run.alive then pcall(inst.send, inst, run, "KILL", true) end
  end
  if self.escalate_timer or self.finished then return end
  self.escalate_timer = orch.timer.after(ESCALATE_GRACE, function()
    local _ <close> = Sup.own_budget()
    self.escalate_timer = nil
    if self.finished then return end
    for _, inst in ipairs(self:all_instances()) do
      local run = inst.run
      if run and run.alive then
        self:log(string.format("%s: pid %d still there after KILL: left behind", inst.name, run.main_pid or run.pid))
      end
    end
    self:finish(self.shutdown_code or self:exit_status())
  end)
end

--- sup.configure{ http = ... }: the supervisor's HTTP endpoint (orch.http:
-- probes, metrics, status) started, moved to another address, or stopped
-- (opts false). True, or nil, message, code when it cannot listen (the
-- previous endpoint, if any, is closed either way).
function Sup:serve_http(sup, opts)
  if self.http_server then
    self.http_server:close()
    self.http_server = nil
  end
  if not opts then return true end
  local serve = { supervisor = sup }
  for k, v in pairs(opts) do serve[k] = v end
  local ok, srv, err, code = pcall(require("orch.http").supervisor, serve)
  if not ok then
    error("bad argument #1 to 'configure' (option 'http': " .. tostring(srv):gsub("^bad argument #1 to '%w+' %(", ""), 3)
  end
  if not srv then return nil, err, code end
  self.http_server = srv
  self:log("http: listening on " .. srv.address)
  return true
end

-- ---------------------------------------------------------------- public API

local config_keys = { log = true, output = true, runtime_dir = true, heartbeat_key = true, exit = true, env = true,
  persist = true, exit_when_idle = true, exit_on_fatal = true, cgroup = true, http = true,
  accounting_max_age = true, accounting_batch = true }

-- main: the module's own supervisor, the one `orch run` persists.
local function new(main)
  local S = new_state()
  S.main = main == true
  local sup = {}

  local function in_task() return orch.current() ~= nil end

  --- sup.configure{ log, output, runtime_dir, heartbeat_key, env, exit,
  -- http, ... }. Returns true, or nil, message, code when the HTTP endpoint
  -- cannot listen.
  function sup.configure(opts)
    if type(opts) ~= "table" then error("bad argument #1 to 'configure' (table expected, got " .. type(opts) .. ")", 2) end
    local http_opts
    for k, v in pairs(opts) do
      if not config_keys[k] then error("bad argument #1 to 'configure' (unknown option '" .. tostring(k) .. "')", 2) end
      if k == "http" then
        if v ~= false and (type(v) ~= "table" or v.listen == nil or v.supervisor ~= nil or v.routes ~= nil) then
          error("bad argument #1 to 'configure' (option 'http': table { listen = ADDR } or false expected)", 2)
        end
        http_opts = v
      elseif k == "log" then
        local off = v == false or nil
        if v == false then v = function() end end
        if type(v) ~= "function" then error("bad argument #1 to 'configure' (option 'log': function or false expected)", 2) end
        S.log_fn, S.log_off = v, off
      elseif k == "output" then
        if type(v) ~= "function" then error("bad argument #1 to 'configure' (option 'output': function expected)", 2) end
        S.output = v
      elseif k == "runtime_dir" then
        if type(v) ~= "string" or v == "" then error("bad argument #1 to 'configure' (option 'runtime_dir': directory expected)", 2) end
        S.runtime_dir = v
      elseif k == "heartbeat_key" then
        if math.type(v) ~= "integer" or v <= 0 then error("bad argument #1 to 'configure' (option 'heartbeat_key': positive integer expected)", 2) end
        S.heartbeat_key = v
      elseif k == "env" then
        local ok, env = pcall(schema.keys.env, v, "env")
        if not ok then
          error("bad argument #1 to 'configure' (option 'env': " .. (type(env) == "table" and env.msg or tostring(env)) .. ")", 2)
        end
        S.env = env
      elseif k == "persist" then
        if v ~= false and (type(v) ~= "string" or v == "") then
          error("bad argument #1 to 'configure' (option 'persist': socket path or false expected)", 2)
        end
        -- Its fd holder binds v .. ".holder": it must fit a unix socket's path.
        local max = require("orch.ctl").MAX_RUN_SOCKET
        if v and #v > max then
          error(string.format("bad argument #1 to 'configure' (option 'persist': socket path too long (%d bytes, at most %d))", #v, max), 2)
        end
        S.persist_socket = v
      elseif k == "exit" then
        if type(v) ~= "function" then error("bad argument #1 to 'configure' (option 'exit': function expected)", 2) end
        S.exit = v
      elseif k == "exit_when_idle" then
        if type(v) ~= "boolean" then error("bad argument #1 to 'configure' (option 'exit_when_idle': boolean expected)", 2) end
        S.exit_when_idle = v
        if v then S:release() end
      elseif k == "cgroup" then
        if v ~= false and (type(v) ~= "string" or v == "") then
          error("bad argument #1 to 'configure' (option 'cgroup': parent cgroup path or false expected)", 2)
        end
        if S.cgroup_base then error("bad argument #1 to 'configure' (option 'cgroup': services already run in " .. S.cgroup_base:path() .. ")", 2) end
        local was, was_off = S.cgroup_parent, S.cgroup_off
        S.cgroup_parent, S.cgroup_off = v, nil
        -- Services defined already with cgroup limits must still get them.
        local ok, err = pcall(cgroup.reconfigured, S, S.services)
        if not ok then
          S.cgroup_parent, S.cgroup_off, S.cgroup_probe = was, was_off, nil
          error("bad argument #1 to 'configure' (option 'cgroup': " .. tostring(err) .. ")", 2)
        end
      elseif k == "accounting_max_age" then
        if type(v) ~= "number" or not (v >= 0 and v < math.huge) then
          error("bad argument #1 to 'configure' (option 'accounting_max_age': number of seconds >= 0 expected)", 2)
        end
        S.accounting_max_age = v
      elseif k == "accounting_batch" then
        if math.type(v) ~= "integer" or v < 1 then
          error("bad argument #1 to 'configure' (option 'accounting_batch': integer >= 1 expected)", 2)
        end
        S.accounting_batch = v
      elseif k == "exit_on_fatal" then
        if v ~= false and v ~= "all" and v ~= "any" then
          error("bad argument #1 to 'configure' (option 'exit_on_fatal': \"all\", \"any\" or false expected)", 2)
        end
        S.exit_on_fatal = v
      end
    end
    -- Last: the endpoint starts (or moves, or stops) once every other
    -- option is known good.
    if http_opts ~= nil then return S:serve_http(sup, http_opts) end
    return true
  end

  --- sup.service(def): declares a service; returns its name. A template
  -- (name "worker@%i" with `instances`) declares one service per instance
  -- and returns their names (a list).
  function sup.service(def)
    if type(def) == "table" and def.instances ~= nil then
      local ok, defs = pcall(schema.expand, def)
      if not ok then error(defs, 2) end
      for _, d in ipairs(defs) do
        local cok, cerr = pcall(schema.check_copy, d, #S.order + 1)
        if not cok then error(cerr, 2) end
        if S.services[d.name] then
          error(string.format("service '%s': already defined (sup.reload changes definitions)", d.name), 2)
        end
      end
      local names = {}
      for i, d in ipairs(defs) do names[i] = sup.service(d) end
      return names
    end
    local ok, cfg, given = pcall(schema.check_copy, def, #S.order + 1)
    if not ok then error(cfg, 2) end
    if S.services[cfg.name] then
      error(string.format("service '%s': already defined (sup.reload changes definitions)", cfg.name), 2)
    end
    local cok, cerr = pcall(cgroup.check, S, cfg)
    if not cok then error(cerr, 2) end
    S:add(cfg, given)
    return cfg.name
  end

  function sup.start(target)
    local ok, err = pcall(S.check_graph, S)
    if not ok then error(err, 2) end
    local insts, rerr = graph.resolve(S, target, "start")
    if not insts then return nil, rerr, "ENOENT" end
    if S.shutdown_task then return nil, "start: the supervisor is shutting down", "ECANCELED" end
    -- A large start yields every START_BATCH launches (in a task): the loop
    -- keeps serving exits, ctl and signals. It runs with the supervisor's
    -- own budget (Sup.own_budget), as a stop does: under a budget of a few
    -- microseconds a start of hundreds was interrupted half way, some
    -- services started and the others never.
    local yield = in_task()
    local _ <close> = yield and S.own_budget() or nil
    local list = graph.with_dependencies(S, insts)
    -- Meanwhile the state record is not rewritten at each yield (each
    -- rewrite covers the whole fleet): every new process is in the journal
    -- at once, and the record follows once the start is over.
    local hold <close> = yield and #list > START_BATCH and persist.holding(S) or nil
    local _ <close> = hold and collect_sooner() or nil
    local _ <close> = yield and status.paused_for(S, #list) or nil
    -- Each spawn is finished at the next one (Instance.batch), and the last
    -- before each yield and at the end, even when a start raises.
    Instance.batch(true)
    S:log_hold(true)
    for i, inst in ipairs(list) do
      if yield and i % START_BATCH == 0 then
        Instance.batch(false)
        Instance.finish_pending()   -- even inside another start
        persist.flush(S)   -- this batch's journal lines, in one write
        S:log_hold(false)  -- and its log lines
        orch.sleep(0)
        if S.shutdown_task then return nil, "start: the supervisor is shutting down", "ECANCELED" end
        Instance.batch(true)
        S:log_hold(true)
      end
      local ok, err = pcall(inst.start, inst)
      if not ok then
        Instance.batch(false)
        S:log_hold(false)
        error(err, 0)
      end
    end
    Instance.batch(false)
    S:log_hold(false)
    if hold then
      hold:release()
      S:compact()
    end
    graph.prepare(S)
    return true
  end

  function sup.stop(target)
    -- ("all": the supervisor's own list, every dependent already: no copy
    -- before the first stop signal.)
    local insts, err = graph.resolve(S, target, "stop")
    if not insts then return nil, err, "ENOENT" end
    insts = graph.with_dependents(S, insts)
    local function go()
      -- The supervisor's own budget for the whole of it (as sup.restart's):
      -- the look at every instance after the stop ran under orch's again.
      local _ <close> = S.own_budget()
      S:stop_ordered(insts)
      -- A process that survived KILL (stuck in the kernel, or not ours to
      -- kill) was left behind: the stop ended, but not cleanly.
      local stuck = {}
      for _, inst in ipairs(insts) do
        if inst.stuck then stuck[#stuck + 1] = inst.name .. ": " .. inst.stuck end
      end
      if #stuck > 0 then return nil, "stop: " .. table.concat(stuck, "; "), "ETIMEDOUT" end
      return true
    end
    if in_task() then return go() end
    return orch.task(go)
  end

  function sup.restart(target)
    local insts, err = graph.resolve(S, target, "restart")
    if not insts then return nil, err, "ENOENT" end
    local function go()
      -- (The supervisor's own budget, as sup.start's.)
      local _ <close> = S.own_budget()
      local all = graph.with_dependents(S, insts)
      local again = {}
      for _, inst in ipairs(all) do
        if inst.want or inst.state == "running" or inst.state == "starting" then again[#again + 1] = inst end
      end
      for _, inst in ipairs(insts) do again[#again + 1] = inst end
      S:stop_ordered(all)
      for _, inst in ipairs(graph.with_dependencies(S, again)) do inst:start() end
      return true
    end
    if in_task() then return go() end
    return orch.task(go)
  end

  function sup.signal(target, sig, opts)
    if (type(sig) ~= "string" and math.type(sig) ~= "integer") or not orch.signal.number(sig) then
      error("bad argument #2 to 'signal' (signal name or number expected, got " .. tostring(sig) .. ")", 2)
    end
    if opts ~= nil and (type(opts) ~= "table" or next(opts) ~= nil and next(opts) ~= "group") then
      error("bad argument #3 to 'signal' (table {group = boolean} expected)", 2)
    end
    local insts, err = graph.resolve(S, target, "signal")
    if not insts then return nil, err, "ENOENT" end
    local sent, lerr, lename = 0, nil, nil
    for _, inst in ipairs(insts) do
      local ok, e, en = inst:signal(sig, opts)
      if ok then sent = sent + 1 else lerr, lename = e, en end
    end
    if sent == 0 then return nil, lerr or ("signal: " .. tostring(target) .. " is not running"), lename or "ESRCH" end
    return true
  end

  function sup.status(target)
    -- A status of every service is the supervisor's own work: its own
    -- budget (Sup.own_budget), as a start's or a stop's.
    local _ <close> = S.own_budget()
    local insts, err = graph.resolve(S, target or "all", "status")
    if not insts then return nil, err, "ENOENT" end
    local out = {}
    local defer = status.defer(S, #insts)
    for i, inst in ipairs(insts) do out[i] = inst:status(defer) end
    return out
  end

  --- sup.status_json([target]) / sup.status_table([target]): the same
  -- status rendered without a table per instance (the control socket's
  -- status replies): the JSON text of the list sup.status gives, or the
  -- lines of `orch ctl status` as one string; and how many are not running.
  local function rendered(render, target)
    local _ <close> = S.own_budget()
    local insts, err = graph.resolve(S, target or "all", "status")
    if not insts then return nil, err, "ENOENT" end
    return render(S, insts, status.defer(S, #insts))
  end
  function sup.status_json(target) return rendered(status.json, target) end
  function sup.status_table(target) return rendered(status.table, target) end

  --- sup.freeze(target) / sup.thaw(target): cgroup.freeze of the running
  -- instances' cgroups (their state shows "frozen" until thawed).
  local function freezer(verb, on)
    return function(target)
      local insts, err = graph.resolve(S, target, verb)
      if not insts then return nil, err, "ENOENT" end
      local done, lerr, lename = 0, nil, nil
      for _, inst in ipairs(insts) do
        local ok, e, en = inst:freeze(on)
        if ok then done = done + 1 else lerr, lename = e, en end
      end
      if done == 0 then return nil, lerr or (verb .. ": " .. tostring(target) .. " is not running"), lename or "ESRCH" end
      return true
    end
  end
  sup.freeze = freezer("freeze", true)
  sup.thaw = freezer("thaw", false)

  function sup.tail(name, n)
    if n ~= nil and (math.type(n) ~= "integer" or n < 0) then
      error("bad argument #2 to 'tail' (non-negative integer expected)", 2)
    end
    local insts, err = graph.resolve(S, name, "tail")
    if not insts then return nil, err, "ENOENT" end
    if #insts == 1 then
      return insts[1]:log_sink() and insts[1]:log_sink():tail(n) or {}
    end
    local out = {}
    for _, inst in ipairs(insts) do
      for _, line in ipairs(inst:log_sink() and inst:log_sink():tail(n) or {}) do
        out[#out + 1] = "[" .. inst.name .. "] " .. line
      end
    end
    return out
  end

  --- sup.follow(name, fn): calls fn(line) for each new output line of the
  -- service (each instance's lines prefixed with "[name:i] " when it has
  -- several). Returns a function that stops following.
  function sup.follow(name, fn)
    if type(fn) ~= "function" then error("bad argument #2 to 'follow' (function expected)", 2) end
    local insts, err = graph.resolve(S, name, "follow")
    if not insts then return nil, err, "ENOENT" end
    local stops = {}
    for _, inst in ipairs(insts) do
      local f = fn
      if #insts > 1 then
        local prefix = "[" .. inst.name .. "] "
        f = function(line) return fn(prefix .. line) end
      end
      stops[#stops + 1] = inst:get_sink():follow(f)
    end
    return function()
      for _, stop in ipairs(stops) do stop() end
    end
  end

  --- sup.events([fn]): with fn, calls fn(event) for every state change from
  -- now on and returns a function that stops it; without, the recent events
  -- (the last 200), oldest first.
  function sup.events(fn)
    if fn == nil then return S.events:recent() end
    if type(fn) ~= "function" then error("bad argument #1 to 'events' (function or nil expected, got " .. type(fn) .. ")", 2) end
    return S.events:subscribe(fn)
  end

  function sup.services()
    local out = {}
    for i, n in ipairs(S.order) do out[i] = S:definition(n) end
    return out
  end

  local known_states = {}
  for _, st in ipairs(Instance.STATES) do known_states[st] = true end

  -- A state name or a list of them; an unknown name raises (a wait for it
  -- could only time out).
  local function states_set(state, op)
    local set = {}
    local list = type(state) == "table" and state or { state }
    if type(state) ~= "string" and type(state) ~= "table" then
      error("bad argument #2 to '" .. op .. "' (state name or list expected)", 3)
    end
    for _, st in ipairs(list) do
      if not known_states[st] then
        error(string.format("bad argument #2 to '%s' (unknown state '%s'; one of %s expected)",
          op, tostring(st), table.concat(Instance.STATES, ", ")), 3)
      end
      set[st] = true
    end
    return set
  end

  function sup.wait(target, state, timeout)
    local set = states_set(state, "wait")
    if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0) then
      error("bad argument #3 to 'wait' (seconds expected)", 2)
    end
    if not in_task() then error("wait: must be called from a task", 2) end
    local insts, err = graph.resolve(S, target, "wait")
    if not insts then return nil, err, "ENOENT" end
    local ok = S.changed:wait_for(function()
      for _, inst in ipairs(insts) do
        if not set[inst.state] then return false end
      end
      return true
    end, timeout)
    if not ok then return nil, "wait: timed out", "ETIMEDOUT" end
    return true
  end

  function sup.reload(defs)
    if type(defs) ~= "table" then error("bad argument #1 to 'reload' (list of service definitions expected)", 2) end
    if not in_task() then error("reload: must be called from a task", 2) end
    -- The checks, stops and starts of every service given: the
    -- supervisor's own budget (Sup.own_budget), as sup.start's.
    local _ <close> = S.own_budget()
    local result = reload.apply(S, defs)
    for _, n in ipairs(result.added) do
      if S.services[n].cfg.autostart then sup.start(n) end
    end
    S:emit(nil, "reloaded", { kept = result.kept, restarted = result.restarted, stopped = result.stopped,
                              added = result.added })
    return result
  end

  --- sup.collect(path [, args]): the definitions the policy script at
  -- `path` declares (what `orch ctl reload` hands to sup.reload).
  function sup.collect(path, args)
    if type(path) ~= "string" then error("bad argument #1 to 'collect' (string expected, got " .. type(path) .. ")", 2) end
    if args ~= nil and type(args) ~= "table" then error("bad argument #2 to 'collect' (table expected, got " .. type(args) .. ")", 2) end
    return reload.collect(package.loaded["orch.supervisor"] or sup, path, args)
  end

  function sup.shutdown(code)
    if code ~= nil and math.type(code) ~= "integer" then error("bad argument #1 to 'shutdown' (integer expected)", 2) end
    local t = S:shutdown(code)
    if in_task() and orch.current() ~= t then t:join() end
    return true
  end

  -- HUP: what `orch ctl reload` does (the server's own reload when it
  -- serves this supervisor, else the script read again by sup.collect).
  local function reload_script()
    local ctl = package.loaded["orch.ctl"]
    local srv = ctl and ctl.server
    local mine = srv and (srv.supervisor or ctl.registered("supervisor")) == sup
    if mine and srv.on_reload then return srv.on_reload() end
    local a = rawget(_G, "arg")
    local script = mine and srv.script or (a and a[0])
    if type(script) ~= "string" then return nil, "reload: no script to read", "ENOENT" end
    local defs, err, code
    if ctl then defs, err, code = ctl.collect(script, sup) else defs, err, code = sup.collect(script, a) end
    if not defs then return nil, err, code end
    return sup.reload(defs)
  end

  function sup.handle_signals()
    if S.signal_handlers then return true end
    local count = 0
    local function on(name)
      count = count + 1
      if count == 1 and not S.shutdown_task then
        -- The stop signals first (Sup:shutdown's early pass), the line after.
        S:shutdown()
        S:log("received " .. name .. ": stopping every service (send it again to kill them)")
      else
        S:log("received " .. name .. " again: killing every service")
        S:escalate()
      end
    end
    local function hup()
      if S.shutdown_task then return end
      S:log("received HUP: reloading the policy script")
      local ok, r, err = pcall(reload_script)
      if not ok or not r then
        S:log("reload failed: " .. tostring(ok and err or r))
      else
        S:log(string.format("reload: %d kept, %d restarted, %d stopped, %d added",
          #r.kept, #r.restarted, #r.stopped, #r.added))
      end
    end
    local function usr1()
      S:log("received USR1: reopening log files")
      local sinks = {}
      for _, inst in ipairs(S:all_instances()) do sinks[#sinks + 1] = inst:log_sink() end
      require("orch.supervisor.log").reopen(sinks)
    end
    -- As PID 1, orch's init mode passes TERM/INT on to every child at
    -- once; the supervisor's ordered stop replaces that.
    if orch.getpid() == 1 and orch.proc.init_mode then orch.proc.init_mode { signals = {} } end
    S.signal_handlers = {
      orch.signal.on("TERM", function() on("TERM") end),
      orch.signal.on("INT", function() on("INT") end),
      orch.signal.on("HUP", hup),
      orch.signal.on("USR1", usr1),
    }
    return true
  end

  -- sup.run takes a hand-over (after `orch ctl reexec`) or a recovery
  -- (after kill -9) in steps that may wait; meanwhile the instances still
  -- have their fresh counters and states. Control requests wait for it.
  local settling, settled_cond = nil, orch.cond()
  local run_body

  --- sup.settled([timeout]): waits (in a task other than sup.run's own)
  -- until sup.run has taken what a previous orch handed over or left
  -- behind; true at once otherwise.
  function sup.settled(timeout)
    local me = orch.current()
    if not settling or not me or me == settling then return true end
    settled_cond:wait(timeout)
    return not settling
  end

  function sup.run()
    -- The graph's check, what a previous orch left (the state record, a
    -- hand-over) and the start of every service: the supervisor's own
    -- budget (Sup.own_budget), as sup.start's.
    local _ <close> = S.own_budget()
    local ok, err = pcall(S.check_graph, S)
    if not ok then error(err, 2) end
    settling = orch.current() or nil
    local ok2, err2 = pcall(run_body)
    settling = nil
    settled_cond:broadcast()
    if not ok2 then error(err2, 0) end
    return true
  end

  run_body = function()
    sup.handle_signals()
    -- libuv's thread pool now, while its threads can be made: libuv aborts
    -- orch when it cannot make them, and a pids limit reached later (a
    -- service's fork bomb in orch's cgroup) would kill the supervisor at
    -- its first host name resolved. (At the limit already: each use probes
    -- first, and fails with EAGAIN.)
    orch.signal._threadpool()
    -- A pid namespace without a /proc of its own: said once (and in every
    -- status), since what orch reads there goes through pidfds and some of
    -- it cannot be read at all.
    if not S.procfs_note and orch.proc.procfs() == "foreign" then
      S.procfs_note = "/proc is another pid namespace's (unshare --pid without --mount-proc?): "
        .. "processes are looked up there through pidfds; a kill whose process cannot be checked is refused"
      S:log(S.procfs_note)
    end
    -- orch.exit(code) stops every service first (lua/orch/init.lua).
    if not S.finished then
      orch._exit_hook(S, function(code)
        if S.finished then return nil end
        S.shutdown_code = code
        local me = orch.current()
        -- The stop's own tasks (a stop hook) go on with it; others wait.
        local inside = me == S.shutdown_task or S.stop_hook_tasks[me]
        if not S.shutdown_task then
          S:log(string.format("orch.exit(%d): stopping every service", code))
          S:shutdown(code)
        end
        return inside and "return" or "wait"
      end)
    end
    -- After `orch ctl reexec`: what ran before runs on (adopted), whether
    -- or not it starts by itself.
    handoff.load(S)
    -- After a killed orch: what it left running runs on (persist.lua),
    -- unless it is another script's: then nothing starts (exit 75).
    local refused = persist.recover(S)
    if refused then
      orch._exit_hook(S, nil)
      io.stderr:write("orch: ", refused, " (nothing was started)\n")
      orch.exit(75)
    end
    -- An instance with a hand-over entry goes on as it was (its process
    -- adopted, or its state resumed); the others start as usual.
    local h = S.inherited
    local settled = {}
    if h then
      handoff.restore(S, h)
      local names = {}
      for name in pairs(h) do
        if S.by_name[name] then names[#names + 1] = name end
      end
      table.sort(names)
      -- Those without a process first: a dependency keeps its state.
      for _, name in ipairs(names) do
        local e = h[name]
        if not e.pid then
          h[name] = nil
          settled[name] = handoff.resume(S.by_name[name], e)
        end
      end
      -- Those with a process: adopted when wanted; one that was being
      -- stopped is left to handoff.drop (TERM to its group). Like a large
      -- start, the adoption yields every START_BATCH (thousands of them in
      -- one resume ran past the Lua time budget on a loaded machine, and
      -- orch died with its services left running); a shutdown begun
      -- meanwhile leaves the rest to handoff.drop.
      local adopted = 0
      for _, name in ipairs(names) do
        local e = h[name]
        if e then
          if e.want then
            if adopted > 0 and adopted % START_BATCH == 0 and in_task() then
              orch.sleep(0)
              if S.shutdown_task then break end
            end
            adopted = adopted + 1
            settled[name] = true
            S.by_name[name]:start()
          else
            settled[name] = true
          end
        end
      end
    end
    -- What a previous orch left that nobody took over goes before anything
    -- starts (a service never runs twice).
    cgroup.sweep_strays(S)
    -- What was handed over or left behind is taken: control requests that
    -- waited go on (they see the start below as it happens).
    settling = nil
    settled_cond:broadcast()
    -- One start for all of them: it yields every START_BATCH launches (one
    -- call per service never did, and thousands of services ran into the
    -- Lua time budget).
    local list = {}
    for _, n in ipairs(S.order) do
      if S.services[n].cfg.autostart then
        for _, inst in ipairs(S.services[n].instances) do
          if not settled[inst.name] then list[#list + 1] = inst.name end
        end
      end
    end
    if #list > 0 then sup.start(list) else graph.prepare(S) end
    handoff.drop(S)
    persist.touch(S)
    S:hold()
    return true
  end

  --- The hand-over of `orch ctl reexec` (registered with ctl.on_reexec
  -- "supervisor"): a JSON-able state and the fds that must cross exec.
  function sup.handoff()
    return handoff.export(S)
  end

  --- Stops every service (task only; waits), removes the signal handlers
  -- and detaches the heartbeat tables. The supervisor stays usable.
  function sup.close()
    if in_task() then S:stop_ordered(S:all_instances()) end
    for _, h in ipairs(S.signal_handlers or {}) do h:stop() end
    S.signal_handlers = nil
    S:release()
    S:serve_http(sup, false)
    if S.escalate_timer then S.escalate_timer:stop() S.escalate_timer = nil end
    if S.orphan_watch then S.orphan_watch:stop() S.orphan_watch = nil end
    cgroup.close(S)
    persist.close(S)
    for k, t in pairs(S.tables) do
      if S.created_tables[k] then t:remove() end
      t:close()
      S.tables[k] = nil
      S.created_tables[k] = nil
    end
    return true
  end

  --- The instance objects (as hooks see them), for policies written on top.
  function sup.instance(name)
    return S.by_name[name]
  end

  --- Every instance object, in definition order (a new list: the caller
  -- may keep or change it).
  function sup.instances()
    return table.move(S:all_instances(), 1, #S:all_instances(), 1, {})
  end

  return sup
end

local M = new(true)
M.new = function() return new() end
-- The control plane finds the supervisor through its registry (ctl never
-- requires this module).
local ok, ctl = pcall(require, "orch.ctl")
if ok and type(ctl) == "table" and ctl.register then ctl.register("supervisor", M) end
return M
