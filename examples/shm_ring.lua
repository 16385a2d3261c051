-- shm_ring.lua: the classic bounded buffer. Producer and consumer processes
-- (forked children) share a ring of slots in a SysV shared memory segment,
-- guarded by semaphores:
--   slots[0] "free"  counts empty slots   (producers wait on it)
--   slots[1] "full"  counts filled slots  (consumers wait on it)
--   mutex            one process at a time moves the ring's indexes
--   orch run examples/shm_ring.lua [producers] [consumers] [items-per-producer]
local producers = tonumber(arg and arg[1]) or 2
local consumers = tonumber(arg and arg[2]) or 2
local items = tonumber(arg and arg[3]) or 200
local SLOTS, SLOT_SIZE = 8, 16
local FREE, FULL = 0, 1

-- Layout: head u64 @0 (next slot to fill), tail u64 @8 (next to empty),
-- consumed count @16, consumed sum @24, slots from 32: { producer i8, value i8 }.
local ring = assert(orch.shm.private(32 + SLOTS * SLOT_SIZE))
-- Counters passed between processes: no SEM_UNDO (a producer's posts must
-- survive its exit). The mutex: SEM_UNDO, so a holder that dies releases it.
local slots = assert(orch.sem.private{ n = 2, init = { SLOTS, 0 }, undo = false })
local mutex = assert(orch.sem.private{ init = 1 })
local cleanup <close> = setmetatable({}, { __close = function()
  ring:remove(); slots:remove(); mutex:remove()
end })

local function put(who, value)
  assert(slots:wait(FREE))
  assert(mutex:wait())
  local head = ring:u64(0)
  ring:pack(32 + (head % SLOTS) * SLOT_SIZE, "<i8 i8", who, value)
  ring:set_u64(0, head + 1)
  mutex:post()
  slots:post(FULL)
end

local function take()
  assert(slots:wait(FULL))
  assert(mutex:wait())
  local tail = ring:u64(8)
  local who, value = ring:unpack(32 + (tail % SLOTS) * SLOT_SIZE, "<i8 i8")
  ring:set_u64(8, tail + 1)
  mutex:post()
  slots:post(FREE)
  return who, value
end

local kids = {}
for c = 1, consumers do
  kids[#kids + 1] = assert(orch.fork(function()
    while true do
      local who, value = take()
      if who < 0 then break end          -- the end marker
      ring:add(16, 1)
      ring:add(24, value)
    end
  end))
end
local makers = {}
for p = 1, producers do
  makers[p] = assert(orch.fork(function()
    for i = 1, items do put(p, p * 1000 + i) end
  end))
end

for _, p in ipairs(makers) do assert(p:wait() == 0) end
for _ = 1, consumers do put(-1, 0) end   -- one end marker per consumer
for _, c in ipairs(kids) do assert(c:wait() == 0) end

local expected = 0
for p = 1, producers do
  for i = 1, items do expected = expected + p * 1000 + i end
end
print(("%d producers, %d consumers, %d slots"):format(producers, consumers, SLOTS))
print(("consumed %d of %d items"):format(ring:load(16), producers * items))
print("sum matches:", ring:load(24) == expected)
print("ring indexes:", ring:u64(0), ring:u64(8))
