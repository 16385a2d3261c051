--- `orch repl [FILE [ARGS...]]`: an interactive Lua prompt on the running
-- event loop. See doc/repl.md.
local M = {}

M.summary = "interactive prompt while the loop runs"

M.usage = [=[
usage: orch repl [FILE [ARGS...]]

An interactive Lua prompt while the event loop keeps running: tasks and
timers started at the prompt run between lines. Expressions print their
values (tables pretty-printed); a line that ends inside a statement
continues on the next one (prompt ">>"); `=expr` is `return expr`.
With FILE, the script runs first (as a task, with arg and ... set as by
`orch run`) and the prompt appears once it ends or waits.

On a terminal: line editing (libedit), history in ~/.orch_history
(or $ORCH_HISTORY; empty for none), Ctrl-C cancels the line being typed
or the evaluation in progress, Ctrl-D exits. When standard input is not a
terminal, lines are read and evaluated without prompts, errors go to
standard error.

Exit status: 0 at end of input (Ctrl-D), 1 when standard input is not a
terminal and a line failed, 2 usage error or FILE not found, or the code
given to orch.exit().
]=]

-- FILE and everything after it are the script's.
M.tail = 0

function M.args(c)
  c:argument("FILE"):target("file"):args("?")
  c:argument("ARGS"):target("args"):args("*")
end

function M.main(o)
  local orch = require "orch"
  local repl = require "orch.repl"
  local file = o.file
  if file then
    local args = o.args
    local fn, err = loadfile(file)
    if not fn then
      io.stderr:write("orch repl: ", err, "\n")
      return orch.exit(io.open(file, "r") and 1 or 2)
    end
    _G.arg = { [0] = file, table.unpack(args) }   -- as `orch run` sets it
    local t = orch.task(fn, table.unpack(args))
    -- The prompt comes once the script ends or waits for something.
    for _ = 1, 1000 do
      if t:status() ~= "ready" and t:status() ~= "running" then break end
      orch.sleep(0)
    end
    -- A failure was reported by the runtime; the prompt still comes, to
    -- look around.
  end
  local failures = repl.loop{ banner = orch.version() .. "  (Ctrl-D exits)" }
  local interactive = orch.term.isatty(0)
  return orch.exit((not interactive and failures > 0) and 1 or 0)
end

return M
