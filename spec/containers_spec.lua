-- The container scenario of doc/containers.md without a container engine:
-- orch as PID 1 of new PID, mount and network namespaces (unshare), its
-- HTTP probes answered on the namespace's own loopback (reached with
-- nsenter), logs as JSON lines on stdout, SIGTERM shutdown within the grace
-- period, and the exit statuses a platform acts on.
local h = require "spec.helper"
local u = require "spec.ctl_util"
local orch = h.orch
local cjson = require "cjson"

-- The policy of doc/containers.md, with the port and services of a test.
local function policy(services)
  return [[
local sup = require "orch.supervisor"
local cjson = require "cjson"
local function emit(t)
  t.time = os.date("!%Y-%m-%dT%H:%M:%SZ")
  io.stdout:write(cjson.encode(t), "\n")
  io.stdout:flush()
end
sup.configure {
  http = { listen = "127.0.0.1:9100" },
  log = function(msg) emit { source = "orch", msg = msg } end,
  output = function(name, line) emit { source = name, msg = line } end,
}
]] .. services .. "\nsup.run()\n"
end

-- Starts `orch run` as PID 1 of fresh namespaces (lo up in its network
-- namespace); returns the unshare process, orch's pid as seen from here, and
-- the directory of its stdout/stderr.
local function start(services)
  local dir = h.tmpdir()
  h.write(dir .. "/policy.lua", policy(services))
  local p = assert(orch.spawn { "unshare", "--pid", "--mount-proc", "--net", "--fork", "sh", "-c",
    "ip link set lo up && exec " .. h.shquote(h.bin) .. " run --no-socket policy.lua",
    cwd = dir, stdout = dir .. "/out", stderr = dir .. "/err" })
  local pid = h.eventually(function()
    local kids = orch.proc.children(p.pid) or {}
    local k = kids[1]
    local info = k and orch.proc.info(k)
    return info and info.cmdline and info.cmdline[1] == h.bin and k
  end, "orch under unshare")
  return p, pid, dir
end

-- An HTTP GET from inside orch's network namespace.
local function probe(pid, path)
  local code, out, err = orch.run { "nsenter", "-t", tostring(pid), "-n", "env", "-u", "LD_PRELOAD",
    "curl", "-s", "-S", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20", "http://127.0.0.1:9100" .. path }
  if code ~= 0 then return nil, err end
  local body, status = out:match("^(.*)\n(%d+)$")
  return tonumber(status), body
end

local function json_lines(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
  return out
end

describe("orch as a container's PID 1", function()
  it("answers its probes on the namespace's loopback, logs JSON lines, stops cleanly on SIGTERM (status 0)", function()
    h.run(function()
      local p, pid, dir = start([[
sup.service { name = "web", critical = true, cmd = { "sh", "-c", "echo serving; exec sleep 1000" } }
sup.service { name = "worker", cmd = { "sleep", "1000" }, stop = { timeout = 30 } }
]])
      local ok, err = pcall(function()
        h.eventually(function() return probe(pid, "/readyz") == 200 end, "ready over the namespace's loopback")
        assert.are.same({ 200, "ok\n" }, { probe(pid, "/healthz") })
        local st, metrics = probe(pid, "/metrics")
        assert.are.equal(200, st)
        assert.matches('orch_service_up{service="worker",instance="worker"} 1', metrics, 1, true)
        -- orch is PID 1 inside: its services' parent.
        local web = h.eventually(function()
          for _, k in ipairs(orch.proc.children(pid) or {}) do
            local i = orch.proc.info(k)
            if i and i.cmdline and i.cmdline[1] == "sleep" then return k end
          end
        end, "a service process")
        assert.truthy(web)
        local t0 = orch.now()
        assert(orch.kill(pid, "TERM"))
        local code, sig = p:wait(60)
        assert.are.equal(0, code, "signal " .. tostring(sig) .. "\n" .. h.slurp(dir .. "/err"))
        -- Well within the services' 30 s grace period (a service needing KILL
        -- would make the status 5).
        assert.is_true(orch.now() - t0 < 30)
        local lines = json_lines(h.slurp(dir .. "/out"))
        local seen = {}
        for _, l in ipairs(lines) do seen[l.source .. ": " .. l.msg] = true end
        assert.is_true(seen["web: serving"], h.slurp(dir .. "/out"))
        assert.is_true(seen["orch: received TERM: stopping every service (send it again to kill them)"], h.slurp(dir .. "/out"))
        assert.is_true(seen["orch: every service is stopped"], h.slurp(dir .. "/out"))
      end)
      if not ok then p:kill("KILL") p:wait() end
      assert(ok, err)
    end, 90)
  end)

  it("exits 4 once every service is fatal, so that the platform restarts the container", function()
    h.run(function()
      local p, pid, dir = start([[
sup.service { name = "broken", cmd = { "false" }, backoff = 0.01, start_limit = { burst = 2, interval = 60 } }
]])
      local code = p:wait(60)
      assert.is_truthy(pid)
      assert.are.equal(4, code, h.slurp(dir .. "/err") .. h.slurp(dir .. "/out"))
      assert.matches('"msg":"every service is fatal: stopping"', h.slurp(dir .. "/out"), 1, true)
    end, 90)
  end)
end)
