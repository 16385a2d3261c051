-- scripts/bench.d/restart_tail.lua DIR ROUNDS KIND...: restart_tail.sh's
-- analysis of the traces it recorded in DIR (KIND.ROUND.samples: the
-- probe's "S slot kill_ns stamp_ns" lines, "sup PID", "holder PID";
-- KIND.ROUND.txt: perf script's lines). See restart_tail.sh.
local dir, rounds = arg[1], tonumber(arg[2])
local kinds = {}
for i = 3, #arg do kinds[#kinds + 1] = arg[i] end
local SLOW = tonumber(os.getenv("TAIL_SLOW")) or 8
local find = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/restart_segs.lua")

-- The restarts of one round, each a window { k, st, lat, run = {pid=µs},
-- wait = {pid=µs}, other = {comm=µs}, segments... }.
local function round_of(kind, r)
  local f = dir .. "/" .. kind .. "." .. r
  local S, sup, holder = {}, nil, nil
  local sf = io.open(f .. ".samples")
  if not sf then return nil end
  for l in sf:lines() do
    local k, st = l:match("^S %d+ (%d+) (%d+)$")
    if k then S[#S + 1] = { k = tonumber(k) / 1e9, st = tonumber(st) / 1e9 } end
    sup = sup or tonumber(l:match("^sup (%d+)$"))
    holder = holder or tonumber(l:match("^holder (%d+)$"))
  end
  sf:close()
  local ev = {}
  for l in io.lines(f .. ".txt") do
    local comm, tid, cpu, t, name, rest = l:match("^%s*(.-)%s+%d+/(%d+)%s+%[(%d+)%]%s+([%d.]+):%s+(%S+):%s*(.*)$")
    if t then ev[#ev + 1] = { comm = comm, pid = tonumber(tid), cpu = tonumber(cpu), t = tonumber(t), name = name, a = rest } end
  end
  table.sort(ev, function(a, b) return a.t < b.t end)
  local W = {}
  for i, s in ipairs(S) do
    W[i] = { idx = i, round = r, k = s.k, st = s.st, lat = (s.st - s.k) * 1e6, run = {}, wait = {}, other = {} }
  end
  -- Adds [a, b] of pid (on a CPU, or runnable and waiting) to the windows
  -- it overlaps.
  local function add(pid, comm, a, b, what)
    local lo, hi = 1, #W
    while lo < hi do
      local m = (lo + hi) // 2
      if W[m].st < a then lo = m + 1 else hi = m end
    end
    for i = lo, #W do
      local w = W[i]
      if w.k > b then break end
      local x, y = math.max(a, w.k), math.min(b, w.st)
      if y > x then
        local d = (y - x) * 1e6
        local t = what == "run" and w.run or w.wait
        t[pid] = (t[pid] or 0) + d
        if what == "run" and pid ~= 0 then w.other[comm] = (w.other[comm] or 0) + d end
      end
    end
  end
  local cur, since, rsince = {}, {}, {}
  for _, e in ipairs(ev) do
    if e.name == "sched:sched_switch" then
      local pc, pp, ps, nc, np = e.a:match("prev_comm=(.-) prev_pid=(%d+) prev_prio=%d+ prev_state=(%S+) ==> next_comm=(.-) next_pid=(%d+)")
      pp, np = tonumber(pp), tonumber(np)
      if pp then
        if since[e.cpu] and cur[e.cpu] == pp then add(pp, pc, since[e.cpu], e.t, "run") end
        rsince[pp] = ps:sub(1, 1) == "R" and e.t or nil
        if rsince[np] then add(np, nc, rsince[np], e.t, "wait"); rsince[np] = nil end
        cur[e.cpu], since[e.cpu] = np, e.t
      end
    elseif e.name == "sched:sched_wakeup" or e.name == "sched:sched_wakeup_new" then
      local p = tonumber(e.a:match(" pid=(%d+)"))
      if p and not rsince[p] then rsince[p] = e.t end
    end
  end
  -- The segments (restart_segs.lua).
  local j = 1
  for n, s in ipairs(S) do
    local w = W[n]
    while j <= #ev and ev[j].t < s.k - 1e-4 do j = j + 1 end
    find(ev, j, s.k, s.st, sup, w)
    local victim, child = w.victim, w.child
    w.sup_run, w.sup_wait = w.run[sup] or 0, w.wait[sup] or 0
    w.new_run, w.new_wait = child and w.run[child] or 0, child and w.wait[child] or 0
    w.victim_run, w.victim_wait = victim and w.run[victim] or 0, victim and w.wait[victim] or 0
    w.holder_run = holder and w.run[holder] or 0
    local o = 0
    for _, d in pairs(w.other) do o = o + d end
    w.others_run = o - w.sup_run - w.new_run - w.victim_run - w.holder_run
  end
  return W
end

local function q(v, p)
  table.sort(v)
  if #v == 0 then return 0 / 0 end
  return v[math.floor(p * (#v - 1) + 0.5) + 1]
end
local median = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/stats.lua").median
local cols = { "lat", "exit", "sigchld", "oncpu", "reaped", "clone", "exec", "sup_run", "sup_wait", "new_run", "new_wait",
               "victim_run", "victim_wait", "holder_run", "others_run" }
local per_round = {}
for _, kind in ipairs(kinds) do
  local all = {}
  per_round[kind] = {}
  for r = 1, rounds do
    local W = round_of(kind, r)
    if W then
      local lat = {}
      for _, w in ipairs(W) do all[#all + 1] = w; lat[#lat + 1] = w.lat / 1e3 end
      per_round[kind][r] = { median(lat), q(lat, 0.95) }
    end
  end
  print(string.format("%s: %d restarts (µs after the SIGKILL; run/wait: on a CPU / runnable, inside the window)", kind, #all))
  for _, p in ipairs { 0.5, 0.9, 0.95 } do
    local out = { string.format("  p%02d", math.floor(p * 100 + 0.5)) }
    for _, c in ipairs(cols) do
      local v = {}
      for _, w in ipairs(all) do if w[c] then v[#v + 1] = w[c] end end
      out[#out + 1] = string.format("%s=%.0f", c, q(v, p))
    end
    print(table.concat(out, " "))
  end
  table.sort(all, function(a, b) return a.lat > b.lat end)
  for i = 1, math.min(SLOW, #all) do
    local w = all[i]
    local out = { string.format("  slow r%d #%d", w.round, w.idx) }
    for _, c in ipairs(cols) do out[#out + 1] = string.format("%s=%.0f", c, w[c] or 0 / 0) end
    local oth = {}
    for c, d in pairs(w.other) do if d >= 30 then oth[#oth + 1] = { c, d } end end
    table.sort(oth, function(a, b) return a[2] > b[2] end)
    local names = {}
    for k = 1, math.min(6, #oth) do names[#names + 1] = string.format("%s:%.0f", oth[k][1], oth[k][2]) end
    print(table.concat(out, " ") .. " | " .. table.concat(names, " "))
  end
end
-- stop.sh's figures: per round the median and p95, then the medians over
-- the rounds.
for _, kind in ipairs(kinds) do
  local out, m, p = {}, {}, {}
  for r = 1, rounds do
    local x = per_round[kind][r]
    if x then
      out[#out + 1] = string.format("%.3f/%.3f", x[1], x[2])
      m[#m + 1], p[#p + 1] = x[1], x[2]
    end
  end
  per_round[kind].m, per_round[kind].p = median(m), median(p)
  print(string.format("%s rounds (median/p95 ms): %s; over the rounds %.3f/%.3f", kind, table.concat(out, " "),
    per_round[kind].m, per_round[kind].p))
end
local c = per_round.c
if c then
  for _, kind in ipairs(kinds) do
    if kind ~= "c" then
      print(string.format("%s: p95 %.2fx of C's (target 1.3), median %.3f against 1.1 x C + 0.2 = %.3f ms", kind,
        per_round[kind].p / c.p, per_round[kind].m, 1.1 * c.m + 0.2))
    end
  end
end
