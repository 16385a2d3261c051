--- orch.supervisor.bound: which process is bound at a unix socket path,
-- for holder.lua's hello to the fd holder when the state record does not
-- name the process that answers at SOCKET.holder (the record's holder is
-- gone, or it names none). The holder's socket is a datagram socket, for
-- which the kernel keeps no peer credentials (SO_PEERCRED gives pid 0 and
-- uid -1 there): the socket's inode comes from /proc/net/unix, and its
-- process from the `socket:[inode]` links of /proc/PID/fd
-- (orch.proc.sockets). Task or not; in a task the scan yields every 256
-- processes, so that a fleet of thousands does not hold the loop.
local orch = require "orch"

local bound = {}

-- The inodes of the sockets bound at path (a set; empty when none is),
-- from /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path".
local function inodes_at(path)
  local set = {}
  local f = io.open("/proc/net/unix", "r")
  if not f then return set end
  for line in f:lines() do
    local ino, p = line:match("^%x+: %x+ %x+ %x+ %x+ %x+%s+(%d+) (.*)$")
    if p == path then set[math.tointeger(tonumber(ino))] = true end
  end
  f:close()
  return set
end

local function holds(pid, set)
  local socks = orch.proc.sockets(pid)
  if not socks then return false end
  for ino in pairs(socks) do
    if set[ino] then return true end
  end
  return false
end

--- The process bound at path: its orch.proc.info (pid, uid, cmdline,
-- start_time, ...), or nil when no process holds a socket bound there (or
-- it cannot be seen: another user's, without root). Processes named as
-- orch is (the fd holder is one) are looked at first, then all others.
function bound.process(path)
  local set = inodes_at(path)
  if next(set) == nil then return nil end
  local me = orch.getpid()
  local own = orch.proc.stat(me)
  local name = own and own.name
  local list, scratch, n = orch.proc.list(), {}, 0
  local yield = orch.current() ~= nil
  for pass = 1, 2 do
    for _, pid in ipairs(list) do
      if pid ~= me then
        local st = orch.proc.stat(pid, scratch)
        if st and (st.name == name) == (pass == 1) and holds(pid, set) then
          return orch.proc.info(pid)
        end
        n = n + 1
        if yield and n % 256 == 0 then orch.sleep(0) end
      end
    end
  end
  return nil
end

--- Whether info (bound.process's) is an fd holder started for path: of
-- orch's effective uid, with holder.start's command line `ORCH fdholder
-- PATH ...`, and bound at path (it was found so). ORCH, the file it runs,
-- may be another than this orch's (an orch installed elsewhere since):
-- such a holder answers the same hello.
function bound.is_holder(info, path)
  local c = info and info.cmdline
  return type(c) == "table" and info.uid == orch.geteuid() and c[2] == "fdholder" and c[3] == path
    and info.state ~= "Z"
end

return bound
