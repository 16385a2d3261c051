-- examples/supervise.lua runs, shows each policy at work, and stops every
-- program it started (the double-forked daemon included).
local u = require "spec.supervisor_util"
local h = u.h

describe("examples/supervise.lua", function()
  it("supervises its programs and stops them all", function()
    local token = "example_" .. os.time() .. "_" .. math.random(1e6)
    local code, out, err = h.cli({ "run", h.root .. "/examples/supervise.lua", "3" }, nil,
      { ORCH_SPEC_RUN = token, ORCH_SOCKET = h.tmpdir() .. "/ctl.sock" })
    local dir = out:match("logs and pidfile in (%S+)")
    if dir and dir:match("^/tmp/orch%-supervise%.") then os.execute("rm -rf " .. h.shquote(dir)) end
    assert.are.equal(0, code, err)
    for _, want in ipairs {
      "notify: ready (sd_notify READY=1)", "notify is ready: serving",
      "daemon: main process is now ", "daemon: ready (pidfile)",
      "worker:1: waiting for notify to be ready",
      "flaky: FATAL: start limit reached: 4 starts within 10s", "flaky gave up: ",
      "status notify    running", "status daemon    running", "status flaky     fatal",
      "every service is stopped",
    } do
      assert.truthy(out:find(want, 1, true), "missing: " .. want .. "\n" .. out)
    end
    assert.truthy(err:find("worker:1 | worker 1 starting", 1, true), err)
    -- Dependents stop before what they depend on.
    local w, n = out:find("worker:1: stopped", 1, true), out:find("notify: stopped", 1, true)
    assert.truthy(w and n and w < n, out)
    assert.are.same({}, u.leftovers(token))
  end)
end)
