-- orch in a pid namespace without a /proc of its own (`unshare --pid
-- --fork` without --mount-proc): /proc is the parent namespace's, where
-- /proc/3 is not orch's pid 3. orch notices (orch.proc.procfs), reads a
-- process's files through the number /proc knows it by (a pidfd's fdinfo),
-- refuses what it cannot check, and a supervisor killed with SIGKILL is
-- taken over by the next one: its services adopted, not killed as strays
-- (their cgroups and start times were read from the host's processes).
local h = require "spec.helper"
local u = require "spec.ctl_util"
local cjson = require "cjson"
local orch = h.orch

-- Whether orch's fd holder (a child of orch) holds the pipe that is each
-- other child's stdout (numbers as this namespace sees them).
local function held(orch_pid)
  local holder, pipes, outs = nil, {}, {}
  for _, k in ipairs(h.children(orch_pid)) do
    if h.slurp("/proc/" .. k .. "/cmdline"):find("fdholder", 1, true) then holder = k
    else outs[#outs + 1] = h.sh("readlink /proc/" .. k .. "/fd/1") end
  end
  if not holder or #outs < 2 then return false end
  for _, l in ipairs(h.lines(h.sh("ls -l /proc/" .. holder .. "/fd | sed -n 's/.* -> //p'"))) do pipes[l] = true end
  for _, l in ipairs(outs) do if not (l:match("^pipe:") and pipes[l]) then return false end end
  return true
end

describe("a pid namespace without its own /proc", function()
  it("reads processes through pidfds and checks a kill's start time against the right process", function()
    local dir = h.tmpdir()
    local script = dir .. "/probe.lua"
    h.write(script, [[
      local p = assert(orch.spawn { "sleep", "30" })
      local info = assert(orch.proc.info(p.pid))
      local own = assert(orch.proc.info(orch.getpid()))
      local start = info.start_time
      local out = {
        procfs = orch.proc.procfs and orch.proc.procfs(), pid = p.pid, name = info.name, own = own.name,
        wrong = select(3, orch.kill(p.pid, "TERM", start + 1)),
        children = select(3, orch.proc.children(orch.getpid())),
        cgroup = orch.cgroup and orch.cgroup.of(p.pid) == orch.cgroup.of(orch.getpid()),
      }
      out.right = orch.kill(p.pid, "TERM", start)
      out.code = select(2, p:wait())
      io.stdout:write(require("cjson").encode(out), "\n")
    ]])
    local code, out, err
    h.run(function()
      local p = assert(orch.spawn { "unshare", "--pid", "--fork", h.bin, "run", script,
        stdout = dir .. "/out", stderr = dir .. "/err" })
      code = p:wait(60)
      if code == nil then
        p:kill("KILL")
        p:wait()
      end
      out, err = h.slurp(dir .. "/out"), h.slurp(dir .. "/err")
    end, 90)
    u.sanitizer_clean(err, "orch run")
    assert.are.equal(0, code, err)
    local r = cjson.decode(out)
    -- orch is PID 1 in there: its sleep is 2, which /proc/2 is not.
    assert.are.equal("sleep", r.name)
    assert.are.equal("foreign", r.procfs)
    assert.are.equal("orch", r.own)
    assert.are.equal("ESRCH", r.wrong)          -- another start time: refused
    assert.is_true(r.right)                     -- its own: signalled
    assert.are.equal("TERM", r.code)
    assert.are.equal("EXDEV", r.children)       -- numbers of another namespace
    if r.cgroup ~= nil then assert.is_true(r.cgroup) end
  end)

  it("a supervisor killed with SIGKILL: the next one adopts its services and says where /proc is from", function()
    local dir = h.tmpdir()
    local sock = dir .. "/ctl.sock"
    h.write(dir .. "/policy.lua", [[
      local sup = require "orch.supervisor"
      sup.service { name = "a", cmd = { "sleep", "1000" } }
      sup.service { name = "b", cmd = { "sleep", "1000" } }
      sup.run()
    ]])
    local function status()
      local c, o = h.cli({ "ctl", "--socket", sock, "--json", "status" })
      if c ~= 0 then return nil end
      local by = {}
      for _, s in ipairs(cjson.decode(o).services) do by[s.name] = s end
      return by.a and by.b and by.a.state == "running" and by.b.state == "running" and by
    end
    local before, after, err, text, code
    h.run(function()
      -- The namespace's PID 1 is a shell that outlives the first orch.
      local init = assert(orch.spawn { "unshare", "--pid", "--fork", "sh", "-c",
        '"$0" run --socket "$1" "$2/policy.lua" >"$2/out1" 2>"$2/err1"; exec sleep 1000', h.bin, sock, dir,
        stdout = "null", stderr = "null" })
      local second, nsinit
      local ok, e = pcall(function()
        before = u.until_true(status, "the first orch's services")
        -- unshare's child is the namespace's PID 1, the shell; orch its child.
        nsinit = u.until_true(function() return h.children(init.pid)[1] end, "the namespace's PID 1")
        local first = u.until_true(function() return h.children(nsinit)[1] end, "the first orch")
        -- Not before the fd holder holds both log pipes (it starts after the
        -- services): one killed before it did is no case of adoption.
        u.until_true(function() return held(first) end, "the holder to hold both log pipes")
        orch.kill(first, "KILL")
        u.until_true(function() return not h.alive(first) end, "the first orch's end")
        second = assert(orch.spawn { "nsenter", "-t", tostring(nsinit), "--pid", "--", h.bin, "run", "--socket", sock,
          dir .. "/policy.lua", stdout = dir .. "/out2", stderr = dir .. "/err2" })
        after = u.until_true(function()
          local s = status()
          return s and h.slurp(dir .. "/err2"):find("adopted pid", 1, true) and s
        end, "the second orch's services")
        text = select(2, h.cli({ "ctl", "--socket", sock, "status" }))
        -- (nsenter passes no signal on: TERM to its child, the orch.)
        orch.kill(u.until_true(function() return h.children(second.pid)[1] end, "the second orch"), "TERM")
        code = second:wait(60)
      end)
      if second and second:wait(0) == nil then second:kill("KILL") second:wait() end
      -- The namespace (the services too) ends with its PID 1 (unshare's
      -- child: a KILL of unshare itself would leave it running).
      nsinit = nsinit or h.children(init.pid)[1]
      if nsinit then orch.kill(nsinit, "KILL") end
      if not init:wait(30) then
        init:kill("KILL")
        init:wait()
      end
      if not ok then error(e, 0) end
    end, 150)
    err = h.slurp(dir .. "/err2")
    u.sanitizer_clean(h.slurp(dir .. "/err1") .. err, "orch run")
    assert.matches("/proc is another pid namespace's", err, 1, true)
    for _, n in ipairs { "a", "b" } do
      assert.are.equal(before[n].pid, after[n].pid, n .. " adopted, not started again:\n" .. err)
      assert.are.equal(0, math.tointeger(after[n].restarts), err)
    end
    assert.is_nil(err:find("killing 1 process", 1, true), err)
    assert.matches("/proc is another pid namespace's", text, 1, true)
    assert.are.equal(0, code, err)
  end)
end)
