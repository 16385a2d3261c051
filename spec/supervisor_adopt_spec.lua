-- The supervisor's adoption rules: a pidfile or MAINPID= is accepted only
-- for a process of the service (a descendant of its process, or an orphan
-- reparented to orch, started no earlier than the service, running as its
-- user), and an adopted process that is not orch's child is watched
-- through a pidfd.
local u = require "spec.supervisor_util"
local h, orch = u.h, u.orch

local P = u.progs

-- Clock ticks since boot (the unit of start times), from /proc/uptime.
local function ticks_now()
  local up = tonumber(h.slurp("/proc/uptime"):match("^(%S+)"))
  return math.floor(up * 100)
end

-- A root process that is not the service's (a stand-in for sshd, init's
-- children...): `sleep` started by the test, strictly older (by its start
-- time, in clock ticks) than anything started after this returns.
local function victim()
  local p = assert(orch.spawn { "sleep", "60", stdout = "null" })
  local t = assert(orch.proc.start_time(p.pid))
  h.eventually(function() return ticks_now() > t + 1 end, "a clock tick after the victim's start")
  return p
end

local function finish(p)
  if p:running() then
    p:kill("KILL")
    p:wait()
  end
end

describe("supervisor adoption", function()
  it("refuses a pidfile naming a root process: nothing is signalled", function()
    u.with(function(s, logs, dir)
      -- A directory the service (nobody) can write its pidfile in.
      h.sh("chmod 755 " .. h.shquote(dir) .. " && mkdir -m 777 " .. h.shquote(dir .. "/run"))
      local old = victim()           -- started before the service
      local ok, err = pcall(function()
        local pidfile = dir .. "/run/old.pid"
        s.service { name = "older", user = "nobody", pidfile = pidfile, restart = "never", start_timeout = 1,
          cmd = u.sh("echo " .. old.pid .. " > " .. pidfile .. "; exit 0") }
        -- A younger root process, named once it exists.
        local younger_file = dir .. "/run/younger"
        local pidfile2 = dir .. "/run/young.pid"
        s.service { name = "younger", user = "nobody", pidfile = pidfile2, restart = "never", start_timeout = 2,
          cmd = u.sh("while [ ! -s " .. younger_file .. " ]; do sleep 0.02; done; cat " .. younger_file ..
            " > " .. pidfile2 .. "; exit 0") }
        s.start("all")
        assert.is_true(s.wait("younger", "starting", 10))
        local young = victim()
        local ok2, err2 = pcall(function()
          local f = assert(io.open(younger_file .. ".tmp", "w"))
          f:write(young.pid, "\n")
          f:close()
          assert(os.rename(younger_file .. ".tmp", younger_file))
          assert.is_true(s.wait("all", "exited", 20))
          assert.truthy(u.logged(logs, "older: ignoring pidfile " .. pidfile .. ": pid " .. old.pid ..
            " started before the service"))
          assert.truthy(u.logged(logs, "younger: ignoring pidfile " .. pidfile2 .. ": pid " .. young.pid ..
            " runs as uid 0, not as the service's uid 65534"))
          assert.matches("names no process of the service %(pid " .. old.pid, u.st(s, "older").reason)
          assert.matches("names no process of the service %(pid " .. young.pid, u.st(s, "younger").reason)
          assert.is_nil(u.logged(logs, "main process is now"))
          -- Stopping the services signals neither.
          s.stop("all")
          assert.is_true(young:running())
          assert.is_true(old:running())
        end)
        finish(young)
        assert(ok2, err2)
      end)
      finish(old)
      assert(ok, err)
    end)
  end)

  it("ignores and reports a stale pidfile, and adopts the daemon that writes its own", function()
    u.with(function(s, logs, dir)
      local other = victim()          -- the pid the stale file names: alive, unrelated
      local ok, err = pcall(function()
        local pidfile = dir .. "/daemon.pid"
        local f = assert(io.open(pidfile, "w"))
        f:write(other.pid, "\n")
        f:close()
        -- The daemon writes its pidfile 300 ms after its launcher exited.
        s.service { name = "daemon", pidfile = pidfile, backoff = 0.05,
          cmd = u.sh("(sleep 0.3; exec " .. P .. "/forking_daemon " .. pidfile .. " /dev/null 50) & exit 0") }
        s.start("daemon")
        assert.is_true(s.wait("daemon", "running", 10))
        assert.truthy(u.logged(logs, "daemon: stale pidfile " .. pidfile .. " (pid " .. other.pid ..
          ") before the start: ignored until the service writes it"))
        assert.truthy(u.logged(logs, "daemon: ignoring pidfile " .. pidfile .. ": pid " .. other.pid ..
          " started before the service"))
        local pid = u.st(s, "daemon").pid
        assert.are_not.equal(other.pid, pid)
        assert.are.equal(tostring(pid), h.slurp(pidfile):match("%d+"))
        s.stop("daemon")
        assert.is_false(u.alive(pid))
        assert.is_true(other:running())
      end)
      finish(other)
      assert(ok, err)
    end)
  end)

  it("adopts a genuine double-forking daemon, sees its exit at once and stops it", function()
    u.with(function(s, logs, dir)
      local pidfile = dir .. "/d.pid"
      s.service { name = "d", cmd = { P .. "/forking_daemon", pidfile, "/dev/null", "50" }, pidfile = pidfile,
        backoff = 0.05, start_limit = false }
      s.start("d")
      assert.is_true(s.wait("d", "running", 10))
      local pid = u.st(s, "d").pid
      assert.truthy(u.logged(logs, "d: main process is now " .. pid .. " (pidfile "))
      orch.kill(pid, "KILL")
      local st = h.eventually(function()
        local x = u.st(s, "d")
        return x.restarts == 1 and x.state == "running" and x.pid ~= pid and x
      end, "the daemon's exit seen and the service restarted")
      assert.are.equal("KILL", s.instance("d").history[1].signal)
      s.stop("d")
      assert.is_false(u.alive(st.pid))
      assert.are.equal("stopped", u.st(s, "d").state)
    end)
  end)

  it("watches a MAINPID that is not orch's child through a pidfd", function()
    u.with(function(s, logs)
      -- The main process stays the child of the launcher, which reaps it:
      -- orch never gets its exit status, only the pidfd tells it ended.
      s.service { name = "mp", ready = { notify = true }, backoff = 0.05, start_limit = false,
        cmd = u.sh(P .. "/prog_sup_notify -m & while :; do sleep 0.05; done") }
      s.start("mp")
      assert.is_true(s.wait("mp", "running", 10))
      local line = h.eventually(function() return u.logged(logs, "(MAINPID)") end, "MAINPID adopted")
      local pid = assert(u.st(s, "mp").pid)
      assert.are.equal("mp: main process is now " .. pid .. " (MAINPID)", logs[line])
      assert.are_not.equal(orch.getpid(), orch.proc.info(pid).ppid)
      orch.kill(pid, "KILL")
      h.eventually(function()
        local x = u.st(s, "mp")
        return x.restarts == 1 and x.state == "running" and x.pid ~= pid
      end, "the main process's end seen")
      s.stop("mp")
      assert.are.equal("stopped", u.st(s, "mp").state)
    end)
  end)

  it("never blocks on a FIFO nor follows a link at the pidfile's path", function()
    u.with(function(s, logs, dir)
      local fifo, link = dir .. "/fifo.pid", dir .. "/link.pid"
      assert(orch.fifo.make(fifo))
      local target = dir .. "/target"
      h.write(target, tostring(orch.getpid()) .. "\n")
      assert(os.execute("ln -s " .. h.shquote(target) .. " " .. h.shquote(link)))
      s.service { name = "fifo", pidfile = fifo, restart = "never", start_timeout = 1, cmd = u.sh("exit 0") }
      s.service { name = "link", pidfile = link, restart = "never", start_timeout = 1, cmd = u.sh("exit 0") }
      s.start("all")
      assert.is_true(s.wait("all", "exited", 20))
      assert.truthy(u.logged(logs, "fifo: ignoring pidfile " .. fifo .. ": read_pidfile: " .. fifo .. " is not a regular file"))
      assert.truthy(u.logged(logs, "link: ignoring pidfile " .. link .. ": read_pidfile: " .. link .. " is a symbolic link"))
      assert.matches("names no process of the service", u.st(s, "fifo").reason)
      assert.is_nil(u.logged(logs, "main process is now"))
    end)
  end)

  it("refuses a MAINPID that is not the service's", function()
    u.with(function(s, logs)
      local other = victim()
      local ok, err = pcall(function()
        s.service { name = "liar", ready = { notify = true }, cmd = { P .. "/prog_sup_notify", "-M", other.pid } }
        s.start("liar")
        assert.is_true(s.wait("liar", "running", 10))
        local line = h.eventually(function() return u.logged(logs, "liar: refusing MAINPID") end, "refused")
        assert.are.equal("liar: refusing MAINPID " .. other.pid .. " as the main process: it started before " ..
          "the service", logs[line]:match("^(.-) %(start time"))
        local pid = u.st(s, "liar").pid
        assert.are_not.equal(other.pid, pid)
        s.stop("liar")
        assert.is_false(u.alive(pid))
        assert.is_true(other:running())
      end)
      finish(other)
      assert(ok, err)
    end)
  end)
end)
