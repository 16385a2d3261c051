-- task:set_cpu_limit / task:cpu_time: a bound on the CPU time one task may
-- use (summed over its resumes; waiting costs nothing), enforced by the
-- runtime's count hook. Checked against the process's CPU clock (os.clock).
local h = require "spec.helper"
local orch = h.orch

-- Burns CPU in slices, yielding between them, until it is stopped.
local function burner()
  local x = 0
  while true do
    for i = 1, 1e4 do x = x + i end
    orch.sleep(0)
  end
end

describe("task:set_cpu_limit", function()
  it("stops a task once the CPU it used passes its limit; the others go on", function()
    h.run(function()
      local ticks = 0
      local ticker = orch.timer.every(0.001, function() ticks = ticks + 1 end)
      local c0 = os.clock()
      local spin = orch.task(burner)
      assert.are.equal(0, spin:set_cpu_limit(0.1))
      local ok, err = pcall(spin.join, spin)
      local used = os.clock() - c0
      ticker:stop()
      assert.is_false(ok)
      assert.matches("orch: task used more than 0.1 s of CPU time %(its CPU limit%)", err)
      assert.are.equal("failed", spin:status())
      local cpu = spin:cpu_time()
      assert.is_true(cpu > 0.1, cpu)
      -- The process used at least what the task did (the kernel's count).
      assert.is_true(used >= cpu * 0.9, ("process %g, task %g"):format(used, cpu))
      assert.is_true(ticks > 0)
    end)
  end)

  it("does not count the time a task waits", function()
    h.run(function()
      local c0 = os.clock()
      local t = orch.task(function()
        for _ = 1, 10 do orch.sleep(0.02) end
        return "done"
      end)
      t:set_cpu_limit(0.05)
      -- Meanwhile another task burns more CPU than t's limit.
      local other = orch.task(function()
        local x = 0
        while os.clock() - c0 < 0.1 do x = x + 1 end
      end)
      assert.are.equal("done", t:join())
      other:join()
      assert.is_true(t:cpu_time() < 0.05)
    end)
  end)

  it("works on the running task, can be raised, and removed with 0 or false", function()
    h.run(function()
      local t = orch.task(function()
        local me = orch.current()
        me:set_cpu_limit(0.02)
        local ok, err = pcall(function()
          local x = 0
          while true do x = x + 1 end
        end)
        assert(not ok and err:find("its CPU limit", 1, true), err)
        assert(me:set_cpu_limit(false) == 0.02)
        -- No limit: the same loop may run on (for a while).
        local x, c0 = 0, os.clock()
        while os.clock() - c0 < 0.05 do x = x + 1 end
        assert(me:set_cpu_limit(100) == 0)
        return "survived"
      end)
      assert.are.equal("survived", t:join())
      assert.is_true(t:cpu_time() >= 0.02)
    end)
  end)

  it("rejects bad arguments", function()
    h.run(function()
      local t = orch.task(function() end)
      h.check_raises({
        { function() return t:set_cpu_limit() end, "bad argument #1 to 'set_cpu_limit' (number expected, got no value)" },
        { function() return t:set_cpu_limit(-1) end, "bad argument #1 to 'set_cpu_limit' (seconds >= 0 expected (0 or false: no limit))" },
        { function() return t:set_cpu_limit(1 / 0) end, "bad argument #1 to 'set_cpu_limit' (seconds >= 0 expected" },
        { function() return t:set_cpu_limit(true) end, "bad argument #1 to 'set_cpu_limit' (number expected, got boolean)" },
        { function() return t:set_cpu_limit(1, 2) end, "bad argument #2 to 'set_cpu_limit' (no value expected)" },
        { function() return t.cpu_time({}) end, "bad argument #1 to 'cpu_time' (orch.Task expected, got table)" },
      })
      t:join()
    end)
  end)
end)
