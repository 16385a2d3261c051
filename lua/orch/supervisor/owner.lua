--- orch.supervisor.owner: which script the state beside a control socket
-- belongs to, so that the next `orch run` of the socket takes over only
-- what its own script left (doc/supervisor.md, "If orch is killed";
-- doc/cli.md, "One orchestrator per control socket").
--
-- Two scripts may share a socket: the default one is named after the
-- script's basename (/srv/a/app.lua and /srv/b/app.lua both get
-- app.sock). The lock keeps them from running at once; after a kill -9 of
-- the first, its services, state record and cgroups are still there. The
-- supervisor writes SOCKET.owner (JSON, 0600, beside the record: the
-- script's absolute path as given, its real path, orch's uid and pid)
-- before any service starts, and the next orch of the socket compares it
-- with its own script (ctl.script_identity, from ctl.claim_for_run):
--  * the same script (either path matches): it goes on as before;
--  * another script, and nothing of it runs any more: its state is
--    dropped (logged), nothing of it is resumed;
--  * another script whose processes still run (in the record, or in the
--    socket's cgroup tree): orch refuses to start (exit 75, nothing
--    touched) and says whose they are and what to do, unless
--    `orch run --take-over` asked to adopt them as if the script had been
--    edited into this one (same-named services adopted, the others stopped).
-- A record without SOCKET.owner (written by an orch before this check) is
-- taken over as before.
--
-- Functions of the supervisor state S and of persist's P. Nothing here
-- waits: small local files, /proc and cgroupfs reads.
local orch = require "orch"

local owner = {}

local function ctl() return require "orch.ctl" end

--- The identity of this `orch run`'s script for control socket `sock`
-- (see ctl.script_identity), and whether --take-over was given; nil when
-- orch holds no lock of `sock` for `orch run` (no identity to compare).
function owner.mine(sock)
  local c = package.loaded["orch.ctl"]
  local l = c and type(c.locks) == "table" and c.locks[sock]
  if type(l) ~= "table" or type(l.script) ~= "table" then return nil, false end
  return l.script, l.take_over == true
end

--- Whether identities a and b name the same script: the same uid, and the
-- same path as given or the same real path.
function owner.same(a, b)
  return a.uid == b.uid and (a.script == b.script or (a.real ~= nil and a.real == b.real))
end

--- The identity on file at `path`, or nil (none, unreadable, not ours).
function owner.read(path)
  local text = orch.private.read(path)
  local t = text and ctl().decode(text)
  if type(t) ~= "table" or type(t.script) ~= "string" then return nil end
  return { script = t.script, real = type(t.real) == "string" and t.real or nil,
           uid = math.tointeger(t.uid), pid = math.tointeger(t.pid) }
end

--- Writes `id` (with orch's pid) to `path`. true, or nil, message.
function owner.write(path, id)
  return orch.private.write(path, ctl().encode { script = id.script, real = id.real, uid = id.uid,
                                                pid = orch.getpid() } .. "\n")
end

-- "web (pid 4711), db (pid 4712)", at most 10 named.
local function list(live)
  local parts = {}
  for i, x in ipairs(live) do
    if i > 10 then
      parts[#parts + 1] = string.format("%d more", #live - 10)
      break
    end
    parts[#parts + 1] = x
  end
  return table.concat(parts, ", ")
end

-- A process a record or journal names is still that process (persist's
-- rule: a pid of the right start time, not a zombie, never orch or pid 1).
local function alive(pid, start)
  return require("orch.supervisor.persist").same_process(pid, start)
end

-- The live processes the record and the journal at P's paths name, as
-- "name (pid N)", and their pids. Every entry counts, also one a later
-- line replaced: a process still alive is a leftover either way.
local function recorded(P)
  local live, seen = {}, {}
  local function add(name, pid, start)
    pid, start = math.tointeger(tonumber(pid)), math.tointeger(tonumber(start))
    if type(name) == "string" and pid and not seen[pid] and alive(pid, start) then
      seen[pid] = true
      live[#live + 1] = string.format("%s (pid %d)", name, pid)
    end
  end
  local rec = ctl().decode(orch.private.read(P.state_path) or "")
  for _, e in ipairs(type(rec) == "table" and type(rec.instances) == "table" and rec.instances or {}) do
    if type(e) == "table" then add(e.name, e.pid, e.pid_start) end
  end
  for line in (orch.private.read(P.journal_path) or ""):gmatch("[^\n]+") do
    if line:sub(1, 1) == "{" then
      local e = ctl().decode(line)
      if type(e) == "table" then add(e.name, e.pid, e.pid_start) end
    else
      add(line:match("^([^\t]+)\t(%d+)\t(%d+)\t"))
    end
  end
  return live, seen
end

--- In persist.recover, before anything of the record is read or acted
-- on (P: persist's state, with socket, state_path, journal_path and
-- owner_path). Returns "mine" (go on), "stale" (another script's state of
-- which nothing runs: to be dropped, not resumed), "take" (another
-- script's, taken over with --take-over), or nil, message (refuse: another
-- script's processes run; nothing was touched). Unless it refuses, this
-- orch's script is on file as the owner from now on.
function owner.check(S, P)
  local me, take_over = owner.mine(P.socket)
  if not me then return "mine" end
  local prev = owner.read(P.owner_path)
  local verdict = "mine"
  if prev and not owner.same(prev, me) then
    local live, seen = recorded(P)
    local strays = 0
    for _, pid in ipairs(require("orch.supervisor.cgroup").tree_pids(S) or {}) do
      if not seen[pid] then strays = strays + 1 end
    end
    if strays > 0 then
      live[#live + 1] = string.format("%d process%s in its cgroups", strays, strays == 1 and "" or "es")
    end
    local whose = prev.script .. (prev.pid and string.format(" (orch pid %d, killed)", prev.pid) or "")
    if #live == 0 then
      S:log(string.format("the state on control socket %s was left by another script, %s, "
        .. "and nothing of it runs any more: not taken over", P.socket, whose))
      verdict = "stale"
    elseif take_over then
      S:log(string.format("taking over what another script, %s, left running on control socket %s "
        .. "(--take-over): %s", whose, P.socket, list(live)))
      verdict = "take"
    else
      return nil, string.format("control socket %s: another script's services still run on it: %s left %s "
        .. "running (this is %s). Run %s again to take them back, give this script its own socket "
        .. "(orch run --socket PATH), or adopt them with orch run --take-over (services of the same name "
        .. "are adopted, the others stopped)", P.socket, whose, list(live), me.script, prev.script)
    end
  end
  local ok, err = owner.write(P.owner_path, me)
  if not ok then S:log("cannot write " .. P.owner_path .. ": " .. tostring(err)) end
  return verdict
end

return owner
