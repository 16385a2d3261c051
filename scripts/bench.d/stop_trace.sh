#!/usr/bin/env bash
# scripts/bench.d/stop_trace.sh BUILD [ROUNDS] [KINDS]: where the stop of 100
# via SIGTERM (stop.sh's stop_term_100) spends its wall time, for orch
# (phases.lua, the configuration a user gets) and the C limits (minisup.c,
# plain and with a cgroup per service), from kernel tracepoints on every CPU
# (perf record -a, CLOCK_MONOTONIC: the probe's clock). ROUNDS (3) rounds,
# the kinds alternating (KINDS, default "c ccg orch"; ccg needs a writable
# cgroup v2 directory; "base" is orch built in STOP_TRACE_BASE, another tree,
# for an A/B pair, or BUILD's own; STOP_TRACE_ORCH_ENV and STOP_TRACE_BASE_ENV,
# "VAR=VALUE ..." each, are set for orch's and base's runs: an A/B pair of
# settings on one binary). Per stop, ms after the probe's SIGTERM:
#   first, last   the supervisor's first and 100th stop signal to a service
#   exit50, exit  the 50th and the last service's exit (sched_process_exit)
#   probe         the probe's figure (its last poll that saw one alive)
#   done          the supervisor's own exit (its stop over, its cgroups gone)
#   cpu_all       the supervisor's CPU from the SIGTERM to its exit
# and, in the window from the SIGTERM to the last exit:
#   cpu_first, cpu_last  the supervisor's CPU until its first and its last
#                 stop signal
#   cpu_pass      orch's CPU until the end of its first pass (its first
#                 sched_yield: the kills, the walk, the cgroups' listing)
#   sup_cpu       the supervisor's time on a CPU (sched_switch)
#   svc_cpu       the services' time on a CPU (all 100: wake-up and exit)
#   other_cpu     everything else's (the probe, the machine's other load)
#   sup_sys       the supervisor's syscalls in the window, the most frequent
#   pwait         with STOP_TRACE_EVENTS=sched:sched_wakeup: the probe's
#                 waits for a CPU, from its wake-up to its switch-in, where
#                 the supervisor held the CPU it was woken onto (SIGTERM to
#                 the probe's figure): a supervisor busy after the last exit
#                 keeps its CPU to the end of its slice and the tick after
#                 it, and a probe woken there waits, the other CPU idle or not
#   pwait_x       the part of pwait whose waits began after the last exit
#   gap           probe - exit: the probe's figure after the last exit
# With STOP_TRACE_SCRIPT=stop_stamps.lua orch runs that copy of phases.lua
# instead, and each orch row is followed by its Lua stamps: when each step
# of the stop began (ms after the SIGTERM) and the CPU of the calls that
# began before the last exit, by function.
# STOP_TRACE_HOW=ctl measures stop.sh's stop_ctl_100 instead: `orch ctl
# stop all` (the C limits: SIGUSR1), every figure from orch's accept(2) of
# the client's connection (cpu_first: the server's CPU until its first
# stop signal; done and cpu_all: none, orch goes on). STOP_TRACE_EVENTS
# adds tracepoints (e.g. sched:sched_wakeup) to the kept traces
# (STOP_TRACE_KEEP=DIR copies them there); STOP_TRACE_IDLE the seconds each
# supervisor idles between its start and the stop (0.5). STOP_TRACE_LITE=1
# records the exits and the signals alone (perf's own CPU stays small).
# Prints each stop's row, then each kind's medians. Needs perf and root.
set -u
BUILD=$(cd "$1" && pwd); ROUNDS=${2:-3}; KINDS=${3:-"c ccg orch"}
BASE=${STOP_TRACE_BASE:+$(cd "$STOP_TRACE_BASE" && pwd)}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-stoptrace.XXXXXX
bench_progs || exit 1
export SVC_SHM=$W/stamps ORCH_SOCKET=$W/ctl.sock
P=$W/probe
CCG=$(bench_ccg)
CCG=${CCG:-/nonexistent/orch-bench-minisup.$TOKEN}   # ccg then fails loudly
one() {                   # kind round
  local kind=$1 r=$2 sup f b=$BUILD
  "$P" init "$SVC_SHM"
  rm -f "$W/ctl.sock"
  case $kind in
    c) setsid "$W/minisup" 100 "$W/svc" </dev/null >/dev/null 2>&1 & ;;
    ccg) MINISUP_CGROUP=$CCG setsid "$W/minisup" 100 "$W/svc" </dev/null >/dev/null 2>&1 & ;;
    *) local e=${STOP_TRACE_ORCH_ENV:-}
       [ "$kind" = base ] && b=${BASE:-$BUILD} e=${STOP_TRACE_BASE_ENV:-}
       # shellcheck disable=SC2086
       STOP_STAMPS=$W/$kind.$r.stamps setsid env $e "$b/orch" run "$HERE/${STOP_TRACE_SCRIPT:-phases.lua}" 100 "$W/svc" \
         </dev/null >/dev/null 2>"$W/err" & ;;
  esac
  sup=$!
  "$P" wait-started "$SVC_SHM" 100 120 || { echo "stop_trace.sh: $kind did not start" >&2; kill -TERM $sup; return 1; }
  if [ "$kind" = orch ] || [ "$kind" = base ]; then for _ in $(seq 100); do [ -S "$W/ctl.sock" ] && break; sleep 0.05; done; fi
  sleep "${STOP_TRACE_IDLE:-0.5}"
  f=$W/$kind.$r
  # STOP_TRACE_HOW=ctl: `orch ctl stop all` (the C limits: SIGUSR1) instead of the SIGTERM.
  local how=
  if [ "${STOP_TRACE_HOW:-}" = ctl ]; then
    case $kind in c|ccg) how="signal $sup USR1" ;; *) how="exec $b/orch ctl --socket $W/ctl.sock stop all" ;; esac
  fi
  head -c 1600 "$SVC_SHM" >"$f.slots"      # the services' pids (svc_stamp.c's slots)
  # STOP_TRACE_LITE=1: the exits and the signals alone (no sched_switch,
  # no syscalls: perf's own CPU stays small; no CPU columns).
  local ev=(-e sched:sched_process_exit,sched:sched_switch,signal:signal_generate${STOP_TRACE_EVENTS:+,$STOP_TRACE_EVENTS}
            -e raw_syscalls:sys_enter --filter "common_pid == $sup")
  [ -n "${STOP_TRACE_LITE:-}" ] && ev=(-e sched:sched_process_exit,signal:signal_generate${STOP_TRACE_EVENTS:+,$STOP_TRACE_EVENTS})
  perf record -q -k CLOCK_MONOTONIC -a -o "$f.data" "${ev[@]}" \
    -- sh -c 'if [ -n "$5" ]; then "$1" stoptime "$2" 100 $5 >"$4"; exit; fi
             "$1" stoptime "$2" 100 signal $3 TERM >"$4"
             # Until the supervisor has exited (a zombie: it is our child).
             for _ in $(seq 1000); do
               read -r _ _ st _ <"/proc/$3/stat" 2>/dev/null || break
               [ "$st" = Z ] && break
               sleep 0.005
             done' - "$P" "$SVC_SHM" $sup "$f.probe" "$how" 2>/dev/null
  perf script -i "$f.data" -F comm,pid,tid,cpu,time,event,trace --ns >"$f.txt" 2>/dev/null
  echo "$sup" >"$f.sup"
  bench_stop $sup 5 "$([ -n "$how" ] && echo TERM || echo 0)"   # (the probe sent its TERM, unless STOP_TRACE_HOW)
  bench_sweep
  bench_ccg_rm "$CCG"
}
for r in $(seq "$ROUNDS"); do for k in $KINDS; do one "$k" "$r"; done; done
lua5.4 "$HERE/stop_trace.lua" "$W" "$ROUNDS" "$KINDS"
[ -n "${STOP_TRACE_KEEP:-}" ] && mkdir -p "$STOP_TRACE_KEEP" && cp "$W"/*.txt "$W"/*.sup "$W"/*.probe "$W"/*.stamps "$STOP_TRACE_KEEP"/ 2>/dev/null
