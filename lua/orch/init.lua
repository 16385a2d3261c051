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

-- The modules every command needs are merged now (tasks, exit, connect,
-- the checks of a socket's directory: what `orch ctl` uses); the rest, with
-- the Lua modules that complete them, when `orch` is first asked for a key
-- it does not hold, or iterated. Their C modules open then too (src/runtime.c):
-- a ping does not pay for opening seventeen modules (start-up, issue 15).
-- No key of an eager module is also a lazy one's (merge checks), so the
-- result is the same as merging all in order.
local eager = { core = true, stream = true, sys = true }
local eager_keys = {}

-- kept: the keys a script set before the rest loaded (its own orch.spawn,
-- say), which the rest does not replace, as when everything merged first.
local function merge(name, kept)
  local m = assert(core[name], "orch.core." .. name .. " is missing")
  for k, v in pairs(m) do
    if eager[name] then eager_keys[k] = true
    elseif eager_keys[k] then error("orch.core." .. name .. ": orch." .. k .. " is merged at start already") end
    local have = rawget(orch, k)
    if kept and kept[k] then
      -- (left as the script set it)
    elseif type(v) == "table" and type(have) == "table" then
      for k2, v2 in pairs(v) do have[k2] = v2 end
    elseif type(v) == "table" then
      local t = {}
      for k2, v2 in pairs(v) do t[k2] = v2 end
      rawset(orch, k, t)
    else
      rawset(orch, k, v)
    end
  end
end

for _, name in ipairs(public) do
  if eager[name] then merge(name) end
end

-- The rest of `orch`, once: every other C module (the private ones too:
-- everything orch.core has is then open, as it was when all opened at
-- start), and the Lua modules that complete a C one (each returns its
-- module).
local function merge_rest()
  local kept = {}
  for k in next, orch do
    if not eager_keys[k] then kept[k] = true end
  end
  for _, name in ipairs(public) do
    if not eager[name] then merge(name, kept) end
  end
  local _ = { core.callback, core.fmt }
  if not kept.heartbeat then rawset(orch, "heartbeat", require "orch.heartbeat") end
  if not kept.capture then rawset(orch, "capture", require("orch.proc").capture) end
  setmetatable(orch, nil)
end

local loading
local function load_rest()
  if loading then return end   -- (a module reading orch while it loads)
  loading = true
  local ok, err = pcall(merge_rest)
  loading = nil
  if not ok then error(err, 0) end
end

setmetatable(orch, {
  __index = function(t, k)
    load_rest()
    return rawget(t, k)
  end,
  __pairs = function(t)
    load_rest()
    return next, t, nil
  end,
})

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

-- orch.run(fn, ...) drives the loop from a host Lua; orch.run{...} (a table)
-- spawns a command and captures its output (see orch.proc).
local run_loop = orch.run
function orch.run(a, ...)
  if type(a) == "table" then return orch.capture(a, ...) end
  return run_loop(a, ...)
end

return orch
