-- IPC_SET: obj:ipc_set{uid, gid, mode} on shm segments, semaphore sets and
-- message queues (and qbytes on queues), checked with IPC_STAT from a C
-- program and by what the kernel then lets another user (nobody) do.
local h = require "spec.helper"
local orch = h.orch

local defer = h.make_defer(function(f) finally(f) end)
local NOBODY = 65534
local as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups "

-- IPC_STAT of the object with this key, as prog_ipc_peer prints it.
local function c_stat(kind, key)
  local out, ok = h.sh(h.progs .. "/prog_ipc_peer stat " .. kind .. " " .. key)
  assert(ok, out)
  return out
end

-- Runs a Lua chunk in orch as nobody; returns its output.
local function nobody(src)
  return (h.sh(as_nobody .. h.shquote(h.bin) .. " -e " .. h.shquote(src) .. " 2>&1"))
end

local kinds = {
  shm = function(key) return assert(orch.shm.open{ key = key, size = 64, create = true }) end,
  sem = function(key) return assert(orch.sem.open{ key = key }) end,
  msg = function(key) return assert(orch.msg.open{ key = key, create = true }) end,
}
local opens = {
  shm = "orch.shm.open{ key = %d }",
  sem = "orch.sem.open{ key = %d, create = false }",
  msg = "orch.msg.open{ key = %d }",
}

for _, kind in ipairs({ "shm", "sem", "msg" }) do
  describe(kind .. ":ipc_set", function()
    local function new()
      local key = h.key()
      local o = kinds[kind](key)
      defer(function() o:remove() end)
      return o, key
    end

    it("changes the mode; the kernel then lets another user in", function()
      local o, key = new()
      -- (msgget asks for no permission: the queue's stat does.)
      local probe = ("local o, _, e = %s if o then o, _, e = o:stat() end print(e or 'ok')")
        :format(opens[kind]:format(key))
      assert.are.equal("EACCES", nobody(probe))
      assert.is_true(o:ipc_set{ mode = tonumber("666", 8) })
      assert.matches("^uid=0 gid=0 mode=666", c_stat(kind, key))
      assert.are.equal(tonumber("666", 8), o:stat().mode)
      assert.are.equal("ok", nobody(probe))
    end)

    it("changes the owner: the new owner may change it again, the creator keeps the right", function()
      local o, key = new()
      assert.is_true(o:ipc_set{ uid = NOBODY, gid = NOBODY })
      assert.matches("^uid=65534 gid=65534 mode=600", c_stat(kind, key))
      local st = o:stat()
      assert.are.same({ NOBODY, NOBODY, 0 }, { st.uid, st.gid, st.cuid })
      -- nobody owns it now: it may open it and set its mode.
      assert.are.equal("true", nobody(("local o = assert(%s) print(o:ipc_set{ mode = 0x1a0 })")
        :format(opens[kind]:format(key))))
      assert.matches("^uid=65534 gid=65534 mode=640", c_stat(kind, key))
      assert.is_true(o:ipc_set{ uid = 0, gid = 0, mode = tonumber("600", 8) })
      assert.matches("^uid=0 gid=0 mode=600", c_stat(kind, key))
    end)

    it("is refused to a user who neither owns nor created the object (EPERM)", function()
      local o, key = new()
      o:ipc_set{ mode = tonumber("666", 8) }
      local out = nobody(("local o = assert(%s) print(o:ipc_set{ mode = 0x1ff })")
        :format(opens[kind]:format(key)))
      assert.are.equal(("nil\t%s.ipc_set: operation not permitted\tEPERM"):format(kind), out)
      assert.matches("mode=666", c_stat(kind, key))
    end)

    it("rejects bad arguments before changing anything", function()
      local o, key = new()
      h.check_raises({
        { function() return o:ipc_set() end, "bad argument #1 to 'ipc_set' (table expected, got no value)" },
        { function() return o:ipc_set{ mode = tonumber("1777", 8) } end, "option 'mode': permission bits (0 to 0o777) expected" },
        { function() return o:ipc_set{ mode = "644" } end, "option 'mode': integer expected, got string" },
        { function() return o:ipc_set{ uid = -1 } end, "option 'uid': out of range (0 to 2^32-2)" },
        { function() return o:ipc_set{ gid = 1 << 32 } end, "option 'gid': out of range (0 to 2^32-2)" },
        { function() return o:ipc_set{ uid = 1.5 } end, "option 'uid': number has no integer representation" },
        { function() return o:ipc_set{ owner = 1 } end, "unknown option 'owner'" },
        { function() return o:ipc_set({}, 1) end, "bad argument #2 to 'ipc_set' (no value expected)" },
      })
      if kind ~= "msg" then
        h.check_raises({ { function() return o:ipc_set{ qbytes = 1 } end, "unknown option 'qbytes'" } })
      end
      assert.matches("^uid=0 gid=0 mode=600", c_stat(kind, key))
    end)
  end)
end

describe("msg:ipc_set{ qbytes }", function()
  it("sets the queue's byte limit, which the kernel then enforces on a C sender", function()
    local key = h.key()
    local q = assert(orch.msg.open{ key = key, create = true })
    defer(function() q:remove() end)
    assert.is_true(q:ipc_set{ qbytes = 16 })
    assert.matches(" qbytes=16$", c_stat("msg", key))
    assert.are.equal(16, q:stat().qbytes)
    local peer = h.progs .. "/prog_ipc_peer msgtry " .. key .. " 1 "
    assert.is_true(os.execute(peer .. "10"))
    -- 10 of 16 bytes used: 7 more do not fit (exit 4: EAGAIN).
    assert.are.same({ nil, "exit", 4 }, { os.execute(peer .. "7") })
    assert.are.same({ nil, "msg.send: resource temporarily unavailable", "EAGAIN" },
                    { q:send(1, ("y"):rep(7), { nowait = true }) })
    assert.is_true(q:send(1, "123456", { nowait = true }))
    assert.are.equal(16, q:stat().cbytes)
    h.check_raises({
      { function() return q:ipc_set{ qbytes = 0 } end, "option 'qbytes': out of range (1 to 2^31-1)" },
      { function() return q:ipc_set{ qbytes = "x" } end, "option 'qbytes': integer expected, got string" },
    })
  end)

  it("above msgmnb takes CAP_SYS_RESOURCE: an unprivileged owner gets EPERM", function()
    local key = h.key()
    local q = assert(orch.msg.open{ key = key, create = true })
    defer(function() q:remove() end)
    q:ipc_set{ uid = NOBODY }
    local mnb = tonumber(h.slurp("/proc/sys/kernel/msgmnb"))
    local out = nobody(([[local q = assert(orch.msg.open{ key = %d })
      print(q:ipc_set{ qbytes = %d }) print(q:ipc_set{ qbytes = 100 })]]):format(key, mnb + 1))
    assert.are.equal("nil\tmsg.ipc_set: operation not permitted\tEPERM\ntrue", out)
    assert.matches(" qbytes=100$", c_stat("msg", key))
  end)
end)
