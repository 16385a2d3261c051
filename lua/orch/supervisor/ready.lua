--- orch.supervisor.ready: how a started process tells that it is ready.
--
--  - notify: the child gets NOTIFY_SOCKET, the path of a unix datagram
--    socket made by orch for this run of this instance (mode 0600), and sends
--    sd_notify(3) messages: READY=1, WATCHDOG=1, STATUS=..., MAINPID=...
--    With `user =`/`group =` the socket file belongs to the service's user
--    (still 0600) and lies where that user can reach it. Each datagram's
--    sender (SO_PASSCRED) must belong to the run (adopt.check: the service's
--    process or a descendant); others are dropped and logged.
--  - fd = n: the child inherits the write end of a pipe as fd n and writes a
--    newline when it is ready (s6's notification-fd); orch closes its read
--    end after the newline or at EOF.
--  - tcp = port: ready once one of the run's processes (adopt.processes)
--    holds a listening TCP socket on the port (/proc/net/tcp and tcp6 of
--    its network namespace, matched by socket inode to its fds). Polled at
--    `interval`, doubling up to 0.5 s, only while starting. A listener of
--    another process on that port is reported at once.
--  - a function(svc): runs as a task; ready when it returns a true value,
--    a start failure when it returns false/nil or raises.
--
-- prepare() runs before the spawn (it may add env and fds) and gives the
-- run its part "readiness" (a Probe: the notify socket, the fd pipe, the
-- probe task); start() starts the probe after the spawn. probe:stop() ends
-- the probe (the notify socket stays: it carries watchdog pings and status
-- after READY); probe:close(), called when the run is over, frees the rest.
local orch = require "orch"
local adopt = require "orch.supervisor.adopt"

local ready = {}

local Probe = {}
Probe.__index = Probe

--- Parses an sd_notify datagram ("KEY=VALUE\n..." lines) into a table.
function ready.parse(msg)
  local t = {}
  for line in msg:gmatch("[^\n]+") do
    local k, v = line:match("^([A-Z_][A-Z0-9_]*)=(.*)$")
    if k then t[k] = v end
  end
  return t
end

-- A name nobody can guess (for sockets placed in a shared directory).
local function nonce()
  return string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
end

local function stem(inst)
  return (inst.name:gsub("[^%w_.@-]", "_"))
end

-- The socket's path: in the runtime directory, or for a service running as
-- another user who cannot reach it, under /tmp with a name nobody can guess
-- (bind refuses an existing name, the file is 0600 and the service's).
local function notify_path(inst, ids)
  local dir, err = inst.sup:get_runtime_dir()
  if not dir then return nil, err end
  local path = string.format("%s/orch-%d-%s.notify", dir, orch.getpid(), stem(inst))
  if not ids or ids.uid == 0 then return path end
  local ok = orch.proc.can_access(dir, ids.uid, ids.gid, "wx")
  if ok then return path end
  if not orch.proc.can_access("/tmp", ids.uid, ids.gid, "wx") then
    return nil, string.format("no place for a notify socket: uid %d cannot reach %s nor /tmp", ids.uid, dir)
  end
  return string.format("/tmp/orch-%d-%s-%s.notify", orch.getpid(), stem(inst), nonce())
end

--- Before the spawn: adds what the child needs to `opts` (spawn options,
-- with opts.env a table). Returns true, or nil and a message.
function ready.prepare(inst, run, opts)
  local r = inst.cfg.ready
  if not r then return true end
  local p = run:own("readiness", setmetatable({}, Probe))
  if r.fn or r.tcp then return true end
  if r.notify then
    local ids, ierr = adopt.ids(inst.cfg)
    if ids == nil then return nil, ierr end
    local path, perr = notify_path(inst, ids)
    if not path then return nil, perr end
    if #path > 107 then
      return nil, "notify socket path too long: " .. path .. " (set runtime_dir to a shorter directory)"
    end
    local sock, err = orch.dgram { unix = path, mode = 384, passcred = true,
                                   uid = ids and ids.uid or nil, gid = ids and ids.gid or nil }
    if not sock then return nil, err end
    p.notify = sock
    opts.env.NOTIFY_SOCKET = path
    return true
  end
  if r.fd then
    local rd, wr = orch.pipe()
    if not rd then return nil, wr end
    p.rd, p.wr = rd, wr
    opts.fds = { [r.fd] = wr }
    return true
  end
  return true
end

local MAX_DROP_LOGS = 5      -- dropped senders logged per run

local function notify_loop(inst, run, p)
  local sock = p.notify
  while p.notify == sock do
    local msg, _, cred = sock:recv()
    if not msg then break end      -- closed at cleanup
    local ok, why
    if cred and cred.pid then ok, why = adopt.check(inst, run, cred.pid) else why = "has no credentials" end
    if ok then
      inst:notify_message(run, ready.parse(msg))
    else
      local n = (p.dropped or 0) + 1
      p.dropped = n
      if n <= MAX_DROP_LOGS then
        inst:log("dropped an sd_notify message from pid %s: it %s%s", tostring(cred and cred.pid), why,
          n == MAX_DROP_LOGS and " (further drops of this run are not logged)" or "")
      end
    end
  end
end

local function fd_probe(inst, run, p)
  local rd = p.rd
  while true do
    local chunk = rd:read(4096)
    if not chunk then break end
    if chunk:find("\n", 1, true) then
      rd:close()
      p.rd = nil
      return inst:mark_ready(run, "notification fd")
    end
  end
  rd:close()
  p.rd = nil
  inst:probe_failed(run, "notification fd closed without a newline")
end

-- Whether the listening address `addr` takes connections to `host`.
local function reaches(addr, host)
  if addr == "0.0.0.0" or addr == "::" then return true end
  addr = addr:gsub("^::ffff:", "")
  if host == "localhost" then return addr == "127.0.0.1" or addr == "::1" end
  if host:match("^[%d.]+$") or host:find(":", 1, true) then return addr == host end
  return true          -- a host name: any listener on the port
end

-- The process holding socket `inode`: its pid and "pid 12 (nginx)", or nil.
local function holder(inode)
  for _, pid in ipairs(orch.proc.list() or {}) do
    local socks = orch.proc.sockets(pid)
    if socks and socks[inode] then
      local i = orch.proc.info(pid)
      return pid, string.format("pid %d (%s)", pid, i and i.name or "?")
    end
  end
end

--- One look at the port: true when one of the run's processes listens on
-- it; false and, when another process holds it, a description of that.
function ready.tcp_check(run, port, host)
  local ns = run.main_pid or run.pid
  local ls = orch.proc.tcp_listeners(port, ns) or orch.proc.tcp_listeners(port) or {}
  local inodes, foreign = {}, nil
  for _, l in ipairs(ls) do
    if reaches(l.address, host) then inodes[#inodes + 1] = l end
  end
  if #inodes == 0 then return false end
  for _, pid in ipairs(adopt.processes(run)) do
    local socks = orch.proc.sockets(pid)
    if socks then
      for _, l in ipairs(inodes) do
        if socks[l.inode] then return true end
      end
    end
  end
  foreign = inodes[1]
  return false, foreign
end

local function tcp_probe(inst, run, r, p)
  local delay = r.interval
  local what = r.host .. ":" .. r.tcp
  while run.alive and not run.ready do
    local ok, foreign = ready.tcp_check(run, r.tcp, r.host)
    if ok then
      if p.blocked then inst.status_text = nil end
      return inst:mark_ready(run, "tcp " .. what)
    end
    if foreign and p.blocked ~= foreign.inode then
      local pid, who = holder(foreign.inode)
      if pid and adopt.check(inst, run, pid) then
        -- Its own after all (a process the walk missed: just forked, or an
        -- orphaned daemon not yet adopted).
        if p.blocked then inst.status_text = nil end
        return inst:mark_ready(run, "tcp " .. what)
      end
      -- Reported once per listener: the service cannot be ready while
      -- another process holds its port (its own bind fails).
      p.blocked = foreign.inode
      who = who or ("a process of uid " .. foreign.uid)
      inst.status_text = string.format("port %d is held by %s, not by this service", r.tcp, who)
      inst:log("not ready: port %d (%s) is held by %s, not by this service", r.tcp, foreign.address, who)
    end
    orch.sleep(delay)
    delay = math.min(delay * 2, 0.5)
  end
end

local function fn_probe(inst, run, fn)
  local ok, res = xpcall(fn, debug.traceback, inst)
  if not run.alive or run.ready then return end
  if ok and res then return inst:mark_ready(run, "ready function") end
  inst:probe_failed(run, ok and ("ready function returned " .. tostring(res)) or ("ready function failed: " .. tostring(res)))
end

--- After a successful spawn: starts the probe. Without a `ready` option the
-- run is ready at once.
function ready.start(inst, run)
  local r = inst.cfg.ready
  local p = run.readiness
  if r.notify then
    -- The notify socket also carries watchdog pings and status after READY.
    p.notify_task = orch.task(notify_loop, inst, run, p)
  end
  if r.fd then
    p.wr:close()      -- the child has its copy
    p.wr = nil
    p.task = orch.task(fd_probe, inst, run, p)
  elseif r.tcp then
    p.task = orch.task(tcp_probe, inst, run, r, p)
  elseif r.fn then
    p.task = orch.task(fn_probe, inst, run, r.fn)
  end
end

--- Ends the probe and frees its resources; the notify socket stays open (it
-- carries watchdog pings and status until the run is over).
function Probe:stop()
  if self.task and self.task ~= orch.current() then self.task:cancel() end
  self.task = nil
  if self.rd then self.rd:close() self.rd = nil end
  if self.wr then self.wr:close() self.wr = nil end
end

--- The run is over: the probe ends and the notify socket closes.
function Probe:close()
  self:stop()
  if self.notify then
    self.notify:close()      -- wakes the notify loop with an error: it ends
    self.notify = nil
  end
end

return ready
