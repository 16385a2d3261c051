--- orch.cli: the `orch` command line. src/main.c hands it argv (M.plan,
-- through orch_call) and keeps only what must be C: loading a script file or
-- a -e string as the main task, running the loop, turning the outcome into
-- an exit status. Everything else is here: one parser (lua-argparse) for
-- `orch` and every command, the help texts, usage errors, and the Lua half of
-- `orch run` (control socket, HTTP endpoint, lock, signal table, budget).
-- The parser is orch.cli.parse, loaded when a line needs it: a plain `orch
-- ctl` line (`orch ctl ping`, `orch ctl status web`) is read by
-- orch.ctl.command without argparse, the command modules or the help texts
-- (start-up time, issue 15).
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
M.hidden = { fdholder = true }

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

local function parser_module() return require "orch.cli.parse" end

--- The parser of `orch` and every command (argparse objects). Each command
-- parser carries `_orch_name` ("ctl") and `_orch_module`.
function M.parser() return parser_module().parser() end

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
  package.loaded["orch.cli.parse"] = nil
end

-- `orch run FILE`: the relative entries of package.path and package.cpath
-- (the default's ./?.lua, ./?/init.lua and ./?.so, or a LUA_PATH's) are
-- taken from the script's own directory, not the current one, and only
-- while that directory is safe (orch's user's or root's, not writable by
-- group or others: orch.private.check_dir). A root orch started in, or
-- running a script from, a directory another user may write to (/tmp)
-- loaded whatever that user had put there as a module the script
-- requires. Returns the directory and nil, or nil and why it is refused.
function M.script_paths(file)
  local real = file ~= "-" and orch.realpath(file) or orch.realpath(".")
  if not real then return nil end
  local dir = file ~= "-" and (real:match("^(.*)/[^/]*$") or "") or real
  if dir == "" then dir = "/" end
  local ok, err = orch.private.check_dir(dir)
  local function rebase(path)
    local kept = {}
    for entry in path:gmatch("[^;]+") do
      if entry:sub(1, 1) == "/" then
        kept[#kept + 1] = entry
      elseif ok then
        kept[#kept + 1] = (dir == "/" and "" or dir) .. "/" .. (entry:gsub("^%./", ""))
      end
    end
    return table.concat(kept, ";")
  end
  package.path, package.cpath = rebase(package.path), rebase(package.cpath)
  if not ok then return nil, err end
  return dir
end

--- Every option the parser knows, as { {command, option}, ... } (ctl's
-- subcommands as "ctl status"); the man page check reads this.
function M.options() return parser_module().options() end

--- Parses argv (the words after `orch`). Returns
--   "help", text        help asked for (print it, exit 0)
--   "error", message    a usage error, message already in `orch CMD: ...` form
--   "ok", o, m, tail    argparse's result, the command's module, and the
--                       index in argv of the verbatim tail's first word
-- A plain `orch ctl` line (its options, a subcommand, names) is read
-- without argparse (orch.ctl.command.read_line), as argparse reads it;
-- every other line goes to the parser.
function M.parse(argv)
  if argv[1] == "ctl" then
    local o, m = require("orch.ctl.command").read_line(argv)
    if o then return "ok", o, m, nil end
  end
  return parser_module().parse(argv)
end

--- For the specs: M.parse with argparse alone (no fast reading of a ctl line).
function M._parse_argparse(argv) return parser_module()._parse_argparse(argv) end

--- The help text of an argparse command (its module's usage).
function M.help_text(cmd) return parser_module().help_text(cmd) end

--- `orch help [COMMAND]`: the text, or nil and an error message.
function M.help_of(name) return parser_module().help_of(name) end
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
  local sdir, serr = M.script_paths(file)
  if not sdir and serr then
    io.stderr:write("orch run: modules are not looked for beside the script: ", tostring(serr), "\n")
  end
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
  local cok, held, hcode = pcall(M.claim, file, socket, o.take_over)
  if not cok then
    io.stderr:write("orch: control socket lock: ", tostring(held), "\n")
    return "exit 1"
  elseif held and hcode == "ENAMETOOLONG" then
    io.stderr:write("orch: ", held, " (nothing was started)\n")
    return "exit 2"
  elseif held and hcode ~= nil and hcode ~= "EAGAIN" then
    -- (The directory refused or not made: no other orchestrator.)
    io.stderr:write("orch: ", held:match("^control socket ") and "" or "control socket: ", held, " (nothing was started)\n")
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
-- nil, or the message saying who holds it (or why the path cannot be a
-- control socket) and its code.
function M.claim(file, socket, take_over)
  if socket == "" then socket = false end
  local ok, msg, code = require("orch.ctl").claim_for_run(socket, file, take_over)
  if not ok then return msg, code end
end

--- The message of a lock refused when the script loaded the supervisor, or nil.
function M.lock_refused()
  local ctl = package.loaded["orch.ctl"]
  return type(ctl) == "table" and type(ctl.refused) == "string" and ctl.refused or nil
end

return M
