-- scripts/bench.d/supervise.lua: orch's side of the supervisor benchmark
-- (scripts/bench.d/supervisors.sh).
--   orch run supervise.lua N PROG MODE [LOGDIR]
-- Supervises N copies of PROG (SVC_INDEX=i). MODE:
--   fast     restart at once (backoff = 0), no start limit, output inherited
--   default  every option at its default (backoff from 0.1 s, output to orch's log)
--   logged   restart at once, output captured into LOGDIR/<name>.log files
-- SIGUSR1 stops every service, SIGUSR2 starts them again; SIGTERM/SIGINT
-- stop them and exit (sup.run).
local orch = require "orch"
local sup = require "orch.supervisor"

local n, prog, mode, logdir = tonumber(arg[1]), arg[2], arg[3] or "fast", arg[4]
assert(n and prog, "usage: orch run supervise.lua N PROG [fast|default|logged] [LOGDIR]")

-- ORCH_BENCH_CGROUP=off: services without cgroups (process groups only),
-- to compare with the default (a cgroup per run where orch may make one).
sup.configure { log = false }
if os.getenv("ORCH_BENCH_CGROUP") == "off" then sup.configure { cgroup = false } end
for i = 0, n - 1 do
  local def = { name = "svc" .. i, cmd = { prog }, env = { SVC_INDEX = i } }
  if mode == "fast" then
    def.backoff, def.start_limit, def.log = 0, false, false
  elseif mode == "logged" then
    def.backoff, def.start_limit, def.log = 0, false, { dir = logdir }
  end
  sup.service(def)
end
orch.signal.on("USR1", function() sup.stop("all") end)
orch.signal.on("USR2", function() sup.start("all") end)
sup.run()
-- Stopped services hold nothing: this timer (never due) keeps orch running
-- between a USR1 and a USR2, without a single wake-up.
orch.timer.after(1e9, function() end)
