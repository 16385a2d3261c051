-- scripts/fuzz.d/bindings.lua: calls every public binding of orch with
-- random arguments of random types, and every method of every orch class
-- with random (often closed) objects, in one `orch run` process.
--   orch run bindings.lua SEED CALLS [LOGFILE]
-- Run it in a sandbox (scripts/fuzz.d/sandbox.sh: private pid, IPC and
-- network namespaces, user nobody, a scratch cwd): a random call may kill
-- pids, create SysV objects, bind sockets, spawn programs or make files.
-- Every call runs in a task of its own (so waiting calls are exercised, and
-- cancelled after a few ms); errors are expected, a crash or a sanitizer
-- report is the finding. LOGFILE (default fuzz-calls.log) gets each call
-- before it is made, flushed, so the last line names a crashing call.
-- Prints "fuzz_calls N" and "fuzz_functions N" at the end (to LOGFILE too).
local seed = math.tointeger(tonumber(arg[1])) or os.time()
local ncalls = math.tointeger(tonumber(arg[2])) or 2000
local log = assert(io.open(arg[3] or "fuzz-calls.log", "w"))
math.randomseed(seed)
local random = math.random

-- Never called: they end or replace the process, or detach it (a raised
-- KILL, STOP or TERM ends or stops the fuzzer itself).
local deny = {
  ["orch.exit"] = true, ["orch.exec"] = true, ["orch.daemonize"] = true, ["orch.fork"] = true,
  ["orch.run"] = true, ["orch.core.core.run"] = true, ["orch.core.core.exit"] = true,
  ["orch.signal.raise"] = true,
  -- Internal: a hook that orch.exit (which the fuzzer's end calls) runs.
  ["orch._exit_hook"] = true, ["orch.core.core._exit_hook"] = true,
}

local fns, seen = {}, {}
for name in pairs(deny) do
  local f = orch
  for part in name:gmatch("[^.]+") do f = part ~= "orch" and type(f) == "table" and f[part] or f end
  if type(f) == "function" then seen[f] = true end
end
local function add(name, f, class)
  if deny[name] or deny[name:gsub("^orch%.core%.core%.", "orch.")] or seen[f] then return end
  seen[f] = true
  fns[#fns + 1] = { name = name, f = f, class = class }
end
local function collect(prefix, t, depth)
  local keys = {}
  for k in pairs(t) do if type(k) == "string" then keys[#keys + 1] = k end end
  table.sort(keys)   -- the same order for a seed, whatever the hash order
  for _, k in ipairs(keys) do
    local v, name = t[k], prefix .. "." .. k
    if type(v) == "function" then add(name, v)
    elseif type(v) == "table" and depth < 3 and not seen[v] then
      seen[v] = true
      collect(name, v, depth + 1)
    end
  end
end
collect("orch", orch, 0)
local mods = {}
for k, v in pairs(package.loaded) do
  if type(k) == "string" and k:match("^orch%.core%.") and type(v) == "table" then mods[#mods + 1] = k end
end
table.sort(mods)
for _, k in ipairs(mods) do collect(k, package.loaded[k], 1) end
local classes = {}
-- Internal guard objects (to-be-closed helpers no public call returns) are
-- left out: only the debug library reaches them.
local internal = { ["orch.callback.guard"] = true, ["orch.proc.fdbox"] = true }
for k, mt in pairs(debug.getregistry()) do
  if type(k) == "string" and k:match("^orch") and type(mt) == "table" and not internal[k] then
    classes[#classes + 1] = k
  end
end
table.sort(classes)
for _, cname in ipairs(classes) do
  local mt = debug.getregistry()[cname]
  local idx = rawget(mt, "__index")
  if type(idx) == "table" then
    local names = {}
    for mk, mv in pairs(idx) do if type(mv) == "function" then names[#names + 1] = mk end end
    table.sort(names)
    for _, mk in ipairs(names) do add(cname .. ":" .. mk, idx[mk], cname) end
  end
  for _, mm in ipairs { "__tostring", "__close", "__gc", "__len", "__call", "__index", "__newindex" } do
    if type(rawget(mt, mm)) == "function" then add(cname .. "." .. mm, mt[mm], cname) end
  end
end

-- Argument values.
local ints = { 0, 1, -1, 2, 3, 7, 9, 15, 64, 255, 256, 4096, 65535, 65536, 0x7fffffff, 0x80000000,
  -0x80000000, 0xffffffff, 1 << 53, math.maxinteger, math.mininteger, -4096 }
local floats = { 0 / 0, 1 / 0, -1 / 0, -0.0, 0.5, 1e-300, 1e308, -1e308, 0.001, 2.5, 1e9 }
local strings = { "", "\0", "a\0b", "TERM", "SIGTERM", "KILL", "HUP", "INT", "USR1", "0", "-1", "all", "*",
  "r", "w", "rw", "pipe", "inherit", "null", "/dev/null", "/dev/zero", "/nonexistent/x", ".", "..", "/",
  "f", "sock", "x.sock", "@abstract", "/proc/self/stat", "true", "sh", "/bin/true", "/bin/false",
  "\xff\xfe\xc3\x28", "\u{10FFFF}", string.rep("x", 4097), string.rep("\0", 64), "%s%n%p", "exit 3",
  "tcp", "unix", "127.0.0.1", "localhost", "0.0.0.0", "stdout", "stderr", "stdin", "on", "off" }
local keys = { "cmd", "args", "env", "cwd", "stdin", "stdout", "stderr", "user", "group", "rlimits",
  "umask", "setsid", "pgroup", "fds", "timeout", "key", "size", "mode", "create", "exclusive", "path",
  "name", "slots", "flags", "max", "backlog", "host", "port", "signal", "fd", "offset", "length",
  "shared", "value", "initial", "count", "nofile", "core", "as", "lines", "buffer", "idle", "interval",
  "socket", "unix", "tcp", "type", "layout", "compat", "remove", "nonblock", "readonly", "perm", 1, 2, 3 }
local pool = {}       -- objects returned by calls (userdata, tables, tasks)
local funcs = {
  function() end, function() return 1 end, function() error("boom") end, function() orch.sleep(0.001) end,
  function(...) return ... end, print, tostring, coroutine.yield,
}

local value
local function rstring()
  local r = random(3)
  if r == 1 then
    local n = random(0, 40)
    local b = {}
    for i = 1, n do b[i] = string.char(random(0, 255)) end
    return table.concat(b)
  end
  return strings[random(#strings)]
end
local function rtable(depth)
  local t, r = {}, random(4)
  if r == 1 then return t end
  for _ = 1, random(0, 6) do
    if r == 2 then t[#t + 1] = value(depth + 1)
    else t[keys[random(#keys)]] = value(depth + 1) end
  end
  return t
end
function value(depth)
  depth = depth or 0
  local r = random(20)
  if r == 1 then return nil
  elseif r == 2 then return random(2) == 1
  elseif r <= 5 then return ints[random(#ints)] + (random(4) == 1 and random(-2, 2) or 0)
  elseif r == 6 then return floats[random(#floats)]
  elseif r <= 10 then return rstring()
  elseif r <= 12 and depth < 3 then return rtable(depth)
  elseif r == 13 then return funcs[random(#funcs)]
  elseif r == 14 then return coroutine.create(function() end)
  elseif #pool > 0 then return pool[random(#pool)]
  end
  return ints[random(#ints)]
end

-- A few objects of every kind to start with (methods get them as self).
local function seed_objects()
  local function try(f, ...) local ok, a, b = pcall(f, ...) if ok then return a, b end end
  local r, w = try(orch.pipe)
  for _, o in ipairs { r, w, try(orch.cond), try(orch.timer.after, 1e6, function() end),
                       try(orch.task, function() orch.sleep(1e6) end), try(orch.spawn, { "sleep", "1000" }),
                       try(orch.listen, { unix = "seed.sock" }), try(orch.dgram), try(orch.mmap, "/dev/zero", { size = 4096 }),
                       try(orch.signal.on, "USR2", function() end) } do
    pool[#pool + 1] = o
  end
  for _, ns in ipairs { "shm", "sem", "msg" } do
    local m = orch[ns]
    if type(m) == "table" and type(m.open) == "function" then
      local o = try(m.open, { key = "private", create = true, size = 4096 }) or try(m.open, { create = true })
      if o then pool[#pool + 1] = o end
    end
  end
end
seed_objects()

local function repr(v)
  local t = type(v)
  if t == "string" then
    if #v > 40 then return string.format("string(%d bytes)", #v) end
    return string.format("%q", v):gsub("\n", "n")
  elseif t == "number" then return math.type(v) == "integer" and tostring(v) or string.format("%.17g", v)
  elseif t == "table" then return "table"
  end
  return t
end

-- Classes whose __index is a function (orch.Process...): their methods are
-- reached by name on an object of the class.
local method_names = { "wait", "kill", "close", "on_exit", "running", "status", "rusage", "lines", "accept",
  "address", "fd", "set_timeout", "beat", "release", "remove", "stop", "pid", "stdin", "stdout", "stderr",
  "read", "write", "name", "slot", "detach", "timeout" }
for _, fn in ipairs(fns) do
  local m = fn.name:match(":(.+)$")
  if m then method_names[#method_names + 1] = m end
end
local function by_name(obj, name)
  return function(...) return obj[name](...) end
end

-- A call may set a tiny Lua time budget: the fuzzer's own code puts the
-- default back after every call.
local set_budget, budget = orch.set_budget, orch.set_budget(5)
set_budget(budget)

-- orch.kill(tid) of one of orch's own threads (libuv's threadpool) signals
-- the whole process: the fuzzer would kill itself (a finding, reported:
-- orch.kill refuses its own pid, not its threads' ids). Those ids are
-- kept out of kill calls.
local own_tids = {}
local function refresh_tids()
  own_tids = {}
  local p = io.popen("ls /proc/" .. orch.getpid() .. "/task")
  for tid in p:read("a"):gmatch("%d+") do own_tids[tonumber(tid)] = true end
  p:close()
end

local calls, ended = 0, 0
for i = 1, ncalls do
  if i % 100 == 1 then refresh_tids() end
  local fn = fns[random(#fns)]
  if #pool > 0 and random(6) == 1 then
    local obj, m = pool[random(#pool)], method_names[random(#method_names)]
    fn = { name = tostring(type(obj)) .. "[" .. m .. "]", f = by_name(obj, m), class = "any" }
  end
  local args = { n = random(0, 4) }
  for j = 1, args.n do args[j] = value() end
  if fn.class and random(3) > 1 and #pool > 0 then args[1] = pool[random(#pool)] end
  if fn.class and random(8) == 1 then
    -- A closed object: close the one passed first, then call.
    local o = args[1]
    local mt = getmetatable(o)
    if type(mt) == "table" and type(rawget(mt, "__close")) == "function" then pcall(mt.__close, o) end
  end
  if fn.name:find("kill", 1, true) then
    for j = 1, args.n do
      if math.type(args[j]) == "integer" and own_tids[math.abs(args[j])] then args[j] = 0 end
    end
  end
  local shown = {}
  for j = 1, args.n do shown[j] = repr(args[j]) end
  log:write(i, " ", fn.name, "(", table.concat(shown, ", "), ")\n")
  log:flush()
  local t = orch.task(function() return pcall(fn.f, table.unpack(args, 1, args.n)) end)
  local r = table.pack(t:join(0.005))
  set_budget(budget)
  if r[1] == nil and r[3] == "ETIMEDOUT" then t:cancel()
  else
    ended = ended + 1
    for j = 2, r.n do
      local v = r[j]
      if (type(v) == "userdata" or (type(v) == "table" and getmetatable(v))) and #pool < 200 then pool[#pool + 1] = v end
    end
  end
  calls = calls + 1
  if i % 100 == 0 then collectgarbage() end
end
-- The summary goes to the log too: a fuzzed call may have closed stdout
-- (orch.fd.read(1) reads a regular file to its end and closes it).
log:write(string.format("fuzz_seed %d\nfuzz_functions %d\nfuzz_calls %d\n", seed, #fns, calls))
log:write("done\n")
log:close()
if os.getenv("ORCH_FUZZ_LIST") then for _, fn in ipairs(fns) do print(fn.name) end end
print("fuzz_seed " .. seed)
print("fuzz_functions " .. #fns)
print("fuzz_calls " .. calls)
io.stdout:flush()
orch.exit(0)
