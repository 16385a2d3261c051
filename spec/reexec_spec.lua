-- `orch ctl reexec` with supervised services: a real `orch run`, executed
-- again in place; the services' processes, restart counts and log pipes go
-- on in the new image, which supervises them as before.
local h = require "spec.helper"

local alive = h.alive

-- Service a counts lines into its log file (DIR/a.log); b sleeps.
local POLICY = [[
local sup = require "orch.supervisor"
sup.configure{ log = false }
sup.service{ name = "a", log = { dir = DIR }, backoff = 0.1,
  cmd = { "sh", "-c", "i=0; while :; do i=$((i+1)); echo \"$$ line $i\"; sleep 0.05; done" } }
sup.service{ name = "b", cmd = { "sleep", "1000" }, backoff = 0.1 }
sup.run()
assert(require("orch.ctl").serve{ socket = SOCK })
]]

local u = require "spec.ctl_util"
local ctl_cli, status, sanitizer_clean, until_true = u.ctl_cli, u.status, u.sanitizer_clean, u.until_true

local function start()
  local o = u.start(POLICY)
  o.log = o.dir .. "/a.log"
  return o
end

-- Waits until service `name` of o runs under a pid other than `old`;
-- returns the status of o's services then.
local function restarted(o, name, old, what)
  return until_true(function()
    local s = status(o)
    return s[name].state == "running" and s[name].pid ~= old and s
  end, what)
end

-- The pids of the lines of a.log written by process pid.
local function lines_of(o, pid)
  local n = 0
  for _ in h.slurp(o.log):gmatch("%f[%d]" .. pid .. " line %d+\n") do n = n + 1 end
  return n
end

describe("orch ctl reexec with supervised services", function()
  for round = 1, 3 do
    it("keeps the services running and supervised (round " .. round .. ")", function()
      local o = start()
      local seen = {}
      local ok, err = pcall(function()
        local before = until_true(function()
          local s = status(o)
          return s.a.state == "running" and s.b.state == "running" and s end, "both services running")
        seen[#seen + 1], seen[#seen + 2] = before.a.pid, before.b.pid
        -- b's restart count is not 0 when the hand-over is made.
        assert(alive(before.b.pid))
        os.execute("kill -KILL " .. before.b.pid)
        local s1 = restarted(o, "b", before.b.pid, "b restarted")
        assert.are.equal(1, s1.b.restarts)
        seen[#seen + 1] = s1.b.pid

        local code, out, e = ctl_cli(o, "reexec")
        assert.are.equal(0, code, e)
        assert.are.equal("re-executing\n", out)
        -- The new image answers once it has re-read the policy; its
        -- sup.run launches (adopts) the services in a task of its own.
        local after = until_true(function()
          local c, o2 = ctl_cli(o, "eval", "return package.loaded['orch.ctl'].inherited() ~= nil")
          local s = c == 0 and o2 == "true\n" and status(o)
          return s and s.a.state ~= "stopped" and s.b.state ~= "stopped" and s end, "the new image")
        local c3, pid_out = ctl_cli(o, "eval", "return orch.getpid()")
        assert.are.equal(0, c3)
        assert.are.equal(o.pid .. "\n", pid_out)
        assert.is_true(alive(o.pid))
        assert.are.equal("running", after.a.state)
        assert.are.equal("running", after.b.state)
        assert.are.equal(before.a.pid, after.a.pid)
        assert.are.equal(s1.b.pid, after.b.pid)
        assert.are.equal(0, after.a.restarts)
        assert.are.equal(1, after.b.restarts)
        code, out = ctl_cli(o, "status")
        assert.are.equal(0, code)
        assert.truthy(out:find("%f[%w]a%s+running%s+" .. after.a.pid), out)
        assert.truthy(out:find("%f[%w]b%s+running%s+" .. after.b.pid), out)

        -- a's lines written after the reexec still reach its log file.
        local n = lines_of(o, after.a.pid)
        until_true(function() return lines_of(o, after.a.pid) >= n + 5 end, "a's log after the reexec")

        -- Killing an adopted process: the supervisor restarts it.
        os.execute("kill -KILL " .. after.a.pid)
        local s2 = restarted(o, "a", after.a.pid, "a restarted after the reexec")
        assert.are.equal(1, s2.a.restarts)
        seen[#seen + 1] = s2.a.pid
        until_true(function() return lines_of(o, s2.a.pid) >= 3 end, "the new a's log")
        assert.are.equal(after.b.pid, s2.b.pid)

        code, _, e = ctl_cli(o, "shutdown")
        assert.are.equal(0, code, e)
        until_true(function() return not alive(o.pid) end, "orch to exit")
        for _, p in ipairs(seen) do assert.is_false(alive(p), "pid " .. p .. " survived") end
      end)
      if alive(o.pid) then os.execute("kill -KILL " .. o.pid) end
      for _, p in ipairs(seen) do if alive(p) then os.execute("kill -KILL " .. p) end end
      sanitizer_clean(h.slurp(o.dir .. "/err"), "orch run")
      if not ok then error(tostring(err) .. "\n" .. h.slurp(o.dir .. "/err"), 0) end
    end)
  end
end)

-- Services that exit all the time (a crash loop, a short job restarted
-- without delay) while reexec runs again and again: every reexec succeeds
-- and no restart count goes back.
local CHURN = [[
local sup = require "orch.supervisor"
sup.configure{ log = false }
for i = 1, 6 do
  sup.service{ name = "c" .. i, backoff = 0, log = { dir = DIR },
    cmd = { "sh", "-c", "echo up; sleep 0.0" .. i .. "; exit 1" } }
end
sup.service{ name = "slow", backoff = { initial = 3600, max = 3600 }, cmd = { "sh", "-c", "exit 1" } }
sup.service{ name = "gone", cmd = { "sh", "-c", "exit 1" }, backoff = 0, start_limit = { burst = 1, interval = 600 } }
sup.service{ name = "off", cmd = { "sleep", "1000" } }
sup.run()
assert(require("orch.ctl").serve{ socket = SOCK })
]]

describe("orch ctl reexec under churn", function()
  it("succeeds every time and keeps every restart count, backoff and fatal state", function()
    local o = u.start(CHURN)
    local ok, err = pcall(function()
      local function sum(s)
        local n = 0
        for i = 1, 6 do n = n + s["c" .. i].restarts end
        return n
      end
      local s0 = until_true(function()
        local s = status(o)
        return s.c1.restarts > 3 and s.gone.state == "fatal" and s.slow.state == "backoff" and s end, "churn")
      local code, _, e = ctl_cli(o, "stop", "off")
      assert.are.equal(0, code, e)
      local last = sum(s0)
      local image = 0
      for round = 1, 6 do
        code, _, e = ctl_cli(o, "reexec")
        assert.are.equal(0, code, "reexec " .. round .. ": " .. e .. h.slurp(o.dir .. "/err"))
        image = image + 1
        -- The new image answers once it has re-read the policy, and its
        -- first status already has what was handed over (sup.settled: the
        -- control server waits for sup.run to take the hand-over).
        local s = until_true(function()
          local c, out = ctl_cli(o, "eval", "return os.getenv('ORCH_HANDOFF') ~= nil")
          return c == 0 and out == "true\n" and status(o)
        end, "the new image " .. round)
        for i = 1, 6 do
          assert.is_true(s["c" .. i].restarts >= s0["c" .. i].restarts,
            "c" .. i .. " restarts went back after reexec " .. round)
        end
        assert.is_true(sum(s) >= last, "restart sum went back after reexec " .. round)
        last = sum(s)
        assert.are.equal("fatal", s.gone.state)
        assert.are.equal(s0.gone.restarts, s.gone.restarts)
        assert.are.equal("backoff", s.slow.state)
        assert.are.equal(s0.slow.restarts, s.slow.restarts)
        assert.are.equal("stopped", s.off.state)
        s0 = s
      end
      code, _, e = ctl_cli(o, "shutdown")
      assert.is_true(code == 0 or code == 4, e)
      until_true(function() return not alive(o.pid) end, "orch to exit")
    end)
    if alive(o.pid) then os.execute("kill -KILL " .. o.pid) end
    sanitizer_clean(h.slurp(o.dir .. "/err"), "orch run")
    if not ok then error(tostring(err) .. "\n" .. h.slurp(o.dir .. "/err"), 0) end
  end)
end)

describe("orch ctl reexec of a service that is not ready yet", function()
  it("runs its probe again: it stays starting, and its dependent waits, until it is ready", function()
    local o = u.start([[
local sup = require "orch.supervisor"
sup.configure{ log = false }
sup.service{ name = "slow", cmd = { "sleep", "1000" }, start_timeout = 120,
  ready = function() while not io.open(DIR .. "/go") do orch.sleep(0.02) end return true end }
sup.service{ name = "web", depends_on = "slow", cmd = { "sleep", "1000" } }
sup.run()
assert(require("orch.ctl").serve{ socket = SOCK })
]])
    local ok, err = pcall(function()
      local s0 = until_true(function()
        local s = status(o)
        return s.slow.state == "starting" and s.web.state == "waiting" and s end, "slow starting")
      local code, _, e = ctl_cli(o, "reexec")
      assert.are.equal(0, code, e)
      local s1 = until_true(function()
        local c, out = ctl_cli(o, "eval", "return os.getenv('ORCH_HANDOFF') ~= nil")
        return c == 0 and out == "true\n" and status(o)
      end, "the new image")
      assert.are.equal(s0.slow.pid, s1.slow.pid)
      assert.are.equal("starting", s1.slow.state)
      assert.are.equal("waiting", s1.web.state)
      h.write(o.dir .. "/go", "")
      local s2 = until_true(function()
        local s = status(o)
        return s.slow.state == "running" and s.web.state == "running" and s end, "slow ready, web started")
      assert.are.equal(s0.slow.pid, s2.slow.pid)
      code, _, e = ctl_cli(o, "shutdown")
      assert.are.equal(0, code, e)
      until_true(function() return not alive(o.pid) end, "orch to exit")
    end)
    u.stop(o)
    if not ok then error(tostring(err) .. "\n" .. h.slurp(o.dir .. "/err"), 0) end
  end)
end)
