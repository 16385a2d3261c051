#!/bin/sh
# examples/watchdog/worker.sh: the shell worker of examples/watchdog.lua.
# usage: worker.sh [NAME [TIMEOUT [INTERVAL]]]
# `orch beat` registers this shell in the table of $ORCH_HEARTBEAT_KEY on the
# first call and beats for it on the later ones. $ORCH is the orch binary
# (default: orch from $PATH).
name=${1:-sh-worker}
timeout=${2:-3}
interval=${3:-1}
ORCH=${ORCH:-orch}

say() { printf '%s %-10s %s\n' "$(date +%H:%M:%S.%3N)" "$name" "$*"; }

"$ORCH" beat --name "$name" --timeout "$timeout" || exit 1
say "registered (pid $$, timeout $timeout s)"
trap '"$ORCH" beat --unregister 2>/dev/null; say "SIGTERM: unregistered, exiting"; exit 0' TERM INT

n=0
while :; do
  sleep "$interval" & wait $! 2>/dev/null   # one unit of work (a trap runs at once)
  n=$((n + 1))
  "$ORCH" beat || exit 1
  say "beat $n"
done
