#!/usr/bin/env bash
# scripts/bench.d/ping.sh BUILD [BUILD_B ...]: `orch ctl ping`, start-up to
# reply (issue 15), measured as stop.sh measures it (bash: `date`, `orch ctl
# ping`, `date`: bash's fork and the second date's start are in it), against
# one orch (the first BUILD's `orch run phases.lua PING_SERVICES svc_stamp`,
# 100, its services stopped by `orch ctl stop all` as stop.sh leaves them),
# with each BUILD's client in turn: PING_ROUNDS rounds (5), the order of the
# builds rotated each round, PING_N pings (20) a build a round. An A/B of
# two builds shares every minute of the machine's load. Prints "name value
# unit" (i: 1 for the first BUILD, 2 for the second, ...):
#   ctl_ping_wall_<i>   ms  median of every ping of that client
#   ctl_ping_cpu_<i>    ms  that client's own CPU (user + sys) a ping, median
#                           of the rounds' means (perf stat -r PING_N's
#                           task-clock; left out without perf)
#   ctl_ping_server_<i> ms  orch's (the server's) CPU a ping, from its
#                           /proc/PID/schedstat around that client's pings
# and, as comments, every round's figures with the load average.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 BUILD [BUILD_B ...]" >&2; exit 2; }
BUILDS=()
for b in "$@"; do BUILDS+=("$(cd "$b" && pwd)") || exit 2; done
ROUNDS=${PING_ROUNDS:-5} N=${PING_N:-20} SERVICES=${PING_SERVICES:-100}
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-ping.XXXXXX
export SVC_SHM=$W/stamps ORCH_SOCKET=$W/ctl.sock
bench_progs || exit 1
PERF=$(command -v perf || true)
[ -n "$PERF" ] && ! "$PERF" stat -e task-clock true >/dev/null 2>&1 && PERF=

"$W/probe" init "$SVC_SHM"
setsid "${BUILDS[0]}/orch" run "$HERE/phases.lua" "$SERVICES" "$W/svc" </dev/null >/dev/null 2>"$W/orch.err" &
SUP=$!
"$W/probe" wait-started "$SVC_SHM" "$SERVICES" 120 || { echo "# ping.sh: orch did not start" >&2; exit 1; }
for _ in $(seq 100); do [ -S "$W/ctl.sock" ] && break; sleep 0.05; done
"${BUILDS[0]}/orch" ctl --socket "$W/ctl.sock" stop all >/dev/null || { echo "# ping.sh: ctl stop all failed" >&2; exit 1; }
sleep 0.3
cpu_ns() { read -r ns _ <"/proc/$SUP/schedstat"; echo "$ns"; }
median() { sort -g | awk '{ v[NR] = $1 + 0 } END { if (NR) printf "%.3f\n", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

nb=${#BUILDS[@]}
for r in $(seq "$ROUNDS"); do
  for k in $(seq 0 $((nb - 1))); do
    i=$(( (k + r - 1) % nb + 1 ))
    CTL="${BUILDS[$((i - 1))]}/orch ctl --socket $W/ctl.sock"
    c0=$(cpu_ns)
    : >"$W/round"
    for _ in $(seq "$N"); do
      t0=$(date +%s%N); $CTL ping >/dev/null; t1=$(date +%s%N)
      echo "$(( (t1 - t0) / 1000 ))e-3" >>"$W/round"
    done
    cat "$W/round" >>"$W/wall.$i"
    server=$(awk -v a="$c0" -v b="$(cpu_ns)" -v n="$N" 'BEGIN { printf "%.3f", (b - a) / n / 1e6 }')
    echo "$server" >>"$W/server.$i"
    cpu=
    if [ -n "$PERF" ]; then
      # shellcheck disable=SC2086
      cpu=$("$PERF" stat -x, -e task-clock -r "$N" $CTL ping 2>&1 >/dev/null | awk -F, '/task-clock/ { printf "%.3f", $1 }')
      echo "$cpu" >>"$W/cpu.$i"
    fi
    echo "# round $r client $i (${BUILDS[$((i - 1))]}): wall median $(median <"$W/round") ms, cpu ${cpu:-?} ms, server ${server} ms, load $(cut -d' ' -f1-3 /proc/loadavg)"
  done
done
for i in $(seq "$nb"); do
  echo "ctl_ping_wall_$i $(median <"$W/wall.$i") ms"
  [ -s "$W/cpu.$i" ] && echo "ctl_ping_cpu_$i $(median <"$W/cpu.$i") ms"
  echo "ctl_ping_server_$i $(median <"$W/server.$i") ms"
done
kill -TERM "$SUP" 2>/dev/null
for _ in $(seq 100); do kill -0 "$SUP" 2>/dev/null || break; sleep 0.05; done
