-- orch's shutdown under exhausted resources: every fd taken, a full disk
-- under its runtime files, a pids limit reached. Whatever is short, a
-- SIGTERM stops the services and orch removes what it made (its cgroups,
-- its control socket, its state record), or says what it left and where;
-- and no stop hangs.
local h = require "spec.helper"
local u = require "spec.ctl_util"

local start = u.start_nofile

local function gone(pid)
  return h.slurp("/proc/" .. pid .. "/stat") == ""
end

-- The killed orch's fd holder, found through /proc (not ps: under the
-- ASan pass every child of busted gets libasan preloaded, and ps hung in
-- it), or nil.
local function holder_of(o)
  for _, pid in ipairs(h.orch.proc.list()) do
    local c = h.slurp("/proc/" .. pid .. "/cmdline")
    if c:find("\0fdholder\0" .. o.sock .. ".holder\0", 1, true) then return pid end
  end
end

-- For a policy: TAKE() takes every fd orch has left (kept in HELD).
local TAKE = u.TAKE_FREE

describe("SIGTERM with every fd taken", function()
  -- orch's own tree (orch.s<hash of the socket>, beside orch in its
  -- cgroup) was left behind: its removal listed the directory first (an
  -- fd), and gave up at EMFILE before the rmdir, which needs none.
  it("stops the services and removes orch's cgroups, its socket and its state record", function()
    local o = start("128:128", [[
      local sup = require "orch.supervisor"
      sup.service { name = "a", cmd = { "sleep", "1000" } }
      sup.service { name = "b", cmd = { "sleep", "1000" } }
    ]] .. TAKE .. [[
      -- What the stop frees (log pipes, the runs' cgroup fds) is taken
      -- again the moment the supervisor removes its cgroups, and when it
      -- closes its state record (and ends the fd holder).
      for _, m in ipairs({ "orch.supervisor.cgroup", "orch.supervisor.persist" }) do
        local mod = require(m)
        local close = mod.close
        mod.close = function(S)
          TAKE()
          return close(S)
        end
      end
      orch.task(function()
        sup.wait("a", "running")
        sup.wait("b", "running")
        io.stdout:write("held ", TAKE(), "\n") io.stdout:flush()
      end)
      sup.run()
    ]])
    local parent = require("orch.supervisor.cgroup").socket_parent(o.sock)
    local pids = {}
    finally(function()
      if h.alive(o.pid) then os.execute("kill -KILL " .. o.pid) end
      for _, pid in ipairs(pids) do os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
      h.remove_cgroup_tree(parent)
    end)
    u.until_true(function() return h.slurp(o.dir .. "/out"):find("held %d+") end, "the policy to take every fd")
    for _, name in ipairs({ "a", "b" }) do
      local pid = u.status(o)[name].pid
      pids[#pids + 1] = pid
    end
    assert.truthy(h.orch.cgroup.open(parent), parent .. " made")
    os.execute("kill -TERM " .. o.pid)
    u.until_true(function() return gone(o.pid) end, "orch to exit")
    local err = h.slurp(o.dir .. "/err")
    assert.matches("every service is stopped", err, 1, true)
    for _, pid in ipairs(pids) do assert.is_false(h.alive(pid), "service pid " .. pid .. " left running") end
    assert.is_nil(h.orch.cgroup.open(parent), parent .. " left behind:\n" .. err)
    assert.is_nil(io.open(o.sock), "control socket left")
    assert.is_nil(io.open(o.sock .. ".state"), "state record left")
    -- The fd holder ended of its bye: waited for without an fd to watch it
    -- with, it was said stuck and killed.
    assert.is_nil(err:find("fd holder %(pid %d+%)[^\n]*killed"), err)
  end)
end)

describe("orch's cgroup tree at shutdown", function()
  -- What is in orch's tree but no service's run (here a process put there
  -- from outside) is stopped: the next orch's sweep would kill it anyway.
  -- A tree that still cannot go (a directory below it pinned by a mount)
  -- is named in the log: it was left without a word.
  it("what no run holds is stopped, and a tree that cannot go is named in the log", function()
    local o = start("1024:1024", [[
      local sup = require "orch.supervisor"
      sup.service { name = "a", cmd = { "sleep", "1000" } }
      sup.run()
    ]])
    local parent = require("orch.supervisor.cgroup").socket_parent(o.sock)
    local foreign, pinned
    finally(function()
      if h.alive(o.pid) then os.execute("kill -KILL " .. o.pid) end
      if foreign then os.execute("kill -KILL " .. foreign .. " 2>/dev/null") end
      if pinned then os.execute("umount " .. h.shquote(pinned)) end
      h.remove_cgroup_tree(parent)
    end)
    u.until_true(function() return u.status(o).a.state == "running" end, "a running")
    local top = assert(h.orch.cgroup.open(parent))
    local dir = top:dir()
    top:close()
    local cg = assert(h.orch.cgroup.create(parent .. "/foreign"))
    foreign = tonumber((h.sh("sleep 1000 >/dev/null 2>&1 & echo $!")))
    assert(cg:add(foreign))
    cg:close()
    local pin = assert(h.orch.cgroup.create(parent .. "/pin"))
    assert(os.execute("mount --bind " .. h.shquote(h.tmpdir()) .. " " .. h.shquote(pin:dir())))
    pinned = pin:dir()
    pin:close()
    os.execute("kill -TERM " .. o.pid)
    u.until_true(function() return gone(o.pid) end, "orch to exit")
    local err = h.slurp(o.dir .. "/err")
    assert.matches("every service is stopped", err, 1, true)
    local q = dir:gsub("%p", "%%%0")
    assert.matches("stopping what is left in orch's cgroup tree " .. q .. " %(no service's run%): " .. foreign .. "\n", err)
    assert.is_false(h.alive(foreign))
    assert.matches("cgroup " .. q .. " left behind: [^\n]*busy\n", err)
  end)

  -- A TERM while the take-over of what a killed orch left waits for fds
  -- (the policy took every fd before sup.run) ended orch at once: "every
  -- service is stopped", and the killed orch's service ran on in the tree,
  -- unsupervised.
  it("a TERM while the take-over waits for fds stops what the killed orch left", function()
    -- (a says in a file that a TERM ended it: a KILL at once, the
    -- workaround of a cg:kill("TERM") that reached nothing, leaves it empty.
    -- An orch with a handler, not a shell's trap: dash, forking its next
    -- sleep as the TERM came, ended of it without running its trap in
    -- about one run in eight.)
    local policy = [[
      local sup = require "orch.supervisor"
      sup.service { name = "a", cmd = { orch.exepath(), "-e", "orch.signal.on('TERM', function() "
        .. "local f = assert(io.open(" .. string.format("%q", DIR .. "/a.term") .. ", 'a')) f:write('TERM\\n') f:close() "
        .. "os.exit(0) end) orch.sleep(1e6)" }, backoff = 0.2, start_limit = false }
    ]] .. TAKE .. [[
      if os.getenv("ORCH_TEST_TAKE") then TAKE() end
      sup.run()
    ]]
    local o = start("128:128", policy)
    local o2, a
    local parent = require("orch.supervisor.cgroup").socket_parent(o.sock)
    finally(function()
      for _, x in ipairs({ o, o2 }) do
        if x and h.alive(x.pid) then os.execute("kill -KILL " .. x.pid) end
      end
      if a then os.execute("kill -KILL " .. a .. " 2>/dev/null") end
      -- The killed orch's fd holder.
      local fdh = holder_of(o)
      if fdh then os.execute("kill -KILL " .. fdh) end
      h.remove_cgroup_tree(parent)
    end)
    a = u.until_true(function() return u.status(o).a.pid end, "a running")
    os.execute("kill -KILL " .. o.pid)
    u.until_true(function() return gone(o.pid) end, "orch to die")
    o2 = start("128:128", policy, { ORCH_TEST_TAKE = "1" }, o)
    u.until_true(function()
      return h.slurp(o.dir .. "/err"):find("out of file descriptors: taking over what the previous orch of "
        .. o.sock .. " left waits until some are free", 1, true)
    end, "the take-over to wait for fds")
    os.execute("kill -TERM " .. o2.pid)
    u.until_true(function() return gone(o2.pid) end, "orch to exit")
    local err = h.slurp(o.dir .. "/err")
    assert.is_false(h.alive(a), "the killed orch's service runs on:\n" .. err)
    assert.matches("stopping what is left in orch's cgroup tree [^\n]*: " .. a, err)
    assert.is_nil(err:find("TERM not sent", 1, true), err)
    assert.are.equal("TERM\n", h.slurp(o.dir .. "/a.term"), err)
    assert.is_nil(h.orch.cgroup.open(parent), parent .. " left behind:\n" .. err)
  end)
end)

describe("an adopted fd holder at shutdown", function()
  -- A holder orch took over from a killed orch is not orch's child: it
  -- ended only of its bye, and a bye that could not go (orch's end of the
  -- conversation not opened for want of fds, the holder's socket file
  -- removed) left it running until orch killed it 5 s later.
  it("is TERMed when its bye cannot go, and ends of it at once", function()
    local policy = [[
      local sup = require "orch.supervisor"
      sup.service { name = "a", cmd = { "sleep", "1000" } }
      sup.run()
    ]]
    local o = start("1024:1024", policy)
    local o2, a, fdh
    local parent = require("orch.supervisor.cgroup").socket_parent(o.sock)
    finally(function()
      for _, x in ipairs({ o, o2 }) do
        if x and h.alive(x.pid) then os.execute("kill -KILL " .. x.pid) end
      end
      if a then os.execute("kill -KILL " .. a .. " 2>/dev/null") end
      if fdh and h.alive(fdh) then os.execute("kill -KILL " .. fdh) end
      h.remove_cgroup_tree(parent)
    end)
    a = u.until_true(function() return u.status(o).a.pid end, "a running")
    fdh = u.until_true(function()
      local pid = holder_of(o)
      return pid and h.holds_pipes(pid, { a }) and pid
    end, "the fd holder to hold a's pipe")
    os.execute("kill -KILL " .. o.pid)
    u.until_true(function() return gone(o.pid) end, "orch to die")
    o2 = start("1024:1024", policy, nil, o)
    u.until_true(function() return h.slurp(o.dir .. "/err"):find("a: adopted pid " .. a, 1, true) end, "a adopted")
    assert(os.remove(o.sock .. ".holder"))
    os.execute("kill -TERM " .. o2.pid)
    u.until_true(function() return gone(o2.pid) end, "orch to exit")
    local err = h.slurp(o.dir .. "/err")
    assert.matches("every service is stopped", err, 1, true)
    assert.is_nil(err:find("fd holder %(pid %d+%)[^\n]*killed"), err)
    assert.is_false(h.alive(fdh), err)
  end)
end)

-- cg:kill with another signal than KILL lists the tree and pins each
-- process with a pidfd, then lists again to confirm the pins. At EMFILE
-- that second listing (an fd for the directory, one for each cgroup below
-- and one for its cgroup.procs, on top of the pins) failed, or left out
-- the cgroups it could not open as if removed: a tree of two listed
-- processes got "too many open files" or 0, and no signal.
describe("cg:kill with every fd taken", function()
  it("signals every process of a tree and returns how many", function()
    local name = h.cgroup_name()
    local top = assert(h.orch.cgroup.create(name))
    local x = assert(h.orch.cgroup.create(name .. "/x"))
    local y = assert(h.orch.cgroup.create(name .. "/x/y"))
    local o
    finally(function()
      if o and h.alive(o.pid) then os.execute("kill -KILL " .. o.pid) end
      h.remove_cgroup_tree(name)
      for _, cg in ipairs({ top, x, y }) do cg:close() end
    end)
    -- orch kills the tree when the file go appears (os.remove needs no
    -- fd), with every fd taken; what the TERM did not reach it KILLs.
    o = start("128:128", TAKE .. [[
      local top = assert(orch.cgroup.open(os.getenv("CG")))
      orch.task(function()
        while not os.remove(DIR .. "/go") do orch.sleep(0.02) end
        local held = TAKE()
        local n, err, code = top:kill("TERM")
        FREE()
        top:wait_empty(5)
        if top:populated() then top:kill() end
        local f = assert(io.open(DIR .. "/result", "w"))
        f:write(string.format("held %d: %s %s %s\n", held, tostring(n), tostring(err), tostring(code)))
        f:close()
      end)
    ]], { CG = name })
    local how = {}
    h.run(function()
      -- busted's children, not orch's: orch pins them with pidfds.
      local ps = {}
      for i, cg in ipairs({ x, y, y }) do ps[i] = assert(h.orch.spawn { "sleep", "1000", cgroup = cg }) end
      h.write(o.dir .. "/go", "")
      for i, p in ipairs(ps) do how[i] = select(2, p:wait()) end
    end)
    local result = u.until_true(function()
      local r = h.slurp(o.dir .. "/result")
      return r:find("\n$") and r
    end, "orch's result")
    assert.matches("^held %d+: 3 nil nil\n$", result)
    assert.are.same({ "TERM", "TERM", "TERM" }, how, result)
  end)
end)

-- At a pids limit (pids.max of orch's cgroup reached: a runaway service,
-- a container's limit), no process and no thread can be made. libuv
-- aborts the process when it cannot make the threads of its pool, which
-- orch started at its first use (a host name to resolve, mmap:sync, the
-- terminal's file reads): a stop hook that resolved a host name there
-- killed orch, and left its services running unsupervised. A supervisor
-- starts the pool at sup.run (the probe that each use makes first could
-- not hold what it probed: a process of the same cgroup could take the
-- last pids before libuv made its threads); elsewhere the use fails.
describe("a pids limit reached", function()
  it("a host name is resolved (a stop hook's too: the pool runs since sup.run), spawns fail, the stop ends, orch exits and removes its tree", function()
    local o = start("1024:1024", [[
      local sup = require "orch.supervisor"
      sup.service { name = "a", cmd = { "sleep", "1000" },
        stop = { timeout = 5, fn = function(svc)
          local p, err = orch.spawn { "true" }
          io.stderr:write("hook spawn: ", tostring(err), "\n")
          local s, cerr, code = orch.connect { host = "localhost.localdomain.", port = 1 }
          io.stderr:write("hook connect: ", tostring(code), "\n")
        end } }
      sup.run()
    ]])
    local parent = require("orch.supervisor.cgroup").socket_parent(o.sock)
    local cg = assert(h.orch.cgroup.create(h.cgroup_name(), { controllers = { "pids" } }))
    local pid
    finally(function()
      if h.alive(o.pid) then os.execute("kill -KILL " .. o.pid) end
      if pid then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
      h.remove_cgroup_tree(parent)
      cg:set { pids_max = "max" }
      h.run(function() cg:wait_empty(10) end)
      cg:remove()
      cg:close()
    end)
    pid = u.until_true(function() return u.status(o).a.pid end, "a running")
    -- orch alone in a cgroup that holds one task at most (it has more:
    -- its loop and the pool's threads; one without the pool).
    assert(cg:set { pids_max = 1 })
    assert(cg:add(o.pid))
    assert.is_true(cg:stat().pids_current >= 1)
    local code, out, err = u.ctl_cli(o, "eval",
      "local s, e, c = orch.connect { host = 'localhost.localdomain.', port = 1 } return tostring(e) .. ' ' .. tostring(c)")
    assert.are.equal(0, code, err)
    -- (Resolved or not, on the pool: EAI_NONAME where the name is unknown.)
    assert.is_nil(out:find("EAGAIN", 1, true), out)
    assert.matches("connect: [^\n]* E[%u_]+", out)
    assert.is_true(h.alive(o.pid))
    os.execute("kill -TERM " .. o.pid)
    u.until_true(function() return gone(o.pid) end, "orch to exit")
    local log = h.slurp(o.dir .. "/err")
    assert.matches("hook spawn: spawn: [^\n]*resource temporarily unavailable", log)
    assert.matches("hook connect: E[%u_]+\n", log)
    assert.is_nil(log:find("hook connect: EAGAIN", 1, true), log)
    assert.matches("every service is stopped", log, 1, true)
    assert.is_false(h.alive(pid))
    assert.is_nil(h.orch.cgroup.open(parent), parent .. " left behind:\n" .. log)
  end)

  it("an orch that is no supervisor fails the use of the pool with EAGAIN, and lives on", function()
    local cg = assert(h.orch.cgroup.create(h.cgroup_name(), { controllers = { "pids" } }))
    local dir = h.tmpdir()
    local p
    finally(function()
      if p and p:running() then h.run(function() p:kill("KILL") p:wait() end) end
      cg:set { pids_max = "max" }
      h.run(function() cg:wait_empty(10) end)
      cg:remove()
      cg:close()
    end)
    local out = {}
    h.run(function()
      p = assert(h.orch.spawn { h.bin, "-e", string.format([[
        print("up") io.stdout:flush()
        while not os.remove(%q) do orch.sleep(0.02) end
        local s, e, c = orch.connect { host = "localhost.localdomain.", port = 1 }
        print(tostring(e), tostring(c))
      ]], dir .. "/go"), cgroup = cg, stdout = "pipe" })
      out[1] = p.stdout:read_line()
      -- One thread, the loop's: the pool has not started.
      assert(cg:set { pids_max = 1 })
      assert.are.equal(1, cg:stat().pids_current)
      h.write(dir .. "/go", "")
      out[2] = p.stdout:read_line()
      p.stdout:close()
      out[3] = p:wait()
    end)
    assert.are.equal("up", out[1])
    assert.matches("^connect: localhost.localdomain.: cannot start the threads that resolve host names: [^\t]*\tEAGAIN$", out[2])
    assert.are.equal(0, out[3])
  end)
end)

describe("SIGTERM with every fd taken, a service logging to a file", function()
  -- Its log file is opened for each batch of lines: at EMFILE the open
  -- failed, and the lines a service writes as it stops (its last words,
  -- what one needs to read after a shutdown) were dropped.
  it("the lines it writes as it stops reach its log file", function()
    local o = start("128:128", TAKE .. [[
      local sup = require "orch.supervisor"
      assert(os.execute("mkdir -m 700 " .. DIR .. "/logs"))
      -- (f is an orch with a TERM handler, set before its first line, not
      -- a shell's trap: dash, forking its next sleep as the TERM came,
      -- could end of it without running its trap, as 8dd23fd found in the
      -- take-over test.)
      sup.service { name = "f", cmd = { orch.exepath(), "-e", "orch.signal.on('TERM', function() "
        .. "io.stdout:write('bye\\n') io.stdout:flush() os.exit(0) end) "
        .. "io.stdout:write('hello\\n') io.stdout:flush() orch.sleep(1e6)" },
        log = { dir = DIR .. "/logs" },
        -- Its stop takes every fd first: nothing the stop frees is there
        -- when f's last line comes.
        stop = { timeout = 10, fn = function(svc)
          io.stdout:write("held ", TAKE(), "\n") io.stdout:flush()
          svc:signal("TERM")
          svc:wait_exit(10)
        end } }
      sup.run()
    ]])
    local parent = require("orch.supervisor.cgroup").socket_parent(o.sock)
    local pid
    finally(function()
      if h.alive(o.pid) then os.execute("kill -KILL " .. o.pid) end
      if pid then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
      h.remove_cgroup_tree(parent)
    end)
    local logf = o.dir .. "/logs/f.log"
    u.until_true(function() return h.slurp(logf) == "hello\n" end, "f's first line in its file")
    pid = u.status(o).f.pid
    os.execute("kill -TERM " .. o.pid)
    u.until_true(function() return gone(o.pid) end, "orch to exit")
    local err = h.slurp(o.dir .. "/err")
    assert.matches("held %d+", h.slurp(o.dir .. "/out"))
    assert.matches("f: stopped", err, 1, true)
    assert.are.equal("hello\nbye\n", h.slurp(logf), err)
    assert.is_false(h.alive(pid))
    assert.is_nil(h.orch.cgroup.open(parent), parent .. " left behind:\n" .. err)
  end)
end)
