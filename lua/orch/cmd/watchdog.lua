--- `orch watchdog`: the watchdog policy (lua/orch/watchdog.lua) as a command.
-- What the classic one-shot checker did every 10 seconds, continuously and
-- event-driven. SIGTERM / SIGINT stop it without touching the watched
-- processes. See doc/watchdog.md.
local usage = [==[
usage: orch watchdog [--compat] [--key KEY] [--grace SECONDS] [--log FILE]
                     [--any-uid | --uid UID...] [--scan SECONDS] [--create]
                     [--shared] [--daemon] [--pidfile FILE]

Watches the heartbeat table and stops every registered process whose last
beat is older than its timeout: SIGTERM (to its process group when it leads
one), SIGKILL after the grace period if it is still alive, then its slot is
cleared. Slots of processes that no longer exist are cleared without any
signal. Runs until SIGTERM or SIGINT (Ctrl-C), which stop it cleanly without
touching the watched processes.

  --compat          watch the classic table (key 0x5095, 72-byte slots)
  --key KEY         table key, decimal or 0x-hex (default: $ORCH_HEARTBEAT_KEY,
                    else 0x6F726862; 0x5095 with --compat)
  --grace SECONDS   between SIGTERM and SIGKILL (default 5)
  --log FILE        append the log lines to FILE instead of stderr
  --any-uid         signal processes of any user (default: only orch's own uid)
  --uid UID         signal processes of this uid (repeat for several)
  --scan SECONDS    how often to look for new registrations (default 0.25)
  --create          create the table (mode 0600) when it does not exist
                    (otherwise the watchdog waits for it to appear)
  --shared          accept a table other users may write (created 0666 with
                    --create): the classic shared table; needs --uid or
                    --any-uid (see doc/security.md)
  --daemon          detach first (double fork, setsid, stdio to /dev/null,
                    other inherited descriptors closed); give --log to keep
                    a log
  --pidfile FILE    with --daemon: lock FILE and write the daemon's pid to it
                    (a second watchdog with the same FILE refuses to start)

An existing table is watched only when it belongs to orch's user or root and,
without --shared, no other user may write it; otherwise it is refused.

Signals: TERM, INT: stop watching and exit (a process in its grace period
is left as it is: the watchdog never owned it). HUP, USR1 and every other
signal that would end orch: logged once, ignored.

Exit status: 0 after SIGTERM/SIGINT, 1 on a failure (table of another layout,
permission denied, log file, pidfile), 2 on a usage error.
]==]

local function fail(code, msg)
  io.stderr:write("orch watchdog: ", msg, code == 2 and " (see 'orch help watchdog')" or "", "\n")
  return code
end

local function parse_key(s)
  local n
  if s:match("^0[xX]%x+$") then n = tonumber(s:sub(3), 16)
  elseif s:match("^%d+$") then n = tonumber(s) end
  n = n and math.tointeger(n)
  if not n or n <= 0 or n > 0xffffffff then return nil end
  return n
end

local function args(c)
  for _, f in ipairs { "--compat", "--any-uid", "--create", "--shared", "--daemon" } do c:flag(f) end
  c:option("--key"):argname("KEY")
  c:option("--grace"):argname("SECONDS")
  c:option("--scan"):argname("SECONDS")
  c:option("--log"):argname("FILE")
  c:option("--pidfile"):argname("FILE")
  c:option("--uid"):argname("UID"):count("*")
end

-- Checks the values of the parsed options (orch.cli's result).
local function parse(p)
  local o = { compat = p.compat, any_uid = p.any_uid, create = p.create, shared = p.shared,
              daemon = p.daemon, uids = {} }
  if p.key then
    o.key = parse_key(p.key)
    if not o.key then error("--key: SysV key expected (decimal or 0x-hex), got '" .. p.key .. "'", 0) end
  end
  for _, flag in ipairs { "grace", "scan" } do
    local v = p[flag]
    if v then
      local n = tonumber(v)
      if not n or n ~= n or n < 0 or n == math.huge or (flag == "scan" and (n < 0.001 or n > 60)) then
        error("--" .. flag .. ": seconds expected, got '" .. v .. "'", 0)
      end
      o[flag] = n
    end
  end
  for _, flag in ipairs { "log", "pidfile" } do
    if p[flag] == "" then error("--" .. flag .. ": file name expected", 0) end
    o[flag] = p[flag]
  end
  for _, v in ipairs(p.uid or {}) do
    local n = v:match("^%d+$") and math.tointeger(tonumber(v))
    if not n or n > 0xffffffff then error("--uid: numeric uid expected, got '" .. v .. "'", 0) end
    o.uids[#o.uids + 1] = n
  end
  if o.any_uid and #o.uids > 0 then error("give either --any-uid or --uid", 0) end
  if o.pidfile and not o.daemon then error("--pidfile goes with --daemon", 0) end
  if #o.uids == 0 then o.uids = nil end
  if o.shared and not o.uids and not o.any_uid then
    error("--shared needs --uid UID (or --any-uid): any writer of a shared table can name any pid", 0)
  end
  return o
end

local function main(p)
  local ok, o = pcall(parse, p)
  if not ok then return fail(2, o) end
  local orch = require "orch"
  local watchdog = require "orch.watchdog"
  if o.daemon then
    -- What can fail is tried while the caller still sees stderr: the log
    -- (opened again by the watchdog) and the pidfile (by daemonize).
    if o.log then
      local f, lerr = io.open(o.log, "a")
      if not f then return fail(1, "watchdog: cannot open the log: " .. tostring(lerr)) end
      f:close()
    end
    local ok, derr = orch.daemonize{ pidfile = o.pidfile }
    if not ok then return fail(1, derr) end
  end
  local w, err = watchdog.start {
    key = o.key, compat = o.compat, grace = o.grace, log = o.log, any_uid = o.any_uid,
    uids = o.uids, scan = o.scan, create = o.create, shared = o.shared,
  }
  if not w then
    if o.daemon and o.log then
      local f = io.open(o.log, "a")
      if f then f:write(require("orch.log").timestamp(), " watchdog: ", tostring(err), "\n") f:close() end
    end
    return fail(1, err)
  end
  orch.signal.protect{ log = function(msg) w.log(msg) end }
  local handlers = {}
  local function stop(name)
    w.log("SIG" .. name .. ": stopping (watched processes left as they are)")
    for _, hnd in ipairs(handlers) do hnd:stop() end
    w:stop()
  end
  handlers[1] = orch.signal.on("TERM", function() stop("TERM") end)
  handlers[2] = orch.signal.on("INT", function() stop("INT") end)
  w:wait()
  return 0
end

return { summary = "stop the processes whose heartbeat is late", usage = usage, args = args, main = main }
