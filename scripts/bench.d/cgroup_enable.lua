-- cgroup_enable.lua (run by `orch run`, as root): what a controller that
-- no one needs costs when it is enabled. create + remove of N leaf cgroups
-- under a parent, orch's CPU per pair (/proc/self/schedstat) and wall time,
-- best of ROUNDS alternating rounds: (a) nothing offered, nothing asked;
-- (b) hugetlb offered to the parent (enabled in the ancestors' subtree_control)
-- but not asked: orch enables nothing; (c) hugetlb asked: each leaf gets a
-- hugetlb css. The hugetlb enabled for (b) and (c) is disabled again.
-- Usage: orch run scripts/bench.d/cgroup_enable.lua [N [ROUNDS]]
local N = tonumber(arg and arg[1]) or 1000
local ROUNDS = tonumber(arg and arg[2]) or 3
local function cpu()
  local f = io.open("/proc/self/schedstat"); local ns = tonumber(f:read("a"):match("^(%d+)")); f:close()
  return ns / 1e3
end
local mount = orch.cgroup.info().mount
local function subtree(d, what)
  local f = assert(io.open(mount .. d .. "/cgroup.subtree_control", "w")); f:write(what); f:close()
end
local root = "orch-bench-" .. orch.getpid()
local P = assert(orch.cgroup.create(root .. "/p"))
local function run(opts)
  local c0, t0 = cpu(), orch.now()
  for i = 1, N do
    local cg = assert(orch.cgroup.create(P:path() .. "/s" .. i, opts))
    assert(cg:remove())
    cg:close()
  end
  return (cpu() - c0) / N, (orch.now() - t0) * 1e6 / N
end
local best = {}
local function keep(k, c, w)
  local b = best[k]
  if not b or c < b[1] then best[k] = { c, w } end
end
local undo = {}
local ok, err = pcall(function()
for round = 1, ROUNDS do
  keep("a: nothing offered, nothing asked", run())
  -- offer hugetlb to P (enable it in / and root dir), not asked
  for _, d in ipairs{ "", "/" .. root } do
    local s = io.open(mount .. d .. "/cgroup.subtree_control"):read("a")
    if not s:find("hugetlb") then subtree(d, "+hugetlb"); table.insert(undo, 1, d) end
  end
  keep("b: hugetlb offered, not asked", run())
  keep("c: hugetlb asked", run({ controllers = { "hugetlb" } }))
  subtree(P:path(), "-hugetlb")
  for _, d in ipairs(undo) do subtree(d, "-hugetlb") end
  undo = {}
end
end)
if not ok then
  pcall(subtree, P:path(), "-hugetlb")
  for _, d in ipairs(undo) do pcall(subtree, d, "-hugetlb") end
  P:remove({ recursive = true }); assert(orch.cgroup.open(root)):remove({ recursive = true })
  error(err, 0)
end
for _, k in ipairs{ "a: nothing offered, nothing asked", "b: hugetlb offered, not asked", "c: hugetlb asked" } do
  print(string.format("%-36s orch CPU %6.1f us, wall %6.1f us per create+remove", k, best[k][1], best[k][2]))
end
P:remove(); assert(orch.cgroup.open(root)):remove()
