-- scripts/bench.d/lifecycle.lua BUILD: orch's own lifecycle under stress
-- (issue 11; doc/benchmarks.md, "orch's own lifecycle"). Prints
-- "name value unit" lines:
--   storm_signals_orch        signals sent to a supervisor of 20 services
--   storm_orch_deaths_orch    times orch died (0 or 1)
--   storm_orphaned_orch       services no longer orch's children afterwards
--   storm_restarts_orch       restarts that happened during the storm
--   second_term_exit_max_orch ms from the second SIGTERM to orch's exit, worst
--                             of 10 runs (a service ignoring TERM with a 60 s
--                             stop timeout, and an adopted pid that is not ours)
--   second_term_exit_med_orch the median of those runs
--   pid1_order_ok_orch        runs (of 10) where 50 services in 5 dependency
--                             layers stopped layer by layer, orch as PID 1
--   pid1_restarts_orch        services started again during those shutdowns
--   pid1_shutdown_med_orch    ms from SIGTERM to PID 1's exit, median
-- Run as root (unshare --pid for the PID 1 part).
local orch = require "orch"
local build = arg[1] or "build"
local bin = io.popen("cd " .. build .. " && pwd"):read("l") .. "/orch"

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a") or ""
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function alive(pid)
  local st = slurp("/proc/" .. pid .. "/stat")
  return st ~= "" and not st:match("^%d+ %b() Z")
end

local function ppid(pid)
  return tonumber(slurp("/proc/" .. pid .. "/stat"):match("^%d+ %b() %S+ (%d+)"))
end

local function wait_for(pred, timeout)
  local deadline = orch.now() + (timeout or 60)
  while orch.now() < deadline do
    local v = pred()
    if v then return v end
    orch.sleep(0.01)
  end
  error("bench: timed out", 2)
end

local dirs = {}
local function tmpdir()
  local d = sh("mktemp -d /tmp/orch-bench-life.XXXXXX"):gsub("%s+$", "")
  dirs[#dirs + 1] = d
  return d
end

local function status(sock)
  local out = sh(string.format("%s ctl --socket %s --json status 2>/dev/null", bin, sock))
  local ctl = require "orch.ctl"
  local r = ctl.decode(out:match("[^\n]+") or "")
  return type(r) == "table" and r.services or nil
end

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- ---------------------------------------------------------------- storm

local STORM = { "HUP", "USR1", "USR2", "QUIT", "TRAP", "ALRM", "PIPE", "STKFLT", "XCPU", "XFSZ",
                "VTALRM", "PROF", "WINCH", "URG", "IO", "PWR", "SYS" }
for s = orch.signal.number("RTMIN"), orch.signal.number("RTMIN") + 30 do
  local name = orch.signal.name(s)
  if name then STORM[#STORM + 1] = name end
end

local function storm()
  local dir = tmpdir()
  local sock = dir .. "/ctl.sock"
  write(dir .. "/policy.lua", string.format([[
    local sup = require "orch.supervisor"
    sup.configure{ log = false, runtime_dir = %q }
    for i = 1, 20 do sup.service{ name = "s" .. i, cmd = { "sleep", "100000" } } end
    sup.run()
  ]], dir))
  local p = assert(orch.spawn{ bin, "run", "--socket", sock, dir .. "/policy.lua",
                               stdout = "null", stderr = dir .. "/err" })
  local before = wait_for(function()
    local st = status(sock)
    if not st or #st ~= 20 then return nil end
    for _, s in ipairs(st) do if s.state ~= "running" then return nil end end
    return st
  end)
  local list = {}
  for _, s in ipairs(STORM) do for _ = 1, 100 do list[#list + 1] = s end end
  for i = #list, 2, -1 do
    local j = math.random(i)
    list[i], list[j] = list[j], list[i]
  end
  local sent = 0
  for i, s in ipairs(list) do
    if orch.kill(p.pid, s) then sent = sent + 1 end
    -- Random moments: bursts and pauses of up to 2 ms.
    if i % math.random(1, 20) == 0 then orch.sleep(math.random() * 0.002) end
  end
  -- Let the last ones be handled (a reload after HUP takes a moment).
  orch.sleep(1)
  local died = p:running() and 0 or 1
  local after = died == 0 and status(sock) or {}
  local orphaned, restarts = 0, 0
  local by = {}
  for _, s in ipairs(after) do by[s.name] = s end
  for _, s in ipairs(before) do
    local a = by[s.name]
    if not a or a.pid ~= s.pid or not alive(s.pid) or ppid(s.pid) ~= p.pid then
      if alive(s.pid) and ppid(s.pid) ~= p.pid then orphaned = orphaned + 1 end
    end
    if a then restarts = restarts + (a.restarts - s.restarts) + ((a.pid ~= s.pid) and 1 or 0) end
  end
  if died == 0 then
    p:kill("TERM")
    p:wait()
  end
  for _, s in ipairs(before) do if alive(s.pid) then orch.kill(s.pid, "KILL") end end
  print("storm_signals_orch " .. sent .. " count")
  print("storm_orch_deaths_orch " .. died .. " count")
  print("storm_orphaned_orch " .. orphaned .. " count")
  print("storm_restarts_orch " .. restarts .. " count")
end

-- ---------------------------------------------------------------- second TERM

local function second_term()
  local times = {}
  for _ = 1, 10 do
    local dir = tmpdir()
    local sock = dir .. "/ctl.sock"
    -- A process that is not the service's: the bench's own child.
    local alien = assert(orch.spawn{ "sleep", "100000" })
    write(dir .. "/alien.pid", alien.pid .. "\n")
    write(dir .. "/policy.lua", string.format([[
      local sup = require "orch.supervisor"
      sup.configure{ runtime_dir = %q }
      sup.service{ name = "deaf", stop = { timeout = 60 },
        cmd = { "sh", "-c", "trap '' TERM INT; echo $$ > %s/deaf.pid; while :; do sleep 0.05; done" } }
      sup.service{ name = "alien", pidfile = %q, stop = { timeout = 60 },
        cmd = { "sh", "-c", "exit 0" } }
      sup.run()
    ]], dir, dir, dir .. "/alien.pid"))
    local p = assert(orch.spawn{ bin, "run", "--socket", sock, dir .. "/policy.lua",
                                 stdout = "null", stderr = dir .. "/err" })
    wait_for(function() return slurp(dir .. "/deaf.pid") ~= "" end)
    orch.sleep(0.3)
    p:kill("TERM")
    wait_for(function() return slurp(dir .. "/err"):find("received TERM", 1, true) end)
    local t0 = orch.now()
    p:kill("TERM")
    p:wait()
    times[#times + 1] = (orch.now() - t0) * 1000
    local deaf = tonumber(slurp(dir .. "/deaf.pid"))
    if deaf and alive(deaf) then orch.kill(deaf, "KILL") end
    alien:kill("KILL")
    alien:wait()
  end
  local max = 0
  for _, t in ipairs(times) do if t > max then max = t end end
  print(string.format("second_term_exit_max_orch %.1f ms", max))
  print(string.format("second_term_exit_med_orch %.1f ms", median(times)))
end

-- ---------------------------------------------------------------- PID 1

local function pid1()
  local ok_runs, restarts, times = 0, 0, {}
  for _ = 1, 10 do
    local dir = tmpdir()
    local log = dir .. "/log"
    write(dir .. "/services.lua", string.format([[
      local log, dir = %q, %q
      local sup = require "orch.supervisor"
      sup.configure{ log = false, runtime_dir = dir }
      for layer = 1, 5 do
        for i = 1, 10 do
          local deps = {}
          if layer > 1 then for j = 1, 10 do deps[j] = "l" .. (layer - 1) .. "s" .. j end end
          local name = "l" .. layer .. "s" .. i
          sup.service{ name = name, depends_on = deps, restart = "always", backoff = 0,
            cmd = { "sh", "-c", "echo start " .. name .. " >> " .. log ..
              "; trap 'echo stop " .. layer .. " " .. name .. " >> " .. log .. "; exit 1' TERM" ..
              "; while :; do sleep 0.05; done" } }
        end
      end
      sup.run()
      assert(sup.wait("all", "running", 120))
      io.open(dir .. "/up", "w"):close()
    ]], log, dir))
    local u = assert(orch.spawn{ "unshare", "--pid", "--fork", "--mount-proc", bin, "run",
      "--socket", dir .. "/ctl.sock", dir .. "/services.lua", stdout = "null", stderr = dir .. "/err" })
    wait_for(function()
      if not io.open(dir .. "/up") then return nil end
      -- every service has set its trap (it wrote its start line first)
      local n = 0
      for _ in slurp(log):gmatch("start ") do n = n + 1 end
      return n >= 50
    end, 120)
    orch.sleep(0.2)
    local init = tonumber(slurp("/proc/" .. u.pid .. "/task/" .. u.pid .. "/children"):match("%d+"))
    local t0 = orch.now()
    orch.kill(init, "TERM")
    u:wait()
    times[#times + 1] = (orch.now() - t0) * 1000
    local layers, starts, ordered = {}, 0, true
    for line in slurp(log):gmatch("[^\n]+") do
      local layer = tonumber(line:match("^stop (%d)"))
      if layer then layers[#layers + 1] = layer end
      if line:match("^start ") then starts = starts + 1 end
    end
    for i = 2, #layers do if layers[i] > layers[i - 1] then ordered = false end end
    if #layers ~= 50 then ordered = false end
    if ordered then ok_runs = ok_runs + 1 end
    restarts = restarts + (starts - 50)
  end
  print("pid1_order_ok_orch " .. ok_runs .. " runs")
  print("pid1_restarts_orch " .. restarts .. " count")
  print(string.format("pid1_shutdown_med_orch %.0f ms", median(times)))
end

local ok, err = pcall(function()
  storm()
  second_term()
  pid1()
end)
for _, d in ipairs(dirs) do os.execute("rm -rf " .. d) end
if not ok then error(err, 0) end
