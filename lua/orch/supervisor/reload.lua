--- orch.supervisor.reload: changing the services of a running supervisor.
-- reload.apply(S, defs) is sup.reload: removed services stop, changed ones
-- restart one by one (each ready before the next), new ones start.
-- reload.collect(module, path) is what `orch ctl reload` reads: it runs the
-- policy script again with the module's functions recording instead of
-- acting, and returns the definitions it declared.
local orch = require "orch"
local schema = require "orch.supervisor.schema"
local graph = require "orch.supervisor.graph"

local reload = {}

--- sup.reload(defs) (task only). Raises (level 3) on an invalid definition.
function reload.apply(S, defs)
  local cfgs, by, givens = {}, {}, {}
  -- Templates stand for their instances.
  local expanded = {}
  for _, def in ipairs(defs) do
    local ok, list = pcall(schema.expand, def)
    if not ok then error(list, 3) end
    table.move(list, 1, #list, #expanded + 1, expanded)
  end
  defs = expanded
  -- A definition equal to the running service's (most of them, in a
  -- reload of a large fleet) keeps that service's checked configuration:
  -- it is neither copied nor checked again (at 10,000 services the copies
  -- and checks were a third of a reload's CPU). The others are.
  local same = {}
  for i, def in ipairs(defs) do
    local old = type(def) == "table" and type(def.name) == "string" and S.services[def.name]
    local cfg
    if old and schema.same_definition(old.cfg, old.given, def) then
      same[i], cfg = true, old.cfg
    else
      local ok
      ok, cfg, givens[i] = pcall(schema.check_copy, def, i)
      if not ok then error(cfg, 3) end
    end
    local cok, cerr = pcall(require("orch.supervisor.cgroup").check, S, cfg)
    if not cok then error(cerr, 3) end
    if by[cfg.name] then error(string.format("service '%s': defined twice", cfg.name), 3) end
    by[cfg.name] = cfg
    cfgs[i] = cfg
  end
  local ok, gerr = pcall(graph.check, by)
  if not ok then error(gerr, 3) end
  local result = { kept = {}, restarted = {}, stopped = {}, added = {} }
  -- Removed services go first (their dependents too, if those change).
  local gone = {}
  for _, n in ipairs(S.order) do
    if not by[n] then
      gone[#gone + 1] = n
      result.stopped[#result.stopped + 1] = n
    end
  end
  local gone_insts = {}
  for _, n in ipairs(gone) do
    for _, inst in ipairs(S.services[n].instances) do gone_insts[#gone_insts + 1] = inst end
  end
  graph.stop_ordered(S, gone_insts)
  for _, n in ipairs(gone) do S:remove(n) end
  -- Changed ones are restarted one by one, each ready before the next.
  for i, cfg in ipairs(cfgs) do
    local old = S.services[cfg.name]
    if not old then
      S:add(cfg, givens[i])
      result.added[#result.added + 1] = cfg.name
    elseif same[i] then
      result.kept[#result.kept + 1] = cfg.name
    else
      local active = false
      for _, inst in ipairs(old.instances) do
        if inst.want or inst.state ~= "stopped" then active = true end
      end
      graph.stop_ordered(S, old.instances)
      local pos = S:remove(cfg.name)
      local svc = S:add(cfg, givens[i], pos)
      result.restarted[#result.restarted + 1] = cfg.name
      if active then
        for _, inst in ipairs(graph.with_dependencies(S, svc.instances)) do inst:start() end
        S.changed:wait_for(function()
          for _, inst in ipairs(svc.instances) do
            local s = inst.state
            if s == "starting" or s == "waiting" or s == "backoff" then return false end
          end
          return true
        end, cfg.start_timeout + 1)
      end
    end
  end
  -- The new order is the order of the new definitions.
  local order = {}
  for i, cfg in ipairs(cfgs) do order[i] = cfg.name end
  S.order = order
  return result
end

local function noop() return true end

-- The functions that record or do nothing while a script is collected.
local COLLECTING = { "service", "run", "start", "stop", "restart", "configure", "handle_signals", "reload" }

--- Runs the policy script `path` (with `args` as its arguments) and returns
-- the list of definitions it gives `module.service`, or nil, message, code.
-- While it runs, module.service records, and run, start, stop, restart,
-- configure, handle_signals and reload do nothing; the other functions are
-- the real ones. The script runs in a coroutine of its own until its main
-- chunk ends or first waits (a waiting call there raises "must be called
-- from a task", which ends the collection): what it would do after that
-- never happens. Nothing yields meanwhile, so no other task ever sees the
-- recording functions.
function reload.collect(module, path, args)
  local fn, err = loadfile(path)
  if not fn then return nil, "reload: " .. tostring(err), "ENOENT" end
  local defs = {}
  local saved = {}
  for _, k in ipairs(COLLECTING) do saved[k] = module[k] module[k] = noop end
  module.service = function(def)
    if type(def) ~= "table" then error("bad argument #1 to 'service' (table expected)", 2) end
    defs[#defs + 1] = def
    return def.name
  end
  args = args or {}
  local co = coroutine.create(fn)
  local ok, res = coroutine.resume(co, table.unpack(args, 1, args.n or #args))
  for _, k in ipairs(COLLECTING) do module[k] = saved[k] end
  if not ok and not (type(res) == "string" and res:find("must be called from a task", 1, true)) then
    return nil, "reload: the script failed: " .. debug.traceback(co, tostring(res)), "EFAILED"
  end
  return defs
end

return reload
