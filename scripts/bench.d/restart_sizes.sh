#!/usr/bin/env bash
# scripts/bench.d/restart_sizes.sh BUILD_DIR: issue 15's "one service's
# restart takes the same time at 10,000 services as at 1", measured so that
# the sizes share the machine's load. One orch per size in RS_SIZES ("1 100
# 1000 10000"), all running at once (phases.lua, the configuration scale.sh
# measures: output captured, defaults but backoff = 0), each with its own
# stamps file and control socket. Then RS_ROUNDS (31) rounds; in each, the
# service in the middle of every fleet (svc<N/2>) is killed in turn, the
# sizes' order rotated from round to round, RS_GAP (0.5) seconds apart.
# One restart of each fleet comes first and is not counted (the first
# restart loads modules). Before each kill the script waits (10 s at most) until that fleet's orch
# used under 0.1 ms of CPU in 0.2 s, so that the window after the kill holds
# the restart and what follows from it, not the tail of the last one.
# Prints, for each size N ("name value unit"):
#   restart_sizes_<N>          ms  SIGKILL -> the new process's own start
#                                  stamp: median of the rounds
#   restart_sizes_p95_<N>      ms  the same, 95th percentile (nearest rank)
#   cpu_restart_sizes_<N>      ms  orch's CPU (/proc/PID/schedstat) over
#                                  the RS_GAP after the kill: median
#   cpu_restart_sizes_p95_<N>  ms  the same, 95th percentile
#   gc_cycles_restart_sizes_<N>    Lua collector cycles that ended during
#                                  the rounds in that orch (a finalizer
#                                  sentinel set through `orch ctl eval`)
#   heap_restart_sizes_<N>     KiB orch's Lua heap after the rounds
# and the largest size's figures over the smallest's (ratio_*).
# RS_VICTIM=first10: the victim is svc<round mod 10> instead (the services
# scale.sh's restart_<N> and restart_segments.sh kill); RS_VICTIM=spread:
# another service each round, spread over the fleet (at sizes above
# RS_ROUNDS each one's first restart since the start); RS_IDLE=0: no wait
# for an idle orch before a kill.
# RS_TRACE=DIR: each sample ("size latency_ms cpu_ms") in DIR/samples;
# with RS_PERF=1 also a perf record (-g, every orch, no children) of the
# rounds in DIR/rs.perf (perf report --sort pid,sym tells the orchs apart;
# the sampling adds to orch's CPU figures), with each orch's wait4
# returns, pipe2 and clone3 entries and switches, CLOCK_MONOTONIC).
# Needs 10,000 + ... processes; the 10,000 fleet takes 10-60 s to start.
# Every process started here carries a token and is killed at the end.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
SIZES=${RS_SIZES:-"1 100 1000 10000"}
ROUNDS=${RS_ROUNDS:-31}
GAP=${RS_GAP:-0.5}
TRACE=${RS_TRACE:-}
VICTIM=${RS_VICTIM:-middle}
IDLE=${RS_IDLE:-1}
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-rsizes.XXXXXX
ulimit -n 65536 2>/dev/null || true
cc -O2 -static -o "$W/svc_stamp" "$HERE/svc_stamp.c" 2>/dev/null || cc -O2 -o "$W/svc_stamp" "$HERE/svc_stamp.c" || exit 1
cc -O2 -o "$W/probe" "$HERE/supervisors_probe.c" || exit 1
P=$W/probe
declare -A SUP
cpu() { local ns; read -r ns _ <"/proc/$1/schedstat" 2>/dev/null; echo "${ns:-0}"; }
ctl() { local n=$1; shift; "$BUILD/orch" ctl --socket "$W/ctl.$n" "$@"; }
idle() {                 # pid: waits until it used under 0.1 ms in 0.2 s
  local a b k
  for ((k = 0; k < 50; k++)); do
    a=$(cpu "$1"); sleep 0.2; b=$(cpu "$1")
    [ $((b - a)) -lt 100000 ] && return 0
  done
  echo "# restart_sizes.sh: orch $1 not idle after 10 s" >&2
}
rank() {                 # p: the p-th percentile of stdin's numbers (nearest rank)
  sort -g | awk -v p="$1" '{ v[NR] = $1 } END { k = int(p / 100 * NR + 0.999999); if (k < 1) k = 1; print v[k] }'
}
# The largest fleet first: the others start while it does.
for n in $(printf '%s\n' $SIZES | sort -gr); do
  "$P" init "$W/stamps.$n"
  SVC_SHM=$W/stamps.$n ORCH_SOCKET=$W/ctl.$n setsid "$BUILD/orch" run "$HERE/phases.lua" "$n" "$W/svc_stamp" </dev/null >/dev/null 2>"$W/err.$n" &
  SUP[$n]=$!
done
for n in $SIZES; do
  "$P" wait-started "$W/stamps.$n" "$n" 600 || { echo "# restart_sizes.sh: $n services did not all start" >&2; exit 1; }
  for _ in $(seq 200); do [ -S "$W/ctl.$n" ] && break; sleep 0.05; done
  # The sentinel: a table whose finalizer counts a cycle and makes the next.
  ctl "$n" eval 'local c = { n = 0 }; package.loaded["restart_sizes.gc"] = c
    local function arm() setmetatable({}, { __gc = function() c.n = c.n + 1; arm() end }) end
    arm(); return true' >/dev/null || echo "# restart_sizes.sh: eval failed at $n" >&2
done
read -r -a order <<<"$SIZES"
# One restart each, not counted: the first loads the policy's modules.
for n in $SIZES; do idle "${SUP[$n]}"; "$P" restart1 "$W/stamps.$n" $((n / 2)) >/dev/null; done
: >"$W/samples"
perf=
[ -n "$TRACE" ] && { mkdir -p "$TRACE"; for n in $SIZES; do echo "$n ${SUP[$n]}"; done >"$TRACE/pids"; }
if [ -n "$TRACE" ] && [ -n "${RS_PERF:-}" ]; then
  pids=$(IFS=,; echo "${SUP[*]}")
  perf record -q -k CLOCK_MONOTONIC -F 5000 -g --no-inherit -p "$pids" -o "$TRACE/rs.perf" -e cpu-clock \
    -e syscalls:sys_exit_wait4 -e syscalls:sys_enter_pipe2 -e syscalls:sys_enter_clone3 -e sched:sched_switch >/dev/null 2>&1 &
  perf=$!; sleep 0.5
fi
for ((r = 0; r < ROUNDS; r++)); do
  for ((k = 0; k < ${#order[@]}; k++)); do
    n=${order[$(( (k + r) % ${#order[@]} ))]}
    [ "$IDLE" = 1 ] && idle "${SUP[$n]}"
    c0=$(cpu "${SUP[$n]}")
    case $VICTIM in
      first10) v=$((r % (n < 10 ? n : 10))) ;;
      spread) v=$(( (r * n / ROUNDS + n / 2 + 1) % n )) ;;
      *) v=$((n / 2)) ;;
    esac
    t=$("$P" restart1 "$W/stamps.$n" "$v")
    sleep "$GAP"
    echo "$n $t $(awk -v a="$c0" -v b="$(cpu "${SUP[$n]}")" 'BEGIN { printf "%.3f", (b - a) / 1e6 }')" >>"$W/samples"
  done
done
[ -n "$perf" ] && { kill -INT "$perf"; wait "$perf"; }
[ -n "$TRACE" ] && cp "$W/samples" "$TRACE/samples"
for n in $SIZES; do
  f() { awk -v n="$n" -v c="$1" '$1 == n { print $c }' "$W/samples" | rank "$2"; }
  printf 'restart_sizes_%s %s ms\n' "$n" "$(f 2 50)"
  printf 'restart_sizes_p95_%s %s ms\n' "$n" "$(f 2 95)"
  printf 'cpu_restart_sizes_%s %s ms\n' "$n" "$(f 3 50)"
  printf 'cpu_restart_sizes_p95_%s %s ms\n' "$n" "$(f 3 95)"
  printf 'gc_cycles_restart_sizes_%s %s cycles\n' "$n" "$(ctl "$n" eval 'return package.loaded["restart_sizes.gc"].n')"
  printf 'heap_restart_sizes_%s %.0f KiB\n' "$n" "$(ctl "$n" eval 'return collectgarbage("count")')"
done | tee "$W/out"
lo=${order[0]} hi=${order[${#order[@]} - 1]}
for m in restart_sizes restart_sizes_p95 cpu_restart_sizes cpu_restart_sizes_p95; do
  awk -v m="$m" -v lo="$lo" -v hi="$hi" '$1 == m "_" lo { a = $2 } $1 == m "_" hi { b = $2 }
    END { if (a > 0) printf "ratio_%s_%s_%s %.2f x\n", m, hi, lo, b / a }' "$W/out"
done
for n in $SIZES; do kill -TERM "${SUP[$n]}" 2>/dev/null; done
for n in $SIZES; do
  for _ in $(seq 600); do kill -0 "${SUP[$n]}" 2>/dev/null || break; sleep 0.1; done
done
