-- semop_pc.lua: producers and consumers (forked children) over a ring of
-- slots in shared memory, where every step is ONE atomic semop on several
-- semaphores of a set:
--   put:  semop{ {EMPTY, -1}, {LOCK, -1} }   a free slot and the lock, together
--         ... fill the slot ...
--         semop{ {LOCK, 1}, {FULL, 1} }      release the lock and publish the item
--   take: semop{ {FULL, -1}, {LOCK, -1} }  ... empty the slot ...
--         semop{ {LOCK, 1}, {EMPTY, 1} }
-- Taking both units in one semop means a process never sleeps holding the
-- lock while it waits for a slot, which is how the two-semop version
-- deadlocks when the order is wrong. The parent waits for the consumers with
-- wait_zero on a counter each of them takes one unit from when it is done.
--   orch run examples/semop_pc.lua [producers] [consumers] [items-per-producer]
local producers = tonumber(arg and arg[1]) or 2
local consumers = tonumber(arg and arg[2]) or 2
local items = tonumber(arg and arg[3]) or 100
local SLOTS = 4
local EMPTY, FULL, LOCK, RUNNING = 0, 1, 2, 3

-- Layout: head u64 @0, tail u64 @8, consumed count @16, consumed sum @24,
-- slots of one i64 from 32 (-1 tells a consumer to stop).
local ring = assert(orch.shm.private(32 + SLOTS * 8))
-- No SEM_UNDO: a unit passed to another process must survive its sender.
local sems = assert(orch.sem.private{ n = 4, init = { SLOTS, 0, 1, consumers }, undo = false })
local cleanup <close> = setmetatable({}, { __close = function()
  ring:remove(); sems:remove()
end })

local function put(value)
  assert(sems:semop{ { EMPTY, -1 }, { LOCK, -1 } })
  local head = ring:u64(0)
  ring:set_i64(32 + (head % SLOTS) * 8, value)
  ring:set_u64(0, head + 1)
  assert(sems:semop{ { LOCK, 1 }, { FULL, 1 } })
end

local function take()
  assert(sems:semop{ { FULL, -1 }, { LOCK, -1 } })
  local tail = ring:u64(8)
  local value = ring:i64(32 + (tail % SLOTS) * 8)
  ring:set_u64(8, tail + 1)
  if value >= 0 then
    ring:set_u64(16, ring:u64(16) + 1)
    ring:set_u64(24, ring:u64(24) + value)
  end
  assert(sems:semop{ { LOCK, 1 }, { EMPTY, 1 } })
  return value
end

local children, makers = {}, {}
for _ = 1, consumers do
  children[#children + 1] = assert(orch.fork(function()
    while take() >= 0 do end
    assert(sems:semop{ { RUNNING, -1 } })   -- this consumer is done
  end))
end
for p = 1, producers do
  makers[p] = assert(orch.fork(function()
    for i = 1, items do put(p * 1000 + i) end
  end))
end
for _, m in ipairs(makers) do m:wait() end
for _ = 1, consumers do put(-1) end          -- one stop mark per consumer
assert(sems:wait_zero(RUNNING, 60))          -- every consumer has finished
for _, c in ipairs(children) do c:wait() end

local expected = 0
for p = 1, producers do
  for i = 1, items do expected = expected + p * 1000 + i end
end
print(("%d producers, %d consumers, %d slots"):format(producers, consumers, SLOTS))
print(("consumed %d of %d items"):format(ring:u64(16), producers * items))
print("sum matches:", ring:u64(24) == expected)
print("all slots free again:", sems:value(EMPTY) == SLOTS and sems:value(FULL) == 0)
