--- orch.supervisor.schema: validation and normalisation of service
-- definitions. Everything a definition can get wrong is caught here, before
-- any process starts: unknown keys, wrong types and impossible values raise
-- `service 'web': key 'backoff.factor': number >= 1 expected, got 0.5`.
--
-- `schema.check(def, index)` returns the normalised configuration (defaults
-- filled in, sizes in bytes, signals as names) or raises such a message.
-- The caller keeps the user's table (a deep copy) for sup.services() and for
-- reload's structural comparison.
local orch = require "orch"

local schema = {}

-- Errors travel as tables so the caller can add the service's name.
local function fail(path, msg)
  error({ path = path, msg = msg }, 0)
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "number" or type(v) == "boolean" or v == nil then return tostring(v) end
  return type(v)
end

local function want(path, what, v)
  fail(path, what .. " expected, got " .. show(v))
end

-- ---------------------------------------------------------------- checkers
-- Each returns the normalised value or raises through fail().

local function check_string(v, path, pattern, what)
  if type(v) ~= "string" or v == "" then want(path, what or "non-empty string", v) end
  if v:find("\0", 1, true) then fail(path, "must not contain a zero byte") end
  if pattern and not v:find(pattern) then want(path, what or "string", v) end
  return v
end

local function check_number(v, path, min, max, integer, what)
  local ok = math.type(v) ~= nil and v == v and v ~= math.huge and v ~= -math.huge
  if ok and integer and math.type(v) ~= "integer" then
    ok = v == math.floor(v)
    if ok then v = math.tointeger(v) end
  end
  if not ok or (min and v < min) or (max and v > max) then
    if not what then
      what = integer and "integer" or "number"
      if min and max then what = string.format("%s from %s to %s", what, min, max)
      elseif min then what = string.format("%s >= %s", what, min) end
    end
    want(path, what, v)
  end
  return v
end

local function check_boolean(v, path)
  if type(v) ~= "boolean" then want(path, "boolean", v) end
  return v
end

local function check_function(v, path)
  if type(v) ~= "function" then want(path, "function", v) end
  return v
end

local function check_seconds(v, path)
  return check_number(v, path, 0, nil, false, "number of seconds >= 0")
end

local function check_positive_seconds(v, path)
  v = check_number(v, path, 0, nil, false, "number of seconds > 0")
  if v <= 0 then want(path, "number of seconds > 0", v) end
  return v
end

local units = { [""] = 1, k = 1024, m = 1024.0 * 1024, g = 1024.0 * 1024 * 1024, t = 1024.0 * 1024 * 1024 * 1024 }

--- Bytes from 4096, 10e6, "512M", "64k", "1G", "1.5GiB".
local function check_size(v, path)
  if type(v) == "string" then
    local num, unit = v:lower():match("^%s*([%d%.]+)%s*([kmgt]?)i?b?%s*$")
    local n = num and tonumber(num)
    if not n then want(path, "size (bytes, or a string like \"512M\")", v) end
    v = n * units[unit]
  end
  v = check_number(v, path, 1, nil, false, "size > 0 (bytes, or a string like \"512M\")")
  return math.floor(v)
end

local function check_signal(v, path)
  if (type(v) ~= "string" and math.type(v) ~= "integer") or not orch.signal.number(v) then
    want(path, "signal name or number", v)
  end
  local n = orch.signal.number(v)
  if n == 0 then want(path, "signal name or number", v) end
  return orch.signal.name(n) or n
end

local function check_id(v, path)
  if type(v) == "string" then return check_string(v, path) end
  return check_number(v, path, 0, 0x7ffffffe, true, "name or numeric id")
end

--- A table with exactly the given keys; `fields` maps a key to
-- function(value, path) -> normalised value (called for present keys only).
local function check_record(v, path, fields, what)
  if type(v) ~= "table" then want(path, what or "table", v) end
  for k in pairs(v) do
    if type(k) ~= "string" then fail(path, "unexpected key " .. show(k)) end
    if not fields[k] then fail(path .. "." .. k, "unknown key") end
  end
  -- Over the keys given (a definition names a few of the dozens there are).
  local out = {}
  for k, x in pairs(v) do out[k] = fields[k](x, path .. "." .. k) end
  return out
end

local function check_list(v, path, item, what)
  if type(v) ~= "table" then want(path, what or "list", v) end
  local n = #v
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > n then fail(path, "list expected (unexpected key " .. show(k) .. ")") end
  end
  -- The caller's table comes back when nothing was converted (the
  -- supervisor checks its own private copy of the definition).
  local out, same = {}, true
  for i = 1, n do
    local x = item(v[i], path .. "[" .. i .. "]")
    out[i] = x
    if x ~= v[i] then same = false end
  end
  return same and v or out
end

local function one_of(v, path, values)
  for _, x in ipairs(values) do
    if v == x then return v end
  end
  local q = {}
  for i, x in ipairs(values) do q[i] = show(x) end
  want(path, table.concat(q, ", "), v)
end

-- ---------------------------------------------------------------- fields

local NAME_PATTERN = "^[%w_][%w_.@%-]*$"

local rlimit_names = {}
for _, n in ipairs { "as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
                     "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack" } do
  rlimit_names[n] = true
end

local function check_rlimit_value(v, path)
  if v == "unlimited" then return v end
  return check_number(v, path, 0, nil, true, "non-negative integer or \"unlimited\"")
end

local function check_rlimits(v, path)
  if type(v) ~= "table" then want(path, "table", v) end
  local out = {}
  for k, x in pairs(v) do
    if type(k) ~= "string" or not rlimit_names[k] then fail(path, "unknown limit " .. show(k)) end
    if type(x) == "table" then
      local soft = check_rlimit_value(x[1], path .. "." .. k .. "[1]")
      local hard = check_rlimit_value(x[2], path .. "." .. k .. "[2]")
      if hard ~= "unlimited" and (soft == "unlimited" or soft > hard) then
        fail(path .. "." .. k, "soft limit above hard limit")
      end
      out[k] = { soft, hard }
    else
      out[k] = check_rlimit_value(x, path .. "." .. k)
    end
  end
  return out
end

-- The environment as given: a number stays a number (orch.spawn writes it
-- as tostring does), so that a service of `env = { PORT = 8080 }` keeps
-- one table, not a configuration of strings and its definition's numbers
-- beside it (160 bytes a service; doc/benchmarks.md, twelfth session).
local function check_env(v, path)
  if type(v) ~= "table" then want(path, "table", v) end
  for k, x in pairs(v) do
    if type(k) ~= "string" or k == "" or k:find("[=%z]") then fail(path, "invalid variable name " .. show(k)) end
    if x ~= false and type(x) ~= "string" and type(x) ~= "number" then
      want(path .. "." .. k, "string, number or false", x)
    end
    if type(x) == "string" and x:find("\0", 1, true) then fail(path .. "." .. k, "must not contain a zero byte") end
  end
  return v
end

local function check_cmd(v, path)
  if type(v) == "string" then
    check_string(v, path)
    return { "/bin/sh", "-c", v }
  end
  if type(v) ~= "table" then want(path, "list of strings or a shell command string", v) end
  local out = check_list(v, path, function(x, p)
    if type(x) == "number" then x = tostring(x) end
    if type(x) ~= "string" then want(p, "string", x) end
    if x:find("\0", 1, true) then fail(p, "must not contain a zero byte") end
    return x
  end)
  if #out == 0 or out[1] == "" then fail(path, "program name expected at index 1") end
  return out
end

local backoff_fields = {
  initial = check_seconds,
  factor = function(v, p) return check_number(v, p, 1, nil, false) end,
  max = check_seconds,
  jitter = function(v, p) return check_number(v, p, 0, 1, false) end,
  reset_after = check_seconds,
}
local default_backoff = { initial = 0.1, factor = 2, max = 30, jitter = 0.1, reset_after = 60 }

-- Option tables store what was given; the defaults sit behind a shared
-- metatable (configurations are never written after check()).
local function defaults_mt(t) return { __index = t } end

-- The tables that several services' configurations hold (the defaults'
-- option tables, a constant backoff, the log options services share) are
-- read-only: each is an empty table whose metatable reads the checked
-- table (a table __index, as fast as the defaults' own), so that a hook
-- writing `svc.cfg.log.dir` or `svc.cfg.stop.timeout` raises instead of
-- changing every service that shares the table. A service's own tables
-- (its top table, a command or stop table given to it alone) are not
-- wrapped: a wrapper each would cost every service its bytes, and a write
-- there concerns no other service. The supervisor's own passes over a
-- configuration's keys (the definition given back, its digest) read the
-- checked table (schema.raw).
local function read_only_write(_, k)
  error(string.format("attempt to change a configuration that services share (key %s): configurations are read-only",
    show(k)), 2)
end
local function read_only_pairs(p) return next, getmetatable(p).__index, nil end
local function read_only_len(p) return #getmetatable(p).__index end

local function read_only(t)
  return setmetatable({}, { __index = t, __newindex = read_only_write, __pairs = read_only_pairs,
                            __len = read_only_len })
end

--- The checked table behind a read-only one (v itself for any other value).
function schema.raw(v)
  local mt = type(v) == "table" and getmetatable(v)
  if mt and rawget(mt, "__newindex") == read_only_write then return mt.__index end
  return v
end
local raw = schema.raw

-- The shared configurations that stand for a plain value of a definition
-- (a constant backoff for its number of seconds, the log of `log = false`
-- and of "null"): the value given, by configuration (schema.given).
local given_of = setmetatable({}, { __mode = "k" })

local backoff_mt = defaults_mt(default_backoff)
local constant_backoffs = setmetatable({}, { __mode = "v" })

local function check_backoff(v, path)
  if type(v) == "number" then
    local d = check_seconds(v, path)
    local b = constant_backoffs[d]
    if not b then
      b = read_only { initial = d, factor = 1, jitter = 0, max = d, reset_after = default_backoff.reset_after }
      constant_backoffs[d] = b
      given_of[b] = d
    end
    return b
  end
  local b = setmetatable(check_record(v, path, backoff_fields, "table or number of seconds"), backoff_mt)
  if b.max < b.initial then fail(path .. ".max", "must be >= initial (" .. b.initial .. ")") end
  return b
end

local start_limit_fields = {
  burst = function(x, p) return check_number(x, p, 1, nil, true) end,
  interval = check_positive_seconds,
}

local function check_start_limit(v, path)
  if v == false then return false end
  local t = check_record(v, path, start_limit_fields, "table or false")
  return { burst = t.burst or 5, interval = t.interval or 10 }
end

local ready_fields = {
  notify = function(x, p)
    if x ~= true then want(p, "true", x) end
    return x
  end,
  fd = function(x, p) return check_number(x, p, 3, 1023, true) end,
  tcp = function(x, p) return check_number(x, p, 1, 65535, true, "port number from 1 to 65535") end,
  host = check_string,
  interval = check_positive_seconds,
}

local function check_ready(v, path)
  if type(v) == "function" then return { fn = v } end
  local t = check_record(v, path, ready_fields, "table or function")
  local n = (t.notify and 1 or 0) + (t.fd and 1 or 0) + (t.tcp and 1 or 0)
  if n ~= 1 then fail(path, "exactly one of 'notify', 'fd' or 'tcp' expected") end
  if t.host and not t.tcp then fail(path .. ".host", "only with 'tcp'") end
  if t.interval and not t.tcp then fail(path .. ".interval", "only with 'tcp'") end
  if t.tcp then
    t.host = t.host or "127.0.0.1"
    t.interval = t.interval or 0.05
  end
  return t
end

local heartbeat_fields = {
  timeout = check_positive_seconds,
  key = function(x, p) return check_number(x, p, 1, 0xfffffffe, true, "SysV key (1 to 0xfffffffe)") end,
}

local function check_heartbeat(v, path)
  local t = check_record(v, path, heartbeat_fields)
  if not t.timeout then fail(path .. ".timeout", "required") end
  return t
end

-- health = { http = "http://host:port/path" | tcp = "host:port" | fn,
-- every, timeout, failures } (health.lua), or a function.
local function check_host_port(host, port, p, v, what)
  port = math.tointeger(tonumber(port))
  if not port or port < 1 or port > 65535 then want(p, what, v) end
  host = host:gsub("^%[(.*)%]$", "%1")
  if host == "" then host = "127.0.0.1" end
  return host, port
end

local function check_health_url(v, p)
  local what = "URL \"http://host[:port]/path\""
  check_string(v, p, nil, what)
  local authority, path = v:match("^http://([^/?#]+)(.*)$")
  if not authority or path:find("[%s%c]") then want(p, what, v) end
  local host, port = authority:match("^(%[[%x:.]+%]):?(%d*)$")
  if not host then host, port = authority:match("^([^:@]+):?(%d*)$") end
  if not host then want(p, what, v) end
  host, port = check_host_port(host, port ~= "" and port or "80", p, v, what)
  if path == "" then path = "/" end
  return { url = v, host = host, port = port, path = path, authority = authority }
end

local function check_health_tcp(v, p)
  local what = "\"host:port\" or a port"
  if math.type(v) == "integer" then v = tostring(v) end
  check_string(v, p, nil, what)
  local host, port = v:match("^%[([%x:.]+)%]:(%d+)$")
  if not host then host, port = v:match("^([^:]*):(%d+)$") end
  if not host then host, port = "", v:match("^(%d+)$") end
  if not port then want(p, what, v) end
  host, port = check_host_port(host, port, p, v, what)
  return { host = host, port = port }
end

local health_fields = {
  http = check_health_url, tcp = check_health_tcp, fn = check_function,
  every = check_positive_seconds, timeout = check_positive_seconds,
  failures = function(x, p) return check_number(x, p, 1, 1000, true) end,
}

local function check_health(v, path)
  if type(v) == "function" then v = { fn = v } end
  local t = check_record(v, path, health_fields, "table or function")
  local n = (t.http and 1 or 0) + (t.tcp and 1 or 0) + (t.fn and 1 or 0)
  if n ~= 1 then fail(path, "exactly one of 'http', 'tcp' or 'fn' expected") end
  t.every = t.every or 10
  t.timeout = t.timeout or 2
  t.failures = t.failures or 3
  return t
end

local stop_mt = defaults_mt { signal = "TERM", timeout = 10, group = true, kill_timeout = 5 }
local stop_fields = {
  signal = check_signal,
  timeout = check_seconds,
  kill_timeout = check_seconds,
  group = check_boolean,
  fn = check_function,
}

local function check_stop(v, path)
  if type(v) == "function" then return setmetatable({ fn = v }, stop_mt) end
  return setmetatable(check_record(v, path, stop_fields, "table or function"), stop_mt)
end

-- cgroup limits (doc/cgroup.md, cg:set): normalised here, written by
-- orch.cgroup before the spawn.
local function check_cg_size(x, p)
  if x == "max" or x == math.huge then return "max" end
  return check_size(x, p)
end
local function check_cg_count(x, p)
  if x == "max" or x == math.huge then return "max" end
  return check_number(x, p, 0, 0x7fffffff, true, "count or \"max\"")
end
local function check_cpu_max(x, p)
  if type(x) == "string" and (x == "max" or x:match("^%d+%.?%d*%%$") or x:match("^%d+ %d+$")) then return x end
  if type(x) == "table" and math.type(x[1]) == "integer" and math.type(x[2]) == "integer" then return { x[1], x[2] } end
  want(p, "\"50%\", \"QUOTA PERIOD\", { quota, period } or \"max\"", x)
end
local function check_weight(x, p) return check_number(x, p, 1, 10000, true, "weight from 1 to 10000") end

local limits_fields = {
  memory_max = check_cg_size, memory_high = check_cg_size, swap_max = check_cg_size,
  pids_max = check_cg_count, cpu_max = check_cpu_max, cpu_weight = check_weight, io_weight = check_weight,
  rss = check_size,
  cpu_percent = function(x, p)
    x = check_number(x, p, 0, nil, false, "percentage > 0")
    if x <= 0 then want(p, "percentage > 0", x) end
    return x
  end,
  for_seconds = check_seconds,
  interval = check_positive_seconds,
}

local function check_limits(v, path)
  local t = check_record(v, path, limits_fields)
  local any = t.rss or t.cpu_percent
  for k in pairs(t) do if k ~= "for_seconds" and k ~= "interval" then any = true end end
  if not any then fail(path, "a limit expected (rss, cpu_percent, memory_max, pids_max, cpu_max, ...)") end
  t.for_seconds = t.for_seconds or 10
  t.interval = t.interval or 5
  return t
end

local log_mt = defaults_mt { max_bytes = 10e6, keep = 5, timestamps = false, tail = 100, max_line = 8192, stderr = true,
                            mode = 416 --[[0640]] }
local log_inherit = read_only(setmetatable({ inherit = true }, log_mt))
local log_null = read_only(setmetatable({ null = true }, log_mt))
given_of[log_inherit], given_of[log_null] = false, "null"
local log_fields = {
  dir = check_string,
  max_bytes = check_size,
  max_age = check_positive_seconds,
  keep = function(x, p) return check_number(x, p, 0, 1000, true) end,
  timestamps = check_boolean,
  filter = check_function,
  tail = function(x, p) return check_number(x, p, 0, 100000, true) end,
  max_line = function(x, p) return check_number(x, p, 80, 1048576, true) end,
  stderr = check_boolean,
  mode = function(x, p) return check_number(x, p, 0, 511, true, "mode from 0 to 511 (octal 0777)") end,
}

-- The checked log options by what they hold (weak): services of the same
-- log options (a directory for all, as is usual) share one configuration,
-- not 80 bytes a service (configurations are never written after check()).
-- Options with a filter function are each their own.
local logs_by_text = setmetatable({}, { __mode = "v" })
local log_keys = {}
for k in pairs(log_fields) do log_keys[#log_keys + 1] = k end
table.sort(log_keys)

local function check_log(v, path)
  if v == false then return log_inherit end
  if v == "null" then return log_null end
  local t = check_record(v, path, log_fields, "table, false or \"null\"")
  if t.filter then return setmetatable(t, log_mt) end
  local text = ""
  for _, k in ipairs(log_keys) do
    local x = t[k]
    if x ~= nil then text = text .. k .. "\0" .. string.format("%q", x) .. "\0" end
  end
  local shared = logs_by_text[text]
  if not shared then
    shared = read_only(setmetatable(t, log_mt))
    logs_by_text[text] = shared
  end
  return shared
end

-- The scheduling options, as orch.spawn takes them (doc/proc.md).
local function check_cpu_affinity(v, path)
  local out = check_list(v, path, function(x, p) return check_number(x, p, 0, 1023, true, "CPU number from 0 to 1023") end,
    "list of CPU numbers")
  if #out == 0 then fail(path, "at least one CPU expected") end
  return out
end

local function check_ioprio(v, path)
  if type(v) == "string" then return one_of(v, path, { "realtime", "best-effort", "idle" }) end
  if type(v) ~= "table" then want(path, "class name or { class = ..., level = 0..7 }", v) end
  for k in pairs(v) do
    if k ~= "class" and k ~= "level" then fail(path, "unknown key " .. show(k)) end
  end
  local class = one_of(v.class, path .. ".class", { "realtime", "best-effort", "idle" })
  if v.level == nil then return { class = class } end
  local level = check_number(v.level, path .. ".level", 0, 7, true)
  if class == "idle" and level ~= 0 then fail(path .. ".level", "the idle class has no level") end
  return { class = class, level = level }
end

local function check_depends(v, path)
  if type(v) == "string" then v = { v } end
  return check_list(v, path, function(x, p) return check_string(x, p, NAME_PATTERN, "service name") end,
    "service name or list of names")
end

local fields = {
  name = function(v, p) return check_string(v, p, NAME_PATTERN, "name (letters, digits, '_', '.', '@', '-')") end,
  cmd = check_cmd,
  env = check_env,
  env_file = function(v, p)
    if type(v) == "string" then v = { v } end
    return check_list(v, p, function(x, q) return check_string(x, q) end, "path or list of paths")
  end,
  cwd = check_string,
  user = check_id,
  group = check_id,
  rlimits = check_rlimits,
  umask = function(v, p) return check_number(v, p, 0, 511, true, "mode from 0 to 511 (octal 0777)") end,
  setsid = check_boolean,
  nice = function(v, p) return check_number(v, p, -20, 19, true) end,
  cpu_affinity = check_cpu_affinity,
  ioprio = check_ioprio,
  numprocs = function(v, p) return check_number(v, p, 1, 10000, true) end,
  autostart = check_boolean,
  restart = function(v, p)
    if type(v) == "function" then return v end
    if type(v) ~= "string" then want(p, "\"always\", \"on-failure\", \"never\" or a function", v) end
    return one_of(v, p, { "always", "on-failure", "never" })
  end,
  success_codes = function(v, p)
    if math.type(v) == "integer" then v = { v } end
    return check_list(v, p, function(x, q) return check_number(x, q, 0, 255, true, "exit code from 0 to 255") end,
      "list of exit codes")
  end,
  backoff = check_backoff,
  start_limit = check_start_limit,
  critical = check_boolean,
  ready = check_ready,
  start_timeout = check_positive_seconds,
  depends_on = check_depends,
  heartbeat = check_heartbeat,
  health = check_health,
  stop = check_stop,
  limits = check_limits,
  log = check_log,
  pidfile = check_string,
  on_start = check_function,
  on_ready = check_function,
  on_exit = check_function,
  on_fatal = check_function,
}
schema.keys = fields

-- Defaults live in one shared table behind each configuration's metatable:
-- a configuration stores only what its definition gave (a supervisor of 500
-- services keeps 500 small tables, not 500 copies of every default). Nothing
-- ever writes into a configuration or a default after check().
local defaults = {
  numprocs = 1, autostart = true, restart = "always",
  success_codes = read_only { 0 }, success = read_only { [0] = true },
  backoff = read_only(check_backoff({}, "backoff")), start_limit = read_only(check_start_limit({}, "start_limit")),
  critical = false, start_timeout = 60, depends_on = read_only {},
  stop = read_only(check_stop({}, "stop")), log = check_log({}, "log"), setsid = false,
}
local config_mt = defaults_mt(defaults)

local function check_all(def)
  if def.name == nil then fail("name", "required") end
  if def.cmd == nil then fail("cmd", "required") end
  return check_record(def, "", fields)
end

--- Normalises definition `def` (the n-th given). Raises a string naming the
-- service and the key.
function schema.check(def, n)
  local label = n and ("service #" .. n) or "service"
  if type(def) ~= "table" then
    error(label .. ": table expected, got " .. show(def), 0)
  end
  if type(def.name) == "string" and def.name ~= "" then label = "service '" .. def.name .. "'" end
  local ok, cfg = pcall(check_all, def)
  if not ok then
    local res = cfg
    if type(res) == "table" then
      local path = res.path:gsub("^%.", "")
      if res.msg == "unknown key" then
        error(string.format("%s: unknown key '%s'", label, path), 0)
      end
      error(string.format("%s: key '%s': %s", label, path, res.msg), 0)
    end
    error(res, 0)
  end
  if cfg.success_codes then
    cfg.success = {}
    for _, c in ipairs(cfg.success_codes) do cfg.success[c] = true end
  end
  for _, d in ipairs(cfg.depends_on or defaults.depends_on) do
    if d == cfg.name then error(label .. ": key 'depends_on': a service cannot depend on itself", 0) end
  end
  if cfg.pidfile and (cfg.numprocs or 1) > 1 then
    error(label .. ": key 'pidfile': not possible with numprocs > 1", 0)
  end
  if cfg.heartbeat and not cfg.heartbeat.key then cfg.heartbeat.key = false end
  return setmetatable(cfg, config_mt)
end

-- ---------------------------------------------------------------- copies

--- Deep copy of plain data (functions and other values are shared).
--- A templated service (systemd's foo@.service): `name = "worker@%i"` and
-- `instances = { "a", "b" }` stand for the services worker@a and worker@b.
-- In every string of the definition (cmd, env, cwd, log.dir, ...) %i
-- becomes the instance, %n the service's full name and %% a "%"; other
-- "%x" stay as they are. Functions (hooks, ready) are shared: they tell the
-- instances apart by the instance's name. Returns the list of definitions
-- (`{ def }` for a definition without `instances`); raises a message naming
-- the service.
function schema.expand(def)
  if type(def) ~= "table" or def.instances == nil then return { def } end
  local label = type(def.name) == "string" and ("service '" .. def.name .. "'") or "service"
  if type(def.name) ~= "string" or not def.name:find("%i", 1, true) then
    error(label .. ": 'instances' needs a name with %i (like \"worker@%i\")", 0)
  end
  local list = def.instances
  if type(list) ~= "table" or #list == 0 then
    error(label .. ": 'instances' must be a non-empty list of instance names", 0)
  end
  local out, seen = {}, {}
  for n, i in ipairs(list) do
    if math.type(i) == "integer" then i = tostring(i) end
    if type(i) ~= "string" or not i:match("^[%w_.@%-]+$") then
      error(string.format("%s: instances[%d]: name (letters, digits, '_', '.', '@', '-') expected", label, n), 0)
    end
    if seen[i] then error(string.format("%s: instance '%s' given twice", label, i), 0) end
    seen[i] = true
    local name = def.name:gsub("%%([%%i])", function(c) return c == "i" and i or "%" end)
    local function subst(v, depth)
      if type(v) == "string" then
        return (v:gsub("%%([%%in])", function(c) return c == "i" and i or c == "n" and name or "%" end))
      end
      if type(v) ~= "table" or depth > 20 then return v end
      local t = {}
      for k, x in pairs(v) do t[k] = subst(x, depth + 1) end
      return t
    end
    local d = subst(def, 0)
    d.instances, d.name = nil, name
    out[#out + 1] = d
  end
  return out
end

function schema.copy(v, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local t = {}
  seen[v] = t
  -- (A call for the tables only: most keys and values are not.)
  for k, x in pairs(v) do
    if type(k) == "table" then k = schema.copy(k, seen) end
    if type(x) == "table" then x = schema.copy(x, seen) end
    t[k] = x
  end
  return t
end

local function fn_equal(a, b)
  if a == b then return true end
  local ok1, da = pcall(string.dump, a, true)
  local ok2, db = pcall(string.dump, b, true)
  return ok1 and ok2 and da == db
end

--- Structural equality of two definitions: tables compared key by key,
-- functions by their compiled code (a re-read script makes new closures of
-- the same code: those count as unchanged; upvalues are not compared).
function schema.equal(a, b, depth)
  depth = depth or 0
  if depth > 50 then return false end
  if type(a) ~= type(b) then return false end
  if type(a) == "function" then return fn_equal(a, b) end
  if type(a) ~= "table" then return a == b end
  for k, x in pairs(a) do
    if not schema.equal(x, b[k], depth + 1) then return false end
  end
  for k in pairs(b) do
    if rawget(a, k) == nil then return false end
  end
  return true
end

-- ---------------------------------------------------------------- the definition as given

-- A supervisor keeps a service's checked configuration and, beside it,
-- only what the configuration does not hold as the definition gave it
-- (schema.given): most values are kept as given (a name, a command of
-- strings, an option table whose keys needed no converting), and the
-- definition is made again from the two when it is asked for
-- (sup.services, a reload's comparison, the state record's digest). A
-- second full copy of every definition cost about 0.4 KiB a service
-- (doc/benchmarks.md, "Memory per service, eleventh session").

-- The keys check() adds to a configuration (never in a definition).
local ADDED = { success = true }

-- Whether two numbers are the same value of the same type (5 and 5.0, 0.0
-- and -0.0 are not: check() makes 5 of 5.0 where an integer is asked).
local function exact(a, b)
  return a == b and string.format("%q", a) == string.format("%q", b)
end

-- Whether x, a value of a definition, is what its configuration c gives
-- back (schema.definition): the same value, the value a shared
-- configuration stands for, or a table of the same keys and such values.
local function kept(x, c, depth)
  local g = given_of[c]
  if g ~= nil then
    if type(g) == "number" then return type(x) == "number" and exact(x, g) end
    return rawequal(x, g)
  end
  if type(x) == "number" then return type(c) == "number" and exact(x, c) end
  if rawequal(x, c) then return true end
  c = raw(c)
  if type(x) ~= "table" or type(c) ~= "table" or depth > 20 then return false end
  for k, v in next, x do
    if not kept(v, rawget(c, k), depth + 1) then return false end
  end
  for k in next, c do
    if rawget(x, k) == nil then return false end
  end
  return true
end

--- What configuration cfg (schema.check of def) does not hold as def
-- gives it: nil when it holds all of it, else a table of those keys and
-- their values (def's own: def is a private copy).
function schema.given(def, cfg)
  local out
  for k, x in next, def do
    if not kept(x, rawget(cfg, k), 0) then
      out = out or {}
      out[k] = x
    end
  end
  return out
end

-- A definition's copy is checked, and its top table dropped at once: one
-- table, cleared from one definition to the next, rather than one made and
-- dropped a service (that garbage lay between the services' live objects
-- and left holes in orch's pages once a start of hundreds was over).
local spare_top, spare_seen = {}, {}

local function check_copy(top, seen, def, n)
  if type(def) ~= "table" then return schema.check(def, n) end
  for k, x in pairs(def) do
    if type(k) == "table" then k = schema.copy(k, seen) end
    if type(x) == "table" then x = schema.copy(x, seen) end
    top[k] = x
  end
  local cfg = schema.check(top, n)
  return cfg, schema.given(top, cfg)
end

--- schema.check of a private copy of def (the n-th given), and
-- schema.given of that copy: the configuration, and what the supervisor
-- keeps beside it of the definition. Raises as schema.check does.
function schema.check_copy(def, n)
  local top, seen = spare_top or {}, spare_seen or {}
  -- (A __pairs of def that declared a service would come back here.)
  spare_top, spare_seen = nil, nil
  local ok, cfg, given = pcall(check_copy, top, seen, def, n)
  for k in next, top do top[k] = nil end
  for k in next, seen do seen[k] = nil end
  spare_top, spare_seen = top, seen
  if not ok then error(cfg, 0) end
  return cfg, given
end

-- The value of key k of the definition, from its configuration's value c
-- (nil: a key check() adds).
local function value(given, k, c)
  if ADDED[k] then return nil end
  local x = given and given[k]
  if x == nil then
    x = given_of[c]
    if x == nil then x = raw(c) end
  end
  return x
end
schema.definition_value = value

--- A plain copy of v (a configuration or a value in one) for code that
-- reads tables raw (next, rawget, rawlen, cjson.encode), to which a
-- read-only table is empty and a default behind a metatable absent:
-- tables copied deep, each read-only one as the table it reads, the
-- defaults along a table's __index chain of tables filled in, no
-- metatable kept; other values (functions too) as they are.
function schema.plain(v, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local t = {}
  seen[v] = t
  local layer, depth = raw(v), 0
  while layer and depth < 16 do
    for k, x in next, layer do
      k = schema.plain(k, seen)
      if rawget(t, k) == nil then t[k] = schema.plain(x, seen) end
    end
    local mt = getmetatable(layer)
    local index = type(mt) == "table" and rawget(mt, "__index")
    layer, depth = type(index) == "table" and raw(index) or nil, depth + 1
  end
  return t
end

--- svc:config(): the service's configuration as plain tables
-- (schema.plain), without what the supervisor added to it.
function schema.config_copy(cfg)
  local t = schema.plain(cfg)
  for k in pairs(ADDED) do t[k] = nil end
  return t
end

--- The definition (a new table, nothing shared with the configuration)
-- that cfg was checked from, given what schema.given kept of it.
function schema.definition(cfg, given)
  local def, seen = {}, {}
  for k, c in next, cfg do
    def[k] = schema.copy(value(given, k, c), seen)
  end
  return def
end

--- schema.equal(schema.definition(cfg, given), def), without the copy (a
-- reload compares every service's definition).
function schema.same_definition(cfg, given, def)
  if type(def) ~= "table" then return false end
  for k, c in next, cfg do
    if not ADDED[k] and not schema.equal(value(given, k, c), def[k], 1) then return false end
  end
  for k in pairs(def) do
    if ADDED[k] or rawget(cfg, k) == nil then return false end
  end
  return true
end

return schema
