-- scripts/test itself: `scripts/test spec/x_spec.lua:PATTERN` runs the tests
-- of x_spec.lua whose names match PATTERN (busted's --filter), whatever
-- characters PATTERN holds. The real script runs, from a copy of scripts/
-- in a directory of its own (its ORCH_ROOT: its leftover checks look
-- there only, never at the suite around it), in the mode the pure v2 VM
-- uses (ORCH_TEST_IN_VM=1: the given specs and the leftover checks; no
-- install, build or ASan pass), on a spec file of its own.
local h = require "spec.helper"

local SPEC = [[
describe("quoting", function()
  it("it's one", function() end)
  it('says "hi"', function() end)
  it("a \\ backslash", function() end)
  it("the rest", function() error("a filter runs only what it names") end)
end)
]]

-- scripts/test (a copy, in a directory of its own, on the spec files FILES,
-- name = text, with the variables ENV, "NAME=VALUE ...") with these
-- arguments, in the VM's mode; what it printed, and its directory.
local function copy_run(env, files, ...)
  local root = h.tmpdir()
  os.execute("mkdir -p " .. h.shquote(root .. "/scripts") .. " " .. h.shquote(root .. "/spec"))
  for _, f in ipairs { "test", "lib.sh" } do
    assert(os.execute("cp -p " .. h.shquote(h.root .. "/scripts/" .. f) .. " " .. h.shquote(root .. "/scripts/")))
  end
  for name, text in pairs(files) do h.write(root .. "/spec/" .. name, text) end
  local args = {}
  for i, a in ipairs { ... } do args[i] = h.shquote(a) end
  -- (LD_PRELOAD: the ASan pass's, for orch, not for bash and busted.
  -- ORCH_TEST_IPCNS: the suite's, whose IPC namespace the copy would share:
  -- its leftover check then saw another spec file's SysV object, made
  -- while the copy ran.)
  return (h.sh("cd " .. h.shquote(root) .. " && env -u LD_PRELOAD -u ORCH_TEST_IPCNS ORCH_TEST_IN_VM=1 " .. env
    .. " timeout -k 5 300 scripts/test " .. table.concat(args, " ") .. " 2>&1")), root
end
local function run_copy(...) return (copy_run("", { ["q_spec.lua"] = SPEC }, ...)) end

-- A spec file that hangs in its second test: busted blocks opening a FIFO
-- nobody opens for writing, its child cat reads a pipe busted holds (it
-- ends when busted does).
local HANG = [[
describe("hang", function()
  it("passes", function() end)
  it("waits on a fifo", function()
    local child = io.popen("exec cat >/dev/null", "w")
    local f = io.open(os.getenv("HANG_FIFO"), "r")
    child:close()
    f:close()
  end)
end)
]]

describe("scripts/test", function()
  it("runs spec:PATTERN with an apostrophe, double quotes or a backslash in PATTERN", function()
    local out = run_copy("spec/q_spec.lua:it's", 'spec/q_spec.lua:says "hi"', "spec/q_spec.lua:a \\ backslash")
    assert.matches("^%d+ passed, 0 failed$", out:match("[^\n]*$"), nil, nil, out)
    -- Each one test, the one its PATTERN names.
    local n = 0
    for ok, failed in out:gmatch("\n  spec/q_spec%.lua:[^\n]-%s+(%d+) ok%s+(%d+) failed") do
      assert.are.same({ "1", "0" }, { ok, failed }, out)
      n = n + 1
    end
    assert.are.equal(3, n, out)
  end)

  -- A run killed before its end left its empty cgroups (orch-test.run<PID>x<TIME>,
  -- the 17:11 runs of 2026-12-07 in the pids hierarchy): the next run in the
  -- same place removes those of a shell that is gone, and no other.
  it("removes the empty cgroups a killed run left, not those of a live one", function()
    local mount
    for line in io.lines("/proc/self/mountinfo") do
      local mp, fstype = line:match("^%S+ %S+ %S+ %S+ (%S+) .- %- (%S+)")
      if fstype == "cgroup2" then mount = mp break end
    end
    assert.truthy(mount, "a cgroup v2 mount")
    local home = mount .. h.slurp("/proc/self/cgroup"):match("0::([^\n]*)")
    home = home:gsub("/$", "")
    -- A pid that is gone (reaped), and a live one (busted's own).
    local dead = math.tointeger(tonumber((h.sh("sh -c 'echo $$'"))))
    local stale = home .. "/orch-test.run" .. dead .. "x1"
    local live = home .. "/orch-test.run" .. h.orch.getpid() .. "x1"
    if not os.execute("mkdir " .. h.shquote(stale) .. " " .. h.shquote(stale .. "/inner") .. " " .. h.shquote(live)
        .. " 2>/dev/null") then
      error("cannot make cgroups in " .. home .. " (the spec runs as root in its own cgroup)")
    end
    finally(function()
      os.execute("rmdir " .. h.shquote(stale .. "/inner") .. " " .. h.shquote(stale) .. " " .. h.shquote(live) .. " 2>/dev/null")
    end)
    local out = run_copy("spec/q_spec.lua:it's")
    assert.matches("^%d+ passed, 0 failed$", out:match("[^\n]*$"), nil, nil, out)
    assert.is_nil(io.open(stale .. "/cgroup.procs"), "the killed run's cgroup is left")
    local f = io.open(live .. "/cgroup.procs")
    assert.truthy(f, "the live run's cgroup went")
    f:close()
  end)

  -- The VM's hang (session 18): a spec file's timeout equal to the VM's
  -- own, which killed the VM first, and nothing said where it waited. Past
  -- its timeout (on the whole file, or, as in the VM, on its log's last
  -- change) a spec file fails, and the run says which test it was in and
  -- what still ran of it (pid, parent, state, wchan, elapsed, args) before
  -- it was killed; the run goes on to its end.
  for _, t in ipairs {
    { what = "ORCH_TEST_SPEC_TIMEOUT", env = "ORCH_TEST_SPEC_TIMEOUT=3", why = "after 3 s" },
    { what = "ORCH_TEST_SPEC_IDLE", env = "ORCH_TEST_SPEC_TIMEOUT=300 ORCH_TEST_SPEC_IDLE=3",
      why = "after 3 s without a change to its log" },
  } do
    it("fails a spec file past " .. t.what .. ", with the test it hangs in and what still runs of it", function()
      local dir = h.tmpdir()
      local fifo = dir .. "/fifo"
      assert(os.execute("mkfifo " .. h.shquote(fifo)))
      local out = copy_run(t.env .. " HANG_FIFO=" .. h.shquote(fifo),
        { ["hang_spec.lua"] = HANG, ["q_spec.lua"] = SPEC }, "spec/hang_spec.lua", "spec/q_spec.lua:it's")
      assert.matches("^%d+ passed, 1 failed$", out:match("[^\n]*$"), nil, nil, out)
      assert.matches("\nFAILED: spec/hang_spec.lua %(release%)\n", out, nil, nil, out)
      assert.matches("\n  spec/q_spec.lua:it's%s+1 ok%s+0 failed", out, nil, nil, out)
      assert.is_truthy(out:find("scripts/test: spec/hang_spec.lua timed out " .. t.why
        .. ", in its test 2:\nspec/hang_spec.lua:3: hang waits on a fifo\n", 1, true), out)
      local busted = assert(out:match("still running %(busted is (%d+);"), out)
      -- busted and its child, each asleep in the kernel (a wchan).
      local b = out:match("\n%s*" .. busted .. " +%d+ S (%S+) +%d+s lua5.4 /usr/bin/busted [^\n]*spec/hang_spec.lua\n")
      local c = out:match("\n%s*%d+ +" .. busted .. " S (%S+) +%d+s cat\n")
      assert.truthy(b, out)
      assert.truthy(c, out)
      assert.are_not.equal("-", b, out)
      assert.are_not.equal("-", c, out)
    end)
  end
end)
