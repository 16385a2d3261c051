#!/usr/bin/env bash
# scripts/bench.d/start_ab.sh STARTS BUILD...: orch's own CPU for a start of
# 100, A/B (issue 15, tenth session). One orch of 100 svc_stamp per BUILD
# (phases.lua, the configuration a user gets), all running at once, then
# STARTS starts of each, alternating one by one (the order rotated each
# time), each after a stop (SIGUSR1) and 0.3 s, everything in SCHED_FIFO
# (chrt -f 10, as start_cpu.sh: needs root): the builds share the same
# minutes of a loaded machine, where start_cpu.sh runs each in minutes of
# its own. Prints per BUILD the median and quartiles of orch's CPU for a
# start (/proc/PID/schedstat, from the SIGUSR2 to the probe seeing all 100
# started), of the start's wall time, and the median of its 100 children's
# CPU 0.1 s after it (their way to the exec and their own start); first, as
# comments, the stops' wall time and orch's CPU for them (SIGUSR1 to all
# 100 exited).
set -u
N=${1:?STARTS}; shift
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-startab.XXXXXX
bench_progs || exit 1
kids_cpu() {             # the CPU (ns) of the supervisor's children so far
  local t=0 p ns
  for p in $(cat /proc/"$1"/task/*/children); do read -r ns _ <"/proc/$p/schedstat" && t=$((t + ns)); done
  echo "$t"
}
declare -A SUPOF
k=0
for b in "$@"; do
  export SVC_SHM=$W/stamps.$k ORCH_SOCKET=$W/ctl.$k.sock
  "$W/probe" init "$SVC_SHM"
  setsid chrt -f 10 "$b/orch" run "$HERE/phases.lua" 100 "$W/svc" </dev/null >/dev/null 2>"$W/err.$k" &
  SUPOF[$k]=$!
  "$W/probe" wait-started "$SVC_SHM" 100 120 || { echo "# start_ab.sh: $b did not start" >&2; exit 1; }
  k=$((k + 1))
done
sleep 0.5
n=$#
for i in $(seq "$N"); do
  for j in $(seq 0 $((n - 1))); do
    k=$(( (i + j) % n )); sup=${SUPOF[$k]}; export SVC_SHM=$W/stamps.$k
    read -r d0 _ <"/proc/$sup/schedstat"
    st=$("$W/probe" stoptime "$SVC_SHM" 100 signal "$sup" USR1)
    read -r d1 _ <"/proc/$sup/schedstat"
    echo "$k $st $(( (d1 - d0) / 1000 ))" >>"$W/stops"
    sleep 0.3
    read -r c0 _ <"/proc/$sup/schedstat"
    s=$(chrt -f 10 "$W/probe" starttime "$SVC_SHM" 100 signal "$sup" USR2)
    read -r c1 _ <"/proc/$sup/schedstat"
    sleep 0.1
    echo "$k $s $(( (c1 - c0) / 1000 )) $(( $(kids_cpu "$sup") / 1000 ))" >>"$W/out"
    sleep 0.2
  done
done
for k in "${!SUPOF[@]}"; do kill -TERM "${SUPOF[$k]}"; done
for k in "${!SUPOF[@]}"; do
  for _ in $(seq 100); do kill -0 "${SUPOF[$k]}" 2>/dev/null || break; sleep 0.05; done
done
echo "# stops (wall, orch's CPU):"
lua5.4 - "$W/stops" "$@" <<'LUA'
local v = {}
for line in io.lines(arg[1]) do
  local k, s, c = line:match("^(%d+) (%S+) (%d+)")
  if k and tonumber(s) then
    k = tonumber(k); v[k] = v[k] or { s = {}, c = {} }
    table.insert(v[k].s, tonumber(s)); table.insert(v[k].c, tonumber(c) / 1000)
  end
end
local function q(t, p) table.sort(t) return t[math.max(1, math.floor(p * #t + 0.5))] end
for k = 0, #arg - 2 do
  local x = v[k]
  if x then print(string.format("# stop %s n=%d wall median %.2f ms, cpu median %.2f ms (p25 %.2f p75 %.2f)", arg[k + 2], #x.s, q(x.s, 0.5), q(x.c, 0.5), q(x.c, 0.25), q(x.c, 0.75))) end
end
LUA
lua5.4 - "$W/out" "$@" <<'LUA'
local v = {}
for line in io.lines(arg[1]) do
  local k, s, c, kc = line:match("^(%d+) (%S+) (%d+) (%d+)")
  if k and tonumber(s) then
    k = tonumber(k)
    v[k] = v[k] or { s = {}, c = {}, k = {} }
    table.insert(v[k].s, tonumber(s)); table.insert(v[k].c, tonumber(c) / 1000); table.insert(v[k].k, tonumber(kc) / 1000)
  end
end
local function q(t, p)
  table.sort(t)
  return t[math.max(1, math.floor(p * #t + 0.5))]
end
for k = 0, #arg - 2 do
  local x = v[k]
  if x then
    print(string.format("%s n=%d cpu median %.2f ms (p25 %.2f p75 %.2f), wall median %.1f ms (p25 %.1f p75 %.1f), children's CPU median %.1f ms",
      arg[k + 2], #x.c, q(x.c, 0.5), q(x.c, 0.25), q(x.c, 0.75), q(x.s, 0.5), q(x.s, 0.25), q(x.s, 0.75), q(x.k, 0.5)))
  end
end
LUA
