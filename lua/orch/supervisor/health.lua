--- orch.supervisor.health: `health = { http = URL | tcp = "host:port" | fn,
-- every = 10, timeout = 2, failures = 3 }`: checks of a service after its
-- start-up (readiness says when it is up; health says it is still well), as
-- Docker's HEALTHCHECK or a Kubernetes liveness probe, supervised locally.
--
-- Once the run is ready (it becomes running), a task of the run checks it
-- every `every` seconds; a check that does not answer within `timeout` fails.
-- `failures` failed checks in a row restart the service through its stop
-- sequence and restart policy, with the reason "health check failed: WHY"
-- (WHY: "HTTP 500", "connect: connection refused", "timed out after 2s", or
-- what the function said). Everything runs on the loop: a check is a task
-- (orch.connect, stream reads with a timeout), never a blocking call.
--
-- The checking task is the run's part "health": it ends with the run. The
-- instance keeps counts across runs (inst.health = { ok, failed, last }) for
-- orch_service_health_checks_total (orch.http).
local orch = require "orch"

local health = {}

-- The first line of an HTTP response, read within the deadline.
local MAX_STATUS_LINE = 1024

local function http_check(h, deadline)
  local left = deadline - orch.now()
  local c, err = orch.connect { host = h.host, port = h.port, timeout = left }
  if not c then return nil, err end
  local _ <close> = c
  c:set_timeout(math.max(0.001, deadline - orch.now()))
  local ok, werr = c:write("GET " .. h.path .. " HTTP/1.1\r\nHost: " .. h.authority ..
    "\r\nUser-Agent: orch-health\r\nAccept: */*\r\nConnection: close\r\n\r\n")
  if not ok then return nil, werr end
  local buf = ""
  while not buf:find("\n", 1, true) and #buf < MAX_STATUS_LINE do
    local chunk, rerr = c:read(MAX_STATUS_LINE - #buf)
    if not chunk then
      if #buf == 0 then return nil, rerr or "connection closed without an answer" end
      break
    end
    buf = buf .. chunk
  end
  local status = tonumber(buf:match("^HTTP/%d%.%d (%d%d%d)"))
  if not status then return nil, "not an HTTP answer" end
  if status >= 200 and status < 400 then return true end
  return nil, "HTTP " .. status
end

local function tcp_check(t, deadline)
  local c, err = orch.connect { host = t.host, port = t.port, timeout = deadline - orch.now() }
  if not c then return nil, err end
  c:close()
  return true
end

local function fn_check(fn, inst)
  local ok, res, msg = xpcall(fn, debug.traceback, inst)
  if not ok then return nil, "raised: " .. tostring(res) end
  if res then return true end
  return nil, msg ~= nil and tostring(msg) or ("returned " .. tostring(res))
end

--- One check of the instance's current run: true, or nil and why.
function health.check(inst, c)
  local deadline = orch.now() + c.timeout
  local worker = orch.task(function()
    if c.http then return http_check(c.http, deadline) end
    if c.tcp then return tcp_check(c.tcp, deadline) end
    return fn_check(c.fn, inst)
  end)
  -- Cancelled with its caller (the run ended meanwhile), or late: the
  -- worker goes too (its connection closes).
  local _ <close> = setmetatable({}, { __close = function() worker:cancel() end })
  local ok, why, code = worker:join(c.timeout)
  if ok == nil and code == "ETIMEDOUT" and worker:status() ~= "done" then
    return nil, string.format("timed out after %gs", c.timeout)
  end
  return ok, why
end

local function loop(inst, run, c)
  local stats = inst.health
  local fails = 0
  while run.alive and not run.stopping do
    orch.sleep(c.every)
    if not run.alive or run.stopping then return end
    local ok, why = health.check(inst, c)
    if not run.alive or run.stopping then return end
    if ok then
      stats.ok = stats.ok + 1
      if fails > 0 then inst:log("health check passes again") end
      fails = 0
    else
      stats.failed = stats.failed + 1
      fails = fails + 1
      why = tostring(why):gsub("[\r\n].*", "")
      stats.last = why
      inst:log("health check failed (%d of %d): %s", fails, c.failures, why)
      if fails >= c.failures then
        return inst:force_restart(run, "health check failed: " .. why)
      end
    end
  end
end

--- The run became ready: its checks start (the first one `every` seconds
-- from now).
function health.start(inst, run)
  local c = inst.cfg.health
  if not c or not run.alive then return end
  inst.health = inst.health or { ok = 0, failed = 0 }
  local Run = require "orch.supervisor.run"
  run:own("health", orch.task(loop, inst, run, c), Run.cancel_task)
end

return health
