-- orch.heartbeat: the heartbeat table from Lua, real client processes (the
-- C library's, a classic one), the supervisor hand-off and `orch beat`.
-- Every table is private (removed at once) or per-run keyed and removed in
-- a finally; every process started here is killed and reaped.
local h = require "spec.helper"
local orch = h.orch
local hb = require "orch.heartbeat"

local self_pid = orch.getpid
local eventually, errmsg = h.eventually, h.error_of

local defer = h.make_defer(function(f) finally(f) end)   -- stacked clean-ups

local function private(opts)
  opts = opts or {}
  opts.key, opts.create = 0, true
  local t = assert(hb.open(opts))
  assert(t:remove())
  return t
end

-- Starts a helper program as a direct child (popen + exec) and reads its
-- "ready pid=P slot=I" line. env: a table of variables to export.
local function start(prog, args, env)
  local pre = {}
  for k, v in pairs(env or {}) do pre[#pre + 1] = "export " .. k .. "=" .. h.shquote(v) .. ";" end
  local p = io.popen(table.concat(pre, " ") .. " exec " .. h.progs .. "/" .. prog .. " " .. args)
  local line = p:read("l") or ""
  local pid, slot = line:match("^ready pid=(%d+) slot=(%d+)$")
  assert(pid, "no ready line from " .. prog .. ": " .. line)
  return { p = p, pid = tonumber(pid), slot = tonumber(slot) }
end

local function stop(c, sig)
  if c.stopped then return end
  c.stopped = true
  os.execute("kill -" .. (sig or "KILL") .. " " .. c.pid .. " 2>/dev/null")
  return c.p:close()
end

-- start(), the process being stopped when the test ends.
local function started(prog, args, env)
  local c = start(prog, args, env)
  defer(function() stop(c) end)
  return c
end

-- A table with a per-run key (opts plus key and create), removed when the
-- test ends; returns the table and its key.
local function keyed(opts)
  opts.key, opts.create = h.key(), true
  local t = assert(hb.open(opts))
  defer(function() t:remove(); t:close() end)
  return t, opts.key
end

describe("orch.heartbeat", function()
  it("is what require 'orch.heartbeat' returns", function()
    assert.are.equal(orch.heartbeat, hb)
    assert.are.equal(0x6F726862, hb.DEFAULT_KEY)
    assert.are.equal(0x5095, hb.COMPAT_KEY)
    assert.are.equal(63, hb.NAME_MAX)
  end)

  it("registers, beats and unregisters the calling process", function()
    local t = private { slots = 4 }
    local s = assert(t:register("lua-worker", 1.5))
    assert.are.equal(0, s.index)
    assert.are.equal(self_pid(), s.pid)
    assert.is_true(s.held)
    assert.are.equal(t, s.table)
    assert.matches("^orch.HeartbeatSlot: index=0 pid=%d+$", tostring(s))
    local list = t:slots()
    assert.are.equal(1, #list)
    local i = list[1]
    assert.are.equal(0, i.index)
    assert.are.equal(self_pid(), i.pid)
    assert.are.equal(hb.start_time(), i.start_time)
    assert.are.equal("lua-worker", i.name)
    assert.are.equal(1.5, i.timeout)
    assert.is_number(i.uid)
    assert.is_false(i.reserved)
    assert.is_false(i.proxy)
    assert.is_false(i.compat)
    assert.are.equal(0, i.generation % 2)
    assert.is_true(i.age >= 0)
    assert.are.same(i.name, t:read(0).name)

    h.run(function()
      local before = orch.now()
      orch.sleep(0.01)
      assert.is_true(s:beat())
      local after = orch.now()
      local j = s:info()
      -- last_beat is on orch.now()'s clock.
      assert.is_true(j.last_beat >= before and j.last_beat <= after)
      assert.is_true(j.last_beat > i.last_beat)
      assert.are.equal(i.registered, j.registered)
    end)

    assert.is_true(s:unregister())
    assert.is_false(s.held)
    assert.are.equal("orch.HeartbeatSlot: released", tostring(s))
    assert.are.same({ nil, "heartbeat.beat: slot no longer held (released or reclaimed)", "ESTALE" },
      { s:beat() })
    assert.are.same({ nil, "heartbeat.unregister: slot no longer held (released or reclaimed)", "ESTALE" },
      { s:unregister() })
    assert.are.same({}, t:slots())
    assert.are.same({ nil, "heartbeat.read: slot 0 is free", "ENOENT" }, { t:read(0) })
    t:close()
  end)

  it("changes a timeout, and a <close> slot unregisters", function()
    local t = private { slots = 2 }
    local c0 = t:changes()
    do
      local s <close> = assert(t:register("scoped", 1))
      assert.is_true(s:set_timeout(2.25))
      assert.are.equal(2.25, s:info().timeout)
      assert.is_true(s:set_timeout(0.0001))     -- never rounded down to "no timeout"
      assert.are.equal(0.001, s:info().timeout)
      assert.is_true(s:set_timeout(0))
      assert.are.equal(0, s:info().timeout)
      assert.is_true(t:changes() > c0)
    end
    assert.are.same({}, t:slots())
    t:close()
  end)

  it("refuses a closed table, from the table and from its slots", function()
    local t = private { slots = 2 }
    local s = assert(t:register("x", 1))
    assert.matches("^orch.HeartbeatTable: key=0x0 shmid=%d+ slots=2$", tostring(t))
    t:close()
    t:close()
    assert.are.equal("orch.HeartbeatTable: closed", tostring(t))
    assert.matches("attempt to use a closed orch.HeartbeatTable", errmsg(function() return t:slots() end))
    assert.matches("attempt to use a closed orch.HeartbeatTable", errmsg(function() return s:beat() end))
  end)

  it("opens tables by key: create, exclusive, mode, attach, remove", function()
    local t, key = keyed { exclusive = true, mode = 416 --[[0640]], slots = 8 }
    assert.are.equal(8, t:count())
    assert.are.equal(key, t:key())
    assert.is_false(t:is_compat())
    local ipcs = h.sh("ipcs -m")
    assert.matches(string.format("0x%08x%%s+%d%%s+%%S+%%s+640%%s", key, t:shmid()), ipcs)
    assert.are.same({ nil, "heartbeat.open: file exists", "EEXIST" },
      { hb.open { key = key, create = true, exclusive = true } })
    local u = assert(hb.open { key = key })
    defer(function() u:close() end)
    local s = assert(t:register("shared", 3))
    assert.are.equal("shared", u:read(s.index).name)
    local ro = assert(hb.open { key = key, rdonly = true })
    assert.are.same({ nil, "heartbeat.register: read-only file system", "EROFS" }, { ro:register("ro", 1) })
    assert.are.same({ nil, "heartbeat.clear: read-only file system", "EROFS" }, { ro:clear(ro:read(s.index)) })
    ro:close()
    assert.is_true(s:unregister())
  end)

  it("reports missing tables and segments that are not heartbeat tables", function()
    assert.are.same({ nil, "heartbeat.open: no such table", "ENOENT" }, { hb.open { key = h.key() } })
    local c, key = keyed { compat = true, slots = 4 }
    local s = assert(c:register("classic", 5))
    assert.are.same({ nil, "heartbeat.open: not a heartbeat table of this layout or version", "EPROTO" },
      { hb.open { key = key } })
    s:unregister()
    local _, key2 = keyed { slots = 2 }
    assert.are.same({ nil, "heartbeat.open: not a heartbeat table of this layout or version", "EPROTO" },
      { hb.open { key = key2, compat = true } })
  end)

  it("watches a C client of the library, and clears its slot once it is dead", function()
    local t, key = keyed { slots = 16 }
    local c = started("prog_hb_client", "-k " .. key .. " -n cworker -t 3000 -i 20")
    local i = assert(t:read(c.slot))
    assert.are.equal(c.pid, i.pid)
    assert.are.equal("cworker", i.name)
    assert.are.equal(3, i.timeout)
    assert.are.equal(hb.start_time(c.pid), i.start_time)
    assert.is_true(hb.alive(c.pid, i.start_time))
    assert.is_false(hb.alive(c.pid, i.start_time + 1))
    h.run(function()
      eventually(function() return t:read(c.slot).last_beat > i.last_beat end)
    end)
    local found = assert(t:find(c.pid))
    assert.are.equal(c.slot, found.index)
    stop(c)
    assert.is_false(hb.alive(c.pid, i.start_time))
    local last = t:read(c.slot)
    assert.is_true(t:clear(last))
    assert.are.same({ nil, "heartbeat.clear: slot no longer held (released or reclaimed)", "ESTALE" },
      { t:clear(last) })
    assert.are.same({}, t:slots())
  end)

  it("sees a stalled client stop beating while its age grows", function()
    local t, key = keyed { slots = 4 }
    local c = started("prog_hb_client", "-k " .. key .. " -n staller -t 1000 -i 5 -s 2")
    assert.are.equal("stalled", c.p:read("l"))
    local a = t:read(c.slot)
    h.run(function() orch.sleep(0.05) end)
    local b = t:read(c.slot)
    assert.are.equal(a.last_beat, b.last_beat)
    assert.is_true(b.age > a.age)
    assert.is_true(hb.alive(c.pid, b.start_time))
  end)

  it("reads the classic table written by a classic program, and writes it", function()
    local t, key = keyed { compat = true }
    assert.is_true(t:is_compat())
    assert.are.equal(1000, t:count())
    assert.matches(string.format("0x%08x%%s+%d%%s+%%S+%%s+600%%s+72000%%s", key, t:shmid()), (h.sh("ipcs -m")))
    local c = started("prog_hb_compat", "-k " .. key .. " -n classic -t 7 -i 20")
    local i = assert(t:read(c.slot))
    assert.is_true(i.compat)
    assert.are.equal(c.pid, i.pid)
    assert.are.equal("classic", i.name)
    assert.are.equal(7, i.timeout)
    assert.is_true(math.abs(i.atime - os.time()) <= 2)
    assert.is_nil(i.start_time)
    assert.is_true(i.age >= 0)
    h.run(function()
      assert.is_true(i.last_beat <= orch.now())
    end)
    assert.are.equal(c.slot, assert(t:find(c.pid)).index)

    -- A Lua writer on the same table, as a fake classic client.
    local s = assert(t:register("lua-classic", 4.2))
    assert.are_not.equal(c.slot, s.index)
    local j = t:read(s.index)
    assert.are.equal(5, j.timeout)                 -- whole seconds, rounded up
    assert.are.equal("lua-classic", j.name)
    assert.is_true(s:beat())
    assert.matches("name too long %(at most 50 bytes%)", errmsg(function() return t:register(("x"):rep(51), 1) end))
    assert.are.same({ nil, "heartbeat.reserve: operation not supported", "EOPNOTSUPP" }, { t:reserve("r", 1) })
    assert.is_true(s:unregister())

    -- The classic program clears its own slot on SIGTERM.
    stop(c, "TERM")
    assert.are.same({ nil, "heartbeat.read: slot " .. c.slot .. " is free", "ENOENT" }, { t:read(c.slot) })
  end)

  it("registers another process, found by pid and start time", function()
    local t = private { slots = 4 }
    local p = io.popen("echo $$; exec sleep 600")
    local pid = tonumber(p:read("l"))
    local c = { p = p, pid = pid }
    finally(function() stop(c); t:close() end)
    local s = assert(t:register("proxied", 2, pid))
    assert.are.equal(pid, s.pid)
    local i = t:read(s.index)
    assert.is_true(i.proxy)
    assert.are.equal(hb.start_time(pid), i.start_time)
    assert.are.equal(s.index, assert(t:find(pid)).index)
    assert.are.same({ nil, "heartbeat.find: no such file or directory", "ENOENT" }, { t:find() })
    stop(c)
    assert.are.same({ nil, "heartbeat.find: no such process", "ESRCH" }, { t:find(pid) })
    assert.are.same({ nil, "heartbeat.register: no such process", "ESRCH" }, { t:register("gone", 1, pid) })
    assert.are.same({ nil, "proc.start_time: no such process", "ESRCH" }, { hb.start_time(pid) })
    assert.is_false(hb.alive(pid))
    assert.is_false(hb.alive(0))
    assert.is_false(hb.alive(-1))
    assert.is_true(hb.alive(self_pid()))
  end)

  it("hands a reserved slot to a supervised child through the environment", function()
    local t, key = keyed { slots = 4 }
    local r = assert(t:reserve("svc", 3))
    local i = t:read(r.index)
    assert.is_true(i.reserved)
    assert.are.equal(self_pid(), i.pid)
    local c = started("prog_hb_client", "-e -i 5 -s 3",
      { ORCH_HEARTBEAT_KEY = tostring(key), ORCH_HEARTBEAT_SLOT = tostring(r.index) })
    assert.are.equal(r.index, c.slot)
    assert.are.equal("stalled", c.p:read("l"))
    local j = t:read(r.index)
    assert.are.equal(c.pid, j.pid)
    assert.is_false(j.reserved)
    assert.are.equal("svc", j.name)
    assert.are.equal(3, j.timeout)
    assert.are.equal(hb.start_time(c.pid), j.start_time)
    assert.is_true(r:assign(c.pid))           -- the child adopted it first
    assert.are.equal(c.pid, r.pid)
    assert.is_true(r:beat())
  end)

  it("from_env without the variables", function()
    assert.are.same({ nil, "heartbeat.from_env: ORCH_HEARTBEAT_KEY and ORCH_HEARTBEAT_SLOT are not both set", "ENOENT" },
      { hb.from_env() })
    assert.are.same({ nil, "heartbeat.from_env: ORCH_HEARTBEAT_KEY and ORCH_HEARTBEAT_SLOT are not both set", "ENOENT" },
      { h.run(function() return hb.from_env(0.01) end) })
  end)

  describe("bad arguments", function()
    local t, s
    setup(function()
      t = private { slots = 2 }
      s = assert(t:register("args", 1))
    end)
    teardown(function() t:close() end)

    local cases = {
      { "open", function() return hb.open { kye = 1 } end, "bad argument #1 to 'open' (unknown option 'kye')" },
      { "open", function() return hb.open { key = "x" } end, "bad argument #1 to 'open' (option 'key': integer expected, got string)" },
      { "open", function() return hb.open { key = 1.5 } end, "bad argument #1 to 'open' (option 'key': number has no integer representation)" },
      { "open", function() return hb.open { key = -1 } end, "bad argument #1 to 'open' (option 'key': not a SysV key (32 bits, not -1))" },
      { "open", function() return hb.open { key = 1 << 33 } end, "bad argument #1 to 'open' (option 'key': not a SysV key (32 bits, not -1))" },
      { "open", function() return hb.open { mode = 512 } end, "bad argument #1 to 'open' (option 'mode': permission bits (0 to 0o777) expected)" },
      { "open", function() return hb.open { slots = -1 } end, "bad argument #1 to 'open' (option 'slots': 0 to 1048576 expected)" },
      { "open", function() return hb.open { create = "yes" } end, "bad argument #1 to 'open' (option 'create': boolean expected, got string)" },
      { "open", function() return hb.open(1) end, "bad argument #1 to 'open' (table expected, got number)" },
      { "open", function() return hb.open({}, 2) end, "bad argument #2 to 'open' (no value expected)" },
      { "register", function() return t:register(nil, 1) end, "bad argument #1 to 'register' (string expected, got nil)" },
      { "register", function() return t:register("", 1) end, "bad argument #1 to 'register' (name must not be empty)" },
      { "register", function() return t:register(("x"):rep(64), 1) end, "bad argument #1 to 'register' (name too long (at most 63 bytes))" },
      { "register", function() return t:register("a\0b", 1) end, "bad argument #1 to 'register' (name must not contain '\\0')" },
      { "register", function() return t:register("n") end, "bad argument #2 to 'register' (number expected, got no value)" },
      { "register", function() return t:register("n", -1) end, "bad argument #2 to 'register' (seconds must be a finite number >= 0)" },
      { "register", function() return t:register("n", 1 / 0) end, "bad argument #2 to 'register' (seconds must be a finite number >= 0)" },
      { "register", function() return t:register("n", 0 / 0) end, "bad argument #2 to 'register' (seconds must be a finite number >= 0)" },
      { "register", function() return t:register("n", 5e6) end, "bad argument #2 to 'register' (timeout too large (at most 4294967 seconds))" },
      { "register", function() return t:register("n", 1, 0) end, "bad argument #3 to 'register' (invalid pid)" },
      { "register", function() return t:register("n", 1, 1.5) end, "bad argument #3 to 'register' (invalid pid)" },
      { "register", function() return t:register("n", 1, nil, 4) end, "bad argument #4 to 'register' (no value expected)" },
      { "reserve", function() return t:reserve("", 1) end, "bad argument #1 to 'reserve' (name must not be empty)" },
      { "find", function() return t:find(-3) end, "bad argument #1 to 'find' (invalid pid)" },
      { "read", function() return t:read(-1) end, "bad argument #1 to 'read' (slot index out of range)" },
      { "read", function() return t:read(2) end, "bad argument #1 to 'read' (slot index out of range)" },
      { "attach", function() return t:attach(2) end, "bad argument #1 to 'attach' (slot index out of range)" },
      { "slots", function() return t:slots(1) end, "bad argument #1 to 'slots' (no value expected)" },
      { "clear", function() return t:clear() end, "bad argument #1 to 'clear' (table expected, got no value)" },
      { "clear", function() return t:clear {} end, "bad argument #1 to 'clear' (field 'index': slot index expected)" },
      { "clear", function() return t:clear { index = 0 } end, "bad argument #1 to 'clear' (field 'pid': non-zero pid expected)" },
      { "clear", function() return t:clear { index = 0, pid = 5 } end, "bad argument #1 to 'clear' (field 'generation': generation expected (a snapshot from :slots()))" },
      { "beat", function() return s:beat(1) end, "bad argument #1 to 'beat' (no value expected)" },
      { "set_timeout", function() return s:set_timeout(-1) end, "bad argument #1 to 'set_timeout' (seconds must be a finite number >= 0)" },
      { "assign", function() return s:assign(0) end, "bad argument #1 to 'assign' (invalid pid)" },
      { "alive", function() return hb.alive("x") end, "bad argument #1 to 'alive' (number expected, got string)" },
      { "alive", function() return hb.alive(1, -1) end, "bad argument #2 to 'alive' (start time must be >= 0)" },
      { "start_time", function() return hb.start_time(0) end, "bad argument #1 to 'start_time' (invalid pid)" },
      { "from_env", function() return hb.from_env(-1) end, "bad argument #1 to 'from_env' (seconds must be a finite number >= 0)" },
      { "beat", function() return s.beat(t) end, "bad argument #1 to 'beat' (orch.HeartbeatSlot expected, got orch.HeartbeatTable)" },
      { "register", function() return t.register(s, "n", 1) end, "bad argument #1 to 'register' (orch.HeartbeatTable expected, got orch.HeartbeatSlot)" },
    }
    for n, case in ipairs(cases) do
      it(case[1] .. " #" .. n, function()
        -- Lua prefixes the caller's position; the message is the rest.
        assert.are.equal(case[3], (errmsg(case[2]):gsub("^[^:]+:%d+: ", "")))
      end)
    end
  end)
end)

describe("orch beat", function()
  local key, t
  before_each(function()
    key = h.key()
  end)
  after_each(function()
    if t then t:remove(); t:close(); t = nil end
  end)

  it("registers a process on the first call and beats on later ones", function()
    local me = self_pid()
    local code, out, err = h.cli { "beat", "--name", "job", "--timeout", "2.5", "--pid", tostring(me), "--key", tostring(key) }
    assert.are.same({ 0, "", "" }, { code, out, err })
    t = assert(hb.open { key = key })
    local list = t:slots()
    assert.are.equal(1, #list)
    local i = list[1]
    assert.are.equal(me, i.pid)
    assert.are.equal("job", i.name)
    assert.are.equal(2.5, i.timeout)
    assert.is_true(i.proxy)
    assert.are.equal(hb.start_time(me), i.start_time)
    code = h.cli { "beat", "--pid", tostring(me), string.format("--key=0x%x", key) }
    assert.are.equal(0, code)
    local j = t:slots()
    assert.are.equal(1, #j)
    assert.is_true(j[1].last_beat > i.last_beat)
    assert.are.equal(i.generation, j[1].generation)
    code = h.cli { "beat", "--pid", tostring(me), "--key", tostring(key), "--timeout", "9" }
    assert.are.equal(0, code)
    assert.are.equal(9, t:slots()[1].timeout)
    code, out, err = h.cli { "beat", "--pid", tostring(me), "--key", tostring(key), "--unregister" }
    assert.are.same({ 0, "", "" }, { code, out, err })
    assert.are.same({}, t:slots())
    code, out, err = h.cli { "beat", "--pid", tostring(me), "--key", tostring(key), "--unregister" }
    assert.are.same({ 1, "", "orch beat: pid " .. me .. " has no registration\n" }, { code, out, err })
  end)

  it("registers the calling shell by default", function()
    local out = h.sh(h.shquote(h.bin) .. " beat --name shell --timeout 5 --key " .. key .. "; echo $$")
    t = assert(hb.open { key = key })
    local i = t:slots()[1]
    assert.are.equal(tonumber(out), i.pid)
    assert.are.equal("shell", i.name)
    -- That shell has exited: its registration is a dead one.
    assert.is_false(hb.alive(i.pid, i.start_time))
  end)

  it("in a supervised shell, waits for the slot its supervisor reserved instead of failing", function()
    -- The supervisor's side, done here: reserve a slot, spawn the service
    -- with ORCH_HEARTBEAT_KEY/SLOT, hand the slot over after the spawn. The
    -- service's first command is `orch beat` (no --timeout: the slot has
    -- one), and it comes before the hand-over: the hand-over waits until
    -- `orch beat` has the table attached.
    t = assert(hb.open { key = key, create = true })
    h.run(function()
      local slot = assert(t:reserve("svc", 5))
      local p = assert(orch.spawn { "sh", "-c", h.shquote(h.bin) .. " beat; echo $?", stdout = "pipe",
        env = { ORCH_HEARTBEAT_KEY = tostring(key), ORCH_HEARTBEAT_SLOT = tostring(slot.index) } })
      h.eventually(function()
        for _, kid in ipairs(h.children(p.pid)) do
          if h.slurp("/proc/" .. kid .. "/maps"):find("SYSV", 1, true) then return true end
        end
      end, "orch beat to attach the table")
      assert(slot:assign(p.pid))
      local out = p.stdout:read_all()
      assert.are.same({ 0 }, { p:wait() })
      assert.are.equal("0\n", out)
      local info = t:read(slot.index)
      assert.are.equal(p.pid, info.pid)
      assert.is_false(info.reserved)
      assert.is_true(info.last_beat > info.registered)
    end)
  end)

  it("uses the classic table with --compat", function()
    local me = self_pid()
    local code, out, err = h.cli { "beat", "--compat", "--timeout", "3", "--pid", tostring(me), "--key", tostring(key) }
    assert.are.same({ 0, "", "" }, { code, out, err })
    t = assert(hb.open { key = key, compat = true })
    local i = t:slots()[1]
    assert.are.equal(me, i.pid)
    assert.are.equal(3, i.timeout)
    assert.are.equal(h.slurp("/proc/self/comm"):gsub("%s+$", ""), i.name)
    assert.are.equal(0, (h.cli { "beat", "--compat", "--pid", tostring(me), "--key", tostring(key) }))
  end)

  local usage = {
    { { "--bogus" }, 2, "orch beat: unknown option '--bogus' (see 'orch help beat')\n" },
    { { "stray" }, 2, "orch beat: too many arguments (see 'orch help beat')\n" },
    { { "--timeout" }, 2, "orch beat: option '--timeout' requires an argument (see 'orch help beat')\n" },
    { { "--compat=yes" }, 2, "orch beat: option '--compat' does not take arguments (see 'orch help beat')\n" },
    { { "--timeout", "soon" }, 2, "orch beat: --timeout: seconds expected (0 to 4294967), got 'soon'\n" },
    { { "--timeout", "-1" }, 2, "orch beat: --timeout: seconds expected (0 to 4294967), got '-1'\n" },
    { { "--pid", "0" }, 2, "orch beat: --pid: process id expected, got '0'\n" },
    { { "--pid", "1x" }, 2, "orch beat: --pid: process id expected, got '1x'\n" },
    { { "--key", "zz" }, 2, "orch beat: --key: SysV key expected (decimal or 0x-hex), got 'zz'\n" },
    { { "--name", ("n"):rep(64) }, 2, "orch beat: --name: 1 to 63 bytes expected\n" },
  }
  for n, case in ipairs(usage) do
    it("rejects bad usage #" .. n, function()
      local code, out, err = h.cli { "beat", table.unpack(case[1]) }
      assert.are.same({ case[2], "", case[3] }, { code, out, err })
    end)
  end

  it("needs --timeout to register, and a live process", function()
    local me = self_pid()
    local code, out, err = h.cli { "beat", "--pid", tostring(me), "--key", tostring(key) }
    assert.are.same({ 2, "", "orch beat: --timeout is required to register pid " .. me .. "\n" }, { code, out, err })
    t = assert(hb.open { key = key })
    local p = io.popen("echo $$")
    local gone = tonumber(p:read("l"))
    p:close()
    code, out, err = h.cli { "beat", "--pid", tostring(gone), "--timeout", "1", "--key", tostring(key) }
    assert.are.same({ 1, "", "orch beat: no such process: " .. gone .. "\n" }, { code, out, err })
  end)

  it("prints its usage", function()
    local code, out = h.cli { "beat", "--help" }
    assert.are.equal(0, code)
    assert.matches("^usage: orch beat", out)
  end)
end)
