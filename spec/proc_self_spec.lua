-- The process toolbox's details (issue 19): stopped and continued children
-- (WUNTRACED/WCONTINUED through the one reaper).
local h = require "spec.helper"
local orch = h.orch

local prog = h.progs .. "/prog_proc"
local eventually = h.eventually

after_each(function()
  assert.are.same({}, h.children())
end)

-- Field n of /proc/PID/stat (proc(5) numbering), counted after the name.
local function stat_field(pid, n)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local rest = s:match("^.*%) (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return fields[n - 2]
end

local function status_line(pid, key)
  local f = assert(io.open("/proc/" .. pid .. "/status"))
  local s = f:read("a")
  f:close()
  return s:match("\n" .. key .. ":%s*([^\n]*)")
end

-- A shell in its own process group that kills nothing of ours (kill(1)).
local function sh_kill(sig, pid)
  assert(os.execute("kill -" .. sig .. " " .. pid))
end

describe("stopped and continued children", function()
  it("shows a stop and a continue sent from outside in status, tostring and events", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "100" })
      local stops, conts = {}, 0
      assert.are.equal(p, p:on_stop(function(sig) stops[#stops + 1] = sig end))
      assert.are.equal(p, p:on_continue(function() conts = conts + 1 end))
      sh_kill("STOP", p.pid)
      eventually(function() return #stops == 1 end, "on_stop ran")
      assert.are.same({ "STOP" }, stops)
      assert.are.same({ "stopped", nil, "STOP" }, { p:status() })
      assert.are.equal("orch.Process: pid=" .. p.pid .. " stopped STOP", tostring(p))
      assert.are.equal("T", stat_field(p.pid, 3))        -- the kernel agrees
      assert.is_true(p:running())                        -- not reaped: still ours
      sh_kill("CONT", p.pid)
      eventually(function() return conts == 1 end, "on_continue ran")
      assert.are.equal("running", p:status())
      assert.are.equal("orch.Process: pid=" .. p.pid .. " running", tostring(p))
      -- A terminal stop (TSTP) is named as such; the exit still comes once.
      p:kill("TSTP")
      eventually(function() return #stops == 2 end, "second stop")
      assert.are.equal("TSTP", stops[2])
      p:kill("KILL")                                      -- a stopped process dies of KILL
      assert.are.same({ nil, "KILL" }, { p:wait() })
      assert.are.same({ "killed", nil, "KILL" }, { p:status() })
      assert.are.equal(1, conts)
      -- Handlers given after the exit never run, and say so by returning p.
      assert.are.equal(p, p:on_stop(function() error("not called") end))
    end)
  end)

  it("keeps waiting through a stop: wait returns the exit only", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "100" })
      local waited = orch.task(function() return p:wait() end)
      local stopped = false
      p:on_stop(function() stopped = true end)
      p:kill("STOP")
      eventually(function() return stopped end, "stopped")
      assert.are.equal("stopped", p:status())
      p:kill("TERM")                                     -- pending while stopped
      p:kill("CONT")
      assert.are.same({ nil, "TERM" }, { waited:join() })
    end)
  end)

  it("rejects bad handlers", function()
    h.run(function()
      local p = assert(orch.spawn{ prog, "sleep", "100" })
      h.check_raises {
        { function() p:on_stop() end, "bad argument #1 to 'on_stop' (function expected, got no value)" },
        { function() p:on_continue(1) end, "bad argument #1 to 'on_continue' (function expected, got number)" },
        { function() p:on_stop(print, 1) end, "bad argument #2 to 'on_stop' (no value expected)" },
      }
      p:kill("KILL")
      p:wait()
    end)
  end)
end)
