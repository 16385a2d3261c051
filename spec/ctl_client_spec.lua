-- `orch ctl` loads only what a client needs (issue 15): run against a real
-- `orch run`, with $ORCH_LUA_DIR pointing at a tree whose server-side
-- modules (the supervisor, the REPL, the scheduler, ...) raise when loaded.
-- The client must still work; the same tree makes `require` of those
-- modules fail, so the test cannot pass by the shadow being ignored.
local h = require "spec.helper"
local u = require "spec.ctl_util"

local POLICY = [[
local sup = require "orch.supervisor"
sup.configure{ log = false, output = function() end }
sup.service{ name = "a", cmd = { "sleep", "1000" } }
sup.run()
]]

-- The modules the client must not load, relative to lua/orch/.
local function server_modules()
  -- ctl.lua is the server half of the control plane; the client's is
  -- ctl/client.lua.
  local list = { "ctl.lua", "repl.lua", "scheduler.lua", "watchdog.lua", "http.lua", "import.lua", "sdnotify.lua" }
  for f in h.sh("ls lua/orch/supervisor"):gmatch("[^\n]+") do
    if f:match("%.lua$") then list[#list + 1] = "supervisor/" .. f end
  end
  return list
end

-- A tree for $ORCH_LUA_DIR: each of those modules replaced by one that
-- raises (searched before the real tree).
local function shadow_tree()
  local d = h.tmpdir()
  os.execute("mkdir -p " .. h.shquote(d .. "/orch/supervisor"))
  local mods = server_modules()
  for _, m in ipairs(mods) do
    h.write(d .. "/orch/" .. m, string.format("error(%q, 0)\n", "orch ctl loaded orch/" .. m))
  end
  return d, mods
end

describe("orch ctl, the client", function()
  local o, shadow, mods
  setup(function()
    o = u.start(POLICY)
    shadow, mods = shadow_tree()
  end)
  teardown(function() if o then u.stop(o) end end)

  it("shadows the server-side modules (the test's own check)", function()
    assert.is_true(#mods > 5)
    for _, m in ipairs { "orch.supervisor", "orch.supervisor.instance", "orch.repl", "orch.ctl" } do
      local code, _, err = h.cli({ "-e", "require '" .. m .. "'" }, nil, { ORCH_LUA_DIR = shadow })
      assert.are_not.equal(0, code)
      assert.truthy(err:find("orch ctl loaded", 1, true), err)
    end
  end)

  it("answers ping, status and --json status without loading the supervisor, the REPL or the ctl server", function()
    local env = { ORCH_LUA_DIR = shadow }
    local code, out, err = h.cli({ "ctl", "--socket", o.sock, "ping" }, nil, env)
    assert.are.equal(0, code, err)
    assert.truthy(out:match("^orch %S+, pid " .. o.pid .. ", "), out)
    assert.are.equal("", err)
    code, out, err = h.cli({ "ctl", "--socket", o.sock, "status" }, nil, env)
    assert.are.equal(0, code, err)
    assert.truthy(out:find("\na%s+running%s+%d+"), out)
    code, out, err = h.cli({ "ctl", "--socket", o.sock, "--json", "ping" }, nil, env)
    assert.are.equal(0, code, err)
    assert.truthy(out:find('"ok":true', 1, true), out)
  end)

  it("answers ping without the table formatter (orch.ctl.format), which status still uses", function()
    local d = h.tmpdir()
    os.execute("mkdir -p " .. h.shquote(d .. "/orch/ctl"))
    h.write(d .. "/orch/ctl/format.lua", 'error("orch ctl loaded ctl/format", 0)\n')
    local env = { ORCH_LUA_DIR = d }
    local code, out, err = h.cli({ "ctl", "--socket", o.sock, "ping" }, nil, env)
    assert.are.equal(0, code, err)
    assert.truthy(out:match("^orch %S+, pid " .. o.pid .. ", "), out)
    -- (the test's own check: a status of named services formats its table)
    code, out, err = h.cli({ "ctl", "--socket", o.sock, "status", "a" }, nil, env)
    assert.are_not.equal(0, code)
    assert.truthy(err:find("orch ctl loaded ctl/format", 1, true), err)
  end)

  it("answers ping opening only the C modules it needs, without the Lua modules that complete the others", function()
    -- orch.callback, orch.heartbeat and orch.proc raise when loaded: they
    -- come with the rest of `orch` (orch.spawn, orch.signal, ...), which a
    -- ping does not ask for.
    local d = h.tmpdir()
    os.execute("mkdir -p " .. h.shquote(d .. "/orch"))
    for _, m in ipairs { "callback", "heartbeat", "proc" } do
      h.write(d .. "/orch/" .. m .. ".lua", string.format("error(%q, 0)\n", "orch ctl loaded orch/" .. m .. ".lua"))
    end
    local env = { ORCH_LUA_DIR = d }
    local code, out, err = h.cli({ "ctl", "--socket", o.sock, "ping" }, nil, env)
    assert.are.equal(0, code, err)
    assert.truthy(out:match("^orch %S+, pid " .. o.pid .. ", "), out)
    assert.are.equal("", err)
    -- (the test's own check: the rest of `orch` loads them)
    code, out, err = h.cli({ "-e", "print(orch.spawn)" }, nil, env)
    assert.are_not.equal(0, code)
    assert.truthy(err:find("orch ctl loaded orch/", 1, true), err)
    -- The ping as `orch ctl` runs it (orch.cli.plan, then dispatch as the
    -- main task), in a process that says at its exit which orch.core
    -- modules were opened.
    local run = [[
      local cli = require "orch.cli"
      assert(cli.plan("ctl", "--socket", ..., "ping") == "command 1")
      local exit = orch.exit
      orch.exit = function(c)
        local open = {}
        for k in pairs(package.loaded) do
          if k:match("^orch%.core%.") or k == "orch.callback" or k == "orch.heartbeat" or k == "orch.proc" then
            open[#open + 1] = k
          end
        end
        table.sort(open)
        io.stdout:write("opened: ", table.concat(open, " "), "\n")
        return exit(c)
      end
      cli.dispatch()
    ]]
    code, out, err = h.cli({ "-e", run, o.sock })
    assert.are.equal(0, code, err)
    assert.truthy(out:match("^orch %S+, pid " .. o.pid .. ", "), out)
    assert.truthy(out:find("\nopened: orch.core.core orch.core.stream orch.core.sys\n", 1, true), out)
    -- (the test's own check: a script that asks for more opens the rest)
    code, out, err = h.cli({ "-e", run:gsub("cli%.dispatch%(%)", "local _ = orch.signal cli.dispatch()"), o.sock })
    assert.are.equal(0, code, err)
    assert.truthy(out:find("orch.core.proc", 1, true) and out:find("orch.proc", 1, true), out)
  end)

  -- lua-cjson is looked for along package.cpath at once, not after each
  -- template of package.path (issue 15: eight failed opens a start).
  it("takes lua-cjson from package.cpath without probing package.path for it", function()
    local d = h.tmpdir()
    h.write(d .. "/cjson.lua", 'error("orch ctl looked for cjson along package.path", 0)\n')
    local code, out, err = h.cli({ "ctl", "--socket", o.sock, "ping" }, nil, { LUA_PATH = d .. "/?.lua;;" })
    assert.are.equal(0, code, err)
    assert.truthy(out:match("^orch %S+, pid " .. o.pid .. ", "), out)
    -- (the test's own check: require reads that path first)
    code, _, err = h.cli({ "-e", "require 'cjson'" }, nil, { LUA_PATH = d .. "/?.lua;;" })
    assert.are_not.equal(0, code)
    assert.truthy(err:find("looked for cjson along package.path", 1, true), err)
  end)

  it("reads a plain line without argparse or the other commands' modules", function()
    -- argparse (found through LUA_PATH) and every command module but ctl's
    -- raise when loaded: ping, status and stop still work.
    local d = h.tmpdir()
    os.execute("mkdir -p " .. h.shquote(d .. "/orch/cmd"))
    h.write(d .. "/argparse.lua", 'error("orch ctl loaded argparse", 0)\n')
    for f in h.sh("ls lua/orch/cmd"):gmatch("[^\n]+") do
      if f ~= "ctl.lua" then h.write(d .. "/orch/cmd/" .. f, string.format("error(%q, 0)\n", "orch ctl loaded cmd/" .. f)) end
    end
    local env = { ORCH_LUA_DIR = d, LUA_PATH = d .. "/?.lua;;" }
    -- (the test's own check: help is argparse's)
    local code, out, err = h.cli({ "ctl", "--socket", o.sock, "--help" }, nil, env)
    assert.are_not.equal(0, code)
    assert.truthy(err:find("orch ctl loaded", 1, true), err)
    code, out, err = h.cli({ "ctl", "--socket=" .. o.sock, "ping" }, nil, env)
    assert.are.equal(0, code, err)
    assert.truthy(out:match("^orch %S+, pid " .. o.pid .. ", "), out)
    code, out, err = h.cli({ "ctl", "--json", "--socket", o.sock, "--timeout", "5", "status", "a" }, nil, env)
    assert.are.equal(0, code, err)
    assert.truthy(out:find('"name":"a"', 1, true), out)
    code, out, err = h.cli({ "ctl", "--socket", o.sock, "stop", "nosuch" }, nil, env)
    assert.are_not.equal(0, code)
    assert.truthy((out .. err):find("nosuch", 1, true), out .. err)
  end)

  it("reads a plain line with neither the command line's parser (orch.cli.parse) nor orch.cmd.ctl (help, tables, events)", function()
    -- argparse, orch.cli.parse and orch.cmd.ctl raise when loaded: ping,
    -- status, is-active and stop still work.
    local d = h.tmpdir()
    os.execute("mkdir -p " .. h.shquote(d .. "/orch/cmd") .. " " .. h.shquote(d .. "/orch/cli"))
    h.write(d .. "/argparse.lua", 'error("orch ctl loaded argparse", 0)\n')
    h.write(d .. "/orch/cli/parse.lua", 'error("orch ctl loaded cli/parse", 0)\n')
    h.write(d .. "/orch/cmd/ctl.lua", 'error("orch ctl loaded cmd/ctl", 0)\n')
    local env = { ORCH_LUA_DIR = d, LUA_PATH = d .. "/?.lua;;" }
    -- (the test's own checks: help is the parser's, a named status's table
    -- and the events' lines are orch.cmd.ctl's)
    local code, out, err = h.cli({ "ctl", "--socket", o.sock, "--help" }, nil, env)
    assert.are_not.equal(0, code)
    assert.truthy(err:find("orch ctl loaded cli/parse", 1, true), err)
    code, out, err = h.cli({ "ctl", "--socket", o.sock, "status", "a" }, nil, env)
    assert.are_not.equal(0, code)
    assert.truthy(err:find("orch ctl loaded cmd/ctl", 1, true), err)
    code, out, err = h.cli({ "ctl", "--socket", o.sock, "events" }, nil, env)
    assert.are_not.equal(0, code)
    assert.truthy(err:find("orch ctl loaded cmd/ctl", 1, true), err)
    code, out, err = h.cli({ "ctl", "--socket", o.sock, "ping" }, nil, env)
    assert.are.equal(0, code, err)
    assert.truthy(out:match("^orch %S+, pid " .. o.pid .. ", "), out)
    assert.are.equal("", err)
    code, out, err = h.cli({ "ctl", "--json", "--socket=" .. o.sock, "ping" }, nil, env)
    assert.are.equal(0, code, err)
    assert.truthy(out:find('"ok":true', 1, true), out)
    code, out, err = h.cli({ "ctl", "--socket", o.sock, "status" }, nil, env)
    assert.are.equal(0, code, err)
    assert.truthy(out:find("\na%s+running%s+%d+"), out)
    code, out, err = h.cli({ "ctl", "--socket", o.sock, "is-active", "a" }, nil, env)
    assert.are.equal(0, code, err)
    assert.are.equal("active\n", out)
    code, out, err = h.cli({ "ctl", "--socket", o.sock, "stop", "nosuch" }, nil, env)
    assert.are.equal(1, code, out .. err)
    assert.truthy(err:find("nosuch", 1, true), err)
    assert.falsy(err:find("orch ctl loaded", 1, true), err)
  end)

  it("still gives the server's errors (a failed eval) without the REPL on the client side", function()
    local code, _, err = h.cli({ "ctl", "--socket", o.sock, "eval", "error('boom')" }, nil, { ORCH_LUA_DIR = shadow })
    assert.are.equal(1, code)
    assert.truthy(err:find("boom", 1, true), err)
  end)
end)

describe("orch ctl's status table", function()
  local format_status = require("orch.cmd.ctl").format_status

  it("aligns its columns, also past string.format's width of 99 and around a zero byte", function()
    local long = string.rep("x", 120)
    local lines = format_status {
      { name = "a", state = "running", pid = 12, uptime = 3725, restarts = 2, rss = 2048, cpu = 1.5 },
      { name = long, state = "fatal", exit_code = 3, restarts = 0, reason = "start limit\nhit" },
      { name = "c", state = "running", pid = 7, uptime = 90061, restarts = 0, rss = 100, cpu = 0, status_text = "half\0way" },
    }
    local pad = string.rep(" ", #long - 1)
    assert.are.same({
      "NAME" .. string.rep(" ", #long - 4) .. "  STATE           PID  UPTIME      RESTARTS  RSS   CPU    REASON           STATUS",
      "a" .. pad .. "  running         12   1:02:05     2         2.0K  1.50s  -                -",
      long .. "  fatal (exit 3)  -    -           0         -     -      start limit hit  -",
      -- (A service's text has its control characters shown as "?".)
      "c" .. pad .. "  running         7    1d 1:01:01  0         100B  0.00s  -                half?way",
    }, lines)
    -- Short cells (one format a line), and a zero byte in a padded cell
    -- (that line padded by hand): the same layout.
    assert.are.same({
      "NAME  STATE    PID  UPTIME   RESTARTS  RSS   CPU",
      "b     running  9    0:00:01  0         1.0M  0.25s",
      "n\0m   stopped  -    -        1         -     -",
    }, format_status {
      { name = "b", state = "running", pid = 9, uptime = 1.9, restarts = 0, rss = 1048576, cpu = 0.25 },
      { name = "n\0m", state = "stopped", restarts = 1 },
    })
  end)
end)

-- The supervisor's table (format.status_table, in C) against the client's
-- (format.status_lines, in Lua), which stays the reference: the same text
-- for the same rows, random ones included.
describe("format.status_table", function()
  local format = require "orch.ctl.format"
  -- What orch.supervisor.status passes for a record's values.
  local function c_text(rows)
    local t <close> = format.status_table(#rows)
    for _, r in ipairs(rows) do
      local st, cell = r.state, r.state
      local ended = st == "exited" or st == "backoff" or st == "fatal" or st == "stopped"
      if ended and (r.exit_code ~= nil or r.exit_signal ~= nil) then
        cell = st .. (r.exit_signal and (" (signal " .. tostring(r.exit_signal) .. ")") or (" (exit " .. tostring(r.exit_code) .. ")"))
      end
      local why = st ~= "running" and type(r.reason) == "string" and format.cell(r.reason)
      local text = type(r.status_text) == "string" and r.status_text ~= "" and format.cell(r.status_text)
      t:row(r.name, cell, r.pid, r.uptime, r.restarts, r.rss, r.cpu, r.oom_kills, why, text)
    end
    return t:text()
  end
  local function lua_text(rows)
    return table.concat(format.status_lines(#rows, function(i)
      local r = rows[i]
      return r.name, r.state, r.exit_code, r.exit_signal, r.pid, r.uptime, r.restarts, r.rss, r.cpu,
        r.oom_kills, r.reason, r.status_text
    end), "\n")
  end

  it("makes the lines status_lines makes: fixed cases and 2,000 random rows", function()
    local long = string.rep("y", 300)
    local fixed = {
      {},
      { { name = "a", state = "running", pid = 12, uptime = 3725, restarts = 2, rss = 2048, cpu = 1.5 } },
      { { name = long, state = "fatal", exit_code = 3, restarts = 0, reason = "start limit\n\thit" },
        { name = "c", state = "running", pid = 7, uptime = 90061.7, restarts = 0, rss = 100, cpu = 0, status_text = "half\0way" },
        { name = "n\0m", state = "stopped", exit_signal = "TERM", restarts = 1, oom_kills = 0 },
        { name = "o", state = "running", pid = 8.0, uptime = -1.5, restarts = 3.0, rss = 1024 ^ 5 * 3, cpu = 1e300, oom_kills = 2 } },
    }
    for _, rows in ipairs(fixed) do assert.are.equal(lua_text(rows), c_text(rows)) end
    math.randomseed(os.time())
    local states = { "running", "stopped", "exited", "backoff", "fatal", "starting", "stopping", "frozen" }
    local function maybe(v) if math.random(4) == 1 then return nil end return v end
    local function str()
      local t = {}
      for i = 1, math.random(0, 12) do t[i] = string.char(math.random(0, 255)) end
      return table.concat(t)
    end
    local rows = {}
    for i = 1, 2000 do
      rows[i] = {
        name = math.random(10) == 1 and str() or ("svc" .. i), state = states[math.random(#states)],
        exit_code = maybe(math.random(0, 255)), exit_signal = math.random(3) == 1 and "KILL" or nil,
        pid = maybe(math.random(1, 4194304)), uptime = maybe(math.random() * 10 ^ math.random(0, 7)),
        restarts = maybe(math.random(0, 100000)), rss = maybe(math.random(0, 1 << math.random(1, 60))),
        cpu = maybe(math.random() * 10 ^ math.random(-3, 9)), oom_kills = math.random(8) == 1 and math.random(0, 3) or nil,
        reason = math.random(8) == 1 and str() or nil, status_text = math.random(8) == 1 and str() or nil,
      }
    end
    assert.are.equal(lua_text(rows), c_text(rows))
  end)

  it("writes numbers as string.format and tostring do: near powers of ten, near ties, random", function()
    -- The C writer's own number formatting (faster than snprintf) against
    -- Lua's: %.14g (JSON), tostring (JSON figures), %.1f (RSS), %.2f (CPU).
    math.randomseed(os.time())
    local vals = { 0.0, -0.0, 0.125, 1.005, 2.675, 0.5, 1.5, 2.5, 1e300, 5e-324, 1 / 0, -1 / 0, 0 / 0 }
    local function add(v) vals[#vals + 1] = v end
    for e = -6, 16 do
      local p = 10.0 ^ e
      add(p); add(-p); add(p * (1 + 2 ^ -52)); add(p * (1 - 2 ^ -53)); add(p - 0.5 * 10.0 ^ (e - 14))
      add(p * 0.99999999999999)
      for _ = 1, 50 do
        add(math.random() * p); add(math.floor(math.random() * 1e6) / 1000 * p)
        add((math.random(0, 10 ^ 6) + 0.5) * 10.0 ^ (e - 6))
      end
    end
    for _ = 1, 5000 do
      add(math.random() * 10 ^ math.random(-8, 20)); add(math.random(0, 1000) / 8); add(math.random(0, 100000) * 0.005)
    end
    local bad = {}
    for _, v in ipairs(vals) do
      local j <close> = format.status_json(1)
      j:common("a", "a", 1, "running", 5, v, v, 0, 0, 0, 1, v, v, "/g", v, nil, nil)
      local g = string.format("%.14g", v)
      local f = (v ~= v or v == 1 / 0 or v == -1 / 0) and "null" or tostring(v)
      local want = '[{"name":"a","service":"a","index":1,"state":"running","pid":5,"start_time":' .. g
        .. ',"uptime":' .. g .. ',"restarts":0,"log_lines":0,"log_dropped":0,"rss":1,"accounting_age":' .. g
        .. ',"cpu":' .. g .. ',"cgroup":"/g","memory":' .. f .. "}]"
      if j:text() ~= want then bad[#bad + 1] = string.format("%a", v) end
      if v == v and v >= 0 and v < 1 / 0 then
        local rss, up = v >= 1024 and v or math.floor(v), v < 1e15 and v or 1
        local row = { { name = "a", state = "running", pid = 1, uptime = up, restarts = 0, rss = rss, cpu = v } }
        if c_text(row) ~= lua_text(row) then bad[#bad + 1] = string.format("table %a", v) end
      end
    end
    assert.are.same({}, bad)
  end)

  it("writes a cgroup's path from the orch.Cgroup, and declines a path that needs an escape", function()
    local orch = require "orch"
    local name = h.cgroup_name()
    local cg = assert(orch.cgroup.create(name))
    finally(function()
      cg:remove()
      cg:close()
    end)
    local j <close> = format.status_json(3)
    local function common(path)
      return j:common("a", "a", 1, "running", 5, 1, 2, 0, 0, 0, 4096, 0.5, 0.25, path, nil, nil, nil)
    end
    assert.is_true(common(cg))
    -- A path that needs an escape (or is not ASCII) writes nothing: the
    -- caller writes that record its own way.
    assert.is_false(common('/a"b'))
    assert.is_false(common("/caf\xc3\xa9"))
    assert.is_false(common("/a\\b"))
    assert.is_false(common("/a\nb"))
    assert.is_true(common("/plain"))
    assert.are.equal('[{"name":"a","service":"a","index":1,"state":"running","pid":5,"start_time":1,"uptime":2,'
      .. '"restarts":0,"log_lines":0,"log_dropped":0,"rss":4096,"accounting_age":0.5,"cpu":0.25,"cgroup":"'
      .. cg:path() .. '"},{"name":"a","service":"a","index":1,"state":"running","pid":5,"start_time":1,"uptime":2,'
      .. '"restarts":0,"log_lines":0,"log_dropped":0,"rss":4096,"accounting_age":0.5,"cpu":0.25,"cgroup":"/plain"}]',
      j:text())
    h.check_raises {
      { function() common(io.stdout) end, "bad argument #14 to 'common' (string expected, got FILE*)" },
    }
    cg:close()
    h.check_raises { { function() common(cg) end, "attempt to use a closed orch.Cgroup" } }
    cg = assert(orch.cgroup.open(name))
  end)

  it("takes any count as a hint only: a huge one reserves no more than a bounded buffer", function()
    -- 4294967295 rows of 64 bytes would be 256 GiB: malloc fails (or, under
    -- ASan, aborts). The hint is capped; the objects work as usual.
    local t <close> = format.status_table(4294967295)
    local j <close> = format.status_json(math.maxinteger)
    t:row("a", "running", 5, 1, 0, 4096, 0.5, nil, nil, nil)
    j:raw('{"name":"a"}')
    assert.matches("^NAME", t:text())
    assert.are.equal('[{"name":"a"}]', j:text())
  end)

  it("rejects what no status has, and a closed table", function()
    local t = format.status_table(1)
    assert.are.equal("orch.fmt.Table: 0 rows", tostring(t))
    local j = format.status_json(1)
    h.check_raises {
      { function() t:row({}, "running") end, "bad argument #1 to 'row' (string expected, got table)" },
      { function() t:row("a", "running", nil, nil, nil, nil, nil, nil, nil, nil, "extra") end,
        "bad argument #11 to 'row' (no value expected)" },
      { function() format.status_table(-1) end, "(a count >= 0 expected)" },
      { function() j:common("a", "a", 1.5, "running", 5, 1, 1, 0, 0, 0, 1, 0, 0, "/g") end,
        "bad argument #3 to 'common' (number has no integer representation)" },
      { function() j:common("a", "a", 1, "running", 5, 1, 1, 0, 0, 0, 1, 0, 0, "/g", "x") end,
        "bad argument #15 to 'common' (number expected, got string)" },
      { function() j:raw({}) end, "bad argument #1 to 'raw' (string expected, got table)" },
    }
    -- Nothing of a rejected record was written.
    assert.are.equal("[]", j:text())
    t:close()
    t:close()
    assert.are.equal("orch.fmt.Table: closed", tostring(t))
    h.check_raises { { function() t:text() end, "attempt to use a closed orch.fmt.Table" } }
    j:raw('{"name":"x"}')
    j:common("a", "a", 1, "running", 5, 1.5, 2.25, 0, 3, 0, 4096, 0.5, 0.125, "/g", 1024, nil, 0.0)
    assert.are.equal('[{"name":"x"},{"name":"a","service":"a","index":1,"state":"running","pid":5,"start_time":1.5,'
      .. '"uptime":2.25,"restarts":0,"log_lines":3,"log_dropped":0,"rss":4096,"accounting_age":0.5,"cpu":0.125,'
      .. '"cgroup":"/g","memory":1024,"oom_kills":0.0}]', j:text())
    j:close()
    h.check_raises { { function() j:raw("{}") end, "attempt to use a closed orch.fmt.Json" } }
  end)
end)

describe("orch ctl's command line", function()
  it("reads a plain line as argparse does, and leaves every other line to it", function()
    local lines = {
      { "ctl", "ping" }, { "ctl", "--socket", "S", "--json", "status" }, { "ctl", "status", "a", "b" },
      { "ctl", "stop", "all" }, { "ctl", "--timeout=3", "start", "x" }, { "ctl", "--socket=S", "health" },
      { "ctl", "start" }, { "ctl", "--json", "--json", "ping" }, { "ctl", "--socket", "S", "--socket", "T", "ping" },
      { "ctl", "start", "--wait", "x" }, { "ctl", "start", "--wait=3", "x" }, { "ctl", "tail", "x", "-n", "3" },
      { "ctl", "signal", "x", "HUP" }, { "ctl", "eval", "return 1" }, { "ctl", "ping", "extra" },
      { "ctl", "--socket" }, { "ctl", "--socket", "--json", "ping" }, { "ctl", "--bogus", "ping" },
      { "ctl", "nosuch" }, { "ctl" }, { "ctl", "-h" }, { "ctl", "ping", "--help" }, { "ctl", "is-active", "-q", "a" },
      { "ctl", "--timeout", "-1", "ping" }, { "ctl", "stop", "--", "a" }, { "-v", "ctl", "ping" }, { "ctl", "--json=1", "ping" },
    }
    local src = { "local cli = require 'orch.cli'", "local lines = {" }
    for _, l in ipairs(lines) do
      local q = {}
      for i, w in ipairs(l) do q[i] = string.format("%q", w) end
      src[#src + 1] = "{" .. table.concat(q, ",") .. "},"
    end
    src[#src + 1] = [[}
      local function dump(v)
        if type(v) ~= "table" then return tostring(v) end
        local ks = {}
        for k, x in pairs(v) do ks[#ks + 1] = tostring(k) .. "=" .. (type(x) == "table" and "{" .. table.concat(x, ",") .. "}" or tostring(x)) end
        table.sort(ks)
        return table.concat(ks, " ")
      end
      local diff = 0
      for _, l in ipairs(lines) do
        local a = table.pack(cli.parse(l))
        local b = table.pack(cli._parse_argparse(l))
        local da, db = dump(a[1]) .. " " .. dump(a[2]) .. " " .. dump(a[4]), dump(b[1]) .. " " .. dump(b[2]) .. " " .. dump(b[4])
        if da ~= db or (a[3] and a[3].main) ~= (b[3] and b[3].main) then
          diff = diff + 1
          print(table.concat(l, " ") .. ": " .. da .. " <> " .. db)
        end
      end
      print("differences: " .. diff)
    ]]
    local code, out, err = h.cli({ "-e", table.concat(src, "\n") })
    assert.are.equal(0, code, err)
    assert.are.equal("differences: 0\n", out)
  end)
end)
