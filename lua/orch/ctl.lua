--- orch.ctl: the control plane. The server side (a unix socket a running
-- orchestrator listens on; newline-delimited JSON requests and replies, see
-- doc/ctl.md), and the client side used by `orch ctl` and `orch attach`
-- (orch.ctl.client, re-exported here).
local orch = require "orch"
local check = require "orch.check"
-- The REPL's compiler and printer serve eval and error messages on the
-- server side only: `orch ctl` (the client) never loads them.
local function repl() return require "orch.repl" end

-- The client half (encoding, the socket directory, connections) is
-- orch.ctl.client, which `orch ctl` loads alone.
local client = require "orch.ctl.client"

local ctl = {}

ctl.MAX_LINE = 65536            -- longest request line
ctl.MAX_CONNECTIONS = 32
ctl.IDLE_TIMEOUT = 30           -- seconds a connection may stay silent
ctl.MAX_OUTPUT = 1024 * 1024    -- captured print output / result text per eval
ctl.FOLLOW_BUFFER = 1024 * 1024 -- bytes queued for a `tail -f` client before it is dropped

local RAW_ID = client._RAW_ID
-- A private key: a status reply whose "services" list is JSON text already.
local RAW_SERVICES = {}
for _, k in ipairs { "encode", "decode", "socket_dir", "ensure_socket_dir", "connect" } do ctl[k] = client[k] end
ctl.MAX_REPLY = client.MAX_REPLY

local function basename(p) return (p:gsub("/+$", ""):match("([^/]*)$")) end
local function dirname(p)
  local d = p:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  return d == "" and "/" or d
end

-- The end of the JSON string starting at s[i] (a quote).
local function string_end(s, i)
  local j = i + 1
  while true do
    local q = s:find('["\\]', j)
    if not q then return #s end
    if s:byte(q) == 92 then j = q + 2 else return q end
  end
end

-- The end of the JSON value starting at s[i].
local function value_end(s, i)
  local c = s:sub(i, i)
  if c == '"' then return string_end(s, i) end
  if c == "{" or c == "[" then
    local depth, j = 0, i
    while true do
      local q = s:find('[%[%]{}"]', j)
      if not q then return #s end
      local ch = s:sub(q, q)
      if ch == '"' then j = string_end(s, q) + 1
      else
        depth = depth + ((ch == "{" or ch == "[") and 1 or -1)
        if depth == 0 then return q end
        j = q + 1
      end
    end
  end
  local e = s:find("[%s,}%]]", i)
  return (e or #s + 1) - 1
end

-- The raw text of the last top-level member `key` of the JSON object in
-- `line` (already decoded: well-formed), or nil.
local function raw_member(line, key)
  local i = line:find("{", 1, true)
  local found
  while i do
    i = line:find('"', i + 1, true)
    if not i then break end
    local kend = string_end(line, i)
    local k = line:sub(i + 1, kend - 1)
    local v = line:find("%S", line:find(":", kend + 1, true) + 1)
    local vend = value_end(line, v)
    if k == key then found = line:sub(v, vend) end
    i = line:find("[,}]", vend + 1)
    if not i or line:sub(i, i) == "}" then break end
  end
  return found
end

--- The default socket of a script: <socket_dir>/<script name>.sock
-- ($ORCH_SOCKET when set).
function ctl.default_socket(script)
  local env = os.getenv("ORCH_SOCKET")
  if env and env ~= "" then return env end
  local name = basename(script or "orch"):gsub("%.lua$", ""):gsub("[^%w%._-]", "_")
  if name == "" or name == "." or name == ".." then name = "orch" end
  return ctl.socket_dir() .. "/" .. name .. ".sock"
end

--- Which script an `orch run` runs, as the owner of its control socket's
-- state (doc/cli.md#one-orchestrator-per-control-socket): `script`, its
-- absolute path as given (symbolic links kept: a release directory switched
-- by a link is still the same script; a relative path is taken from $PWD
-- when that is the working directory), `real`, its real path (nil when it
-- does not resolve), and `uid`, orch's effective uid. Read once, before
-- the script runs: it may change the working directory.
function ctl.script_identity(script)
  if type(script) ~= "string" or script == "" then
    error("bad argument #1 to 'script_identity' (script path expected)", 2)
  end
  local abs = script
  if abs:sub(1, 1) ~= "/" then
    local cwd = orch.realpath(".") or "."
    local pwd = os.getenv("PWD")
    if pwd and pwd:sub(1, 1) == "/" and orch.realpath(pwd) == cwd then cwd = pwd end
    abs = cwd .. "/" .. abs
  end
  -- Lexically tidied only ("a/./b", "a//b"): `..` is the real path's.
  local prev
  repeat prev = abs; abs = abs:gsub("/%./", "/") until abs == prev
  abs = abs:gsub("//+", "/"):gsub("/%.$", "")
  return { script = abs, real = orch.realpath(script) or nil, uid = orch.geteuid() }
end

---------------------------------------------------------------- the server

local Server = {}
Server.__index = Server

local function fail(msg, code) return { ok = false, error = msg, code = code or "EINVAL" } end

-- What the control plane serves, by name: modules register themselves
-- (orch.supervisor registers "supervisor" when it is loaded), so that ctl
-- never requires them.
local registry = {}

--- Registers `obj` under `name` (obj = nil removes it). A server without
-- its own `supervisor` option answers status, start, stop, ... with the
-- object registered as "supervisor".
function ctl.register(name, obj)
  if type(name) ~= "string" or name == "" then
    error("bad argument #1 to 'register' (non-empty string expected)", 2)
  end
  if obj ~= nil and type(obj) ~= "table" then
    error("bad argument #2 to 'register' (table or nil expected, got " .. type(obj) .. ")", 2)
  end
  registry[name] = obj
  return true
end

--- The object registered under `name`, or nil.
function ctl.registered(name)
  return registry[name]
end

local function supervisor(srv)
  local sup = srv.supervisor or registry.supervisor
  -- Right after `orch ctl reexec` (or a restart after kill -9), sup.run is
  -- still taking the hand-over: a request waits for it (bounded), so that no
  -- client sees fresh counters and states in between.
  if type(sup) == "table" and type(sup.settled) == "function" then sup.settled(10) end
  return sup
end

-- Calls sup[fname](...) and turns the outcome into a reply.
local function sup_call(srv, fname, ...)
  local sup = supervisor(srv)
  if not sup or type(sup[fname]) ~= "function" then
    return nil, fail("this orchestrator has no supervisor (sup." .. fname .. ")", "ENOSYS")
  end
  local r = table.pack(pcall(sup[fname], ...))
  if not r[1] then return nil, fail(repl().error_message(r[2]), "EFAILED") end
  if r[2] == nil or r[2] == false then
    if r[3] ~= nil then return nil, fail(tostring(r[3]), type(r[4]) == "string" and r[4] or "EFAILED") end
  end
  return table.unpack(r, 2, r.n)
end

local function check_name(req)
  if type(req.name) ~= "string" or req.name == "" then
    return fail("'" .. req.cmd .. "' needs 'name' (a service name or \"all\")")
  end
end

local handlers = {}

function handlers.ping(srv, req)
  return { ok = true, pid = orch.getpid(), version = orch.VERSION,
           script = srv.script, socket = srv.path }
end

-- The scheduler's jobs (when the script uses orch.scheduler; never
-- loaded here), as job:status() tables.
local function job_list()
  local sched = package.loaded["orch.scheduler"]
  if type(sched) ~= "table" or type(sched.jobs) ~= "function" then return {} end
  return sched.jobs()
end

local function jobs_status()
  local out = {}
  for i, j in ipairs(job_list()) do out[i] = j:status() end
  return out
end

function handlers.status(srv, req)
  if req.name ~= nil and type(req.name) ~= "string" then return fail("'name' must be a string") end
  -- A script with jobs and no supervisor still answers (with its jobs).
  if not supervisor(srv) and req.name == nil and #job_list() > 0 then
    return { ok = true, services = {}, jobs = jobs_status() }
  end
  local jobs = req.name == nil and jobs_status() or nil
  -- orch.supervisor renders a status itself, without a table per service
  -- (10,000 services): the table when the client asks for it
  -- (`"format": "table"`), else the JSON of the list, sent as it is. Both
  -- say how many are not running (the client's exit status).
  local sup = supervisor(srv)
  if type(sup) == "table" and type(sup.status_json) == "function" and type(sup.status_table) == "function" then
    local text, not_running, count = sup_call(srv, req.format == "table" and "status_table" or "status_json", req.name)
    if type(not_running) == "table" then return not_running end
    if req.format == "table" then
      return { ok = true, table = text, not_running = not_running, count = count, jobs = jobs }
    end
    return { ok = true, not_running = not_running, jobs = jobs, [RAW_SERVICES] = text }
  end
  local list, err = sup_call(srv, "status", req.name)
  if err then return err end
  if type(list) ~= "table" then list = {} end
  -- sup.status(name) may answer one service rather than a list.
  if list.name ~= nil then list = { list } end
  return { ok = true, services = list, jobs = jobs }
end

-- job: trigger, pause or resume the scheduler's jobs called `name`.
function handlers.job(srv, req)
  if type(req.name) ~= "string" or req.name == "" then return fail("'job' needs 'name' (a job's name)") end
  local action = req.action
  if action ~= "trigger" and action ~= "pause" and action ~= "resume" then
    return fail("'job' needs 'action': \"trigger\", \"pause\" or \"resume\"")
  end
  local n = 0
  for _, j in ipairs(job_list()) do
    if j.name == req.name then
      local ok, err, code = j[action](j)
      if not ok then return fail(tostring(err), code or "EFAILED") end
      n = n + 1
    end
  end
  if n == 0 then return fail("job: no such job '" .. req.name:sub(1, 64) .. "'", "ENOENT") end
  return { ok = true, count = n }
end

for _, verb in ipairs { "freeze", "thaw" } do
  handlers[verb] = function(srv, req)
    local bad = check_name(req)
    if bad then return bad end
    local r, err = sup_call(srv, verb, req.name)
    if err then return err end
    return { ok = true, result = type(r) ~= "table" and r or nil }
  end
end

-- Every instance's status by name (sup.status()), or {} without a supervisor.
local function snapshot(srv)
  local sup = supervisor(srv)
  local ok, list = pcall(function() return sup and sup.status() end)
  local by = {}
  for _, s in ipairs(ok and type(list) == "table" and list or {}) do by[s.name] = s end
  return by
end

-- Every instance's name, service, state and pid by name, from the instance
-- objects (sup.instances()): what a stop, start or restart compares before
-- and after. A full status reads /proc and each cgroup's cpu.stat per
-- running service (3-7 ms at 100 services), which each paid before it
-- began.
local function states(srv)
  local sup = supervisor(srv)
  if not (sup and type(sup.instances) == "function") then return snapshot(srv) end
  local ok, list = pcall(sup.instances)
  local by = {}
  for _, i in ipairs(ok and type(list) == "table" and list or {}) do
    by[i.name] = { name = i.name, service = i.service, state = i.state, pid = i.pid }
  end
  return by
end

local INACTIVE = { stopped = true, exited = true, fatal = true }
-- A state a start ends in: ready, or given up.
local SETTLED = { "running", "fatal", "exited", "stopped" }

-- What one instance's status says after a start: nil when it is up (ready,
-- or a one-shot that exited 0), else why not.
local function not_up(s, waited)
  local st = s.state
  if st == "running" or st == "frozen" then return nil end
  if st == "exited" and (s.exit_code == 0 or s.exit_code == nil) and s.exit_signal == nil then return nil end
  local why = s.reason
  if not why and (st == "exited" or st == "fatal") then
    why = s.exit_signal and ("killed by signal " .. tostring(s.exit_signal))
          or (s.exit_code and ("exit " .. tostring(math.tointeger(s.exit_code) or s.exit_code)))
  end
  if st == "starting" or st == "waiting" or st == "backoff" or st == "stopping" then
    return string.format("not ready after %g s (%s%s)", waited, st, why and (": " .. why) or "")
  end
  return st .. (why and (": " .. why) or "")
end

-- The lines a stop in progress reports ("waiting for web (pid 1234) to exit,
-- 3 s of 10"; the seconds count from the request): the instances that are
-- stopping.
local function stop_progress(srv, since, timeouts)
  local now, out = orch.now(), {}
  for name, s in pairs(snapshot(srv)) do
    if s.state == "stopping" then
      local limit = timeouts[s.service or name]
      out[#out + 1] = string.format("waiting for %s%s to exit, %d s%s", name,
        s.pid and (" (pid " .. tostring(math.tointeger(s.pid) or s.pid) .. ")") or "",
        math.floor(now - since), limit and (" of " .. limit) or "")
    end
  end
  table.sort(out)
  return out
end

-- The stop timeout of each service (its definition's stop.timeout, 10 by
-- default; none for a stop function).
local function stop_timeouts(srv)
  local sup, t = supervisor(srv), {}
  local ok, defs = pcall(function() return sup.services and sup.services() end)
  for _, d in ipairs(ok and type(defs) == "table" and defs or {}) do
    local st = d.stop
    if type(st) ~= "function" then t[d.name] = math.tointeger(st and st.timeout or 10) or (st and st.timeout or 10) end
  end
  return t
end

-- with_progress's first value when `limit` passed before fn ended.
local TIMED_OUT = {}

-- Runs fn (a stop or restart) in a task; while it runs, a client that asked
-- for progress gets a line { progress = "..." } every second about the
-- instances still stopping. Returns what fn returns; with `limit`
-- (seconds), TIMED_OUT once that much time passed first (fn's task goes
-- on). A limit of 0 lets fn's task run first, up to its first wait.
local function with_progress(srv, req, cs, fn, limit)
  local done, result = orch.cond(), nil
  local t = orch.task(function()
    result = table.pack(fn())
    done:signal()
  end)
  if not req.progress and not limit then
    t:join()
    return table.unpack(result, 1, result.n)
  end
  -- The timeouts are looked up at the first progress line (every
  -- definition as a table): the stop task has not run yet here.
  local since, timeouts = orch.now(), nil
  local deadline = limit and since + limit
  if limit == 0 then orch.sleep(0) end
  while not result do
    local step = req.progress and 1 or nil
    if deadline then
      local left = deadline - orch.now()
      if left <= 0 then return TIMED_OUT end
      if not step or left < step then step = left end
    end
    local ok = done:wait(step)
    if not result and not ok and req.progress and (not deadline or orch.now() < deadline) then
      timeouts = timeouts or stop_timeouts(srv)
      for _, line in ipairs(stop_progress(srv, since, timeouts)) do
        cs.conn:write(ctl.encode({ progress = line }) .. "\n")
      end
    end
  end
  return table.unpack(result, 1, result.n)
end

-- The direct dependency of `name` among `set` (for "client: stopped too,
-- it depends on redis").
local function depends_on_of(srv, service, set)
  local sup = supervisor(srv)
  local ok, defs = pcall(function() return sup.services and sup.services() end)
  for _, d in ipairs(ok and type(defs) == "table" and defs or {}) do
    if d.name == service then
      local deps = d.depends_on
      if type(deps) == "string" then deps = { deps } end
      for _, x in ipairs(type(deps) == "table" and deps or {}) do
        local dn = type(x) == "table" and (x.name or x[1]) or x
        if set[dn] then return dn end
      end
    end
  end
end

-- The instances a stop that has not ended is still at: those stopping, and
-- those of the target not stopped yet ({ name, pid }, by name).
local function still_stopping(srv, target)
  local named = {}
  if target ~= "all" then
    local sup = supervisor(srv)
    local ok, list = pcall(sup.status, target)
    if ok and type(list) == "table" then
      if list.name ~= nil then list = { list } end
      for _, s in ipairs(list) do named[s.name] = true end
    end
  end
  local out = {}
  for name, s in pairs(states(srv)) do
    if not INACTIVE[s.state] and (target == "all" or s.state == "stopping" or named[name]) then
      out[#out + 1] = { name = name, pid = s.pid }
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

local function wait_seconds(req)
  if req.wait == nil or req.wait == false then return nil end
  if req.wait == true then return 60 end
  if type(req.wait) ~= "number" or req.wait < 0 or req.wait ~= req.wait then return false end
  return req.wait
end

-- A stop (or a restart's) that `limit` ended first: an ETIMEDOUT failure
-- naming what is still stopping, in `stopping`.
local function still_stopping_failure(srv, req, verb, limit)
  local list = still_stopping(srv, req.name)
  local names = {}
  for i, s in ipairs(list) do
    names[i] = s.name .. (s.pid and (" (pid " .. tostring(math.tointeger(s.pid) or s.pid) .. ")") or "")
  end
  local f = fail(string.format("%s: still stopping after %g s (the %s goes on)",
    #names > 0 and table.concat(names, ", ") or req.name, limit, verb), "ETIMEDOUT")
  f.stopping = list
  return f
end

-- start / restart: the instances of the target, after the operation; with
-- `wait` (seconds, or true for 60), once each is ready or has failed. A
-- restart replies once the old processes have exited and the new ones
-- started; with `wait`, at most that late, its stop included (ETIMEDOUT
-- naming what is still stopping, the restart going on); with
-- `"wait": false`, as soon as it is under way (`restarting`: what it
-- stops), as a stop does.
local function start_like(verb)
  return function(srv, req, cs)
    local bad = check_name(req)
    if bad then return bad end
    local wait = wait_seconds(req)
    if wait == false then return fail("'wait' must be a number of seconds >= 0, true or false") end
    local waited = wait
    local before = states(srv)
    local r, err
    if verb == "restart" then
      local limit = req.wait == false and 0 or wait
      local since = orch.now()
      r, err = with_progress(srv, req, cs, function() return sup_call(srv, "restart", req.name) end, limit)
      if r == TIMED_OUT then
        if req.wait == false then return { ok = true, restarting = still_stopping(srv, req.name) } end
        return still_stopping_failure(srv, req, "restart", limit)
      end
      -- What is left of `wait` for the new processes to be ready.
      if wait then wait = math.max(0, wait - (orch.now() - since)) end
    else
      r, err = sup_call(srv, "start", req.name)
    end
    if err then return err end
    local sup = supervisor(srv)
    if wait then
      local ok, e = pcall(sup.wait, req.name, SETTLED, wait)
      if not ok then return fail(repl().error_message(e), "EFAILED") end
    end
    local list = sup.status(req.name) or {}
    if list.name ~= nil then list = { list } end
    local after = states(srv)
    local instances, failed, restarted = {}, {}, {}
    for _, s in ipairs(list) do
      local why = not_up(s, waited or 0)
      -- Without --wait only a failure already known counts (a spawn that
      -- failed: backoff or fatal with a reason).
      if why and not wait and not ((s.state == "backoff" or s.state == "fatal") and s.reason) then why = nil end
      instances[#instances + 1] = { name = s.name, state = s.state, pid = s.pid, reason = why or s.reason }
      if why then failed[#failed + 1] = s.name .. ": " .. why end
    end
    if verb == "restart" then
      -- What restarted: a new process, or started from not running.
      for name, s in pairs(after) do
        local b = before[name]
        if not INACTIVE[s.state] and b and (b.pid ~= s.pid or INACTIVE[b.state]) then restarted[#restarted + 1] = name end
      end
      table.sort(restarted)
    end
    if #failed > 0 then
      local f = fail(table.concat(failed, "; "), wait and "ETIMEDOUT" or "EFAILED")
      if wait then
        local timed_out = false
        for _, s in ipairs(list) do
          if s.state == "starting" or s.state == "waiting" or s.state == "backoff" then timed_out = true end
        end
        f.code = timed_out and "ETIMEDOUT" or "EFAILED"
      end
      f.instances, f.restarted = instances, verb == "restart" and restarted or nil
      return f
    end
    return { ok = true, instances = instances, restarted = verb == "restart" and restarted or nil }
  end
end
handlers.start = start_like("start")
handlers.restart = start_like("restart")

-- stop: also names the dependents it stopped; progress lines on request.
-- It replies once every process has exited; with `"wait": SECONDS`, at
-- most that late (then ETIMEDOUT with what is still stopping: the stop
-- goes on); with `"wait": false` as soon as the stop is under way.
function handlers.stop(srv, req, cs)
  local bad = check_name(req)
  if bad then return bad end
  local limit
  if req.wait == false then limit = 0
  elseif req.wait ~= nil and req.wait ~= true then
    if type(req.wait) ~= "number" or not (req.wait >= 0 and req.wait < math.huge) then
      return fail("'wait' must be a number of seconds >= 0, true or false")
    end
    limit = req.wait
  end
  -- A stop of all names every instance: no dependent is stopped "too", so
  -- neither the states before (a table per instance, made before the
  -- first stop signal) nor a status after are needed.
  local all = req.name == "all"
  local before = not all and states(srv)
  local r, err = with_progress(srv, req, cs, function() return sup_call(srv, "stop", req.name) end, limit)
  if r == TIMED_OUT then
    if req.wait == false then return { ok = true, stopping = still_stopping(srv, req.name) } end
    return still_stopping_failure(srv, req, "stop", limit)
  end
  if err then return err end
  if all then return { ok = true, also_stopped = {} } end
  local sup = supervisor(srv)
  local named = {}
  for _, s in ipairs(sup.status(req.name) or {}) do named[s.name] = true end
  local after, also, stopped_set = states(srv), {}, {}
  for name, s in pairs(after) do
    local b = before[name]
    if b and not INACTIVE[b.state] and INACTIVE[s.state] then stopped_set[s.service or name] = true end
  end
  for name, s in pairs(after) do
    local b = before[name]
    if not named[name] and b and not INACTIVE[b.state] and INACTIVE[s.state] then
      also[#also + 1] = { name = name, because = depends_on_of(srv, s.service or name, stopped_set) }
    end
  end
  table.sort(also, function(a, b) return a.name < b.name end)
  return { ok = true, also_stopped = also }
end

-- events: the recent state changes (`lines`, default 20), then with
-- `follow` each new one as { event = {...} } until the client closes the
-- connection. A client that reads slower than events come is dropped once
-- ctl.FOLLOW_BUFFER bytes wait for it (a last line says so).
function handlers.events(srv, req, cs)
  local sup = supervisor(srv)
  if not sup or type(sup.events) ~= "function" then
    return fail("this orchestrator has no supervisor (sup.events)", "ENOSYS")
  end
  local n = req.lines == nil and 20 or math.tointeger(req.lines)
  if not n or n < 0 then return fail("'lines' must be a non-negative integer") end
  local recent = sup.events()
  local list = {}
  for i = math.max(1, #recent - n + 1), #recent do list[#list + 1] = recent[i] end
  local reply = { ok = true, events = list }
  if not req.follow then return reply end
  return reply, function()
    local queue, queued, limit = {}, 0, srv.follow_buffer or ctl.FOLLOW_BUFFER
    local wake, done, dropped = orch.cond(), false, false
    local unsubscribe = sup.events(function(ev)
      if done or dropped then return end
      local ok, text = pcall(ctl.encode, { event = ev })
      if not ok then return end
      text = text .. "\n"
      if queued + #text > limit then
        dropped, queue, queued = true, {}, 0
      else
        queue[#queue + 1] = text
        queued = queued + #text
      end
      wake:signal()
    end)
    local writer = orch.task(function()
      while not done do
        if dropped then
          cs.conn:set_timeout(srv.idle_timeout)
          cs.conn:write(ctl.encode({ ok = false, error = "events: client too slow, dropped", code = "ENOBUFS" }) .. "\n")
          break
        elseif queued > 0 then
          local chunk = table.concat(queue)
          queue, queued = {}, 0
          if not cs.conn:write(chunk) then break end
        else
          wake:wait()
        end
      end
      done = true
      cs.conn:close()
    end)
    -- The client ends the stream by closing the connection.
    cs.conn:set_timeout(nil)
    while not done do
      if not cs.conn:read_line(ctl.MAX_LINE) then break end
    end
    done = true
    wake:signal()
    pcall(unsubscribe)
    if writer:status() ~= "done" then cs.conn:close() end
    cs.closed = true
  end
end

-- health: every critical service ready (every service when none is
-- critical), as the HTTP endpoint's /readyz says it.
function handlers.health(srv, req)
  local sup = supervisor(srv)
  if not sup or type(sup.status) ~= "function" or type(sup.services) ~= "function" then
    return fail("this orchestrator has no supervisor", "ENOSYS")
  end
  local ok, healthy, problems = pcall(require("orch.http").ready, sup)
  if not ok then return fail(repl().error_message(healthy), "EFAILED") end
  return { ok = true, healthy = healthy, problems = problems }
end

function handlers.signal(srv, req)
  local bad = check_name(req)
  if bad then return bad end
  local sig = req.signal
  if (type(sig) ~= "string" and math.type(sig) ~= "integer") or not orch.signal.number(sig) then
    return fail("'signal' needs a signal name or number, got " .. (type(sig) == "string" and ("'" .. sig .. "'")
      or tostring(sig)))
  end
  local _, err = sup_call(srv, "signal", req.name, sig)
  if err then return err end
  return { ok = true }
end

function handlers.tail(srv, req, cs)
  local bad = check_name(req)
  if bad then return bad end
  local n = req.lines == nil and 10 or math.tointeger(req.lines)
  if not n or n < 0 then return fail("'lines' must be a non-negative integer") end
  local lines, err = sup_call(srv, "tail", req.name, n)
  if err then return err end
  local reply = { ok = true, lines = type(lines) == "table" and lines or {} }
  if req.follow then return reply, function() srv:follow(cs, req.name) end end
  return reply
end

function handlers.reload(srv, req)
  local reload = srv.on_reload or function() return ctl.reload(srv) end
  local r = table.pack(pcall(reload))
  if not r[1] then return fail(repl().error_message(r[2]), "EFAILED") end
  if not r[2] then return fail(tostring(r[3] or "reload failed"), r[4] or "EFAILED") end
  local reply = {}
  for k, v in pairs(type(r[2]) == "table" and r[2] or {}) do reply[k] = v end
  reply.ok = true
  return reply
end

function handlers.shutdown(srv, req)
  return { ok = true }, function()
    local sup = supervisor(srv)
    if sup and type(sup.shutdown) == "function" then
      local ok, e = pcall(sup.shutdown)
      if not ok then orch.task(error, e, 0) end
    elseif sup and type(sup.stop) == "function" then
      pcall(sup.stop, "all")
    end
    srv:close()
    orch.exit(0)
  end
end

function handlers.reexec(srv, req)
  local plan, err, code = ctl.prepare_reexec(srv)
  if not plan then return fail(tostring(err), code or "EFAILED") end
  return { ok = true }, function() ctl.reexec(srv, plan) end
end

-- eval: the code runs in a task of this Lua state, with print captured.
function handlers.eval(srv, req, cs)
  if type(req.code) ~= "string" then return fail("'eval' needs 'code' (a string)") end
  -- The output is the printed lines joined by newlines, its first
  -- MAX_OUTPUT bytes (size: how many it holds; cut: more were printed). A
  -- line that goes past them is kept up to there: one line longer than
  -- MAX_OUTPUT showed nothing but the note.
  local out, size, cut, running = {}, 0, false, true
  local env = setmetatable({}, { __index = _G, __newindex = _G })
  rawset(env, "print", function(...)
    if not running then return print(...) end
    local t = {}
    for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
    if cut then return end
    local s = table.concat(t, "\t")
    local sep = #out > 0 and 1 or 0
    local room = ctl.MAX_OUTPUT - size - sep
    if #s > room then
      if room >= 0 then out[#out + 1] = s:sub(1, room) end
      cut = true
    else
      out[#out + 1] = s
      size = size + sep + #s
    end
  end)
  if req.chunkname ~= nil and type(req.chunkname) ~= "string" then
    return fail("'eval': 'chunkname' must be a string")
  end
  local fn, err, incomplete = repl().compile(req.code, "=" .. (req.chunkname or "eval"), env)
  if not fn then
    return { ok = false, error = err, code = "ESYNTAX", incomplete = incomplete or nil }
  end
  local t = orch.task(fn)
  -- While the code runs, a closed connection cancels it; request lines
  -- that arrive meanwhile wait their turn.
  local watcher = orch.task(function()
    while true do
      local line, _, code = cs.conn:read_line(ctl.MAX_LINE)
      if line then
        cs.pending[#cs.pending + 1] = line
        if #cs.pending >= 64 then return end
      elseif code ~= "ETIMEDOUT" then
        t:cancel()
        return
      end
    end
  end)
  local r = table.pack(pcall(t.join, t))
  running = false
  watcher:cancel()
  local output = table.concat(out, "\n")
  if cut then output = output .. "\n... (output truncated)" end
  if t:status() == "cancelled" then
    return { ok = false, error = "interrupted", code = "ECANCELED", output = output }
  end
  if not r[1] then
    return { ok = false, error = repl().error_message(r[2]), code = "EFAILED", output = output }
  end
  -- The results are formatted only as far as the reply shows them (the
  -- limit: strings, nested ones too, quoted that far, tables walked no
  -- further; the text's first MAX_OUTPUT bytes are the same). Quoting all
  -- of a 20 MB string held the loop, every other client and the
  -- supervisor for 0.5 s, 5 s when its bytes were control characters
  -- (f4db859 cut a string result; one in a table still took 1.2 s).
  local text = repl().pretty_results(table.pack(table.unpack(r, 2, r.n)), { limit = ctl.MAX_OUTPUT })
  if #text > ctl.MAX_OUTPUT then text = text:sub(1, ctl.MAX_OUTPUT) .. "... (truncated)" end
  return { ok = true, result = text, output = output }
end

local function send(conn, reply)
  -- A status's list comes as JSON text: the rest is encoded, the list
  -- written after it (one writev), the last member.
  local raw = rawget(reply, RAW_SERVICES)
  if raw then
    reply[RAW_SERVICES] = nil
    local ok, head = pcall(ctl.encode, reply)
    if ok then return conn:write(head:sub(1, -2), head == "{}" and '"services":' or ',"services":', raw, "}\n") end
  end
  local ok, text = pcall(ctl.encode, reply)
  if not ok then
    local f = fail("reply cannot be encoded: " .. tostring(text), "EFAILED")
    f.id, f[RAW_ID] = reply.id, rawget(reply, RAW_ID)
    text = ctl.encode(f)
  end
  return conn:write(text, "\n")
end

--- Handles one request line; returns the reply and maybe a function to run
-- once the reply is written.
function Server:dispatch(line, cs)
  local req, err = ctl.decode(line)
  if req == nil then return fail("malformed JSON: " .. tostring(err), "EPROTO") end
  if type(req) ~= "table" or type(req.cmd) ~= "string" then
    return fail("a request is a JSON object with a string 'cmd'", "EPROTO")
  end
  local h = handlers[req.cmd]
  local reply, after
  if not h then
    reply = fail("unknown command '" .. req.cmd:sub(1, 64) .. "'", "ENOSYS")
  else
    local ok, r, a = pcall(h, self, req, cs)
    if ok then reply, after = r, a
    else reply = fail("internal error: " .. repl().error_message(r), "EFAILED") end
  end
  if type(req.id) == "string" then
    reply.id = req.id
  elseif type(req.id) == "number" then
    -- cjson reads numbers as doubles and writes 14 digits: an id that is
    -- not a small integer is echoed as the request wrote it.
    local raw = not (math.type(req.id) == "integer" and math.abs(req.id) < 1e14) and raw_member(line, "id")
    if raw and tonumber(raw) then reply[RAW_ID] = raw else reply.id = req.id end
  end
  return reply, after
end

-- Streams new log lines of `name` until the client goes away: through
-- sup.follow(name, fn) -> unsubscribe when the supervisor has it, otherwise
-- by polling the log line counters of sup.status.
--
-- A line is produced inside the service's log task, which must never wait
-- for a client: it is queued (emit never waits) and a writer task of this
-- connection sends the queue. A client that reads slower than the service
-- writes lets the queue grow to `follow_buffer` bytes (ctl.FOLLOW_BUFFER);
-- then the queue is thrown away, the client gets a last line
-- "... dropped N bytes: client too slow" once it reads again, and the
-- connection ends. A dropped client that does not read for `idle_timeout`
-- seconds more is disconnected without it.
function Server:follow(cs, name)
  local sup = supervisor(self)
  local limit = self.follow_buffer or ctl.FOLLOW_BUFFER
  local done, dropped = false, nil
  local queue, queued, inflight = {}, 0, 0
  local wake = orch.cond()
  local writer_waiting = false
  local function emit(line)
    if done or dropped then return end
    local text = ctl.encode({ line = line }) .. "\n"
    if queued + inflight + #text > limit then
      dropped = queued + inflight + #text
      queue, queued = {}, 0
      io.stderr:write(string.format("orch.ctl: tail -f %s: client too slow, dropped (%d bytes)\n", name, dropped))
    else
      queue[#queue + 1] = text
      queued = queued + #text
    end
    if writer_waiting then wake:signal() end
  end
  local writer = orch.task(function()
    while not done do
      if dropped then
        local marker = ctl.encode({ line = string.format("... dropped %d bytes: client too slow", dropped),
                                    dropped = dropped }) .. "\n"
        cs.conn:set_timeout(self.idle_timeout)
        cs.conn:write(marker)
        break
      elseif queued > 0 then
        local chunk = table.concat(queue)
        queue, queued, inflight = {}, 0, #chunk
        local ok = cs.conn:write(chunk)
        inflight = 0
        if not ok then break end
      else
        writer_waiting = true
        wake:wait()
        writer_waiting = false
      end
    end
    done = true
    -- Ends the reading loop below (the client may never close).
    cs.conn:close()
  end)
  local unsubscribe, poller
  if type(sup.follow) == "function" then
    unsubscribe = sup.follow(name, emit)
  else
    local function count()
      local n = 0
      for _, st in ipairs(sup.status(name) or {}) do n = n + (st.log_lines or 0) end
      return n
    end
    local seen = count()
    poller = orch.task(function()
      while not done do
        orch.sleep(self.follow_interval or 0.2)
        local now = count()
        if now > seen then
          for _, line in ipairs(sup.tail(name, now - seen) or {}) do emit(line) end
        end
        seen = now
      end
    end)
  end
  -- The client ends a follow by closing the connection.
  cs.conn:set_timeout(nil)
  while not done do
    if not cs.conn:read_line(ctl.MAX_LINE) then break end
  end
  done = true
  if writer_waiting then wake:signal() end
  if poller then poller:cancel() end
  if type(unsubscribe) == "function" then pcall(unsubscribe) end
  -- A writer still sending (to a client that stopped reading) ends by its
  -- write's timeout or the close.
  if writer:status() ~= "done" then cs.conn:close() end
  cs.closed = true
end

-- orch's soft limit of open files ("unlimited" or a number), for messages:
-- getrlimit(2), which needs no fd (this is said when there is none: a
-- read of /proc/self/limits then failed, and the warning said "limit ?").
local function nofile()
  local ok, soft = pcall(orch.getrlimit, "nofile")
  return ok and soft or "?"
end

local function handle(srv, conn, cred)
  local cs = { conn = conn, cred = cred, pending = {} }
  if cred.emfile then
    -- Accepted with the runtime's spare fds (orch.listen, doc/stream.md):
    -- say why things fail, in orch's log and in every reply on this
    -- connection.
    cs.warning = string.format("orch is out of file descriptors (%s, limit %s): services may fail to start",
      cred.emfile, nofile())
    io.stderr:write("orch.ctl: ", cs.warning, "\n")
  end
  srv.conns[cs] = true
  conn:set_timeout(srv.idle_timeout)
  while not cs.closed and not srv.closed do
    local line, err, code
    if #cs.pending > 0 then line = table.remove(cs.pending, 1)
    else line, err, code = conn:read_line(srv.max_line) end
    if not line then
      if code == "EMSGSIZE" then
        send(conn, fail("request longer than " .. srv.max_line .. " bytes", "E2BIG"))
      elseif code == "ETIMEDOUT" then
        send(conn, fail("idle for " .. srv.idle_timeout .. " seconds", "ETIMEDOUT"))
      end
      break
    end
    line = line:gsub("\r$", "")
    if line:find("%S") then
      local reply, after = srv:dispatch(line, cs)
      if cs.warning and type(reply) == "table" then reply.warning = cs.warning end
      if not send(conn, reply) then break end
      if after then after() end
    end
  end
  srv.conns[cs] = nil
  srv.nconns = srv.nconns - 1
  -- A connection accepted at EMFILE gives the spare fds back to the
  -- runtime as it closes (before a crash-looping service takes the fd).
  conn:close()
end

local function reject(conn, msg, code)
  conn:set_timeout(1)
  send(conn, fail(msg, code))
  conn:close()
end

local function accept_loop(srv)
  local uid = orch.geteuid()
  while not srv.closed do
    local conn, emfile, code = srv.listener:accept()
    local cred
    if conn then
      cred = conn:peer_cred() or { uid = -1 }   -- a peer already gone: refused below
      cred.emfile = emfile
    end
    if not conn then
      if srv.closed or code == "ECANCELED" then return end
      -- Out of file descriptors (a flood): let the others finish first.
      orch.sleep(0.05)
    elseif cred.uid ~= uid and cred.uid ~= 0 then
      reject(conn, "permission denied: uid " .. cred.uid .. " may not use this socket", "EACCES")
    elseif srv.nconns >= srv.max_connections then
      reject(conn, "too many connections (" .. srv.max_connections .. ")", "EBUSY")
    else
      srv.nconns = srv.nconns + 1
      orch.task(handle, srv, conn, cred)
    end
  end
end

-- The directory of a socket: the default one is ours alone (0700, owned by
-- us); one given by path (`orch run --socket`, $ORCH_SOCKET, a script's
-- ctl.serve{socket = PATH}) is checked as a log's directory is
-- (orch.logfile.check_dir: symbolic links of root or ours are followed,
-- /var/run too) and, when missing, made (0700) in a parent so checked:
-- never through another user's link or in their directory, where they
-- could replace the socket and take the requests (eval code included) and
-- the fd holder's pipes (doc/security.md#the-runtime-directory).
local function socket_dir_for(path, default)
  if default and not os.getenv("ORCH_SOCKET") then return ctl.ensure_socket_dir() end
  local dir = dirname(path)
  local ok, err, code = orch.logfile.check_dir(dir)
  if not ok and code == "ENOENT" then
    ok, err, code = orch.logfile.check_dir(dirname(dir))
    if ok then
      ok, err, code = orch.private.mkdir(dir, false)
      if ok then ok, err, code = orch.logfile.check_dir(dir) end
    end
  end
  if ok then return true end
  if code == "EPERM" then
    err = ("refused %s: %s; another user could replace the socket (give a path in a directory "
      .. "only root or this user can write to; see doc/security.md)"):format(path, tostring(err))
  else
    -- Not a refusal: missing, not a directory, or the check could not be
    -- made (out of file descriptors, ...); nothing is made in an unchecked
    -- directory.
    err = ("cannot use the directory of %s: %s"):format(path, tostring(err))
  end
  return nil, err, code
end

---------------------------------------------------------------- the lock

--- Locks held by this process: socket path -> { lock = orch.Lock }.
ctl.locks = {}

--- What process `pid` runs, for a message only (never acted on): its
-- command line, arguments joined by spaces, when it is a process of our
-- uid (another user's is not ours to show), at most 200 bytes, every
-- control character escaped (\n, \27, ...: a command line is whatever
-- that process wrote into its memory, escape sequences for the terminal
-- included), like bytes that are not UTF-8. nil when it cannot tell.
function ctl.describe_pid(pid)
  local info = math.type(pid) == "integer" and orch.proc.info(pid)
  if not info or info.uid ~= orch.geteuid() or type(info.cmdline) ~= "table" or #info.cmdline == 0 then
    return nil
  end
  local text = table.concat(info.cmdline, " ")
  local cut = #text > 200
  if cut then text = text:sub(1, 200) end
  local function esc(c)
    return c == "\n" and "\\n" or c == "\t" and "\\t" or c == "\\" and "\\\\" or string.format("\\%d", c:byte())
  end
  -- C0 controls, DEL and backslash; then, in UTF-8, C1 controls (U+0080
  -- to U+009F); in anything else every byte past ASCII.
  text = text:gsub("[%c\127\\]", esc)
  if utf8.len(text) then
    text = text:gsub("\194([\128-\159])", function(c) return string.format("\\u{%x}", c:byte()) end)
  else
    text = text:gsub("[\128-\255]", function(c) return string.format("\\%d", c:byte()) end)
  end
  return text .. (cut and "..." or "")
end

--- Takes the lock of the control socket `path` (an flock on `path.lock`,
-- mode 0600), held until the process ends and across `orch ctl reexec`.
-- Returns true (also when this process holds it already), or nil, message,
-- code: "EAGAIN" with the holder's pid when another process holds it.
function ctl.claim(path)
  if type(path) ~= "string" or path == "" then error("bad argument #1 to 'claim' (socket path expected)", 2) end
  if ctl.locks[path] then return true end
  local lock, err, code
  local h = ctl.inherited()
  local given = h and type(h.lock) == "table" and h.lock.path == path and not h.lock.taken and h.lock
  if given and math.type(given.fd) == "integer" then
    given.taken = true
    lock, err, code = orch.flock(path .. ".lock", given.fd)
  else
    lock, err, code = orch.flock(path .. ".lock")
  end
  if not lock then
    -- Who holds it, for the person reading the message: the pid in the
    -- lock file and what that process runs (its script).
    local pid, file = tostring(err):match("^already held by pid (%d+) %(lock file (.*)%)$")
    local what = pid and ctl.describe_pid(math.tointeger(tonumber(pid)))
    if what then err = string.format("already held by pid %s (running %s; lock file %s)", pid, what, file) end
    return nil, "control socket " .. path .. ": " .. tostring(err), code
  end
  ctl.locks[path] = { lock = lock }
  return true
end

--- The longest control socket path `orch run` takes, in bytes: a unix
-- socket's path holds at most 107 (sockaddr_un's sun_path), and the
-- supervisor's fd holder binds PATH.holder (and its client PATH.client)
-- beside it, 7 bytes more. A longer path was taken and the fd holder then
-- failed ("dgram: file name too long"): the services' log pipes were not
-- held, and a kill -9 of orch killed them with SIGPIPE (doc/cli.md).
ctl.MAX_RUN_SOCKET = 100

--- For `orch run` (before the script runs): socket is the --socket PATH,
-- or nil (the default rules), or false (--no-socket). With a socket asked
-- for ($ORCH_SOCKET too) the lock is taken now; by default it is taken when
-- the script loads orch.supervisor, i.e. before it can start any service.
-- Returns true, or nil, message, code: "EAGAIN" when another orch holds
-- the lock (the message is also kept in ctl.refused for `orch run`'s exit
-- status), "ENAMETOOLONG" for a path longer than ctl.MAX_RUN_SOCKET.
-- ctl.locks[path] then also holds `script` (ctl.script_identity(script))
-- and `take_over` (`orch run --take-over`).
function ctl.claim_for_run(socket, script, take_over)
  if socket == false then return true end
  local env = os.getenv("ORCH_SOCKET")
  local h = ctl.inherited()
  local given = h and type(h.lock) == "table" and h.lock.path
  local path = socket or (env and env ~= "" and env) or given
  -- Who the socket's state belongs to (orch.supervisor.persist checks it):
  -- known now, before the script can change the working directory.
  local who = type(script) == "string" and script ~= "" and ctl.script_identity(script) or nil
  local function claim(p, default)
    if #p > ctl.MAX_RUN_SOCKET then
      return nil, string.format("control socket %s: path too long (%d bytes, at most %d: a unix socket's path "
        .. "holds 107, and the fd holder's, SOCKET.holder, is 7 longer); give a shorter --socket or $ORCH_SOCKET",
        p, #p, ctl.MAX_RUN_SOCKET), "ENAMETOOLONG"
    end
    local ok, err, code = socket_dir_for(p, default)
    if not ok and code ~= nil then
      -- The directory is someone else's or cannot be made: not a lock held
      -- by another orchestrator.
      return nil, err, code
    end
    if ok then ok, err, code = ctl.claim(p) end
    -- Only a lock another process holds is another orchestrator (EAGAIN);
    -- a lock file that cannot be one (a FIFO planted there, ...) is not.
    if not ok and code ~= "EAGAIN" then return nil, err, code end
    if not ok then ctl.refused = err end
    if ok then
      ctl.locks[p].script, ctl.locks[p].take_over = who, take_over == true
    end
    return ok, err, code
  end
  if path then return claim(path, socket == nil and not (env and env ~= "")) end
  if package.loaded["orch.supervisor"] then return claim(ctl.default_socket(script), true) end
  package.preload["orch.supervisor"] = function(name)
    package.preload[name] = nil
    local ok, err, code = claim(ctl.default_socket(script), true)
    if not ok and not ctl.refused then
      -- Running on without a control socket would go unnoticed (no ctl, no
      -- stop, no reload): stop loudly before any service starts.
      io.stderr:write("orch: ", (code == "ENAMETOOLONG" or tostring(err):match("^control socket ")) and ""
        or "control socket: ", tostring(err),
        " (nothing was started)\n")
      orch.exit(1)
    end
    if not ok then error(err, 0) end
    return require(name)
  end
  return true
end

local serve_opts = { socket = "nonempty", script = "any", supervisor = "any",
  max_connections = "posint", max_line = "posint", idle_timeout = "posnum", fd = "any",
  on_reload = "any", on_reexec = "any", follow_buffer = "posint" }

--- Starts the control server. opts: socket (path; default
-- ctl.default_socket(script)), script (default arg[0]), supervisor (the
-- module answering status/start/...; default: the one registered as "supervisor", see ctl.register),
-- max_connections, max_line, idle_timeout, follow_buffer, on_reload, on_reexec, fd (an
-- inherited listening socket). Returns the server or nil, message, code.
-- The socket never keeps orch alive by itself.
function ctl.serve(opts)
  opts = opts or {}
  -- Loaded now, not on the first eval or error: a server short of file
  -- descriptors must still be able to answer.
  repl()
  if type(opts) ~= "table" then error("bad argument #1 to 'serve' (table expected, got " .. type(opts) .. ")", 2) end
  check.options("serve", 1, opts, serve_opts)
  local script = opts.script or (rawget(_G, "arg") and arg[0]) or "orch"
  -- `orch run --socket P` serves P itself once the main chunk waits
  -- (ctl.autostart); a script that serves P too gets that server.
  local cur = ctl.server
  if cur and cur.autostarted and not cur.closed and opts.fd == nil and opts.socket ~= nil and cur.path == opts.socket then
    for _, k in ipairs { "supervisor", "on_reload", "on_reexec" } do
      if opts[k] ~= nil then cur[k] = opts[k] end
    end
    return cur
  end
  -- After `orch ctl reexec`, the same socket keeps listening: no client
  -- ever sees it closed.
  local fd = opts.fd
  local h = fd == nil and ctl.inherited()
  local inherited = h and type(h.listener) == "table" and not h.listener.taken and h.listener
  if inherited and (opts.socket == nil or opts.socket == inherited.path) then
    fd = inherited.fd
    inherited.taken = true
  end
  local path = opts.socket or (fd and inherited and inherited.path) or ctl.default_socket(script)
  local ok, err, code
  -- (A lock this process holds was taken in a directory checked then, by
  -- `orch run` before the script ran: a policy that took every fd since
  -- needs none for a second walk.)
  if fd == nil and not ctl.locks[path] then
    ok, err, code = socket_dir_for(path, opts.socket == nil)
    if not ok then return nil, err, code end
  end
  -- One orchestrator per socket: the lock first; a socket file left by a
  -- killed orch is replaced only by the process holding it.
  local had = ctl.locks[path]
  ok, err, code = ctl.claim(path)
  if not ok then return nil, err, code end
  if not had then ctl.locks[path].by_serve = true end
  ctl.locks[path].lock:write_pid()
  -- The control socket never keeps orch running by itself (ref = false).
  local l
  if fd then
    l, err, code = orch.listen{ unix = path, fd = fd, ref = false }
  else
    l, err, code = orch.listen{ unix = path, mode = tonumber("600", 8), backlog = 64, ref = false }
  end
  if not l then
    -- A lock this call took is given back: a failed serve holds nothing.
    if not had then ctl.locks[path].lock:close(); ctl.locks[path] = nil end
    local why = code == "EADDRINUSE" and "another process is listening there"
             or code == "EEXIST" and "exists and is not a socket"
             or tostring(err):gsub("^listen: ", "")
    return nil, ("listen: %s: %s"):format(path, why), code
  end
  local srv = setmetatable({
    path = path, script = script, listener = l, conns = {}, nconns = 0,
    supervisor = opts.supervisor, on_reload = opts.on_reload, on_reexec = opts.on_reexec,
    max_connections = opts.max_connections or ctl.MAX_CONNECTIONS,
    max_line = opts.max_line or ctl.MAX_LINE,
    idle_timeout = opts.idle_timeout or ctl.IDLE_TIMEOUT,
    follow_buffer = opts.follow_buffer or ctl.FOLLOW_BUFFER,
  }, Server)
  srv.task = orch.task(accept_loop, srv)
  ctl.server = srv
  return srv
end

--- Stops listening (the socket file is removed) and closes every connection.
function Server:close()
  if self.closed then return true end
  self.closed = true
  self.listener:close()
  -- A lock taken by ctl.serve goes with the server; `orch run`'s stays.
  local held = ctl.locks[self.path]
  if held and held.by_serve then
    held.lock:close()
    ctl.locks[self.path] = nil
  end
  for cs in pairs(self.conns) do
    cs.closed = true
    cs.conn:close()
  end
  if ctl.server == self then ctl.server = nil end
  return true
end
Server.__close = Server.close

---------------------------------------------------------------- reload

--- The service definitions of the policy script `path`, read by running
-- it again with a collecting supervisor (sup.collect; see doc/ctl.md,
-- reload). While it runs, `ctl.reloading` is true (a script can skip other
-- side effects then). Returns the list of definitions, or nil, message,
-- code.
function ctl.collect(path, sup)
  sup = sup or registry.supervisor
  if not sup or type(sup.collect) ~= "function" then
    return nil, "reload: this orchestrator has no supervisor that can read a script (sup.collect)", "ENOSYS"
  end
  ctl.reloading = true
  local r = table.pack(pcall(sup.collect, path, rawget(_G, "arg")))
  ctl.reloading = false
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

--- The default reload of `orch ctl reload`: collects the definitions of the
-- server's script (ctl.collect) and hands them to sup.reload. Returns its
-- result ({kept, restarted, stopped, added}).
function ctl.reload(srv)
  srv = srv or ctl.server
  local sup = supervisor(srv or {})
  if not sup or type(sup.reload) ~= "function" then
    return nil, "this orchestrator has no supervisor (sup.reload)", "ENOSYS"
  end
  local script = srv and srv.script or (rawget(_G, "arg") and arg[0])
  if not script then return nil, "reload: no script to read", "ENOENT" end
  local defs, err, code = ctl.collect(script, sup)
  if not defs then return nil, err, code end
  return sup.reload(defs)
end

---------------------------------------------------------------- reexec

local exporters, exporter_order = {}, {}

--- Registers what a module hands over to the orch that `orch ctl reexec`
-- executes: fn() returns a JSON-able state and optionally a list of file
-- descriptors that must stay open across the exec (they are inherited with
-- the same numbers). The new process reads the state with
-- ctl.inherited(name).
function ctl.on_reexec(name, fn)
  if type(name) ~= "string" or name == "" then
    error("bad argument #1 to 'on_reexec' (non-empty string expected)", 2)
  end
  if type(fn) ~= "function" then error("bad argument #2 to 'on_reexec' (function expected)", 2) end
  if not exporters[name] then exporter_order[#exporter_order + 1] = name end
  exporters[name] = fn
  return true
end

local handoff   -- nil: not read yet; false: none

--- In an orch started by `orch ctl reexec`: the state the previous image
-- exported under `name` (ctl.on_reexec), or the whole hand-over table when
-- name is nil; nil otherwise. The hand-over is read once, at the first call.
function ctl.inherited(name)
  if handoff == nil then
    handoff = false
    local v = os.getenv("ORCH_HANDOFF")
    local pid, fd = (v or ""):match("^(%d+):(%d+)$")
    -- The variable is inherited by children too: only the process that
    -- was exec'ed (same pid) owns the descriptor.
    if pid and tonumber(pid) == orch.getpid() then
      local data = orch.fd.read(tonumber(fd))
      local t = data and ctl.decode(data)
      if type(t) == "table" and t.version == 1 then
        handoff = t
        if type(t.listener) == "table" and math.type(t.listener.fd) == "integer" then
          orch.fd.inherit(t.listener.fd, false)
        end
        if type(t.lock) == "table" and math.type(t.lock.fd) == "integer" and t.lock.fd > 2 then
          orch.fd.inherit(t.lock.fd, false)
        end
        -- The modules' descriptors are close-on-exec again until their
        -- owners take them: no child spawned meanwhile inherits them.
        for _, fd in ipairs(type(t.fds) == "table" and t.fds or {}) do
          if math.type(fd) == "integer" and fd > 2 then orch.fd.inherit(fd, false) end
        end
      end
    end
  end
  if not handoff then return nil end
  if name == nil then return handoff end
  return type(handoff.modules) == "table" and handoff.modules[name] or nil
end

local function current_environment()
  local f = io.open("/proc/self/environ", "rb")
  local env = {}
  if f then
    for kv in f:read("a"):gmatch("([^%z]+)") do
      local k, v = kv:match("^([^=]+)=(.*)$")
      if k then env[k] = v end
    end
    f:close()
  end
  return env
end

-- Opens `path` to see that it can be read: true, or nil, message, code,
-- with why it cannot (io.open's error, and its errno named by orch.errname:
-- out of file descriptors is not a missing file).
local function readable(what, path)
  if type(path) ~= "string" then return nil, "reexec: no " .. what .. " to read", "ENOENT" end
  local f, err, errno = io.open(path, "rb")
  if f then f:close() return true end
  local why = tostring(err)
  if why:sub(1, #path + 2) == path .. ": " then why = why:sub(#path + 3) end
  return nil, ("reexec: %s %s cannot be read: %s"):format(what, path, why),
    math.type(errno) == "integer" and orch.errname(errno) or "EIO"
end

--- Checks that orch can be re-executed and collects the hand-over. Returns
-- a plan for ctl.reexec, or nil, message, code.
function ctl.prepare_reexec(srv)
  if type(orch.exec) ~= "function" then return nil, "reexec: orch.exec is not available", "ENOSYS" end
  local script = srv.script
  local can, err, code = readable("the script", script)
  if not can then return nil, err, code end
  local exe
  exe, err, code = orch.exepath()
  if not exe then return nil, err, code end
  can, err, code = readable("orch's executable", exe)
  if not can then return nil, err, code end
  -- Children nobody hands over would be started twice by the new image and
  -- orphaned: refuse unless the supervisor knows how to hand over.
  local sup = supervisor(srv)
  if sup and not exporters.supervisor and type(sup.handoff) == "function" then
    ctl.on_reexec("supervisor", sup.handoff)
  end
  if sup and not exporters.supervisor and type(sup.status) == "function" then
    local ok, list = pcall(sup.status)
    if ok and type(list) == "table" and #list > 0 then
      return nil, "reexec: the supervisor cannot hand over its services "
        .. "(it registers no ctl.on_reexec(\"supervisor\", ...)); nothing was done", "ENOSYS"
    end
  end
  local modules, fds = {}, {}
  for _, name in ipairs(exporter_order) do
    local ok, st, extra = pcall(exporters[name])
    if not ok then return nil, "reexec: '" .. name .. "' cannot hand over its state: " .. repl().error_message(st), "EFAILED" end
    modules[name] = st
    for _, fd in ipairs(type(extra) == "table" and extra or {}) do fds[#fds + 1] = fd end
  end
  local data = { version = 1, pid = orch.getpid(), modules = modules, fds = fds,
                 listener = { fd = srv.listener:fd(), path = srv.path } }
  local held = ctl.locks[srv.path]
  if held then data.lock = { fd = held.lock:fd(), path = srv.path } end
  local ok, text = pcall(ctl.encode, data)
  if not ok then return nil, "reexec: the state cannot be encoded: " .. tostring(text), "EINVAL" end
  return { exe = exe, script = script, text = text, fds = fds }
end

--- Executes orch again (`orch run SCRIPT ARGS...`, the same pid) with the
-- hand-over in an inherited memfd named by ORCH_HANDOFF=<pid>:<fd>, and the
-- control socket's listening descriptor. Returns only if exec failed:
-- nil, message, code (everything is as before).
function ctl.reexec(srv, plan)
  local memfd, err, code = orch.fd.memfd(plan.text)
  if not memfd then return nil, err, code end
  local keep = { memfd, srv.listener:fd() }
  local held = ctl.locks[srv.path]
  if held then keep[#keep + 1] = held.lock:fd() end
  for _, fd in ipairs(plan.fds) do keep[#keep + 1] = fd end
  for _, fd in ipairs(keep) do orch.fd.inherit(fd, true) end
  local env = current_environment()
  env.ORCH_HANDOFF = orch.getpid() .. ":" .. memfd
  local args = { "run", plan.script }
  local a = rawget(_G, "arg") or {}
  for i = 1, #a do args[#args + 1] = a[i] end
  io.stdout:flush()
  io.stderr:flush()
  local ok
  ok, err, code = orch.exec(plan.exe, args, env)
  for _, fd in ipairs(keep) do orch.fd.inherit(fd, false) end
  orch.fd.read(memfd)    -- closes it
  io.stderr:write("orch: reexec failed: ", tostring(err), "\n")
  return ok, err, code
end

---------------------------------------------------------------- orch run

-- READY=1 to systemd (Type=notify). A policy may have taken every fd
-- before its main chunk ended: neither loading orch.sdnotify nor its
-- datagram must then cost the start (systemd would kill orch at its start
-- timeout). Said once on stderr and tried again every second until sent.
local function notify_ready()
  if not os.getenv("NOTIFY_SOCKET") then return end
  local said, timer
  local function try()
    local ok, sd = pcall(require, "orch.sdnotify")
    local sent, err
    if ok then sent, err = sd.ready() else err = sd end
    if sent ~= nil then
      if said then io.stderr:write("orch: systemd notification: READY=1 sent\n") end
      if timer then timer:stop() end
      return
    end
    if not said then
      said = true
      io.stderr:write("orch: systemd notification: READY=1 not sent: ", tostring(err),
        " (trying again every second)\n")
    end
    if not timer then timer = orch.timer.every(1, try, { ref = false }) end
  end
  try()
end

--- What `orch run` starts next to the script (as its second task, so it
-- runs once the script's main chunk has ended or waits, i.e. once the
-- policies are loaded): tells systemd READY=1 (and starts the watchdog
-- pets) when NOTIFY_SOCKET is set, and starts the control server when a
-- socket was asked for (`--socket PATH`, $ORCH_SOCKET) or the script uses
-- the supervisor. opts: socket, script, quiet (no warning when the socket
-- cannot be opened).
function ctl.autostart(opts)
  opts = opts or {}
  local h = ctl.inherited()
  if not ctl.server then
    local wanted = opts.socket or os.getenv("ORCH_SOCKET") or registry.supervisor
      or (h and type(h.listener) == "table")
    if wanted and opts.socket ~= false then
      local srv, err, code = ctl.serve{ socket = opts.socket, script = opts.script }
      if srv then srv.autostarted = true end
      if not srv and not opts.quiet then
        io.stderr:write("orch: control socket: ", tostring(err), "\n")
      end
      if not srv and (code == "EPERM" or code == "ENOTDIR") and not opts.socket
         and not os.getenv("ORCH_SOCKET") and not (h and type(h.listener) == "table") then
        -- The default directory is someone else's: running on without a
        -- control socket would go unnoticed (no ctl, no stop, no reload).
        -- Stop loudly instead (doc/security.md#the-runtime-directory).
        io.stderr:write("orch: stopping: no control socket (see above)\n")
        local sup = registry.supervisor
        if sup and sup.shutdown then sup.shutdown(1) else orch.exit(1) end
      end
    end
  end
  -- An inherited control socket nobody took over would accept clients
  -- that no one answers: close it (and remove its file).
  if h and type(h.listener) == "table" and not h.listener.taken then
    h.listener.taken = true
    local l = orch.listen{ unix = h.listener.path, fd = h.listener.fd, ref = false }
    if l then l:close() end
  end
  notify_ready()
  return ctl.server
end

return ctl
