-- orch.mmap: file and anonymous mappings (the Region methods are covered by
-- region_spec.lua).
local h = require "spec.helper"
local orch = h.orch

-- Whether /proc/self/maps has a mapping starting at the address in s.
local function mapped(addr)
  local start = addr:gsub("^0x", "")
  for line in io.lines("/proc/self/maps") do
    if line:match("^(%x+)%-") == start then return true end
  end
  return false
end

local page = tonumber((h.sh("getconf PAGESIZE")))

describe("orch.mmap", function()
  it("maps a file, shared: writes reach the file", function()
    local path = h.tmpdir() .. "/data"
    h.write(path, "hello world")
    local m = assert(orch.mmap{ path = path })
    finally(function() m:unmap() end)
    assert.are.equal(11, m:size())
    assert.are.equal("hello world", m:read())
    m:write(0, "HELLO")
    assert.are.equal("HELLO world", h.slurp(path))
    assert.matches("^orch%.Mmap: 0x%x+ size=11 shared$", tostring(m))
  end)

  it("maps part of a file, or a read-only view", function()
    local path = h.tmpdir() .. "/data"
    h.write(path, "0123456789")
    local m = assert(orch.mmap{ path = path, size = 4 })
    local ro = assert(orch.mmap{ path = path, readonly = true })
    finally(function() m:unmap(); ro:unmap() end)
    assert.are.equal("0123", m:read())
    m:write(0, "ab")
    assert.are.equal("ab23456789", ro:read())
    assert.matches(" readonly$", tostring(ro))
    for _, f in ipairs({
      function() ro:write(0, "x") end, function() ro:set_u8(0, 1) end,
      function() ro:store(0, 1) end, function() ro:add32(0, 1) end,
      function() ro:cas(0, 0, 1) end, function() ro:pack(0, "b", 1) end,
    }) do
      assert.has_error(f, "attempt to write to a read-only orch.Mmap")
    end
    assert.are.equal("ab23456789", h.slurp(path))
    assert.are.equal(string.byte("a"), ro:u8(0))
  end)

  it("creates and extends a file with create = true (mode 0600)", function()
    local dir = h.tmpdir()
    local path = dir .. "/new"
    local m = assert(orch.mmap{ path = path, size = 4096, create = true })
    finally(function() m:unmap() end)
    m:set_u32(4092, 0xabcdef01)
    assert.are.equal(4096, #h.slurp(path))
    assert.are.equal(string.pack("=I4", 0xabcdef01), h.slurp(path):sub(4093))
    assert.are.equal("600", (h.sh("stat -c %a " .. h.shquote(path))))
    local grown = assert(orch.mmap{ path = path, size = 8192, create = true })
    assert.are.equal(8192, #h.slurp(path))
    assert.are.equal(0xabcdef01, grown:u32(4092))
    grown:unmap()
  end)

  it("keeps private (shared = false) writes out of the file", function()
    local path = h.tmpdir() .. "/data"
    h.write(path, "abc")
    local m = assert(orch.mmap{ path = path, shared = false })
    finally(function() m:unmap() end)
    m:write(0, "xyz")
    assert.are.equal("xyz", m:read())
    assert.are.equal("abc", h.slurp(path))
    assert.matches(" private$", tostring(m))
  end)

  it("maps anonymous shared memory", function()
    local m = assert(orch.mmap{ anonymous = true, size = 10000 })
    finally(function() m:unmap() end)
    assert.are.equal(10000, m:size())
    m:store(9984, 99)
    assert.are.equal(99, m:load(9984))
    assert.matches(" shared anonymous$", tostring(m))
  end)

  it("fails as expected", function()
    local dir = h.tmpdir()
    local missing = dir .. "/missing"
    assert.are.same({ nil, "mmap: " .. missing .. ": no such file or directory", "ENOENT" },
                    { orch.mmap{ path = missing } })
    h.write(dir .. "/empty", "")
    assert.are.same({ nil, "mmap: " .. dir .. "/empty: empty file (give size)", "EINVAL" },
                    { orch.mmap{ path = dir .. "/empty" } })
    h.write(dir .. "/small", "abc")
    local r, msg, ename = orch.mmap{ path = dir .. "/small", size = 10 }
    assert.is_nil(r)
    assert.matches("file is smaller than size", msg)
    assert.are.equal("EINVAL", ename)
    assert.are.equal(3, #h.slurp(dir .. "/small"))
    assert.are.same({ nil, "mmap: " .. dir .. ": not a regular file", "ENODEV" },
                    { orch.mmap{ path = dir, readonly = true } })
    -- a FIFO is refused without blocking (open uses O_NONBLOCK)
    assert.is_true(os.execute("mkfifo " .. h.shquote(dir .. "/fifo")))
    assert.are.same({ nil, "mmap: " .. dir .. "/fifo: not a regular file", "ENODEV" },
                    { orch.mmap{ path = dir .. "/fifo", readonly = true } })
  end)

  it("unmaps on :unmap(), <close> and the GC", function()
    local m = assert(orch.mmap{ anonymous = true, size = 4096 })
    local addr = tostring(m):match("(0x%x+)")
    assert.is_true(mapped(addr))
    assert.is_true(m:unmap())
    assert.is_true(m:unmap())   -- idempotent
    assert.is_false(mapped(addr))
    assert.are.equal("orch.Mmap: unmapped", tostring(m))
    assert.has_error(function() m:size() end, "attempt to use a closed orch.Mmap")
    do
      local c <close> = assert(orch.mmap{ anonymous = true, size = 4096 })
      addr = tostring(c):match("(0x%x+)")
      assert.is_true(mapped(addr))
    end
    assert.is_false(mapped(addr))
    do
      local g = assert(orch.mmap{ anonymous = true, size = 4096 })
      addr = tostring(g):match("(0x%x+)")
    end
    collectgarbage()
    collectgarbage()
    assert.is_false(mapped(addr))
  end)

  it("syncs in a task, off the loop thread", function()
    local path = h.tmpdir() .. "/data"
    h.write(path, string.rep("\0", 8192))
    local m = assert(orch.mmap{ path = path })
    finally(function() m:unmap() end)
    local ticks = 0
    h.run(function()
      local t = orch.timer.every(0.001, function() ticks = ticks + 1 end)
      m:write(5000, "synced")
      assert.is_true(m:sync())
      t:stop()
      -- unmapping while a sync is in flight is safe (the unmap waits)
      local other = assert(orch.mmap{ path = path })
      local task = orch.task(function() return other:sync() end)
      orch.sleep(0)   -- the task starts its sync (it may still be in flight)
      other:unmap()
      assert.is_true(task:join())
    end)
    assert.are.equal("synced", h.slurp(path):sub(5001, 5006))
    assert.has_error(function() m:sync() end, "mmap.sync: must be called from a task")
  end)

  it("maps from a page-aligned offset (mmap(2)'s offset argument)", function()
    local path = h.tmpdir() .. "/data"
    h.write(path, ("a"):rep(page) .. ("b"):rep(page) .. "tail")
    local m = assert(orch.mmap{ path = path, offset = page })
    finally(function() m:unmap() end)
    assert.are.equal(page + 4, m:size())       -- the rest of the file
    assert.are.equal("bbb", m:read(0, 3))
    assert.are.equal("tail", m:read(page, 4))
    m:write(page, "TAIL")
    local part = assert(orch.mmap{ path = path, offset = page, size = 2 })
    assert.are.equal("bb", part:read())
    part:write(0, "XY")
    part:unmap()
    local file = h.slurp(path)
    assert.are.equal(("a"):rep(page) .. "XY" .. ("b"):rep(page - 2) .. "TAIL", file)
    -- The kernel maps the file from that offset (/proc/self/maps column 3).
    local found
    for line in io.lines("/proc/self/maps") do
      local off, name = line:match("^%S+ %S+ (%x+) %S+ %S+%s+(.*)$")
      if name == path then found = tonumber(off, 16) end
    end
    assert.are.equal(page, found)
    -- create = true extends the file to offset + size.
    local grow = assert(orch.mmap{ path = path, offset = 4 * page, size = 8, create = true })
    grow:write(0, "12345678")
    grow:unmap()
    assert.are.equal(4 * page + 8, #h.slurp(path))
    assert.are.equal("12345678", h.slurp(path):sub(-8))
  end)

  it("fails at or past the end of the file, or short of offset + size", function()
    local path = h.tmpdir() .. "/data"
    h.write(path, ("z"):rep(page + 10))
    assert.are.same({ nil, "mmap: " .. path .. ": offset is at or past the end of the file", "EINVAL" },
                    { orch.mmap{ path = path, offset = 2 * page } })
    assert.are.same({ nil, "mmap: " .. path .. ": file is smaller than offset + size (use create = true to extend it)", "EINVAL" },
                    { orch.mmap{ path = path, offset = page, size = 11 } })
    local m = assert(orch.mmap{ path = path, offset = page, size = 10 })
    assert.are.equal(("z"):rep(10), m:read())
    m:unmap()
  end)

  it("rejects bad arguments", function()
    local dir = h.tmpdir()
    local cases = {
      { {}, "exactly one of 'path' and 'anonymous = true' expected" },
      { { path = dir .. "/x", anonymous = true, size = 1 }, "exactly one of" },
      { { anonymous = true }, "option 'size': required with anonymous" },
      { { anonymous = true, size = 0 }, "option 'size': size must be >= 1" },
      { { anonymous = true, size = -4 }, "option 'size': size must be >= 1" },
      { { anonymous = true, size = 8, readonly = true }, "option 'readonly': an anonymous mapping must be writable" },
      { { anonymous = true, size = 8, create = true }, "option 'create': only with 'path'" },
      { { path = dir .. "/x", create = true, readonly = true }, "option 'create': not with readonly" },
      { { path = 42 }, "option 'path': string expected, got number" },
      { { anonymous = true, size = 8, shared = "yes" }, "option 'shared': boolean expected, got string" },
      { { anonymous = true, size = 8, offset = 0 }, "option 'offset': only with 'path'" },
      { { path = dir .. "/x", offset = 100 }, "option 'offset': a non-negative multiple of the page size (" .. page .. ") expected" },
      { { path = dir .. "/x", offset = -page }, "option 'offset': a non-negative multiple of the page size" },
      { { path = dir .. "/x", offset = 1.5 }, "option 'offset': number has no integer representation" },
      { { path = dir .. "/x", offset = {} }, "option 'offset': integer expected, got table" },
    }
    for _, c in ipairs(cases) do
      assert.matches("bad argument #1 to 'mmap' (" .. c[2], h.error_of(function() return orch.mmap(c[1]) end), 1, true)
    end
    assert.are.equal("", (h.sh("ls " .. h.shquote(dir))))   -- nothing was created
  end)
end)
