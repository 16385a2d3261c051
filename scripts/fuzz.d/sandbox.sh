#!/usr/bin/env bash
# sandbox.sh DIR CMD...: runs CMD as user nobody in DIR (created, owned by
# nobody) inside private pid, IPC, network and mount namespaces, so that a
# fuzzed call can only reach what the sandbox holds: its kill(2) reaches
# the sandbox's processes, its SysV objects die with the IPC namespace, its
# sockets with the network namespace. Needs root (CI runs as root).
set -euo pipefail
dir=$1; shift
mkdir -p "$dir"
chown 65534:65534 "$dir"
cd "$dir"
exec unshare --ipc --pid --net --mount --fork --mount-proc \
  setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all -- "$@"
