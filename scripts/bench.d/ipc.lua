-- ipc.lua (run by `orch run`): the orch side of ipc_c.c, same names with
-- _orch. Both processes of the two-process benchmarks are orch (orch.fork).
--   orch run scripts/bench.d/ipc.lua [scale]
local scale = tonumber(arg[1]) or 1
local on_stop = dofile((arg[0]:match("^(.*)/") or ".") .. "/lib.lua").on_stop

local function fork(fn)
  local child = assert(orch.fork(fn))
  on_stop(function() child:kill("KILL") end)   -- before its object goes
  return child
end

-- Message-queue round trips between two processes.
do
  local n = math.floor(50000 * scale)
  local q <close> = on_stop(assert(orch.msg.private()))
  local child = fork(function()
    for _ = 1, n do
      local _, data = assert(q:recv{ type = 1 })
      assert(q:send(2, data))
    end
  end)
  local t0, c0 = orch.now(), os.clock()
  for _ = 1, n do
    assert(q:send(1, "ping"))
    assert(q:recv{ type = 2 })
  end
  local dt, cpu = orch.now() - t0, os.clock() - c0
  child:wait()
  q:remove()
  print(("msg_roundtrip_orch %.0f rt/s"):format(n / dt))
  -- One side's CPU per round trip (every thread of this process): what a
  -- loaded machine does not inflate.
  print(("msg_roundtrip_cpu_orch %.2f us"):format(cpu * 1e6 / n))
end

-- Semaphore hand-overs between two processes, then uncontended pairs.
do
  local n = math.floor(50000 * scale)
  local s <close> = on_stop(assert(orch.sem.private{ n = 2, init = 0, undo = false }))
  local child = fork(function()
    for _ = 1, n do
      assert(s:wait(0))
      s:post(1)
    end
  end)
  local t0, c0 = orch.now(), os.clock()
  for _ = 1, n do
    s:post(0)
    assert(s:wait(1))
  end
  local dt, cpu = orch.now() - t0, os.clock() - c0
  child:wait()
  s:remove()
  print(("sem_pingpong_orch %.0f rt/s"):format(n / dt))
  print(("sem_pingpong_cpu_orch %.2f us"):format(cpu * 1e6 / n))

  local m = math.floor(1000000 * scale)
  local u <close> = on_stop(assert(orch.sem.private{ init = 0 }))   -- SEM_UNDO, like the C side
  t0 = orch.now()
  for i = 1, m do
    u:post()
    u:wait()
    if i & 0xffff == 0 then orch.sleep(0) end   -- a stop's handler runs (lib.on_stop)
  end
  dt = orch.now() - t0
  u:remove()
  print(("sem_postwait_orch %.0f pairs/s"):format(m / dt))
end

-- Typed 32-bit reads and writes on a segment, from Lua.
do
  local n = math.floor(10000000 * scale)
  local r <close> = assert(orch.shm.private(4096))
  r:remove()
  local sum = 0
  local t0 = orch.now()
  for i = 0, n - 1 do
    local off = (i * 4) & 4095
    r:set_u32(off, i & 0xffffffff)
    sum = sum + r:u32(off)
  end
  local dt = orch.now() - t0
  print(("shm_rw_orch %.0f ops/s"):format(2 * n / dt))
end
