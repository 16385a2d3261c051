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
      "c" .. pad .. "  running         7    1d 1:01:01  0         100B  0.00s  -                half\0way",
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
