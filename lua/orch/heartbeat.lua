--- orch.heartbeat: the heartbeat table's client and reader API (see
-- doc/heartbeat.md). The verbs are implemented in C (src/l_heartbeat.c);
-- this module adds the waiting variant of from_env. `require "orch"`
-- installs it as orch.heartbeat.
--
-- The C binding never waits; the waiting that a supervised child may need
-- (its supervisor hands the slot over right after the spawn) happens here,
-- in a task, with orch.sleep.
local C = require "orch.core"
local sleep, now, current = C.core.sleep, C.core.now, C.core.current

local hb = {}
for k, v in pairs(C.heartbeat.heartbeat) do hb[k] = v end
local from_env_once = hb.from_env

--- heartbeat.from_env([wait]): the slot and table a supervisor handed this
-- process through ORCH_HEARTBEAT_KEY / ORCH_HEARTBEAT_SLOT. In a task it
-- waits up to `wait` seconds (default 2) for the hand-over; outside a task
-- it tries once. Returns slot, table or nil, message, ename.
function hb.from_env(wait)
  if wait ~= nil and (type(wait) ~= "number" or wait ~= wait or wait < 0 or wait == math.huge) then
    error("bad argument #1 to 'from_env' (seconds must be a finite number >= 0)", 2)
  end
  wait = wait or 2
  local slot, t, ename = from_env_once()
  if slot or ename ~= "EAGAIN" or wait == 0 or not current() then
    return slot, t, ename
  end
  local deadline = now() + wait
  while now() < deadline do
    sleep(0.005)
    slot, t, ename = from_env_once()
    if slot or ename ~= "EAGAIN" then break end
  end
  return slot, t, ename
end

return hb
