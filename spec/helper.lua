--- Shared helpers for the busted specs.
-- The build directory comes from ORCH_BUILD (default: build/ in the repo).
-- `h.orch` is the orch module loaded from that build's lua/orch.so;
-- `h.run(fn [, deadline])` runs fn as the main task with a deadline.
local h = {}

local function absolute(p)
  if p:sub(1, 1) == "/" then return p end
  local pwd = os.getenv("PWD") or io.popen("pwd"):read("l")
  return pwd .. "/" .. p
end
local root = absolute(os.getenv("ORCH_ROOT") or ".")
h.root = root
h.build = absolute(os.getenv("ORCH_BUILD") or (root .. "/build"))
h.bin = h.build .. "/orch"
h.progs = h.build .. "/progs"

-- Whether this build is instrumented (ASan+UBSan): programs linked against it
-- need the same flags.
do
  local f = io.open(h.build .. "/CMakeCache.txt")
  local cache = f and f:read("a") or ""
  if f then f:close() end
  h.sanitized = cache:find("ORCH_SANITIZE:BOOL=ON", 1, true) ~= nil
  h.cflags = h.sanitized and "-fsanitize=address,undefined" or ""
end

package.cpath = h.build .. "/lua/?.so;" .. package.cpath
h.orch = require "orch"
local orch = h.orch

--- How much longer than on this machine's own CPUs the hang guards of
-- the waits are (h.eventually, h.run's deadline, supervisor_util's
-- until_true): 5 in the pure-v2 VM (ORCH_TEST_IN_VM; TCG beside stress-ng
-- --cpu 2 ran supervisor_cgroup_spec 10-40x slower, and 10 s and 20 s
-- guards ran out), ORCH_TEST_TIME_SCALE where set. A guard, not a wait:
-- a passing test waits as long as its condition takes.
h.time_scale = tonumber(os.getenv("ORCH_TEST_TIME_SCALE") or "") or (os.getenv("ORCH_TEST_IN_VM") and 5 or 1)
local luassert = require "luassert"

-- A failed test may leave children behind (its cleanup was skipped): kill
-- them so they do not hold the loop of the tests that follow, and reap them
-- here, their exits taken, so that none of them is a leftover or an exit a
-- later test's orch.wait_any or wait_group is told of (one failure made
-- seven in proc_wait_group_spec). In a task.
local function reap_children()
  for _, pid in ipairs(h.children()) do orch.kill(pid, "KILL") end
  pcall(function()
    h.eventually(function() return #h.children() == 0 end, "the failed test's children reaped", 10)
    while orch.wait_any(0) do end
  end)
end

--- Runs fn(...) as the main task; fails the test if it takes longer than
-- `deadline` seconds (default 30: machines are loaded, this is a hang guard,
-- not a timing assertion). Returns fn's results, raises its error. At the
-- deadline the run ends at once (orch.run ends with its cancelled main
-- task, whatever else still runs: a supervisor's tasks and children kept the
-- loop going until the suite's 600 s guard killed busted, its output lost)
-- and the error says where the test waited, with what h.on_deadline() (a
-- function a test helper may set) returns about the test's own state.
function h.run(fn, deadline, ...)
  deadline = (deadline or 30) * h.time_scale
  local args = table.pack(...)
  local late
  local res = table.pack(pcall(orch.run, function()
    local main, co = orch.current(), coroutine.running()
    local guard = orch.timer.after(deadline, function()
      late = ("the test did not end within its deadline of %gs; it waited in: %s"):format(deadline,
        debug.traceback(co))
      if h.on_deadline then
        local ok, more = pcall(h.on_deadline)
        late = late .. "\n" .. tostring(more)
        if not ok then late = late .. " (h.on_deadline failed)" end
      end
      main:cancel()
    end)
    local r = table.pack(pcall(fn, table.unpack(args, 1, args.n)))
    guard:stop()
    if not r[1] then
      reap_children()
      error(r[2], 0)
    end
    return table.unpack(r, 2, r.n)
  end))
  if late then
    -- (Its own main task's cancel ends this run too: what the test left
    -- open, a service's log pipe held by a process that is not orch's
    -- child, would keep it waiting as it kept the loop before.)
    pcall(orch.run, function()
      reap_children()
      orch.current():cancel()
    end)
    error(late, 0)
  end
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  -- A /proc file of a process that ends between the open and the read
  -- fails to read: "" as if it were gone already.
  local s = f:read("a")
  f:close()
  return s or ""
end
h.slurp = slurp

local function shquote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
h.shquote = shquote

local tmpdirs = {}
--- A fresh temporary directory (removed at exit of the spec run).
function h.tmpdir()
  local p = io.popen("mktemp -d /tmp/orch-spec.XXXXXX")
  local d = p:read("l")
  p:close()
  tmpdirs[#tmpdirs + 1] = d
  return d
end

--- Seconds an orch that h.cli runs may take before it is taken for hung.
-- A hang guard, not a timing assertion: far beyond what any call takes on a
-- loaded machine under ASan (43 s at most in a run beside stress-ng --cpu 2
-- at load 25-40: reap_spec's 2,100 children).
h.cli_timeout = 300

--- Runs the orch binary with args (a table of strings), optional stdin and
-- environment prefix (a table name=value). Returns exit code, stdout, stderr.
-- Blocking (os.execute): use it outside orch.run. An orch still running
-- after h.cli_timeout seconds is hung: coreutils timeout (whose process
-- group it runs in) sends its group SIGTERM, SIGKILL 5 s later, and the
-- test fails saying so, instead of blocking the suite until its timeout.
function h.cli(args, stdin, env)
  local d = h.tmpdir()
  local parts = {}
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. shquote(v) end
  parts[#parts + 1] = "timeout -k 5 " .. h.cli_timeout
  parts[#parts + 1] = shquote(h.bin)
  for _, a in ipairs(args) do parts[#parts + 1] = shquote(a) end
  local inpath = d .. "/stdin"
  local f = assert(io.open(inpath, "wb"))
  f:write(stdin or "")
  f:close()
  local cmd = table.concat(parts, " ") .. " <" .. inpath .. " >" .. d .. "/out 2>" .. d .. "/err"
  local t0 = orch.now()
  local ok, how, code = os.execute(cmd)
  if how == "signal" then code = 128 + code end
  -- (124: ended by the SIGTERM; 137: by the SIGKILL, as an orch killed
  -- otherwise would: the time tells them apart.)
  if (code == 124 or code == 137) and orch.now() - t0 >= h.cli_timeout then
    error(string.format("h.cli: orch %s was still running after %d s (hung): its process group was killed; stderr:\n%s",
      table.concat(args, " "), h.cli_timeout, slurp(d .. "/err")), 2)
  end
  return code, slurp(d .. "/out"), slurp(d .. "/err")
end

--- Writes a temporary Lua script and returns its path. Its name carries
-- this spec process's pid: a script that uses the supervisor gets the
-- default control socket <socket dir>/<name>.sock, which two spec files run
-- at once (or two suites) would otherwise share, and the second orch would
-- be refused by the first one's lock. The tests of one file run one after
-- the other, and those that kill an orch and start the next one rely on
-- sharing it. The lock file is removed when this process ends.
local script_name = orch.getpid() .. "-script"
local script_lock = setmetatable({}, { __gc = function()
  local dir = orch.geteuid() == 0 and "/run/orch" or nil
  if dir then os.remove(dir .. "/" .. script_name .. ".sock.lock") end
end })
function h.script(src)
  local _ = script_lock
  local d = h.tmpdir()
  local path = d .. "/" .. script_name .. ".lua"
  local f = assert(io.open(path, "wb"))
  f:write(src)
  f:close()
  return path
end

--- A SysV IPC key unique to this spec run (pid-based, counter per call).
local key_counter = 0
function h.key()
  key_counter = key_counter + 1
  return 0x4f000000 + ((orch.getpid() % 0x10000) * 0x100) + (key_counter % 0x100)
end

--- A cgroup path unique to this spec run, relative to orch's own cgroup:
-- orch-test/<run>-<pid>-<n>, where <run> is ORCH_TEST_RUN (scripts/test sets
-- it and checks afterwards that no cgroup of the run is left).
local cgroup_counter = 0
function h.cgroup_name()
  cgroup_counter = cgroup_counter + 1
  return string.format("orch-test/%s-%d-%d", os.getenv("ORCH_TEST_RUN") or "manual",
                       orch.getpid(), cgroup_counter)
end

--- Removes a cgroup and its descendants once empty (their processes were
-- killed by the caller): for trees an orch killed with SIGKILL left.
function h.remove_cgroup_tree(path)
  local cg = orch.cgroup.open(path)
  if not cg then return end
  h.run(function()
    cg:kill()
    cg:wait_empty(10)
  end)
  cg:remove({ recursive = true })
  cg:close()
end

--- The words of a cgroup v2 directory's controller list file
-- (cgroup.controllers, cgroup.subtree_control) as a sorted string.
function h.cgroup_words(dir, file)
  local f = io.open(dir .. "/" .. file)
  if not f then return nil end
  local words = {}
  for w in f:read("a"):gmatch("%S+") do words[#words + 1] = w end
  f:close()
  table.sort(words)
  return table.concat(words, " ")
end

--- Enables the v2 controller ctl for the cgroup at v2 path `path`, as a
-- service manager would for a cgroup it delegates: in each existing
-- ancestor's cgroup.subtree_control, from the mount's root down. Returns a
-- function that disables it again where this enabled it (deepest first; a
-- disable the kernel refuses because another test's cgroup below uses it
-- is left to that test).
function h.cgroup_offer(path, ctl)
  local mount = assert(orch.cgroup.info()).mount
  local undo, dir = {}, mount
  local function write(d, what)
    local f = io.open(d .. "/cgroup.subtree_control", "w")
    if not f then return false end
    local ok = f:write(what) and f:close()
    return ok and true or false
  end
  local comps = {}
  for c in path:gmatch("[^/]+") do comps[#comps + 1] = c end
  for i = 1, #comps do
    if not (" " .. (h.cgroup_words(dir, "cgroup.subtree_control") or "") .. " "):find(" " .. ctl .. " ", 1, true) then
      if write(dir, "+" .. ctl) then table.insert(undo, 1, dir) end
    end
    dir = dir .. "/" .. comps[i]
  end
  return function()
    for _, d in ipairs(undo) do write(d, "-" .. ctl) end
  end
end

--- The file `name` of the cgroup v1 hierarchy of controller ctl that
-- process pid is in (from /proc/PID/cgroup), e.g. where a v1 limit of a
-- cgroup's mirror is held; nil when ctl has no v1 hierarchy.
function h.cgroup_v1_file(pid, ctl, name)
  local mount = (assert(orch.cgroup.info()).v1 or {})[ctl]
  if not mount then return nil end
  for line in io.lines("/proc/" .. pid .. "/cgroup") do
    local list, path = line:match("^%d+:([^:]*):(.*)$")
    if list and ("," .. list .. ","):find("," .. ctl .. ",", 1, true) then
      return mount .. (path == "/" and "" or path) .. "/" .. name
    end
  end
end

--- A SysV key as the objects' __tostring and error messages write it.
function h.keystr(k) return string.format("0x%08x", k) end

--- Runs a shell command, returns its stdout (trimmed) and success.
function h.sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok = p:close()
  return (out:gsub("%s+$", "")), ok
end

--- busted keeps only one `finally` per test: the function returned by
-- h.make_defer(finally) stacks clean-ups, run in reverse order when the test
-- ends. (busted's `finally` exists only in the spec file's environment while
-- a test runs, so the spec passes a caller:
-- `local defer = h.make_defer(function(f) finally(f) end)`.)
function h.make_defer(finally)
  local deferred = {}
  return function(fn)
    deferred[#deferred + 1] = fn
    finally(function()
      local list = deferred
      deferred = {}
      for i = #list, 1, -1 do list[i]() end
    end)
  end
end

--- Waits (in a task) until pred() returns a true value, polling every
-- 10 ms, and returns that value; raises "never happened: <what>" after
-- `timeout` seconds (default 30). A hang guard, not a timing assertion.
function h.eventually(pred, what, timeout)
  local deadline = orch.now() + (timeout or 30) * h.time_scale
  while true do
    local v = pred()
    if v then return v end
    if orch.now() >= deadline then error("never happened: " .. (what or "condition"), 2) end
    orch.sleep(0.01)
  end
end

--- The lines of s (empty ones left out), as a list.
function h.lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

--- The virtual times (numbers) of the lines of an orch.sim world's trace
-- that match pattern.
function h.trace_times(W, pattern)
  local out = {}
  for _, line in ipairs(W.trace) do
    if line:find(pattern) then out[#out + 1] = tonumber(line:match("^%s*([%d.]+)")) end
  end
  return out
end

--- Calls f(...), which must raise; returns its error. (Wrap a C function in
-- a Lua closure: called straight from pcall, it has no name for its
-- "bad argument" messages.)
function h.error_of(f, ...)
  local ok, err = pcall(f, ...)
  luassert.is_false(ok)
  return err
end

--- Table-driven error checks: each case { f, text } must raise an error
-- containing text (plain).
function h.check_raises(cases)
  for _, c in ipairs(cases) do
    luassert.matches(c[2], h.error_of(c[1]), 1, true)
  end
end

--- Writes a file.
function h.write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

--- Whether pid is a live (non-zombie) process.
function h.alive(pid)
  -- (A pid read by cjson is a float: 8454.0 names no /proc entry.)
  pid = math.tointeger(pid) or pid
  local stat = slurp("/proc/" .. pid .. "/stat")
  return stat ~= "" and not stat:match("^%d+ %b() Z")
end

--- Whether process `holder` (an fd holder) holds the pipe that is the
-- stdout of each pid of pids (its log pipe).
function h.holds_pipes(holder, pids)
  local mine = {}
  for fd in h.sh("ls /proc/" .. holder .. "/fd 2>/dev/null"):gmatch("%d+") do
    mine[h.sh("readlink /proc/" .. holder .. "/fd/" .. fd .. " 2>/dev/null")] = true
  end
  for _, pid in ipairs(pids) do
    local l = h.sh("readlink /proc/" .. pid .. "/fd/1 2>/dev/null")
    if not l:match("^pipe:") or not mine[l] then return false end
  end
  return true
end

--- Processes whose environment holds ORCH_SPEC_RUN=token (the mark a spec
-- gives every process it starts, grandchildren included).
function h.leftovers(token)
  local needle = "ORCH_SPEC_RUN=" .. token .. "\0"
  local out = {}
  for _, pid in ipairs(h.orch.proc.list()) do
    local f = io.open("/proc/" .. pid .. "/environ", "rb")
    if f then
      local env = f:read("a") or ""
      f:close()
      if env:find(needle, 1, true) and h.alive(pid) then out[#out + 1] = pid end
    end
  end
  return out
end

--- The end of a test that ran an orch (p) over processes marked with
-- token: p and every leftover killed; then the test's error, if any
-- (ok, err from its pcall), raised with orch's stderr file errfile.
function h.end_run(p, token, ok, err, errfile)
  if p:running() then p:kill("KILL") p:wait() end
  for _, pid in ipairs(h.leftovers(token)) do h.orch.kill(pid, "KILL") end
  if not ok then error(tostring(err) .. "\n" .. tostring(h.slurp(errfile)), 0) end
end

--- Sleeps outside the loop (between CLI calls).
function h.pause(s) os.execute("sleep " .. s) end

--- The pids of this process's children (from /proc).
function h.children(pid)
  pid = pid or h.orch.getpid()
  local f = io.open("/proc/" .. pid .. "/task/" .. pid .. "/children")
  local out = {}
  if f then
    for pid in f:read("a"):gmatch("%d+") do out[#out + 1] = tonumber(pid) end
    f:close()
  end
  return out
end

--- Number of zombie children of this process (read from /proc, not ps:
-- a ps started under the ASan preload can hang).
function h.zombies()
  local n = 0
  local p = io.popen("cat /proc/self/task/*/children 2>/dev/null")
  local kids = p:read("a")
  p:close()
  -- io.popen's own shell is one of the children listed; it is not a zombie.
  for pid in kids:gmatch("%d+") do
    local st = slurp("/proc/" .. pid .. "/stat")
    if st:match("^%d+ %b() Z") then n = n + 1 end
  end
  return n
end

-- The shared-memory segments that existed when this spec file started: a
-- leftover of an earlier process that had the same pid (pids wrap) is not
-- this file's.
local shm_at_start
local function shm_ids()
  local ids = {}
  local f = io.open("/proc/sysvipc/shm")
  if not f then return ids end
  f:read("l")
  for line in f:lines() do
    local shmid = line:match("^%s*%-?%d+%s+(%d+)")
    if shmid then ids[shmid] = true end
  end
  f:close()
  return ids
end
shm_at_start = shm_ids()

--- SysV shared-memory segments this process created since the spec file
-- started (from /proc/sysvipc/shm: the creator pid is known for shm only).
function h.own_shm()
  local out, me = {}, tostring(h.orch.getpid())
  local f = io.open("/proc/sysvipc/shm")
  if not f then return out end
  f:read("l")
  for line in f:lines() do
    local key, shmid, perms, _, cpid = line:match("^%s*(%-?%d+)%s+(%d+)%s+(%d+)%s+(%d+)%s+(%d+)")
    -- A segment removed while still attached (SHM_DEST, 01000) is gone
    -- once the last detach happens, whenever the GC collects it.
    local removed = perms and (tonumber(perms, 8) or 0) & tonumber("1000", 8) ~= 0
    if cpid == me and not removed and not shm_at_start[shmid] then
      out[#out + 1] = string.format("key %s shmid %s", key, shmid)
    end
  end
  f:close()
  return out
end

-- After every test of every spec file that requires this helper (busted
-- attaches an after_each registered while the file loads to that file): no
-- child process may be left, and no shared-memory segment created by this
-- process. A leftover fails the test that left it, and is cleaned up so the
-- next test starts clean (model: libuv's MAKE_VALGRIND_HAPPY).
local fdlist
do
  local ok, busted = pcall(require, "busted")
  if ok and type(busted) == "table" and busted.after_each then
    -- A killed child stays a zombie until orch reaps it: reported once.
    -- By pid and start time: a later test's leftover that got the same pid
    -- (pids wrap) is another process, reported too.
    local reported = {}
    local function identity(pid)
      local rest = slurp("/proc/" .. pid .. "/stat"):match("^%d+ %b() (.*)$") or ""
      local i, start = 0, ""
      for field in rest:gmatch("%S+") do
        i = i + 1
        if i == 20 then start = field break end   -- field 22, starttime
      end
      return pid .. "@" .. start
    end
    -- Open descriptors of this process before the test: a handle the test
    -- opened (a stream, a listener, a pipe, a file) and never closed is
    -- still there after it, and fails it. Collected garbage is closed first.
    fdlist = os.tmpname()
    local function fds()
      collectgarbage(); collectgarbage()
      -- Listed by a shell into a file, so that the listing adds no
      -- descriptor of its own to the set.
      os.execute("ls -l /proc/" .. h.orch.getpid() .. "/fd >" .. fdlist .. " 2>/dev/null")
      local set = {}
      for line in slurp(fdlist):gmatch("[^\n]+") do
        local fd, target = line:match(" (%d+) %-> (.*)$")
        if fd then set[tonumber(fd)] = target end
      end
      return set
    end
    -- The runtime's long-lived descriptors (its loop, its EMFILE reserve,
    -- the /dev/null that spawns share and the low slots they move fds into,
    -- a started spawn's sets of slots, libuv's spare fd made with the first
    -- stream, the cgroup v2 mount's, held once the hierarchies are known)
    -- are made on first use: make them before the first baseline.
    h.orch.cgroup.info()
    h.orch.run(function()
      local r, w = h.orch.pipe()
      w:write("x"); w:close(); r:read(); r:close()
      local p = assert(h.orch.spawn{ "/bin/true", stdin = "null", stdout = "null", stderr = "null" })
      p:wait()
      p = assert(assert(h.orch.spawn_begin{ "/bin/true", stdin = "null", stdout = "null", stderr = "null" }):finish())
      p:wait()
    end)
    local before
    busted.before_each(function() before = fds() end)
    busted.after_each(function()
      local now, open = fds(), {}
      for fd, target in pairs(now) do
        -- libuv makes one inotify descriptor per loop with the loop's first
        -- file watch (cgroup.events), and keeps it as long as the loop.
        if (not before[fd] or before[fd] ~= target) and target ~= "anon_inode:inotify" then
          open[#open + 1] = fd .. " -> " .. target
        end
      end
      table.sort(open)
      local kids = {}
      for _, pid in ipairs(h.children()) do
        local id = identity(pid)
        if not reported[id] then
          reported[id] = true
          local cmd = slurp("/proc/" .. pid .. "/cmdline"):gsub("%z", " ")
          kids[#kids + 1] = pid .. " (" .. cmd .. ")"
          h.orch.kill(pid, "KILL")
        end
      end
      local segs = h.own_shm()
      for _, s in ipairs(segs) do os.execute("ipcrm -m " .. s:match("shmid (%d+)")) end
      if #kids > 0 then error("the test left child processes: " .. table.concat(kids, ", "), 0) end
      if #segs > 0 then error("the test left shared-memory segments: " .. table.concat(segs, ", "), 0) end
      if #open > 0 then error("the test left open descriptors: " .. table.concat(open, ", "), 0) end
    end)
  end
end

-- Remove temp dirs when the Lua state closes.
setmetatable(tmpdirs, { __gc = function(t)
  if fdlist then os.remove(fdlist) end
  for _, d in ipairs(t) do os.execute("rm -rf " .. shquote(d)) end
end })

-- A JSON decoder that refuses NaN/Infinity (what a strict client reads),
-- and v with every integral number made an integer (cjson decodes numbers
-- as floats).
function h.strict_json()
  local strict = require("cjson").new()
  strict.decode_invalid_numbers(false)
  return strict
end

function h.ints(v)
  if type(v) == "table" then for k, x in pairs(v) do v[k] = h.ints(x) end return v end
  return type(v) == "number" and math.tointeger(v) or v
end

return h
