#!/usr/bin/env bash
# scripts/bench.d/stop_lag.sh BUILD [ROUNDS] [KINDS...]: the stop of 100 via
# SIGTERM (stop.sh's stop_term_100) split in two: when the last service took
# its SIGTERM (svc_stamp.c's handler, $SVC_EXIT_SHM) and when the probe saw
# every service gone (its figure); the difference is the "lag", what the
# machine made the probe wait after the services' own end. ROUNDS (20)
# rounds, the kinds alternating stop by stop. KINDS (default "c ccg orch"):
#   c      the C limit (minisup.c)
#   c2     the C limit again, a second arm: c against c2 is an A/A test,
#          the spread the machine alone gives a ratio of the same program
#   ccg    the C limit with a cgroup per service (root, cgroup v2)
#   orch   orch (phases.lua: the configuration a user gets)
#   orch:NAME:VAR=V,VAR=V  orch again with those variables set (an A/B pair
#          of settings on one binary, e.g. orch:nocg:ORCH_BENCH_CGROUP=off)
# Prints each stop ("round kind figure lastexit lag", ms after the SIGTERM),
# then per kind the quartiles, p90 and max of each and the median's ratio to
# c's. The services here catch SIGTERM and _exit(0) (stop.sh's die of it).
# Last, per kind, the figure's median over c's with a 95% bootstrap interval
# (2000 resamples) and how often a ratio of medians of 3 stops, and of 9
# (what `stop.sh` says with STOP_ROUNDS=3, and with STOP_TERMS=3 too), drawn
# from the rows, is above 1.3 ("inv3>1.3", "inv9>1.3"): for c2 that is how
# often the machine alone puts one C run 1.3x behind another.
set -uo pipefail
BUILD=$(cd "${1:-build}" && pwd)
ROUNDS=${2:-20}
shift 2 2>/dev/null || shift $#
KINDS=("$@")
[ ${#KINDS[@]} -gt 0 ] || KINDS=(c ccg orch)
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/workdir.sh"
bench_workdir /dev/shm/orch-bench-stoplag.XXXXXX
bench_progs || exit 1
export SVC_SHM=$W/stamps SVC_EXIT_SHM=$W/exits ORCH_SOCKET=$W/ctl.sock
P=$W/probe
truncate -s $((16384 * 8)) "$SVC_EXIT_SHM"    # before the first service opens it
CCG=$(bench_ccg)
for r in $(seq "$ROUNDS"); do
  for k in "${KINDS[@]}"; do
    "$P" init "$SVC_SHM"; rm -f "$W/ctl.sock"
    case $k in
      c|c2) setsid "$W/minisup" 100 "$W/svc" </dev/null >/dev/null 2>&1 & ;;
      ccg) [ -n "$CCG" ] || { echo "stop_lag.sh: no writable cgroup v2 for ccg" >&2; exit 1; }
           MINISUP_CGROUP=$CCG setsid "$W/minisup" 100 "$W/svc" </dev/null >/dev/null 2>&1 & ;;
      orch*) env_=(); IFS=: read -r _ _ vars <<<"$k"
             IFS=, read -ra env_ <<<"$vars"
             setsid env "${env_[@]}" "$BUILD/orch" run "$HERE/phases.lua" 100 "$W/svc" \
               </dev/null >/dev/null 2>"$W/orch.err" & ;;
      *) echo "stop_lag.sh: unknown kind $k" >&2; exit 2 ;;
    esac
    SUP=$!
    "$P" wait-started "$SVC_SHM" 100 120 || { echo "stop_lag.sh: $k did not start" >&2; exit 1; }
    if [ "${k#orch}" != "$k" ]; then for _ in $(seq 100); do [ -S "$W/ctl.sock" ] && break; sleep 0.05; done; fi
    sleep 0.5
    read -r t le < <("$P" stoptime "$SVC_SHM" 100 signal "$SUP" TERM)
    echo "$r $k $t $le $(awk -v a="$t" -v b="$le" 'BEGIN { printf "%.3f", a - b }')" | tee -a "$W/rows"
    bench_stop "$SUP"; bench_sweep
    bench_ccg_rm "$CCG"
  done
done
lua5.4 - "$W/rows" <<'LUA'
local v, order = {}, {}
for line in io.lines(arg[1]) do
  local k, t, le, lag = line:match("^%d+ (%S+) (%S+) (%S+) (%S+)$")
  t, le, lag = tonumber(t), tonumber(le), tonumber(lag)
  if t and le and lag then
    if not v[k] then v[k] = { figure = {}, lastexit = {}, lag = {} }; order[#order + 1] = k end
    table.insert(v[k].figure, t); table.insert(v[k].lastexit, le); table.insert(v[k].lag, lag)
  end
end
local function q(t, p)
  local c = table.move(t, 1, #t, 1, {}); table.sort(c)
  local h = (#c - 1) * p + 1
  local lo = math.floor(h)
  return lo >= #c and c[#c] or c[lo] + (h - lo) * (c[lo + 1] - c[lo])
end
print("# kind what n p25 median p75 p90 max median/c's")
for _, k in ipairs(order) do
  for _, f in ipairs { "figure", "lastexit", "lag" } do
    local x, c = v[k][f], v.c and v.c[f]
    print(string.format("# %s %s %d %.2f %.2f %.2f %.2f %.2f %s", k, f, #x, q(x, .25), q(x, .5), q(x, .75), q(x, .9),
      q(x, 1), c and string.format("%.2f", q(x, .5) / q(c, .5)) or "-"))
  end
end
-- Resampling (a fixed seed: the same rows give the same lines).
math.randomseed(15)
local function draw(t, n)
  local s = {}
  for i = 1, n do s[i] = t[math.random(#t)] end
  return s
end
local c = v.c and v.c.figure
if c then
  print("# kind figure/c's [95% interval] inv3>1.3 inv9>1.3")
  for _, k in ipairs(order) do
    if k ~= "c" then
      local x, r = v[k].figure, {}
      for i = 1, 2000 do r[i] = q(draw(x, #x), .5) / q(draw(c, #c), .5) end
      local over = {}
      for _, m in ipairs { 3, 9 } do
        local n = 0
        for _ = 1, 2000 do if q(draw(x, m), .5) / q(draw(c, m), .5) > 1.3 then n = n + 1 end end
        over[m] = n / 2000
      end
      print(string.format("# %s %.2f [%.2f %.2f] %.2f %.2f", k, q(x, .5) / q(c, .5), q(r, .025), q(r, .975), over[3], over[9]))
    end
  end
end
LUA
