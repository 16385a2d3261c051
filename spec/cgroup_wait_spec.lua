-- cg:wait in the corners: a cgroup removed from outside while a task waits
-- on it, and a wait at orch's fd limit (no fd for the waiter's own
-- cgroup.events: the inotify fallback). Real cgroups, real processes, real
-- fd limits (prlimit, and fds taken from Lua).
local h = require "spec.helper"
local orch = h.orch

describe("cg:wait", function()
  local defer
  before_each(function() defer = h.make_defer(function(f) finally(f) end) end)

  local function fresh()
    local cg = assert(orch.cgroup.create(h.cgroup_name()))
    local dir = cg:dir()
    defer(function()
      if cg:populated() then
        h.run(function()
          cg:kill()
          assert(cg:wait_empty(20))
        end)
      end
      os.execute("rmdir " .. h.shquote(dir) .. " 2>/dev/null")
      cg:close()
    end)
    return cg
  end

  -- An admin's rmdir (another process) of an empty cgroup, once the loop
  -- has gone through a poll (a spawned process's exit is seen there): a
  -- waiter's cgroup.events is then watched by the kernel, which says
  -- nothing about its removal.
  local function admin_rmdir(dir)
    local p = assert(orch.spawn { "true" })
    p:wait()
    local r = assert(orch.spawn { "rmdir", dir })
    assert.are.same({ 0, nil }, { r:wait() })
  end

  for _, what in ipairs { "populated", "frozen", "thawed" } do
    it("wakes a task waiting for " .. what .. " with ENOENT when the cgroup is removed from outside", function()
      local cg = fresh()
      local dir, path = cg:dir(), cg:path()
      h.run(function()
        -- thawed: a frozen cgroup (empty, so frozen at once) it waits on.
        if what == "thawed" then
          assert(cg:freeze())
          assert.is_true(cg:wait("frozen", 20))
        end
        local got
        -- The timeout is a hang guard: only the removal wakes it.
        local t = orch.task(function() got = { cg:wait(what, 20) } end)
        h.eventually(function() return t:status() ~= "ready" end, "the waiter waits")
        assert.is_nil(got)
        admin_rmdir(dir)
        t:join()
        assert.are.same({ nil, "cgroup.wait: " .. path .. ": no such file or directory", "ENOENT" }, got)
        -- A wait that starts afterwards fails at once, the same way.
        assert.are.same({ nil, "cgroup.wait: " .. path .. ": no such file or directory", "ENOENT" },
          { cg:wait(what) })
      end)
    end)
  end

  it("wakes two waiters of one cgroup removed from outside, and one of another cgroup stays waiting", function()
    local a, b = fresh(), fresh()
    h.run(function()
      local got = {}
      local t1 = orch.task(function() got[1] = { a:wait("populated", 20) } end)
      local t2 = orch.task(function() got[2] = { a:wait("frozen", 20) } end)
      local t3 = orch.task(function() got[3] = { b:wait("populated", 20) } end)
      h.eventually(function()
        return t1:status() ~= "ready" and t2:status() ~= "ready" and t3:status() ~= "ready"
      end, "the three waiters wait")
      admin_rmdir(a:dir())
      t1:join()
      t2:join()
      assert.are.equal("ENOENT", got[1][3])
      assert.are.equal("ENOENT", got[2][3])
      assert.is_nil(got[3])
      -- b's waiter is woken by b itself.
      local p = assert(orch.spawn { "sleep", "60", cgroup = b })
      t3:join()
      assert.are.same({ true }, got[3])
      assert(p:kill("KILL"))
      p:wait()
    end)
  end)

  it("at the fd limit, with no fd for its own cgroup.events, still wakes when the cgroup empties (inotify)", function()
    local name = h.cgroup_name()
    local script = h.script(string.format([[
      local cg = assert(orch.cgroup.create(%q))
      local p = assert(orch.spawn { "sleep", "1000", cgroup = cg })
      -- Every fd taken: the waiter cannot open cgroup.events, and this
      -- orch has never watched a file (libuv's inotify fd is not open yet).
      local held = {}
      while true do
        local f = io.open("/dev/null")
        if not f then break end
        held[#held + 1] = f
      end
      local got
      local t = orch.task(function() got = { cg:wait_empty(60) } end)
      while t:status() == "ready" do orch.sleep(0.01) end   -- until it waits
      io.stdout:write("held ", #held, " waiting ", tostring(got == nil), "\n")
      assert(p:kill("KILL"))
      t:join()
      io.stdout:write("woke ", tostring(got[1]), " ", tostring(got[2]), " ", tostring(got[3]), "\n")
      -- Again, with the watch's inotify fd open now.
      local q = assert(orch.spawn { "sleep", "1000", cgroup = cg })
      for _, f in ipairs(held) do f:close() end
      held = {}
      while true do
        local f = io.open("/dev/null")
        if not f then break end
        held[#held + 1] = f
      end
      got = nil
      t = orch.task(function() got = { cg:wait_empty(60) } end)
      while t:status() == "ready" do orch.sleep(0.01) end   -- until it waits
      assert(q:kill("KILL"))
      t:join()
      io.stdout:write("again ", tostring(got[1]), " ", tostring(got[2]), "\n")
      for _, f in ipairs(held) do f:close() end
      -- The waits watched through inotify: libuv's inotify fd is open (for
      -- the loop's life), and nothing else here watches a file.
      local ls = io.popen("ls -l /proc/" .. orch.getpid() .. "/fd | grep -c inotify")
      io.stdout:write("inotify fds ", ls:read("a"))
      ls:close()
      p:wait()
      q:wait()
      assert(cg:remove())
    ]], name))
    defer(function()
      local cg = orch.cgroup.open(name)
      if cg then
        h.run(function()
          cg:kill()
          cg:wait_empty(20)
        end)
        cg:remove()
        cg:close()
      end
    end)
    local out = h.sh(string.format("prlimit --nofile=64:64 %s run %s 2>&1", h.shquote(h.bin), h.shquote(script)))
    assert.matches("held %d+ waiting true\n", out)
    assert.matches("woke true nil nil\n", out, 1, true)
    assert.matches("again true nil\n", out, 1, true)
    assert.matches("inotify fds 1", out, 1, true)
    assert.is_nil(orch.cgroup.open(name))
  end)
end)
