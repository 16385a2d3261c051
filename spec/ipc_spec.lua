-- orch.ipc: listing the system's SysV objects, ftok keys.
local h = require "spec.helper"
local orch = h.orch

local uid = tonumber((h.sh("id -u")))
local mypid = orch.getpid()

local function find(list, kind, key)
  for _, o in ipairs(list) do
    if o.kind == kind and o.key == key then return o end
  end
end

describe("orch.ipc.list", function()
  it("shows the objects orch created, with owner, mode 0600 and size", function()
    local kshm, ksem, kmsg = h.key(), h.key(), h.key()
    local shm = assert(orch.shm.open{ key = kshm, size = 12345, create = true })
    local sem = assert(orch.sem.open{ key = ksem, n = 3 })
    local msg = assert(orch.msg.open{ key = kmsg, create = true })
    finally(function() shm:remove(); sem:remove(); msg:remove() end)
    h.run(function() msg:send(1, "abcd") end)
    local all = orch.ipc.list()
    local s, m, q = find(all, "shm", kshm), find(all, "sem", ksem), find(all, "msg", kmsg)
    assert.is_table(s)
    assert.is_table(m)
    assert.is_table(q)
    for _, o in ipairs({ s, m, q }) do
      assert.are.equal(tonumber("600", 8), o.mode)
      assert.are.equal(uid, o.owner)
      assert.are.equal(uid, o.uid)
      assert.are.equal(uid, o.cuid)
    end
    assert.are.equal(shm:stat().id, s.id)
    assert.are.equal(12345, s.size)
    assert.are.equal(1, s.nattch)
    assert.are.equal(mypid, s.cpid)
    assert.are.equal(sem:stat().id, m.id)
    assert.are.equal(3, m.size)
    assert.are.equal(3, m.nsems)
    assert.are.equal(msg:stat().id, q.id)
    assert.are.equal(4, q.size)
    assert.are.equal(1, q.qnum)
    assert.are.equal(mypid, q.lspid)
  end)

  it("filters by kind", function()
    local key = h.key()
    local sem = assert(orch.sem.open{ key = key })
    finally(function() sem:remove() end)
    local only = orch.ipc.list("sem")
    assert.is_table(find(only, "sem", key))
    for _, o in ipairs(only) do assert.are.equal("sem", o.kind) end
    assert.is_nil(find(orch.ipc.list("shm"), "sem", key))
    assert.matches("bad argument #1 to 'list' (invalid option 'pipe')",
                   h.error_of(function() return orch.ipc.list("pipe") end), 1, true)
  end)

  it("reports keys as unsigned 32-bit numbers", function()
    local key = 0xfe000000 + (h.key() & 0xffffff)
    local q = assert(orch.msg.open{ key = key, create = true })
    finally(function() q:remove() end)
    assert.are.equal(key, q:stat().key)
    assert.is_table(find(orch.ipc.list("msg"), "msg", key))
    assert.matches("key=0xfe", tostring(q))
  end)
end)

describe("orch.ipc.ftok", function()
  it("derives the same key as ftok(3) would, per path and project id", function()
    local dir = h.tmpdir()
    local k1 = assert(orch.ipc.ftok(dir, 1))
    local k2 = assert(orch.ipc.ftok(dir, 2))
    assert.are.equal(k1, orch.ipc.ftok(dir))
    assert.are_not.equal(k1, k2)
    assert.are.equal(2, k2 >> 24)
    assert.is_true(k1 > 0 and k1 <= 0xffffffff)
  end)

  it("fails on a missing path and rejects bad arguments", function()
    local missing = h.tmpdir() .. "/missing"
    assert.are.same({ nil, "ipc.ftok: no such file or directory", "ENOENT" }, { orch.ipc.ftok(missing) })
    h.check_raises {
      { function() return orch.ipc.ftok("/", 0) end, "bad argument #2 to 'ftok' (project id must be 1 to 255)" },
      { function() return orch.ipc.ftok() end, "bad argument #1 to 'ftok' (string expected, got no value)" },
    }
  end)
end)

describe("the spin before a SysV wait", function()
  -- Before a semop/msgrcv/msgsnd that would block becomes a waiter-thread
  -- job, the loop thread retries it for up to $ORCH_IPC_SPIN_US µs (0: off).
  -- Both paths must give the same results.
  local script = [[
    local q <close> = assert(orch.msg.private())
    local s <close> = assert(orch.sem.private{ n = 2, init = 0, undo = false })
    local n = 300
    local child = assert(orch.fork(function()
      for i = 1, n do
        local _, data = assert(q:recv{ type = 1 })
        assert(q:send(2, data .. "!"))
        assert(s:semop{ { 0, -1 }, { 1, 1 } })
      end
    end))
    local ok = 0
    for i = 1, n do
      assert(q:send(1, tostring(i)))
      local _, data = assert(q:recv{ type = 2 })
      s:post(0)
      assert(s:wait(1))
      if data == i .. "!" then ok = ok + 1 end
    end
    child:wait()
    -- Many waits that nothing will satisfy, started at once: each ends by
    -- its timeout, and the loop keeps serving meanwhile.
    local ticks = 0
    local t = orch.timer.every(0.001, function() ticks = ticks + 1 end)
    local waiters = {}
    for i = 1, 200 do waiters[i] = orch.task(function() return s:wait(0, 0.2) end) end
    local timedout = 0
    for i = 1, 200 do if select(3, waiters[i]:join()) == "ETIMEDOUT" then timedout = timedout + 1 end end
    t:stop()
    q:remove() s:remove()
    print(ok, timedout, ticks > 0)
  ]]
  for _, spin in ipairs({ "0", "50", "1000" }) do
    it("ORCH_IPC_SPIN_US=" .. spin, function()
      local code, out, err = h.cli({ "-e", script }, nil, { ORCH_IPC_SPIN_US = spin })
      assert.are.equal(0, code, err)
      assert.are.equal("300\t200\ttrue\n", out)
    end)
  end
end)
