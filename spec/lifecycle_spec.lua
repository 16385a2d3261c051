-- orch's own process lifecycle, tested from the outside with real processes
-- and real signals: the default signal table of `orch run`, `orch every` and
-- `orch watchdog`; one orchestrator per control socket (the lock); the
-- daemon steps (inherited descriptors closed, --daemon/--pidfile/--log).
-- The PID 1 integration spec is spec/init_spec.lua.
local h = require "spec.helper"
local orch = h.orch

-- Every signal of the table whose default action would end orch (TERM and
-- INT have their own rule), realtime ones included.
local GUARDED = { "HUP", "QUIT", "TRAP", "USR1", "USR2", "ALRM", "STKFLT", "XCPU", "XFSZ",
                  "VTALRM", "PROF", "IO", "PWR", "SYS", "RTMIN", "RTMIN+5", "RTMIN+20" }

-- Shorter than h.run's 30 s guard, so a condition that never comes fails
-- the test with its name (and the test's clean-up runs).
local function eventually(pred, what)
  return h.eventually(pred, what, 20)
end

local function pid_in(path)
  return tonumber(h.slurp(path):match("%d+"))
end

-- What pid's descriptors point to (`ls -l /proc/PID/fd`).
local function fd_targets(pid)
  return (h.sh("ls -l /proc/" .. pid .. "/fd 2>/dev/null"))
end

local function count(text, plain)
  local n, i = 0, 1
  while true do
    local s, e = text:find(plain, i, true)
    if not s then return n end
    n, i = n + 1, e + 1
  end
end

-- Kills (KILL) and reaps the processes of a test that failed half-way.
local function reaper(finally)
  local procs, pids = {}, {}
  finally(function()
    for _, pid in ipairs(pids) do if h.alive(pid) then orch.kill(pid, "KILL") end end
    for _, p in ipairs(procs) do if h.alive(p.pid) then orch.kill(p.pid, "KILL") end end
    -- A status reaped by an earlier loop is never reported again: bounded.
    h.run(function()
      for _, p in ipairs(procs) do p:wait(5) end
    end)
  end)
  return function(p) procs[#procs + 1] = p return p end, function(pid) pids[#pids + 1] = pid end
end

describe("the signal table of orch run", function()
  it("survives every guarded signal, logs each once, and a script's handler wins", function()
    local keep, watch = reaper(finally)
    local dir = h.tmpdir()
    local script = h.script(string.format([[
      local dir = %q
      local n = 0
      orch.signal.on("RTMAX", function()
        n = n + 1
        local f = io.open(dir .. "/mine", "w") f:write(n) f:close()
      end)
      -- The child's pid file says the handler above is in place.
      local p = orch.spawn{ "sh", "-c", "echo $$ > " .. dir .. "/child; exec sleep 300", pgroup = true }
      p:wait()
    ]], dir))
    h.run(function()
      local p = keep(assert(orch.spawn{ h.bin, "run", "--no-socket", script, stderr = dir .. "/err" }))
      local child = eventually(function() return pid_in(dir .. "/child") end, "the child")
      watch(child)
      for _ = 1, 2 do
        for _, s in ipairs(GUARDED) do assert(p:kill(s)) end
      end
      -- RTMAX is delivered after every signal sent before it; the script's
      -- own handler for it runs instead of the default one.
      assert(p:kill("RTMAX"))
      eventually(function() return h.slurp(dir .. "/mine") == "1" end, "the script's RTMAX handler")
      local err = eventually(function()
        local e = h.slurp(dir .. "/err")
        for _, s in ipairs(GUARDED) do
          if not e:find("received SIG" .. s .. ": ignored", 1, true) then return nil end
        end
        return e
      end, "a log line per signal")
      for _, s in ipairs(GUARDED) do
        assert.are.equal(1, count(err, "received SIG" .. s .. ": ignored"), s .. "\n" .. err)
      end
      assert.is_nil(err:find("SIGRTMAX:", 1, true), err)
      assert.is_true(p:running())
      assert.is_true(h.alive(child))
      -- TERM with no handler: the child gets it too, orch ends by it.
      assert(p:kill("TERM"))
      local code, sig = p:wait()
      assert.is_nil(code)
      assert.are.equal("TERM", sig)
      eventually(function() return not h.alive(child) end, "the child to end")
      assert.matches("received SIGTERM (no handler): SIGTERM sent to 1 child, exiting",
                     h.slurp(dir .. "/err"), 1, true)
    end)
  end)

  it("leaves a signal the script ignores or resets alone", function()
    local code, _, err = h.cli({ "run", "--no-socket", h.script([[
      assert(orch.signal.ignore("USR2"))
      os.execute("kill -USR2 " .. orch.getpid())
      assert(orch.signal.default("HUP"))
      os.execute("kill -HUP " .. orch.getpid())
      orch.sleep(30)
    ]]) })
    assert.are.equal(128 + 1, code, err)   -- ended by HUP, as asked
    assert.is_nil(err:find("SIGUSR2", 1, true), err)
  end)
end)

describe("orch every and signals", function()
  it("ignores HUP and USR2 (logged once); a second TERM kills the run's group at once", function()
    local keep, watch = reaper(finally)
    local dir = h.tmpdir()
    h.run(function()
      local p = keep(assert(orch.spawn{ h.bin, "every", "0.1", "--grace", "300", "--",
        "sh", "-c", "trap '' TERM; echo $$ > " .. dir .. "/pid; while :; do sleep 0.05; done",
        stderr = dir .. "/err" }))
      local child = eventually(function() return pid_in(dir .. "/pid") end, "the first run")
      watch(child)
      for _ = 1, 3 do assert(p:kill("HUP")) assert(p:kill("USR2")) end
      eventually(function()
        local e = h.slurp(dir .. "/err")
        return e:find("received SIGHUP: ignored", 1, true) and e:find("received SIGUSR2: ignored", 1, true)
      end, "HUP and USR2 logged")
      assert(p:kill("TERM"))
      eventually(function() return h.slurp(dir .. "/err"):find("SIGTERM: stopping", 1, true) end, "the stop")
      assert.is_true(h.alive(child))           -- it ignores TERM; --grace is 300 s
      assert(p:kill("TERM"))
      local code = p:wait()
      assert.are.equal(1, code, h.slurp(dir .. "/err"))
      eventually(function() return not h.alive(child) end, "the run to be killed")
      local err = h.slurp(dir .. "/err")
      assert.are.equal(1, count(err, "received SIGHUP"), err)
      assert.are.equal(1, count(err, "received SIGUSR2"), err)
      assert.matches("SIGTERM again: SIGKILL to the running program", err, 1, true)
    end)
  end)

  it("--log FILE gets orch's lines and the runs' output; USR1 reopens it", function()
    local keep = reaper(finally)
    local dir = h.tmpdir()
    local log = dir .. "/every.log"
    h.run(function()
      local p = keep(assert(orch.spawn{ h.bin, "every", "0.05", "--log", log, "--",
        "sh", "-c", "echo tick-$$", stderr = dir .. "/err" }))
      eventually(function() return h.slurp(log):find("tick%-%d+") and h.slurp(log):find("run 2:", 1, true) end,
                   "runs in the log")
      assert(os.rename(log, log .. ".1"))
      assert(p:kill("USR1"))
      eventually(function()
        local l = h.slurp(log)
        return l:find("SIGUSR1: log file reopened", 1, true) and l:find("tick%-%d+")
      end, "the new log file")
      assert(p:kill("TERM"))
      assert.are.equal(0, p:wait())
      assert.are.equal("", h.slurp(dir .. "/err"))
    end)
  end)
end)

describe("the daemon steps", function()
  it("orch.daemonize closes inherited descriptors, except keep_fds", function()
    local _, watch = reaper(finally)
    local dir = h.tmpdir()
    local script = h.script(string.format([[
      local dir = %q
      assert(orch.daemonize{ pidfile = dir .. "/pid", keep_fds = { 8 } })
      io.open(dir .. "/ready", "w"):close()
      orch.sleep(300)
    ]], dir))
    local ok = os.execute(string.format("%s run --no-socket %s 7>%s 8>%s", h.shquote(h.bin), h.shquote(script),
      h.shquote(dir .. "/seven"), h.shquote(dir .. "/eight")))
    assert.is_true(ok)
    local pid = pid_in(dir .. "/pid")
    watch(pid)
    h.run(function()
      eventually(function() return io.open(dir .. "/ready") end, "the daemon")
      local fds = fd_targets(pid)
      assert.is_nil(fds:find(dir .. "/seven", 1, true), fds)
      assert.truthy(fds:find(" 8 -> " .. dir .. "/eight", 1, true), fds)
      assert(orch.kill(pid, "TERM"))
      eventually(function() return not h.alive(pid) end, "the daemon to end")
    end)
  end)

  it("orch every --daemon --pidfile --log: detached, with a log, without inherited fds", function()
    local _, watch = reaper(finally)
    local dir = h.tmpdir()
    local log, pidfile = dir .. "/every.log", dir .. "/every.pid"
    local ok = os.execute(string.format("%s every 0.05 --daemon --pidfile %s --log %s -- sh -c 'echo tick' 7>%s",
      h.shquote(h.bin), h.shquote(pidfile), h.shquote(log), h.shquote(dir .. "/seven")))
    assert.is_true(ok)
    local pid = pid_in(pidfile)
    watch(pid)
    h.run(function()
      eventually(function() return h.slurp(log):find("tick\n", 1, true) and h.slurp(log):find("run 2:", 1, true) end,
                   "the daemon's log")
      local fds = fd_targets(pid)
      assert.is_nil(fds:find(dir .. "/seven", 1, true), fds)
      -- The pidfile is locked: a second daemon refuses.
      local code, _, err = h.cli({ "every", "1", "--daemon", "--pidfile", pidfile, "--", "true" })
      assert.are.equal(1, code)
      assert.matches("already running (pid " .. pid .. " holds", err, 1, true)
      assert(orch.kill(pid, "HUP"))
      eventually(function() return h.slurp(log):find("received SIGHUP: ignored", 1, true) end, "HUP logged")
      assert(orch.kill(pid, "TERM"))
      eventually(function() return not h.alive(pid) end, "the daemon to stop")
      assert.matches("SIGTERM: stopping", h.slurp(log), 1, true)
    end)
  end)

  it("orch watchdog --daemon --pidfile --log", function()
    local _, watch = reaper(finally)
    local dir = h.tmpdir()
    local key = h.key()
    local t = assert(require("orch.heartbeat").open{ key = key, create = true, slots = 4 })
    finally(function() pcall(t.remove, t) pcall(t.close, t) end)
    local log, pidfile = dir .. "/wd.log", dir .. "/wd.pid"
    local ok = os.execute(string.format("%s watchdog --key 0x%x --daemon --pidfile %s --log %s 7>%s",
      h.shquote(h.bin), key, h.shquote(pidfile), h.shquote(log), h.shquote(dir .. "/seven")))
    assert.is_true(ok)
    local pid = pid_in(pidfile)
    watch(pid)
    h.run(function()
      -- Watching (and its log set up for the signal table): its first line.
      eventually(function() return h.slurp(log):find("watching heartbeat table", 1, true) end, "the daemon")
      local fds = fd_targets(pid)
      assert.is_nil(fds:find(dir .. "/seven", 1, true), fds)
      assert(orch.kill(pid, "USR1"))
      eventually(function() return h.slurp(log):find("received SIGUSR1: ignored", 1, true) end, "USR1 logged")
      assert(orch.kill(pid, "TERM"))
      eventually(function() return not h.alive(pid) end, "the daemon to stop")
      assert.matches("SIGTERM: stopping", h.slurp(log), 1, true)
    end)
  end)
end)

describe("one orchestrator per control socket", function()
  local POLICY = [[
    local dir = ...
    local sup = require "orch.supervisor"
    sup.configure{ runtime_dir = dir }
    sup.service{ name = "s", cmd = { "sh", "-c", "echo $$ >> " .. dir .. "/starts; exec sleep 300" } }
    sup.run()
  ]]

  local function start(dir, args, env)
    local cmd = { h.bin, "run" }
    for _, a in ipairs(args) do cmd[#cmd + 1] = a end
    cmd.stderr = dir .. "/err1"
    cmd.env = env
    return assert(orch.spawn(cmd))
  end

  local function ctl_ok(sock)
    return h.cli({ "ctl", "--socket", sock, "ping" }) == 0
  end

  it("a second orch run for the same socket starts nothing and names the holder", function()
    local keep = reaper(finally)
    local dir = h.tmpdir()
    local script = dir .. "/policy.lua"
    h.write(script, POLICY)
    local sock = dir .. "/ctl.sock"
    h.run(function()
      local p = keep(start(dir, { "--socket", sock, script, dir }))
      eventually(function() return ctl_ok(sock) and h.slurp(dir .. "/starts") ~= "" end, "the first orch")
      local code, _, err = h.cli({ "run", "--socket", sock, script, dir })
      assert.are.equal(75, code, err)
      assert.matches("control socket " .. sock .. ": already held by pid " .. p.pid, err, 1, true)
      -- What the holder runs: its command line, with the script.
      assert.matches("already held by pid " .. p.pid .. " (running " .. h.bin .. " run --socket " .. sock .. " "
        .. script .. " " .. dir .. "; lock file " .. sock .. ".lock): another orchestrator runs", err, 1, true)
      -- The same through $ORCH_SOCKET, and through the default path when
      -- the script loads the supervisor.
      code, _, err = h.cli({ "run", script, dir }, nil, { ORCH_SOCKET = sock })
      assert.are.equal(75, code, err)
      assert.are.equal(1, count(h.slurp(dir .. "/starts"), "\n"))
      local st = assert(io.open(sock .. ".lock")):close() and h.sh("stat -c %a " .. h.shquote(sock .. ".lock"))
      assert.are.equal("600", st)
      assert(p:kill("TERM"))
      assert.are.equal(0, p:wait())
    end)
  end)

  it("the holder's command line is shown escaped: control characters, bytes that are not UTF-8", function()
    local keep = reaper(finally)
    local dir = h.tmpdir()
    local script = dir .. "/policy.lua"
    h.write(script, POLICY)
    local sock = dir .. "/ctl.sock"
    -- Arguments the script ignores, meant for the terminal of whoever
    -- reads the second orch's message.
    local evil = "\27[2J\27]0;owned\7\nfake line\r\t\255\194\155x\\"
    h.run(function()
      local p = keep(start(dir, { "--socket", sock, script, dir, evil, "" }))
      eventually(function() return ctl_ok(sock) and h.slurp(dir .. "/starts") ~= "" end, "the first orch")
      local code, _, err = h.cli({ "run", "--socket", sock, script, dir })
      assert.are.equal(75, code, err)
      local shown = "\\27[2J\\27]0;owned\\7\\nfake line\\13\\t\\255\\194\\155x\\\\"
      assert.matches("already held by pid " .. p.pid .. " (running " .. h.bin .. " run --socket " .. sock .. " "
        .. script .. " " .. dir .. " " .. shown .. " ; lock file ", err, 1, true)
      -- One line, nothing raw of the argument in it.
      assert.are.equal(1, count(err, "\n"), err)
      assert.is_nil(err:find("[\0-\8\11-\31\127\128-\255]"), err)
      assert(p:kill("TERM"))
      assert.are.equal(0, p:wait())
    end)
  end)

  it("the holder is described only when it runs as orch's uid: another uid's command line is never read into the message", function()
    local keep = reaper(finally)
    local ctl = require "orch.ctl"
    -- (sleep adds its arguments: a unique one that it takes.)
    local marker = ("0.%d%d"):format(orch.getpid(), math.random(1, 1e9))
    h.run(function()
      -- The same program and argument, as orch's uid and as nobody (setpriv).
      local mine = keep(assert(orch.spawn { "sleep", "1000", marker }))
      local other = keep(assert(orch.spawn { "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
        "sleep", "1000", marker }))
      eventually(function()
        local info = orch.proc.info(other.pid)
        return info and info.uid == 65534 and type(info.cmdline) == "table" and info.cmdline[1] == "sleep"
      end, "the second uid's sleep")
      assert.are.equal("sleep 1000 " .. marker, ctl.describe_pid(mine.pid))
      assert.is_nil(ctl.describe_pid(other.pid))
      assert(mine:kill("KILL"))
      assert(other:kill("KILL"))
      mine:wait()
      other:wait()
    end)
  end)

  it("the default socket is locked when the script loads the supervisor", function()
    local keep = reaper(finally)
    local dir = h.tmpdir()
    -- A unique script name: its default socket is /run/orch/<name>.sock.
    local name = ("lifecycle_%d_%d"):format(orch.getpid(), math.random(1, 1e9))
    local script = dir .. "/" .. name .. ".lua"
    h.write(script, POLICY)
    local sock = require("orch.ctl").default_socket(script)
    h.run(function()
      local p = keep(start(dir, { script, dir }, { ORCH_SOCKET = "" }))
      eventually(function() return ctl_ok(sock) and h.slurp(dir .. "/starts") ~= "" end, "the first orch")
      local code, _, err = h.cli({ "run", script, dir })
      assert.are.equal(75, code, err)
      assert.matches("already held by pid " .. p.pid, err, 1, true)
      assert.is_nil(err:find("traceback", 1, true), err)
      assert.are.equal(1, count(h.slurp(dir .. "/starts"), "\n"))
      assert(p:kill("TERM"))
      assert.are.equal(0, p:wait())
      os.remove(sock .. ".lock")
    end)
  end)

  it("after kill -9 the next orch takes the lock and replaces the stale socket", function()
    local keep, watch = reaper(finally)
    local dir = h.tmpdir()
    local script = dir .. "/policy.lua"
    h.write(script, POLICY)
    local sock = dir .. "/ctl.sock"
    h.run(function()
      local p = keep(start(dir, { "--socket", sock, script, dir }))
      eventually(function() return ctl_ok(sock) and h.slurp(dir .. "/starts") ~= "" end, "the first orch")
      local svc = pid_in(dir .. "/starts")
      watch(svc)
      assert(p:kill("KILL"))
      p:wait()
      assert.is_true(os.execute("test -S " .. h.shquote(sock)))   -- the stale socket file is left
      assert.is_false(ctl_ok(sock))
      orch.kill(svc, "KILL")                  -- what kill -9 left running
      local q = keep(start(dir, { "--socket", sock, script, dir }))
      eventually(function() return ctl_ok(sock) end, "the second orch to serve the socket")
      local _, out = h.cli({ "ctl", "--socket", sock, "--json", "ping" })
      assert.matches('"pid":' .. q.pid, out, 1, true)
      assert(q:kill("TERM"))
      assert.are.equal(0, q:wait())
    end)
  end)

  it("the lock is kept across orch ctl reexec", function()
    local keep = reaper(finally)
    local dir = h.tmpdir()
    local script = dir .. "/policy.lua"
    h.write(script, POLICY)
    local sock = dir .. "/ctl.sock"
    h.run(function()
      local p = keep(start(dir, { "--socket", sock, script, dir }))
      eventually(function() return ctl_ok(sock) and h.slurp(dir .. "/starts") ~= "" end, "the first orch")
      local code, _, err = h.cli({ "ctl", "--socket", sock, "reexec" })
      assert.are.equal(0, code, err)
      eventually(function()
        local _, out = h.cli({ "ctl", "--socket", sock, "--json", "ping" })
        return out:find('"pid":' .. p.pid, 1, true)
      end, "the new image to answer")
      code, _, err = h.cli({ "run", "--socket", sock, script, dir })
      assert.are.equal(75, code, err)
      assert.matches("already held by pid " .. p.pid, err, 1, true)
      assert.are.equal(1, count(h.slurp(dir .. "/starts"), "\n"))
      assert(p:kill("TERM"))
      assert.are.equal(0, p:wait())
    end)
  end)
end)
