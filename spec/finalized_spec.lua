-- Objects whose finalizer has run (a __gc called by hand, or a userdata
-- resurrected by another object's finalizer) must never crash orch: every
-- method and metamethod either works or raises "attempt to use a closed
-- <type>" / "attempt to use a finalized <type>".
local h = require "spec.helper"
local orch = h.orch

-- The methods of an object: its __index table, or the table a function
-- __index closes over.
local function methods_of(obj)
  local idx = getmetatable(obj).__index
  if type(idx) == "function" then
    local _, up = debug.getupvalue(idx, 1)
    idx = up
  end
  local names = {}
  for k, v in pairs(idx or {}) do
    if type(v) == "function" then names[#names + 1] = k end
  end
  table.sort(names)
  return names
end

local acceptable = {
  "attempt to use a closed ", "attempt to use a finalized ", "bad argument ",
  "must be called from a task", "is not a pipe",
}

-- Calls __gc, then every method and metamethod (twice __gc), each in
-- protected mode; every error must be one of the acceptable ones.
local function finalize_and_poke(obj)
  local mt = getmetatable(obj)
  local name = mt.__name
  mt.__gc(obj)
  local called = 0
  for _, m in ipairs(methods_of(obj)) do
    local ok, err = pcall(obj[m], obj)
    called = called + 1
    if not ok then
      local fine = false
      for _, a in ipairs(acceptable) do
        if tostring(err):find(a, 1, true) then fine = true end
      end
      assert(fine, name .. ":" .. m .. " after __gc raised: " .. tostring(err))
    end
  end
  assert.matches("^" .. name:gsub("%.", "%%."), tostring(obj))
  for _, meta in ipairs{ "__close", "__len", "__gc" } do
    if mt[meta] then pcall(mt[meta], obj, nil) end
  end
  mt.__gc(obj)
  return called
end

-- orch.Task has no finalizer: its struct is its userdata, and a finished
-- task leaves nothing pointing into it (src/task.c), so the collector frees
-- it in one cycle. Its coroutine may outlive it.
describe("orch.Task without a finalizer", function()
  it("has no __gc, and a task resurrected by another finalizer still works", function()
    h.run(function()
      local t0 = orch.task(function() return 1 end)
      assert.is_nil(getmetatable(t0).__gc)
      t0:join()
      _G.__orch_spec_resurrected = nil
      do
        local t = orch.task(function() return "r", 2 end)
        t:join()
        setmetatable({ t }, { __gc = function(o) _G.__orch_spec_resurrected = o[1] end })
      end
      collectgarbage()
      collectgarbage()
      local t = _G.__orch_spec_resurrected
      _G.__orch_spec_resurrected = nil
      assert.is_not_nil(t)
      assert.are.equal("done", t:status())
      assert.are.same({ "r", 2 }, { t:join() })
      assert.is_false(t:cancel())
      assert.matches("^orch%.Task: 0x%x+ done$", tostring(t))
    end)
  end)

  it("a coroutine that outlives its collected task is never taken for it", function()
    h.run(function()
      -- Each task waits on a condition with a timeout and returns a value
      -- (its coroutine is kept for the results, not pooled): the timed-out
      -- waits stay in the condition's list, holding the coroutines after
      -- the tasks themselves are collected. A signal then reads each
      -- coroutine's extra space: it must not lead to the freed tasks (under
      -- ASan, a read of freed memory fails the run).
      local c = orch.cond()
      local weak = setmetatable({}, { __mode = "v" })
      for i = 1, 50 do
        weak[i] = orch.task(function() return c:wait(0.001) end)
      end
      for i = 1, 50 do assert.are.same({ nil, "cond.wait: timed out", "ETIMEDOUT" }, { weak[i]:join() }) end
      collectgarbage()
      assert.is_nil(next(weak))
      assert.are.equal(0, c:broadcast())
      -- The condition still works for a live waiter.
      local w = orch.task(function() return c:wait(5) end)
      orch.sleep(0)
      assert.are.equal(1, c:signal("v"))
      assert.are.equal("v", w:join())
    end)
  end)
end)

-- orch.Sem, orch.Msg and orch.Cond have no finalizer (they hold no memory
-- of their own: a SysV object outlives its handle by design), nor has
-- orch.Task (above).
describe("every userdata type after __gc", function()
  local dir
  setup(function() dir = h.tmpdir() end)

  local makers = {
    { "orch.Timer", function() return orch.timer.after(100, function() end) end },
    { "orch.Signal", function() return orch.signal.on("USR2", function() end) end },
    { "orch.Stream", function() local a, b = orch.pipe(); b:close(); return a end },
    { "orch.Listener", function() return assert(orch.listen{ unix = dir .. "/l.sock" }) end },
    { "orch.Dgram", function() return assert(orch.dgram{}) end },
    { "orch.Shm", function() return assert(orch.shm.private(4096)) end },
    { "orch.Mmap", function()
        h.write(dir .. "/m", ("x"):rep(4096))
        return assert(orch.mmap{ path = dir .. "/m" })
      end },
    { "orch.HeartbeatTable", function()
        local key = h.key()
        local t = assert(orch.heartbeat.open{ key = key, create = true, exclusive = true })
        -- A second handle removes the segment once the first is finalized.
        local again = assert(orch.heartbeat.open{ key = key })
        return t, function() again:remove() end
      end },
    { "orch.Cgroup", function()
        local name = h.cgroup_name()
        local cg = assert(orch.cgroup.create(name))
        -- A second handle removes the (empty) cgroup afterwards.
        local again = assert(orch.cgroup.open(cg:path()))
        return cg, function() assert(again:remove()); again:close() end
      end },
  }
  for _, m in ipairs(makers) do
    it(m[1] .. ": every method raises a clear error or works", function()
      h.run(function()
        local obj, cleanup = m[2]()
        assert.are.equal(m[1], getmetatable(obj).__name)
        assert.is_true(finalize_and_poke(obj) > 0)
        if cleanup then cleanup() end
      end)
    end)
  end

  it("orch.Process: every method raises a clear error or works", function()
    h.run(function()
      local p = assert(orch.spawn{ "sleep", "30" })
      local pid = p.pid
      finalize_and_poke(p)
      orch.kill(pid, "KILL")
      h.eventually(function() return not h.alive(pid) end, "sleep killed")
    end)
  end)
end)
