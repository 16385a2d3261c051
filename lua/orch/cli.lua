--- orch.cli: the `orch` command line. src/main.c hands it argv (M.plan,
-- through orch_call) and keeps only what must be C: loading a script file or
-- a -e string as the main task, running the loop, turning the outcome into
-- an exit status. Everything else is here: one parser (lua-argparse) for
-- `orch` and every command, the help texts, usage errors, and the Lua half of
-- `orch run` (control socket, HTTP endpoint, lock, signal table, budget).
--
-- Each command is a module lua/orch/cmd/NAME.lua returning a table:
--   usage       the help text (`orch help NAME`, `orch NAME --help`)
--   summary     one line for `orch help` (optional)
--   args(cmd)   declares its arguments and options on an argparse command
--   tail        when set: the number of leading positionals after which the
--               rest of the command line is passed verbatim (a script's or a
--               program's own arguments: `orch run FILE ARGS...`)
--   main(o)     runs it with argparse's result (a task); returns an exit code
--
-- Usage errors print `orch CMD: message` (with "did you mean" when a name is
-- close to a known one) and exit 2; help goes to stdout and exits 0.
local orch = require "orch"

local M = {}

local EXIT_USAGE = 2

--- The commands `orch help` lists, in its order; `fdholder` is internal.
M.commands = { "run", "repl", "ctl", "attach", "top", "watchdog", "every", "beat", "import", "test", "version", "help" }
local hidden = { fdholder = true }

M.usage = [[
usage: orch COMMAND [ARGS...]
       orch FILE [ARGS...]

Commands:
  run FILE [ARGS...]     run a Lua script on the event loop (also: orch FILE)
  -e CODE [ARGS...]      run a string of Lua code
  repl [FILE]            interactive prompt while the loop runs
  ctl [--socket P] CMD   control a running orchestrator (status, start, stop, ...)
  attach [--socket P]    a prompt inside a running orchestrator
  top [--socket P]       a live view of a running orchestrator's services
  watchdog [OPTIONS]     kill processes whose heartbeat stopped
  every N -- PROG ARGS   run PROG, wait, sleep N seconds, repeat
  beat --name N --timeout S   register or beat a heartbeat (for shell scripts)
  import FILE            a supervisord.conf or pm2 ecosystem file as a policy script
  test [OPTIONS] FILE|DIR   busted specs on virtual time with simulated processes
  version                print the orch, Lua and libuv versions
  help [COMMAND]         this text, or a command's help

Options (before or after the command word): -h, --help prints the help of
the command it follows; --version prints the versions. `--` ends the options.

See orch(1), orch-ctl(1) and orch-lua(7) (the Lua API), or `orch help COMMAND`.
]]

M.eval_usage = [[
usage: orch -e CODE [ARGS...]

Runs CODE as the main task, like `orch run` runs a file; ARGS are `...`.
]]

local function load_command(name)
  local ok, m = pcall(require, "orch.cmd." .. name)
  if not ok then error(m, 0) end
  return m
end

-- A usage error or a help request, raised out of argparse and caught in
-- M.parse: { usage = message, cmd = command } or { help = command }.
local function help_flag(cmd)
  cmd:flag("-h --help"):description("Show the help and exit."):action(function()
    error({ help = cmd }, 0)
  end)
end

-- A parser of `orch` with the commands `names` (a list).
local function build_parser(names)
  local ok, argparse = pcall(require, "argparse")
  if not ok then error("lua-argparse is not installed (apt-get install lua-argparse): " .. tostring(argparse), 0) end
  local p = argparse("orch"):add_help(false):command_target("command"):require_command(false)
  p._orch_name = nil
  help_flag(p)
  p:flag("-v --version"):description("Print the versions and exit.")
  for _, name in ipairs(names) do
    local m = load_command(name)
    local c = p:command(name):add_help(false)
    if hidden[name] then c:hidden(true) end
    c._orch_name, c._orch_module = name, m
    help_flag(c)
    if m.args then m.args(c, help_flag) end
  end
  return p
end

--- The parser of `orch` and every command (argparse objects). Each command
-- parser carries `_orch_name` ("ctl") and `_orch_module`.
function M.parser()
  if M._parser then return M._parser end
  local names = { table.unpack(M.commands) }
  for name in pairs(hidden) do names[#names + 1] = name end
  M._parser = build_parser(names)
  return M._parser
end

--- Lets the parser go once the command line is parsed: an `orch run`
-- (or `orch watchdog`) lives long, and the parser's tables, argparse and
-- every command's module would stay in its memory (about 350 KiB).
-- `keep`: the command about to run, whose module stays loaded. A later
-- M.parser() (orch help inside a script) builds it again.
function M.release_parser(keep)
  -- The whole parser, and the one of a line read with its own command alone.
  for _, p in ipairs { M._parser or {}, M._lone or {} } do
    for _, c in ipairs(p._commands or {}) do
      local name = c._orch_name
      if name and name ~= keep and package.loaded["orch.cmd." .. name] == c._orch_module then
        package.loaded["orch.cmd." .. name] = nil
      end
    end
  end
  M._parser, M._lone = nil, nil
  package.loaded.argparse = nil
end

-- The entries of a package.path or package.cpath that are absolute paths:
-- not the default's last ones, ./?.lua, ./?/init.lua and ./?.so.
local function absolute_only(path)
  local kept = {}
  for entry in path:gmatch("[^;]+") do
    if entry:sub(1, 1) == "/" then kept[#kept + 1] = entry end
  end
  return table.concat(kept, ";")
end

-- A command module outside the list (lua/orch/cmd/NAME.lua of the user's
-- own), added to the parser when it is named. One without `args` gets its
-- words verbatim: main(argv) as a list of strings. Found in orch's Lua
-- directories and through the absolute entries of package.path and
-- package.cpath, never relative to the current directory: `orch NAME`
-- typed in a directory another user may write to (/tmp), a typo
-- included, ran whatever that user had put at ./orch/cmd/NAME.lua.
local function add_extra(name)
  if not name:match("^[%l%d_]+$") then return nil end
  local path, cpath = package.path, package.cpath
  package.path, package.cpath = absolute_only(path), absolute_only(cpath)
  local ok, m = pcall(require, "orch.cmd." .. name)
  package.path, package.cpath = path, cpath
  if not ok then
    if tostring(m):find("no orch module 'orch.cmd.", 1, true) or tostring(m):find("module 'orch.cmd." .. name .. "' not found", 1, true) then
      return nil
    end
    error(m, 0)
  end
  if type(m) == "function" then m = { main = m } end
  if type(m) ~= "table" or type(m.main) ~= "function" then return nil end
  local c = M._parser:command(name):add_help(false)
  c._orch_name, c._orch_module = name, m
  help_flag(c)
  if m.args then
    m.args(c, help_flag)
  else
    -- Everything after the command word is its own, as a list.
    local main = m.main
    c._orch_module = setmetatable({ tail = 0, verbatim = true, main = function(o) return main(o.args) end }, { __index = m })
    c:argument("ARGS"):target("args"):args("*")
  end
  return c
end

local function command_parser(name)
  for _, c in ipairs(M.parser()._commands) do
    if c._name == name then return c end
  end
  return add_extra(name)
end

-- The options an argparse command knows: alias -> takes a value.
local function option_arity(cmd)
  local t = {}
  for _, o in ipairs(cmd._options) do
    for _, a in ipairs(o._aliases) do t[a] = o._maxargs > 0 end
  end
  return t
end

--- Every option the parser knows, as { {command, option}, ... } (ctl's
-- subcommands as "ctl status"); the man page check reads this.
function M.options()
  local out = {}
  local function walk(cmd, path)
    for _, o in ipairs(cmd._options) do
      for _, a in ipairs(o._aliases) do
        if a:sub(1, 2) == "--" then out[#out + 1] = { path, a } end
      end
    end
    for _, c in ipairs(cmd._commands) do
      walk(c, path == "" and c._name or (path .. " " .. c._name))
    end
  end
  walk(M.parser(), "")
  return out
end

-- For a command with a verbatim tail (`run FILE ARGS...`): inserts "--"
-- before the first word of the tail, so argparse takes none of it as an
-- option. args: the words after the command word. Returns the new list and
-- the index of the tail's first word in `args` (nil when there is none).
local function split_tail(cmd, args, fixed)
  local arity = option_arity(cmd)
  local positionals, i = 0, 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      -- The user's own end of options: the tail starts after the fixed
      -- positionals that follow it.
      local start = i + 1 + (fixed - positionals)
      return args, start <= #args and start or nil
    elseif a:sub(1, 1) == "-" and #a > 1 then
      local name = a:match("^(%-%-[^=]+)=") or a
      if arity[name] and not a:find("=", 1, true) then i = i + 1 end
    else
      if positionals == fixed then
        local out = { table.unpack(args, 1, i - 1) }
        out[#out + 1] = "--"
        for j = i, #args do out[#out + 1] = args[j] end
        return out, i
      end
      positionals = positionals + 1
    end
    i = i + 1
  end
  return args, nil
end

-- An option's value that starts with "-" (`--timeout -1`, `-n -5`) would be
-- read as an option: it is joined to its option (`--timeout=-1`, `-n-5`)
-- so that the option's own check reports it. cmd: the command's parser
-- (its options and its subcommands' count).
local function join_values(p, cmd, args)
  local arity = option_arity(p)
  if cmd then
    for k, v in pairs(option_arity(cmd)) do arity[k] = v end
    for _, sc in ipairs(cmd._commands) do
      for k, v in pairs(option_arity(sc)) do arity[k] = arity[k] or v end
    end
  end
  local out, i = {}, 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      table.move(args, i, #args, #out + 1, out)
      break
    end
    local nxt = args[i + 1]
    if arity[a] and nxt and nxt:sub(1, 1) == "-" and #nxt > 1 and nxt ~= "--" then
      out[#out + 1] = a:sub(1, 2) == "--" and (a .. "=" .. nxt) or (a .. nxt)
      i = i + 2
    else
      out[#out + 1] = a
      i = i + 1
    end
  end
  return out
end

-- argparse's "msg\nDid you mean 'x'?" as one line.
local function one_line(msg)
  local head, tip = tostring(msg):match("^(.-)\nDid you mean (.*)%?$")
  if head then return head .. " (did you mean " .. tip .. "?)" end
  return (tostring(msg):gsub("\n", " "))
end

local parse_with

-- `orch ctl [--socket P] [--json] [--timeout S] CMD [NAME...]`, the lines
-- a script or a human types most, read without argparse (whose loading and
-- parser building cost more than the rest of the client): argparse's result
-- table for the same line, or nil for anything else (help, a subcommand's
-- own options or arguments, a repeated option, a value that looks like an
-- option), which M.parse then reads with argparse.
local function ctl_line(argv)
  local o = { command = "ctl", ctl = true }
  local i = 2
  while argv[i] and argv[i]:sub(1, 1) == "-" do
    local a = argv[i]
    local opt, v = a:match("^%-%-(%a+)=(.*)$")
    if not opt then opt = a:match("^%-%-(%a+)$") end
    if opt == "json" and not v then
      if o.json then return nil end
      o.json = true
    elseif (opt == "socket" or opt == "timeout") and o[opt] == nil then
      if not v then i = i + 1 v = argv[i] end
      if not v or v == "" or v:sub(1, 1) == "-" then return nil end
      o[opt] = v
    else
      return nil
    end
    i = i + 1
  end
  local sub = argv[i]
  local m = load_command("ctl")
  local spec
  for _, d in ipairs(m.subcommands or {}) do
    if d[1] == sub then spec = d end
  end
  if not spec or (spec[2] and spec[2] ~= "names") then return nil end
  o.ctl_command, o[sub] = sub, true
  local rest = { table.unpack(argv, i + 1) }
  for _, w in ipairs(rest) do
    if w:sub(1, 1) == "-" then return nil end
  end
  if spec[2] == "names" then
    if spec[3] == "+" and #rest == 0 then return nil end
    o.names = rest
  elseif #rest > 0 then
    return nil
  end
  return o, m
end

--- Parses argv (the words after `orch`). Returns
--   "help", text        help asked for (print it, exit 0)
--   "error", message    a usage error, message already in `orch CMD: ...` form
--   "ok", o, m, tail    argparse's result, the command's module, and the
--                       index in argv of the verbatim tail's first word
function M.parse(argv)
  -- The command word: the first word that is not an option of `orch`.
  local ci
  for i, a in ipairs(argv) do
    if a == "--" then break end
    if a:sub(1, 1) ~= "-" or a == "-" then ci = i break end
  end
  local name = ci and argv[ci]
  if ci == 1 and name == "ctl" then
    local o, m = ctl_line(argv)
    if o then return "ok", o, m, nil end
  end
  -- A command line that parses needs only its own command's module: `orch
  -- ctl ping` does not load the other commands (start-up time). Help and
  -- usage errors (which may name other commands) come from the whole parser.
  local known = name and hidden[name]
  for _, c in ipairs(M.commands) do known = known or c == name end
  if known then
    local lone = build_parser({ name })
    local kind, o, m, tail = parse_with(argv, lone, ci, function(n)
      for _, c in ipairs(lone._commands) do
        if c._name == n then return c end
      end
    end)
    if kind == "ok" then
      M._lone = lone
      return kind, o, m, tail
    end
  end
  return parse_with(argv, M.parser(), ci, command_parser)
end

--- For the specs: M.parse with argparse alone (no fast reading of a ctl line).
function M._parse_argparse(argv)
  local ci
  for i, a in ipairs(argv) do
    if a == "--" then break end
    if a:sub(1, 1) ~= "-" or a == "-" then ci = i break end
  end
  return parse_with(argv, M.parser(), ci, command_parser)
end

-- M.parse with the parser p, whose command `lookup(name)` finds.
function parse_with(argv, p, ci, lookup)
  local args = { table.unpack(argv) }
  local name = ci and args[ci]
  local cmd = name and lookup(name)
  local m = cmd and cmd._orch_module
  local tail
  if m and m.tail then
    local rest = { table.unpack(args, ci + 1) }
    local split, t
    if m.verbatim and rest[1] ~= "-h" and rest[1] ~= "--help" then
      split, t = { "--", table.unpack(rest) }, #rest > 0 and 1 or nil
    else
      split, t = split_tail(cmd, rest, m.tail)
    end
    if t then tail = ci + t end
    args = { table.unpack(args, 1, ci) }
    for _, a in ipairs(split) do args[#args + 1] = a end
  end
  -- `--wait=SECONDS` beside a bare `--wait` (orch ctl start/restart): the
  -- value is taken out here, so that `--wait NAME` never reads NAME as it.
  local wait_value
  if name == "ctl" then
    for i, a in ipairs(args) do
      if a == "--" then break end
      local v = a:match("^%-%-wait=(.*)$")
      if v then args[i], wait_value = "--wait", v end
    end
  end
  args = join_values(p, cmd, args)
  local current = p
  local ok, res = pcall(p._parse, p, args, function(parser, msg)
    current = parser
    error({ usage = msg, cmd = parser }, 0)
  end)
  if ok then
    if wait_value then res.wait = wait_value end
    return "ok", res, res.command and lookup(res.command)._orch_module, tail
  end
  if type(res) ~= "table" then error(res, 0) end
  if res.help then return "help", M.help_text(res.help) end
  -- The prefix names the command the error is about (`orch ctl: ...`).
  local where = res.cmd or current
  local prefix = "orch"
  if where ~= p then prefix = "orch " .. (where._orch_name or (cmd and cmd._orch_name) or where._name) end
  local msg = one_line(res.usage)
  -- `orch status`: a ctl command given without `ctl`.
  local unknown = msg:match("^unknown command '([^']*)'")
  if unknown and where == p then
    local ctlp = command_parser("ctl")
    for _, c in ipairs(ctlp._commands) do
      if c._name == unknown then msg = msg .. " (did you mean 'orch ctl " .. unknown .. "'?)" break end
    end
  end
  local see = where == p and "orch --help" or ("orch help " .. (where._orch_name or name or ""))
  if not msg:find("did you mean", 1, true) then msg = msg .. " (see '" .. see .. "')" end
  return "error", prefix .. ": " .. msg
end

--- The help text of an argparse command (its module's usage).
function M.help_text(cmd)
  return cmd._orch_module and cmd._orch_module.usage or M.usage
end

--- `orch help [COMMAND]`: the text, or nil and an error message.
function M.help_of(name)
  if name == nil then return M.usage end
  if name == "-e" then return M.eval_usage end
  local c = command_parser(name)
  if not c then
    local _, msg = M.parse({ name })
    return nil, msg
  end
  return c._orch_module.usage
end

-- The command about to run (M.plan parsed it; M.dispatch runs it).
local pending

--- Called by main.c with argv (the words after `orch`), outside any task.
-- Returns what main.c does next:
--   "exit N"     nothing (help printed, or a usage error said): exit N
--   "run K"      argv[K] is a script file: load it as the main task with
--                argv[K+1..] as its arguments, then call M.started
--   "eval K"     argv[K] is Lua code (orch -e): the same
--   "command K"  run M.dispatch as the main task (argv[K] is the command)
-- (K counts from 1 = the first word after `orch`, as C's argv index.)
function M.plan(...)
  local argv = { ... }
  if #argv == 0 then
    io.stderr:write(M.usage)
    return "exit 2"
  end
  if argv[1] == "help" and argv[2] == "-e" and argv[3] == nil then
    io.stdout:write(M.eval_usage)
    return "exit 0"
  end
  if argv[1] == "-e" then
    if argv[2] == nil then
      io.stderr:write("orch: -e needs CODE (see 'orch help -e')\n")
      return "exit 2"
    end
    return "eval 2"
  end
  -- `orch FILE ARGS...`: a word with a slash or ending in .lua is a script.
  if argv[1]:sub(1, 1) ~= "-" and (argv[1]:find("/", 1, true) or argv[1]:match(".%.lua$")) then
    return M.prepare_run({}, argv[1]) or "run 1"
  end
  -- (`orch fdholder SOCKET PID START` never comes here: src/main.c runs the
  -- C holder, src/fdholder.c, before it makes a runtime.)
  local kind, o, m, tail = M.parse(argv)
  if kind == "help" then
    io.stdout:write(o)
    return "exit 0"
  elseif kind == "error" then
    io.stderr:write(o, "\n")
    return "exit " .. EXIT_USAGE
  end
  if o.version and not o.command then
    io.stdout:write(orch.version(), "\n")
    return "exit 0"
  end
  if not o.command then
    io.stderr:write(M.usage)
    return "exit 2"
  end
  if o.command == "run" then
    if not tail then
      io.stderr:write("orch run: a FILE is needed (see 'orch help run')\n")
      return "exit 2"
    end
    M.release_parser()
    return M.prepare_run(o, argv[tail]) or ("run " .. tail)
  end
  if type(m.plan) == "function" then
    -- A command done before any task runs (help, version).
    return "exit " .. tostring(m.plan(o) or 0)
  end
  M.release_parser(o.command)
  -- The long-running commands get the signal table from the start (they
  -- set their own log function for it once their log is open).
  if o.command == "every" or o.command == "watchdog" then M.protect() end
  pending = { o = o, m = m }
  for i, a in ipairs(argv) do
    if a == o.command then return "command " .. i end
  end
  return "command 1"
end

--- `orch run` before the script loads: the budget, init mode as PID 1, the
-- signal table, the control socket's lock. Returns nil to go on, or
-- "exit N" after saying why not (75, EX_TEMPFAIL: another orchestrator
-- holds the lock; try again once it has ended).
function M.prepare_run(o, file)
  if o.lua_budget then
    local b = tonumber(o.lua_budget)
    if not b or not (b >= 0 and b <= 1e9) then
      io.stderr:write("orch run: --lua-budget needs SECONDS (a number >= 0; 0: no budget) (see 'orch help run')\n")
      return "exit 2"
    end
    orch.set_budget(b)
  end
  if o.socket == "" then
    io.stderr:write("orch run: --socket needs a PATH (see 'orch help run')\n")
    return "exit 2"
  end
  if o.socket and o.no_socket then
    io.stderr:write("orch run: give either --socket or --no-socket (see 'orch help run')\n")
    return "exit 2"
  end
  if o.take_over and o.no_socket then
    io.stderr:write("orch run: --take-over needs a control socket: give either --take-over or --no-socket (see 'orch help run')\n")
    return "exit 2"
  end
  if o.http == "" then
    io.stderr:write("orch run: --http needs an ADDR (host:port) (see 'orch help run')\n")
    return "exit 2"
  end
  if o.log_format then require("orch.log").configure{ format = o.log_format } end
  local socket = o.socket
  if o.no_socket then socket = "" end
  M.run_opts = { socket = socket, http = o.http }
  -- As PID 1 (a container's init): reap every orphan, forward signals.
  if orch.getpid() == 1 then M.init_mode() end
  -- No catchable signal may end orch by its default action while children
  -- run (orch.signal.protect; the table is in doc/cli.md).
  local ok, err = pcall(M.protect)
  if not ok then io.stderr:write("orch: signal table: ", tostring(err), "\n") end
  -- One orchestrator per control socket: the lock is taken before the
  -- script runs when a socket is asked for, or when it loads the supervisor.
  local cok, held = pcall(M.claim, file, socket, o.take_over)
  if not cok then
    io.stderr:write("orch: control socket lock: ", tostring(held), "\n")
    return "exit 1"
  elseif held then
    io.stderr:write("orch: ", held, ": another orchestrator runs (nothing was started)\n")
    return "exit 75"
  end
  return nil
end

--- Called by main.c (as a task) once `orch run`'s script is loaded: the
-- control socket and the HTTP endpoint, as tasks that begin once the main
-- chunk has run or waits.
function M.started()
  local ro = M.run_opts or {}
  orch.task(M.start_ctl, ro.socket)
  if ro.http then M.start_http(ro.http) end
end

--- `orch NAME ARGS...`: runs the command M.plan parsed (lua/orch/cmd/NAME.lua)
-- as the main task.
function M.dispatch()
  local p = pending
  pending = nil
  if not p then error("orch.cli.dispatch: no command was parsed", 0) end
  local code = p.m.main(p.o)
  if code and code ~= 0 and code ~= true then orch.exit(code) end
end

--- The control socket and systemd readiness, started as a task once the
-- script's main chunk has run or waits. socket: a path, "" (--no-socket) or
-- nil (the default rules).
function M.start_ctl(socket)
  if socket == "" then socket = false end
  local ok, ctl = pcall(require, "orch.ctl")
  if ok then return ctl.autostart { socket = socket } end
  require("orch.sdnotify").ready()
  -- Without the control plane (lua-cjson missing, say) a supervisor would
  -- run unreachable: say so, loudly when a socket was asked for.
  if socket then error("control socket " .. socket .. ": " .. tostring(ctl), 0) end
  if socket == nil and package.loaded["orch.supervisor"] then
    io.stderr:write("orch: no control socket (orch ctl cannot reach this orchestrator): ", tostring(ctl), "\n")
  end
end

--- `orch run --http ADDR`: the read-only HTTP endpoint of the script's
-- supervisor (orch.http), as a task once the main chunk has run or waits.
-- A bad address or a port in use is said on stderr; orch runs on without it
-- (as without a control socket it could not create).
function M.start_http(addr)
  orch.task(function()
    local http = require "orch.http"
    local ok, srv, err = pcall(http.supervisor, { listen = addr })
    if ok and srv then
      io.stderr:write("orch: http: listening on ", srv.address, "\n")
      M.http = srv
      return
    end
    local msg = ok and tostring(err) or tostring(srv):gsub("^bad argument #1 to 'supervisor' ", "")
    M.http_error = msg
    io.stderr:write("orch: http: --http ", addr, ": ", msg, "\n")
  end)
end

--- As PID 1 (a container's init): reap every orphan, forward signals the
-- script does not handle (orch.proc.init_mode).
function M.init_mode()
  if orch.proc and orch.proc.init_mode then orch.proc.init_mode() end
end

--- The default signal table (orch.signal.protect).
function M.protect()
  return orch.signal.protect()
end

--- One orchestrator per control socket: takes the lock for `file`'s socket
-- (socket: a path, "" for --no-socket, nil for the default rules). Returns
-- nil, or the message saying who holds it.
function M.claim(file, socket, take_over)
  if socket == "" then socket = false end
  local ok, msg = require("orch.ctl").claim_for_run(socket, file, take_over)
  if not ok then return msg end
end

--- The message of a lock refused when the script loaded the supervisor, or nil.
function M.lock_refused()
  local ctl = package.loaded["orch.ctl"]
  return type(ctl) == "table" and type(ctl.refused) == "string" and ctl.refused or nil
end

return M
