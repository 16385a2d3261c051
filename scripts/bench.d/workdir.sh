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
bench_sweep() {
  local f pid
  for f in /proc/[0-9]*/environ; do
    pid=${f#/proc/}; pid=${pid%/environ}
    [ "$pid" = $$ ] || [ "$pid" = "$BASHPID" ] && continue
    grep -qz "^ORCH_BENCH_SUP=$TOKEN\$" "$f" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
}
bench_cleanup() { bench_sweep; sleep 0.2; bench_sweep; rm -rf "$W"; }
