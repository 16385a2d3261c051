-- The restart path of a crashed service: what runs between the exit and
-- the replacement's spawn is what its users wait for (issue 15).
local u = require "spec.supervisor_util"
local orch = u.orch

describe("a restart", function()
  it("loads no module between the exit and the spawn: the first start loaded them", function()
    u.with(function(s, logs)
      s.service { name = "lm", cmd = u.sh("exec sleep 30"), backoff = 0, start_limit = false }
      assert.is_true(s.start("lm"))
      assert.is_true(s.wait("lm", "running", 10))
      local pid = u.st(s, "lm").pid
      -- What is loaded once the service runs; a module loaded later is
      -- one the restart needed and loaded on its way to the spawn.
      local before = {}
      for name in pairs(package.loaded) do before[name] = true end
      local loaded = {}
      local spawn = orch.spawn
      orch.spawn = function(...)
        for name in pairs(package.loaded) do
          if not before[name] then loaded[#loaded + 1] = name end
        end
        return spawn(...)
      end
      local ok, err = pcall(function()
        orch.kill(pid, "KILL")
        assert.is_true(u.until_true(function()
          local st = u.st(s, "lm")
          return st.pid ~= pid and st.state == "running"
        end, 10))
      end)
      orch.spawn = spawn
      assert(ok, err)
      assert.truthy(u.logged(logs, "lm: killed by KILL"), "the restart logged")
      table.sort(loaded)
      assert.are.same({}, loaded)
    end)
  end)
end)
