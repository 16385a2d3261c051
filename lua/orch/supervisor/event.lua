--- orch.supervisor.event: "wait until this is true" for tasks, on top of
-- orch.cond. Every state change of the supervisor broadcasts its event; a
-- waiter re-checks its own condition after each wake-up.
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
