-- orch killed with SIGKILL: the services run on with their log pipes held
-- by the fd holder, and the next `orch run` of the same control socket
-- adopts them (same pids, restart counts kept, their output read on), or,
-- where it cannot (the holder died too), stops them: never a duplicate.
-- Real `orch run` processes, real SIGKILLs; each test has its own dir,
-- socket and heartbeat key, and ends every process it started.
local h = require "spec.helper"
local cjson = require "cjson"
local u = require "spec.ctl_util"

local alive = h.alive
-- A file's content, "" when it cannot be read (a process of /proc may end
-- between the open and the read).
local function slurp(path) return h.slurp(path) or "" end
local sanitizer_clean, until_true = u.sanitizer_clean, u.until_true

-- Three services; each writes "PID line N" every 20 ms to its log
-- (DIR/NAME.log) and N to DIR/NAME.count, so that the test sees it write
-- while no orch reads. $0 (DIR/NAME) marks its processes. With NOPIPE
-- they ignore SIGPIPE (to outlive the loss of their pipe's reader); c has
-- a heartbeat slot, so that the supervisor creates its heartbeat table.
local POLICY = [[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stderr:write("sup: ", m, "\n") end, heartbeat_key = HBKEY }
local LOOP = 'i=0; while :; do i=$((i+1)); echo "$$ line $i"; echo $i > "$0.count"; sleep 0.02; done'
for _, n in ipairs { "a", "b", "c" } do
  sup.service{ name = n, log = { dir = DIR }, backoff = 0.1,
    heartbeat = n == "c" and { timeout = 600 } or nil,
    cmd = { "sh", "-c", (NOPIPE and 'trap "" PIPE; ' or "") .. LOOP, DIR .. "/" .. n } }
end
sup.run()
-- Up until `orch ctl shutdown`, also after `stop all`.
orch.task(function() orch.sleep(1e6) end)
]]

local NAMES = { "a", "b", "c" }

local function new_test(nopipe, policy)
  local d = h.tmpdir()
  local key = h.key()
  local t = { dir = d, sock = d .. "/ctl.sock", path = d .. "/policy.lua", key = key, runs = {}, extra = {} }
  t.state = t.sock .. ".state"
  h.write(t.path, string.format("local DIR, HBKEY, NOPIPE, ORCH = %q, %d, %s, %q\n", d, key,
    tostring(nopipe == true), h.bin) .. (policy or POLICY))
  return t
end

-- Starts `orch run --socket SOCK policy.lua` in the background; returns
-- its pid once the socket answers (at once with `nowait`).
local function run(t, nowait)
  local n = #t.runs + 1
  local err = t.dir .. "/err" .. n
  local pid = math.tointeger(tonumber((h.sh(string.format(
    "cd %s && { %s run --socket %s %s >%s/out%d 2>%s & echo $!; }",
    h.shquote(t.dir), h.shquote(h.bin), h.shquote(t.sock), h.shquote(t.path),
    h.shquote(t.dir), n, h.shquote(err))))))
  t.runs[n] = { pid = pid, err = err }
  if nowait then return pid end
  until_true(function()
    if not alive(pid) then error("orch run ended early:\n" .. slurp(err), 0) end
    return h.cli({ "ctl", "--socket", t.sock, "ping" }) == 0
  end, "the control socket")
  return pid
end

-- `orch ctl --socket t.sock ...`, and its services by name.
local ctl, status = u.ctl_cli, u.status

local function all_running(t)
  return until_true(function()
    local s = status(t)
    for _, n in ipairs(NAMES) do
      if not s[n] or s[n].state ~= "running" then return false end
    end
    return s
  end, "every service running")
end

-- The live processes whose command line ends with the argument `mark`
-- (a service's $0).
local function procs_with(mark)
  local found, out = {}, {}
  for _, pid in ipairs(h.orch.proc.list()) do
    local c = slurp("/proc/" .. pid .. "/cmdline")
    if c:sub(-#mark - 2) == "\0" .. mark .. "\0" and alive(pid) then found[pid] = true end
  end
  -- The shell forking its `sleep` has a child with its own command line
  -- until the exec (or its end): that is no second copy of the service.
  for pid in pairs(found) do
    local i = h.orch.proc.info(pid)
    if i and i.state ~= "Z" and not found[i.ppid] then out[#out + 1] = pid end
  end
  table.sort(out)
  return out
end

-- What a failed test of a large fleet says about itself, in about 50
-- lines (the suite shows a failed file's last 60): each orch's log with
-- its routine lines (a service started, stopped by TERM, restarted)
-- counted instead of shown, the record's generation and the journal's.
local function diagnosis(t)
  local out = {}
  for n, r in ipairs(t.runs) do
    local kept, routine = {}, 0
    for line in slurp(r.err):gmatch("[^\n]+") do
      if line:find(": started, pid %d+$") or line:find(": stopped %(killed by TERM%)$")
         or line:find(": restarted$") or line:find(": killed by KILL after") then
        routine = routine + 1
      else
        kept[#kept + 1] = line:sub(1, 200)
      end
    end
    out[#out + 1] = string.format("-- orch %d (pid %s): %d routine lines; the last %d others:", n,
      tostring(r.pid), routine, math.min(#kept, 12))
    for i = math.max(1, #kept - 11), #kept do out[#out + 1] = kept[i] end
  end
  local rec = slurp(t.state)
  local j = slurp(t.sock .. ".journal")
  local jl = {}
  for line in j:gmatch("[^\n]+") do jl[#jl + 1] = line:sub(1, 120) end
  out[#out + 1] = string.format("-- record: %d bytes, %s; journal: %d bytes, %d lines; its first and last 3:",
    #rec, rec:match('^{"version":1,"gen":%d+') or "no gen", #j, #jl)
  for i = 1, math.min(3, #jl) do out[#out + 1] = jl[i] end
  for i = math.max(4, #jl - 2), #jl do out[#out + 1] = jl[i] end
  return table.concat(out, "\n")
end

local function count_of(t, n)
  return math.tointeger(tonumber(slurp(t.dir .. "/" .. n .. ".count"):match("%d+"))) or 0
end

local function record(t)
  local text = slurp(t.state)
  return text ~= "" and cjson.decode(text) or nil
end

-- Whether a journal's text names process pid of `name`: the line of its
-- spawn (a restart journals only that) or a whole entry.
local function journal_names(text, name, pid)
  return text:find("\n" .. name .. "\t" .. pid .. "\t", 1, true) ~= nil
    or text:find('{"name":"' .. name .. '","pid":' .. pid .. ",", 1, true) ~= nil
end

-- What the record and its journal name, as the next orch reads them:
-- name -> pid (false: an entry without a process), and the record.
local function recorded(t)
  local entries, r = u.recorded(t.sock)
  if not entries then return nil end
  local by = {}
  for name, e in pairs(entries) do by[name] = math.tointeger(e.pid) or false end
  return by, r
end

local holds_pipes = h.holds_pipes

local function holder_of(t)
  local r = record(t)
  return r and r.holder and math.tointeger(r.holder.pid)
end

-- The holder, once it holds the log pipes of a, b and c (s: their status).
-- Before a kill -9 whose next orch is to adopt them: the holder is started
-- after the services, and one not bound yet when orch dies is killed by
-- the next orch ("send: no such file or directory"), which restarts what
-- it would have held.
local function held(t, s)
  local holder = until_true(function() return holder_of(t) end, "the holder")
  until_true(function() return holds_pipes(holder, { s.a.pid, s.b.pid, s.c.pid }) end,
    "the holder to hold the three log pipes")
  return holder
end

-- The numbers of the lines process pid wrote into service n's log.
local function lines_of(t, n, pid)
  local nums = {}
  for num in slurp(t.dir .. "/" .. n .. ".log"):gmatch("%f[%d]" .. pid .. " line (%d+)\n") do
    nums[#nums + 1] = tonumber(num)
  end
  return nums
end

-- Each service runs, once, the process it ran before (after: status now).
local function kept_processes(t, before, after)
  for _, n in ipairs(NAMES) do
    assert.are.equal(before[n].pid, after[n].pid, n)
    assert.are.same({ before[n].pid }, procs_with(t.dir .. "/" .. n))
  end
end

local function kill9(pid) os.execute("kill -KILL " .. pid .. " 2>/dev/null") end

-- Kills the process of service `name` (s: a status) and waits for its
-- restart; returns the status then.
local function restart_of(t, s, name)
  kill9(s[name].pid)
  return until_true(function()
    local x = status(t)
    return x[name].state == "running" and x[name].pid ~= s[name].pid and x
  end, name .. " restarted")
end
-- A killed orch is gone once /proc no longer has it: its main thread may be
-- a zombie while its other threads (libuv's threadpool) still exit, and the
-- descriptors they share, the control socket's lock among them, are closed
-- only with the last one.
local function gone(pid) return slurp("/proc/" .. pid .. "/stat") == "" end

-- Ends everything the test started, whatever happened.
local function cleanup(t)
  for _, r in ipairs(t.runs) do
    if alive(r.pid) then kill9(r.pid) end
  end
  -- The cgroup tree of the socket: every service process in it goes, and
  -- the tree an orch killed last could not remove.
  h.remove_cgroup_tree(require("orch.supervisor.cgroup").socket_parent(t.sock))
  -- Every service first: one that runs `orch beat` would create the
  -- heartbeat table again.
  for _, n in ipairs { "a", "b", "c", "hb" } do
    for _, pid in ipairs(procs_with(t.dir .. "/" .. n)) do kill9(pid) end
  end
  for _, pid in ipairs(t.extra) do kill9(pid) end
  local holder = holder_of(t)
  if holder and alive(holder) then
    local c = slurp("/proc/" .. holder .. "/cmdline")
    if c:find("fdholder", 1, true) then kill9(holder) end
  end
  -- Once nothing of the test runs any more, its table goes.
  until_true(function()
    for _, r in ipairs(t.runs) do if alive(r.pid) then return false end end
    return true
  end, "the test's orch processes to end")
  os.execute(string.format("ipcrm -M %d 2>/dev/null", t.key))
  for _, r in ipairs(t.runs) do sanitizer_clean(slurp(r.err), "orch run") end
end

local function shutdown(t, pid)
  local code, _, err = ctl(t, "shutdown")
  assert.are.equal(0, code, err)
  until_true(function() return not alive(pid) end, "orch to exit")
end

local function segment_exists(key)
  local out = h.sh("ipcs -m")
  return out:find(string.format("0x%08x", key), 1, true) ~= nil
end

describe("orch killed with SIGKILL", function()
  it("leaves its services running and logging; the next run adopts them, no duplicate", function()
    local t = new_test()
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = all_running(t)
      -- b has restarted once: its count must survive.
      s1 = restart_of(t, s1, "b")
      assert.are.equal(1, s1.b.restarts)
      -- The record (with its journal: b's restart) names the services and
      -- the holder.
      local holder = until_true(function()
        local by, r = recorded(t)
        if not (r and r.holder and #r.instances == 3) then return false end
        for name, pid in pairs(by) do
          if s1[name].pid ~= pid then return false end
        end
        return math.tointeger(r.holder.pid)
      end, "the state record")
      until_true(function() return holds_pipes(holder, { s1.a.pid, s1.b.pid, s1.c.pid }) end,
        "the holder to hold the three log pipes")
      assert.are.equal("600", (h.sh("stat -c %a " .. h.shquote(t.state))))
      assert.is_true(segment_exists(t.key))

      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      -- Nothing reads their pipes now, yet they write on: no SIGPIPE.
      local at_kill = {}
      for _, n in ipairs(NAMES) do at_kill[n] = count_of(t, n) end
      until_true(function()
        for _, n in ipairs(NAMES) do
          if count_of(t, n) < at_kill[n] + 10 then return false end
        end
        return true
      end, "the services to write on")
      for _, n in ipairs(NAMES) do assert.is_true(alive(s1[n].pid), n .. " died") end
      assert.is_true(alive(holder))

      -- The next run of the same socket adopts them.
      local pid2 = run(t)
      local s2 = all_running(t)
      kept_processes(t, s1, s2)
      assert.are.equal(0, s2.a.restarts)
      assert.are.equal(1, s2.b.restarts)
      local code, out = ctl(t, "status")
      assert.are.equal(0, code)
      for _, n in ipairs(NAMES) do
        assert.truthy(out:find("%f[%w]" .. n .. "%s+running%s+" .. s2[n].pid), out)
      end
      -- Their lines reach the logs again, and none written after the kill
      -- is missing (the pipe kept them while no orch read).
      local goal = {}
      for _, n in ipairs(NAMES) do goal[n] = count_of(t, n) + 5 end
      until_true(function()
        for _, n in ipairs(NAMES) do
          local l = lines_of(t, n, s2[n].pid)
          if (l[#l] or 0) < goal[n] then return false end
        end
        return true
      end, "their lines in the logs")
      for _, n in ipairs(NAMES) do
        local l = lines_of(t, n, s2[n].pid)
        local seen = {}
        for _, x in ipairs(l) do seen[x] = true end
        for x = at_kill[n] + 2, l[#l] do assert.is_true(seen[x], n .. ": line " .. x .. " lost") end
      end
      -- The same holder serves the new orch; the record names it.
      assert.are.equal(holder, holder_of(t))

      -- An adopted process that dies is restarted like any other.
      kill9(s2.a.pid)
      local s3 = until_true(function()
        local s = status(t)
        return s.a.state == "running" and s.a.pid ~= s2.a.pid and s
      end, "a restarted after adoption")
      assert.are.equal(1, s3.a.restarts)

      code, out, err = ctl(t, "stop", "all")
      assert.are.equal(0, code, err)
      for _, n in ipairs(NAMES) do
        assert.is_false(alive(s3[n].pid), n .. " survived stop all")
        assert.are.same({}, procs_with(t.dir .. "/" .. n))
      end
      shutdown(t, pid2)
      -- A clean end: the holder exits, the record and the table go.
      until_true(function() return not alive(holder) end, "the holder to exit")
      assert.are.equal("", slurp(t.state))
      assert.are.equal("", (h.sh("ls " .. h.shquote(t.dir) .. " | grep -e holder -e journal")))
      assert.is_false(segment_exists(t.key))
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("a restart at once costs the journal its new process's line and nothing else; the next orch adopts it", function()
    -- backoff = 0: the restart is spawned by the exit's own action. Its
    -- line is the journal's; the record is not rewritten (it was, whole,
    -- 5 ms after each restart: a sync of its own) and no sync is on its way.
    local t = new_test(false, (POLICY:gsub("backoff = 0%.1,", "backoff = 0, start_limit = false,")))
    -- No sync is on its way (nor held back).
    local function no_sync()
      local code, out = ctl(t, "eval", "local P = require('orch.supervisor').instance('b').sup.persist\n"
        .. "return P.timer == nil and not P.touched")
      return code == 0 and out == "true\n"
    end
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = all_running(t)
      local before = until_true(function()
        if not no_sync() then return false end
        local by, r = recorded(t)
        if not (r and r.holder and #r.instances == 3) then return false end
        for _, n in ipairs(NAMES) do
          if by[n] ~= s1[n].pid then return false end
        end
        return r
      end, "the record to name every service, and no sync on its way")
      local s2 = restart_of(t, s1, "b")
      assert.are.equal(1, s2.b.restarts)
      until_true(function() return (recorded(t) or {}).b == s2.b.pid end, "the record or its journal to name the new b")
      -- A sync may still come for a reason of its own (under load: the
      -- holder's queue was full and b's pipe is sent again); once none is
      -- on its way, the record must be the one from before the restart.
      until_true(no_sync, "no sync on its way")
      local r = record(t)
      assert.are.equal(math.tointeger(before.gen), math.tointeger(r.gen))
      for _, x in ipairs(r.instances) do assert.are.equal(s1[x.name].pid, math.tointeger(x.pid), x.name) end
      assert.is_true(journal_names(slurp(t.sock .. ".journal"), "b", s2.b.pid))
      -- The next orch reads the record and the journal: b is adopted, with
      -- its count.
      until_true(function() return holds_pipes(math.tointeger(r.holder.pid), { s2.b.pid }) end,
        "the holder to hold b's new pipe")
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      local pid2 = run(t)
      local s3 = all_running(t)
      kept_processes(t, s2, s3)
      assert.are.equal(1, s3.b.restarts)
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("a change whose sync is on its way reaches the record although a spawn the journal covers follows at once", function()
    -- x is in backoff (its entry says so); in one loop turn d is started,
    -- x stopped by hand (a sync is armed for it, 5 ms after d's spawn) and
    -- c started: c's spawn line, the journal's, covers c's entry, and the
    -- sync on its way used to be stopped there and never armed again.
    -- Nothing else changes after: x's stop never reached the record.
    local t = new_test(false, [[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stderr:write("sup: ", m, "\n") end }
sup.service{ name = "x", cmd = { "sh", "-c", "exit 3" }, backoff = 600, start_limit = false, log = false }
sup.service{ name = "c", cmd = { "sleep", "600" }, autostart = false, log = false }
sup.service{ name = "d", cmd = { "sleep", "600" }, autostart = false, log = false }
sup.run()
orch.task(function()
  local function recorded_backoff()
    local f = io.open(DIR .. "/ctl.sock.state")
    local text = f and f:read("a") or ""
    if f then f:close() end
    return text:find('"name":"x","state":"backoff"', 1, true)
  end
  while not recorded_backoff() do orch.sleep(0.01) end
  -- d's spawn defers a sync 5 ms (its settle): x's, armed next, is still
  -- on its way when c spawns.
  sup.start("d")
  sup.stop("x")
  sup.start("c")
  io.stderr:write("stopped x, started c\n")
  orch.sleep(1e6)
end)
]])
    local ok, err = pcall(function()
      local pid1 = run(t)
      until_true(function() return slurp(t.runs[1].err):find("stopped x, started c", 1, true) end, "the stop and start")
      local s = status(t)
      assert.are.equal("stopped", s.x.state)
      assert.are.equal("running", s.c.state)
      t.extra[#t.extra + 1] = s.c.pid
      t.extra[#t.extra + 1] = s.d.pid
      until_true(function()
        local r = record(t)
        if not r then return false end
        local x
        for _, e in ipairs(r.instances) do if e.name == "x" then x = e end end
        local j = slurp(t.sock .. ".journal")
        if math.tointeger(tonumber(j:match("^#gen (%d+)\n"))) == math.tointeger(r.gen) then
          for line in j:gmatch("[^\n]+") do
            if line:find('^{"name":"x",') then x = cjson.decode(line) end
          end
        end
        return x and x.state == "stopped" and x.want == false
      end, "the record or its journal to name x stopped")
      shutdown(t, pid1)
    end)
    local diag = not ok and diagnosis(t)
    cleanup(t)
    if not ok then error(diag .. "\n" .. tostring(err), 0) end
  end)

  it("a crash loop's journal of restarts is folded into the record once it holds 16 KiB", function()
    -- b fails at once, again and again (no backoff, no start limit): each
    -- restart journals a line and asks for no sync until the journal holds
    -- 16 KiB (the bound of a small record's); the record is then rewritten
    -- whole (once the restarts leave the sync its 5 ms after a spawn).
    local policy = POLICY:gsub("backoff = 0%.1,", "backoff = 0, start_limit = false,")
      :gsub("cmd = { \"sh\", \"%-c\", %(NOPIPE and 'trap \"\" PIPE; ' or \"\"%) %.%. LOOP,",
            "cmd = { \"sh\", \"-c\", n == \"b\" and \"exit 3\" or LOOP,")
    assert.truthy(policy:find('"exit 3"', 1, true))
    local t = new_test(false, policy)
    local ok, err = pcall(function()
      local pid1 = run(t)
      local gen0 = until_true(function()
        local r = record(t)
        return r and math.tointeger(r.gen)
      end, "a first record")
      local journal = t.sock .. ".journal"
      local grown = false
      until_true(function()
        grown = grown or #slurp(journal) > 8192
        local r = record(t)
        return grown and r and math.tointeger(r.gen) > gen0 and #slurp(journal) < 8192
      end, "the record rewritten during b's restarts")
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1"), 0) end
  end)

  it("a process the record does not name yet is found in the journal: no duplicate", function()
    local t = new_test()
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = all_running(t)
      local holder = held(t, s1)
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      -- As if orch had died right after spawning a: the record does not
      -- name it yet, only the journal line written at its spawn does.
      local r = record(t)
      local rest, ea = {}, nil
      for _, e in ipairs(r.instances) do
        if e.name == "a" then ea = e else rest[#rest + 1] = e end
      end
      r.instances = rest
      h.write(t.state, cjson.encode(r))
      h.write(t.sock .. ".journal", string.format("a\t%d\t%d\t%d\t%s\t1\t%s\n",
        ea.pid, ea.pid_start, ea.restarts, ea.def, tostring(ea.start_time)))
      os.execute("chmod 600 " .. h.shquote(t.state) .. " " .. h.shquote(t.sock .. ".journal"))
      local pid2 = run(t)
      local s2 = all_running(t)
      for _, n in ipairs(NAMES) do
        assert.are.equal(s1[n].pid, s2[n].pid, n)
        assert.are.same({ s1[n].pid }, procs_with(t.dir .. "/" .. n))
      end
      -- Once the new orch wrote its record, the journal is gone.
      until_true(function() return slurp(t.sock .. ".journal") == "" end, "the journal to go")
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("changes in a fleet whose record is large go to the journal; a new orch adopts record and journal", function()
    -- 150 services: a record of more than 16 KiB, which a change no longer
    -- rewrites whole (persist.lua, WHOLE): it is appended to the journal.
    -- While no orch is killed between them, restarts, a stop and a start
    -- are only in the journal; the next orch must see them all.
    local N = 150
    local t = new_test(false, string.format([[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stderr:write("sup: ", m, "\n") end }
for i = 1, %d do
  sup.service{ name = "s" .. i, cmd = { "sleep", "600" }, backoff = 0, start_limit = false }
end
sup.run()
orch.task(function() orch.sleep(1e6) end)
]], N))
    local function fleet(want)   -- status once every service is as `want` says (name -> state)
      return until_true(function()
        local s = status(t)
        for name, e in pairs(s) do
          if e.pid then t.extra[#t.extra + 1] = e.pid end
          if e.state ~= (want[name] or "running") then return false end
        end
        return s
      end, "the fleet's states")
    end
    local journal = t.sock .. ".journal"
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = fleet{}
      until_true(function()
        local r = record(t)
        return r and #r.instances == N
      end, "the record to name every service")
      local before = record(t)
      -- s75 killed three times, s10 stopped, s20 stopped and started again.
      local s = s1
      for _ = 1, 3 do
        local old = s.s75.pid
        kill9(old)
        s = until_true(function()
          local x = status(t)
          return x.s75.state == "running" and x.s75.pid ~= old and x
        end, "s75 restarted")
        t.extra[#t.extra + 1] = s.s75.pid
      end
      -- s10 with a restart first.
      local old10 = s.s10.pid
      kill9(old10)
      until_true(function()
        local x = status(t)
        return x.s10.state == "running" and x.s10.pid ~= old10
      end, "s10 restarted")
      assert.are.equal(0, (ctl(t, "stop", "s10")))
      assert.are.equal(0, (ctl(t, "stop", "s20")))
      assert.are.equal(0, (ctl(t, "start", "s20")))
      local s2 = fleet{ s10 = "stopped" }
      assert.are.equal(3, s2.s75.restarts)
      -- What changed is in the journal (the new s75's line, s10 stopped,
      -- s20's new process), not in a rewritten record. s20's stop is not
      -- asked for: a sync that comes after its start too rightly writes
      -- only where s20 ended up.
      until_true(function()
        local j = slurp(journal)
        return journal_names(j, "s75", s2.s75.pid) and j:find('{"name":"s10","state":"stopped"', 1, true)
          and journal_names(j, "s20", s2.s20.pid)
      end, "the journal to name the changes")
      local gen = math.tointeger(before.gen)
      assert.are.equal(gen, math.tointeger(record(t).gen))
      assert.matches("^#gen " .. gen .. "\n", slurp(journal))
      local holder = holder_of(t)
      until_true(function() return holds_pipes(holder, { s2.s75.pid, s2.s20.pid }) end,
        "the holder to hold the new pipes")
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      local pid2 = run(t)
      local s3 = fleet{ s10 = "stopped" }
      for name, e in pairs(s3) do
        if name ~= "s10" then assert.are.equal(s2[name].pid, e.pid, name) end
      end
      assert.are.equal(3, s3.s75.restarts)
      assert.are.equal(1, s3.s10.restarts)
      -- What the new orch wrote (its record, and its journal once the
      -- record is large again) is as good: a third orch adopts the same.
      until_true(function()
        local r = record(t)
        return r and math.tointeger(r.orch.pid) == pid2 and r.holder
          and holds_pipes(math.tointeger(r.holder.pid), { s3.s75.pid, s3.s20.pid, s3.s1.pid, s3["s" .. N].pid })
      end, "the new orch's record and holder")
      local s4 = restart_of(t, s3, "s75")
      t.extra[#t.extra + 1] = s4.s75.pid
      local holder2 = holder_of(t)
      until_true(function() return holds_pipes(holder2, { s4.s75.pid }) end, "the holder to hold the new pipe")
      until_true(function() return journal_names(slurp(journal), "s75", s4.s75.pid) or
        slurp(t.state):find('"pid":' .. s4.s75.pid, 1, true) end, "the record or journal to name the new s75")
      kill9(pid2)
      until_true(function() return gone(pid2) end, "orch to die")
      local pid3 = run(t)
      local s5 = fleet{ s10 = "stopped" }
      for name, e in pairs(s5) do
        if name ~= "s10" then assert.are.equal(s4[name].pid, e.pid, name) end
      end
      assert.are.equal(4, s5.s75.restarts)
      shutdown(t, pid3)
    end)
    local diag = not ok and diagnosis(t)
    cleanup(t)
    if not ok then error(diag .. "\n" .. tostring(err), 0) end
  end)

  -- A fleet of N services (a record of more than 16 KiB: changes go to the
  -- journal, as above); DIR/n, when there, says how many are defined.
  local function large_fleet(N)
    return new_test(false, string.format([[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stderr:write("sup: ", m, "\n") end }
local f = io.open(DIR .. "/n")
local n = f and tonumber(f:read("l")) or %d
if f then f:close() end
for i = 1, n do
  sup.service{ name = "s" .. i, cmd = { "sleep", "600" }, backoff = 0, start_limit = false }
end
sup.run()
orch.task(function() orch.sleep(1e6) end)
]], N))
  end

  -- Every service's status once each is as `want` says (name -> state;
  -- default running, false: not defined), its pids kept for the cleanup.
  -- The client gives up on a reply after 5 s, and the wait after 60 s: an
  -- orch whose loop is blocked fails the test instead of hanging it.
  local function fleet_within(t, want)
    local deadline, last = os.time() + 60, "no reply from orch (is its loop blocked?)"
    while os.time() < deadline do
      local code, out = ctl(t, "--timeout", "5", "--json", "status")
      if code == 0 or code == 3 then
        local by, wrong = {}, {}
        for _, e in ipairs(cjson.decode(out).services) do
          e.pid, e.restarts = math.tointeger(e.pid) or e.pid, math.tointeger(e.restarts) or e.restarts
          by[e.name] = e
          if e.pid then t.extra[#t.extra + 1] = e.pid end
          if e.state ~= (want[e.name] or "running") then wrong[#wrong + 1] = e.name .. " " .. e.state end
        end
        for name, w in pairs(want) do
          if (w == false) ~= (by[name] == nil) then wrong[#wrong + 1] = name .. (w == false and " defined" or " missing") end
        end
        if #wrong == 0 then return by end
        last = table.concat(wrong, ", ")
      end
      h.pause(0.05)
    end
    error("timed out waiting for the fleet's states: " .. last, 2)
  end

  it("a service a reload removed is gone through the journal: the next orch after a kill -9 does not resume it", function()
    -- s150 restarted twice, then removed by a reload: the journal says so
    -- at once (its "gone" line; nothing else changes before the kill), the
    -- record on file still names s150. The next orch, given the first
    -- script again (s150 defined once more, as after a revert), starts a
    -- new s150 with no history (a journal that still named it as stopped
    -- by the reload would keep it stopped), and adopts the rest.
    local N = 150
    local t = large_fleet(N)
    local journal = t.sock .. ".journal"
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s = fleet_within(t, {})
      until_true(function()
        local r = record(t)
        return r and #r.instances == N
      end, "the record to name every service")
      local old = {}
      for _ = 1, 2 do
        old[#old + 1] = s.s150.pid
        kill9(s.s150.pid)
        s = until_true(function()
          local x = fleet_within(t, {})
          return x.s150.pid ~= old[#old] and x
        end, "s150 restarted")
      end
      old[#old + 1] = s.s150.pid
      assert.are.equal(2, s.s150.restarts)
      local gen = math.tointeger(record(t).gen)
      h.write(t.dir .. "/n", tostring(N - 1))
      local code, out = ctl(t, "--timeout", "60", "reload")
      assert.are.equal(0, code, out)
      assert.matches("stopped: s150\n", out, 1, true)
      local s1 = fleet_within(t, { s150 = false })
      until_true(function() return not alive(old[#old]) end, "the removed s150 to end")
      until_true(function() return slurp(journal):find('{"name":"s150","gone":true}', 1, true) end,
        "the journal's gone line")
      -- Only the journal says it: the record was not written whole.
      assert.are.equal(gen, math.tointeger(record(t).gen))
      assert.truthy(slurp(t.state):find('"name":"s150"', 1, true))
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      os.remove(t.dir .. "/n")
      local pid2 = run(t)
      local s2 = fleet_within(t, {})
      for name, e in pairs(s1) do assert.are.equal(e.pid, s2[name].pid, name) end
      for _, pid in ipairs(old) do assert.are_not.equal(pid, s2.s150.pid) end
      assert.are.equal(0, s2.s150.restarts)
      local e = slurp(t.runs[2].err)
      assert.is_nil(e:find("s150: adopted", 1, true), e)
      assert.truthy(e:find("s1: adopted pid " .. s1.s1.pid, 1, true), e)
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("a FIFO, a symbolic link or another user's file at the journal's path is never waited on nor followed", function()
    -- Planted where orch appends the journal (orch's uid or root could: the
    -- directory is private), each in turn while a fleet with a large record
    -- runs; a restart then has a line to journal. orch must answer, say so
    -- once, write the record whole instead (and remove what was planted),
    -- and journal again at the next change. The next orch after a kill -9
    -- adopts every process.
    local N = 150
    local t = large_fleet(N)
    local journal = t.sock .. ".journal"
    local target = t.dir .. "/target"
    h.write(target, "root's file\n")
    os.execute("chmod 600 " .. h.shquote(target))
    -- Each made beside it, then renamed over it (orch may append at any
    -- time: a removal first would race with it).
    local plants = {
      { "mkfifo -m 600 %s", "is a FIFO (refused, never waited on)" },
      { "ln -s target %s", "is a symbolic link (never followed)" },
      { "touch %s && chmod 600 %s && chown 65534 %s", "is a file of another user (refused)" },
    }
    local planted = t.dir .. "/planted"
    -- The journal's text once it is orch's regular file again (reading the
    -- FIFO would block the test itself).
    local function journal_text()
      return h.sh("stat -c %F " .. h.shquote(journal) .. " 2>/dev/null"):match("^regular") and slurp(journal) or ""
    end
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s = fleet_within(t, {})
      until_true(function()
        local r = record(t)
        return r and #r.instances == N
      end, "the record to name every service")
      local function restart(name)
        local old = s[name].pid
        kill9(old)
        s = until_true(function()
          local x = fleet_within(t, {})
          return x[name].pid ~= old and x
        end, name .. " restarted")
      end
      for i, p in ipairs(plants) do
        assert(os.execute((p[1]:gsub("%%s", h.shquote(planted))) .. " && mv -T " .. h.shquote(planted) .. " "
          .. h.shquote(journal)))
        restart("s75")
        -- The record names the new process (written whole instead; or the
        -- journal, when the refusal came with an earlier line), and what
        -- was planted is gone.
        until_true(function() return slurp(t.state):find('"pid":' .. s.s75.pid, 1, true)
          or journal_text():find('"pid":' .. s.s75.pid, 1, true) end, "the record to name the new s75")
        until_true(function()
          local kind = h.sh("stat -c '%F %u' " .. h.shquote(journal) .. " 2>/dev/null")
          return kind == "" or kind:match("^regular.* 0$")
        end, "what was planted to go")
        -- The next change is journaled again.
        restart("s76")
        until_true(function() return journal_names(journal_text(), "s76", s.s76.pid) end,
          "the journal to name the new s76")
        local e = slurp(t.runs[1].err)
        local _, failed = e:gsub("cannot write the state journal", "")
        local _, again = e:gsub("the state journal is written again", "")
        assert.are.same({ i, i }, { failed, again }, e)
        assert.truthy(e:find("cannot write the state journal: private.append: " .. journal .. " " .. p[2]
          .. "; the state record is written whole instead", 1, true), e)
      end
      assert.are.equal("root's file\n", slurp(target))
      local holder = holder_of(t)
      until_true(function() return holds_pipes(holder, { s.s75.pid, s.s76.pid }) end,
        "the holder to hold the new pipes")
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      local pid2 = run(t)
      local s2 = fleet_within(t, {})
      for name, e in pairs(s) do assert.are.equal(e.pid, s2[name].pid, name) end
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("a journal older than the record (orch killed between the two) is not replayed", function()
    local t = new_test()
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = all_running(t)
      local holder = held(t, s1)
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      -- The journal of the generation before the record's, as a kill right
      -- after the record's write leaves it: replayed, it would remove a
      -- and give b a process that is gone.
      local gen = math.tointeger(record(t).gen)
      assert.is_true(gen and gen > 0)
      h.write(t.sock .. ".journal", string.format('#gen %d\n{"name":"a","gone":true}\nb\t%d\t1\t0\tx\t1\t1\n',
        gen - 1, 999999))
      os.execute("chmod 600 " .. h.shquote(t.sock .. ".journal"))
      local pid2 = run(t)
      local s2 = all_running(t)
      for _, n in ipairs(NAMES) do
        assert.are.equal(s1[n].pid, s2[n].pid, n)
        assert.are.same({ s1[n].pid }, procs_with(t.dir .. "/" .. n))
      end
      until_true(function() return slurp(t.sock .. ".journal") == "" end, "the old journal to go")
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("a large start journals each batch of launches before it yields to the loop", function()
    -- 40 services in one sup.start (sup.run), which yields every few
    -- launches; the first one's on_start hook runs in a task of its own
    -- during the first yield, when the journal (the record is not
    -- rewritten during a large start) must already name it.
    local t = new_test(false, [[
local sup = require "orch.supervisor"
sup.configure{ log = false }
for i = 1, 40 do
  sup.service{ name = "j" .. i, cmd = { "sleep", "600" }, log = false,
    on_start = i == 1 and function()
      local f = io.open(DIR .. "/ctl.sock.journal")
      local text = f and f:read("a") or ""
      if f then f:close() end
      local out = io.open(DIR .. "/seen", "w")
      out:write("journal:", text)
      out:close()
    end or nil }
end
sup.run()
orch.task(function() orch.sleep(1e6) end)
]])
    local ok, err = pcall(function()
      local pid = run(t)
      local seen = until_true(function() local s = slurp(t.dir .. "/seen"); return s ~= "" and s end,
        "the first service's on_start")
      -- (After the line naming the generation of the record it follows.)
      assert.matches("^journal:#gen %d+\nj1\t%d+\t%d+\t", seen)
      shutdown(t, pid)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1"), 0) end
  end)

  it("the processes a killed orch left are adopted in batches, with the loop turning between them", function()
    -- 40 services; a probe task notes, at each turn of the loop, how many
    -- have a process. The second orch adopts the first one's processes:
    -- seeing some but not all of them adopted at a turn means the
    -- adoption yielded (in one resume, thousands of them ran past the Lua
    -- time budget on a loaded machine).
    local t = new_test(false, [[
local sup = require "orch.supervisor"
sup.configure{ log = false }
for i = 1, 40 do sup.service{ name = "a" .. i, cmd = { "sleep", "600" }, log = false } end
orch.task(function()
  local partial
  for _ = 1, 100000 do
    orch.sleep(0)
    local n = 0
    for _, st in ipairs(sup.status()) do if st.pid then n = n + 1 end end
    if n > 0 and n < 40 then partial = partial or n end
    if n == 40 then break end
  end
  local out = io.open(DIR .. "/seen" .. orch.getpid(), "w")
  out:write(tostring(partial))
  out:close()
end)
sup.run()
orch.task(function() orch.sleep(1e6) end)
]])
    local ok, err = pcall(function()
      local pid1 = run(t)
      local before = until_true(function()
        local by = status(t)
        for i = 1, 40 do if not (by["a" .. i] and by["a" .. i].pid) then return false end end
        return by
      end, "40 running")
      until_true(function() return slurp(t.dir .. "/seen" .. pid1) ~= "" end, "the first probe")
      kill9(pid1)
      until_true(function() return gone(pid1) end, "the first orch gone")
      local pid2 = run(t)
      local seen = until_true(function() local s = slurp(t.dir .. "/seen" .. pid2); return s ~= "" and s end,
        "the second probe")
      assert.is_truthy(math.tointeger(tonumber(seen)), "no turn of the loop saw the adoption part-done: " .. seen)
      local after = status(t)
      for i = 1, 40 do assert.are.equal(before["a" .. i].pid, after["a" .. i].pid) end
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("killed in the middle of its own adoption: the next orch adopts every process with its log pipe", function()
    -- The second orch sends itself SIGKILL once it has adopted part of the
    -- fleet (its adoption yields every few services, and syncs of the
    -- state record run meanwhile). What it wrote and told the holder so far
    -- must still name the processes it had not adopted yet, with their log
    -- pipes: the third orch adopts all of them, same pids, none restarted.
    local N = 150
    local t = new_test(false, string.format([[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stderr:write("sup: ", m, "\n") end }
for i = 1, %d do
  sup.service{ name = "s" .. i, cmd = { "sleep", "600" }, backoff = 0, start_limit = false }
end
-- Told to (DIR/kill): SIGKILL to this orch in the middle of its adoption.
if os.remove(DIR .. "/kill") then
  orch.task(function()
    while true do
      -- Every loop turn (a yield, not a wait on time): the adoption goes
      -- 16 services a turn, and the window to catch is a few turns wide.
      orch.sleep(0)
      local n = 0
      for _, st in ipairs(sup.status()) do if st.pid then n = n + 1 end end
      if n >= %d and n < %d then
        io.stderr:write("killed at ", n, " adopted\n")
        os.execute("kill -KILL " .. orch.getpid())   -- (orch.kill refuses orch's own pid)
      end
    end
  end)
end
sup.run()
orch.task(function() orch.sleep(1e6) end)
]], N, N // 2, N))
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = fleet_within(t, {})
      until_true(function()
        local r = record(t)
        return r and #r.instances == N
      end, "the record to name every service")
      local holder = holder_of(t)
      local pids = {}
      for _, e in pairs(s1) do pids[#pids + 1] = e.pid end
      until_true(function() return holds_pipes(holder, pids) end, "the holder to hold every pipe")
      kill9(pid1)
      until_true(function() return gone(pid1) end, "the first orch to die")
      h.write(t.dir .. "/kill", "")
      local pid2 = run(t, true)
      until_true(function() return gone(pid2) end, "the second orch to kill itself")
      assert.matches("killed at %d+ adopted", slurp(t.runs[2].err))
      local pid3 = run(t)
      local s3 = fleet_within(t, {})
      for name, e in pairs(s3) do
        assert.are.equal(s1[name].pid, e.pid, name)
        assert.are.equal(0, e.restarts, name)
      end
      assert.is_nil(slurp(t.runs[3].err):find("lost", 1, true), slurp(t.runs[3].err))
      assert.are.equal(holder, holder_of(t))
      assert.is_true(holds_pipes(holder, pids))
      shutdown(t, pid3)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err2"):sub(-3000) .. slurp(t.dir .. "/err3"):sub(-3000), 0) end
  end)

  it("killed while its fd holder is replaced, with the record naming the old one: the next orch finds the new one", function()
    -- On a full disk: the holder is killed, orch starts another and hands
    -- it every pipe, but cannot write the record that names it. orch is
    -- killed then. The next orch (the space back) asks the holder bound at
    -- the holder's path, whichever the record names: every service is
    -- adopted with its log pipe and writes on into its log, and the new
    -- holder is kept (a third one could not bind the path it holds).
    local t = new_test()
    local mnt = t.dir .. "/mnt"
    assert(os.execute("mkdir " .. mnt .. " && mount -t tmpfs -o size=256k,mode=0700 tmpfs " .. mnt))
    t.sock = mnt .. "/ctl.sock"
    t.state = t.sock .. ".state"
    -- The fd holder serving the path `path` (its command line names it).
    local function holder_at(path)
      for _, pid in ipairs(h.orch.proc.list()) do
        local c = slurp("/proc/" .. pid .. "/cmdline")
        if c:find("\0fdholder\0" .. path .. "\0", 1, true) and alive(pid) then return pid end
      end
    end
    local full = false
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = all_running(t)
      local pids = { s1.a.pid, s1.b.pid, s1.c.pid }
      local h1 = until_true(function() return holder_of(t) end, "the holder")
      until_true(function() return holds_pipes(h1, pids) end, "the holder to hold the three pipes")
      full = true
      os.execute("dd if=/dev/zero of=" .. mnt .. "/filler bs=4096 2>/dev/null")
      os.execute("dd if=/dev/zero of=" .. mnt .. "/fillerb bs=1 2>/dev/null")
      assert.are.equal("0", h.sh("stat -f -c %a " .. mnt), "free blocks left")
      kill9(h1)
      local h2 = until_true(function()
        local p = holder_at(t.sock .. ".holder")
        return p and p ~= h1 and holds_pipes(p, pids) and p
      end, "a new holder with the three pipes")
      until_true(function() return slurp(t.runs[1].err):find("cannot write the state record", 1, true) end,
        "the record's write to fail")
      assert.are.equal(h1, holder_of(t))
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      os.remove(mnt .. "/filler")
      os.remove(mnt .. "/fillerb")
      full = false
      local before = {}
      for _, n in ipairs(NAMES) do before[n] = count_of(t, n) end
      local pid2 = run(t)
      local s2 = all_running(t)
      for _, n in ipairs(NAMES) do
        assert.are.equal(s1[n].pid, s2[n].pid, n)
        assert.are.equal(0, s2[n].restarts, n)
      end
      local err2 = slurp(t.runs[2].err)
      assert.is_nil(err2:find("lost", 1, true), err2)
      assert.is_nil(err2:find("fd holder", 1, true), err2)
      until_true(function() return holder_of(t) == h2 end, "the record to name the new holder")
      assert.is_true(holds_pipes(h2, pids))
      -- Their output is read again: lines written after the adoption reach
      -- the log.
      for _, n in ipairs(NAMES) do
        until_true(function()
          local nums = lines_of(t, n, s2[n].pid)
          return #nums > 0 and nums[#nums] > before[n]
        end, n .. " logging again")
      end
      shutdown(t, pid2)
    end)
    if full then
      os.remove(mnt .. "/filler")
      os.remove(mnt .. "/fillerb")
    end
    cleanup(t)
    if not os.execute("umount " .. mnt) then os.execute("umount -l " .. mnt) end
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("after `orch ctl reexec` too: the same holder, and a kill -9 then loses nothing", function()
    local t = new_test()
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = all_running(t)
      local holder = until_true(function() return holder_of(t) end, "the holder")
      local code, _, e = ctl(t, "reexec")
      assert.are.equal(0, code, e)
      until_true(function()
        local c, o = ctl(t, "eval", "return package.loaded['orch.ctl'].inherited() ~= nil")
        return c == 0 and o == "true\n"
      end, "the new image")
      local s2 = all_running(t)
      for _, n in ipairs(NAMES) do assert.are.equal(s1[n].pid, s2[n].pid) end
      -- The new image kept the holder (no second one) and its pipes.
      assert.are.equal(holder, holder_of(t))
      local holders = 0
      for _, pid in ipairs(h.orch.proc.list()) do
        local c = slurp("/proc/" .. pid .. "/cmdline")
        if c:find("fdholder\0" .. t.sock .. ".holder\0", 1, true) and alive(pid) then holders = holders + 1 end
      end
      assert.are.equal(1, holders)
      until_true(function() return holds_pipes(holder, { s2.a.pid, s2.b.pid, s2.c.pid }) end,
        "the holder to hold the three log pipes")
      -- The new image keeps the record and the holder current: a restart
      -- of b reaches both.
      kill9(s2.b.pid)
      local s3 = until_true(function()
        local s = status(t)
        return s.b.state == "running" and s.b.pid ~= s2.b.pid and s
      end, "b restarted")
      until_true(function()
        local by = recorded(t)
        return by and by.b == s3.b.pid
      end, "the record (or its journal) to name the new b")
      until_true(function() return holds_pipes(holder, { s3.b.pid }) end, "the holder to hold b's new pipe")
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      local pid2 = run(t)
      local s4 = all_running(t)
      for _, n in ipairs(NAMES) do assert.are.equal(s3[n].pid, s4[n].pid) end
      assert.are.equal(1, s4.b.restarts)
      shutdown(t, pid2)
      until_true(function() return not alive(holder) end, "the holder to exit")
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("stops what it cannot adopt (the holder died too): no duplicate", function()
    local t = new_test(true)
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = all_running(t)
      local holder = held(t, s1)
      kill9(pid1)
      kill9(holder)
      until_true(function() return gone(pid1) and not alive(holder) end, "orch and the holder to die")
      -- The services ignore SIGPIPE: they run on without a reader.
      for _, n in ipairs(NAMES) do assert.is_true(alive(s1[n].pid)) end
      local pid2 = run(t)
      local s2 = until_true(function()
        local s = status(t)
        for _, n in ipairs(NAMES) do
          if s[n].state ~= "running" or s[n].pid == s1[n].pid then return false end
        end
        return s
      end, "fresh services")
      for _, n in ipairs(NAMES) do
        assert.is_false(alive(s1[n].pid), n .. ": the old process survived")
        assert.are.same({ s2[n].pid }, procs_with(t.dir .. "/" .. n))
      end
      assert.truthy(slurp(t.runs[2].err):find("log pipe", 1, true))
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  -- a and b write lines as in POLICY; b starts only when asked (and a too
  -- without AUTO_A). START_B_AND_DIE, through `orch ctl eval`, starts b and
  -- kills its orch in the same resume of one task: no sync of the record
  -- or the holder has run since b's spawn.
  local function late_policy(auto_a)
    return string.format("local AUTO_A = %s\n", tostring(auto_a)) .. [[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stderr:write("sup: ", m, "\n") end }
local LOOP = 'i=0; while :; do i=$((i+1)); echo "$$ line $i"; echo $i > "$0.count"; sleep 0.02; done'
for _, n in ipairs { "a", "b" } do
  sup.service{ name = n, log = { dir = DIR }, backoff = 0.1, autostart = n == "a" and AUTO_A,
    cmd = { "sh", "-c", (NOPIPE and 'trap "" PIPE; ' or "") .. LOOP, DIR .. "/" .. n } }
end
sup.run()
orch.task(function() orch.sleep(1e6) end)
]]
  end
  local START_B_AND_DIE = 'require("orch.supervisor").start("b") os.execute("kill -KILL " .. orch.getpid())'

  -- a running, and its pipe with the holder: a's pid and the holder's.
  local function a_held(t)
    local a1 = until_true(function()
      local s = status(t)
      return s.a.state == "running" and s.a.pid
    end, "a running")
    local holder = until_true(function() return holder_of(t) end, "the holder")
    until_true(function() return holds_pipes(holder, { a1 }) end, "the holder to hold a's pipe")
    return a1, holder
  end

  -- Kills orch right after it started b; b's one process (none when b
  -- died of SIGPIPE: no holder held its pipe).
  local function start_b_and_die(t, pid1)
    ctl(t, "eval", START_B_AND_DIE)
    until_true(function() return gone(pid1) end, "orch to die")
    local b = procs_with(t.dir .. "/b")
    assert.are.equal(1, #b, "b's processes")
    return b[1]
  end

  it("a service started just before the kill (no sync yet) keeps its log pipe and is adopted", function()
    -- Its pipe goes to the holder at its spawn, not at the next sync
    -- (5 ms to 0.5 s later): b writes on while no orch reads (it would die
    -- of SIGPIPE otherwise), and the next orch adopts it with its pipe.
    local t = new_test(false, late_policy(true))
    local ok, err = pcall(function()
      local pid1 = run(t)
      local a1, holder = a_held(t)
      local b1 = start_b_and_die(t, pid1)
      until_true(function() return holds_pipes(holder, { a1, b1 }) end, "the holder to hold b's pipe")
      local at_kill = count_of(t, "b")
      until_true(function() return count_of(t, "b") >= at_kill + 10 end, "b to write on")
      local pid2 = run(t)
      local s2 = until_true(function()
        local s = status(t)
        return s.a.state == "running" and s.b.state == "running" and s
      end, "a and b running")
      assert.are.equal(a1, s2.a.pid)
      assert.are.equal(b1, s2.b.pid)
      assert.are.equal(0, s2.b.restarts)
      assert.are.same({ b1 }, procs_with(t.dir .. "/b"))
      local err2 = slurp(t.runs[2].err)
      assert.is_nil(err2:find("log pipe", 1, true), err2)
      -- Its lines reach its log again.
      local goal = count_of(t, "b") + 5
      until_true(function()
        local l = lines_of(t, "b", b1)
        return (l[#l] or 0) >= goal
      end, "b's lines in its log")
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("a pipe that reached no holder before the kill: restarted once, and the log says why truthfully", function()
    -- NOPIPE: b outlives the loss of its pipe's reader. First with no
    -- holder at all (b is the first service; the holder starts at the
    -- first sync), then with a holder that could not take b's pipe (it is
    -- stopped and its queue is full: the pipe waits for the next sync).
    for _, case in ipairs { "none", "unsent" } do
      local t = new_test(true, late_policy(case == "unsent"))
      local holder
      local ok, err = pcall(function()
        local pid1 = run(t)
        if case == "unsent" then
          local _
          _, holder = a_held(t)
          os.execute("kill -STOP " .. holder)
          -- Datagrams of another process fill its queue (it reads them
          -- once continued, and ignores them).
          h.run(function()
            local d = assert(h.orch.dgram{ unix = string.format("@orch-spec-kill9-fill-%d-%d", h.orch.getpid(),
              math.random(1, 1e9)) })
            for _ = 1, 1000 do
              if not d:send("{}", t.sock .. ".holder") then break end
            end
            d:close()
          end)
        end
        local b1 = start_b_and_die(t, pid1)
        if holder then os.execute("kill -CONT " .. holder) end
        local pid2 = run(t)
        local s2 = until_true(function()
          local s = status(t)
          return s.b.state == "running" and s.b.pid ~= b1 and s
        end, "a new b")
        assert.is_false(alive(b1), "b's old process survived")
        assert.are.same({ s2.b.pid }, procs_with(t.dir .. "/b"))
        local err2 = slurp(t.runs[2].err)
        local why = case == "none" and "b: its log pipe had not reached an fd holder (none was running yet): restarting"
          or "b: its log pipe had not reached the fd holder yet (orch was killed first): restarting"
        assert.truthy(err2:find(why, 1, true), err2)
        assert.is_nil(err2:find("lost", 1, true), err2)
        shutdown(t, pid2)
      end)
      if holder then os.execute("kill -CONT " .. holder .. " 2>/dev/null") end
      cleanup(t)
      if not ok then error(case .. ": " .. tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
    end
  end)

  -- Sets the holder's soft fd limit to 3 (every fd it could get is taken);
  -- returns the limit it had, to put back.
  local function lower_fd_limit(holder)
    local soft = slurp("/proc/" .. holder .. "/limits"):match("Max open files%s+(%d+)")
    assert.is_true(os.execute("prlimit --pid " .. holder .. " --nofile=3:"))
    return soft
  end

  it("says on orch's stderr which log pipes its fd holder could not hold (its fd limit); the next orch restarts those", function()
    -- The holder at an fd limit below the descriptors it has: the next
    -- put's pipe is cut from the datagram (MSG_CTRUNC) and orch, whose send
    -- succeeded, believes it held. The holder says so, with the name; after
    -- a kill -9 the next orch adopts a (held) and restarts d (not held).
    local t = new_test(false, [[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stderr:write("sup: ", m, "\n") end }
sup.service{ name = "a", cmd = { "sleep", "600" }, log = { dir = DIR } }
sup.service{ name = "d", cmd = { "sleep", "600" }, log = { dir = DIR }, autostart = false }
sup.run()
orch.task(function() orch.sleep(1e6) end)
]])
    local ok, err = pcall(function()
      local pid1 = run(t)
      local a1, holder = a_held(t)
      t.extra[#t.extra + 1] = a1
      -- Its soft limit only, put back once it has refused d's pipe: after
      -- the kill it needs fds to watch its services.
      local soft = lower_fd_limit(holder)
      local code, _, cerr = ctl(t, "start", "d")
      assert.are.equal(0, code, cerr)
      local s = status(t)
      t.extra[#t.extra + 1] = s.d.pid
      local line = until_true(function()
        return slurp(t.runs[1].err):match("orch fdholder: put: [^\n]*")
      end, "the holder to say what it could not hold")
      assert.are.equal("orch fdholder: put: 1 of 1 pipes not held (their descriptors were cut from the "
        .. "datagram: the holder's fd limit): d", line)
      assert.is_false(holds_pipes(holder, { s.d.pid }))
      assert.is_true(os.execute("prlimit --pid " .. holder .. " --nofile=" .. soft .. ":"))
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      local pid2 = run(t)
      local s2 = until_true(function()
        local x = status(t)
        return x.a and x.d and x.a.state == "running" and x.d.state == "running" and x.d.pid ~= s.d.pid and x
      end, "a adopted, d restarted")
      t.extra[#t.extra + 1] = s2.d.pid
      assert.are.equal(a1, s2.a.pid)
      assert.truthy(slurp(t.runs[2].err):find("d: its log pipe had not reached the fd holder", 1, true))
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. diagnosis(t), 0) end
  end)

  it("a holder at its fd limit when its orch dies keeps the pipes it cannot watch; the next orch adopts them", function()
    -- Without an orch the holder watches each service (a pidfd) to drop the
    -- pipes of those gone; a watch it cannot open for want of fds is no end:
    -- dropping the pipe would kill the live service at its next write.
    local t = new_test(true, [[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stderr:write("sup: ", m, "\n") end }
sup.service{ name = "a", cmd = { "sh", "-c", 'while :; do echo "$$ line"; sleep 0.02; done', DIR .. "/a" },
  log = { dir = DIR } }
sup.run()
orch.task(function() orch.sleep(1e6) end)
]])
    local ok, err = pcall(function()
      local pid1 = run(t)
      local a1, holder = a_held(t)
      local soft = lower_fd_limit(holder)
      kill9(pid1)
      until_true(function() return slurp(t.runs[1].err):find("orch fdholder: cannot watch 1 services", 1, true) end,
        "the holder to say it cannot watch a")
      assert.is_true(alive(holder), "the holder ended")
      assert.is_true(holds_pipes(holder, { a1 }))
      assert.is_true(os.execute("prlimit --pid " .. holder .. " --nofile=" .. soft .. ":"))
      local pid2 = run(t)
      local s2 = until_true(function()
        local x = status(t)
        return x.a and x.a.state == "running" and x
      end, "a running again")
      assert.are.equal(a1, s2.a.pid)
      assert.are.same({ a1 }, procs_with(t.dir .. "/a"))
      assert.is_nil(slurp(t.runs[2].err):find("a: its log pipe", 1, true), slurp(t.runs[2].err))
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. diagnosis(t), 0) end
  end)

  it("a holder that does not answer is killed and replaced; what it held is restarted, once", function()
    local t = new_test(true)
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = all_running(t)
      local holder = held(t, s1)
      os.execute("kill -STOP " .. holder)
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      local pid2 = run(t)
      local s2 = until_true(function()
        local s = status(t)
        for _, n in ipairs(NAMES) do
          if s[n].state ~= "running" or s[n].pid == s1[n].pid then return false end
        end
        return s
      end, "fresh services")
      assert.is_false(alive(holder))
      for _, n in ipairs(NAMES) do
        assert.is_false(alive(s1[n].pid))
        assert.are.same({ s2[n].pid }, procs_with(t.dir .. "/" .. n))
      end
      assert.truthy(slurp(t.runs[2].err):find("fd holder (pid " .. holder .. "): no answer within 5 s: killing it", 1, true))
      -- A new holder holds the new pipes.
      local holder2 = until_true(function()
        local hp = holder_of(t)
        return hp and hp ~= holder and hp
      end, "a new holder")
      until_true(function() return holds_pipes(holder2, { s2.a.pid, s2.b.pid, s2.c.pid }) end,
        "the new holder to hold the new pipes")
      shutdown(t, pid2)
      until_true(function() return not alive(holder2) end, "the new holder to exit")
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("a process at SOCKET.holder that never answers: not waited for unless it is an fd holder of orch's, which is killed", function()
    -- The record names a holder that is gone; what answers at its path is
    -- (fake) another program of orch's uid that never replies, or (silent)
    -- the killed orch's own holder, stopped. The one is left alone at once,
    -- the other waited for and killed; either way the services whose pipes
    -- are lost are restarted, once.
    for _, case in ipairs { "fake", "silent" } do
      local t = new_test(true)
      local ok, err = pcall(function()
        local pid1 = run(t)
        local s1 = all_running(t)
        local holder = until_true(function() return holder_of(t) end, "the holder")
        t.extra[#t.extra + 1] = holder
        until_true(function() return holds_pipes(holder, { s1.a.pid, s1.b.pid, s1.c.pid }) end,
          "the holder to hold the three log pipes")
        local silent
        if case == "fake" then
          kill9(pid1)
          kill9(holder)
          until_true(function() return gone(pid1) and not alive(holder) end, "orch and the holder to die")
          os.remove(t.sock .. ".holder")
          h.write(t.dir .. "/fake.lua", string.format([[
local d = assert(orch.dgram{ unix = %q })
io.stderr:write("bound\n")
orch.sleep(1e6)
]], t.sock .. ".holder"))
          silent = math.tointeger(tonumber((h.sh(string.format("{ %s run --no-socket %s >/dev/null 2>%s & echo $!; }",
            h.shquote(h.bin), h.shquote(t.dir .. "/fake.lua"), h.shquote(t.dir .. "/fake.err"))))))
          t.extra[#t.extra + 1] = silent
          until_true(function() return slurp(t.dir .. "/fake.err"):find("bound", 1, true) end, "the fake holder")
        else
          silent = holder
          os.execute("kill -STOP " .. holder)
          kill9(pid1)
          until_true(function() return gone(pid1) end, "orch to die")
        end
        -- The record names a holder that is gone.
        local r = record(t)
        r.holder = { pid = 999999999, start = 1 }
        h.write(t.state, cjson.encode(r))
        os.execute("chmod 600 " .. h.shquote(t.state))
        local pid2 = run(t)
        local s2 = until_true(function()
          local s = status(t)
          for _, n in ipairs(NAMES) do
            if s[n].state ~= "running" or s[n].pid == s1[n].pid then return false end
          end
          return s
        end, "fresh services")
        for _, n in ipairs(NAMES) do
          assert.is_false(alive(s1[n].pid))
          assert.are.same({ s2[n].pid }, procs_with(t.dir .. "/" .. n))
          assert.are.equal(0, s2[n].restarts, n)
        end
        local err2 = slurp(t.runs[2].err)
        if case == "fake" then
          assert.truthy(err2:find("fd holder: " .. t.sock .. ".holder is bound by pid " .. silent
            .. " (uid " .. h.orch.geteuid() .. ": ", 1, true), err2)
          assert.truthy(err2:find("not by an fd holder of orch's", 1, true), err2)
          assert.is_nil(err2:find("no answer", 1, true), err2)
          assert.is_true(alive(silent), "the other program was signalled")
        else
          assert.truthy(err2:find("fd holder (pid " .. silent .. "): no answer within 5 s: killing it", 1, true), err2)
          until_true(function() return not alive(silent) end, "the silent holder to be killed")
          -- A new holder holds the new pipes.
          local holder2 = until_true(function()
            local hp = holder_of(t)
            return hp and hp ~= silent and hp ~= 999999999 and hp
          end, "a new holder")
          until_true(function() return holds_pipes(holder2, { s2.a.pid, s2.b.pid, s2.c.pid }) end,
            "the new holder to hold the new pipes")
        end
        assert.truthy(err2:find("its log pipe was lost (the fd holder is gone): restarting", 1, true), err2)
        shutdown(t, pid2)
      end)
      cleanup(t)
      if not ok then error(case .. ": " .. tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
    end
  end)

  it("after the kill, a service no longer defined is stopped and a changed one restarted", function()
    local t = new_test()
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = all_running(t)
      local holder = held(t, s1)
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      -- The next run's script: b is gone, c has a new variable.
      local src = slurp(t.path)
      src = src:gsub('ipairs { "a", "b", "c" }', 'ipairs { "a", "c" }')
      src = src:gsub('heartbeat = n == "c"', 'env = n == "c" and { NEW = "1" } or nil, heartbeat = n == "c"')
      h.write(t.path, src)
      local pid2 = run(t)
      local s2 = until_true(function()
        local s = status(t)
        return s.a and s.a.state == "running" and s.c and s.c.state == "running" and s.c.pid ~= s1.c.pid and s
      end, "a adopted, c restarted")
      assert.is_nil(s2.b)
      assert.are.equal(s1.a.pid, s2.a.pid)
      until_true(function() return not alive(s1.b.pid) and not alive(s1.c.pid) end, "the old b and c to end")
      assert.are.same({ s2.a.pid }, procs_with(t.dir .. "/a"))
      assert.are.same({}, procs_with(t.dir .. "/b"))
      assert.are.same({ s2.c.pid }, procs_with(t.dir .. "/c"))
      local e = slurp(t.runs[2].err)
      assert.truthy(e:find("b: no longer defined: stopping pid " .. s1.b.pid, 1, true), e)
      assert.truthy(e:find("c: definition changed: restarting", 1, true), e)
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("an adopted service's heartbeat is watched again", function()
    -- hb beats (every 0.3 s, timeout 10 s) while DIR/hb.beat exists (its
    -- first beat may come before orch handed it its slot: that one fails).
    -- Each beat is a run of orch's own executable (`orch beat`): under ASan
    -- on two loaded cores one took over 2 s, and a 2 s timeout restarted hb
    -- before the test could see it held (the stress run of 2026-12-07).
    local t = new_test(false, [[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stderr:write("sup: ", m, "\n") end, heartbeat_key = HBKEY }
sup.service{ name = "hb", heartbeat = { timeout = 10 }, backoff = 0.1, log = { dir = DIR },
  cmd = { "sh", "-c", 'while :; do if [ -e "$0.beat" ]; then "$1" beat >/dev/null 2>&1; fi; sleep 0.3; done', DIR .. "/hb", ORCH } }
sup.run()
orch.task(function() orch.sleep(1e6) end)
]])
    local ok, err = pcall(function()
      h.write(t.dir .. "/hb.beat", "")
      local pid1 = run(t)
      local s1 = until_true(function() local s = status(t) return s.hb.state == "running" and s end, "hb running")
      until_true(function()
        local r = record(t)
        return r and #r.instances == 1 and r.instances[1].pid == s1.hb.pid
      end, "the state record")
      until_true(function() return holds_pipes(holder_of(t), { s1.hb.pid }) end, "the holder to hold the pipe")
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      local pid2 = run(t)
      local s2 = until_true(function() local s = status(t) return s.hb.state == "running" and s end, "hb adopted")
      assert.are.equal(s1.hb.pid, s2.hb.pid)
      assert.are.equal(0, s2.hb.restarts)
      -- It stops beating: the new orch kills it and starts another.
      os.remove(t.dir .. "/hb.beat")
      local s3 = until_true(function()
        local s = status(t)
        return s.hb.state == "running" and s.hb.pid ~= s2.hb.pid and s
      end, "hb restarted for its missed heartbeat")
      assert.are.equal(1, s3.hb.restarts)
      assert.is_false(alive(s2.hb.pid))
      assert.truthy(slurp(t.runs[2].err):find("hb: missed heartbeat", 1, true))
      shutdown(t, pid2)
      assert.is_false(segment_exists(t.key))
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("an instance without a process goes on where it was: backoff waits, exited stays, counts kept", function()
    -- slow crashes and waits 600 s before its restart; once exits 3 and is
    -- not restarted.
    local t = new_test(false, [[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stderr:write("sup: ", m, "\n") end }
sup.service{ name = "slow", backoff = 600, log = false, cmd = { "sh", "-c", "exit 1", DIR .. "/slow" } }
sup.service{ name = "once", restart = "never", log = false, cmd = { "sh", "-c", "exit 3", DIR .. "/once" } }
sup.run()
orch.task(function() orch.sleep(1e6) end)
]])
    local ok, err = pcall(function()
      local pid1 = run(t)
      until_true(function()
        local s = status(t)
        return s.slow.state == "backoff" and s.once.state == "exited"
      end, "slow in backoff, once exited")
      until_true(function()
        local r = record(t)
        local n = 0
        for _, e in ipairs(r and r.instances or {}) do
          if (e.name == "slow" and e.state == "backoff") or (e.name == "once" and e.state == "exited") then n = n + 1 end
        end
        return n == 2
      end, "the record to name both")
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      local pid2 = run(t)
      local s = status(t)
      assert.are.equal("backoff", s.slow.state)
      assert.are.equal(1, s.slow.restarts)
      assert.are.equal("exited", s.once.state)
      assert.are.equal(3, math.tointeger(s.once.exit_code))
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  -- A stop of many removes its runs' cgroups at its end (cgroup.lua,
  -- M.defer_removals). Killed in the middle of one: four services ended
  -- (their cgroups empty, not removed yet), four still stopping (each main
  -- process waits for a gate once it had TERM, an escapee in a session of
  -- its own beside it, which the stop's first TERM reached through the
  -- cgroup and which ends at a second one). The next orch of the socket removes the four empty
  -- cgroups, stops the four others as their services stop (the escapees,
  -- which only the cgroup reaches, too), removes their cgroups once empty,
  -- and starts nothing.
  it("killed during a stop of many: the next orch stops what was stopping, escapees too, and removes every cgroup", function()
    local t = new_test(false, [[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stderr:write("sup: ", m, "\n") end }
for i = 1, 8 do
  local slow = i > 4
  -- (A stop signal sent again, by the next orch, is taken the same way;
  -- its last line goes to the log the next orch reads.)
  local body = slow and ("trap 'stop=1' TERM; "
    .. "setsid sh -c 'trap \"[ -e " .. DIR .. "/e" .. i .. ".term ] && exit 0; : > " .. DIR .. "/e" .. i .. ".term\" TERM; "
    .. "echo $$ > " .. DIR .. "/e" .. i .. "; while :; do sleep 0.1; done' & "
    .. "while [ -z \"$stop\" ] || [ ! -e " .. DIR .. "/gate ]; do sleep 0.05; done; echo graceful end; exit 0")
    or "while :; do sleep 0.1; done"
  sup.service{ name = "s" .. i, stop = { timeout = 60 }, cmd = { "sh", "-c", body, DIR .. "/s" .. i } }
end
sup.run()
orch.task(function() orch.sleep(1e6) end)
]])
    local parent = require("orch.supervisor.cgroup").socket_parent(t.sock)
    local escapees = {}
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = until_true(function()
        local s = status(t)
        for i = 1, 8 do if not s["s" .. i] or s["s" .. i].state ~= "running" then return false end end
        return s
      end, "every service running")
      for i = 5, 8 do
        escapees[i] = until_true(function() return math.tointeger(tonumber(slurp(t.dir .. "/e" .. i):match("%d+"))) end,
          "escapee " .. i)
      end
      local paths = {}
      for i = 1, 8 do paths[i] = s1["s" .. i].cgroup end
      h.sh(string.format("{ %s ctl --socket %s stop all >/dev/null 2>&1 & }", h.shquote(h.bin), h.shquote(t.sock)))
      -- s1-s4 stopped, their cgroups still there (empty); s5-s8 stopping,
      -- and so in the record (not wanted).
      until_true(function()
        local s = status(t)
        for i = 1, 4 do if s["s" .. i].state ~= "stopped" then return false end end
        for i = 5, 8 do if s["s" .. i].state ~= "stopping" then return false end end
        return true
      end, "s1-s4 stopped, s5-s8 stopping")
      until_true(function()
        local r = record(t)
        local want = {}
        for _, e in ipairs(r and r.instances or {}) do want[e.name] = e.want end
        for line in slurp(t.sock .. ".journal"):gmatch("[^\n]+") do
          local jok, e = pcall(cjson.decode, line)
          if jok and type(e) == "table" and e.name then want[e.name] = e.want end
        end
        for i = 5, 8 do if want["s" .. i] ~= false then return false end end
        return true
      end, "the record to say s5-s8 are not wanted")
      for i = 5, 8 do
        until_true(function() return io.open(t.dir .. "/e" .. i .. ".term") ~= nil end,
          "escapee " .. i .. " to have its first TERM")
      end
      for i = 1, 4 do
        local cg = h.orch.cgroup.open(paths[i])
        assert.truthy(cg, paths[i] .. " removed before the stop's end")
        assert.are.same({}, cg:procs())
        cg:close()
      end
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      local pid2 = run(t)
      -- The empty ones go; the others' processes get TERM (the escapees
      -- end), their main processes wait for the gate.
      until_true(function()
        for i = 1, 4 do if h.orch.cgroup.open(paths[i]) then return false end end
        for i = 5, 8 do if alive(escapees[i]) then return false end end
        return true
      end, "the empty cgroups removed and the escapees ended")
      for i = 5, 8 do assert.is_true(alive(s1["s" .. i].pid), "s" .. i .. " ended before the gate") end
      h.write(t.dir .. "/gate", "")
      until_true(function()
        for i = 5, 8 do if alive(s1["s" .. i].pid) or h.orch.cgroup.open(paths[i]) then return false end end
        return true
      end, "s5-s8 ended, their cgroups removed")
      -- Nothing started again, nothing left below the socket's tree.
      local s = status(t)
      for i = 1, 8 do
        assert.are.equal("stopped", s["s" .. i].state)
        assert.are.same({}, procs_with(t.dir .. "/s" .. i))
      end
      local top = assert(h.orch.cgroup.open(parent))
      assert.are.same({}, top:children())
      top:close()
      local e = slurp(t.runs[2].err)
      assert.truthy(e:find("s5: its stop was under way: stopping pid " .. s1.s5.pid, 1, true), e)
      for i = 5, 8 do assert.truthy(e:find("s" .. i .. " | graceful end", 1, true), e) end
      shutdown(t, pid2)
    end)
    for _, pid in pairs(escapees) do kill9(pid) end
    for i = 1, 8 do
      for _, pid in ipairs(procs_with(t.dir .. "/s" .. i)) do kill9(pid) end
    end
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("a service stopped by hand stays stopped after the kill; the others are adopted", function()
    local t = new_test()
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = all_running(t)
      assert.are.equal(0, (ctl(t, "stop", "a")))
      until_true(function() return not alive(s1.a.pid) end, "a to stop")
      until_true(function()
        for _, e in ipairs((record(t) or {}).instances or {}) do
          if e.name == "a" and e.state == "stopped" and e.want == false then return true end
        end
      end, "the record to name a as stopped")
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      local pid2 = run(t)
      local s = status(t)
      assert.are.equal("stopped", s.a.state)
      assert.are.same({ s1.b.pid, s1.c.pid }, { s.b.pid, s.c.pid })
      assert.are.same({}, procs_with(t.dir .. "/a"))
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("one holder serves a crash loop (not one per restart)", function()
    local t = new_test(false, [[
local sup = require "orch.supervisor"
sup.configure{ log = false }
sup.service{ name = "crash", backoff = 0.05, start_limit = { burst = 1000, interval = 10 }, log = { dir = DIR },
  cmd = { "sh", "-c", "echo up; sleep 0.05; exit 1", DIR .. "/crash" } }
sup.run()
]])
    local ok, err = pcall(function()
      local pid = run(t)
      local holder = until_true(function() return holder_of(t) end, "the holder")
      local r0 = status(t).crash.restarts
      until_true(function() return status(t).crash.restarts >= r0 + 5 end, "five more restarts")
      assert.are.equal(holder, holder_of(t))
      assert.is_true(alive(holder))
      shutdown(t, pid)
      until_true(function() return not alive(holder) end, "the holder to exit")
    end)
    cleanup(t)
    for _, p in ipairs(procs_with(t.dir .. "/crash")) do kill9(p) end
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1"), 0) end
  end)

  it("the holder exits by itself once its orch and every service it holds a pipe for are gone", function()
    local t = new_test()
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = all_running(t)
      local holder = held(t, s1)
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      kill9(s1.a.pid)
      kill9(s1.b.pid)
      -- One service left: the holder keeps its pipe.
      until_true(function() return not alive(s1.a.pid) and not alive(s1.b.pid) end, "a and b to die")
      assert.is_true(alive(holder))
      kill9(s1.c.pid)
      until_true(function() return not alive(holder) end, "the holder to exit")
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1"), 0) end
  end)

  -- With no orch of the socket ever again, the cgroups of its tree would
  -- stay: the holder, which outlives the killed orch and every service,
  -- removes them (empty now) as it exits; not while a process holds the
  -- control socket's lock (a new orch there sweeps the tree itself).
  local function holder_sweep(locked)
    local t = new_test(false, [[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stderr:write("sup: ", m, "\n") end }
for _, n in ipairs { "a", "b", "c" } do
  sup.service{ name = n, log = { dir = DIR }, cmd = { "sh", "-c", "echo up; exec sleep 1000", DIR .. "/" .. n } }
end
sup.run()
]])
    local parent = require("orch.supervisor.cgroup").socket_parent(t.sock)
    local lock
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = all_running(t)
      local holder = held(t, s1)
      local tree = assert(h.orch.cgroup.open(parent))
      assert.are.equal(3, #tree:children())
      tree:close()
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      if locked then lock = assert(h.orch.flock(t.sock .. ".lock")) end
      for _, n in ipairs(NAMES) do kill9(s1[n].pid) end
      until_true(function() return not alive(holder) end, "the holder to exit")
      if locked then
        tree = assert(h.orch.cgroup.open(parent), "the tree removed under the lock")
        assert.are.equal(3, #tree:children())
        tree:close()
        lock:close()
        lock = nil
      else
        until_true(function() return h.orch.cgroup.open(parent) == nil end, "the tree removed")
      end
      -- The next orch of the socket starts afresh (and sweeps what is left).
      local pid2 = run(t)
      all_running(t)
      shutdown(t, pid2)
      assert.is_nil(h.orch.cgroup.open(parent))
    end)
    if lock then lock:close() end
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end

  it("the holder that outlives its killed orch and every service removes the socket's emptied cgroup tree", function()
    holder_sweep(false)
  end)

  it("but not while another process holds the control socket's lock", function()
    holder_sweep(true)
  end)

  it("neither adopts nor signals a pid of the record that now names another process", function()
    local t = new_test()
    local ok, err = pcall(function()
      -- An unrelated process, and a record naming its pid with another
      -- start time (the pid of a service that died, reused).
      local other = math.tointeger(tonumber((h.sh("{ sleep 1000 >/dev/null 2>&1 & echo $!; }"))))
      t.extra[#t.extra + 1] = other
      local start = h.orch.proc.info(other).start_time
      h.write(t.state, cjson.encode{ version = 1, orch = { pid = 999999999, start = 1 },
        heartbeat_tables = {}, instances = {
          { name = "a", pid = other, pid_start = start - 1, want = true, restarts = 7, def = "x" },
          { name = "b", pid = other, pid_start = start + 1, want = true, restarts = 7, def = "x" } } })
      os.execute("chmod 600 " .. h.shquote(t.state))
      local pid = run(t)
      local s = all_running(t)
      assert.are_not.equal(other, s.a.pid)
      assert.are_not.equal(other, s.b.pid)
      -- The process of the record ended while no orch watched: a restart.
      assert.are.equal(8, s.a.restarts)
      shutdown(t, pid)
      assert.is_true(alive(other), "the unrelated process was signalled")
      assert.truthy(slurp(t.runs[1].err):find("pid " .. other .. " of the state record is gone", 1, true))
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1"), 0) end
  end)

  it("the fd holder hands nothing to another user, and orch believes no one but it", function()
    local t = new_test()
    local ok, err = pcall(function()
      local pid1 = run(t)
      all_running(t)
      local holder = until_true(function() return holder_of(t) end, "the holder")
      -- Open the way to the holder's socket (it is 0600 in a 0700 dir):
      -- only its own credential check is left between the holder and
      -- user nobody, who says hello as an orch would.
      os.execute("chmod 755 " .. h.shquote(t.dir) .. " && chmod 666 " .. h.shquote(t.sock .. ".holder"))
      local probe = h.script(string.format([[
        local d = assert(orch.dgram{ unix = "@orch-spec-k9-" .. orch.getpid(), passcred = true })
        local me = orch.proc.info(orch.getpid())
        assert(d:send(string.format('{"op":"hello","pid":%%d,"start":%%d}', orch.getpid(), me.start_time), %q))
        d:set_timeout(1)
        local data, e, _, fds = d:recv{ fds = true }
        print(data and ("answered with " .. #fds .. " fds") or e)
      ]], t.sock .. ".holder"))
      os.execute("chmod 755 " .. h.shquote(probe:match("^(.*)/")) .. " && chmod 644 " .. h.shquote(probe))
      local out = h.sh("setpriv --reuid=65534 --regid=65534 --clear-groups " .. h.shquote(h.bin) .. " run " .. h.shquote(probe) .. " 2>&1")
      assert.are.equal("recv: timed out", out)
      -- The holder still serves its orch: a kill -9 loses nothing.
      local s1 = status(t)
      until_true(function() return holds_pipes(holder, { s1.a.pid, s1.b.pid, s1.c.pid }) end,
        "the holder to hold the three log pipes")
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      local pid2 = run(t)
      local s2 = all_running(t)
      for _, n in ipairs(NAMES) do assert.are.equal(s1[n].pid, s2[n].pid) end
      assert.is_true(alive(holder))
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("no other user can send to the socket orch talks to its fd holder from", function()
    -- A second user who finds that socket (/proc/net/unix lists every
    -- bound name) could otherwise fill its queue while orch waits for the
    -- holder's answer to its hello, which then finds no room: orch would
    -- kill its holder and restart what it held. The directory opened as in
    -- the test above: only the socket's own mode is left in the way.
    local t = new_test()
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = all_running(t)
      held(t, s1)
      os.execute("chmod 755 " .. h.shquote(t.dir))
      local probe = h.script(string.format([[
        local pid, sock = %d, %q
        local f = assert(io.open("/proc/net/unix"))
        local text = f:read("a")
        f:close()
        local found = {}
        for line in text:gmatch("[^\n]+") do
          local name = line:match(" (%%S+)$")
          if name and (name:find("orch-fdholder-client-" .. pid .. "-", 1, true) or name:sub(1, #sock) == sock) then
            found[#found + 1] = name
          end
        end
        local d = orch.dgram()
        for _, name in ipairs(found) do
          if name ~= sock and name ~= sock .. ".holder" then
            local sent, _, code = d:send('{"op":"held","n":1,"entries":[]}', name)
            print(name, sent and "sent" or code)
          end
        end
      ]], pid1, t.sock))
      os.execute("chmod 755 " .. h.shquote(probe:match("^(.*)/")) .. " && chmod 644 " .. h.shquote(probe))
      local out = h.sh("setpriv --reuid=65534 --regid=65534 --clear-groups " .. h.shquote(h.bin) .. " run " .. h.shquote(probe) .. " 2>&1")
      -- orch's end of the conversation is found, and refuses nobody.
      assert.are.equal(t.sock .. ".client\tEACCES", out)
      assert.are.equal("srw-------", (h.sh("stat -c %A " .. h.shquote(t.sock .. ".client"))))
      -- A kill -9 loses nothing; the next orch replaces the socket file.
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      local pid2 = run(t)
      local s2 = all_running(t)
      for _, n in ipairs(NAMES) do assert.are.equal(s1[n].pid, s2[n].pid) end
      shutdown(t, pid2)
      -- A clean end removes it.
      assert.are.equal("", (h.sh("ls " .. h.shquote(t.dir) .. " | grep -e client")))
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("keeps no record and starts no holder beside a socket in a directory others may write to", function()
    local t = new_test()
    local ok, err = pcall(function()
      os.execute("chmod 1777 " .. h.shquote(t.dir))
      local pid = run(t)
      all_running(t)
      assert.truthy(slurp(t.runs[1].err):find("is writable by group or others", 1, true))
      shutdown(t, pid)
      assert.are.equal("", slurp(t.state))
      assert.are.equal("", (h.sh("ls " .. h.shquote(t.dir) .. " | grep holder")))
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1"), 0) end
  end)

  it("ignores a state record that is not safe to trust", function()
    local t = new_test()
    local ok, err = pcall(function()
      local other = math.tointeger(tonumber((h.sh("{ sleep 1000 >/dev/null 2>&1 & echo $!; }"))))
      t.extra[#t.extra + 1] = other
      local start = h.orch.proc.info(other).start_time
      -- A record another user could have written (mode 0644) naming a live
      -- process with its true start time: not believed.
      h.write(t.state, cjson.encode{ version = 1, orch = { pid = 999999999, start = 1 }, instances = {
        { name = "a", pid = other, pid_start = start, want = true, restarts = 7, def = "x" } } })
      os.execute("chmod 644 " .. h.shquote(t.state))
      local pid = run(t)
      local s = all_running(t)
      assert.are_not.equal(other, s.a.pid)
      shutdown(t, pid)
      assert.is_true(alive(other))
      assert.truthy(slurp(t.runs[1].err):find("accessible to group or others", 1, true))
      -- Mode 0600 but another user's: not believed either.
      h.write(t.state, cjson.encode{ version = 1, orch = { pid = 999999999, start = 1 }, instances = {
        { name = "a", pid = other, pid_start = start, want = true, restarts = 7, def = "x" } } })
      os.execute("chmod 600 " .. h.shquote(t.state) .. " && chown 65534 " .. h.shquote(t.state))
      pid = run(t)
      s = all_running(t)
      assert.are_not.equal(other, s.a.pid)
      shutdown(t, pid)
      assert.is_true(alive(other))
      assert.truthy(slurp(t.runs[2].err):find("belongs to another user", 1, true))
      -- A symbolic link to a record is not followed.
      h.write(t.dir .. "/elsewhere", cjson.encode{ version = 1, orch = { pid = 999999999, start = 1 }, instances = {
        { name = "a", pid = other, pid_start = start, want = true, restarts = 7, def = "x" } } })
      os.execute("chmod 600 " .. h.shquote(t.dir .. "/elsewhere") .. " && rm -f " .. h.shquote(t.state)
        .. " && ln -s elsewhere " .. h.shquote(t.state))
      pid = run(t)
      s = all_running(t)
      assert.are_not.equal(other, s.a.pid)
      shutdown(t, pid)
      assert.is_true(alive(other))
      assert.truthy(slurp(t.runs[3].err):find("is a symbolic link", 1, true))
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1"), 0) end
  end)

  it("killed while a start of many has a spawn begun and not finished: the next orch leaves no process unsupervised", function()
    -- A start of many begins each spawn (orch.spawn_begin) and finishes it
    -- once the next has begun: when j5's start is logged, j6's child
    -- exists and is not journaled yet. The first orch kills itself right
    -- there (its log function), with j6's spawn pending.
    local t = new_test(false, [[
local sup = require "orch.supervisor"
local f = io.open(DIR .. "/killed")
if f then f:close() end
local first = not f
sup.configure{ log = function(m)
  io.stderr:write("sup: ", m, "\n")
  if first and m:find("^j5: started") then
    io.open(DIR .. "/killed", "w"):close()
    os.execute("kill -KILL " .. orch.getpid())
  end
end }
for i = 1, 10 do
  sup.service{ name = "j" .. i, log = false, cmd = { "sh", "-c", "sleep 600; :", DIR .. "/j" .. i } }
end
sup.run()
orch.task(function() orch.sleep(1e6) end)
]])
    -- The live processes of j1..j10 (command lines ending with DIR/jN, a
    -- shell's fork before its exec left out), in one pass over /proc.
    local function procs_of_j()
      local by, found = {}, {}
      for i = 1, 10 do by[i] = {} end
      for _, pid in ipairs(h.orch.proc.list()) do
        local i = tonumber(slurp("/proc/" .. pid .. "/cmdline"):match("\0" .. t.dir:gsub("%p", "%%%0") .. "/j(%d+)\0$") or "")
        if i and alive(pid) then found[pid] = i end
      end
      for pid, i in pairs(found) do
        local info = h.orch.proc.info(pid)
        if info and info.state ~= "Z" and not found[info.ppid] then by[i][#by[i] + 1] = pid end
      end
      return by
    end
    local ok, err = pcall(function()
      local err1 = t.dir .. "/err1"
      local pid1 = math.tointeger(tonumber((h.sh(string.format("cd %s && { %s run --socket %s %s >/dev/null 2>%s & echo $!; }",
        h.shquote(t.dir), h.shquote(h.bin), h.shquote(t.sock), h.shquote(t.path), h.shquote(err1))))))
      t.runs[1] = { pid = pid1, err = err1 }
      until_true(function() return gone(pid1) end, "the first orch to kill itself")
      local log1 = slurp(err1)
      assert.truthy(log1:find("sup: j5: started", 1, true), log1)
      assert.is_nil(log1:find("sup: j6: started", 1, true), log1)
      -- What the first orch left: j1..j5, and j6's child (begun, never
      -- finished); nothing of j7..j10.
      local left = procs_of_j()
      assert.are.equal(1, #left[6], "j6's pending child")
      for i = 7, 10 do assert.are.same({}, left[i], "j" .. i) end
      local pid2 = run(t)
      local st = until_true(function()
        local s = status(t)
        for i = 1, 10 do
          local j = s["j" .. i]
          if not (j and j.state == "running" and j.pid) then return false end
        end
        return s
      end, "j1..j10 running")
      -- Each service has one process, the one the second orch supervises:
      -- what the first left is adopted or killed, never left beside it.
      local deadline = os.time() + 30
      until_true(function()
        local now = procs_of_j()
        for i = 1, 10 do
          if #now[i] ~= 1 or now[i][1] ~= st["j" .. i].pid then
            assert(os.time() < deadline, "j" .. i .. ": processes " .. table.concat(now[i], " ")
              .. ", the supervised one " .. st["j" .. i].pid)
            return false
          end
        end
        return true
      end, "one supervised process per service")
      for i = 1, 6 do
        local p = left[i][1]
        if p then assert.is_true(p == st["j" .. i].pid or not alive(p), "j" .. i .. "'s pid " .. p) end
      end
      assert.is_false(alive(left[6][1]) and left[6][1] ~= st.j6.pid)
      shutdown(t, pid2)
      local after = procs_of_j()
      for i = 1, 10 do assert.are.same({}, after[i], "j" .. i .. " after the shutdown") end
    end)
    for _, pids in ipairs(procs_of_j()) do
      for _, pid in ipairs(pids) do kill9(pid) end
    end
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("what a killed orch left in its cgroup tree unrecorded is killed by the next one; its recorded services are adopted", function()
    -- A process a previous orch spawned just before its SIGKILL, never
    -- written to its state record, sits in a cgroup of the socket's tree
    -- that no run takes over: the next orch must not leave it running
    -- beside the service's new process.
    local t = new_test(true)
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = all_running(t)
      local info = assert(h.orch.cgroup.info())
      local where = assert(h.orch.cgroup.of(s1.a.pid))
      local base = where:match("^(.*)/[^/]+$")
      assert.truthy(base:find("/" .. require("orch.supervisor.cgroup").socket_parent(t.sock), 1, true))
      -- The stray: a.99 in the tree, with a process in it (a child of the
      -- shell, which exits: it is nobody's child but init's).
      local dir = info.mount:gsub("/$", "") .. base .. "/a.99"
      assert(os.execute("mkdir " .. h.shquote(dir)))
      local stray = math.tointeger(tonumber((h.sh("sleep 1000 >/dev/null 2>&1 & echo $!"))))
      t.extra[#t.extra + 1] = stray
      h.write(dir .. "/cgroup.procs", tostring(stray))
      assert.are.equal(base .. "/a.99", h.orch.cgroup.of(stray))
      held(t, s1)
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      local pid2 = run(t)
      local s2 = all_running(t)
      for _, n in ipairs(NAMES) do assert.are.equal(s1[n].pid, s2[n].pid, n) end
      until_true(function() return not alive(stray) end, "the stray to be killed")
      until_true(function() return not os.execute("test -d " .. h.shquote(dir)) end, "the stray's cgroup to go")
      assert.truthy(slurp(t.runs[2].err):find("killing 1 process a previous orch left in cgroup a.99 (not in its state record): "
        .. stray, 1, true))
      shutdown(t, pid2)
    end)
    cleanup(t)
    if not ok then error(tostring(err) .. "\n" .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
  end)

  it("killed between a restart spawned at the exit and its bookkeeping: one a runs, started at most once, no orphan", function()
    -- An immediate restart is spawned by the exit's own action
    -- (instance.lua, respawn_early) before the run's end is recorded. The
    -- first orch kills itself there, at one of two points: right after the
    -- clone (its policy wraps orch.sched_yield, which respawn_early calls
    -- right after the spawn: the traceback names it), where nothing names
    -- the new process yet and the next orch's sweep of the socket's cgroup
    -- tree kills it and starts a once; or in the bookkeeping (the exit's
    -- event, which the run's end emits at the new run's spawn_done), where
    -- the journal and the fd holder have it already: adopted with its log
    -- pipe, also without cgroups, where nothing else would find it.
    -- "ordinary": a's env_file keeps its restart off that path (it is
    -- spawned by the restart's launch, and the exit's event comes right
    -- after): the same kill in that event.
    for _, case in ipairs { { "bookkeeping", true }, { "bookkeeping", false }, { "clone", true }, { "ordinary", false } } do
      local at, cgroups = case[1], case[2]
      local t = new_test(false, string.format("local AT, CGROUPS = %q, %s\n", at, tostring(cgroups)) .. [[
local sup = require "orch.supervisor"
local function die()
  io.open(DIR .. "/killed", "w"):close()
  os.execute("kill -KILL " .. orch.getpid())
end
local f = io.open(DIR .. "/killed")
if f then f:close() end
local early = false
if not f then
  local yield = orch.sched_yield
  orch.sched_yield = function(...)
    if debug.traceback():find("respawn_early", 1, true) then
      early = true
      if AT == "clone" then die() end
    end
    return yield(...)
  end
  sup.events(function(ev)
    if (early and AT == "bookkeeping" or AT == "ordinary") and ev.event == "exited" and ev.name == "a" then die() end
  end)
end
sup.configure{ log = function(m) io.stderr:write("sup: ", m, "\n") end }
if not CGROUPS then sup.configure{ cgroup = false } end
-- a exits 1 once DIR/a.exit appears (removed first: its restart runs on).
-- SIGPIPE ignored: a restart whose pipe only the killed orch read lives on.
local LOOP = 'trap "" PIPE; i=0; while :; do i=$((i+1)); echo "$$ line $i"; echo $i > "$0.count"; '
  .. 'if [ -e "$0.exit" ]; then rm -f "$0.exit"; exit 1; fi; sleep 0.02; done'
io.open(DIR .. "/a.env", "w"):close()
for _, n in ipairs { "a", "b", "c" } do
  sup.service{ name = n, log = { dir = DIR }, backoff = 0, cmd = { "sh", "-c", LOOP, DIR .. "/" .. n },
    env_file = AT == "ordinary" and n == "a" and DIR .. "/a.env" or nil }
end
sup.run()
orch.task(function() orch.sleep(1e6) end)
]])
      local tree = require("orch.supervisor.cgroup").socket_parent(t.sock)
      local function tree_kids()
        local cg = h.orch.cgroup.open(tree)
        if not cg then return nil end
        local kids = cg:children() or {}
        cg:close()
        table.sort(kids)
        return kids
      end
      local ok, err = pcall(function()
        local pid1 = run(t)
        local s1 = all_running(t)
        local holder = held(t, s1)
        local where = h.orch.cgroup.of(s1.a.pid)
        assert.are.equal(cgroups, where:find("/" .. tree .. "/", 1, true) ~= nil, where)
        h.write(t.dir .. "/a.exit", "")
        until_true(function() return gone(pid1) end, "the first orch to kill itself (" .. at .. ")")
        -- The window: a's restart runs, and the first orch's log does not
        -- name it; the record and journal do only after the clone.
        local early = until_true(function()
          local l = procs_with(t.dir .. "/a")
          return #l == 1 and l[1] ~= s1.a.pid and l[1]
        end, "a's restart spawned at its exit")
        t.extra[#t.extra + 1] = early
        assert.is_false(alive(s1.a.pid))
        local log1 = slurp(t.runs[1].err)
        assert.is_nil(log1:find("pid " .. early, 1, true), log1)
        assert.are.equal(at == "clone" and s1.a.pid or early, recorded(t).a)
        if at ~= "clone" then
          -- (The put was sent before the kill; the holder takes it in its
          -- own time: under ASan it had not yet once, stop 33's CI.)
          until_true(function() return holds_pipes(holder, { early, s1.b.pid, s1.c.pid }) end,
            "the holder to hold the early restart's pipe")
        end
        -- Born in a's kept cgroup.
        if cgroups then assert.are.equal(where, h.orch.cgroup.of(early)) end

        local pid2 = run(t)
        local s2 = all_running(t)
        assert.are.equal(s1.b.pid, s2.b.pid)
        assert.are.equal(s1.c.pid, s2.c.pid)
        -- One process of a, the supervised one: the early one adopted, or
        -- (after a kill right at the clone) killed and a started once.
        until_true(function()
          local l = procs_with(t.dir .. "/a")
          return #l == 1 and l[1] == s2.a.pid
        end, "a's only process to be the supervised one (the early restart: " .. early .. ")")
        local log2 = slurp(t.runs[2].err)
        local starts = 0
        for _ in log2:gmatch("sup: a: started") do starts = starts + 1 end
        assert.is_nil(log2:find("sup: [bc]: started"), log2)
        if at ~= "clone" then
          assert.are.equal(early, s2.a.pid)
          assert.are.equal(0, starts, log2)
          assert.are.equal(1, s2.a.restarts)
          assert.is_nil(log2:find("log pipe", 1, true), log2)
        else
          assert.is_false(alive(early))
          assert.are.equal(1, starts, log2)
        end
        -- No cgroup of the first orch's left but the runs' own.
        if cgroups then
          until_true(function()
            local kids = tree_kids()
            return kids and #kids == 3
          end, "three cgroups in the tree, one per service")
          for _, n in ipairs(NAMES) do
            assert.truthy(h.orch.cgroup.of(s2[n].pid):find("/" .. tree .. "/" .. n .. ".", 1, true))
          end
        end
        shutdown(t, pid2)
        assert.are.same({}, procs_with(t.dir .. "/a"))
        assert.is_false(alive(early))
        until_true(function() return tree_kids() == nil end, "the tree to go")
      end)
      cleanup(t)
      if not ok then error(at .. (cgroups and ", cgroups: " or ", no cgroups: ") .. tostring(err) .. "\n"
        .. slurp(t.dir .. "/err1") .. slurp(t.dir .. "/err2"), 0) end
    end
  end)

  it("on a full disk: no half journal line; the next orch on the full disk adopts all; never a duplicate", function()
    -- The control socket, its record and journal on a tiny tmpfs filled to
    -- its last block. A fleet whose record is large (changes go to the
    -- journal) has s75 restarted until the journal's last page is full: an
    -- append the disk takes only the start of is cut off again, so the
    -- journal never ends in half a line. Then kill -9, a next orch on the
    -- full disk (it adopts every service but s75), kill -9, one after the
    -- space returned: each sweeps what the record and journal miss (the
    -- socket's cgroup tree), so every service runs once; the last one
    -- adopts every process but s75's with its log pipe and writes its
    -- record again.
    local N = 150
    local t = large_fleet(N)
    local mnt = t.dir .. "/mnt"
    assert(os.execute("mkdir " .. mnt .. " && mount -t tmpfs -o size=512k,mode=0700 tmpfs " .. mnt))
    t.sock = mnt .. "/ctl.sock"
    t.state = t.sock .. ".state"
    local journal = t.sock .. ".journal"
    local tree = require("orch.supervisor.cgroup").socket_parent(t.sock)
    -- Every service once: N distinct pids, N processes in the tree; the
    -- same pids as `before` but s75's.
    local function once_each(before)
      local s = fleet_within(t, {})
      local pids = {}
      for name, e in pairs(s) do
        assert.is_nil(pids[e.pid], name)
        pids[e.pid] = name
        if before and name ~= "s75" then assert.are.equal(before[name].pid, e.pid, name) end
      end
      until_true(function()
        local cg = h.orch.cgroup.open(tree)
        local n = cg and #cg:procs()
        if cg then cg:close() end
        return n == N
      end, N .. " processes in the tree")
      return s
    end
    local function whole_lines(path)
      for line in slurp(path):gmatch("[^\n]*\n?") do
        if line ~= "" and line:sub(-1) ~= "\n" then error("half a line at the end of " .. path .. ": " .. line, 2) end
      end
    end
    local function restart_s75(s)
      local old = s.s75.pid
      kill9(old)
      return until_true(function()
        local x = status(t)
        return x.s75.state == "running" and x.s75.pid ~= old and x
      end, "s75 restarted")
    end
    local fillers = 0
    local ok, err = pcall(function()
      local pid1 = run(t)
      local s1 = once_each()
      until_true(function()
        local r = record(t)
        return r and #r.instances == N
      end, "the record to name every service")
      local s = restart_s75(s1)
      until_true(function() return slurp(journal):find("\n", 1, true) end, "a journal")
      fillers = 1
      os.execute("dd if=/dev/zero of=" .. mnt .. "/filler bs=4096 2>/dev/null")
      os.execute("dd if=/dev/zero of=" .. mnt .. "/fillerb bs=1 2>/dev/null")
      assert.are.equal("0", h.sh("stat -f -c %a " .. mnt), "free blocks left")
      -- Restarts until an append does not fit what is left of the
      -- journal's last page.
      for _ = 1, 200 do
        if slurp(t.runs[1].err):find("cannot write the state journal", 1, true) then break end
        s = restart_s75(s)
      end
      assert.truthy(slurp(t.runs[1].err):find("cannot write the state journal: private.append: no space left on device", 1, true))
      whole_lines(journal)
      kill9(pid1)
      until_true(function() return gone(pid1) end, "orch to die")
      local pid2 = run(t)
      local s2 = restart_s75(once_each(s1))
      whole_lines(journal)
      kill9(pid2)
      until_true(function() return gone(pid2) end, "the second orch to die")
      os.remove(mnt .. "/filler")
      os.remove(mnt .. "/fillerb")
      fillers = 0
      local pid3 = run(t)
      -- Every process but s75's adopted with its log pipe: the second orch's
      -- syncs on the full disk, during its adoption too, left the holder
      -- every pipe (s75's new one may not have reached the holder before
      -- the kill: then s75 is started again).
      once_each(s2)
      -- The record is written again (by this orch), and with its journal
      -- names what runs: a restart after its write (s75's, when the second
      -- orch was killed before the holder had its new pipe) is in the
      -- journal. Within 60 s, as fleet_within waits: 150 services on a
      -- loaded machine.
      local deadline, named, why = os.time() + 60, false, nil
      repeat
        local by, r = recorded(t)
        local now = status(t)
        named, why = r ~= nil and math.tointeger(r.orch.pid) == pid3, "no record of this orch"
        local n = 0
        for name, pid in pairs(named and by or {}) do
          n = n + 1
          if pid ~= (now[name] and now[name].pid) then named, why = false, name .. ": " .. tostring(pid) end
        end
        if named and n ~= N then named, why = false, n .. " named" end
        if not named then h.pause(0.05) end
      until named or os.time() > deadline
      assert.is_true(named, "the record and journal name what runs: " .. tostring(why))
      whole_lines(journal)
      shutdown(t, pid3)
    end)
    local diag = not ok and diagnosis(t)
    if fillers > 0 then
      os.remove(mnt .. "/filler")
      os.remove(mnt .. "/fillerb")
    end
    cleanup(t)
    if not os.execute("umount " .. mnt) then os.execute("umount -l " .. mnt) end
    if not ok then error(diag .. "\n" .. tostring(err), 0) end
  end)
end)
