-- orch.shm: SysV shared memory segments (the Region methods are covered by
-- region_spec.lua). Every segment is created with a per-run key or
-- IPC_PRIVATE and removed in `finally`.
local h = require "spec.helper"
local orch = h.orch

local mypid = orch.getpid()
local uid = tonumber((h.sh("id -u")))
local keystr = h.keystr

-- The ipc.list() entry of the shm segment with this key, or nil.
local function listed(key)
  for _, o in ipairs(orch.ipc.list("shm")) do
    if o.key == key then return o end
  end
end

describe("orch.shm.open", function()
  it("creates a segment with mode 0600 and reports its stat", function()
    local key = h.key()
    local s = assert(orch.shm.open{ key = key, size = 1000, create = true })
    finally(function() s:remove() end)
    local st = assert(s:stat())
    assert.are.equal(key, st.key)
    assert.are.equal(1000, st.size)
    assert.are.equal(1000, s:size())
    assert.are.equal(1, st.nattch)
    assert.are.equal(mypid, st.cpid)
    assert.are.equal(uid, st.uid)
    assert.are.equal(uid, st.cuid)
    assert.are.equal(tonumber("600", 8), st.mode)
    assert.is_false(st.removed)
    assert.is_number(st.id)
    assert.is_number(st.ctime)
    assert.matches("^orch%.Shm: id=%d+ key=" .. keystr(key) .. " size=1000$", tostring(s))
  end)

  it("opens an existing segment: the same memory, at its real size", function()
    local key = h.key()
    local a = assert(orch.shm.open{ key = key, size = 64, create = true, mode = tonumber("640", 8) })
    finally(function() a:remove() end)
    local b = assert(orch.shm.open{ key = key })
    assert.are.equal(64, b:size())
    a:set_u64(8, 12345)
    assert.are.equal(12345, b:u64(8))
    b:write(20, "shared")
    assert.are.equal("shared", a:read(20, 6))
    assert.are.equal(2, a:stat().nattch)
    assert.are.equal(tonumber("640", 8), b:stat().mode)
    local c = assert(orch.shm.open{ key = key, size = 32, create = true })   -- not exclusive
    assert.are.equal(64, c:size())
    b:detach()
    c:detach()
  end)

  it("fails as expected: no segment, exists, too large", function()
    local key = h.key()
    assert.are.same({ nil, "shm.open: no segment for key " .. keystr(key), "ENOENT" },
                    { orch.shm.open{ key = key } })
    local s = assert(orch.shm.open{ key = key, size = 64, create = true, exclusive = true })
    finally(function() s:remove() end)
    assert.are.same({ nil, "shm.open: a segment exists for key " .. keystr(key), "EEXIST" },
                    { orch.shm.open{ key = key, size = 64, create = true, exclusive = true } })
    local r, msg, ename = orch.shm.open{ key = key, size = 128 }
    assert.is_nil(r)
    assert.matches("^shm%.open: size 128 is invalid for key " .. keystr(key), msg)
    assert.are.equal("EINVAL", ename)
  end)

  it("is shared with another process (atomic adds from C)", function()
    local key = h.key()
    local s = assert(orch.shm.open{ key = key, size = 4096, create = true })
    finally(function() s:remove() end)
    local peer = h.progs .. "/prog_ipc_peer shmadd " .. key .. " 64 20000"
    local ok = os.execute(peer .. " & " .. peer .. " & wait")
    assert.is_true(ok)
    for _ = 1, 20000 do s:add(64, 1) end
    assert.are.equal(60000, s:load(64))
  end)

  it("detaches without removing; stat and remove still work", function()
    local key = h.key()
    local s = assert(orch.shm.open{ key = key, size = 64, create = true })
    finally(function() s:remove() end)
    local other = assert(orch.shm.open{ key = key })
    assert.is_true(s:detach())
    assert.is_true(s:detach())   -- idempotent
    assert.matches("^orch%.Shm: detached", tostring(s))
    assert.has_error(function() s:read(0, 1) end, "attempt to use a closed orch.Shm")
    assert.are.equal(1, s:stat().nattch)
    assert.are.equal(64, other:size())
    other:detach()
    assert.are.equal(0, listed(key).nattch)
  end)

  it("remove marks the segment; it lives until the last detach", function()
    local key = h.key()
    local s = assert(orch.shm.open{ key = key, size = 64, create = true })
    finally(function() s:detach() end)
    s:set_u8(0, 7)
    assert.is_true(s:remove())
    assert.is_true(s:remove())   -- idempotent
    assert.is_true(s:stat().removed)
    assert.are.equal(7, s:u8(0))   -- still attached and usable
    assert.are.same({ nil, "shm.open: no segment for key " .. keystr(key), "ENOENT" },
                    { orch.shm.open{ key = key } })
    s:detach()
    local r, msg, ename = s:stat()
    assert.is_nil(r)
    assert.matches("^shm%.stat: ", msg)
    assert.are.equal("EINVAL", ename)
  end)

  it("is detached, never removed, by the GC and by <close>", function()
    local key = h.key()
    finally(function()
      local s = orch.shm.open{ key = key }
      if s then s:remove() end
    end)
    do
      assert(orch.shm.open{ key = key, size = 64, create = true })
    end
    collectgarbage()
    collectgarbage()
    local o = listed(key)
    assert.are.equal(0, o.nattch)
    do
      local s <close> = assert(orch.shm.open{ key = key })
      assert.are.equal(1, listed(key).nattch)
    end
    assert.are.equal(0, listed(key).nattch)
  end)

  it("rejects bad arguments", function()
    local key = h.key()
    local cases = {
      { {}, "option 'key': integer expected, got no value" },
      { { key = "x" }, "option 'key': integer expected, got string" },
      { { key = 1.5 }, "option 'key': number has no integer representation" },
      { { key = 0 }, "option 'key': 0 is IPC_PRIVATE" },
      { { key = 1 << 32 }, "option 'key': out of range" },
      { { key = key, evn = 1 }, "unknown option 'evn'" },
      { { key = key, create = true }, "option 'size': required with create" },
      { { key = key, size = -1 }, "option 'size': size must be >= 1" },
      { { key = key, size = "big" }, "option 'size': integer expected, got string" },
      { { key = key, create = 1, size = 8 }, "option 'create': boolean expected, got number" },
      { { key = key, mode = tonumber("1000", 8), create = true, size = 8 }, "option 'mode': permission bits" },
      { { key = key, readonly = "yes" }, "option 'readonly': boolean expected, got string" },
    }
    for _, c in ipairs(cases) do
      assert.matches("bad argument #1 to 'open' (" .. c[2], h.error_of(function() return orch.shm.open(c[1]) end), 1, true)
    end
    assert.matches("bad argument #1 to 'open' (table expected, got string)",
                   h.error_of(function() return orch.shm.open("key") end), 1, true)
    assert.is_nil(listed(key))
  end)
end)

-- The permissions /proc/self/maps shows for the attachments of the segment
-- with this key (a set: "rw-s", "r--s").
local function attach_perms(key)
  local set = {}
  local name = ("SYSV%08x"):format(key)
  for line in io.lines("/proc/self/maps") do
    if line:find(name, 1, true) then set[line:match("^%S+ (%S+)")] = true end
  end
  return set
end

describe("orch.shm.open{ readonly = true }", function()
  it("attaches with SHM_RDONLY: reads see the writers, every write raises", function()
    local key = h.key()
    local w = assert(orch.shm.open{ key = key, size = 4096, create = true })
    finally(function() w:remove() end)
    w:write(0, "hello")
    local r = assert(orch.shm.open{ key = key, readonly = true })
    assert.matches("^orch%.Shm: id=%d+ key=" .. keystr(key) .. " size=4096 readonly$", tostring(r))
    assert.are.equal("hello", r:read(0, 5))
    -- The kernel mapped the pages without write permission.
    assert.are.same({ ["rw-s"] = true, ["r--s"] = true }, attach_perms(key))
    for _, f in ipairs({
      function() r:write(0, "x") end, function() r:set_u8(0, 1) end,
      function() r:set_f64(8, 1.5) end, function() r:store(8, 1) end,
      function() r:add(8, 1) end, function() r:cas(8, 0, 1) end,
      function() r:store32(8, 1) end, function() r:add32(8, 1) end,
      function() r:cas32(8, 0, 1) end, function() r:pack(0, "b", 1) end,
    }) do
      assert.has_error(f, "attempt to write to a read-only orch.Shm")
    end
    -- A C process's writes show through.
    assert.is_true(os.execute(h.progs .. "/prog_ipc_peer shmadd " .. key .. " 64 3"))
    assert.are.equal(3, r:i64(64))
    assert.are.equal("hello", r:read(0, 5))
    assert.is_true(r:detach())
    assert.are.same({ ["rw-s"] = true }, attach_perms(key))
  end)

  it("lets a user with read permission only attach read-only (EACCES otherwise)", function()
    local key = h.key()
    local w = assert(orch.shm.open{ key = key, size = 64, create = true, mode = tonumber("644", 8) })
    finally(function() w:remove() end)
    w:write(0, "root")
    local out = h.sh("setpriv --reuid=65534 --regid=65534 --clear-groups " .. h.shquote(h.bin) .. " -e "
      .. h.shquote(([[
        print(select(3, orch.shm.open{ key = %d }))
        local r = assert(orch.shm.open{ key = %d, readonly = true })
        print(r:read(0, 4))
        print(pcall(r.write, r, 0, "evil"))
      ]]):format(key, key)) .. " 2>&1")
    assert.are.equal("EACCES\nroot\nfalse\tattempt to write to a read-only orch.Shm", out)
    assert.are.equal("root", w:read(0, 4))
  end)
end)

describe("orch.shm.private", function()
  it("creates an IPC_PRIVATE segment", function()
    local s = assert(orch.shm.private(100))
    finally(function() s:remove() end)
    local st = s:stat()
    assert.are.equal(0, st.key)
    assert.are.equal(100, st.size)
    assert.are.equal(tonumber("600", 8), st.mode)
    s:write(0, "x")
    assert.are.equal("x", s:read(0, 1))
  end)

  it("rejects bad arguments", function()
    for _, c in ipairs({
      { { "x" }, "bad argument #1 to 'private' (number expected, got string)" },
      { { 0 }, "bad argument #1 to 'private' (size must be >= 1)" },
      { { -5 }, "bad argument #1 to 'private' (size must be >= 1)" },
      { { 10, 2 }, "bad argument #2 to 'private' (no value expected)" },
    }) do
      assert.matches(c[2], h.error_of(function() return orch.shm.private(table.unpack(c[1])) end), 1, true)
    end
  end)
end)
