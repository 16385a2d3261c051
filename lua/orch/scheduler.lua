--- orch.scheduler: run a program (or a function) again and again.
--
-- every(seconds, job, opts): the classic loop of the seed's `procctl`: run,
-- wait for the exit, sleep `seconds`, repeat, forever. With
-- `mode = "rate"` runs start every `seconds` from the previous start instead,
-- and `overlap` says what happens when a run is still going at that moment.
-- at("HH:MM", job, opts) and cron("m h dom mon dow", job, opts) start runs at
-- wall-clock times.
--
-- A job is a command table as for orch.spawn ({ "prog", "arg", ...,
-- spawn options }) or a Lua function (run as a task; it may wait).
-- Pure Lua on the public orch API.
local orch = require "orch"

local M = {}

local Job = {}
Job.__index = Job
Job.__name = "orch.Job"

local check = require "orch.check"

local job_options = {
  mode = { "delay", "rate" }, overlap = { "skip", "queue", "allow" },
  jitter = "seconds", first = "seconds",
  on_exit = "function", on_start = "function", name = "string", log = "function",
  max_runs = function(v)
    return (math.type(v) == "integer" and v >= 1) or (math.type(v) == "float" and v >= 1
      and v < 0x1p53 and v == math.floor(v)), "integer >= 1"
  end,
}

local function check_options(fname, opts)
  return check.options(fname, 3, opts, job_options, 2)
end

local function check_job(fname, job)
  if type(job) == "function" then return end
  if type(job) ~= "table" or type(job[1]) ~= "string" then
    error(("bad argument #2 to '%s' (command table or function expected, got %s)"):format(fname, type(job)), 3)
  end
end

local function job_name(job, opts)
  if opts.name then return opts.name end
  if type(job) == "table" then return job[1] end
  return "function"
end

local function default_log(msg)
  require("orch.log").write{ source = "orch.scheduler", message = msg }
end

-- One run of the job. Returns code, signal (a function's run: 0 on return,
-- 1 when it raised).
local function run_once(self, counted)
  local t0 = orch.now()
  self.runs = self.runs + 1
  -- A launched run is counted as running from its launch (see launch()).
  if not counted then self.running = self.running + 1 end
  local n = self.runs
  local code, sig
  if type(self.job) == "function" then
    local ok, err = pcall(self.job, n)
    if ok then code = 0 else code = 1; self.log(("%s: run %d raised: %s"):format(self.name, n, tostring(err))) end
  else
    local p, err = orch.spawn(self.job)
    if not p then
      self.log(("%s: cannot start: %s"):format(self.name, err))
      code = 127
    else
      self.procs[p] = true
      if self.on_start then pcall(self.on_start, p, n) end
      code, sig = p:wait()
      self.procs[p] = nil
    end
  end
  self.running = self.running - 1
  self.last_duration = orch.now() - t0
  self.run_seconds = self.run_seconds + self.last_duration
  self.last_code, self.last_signal = code, sig
  if self.on_exit then
    local ok, err = pcall(self.on_exit, code, sig, n)
    if not ok then self.log(("%s: on_exit hook failed: %s"):format(self.name, tostring(err))) end
  end
  if self.running == 0 then self.idle:broadcast() end
  return code, sig
end

local function delay_with_jitter(self, seconds)
  if self.jitter and self.jitter > 0 then seconds = seconds + math.random() * self.jitter end
  return seconds
end

-- Sleeps in the job's loop task; only a sleeping loop is cancelled by :stop()
-- (a run in progress inside the loop task is left to finish).
local function pause(self, seconds)
  self.sleeping = true
  orch.sleep(seconds)
  self.sleeping = false
end

-- A paused job makes no run until resumed: the loop waits here.
local function while_paused(self)
  while self.paused and not self.stopped do
    self.sleeping = true
    self.resumed:wait()
    self.sleeping = false
  end
end

local function limit_reached(self)
  return self.max_runs and self.started >= self.max_runs
end

-- Starts a run in its own task (rate and wall-clock modes).
local function launch(self)
  self.started = self.started + 1
  self.running = self.running + 1
  return orch.task(run_once, self, true)
end

-- mode "delay": run, wait, sleep, repeat.
local function loop_delay(self)
  if self.first and self.first > 0 then
    self.next_run = orch.time() + self.first
    pause(self, self.first)
  end
  while not self.stopped and not limit_reached(self) do
    while_paused(self)
    if self.stopped then break end
    self.started = self.started + 1
    self.next_run = nil
    run_once(self)
    if self.stopped or limit_reached(self) then break end
    local d = delay_with_jitter(self, self.seconds)
    self.next_run = orch.time() + d
    pause(self, d)
  end
end

-- mode "rate": a start every `seconds`; what to do when the previous run is
-- still going is the overlap policy.
local function loop_rate(self)
  local next_start = orch.now() + (self.first or 0)
  local current
  while not self.stopped and not limit_reached(self) do
    local wait = next_start - orch.now()
    self.next_run = orch.time() + math.max(0, wait)
    if wait > 0 then pause(self, wait) end
    if self.stopped then break end
    next_start = next_start + self.seconds
    if self.paused then
      self.skipped = self.skipped + 1
    elseif self.running > 0 and self.overlap == "skip" then
      self.skipped = self.skipped + 1
    elseif self.running > 0 and self.overlap == "queue" then
      self.sleeping = true
      current:join()
      self.sleeping = false
      if not self.stopped then current = launch(self) end
    else
      current = launch(self)
    end
    -- A start that fell behind (a long queue) does not try to catch up.
    if next_start < orch.now() then next_start = orch.now() + delay_with_jitter(self, 0) end
  end
end

-- Every job made and not collected (sched.jobs, the /metrics of orch.http).
local live = setmetatable({}, { __mode = "k" })
local nlive = 0

-- A Job with the fields every mode shares, plus `extra`, its loop started.
local function new_job(job, opts, loop, extra)
  local self = setmetatable({
    job = job, name = job_name(job, opts), overlap = opts.overlap or "skip",
    jitter = opts.jitter, on_exit = opts.on_exit, on_start = opts.on_start,
    log = opts.log or default_log, max_runs = opts.max_runs,
    runs = 0, started = 0, running = 0, skipped = 0, run_seconds = 0, procs = {}, stopped = false, idle = orch.cond(),
    paused = false, resumed = orch.cond(),
  }, Job)
  for k, v in pairs(extra) do self[k] = v end
  nlive = nlive + 1
  live[self] = nlive
  self.task = orch.task(loop, self)
  return self
end

--- jobs() -> the jobs made in this process that are not stopped, or still
-- have a run in progress, oldest first.
function M.jobs()
  local out = {}
  for job in pairs(live) do
    if not job.stopped or job.running > 0 then out[#out + 1] = job end
  end
  table.sort(out, function(a, b) return live[a] < live[b] end)
  return out
end

--- every(seconds, job [, opts]) -> Job
function M.every(seconds, job, opts)
  -- 0 would run the job back to back as fast as the loop turns.
  if type(seconds) ~= "number" or not (seconds > 0 and seconds < math.huge) then
    error("bad argument #1 to 'every' (seconds > 0 expected)", 2)
  end
  check_job("every", job)
  opts = check_options("every", opts)
  return new_job(job, opts, opts.mode == "rate" and loop_rate or loop_delay,
                 { seconds = seconds, mode = opts.mode or "delay", first = opts.first })
end

-- ---------------------------------------------------------------- cron

local month_names = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6, jul = 7, aug = 8,
                      sep = 9, oct = 10, nov = 11, dec = 12 }
local dow_names = { sun = 0, mon = 1, tue = 2, wed = 3, thu = 4, fri = 5, sat = 6 }
local month_days = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }   -- February 29 in leap years

local function parse_field(s, lo, hi, names, what)
  local set, any = {}, s == "*"
  for part in s:gmatch("[^,]+") do
    local range, step = part:match("^([^/]+)/(%d+)$")
    range = range or part
    step = tonumber(step) or 1
    if step < 1 then error(("cron: bad step in %s field '%s'"):format(what, s), 0) end
    local a, b
    if range == "*" then
      a, b = lo, hi
    else
      local x, y = range:match("^([%w]+)-([%w]+)$")
      local function val(v)
        local n = tonumber(v) or (names and names[v:lower()])
        if not n then error(("cron: bad value '%s' in %s field"):format(v, what), 0) end
        return n
      end
      if x then a, b = val(x), val(y) else a = val(range); b = part:find("/") and hi or a end
    end
    if a < lo or b > hi or a > b then
      error(("cron: %s field '%s' out of range %d-%d"):format(what, s, lo, hi), 0)
    end
    for v = a, b, step do set[v] = true end
  end
  return set, any
end

-- cron(8)'s shorthands. @reboot is a run when the job is defined (orch's
-- start, for a policy script), then none.
local macros = {
  ["@yearly"] = "0 0 1 1 *", ["@annually"] = "0 0 1 1 *", ["@monthly"] = "0 0 1 * *",
  ["@weekly"] = "0 0 * * 0", ["@daily"] = "0 0 * * *", ["@midnight"] = "0 0 * * *",
  ["@hourly"] = "0 * * * *",
}

--- parse_cron("m h dom mon dow" or "@daily"...) -> spec table (raises with a
-- clear message).
function M.parse_cron(expr)
  if type(expr) ~= "string" then error("cron: expression must be a string", 0) end
  local word = expr:match("^%s*(@%a+)%s*$")
  if word then
    word = word:lower()
    if word == "@reboot" then return { reboot = true, min = {}, hour = {}, dom = {}, mon = {}, dow = {} } end
    if not macros[word] then
      error(("cron: unknown shorthand '%s' (@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @reboot)")
        :format(expr), 0)
    end
    return M.parse_cron(macros[word])
  end
  local f = {}
  for w in expr:gmatch("%S+") do f[#f + 1] = w end
  if #f ~= 5 then error(("cron: '%s' needs 5 fields (minute hour day month weekday)"):format(expr), 0) end
  local c = {}
  c.min = parse_field(f[1], 0, 59, nil, "minute")
  c.hour = parse_field(f[2], 0, 23, nil, "hour")
  c.dom, c.dom_any = parse_field(f[3], 1, 31, nil, "day-of-month")
  c.mon = parse_field(f[4], 1, 12, month_names, "month")
  c.dow, c.dow_any = parse_field(f[5], 0, 7, dow_names, "day-of-week")
  if c.dow[7] then c.dow[0] = true end
  -- Only a day of month restricted alone can rule out every date (any
  -- weekday comes round in every month): "* * 31 2 *", "0 0 30,31 2 *".
  if c.dow_any and not c.dom_any then
    local possible = false
    for m in pairs(c.mon) do
      for d in pairs(c.dom) do
        if d <= month_days[m] then possible = true end
      end
    end
    if not possible then
      error(("cron: '%s' can never match (no month in the month field has that day)"):format(expr), 0)
    end
  end
  return c
end

local function day_matches(c, t)
  local dom_ok, dow_ok = c.dom[t.day], c.dow[t.wday - 1]
  -- As in cron(8): when both day fields are restricted, either may match.
  if c.dom_any then return dow_ok end
  if c.dow_any then return dom_ok end
  return dom_ok or dow_ok
end

--- next_cron(spec, after) -> epoch seconds of the first match strictly after
-- `after` (local time), or nil if none within 8 years (the longest gap
-- between two February 29ths). `spec` is parse_cron's result or an
-- expression; `after` defaults to now.
function M.next_cron(c, after)
  if type(c) == "string" then
    local ok, parsed = pcall(M.parse_cron, c)
    if not ok then error("bad argument #1 to 'next_cron' (" .. parsed .. ")", 2) end
    c = parsed
  elseif type(c) ~= "table" or type(c.min) ~= "table" or type(c.dom) ~= "table" then
    error(("bad argument #1 to 'next_cron' (cron expression or parse_cron result expected, got %s)")
      :format(type(c)), 2)
  end
  if c.reboot then return nil end          -- @reboot: no time after the start
  if after == nil then after = orch.time() end
  if type(after) ~= "number" or not (after > -0x1p52 and after < 0x1p52) then
    error(("bad argument #2 to 'next_cron' (epoch seconds expected, got %s)"):format(
      type(after) == "number" and tostring(after) or type(after)), 2)
  end
  local t = os.date("*t", math.floor(after) + 60 - math.floor(after) % 60)
  t.sec = 0
  -- Each step moves to the next month, day, hour or minute that may match:
  -- at most a few hundred steps per year.
  local last_year = t.year + 8
  while t.year <= last_year do
    if not c.mon[t.month] then
      t.month, t.day, t.hour, t.min = t.month + 1, 1, 0, 0
    elseif not day_matches(c, t) then
      t.day, t.hour, t.min = t.day + 1, 0, 0
    elseif not c.hour[t.hour] then
      t.hour, t.min = t.hour + 1, 0
    elseif not c.min[t.min] then
      t.min = t.min + 1
    else
      return os.time(t)
    end
    t = os.date("*t", os.time(t))   -- normalise overflowing fields
  end
  return nil
end

local function loop_wall(self)
  if self.cron.reboot then               -- @reboot: one run, now
    self.next_run = orch.time()
    if not self.stopped then launch(self) end
    return
  end
  while not self.stopped and not limit_reached(self) do
    local at = M.next_cron(self.cron, orch.time())
    if not at then self.log(self.name .. ": no future time matches; stopping"); break end
    self.next_run = at
    pause(self, delay_with_jitter(self, math.max(0, at - orch.time())))
    if self.stopped then break end
    if self.paused or (self.running > 0 and self.overlap == "skip") then
      self.skipped = self.skipped + 1
    else
      launch(self)
    end
  end
end

local function new_wall(fname, cron, job, opts, what)
  check_job(fname, job)
  opts = check_options(fname, opts)
  return new_job(job, opts, loop_wall, { cron = cron, mode = "wall", what = what })
end

--- cron("m h dom mon dow", job [, opts]) -> Job
function M.cron(expr, job, opts)
  local ok, c = pcall(M.parse_cron, expr)
  if not ok then error("bad argument #1 to 'cron' (" .. c .. ")", 2) end
  return new_wall("cron", c, job, opts, "cron " .. expr)
end

--- at("HH:MM", job [, opts]) -> Job: every day at that local time.
function M.at(hhmm, job, opts)
  local h, m = tostring(hhmm):match("^(%d%d?):(%d%d)$")
  h, m = tonumber(h), tonumber(m)
  if not h or h > 23 or m > 59 then error("bad argument #1 to 'at' (\"HH:MM\" expected)", 2) end
  return new_wall("at", M.parse_cron(("%d %d * * *"):format(m, h)), job, opts, "at " .. hhmm)
end

-- ---------------------------------------------------------------- Job methods

--- job:stop([opts]): no new runs; with {kill = true} (or a signal name in
-- {signal = "TERM"}), the running processes are signalled (their group).
function Job:stop(opts)
  self.stopped = true
  if self.sleeping then self.task:cancel() end
  local sig = opts and (opts.signal or (opts.kill and "TERM"))
  if sig then
    for p in pairs(self.procs) do p:kill(sig) end
  end
  return true
end

--- job:trigger(): one run now, outside the schedule (the schedule goes on
-- as it was). Returns true, or nil and why not: the job is stopped
-- ("ESRCH"), or a run is in progress and its overlap policy is "skip"
-- ("EBUSY").
function Job:trigger()
  if self.stopped then return nil, "trigger: " .. self.name .. " is stopped", "ESRCH" end
  if self.running > 0 and self.overlap == "skip" then
    return nil, "trigger: " .. self.name .. " is running", "EBUSY"
  end
  launch(self)
  return true
end

--- job:pause() / job:resume(): a paused job starts no run (a start that
-- falls due meanwhile is skipped; an interval job's loop waits) until
-- resumed; a run in progress goes on. Return true.
function Job:pause()
  self.paused = true
  return true
end

function Job:resume()
  self.paused = false
  self.resumed:broadcast()
  return true
end

--- job:wait([timeout]): waits until no run is in progress (after :stop(),
-- the end of the job).
function Job:wait(timeout)
  if self.running == 0 then return true end
  return self.idle:wait(timeout)
end

--- job:status() -> table {name, mode, runs, running, skipped, last_code,
-- last_signal, next_run (wall-clock jobs), stopped}
function Job:status()
  local pids = {}
  for p in pairs(self.procs) do pids[#pids + 1] = p.pid end
  return {
    name = self.name, mode = self.mode, runs = self.runs, running = self.running,
    skipped = self.skipped, last_code = self.last_code, last_signal = self.last_signal,
    run_seconds = self.run_seconds, last_duration = self.last_duration,
    next_run = self.next_run, stopped = self.stopped, paused = self.paused, pids = pids,
    type = self.what or ("every " .. tostring(self.seconds) .. " s" .. (self.mode == "rate" and " (rate)" or "")),
  }
end

function Job:__tostring()
  return ("orch.Job: %s %s runs=%d%s"):format(self.name, self.mode, self.runs,
    self.stopped and " stopped" or "")
end

M.Job = Job
return M
