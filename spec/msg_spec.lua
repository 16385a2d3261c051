-- orch.msg: SysV message queues. A receive (or a send to a full queue)
-- that would block runs on a waiter thread and resumes the task.
local h = require "spec.helper"
local orch = h.orch

local mypid = orch.getpid()
local keystr = h.keystr

local defer = h.make_defer(function(f) finally(f) end)   -- stacked clean-ups

-- A fresh keyed queue, removed when the test ends.
local function newq()
  local key = h.key()
  local q = assert(orch.msg.open{ key = key, create = true })
  defer(function() q:remove() end)
  return q, key
end

local eventually = h.eventually

describe("orch.msg.open", function()
  it("creates a queue with mode 0600; opens it again", function()
    local q, key = newq()
    local st = assert(q:stat())
    assert.are.equal(key, st.key)
    assert.are.equal(tonumber("600", 8), st.mode)
    assert.are.equal(0, st.qnum)
    assert.is_true(st.qbytes > 0)
    assert.matches("^orch%.Msg: id=%d+ key=" .. keystr(key) .. "$", tostring(q))
    local again = assert(orch.msg.open{ key = key })
    assert.is_true(again:send(1, "via the second handle", { nowait = true }))
    assert.are.same({ 1, "via the second handle" }, { q:recv{ nowait = true } })
  end)

  it("fails as expected", function()
    local key = h.key()
    assert.are.same({ nil, "msg.open: no queue for key " .. keystr(key), "ENOENT" },
                    { orch.msg.open{ key = key } })
    local q = assert(orch.msg.open{ key = key, create = true, exclusive = true, mode = tonumber("640", 8) })
    defer(function() q:remove() end)
    assert.are.equal(tonumber("640", 8), q:stat().mode)
    assert.are.same({ nil, "msg.open: a queue exists for key " .. keystr(key), "EEXIST" },
                    { orch.msg.open{ key = key, create = true, exclusive = true } })
  end)

  it("rejects bad arguments", function()
    local key = h.key()
    local cases = {
      { {}, "option 'key': integer expected, got no value" },
      { { key = key, create = "yes" }, "option 'create': boolean expected, got string" },
      { { key = key, mode = tonumber("1000", 8) }, "option 'mode': permission bits" },
      { { key = key, size = 1 }, "unknown option 'size'" },
    }
    for _, c in ipairs(cases) do
      assert.matches("bad argument #1 to 'open' (" .. c[2], h.error_of(function() return orch.msg.open(c[1]) end), 1, true)
    end
  end)
end)

describe("orch.msg.private", function()
  it("creates an IPC_PRIVATE queue", function()
    local q = assert(orch.msg.private())
    defer(function() q:remove() end)
    assert.are.equal(0, q:stat().key)
    assert.are.equal(tonumber("600", 8), q:stat().mode)
    assert.matches("bad argument #1 to 'private' (unknown option 'key')",
                   h.error_of(function() return orch.msg.private{ key = 1 } end), 1, true)
  end)
end)

describe("orch.Msg", function()
  it("sends and receives by type, as msgrcv does", function()
    local q = newq()
    h.run(function()
      for _, m in ipairs({ { 3, "three" }, { 1, "one" }, { 2, "two" }, { 5, "five" }, { 1, "uno" } }) do
        assert.is_true(q:send(m[1], m[2]))
      end
      assert.are.equal(5, q:stat().qnum)
      assert.are.same({ 3, "three" }, { q:recv() })                  -- 0: the first
      assert.are.same({ 2, "two" }, { q:recv{ type = 2 } })          -- exactly 2
      assert.are.same({ 1, "one" }, { q:recv{ type = -4 } })         -- lowest <= 4
      assert.are.same({ 1, "uno" }, { q:recv{ type = -4 } })
      assert.are.same({ 5, "five" }, { q:recv{ type = -5 } })
      assert.are.same({ nil, "msg.recv: no message", "ENOMSG" }, { q:recv{ nowait = true } })
    end)
  end)

  it("carries binary and empty messages; counts only the text", function()
    local q = newq()
    local blob = string.pack("<i8 s1", -1, "a\0b") .. "\0\255"
    h.run(function()
      q:send(7, blob)
      q:send(8, "")
      local st = q:stat()
      assert.are.equal(#blob, st.cbytes)
      assert.are.equal(mypid, st.lspid)
      assert.are.same({ 7, blob }, { q:recv() })
      assert.are.same({ 8, "" }, { q:recv() })
      assert.are.equal(mypid, q:stat().lrpid)
    end)
  end)

  it("refuses a message longer than max, and leaves it queued", function()
    local q = newq()
    h.run(function()
      q:send(1, "0123456789")
      assert.are.same({ nil, "msg.recv: message longer than max (4 bytes)", "E2BIG" },
                      { q:recv{ max = 4 } })
      assert.are.same({ 1, "0123456789" }, { q:recv{ max = 10 } })
    end)
  end)

  it("blocks a receiving task while other tasks' timers keep running", function()
    local q = newq()
    local ticks = 0
    h.run(function()
      local timer = orch.timer.every(0.001, function() ticks = ticks + 1 end)
      local receiver = orch.task(function() return q:recv{ type = 9 } end)
      eventually(function() return ticks >= 10 end)
      assert.are.equal("waiting", receiver:status())
      q:send(9, "late")
      assert.are.same({ 9, "late" }, { receiver:join() })
      timer:stop()
    end)
    assert.is_true(ticks >= 10)
  end)

  it("receives from another process", function()
    local q, key = newq()
    h.run(function()
      local receiver = orch.task(function() return q:recv{ type = 4, timeout = 60 } end)
      orch.sleep(0)
      assert.is_true(os.execute(h.progs .. "/prog_ipc_peer msgsend " .. key .. " 4 hello"))
      assert.are.same({ 4, "hello" }, { receiver:join() })
      local out = h.progs .. "/prog_ipc_peer msgrecv " .. key .. " 6"
      assert.is_true(q:send(6, "to C"))
      assert.are.equal("6 to C", (h.sh(out)))
      assert.are.equal(0, q:stat().qnum)
    end)
  end)

  it("waits in a child forked while the parent has waiters", function()
    local q = newq()
    h.run(function()
      local parent_waiter = orch.task(function() return q:recv{ type = 1 } end)
      orch.sleep(0.01)   -- the parent's waiter thread is blocked in msgrcv
      local child = assert(orch.fork(function()
        local t, data = assert(q:recv{ type = 2, timeout = 60 })   -- a new waiter, in the child
        assert(q:send(3, data .. " back"))
        return t == 2 and 0 or 1
      end))
      orch.sleep(0.01)
      assert(q:send(2, "hello child"))
      assert.are.same({ 3, "hello child back" }, { q:recv{ type = 3, timeout = 60 } })
      assert.are.same({ 0, nil }, { child:wait() })
      assert(q:send(1, "hello parent"))
      assert.are.same({ 1, "hello parent" }, { parent_waiter:join() })
    end)
  end)

  it("serves many receivers, each its own type", function()
    local q = newq()
    h.run(function()
      local tasks = {}
      for i = 1, 20 do tasks[i] = orch.task(function() return q:recv{ type = i } end) end
      orch.sleep(0.01)
      for i = 20, 1, -1 do q:send(i, "m" .. i) end
      for i = 1, 20 do assert.are.same({ i, "m" .. i }, { tasks[i]:join() }) end
    end)
  end)

  it("times out", function()
    local q = newq()
    h.run(function()
      assert.are.same({ nil, "msg.recv: timed out", "ETIMEDOUT" }, { q:recv{ timeout = 0 } })
      assert.are.same({ nil, "msg.recv: timed out", "ETIMEDOUT" }, { q:recv{ timeout = 0.05 } })
      q:send(1, "x")
      assert.are.same({ 1, "x" }, { q:recv{ timeout = 0.05 } })
    end)
  end)

  it("cancels a receive without losing the message", function()
    local q = newq()
    h.run(function()
      local r = orch.task(function() return q:recv() end)
      orch.sleep(0.01)
      r:cancel()
      assert.are.equal("cancelled", r:status())
      -- Send and cancel in the same turn: a message the worker already took
      -- is sent back to the queue.
      for i = 1, 20 do
        local w = orch.task(function() return q:recv() end)
        orch.sleep(0)
        q:send(1, "n" .. i)
        w:cancel()
        assert.are.same({ 1, "n" .. i }, { q:recv{ timeout = 60 } })
      end
    end)
    assert.are.equal(0, q:stat().qnum)
  end)

  it("blocks a send on a full queue until there is room", function()
    local q = newq()
    local qbytes = q:stat().qbytes
    local chunk = string.rep("x", qbytes // 2)
    h.run(function()
      assert.is_true(q:send(1, chunk))
      assert.is_true(q:send(1, chunk))
      local r, msg, ename = q:send(1, "more", { nowait = true })
      assert.is_nil(r)
      assert.matches("^msg%.send: ", msg)
      assert.are.equal("EAGAIN", ename)
      assert.are.same({ nil, "msg.send: timed out", "ETIMEDOUT" }, { q:send(1, "more", { timeout = 0.05 }) })
      local sender = orch.task(function() return q:send(2, "more") end)
      orch.sleep(0.01)
      assert.are.equal("waiting", sender:status())
      assert.are.same({ 1, chunk }, { q:recv() })
      assert.is_true(sender:join())
      assert.are.same({ 1, chunk }, { q:recv() })
      assert.are.same({ 2, "more" }, { q:recv() })
    end)
  end)

  it("wakes a receiver with EIDRM when the queue is removed", function()
    local q = assert(orch.msg.open{ key = h.key(), create = true })
    h.run(function()
      local r = orch.task(function() return q:recv() end)
      -- Removed before the waiter thread is inside msgrcv, the queue would
      -- give EINVAL (no such id): wait until a thread of ours sleeps there.
      local pid = orch.getpid()
      h.eventually(function()
        local p = io.popen("cat /proc/" .. pid .. "/task/*/wchan 2>/dev/null; echo")
        local s = p:read("a")
        p:close()
        return s:find("msgrcv", 1, true)
      end, "the receiver waits in msgrcv")
      assert.is_true(assert(orch.msg.open{ key = q:stat().key }):remove())
      assert.are.same({ nil, "msg.recv: identifier removed", "EIDRM" }, { r:join() })
    end)
  end)

  it("must wait from a task unless nowait is set", function()
    local q = newq()
    assert.has_error(function() q:recv() end, "msg.recv: must be called from a task")
    assert.has_error(function() q:send(1, "x") end, "msg.send: must be called from a task")
    assert.is_true(q:send(1, "x", { nowait = true }))
    assert.are.same({ 1, "x" }, { q:recv{ nowait = true } })
  end)

  it("raises on use after remove or close", function()
    local q = assert(orch.msg.private())
    assert.is_true(q:remove())
    assert.is_true(q:remove())
    assert.are.equal("orch.Msg: closed", tostring(q))
    assert.has_error(function() q:send(1, "x", { nowait = true }) end, "attempt to use a closed orch.Msg")
    assert.has_error(function() q:recv{ nowait = true } end, "attempt to use a closed orch.Msg")
    assert.has_error(function() q:stat() end, "attempt to use a closed orch.Msg")
    local p = assert(orch.msg.private())
    local id = p:stat().id
    defer(function() assert(os.execute("ipcrm -q " .. id)) end)   -- <close> does not remove
    do
      local _ <close> = p
    end
    assert.has_error(function() p:stat() end, "attempt to use a closed orch.Msg")
  end)

  it("rejects bad arguments", function()
    local q = newq()
    local cases = {
      { function() return q:send(0, "x") end, "bad argument #1 to 'send' (message type must be >= 1)" },
      { function() return q:send(-3, "x") end, "bad argument #1 to 'send' (message type must be >= 1)" },
      { function() return q:send(1.5, "x") end, "bad argument #1 to 'send' (number has no integer representation)" },
      { function() return q:send(1, {}) end, "bad argument #2 to 'send' (string expected, got table)" },
      { function() return q:send(1, "x", { nowiat = true }) end, "bad argument #3 to 'send' (unknown option 'nowiat')" },
      { function() return q:send(1, "x", { timeout = -1 }) end, "bad argument #3 to 'send' (option 'timeout': seconds must be" },
      { function() return q:send(1, "x", {}, 4) end, "bad argument #4 to 'send' (no value expected)" },
      { function() return q:recv{ typ = 1 } end, "bad argument #1 to 'recv' (unknown option 'typ')" },
      { function() return q:recv{ max = -1 } end, "bad argument #1 to 'recv' (option 'max': out of range" },
      { function() return q:recv{ timeout = "x" } end, "bad argument #1 to 'recv' (option 'timeout': number expected" },
      { function() return q:recv{ type = "x" } end, "bad argument #1 to 'recv' (option 'type': integer expected, got string)" },
      { function() return q:recv(5) end, "bad argument #1 to 'recv' (table expected, got number)" },
      { function() return q.recv({}) end, "bad argument #1 to 'recv' (orch.Msg expected, got table)" },
    }
    h.check_raises(cases)
    assert.are.equal(0, q:stat().qnum)
  end)
end)
