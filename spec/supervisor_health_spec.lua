-- The supervisor: health checks after start-up (health = { http | tcp | fn,
-- every, timeout, failures }), against real HTTP and TCP servers on this
-- process's loop; a failing service is restarted with the check's reason.
local u = require "spec.supervisor_util"
local h, orch = u.h, u.orch
local http = require "orch.http"

-- An HTTP server whose /health answers `state.status` (nil: never answers).
local function health_server(state)
  return assert(http.serve { listen = "127.0.0.1:0", timeout = 30, routes = {
    ["/health"] = function()
      state.hits = (state.hits or 0) + 1
      while state.status == nil do orch.sleep(0.01) end
      return state.status, "status " .. state.status .. "\n"
    end,
  } })
end

describe("supervisor health checks", function()
  it("restarts a service whose HTTP health check fails `failures` times in a row", function()
    u.with(function(s, logs)
      local state = { status = 200 }
      local srv = health_server(state)
      s.service { name = "web", cmd = { "sleep", "1000" }, backoff = 0.01,
        health = { http = "http://127.0.0.1:" .. srv.port .. "/health", every = 0.05, timeout = 5, failures = 3 } }
      s.start("web")
      assert.is_true(s.wait("web", "running", 10))
      local pid = u.st(s, "web").pid
      -- Healthy: checked again and again, never restarted.
      h.eventually(function() return (state.hits or 0) >= 4 end, "four checks")
      assert.are.equal(0, u.st(s, "web").restarts)
      assert.are.equal(pid, u.st(s, "web").pid)
      -- One failure is not enough (it passes again afterwards).
      state.status = 500
      h.eventually(function() return u.logged(logs, "web: health check failed (1 of 3): HTTP 500") end, "a first failure")
      state.status = 200
      h.eventually(function() return u.logged(logs, "web: health check passes again") end, "recovery")
      assert.are.equal(0, u.st(s, "web").restarts)
      -- Three in a row: restarted, with the reason in status and the log.
      state.status = 500
      h.eventually(function() return u.st(s, "web").restarts >= 1 end, "a restart")
      assert.truthy(u.logged(logs, "web: health check failed (3 of 3): HTTP 500"))
      assert.truthy(u.logged(logs, "web: health check failed: HTTP 500: restarting"))
      assert.are.equal("health check failed: HTTP 500", u.st(s, "web").reason)
      assert.is_false(u.alive(pid))
      state.status = 200
      assert.is_true(s.wait("web", "running", 10))
      assert.are_not.equal(pid, u.st(s, "web").pid)
      -- Counted in /metrics.
      local text = http.metrics(s)
      assert.matches('orch_service_exits_total{service="web",instance="web",reason="health_check"} 1\n', text, 1, true)
      local failed = tonumber(text:match('orch_service_health_checks_total{service="web",instance="web",result="failed"} (%d+)'))
      assert.is_true(failed >= 4, text)
      srv:close()
    end)
  end)

  it("fails a check that does not answer within the timeout, a refused TCP connect and a function's false", function()
    u.with(function(s, logs)
      local state = {}                       -- status nil: the server never answers
      local srv = health_server(state)
      local listener = assert(orch.listen { host = "127.0.0.1", port = 0 })
      local tcp_port = listener.port
      local fn_ok = true
      s.service { name = "slow", cmd = { "sleep", "1000" }, backoff = 0.01,
        health = { http = "http://127.0.0.1:" .. srv.port .. "/health", every = 0.05, timeout = 0.2, failures = 1 } }
      s.service { name = "tcp", cmd = { "sleep", "1000" }, backoff = 0.01,
        health = { tcp = "127.0.0.1:" .. tcp_port, every = 0.05, timeout = 5, failures = 2 } }
      s.service { name = "fn", cmd = { "sleep", "1000" }, backoff = 0.01,
        health = { fn = function(svc)
          assert(svc.name == "fn")
          if fn_ok then return true end
          return false, "disk full"
        end, every = 0.05, failures = 2 } }
      s.start("all")
      assert.is_true(s.wait({ "tcp", "fn" }, "running", 10))
      h.eventually(function() return u.st(s, "slow").restarts >= 1 end, "slow restarted")
      -- (Its line may follow the count by a moment: waited for, not read once.)
      h.eventually(function() return u.logged(logs, "slow: health check failed: timed out after 0.2s: restarting") end,
        "slow's health check's line")
      -- The listener accepts (the kernel does, into its backlog): healthy.
      h.eventually(function() return u.logged(logs, "tcp: ready") or s.instance("tcp").health.ok >= 2 end, "tcp checks")
      assert.are.equal(0, u.st(s, "tcp").restarts)
      listener:close()
      h.eventually(function() return u.st(s, "tcp").restarts >= 1 end, "tcp restarted")
      assert.truthy(u.logged(logs, "tcp: health check failed: connect: connection refused: restarting"))
      assert.are.equal(0, u.st(s, "fn").restarts)
      fn_ok = false
      h.eventually(function() return u.st(s, "fn").restarts >= 1 end, "fn restarted")
      assert.are.equal("health check failed: disk full", s.instance("fn").history[1].reason)
      state.status = 200                     -- lets the waiting route end
      srv:close()
    end)
  end)

  it("says why in orch ctl status (REASON) and in orch's log", function()
    local cu = require "spec.ctl_util"
    local o = cu.start([[
local sup = require "orch.supervisor"
sup.configure { runtime_dir = DIR }
-- A port nobody listens on: its checks are refused.
local l = assert(orch.listen { host = "127.0.0.1", port = 0 })
local port = l.port
l:close()
sup.service { name = "web", cmd = { "sleep", "1000" }, backoff = 30,
              health = { tcp = "127.0.0.1:" .. port, every = 0.05, failures = 2 } }
sup.run()
]])
    local ok, err = pcall(function()
      local out = cu.until_true(function()
        local code, text = cu.ctl_cli(o, "status")
        -- 3: web is not running (orch ctl status is an LSB probe).
        return code == 3 and text:find("health check failed: connect: connection refused", 1, true) and text
      end, "the reason in orch ctl status")
      assert.matches("REASON", out, 1, true)
      assert.matches("\nweb +backoff", out)
      assert.matches("web: health check failed (2 of 2): connect: connection refused",
        h.slurp(o.dir .. "/err"), 1, true)
      assert.matches("web: health check failed: connect: connection refused: restarting",
        h.slurp(o.dir .. "/err"), 1, true)
    end)
    cu.stop(o)
    assert(ok, err)
  end)

  it("checks its options", function()
    local sup = require("orch.supervisor").new()
    local function def(health) return function() sup.service { name = "x", cmd = { "true" }, health = health } end end
    h.check_raises {
      { def(5), "key 'health': table or function expected, got 5" },
      { def {}, "key 'health': exactly one of 'http', 'tcp' or 'fn' expected" },
      { def { http = "https://x/", tcp = 80 }, "key 'health.http': URL \"http://host[:port]/path\" expected" },
      { def { http = "http://127.0.0.1:99999/" }, "key 'health.http': URL" },
      { def { tcp = "localhost" }, "key 'health.tcp': \"host:port\" or a port expected" },
      { def { tcp = 80, every = 0 }, "key 'health.every': number of seconds > 0 expected" },
      { def { tcp = 80, failures = 0 }, "key 'health.failures'" },
      { def { tcp = 80, interval = 1 }, "unknown key 'health.interval'" },
      { def { tcp = 80, http = "http://a/" }, "exactly one of 'http', 'tcp' or 'fn' expected" },
    }
    -- The accepted forms.
    sup.service { name = "a", cmd = { "true" }, health = { http = "http://[::1]:8080" } }
    sup.service { name = "b", cmd = { "true" }, health = { tcp = 8080 } }
    sup.service { name = "c", cmd = { "true" }, health = function() return true end }
  end)
end)
