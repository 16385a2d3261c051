--- orch.http: a small read-only HTTP/1.1 endpoint on the loop, for probes
-- and metrics (Kubernetes liveness/readiness, Prometheus). GET and HEAD
-- only; every response closes its connection. Requests are bounded (size,
-- time, connections), so a slow or hostile client costs a task and a few
-- KiB, never the loop.
--
--   local http = require "orch.http"
--   local srv = assert(http.serve{ listen = "127.0.0.1:9100", routes = {
--     ["/hello"] = function(req) return 200, "hello\n" end } })
--
-- http.supervisor(opts) serves /metrics, /healthz, /readyz and /status of a
-- supervisor (see doc/http.md).
local orch = require "orch"

local M = {}

-- Bytes asked of a connection per read.
local READ_CHUNK = 4096

local REASONS = {
  [200] = "OK", [400] = "Bad Request", [404] = "Not Found", [405] = "Method Not Allowed",
  [408] = "Request Timeout", [413] = "Content Too Large", [431] = "Request Header Fields Too Large",
  [500] = "Internal Server Error", [503] = "Service Unavailable",
}

local function send(conn, method, status, body, ctype)
  body = body or ""
  local head = string.format("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" ..
    "Cache-Control: no-store\r\nConnection: close\r\n\r\n", status, REASONS[status] or "Status",
    ctype or "text/plain; charset=utf-8", #body)
  -- The server may have been closed (srv:close) while a route ran.
  pcall(conn.write, conn, head, method == "HEAD" and "" or body)
end

-- %XX escapes of a query component.
local function unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end))
end

-- The status of a request the parser refused.
local function refusal(code)
  if code == "HPE_HEADER_OVERFLOW" then return 431, "request too large\n" end
  return 400, "bad request\n"
end

-- The request table of orch.HttpParser's result: query decoded.
local function request_of(r)
  local req = { method = r.method, path = r.path, query = {}, headers = r.headers, version = r.version,
                target = r.target }
  -- Only origin-form targets ("/path?query"): no absolute URL, no "*".
  if not req.path or r.target:sub(1, 1) ~= "/" then return nil, 400 end
  if r.version ~= "1.1" and r.version ~= "1.0" then return nil, 400 end
  -- The library (built lenient) lets a space into a header name: a field
  -- name is a token (RFC 9110).
  for k in pairs(r.headers) do
    if not k:match("^[%w!#$%%&'*+.^_`|~-]+$") then return nil, 400 end
  end
  for pair in (r.query_string or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    req.query[unescape(k)] = unescape(v)
  end
  return req
end

--- Parses a request head (the bytes before the blank line) with the HTTP
-- parser (orch.httpparse): the request line and headers. Returns
-- { method, path, query = {k = v}, headers = {lower-case name = value},
-- version, target } or nil, status (400, 431).
function M.parse_request(head)
  if type(head) ~= "string" then error("bad argument #1 to 'parse_request' (string expected, got " .. type(head) .. ")", 2) end
  local p <close> = orch.httpparse.request { max_head = math.max(64, #head + 4) }
  local r, _, code = p:feed(head .. "\r\n\r\n")
  if not r then return nil, (refusal(code or "HPE_INVALID_EOF_STATE")) end
  return request_of(r)
end

local check = require "orch.check"

local function routes_rule(v)
  if type(v) ~= "table" then return false, "table" end
  for path, fn in pairs(v) do
    if type(path) ~= "string" or path:sub(1, 1) ~= "/" or type(fn) ~= "function" then
      return false, "\"/path\" = function"
    end
  end
  return true
end

local serve_options = { listen = "any", routes = routes_rule, max_request = "posint", timeout = "posnum",
  max_connections = "posint" }

-- "127.0.0.1:9100", "[::1]:9100", ":9100", 9100 or "9100" (a port alone:
-- 127.0.0.1), "/run/orch/web.http" (a unix socket path), or a table
-- { host = , port = } / { unix = }.
local function listen_spec(v)
  if type(v) == "table" then return v end
  if math.type(v) == "integer" or type(v) == "string" and v:match("^%d+$") then v = ":" .. v end
  if type(v) ~= "string" or v == "" or v:find("\0", 1, true) then return nil end
  if v:sub(1, 1) == "/" or v:sub(1, 1) == "@" then return { unix = v } end
  local host, port = v:match("^%[([%x:]+)%]:(%d+)$")
  if not host then host, port = v:match("^([^:]*):(%d+)$") end
  port = math.tointeger(tonumber(port))
  if not port or port < 0 or port > 65535 then return nil end
  if host == "" then host = "127.0.0.1" end
  return { host = host, port = port }
end

--- http.serve{ listen, routes [, max_request] [, timeout] [, max_connections] }
-- Starts serving in a task of its own. `routes` maps a path to
-- function(req) -> status, body [, content_type]. Returns the server
-- (`srv.port`, `srv.address`, `srv:close()`) or nil, message, code.
function M.serve(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'serve' (table expected, got " .. type(opts) .. ")", 2) end
  check.options("serve", 1, opts, serve_options)
  local spec = listen_spec(opts.listen)
  if not spec then error("bad argument #1 to 'serve' (option 'listen': \"host:port\", a port or a socket path expected)", 2) end
  check.value("serve", 1, "routes", opts.routes, routes_rule)
  local max_request = opts.max_request or 8192
  local timeout = opts.timeout or 5
  local max_connections = opts.max_connections or 64

  local listener, err, code = orch.listen(spec)
  if not listener then return nil, err, code end
  local srv = { listener = listener, port = listener.port, conns = {}, n = 0 }
  srv.address = spec.unix or string.format("%s:%d", spec.host or "127.0.0.1", listener.port)

  -- One request per connection, read with orch's streams and parsed by
  -- orch.httpparse. The whole request has `timeout` seconds (a client that
  -- sends a byte now and then gets no more time than a silent one) and
  -- `max_request` bytes of head; no body is accepted.
  local function handle(conn)
    local deadline = orch.now() + timeout
    local parser <close> = orch.httpparse.request { max_head = math.max(64, max_request) }
    local r, _, pcode
    while true do
      local left = deadline - orch.now()
      if left <= 0 then send(conn, "GET", 408, "request timeout\n") return end
      conn:set_timeout(left)
      local chunk, _, rcode = conn:read(READ_CHUNK)
      if not chunk then
        if rcode == "ETIMEDOUT" then send(conn, "GET", 408, "request timeout\n") return end
        if rcode then return end                  -- reset by the peer
        r, _, pcode = parser:finish()          -- the client closed its side
        if not r and pcode == "HPE_INVALID_EOF_STATE" then return end
        break
      end
      r, _, pcode = parser:feed(chunk)
      if r ~= false then break end
    end
    if not r then
      local st, body = refusal(pcode)
      send(conn, "GET", st, body)
      return
    end
    local req, status = request_of(r)
    if not req then send(conn, "GET", status, "bad request\n") return end
    if req.method ~= "GET" and req.method ~= "HEAD" then send(conn, "GET", 405, "only GET and HEAD\n") return end
    local route = opts.routes[req.path]
    if not route then send(conn, req.method, 404, "not found\n") return end
    local ok, st, body, ctype = pcall(route, req)
    if not ok then
      io.stderr:write("orch.http: ", req.path, ": ", tostring(st), "\n")
      send(conn, req.method, 500, "internal error\n")
      return
    end
    send(conn, req.method, math.tointeger(st) or 500, body, ctype)
  end

  srv.task = orch.task(function()
    while true do
      local conn, aerr, acode = listener:accept()
      if not conn then
        if acode == "ECANCELED" then return end
        orch.sleep(0.05)          -- EMFILE and the like: back off, keep serving
      elseif srv.n >= max_connections then
        conn:close()
      else
        srv.n = srv.n + 1
        srv.conns[conn] = true
        orch.task(function()
          local _ <close> = setmetatable({}, { __close = function()
            srv.conns[conn] = nil
            srv.n = srv.n - 1
            conn:close()
          end })
          handle(conn)
        end)
      end
    end
  end)

  function srv.close()
    if srv.closed then return true end
    srv.closed = true
    -- The accept task may not have run yet: it never touches the closed
    -- listener.
    if srv.task ~= orch.current() then srv.task:cancel() end
    listener:close()
    for c in pairs(srv.conns) do c:close() end
    return true
  end
  return srv
end

-- ------------------------------------------------------------ a supervisor's endpoints

local function esc_label(s)
  return (tostring(s):gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub('"', '\\"'))
end

local EXIT_REASONS = { "stopped", "success", "failure", "signal", "health_check", "heartbeat", "start_timeout",
  "limit", "oom", "not_ready", "lost" }

-- The text of small counts and a newline, made once: most counters of a
-- scrape (restarts, exits, dropped lines) are small, and a number turned
-- into text costs a formatted print each time.
local SMALL = {}
for v = 0, 15 do SMALL[v] = v .. "\n" end

local function num(v)
  if math.type(v) == "integer" then return tostring(v) end
  if v ~= v then return "NaN" end
  return string.format("%.6f", v)
end

-- The label fragments of an instance, escaped once and kept while its
-- object lives (rebuilt if its name changes): l = 'service="s",instance="i"'
-- and L = '{' .. l .. '} ' (with the space before a value).
local label_cache = setmetatable({}, { __mode = "k" })
local scratch = {}   -- /proc/PID/stat is read into it, not a table each
local cgroup = require "orch.supervisor.cgroup"
local function labels_of(inst)
  local c = label_cache[inst]
  if c and c.name == inst.name then return c end
  local l = 'service="' .. esc_label(inst.service or inst.name) .. '",instance="' .. esc_label(inst.name) .. '"'
  c = { name = inst.name, l = l, L = "{" .. l .. "} " }
  label_cache[inst] = c
  return c
end

--- The Prometheus text exposition (version 0.0.4) of a supervisor, of the
-- scheduler's jobs and watchdogs of this process, and of orch itself.
--
-- Built for scrapes of hundreds of services: the figures are read from the
-- instance objects (sup.instances), a live process's accounting with one
-- read per file (its cgroup's cpu.stat and memory figure through held fds,
-- cg:usage, or /proc/PID/stat without cgroups), every value fresh at the
-- scrape; the text is a list of pieces (cached label fragments, names,
-- values) joined once, with no table or string made per service.
function M.metrics(sup)
  local b, n = {}, 0                       -- the pieces of the text
  local function head(name, kind, help)
    b[n + 1] = "# HELP " .. name .. " " .. help .. "\n# TYPE " .. name .. " " .. kind .. "\n"
    n = n + 1
  end
  local insts = sup and sup.instances() or {}
  local k = #insts
  -- What each instance needs that is not a field: its labels, its state,
  -- whether its process runs, and that process's accounting (as the text
  -- of a sample's value: number and newline).
  local lab, state, up, cpu, mem = {}, {}, {}, {}, {}
  for i = 1, k do
    local inst = insts[i]
    lab[i] = labels_of(inst)
    state[i] = inst.frozen and "frozen" or inst.state
    local run = inst.run
    if run and run.alive and inst.pid then
      up[i] = run
      local c, m
      if run.cgroup then c, m = cgroup.usage(run) end
      if not c then                       -- no cgroup: the main process
        local ps = orch.proc.stat(inst.pid, scratch)
        if ps then c, m = ps.cpu, ps.rss end
      end
      if c then cpu[i] = c .. "\n" end
      m = m and math.tointeger(m) or m
      if m then mem[i] = m .. "\n" end
    end
  end
  if k > 0 then
    head("orch_service_up", "gauge", "Whether the service instance has a running process (1) or not (0).")
    for i = 1, k do
      b[n + 1], b[n + 2], b[n + 3] = "orch_service_up", lab[i].L, up[i] and "1\n" or "0\n"
      n = n + 3
    end
    head("orch_service_ready", "gauge", "Whether the service instance is ready (state running).")
    for i = 1, k do
      b[n + 1], b[n + 2], b[n + 3] = "orch_service_ready", lab[i].L, state[i] == "running" and "1\n" or "0\n"
      n = n + 3
    end
    head("orch_service_state", "gauge", "The service instance's current state (label state; always 1).")
    for i = 1, k do
      b[n + 1], b[n + 2], b[n + 3], b[n + 4], b[n + 5] = "orch_service_state{", lab[i].l, ',state="', state[i], '"} 1\n'
      n = n + 5
    end
    head("orch_service_restarts_total", "counter", "Restarts of the service instance since orch started it.")
    for i = 1, k do
      local v = insts[i].restarts or 0
      b[n + 1], b[n + 2], b[n + 3] = "orch_service_restarts_total", lab[i].L, SMALL[v] or v .. "\n"
      n = n + 3
    end
  end
  -- Only the reasons seen (eleven zeros per instance would make a scrape
  -- of hundreds of services several times larger).
  local started = false
  for i = 1, k do
    local counts = insts[i].exits
    if counts and next(counts) ~= nil then
      if not started then
        head("orch_service_exits_total", "counter",
          "Ends of the service instance's processes, by reason (stopped, success, failure, signal, health_check, heartbeat, start_timeout, limit, oom, not_ready, lost).")
        started = true
      end
      for _, r in ipairs(EXIT_REASONS) do
        local c = counts[r]
        if c then
          b[n + 1], b[n + 2], b[n + 3], b[n + 4], b[n + 5], b[n + 6] =
            "orch_service_exits_total{", lab[i].l, ',reason="', r, '"} ', SMALL[c] or c .. "\n"
          n = n + 6
        end
      end
    end
  end
  -- The families of running processes (name, values by instance).
  local function running(name, kind, help, v)
    local first = true
    for i = 1, k do
      if v[i] then
        if first then head(name, kind, help) first = false end
        b[n + 1], b[n + 2], b[n + 3] = name, lab[i].L, v[i]
        n = n + 3
      end
    end
  end
  running("orch_service_cpu_seconds_total", "counter",
    "CPU time of the running process: its whole cgroup, or its main process without cgroups.", cpu)
  running("orch_service_memory_bytes", "gauge",
    "Memory of the running process: its cgroup's memory.current, or its main process's RSS without cgroups.", mem)
  -- The two below reuse cpu and mem (read above) for their values. A
  -- start time's text is kept with the labels: it changes once per run.
  for i = 1, k do
    local t = up[i] and insts[i].start_time
    if t then
      local c = lab[i]
      if c.start ~= t then c.start, c.start_text = t, t .. "\n" end
      cpu[i] = c.start_text
    else
      cpu[i] = nil
    end
  end
  running("orch_service_start_time_seconds", "gauge", "When the running process started (Unix time).", cpu)
  local hb = package.loaded["orch.supervisor.heartbeat"]
  for i = 1, k do
    local age = hb and up[i] and hb.age(up[i])
    mem[i] = age and age .. "\n" or nil
  end
  running("orch_service_heartbeat_age_seconds", "gauge",
    "Seconds since the running process's last heartbeat (services with a heartbeat, once ready).", mem)
  started = false
  for i = 1, k do
    local h = insts[i].health
    if h then
      if not started then
        head("orch_service_health_checks_total", "counter", "Health checks run after start-up, by result (ok, failed).")
        started = true
      end
      local l = lab[i].l
      b[n + 1], b[n + 2], b[n + 3], b[n + 4], b[n + 5] = "orch_service_health_checks_total{", l, ',result="ok"} ', h.ok, "\n"
      b[n + 6], b[n + 7], b[n + 8], b[n + 9], b[n + 10] = "orch_service_health_checks_total{", l, ',result="failed"} ', h.failed, "\n"
      n = n + 10
    end
  end
  if k > 0 then
    head("orch_service_log_lines_total", "counter", "Output lines the service wrote.")
    for i = 1, k do
      local sink = insts[i]:log_sink()
      local v = sink and sink.lines or 0
      b[n + 1], b[n + 2], b[n + 3] = "orch_service_log_lines_total", lab[i].L, SMALL[v] or v .. "\n"
      n = n + 3
    end
    head("orch_service_log_dropped_total", "counter", "Output lines that could not be written to the log.")
    for i = 1, k do
      local sink = insts[i]:log_sink()
      local v = sink and sink.dropped or 0
      b[n + 1], b[n + 2], b[n + 3] = "orch_service_log_dropped_total", lab[i].L, SMALL[v] or v .. "\n"
      n = n + 3
    end
  end

  -- The other families have few samples, written in any order: each keeps
  -- its lines until the end (the format wants a family's samples together).
  local fams = {}
  local function few(name, kind, help)
    local f = { name = name, lines = { "# HELP " .. name .. " " .. help, "# TYPE " .. name .. " " .. kind } }
    fams[#fams + 1] = f
    return function(labels, v, suffix)
      f.lines[#f.lines + 1] = name .. (suffix or "") .. labels .. " " .. num(v)
    end
  end

  -- The scheduler's jobs (aggregated by name: two jobs of one name are one
  -- series) and the watchdogs, when the script uses them.
  local sched = package.loaded["orch.scheduler"]
  if sched and sched.jobs then
    local runs = few("orch_job_runs_total", "counter", "Runs of the scheduler job that finished.")
    local running = few("orch_job_running", "gauge", "Runs of the scheduler job in progress.")
    local skipped = few("orch_job_skipped_total", "counter", "Runs of the scheduler job skipped (a run was still in progress).")
    local dur = few("orch_job_run_duration_seconds", "summary", "How long the scheduler job's runs took.")
    local by, order = {}, {}
    for _, job in ipairs(sched.jobs()) do
      local a = by[job.name]
      if not a then
        a = { runs = 0, running = 0, skipped = 0, seconds = 0 }
        by[job.name] = a
        order[#order + 1] = job.name
      end
      a.runs = a.runs + job.runs - job.running
      a.running = a.running + job.running
      a.skipped = a.skipped + job.skipped
      a.seconds = a.seconds + (job.run_seconds or 0)
    end
    for _, n in ipairs(order) do
      local a, L = by[n], '{job="' .. esc_label(n) .. '"}'
      runs(L, a.runs)
      running(L, a.running)
      skipped(L, a.skipped)
      dur(L, a.seconds, "_sum")
      dur(L, a.runs, "_count")
    end
  end
  local wdm = package.loaded["orch.watchdog"]
  if wdm and wdm.list then
    local watching = few("orch_watchdog_watched", "gauge", "Processes the watchdog watches.")
    local timeouts = few("orch_watchdog_timeouts_total", "counter", "Heartbeat deadlines the watchdog saw missed.")
    local signals = few("orch_watchdog_signals_total", "counter", "Signals the watchdog sent.")
    local seen = {}
    for _, wd in ipairs(wdm.list()) do
      local key = string.format("0x%08x", wd.key or 0)
      if not seen[key] then
        seen[key] = true
        local st = wd:status()
        local L = '{key="' .. key .. '"}'
        watching(L, st.watching)
        timeouts(L, st.timeouts)
        signals(L, st.signals)
      end
    end
  end

  -- orch itself (process_* as Prometheus client libraries name them).
  local me = orch.proc.stat(orch.getpid()) or {}
  few("process_cpu_seconds_total", "counter", "CPU time orch used (user and system).")("", me.cpu or 0)
  few("process_resident_memory_bytes", "gauge", "orch's resident memory.")("", me.rss or 0)
  few("process_open_fds", "gauge", "File descriptors orch has open.")("", orch.proc.fd_count(orch.getpid()) or 0)
  few("orch_lua_heap_bytes", "gauge", "orch's Lua heap in use.")("", math.floor(collectgarbage("count") * 1024))
  -- How long a task waits to run again after yielding: the loop's lag now.
  local t0 = orch.now()
  orch.sleep(0)
  few("orch_loop_lag_seconds", "gauge", "Time for one turn of the event loop, measured at scrape time.")("", orch.now() - t0)
  for _, f in ipairs(fams) do
    if #f.lines > 2 then
      b[n + 1], b[n + 2] = table.concat(f.lines, "\n"), "\n"
      n = n + 2
    end
  end
  return table.concat(b)
end


--- The supervisor's readiness: true, or false and the reasons. With
-- `names` (a list), those services; otherwise every critical service, or
-- every service when none is critical.
function M.ready(sup, names)
  local want
  if names then
    want = {}
    for _, n in ipairs(names) do want[n] = true end
  else
    local crit = {}
    for _, d in ipairs(sup.services()) do if d.critical then crit[d.name] = true end end
    if next(crit) then want = crit end
  end
  local bad, seen = {}, {}
  for _, s in ipairs(sup.status()) do
    local svc = s.service or s.name
    if not want or want[svc] then
      seen[svc] = true
      if s.state ~= "running" then
        bad[#bad + 1] = s.name .. ": " .. s.state .. (s.reason and (" (" .. tostring(s.reason) .. ")") or "")
      end
    end
  end
  for n in pairs(want or {}) do if not seen[n] then bad[#bad + 1] = n .. ": no such service" end end
  table.sort(bad)
  return #bad == 0, bad
end

--- http.supervisor{ listen [, supervisor] [, ...serve options] }: serves
-- GET /metrics, /healthz, /readyz[?service=a,b] and /status for a
-- supervisor (default: require "orch.supervisor").
function M.supervisor(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'supervisor' (table expected, got " .. type(opts) .. ")", 2) end
  local sup = opts.supervisor or require "orch.supervisor"
  local serve = {}
  for k, v in pairs(opts) do if k ~= "supervisor" then serve[k] = v end end
  serve.routes = {
    ["/metrics"] = function() return 200, M.metrics(sup), "text/plain; version=0.0.4; charset=utf-8" end,
    ["/healthz"] = function() return 200, "ok\n" end,
    ["/readyz"] = function(req)
      local names
      if req.query.service and req.query.service ~= "" then
        names = {}
        for n in req.query.service:gmatch("[^,]+") do names[#names + 1] = n end
      end
      local ok, bad = M.ready(sup, names)
      if ok then return 200, "ready\n" end
      return 503, "not ready:\n" .. table.concat(bad, "\n") .. "\n"
    end,
    ["/status"] = function()
      local ctl = require "orch.ctl"
      return 200, ctl.encode({ ok = true, services = sup.status() }) .. "\n", "application/json"
    end,
  }
  return M.serve(serve)
end

return M
