#!/usr/bin/env bash
# scripts/bench.d/spawn_syscalls.sh BUILD_DIR: the system calls of a spawn and
# of a restart (issue 15), counted with strace -f. Prints "name value unit":
#   spawn_child_syscalls_orch   calls  made by a spawned child between its
#                                      clone and its execve (orch.spawn of
#                                      /bin/true, no options: the second of two)
#   spawn_child_rt_sigaction_orch calls  rt_sigaction among them
#   restart_syscalls_orch       calls  orch and its new child, from a SIGKILL of
#                                      a supervised service (defaults but
#                                      backoff = 0, start_limit = false) until
#                                      the replacement runs its program
#   restart_rt_sigaction_orch   calls  rt_sigaction among them
# With SPAWN_SYSCALLS_LIST=1 the child's calls are listed on stderr.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=$(cd "${1:-$HERE/../../build}" && pwd)
command -v strace >/dev/null || { echo "spawn_syscalls: strace is missing" >&2; exit 1; }
# $W, and at the end the supervisor stopped (SIGTERM: its cgroup goes)
# and whatever is left of it swept.
. "$HERE/workdir.sh"
bench_workdir /tmp/orch-bench-syscalls.XXXXXX

# A spawn: the child's calls between the clone's return in the child and its
# execve of /bin/true.
cat >"$W/spawn.lua" <<'LUA'
local orch = require "orch"
orch.spawn{ "/bin/true" }:wait()
orch.spawn{ "/bin/true" }:wait()
LUA
strace -f -qq -o "$W/spawn.trace" "$BUILD/orch" run "$W/spawn.lua" || exit 1
child=$(grep -E '^[0-9]+ +execve\("/bin/true"' "$W/spawn.trace" | tail -1 | awk '{ print $1 }')
awk -v c="$child" '$1 == c { if ($2 ~ /^execve\(/) exit; if ($2 !~ /^<\.\.\./) print $2 }' "$W/spawn.trace" \
  | sed 's/(.*//' >"$W/spawn.calls"
[ -n "${SPAWN_SYSCALLS_LIST:-}" ] && sort "$W/spawn.calls" | uniq -c >&2
echo "spawn_child_syscalls_orch $(wc -l <"$W/spawn.calls") calls"
echo "spawn_child_rt_sigaction_orch $(grep -c '^rt_sigaction$' "$W/spawn.calls") calls"

# A restart: strace -c attached to a running supervisor while its service is
# killed and comes back.
cat >"$W/sup.lua" <<LUA
local sup = require "orch.supervisor"
sup.service { name = "s", cmd = { "sleep", "1000" }, backoff = 0, start_limit = false }
sup.run()
LUA
ORCH_SOCKET=$W/ctl.sock "$BUILD/orch" run "$W/sup.lua" </dev/null >/dev/null 2>&1 &
SUP=$!
disown "$SUP"
svc() { pgrep -x -P "$SUP" sleep; }
for _ in $(seq 500); do old=$(svc) && [ -n "$old" ] && break; sleep 0.01; done
[ -n "${old:-}" ] || { echo "spawn_syscalls: the service did not start" >&2; exit 1; }
strace -f -c -o "$W/restart.count" -p "$SUP" &
ST=$!
for _ in $(seq 500); do grep -q '^TracerPid:[[:space:]]*[1-9]' "/proc/$SUP/status" && break; sleep 0.01; done
kill -KILL "$old"
for _ in $(seq 1000); do new=$(svc) && [ -n "$new" ] && [ "$new" != "$old" ] && break; sleep 0.01; done
for _ in $(seq 500); do [ "$(cat "/proc/$new/comm" 2>/dev/null)" = sleep ] && break; sleep 0.01; done
kill -INT "$ST"
wait "$ST"
awk '$NF == "total" { print "restart_syscalls_orch", $4, "calls" }
     $NF == "rt_sigaction" { rt = $4 } END { print "restart_rt_sigaction_orch", rt + 0, "calls" }' "$W/restart.count"
[ -n "${SPAWN_SYSCALLS_LIST:-}" ] && cat "$W/restart.count" >&2
exit 0
