--- orch.supervisor.policy: the decisions taken when a service's process
-- ends: restart or not (restart = "always" | "on-failure" | "never" | a
-- function), after how long (backoff), and whether the start limit is
-- reached (fatal). Pure functions of the configuration and the instance's
-- history; the instance module acts on the answers.
local policy = {}

--- Whether an exit counts as a success: an exit code listed in
-- success_codes, and not a kill the supervisor had to do (heartbeat, limits,
-- start timeout: `forced`).
function policy.success(cfg, code, signal, forced)
  if forced then return false end
  return code ~= nil and cfg.success[code] == true
end

--- Restart decision. Returns `decision, delay, err`: decision is "restart",
-- "stop" or "fatal"; delay (seconds) is set when a restart function chose it;
-- err is the message of a restart function that raised (the decision then
-- falls back to "on-failure").
function policy.decide(cfg, inst, code, signal, forced)
  local r = cfg.restart
  local err
  if type(r) == "function" then
    local ok, a = xpcall(r, debug.traceback, inst, code, signal, inst.history)
    if ok then
      if a == true then return "restart" end
      if a == "fatal" then return "fatal" end
      if math.type(a) and a >= 0 and a == a and a ~= math.huge then return "restart", a end
      if a == false or a == nil then return "stop" end
      err = "restart function returned " .. tostring(a) .. " (expected a boolean, a delay or \"fatal\")"
    else
      err = "restart function failed: " .. tostring(a)
    end
    r = "on-failure"
  end
  if r == "always" then return "restart", nil, err end
  if r == "never" then return "stop", nil, err end
  return policy.success(cfg, code, signal, forced) and "stop" or "restart", nil, err
end

--- The next backoff delay for an instance that has failed `fails` times in
-- a row (1 for the first failure): initial * factor^(fails-1), capped at max,
-- then spread by +-jitter. 0 when initial is 0. The power is multiplied out
-- (up to the cap), not taken with `^`: Lua's `^` is libm's pow, whose code
-- and tables (four 64 KiB windows of resident text that nothing else of a
-- supervisor touches) would stay resident after the first restart with a
-- backoff (issue 14, memory per service: doc/benchmarks.md, tenth session).
function policy.backoff(b, fails)
  if b.initial <= 0 then return 0 end
  local d = b.initial
  if b.factor > 1 then
    for _ = 2, fails do
      if d >= b.max then break end
      d = d * b.factor
    end
  end
  if d > b.max then d = b.max end
  if b.jitter > 0 then d = d * (1 + b.jitter * (2 * math.random() - 1)) end
  if d < 0 then d = 0 end
  return d
end

--- Whether one more start now would exceed start_limit: `starts` holds the
-- monotonic times of the recent starts (pruned here to the window).
function policy.limit_reached(limit, starts, now)
  if not limit then return false end
  local keep = {}
  for _, t in ipairs(starts) do
    if now - t < limit.interval then keep[#keep + 1] = t end
  end
  for i = #starts, 1, -1 do starts[i] = nil end
  for i, t in ipairs(keep) do starts[i] = t end
  return #starts >= limit.burst
end

-- The reasons a supervisor gives for the ends it forces (or sees), by the
-- start of its words, and the label each is counted under.
local EXIT_REASONS = {
  { "^health check failed", "health_check" }, { "^missed heartbeat", "heartbeat" },
  { "^not ready after", "start_timeout" }, { "^limit exceeded", "limit" },
  { "^killed by the OOM killer", "oom" }, { "^ready function", "not_ready" },
  { "^notification fd", "not_ready" },
}

--- Why a run ended, as one word of a small fixed set (the `reason` label
-- of orch_service_exits_total): "stopped" (asked to), "health_check",
-- "heartbeat", "start_timeout", "limit", "oom", "not_ready", "lost" (its end
-- was not seen or its process could not be killed), "success", "failure"
-- (an exit code not in success_codes), "signal".
function policy.exit_reason(cfg, user_stop, code, signal, reason)
  if user_stop then return "stopped" end
  if reason then
    for _, r in ipairs(EXIT_REASONS) do
      if reason:find(r[1]) then return r[2] end
    end
    if code == nil and signal == nil then return "lost" end
  end
  if signal then return "signal" end
  if code ~= nil and cfg.success[code] then return "success" end
  return "failure"
end

return policy
