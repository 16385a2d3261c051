-- The signal state a spawned program starts with: every disposition at its
-- default and nothing blocked, whatever orch handles, ignores or inherited,
-- both when the kernel resets the handlers at the clone (clone3 with
-- CLONE_CLEAR_SIGHAND, which keeps ignored signals ignored) and in the
-- fallback where clone3 is missing (a seccomp filter that makes it fail with
-- ENOSYS, as older container runtimes do: prog_nosys clone3). Real processes: an
-- `orch run` script spawns `sleep` children, and the spec reads their
-- /proc/PID/status.
local h = require "spec.helper"
local orch = h.orch

local NOCLONE3 = { h.progs .. "/prog_nosys", "clone3" }

-- A signal's bit in a /proc/PID/status mask (hex).
local function has(mask, sig)
  return (tonumber(mask, 16) >> (sig - 1)) & 1 == 1
end

local function masks(pid)
  local s = h.slurp("/proc/" .. pid .. "/status")
  return { name = s:match("Name:%s*(%S+)"), blk = s:match("SigBlk:%s*(%x+)"),
           ign = s:match("SigIgn:%s*(%x+)"), cgt = s:match("SigCgt:%s*(%x+)") }
end

-- Handlers for TERM, USR1 and HUP; SIGPIPE ignored by orch itself; USR2
-- ignored after the first spawn (orch.signal.ignore tells the spawner);
-- TTOU ignored by the shell that started orch (orch handles INT and QUIT
-- itself, so those are caught there, not ignored). Three children: one
-- before USR2 is ignored, one after, one born in a cgroup (argv[1]: its
-- name), each a `sleep` the spec kills. Prints orch's pid and the three.
local SCRIPT = [[
local orch = require "orch"
local handlers = {}
for _, s in ipairs{ "TERM", "USR1", "HUP" } do handlers[#handlers + 1] = orch.signal.on(s, function() end) end
local first = assert(orch.spawn{ "sleep", "1000" })
assert(orch.signal.ignore("USR2"))
local second = assert(orch.spawn{ "sleep", "1000" })
local cg = assert(orch.cgroup.create(arg[1]))
local third = assert(orch.spawn{ "sleep", "1000", cgroup = cg })
print(orch.getpid(), first.pid, second.pid, third.pid)
io.stdout:flush()
first:wait() second:wait() third:wait()
assert(cg:wait_empty(20))
assert(cg:remove())
for _, hd in ipairs(handlers) do hd:stop() end
]]

local function check(wrapper)
  local script = h.script(SCRIPT)
  local cgname = h.cgroup_name()
  local p
  local pids = {}
  finally(function()
    -- After a failure: nothing of the run may be left.
    for i = #pids, 1, -1 do if h.alive(pids[i]) then orch.kill(pids[i], "KILL") end end
    if p then h.run(function() p:wait() if p.stdout then p.stdout:close() end end) end
    h.remove_cgroup_tree(cgname)
  end)
  h.run(function()
    local argv = { "bash", "-c", "trap '' TTOU; exec \"$@\"", "orch-under-ignores" }
    for _, a in ipairs(wrapper) do argv[#argv + 1] = a end
    for _, a in ipairs{ h.bin, "run", script, cgname } do argv[#argv + 1] = a end
    -- The sanitizer pass preloads its runtime into every program, which
    -- catches SEGV, BUS and FPE: `sleep` must run without it.
    argv.stdout, argv.env = "pipe", { LD_PRELOAD = false }
    p = assert(orch.spawn(argv))
    local line = assert(p.stdout:read_line())
    for n in line:gmatch("%d+") do pids[#pids + 1] = tonumber(n) end
    assert.are.equal(4, #pids)
    -- What orch itself has, so that the test means something.
    local m = masks(pids[1])
    for _, sig in ipairs{ 15, 10, 1 } do assert.is_true(has(m.cgt, sig), "orch handles " .. sig) end
    for _, sig in ipairs{ 13, 12, 22 } do assert.is_true(has(m.ign, sig), "orch ignores " .. sig) end
    for i = 2, 4 do
      local c = h.eventually(function()
        local cm = masks(pids[i])
        return cm.name == "sleep" and cm
      end, "child " .. i .. " runs sleep")
      assert.are.same({ name = "sleep", blk = "0000000000000000", ign = "0000000000000000",
                        cgt = "0000000000000000" }, c)
    end
    for i = 2, 4 do assert(orch.kill(pids[i], "KILL")) end
    assert.are.same({ 0, nil }, { p:wait() })
    p.stdout:close()
    p = nil
  end)
end

describe("a spawned program's signals", function()
  it("are all at their default, nothing blocked (clone3)", function()
    check({})
  end)

  it("are all at their default, nothing blocked, where clone3 fails with ENOSYS", function()
    check(NOCLONE3)
  end)
end)
