-- scripts/bench.d/stop_trace.lua W ROUNDS KINDS: the reader of
-- stop_trace.sh's traces (W/<kind>.<round>.{txt,sup,probe}); see there.
local W, rounds, kinds = arg[1], tonumber(arg[2]), {}
for k in arg[3]:gmatch("%S+") do kinds[#kinds + 1] = k end
local NR = { [0] = "read", [1] = "write", [3] = "close", [5] = "fstat", [7] = "poll", [9] = "mmap",
  [11] = "munmap", [12] = "brk", [13] = "rt_sigaction", [14] = "rt_sigprocmask", [15] = "rt_sigreturn",
  [17] = "pread64", [24] = "sched_yield", [39] = "getpid", [61] = "wait4", [62] = "kill", [84] = "rmdir",
  [157] = "prctl", [228] = "clock_gettime", [230] = "clock_nanosleep", [232] = "epoll_wait",
  [233] = "epoll_ctl", [247] = "waitid", [257] = "openat", [262] = "newfstatat", [263] = "unlinkat",
  [281] = "epoll_pwait", [302] = "prlimit64", [424] = "pidfd_send_signal", [434] = "pidfd_open",
  [435] = "clone3", [441] = "epoll_pwait2", [128] = "rt_sigtimedwait", [20] = "writev", [72] = "fcntl",
  [16] = "ioctl", [8] = "lseek", [10] = "mprotect", [28] = "madvise", [46] = "sendmsg", [47] = "recvmsg",
  [82] = "rename", [87] = "unlink", [318] = "getrandom", [190] = "fsetxattr" }

local function one(kind, r)
  local f = W .. "/" .. kind .. "." .. r
  local fh = io.open(f .. ".sup")
  if not fh then return nil end
  local sup = tonumber(fh:read("l")); fh:close()
  fh = io.open(f .. ".probe")
  local probe = fh and tonumber(fh:read("l") or "") or 0 / 0
  if fh then fh:close() end
  local ev = {}
  for l in io.lines(f .. ".txt") do
    local pid, tid, cpu, t, name, rest =
      l:match("^%s*%S+%s+(%d+)/(%d+)%s+%[(%d+)%]%s+([%d.]+):%s+(%S+):%s*(.*)$")
    if t then
      ev[#ev + 1] = { pid = tonumber(pid), tid = tonumber(tid), cpu = tonumber(cpu), t = tonumber(t),
                      name = name, a = rest }
    end
  end
  table.sort(ev, function(a, b) return a.t < b.t end)
  -- The services: the pids in their slots (u64 start, i32 pid, i32 count).
  local mine = {}
  fh = assert(io.open(f .. ".slots", "rb"))
  local slots = fh:read("a")
  fh:close()
  for i = 0, #slots // 16 - 1 do
    local pid = string.unpack("<i4", slots, i * 16 + 9)
    if pid > 0 then mine[pid] = true end
  end
  -- The probe's SIGTERM, the supervisor's stop signals, the services' exits.
  local t0, svc, kills, exits, prober = nil, {}, {}, {}, nil
  for _, e in ipairs(ev) do
    if e.name == "signal:signal_generate" then
      local sig, to = e.a:match("^sig=(%d+) .* pid=(%d+) ")
      sig, to = tonumber(sig), tonumber(to)
      if (sig == 15 or sig == 10) and to == sup and not t0 then t0, prober = e.t, e.pid
      elseif t0 and sig == 15 and e.pid == sup and mine[to] and not svc[to] then
        svc[to] = true
        kills[#kills + 1] = e.t
      end
    end
  end
  -- `orch ctl stop all` (STOP_TRACE_HOW=ctl): from the server's accept.
  if not t0 then
    for _, e in ipairs(ev) do
      if e.name == "raw_syscalls:sys_enter" and e.pid == sup and e.a:match("^NR 288 ") then t0 = e.t break end
    end
    if t0 then
      for _, e in ipairs(ev) do
        if e.name == "signal:signal_generate" and e.t > t0 then
          local sig, to = e.a:match("^sig=(%d+) .* pid=(%d+) ")
          sig, to = tonumber(sig), tonumber(to)
          if sig == 15 and e.pid == sup and mine[to] and not svc[to] then
            svc[to] = true
            kills[#kills + 1] = e.t
          end
        end
      end
    end
  end
  if not t0 then return nil end
  for _, e in ipairs(ev) do
    if e.name == "sched:sched_process_exit" and svc[e.tid] and e.t > t0 then exits[#exits + 1] = e.t end
  end
  table.sort(exits)
  local done
  for _, e in ipairs(ev) do
    if e.name == "sched:sched_process_exit" and e.tid == sup then done = e.t end
  end
  local tend = exits[#exits]
  if not tend or #kills == 0 then return nil end
  -- CPU time in [t0, tend] by who held each CPU.
  local on, since = {}, {}
  local cpu = { sup = 0, svc = 0, other = 0 }
  local all = 0
  local runs = {}           -- the supervisor's time on a CPU: {from, to}
  local function account_all(tid, a, b)
    if tid == sup then runs[#runs + 1] = { a, b } end
    if tid ~= sup or not done then return end
    a, b = math.max(a, t0), math.min(b, done)
    if b > a then all = all + (b - a) end
  end
  local sys, yield = {}, nil
  local function account(c, tid, a, b)
    a, b = math.max(a, t0), math.min(b, tend)
    if b <= a or tid == 0 then return end
    local k = tid == sup and "sup" or svc[tid] and "svc" or "other"
    cpu[k] = cpu[k] + (b - a)
  end
  for _, e in ipairs(ev) do
    if e.name == "sched:sched_switch" then
      local prev, nxt = e.a:match("prev_pid=(%d+) .* next_pid=(%d+)")
      prev, nxt = tonumber(prev), tonumber(nxt)
      account(e.cpu, prev, since[e.cpu] or t0, e.t)
      account_all(prev, since[e.cpu] or t0, e.t)
      on[e.cpu], since[e.cpu] = nxt, e.t
    elseif e.name == "raw_syscalls:sys_enter" and e.pid == sup and e.t >= t0 then
      local nr = tonumber(e.a:match("NR (%d+)"))
      if nr == 24 and not yield then yield = e.t end
      if e.t <= tend then
        local n = NR[nr] or ("nr" .. nr)
        sys[n] = (sys[n] or 0) + 1
      end
    end
  end
  for c, tid in pairs(on) do account(c, tid, since[c], tend) end
  -- With sched_wakeup traced (STOP_TRACE_EVENTS=sched:sched_wakeup): the
  -- probe's waits for a CPU (its wake-up to its switch-in) from the SIGTERM
  -- to its figure, where the supervisor held the CPU it was woken onto.
  local pwait, pwait_x, running, woke = 0 / 0, 0 / 0, {}, nil
  local pend = t0 + probe / 1e3
  for _, e in ipairs(ev) do
    if e.name == "sched:sched_switch" then
      local nxt = tonumber(e.a:match("next_pid=(%d+)"))
      running[e.cpu] = nxt
      if nxt == prober and woke then
        if e.t <= pend then
          pwait = pwait + (e.t - woke)
          if woke >= tend then pwait_x = pwait_x + (e.t - woke) end
        end
        woke = nil
      end
    elseif e.name == "sched:sched_wakeup" and prober and e.t >= t0 and e.t <= pend then
      if pwait ~= pwait then pwait, pwait_x = 0, 0 end
      local pid, target = e.a:match("pid=(%d+) .*target_cpu=(%d+)")
      if tonumber(pid) == prober and running[tonumber(target)] == sup then woke = e.t end
    end
  end
  local ms = function(x) return (x - t0) * 1e3 end
  local function cpu_until(b)          -- the supervisor's CPU from t0 to b, ms
    local sum = 0
    for _, r in ipairs(runs) do
      local x, y = math.max(r[1], t0), math.min(r[2], b)
      if y > x then sum = sum + (y - x) end
    end
    return sum * 1e3
  end
  local list = {}
  for n, c in pairs(sys) do list[#list + 1] = { n, c } end
  table.sort(list, function(a, b) return a[2] > b[2] end)
  local top = {}
  for i = 1, math.min(8, #list) do top[#top + 1] = list[i][1] .. " " .. list[i][2] end
  -- orch's Lua stamps (stop_stamps.lua), if any.
  local st = {}
  local sf = io.open(f .. ".stamps")
  if sf then
    local first, last, cpu, n = {}, {}, {}, {}
    for l in sf:lines() do
      local t, c, label = l:match("^(%S+) (%S+) (.+)$")
      t, c = tonumber(t), tonumber(c)
      if t then
        first[label] = first[label] or t
        last[label] = t
        if t >= t0 and t < tend then
          cpu[label] = (cpu[label] or 0) + c
          n[label] = (n[label] or 0) + 1
        end
      end
    end
    sf:close()
    local at = {}
    for _, k in ipairs { "term.begin", "stop_ordered.begin", "signal_first", "signal_pass", "signal_rest", "sched_yield", "orch.task",
                         "stop.begin", "set_state.stopping", "proc_exited", "set_state.stopped" } do
      if first[k] then at[#at + 1] = string.format("%s %.3f-%.3f", k, ms(first[k]), ms(last[k])) end
    end
    local labels = {}
    for k in pairs(cpu) do labels[#labels + 1] = k end
    table.sort(labels, function(a, b) return cpu[a] > cpu[b] end)
    local used = {}
    for _, k in ipairs(labels) do used[#used + 1] = string.format("%s %d: %.0f us", k, n[k], cpu[k] * 1e6) end
    st.at = table.concat(at, ", ")
    st.cpu = table.concat(used, ", ")
  end
  return { st = st, cpu_first = cpu_until(kills[1]), cpu_last = cpu_until(kills[#kills]),
           cpu_pass = yield and cpu_until(yield) or 0 / 0, first = ms(kills[1]), last = ms(kills[#kills]), nkill = #kills, exit50 = ms(exits[50] or tend),
           exit = ms(tend), probe = probe, done = done and ms(done) or 0 / 0, cpu_all = all * 1e3, sup_cpu = cpu.sup * 1e3, svc_cpu = cpu.svc * 1e3,
           other_cpu = cpu.other * 1e3, pwait = pwait * 1e3, pwait_x = pwait_x * 1e3, gap = probe - ms(tend), top = table.concat(top, ", ") }
end

local cols = { "first", "last", "exit50", "exit", "probe", "done", "cpu_first", "cpu_last", "cpu_pass", "sup_cpu",
               "cpu_all", "svc_cpu", "other_cpu", "pwait", "pwait_x", "gap" }
local function median(v)
  for i = #v, 1, -1 do if v[i] ~= v[i] then table.remove(v, i) end end
  table.sort(v)
  if #v == 0 then return 0 / 0 end
  return #v % 2 == 1 and v[(#v + 1) // 2] or (v[#v // 2] + v[#v // 2 + 1]) / 2
end
print(string.format("%-5s %3s " .. string.rep("%9s ", #cols), "kind", "rnd", table.unpack(cols)))
local rows = {}
for r = 1, rounds do
  for _, k in ipairs(kinds) do
    local x = one(k, r)
    if x then
      rows[k] = rows[k] or {}
      table.insert(rows[k], x)
      local v = {}
      for i, c in ipairs(cols) do v[i] = x[c] end
      print(string.format("%-5s %3d " .. string.rep("%9.3f ", #cols), k, r, table.unpack(v)))
      print("      syscalls in the window: " .. x.top .. " (" .. x.nkill .. " signals)")
      if x.st.at then
        print("      stamps (ms): " .. x.st.at)
        print("      Lua CPU of the calls begun before the last exit (inclusive): " .. x.st.cpu)
      end
    end
  end
end
print("medians, ms")
for _, k in ipairs(kinds) do
  if rows[k] then
    local v = {}
    for i, c in ipairs(cols) do
      local s = {}
      for _, x in ipairs(rows[k]) do s[#s + 1] = x[c] end
      v[i] = median(s)
    end
    print(string.format("%-5s %3d " .. string.rep("%9.3f ", #cols), k, #rows[k], table.unpack(v)))
  end
end
