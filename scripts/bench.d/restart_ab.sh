#!/usr/bin/env bash
# scripts/bench.d/restart_ab.sh BUILD ROUNDS NAME=LUA_DIR...: restart
# latency (stop.sh's restart part: 20 services of phases.lua, each killed
# once a round, 50 ms apart, the probe's latency) of the C limit (minisup)
# and of orch with each Lua tree given (ORCH_LUA_DIR=LUA_DIR, the same
# binary BUILD/orch; "-" for the build's own), alternating within each
# round, the order of the orch variants turned each round. Prints, for
# each kind, the median and p95 of each round and of all rounds pooled,
# orch's CPU a restart (/proc/PID/schedstat; its median, and each round's),
# and per round whether the
# target of issue 15 (median within 1.1 x C + 0.2 ms) is met. Lua changes
# only, or NAME=@BUILD2 for orch of another build directory (BUILD2/orch
# with that tree's own Lua): an A/B of C code in one run. AB_SAMPLES (20)
# kills a round and kind. AB_STAMPS=1: orch runs restart_stamps.lua
# (phases.lua stamped) and the medians of the time and of orch's CPU from
# the exit's callback to orch.spawn's call (before, µs) are printed too.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=$(cd "$1" && pwd); ROUNDS=$2; shift 2
N=${AB_SAMPLES:-20}
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-ab.XXXXXX
bench_progs || exit 1
export SVC_SHM=$W/stamps ORCH_SOCKET=$W/ctl.sock
P=$W/probe
NAMES=() DIRS=()
for v in "$@"; do NAMES+=("${v%%=*}"); DIRS+=("${v#*=}"); done
one() {                   # kind lua_dir round
  local kind=$1 dir=$2 r=$3 sup c0 c1 script=$HERE/phases.lua
  [ -n "${AB_STAMPS:-}" ] && script=$HERE/restart_stamps.lua
  export RESTART_STAMPS=$W/st.$kind.$r
  "$P" init "$SVC_SHM"
  rm -f "$W/ctl.sock"
  if [ "$kind" = c ]; then setsid "$W/minisup" 20 "$W/svc" </dev/null >/dev/null 2>&1 &
  elif [ "$dir" = - ]; then setsid "$BUILD/orch" run "$script" 20 "$W/svc" </dev/null >/dev/null 2>"$W/err" &
  elif [ "${dir#@}" != "$dir" ]; then setsid "${dir#@}/orch" run "$script" 20 "$W/svc" </dev/null >/dev/null 2>"$W/err" &
  else ORCH_LUA_DIR=$dir setsid "$BUILD/orch" run "$script" 20 "$W/svc" </dev/null >/dev/null 2>"$W/err" &
  fi
  sup=$!
  "$P" wait-started "$SVC_SHM" 20 120 || { echo "restart_ab.sh: $kind did not start" >&2; kill -TERM $sup; return 1; }
  sleep 0.5
  read -r c0 _ <"/proc/$sup/schedstat"
  PROBE_SAMPLES=1 "$P" latency "$SVC_SHM" 20 "$N" 50 | awk -v k="$kind" -v r="$r" '/^S /{ print k, r, ($4 - $3) / 1e6 }' >>"$W/samples"
  read -r c1 _ <"/proc/$sup/schedstat"
  echo "$kind $r cpu $(( (c1 - c0) / N ))" >>"$W/cpu"
  if [ "$kind" != c ] && [ -n "${AB_STAMPS:-}" ]; then
    kill -WINCH $sup
    for _ in $(seq 100); do [ -s "$RESTART_STAMPS" ] && break; sleep 0.05; done
    awk -v k="$kind" '/^R /{ print k, ($4 - $3) / 1e3, $7 }' "$RESTART_STAMPS" >>"$W/before"
  fi
  bench_stop $sup
  bench_sweep
}
for r in $(seq "$ROUNDS"); do
  one c - "$r"
  k=${#NAMES[@]}
  for i in $(seq 0 $((k - 1))); do
    j=$(( (i + r) % k ))
    one "${NAMES[$j]}" "${DIRS[$j]}" "$r"
  done
done
touch "$W/before"
lua5.4 - "$W/samples" "$W/cpu" "$W/before" "$ROUNDS" "${NAMES[@]}" <<'LUA'
local sf, cf, bf, rounds = arg[1], arg[2], arg[3], tonumber(arg[4])
local kinds = { "c" }
for i = 5, #arg do kinds[#kinds + 1] = arg[i] end
local bt, bc = {}, {}
for l in io.lines(bf) do
  local k, t, c = l:match("^(%S+) (%S+) (%S+)$")
  bt[k] = bt[k] or {}; bc[k] = bc[k] or {}
  table.insert(bt[k], tonumber(t)); table.insert(bc[k], tonumber(c))
end
local s, cpu = {}, {}
for l in io.lines(sf) do
  local k, r, v = l:match("^(%S+) (%d+) (%S+)$")
  r = tonumber(r)
  s[k] = s[k] or { all = {} }
  s[k][r] = s[k][r] or {}
  table.insert(s[k][r], tonumber(v)); table.insert(s[k].all, tonumber(v))
end
for l in io.lines(cf) do
  local k, ns = l:match("^(%S+) %d+ cpu (%d+)$")
  cpu[k] = cpu[k] or { rounds = {} }
  table.insert(cpu[k], tonumber(ns) / 1e6)
  table.insert(cpu[k].rounds, string.format("%.3f", tonumber(ns) / 1e6))
end
local function q(t, p)
  if not t or #t == 0 then return 0 / 0 end
  table.sort(t)
  if p == 0.5 then
    local n = #t
    return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
  end
  return t[math.floor(p * (#t - 1) + 0.5) + 1]
end
for _, k in ipairs(kinds) do
  local meds, met = {}, {}
  for r = 1, rounds do
    local m = q(s[k] and s[k][r], 0.5)
    meds[#meds + 1] = string.format("%.3f", m)
    if k ~= "c" then
      local c = q(s.c and s.c[r], 0.5)
      met[#met + 1] = m <= 1.1 * c + 0.2 and "met" or "missed"
    end
  end
  print(string.format("%-6s pooled median %.3f p95 %.3f ms (n %d); cpu/restart median %.3f ms; rounds: %s%s", k,
    q(s[k] and s[k].all, 0.5), q(s[k] and s[k].all, 0.95), s[k] and #s[k].all or 0, q(cpu[k], 0.5),
    table.concat(meds, " "), #met > 0 and (" [" .. table.concat(met, " ") .. "]") or ""))
  if cpu[k] then print(string.format("%-6s cpu/restart by round (ms): %s", k, table.concat(cpu[k].rounds, " "))) end
  if bt[k] then
    print(string.format("%-6s exit callback -> orch.spawn: %.1f us, orch's CPU %.1f us (median of %d)", k,
      q(bt[k], 0.5), q(bc[k], 0.5), #bt[k]))
  end
end
local c = q(s.c and s.c.all, 0.5)
print(string.format("target (pooled): 1.1 x C + 0.2 = %.3f ms", 1.1 * c + 0.2))
local c95 = q(s.c and s.c.all, 0.95)
for i = 2, #kinds do
  local k = kinds[i]
  print(string.format("%-6s p95 / C's p95 = %.2f (target 1.3)", k, q(s[k] and s[k].all, 0.95) / c95))
end
-- Two orch kinds: in how many rounds the second's CPU a restart was lower.
local a, b = cpu[kinds[2]], cpu[kinds[3]]
if a and b and #kinds == 3 then
  local lower = 0
  for r = 1, math.min(#a.rounds, #b.rounds) do
    if tonumber(b.rounds[r]) < tonumber(a.rounds[r]) then lower = lower + 1 end
  end
  print(string.format("%s's cpu/restart lower than %s's in %d of %d rounds", kinds[3], kinds[2], lower,
    math.min(#a.rounds, #b.rounds)))
end
LUA
