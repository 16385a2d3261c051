--- orch.supervisor.event: "wait until this is true" for tasks, on top of
-- orch.cond. The supervisor has one event, signalled by every state change
-- of its instances (sup.wait, reload); each run of an instance gets its own
-- on the first wait (its end, its log's EOF), so that a stop task wakes for
-- the events of its own run only. A waiter re-checks its own condition after
-- each wake-up.
local orch = require "orch"

local Event = {}
Event.__index = Event

function Event.new()
  return setmetatable({ cond = orch.cond() }, Event)
end

--- Wakes every task waiting now. Any context.
function Event:signal()
  self.cond:broadcast()
end

--- Waits (task only) until pred() is true or `timeout` seconds passed
-- (nil: no limit). Returns pred()'s final truth.
function Event:wait_for(pred, timeout)
  local deadline = timeout and (orch.now() + timeout)
  while not pred() do
    local left = deadline and (deadline - orch.now())
    if left and left <= 0 then return pred() and true or false end
    self.cond:wait(left)
  end
  return true
end

return Event
