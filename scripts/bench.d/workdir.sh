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
bench_cleanup() { bench_sweep; sleep 0.2; bench_sweep; rm -rf "$W"; }
# The programs of the start/stop benchmarks, built into $W: svc (svc_stamp,
# static where the toolchain can), probe and minisup (the C limit).
bench_progs() {
  cc -O2 -static -o "$W/svc" "$HERE/svc_stamp.c" 2>/dev/null || cc -O2 -o "$W/svc" "$HERE/svc_stamp.c" || return 1
  cc -O2 -o "$W/probe" "$HERE/supervisors_probe.c" && cc -O2 -o "$W/minisup" "$HERE/minisup.c"
}
