# scripts/bench.d/workdir.sh: sourced by the shell benchmarks. A private work
# directory $W (removed at exit) and a token $TOKEN in the environment of
# everything the benchmark starts, so that at exit every process it left
# (an orch, its services, their children) is found and killed.
#   bench_workdir DIR_TEMPLATE    e.g. /dev/shm/orch-bench-stop.XXXXXX
bench_workdir() {
  W=$(mktemp -d "$1") || exit 1
  TOKEN=$(basename "$W")
  export ORCH_BENCH_SUP=$TOKEN
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
# The processes carrying the token, stopped (SIGSTOP) first and killed
# after, so that a supervisor (runsv, s6-supervise, orch) cannot start a
# service again between the two; shell builtins only: with tens of
# thousands of processes (a fleet of 10,000 under runit is 20,000) a grep
# per process took minutes, and failed to fork when the pids ran out.
bench_mine() {           # prints the pids carrying the token
  local d v pid
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ] && continue
    while IFS= read -r -d '' v; do
      if [ "$v" = "ORCH_BENCH_SUP=$TOKEN" ]; then echo "$pid"; break; fi
    done 2>/dev/null <"$d/environ"
  done
}
bench_sweep() {
  local pids pid
  pids=$(bench_mine)
  for pid in $pids; do kill -STOP "$pid" 2>/dev/null; done
  for pid in $pids; do kill -KILL "$pid" 2>/dev/null; done
}
# At the end (or a stop: INT, TERM), the orch processes first get the
# SIGTERM a user would send (each stops its services, its fd holder and
# removes its cgroups), for up to 10 s; then everything left is swept, and
# the cgroups a killed orch left (bench_cgroups_rm).
bench_cleanup() {
  local pid orchs=()
  for pid in $(bench_mine); do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = orch ] && kill -TERM "$pid" 2>/dev/null && orchs+=("$pid")
  done
  for pid in "${orchs[@]}"; do bench_gone "$pid" 10; done
  bench_sweep; sleep 0.2; bench_sweep
  bench_cgroups_rm
  rm -rf "$W"
}
# bench_gone PID SECONDS: waits until PID is gone (at most SECONDS, whole): a
# zombie counts as gone (one that is not our child may wait long for its
# reaper).
bench_gone() {
  local i st
  for ((i = 0; i < $2 * 20; i++)); do
    read -r _ _ st _ 2>/dev/null <"/proc/$1/stat" || return 0
    [ "$st" = Z ] && return 0
    sleep 0.05
  done
  return 1
}
# bench_stop PID [SECONDS] [SIGNAL]: stops a supervisor the benchmark
# started (SIGNAL, default TERM; "cmd:COMMAND" runs COMMAND instead) and
# waits up to SECONDS (5) for it; then SIGKILL, and what it left goes:
# every process of the token, and the cgroups a killed orch leaves.
bench_stop() {
  local pid=$1 how=${3:-TERM}
  if [ "${how#cmd:}" != "$how" ]; then eval "${how#cmd:}" >/dev/null 2>&1; else kill -"$how" "$pid" 2>/dev/null; fi
  bench_gone "$pid" "${2:-5}"
  kill -KILL "$pid" 2>/dev/null && { bench_sweep; bench_cgroups_rm; }
  wait "$pid" 2>/dev/null
  return 0
}
# An orch killed with SIGKILL leaves its cgroup tree, named after its
# control socket (orch.s + the FNV-1a of its path, lua/orch/supervisor/
# cgroup.lua) below its own cgroup: the trees of the sockets in $W, and
# the cgroups named with the token, go once empty (bench_sweep first).
bench_fnv1a() {
  local LC_ALL=C s=$1 h=2166136261 i c
  for ((i = 0; i < ${#s}; i++)); do
    printf -v c '%d' "'${s:i:1}"
    h=$(( ((h ^ (c & 255)) * 16777619) & 0xffffffff ))
  done
  printf '%08x' "$h"
}
bench_cgroups() {        # prints the cgroups of this benchmark
  local s m args=(-name "*$TOKEN*")
  while IFS= read -r s; do args+=(-o -name "orch.s$(bench_fnv1a "$s")"); done < <(find "$W" -type s 2>/dev/null)
  awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i+1) == "cgroup" || $(i+1) == "cgroup2") print $5; break } }' \
    /proc/self/mountinfo | sort -u | while IFS= read -r m; do
    find "$m" -maxdepth 6 -type d \( "${args[@]}" \) -prune 2>/dev/null
  done
}
bench_cgroups_rm() {
  local d
  while IFS= read -r d; do find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; done < <(bench_cgroups)
}
# The C limit's cgroup (minisup.c's MINISUP_CGROUP, the "ccg" kind of the
# stop/start benchmarks): a directory beside where orch makes its own,
# below this shell's cgroup v2, named with the token. Prints nothing where
# there is no cgroup v2 or this user may not make one there.
bench_ccg() {
  local v2 d
  v2=$(awk '{ for (i = 1; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break } }' /proc/self/mountinfo)
  [ -n "$v2" ] || return 0
  d=$v2$(sed -n 's/^0:://p' /proc/self/cgroup)
  d=${d%/}/orch-bench-minisup.$TOKEN
  if mkdir "$d" 2>/dev/null; then rmdir "$d"; echo "$d"; fi
}
# bench_ccg_rm DIR: what a stopped (or killed) minisup left of DIR, its
# services' cgroups s<i> and DIR itself, once empty.
bench_ccg_rm() {
  [ -n "${1:-}" ] && [ -d "$1" ] && rmdir "$1"/s* "$1" 2>/dev/null
  return 0
}
# The programs of the start/stop benchmarks, built into $W: svc (svc_stamp,
# static where the toolchain can), probe and minisup (the C limit).
bench_progs() {
  cc -O2 -static -o "$W/svc" "$HERE/svc_stamp.c" 2>/dev/null || cc -O2 -o "$W/svc" "$HERE/svc_stamp.c" || return 1
  cc -O2 -o "$W/probe" "$HERE/supervisors_probe.c" && cc -O2 -o "$W/minisup" "$HERE/minisup.c"
}
