--- The Lua layer of orch.heartbeat (installed by lua/orch/init.lua).
-- The C binding never waits; the waiting that a supervised child may need
-- (its supervisor hands the slot over right after the spawn) happens here,
-- in a task, with orch.sleep.
return function(orch)
  local hb = orch.heartbeat
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
    if slot or ename ~= "EAGAIN" or wait == 0 or not orch.current() then
      return slot, t, ename
    end
    local deadline = orch.now() + wait
    while orch.now() < deadline do
      orch.sleep(0.005)
      slot, t, ename = from_env_once()
      if slot or ename ~= "EAGAIN" then break end
    end
    return slot, t, ename
  end
end
