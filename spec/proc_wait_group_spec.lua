-- Waiting on a process group (issue 19): orch.wait_group(pgid) and
-- orch.wait_any(), waitpid(-pgid) and waitpid(-1) answered from orch's one
-- process table (the reaper takes every status with wait4(-1) at once), and
-- orch.spawn's pgroup = N, which puts a child in an existing group the way a
-- shell builds a pipeline. Real processes and signals; each group is checked
-- against the kernel's view (/proc/PID/stat).
local h = require "spec.helper"
local orch = h.orch

local eventually = h.eventually

after_each(function()
  assert.are.same({}, h.children())
end)

local function pgid_of(pid)
  return assert(orch.proc.stat(pid)).pgid
end

-- Kills what is left of a test's processes and collects them through their
-- own objects (so that no exit is kept for the tests that follow).
local function reap(...)
  for _, p in ipairs({ ... }) do
    if p:running() then p:kill("KILL") end
    p:wait()
  end
end

describe("orch.spawn's pgroup = N", function()
  it("puts the child in an existing group; the kernel agrees", function()
    h.run(function()
      local lead = assert(orch.spawn{ "sleep", "100", pgroup = true })
      local m = assert(orch.spawn{ "sleep", "100", pgroup = lead.pid })
      assert.are.equal(lead.pid, pgid_of(lead.pid))
      assert.are.equal(lead.pid, pgid_of(m.pid))
      -- The group is the leader's: a signal to it reaches the member too.
      lead:kill("TERM", { group = true })
      assert.are.same({ nil, "TERM" }, { m:wait() })
      assert.are.same({ nil, "TERM" }, { lead:wait() })
    end)
  end)

  it("a group that does not exist is the kernel's EPERM, nothing left behind", function()
    h.run(function()
      local gone = assert(orch.spawn{ "true", pgroup = true })
      gone:wait()
      local p, err, code = orch.spawn{ "sleep", "100", pgroup = gone.pid }
      assert.is_nil(p)
      assert.are.equal("spawn: setpgid: operation not permitted", err)
      assert.are.equal("EPERM", code)
    end)
  end)

  it("validates before anything is done", function()
    h.check_raises {
      { function() orch.spawn{ "true", pgroup = 0 } end, "bad argument #1 to 'spawn' (option 'pgroup': boolean or process group id (a positive integer) expected)" },
      { function() orch.spawn{ "true", pgroup = -5 } end, "(option 'pgroup': boolean or process group id (a positive integer) expected)" },
      { function() orch.spawn{ "true", pgroup = 1.5 } end, "(option 'pgroup': boolean or process group id (a positive integer) expected)" },
      { function() orch.spawn{ "true", pgroup = "12" } end, "(option 'pgroup': boolean or process group id expected, got string)" },
      { function() orch.spawn{ "true", pgroup = 12, setsid = true } end, "(option 'pgroup': a process group to join and setsid exclude each other)" },
    }
  end)
end)

describe("orch.wait_group", function()
  it("returns the member of a pipeline's group that was killed, then each other one once, then ECHILD", function()
    h.run(function()
      -- A shell's pipeline: every member in the first one's group. An
      -- outsider in its own group must never be reported.
      local lead = assert(orch.spawn{ "sleep", "100", pgroup = true })
      local pg = lead.pid
      local mid = assert(orch.spawn{ "sleep", "100", pgroup = pg })
      local last = assert(orch.spawn{ "sh", "-c", "read x; exit 3", stdin = "pipe", pgroup = pg })
      local outsider = assert(orch.spawn{ "sleep", "100", pgroup = true })
      for _, p in ipairs({ lead, mid, last }) do assert.are.equal(pg, pgid_of(p.pid)) end
      assert.are_not.equal(pg, pgid_of(outsider.pid))

      outsider:kill("KILL")
      orch.kill(mid.pid, "KILL")
      assert.are.same({ mid.pid, nil, "KILL" }, { orch.wait_group(pg) })
      -- The outsider's exit went to nobody: it stays out of this group.
      last.stdin:close()                 -- read x sees end of file: exit 3
      assert.are.same({ last.pid, 3, nil }, { orch.wait_group(pg) })
      lead:kill("TERM")
      assert.are.same({ lead.pid, nil, "TERM" }, { orch.wait_group(pg) })
      assert.are.same({ nil, "wait_group: no child of orch in process group " .. pg, "ECHILD" },
        { orch.wait_group(pg) })
      -- The objects still say how each ended.
      assert.are.same({ 3, nil }, { last:wait() })
      assert.are.same({ "killed", nil, "KILL" }, { mid:status() })
      assert.are.same({ nil, "KILL" }, { outsider:wait() })
    end)
  end)

  it("an exit before the call is kept for it, once; one reported to p:wait() or on_exit is not", function()
    h.run(function()
      local lead = assert(orch.spawn{ "sleep", "100", pgroup = true })
      local pg = lead.pid
      local early = assert(orch.spawn{ "sh", "-c", "exit 7", pgroup = pg })
      eventually(function() return not early:running() end, "early reaped")
      local waited = assert(orch.spawn{ "sh", "-c", "exit 5", pgroup = pg })
      assert.are.same({ 5, nil }, { waited:wait() })
      local handled = {}
      local hooked = assert(orch.spawn{ "sh", "-c", "exit 6", pgroup = pg })
      hooked:on_exit(function(code) handled[#handled + 1] = code end)
      eventually(function() return handled[1] == 6 end, "on_exit ran")
      -- Only early's exit is there to take, and only once.
      assert.are.same({ early.pid, 7, nil }, { orch.wait_group(pg) })
      assert.are.same({ nil, "wait_group: timed out", "ETIMEDOUT" }, { orch.wait_group(pg, 0.05) })
      -- p:wait() still answers after a group wait took the exit.
      assert.are.same({ 7, nil }, { early:wait() })
      -- p:wait() after the exit takes it away from group waits too.
      local late = assert(orch.spawn{ "sh", "-c", "exit 9", pgroup = pg })
      eventually(function() return not late:running() end, "late reaped")
      assert.are.same({ 9, nil }, { late:wait() })
      lead:kill("KILL")
      assert.are.same({ lead.pid, nil, "KILL" }, { orch.wait_group(pg) })
      assert.are.equal("ECHILD", select(3, orch.wait_group(pg)))
    end)
  end)

  it("times out while the group's members run, and does not block the loop: another task runs meanwhile", function()
    h.run(function()
      local lead = assert(orch.spawn{ "sleep", "100", pgroup = true })
      local m = assert(orch.spawn{ "sleep", "100", pgroup = lead.pid })
      local t0 = orch.now()
      assert.are.same({ nil, "wait_group: timed out", "ETIMEDOUT" }, { orch.wait_group(lead.pid, 0.1) })
      assert.is_true(orch.now() - t0 >= 0.1)
      assert.is_true(lead:running() and m:running())
      local ticks = 0
      orch.task(function()
        for _ = 1, 5 do orch.sleep(0.01) ticks = ticks + 1 end
        m:kill("KILL")
      end)
      local pid, code, sig = orch.wait_group(lead.pid)
      assert.are.same({ m.pid, nil, "KILL" }, { pid, code, sig })
      assert.are.equal(5, ticks)
      reap(lead, m)
    end)
  end)

  it("wakes a waiting call with ECHILD when the group's last child is reported to someone else", function()
    h.run(function()
      local lead = assert(orch.spawn{ "sleep", "100", pgroup = true })
      lead:on_exit(function() end)
      local t = orch.task(function() return orch.wait_group(lead.pid) end)
      orch.sleep(0.02)
      lead:kill("KILL")
      assert.are.same({ nil, "wait_group: no child of orch in process group " .. lead.pid, "ECHILD" },
        { t:join(10) })
      lead:wait()
    end)
  end)

  it("hands an exit to one waiting call, the one that waited longest", function()
    h.run(function()
      local lead = assert(orch.spawn{ "sleep", "100", pgroup = true })
      local m = assert(orch.spawn{ "sleep", "100", pgroup = lead.pid })
      local got = {}
      local function waiter(name)
        return orch.task(function()
          local pid = orch.wait_group(lead.pid)
          got[#got + 1] = { name, pid }
        end)
      end
      local a = waiter("first")
      orch.sleep(0.01)
      local b = waiter("second")
      orch.sleep(0.01)
      m:kill("KILL")
      a:join(10)
      assert.are.same({ { "first", m.pid } }, got)
      lead:kill("KILL")
      b:join(10)
      assert.are.same({ { "first", m.pid }, { "second", lead.pid } }, got)
    end)
  end)

  it("a cancelled call takes nothing: the exit is kept for the next one", function()
    h.run(function()
      local lead = assert(orch.spawn{ "sleep", "100", pgroup = true })
      local t = orch.task(function() return orch.wait_group(lead.pid) end)
      orch.sleep(0.01)
      t:cancel()
      lead:kill("KILL")
      eventually(function() return not lead:running() end, "lead reaped")
      assert.are.same({ lead.pid, nil, "KILL" }, { orch.wait_group(lead.pid) })
    end)
  end)

  it("0 is orch's own group (waitpid(0)): children spawned without pgroup, forks", function()
    h.run(function()
      local own = assert(orch.spawn{ "sh", "-c", "read x; exit 4", stdin = "pipe" })
      local apart = assert(orch.spawn{ "sleep", "100", pgroup = true })
      assert.are.equal(pgid_of(orch.getpid()), pgid_of(own.pid))
      own.stdin:close()
      assert.are.same({ own.pid, 4, nil }, { orch.wait_group(0) })
      local f = assert(orch.fork(function() return 12 end))
      assert.are.same({ f.pid, 12, nil }, { orch.wait_group(0) })
      assert.are.equal("ECHILD", select(3, orch.wait_group(0)))
      reap(apart)
    end)
  end)

  it("validates its arguments; outside a task it raises", function()
    h.check_raises {
      { function() orch.wait_group() end, "bad argument #1 to 'wait_group' (process group id (an integer >= 0) expected)" },
      { function() orch.wait_group(-1) end, "bad argument #1 to 'wait_group' (process group id (an integer >= 0) expected)" },
      { function() orch.wait_group("12") end, "bad argument #1 to 'wait_group' (process group id (an integer >= 0) expected)" },
      { function() orch.wait_group(1.5) end, "bad argument #1 to 'wait_group' (process group id (an integer >= 0) expected)" },
      { function() orch.wait_group(12, "x") end, "bad argument #2 to 'wait_group'" },
      { function() orch.wait_group(12, 1, 2) end, "bad argument #3 to 'wait_group'" },
      { function() orch.wait_group(12) end, "wait_group: must be called from a task" },
      { function() orch.wait_any(1, 2) end, "bad argument #2 to 'wait_any'" },
      { function() orch.wait_any() end, "wait_any: must be called from a task" },
    }
  end)
end)

describe("orch.wait_any", function()
  it("returns any child's exit nobody was told of, in exit order, then ECHILD", function()
    h.run(function()
      local a = assert(orch.spawn{ "sh", "-c", "exit 1" })
      eventually(function() return not a:running() end, "a reaped")
      local b = assert(orch.spawn{ "sleep", "100", pgroup = true })
      local c = assert(orch.fork(function() orch.sleep(100) end))
      assert.are.same({ a.pid, 1, nil }, { orch.wait_any() })
      c:kill("TERM")
      assert.are.same({ c.pid, nil, "TERM" }, { orch.wait_any() })
      assert.are.same({ nil, "wait_any: timed out", "ETIMEDOUT" }, { orch.wait_any(0.02) })
      b:kill("KILL")
      assert.are.same({ b.pid, nil, "KILL" }, { orch.wait_any() })
      assert.are.same({ nil, "wait_any: orch has no child", "ECHILD" }, { orch.wait_any() })
    end)
  end)

  it("never sees an adopted orphan (those go to orch.proc.on_orphan_exit)", function()
    h.run(function()
      orch.proc.subreaper(true)
      local orphans = {}
      local w = orch.proc.on_orphan_exit(function(pid, code) orphans[#orphans + 1] = code end)
      local p = assert(orch.spawn{ "sh", "-c", "(sleep 0.05; exit 5) & exit 0" })
      assert.are.same({ p.pid, 0, nil }, { orch.wait_any() })
      eventually(function() return orphans[1] == 5 end, "the orphan reported")
      assert.are.equal("ECHILD", select(3, orch.wait_any()))
      w:stop()
      orch.proc.subreaper(false)
    end)
  end)
end)
