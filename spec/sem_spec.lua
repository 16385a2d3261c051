-- orch.sem: SysV semaphore sets. Waits never block the loop: a wait that
-- would block runs on a waiter thread and resumes the task.
local h = require "spec.helper"
local orch = h.orch

local uid = tonumber((h.sh("id -u")))
local keystr = h.keystr

local defer = h.make_defer(function(f) finally(f) end)   -- stacked clean-ups

-- A fresh keyed set, removed when the test ends.
local function newsem(opts)
  opts.key = opts.key or h.key()
  local s = assert(orch.sem.open(opts))
  defer(function() s:remove() end)
  return s, opts.key
end

local eventually = h.eventually

describe("orch.sem.open", function()
  it("creates a set with its initial values and mode 0600", function()
    local s, key = newsem{ n = 3, init = { 0, 1, 5 } }
    assert.are.same({ 0, 1, 5 }, { s:value(0), s:value(1), s:value(2) })
    local st = assert(s:stat())
    assert.are.equal(key, st.key)
    assert.are.equal(3, st.nsems)
    assert.are.same({ 0, 1, 5 }, st.values)
    assert.are.equal(tonumber("600", 8), st.mode)
    assert.are.equal(uid, st.uid)
    assert.is_true(st.otime > 0)   -- marked initialised
    assert.matches("^orch%.Sem: id=%d+ key=" .. keystr(key) .. " n=3$", tostring(s))
  end)

  it("initialises only the set it created", function()
    local s, key = newsem{ init = 2 }
    assert.is_true(s:try())
    local again = assert(orch.sem.open{ key = key, init = 7 })
    assert.are.equal(1, again:value())
    assert.are.equal(1, again:stat().nsems)
    local existing = assert(orch.sem.open{ key = key, create = false })
    assert.are.equal(1, existing:value(0))
  end)

  it("fails as expected", function()
    local key = h.key()
    assert.are.same({ nil, "sem.open: no semaphore set for key " .. keystr(key), "ENOENT" },
                    { orch.sem.open{ key = key, create = false } })
    local s = newsem{ key = key, n = 2 }
    assert.are.same({ nil, "sem.open: a semaphore set exists for key " .. keystr(key), "EEXIST" },
                    { orch.sem.open{ key = key, exclusive = true } })
    assert.are.same({ nil, "sem.open: the set for key " .. keystr(key) .. " has 2 semaphores, fewer than n", "EINVAL" },
                    { orch.sem.open{ key = key, n = 3 } })
    assert.is_truthy(s)
  end)

  it("rejects bad arguments", function()
    local key = h.key()
    local cases = {
      { {}, "option 'key': integer expected, got no value" },
      { { key = key, n = 0 }, "option 'n': out of range (1 to 32000)" },
      { { key = key, init = -1 }, "option 'init': value out of range (0 to 32767)" },
      { { key = key, init = 32768 }, "option 'init': value out of range (0 to 32767)" },
      { { key = key, n = 2, init = { 1 } }, "option 'init': table of 2 values expected" },
      { { key = key, n = 2, init = { 1, "x" } }, "option 'init': value 2 out of range" },
      { { key = key, init = "x" }, "option 'init': integer or table expected, got string" },
      { { key = key, undo = "no" }, "option 'undo': boolean expected, got string" },
      { { key = key, mode = -1 }, "option 'mode': permission bits" },
      { { key = key, nn = 1 }, "unknown option 'nn'" },
    }
    for _, c in ipairs(cases) do
      assert.matches("bad argument #1 to 'open' (" .. c[2], h.error_of(function() return orch.sem.open(c[1]) end), 1, true)
    end
    assert.are.same({ nil, "sem.open: no semaphore set for key " .. keystr(key), "ENOENT" },
                    { orch.sem.open{ key = key, create = false } })
  end)
end)

describe("orch.sem.private", function()
  it("creates an IPC_PRIVATE set", function()
    local s = assert(orch.sem.private{ n = 2, init = 3 })
    defer(function() s:remove() end)
    assert.are.same({ 3, 3 }, s:stat().values)
    assert.are.equal(0, s:stat().key)
    local d = assert(orch.sem.private())
    assert.are.equal(1, d:value())
    d:remove()
    assert.matches("bad argument #1 to 'private' (unknown option 'key')",
                   h.error_of(function() return orch.sem.private{ key = 5 } end), 1, true)
  end)
end)

describe("orch.Sem", function()
  it("posts, tries, sets and reads values", function()
    local s = newsem{ n = 2, init = 0 }
    assert.is_false(s:try())
    assert.is_true(s:post())
    assert.is_true(s:post(1))
    assert.are.equal(1, s:value(0))
    assert.is_true(s:try(0))
    assert.is_false(s:try(0))
    assert.is_true(s:set(1, 30))
    assert.are.equal(30, s:value(1))
    s:set(0, 32767)
    local r, msg, ename = s:post(0)
    assert.is_nil(r)
    assert.are.equal("sem.post: numerical result out of range", msg)
    assert.are.equal("ERANGE", ename)
  end)

  it("waits without blocking the loop, and wakes on post", function()
    local s = newsem{ init = 0 }
    local ticks = 0
    h.run(function()
      assert.is_true(s:post())
      assert.is_true(s:wait())   -- fast path
      local timer = orch.timer.every(0.001, function() ticks = ticks + 1 end)
      local waiter = orch.task(function() return s:wait(0) end)
      eventually(function() return ticks >= 5 end)
      assert.are.equal("waiting", waiter:status())
      s:post()
      assert.is_true(waiter:join())
      timer:stop()
    end)
    assert.is_true(ticks >= 5)
    assert.are.equal(0, s:value())
  end)

  it("serves many waiters", function()
    local s = newsem{ n = 2, init = 0 }
    h.run(function()
      local tasks = {}
      for i = 1, 20 do tasks[i] = orch.task(function() return s:wait(i % 2) end) end
      orch.sleep(0.01)
      for i = 1, 20 do s:post(i % 2) end
      for i = 1, 20 do assert.is_true(tasks[i]:join()) end
    end)
    assert.are.same({ 0, 0 }, s:stat().values)
  end)

  it("times out", function()
    local s = newsem{ init = 0 }
    h.run(function()
      assert.are.same({ nil, "sem.wait: timed out", "ETIMEDOUT" }, { s:wait(0, 0) })
      assert.are.same({ nil, "sem.wait: timed out", "ETIMEDOUT" }, { s:wait(0, 0.05) })
      s:post()
      assert.is_true(s:wait(0, 0.05))
    end)
  end)

  it("is woken from another process", function()
    local s, key = newsem{ init = 0 }
    h.run(function()
      local waiter = orch.task(function() return s:wait(0, 60) end)
      orch.sleep(0)
      assert.is_true(os.execute(h.progs .. "/prog_ipc_peer sempost " .. key .. " 0"))
      assert.is_true(waiter:join())
    end)
  end)

  it("cancels a wait without losing the unit", function()
    local s = newsem{ init = 0 }
    h.run(function()
      local waiter = orch.task(function() return s:wait() end)
      orch.sleep(0.01)
      waiter:cancel()
      assert.are.equal("cancelled", waiter:status())
      s:post()
      -- The cancelled wait's worker may take this unit before its interrupt
      -- lands; it then gives it back.
      eventually(function() return s:value() == 1 end)
      -- Post and cancel in the same turn: the worker may already have taken
      -- the unit; then it is posted back. Either way the unit survives.
      for _ = 1, 20 do
        local w = orch.task(function() return s:wait() end)
        assert.is_true(s:try())
        orch.sleep(0)
        s:post()
        w:cancel()
        eventually(function() return s:value() == 1 end)
      end
    end)
    assert.are.equal(1, s:value())
  end)

  it("wakes a waiter with EIDRM when the set is removed", function()
    local s = assert(orch.sem.open{ key = h.key(), init = 0 })
    h.run(function()
      local waiter = orch.task(function() return s:wait() end)
      -- Removed before the waiter's thread is in semop, the set would give
      -- EINVAL: wait until the kernel counts it as waiting (semncnt).
      local id = s:stat().id
      eventually(function()
        local row = h.sh("ipcs -s -i " .. id .. " | awk '$1 == \"0\" { print $3 }'")
        return tonumber(row) == 1
      end, "the waiter is blocked in semop")
      local other = assert(orch.sem.open{ key = s:stat().key })
      assert.is_true(other:remove())
      assert.are.same({ nil, "sem.wait: identifier removed", "EIDRM" }, { waiter:join() })
    end)
    local r, msg, ename = s:post()
    assert.is_nil(r)
    assert.matches("^sem%.post: ", msg)
    assert.are.equal("EINVAL", ename)
  end)

  it("gets its unit back from a holder killed with SIGKILL (SEM_UNDO)", function()
    local s, key = newsem{ init = 1 }
    local pid = tonumber((h.sh(h.progs .. "/prog_semhold " .. key .. " >/dev/null 2>&1 & echo $!")))
    defer(function() os.execute("kill -KILL " .. pid .. " 2>/dev/null") end)
    h.run(function()
      eventually(function() return s:value() == 0 end)   -- the holder took it
      local waiter = orch.task(function() return s:wait(0, 60) end)
      orch.sleep(0)
      assert.is_true(os.execute("kill -KILL " .. pid))
      assert.is_true(waiter:join())
    end)
    assert.are.equal(0, s:value())
  end)

  it("returns units at exit with undo (the default), keeps them without", function()
    local s, key = newsem{ init = 2 }
    local code = h.cli({ "-e", ("assert(orch.sem.open{ key = %d }:try())"):format(key) })
    assert.are.equal(0, code)
    assert.are.equal(2, s:value())
    code = h.cli({ "-e", ("assert(orch.sem.open{ key = %d, undo = false }:try())"):format(key) })
    assert.are.equal(0, code)
    assert.are.equal(1, s:value())
  end)

  it("must wait from a task; the other methods work anywhere", function()
    local s = newsem{ init = 1 }
    assert.has_error(function() s:wait() end, "sem.wait: must be called from a task")
    assert.is_true(s:try())
    assert.is_true(s:post())
  end)

  it("raises on use after remove or close", function()
    local s = assert(orch.sem.open{ key = h.key() })
    assert.is_true(s:remove())
    assert.is_true(s:remove())   -- idempotent
    assert.are.equal("orch.Sem: closed", tostring(s))
    for _, m in ipairs({ "wait", "post", "try", "value", "set", "stat" }) do
      assert.has_error(function() s[m](s, 0, 1) end, "attempt to use a closed orch.Sem")
    end
    local key = h.key()
    local c = assert(orch.sem.open{ key = key })
    defer(function() assert(orch.sem.open{ key = key }):remove() end)
    do
      local _ <close> = c
    end
    assert.has_error(function() c:post() end, "attempt to use a closed orch.Sem")
  end)

  it("rejects bad arguments", function()
    local s = newsem{ n = 2 }
    local cases = {
      { function() return s:post(2) end, "bad argument #1 to 'post' (semaphore index 2 out of range (0 to 1))" },
      { function() return s:try(-1) end, "bad argument #1 to 'try' (semaphore index -1 out of range (0 to 1))" },
      { function() return s:value("x") end, "bad argument #1 to 'value' (number expected, got string)" },
      { function() return s:set(0, 32768) end, "bad argument #2 to 'set' (value out of range (0 to 32767))" },
      { function() return s:set(0) end, "bad argument #2 to 'set' (number expected, got no value)" },
      { function() return s:wait(0, -1) end, "bad argument #2 to 'wait' (seconds must be a finite number >= 0)" },
      { function() return s:wait(0, "x") end, "bad argument #2 to 'wait' (number expected, got string)" },
      { function() return s.post({}) end, "bad argument #1 to 'post' (orch.Sem expected, got table)" },
    }
    h.check_raises(cases)
  end)
end)

describe("sem:wait_zero and sem:semop", function()
  it("wait_zero waits until the value is 0 (a C process takes the units)", function()
    local s, key = newsem{ n = 2, init = { 2, 0 }, undo = false }
    h.run(function()
      assert.is_true(s:wait_zero(1))             -- already 0: at once, no task switch
      assert.are.same({ nil, "sem.wait_zero: timed out", "ETIMEDOUT" }, { s:wait_zero(0, 0) })
      local waiter = orch.task(function() return s:wait_zero(0, 60) end)
      orch.sleep(0)
      assert.are.equal("waiting", waiter:status())
      assert.is_true(os.execute(h.progs .. "/prog_ipc_peer semwait " .. key .. " 0"))
      assert.are.equal("waiting", waiter:status())   -- 1 left: still waiting
      assert.is_true(os.execute(h.progs .. "/prog_ipc_peer semwait " .. key .. " 0"))
      assert.is_true(waiter:join())
      assert.are.same({ nil, "sem.wait_zero: timed out", "ETIMEDOUT" },
                      { (function() s:post(0) return s:wait_zero(0, 0.01) end)() })
    end)
  end)

  it("a C process waiting for zero is released by an orch semop", function()
    local s, key = newsem{ n = 2, init = { 1, 0 }, undo = false }
    h.run(function()
      local p = assert(orch.spawn{ h.progs .. "/prog_ipc_peer", "semzero", tostring(key), "0",
                                   stdout = "pipe" })
      h.eventually(function() return s:stat().zcnt[1] == 1 end, "the C process waits for zero")
      assert.is_true(s:semop{ { 0, -1 }, { 1, 1 } })
      assert.are.equal("zero\n", p.stdout:read_all())
      assert.are.equal(0, p:wait())
      assert.are.same({ 0, 1 }, s:stat().values)
    end)
  end)

  it("applies several operations atomically: P on one, V on another, or nothing", function()
    local s = newsem{ n = 3, init = { 1, 0, 0 }, undo = false }
    h.run(function()
      assert.is_true(s:semop{ { 0, -1 }, { 1, 1 } })
      assert.are.same({ 0, 1, 0 }, s:stat().values)
      -- Sem 0 is 0 now: the whole set of operations would block; nothing is done.
      assert.are.same({ nil, "sem.semop: would block", "EAGAIN" },
                      { s:semop({ { 1, -1 }, { 0, -1 }, { 2, 1 } }, { nowait = true }) })
      assert.are.same({ nil, "sem.semop: would block", "EAGAIN" },
                      { s:semop{ { 1, -1 }, { 0, -1, nowait = true } } })
      assert.are.same({ nil, "sem.semop: timed out", "ETIMEDOUT" },
                      { s:semop({ { 1, -1 }, { 0, -1 } }, { timeout = 0.01 }) })
      assert.are.same({ 0, 1, 0 }, s:stat().values)
      -- Operations with a value: take 2 from sem 1 only when sem 2 is 0.
      s:set(1, 3)
      assert.is_true(s:semop{ { 2, 0 }, { 1, -2 }, { 0, 5 } })
      assert.are.same({ 5, 1, 0 }, s:stat().values)
      -- Over 32767 fails as a whole (ERANGE), and nothing moves.
      s:set(2, 32767)
      assert.are.same({ nil, "sem.semop: numerical result out of range", "ERANGE" },
                      { s:semop{ { 0, -1 }, { 2, 1 } } })
      assert.are.same({ 5, 1, 32767 }, s:stat().values)
    end)
  end)

  it("waits off the loop and is completed by a C process's multi-op", function()
    local s, key = newsem{ n = 2, init = 0, undo = false }
    h.run(function()
      local ticks = 0
      local ticker = orch.timer.every(0.001, function() ticks = ticks + 1 end)
      local waiter = orch.task(function() return s:semop({ { 0, -1 }, { 1, -1 } }, { timeout = 60 }) end)
      orch.sleep(0)
      assert.are.equal("waiting", waiter:status())
      h.eventually(function() return s:stat().ncnt[1] == 1 end, "a waiter thread sleeps in semop")
      -- Posting only one of the two is not enough.
      assert.is_true(os.execute(h.progs .. "/prog_ipc_peer sempost " .. key .. " 0"))
      h.eventually(function() return ticks >= 3 end, "the loop runs while the semop waits")
      assert.are.equal("waiting", waiter:status())
      assert.is_true(os.execute(h.progs .. "/prog_ipc_peer semops " .. key .. " 1:1 1:1 >/dev/null"))
      assert.is_true(waiter:join())
      ticker:stop()
      assert.are.same({ 0, 1 }, s:stat().values)
    end)
  end)

  it("a cancelled multi-op wait that went through is undone", function()
    local s = newsem{ n = 2, init = 0, undo = false }
    h.run(function()
      for _ = 1, 20 do
        local w = orch.task(function() return s:semop{ { 0, -1 }, { 1, 1 } } end)
        orch.sleep(0)
        s:post(0)
        w:cancel()
        -- Either the wait never happened (0 still 1, 1 still 0), or it was
        -- undone (the same); it is never half done.
        h.eventually(function()
          local v = s:stat().values
          return v[1] == 1 and v[2] == 0
        end, "the cancelled semop left no trace")
        assert.is_true(s:try(0))
      end
    end)
  end)

  it("undoing a cancelled semop leaves its waits for zero out", function()
    -- Take a unit of 0 only while 1 is zero. The worker's semop goes through,
    -- then 1 stops being zero, then the task is cancelled: the undo must give
    -- the unit back (a wait for zero in the undo would now fail it all).
    local s = newsem{ n = 2, init = 0, undo = false }
    h.run(function()
      for _ = 1, 5 do
        local w = orch.task(function() return s:semop{ { 0, -1 }, { 1, 0 } } end)
        eventually(function() return s:stat().ncnt[1] == 1 end, "the worker sleeps in semop")
        s:post(0)
        -- No yield: the task cannot see the result before it is cancelled.
        local c0 = os.clock()
        while s:value(0) ~= 0 and os.clock() - c0 < 10 do end
        assert.are.equal(0, s:value(0))
        s:set(1, 1)
        w:cancel()
        eventually(function() return s:value(0) == 1 end, "the unit given back")
        s:set(0, 0)
        s:set(1, 0)
      end
    end)
  end)

  it("uses SEM_UNDO per operation: a dying holder's units come back", function()
    local s, key = newsem{ n = 2, init = { 1, 1 } }    -- undo by default
    local code = h.cli({ "-e", ([[
      local s = assert(orch.sem.open{ key = %d, create = false, undo = false })
      assert(s:semop{ { 0, -1, undo = true }, { 1, -1 } })
    ]]):format(key) })
    assert.are.equal(0, code)
    assert.are.same({ 1, 0 }, s:stat().values)   -- 0 given back at exit, 1 kept
  end)

  it("must wait from a task unless it cannot wait", function()
    local s = newsem{ init = 0 }
    assert.has_error(function() s:semop{ { 0, -1 } } end, "sem.semop: must be called from a task")
    assert.has_error(function() s:wait_zero(0, 1) end, "sem.wait_zero: must be called from a task")
    assert.are.same({ nil, "sem.semop: would block", "EAGAIN" }, { s:semop({ { 0, -1 } }, { nowait = true }) })
    assert.are.same({ nil, "sem.semop: timed out", "ETIMEDOUT" }, { s:semop({ { 0, -1 } }, { timeout = 0 }) })
    assert.is_true(s:wait_zero(0, 0))
    assert.is_true(s:semop({ { 0, 1 } }, { nowait = true }))
  end)

  it("rejects bad arguments", function()
    local s = newsem{ n = 2 }
    local many = {}
    for i = 1, 501 do many[i] = { 0, 1 } end
    h.check_raises({
      { function() return s:semop() end, "bad argument #1 to 'semop' (table expected, got no value)" },
      { function() return s:semop{} end, "bad argument #1 to 'semop' (1 to 500 operations expected, got 0)" },
      { function() return s:semop(many) end, "bad argument #1 to 'semop' (1 to 500 operations expected, got 501)" },
      { function() return s:semop{ 1 } end, "bad argument #1 to 'semop' (operation 1: table {i, op} expected, got number)" },
      { function() return s:semop{ { 0, 1 }, { 2, 1 } } end, "(operation 2: semaphore index out of range (0 to 1))" },
      { function() return s:semop{ { 0 } } end, "(operation 1: op must be an integer from -32767 to 32767)" },
      { function() return s:semop{ { 0, 40000 } } end, "(operation 1: op must be an integer from -32767 to 32767)" },
      { function() return s:semop{ { 0, 0.5 } } end, "(operation 1: op must be an integer from -32767 to 32767)" },
      { function() return s:semop{ { 0, 1, udno = true } } end, "bad argument #1 to 'semop' (operation 1: unknown option 'udno')" },
      { function() return s:semop{ { 0, 1, undo = 1 } } end, "bad argument #1 to 'semop' (operation 1: option 'undo': boolean expected, got number)" },
      { function() return s:semop({ { 0, 1 } }, { timeout = -1 }) end, "bad argument #2 to 'semop' (option 'timeout': seconds must be a finite number >= 0)" },
      { function() return s:semop({ { 0, 1 } }, { timeout = "x" }) end, "bad argument #2 to 'semop' (option 'timeout': number expected, got string)" },
      { function() return s:semop({ { 0, 1 } }, { wait = 1 }) end, "bad argument #2 to 'semop' (unknown option 'wait')" },
      { function() return s:semop({ { 0, 1 } }, 5) end, "bad argument #2 to 'semop' (table expected, got number)" },
      { function() return s:semop({ { 0, 1 } }, {}, 1) end, "bad argument #3 to 'semop' (no value expected)" },
      { function() return s:wait_zero(2) end, "bad argument #1 to 'wait_zero' (semaphore index 2 out of range (0 to 1))" },
      { function() return s:wait_zero(0, -1) end, "bad argument #2 to 'wait_zero' (seconds must be a finite number >= 0)" },
    })
    assert.are.same({ 1, 1 }, s:stat().values)
  end)
end)
