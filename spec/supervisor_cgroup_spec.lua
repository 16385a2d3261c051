-- The supervisor's containment (lua/orch/supervisor/cgroup.lua): each run
-- of an instance in its own cgroup, stops that leave nothing behind,
-- daemons tracked by their cgroup, cgroup limits and the OOM exit reason,
-- whole-service accounting, freeze/thaw, and the honest fallback. Each
-- supervisor's parent cgroup is unique to the run (h.cgroup_name) and
-- removed by sup.close.
local u = require "spec.supervisor_util"
local h, orch = u.h, u.orch
local cjson = require "cjson"
local cu = require "spec.ctl_util"

local PROC = u.progs .. "/prog_proc"
local MEM = u.progs .. "/prog_sup_mem"

-- u.with, with a parent cgroup of this run configured.
local function with_cgroups(fn, deadline)
  return u.with(function(s, logs, dir, output, token)
    local parent = h.cgroup_name()
    s.configure{ cgroup = parent }
    local ok, err = xpcall(fn, debug.traceback, s, logs, dir, output, token, parent)
    s.close()
    -- sup.close removed the parent and every run's cgroup.
    assert.is_nil(orch.cgroup.open(parent))
    if not ok then error(err, 0) end
  end, deadline)
end

local function running(s, name)
  assert(u.until_true(function() return u.st(s, name).state == "running" end), name .. " never ran")
  return u.st(s, name)
end

describe("supervisor in cgroups", function()
  it("runs each instance in its own cgroup and accounts for all of its processes", function()
    with_cgroups(function(s, _, _, _, _, parent)
      -- The limits give memory and tasks accounting on a hybrid host too.
      s.service{ name = "web", numprocs = 2, cmd = u.sh("sleep 600 & sleep 600 & wait"),
                 limits = { memory_max = "1G", pids_max = 100 } }
      s.start("web")
      local a, b = running(s, "web:1"), running(s, "web:2")
      local self = orch.cgroup.self()
      local base = (self == "/" and "" or self) .. "/" .. parent
      assert.matches("^" .. base:gsub("%p", "%%%0") .. "/web@1%.%d+$", a.cgroup)
      assert.matches("^" .. base:gsub("%p", "%%%0") .. "/web@2%.%d+$", b.cgroup)
      assert.are.equal(a.cgroup, orch.cgroup.of(a.pid))
      assert.is_true(u.until_true(function() return u.st(s, "web:1").tasks == 3 end), "three processes counted")
      local st = u.st(s, "web:1")
      assert.is_number(st.memory)
      assert.is_number(st.cpu)
      local cg = assert(orch.cgroup.open(a.cgroup))
      assert.are.equal(3, #cg:procs())
      cg:close()
    end)
  end)

  it("keeps a double-forked setsid daemon without pidfile supervised until its cgroup empties", function()
    with_cgroups(function(s, logs)
      s.service{ name = "d", restart = "never", cmd = { PROC, "daemon", "600", "0" } }
      s.start("d")
      local st = running(s, "d")
      assert.is_true(u.until_true(function() return u.logged(logs, "the service goes on in its cgroup") end))
      local cg = assert(orch.cgroup.open(st.cgroup))
      -- The daemon's intermediate parent may not have exited yet.
      assert.is_true(u.until_true(function() return #cg:procs() == 1 end), "only the daemon left")
      local pids = cg:procs()
      assert.are_not.equal(st.pid, pids[1])
      assert.are.equal("running", u.st(s, "d").state)
      -- The daemon's own end is the service's end.
      assert(orch.kill(pids[1], "TERM"))
      assert.is_true(u.until_true(function() return u.st(s, "d").state == "exited" end))
      assert.are.equal("its cgroup emptied", u.st(s, "d").reason)
      cg:close()
    end)
  end)

  it("a stop signals every process of the cgroup and returns once none is left", function()
    with_cgroups(function(s, _, _, _, token)
      -- sh starts a setsid escapee (its own session and group) that ignores
      -- TERM, then waits: only the cgroup still holds both.
      s.service{ name = "esc", stop = { timeout = 0.5 },
                 cmd = u.sh("setsid sh -c 'trap \"\" TERM; sleep 600 & wait' & wait") }
      s.start("esc")
      local st = running(s, "esc")
      -- sh, the escapee sh (setsid execs it), sleep.
      assert.is_true(u.until_true(function() return #u.leftovers(token) == 3 end), "three processes")
      local cg = assert(orch.cgroup.open(st.cgroup))
      assert(s.stop("esc"))
      assert.are.same({}, u.leftovers(token))
      -- The run's cgroup goes once empty.
      assert.is_true(u.until_true(function() return orch.cgroup.open(st.cgroup) == nil end))
      cg:close()
    end)
  end)

  it("a restart leaves none of the old run's processes, and orch's shutdown none at all", function()
    with_cgroups(function(s, _, _, _, token)
      s.service{ name = "esc", stop = { timeout = 0.5 },
                 cmd = u.sh("setsid sh -c 'trap \"\" TERM; sleep 600 & wait' & wait") }
      s.start("esc")
      running(s, "esc")
      assert.is_true(u.until_true(function() return #u.leftovers(token) == 3 end), "three processes")
      local old = u.leftovers(token)
      assert(s.restart("esc"))
      assert.is_true(u.until_true(function() return #u.leftovers(token) == 3 end), "three new processes")
      for _, pid in ipairs(old) do assert.is_false(h.alive(pid)) end
    end)
    local token = "cgexit" .. orch.getpid() .. "_" .. os.time()
    local script = h.script(string.format([[
local sup = require "orch.supervisor"
sup.configure{ log = false, cgroup = %q, env = { ORCH_SPEC_RUN = %q }, exit_when_idle = false }
sup.service{ name = "esc", cmd = { "sh", "-c", "setsid sh -c 'trap \"\" TERM; sleep 600 & wait' & wait" },
             stop = { timeout = 0.3 } }
sup.run()
orch.task(function()
  while #require("orch").cgroup.open(sup.status("esc")[1].cgroup):procs() < 3 do orch.sleep(0.01) end
  sup.shutdown(0)
end)
]], h.cgroup_name(), token))
    local code, _, err = h.cli({ "run", "--no-socket", script })
    assert.are.equal(0, code, err)
    assert.are.same({}, u.leftovers(token))
  end)

  it("writes cgroup limits before exec and reports an OOM kill as the exit reason", function()
    with_cgroups(function(s, logs)
      local seen
      s.service{ name = "hog", restart = "never", limits = { memory_max = "32M", pids_max = 16 },
                 cmd = { MEM, "256" }, on_exit = function(inst) seen = inst.reason end }
      s.start("hog")
      assert.is_true(u.until_true(function() return u.st(s, "hog").state == "exited" end))
      local st = u.st(s, "hog")
      assert.are.equal("KILL", st.exit_signal)
      assert.are.equal("killed by the OOM killer at memory.max 32M", st.reason)
      assert.is_true(u.until_true(function() return seen ~= nil end))
      assert.are.equal(st.reason, seen)
      assert.is_truthy(u.logged(logs, "killed by the OOM killer at memory.max 32M"))
    end)
  end)

  it("a pids_max limit makes fork fail inside the service", function()
    with_cgroups(function(s, _, _, output)
      s.service{ name = "forky", restart = "never", limits = { pids_max = 2 }, log = { stderr = true },
                 cmd = u.sh("sleep 600 & sleep 600 & sleep 600 & wait") }
      s.start("forky")
      assert.is_true(u.until_true(function()
        for _, l in ipairs(output.forky or {}) do if l:find("fork") then return true end end
      end), "a fork failure in the output")
    end)
  end)

  it("freezes and thaws a service (state frozen)", function()
    with_cgroups(function(s)
      s.service{ name = "f", cmd = u.sh("sleep 600") }
      s.start("f")
      local st = running(s, "f")
      assert(s.freeze("f"))
      assert.are.equal("frozen", u.st(s, "f").state)
      local cg = assert(orch.cgroup.open(st.cgroup))
      assert(cg:wait("frozen", 20))
      assert(s.thaw("f"))
      assert.are.equal("running", u.st(s, "f").state)
      assert(cg:wait("thawed", 20))
      -- A frozen service still stops.
      assert(s.freeze("f"))
      assert(s.stop("f"))
      assert.are.equal("stopped", u.st(s, "f").state)
      cg:close()
      local _, _, code = s.freeze("nosuch")
      assert.are.equal("ENOENT", code)
      _, _, code = s.freeze("f")
      assert.are.equal("ESRCH", code)
    end)
  end)

  it("refuses a pidfile naming a process outside the service's cgroup", function()
    with_cgroups(function(s, logs, dir)
      -- The outsider is younger than the service (an older one is refused
      -- for that already): the service waits for its pid, then names it.
      local pidfile, handoff = dir .. "/d.pid", dir .. "/outsider"
      s.service{ name = "pf", restart = "never", pidfile = pidfile, start_timeout = 2,
                 cmd = u.sh("while [ ! -s " .. handoff .. " ]; do sleep 0.02; done; cat " .. handoff .. " > " .. pidfile) }
      s.start("pf")
      assert.is_true(s.wait("pf", "starting", 10))
      local outsider = assert(orch.spawn{ "sleep", "600" })
      local ok, err = pcall(function()
        h.write(handoff, outsider.pid .. "\n")
        assert.is_true(u.until_true(function()
          return u.logged(logs, "pid " .. outsider.pid .. " is not in the service's cgroup")
        end))
        assert.is_true(u.until_true(function() return u.st(s, "pf").state ~= "starting" end))
        assert.is_true(h.alive(outsider.pid))
      end)
      outsider:kill("KILL")
      outsider:wait()
      assert(ok, err)
    end)
    -- A pidfile made the supervisor make this process a subreaper: the
    -- tests after this one must not inherit the orphans of their shells.
    orch.proc.subreaper(false)
  end)

  it("without cgroups says so, runs by process group, and refuses cgroup limits", function()
    u.with(function(s, logs)
      s.configure{ cgroup = false }
      s.service{ name = "plain", cmd = u.sh("sleep 600") }
      s.service{ name = "limited", restart = "never", limits = { memory_max = "32M" }, cmd = u.sh("sleep 600") }
      s.start("plain")
      s.start("limited")
      local st = running(s, "plain")
      assert.is_nil(st.cgroup)
      assert.matches("turned off", st.cgroup_off)
      assert.are.equal(orch.cgroup.self(), orch.cgroup.of(st.pid))
      assert.is_true(u.until_true(function() return u.st(s, "limited").state ~= "starting" end))
      assert.matches("cgroup limits need cgroups, which are off", u.st(s, "limited").reason, 1, true)
      -- orch ctl status says so under its table.
      local lines = require("orch.cmd.ctl").format_status(s.status())
      assert.matches("^cgroups off: turned off", lines[#lines])
    end)
    h.check_raises{
      { function() u.supmod.new().configure{ cgroup = 1 } end, "option 'cgroup': parent cgroup path or false expected" },
    }
  end)

  it("without cgroups, a stop still finds a setsid child of the service through /proc", function()
    u.with(function(s, _, _, _, token)
      s.configure{ cgroup = false }
      -- The child leaves the process group (setsid) but stays sh's child.
      s.service{ name = "ses", stop = { timeout = 5 }, cmd = u.sh("setsid sleep 600 & wait") }
      s.start("ses")
      running(s, "ses")
      assert.is_true(u.until_true(function() return #u.leftovers(token) == 2 end), "two processes")
      assert(s.stop("ses"))
      assert.is_true(u.until_true(function() return #u.leftovers(token) == 0 end), "nothing left")
    end)
  end)

  it("as a user who may not write cgroups, says so once and still supervises", function()
    local script = h.script([[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stdout:write(m, "\n") end, exit_when_idle = true, persist = false }
sup.service{ name = "a", restart = "never", cmd = { "true" } }
sup.service{ name = "b", restart = "never", cmd = { "true" } }
sup.run()
]])
    h.sh("chmod 755 " .. h.shquote(script:match("^(.*)/")))
    local out = h.sh("setpriv --reuid=65534 --regid=65534 --clear-groups " .. h.shquote(h.bin) .. " run "
      .. h.shquote(script) .. " 2>&1")
    local _, n = out:gsub("cgroups off: cgroup%.create: [^\n]*permission denied", "")
    assert.are.equal(1, n, out)
    assert.matches("a: exited with code 0", out)
  end)

  it("orch ctl stop leaves no process of a service with a setsid escapee, and freeze/thaw work", function()
    local token = "cgctl" .. orch.getpid() .. "_" .. os.time()
    local o = cu.start(string.format([[
local sup = require "orch.supervisor"
sup.configure{ log = false, cgroup = %q, env = { ORCH_SPEC_RUN = %q } }
sup.service{ name = "esc", cmd = { "sh", "-c", "setsid sh -c 'trap \"\" TERM; sleep 600 & wait' & wait" },
             stop = { timeout = 0.5 }, limits = { pids_max = 100 } }
sup.run()
assert(require("orch.ctl").serve{ socket = SOCK })
]], h.cgroup_name(), token))
    local ok, err = pcall(function()
      cu.until_true(function() return #u.leftovers(token) == 3 end, "three processes")
      local code, out = cu.ctl_cli(o, "freeze", "esc")
      assert.are.equal(0, code)
      assert.are.equal("esc: frozen\n", out)
      assert.are.equal("frozen", cu.status(o).esc.state)
      code, out = cu.ctl_cli(o, "thaw", "esc")
      assert.are.equal("esc: thawed\n", out)
      assert.are.equal("running", cu.status(o).esc.state)
      local _, js = cu.ctl_cli(o, "--json", "status")
      local st = cjson.decode(js).services[1]
      assert.is_string(st.cgroup)
      assert.are.equal(3, math.tointeger(st.tasks))
      code = cu.ctl_cli(o, "stop", "esc")
      assert.are.equal(0, code)
      assert.are.same({}, u.leftovers(token))
    end)
    cu.stop(o)
    for _, pid in ipairs(u.leftovers(token)) do orch.kill(pid, "KILL") end
    if not ok then error(err, 0) end
  end)
end)
