-- A start of many services (sup.start): each spawn is started with
-- orch.spawn_begin and finished at the next one, so that orch's
-- bookkeeping of one service overlaps the previous child's way to its exec.
-- What the start reports must not change: each exec failure, each process,
-- dependencies started after what they depend on.
local u = require "spec.supervisor_util"
local orch = u.orch

describe("a start of many services", function()
  it("reports each exec failure and starts every other service, dependencies first", function()
    u.with(function(s, logs)
      local n = 40
      for i = 1, n do
        local cmd = i % 4 == 0 and { "/nonexistent/prog" .. i } or u.sh("exec sleep 30")
        s.service { name = "m" .. i, cmd = cmd, restart = "never" }
      end
      s.service { name = "dep", cmd = u.sh("exec sleep 30"), depends_on = { "m1" }, restart = "never" }
      s.service { name = "stuck", cmd = u.sh("exec sleep 30"), depends_on = { "m4" }, restart = "never" }
      assert.is_true(s.start("all"))
      local pids = {}
      for i = 1, n do
        local name = "m" .. i
        if i % 4 == 0 then
          assert.truthy(u.logged(logs, name .. ": cannot start: spawn: no such file: /nonexistent/prog" .. i),
            name .. "'s failure logged")
          assert.are_not.equal("running", u.st(s, name).state)
        else
          assert.is_true(s.wait(name, "running", 10))
          local pid = u.st(s, name).pid
          assert.is_nil(pids[pid])
          pids[pid] = true
        end
      end
      assert.is_true(s.wait("dep", "running", 10))
      assert.are.equal("waiting", u.st(s, "stuck").state)
    end, 90)
  end)

  it("starts its spawns with orch.spawn_begin, and a single restart with orch.spawn", function()
    u.with(function(s)
      local begun, spawned = 0, 0
      local spawn_begin, spawn = orch.spawn_begin, orch.spawn
      orch.spawn_begin = function(...) begun = begun + 1; return spawn_begin(...) end
      orch.spawn = function(...) spawned = spawned + 1; return spawn(...) end
      local ok, err = pcall(function()
        for i = 1, 20 do s.service { name = "b" .. i, cmd = u.sh("exec sleep 30"), backoff = 0 } end
        assert.is_true(s.start("all"))
        assert.is_true(s.wait("all", "running", 30))
        assert.are.same({ 20, 0 }, { begun, spawned })
        local pid = u.st(s, "b7").pid
        orch.kill(pid, "KILL")
        u.until_true(function() local st = u.st(s, "b7"); return st.pid ~= pid and st.state == "running" end)
        assert.are.same({ 20, 1 }, { begun, spawned })
      end)
      orch.spawn_begin, orch.spawn = spawn_begin, spawn
      assert(ok, err)
    end, 90)
  end)
end)
