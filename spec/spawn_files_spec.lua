-- A spawned child's fd table (src/spawner.c): born sharing orch's table
-- (CLONE_FILES), the child copies only the fds below the highest one it
-- uses, and orch moves a child's high-numbered fds into a few low slots for
-- the time of the clone. So a child of an orch that holds thousands of fds
-- neither copies nor closes them all, gets exactly the fds it was given,
-- and orch's slots keep no reference to them afterwards. Real fds, pipes
-- and processes.
local h = require "spec.helper"

local prog = h.progs .. "/prog_proc"

-- A script of `orch run` with prog and hold(n) (n more fds held, /dev/null).
local function holding(body)
  return h.script(string.format([[
    local prog = %q
    local held = {}
    local function hold(n)
      for _ = 1, n do held[#held + 1] = assert(io.open("/dev/null")) end
    end
  ]], prog) .. body)
end

after_each(function()
  assert.are.same({}, h.children())
end)

describe("a spawned child's fd table", function()
  it("of an orch holding 2,000 fds: the child gets its fds alone, copies a small table, and a pipe it held ends", function()
    local script = holding([[
      -- The first spawn makes the slots, low; past 64 fds, a child's fds
      -- are moved there.
      local _, out = orch.run { prog, "fds" }
      hold(70)
      print("first", (out:gsub("\n", " ")))
      hold(2000)
      local r, w = assert(orch.pipe())
      local code, fds = orch.run { prog, "fds", fds = { [3] = w } }
      print("fds", code, (fds:gsub("\n", " ")))
      local _, size = orch.run { prog, "fdsize" }
      print("fdsize", tonumber(size) < 1024 and "small" or size)
      -- The child writes through the high pipe it got as fd 3; once it and
      -- orch's end are gone, the reader sees the end: no slot holds it.
      local p = assert(orch.spawn { prog, "write", "3", "ready\n", fds = { [3] = w } })
      w:close()
      print("read", r:read_all())
      print("wait", (p:wait()))
      r:close()
      for _, f in ipairs(held) do f:close() end
    ]])
    local code, out, err = h.cli { "run", script }
    assert.are.equal(0, code, err)
    assert.are.equal(table.concat({
      "first\t0 1 2 ",
      "fds\t0\t0 1 2 3 ",
      "fdsize\tsmall",
      "read\tready\n",
      "wait\t0", "" }, "\n"), out)
  end)

  it("of a started spawn (orch.spawn_begin) of an orch holding 2,000 fds: a small table, its fds held for it until it has exec'd", function()
    local script = holding([[
      -- The first started spawn makes its sets of slots, low.
      assert(assert(orch.spawn_begin { prog, "fds", stdout = "null" }):finish()):wait()
      hold(2000)
      local r, w = assert(orch.pipe())
      -- Four pending at once (every set taken), and a fifth that finds none
      -- free: it copies the whole table.
      local reqs = {}
      for i = 1, 5 do reqs[i] = assert(orch.spawn_begin { prog, "fdsize", stdout = "pipe" }) end
      for i = 1, 5 do
        local p = assert(reqs[i]:finish())
        local size = tonumber(p.stdout:read_all())
        p.stdout:close()
        print("fdsize", i, size < 1024 and "small" or "whole")
        assert(p:wait() == 0)
      end
      -- The caller lets go of the child's fd at once, and orch reuses
      -- numbers before the child may have copied the table: the child
      -- still writes through the pipe it was given as fd 3.
      local req = assert(orch.spawn_begin { prog, "write", "3", "ready\n", fds = { [3] = w } })
      w:close()
      hold(10)
      local p = assert(req:finish())
      print("read", r:read_all())
      print("wait", (p:wait()))
      r:close()
      local _, fds = orch.run { prog, "fds" }
      print("after", (fds:gsub("\n", " ")))
      for _, f in ipairs(held) do f:close() end
    ]])
    local code, out, err = h.cli { "run", script }
    assert.are.equal(0, code, err)
    assert.are.equal(table.concat({
      "fdsize\t1\tsmall", "fdsize\t2\tsmall", "fdsize\t3\tsmall", "fdsize\t4\tsmall",
      "fdsize\t5\twhole",
      "read\tready\n",
      "wait\t0",
      "after\t0 1 2 ", "" }, "\n"), out)
  end)

  it("of a spawn after started spawns only (a supervisor's first restart after its start), in an orch holding 2,000 fds: a small table", function()
    local script = holding([[
      -- A start: started spawns only, while the low fds are free.
      assert(assert(orch.spawn_begin { prog, "fds", stdout = "null" }):finish()):wait()
      hold(2000)
      -- The first spawn comes later, past every low fd: its child gets a
      -- high pipe as fd 3 and copies a small table all the same.
      local r, w = assert(orch.pipe())
      local code, size = orch.run { prog, "fdsize", fds = { [3] = w } }
      print("fdsize", code, tonumber(size) < 1024 and "small" or size)
      w:close()
      r:close()
      for _, f in ipairs(held) do f:close() end
    ]])
    local code, out, err = h.cli { "run", script }
    assert.are.equal(0, code, err)
    assert.are.equal("fdsize\t0\tsmall\n", out)
  end)

  it("of a small orch: unchanged (fds 0-2 and those given)", function()
    local script = h.script(string.format([[
      local r, w = assert(orch.pipe())
      local _, out = orch.run { %q, "fds", fds = { [5] = w, [3] = r } }
      print((out:gsub("\n", " ")))
      r:close()
      w:close()
    ]], prog))
    local code, out, err = h.cli { "run", script }
    assert.are.equal(0, code, err)
    assert.are.equal("0 1 2 3 5 \n", out)
  end)
end)
