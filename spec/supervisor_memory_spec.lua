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
end)
