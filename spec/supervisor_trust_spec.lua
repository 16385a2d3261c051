-- What one service's code (its hooks, its restart or stop function) and a
-- runaway Lua time budget can do to the others and to the supervisor.
local u = require "spec.supervisor_util"
local orch = u.orch

describe("supervisor trust", function()
  it("keeps the configuration tables services share read-only: a hook's write changes no other service", function()
    u.with(function(s, logs, dir)
      local other = u.h.tmpdir()
      local tried = {}
      local function try(what, fn)
        local ok, err = pcall(fn)
        tried[#tried + 1] = { what = what, ok = ok, err = tostring(err) }
      end
      -- a and b give the same log options (one shared configuration) and
      -- no stop, backoff, depends_on or success_codes (the defaults').
      s.service { name = "a", cmd = { "sh", "-c", "echo a; exec sleep 60" }, log = { dir = dir },
        on_start = function(svc)
          try("log.dir", function() svc.cfg.log.dir = other end)
          try("stop.timeout", function() svc.cfg.stop.timeout = 0 end)
          try("depends_on", function() table.insert(svc.cfg.depends_on, "nosuch") end)
          try("backoff.initial", function() svc.cfg.backoff.initial = 99 end)
          try("success", function() svc.cfg.success[1] = true end)
          try("success_codes", function() svc.cfg.success_codes[2] = 1 end)
          try("start_limit.burst", function() svc.cfg.start_limit.burst = 1 end)
          -- Without a pcall: the hook fails, and says why.
          svc.cfg.log.keep = 0
        end }
      s.service { name = "b", cmd = { "sh", "-c", "echo b; exec sleep 60" }, log = { dir = dir } }
      s.service { name = "c", cmd = { "sh", "-c", "exec sleep 60" }, log = false, backoff = 2,
        on_start = function(svc)
          try("inherit", function() svc.cfg.log.inherit = nil end)
          try("constant backoff", function() svc.cfg.backoff.max = 0 end)
        end }
      s.service { name = "d", cmd = { "sh", "-c", "exec sleep 60" }, log = false, backoff = 2 }
      assert(s.start("a"))
      assert(s.start("c"))
      assert.is_true(u.until_true(function() return #tried == 9 and u.logged(logs, "a: on_start hook failed") end))
      for _, t in ipairs(tried) do
        assert.is_false(t.ok, t.what .. " was written")
        assert.matches("attempt to change a configuration that services share %(key .-%): configurations are read%-only", t.err, 1, false)
      end
      assert.truthy(logs[u.logged(logs, "a: on_start hook failed")]:find("key \"keep\"", 1, true))
      -- b and d start with the configuration they were given.
      assert(s.start("b"))
      assert(s.start("d"))
      assert.is_true(u.until_true(function()
        local f = io.open(dir .. "/b.log")
        local text = f and f:read("a")
        if f then f:close() end
        return text == "b\n"
      end))
      assert.is_nil(io.open(other .. "/b.log"))
      local b, d = s.instance("b").cfg, s.instance("d").cfg
      assert.are.equal(dir, b.log.dir)
      assert.are.equal(5, b.log.keep)
      assert.are.equal(10, b.stop.timeout)
      assert.are.equal(0, #b.depends_on)
      assert.are.equal(0.1, b.backoff.initial)
      assert.is_nil(b.success[1])
      assert.are.same({ 0 }, { table.unpack(b.success_codes) })
      assert.are.equal(5, b.start_limit.burst)
      assert.is_true(d.log.inherit)
      assert.are.equal(2, d.backoff.max)
      -- Read as before: pairs, #, ipairs, and the definitions given back.
      local keys = {}
      for k in pairs(b.log) do keys[#keys + 1] = k end
      assert.are.same({ "dir" }, keys)
      for _, def in ipairs(s.services()) do
        if def.name == "b" then assert.are.same({ dir = dir }, def.log) end
        if def.name == "d" then assert.are.equal(2, def.backoff) end
      end
      assert.are.equal(1, #s.instance("a").cfg.success_codes)
      for _, c in ipairs(s.instance("a").cfg.success_codes) do assert.are.equal(0, c) end
    end)
  end)
end)

describe("the state record after a change of many", function()
  local h = u.h
  local cu = require "spec.ctl_util"

  -- `orch run --socket DIR/ctl.sock DIR/policy.lua` in the background: its pid.
  local function run(d, n)
    local pid = math.tointeger(tonumber((h.sh(string.format(
      "cd %s && { %s run --socket %s policy.lua >out%d 2>err%d & echo $!; }",
      h.shquote(d), h.shquote(h.bin), h.shquote(d .. "/ctl.sock"), n, n)))))
    cu.until_true(function()
      if not h.alive(pid) then error("orch run ended early:\n" .. h.slurp(d .. "/err" .. n), 0) end
      return h.cli({ "ctl", "--socket", d .. "/ctl.sock", "ping" }) == 0
    end, "orch to answer")
    return pid
  end

  -- 250 services of 200-byte names: the lines of their changes (a stop of
  -- all) are about 70 KiB, more than one append to the journal takes
  -- (orch.private.append: 64 KiB), while the record is larger still.
  it("holds a stop of every service when its lines are more than one journal write: after a kill -9 none restarts", function()
    local d = h.tmpdir()
    local token = string.format("trustrec_%d_%d", orch.getpid(), os.time())
    h.write(d .. "/policy.lua", string.format("local TOKEN = %q\n", token) .. [[
      local sup = require "orch.supervisor"
      sup.configure { env = { ORCH_SPEC_RUN = TOKEN }, log = false }
      for i = 1, 250 do sup.service { name = string.rep("n", 200) .. i, cmd = { "sleep", "1000" }, log = "null" } end
      sup.run()
      orch.task(function() orch.sleep(1e6) end)
    ]])
    local o = { sock = d .. "/ctl.sock", dir = d }
    local pids = {}
    finally(function()
      for _, p in ipairs(pids) do if h.alive(p) then os.execute("kill -KILL " .. p) end end
      for _, p in ipairs(h.leftovers(token)) do os.execute("kill -KILL " .. p) end
      -- The cgroup tree a killed orch left (when the test failed before
      -- the second orch took it over and shut down).
      h.remove_cgroup_tree(require("orch.supervisor.cgroup").socket_parent(o.sock))
    end)
    pids[1] = run(d, 1)
    cu.until_true(function() return #h.leftovers(token) == 250 end, "250 services to run")
    local code, _, err = cu.ctl_cli(o, "stop", "all")
    assert.are.equal(0, code, err)
    -- The stop reaches the file (the stop's pass changes all 250 entries
    -- in one sync: more than one journal write, so a record written whole),
    -- not an error of orch's own. The exits that follow may come in more
    -- than one sync (a slow machine: ASan): those go to the journal, read
    -- over the record as the next orch reads them.
    cu.until_true(function()
      local e = h.slurp(d .. "/err1")
      if e:find("more than 64 KiB", 1, true) then error("the sync failed:\n" .. e, 0) end
      local by = cu.recorded(o.sock)
      if not by then return false end
      local n = 0
      for _, x in pairs(by) do
        if x.state == "stopped" and x.want == false then n = n + 1 end
      end
      return n == 250
    end, "the record and journal to name the 250 services stopped")
    os.execute("kill -KILL " .. pids[1])
    cu.until_true(function() return not h.alive(pids[1]) end, "orch to die")
    pids[2] = run(d, 2)
    local st = cu.status(o)
    local n = 0
    for _, s in pairs(st) do
      assert.are.equal("stopped", s.state, s.name)
      n = n + 1
    end
    assert.are.equal(250, n)
    assert.are.same({}, h.leftovers(token))
    code, _, err = cu.ctl_cli(o, "shutdown")
    assert.are.equal(0, code, err)
    cu.until_true(function() return not h.alive(pids[2]) end, "orch to exit")
    cu.sanitizer_clean(h.slurp(d .. "/err1") .. h.slurp(d .. "/err2"), "orch run")
  end)
end)

describe("a run's cgroup", function()
  local h = u.h
  it("is made for a service whose name the kernel takes for no cgroup (cgroup.*, more than 255 bytes)", function()
    u.with(function(s)
      local parent = h.cgroup_name()
      s.configure { cgroup = parent }
      local long = string.rep("l", 300)
      local ok, err = pcall(function()
        s.service { name = "cgroup.procs", cmd = { "sleep", "600" } }
        s.service { name = long, cmd = { "sleep", "600" }, numprocs = 2 }
        -- (Raised 'each component of a cgroup path must be a plain name'.)
        assert(s.start("all"))
        assert.is_true(u.until_true(function()
          for _, st in ipairs(s.status()) do if st.state ~= "running" then return false end end
          return true
        end), "every service to run")
        local names = {}
        for _, inst in ipairs(s.instances()) do
          assert(inst.run.cgroup, inst.name .. " has no cgroup")
          names[#names + 1] = inst.run.cgroup:path():match("[^/]+$")
        end
        assert.matches("^_cgroup%.procs%.%d+$", names[1])
        assert.matches("^" .. string.rep("l", 200) .. "%.%d+$", names[2])
        assert.matches("^" .. string.rep("l", 200) .. "%.%d+$", names[3])
        assert.are_not.equal(names[2], names[3])
        assert(s.stop("all"))
      end)
      s.close()
      assert.is_nil(u.orch.cgroup.open(parent))
      if not ok then error(err, 0) end
    end)
  end)
end)
