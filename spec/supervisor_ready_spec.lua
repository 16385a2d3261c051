-- The supervisor: readiness (sd_notify, notification fd, tcp, functions),
-- start timeouts, dependencies, heartbeats and watchdog pings, memory and
-- CPU limits, forking daemons (pidfile, MAINPID).
local u = require "spec.supervisor_util"
local h, orch = u.h, u.orch

local P = u.progs

describe("supervisor readiness", function()
  it("waits for sd_notify READY=1 and keeps STATUS=", function()
    u.with(function(s, logs, dir)
      s.service { name = "nt", cmd = { P .. "/prog_sup_notify", "-r", "300", "-s", "up and serving" },
        ready = { notify = true } }
      s.start("nt")
      assert.is_true(s.wait("nt", "starting", 10))
      local path = dir .. "/orch-" .. orch.getpid() .. "-nt.notify"
      assert.is_true(u.until_true(function() return u.st(s, "nt").status_text == "starting" end))
      assert.are.equal("starting", u.st(s, "nt").state)
      -- The socket orch made for it is private to orch's user.
      assert.are.equal("600 socket", h.sh("stat -c '%a %F' " .. path))
      assert.is_true(s.wait("nt", "running", 10))
      assert.are.equal("up and serving", u.st(s, "nt").status_text)
      assert.truthy(u.logged(logs, "nt: ready (sd_notify READY=1)"))
      s.stop("nt")
      assert.are.equal("", h.sh("ls " .. path .. " 2>/dev/null"))
    end)
  end)

  it("counts WATCHDOG=1 pings as heartbeats and restarts when they stop", function()
    u.with(function(s, logs)
      s.service { name = "pets", cmd = { P .. "/prog_sup_notify", "-i", "50" },
        ready = { notify = true }, heartbeat = { timeout = 0.4 } }
      s.service { name = "stalls", cmd = { P .. "/prog_sup_notify", "-i", "50", "-p", "4" },
        ready = { notify = true }, heartbeat = { timeout = 0.4 }, backoff = 0.05, start_limit = false }
      s.start("all")
      assert.is_true(s.wait("all", "running", 10))
      assert.is_true(u.until_true(function() return u.st(s, "stalls").restarts >= 2 end, 20))
      assert.truthy(u.logged(logs, "stalls: missed heartbeat: none for "))
      assert.are.equal(0, u.st(s, "pets").restarts)
      assert.are.equal("running", u.st(s, "pets").state)
    end)
  end)

  it("restarts a service that is not ready within start_timeout", function()
    u.with(function(s, logs)
      s.service { name = "slow", cmd = { P .. "/prog_sup_notify", "-n" }, ready = { notify = true },
        start_timeout = 0.3, backoff = 0.05, start_limit = { burst = 2, interval = 60 } }
      s.start("slow")
      assert.is_true(s.wait("slow", "fatal", 10))
      assert.truthy(u.logged(logs, "slow: not ready after 0.3s: restarting"))
      local st = u.st(s, "slow")
      assert.are.equal(1, st.restarts)
      -- Stopped with its stop sequence: TERM, which it handles by exiting 0;
      -- still a failure, as the supervisor had to kill it.
      assert.are.equal(0, st.exit_code)
    end)
  end)

  it("waits for a newline on a notification fd (s6 style)", function()
    u.with(function(s)
      s.service { name = "fd", cmd = u.sh("sleep 0.3; echo >&3; exec sleep 30"), ready = { fd = 3 } }
      s.service { name = "fdeof", cmd = u.sh("exec 3>&-; exec sleep 30"), ready = { fd = 3 },
        restart = "never" }
      s.start("all")
      assert.is_true(s.wait("fd", "starting", 10))
      assert.is_true(s.wait("fd", "running", 10))
      -- Closing the fd without a newline is a start failure.
      assert.is_true(s.wait("fdeof", "exited", 10))
      assert.are.equal("notification fd closed without a newline", s.status("fdeof")[1].reason
        or s.instance("fdeof").history[1].reason)
    end)
  end)

  it("polls a tcp port", function()
    u.with(function(s)
      local port = 20000 + orch.getpid() % 20000
      s.service { name = "tcp", cmd = { P .. "/prog_sup_tcp", port, "300" }, ready = { tcp = port } }
      s.start("tcp")
      assert.is_true(s.wait("tcp", "starting", 10))
      assert.is_true(s.wait("tcp", "running", 10))
      local c = assert(orch.connect { host = "127.0.0.1", port = port })
      c:close()
    end)
  end)

  it("counts only a listener of the service's own processes on a tcp port", function()
    u.with(function(s, logs)
      -- A free port, then held by a process that is not the service.
      local l = assert(orch.listen { host = "127.0.0.1", port = 0 })
      local port = l.port
      l:close()
      local other = assert(orch.spawn { P .. "/prog_sup_tcp", port, stdout = "null" })
      local ok, err = pcall(function()
        h.eventually(function() return #assert(orch.proc.tcp_listeners(port)) > 0 end, "the other listener")
        -- The service binds once the port is free (as nginx retries).
        s.service { name = "web", cmd = { P .. "/prog_sup_tcp", port, "0", "1" }, ready = { tcp = port } }
        s.service { name = "app", cmd = u.sh("exec sleep 30"), depends_on = "web" }
        s.start("all")
        local line = h.eventually(function() return u.logged(logs, "web: not ready: port " .. port) end,
          "the other listener reported")
        assert.truthy(logs[line]:find("is held by pid " .. other.pid .. " (prog_sup_tcp), not by this service", 1, true),
          logs[line])
        assert.are.equal("starting", u.st(s, "web").state)
        assert.are.equal("waiting", u.st(s, "app").state)
        assert.matches("^port %d+ is held by pid " .. other.pid, u.st(s, "web").status_text)
        -- The port is freed: the service binds it and is ready, its
        -- dependent starts.
        other:kill("KILL")
        other:wait()
        assert.is_true(s.wait("all", "running", 20))
        assert.truthy(u.logged(logs, "web: ready (tcp 127.0.0.1:" .. port .. ")"))
        assert.is_nil(u.st(s, "web").status_text)
        local mine = u.st(s, "web").pid
        local holders = {}
        for _, x in ipairs(orch.proc.tcp_listeners(port)) do
          if assert(orch.proc.sockets(mine))[x.inode] then holders[#holders + 1] = x.inode end
        end
        assert.are.equal(1, #holders)
      end)
      if other:running() then
        other:kill("KILL")
        other:wait()
      end
      assert(ok, err)
    end)
  end)

  it("gives a service running as another user a notify socket it can write to, and drops others' datagrams", function()
    u.with(function(s, logs)
      s.service { name = "nb", user = "nobody", cmd = { P .. "/prog_sup_notify", "-r", "100", "-s", "mine" },
        ready = { notify = true } }
      s.service { name = "quiet", user = 65534, group = 65534, cmd = { P .. "/prog_sup_notify", "-n" },
        ready = { notify = true } }
      s.start("all")
      assert.is_true(s.wait("nb", "running", 10))
      assert.are.equal("mine", u.st(s, "nb").status_text)
      assert.truthy(u.logged(logs, "nb: ready (sd_notify READY=1)"))
      -- The socket is the service's user's, 0600, outside orch's private
      -- runtime directory (nobody cannot reach that one).
      assert.is_true(s.wait("quiet", "starting", 10))
      local pid = u.st(s, "quiet").pid
      local path = h.slurp("/proc/" .. pid .. "/environ"):match("NOTIFY_SOCKET=([^%z]+)")
      assert.truthy(path)
      assert.are.equal("600 socket 65534", h.sh("stat -c '%a %F %u' " .. h.shquote(path)))
      assert.is_true(orch.proc.can_access(path, 65534, 65534, "w"))
      -- A process of the same user that is not the service's sends READY=1
      -- and a STATUS: both are dropped, and the drop is logged.
      local outsider = assert(orch.spawn { "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
        P .. "/prog_sup_notify", "-s", "forged", env = { NOTIFY_SOCKET = path }, stdout = "null" })
      local ok, err = pcall(function()
        local line = h.eventually(function()
          return u.logged(logs, "quiet: dropped an sd_notify message from pid " .. outsider.pid)
        end, "the outsider's datagram dropped")
        -- In a cgroup, membership is the test; else the parent chain.
        local why = u.st(s, "quiet").cgroup and "is not in the service's cgroup"
          or "which orch started for something else"
        assert.truthy(logs[line]:find(why, 1, true), logs[line])
        assert.are.equal("starting", u.st(s, "quiet").state)
        assert.are_not.equal("forged", u.st(s, "quiet").status_text)
      end)
      outsider:kill("KILL")
      outsider:wait()
      assert(ok, err)
      s.stop("all")
      assert.are.equal("", h.sh("ls " .. h.shquote(path) .. " 2>/dev/null"))
    end)
  end)

  it("asks a ready function", function()
    u.with(function(s, logs)
      local asked = 0
      s.service { name = "fn", cmd = u.sh("exec sleep 30"), ready = function(svc)
        asked = asked + 1
        orch.sleep(0.2)
        return svc.pid ~= nil
      end }
      s.service { name = "nofn", cmd = u.sh("exec sleep 30"), restart = "never",
        ready = function() return false end }
      s.start("all")
      assert.is_true(s.wait("fn", "running", 10))
      assert.are.equal(1, asked)
      assert.is_true(s.wait("nofn", "exited", 10))
      assert.truthy(u.logged(logs, "nofn: ready function returned false: restarting"))
    end)
  end)
end)

describe("supervisor dependencies", function()
  it("starts dependents after their dependencies are ready and stops them first", function()
    u.with(function(s)
      local events = {}
      local function ev(what) return function(svc) events[#events + 1] = what .. " " .. svc.name end end
      s.service { name = "db", cmd = { P .. "/prog_sup_notify", "-r", "300" }, ready = { notify = true },
        on_start = ev("start"), on_ready = ev("ready"), on_exit = ev("exit") }
      s.service { name = "cache", cmd = u.sh("exec sleep 30"), depends_on = "db",
        on_start = ev("start"), on_exit = ev("exit") }
      s.service { name = "web", cmd = u.sh("exec sleep 30"), depends_on = { "db", "cache" },
        on_start = ev("start"), on_exit = ev("exit") }
      -- Starting web starts what it needs.
      s.start("web")
      assert.is_true(s.wait("all", "running", 10))
      assert.is_true(u.until_true(function() return #events == 4 end))
      assert.are.same({ "start db", "ready db", "start cache", "start web" }, events)
      events = {}
      -- Stopping db stops its dependents first, in order.
      s.stop("db")
      assert.is_true(u.until_true(function() return #events == 3 end))
      assert.are.same({ "exit web", "exit cache", "exit db" }, events)
      for _, st in ipairs(s.status()) do assert.are.equal("stopped", st.state) end
    end)
  end)

  it("waits for a dependency that is restarting", function()
    u.with(function(s, logs)
      s.service { name = "dep", cmd = u.sh("sleep 0.3; exit 1"), ready = { fd = 3 }, backoff = 0.05,
        start_limit = false }
      s.service { name = "user", cmd = u.sh("exec sleep 30"), depends_on = { "dep" } }
      s.start("all")
      -- Two of dep's restarts (so it has been down and up again while user
      -- waited): user still waits, never started.
      assert.is_true(u.until_true(function() return u.st(s, "dep").restarts >= 2 end))
      assert.are.equal("waiting", u.st(s, "user").state)
      assert.is_nil(u.st(s, "user").pid)
      assert.truthy(u.logged(logs, "user: waiting for dep to be ready"))
      s.stop("all")
      assert.are.equal("stopped", u.st(s, "user").state)
    end)
  end)
end)

describe("supervisor heartbeats", function()
  it("gives the child a heartbeat slot and restarts it when it stalls", function()
    local key = h.key()
    local ok, err = pcall(u.with, function(s, logs)
      s.service { name = "beats", cmd = { P .. "/prog_hb_client", "-e", "-i", "50" },
        heartbeat = { timeout = 0.5, key = key } }
      s.service { name = "stall", cmd = { P .. "/prog_hb_client", "-e", "-i", "50", "-s", "5" },
        heartbeat = { timeout = 0.5, key = key }, backoff = 0.05, start_limit = false }
      s.start("all")
      assert.is_true(u.until_true(function() return u.st(s, "stall").restarts >= 2 end, 20))
      assert.truthy(u.logged(logs, "stall: missed heartbeat"))
      assert.are.equal(0, u.st(s, "beats").restarts)
      assert.are.equal("running", u.st(s, "beats").state)
      -- The slots name the services' processes.
      local t = assert(orch.heartbeat.open { key = key })
      local names = {}
      for _, slot in ipairs(t:slots()) do names[slot.name] = slot.pid end
      t:close()
      assert.are.equal(u.st(s, "beats").pid, names.beats)
    end)
    local t = orch.heartbeat.open { key = key }
    if t then
      t:remove()
      t:close()
    end
    assert(ok, err)
  end)
end)

describe("supervisor heartbeat deadlines", function()
  -- Both services take 1.2 s to become ready, four times their heartbeat
  -- timeout, and beat only once ready (as a daemon that loads its data
  -- first): the deadline runs from READY, so neither is killed while
  -- starting; once they stop beating, the deadline does catch them.
  it("start counting when the service is ready, not when it is spawned", function()
    local key = h.key()
    local ok, err = pcall(u.with, function(s, logs)
      s.service { name = "pings", cmd = { P .. "/prog_sup_notify", "-r", "1200", "-i", "50", "-p", "8" },
        ready = { notify = true }, heartbeat = { timeout = 0.3 }, backoff = 0.05, start_limit = false }
      s.service { name = "beats", ready = { fd = 3 }, backoff = 0.05, start_limit = false,
        heartbeat = { timeout = 0.3, key = key },
        cmd = u.sh("sleep 1.2; echo >&3; exec " .. P .. "/prog_hb_client -e -i 50 -s 8") }
      s.start("all")
      for _, name in ipairs { "pings", "beats" } do
        -- The first missed deadline comes after the first READY, once the
        -- beats have stopped (a deadline from the spawn would kill it at
        -- 0.3 s, before it is ever ready).
        local missed = h.eventually(function() return u.logged(logs, name .. ": missed heartbeat") end,
          name .. " restarted for a missed heartbeat")
        local ready_at = u.logged(logs, name .. ": ready (")
        assert.truthy(ready_at, name .. " was never ready")
        assert.is_true(missed > ready_at)
        local first = h.eventually(function()
          local hist = s.instance(name).history
          return hist and hist[1]
        end, name .. "'s first exit")
        assert.matches("^missed heartbeat", first.reason)
      end
    end)
    local t = orch.heartbeat.open { key = key }
    if t then
      t:remove()
      t:close()
    end
    assert(ok, err)
  end)
end)

describe("supervisor limits", function()
  it("restarts a service over its memory limit", function()
    u.with(function(s, logs)
      s.service { name = "fat", cmd = { P .. "/prog_sup_mem", "64" }, backoff = 0.05, start_limit = false,
        limits = { rss = "16M", for_seconds = 0, interval = 0.05 } }
      s.service { name = "thin", cmd = { P .. "/prog_sup_mem", "1" },
        limits = { rss = "64M", for_seconds = 0, interval = 0.05 } }
      s.start("all")
      assert.is_true(u.until_true(function() return u.st(s, "fat").restarts >= 2 end, 20))
      assert.truthy(u.logged(logs, "fat: limit exceeded: rss "))
      assert.truthy(u.logged(logs, "above 16.0M: restarting"))
      assert.are.equal(0, u.st(s, "thin").restarts)
    end)
  end)

  it("restarts a service that stays over its CPU limit", function()
    u.with(function(s, logs)
      s.service { name = "spin", cmd = u.sh("while :; do :; done"), backoff = 0.05, start_limit = false,
        limits = { cpu_percent = 5, for_seconds = 0.2, interval = 0.1 } }
      s.start("spin")
      assert.is_true(u.until_true(function() return u.st(s, "spin").restarts >= 1 end, 20))
      assert.truthy(u.logged(logs, "spin: limit exceeded: cpu "))
    end)
  end)
end)

describe("supervisor forking daemons", function()
  it("follows a double-forking daemon through its pidfile", function()
    u.with(function(s, logs, dir)
      local pidfile = dir .. "/daemon.pid"
      s.service { name = "daemon", cmd = { P .. "/forking_daemon", pidfile, dir .. "/daemon.log", "50" },
        pidfile = pidfile, backoff = 0.05 }
      s.start("daemon")
      assert.is_true(s.wait("daemon", "running", 10))
      local pid = u.st(s, "daemon").pid
      assert.are.equal(tostring(pid), h.slurp(pidfile):match("%d+"))
      assert.is_true(u.alive(pid))
      assert.truthy(u.logged(logs, "daemon: main process is now " .. pid .. " (pidfile "))
      -- It left orch's process group: killing it is seen all the same.
      assert.are_not.equal(orch.proc.info(pid).pgid, orch.proc.info(orch.getpid()).pgid)
      orch.kill(pid, "KILL")
      assert.is_true(u.until_true(function()
        local st = u.st(s, "daemon")
        return st.state == "running" and st.pid ~= pid
      end))
      assert.are.equal("KILL", u.st(s, "daemon").exit_signal)
      local pid2 = u.st(s, "daemon").pid
      s.stop("daemon")
      assert.is_false(u.alive(pid2))
      assert.are.equal(0, u.st(s, "daemon").exit_code)
    end)
  end)

  it("follows MAINPID= from sd_notify", function()
    u.with(function(s, logs)
      s.service { name = "mp", cmd = u.sh(P .. "/prog_sup_notify -m & sleep 0.5; exit 0"),
        ready = { notify = true }, backoff = 0.05 }
      s.start("mp")
      assert.is_true(s.wait("mp", "running", 10))
      assert.is_true(u.until_true(function() return u.logged(logs, "(MAINPID)") ~= nil end))
      local pid = u.st(s, "mp").pid
      -- The launcher exits: the service runs on.
      local launcher = s.instance("mp").run.pid
      assert.are_not.equal(launcher, pid)
      h.eventually(function() return not u.alive(launcher) and s.instance("mp").run.proc_done end,
        "the launcher's exit")
      assert.are.equal("running", u.st(s, "mp").state)
      assert.are.equal(pid, u.st(s, "mp").pid)
      orch.kill(pid, "KILL")
      assert.is_true(u.until_true(function()
        local st = u.st(s, "mp")
        return st.restarts == 1 and st.state == "running"
      end))
    end)
  end)
end)
