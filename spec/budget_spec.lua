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
      { function() orch.set_budget(nil, 1) end, "bad argument #2 to 'set_budget' (no value expected)" },
    }
  end)

  it("with no argument returns the budget and leaves it", function()
    with_budget(0.25, function()
      assert.are.equal(0.25, orch.set_budget())
      assert.are.equal(0.25, orch.set_budget())
    end)
  end)
end)

describe("task:set_budget", function()
  -- 0.2 s of CPU without a yield (the budget counts CPU time).
  local function spin(s)
    local c0 = os.clock()
    while os.clock() - c0 < s do end
    return "done"
  end

  it("gives a task a budget of its own: none, smaller or larger than orch's", function()
    with_budget(0.05, function()
      h.run(function()
        local free = orch.task(spin, 0.2)
        assert.is_nil(free:set_budget(false))
        assert.are.equal("done", free:join())
        local long = orch.task(spin, 0.2)
        long:set_budget(1e6)
        assert.are.equal("done", long:join())
        -- Its own, although orch's is larger.
        orch.set_budget(5)
        local short = orch.task(spin, 0.5)
        short:set_budget(0.05)
        assert.matches("ran for more than 0.05 s without yielding", h.error_of(short.join, short))
        -- Back to orch's (nil), which the task follows as it changes.
        local back = orch.task(spin, 0.2)
        assert.is_nil(back:set_budget(0.05))
        assert.are.equal(0.05, back:set_budget(nil))
        assert.is_nil(back:set_budget())
        assert.are.equal("done", back:join())
        orch.set_budget(0.05)
      end)
    end)
  end)

  it("on the running task applies to the resume running now", function()
    with_budget(0.05, function()
      h.run(function()
        local t = orch.task(function()
          local old = orch.current():set_budget(0)
          local r = spin(0.2)
          orch.current():set_budget(old)
          return r, old
        end)
        local r, old = t:join()
        assert.are.equal("done", r)
        assert.is_nil(old)
        -- Made smaller while it runs: interrupted by the new one.
        orch.set_budget(5)
        local s = orch.task(function()
          orch.current():set_budget(0.05)
          return spin(0.5)
        end)
        assert.matches("ran for more than 0.05 s without yielding", h.error_of(s.join, s))
      end)
    end)
  end)

  it("rejects bad values", function()
    h.run(function()
      local t = orch.task(function() end)
      h.check_raises {
        { function() t:set_budget(-1) end, "bad argument #1 to 'set_budget' (seconds >= 0 expected" },
        { function() t:set_budget(0 / 0) end, "bad argument #1 to 'set_budget' (seconds >= 0 expected" },
        { function() t:set_budget(math.huge) end, "bad argument #1 to 'set_budget' (seconds >= 0 expected" },
        { function() t:set_budget("x") end, "bad argument #1 to 'set_budget' (number expected" },
        { function() t:set_budget(1, 2) end, "bad argument #2 to 'set_budget' (no value expected)" },
      }
      t:join()
    end)
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

-- A stop must end whatever budget orch runs with (Sup.own_budget): with a
-- budget of a few milliseconds and hundreds of services, the shutdown's
-- task was interrupted in the removal of the services' cgroups (and the
-- first signal pass, the cgroups' warm-up) and orch never exited. The
-- policy starts its services with no budget, sets a tiny one, and says
-- so; the test sends TERM. (Hundreds: the count hook looks at the clock
-- every 1,000 VM instructions, which a pass over 60 services, a system
-- call each, never reached.)
-- The supervisor's policies below: `orch run --lua-budget 0 --socket
-- ctl.sock policy.lua` in d (its output in d/out and d/err, its exit status
-- in d/status, the policy's pid in d/pid). launch(d) starts it and returns
-- the pid once the policy wrote it; exit_status(d, what) waits for the
-- status (a string of digits).
-- (Without the ASan pass's LD_PRELOAD, which is for busted's lua5.4 that
-- loads orch.so: orch is linked with libasan, and each of the hundreds of
-- `sleep`s it starts loaded libasan too, milliseconds of CPU apiece.)
local function launch(d)
  h.sh(string.format("cd %s && { env -u LD_PRELOAD sh -c '\"$0\" run --lua-budget 0 --socket ctl.sock policy.lua >out 2>err; echo $? >status' %s >/dev/null 2>&1 & }",
    h.shquote(d), h.shquote(h.bin)))
  return u.until_true(function() return tonumber((h.slurp(d .. "/pid") or ""):match("^(%d+)\n")) end, "orch's pid")
end
local function exit_status(d, what)
  return u.until_true(function() return h.slurp(d .. "/status"):match("%d+") end, what)
end

describe("a supervisor's stop with a tiny Lua time budget", function()
  local function run_policy(services, budget)
    local d = h.tmpdir()
    h.write(d .. "/policy.lua", string.format("local DIR, BUDGET = %q, %s\n", d, budget) .. services .. [[
      sup.run()
      local f = io.open(DIR .. "/pids.tmp", "w")
      for _, st in ipairs(sup.status()) do f:write(st.pid or "", "\n") end
      f:close()
      os.rename(DIR .. "/pids.tmp", DIR .. "/pids")
      f = io.open(DIR .. "/pid.tmp", "w")
      f:write(orch.getpid(), "\n")
      f:close()
      os.rename(DIR .. "/pid.tmp", DIR .. "/pid")
      orch.set_budget(BUDGET)
    ]])
    local o = { dir = d }
    o.pid = launch(d)
    o.start = orch.proc.start_time(o.pid)
    o.pids, o.starts = {}, {}
    for line in h.slurp(d .. "/pids"):gmatch("[^\n]+") do
      local p = tonumber(line)
      o.pids[#o.pids + 1] = p
      o.starts[p] = orch.proc.start_time(p)
    end
    return o
  end
  -- Kills what is left of orch and its services: by pid and start time.
  -- (By pid alone, it killed whatever had the pid of a service stopped
  -- long before: a spec file run beside this one lost processes so.)
  local function clean(o)
    if o.start then orch.kill(o.pid, "KILL", o.start) end
    for _, p in ipairs(o.pids) do
      if o.starts[p] then orch.kill(p, "KILL", o.starts[p]) end
    end
    exit_status(o.dir, "the shell's end")
  end
  local function stopped(o)
    os.execute("kill -TERM " .. o.pid)
    local status = exit_status(o.dir, "orch to exit on SIGTERM")
    local err = h.slurp(o.dir .. "/err")
    u.sanitizer_clean(err, "orch run")
    for _, p in ipairs(o.pids) do assert.is_false(h.alive(p), "service pid " .. p .. " survived the stop") end
    return tonumber(status), err
  end

  -- run_policy of n services s1..sN (`sleep 1000`), every one running,
  -- under a budget of 10 us; all of it ended after the test.
  local function sleepers(n)
    local o = run_policy(string.format([[
      local sup = require "orch.supervisor"
      for i = 1, %d do sup.service { name = "s" .. i, cmd = { "sleep", "1000" } } end
    ]], n), "0.00001")
    finally(function() clean(o) end)
    assert.are.equal(n, #o.pids)
    return o
  end

  it("ends, every service stopped", function()
    local o = sleepers(200)
    local status, err = stopped(o)
    assert.are.equal(0, status, err)
    assert.matches("every service is stopped", err, 1, true)
  end)

  it("sends its first signal pass whole (the shutdown's own budget from the first signal on)", function()
    -- The pass over 1,000 services ran under orch's budget of 10 us: cut a
    -- few services in ("the stop's first signal pass failed"), the others
    -- signalled a turn later by their own stops.
    local o = sleepers(1000)
    local status, err = stopped(o)
    assert.are.equal(0, status, err)
    -- (The line that says it, not the whole log: 1,000 "started" lines
    -- hid it in a failing run's output.)
    local bad = err:match("[^\n]*first signal pass failed[^\n]*") or err:match("[^\n]*without yielding[^\n]*")
    assert.is_nil(bad, bad)
  end)

  it("writes the state record all the same (the supervisor's syncs have its own budget)", function()
    local o = sleepers(1000)
    -- Its first sync comes after sup.run, under the 10 us budget (the
    -- record of 1,000 entries was never written).
    u.until_true(function()
      local rec = h.slurp(o.dir .. "/ctl.sock.state") or ""
      local n = 0
      for _ in rec:gmatch('"name":"s%d+"') do n = n + 1 end
      return n == 1000
    end, "the state record to name the 1000 services")
    local status, err = stopped(o)
    assert.are.equal(0, status, err)
  end)

  it("ends in layers, with a KILL after a stop timeout", function()
    local o = run_policy([[
      local sup = require "orch.supervisor"
      sup.service { name = "db", cmd = { "sh", "-c", "trap '' TERM; while :; do sleep 1; done" },
                    stop = { timeout = 0.2 } }
      for i = 1, 200 do sup.service { name = "w" .. i, cmd = { "sleep", "1000" }, depends_on = { "db" } } end
    ]], "0.00001")
    finally(function() clean(o) end)
    assert.are.equal(201, #o.pids)
    local status, err = stopped(o)
    -- 5: the stop needed KILL (doc/cli.md).
    assert.are.equal(5, status, err)
    assert.matches("every service is stopped (exit status 5)", err, 1, true)
  end)
end)

describe("a supervisor's start with a tiny Lua time budget", function()
  -- sup.run, sup.start, sup.restart and sup.reload run with the
  -- supervisor's own budget (Sup.own_budget), as its stops do: under a
  -- budget of 10 us the start of 1,000 services was interrupted half way
  -- (some started, the others never) and sup.run raised; a restart or a
  -- reload of many so.
  -- run_policy(body, n): orch runs `n` services sleep 1000 (marked with a
  -- token), then body under a budget of 10 us, then writes DIR/after.
  local function run_policy(body, n)
    local d = h.tmpdir()
    local token = string.format("budgetstart_%d_%d_%d", orch.getpid(), os.time(), n)
    h.write(d .. "/policy.lua", string.format("local DIR, TOKEN, N = %q, %q, %d\n", d, token, n) .. [[
      local sup = require "orch.supervisor"
      sup.configure { env = { ORCH_SPEC_RUN = TOKEN } }
      local function defs(arg)
        local t = {}
        for i = 1, N do t[i] = { name = "s" .. i, cmd = { "sleep", arg } } end
        return t
      end
      for _, def in ipairs(defs("1000")) do sup.service(def) end
      local f = io.open(DIR .. "/pid.tmp", "w")
      f:write(orch.getpid(), "\n")
      f:close()
      os.rename(DIR .. "/pid.tmp", DIR .. "/pid")
      orch.set_budget(0.00001)
    ]] .. body .. [[
      orch.set_budget(false)
      f = io.open(DIR .. "/after.tmp", "w")
      f:write(tostring(r), "\n")
      f:close()
      os.rename(DIR .. "/after.tmp", DIR .. "/after")
    ]])
    local pid = launch(d)
    local start = orch.proc.start_time(pid)
    finally(function()
      if start then orch.kill(pid, "KILL", start) end
      exit_status(d, "the shell's end")
      for _, p in ipairs(h.leftovers(token)) do os.execute("kill -KILL " .. p) end
    end)
    -- orch ends (exit 1: the body raised) or its main chunk goes on.
    u.until_true(function() return h.slurp(d .. "/after") ~= "" or h.slurp(d .. "/status"):match("%d+") end,
      "the main chunk to go on, or orch to end")
    local err = h.slurp(d .. "/err")
    assert.are.equal("", h.slurp(d .. "/status"), err)
    local bad = err:match("[^\n]*without yielding[^\n]*")
    assert.is_nil(bad, bad)
    return d, pid, token
  end
  local function stopped(d, pid, token)
    os.execute("kill -TERM " .. pid)
    local status = exit_status(d, "orch to exit on SIGTERM")
    local err = h.slurp(d .. "/err")
    u.sanitizer_clean(err, "orch run")
    assert.are.equal("0", status, err)
    assert.are.same({}, h.leftovers(token))
  end

  it("stops every service with one whole first pass (sup.stop)", function()
    -- (orch.sleep(0): a resume of its own under the 10 us budget. The
    -- stop's first pass ran under it, and was cut a few services in.)
    local d, pid, token = run_policy([[
      orch.set_budget(false)
      sup.run()
      orch.set_budget(0.00001)
      orch.sleep(0)
      local r = sup.stop("all")
    ]], 1000)
    assert.are.equal("true\n", h.slurp(d .. "/after"))
    assert.are.same({}, h.leftovers(token))
    stopped(d, pid, token)
  end)

  it("starts every service (sup.run)", function()
    local d, pid, token = run_policy("local r = sup.run()\n", 1000)
    assert.are.equal("true\n", h.slurp(d .. "/after"))
    assert.are.equal(1000, #h.leftovers(token))
    stopped(d, pid, token)
  end)

  it("restarts and reloads every service (sup.restart, sup.reload)", function()
    local d, pid, token = run_policy([[
      orch.set_budget(false)
      sup.run()
      local first = {}
      for _, inst in ipairs(sup.instances()) do first[inst.name] = inst.pid end
      orch.set_budget(0.00001)
      local r = sup.restart("all")
      orch.set_budget(false)
      local again = 0
      for _, inst in ipairs(sup.instances()) do
        if inst.pid and inst.pid ~= first[inst.name] then again = again + 1 end
      end
      -- (The new definitions made first: 300 tables of the policy's own
      -- code under the 10 us budget were interrupted at times.)
      local new = defs("2000")
      orch.set_budget(0.00001)
      local res = sup.reload(new)
      orch.set_budget(false)
      r = tostring(r) .. " " .. again .. " " .. #res.restarted
    ]], 300)
    assert.are.equal("true 300 300\n", h.slurp(d .. "/after"))
    assert.are.equal(300, #h.leftovers(token))
    stopped(d, pid, token)
  end)

  it("gives the status of every service, and reads its figures (sup.status, sup.status_json, sup.status_table)", function()
    local d, pid, token = run_policy([[
      orch.set_budget(false)
      sup.run()
      orch.set_budget(0.00001)
      orch.sleep(0)   -- (a resume timed with it)
      local a = sup.status()
      local b, nb = sup.status_json()
      local c, nc = sup.status_table()
      -- The figures' reads the status queued run in a task of their own.
      repeat orch.sleep(0.01) until not sup.instance("s1").sup.acct_task
      orch.set_budget(false)
      local running = 0
      for _, st in ipairs(a) do if st.state == "running" then running = running + 1 end end
      r = running .. " " .. type(b) .. " " .. tostring(nb) .. " " .. select(2, c:gsub("running", "")) .. " " .. tostring(nc)
    ]], 1000)
    assert.are.equal("1000 string 0 1000 0\n", h.slurp(d .. "/after"))
    assert.is_nil(h.slurp(d .. "/err"):find("reading the figures failed", 1, true))
    stopped(d, pid, token)
  end)
end)
