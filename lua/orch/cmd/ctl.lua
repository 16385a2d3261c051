--- `orch ctl`: the command-line client of a running orchestrator's control
-- socket (see doc/ctl.md). What a command line runs is orch.ctl.command
-- (the requests, the replies, the exit status); this module adds what the
-- parser and the printing of tables need: the help text, the argparse
-- declarations, the status table, the jobs' table, events and is-active's
-- words (a ping loads none of it).
local command = require "orch.ctl.command"

local M = {}

M.summary = "control a running orchestrator (status, start, stop, ...)"

M.usage = [=[
usage: orch ctl [--socket PATH] [--json] [--timeout SECONDS] [--trust-uid UID] COMMAND [ARGS...]

Commands:
  status [NAME...]        services as a table (name, state, pid, uptime,
                          restarts, rss, cpu, why not running, the service's
                          own STATUS=); exit 0 when every one named (or
                          every one) is running, 3 when some are not,
                          4 when a NAME is unknown
  is-active NAME...       active, activating, deactivating, inactive, failed
                          or unknown, one line a name (-q, --quiet: none);
                          frozen and SIGSTOPped services are active; exit
                          0 when every one is active, else as status
  health                  exit 0 when every critical service is ready (every
                          service when none is critical), else 3 and why
  start NAME|all ...      start services (and what they depend on); a spawn
                          that fails at once is an error
    --wait[=SECONDS]      wait until each is ready (default 60 s); exit 1
                          with the reason when one fails or is not ready
  stop NAME|all ...       stop services and what depends on them (named);
                          waits until their processes have exited and says
                          every second what it still waits for
    --no-block            return once the stop is under way
    --wait=SECONDS        wait at most SECONDS; exit 1 naming what is
                          still stopping (the stop goes on)
  restart NAME|all ...    restart services: waits until the old processes
                          have exited (saying so every second) and the new
                          ones started; lists what restarted
    --no-block            return once the restart is under way
    --wait[=SECONDS]      as start --wait, the stop included: exit 1
                          naming what is still stopping (the restart
                          goes on) or not ready
  signal NAME SIG         send a signal (TERM, HUP, 9, ...) to a service
  freeze NAME|all ...     freeze every process of a service (its cgroup)
  thaw NAME|all ...       thaw a frozen service
  trigger JOB...          run a scheduler job now (orch.scheduler's jobs are
                          listed by status: type, state, next run, last
                          result, runs)
  pause JOB...            no more runs of a job until resume
  resume JOB...           runs again on its schedule
  events [-n N] [-f]      the last N (20) state changes of the services
                          (spawned, pid; ready; exited, code or signal;
                          backoff, delay; fatal, reason; stopped; frozen;
                          reloaded), one line each; -f, --follow prints new
                          ones as they happen until Ctrl-C (with --json:
                          one JSON object each)
  tail NAME [-n N] [-f]   the last N (10) lines of a service's output
                          (-n, --lines N); -f, --follow keeps printing
                          new lines until Ctrl-C
  eval CODE               run Lua code inside the orchestrator, print the result
  reload                  re-read the policy script: unchanged services keep
                          their processes, changed ones restart, removed ones stop
  reexec                  re-execute orch (a new binary), keeping the children
  shutdown                stop every service and exit
  ping                    check that the orchestrator answers

Options:
  --socket PATH   the control socket (default: $ORCH_SOCKET, else the only
                  socket in $XDG_RUNTIME_DIR/orch/, or /run/orch/ for root)
  --json          print the raw JSON replies
  --timeout S     give up waiting for a reply after S seconds (default: none)
  --trust-uid UID talk to an orchestrator running as UID (by default one
                  that runs as neither you nor root is refused: it would
                  get your requests and you would believe its replies)

Options go before or after the command and its arguments; -- ends them.

Exit status: 0 ok, 1 the command failed, 2 usage error, 3 cannot connect
(status, is-active, health: 3 also when a service is not running, not
active or not ready; 4 an unknown service).
]=]

--- The socket to talk to: explicit, $ORCH_SOCKET, or the only socket in
-- the default directory. Returns path, or nil, message, exit code.
M.find_socket = command.find_socket

-- The subcommands with their arguments (orch.cli reads a plain line with it).
local SUBCOMMANDS = command.subcommands
M.subcommands = SUBCOMMANDS

function M.args(c, help_flag)
  c:command_target("ctl_command")
  c:option("--socket"):argname("PATH")
  c:flag("--json")
  c:option("--timeout"):argname("SECONDS")
  c:option("--trust-uid"):argname("UID")
  for _, d in ipairs(SUBCOMMANDS) do
    local sc = c:command(d[1]):add_help(false)
    sc._orch_name, sc._orch_module = "ctl", M
    help_flag(sc)
    if type(d[2]) == "table" then
      for _, a in ipairs(d[2]) do sc:argument(a:upper()):target(a) end
    elseif d[2] then
      sc:argument(d[2] == "names" and "NAME" or d[2]:upper()):target(d[2]):args(d[3])
    end
    if d[1] == "start" or d[1] == "restart" or d[1] == "stop" then
      -- --wait or --wait=SECONDS (orch.cli takes the value out first).
      sc:flag("--wait")
    end
    if d[1] == "stop" or d[1] == "restart" then sc:flag("--no-block") end
    if d[1] == "is-active" then sc:flag("-q --quiet") end
    if d[1] == "tail" or d[1] == "events" then
      sc:option("-n --lines"):argname("N")
      sc:flag("-f --follow")
    end
  end
end

-- The table formatter is loaded by the commands that print tables (a
-- ping needs none of it).
local function format_module() return require "orch.ctl.format" end

--- The status table, as lines (supervisorctl-like columns), from the
-- services' status records (the "services" of a status reply).
function M.format_status(services)
  local cgroup_off
  for _, sv in ipairs(services) do
    if type(sv.cgroup_off) == "string" then
      cgroup_off = sv.cgroup_off
      break
    end
  end
  -- Where the limits of services with cgroup limits are held (a hybrid
  -- host has controllers in cgroup v1, a mixed one some in each): once.
  local where = { v2 = {}, v1 = {} }
  for _, sv in ipairs(services) do
    if type(sv.cgroup_controllers) == "table" then
      for ctl, v in pairs(sv.cgroup_controllers) do
        if where[v] and type(ctl) == "string" then where[v][ctl] = true end
      end
    end
  end
  return format_module().status_lines(#services, function(i)
    local s = services[i]
    return s.name, s.state, s.exit_code, s.exit_signal, s.pid, s.uptime, s.restarts, s.rss, s.cpu,
      s.oom_kills, s.reason, s.status_text
  end, cgroup_off, where)
end

--- Runs a parsed command line (orch.cli's result): orch.ctl.command.main.
M.main = command.main

--- The scheduler's jobs as a table: JOB, TYPE, STATE, NEXT RUN, LAST
-- RESULT, RUNS.
function M.format_jobs(jobs)
  local rows = { { "JOB", "TYPE", "STATE", "NEXT RUN", "LAST RESULT", "RUNS" } }
  local log = require "orch.log"
  for _, j in ipairs(jobs) do
    local state = j.stopped and "stopped" or j.paused and "paused" or (j.running or 0) > 0 and "running" or "waiting"
    local last = "-"
    if j.last_signal ~= nil then last = "signal " .. tostring(j.last_signal)
    elseif j.last_code ~= nil then last = "exit " .. tostring(math.tointeger(j.last_code) or j.last_code) end
    if type(j.last_duration) == "number" and last ~= "-" then last = last .. string.format(" (%.2f s)", j.last_duration) end
    local nxt = "-"
    if type(j.next_run) == "number" and not j.stopped then nxt = log.timestamp(j.next_run):sub(1, 19) .. "Z" end
    rows[#rows + 1] = { tostring(j.name), tostring(j.type or j.mode or "?"), state, nxt, last,
                        tostring(math.tointeger(j.runs) or j.runs or 0) }
  end
  local cols = {}
  for c = 1, #rows[1] do
    cols[c] = {}
    for i, r in ipairs(rows) do cols[c][i] = r[c] end
  end
  return format_module().align(cols)
end

--- One event of `orch ctl events` as a line:
-- "2026-12-05T22:15:17.123Z web exited, code 3 (reason)".
function M.format_event(ev)
  local function num(v) return tostring(math.tointeger(v) or v) end
  local t = {}
  if type(ev.time) == "number" then t[#t + 1] = require("orch.log").timestamp(ev.time) end
  if ev.name then t[#t + 1] = tostring(ev.name) end
  local kind = tostring(ev.event)
  local detail = ""
  if (kind == "spawned" or kind == "ready" or kind == "frozen" or kind == "thawed" or kind == "stopping") and ev.pid then
    detail = ", pid " .. num(ev.pid)
  elseif kind == "exited" then
    if ev.signal ~= nil then detail = ", signal " .. num(ev.signal)
    elseif ev.code ~= nil then detail = ", code " .. num(ev.code) end
    if ev.pid then detail = detail .. ", pid " .. num(ev.pid) end
    if ev.reason then detail = detail .. " (" .. tostring(ev.reason) .. ")" end
  elseif kind == "backoff" and type(ev.delay) == "number" then
    detail = string.format(", restart in %.2f s", ev.delay)
  elseif (kind == "fatal" or kind == "spawn_failed") and ev.reason then
    detail = ": " .. tostring(ev.reason)
  elseif kind == "reloaded" then
    for _, k in ipairs { "kept", "restarted", "stopped", "added" } do
      if type(ev[k]) == "table" and #ev[k] > 0 then detail = detail .. "; " .. k .. ": " .. table.concat(ev[k], " ") end
    end
  end
  t[#t + 1] = kind .. detail
  return (table.concat(t, " "):gsub("%c", " "))
end

--- systemctl is-active's word for a service's status record
-- (orch.ctl.command.active_word).
M.active_word = command.active_word

return M
