-- Each example in examples/ runs and does what it says.
local h = require "spec.helper"

describe("examples", function()
  it("tasks.lua", function()
    local code, out, err = h.cli({ "run", h.root .. "/examples/tasks.lua" })
    assert.are.equal(0, code, err)
    assert.are.equal("result\t42\nticks while waiting\ttrue\n", out)
  end)

  it("job.lua runs pipelines as process groups and waits for them member by member", function()
    local code, out, err = h.cli({ "run", h.root .. "/examples/job.lua" })
    assert.are.equal(0, code, err)
    assert.are.equal(table.concat({
      "yes | head -n 3", "y", "y", "y", "  yes: killed by PIPE", "  head: exit 0", "job ok:\ttrue",
      "sh -c 'exit 2' | sleep 100", "  sh: exit 2", "  sleep: killed by TERM", "job ok:\tfalse", "" }, "\n"), out)
  end)
end)
