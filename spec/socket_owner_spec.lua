-- Two scripts with the same basename (DIR/a/NAME.lua, DIR/b/NAME.lua) share
-- the default control socket, /run/orch/NAME.sock. After a kill -9 of the
-- first, the second must neither adopt the first's services nor kill them:
-- it refuses to start (exit 75) and says whose they are, unless
-- `--take-over` asks for them; the first script takes them back. Real
-- `orch run` processes on the default socket, real SIGKILLs; every test
-- has its own script name (so its own socket) and ends what it started.
local h = require "spec.helper"
local cjson = require "cjson"
local u = require "spec.ctl_util"

local orch = h.orch
local alive, slurp = h.alive, h.slurp
local sanitizer_clean, until_true = u.sanitizer_clean, u.until_true

-- MARK is the script's own directory: each service writes its pid to
-- MARK/<name>.pids, so that a test sees which script started it. Output is
-- discarded (no log pipe, so no fd holder).
local POLICY = [[
local sup = require "orch.supervisor"
for _, n in ipairs(NAMES) do
  sup.service{ name = n, log = "null", backoff = 0.1,
    cmd = { "sh", "-c", 'echo $$ >> "$0.pids"; while :; do sleep 1; done', MARK .. "/" .. n } }
end
sup.run()
]]

local function new_test()
  local base = h.tmpdir()
  local name = ("owner_%d_%d"):format(orch.getpid(), math.random(1, 1e9))
  local t = { base = base, name = name, runs = {}, scripts = {} }
  t.sock = require("orch.ctl").socket_dir() .. "/" .. name .. ".sock"
  for _, d in ipairs { "a", "b" } do
    assert(os.execute("mkdir " .. h.shquote(base .. "/" .. d)))
    t.scripts[d] = base .. "/" .. d .. "/" .. name .. ".lua"
  end
  h.write(t.scripts.a, string.format("local MARK, NAMES = %q, { 'web', 'only_a' }\n", base .. "/a") .. POLICY)
  h.write(t.scripts.b, string.format("local MARK, NAMES = %q, { 'web' }\n", base .. "/b") .. POLICY)
  -- A symbolic link to a's directory: the same script by another path.
  assert(os.execute("ln -s a " .. h.shquote(base .. "/link")))
  return t
end

-- `orch run [ARGS...] SCRIPT` in the background from directory `cwd`, on
-- the default socket ($ORCH_SOCKET empty); returns its pid once the socket
-- answers.
local function run(t, cwd, script, args)
  local n = #t.runs + 1
  local err = t.base .. "/err" .. n
  local pid = math.tointeger(tonumber((h.sh(string.format(
    "cd %s && { ORCH_SOCKET= %s run %s %s >/dev/null 2>%s & echo $!; }",
    h.shquote(cwd), h.shquote(h.bin), table.concat(args or {}, " "), h.shquote(script), h.shquote(err))))))
  t.runs[n] = { pid = pid, err = err }
  until_true(function()
    if not alive(pid) then error("orch run ended early:\n" .. slurp(err), 0) end
    return h.cli({ "ctl", "--socket", t.sock, "ping" }) == 0
  end, "the control socket")
  return pid
end

-- `orch run SCRIPT` in the background, expected to end by itself (a
-- refusal): returns its exit status and stderr once it has ended, or fails
-- when it serves the socket instead (it took the socket over).
local function run_refused(t, script)
  local n = #t.runs + 1
  local err, rc = t.base .. "/err" .. n, t.base .. "/rc" .. n
  local pid = math.tointeger(tonumber((h.sh(string.format(
    "{ ORCH_SOCKET= %s run %s >/dev/null 2>%s; echo $? >%s; } >/dev/null 2>&1 & echo $!",
    h.shquote(h.bin), h.shquote(script), h.shquote(err), h.shquote(rc))))))
  t.runs[n] = { pid = pid, err = err }
  until_true(function()
    if h.cli({ "ctl", "--socket", t.sock, "ping" }) == 0 then
      error("orch run " .. script .. " serves the socket instead of refusing:\n" .. slurp(err), 0)
    end
    return slurp(rc) ~= ""
  end, "orch run to end")
  return math.tointeger(tonumber(slurp(rc))), slurp(err)
end

-- `orch ctl --socket t.sock ...`, and its services by name.
local ctl, status = u.ctl_cli, u.status

local function running(t, names)
  return until_true(function()
    local s = status(t)
    for _, n in ipairs(names) do
      if not s[n] or s[n].state ~= "running" or not s[n].pid then return false end
    end
    return s
  end, "services running: " .. table.concat(names, ", "))
end

local function start_time(pid)
  local i = orch.proc.info(pid)
  return i and i.start_time
end

local function kill9(pid) os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
-- Gone from /proc: its lock is released only with its last thread.
local function gone(pid) return slurp("/proc/" .. pid .. "/stat") == "" end

local function killed(t, pid)
  kill9(pid)
  until_true(function() return gone(pid) end, "the killed orch to be gone")
end

-- The pids a script's service `n` wrote (d: "a" or "b").
local function pids_of(t, d, n)
  local out = {}
  for p in slurp(t.base .. "/" .. d .. "/" .. n .. ".pids"):gmatch("%d+") do out[#out + 1] = math.tointeger(tonumber(p)) end
  return out
end

-- The live processes whose command line names the test's script or
-- directory: its orch runs (also one a shell started) and services.
local function procs_of(t)
  local out = {}
  for _, pid in ipairs(orch.proc.list()) do
    local c = slurp("/proc/" .. pid .. "/cmdline")
    if pid ~= orch.getpid() and (c:find(t.name, 1, true) or c:find(t.base, 1, true)) then out[#out + 1] = pid end
  end
  return out
end

local function cleanup(t)
  for _, r in ipairs(t.runs) do kill9(r.pid) end
  for _, pid in ipairs(procs_of(t)) do kill9(pid) end
  until_true(function()
    for _, r in ipairs(t.runs) do if not gone(r.pid) then return false end end
    return #procs_of(t) == 0
  end, "the test's processes to end")
  -- Every service is its own process group; its cgroup tree goes too.
  for _, d in ipairs { "a", "b" } do
    for _, n in ipairs { "web", "only_a" } do
      for _, pid in ipairs(pids_of(t, d, n)) do os.execute("kill -KILL -" .. pid .. " 2>/dev/null") end
    end
  end
  h.remove_cgroup_tree(require("orch.supervisor.cgroup").socket_parent(t.sock))
  for _, suffix in ipairs { "", ".lock", ".state", ".journal", ".owner", ".holder" } do os.remove(t.sock .. suffix) end
  for _, r in ipairs(t.runs) do sanitizer_clean(slurp(r.err), "orch run") end
end

local function with_test(fn)
  local t = new_test()
  local ok, err = pcall(fn, t)
  cleanup(t)
  if not ok then error(err, 0) end
end

describe("two scripts with the same basename on the default control socket", function()
  it("after a kill -9 of the first, the second is refused and touches nothing; the first takes its services back", function()
    with_test(function(t)
      -- The first, by a path through a symbolic link.
      local a1 = run(t, t.base, "link/" .. t.name .. ".lua")
      local s = running(t, { "web", "only_a" })
      local web, only = s.web.pid, s.only_a.pid
      local web_start, only_start = start_time(web), start_time(only)
      killed(t, a1)
      local record = slurp(t.sock .. ".state") .. slurp(t.sock .. ".journal")
      assert.is_truthy(record:find(tostring(web), 1, true), record)

      local code, err = run_refused(t, t.scripts.b)
      assert.are.equal(75, code, err)
      for _, want in ipairs {
        "control socket " .. t.sock .. ": another script's services still run on it",
        t.base .. "/link/" .. t.name .. ".lua (orch pid " .. a1 .. ", killed)",
        "web (pid " .. web .. ")", "only_a (pid " .. only .. ")",
        "this is " .. t.scripts.b, "--take-over", "--socket PATH", "(nothing was started)",
      } do
        assert.matches(want, err, 1, true)
      end
      assert.is_nil(err:find("traceback", 1, true), err)
      -- Nothing of the first was adopted, signalled or forgotten; nothing
      -- of the second started.
      assert.are.equal(web_start, start_time(web))
      assert.are.equal(only_start, start_time(only))
      assert.are.same({}, pids_of(t, "b", "web"))
      assert.are.equal(record, slurp(t.sock .. ".state") .. slurp(t.sock .. ".journal"))

      -- The first script again, by its real path: it adopts them.
      local a2 = run(t, "/", t.scripts.a)
      s = running(t, { "web", "only_a" })
      assert.are.equal(web, s.web.pid)
      assert.are.equal(only, s.only_a.pid)
      assert.are.same({ web }, pids_of(t, "a", "web"))
      local c = ctl(t, "shutdown")
      assert.are.equal(0, c)
      until_true(function() return gone(a2) end, "the first script's orch to end")
      assert.is_false(alive(web))
      -- A clean end leaves no state: the second script runs as any other.
      run(t, t.base .. "/b", t.name .. ".lua")
      s = running(t, { "web" })
      assert.are.same({ s.web.pid }, pids_of(t, "b", "web"))
      assert.are.equal(0, (ctl(t, "shutdown")))
    end)
  end)

  it("with --take-over the second adopts them as an edit of the first: same name restarted with its definition, the others stopped", function()
    with_test(function(t)
      local a1 = run(t, t.base .. "/a", t.name .. ".lua")
      local s = running(t, { "web", "only_a" })
      local web, only = s.web.pid, s.only_a.pid
      killed(t, a1)
      local b = run(t, t.base .. "/b", t.name .. ".lua", { "--take-over" })
      s = running(t, { "web" })
      assert.is_nil(s.only_a)
      assert.are_not.equal(web, s.web.pid)
      assert.are.same({ s.web.pid }, pids_of(t, "b", "web"))
      -- What no longer belongs to any service is stopped, not left behind.
      until_true(function() return not alive(web) and not alive(only) end, "the first script's processes to end")
      local err = slurp(t.runs[2].err)
      assert.matches("taking over what another script, " .. t.scripts.a .. " (orch pid " .. a1 .. ", killed)", err, 1, true)
      assert.matches("only_a: no longer defined: stopping pid " .. only, err, 1, true)
      assert.are.equal(0, (ctl(t, "shutdown")))
      until_true(function() return gone(b) end, "orch to end")
    end)
  end)

  it("a FIFO at the owner file's path is neither read nor written through: the run starts and puts its own file there", function()
    with_test(function(t)
      assert(os.execute("mkfifo -m 600 " .. h.shquote(t.sock .. ".owner")))
      local a1 = run(t, t.base .. "/a", t.name .. ".lua")
      running(t, { "web", "only_a" })
      local f = io.popen("stat -c %F " .. h.shquote(t.sock .. ".owner"))
      local kind = f:read("l")
      f:close()
      assert.are.equal("regular file", kind)
      assert.are.equal(t.scripts.a, cjson.decode(slurp(t.sock .. ".owner")).script)
      assert.are.equal(0, (ctl(t, "shutdown")))
      until_true(function() return gone(a1) end, "orch to end")
    end)
  end)

  it("another script's state of which nothing runs any more is dropped, not resumed", function()
    with_test(function(t)
      local a1 = run(t, t.base .. "/a", t.name .. ".lua")
      local s = running(t, { "web", "only_a" })
      -- Stopped by hand: the record says web stays stopped.
      assert.are.equal(0, (ctl(t, "stop", "web")))
      until_true(function() return status(t).web.state == "stopped" end, "web stopped")
      killed(t, a1)
      os.execute("kill -KILL -" .. s.only_a.pid)
      until_true(function() return not alive(s.only_a.pid) end, "only_a to end")
      local b = run(t, t.base .. "/b", t.name .. ".lua")
      -- The second script's web starts: the first's "stopped" is not its own.
      s = running(t, { "web" })
      assert.are.same({ s.web.pid }, pids_of(t, "b", "web"))
      assert.matches("was left by another script, " .. t.scripts.a .. " (orch pid " .. a1
        .. ", killed), and nothing of it runs any more: not taken over", slurp(t.runs[2].err), 1, true)
      assert.are.equal(0, (ctl(t, "shutdown")))
      until_true(function() return gone(b) end, "orch to end")
    end)
  end)
end)
