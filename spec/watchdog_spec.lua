-- orch.watchdog and `orch watchdog`: real heartbeating processes, real
-- signals, real SysV tables. Every table has a per-run key and is removed in
-- a finally; every process started here is killed and reaped there too.
-- No timing thresholds: waits are hang guards only.
local h = require "spec.helper"
local orch = h.orch
local hb = require "orch.heartbeat"
local watchdog = require "orch.watchdog"
local sched = require "orch.scheduler"

local CLIENT = h.progs .. "/prog_hb_client"
local COMPAT = h.progs .. "/prog_hb_compat"

local self_pid = orch.getpid
local eventually = h.eventually

-- A test session: everything made through it is undone in a finally, even
-- when the test fails or hangs.
local function session(fn, deadline)
  local s = { procs = {}, tables = {}, keys = {}, dogs = {}, jobs = {} }
  -- Stops everything without waiting: runs even when the test body fails
  -- or is cancelled by the hang guard, so that the loop can end.
  function s.stop_all()
    for _, w in ipairs(s.dogs) do pcall(w.stop, w) end
    for _, j in ipairs(s.jobs) do pcall(j.stop, j) end
    for _, p in ipairs(s.procs) do
      if p:running() then pcall(p.kill, p, "KILL") end
    end
  end
  finally(function()
    h.run(function()
      s.stop_all()
      for _, p in ipairs(s.procs) do p:wait() end
      for _, j in ipairs(s.jobs) do j:wait() end
    end, 30)
    for _, t in ipairs(s.tables) do pcall(t.remove, t); pcall(t.close, t) end
    for _, k in ipairs(s.keys) do os.execute(("ipcrm -M 0x%x 2>/dev/null"):format(k)) end
  end)

  -- A per-run key whose segment, if any, is removed at the end.
  function s.key()
    local key = h.key()
    s.keys[#s.keys + 1] = key
    return key
  end

  function s.table(opts)
    opts = opts or {}
    local key = s.key()
    local t = assert(hb.open { key = key, create = true, compat = opts.compat, slots = opts.slots or 16 })
    s.tables[#s.tables + 1] = t
    return t, key
  end

  function s.spawn(cmd)
    cmd.stdout = cmd.stdout or "null"
    local p = assert(orch.spawn(cmd))
    s.procs[#s.procs + 1] = p
    return p
  end

  -- A watchdog whose events and timeouts are recorded in order.
  function s.watch(opts)
    local r = { events = {}, timeouts = {}, seq = 0 }
    if opts.log == nil then opts.log = false end
    opts.on_event = function(ev)
      r.seq = r.seq + 1
      ev.seq = r.seq
      r.events[#r.events + 1] = ev
    end
    opts.on_timeout = function(info)
      r.seq = r.seq + 1
      info.seq = r.seq
      r.timeouts[#r.timeouts + 1] = info
    end
    local w = assert(watchdog.start(opts))
    s.dogs[#s.dogs + 1] = w
    r.w = w
    -- The events named `name` (for `pid`, if given).
    function r.find(name, pid)
      local out = {}
      for _, ev in ipairs(r.events) do
        if ev.event == name and (pid == nil or ev.pid == pid) then out[#out + 1] = ev end
      end
      return out
    end
    function r.first(name, pid) return r.find(name, pid)[1] end
    function r.wait_for(name, pid)
      return eventually(function() return r.first(name, pid) end, name .. " event for " .. tostring(pid))
    end
    -- The first on_timeout call's info, once it has come.
    function r.wait_timeout()
      return eventually(function() return r.timeouts[1] end, "on_timeout")
    end
    return r
  end

  function s.every(seconds, cmd, opts)
    opts = opts or {}
    local on_start = opts.on_start
    opts.log = opts.log or function() end
    opts.on_start = function(p, n)
      s.procs[#s.procs + 1] = p
      if on_start then on_start(p, n) end
    end
    local j = sched.every(seconds, cmd, opts)
    s.jobs[#s.jobs + 1] = j
    return j
  end

  -- Waits until pid holds a slot of t, and returns the slot's snapshot.
  function s.registered(t, pid)
    return eventually(function()
      for _, i in ipairs(t:slots()) do if i.pid == pid then return i end end
    end, "registration of pid " .. pid)
  end

  return h.run(function()
    local _ <close> = setmetatable({}, { __close = function() s.stop_all() end })
    return fn(s)
  end, deadline or 90)
end

local function client(key, ...)
  return { CLIENT, "-k", ("0x%x"):format(key), ... }
end

describe("orch.watchdog", function()
  it("kills a stalled process after its timeout, and the scheduler starts it again", function()
    session(function(s)
      local t, key = s.table()
      local r = s.watch { key = key, grace = 5 }
      local runs, exits = {}, {}
      local cmd = client(key, "-t", "300", "-i", "30", "-s", "3")
      cmd.pgroup, cmd.stdout = true, "null"
      s.every(0.05, cmd, {
        on_start = function(p, n) runs[n] = p end,
        on_exit = function(code, sig, n) exits[n] = { code, sig } end,
      })
      eventually(function() return runs[2] end, "a second run")
      r.wait_for("watch", runs[2].pid)
      -- The first run died of the watchdog's SIGTERM.
      assert.are.same({ nil, "TERM" }, exits[1])
      local info = r.timeouts[1]
      assert.are.equal(runs[1].pid, info.pid)
      assert.are.equal("prog_hb_client", info.name)
      assert.are.equal("TERM", info.signal)
      assert.is_true(info.group)           -- it leads its own process group
      assert.is_true(info.exited)
      assert.are.equal(0.3, info.timeout)
      assert.is_true(info.late >= 0)
      -- The sequence: seen, timed out, signalled, exited; nothing else.
      local names = {}
      for _, ev in ipairs(r.events) do
        if ev.pid == runs[1].pid then names[#names + 1] = ev.event end
      end
      assert.are.same({ "watch", "timeout", "signal", "exited" }, names)
      assert.are.equal("TERM", r.first("signal", runs[1].pid).signal)
      -- The slot was cleared; the second run was watched in its turn.
      for _, i in ipairs(t:slots()) do assert.are_not.equal(runs[1].pid, i.pid) end
    end)
  end)

  it("sends SIGKILL after the grace period to a process that ignores SIGTERM", function()
    session(function(s)
      local t, key = s.table()
      local r = s.watch { key = key, grace = 0.3 }
      local p = s.spawn(client(key, "-t", "200", "-i", "20", "-s", "2", "-T"))
      s.registered(t, p.pid)
      local code, sig = p:wait()
      assert.are.same({ nil, "KILL" }, { code, sig })
      local info = r.wait_timeout()
      assert.are.equal(p.pid, info.pid)
      assert.are.equal("KILL", info.signal)
      assert.is_true(info.exited)
      assert.is_false(info.group)          -- not a group leader: the pid alone
      local sigs = r.find("signal", p.pid)
      assert.are.equal(2, #sigs)
      assert.are.equal("TERM", sigs[1].signal)
      assert.are.equal("KILL", sigs[2].signal)
      assert.are.same({}, t:slots())
    end)
  end)

  it("clears the slot of a process that died, without sending any signal", function()
    session(function(s)
      local t, key = s.table()
      local r = s.watch { key = key, grace = 1 }
      -- One with a short timeout (found at its deadline), one that never
      -- times out (found by the periodic sweep).
      local a = s.spawn(client(key, "-t", "300", "-i", "30"))
      local b = s.spawn(client(key, "-t", "0", "-i", "30"))
      r.wait_for("watch", a.pid)
      r.wait_for("watch", b.pid)
      assert(a:kill("KILL"))
      assert(b:kill("KILL"))
      a:wait()
      b:wait()
      local ga = r.wait_for("gone", a.pid)
      local gb = r.wait_for("gone", b.pid)
      assert.matches("no signal sent", ga.message, 1, true)
      assert.matches("no signal sent", gb.message, 1, true)
      assert.are.same({}, r.find("signal"))
      assert.are.same({}, r.timeouts)
      assert.are.same({}, t:slots())
    end)
  end)

  it("never signals a pid whose start time is not the registered one (a reused pid)", function()
    session(function(s)
      local t, key = s.table()
      local victim = s.spawn { "sleep", "60" }
      local slot = assert(t:register("stale", 0.1, victim.pid))
      -- Fake the reuse: the slot says the pid started at another time.
      local seg = assert(orch.shm.open { key = key })
      local off = 64 + slot.index * 128
      seg:set_u64(off + 16, seg:u64(off + 16) + 12345)
      seg:detach()
      local r = s.watch { key = key, grace = 1 }
      local ev = r.wait_for("reused", victim.pid)
      assert.matches("not signalled", ev.message, 1, true)
      assert.are.same({}, r.find("signal"))
      assert.is_true(victim:running())
      assert.are.same({}, t:slots())       -- cleared
    end)
  end)

  it("survives garbage in the table without signalling anything", function()
    session(function(s)
      local t, key = s.table()
      local live1 = s.spawn { "sleep", "60" }
      local live2 = s.spawn { "sleep", "60" }
      local live3 = s.spawn { "sleep", "60" }
      local me = self_pid()
      local seg = assert(orch.shm.open { key = key })
      local function slot(i, f)
        local off = 64 + i * 128
        seg:set_i32(off, f.pid)
        seg:set_u32(off + 4, f.gen or 2)
        seg:set_u64(off + 8, f.last_beat or 0)
        seg:set_u64(off + 16, f.start or 0)
        seg:set_u32(off + 24, f.uid or 0)
        seg:set_u32(off + 28, f.timeout or 1)
        seg:write(off + 64, f.name or "garbage")
      end
      slot(0, { pid = -1 })
      slot(1, { pid = 1, start = 1 })
      slot(2, { pid = 0x7ffffff0, start = 99 })                  -- no such process
      slot(3, { pid = me, start = hb.start_time(me) })           -- orch itself
      slot(4, { pid = live1.pid, start = 0 })                    -- no start time
      slot(5, { pid = live2.pid, gen = 3, start = hb.start_time(live2.pid) })  -- "being written" forever
      slot(6, { pid = live3.pid, start = hb.start_time(live3.pid), timeout = 1,
                last_beat = math.maxinteger })                   -- a beat in the far future
      slot(7, { pid = live3.pid, start = hb.start_time(live3.pid), timeout = 0xffffffff,
                last_beat = 1 })                                 -- a 49-day timeout
      slot(8, { pid = -0x7fffffff, name = string.rep("x", 64) }) -- no NUL in the name
      slot(9, { pid = 0x7ffffff1, start = 5, name = "evil\n2030-01-01 forged line\0" })
      seg:detach()
      local r = s.watch { key = key, grace = 0.2 }
      r.wait_for("garbage")
      eventually(function() return #r.find("garbage") == 2 end, "both garbage slots cleared")
      r.wait_for("gone", 0x7ffffff0)
      local evil = r.wait_for("gone", 0x7ffffff1)
      assert.is_nil(evil.message:find("\n", 1, true))   -- no forged log line
      assert.matches("'evil?2030-01-01 forged line'", evil.message, 1, true)
      local refused = {}
      for _, pid in ipairs { 1, me, live1.pid } do
        refused[pid] = r.wait_for("refused", pid).reason
      end
      assert.matches("pid 1", refused[1], 1, true)
      assert.matches("orch itself", refused[me], 1, true)
      assert.matches("no start time", refused[live1.pid], 1, true)
      assert.are.same({}, r.find("signal"))
      assert.are.same({}, r.timeouts)
      for _, p in ipairs { live1, live2, live3 } do assert.is_true(p:running()) end
      assert.is_true(r.w:status().running)
    end)
  end)

  it("survives garbage in the classic table without signalling anything", function()
    session(function(s)
      local t, key = s.table { compat = true }
      local live1 = s.spawn { "sleep", "60" }
      local live2 = s.spawn { "sleep", "60" }
      local live3 = s.spawn { "sleep", "60" }
      local now = os.time()
      local seg = assert(orch.shm.open { key = key })
      local function slot(i, pid, timeout, atime)
        local off = i * 72
        seg:set_i32(off, pid)
        seg:write(off + 4, "garbage\0")
        seg:set_i32(off + 56, timeout)
        seg:set_i64(off + 64, atime)
      end
      slot(0, -1, 1, now - 100)
      slot(1, 1, 1, -5)                            -- negative atime, pid 1
      slot(2, 1, 1, now)                           -- pid 1, beating "now"
      slot(3, live1.pid, 1, -100)                  -- negative atime on a live process
      slot(4, live2.pid, -7, now)                  -- negative timeout: never
      slot(5, live3.pid, 0x7fffffff, 0)            -- huge timeout, atime 0
      slot(6, 0x7ffffff0, 1, now - 100)            -- no such process
      slot(7, live3.pid, 1, now + 10 * 365 * 86400) -- a beat years ahead
      seg:detach()
      local r = s.watch { key = key, compat = true, grace = 0.2 }
      r.wait_for("garbage", -1)
      r.wait_for("reused", live1.pid)              -- its "beat" predates the process
      r.wait_for("reused", live3.pid)
      r.wait_for("gone", 0x7ffffff0)
      r.wait_for("refused", 1)
      assert.are.same({}, r.find("signal"))
      assert.are.same({}, r.timeouts)
      for _, p in ipairs { live1, live2, live3 } do assert.is_true(p:running()) end
    end)
  end)

  it("watches a program written against the classic table (compat mode)", function()
    session(function(s)
      local t, key = s.table { compat = true }
      local r = s.watch { key = key, compat = true, grace = 5 }
      local p = s.spawn { COMPAT, "-k", ("0x%x"):format(key), "-t", "1", "-i", "100", "-s", "3" }
      r.wait_for("watch", p.pid)
      local code, sig = p:wait()
      -- prog_hb_compat clears its slot and exits 0 on SIGTERM.
      assert.are.same({ 0, nil }, { code, sig })
      r.wait_timeout()
      assert.are.equal(p.pid, r.timeouts[1].pid)
      assert.are.equal("prog_hb_compat", r.timeouts[1].name)
      assert.are.equal("TERM", r.timeouts[1].signal)
      assert.are.same({}, t:slots())
    end)
  end)

  it("handles two timeouts at once: one ignoring SIGTERM never delays the other", function()
    session(function(s)
      local t, key = s.table()
      local r = s.watch { key = key, grace = 3 }
      local stubborn = s.spawn(client(key, "-t", "300", "-i", "20", "-s", "3", "-T"))
      s.registered(t, stubborn.pid)
      local meek = s.spawn(client(key, "-t", "300", "-i", "20", "-s", "3"))
      local _, msig = meek:wait()
      assert.are.equal("TERM", msig)
      local _, ssig = stubborn:wait()
      assert.are.equal("KILL", ssig)
      eventually(function() return #r.timeouts == 2 end, "both handled")
      local done_meek
      for _, info in ipairs(r.timeouts) do if info.pid == meek.pid then done_meek = info end end
      local kill = r.find("signal", stubborn.pid)[2]
      assert.are.equal("KILL", kill.signal)
      -- The meek one was handled (TERM, exit, slot cleared, hook) during the
      -- stubborn one's grace period, before its SIGKILL.
      assert.is_true(done_meek.seq < kill.seq)
      assert.are.equal("TERM", done_meek.signal)
    end)
  end)

  it("does not signal a process of another uid unless allowed", function()
    session(function(s)
      local t, key = s.table()
      local p = s.spawn { "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "60" }
      eventually(function()
        local i = orch.proc.info(p.pid)
        return i and i.uid == 65534 and i.name == "sleep"
      end, "the process to run as uid 65534")
      assert(t:register("nobody", 0.1, p.pid))
      local r = s.watch { key = key, grace = 1 }
      local ev = r.wait_for("refused", p.pid)
      assert.matches("uid 65534 is not allowed", ev.reason, 1, true)
      assert.are.same({}, r.find("signal"))
      assert.is_true(p:running())
      assert.are.equal(1, #t:slots())       -- left alone, not cleared
      r.w:stop()
      -- Allowed explicitly, the same stale registration is acted upon.
      local r2 = s.watch { key = key, grace = 1, uids = { 65534 } }
      local _, sig = p:wait()
      assert.are.equal("TERM", sig)
      r2.wait_timeout()
      assert.are.equal(p.pid, r2.timeouts[1].pid)
    end)
  end)

  it("waits for a table that does not exist yet", function()
    session(function(s)
      local key = s.key()
      local r = s.watch { key = key }
      r.wait_for("waiting")
      local p = s.spawn(client(key, "-c", "-t", "5000", "-i", "30"))
      r.wait_for("open")
      r.wait_for("watch", p.pid)
      local st = r.w:status()
      assert.is_true(st.running)
      assert.are.equal(key, st.key)
      assert.are.equal(1, st.watching)
      assert.are.equal(p.pid, st.entries[1].pid)
      assert.are.equal("watching", st.entries[1].state)
      assert.is_number(st.next_deadline)
      assert.matches("^orch.Watchdog: key=0x%x+ 1 watched$", tostring(r.w))
      assert.is_true(r.w:stop())
      assert.is_false(r.w:stop())
      assert.is_false(r.w:status().running)
      assert.is_true(p:running())           -- stopping touches no process
    end)
  end)

  it("writes its log lines to a file", function()
    session(function(s)
      local t, key = s.table()
      local log = h.tmpdir() .. "/wd.log"
      local r = s.watch { key = key, grace = 1, log = log }
      local p = s.spawn(client(key, "-t", "200", "-i", "20", "-s", "2"))
      p:wait()
      r.wait_timeout()
      r.w:stop()
      local text = h.slurp(log)
      assert.matches("%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ watchdog: watching heartbeat table", text)
      assert.matches("pid " .. p.pid .. " timed out: no heartbeat for", text, 1, true)
      assert.matches("pid " .. p.pid .. ": SIGTERM to pid " .. p.pid, text, 1, true)
    end)
  end)

  describe("expected failures", function()
    it("a segment that is not a heartbeat table", function()
      session(function(s)
        local key = s.key()
        local seg = assert(orch.shm.open { key = key, size = 100, create = true })
        seg:detach()
        local w, err, ename = watchdog.start { key = key, log = false }
        assert.is_nil(w)
        assert.matches("^heartbeat.open: ", err)
        assert.are.equal("EPROTO", ename)
      end)
    end)

    it("a log file that cannot be opened", function()
      local w, err, ename = watchdog.start { key = h.key(), log = "/nonexistent/dir/wd.log" }
      assert.is_nil(w)
      assert.matches("cannot open the log", err, 1, true)
      assert.are.equal("ENOENT", ename)
    end)
  end)

  describe("bad arguments", function()
    local cases = {
      { nil, "table expected, got no value" },
      { 5, "table expected, got number" },
      { { bogus = 1 }, "unknown option 'bogus'" },
      { { grace = "5" }, "option 'grace': number expected, got string" },
      { { grace = -1 }, "option 'grace': seconds >= 0 expected" },
      { { grace = math.huge }, "option 'grace': seconds >= 0 expected" },
      { { scan = 0 }, "option 'scan': seconds from 0.001 to 60 expected" },
      { { key = 0 }, "option 'key': SysV key expected" },
      { { key = 1.5 }, "option 'key': SysV key expected" },
      { { key = 0x100000000 }, "option 'key': SysV key expected" },
      { { compat = 1 }, "option 'compat': boolean expected, got number" },
      { { log = true }, "option 'log': function, file path or false expected" },
      { { log = 3 }, "option 'log': function or string or boolean expected, got number" },
      { { on_timeout = "f" }, "option 'on_timeout': function expected, got string" },
      { { on_event = {} }, "option 'on_event': function expected, got table" },
      { { uids = { "root" } }, "option 'uids': list of uids expected" },
      { { uids = { -1 } }, "option 'uids': list of uids expected" },
      { { any_uid = true, uids = { 0 } }, "give either 'any_uid' or 'uids'" },
      { { table = {} }, "option 'table': userdata expected, got table" },
      { { table = io.stdout }, "option 'table': orch.HeartbeatTable expected" },
    }
    for n, case in ipairs(cases) do
      it(case[2] .. " #" .. n, function()
        local ok, err = pcall(watchdog.start, case[1])
        assert.is_false(ok)
        assert.matches("bad argument #1 to 'start' (" .. case[2], err, 1, true)
      end)
    end

    it("a table together with key, compat or create", function()
      local t = assert(hb.open { key = 0, create = true, slots = 2 })
      t:remove()
      local ok, err = pcall(watchdog.start, { table = t, key = 5 })
      t:close()
      assert.is_false(ok)
      assert.matches("option 'table' excludes 'key', 'compat', 'create' and 'shared'", err, 1, true)
    end)
  end)
end)

describe("orch watchdog", function()
  it("stops on SIGTERM and leaves the watched processes alone", function()
    session(function(s)
      local t, key = s.table()
      local dir = h.tmpdir()
      local log = dir .. "/wd.log"
      local beating = s.spawn(client(key, "-t", "5000", "-i", "30"))
      local stubborn = s.spawn(client(key, "-t", "200", "-i", "20", "-s", "2", "-T"))
      s.registered(t, beating.pid)
      local wd = s.spawn { h.bin, "watchdog", "--key", ("0x%x"):format(key), "--grace", "2",
                           "--log", log, stderr = dir .. "/err" }
      -- The stubborn one gets SIGTERM (ignored) and its grace period starts.
      eventually(function()
        return h.slurp(log):find("pid " .. stubborn.pid .. ": SIGTERM", 1, true)
      end, "the SIGTERM in the log")
      assert(wd:kill("TERM"))
      local code, sig = wd:wait()
      assert.are.same({ 0, nil }, { code, sig })
      assert.matches("SIGTERM: stopping", h.slurp(log), 1, true)
      -- Past the end of the grace period: no SIGKILL came.
      orch.sleep(2.5)
      assert.is_true(stubborn:running())
      assert.is_true(beating:running())
      assert.truthy(t:find(beating.pid))
      assert.are.equal("", h.slurp(dir .. "/err"))
    end)
  end)

  it("stops on SIGINT too, and watches the classic table with --compat", function()
    session(function(s)
      local t, key = s.table { compat = true }
      local dir = h.tmpdir()
      local p = s.spawn { COMPAT, "-k", ("0x%x"):format(key), "-t", "1", "-i", "100", "-s", "2" }
      local wd = s.spawn { h.bin, "watchdog", "--compat", "--key=" .. key, "--grace=1",
                           "--log", dir .. "/wd.log" }
      assert.are.same({ 0, nil }, { p:wait() })
      eventually(function()
        return h.slurp(dir .. "/wd.log"):find("exited", 1, true)
      end, "the exit in the log")
      assert(wd:kill("INT"))
      assert.are.same({ 0, nil }, { wd:wait() })
      local text = h.slurp(dir .. "/wd.log")
      assert.matches("(classic layout)", text, 1, true)
      assert.matches("'prog_hb_compat' pid " .. p.pid .. " timed out", text, 1, true)
      assert.matches("SIGINT: stopping", text, 1, true)
    end)
  end)

  local usage_cases = {
    { { "--bogus" }, "unknown option '--bogus'" },
    { { "extra" }, "too many arguments" },
    { { "--key" }, "option '--key' requires an argument" },
    { { "--key", "nope" }, "--key: SysV key expected" },
    { { "--key", "0" }, "--key: SysV key expected" },
    { { "--grace", "-1" }, "--grace: seconds expected" },
    { { "--grace", "soon" }, "--grace: seconds expected" },
    { { "--scan", "0" }, "--scan: seconds expected" },
    { { "--uid", "root" }, "--uid: numeric uid expected" },
    { { "--any-uid", "--uid", "0" }, "give either --any-uid or --uid" },
    { { "--compat=yes" }, "option '--compat' does not take arguments" },
    { { "--log", "" }, "--log: file name expected" },
  }
  for n, case in ipairs(usage_cases) do
    it("rejects bad usage #" .. n, function()
      local args = { "watchdog" }
      for _, a in ipairs(case[1]) do args[#args + 1] = a end
      local code, out, err = h.cli(args)
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.matches("orch watchdog: " .. case[2], err, 1, true)
    end)
  end

  it("fails with status 1 when the log cannot be opened", function()
    local code, _, err = h.cli { "watchdog", "--key", "12345", "--log", "/nonexistent/dir/x.log" }
    assert.are.equal(1, code)
    assert.matches("cannot open the log", err, 1, true)
  end)

  it("prints its usage", function()
    local code, out = h.cli { "help", "watchdog" }
    assert.are.equal(0, code)
    assert.matches("usage: orch watchdog [--compat] [--key KEY] [--grace SECONDS] [--log FILE]", out, 1, true)
  end)
end)

describe("examples/watchdog.lua", function()
  it("runs: a stall is killed and restarted, and nothing is left behind", function()
    local code, out, err = h.cli { "run", h.root .. "/examples/watchdog.lua", "--duration", "10" }
    assert.are.equal(0, code, err)
    local key = out:match("heartbeat table 0x(%x+)")
    assert.truthy(key, out)
    assert.matches("c-worker: run 1 started", out, 1, true)
    assert.matches("lua%-worker[^\n]* beat 1\n", out)
    assert.matches("sh%-worker[^\n]* beat 1\n", out)
    assert.matches("c%-worker[^\n]* now stalling", out)
    assert.matches("watchdog   'c%-worker' pid %d+ timed out", out)
    assert.matches("watchdog   'c%-worker' pid %d+: SIGTERM to process group", out)
    assert.matches("c-worker: run 1 killed by SIGTERM", out, 1, true)
    assert.matches("c-worker: run 2 started", out, 1, true)
    assert.matches("done: every worker stopped, table 0x" .. key .. " removed", out, 1, true)
    -- No segment with its key, no process with its key in the environment.
    local ipcs = h.sh("ipcs -m")
    assert.is_nil(ipcs:lower():find("0x" .. ("%08x"):format(tonumber(key, 16)), 1, true))
    local left = h.sh("grep -l -a 'ORCH_HEARTBEAT_KEY=0x" .. key .. "' /proc/[0-9]*/environ 2>/dev/null")
    assert.are.equal("", left)
  end)

  it("rejects a bad --duration", function()
    local code, _, err = h.cli { "run", h.root .. "/examples/watchdog.lua", "--duration", "x" }
    assert.are.equal(2, code)
    assert.matches("usage: orch run examples/watchdog.lua", err, 1, true)
  end)
end)
