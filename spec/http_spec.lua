-- orch.http: the read-only HTTP endpoint (probes, metrics), tried with a
-- real HTTP client (curl) and with hostile raw requests.
local h = require "spec.helper"
local u = require "spec.ctl_util"
local orch = h.orch
local http = require "orch.http"
local cjson = require "cjson"

-- curl in a task would block the loop: run it from a task through
-- orch.run{...} (a spawned process, waited for on the loop).
-- (curl hangs under the ASan preload the sanitizer pass sets: it runs without.)
local function curl(url, ...)
  local code, out, err = orch.run { "env", "-u", "LD_PRELOAD", "curl", "-s", "-S", "-o", "-", "-w", "\n%{http_code}",
    "--max-time", "20", url, ... }
  assert.are.equal(0, code, err)
  local body, status = out:match("^(.*)\n(%d+)$")
  return tonumber(status), body
end

-- A raw request on a TCP connection; returns the whole response.
local function raw(port, bytes)
  local c = assert(orch.connect { port = port })
  if bytes then assert(c:write(bytes)) end
  local out = c:read_all()
  c:close()
  return out or ""
end

describe("orch.http.serve", function()
  it("answers GET and HEAD on its routes, 404/405/400 otherwise", function()
    h.run(function()
      local srv = assert(http.serve { listen = "127.0.0.1:0", routes = {
        ["/hello"] = function(req) return 200, "hello " .. (req.query.who or "?") .. "\n" end,
        ["/boom"] = function() error("route failed") end,
      } })
      local base = "http://127.0.0.1:" .. srv.port
      assert.are.same({ 200, "hello a b\n" }, { curl(base .. "/hello?who=a%20b") })
      assert.are.same({ 404, "not found\n" }, { curl(base .. "/nope") })
      assert.are.same({ 405, "only GET and HEAD\n" }, { curl(base .. "/hello", "-X", "POST", "-d", "x") })
      assert.are.same({ 500, "internal error\n" }, { curl(base .. "/boom") })
      local head = raw(srv.port, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n")
      assert.matches("^HTTP/1.1 200 OK\r\n", head)
      assert.matches("Content%-Length: 8\r\n", head)
      assert.matches("\r\n\r\n$", head)           -- no body
      assert.matches("^HTTP/1.1 400 ", raw(srv.port, "GARBAGE\r\n\r\n"))
      assert.matches("^HTTP/1.1 400 ", raw(srv.port, "GET /x\0y HTTP/1.1\r\n\r\n"))
      assert.matches("^HTTP/1.1 400 ", raw(srv.port, "GET /x HTTP/1.1\r\nbad header\r\n\r\n"))
      srv:close()
    end)
  end)

  it("bounds requests in size, time and connections", function()
    h.run(function()
      local srv = assert(http.serve { listen = "127.0.0.1:0", timeout = 0.2, max_connections = 2, max_request = 1024,
        routes = { ["/"] = function() return 200, "root\n" end } })
      assert.matches("^HTTP/1.1 431 ", raw(srv.port, "GET / HTTP/1.1\r\nX: " .. string.rep("a", 4096) .. "\r\n\r\n"))
      -- A client that sends nothing is answered 408 and dropped.
      assert.matches("^HTTP/1.1 408 ", raw(srv.port, nil))
      -- Two silent clients hold both places: a third is closed at once, and
      -- once they time out the server answers again.
      local a = assert(orch.connect { port = srv.port })
      local b = assert(orch.connect { port = srv.port })
      h.eventually(function() return srv.n == 2 end, "two connections held")
      assert.are.equal("", raw(srv.port, "GET / HTTP/1.1\r\n\r\n"))
      h.eventually(function() return srv.n == 0 end, "the silent clients dropped")
      assert.matches("root\n$", raw(srv.port, "GET / HTTP/1.1\r\n\r\n"))
      a:close() b:close()
      srv:close()
    end)
  end)

  it("checks its options", function()
    h.check_raises {
      { function() http.serve() end, "table expected" },
      { function() http.serve { listen = "x", routes = {} } end, "option 'listen'" },
      { function() http.serve { listen = ":0", routes = { x = print } } end, "option 'routes'" },
      { function() http.serve { listen = ":0", routes = {}, timeout = 0 } end, "option 'timeout'" },
      { function() http.serve { listen = ":0", routes = {}, bogus = 1 } end, "unknown option 'bogus'" },
    }
  end)
end)

describe("orch run --http", function()
  it("serves the script's supervisor, and says where", function()
    local o = u.start([[
local sup = require "orch.supervisor"
sup.configure { runtime_dir = DIR }
sup.service { name = "web", cmd = { "sleep", "1000" } }
sup.run()
]], nil, { "--http", "127.0.0.1:0" })
    local ok, err = pcall(function()
      local port = u.until_true(function()
        return tonumber(h.slurp(o.dir .. "/err"):match("orch: http: listening on 127%.0%.0%.1:(%d+)"))
      end, "the listening line")
      u.until_true(function() local s = u.status(o) return s.web and s.web.state == "running" end, "web running")
      h.run(function()
        assert.are.same({ 200, "ready\n" }, { curl("http://127.0.0.1:" .. port .. "/readyz") })
        local st, body = curl("http://127.0.0.1:" .. port .. "/metrics")
        assert.are.equal(200, st)
        assert.matches('orch_service_up{service="web",instance="web"} 1', body, 1, true)
      end)
    end)
    u.stop(o)
    assert(ok, err)
  end)

  it("refuses a bad address as a usage error, and says why when it cannot listen", function()
    local code, _, err = h.cli({ "run", "--http" })
    assert.are.equal(2, code)
    assert.matches("orch run: option '--http' requires an argument", err, 1, true)
    -- The script ends once the endpoint's task has reported (it runs after
    -- the main chunk waits).
    local script = h.script([[
      local cli
      repeat orch.sleep(0.01) cli = package.loaded["orch.cli"] until cli and (cli.http or cli.http_error)
      orch.exit(0)
    ]])
    code, _, err = h.cli({ "run", "--no-socket", "--http", "nonsense", script })
    assert.are.equal(0, code, err)
    assert.matches("orch: http: --http nonsense: ", err, 1, true)
  end)
end)

describe("orch.http.supervisor", function()
  local policy = [[
local sup = require "orch.supervisor"
sup.configure { runtime_dir = DIR }
sup.service { name = "db", critical = true, cmd = { "sleep", "1000" } }
sup.service { name = "web", numprocs = 2, cmd = { "sleep", "1000" } }
require("orch.ctl").serve { socket = SOCK }
local srv = assert(require("orch.http").supervisor { listen = "127.0.0.1:0" })
local f = assert(io.open(DIR .. "/http.port", "w")) f:write(srv.port) f:close()
sup.run()
]]

  it("serves Prometheus metrics, health, readiness and status", function()
    local o = u.start(policy)
    local ok, err = pcall(function()
      u.until_true(function()
        local s = u.status(o)
        return s.db and s.db.state == "running" and s["web:1"] and s["web:1"].state == "running"
          and s["web:2"] and s["web:2"].state == "running"
      end, "all running")
      local base = "http://127.0.0.1:" .. u.until_true(function() return tonumber(h.slurp(o.dir .. "/http.port")) end, "port")
      local status, body
      h.run(function()
        assert.are.same({ 200, "ok\n" }, { curl(base .. "/healthz") })
        assert.are.same({ 200, "ready\n" }, { curl(base .. "/readyz") })
        status, body = curl(base .. "/metrics")
      end)
      assert.are.equal(200, status)
      assert.matches('\norch_service_up{service="web",instance="web:2"} 1\n', body, 1, true)
      assert.matches('\norch_service_state{service="db",instance="db",state="running"} 1\n', body, 1, true)
      assert.matches("\norch_lua_heap_bytes %d+\n", body)
      -- A real exposition-format parser reads every family.
      local file = o.dir .. "/metrics.txt"
      h.write(file, body)
      local out, parsed = h.sh("/usr/bin/python3 -c 'import sys, prometheus_client.parser as p; " ..
        "fams = list(p.text_string_to_metric_families(open(sys.argv[1]).read())); " ..
        "print(len(fams), sum(len(f.samples) for f in fams))' " .. h.shquote(file) .. " 2>&1")
      assert.is_true(parsed, out)
      local nfam = tonumber(out:match("^(%d+)"))
      assert.is_true(nfam >= 13, out)
      -- Stop the critical service: not ready, and the reason is given.
      assert.are.equal(0, (u.ctl_cli(o, "stop", "db")))
      h.run(function()
        local st, b = curl(base .. "/readyz")
        assert.are.equal(503, st)
        assert.matches("db: stopped", b)
        assert.are.same({ 200, "ready\n" }, { curl(base .. "/readyz?service=web") })
        local st2, b2 = curl(base .. "/readyz?service=nope")
        assert.are.equal(503, st2)
        assert.matches("nope: no such service", b2)
        local st3, js = curl(base .. "/status")
        assert.are.equal(200, st3)
        local names = {}
        for _, s in ipairs(cjson.decode(js).services) do names[s.name] = s.state end
        assert.are.same({ db = "stopped", ["web:1"] = "running", ["web:2"] = "running" }, names)
      end)
    end)
    u.stop(o)
    assert(ok, err)
  end)
end)

-- A supervisor of this test (sup.new) that logs into a list and never
-- exits the process; its runtime directory is a fresh temp dir.
local function test_supervisor()
  local sup = require("orch.supervisor").new()
  local logs = {}
  sup.configure { runtime_dir = h.tmpdir(), cgroup = false, exit = function() end,
                  log = function(msg) logs[#logs + 1] = msg end, output = function() end }
  return sup, logs
end

local function listening_port(logs)
  return h.eventually(function()
    for i = #logs, 1, -1 do
      local p = logs[i]:match("^http: listening on 127%.0%.0%.1:(%d+)$")
      if p then return tonumber(p) end
    end
  end, "the listening line")
end

describe("sup.configure{ http }", function()
  it("serves the supervisor on 127.0.0.1 when given a port only, moves and stops", function()
    h.run(function()
      local sup, logs = test_supervisor()
      sup.service { name = "web", cmd = { "sleep", "1000" } }
      assert.is_true(sup.configure { http = { listen = 0 } })
      local port = listening_port(logs)
      sup.run()
      assert(sup.wait("web", "running", 20))
      assert.are.same({ 200, "ready\n" }, { curl("http://127.0.0.1:" .. port .. "/readyz") })
      -- Another address: the first one no longer answers.
      assert.is_true(sup.configure { http = { listen = "127.0.0.1:0", max_connections = 4 } })
      local port2 = h.eventually(function()
        local p = listening_port(logs)
        return p ~= port and p
      end, "the second listening line")
      assert.are.same({ 200, "ok\n" }, { curl("http://127.0.0.1:" .. port2 .. "/healthz") })
      assert.is_nil(orch.connect { port = port })
      -- A port in use is an expected failure.
      local blocker = assert(orch.listen { host = "127.0.0.1", port = 0 })
      local ok, err, code = sup.configure { http = { listen = blocker.port } }
      assert.is_nil(ok)
      assert.are.equal("EADDRINUSE", code, err)
      blocker:close()
      assert.is_nil(orch.connect { port = port2 })     -- the previous one closed either way
      assert.is_true(sup.configure { http = { listen = "127.0.0.1:0" } })
      local port3 = h.eventually(function()
        local p = listening_port(logs)
        return p ~= port2 and p
      end, "the third listening line")
      assert.is_true(sup.configure { http = false })
      assert.is_nil(orch.connect { port = port3 })
      sup.shutdown(0)
      sup.close()
    end)
  end)

  it("checks its option", function()
    local sup = require("orch.supervisor").new()
    h.check_raises {
      { function() sup.configure { http = 9100 } end, "option 'http': table { listen = ADDR } or false expected" },
      { function() sup.configure { http = {} } end, "option 'http': table { listen = ADDR } or false expected" },
      { function() sup.configure { http = { listen = "nowhere" } } end, "option 'http': option 'listen'" },
      { function() sup.configure { http = { listen = 0, bogus = 1 } } end, "option 'http': unknown option 'bogus'" },
    }
  end)
end)

describe("/metrics", function()
  it("has every family, valid for promtool: exits by reason, heartbeat age, jobs, watchdogs, orch itself", function()
    local key = h.key()
    local hbt = assert(orch.heartbeat.open { key = key, create = true, slots = 8 })
    local ok, err = pcall(h.run, function()
      local sup, logs = test_supervisor()
      sup.configure { heartbeat_key = key }
      sup.service { name = "beat", cmd = { "sleep", "1000" }, heartbeat = { timeout = 600 } }
      sup.service { name = "crash", cmd = { "sh", "-c", "exit 3" }, restart = "on-failure", backoff = 0.01,
                    start_limit = false }
      sup.service { name = "stopme", cmd = { "sleep", "1000" } }
      assert.is_true(sup.configure { http = { listen = 0 } })
      local port = listening_port(logs)
      local sched = require "orch.scheduler"
      local job = sched.every(0.01, function() orch.sleep(0.001) end, { name = "tick" })
      local wd = assert(require("orch.watchdog").start { table = hbt, log = false })
      -- A process registered in the watchdog's table that never beats: it
      -- times out and is stopped (its own process group).
      local stall = assert(orch.spawn { "sleep", "1000", pgroup = true })
      assert(hbt:register("stall", 0.2, stall.pid))
      sup.run()
      assert(sup.wait({ "beat", "stopme" }, "running", 20))
      assert(sup.stop("stopme"))
      h.eventually(function() return job.runs >= 3 and sup.status("crash")[1].restarts >= 2 end, "runs and restarts")
      local st, body = curl("http://127.0.0.1:" .. port .. "/metrics")
      assert.are.equal(200, st)
      local function value(pattern)
        local v = body:match("\n" .. pattern:gsub("[%[%]%(%)%.%-%+%*%?%^%$]", "%%%0") .. " ([%d.e+-]+)\n")
        return tonumber(v)
      end
      assert.is_true(value('orch_service_exits_total{service="crash",instance="crash",reason="failure"}') >= 2, body)
      assert.are.equal(1, value('orch_service_exits_total{service="stopme",instance="stopme",reason="stopped"}'), body)
      local age = value('orch_service_heartbeat_age_seconds{service="beat",instance="beat"}')
      assert.is_true(age >= 0 and age < 600, body)
      assert.is_true(value('orch_service_memory_bytes{service="beat",instance="beat"}') > 0, body)
      assert.is_true(value('orch_service_start_time_seconds{service="beat",instance="beat"}') > 1.6e9, body)
      assert.is_true(value('orch_job_runs_total{job="tick"}') >= 3, body)
      assert.is_true(value('orch_job_run_duration_seconds_sum{job="tick"}') > 0, body)
      assert.is_true(value('orch_job_run_duration_seconds_count{job="tick"}') >= 3, body)
      h.eventually(function() return not stall:running() end, "the watchdog to stop the stalled process")
      stall:wait()
      st, body = curl("http://127.0.0.1:" .. port .. "/metrics")
      assert.are.equal(1, value('orch_watchdog_timeouts_total{key="' .. h.keystr(key) .. '"}'), body)
      assert.are.equal(1, value('orch_watchdog_signals_total{key="' .. h.keystr(key) .. '"}'), body)
      assert.is_true(value("process_resident_memory_bytes") > 0, body)
      assert.is_true(value("process_open_fds") > 3, body)
      assert.is_true(value("orch_lua_heap_bytes") > 0, body)
      assert.is_true(value("orch_loop_lag_seconds") >= 0, body)
      -- Prometheus's own linter accepts it (names, types, units, help).
      local file = h.tmpdir() .. "/metrics.txt"
      h.write(file, body)
      local code, out, perr = orch.run { "sh", "-c", "env -u LD_PRELOAD promtool check metrics < " .. h.shquote(file) }
      assert.are.equal(0, code, (out or "") .. (perr or "") .. body)
      job:stop()
      wd:stop()
      sup.shutdown(0)
      sup.close()
    end, 60)
    hbt:remove()
    hbt:close()
    assert(ok, err)
  end)

  it("reads each running service's cgroup at the scrape: a busy service's CPU grows from one scrape to the next", function()
    local ok, err = pcall(h.run, function()
      local sup = require("orch.supervisor").new()
      local logs = {}
      -- Cgroups on (the default): the figures are the cgroups' (cg:usage).
      sup.configure { runtime_dir = h.tmpdir(), exit = function() end,
                      log = function(msg) logs[#logs + 1] = msg end, output = function() end }
      -- The CPU is spent by a child: the main process's own figure (what
      -- /proc/PID/stat says) stays near 0, its cgroup's grows.
      sup.service { name = "busy", cmd = { "sh", "-c", "sh -c 'while :; do :; done' & wait" } }
      sup.service { name = "idle", cmd = { "sleep", "1000" } }
      assert.is_true(sup.configure { http = { listen = 0 } })
      local port = listening_port(logs)
      sup.run()
      assert(sup.wait({ "busy", "idle" }, "running", 20))
      local cg = sup.instance("busy").run.cgroup
      assert.is_not_nil(cg, table.concat(logs, "\n"))
      local function scrape(pattern)
        local st, body = curl("http://127.0.0.1:" .. port .. "/metrics")
        assert.are.equal(200, st)
        return body, tonumber(body:match("\n" .. pattern:gsub("%p", "%%%0") .. " ([%d.e+-]+)\n"))
      end
      local busy = 'orch_service_cpu_seconds_total{service="busy",instance="busy"}'
      local _, c1 = scrape(busy)
      assert.is_not_nil(c1)
      h.eventually(function()
        local _, c = scrape(busy)
        return c > c1
      end, "a later scrape to show more CPU time")
      -- The whole cgroup's figure: never above what its cpu.stat says after.
      local body, c = scrape(busy)
      assert.is_true(c <= cg:stat().cpu)
      local main = orch.proc.stat(sup.instance("busy").pid)
      assert.is_true(c > main.cpu, c .. " " .. main.cpu)
      if cg:stat().memory_current then
        local _, m = scrape('orch_service_memory_bytes{service="idle",instance="idle"}')
        assert.is_true(m > 0, body)
      end
      local file = h.tmpdir() .. "/metrics.txt"
      h.write(file, body)
      local code, out, perr = orch.run { "sh", "-c", "env -u LD_PRELOAD promtool check metrics < " .. h.shquote(file) }
      assert.are.equal(0, code, (out or "") .. (perr or "") .. body)
      sup.shutdown(0)
      sup.close()
    end, 60)
    assert(ok, err)
  end)
  it("a restarted service's CPU is its new run's, not its kept cgroup's total", function()
    local ok, err = pcall(h.run, function()
      local sup = require("orch.supervisor").new()
      local logs = {}
      sup.configure { runtime_dir = h.tmpdir(), exit = function() end,
                      log = function(msg) logs[#logs + 1] = msg end, output = function() end }
      -- The first run burns CPU and fails; the second (in the same cgroup,
      -- kept across the restart) sleeps.
      local mark = h.tmpdir() .. "/ran"
      sup.service { name = "once", backoff = 0, cmd = { "sh", "-c", string.format(
        "if [ -e %s ]; then exec sleep 1000; fi; touch %s; i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exit 1",
        h.shquote(mark), h.shquote(mark)) } }
      assert.is_true(sup.configure { http = { listen = 0 } })
      local port = listening_port(logs)
      sup.run()
      h.eventually(function()
        local st = sup.status("once")[1]
        return st.restarts == 1 and st.state == "running"
      end, "the second run", 60)
      local cg = sup.instance("once").run.cgroup
      assert.is_not_nil(cg, table.concat(logs, "\n"))
      local total = cg:stat().cpu
      local st, body = curl("http://127.0.0.1:" .. port .. "/metrics")
      assert.are.equal(200, st)
      local c = tonumber(body:match('\norch_service_cpu_seconds_total{service="once",instance="once"} ([%d.e+-]+)\n'))
      assert.is_not_nil(c, body)
      assert.is_true(total > 0.05, "the first run's CPU: " .. total)
      assert.is_true(c < total / 2, ("scraped %s, the cgroup's total %s"):format(c, total))
      sup.shutdown(0)
      sup.close()
    end, 90)
    assert(ok, err)
  end)
end)

describe("orch.http under hostile input", function()
  -- Sends `bytes` (errors ignored: the server may close first) and reads
  -- the answer until the server closes; returns it.
  local function attempt(port, bytes)
    local c = assert(orch.connect { port = port })
    c:set_timeout(20)
    orch.task(function() c:write(bytes) end)
    local out = {}
    while true do
      local chunk = c:read()
      if not chunk then break end
      out[#out + 1] = chunk
    end
    c:close()
    return table.concat(out)
  end

  it("answers malformed requests 4xx (or closes), parsed by libhttp-parser", function()
    h.run(function()
      local srv = assert(http.serve { listen = "127.0.0.1:0", routes = { ["/"] = function() return 200, "root\n" end } })
      local cases = {
        "GARBAGE\r\n\r\n",
        "GET\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "GET / HTTP/1.1\r\nHost x\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        "GET /x\0y HTTP/1.1\r\n\r\n",
        "GET /\1 HTTP/1.1\r\n\r\n",
        "\0\1\2\3\4\5\6\7\r\n\r\n",
        "GET http://example.org/ HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        string.rep("\r\n", 5000),
      }
      for i, bytes in ipairs(cases) do
        local out = attempt(srv.port, bytes)
        assert.is_true(out == "" or out:match("^HTTP/1.1 4%d%d ") ~= nil, "case " .. i .. ": " .. out)
      end
      -- A body is never read: a POST is refused at once.
      assert.matches("^HTTP/1.1 405 ", attempt(srv.port, "POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\nxx"))
      -- The parser object's own contract.
      local p = orch.httpparse.request()
      assert.is_false(p:feed("GET /a?b=c%20d HTTP/1.0\r\nX-Y:  z \r\n"))
      local r = p:feed("\r\n")
      assert.are.same({ "GET", "/a", "b=c%20d", "1.0", "z" }, { r.method, r.path, r.query_string, r.version, r.headers["x-y"] })
      assert.has_error(function() p:feed("x") end, "feed: the request is already complete")
      p:close()
      assert.has_error(function() p:feed("x") end, "attempt to use a closed orch.HttpParser")
      local q = orch.httpparse.request()
      local ok, err, code = q:feed("BREW / HTTP/1.1\r\n\r\n")
      assert.are.same({ nil, "http: invalid HTTP method", "HPE_INVALID_METHOD" }, { ok, err, code })
      h.check_raises {
        { function() orch.httpparse.request { max_head = 1 } end, "option 'max_head'" },
        { function() orch.httpparse.request { nope = 1 } end, "unknown option 'nope'" },
        { function() orch.httpparse.request():feed() end, "bad argument #1 to 'feed'" },
      }
      srv:close()
    end)
  end)

  it("refuses a 1 MB header with 431 after max_request bytes, and a slow client with 408 at its deadline", function()
    h.run(function()
      local srv = assert(http.serve { listen = "127.0.0.1:0", timeout = 0.5,
        routes = { ["/"] = function() return 200, "root\n" end } })
      local heap0 = collectgarbage("count")
      local out = attempt(srv.port, "GET / HTTP/1.1\r\nX-Big: " .. string.rep("a", 1024 * 1024) .. "\r\n\r\n")
      assert.matches("^HTTP/1.1 431 ", out)
      -- The same in many small headers.
      local many = {}
      for i = 1, 20000 do many[i] = "X-" .. i .. ": v\r\n" end
      assert.matches("^HTTP/1.1 431 ", attempt(srv.port, "GET / HTTP/1.1\r\n" .. table.concat(many) .. "\r\n"))
      many = nil
      -- A client that sends a byte every 50 ms never finishes its head: it
      -- gets no more than `timeout` in all.
      local c = assert(orch.connect { port = srv.port })
      local trickle = orch.task(function()
        for ch in ("GET / HTTP/1.1\r\nX-Slow: " .. string.rep("s", 1000)):gmatch(".") do
          if not c:write(ch) then return end
          orch.sleep(0.05)
        end
      end)
      c:set_timeout(20)
      local got = c:read_all()
      trickle:cancel()
      c:close()
      assert.matches("^HTTP/1.1 408 ", got)
      h.eventually(function() return srv.n == 0 end, "no connection left")
      -- The 1 MB request never sat in memory.
      collectgarbage()
      assert.is_true(collectgarbage("count") - heap0 < 512, "heap grew by " .. (collectgarbage("count") - heap0) .. " KiB")
      assert.matches("root\n$", raw(srv.port, "GET / HTTP/1.1\r\n\r\n"))
      srv:close()
    end, 60)
  end)

  it("survives 1,000 concurrent connections: refused or served, bounded memory, the service untouched", function()
    local o = u.start([[
local sup = require "orch.supervisor"
sup.configure { runtime_dir = DIR, http = { listen = "127.0.0.1:0", timeout = 2 } }
sup.service { name = "web", cmd = { "sleep", "1000" } }
sup.run()
]])
    local ok, err = pcall(function()
      local port = u.until_true(function()
        return tonumber(h.slurp(o.dir .. "/err"):match("http: listening on 127%.0%.0%.1:(%d+)"))
      end, "the listening line")
      u.until_true(function() local s = u.status(o) return s.web and s.web.state == "running" end, "web running")
      local pid = u.status(o).web.pid
      local rss0 = orch.proc.info(o.pid).rss
      h.run(function()
        local conns, answered, refused = {}, 0, 0
        for i = 1, 1000 do
          local c = orch.connect { port = port }
          if c then conns[#conns + 1] = c end
          if i % 100 == 0 then orch.sleep(0) end
        end
        -- Half of them send a request head that never ends, half send a
        -- whole request: each is served, refused (closed) or timed out.
        local tasks = {}
        for i, c in ipairs(conns) do
          tasks[#tasks + 1] = orch.task(function()
            c:set_timeout(30)
            c:write(i % 2 == 0 and "GET /healthz HTTP/1.1\r\n\r\n" or "GET /healthz HTTP/1.1\r\nX: ")
            local out = c:read_all() or ""
            c:close()
            if out:match("^HTTP/1.1 200 ") then answered = answered + 1
            else
              assert(out == "" or out:match("^HTTP/1.1 408 "), out)
              refused = refused + 1
            end
          end)
        end
        for _, t in ipairs(tasks) do t:join() end
        assert.are.equal(#conns, answered + refused)
        assert.is_true(answered > 0)
        -- Still serving, afterwards.
        assert.are.same({ 200, "ok\n" }, { curl("http://127.0.0.1:" .. port .. "/healthz") })
      end, 120)
      local s = u.status(o).web
      assert.are.same({ "running", pid, 0 }, { s.state, s.pid, s.restarts })
      local grew = orch.proc.info(o.pid).rss - rss0
      assert.is_true(grew < 16 * 1024 * 1024, "orch's RSS grew by " .. grew .. " bytes")
    end)
    u.stop(o)
    assert(ok, err)
  end)
end)
