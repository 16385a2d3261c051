-- Each example in examples/ runs and does what it says.
local h = require "spec.helper"

describe("examples", function()
  it("tasks.lua", function()
    local code, out, err = h.cli({ "run", h.root .. "/examples/tasks.lua" })
    assert.are.equal(0, code, err)
    assert.are.equal("result\t42\nticks while waiting\ttrue\n", out)
  end)
end)
