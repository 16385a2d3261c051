-- The state record (persist.lua) under a crash loop: a real `orch run` with
-- a real service that exits at once, restarted again and again, and
-- another service's change that must reach SOCKET.state (or its journal)
-- all the same. The policy runs on orch's virtual clock (doc/core.md,
-- orch.clock): the loop's restarts are then exactly `backoff` apart on the
-- clock orch's timers read, however fast or slow the machine runs them, so
-- "faster than one restart per 5 ms" (a spawn defers the sync 5 ms) holds
-- in every run; the processes, the socket and the files are real.
local h = require "spec.helper"
local u = require "spec.ctl_util"

local recorded = u.recorded

describe("the state record", function()
  it("reaches disk within a bounded time while a crash loop restarts faster than one restart per 5 ms", function()
    -- loop exits at once and comes back 4 ms (virtual) later; b, started
    -- 1 s in, exits 7 and stays exited. Each of loop's spawns used to push
    -- the pending sync 5 ms past it: the record was never written, not
    -- even the first one. Now a change waits at most MAX_SPACING (0.5 s)
    -- for the spawns to settle: 125 of loop's restarts.
    local o = u.start([[
orch.clock("virtual")
local sup = require "orch.supervisor"
sup.configure{ log = false }
sup.service{ name = "loop", cmd = { "true" }, backoff = 0.004, start_limit = false, log = false }
sup.service{ name = "b", cmd = { "sh", "-c", "exit 7" }, restart = "never", autostart = false, log = false }
sup.run()
orch.task(function()
  orch.sleep(1)
  sup.start("b")
end)
]])
    local ok, err = pcall(function()
      local b = u.until_true(function()
        local e = (recorded(o.sock) or {}).b
        return e and e.state == "exited" and e
      end, "the record to name b exited")
      assert.are.equal(7, math.tointeger(b.exit_code))
      -- The loop goes on (the record did not wait for its end).
      local r1 = u.status(o).loop.restarts
      u.until_true(function() return u.status(o).loop.restarts > r1 end, "loop to restart again")
    end)
    u.stop(o)
    if not ok then error(tostring(err) .. "\n" .. (h.slurp(o.dir .. "/err") or ""), 0) end
  end)
end)
