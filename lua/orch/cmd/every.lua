--- `orch every N [OPTIONS] -- PROG ARGS...`: the classic procctl loop.
local orch = require "orch"
local sched = require "orch.scheduler"

local usage = [[
usage: orch every SECONDS [OPTIONS] [--] PROG [ARGS...]

Runs PROG, waits for it to exit, sleeps SECONDS, and runs it again, forever
(the classic `procctl SECONDS PROG ARGS...`). Each run gets its own process
group; SIGTERM or SIGINT (Ctrl-C) to orch stops the loop, sends SIGTERM to the
running PROG's group (SIGKILL after --grace seconds) and exits 0.

Options:
  --rate           start a run every SECONDS from the previous start instead
                   (a run still going then is left alone and that start skipped)
  --jitter S       add a random 0..S seconds to each sleep
  --grace S        seconds between SIGTERM and SIGKILL on stop (default 5)
  --max-runs N     stop after N runs
  --daemon         detach (double fork, setsid, stdio to /dev/null) first
  --pidfile FILE   with --daemon: lock FILE and write the pid to it
  --quiet          no log lines on stderr

Exit status: 0 after a stop or --max-runs, 2 on a usage error.
]]

local function fail(msg)
  io.stderr:write("orch every: ", msg, " (see 'orch help every')\n")
  return 2
end

local function main(argv)
  local seconds = tonumber(argv[1])
  if not seconds or not (seconds > 0 and seconds < math.huge) then
    return fail(argv[1] and ("SECONDS must be a number > 0, got '" .. argv[1] .. "'") or "SECONDS missing")
  end
  local opts, i = { grace = 5 }, 2
  while argv[i] do
    local a = argv[i]
    if a == "--" then i = i + 1; break
    elseif a == "--rate" then opts.rate = true
    elseif a == "--daemon" then opts.daemon = true
    elseif a == "--quiet" then opts.quiet = true
    elseif a == "--jitter" or a == "--grace" or a == "--max-runs" then
      local v = tonumber(argv[i + 1])
      if a == "--max-runs" then
        if not v or not (v >= 1 and v < 2^53) or v ~= math.floor(v) then return fail(a .. " needs an integer >= 1") end
      elseif not v or not (v >= 0 and v < math.huge) then
        return fail(a .. " needs a number >= 0")
      end
      opts[a:sub(3):gsub("-", "_")] = v
      i = i + 1
    elseif a == "--pidfile" then
      if not argv[i + 1] then return fail("--pidfile needs a FILE") end
      opts.pidfile = argv[i + 1]
      i = i + 1
    elseif a:sub(1, 1) == "-" then return fail("unknown option '" .. a .. "'")
    else break end
    i = i + 1
  end
  if not argv[i] then return fail("PROG missing") end
  local cmd = { pgroup = true }
  for j = i, #argv do cmd[#cmd + 1] = argv[j] end

  if opts.daemon then
    local ok, err = orch.daemonize{ pidfile = opts.pidfile }
    if not ok then io.stderr:write("orch every: ", err, "\n"); return 1 end
  end

  local log = opts.quiet and function() end or function(msg)
    io.stderr:write(os.date("%Y-%m-%d %H:%M:%S "), "orch every: ", msg, "\n")
  end
  local job = sched.every(seconds, cmd, {
    mode = opts.rate and "rate" or "delay", overlap = "skip", jitter = opts.jitter,
    max_runs = opts.max_runs and math.floor(opts.max_runs) or nil, log = log,
    on_start = function(p, n) log(("run %d: %s started, pid %d"):format(n, cmd[1], p.pid)) end,
    on_exit = function(code, sig, n)
      local how = sig and ("killed by SIG" .. sig) or ("exited with code " .. tostring(code))
      log(("run %d: %s %s"):format(n, cmd[1], how))
    end,
  })

  local stopping = false
  local function stop(signame)
    if stopping then return end
    stopping = true
    log("SIG" .. signame .. ": stopping")
    job:stop{ signal = "TERM" }
    local killer = orch.timer.after(opts.grace, function()
      for _, pid in ipairs(job:status().pids) do orch.killpg(pid, "KILL") end
    end)
    job:wait()
    killer:stop()
    orch.exit(0)
  end
  local hs = { orch.signal.on("TERM", function() stop("TERM") end),
               orch.signal.on("INT", function() stop("INT") end) }
  job.task:join()
  job:wait()
  for _, hnd in ipairs(hs) do hnd:stop() end
  return 0
end

return { summary = "run PROG, wait, sleep N seconds, repeat", usage = usage, main = main }
