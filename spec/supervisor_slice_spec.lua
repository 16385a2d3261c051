-- A shutdown's stop runs orch's loop thread with the shortest scheduler
-- slice (0.1 ms; graph.lua's shutdown_slice, orch.proc._slice): a task
-- woken on orch's CPU during its bookkeeping after the services' exits runs
-- within 0.1 ms instead of at the end of the default slice and the tick
-- after it. A process spawned meanwhile (here a stop hook's) still starts
-- with the default slice. Read from the kernel (/proc/PID/sched, the
-- scheduler's debug file: where it shows no slice, as before Linux 6.12,
-- only the shutdown's end is asserted). A real orch, real services held in
-- their stop (prog_sigcount: the stop signal blocked until a gate opens).
local h = require "spec.helper"
local orch = h.orch
local eventually = h.eventually

local COUNT = h.progs .. "/prog_sigcount"
local SIG = "RTMIN+3"
local SIGNUM = orch.signal.number(SIG)

-- The slice in ns (se.slice) a /proc/PID/sched text shows, or nil.
local function slice_in(text)
  return text and tonumber(text:match("se%.slice%s*:%s*(%d+)"))
end
-- A thread's slice, or nil.
local function slice_of(pid) return slice_in(h.slurp("/proc/" .. pid .. "/sched")) end
local HAS_SLICE = slice_of("self") ~= nil

describe("a shutdown's scheduler slice", function()
  it("is 0.1 ms for orch from its stop on, and the default for a process spawned meanwhile", function()
    h.run(function()
      local dir = h.tmpdir()
      local token = string.format("slice_%d_%d", orch.getpid(), os.time())
      local script = h.script(string.format([[
        local orch = require "orch"
        local sup = require "orch.supervisor"
        local COUNT, SIGNUM, SIG, dir = %q, %d, %q, %q
        sup.configure { runtime_dir = dir }
        sup.service { name = "a", cmd = { COUNT, tostring(SIGNUM), dir .. "/a", dir .. "/gate" },
                      stop = { signal = SIG, timeout = 60 } }
        -- Its stop hook spawns a process that reads its own slice.
        sup.service { name = "b", cmd = { COUNT, tostring(SIGNUM), dir .. "/b", dir .. "/gate" },
                      stop = { signal = SIG, timeout = 60, fn = function()
                        local p = assert(orch.spawn { "sh", "-c", "cat /proc/self/sched > " .. dir .. "/child.sched" })
                        p:wait()
                      end } }
        sup.run()
        assert(sup.wait("all", "running", 60))
        io.open(dir .. "/up", "w"):close()
      ]], COUNT, SIGNUM, SIG, dir))
      local p = assert(orch.spawn { h.bin, "run", script, stdout = "null", stderr = dir .. "/err",
        env = { ORCH_SPEC_RUN = token, ORCH_SOCKET = dir .. "/ctl.sock" } })
      local ok, err = pcall(function()
        -- Running is not enough: each must have blocked its stop signal
        -- (it writes its pid once it has), or the TERM may end it at once.
        eventually(function()
          return io.open(dir .. "/up") ~= nil and h.slurp(dir .. "/a") ~= nil and h.slurp(dir .. "/b") ~= nil
        end, "both services running, their stop signal blocked", 60)
        local default = slice_of(p.pid)
        assert.are.equal(HAS_SLICE, default ~= nil)
        assert.are_not.equal(100000, default, "orch's slice before its shutdown")
        assert.is_true(p:kill("TERM"))
        -- Both services hold their stop signal: orch is in its stop.
        if HAS_SLICE then
          eventually(function() return slice_of(p.pid) == 100000 end, "orch's slice of 0.1 ms in its shutdown's stop")
        end
        local child
        eventually(function()
          local s = h.slurp(dir .. "/child.sched")
          child = slice_in(s)
          return s ~= nil and (child ~= nil or not HAS_SLICE)
        end, "the stop hook's process's slice")
        assert.are.equal(default, child, "a process spawned in the stop: the default slice")
        h.write(dir .. "/gate", "")
        assert.are.same({ 0, nil }, { p:wait() })
        assert.are.same({}, h.leftovers(token))
      end)
      h.end_run(p, token, ok, err, dir .. "/err")
    end, 90)
  end)
end)
