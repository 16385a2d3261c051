#!/usr/bin/env bash
# scripts/bench.d/start_cpu.sh ROUNDS STARTS IMPL...: where the CPU of a
# start of 100 goes, per kind of process (issue 15, eighth session). IMPL:
# c (minisup.c), ccg (minisup.c with a cgroup per service), a build
# directory (orch: phases.lua, the configuration a user gets), or
# nocg:BUILD (the same with ORCH_BENCH_CGROUP=off), or stamps:BUILD
# (start_stamps.lua: phases.lua with CPU timers around the start path's
# functions; their table of the last start is printed). Each round runs each
# IMPL in turn (one supervisor of 100 svc_stamp, everything in SCHED_FIFO
# through chrt -f 10), and each supervisor STARTS times a stop (SIGUSR1)
# then a start (SIGUSR2). Prints per IMPL the medians of: the start's wall
# time (the probe's, as stop.sh's start_100), the supervisor's own CPU
# during it, and the CPU of its 100 children by then (each service's
# /proc/PID/schedstat: its way to the exec, the exec and its own start),
# the three kinds of work that share the two CPUs. Needs root for chrt.
set -u
ROUNDS=${1:?ROUNDS}; K=${2:?STARTS}; shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-startcpu.XXXXXX
bench_progs || exit 1
export SVC_SHM=$W/stamps ORCH_SOCKET=$W/ctl.sock
CCG=$(bench_ccg)
CCG=${CCG:-/nonexistent/orch-bench-minisup.$TOKEN}   # ccg then fails loudly
kids_cpu() {             # the CPU (ns) of the supervisor's children so far
  local t=0 p ns
  for p in $(cat /proc/"$1"/task/*/children); do read -r ns _ <"/proc/$p/schedstat" && t=$((t + ns)); done
  echo "$t"
}
for _ in $(seq "$ROUNDS"); do
  for b in "$@"; do
    "$W/probe" init "$SVC_SHM"
    case $b in
      c) setsid chrt -f 10 "$W/minisup" 100 "$W/svc" </dev/null >/dev/null 2>&1 & ;;
      ccg) MINISUP_CGROUP=$CCG setsid chrt -f 10 "$W/minisup" 100 "$W/svc" </dev/null >/dev/null 2>&1 & ;;
      stamps:*) setsid chrt -f 10 "${b#stamps:}/orch" run "$HERE/start_stamps.lua" 100 "$W/svc" </dev/null >/dev/null 2>"$W/err" & ;;
      nocg:*) ORCH_BENCH_CGROUP=off setsid chrt -f 10 "${b#nocg:}/orch" run "$HERE/phases.lua" 100 "$W/svc" </dev/null >/dev/null 2>"$W/err" & ;;
      *) setsid chrt -f 10 "$b/orch" run "$HERE/phases.lua" 100 "$W/svc" </dev/null >/dev/null 2>"$W/err" & ;;
    esac
    SUP=$!
    "$W/probe" wait-started "$SVC_SHM" 100 120 || { echo "# start_cpu.sh: $b did not start" >&2; exit 1; }
    sleep 0.3
    for _ in $(seq "$K"); do
      "$W/probe" stoptime "$SVC_SHM" 100 signal $SUP USR1 >/dev/null
      sleep 0.2
      read -r c0 _ <"/proc/$SUP/schedstat"
      s=$(chrt -f 10 "$W/probe" starttime "$SVC_SHM" 100 signal $SUP USR2)
      read -r c1 _ <"/proc/$SUP/schedstat"
      sleep 0.1
      echo "$b $s $(( (c1 - c0) / 1000 )) $(( $(kids_cpu $SUP) / 1000 ))" >>"$W/out"
    done
    bench_stop $SUP
    bench_sweep
    [ "${b%%:*}" = stamps ] && awk '/^handler/ { n = NR } { l[NR] = $0 } END { if (n) for (i = n; i <= NR; i++) if (l[i] !~ / \| |orch\.supervisor:/) print l[i] }' "$W/err"
    bench_ccg_rm "$CCG"
  done
done
lua5.4 - "$W/out" <<'LUA'
local v, order = {}, {}
for line in io.lines(arg[1]) do
  local b, s, c, k = line:match("^(%S+) (%S+) (%S+) (%S+)")
  if b and tonumber(s) then
    if not v[b] then v[b] = { {}, {}, {} }; order[#order + 1] = b end
    table.insert(v[b][1], tonumber(s)); table.insert(v[b][2], tonumber(c) / 1000); table.insert(v[b][3], tonumber(k) / 1000)
  end
end
local function med(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end
for _, b in ipairs(order) do
  local x = v[b]
  print(string.format("%s n=%d wall %.1f ms (min %.1f), supervisor CPU %.1f ms, children CPU %.1f ms",
    b, #x[1], med(x[1]), math.min(table.unpack(x[1])), med(x[2]), med(x[3])))
end
LUA
