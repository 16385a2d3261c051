#!/usr/bin/env bash
# scripts/bench.d/scale.sh BUILD_DIR: issue 15's scale curve. For each N in
# SCALE_SIZES ("100 1000 10000"), one orch supervising N copies of
# svc_stamp.c (scripts/bench.d/phases.lua: output captured, default options
# but backoff = 0, start_limit = false), then the same fleet under runit
# and s6 (SCALE_ONLY, "orch runit s6"). Prints "name value unit":
#   start_cold_<N>_<impl>  ms   supervisor launched -> all N running
#   stop_<N>_<impl>        ms   SIGUSR1 (sup.stop("all")) / a `d` written to
#                               every supervise/control -> all N exited
#   stop_settled_<N>_orch  ms   the same SIGUSR1 -> orch idle again (its
#                               bookkeeping of the exits done: what
#                               `orch ctl stop all` waits for);
#                               cpu_stop_total_<N>_orch: orch's CPU in it
#                               (cpu_stop_<N>_orch: until 0.2 s after the
#                               last exit, which leaves out a part that
#                               depends on how the CPUs were shared)
#   start_<N>_<impl>       ms   SIGUSR2 (sup.start("all")) / `u` -> all N running
#   status_<N>_<impl>      ms   the status of all N, median of 5 in a row:
#                               `orch ctl status`, `sv status DIR...` (one
#                               process), `s6-svstat DIR` once per service
#   status_cold_<N>_orch   ms   `orch ctl status` 1.2 s after the last one
#                               (rss and cpu read again: accounting_max_age
#                               is 1 s), median of 3
#   status_json_<N>_orch   ms   `orch ctl --json status`, median of 5
#   reload_<N>_orch        ms   `orch ctl reload` of the same script with one
#                               service (svc<N/2>) changed, until the reply
#                               (that service restarted and running);
#                               reload_restarted_<N>_orch, reload_kept_<N>_orch:
#                               how many the reply lists
#   restart_<N>_<impl>     ms   SIGKILL of one service -> its replacement
#                               started (median of 10, services 0-9)
#   restart_one_<N>_orch   ms   SIGKILL of the service in the middle
#                               (svc<N/2>) alone, once orch is idle ->
#                               running again, median of SCALE_RESTARTS (5);
#                               cpu_restart_one_<N>_orch: orch's CPU over
#                               the second after each kill (the restart and
#                               its state record sync), median; _p95_: the
#                               95th percentiles (see restart_one below)
#   pss_<N>_<impl>, pss_per_service_<N>_<impl>  KiB  the supervisor's
#                               processes (runsv, s6-supervise included),
#                               services excluded
#   idle_wakeups_<N>_<impl>     per_s  over SCALE_IDLE_SECONDS (5)
#   wait_walk_<N>_kernel   us   after orch's fleet: one wait4(-1, WNOHANG)
#                               of a process with N live children
#                               (waitwalk.c, median of 51): the kernel's
#                               part of each SIGCHLD orch's reaper answers
#   per_service_<op>_<N>_<impl> µs  the op's time divided by N
#   cpu_<op>_<N>_orch      ms   CPU time orch's thread spent in the op
#                               (/proc/PID/schedstat): unlike wall time it
#                               does not depend on the machine's load
# runit: runsvdir takes at most 1,000 service directories, so N > 1,000
# runs ceil(N / 1000) of them (under one sh, counted in the PSS). s6:
# s6-svscan -c N+100. Both without loggers: one supervise process per
# service (orch captures every service's output through a pipe). A size
# that would leave fewer than 5,000 pids free (pid_max) is skipped: at
# 10,000 services runit and s6 need 20,000 processes, and a machine out of
# pids fails every fork (other jobs' too).
# orch runs with its default Lua budget: sup.run() yields every 16
# launches (before, one sup.start per service never yielded, and 1,000
# services on a loaded machine ran past the 5 s budget: --lua-budget 0).
# SCALE_TRACE=DIR: see mark() below (CPU samples, phases, perf of the stop).
# SCALE_STEPS=restart: orch's fleet only starts, makes restart_one (with
# SCALE_RESTARTS kills, 5 by default) and stops: the restart at 10,000
# measured in a few minutes (issue 15, sixth session).
# Bounded: a size whose services do not all start within SCALE_TIMEOUT
# seconds (300) is abandoned. Every process started here carries a token
# and is killed at the end (and on interruption).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
SIZES=${SCALE_SIZES:-"100 1000 10000"}
TIMEOUT=${SCALE_TIMEOUT:-300}
IDLE=${SCALE_IDLE_SECONDS:-5}
ONLY=${SCALE_ONLY:-"orch runit s6"}
STEPS=${SCALE_STEPS:-all}
RESTARTS=${SCALE_RESTARTS:-5}
want() { [[ " $ONLY " == *" $1 "* ]]; }
. "$ROOT/scripts/lib.sh"
need=()
want runit && need+=(runit)
want s6 && need+=(s6)
if [ ${#need[@]} -gt 0 ]; then ensure_deps "${need[@]}" >&2 || { echo "scale.sh: cannot install ${need[*]}" >&2; exit 1; }; fi
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-scale.XXXXXX
export SVC_SHM=$W/stamps ORCH_SOCKET=$W/ctl.sock ORCH_BENCH_VARIANT=$W/variant
ulimit -n 65536 2>/dev/null || true
cc -O2 -static -o "$W/svc_stamp" "$HERE/svc_stamp.c" 2>/dev/null || cc -O2 -o "$W/svc_stamp" "$HERE/svc_stamp.c" || exit 1
cc -O2 -o "$W/probe" "$HERE/supervisors_probe.c" || exit 1
cc -O2 -o "$W/waitwalk" "$HERE/waitwalk.c" || exit 1
P=$W/probe SVC=$W/svc_stamp
CTL="$BUILD/orch ctl --socket $W/ctl.sock"
ms_since() { echo "$(( ($(date +%s%N) - $1) / 1000 ))e-3"; }
median() {                # K command...: median wall time of K runs, ms
  local k=$1 i t0 ts=(); shift
  for ((i = 0; i < k; i++)); do t0=$(date +%s%N); "$@" >/dev/null 2>&1; ts+=("$(ms_since "$t0")"); done
  printf '%s\n' "${ts[@]}" | sort -g | sed -n "$(( (k + 1) / 2 ))p"
}
cold() { sleep 1.2; "$@"; }
# After a stop: orch's CPU 0.2 s after the last exit (STOP_CPU_AT), and
# the ms from T0 (date +%s%N) to orch's last 20 ms with CPU used (over 0.2
# ms) before 0.5 s without (its bookkeeping of the exits goes on after the
# last process exited; at most 120 s). Prints "ms cpu_at_0.2s".
settled() {
  local a b now quiet=0 last start at02=
  start=$(date +%s%N); last=$start; a=$(cpu)
  while [ "$quiet" -lt 25 ] && [ $(( ${EPOCHREALTIME/./} - start / 1000 )) -lt 120000000 ]; do
    sleep 0.02; b=$(cpu); now=${EPOCHREALTIME/./}
    [ -z "$at02" ] && [ $((now - start / 1000)) -ge 200000 ] && at02=$b
    if [ $((b - a)) -gt 200000 ]; then last=$((now * 1000)); quiet=0; else quiet=$((quiet + 1)); fi
    a=$b
  done
  echo "$(( (last - $1) / 1000 ))e-3 ${at02:-$b}"
}
# SCALE_TRACE=DIR: orch's CPU every 0.1 s (DIR/cpu_<N>: "seconds ns"), each
# step's start (DIR/marks_<N>), orch's phases (phases.lua's file,
# DIR/phases_<N>) and a perf record of orch over each stop of all
# (DIR/stop_<N>.perf).
TRACE=${SCALE_TRACE:-}
mark() { [ -n "$TRACE" ] && echo "$(date +%s.%N) $1" >>"$TRACE/marks_$N_NOW"; return 0; }
sampler() {              # pid file
  local ns
  while read -r ns _ 2>/dev/null <"/proc/$1/schedstat"; do echo "$(date +%s.%N) $ns"; sleep 0.1; done >"$2"
}
cpu() { read -r ns _ <"/proc/$SUP/schedstat" 2>/dev/null; echo "${ns:-0}"; }
cpu_put() { awk -v a="$2" -v b="$(cpu)" 'BEGIN { printf "cpu_%s_orch %.3f ms\n", ARGV[1], (b - a) / 1e6 }' "$1"; }
put() { printf '%s %.3f %s\n' "$1" "$2" "$3"; }
per() { awk -v t="$2" -v n="$3" 'BEGIN { printf "per_service_%s %.1f us\n", ARGV[1], t * 1000 / n }' "$1"; }

# The measures every supervisor gets, once its N services run: PSS, idle
# wake-ups, the status of all (STATUS...: the command), a restart, stop
# all and start all (STOP, START: the probe's triggers).
common() {               # impl n
  local impl=$1 n=$2 r t
  sleep 1
  r=$("$P" pss "$SUP" svc_stamp)
  put "pss_${n}_$impl" "${r% *}" KiB; put "pss_per_service_${n}_$impl" "$(awk -v k="${r% *}" -v n="$n" 'BEGIN { print k / n }')" KiB
  r=$("$P" idle "$SUP" "$IDLE" svc_stamp); put "idle_wakeups_${n}_$impl" "${r% *}" per_s
  t=$(median 5 "${STATUS[@]}"); put "status_${n}_$impl" "$t" ms; per "status_${n}_$impl" "$t" "$n"
}
moves() {                # impl n: restart, stop all, start all
  local impl=$1 n=$2 r t c0 t0
  c0=$(cpu)
  r=$("$P" latency "$SVC_SHM" 10 10 50); put "restart_${n}_$impl" "${r% *}" ms
  [ "$impl" = orch ] && { sleep 0.2; cpu_put "restart_x10_$n" "$c0"; }
  c0=$(cpu)
  mark stop
  local perf=
  if [ -n "$TRACE" ] && [ "$impl" = orch ]; then
    perf record -g -p "$SUP" -o "$TRACE/stop_$n.perf" >/dev/null 2>&1 &
    perf=$!; sleep 0.5
  fi
  t0=$(date +%s%N)
  # shellcheck disable=SC2086
  t=$("$P" stoptime "$SVC_SHM" "$n" $STOP); put "stop_${n}_$impl" "$t" ms; per "stop_${n}_$impl" "$t" "$n"
  [ -n "$perf" ] && { kill -INT "$perf"; wait "$perf"; }
  mark stopped
  if [ "$impl" = orch ]; then
    r=$(settled "$t0")
    awk -v a="$c0" -v b="${r#* }" -v n="$n" 'BEGIN { printf "cpu_stop_%s_orch %.3f ms\n", n, (b - a) / 1e6 }'
    put "stop_settled_${n}_orch" "${r% *}" ms; cpu_put "stop_total_$n" "$c0"
  fi
  sleep 0.5
  mark start
  c0=$(cpu)
  # shellcheck disable=SC2086
  t=$("$P" starttime "$SVC_SHM" "$n" $START); put "start_${n}_$impl" "$t" ms; per "start_${n}_$impl" "$t" "$n"
  [ "$impl" = orch ] && { sleep 0.2; cpu_put "start_$n" "$c0"; }
}
launched() {             # impl n t0: waits until all N run; 1 if they do not
  if ! "$P" wait-started "$SVC_SHM" "$2" "$TIMEOUT"; then
    echo "# scale.sh: $1: $2 services did not all start within $TIMEOUT s" >&2
    return 1
  fi
  local t; t=$(ms_since "$3"); put "start_cold_${2}_$1" "$t" ms; per "start_cold_${2}_$1" "$t" "$2"
}
finish() {               # HOW: a signal for $SUP, or cmd:COMMAND
  bench_stop "$SUP" 30 "$1"
  # Every process of this fleet is gone before the next one starts.
  for _ in $(seq 50); do bench_sweep; [ -z "$(bench_mine)" ] && break; sleep 0.2; done
}
# Whether PER * N more processes fit under the kernel's pid_max with 5,000
# to spare for everything else on the machine (threads count too): runit
# and s6 need two processes a service, 20,000 at N = 10,000.
room() {                 # per n
  local max tasks
  read -r max </proc/sys/kernel/pid_max
  read -r _ _ _ tasks _ </proc/loadavg
  tasks=${tasks#*/}
  if [ $((max - tasks - $1 * $2)) -lt 5000 ]; then
    echo "# scale.sh: skipped: $(($1 * $2)) more processes would leave fewer than 5,000 of pid_max $max ($tasks in use)" >&2
    return 1
  fi
}

# One restart alone in the middle of the fleet: its latency, and what it
# costs orch (the restart, and the state record's sync after it).
# restart_one_<N>_orch and cpu_restart_one_<N>_orch are medians;
# restart_one_p95_<N>_orch and cpu_restart_one_p95_<N>_orch the 95th
# percentiles (nearest rank) of the SCALE_RESTARTS samples. Each kill comes
# SCALE_RESTART_GAP seconds (1) after the last, and orch's CPU is read over
# that gap. Before each kill the script waits (30 s at most) until orch
# used under 0.1 ms of CPU in 0.2 s: the background reads of the statuses
# before (at most a tenth of orch's time, for 4-9 s at 10,000) are not
# counted as the restart's. restart_one_waited_<N>_orch: the longest such
# wait (s).
GAP=${SCALE_RESTART_GAP:-1}
quiet() {                # prints the seconds waited until orch is idle
  local a b k
  for ((k = 0; k < 150; k++)); do
    a=$(cpu); sleep 0.2; b=$(cpu)
    [ $((b - a)) -lt 100000 ] && break
  done
  awk -v k="$k" 'BEGIN { printf "%.1f", k * 0.2 }'
}
rank() {                 # p: the p-th percentile of stdin's numbers (nearest rank)
  sort -g | awk -v p="$1" '{ v[NR] = $1 } END { k = int(p / 100 * NR + 0.999999); if (k < 1) k = 1; print v[k] }'
}
restart_one() {          # n
  local k c0 ts=() cs=() ws=()
  sleep 1
  for ((k = 0; k < RESTARTS; k++)); do
    ws+=("$(quiet)")
    c0=$(cpu)
    ts+=("$("$P" restart1 "$SVC_SHM" $(($1 / 2)))")
    sleep "$GAP"
    cs+=("$(awk -v a="$c0" -v b="$(cpu)" 'BEGIN { printf "%.3f", (b - a) / 1e6 }')")
  done
  [ -n "$TRACE" ] && { printf '%s\n' "${ts[*]}" "${cs[*]}" "${ws[*]}" >"$TRACE/restart_one_$1"; }
  put "restart_one_${1}_orch" "$(printf '%s\n' "${ts[@]}" | rank 50)" ms
  put "restart_one_p95_${1}_orch" "$(printf '%s\n' "${ts[@]}" | rank 95)" ms
  put "cpu_restart_one_${1}_orch" "$(printf '%s\n' "${cs[@]}" | rank 50)" ms
  put "cpu_restart_one_p95_${1}_orch" "$(printf '%s\n' "${cs[@]}" | rank 95)" ms
  put "restart_one_waited_${1}_orch" "$(printf '%s\n' "${ws[@]}" | rank 100)" s
}

scale_orch() {
  local n=$1 t r c0
  rm -f "$W/ctl.sock" "$W/variant"
  local t0; t0=$(date +%s%N)
  N_NOW=$n
  setsid "$BUILD/orch" run "$HERE/phases.lua" "$n" "$SVC" ${TRACE:+"$TRACE/phases_$n"} </dev/null >/dev/null 2>/dev/null &
  SUP=$!
  [ -n "$TRACE" ] && { sampler "$SUP" "$TRACE/cpu_$n" & }
  if ! launched orch "$n" "$t0"; then finish KILL; return; fi
  cpu_put "start_cold_$n" 0
  if [ "$STEPS" = restart ]; then restart_one "$n"; finish TERM; return; fi
  for _ in $(seq 200); do [ -S "$W/ctl.sock" ] && break; sleep 0.05; done
  # shellcheck disable=SC2206
  STATUS=($CTL status)
  mark common
  c0=$(cpu); common orch "$n"; cpu_put "status_x5_$n" "$c0"
  mark status_cold
  c0=$(cpu)
  t=$(median 3 cold "${STATUS[@]}"); put "status_cold_${n}_orch" "$(awk -v t="$t" 'BEGIN { print t - 1200 }')" ms
  cpu_put "status_cold_x3_$n" "$c0"
  mark status_json
  c0=$(cpu)
  # shellcheck disable=SC2086
  t=$(median 5 $CTL --json status); put "status_json_${n}_orch" "$t" ms; per "status_json_${n}_orch" "$t" "$n"
  cpu_put "status_json_x5_$n" "$c0"
  # One service changed (its environment), the others as they were.
  echo "$((n / 2)) 1" >"$W/variant"
  mark reload
  c0=$(cpu); t0=$(date +%s%N)
  $CTL reload >"$W/reload.out" 2>&1
  t=$(ms_since "$t0"); put "reload_${n}_orch" "$t" ms; cpu_put "reload_$n" "$c0"
  put "reload_restarted_${n}_orch" "$(sed -n 's/^restarted: //p' "$W/reload.out" | wc -w)" services
  put "reload_kept_${n}_orch" "$(sed -n 's/^kept: //p' "$W/reload.out" | wc -w)" services
  grep -q "^restarted: svc$((n / 2))\$" "$W/reload.out" || echo "# scale.sh: reload did not restart svc$((n / 2)) alone: $(grep -v '^kept' "$W/reload.out" | head -3)" >&2
  mark restart_one
  restart_one "$n"
  mark moves
  STOP="signal $SUP USR1" START="signal $SUP USR2"
  moves orch "$n"
  finish TERM
  "$W/waitwalk" "$n"
}

# runit and s6 share the layout: $W/sv/svc<i>/run (svc_stamp itself).
make_dirs() {            # n
  local i
  rm -rf "$W/sv"; mkdir -p "$W/sv"
  for ((i = 0; i < $1; i++)); do
    mkdir "$W/sv/svc$i"
    ln "$SVC" "$W/sv/svc$i/run" 2>/dev/null || cp "$SVC" "$W/sv/svc$i/run"
  done
}

scale_runit() {
  local n=$1 g i t0 groups
  make_dirs "$n"
  groups=$(( (n + 999) / 1000 ))
  rm -rf "$W/rs"
  for ((i = 0; i < n; i++)); do g=$((i / 1000)); mkdir -p "$W/rs/$g"; ln -s "$W/sv/svc$i" "$W/rs/$g/svc$i"; done
  t0=$(date +%s%N)
  # shellcheck disable=SC2016
  setsid sh -c 'for g in $(seq 0 $(($1 - 1))); do runsvdir -P "$2/$g" & done; wait' sh "$groups" "$W/rs" </dev/null >/dev/null 2>&1 &
  SUP=$!
  if ! launched runit "$n" "$t0"; then finish KILL; return; fi
  STATUS=(sh -c 'sv status "$@" >/dev/null' sh)
  for ((i = 0; i < n; i++)); do STATUS+=("$W/sv/svc$i"); done
  common runit "$n"
  sleep 1.2             # runsv waits 1 s before restarting a service younger than that
  STOP="control $W/sv/svc $n d" START="control $W/sv/svc $n u"
  moves runit "$n"
  finish KILL           # runsvdir: HUP would TERM every runsv; the sweep kills all
}

scale_s6() {
  local n=$1 t0
  make_dirs "$n"
  t0=$(date +%s%N)
  setsid s6-svscan -c $((n + 100)) "$W/sv" </dev/null >/dev/null 2>&1 &
  SUP=$!
  if ! launched s6 "$n" "$t0"; then finish KILL; return; fi
  # shellcheck disable=SC2016
  STATUS=(sh -c 'for d in "$1"/svc*; do s6-svstat "$d"; done >/dev/null' sh "$W/sv")
  common s6 "$n"
  sleep 1.2
  STOP="control $W/sv/svc $n d" START="control $W/sv/svc $n u"
  moves s6 "$n"
  finish "cmd:s6-svscanctl -t $W/sv"
}

for n in $SIZES; do
  for impl in orch runit s6; do
    want "$impl" || continue
    echo "# scale.sh: $impl, $n services" >&2
    if [ "$impl" = orch ]; then room 1 "$n" || continue; else room 2 "$n" || continue; fi
    "$P" init "$SVC_SHM"
    "scale_$impl" "$n"
  done
done
