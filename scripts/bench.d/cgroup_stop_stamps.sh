#!/usr/bin/env bash
# scripts/bench.d/cgroup_stop_stamps.sh BUILD [N] [ROUNDS]: the timeline of
# the stop of N services with and without an escapee each (issue 14):
# BUILD/orch run cgroup_stop_stamps.lua N ROUNDS (orch's side: each phase's
# time and orch's CPU, medians) under `perf record -e
# sched:sched_process_exit` on every CPU, then cgroup_stop_exits.lua (the
# kernel's side: when the main processes and the escapees ended). Needs
# perf and root. N 100, ROUNDS 9.
set -u
BUILD=$(cd "$1" && pwd); N=${2:-100}; ROUNDS=${3:-9}
HERE=$(cd "$(dirname "$0")" && pwd)
# A private $W, and whatever the run leaves (an interrupted orch, its
# services, its cgroups) swept at exit: workdir.sh, as every shell bench.
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-cgstop-stamps.XXXXXX
STAMPS_PIDS="$W/pids" STAMPS_WINDOWS=1 perf record -q -k CLOCK_MONOTONIC -a -e sched:sched_process_exit \
  -o "$W/exit.data" -- "$BUILD/orch" run "$HERE/cgroup_stop_stamps.lua" "$N" "$ROUNDS" 2>"$W/windows" || exit 1
perf script -i "$W/exit.data" -F time,trace --ns >"$W/exits" 2>/dev/null
lua5.4 "$HERE/cgroup_stop_exits.lua" "$W/pids" "$W/exits" "$W/windows"
