--- orch.supervisor.limits: memory and CPU limits of a running service,
-- checked every `interval` seconds: of its whole cgroup (every process of
-- the service, its forked workers too: memory.current, cpu.stat) when it
-- has one, else of its main process (/proc, orch.proc.info). A service
-- that stays over a limit for `for_seconds` is restarted (killed with its
-- stop sequence, then restarted by its policy as a failure).
-- The timer exists only while the service runs and only for services with
-- `limits`, so idle services cost no wakeups.
local orch = require "orch"
local cgroup = require "orch.supervisor.cgroup"

local limits = {}

-- (Multiplied, not 1024 ^ 2: Lua's `^` is libm's pow, kept out of memory.)
local MIB, GIB = 1024.0 * 1024, 1024.0 * 1024 * 1024
local function human(n)
  if n >= GIB then return string.format("%.1fG", n / GIB) end
  if n >= MIB then return string.format("%.1fM", n / MIB) end
  if n >= 1024 then return string.format("%.1fK", n / 1024) end
  return tostring(n)
end

--- Starts sampling a run that became ready: the run's part "limiter" (a
-- timer; closed when the run is over).
function limits.start(inst, run)
  local l = inst.cfg.limits
  if not l or not (l.rss or l.cpu_percent) then return end
  -- A contained service is measured whole: every process of its cgroup.
  local function measure(p) return cgroup.sample(run, l.rss) or orch.proc.info(p) end
  local pid = run.main_pid or run.pid
  local info = measure(pid)
  local sample, sampled, over_since = info and info.cpu, orch.now(), nil
  run:own("limiter", orch.timer.every(l.interval, function()
    if not run.alive or run.stopping then return end
    local p = run.main_pid or run.pid
    local i = measure(p)
    if not i then return end
    local now = orch.now()
    local over
    if l.rss and i.rss > l.rss then
      over = string.format("rss %s above %s", human(i.rss), human(l.rss))
    end
    if l.cpu_percent and sample and now > sampled then
      local pct = (i.cpu - sample) / (now - sampled) * 100
      if pct > l.cpu_percent then
        over = over or string.format("cpu %.0f%% above %g%%", pct, l.cpu_percent)
      end
    end
    sample, sampled = i.cpu, now
    if not over then
      over_since = nil
      return
    end
    over_since = over_since or now
    if now - over_since >= l.for_seconds then
      inst:force_restart(run, "limit exceeded: " .. over)
    end
  end), function(t) t:stop() end)
end

return limits
