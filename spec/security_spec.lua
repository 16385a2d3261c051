--- The trust rules of doc/security.md, each proven by the attack it stops:
-- a second user (nobody, uid 65534, through setpriv) prepares the trap, and
-- root orch (the spec runs as root, here and in CI) must refuse it, say why,
-- and harm nothing. Every test cleans up its processes, files and IPC.
local h = require "spec.helper"
local u = require "spec.supervisor_util"
local orch = h.orch

local NOBODY = { "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups" }

local function as_nobody(...)
  local cmd = {}
  for _, a in ipairs(NOBODY) do cmd[#cmd + 1] = a end
  for _, a in ipairs({ ... }) do cmd[#cmd + 1] = a end
  return cmd
end

--- Runs cmd (a list) to its end in a task; returns code, stdout, stderr.
-- A command still running after 20 s (a refusal that came back as a
-- watchdog at work) is killed and reported as code "timeout".
local function run(cmd)
  cmd.stdout, cmd.stderr = "pipe", "pipe"
  local p = assert(orch.spawn(cmd))
  local out, err = {}, {}
  local t1 = orch.task(function() out[1] = p.stdout:read_all() end)
  local t2 = orch.task(function() err[1] = p.stderr:read_all() end)
  local timed_out = false
  local guard = orch.timer.after(20, function()
    timed_out = true
    p:kill("KILL")
  end)
  local code = p:wait()
  guard:stop()
  if timed_out then code = "timeout" end
  t1:join() t2:join()
  return code, out[1] or "", err[1] or ""
end

local function remove_shm(key)
  os.execute(("ipcrm -M %d 2>/dev/null"):format(key))
end

--- nobody creates the heartbeat table `key` first (mode 0666) and registers
-- `pid` (root's) in it with a short timeout, as `orch beat` would.
local function forge_table(key, pid)
  local code, _, err = run(as_nobody(h.bin, "beat", "--shared", "--key", tostring(key), "--pid",
    tostring(pid), "--name", "victim", "--timeout", "0.05"))
  assert(code == 0, "orch beat as nobody failed: " .. err)
  local owner = h.sh("ipcs -m -c | awk '$1 == " .. h.sh("ipcs -m | awk '$1 == \"" ..
    h.keystr(key) .. "\" {print $2}'") .. " {print $2, $3}'")
  assert(owner:match("^666 nobody"), "the forged table is not nobody's 0666: " .. owner)
end

describe("heartbeat tables another user created", function()
  it("orch watchdog refuses a table nobody created, and kills nothing", function()
    local key = h.key()
    h.run(function()
      local victim = assert(orch.spawn { "sleep", "60" })
      local ok, err = pcall(function()
        forge_table(key, victim.pid)
        local code, _, stderr = run { h.bin, "watchdog", "--key", tostring(key), "--grace", "1" }
        assert.are.equal(1, code)
        assert.matches("refused: the table belongs to uid 65534 (created by uid 65534), neither this user (uid 0) nor root",
          stderr, 1, true)
        assert.is_true(victim:running())
        -- Accepting shared tables changes nothing: the owner still is not trusted.
        code, _, stderr = run { h.bin, "watchdog", "--key", tostring(key), "--shared", "--uid", "0" }
        assert.are.equal(1, code)
        assert.matches("belongs to uid 65534", stderr, 1, true)
        assert.is_true(victim:running())
      end)
      victim:kill("KILL")
      victim:wait()
      remove_shm(key)
      assert(ok, err)
    end, 90)
  end)

  it("a running watchdog refuses a forged table that appears later, and logs why", function()
    local key = h.key()
    h.run(function()
      local victim = assert(orch.spawn { "sleep", "60" })
      local events, lines = {}, {}
      local w
      local ok, err = pcall(function()
        w = assert(require("orch.watchdog").start {
          key = key, grace = 1, scan = 0.01,
          log = function(m) lines[#lines + 1] = m end,
          on_event = function(ev) events[#events + 1] = ev end,
        })
        h.eventually(function()
          for _, ev in ipairs(events) do if ev.event == "waiting" then return true end end
        end, "the watchdog to wait for the table", 10)
        forge_table(key, victim.pid)
        local ev = h.eventually(function()
          for _, e in ipairs(events) do if e.event == "untrusted" then return e end end
        end, "the refusal", 10)
        assert.matches("belongs to uid 65534", ev.reason, 1, true)
        assert.matches("refused", lines[#lines], 1, true)
        assert.are.equal(0, w:status().watching)
        assert.is_true(victim:running())
      end)
      if w then w:stop() end
      victim:kill("KILL")
      victim:wait()
      remove_shm(key)
      assert(ok, err)
    end, 90)
  end)

  it("refuses a root-owned table others may write unless shared is asked for", function()
    local key = h.key()
    h.run(function()
      local t = assert(orch.heartbeat.open { key = key, create = true, mode = 438 --[[0666]], slots = 4 })
      local ok, err = pcall(function()
        local t2, msg, en = orch.heartbeat.open { key = key }
        assert.is_nil(t2)
        assert.are.equal("EACCES", en)
        assert.matches("refused: the table's mode 666 lets other users write it", msg, 1, true)
        local t3 = assert(orch.heartbeat.open { key = key, shared = true })
        t3:close()
        local code, _, stderr = run { h.bin, "watchdog", "--key", tostring(key) }
        assert.are.equal(1, code)
        assert.matches("mode 666", stderr, 1, true)
        code, _, stderr = run { h.bin, "watchdog", "--key", tostring(key), "--shared" }
        assert.are.equal(2, code)
        assert.matches("--shared needs --uid", stderr, 1, true)
      end)
      t:remove()
      t:close()
      assert(ok, err)
    end, 90)
  end)

  it("the supervisor refuses a forged table: a hung service is not kept alive by forged beats", function()
    local key = h.key()
    u.with(function(s, logs)
      -- nobody's table at the supervisor's key, with a slot that beats for
      -- any pid it likes.
      local victim = assert(orch.spawn { "sleep", "60" })
      local ok, err = pcall(function()
        forge_table(key, victim.pid)
        s.configure { heartbeat_key = key }
        s.service { name = "hung", cmd = { "sleep", "60" }, heartbeat = { timeout = 0.2 },
                    restart = "never" }
        s.start("hung")
        h.eventually(function() return u.logged(logs, "hung: cannot start") end, "the refusal", 10)
        local line = logs[u.logged(logs, "hung: cannot start")]
        assert.matches("refused: the table belongs to uid 65534", line, 1, true)
        assert.is_nil(u.st(s, "hung").pid)
        assert.are_not.equal("running", u.st(s, "hung").state)
      end)
      victim:kill("KILL")
      victim:wait()
      remove_shm(key)
      assert(ok, err)
    end)
  end)
end)

--- The lines of a file (without their newlines).
local function file_lines(path)
  local out = {}
  for l in h.slurp(path):gmatch("([^\n]*)\n") do out[#out + 1] = l end
  return out
end

local function stat(path, fmt)
  return h.sh("stat -c " .. h.shquote(fmt) .. " " .. h.shquote(path))
end

--- Waits for the service's run to end (its output fully captured).
local function wait_exited(s, name)
  h.eventually(function()
    local st = u.st(s, name)
    return st.state ~= "running" and st.state ~= "starting" and not st.pid and st
  end, name .. " to end", 20)
end

describe("log files", function()
  it("never follow a symbolic link a service user planted in its log directory", function()
    u.with(function(s, logs, dir)
      os.execute("chmod 755 " .. h.shquote(dir))
      local secret = dir .. "/secret"
      h.write(secret, "root's secret\n")
      os.execute("chmod 600 " .. h.shquote(secret))
      local logdir = dir .. "/logs"
      os.execute("mkdir " .. h.shquote(logdir) .. " && chown 65534 " .. h.shquote(logdir))
      -- The service's user owns its log directory and plants the link.
      local code, _, err = run(as_nobody("ln", "-s", secret, logdir .. "/web.log"))
      assert(code == 0, err)
      s.service { name = "web", user = 65534, restart = "never", log = { dir = logdir },
                  cmd = u.sh("echo first; echo second") }
      s.start("web")
      wait_exited(s, "web")
      h.eventually(function() return u.logged(logs, "web: log lines dropped") end, "the refusal", 10)
      local line = logs[u.logged(logs, "web: log lines dropped")]
      assert.matches(logdir .. "/web.log: refused: it is a symbolic link (never followed)", line, 1, true)
      assert.are.equal("root's secret\n", h.slurp(secret))
      assert.are.equal(2, u.st(s, "web").log_dropped)
      assert.are.equal("600 root", stat(secret, "%a %U"))
    end)
  end)

  it("are created 0640 (log.mode to change it) in a directory of orch's user, root or the service's user", function()
    u.with(function(s, logs, dir)
      os.execute("chmod 755 " .. h.shquote(dir))
      local own = dir .. "/own"
      os.execute("mkdir " .. h.shquote(own) .. " && chown 65534 " .. h.shquote(own))
      s.service { name = "a", restart = "never", log = { dir = dir }, cmd = u.sh("echo a") }
      s.service { name = "b", restart = "never", log = { dir = dir, mode = 384 --[[0600]] }, cmd = u.sh("echo b") }
      s.service { name = "c", user = "nobody", restart = "never", log = { dir = own }, cmd = u.sh("echo c") }
      -- nobody's directory, but the service runs as root: not trusted.
      s.service { name = "d", restart = "never", log = { dir = own }, cmd = u.sh("echo d") }
      for _, n in ipairs { "a", "b", "c", "d" } do s.start(n) end
      for _, n in ipairs { "a", "b", "c", "d" } do wait_exited(s, n) end
      assert.are.equal("a\n", h.slurp(dir .. "/a.log"))
      assert.are.equal("640 root", stat(dir .. "/a.log", "%a %U"))
      assert.are.equal("b\n", h.slurp(dir .. "/b.log"))
      assert.are.equal("600 root", stat(dir .. "/b.log", "%a %U"))
      assert.are.equal("c\n", h.slurp(own .. "/c.log"))
      assert.are.equal("640 root", stat(own .. "/c.log", "%a %U"))
      h.eventually(function() return u.logged(logs, "d: log lines dropped") end, "the refusal", 10)
      assert.matches("refused: the directory " .. own .. " belongs to uid 65534, neither orch's user (uid 0) nor root",
        logs[u.logged(logs, "d: log lines dropped")], 1, true)
      assert.are.equal("", h.slurp(own .. "/d.log"))
      assert.are.equal(1, u.st(s, "d").log_dropped)
    end)
  end)

  it("orch watchdog --log refuses a symbolic link planted in /tmp", function()
    local path = ("/tmp/orch-trust-wd-%d-%d.log"):format(orch.getpid(), os.time())
    local dir = h.tmpdir()
    local target = dir .. "/target"
    h.write(target, "untouched\n")
    h.run(function()
      local code, _, err = run(as_nobody("ln", "-s", target, path))
      assert(code == 0, err)
      code, _, err = run { h.bin, "watchdog", "--key", tostring(h.key()), "--log", path }
      os.remove(path)
      assert.are.equal(1, code)
      assert.matches("watchdog: cannot open the log: logfile.open: " .. path ..
        ": refused: it is a symbolic link (never followed)", err, 1, true)
    end)
    assert.are.equal("untouched\n", h.slurp(target))
  end)
end)

describe("a full log disk", function()
  it("counts every dropped line exactly, says so once, and resumes when space returns", function()
    local mnt = h.tmpdir() .. "/mnt"
    assert(os.execute("mkdir " .. mnt .. " && mount -t tmpfs -o size=64k tmpfs " .. mnt))
    local ok, err = pcall(u.with, function(s, logs, dir)
      -- 16 KiB of filler, then 2000 lines of 100 bytes: about 480 fit.
      assert(os.execute("dd if=/dev/zero of=" .. mnt .. "/filler bs=4096 count=4 2>/dev/null"))
      local range = dir .. "/range"
      h.write(range, "0 2000\n")
      local print_lines = [[read i n < "$1"; while [ $i -lt $n ]; do printf 'L%05d%093d\n' $i 0; i=$((i+1)); done]]
      s.service { name = "chatty", restart = "never", log = { dir = mnt },
                  cmd = { "/bin/sh", "-c", print_lines, "sh", range } }
      s.start("chatty")
      wait_exited(s, "chatty")
      local function notices(text)
        local n = 0
        for _, l in ipairs(logs) do if l:find(text, 1, true) then n = n + 1 end end
        return n
      end
      local dropped = u.st(s, "chatty").log_dropped
      local kept = file_lines(mnt .. "/chatty.log")
      assert.is_true(dropped > 0 and #kept > 0, ("dropped %d, kept %d"):format(dropped, #kept))
      -- Exact: every line is either whole in the file or counted.
      for i, l in ipairs(kept) do assert.are.equal(("L%05d%093d"):format(i - 1, 0), l) end
      assert.are.equal(2000, #kept + dropped)
      assert.are.equal(1, notices("chatty: log lines dropped"))
      assert.matches("chatty: log lines dropped (logfile.write: No space left on device): ",
        logs[u.logged(logs, "chatty: log lines dropped")], 1, true)
      assert.are.equal(0, notices("resumed"))
      -- Space returns: the next run's lines are all written (after a newline
      -- that ends the line the full disk cut short), and that is said once.
      os.remove(mnt .. "/filler")
      h.write(range, "2000 2100\n")
      s.start("chatty")
      wait_exited(s, "chatty")
      assert.are.equal(dropped, u.st(s, "chatty").log_dropped)
      assert.are.equal(1, notices("chatty: log writes resumed (" .. dropped .. " lines dropped)"))
      local all = file_lines(mnt .. "/chatty.log")
      local tail = {}
      for i = #all - 99, #all do tail[#tail + 1] = all[i] end
      for i, l in ipairs(tail) do assert.are.equal(("L%05d%093d"):format(1999 + i, 0), l) end
      -- Whole lines plus at most one piece the full disk cut short.
      assert.is_true(#all == #kept + 100 or #all == #kept + 101)
    end, 90)
    os.execute("umount " .. mnt)
    assert(ok, err)
  end)
end)

describe("the runtime directory", function()
  -- A policy in a directory of its own (readable by every uid) with one
  -- service, `sleep 1000.<marker>`, then `last`: script, marker, dir.
  local function policy(last)
    local dir = h.tmpdir()
    os.execute("chmod 755 " .. h.shquote(dir))
    local marker = ("%d.%d"):format(orch.getpid(), os.time())
    local script = dir .. "/policy.lua"
    h.write(script, ([[
      local sup = require "orch.supervisor"
      sup.service { name = "svc", cmd = { "sleep", "1000.%s" } }
      %s
    ]]):format(marker, last))
    return script, marker, dir
  end
  -- The processes of that service (not pgrep: procps under the sanitizer
  -- preload can hang), killed.
  local function kill_marked(marker)
    local left = {}
    for _, pid in ipairs(orch.proc.list()) do
      if h.slurp("/proc/" .. pid .. "/cmdline") == "sleep\0" .. "1000." .. marker .. "\0" then
        left[#left + 1] = pid
        orch.kill(pid, "KILL")
      end
    end
    return left
  end

  it("a control socket given by path in a directory another user owns or can write to is refused, starting nothing", function()
    local script, marker, dir = policy('print("ran")')
    local theirs, open, sticky, link = dir .. "/theirs", dir .. "/open", dir .. "/sticky", dir .. "/link"
    local rootlink = dir .. "/rootlink"
    local ok, e = pcall(h.run, function()
      assert(os.execute("mkdir -m 700 " .. h.shquote(theirs) .. " && chown 65534 " .. h.shquote(theirs)))
      local code
      assert(os.execute("mkdir -m 777 " .. h.shquote(open) .. " && chmod 777 " .. h.shquote(open)
        .. " && mkdir -m 1777 " .. h.shquote(sticky) .. " && chmod 1777 " .. h.shquote(sticky)
        -- Another user's symbolic link to root's own sticky directory.
        .. " && ln -s " .. h.shquote(sticky) .. " " .. h.shquote(link) .. " && chown -h 65534 " .. h.shquote(link)
        -- root's own link (as /var/run -> /run).
        .. " && ln -s " .. h.shquote(sticky) .. " " .. h.shquote(rootlink)))
      local function orch_run(how, path)
        local cmd = { "env", "-u", "ORCH_SOCKET", h.bin, "run", script }
        if how == "env" then cmd = { "env", "ORCH_SOCKET=" .. path, h.bin, "run", script }
        else table.insert(cmd, 6, "--socket") table.insert(cmd, 7, path) end
        return run(cmd)
      end
      for _, how in ipairs { "--socket", "env" } do
        -- A directory of another user: they may rename or remove what is in it.
        local stdout, stderr
        code, stdout, stderr = orch_run(how, theirs .. "/ctl.sock")
        assert.are.equal(1, code)
        assert.are.equal("", stdout)
        assert.matches("orch: control socket: refused " .. theirs .. "/ctl.sock: ", stderr, 1, true)
        assert.matches("the directory " .. theirs .. " belongs to uid 65534", stderr, 1, true)
        assert.matches("another user could replace the socket", stderr, 1, true)
        assert.matches("(nothing was started)", stderr, 1, true)
        -- Not taken for another orchestrator's lock (exit 75).
        assert.is_nil(stderr:find("another orchestrator", 1, true))
        -- root's directory that every user may write to (not sticky).
        code, stdout, stderr = orch_run(how, open .. "/ctl.sock")
        assert.are.equal(1, code)
        assert.are.equal("", stdout)
        assert.matches("the directory " .. open .. " is writable by every user", stderr, 1, true)
        -- A directory to make in theirs: not made.
        code, stdout, stderr = orch_run(how, theirs .. "/new/ctl.sock")
        assert.are.equal(1, code)
        assert.matches("the directory " .. theirs .. " belongs to uid 65534", stderr, 1, true)
        -- Nothing was made in either.
        assert.is_nil(io.open(theirs .. "/ctl.sock.lock"))
        assert.is_nil(io.open(theirs .. "/new"))
        assert.is_nil(io.open(open .. "/ctl.sock.lock"))
        -- A path through another user's symbolic link is not followed, and
        -- the refusal says why; nothing is made through it.
        for _, sock in ipairs { link .. "/ctl.sock", link .. "/new/ctl.sock" } do
          code, stdout, stderr = orch_run(how, sock)
          assert.are.equal(1, code)
          assert.matches("orch: control socket: refused " .. sock .. ": ", stderr, 1, true)
          assert.matches("the symbolic link " .. link .. " belongs to uid 65534: not followed", stderr, 1, true)
        end
        assert.is_nil(io.open(sticky .. "/ctl.sock.lock"))
        assert.is_nil(io.open(sticky .. "/new"))
        -- Through root's own link (as /var/run/x.sock), and in a directory
        -- made in it: used.
        for _, sock in ipairs { rootlink .. "/ctl-r" .. how:gsub("%W", "") .. ".sock",
                                rootlink .. "/made-" .. how:gsub("%W", "") .. "/ctl.sock" } do
          code, stdout, stderr = orch_run(how, sock)
          assert.are.equal(0, code, stderr)
          assert.are.equal("ran\n", stdout)
        end
        assert.are.equal("700", h.sh("stat -c %a " .. h.shquote(sticky .. "/made-" .. how:gsub("%W", ""))))
        -- Another user's FIFO where the lock file goes (a sticky directory
        -- lets them make it): refused at once, not taken for another
        -- orchestrator's lock (exit 75), and no hang on the open.
        local fifo = sticky .. "/fifo-" .. how:gsub("%W", "") .. ".sock"
        code, _, stderr = run(as_nobody("mkfifo", fifo .. ".lock"))
        assert(code == 0, stderr)
        code, stdout, stderr = orch_run(how, fifo)
        assert.are.equal(1, code)
        assert.are.equal("", stdout)
        assert.matches("orch: control socket " .. fifo .. ": lock " .. fifo .. ".lock: ", stderr, 1, true)
        assert.matches("(nothing was started)", stderr, 1, true)
        assert.is_nil(stderr:find("another orchestrator", 1, true))
        -- A sticky one (as /tmp): no other user may remove or rename orch's files there.
        code, stdout, stderr = orch_run(how, sticky .. "/ctl-" .. how:gsub("%W", "") .. ".sock")
        assert.are.equal(0, code, stderr)
        assert.are.equal("ran\n", stdout)
      end
    end, 60)
    kill_marked(marker)
    os.execute("rm -rf " .. h.shquote(theirs) .. " " .. h.shquote(open) .. " " .. h.shquote(sticky) .. " " .. h.shquote(link)
      .. " " .. h.shquote(rootlink))
    assert(ok, e)
  end)

  it("a /tmp/orch-<uid> another user created first is refused: orch run stops loudly, starting nothing", function()
    -- orch runs as an unusual uid (no XDG_RUNTIME_DIR: the /tmp fallback),
    -- nobody prepares the directory for it.
    local uid = 60000 + orch.getpid() % 5000
    local rdir = "/tmp/orch-" .. uid
    local script, marker = policy("sup.run()")
    os.execute("rm -rf " .. rdir)
    local ok, e = pcall(h.run, function()
      local code, _, err = run(as_nobody("mkdir", "-m", "777", rdir))
      assert(code == 0, err)
      local stderr
      code, _, stderr = run { "setpriv", "--reuid=" .. uid, "--regid=" .. uid, "--clear-groups",
        "env", "-u", "XDG_RUNTIME_DIR", "-u", "ORCH_SOCKET", "HOME=/", h.bin, "run", script }
      local left = kill_marked(marker)
      assert.are.equal(1, code)
      assert.matches("orch: control socket: refused the runtime directory " .. rdir ..
        ": private.mkdir: " .. rdir .. " belongs to uid 65534, not to us", stderr, 1, true)
      assert.matches("remove it if it is not yours, set XDG_RUNTIME_DIR to a private directory", stderr, 1, true)
      assert.matches("(nothing was started)", stderr, 1, true)
      -- No service was started.
      assert.are.same({}, left)
    end, 60)
    os.execute("rm -rf " .. rdir)
    assert(ok, e)
  end)
end)

describe("the runtime directory, client side", function()
  it("orch ctl never talks to a socket in a /tmp/orch-<uid> another user created", function()
    local uid = 60000 + (orch.getpid() + 1) % 5000
    local rdir = "/tmp/orch-" .. uid
    local dir = h.tmpdir()
    os.execute("chmod 755 " .. h.shquote(dir))
    local got = dir .. "/got"
    local trap = dir .. "/trap.lua"
    -- nobody's fake orchestrator: records whatever a client sends it.
    h.write(trap, ([[
      local l = assert(orch.listen { unix = %q, mode = 438 })
      print("listening")
      io.stdout:flush()
      local c = l:accept()
      local line = c:read_line()
      local f = io.open(%q, "w") f:write(tostring(line)) f:close()
    ]]):format(rdir .. "/policy.sock", got))
    os.execute("rm -rf " .. rdir)
    h.run(function()
      local code, _, err = run(as_nobody("mkdir", "-m", "777", rdir))
      assert(code == 0, err)
      local cmd = as_nobody(h.bin, "run", trap)
      cmd.stdout = "pipe"
      local attacker = assert(orch.spawn(cmd))
      local ok, perr = pcall(function()
        assert.are.equal("listening", attacker.stdout:read_line())
        local stderr
        code, _, stderr = run { "setpriv", "--reuid=" .. uid, "--regid=" .. uid, "--clear-groups",
          "env", "-u", "XDG_RUNTIME_DIR", "-u", "ORCH_SOCKET", "HOME=/", h.bin, "ctl", "status" }
        assert.are.equal(3, code)
        assert.matches("refused the runtime directory " .. rdir .. ": private.mkdir: " .. rdir ..
          " belongs to uid 65534, not to us", stderr, 1, true)
        assert.are.equal("", h.slurp(got))
      end)
      attacker:kill("KILL")
      attacker:wait()
      os.execute("rm -rf " .. rdir)
      assert(ok, perr)
    end, 60)
    os.execute("rm -rf " .. rdir)
  end)
end)

describe("the control socket, client side", function()
  it("orch ctl, attach and top refuse a server another user runs at a socket given by path, unless --trust-uid names that user", function()
    -- root's directory every user may write to: nobody listens there.
    local dir = h.tmpdir()
    os.execute("chmod 755 " .. h.shquote(dir) .. " && mkdir -m 777 " .. h.shquote(dir .. "/pub")
      .. " && chmod 777 " .. h.shquote(dir .. "/pub"))
    local sock, got, trap = dir .. "/pub/ctl.sock", dir .. "/pub/got", dir .. "/trap.lua"
    -- nobody's fake orchestrator: records every line a client sends it
    -- (before it replies), and replies with escape sequences.
    h.write(trap, ([[
      local l = assert(orch.listen { unix = %q, mode = 438 })
      print("listening")
      io.stdout:flush()
      while true do
        local c = l:accept()
        local line = c:read_line()
        if line then
          local f = io.open(%q, "a") f:write(line, "\n") f:close()
          c:write('{"ok":true,"version":"\\u001b]0;pwned\\u0007","pid":1,"output":"\\u001b[2J","result":"1"}\n')
        end
        c:close()
      end
    ]]):format(sock, got))
    h.run(function()
      local cmd = as_nobody(h.bin, "run", trap)
      cmd.stdout = "pipe"
      local attacker = assert(orch.spawn(cmd))
      local ok, perr = pcall(function()
        assert.are.equal("listening", attacker.stdout:read_line())
        local refusal = "refused: " .. sock .. " is served by uid 65534 (pid " .. attacker.pid
          .. "), neither yours (uid 0) nor root: that user would receive your requests (eval code included)"
        for _, c in ipairs {
          { h.bin, "ctl", "--socket", sock, "eval", "return 'secret'" },
          { "env", "ORCH_SOCKET=" .. sock, h.bin, "ctl", "ping" },
          { h.bin, "attach", "--socket", sock },
          { h.bin, "top", "--once", "--socket", sock },
        } do
          local code, stdout, stderr = run(c)
          assert.are.equal(3, code, stderr)
          assert.are.equal("", stdout)
          assert.matches(refusal, stderr, 1, true)
          assert.matches("give --trust-uid 65534 if you mean to talk to it", stderr, 1, true)
        end
        -- Nothing reached it.
        assert.is_nil(io.open(got))
        -- Named, it is talked to.
        local code, _, stderr = run { h.bin, "ctl", "--socket", sock, "--trust-uid", "65534", "eval", "return 'meant'" }
        assert.are.equal(0, code, stderr)
        local req = require("orch.ctl.client").decode(h.slurp(got))
        assert.are.same({ cmd = "eval", code = "return 'meant'" }, req)
        code, _, stderr = run { h.bin, "ctl", "--socket", sock, "--trust-uid", "6x", "ping" }
        assert.are.equal(2, code)
        assert.matches("--trust-uid needs a uid (a number), got '6x'", stderr, 1, true)
      end)
      attacker:kill("KILL")
      attacker:wait()
      assert(ok, perr)
    end, 60)
    os.execute("rm -rf " .. h.shquote(dir))
  end)
end)

describe("the supervisor's own log", function()
  it("never spans lines: a hook's traceback is folded into its record", function()
    u.with(function(s, logs)
      s.service { name = "hooked", restart = "never", cmd = { "true" },
                  on_exit = function() error("boom\nsecond line") end }
      s.start("hooked")
      local i = h.eventually(function() return u.logged(logs, "hooked: on_exit hook failed") end, "the hook's failure", 10)
      assert.matches("boom\\nsecond line\\nstack traceback:\\n\\t", logs[i], 1, true)
      for _, l in ipairs(logs) do assert.is_nil(l:find("%c")) end
    end)
  end)

  it("rate limits a crash loop's lines and sums them up", function()
    local slog = require "orch.supervisor.log"
    local window, burst = slog.loop_window, slog.loop_burst
    slog.loop_window, slog.loop_burst = 1, 5
    local ok, err = pcall(u.with, function(s, logs)
      s.service { name = "crashy", cmd = { "false" }, backoff = 0, start_limit = false }
      s.start("crashy")
      local i = h.eventually(function() return u.logged(logs, "crashy: restarts in the last") or
        u.logged(logs, " restarts in the last 1 s") end, "the summary", 20)
      local n, hidden = logs[i]:match("^crashy: (%d+) restarts in the last 1 s %((%d+) not logged%)$")
      assert(n, logs[i])
      -- The first 5 restarts of the window were logged, the others counted.
      assert.are.equal(5, tonumber(n) - tonumber(hidden))
      assert.is_true(tonumber(hidden) > 0)
      local restarts = 0
      for j = 1, i - 1 do
        if logs[j]:find("^crashy: restarted$") or logs[j]:find("^crashy: restarting in") then restarts = restarts + 1 end
      end
      assert.are.equal(5, restarts)
      assert.truthy(u.logged(logs, "crashy: 5 restarts within 1 s: the next ones in this window are counted, not logged"))
      s.stop("crashy")
    end)
    slog.loop_window, slog.loop_burst = window, burst
    assert(ok, err)
  end)
end)

describe("a policy's own modules", function()
  it("found beside the script whatever the current directory, never a module another user planted in the current directory or in a directory they may write to", function()
    local name = "orch_spec_helpers_" .. orch.getpid()
    -- pub: a directory like /tmp (sticky, anyone may create files in it),
    -- where nobody plants NAME.lua; safe: root's own, the script beside
    -- its module.
    local top = h.tmpdir()
    finally(function() os.execute("rm -rf " .. h.shquote(top)) end)
    local pub, safe = top .. "/pub", top .. "/safe"
    assert(os.execute("chmod 755 " .. h.shquote(top) .. " && mkdir -m 1777 " .. h.shquote(pub)
      .. " && mkdir -m 755 " .. h.shquote(safe)))
    h.run(function()
      local code, _, err = run(as_nobody("sh", "-c", 'echo "return \\"planted\\"" > "$0"', pub .. "/" .. name .. ".lua"))
      assert.are.equal(0, code, err)
    end)
    local show = string.format([[
      local ok, m = pcall(require, %q)
      print(ok and m or "not found")
    ]], name)
    h.write(safe .. "/" .. name .. ".lua", 'return "beside"')
    h.write(safe .. "/policy.lua", show)
    h.write(pub .. "/policy.lua", show)
    local function orch_run(cwd, script)
      return h.sh(string.format("cd %s && %s run %s 2>&1", h.shquote(cwd), h.shquote(h.bin), h.shquote(script)))
    end
    -- Root started in pub: the script's module, not the planted one.
    assert.are.equal("beside", orch_run(pub, safe .. "/policy.lua"))
    -- From anywhere: the same.
    assert.are.equal("beside", orch_run("/", safe .. "/policy.lua"))
    -- A script kept in pub itself: nothing is loaded from there, and orch
    -- says why.
    local out = orch_run(pub, "policy.lua")
    assert.matches("not found$", out)
    assert.matches("orch run: modules are not looked for beside the script: private.check_dir: " .. pub
      .. " is writable by group or others", out, 1, true)
    assert.is_nil(out:find("planted", 1, true), out)
  end)
end)
