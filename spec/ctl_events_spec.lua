-- The event stream: sup.events(fn) in Lua, the "events" request of the
-- control protocol and `orch ctl events [-f] [--json]`: every state change
-- (spawned with its pid, ready, exited with code or signal, backoff with its
-- delay, fatal with its reason, stopping, stopped, reloaded) in order, one
-- line each. Real services, a real control socket.
local h = require "spec.helper"
local u = require "spec.ctl_util"
local cjson = require "cjson"

-- crash exits 3 twice (start limit 2), then is fatal; db runs.
local POLICY = [[
local sup = require "orch.supervisor"
sup.configure{ log = false }
sup.service{ name = "crash", cmd = { "sh", "-c", "exit 3" }, backoff = 0.05,
             start_limit = { burst = 2, interval = 60 } }
sup.service{ name = "db", cmd = { "sleep", "1000" } }
sup.run()
]]

local function kinds(list, name)
  local out = {}
  for _, ev in ipairs(list) do
    if ev.name == name or (name == nil and ev.name == nil) then out[#out + 1] = ev.event end
  end
  return out
end

describe("events", function()
  it("sup.events(fn) sees each state change in order, with pids, codes, delays and reasons", function()
    local code, out, err = h.cli({ "run", "--no-socket", h.script([[
      local sup = require "orch.supervisor"
      sup.configure{ log = false }
      local seen = {}
      local stop = sup.events(function(ev) seen[#seen + 1] = ev end)
      sup.service{ name = "crash", cmd = { "sh", "-c", "exit 3" }, backoff = 0.05,
                   start_limit = { burst = 2, interval = 60 } }
      sup.start("crash")
      sup.wait("crash", "fatal", 20)
      stop()
      for _, ev in ipairs(seen) do
        print(ev.event, ev.name, ev.pid or "-", ev.code or "-", ev.delay or "-", ev.reason or "-")
      end
      -- The recent events, the same ones.
      print(#sup.events() == #seen)
      sup.shutdown(0)
    ]]) })
    assert.are.equal(0, code, err)
    local rows = {}
    for line in out:gmatch("[^\n]+") do rows[#rows + 1] = line end
    local want = { "spawned", "ready", "exited", "backoff", "spawned", "ready", "exited", "fatal" }
    assert.are.equal(#want + 1, #rows, out)
    local pids = {}
    for i, w in ipairs(want) do
      local f = {}
      for x in (rows[i] .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = x end
      assert.are.same({ w, "crash" }, { f[1], f[2] }, rows[i])
      if w == "spawned" then pids[#pids + 1] = f[3] assert.matches("^%d+$", f[3]) end
      if w == "exited" then assert.are.same({ pids[#pids], "3" }, { f[3], f[4] }) end
      if w == "backoff" then assert.are.equal(0.05, tonumber(f[5])) end
      if w == "fatal" then assert.matches("^start limit reached", f[6]) end
    end
    assert.are_not.equal(pids[1], pids[2])
    assert.are.equal("true", rows[#rows])
  end)

  it("sup.events(fn) calls its subscribers in the order they came, whatever they do meanwhile", function()
    local code, out, err = h.cli({ "run", "--no-socket", h.script([[
      local sup = require "orch.supervisor"
      local logged = {}
      sup.configure{ log = function(msg) logged[#logged + 1] = msg end }
      local calls = {}
      local stops = {}
      -- 16 subscribers: a set keyed by function would call them in the
      -- order of their addresses' hashes.
      for i = 1, 16 do
        local fn
        fn = function(ev)
          calls[#calls + 1] = i .. ev.event
          if i == 3 and ev.event == "spawned" then stops[3]() end     -- leaves during the emit
          if i == 5 and ev.event == "spawned" then error("five fails") end
        end
        stops[i] = sup.events(fn)
        if i == 7 then assert(sup.events(fn) ~= nil) end        -- the same function again: still once
      end
      sup.service{ name = "once", cmd = { "true" }, restart = "never" }
      sup.start("once")
      sup.wait("once", "exited", 10)
      for i = 1, 16 do stops[i]() end
      print(table.concat(calls, " "))
      for _, m in ipairs(logged) do if m:find("subscriber failed") then print(m) end end
      print(pcall(sup.configure, { on_state = function() end }))
      sup.shutdown(0)
    ]]) })
    assert.are.equal(0, code, err)
    local rows = {}
    for line in out:gmatch("[^\n]+") do rows[#rows + 1] = line end
    local want = {}
    for i = 1, 16 do want[#want + 1] = i .. "spawned" end
    for _, kind in ipairs { "ready", "exited" } do
      for i = 1, 16 do
        if i ~= 3 and i ~= 5 then want[#want + 1] = i .. kind end
      end
    end
    assert.are.equal(table.concat(want, " "), rows[1])
    assert.matches("event subscriber failed %(removed%): .*five fails", rows[2])
    assert.matches("^false\t.*unknown option 'on_state'", rows[3])
  end)

  describe("orch ctl events", function()
    local o
    setup(function() o = u.start(POLICY) end)
    teardown(function() if o then u.stop(o) end end)

    it("prints the recent events, one line each, or JSON", function()
      u.until_true(function() return u.status(o).crash.state == "fatal" end, "crash fatal")
      local code, out, err = u.ctl_cli(o, "events", "-n", "100")
      assert.are.equal(0, code, err)
      assert.matches("Z crash spawned, pid %d+\n", out)
      assert.matches("Z crash exited, code 3, pid %d+\n", out)
      assert.matches("Z crash backoff, restart in 0%.05 s\n", out)
      assert.matches("Z crash fatal: start limit reached: 2 starts within 60s\n", out)
      assert.matches("Z db ready, pid %d+\n", out)
      code, out = u.ctl_cli(o, "events", "--json", "-n", "100")
      assert.are.equal(0, code)
      local reply = cjson.decode(out)
      assert.are.same({ "spawned", "ready", "exited", "backoff", "spawned", "ready", "exited", "fatal" },
        kinds(reply.events, "crash"))
      -- -n: the last N.
      code, out = u.ctl_cli(o, "events", "-n", "1", "--json")
      assert.are.equal(1, #cjson.decode(out).events)
    end)

    it("-f prints new events as they happen (a restart, a reload)", function()
      local file = o.dir .. "/follow.out"
      local pid = tonumber((h.sh(string.format("{ %s ctl --socket %s events -f -n 0 >%s 2>&1 & echo $!; }",
        h.shquote(h.bin), h.shquote(o.sock), h.shquote(file)))))
      local ok, err = pcall(function()
        -- The follower is subscribed once its connection is served: wait
        -- for it by a first event it must see.
        u.until_true(function()
          u.ctl_cli(o, "restart", "db")
          return h.slurp(file):find("db ready", 1, true)
        end, "the follower sees a restart")
        -- The "ready" seen may be an earlier restart's while the last one's
        -- events are still on their way to the follower: a reload's event,
        -- sent after them all, marks where they end.
        assert.are.equal(0, (u.ctl_cli(o, "reload")))
        u.until_true(function() return h.slurp(file):find("reloaded; kept: crash db", 1, true) end, "the marker")
        local before = #h.slurp(file)
        assert.are.equal(0, (u.ctl_cli(o, "restart", "db")))
        u.until_true(function() return h.slurp(file):sub(before + 1):find("db ready", 1, true) end, "a second restart")
        local text = h.slurp(file):sub(before + 1)
        local order = {}
        for k in text:gmatch("Z db (%a+)") do order[#order + 1] = k end
        assert.are.same({ "stopping", "exited", "stopped", "spawned", "ready" }, order)
        assert.matches("Z db exited, signal TERM, pid %d+\n", text)
        assert.are.equal(0, (u.ctl_cli(o, "reload")))
        u.until_true(function() return h.slurp(file):find("reloaded; kept: crash db", before + 1, true) end, "reloaded")
      end)
      os.execute("kill -INT " .. pid)
      u.until_true(function() return not h.alive(pid) end, "the follower ends on Ctrl-C")
      assert(ok, err)
    end)
  end)
end)
