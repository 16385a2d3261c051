-- scripts/bench.d/watchdog.lua (run by scripts/bench with the orch binary):
-- the watchdog's cost and its detection latency. Prints "name value unit".
--
--   watchdog_cpu_1000_orch     CPU time (user + system) of an `orch watchdog`
--                              process watching 1,000 processes that beat
--                              every second (5 s timeout), per second of
--                              wall time, over 10 s
--   watchdog_wakeups_1000_orch its context switches per second meanwhile
--   watchdog_latency_p50_orch  from a missed deadline (last beat + timeout)
--   watchdog_latency_p95_orch  to the SIGTERM, over 50 stalls (the
--                              watchdog's own "signal" event: ev.late)
--
--   orch run scripts/bench.d/watchdog.lua [--procs N] [--seconds S] [--stalls N]
local hb = orch.heartbeat
local watchdog = require "orch.watchdog"
local on_stop = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua").on_stop

local nprocs, seconds, nstalls = 1000, 10, 50
do
  local i = 1
  while arg[i] do
    local v = tonumber(arg[i + 1])
    if arg[i] == "--procs" and v then nprocs = v
    elseif arg[i] == "--seconds" and v then seconds = v
    elseif arg[i] == "--stalls" and v then nstalls = v
    else io.stderr:write("usage: watchdog.lua [--procs N] [--seconds S] [--stalls N]\n"); orch.exit(2) end
    i = i + 2
  end
end

local exe = orch.proc.info(orch.getpid()).cmdline[1]
local client = (exe:match("^(.*)/[^/]*$") or ".") .. "/progs/prog_hb_client"

local function private_table(slots)
  for n = 0, 63 do
    local key = 0x4f620000 + (orch.getpid() + n * 7919) % 0x10000
    local t = hb.open { key = key, create = true, exclusive = true, slots = slots }
    if t then return on_stop(t), key end
  end
  error("no free key for a heartbeat table")
end

local function stat(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local s = f:read("a")
  f:close()
  local fields = {}
  for w in s:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = w end
  -- fields[1] is field 3 of proc(5): utime is field 14, stime 15.
  return tonumber(fields[12]) + tonumber(fields[13])
end

local function switches(pid)
  local f = assert(io.open("/proc/" .. pid .. "/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("\nvoluntary_ctxt_switches:%s*(%d+)")) +
         tonumber(s:match("\nnonvoluntary_ctxt_switches:%s*(%d+)"))
end

local function kill_all(procs)
  for _, p in ipairs(procs) do if p:running() then p:kill("KILL") end end
end

-- ---------------------------------------------------------------- CPU

do
  local t, key = private_table(nprocs + 24)
  local procs = {}
  on_stop(function() kill_all(procs) end)
  local ok, err = pcall(function()
    for i = 1, nprocs do
      procs[i] = assert(orch.spawn { client, "-k", ("0x%x"):format(key), "-t", "5000", "-i", "1000",
                                     "-n", "beater" .. i, stdout = "null" })
      if i % 50 == 0 then orch.sleep(0) end
    end
    local deadline = orch.now() + 60
    while #t:slots() < nprocs do
      assert(orch.now() < deadline, "the beaters did not all register")
      orch.sleep(0.1)
    end
    -- Its log goes to its stderr (inherited): a --log file must be a regular
    -- file (orch.logfile.open refuses /dev/null, doc/security.md#log-files).
    local wd = assert(orch.spawn { exe, "watchdog", "--key", ("0x%x"):format(key) })
    procs[#procs + 1] = wd
    orch.sleep(3)                              -- it reads the table and settles
    local c0, s0, t0 = stat(wd.pid), switches(wd.pid), orch.now()
    orch.sleep(seconds)
    local c1, s1, t1 = stat(wd.pid), switches(wd.pid), orch.now()
    -- Clock ticks are 10 ms (USER_HZ 100).
    print(("watchdog_cpu_%d_orch %.2f ms/s"):format(nprocs, (c1 - c0) * 10 / (t1 - t0)))
    print(("watchdog_wakeups_%d_orch %.1f per_s"):format(nprocs, (s1 - s0) / (t1 - t0)))
    local alive = 0
    for i = 1, nprocs do if procs[i]:running() then alive = alive + 1 end end
    if alive ~= nprocs then io.stderr:write(("watchdog.lua: %d beaters were stopped\n"):format(nprocs - alive)) end
    wd:kill("TERM")
    wd:wait()
  end)
  kill_all(procs)
  for _, p in ipairs(procs) do p:wait() end
  t:remove()
  t:close()
  if not ok then error(err, 0) end
end

-- ---------------------------------------------------------------- latency

do
  local t, key = private_table(64)
  local lates, procs = {}, {}
  on_stop(function() kill_all(procs) end)
  local w = assert(watchdog.start {
    table = t, grace = 1, log = false,
    on_event = function(ev)
      if ev.event == "signal" and ev.signal == "TERM" then lates[#lates + 1] = ev.late end
    end,
  })
  local ok, err = pcall(function()
    -- Batches of 10 at staggered phases: each stalls after 3 beats 20 ms
    -- apart and times out 200 ms after its last beat.
    while #lates < nstalls do
      local batch = {}
      for i = 1, math.min(10, nstalls - #lates) do
        batch[i] = assert(orch.spawn { client, "-k", ("0x%x"):format(key), "-t", "200", "-i", "20",
                                       "-s", "3", stdout = "null" })
        procs[#procs + 1] = batch[i]
        orch.sleep(0.013 * i % 0.05)
      end
      for _, p in ipairs(batch) do p:wait() end
    end
  end)
  w:stop()
  kill_all(procs)
  for _, p in ipairs(procs) do p:wait() end
  t:remove()
  t:close()
  if not ok then error(err, 0) end
  table.sort(lates)
  local function pct(q) return lates[math.max(1, math.ceil(q * #lates))] * 1000 end
  print(("watchdog_latency_p50_orch %.2f ms"):format(pct(0.5)))
  print(("watchdog_latency_p95_orch %.2f ms"):format(pct(0.95)))
end
