-- What a supervisor holds per service (issue 14: memory per service at 500
-- logged services), counted exactly: the number of fields of the tables
-- every service has, which decides their size (a Lua table's hash part is
-- a power of two: 8 fields take 8 slots, 9 to 16 fields take 16).
local u = require "spec.supervisor_util"

-- The fields a table holds itself (not through its metatable).
local function nfields(t)
  local n, keys = 0, {}
  for k in next, t do n, keys[#keys + 1] = n + 1, tostring(k) end
  table.sort(keys)
  return n, table.concat(keys, " ")
end

describe("supervisor memory per service", function()
  it("keeps a running, logged instance that never restarted at 8 fields (sup, index, restarts, its sink and start history beside it)", function()
    u.with(function(s, _, dir)
      s.service { name = "one", cmd = { "sh", "-c", "echo up; exec sleep 60" }, log = { dir = dir } }
      s.service { name = "two", numprocs = 2, cmd = { "sh", "-c", "echo up; exec sleep 60" }, log = { dir = dir } }
      assert(s.start("all"))
      assert.is_true(u.until_true(function()
        for _, name in ipairs({ "one", "two:1", "two:2" }) do
          if #s.tail(name) ~= 1 then return false end
        end
        return true
      end))
      for _, name in ipairs({ "one", "two:1", "two:2" }) do
        local inst = s.instance(name)
        assert.are.equal("running", inst.state)
        -- (an instance past the first of its service holds its index too)
        local n, keys = nfields(inst)
        assert.is_true(n <= (inst.index > 1 and 9 or 8), name .. ": " .. n .. " fields: " .. keys)
        assert.are.equal(0, inst.restarts)
        assert.are.equal(1, inst:status().log_lines)
        assert.are.same({ "up" }, s.tail(name))
      end
      -- The documented fields read the same as when the instance held them.
      assert.are.equal(1, s.instance("one").index)
      assert.are.equal(1, s.instance("two:1").index)
      assert.are.equal(2, s.instance("two:2").index)
      assert.are.equal("two", s.instance("two:2").service)
      assert.are.equal(s.instance("one").sup, s.instance("two:2").sup)
      assert.are.equal("table", type(s.instance("one").sup))
      -- A restart counts on the instance itself.
      local old = s.instance("one").pid
      u.orch.kill(old, "KILL")
      assert.is_true(u.until_true(function()
        local inst = s.instance("one")
        return inst.state == "running" and inst.pid ~= old and #s.tail("one") == 2
      end))
      assert.are.equal(1, s.instance("one").restarts)
      assert.are.equal(0, s.instance("two:1").restarts)
      assert.are.same({ "up", "up" }, s.tail("one"))
    end)
  end)

  -- Lua never shrinks a table's hash part when fields go back to nil: the
  -- fields a sink holds while a batch of lines is written count as much as
  -- those it keeps (9 at any moment, and it is a 16-slot table for good).
  it("keeps a logged service's sink at 8 fields, while a batch of lines is written to its file too", function()
    u.with(function(s, _, dir)
      s.service { name = "one", cmd = { "sh", "-c", "echo up; echo more; exec sleep 60" }, log = { dir = dir } }
      assert(s.start("one"))
      local sink = s.instance("one"):log_sink()
      local class = getmetatable(sink).__index
      local close, most, seen = class.close, 0, ""
      class.close = function(self, ...)
        if self == sink then
          local n, keys = nfields(self)
          if n > most then most, seen = n, keys end
        end
        return close(self, ...)
      end
      local ok, err = pcall(function()
        assert.is_true(u.until_true(function() return #s.tail("one") == 2 end))
      end)
      class.close = close
      assert(ok, err)
      assert.is_true(most > 0, "no batch was written")
      assert.is_true(most <= 8, most .. " fields: " .. seen)
      assert.are.same({ "up", "more" }, s.tail("one"))
      local f = assert(io.open(dir .. "/one.log"))
      assert.are.equal("up\nmore\n", f:read("a"))
      f:close()
      local n, keys = nfields(sink)
      assert.is_true(n <= 7, n .. " fields: " .. keys)
    end)
  end)
end)
