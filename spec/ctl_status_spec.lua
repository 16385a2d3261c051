-- `orch ctl status` and `orch ctl --json status` against a real `orch run`
-- (issue 15): the table comes made by the supervisor ("format": "table"),
-- the JSON reply lists the services last and says how many are not
-- running, and the exit statuses stay those of LSB.
local h = require "spec.helper"
local cu = require "spec.ctl_util"

-- A strict reader: no NaN/Infinity.
local strict, ints = h.strict_json(), h.ints

-- One request on o's control socket; the decoded reply.
local function request(o, req)
  local reply
  h.run(function()
    local c = assert(require("orch.ctl.client").connect(o.sock))
    reply = assert(c:request(req, 10))
    c:close()
  end)
  return reply
end

describe("orch ctl status of a running orchestrator", function()
  local o
  setup(function()
    o = cu.start([[
local sup = require "orch.supervisor"
sup.configure{ log = false, accounting_batch = 1 }
sup.service{ name = "a", cmd = { "sleep", "1000" } }
sup.service{ name = "b", cmd = { "sleep", "1000" } }
sup.service{ name = "c", cmd = { "sleep", "1000" }, autostart = false }
sup.run()
]])
  end)
  teardown(function() if o then cu.stop(o) end end)

  it("prints the table the supervisor made, shows a state change at once, and exits 3 / 0", function()
    cu.until_true(function() local s = cu.status(o) return s.a.state == "running" and s.b.state == "running" end,
      "a, b running")
    local code, out = cu.ctl_cli(o, "status")
    assert.are.equal(3, code)
    assert.matches("^NAME%s+STATE%s+PID%s+UPTIME%s+RESTARTS%s+RSS%s+CPU\n", out)
    assert.matches("\na%s+running%s+%d+", out)
    assert.matches("\nc%s+stopped%s+%-", out)
    -- The reply is the table itself, and says what is not running.
    local reply = request(o, { cmd = "status", format = "table" })
    assert.is_true(reply.ok)
    assert.are.equal(1, reply.not_running)
    assert.are.equal(3, reply.count)
    assert.matches("^NAME", reply.table)
    assert.is_nil(reply.services)
    -- Started: the next status shows it, and exits 0.
    assert.are.equal(0, (cu.ctl_cli(o, "start", "c")))
    cu.until_true(function() return cu.ctl_cli(o, "status") == 0 end, "status exits 0")
    code, out = cu.ctl_cli(o, "status")
    assert.are.equal(0, code)
    assert.matches("\nc%s+running%s+%d+", out)
    -- The figures come once read (accounting_batch = 1: in the background).
    cu.until_true(function()
      local _, t = cu.ctl_cli(o, "status")
      return t:find("\na%s+running%s+%d+%s+[%d:]+%s+0%s+[%d.]+[BKM]%s+[%d.]+s\n") and not t:find("being read again")
    end, "a's rss and cpu shown")
    assert.are.equal(0, (cu.ctl_cli(o, "stop", "c")))
  end)

  it("--json: valid JSON with the records' fields, services last, the same exit statuses", function()
    local code, out = cu.ctl_cli(o, "--json", "status")
    assert.are.equal(3, code)
    local r = ints(strict.decode(out))
    assert.is_true(r.ok)
    assert.are.equal(1, r.not_running)
    assert.truthy(out:find(',"services":[', 1, true) and out:sub(-3) == "]}\n", out)
    local by = {}
    for _, s in ipairs(r.services) do by[s.name] = s end
    for _, k in ipairs { "name", "service", "index", "state", "pid", "start_time", "uptime", "restarts",
                         "log_lines", "log_dropped" } do
      assert.is_not_nil(by.a[k], k)
    end
    assert.are.equal("stopped", by.c.state)
    assert.is_nil(by.c.pid)
    assert.is_nil(by.c.uptime)
    -- A named status, and is-active, still decode the records.
    code, out = cu.ctl_cli(o, "--json", "status", "a")
    assert.are.equal(0, code)
    assert.are.equal("running", strict.decode(out).services[1].state)
    code, out = cu.ctl_cli(o, "status", "a", "c")
    assert.are.equal(3, code)
    assert.matches("\na%s+running", out)
    assert.matches("\nc%s+stopped", out)
    assert.are.equal(3, (cu.ctl_cli(o, "is-active", "a", "c")))
  end)
end)
