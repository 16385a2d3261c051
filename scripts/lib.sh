# Shared by scripts/test, scripts/orch and scripts/bench: dependencies and builds.
# shellcheck shell=bash

ORCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ORCH_DEPS=(cmake gcc make pkg-config lua5.4 liblua5.4-dev libuv1-dev libjansson-dev lua-busted lua-cjson libedit-dev libhttp-parser-dev procps scdoc lua-argparse)
# What only the test suite needs (spec/package_spec.lua builds the .deb;
# scripts/purev2 runs the cgroup specs on a pure v2 kernel in a VM).
ORCH_TEST_DEPS=(debhelper dpkg-dev lintian curl python3-prometheus-client prometheus iproute2 tmux
  qemu-system-x86 busybox-static)

# Installs the Debian packages orch needs that are missing (as root, with apt-get).
ensure_deps() {
  local missing=() p
  for p in "${ORCH_DEPS[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "orch: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq >&2 || return 1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# build DIR [cmake options...]: configure (once) and build quietly.
build() {
  local dir=$1; shift
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    cmake -S "$ORCH_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >"$dir.configure.log" 2>&1 \
      || { cat "$dir.configure.log" >&2; return 1; }
  fi
  cmake --build "$dir" -j"$(nproc)" >"$dir.build.log" 2>&1 || { grep -E 'error|Error' "$dir.build.log" | head -40 >&2; return 1; }
}

# proc_line PID: "PID PPID STATE WCHAN ELAPSED ARGS" of a process, from /proc
# with bash builtins only: no program starts, so it answers where the
# filesystem the programs are on does not (the pure v2 VM's root is 9p).
# Fails for a process that is gone.
proc_line() {
  local pid=$1 stat comm wchan= up args f=() a=()
  { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 1
  comm=${stat#*\(}; comm=${comm%\)*}
  read -r -a f <<<"${stat##*) }"
  { read -r wchan <"/proc/$pid/wchan"; } 2>/dev/null
  { [ -z "$wchan" ] || [ "$wchan" = 0 ]; } && wchan=-
  read -r up _ </proc/uptime
  { mapfile -d '' -t a <"/proc/$pid/cmdline"; } 2>/dev/null
  args=${a[*]}; [ -n "$args" ] || args="[$comm]"
  # (f: the fields from the state on; the start time is field 22, in 1/100 s.)
  printf '%7s %7s %s %-28.28s %7ss %.160s\n' "$pid" "${f[1]}" "${f[0]}" "$wchan" "$((${up%.*} - f[19] / 100))" "$args"
}
proc_header() { printf '%7s %7s %s %-28s %8s %s\n' PID PPID S WCHAN ELAPSED ARGS; }

# proc_tree PID: PID and the processes below it, one a line, parents first.
proc_tree() {
  local s stat p i=0 f=() parent=() out=("$1")
  for s in /proc/[0-9]*/stat; do
    { read -r stat <"$s"; } 2>/dev/null || continue
    read -r -a f <<<"${stat##*) }"
    p=${s#/proc/}; parent[${p%/stat}]=${f[1]}
  done
  while [ "$i" -lt "${#out[@]}" ]; do
    for p in "${!parent[@]}"; do [ "${parent[$p]}" = "${out[$i]}" ] && out+=("$p"); done
    i=$((i + 1))
  done
  printf '%s\n' "${out[@]}"
}

# proc_stacks PID...: the kernel stack of those of them in D state (root
# only; at most 4 of them, 16 frames each).
proc_stacks() {
  local p stat f=() n=0 l
  for p in "$@"; do
    { read -r stat <"/proc/$p/stat"; } 2>/dev/null || continue
    read -r -a f <<<"${stat##*) }"
    [ "${f[0]}" = D ] || continue
    n=$((n + 1)); [ "$n" -le 4 ] || break
    echo "kernel stack of $p (D):"
    { mapfile -t -n 16 l <"/proc/$p/stack"; } 2>/dev/null || { echo "  (unreadable)"; continue; }
    printf '  %s\n' "${l[@]}"
  done
}
