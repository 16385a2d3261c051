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

-- The table and the JSON of the same fleet before and after its states
-- change (stopped, started, killed and restarted, SIGSTOPped, exited): both
-- replies are made afresh at each call, and the table the supervisor makes
-- (in C, orch.ctl.format.status_table) is the one the client makes from the
-- JSON records (format.status_lines, in Lua) byte for byte, but for the
-- uptimes, which may tick between the two calls.
describe("orch ctl status of a fleet whose states change", function()
  local o
  setup(function()
    o = cu.start([[
local sup = require "orch.supervisor"
sup.configure{ log = false, accounting_max_age = 3600 }
for _, n in ipairs { "a", "b", "d", "e" } do sup.service{ name = n, cmd = { "sleep", "1000" }, backoff = 0 } end
sup.service{ name = "c", cmd = { "sleep", "1000" }, autostart = false }
sup.service{ name = "f", cmd = { "sleep", "1000" }, restart = "never" }
sup.run()
]])
  end)
  teardown(function() if o then cu.stop(o) end end)

  local format_status = require("orch.cmd.ctl").format_status
  local function mask(t) return (t:gsub("%d+:%d%d:%d%d", "U")) end
  -- Both forms of one status; the table checked against the records.
  local function both()
    local code, tbl = cu.ctl_cli(o, "status")
    assert.are.equal(3, code)
    local jcode, out = cu.ctl_cli(o, "--json", "status")
    assert.are.equal(3, jcode)
    local r = ints(strict.decode(out))
    local by = {}
    for _, s in ipairs(r.services) do by[s.name] = s end
    assert.are.equal(mask(table.concat(format_status(r.services), "\n") .. "\n"), mask(tbl))
    return tbl, by
  end
  local function line(tbl, name) return tbl:match("\n(" .. name .. " [^\n]*)") end

  it("shows every change at the next call, the table equal to the JSON's", function()
    local s = cu.until_true(function()
      local s = cu.status(o)
      for _, n in ipairs { "a", "b", "d", "e", "f" } do
        if s[n].state ~= "running" or not s[n].rss then return nil end
      end
      return s
    end, "a, b, d, e, f running with their figures")
    local tbl1, by1 = both()
    for _, n in ipairs { "a", "b", "d", "e", "f" } do
      assert.matches("^" .. n .. "%s+running%s+" .. by1[n].pid .. "%s+[%d:]+%s+0%s+[%d.]+[BKM]%s+[%d.]+s$", line(tbl1, n))
    end
    assert.matches("^c%s+stopped%s+%-%s+%-%s+0%s+%-%s+%-$", line(tbl1, "c"))
    -- Change every state shown.
    assert.are.equal(0, (cu.ctl_cli(o, "stop", "a")))
    assert.are.equal(0, (cu.ctl_cli(o, "start", "c")))
    os.execute("kill -KILL " .. s.d.pid)
    os.execute("kill -STOP " .. s.e.pid)
    os.execute("kill -TERM " .. s.f.pid)
    local ok, err = pcall(function()
      local last
      local pok, perr = pcall(cu.until_true, function()
        local n = cu.status(o)
        last = n
        return n.a.state == "stopped" and n.c.state == "running" and n.c.rss and n.d.state == "running"
          and n.d.restarts == 1 and n.d.rss and n.e.state == "stopped" and n.f.state == "exited"
      end, "the new states")
      if not pok then
        local t = {}
        for _, k in ipairs { "a", "b", "c", "d", "e", "f" } do
          local x = last and last[k] or {}
          t[#t + 1] = string.format("%s=%s/%s/r%s/rss %s", k, tostring(x.state), tostring(x.pid), tostring(x.restarts), tostring(x.rss))
        end
        error(tostring(perr) .. " (last: " .. table.concat(t, " ") .. ")", 0)
      end
      local tbl2, by2 = both()
      assert.are_not.equal(mask(tbl1), mask(tbl2))
      assert.matches("^a%s+stopped %(signal TERM%)%s+%-%s+%-%s+0%s+%-%s+%-$", line(tbl2, "a"))
      assert.matches("^b%s+running%s+" .. s.b.pid .. "%s", line(tbl2, "b"))
      assert.matches("^c%s+running%s+" .. by2.c.pid .. "%s+[%d:]+%s+0%s+[%d.]+[BKM]%s+[%d.]+s$", line(tbl2, "c"))
      assert.are_not.equal(s.d.pid, by2.d.pid)
      assert.matches("^d%s+running%s+" .. by2.d.pid .. "%s+[%d:]+%s+1%s+[%d.]+[BKM]%s+[%d.]+s$", line(tbl2, "d"))
      assert.matches("^e%s+stopped%s+" .. s.e.pid .. "%s", line(tbl2, "e"))
      assert.matches("^f%s+exited %(signal TERM%)%s+%-%s+%-%s+0%s+%-%s+%-$", line(tbl2, "f"))
      -- The JSON says the same.
      assert.are.equal("stopped", by2.a.state)
      assert.is_nil(by2.a.pid)
      assert.are.equal("running", by2.c.state)
      assert.are.equal(1, by2.d.restarts)
      assert.are.equal("stopped", by2.e.state)
      assert.are.equal("STOP", by2.e.stop_signal)
      assert.are.equal("exited", by2.f.state)
    end)
    os.execute("kill -CONT " .. s.e.pid)
    assert(ok, err)
  end)
end)
