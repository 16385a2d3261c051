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

describe("the brief wait before a SysV wait", function()
  -- Before a semop/msgrcv/msgsnd that would block becomes a waiter-thread
  -- job, the loop thread retries it for up to $ORCH_IPC_SPIN_US µs (default
  -- 0), then sleeps in the call itself for up to $ORCH_IPC_SLEEP_US µs
  -- (default 500; a guard thread ends it). Every mix must give the same
  -- results.
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
      -- Nothing comes: the child's own guard ends its brief sleeps.
      assert(select(3, q:recv{ type = 3, timeout = 0.05 }) == "ETIMEDOUT")
      assert(select(3, s:wait(0, 0.05)) == "ETIMEDOUT")
    end))
    local ok = 0
    for i = 1, n do
      assert(q:send(1, tostring(i)))
      local _, data = assert(q:recv{ type = 2 })
      s:post(0)
      assert(s:wait(1))
      if data == i .. "!" then ok = ok + 1 end
    end
    assert(child:wait() == 0)
    -- Many waits that nothing will satisfy, started at once: each ends by
    -- its timeout, and the loop keeps serving meanwhile.
    local ticks = 0
    local t = orch.timer.every(0.001, function() ticks = ticks + 1 end)
    local waiters = {}
    for i = 1, 200 do waiters[i] = orch.task(function() return s:wait(0, 0.2) end) end
    for i = 201, 300 do waiters[i] = orch.task(function() return q:recv{ type = 9, timeout = 0.2 } end) end
    local timedout = 0
    for i = 1, 300 do if select(3, waiters[i]:join()) == "ETIMEDOUT" then timedout = timedout + 1 end end
    t:stop()
    q:remove() s:remove()
    print(ok, timedout, ticks > 0)
  ]]
  -- Runs orch -e src with env, killed after 120 s: a brief sleep that
  -- nothing ends would hold the loop (and the run) forever.
  local function run(src, env)
    local d = h.tmpdir()
    local path = h.script(src)
    local parts = {}
    for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. v end
    local cmd = ("%s timeout -s KILL 120 %s run %s >%s/out 2>%s/err"):format(
      table.concat(parts, " "), h.bin, path, d, d)
    local _, how, code = os.execute(cmd)
    if how == "signal" then code = 128 + code end
    local function slurp(f) local fh = io.open(f, "rb"); local x = fh:read("a"); fh:close(); return x end
    return code, slurp(d .. "/out"), slurp(d .. "/err")
  end
  for _, mix in ipairs({ { "0", "0" }, { "0", "500" }, { "50", "0" }, { "50", "500" }, { "0", "10000" } }) do
    it("ORCH_IPC_SPIN_US=" .. mix[1] .. " ORCH_IPC_SLEEP_US=" .. mix[2], function()
      local code, out, err = run(script, { ORCH_IPC_SPIN_US = mix[1], ORCH_IPC_SLEEP_US = mix[2] })
      assert.are.equal(0, code, err)
      assert.are.equal("300\t300\ttrue\n", out)
      -- orch run guards the realtime signals, but not the one that ends
      -- brief sleeps: it must never reach a handler that logs it.
      assert.is_nil(err:find("received SIG", 1, true), err)
    end)
  end

  it("sleeps in the call on the loop thread, with no waiter thread", function()
    -- The peer answers at once, well within a 10 ms budget: the exchange
    -- runs without any waiter thread, the guard being the only thread
    -- beside the loop's.
    local src = [[
      local q <close> = assert(orch.msg.private())
      local s <close> = assert(orch.sem.private{ n = 2, init = 0, undo = false })
      local child = assert(orch.fork(function()
        for _ = 1, 50 do
          local _, d = assert(q:recv{ type = 1 })
          assert(q:send(2, d))
          assert(s:wait(0)); s:post(1)
        end
      end))
      for i = 1, 50 do
        assert(q:send(1, "x")); assert(q:recv{ type = 2 })
        s:post(0); assert(s:wait(1))
      end
      assert(child:wait() == 0)
      q:remove() s:remove()
      local names = {}
      local p = io.popen("cat /proc/" .. orch.getpid() .. "/task/*/comm")
      for line in p:lines() do names[#names + 1] = line end
      p:close()
      table.sort(names)
      print(table.concat(names, ","))
    ]]
    local code, out, err = run(src, { ORCH_IPC_SLEEP_US = "10000" })
    assert.are.equal(0, code, err)
    assert.are.equal("orch,orch-ipc-guard\n", out)
  end)

  it("keeps the guard's signal away from orch.signal.protect", function()
    -- protect() guards every realtime signal but orch's own: were the
    -- guard's signal among them, each brief sleep the guard ends would
    -- reach the protecting handler (and be logged) instead of the silent one.
    local src = [[
      local q <close> = assert(orch.msg.private())
      assert(select(3, q:recv{ timeout = 0.01 }) == "ETIMEDOUT")
      assert(orch.signal.protect())
      for _ = 1, 3 do assert(select(3, q:recv{ timeout = 0.01 }) == "ETIMEDOUT") end
      for _, name in ipairs(orch.signal.protected()) do
        if name == "RTMAX-1" or name == "RTMIN+29" then print("guarded", name) end
      end
      q:remove()
      print("done")
    ]]
    local code, out, err = run(src, { ORCH_IPC_SLEEP_US = "2000" })
    assert.are.equal(0, code, err)
    assert.are.equal("done\n", out)
    assert.is_nil(err:find("received SIG", 1, true), err)
  end)

  it("parks the guard once no wait sleeps: an idle orch does not wake up", function()
    -- After a sleep the guard ended, its thread must stop running: its
    -- count of runs (schedstat's third field) stops moving.
    local src = [[
      local q <close> = assert(orch.msg.private())
      assert(select(3, q:recv{ timeout = 0.01 }) == "ETIMEDOUT")
      local function runs()
        local p = io.popen("for t in /proc/" .. orch.getpid() .. "/task/*; do echo $(cat $t/comm) $(cut -d' ' -f3 $t/schedstat); done")
        local n
        for line in p:lines() do n = n or line:match("^orch%-ipc%-guard (%d+)$") end
        p:close()
        return n
      end
      assert(runs(), "no guard thread")
      local parked = false
      local deadline = orch.now() + 60
      while not parked and orch.now() < deadline do
        local a = runs()
        orch.sleep(0.1)   -- sampling: 400 of its ticks if it still ran
        parked = runs() == a
      end
      q:remove()
      print(parked)
    ]]
    local code, out, err = run(src, {})
    assert.are.equal(0, code, err)
    assert.are.equal("true\n", out)
  end)

  it("never sleeps past the caller's timeout", function()
    -- A 1 ms timeout inside a 10 ms budget: the wait still times out, and
    -- no waiter thread is needed for it.
    local src = [[
      local q <close> = assert(orch.msg.private())
      local s <close> = assert(orch.sem.private{ init = 0 })
      local r = { select(2, q:recv{ timeout = 0.001 }) }
      local w = { select(2, s:wait(0, 0.001)) }
      q:remove() s:remove()
      print(r[1], r[2], w[1], w[2])
    ]]
    local code, out, err = run(src, { ORCH_IPC_SLEEP_US = "10000" })
    assert.are.equal(0, code, err)
    assert.are.equal("msg.recv: timed out\tETIMEDOUT\tsem.wait: timed out\tETIMEDOUT\n", out)
  end)
end)
