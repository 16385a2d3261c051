--- Helpers shared by the specs that drive a real `orch run` through its
-- control socket (ctl_spec, reexec_spec).
local h = require "spec.helper"
local cjson = require "cjson"
local assert = require "luassert"

local u = {}
local alive, pause = h.alive, h.pause

--- Under ASan/UBSan a report on stderr fails the test even if the exit
-- status looked right.
function u.sanitizer_clean(text, what)
  if text:find("AddressSanitizer", 1, true) or text:find("runtime error:", 1, true) then
    error("sanitizer report from " .. what .. ":\n" .. text, 2)
  end
end

--- Starts `orch run` on the policy source in the background (the policy
-- sees `SOCK`, its control socket, and `DIR`, its temp dir); returns
-- o = { dir, sock, pid, path } once the socket answers. `args`: options
-- for `orch run` before the file (a list). `cgroup_dir`: the v2 directory
-- of a cgroup orch starts in (else the spec's own).
function u.start(src, env, args, cgroup_dir)
  local d = h.tmpdir()
  local o = { dir = d, sock = d .. "/ctl.sock", path = d .. "/policy.lua" }
  h.write(o.path, string.format("local SOCK, DIR = %q, %q\n", o.sock, d) .. src)
  local envs = {}
  for k, v in pairs(env or {}) do envs[#envs + 1] = k .. "=" .. h.shquote(v) end
  -- --socket: the lock is the test's own socket's, not /run/orch/policy.sock's
  -- (which every test would share), unless the test chose otherwise.
  local opts, chose = {}, false
  for _, a in ipairs(args or {}) do
    opts[#opts + 1] = h.shquote(a)
    if a:match("^%-%-socket") or a == "--no-socket" then chose = true end
  end
  if not chose then table.insert(opts, 1, "--socket " .. h.shquote(o.sock)) end
  local into = cgroup_dir and ("sh -c " .. h.shquote('echo $$ >"$0" && exec "$@"') .. " "
    .. h.shquote(cgroup_dir .. "/cgroup.procs") .. " ") or ""
  o.pid = tonumber((h.sh(string.format("cd %s && { %senv %s %s run %s %s >%s/out 2>%s/err & echo $!; }",
    h.shquote(d), into, table.concat(envs, " "), h.shquote(h.bin), table.concat(opts, " "), h.shquote(o.path),
    h.shquote(d), h.shquote(d)))))
  for _ = 1, 400 do
    if h.cli({ "ctl", "--socket", o.sock, "ping" }) == 0 then return o end
    if not alive(o.pid) then break end
    pause(0.05)
  end
  local err = h.slurp(d .. "/err")
  os.execute("kill -TERM " .. o.pid .. " 2>/dev/null")
  error("the orchestrator did not come up: " .. err)
end

--- Outside the loop: calls pred() every 50 ms until it returns a true value
-- and returns that value; raises after about 30 s (a hang guard only).
function u.until_true(pred, what)
  for _ = 1, 600 do
    local v = pred()
    if v then return v end
    pause(0.05)
  end
  error("timed out waiting for " .. what, 2)
end

--- `orch ctl --socket o.sock ARGS...`: code, stdout, stderr.
function u.ctl_cli(o, ...)
  local code, out, err = h.cli({ "ctl", "--socket", o.sock, ... })
  u.sanitizer_clean(err, "orch ctl")
  return code, out, err
end

--- The services of o by name, from `orch ctl --json status` (integers as
-- integers: cjson reads every number as a float).
function u.status(o)
  local code, out, err = u.ctl_cli(o, "--json", "status")
  -- 3: some service is not running (LSB).
  assert.is_true(code == 0 or code == 3, err)
  local by = {}
  for _, s in ipairs(cjson.decode(out).services) do
    s.pid, s.restarts = math.tointeger(s.pid) or s.pid, math.tointeger(s.restarts) or s.restarts
    by[s.name] = s
  end
  return by
end

--- Ends o with SIGTERM (KILL if it hangs) and checks that its services died
-- with it and that it printed no sanitizer report.
function u.stop(o)
  local pids = {}
  if alive(o.pid) then
    local code, out = u.ctl_cli(o, "--json", "status")
    if code == 0 or code == 3 then
      for _, s in ipairs(cjson.decode(out).services) do
        -- (An integer: cjson reads 8454 as 8454.0, and /proc/8454.0 is no
        -- process: every survivor passed this check unseen.)
        local pid = math.tointeger(s.pid)
        if pid then pids[#pids + 1] = pid end
      end
    end
    os.execute("kill -TERM " .. o.pid)
    for _ = 1, 400 do
      if not alive(o.pid) then break end
      pause(0.05)
    end
    if alive(o.pid) then os.execute("kill -KILL " .. o.pid) end
  end
  for _, p in ipairs(pids) do
    if alive(p) then os.execute("kill -KILL " .. p) error("service pid " .. p .. " survived its orchestrator") end
  end
  u.sanitizer_clean(h.slurp(o.dir .. "/err"), "orch run")
end

-- Starts `prlimit --nofile=LIMITS orch run --socket S policy` in the
-- background (env: more environment variables, a table; again: an o
-- whose directory and socket to use again); returns o (as u.start does)
-- once the socket answers. (fdlimit_spec, exhaust_spec.)
function u.start_nofile(limits, src, env, again)
  local d = again and again.dir or h.tmpdir()
  local o = { dir = d, sock = d .. "/ctl.sock", path = d .. "/policy.lua" }
  h.write(o.path, string.format("local SOCK, DIR = %q, %q\n", o.sock, d) .. src)
  local envs = {}
  for k, v in pairs(env or {}) do envs[#envs + 1] = k .. "=" .. h.shquote(v) end
  o.pid = tonumber((h.sh(string.format("cd %s && { env %s prlimit --nofile=%s %s run --socket %s %s >>out 2>>err & echo $!; }",
    h.shquote(d), table.concat(envs, " "), limits, h.shquote(h.bin), h.shquote(o.sock), h.shquote(o.path)))))
  u.until_true(function()
    assert(h.alive(o.pid), "orch died: " .. h.slurp(d .. "/err"):sub(-2000))
    return h.cli({ "ctl", "--socket", o.sock, "ping" }) == 0
  end, "the control socket")
  return o
end

-- For a policy: TAKE() takes every fd orch has left (kept in HELD) and
-- returns how many, FREE() gives them back.
u.TAKE_FREE = [[
HELD = {}
function TAKE()
  while true do
    local f = io.open("/dev/null")
    if not f then break end
    HELD[#HELD + 1] = f
  end
  return #HELD
end
function FREE()
  for _, f in ipairs(HELD) do f:close() end
  HELD = {}
end
]]

--- The state record of control socket sock and its journal, as the next
-- orch reads them (persist.recover's merge): name -> entry, and the
-- record. A spawn's line (tab-separated) is an entry { name, pid, state =
-- "running" }. nil while there is no whole record to read (it is replaced
-- atomically: a cut one is a record being made, not a state).
function u.recorded(sock)
  local ok, r = pcall(cjson.decode, h.slurp(sock .. ".state"))
  if not ok or type(r) ~= "table" or type(r.instances) ~= "table" then return nil end
  local by = {}
  for _, e in ipairs(r.instances) do by[e.name] = e end
  local j = h.slurp(sock .. ".journal")
  if math.tointeger(tonumber(j:match("^#gen (%d+)\n"))) == math.tointeger(r.gen) then
    for line in j:gmatch("[^\n]+") do
      if line:sub(1, 1) == "{" then
        -- (The last line may be cut by a write in progress: skipped.)
        local okl, e = pcall(cjson.decode, line)
        if okl and type(e) == "table" and type(e.name) == "string" then by[e.name] = not e.gone and e or nil end
      elseif line:sub(1, 1) ~= "#" then
        local name, pid = line:match("^([^\t]+)\t(%d+)\t")
        if name then by[name] = { name = name, pid = math.tointeger(tonumber(pid)), state = "running" } end
      end
    end
  end
  return by, r
end

return u
