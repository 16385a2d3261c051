--- `orch fdholder`: holds the read ends of a supervisor's log pipes so that
-- its services outlive a `kill -9` of orch (they would otherwise die of
-- SIGPIPE at their next write), and hands them to the next `orch run` of
-- the same control socket (like s6-fdholder or systemd's fd store). The
-- supervisor starts it (lua/orch/supervisor/holder.lua); nobody else has a
-- reason to. See doc/supervisor.md, "If orch is killed".
--
-- The holder itself is C (src/fdholder.c, with its protocol), entered from
-- src/main.c before any Lua state exists: `orch fdholder SOCKET PID START`
-- never comes here. This module is the command's entry in the parser
-- (`orch help fdholder`, usage errors).
local M = {}

M.usage = [[
usage: orch fdholder SOCKET ORCH_PID ORCH_START

Holds the log pipes of the supervisor ORCH_PID (started at ORCH_START, in
clock ticks) on the datagram socket SOCKET, and hands them over to the next
orch of the same control socket after ORCH_PID died. Started by the
supervisor itself; see doc/supervisor.md, "If orch is killed".
Exit codes: 0 nothing left to hold, 1 failure, 2 usage error.
]]

function M.args(c)
  c:argument("SOCKET"):target("socket")
  c:argument("ORCH_PID"):target("orch_pid")
  c:argument("ORCH_START"):target("orch_start")
end

-- Reached only through the parser, i.e. with a SOCKET that starts with '-'
-- (`orch fdholder -- -name PID START`), which the holder does not take.
function M.main(o)
  io.stderr:write("orch fdholder: SOCKET may not start with '-'\n", M.usage)
  return 2
end

return M
