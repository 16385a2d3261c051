--- orch.import: turns another supervisor's configuration into an orch
-- policy script (Lua source), so that `orch import supervisord.conf >
-- services.lua` is the first step of a migration. Every option is either
-- translated or named in a comment that says why it has no equivalent;
-- nothing is dropped silently. See doc/migrating.md.
--
--   import.supervisord(text [, opts]) -> source, warnings
--   import.pm2(apps_or_table [, opts]) -> source, warnings
--
-- opts.dir: the directory of the configuration file (supervisord's
-- %(here)s, [include] globs and pm2's relative paths are resolved from it).
local M = {}

-- ------------------------------------------------------------ Lua output

local function q(s) return string.format("%q", s) end

-- A Lua literal for v (strings, numbers, booleans, lists and records with
-- string keys in sorted order); `raw` values are emitted as they are (Lua
-- expressions such as os.getenv("HOME") .. "/x").
local RAW = {}
local function raw(expr) return setmetatable({ expr = expr }, RAW) end

local function literal(v, indent)
  indent = indent or ""
  if getmetatable(v) == RAW then return v.expr end
  local t = type(v)
  if t == "string" then return q(v) end
  if t == "number" or t == "boolean" then return tostring(v) end
  assert(t == "table", t)
  local parts = {}
  if #v > 0 then
    for _, x in ipairs(v) do parts[#parts + 1] = literal(x, indent) end
    return "{ " .. table.concat(parts, ", ") .. " }"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local key = k:match("^[%a_][%w_]*$") and k or "[" .. q(k) .. "]"
    parts[#parts + 1] = key .. " = " .. literal(v[k], indent)
  end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

-- Writes one sup.service{...} call: `fields` in a stable order, then the
-- comments for what had no equivalent.
local ORDER = { "name", "cmd", "cwd", "env", "user", "umask", "numprocs", "autostart", "restart",
                "success_codes", "backoff", "start_limit", "ready", "start_timeout", "stop", "limits", "log" }

local function service_source(svc, notes)
  local lines = {}
  for _, n in ipairs(notes) do lines[#lines + 1] = "-- " .. n end
  lines[#lines + 1] = "sup.service {"
  local done = {}
  for _, k in ipairs(ORDER) do
    if svc[k] ~= nil then
      lines[#lines + 1] = "  " .. k .. " = " .. literal(svc[k]) .. ","
      done[k] = true
    end
  end
  for k, v in pairs(svc) do
    if not done[k] then lines[#lines + 1] = "  " .. k .. " = " .. literal(v) .. "," end
  end
  lines[#lines + 1] = "}"
  return table.concat(lines, "\n")
end

local function script(from, header_notes, services, extra)
  local out = { "-- orch policy imported from " .. from .. " by `orch import`.",
                "-- Run it with: orch run THIS_FILE   (then: orch ctl status)" }
  for _, n in ipairs(header_notes) do out[#out + 1] = "-- " .. n end
  out[#out + 1] = "local sup = require \"orch.supervisor\""
  if extra and extra.sched then out[#out + 1] = "local sched = require \"orch.scheduler\"" end
  out[#out + 1] = ""
  for _, s in ipairs(services) do
    out[#out + 1] = service_source(s.def, s.notes)
    out[#out + 1] = ""
  end
  for _, l in ipairs(extra and extra.after or {}) do out[#out + 1] = l end
  out[#out + 1] = "sup.run()"
  return table.concat(out, "\n") .. "\n"
end

-- ------------------------------------------------------------ shared helpers

--- Splits a command line the way supervisord (Python's shlex) does:
-- whitespace separates words, quotes group, backslash escapes outside
-- single quotes. Returns the words, or nil and a message.
function M.split(s)
  local words, cur, i, n, quote, any = {}, {}, 1, #s, nil, false
  while i <= n do
    local c = s:sub(i, i)
    if quote == "'" then
      if c == "'" then quote = nil else cur[#cur + 1] = c end
    elseif quote == '"' then
      if c == '"' then quote = nil
      elseif c == "\\" and i < n and s:sub(i + 1, i + 1):match('["\\$`]') then
        i = i + 1
        cur[#cur + 1] = s:sub(i, i)
      else cur[#cur + 1] = c end
    elseif c == "'" or c == '"' then
      quote, any = c, true
    elseif c == "\\" and i < n then
      i = i + 1
      cur[#cur + 1] = s:sub(i, i)
      any = true
    elseif c:match("%s") then
      if #cur > 0 or any then words[#words + 1] = table.concat(cur) end
      cur, any = {}, false
    else
      cur[#cur + 1] = c
      any = true
    end
    i = i + 1
  end
  if quote then return nil, "unterminated " .. quote .. " quote" end
  if #cur > 0 or any then words[#words + 1] = table.concat(cur) end
  return words
end

local function truthy(v)
  v = tostring(v):lower()
  if v == "true" or v == "yes" or v == "on" or v == "1" then return true end
  if v == "false" or v == "no" or v == "off" or v == "0" then return false end
  return nil
end

-- supervisord byte sizes: 50MB, 1KB, 10GB, 1024.
local function bytes(v)
  local num, unit = tostring(v):upper():match("^%s*(%d+)%s*([KMG]?)B?%s*$")
  if not num then return nil end
  return math.tointeger(tonumber(num) * ({ [""] = 1, K = 1024, M = 1024.0 * 1024, G = 1024.0 * 1024 * 1024 })[unit])
end

local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end
local function basename(p) return p:match("([^/]*)$") end

-- ------------------------------------------------------------ supervisord

--- Parses supervisord's configuration format (Python configparser as
-- supervisord uses it): [sections], `key = value` or `key: value`, full-line
-- `;` and `#` comments, inline comments after ` ;`, and continuation lines
-- (indented lines extend the previous value). Neither Debian's lua-inifile
-- nor penlight's pl.config reads this format correctly (inline comments,
-- continuations, section names with ':'), hence this small reader.
-- Returns a list of { name = section, keys = { [k] = v }, order = {k...} }.
function M.parse_ini(text)
  local sections, cur, last = {}, nil, nil
  local lineno = 0
  for line in (text:gsub("\r\n", "\n") .. "\n"):gmatch("([^\n]*)\n") do
    lineno = lineno + 1
    if line:match("^%s*[;#]") or line:match("^%s*$") then
      last = line:match("^%s*$") and nil or last
    elseif line:match("^%s") and cur and last then
      local more = line:gsub("%s+;.*$", ""):match("^%s*(.-)%s*$")
      cur.keys[last] = cur.keys[last] .. " " .. more
    else
      local name = line:match("^%[%s*(.-)%s*%]%s*$")
      if name then
        cur = { name = name, keys = {}, order = {} }
        sections[#sections + 1] = cur
        last = nil
      else
        local k, v = line:match("^%s*([^=:%s][^=:]-)%s*[=:]%s*(.-)%s*$")
        if not k or not cur then return nil, "line " .. lineno .. ": cannot read " .. q(line) end
        v = v:gsub("%s+;.*$", "")
        k = k:lower()
        if cur.keys[k] == nil then cur.order[#cur.order + 1] = k end
        cur.keys[k] = v
        last = k
      end
    end
  end
  return sections
end

-- supervisord's environment=KEY="val",KEY2=val2 (values may be quoted and
-- contain commas inside quotes).
local function parse_env(s)
  local env, i, n = {}, 1, #s
  while i <= n do
    local k, rest = s:match("^%s*([%w_]+)%s*=%s*()", i)
    if not k then return nil end
    i = rest
    local v
    local c = s:sub(i, i)
    if c == '"' or c == "'" then
      local j = s:find(c, i + 1, true)
      if not j then return nil end
      v, i = s:sub(i + 1, j - 1), j + 1
    else
      local j = s:find(",", i, true) or (n + 1)
      v, i = s:sub(i, j - 1):match("^%s*(.-)%s*$"), j
    end
    env[k] = v
    i = (s:find("^%s*,", i)) and (select(2, s:find("^%s*,", i)) + 1) or i
    if s:sub(i):match("^%s*$") then break end
  end
  return env
end

-- %(ENV_X)s, %(here)s, %(program_name)s, %(process_num)s expansions:
-- returns a string, or a raw Lua expression when the environment is read
-- at run time; nil and the name of an expansion it does not know.
local function expand(s, ctx)
  local parts, pos, dynamic = {}, 1, false
  for a, name, b in s:gmatch("()%%%(([%w_]+)%)s()") do
    parts[#parts + 1] = q(s:sub(pos, a - 1))
    local env = name:match("^ENV_(.+)$")
    if env then
      parts[#parts + 1] = "(os.getenv(" .. q(env) .. ") or \"\")"
      dynamic = true
    elseif name == "here" then parts[#parts + 1] = q(ctx.here)
    elseif name == "program_name" or name == "group_name" then parts[#parts + 1] = q(ctx.name)
    elseif name == "process_num" then parts[#parts + 1] = q("0")
    else return nil, name end
    pos = b
  end
  if pos == 1 then return s end
  parts[#parts + 1] = q(s:sub(pos))
  if not dynamic then
    local out = {}
    for i, p in ipairs(parts) do out[i] = load("return " .. p)() end
    return table.concat(out)
  end
  return raw(table.concat(parts, " .. "))
end

local SUPERVISORD_PROGRAM = {
  command = true, process_name = true, numprocs = true, numprocs_start = true, directory = true,
  user = true, umask = true, environment = true, autostart = true, autorestart = true,
  exitcodes = true, startsecs = true, startretries = true, stopsignal = true, stopwaitsecs = true,
  stopasgroup = true, killasgroup = true, priority = true, redirect_stderr = true,
  stdout_logfile = true, stdout_logfile_maxbytes = true, stdout_logfile_backups = true,
  stderr_logfile = true, stderr_logfile_maxbytes = true, stderr_logfile_backups = true,
  stdout_capture_maxbytes = true, stderr_capture_maxbytes = true, stdout_events_enabled = true,
  stderr_events_enabled = true, stdout_syslog = true, stderr_syslog = true, serverurl = true,
}

local function program(section, name, ctx)
  local k = section.keys
  local def, notes = { name = name:gsub("[^%w_.@-]", "_") }, {}
  local function note(fmt, ...) notes[#notes + 1] = string.format(fmt, ...) end
  local function value(key)
    local v, bad = expand(k[key], { here = ctx.here, name = name })
    if v == nil then note("supervisord: %s=%s: %%(%s)s has no equivalent; left as written", key, k[key], bad) return k[key] end
    return v
  end

  if not k.command then return nil, "[program:" .. name .. "] has no command" end
  local cmdline = value("command")
  if getmetatable(cmdline) == RAW then
    def.cmd = { "sh", "-c", raw("\"exec \" .. " .. cmdline.expr) }
    note("supervisord: command uses the environment at start: run through sh -c")
  else
    local words, err = M.split(cmdline)
    if not words or #words == 0 then return nil, "[program:" .. name .. "] command: " .. (err or "empty") end
    def.cmd = words
  end
  if k.directory then def.cwd = value("directory") end
  if k.user then def.user = k.user end
  if k.umask then def.umask = math.tointeger(tonumber(k.umask, 8)) end
  if k.environment then
    local env = parse_env(k.environment)
    if env then def.env = env else note("supervisord: environment=%s could not be read; set env by hand", k.environment) end
  end
  if k.numprocs and tonumber(k.numprocs) ~= 1 then def.numprocs = math.tointeger(tonumber(k.numprocs)) end
  if k.process_name and k.process_name ~= "%(program_name)s" then
    note("supervisord: process_name=%s: orch names instances %s@1, %s@2, ...", k.process_name, def.name, def.name)
  end
  if k.autostart and truthy(k.autostart) == false then def.autostart = false end
  local ar = k.autorestart and k.autorestart:lower() or "unexpected"
  if ar == "unexpected" then def.restart = "on-failure"
  elseif truthy(ar) == true then def.restart = "always"
  elseif truthy(ar) == false then def.restart = "never" end
  local codes = {}
  for c in (k.exitcodes or "0"):gmatch("%d+") do codes[#codes + 1] = math.tointeger(tonumber(c)) end
  if #codes ~= 1 or codes[1] ~= 0 then def.success_codes = codes end
  local startsecs = tonumber(k.startsecs or "1")
  if startsecs and startsecs > 0 then
    -- supervisord counts a start as good once the process stayed up
    -- startsecs seconds; orch's equivalent is a readiness function.
    def.ready = raw(string.format("function() orch.sleep(%s) return true end", startsecs))
  end
  local retries = tonumber(k.startretries or "3")
  def.start_limit = { burst = math.tointeger(retries + 1), interval = math.max(60, (startsecs or 1) * (retries + 1) * 2) }
  note("supervisord: startretries=%s: orch counts starts in a window (start_limit); %d starts in %ds make it fatal",
    retries, def.start_limit.burst, def.start_limit.interval)
  def.backoff = { initial = 1, factor = 1, max = 1, jitter = 0 }
  local stop = {}
  if k.stopsignal then stop.signal = k.stopsignal:upper() end
  if k.stopwaitsecs then stop.timeout = tonumber(k.stopwaitsecs) end
  local sg, kg = truthy(k.stopasgroup or "false"), truthy(k.killasgroup or "false")
  if sg ~= nil or kg ~= nil then stop.group = (sg or kg) and true or false end
  if next(stop) then def.stop = stop end
  if k.stdout_logfile and k.stdout_logfile:upper() ~= "AUTO" and k.stdout_logfile:upper() ~= "NONE" then
    local path = value("stdout_logfile")
    if type(path) == "string" then
      def.log = { dir = dirname(path) }
      note("supervisord: stdout_logfile=%s: orch writes %s/%s.log", path, dirname(path), def.name)
    end
  elseif k.stdout_logfile and k.stdout_logfile:upper() == "NONE" then
    def.log = false
  end
  if def.log then
    local mb = k.stdout_logfile_maxbytes and bytes(k.stdout_logfile_maxbytes)
    if mb and mb > 0 then def.log.max_bytes = mb end
    if k.stdout_logfile_backups then def.log.keep = math.tointeger(tonumber(k.stdout_logfile_backups)) end
  end
  if k.redirect_stderr and truthy(k.redirect_stderr) == false and k.stderr_logfile then
    note("supervisord: stderr_logfile=%s: orch captures stderr with stdout into one log", k.stderr_logfile)
  end
  if k.priority then note("supervisord: priority=%s: orch orders starts and stops by depends_on", k.priority) end
  for key in pairs(k) do
    if not SUPERVISORD_PROGRAM[key] then note("supervisord: %s=%s is not a [program] option; ignored", key, k[key])
    elseif key:match("events_enabled$") or key:match("syslog$") or key:match("capture_maxbytes$") or key == "serverurl"
        or key == "numprocs_start" then
      note("supervisord: %s=%s has no equivalent in orch", key, k[key])
    end
  end
  table.sort(notes)
  return { def = def, notes = notes }
end

local function glob(pattern)
  local out = {}
  local p = io.popen("for f in " .. pattern:gsub("[^%w%*%?%[%]/._-]", "\\%0") .. "; do [ -f \"$f\" ] && printf '%s\\n' \"$f\"; done")
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

--- text: the contents of supervisord.conf. Returns the Lua source and a
-- list of warnings, or nil and a message.
function M.supervisord(text, opts)
  opts = opts or {}
  local here = opts.dir or "."
  local sections, err = M.parse_ini(text)
  if not sections then return nil, err end
  local header, services, warnings, seen = {}, {}, {}, {}
  local function add_sections(list, from_here)
    for _, s in ipairs(list) do
      local kind, name = s.name:match("^([%w_-]+):(.+)$")
      kind = kind or s.name
      if kind == "program" then
        local svc, perr = program(s, name, { here = from_here })
        if not svc then return nil, perr end
        if seen[svc.def.name] then return nil, "program " .. name .. " is defined twice" end
        seen[svc.def.name] = true
        services[#services + 1] = svc
      elseif kind == "include" then
        for pat in (s.keys.files or ""):gmatch("%S+") do
          if pat:sub(1, 1) ~= "/" then pat = from_here .. "/" .. pat end
          local files = glob(pat)
          if #files == 0 then header[#header + 1] = "supervisord: [include] " .. pat .. " matched no file" end
          for _, f in ipairs(files) do
            local fh = io.open(f)
            if fh then
              local sub, serr = M.parse_ini(fh:read("a"))
              fh:close()
              if not sub then return nil, f .. ": " .. serr end
              header[#header + 1] = "supervisord: [include] " .. f
              local ok, ierr = add_sections(sub, dirname(f))
              if not ok then return nil, ierr end
            end
          end
        end
      elseif kind == "group" then
        header[#header + 1] = string.format("supervisord: [group:%s] programs=%s: orch has no groups; name the services together (orch ctl stop a b)",
          name, s.keys.programs or "")
      elseif kind == "supervisord" then
        header[#header + 1] = "supervisord: [supervisord] (daemon, logfile, pidfile): orch runs in the foreground; use orch run under systemd (contrib/orch.service)"
      elseif kind == "unix_http_server" or kind == "inet_http_server" or kind == "supervisorctl" or kind == "rpcinterface" then
        header[#header + 1] = "supervisord: [" .. s.name .. "]: orch ctl talks to orch's own control socket (0600, peer uid checked)"
      elseif kind == "eventlistener" or kind == "fcgi-program" then
        header[#header + 1] = "supervisord: [" .. s.name .. "] has no equivalent in orch"
        warnings[#warnings + 1] = "[" .. s.name .. "] has no equivalent; it was not imported"
      else
        header[#header + 1] = "supervisord: [" .. s.name .. "] is not a supervisord section; ignored"
      end
    end
    return true
  end
  local ok, aerr = add_sections(sections, here)
  if not ok then return nil, aerr end
  if #services == 0 then return nil, "no [program:...] section" end
  return script(opts.name or "supervisord.conf", header, services), warnings
end

-- ------------------------------------------------------------ pm2

local PM2_KNOWN = {
  name = true, script = true, args = true, interpreter = true, interpreter_args = true, node_args = true,
  cwd = true, env = true, instances = true, exec_mode = true, autorestart = true, max_restarts = true,
  min_uptime = true, restart_delay = true, exp_backoff_restart_delay = true, max_memory_restart = true,
  kill_timeout = true, out_file = true, error_file = true, log_file = true, merge_logs = true,
  time = true, cron_restart = true, watch = true, ignore_watch = true, wait_ready = true,
  listen_timeout = true, shutdown_with_message = true, stop_exit_codes = true, log_date_format = true,
  combine_logs = true, vizion = true, source_map_support = true, instance_var = true, filter_env = true,
  namespace = true, env_production = true, env_development = true,
}

local function ms(v) return tonumber(v) and tonumber(v) / 1000 end

local function pm2_app(app, ctx)
  if type(app) ~= "table" or type(app.script) ~= "string" then return nil, "an app without a script" end
  local name = (type(app.name) == "string" and app.name or basename(app.script):gsub("%.[%w]+$", ""))
  local def, notes = { name = name:gsub("[^%w_.@-]", "_") }, {}
  local function note(fmt, ...) notes[#notes + 1] = string.format(fmt, ...) end

  local args = {}
  if type(app.args) == "string" then args = M.split(app.args) or { app.args }
  elseif type(app.args) == "table" then for _, a in ipairs(app.args) do args[#args + 1] = tostring(a) end end
  local interp = app.interpreter
  if interp == nil and app.script:match("%.[cm]?js$") then interp = "node" end
  if interp == "none" then interp = nil end
  local cmd = {}
  if interp then
    cmd[#cmd + 1] = interp
    for _, a in ipairs(type(app.interpreter_args) == "string" and (M.split(app.interpreter_args) or {}) or {}) do cmd[#cmd + 1] = a end
    for _, a in ipairs(type(app.node_args) == "string" and (M.split(app.node_args) or {}) or {}) do cmd[#cmd + 1] = a end
  end
  cmd[#cmd + 1] = app.script
  for _, a in ipairs(args) do cmd[#cmd + 1] = a end
  def.cmd = cmd
  if type(app.cwd) == "string" then def.cwd = app.cwd elseif ctx.dir ~= "." then def.cwd = ctx.dir end
  if type(app.env) == "table" then
    local env = {}
    for k, v in pairs(app.env) do env[tostring(k)] = tostring(v) end
    if next(env) then def.env = env end
  end
  if app.instances ~= nil then
    local n = math.tointeger(tonumber(app.instances))
    if n and n > 1 then def.numprocs = n
    elseif app.instances == "max" or (n and n <= 0) then
      note("pm2: instances=%s (one per CPU): set numprocs to the machine's CPU count", tostring(app.instances))
    end
  end
  if app.exec_mode == "cluster" or app.exec_mode == "cluster_mode" then
    note("pm2: exec_mode=cluster: orch runs each instance as its own process; they do not share a port through a master (use SO_REUSEPORT)")
  end
  if app.autorestart == false then def.restart = "never" else def.restart = "always" end
  if app.stop_exit_codes then
    local codes = {}
    for _, c in ipairs(type(app.stop_exit_codes) == "table" and app.stop_exit_codes or { app.stop_exit_codes }) do
      codes[#codes + 1] = math.tointeger(tonumber(c))
    end
    def.success_codes, def.restart = codes, "on-failure"
  end
  if app.max_restarts then
    local interval = ms(app.min_uptime) or 1
    def.start_limit = { burst = math.tointeger(tonumber(app.max_restarts)) or 16, interval = math.max(interval * 16, 10) }
    note("pm2: max_restarts=%s, min_uptime=%s: orch counts starts in a window (start_limit)",
      tostring(app.max_restarts), tostring(app.min_uptime or "1000"))
  end
  if app.exp_backoff_restart_delay then
    def.backoff = { initial = ms(app.exp_backoff_restart_delay), factor = 1.5, max = 15 }
  elseif app.restart_delay then
    def.backoff = ms(app.restart_delay)
  end
  if app.max_memory_restart then
    local v = tostring(app.max_memory_restart):upper():gsub("B$", "")
    def.limits = { rss = v }
  end
  if app.kill_timeout then def.stop = { timeout = ms(app.kill_timeout) } end
  local outf = app.out_file or app.log_file
  if type(outf) == "string" and outf ~= "/dev/null" then
    def.log = { dir = dirname(outf) }
    if app.time then def.log.timestamps = true end
    note("pm2: out_file=%s: orch writes %s/%s.log (stdout and stderr together)", outf, dirname(outf), def.name)
  elseif outf == "/dev/null" then def.log = false end
  if app.error_file and app.error_file ~= outf then note("pm2: error_file=%s: orch captures stderr with stdout", tostring(app.error_file)) end
  if app.wait_ready then
    note("pm2: wait_ready (process.send('ready')): use ready = { notify = true } with sd_notify READY=1, or ready = { tcp = PORT }")
  end
  if app.watch then note("pm2: watch: orch does not restart on file changes; orch ctl restart %s after a deploy", def.name) end
  if app.shutdown_with_message then note("pm2: shutdown_with_message: orch stops with a signal (stop.signal)") end
  for k, v in pairs(app) do
    if not PM2_KNOWN[k] then note("pm2: %s is not a pm2 app option; ignored", k)
    elseif k:match("^env_") then note("pm2: %s: pick the environment by hand (orch has one env per service)", k)
    elseif k == "vizion" or k == "source_map_support" or k == "instance_var" or k == "filter_env"
        or k == "namespace" or k == "log_date_format" or k == "merge_logs" or k == "combine_logs"
        or k == "listen_timeout" or k == "ignore_watch" then
      note("pm2: %s=%s has no equivalent in orch", k, type(v) == "table" and "{...}" or tostring(v))
    end
  end
  table.sort(notes)
  local cron
  if type(app.cron_restart) == "string" then cron = app.cron_restart end
  return { def = def, notes = notes }, cron
end

--- apps: the decoded ecosystem file ({ apps = {...} }, or a list of apps,
-- or one app). Returns the Lua source and a list of warnings.
--- import.parse_js(text): the value of a pm2 `ecosystem.config.js` that is
-- a plain object literal: `module.exports = { ... }` (or `export default`),
-- read without running JavaScript. Objects (keys bare, quoted or in
-- brackets of a string), arrays, strings ('...', "...", `...` without
-- ${}), numbers, true, false, null, undefined, comments and trailing commas
-- are understood; anything else (a require(), a variable, process.env, a
-- function call, an expression, a spread) is refused with its line:
-- returns the value, or nil and "line N: ... not supported ...".
function M.parse_js(text)
  if type(text) ~= "string" then error("bad argument #1 to 'parse_js' (string expected, got " .. type(text) .. ")", 2) end
  local pos, len = 1, #text
  local function line_at(p)
    local n = 1
    for _ in text:sub(1, p - 1):gmatch("\n") do n = n + 1 end
    return n
  end
  local function fail(msg, p) error({ msg = "line " .. line_at(p or pos) .. ": " .. msg }, 0) end
  local function skip()
    while pos <= len do
      local c = text:sub(pos, pos)
      if c:match("%s") then pos = pos + 1
      elseif text:sub(pos, pos + 1) == "//" then
        local e = text:find("\n", pos, true)
        pos = e and e + 1 or len + 1
      elseif text:sub(pos, pos + 1) == "/*" then
        local e = text:find("*/", pos + 2, true)
        if not e then fail("unterminated comment") end
        pos = e + 2
      else break end
    end
  end
  local ESC = { n = "\n", t = "\t", r = "\r", b = "\b", f = "\f", v = "\v", ["0"] = "\0" }
  local function str()
    local q = text:sub(pos, pos)
    local start = pos
    pos = pos + 1
    local out = {}
    while true do
      if pos > len then fail("unterminated string", start) end
      local c = text:sub(pos, pos)
      if c == q then pos = pos + 1 break end
      if q == "`" and text:sub(pos, pos + 1) == "${" then
        fail("a template string with ${...} is an expression: not supported (write the value)")
      end
      if c == "\\" then
        local n = text:sub(pos + 1, pos + 1)
        if n == "u" then
          local hex = text:match("^%x%x%x%x", pos + 2)
          if not hex then fail("bad \\u escape") end
          out[#out + 1] = utf8.char(tonumber(hex, 16))
          pos = pos + 6
        elseif n == "\n" then pos = pos + 2
        else
          out[#out + 1] = ESC[n] or n
          pos = pos + 2
        end
      elseif c == "\n" and q ~= "`" then fail("newline in a string")
      else
        out[#out + 1] = c
        pos = pos + 1
      end
    end
    return table.concat(out)
  end
  local value
  local function word()
    return text:match("^[%a_$][%w_$]*", pos)
  end
  local function object()
    pos = pos + 1
    local t = {}
    while true do
      skip()
      local c = text:sub(pos, pos)
      if c == "}" then pos = pos + 1 return t end
      local key
      if c == "'" or c == '"' then key = str()
      elseif c == "[" then
        pos = pos + 1
        skip()
        local q = text:sub(pos, pos)
        if q ~= "'" and q ~= '"' then fail("a computed key is an expression: not supported") end
        key = str()
        skip()
        if text:sub(pos, pos) ~= "]" then fail("a computed key is an expression: not supported") end
        pos = pos + 1
      elseif text:sub(pos, pos + 2) == "..." then fail("a spread (...) is not supported")
      elseif text:match("^%d", pos) then key = text:match("^%d+", pos) pos = pos + #key
      else
        key = word()
        if not key then fail("a key expected, found '" .. c .. "'") end
        pos = pos + #key
      end
      skip()
      local sep = text:sub(pos, pos)
      if sep ~= ":" then
        if sep == "(" then fail("a method (" .. key .. "() {...}) is code: not supported") end
        if sep == "," or sep == "}" then fail("a shorthand property (" .. key .. ") names a variable: not supported") end
        fail("':' expected after '" .. key .. "'")
      end
      pos = pos + 1
      t[key] = value()
      skip()
      c = text:sub(pos, pos)
      if c == "," then pos = pos + 1
      elseif c ~= "}" then fail("',' or '}' expected, found '" .. c .. "' (an expression is not supported)") end
    end
  end
  local function array()
    pos = pos + 1
    local t, n = {}, 0
    while true do
      skip()
      if text:sub(pos, pos) == "]" then pos = pos + 1 return t end
      if text:sub(pos, pos + 2) == "..." then fail("a spread (...) is not supported") end
      n = n + 1
      t[n] = value()
      skip()
      local c = text:sub(pos, pos)
      if c == "," then pos = pos + 1
      elseif c ~= "]" then fail("',' or ']' expected, found '" .. c .. "' (an expression is not supported)") end
    end
  end
  value = function()
    skip()
    local c = text:sub(pos, pos)
    if c == "{" then return object() end
    if c == "[" then return array() end
    if c == "'" or c == '"' or c == "`" then return str() end
    local num = text:match("^%-?%d+%.?%d*[eE][%+%-]?%d+", pos) or text:match("^%-?%d+%.?%d*", pos)
      or text:match("^%-?%.%d+", pos)
    if num then
      pos = pos + #num
      if text:match("^[%w_$%.]", pos) then fail("a number followed by '" .. text:sub(pos, pos) .. "': not supported") end
      return tonumber(num)
    end
    local w = word()
    if w == "true" then pos = pos + 4 return true end
    if w == "false" then pos = pos + 5 return false end
    if w == "null" or w == "undefined" then pos = pos + #w return nil end
    if w then
      fail("'" .. w .. "' is " .. ((w == "require" or w == "process") and "code" or "a variable or expression")
        .. ": not supported (write the value, or convert the file to JSON: "
        .. "node -e 'console.log(JSON.stringify(require(\"./ecosystem.config.js\")))')")
    end
    fail(c == "" and "a value expected at the end of the file" or ("a value expected, found '" .. c .. "'"))
  end
  local ok, res = pcall(function()
    skip()
    -- Leading "use strict" and the assignment.
    if text:match("^['\"]use strict['\"]", pos) then
      pos = pos + 12
      skip()
      if text:sub(pos, pos) == ";" then pos = pos + 1 end
      skip()
    end
    local head = text:match("^module%.exports%s*=%s*", pos) or text:match("^export%s+default%s+", pos)
    if not head then
      fail("'module.exports = { ... }' expected (a file that computes its apps is code: not supported)")
    end
    pos = pos + #head
    skip()
    if text:sub(pos, pos) ~= "{" and text:sub(pos, pos) ~= "[" then
      fail("an object literal expected after module.exports")
    end
    local v = value()
    skip()
    if text:sub(pos, pos) == ";" then pos = pos + 1 end
    skip()
    if pos <= len then fail("more code after the exported object: not supported") end
    return v
  end)
  if ok then return res end
  if type(res) == "table" and res.msg then return nil, res.msg end
  error(res, 0)
end

function M.pm2(apps, opts)
  opts = opts or {}
  if type(apps) ~= "table" then return nil, "an ecosystem file holds an object or a list" end
  if apps.apps then apps = apps.apps elseif apps.script then apps = { apps } end
  if type(apps) ~= "table" or #apps == 0 then return nil, "no apps" end
  local services, after, seen = {}, {}, {}
  for i, app in ipairs(apps) do
    local svc, cron = pm2_app(app, { dir = opts.dir or "." })
    if not svc then return nil, "app " .. i .. ": " .. cron end
    if seen[svc.def.name] then return nil, "app " .. svc.def.name .. " is defined twice" end
    seen[svc.def.name] = true
    services[#services + 1] = svc
    if cron then
      after[#after + 1] = string.format("sched.cron(%s, function() sup.restart(%s) end)   -- pm2: cron_restart",
        q(cron), q(svc.def.name))
    end
  end
  return script(opts.name or "ecosystem file", {}, services, { sched = #after > 0, after = after }), {}
end

return M
