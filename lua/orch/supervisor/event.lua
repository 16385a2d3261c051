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

-- ---------------------------------------------------------------- the stream

--- A supervisor's stream of state changes (sup.events): a ring of the last
-- RECENT events and the functions subscribed to new ones. An event is a
-- table { time, event, name, service, pid, code, signal, delay, reason,
-- ... }; `event` is one of spawned, spawn_failed, ready, exited, backoff,
-- fatal, waiting, stopping, stopped, frozen, thawed, reloaded.
local Stream = {}
Stream.__index = Stream
Event.RECENT = 200

function Event.stream()
  return setmetatable({ ring = {}, pos = 0, count = 0, subs = {} }, Stream)
end

-- The subscribers are a list, in the order they subscribed (the same order
-- in every process: a simulation's trace depends on it), replaced as a
-- whole when one comes or goes, so that an emit walks the list it began
-- with whatever its subscribers do meanwhile.
local function unsubscribe(self, fn)
  local list = {}
  for _, f in ipairs(self.subs) do
    if f ~= fn then list[#list + 1] = f end
  end
  self.subs = list
end

--- Records ev and hands it to every subscriber (any context; a subscriber
-- must not wait: it is called inside the supervisor's state machine). A
-- subscriber that raises is removed, and its error returned for the log.
function Stream:emit(ev)
  ev.time = ev.time or orch.time()
  local cap = Event.RECENT
  self.pos = self.pos % cap + 1
  self.ring[self.pos] = ev
  if self.count < cap then self.count = self.count + 1 end
  local failed
  local subs = self.subs
  for i = 1, #subs do
    local ok, err = pcall(subs[i], ev)
    if not ok then
      unsubscribe(self, subs[i])
      failed = tostring(err)
    end
  end
  return failed
end

--- The last n events (all kept when nil), oldest first.
function Stream:recent(n)
  local count = self.count
  if not n or n > count then n = count end
  local out, cap = {}, Event.RECENT
  for i = n - 1, 0, -1 do out[#out + 1] = self.ring[(self.pos - 1 - i) % cap + 1] end
  return out
end

--- Subscribes fn(ev); returns a function that unsubscribes it.
function Stream:subscribe(fn)
  local list = table.move(self.subs, 1, #self.subs, 1, {})
  for _, f in ipairs(list) do
    if f == fn then return function() unsubscribe(self, fn) end end
  end
  list[#list + 1] = fn
  self.subs = list
  return function() unsubscribe(self, fn) end
end

return Event
