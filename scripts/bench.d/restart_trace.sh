#!/usr/bin/env bash
# scripts/bench.d/restart_trace.sh BUILD [SAMPLES]: where a restart's
# latency goes. orch runs restart_stamps.lua 20 svc_stamp (phases.lua, the
# configuration a user gets, with orch's side of each restart stamped);
# the probe kills one service every 50 ms, SAMPLES times (300), as
# stop.sh's restart_latency does, and prints each sample; the two are
# joined in order (one exit a kill). Prints orch's CPU per restart
# (/proc/PID/schedstat) and, for the fastest half, the 50-90th percentile
# and the slowest tenth of the restarts, the medians of: the latency (the
# kill to the new process's stamp), the kill to orch's exit callback
# (reap), the callback to orch.spawn (before), orch.spawn (the vfork clone
# until the child's exec), its return to the stamp (child), and orch's
# CPU before, in and after the spawn; then the first restart (a supervisor's
# first pays what its first restart loads) and the slowest five. In µs.
set -u
BUILD=$(cd "$1" && pwd); N=${2:-300}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-restart.XXXXXX
cc -O2 -static -o "$W/svc" "$HERE/svc_stamp.c" 2>/dev/null || cc -O2 -o "$W/svc" "$HERE/svc_stamp.c" || exit 1
cc -O2 -o "$W/probe" "$HERE/supervisors_probe.c" || exit 1
export SVC_SHM=$W/stamps ORCH_SOCKET=$W/ctl.sock RESTART_STAMPS=$W/stamps.txt
"$W/probe" init "$SVC_SHM"
setsid "$BUILD/orch" run "$HERE/restart_stamps.lua" 20 "$W/svc" </dev/null >/dev/null 2>"$W/err" &
SUP=$!
"$W/probe" wait-started "$SVC_SHM" 20 120 || { echo "restart_trace.sh: not started" >&2; kill -TERM $SUP; exit 1; }
sleep 0.5
read -r c0 _ <"/proc/$SUP/schedstat"
PROBE_SAMPLES=1 "$W/probe" latency "$SVC_SHM" 20 "$N" 50 >"$W/samples"
read -r c1 _ <"/proc/$SUP/schedstat"
kill -WINCH $SUP
for _ in $(seq 100); do [ -s "$RESTART_STAMPS" ] && break; sleep 0.05; done
echo "orch's CPU per restart $(( (c1 - c0) / N / 1000 )) us; median and p95 $(tail -1 "$W/samples") ms"
lua5.4 - "$W/samples" "$RESTART_STAMPS" <<'LUA'
local S, R = {}, {}
for l in io.lines(arg[1]) do
  local k, st = l:match("^S %d+ (%d+) (%d+)$")
  if k then S[#S + 1] = { tonumber(k), tonumber(st) } end
end
for l in io.lines(arg[2]) do
  local f = {}
  for w in l:gmatch("%S+") do f[#f + 1] = w end
  R[#R + 1] = f
end
local rows = {}
for i = 1, math.min(#S, #R) do
  local s, r = S[i], R[i]
  if r[1] == "R" then
    local te, t0, t1 = tonumber(r[3]), tonumber(r[4]), tonumber(r[5])
    rows[#rows + 1] = { lat = (s[2] - s[1]) / 1e3, reap = (te - s[1]) / 1e3, before = (t0 - te) / 1e3,
      spawn = (t1 - t0) / 1e3, child = (s[2] - t1) / 1e3, cpu_before = tonumber(r[7]),
      cpu_spawn = tonumber(r[8]), cpu_after = tonumber(r[9]), first = i == 1 }
  end
end
local keys = { "lat", "reap", "before", "spawn", "child", "cpu_before", "cpu_spawn", "cpu_after" }
local function line(label, rs)
  local out = { label, "n=" .. #rs }
  for _, k in ipairs(keys) do
    local v = {}
    for _, r in ipairs(rs) do v[#v + 1] = r[k] end
    table.sort(v)
    out[#out + 1] = string.format("%s=%.0f", k, v[(#v + 1) // 2] or 0 / 0)
  end
  print(table.concat(out, " "))
end
local first = rows[1]
table.sort(rows, function(a, b) return a.lat < b.lat end)
local n = #rows
local function part(a, b) return table.move(rows, a, b, 1, {}) end
line("fastest half", part(1, n // 2))
line("50-90%", part(n // 2 + 1, math.floor(n * 0.9)))
line("slowest 10%", part(math.floor(n * 0.9) + 1, n))
if first then line("first restart", { first }) end
for i = math.max(1, n - 4), n do line("slow", { rows[i] }) end
LUA
bench_stop $SUP
