--- orch.supervisor.heartbeat: `heartbeat = { timeout = s }` for a service.
--
-- Before the spawn, a slot of the heartbeat table is reserved for the run and
-- the child learns it from ORCH_HEARTBEAT_KEY / ORCH_HEARTBEAT_SLOT (see
-- include/orch_heartbeat.h: orch_hb_slot_from_env, or heartbeat.from_env()
-- in Lua, or `orch beat`); after the spawn the slot is assigned to the
-- child's pid. sd_notify WATCHDOG=1 pings count as beats too (a notify
-- service also gets WATCHDOG_USEC, as under systemd).
--
-- The deadlines start when the service is ready (hb.ready, when it becomes
-- running), as systemd arms WatchdogSec only after start-up: until then
-- start_timeout is what bounds a service that hangs. Beats sent while
-- starting are allowed and ignored.
--
-- The deadline check is one timer per running service, armed at
-- last beat + timeout: when it fires it reads the slot's last beat (and the
-- last ping) and either re-arms at the new deadline or, when nothing came,
-- kills the service so that its restart policy restarts it. No periodic scan.
--
-- prepare() gives the run its part "beat" (the slot, the deadline timer,
-- the time of the last sd_notify WATCHDOG=1 ping); beat:close() frees the
-- slot and stops the timer when the run is over.
local orch = require "orch"

local hb = {}

local Beat = {}
Beat.__index = Beat

local NAME_MAX = 63

function hb.prepare(inst, run, opts)
  local c = inst.cfg.heartbeat
  if not c then return true end
  local b = run:own("beat", setmetatable({}, Beat))
  local tbl, err = inst.sup:heartbeat_table(c.key)
  if tbl then
    local slot, rerr = tbl:reserve(inst.name:sub(1, NAME_MAX), c.timeout)
    if not slot then return nil, rerr end
    b.slot = slot
    opts.env.ORCH_HEARTBEAT_KEY = tostring(tbl:key())
    opts.env.ORCH_HEARTBEAT_SLOT = tostring(slot.index)
  elseif not (inst.cfg.ready and inst.cfg.ready.notify) then
    return nil, err
  end
  if inst.cfg.ready and inst.cfg.ready.notify then
    opts.env.WATCHDOG_USEC = tostring(math.floor(c.timeout * 1e6))
  end
  return true
end

--- An sd_notify WATCHDOG=1 ping counts as a beat.
function Beat:ping()
  self.wd_ping = orch.now()
end

local function last_beat(b)
  local t = b.start
  if b.slot then
    local info = b.slot:info()
    if info and info.last_beat > t then t = info.last_beat end
  end
  if b.wd_ping and b.wd_ping > t then t = b.wd_ping end
  return t
end

local function arm(inst, run, b, at)
  local timeout = inst.cfg.heartbeat.timeout
  b.timer = orch.timer.after(math.max(0, at - orch.now()), function()
    b.timer = nil
    if not run.alive or run.stopping then return end
    local last = last_beat(b)
    local now = orch.now()
    if now >= last + timeout then
      inst:force_restart(run, string.format("missed heartbeat: none for %.1fs (timeout %gs)", now - last, timeout))
    else
      arm(inst, run, b, last + timeout)
    end
  end)
end

--- After the spawn: the slot passes to the child. No deadline yet.
function hb.start(inst, run)
  local c = inst.cfg.heartbeat
  local b = run.beat
  if not c or not b then return end
  if b.slot then
    local ok, err = b.slot:assign(run.pid)
    if not ok then inst:log("heartbeat slot hand-over failed: %s", err) end
  end
  b.armed = false
end

--- The run is ready: the first beat is due `timeout` seconds from now.
function hb.ready(inst, run)
  local c = inst.cfg.heartbeat
  local b = run.beat
  if not c or not b or b.armed ~= false then return end   -- no hb.start for this run
  b.armed = true
  b.start = orch.now()
  arm(inst, run, b, b.start + c.timeout)
end

--- An adopted process (after `orch ctl reexec` or a killed orch): its slot
-- is found again by its pid, and its deadline starts now.
function hb.adopt(inst, run)
  local c = inst.cfg.heartbeat
  if not c then return end
  local b = run:own("beat", setmetatable({}, Beat))
  local tbl = inst.sup:heartbeat_table(c.key)
  if tbl then b.slot = tbl:find(run.pid) end
  b.start = orch.now()
  arm(inst, run, b, b.start + c.timeout)
end

--- Seconds since the run's last beat (or since it became ready, when none
-- came yet); nil while its deadline is not armed.
function hb.age(run)
  local b = run.beat
  if not b or not b.start then return nil end
  return orch.now() - last_beat(b)
end

function Beat:close()
  if self.timer then
    self.timer:stop()
    self.timer = nil
  end
  if self.slot then
    self.slot:unregister()
    self.slot = nil
  end
end

return hb
