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
