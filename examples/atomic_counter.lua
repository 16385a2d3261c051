-- atomic_counter.lua: a counter in an anonymous shared mapping, incremented
-- by forked children with atomics (no lock: each :add is one atomic
-- instruction, so no increment is lost).
--   orch run examples/atomic_counter.lua [children] [increments]
local children = tonumber(arg and arg[1]) or 4
local increments = tonumber(arg and arg[2]) or 10000

-- Offset 0: the counter (64-bit). Offset 8: the highest child number seen
-- to finish last, kept with a compare-and-swap loop (32-bit).
local m <close> = assert(orch.mmap{ anonymous = true, size = 16 })

local kids = {}
for i = 1, children do
  kids[i] = assert(orch.fork(function()
    for _ = 1, increments do m:add(0, 1) end
    repeat
      local seen = m:load32(8)
      if seen >= i then break end
    until m:cas32(8, seen, i)
  end))
end

for i, k in ipairs(kids) do
  local code, sig = k:wait()
  assert(code == 0, ("child %d failed: %s"):format(i, tostring(sig)))
end

print(("%d children x %d increments = %d"):format(children, increments, m:load(0)))
print("highest child number:", m:load32(8))
assert(m:load(0) == children * increments)
