-- scripts/bench.d/phases.lua: orch's side of the stop/start benchmark of
-- issue 15 (scripts/bench.d/stop.sh), in the configuration a user gets:
-- every option at its default (output captured through pipes and written
-- to orch's stderr as `name | line`, log lines to stderr) except
-- `backoff = 0, start_limit = false`, so a killed service comes back at once.
--   orch run phases.lua N PROG [PHASES_FILE]
-- SIGUSR1 stops every service, SIGUSR2 starts them; SIGTERM stops them and
-- exits (sup.run's handler); `orch ctl stop all` / `start all` work too
-- ($ORCH_SOCKET names the socket).
-- With PHASES_FILE, every state change and every supervisor log line is
-- stamped with orch.now() (CLOCK_MONOTONIC, the clock svc_stamp and the probe
-- use) and kept in memory; the lines are written to PHASES_FILE (appended)
-- each time all N services are stopped or all N are running, so writing
-- costs nothing during the phases measured. Lines: "<seconds> <event> <name>".
local orch = require "orch"
local sup = require "orch.supervisor"
local Instance = require "orch.supervisor.instance"

local n, prog, phases = tonumber(arg[1]), arg[2], arg[3]
assert(n and prog, "usage: orch run phases.lua N PROG [PHASES_FILE]")

if phases then
  local buf, count = {}, { stopped = n, running = 0 }
  local now = orch.now
  local function flush()
    local f = assert(io.open(phases, "a"))
    f:write(table.concat(buf, "\n"), "\n")
    f:close()
    buf = {}
  end
  local set_state = Instance.set_state
  function Instance.set_state(self, s)
    local old = self.state
    set_state(self, s)
    if old == s then return end
    buf[#buf + 1] = string.format("%.6f %s %s", now(), s, self.name)
    if count[old] then count[old] = count[old] - 1 end
    if count[s] then
      count[s] = count[s] + 1
      if count[s] == n then flush() end
    end
  end
  local stderr = io.stderr
  sup.configure { log = function(msg)
    buf[#buf + 1] = string.format("%.6f log %s", now(), (msg:gsub("%s+", "_")))
    stderr:write("orch.supervisor: ", msg, "\n")
  end }
end
-- ORCH_BENCH_CGROUP=off: no cgroup per run (process groups only), to tell
-- the cgroups' share of a figure from the rest.
if os.getenv("ORCH_BENCH_CGROUP") == "off" then sup.configure { cgroup = false } end
-- ORCH_BENCH_PERSIST=off: no state record, journal or fd holder (persist =
-- false), to tell their share of a figure (restart_tail.sh's "nopersist").
if os.getenv("ORCH_BENCH_PERSIST") == "off" then sup.configure { persist = false } end
-- ORCH_BENCH_VARIANT=FILE: when FILE holds "K V", service svcK gets
-- VARIANT=V in its environment (scale.sh writes it, then measures `orch ctl
-- reload`, which must restart svcK alone).
-- ORCH_BENCH_LOG=off: no capture of the services' output (log = false:
-- they write to orch's own stderr), to tell the log pipes' share.
local log = nil
if os.getenv("ORCH_BENCH_LOG") == "off" then log = false end
local vk, vv
local vf = os.getenv("ORCH_BENCH_VARIANT")
local f = vf and io.open(vf)
if f then
  vk, vv = f:read("a"):match("^(%d+)%s+(%S+)")
  f:close()
  vk = tonumber(vk)
end
for i = 0, n - 1 do
  sup.service { name = "svc" .. i, cmd = { prog }, env = { SVC_INDEX = i, VARIANT = i == vk and vv or nil },
                backoff = 0, start_limit = false, log = log }
end
-- `orch ctl reload` runs this script again to collect the services: the
-- handlers and the timer are made once.
if require("orch.ctl").reloading then return end
orch.signal.on("USR1", function() sup.stop("all") end)
orch.signal.on("USR2", function() sup.start("all") end)
sup.run()
orch.timer.after(1e9, function() end)
