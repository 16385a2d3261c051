-- cgroup.lua (run by `orch run`): spawn-and-reap throughput of /bin/true
-- plain, into one shared cgroup, and into a fresh cgroup per spawn (made
-- before, removed after: what a supervisor does for each start).
--   cgspawn_plain_orch   orch.spawn + :wait()
--   cgspawn_shared_orch  the same with cgroup = cg (one cgroup for all)
--   cgspawn_fresh_orch   orch.cgroup.create + spawn{ cgroup = cg } + wait + remove
-- Each figure is the best of ROUNDS rounds of N spawns, the three kinds
-- interleaved round by round so that load on the machine hits each alike.
-- The last line is fresh/plain.
-- Usage: orch run scripts/bench.d/cgroup.lua [N [ROUNDS]]
local orch = require "orch"
local N = tonumber(arg and arg[1]) or 1000
local ROUNDS = tonumber(arg and arg[2]) or 3
local parent = "orch-bench-" .. orch.getpid()
local base = assert(orch.cgroup.create(parent))
local shared = assert(orch.cgroup.create(parent .. "/shared"))

local function plain(n)
  local t0 = orch.now()
  for _ = 1, n do assert(orch.spawn{ "/bin/true" }):wait() end
  return n / (orch.now() - t0)
end

local function into_shared(n)
  local t0 = orch.now()
  for _ = 1, n do assert(orch.spawn{ "/bin/true", cgroup = shared }):wait() end
  return n / (orch.now() - t0)
end

local function fresh(n)
  local t0 = orch.now()
  for i = 1, n do
    local cg = assert(orch.cgroup.create(parent .. "/s" .. i))
    assert(orch.spawn{ "/bin/true", cgroup = cg }):wait()
    assert(cg:remove())
    cg:close()
  end
  return n / (orch.now() - t0)
end

local best = { plain = 0, shared = 0, fresh = 0 }
for _ = 1, ROUNDS do
  best.plain = math.max(best.plain, plain(N))
  best.shared = math.max(best.shared, into_shared(N))
  best.fresh = math.max(best.fresh, fresh(N))
end
assert(shared:remove())
assert(base:remove())
print(("cgspawn_plain_orch %.0f spawns/s"):format(best.plain))
print(("cgspawn_shared_orch %.0f spawns/s"):format(best.shared))
print(("cgspawn_fresh_orch %.0f spawns/s"):format(best.fresh))
print(("cgspawn_fresh_vs_plain_orch %.2f ratio"):format(best.fresh / best.plain))
