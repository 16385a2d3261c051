-- The virtual clock (orch.clock): sleeps, timers and timeouts on virtual
-- time, the jump to the next deadline, real I/O beside it.
local h = require "spec.helper"
local orch = h.orch

-- Runs fn as the main task on the virtual clock; back to the real one after.
local function vrun(fn, opts)
  assert(orch.clock("virtual", opts))
  local ok, a, b = pcall(orch.run, fn)
  assert(orch.clock("real"))
  if not ok then error(a, 0) end
  return a, b
end

describe("orch.clock", function()
  it("says which clock runs", function()
    assert.are.equal("real", orch.clock())
    vrun(function() assert.are.equal("virtual", orch.clock()) end)
    assert.are.equal("real", orch.clock())
  end)

  it("starts where it is told and moves orch.now and orch.time together", function()
    vrun(function()
      assert.are.equal(50, orch.now())
      assert.are.equal(1e9, orch.time())
      orch.sleep(2.5)
      assert.are.equal(52.5, orch.now())
      assert.are.equal(1e9 + 2.5, orch.time())
    end, { now = 50, time = 1e9 })
  end)

  it("wakes sleepers in deadline order, ties in the order they were armed", function()
    local log = {}
    vrun(function()
      local t0 = orch.now()
      for _, s in ipairs { 3, 1, 2, 1, 3 } do
        orch.task(function() orch.sleep(s); log[#log + 1] = s .. "@" .. (orch.now() - t0) end)
      end
      orch.task(function() orch.sleep(1); log[#log + 1] = "x@" .. (orch.now() - t0) end)
    end)
    assert.are.same({ "1@1.0", "1@1.0", "x@1.0", "2@2.0", "3@3.0", "3@3.0" }, log)
  end)

  it("runs a day of a 1 s timer", function()
    local n, last = 0, nil
    vrun(function()
      local t0 = orch.now()
      local t = orch.timer.every(1, function() n = n + 1; last = orch.now() - t0 end)
      orch.sleep(86400.5)
      assert.is_true(t:active())
      assert.is_true(t:stop())
      assert.is_false(t:active())
    end)
    assert.are.equal(86400, n)
    assert.are.equal(86400, last)
  end)

  it("times out waits: a condition, a join, orch.timer.after", function()
    vrun(function()
      local t0 = orch.now()
      local c = orch.cond()
      assert.are.same({ nil, "cond.wait: timed out", "ETIMEDOUT" }, { c:wait(30) })
      assert.are.equal(30, orch.now() - t0)
      local forever = orch.task(function() c:wait() end)
      assert.are.same({ nil, "join: timed out", "ETIMEDOUT" }, { forever:join(7) })
      assert.are.equal(37, orch.now() - t0)
      local fired
      orch.timer.after(3, function() fired = orch.now() - t0 end)
      forever:cancel()
      orch.sleep(10)
      assert.are.equal(40, fired)
    end)
  end)

  it("cancels a sleeping task's virtual timer", function()
    vrun(function()
      local t0 = orch.now()
      local s = orch.task(function() orch.sleep(1000) end)
      orch.sleep(1)
      s:cancel()
      -- Nothing else is armed: the run ends now, not at 1000.
      orch.sleep(2)
      assert.are.equal(3, orch.now() - t0)
    end)
  end)

  it("waits for real work before jumping: a real process and its output", function()
    vrun(function()
      local t0 = orch.now()
      local ticks = 0
      local tick = orch.timer.every(1, function() ticks = ticks + 1 end)
      local p = assert(orch.spawn { "sh", "-c", "read x; echo got $x", stdin = "pipe", stdout = "pipe" })
      p.stdin:write("it\n")
      assert.are.equal("got it\n", p.stdout:read())
      assert.are.same({ 0 }, { p:wait() })
      -- The clock did not run ahead while the child was alive.
      assert.are.equal(0, orch.now() - t0)
      assert.are.equal(0, ticks)
      tick:stop()
    end)
  end)

  it("lets a deadline past the horizon end the run instead of spinning", function()
    local fired, t = false, nil
    assert(orch.clock("virtual", { horizon = 1e6 }))
    orch.run(function()
      t = orch.timer.every(1e9, function() fired = true end)
    end)
    assert.is_false(fired)
    assert.are.same({ nil, "clock: 1 virtual timers are armed", "EBUSY" }, { orch.clock("real") })
    assert.is_true(t:stop())
    assert(orch.clock("real"))
  end)

  it("refuses to switch while virtual timers are armed", function()
    vrun(function()
      local t = orch.timer.after(5, function() end)
      assert.are.same({ nil, "clock: 1 virtual timers are armed", "EBUSY" }, { orch.clock("real") })
      t:stop()
    end)
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() orch.clock("wall") end, "bad argument #1 to 'clock' (invalid option 'wall')")
    assert.has_error(function() orch.clock("virtual", { nwo = 1 }) end, "bad argument #2 to 'clock' (unknown option 'nwo')")
    assert.has_error(function() orch.clock("virtual", { now = -1 }) end,
      "bad argument #2 to 'clock' (option 'now': seconds from 0 to 9e9 expected)")
    assert.has_error(function() orch.clock("real", {}) end, "bad argument #2 to 'clock' (options are for the virtual clock)")
    assert.are.equal("real", orch.clock())
  end)
end)

describe("the real clock", function()
  -- libuv's loop clock counts whole milliseconds, rounded down, read once a
  -- turn: a wait counted from it ended up to a millisecond before its time
  -- by orch.now() whenever the loop woke during it (here a ticker task wakes
  -- it every millisecond). Each wait is held to orch.now(): never shorter
  -- than asked (a lower bound load cannot break; 1 ns for the float).
  it("ends no sleep, task timeout or orch.timer.after before its time by orch.now(), while the loop wakes meanwhile", function()
    h.run(function()
      local ticker = orch.task(function() while true do orch.sleep(0.0003) end end)
      local short = {}
      local function check(what, t0, t1, s)
        if t1 - t0 < s - 1e-9 then short[#short + 1] = string.format("%s: %.6f s of %g", what, t1 - t0, s) end
      end
      local c, fired = orch.cond(), orch.cond()
      for _ = 1, 40 do
        local t0 = orch.now()
        orch.sleep(0.003)
        check("orch.sleep", t0, orch.now(), 0.003)
        t0 = orch.now()
        assert.are.same({ nil, "cond.wait: timed out", "ETIMEDOUT" }, { c:wait(0.003) })
        check("cond:wait's timeout", t0, orch.now(), 0.003)
        t0 = orch.now()
        orch.timer.after(0.003, function() fired:signal(orch.now()) end)
        check("orch.timer.after", t0, fired:wait(), 0.003)
      end
      ticker:cancel()
      assert.are.same({}, short)
    end)
  end)
  -- Waits armed a few microseconds apart (a burst of tasks woken in one
  -- millisecond, each waiting again at once, for fractions of a
  -- millisecond): where the kernel makes the monotonic clock from the
  -- processor's time stamp counter, the due millisecond of most is worked
  -- out from the last read of the clock and the counter since (src/clock.c,
  -- wait_due); with ORCH_WAIT_CLOCK=read (and elsewhere) every wait reads
  -- the clock. In both, none may end before its time by orch.now().
  it("ends no wait of a burst before its time by orch.now(), waits armed microseconds apart, with the waits' clock and without", function()
    local path = h.script([[
      local short, n, rounds, done = 0, 500, 40, 0
      local all_done = orch.cond()
      for i = 1, n do
        orch.task(function()
          for k = 1, rounds do
            local s = ((i * 7 + k * 13) % 100 + 1) * 1e-5      -- 10 us to 1 ms
            local t0 = orch.now()
            orch.sleep(s)
            if orch.now() - t0 < s - 1e-9 then short = short + 1 end
          end
          done = done + 1
          if done == n then all_done:signal() end
        end)
      end
      if done < n then all_done:wait() end
      print(("%d early of %d"):format(short, n * rounds))
    ]])
    for _, env in ipairs { {}, { ORCH_WAIT_CLOCK = "read" } } do
      local code, out, err = h.cli({ "run", path }, nil, env)
      assert.are.equal(0, code, err)
      assert.are.equal("0 early of 20000\n", out)
    end
  end)
  -- A task's wait is due at the first whole millisecond at or after its
  -- end (its end rounded up once), not at the next whole millisecond plus
  -- the wait rounded up (two roundings: up to 2 ms late, 1 on average).
  -- Read without timing: two waits armed within one millisecond, at a
  -- fraction f < 0.7 of it (checked by orch.now() before and after; tried
  -- again otherwise), B of 1 ms first, then A of 0.2 ms. Rounded once, A is
  -- due a millisecond before B and wakes first, however late the loop runs
  -- (the wheel runs its milliseconds in order); rounded twice, both are due
  -- in the same millisecond and wake in the order armed, B first.
  it("makes a task's wait due at the first whole millisecond after its end, not a millisecond later", function()
    h.run(function()
      local order, ok
      for _ = 1, 1000 do
        order = {}
        while (orch.now() * 1000) % 1 > 0.3 do end    -- near the start of a millisecond
        local t0, t1
        local b = orch.task(function() t0 = orch.now() orch.sleep(0.001) order[#order + 1] = "B" end)
        local a = orch.task(function() orch.sleep(0.0002) order[#order + 1] = "A" end)
        local last = orch.task(function() t1 = orch.now() end)
        last:join()
        a:join()
        b:join()
        ok = math.floor(t0 * 1000) == math.floor(t1 * 1000) and (t1 * 1000) % 1 < 0.7
        if ok then break end
      end
      assert.is_true(ok)
      assert.are.same({ "A", "B" }, order)
    end)
  end)
  -- orch.timer.after's wait is due as a task's is (the first whole
  -- millisecond at or after its end), where it was rounded to the nearest
  -- millisecond and counted from the next whole one: below 0.5 ms it fired
  -- at once, 1.4 ms could fire after 1.0, and 1.6 ms was due at the second
  -- whole millisecond after now + 1.6 ms. Without timing: no firing before
  -- its time by orch.now() (a lower bound), and an order. A timer of 2 ms
  -- is armed, then (in the same millisecond, at a fraction f < 0.35 of it:
  -- checked, tried again otherwise) one of 1.6 ms. Due at the first whole
  -- millisecond after its end, the second is due a millisecond before the
  -- first and fires first, however late the loop runs (libuv runs its
  -- timers in due order); rounded to 2 ms from the next whole millisecond,
  -- both are due in the same millisecond and fire in the order armed.
  it("fires orch.timer.after no earlier than its time by orch.now(), at fractions of a millisecond too", function()
    h.run(function()
      local short = {}
      for _ = 1, 20 do
        for _, s in ipairs { 0.0001, 0.0004, 0.0014, 0.0026 } do
          local done = orch.cond()
          local t0 = orch.now()
          orch.timer.after(s, function() done:signal(orch.now()) end)
          local t1 = done:wait()
          if t1 - t0 < s - 1e-9 then short[#short + 1] = string.format("%.6f s of %g", t1 - t0, s) end
        end
      end
      assert.are.same({}, short)
    end)
  end)

  it("makes orch.timer.after due at the first whole millisecond after its end, not a millisecond later", function()
    h.run(function()
      local order, ok
      for _ = 1, 1000 do
        order = {}
        local fired = orch.cond()
        while (orch.now() * 1000) % 1 > 0.2 do end    -- near the start of a millisecond
        local t0 = orch.now()
        orch.timer.after(0.002, function() order[#order + 1] = "2 ms" fired:signal() end)
        orch.timer.after(0.0016, function() order[#order + 1] = "1.6 ms" fired:signal() end)
        local t1 = orch.now()
        while #order < 2 do assert(fired:wait(30), "a timer never fired") end
        ok = math.floor(t0 * 1000) == math.floor(t1 * 1000) and (t1 * 1000) % 1 < 0.35
        if ok then break end
      end
      assert.is_true(ok)
      assert.are.same({ "1.6 ms", "2 ms" }, order)
    end)
  end)
end)
