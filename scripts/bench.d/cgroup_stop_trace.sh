#!/usr/bin/env bash
# scripts/bench.d/cgroup_stop_trace.sh BUILD [N] [ROUNDS] [WAYS]: the
# kernel's side of the stop with escapees (issue 14): cgroup_stop_c
# (BUILD/progs/cgroup_stop_c N ROUNDS, the ways WAYS, "tree,held" by
# default) under perf on every CPU, each stop's window cut out of the trace
# by the times the program prints (CGSTOP_WINDOWS, CLOCK_MONOTONIC).
# Two passes, alternating nothing between them (each is a full run):
#   1. scheduler trace (sched_switch, sched_process_exit, lock contention
#      with its kernel stack): per stop, each CPU's busy share of the
#      window and who had it (the stopper, the services' processes, pid 1,
#      kernel threads, anything else on the machine), each service
#      process's CPU from the signal to its last switch-out (its wake-up,
#      exit and teardown; its reaping is its parent's), when the last exit
#      began, and the time CPUs spent waiting on contended kernel locks,
#      by the function that waited.
#   2. cpu-clock samples every 50 µs with kernel stacks: where a service
#      process's CPU goes in its exit (the first of a list of kernel
#      functions met from the leaf up), and the stopper's and pid 1's.
# Prints per way and kind (plain, escapee) the medians over the rounds.
# Needs perf and root. N 100, ROUNDS 5.
set -u
BUILD=$(cd "$1" && pwd); N=${2:-100}; ROUNDS=${3:-5}; WAYS=${4:-tree,held}
HERE=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d /dev/shm/orch-cgstop-trace.XXXXXX) || exit 1
trap 'rm -rf "$W"' EXIT
C=$BUILD/progs/cgroup_stop_c
export CGSTOP_WINDOWS=1 CGSTOP_WAYS=$WAYS
perf record -q -k CLOCK_MONOTONIC -a -o "$W/sw.data" \
  -e sched:sched_switch,sched:sched_process_exit,lock:contention_end \
  -e 'lock:contention_begin/call-graph=fp,max-stack=24/' \
  -- "$C" "$N" "$ROUNDS" >"$W/sw.out" || exit 1
perf script -i "$W/sw.data" -F comm,tid,cpu,time,event,trace,ip,sym --ns >"$W/sw.txt" 2>/dev/null
perf record -q -k CLOCK_MONOTONIC -a -g -o "$W/cc.data" -e cpu-clock -c 50000 -e sched:sched_process_exit \
  -- "$C" "$N" "$ROUNDS" >"$W/cc.out" || exit 1
perf script -i "$W/cc.data" -F comm,tid,cpu,time,event,trace,ip,sym --ns >"$W/cc.txt" 2>/dev/null
grep -v "^cgstop_window" "$W/sw.out"
lua5.4 "$HERE/cgroup_stop_trace.lua" "$W" "$N"
