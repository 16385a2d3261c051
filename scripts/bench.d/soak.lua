-- scripts/bench.d/soak.lua: a supervisor whose services crash-loop for a while;
-- reports restarts and the growth of orch's memory per hour.
--   orch run soak.lua [SECONDS [SERVICES [BACKOFF [LOGDIR]]]]
-- Defaults: 60 s, 10 services, 0.2 s between a crash and its restart (about
-- 50 restarts/s), output captured to LOGDIR (default: a temporary directory,
-- removed at the end) with rotation, an on_exit hook per service, and one
-- control request per second (sup.status), so every path of a crash loop
-- (spawn, reap, log pipe, rotation, hooks, status) runs for the whole time.
--
-- RSS is sampled every SECONDS/60 s (at least 1 s). Growth is the slope of a
-- least-squares line through the samples after the first 10% of the run
-- (warm-up: allocator arenas, Lua heap reaching its steady GC cycle), in
-- MB per hour; a leak of one small object per restart shows as a steady slope.
-- The allocator gives memory back to the kernel in steps (glibc trims the top
-- of the heap), so RSS may go up and down by one step for the whole run and
-- tilt the slope: the peak growth (highest RSS of the second half of the run
-- after warm-up, minus the highest of the first half, per hour) is printed
-- too; a leak raises both.
local orch = require "orch"
local sup = require "orch.supervisor"

local seconds = tonumber(arg[1]) or 60
local n = tonumber(arg[2]) or 10
local backoff = tonumber(arg[3]) or 0.2
local logdir, own_dir = arg[4], false
if not logdir then
  logdir = os.tmpname(); os.remove(logdir)
  assert(os.execute("mkdir -m 700 " .. logdir))
  own_dir = true
end

local exits = 0
sup.configure { log = false }
for i = 1, n do
  sup.service { name = "crash" .. i, backoff = backoff, start_limit = false,
                cmd = "echo starting $ORCH_SVC; echo error >&2; exit 3",
                env = { ORCH_SVC = i },
                log = { dir = logdir, max_bytes = "64k", keep = 2, tail = 50 },
                on_exit = function() exits = exits + 1 end }
end
sup.run()

local me = orch.getpid()
local function rss() return orch.proc.info(me).rss end
local step = math.max(1, seconds / 60)
local samples, t0 = {}, orch.now()
local status_calls = 0
orch.task(function()
  while orch.now() - t0 < seconds do
    orch.sleep(1)
    status_calls = status_calls + 1
    assert(#sup.status() == n)
  end
end)
while true do
  local t = orch.now() - t0
  samples[#samples + 1] = { t = t, rss = rss() }
  io.stderr:write(string.format("soak: t=%.0f s rss=%d\n", t, samples[#samples].rss))
  if t >= seconds then break end
  orch.sleep(math.min(step, seconds - t))
end

local restarts = 0
for _, st in ipairs(sup.status()) do restarts = restarts + st.restarts end
sup.stop("all")
assert(sup.wait("all", "stopped", 30))
if own_dir then os.execute("rm -rf " .. logdir) end

-- Least squares over the samples after the warm-up.
local xs, ys = {}, {}
for _, s in ipairs(samples) do
  if s.t >= seconds * 0.1 then xs[#xs + 1] = s.t; ys[#ys + 1] = s.rss end
end
local m = #xs
local sx, sy, sxx, sxy = 0, 0, 0, 0
for i = 1, m do sx = sx + xs[i]; sy = sy + ys[i]; sxx = sxx + xs[i] ^ 2; sxy = sxy + xs[i] * ys[i] end
local slope = m > 1 and (m * sxy - sx * sy) / (m * sxx - sx * sx) or 0 -- bytes per second
local first, last = samples[1].rss, samples[#samples].rss
local half = seconds * 0.1 + (seconds * 0.9) / 2
local peak1, peak2 = 0, 0
for _, smp in ipairs(samples) do
  if smp.t >= seconds * 0.1 then
    if smp.t < half then peak1 = math.max(peak1, smp.rss) else peak2 = math.max(peak2, smp.rss) end
  end
end
print(string.format("soak_seconds_orch %.0f s", seconds))
print(string.format("soak_restarts_orch %d restarts", restarts))
print(string.format("soak_restart_rate_orch %.1f restarts/s", restarts / seconds))
print(string.format("soak_hook_runs_orch %d runs", exits))
print(string.format("soak_rss_start_orch %.2f MB", first / 1e6))
print(string.format("soak_rss_end_orch %.2f MB", last / 1e6))
print(string.format("soak_rss_growth_orch %.3f MB/h", slope * 3600 / 1e6))
print(string.format("soak_rss_peak_growth_orch %.3f MB/h", (peak2 - peak1) / 1e6 / (seconds * 0.45 / 3600)))
sup.shutdown(0)
