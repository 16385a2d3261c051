#!/usr/bin/env bash
# scripts/bench.d/stop.sh BUILD_DIR: issue 15's stop/start/restart figures,
# orch in the configuration a user gets (scripts/bench.d/phases.lua: output
# captured, defaults except backoff = 0, start_limit = false) beside the C
# limit (minisup.c), alternating in one run, STOP_ROUNDS rounds (3); every
# figure is the median over the rounds (the start's: over its STOP_STARTS). Two C limits: _c (plain: posix_spawn,
# kill, nothing else) and _ccg, the C limit with the same containment as
# orch's (each service in its own cgroup: mkdir, clone3 CLONE_INTO_CGROUP,
# rmdir once stopped; kept across a restart as orch keeps it, or a fresh
# one per run with STOP_CCG=fresh), where a writable cgroup v2 hierarchy
# is (root). Prints "name value unit":
#   restart_latency_{median,p95}_<impl>  ms  SIGKILL -> replacement started
#                                            (20 services, 20 kills a round)
#   stop_term_100_<impl>   ms  SIGTERM to the supervisor -> all 100 exited
#                          (STOP_TERMS of them a round, default 1: with 3,
#                          the median is over 3 x STOP_ROUNDS stops)
#   stop_ctl_100_<impl>    ms  `orch ctl stop all` (C: SIGUSR1) -> all exited
#   start_100_<impl>       ms  SIGUSR2 -> all 100 started again: one
#                          supervisor of each kind running at once, STOP_STARTS
#                          starts each (5 x STOP_ROUNDS), alternating one by
#                          one, each after a stop (SIGUSR1)
#   start_ctl_100_orch     ms  `orch ctl start all` -> all 100 started
#   cpu_start_100_<impl>, cpu_stop_100_orch  ms  the supervisor's own CPU
#                          time (/proc/PID/schedstat) for a start of 100
#                          (SIGUSR2) and orch's for a stop of 100 (SIGUSR1):
#                          unlike wall times, hardly moved by the load
#   cpu_restart_orch       ms  orch's own CPU per restart (the 20 of the
#                          restart latency run)
#   ctl_ping_orch          ms  `orch ctl ping` alone, median of 20
#   <name>_per_c_orch, <name>_per_ccg_orch   x   orch's median over each C
#                                            limit's (the ratios)
#   cpu_stop_ctl_100_orch  ms  orch's CPU for the `orch ctl stop all`
# Then, as comments ("# ..."), each round's figure of the stops (with fewer
# than 5 rounds), the spread of every figure of 5 samples or
# more (min, quartiles, max) and of the start's ratio: start by start (orch's
# over the C limit's of the same alternation), and the ratio of the medians
# of each half and each third of the starts (what a shorter run would say).
# With STOP_PHASES=FILE orch's state changes are stamped into FILE (see
# phases.lua). STOP_PARTS (default "restart stop start") picks the parts:
# "stop" alone measures the two stops of 100 (and the ctl ping), "start"
# alone the alternating starts. Every process started carries a token and is
# killed at the end.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
ROUNDS=${STOP_ROUNDS:-3}
STARTS=${STOP_STARTS:-$((ROUNDS * 5))}
TERMS=${STOP_TERMS:-1}     # stops via SIGTERM a round (each after its own start)
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-stop.XXXXXX
export SVC_SHM=$W/stamps ORCH_SOCKET=$W/ctl.sock
cc -O2 -static -o "$W/svc_stamp" "$HERE/svc_stamp.c" 2>/dev/null || cc -O2 -o "$W/svc_stamp" "$HERE/svc_stamp.c" || exit 1
cc -O2 -o "$W/minisup" "$HERE/minisup.c" && cc -O2 -o "$W/probe" "$HERE/supervisors_probe.c" || exit 1
P=$W/probe SVC=$W/svc_stamp SUP= OUT=$W/values
# The C limit with containment: a cgroup beside where orch makes its own
# (below this shell's v2 cgroup), if this user may make one there.
CCG=$(bench_ccg)
IMPLS="c${CCG:+ ccg} orch"
CTL="$BUILD/orch ctl --socket $W/ctl.sock"

launch() {                 # impl n
  "$P" init "$SVC_SHM"
  rm -f "$W/ctl.sock"
  if [ "$1" = c ]; then setsid "$W/minisup" "$2" "$SVC" </dev/null >/dev/null 2>&1 &
  elif [ "$1" = ccg ]; then
    MINISUP_CGROUP=$CCG MINISUP_CGROUP_FRESH=$([ "${STOP_CCG:-}" = fresh ] && echo 1) \
      setsid "$W/minisup" "$2" "$SVC" </dev/null >/dev/null 2>&1 &
  else setsid "$BUILD/orch" run "$HERE/phases.lua" "$2" "$SVC" ${STOP_PHASES:+"$STOP_PHASES"} </dev/null >/dev/null 2>"$W/orch.err" &
  fi
  SUP=$!
  "$P" wait-started "$SVC_SHM" "$2" 120 || { echo "# stop.sh: $1 did not start" >&2; return 1; }
  if [ "$1" = orch ]; then for _ in $(seq 100); do [ -S "$W/ctl.sock" ] && break; sleep 0.05; done; fi
}
finish() {
  bench_stop "$SUP"; bench_sweep; SUP=
  # What a killed minisup left of its cgroups.
  bench_ccg_rm "$CCG"
}
put() { echo "$1 $2" >>"$OUT"; }
cpu_ns() { read -r ns _ <"/proc/$SUP/schedstat"; echo "$ns"; }   # orch's CPU so far

PARTS=" ${STOP_PARTS:-restart stop start} "
part() { [[ $PARTS == *" $1 "* ]]; }

round() {                  # impl
  local impl=$1 r
  if part restart; then
    launch "$impl" 20 || return
    sleep 0.5
    local c0
    [ "$impl" = orch ] && c0=$(cpu_ns)
    r=$("$P" latency "$SVC_SHM" 20 20 50)
    put "restart_latency_median_$impl" "${r% *}"; put "restart_latency_p95_$impl" "${r#* }"
    [ "$impl" = orch ] && put cpu_restart_orch "$(( ($(cpu_ns) - c0) / 20 / 1000 ))e-3"
    finish
  fi
  part stop || return 0
  local k
  for k in $(seq "$TERMS"); do
    launch "$impl" 100 || return
    sleep 0.5
    put "stop_term_100_$impl" "$("$P" stoptime "$SVC_SHM" 100 signal "$SUP" TERM)"
    finish
  done
  launch "$impl" 100 || return
  sleep 0.5
  if [ "$impl" != orch ]; then
    put "stop_ctl_100_$impl" "$("$P" stoptime "$SVC_SHM" 100 signal "$SUP" USR1)"
  else
    local c0 i t0 t1
    c0=$(cpu_ns)
    # shellcheck disable=SC2086
    put stop_ctl_100_orch "$("$P" stoptime "$SVC_SHM" 100 exec $CTL stop all)"
    put cpu_stop_ctl_100_orch "$(( ($(cpu_ns) - c0) / 1000 ))e-3"
    sleep 0.3
    for i in $(seq 20); do
      t0=$(date +%s%N); $CTL ping >/dev/null; t1=$(date +%s%N)
      put ctl_ping_orch "$(( (t1 - t0) / 1000 ))e-3"
    done
  fi
  finish
}

# The start of 100: one supervisor of each kind, all running at once (each
# its own stamps file), and STARTS starts of each, alternating one by one
# (the order rotated each time), each after a stop (SIGUSR1) and 0.3 s: the
# implementations share the same minutes of the machine's load. Each
# sample also goes to $W/starts ("I IMPL WALL CPU": the supervisor's CPU
# for the start), from which the ratios' spread is printed.
starts() {
  local impl i k n sup c0 c1 s
  declare -A SUPOF
  for impl in $IMPLS; do
    export SVC_SHM=$W/stamps.$impl
    launch "$impl" 100 || return
    SUPOF[$impl]=$SUP
  done
  sleep 0.5
  # shellcheck disable=SC2206
  local list=($IMPLS)
  n=${#list[@]}
  for i in $(seq "$STARTS"); do
    for k in $(seq 0 $((n - 1))); do
      impl=${list[$(( (i + k) % n ))]}
      sup=${SUPOF[$impl]}
      export SVC_SHM=$W/stamps.$impl
      read -r c0 _ <"/proc/$sup/schedstat"
      "$P" stoptime "$SVC_SHM" 100 signal "$sup" USR1 >/dev/null
      read -r c1 _ <"/proc/$sup/schedstat"
      [ "$impl" = orch ] && put cpu_stop_100_orch "$(( (c1 - c0) / 1000 ))e-3"
      sleep 0.3
      read -r c0 _ <"/proc/$sup/schedstat"
      s=$("$P" starttime "$SVC_SHM" 100 signal "$sup" USR2)
      read -r c1 _ <"/proc/$sup/schedstat"
      put "start_100_$impl" "$s"
      put "cpu_start_100_$impl" "$(( (c1 - c0) / 1000 ))e-3"
      echo "$i $impl $s $(( (c1 - c0) / 1000 ))e-3" >>"$W/starts"
      sleep 0.2
    done
  done
  # `orch ctl start all`, a few times, after the alternation.
  export SVC_SHM=$W/stamps.orch
  SUP=${SUPOF[orch]}
  for i in 1 2 3; do
    "$P" stoptime "$SVC_SHM" 100 signal "$SUP" USR1 >/dev/null
    sleep 0.3
    # shellcheck disable=SC2086
    put start_ctl_100_orch "$("$P" starttime "$SVC_SHM" 100 exec $CTL start all)"
  done
  for impl in $IMPLS; do kill -TERM "${SUPOF[$impl]}" 2>/dev/null; done
  for impl in $IMPLS; do
    for _ in $(seq 100); do kill -0 "${SUPOF[$impl]}" 2>/dev/null || break; sleep 0.05; done
  done
  SUP=${SUPOF[orch]}
  finish
  export SVC_SHM=$W/stamps
}

for _ in $(seq "$ROUNDS"); do for i in $IMPLS; do round "$i"; done; done
part start && starts
lua5.4 - "$OUT" "$W/starts" <<'LUA'
local v, order, med = {}, {}, {}
for line in io.lines(arg[1]) do
  local k, x = line:match("^(%S+) (%S+)$")
  x = tonumber(x)
  if x then
    if not v[k] then v[k] = {}; order[#order + 1] = k end
    table.insert(v[k], x)
  end
end
local function q(t, p)   -- t sorted; the p-quantile, interpolated
  local h = (#t - 1) * p + 1
  local lo = math.floor(h)
  return lo >= #t and t[#t] or t[lo] + (h - lo) * (t[lo + 1] - t[lo])
end
local function sorted(t)
  local c = table.move(t, 1, #t, 1, {})
  table.sort(c)
  return c
end
for _, k in ipairs(order) do
  local t = sorted(v[k])
  med[k] = q(t, 0.5)
  print(string.format("%s %.3f ms", k, med[k]))
end
for _, k in ipairs(order) do
  local bench = k:match("^(.*)_orch$")
  for _, impl in ipairs({ "c", "ccg" }) do
    local base = bench and med[bench .. "_" .. impl]
    if base and base > 0 then print(string.format("%s_per_%s_orch %.2f x", bench, impl, med[k] / base)) end
  end
end
-- The spread: every figure of 5 samples or more, and the start's ratios
-- start by start (orch's over the C limit's of the same alternation) and by
-- halves and thirds of the run (what shorter runs would have said).
for _, k in ipairs(order) do
  local t = sorted(v[k])
  if #t >= 5 then
    print(string.format("# %s n=%d min %.3f p25 %.3f median %.3f p75 %.3f max %.3f", k, #t,
      t[1], q(t, 0.25), q(t, 0.5), q(t, 0.75), t[#t]))
  elseif #t > 1 and k:match("^stop_") then
    -- Fewer: each round's, in order (the stops' figures).
    local r = {}
    for i, x in ipairs(v[k]) do r[i] = string.format("%.3f", x) end
    print(string.format("# %s rounds %s", k, table.concat(r, " ")))
  end
end
local f = io.open(arg[2])
if not f then return end
local by, iters = {}, 0
for line in f:lines() do
  local i, impl, s = line:match("^(%d+) (%S+) (%S+)")
  i, s = tonumber(i), tonumber(s)
  if i and s then
    by[impl] = by[impl] or {}
    by[impl][i] = s
    if i > iters then iters = i end
  end
end
f:close()
local function median_of(impl, a, b)
  local t = {}
  for i = a, b do t[#t + 1] = by[impl][i] end
  return #t > 0 and q(sorted(t), 0.5) or nil
end
for _, base in ipairs({ "c", "ccg" }) do
  if by.orch and by[base] then
    local r = {}
    for i = 1, iters do
      if by.orch[i] and by[base][i] then r[#r + 1] = by.orch[i] / by[base][i] end
    end
    if #r > 0 then
      r = sorted(r)
      print(string.format("# start_100_per_%s_orch start by start: n=%d min %.2f p25 %.2f median %.2f p75 %.2f max %.2f",
        base, #r, r[1], q(r, 0.25), q(r, 0.5), q(r, 0.75), r[#r]))
    end
    for _, parts in ipairs({ 2, 3 }) do
      if iters >= 2 * parts then
        local out = {}
        for p = 1, parts do
          local a, b = (p - 1) * iters // parts + 1, p * iters // parts
          local o, c = median_of("orch", a, b), median_of(base, a, b)
          out[#out + 1] = (o and c) and string.format("%.2f", o / c) or "-"
        end
        print(string.format("# start_100_per_%s_orch by %s of the run: %s", base,
          parts == 2 and "halves" or "thirds", table.concat(out, " ")))
      end
    end
  end
end
LUA
