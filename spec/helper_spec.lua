-- The specs' own helpers (spec/helper.lua) where a test's failure or hang
-- would otherwise spill over: h.cli's hang guard, h.run's cleanup of a
-- failed test's children. Real processes.
local h = require "spec.helper"
local orch = h.orch

describe("h.cli", function()
  it("fails the test, saying so, when orch hangs, and kills its process group", function()
    local token = string.format("helper_%d_%d", orch.getpid(), os.time())
    local script = h.script([[
      assert(orch.spawn { "sleep", "1000" })
      orch.sleep(1000)
    ]])
    local saved = h.cli_timeout
    h.cli_timeout = 1     -- the guard itself under test: any hang will do
    local ok, err = pcall(h.cli, { "run", script }, nil, { ORCH_SPEC_RUN = token })
    h.cli_timeout = saved
    assert.is_false(ok)
    assert.matches("h.cli: orch run " .. script .. " was still running after 1 s (hung): its process group was killed",
      err, 1, true)
    -- The hung orch and the child in its group (all that started) are gone.
    h.run(function()
      h.eventually(function() return #h.leftovers(token) == 0 end, "the hung orch's group gone")
    end)
  end)

  it("returns what orch said and its exit code when it ends", function()
    assert.are.same({ 3, "out\n", "err\n" },
      { h.cli { "-e", "print('out') io.stderr:write('err\\n') os.exit(3)" } })
  end)
end)

describe("h.run", function()
  it("reaps a failed test's children and takes their exits: none is left to the tests that follow", function()
    local ok, err = pcall(h.run, function()
      assert(orch.spawn { "sleep", "100" })
      assert(orch.spawn { "sleep", "100", pgroup = true })
      error("the test failed")
    end)
    assert.is_false(ok)
    assert.are.equal("the test failed", err:match("the test failed$"))
    assert.are.same({}, h.children())
    h.run(function()
      assert.are.same({ nil, "wait_any: orch has no child", "ECHILD" }, { orch.wait_any(0) })
    end)
  end)
end)
