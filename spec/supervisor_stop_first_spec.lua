-- A stop signals first (graph.stop_ordered, Instance:signal_first): every
-- main process of a layer gets its stop signal before any instance of the
-- layer does its bookkeeping, each process gets it once (a real-time stop
-- signal is queued once per send, so a second send would show), dependents
-- still stop before what they depend on, an escapee in the cgroup still
-- gets the signal, and the KILL after the stop timeout still comes. The
-- services are prog_sigcount: they block the stop signal, so it stays
-- pending (ShdPnd in /proc/PID/status) until the test opens their gate.
local u = require "spec.supervisor_util"
local h, orch = u.h, u.orch

local COUNT = u.progs .. "/prog_sigcount"
local SIG = "RTMIN+3"
local SIGNUM = orch.signal.number(SIG)

-- Whether pid has signal SIGNUM pending (sent to the process, blocked).
local function signal_pending(pid)
  local s = h.slurp("/proc/" .. pid .. "/status")
  local hex = s and s:match("ShdPnd:%s*(%x+)")
  return hex ~= nil and ((tonumber(hex, 16) >> (SIGNUM - 1)) & 1) == 1
end

local function pid_in(path)
  local pid
  h.eventually(function()
    pid = tonumber((h.slurp(path) or ""):match("^(%d+)\n"))
    return pid ~= nil
  end, path)
  return pid
end

local function count_in(path)
  return tonumber((h.slurp(path) or ""):match("^(%d+)\n"))
end

local function service(s, name, dir, gate, more)
  local def = { name = name, cmd = { COUNT, tostring(SIGNUM), dir .. "/" .. name, dir .. "/" .. gate },
                stop = { signal = SIG, timeout = 10 } }
  for k, v in pairs(more or {}) do def[k] = v end
  s.service(def)
end

-- N services NAME1..NAMEN, each leaving an escapee in its cgroup, started
-- under a cgroup of the test's own; their main pids, escapees' pids and
-- cgroup paths once every escapee is in place, and that cgroup's name.
local function escapees(s, dir, name, N)
  local parent = h.cgroup_name()
  s.configure { cgroup = parent }
  for i = 1, N do
    service(s, name .. i, dir, "gate",
      { cmd = { COUNT, tostring(SIGNUM), dir .. "/" .. name .. i, dir .. "/gate", "escapee" } })
  end
  s.start("all")
  local mains, escs, paths = {}, {}, {}
  for i = 1, N do
    mains[i], escs[i] = pid_in(dir .. "/" .. name .. i), pid_in(dir .. "/" .. name .. i .. ".esc")
    paths[i] = u.st(s, name .. i).cgroup
    assert.truthy(paths[i], "cgroups are on")
    h.eventually(function() return orch.cgroup.of(escs[i]) == paths[i] end, "escapee " .. i .. " in place")
  end
  return mains, escs, paths, parent
end

-- N services NAME1..NAMEN behind the gate, started; their main pids.
local function gated(s, dir, name, N)
  for i = 1, N do service(s, name .. i, dir, "gate") end
  s.start("all")
  local pids = {}
  for i = 1, N do pids[i] = pid_in(dir .. "/" .. name .. i) end
  return pids
end

-- How many of pids have the stop signal pending.
local function count_pending(pids)
  local n = 0
  for _, pid in ipairs(pids) do if signal_pending(pid) then n = n + 1 end end
  return n
end

-- s.stop("all") with the gate opened once the first "stopping" event has
-- come; returns what look() said at that event.
local function stop_all_seeing(s, dir, look)
  local seen
  local unsubscribe = s.events(function(ev)
    if ev.event == "stopping" and seen == nil then seen = look() end
  end)
  local t = orch.task(function() return s.stop("all") end)
  h.eventually(function() return seen ~= nil end, "the first stopping event")
  unsubscribe()
  io.open(dir .. "/gate", "w"):close()
  assert.is_true(t:join())
  return seen
end

-- Counts the signals the walk of every instance sends (Instance.signal_first)
-- until restore() is called: returns walked() and restore().
local function count_walk()
  local Instance = require "orch.supervisor.instance"
  local walked, signal_first = 0, Instance.signal_first
  Instance.signal_first = function(self, ...)
    local sent = signal_first(self, ...)
    if sent then walked = walked + 1 end
    return sent
  end
  return function() return walked end, function() Instance.signal_first = signal_first end
end

describe("a stop signals first", function()
  it("signals every main process of a layer before the first stop's bookkeeping, each once", function()
    u.with(function(s, _, dir)
      local N = 6
      local pids = gated(s, dir, "p", N)
      -- At the first "stopping" event (the first instance's bookkeeping),
      -- how many of the main processes have the stop signal already.
      local seen = stop_all_seeing(s, dir, function() return count_pending(pids) end)
      assert.are.equal(N, seen)
      for i = 1, N do
        assert.are.equal(1, count_in(dir .. "/p" .. i .. ".count"), "p" .. i .. " got the stop signal once")
        assert.are.equal("stopped", u.st(s, "p" .. i).state)
        assert.are.equal(0, u.st(s, "p" .. i).exit_code)
      end
    end)
  end)

  -- A stop of every instance signals the supervisor's list of runs
  -- (Instance.signal_listed) before its walk of the instances: the walk
  -- sends nothing to a listed run (without the list, signal_first sent
  -- every signal). The list follows the runs: a restarted service's new
  -- run is in it, a frozen one is not (its stop thaws it, then signals
  -- it), a service with a stop hook is not (the hook runs first).
  it("a stop of all signals the supervisor's list of runs first: restarted, frozen and hooked services right, each once", function()
    u.with(function(s, logs, dir)
      for i = 1, 3 do service(s, "p" .. i, dir, "gate", { backoff = 0 }) end
      service(s, "fz", dir, "gate")
      service(s, "hooked", dir, "gate", { stop = { signal = SIG, timeout = 10,
        fn = function(svc) svc:log("hook ran") end } })
      s.start("all")
      assert.is_true(s.wait("all", "running", 20))
      local old = pid_in(dir .. "/p2")
      os.remove(dir .. "/p2")
      assert.is_true(orch.kill(old, "KILL"))
      local new = pid_in(dir .. "/p2")
      assert.are_not.equal(old, new)
      assert.is_true(s.wait("p2", "running", 20))
      local fz = pid_in(dir .. "/fz")
      assert(s.freeze("fz"))
      -- Every pid file read before the stop (each is written once the
      -- stop signal is blocked): the event's callback cannot wait for one
      -- (hooked's, not written yet on a loaded machine, made it raise
      -- there, and seen lacked hooked).
      local pids = {}
      for _, name in ipairs { "p1", "p2", "p3", "fz", "hooked" } do pids[name] = pid_in(dir .. "/" .. name) end
      local walked, restore = count_walk()
      local seen
      local unsubscribe = s.events(function(ev)
        if ev.event == "stopping" and not seen then
          seen = {}
          for name, pid in pairs(pids) do seen[name] = signal_pending(pid) end
        end
      end)
      local t = orch.task(function() return s.stop("all") end)
      local ok, err = pcall(h.eventually, function() return seen ~= nil end, "the first stopping event")
      restore()
      unsubscribe()
      assert(ok, err)
      io.open(dir .. "/gate", "w"):close()
      assert.is_true(t:join())
      assert.are.equal(0, walked(), "signals sent by the walk")
      assert.are.same({ p1 = true, p2 = true, p3 = true, fz = false, hooked = false }, seen)
      assert.is_true(u.logged(logs, "hooked: hook ran") ~= nil)
      for _, name in ipairs { "p1", "p2", "p3", "fz", "hooked" } do
        assert.are.equal(1, count_in(dir .. "/" .. name .. ".count"), name .. " got the stop signal once")
        assert.are.equal("stopped", u.st(s, name).state)
      end
      assert.is_false(u.alive(fz))
    end)
  end)

  it("without cgroups, signals every service's process group first, each process once", function()
    u.with(function(s, _, dir)
      s.configure { cgroup = false }
      local N = 4
      local pids = gated(s, dir, "g", N)
      local seen = stop_all_seeing(s, dir, function() return count_pending(pids) end)
      assert.are.equal(N, seen)
      for i = 1, N do
        assert.are.equal(1, count_in(dir .. "/g" .. i .. ".count"), "g" .. i .. " got the stop signal once")
        assert.is_nil(u.st(s, "g" .. i).cgroup)
      end
    end)
  end)

  -- The supervisor's list holds the runs without a cgroup too: a stop of
  -- all signals each one's process group and what its main process forked
  -- into a session of its own from the list, without the walk of every
  -- instance (whose signal_first would send them).
  it("without cgroups, a stop of all signals from the list: each process group and a setsid child, each once", function()
    u.with(function(s, _, dir)
      s.configure { cgroup = false }
      local N = 3
      for i = 1, N do
        local name = "n" .. i
        service(s, name, dir, "gate", { cmd = { "sh", "-c",
          string.format("setsid %s %d %s/%s.esc %s/gate & exec %s %d %s/%s %s/gate",
            COUNT, SIGNUM, dir, name, dir, COUNT, SIGNUM, dir, name, dir) } })
      end
      s.start("all")
      local pids = {}
      for i = 1, N do
        pids[#pids + 1] = pid_in(dir .. "/n" .. i)
        pids[#pids + 1] = pid_in(dir .. "/n" .. i .. ".esc")
      end
      for i = 1, N do
        local esc = orch.proc.info(pids[2 * i])
        assert.are.equal(pids[2 * i - 1], esc.ppid, "the setsid child is the main process's")
        assert.are.equal(pids[2 * i], esc.sid, "in a session of its own")
      end
      local walked, restore = count_walk()
      local ok, seen = pcall(stop_all_seeing, s, dir, function() return count_pending(pids) end)
      restore()
      assert(ok, seen)
      assert.are.equal(0, walked(), "signals sent by the walk")
      assert.are.equal(2 * N, seen)
      for i = 1, N do
        assert.are.equal(1, count_in(dir .. "/n" .. i .. ".count"), "n" .. i .. " got the stop signal once")
        assert.are.equal(1, count_in(dir .. "/n" .. i .. ".esc.count"), "n" .. i .. "'s setsid child got it once")
      end
      for _, pid in ipairs(pids) do h.eventually(function() return not u.alive(pid) end, "pid " .. pid .. " gone") end
    end)
  end)

  it("still stops dependents first: a dependency gets no signal until they are gone", function()
    u.with(function(s, _, dir)
      service(s, "db", dir, "gate_db")
      service(s, "web", dir, "gate_web", { depends_on = "db" })
      service(s, "api", dir, "gate_web", { depends_on = "db" })
      s.start("all")
      local db, web, api = pid_in(dir .. "/db"), pid_in(dir .. "/web"), pid_in(dir .. "/api")
      local order, at_first, at_db = {}, nil, nil
      local unsubscribe = s.events(function(ev)
        if ev.event == "stopping" or ev.event == "stopped" then order[#order + 1] = ev.event .. " " .. ev.name end
        if ev.event == "stopping" and not at_first then
          at_first = { web = signal_pending(web), api = signal_pending(api), db = signal_pending(db) }
        end
        if ev.event == "stopping" and ev.name == "db" then at_db = signal_pending(db) end
      end)
      local t = orch.task(function() return s.stop("all") end)
      h.eventually(function() return at_first ~= nil end, "the first stopping event")
      -- web and api are signalled; db waits for them (their gate is shut).
      assert.are.same({ web = true, api = true, db = false }, at_first)
      assert.is_false(signal_pending(db))
      io.open(dir .. "/gate_web", "w"):close()
      h.eventually(function() return at_db ~= nil end, "db stopping")
      assert.is_true(at_db)
      io.open(dir .. "/gate_db", "w"):close()
      assert.is_true(t:join())
      unsubscribe()
      -- Both dependents were stopped before db's stop began.
      local pos = {}
      for i, e in ipairs(order) do pos[e] = i end
      assert.truthy(pos["stopped web"] and pos["stopped api"] and pos["stopping db"], table.concat(order, ", "))
      assert.is_true(pos["stopped web"] < pos["stopping db"] and pos["stopped api"] < pos["stopping db"],
        table.concat(order, ", "))
      for _, n in ipairs { "db", "web", "api" } do assert.are.equal(1, count_in(dir .. "/" .. n .. ".count"), n) end
    end)
  end)

  it("signals an escapee in the service's cgroup once, and leaves no process and no cgroup", function()
    u.with(function(s, _, dir)
      local parent = h.cgroup_name()
      s.configure { cgroup = parent }
      service(s, "e", dir, "gate", { cmd = { COUNT, tostring(SIGNUM), dir .. "/e", dir .. "/gate", "escapee" } })
      s.start("e")
      local main, esc = pid_in(dir .. "/e"), pid_in(dir .. "/e.esc")
      local path = u.st(s, "e").cgroup
      assert.truthy(path, "cgroups are on")
      assert.are.equal(path, orch.cgroup.of(esc))
      local t = orch.task(function() return s.stop("e") end)
      h.eventually(function() return signal_pending(main) and signal_pending(esc) end, "both signalled")
      io.open(dir .. "/gate", "w"):close()
      assert.is_true(t:join())
      assert.are.equal(1, count_in(dir .. "/e.count"))
      assert.are.equal(1, count_in(dir .. "/e.esc.count"))
      assert.is_false(u.alive(main))
      h.eventually(function() return not u.alive(esc) end, "the escapee gone")
      assert.is_nil(orch.cgroup.open(path))
      s.close()
      assert.is_nil(orch.cgroup.open(parent))
    end)
  end)

  it("signals every escapee of a layer in the first pass too, each once, and leaves nothing", function()
    u.with(function(s, _, dir)
      local N = 4
      local mains, escs, paths, parent = escapees(s, dir, "e", N)
      -- At the first "stopping" event, how many escapees have the signal.
      local seen = stop_all_seeing(s, dir, function() return count_pending(escs) end)
      assert.are.equal(N, seen)
      for i = 1, N do
        assert.are.equal(1, count_in(dir .. "/e" .. i .. ".count"), "e" .. i .. " got the stop signal once")
        assert.are.equal(1, count_in(dir .. "/e" .. i .. ".esc.count"), "e" .. i .. "'s escapee got it once")
        assert.is_false(u.alive(mains[i]))
        h.eventually(function() return not u.alive(escs[i]) end, "escapee " .. i .. " gone")
        assert.is_nil(orch.cgroup.open(paths[i]))
      end
      s.close()
      assert.is_nil(orch.cgroup.open(parent))
    end)
  end)

  it("signals an escapee in a cgroup below a service's own in the first pass too (the listing of each leaf alone only where no cgroup is below)", function()
    u.with(function(s, _, dir)
      local N = 3
      local _, escs, paths = escapees(s, dir, "n", N)
      -- n2's escapee moves into a cgroup below n2's own.
      local sub = assert(orch.cgroup.create(paths[2] .. "/sub"))
      assert(sub:add(escs[2]))
      assert.are.equal(paths[2] .. "/sub", orch.cgroup.of(escs[2]))
      local seen = stop_all_seeing(s, dir, function()
        local at = {}
        for i = 1, N do at[i] = signal_pending(escs[i]) end
        return at
      end)
      assert.are.same({ true, true, true }, seen)
      for i = 1, N do
        assert.are.equal(1, count_in(dir .. "/n" .. i .. ".esc.count"), "n" .. i .. "'s escapee got it once")
        h.eventually(function() return not u.alive(escs[i]) end, "escapee " .. i .. " gone")
      end
      sub:remove()
      s.close()
    end)
  end)

  it("returns once an escapee that ignores the stop signal is killed, with the cgroup removed", function()
    u.with(function(s, logs, dir)
      local parent = h.cgroup_name()
      s.configure { cgroup = parent }
      -- The escapee ignores TERM (inherited across exec) in a session of its own.
      -- (Its KILL comes at the stop timeout: 2 s, time enough for the main
      -- process to die of its TERM on a loaded machine; 30 s made the test
      -- take 30.)
      s.service { name = "x", stop = { timeout = 2 },
                  cmd = u.sh("(trap '' TERM; exec setsid sleep 600) & echo $! > " .. dir .. "/esc; exec sleep 600") }
      s.start("x")
      local esc = pid_in(dir .. "/esc")
      local path = u.st(s, "x").cgroup
      assert.truthy(path, "cgroups are on")
      h.eventually(function() return orch.cgroup.of(esc) == path and #(orch.cgroup.open(path):procs()) == 2 end,
        "the escapee in place")
      assert.is_true(s.stop("x"))
      -- The main process died of TERM; what it left got KILL before the stop returned.
      assert.is_false(u.alive(esc))
      assert.is_nil(orch.cgroup.open(path))
      assert.are.equal("TERM", u.st(s, "x").exit_signal)
      s.close()
      assert.is_nil(orch.cgroup.open(parent))
    end)
  end)

  it("removes the cgroups of a stop of many once every run has ended, before it returns", function()
    u.with(function(s, _, dir)
      local parent = h.cgroup_name()
      s.configure { cgroup = parent }
      -- quick dies of the stop signal at once; slow keeps it blocked
      -- until its gate opens.
      s.service { name = "quick", cmd = { "sleep", "600" } }
      service(s, "slow", dir, "gate")
      s.start("all")
      local slow = pid_in(dir .. "/slow")
      local quick_cg, slow_cg = u.st(s, "quick").cgroup, u.st(s, "slow").cgroup
      assert.truthy(quick_cg, "cgroups are on")
      -- At quick's "stopped" event (slow still running): is its cgroup
      -- still there? The rmdir waits for the stop's last exit.
      local kept
      local unsubscribe = s.events(function(ev)
        if ev.event == "stopped" and ev.name == "quick" then kept = orch.cgroup.open(quick_cg) ~= nil end
      end)
      local t = orch.task(function() return s.stop("all") end)
      h.eventually(function() return kept ~= nil end, "quick stopped")
      unsubscribe()
      assert.is_true(signal_pending(slow), "slow has its signal, not yet taken")
      assert.is_true(kept, "quick's cgroup is kept while slow is stopping")
      io.open(dir .. "/gate", "w"):close()
      assert.is_true(t:join())
      assert.is_nil(orch.cgroup.open(quick_cg))
      assert.is_nil(orch.cgroup.open(slow_cg))
      s.close()
      assert.is_nil(orch.cgroup.open(parent))
    end)
  end)

  -- The shutdown's stop then makes no second pass: each instance's
  -- signal_first is called once (twice when the stop walked them all
  -- again, finding each signalled already).
  it("on SIGTERM, signals every service of a one-layer stop before the shutdown's log line, in one pass", function()
    u.with(function(_, _, dir, _, token)
      local N = 4
      -- The script's log function reads, at the "received TERM" line, how
      -- many of the services have the stop signal pending, and at the last
      -- line how many calls of signal_first there were.
      local script = h.script(string.format([[
        local sup = require "orch.supervisor"
        local Instance = require "orch.supervisor.instance"
        local DIR, COUNT, SIGNUM, N = %q, %q, %d, %d
        local calls = 0
        local signal_first = Instance.signal_first
        function Instance.signal_first(self, ...)
          calls = calls + 1
          return signal_first(self, ...)
        end
        local function signal_pending(pid)
          local f = io.open("/proc/" .. pid .. "/status")
          local s = f and f:read("a") or ""
          if f then f:close() end
          local hex = s:match("ShdPnd:%%s*(%%x+)")
          return hex ~= nil and ((tonumber(hex, 16) >> (SIGNUM - 1)) & 1) == 1
        end
        sup.configure { runtime_dir = DIR, log = function(msg)
          if msg:find("every service is stopped", 1, true) then
            local f = assert(io.open(DIR .. "/calls", "w"))
            f:write(calls, "\n")
            f:close()
          end
          if not msg:find("received TERM", 1, true) then return end
          local n = 0
          for i = 1, N do
            local f = io.open(DIR .. "/p" .. i)
            local pid = f and tonumber(f:read("l"))
            if f then f:close() end
            if pid and signal_pending(pid) then n = n + 1 end
          end
          local f = assert(io.open(DIR .. "/at_line.tmp", "w"))
          f:write(n, "\n")
          f:close()
          assert(os.rename(DIR .. "/at_line.tmp", DIR .. "/at_line"))
        end }
        for i = 1, N do
          sup.service { name = "p" .. i, cmd = { COUNT, tostring(SIGNUM), DIR .. "/p" .. i, DIR .. "/gate" },
                        stop = { signal = SIGNUM, timeout = 10 } }
        end
        sup.run()
      ]], dir, COUNT, SIGNUM, N))
      local p = assert(orch.spawn { h.bin, "run", script, stdout = "null", stderr = dir .. "/err",
        env = { ORCH_SPEC_RUN = token, ORCH_SOCKET = dir .. "/ctl.sock" } })
      for i = 1, N do pid_in(dir .. "/p" .. i) end
      assert.is_true(p:kill("TERM"))
      h.eventually(function() return count_in(dir .. "/at_line") ~= nil end, "the received TERM line")
      io.open(dir .. "/gate", "w"):close()
      local code = p:wait(30)
      assert.are.equal(0, code, h.slurp(dir .. "/err"))
      assert.are.equal(N, count_in(dir .. "/at_line"), "services signalled at the line")
      assert.are.equal(N, count_in(dir .. "/calls"), "signal_first calls in the shutdown")
      for i = 1, N do
        assert.are.equal(1, count_in(dir .. "/p" .. i .. ".count"), "p" .. i .. " got the stop signal once")
      end
    end)
  end)

  -- A service's stop timeout is its grace after the stop signal: where the
  -- first pass sent the signal (a shutdown's, in the TERM handler, before
  -- the bookkeeping of every stop of the layer), the timeout counts from
  -- there, not from the service's own stop task. Here that bookkeeping is
  -- made long on purpose: a sup.events subscriber holds the loop SPIN
  -- seconds at the first "stopping" event (as the stops of thousands of
  -- services take seconds). deaf ignores TERM; its timeout is TIMEOUT: its
  -- KILL comes at the end of the SPIN (its grace is over by then), where it
  -- came TIMEOUT later, SPIN + TIMEOUT after the signal. (Bounded by the
  -- timer: without the change it can never come before SPIN + TIMEOUT.)
  it("on SIGTERM, a service's stop timeout counts from the first pass's signal, not from its stop's bookkeeping", function()
    u.with(function(_, _, dir, _, token)
      local SPIN, TIMEOUT = 2, 3
      local script = h.script(string.format([[
        local sup = require "orch.supervisor"
        local DIR, SPIN, TIMEOUT = %q, %d, %d
        local function note(line)
          local f = assert(io.open(DIR .. "/notes", "a"))
          f:write(line, "\n")
          f:close()
        end
        sup.configure { runtime_dir = DIR, log = function(msg)
          if msg:find("received TERM", 1, true) then note(string.format("term %%.6f", orch.now())) end
          if msg:find("deaf: still running", 1, true) then note(string.format("kill %%.6f", orch.now())) end
        end }
        sup.service { name = "deaf", cmd = { "sh", "-c", "trap '' TERM; : > " .. DIR .. "/up; while :; do sleep 0.05; done" },
                      stop = { timeout = TIMEOUT } }
        sup.service { name = "other", cmd = { "sleep", "600" } }
        local spun = false
        sup.events(function(ev)
          if ev.event ~= "stopping" or spun then return end
          spun = true
          local t = orch.now()
          while orch.now() - t < SPIN do end
        end)
        sup.run()
      ]], dir, SPIN, TIMEOUT))
      local p = assert(orch.spawn { h.bin, "run", script, stdout = "null", stderr = dir .. "/err",
        env = { ORCH_SPEC_RUN = token, ORCH_SOCKET = dir .. "/ctl.sock" } })
      h.eventually(function() return io.open(dir .. "/up") ~= nil end, "deaf to be up")
      assert.is_true(p:kill("TERM"))
      local code = p:wait(60)
      assert.is_not_nil(code, h.slurp(dir .. "/err"))
      local notes = h.slurp(dir .. "/notes") or ""
      local term = tonumber(notes:match("term ([%d.]+)"))
      local kill = tonumber(notes:match("kill ([%d.]+)"))
      assert.is_truthy(term and kill, notes .. h.slurp(dir .. "/err"))
      -- The KILL after the signal: SPIN and a little (the loop was held),
      -- not SPIN + TIMEOUT.
      assert.is_true(kill - term >= SPIN, notes)
      assert.is_true(kill - term < SPIN + TIMEOUT, notes)
    end)
  end)

  it("holds SIGCHLD only during its first pass: released after, a script's own hold kept", function()
    u.with(function(s)
      for i = 1, 3 do s.service { name = "q" .. i, cmd = { "sleep", "600" } } end
      local function held()
        for _, name in ipairs(orch.signal.sigprocmask()) do if name == "CHLD" then return true end end
        return false
      end
      s.start("all")
      assert.is_true(s.wait("all", "running", 20))
      assert.is_true(s.stop("all"))
      assert.is_false(held(), "released after the stop")
      s.start("all")
      assert.is_true(s.wait("all", "running", 20))
      assert.is_true(orch.signal.sighold("CHLD"))
      local ok, err = pcall(function()
        -- The exits are still seen (the script's hold ends before the wait).
        local t = orch.task(function() return s.stop("all") end)
        orch.sleep(0.05)
        assert.is_true(held(), "the script's hold kept by the stop's first pass")
        orch.signal.sigrelse("CHLD")
        assert.is_true(t:join())
      end)
      orch.signal.sigrelse("CHLD")
      assert(ok, err)
      assert.are.equal("stopped", u.st(s, "q1").state)
    end)
  end)

  -- The first pass runs no user code, but it may raise all the same: the
  -- Lua time budget's count hook raises in whatever runs past the budget
  -- (a pass over thousands of services), and so does a debug hook. Here a
  -- call hook raises at the call of r2's signal_first, inside the pass
  -- with SIGCHLD held: the stop (and the shutdown, whose early pass runs in
  -- the caller of sup.shutdown) must go on without the pass, each service
  -- signalled by its own stop; SIGCHLD is released, every exit reaped.
  it("an error raised inside the first pass: SIGCHLD released, the stop and the shutdown still stop every service", function()
    u.with(function(_, _, dir, _, token)
      local script = h.script(string.format([[
        local sup = require "orch.supervisor"
        local DIR = %q
        sup.configure { runtime_dir = DIR }
        for i = 1, 3 do sup.service { name = "r" .. i, cmd = { "sleep", "600" } } end
        local function raise_in_pass(name)
          local co = coroutine.running()
          debug.sethook(co, function()
            local info = debug.getinfo(2, "n")
            if info and info.name == "signal_first" then
              local _, self = debug.getlocal(2, 1)
              if type(self) == "table" and self.name == name then
                debug.sethook(co)
                error("raised in the pass", 0)
              end
            end
          end, "c")
        end
        local function note(line)
          local f = assert(io.open(DIR .. "/notes", "a"))
          f:write(line, "\n")
          f:close()
        end
        local function held()
          for _, n in ipairs(orch.signal.sigprocmask()) do if n == "CHLD" then return "held" end end
          return "released"
        end
        orch.task(function()
          for i = 1, 3 do assert(sup.wait("r" .. i, "running")) end
          raise_in_pass("r2")
          local ok, res, err = pcall(sup.stop, "all")
          debug.sethook()
          note(string.format("stop %%s %%s %%s %%s", tostring(ok), tostring(res), tostring(err), held()))
          for i = 1, 3 do note("r" .. i .. " " .. sup.status("r" .. i)[1].state) end
          assert(sup.start("all"))
          for i = 1, 3 do assert(sup.wait("r" .. i, "running")) end
          for i = 1, 3 do note("pid " .. sup.status("r" .. i)[1].pid) end
          raise_in_pass("r2")
          ok, err = pcall(sup.shutdown, 0)
          note(string.format("shutdown %%s %%s", tostring(ok), tostring(err)))
        end)
        sup.run()
      ]], dir))
      local p = assert(orch.spawn { h.bin, "run", script, stdout = "null", stderr = dir .. "/err",
        env = { ORCH_SPEC_RUN = token, ORCH_SOCKET = dir .. "/ctl.sock" } })
      -- (An orch whose shutdown failed runs on: killed here, its services
      -- by u.with.)
      local code = p:wait(30)
      if code == nil then
        p:kill("KILL")
        p:wait(10)
      end
      local err = h.slurp(dir .. "/err")
      assert.are.equal(0, code, err)
      local notes = h.slurp(dir .. "/notes")
      assert.matches("^stop true true nil released\nr1 stopped\nr2 stopped\nr3 stopped\n", notes)
      -- (The shutdown ends orch before sup.shutdown returns: no note.)
      assert.is_nil(notes:find("shutdown", 1, true), notes)
      for pid in notes:gmatch("pid (%d+)") do assert.is_false(u.alive(tonumber(pid)), notes) end
      -- Said, with what was raised.
      local _, n = err:gsub("the stop's first signal pass failed %(each stop signals its own service%): raised in the pass", "")
      assert.are.equal(2, n, err)
      assert.matches("every service is stopped", err, 1, true)
    end)
  end)

  it("still sends KILL after the stop timeout to a process that keeps the signal blocked", function()
    u.with(function(s, logs, dir)
      service(s, "deaf", dir, "never", { stop = { signal = SIG, timeout = 0.2 } })
      service(s, "ok", dir, "gate")
      s.start("all")
      local deaf, ok = pid_in(dir .. "/deaf"), pid_in(dir .. "/ok")
      local t = orch.task(function() return s.stop("all") end)
      h.eventually(function() return signal_pending(ok) end, "ok signalled")
      io.open(dir .. "/gate", "w"):close()
      assert.is_true(t:join())
      assert.are.equal("KILL", u.st(s, "deaf").exit_signal)
      assert.is_false(u.alive(deaf))
      assert.truthy(u.logged(logs, "deaf: still running 0.2s after " .. SIG .. ": sending KILL"))
      assert.are.equal(1, count_in(dir .. "/ok.count"))
    end)
  end)
end)
