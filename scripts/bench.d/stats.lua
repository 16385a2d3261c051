-- scripts/bench.d/stats.lua: the statistics the benchmarks' analyses share,
-- plain Lua (they run under `orch run` and under lua5.4 alike):
--   local stats = dofile((arg[0]:match("^(.*)/") or ".") .. "/stats.lua")
local M = {}

--- The median of the numbers in t (t is left as it was); empty when t
-- has none (NaN unless said).
function M.median(t, empty)
  local n = #t
  if n == 0 then
    if empty ~= nil then return empty end
    return 0 / 0
  end
  local s = table.move(t, 1, n, 1, {})
  table.sort(s)
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

return M
