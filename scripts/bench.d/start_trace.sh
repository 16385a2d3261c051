#!/usr/bin/env bash
# scripts/bench.d/start_trace.sh BUILD [IMPL]: where one start of 100 goes.
# IMPL: orch (default: scripts/bench.d/phases.lua, the configuration a user
# gets), nocg (the same with ORCH_BENCH_CGROUP=off) or c (minisup.c, the C
# limit). The supervisor starts 100 svc_stamp, all are stopped (SIGUSR1),
# then one SIGUSR2 start is traced with perf on every CPU (clone3 entry and
# exit, every exec; needs perf and root). Prints the start's wall time (the
# probe's, as stop.sh's start_100), the supervisor's CPU during it
# (/proc/PID/schedstat), and from the trace: the time from the first clone3
# to the last exec, the time spent inside clone3 (a vfork spawn waits there
# for its child's exec) and the rest (the supervisor between its clones).
set -u
BUILD=$(cd "$1" && pwd); IMPL=${2:-orch}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-start.XXXXXX
bench_progs || exit 1
export SVC_SHM=$W/stamps ORCH_SOCKET=$W/ctl.sock
"$W/probe" init "$SVC_SHM"
case $IMPL in
  orch) setsid "$BUILD/orch" run "$HERE/phases.lua" 100 "$W/svc" </dev/null >/dev/null 2>"$W/err" & ;;
  nocg) ORCH_BENCH_CGROUP=off setsid "$BUILD/orch" run "$HERE/phases.lua" 100 "$W/svc" </dev/null >/dev/null 2>"$W/err" & ;;
  c) setsid "$W/minisup" 100 "$W/svc" </dev/null >/dev/null 2>&1 & ;;
  *) echo "start_trace.sh: IMPL is orch, nocg or c" >&2; exit 2 ;;
esac
SUP=$!
"$W/probe" wait-started "$SVC_SHM" 100 120 || { echo "start_trace.sh: not started" >&2; kill -TERM $SUP; exit 1; }
sleep 0.5
"$W/probe" stoptime "$SVC_SHM" 100 signal $SUP USR1 >/dev/null
sleep 0.5
read -r c0 _ <"/proc/$SUP/schedstat"
perf record -q -k CLOCK_MONOTONIC -a -o "$W/perf.data" \
  -e syscalls:sys_enter_clone3,syscalls:sys_exit_clone3,sched:sched_process_exec -- \
  "$W/probe" starttime "$SVC_SHM" 100 signal $SUP USR2 >"$W/start" 2>/dev/null
read -r c1 _ <"/proc/$SUP/schedstat"
echo "$IMPL: start $(cat "$W/start") ms, supervisor CPU $(( (c1 - c0) / 1000 )) us"
perf script -i "$W/perf.data" -F pid,time,event 2>/dev/null | awk -v sup=$SUP '
  /sys_enter_clone3/ && $1 + 0 == sup { enter = $2 + 0; if (!first) first = enter }
  /sys_exit_clone3/ && $1 + 0 == sup { if (enter) { inside += $2 - enter; n++; last = $2 + 0 }; enter = 0 }
  /sched_process_exec/ { if ($2 + 0 > lastexec) lastexec = $2 + 0 }
  END { printf "  %d clones; first clone -> last exec %.1f ms; inside clone3 %.1f ms; between clones %.1f ms\n",
               n, (lastexec - first) * 1000, inside * 1000, (last - first - inside) * 1000 }'
bench_stop $SUP
