--- orch.ctl.command: what `orch ctl` runs for a command line (doc/ctl.md):
-- the subcommands, the reading of a plain line without argparse, the
-- requests, the replies printed, the exit status. orch.cli.plan hands a
-- plain line (`orch ctl ping`, `orch ctl --json status web`) to read_line,
-- so a ping loads this, orch.ctl.client and cjson, and neither argparse
-- (orch.cli.parse) nor orch.cmd.ctl (the help text, the argparse
-- declarations, the status table and event formatters, which the commands
-- that print those load: start-up time, issue 15).
local M = {}

-- The formatters of tables and events (orch.cmd.ctl).
local function view() return require "orch.cmd.ctl" end

local EXIT_FAIL, EXIT_USAGE, EXIT_CONNECT = 1, 2, 3
-- status, is-active, health: as LSB init scripts and systemctl answer.
local EXIT_NOT_RUNNING, EXIT_UNKNOWN = 3, 4

local function usage_error(fmt, ...)
  io.stderr:write("orch ctl: ", string.format(fmt, ...), " (see 'orch help ctl')\n")
  return EXIT_USAGE
end

local function errorf(fmt, ...)
  io.stderr:write("orch ctl: ", string.format(fmt, ...), "\n")
end

--- The socket to talk to: explicit, $ORCH_SOCKET, or the only socket in
-- the default directory. Returns path, or nil, message, exit code.
function M.find_socket(explicit)
  if explicit then return explicit end
  local env = os.getenv("ORCH_SOCKET")
  if env and env ~= "" then return env end
  local ctl = require "orch.ctl.client"
  -- A default directory another user created could hold their socket: a
  -- client would send its requests (eval code included) to them and trust
  -- their replies (doc/security.md#the-runtime-directory).
  -- (A client never creates it: when it is missing, no orchestrator runs.)
  local dir = ctl.socket_dir()
  local names = require("orch").sockets(dir)
  if names then
    local ok, derr = ctl.ensure_socket_dir()
    if not ok then return nil, derr, EXIT_CONNECT end
  end
  -- An fd holder's socket (SOCKET.holder, see orch.supervisor.persist) is
  -- no orchestrator.
  for i = #(names or {}), 1, -1 do
    if names[i]:match("%.holder$") then table.remove(names, i) end
  end
  if not names or #names == 0 then
    return nil, "no orchestrator found: no socket in " .. dir .. " (is `orch run` running? use --socket)", EXIT_CONNECT
  end
  if #names > 1 then
    table.sort(names)
    return nil, "several orchestrators in " .. dir .. " (" .. table.concat(names, ", ") .. "): use --socket", EXIT_USAGE
  end
  return dir .. "/" .. names[1]
end

--- --trust-uid UID (orch ctl, attach, top): the uid, or nil, or nil,
-- message for a value that is none.
function M.trust_uid(v)
  if v == nil then return nil end
  local n = math.tointeger(tonumber(v))
  if not n or n < 0 or n > 0xfffffffe or not tostring(v):match("^%d+$") then
    return nil, "--trust-uid needs a uid (a number), got '" .. tostring(v) .. "'"
  end
  return n
end

--- Declares the options and subcommands (orch.cli builds the parser).
local SUBCOMMANDS = {
  { "status", "names", "*" }, { "is-active", "names", "+" }, { "health" },
  { "start", "names", "+" }, { "stop", "names", "+" },
  { "restart", "names", "+" }, { "signal", { "name", "signal" } },
  { "freeze", "names", "+" }, { "thaw", "names", "+" }, { "tail", "name", 1 },
  { "events" }, { "trigger", "names", "+" }, { "pause", "names", "+" }, { "resume", "names", "+" },
  { "eval", "code", 1 }, { "reload" }, { "reexec" }, { "shutdown" }, { "ping" },
}

-- The subcommands with their arguments (orch.cli reads a plain line with it).
M.subcommands = SUBCOMMANDS

-- `orch ctl [--socket P] [--json] [--timeout S] CMD [NAME...]`, the lines
-- a script or a human types most, read without argparse (whose loading and
-- parser building cost more than the rest of the client): argparse's result
-- table for the same line, or nil for anything else (help, a subcommand's
-- own options or arguments, a repeated option, a value that looks like an
-- option), which orch.cli.parse then reads with argparse. Returns the
-- table and this module (its main runs the command).
function M.read_line(argv)
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
  local spec
  for _, d in ipairs(SUBCOMMANDS) do
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
  return o, M
end

--- systemctl is-active's word for a service's status record. A service
-- held by a stop signal shows `stopped` with its stop_signal, a frozen one
-- `frozen`: both are active, as systemd calls a unit whose processes exist
-- (a never-started or ended service is `stopped` without a stop_signal).
function M.active_word(s)
  local state = s.state
  if state == "running" or state == "frozen" then return "active" end
  if state == "stopped" and s.stop_signal then return "active" end
  if state == "starting" or state == "waiting" or state == "backoff" then return "activating" end
  if state == "stopping" then return "deactivating" end
  if state == "fatal" then return "failed" end
  if state == "unknown" then return "unknown" end
  return "inactive"
end

-- Builds the requests for a parsed command line (orch.cli's result).
-- Returns a list, or nil, message.
local function requests(cmd, o)
  if cmd == "status" then
    -- The table of every service comes made (a status of 10,000 services
    -- then needs no record decoded per service); --json prints the records.
    if #o.names == 0 then return { { cmd = "status", format = not o.json and "table" or nil } } end
    local list = {}
    for i, n in ipairs(o.names) do list[i] = { cmd = "status", name = n } end
    return list
  end
  if cmd == "is-active" then
    local list = {}
    for i, n in ipairs(o.names) do list[i] = { cmd = "status", name = n } end
    return list
  end
  if cmd == "start" or cmd == "stop" or cmd == "restart" or cmd == "freeze" or cmd == "thaw" then
    local wait
    if o.wait then
      if o.wait == true then wait = true
      else
        wait = tonumber(o.wait)
        if not wait or not (wait >= 0 and wait < math.huge) then
          return nil, "--wait=SECONDS needs a number of seconds >= 0, got '" .. tostring(o.wait) .. "'"
        end
      end
    end
    -- stop, restart: wait for the processes' exits unless --no-block (as
    -- systemctl stop and restart); --wait=SECONDS bounds that wait.
    if o.no_block then
      if o.wait then return nil, "--no-block and --wait cannot go together" end
      wait = false
    end
    local list = {}
    for i, n in ipairs(o.names) do list[i] = { cmd = cmd, name = n, wait = wait } end
    return list
  end
  if cmd == "signal" then
    if not require("orch").signal.number(math.tointeger(tonumber(o.signal)) or o.signal) then
      return nil, "signal: unknown signal '" .. o.signal .. "' (a name such as TERM or HUP, or a number)"
    end
    return { { cmd = "signal", name = o.name, signal = math.tointeger(tonumber(o.signal)) or o.signal } }
  end
  if cmd == "tail" or cmd == "events" then
    -- -n N: how many lines or events (tail: 10 by default, events: the
    -- server's 20).
    local req = { cmd = cmd, lines = cmd == "tail" and 10 or nil, name = o.name, follow = o.follow or nil }
    if o.lines then
      local n = math.tointeger(tonumber(o.lines))
      if not n or n < 0 then return nil, cmd .. ": -n needs a non-negative integer" end
      req.lines = n
    end
    return { req }
  end
  if cmd == "eval" then return { { cmd = "eval", code = o.code } } end
  if cmd == "trigger" or cmd == "pause" or cmd == "resume" then
    local list = {}
    for i, n in ipairs(o.names) do list[i] = { cmd = "job", action = cmd, name = n } end
    return list
  end
  return { { cmd = cmd } }
end

local function print_reply(cmd, req, reply)
  local out = io.stdout
  if cmd == "status" then
    for _, l in ipairs(view().format_status(reply.services or {})) do out:write(l, "\n") end
  elseif cmd == "restart" and type(reply.restarting) == "table" then
    -- --no-block: the restart is under way, stopping these.
    for _, i in ipairs(reply.restarting) do
      out:write(i.name, ": restarting", i.pid and (" (pid " .. tostring(math.tointeger(i.pid) or i.pid) .. ")") or "", "\n")
    end
    if #reply.restarting == 0 then out:write(req.name, ": restarting\n") end
  elseif cmd == "start" or cmd == "restart" then
    for _, i in ipairs(reply.instances or {}) do
      local pid = i.pid and (", pid " .. tostring(math.tointeger(i.pid) or i.pid)) or ""
      if req.wait then
        out:write(i.name, ": ", i.state == "running" and "ready" or tostring(i.state), pid, "\n")
      else
        out:write(i.name, ": ", cmd .. "ed", " (", tostring(i.state), pid, ")\n")
      end
    end
    if not reply.instances then out:write(req.name, ": ", cmd .. "ed", "\n") end
    if cmd == "restart" and type(reply.restarted) == "table" then
      out:write("restarted: ", #reply.restarted > 0 and table.concat(reply.restarted, " ") or "(none)", "\n")
    end
  elseif cmd == "stop" and type(reply.stopping) == "table" then
    -- --no-block: the stop is under way.
    for _, i in ipairs(reply.stopping) do
      out:write(i.name, ": stopping", i.pid and (" (pid " .. tostring(math.tointeger(i.pid) or i.pid) .. ")") or "", "\n")
    end
    if #reply.stopping == 0 then out:write(req.name, ": stopped\n") end
  elseif cmd == "stop" then
    out:write(req.name, ": stopped\n")
    for _, a in ipairs(reply.also_stopped or {}) do
      out:write(a.name, ": stopped too", a.because and (" (it depends on " .. a.because .. ")") or " (a dependent)", "\n")
    end
  elseif cmd == "trigger" or cmd == "pause" or cmd == "resume" then
    out:write(req.name, ": ", cmd == "trigger" and "triggered" or (cmd .. "d"), "\n")
  elseif cmd == "freeze" or cmd == "thaw" then
    out:write(req.name, ": ", cmd == "freeze" and "frozen" or "thawed", "\n")
  elseif cmd == "signal" then
    out:write(req.name, ": sent ", tostring(req.signal), "\n")
  elseif cmd == "tail" then
    for _, l in ipairs(reply.lines or {}) do out:write(M.output_line(l), "\n") end
  elseif cmd == "events" then
    for _, ev in ipairs(reply.events or {}) do out:write(view().format_event(ev), "\n") end
  elseif cmd == "eval" then
    if reply.output and reply.output ~= "" then out:write(reply.output, "\n") end
    if reply.result and reply.result ~= "" then out:write(reply.result, "\n") end
  elseif cmd == "reload" then
    for _, k in ipairs { "kept", "restarted", "stopped", "added" } do
      local l = reply[k]
      if type(l) == "table" and #l > 0 then out:write(k, ": ", table.concat(l, " "), "\n") end
    end
  elseif cmd == "ping" then
    out:write("orch ", tostring(reply.version), ", pid ", tostring(reply.pid), ", ", tostring(reply.script), "\n")
  elseif cmd == "shutdown" then
    out:write("shutting down\n")
  elseif cmd == "reexec" then
    out:write("re-executing\n")
  end
  out:flush()
end

--- A line of a service's output as `orch ctl tail` prints it: on a
-- terminal its control characters but TAB (ESC, BEL, CR, DEL; the C1
-- controls as UTF-8) are shown as "?", as `orch ctl status` shows a STATUS=
-- text (orch.ctl.format.cell): a service's output reaches the terminal of
-- whoever tails it (root), where an escape sequence would retitle, clear
-- or rewrite the screen. On a pipe or a file (and with --json) the line is
-- printed as the service wrote it.
local tty_out
function M.output_line(l)
  if not l:find("[%c\194]") then return l end
  if tty_out == nil then tty_out = require("orch").term.isatty(1) end
  if not tty_out then return l end
  return (l:gsub("[%z\1-\8\10-\31\127]", "?"):gsub("\194[\128-\159]", "?"))
end

function M.main(o)
  local orch = require "orch"
  local ctl = require "orch.ctl.client"
  local function finish(code) return orch.exit(code) end
  local opts = { socket = o.socket, json = o.json }
  if o.socket == "" then return finish(usage_error("--socket needs a path")) end
  if o.timeout then
    local t = tonumber(o.timeout)
    if not t or t <= 0 or t ~= t then return finish(usage_error("--timeout needs a positive number of seconds")) end
    opts.timeout = t
  end
  local trust, terr = M.trust_uid(o.trust_uid)
  if terr then return finish(usage_error("%s", terr)) end
  local cmd = o.ctl_command
  if not cmd then return finish(usage_error("a command is needed")) end
  local reqs, rerr = requests(cmd, o)
  if not reqs then return finish(usage_error("%s", rerr)) end
  local path, perr, pcode = M.find_socket(opts.socket)
  if not path then
    errorf("%s", perr)
    return finish(pcode)
  end
  local client, cerr = ctl.connect(path, nil, trust)
  if not client then
    errorf("cannot connect to %s: %s", path, tostring(cerr):gsub("^connect: ", ""))
    return finish(EXIT_CONNECT)
  end
  local status = 0
  -- status, is-active: one table (or one word per name) for every reply,
  -- and an LSB exit status (0 all running, 3 some not, 4 unknown service).
  local probe = (cmd == "status" or cmd == "is-active") and { services = {}, unknown = false, not_running = 0 } or nil
  for _, req in ipairs(reqs) do
    if cmd == "stop" or cmd == "restart" then req.progress = not opts.json or nil end
    -- A status reply's list of records is not decoded when the reply says
    -- how many are not running (the table, --json: printed as it came).
    local reply, err = client:request(req, opts.timeout, cmd == "status" and opts.json and "services" or nil)
    -- A stop or restart that waits says what it waits for.
    while reply and reply.ok == nil and reply.progress do
      if not opts.json then io.stderr:write(tostring(reply.progress), "\n") io.stderr:flush() end
      reply, err = client:receive(opts.timeout)
    end
    if not reply then
      errorf("%s: %s", path, tostring(err))
      return finish(EXIT_FAIL)
    end
    -- With a reply, the second value is its line of JSON: --json prints it
    -- as it came (a status of 10,000 services is 2.4 MB to encode again).
    local line = err
    -- The server is in trouble (out of file descriptors): say so first.
    if type(reply.warning) == "string" and not opts.json then errorf("warning: %s", reply.warning) end
    if opts.json and cmd ~= "is-active" then
      io.stdout:write(line, "\n")
      io.stdout:flush()
    end
    if probe then
      if reply.ok and math.type(reply.not_running) == "integer" and (reply.table or not reply.services) then
        probe.not_running = probe.not_running + reply.not_running
        if type(reply.table) == "string" then probe.table, probe.count = reply.table, reply.count end
        if type(reply.jobs) == "table" and #reply.jobs > 0 then probe.jobs = reply.jobs end
      elseif reply.ok then
        for _, s in ipairs(reply.services or {}) do probe.services[#probe.services + 1] = s end
        if type(reply.jobs) == "table" and #reply.jobs > 0 then probe.jobs = reply.jobs end
      elseif reply.code == "ENOENT" then
        probe.unknown = true
        if cmd == "is-active" then probe.services[#probe.services + 1] = { name = req.name, state = "unknown" } end
        if not opts.json and cmd == "status" then errorf("%s", tostring(reply.error)) end
      else
        errorf("%s%s", req.name and (req.name .. ": ") or "", tostring(reply.error))
        return finish(EXIT_FAIL)
      end
    elseif cmd == "health" then
      if not reply.ok then
        errorf("%s", tostring(reply.error))
        status = EXIT_FAIL
      else
        if not opts.json then
          if reply.healthy then io.stdout:write("healthy\n")
          else for _, p in ipairs(reply.problems or {}) do io.stdout:write(p, "\n") end end
        end
        if not reply.healthy then status = EXIT_NOT_RUNNING end
      end
    elseif not reply.ok then
      if not opts.json then
        if cmd == "eval" and reply.output and reply.output ~= "" then io.stdout:write(reply.output, "\n") end
        local named = ((cmd == "start" or cmd == "restart") and reply.instances)
          or ((cmd == "stop" or cmd == "restart") and reply.stopping)
        errorf("%s%s", (req.name and not named) and (req.name .. ": ") or "", tostring(reply.error))
        if cmd == "restart" and type(reply.restarted) == "table" and #reply.restarted > 0 then
          io.stdout:write("restarted: ", table.concat(reply.restarted, " "), "\n")
        end
      end
      status = EXIT_FAIL
    elseif not opts.json then
      print_reply(cmd, req, reply)
    end
    if reply.ok and req.follow then
      -- New lines arrive as {"line": ...} until Ctrl-C or the end.
      local stop = orch.task(function()
        orch.term.wait_interrupt()
        client:close()
      end)
      while true do
        local msg, mline = client:receive()
        if not msg then break end
        if opts.json then io.stdout:write(mline, "\n")
        elseif msg.line then io.stdout:write(M.output_line(msg.line), "\n")
        elseif msg.event then io.stdout:write(view().format_event(msg.event), "\n")
        elseif msg.ok == false then errorf("%s", tostring(msg.error)) status = EXIT_FAIL end
        io.stdout:flush()
      end
      stop:cancel()
    end
  end
  client:close()
  if probe then
    -- status: every service named runs; is-active: every one is active
    -- (a SIGSTOPped or frozen service too: its processes exist).
    local all_up = probe.not_running == 0
    for _, s in ipairs(probe.services) do
      if cmd == "is-active" then
        if M.active_word(s) ~= "active" then all_up = false end
      elseif s.state ~= "running" then
        all_up = false
      end
    end
    if cmd == "status" and not opts.json then
      local nservices = probe.table and probe.count or #probe.services
      if (nservices > 0 or not probe.unknown) and not (probe.jobs and nservices == 0) then
        if probe.table then io.stdout:write(probe.table, "\n")
        else for _, l in ipairs(view().format_status(probe.services)) do io.stdout:write(l, "\n") end end
      end
      if probe.jobs then
        if nservices > 0 then io.stdout:write("\n") end
        for _, l in ipairs(view().format_jobs(probe.jobs)) do io.stdout:write(l, "\n") end
      end
    elseif cmd == "is-active" then
      for _, s in ipairs(probe.services) do
        if opts.json then io.stdout:write(ctl.encode({ name = s.name, state = s.state, active = M.active_word(s) }), "\n")
        elseif not o.quiet then io.stdout:write(M.active_word(s), "\n") end
      end
    end
    io.stdout:flush()
    if probe.unknown then return finish(EXIT_UNKNOWN) end
    return finish(all_up and 0 or EXIT_NOT_RUNNING)
  end
  return finish(status)
end

return M
