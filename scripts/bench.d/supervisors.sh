#!/usr/bin/env bash
# scripts/bench.d/supervisors.sh BUILD_DIR: the supervisor benchmark (issue 6),
# side by side in one run:
#   c             scripts/bench.d/minisup.c: posix_spawn + sigwaitinfo +
#                 immediate restart, the physical limit
#   orch          scripts/bench.d/supervise.lua (lua/orch/supervisor/)
#   runit         runsvdir + runsv (+ svlogd when logging)
#   s6            s6-svscan + s6-supervise (+ s6-log when logging)
#   supervisord   supervisord (Python)
# each in its fastest configuration (_<impl>) and in its default one
# (_<impl>default), supervising scripts/bench.d/svc_stamp.c (static), which
# records its start time (CLOCK_MONOTONIC) in a tmpfs file.
#
# Prints "name value unit" lines:
#   restart_latency_{median,p95}_<impl>  ms   SIGKILL of a service -> its
#                                             replacement running (20 services,
#                                             each killed once)
#   pss_total_<n>_<impl>, pss_per_service_<n>_<impl>  KiB  supervisor processes
#                                             only (services excluded), with
#                                             logging enabled, n = 1, 100, 500
#   idle_wakeups_100_<impl> per_s, idle_cpu_100_<impl> ms  over SUP_IDLE_SECONDS
#   stop_100_<impl>, start_100_<impl>  ms     until all 100 exited / running
# State lives on tmpfs (/dev/shm), as in production. Every daemon started is
# stopped at the end (and on interruption).
# Environment: SUP_SAMPLES (20), SUP_IDLE_SECONDS (30), SUP_SIZES ("1 100 500"),
# SUP_ONLY ("c orch runit s6 supervisord").
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
SAMPLES=${SUP_SAMPLES:-20}
IDLE=${SUP_IDLE_SECONDS:-30}
SIZES=${SUP_SIZES:-"1 100 500"}
ONLY=${SUP_ONLY:-"c orch runit s6 supervisord"}
. "$ROOT/scripts/lib.sh"

want() { [[ " $ONLY " == *" $1 "* ]]; }
need=()
want runit && need+=(runit)
want s6 && need+=(s6)
want supervisord && need+=(supervisor)
if [ ${#need[@]} -gt 0 ]; then ensure_deps "${need[@]}" >&2 || { echo "supervisors.sh: cannot install ${need[*]}" >&2; exit 1; }; fi

# Every process started here carries the work directory's token, and
# whatever still carries it is killed at the end (supervisors, loggers,
# services): bench_workdir, bench_sweep.
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-sup.XXXXXX
export SVC_SHM=$W/stamps
SUP=

ulimit -n 65536 2>/dev/null || true
cc -O2 -static -o "$W/svc_stamp" "$HERE/svc_stamp.c" 2>/dev/null \
  || cc -O2 -o "$W/svc_stamp" "$HERE/svc_stamp.c" || exit 1
cc -O2 -o "$W/minisup" "$HERE/minisup.c" || exit 1
cc -O2 -o "$W/probe" "$HERE/supervisors_probe.c" || exit 1
P=$W/probe
SVC=$W/svc_stamp

# launch CMD...: starts a supervisor in its own session; SUP = its pid.
launch() {
  setsid "$@" </dev/null >"$W/sup.out" 2>"$W/sup.err" &
  SUP=$!
}

# finish HOW: stops the current supervisor (HOW: signal name, or a command).
finish() {
  local how=${1:-TERM} i
  bench_stop "$SUP" 10 "$how"
  bench_sweep
  SUP=
}

# ---------------------------------------------------------------- setups
# setup_<impl> N MODE: prepares and launches; MODE fast | default | logged.
# stop_<impl>: how finish stops it. ctl_<impl> d|u N: a trigger for the probe.

setup_c() { launch "$W/minisup" "$1" "$SVC"; }
stop_c() { echo TERM; }
ctl_c() { [ "$1" = d ] && echo "signal $SUP USR1" || echo "signal $SUP USR2"; }

setup_orch() {
  local mode=$2; [ "$mode" = default ] || [ "$mode" = fast ] || mode=logged
  rm -rf "$W/orchlogs"; mkdir -p "$W/orchlogs"
  launch "$BUILD/orch" run "$HERE/supervise.lua" "$1" "$SVC" "$mode" "$W/orchlogs"
}
stop_orch() { echo TERM; }
ctl_orch() { [ "$1" = d ] && echo "signal $SUP USR1" || echo "signal $SUP USR2"; }

# runit and s6 share the layout: DIR/svc<i>/run (+ log/run when logging).
make_dirs() {
  local dir=$1 n=$2 mode=$3 logger=$4 i d
  rm -rf "$dir"; mkdir -p "$dir"
  for i in $(seq 0 $((n - 1))); do
    d=$dir/svc$i
    mkdir -p "$d"
    if [ "$mode" = fast ]; then
      ln "$SVC" "$d/run" 2>/dev/null || cp "$SVC" "$d/run"
    else
      printf '#!/bin/sh\nexec 2>&1\nexec %s\n' "$SVC" >"$d/run"
      chmod +x "$d/run"
      mkdir -p "$d/log/main"
      printf '#!/bin/sh\nexec %s ./main\n' "$logger" >"$d/log/run"
      chmod +x "$d/log/run"
    fi
  done
}
setup_runit() { make_dirs "$W/runit" "$1" "$2" "svlogd -tt"; launch runsvdir -P "$W/runit"; }
stop_runit() { echo HUP; }          # runsvdir: HUP = TERM every runsv, then exit
ctl_runit() { echo "control $W/runit/svc $2 $1"; }

setup_s6() { make_dirs "$W/s6" "$1" "$2" "s6-log t"; launch s6-svscan "$W/s6"; }
stop_s6() { echo "cmd:s6-svscanctl -t $W/s6"; }
ctl_s6() { echo "control $W/s6/svc $2 $1"; }

setup_supervisord() {
  local n=$1 mode=$2 i d=$W/sd
  rm -rf "$d"; mkdir -p "$d/logs"
  {
    printf '[supervisord]\nnodaemon=true\nlogfile=%s/supervisord.log\npidfile=%s/supervisord.pid\nchildlogdir=%s/logs\nminfds=4096\n' "$d" "$d" "$d"
    printf '[unix_http_server]\nfile=%s/sock\n[supervisorctl]\nserverurl=unix://%s/sock\n' "$d" "$d"
    printf '[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n'
    for i in $(seq 0 $((n - 1))); do
      printf '[program:svc%d]\ncommand=%s %d\nautorestart=true\n' "$i" "$SVC" "$i"
      [ "$mode" = fast ] && printf 'startsecs=0\nstartretries=1000000\nstdout_logfile=NONE\nstderr_logfile=NONE\n'
    done
  } >"$d/supervisord.conf"
  launch supervisord -c "$d/supervisord.conf"
}
stop_supervisord() { echo TERM; }
ctl_supervisord() {
  [ "$1" = d ] && echo "exec supervisorctl -c $W/sd/supervisord.conf stop all" \
               || echo "exec supervisorctl -c $W/sd/supervisord.conf start all"
}

# ---------------------------------------------------------------- measures

start_and_wait() {        # impl n mode
  "$P" init "$SVC_SHM"
  "setup_$1" "$2" "$3"
  if ! "$P" wait-started "$SVC_SHM" "$2" 120; then
    echo "# $1 ($3): services did not start; $(tail -3 "$W/sup.err" 2>/dev/null)" >&2
    finish "$("stop_$1")"
    return 1
  fi
}

latency() {               # impl mode suffix
  local impl=$1 mode=$2 name=$1$3 r
  start_and_wait "$impl" "$SAMPLES" "$mode" || return
  sleep 1.2               # runsv and s6-supervise delay restarts of a service younger than 1 s
  r=$("$P" latency "$SVC_SHM" "$SAMPLES" "$SAMPLES" 100)
  echo "restart_latency_median_$name ${r% *} ms"
  echo "restart_latency_p95_$name ${r#* } ms"
  finish "$("stop_$impl")"
}

sizes() {                 # impl (logging enabled: MODE logged/default)
  local impl=$1 n r mode=logged
  [ "$impl" = supervisord ] && mode=default
  [ "$impl" = runit ] || [ "$impl" = s6 ] && mode=default
  for n in $SIZES; do
    start_and_wait "$impl" "$n" "$mode" || continue
    sleep 1
    r=$("$P" pss "$SUP" svc_stamp)
    echo "pss_total_${n}_$impl ${r% *} KiB"
    echo "pss_per_service_${n}_$impl $(awk -v k="${r% *}" -v n="$n" 'BEGIN { printf "%.1f", k / n }') KiB"
    if [ "$n" = 100 ]; then
      r=$("$P" idle "$SUP" "$IDLE" svc_stamp)
      echo "idle_wakeups_100_$impl ${r% *} per_s"
      echo "idle_cpu_100_$impl ${r#* } ms"
      # shellcheck disable=SC2046
      r=$("$P" stoptime "$SVC_SHM" 100 $("ctl_$impl" d 100))
      echo "stop_100_$impl $r ms"
      sleep 0.5
      # shellcheck disable=SC2046
      r=$("$P" starttime "$SVC_SHM" 100 $("ctl_$impl" u 100))
      echo "start_100_$impl $r ms"
    fi
    finish "$("stop_$impl")"
  done
}

for impl in c orch runit s6 supervisord; do
  want "$impl" || continue
  echo "# supervisors.sh: $impl" >&2
  latency "$impl" fast ""
  [ "$impl" != c ] && latency "$impl" default default
  sizes "$impl"
done
