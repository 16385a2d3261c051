-- Region: the accessors shared by orch.Shm and orch.Mmap. Every test runs
-- against both a private SysV segment and an anonymous shared mapping.
local h = require "spec.helper"
local orch = h.orch

local kinds = {
  {
    class = "orch.Shm",
    make = function(size) return assert(orch.shm.private(size)) end,
    close = function(r) r:remove(); r:detach() end,
  },
  {
    class = "orch.Mmap",
    make = function(size) return assert(orch.mmap{ anonymous = true, size = size }) end,
    close = function(r) r:unmap() end,
  },
}

-- Every region method, with arguments that would be valid at offset 0.
local methods = {
  { "read", 0, 1 }, { "write", 0, "x" },
  { "i8", 0 }, { "u8", 0 }, { "i16", 0 }, { "u16", 0 }, { "i32", 0 }, { "u32", 0 },
  { "i64", 0 }, { "u64", 0 }, { "f64", 0 },
  { "set_i8", 0, 1 }, { "set_u8", 0, 1 }, { "set_i16", 0, 1 }, { "set_u16", 0, 1 },
  { "set_i32", 0, 1 }, { "set_u32", 0, 1 }, { "set_i64", 0, 1 }, { "set_u64", 0, 1 },
  { "set_f64", 0, 1.5 },
  { "load", 0 }, { "store", 0, 1 }, { "add", 0, 1 }, { "cas", 0, 0, 1 },
  { "load32", 0 }, { "store32", 0, 1 }, { "add32", 0, 1 }, { "cas32", 0, 0, 1 },
  { "pack", 0, "i4", 1 }, { "unpack", 0, "i4" }, { "size" },
}

-- Calls r:name(...) as a method, so error messages name the method.
local callers = {}
local function call(r, name, ...)
  local f = callers[name]
  if not f then
    f = assert(load("local r = ...; return r:" .. name .. "(select(2, ...))"))
    callers[name] = f
  end
  return f(r, ...)
end

-- Width of the access each offset-taking method makes.
local width = {
  i8 = 1, u8 = 1, i16 = 2, u16 = 2, i32 = 4, u32 = 4, i64 = 8, u64 = 8, f64 = 8,
  load = 8, store = 8, add = 8, cas = 8, load32 = 4, store32 = 4, add32 = 4, cas32 = 4,
}

for _, kind in ipairs(kinds) do
  describe("Region (" .. kind.class .. ")", function()
    local r
    before_each(function() r = kind.make(4096) end)
    after_each(function() kind.close(r) end)

    it("has a size and a length", function()
      assert.are.equal(4096, r:size())
      assert.are.equal(4096, #r)
    end)

    it("starts zeroed", function()
      assert.are.equal(string.rep("\0", 4096), r:read())
    end)

    it("reads and writes bytes, returning the next offset", function()
      assert.are.equal(5, r:write(0, "hello"))
      assert.are.equal(4096, r:write(4091, "world"))
      assert.are.equal("hello", r:read(0, 5))
      assert.are.equal("world", r:read(4091))
      assert.are.equal("", r:read(4096))
      assert.are.equal("", r:read(10, 0))
      assert.are.equal("a\0b", (r:write(100, "a\0b") and r:read(100, 3)))
    end)

    it("gets and sets every integer type at its limits, at any alignment", function()
      local cases = {
        { "i8", -128, 127 }, { "u8", 0, 255 }, { "i16", -32768, 32767 }, { "u16", 0, 65535 },
        { "i32", -2147483648, 2147483647 }, { "u32", 0, 4294967295 },
        { "i64", math.mininteger, math.maxinteger }, { "u64", 0, math.maxinteger },
      }
      for _, c in ipairs(cases) do
        local get, set = r[c[1]], r["set_" .. c[1]]
        for _, off in ipairs({ 0, 1, 3, 7, 4096 - 8 }) do
          for _, v in ipairs({ c[2], c[3], 0, 1 }) do
            set(r, off, v)
            assert.are.equal(v, get(r, off), c[1] .. " at " .. off)
          end
        end
      end
    end)

    it("uses the native byte order", function()
      r:set_u32(0, 0x01020304)
      assert.are.equal(string.pack("=I4", 0x01020304), r:read(0, 4))
      r:set_i16(10, -2)
      assert.are.equal(string.pack("=i2", -2), r:read(10, 2))
    end)

    it("returns u64 values of 2^63 and above as wrapped integers", function()
      r:set_u64(8, -1)
      assert.are.equal(-1, r:u64(8))
      assert.are.equal(string.rep("\255", 8), r:read(8, 8))
      r:write(16, string.pack("=I8", 0x8000000000000000))
      assert.are.equal(math.mininteger, r:u64(16))
      r:set_u64(24, r:u64(16))   -- a value read can be written back
      assert.are.equal(r:read(16, 8), r:read(24, 8))
    end)

    it("gets and sets doubles, including inf and nan", function()
      for _, v in ipairs({ 0.0, -1.5, math.pi, 1e308, -math.huge, math.huge }) do
        r:set_f64(3, v)
        assert.are.equal(v, r:f64(3))
      end
      r:set_f64(0, 0 / 0)
      local nan = r:f64(0)
      assert.is_true(nan ~= nan)
      r:set_f64(0, 7)   -- an integer argument is converted
      assert.are.equal(7.0, r:f64(0))
      assert.are.equal(math.type(r:f64(0)), "float")
    end)

    it("rejects values outside each type's range", function()
      local cases = {
        { "set_i8", -129 }, { "set_i8", 128 }, { "set_u8", -1 }, { "set_u8", 256 },
        { "set_i16", -32769 }, { "set_i16", 32768 }, { "set_u16", -1 }, { "set_u16", 65536 },
        { "set_i32", -2147483649 }, { "set_i32", 2147483648 }, { "set_u32", -1 },
        { "set_u32", 4294967296 },
        { "store32", -2147483649 }, { "store32", 4294967296 },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(call, r, c[1], 0, c[2])
        assert.is_false(ok, c[1])
        assert.matches("bad argument #2 to '" .. c[1] .. "' %(value %-?%d+ out of range", err)
      end
      local ok, err = pcall(function() return r:set_u8(0, 1.5) end)
      assert.is_false(ok)
      assert.matches("number has no integer representation", err)
      ok, err = pcall(function() return r:set_i32(0, "x") end)
      assert.is_false(ok)
      assert.matches("bad argument #2 to 'set_i32' %(number expected, got string%)", err)
    end)

    it("checks every offset against the bounds, without overflow", function()
      for name, w in pairs(width) do
        local args = { 0, 0 }
        for _, off in ipairs({ -1, 4096 - w + 1, 4096, math.maxinteger, math.mininteger,
                               math.maxinteger - 2 }) do
          local ok, err = pcall(call, r, name, off, table.unpack(args))
          assert.is_false(ok, name .. " at " .. off)
          assert.matches("bad argument #1 to '" .. name .. "' %(offset %-?%d+ %+ %d+ bytes is out of bounds %(size 4096%)%)", err)
        end
      end
      for _, c in ipairs({ { 4096, 1 }, { 4095, 2 }, { -1, 1 }, { 1, math.maxinteger },
                           { math.maxinteger, math.maxinteger } }) do
        local ok, err = pcall(function() return r:read(c[1], c[2]) end)
        assert.is_false(ok)
        assert.matches("out of bounds", err)
      end
      local ok, err = pcall(function() return r:read(0, -1) end)
      assert.is_false(ok)
      assert.matches("bad argument #2 to 'read' %(length must be >= 0%)", err)
      ok, err = pcall(function() return r:write(4090, "1234567") end)
      assert.is_false(ok)
      assert.matches("offset 4090 %+ 7 bytes is out of bounds", err)
      ok, err = pcall(function() return r:u8("x") end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'u8' %(number expected, got string%)", err)
      -- nothing was written by the failed calls
      assert.are.equal(string.rep("\0", 4096), r:read())
    end)

    it("does 64-bit atomics", function()
      assert.are.equal(0, r:load(8))
      r:store(8, 40)
      assert.are.equal(42, r:add(8, 2))
      assert.are.equal(41, r:add(8, -1))
      assert.is_true(r:cas(8, 41, 100))
      local ok, current = r:cas(8, 41, 7)
      assert.is_false(ok)
      assert.are.equal(100, current)
      assert.are.equal(100, r:load(8))
      assert.are.equal(100, r:i64(8))
      r:store(16, math.maxinteger)
      assert.are.equal(math.mininteger, r:add(16, 1))   -- wraps
    end)

    it("does 32-bit atomics on int32 values", function()
      r:store32(4, 7)
      assert.are.equal(7, r:load32(4))
      assert.are.equal(10, r:add32(4, 3))
      assert.is_true(r:cas32(4, 10, -5))
      local ok, current = r:cas32(4, 10, 0)
      assert.is_false(ok)
      assert.are.equal(-5, current)
      r:store32(8, 0xffffffff)   -- stored as its bit pattern, read back signed
      assert.are.equal(-1, r:load32(8))
      assert.are.equal(0xffffffff, r:u32(8))
      r:store32(12, 2147483647)
      assert.are.equal(-2147483648, r:add32(12, 1))
      assert.are.equal(0, r:u32(0))   -- neighbours untouched
    end)

    it("raises on misaligned atomics", function()
      for _, c in ipairs({ { "load", 4 }, { "store", 1 }, { "add", 12 }, { "cas", 7 },
                           { "load32", 2 }, { "store32", 1 }, { "add32", 6 }, { "cas32", 3 } }) do
        local ok, err = pcall(call, r, c[1], c[2], 0, 0)
        assert.is_false(ok)
        assert.matches("bad argument #1 to '" .. c[1] .. "' %(offset " .. c[2] .. " is not %d%-byte aligned%)", err)
      end
    end)

    it("packs and unpacks string.pack layouts", function()
      local nxt = r:pack(100, "<i4 d z s2", -7, 2.5, "zero", "counted")
      assert.are.equal(100 + #string.pack("<i4 d z s2", -7, 2.5, "zero", "counted"), nxt)
      local a, b, c, d, after = r:unpack(100, "<i4 d z s2")
      assert.are.same({ -7, 2.5, "zero", "counted", nxt }, { a, b, c, d, after })
      assert.are.equal(string.pack("<i4", -7), r:read(100, 4))
      -- a fixed layout at the very end fits; one byte more does not
      assert.are.equal(4096, r:pack(4088, "<I8", 1))
      assert.are.same({ 1, 4096 }, { r:unpack(4088, "<I8") })
      local ok, err = pcall(function() return r:pack(4089, "<I8", 1) end)
      assert.is_false(ok)
      assert.matches("out of bounds", err)
      ok, err = pcall(function() return r:unpack(4089, "<I8") end)
      assert.is_false(ok)
      assert.matches("out of bounds", err)
      r:pack(4090, "<I4", 100)   -- a length prefix running past the end
      ok, err = pcall(function() return r:unpack(4090, "<s4") end)
      assert.is_false(ok)
      assert.matches("too short", err)
      ok = pcall(function() return r:pack(0, "i4", "x") end)
      assert.is_false(ok)
      ok = pcall(function() return r:unpack(0, 42) end)
      assert.is_false(ok)
    end)

    it("raises on use after close, for every method", function()
      kind.close(r)
      for _, m in ipairs(methods) do
        local ok, err = pcall(call, r, m[1], table.unpack(m, 2))
        assert.is_false(ok, m[1])
        assert.matches("attempt to use a closed " .. kind.class, err, 1, true)
      end
      assert.matches("^" .. kind.class:gsub("%.", "%%.") .. ": ", tostring(r))
      r = kind.make(16)   -- for after_each
    end)

    it("refuses a method called on something else", function()
      local ok, err = pcall(r.u8, {}, 0)
      assert.is_false(ok)
      assert.matches("orch region expected", err)
      ok, err = pcall(r.size, io.stdout)
      assert.is_false(ok)
      assert.matches("orch region expected", err)
    end)
  end)
end
