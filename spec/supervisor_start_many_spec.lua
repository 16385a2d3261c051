-- A start of many services (sup.start): each spawn is started with
-- orch.spawn_begin and finished at the next one, so that orch's
-- bookkeeping of one service overlaps the previous child's way to its exec.
-- What the start reports must not change: each exec failure, each process,
-- dependencies started after what they depend on.
local u = require "spec.supervisor_util"
local orch = u.orch

describe("a start of many services", function()
  it("reports each exec failure and starts every other service, dependencies first", function()
    u.with(function(s, logs)
      local n = 40
      for i = 1, n do
        local cmd = i % 4 == 0 and { "/nonexistent/prog" .. i } or u.sh("exec sleep 30")
        s.service { name = "m" .. i, cmd = cmd, restart = "never" }
      end
      s.service { name = "dep", cmd = u.sh("exec sleep 30"), depends_on = { "m1" }, restart = "never" }
      s.service { name = "stuck", cmd = u.sh("exec sleep 30"), depends_on = { "m4" }, restart = "never" }
      assert.is_true(s.start("all"))
      local pids = {}
      for i = 1, n do
        local name = "m" .. i
        if i % 4 == 0 then
          assert.truthy(u.logged(logs, name .. ": cannot start: spawn: no such file: /nonexistent/prog" .. i),
            name .. "'s failure logged")
          assert.are_not.equal("running", u.st(s, name).state)
        else
          assert.is_true(s.wait(name, "running", 10))
          local pid = u.st(s, name).pid
          assert.is_nil(pids[pid])
          pids[pid] = true
        end
      end
      assert.is_true(s.wait("dep", "running", 10))
      assert.are.equal("waiting", u.st(s, "stuck").state)
    end, 90)
  end)

  it("starts its spawns with orch.spawn_begin, and a single restart with orch.spawn", function()
    u.with(function(s)
      local begun, spawned = 0, 0
      local spawn_begin, spawn = orch.spawn_begin, orch.spawn
      orch.spawn_begin = function(...) begun = begun + 1; return spawn_begin(...) end
      orch.spawn = function(...) spawned = spawned + 1; return spawn(...) end
      local ok, err = pcall(function()
        for i = 1, 20 do s.service { name = "b" .. i, cmd = u.sh("exec sleep 30"), backoff = 0 } end
        assert.is_true(s.start("all"))
        assert.is_true(s.wait("all", "running", 30))
        assert.are.same({ 20, 0 }, { begun, spawned })
        local pid = u.st(s, "b7").pid
        orch.kill(pid, "KILL")
        u.until_true(function() local st = u.st(s, "b7"); return st.pid ~= pid and st.state == "running" end)
        assert.are.same({ 20, 1 }, { begun, spawned })
      end)
      orch.spawn_begin, orch.spawn = spawn_begin, spawn
      assert(ok, err)
    end, 90)
  end)
end)

describe("the collector during a start of many", function()
  -- The pause now, unchanged (setpause returns the one it replaces).
  local function pause_now()
    local p = collectgarbage("setpause", 100)
    collectgarbage("setpause", p)
    return p
  end

  it("runs sooner while the services are spawned, and its pause is put back after", function()
    u.with(function(s)
      local pauses = {}
      local spawn_begin = orch.spawn_begin
      local before = collectgarbage("setpause", 180)
      orch.spawn_begin = function(...) pauses[#pauses + 1] = pause_now(); return spawn_begin(...) end
      local ok, err = pcall(function()
        for i = 1, 40 do s.service { name = "g" .. i, cmd = u.sh("exec sleep 30"), restart = "never" } end
        assert.is_true(s.start("all"))
        assert.are.equal(40, #pauses)
        for i, p in ipairs(pauses) do assert.is_true(p < 160, "spawn " .. i .. ": pause " .. p) end
        assert.are.equal(180, pause_now())
        -- A start of one service leaves the pause alone.
        s.stop("g1")
        assert.is_true(s.wait("g1", "stopped", 10))
        assert.is_true(s.start("g1"))
        assert.are.equal(180, pauses[#pauses])
      end)
      orch.spawn_begin = spawn_begin
      collectgarbage("setpause", before)
      assert(ok, err)
    end, 90)
  end)
end)

describe("the log lines of a start of many", function()
  local h = require "spec.helper"
  -- Writes of the orch process so far (/proc/self/io: every write(2) of
  -- every thread counts).
  local script = [[
    local orch = require "orch"
    local sup = require "orch.supervisor"
    local n, echo = tonumber(arg[1]), arg[2] == "echo"
    for i = 1, n do
      local sh = (echo and "echo out-" .. i .. "; " or "") .. "exec sleep 30"
      sup.service { name = "w" .. i, cmd = { "/bin/sh", "-c", sh }, restart = "never" }
    end
    -- The default output function's line, counted: the stop waits for
    -- every service's line (a service stopped before its echo prints none).
    local outputs = 0
    sup.configure { output = function(name, line)
      io.stderr:write(name .. " | " .. line .. "\n")
      outputs = outputs + 1
    end }
    local function writes()
      local f = assert(io.open("/proc/self/io"))
      local w = f:read("a"):match("syscw:%s*(%d+)")
      f:close()
      return tonumber(w)
    end
    orch.task(function()
      local w0 = writes()
      assert(sup.start("all"))
      local w1 = writes()
      assert(sup.wait("all", "running", 30))
      io.stdout:write("writes ", w1 - w0, "\n")
      io.stdout:flush()
      local t0 = orch.now()
      while echo and outputs < n and orch.now() - t0 < 30 do orch.sleep(0.01) end
      sup.stop("all")
      orch.exit(0)
    end)
  ]]

  it("go out in one write a batch", function()
    local code, out, err = h.cli({ "run", h.script(script), "40" })
    assert.are.equal(0, code, err)
    local writes = tonumber(out:match("writes (%d+)"))
    -- 40 lines, one write each before; now one a batch of 16 launches.
    assert.is_true(writes <= 5, "writes during the start: " .. tostring(writes))
    local _, lines = err:gsub(": started, pid %d+\n", "")
    assert.are.equal(40, lines)
  end)

  it("are each in its order, and before the service's own output", function()
    local n = 40
    local code, _, err = h.cli({ "run", h.script(script), tostring(n), "echo" })
    assert.are.equal(0, code, err)
    local last = 0
    for i = 1, n do
      local at = err:find("orch.supervisor: w" .. i .. ": started, pid %d+\n")
      assert.truthy(at, "w" .. i .. "'s started line")
      assert.is_true(at > last, "w" .. i .. "'s line after the one before it")
      last = at
      local output = err:find("\nw" .. i .. " | out-" .. i .. "\n", 1, true)
      assert.truthy(output, "w" .. i .. "'s output")
      assert.is_true(output > at, "w" .. i .. "'s output after its started line")
    end
  end)
  it("a start of many whose task is cancelled at one of its yields leaves the state record written, as after any start", function()
    -- A large start holds the record's rewrites until it is over; a start
    -- cancelled at a yield (or raising) left that hold behind, and no
    -- change reached SOCKET.state again: not even the first record.
    local c = require "spec.ctl_util"
    local h = require "spec.helper"
    local o = c.start([[
local sup = require "orch.supervisor"
sup.configure{ log = false }
for i = 1, 40 do
  sup.service{ name = "s" .. i, cmd = { "sleep", "600" }, autostart = false, log = false }
end
sup.run()
orch.task(function()
  local t = orch.task(function() sup.start("all") end)
  -- Cancelled once its first launches are made: it is then suspended at
  -- one of its yields (40 services: it yields every 16 launches).
  repeat orch.sleep(0) until sup.instance("s1").state ~= "stopped"
  io.stderr:write("the start is ", t:status(), "\n")
  t:cancel()
  orch.sleep(1e6)
end)
]])
    local ok, err = pcall(function()
      c.until_true(function() return (h.slurp(o.dir .. "/err") or ""):find("the start is ", 1, true) end, "the cancel")
      assert.matches("the start is ready\n", h.slurp(o.dir .. "/err"))
      -- A stop by hand afterwards reaches the record.
      assert.are.equal(0, (c.ctl_cli(o, "start", "s39")))
      c.until_true(function() return c.status(o).s39.state == "running" end, "s39 running")
      assert.are.equal(0, (c.ctl_cli(o, "stop", "s39")))
      c.until_true(function()
        local by = c.recorded(o.sock) or {}
        return by.s39 and by.s39.state == "stopped"
      end, "the record to name s39 stopped")
    end)
    c.stop(o)
    assert(ok, err)
  end)
end)
