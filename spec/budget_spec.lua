-- The Lua time budget (src/runtime.c): code that never yields is
-- interrupted, and the loop (timers, signals, reaping, the control socket)
-- goes on.
local h = require "spec.helper"
local u = require "spec.ctl_util"
local orch = h.orch

local function with_budget(s, fn)
  local old = orch.set_budget(s)
  local ok, err = pcall(fn)
  orch.set_budget(old)
  if not ok then error(err, 0) end
end

describe("orch.set_budget", function()
  it("interrupts a task that never yields, names it, and the loop goes on", function()
    with_budget(0.2, function()
      h.run(function()
        local ticks = 0
        local tick = orch.timer.every(0.01, function() ticks = ticks + 1 end)
        local spin = orch.task(function() while true do end end)
        local ok, err = pcall(spin.join, spin)
        assert.is_false(ok)
        assert.matches("budget_spec.lua:%d+: orch: function <.-budget_spec.lua:%d+> ran for more than 0.2 s without yielding", err)
        assert.are.equal("failed", spin:status())
        -- The loop runs again: the timer keeps firing.
        local before = ticks
        h.eventually(function() return ticks >= before + 3 end, "timer ticks after the interruption")
        tick:stop()
      end)
    end)
  end)

  it("cannot be absorbed by a pcall loop or hidden in a coroutine", function()
    with_budget(0.1, function()
      h.run(function()
        local t = orch.task(function()
          while true do pcall(function() while true do end end) end
        end)
        assert.matches("without yielding", h.error_of(t.join, t))
        local c = orch.task(function()
          local co = coroutine.wrap(function() while true do end end)
          co()
        end)
        assert.matches("without yielding", h.error_of(c.join, c))
        -- A caller's pcall sees the first interruption and may report it.
        local r = orch.task(function()
          local ok, err = pcall(function() while true do end end)
          return ok, err
        end)
        local ok, err = r:join()
        assert.is_false(ok)
        assert.matches("without yielding", err)
      end)
    end)
  end)

  it("stops a coroutine made in an earlier resume, and the task that keeps catching its error", function()
    with_budget(0.1, function()
      h.run(function()
        -- Made and first resumed before the task waits; run away after.
        local t = orch.task(function()
          local co = coroutine.create(function() coroutine.yield() while true do end end)
          assert(coroutine.resume(co))
          orch.sleep(0.001)
          local ok, err = coroutine.resume(co)
          return ok, err
        end)
        local ok, err = t:join()
        assert.is_false(ok)
        assert.matches("without yielding", err)
        -- A task that resumes runaways in a loop, catching every error.
        local loop = orch.task(function()
          while true do coroutine.resume(coroutine.create(function() while true do end end)) end
        end)
        assert.matches("without yielding", h.error_of(loop.join, loop))
        -- Two levels deep, with wrap.
        local deep = orch.task(function()
          local outer = coroutine.wrap(function()
            local inner = coroutine.wrap(function() while true do end end)
            inner()
          end)
          orch.sleep(0.001)
          outer()
        end)
        assert.matches("without yielding", h.error_of(deep.join, deep))
      end)
    end)
  end)

  it("still stops a runaway in an orch.fork child, and after a stray RTMAX-2", function()
    local path = h.script([[
      -- Someone else sends the budget's signal: orch goes on.
      local sig = orch.signal.number("RTMAX-2")
      local p = assert(orch.spawn{ "kill", "-" .. sig, tostring(orch.getpid()) })
      assert(p:wait() == 0)
      local spin = orch.task(function() while true do end end)
      local ok, err = pcall(spin.join, spin)
      print("parent: " .. (not ok and err:match("without yielding") or tostring(err)))
      io.stdout:flush()
      local c = assert(orch.fork(function()
        local t = orch.task(function() while true do end end)
        local ok2, err2 = pcall(t.join, t)
        print("child: " .. (not ok2 and err2:match("without yielding") or tostring(err2)))
        io.stdout:flush()
      end))
      print("child exit: " .. c:wait())
    ]])
    local code, out, err = h.cli({ "run", "--no-socket", "--lua-budget", "0.2", path })
    assert.are.equal(0, code, err)
    assert.are.equal("parent: without yielding\nchild: without yielding\nchild exit: 0\n", out)
  end)

  it("coroutine.resume and coroutine.wrap answer as Lua's own", function()
    -- The runtime notes which coroutine runs (for the budget's timer):
    -- the same script gives the same lines under lua5.4 and orch.
    local src = [[
      local function show(...) local t = table.pack(...) for i = 1, t.n do t[i] = tostring(t[i]) end print(table.concat(t, " ")) end
      local co = coroutine.create(function(a, b) local c = coroutine.yield(a + b) return c * 2, "end" end)
      show(coroutine.resume(co, 1, 2))
      show(coroutine.resume(co, 5))
      show(coroutine.resume(co))
      show(pcall(coroutine.resume, 42))
      show(coroutine.resume(coroutine.running()))
      local w = coroutine.wrap(function(x) local y = coroutine.yield(x) error("boom " .. y) end)
      show(w("first"))
      show(pcall(w, "second"))
      show(pcall(w))
      local w2 = coroutine.wrap(function() error({ code = 7 }) end)
      local ok, e = pcall(w2)
      show(ok, type(e), e.code)
      local closed = false
      local w3 = coroutine.wrap(function()
        local _ <close> = setmetatable({}, { __close = function() closed = true end })
        coroutine.yield(1)
        error("x", 0)
      end)
      w3()
      show(pcall(w3), closed)
      show(pcall(coroutine.wrap, 1))
      local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
      show(gen(), gen(), gen())
      show(select("#", coroutine.resume(coroutine.create(function() return end))))
    ]]
    local path = h.script(src)
    local lua_out = h.sh("lua5.4 " .. h.shquote(path) .. " 2>&1")
    local code, out, err = h.cli({ "run", "--no-socket", path })
    assert.are.equal(0, code, err)
    assert.are.equal(lua_out, (out:gsub("\n$", "")))
  end)

  it("counts per resume: a task that yields is never interrupted", function()
    -- Three times the budget in all, in slices of a few microseconds (the
    -- budget is wide: a loaded machine may pause the process mid-slice).
    with_budget(0.5, function()
      h.run(function()
        local t = orch.task(function()
          local t0 = orch.now()
          local n = 0
          while orch.now() - t0 < 1.5 do
            n = n + 1
            if n % 1000 == 0 then orch.sleep(0) end
          end
          return "done"
        end)
        assert.are.equal("done", t:join())
      end)
    end)
  end)

  it("counts CPU time: a task held off the CPU (SIGSTOP) longer than the budget runs on", function()
    -- A machine so loaded that orch waits on the run queue must not
    -- interrupt legitimate work: the budget is the loop thread's CPU time.
    -- Here orch is stopped for 1.5 s in the middle of a 1 s budget's resume,
    -- which uses far less than 1 s of CPU.
    local dir = h.tmpdir()
    local script = h.script(string.format([[
      orch.set_budget(1)
      local t = orch.task(function()
        io.open(%q, "w"):close()
        local n = 0
        repeat n = n + 1 until n %% 100000 == 0 and io.open(%q)
        return "done"
      end)
      print(t:join())
    ]], dir .. "/spinning", dir .. "/go"))
    local res = h.run(function()
      local p = assert(orch.spawn{ h.bin, "run", script, stdout = "pipe", stderr = "pipe" })
      h.eventually(function() return io.open(dir .. "/spinning") ~= nil end, "the task spinning")
      assert(p:kill("STOP"))
      orch.sleep(1.5)          -- the time passing is what is tested
      assert(p:kill("CONT"))
      io.open(dir .. "/go", "w"):close()
      local out, err = p.stdout:read_all(), p.stderr:read_all()
      return { p:wait(), out, err }
    end)
    assert.are.same({ 0, "done\n", "" }, res)
  end)

  it("never wakes an idle orch: the timer a burst of work armed does not fire once the loop waits", function()
    -- The timer runs on the loop thread's CPU clock. On the monotonic clock
    -- it fired once, up to a budget after every burst (one wake-up a burst:
    -- 0.2-0.4 a second in the seconds after a large start). Each USR1 here
    -- is a burst (a handler's resume arms the timer); the loop thread must
    -- then stay asleep for more than two budgets.
    local script = h.script([[
      orch.set_budget(1)
      orch.signal.on("USR1", function()
        local n = 0
        for i = 1, 1000 do n = n + i end
        io.stdout:write("worked ", n, "\n")
        io.stdout:flush()
      end)
      io.stdout:write("ready\n")
      io.stdout:flush()
      orch.timer.after(3600, function() end)
    ]])
    local res = h.run(function()
      local p = assert(orch.spawn{ h.bin, "run", script, stdout = "pipe", stderr = "pipe" })
      local function wakeups()
        local st = h.slurp("/proc/" .. p.pid .. "/status")
        return tonumber(st:match("\nvoluntary_ctxt_switches:%s*(%d+)")) + tonumber(st:match("nonvoluntary_ctxt_switches:%s*(%d+)"))
      end
      local lines, woke = { p.stdout:read_line() }, {}
      for i = 1, 2 do
        assert(p:kill("USR1"))
        lines[#lines + 1] = p.stdout:read_line()
        -- Counted once the loop thread sleeps again (its going to sleep
        -- after the write is a switch of its own).
        h.eventually(function() return orch.proc.info(p.pid).state == "S" end, "orch asleep")
        local w0 = wakeups()
        orch.sleep(2.5)          -- the time passing is what is tested
        woke[i] = wakeups() - w0
      end
      p:kill("TERM")
      local err = p.stderr:read_all()
      p:wait()
      return { lines = lines, woke = woke, err = err }
    end, 60)
    assert.are.same({ "ready", "worked 500500", "worked 500500" }, res.lines)
    assert.are.same({ 0, 0 }, res.woke, res.err)
  end)

  it("is off with 0 or false, and returns the previous budget", function()
    local old = orch.set_budget(0.05)
    assert.are.equal(0.05, orch.set_budget(false))
    h.run(function()
      -- 0.2 s of CPU without a yield (the budget counts CPU time), four
      -- times the budget that was set before.
      local t = orch.task(function()
        local c0 = os.clock()
        while os.clock() - c0 < 0.2 do end
        return "done"
      end)
      assert.are.equal("done", t:join())
    end)
    assert.are.equal(0, orch.set_budget(0))
    orch.set_budget(old)
  end)

  it("rejects bad values", function()
    h.check_raises {
      { function() orch.set_budget(-1) end, "bad argument #1 to 'set_budget' (seconds >= 0 expected" },
      { function() orch.set_budget(0 / 0) end, "bad argument #1 to 'set_budget' (seconds >= 0 expected" },
      { function() orch.set_budget(math.huge) end, "bad argument #1 to 'set_budget' (seconds >= 0 expected" },
      { function() orch.set_budget("x") end, "bad argument #1 to 'set_budget' (number expected" },
      { function() orch.set_budget() end, "bad argument #1 to 'set_budget' (number expected" },
    }
  end)
end)

describe("orch run --lua-budget", function()
  it("a runaway on_exit hook is interrupted: the service restarts, ctl answers, SIGTERM ends orch", function()
    local o = u.start([[
      local sup = require "orch.supervisor"
      sup.service { name = "flap", cmd = "exit 1", backoff = 0.05, start_limit = false,
                    on_exit = function() while true do end end }
      sup.run()
      assert(require("orch.ctl").serve { socket = SOCK })
    ]], nil, { "--lua-budget", "0.2" })
    finally(function() u.stop(o) end)
    -- Restarted again and again although every exit runs a hook that spins.
    u.until_true(function() local s = u.status(o).flap return s and s.restarts >= 3 end, "restarts")
    u.until_true(function() return h.slurp(o.dir .. "/err"):find("flap: on_exit hook failed:", 1, true) end,
      "the hook failure in the log")
    local err = h.slurp(o.dir .. "/err")
    assert.matches("ran for more than 0.2 s without yielding", err, 1, true)
    -- eval of a runaway loop: an error reply, orch alive.
    local code, out, eerr = u.ctl_cli(o, "eval", "while true do end")
    assert.are_not.equal(0, code)
    assert.matches("ran for more than 0.2 s without yielding", out .. eerr, 1, true)
    assert.are.equal(0, (u.ctl_cli(o, "ping")))
    assert.truthy(h.alive(o.pid))
    -- SIGTERM still ends it (services stopped, exit 0).
    os.execute("kill -TERM " .. o.pid)
    u.until_true(function() return not h.alive(o.pid) end, "orch to exit on SIGTERM")
    u.sanitizer_clean(h.slurp(o.dir .. "/err"), "orch run")
  end)

  it("rejects a bad value", function()
    local code, _, err = h.cli({ "run", "--lua-budget", "soon", "x.lua" })
    assert.are.equal(2, code)
    assert.matches("--lua-budget needs SECONDS", err, 1, true)
    code, _, err = h.cli({ "run", "--lua-budget", "-1", "x.lua" })
    assert.are.equal(2, code)
  end)

  it("0 turns the budget off", function()
    -- 0.3 s of CPU (the budget counts CPU time: a loaded machine would
    -- stretch a spin measured by the wall clock past it unused).
    local path = h.script("local c0 = os.clock() while os.clock() - c0 < 0.3 do end print('done')")
    local code, out = h.cli({ "run", "--lua-budget", "0.05", path })
    assert.are.equal(1, code)
    code, out = h.cli({ "run", "--lua-budget", "0", path })
    assert.are.equal(0, code)
    assert.are.equal("done\n", out)
  end)
end)
