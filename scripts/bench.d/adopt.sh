#!/usr/bin/env bash
# scripts/bench.d/adopt.sh BUILD [N]: what surviving `kill -9` costs and how
# fast the next orch takes over (doc/supervisor.md, "If orch is killed").
# N services (default 100) each print a line every second into a log file.
# Prints "name value unit" lines:
#   adopt_start_N_orch       ms from `orch run` to N services running (fresh)
#   adopt_after_kill9_N_orch ms from the next `orch run` to N adopted, running
#   adopt_record_sync_N_orch us of CPU for one sync of N (record written)
#   adopt_record_size_N_orch bytes of the state record
#   adopt_holder_rss_N_orch  KiB RSS of the fd holder holding N pipes
set -uo pipefail
build=${1:-build}
n=${2:-100}
orch=$(cd "$build" && pwd)/orch
dir=$(mktemp -d /tmp/orch-bench-adopt.XXXXXX)
sock=$dir/ctl.sock
cleanup() {
  [ -n "${pid:-}" ] && kill -KILL "$pid" 2>/dev/null
  pkill -KILL -f "$dir/svc" 2>/dev/null
  [ -n "${holder:-}" ] && kill -KILL "$holder" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
cat >"$dir/policy.lua" <<LUA
local sup = require "orch.supervisor"
sup.configure{ log = false }
for i = 1, $n do
  sup.service{ name = "s" .. i, log = { dir = "$dir" },
    cmd = { "sh", "-c", 'while :; do echo "\$\$ tick"; sleep 1; done', "$dir/svc" .. i } }
end
sup.run()
orch.task(function() orch.sleep(1e9) end)
LUA
now_ms() { date +%s%3N; }
running() {  # all N services running?
  [ "$("$orch" ctl --socket "$sock" --json status 2>/dev/null | grep -o '"state":"running"' | wc -l)" -eq "$n" ]
}
wait_running() {
  for _ in $(seq 1 3000); do running && return 0; sleep 0.01; done
  echo "# services never all running" >&2; exit 1
}
t0=$(now_ms)
"$orch" run --socket "$sock" "$dir/policy.lua" >/dev/null 2>"$dir/err1" & pid=$!
wait_running
t1=$(now_ms)
echo "adopt_start_${n}_orch $((t1 - t0)) ms"
# Wait until the holder holds every pipe (the record names it).
for _ in $(seq 1 500); do
  holder=$(grep -o '"holder":{[^}]*}' "$sock.state" 2>/dev/null | grep -o '"pid":[0-9]*' | grep -o '[0-9]*')
  [ -n "$holder" ] && [ "$(ls -l /proc/"$holder"/fd 2>/dev/null | grep -c pipe:)" -ge "$n" ] && break
  sleep 0.01
done
us=$("$orch" ctl --socket "$sock" eval '
  local p = require "orch.supervisor.persist"
  local S = require("orch.supervisor").instance("s1").sup
  local c0 = os.clock()
  for _ = 1, 200 do
    S.persist.written = nil   -- as after a change: the record is written
    p.sync(S)
  end
  return math.floor((os.clock() - c0) / 200 * 1e6)')
echo "adopt_record_sync_${n}_orch $us us"
echo "adopt_record_size_${n}_orch $(stat -c %s "$sock.state") bytes"
echo "adopt_holder_rss_${n}_orch $(awk '/VmRSS/ { print $2 }' /proc/"$holder"/status) KiB"
kill -KILL "$pid"; wait "$pid" 2>/dev/null
t0=$(now_ms)
"$orch" run --socket "$sock" "$dir/policy.lua" >/dev/null 2>"$dir/err2" & pid=$!
wait_running
t1=$(now_ms)
echo "adopt_after_kill9_${n}_orch $((t1 - t0)) ms"
"$orch" ctl --socket "$sock" shutdown >/dev/null
wait "$pid" 2>/dev/null
pid=
