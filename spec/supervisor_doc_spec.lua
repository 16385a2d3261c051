-- Every ```lua example in doc/supervisor.md is a complete program: each runs
-- under `orch run` and exits 0, leaving no process behind.
local u = require "spec.supervisor_util"
local h, orch = u.h, u.orch

local examples = {}
do
  local text = h.slurp(h.root .. "/doc/supervisor.md")
  for code in text:gmatch("\n```lua\n(.-)\n```") do examples[#examples + 1] = code end
end

describe("doc/supervisor.md", function()
  it("has examples", function()
    assert.is_true(#examples >= 10)
  end)
  for i, code in ipairs(examples) do
    local first = code:match("^[^\n]*")
    it("example " .. i .. " runs: " .. first, function()
      u.with(function(_, _, dir, _, token)
        local script = dir .. "/example.lua"
        h.write(script, code)
        local p = assert(orch.spawn { h.bin, "run", script, stdout = dir .. "/out", stderr = dir .. "/err",
          env = { ORCH_SPEC_RUN = token, XDG_RUNTIME_DIR = dir, ORCH_SOCKET = dir .. "/ctl.sock" } })
        local code_, sig = p:wait(60)
        if code_ == nil and sig == nil then p:kill("KILL") p:wait() end
        local err = h.slurp(dir .. "/err")
        assert.are.equal(0, code_, "signal " .. tostring(sig) .. "\nstdout:\n" .. h.slurp(dir .. "/out") ..
          "\nstderr:\n" .. err)
        assert.is_nil(err:find("hook failed", 1, true) and not code:find("hooks may fail", 1, true) or nil, err)
      end, 90)
    end)
  end
end)
