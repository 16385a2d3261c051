--- orch.sdnotify: orch itself under systemd (Type=notify). When
-- NOTIFY_SOCKET is set, `orch run` sends READY=1 once the policies are
-- loaded, and pets the watchdog (WATCHDOG=1 every WATCHDOG_USEC/2) when
-- WATCHDOG_USEC is set for this process. The datagrams go out on unbound
-- orch.dgram sockets, the pets from a timer with ref = false, so they never
-- keep orch alive.
local orch = require "orch"

local M = {}

--- The notification socket, or nil when orch is not run by systemd with
-- Type=notify.
function M.socket()
  local p = os.getenv("NOTIFY_SOCKET")
  if not p or #p < 2 or (p:sub(1, 1) ~= "/" and p:sub(1, 1) ~= "@") then return nil end
  return p
end

--- Sends one notification ("READY=1", "STATUS=...", "STOPPING=1",
-- "RELOADING=1", ...). Returns true, or nil, message, code; false when
-- NOTIFY_SOCKET is not set.
function M.notify(state)
  if type(state) ~= "string" then error("bad argument #1 to 'notify' (string expected, got " .. type(state) .. ")", 2) end
  local path = M.socket()
  if not path then return false end
  return M.send(state, path)
end

--- Sends one datagram `state` to the socket `path` (a path or @name), from
-- an unbound orch.dgram made for it (no descriptor outlives the call).
-- Returns true, or nil, "sd_notify: <reason>", code.
function M.send(state, path)
  for i = 1, 2 do
    local v = select(i, state, path)
    if type(v) ~= "string" then
      error(("bad argument #%d to 'send' (string expected, got %s)"):format(i, v == nil and "no value" or type(v)), 2)
    end
  end
  local sock, err, code = orch.dgram()
  if not sock then return nil, "sd_notify: " .. tostring(err):gsub("^dgram: ", ""), code end
  local ok
  ok, err, code = sock:send(state, path)
  sock:close()
  if not ok then return nil, "sd_notify: " .. tostring(err):gsub("^send: ", ""), code end
  return true
end

local pets   -- the orch.Timer of the watchdog pets
local pet_sock   -- the orch.Dgram they are sent from, made by M.ready
--- The watchdog interval (seconds) systemd asked for this process, or nil.
function M.watchdog_interval()
  local usec = tonumber(os.getenv("WATCHDOG_USEC") or "")
  if not usec or usec <= 0 then return nil end
  local wpid = tonumber(os.getenv("WATCHDOG_PID") or "")
  if wpid and wpid ~= orch.getpid() then return nil end
  return usec / 1e6
end

--- Sends READY=1 (once) with MAINPID, and starts the watchdog pets at half
-- the interval. Returns true, or false when not under systemd, or nil,
-- message, code when READY=1 could not be sent (a later call tries again).
-- The pets go out from one socket made here and kept: a pet needs no free
-- descriptor, so orch at its fd limit is not taken for hung by systemd.
function M.ready()
  local path = M.socket()
  if not path then return false end
  if M.is_ready then return true end
  local sock, err, code = orch.dgram()
  if not sock then return nil, "sd_notify: " .. tostring(err):gsub("^dgram: ", ""), code end
  local ok
  ok, err, code = sock:send("READY=1\nMAINPID=" .. orch.getpid(), path)
  if not ok then
    sock:close()
    return nil, "sd_notify: " .. tostring(err):gsub("^send: ", ""), code
  end
  M.is_ready = true
  local every = M.watchdog_interval()
  M.stop_watchdog()
  if not every then
    sock:close()
    return true
  end
  pet_sock = sock
  sock:send("WATCHDOG=1", path)
  -- A lost pet is not worth a report: systemd's timeout says it.
  pets = orch.timer.every(every / 2, function() sock:send("WATCHDOG=1", path) end, { ref = false })
  return true
end

--- Stops the watchdog pets (before a deliberate long pause, or an exec).
function M.stop_watchdog()
  if pets then pets:stop() end
  if pet_sock then pet_sock:close() end
  pets, pet_sock = nil, nil
  return true
end

return M
