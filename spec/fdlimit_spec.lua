-- orch at its file descriptor limit: the soft limit raised at start (the
-- services get the original back), spare fds so the control socket still
-- answers and says why, and status naming the services that could not start.
local h = require "spec.helper"
local u = require "spec.ctl_util"
local cjson = require "cjson"

-- Starts `prlimit --nofile=LIMITS orch run --socket S policy` in the
-- background; returns o (as u.start does) once the socket answers.
local function start(limits, src)
  local d = h.tmpdir()
  local o = { dir = d, sock = d .. "/ctl.sock", path = d .. "/policy.lua" }
  h.write(o.path, string.format("local SOCK, DIR = %q, %q\n", o.sock, d) .. src)
  o.pid = tonumber((h.sh(string.format("cd %s && { prlimit --nofile=%s %s run --socket %s %s >out 2>err & echo $!; }",
    h.shquote(d), limits, h.shquote(h.bin), h.shquote(o.sock), h.shquote(o.path)))))
  u.until_true(function()
    assert(h.alive(o.pid), "orch died: " .. h.slurp(d .. "/err"):sub(-2000))
    return h.cli({ "ctl", "--socket", o.sock, "ping" }) == 0
  end, "the control socket")
  return o
end

local function soft_nofile(pid)
  return tonumber(h.slurp("/proc/" .. pid .. "/limits"):match("Max open files%s+(%d+)"))
end

describe("the fd limit", function()
  it("is raised to the hard limit for orch, and the services get the original soft limit back", function()
    local o = start("64:4096", [[
      local sup = require "orch.supervisor"
      sup.service { name = "plain", cmd = { "sleep", "1000" } }
      sup.service { name = "own", cmd = { "sleep", "1000" }, rlimits = { nofile = 100 } }
      sup.run()
    ]])
    finally(function() u.stop(o) end)
    assert.are.equal(4096, soft_nofile(o.pid))
    local st = u.until_true(function()
      local s = u.status(o)
      return s.plain.pid and s.own.pid and s
    end, "both services running")
    assert.are.equal(64, soft_nofile(st.plain.pid))
    assert.are.equal(100, soft_nofile(st.own.pid))
  end)

  it("100 services at nofile = 64: ctl answers and status says which could not start and why", function()
    local o = start("64:64", [[
      local sup = require "orch.supervisor"
      sup.configure { log = false }
      for i = 1, 100 do
        sup.service { name = "s" .. i, cmd = { "sleep", "1000" }, backoff = 0.2, start_limit = false }
      end
      sup.run()
    ]])
    finally(function() u.stop(o) end)
    local st = u.until_true(function()
      local s = u.status(o)
      local running, starved = 0, 0
      for _, svc in pairs(s) do
        if svc.state == "running" then running = running + 1 end
        if svc.reason and svc.reason:find("too many open files", 1, true) then starved = starved + 1 end
      end
      return running > 0 and starved > 0 and s
    end, "running services and services refused for lack of fds")
    local code, out, err = u.ctl_cli(o, "status")
    assert.are.equal(3, code, err)   -- some are not running
    assert.matches("too many open files", out, 1, true)
    assert.truthy(st.s1.pid)
  end)

  it("with every fd taken, ctl still answers, with a warning, again and again", function()
    local o = start("128:128", [[
      -- The policy takes every fd orch has left, and keeps them.
      HELD = {}
      orch.task(function()
        while true do
          local f = io.open("/dev/null")
          if not f then break end
          HELD[#HELD + 1] = f
        end
        io.open(DIR .. "/../full", "w")   -- fails too: no fd for it
        io.stdout:write("held ", #HELD, "\n") io.stdout:flush()
        orch.sleep(1000)
      end)
      require("orch.ctl").serve { socket = SOCK }
    ]])
    finally(function() u.stop(o) end)
    u.until_true(function() return h.slurp(o.dir .. "/out"):find("held %d+") end, "the policy to take every fd")
    for _ = 1, 3 do
      local code, out, err = u.ctl_cli(o, "ping")
      assert.are.equal(0, code, err)
      assert.matches("orch ", out, 1, true)
      assert.matches("warning: orch is out of file descriptors (EMFILE, limit 128)", err, 1, true)
    end
    local code, out = u.ctl_cli(o, "--json", "eval", "return #HELD")
    assert.are.equal(0, code)
    assert.matches("out of file descriptors", cjson.decode(out).warning, 1, true)
    assert.matches("orch.ctl: orch is out of file descriptors (EMFILE", h.slurp(o.dir .. "/err"), 1, true)
    -- Given the fds back, no more warnings.
    assert.are.equal(0, (u.ctl_cli(o, "eval", "for _, f in ipairs(HELD) do f:close() end HELD = {}")))
    local _, _, err = u.ctl_cli(o, "ping")
    assert.are.equal("", err)
  end)
end)
