#!/usr/bin/env bash
# scripts/bench.d/cgroup_stop_sched.sh BUILD [N] [ROUNDS]: where the wall
# time of orch's stop of N services with an escapee each goes, against the
# same stop without (issue 14): BUILD/orch run cgroup_stop_stamps.lua N
# ROUNDS under `perf record -e sched:sched_switch,sched:sched_wakeup,
# sched:sched_process_exit` on every CPU, each stop's window cut by the
# times it prints, then cgroup_stop_sched.lua: per kind the medians of the
# window's CPU time by who had it (orch, the main processes, the escapees,
# kernel threads, anything else, idle), when the last main process and the
# last escapee ended, orch's tail after the last exit (its CPU, the wall),
# the CPUs' idle time before the last exit, and how long the processes
# woken by the stop's signals waited for a CPU. Needs perf and root. N 100,
# ROUNDS 9.
set -u
BUILD=$(cd "$1" && pwd); N=${2:-100}; ROUNDS=${3:-9}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-cgstop-sched.XXXXXX
STAMPS_PIDS="$W/pids" STAMPS_WINDOWS=1 perf record -q -k CLOCK_MONOTONIC -a \
  -e sched:sched_switch,sched:sched_wakeup,sched:sched_process_exit \
  -o "$W/sched.data" -- "$BUILD/orch" run "$HERE/cgroup_stop_stamps.lua" "$N" "$ROUNDS" 2>"$W/windows" >"$W/stamps" || exit 1
perf script -i "$W/sched.data" -F comm,tid,cpu,time,event,trace --ns >"$W/sched.txt" 2>/dev/null
cat "$W/stamps"
lua5.4 "$HERE/cgroup_stop_sched.lua" "$W/pids" "$W/windows" "$W/sched.txt"
