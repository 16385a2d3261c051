--- `orch attach`: a prompt whose lines run inside a running orchestrator
-- (the `eval` request of the control socket, see doc/ctl.md).
local M = {}

M.summary = "a prompt inside a running orchestrator"

M.usage = [=[
usage: orch attach [--socket PATH] [--trust-uid UID]

A Lua prompt whose lines are evaluated inside the running orchestrator's
Lua state, as tasks: its globals, its supervisor (require "orch.supervisor")
and its tasks are at hand. What the code prints is shown at the prompt.
Line editing, history and multi-line input as in `orch repl`; Ctrl-C
cancels the line being typed or the evaluation in progress; Ctrl-D
detaches (the orchestrator keeps running).

  --socket PATH   the control socket (default as for `orch ctl`)
  --trust-uid UID talk to an orchestrator running as UID (as for `orch ctl`)

Exit status: 0 detached, 1 when standard input is not a terminal and a
line failed, 2 usage error, 3 cannot connect (or the connection was lost).
]=]

--- An evaluator for orch.repl.loop that sends each chunk to the control
-- socket at `path`. Returns eval, close.
function M.remote_eval(path, on_lost, trust_uid)
  local ctl = require "orch.ctl"
  local repl = require "orch.repl"
  local client
  local function eval(code)
    if not client then
      local err
      client, err = ctl.connect(path, nil, trust_uid)
      if not client then
        on_lost(err)
        return "error", "cannot connect to " .. path .. ": " .. tostring(err)
      end
    end
    local c = client
    local how, r = repl.run_task(function() return c:request{ cmd = "eval", code = code, chunkname = "attach" } end)
    if how == "interrupted" then
      -- The reply would come later on this connection: start afresh; the
      -- closed connection cancels the evaluation in the orchestrator.
      c:close()
      client = nil
      return "interrupted"
    end
    local reply, err = nil, r
    if how == "ok" then reply, err = r[1], r[2] end
    if not reply then
      c:close()
      client = nil
      on_lost(err)
      return "error", "connection lost: " .. tostring(err)
    end
    if reply.incomplete then return "incomplete" end
    local text = {}
    if type(reply.output) == "string" and reply.output ~= "" then text[#text + 1] = reply.output end
    if reply.ok then
      if type(reply.result) == "string" and reply.result ~= "" then text[#text + 1] = reply.result end
      return "ok", table.concat(text, "\n")
    end
    text[#text + 1] = tostring(reply.error)
    return "error", table.concat(text, "\n")
  end
  return eval, function() if client then client:close() client = nil end end
end

function M.args(c)
  c:option("--socket"):argname("PATH")
  c:option("--trust-uid"):argname("UID")
end

function M.main(o)
  local orch = require "orch"
  local ctl = require "orch.ctl"
  local repl = require "orch.repl"
  local cli = require "orch.cmd.ctl"
  if o.socket == "" then
    io.stderr:write("orch attach: --socket needs a path (see 'orch help attach')\n")
    return orch.exit(2)
  end
  local trust, terr = require("orch.ctl.command").trust_uid(o.trust_uid)
  if terr then
    io.stderr:write("orch attach: ", terr, " (see 'orch help attach')\n")
    return orch.exit(2)
  end
  local path, perr, pcode = cli.find_socket(o.socket)
  if not path then
    io.stderr:write("orch attach: ", perr, "\n")
    return orch.exit(pcode)
  end
  local probe, err = ctl.connect(path, nil, trust)
  if not probe then
    io.stderr:write("orch attach: cannot connect to ", path, ": ", tostring(err):gsub("^connect: ", ""), "\n")
    return orch.exit(3)
  end
  local hello = probe:request{ cmd = "ping" } or {}
  probe:close()
  local lost = false
  local eval, close = M.remote_eval(path, function() lost = true end, trust)
  local failures = repl.loop{
    eval = eval,
    banner = string.format("attached to %s (pid %s) at %s  (Ctrl-D detaches)",
                           tostring(hello.script), tostring(hello.pid), path),
  }
  close()
  if lost then return orch.exit(3) end
  return orch.exit((not orch.term.isatty(0) and failures > 0) and 1 or 0)
end

return M
