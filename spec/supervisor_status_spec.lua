-- The status of many services (issue 15): sup.status_json and
-- sup.status_table render what sup.status gives without a table per
-- service, a status of more than accounting_batch services reads the
-- kernel's figures in the background (shown as last read, with their age),
-- and `orch ctl status` / `orch ctl --json status` take those replies.
-- Real processes, a real supervisor, a real `orch run`.
local h = require "spec.helper"
local u = require "spec.supervisor_util"
local orch = h.orch

-- A strict reader: no NaN/Infinity.
local strict, ints = h.strict_json(), h.ints

-- Records equal but for the figures that move between two calls.
local MOVING = { uptime = 1, accounting_age = 1 }
local function same_record(a, b)
  for k, v in pairs(a) do
    if MOVING[k] then
      assert.is_number(b[k], k)
      assert.is_true(math.abs(v - b[k]) < 1, k)
    elseif type(v) == "number" and math.type(v) == "float" then
      assert.is_true(math.abs(v - b[k]) <= 1e-6 * math.max(1, math.abs(v)), k .. ": " .. v .. " vs " .. tostring(b[k]))
    elseif type(v) == "string" and not utf8.len(v) then
      -- JSON text is UTF-8: an invalid byte is U+FFFD.
      local fixed, i = {}, 1
      while true do
        local ok, bad = utf8.len(v, i)
        if ok then fixed[#fixed + 1] = v:sub(i) break end
        fixed[#fixed + 1] = v:sub(i, bad - 1) .. "\u{FFFD}"
        i = bad + 1
      end
      assert.are.equal(table.concat(fixed), b[k])
    else
      assert.are.same(v, b[k], a.name .. "." .. k)
    end
  end
  for k in pairs(b) do assert.is_not_nil(a[k], a.name .. ": extra field " .. k) end
end

local BURN = "while :; do :; done"

describe("sup.status_json and sup.status_table", function()
  it("give what sup.status gives: running, stopped by a signal, exited, fatal, never started, odd STATUS= text", function()
    u.with(function(s)
      s.configure { accounting_max_age = 3600 }
      s.service { name = "run", cmd = { "sleep", "1000" } }
      s.service { name = "held", cmd = { "sleep", "1000" } }
      s.service { name = "text", cmd = { h.progs .. "/prog_sup_notify", "-r", "10", "-s", 'say "hi"\\ \t\1 \255 é' },
                  ready = { notify = true } }
      s.service { name = "three", cmd = { "sh", "-c", "exit 3" }, restart = "never" }
      s.service { name = "missing", cmd = { "/nonexistent/no-such-binary" }, start_limit = { burst = 1, interval = 60 },
                  backoff = 0.01 }
      s.service { name = "idle", cmd = { "sleep", "1000" }, autostart = false }
      -- With a cgroup limit: the record says where its controllers are.
      s.service { name = "lim", cmd = { "sleep", "1000" }, limits = { pids_max = 32 } }
      for _, n in ipairs { "run", "held", "text", "three", "missing", "lim" } do s.start(n) end
      h.eventually(function()
        local by = {}
        for _, r in ipairs(s.status()) do by[r.name] = r end
        return by.run.state == "running" and by.held.state == "running" and by.text.status_text
          and by.lim.state == "running"
          and by.three.state == "exited" and by.missing.state == "fatal"
      end, "every service settled")
      assert.is_true(s.signal("held", "STOP"))
      h.eventually(function() return u.st(s, "held").state == "stopped" end, "held stopped by SIGSTOP")

      local list = s.status()
      local text, not_running = s.status_json()
      local decoded = ints(strict.decode(text))
      assert.are.equal(#list, #decoded)
      for i, rec in ipairs(list) do same_record(rec, decoded[i]) end
      local want = 0
      for _, rec in ipairs(list) do if rec.state ~= "running" then want = want + 1 end end
      assert.are.equal(want, not_running)
      assert.are.equal(4, not_running) -- held, three, missing, idle
      -- The odd bytes are JSON escapes; the invalid one is U+FFFD.
      assert.truthy(text:find('say \\"hi\\"\\\\ \\t\\u0001 \u{FFFD} é', 1, true), text)
      local none, err, ename = s.status_json("nosuch")
      assert.is_nil(none)
      assert.are.equal("ENOENT", ename)
      assert.matches("nosuch", err)

      -- The table: the lines orch ctl makes from the records (the uptime
      -- may tick between the two calls).
      local tbl, nr, count = s.status_table()
      assert.are.equal(4, nr)
      assert.are.equal(#list, count)
      local mine = require("orch.cmd.ctl").format_status(s.status())
      local function mask(t) return (t:gsub("%d+:%d%d:%d%d", "U")) end
      assert.are.equal(mask(table.concat(mine, "\n")), mask(tbl))
      assert.matches("\nheld%s+stopped", tbl)
      assert.matches("\nthree%s+exited %(exit 3%)", tbl)
      assert.matches("\nmissing%s+fatal", tbl)
      assert.matches("STATUS\n", tbl)
      if u.st(s, "lim").cgroup_controllers then
        assert.matches("\ncgroup controllers: [^\n]*pids", tbl)
      else
        assert.is_nil(tbl:find("\ncgroup controllers:", 1, true))
      end
      assert.is_true(s.signal("held", "CONT"))
      -- A state change shows in the next status.
      h.eventually(function() return s.status_table():find("\nheld%s+running") end, "held running again")
      assert.are.equal(3, select(2, s.status_json()))
    end)
  end)

  it("read the figures of more than accounting_batch services in the background, and one service's at once", function()
    u.with(function(s)
      s.configure { accounting_batch = 1, accounting_max_age = 0.5 }
      s.service { name = "b1", cmd = u.sh(BURN) }
      s.service { name = "b2", cmd = u.sh(BURN) }
      s.start("all")
      assert.is_true(s.wait("b1", "running", 10))
      assert.is_true(s.wait("b2", "running", 10))
      -- Never read: no figures yet, and the table says so.
      local first = s.status()
      for _, r in ipairs(first) do
        assert.is_nil(r.cpu, r.name)
        assert.is_nil(r.rss, r.name)
        assert.is_nil(r.accounting_age, r.name)
        assert.are.equal("running", r.state)
        assert.is_number(r.uptime)
      end
      local tbl = s.status_table()
      assert.matches("\nRSS and CPU of 2 services: not read yet %(%-%); being read again$", tbl)
      -- The task reads them, one a loop turn.
      local got = h.eventually(function()
        local l = s.status()
        return l[1].cpu and l[2].cpu and l
      end, "figures read in the background")
      assert.is_number(got[1].rss)
      assert.is_true(got[1].accounting_age >= 0)
      -- They stay as read while the kernel's move on, their age growing;
      -- then a status queues them again and a later one has newer ones.
      local pid = got[1].pid
      h.eventually(function()
        local ps = orch.proc.stat(pid)
        return ps and ps.cpu > got[1].cpu + 0.05
      end, "b1 burned 50 ms more")
      local again = h.eventually(function()
        local l = s.status()
        return l[1].cpu > got[1].cpu and l
      end, "newer figures")
      assert.is_true(again[1].cpu > got[1].cpu)
      -- A state change shows at once, figures or not.
      assert.is_true(s.signal("b2", "STOP"))
      h.eventually(function() return s.status()[2].state == "stopped" end, "b2 shown stopped")
      assert.is_true(s.signal("b2", "CONT"))
      -- One service: read on the caller's time (accounting_max_age 0: at
      -- every call), fresh.
      h.eventually(function()
        local ps = orch.proc.stat(pid)
        return ps and ps.cpu > again[1].cpu + 0.05
      end, "b1 burned 50 ms more again")
      s.configure { accounting_max_age = 0 }
      local one = u.st(s, "b1")
      assert.are.equal(0, one.accounting_age)
      assert.is_true(one.cpu > again[1].cpu + 0.05)
      -- Once read, nothing is queued: the table has no note.
      s.configure { accounting_max_age = 3600 }
      h.eventually(function() return not s.status_table():find("being read again", 1, true) end, "no stale figures")
    end)
  end)

  it("read no figures in the background while a stop of more than accounting_batch services runs", function()
    u.with(function(s, _, _, output)
      s.configure { accounting_batch = 1, accounting_max_age = 0 }
      s.service { name = "a", cmd = u.sh("exec sleep 1000") }
      -- These two ignore TERM: their stop lasts until the test kills them.
      for _, n in ipairs { "c1", "c2" } do
        s.service { name = n, cmd = u.sh("trap '' TERM; echo trapped; exec sleep 1000"), stop = { timeout = 30 } }
      end
      s.start("all")
      for _, n in ipairs { "a", "c1", "c2" } do assert.is_true(s.wait(n, "running", 10)) end
      -- TERM is ignored once sh has run its trap (it says so; no status of
      -- one, which would read that one's figures).
      for _, n in ipairs { "c1", "c2" } do
        h.eventually(function() return output[n] and output[n][1] == "trapped" end, n .. " ignoring TERM")
      end
      local stop = orch.task(function() return s.stop({ "c1", "c2" }) end)
      assert.is_true(s.wait("c1", "stopping", 10))
      assert.is_true(s.wait("c2", "stopping", 10))
      -- A status of the three queues their reads (none read yet; a status
      -- of one would read it at once).
      local first = s.status()
      assert.are.equal("a", first[1].name)
      assert.is_nil(first[1].rss)
      -- Without the pause the task reads a at its first turn.
      for _ = 1, 20 do orch.sleep(0) end
      assert.is_nil(s.status()[1].rss)
      assert.matches("RSS and CPU of 3 services: not read yet %(%-%); being read again", (s.status_table()))
      -- The stop ends: the reads go on.
      for _, n in ipairs { "c1", "c2" } do assert(orch.kill(u.st(s, n).pid, "KILL")) end
      assert.is_true(stop:join())
      local got = h.eventually(function()
        local l = s.status()
        return l[1].rss and l
      end, "a's figures read once the stop ended")
      assert.is_number(got[1].cpu)
      assert.is_true(got[1].accounting_age >= 0)
    end)
  end)

  it("reject a bad accounting_batch", function()
    h.check_raises {
      { function() u.supmod.new().configure { accounting_batch = 0 } end, "option 'accounting_batch': integer >= 1 expected" },
      { function() u.supmod.new().configure { accounting_batch = 1.5 } end, "option 'accounting_batch': integer >= 1 expected" },
    }
  end)
end)
