-- cgroup_stop_sched.lua PIDS WINDOWS SCHED (run by lua5.4): the analysis of
-- cgroup_stop_sched.sh. PIDS: cgroup_stop_stamps.lua's STAMPS_PIDS file
-- ("m PID", "e PID", then "round KIND T0" per stop); WINDOWS: its stderr
-- ("window KIND T0 T1 TR PID", CLOCK_MONOTONIC s); SCHED: `perf script -F
-- comm,tid,cpu,time,event,trace` of sched_switch, sched_wakeup and
-- sched_process_exit on every CPU. Prints per kind (plain, escapee) the
-- medians over its stops, in ms:
--   wall        the stop (sup.stop("all") called to returned)
--   orch        orch's loop thread on a CPU in the window
--   mains, escs the services' main processes, their escapees
--   kth         kernel threads (kworkers: the cgroups' release among them)
--   other       anything else on the machine; idle: both CPUs' idle time
--   last_m, last_e  when the last main process, the last escapee ended
--   idle<exit   both CPUs' idle time before the last service process ended
--   tail        from the last exit to the end (orch alone: the runs' ends,
--               the rmdirs), and orch's CPU in it
--   wait_m, wait_e  how long a main process, an escapee waited for a CPU
--               from its first wake-up in the window (the stop's signal)
--               to its first run (µs, median over the processes)
--   orch_rq     orch's own waits for a CPU after its wake-ups in the
--               window (ms, summed)
--   ends        from the last exit to the last "stopped" (the escapee
--               stop: the parent's emptiness seen, the drained runs ended)
--   rm_wall     the removals (the last "stopped" to the end), and orch off
--   rm_R, rm_D  its CPU in them: preempted (R), waiting in the kernel (D)
local PIDS, WINDOWS, SCHED = arg[1], arg[2], arg[3]

local ws = {}
for l in io.lines(WINDOWS) do
  local kind, t0, t1, tr, pid = l:match("^window (%S+) (%S+) (%S+) (%S+) (%d+)$")
  if kind then
    ws[#ws + 1] = { kind = kind, t0 = tonumber(t0), t1 = tonumber(t1), tr = tonumber(tr), orch = tonumber(pid),
                    role = {}, run = {}, exits = {}, woke = {}, firstrun = {}, idle = 0, idle_by = {},
                    orch_iv = {}, by_comm = {}, off_rm = {} }
  end
end
table.sort(ws, function(a, b) return a.t0 < b.t0 end)
-- The services' pids per stop (the lines before its "round").
do
  local pending = {}
  for l in io.lines(PIDS) do
    local r, pid = l:match("^([me]) (%d+)$")
    if r then
      pending[#pending + 1] = { r, tonumber(pid) }
    else
      local t0 = tonumber(l:match("^round %S+ (%S+)$"))
      for _, w in ipairs(ws) do
        if t0 and math.abs(w.t0 - t0) < 1e-5 then
          for _, p in ipairs(pending) do w.role[p[2]] = p[1] == "m" and "mains" or "escs" end
        end
      end
      pending = {}
    end
  end
end
local function window_at(t)
  for _, w in ipairs(ws) do if t >= w.t0 and t <= w.t1 then return w end end
end
local KTHREAD = { "^kworker", "^ksoftirqd", "^rcu", "^migration", "^kthreadd", "^cpuhp", "^kcompactd",
                  "^watchdog", "^irq/", "^khugepaged", "^kswapd", "^jbd2", "^kauditd", "^oom_reaper" }
local function category(w, pid, comm)
  if pid == 0 then return "idle" end
  if pid == w.orch then return "orch" end
  local r = w.role[pid]
  if r then return r end
  for _, p in ipairs(KTHREAD) do if comm:find(p) then return "kth" end end
  return "other"
end

-- Each CPU's running task since its last switch; the time between two
-- switches goes to the task that ran, in every window it overlaps.
local cur, last = {}, {}
local orchwait = {}        -- window -> orch's woken-at time (pending)
local function attribute(cpu, a, b, pid, comm)
  for _, w in ipairs(ws) do
    local lo, hi = math.max(a, w.t0), math.min(b, w.t1)
    if hi > lo then
      local c = category(w, pid, comm or "")
      w.run[c] = (w.run[c] or 0) + (hi - lo)
      if c == "idle" then w.idle_by[#w.idle_by + 1] = { lo, hi } end
      if c == "orch" then w.orch_iv[#w.orch_iv + 1] = { lo, hi } end
      if c == "kth" or c == "other" then
        local k = c .. ":" .. (comm or ""):gsub("/%d+.*$", ""):gsub(":.*$", "")
        w.by_comm[k] = (w.by_comm[k] or 0) + (hi - lo)
      end
    end
  end
end
for l in io.lines(SCHED) do
  local comm, tid, cpu, t, name, trace = l:match("^%s*(.-)%s+(%d+)%s+%[(%d+)%]%s+([%d.]+):%s*(%S+):%s*(.*)$")
  if t then
    t, cpu = tonumber(t), tonumber(cpu)
    if name == "sched:sched_switch" then
      local pcomm, ppid = trace:match("prev_comm=(.-) prev_pid=(%d+)")
      local ncomm, npid = trace:match("next_comm=(.-) next_pid=(%d+)")
      ppid, npid = tonumber(ppid), tonumber(npid)
      if last[cpu] then attribute(cpu, last[cpu], t, ppid, pcomm) end
      last[cpu] = t
      local w = window_at(t)
      if w and ppid == w.orch then
        w.orch_off = { t, (trace:match("prev_state=(%S+)") or "?"):sub(1, 1) }
      end
      if w and npid == w.orch and w.orch_off then
        -- orch off its CPU from a switch-out to its next run, by the state it
        -- left in (R: preempted, D: waiting in the kernel, S: sleeping),
        -- counted in the removals (from the last "stopped" on)
        local from, st = math.max(w.orch_off[1], w.tr), w.orch_off[2]
        if t > from then w.off_rm[st] = (w.off_rm[st] or 0) + (t - from) end
        w.orch_off = nil
      end
      if w then
        if w.woke[npid] and not w.firstrun[npid] then w.firstrun[npid] = t end
        if npid == w.orch and orchwait[w] then
          w.orch_rq = (w.orch_rq or 0) + (t - orchwait[w])
          orchwait[w] = nil
        end
      end
    elseif name == "sched:sched_wakeup" then
      local pid = tonumber(trace:match("pid=(%d+)"))
      local w = window_at(t)
      if w and pid then
        if w.role[pid] and not w.woke[pid] then w.woke[pid] = t end
        if pid == w.orch then orchwait[w] = orchwait[w] or t end
      end
    elseif name == "sched:sched_process_exit" then
      local pid = tonumber(trace:match("pid=(%d+)"))
      local w = window_at(t)
      if w and pid and w.role[pid] then w.exits[pid] = t end
    end
  end
end

local stats = dofile((arg[0]:match("^(.*)/") or ".") .. "/stats.lua")
local median = stats.median

local rows = { plain = {}, escapee = {} }
for _, w in ipairs(ws) do
  local r = { wall = (w.t1 - w.t0) * 1e3 }
  for _, c in ipairs { "orch", "mains", "escs", "kth", "other", "idle" } do r[c] = (w.run[c] or 0) * 1e3 end
  local lm, le, waits = 0, 0, { mains = {}, escs = {} }
  for pid, t in pairs(w.exits) do
    if w.role[pid] == "mains" then lm = math.max(lm, t) else le = math.max(le, t) end
  end
  for pid, t in pairs(w.woke) do
    local f = w.firstrun[pid]
    if f then table.insert(waits[w.role[pid]], (f - t) * 1e6) end
  end
  local lastexit = math.max(lm, le)
  r.last_m = lm > 0 and (lm - w.t0) * 1e3 or 0 / 0
  r.last_e = le > 0 and (le - w.t0) * 1e3 or 0 / 0
  local idle_before = 0
  for _, iv in ipairs(w.idle_by) do
    local hi = math.min(iv[2], lastexit)
    if hi > iv[1] then idle_before = idle_before + (hi - iv[1]) end
  end
  r.idle_before = idle_before * 1e3
  r.tail = (w.t1 - lastexit) * 1e3
  local tail_orch = 0
  for _, iv in ipairs(w.orch_iv) do
    local lo = math.max(iv[1], lastexit)
    if iv[2] > lo then tail_orch = tail_orch + (iv[2] - lo) end
  end
  r.tail_orch = tail_orch * 1e3
  r.wait_m, r.wait_e = median(waits.mains), median(waits.escs)
  r.orch_rq = (w.orch_rq or 0) * 1e3
  r.rm_wall = (w.t1 - w.tr) * 1e3
  r.ends = (w.tr - lastexit) * 1e3
  r.rm_R, r.rm_D = (w.off_rm.R or 0) * 1e3, (w.off_rm.D or 0) * 1e3
  r.nexit = 0
  for _ in pairs(w.exits) do r.nexit = r.nexit + 1 end
  table.insert(rows[w.kind], r)
end
local cols = { "wall", "orch", "mains", "escs", "kth", "other", "idle", "last_m", "last_e", "idle_before", "tail",
               "tail_orch", "wait_m", "wait_e", "orch_rq", "ends", "rm_wall", "rm_R", "rm_D", "nexit" }
local heads = { "wall", "orch", "mains", "escs", "kth", "other", "idle", "last_m", "last_e", "idle<exit", "tail",
                "tail_cpu", "wait_m", "wait_e", "orch_rq", "ends", "rm_wall", "rm_R", "rm_D", "exits" }
local out = { ("%-8s %3s"):format("kind", "n") }
for i = 1, #heads do out[#out + 1] = ("%8s"):format(heads[i]) end
print(table.concat(out, " "))
for _, kind in ipairs { "plain", "escapee" } do
  local g = rows[kind]
  out = { ("%-8s %3d"):format(kind, #g) }
  for _, c in ipairs(cols) do
    local t = {}
    for i, r in ipairs(g) do t[i] = r[c] end
    out[#out + 1] = ("%8.2f"):format(median(t))
  end
  print(table.concat(out, " "))
end
-- Who the kernel threads and the other tasks were (ms a stop, mean).
for _, kind in ipairs { "plain", "escapee" } do
  local by, n = {}, 0
  for _, w in ipairs(ws) do
    if w.kind == kind then
      n = n + 1
      for k, v in pairs(w.by_comm) do by[k] = (by[k] or 0) + v end
    end
  end
  local t = {}
  for k, v in pairs(by) do t[#t + 1] = { k, v * 1e3 / n } end
  table.sort(t, function(a, b) return a[2] > b[2] end)
  local o = {}
  for i = 1, math.min(8, #t) do o[i] = ("%s %.2f"):format(t[i][1], t[i][2]) end
  print(("%-8s %s"):format(kind, table.concat(o, ", ")))
end
