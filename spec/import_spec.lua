-- `orch import`: supervisord and pm2 configurations become orch policy
-- scripts that run the same programs, with a comment on every option that
-- has no equivalent.
local h = require "spec.helper"
local u = require "spec.ctl_util"
local cjson = require "cjson"
local import = require "orch.import"

-- The definitions a generated script makes, as the real supervisor holds
-- them: the script runs with its last line (sup.run()) replaced by a dump.
local function definitions(src)
  assert.truthy(src:find("\nsup.run%(%)\n$"), "the script ends with sup.run()")
  local dump = src:gsub("\nsup.run%(%)\n$", "\n") .. [[
local out = {}
for _, s in ipairs(sup.services()) do
  local d = {}
  for k, v in pairs(s.def or s) do if type(v) ~= "function" then d[k] = v end end
  out[s.name] = d
end
print(require("cjson").encode(out))
orch.exit(0)   -- a script that defined services stays up; this one only reports
]]
  local code, out, err = h.cli({ "run", "--no-socket", h.script(dump) })
  assert.are.equal(0, code, err)
  return cjson.decode(out)
end

describe("orch.import.split", function()
  it("splits command lines as supervisord (shlex) does", function()
    local cases = {
      { "a b  c", { "a", "b", "c" } },
      { [[prog --name "two words" 'single $x']], { "prog", "--name", "two words", "single $x" } },
      { [[a\ b "c\"d" '']], { "a b", 'c"d', "" } },
      { [[x="1 2"y]], { "x=1 2y" } },
    }
    for _, c in ipairs(cases) do assert.are.same(c[2], import.split(c[1])) end
    local words, err = import.split([[a "b]])
    assert.is_nil(words)
    assert.matches("unterminated", err)
  end)
end)

describe("orch import of supervisord.conf", function()
  local conf = [[
; a real-world style supervisord.conf
[unix_http_server]
file=/var/run/supervisor.sock   ; (the path to the socket file)

[supervisord]
logfile=/var/log/supervisor/supervisord.log ; (main log file)
nodaemon=false

[program:web]
command=/usr/bin/python3 -m http.server 8080 --bind "127.0.0.1"
directory=/srv/www
user=www-data
autorestart=unexpected
exitcodes=0,2
startsecs=5
startretries=3
stopsignal=QUIT
stopwaitsecs=20
stopasgroup=true
environment=HOME="/srv/www",LANG="C.UTF-8",
    PATH="/usr/bin:/bin"
stdout_logfile=/var/log/web.log
stdout_logfile_maxbytes=10MB
stdout_logfile_backups=5
priority=10
stdout_events_enabled=true
# a hash comment

[program:cron-ish]
command=/bin/sh -c "echo %(program_name)s in %(here)s"
autorestart=false
numprocs=2
process_name=%(program_name)s_%(process_num)02d

[group:site]
programs=web,cron-ish

[eventlistener:memmon]
command=memmon -a 200MB
]]

  it("translates every program option or names it in a comment", function()
    local src, warnings = import.supervisord(conf, { dir = "/etc/supervisor", name = "supervisord.conf" })
    assert.is_string(src, warnings)
    -- What has no equivalent is said, not dropped.
    for _, text in ipairs({ "priority=10", "stdout_events_enabled=true", "[group:site]", "[eventlistener:memmon]",
                            "[supervisord]", "[unix_http_server]", "process_name=" }) do
      assert.truthy(src:find(text, 1, true), text)
    end
    assert.are.same({ "[eventlistener:memmon] has no equivalent; it was not imported" }, warnings)
    local defs = definitions(src)
    local web = defs.web
    assert.are.same({ "/usr/bin/python3", "-m", "http.server", "8080", "--bind", "127.0.0.1" }, web.cmd)
    assert.are.equal("/srv/www", web.cwd)
    assert.are.equal("www-data", web.user)
    assert.are.same({ HOME = "/srv/www", LANG = "C.UTF-8", PATH = "/usr/bin:/bin" }, web.env)
    assert.are.equal("on-failure", web.restart)
    assert.are.same({ 0, 2 }, web.success_codes)
    assert.are.same({ group = true, signal = "QUIT", timeout = 20 }, web.stop)
    assert.are.same({ dir = "/var/log", keep = 5, max_bytes = 10485760 }, web.log)
    assert.are.same({ burst = 4, interval = 60 }, web.start_limit)
    local c = defs["cron-ish"]
    assert.are.same({ "/bin/sh", "-c", "echo cron-ish in /etc/supervisor" }, c.cmd)
    assert.are.equal("never", c.restart)
    assert.are.equal(2, c.numprocs)
  end)

  it("reads [include] files and reads the environment at start for %(ENV_X)s", function()
    local dir = h.tmpdir()
    os.execute("mkdir -p " .. h.shquote(dir .. "/conf.d"))
    h.write(dir .. "/conf.d/a.conf", "[program:a]\ncommand=prog --home %(ENV_HOME)s\n")
    local src = assert(import.supervisord("[include]\nfiles = conf.d/*.conf\n", { dir = dir }))
    assert.truthy(src:find("[include] " .. dir .. "/conf.d/a.conf", 1, true))
    assert.truthy(src:find('os.getenv("HOME")', 1, true))
    local a = definitions(src).a
    assert.are.same({ "sh", "-c", "exec prog --home " .. os.getenv("HOME") }, a.cmd)
  end)

  it("refuses what it cannot read, with the line", function()
    assert.are.same({ nil, "line 2: cannot read \"what is this\"" }, { import.supervisord("[program:x]\nwhat is this\n") })
    assert.are.same({ nil, "[program:x] has no command" }, { import.supervisord("[program:x]\nuser=me\n") })
    assert.are.same({ nil, "no [program:...] section" }, { import.supervisord("[supervisord]\n") })
  end)

  it("the imported script supervises the programs for real", function()
    local dir = h.tmpdir()
    h.write(dir .. "/supervisord.conf", string.format([[
[program:alpha]
command=/bin/sh -c "echo alpha up; exec sleep 1000"
startsecs=0
stdout_logfile=%s/logs/alpha.log

[program:beta]
command=/bin/sh -c 'echo beta up; exec sleep 1000'
startsecs=0
autorestart=true
]], dir))
    os.execute("mkdir -p " .. h.shquote(dir .. "/logs"))
    local code, _, err = h.cli({ "import", "--output", dir .. "/services.lua", dir .. "/supervisord.conf" })
    assert.are.equal(0, code, err)
    -- --output does not replace a file without --force.
    code, _, err = h.cli({ "import", "--output", dir .. "/services.lua", dir .. "/supervisord.conf" })
    assert.are.equal(1, code)
    assert.matches("exists %(use %-%-force", err)
    local src = h.slurp(dir .. "/services.lua")
    local o = u.start("require('orch.ctl').serve{ socket = SOCK }\n" .. src)
    local ok, perr = pcall(function()
      u.until_true(function()
        local s = u.status(o)
        return s.alpha and s.alpha.state == "running" and s.beta and s.beta.state == "running"
      end, "alpha and beta running")
      u.until_true(function() return h.slurp(dir .. "/logs/alpha.log"):find("alpha up", 1, true) end, "alpha's log")
    end)
    u.stop(o)
    assert(ok, perr)
  end)
end)

describe("orch import of a pm2 ecosystem file", function()
  it("translates apps and names what has no equivalent", function()
    local src = assert(import.pm2({ apps = {
      { name = "api", script = "server.js", args = "--port 3000", instances = 2, exec_mode = "cluster",
        env = { NODE_ENV = "production" }, max_memory_restart = "300M", restart_delay = 2000,
        kill_timeout = 5000, out_file = "/var/log/api/out.log", cron_restart = "0 3 * * *", watch = true },
      { name = "worker", script = "./worker.py", interpreter = "python3", autorestart = false, bogus = 1 },
    } }, { dir = "/srv/app" }))
    for _, text in ipairs({ "exec_mode=cluster", "watch", "bogus is not a pm2 app option",
                            'sched.cron("0 3 * * *", function() sup.restart("api") end)' }) do
      assert.truthy(src:find(text, 1, true), text)
    end
    local defs = definitions(src)
    assert.are.same({ "node", "server.js", "--port", "3000" }, defs.api.cmd)
    assert.are.equal(2, defs.api.numprocs)
    assert.are.same({ NODE_ENV = "production" }, defs.api.env)
    assert.are.same({ rss = "300M" }, defs.api.limits)
    assert.are.same({ timeout = 5 }, defs.api.stop)
    assert.are.equal("/srv/app", defs.api.cwd)
    assert.are.same({ "python3", "./worker.py" }, defs.worker.cmd)
    assert.are.equal("never", defs.worker.restart)
  end)

  it("the imported ecosystem.json runs its app for real", function()
    local dir = h.tmpdir()
    h.write(dir .. "/app.sh", "echo app up; exec sleep 1000\n")
    h.write(dir .. "/ecosystem.json", cjson.encode({ apps = { { name = "app", script = "app.sh", interpreter = "sh" } } }))
    local code, src, err = h.cli({ "import", dir .. "/ecosystem.json" })
    assert.are.equal(0, code, err)
    local o = u.start("require('orch.ctl').serve{ socket = SOCK }\n" .. src)
    local ok, perr = pcall(function()
      u.until_true(function() local s = u.status(o) return s.app and s.app.state == "running" end, "app running")
    end)
    u.stop(o)
    assert(ok, perr)
  end)

  it("reads an ecosystem.config.js that is an object literal (never running it), and runs its app", function()
    local dir = h.tmpdir()
    h.write(dir .. "/app.sh", "echo app up; exec sleep 1000\n")
    h.write(dir .. "/ecosystem.config.js", [==[
// pm2 ecosystem file, as `pm2 init` writes it
'use strict';
module.exports = {
  apps: [
    {
      name: "app",                 // the app
      script: 'app.sh',
      interpreter: `sh`,
      args: [],
      env: { NODE_ENV: "production", 'X-Quoted': "a\"b", ["BR"]: 'c' },
      max_memory_restart: '300M', /* a trailing comma follows */
      instances: 1,
      autorestart: true,
    },
  ],
};
]==])
    local code, src, err = h.cli({ "import", dir .. "/ecosystem.config.js" })
    assert.are.equal(0, code, err)
    local defs = definitions(src)
    assert.are.same({ "sh", "app.sh" }, defs.app.cmd)
    assert.are.same({ NODE_ENV = "production", ["X-Quoted"] = 'a"b', BR = "c" }, defs.app.env)
    assert.are.same({ rss = "300M" }, defs.app.limits)
    local o = u.start("require('orch.ctl').serve{ socket = SOCK }\n" .. src)
    local ok, perr = pcall(function()
      u.until_true(function() local s = u.status(o) return s.app and s.app.state == "running" end, "app running")
    end)
    u.stop(o)
    assert(ok, perr)
  end)

  it("refuses JavaScript that would have to run, naming the line and the construct", function()
    local cases = {
      { "const apps = require('./apps')\nmodule.exports = { apps }", "line 1: 'module.exports = { ... }' expected" },
      { "module.exports = {\n  apps: [{ name: 'a', script: 's', env: { P: process.env.P } }]\n}", "line 2: 'process' is code: not supported" },
      { "module.exports = {\n\n  apps: apps }", "line 3: 'apps' is a variable or expression: not supported" },
      { "module.exports = { apps: [{ name: `a${x}` }] }", "line 1: a template string with ${...} is an expression" },
      { "module.exports = { apps: [...more] }", "a spread (...) is not supported" },
      { "module.exports = { apps: [{ name: 'a', instances: 1 + 1 }] }", "',' or '}' expected, found '+'" },
      { "module.exports = { apps }", "a shorthand property (apps) names a variable" },
      { "module.exports = { start() {} }", "a method (start() {...}) is code" },
      { "module.exports = { apps: [] }\nconsole.log(1)", "line 2: more code after the exported object" },
    }
    for _, c in ipairs(cases) do
      local v, err = import.parse_js(c[1])
      assert.is_nil(v, c[1])
      assert.matches(c[2], err, 1, true)
    end
    local dir = h.tmpdir()
    h.write(dir .. "/ecosystem.config.js", cases[2][1])
    local code, out, err = h.cli({ "import", dir .. "/ecosystem.config.js" })
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("orch import: " .. dir .. "/ecosystem.config.js: line 2: 'process' is code: not supported", err, 1, true)
    assert.matches("node -e", err, 1, true)
  end)

  it("usage errors exit 2; unreadable files exit 1", function()
    assert.are.equal(2, (h.cli({ "import" })))
    assert.are.equal(2, (h.cli({ "import", "--format", "yaml", "x" })))
    local code, _, err = h.cli({ "import", "/nonexistent/ecosystem.json" })
    assert.are.equal(1, code)
    assert.matches("No such file", err)
    local bad = h.tmpdir() .. "/ecosystem.json"
    h.write(bad, "{ not json")
    code, _, err = h.cli({ "import", bad })
    assert.are.equal(1, code)
    assert.matches("not JSON", err)
  end)
end)
