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
-- prepare() runs before the spawn (it may add env and fds), start() after
-- it; every resource belongs to the run (inst.run) and cleanup() frees it.
local orch = require "orch"

local ready = {}

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
  if not r or r.fn or r.tcp then return true end
  if r.notify then
    local path = notify_path(inst)
    if #path > 107 then
      return nil, "notify socket path too long: " .. path .. " (set runtime_dir to a shorter directory)"
    end
    os.remove(path)      -- a stale socket of an earlier orch with the same pid
    local sock, err = orch.dgram { unix = path, mode = 384, passcred = true }
    if not sock then return nil, err end
    run.notify = sock
    opts.env.NOTIFY_SOCKET = path
    return true
  end
  if r.fd then
    local rd, wr = orch.pipe()
    if not rd then return nil, wr end
    run.ready_rd, run.ready_wr = rd, wr
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

local function notify_loop(inst, run)
  local sock = run.notify
  while run.notify == sock do
    local msg, _, cred = sock:recv()
    if not msg then break end      -- closed at cleanup
    if from_service(run, cred) then
      inst:notify_message(run, ready.parse(msg))
    elseif not run.notify_warned then
      run.notify_warned = true
      inst:log("ignoring sd_notify message from pid %s (not in the service's process group)",
        tostring(cred and cred.pid))
    end
  end
end

local function fd_probe(inst, run)
  local rd = run.ready_rd
  while true do
    local chunk = rd:read(4096)
    if not chunk then break end
    if chunk:find("\n", 1, true) then
      rd:close()
      run.ready_rd = nil
      return inst:mark_ready(run, "notification fd")
    end
  end
  rd:close()
  run.ready_rd = nil
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
  if r and r.notify then
    -- The notify socket also carries watchdog pings and status after READY.
    run.notify_task = orch.task(notify_loop, inst, run)
  end
  if r.fd then
    run.ready_wr:close()      -- the child has its copy
    run.ready_wr = nil
    run.probe = orch.task(fd_probe, inst, run)
  elseif r.tcp then
    run.probe = orch.task(tcp_probe, inst, run, r)
  elseif r.fn then
    run.probe = orch.task(fn_probe, inst, run, r.fn)
  end
end

--- Ends the probe of a run and frees its resources; the notify socket stays
-- open (it carries watchdog pings and status until cleanup).
function ready.stop_probe(run)
  if run.probe and run.probe ~= orch.current() then run.probe:cancel() end
  run.probe = nil
  if run.ready_rd then run.ready_rd:close() run.ready_rd = nil end
  if run.ready_wr then run.ready_wr:close() run.ready_wr = nil end
end

function ready.cleanup(run)
  ready.stop_probe(run)
  if run.notify then
    run.notify:close()      -- wakes the notify loop with an error: it ends
    run.notify = nil
  end
end

return ready
