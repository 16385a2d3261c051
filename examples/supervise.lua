-- examples/supervise.lua: a few programs under orch's supervisor, each with
-- its own policy (see doc/supervisor.md).
--
--   notify   examples/c/notify_demo.c: speaks sd_notify (STATUS=, READY=1,
--            WATCHDOG=1 pings that count as heartbeats)
--   daemon   examples/c/forking_daemon.c: a classic double-forking daemon,
--            followed through its pidfile
--   worker   two shell workers that need `notify` ready first, and crash now
--            and then; a restart policy written in Lua decides what to do
--   flaky    fails at once, always: backoff, then the start limit -> fatal
--
-- Run it:   scripts/orch run examples/supervise.lua [SECONDS]
-- It runs until Ctrl-C (or SECONDS, then stops everything the same way).
-- Ctrl-C once stops every service gracefully (workers before notify, which
-- they depend on); twice kills them at once. Logs go to a temp directory.
local orch = require "orch"
local sup = require "orch.supervisor"

local seconds = tonumber(arg and arg[1])
io.stdout:setvbuf("line")

-- The helper programs are built next to the orch binary, in progs/.
local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end
local function exists(p) local f = io.open(p) if f then f:close() end return f ~= nil end
local exe = orch.proc.info(orch.getpid()).cmdline[1]
if not exe:find("/", 1, true) then
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    if exists(dir .. "/" .. exe) then exe = dir .. "/" .. exe break end
  end
end
local progs = dirname(exe) .. "/progs"
if not exists(progs .. "/notify_demo") then
  io.stderr:write("examples/supervise.lua: ", progs, "/notify_demo is missing: build orch from its ",
    "source tree first (scripts/orch does)\n")
  orch.exit(1)
end

local _, out = orch.run { "mktemp", "-d", "/tmp/orch-supervise.XXXXXX" }
local logdir = out:gsub("%s+$", "")
print("logs and pidfile in " .. logdir)

sup.configure {
  log = function(msg) print(os.date("%H:%M:%S ") .. msg) end,
  runtime_dir = logdir,
}

sup.service {
  name = "notify",
  cmd = { progs .. "/notify_demo", "400" },
  ready = { notify = true },              -- READY=1 says it is up
  heartbeat = { timeout = 2 },            -- WATCHDOG=1 pings count as beats
  log = { dir = logdir, max_bytes = "64k", keep = 2, timestamps = true },
  on_ready = function(svc) print("notify is ready: " .. tostring(svc.status_text)) end,
}

sup.service {
  name = "daemon",
  cmd = { progs .. "/forking_daemon", logdir .. "/daemon.pid", logdir .. "/daemon.log", "500" },
  pidfile = logdir .. "/daemon.pid",      -- its launcher exits at once
  stop = { signal = "TERM", timeout = 5 },
}

sup.service {
  name = "worker",
  numprocs = 2,
  depends_on = { "notify" },
  cmd = { "sh", "-c", [[
    echo "worker $ORCH_INSTANCE starting"
    i=0
    while [ $i -lt 8 ]; do sleep 0.25; i=$((i+1)); done
    echo "worker $ORCH_INSTANCE crashing"
    exit 3
  ]] },
  -- Policy as code: restart after a crash, quickly at first, and give up
  -- (fatal) if three of the last four runs were shorter than a second.
  restart = function(svc, code, signal, history)
    local short = 0
    for i = math.max(1, #history - 3), #history do
      if history[i].runtime < 1 then short = short + 1 end
    end
    if short >= 3 then return "fatal" end
    return 0.2 * #history      -- seconds until the restart
  end,
  log = { tail = 50 },                    -- lines go to this script's log too
}

sup.service {
  name = "flaky",
  cmd = { "sh", "-c", "echo 'flaky: cannot reach its database'; exit 1" },
  backoff = { initial = 0.1, factor = 2, max = 1 },
  start_limit = { burst = 4, interval = 10 },
  on_fatal = function(svc, reason) print("flaky gave up: " .. reason) end,
}

sup.run()          -- SIGTERM/SIGINT stop everything; start every service

if seconds then
  orch.sleep(seconds)
  for _, st in ipairs(sup.status()) do
    print(string.format("status %-9s %-8s pid=%-7s restarts=%d", st.name, st.state, tostring(st.pid), st.restarts))
  end
  sup.shutdown(0)
end
