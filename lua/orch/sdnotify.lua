--- orch.sdnotify: orch itself under systemd (Type=notify). When
-- NOTIFY_SOCKET is set, `orch run` sends READY=1 once the policies are
-- loaded, and pets the watchdog (WATCHDOG=1 every WATCHDOG_USEC/2) when
-- WATCHDOG_USEC is set for this process. The datagrams go out on an
-- unref'd C timer (orch.core.ctl), so they never keep orch alive.
local C = require "orch.core.ctl"
local getpid = require("orch.core").proc.getpid

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
  return C.sd_notify(state, path)
end

--- The watchdog interval (seconds) systemd asked for this process, or nil.
function M.watchdog_interval()
  local usec = tonumber(os.getenv("WATCHDOG_USEC") or "")
  if not usec or usec <= 0 then return nil end
  local wpid = tonumber(os.getenv("WATCHDOG_PID") or "")
  if wpid and wpid ~= getpid() then return nil end
  return usec / 1e6
end

--- Sends READY=1 (once) with MAINPID, and starts the watchdog pets at half
-- the interval. Returns true, or false when not under systemd.
function M.ready()
  local path = M.socket()
  if not path then return false end
  if M.is_ready then return true end
  M.is_ready = true
  local ok, err, code = C.sd_notify("READY=1\nMAINPID=" .. getpid(), path)
  if not ok then return nil, err, code end
  local every = M.watchdog_interval()
  if every then
    C.sd_notify("WATCHDOG=1", path)
    C.sd_watchdog(every / 2, path)
  end
  return true
end

--- Stops the watchdog pets (before a deliberate long pause, or an exec).
function M.stop_watchdog()
  local path = M.socket()
  if path then C.sd_watchdog(0, path) end
  return true
end

return M
