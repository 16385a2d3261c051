#!/usr/bin/env bash
# scripts/bench.d/status.sh BUILD_DIR: issue 15's `orch ctl status` at scale.
# For each N in STATUS_SIZES ("100 1000 10000"), one orch supervising N
# copies of svc_stamp.c (scripts/bench.d/phases.lua, as scale.sh runs it),
# then `orch ctl` against it. Prints "name value unit"; every figure of a
# command is the median of its runs (by wall time), and each comes three
# ways: wall (client start-up to output done), orch's CPU (its main
# thread's /proc/PID/schedstat) and the client's CPU (bash's `time`):
#   status_<N>                ms  `orch ctl status`, 5 in a row, every figure
#                                 read before and kept (accounting_max_age
#                                 3600 through `orch ctl eval`): the reply
#   status_json_<N>           ms  `orch ctl --json status`, the same way
#   status_cold_<N>           ms  `orch ctl status` 1.2 s after the last, at
#                                 the default accounting_max_age (1 s): the
#                                 figures are stale, the reply shows them as
#                                 read and orch reads them again after it
#                                 (what of that falls before the client ends
#                                 counts in its CPU), 3 runs
#   status_start_<N>          ms  `orch ctl status`, 5 in a row, the first
#                                 status of the fleet (as scale.sh's after a
#                                 start): the first finds every figure unread
#                                 and queues N reads, the other four are
#                                 served while those run
#   status_one_<N>            ms  `orch ctl status svc<N/2>` (read at once), 5
#   cpu_*, client_cpu_*       ms  the same commands' CPU, orch's and the client's
#   cpu_status_reads_<N>      ms  orch's CPU from a cold status until orch is
#                                 idle again (settle): the reply and the
#                                 background reads of N
#   idle_wakeups_before_<N>, idle_wakeups_after_<N>  per_s  orch's wake-ups
#                                 over 3 s before the first status, and over
#                                 the 3 s after the reads above: a status
#                                 leaves nothing that wakes orch
#   status_json_valid_<N>     services  the records `--json status` gave that a
#                                 strict JSON reader decodes (N when valid)
# A size that would leave fewer than 5,000 pids free (pid_max) is skipped.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
SIZES=${STATUS_SIZES:-"100 1000 10000"}
TIMEOUT=${STATUS_TIMEOUT:-300}
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-status.XXXXXX
export SVC_SHM=$W/stamps ORCH_SOCKET=$W/ctl.sock
ulimit -n 65536 2>/dev/null || true
cc -O2 -static -o "$W/svc_stamp" "$HERE/svc_stamp.c" 2>/dev/null || cc -O2 -o "$W/svc_stamp" "$HERE/svc_stamp.c" || exit 1
cc -O2 -o "$W/probe" "$HERE/supervisors_probe.c" || exit 1
P=$W/probe
CTL=("$BUILD/orch" ctl --socket "$W/ctl.sock")
cpu() { read -r ns _ <"/proc/$SUP/schedstat" 2>/dev/null; echo "${ns:-0}"; }
put() { printf '%s %.3f %s\n' "$1" "$2" "$3"; }

# One `orch ctl ARGS...`: "wall_ms orch_cpu_ms client_cpu_ms".
one() {
  local c0 c1 t
  c0=$(cpu)
  t=$( { TIMEFORMAT='%3R %3U %3S'; time "${CTL[@]}" "$@" >/dev/null 2>&1; } 2>&1 )
  c1=$(cpu)
  awk -v t="$t" -v a="$c0" -v b="$c1" 'BEGIN { split(t, x, " "); printf "%.3f %.3f %.3f\n", x[1] * 1000, (b - a) / 1e6, (x[2] + x[3]) * 1000 }'
}
# NAME K [cold] ARGS...: K runs of `orch ctl ARGS`, the median by wall time.
measure() {
  local name=$1 k=$2 i r; shift 2
  local cold=0; [ "$1" = cold ] && { cold=1; shift; }
  r=$(for ((i = 0; i < k; i++)); do [ $cold = 1 ] && sleep 1.2; one "$@"; done | sort -g | sed -n "$(( (k + 1) / 2 ))p")
  read -r w c l <<<"$r"
  put "$name" "$w" ms; put "cpu_$name" "$c" ms; put "client_cpu_$name" "$l" ms
}
# Waits until orch is idle (less than 2 ms of CPU in 0.5 s; at most 60 s):
# the end of a large start, background reads.
settle() {
  local a b i
  for ((i = 0; i < 120; i++)); do
    a=$(cpu); sleep 0.5; b=$(cpu)
    [ $((b - a)) -lt 2000000 ] && return 0
  done
}
room() {
  local max tasks
  read -r max </proc/sys/kernel/pid_max
  read -r _ _ _ tasks _ </proc/loadavg
  tasks=${tasks#*/}
  if [ $((max - tasks - $1)) -lt 5000 ]; then
    echo "# status.sh: skipped $1: it would leave fewer than 5,000 of pid_max $max ($tasks in use)" >&2
    return 1
  fi
}

for n in $SIZES; do
  room "$n" || continue
  rm -f "$W/ctl.sock"*
  "$P" init "$SVC_SHM" || exit 1
  setsid "$BUILD/orch" run "$HERE/phases.lua" "$n" "$W/svc_stamp" </dev/null >/dev/null 2>/dev/null &
  SUP=$!
  if "$P" wait-started "$SVC_SHM" "$n" "$TIMEOUT"; then
    for _ in $(seq 200); do [ -S "$W/ctl.sock" ] && break; sleep 0.05; done
    settle
    r=$("$P" idle "$SUP" 3 svc_stamp); put "idle_wakeups_before_$n" "${r% *}" per_s
    measure "status_start_$n" 5 status
    settle
    # Warm: every figure read (one status, then its background reads), and
    # kept (accounting_max_age 3600): what a reply itself costs.
    "${CTL[@]}" status >/dev/null 2>&1
    settle
    "${CTL[@]}" eval 'require("orch.supervisor").configure { accounting_max_age = 3600 }' >/dev/null 2>&1
    measure "status_$n" 5 status
    measure "status_json_$n" 5 --json status
    "${CTL[@]}" eval 'require("orch.supervisor").configure { accounting_max_age = 1 }' >/dev/null 2>&1
    # The default (1 s): every figure is stale 1.2 s after the last status.
    measure "status_cold_$n" 3 cold status
    settle
    measure "status_one_$n" 5 status "svc$((n / 2))"
    sleep 1.2
    c0=$(cpu)
    "${CTL[@]}" status >/dev/null 2>&1
    # Until the background reads are over (at 10,000 under load they took
    # 8 s: 3 s after the status, the idle figure below still counted them).
    sleep 0.5
    settle
    awk -v a="$c0" -v b="$(cpu)" -v n="$n" 'BEGIN { printf "cpu_status_reads_%s %.3f ms\n", n, (b - a) / 1e6 }'
    r=$("$P" idle "$SUP" 3 svc_stamp); put "idle_wakeups_after_$n" "${r% *}" per_s
    v=$("${CTL[@]}" --json status 2>/dev/null | lua5.4 -e '
      local j = require("cjson").new(); j.decode_invalid_numbers(false)
      local ok, r = pcall(j.decode, io.read("a"))
      print(ok and type(r.services) == "table" and #r.services or 0)')
    put "status_json_valid_$n" "$v" services
  else
    echo "# status.sh: $n services did not all start within $TIMEOUT s" >&2
  fi
  bench_stop "$SUP" 30
  for _ in $(seq 50); do bench_sweep; [ -z "$(bench_mine)" ] && break; sleep 0.2; done
done
