--- `orch run FILE [ARGS...]`: its options and help. main.c loads FILE as the
-- main task; orch.cli (prepare_run, started) does the rest.
local M = {}

M.summary = "run a Lua script on the event loop (also: orch FILE)"

M.usage = [[
usage: orch run [OPTIONS] FILE [ARGS...]
       orch FILE [ARGS...]

Runs FILE as the main task on one event loop. `arg` is set as lua5.4 sets it
(arg[0] = FILE, arg[1..] = ARGS) and the arguments are also the chunk's `...`.
The global `orch` is the orch module. orch exits when no task is runnable and
no handle is active, or when the script calls orch.exit(code). The words after
FILE are the script's, options or not.

Options:
  --socket PATH   serve the control socket there (see `orch help ctl`); by
                  default it is served when the script uses the supervisor
  --no-socket     never serve the control socket
  --take-over     adopt what another script left running on the control
                  socket (after a kill -9 of its orch): services of the same
                  name are adopted, the others stopped. Without it, such
                  leftovers make orch refuse to start (exit 75)
  --lua-budget SECONDS
                  interrupt Lua code (a task, hook, callback, ctl eval) that
                  runs longer than SECONDS without yielding (default 5;
                  0: no budget)
  --http ADDR     serve read-only HTTP on ADDR (host:port, :port, [::1]:port
                  or a unix socket path): /healthz, /readyz, /metrics
                  (Prometheus), /status. Off by default; the address it
                  listens on is logged (port 0 picks one)
  --log-format text|json|journal
                  orch's own log lines (the supervisor's, the scheduler's):
                  text on stderr (the default; RFC 3339 UTC timestamps), one
                  JSON object per line on stderr (for container log
                  collectors), or the systemd journal's native protocol
                  (the default when JOURNAL_STREAM is set)
  -h, --help      this help

Exit status: 0, or 1 when the main task raised (message and traceback on
stderr), 2 when FILE cannot be opened or on a usage error, 75 when another
orchestrator holds the control socket or another script's services run on
it, or the code given to orch.exit.
]]

-- FILE and everything after it are the script's.
M.tail = 0

function M.args(c)
  c:option("--socket"):argname("PATH")
  c:flag("--no-socket")
  c:flag("--take-over")
  c:option("--lua-budget"):argname("SECONDS")
  c:option("--http"):argname("ADDR")
  c:option("--log-format"):argname("FORMAT"):choices({ "text", "json", "journal" })
  c:argument("FILE"):target("file"):args("?")
  c:argument("ARGS"):target("args"):args("*")
end

return M
