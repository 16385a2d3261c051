-- The supervisor's state machine is a table (instance.lua's
-- on[state][event]): every state x event pair has an action or is ignored
-- on purpose, and the table is what drives a real service.
local u = require "spec.supervisor_util"
local h, orch = u.h, u.orch
local Instance = require "orch.supervisor.instance"

describe("supervisor state table", function()
  it("has an action or an explicit IGNORE for every state x event", function()
    local known = { [Instance.IGNORE] = "IGNORE" }
    for name, fn in pairs(Instance.actions) do known[fn] = name end
    local missing = {}
    for _, st in ipairs(Instance.STATES) do
      local row = Instance.on[st]
      assert.is_table(row, "no row for state " .. st)
      for _, ev in ipairs(Instance.EVENTS) do
        local a = row[ev]
        if type(a) ~= "function" or not known[a] then missing[#missing + 1] = st .. " x " .. ev end
      end
      for ev in pairs(row) do
        local listed = false
        for _, e in ipairs(Instance.EVENTS) do listed = listed or e == ev end
        assert.is_true(listed, "state " .. st .. " has an unlisted event " .. tostring(ev))
      end
    end
    assert.are.same({}, missing)
    for st in pairs(Instance.on) do
      local listed = false
      for _, s in ipairs(Instance.STATES) do listed = listed or s == st end
      assert.is_true(listed, "unlisted state " .. tostring(st))
    end
    -- Every action is used somewhere.
    local used = {}
    for _, row in pairs(Instance.on) do for _, a in pairs(row) do used[a] = true end end
    for name, fn in pairs(Instance.actions) do assert.is_true(used[fn] == true, "unused action " .. name) end
  end)

  it("every state a real service reaches is a row of the table", function()
    h.run(function()
      local s = u.new()
      local seen = {}
      s.service { name = "t", cmd = u.sh("exit 3"), restart = "on-failure", backoff = 0.05,
                  ready = function() orch.sleep(60) end,
                  start_limit = { burst = 2, interval = 60 } }
      s.service { name = "w", cmd = u.sh("exec sleep 30"), depends_on = { "t" } }
      local t, w = s.instance("t"), s.instance("w")
      -- Every state change goes through set_state: record them.
      for _, inst in ipairs { t, w } do
        inst.set_state = function(self, st)
          seen[st] = true
          return Instance.set_state(self, st)
        end
      end
      s.start("all")
      h.eventually(function() return t.state == "fatal" end, "t fatal")
      s.stop("all")
      h.eventually(function() return w.state == "stopped" and t.state == "stopped" end, "all stopped")
      for st in pairs(seen) do assert.is_table(Instance.on[st], st) end
      for _, st in ipairs { "starting", "backoff", "fatal", "waiting", "stopped" } do
        assert.is_true(seen[st], st)
      end
      s.close()
    end)
  end)

  it("no module but instance.lua, run.lua and handoff.lua writes a run's fields", function()
    local dir = h.root .. "/lua/orch/supervisor"
    local owners = { ["instance.lua"] = true, ["run.lua"] = true, ["handoff.lua"] = true }
    local p = io.popen("ls " .. dir)
    for f in p:lines() do
      if f:match("%.lua$") and not owners[f] then
        local src = assert(io.open(dir .. "/" .. f)):read("a")
        for line in src:gmatch("[^\n]+") do
          assert.is_nil(line:match("^%s*run%.[%w_]+%s*=[^=]"), f .. ": " .. line)
          assert.is_nil(line:match("[^%w_]run%.[%w_]+%s*,[^=]*=[^=]"), f .. ": " .. line)
        end
      end
    end
    p:close()
  end)

  it("the control plane does not require the supervisor (no require cycle)", function()
    local code, out, err = h.cli({ "-e",
      "require 'orch.ctl'; print(package.loaded['orch.supervisor'] == nil);"
      .. "local s = require 'orch.supervisor'; print(require('orch.ctl').registered('supervisor') == s)" })
    assert.are.equal(0, code, err)
    assert.are.equal("true\ntrue\n", out)
  end)
end)
