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
