--- orch.supervisor.heartbeat: `heartbeat = { timeout = s }` for a service.
--
-- Before the spawn, a slot of the heartbeat table is reserved for the run and
-- the child learns it from ORCH_HEARTBEAT_KEY / ORCH_HEARTBEAT_SLOT (see
-- include/orch_heartbeat.h: orch_hb_slot_from_env, or heartbeat.from_env()
-- in Lua, or `orch beat`); after the spawn the slot is assigned to the
-- child's pid. sd_notify WATCHDOG=1 pings count as beats too (a notify
-- service also gets WATCHDOG_USEC, as under systemd).
--
-- The deadline check is one timer per running service, armed at
-- last beat + timeout: when it fires it reads the slot's last beat (and the
-- last ping) and either re-arms at the new deadline or, when nothing came,
-- kills the service so that its restart policy restarts it. No periodic scan.
local orch = require "orch"

local hb = {}

local NAME_MAX = 63

function hb.prepare(inst, run, opts)
  local c = inst.cfg.heartbeat
  if not c then return true end
  local tbl, err = inst.sup:heartbeat_table(c.key)
  if tbl then
    local slot, rerr = tbl:reserve(inst.name:sub(1, NAME_MAX), c.timeout)
    if not slot then return nil, rerr end
    run.hb_slot = slot
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

local function last_beat(run)
  local t = run.hb_start
  if run.hb_slot then
    local info = run.hb_slot:info()
    if info and info.last_beat > t then t = info.last_beat end
  end
  if run.wd_ping and run.wd_ping > t then t = run.wd_ping end
  return t
end

local function arm(inst, run, at)
  local timeout = inst.cfg.heartbeat.timeout
  run.hb_timer = orch.timer.after(math.max(0, at - orch.now()), function()
    run.hb_timer = nil
    if not run.alive or run.stopping then return end
    local last = last_beat(run)
    local now = orch.now()
    if now >= last + timeout then
      inst:force_restart(run, string.format("missed heartbeat: none for %.1fs (timeout %gs)", now - last, timeout))
    else
      arm(inst, run, last + timeout)
    end
  end)
end

function hb.start(inst, run)
  local c = inst.cfg.heartbeat
  if not c then return end
  if run.hb_slot then
    local ok, err = run.hb_slot:assign(run.pid)
    if not ok then inst:log("heartbeat slot hand-over failed: %s", err) end
  end
  run.hb_start = orch.now()
  arm(inst, run, run.hb_start + c.timeout)
end

function hb.stop(run)
  if run.hb_timer then
    run.hb_timer:stop()
    run.hb_timer = nil
  end
  if run.hb_slot then
    run.hb_slot:unregister()
    run.hb_slot = nil
  end
end

return hb
