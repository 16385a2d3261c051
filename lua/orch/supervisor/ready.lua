--- orch.supervisor.ready: how a started process tells that it is ready.
--
--  - notify: the child gets NOTIFY_SOCKET, the path of a unix datagram
--    socket made by orch for this run of this instance (mode 0600), and sends
--    sd_notify(3) messages: READY=1, WATCHDOG=1, STATUS=..., MAINPID=...
--    Messages are accepted from the main process or any process of its
--    process group (SO_PASSCRED tells who sent them).
--  - fd = n: the child inherits the write end of a pipe as fd n and writes a
--    newline when it is ready (s6's notification-fd); orch closes its read
--    end after the newline or at EOF.
--  - tcp = port: ready once a TCP connect to host:port succeeds (polled at
--    `interval`, doubling up to 0.5 s, only while starting).
--  - a function(svc): runs as a task; ready when it returns a true value,
--    a start failure when it returns false/nil or raises.
--
-- prepare() runs before the spawn (it may add env and fds) and gives the
-- run its part "readiness" (a Probe: the notify socket, the fd pipe, the
-- probe task); start() starts the probe after the spawn. probe:stop() ends
-- the probe (the notify socket stays: it carries watchdog pings and status
-- after READY); probe:close(), called when the run is over, frees the rest.
local orch = require "orch"

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

local function notify_path(inst)
  local dir = inst.sup.runtime_dir
  local stem = inst.name:gsub("[^%w_.@-]", "_")
  return string.format("%s/orch-%d-%s.notify", dir, orch.getpid(), stem)
end

--- Before the spawn: adds what the child needs to `opts` (spawn options,
-- with opts.env a table). Returns true, or nil and a message.
function ready.prepare(inst, run, opts)
  local r = inst.cfg.ready
  if not r then return true end
  local p = run:own("readiness", setmetatable({}, Probe))
  if r.fn or r.tcp then return true end
  if r.notify then
    local path = notify_path(inst)
    if #path > 107 then
      return nil, "notify socket path too long: " .. path .. " (set runtime_dir to a shorter directory)"
    end
    os.remove(path)      -- a stale socket of an earlier orch with the same pid
    local sock, err = orch.dgram { unix = path, mode = 384, passcred = true }
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

--- Whether the process `pid` belongs to the run: the main process, or one in
-- its process group.
local function from_service(run, cred)
  if not cred or not cred.pid then return false end
  if cred.pid == run.pid or cred.pid == run.main_pid then return true end
  local info = orch.proc.info(cred.pid)
  return info ~= nil and (info.pgid == run.pid or (run.main_pid and info.pgid == run.main_pid))
end

local function notify_loop(inst, run, p)
  local sock = p.notify
  while p.notify == sock do
    local msg, _, cred = sock:recv()
    if not msg then break end      -- closed at cleanup
    if from_service(run, cred) then
      inst:notify_message(run, ready.parse(msg))
    elseif not p.warned then
      p.warned = true
      inst:log("ignoring sd_notify message from pid %s (not in the service's process group)",
        tostring(cred and cred.pid))
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

local function tcp_probe(inst, run, r)
  local delay = r.interval
  while run.alive and not run.ready do
    local c = orch.connect { host = r.host, port = r.tcp }
    if c then
      c:close()
      return inst:mark_ready(run, "tcp " .. r.host .. ":" .. r.tcp)
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
    p.task = orch.task(tcp_probe, inst, run, r)
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
