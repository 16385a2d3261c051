--- `orch beat`: registers a process in the heartbeat table, or beats for it.
-- For shell scripts: the first call registers the calling shell (the parent
-- of `orch beat`, or --pid), later calls find that registration by pid and
-- start time and beat. See doc/heartbeat.md.
local M = {}

M.usage = [[
usage: orch beat [--name NAME] [--timeout SECONDS] [--pid PID] [--key KEY]
                 [--compat] [--shared] [--unregister]

Registers PID (default: the calling process, i.e. the parent of `orch beat`)
in the heartbeat table on the first call, and beats on later calls (the
registration is found by pid and process start time). Under a supervisor,
the slot it reserved ($ORCH_HEARTBEAT_SLOT) is awaited when it is not yet
handed to the calling process.

  --name NAME        name of the registration (default: the process's comm)
  --timeout SECONDS  timeout; required to register; on a later call, changes it
  --pid PID          the process to register or beat for
  --key KEY          table key (decimal or 0x-hex; default: $ORCH_HEARTBEAT_KEY,
                     else 0x6F726862; 0x5095 with --compat)
  --compat           use the classic table (72-byte slots, wall-clock seconds)
  --shared           accept a table other users may write (and create it
                     mode 0666): the classic shared table (doc/security.md)
  --unregister       release the registration instead of beating

The table is created (mode 0600) when it does not exist. An existing table
is used only when it belongs to this user or root and, without --shared,
no other user may write it.
Exit codes: 0 done, 1 failure (message on stderr), 2 usage error.
]]

local function fail(code, fmt, ...)
  io.stderr:write("orch beat: ", string.format(fmt, ...), "\n")
  return code
end

local function parse_key(s)
  local n = math.tointeger(tonumber(s))   -- decimal, or 0x-hex
  if not n or n <= 0 or n > 0xffffffff then return nil end
  return n
end

local function comm(orch, pid)
  local info = orch.proc.info(pid)
  local s = info and info.name:gsub("%s+$", "") or ""
  return s ~= "" and s or ("pid" .. pid)
end

-- A supervised shell service that runs `orch beat` at once can come before
-- its registration: the supervisor reserved slot $ORCH_HEARTBEAT_SLOT under
-- its own pid before the spawn and hands it to the service's pid right
-- after. While that slot is still reserved by the process's parent, wait
-- (bounded) for the hand-over instead of failing with "--timeout is
-- required". The slot found is the registration by pid and start time, as
-- on any later call.
local HANDOVER_WAIT = 2
local function await_handover(orch, t, pid)
  local index = math.tointeger(tonumber(os.getenv("ORCH_HEARTBEAT_SLOT") or ""))
  local key = math.tointeger(tonumber(os.getenv("ORCH_HEARTBEAT_KEY") or ""))
  if not index or key ~= t:key() then return nil end
  local me = orch.proc.stat(pid)
  if not me then return nil end
  local deadline = orch.now() + HANDOVER_WAIT
  repeat
    local info = t:read(index)
    if not (info and info.reserved and info.pid == me.ppid) then return t:find(pid) end
    orch.sleep(0.002)
  until orch.now() >= deadline
  return t:find(pid)
end

function M.args(c)
  c:option("--name"):argname("NAME")
  c:option("--timeout"):argname("SECONDS")
  c:option("--pid"):argname("PID")
  c:option("--key"):argname("KEY")
  c:flag("--compat")
  c:flag("--shared")
  c:flag("--unregister")
end

function M.main(o)
  local orch = require "orch"
  local hb = orch.heartbeat

  local timeout
  if o.timeout then
    timeout = tonumber(o.timeout)
    if not timeout or timeout < 0 or timeout ~= timeout or timeout > 4294967 then
      return fail(2, "--timeout: seconds expected (0 to 4294967), got '%s'", o.timeout)
    end
  end
  local pid
  if o.pid then
    pid = math.tointeger(tonumber(o.pid))
    if not pid or pid <= 0 or pid > 0x7fffffff then
      return fail(2, "--pid: process id expected, got '%s'", o.pid)
    end
  else
    pid = orch.getppid()   -- the shell that ran `orch beat`
    if pid <= 1 then return fail(1, "cannot tell the calling process (use --pid)") end
  end
  local key
  if o.key then
    key = parse_key(o.key)
    if not key then return fail(2, "--key: SysV key expected (decimal or 0x-hex), got '%s'", o.key) end
  end
  if o.name and (o.name == "" or #o.name > (o.compat and 50 or hb.NAME_MAX)) then
    return fail(2, "--name: 1 to %d bytes expected", o.compat and 50 or hb.NAME_MAX)
  end

  local t, err = hb.open { key = key, create = true, compat = o.compat or nil,
                           shared = o.shared or nil, mode = o.shared and 438 --[[0666]] or nil }
  if not t then return fail(1, "%s", err) end
  local code = 0
  local slot = t:find(pid) or (not o.unregister and await_handover(orch, t, pid))
  if o.unregister then
    if not slot then
      code = fail(1, "pid %d has no registration", pid)
    else
      local ok, uerr = slot:unregister()
      if not ok then code = fail(1, "%s", uerr) end
    end
  elseif slot then
    local ok, berr = true, nil
    if timeout and slot:info().timeout ~= (o.compat and math.ceil(timeout) or math.ceil(timeout * 1000 - 1e-6) / 1000) then
      ok, berr = slot:set_timeout(timeout)
    end
    if ok then ok, berr = slot:beat() end
    if not ok then code = fail(1, "%s", berr) end
  else
    if not timeout then
      code = fail(2, "--timeout is required to register pid %d", pid)
    elseif not hb.alive(pid) then
      code = fail(1, "no such process: %d", pid)
    else
      local s, rerr = t:register(o.name or comm(orch, pid), timeout, pid)
      if not s then code = fail(1, "%s", rerr) end
    end
  end
  t:close()
  return code
end

return M
