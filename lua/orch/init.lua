--- orch: the user-facing module.
-- Builds the `orch` table from the C core (`orch.core`, one table per C
-- module, src/modules.c) and the Lua modules in lua/orch/.
local core = require "orch.core"

local orch = {}

-- The public C modules, merged in this order. Each pushes a table whose
-- functions become orch.* and whose sub-tables (orch.proc, orch.timer, ...)
-- are merged by key.
local public = { "core", "timer", "signal", "proc", "daemon", "stream", "shm", "mmap",
                 "sem", "msg", "ipc", "heartbeat", "logfile", "term", "cgroup", "httpparse", "sys" }

for _, name in ipairs(public) do
  local m = assert(core[name], "orch.core." .. name .. " is missing")
  for k, v in pairs(m) do
    if type(v) == "table" and type(orch[k]) == "table" then
      for k2, v2 in pairs(v) do orch[k][k2] = v2 end
    elseif type(v) == "table" then
      local t = {}
      for k2, v2 in pairs(v) do t[k2] = v2 end
      orch[k] = t
    else
      orch[k] = v
    end
  end
end

-- orch.exit(code) while a supervisor runs (sup.run) stops its services
-- first, as a shutdown does, and exits with `code` once they are stopped:
-- an exit never leaves services running unsupervised (doc/core.md). A
-- running supervisor registers a hook here: hook(code) returns "wait"
-- (it will exit with code once stopped; the caller waits), "return" (the
-- call comes from its own stop, which goes on and then exits with code), or
-- nil (nothing left to stop). orch.exit (src/l_core.c) calls the dispatcher.
do
  local set, hooks = orch._exit_hook, {}
  local function dispatch(code)
    local wait, back
    for _, fn in pairs(hooks) do
      local r = fn(code)
      if r == "wait" then wait = true elseif r == "return" then back = true end
    end
    return back and "return" or wait and "wait" or nil
  end
  function orch._exit_hook(key, fn)
    if key == nil then error("bad argument #1 to '_exit_hook' (a key expected)", 2) end
    if fn ~= nil and type(fn) ~= "function" then error("bad argument #2 to '_exit_hook' (function expected)", 2) end
    hooks[key] = fn
    set(next(hooks) ~= nil and dispatch or nil)
  end
end

-- The Lua modules that complete a C one: each returns its module.
orch.heartbeat = require "orch.heartbeat"
orch.capture = require("orch.proc").capture

-- orch.run(fn, ...) drives the loop from a host Lua; orch.run{...} (a table)
-- spawns a command and captures its output (see orch.proc).
local run_loop = orch.run
function orch.run(a, ...)
  if type(a) == "table" then return orch.capture(a, ...) end
  return run_loop(a, ...)
end

return orch
