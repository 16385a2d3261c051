-- The runtime: tasks, sleep, clocks, timers, orch.run and orch.exit.
local h = require "spec.helper"
local orch = h.orch

describe("orch.run(fn)", function()
  it("returns the main task's results and passes arguments", function()
    local a, b, n = orch.run(function(x, y) return x + y, "s", select("#", x, y) end, 2, 3)
    assert.are.equal(5, a)
    assert.are.equal("s", b)
    assert.are.equal(2, n)
  end)

  it("raises the main task's error", function()
    local ok, err = pcall(orch.run, function() error("kaboom") end)
    assert.is_false(ok)
    assert.matches("kaboom", err)
  end)

  it("keeps running until every task has finished", function()
    local log = {}
    orch.run(function()
      orch.task(function() orch.sleep(0.05); log[#log + 1] = "late" end)
      log[#log + 1] = "main done"
    end)
    assert.are.same({ "main done", "late" }, log)
  end)

  it("refuses to nest", function()
    local ok, err = pcall(orch.run, function() return orch.run(function() end) end)
    assert.is_false(ok)
    assert.matches("orch.run: the loop is already running", err, 1, true)
  end)

  it("reports a main task that waits for nothing", function()
    local ok, err = pcall(orch.run, function()
      local main = orch.current()
      local other = orch.task(function() main:join() end)
      other:join()   -- each waits for the other: nothing can ever wake them
    end)
    assert.is_false(ok)
    assert.matches("the main task waits for something that can never happen", err, 1, true)
  end)

  it("ends at once when its main task is cancelled, whatever else still runs", function()
    -- A deadline's guard cancels the main task while another task sleeps
    -- for a minute and a child runs: the run ends, the other task is
    -- cancelled (its to-be-closed variable runs), and orch.run says why.
    local closed, p = false, nil
    local t0 = orch.now()
    local ok, err = pcall(orch.run, function()
      local main = orch.current()
      orch.task(function()
        local _ <close> = setmetatable({}, { __close = function() closed = true end })
        orch.sleep(60)
      end)
      p = assert(orch.spawn{ "sleep", "60" })
      orch.timer.after(0.05, function() main:cancel() end)
      p:wait()
    end)
    assert.is_false(ok)
    assert.matches("orch.run: the main task was cancelled", err, 1, true)
    assert.is_true(closed)
    assert.is_true(orch.now() - t0 < 50, "the run waited for the others")
    assert.is_true(h.alive(p.pid))
    orch.kill(p.pid, "KILL")
    h.run(function() p:wait() end)
  end)

  it("ends a spec's run at its deadline (h.run), saying where the test waited", function()
    -- What the test leaves active (here a repeating timer; a service's log
    -- pipe held by an escapee) does not keep the run going either.
    local function waits_here() orch.sleep(60) end
    h.on_deadline = function() return "the test's own state" end
    local tick
    local t0 = orch.now()
    local ok, err = pcall(h.run, function()
      -- (It stops by itself after 20 s: without the fix the run ends then.)
      tick = orch.timer.every(0.5, function() if orch.now() - t0 > 20 then tick:stop() end end)
      orch.task(function() orch.sleep(60) end)
      waits_here()
    end, 1)
    h.on_deadline = nil
    local took = orch.now() - t0
    tick:stop()
    assert.is_true(took < 15, "the run waited for what the test left")
    assert.is_false(ok)
    assert.matches("did not end within its deadline of 1s", err, 1, true)
    assert.matches("in upvalue 'waits_here'", err, 1, true)
    assert.matches("the test's own state", err, 1, true)
  end)

  it("rejects a non-function", function()
    assert.has_error(function() orch.run(42) end)
  end)
end)

describe("orch.exit", function()
  it("ends orch.run with the code", function()
    local r1, msg, ename, code = orch.run(function()
      orch.task(function() orch.sleep(5) end)
      orch.sleep(0.01)
      orch.exit(3)
      error("not reached")
    end)
    assert.is_nil(r1)
    assert.are.equal("orch.exit(3)", msg)
    assert.are.equal("EXIT", ename)
    assert.are.equal(3, code)
  end)

  it("closes the to-be-closed variables of the remaining tasks", function()
    local closed = false
    orch.run(function()
      orch.task(function()
        local _ <close> = setmetatable({}, { __close = function() closed = true end })
        orch.sleep(10)
      end)
      orch.sleep(0.01)
      orch.exit(0)
    end)
    assert.is_true(closed)
  end)

  it("outside a run raises", function()
    assert.has_error(function() orch.exit(1) end, "orch.exit: orch is not running")
  end)
end)

describe("tasks", function()
  it("run concurrently and join returns their results", function()
    local order = {}
    local r = table.pack(h.run(function()
      local a = orch.task(function() orch.sleep(0.03); order[#order + 1] = "a"; return 1, nil, 3 end)
      local b = orch.task(function() orch.sleep(0.01); order[#order + 1] = "b"; return "b" end)
      local x = table.pack(a:join())
      return x.n, x[1], x[3], b:join()
    end))
    assert.are.same({ 3, 1, 3, "b", n = 4 }, r)
    assert.are.same({ "b", "a" }, order)
  end)

  it("start after the current task yields", function()
    local log = {}
    h.run(function()
      local t = orch.task(function() log[#log + 1] = "task" end)
      log[#log + 1] = "creator"
      t:join()
    end)
    assert.are.same({ "creator", "task" }, log)
  end)

  it("join raises the task's error", function()
    local ok, err = pcall(h.run, function()
      local t = orch.task(function() error("inner failure") end)
      return t:join()
    end)
    assert.is_false(ok)
    assert.matches("inner failure", err)
  end)

  it("join on an already finished task returns at once", function()
    local v = h.run(function()
      local t = orch.task(function() return "early" end)
      orch.sleep(0.01)
      assert.are.equal("done", t:status())
      return t:join()
    end)
    assert.are.equal("early", v)
  end)

  it("join with a timeout", function()
    local r = table.pack(h.run(function()
      local t = orch.task(function() orch.sleep(10) end)
      local a, b, c = t:join(0.02)
      t:cancel()
      return a, b, c
    end))
    assert.are.same({ nil, "join: timed out", "ETIMEDOUT", n = 3 }, r)
  end)

  it("several tasks can join the same task", function()
    local r = h.run(function()
      local t = orch.task(function() orch.sleep(0.01) return 7 end)
      local j1 = orch.task(function() return t:join() end)
      local j2 = orch.task(function() return t:join() end)
      return j1:join() + j2:join()
    end)
    assert.are.equal(14, r)
  end)

  it("joiners that timed out or were cancelled are not woken; the others get the results", function()
    local r = h.run(function()
      local release = orch.cond()
      local t = orch.task(function() release:wait() return "v", 2 end)
      local log = {}
      local function joiner(name, timeout)
        return orch.task(function()
          local a, b, c = t:join(timeout)
          log[#log + 1] = name
          return a, b, c
        end)
      end
      local early = joiner("early", 0.01)
      local late1 = joiner("late1")
      local gone = joiner("gone")
      local late2 = joiner("late2", 30)
      orch.sleep(0)
      assert.are.same({ nil, "join: timed out", "ETIMEDOUT" }, { early:join() })
      assert.is_true(gone:cancel())
      release:signal()
      return { late1 = { late1:join() }, late2 = { late2:join() }, log = log,
               gone = gone:status(), again = { t:join() } }
    end)
    assert.are.same({ late1 = { "v", 2 }, late2 = { "v", 2 }, log = { "early", "late1", "late2" },
                      gone = "cancelled", again = { "v", 2 } }, r)
  end)

  it("a failed task's error and traceback stay with it; one whose joiner gave up is reported", function()
    local path = h.script([[
      local t = orch.task(function() orch.sleep(0.05); error("nobody waits any more") end)
      print(t:join(0.01))
      while t:status() ~= "failed" do orch.sleep(0.01) end
      collectgarbage()
      print(pcall(t.join, t))
      print((t:traceback():gsub("\n.*", "")))
      print(t:traceback():match("stack traceback:") ~= nil)
      local u = orch.task(function() error({ code = 7 }) end)
      local ok, e = pcall(u.join, u)
      print(ok, type(e), e.code, u:traceback():match("^%(error object is a table value%)") ~= nil)
      print(orch.task(function() return 1 end):traceback())
    ]])
    local code, out, err = h.cli({ "run", path })
    assert.are.equal(0, code, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal("nil\tjoin: timed out\tETIMEDOUT", lines[1])
    assert.matches("^false\t.*script.lua:1: nobody waits any more$", lines[2])
    assert.matches("^.*script.lua:1: nobody waits any more$", lines[3])
    assert.are.same({ "true", "false\ttable\t7\ttrue", "nil" }, { lines[4], lines[5], lines[6] })
    -- Nobody was joined on it when it failed: reported on stderr, once.
    local _, reports = err:gsub("nobody waits any more\nstack traceback:", "")
    assert.are.equal(1, reports, err)
  end)

  it("status goes ready, waiting, done / failed / cancelled", function()
    local s = h.run(function()
      local seen = {}
      local t = orch.task(function() orch.sleep(0.01) end)
      seen[#seen + 1] = t:status()
      orch.sleep(0)
      seen[#seen + 1] = t:status()
      t:join()
      seen[#seen + 1] = t:status()
      local f = orch.task(function() error("x") end)
      pcall(f.join, f)
      seen[#seen + 1] = f:status()
      local c = orch.task(function() orch.sleep(1) end)
      orch.sleep(0)
      c:cancel()
      seen[#seen + 1] = c:status()
      seen[#seen + 1] = orch.current():status()
      return seen
    end)
    assert.are.same({ "ready", "waiting", "done", "failed", "cancelled", "running" }, s)
  end)

  it("cancel closes to-be-closed variables and join reports it", function()
    local closed, r
    h.run(function()
      local t = orch.task(function()
        local _ <close> = setmetatable({}, { __close = function() closed = true end })
        orch.sleep(10)
      end)
      orch.sleep(0.01)
      assert.is_true(t:cancel())
      assert.is_false(t:cancel())
      r = table.pack(t:join())
    end)
    assert.is_true(closed)
    assert.are.same({ nil, "join: the task was cancelled", "ECANCELED", n = 3 }, r)
  end)

  it("a task can cancel itself", function()
    local after = false
    local st = h.run(function()
      local t = orch.task(function() orch.current():cancel(); after = true end)
      orch.sleep(0.01)
      return t:status()
    end)
    assert.are.equal("cancelled", st)
    assert.is_false(after)
  end)

  it("a task cannot join itself", function()
    local ok, err = pcall(h.run, function() orch.current():join() end)
    assert.is_false(ok)
    assert.matches("join: a task cannot join itself", err, 1, true)
  end)

  it("an error in a task that nobody joins goes to the error handler and the loop goes on", function()
    -- The error is printed on stderr; the run itself completes.
    local v = h.run(function()
      orch.task(function() error("reported, not fatal") end)
      orch.sleep(0.01)
      return "still running"
    end)
    assert.are.equal("still running", v)
  end)

  it("a bare coroutine.yield() yields to the other tasks", function()
    local log = {}
    h.run(function()
      local t = orch.task(function() log[#log + 1] = "other" end)
      coroutine.yield()
      log[#log + 1] = "back"
      t:join()
    end)
    assert.are.same({ "other", "back" }, log)
  end)

  it("a task resumed by hand with coroutine.resume is refused", function()
    local ok, err = pcall(h.run, function()
      local co
      local t = orch.task(function() co = coroutine.running(); orch.sleep(0.05) end)
      orch.sleep(0.01)
      local rok, rerr = coroutine.resume(co)
      assert.is_false(rok)
      assert.matches("resumed by coroutine.resume", rerr)
      t:cancel()
    end)
    assert.is_true(ok, err)
  end)

  it("reuse the coroutine of a task that returned nothing, which its old task no longer touches", function()
    local r = h.run(function()
      local threads = {}
      -- a returns nothing: its coroutine runs b next.
      local a = orch.task(function() threads.a = coroutine.running() end)
      a:join()
      local collected = orch.cond()
      local b = orch.task(function()
        threads.b = coroutine.running()
        collected:wait()                      -- meanwhile a's userdata is collected
        threads.b_current = orch.current()
        orch.sleep(0)                         -- still a task of its own
        return "b ends"
      end)
      orch.sleep(0)                           -- b runs to its wait
      a = nil
      collectgarbage()
      collectgarbage()
      collected:broadcast()
      local res = b:join()
      -- A task that returned values keeps its coroutine (its results live there).
      local c = orch.task(function() return 1, 2 end)
      c:join()
      local d = orch.task(function() threads.d = coroutine.running() end)
      d:join()
      return { same = threads.a == threads.b, b_self = threads.b_current == b, res = res,
               c = table.pack(c:join()), d_new = threads.d ~= threads.b, d_join = select("#", d:join()),
               status = d:status() }
    end)
    assert.are.same({ same = true, b_self = true, res = "b ends", c = { 1, 2, n = 2 }, d_new = true, d_join = 0,
                      status = "done" }, r)
  end)

  it("tasks started in a burst that each run to their end share a few coroutines", function()
    local r = h.run(function()
      local seen, distinct, ran = {}, 0, 0
      local tasks = {}
      for i = 1, 1000 do
        tasks[i] = orch.task(function()
          local co = coroutine.running()
          if not seen[co] then seen[co] = true; distinct = distinct + 1 end
          ran = ran + 1
        end)
      end
      -- With arguments a task has its coroutine from the start (and still
      -- runs as usual).
      local with_args = orch.task(function(a, b) return a + b end, 2, 3)
      for i = 1, 1000 do tasks[i]:join() end
      return { distinct = distinct, ran = ran, sum = with_args:join(), status = tasks[1000]:status() }
    end)
    assert.are.same({ distinct = 1, ran = 1000, sum = 5, status = "done" }, r)
  end)

  it("a task cancelled before its first run never runs; one that has not run yet can be joined", function()
    local r = h.run(function()
      local ran = false
      local t = orch.task(function() ran = true end)
      assert.are.equal("ready", t:status())
      assert.is_true(t:cancel())
      local u = orch.task(function() return "u" end)
      local res = { u:join() }
      orch.sleep(0)
      return { ran = ran, status = t:status(), join = { t:join() }, res = res, again = t:cancel() }
    end)
    assert.are.same({ ran = false, status = "cancelled", join = { nil, "join: the task was cancelled", "ECANCELED" },
                      res = { "u" }, again = false }, r)
  end)

  it("100,000 finished tasks leave the Lua heap where it was after one collection", function()
    -- Sleeping tasks (a coroutine, a function, a task object each: about
    -- 1.4 KiB together while they sleep), all alive at once, then done. A
    -- finished task's objects go in the next full collection: nothing but
    -- the anchors' table (grown to 100,000 slots, 16 bytes each) is left.
    local n = 100000
    local r = h.run(function()
      collectgarbage()
      local before = collectgarbage("count")
      local done = 0
      for i = 1, n do
        orch.task(function() orch.sleep((i % 7) / 1000); done = done + 1 end)
      end
      orch.sleep(0)
      local sleeping = collectgarbage("count")
      h.eventually(function() return done == n end, "every task woke", 60)
      collectgarbage()
      return { sleeping = (sleeping - before) * 1024 / n, left = (collectgarbage("count") - before) * 1024 / n }
    end)
    assert.is_true(r.sleeping > 1000, "a sleeping task takes over 1,000 bytes: " .. r.sleeping)
    assert.is_true(r.left < 40, "bytes left per finished task after one collection: " .. r.left)
  end)

  -- A cycle of the collector counted by a finalizer that makes the next
  -- one: the number of full cycles since it was made.
  local function cycle_counter()
    local c = { n = 0 }
    local function sentinel() setmetatable({}, { __gc = function() c.n = c.n + 1; sentinel() end }) end
    sentinel()
    return c
  end

  it("a burst of sleeping tasks does not make the collector go through them again and again", function()
    -- Their objects and coroutines count towards a cycle from their end
    -- only: while 50,000 tasks are made and start sleeping, the other
    -- allocations (their functions) start a cycle or two; counting every
    -- task at its start, six or more (each marking and sweeping every live
    -- task).
    local n = 50000
    local r = h.run(function()
      collectgarbage()
      local cycles = cycle_counter()
      local done = 0
      for i = 1, n do orch.task(function() orch.sleep((i % 5) / 1000); done = done + 1 end) end
      orch.sleep(0)
      local burst = cycles.n
      h.eventually(function() return done == n end, "every task woke", 60)
      return { burst = burst, done = done }
    end, 90)
    assert.are.equal(n, r.done)
    assert.is_true(r.burst <= 3, "collector cycles during the burst: " .. r.burst)
  end)

  it("a burst of tasks each with a closure of its own starts at most one collector cycle", function()
    -- The function of a task and the two call frames of its first wait
    -- count from the task's end too, like its object and coroutine: the
    -- closures (sharing their upvalues) and frames of 50,000 sleeping tasks
    -- started two or three cycles more, each marking and sweeping every
    -- task made so far.
    local n = 50000
    local r = h.run(function()
      collectgarbage()
      local cycles = cycle_counter()
      local k, done, burst = 0, 0, nil
      for _ = 1, n do
        orch.task(function()
          k = k + 1
          if k == n then burst = cycles.n end   -- the last one started: the burst ends
          orch.sleep((k % 5) / 1000)
          done = done + 1
        end)
      end
      h.eventually(function() return done == n end, "every task woke", 60)
      return { burst = burst, done = done }
    end, 90)
    assert.are.equal(n, r.done)
    assert.is_true(r.burst <= 1, "collector cycles during the burst: " .. r.burst)
  end)

  it("the end of a burst of sleeping tasks runs no collector cycle while the burst sleeps, and one after", function()
    -- 20,000 sleeping tasks hold about 28 MB. Their bytes counting again
    -- as they ended started a cycle with the first few: it marked every
    -- task still asleep, re-traversed every coroutine in its atomic step and
    -- swept, all in one step of 30-60 ms in the middle of the wake-ups,
    -- freeing what had ended in between. Now they wait until nearly the
    -- whole burst has ended, then drive one cycle in small steps, between
    -- turns of the loop too (a burst followed by nothing else). The
    -- wake-ups allocate nothing (a count); the cycle counter's sentinel is
    -- made at each cycle's end only.
    local n = 20000
    local r = h.run(function()
      collectgarbage()
      local cycles = cycle_counter()
      local done, at_last = 0, nil
      for i = 1, n do
        orch.task(function()
          orch.sleep((i % 50) / 1000)
          done = done + 1
          if done == n - n // 50 then at_last = cycles.n end   -- 98% of the burst has ended
        end)
      end
      orch.sleep(0)
      local asleep = cycles.n
      h.eventually(function() return done == n end, "every task woke", 60)
      -- The cycle after the burst goes on by itself, in steps between
      -- turns of the loop: waited for (its end), not slept for.
      local ok = pcall(h.eventually, function() return cycles.n > at_last end, "a cycle after the burst", 60)
      return { asleep = asleep, at_last = at_last, after = ok and cycles.n or at_last, done = done }
    end, 90)
    assert.are.equal(n, r.done)
    assert.are.equal(r.asleep, r.at_last, "collector cycles ended while 2% of the burst or more slept")
    assert.is_true(r.after > r.at_last, "no collector cycle after the burst")
  end)

  it("a burst of tasks made after a full collection runs no collector cycle while it is made and starts", function()
    -- The registry's array, which anchors the unfinished tasks, doubles as
    -- a burst grows (128 KiB more at 8,192 tasks, 256 at 16,384): counted
    -- as an allocation, that growth started a cycle in the middle of the
    -- making, which marked every task made so far and freed nothing. A
    -- fresh orch: its heap of a few hundred KiB, collected, leaves the
    -- collector's next cycle that much allocation away. (The functions
    -- share their upvalues: a loop variable's upvalue, one per task, is
    -- the script's own allocation and counts.)
    local path = h.script([[
      local all_done = orch.cond()
      collectgarbage()
      local cycles = 0
      local function sentinel() setmetatable({}, { __gc = function() cycles = cycles + 1; sentinel() end }) end
      sentinel()
      local n, done = 20000, 0
      for _ = 1, n do
        orch.task(function()
          orch.sleep(math.random(0, 4) / 1000)
          done = done + 1
          if done == n then all_done:signal() end
        end)
      end
      -- One turn: the tasks' first resumes (the subject: made and started).
      orch.sleep(0)
      print(cycles)
      if done < n then all_done:wait() end
      print(done)
    ]])
    local code, out, err = h.cli({ "run", path })
    assert.are.equal(0, code, err)
    assert.are.equal("0\n20000\n", out)
  end)

  it("an ended task's anchor serves a later task: rounds of tasks leave the heap where the first round left it", function()
    -- An unfinished task is anchored at a key of a table of the runtime's
    -- own (src/task.c, "anchors"); an ended task's key goes on a free list
    -- for the next. Were the keys not used again, 50 rounds of 2,000 tasks
    -- would grow the table to 100,000 keys (16 bytes each, 2 MiB with its
    -- array's doubling), kept by every collection.
    local r = h.run(function()
      local function round()
        local fin = 0
        for _ = 1, 2000 do orch.task(function() orch.sleep(0); fin = fin + 1 end) end
        h.eventually(function() return fin == 2000 end, "the round ended", 60)
      end
      round()
      collectgarbage()
      collectgarbage()
      local base = collectgarbage("count")
      for _ = 2, 50 do round() end
      collectgarbage()
      collectgarbage()
      return collectgarbage("count") - base
    end)
    assert.is_true(r < 256, ("the heap grew by %.0f KiB"):format(r))
  end)

  it("the memory of ended tasks still counts: rounds of tasks keep the heap near what is live", function()
    -- 100 rounds of 2,000 tasks alive at once, each round ending before
    -- the next: a task's memory is counted when it ends, so the collector
    -- keeps up and, past the first rounds (which depend on the collector's
    -- state from before), the heap stays within its pause of what is live
    -- (if the ended tasks were never counted, it grew by a round each
    -- time, to over 150 MB).
    local r = h.run(function()
      collectgarbage()
      local base = collectgarbage("count")
      local peak, live = 0, 0
      for round = 1, 100 do
        local fin = 0
        for _ = 1, 2000 do orch.task(function() orch.sleep(0); fin = fin + 1 end) end
        orch.sleep(0)
        if round == 1 then live = collectgarbage("count") - base end
        h.eventually(function() return fin == 2000 end, "the round ended", 60)
        if round > 40 then peak = math.max(peak, collectgarbage("count")) end
      end
      return { peak = peak, base = base, live = live }
    end, 90)
    assert.is_true(r.live > 2000, "2,000 sleeping tasks take over 2 MB: " .. r.live .. " KiB")
    -- The collector's pause (200%) lets the heap reach twice what is live.
    assert.is_true(r.peak < 3 * (r.base + r.live),
      ("the heap reached %.0f KiB from %.0f, one round is %.0f KiB"):format(r.peak, r.base, r.live))
  end)

  it("a stopped collector stays stopped while tasks are made and end", function()
    local ok, r = pcall(h.run, function()
      collectgarbage()
      local cycles = cycle_counter()
      collectgarbage("stop")
      local fin = 0
      for round = 1, 3 do
        for _ = 1, 2000 do orch.task(function() orch.sleep(0); fin = fin + 1 end) end
        h.eventually(function() return fin == round * 2000 end, "the round ended", 60)
      end
      local stopped = { cycles = cycles.n, running = collectgarbage("isrunning") }
      collectgarbage("restart")
      collectgarbage()
      return { stopped = stopped, after = cycles.n > 0, fin = fin }
    end, 90)
    collectgarbage("restart")   -- also when the run failed
    assert(ok, r)
    assert.are.same({ stopped = { cycles = 0, running = false }, after = true, fin = 6000 }, r)
  end)

  it("orch.current is nil outside a task", function()
    assert.is_nil(orch.current())
  end)

  it("tostring names the class and status", function()
    local s = h.run(function() return tostring(orch.current()) end)
    assert.matches("^orch.Task: .* running$", s)
  end)
end)

describe("orch.sleep", function()
  it("suspends only the calling task and wakes in deadline order", function()
    local log = {}
    h.run(function()
      local ts = {}
      for _, d in ipairs({ 0.04, 0.01, 0.02 }) do
        ts[#ts + 1] = orch.task(function() orch.sleep(d); log[#log + 1] = d end)
      end
      for _, t in ipairs(ts) do t:join() end
    end)
    assert.are.same({ 0.01, 0.02, 0.04 }, log)
  end)

  it("wakes thousands of waits near and far in deadline order, equal ones in arming order", function()
    -- Waits within about a second share a wheel of milliseconds, later ones
    -- a heap they leave for the wheel as their time comes; 5,000 tasks
    -- over 0-1.3 s cross that boundary both ways.
    -- planned[i] is the earliest task i's wait can be due (the clock read
    -- just before it armed it), latest[i] the latest (the clock read by
    -- the next task to run: a loaded machine may preempt orch between the
    -- read and the arming).
    local woke, planned, latest, ran = {}, {}, {}, {}
    h.run(function()
      local rnd = 1
      local ts = {}
      for i = 1, 5000 do
        rnd = (rnd * 1103515245 + 12345) % 2147483648
        -- At least 1 ms: orch.sleep(0) is a yield to the tasks queued, not a
        -- timed wait, and runs after timers that expired meanwhile.
        local d = (rnd % 1300 + 1) / 1000
        ts[i] = orch.task(function()
          local t0 = orch.now()
          planned[i] = t0 + d
          local prev = ran[#ran]
          if prev then latest[prev.i] = t0 + prev.d end
          ran[#ran + 1] = { i = i, d = d }
          orch.sleep(d)
          woke[#woke + 1] = i
          -- Each task woken first for its millisecond arms one more wait.
          if i % 7 == 0 then orch.sleep(0.001) end
        end)
      end
      -- 50 waits armed one after the other for the same time.
      local same = {}
      for i = 1, 50 do
        ts[#ts + 1] = orch.task(function() orch.sleep(0.02) same[#same + 1] = i end)
      end
      for _, t in ipairs(ts) do t:join() end
      for i = 1, 50 do assert.are.equal(i, same[i]) end
    end)
    assert.are.equal(5000, #woke)
    -- The loop's clock counts milliseconds of a coarse clock (a few ms a
    -- tick here): deadlines that close may wake either way round.
    for k = 2, #woke do
      local a, b = planned[woke[k - 1]], latest[woke[k]] or math.huge
      assert.is_true(a <= b + 0.01, ("task %d (due by %.4f) woke after task %d (due from %.4f)"):format(woke[k], b, woke[k - 1], a))
    end
  end)

  it("a lone wait beyond the wheel's second fires, and so do two in turn", function()
    local dts = h.run(function()
      local out = {}
      local t0 = orch.now()
      orch.sleep(1.1)
      out[1] = orch.now() - t0
      t0 = orch.now()
      orch.sleep(0.3)
      orch.sleep(1.05)
      out[2] = orch.now() - t0
      return out
    end)
    assert.is_true(dts[1] >= 1.09, "slept " .. dts[1])
    assert.is_true(dts[2] >= 1.34, "slept " .. dts[2])
  end)

  it("waits cancelled in the wheel and in the far heap never fire; the others fire in order", function()
    -- Every other wait, near (within the wheel's second) and far (in the
    -- heap beyond it), is cancelled from the middle of its list or heap
    -- before it is due; the rest wake in deadline order and the run ends.
    local woke, fired_cancelled = {}, 0
    h.run(function()
      local keep, drop = {}, {}
      for i = 1, 400 do
        local d = (i <= 200 and 0.2 or 1.1) + (i % 200) / 1000
        local t = orch.task(function()
          orch.sleep(d)
          if i % 2 == 0 then fired_cancelled = fired_cancelled + 1 end
          woke[#woke + 1] = d
        end)
        if i % 2 == 0 then drop[#drop + 1] = t else keep[#keep + 1] = t end
      end
      orch.sleep(0.05)
      for _, t in ipairs(drop) do t:cancel() end
      for _, t in ipairs(keep) do t:join() end
      for _, t in ipairs(drop) do assert.are.equal("cancelled", t:status()) end
    end)
    assert.are.equal(0, fired_cancelled)
    assert.are.equal(200, #woke)
    for k = 2, #woke do
      assert.is_true(woke[k - 1] <= woke[k], ("a wait of %.3f s woke before one of %.3f s"):format(woke[k], woke[k - 1]))
    end
  end)

  it("a wake-up that cancels the tasks due with it and collects them: they never run, the rest wake", function()
    -- The wheel reads ahead of each wake-up the memory of the next waits of
    -- its list (clock.c): each turn from the live list, so a wake-up may
    -- cancel the tasks due after it and the collector free them. Rounds of
    -- 50 tasks sleeping as long, armed one after the other (most in the
    -- same millisecond): the first to wake cancels every other one of the
    -- round still sleeping and forgets them, and collects.
    local rounds, per = 20, 50
    local r = h.run(function()
      local woke, ran_cancelled, cancelled = 0, 0, 0
      for _ = 1, rounds do
        local tasks, first = {}, nil
        for i = 1, per do
          tasks[i] = orch.task(function()
            orch.sleep(0.005)
            if i % 2 == 0 and first then ran_cancelled = ran_cancelled + 1 end
            woke = woke + 1
            if not first then
              first = i
              for k = 1, per do
                if k % 2 == 0 and k ~= i and tasks[k]:status() == "waiting" then
                  tasks[k]:cancel()
                  cancelled = cancelled + 1
                end
              end
              for k = 1, per do if k % 2 == 0 and k ~= i then tasks[k] = false end end
              collectgarbage()
            end
          end)
        end
        h.eventually(function() return first ~= nil end, "the round's first wake-up", 30)
        for k = 1, per do if tasks[k] then tasks[k]:join() end end
      end
      return { woke = woke, ran_cancelled = ran_cancelled, cancelled = cancelled }
    end, 60)
    assert.are.equal(0, r.ran_cancelled)
    assert.is_true(r.cancelled >= rounds * (per / 2 - 1), "cancelled " .. r.cancelled)
    assert.are.equal(rounds * per - r.cancelled, r.woke)
  end)

  it("tasks due together that return, raise or are joined each end as they should", function()
    -- 300 tasks: of each three, one sleeps 5 ms and returns its index, one
    -- sleeps as long and raises, one joins the raising one (from before it
    -- sleeps) and returns what its join raised. The wheel reads each
    -- sleeping task's memory ahead of waking it; each outcome is the one
    -- expected.
    local r = h.run(function()
      local tasks = {}
      for i = 1, 300 do
        tasks[i] = orch.task(function()
          if i % 3 == 2 then
            local ok, err = pcall(tasks[i + 1].join, tasks[i + 1])
            return ok and "no error" or err
          end
          orch.sleep(0.005)
          if i % 3 == 0 then error("boom " .. i, 0) end
          return i
        end)
      end
      local got = {}
      for i = 1, 300 do
        local ok, v = pcall(tasks[i].join, tasks[i])
        got[i] = { ok, v, tasks[i]:status() }
      end
      return got
    end, 60)
    for i = 1, 300 do
      if i % 3 == 1 then assert.are.same({ true, i, "done" }, r[i])
      elseif i % 3 == 2 then assert.are.same({ true, "boom " .. (i + 1), "done" }, r[i])
      else assert.are.same({ false, "boom " .. i, "failed" }, r[i]) end
    end
  end)

  it("a wait that ended early leaves nothing that keeps orch run alive", function()
    local path = h.script([[
      local c = orch.cond()
      local t = orch.task(function() return c:wait(3600) end)
      local s = orch.task(function() orch.sleep(7200) end)
      orch.sleep(0.01)
      c:signal("early")
      assert(t:join() == "early")
      s:cancel()
      print("done")
    ]])
    local code, out = h.run(function()
      local p = assert(orch.spawn{ h.bin, "run", path, stdout = "pipe" })
      local out = p.stdout:read_all()
      local ok, c = pcall(p.wait, p, 60)
      if p:running() then p:kill("KILL") p:wait() end
      assert(ok, c)
      return c, out
    end)
    assert.are.equal(0, code)
    assert.are.equal("done\n", out)
  end)

  it("waits at least the given time on the monotonic clock", function()
    local dt = h.run(function()
      local t0 = orch.now()
      orch.sleep(0.05)
      return orch.now() - t0
    end)
    assert.is_true(dt >= 0.049, "slept " .. dt)
  end)

  -- The loop's clock is read once a turn; a task that computed for a while
  -- before sleeping, a timer started then, a task in a forked child (whose
  -- loop clock is the parent's at fork time) must still wait the full time.
  it("waits the full time after the task computed (a stale loop clock)", function()
    local function busy(s) local t = orch.now() while orch.now() - t < s do end end
    local dts = h.run(function()
      local out = {}
      busy(0.2)
      local t0 = orch.now()
      orch.sleep(0.1)
      out.sleep = orch.now() - t0
      busy(0.2)
      t0 = orch.now()
      local fired = orch.cond()
      orch.timer.after(0.1, function() fired:signal(orch.now() - t0) end)
      out.timer = fired:wait()
      busy(0.2)
      t0 = orch.now()
      local ok, code = orch.task(function() orch.sleep(0.1) return true end):join()
      out.join = orch.now() - t0
      local r, w = orch.pipe()
      busy(0.2)
      t0 = orch.now()
      r:set_timeout(0.1)
      local got, err = r:read_line()
      out.read_timeout = orch.now() - t0
      r:close(); w:close()
      return out, ok, code, got, err
    end)
    -- The loop's clock may lag the monotonic one by a tick (coarse clock).
    for what, dt in pairs(dts) do assert.is_true(dt >= 0.09, what .. " waited only " .. dt) end
  end)

  it("sleep(0) interleaves tasks", function()
    local log = {}
    h.run(function()
      local a = orch.task(function() for i = 1, 3 do log[#log + 1] = "a" .. i; orch.sleep(0) end end)
      local b = orch.task(function() for i = 1, 3 do log[#log + 1] = "b" .. i; orch.sleep(0) end end)
      a:join(); b:join()
    end)
    assert.are.same({ "a1", "b1", "a2", "b2", "a3", "b3" }, log)
  end)

  it("raises outside a task instead of blocking", function()
    assert.has_error(function() orch.sleep(1) end, "orch.sleep: must be called from a task")
  end)

  it("validates its argument", function()
    for _, bad in ipairs({ -1, 0 / 0, math.huge, "x" }) do
      local ok, err = pcall(h.run, function() orch.sleep(bad) end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'sleep'", err, 1, true)
    end
  end)
end)

describe("orch.cond", function()
  it("signal wakes one waiter with values, broadcast wakes all", function()
    local r = h.run(function()
      local c = orch.cond()
      local got = {}
      local ws = {}
      for i = 1, 3 do
        ws[i] = orch.task(function()
          local r = table.pack(c:wait())   -- not got[#got + 1] = ...: the key is computed before the wait
          got[#got + 1] = r
        end)
      end
      orch.sleep(0)
      assert.are.equal(1, c:signal("a", 1))
      orch.sleep(0)
      assert.are.equal(2, c:broadcast())
      for _, w in ipairs(ws) do w:join() end
      assert.are.equal(0, c:signal())
      return got
    end)
    assert.are.same({ { "a", 1, n = 2 }, { true, n = 1 }, { true, n = 1 } }, r)
  end)

  it("wait times out, and a timed-out or cancelled waiter is not woken later", function()
    h.run(function()
      local c = orch.cond()
      local a, b, e = c:wait(0.01)
      assert.are.same({ nil, "cond.wait: timed out", "ETIMEDOUT" }, { a, b, e })
      local t = orch.task(function() c:wait() end)
      orch.sleep(0)
      t:cancel()
      local other = orch.task(function() return orch.sleep(0.02) or "slept" end)
      orch.sleep(0)
      assert.are.equal(0, c:broadcast())
      assert.are.equal("slept", other:join())
    end)
  end)

  it("wait outside a task raises", function()
    assert.has_error(function() orch.cond():wait() end, "cond:wait: must be called from a task")
  end)
end)

describe("clocks", function()
  it("now is monotonic seconds, time is the wall clock", function()
    local a = orch.now()
    local b = orch.now()
    assert.is_true(b >= a)
    assert.is_true(math.abs(orch.time() - os.time()) < 2)
  end)
end)

describe("orch.timer", function()
  it("after fires once, as a task", function()
    local fired, in_task = 0, false
    h.run(function()
      orch.timer.after(0.01, function()
        fired = fired + 1
        in_task = orch.current() ~= nil
        orch.sleep(0.001)   -- callbacks may wait
      end)
      orch.sleep(0.05)
    end)
    assert.are.equal(1, fired)
    assert.is_true(in_task)
  end)

  it("runs callbacks in the runner of lua/orch/callback.lua", function()
    local tb
    h.run(function()
      local fired = orch.cond()
      orch.timer.after(0.01, function() tb = debug.traceback() fired:signal() end)
      fired:wait(10)
    end)
    assert.matches("lua/orch/callback%.lua:%d+: in ", tb)
  end)

  it("every repeats until stopped, and the loop ends after stop", function()
    local n = 0
    h.run(function()
      orch.timer.every(0.005, function(t)
        n = n + 1
        if n == 3 then assert.is_true(t:stop()) end
      end)
    end)
    assert.are.equal(3, n)
  end)

  it("stop prevents a pending after", function()
    local fired = false
    h.run(function()
      local t = orch.timer.after(0.02, function() fired = true end)
      assert.is_true(t:active())
      t:stop()
      assert.is_false(t:active())
      assert.is_false(t:stop())
      orch.sleep(0.04)
    end)
    assert.is_false(fired)
  end)

  it("a dropped timer still fires", function()
    local fired = false
    h.run(function()
      orch.timer.after(0.01, function() fired = true end)
      collectgarbage()
      collectgarbage()
      orch.sleep(0.03)
    end)
    assert.is_true(fired)
  end)

  it("ref = false: an armed timer does not keep `orch run` running", function()
    local dir = h.tmpdir()
    local path = h.script(([[
      local n = 0
      orch.timer.after(3600, function() end, { ref = false })
      orch.timer.every(0.001, function() n = n + 1 end, { ref = false })
      while n < 3 do orch.sleep(0.001) end
      io.open(%q, "w"):close()
    ]]):format(dir .. "/fired"))
    local code = h.run(function()
      local p = assert(orch.spawn{ h.bin, "run", path })
      local ok, c = pcall(p.wait, p)
      if p:running() then p:kill("KILL") p:wait() end
      assert(ok, c)
      return c
    end)
    assert.are.equal(0, code)
    assert.is_truthy(io.open(dir .. "/fired"))
  end)

  it("validates its arguments", function()
    local cases = {
      { function() orch.timer.after(-1, function() end) end, "bad argument #1 to 'after'" },
      { function() orch.timer.after(1) end, "bad argument #2 to 'after' (function expected, got no value)" },
      { function() orch.timer.every("x", print) end, "bad argument #1 to 'every'" },
      { function() orch.timer.after(1, print, { reff = false }) end, "bad argument #3 to 'after' (unknown option 'reff')" },
      { function() orch.timer.every(1, print, { ref = 0 }) end, "bad argument #3 to 'every' (option 'ref': boolean expected, got number)" },
      { function() orch.timer.after(1, print, nil, 4) end, "bad argument #4 to 'after' (no value expected)" },
    }
    h.check_raises(cases)
  end)

  it("tostring", function()
    h.run(function()
      local t = orch.timer.after(1, function() end)
      assert.matches("^orch.Timer: after 1", tostring(t))
      t:stop()
    end)
  end)
end)

describe("the orch module", function()
  it("sets no globals when required", function()
    local before = {}
    for k in pairs(_G) do before[k] = true end
    for _, name in ipairs({ "orch.core" }) do require(name) end
    for k in pairs(_G) do assert.is_true(before[k], "new global " .. tostring(k)) end
  end)

  it("loads every Lua module without creating globals", function()
    local p = io.popen("ls " .. h.root .. "/lua/orch/*.lua " .. h.root .. "/lua/orch/*/*.lua 2>/dev/null")
    local files = {}
    for f in p:lines() do files[#files + 1] = f end
    p:close()
    assert.is_true(#files >= 1)
    local before = {}
    for k in pairs(_G) do before[k] = true end
    for _, f in ipairs(files) do
      local name = f:match("lua/(orch/.-)%.lua$"):gsub("/", "."):gsub("%.init$", "")
      require(name)
    end
    for k in pairs(_G) do assert.is_true(before[k], "module set global " .. tostring(k)) end
  end)

  it("opens its other C modules at the first key it lacks, or at pairs; what a script set before stays", function()
    -- (a fresh process: busted's own `orch` is complete already)
    local code = [[
      local function open()
        local list = {}
        for k in next, package.loaded do if k:match("^orch%.core%.") then list[#list + 1] = k:sub(11) end end
        table.sort(list)
        return table.concat(list, ",")
      end
      local at_start = open()
      local mine = function() end
      orch.spawn, orch.heartbeat = mine, "mine"
      local sig = orch.signal
      local after = open()
      print(at_start, after:find("callback", 1, true) ~= nil, after:find("fmt", 1, true) ~= nil,
            orch.spawn == mine, orch.heartbeat, type(sig.protect), type(orch.proc.init_mode),
            type(orch.proc.list), type(orch.capture), getmetatable(orch) == nil)
    ]]
    local rc, out, err = h.cli({ "-e", code })
    assert.are.equal(0, rc, err)
    assert.are.equal("core,stream,sys\ttrue\ttrue\ttrue\tmine\tfunction\tfunction\tfunction\tfunction\ttrue\n", out)
    rc, out, err = h.cli({ "-e", "local n = 0 for _ in pairs(orch) do n = n + 1 end print(n > 40, type(rawget(orch, 'spawn')))" })
    assert.are.equal(0, rc, err)
    assert.are.equal("true\tfunction\n", out)
  end)

  it("has a version", function()
    assert.matches("^orch %d+%.%d+%.%d+, Lua 5%.4", orch.version())
    assert.are.equal("string", type(orch.VERSION))
  end)
end)
