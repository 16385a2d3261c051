#!/usr/bin/env bash
# scripts/bench.d/http.sh BUILD_DIR: issue 17's figures for the HTTP
# endpoint (orch.http). Prints "name value unit":
#   metrics_cpu_<N>_orch     ms   orch's CPU per /metrics scrape (thread
#                                 schedstat over HTTP_SCRAPES scrapes, 50),
#                                 N services (HTTP_SIZES, "500") running
#   metrics_time_<N>_orch    ms   a scrape's response time as curl sees it
#                                 (median)
#   metrics_bytes_<N>_orch   B    the exposition's size
#   http_idle_wakeups_orch   per_s  a supervisor with the endpoint on and
#                                 nobody asking: context switches over 5 s
#   http_pss_added_orch      KiB  PSS of a supervisor of 10 services with
#                                 the endpoint on, after one scrape of each
#                                 path, minus the same without it
# The services are `sleep 1000` (default options: cgroups when orch may
# make them). Every process started here carries a token and is killed at
# the end (and on interruption).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
SIZES=${HTTP_SIZES:-"500"}
SCRAPES=${HTTP_SCRAPES:-50}
. "$HERE/workdir.sh"
bench_workdir /tmp/orch-bench-http.XXXXXX
CURL="env -u LD_PRELOAD curl -s --max-time 60"

# start NAME N [--http]: an orch supervising N sleeps; sets SUP (pid) and PORT.
start() {
  local name=$1 n=$2; shift 2
  cat >"$W/$name.lua" <<LUA
local sup = require "orch.supervisor"
for i = 1, $n do sup.service { name = "s" .. i, cmd = { "sleep", "1000" } } end
sup.run()
LUA
  "$BUILD/orch" run --socket "$W/$name.sock" "$@" "$W/$name.lua" >/dev/null 2>"$W/$name.err" &
  SUP=$!
  local i
  for i in $(seq 600); do
    [ "$("$BUILD/orch" ctl --socket "$W/$name.sock" status 2>/dev/null | grep -c ' running ')" -ge "$n" ] && break
    sleep 0.1
  done
  PORT=$(sed -n 's/.*http: listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$W/$name.err" | head -1)
}
cpu() { read -r ns _ <"/proc/$SUP/schedstat" 2>/dev/null; echo "${ns:-0}"; }
pss() { awk '$1 == "Pss:" { print $2 }' "/proc/$1/smaps_rollup"; }

for n in $SIZES; do
  start "m$n" "$n" --http 127.0.0.1:0
  $CURL -o "$W/metrics.txt" "http://127.0.0.1:$PORT/metrics"      # warm: modules loaded
  a=$(cpu)
  : >"$W/times"
  for _ in $(seq "$SCRAPES"); do
    $CURL -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$PORT/metrics" >>"$W/times"
  done
  b=$(cpu)
  awk -v a="$a" -v b="$b" -v k="$SCRAPES" -v n="$n" 'BEGIN { printf "metrics_cpu_%d_orch %.3f ms\n", n, (b - a) / 1e6 / k }'
  sort -g "$W/times" | awk -v n="$n" '{ t[NR] = $1 } END { printf "metrics_time_%d_orch %.3f ms\n", n, t[int((NR + 1) / 2)] * 1000 }'
  echo "metrics_bytes_${n}_orch $(wc -c <"$W/metrics.txt") B"
  bench_stop "$SUP"
done

# Idle wakeups with the endpoint on and nobody scraping.
start idle 1 --http 127.0.0.1:0
sleep 1
cs() { awk '/^voluntary_ctxt_switches|^nonvoluntary_ctxt_switches/ { s += $2 } END { print s }' /proc/$SUP/status; }
a=$(cs); sleep 5; b=$(cs)
echo "http_idle_wakeups_orch $(( (b - a) / 5 )) per_s"
bench_stop "$SUP"

# PSS added by the endpoint (after one request of each path).
start off 10; off=$SUP
start on 10 --http 127.0.0.1:0; on=$SUP
for p in metrics healthz readyz status; do $CURL -o /dev/null "http://127.0.0.1:$PORT/$p"; done
sleep 0.5
echo "http_pss_added_orch $(( $(pss $on) - $(pss $off) )) KiB"
kill -TERM "$off" "$on"; bench_stop "$off"; bench_stop "$on"
