-- cgroup_stop_exits.lua PIDS EXITS WINDOWS (run by lua5.4, from
-- cgroup_stop_stamps.sh): when the kernel ended the services' processes in
-- each stop of cgroup_stop_stamps.lua. PIDS: its STAMPS_PIDS file (each
-- round's main and escapee pids, then "round KIND T0"); EXITS: `perf
-- script -F time,trace` of sched:sched_process_exit (perf -k
-- CLOCK_MONOTONIC); WINDOWS: its STAMPS_WINDOWS lines. Prints per kind the
-- medians over the rounds of the first and last main process's exit, the
-- first and last escapee's, and the stop's return, in ms after the stop
-- was called.
local rounds, cur = {}, nil
for l in io.lines(arg[1]) do
  local w, p = l:match("^([me]) (%d+)$")
  if w then
    if not cur or cur.t0 then cur = { m = {}, e = {} }; rounds[#rounds + 1] = cur end
    cur[w][tonumber(p)] = true
  else
    local k, t = l:match("^round (%S+) (%S+)")
    if k then cur.kind, cur.t0 = k, tonumber(t) end
  end
end
local ends = {}
for l in io.lines(arg[3]) do
  local k, a, b = l:match("^window (%S+) (%S+) (%S+)")
  if k then ends[#ends + 1] = tonumber(b) end
end
for i, r in ipairs(rounds) do r.t1 = ends[i] end
local ex = {}
for l in io.lines(arg[2]) do
  local t, p = l:match("^%s*([%d.]+):.-pid=(%d+)")
  if t then ex[#ex + 1] = { tonumber(t), tonumber(p) } end
end
local res = { plain = {}, escapee = {} }
for _, r in ipairs(rounds) do
  local s = { mf = math.huge, ml = 0, ef = math.huge, el = 0 }
  for _, e in ipairs(ex) do
    if e[1] >= r.t0 and e[1] <= r.t0 + 5 then
      local d = (e[1] - r.t0) * 1e3
      if r.m[e[2]] then s.mf = math.min(s.mf, d); s.ml = math.max(s.ml, d) end
      if r.e[e[2]] then s.ef = math.min(s.ef, d); s.el = math.max(s.el, d) end
    end
  end
  s.ret = (r.t1 - r.t0) * 1e3
  table.insert(res[r.kind], s)
end
local function med(t, k)
  local v = {}
  for _, s in ipairs(t) do if s[k] ~= math.huge and (k:sub(1,1) ~= "e" or s[k] > 0) then v[#v + 1] = s[k] end end
  table.sort(v)
  if #v == 0 then return 0 / 0 end
  return v[(#v + 1) // 2]
end
for _, kind in ipairs { "plain", "escapee" } do
  local t = res[kind]
  local esc = kind == "escapee" and ("%.2f-%.2f"):format(med(t, "ef"), med(t, "el")) or "-"
  print(("%-8s main exits %.2f-%.2f  escapee exits %s  stop returned %.2f ms (medians of %d)"):format(kind,
    med(t, "mf"), med(t, "ml"), esc, med(t, "ret"), #t))
end
