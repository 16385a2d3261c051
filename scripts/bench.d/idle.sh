#!/usr/bin/env bash
# idle.sh BUILD_DIR: an idle orch (a script waiting on a timer an hour away):
# private memory (USS), PSS and RSS from /proc/PID/smaps_rollup, and wakeups
# per second (voluntary context switches over 5 s; target 0).
set -euo pipefail
bin=$1/orch
"$bin" -e 'orch.timer.after(3600, function() end)' &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 1
kb() { awk -v k="$1:" '$1 == k { s += $2 } END { print s + 0 }' /proc/$pid/smaps_rollup; }
uss=$(( $(kb Private_Clean) + $(kb Private_Dirty) ))
echo "idle_uss_orch $uss KiB"
echo "idle_pss_orch $(kb Pss) KiB"
echo "idle_rss_orch $(kb Rss) KiB"
cs() { awk '/^voluntary_ctxt_switches|^nonvoluntary_ctxt_switches/ { s += $2 } END { print s }' /proc/$pid/status; }
a=$(cs); sleep 5; b=$(cs)
echo "idle_wakeups_orch $(( (b - a) / 5 )) per_s"
