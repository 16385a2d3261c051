--- orch.cli: the Lua half of the `orch` command (src/main.c parses the
-- command line and calls these through orch_call / orch_load_function; it
-- holds no Lua code of its own and passes everything as arguments).
local orch = require "orch"

local M = {}

--- `orch NAME ARGS...`: runs lua/orch/cmd/NAME.lua, which returns a table
-- with main(argv) (returning an exit code) and usage (help text), or a bare
-- function main. Runs as the main task.
function M.dispatch(name, ...)
  local ok, m = pcall(require, "orch.cmd." .. name)
  if not ok then
    if tostring(m):find("no orch module 'orch.cmd.", 1, true) then
      io.stderr:write("orch: unknown command '", name, "' (see 'orch --help')\n")
      return orch.exit(2)
    end
    error(m, 0)
  end
  if select(1, ...) == "--help" and type(m) == "table" and m.usage then
    io.stdout:write(m.usage)
    return
  end
  local main = type(m) == "table" and m.main or m
  local code = main({ ... })
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
function M.claim(file, socket)
  if socket == "" then socket = false end
  local ok, msg = require("orch.ctl").claim_for_run(socket, file)
  if not ok then return msg end
end

--- The message of a lock refused when the script loaded the supervisor, or nil.
function M.lock_refused()
  local ctl = package.loaded["orch.ctl"]
  return type(ctl) == "table" and type(ctl.refused) == "string" and ctl.refused or nil
end

return M
