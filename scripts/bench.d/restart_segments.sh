#!/usr/bin/env bash
# scripts/bench.d/restart_segments.sh BUILD [SAMPLES] [ROUNDS]: where a
# restart's latency goes in orch (phases.lua, the configuration a user
# gets) against the C limit (minisup.c), segment by segment, from kernel
# tracepoints on every CPU (perf record -a, CLOCK_MONOTONIC: the clock of
# the probe and svc_stamp). Each round starts one supervisor of each kind
# with 20 services (as stop.sh's restart part does) and kills SAMPLES (20)
# of them, 50 ms apart (probe latency, each sample printed); ROUNDS (2)
# rounds, alternating. Per restart, in µs after the probe's SIGKILL:
#   exit     the victim's sched_process_exit (its teardown begins)
#   sigchld  the SIGCHLD to the supervisor (the end of the teardown)
#   oncpu    the supervisor's first switch-in after the exit began
#   reaped   its wait4 returning the victim's pid (or orch's waitid taking it first)
#   clone    its clone3 (the new process) entered
#   exec     the new process's exec done (sched_process_exec)
#   stamp    the new process's own start stamp (the latency)
# Prints, for each kind, the medians of the segments between them, and
# orch's minus C's. Needs perf and root (tracepoints). The sys_exit_wait4 /
# sys_enter_clone3 tracepoints are filtered to the supervisor, so that the
# tracing itself costs the two kinds alike.
# SEG_SERVICES=K: each supervisor runs K services instead of 20 (the kills
# go to the first 20; a fleet of 10,000 takes minutes to start); the
# MINISUP_* variables of minisup.c pass through (at 10,000:
# MINISUP_REAP=pid MINISUP_FILES=1, else its walk and fd table dominate).
# SEG_KINDS="orch" measures orch alone (the columns of C read nan).
set -u
BUILD=$(cd "$1" && pwd); N=${2:-20}; ROUNDS=${3:-2}
NS=${SEG_SERVICES:-20}; KINDS=${SEG_KINDS:-"c orch"}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-segments.XXXXXX
bench_progs || exit 1
export SVC_SHM=$W/stamps ORCH_SOCKET=$W/ctl.sock
P=$W/probe
one() {                   # kind round
  local kind=$1 r=$2 sup f
  "$P" init "$SVC_SHM"
  rm -f "$W/ctl.sock"
  if [ "$kind" = c ]; then setsid "$W/minisup" "$NS" "$W/svc" </dev/null >/dev/null 2>&1 &
  else setsid "$BUILD/orch" run "$HERE/phases.lua" "$NS" "$W/svc" </dev/null >/dev/null 2>"$W/err" &
  fi
  sup=$!
  "$P" wait-started "$SVC_SHM" "$NS" $((120 + NS / 20)) || { echo "restart_segments.sh: $kind did not start" >&2; kill -TERM $sup; return 1; }
  sleep 0.5
  f=$W/$kind.$r
  perf record -q -k CLOCK_MONOTONIC -a -o "$f.data" \
    -e sched:sched_process_exit,sched:sched_switch,sched:sched_process_exec,signal:signal_generate \
    -e syscalls:sys_exit_wait4 --filter "common_pid == $sup" -e syscalls:sys_exit_waitid --filter "common_pid == $sup" -e syscalls:sys_enter_clone3 --filter "common_pid == $sup" \
    -e sched:sched_process_fork --filter "parent_pid == $sup" \
    -- env PROBE_SAMPLES=1 "$P" latency "$SVC_SHM" 20 "$N" 50 >"$f.samples" 2>/dev/null
  perf script -i "$f.data" -F comm,pid,cpu,time,event,trace --ns >"$f.txt" 2>/dev/null
  echo "sup $sup" >>"$f.samples"
  bench_stop $sup
  bench_sweep
}
for r in $(seq "$ROUNDS"); do for k in $KINDS; do one "$k" "$r"; done; done
lua5.4 - "$W" "$ROUNDS" "$HERE" <<'LUA'
local W, rounds = arg[1], tonumber(arg[2])
local find = dofile(arg[3] .. "/restart_segs.lua")
local points = { "exit", "sigchld", "oncpu", "reaped", "clone", "exec", "stamp" }
local function rows_of(kind, r)
  local f = W .. "/" .. kind .. "." .. r
  local S, sup = {}, nil
  for l in io.lines(f .. ".samples") do
    local k, st = l:match("^S %d+ (%d+) (%d+)$")
    if k then S[#S + 1] = { tonumber(k) / 1e9, tonumber(st) / 1e9 } end
    sup = sup or tonumber(l:match("^sup (%d+)$"))
  end
  local ev = {}
  for l in io.lines(f .. ".txt") do
    local comm, pid, t, name, rest = l:match("^%s*(%S+)%s+(%d+)%s+%[%d+%]%s+([%d.]+):%s+(%S+):%s*(.*)$")
    if t then ev[#ev + 1] = { t = tonumber(t), pid = tonumber(pid), name = name, a = rest } end
  end
  table.sort(ev, function(a, b) return a.t < b.t end)
  local rows, j = {}, 1
  for _, s in ipairs(S) do
    local k, stamp = s[1], s[2]
    while j <= #ev and ev[j].t < k - 1e-4 do j = j + 1 end
    rows[#rows + 1] = find(ev, j, k, stamp, sup, { stamp = (stamp - k) * 1e6 })
  end
  return rows
end
local function median(v)
  table.sort(v)
  if #v == 0 then return 0 / 0 end
  return #v % 2 == 1 and v[(#v + 1) // 2] or (v[#v // 2] + v[#v // 2 + 1]) / 2
end
local med = {}
for _, kind in ipairs { "c", "orch" } do
  local rows = {}
  for r = 1, rounds do
    local f = io.open(W .. "/" .. kind .. "." .. r .. ".samples")
    if f then
      f:close()
      for _, x in ipairs(rows_of(kind, r)) do rows[#rows + 1] = x end
    end
  end
  med[kind] = { n = #rows }
  local prev = "kill"
  for _, p in ipairs(points) do
    local v = {}
    for _, x in ipairs(rows) do
      local a = prev == "kill" and 0 or x[prev]
      if a and x[p] then v[#v + 1] = x[p] - a end
    end
    med[kind][prev .. "->" .. p] = median(v)
    prev = p
  end
end
print(string.format("%-18s %8s %8s %8s", "segment (us)", "c", "orch", "orch-c"))
local prev, tc, to = "kill", 0, 0
for _, p in ipairs(points) do
  local k = prev .. "->" .. p
  local c, o = med.c[k], med.orch[k]
  print(string.format("%-18s %8.1f %8.1f %8.1f", k, c, o, o - c))
  prev = p
end
print(string.format("restarts: c %d, orch %d", med.c.n, med.orch.n))
LUA
