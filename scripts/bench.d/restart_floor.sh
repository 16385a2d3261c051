#!/usr/bin/env bash
# scripts/bench.d/restart_floor.sh: the C floor of one service's restart in
# the middle of a fleet (issue 15, seventh session), beside scale.sh's
# restart_one for orch. minisup.c supervises N copies of svc_stamp.c; the
# middle one is killed RESTARTS times (FLOOR_RESTARTS, 7) with the probe's
# restart1, as scale.sh does for orch. For each N in FLOOR_SIZES ("100 1000
# 10000") and each variant in FLOOR_VARIANTS ("plain fds pid files"):
#   plain  minisup as it is: posix_spawn, waitpid(-1) at each SIGCHLD
#   fds    the same holding FDS_PER_SERVICE (1.3) x N more fds, as orch
#          holds its services' pipes (13,000 at 10,000)
#   pid    fds, and the exit reaped by pid (SIGCHLD's si_pid): no walk
#   files  pid, and the child born sharing the fd table (CLONE_FILES) and
#          copying fds 0-2 only: no fd table copy, no close-on-exec of
#          thousands of fds in the child
#   cgroup files, and each copy in a cgroup v2 of its own, kept across its
#          restarts as orch keeps a service's (MINISUP_CGROUP: N sibling
#          cgroups), born into it (clone3 CLONE_INTO_CGROUP)
#   fresh  cgroup, and the copy's cgroup removed and made again between
#          the reap and the spawn (MINISUP_CGROUP_FRESH=1)
# Prints "restart_floor_<variant>_<N> <ms>" (latency, median) and
# "cpu_restart_floor_<variant>_<N> <ms>" (minisup's CPU over the second
# after each kill, /proc/PID/schedstat, median). Run 1,000 and more under
# the fleet lock: flock /work/wt/fleet.lock bash scripts/bench.d/restart_floor.sh
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SIZES=${FLOOR_SIZES:-"100 1000 10000"}
VARIANTS=${FLOOR_VARIANTS:-"plain fds pid files"}
RESTARTS=${FLOOR_RESTARTS:-7}
PER=${FDS_PER_SERVICE:-1.3}
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-floor.XXXXXX
export SVC_SHM=$W/stamps
cc -O2 -static -o "$W/svc_stamp" "$HERE/svc_stamp.c" 2>/dev/null || cc -O2 -o "$W/svc_stamp" "$HERE/svc_stamp.c" || exit 1
cc -O2 -o "$W/probe" "$HERE/supervisors_probe.c" && cc -O2 -o "$W/minisup" "$HERE/minisup.c" || exit 1
P=$W/probe
cpu() { read -r ns _ <"/proc/$SUP/schedstat" 2>/dev/null; echo "${ns:-0}"; }

# A new cgroup v2 directory for minisup's cgroups (below this shell's
# own, where this process may make one), or nothing and 1.
cgroup_dir() {
  local mnt own
  mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
  own=$(sed -n 's/^0:://p' /proc/self/cgroup)
  [ -n "$mnt" ] || { echo "# restart_floor.sh: no cgroup v2 mounted" >&2; return 1; }
  echo "$mnt${own%/}/orch-floor.$$"
}

one() {                  # variant n
  local v=$1 n=$2 fds=0 reap="" files="" cg="" fresh="" k c0 ts=() cs=() mid=$(( (RESTARTS + 1) / 2 ))
  case $v in
    fds) fds=$(awk -v p="$PER" -v n="$n" 'BEGIN { printf "%d", p * n }') ;;
    pid) fds=$(awk -v p="$PER" -v n="$n" 'BEGIN { printf "%d", p * n }'); reap=pid ;;
    files|cgroup|fresh) fds=$(awk -v p="$PER" -v n="$n" 'BEGIN { printf "%d", p * n }'); reap=pid; files=1 ;;
  esac
  case $v in cgroup|fresh) cg=$(cgroup_dir) || return ;; esac
  [ "$v" = fresh ] && fresh=1
  "$P" init "$SVC_SHM"
  MINISUP_FDS=$fds MINISUP_REAP=$reap MINISUP_FILES=$files MINISUP_CGROUP=$cg MINISUP_CGROUP_FRESH=$fresh setsid "$W/minisup" "$n" "$W/svc_stamp" </dev/null >/dev/null 2>&1 &
  SUP=$!
  if ! "$P" wait-started "$SVC_SHM" "$n" 600; then
    echo "# restart_floor.sh: $v $n: not all started" >&2
  else
    sleep 1
    "$P" restart1 "$SVC_SHM" $((n / 2)) >/dev/null; sleep 0.5
    for ((k = 0; k < RESTARTS; k++)); do
      c0=$(cpu)
      ts+=("$("$P" restart1 "$SVC_SHM" $((n / 2)))")
      sleep 1
      cs+=("$(awk -v a="$c0" -v b="$(cpu)" 'BEGIN { printf "%.3f", (b - a) / 1e6 }')")
    done
    printf 'restart_floor_%s_%s %s ms\n' "$v" "$n" "$(printf '%s\n' "${ts[@]}" | sort -g | sed -n ${mid}p)"
    printf 'cpu_restart_floor_%s_%s %s ms\n' "$v" "$n" "$(printf '%s\n' "${cs[@]}" | sort -g | sed -n ${mid}p)"
  fi
  bench_stop "$SUP" 10
  for _ in $(seq 50); do bench_sweep; [ -z "$(bench_mine)" ] && break; sleep 0.2; done
}

for n in $SIZES; do
  for v in $VARIANTS; do one "$v" "$n"; done
done
