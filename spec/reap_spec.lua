-- Reaping (src/process.c, src/exitconn.c, src/waitring.c): a child orch
-- spawns is reaped by pid after the proc connector's exit event (root in
-- the initial namespaces), or after its wait in orch's io_uring ring (Linux
-- 6.7), or through its pidfd, without the kernel's walk over every child of
-- orch; orphans, stops, lost events and children with none of these by the
-- walk after SIGCHLD. ORCH_REAPER=ring (=pidfd, =walk) makes an orch leave
-- the connector (and the ring, and pidfds) out, so each way is tried here.
-- Real processes, real signals, real fd limits, real namespaces.
local h = require "spec.helper"
local orch = h.orch

local prog = h.progs .. "/prog_proc"
-- The children of the tests of hundreds and thousands: the system's sleep,
-- in an orch run without the ASan pass's LD_PRELOAD (it is for busted's
-- lua5.4, which loads orch.so; orch and prog_proc are linked with libasan
-- themselves). Each program that loads libasan, prog_proc of the ASan build
-- or a sleep it is preloaded into, spends milliseconds of CPU starting:
-- 2,100 of them took 10 s of CPU more than as many plain sleeps.
local SLEEP = h.sh("command -v sleep")
local eventually = h.eventually

-- The pidfds process pid holds (links "anon_inode:[pidfd]" in /proc/PID/fd).
local function pidfds(pid)
  local out = h.sh("ls -l /proc/" .. (pid or orch.getpid()) .. "/fd 2>/dev/null | grep -c 'pidfd' || true")
  return tonumber(out) or 0
end

-- Whether this kernel lets orch wait in an io_uring ring: Linux 6.7 or
-- later with io_uring enabled (then the ring must be what orch uses).
local function kernel_has_ring()
  local rel = h.slurp("/proc/sys/kernel/osrelease") or ""
  local major, minor = rel:match("^(%d+)%.(%d+)")
  major, minor = tonumber(major), tonumber(minor)
  local off = tonumber((h.slurp("/proc/sys/kernel/io_uring_disabled") or "0"):match("%d+")) or 0
  return major and (major > 6 or (major == 6 and minor >= 7)) and off == 0
end
local RING = kernel_has_ring()

-- Whether orch can hear of its children's exits through the proc
-- connector: root with CAP_NET_ADMIN in the initial user, pid and network
-- namespaces (their inode numbers are fixed), a kernel with the connector
-- (when its configuration says). Then the connector must be what orch uses.
local function connector_possible()
  local status = h.slurp("/proc/self/status") or ""
  local cap = tonumber(status:match("CapEff:%s*(%x+)") or "0", 16) or 0
  if (cap >> 12) & 1 == 0 then return false end
  local init = { net = "4026531833", pid = "4026531836", user = "4026531837" }
  for ns, ino in pairs(init) do
    if h.sh("stat -L -c %i /proc/self/ns/" .. ns) ~= ino then return false end
  end
  local config = h.sh("zcat /proc/config.gz 2>/dev/null | grep -c '^CONFIG_PROC_EVENTS=y'")
  return config ~= "0"
end
local CONNECTOR = connector_possible()

-- Where the kernel refuses the connector (or ORCH_REAPER=ring leaves it
-- out), orch reaps through the ring, else through pidfds: a test of the
-- connector (of the ring) asserts that way instead, and that every exit is
-- still reaped. None passes without asserting.
local FALLBACK = RING and "ring" or "pidfd"

after_each(function()
  assert.are.same({}, h.children())
end)

-- `orch run` of a script (its text; env: what the environment adds;
-- LD_PRELOAD emptied, see SLEEP): asserts that it exits 0, and returns its
-- output.
local function run_ok(text, env)
  env = env or {}
  env.LD_PRELOAD = ""
  local code, out, err = h.cli({ "run", h.script(text) }, nil, env)
  assert.are.equal(0, code, err)
  return out
end

describe("reaping", function()
  -- In an orch of its own: this process has been a subreaper and had other
  -- children (either can make a SIGCHLD walk).
  local function no_walk(mode)
    local out = run_ok(string.format([[
      local prog = %q
      local r0 = orch.proc.reaper()
      local ps = {}
      for i = 1, 50 do ps[i] = assert(orch.spawn { prog, "sleep", "100" }) end
      local r1 = orch.proc.reaper()
      print(r1.mode, "pidfds", r1.pidfds - r0.pidfds, "waits", r1.waits - r0.waits)
      for i = 1, 50 do assert(ps[i]:kill("KILL")) end
      for i = 1, 50 do assert(select(2, ps[i]:wait()) == "KILL") end
      local r = orch.proc.reaper()
      print("exits", r.walks - r0.walks, r.pidfd_exits - r0.pidfd_exits, r.ring_exits - r0.ring_exits,
        r.walk_exits - r0.walk_exits, r.connector_exits - r0.connector_exits, r.pidfds, r.waits)
      -- A stop is not an exit: found by the walk, and reported.
      local p = assert(orch.spawn { prog, "sleep", "100" })
      local stopped
      p:on_stop(function(sig) stopped = sig end)
      assert(p:kill("STOP"))
      for _ = 1, 3000 do if stopped then break end orch.sleep(0.01) end
      print("stop", stopped, (p:status()), orch.proc.reaper().walks > r.walks)
      assert(p:kill("KILL"))
      print("end", select(2, p:wait()), orch.proc.reaper().children, orch.proc.reaper().pidfds, orch.proc.reaper().waits)
    ]], prog), { ORCH_REAPER = mode })
    return out
  end

  -- A script's lines that wait until children ps[1..n] are all zombies.
  local function until_zombies(n)
    return string.format([[
      for i = 1, %d do
        repeat
          local f = io.open("/proc/" .. ps[i].pid .. "/stat")
          local st = f and f:read("a"):match("^%%d+ %%b() (%%a)")
          if f then f:close() end
        until st == "Z"
      end]], n)
  end

  -- For a script: killed(n) spawns n children, kills them and returns how
  -- many were reaped killed.
  local KILLED = string.format([[
      local function killed(n)
        local ps = {}
        for i = 1, n do ps[i] = assert(orch.spawn { %q, "sleep", "100" }) end
        for i = 1, n do ps[i]:kill("KILL") end
        local k = 0
        for i = 1, n do if select(2, ps[i]:wait()) == "KILL" then k = k + 1 end end
        return k
      end
  ]], prog)

  -- An orch.fork child spawns 20 children and kills them, its parent 5:
  -- what each reaped, counted by the reaper's field exits (mode: ORCH_REAPER).
  local function fork_reaps(exits, mode)
    local out = run_ok(KILLED .. string.format([[
      local prog, exits = %q, %q
      local mine = {}
      for i = 1, 5 do mine[i] = assert(orch.spawn { prog, "sleep", "100" }) end
      local f = assert(orch.fork(function()
        local r0 = orch.proc.reaper()
        local n = killed(20)
        local r = orch.proc.reaper()
        io.stdout:write(string.format("child %%s %%d %%d %%d %%d\n", r.mode, n, r[exits] - r0[exits], r.walks - r0.walks, r.waits))
        io.stdout:flush()
        orch.exit(0)
      end))
      assert(f:wait() == 0)
      local r0 = orch.proc.reaper()
      for i = 1, 5 do mine[i]:kill("KILL") end
      local n = 0
      for i = 1, 5 do if select(2, mine[i]:wait()) == "KILL" then n = n + 1 end end
      local r = orch.proc.reaper()
      print("parent", r.mode, n, r[exits] - r0[exits], r.waits)
    ]], prog, exits), { ORCH_REAPER = mode })
    return out
  end

  -- 300 children under an fd limit of 200, killed: how they were watched
  -- and reaped (exits: the reaper's field; mode: ORCH_REAPER).
  local function low_fd_reaps(exits, mode)
    local dir = h.tmpdir()
    local script = h.script(string.format([[
      local orch = require "orch"
      local exits = %q
      local r0 = orch.proc.reaper()
      local ps = {}
      for i = 1, 300 do ps[i] = assert(orch.spawn { %q, "100" }) end
      local r = orch.proc.reaper()
      print("running", r.mode, r.waits, r.pidfds)
      for _, p in ipairs(ps) do p:kill("KILL") end
      local n = 0
      for _, p in ipairs(ps) do if select(2, p:wait()) == "KILL" then n = n + 1 end end
      r = orch.proc.reaper()
      print("reported", n, r[exits] - r0[exits], r.walks - r0.walks)
    ]], exits, SLEEP))
    return h.sh(string.format("cd %s && LD_PRELOAD= %s prlimit --nofile=200:200 %s run %s 2>&1", h.shquote(dir),
      mode and "ORCH_REAPER=" .. mode or "", h.shquote(h.bin), h.shquote(script)))
  end

  -- fork_reaps' report in each way. Through pidfds, not every exit of the
  -- parent's is its pidfd's: the fork child has no pidfd, and the walk that
  -- reaps it runs the script (its wait) and may take the others' too.
  local function assert_fork(way, out)
    if way == "pidfd" then
      assert.matches("^child pidfd 20 20 0 0\nparent\tpidfd\t5\t%d\t0\n$", out)
    else
      assert.are.equal(string.format("child %s 20 20 0 0\nparent\t%s\t5\t5\t0\n", way, way), out)
    end
  end

  -- low_fd_reaps' report in each way: through the connector or the ring,
  -- no fd a child (and no walk); through pidfds, none kept once one does not
  -- fit (the pidfd test below), and the walk reaps them all the same.
  local function assert_low_fd(way, out)
    if way == "pidfd" then
      assert.matches("running\tpidfd\t0\t0\n", out, 1, true)
      assert.matches("reported\t300\t", out, 1, true)
    else
      assert.matches("running\t" .. way .. "\t" .. (way == "ring" and 300 or 0) .. "\t0\n", out, 1, true)
      assert.matches("reported\t300\t300\t0", out, 1, true)
    end
  end

  -- What no_walk prints in each way.
  local NO_WALK = {
    connector = table.concat({
      "connector\tpidfds\t0\twaits\t0",
      "exits\t0\t0\t0\t0\t50\t0\t0",   -- no walk, 50 exits by pid
      "stop\tSTOP\tstopped\ttrue",
      "end\tKILL\t0\t0\t0", "" }, "\n"),
    ring = table.concat({
      "ring\tpidfds\t0\twaits\t50",
      "exits\t0\t0\t50\t0\t0\t0\t0",   -- no walk, 50 exits through the ring
      "stop\tSTOP\tstopped\ttrue",
      "end\tKILL\t0\t0\t0", "" }, "\n"),
    pidfd = table.concat({
      "pidfd\tpidfds\t50\twaits\t0",
      "exits\t0\t50\t0\t0\t0\t0\t0",   -- no walk, 50 exits through pidfds
      "stop\tSTOP\tstopped\ttrue",
      "end\tKILL\t0\t0\t0", "" }, "\n"),
  }

  it("reaps spawned children by pid after the proc connector's events, without a walk, a wait or an fd each; a stop makes one and is reported", function()
    -- Not root in the initial namespaces: the ring (or pidfds) instead.
    assert.are.equal(NO_WALK[CONNECTOR and "connector" or FALLBACK], no_walk(nil))
  end)

  it("reaps spawned children through the ring's waits without a walk or an fd (ORCH_REAPER=ring); a stop makes one and is reported", function()
    -- An older kernel: pidfds instead.
    assert.are.equal(NO_WALK[RING and "ring" or "pidfd"], no_walk("ring"))
  end)

  it("reaps spawned children through their pidfds without a walk (ORCH_REAPER=pidfd); a stop makes one and is reported", function()
    assert.are.equal(NO_WALK.pidfd, no_walk("pidfd"))
  end)

  it("arms one late walk after a SIGCHLD explained without a walk (a stop the kernel merged into an exit's signal is found by it)", function()
    local out = run_ok(string.format([[
      local prog = %q
      local r0 = orch.proc.reaper()
      local ps = {}
      for i = 1, 5 do ps[i] = assert(orch.spawn { prog, "sleep", "100" }) end
      for i = 1, 5 do assert(ps[i]:kill("KILL")) end
      for i = 1, 5 do assert(select(2, ps[i]:wait()) == "KILL") end
      for _ = 1, 3000 do
        if orch.proc.reaper().late_walks > r0.late_walks then break end
        orch.sleep(0.01)
      end
      local r = orch.proc.reaper()
      print(r.mode, r.walks - r0.walks, r.late_walks - r0.late_walks > 0, r.late_ms)
    ]], prog))
    local mode = out:match("^(%a+)\t")
    assert.truthy(mode == "connector" or mode == "ring" or mode == "pidfd", out)
    -- No walk at the signals themselves; the late walk came after them.
    assert.are.equal(mode .. "\t0\ttrue\t1000\n", out)
  end)

  it("keeps at most 2,048 waits in the ring (each pending wait costs every child's exit a look); the children past them are reaped all the same (ORCH_REAPER=ring)", function()
    local out = run_ok(string.format([[
      local prog = %q
      local ps = {}
      for i = 1, 2100 do ps[i] = assert(orch.spawn { prog, "100" }) end
      local r = orch.proc.reaper()
      for i = 1, 2100 do assert(ps[i]:kill("KILL")) end
      local n = 0
      for i = 1, 2100 do if select(2, ps[i]:wait()) == "KILL" then n = n + 1 end end
      print(r.mode, r.waits, n, orch.proc.reaper().children)
    ]], SLEEP), { ORCH_REAPER = "ring" })
    if RING then
      assert.are.equal("ring\t2048\t2100\t0\n", out)
    else
      assert.matches("^pidfd\t0\t2100\t0\n$", out)
    end
  end)

  it("ORCH_REAPER=walk: every exit is reaped by the walk", function()
    local out = no_walk("walk")
    assert.matches("^walk\tpidfds\t0\twaits\t0\n", out)
    assert.matches("\nexits\t%d+\t0\t0\t50\t0\t0\t0\n", out)
    assert.matches("\nend\tKILL\t0\t0\t0\n", out)
  end)

  it("orch.proc.reaper takes no argument", function()
    h.check_raises {
      { function() orch.proc.reaper(1) end, "bad argument #1 to 'reaper'" },
    }
  end)

  it("reaps 200 children that end at once, each through its own wait (or pidfd), each status to its process", function()
    h.run(function()
      local before = pidfds()
      local r0 = orch.proc.reaper()
      local ps = {}
      for i = 1, 200 do ps[i] = assert(orch.spawn { prog, "sleep", "100" }) end
      if r0.mode == "ring" then
        assert.are.equal(before, pidfds())
        assert.are.equal(r0.waits + 200, orch.proc.reaper().waits)
      elseif r0.mode == "connector" then
        assert.are.equal(before, pidfds())
        assert.are.equal(r0.waits, orch.proc.reaper().waits)
      else
        assert.are.equal(before + 200, pidfds())
      end
      for i = 1, 200 do assert.is_true(ps[i]:kill("KILL")) end
      for i = 1, 200 do assert.are.same({ nil, "KILL" }, { ps[i]:wait() }) end
      assert.are.equal(before, pidfds())
      assert.are.equal(r0.waits, orch.proc.reaper().waits)
      assert.are.equal(0, h.zombies())
    end, 60)
  end)

  it("reaps 1,500 children that end at once through the ring, past what its completion queue holds, with no walk and no zombie (ORCH_REAPER=ring)", function()
    local out = run_ok(string.format([[
      local prog = %q
      local r0 = orch.proc.reaper()
      local ps = {}
      for i = 1, 1500 do ps[i] = assert(orch.spawn { prog, "100" }) end
      print(orch.proc.reaper().mode, orch.proc.reaper().waits)
      -- Killed, and all ended, while nothing reads the ring (no yield):
      -- 1,500 completions for a queue of 1,024, the rest kept by the
      -- kernel until asked for.
      for i = 1, 1500 do assert(ps[i]:kill("KILL")) end
%s
      local n = 0
      for i = 1, 1500 do if select(2, ps[i]:wait()) == "KILL" then n = n + 1 end end
      local r = orch.proc.reaper()
      -- (One walk may come: the SIGCHLD records' ring holds 1,024; it
      -- finds nothing left.)
      print(n, r.ring_exits - r0.ring_exits, r.walk_exits - r0.walk_exits, r.waits, r.pidfd_exits - r0.pidfd_exits)
    ]], SLEEP, until_zombies(1500)), { ORCH_REAPER = "ring" })
    if RING then
      assert.are.equal("ring\t1500\n1500\t1500\t0\t0\t0\n", out)
    else
      -- An older kernel: pidfds (as many as fit), the walk for the rest.
      local walked, by_pidfd = out:match("^pidfd\t0\n1500\t0\t(%d+)\t0\t(%d+)\n$")
      assert.are.equal(1500, tonumber(walked) + tonumber(by_pidfd), out)
    end
    assert.are.equal(0, h.zombies())
  end)

  it("an orch.fork child reaps its own children through a ring of its own, and leaves the parent's waits alone (ORCH_REAPER=ring)", function()
    -- An older kernel: through pidfds of its own.
    local way = RING and "ring" or "pidfd"
    assert_fork(way, fork_reaps(way .. "_exits", "ring"))
  end)

  it("an orch.fork child reaps its own children through a pidfd epoll set of its own (the parent's fd number), and leaves the parent's children alone (ORCH_REAPER=pidfd)", function()
    -- (How the parent's 5 are reaped varies: a SIGCHLD may walk while the
    -- fork child, which has no pidfd, is registered.)
    local out = fork_reaps("pidfd_exits", "pidfd")
    assert.matches("^child pidfd 20 20 0 0\nparent\tpidfd\t5\t%d+\t0\n$", out)
  end)

  it("children whose pids share a slot of the reaped-before-their-record table, ended together: no walk", function()
    -- The table of pids reaped before their SIGCHLD's record was read has
    -- a slot per pid % 4,096: children 4,096 apart (a machine whose other
    -- processes fork a lot spreads orch's children so: the review's run
    -- beside stress-ng had the connector test walk twice) replace each
    -- other there, and the record of the one replaced found neither its
    -- child nor its slot. It was reaped already: no walk. In a pid
    -- namespace of the test's own (orch its pid 2, under a shell) each
    -- pair gets its pids exactly, through ns_last_pid.
    local script = h.script(string.format([[
      local prog = %q
      local function spawn_at(pid)
        local f = assert(io.open("/proc/sys/kernel/ns_last_pid", "w"))
        f:write(tostring(pid - 1))
        f:close()
        return assert(orch.spawn { prog, "sleep", "100" })
      end
      local w0, shared = orch.proc.reaper().walks, 0
      for k = 1, 30 do
        local a, b = spawn_at(1000 + k), spawn_at(1000 + k + 4096)
        if a.pid %% 4096 == b.pid %% 4096 then shared = shared + 1 end
        a:kill("KILL")
        b:kill("KILL")
        a:wait()
        b:wait()
      end
      print(orch.getpid(), shared, orch.proc.reaper().walks - w0)
    ]], prog))
    local out = h.sh("timeout -k 5 120 unshare --pid --fork --mount-proc sh -c " .. h.shquote('"$0" run "$1" 2>&1; :')
      .. " " .. h.shquote(h.bin) .. " " .. h.shquote(script))
    assert.are.equal("2\t30\t0", out)
  end)

  it("through the proc connector: 2,100 children, past the ring's cap, each reaped by pid after its event, with no walk, no wait and no fd", function()
    local out = run_ok(string.format([[
      local prog = %q
      local ps = {}
      for i = 1, 2100 do ps[i] = assert(orch.spawn { prog, "100" }) end
      local r0 = orch.proc.reaper()
      -- One at a time, each waited for: the SIGCHLD records' ring (1,024)
      -- never overflows, which would make a walk; nor do two children
      -- reaped before their records were read share a slot of the table
      -- of those (pid %% 4096), where the second replaces the first and
      -- the first's record makes a walk: in rounds of 50 that happened
      -- under ASan on a busy machine, whose other processes' forks spread
      -- a round's pids over more than 4,096.
      local n = 0
      for i = 1, 2100 do
        assert(ps[i]:kill("KILL"))
        if select(2, ps[i]:wait()) == "KILL" then n = n + 1 end
      end
      local r = orch.proc.reaper()
      -- Exits reaped by a late walk (one a second at most) are counted
      -- apart, in walk_exits; walks counts the others.
      print(r0.mode, r0.waits, r0.pidfds, n, r.connector_exits - r0.connector_exits + r.walk_exits - r0.walk_exits,
        r.walks - r0.walks, r.events - r0.events <= 2100, r.overflows, r.children)
      -- The late walk waits a second more for each 1,000 children.
      print(r0.late_ms, r.late_ms)
    ]], SLEEP))
    if CONNECTOR then
      assert.are.equal("connector\t0\t0\t2100\t2100\t0\ttrue\t0\t0\n2000\t1000\n", out)
    else
      -- The fallback: every child reported and reaped, no overflow.
      assert.matches("^" .. FALLBACK .. "\t%d+\t%d+\t2100\t%d+\t%d+\ttrue\t0\t0\n2000\t1000\n$", out)
    end
    assert.are.equal(0, h.zombies())
  end)

  it("through the proc connector with events lost (a receive buffer of a few events: ENOBUFS): 300 children that end at once are all reaped, by the walk the overflow calls for", function()
    local out = run_ok(string.format([[
      local prog = %q
      local r0 = orch.proc.reaper()
      local ps = {}
      for i = 1, 300 do ps[i] = assert(orch.spawn { prog, "100" }) end
      -- Killed, and all ended, while nothing reads the socket (no yield).
      for i = 1, 300 do assert(ps[i]:kill("KILL")) end
%s
      local n = 0
      for i = 1, 300 do if select(2, ps[i]:wait()) == "KILL" then n = n + 1 end end
      local r = orch.proc.reaper()
      print(r.mode, n, r.overflows - r0.overflows > 0, r.walks - r0.walks > 0, r.children)
    ]], SLEEP, until_zombies(300)), { ORCH_REAPER_RCVBUF = "1" })
    if CONNECTOR then
      assert.are.equal("connector\t300\ttrue\ttrue\t0\n", out)
    else
      -- No connector, no overflow: the fallback reaps all 300.
      assert.matches("^" .. FALLBACK .. "\t300\tfalse\t%a+\t0\n$", out)
    end
    assert.are.equal(0, h.zombies())
  end)

  it("through the proc connector: a child whose leader thread ended first is reaped when its last thread ends (its event came before it could be waited for)", function()
    local out = run_ok(string.format([[
      local prog = %q
      local r0 = orch.proc.reaper()
      local p = assert(orch.spawn { prog, "leader", "7", stdin = "pipe" })
      -- The leader's exit event comes; the process lives on. (Without the
      -- connector no event comes: the leader's end is not the process's.)
      for _ = 1, 3000 do
        if r0.mode ~= "connector" or orch.proc.reaper().events > r0.events then break end
        orch.sleep(0.01)
      end
      local r1 = orch.proc.reaper()
      print("leader", r1.events - r0.events, p:status(), r1.children)
      p.stdin:close()
      local code = p:wait()
      local r = orch.proc.reaper()
      print("ended", code, r.connector_exits - r0.connector_exits, r.walks - r0.walks, r.children)
    ]], h.progs .. "/prog_proc"))
    if CONNECTOR then
      assert.are.equal("leader\t1\trunning\t1\nended\t7\t1\t0\t0\n", out)
    else
      -- The fallback: running until its last thread ends, then reaped.
      assert.matches("^leader\t0\trunning\t1\nended\t7\t0\t%d+\t0\n$", out)
    end
  end)

  it("through the proc connector: an exit's SIGCHLD does not wake the loop (the exit's event does, and reads the signal's record); a stop's still does, and so does every signal after it", function()
    local out = run_ok(string.format([[
      local prog = %q
      local r0 = orch.proc.reaper()
      local ps = {}
      for i = 1, 50 do ps[i] = assert(orch.spawn { prog, "sleep", "100" }) end
      for i = 1, 50 do assert(ps[i]:kill("KILL")) end
      for i = 1, 50 do assert(select(2, ps[i]:wait()) == "KILL") end
      local r = orch.proc.reaper()
      print(r.mode, r.signals - r0.signals, r.connector_exits - r0.connector_exits, r.walks - r0.walks)
      local p = assert(orch.spawn { prog, "sleep", "100" })
      local stopped
      p:on_stop(function(sig) stopped = sig end)
      assert(p:kill("STOP"))
      for _ = 1, 3000 do if stopped then break end orch.sleep(0.01) end
      local r2 = orch.proc.reaper()
      print("stop", stopped, r2.signals > r.signals, r2.walks > r.walks)
      assert(p:kill("KILL"))
      local _, sig = p:wait()
      -- Its signal's callback may come a loop turn after its event's.
      for _ = 1, 3000 do if orch.proc.reaper().signals > r2.signals then break end orch.sleep(0.01) end
      print("exit", sig, orch.proc.reaper().signals > r2.signals)
    ]], prog))
    if CONNECTOR then
      assert.are.equal("connector\t0\t50\t0\nstop\tSTOP\ttrue\ttrue\nexit\tKILL\ttrue\n", out)
    else
      -- The ring (or pidfds): each exit's signal goes through libuv's handler.
      local mode, n = out:match("^(%a+)\t(%d+)\t0\t0\nstop\tSTOP\ttrue\ttrue\nexit\tKILL\ttrue\n$")
      assert.are.equal(FALLBACK, mode, out)
      assert.is_true(tonumber(n) > 0, out)
    end
  end)

  it("through the proc connector: an exit only on_exit handlers hear of is taken first, its zombie released after the loop turn's tasks; one orch signalled, or one a task waits for, is reaped at once", function()
    local out = run_ok(string.format([[
      local prog = %q
      local function state(pid)
        local f = io.open("/proc/" .. pid .. "/stat")
        if not f then return "gone" end
        local st = f:read("a"):match("^%%d+ %%b() (%%a)")
        f:close()
        return st
      end
      local function kill_from_outside(pid)
        assert(orch.spawn { "kill", "-KILL", tostring(pid) }):wait()
      end
      local orphans = 0
      local watch = orch.proc.on_orphan_exit(function() orphans = orphans + 1 end)
      -- Only a handler: a zombie while it runs (a restart it spawned is
      -- cloned first), gone a loop turn later.
      local p = assert(orch.spawn { prog, "sleep", "100" })
      local seen, after, new
      p:on_exit(function()
        seen = state(p.pid)
        new = assert(orch.spawn { prog, "sleep", "100" })
        orch.sleep(0)
        after = state(p.pid)
      end)
      kill_from_outside(p.pid)
      for _ = 1, 3000 do if after then break end orch.sleep(0.01) end
      print("handler", seen, after, state(new.pid) ~= "gone" and state(new.pid) ~= "Z")
      -- Signalled by orch: reaped at once.
      local q = assert(orch.spawn { prog, "sleep", "100" })
      local qseen
      q:on_exit(function() qseen = state(q.pid) end)
      assert(q:kill("KILL"))
      for _ = 1, 3000 do if qseen then break end orch.sleep(0.01) end
      print("signalled", qseen)
      -- A task waits for it: reaped before the task goes on, whether the
      -- wait began before its exit or after the exit was taken for the
      -- handler alone (a zombie until the loop turn's end: the wait reaps
      -- it; its exit came while the task waited for kill, 13:00 landing).
      local w = assert(orch.spawn { prog, "sleep", "100" })
      w:on_exit(function() end)
      kill_from_outside(w.pid)
      w:wait()
      local w2 = assert(orch.spawn { prog, "sleep", "100" })
      local w2seen, w2after
      w2:on_exit(function()
        w2seen = state(w2.pid)
        w2:wait()                 -- in the same loop turn as the exit
        w2after = state(w2.pid)
      end)
      kill_from_outside(w2.pid)
      for _ = 1, 3000 do if w2after then break end orch.sleep(0.01) end
      print("waited", state(w.pid), w2seen, w2after)
      assert(new:kill("KILL"))
      new:wait()
      watch:stop()
      print("orphans", orphans)
    ]], prog))
    -- The ring and pidfds reap at once.
    local first = CONNECTOR and "handler\tZ\tgone\ttrue\n" or "handler\tgone\tgone\ttrue\n"
    local w2 = CONNECTOR and "Z" or "gone"
    assert.are.equal(first .. "signalled\tgone\nwaited\tgone\t" .. w2 .. "\tgone\norphans\t0\n", out)
    assert.are.equal(0, h.zombies())
  end)

  it("an exec from an on_exit handler takes no zombie along: an exit taken and not released yet is reaped before it", function()
    local out = run_ok(string.format([[
      local prog = %q
      local p = assert(orch.spawn { prog, "sleep", "100" })
      p:on_exit(function()
        local proc = "/proc/" .. p.pid
        orch.exec("sh", { "-c", "if [ -e " .. proc .. " ]; then echo left $(cut -d' ' -f3 " .. proc .. "/stat); else echo released; fi" })
      end)
      assert(orch.spawn { "kill", "-KILL", tostring(p.pid) }):wait()
      orch.sleep(30)
    ]], prog))
    assert.are.equal("released\n", out)
  end)

  it("through the proc connector: 500 children only on_exit handlers hear of, killed at once from outside: every exit seen, every zombie released", function()
    local out = run_ok(string.format([[
      local prog = %q
      local n, ps, seen = 500, {}, 0
      ps[1] = assert(orch.spawn { prog, "100", pgroup = true })
      for i = 2, n do ps[i] = assert(orch.spawn { prog, "100", pgroup = ps[1].pid }) end
      for i = 1, n do ps[i]:on_exit(function(_, sig) if sig == "KILL" then seen = seen + 1 end end) end
      assert(orch.spawn { "kill", "-KILL", "--", "-" .. ps[1].pid }):wait()
      for _ = 1, 6000 do if seen == n then break end orch.sleep(0.01) end
      orch.sleep(0)
      local f = io.open("/proc/self/task/" .. orch.getpid() .. "/children")
      local zombies = 0
      for pid in f:read("a"):gmatch("%%d+") do
        local st = io.open("/proc/" .. pid .. "/stat")
        if st and st:read("a"):match("^%%d+ %%b() Z") then zombies = zombies + 1 end
        if st then st:close() end
      end
      f:close()
      print(seen, orch.proc.reaper().children, zombies)
    ]], SLEEP))
    assert.are.equal("500\t0\t0\n", out)
  end)

  it("through the proc connector: other processes' exits on the machine never reach orch (its socket filter drops them in the kernel)", function()
    local dir = h.tmpdir()
    local script = h.script(string.format([[
      local prog, dir = %q, %q
      local r0 = orch.proc.reaper()
      io.open(dir .. "/ready", "w"):close()
      while not io.open(dir .. "/done") do orch.sleep(0.01) end
      local r1 = orch.proc.reaper()
      local p = assert(orch.spawn { prog, "sleep", "100" })
      p:kill("KILL")
      p:wait()
      local r = orch.proc.reaper()
      print(r.mode, r1.events - r0.events, r.connector_exits - r1.connector_exits)
    ]], prog, dir))
    h.run(function()
      local p = assert(orch.spawn { h.bin, "run", script, stdout = dir .. "/out", stderr = dir .. "/err" })
      eventually(function() return io.open(dir .. "/ready") ~= nil end, "the script waits")
      -- 200 exits of this process's shell's children, and an orphan's.
      h.sh("for i in $(seq 200); do /bin/true; done; sh -c '/bin/true & exit 0'")
      io.open(dir .. "/done", "w"):close()
      assert.are.same({ 0, nil }, { p:wait() })
    end, 60)
    -- (The fallback hears of no event either, and reaps its child.)
    assert.are.equal((CONNECTOR and "connector\t0\t1\n" or FALLBACK .. "\t0\t0\n"), h.slurp(dir .. "/out"), h.slurp(dir .. "/err"))
  end)

  it("an orch.fork child reaps its own children through a connector socket of its own, and leaves the parent's children alone", function()
    -- The fallback: the fork child's own ring (or pidfds).
    local way = CONNECTOR and "connector" or FALLBACK
    assert_fork(way, fork_reaps(way .. "_exits"))
  end)

  -- Whether orphans may be adopted (orch is pid 1 or has been a subreaper:
  -- then every SIGCHLD walks) is read once, not at each SIGCHLD: set when
  -- orch makes itself a subreaper, and read again in a fork child, which is
  -- none. (A wait may end before its SIGCHLD is read: walks() waits for the
  -- walk it made or the late walk one explained without a walk arms.)
  it("a subreaper walks at each SIGCHLD; its orch.fork child, no subreaper, reaps its own children without a walk", function()
    local out = run_ok(KILLED .. string.format([[
      local prog = %q
      local function walks(r0)
        local r
        repeat
          orch.sleep(0.05)
          r = orch.proc.reaper()
        until r.walks > r0.walks or r.late_walks > r0.late_walks
        return r.walks - r0.walks
      end
      local function one()
        local p = assert(orch.spawn { prog, "sleep", "100" })
        local r0 = orch.proc.reaper()
        assert(p:kill("KILL"))
        p:wait()
        return walks(r0)
      end
      print("before", one())
      assert(orch.proc.subreaper(true))
      print("subreaper", one() > 0)
      local f = assert(orch.fork(function()
        local c0 = orch.proc.reaper()
        local n = killed(20)
        io.stdout:write(string.format("child %%s %%d %%d\n", tostring(orch.proc.subreaper()), n, walks(c0)))
        io.stdout:flush()
        orch.exit(0)
      end))
      assert(f:wait() == 0)
      assert(orch.proc.subreaper(false))
    ]], prog))
    assert.are.equal("before\t0\nsubreaper\ttrue\nchild false 20 0\n", out)
  end)

  it("at a low fd limit, through the proc connector: 300 children, no fd each, no walk, all reaped", function()
    local way = CONNECTOR and "connector" or FALLBACK
    assert_low_fd(way, low_fd_reaps(way .. "_exits"))
  end)

  it("leaves the proc connector for the ring (or pidfds) where the kernel refuses it: without CAP_NET_ADMIN, in another network or user namespace", function()
    local script = h.script(string.format([[
      local prog = %q
      local r0 = orch.proc.reaper()
      local ps = {}
      for i = 1, 20 do ps[i] = assert(orch.spawn { prog, "sleep", "100" }) end
      for i = 1, 20 do ps[i]:kill("KILL") end
      local n = 0
      for i = 1, 20 do if select(2, ps[i]:wait()) == "KILL" then n = n + 1 end end
      local r = orch.proc.reaper()
      print(r.mode, n, r.events, r.children)
    ]], prog))
    -- (Where the kernel refuses it to orch already, as it is.)
    local ways = CONNECTOR and { "setpriv --bounding-set -net_admin", "unshare --net" } or { "" }
    if CONNECTOR and select(2, h.sh("unshare --user --map-root-user true 2>/dev/null")) then
      ways[#ways + 1] = "unshare --user --map-root-user"
    end
    for _, way in ipairs(ways) do
      local out = h.sh(string.format("%s %s run %s 2>&1", way, h.shquote(h.bin), h.shquote(script)))
      assert.are.equal((RING and "ring" or "pidfd") .. "\t20\t0\t0", out, way)
    end
  end)

  it("reaps an orphan that ends while services end, and reports it", function()
    h.run(function()
      assert(orch.proc.subreaper(true))
      local got = {}
      local watch = orch.proc.on_orphan_exit(function(pid, code, sig) got[pid] = sig or code end)
      -- A double fork: the daemon is reparented to this process.
      local d = assert(orch.spawn { prog, "daemon", "100", "0", stdout = "pipe" })
      local orphan = tonumber(d.stdout:read_line())
      d.stdout:close()
      assert.are.same({ 0, nil }, { d:wait() })
      eventually(function() return orch.proc.info(orphan).ppid == orch.getpid() end, "daemon adopted")
      local ps = {}
      for i = 1, 50 do ps[i] = assert(orch.spawn { prog, "sleep", "100" }) end
      assert.is_true(orch.kill(orphan, "KILL"))
      for i = 1, 50 do assert.is_true(ps[i]:kill("KILL")) end
      for i = 1, 50 do assert.are.same({ nil, "KILL" }, { ps[i]:wait() }) end
      eventually(function() return got[orphan] end, "the orphan's exit reported")
      assert.are.equal("KILL", got[orphan])
      eventually(function() return h.zombies() == 0 end, "no zombie left")
      watch:stop()
      assert(orch.proc.subreaper(false))
    end, 60)
  end)

  it("at a low fd limit, through the ring (ORCH_REAPER=ring): 300 children, no fd each, no walk, all reaped", function()
    local way = RING and "ring" or "pidfd"
    assert_low_fd(way, low_fd_reaps(way .. "_exits", "ring"))
  end)

  it("at a low fd limit (ORCH_REAPER=pidfd): once a child gets no pidfd none has one, a spawn at a full fd table starts, all are reaped, and pidfds come back once few children are left", function()
    local dir = h.tmpdir()
    local script = h.script(string.format([[
      local orch = require "orch"
      local function pidfds()
        local p = io.popen("ls -l /proc/" .. orch.getpid() .. "/fd | grep -c pidfd")
        local n = tonumber(p:read("a")) or 0
        p:close()
        return n
      end
      local ps = {}
      for i = 1, 40 do ps[i] = assert(orch.spawn { %q, "sleep", "100" }) end
      print("pidfds40", pidfds(), orch.proc.reaper().pidfds)
      for i = 41, 200 do ps[i] = assert(orch.spawn { %q, "sleep", "100" }) end
      print("pidfds", pidfds(), orch.proc.reaper().pidfds)
      -- Every fd taken: clone3 cannot make a pidfd (EMFILE).
      local held = {}
      while true do
        local f = io.open("/dev/null")
        if not f then break end
        held[#held + 1] = f
      end
      local extra, err = orch.spawn { %q, "sleep", "100" }
      print("full", #held > 0 and extra and "started" or tostring(err))
      for _, f in ipairs(held) do f:close() end
      if extra then ps[#ps + 1] = extra end
      for _, p in ipairs(ps) do p:kill("KILL") end
      local n = 0
      for _, p in ipairs(ps) do
        local _, sig = p:wait()
        if sig == "KILL" then n = n + 1 end
      end
      print("reported", n, #ps, pidfds())
      -- No child left: the next one has a pidfd again.
      local again = assert(orch.spawn { %q, "sleep", "100" })
      print("again", pidfds(), orch.proc.reaper().pidfds)
      again:kill("KILL")
      again:wait()
    ]], prog, prog, prog, prog))
    local out = h.sh(string.format("cd %s && ORCH_REAPER=pidfd prlimit --nofile=200:200 %s run %s 2>&1",
      h.shquote(dir), h.shquote(h.bin), h.shquote(script)))
    -- 40 children fit under the quarter of 200: each has its pidfd.
    assert.matches("pidfds40\t40\t40", out, 1, true)
    -- Past it, one without a pidfd makes every SIGCHLD walk: the others'
    -- pidfds would save nothing and cost every spawn, so none is kept.
    assert.matches("pidfds\t0\t0\n", out, 1, true)
    assert.matches("full\tstarted", out, 1, true)
    assert.matches("reported\t201\t201\t0", out, 1, true)
    assert.matches("again\t1\t1", out, 1, true)
  end)

  -- `orch run` of a supervisor of n services (`sleep 300`), each of its
  -- processes marked with a token of its own: the process, its directory
  -- (err: its stderr; up: made once every service runs) and the token.
  local function sup_run(n, name)
    local dir = h.tmpdir()
    local token = string.format("%s_%d_%d", name, orch.getpid(), os.time())
    local script = h.script(string.format([[
      local sup = require "orch.supervisor"
      sup.configure { runtime_dir = %q }
      for i = 1, %d do sup.service { name = "s" .. i, cmd = { %q, "sleep", "300" } } end
      sup.run()
      assert(sup.wait("all", "running", 60))
      io.open(%q, "w"):close()
    ]], dir, n, prog, dir .. "/up"))
    local p = assert(orch.spawn { h.bin, "run", script, stdout = "null", stderr = dir .. "/err",
      env = { ORCH_SPEC_RUN = token, ORCH_SOCKET = dir .. "/ctl.sock" } })
    return p, dir, token
  end

  it("a supervisor stopping on SIGTERM reaps every service that ends during its stop", function()
    h.run(function()
      local p, dir, token = sup_run(30, "reap")
      eventually(function() return io.open(dir .. "/up") ~= nil end, "30 services running", 60)
      eventually(function() return #h.leftovers(token) >= 30 end, "30 service processes")
      assert.is_true(p:kill("TERM"))
      assert.are.same({ 0, nil }, { p:wait() })
      local err = h.slurp(dir .. "/err")
      local stopped = 0
      for _ in err:gmatch("s%d+: stopped") do stopped = stopped + 1 end
      assert.are.equal(30, stopped, err)
      assert.are.same({}, h.leftovers(token))
    end, 90)
  end)

  -- Its fd holder is orch's too: orch's clean end waits until it is gone
  -- (it used to send the bye and a TERM and exit, the holder following a
  -- scheduler slice or more later: one process left right after orch's
  -- exit under load). Held stopped here, the holder cannot end by itself:
  -- orch kills it 5 s after the bye, then exits.
  it("a supervisor's clean end leaves no fd holder behind, even one that does not end by itself", function()
    h.run(function()
      local p, dir, token = sup_run(1, "reap_holder")
      local holder
      local ok, err = pcall(function()
        holder = eventually(function()
          for _, pid in ipairs(h.leftovers(token)) do
            local info = orch.proc.info(pid)
            if info and info.cmdline[2] == "fdholder" then return pid end
          end
        end, "the fd holder", 60)
        -- Stopped only once it is set up (TERM blocked for its
        -- signalfd): stopped earlier, its bye and its end are another test.
        eventually(function()
          local st = h.slurp("/proc/" .. holder .. "/status")
          local blk = st and st:match("SigBlk:%s*(%x+)")
          return blk and (tonumber(blk, 16) >> 14) & 1 == 1
        end, "the fd holder's TERM blocked", 60)
        assert(orch.kill(holder, "STOP"))
        assert.is_true(p:kill("TERM"))
        assert.are.same({ 0, nil }, { p:wait() })
        assert.is_false(h.alive(holder))
        assert.truthy(h.slurp(dir .. "/err"):find("the fd holder (pid " .. holder .. ") did not end within 5 s of its bye: killed", 1, true))
        assert.are.same({}, h.leftovers(token))
      end)
      h.end_run(p, token, ok, err, dir .. "/err")
    end, 90)
  end)
end)
