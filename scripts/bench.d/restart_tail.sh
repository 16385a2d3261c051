#!/usr/bin/env bash
# scripts/bench.d/restart_tail.sh BUILD [SAMPLES] [ROUNDS]: which restarts
# are slow, and why (issue 15: the restart's p95). As stop.sh's restart part
# (20 services of phases.lua, a fresh supervisor a round, SAMPLES (20) kills
# 50 ms apart, the probe's latency), each kind in turn, ROUNDS (4) rounds,
# under `perf record -a` of the scheduler's and the restart's tracepoints
# (CLOCK_MONOTONIC, the clock of the probe and svc_stamp). Per restart: the
# segments of restart_segments.sh (µs after the SIGKILL: the victim's exit,
# the SIGCHLD, the supervisor on a CPU, its wait4, its clone3, the new
# process's exec, its stamp = the latency) and, inside the window from the
# kill to the stamp, the time each task spent on a CPU (run) and runnable
# but waiting for one (wait): the supervisor, the new process, the victim,
# orch's fd holder, everything else. Prints per kind the p50/p90/p95 of
# each, the slowest TAIL_SLOW (8) restarts with what else ran in them, and
# per round the median and p95 (stop.sh's: the 19th of 20) with the p95
# ratio of the medians over the rounds. Needs perf and root.
# TAIL_KINDS ("c orch"); "base" is orch from TAIL_BASE (another build
# directory: an A/B in one run), "nopersist" orch without its state record,
# journal and fd holder (phases.lua's ORCH_BENCH_PERSIST=off). TAIL_KEEP=DIR
# keeps the traces.
set -u
BUILD=$(cd "$1" && pwd); N=${2:-20}; ROUNDS=${3:-4}
KINDS=${TAIL_KINDS:-"c orch"}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-tail.XXXXXX
bench_progs || exit 1
export SVC_SHM=$W/stamps ORCH_SOCKET=$W/ctl.sock
P=$W/probe D=${TAIL_KEEP:-$W/traces}
mkdir -p "$D"
one() {                   # kind round
  local kind=$1 r=$2 sup f orch=$BUILD/orch
  [ "$kind" = base ] && orch=$(cd "${TAIL_BASE:?TAIL_BASE: the other build}" && pwd)/orch
  "$P" init "$SVC_SHM"
  rm -f "$W/ctl.sock"
  if [ "$kind" = c ]; then setsid "$W/minisup" 20 "$W/svc" </dev/null >/dev/null 2>&1 &
  else
    ORCH_BENCH_PERSIST=$([ "$kind" = nopersist ] && echo off) \
      setsid "$orch" run "$HERE/phases.lua" 20 "$W/svc" </dev/null >/dev/null 2>"$W/err" &
  fi
  sup=$!
  "$P" wait-started "$SVC_SHM" 20 120 || { echo "restart_tail.sh: $kind did not start" >&2; kill -TERM $sup; return 1; }
  sleep 0.5
  f=$D/$kind.$r
  perf record -q -k CLOCK_MONOTONIC -a -o "$f.data" \
    -e sched:sched_process_exit,sched:sched_switch,sched:sched_wakeup,sched:sched_wakeup_new,sched:sched_process_exec,signal:signal_generate \
    -e syscalls:sys_exit_wait4 --filter "common_pid == $sup" -e syscalls:sys_exit_waitid --filter "common_pid == $sup" -e syscalls:sys_enter_clone3 --filter "common_pid == $sup" \
    -e sched:sched_process_fork --filter "parent_pid == $sup" \
    -- env PROBE_SAMPLES=1 "$P" latency "$SVC_SHM" 20 "$N" 50 >"$f.samples" 2>/dev/null
  perf script -i "$f.data" -F comm,pid,tid,cpu,time,event,trace --ns >"$f.txt" 2>/dev/null
  rm -f "$f.data"
  { echo "sup $sup"; echo "holder $(pgrep -P "$sup" -f fdholder | head -1)"; } >>"$f.samples"
  bench_stop $sup
  bench_sweep
}
for r in $(seq "$ROUNDS"); do for k in $KINDS; do one "$k" "$r"; done; done
# shellcheck disable=SC2086
TAIL_SLOW=${TAIL_SLOW:-8} lua5.4 "$HERE/restart_tail.lua" "$D" "$ROUNDS" $KINDS
