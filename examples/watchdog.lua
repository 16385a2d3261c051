-- examples/watchdog.lua: heartbeats, the watchdog and the scheduler together.
--
--   scripts/orch run examples/watchdog.lua [--duration SECONDS]
--
-- Three workers run under the interval scheduler (started again 1 s after
-- each exit, like the classic `procctl 1 PROG`), each beating every second
-- with a 3 s timeout in a heartbeat table private to this demo:
--   c-worker    examples/c/hb_worker.c, the C client library (build/progs/)
--   lua-worker  examples/watchdog/worker.lua, run by orch
--   sh-worker   examples/watchdog/worker.sh, a shell script using `orch beat`
-- c-worker hangs after 5 beats, every run. The watchdog sees its deadline
-- pass, sends SIGTERM to it, and the scheduler starts it again. Ctrl-C (or
-- SIGTERM, or the end of --duration) stops everything: the watchdog, the
-- workers (their whole process groups) and the table. See doc/demo.md.
local sched = require "orch.scheduler"
local watchdog = require "orch.watchdog"
local hb = orch.heartbeat

local usage = "usage: orch run examples/watchdog.lua [--duration SECONDS]"
local duration
do
  local i = 1
  while arg[i] do
    local a = arg[i]
    if a == "--duration" then
      duration = tonumber(arg[i + 1])
      if not duration or not (duration > 0 and duration < math.huge) then
        io.stderr:write(usage, "\n")
        orch.exit(2)
      end
      i = i + 1
    else
      io.stderr:write(usage, "\n")
      orch.exit(2)
    end
    i = i + 1
  end
end

io.stdout:setvbuf("line")
local function say(source, fmt, ...)
  local now = orch.time()
  io.stdout:write(os.date("%H:%M:%S", math.floor(now)), (".%03d %-10s "):format(math.floor(now % 1 * 1000), source),
    fmt:format(...), "\n")
end

-- Where things are: the orch binary running this script (for the Lua and
-- shell workers), the C worker next to it in progs/, and this directory.
local function dirname(p) return p:match("^(.*)/[^/]*$") or "." end
local function exists(p) local f = io.open(p) if f then f:close() end return f ~= nil end
local exe = orch.proc.info(orch.getpid()).cmdline[1]
if not exe:find("/", 1, true) then
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    if exists(dir .. "/" .. exe) then exe = dir .. "/" .. exe; break end
  end
end
local here = dirname(arg[0])
local c_worker = dirname(exe) .. "/progs/hb_worker"
if not exists(c_worker) then
  io.stderr:write("examples/watchdog.lua: ", c_worker, " is missing: build orch from its source tree ",
    "first (scripts/orch does), which compiles examples/c/hb_worker.c into build/progs/\n")
  orch.exit(1)
end

-- The demo's own heartbeat table: a fresh key, so it never meets the
-- default table or another demo.
local t, key
for n = 0, 63 do
  key = 0x4f570000 + (orch.getpid() + n * 7919) % 0x10000
  t = hb.open { key = key, create = true, exclusive = true, slots = 16 }
  if t then break end
end
assert(t, "could not create a heartbeat table")

say("demo", "heartbeat table 0x%x (this demo's own); workers beat every 1 s, timeout 3 s", key)
say("demo", "c-worker hangs after 5 beats: the watchdog stops it, the scheduler restarts it%s",
  duration and (" (running for %g s)"):format(duration) or " (Ctrl-C to stop)")

local w = assert(watchdog.start {
  table = t, grace = 2,
  log = function(msg) say("watchdog", "%s", msg) end,
})

local env = { ORCH_HEARTBEAT_KEY = ("0x%x"):format(key), ORCH = exe }
local workers = {
  { "c-worker", { c_worker, "-n", "c-worker", "-t", "3000", "-i", "1000", "-s", "5" } },
  { "lua-worker", { exe, "run", here .. "/watchdog/worker.lua", "lua-worker", "3", "1" } },
  { "sh-worker", { "sh", here .. "/watchdog/worker.sh", "sh-worker", "3", "1" } },
}
local jobs, stopping = {}, false
for _, wk in ipairs(workers) do
  local name, cmd = wk[1], wk[2]
  cmd.env, cmd.pgroup = env, true            -- its own group: stopped as a whole
  jobs[#jobs + 1] = sched.every(1, cmd, {
    name = name,
    log = function(msg) say("scheduler", "%s", msg) end,
    on_start = function(p, n) say("scheduler", "%s: run %d started, pid %d", name, n, p.pid) end,
    on_exit = function(code, sig, n)
      say("scheduler", "%s: run %d %s%s", name, n,
        sig and ("killed by SIG" .. sig) or ("exited with code " .. tostring(code)),
        stopping and "" or "; next run in 1 s")
    end,
  })
end

-- Wait for Ctrl-C, SIGTERM or the end of --duration, then stop everything.
local stop = orch.cond()
local handlers = {
  orch.signal.on("INT", function() stop:broadcast("SIGINT") end),
  orch.signal.on("TERM", function() stop:broadcast("SIGTERM") end),
}
local why = stop:wait(duration) or ("%g s elapsed"):format(duration)
stopping = true
say("demo", "%s: stopping the watchdog, the workers and the table", why)
w:stop()
for _, j in ipairs(jobs) do j:stop() end
local function signal_all(sig)
  for _, j in ipairs(jobs) do
    for _, pid in ipairs(j:status().pids) do orch.killpg(pid, sig) end
  end
end
signal_all("TERM")
for _, j in ipairs(jobs) do
  if not j:wait(3) then signal_all("KILL"); j:wait() end
end
for _, hnd in ipairs(handlers) do hnd:stop() end
t:remove()
t:close()
say("demo", "done: every worker stopped, table 0x%x removed", key)
