-- orch as PID 1 of a fresh pid namespace (`unshare --pid --fork --mount-proc
-- orch run services.lua`, as a container runs it): SIGTERM starts exactly
-- one ordered stop (dependents first, each service's own stop signal), no
-- service is restarted during it, processes that are not services (orphans
-- reparented to PID 1) get TERM once the services are down and KILL after
-- the grace period, nothing is left, and the exit status is the
-- supervisor's. The order is read from the services' own log lines.
local h = require "spec.helper"
local orch = h.orch

local function lines(path)
  local out = {}
  for l in h.slurp(path):gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

local function index_of(list, v)
  for i, x in ipairs(list) do if x == v then return i end end
end

local leftovers = h.leftovers

describe("orch as PID 1", function()
  it("TERM: one ordered stop, no restart, orphans TERMed then KILLed, nothing left", function()
    local dir = h.tmpdir()
    local token = ("init_%d_%d"):format(orch.getpid(), math.random(1, 1e9))
    local log = dir .. "/log"
    -- a <- b <- c (c depends on b, b on a). b stops on QUIT; a TERM would
    -- make it exit 1 (and restart = "always" would start it again). c leaves
    -- two orphans behind: one ends on TERM, one ignores it.
    local script = dir .. "/services.lua"
    h.write(script, string.format([[
      local log, dir = %q, %q
      local sup = require "orch.supervisor"
      orch.proc.init_mode{ grace = 1 }
      -- Without cgroups: the orphans escape the services' stops, and init
      -- mode's own sweep is what this test is about.
      sup.configure{ runtime_dir = dir, env = { ORCH_SPEC_RUN = %q }, cgroup = false }
      local function svc(name, deps, body, stop)
        sup.service{ name = name, depends_on = deps, restart = "always", backoff = 0, stop = stop,
          cmd = { "sh", "-c", body .. " echo start " .. name .. " >> " .. log .. ";" ..
                  " while :; do sleep 0.05; done" } }
      end
      svc("a", nil, "trap 'echo stop a >> " .. log .. "; exit 0' TERM;")
      svc("b", { "a" }, "trap 'echo TERM b >> " .. log .. "; exit 1' TERM; " ..
                        "trap 'echo stop b >> " .. log .. "; exit 0' QUIT;", { signal = "QUIT" })
      svc("c", { "b" }, "trap 'echo stop c >> " .. log .. "; exit 0' TERM; " ..
                        "(setsid sh -c 'echo orphan-soft >> " .. log .. "; exec sleep 300' &); " ..
                        "(setsid sh -c 'trap \"\" TERM; echo orphan-hard >> " .. log .. "; " ..
                        "while :; do sleep 0.05; done' &);")
      sup.run()
      assert(sup.wait("all", "running", 30))
      io.open(dir .. "/up", "w"):close()
    ]], log, dir, token))
    h.run(function()
      local u = assert(orch.spawn{ "unshare", "--pid", "--fork", "--mount-proc",
        h.bin, "run", "--socket", dir .. "/ctl.sock", script, stdout = dir .. "/out", stderr = dir .. "/err" })
      local ok, err = pcall(function()
        h.eventually(function()
          local l = h.slurp(log)
          -- "start NAME" is written once the service's traps are set.
          return io.open(dir .. "/up") and l:find("orphan-soft", 1, true) and l:find("orphan-hard", 1, true)
            and l:find("start a", 1, true) and l:find("start b", 1, true) and l:find("start c", 1, true)
        end, "the services and orphans to be up", 60)
        local init = tonumber(h.slurp("/proc/" .. u.pid .. "/task/" .. u.pid .. "/children"):match("%d+"))
        assert.is_number(init)
        assert.matches("^%d+ %(orch%)", h.slurp("/proc/" .. init .. "/stat"))
        assert.matches("NSpid:%s+%d+%s+1\n", h.slurp("/proc/" .. init .. "/status"))
        assert(orch.kill(init, "TERM"))
        local code, sig = u:wait(60)
        assert.is_nil(sig, h.slurp(dir .. "/err"))
        assert.are.equal(0, code, h.slurp(dir .. "/err"))
      end)
      if not ok then
        if u:running() then u:kill("KILL") u:wait() end
        for _, pid in ipairs(leftovers(token)) do orch.kill(pid, "KILL") end
        error(err, 0)
      end
    end, 120)
    local l = lines(log)
    local sc, sb, sa = index_of(l, "stop c"), index_of(l, "stop b"), index_of(l, "stop a")
    assert.truthy(sc and sb and sa, table.concat(l, "\n"))
    assert.is_true(sc < sb and sb < sa, table.concat(l, "\n"))
    -- Only the supervisor signalled the services: b got QUIT, never TERM,
    -- and nothing was started again.
    assert.is_nil(index_of(l, "TERM b"), table.concat(l, "\n"))
    for _, name in ipairs{ "a", "b", "c" } do
      local n = 0
      for _, x in ipairs(l) do if x == "start " .. name then n = n + 1 end end
      assert.are.equal(1, n, name .. ":\n" .. table.concat(l, "\n"))
    end
    local err = h.slurp(dir .. "/err")
    -- The orphans (and a sleep of the one that ignores TERM) come after the
    -- services.
    local t = err:find("init: %d+ process[es]* left after the services stopped: sending SIGTERM")
    assert.truthy(t, err)
    assert.matches("init: %d+ process[es]* still there after 1s: sending SIGKILL", err)
    assert.is_true(err:find("every service is stopped", 1, true) < t, err)
    assert.are.same({}, leftovers(token))
  end)

  -- `unshare --pid --fork` without --mount-proc: /proc is the parent
  -- namespace's, where orch (PID 1 inside) is another number and the pids
  -- name the host's processes. The drain at exit counts the namespace's
  -- processes all the same (orch's children: every other one descends from
  -- PID 1): the orphan left gets TERM, ends, and orch exits at once; it
  -- counted the host's thousands before, waited the whole grace for them
  -- and sent KILL to the namespace.
  it("without --mount-proc: the drain at exit counts the namespace's processes, not the host's", function()
    local dir = h.tmpdir()
    local token = ("init_%d_%d"):format(orch.getpid(), math.random(1, 1e9))
    local script = dir .. "/orphan.lua"
    h.write(script, string.format([[
      local dir = %q
      orch.proc.init_mode{ grace = 1 }
      -- An orphan (its parent shell ends at once) that ends on TERM.
      -- It says "up" on the pipe once its TERM trap is set.
      local p = assert(orch.spawn{ "sh", "-c", "setsid sh -c 'trap \"exit 0\" TERM; echo up; "
        .. "while :; do sleep 0.05; done' &", env = { ORCH_SPEC_RUN = %q, PATH = os.getenv("PATH") },
        stdout = "pipe" })
      p:wait()
      assert(p.stdout:read_line() == "up")
      p.stdout:close()
      io.stderr:write("pid ", orch.getpid(), "\n")
    ]], dir, token))
    local code, out, err
    h.run(function()
      local u = assert(orch.spawn{ "unshare", "--pid", "--fork", h.bin, "run", script,
        stdout = dir .. "/out", stderr = dir .. "/err" })
      code = u:wait(60)
      if code == nil then
        u:kill("KILL")
        u:wait()
      end
      out, err = h.slurp(dir .. "/out"), h.slurp(dir .. "/err")
    end, 90)
    for _, pid in ipairs(leftovers(token)) do orch.kill(pid, "KILL") end
    assert.are.equal(0, code, err)
    assert.matches("^pid 1\n", err)
    -- One process left (the orphan shell; its sleep is its own child), and
    -- it ends on TERM: no KILL.
    assert.matches("init: 1 process left after the services stopped: sending SIGTERM", err, 1, true)
    assert.is_nil(err:find("SIGKILL", 1, true), err)
    assert.are.same({}, leftovers(token))
    assert.are.equal("", out)
  end)
end)
