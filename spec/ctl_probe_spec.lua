-- `orch ctl` as a probe and as a command that reports outcomes: the LSB
-- exit statuses of status / is-active / health, the sd_notify STATUS text,
-- start/restart --wait, stop naming its dependents and its progress,
-- restart listing what restarted. Against a real `orch run` with real
-- services.
local h = require "spec.helper"
local u = require "spec.ctl_util"
local cjson = require "cjson"

local P = h.progs

-- web depends on db; api is critical and reports STATUS= via sd_notify;
-- gated becomes ready once DIR/go exists; once exits 3 on its first run and
-- then waits for DIR/go2 to be ready; missing has no binary; slow ignores
-- TERM (its stop waits the whole timeout).
local POLICY = [[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stderr:write(m, "\n") end }
local function file_ready(f) return function() while not io.open(DIR .. "/" .. f) do orch.sleep(0.02) end return true end end
-- While DIR/no-status exists, a status taken while db runs (the pid the
-- file names, if it names one) raises: a stop, start or restart takes the
-- instances' states, not every service's status (/proc and cgroup reads
-- per service), before it begins.
local status = sup.status
sup.status = function(...)
  local f = io.open(DIR .. "/no-status")
  if f then
    local pid = tonumber(f:read("a"))
    f:close()
    local db = sup.instance("db")
    if db.state == "running" and (not pid or db.pid == pid) then error("a status was read while db runs") end
  end
  return status(...)
end
sup.service{ name = "db", cmd = { "sleep", "1000" } }
sup.service{ name = "web", cmd = { "sleep", "1000" }, depends_on = "db" }
sup.service{ name = "api", critical = true, cmd = { ]] .. string.format("%q", P .. "/prog_sup_notify") .. [[, "-r", "10", "-s", "serving 3 clients" },
             ready = { notify = true } }
sup.service{ name = "gated", autostart = false, cmd = { "sleep", "1000" }, ready = file_ready("go"), start_timeout = 60 }
sup.service{ name = "once", autostart = false, backoff = 0.05,
             cmd = { "sh", "-c", "if [ -e " .. DIR .. "/ran ]; then exec sleep 1000; fi; touch " .. DIR .. "/ran; exit 3" },
             ready = file_ready("go2"), start_timeout = 60 }
sup.service{ name = "missing", autostart = false, cmd = { DIR .. "/no-such-binary" },
             start_limit = { burst = 2, interval = 60 }, backoff = 0.01 }
sup.service{ name = "slow", autostart = false, cmd = { "sh", "-c", "trap '' TERM; while :; do sleep 0.05; done" },
             stop = { timeout = 2.5 } }
sup.run()
]]

describe("orch ctl as a probe", function()
  local o
  setup(function() o = u.start(POLICY) end)
  teardown(function() if o then u.stop(o) end end)

  local function ctl(...) return u.ctl_cli(o, ...) end

  it("status: 0 when every named service runs, 3 when one does not, 4 for an unknown one", function()
    u.until_true(function() local s = u.status(o) return s.db.state == "running" and s.web.state == "running"
      and s.api.state == "running" end, "db, web, api running")
    local code, out, err = ctl("status", "db", "web")
    assert.are.equal(0, code, err)
    assert.matches("\ndb%s+running", out)
    assert.matches("\nweb%s+running", out)
    code, out = ctl("status", "db", "gated")
    assert.are.equal(3, code)
    assert.matches("\ngated%s+stopped", out)
    code, out, err = ctl("status", "db", "nosuch")
    assert.are.equal(4, code)
    assert.matches("\ndb%s+running", out)
    assert.matches("nosuch", err, 1, true)
    -- All of them (some are stopped): 3. --json too.
    assert.are.equal(3, (ctl("status")))
    code, out = ctl("status", "db", "--json")
    assert.are.equal(0, code)
    assert.are.equal("running", cjson.decode(out).services[1].state)
    assert.are.equal(4, (ctl("--json", "status", "nosuch")))
  end)

  it("is-active: systemctl's words and exit statuses", function()
    local code, out = ctl("is-active", "db")
    assert.are.same({ 0, "active\n" }, { code, out })
    code, out = ctl("is-active", "db", "gated")
    assert.are.same({ 3, "active\ninactive\n" }, { code, out })
    code, out = ctl("is-active", "--quiet", "gated")
    assert.are.same({ 3, "" }, { code, out })
    code, out = ctl("is-active", "nosuch")
    assert.are.same({ 4, "unknown\n" }, { code, out })
  end)

  it("is-active: a SIGSTOPped service is active (its process exists) though status shows it stopped", function()
    u.until_true(function() return u.status(o).db.state == "running" end, "db running")
    local pid = u.status(o).db.pid
    assert(os.execute("kill -STOP " .. pid))
    local ok, err = pcall(function()
      u.until_true(function() return u.status(o).db.state == "stopped" end, "db shown stopped")
      local code, out = ctl("is-active", "db")
      assert.are.same({ 0, "active\n" }, { code, out })
      code, out = ctl("is-active", "--json", "db")
      assert.are.equal(0, code)
      assert.are.same({ name = "db", state = "stopped", active = "active" }, cjson.decode(out))
      code, out = ctl("status", "db")
      assert.are.equal(3, code)
      assert.matches("\ndb%s+stopped", out)
      -- A stopped service that is not there (never started) stays inactive.
      code, out = ctl("is-active", "db", "gated")
      assert.are.same({ 3, "active\ninactive\n" }, { code, out })
    end)
    os.execute("kill -CONT " .. pid)
    if not ok then error(err, 0) end
    u.until_true(function() return u.status(o).db.state == "running" end, "db running again")
    assert.are.equal(pid, u.status(o).db.pid)
  end)

  it("shows the service's sd_notify STATUS text", function()
    local code, out = ctl("status", "api")
    assert.are.equal(0, code)
    local header, row = out:match("^([^\n]*)\n([^\n]*)\n")
    assert.matches("STATUS$", header)
    assert.matches("^api%s+running.*serving 3 clients$", row)
  end)

  it("health: 0 while every critical service is ready, 3 and why when one is not", function()
    local code, out = ctl("health")
    assert.are.same({ 0, "healthy\n" }, { code, out })
    assert.are.equal(0, (ctl("stop", "api")))
    code, out = ctl("health")
    assert.are.equal(3, code)
    assert.matches("^api: stopped", out)
    assert.are.equal(0, (ctl("start", "--wait", "api")))
    assert.are.equal(0, (ctl("health")))
  end)

  it("start --wait: waits until ready, and a new run never shows the last run's exit", function()
    -- once exits 3 first, then runs but is not ready until DIR/go2 exists.
    local code, out, err = ctl("start", "once", "--wait=0.5")
    assert.are.equal(1, code)
    assert.matches("orch ctl: once: not ready after 0.5 s %(starting", err)
    local st = u.status(o).once
    assert.are.equal(3, math.tointeger(st.exit_code))   -- the first run's, in the JSON
    code, out = ctl("status", "once")
    assert.are.equal(3, code)
    assert.matches("\nonce%s+starting%s", out)
    assert.is_nil(out:find("exit 3", 1, true), out)
    h.write(o.dir .. "/go2", "")
    code, out, err = ctl("start", "--wait", "once")
    assert.are.equal(0, code, err)
    assert.matches("^once: ready, pid %d+\n$", out)
  end)

  it("start --wait: a missing binary fails with its reason; without --wait the spawn error is said too", function()
    local code, out, err = ctl("start", "--wait=30", "missing")
    assert.are.equal(1, code)
    assert.matches("orch ctl: missing: fatal: .*no%-such%-binary", err)
    code, out, err = ctl("start", "missing")
    assert.are.equal(1, code)
    assert.matches("missing: ", err, 1, true)
    assert.matches("no%-such%-binary", err)
    assert.are.equal(0, (ctl("stop", "missing")))
  end)

  it("start --wait waits for a readiness probe; restart --wait lists what restarted", function()
    local done = false
    -- The probe passes once DIR/go exists: create it while the client waits.
    local code, out, err
    local writer = io.popen("sleep 0.3; touch " .. h.shquote(o.dir .. "/go"))
    code, out, err = ctl("start", "gated", "--wait")
    writer:close()
    assert.are.equal(0, code, err)
    assert.matches("^gated: ready, pid %d+\n$", out)
    local pid = u.status(o).db.pid
    h.write(o.dir .. "/no-status", tostring(pid))
    code, out, err = ctl("restart", "db", "--wait=30")
    os.remove(o.dir .. "/no-status")
    assert.are.equal(0, code, err)
    assert.matches("\nrestarted: db web\n$", out)
    assert.are_not.equal(pid, u.status(o).db.pid)
    done = true
    assert.is_true(done)
  end)

  it("stop names the dependents it stopped too, and says what it waits for", function()
    h.write(o.dir .. "/no-status", "")
    local code, out, err = ctl("stop", "db")
    os.remove(o.dir .. "/no-status")
    assert.are.equal(0, code, err)
    assert.are.equal("db: stopped\nweb: stopped too (it depends on db)\n", out)
    local s = u.status(o)
    assert.are.equal("stopped", s.web.state)
    assert.are.equal(0, (ctl("start", "--wait", "web")))
    -- slow ignores TERM: the stop waits 2.5 s, then KILL; progress on stderr.
    assert.are.equal(0, (ctl("start", "slow")))
    u.until_true(function() return u.status(o).slow.state == "running" end, "slow running")
    local spid = u.status(o).slow.pid
    code, out, err = ctl("stop", "slow")
    assert.are.equal(0, code, err)
    assert.are.equal("slow: stopped\n", out)
    assert.matches("waiting for slow %(pid " .. spid .. "%) to exit, %d s of 2.5\n", err)
  end)
end)

-- What a service sends (its user may be anyone's) reaches the terminal of
-- whoever runs `orch ctl status`, root's: its control characters must not.
describe("a service's STATUS= text", function()
  it("is shown by orch ctl status with its control characters as ?, never as escape sequences", function()
    local sent = "\27]0;pwned\7\27[2Jok\194\155x\127"
    local o = u.start([[
local sup = require "orch.supervisor"
sup.service{ name = "evil", ready = { notify = true },
             cmd = { ]] .. string.format("%q", P .. "/prog_sup_notify") .. [[, "-r", "10", "-s", ]]
               .. string.format("%q", sent) .. [[ } }
sup.run()
]])
    local ok, e = pcall(function()
      u.until_true(function() local s = u.status(o) return s.evil.state == "running" and s.evil.status_text end,
        "evil running with its status text")
      -- The table the supervisor makes (every service) and the one the
      -- client makes (a service named).
      for _, args in ipairs { { "status" }, { "status", "evil" } } do
        local code, out, err = u.ctl_cli(o, table.unpack(args))
        assert.are.equal(0, code, err)
        assert.is_nil((out:gsub("\n", "")):find("[%c\127]"), out)
        assert.is_nil(out:find("\194\155", 1, true), out)
        assert.matches("?]0;pwned??[2Jok?x?", out, 1, true)
      end
      -- --json gives the text as it came (JSON escapes it).
      local code, out = u.ctl_cli(o, "status", "evil", "--json")
      assert.are.equal(0, code)
      assert.are.equal(sent, cjson.decode(out).services[1].status_text)
    end)
    u.stop(o)
    assert(ok, e)
  end)
end)
