--- orch.supervisor.graph: the dependency graph of a supervisor's services
-- (`depends_on`): checks it (unknown names, cycles), resolves targets
-- ("all", a service, an instance, a list), closes a set of instances over
-- its dependencies or its dependents, and stops a set in dependency order.
-- Functions of the supervisor state S (S.services, S.order, S.by_name).
local orch = require "orch"
local status = require "orch.supervisor.status"
local cgroup = require "orch.supervisor.cgroup"
local Instance = require "orch.supervisor.instance"

local graph = {}

--- Raises when a dependency is missing or the graph has a cycle. `cfgs`
-- maps names to configurations.
function graph.check(cfgs)
  for name, cfg in pairs(cfgs) do
    for _, d in ipairs(cfg.depends_on) do
      if not cfgs[d] then
        error(string.format("service '%s': key 'depends_on': unknown service '%s'", name, d), 0)
      end
    end
  end
  local mark = {}
  local function visit(name, path)
    if mark[name] == "done" then return end
    if mark[name] == "active" then
      local i = #path
      while path[i] ~= name do i = i - 1 end
      local cycle = table.concat(path, " -> ", i) .. " -> " .. name
      error(string.format("service '%s': key 'depends_on': dependency cycle %s", name, cycle), 0)
    end
    mark[name] = "active"
    path[#path + 1] = name
    for _, d in ipairs(cfgs[name].depends_on) do visit(d, path) end
    path[#path] = nil
    mark[name] = "done"
  end
  local names = {}
  for name in pairs(cfgs) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do visit(name, {}) end
end

-- Appends x to the list `out` unless `seen` already has it.
local function add_once(out, seen, x)
  if not seen[x] then
    seen[x] = true
    out[#out + 1] = x
  end
end

--- Instances named by target: "all", a service name, an instance name
-- ("web:2") or a list of those. Returns a list or nil, message. Called
-- from a public function: a name that is no string raises at its caller.
function graph.resolve(S, target, op)
  -- Every instance: the supervisor's own list (Sup:all_instances, in
  -- definition order; read only), not a copy with a set beside it: a stop
  -- or a status of all of 10,000 built both before its first step.
  if target == "all" then return S:all_instances() end
  local out, seen = {}, {}
  local function one(t)
    if t == "all" then
      for _, n in ipairs(S.order) do
        for _, inst in ipairs(S.services[n].instances) do add_once(out, seen, inst) end
      end
      return true
    end
    local svc = S.services[t]
    if svc then
      for _, inst in ipairs(svc.instances) do add_once(out, seen, inst) end
      return true
    end
    local inst = S.by_name[t]
    if inst then
      add_once(out, seen, inst)
      return true
    end
    return false
  end
  local list = type(target) == "table" and target or { target }
  for _, t in ipairs(list) do
    if type(t) ~= "string" then
      error(string.format("bad argument #1 to '%s' (service name expected, got %s)", op, type(t)), 3)
    end
    if not one(t) then return nil, string.format("%s: no such service '%s'", op, t) end
  end
  return out
end

--- The instances plus every instance of the services they need
-- (transitively), dependencies first.
function graph.with_dependencies(S, insts)
  local out, seen_inst, seen_svc = {}, {}, {}
  local function add_service(name)
    if seen_svc[name] then return end
    seen_svc[name] = true
    local svc = S.services[name]
    for _, d in ipairs(svc.cfg.depends_on) do add_service(d) end
    for _, inst in ipairs(svc.instances) do add_once(out, seen_inst, inst) end
  end
  for _, inst in ipairs(insts) do
    for _, d in ipairs(inst.cfg.depends_on) do add_service(d) end
    add_once(out, seen_inst, inst)
  end
  return out
end

--- The instances plus those of every active service that depends on them.
function graph.with_dependents(S, insts)
  -- Every instance already (resolve's "all"): nothing depends on more.
  if insts == S:all_instances() then return insts end
  local names, direct = {}, {}
  for _, inst in ipairs(insts) do
    names[inst.service] = true
    direct[inst.service] = true
  end
  local grew = true
  while grew do
    grew = false
    for name, svc in pairs(S.services) do
      if not names[name] then
        for _, d in ipairs(svc.cfg.depends_on) do
          if names[d] then
            names[name] = true
            grew = true
            break
          end
        end
      end
    end
  end
  local out, seen = {}, {}
  for _, inst in ipairs(insts) do add_once(out, seen, inst) end
  for name in pairs(names) do
    if not direct[name] then
      for _, inst in ipairs(S.services[name].instances) do
        if inst.state ~= "stopped" then add_once(out, seen, inst) end
      end
    end
  end
  return out
end

--- The first dependency of inst that is not ready (all of its instances
-- running), or nil.
function graph.unready_dependency(S, inst)
  for _, d in ipairs(inst.cfg.depends_on) do
    local svc = S.services[d]
    if not svc then return d .. " (not defined)" end
    for _, di in ipairs(svc.instances) do
      if di.state ~= "running" then return d end
    end
  end
end

-- The names of `remaining` not `needed` (nil: all of them) in definition
-- order: the order of a table's keys changes from one process to the next
-- (Lua seeds its string hashes at random), and the order the stops begin
-- in must not (a simulation's trace). Names no longer defined (a reload
-- removing them) come first, by name. A layer of most of the definitions
-- (a stop of all) is taken by a walk of them rather than a sort, which
-- cost a stop of 100 about a tenth of its time before the first signal.
local function in_order(S, remaining, needed, pos)
  local layer = {}
  for name in pairs(remaining) do
    if not (needed and needed[name]) then layer[#layer + 1] = name end
  end
  local order = S.order
  if #layer * 4 < #order then
    table.sort(layer, function(a, b) return (pos[a] or 0) < (pos[b] or 0) or (pos[a] == pos[b] and a < b) end)
    return layer
  end
  local gone, n = nil, 0
  for _, name in ipairs(layer) do
    if not pos[name] then
      gone = gone or {}
      gone[#gone + 1] = name
    end
  end
  if gone then
    table.sort(gone)
    n = #gone
    table.move(gone, 1, n, 1, layer)
  end
  for _, name in ipairs(order) do
    if remaining[name] and not (needed and needed[name]) then
      n = n + 1
      layer[n] = name
    end
  end
  return layer
end

-- What a stop needs of the supervisor's definitions, kept with its list of
-- every instance (Sup:all_instances, made again once a service is added or
-- removed, which a reload does for every service it changes): whether any
-- service depends on another (flat: a stop is then one layer), and, made
-- on first use (a stop of all of a flat supervisor needs none), each
-- service's position in the definition order. graph.prepare makes it after
-- a start, so that a stop does not begin with it: a walk of every
-- definition, cold after minutes of idling, took about 100 us of a stop of
-- 100 before its first signal.
local function shape(S)
  local all = S:all_instances()
  local sh = S.graph_shape
  if sh and sh.all == all then return sh end
  local flat, services = true, S.services
  for _, name in ipairs(S.order) do
    local deps = services[name].cfg.depends_on
    if deps[1] ~= nil and not (deps[2] == nil and deps[1] == name) then
      flat = false
      break
    end
  end
  sh = { all = all, flat = flat }
  S.graph_shape = sh
  return sh
end

local function positions(S)
  local sh = shape(S)
  local pos = sh.pos
  if not pos then
    pos = {}
    for i, name in ipairs(S.order) do pos[name] = i end
    sh.pos = pos
  end
  return pos
end

--- Makes what a stop needs of the definitions now (sup.start, at its end).
function graph.prepare(S) shape(S) end

-- Are the instances one layer already in the order the stops begin in (no
-- service depends on another, and they come in definition order, as
-- "all" resolves)? Then a stop takes them as they are, without building
-- the layers: every service's tables walked three more times took a stop
-- of 100 about 200 us of orch's CPU before its first signal.
local function one_layer(S, insts)
  local sh = shape(S)
  if not sh.flat then return false end
  if insts == sh.all then return true end   -- in definition order, made so
  local pos, last = positions(S), 0
  for _, inst in ipairs(insts) do
    local p = pos[inst.service]
    if not p or p < last then return false end
    last = p
  end
  return true
end

-- Signal first: every main process of the layer gets its stop signal, one
-- kill(2) each, then the rest of each one's cgroup (an escapee), before
-- any instance's stop does its bookkeeping (its state, the waits) and
-- before its task is even made: how soon the last process of a large stop
-- gets its signal no longer grows with that work (see Instance:signal_first
-- and Instance:signal_rest). An instance signalled already (a shutdown's
-- early pass) is not signalled again.
-- SIGCHLD waits meanwhile (blocked, then released once: the reaper's
-- signal, of which the kernel keeps one pending, as the C limit's
-- sigwaitinfo loop does): each service that ends during the pass would
-- otherwise interrupt it with libuv's handler (a signal frame, three
-- syscalls), which made a kill of the pass cost about twice the kill.
local held = { __close = function() orch.signal.sigrelse("CHLD") end }
local function hold_chld()
  for _, name in ipairs(orch.signal.sigprocmask("block", "CHLD")) do
    if name == "CHLD" then return nil end     -- the script holds it: its own
  end
  return setmetatable({}, held)
end

local function first_pass(insts)
  local _ <close> = #insts > 1 and hold_chld() or nil
  -- A stop of every instance: the supervisor's list of runs first (the
  -- walk below then finds them signalled).
  local S = insts[1] and insts[1].sup
  local sent = S and insts == S:all_instances() and Instance.signal_listed(S) or 0
  return S and sent + Instance.signal_pass(S, insts) or sent
end

-- The first pass, then: the processes just signalled end on orch's CPU
-- too: they go first, orch's bookkeeping of their stops after (a stop's
-- users wait for the processes to be gone).
-- The pass runs no user code, but it can raise (the Lua time budget's
-- count hook raises in whatever runs past the budget, a pass over
-- thousands of services): it is an optimisation, so a raise ends it (SIGCHLD
-- released by its <close>) and the stop goes on without it, each
-- instance's stop sending what the pass did not (Instance:send).
local function signal_layer(insts)
  local ok, sent = pcall(first_pass, insts)
  if not ok then
    insts[1].sup:log("the stop's first signal pass failed (each stop signals its own service): " .. tostring(sent))
    return
  end
  if sent > 1 then orch.sched_yield() end
end

-- The stops of one layer, in parallel, after its first pass; returns once
-- every one has stopped (the next layer's stops begin then). The tasks
-- are made in the same turn as the first pass, so they run in the next one
-- before any exit the pass caused is handled (an exit's callback is queued
-- when the reaper runs, in the loop's poll, behind them). `signalled`:
-- the caller made the first pass already.
local function stop_layer(S, insts, signalled)
  if not signalled then signal_layer(insts) end
  -- What the runs leave in their cgroups (escapees) drains with one wait
  -- for the parent cgroup, where the layer holds every live run.
  local _ <close> = cgroup.drain_together(S, insts, insts == shape(S).all)
  local tasks = {}
  -- Each with the stop's own budget (Sup.own_budget).
  for i, inst in ipairs(insts) do tasks[i] = S.own_budget(orch.task(inst.stop, inst)) end
  for _, t in ipairs(tasks) do t:join() end
end

--- A shutdown's first pass, at once (Sup:shutdown, in the TERM handler's
-- callback): the first layer's stop signals go out before anything else
-- of the shutdown (its log line, its task, the layers), where a stop is
-- one layer in definition order (above). True when it made the pass: the
-- shutdown's stop (graph.stop_ordered with `signalled`) then makes none.
-- Nothing otherwise.
function graph.signal_early(S, insts)
  if #insts > 1 and one_layer(S, insts) then
    signal_layer(insts)
    return true
  end
  return false
end

-- A shutdown's stop, from its task's first run (the loop turn after the
-- first pass: exits already reported are handled before it) to orch's
-- exit, runs orch's loop thread with the shortest scheduler slice (0.1 ms:
-- orch.proc._slice, Linux 6.12+). Set in the TERM handler itself, right
-- after the pass, it made no difference to the stop of 100 (40 stops each,
-- doc/benchmarks.md, "The stop of 100, sixteenth session"). After the services' exits orch works on for 10-20 ms of
-- CPU (each exit's end, the cgroups' removal, its own end), and with the
-- default slice a task woken on its CPU meanwhile (whoever waits for the
-- services to exit, on a loaded or small machine) waited for the end of
-- that slice and the tick after it: 2-8 ms in the stops of 100 traced
-- (doc/benchmarks.md, "The stop of 100, fourteenth session"). With 0.1 ms
-- it runs within 0.1 ms of its wake-up; orch's work is the same. Not
-- restored: orch ends with the shutdown. A spawn meanwhile (a stop hook's)
-- gets the default slice (SCHED_FLAG_RESET_ON_FORK). Where the kernel
-- refuses, nothing changes.
local SHUTDOWN_SLICE_US = 100
local function shutdown_slice(S)
  if not S.shutdown_task or S.slice_short then return end
  S.slice_short = true
  orch.proc._slice(SHUTDOWN_SLICE_US)
end

--- Stops the instances, dependents before their dependencies, every
-- instance of a layer in parallel. None of them is restarted from the
-- moment this is called. Task only. `signalled`: the caller made the
-- first layer's pass already (graph.signal_early, a shutdown's).
function graph.stop_ordered(S, insts, signalled)
  -- A stop of one layer sends its first pass before its bookkeeping below
  -- (a walk of every instance each), as a shutdown sends it before its
  -- own: the stop of 100 of `orch ctl stop all` began its signals 100-150
  -- us later without. Nothing of the exits they cause is handled before
  -- the bookkeeping is done (that needs a turn of the loop). After a
  -- shutdown's early pass there is no second one: it would find every run
  -- signalled (or gone) and send nothing, at a cold walk of every instance
  -- twice while the services end (a run that began after the early pass,
  -- or one the pass left, is signalled by its own stop, Instance:send).
  -- The stop's own budget, whatever orch's (Sup.own_budget), its first
  -- pass included (cut under a budget of 10 us: `sup.stop("all")` of 1,000).
  local _ <close> = S.own_budget()
  local flat = one_layer(S, insts)
  if flat and not signalled then signal_layer(insts) end
  shutdown_slice(S)
  -- A status's reads of the figures wait while a stop of many runs.
  local _ <close> = status.paused_for(S, #insts)
  -- The cgroups of the runs it ends go at its end (removed before it
  -- returns), not in the middle of the services' exits.
  local _ <close> = cgroup.defer_removals(S, insts)
  -- Nothing of the set restarts once the stop has begun, even a service
  -- of a later layer that exits on its own meanwhile.
  for _, inst in ipairs(insts) do inst.want = false end
  if flat then
    stop_layer(S, insts, true)
    return
  end
  local remaining = {}
  for _, inst in ipairs(insts) do
    remaining[inst.service] = remaining[inst.service] or {}
    table.insert(remaining[inst.service], inst)
  end
  local pos = positions(S)
  while next(remaining) do
    -- This layer: the services no other remaining service depends on.
    local needed = {}
    for other in pairs(remaining) do
      for _, d in ipairs(S.services[other].cfg.depends_on) do
        if d ~= other then needed[d] = true end
      end
    end
    local layer = in_order(S, remaining, needed, pos)
    if #layer == 0 then layer = in_order(S, remaining, nil, pos) end
    local layer_insts = {}
    for _, name in ipairs(layer) do
      for _, inst in ipairs(remaining[name]) do layer_insts[#layer_insts + 1] = inst end
      remaining[name] = nil
    end
    stop_layer(S, layer_insts)
  end
end

return graph
