--- Shared helpers of the supervisor specs (spec/supervisor*_spec.lua).
-- Each test gets its own supervisor (sup.new()) whose log lines are
-- collected, whose services' output is dropped unless asked for, and whose
-- processes all carry ORCH_SPEC_RUN=<token> in their environment: after the
-- test every service is stopped and /proc is searched for that token, so a
-- test that leaves any process behind (grandchildren included) fails.
local h = require "spec.helper"
local orch = h.orch
local supmod = require "orch.supervisor"

local u = {}
u.h, u.orch, u.supmod = h, orch, supmod

local counter = 0
local mypid = orch.getpid()

--- Processes (pids) whose environment holds ORCH_SPEC_RUN=token.
u.leftovers = h.leftovers

--- Whether a child of this process is a zombie: an orphan reparented to it
-- (a subreaper since a test followed a forking daemon) that died at the end
-- of the test is reaped only while the loop runs.
function u.zombie_child()
  for _, pid in ipairs(orch.proc.children(mypid) or {}) do
    local i = orch.proc.info(pid)
    if i and i.state == "Z" then return true end
  end
  return false
end

--- True while pid exists and is not a zombie.
u.alive = h.alive

--- A fresh supervisor; returns sup, logs (a list of lines), dir (a temp
-- dir), output (name -> list of captured lines).
function u.new()
  counter = counter + 1
  local token = string.format("%d_%d_%d", mypid, counter, os.time())
  local dir = h.tmpdir()
  local logs, output = {}, {}
  local s = supmod.new()
  s.configure {
    log = function(m) logs[#logs + 1] = m end,
    output = function(name, line)
      output[name] = output[name] or {}
      table.insert(output[name], line)
    end,
    runtime_dir = dir,
    env = { ORCH_SPEC_RUN = token },
  }
  return s, logs, dir, output, token
end

--- Polls pred (in a task) every 20 ms until true or timeout; for tests only.
function u.until_true(pred, timeout)
  local deadline = orch.now() + (timeout or 10) * u.h.time_scale
  while orch.now() < deadline do
    if pred() then return true end
    orch.sleep(0.02)
  end
  return pred() and true or false
end

--- Runs fn(sup, logs, dir, output, token) in the loop; afterwards stops every
-- service and fails if any process of the test is still alive.
function u.with(fn, deadline)
  local token
  local ok, err = pcall(h.run, function()
    local s, logs, dir, output
    s, logs, dir, output, token = u.new()
    -- What a test that passed its deadline leaves to read: each instance's
    -- state and the supervisor's log.
    h.on_deadline = function()
      local t = { "instances:" }
      for _, inst in ipairs(s.instances()) do
        local st = (s.status(inst.name) or {})[1] or {}
        t[#t + 1] = ("  %s %s pid %s"):format(inst.name, tostring(st.state), tostring(st.pid))
      end
      t[#t + 1] = "log:"
      for _, l in ipairs(logs) do t[#t + 1] = "  " .. l end
      return table.concat(t, "\n")
    end
    local ok, err = xpcall(fn, debug.traceback, s, logs, dir, output, token)
    s.close()
    -- Killed grandchildren are reaped by whoever adopted them: give them
    -- a moment to disappear from /proc.
    local left
    u.until_true(function()
      left = u.leftovers(token)
      return #left == 0 and not u.zombie_child()
    end, 5)
    for _, pid in ipairs(left) do orch.kill(pid, "KILL") end
    if not ok then error(err, 0) end
    if #left > 0 then error("processes left behind: " .. table.concat(left, " "), 0) end
    return true
  end, deadline or 60)
  h.on_deadline = nil
  if not ok then
    -- (A run that passed its deadline ended without its cleanup: what the
    -- test started is killed here.)
    for _, pid in ipairs(token and u.leftovers(token) or {}) do orch.kill(pid, "KILL") end
    error(err, 0)
  end
  return true
end

--- The status table of one instance.
function u.st(s, name)
  local list = assert(s.status(name))
  return list[1]
end

--- Index of the first log line containing `text` (plain), or nil.
function u.logged(logs, text)
  for i, l in ipairs(logs) do
    if l:find(text, 1, true) then return i end
  end
end

--- The command running `script` with /bin/sh -c.
function u.sh(script)
  return { "/bin/sh", "-c", script }
end

u.progs = h.progs
return u
