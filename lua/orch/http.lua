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
  conn:write(head, method == "HEAD" and "" or body)
end

-- %XX escapes of a query component.
local function unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end))
end

--- Parses a request head (the bytes before the blank line): the request
-- line and headers. Returns { method, path, query = {k = v}, headers =
-- {lower-case name = value} } or nil, status.
function M.parse_request(head)
  local line, rest = head:match("^([^\r\n]*)\r?\n?(.*)$")
  local method, target, version = line:match("^(%u+) (%S+) HTTP/(%d%.%d)$")
  if not method then return nil, 400 end
  if version ~= "1.1" and version ~= "1.0" then return nil, 400 end
  -- Only the characters a URI may hold (RFC 3986): no control bytes.
  if target:sub(1, 1) ~= "/" or not target:match("^[%w%-%._~:/%?#%[%]@!%$&'%(%)%*%+,;=%%]+$") then return nil, 400 end
  local path, qs = target:match("^([^?#]*)%??([^#]*)")
  local req = { method = method, path = path, query = {}, headers = {}, version = version }
  for pair in qs:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    req.query[unescape(k)] = unescape(v)
  end
  for hl in rest:gmatch("[^\r\n]+") do
    local k, v = hl:match("^([%w!#$%%&'*+.^_`|~-]+):[ \t]*(.-)[ \t]*$")
    if not k then return nil, 400 end
    req.headers[k:lower()] = v
  end
  return req
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

-- "127.0.0.1:9100", "[::1]:9100", ":9100", "/run/orch/web.http" (a unix
-- socket path), or a table { host = , port = } / { unix = }.
local function listen_spec(v)
  if type(v) == "table" then return v end
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
  if not spec then error("bad argument #1 to 'serve' (option 'listen': \"host:port\" or a socket path expected)", 2) end
  check.value("serve", 1, "routes", opts.routes, routes_rule)
  local max_request = opts.max_request or 8192
  local timeout = opts.timeout or 5
  local max_connections = opts.max_connections or 64

  local listener, err, code = orch.listen(spec)
  if not listener then return nil, err, code end
  local srv = { listener = listener, port = listener.port, conns = {}, n = 0 }
  srv.address = spec.unix or string.format("%s:%d", spec.host or "127.0.0.1", listener.port)

  local function handle(conn)
    conn:set_timeout(timeout)
    local buf = {}
    local size = 0
    local head
    while true do
      local chunk, rerr, rcode = conn:read(max_request + 1 - size)
      if not chunk then
        if rcode == "ETIMEDOUT" then send(conn, "GET", 408, "request timeout\n") end
        return
      end
      buf[#buf + 1] = chunk
      size = size + #chunk
      local all = table.concat(buf)
      local e = all:find("\r?\n\r?\n")
      if e then head = all:sub(1, e - 1) break end
      if size > max_request then send(conn, "GET", 431, "request too large\n") return end
      buf = { all }
    end
    local req, status = M.parse_request(head)
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

local STATES = { "stopped", "waiting", "starting", "running", "stopping", "backoff", "exited", "fatal" }

--- The Prometheus text exposition (version 0.0.4) of a supervisor and of
-- this orch process.
function M.metrics(sup)
  local out = {}
  local function family(name, kind, help, samples)
    out[#out + 1] = "# HELP " .. name .. " " .. help
    out[#out + 1] = "# TYPE " .. name .. " " .. kind
    for _, s in ipairs(samples) do out[#out + 1] = name .. s end
  end
  local list = sup and sup.status() or {}
  local up, ready, restarts, cpu, mem, started, state, lines, dropped = {}, {}, {}, {}, {}, {}, {}, {}, {}
  for _, s in ipairs(list) do
    local l = string.format('{service="%s",instance="%s"}', esc_label(s.service or s.name), esc_label(s.name))
    local running = s.state == "running" or s.state == "starting"
    up[#up + 1] = l .. " " .. (running and 1 or 0)
    ready[#ready + 1] = l .. " " .. (s.state == "running" and 1 or 0)
    restarts[#restarts + 1] = l .. " " .. (s.restarts or 0)
    if s.cpu then cpu[#cpu + 1] = l .. " " .. string.format("%.6f", s.cpu) end
    if s.rss then mem[#mem + 1] = l .. " " .. math.tointeger(s.rss) end
    if s.start_time and running then started[#started + 1] = l .. " " .. string.format("%.3f", s.start_time) end
    for _, st in ipairs(STATES) do
      state[#state + 1] = string.format('{service="%s",instance="%s",state="%s"} %d', esc_label(s.service or s.name),
        esc_label(s.name), st, s.state == st and 1 or 0)
    end
    lines[#lines + 1] = l .. " " .. (s.log_lines or 0)
    dropped[#dropped + 1] = l .. " " .. (s.log_dropped or 0)
  end
  family("orch_service_up", "gauge", "Whether the service instance has a running process (1) or not (0).", up)
  family("orch_service_ready", "gauge", "Whether the service instance is ready (state running).", ready)
  family("orch_service_state", "gauge", "The service instance's state (1 for the current one).", state)
  family("orch_service_restarts_total", "counter", "Restarts of the service instance since orch started it.", restarts)
  family("orch_service_cpu_seconds_total", "counter", "CPU time of the service's main process.", cpu)
  family("orch_service_memory_bytes", "gauge", "Resident memory of the service's main process.", mem)
  family("orch_service_start_time_seconds", "gauge", "When the running process started (Unix time).", started)
  family("orch_service_log_lines_total", "counter", "Output lines the service wrote.", lines)
  family("orch_service_log_dropped_total", "counter", "Output lines that could not be written to the log.", dropped)

  -- orch itself.
  local statm = io.open("/proc/self/statm")
  local rss = statm and tonumber(statm:read("a"):match("^%d+%s+(%d+)")) or 0
  if statm then statm:close() end
  local fds = 0
  local p = io.popen("ls /proc/" .. orch.getpid() .. "/fd 2>/dev/null")
  if p then for _ in p:lines() do fds = fds + 1 end p:close() end
  family("orch_resident_memory_bytes", "gauge", "orch's own resident memory.", { " " .. rss * 4096 })
  family("orch_lua_heap_bytes", "gauge", "orch's Lua heap in use.", { " " .. math.floor(collectgarbage("count") * 1024) })
  family("orch_open_fds", "gauge", "File descriptors orch has open.", { " " .. fds })
  -- How long a task waits to run again after yielding: the loop's lag now.
  local t0 = orch.now()
  orch.sleep(0)
  family("orch_loop_lag_seconds", "gauge", "Time for one turn of the event loop, measured at scrape time.",
    { " " .. string.format("%.6f", orch.now() - t0) })
  return table.concat(out, "\n") .. "\n"
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
