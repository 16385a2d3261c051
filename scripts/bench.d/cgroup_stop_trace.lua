-- cgroup_stop_trace.lua W N: the analysis of cgroup_stop_trace.sh (run by
-- lua5.4): W holds sw.out/sw.txt (scheduler trace) and cc.out/cc.txt
-- (cpu-clock samples, 50 µs each), each .out with the program's
-- `cgstop_window WAY KIND ROUND T0 T1 STOPPER` lines.
local W, N = arg[1], tonumber(arg[2])
local SAMPLE_US = 50

local function windows_of(file)
  local ws = {}
  for l in io.lines(file) do
    local way, kind, r, t0, t1, pid = l:match("^cgstop_window (%S+) (%S+) (%d+) (%d+) (%d+) (%d+)$")
    if way then
      ws[#ws + 1] = { way = way, kind = kind, round = tonumber(r), t0 = tonumber(t0) / 1e9,
                      t1 = tonumber(t1) / 1e9, stopper = tonumber(pid) }
    end
  end
  table.sort(ws, function(a, b) return a.t0 < b.t0 end)
  return ws
end

local function window_at(ws, t)
  for _, w in ipairs(ws) do
    if t >= w.t0 and t <= w.t1 then return w end
  end
end

local KTHREAD = { "^kworker", "^ksoftirqd", "^rcu", "^migration", "^kthreadd", "^cpuhp", "^kcompactd",
                  "^watchdog", "^irq/", "^khugepaged", "^kswapd", "^jbd2", "^kauditd", "^oom_reaper" }
local function is_kthread(comm)
  for _, p in ipairs(KTHREAD) do if comm:find(p) then return true end end
  return false
end

local stats = dofile((arg[0]:match("^(.*)/") or ".") .. "/stats.lua")
local function median(t) return stats.median(t, 0) end

local function spread(t)
  local lo, hi = math.huge, -math.huge
  for _, v in ipairs(t) do lo, hi = math.min(lo, v), math.max(hi, v) end
  return lo, hi
end

-- Reads a perf script text: calls fn(ev) per event, ev.stack the kernel
-- frames (leaf first) when it had a callchain.
local function events(file, fn)
  local cur
  for l in io.lines(file) do
    local comm, pid, cpu, t, rest = l:match("^%s*(.-)%s+(%d+)%s+%[(%d+)%]%s+([%d.]+):%s*(.*)$")
    if t then
      if cur then fn(cur) end
      local name, trace = rest:match("^(%S+):%s*(.*)$")
      cur = { comm = comm, pid = tonumber(pid), cpu = tonumber(cpu), t = tonumber(t), name = name or "",
              trace = trace or rest, stack = {} }
    elseif cur then
      local sym = l:match("^%s+%x+%s+(%S+)")
      if sym then cur.stack[#cur.stack + 1] = sym end
    end
  end
  if cur then fn(cur) end
end

-- ------------------------------------------------------------ pass 1
local ws = windows_of(W .. "/sw.out")
for _, w in ipairs(ws) do
  w.run = {}        -- pid -> µs on a CPU in the window
  w.comm = {}
  w.exits = {}      -- pid -> time of its sched_process_exit (services: sleep)
  w.busy = {}       -- cpu -> µs not idle
  w.lockwait = 0    -- µs
  w.lockby = {}     -- function -> µs
end
local cur, last = {}, {}   -- cpu -> { pid, comm }, time of the last switch
local function attribute(cpu, a, b, pid, comm)
  for _, w in ipairs(ws) do
    local lo, hi = math.max(a, w.t0), math.min(b, w.t1)
    if hi > lo then
      local us = (hi - lo) * 1e6
      w.run[pid] = (w.run[pid] or 0) + us
      w.comm[pid] = comm
      if pid ~= 0 then w.busy[cpu] = (w.busy[cpu] or 0) + us end
    end
  end
end
local LOCKISH = { "spin_lock", "_raw_", "queued_", "lock_slowpath", "rwsem", "mutex", "down_write",
                  "down_read", "read_lock", "write_lock", "rwlock", "percpu_down" }
local function waiter(stack)
  for _, f in ipairs(stack) do
    local lockish = false
    for _, p in ipairs(LOCKISH) do if f:find(p, 1, true) then lockish = true break end end
    if not lockish then return f end
  end
  return "?"
end
local began = {}   -- cpu -> { t, by }
events(W .. "/sw.txt", function(e)
  if e.name == "sched:sched_switch" then
    local ppid = tonumber(e.trace:match("prev_pid=(%d+)"))
    local ncomm, npid = e.trace:match("next_comm=(.-) next_pid=(%d+)")
    local pcomm = e.trace:match("prev_comm=(.-) prev_pid=")
    if last[e.cpu] then attribute(e.cpu, last[e.cpu], e.t, ppid, pcomm) end
    cur[e.cpu] = { tonumber(npid), ncomm }
    last[e.cpu] = e.t
  elseif e.name == "sched:sched_process_exit" then
    local w = window_at(ws, e.t)
    local comm = e.trace:match("comm=(%S+)")
    if w and comm == "sleep" then w.exits[e.pid] = e.t end
  elseif e.name == "lock:contention_begin" then
    began[e.cpu] = { e.t, waiter(e.stack) }
  elseif e.name == "lock:contention_end" then
    local b = began[e.cpu]
    began[e.cpu] = nil
    local w = b and window_at(ws, b[1])
    if w then
      local us = (e.t - b[1]) * 1e6
      w.lockwait = w.lockwait + us
      w.lockby[b[2]] = (w.lockby[b[2]] or 0) + us
    end
  end
end)

local function category(w, pid)
  if pid == 0 then return "idle" end
  if pid == w.stopper then return "stopper" end
  if w.exits[pid] then return "services" end
  if pid == 1 then return "pid 1" end
  if is_kthread(w.comm[pid] or "") then return "kthreads" end
  return "other"
end

local CATS = { "stopper", "services", "pid 1", "kthreads", "other", "idle" }
local groups, order = {}, {}
for _, w in ipairs(ws) do
  local key = w.way .. " " .. w.kind
  if not groups[key] then groups[key] = {}; order[#order + 1] = key end
  local wall = (w.t1 - w.t0) * 1e6
  local per = { wall = wall / 1e3 }
  for _, c in ipairs(CATS) do per[c] = 0 end
  for pid, us in pairs(w.run) do
    local c = category(w, pid)
    per[c] = per[c] + us / 1e3
  end
  -- Idle also where no switch was seen: 2 x wall minus what ran.
  local ran = 0
  for _, c in ipairs(CATS) do if c ~= "idle" then ran = ran + per[c] end end
  per.idle = 2 * wall / 1e3 - ran
  local nexit, each, lastexit = 0, {}, 0
  for pid, t in pairs(w.exits) do
    nexit = nexit + 1
    each[#each + 1] = w.run[pid] or 0
    lastexit = math.max(lastexit, (t - w.t0) * 1e3)
  end
  per.nexit = nexit
  per.exit_us = median(each)
  per.lastexit = lastexit
  per.busy = ran / (2 * wall / 1e3)
  per.own = (per.stopper + per.services + per["pid 1"] + per.kthreads) / (2 * wall / 1e3)
  per.lockwait = w.lockwait / 1e3
  per.lockby = w.lockby
  table.insert(groups[key], per)
end

print(("# scheduler trace, %d services, medians over the rounds (ms unless said)"):format(N))
print("# busy: both CPUs' share not idle; own: their share the stop's work had (the stopper, the services,")
print("# pid 1, kernel threads); other: anything else on the machine")
print(("%-14s %6s %6s %5s %8s %8s %6s %8s %6s %6s %7s %6s %8s %7s"):format("way kind", "wall", "busy", "own",
  "stopper", "services", "pid1", "kthreads", "other", "idle", "exits", "us/ex", "lastexit", "lockwt"))
for _, key in ipairs(order) do
  local g = groups[key]
  local function m(f) local t = {} for i, p in ipairs(g) do t[i] = p[f] end return median(t) end
  print(("%-14s %6.1f %5.0f%% %4.0f%% %8.1f %8.1f %6.1f %8.1f %6.1f %6.1f %7.0f %6.0f %8.1f %7.2f"):format(key,
    m("wall"), 100 * m("busy"), 100 * m("own"), m("stopper"), m("services"), m("pid 1"), m("kthreads"), m("other"),
    m("idle"), m("nexit"), m("exit_us"), m("lastexit"), m("lockwait")))
end
print("# time waiting on contended kernel locks, by the function that waited (µs a stop, mean)")
for _, key in ipairs(order) do
  local g, by = groups[key], {}
  for _, p in ipairs(g) do
    for f, us in pairs(p.lockby) do by[f] = (by[f] or 0) + us / #g end
  end
  local fs = {}
  for f, us in pairs(by) do fs[#fs + 1] = { f, us } end
  table.sort(fs, function(a, b) return a[2] > b[2] end)
  local out = {}
  for i = 1, math.min(6, #fs) do out[i] = ("%s %.0f"):format(fs[i][1], fs[i][2]) end
  print(("%-14s %s"):format(key, table.concat(out, ", ")))
end

-- ------------------------------------------------------------ pass 2
-- A service process's sample goes to the first of these met from the leaf
-- up (its exit's parts); anything else to its leaf's caller chain's top.
local PARTS = { "exit_mmap", "exit_files", "exit_fs", "exit_notify", "cgroup_exit", "exit_task_namespaces",
                "perf_event_exit_task", "acct_collect", "exit_signals", "taskstats_exit", "exit_sem",
                "release_task", "do_exit", "get_signal", "arch_do_signal_or_restart", "do_nanosleep",
                "finish_task_switch", "__schedule", "schedule_tail", "exit_to_user_mode_loop" }
local ISPART = {}
for _, p in ipairs(PARTS) do ISPART[p] = true end
local function part(stack)
  for _, f in ipairs(stack) do
    if ISPART[f] then return f end
  end
  return stack[#stack] or "?"
end
local function leafpart(stack)   -- the leaf's own function, for the stopper and pid 1
  for _, f in ipairs(stack) do
    if f:find("^__x64_sys_") or f:find("^__do_sys_") or f:find("^do_") then return f end
  end
  return stack[1] or "?"
end
local ws2 = windows_of(W .. "/cc.out")
local prof, porder, nwin = {}, {}, {}
local held = {}   -- window -> pid -> { part -> samples } until its exit says it was a service
events(W .. "/cc.txt", function(e)
  local w = window_at(ws2, e.t)
  if not w then return end
  local key = w.way .. " " .. w.kind
  if not prof[key] then prof[key] = { services = {}, stopper = {}, ["pid 1"] = {} }; porder[#porder + 1] = key end
  if e.name == "sched:sched_process_exit" then
    w.exits = w.exits or {}
    if e.trace:match("comm=(%S+)") == "sleep" then w.exits[e.pid] = true end
    return
  end
  if e.comm == "sleep" then
    held[w] = held[w] or {}
    local h = held[w][e.pid] or {}
    held[w][e.pid] = h
    local p = part(e.stack)
    h[p] = (h[p] or 0) + 1
    return
  end
  local cat = (e.pid == w.stopper and "stopper") or (e.pid == 1 and "pid 1") or nil
  if not cat then return end
  local p = leafpart(e.stack)
  prof[key][cat][p] = (prof[key][cat][p] or 0) + 1
end)
for w, pids in pairs(held) do
  local svc = prof[w.way .. " " .. w.kind].services
  for pid, parts in pairs(pids) do
    if w.exits and w.exits[pid] then
      for p, n in pairs(parts) do svc[p] = (svc[p] or 0) + n end
    end
  end
end
for _, w in ipairs(ws2) do
  local key = w.way .. " " .. w.kind
  nwin[key] = (nwin[key] or 0) + 1
end
print(("# cpu-clock samples (%d µs) in the stops: where the services' exits go (µs a process, mean),"):format(SAMPLE_US))
print("# the stopper's and pid 1's (ms a stop, mean)")
for _, key in ipairs(porder) do
  local nproc = N * (key:find("escapee") and 2 or 1)
  for _, cat in ipairs { "services", "stopper", "pid 1" } do
    local t, total = {}, 0
    for f, n in pairs(prof[key][cat]) do t[#t + 1] = { f, n }; total = total + n end
    table.sort(t, function(a, b) return a[2] > b[2] end)
    local out = {}
    for i = 1, math.min(8, #t) do
      local v = t[i][2] * SAMPLE_US / nwin[key]
      out[i] = cat == "services" and ("%s %.1f"):format(t[i][1], v / nproc) or ("%s %.2f"):format(t[i][1], v / 1e3)
    end
    local tot = total * SAMPLE_US / nwin[key]
    print(("%-14s %-8s %s: %s"):format(key, cat,
      cat == "services" and ("%.1f µs a process"):format(tot / nproc) or ("%.2f ms"):format(tot / 1e3),
      table.concat(out, ", ")))
  end
end
