-- Processes: spawn, the Process object, reaping, fork, exec, run, /proc,
-- subreaper and orphans, daemonize, init mode. Real processes throughout.
local h = require "spec.helper"
local orch = h.orch

local prog = h.progs .. "/prog_proc"
local is_root = orch.proc.info(orch.getpid()).uid == 0

local eventually = h.eventually

local lines_of = h.lines

-- Children still tracked by this process (zombies included, read from
-- /proc: no helper process): none may be left after a test.
after_each(function()
  assert.are.same({}, h.children())
end)

describe("orch.spawn", function()
  it("runs a program and reports its exit code", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "exit", "0" })
      assert.is_true(math.type(p.pid) == "integer" and p.pid > 1)
      local code, sig = p:wait()
      assert.are.equal(0, code)
      assert.is_nil(sig)
      local p3 = assert(orch.spawn{ prog, "exit", 3 })   -- numbers become strings
      assert.are.same({ 3, nil }, { p3:wait() })
    end)
  end)

  it("reports a signal by name", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "raise", "15" })
      local code, sig = p:wait()
      assert.is_nil(code)
      assert.are.equal("TERM", sig)
      local q = assert(orch.spawn{ prog, "sleep", "100" })
      assert.is_true(q:kill("KILL"))
      assert.are.same({ nil, "KILL" }, { q:wait() })
    end)
  end)

  it("reads like os.execute in tostring and status", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "100" })
      assert.are.equal("orch.Process: pid=" .. p.pid .. " running", tostring(p))
      assert.is_true(p:running())
      assert.are.equal("running", p:status())
      p:kill("KILL")
      p:wait()
      assert.are.equal("orch.Process: pid=" .. p.pid .. " killed KILL", tostring(p))
      assert.is_false(p:running())
      assert.are.same({ "killed", nil, "KILL" }, { p:status() })
      local q = assert(orch.spawn{ prog, "exit", "7" })
      q:wait()
      assert.are.equal("orch.Process: pid=" .. q.pid .. " exited 7", tostring(q))
      assert.are.same({ "exited", 7, nil }, { q:status() })
    end)
  end)

  it("looks programs up in PATH, or not, or in a given path", function()
    h.run(function()
      assert.are.same({ 0, nil }, { assert(orch.spawn{ "true" }):wait() })
      assert.are.same({ nil, "spawn: no such file: true", "ENOENT" }, { orch.spawn{ "true", path = false } })
      local bindir = h.progs
      assert.are.same({ 5, nil }, { assert(orch.spawn{ "prog_proc", "exit", "5", path = "/nonexistent:" .. bindir }):wait() })
      assert.are.same({ nil, "spawn: no such file: prog_proc", "ENOENT" }, { orch.spawn{ "prog_proc", "exit", "5" } })
      -- a PATH given in env is the one searched
      assert.are.same({ 6, nil }, { assert(orch.spawn{ "prog_proc", "exit", "6", env = { PATH = bindir } }):wait() })
    end)
  end)

  it("fails clearly for a missing or non-executable program and keeps going", function()
    local d = h.tmpdir()
    local f = assert(io.open(d .. "/noexec", "w"))
    f:write("#!/bin/sh\nexit 0\n")
    f:close()
    h.run(function()
      assert.are.same({ nil, "spawn: no such file: nosuchprog", "ENOENT" }, { orch.spawn{ "nosuchprog" } })
      assert.are.same({ nil, "spawn: no such file: /no/such/prog", "ENOENT" }, { orch.spawn{ "/no/such/prog" } })
      -- no x bit: even root may not execute it
      assert.are.same({ nil, "spawn: permission denied: " .. d .. "/noexec", "EACCES" }, { orch.spawn{ d .. "/noexec" } })
      assert.are.same({ 0, nil }, { assert(orch.spawn{ "true" }):wait() })
    end)
  end)

  it("merges or replaces the environment", function()
    h.run(function()
      local code, out = orch.run{ "sh", "-c", 'echo "$ORCH_A|$ORCH_B|${HOME+set}"', env = { ORCH_A = "a", ORCH_B = 42 } }
      assert.are.equal(0, code)
      assert.are.equal("a|42|" .. (os.getenv("HOME") and "set" or "") .. "\n", out)
      code, out = orch.run{ "/usr/bin/env", env = { ONLY = "1" }, env_mode = "replace" }
      assert.are.equal("ONLY=1\n", out)
      code, out = orch.run{ "/usr/bin/env", env = {}, env_mode = "replace" }
      assert.are.equal("", out)
      -- false removes a variable in merge mode
      code, out = orch.run{ "sh", "-c", 'echo "${HOME-unset}"', env = { HOME = false } }
      assert.are.equal("unset\n", out)
    end)
  end)

  it("overrides an inherited variable once, and env_mode = replace alone empties the environment", function()
    h.run(function()
      local code, out = orch.run{ "/usr/bin/env", env = { HOME = "/elsewhere", ORCH_NEW = 7 } }
      assert.are.equal(0, code)
      local homes, new = {}, 0
      for line in out:gmatch("[^\n]+") do
        if line:match("^HOME=") then homes[#homes + 1] = line end
        if line == "ORCH_NEW=7" then new = new + 1 end
      end
      assert.are.same({ "HOME=/elsewhere" }, homes)
      assert.are.equal(1, new)
      -- every other inherited variable is still there
      assert.matches("\nPATH=", "\n" .. out)
      code, out = orch.run{ "/usr/bin/env", env_mode = "replace" }
      assert.are.equal("", out)
    end)
  end)

  it("leaves almost no Lua garbage per spawn (argv and envp live in C memory)", function()
    local per_spawn = h.run(function()
      local N, ps = 50, {}
      local opts = {}
      for i = 1, N do
        opts[i] = { "/bin/sh", "-c", "exit 0", "arg", i, env = { A = "1", B = i, HOME = false, C = "three" } }
      end
      collectgarbage() collectgarbage()
      collectgarbage("stop")
      local before = collectgarbage("count")
      for i = 1, N do ps[i] = assert(orch.spawn(opts[i])) end
      local allocated = collectgarbage("count") - before
      collectgarbage("restart")
      collectgarbage() collectgarbage()
      local live = collectgarbage("count") - before
      for i = 1, N do ps[i]:wait() end
      return (allocated - live) * 1024 / N
    end)
    -- Was about 690 bytes (argv/envp userdata, "K=V" strings, an anchor
    -- table); what is left is the string made for the numeric argument.
    assert.is_true(per_spawn < 128, ("%.0f bytes of garbage per spawn"):format(per_spawn))
  end)

  it("runs in cwd, and says so when cwd is missing", function()
    local d = h.tmpdir()
    h.run(function()
      local code, out = orch.run{ "pwd", cwd = d }
      assert.are.equal(d .. "\n", out)
      assert.are.same({ nil, "spawn: chdir /nonexistent/dir: no such file or directory", "ENOENT" },
        { orch.spawn{ "pwd", cwd = "/nonexistent/dir" } })
    end)
  end)

  it("switches user and group by name or number", function()
    h.run(function()
      if is_root then
        local code, out = orch.run{ prog, "ids", uid = "nobody" }
        assert.are.equal(0, code)
        local ids = lines_of(out)[1]
        assert.matches("^65534 65534", ids)
        assert.is_nil(ids:match(" 0$") or ids:match(" 0 "))   -- root's groups are gone
        code, out = orch.run{ prog, "ids", uid = 65534, gid = "nogroup" }
        assert.matches("^65534 65534", out)
        code, out = orch.run{ prog, "ids", gid = 65534 }
        assert.matches("^0 65534 65534\n$", out)
      else
        assert.are.same({ nil, "spawn: setuid 0: operation not permitted", "EPERM" },
          { orch.spawn{ prog, "ids", uid = 0, gid = 0 } })
      end
      assert.are.same({ nil, "spawn: unknown user 'no_such_user_x'", "ENOENT" },
        { orch.spawn{ "true", uid = "no_such_user_x" } })
      assert.are.same({ nil, "spawn: unknown group 'no_such_group_x'", "ENOENT" },
        { orch.spawn{ "true", gid = "no_such_group_x" } })
      assert.are.same({ nil, "spawn: uid 1234567 has no passwd entry: give gid too", "EINVAL" },
        { orch.spawn{ "true", uid = 1234567 } })
    end)
  end)

  it("gives the child /dev/null, pipes, files, streams and fds as stdio", function()
    local d = h.tmpdir()
    h.run(function()
      -- null: stdin reads EOF, output vanishes
      local p = assert(orch.spawn{ "cat", stdin = "null", stdout = "null" })
      assert.are.same({ 0, nil }, { p:wait() })
      -- pipes both ways
      p = assert(orch.spawn{ "cat", stdin = "pipe", stdout = "pipe" })
      assert.is_true(p.stdin:write("through cat\n"))
      p.stdin:close()
      assert.are.equal("through cat\n", p.stdout:read_all())
      p:wait()
      p.stdout:close()
      assert.is_nil(p.stderr)
      -- a path is opened for appending
      local log = d .. "/out.log"
      for i = 1, 2 do assert(orch.spawn{ "echo", "line" .. i, stdout = log }):wait() end
      assert.are.equal("line1\nline2\n", h.slurp(log))
      -- stdin from a file
      local code, out = orch.run{ "cat", stdin = log }
      assert.are.equal("line1\nline2\n", out)
      -- stderr = "stdout" merges them
      p = assert(orch.spawn{ "sh", "-c", "echo out; echo err >&2", stdout = "pipe", stderr = "stdout" })
      assert.are.equal("out\nerr\n", p.stdout:read_all())
      p:wait()
      p.stdout:close()
      -- an existing stream: the write end of orch.pipe()
      local r, w = assert(orch.pipe())
      p = assert(orch.spawn{ "echo", "via pipe", stdout = w })
      w:close()
      assert.are.equal("via pipe\n", r:read_all())
      r:close()
      p:wait()
      -- an fd number
      local r2, w2 = assert(orch.pipe())
      p = assert(orch.spawn{ "echo", "via fd", stdout = w2:fd() })
      w2:close()
      assert.are.equal("via fd\n", r2:read_all())
      r2:close()
      p:wait()
      assert.are.same({ nil, "spawn: stdout: bad file descriptor 999", "EBADF" }, { orch.spawn{ "true", stdout = 999 } })
      assert.are.same({ nil, "spawn: stdout: cannot open /nonexistent/x.log: no such file or directory", "ENOENT" },
        { orch.spawn{ "true", stdout = "/nonexistent/x.log" } })
    end)
  end)

  it("hands a stream that orch made non-blocking to the child as a blocking fd", function()
    h.run(function()
      local r, w = assert(orch.pipe())
      w:write("x")                -- activates the stream: the fd is now O_NONBLOCK in orch
      local code, out = orch.run{ prog, "fdflags", "0", stdin = r }
      assert.are.equal("block\n", out)
      r:close(); w:close()
    end)
  end)

  it("passes extra fds explicitly and nothing else", function()
    h.run(function()
      local code, out = orch.run{ prog, "fds" }
      assert.are.same({ "0", "1", "2" }, lines_of(out))
      local r, w = assert(orch.pipe())
      code, out = orch.run{ prog, "fds", fds = { [3] = w } }
      assert.are.same({ "0", "1", "2", "3" }, lines_of(out))
      local p = assert(orch.spawn{ prog, "write", "3", "ready\n", fds = { [3] = w } })
      w:close()
      assert.are.equal("ready\n", r:read_line() .. "\n")
      assert.are.same({ 0, nil }, { p:wait() })
      r:close()
    end)
  end)

  it("proc.info tells how a zombie ended (for a watcher that is not its parent)", function()
    h.run(function()
      -- Two grandchildren end while their parent (sleep, after exec) never
      -- reaps them: one exits 7, one is killed by TERM.
      local p = assert(orch.spawn{ "sh", "-c",
        'sh -c "sleep 0.1; exit 7" & echo $!; sh -c "sleep 0.1; kill -TERM \\$\\$" & echo $!; exec sleep 100',
        stdout = "pipe" })
      local a, b = tonumber(p.stdout:read_line()), tonumber(p.stdout:read_line())
      local ia = eventually(function() local i = orch.proc.info(a) return i and i.state == "Z" and i end, "a zombie")
      local ib = eventually(function() local i = orch.proc.info(b) return i and i.state == "Z" and i end, "b zombie")
      assert.are.same({ 7, nil }, { ia.exit_code, ia.exit_signal })
      assert.are.same({ nil, "TERM" }, { ib.exit_code, ib.exit_signal })
      -- A live process has neither.
      local me = orch.proc.info(orch.getpid())
      assert.is_nil(me.exit_code)
      assert.is_nil(me.exit_signal)
      p:kill("KILL"); p:wait()
      p.stdout:close()
    end)
  end)

  it("proc.stat reads /proc/PID/stat alone: the fields of proc.info but uid, cmdline and the exit status", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "100", pgroup = true })
      eventually(function() return orch.proc.info(p.pid).name == "prog_proc" end, "exec")
      -- Stopped, its state cannot change between the two reads (a running
      -- process may be R in one and S in the other).
      local stopped = false
      p:on_stop(function() stopped = true end)
      p:kill("STOP")
      eventually(function() return stopped end, "stopped")
      local info, st, start = orch.proc.info(p.pid), orch.proc.stat(p.pid), orch.proc.start_time(p.pid)
      assert.are.equal("T", st.state)
      p:kill("KILL"); p:wait()
      for _, k in ipairs { "pid", "state", "ppid", "pgid", "sid", "name", "start_time", "threads" } do
        assert.are.equal(info[k], st[k], k)
      end
      assert.are.equal(p.pid, st.pgid)
      assert.are.equal(orch.getpid(), st.ppid)
      assert.are.equal(start, st.start_time)
      assert.are.equal("integer", math.type(st.rss))
      assert.are.equal("number", type(st.cpu))
      assert.is_nil(st.uid)
      assert.is_nil(st.cmdline)
      local me = orch.proc.stat(orch.getpid())
      assert.is_true(me.rss > 0 and me.cpu > 0)
      -- A table to fill instead of a new one: the same fields, other keys kept.
      local into = { mine = 1 }
      assert.are.equal(into, orch.proc.stat(orch.getpid(), into))
      assert.are.equal(1, into.mine)
      for k, v in pairs(me) do
        if k ~= "rss" and k ~= "cpu" and k ~= "state" then assert.are.equal(v, into[k], k) end
      end
      assert.is_true(into.rss > 0 and into.cpu >= me.cpu)
      -- Reaped: gone.
      assert.are.same({ nil, "proc.stat: no such process", "ESRCH" }, { orch.proc.stat(p.pid) })
    end)
  end)

  it("starts a process group or session on request", function()
    h.run(function()
      local mine = orch.proc.info(orch.getpid())
      local p = assert(orch.spawn{ prog, "sleep", "100" })
      eventually(function() return orch.proc.info(p.pid).name == "prog_proc" end, "exec")
      assert.are.equal(mine.pgid, orch.proc.info(p.pid).pgid)
      p:kill("KILL"); p:wait()
      p = assert(orch.spawn{ prog, "sleep", "100", pgroup = true })
      local info = orch.proc.info(p.pid)
      assert.are.equal(p.pid, info.pgid)
      assert.are.equal(mine.sid, info.sid)
      p:kill("KILL"); p:wait()
      p = assert(orch.spawn{ prog, "sleep", "100", setsid = true })
      info = orch.proc.info(p.pid)
      assert.are.equal(p.pid, info.pgid)
      assert.are.equal(p.pid, info.sid)
      p:kill("KILL"); p:wait()
    end)
  end)

  it("applies rlimits and umask", function()
    h.run(function()
      local code, out = orch.run{ prog, "rlimit", "nofile", rlimits = { nofile = 77 } }
      assert.are.equal("77 77\n", out)
      code, out = orch.run{ prog, "rlimit", "nofile", rlimits = { nofile = { 50, 60 } } }
      assert.are.equal("50 60\n", out)
      code, out = orch.run{ prog, "rlimit", "core", rlimits = { core = 0 } }
      assert.are.equal("0 0\n", out)
      code, out = orch.run{ prog, "rlimit", "cpu", rlimits = { cpu = "unlimited" } }
      assert.are.equal("inf inf\n", out)
      code, out = orch.run{ prog, "umask", umask = 0x12 }   -- 0o022
      assert.are.equal("022\n", out)
      code, out = orch.run{ prog, "umask", umask = 0x3f }   -- 0o077
      assert.are.equal("077\n", out)
    end)
  end)

  it("starts children with default signal dispositions and nothing blocked", function()
    h.run(function()
      assert(orch.signal.ignore("USR1"))
      local handler = orch.signal.on("USR2", function() end)
      local code, out = orch.run{ prog, "sigs" }
      handler:stop()
      assert(orch.signal.default("USR1"))
      assert.are.equal("0000000000000000 0000000000000000\n", out)
    end)
  end)
end)

describe("orch.Process", function()
  it("lets several tasks wait for one process", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "0.2" })
      local tasks = {}
      for i = 1, 5 do tasks[i] = orch.task(function() return p:wait() end) end
      for i = 1, 5 do assert.are.same({ 0, nil }, { tasks[i]:join() }) end
      assert.are.same({ 0, nil }, { p:wait() })   -- and again, after the fact
    end)
  end)

  it("times a wait out, and a cancelled waiter does not disturb the others", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "100" })
      assert.are.same({ nil, "wait: timed out", "ETIMEDOUT" }, { p:wait(0.05) })
      local t1 = orch.task(function() return p:wait() end)
      local t2 = orch.task(function() return p:wait() end)
      orch.sleep(0)
      t1:cancel()
      p:kill("KILL")
      assert.are.same({ nil, "KILL" }, { t2:join() })
    end)
  end)

  it("refuses to wait outside a task", function()
    local p
    h.run(function() p = assert(orch.spawn{ prog, "exit", "0" }); p:wait() end)
    assert.has_error(function() p:wait() end, "wait: must be called from a task")
  end)

  it("runs on_exit handlers as tasks, also when added after the exit", function()
    h.run(function()
      local seen = {}
      local p = assert(orch.spawn{ prog, "exit", "4" })
      assert.are.equal(p, p:on_exit(function(code, sig)
        assert.is_not_nil(orch.current())
        seen[#seen + 1] = { code, sig }
      end))
      p:wait()
      p:on_exit(function(code, sig) seen[#seen + 1] = { code, sig, "late" } end)
      eventually(function() return #seen == 2 end, "on_exit")
      assert.are.same({ { 4, nil }, { 4, nil, "late" } }, seen)
      local q = assert(orch.spawn{ prog, "raise", "9" })
      local got
      q:on_exit(function(code, sig) got = { code, sig } end)
      q:wait()
      eventually(function() return got end, "on_exit after a signal")
      assert.are.same({ nil, "KILL" }, got)
    end)
  end)

  it("runs one, two or three on_exit and on_stop handlers of a live process, in the order added", function()
    h.run(function()
      -- The first handler is kept alone and a second one makes a list: each
      -- count goes through its own path.
      for n = 1, 3 do
        local seen, stops = {}, {}
        local p = assert(orch.spawn{ prog, "sleep", "100" })
        for i = 1, n do
          p:on_exit(function(code, sig) seen[#seen + 1] = { i, code, sig } end)
          p:on_stop(function(sig) stops[#stops + 1] = { i, sig } end)
        end
        p:kill("STOP")
        eventually(function() return #stops == n end, "on_stop x" .. n)
        p:kill("KILL")
        p:wait()
        eventually(function() return #seen == n end, "on_exit x" .. n)
        local want_exit, want_stop = {}, {}
        for i = 1, n do
          want_exit[i] = { i, nil, "KILL" }
          want_stop[i] = { i, "STOP" }
        end
        assert.are.same(want_exit, seen)
        table.sort(stops, function(a, b) return a[1] < b[1] end)
        assert.are.same(want_stop, stops)
      end
    end)
  end)

  it("never signals a reaped pid", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "exit", "0" })
      p:wait()
      assert.are.same({ nil, "kill: process has exited", "ESRCH" }, { p:kill("TERM") })
      assert.are.same({ nil, "kill: process has exited", "ESRCH" }, { p:kill("TERM", { group = true }) })
    end)
  end)

  it("kills a whole group, grandchildren included", function()
    h.run(function()
      assert(orch.proc.subreaper(true))
      local orphans = {}
      local watch = orch.proc.on_orphan_exit(function(pid, code, sig) orphans[pid] = sig or code end)
      local p = assert(orch.spawn{ "sh", "-c", prog .. " sleep 100 & " .. prog .. " sleep 100 & wait", pgroup = true })
      local kids
      eventually(function()
        local f = io.open("/proc/" .. p.pid .. "/task/" .. p.pid .. "/children")
        kids = lines_of((f:read("a"):gsub(" ", "\n")))
        f:close()
        return #kids == 2
      end, "two grandchildren")
      for _, k in ipairs(kids) do assert.are.equal(p.pid, orch.proc.info(tonumber(k)).pgid) end
      local plain = assert(orch.spawn{ prog, "sleep", "100" })
      assert.are.same({ nil, "kill: process " .. plain.pid .. " does not lead a process group", "EINVAL" },
        { plain:kill("TERM", { group = true }) })
      plain:kill("KILL")
      plain:wait()
      assert.is_true(p:kill("TERM", { group = true }))
      assert.are.same({ nil, "TERM" }, { p:wait() })
      for _, k in ipairs(kids) do
        eventually(function() return orphans[tonumber(k)] end, "grandchild " .. k .. " reaped")
        assert.are.equal("TERM", orphans[tonumber(k)])
      end
      watch:stop()
      orch.proc.subreaper(false)
    end)
  end)

  it("reports resource usage after the exit", function()
    h.run(function()
      local p = assert(orch.spawn{ "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done" })
      assert.are.same({ nil, "rusage: process " .. p.pid .. " has not exited", "EBUSY" }, { p:rusage() })
      p:wait()
      local ru = p:rusage()
      assert.is_true(ru.utime + ru.stime > 0)
      assert.is_true(ru.maxrss > 100 * 1024)
      assert.are.equal("number", type(ru.stime))
    end)
  end)

  it("kills a still-running child when its <close> variable goes out of scope", function()
    h.run(function()
      local p
      do
        local q <close> = assert(orch.spawn{ prog, "sleep", "100" })
        p = q
      end
      assert.are.same({ nil, "KILL" }, { p:wait() })
    end)
  end)

  it("is not collected while the child runs", function()
    h.run(function()
      local got
      do
        local p = assert(orch.spawn{ prog, "sleep", "0.1" })
        p:on_exit(function(code) got = code end)
      end
      collectgarbage(); collectgarbage()
      eventually(function() return got end, "exit of an unreferenced process")
      assert.are.equal(0, got)
    end)
  end)

  it("keeps the loop alive while a child runs", function()
    local got
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "0.1" })
      p:on_exit(function(code) got = code end)
    end)
    assert.are.equal(0, got)
  end)
end)

describe("reaping", function()
  it("reaps 1,000 short-lived children with the right statuses and no zombie", function()
    h.run(function()
      local sigs = { 1, 2, 9, 10, 12, 15, 6, 11 }
      local names = { [1] = "HUP", [2] = "INT", [9] = "KILL", [10] = "USR1", [12] = "USR2",
                      [15] = "TERM", [6] = "ABRT", [11] = "SEGV" }
      local want, procs = {}, {}
      local inflight = 0
      local done = 0
      local wrong = {}
      math.randomseed(os.time())
      for i = 1, 1000 do
        local args
        if math.random() < 0.5 then
          local c = math.random(0, 255)
          args = { prog, "exit", c, rlimits = { core = 0 } }
          want[i] = { c, nil }
        else
          local s = sigs[math.random(#sigs)]
          args = { prog, "raise", s, rlimits = { core = 0 } }
          want[i] = { nil, names[s] }
        end
        while inflight >= 32 do orch.sleep(0.001) end
        local p = assert(orch.spawn(args))
        inflight = inflight + 1
        procs[i] = p
        p:on_exit(function(code, sig)
          inflight = inflight - 1
          done = done + 1
          if code ~= want[i][1] or sig ~= want[i][2] then wrong[#wrong + 1] = i end
        end)
      end
      eventually(function() return done == 1000 end, "1000 exits")
      assert.are.same({}, wrong)
      for i = 1, 1000 do assert.are.same(want[i], { procs[i]:wait() }) end
    end, 300)
    assert.are.same({}, h.children())   -- no zombie, nothing left
  end)

  it("reports adopted orphans of a subreaper: a double-forking daemon", function()
    h.run(function()
      assert(orch.proc.subreaper(true))
      assert.is_true(orch.proc.subreaper())
      local got = {}
      local watch = orch.proc.on_orphan_exit(function(pid, code, sig)
        assert.is_not_nil(orch.current())
        got[pid] = { code, sig }
      end)
      local p = assert(orch.spawn{ prog, "daemon", "0.2", "42", stdout = "pipe" })
      local pid = tonumber(p.stdout:read_line())
      p.stdout:close()
      assert.are.same({ 0, nil }, { p:wait() })
      -- adopted once the intermediate process has exited too
      eventually(function() return orch.proc.info(pid).ppid == orch.getpid() end, "daemon adopted")
      -- the intermediate process is an orphan too (its parent exited first)
      eventually(function() return got[pid] end, "orphan exit")
      assert.are.same({ 42, nil }, got[pid])
      watch:stop()
      assert(orch.proc.subreaper(false))
      assert.is_false(orch.proc.subreaper())
    end)
  end)
end)

describe("orch.run{...}", function()
  it("captures stdout and stderr and returns the code", function()
    h.run(function()
      local code, out, err = orch.run{ "sh", "-c", "echo out; echo err >&2; exit 3" }
      assert.are.same({ 3, "out\n", "err\n" }, { code, out, err })
    end)
  end)

  it("feeds input, and kills on timeout", function()
    h.run(function()
      local code, out = orch.run{ "wc", "-c", input = ("x"):rep(200000) }
      assert.are.equal(0, code)
      assert.are.equal("200000", out:match("%d+"))
      local c2, o2, e2, sig = orch.run{ prog, "sleep", "100", timeout = 0.1 }
      assert.are.same({ nil, "", "", "KILL" }, { c2, o2, e2, sig })
    end)
  end)

  it("drains a child that fills both pipes", function()
    h.run(function()
      local code, out, err = orch.run{ "sh", "-c", "head -c 300000 /dev/zero; head -c 300000 /dev/zero >&2" }
      assert.are.equal(0, code)
      assert.are.equal(300000, #out)
      assert.are.equal(300000, #err)
    end)
  end)

  it("works outside any task and returns spawn errors", function()
    local code, out = orch.run{ "echo", "plain" }
    assert.are.same({ 0, "plain\n" }, { code, out })
    assert.are.same({ nil, "spawn: no such file: nosuchprog", "ENOENT" }, { orch.run{ "nosuchprog" } })
  end)

  it("iterates the lines of a process's stdout", function()
    h.run(function()
      local p = assert(orch.spawn{ "printf", "a\\nb\\nc\\n", stdout = "pipe" })
      local got = {}
      for l in p:lines() do got[#got + 1] = l end
      assert.are.same({ "a", "b", "c" }, got)
      p:wait()
      p.stdout:close()
    end)
  end)

  it("p:lines() checks its object and that stdout is a pipe", function()
    h.run(function()
      local p = assert(orch.spawn{ "true", stdout = "null" })
      p:wait()
      assert.matches("bad argument #1 to 'lines' %(orch.Process expected, got number%)",
        h.error_of(function() return p.lines(42) end))
      assert.matches("lines: the process's stdout is not a pipe", h.error_of(function() return p:lines() end), 1, true)
    end)
  end)
end)

describe("orch.fork", function()
  it("runs fn as the child's only task; its result is the exit code", function()
    h.run(function()
      local other_ran_in_child = false
      orch.task(function() orch.sleep(0.3); other_ran_in_child = true end)
      local p = assert(orch.fork(function()
        local t0 = orch.now()
        orch.sleep(0.05)                                -- timers work
        local c = assert(orch.spawn{ prog, "exit", "5" }) -- so does spawning
        local code = c:wait()
        local q = assert(orch.spawn{ prog, "sleep", "100" })
        q:kill("KILL")
        local _, sig = q:wait()
        if sig ~= "KILL" or orch.now() - t0 < 0.04 then return 99 end
        return code + 20
      end))
      assert.are.same({ 25, nil }, { p:wait() })
      local q = assert(orch.fork(function() orch.sleep(100) end))
      assert.is_true(q:kill("KILL"))
      assert.are.same({ nil, "KILL" }, { q:wait() })
    end)
  end)

  it("maps true, false, nil and errors to exit codes", function()
    h.run(function()
      assert.are.same({ 0, nil }, { assert(orch.fork(function() return true end)):wait() })
      assert.are.same({ 1, nil }, { assert(orch.fork(function() return false end)):wait() })
      assert.are.same({ 0, nil }, { assert(orch.fork(function() end)):wait() })
      -- the child reports its error on stderr (one line in the spec's output)
      assert.are.same({ 1, nil }, { assert(orch.fork(function()
        error("a failing fork child (expected by proc_spec)")
      end)):wait() })
    end)
  end)

  it("does not let the child wait for the parent's children", function()
    h.run(function()
      local sib = assert(orch.spawn{ prog, "sleep", "100" })
      local p = assert(orch.fork(function()
        local code, msg, ename = sib:wait()
        if code == nil and ename == "ECHILD" then return 3 end
        return 4
      end))
      assert.are.same({ 3, nil }, { p:wait() })
      sib:kill("KILL")
      sib:wait()
    end)
  end)

  it("must be called from a task", function()
    assert.has_error(function() orch.fork(function() end) end, "fork: must be called from a task")
  end)
end)

describe("orch.exec", function()
  it("replaces the process", function()
    h.run(function()
      local p = assert(orch.fork(function()
        orch.exec("sh", { "-c", "exit $X" }, { X = "42", PATH = "/usr/bin:/bin" })
        return 1
      end))
      assert.are.same({ 42, nil }, { p:wait() })
      -- the exec'd program starts with default dispositions (sh keeps
      -- what it is given ignored, and so passes it on)
      local out = h.tmpdir() .. "/sigs"
      local q = assert(orch.fork(function()
        orch.signal.ignore("USR1")
        orch.exec("/bin/sh", { "-c", prog .. " sigs > " .. out })
      end))
      assert.are.same({ 0, nil }, { q:wait() })
      assert.are.equal("0000000000000000 0000000000000000\n", h.slurp(out))
    end)
  end)

  it("returns an error and leaves orch working when it fails", function()
    h.run(function()
      local got
      local handler = orch.signal.on("USR1", function() got = true end)
      assert.are.same({ nil, "exec: no such file: /no/such/prog", "ENOENT" }, { orch.exec("/no/such/prog", {}) })
      assert.are.same({ nil, "exec: no such file: nosuchprog", "ENOENT" }, { orch.exec("nosuchprog") })
      -- orch's own signal handling survived the attempt
      assert(orch.spawn{ "kill", "-USR1", tostring(orch.getpid()) }):wait()
      eventually(function() return got end, "USR1 after a failed exec")
      handler:stop()
    end)
  end)
end)

describe("orch.proc", function()
  -- A process that is not orch's child: sh starts it in the background and
  -- exits, so it is re-parented away from us.
  local function foreign(cmd)
    local f = assert(io.popen("sh -c '" .. cmd .. " >/dev/null 2>&1 & echo $!'"))
    local pid = tonumber(f:read("l"))
    f:close()
    return pid
  end

  it("wait_exit waits for a process that is not a child, without polling", function()
    local res = h.run(function()
      local pid = foreign("sleep 1")
      local st = assert(orch.proc.start_time(pid))
      -- Polling would wake this process every few ms (the watchdog's old
      -- fallback: 2 to 20 ms); on the pidfd it sleeps until the exit.
      local function wakeups()
        return tonumber(h.slurp("/proc/self/status"):match("voluntary_ctxt_switches:%s*(%d+)"))
      end
      local before, w0 = h.alive(pid), wakeups()
      local ok = orch.proc.wait_exit(pid, st, 10)
      local woke = wakeups() - w0
      return { ok = ok, before = before, woke = woke, after = orch.proc.wait_exit(pid), alive = h.alive(pid) }
    end)
    -- The process was there when the wait began and is gone when it
    -- returned: it waited for the exit (no clock involved).
    assert.is_true(res.before, "the process ended before the wait began")
    assert.is_true(res.ok)
    assert.is_true(res.woke <= 5, "woke " .. res.woke .. " times while waiting")
    assert.is_true(res.after)
    assert.is_false(res.alive)
  end)

  it("wait_exit times out, and says gone for a reused or missing pid", function()
    local res = h.run(function()
      local pid = foreign("sleep 30")
      local out = { timeout = table.pack(orch.proc.wait_exit(pid, nil, 0.05)) }
      out.still = h.alive(pid)
      local st = orch.proc.start_time(pid)
      out.reused = orch.proc.wait_exit(pid, st + 1, 5)      -- another identity
      orch.kill(pid, "KILL")
      out.killed = orch.proc.wait_exit(pid, st, 5)
      -- a child: its exit is seen too (orch reaps it meanwhile)
      local p = assert(orch.spawn{ "sleep", "0.05" })
      out.child = orch.proc.wait_exit(p.pid, nil, 5)
      p:wait()
      out.missing = orch.proc.wait_exit(p.pid)
      return out
    end)
    assert.is_nil(res.timeout[1])
    assert.are.equal("proc.wait_exit: timed out", res.timeout[2])
    assert.are.equal("ETIMEDOUT", res.timeout[3])
    assert.is_true(res.still)
    assert.is_true(res.reused)
    assert.is_true(res.killed)
    assert.is_true(res.child)
    assert.is_true(res.missing)
  end)

  it("wait_exit checks its arguments and needs a task", function()
    assert.has_error(function() orch.proc.wait_exit(1) end, "proc.wait_exit: must be called from a task")
    h.run(function()
      assert.has_error(function() orch.proc.wait_exit(0) end, "bad argument #1 to 'wait_exit' (invalid pid)")
      assert.has_error(function() orch.proc.wait_exit(1, -1) end,
        "bad argument #2 to 'wait_exit' (start time (clock ticks >= 0) expected)")
      assert.has_error(function() orch.proc.wait_exit(1, nil, -1) end)
    end)
  end)

  it("reads /proc for a process", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "100", pgroup = true })
      eventually(function() return #orch.proc.info(p.pid).cmdline == 3 end, "exec")
      local i = orch.proc.info(p.pid)
      assert.are.equal(p.pid, i.pid)
      assert.are.equal(orch.getpid(), i.ppid)
      assert.are.equal(p.pid, i.pgid)
      assert.matches("^[RSD]$", i.state)
      assert.are.same({ prog, "sleep", "100" }, i.cmdline)
      assert.are.equal(1, i.threads)
      -- The kernel syncs a task's RSS counters lazily (every few dozen page
      -- faults or context switches): right after exec they can still read 0.
      eventually(function() return orch.proc.info(p.pid).rss > 0 end, "rss counted")
      assert.is_true(i.cpu >= 0)
      assert.are.equal(orch.proc.start_time(p.pid), i.start_time)
      assert.is_true(i.start_time >= orch.proc.info(orch.getpid()).start_time)
      assert.are.equal(orch.proc.info(orch.getpid()).uid, i.uid)
      p:kill("KILL"); p:wait()
      assert.are.same({ nil, "proc.info: no such process", "ESRCH" }, { orch.proc.info(p.pid) })
      assert.are.same({ nil, "proc.start_time: no such process", "ESRCH" }, { orch.proc.start_time(p.pid) })
    end)
  end)

  it("gives a spawned child's start time as /proc says it, known from the spawn, until the child is reaped", function()
    -- orch.spawn brackets the kernel's stamp of the child's start between
    -- two clock readings (orch.proc.start_time then reads no /proc file);
    -- compared here with field 22 of /proc/PID/stat, for many spawns.
    local function field22(pid)
      local f = assert(io.open("/proc/" .. pid .. "/stat")):read("a")
      local fields = {}
      for w in f:match("^.*%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = w end
      return tonumber(fields[22 - 2])
    end
    h.run(function()
      local ps = {}
      for i = 1, 100 do
        ps[i] = assert(orch.spawn{ "sleep", "100", stdin = "null", stdout = "null", stderr = "null" })
      end
      for _, p in ipairs(ps) do
        assert.are.equal(field22(p.pid), orch.proc.start_time(p.pid))
        p:kill("KILL")
        p:wait()
        assert.are.same({ nil, "proc.start_time: no such process", "ESRCH" }, { orch.proc.start_time(p.pid) })
      end
    end)
  end)

  it("has one start-time function: orch.proc.start_time, orch itself by default, and orch.heartbeat.start_time is it", function()
    assert.are.equal(orch.proc.info(orch.getpid()).start_time, orch.proc.start_time())
    assert.is_true(rawequal(orch.proc.start_time, orch.heartbeat.start_time))
    -- Field 22 of /proc/PID/stat, counted after the last ')' of the name.
    local f = assert(io.open("/proc/self/stat")):read("a")
    local rest = f:match("^.*%) (.*)$")
    local fields = {}
    for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
    local lua_pid = tonumber(f:match("^(%d+)"))
    assert.are.equal(orch.getpid(), lua_pid)
    assert.are.equal(tonumber(fields[22 - 2]), orch.proc.start_time())
  end)

  it("lists processes and knows its own pids", function()
    local list = orch.proc.list()
    local found = false
    for _, pid in ipairs(list) do if pid == orch.getpid() then found = true end end
    assert.is_true(found)
    assert.are.equal(tonumber(h.slurp("/proc/self/stat"):match("^%d+")), orch.getpid())
    assert.are.equal(orch.proc.info(orch.getpid()).ppid, orch.getppid())
  end)
end)

describe("orch.proc relations and sockets", function()
  it("children lists a process's children; is_child tells orch's own from others", function()
    h.run(function()
      local p = assert(orch.spawn { "sh", "-c", "sleep 30 & sleep 30 & wait", pgroup = true })
      local kids = h.eventually(function()
        local k = assert(orch.proc.children(p.pid))
        return #k == 2 and k
      end, "two children")
      for _, pid in ipairs(kids) do
        assert.are.equal(p.pid, orch.proc.info(pid).ppid)
        assert.is_false(orch.proc.is_child(pid))
      end
      assert.is_true(orch.proc.is_child(p.pid))
      assert.is_false(orch.proc.is_child(1))
      local mine = assert(orch.proc.children(orch.getpid()))
      local found = false
      for _, pid in ipairs(mine) do if pid == p.pid then found = true end end
      assert.is_true(found)
      p:kill("KILL", { group = true })
      p:wait()
      assert.is_false(orch.proc.is_child(p.pid))
      local ok, err, code = orch.proc.children(p.pid)
      assert.is_nil(ok)
      assert.are.equal("proc.children: no such process", err)
      assert.are.equal("ESRCH", code)
    end)
  end)

  -- A process of one thread has its main thread's children file read
  -- alone (/proc/PID/task's link count says how many threads); the others
  -- every thread's: children forked by a second thread, by one whose
  -- leader has ended, and more than a read's buffer holds.
  it("children finds the children a second thread forked, with or without its leader, and 500 of them", function()
    h.run(function()
      for _, case in ipairs { { "main", 3 }, { "thread", 3 }, { "leaderless", 3 }, { "main", 500 } } do
        local who, n = case[1], case[2]
        local p = assert(orch.spawn { prog, "forks", tostring(n), who, pgroup = true, stdout = "pipe" })
        assert.are.equal("ready", p.stdout:read_line())
        local kids = assert(orch.proc.children(p.pid))
        table.sort(kids)
        assert.are.equal(n, #kids, who .. " " .. n)
        for _, pid in ipairs(kids) do
          assert.are.equal(p.pid, orch.proc.info(pid).ppid, who .. ": " .. pid .. " is a child")
        end
        p:kill("KILL", { group = true })
        p:wait()
        p.stdout:close()
      end
    end)
  end)

  it("tcp_listeners and sockets find who listens on a port, IPv4 and IPv6", function()
    h.run(function()
      local l4 = assert(orch.listen { host = "127.0.0.1", port = 0 })
      local got = assert(orch.proc.tcp_listeners(l4.port))
      assert.are.equal(1, #got)
      assert.are.equal("127.0.0.1", got[1].address)
      assert.are.equal("inet", got[1].family)
      assert.are.equal(l4.port, got[1].port)
      assert.are.equal(0, got[1].uid)
      local socks = assert(orch.proc.sockets(orch.getpid()))
      assert.are.equal(l4:fd(), socks[got[1].inode])
      -- The same through the pid's network namespace.
      assert.are.equal(got[1].inode, assert(orch.proc.tcp_listeners(l4.port, orch.getpid()))[1].inode)
      l4:close()
      assert.are.same({}, assert(orch.proc.tcp_listeners(got[1].port)))
      local l6, err6, code6 = orch.listen { host = "::1", port = 0 }
      if not l6 then
        -- A kernel without IPv6 has no ::1: the kernel's refusal, nothing else.
        assert.truthy(code6 == "EADDRNOTAVAIL" or code6 == "EAFNOSUPPORT", err6)
      else
        local x = assert(orch.proc.tcp_listeners(l6.port))[1]
        assert.are.equal("::1", x.address)
        assert.are.equal("inet6", x.family)
        assert.are.equal(l6:fd(), assert(orch.proc.sockets(orch.getpid()))[x.inode])
        l6:close()
      end
      -- Another network namespace (read from /proc/PID/net): its own
      -- sockets, not orch's.
      local l = assert(orch.listen { host = "127.0.0.1", port = 0 })
      local ns = assert(orch.spawn { "unshare", "--net", "sleep", "30", stdout = "null" })
      h.eventually(function()
        local i = orch.proc.info(ns.pid)
        return i and i.name == "sleep"
      end, "sleep in its own network namespace")
      assert.are.same({}, assert(orch.proc.tcp_listeners(l.port, ns.pid)))
      assert.are.equal(1, #assert(orch.proc.tcp_listeners(l.port, orch.getpid())))
      ns:kill("KILL")
      ns:wait()
      l:close()
      local ok, err, code = orch.proc.sockets(0x7ffffffe)
      assert.is_nil(ok)
      assert.are.equal("ESRCH", code, err)
    end)
  end)

  it("user_ids resolves as spawn does; can_access checks a path for another user", function()
    assert.are.same({ 65534, 65534 }, { orch.proc.user_ids("nobody") })
    assert.are.same({ 65534, 0 }, { orch.proc.user_ids(65534, "root") })
    local ok, err, code = orch.proc.user_ids("no-such-user-orch")
    assert.is_nil(ok)
    assert.are.equal("proc.user_ids: unknown user 'no-such-user-orch'", err)
    assert.are.equal("ENOENT", code)
    local d = h.tmpdir()          -- 0700, root's
    assert.is_true(orch.proc.can_access(d, 0, 0, "rwx"))
    assert.are.same({ false, d }, { orch.proc.can_access(d .. "/x", 65534, 65534, "r") })
    assert.is_true(orch.proc.can_access("/tmp", 65534, 65534, "wx"))
    h.sh("chmod 711 " .. d .. " && touch " .. d .. "/f && chmod 640 " .. d .. "/f")
    assert.are.same({ false, d .. "/f" }, { orch.proc.can_access(d .. "/f", 65534, 65534, "r") })
    h.sh("chown 65534 " .. d .. "/f")
    assert.is_true(orch.proc.can_access(d .. "/f", 65534, 65534, "rw"))
    assert.are.same({ false, d .. "/f" }, { orch.proc.can_access(d .. "/f", 65534, 65534, "x") })
  end)

  it("read_pidfile reads a pid, and refuses links, FIFOs and junk without blocking", function()
    h.run(function()
      local d = h.tmpdir()
      h.write(d .. "/ok", "  4242\n")
      assert.are.equal(4242, orch.proc.read_pidfile(d .. "/ok"))
      h.write(d .. "/junk", "42x\n")
      assert.are.same({ nil, "read_pidfile: " .. d .. "/junk holds no pid", "EINVAL" },
        { orch.proc.read_pidfile(d .. "/junk") })
      assert(orch.fifo.make(d .. "/fifo"))
      assert.are.same({ nil, "read_pidfile: " .. d .. "/fifo is not a regular file", "EINVAL" },
        { orch.proc.read_pidfile(d .. "/fifo") })
      assert(os.execute("ln -s " .. d .. "/ok " .. d .. "/link"))
      assert.are.same({ nil, "read_pidfile: " .. d .. "/link is a symbolic link", "ELOOP" },
        { orch.proc.read_pidfile(d .. "/link") })
      assert.are.equal("ENOENT", select(3, orch.proc.read_pidfile(d .. "/none")))
    end)
  end)

  it("dgram uid/gid give the socket file to another user, who can then send to it", function()
    h.run(function()
      local d = h.tmpdir()
      h.sh("chmod 711 " .. d)
      local path = d .. "/n.sock"
      local sock <close> = assert(orch.dgram { unix = path, passcred = true, uid = 65534, gid = 65534 })
      assert.are.equal("600 65534 65534", h.sh("stat -c '%a %u %g' " .. path))
      -- prog_sup_notify sends "STATUS=starting" to $NOTIFY_SOCKET first.
      local p = assert(orch.spawn { "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
        h.progs .. "/prog_sup_notify", "-x", "0", env = { NOTIFY_SOCKET = path }, stdout = "null" })
      assert.are.equal(0, (p:wait()))
      local msg, _, cred = sock:recv()
      assert.are.equal("STATUS=starting", msg)
      assert.are.equal(65534, cred.uid)
      h.check_raises {
        { function() orch.dgram { uid = 1 } end, "options 'uid' and 'gid' apply to unix socket paths only" },
        { function() orch.dgram { unix = "@x", gid = 1 } end, "options 'uid' and 'gid' apply to unix socket paths only" },
        { function() orch.dgram { unix = path .. "2", uid = -5 } end, "option 'uid': uid expected" },
      }
    end)
  end)
end)

describe("orch.daemonize", function()
  it("detaches with a locked pidfile; a second instance refuses to start", function()
    local d = h.tmpdir()
    local script = h.script([[
      local pidfile, out = ...
      local ok, err, ename = orch.daemonize{ pidfile = pidfile, stdout = out, stderr = out, umask = 0x12 }
      if not ok then io.stderr:write(err, " ", ename, "\n"); orch.exit(3) end
      print("daemon", orch.getpid())
      io.stdout:flush()
      orch.sleep(100)
    ]])
    local pidfile, out = d .. "/d.pid", d .. "/d.out"
    h.run(function()
      assert(orch.proc.subreaper(true))
      local got
      local watch = orch.proc.on_orphan_exit(function(pid, code, sig) got = { pid, code, sig } end)
      local code, o, e = orch.run{ h.bin, "run", script, pidfile, out }
      assert.are.same({ 0, "", "" }, { code, o, e })
      local pid = tonumber(h.slurp(pidfile))
      assert.is_truthy(pid)
      eventually(function() return h.slurp(out) ~= "" end, "daemon output")
      assert.are.equal("daemon\t" .. pid .. "\n", h.slurp(out))
      local info = orch.proc.info(pid)
      assert.are.equal(orch.getpid(), info.ppid)              -- adopted by the subreaper
      assert.are_not.equal(orch.proc.info(orch.getpid()).sid, info.sid)
      assert.are_not.equal(pid, info.sid)                    -- not a session leader
      code, o, e = orch.run{ h.bin, "run", script, pidfile, out }
      assert.are.equal(3, code)
      assert.are.equal("daemonize: already running (pid " .. pid .. " holds " .. pidfile .. ") EAGAIN\n", e)
      assert.is_true(orch.kill(pid, "TERM"))
      eventually(function() return got end, "the daemon's exit")
      assert.are.same({ pid, nil, "TERM" }, got)
      watch:stop()
      orch.proc.subreaper(false)
    end)
  end)

  it("reports a failure in the original process", function()
    local script = h.script([[
      local ok, err, ename = orch.daemonize{ chdir = "/nonexistent/dir" }
      io.stderr:write(tostring(err), " ", tostring(ename), "\n")
      orch.exit(3)
    ]])
    h.run(function()
      local code, o, e = orch.run{ h.bin, "run", script }
      assert.are.equal(3, code)
      assert.are.equal("daemonize: chdir /nonexistent/dir: no such file or directory ENOENT\n", e)
    end)
  end)
end)

describe("orch.proc.init_mode", function()
  it("as PID 1 of a PID namespace, forwards TERM and reaps orphans", function()
    local script = h.script(([[
      package.cpath = %q .. "/lua/?.so;" .. package.cpath
      local orch = require "orch"
      orch.run(function()
        assert(orch.getpid() == 1, "not pid 1")
        assert(orch.proc.init_mode())
        local orphan
        orch.proc.on_orphan_exit(function(pid, code) if code ~= 0 then orphan = code end end)
        local d = assert(orch.spawn{ %q, "daemon", "0.05", "5" , stdout = "null" })
        d:wait()
        local c = assert(orch.spawn{ "sh", "-c", "trap 'exit 9' TERM; echo up; while :; do sleep 0.02; done", stdout = "pipe" })
        c.stdout:read_line()
        io.stdout:write("READY\n"); io.stdout:flush()
        local code = c:wait()
        while not orphan do orch.sleep(0.01) end
        print("child", code, "orphan", orphan)
      end)
    ]]):format(h.build, prog))
    h.run(function()
      local p = assert(orch.spawn{ "unshare", "--pid", "--fork", "lua5.4", script, stdout = "pipe", stderr = "pipe" })
      local first, err = p.stdout:read_line()
      if first ~= "READY" then
        error("unshare failed: " .. tostring(first) .. " " .. tostring(err) .. " " .. tostring(p.stderr:read_all()))
      end
      -- the namespace's PID 1 is unshare's only child
      local f = assert(io.open("/proc/" .. p.pid .. "/task/" .. p.pid .. "/children"))
      local init = tonumber(f:read("a"):match("%d+"))
      f:close()
      assert.is_true(orch.kill(init, "TERM"))
      assert.are.equal("child\t9\torphan\t5\n", p.stdout:read_all())
      assert.are.same({ 0, nil }, { p:wait() })
      p.stdout:close(); p.stderr:close()
    end)
  end)
end)

describe("bad arguments", function()
  local cases = {
    { "spawn", function() orch.spawn("ls") end, "bad argument #1 to 'spawn' (table expected, got string)" },
    { "spawn", function() orch.spawn{} end, "bad argument #1 to 'spawn' (program name expected at index 1)" },
    { "spawn", function() orch.spawn{ "ls", evn = {} } end, "bad argument #1 to 'spawn' (unknown option 'evn')" },
    { "spawn", function() orch.spawn{ "ls", {} } end, "bad argument #1 to 'spawn' (argument 2: string expected, got table)" },
    { "spawn", function() orch.spawn{ "" } end, "bad argument #1 to 'spawn' (program name must be a non-empty string)" },
    { "spawn", function() orch.spawn{ "ls", "a\0b" } end, "bad argument #1 to 'spawn' (argument 2 contains a zero byte)" },
    { "spawn", function() orch.spawn({ "ls" }, {}) end, "bad argument #2 to 'spawn' (no value expected (options go in the table))" },
    { "spawn", function() orch.spawn{ "ls", env = 3 } end, "bad argument #1 to 'spawn' (option 'env': table expected, got number)" },
    { "spawn", function() orch.spawn{ "ls", env = { ["A=B"] = "x" } } end, "bad argument #1 to 'spawn' (option 'env': invalid variable name 'A=B')" },
    { "spawn", function() orch.spawn{ "ls", env = { A = {} } } end, "bad argument #1 to 'spawn' (option 'env': 'A': string, number or false expected, got table)" },
    { "spawn", function() orch.spawn{ "ls", env = { [1] = "x" } } end, "bad argument #1 to 'spawn' (option 'env': keys must be strings)" },
    { "spawn", function() orch.spawn{ "ls", env_mode = "both" } end, "bad argument #1 to 'spawn' (option 'env_mode': 'merge' or 'replace' expected, got 'both')" },
    { "spawn", function() orch.spawn{ "ls", cwd = 1 } end, "bad argument #1 to 'spawn' (option 'cwd': string expected, got number)" },
    { "spawn", function() orch.spawn{ "ls", uid = -1 } end, "bad argument #1 to 'spawn' (option 'uid': invalid id)" },
    { "spawn", function() orch.spawn{ "ls", gid = true } end, "bad argument #1 to 'spawn' (option 'gid': number or name expected, got boolean)" },
    { "spawn", function() orch.spawn{ "ls", stdout = "pipes" } end,
      "bad argument #1 to 'spawn' (option 'stdout': expected 'inherit', 'null', 'pipe', a path containing '/', a stream or an fd, got 'pipes')" },
    { "spawn", function() orch.spawn{ "ls", stdin = "stdout" } end,
      "bad argument #1 to 'spawn' (option 'stdin': expected 'inherit', 'null', 'pipe', a path containing '/', a stream or an fd, got 'stdout')" },
    { "spawn", function() orch.spawn{ "ls", stdin = -1 } end, "bad argument #1 to 'spawn' (option 'stdin': invalid fd number)" },
    { "spawn", function() orch.spawn{ "ls", stderr = {} } end,
      "bad argument #1 to 'spawn' (option 'stderr': expected 'inherit', 'null', 'pipe', a path containing '/', a stream or an fd, got table)" },
    { "spawn", function() orch.spawn{ "ls", fds = { [2] = 1 } } end, "bad argument #1 to 'spawn' (option 'fds': keys must be fd numbers from 3 to 1023)" },
    { "spawn", function() orch.spawn{ "ls", fds = { [3] = "null" } } end, "bad argument #1 to 'spawn' (option 'fds': an fd number or a stream expected, got 'null')" },
    { "spawn", function() orch.spawn{ "ls", fds = 3 } end, "bad argument #1 to 'spawn' (option 'fds': table expected, got number)" },
    { "spawn", function() orch.spawn{ "ls", pgroup = "1" } end, "bad argument #1 to 'spawn' (option 'pgroup': boolean or process group id expected, got string)" },
    { "spawn", function() orch.spawn{ "ls", setsid = "yes" } end, "bad argument #1 to 'spawn' (option 'setsid': boolean expected, got string)" },
    { "spawn", function() orch.spawn{ "ls", rlimits = { files = 1 } } end, "bad argument #1 to 'spawn' (option 'rlimits': unknown limit 'files')" },
    { "spawn", function() orch.spawn{ "ls", rlimits = { nofile = -1 } } end, "bad argument #1 to 'spawn' (option 'rlimits': 'nofile': a non-negative integer or 'unlimited' expected)" },
    { "spawn", function() orch.spawn{ "ls", rlimits = { nofile = { 10, 5 } } } end, "bad argument #1 to 'spawn' (option 'rlimits': 'nofile': soft limit above hard limit)" },
    { "spawn", function() orch.spawn{ "ls", rlimits = 5 } end, "bad argument #1 to 'spawn' (option 'rlimits': table expected, got number)" },
    { "spawn", function() orch.spawn{ "ls", umask = 0x200 } end, "bad argument #1 to 'spawn' (option 'umask': permission bits (0 to 0o777) expected)" },
    { "spawn", function() orch.spawn{ "ls", umask = "022" } end, "bad argument #1 to 'spawn' (option 'umask': integer expected, got string)" },
    { "spawn", function() orch.spawn{ "ls", path = 1 } end, "bad argument #1 to 'spawn' (option 'path': boolean or string expected, got number)" },
    { "fork", function() orch.fork(1) end, "bad argument #1 to 'fork' (function expected, got number)" },
    { "exec", function() orch.exec() end, "bad argument #1 to 'exec' (string expected, got no value)" },
    { "exec", function() orch.exec("") end, "bad argument #1 to 'exec' (program name must not be empty)" },
    { "exec", function() orch.exec("ls", "-l") end, "bad argument #2 to 'exec' (table expected, got string)" },
    { "exec", function() orch.exec("ls", { {} }) end, "bad argument #2 to 'exec' (argument 1: string expected, got table)" },
    { "exec", function() orch.exec("ls", {}, { ["A=1"] = "x" }) end, "bad argument #3 to 'exec' (keys must be variable names)" },
    { "children", function() orch.proc.children("1") end, "bad argument #1 to 'children' (pid expected, got string)" },
    { "children", function() orch.proc.children(1, 2) end, "bad argument #2 to 'children' (no value expected)" },
    { "sockets", function() orch.proc.sockets(0) end, "bad argument #1 to 'sockets' (invalid pid)" },
    { "tcp_listeners", function() orch.proc.tcp_listeners(0) end, "bad argument #1 to 'tcp_listeners' (port number from 1 to 65535 expected)" },
    { "tcp_listeners", function() orch.proc.tcp_listeners(80, "x") end, "bad argument #2 to 'tcp_listeners' (pid expected, got string)" },
    { "is_child", function() orch.proc.is_child() end, "bad argument #1 to 'is_child' (pid expected, got no value)" },
    { "user_ids", function() orch.proc.user_ids({}) end, "bad argument #1 to 'user_ids' (user name or uid expected, got table)" },
    { "user_ids", function() orch.proc.user_ids(-1) end, "bad argument #1 to 'user_ids' (invalid uid)" },
    { "user_ids", function() orch.proc.user_ids(nil, 1.5) end, "bad argument #2 to 'user_ids' (group name or gid expected, got number)" },
    { "can_access", function() orch.proc.can_access("tmp", 0, 0, "r") end, "bad argument #1 to 'can_access' (absolute path expected)" },
    { "can_access", function() orch.proc.can_access("/tmp", 0, 0, "q") end, "bad argument #4 to 'can_access' (\"r\", \"w\" and/or \"x\" expected)" },
    { "can_access", function() orch.proc.can_access("/tmp", -1, 0, "r") end, "bad argument #2 to 'can_access' (invalid uid)" },
    { "read_pidfile", function() orch.proc.read_pidfile() end, "bad argument #1 to 'read_pidfile' (string expected, got no value)" },
    { "read_pidfile", function() orch.proc.read_pidfile("/a\0b") end, "bad argument #1 to 'read_pidfile' (path contains a zero byte)" },
    { "info", function() orch.proc.info("1") end, "bad argument #1 to 'info' (pid expected, got string)" },
    { "info", function() orch.proc.info(0) end, "bad argument #1 to 'info' (invalid pid)" },
    { "info", function() orch.proc.info(1.5) end, "bad argument #1 to 'info' (invalid pid)" },
    { "start_time", function() orch.proc.start_time("1") end, "bad argument #1 to 'start_time' (pid expected, got string)" },
    { "start_time", function() orch.proc.start_time(0) end, "bad argument #1 to 'start_time' (invalid pid)" },
    { "start_time", function() orch.proc.start_time(1, 2) end, "bad argument #2 to 'start_time' (no value expected)" },
    { "stat", function() orch.proc.stat() end, "bad argument #1 to 'stat' (pid expected, got no value)" },
    { "stat", function() orch.proc.stat(1, "t") end, "bad argument #2 to 'stat' (table expected, got string)" },
    { "stat", function() orch.proc.stat(1, {}, 3) end, "bad argument #3 to 'stat' (no value expected)" },
    { "subreaper", function() orch.proc.subreaper(1) end, "bad argument #1 to 'subreaper' (boolean expected, got number)" },
    { "on_orphan_exit", function() orch.proc.on_orphan_exit() end, "bad argument #1 to 'on_orphan_exit' (function expected, got no value)" },
    { "init_mode", function() orch.proc.init_mode{ signal = {} } end, "bad argument #1 to 'init_mode' (unknown option 'signal')" },
    { "init_mode", function() orch.proc.init_mode{ signals = { "KILL" } } end, "bad argument #1 to 'init_mode' (option 'signals': cannot forward KILL)" },
    { "init_mode", function() orch.proc.init_mode{ signals = { "NOPE" } } end, "bad argument #1 to 'init_mode' (option 'signals': unknown signal 'NOPE')" },
    { "daemonize", function() orch.daemonize{ pidfle = "x" } end, "bad argument #1 to 'daemonize' (unknown option 'pidfle')" },
    { "daemonize", function() orch.daemonize{ umask = 0x400 } end, "bad argument #1 to 'daemonize' (option 'umask': permission bits (0 to 0o777) expected)" },
    { "daemonize", function() orch.daemonize{ chdir = 5 } end, "bad argument #1 to 'daemonize' (option 'chdir': string expected, got number)" },
    { "daemonize", function() orch.daemonize{} end, "daemonize: must be called from a task" },
    { "run", function() orch.run{ "ls", stdout = "null" } end, "bad argument #1 to 'run' (stdout and stderr are captured: use orch.spawn to redirect them)" },
    { "run", function() orch.run{ "ls", input = 5 } end, "bad argument #1 to 'run' (option 'input': string expected, got number)" },
    { "run", function() orch.run{ "ls", timeout = -1 } end, "bad argument #1 to 'run' (option 'timeout': seconds expected)" },
  }
  for _, c in ipairs(cases) do
    it(c[1] .. ": " .. c[3], function()
      assert.has_error(c[2], c[3])
    end)
  end

  it("Process methods check their arguments", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "100" })
      assert.has_error(function() p:kill("NOPE") end, "bad argument #1 to 'kill' (unknown signal 'NOPE')")
      assert.has_error(function() p:kill("TERM", { grop = true }) end, "bad argument #2 to 'kill' (unknown option 'grop')")
      assert.has_error(function() p:kill("TERM", { group = 1 }) end, "bad argument #2 to 'kill' (option 'group': boolean expected, got number)")
      assert.has_error(function() p:wait(-1) end, "bad argument #1 to 'wait' (seconds must be a finite number >= 0)")
      assert.has_error(function() p:on_exit(1) end, "bad argument #1 to 'on_exit' (function expected, got number)")
      assert.has_error(function() p.wait({}) end, "bad argument #1 to 'wait' (orch.Process expected, got table)")
      p:kill("KILL")
      p:wait()
    end)
  end)
end)
