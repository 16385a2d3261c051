--- `orch every N [OPTIONS] -- PROG ARGS...`: the classic procctl loop.
local orch = require "orch"

local usage = [[
usage: orch every SECONDS [OPTIONS] [--] PROG [ARGS...]

Runs PROG, waits for it to exit, sleeps SECONDS, and runs it again, forever
(the classic `procctl SECONDS PROG ARGS...`). Each run gets its own process
group.

Options:
  --rate           start a run every SECONDS from the previous start instead
                   (a run still going then is left alone and that start skipped)
  --jitter S       add a random 0..S seconds to each sleep
  --grace S        seconds between SIGTERM and SIGKILL on stop (default 5)
  --max-runs N     stop after N runs
  --daemon         detach (double fork, setsid, stdin from /dev/null, other
                   inherited descriptors closed) first
  --pidfile FILE   with --daemon: lock FILE and write the daemon's pid to it
                   (a second orch with the same FILE refuses to start)
  --log FILE       append orch's log lines and each run's stdout and stderr
                   to FILE (instead of orch's own stderr and stdio)
  --quiet          no log lines

Signals:
  TERM, INT        stop: no new run, SIGTERM to the running PROG's group,
                   SIGKILL after --grace seconds, then exit
  the same again   SIGKILL to the running PROG's group at once, exit
  USR1             reopen the --log FILE (for logrotate)
  HUP and every other signal that would end orch: logged once, ignored

Exit status: 0 after a stop or --max-runs, 1 when the stop had to use
SIGKILL (or on a failure: log file, pidfile), 2 on a usage error.
]]

local function fail(msg)
  io.stderr:write("orch every: ", msg, " (see 'orch help every')\n")
  return 2
end

-- SECONDS, then options, then PROG and its arguments verbatim.
local function args(c)
  c:argument("SECONDS"):target("seconds")
  c:flag("--rate")
  c:flag("--daemon")
  c:flag("--quiet")
  c:option("--jitter"):argname("S")
  c:option("--grace"):argname("S")
  c:option("--max-runs"):argname("N")
  c:option("--pidfile"):argname("FILE")
  c:option("--log"):argname("FILE")
  c:argument("PROG"):target("cmd"):args("*")
end

-- Checks the values of the parsed options (orch.cli's result).
local function parse(p)
  local seconds = tonumber(p.seconds)
  if not seconds or not (seconds > 0 and seconds < math.huge) then
    return nil, "SECONDS must be a number > 0, got '" .. p.seconds .. "'"
  end
  local opts = { grace = 5, seconds = seconds, rate = p.rate, daemon = p.daemon, quiet = p.quiet }
  for _, k in ipairs { "jitter", "grace", "max_runs" } do
    if p[k] then
      local v, a = tonumber(p[k]), "--" .. k:gsub("_", "-")
      if k == "max_runs" then
        if not v or not (v >= 1 and v < 0x1p53) or v ~= math.floor(v) then return nil, a .. " needs an integer >= 1" end
      elseif not v or not (v >= 0 and v < math.huge) then
        return nil, a .. " needs a number >= 0"
      end
      opts[k] = v
    end
  end
  for _, k in ipairs { "pidfile", "log" } do
    if p[k] == "" then return nil, "--" .. k .. " needs a FILE" end
    opts[k] = p[k]
  end
  if #p.cmd == 0 then return nil, "PROG missing" end
  if opts.pidfile and not opts.daemon then return nil, "--pidfile goes with --daemon" end
  opts.cmd = { pgroup = true }
  for _, w in ipairs(p.cmd) do opts.cmd[#opts.cmd + 1] = w end
  return opts
end

-- The log: orch's stderr, or FILE (appended; reopened on USR1).
local function open_log(opts)
  if opts.quiet then return setmetatable({}, { __call = function() end }) end
  if not opts.log then
    return setmetatable({}, { __call = function(_, msg)
      io.stderr:write(require("orch.log").timestamp(), " orch every: ", msg, "\n")
    end })
  end
  local f, err = io.open(opts.log, "a")
  if not f then return nil, "--log: " .. tostring(err) end
  f:setvbuf("line")
  local log = {}
  function log.reopen()
    local nf, e = io.open(opts.log, "a")
    if not nf then return nil, e end
    nf:setvbuf("line")
    f:close()
    f = nf
    return true
  end
  return setmetatable(log, { __call = function(_, msg)
    f:write(require("orch.log").timestamp(), " orch every: ", msg, "\n")
  end })
end

local function main(p)
  local opts, perr = parse(p)
  if not opts then return fail(perr) end
  local cmd = opts.cmd

  if opts.daemon then
    -- The daemon's stdio (what each run inherits) goes to the log file.
    local ok, err = orch.daemonize{ pidfile = opts.pidfile, stdout = opts.log, stderr = opts.log }
    if not ok then io.stderr:write("orch every: ", err, "\n"); return 1 end
  end

  local log, lerr = open_log(opts)
  if not log then io.stderr:write("orch every: ", lerr, "\n"); return 1 end
  orch.signal.protect{ log = function(msg) log(msg) end }
  if opts.log then
    -- A file path is opened at each spawn: after a reopen the next run
    -- writes to the new file.
    cmd.stdout, cmd.stderr = opts.log, "stdout"
  end

  local job = require("orch.scheduler").every(opts.seconds, cmd, {
    mode = opts.rate and "rate" or "delay", overlap = "skip", jitter = opts.jitter,
    max_runs = opts.max_runs and math.floor(opts.max_runs) or nil, log = function(msg) log(msg) end,
    on_start = function(p, n) log(("run %d: %s started, pid %d"):format(n, cmd[1], p.pid)) end,
    on_exit = function(code, sig, n)
      local how = sig and ("killed by SIG" .. sig) or ("exited with code " .. tostring(code))
      log(("run %d: %s %s"):format(n, cmd[1], how))
    end,
  })

  local stopping, killed = false, false
  local function kill_runs()
    killed = true
    for _, pid in ipairs(job:status().pids) do orch.killpg(pid, "KILL") end
  end
  local function stop(signame)
    if stopping then
      -- The second TERM/INT: nothing waits any longer.
      log("SIG" .. signame .. " again: SIGKILL to the running program, exiting")
      kill_runs()
      orch.exit(1)
    end
    stopping = true
    log("SIG" .. signame .. ": stopping (send it again to kill the running program at once)")
    job:stop{ signal = "TERM" }
    local killer = orch.timer.after(opts.grace, function()
      log("the running program outlived --grace: SIGKILL")
      kill_runs()
    end)
    job:wait()
    killer:stop()
    orch.exit(killed and 1 or 0)
  end
  local hs = { orch.signal.on("TERM", function() stop("TERM") end),
               orch.signal.on("INT", function() stop("INT") end) }
  if log.reopen then
    hs[#hs + 1] = orch.signal.on("USR1", function()
      local ok, err = log.reopen()
      if ok then log("SIGUSR1: log file reopened") else io.stderr:write("orch every: --log: ", tostring(err), "\n") end
    end)
  end
  job.task:join()
  job:wait()
  for _, hnd in ipairs(hs) do hnd:stop() end
  return 0
end

return { summary = "run PROG, wait, sleep N seconds, repeat", usage = usage, args = args, tail = 1, main = main }
