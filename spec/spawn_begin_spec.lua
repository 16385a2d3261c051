-- orch.spawn_begin and orch.SpawnRequest:finish(): a spawn that returns
-- before its child's exec, and whose end (the process, or the error
-- orch.spawn would have returned) comes at :finish(). Real processes.
local h = require "spec.helper"
local orch = h.orch

local prog = h.progs .. "/prog_proc"

local lines_of = h.lines

-- Children still tracked by this process (zombies included): none may be
-- left after a test.
after_each(function()
  assert.are.same({}, h.children())
end)

describe("orch.spawn_begin", function()
  it("finishes with the process orch.spawn gives: its output, its fds, its exit", function()
    h.run(function()
      local req = assert(orch.spawn_begin { prog, "fds", stdout = "pipe" })
      assert.matches("^orch.SpawnRequest: started$", tostring(req))
      local p = assert(req:finish())
      assert.are.equal("finished", tostring(req):match(": (%a+)$"))
      assert.is_true(math.type(p.pid) == "integer" and p.pid > 1)
      local out = {}
      for l in p:lines() do out[#out + 1] = l end
      -- Nothing of orch's but the three it was given reaches the program.
      assert.are.same({ "0", "1", "2" }, out)
      assert.are.same({ 0, nil }, { p:wait() })
      local q = assert(orch.spawn_begin { prog, "exit", 7, env = { X = "1" }, cwd = "/" }):finish()
      assert.are.same({ 7, nil }, { q:wait() })
    end)
  end)

  it("reports each exec failure of many started spawns at its finish, in order", function()
    h.run(function()
      local dir = h.tmpdir()
      local noexec = dir .. "/noexec"
      local f = assert(io.open(noexec, "w"))
      f:write("#!/bin/sh\n")
      f:close()
      local reqs, want = {}, {}
      for i = 1, 30 do
        local cmd
        if i % 5 == 0 then
          cmd, want[i] = { dir .. "/missing" .. i }, { nil, "spawn: no such file: " .. dir .. "/missing" .. i, "ENOENT" }
        elseif i % 7 == 0 then
          cmd, want[i] = { noexec }, { nil, "spawn: permission denied: " .. noexec, "EACCES" }
        elseif i % 11 == 0 then
          cmd, want[i] = { prog, "exit", "0", cwd = dir .. "/nodir" },
            { nil, "spawn: chdir " .. dir .. "/nodir: no such file or directory", "ENOENT" }
        else
          cmd = { prog, "exit", tostring(i) }
        end
        reqs[i] = assert(orch.spawn_begin(cmd))
      end
      for i, req in ipairs(reqs) do
        local p, err, ename = req:finish()
        if want[i] then
          assert.are.same(want[i], { p, err, ename })
        else
          assert.are.same({ i, nil }, { p:wait() })
        end
      end
      os.remove(noexec)
    end)
  end)

  it("gives the process its status when the child ended before the finish, and reports no orphan", function()
    h.run(function()
      local orphans = {}
      local watch = orch.proc.on_orphan_exit(function(pid) orphans[#orphans + 1] = pid end)
      local req = assert(orch.spawn_begin { prog, "exit", "5" })
      -- The reaper runs meanwhile: the child is registered first.
      h.eventually(function() return #h.children() == 0 end, "the child reaped")
      local p = assert(req:finish())
      assert.are.same({ 5, nil }, { p:wait() })
      assert.are.same({}, orphans)
      watch:stop()
    end)
  end)

  it("fails before any child exists as orch.spawn does, and checks its options as orch.spawn does", function()
    h.run(function()
      assert.are.same({ nil, "spawn: stdout: cannot open /nonexistent/x: no such file or directory", "ENOENT" },
        { orch.spawn_begin { prog, "exit", "0", stdout = "/nonexistent/x" } })
      assert.has_error(function() orch.spawn_begin {} end,
        "bad argument #1 to 'spawn_begin' (program name expected at index 1)")
      assert.has_error(function() orch.spawn_begin { prog, evn = {} } end,
        "bad argument #1 to 'spawn_begin' (unknown option 'evn')")
      local req = assert(orch.spawn_begin { prog, "exit", "0" })
      local p = assert(req:finish())
      p:wait()
      assert.has_error(function() req:finish() end, "attempt to use a finished orch.SpawnRequest")
    end)
  end)

  it("reaps the child of a request never finished, whether it started or failed", function()
    h.run(function()
      local r1 = assert(orch.spawn_begin { prog, "exit", "0" })
      local r2 = assert(orch.spawn_begin { "/nonexistent/prog" })
      local r3 = assert(orch.spawn_begin { prog, "exit", "0", stdout = "pipe" })
      assert(r1 and r2 and r3)
      r1, r2, r3 = nil, nil, nil
      collectgarbage()
      collectgarbage()
      h.eventually(function() return #h.children() == 0 end, "no child left")
    end)
  end)

  it("finishes with the parent's children only: a fork child cannot finish its parent's request", function()
    h.run(function()
      local req = assert(orch.spawn_begin { prog, "sleep", "0.2" })
      local r, w = assert(orch.pipe())
      local child = assert(orch.fork(function()
        r:close()
        local p, err, ename = req:finish()
        w:write(tostring(p) .. " " .. tostring(err) .. " " .. tostring(ename) .. "\n")
        orch.exit(0)
      end))
      w:close()
      assert.are.equal("nil spawn: started before a fork: no child processes ECHILD", r:read_line())
      r:close()
      assert.are.same({ 0, nil }, { child:wait() })
      local p = assert(req:finish())
      assert.are.same({ 0, nil }, { p:wait() })
    end)
  end)
end)
