--- orch: the user-facing module.
-- Builds the `orch` table from the C core (`orch.core`, one table per C
-- module, merged in order) and the Lua layers in lua/orch/.
local core = require "orch.core"

local orch = {}

local order = { "core", "timer", "signal", "proc", "stream", "region", "shm", "mmap",
                "sem", "msg", "ipc", "heartbeat", "notify", "term" }

for _, name in ipairs(order) do
  local m = core[name]
  if m then
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
end

-- Lua layers: each returns function(orch) that adds or wraps fields.
-- A layer whose C module is not built is skipped.
local layers = {
  { "orch.proc", "proc" },
  { "orch.stream", "stream" },
  { "orch.heartbeat_layer", "heartbeat" },
}
for _, l in ipairs(layers) do
  if core[l[2]] then
    local ok, layer = pcall(require, l[1])
    if ok and type(layer) == "function" then layer(orch)
    elseif not ok and not tostring(layer):find("no orch module", 1, true) then error(layer, 0) end
  end
end

-- orch.run(fn, ...) drives the loop from a host Lua; orch.run{...} (a table)
-- spawns a command and captures its output (see orch.proc).
local run_loop = orch.run
function orch.run(a, ...)
  if type(a) == "table" and orch.capture then return orch.capture(a, ...) end
  return run_loop(a, ...)
end

return orch
