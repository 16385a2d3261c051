-- orch.scheduler and `orch every`: real processes, real signals.
local h = require "spec.helper"
local orch = h.orch
local sched = require "orch.scheduler"

local quiet = function() end

describe("scheduler.every (delay mode, the classic loop)", function()
  it("runs, waits for the exit, sleeps, and runs again", function()
    local starts, exits = {}, {}
    h.run(function()
      local j = sched.every(0.05, { "sh", "-c", "exit 3" }, {
        max_runs = 3, log = quiet,
        on_start = function(p, n) starts[n] = orch.now(); assert.is_number(p.pid) end,
        on_exit = function(code, sig, n) exits[n] = { code, sig, orch.now() } end,
      })
      j.task:join()
      assert.are.equal(3, j:status().runs)
      assert.are.equal(3, j:status().last_code)
    end)
    assert.are.equal(3, #exits)
    for n = 1, 3 do assert.are.equal(3, exits[n][1]); assert.is_nil(exits[n][2]) end
    -- Never two runs at once, and at least the delay between an exit and the next start.
    for n = 2, 3 do assert.is_true(starts[n] - exits[n - 1][3] >= 0.049) end
  end)

  it("reports signals and keeps going", function()
    local seen = {}
    h.run(function()
      local j = sched.every(0.01, { "sh", "-c", "kill -KILL $$" }, {
        max_runs = 2, log = quiet, on_exit = function(code, sig) seen[#seen + 1] = sig end })
      j.task:join()
    end)
    assert.are.same({ "KILL", "KILL" }, seen)
  end)

  it("runs Lua functions; an error is logged and the loop goes on", function()
    local runs, logged = {}, {}
    h.run(function()
      local j = sched.every(0.01, function(n)
        runs[#runs + 1] = n
        if n == 2 then error("run two fails") end
      end, { max_runs = 3, log = function(m) logged[#logged + 1] = m end })
      j.task:join()
    end)
    assert.are.same({ 1, 2, 3 }, runs)
    assert.matches("run 2 raised: .*run two fails", logged[1])
  end)

  it("a program that cannot start is logged as code 127 and retried", function()
    local codes, logged = {}, {}
    h.run(function()
      local j = sched.every(0.01, { "/nonexistent/prog" }, {
        max_runs = 2, log = function(m) logged[#logged + 1] = m end,
        on_exit = function(code) codes[#codes + 1] = code end })
      j.task:join()
    end)
    assert.are.same({ 127, 127 }, codes)
    assert.matches("cannot start", logged[1], 1, true)
  end)

  it("stop while sleeping ends the job at once", function()
    h.run(function()
      local j = sched.every(30, { "true" }, { log = quiet })
      orch.sleep(0.1)
      j:stop()
      local ok = j.task:join()
      assert.are.equal(1, j:status().runs)
      assert.is_true(j:status().stopped)
      assert.is_nil(ok)
    end)
  end)

  it("stop with a signal ends the running program's group", function()
    local code, sig
    h.run(function()
      local j = sched.every(1, { "sh", "-c", "sleep 30 & wait", pgroup = true },
        { log = quiet, on_exit = function(c, s) code, sig = c, s end })
      orch.sleep(0.2)
      local pid = j:status().pids[1]
      assert.is_number(pid)
      j:stop{ signal = "TERM" }
      j:wait()
      assert.are.equal(0, j:status().running)
    end)
    assert.are.equal("TERM", sig)
  end)
end)

describe("scheduler.every (rate mode)", function()
  it("skips a start while the previous run is still going (overlap = skip)", function()
    h.run(function()
      local j = sched.every(0.02, { "sleep", "0.15" }, { mode = "rate", max_runs = 2, log = quiet })
      orch.sleep(0.1)
      local st = j:status()
      assert.are.equal(1, st.running)
      assert.is_true(st.skipped >= 1)
      j:stop()
      j:wait()
    end)
  end)

  it("runs concurrently with overlap = allow", function()
    local max_running = 0
    h.run(function()
      local j
      j = sched.every(0.02, function()
        max_running = math.max(max_running, j.running)
        orch.sleep(0.1)
      end, { mode = "rate", overlap = "allow", max_runs = 3, log = quiet })
      j.task:join()
      j:wait()
    end)
    assert.is_true(max_running >= 2)
  end)

  it("queues the next start behind a long run with overlap = queue", function()
    local spans = {}
    h.run(function()
      local j
      j = sched.every(0.02, function(n)
        local t0 = orch.now()
        orch.sleep(0.06)
        spans[n] = { t0, orch.now() }
      end, { mode = "rate", overlap = "queue", max_runs = 3, log = quiet })
      j.task:join()
      j:wait()
    end)
    assert.are.equal(3, #spans)
    for n = 2, 3 do assert.is_true(spans[n][1] >= spans[n - 1][2]) end
  end)
end)

describe("cron expressions", function()
  local function at(y, mo, d, hh, mm) return os.time{ year = y, month = mo, day = d, hour = hh, min = mm, sec = 0 } end

  it("compute the next matching minute", function()
    local cases = {
      { "*/15 * * * *", at(2026, 3, 1, 10, 7), at(2026, 3, 1, 10, 15) },
      { "0 0 * * *", at(2026, 3, 1, 10, 7), at(2026, 3, 2, 0, 0) },
      { "30 4 1 * *", at(2026, 3, 5, 0, 0), at(2026, 4, 1, 4, 30) },
      { "0 9 * * mon-fri", at(2026, 11, 21, 12, 0), at(2026, 11, 23, 9, 0) },  -- Sat -> Mon
      { "0 12 * jan,jul *", at(2026, 2, 1, 0, 0), at(2026, 7, 1, 12, 0) },
      { "5 4 * * 7", at(2026, 11, 20, 0, 0), at(2026, 11, 22, 4, 5) },        -- 7 = Sunday
      { "0 0 29 2 *", at(2026, 3, 1, 0, 0), at(2028, 2, 29, 0, 0) },          -- leap day
      { "1-3 * * * *", at(2026, 1, 1, 0, 3), at(2026, 1, 1, 1, 1) },
    }
    for _, c in ipairs(cases) do
      assert.are.equal(os.date("%c", c[3]), os.date("%c", sched.next_cron(sched.parse_cron(c[1]), c[2])), c[1])
    end
  end)

  it("take cron(8)'s shorthands; @reboot runs once, when the job is defined", function()
    local cases = {
      { "@hourly", at(2026, 3, 1, 10, 7), at(2026, 3, 1, 11, 0) },
      { "@daily", at(2026, 3, 1, 10, 7), at(2026, 3, 2, 0, 0) },
      { "@midnight", at(2026, 3, 1, 10, 7), at(2026, 3, 2, 0, 0) },
      { "@weekly", at(2026, 11, 20, 10, 0), at(2026, 11, 22, 0, 0) },   -- Fri -> Sun
      { "@monthly", at(2026, 3, 5, 0, 0), at(2026, 4, 1, 0, 0) },
      { "@yearly", at(2026, 3, 5, 0, 0), at(2027, 1, 1, 0, 0) },
      { " @Annually ", at(2026, 3, 5, 0, 0), at(2027, 1, 1, 0, 0) },
    }
    for _, c in ipairs(cases) do
      assert.are.equal(os.date("%c", c[3]), os.date("%c", sched.next_cron(c[1], c[2])), c[1])
    end
    local ok, err = pcall(sched.parse_cron, "@often")
    assert.is_false(ok)
    assert.matches("unknown shorthand '@often'", err, 1, true)
    assert.is_nil(sched.next_cron("@reboot"))
    h.run(function()
      local runs = 0
      local j = sched.cron("@reboot", function() runs = runs + 1 end, { log = quiet })
      h.eventually(function() return runs == 1 and j:status().running == 0 end, "the @reboot run")
      -- Its loop ended after the one run: nothing is scheduled any more.
      h.eventually(function() return j.task:status() == "done" end, "the job's loop to end")
      assert.are.equal(1, runs)
      assert.are.equal(1, j:status().runs)
    end)
  end)

  it("reject malformed expressions with a clear message", function()
    local cases = {
      { "* * * *", "needs 5 fields" }, { "60 * * * *", "out of range" },
      { "* 24 * * *", "out of range" }, { "* * 0 * *", "out of range" },
      { "* * * 13 *", "out of range" }, { "*/0 * * * *", "bad step" },
      { "x * * * *", "bad value 'x'" }, { "5-1 * * * *", "out of range" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(sched.parse_cron, c[1])
      assert.is_false(ok, c[1])
      assert.matches(c[2], err, 1, true)
    end
  end)

  it("reject expressions that can never match when they are defined", function()
    for _, e in ipairs{ "* * 31 2 *", "0 0 30 2 *", "0 0 30,31 feb *", "15 3 31 4,6,9,11 *",
                        "* * 31 2/12 *", "0 12 30-31 2 *" } do
      local ok, err = pcall(sched.parse_cron, e)
      assert.is_false(ok, e)
      assert.are.equal("cron: '" .. e .. "' can never match (no month in the month field has that day)", err)
    end
    -- Rare but possible: accepted (a weekday, or a leap day).
    for _, e in ipairs{ "0 0 31 2 mon", "0 0 29 2 *", "0 0 31 2,3 *" } do
      assert.is_table(sched.parse_cron(e), e)
    end
  end)

  it("search a bounded number of steps: a leap day 7 years ahead, 2100 being no leap year", function()
    local real_date, steps = os.date, 0
    os.date = function(...) steps = steps + 1; return real_date(...) end
    local ok, got = pcall(sched.next_cron, "0 0 29 2 *", at(2097, 3, 1, 0, 0))
    os.date = real_date
    assert.is_true(ok, got)
    assert.are.equal(os.date("%c", at(2104, 2, 29, 0, 0)), os.date("%c", got))
    -- A few hundred steps a year, not one per minute (4 million).
    assert.is_true(steps < 5000, steps .. " steps")
    -- A string expression and the default `after` (now) work too.
    assert.is_true(sched.next_cron("* * * * *") > os.time())
  end)

  it("cron and at schedule jobs at wall-clock times", function()
    h.run(function()
      local j = sched.cron("* * * * *", { "true" }, { log = quiet })
      -- The job's task computes next_run when it first runs.
      local st = h.eventually(function() return j:status().next_run and j:status() end, "next_run")
      assert.is_true(st.next_run > orch.time() and st.next_run <= orch.time() + 60)
      j:stop()
      local k = sched.at("03:30", { "true" }, { log = quiet })
      local at = h.eventually(function() return k:status().next_run end, "next_run")
      assert.are.equal("03:30", os.date("%H:%M", at))
      k:stop()
    end)
  end)
end)

describe("bad arguments", function()
  it("raise with the function and the option named", function()
    local cases = {
      { function() sched.every(-1, { "true" }) end, "bad argument #1 to 'every'" },
      { function() sched.every(1, 42) end, "bad argument #2 to 'every' (command table or function expected" },
      { function() sched.every(1, { "true" }, { bogus = 1 }) end, "unknown option 'bogus'" },
      { function() sched.every(1, { "true" }, { mode = "fast" }) end, "option 'mode'" },
      { function() sched.every(1, { "true" }, { overlap = "x" }) end, "option 'overlap'" },
      { function() sched.every(1, { "true" }, { jitter = -1 }) end, "option 'jitter'" },
      { function() sched.every(0, { "true" }, { mode = "rate" }) end, "bad argument #1 to 'every' (seconds > 0 expected)" },
      { function() sched.every(0, function() end) end, "bad argument #1 to 'every' (seconds > 0 expected)" },
      { function() sched.every(0 / 0, { "true" }) end, "bad argument #1 to 'every' (seconds > 0 expected)" },
      { function() sched.every(math.huge, { "true" }) end, "bad argument #1 to 'every' (seconds > 0 expected)" },
      { function() sched.every(1, { "true" }, { max_runs = -1 }) end, "(option 'max_runs': integer >= 1 expected)" },
      { function() sched.every(1, { "true" }, { max_runs = 0 }) end, "(option 'max_runs': integer >= 1 expected)" },
      { function() sched.every(1, { "true" }, { max_runs = 1.5 }) end, "(option 'max_runs': integer >= 1 expected)" },
      { function() sched.every(1, { "true" }, { max_runs = 0 / 0 }) end, "(option 'max_runs': integer >= 1 expected)" },
      { function() sched.every(1, { "true" }, { max_runs = math.huge }) end, "(option 'max_runs': integer >= 1 expected)" },
      { function() sched.every(1, { "true" }, { first = 0 / 0 }) end, "(option 'first': seconds >= 0 expected)" },
      { function() sched.every(1, { "true" }, { first = -1 }) end, "(option 'first': seconds >= 0 expected)" },
      { function() sched.every(1, { "true" }, { jitter = 0 / 0 }) end, "option 'jitter'" },
      { function() sched.next_cron("x") end, "bad argument #1 to 'next_cron' (cron: 'x' needs 5 fields" },
      { function() sched.next_cron(42) end, "bad argument #1 to 'next_cron' (cron expression or parse_cron result expected, got number)" },
      { function() sched.next_cron({}) end, "bad argument #1 to 'next_cron' (cron expression or parse_cron result expected, got table)" },
      { function() sched.next_cron("* * * * *", "soon") end, "bad argument #2 to 'next_cron' (epoch seconds expected, got string)" },
      { function() sched.next_cron("* * * * *", 0 / 0) end, "bad argument #2 to 'next_cron' (epoch seconds expected" },
      { function() sched.next_cron("* * * * *", math.huge) end, "bad argument #2 to 'next_cron' (epoch seconds expected" },
      { function() sched.cron("* * 31 2 *", { "true" }) end, "bad argument #1 to 'cron' (cron: '* * 31 2 *' can never match" },
      { function() sched.at("25:00", { "true" }) end, "bad argument #1 to 'at'" },
      { function() sched.cron("bad", { "true" }) end, "bad argument #1 to 'cron'" },
    }
    h.check_raises(cases)
  end)
end)

describe("orch every", function()
  it("runs PROG again after each exit, --max-runs stops it", function()
    local dir = h.tmpdir()
    local code, _, err = h.cli({ "every", "0.05", "--max-runs", "3", "--", "sh", "-c", "echo x >> " .. dir .. "/runs" })
    assert.are.equal(0, code, err)
    assert.are.equal("x\nx\nx\n", h.slurp(dir .. "/runs"))
    assert.matches("run 3: sh exited with code 0", err, 1, true)
  end)

  it("SIGTERM stops the loop and the running program, exit 0", function()
    local dir = h.tmpdir()
    h.run(function()
      local p = assert(orch.spawn{ h.bin, "every", "1", "--", "sh", "-c", "echo $$ > " .. dir .. "/pid; exec sleep 30",
                                   stderr = "null" })
      local pid = h.eventually(function() return tonumber(h.slurp(dir .. "/pid")) end, "the pid file")
      assert.is_number(pid)
      orch.sleep(0.05)
      p:kill("TERM")
      local code = p:wait()
      assert.are.equal(0, code)
      assert.is_nil(orch.proc.info(pid))
    end)
  end)

  it("usage errors exit 2", function()
    for _, args in ipairs({ { "every" }, { "every", "x", "true" }, { "every", "1" },
                            { "every", "1", "--bogus", "true" }, { "every", "0", "--rate", "true" },
                            { "every", "0", "true" }, { "every", "1e999", "true" },
                            { "every", "1", "--max-runs", "0", "true" }, { "every", "1", "--max-runs", "-1", "true" },
                            { "every", "1", "--max-runs", "1.5", "true" }, { "every", "1", "--jitter", "1e999", "true" } }) do
      local code, _, err = h.cli(args)
      assert.are.equal(2, code, table.concat(args, " "))
      assert.matches("orch every:", err, 1, true)
    end
  end)
end)
