#!/usr/bin/env bash
# scripts/bench.d/scale.sh BUILD_DIR: issue 15's scale curve. For each N in
# SCALE_SIZES ("100 1000 10000"), one orch supervising N copies of
# svc_stamp.c (scripts/bench.d/phases.lua: output captured, default options
# but backoff = 0, start_limit = false). Prints "name value unit":
#   start_cold_<N>_orch    ms   `orch run` launched -> all N running
#   stop_<N>_orch          ms   SIGUSR1 (sup.stop("all")) -> all N exited
#   start_<N>_orch         ms   SIGUSR2 (sup.start("all")) -> all N running
#   status_<N>_orch        ms   `orch ctl status`, median of 5
#   status_json_<N>_orch   ms   `orch ctl --json status`, median of 5
#   restart_<N>_orch       ms   SIGKILL of one service -> its replacement
#                               started (median of 10, services 0-9);
#                               cpu_restart_x10_<N>_orch: orch's CPU for the 10
#   pss_<N>_orch, pss_per_service_<N>_orch  KiB  orch alone (services excluded)
#   per_service_<op>_<N>   µs   the op's time divided by N
#   cpu_<op>_<N>_orch      ms   CPU time orch's thread spent in the op
#                               (/proc/PID/schedstat): unlike wall time it
#                               does not depend on the machine's load
# orch runs with its default Lua budget: sup.run() yields every 16
# launches (before, one sup.start per service never yielded, and 1,000
# services on a loaded machine ran past the 5 s budget: --lua-budget 0).
# Bounded: a size whose services do not all start within SCALE_TIMEOUT
# seconds (300) is abandoned. Every process started here carries a token
# and is killed at the end (and on interruption).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
SIZES=${SCALE_SIZES:-"100 1000 10000"}
TIMEOUT=${SCALE_TIMEOUT:-300}
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-scale.XXXXXX
export SVC_SHM=$W/stamps ORCH_SOCKET=$W/ctl.sock
ulimit -n 65536 2>/dev/null || true
cc -O2 -static -o "$W/svc_stamp" "$HERE/svc_stamp.c" 2>/dev/null || cc -O2 -o "$W/svc_stamp" "$HERE/svc_stamp.c" || exit 1
cc -O2 -o "$W/probe" "$HERE/supervisors_probe.c" || exit 1
P=$W/probe SVC=$W/svc_stamp
CTL="$BUILD/orch ctl --socket $W/ctl.sock"
ms_since() { echo "$(( ($(date +%s%N) - $1) / 1000 ))e-3"; }
median5() {               # command...: median wall time of 5 runs, ms
  local i t0 ts=()
  for i in 1 2 3 4 5; do t0=$(date +%s%N); "$@" >/dev/null 2>&1; ts+=("$(ms_since "$t0")"); done
  printf '%s\n' "${ts[@]}" | sort -g | sed -n 3p
}
cpu() { read -r ns _ <"/proc/$SUP/schedstat" 2>/dev/null; echo "${ns:-0}"; }
cpu_put() { awk -v a="$2" -v b="$(cpu)" 'BEGIN { printf "cpu_%s_orch %.3f ms\n", ARGV[1], (b - a) / 1e6 }' "$1"; }
put() { printf '%s %.3f %s\n' "$1" "$2" "$3"; }
per() { awk -v t="$2" -v n="$3" 'BEGIN { printf "per_service_%s %.1f us\n", ARGV[1], t * 1000 / n }' "$1"; }

for n in $SIZES; do
  echo "# scale.sh: $n services" >&2
  "$P" init "$SVC_SHM"; rm -f "$W/ctl.sock"
  t0=$(date +%s%N)
  setsid "$BUILD/orch" run "$HERE/phases.lua" "$n" "$SVC" </dev/null >/dev/null 2>/dev/null &
  SUP=$!
  if ! "$P" wait-started "$SVC_SHM" "$n" "$TIMEOUT"; then
    echo "# scale.sh: $n services did not all start within $TIMEOUT s" >&2
    kill -KILL "$SUP"; wait "$SUP" 2>/dev/null; bench_sweep; continue
  fi
  t=$(ms_since "$t0"); put "start_cold_${n}_orch" "$t" ms; per "start_cold_$n" "$t" "$n"; cpu_put "start_cold_$n" 0
  for _ in $(seq 200); do [ -S "$W/ctl.sock" ] && break; sleep 0.05; done
  sleep 1
  r=$("$P" pss "$SUP" svc_stamp)
  put "pss_${n}_orch" "${r% *}" KiB; put "pss_per_service_${n}_orch" "$(awk -v k="${r% *}" -v n="$n" 'BEGIN { print k / n }')" KiB
  c0=$(cpu)
  # shellcheck disable=SC2086
  t=$(median5 $CTL status); put "status_${n}_orch" "$t" ms; per "status_$n" "$t" "$n"; cpu_put "status_x5_$n" "$c0"
  c0=$(cpu)
  # shellcheck disable=SC2086
  t=$(median5 $CTL --json status); put "status_json_${n}_orch" "$t" ms; per "status_json_$n" "$t" "$n"; cpu_put "status_json_x5_$n" "$c0"
  c0=$(cpu)
  r=$("$P" latency "$SVC_SHM" 10 10 50); put "restart_${n}_orch" "${r% *}" ms
  sleep 0.2; cpu_put "restart_x10_$n" "$c0"
  c0=$(cpu)
  t=$("$P" stoptime "$SVC_SHM" "$n" signal "$SUP" USR1); put "stop_${n}_orch" "$t" ms; per "stop_$n" "$t" "$n"
  sleep 0.2; cpu_put "stop_$n" "$c0"
  sleep 0.5
  c0=$(cpu)
  t=$("$P" starttime "$SVC_SHM" "$n" signal "$SUP" USR2); put "start_${n}_orch" "$t" ms; per "start_$n" "$t" "$n"
  sleep 0.2; cpu_put "start_$n" "$c0"
  kill -TERM "$SUP" 2>/dev/null
  for _ in $(seq 600); do kill -0 "$SUP" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$SUP" 2>/dev/null; wait "$SUP" 2>/dev/null; bench_sweep
done
