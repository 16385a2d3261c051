-- An installed orch that feels finished: man pages that name every command
-- and option, shell completion that loads and completes, and a Debian
-- package built from the tree (lintian clean) that runs from where it is
-- unpacked.
local h = require "spec.helper"
local u = require "spec.ctl_util"

-- The commands `orch help` lists, and the --options each one's help names.
local function commands()
  local _, out = h.cli({ "help" })
  local list = {}
  for name in out:gmatch("\n  (%l+)[ \n]") do
    if name ~= "help" and name ~= "version" then list[#list + 1] = name end
  end
  return list
end

local function options_of(cmd)
  local _, out = h.cli({ "help", cmd })
  local set = {}
  for opt in out:gmatch("%-%-[%l][%l%-]*") do set[opt] = true end
  return set
end

describe("man pages", function()
  local man = {}
  setup(function()
    for _, page in ipairs({ "orch.1", "orch-ctl.1", "orch-lua.7" }) do man[page] = h.slurp(h.build .. "/man/" .. page) end
  end)

  it("are built as roff pages", function()
    for page, text in pairs(man) do
      assert.truthy(text:find('\n.TH "' .. page:match("^[^.]+"), 1, true) or text:find(".TH", 1, true), page)
      assert.is_true(#text > 500, page .. " is nearly empty")
    end
  end)

  it("name every command and every option its help names", function()
    local cmds = commands()
    assert.is_true(#cmds >= 7, "orch help lists " .. #cmds .. " commands")
    local src1 = h.slurp(h.root .. "/doc/man/orch.1.scd")
    local src_ctl = h.slurp(h.root .. "/doc/man/orch-ctl.1.scd")
    local missing = {}
    for _, cmd in ipairs(cmds) do
      local page = cmd == "ctl" and src_ctl or src1
      if not src1:find("*" .. cmd .. "*", 1, true) then missing[#missing + 1] = "command " .. cmd end
      for opt in pairs(options_of(cmd)) do
        if not page:find("*" .. opt .. "*", 1, true) then missing[#missing + 1] = cmd .. " " .. opt end
      end
    end
    -- Every option the parser itself knows (lua/orch/cli.lua), also those
    -- no help text names.
    local _, opts = h.cli({ "-e", "for _, o in ipairs(require('orch.cli').options()) do print(o[1], o[2]) end" })
    local n = 0
    for cmd, opt in opts:gmatch("([^\t\n]*)\t([^\n]+)") do
      n = n + 1
      local top = cmd:match("^%S+")
      local page = (top == "ctl") and src_ctl or src1
      if top ~= "fdholder" and opt ~= "--help" and not page:find("*" .. opt .. "*", 1, true) then
        missing[#missing + 1] = cmd .. " " .. opt .. " (parser)"
      end
      -- And the command's help names it.
      if top and top ~= "fdholder" and opt ~= "--help" and not options_of(top)[opt] then
        missing[#missing + 1] = cmd .. " " .. opt .. " (not in 'orch help " .. top .. "')"
      end
    end
    assert.is_true(n > 40, "the parser knows " .. n .. " options")
    table.sort(missing)
    assert.are.same({}, missing)
  end)

  it("orch-lua(7) has every function and method heading of the manual", function()
    local lua7 = h.slurp(h.build .. "/man/orch-lua.7.scd")
    local missing = {}
    for page in h.sh("ls " .. h.shquote(h.root .. "/doc") .. "/*.md"):gmatch("[^\n]+") do
      for head in h.slurp(page):gmatch("\n###? ([%w_]+[%.:][%w_%.]+)%b()") do
        local escaped = head:gsub("_", "\\_")
        if not lua7:find(escaped, 1, true) then missing[#missing + 1] = head end
      end
    end
    assert.are.same({}, missing)
    assert.truthy(lua7:find("orch.spawn(cmd)", 1, true))
  end)
end)

describe("bash completion", function()
  -- Completions bash offers for the words of a command line (the last word
  -- is the one being completed).
  local function complete(words, env)
    local script = h.tmpdir() .. "/complete.sh"
    local quoted = {}
    for i, w in ipairs(words) do quoted[i] = h.shquote(w) end
    h.write(script, table.concat({
      "PATH=" .. h.shquote(h.build) .. ":$PATH",
      ". " .. h.shquote(h.root .. "/contrib/completion/orch.bash"),
      "COMP_WORDS=(" .. table.concat(quoted, " ") .. ")",
      "COMP_CWORD=" .. (#words - 1),
      "_orch",
      'printf "%s\\n" "${COMPREPLY[@]}"',
    }, "\n") .. "\n")
    local envs = {}
    for k, v in pairs(env or {}) do envs[#envs + 1] = k .. "=" .. h.shquote(v) end
    local out, ok = h.sh("env " .. table.concat(envs, " ") .. " bash " .. h.shquote(script) .. " 2>&1")
    assert.is_true(ok, out)
    local set = {}
    for w in out:gmatch("[^\n]+") do set[w] = true end
    return set
  end

  it("loads in bash and completes commands and ctl subcommands", function()
    local c = complete({ "orch", "" })
    for _, cmd in ipairs({ "run", "ctl", "watchdog", "every", "beat", "repl", "attach" }) do assert.is_true(c[cmd], cmd) end
    c = complete({ "orch", "ctl", "st" })
    assert.are.same({ status = true, start = true, stop = true }, c)
  end)

  it("completes each command's options from its own help", function()
    for _, cmd in ipairs({ "every", "watchdog", "beat" }) do
      local c = complete({ "orch", cmd, "--" })
      for opt in pairs(options_of(cmd)) do assert.is_true(c[opt], cmd .. " " .. opt) end
    end
  end)

  it("completes service names from the running orchestrator", function()
    local o = u.start([[
local sup = require "orch.supervisor"
sup.service{ name = "web", cmd = { "sleep", "1000" } }
sup.service{ name = "worker", cmd = { "sleep", "1000" } }
require("orch.ctl").serve{ socket = SOCK }
sup.run()
]])
    local ok, err = pcall(function()
      local c = complete({ "orch", "ctl", "--socket", o.sock, "stop", "" })
      assert.is_true(c.web and c.worker and c.all, "got: " .. table.concat((function()
        local l = {} for k in pairs(c) do l[#l + 1] = k end return l end)(), " "))
      c = complete({ "orch", "ctl", "stop", "w" }, { ORCH_SOCKET = o.sock })
      assert.are.same({ web = true, worker = true }, c)
      -- --trust-uid takes a value (not the subcommand), passed on to the
      -- status that lists the names; offered among a subcommand's options.
      c = complete({ "orch", "ctl", "--trust-uid", "0", "--socket", o.sock, "stop", "w" })
      assert.are.same({ web = true, worker = true }, c)
      c = complete({ "orch", "ctl", "stop", "--t" }, { ORCH_SOCKET = o.sock })
      assert.are.same({ ["--timeout"] = true, ["--trust-uid"] = true }, c)
    end)
    u.stop(o)
    assert(ok, err)
  end)
end)

describe("the Debian package", function()
  local dir
  setup(function()
    -- scripts/test runs every spec twice (release, then ASan): the package,
    -- built from the same tree, is built once per run and checked twice.
    local shared = os.getenv("ORCH_TEST_SHARED")
    if shared and h.sh("test -f " .. h.shquote(shared .. "/deb/orch_0.1.0_amd64.changes") .. " && echo y") == "y" then
      dir = shared .. "/deb"
      return
    end
    dir = shared and (shared .. "/deb") or h.tmpdir()
    local src = dir .. "/orch-0.1.0"
    -- The tree as git has it (tracked and new files, not ignored ones).
    local out, ok = h.sh(string.format(
      "mkdir -p %s && cd %s && git ls-files -co --exclude-standard | grep -v '^build' | tar -cf - -T - | tar -xf - -C %s 2>&1",
      h.shquote(src), h.shquote(h.root), h.shquote(src)))
    assert(ok, out)
    out, ok = h.sh("cd " .. h.shquote(src) .. " && dpkg-buildpackage -us -uc -b 2>&1")
    assert(ok, out)
  end)

  it("builds orch, liborch0 and liborch-dev, lintian clean", function()
    for _, p in ipairs({ "orch", "liborch0", "liborch-dev" }) do
      assert.is_true(h.sh("test -f " .. h.shquote(dir .. "/" .. p .. "_0.1.0_amd64.deb")) ~= nil, p)
    end
    local out = h.sh("cd " .. h.shquote(dir) .. " && lintian --tag-display-limit 0 orch_0.1.0_amd64.changes 2>&1 | grep -v 'root privileges'")
    assert.are.equal("", out)
  end)

  it("declares lua-cjson and installs the binary, Lua modules, man pages, completion and docs", function()
    local deb = h.shquote(dir .. "/orch_0.1.0_amd64.deb")
    assert.matches("lua%-cjson", (h.sh("dpkg-deb -f " .. deb .. " Depends")))
    local list = (h.sh("dpkg-deb -c " .. deb))
    for _, f in ipairs({ "./usr/bin/orch", "./usr/share/lua/5.4/orch/init.lua", "./usr/share/lua/5.4/orch/supervisor/init.lua",
                         "./usr/share/man/man1/orch.1.gz", "./usr/share/man/man1/orch-ctl.1.gz", "./usr/share/man/man7/orch-lua.7.gz",
                         "./usr/share/bash-completion/completions/orch", "./usr/share/doc/orch/supervisor.md.gz",
                         "./usr/share/doc/orch/examples/orch.service" }) do
      assert.truthy(list:find(f, 1, true), f)
    end
    -- Every Lua module of the tree, a file split off another too.
    for f in h.sh("cd " .. h.shquote(h.root .. "/lua") .. " && find orch -name '*.lua'"):gmatch("[^\n]+") do
      assert.truthy(list:find("./usr/share/lua/5.4/" .. f, 1, true), f)
    end
    local dev = (h.sh("dpkg-deb -c " .. h.shquote(dir .. "/liborch-dev_0.1.0_amd64.deb")))
    for _, f in ipairs({ "./usr/include/orch.h", "./usr/include/orch_heartbeat.h", "orch.pc" }) do
      assert.truthy(dev:find(f, 1, true), f)
    end
  end)

  it("the unpacked orch runs a supervisor script from its own tree", function()
    local root = dir .. "/root"
    local out, ok = h.sh("dpkg-deb -x " .. h.shquote(dir .. "/orch_0.1.0_amd64.deb") .. " " .. h.shquote(root) .. " 2>&1")
    assert(ok, out)
    local script = h.script([[
local sup = require "orch.supervisor"
print(type(sup.service), require("orch.ctl") ~= nil)
]])
    out, ok = h.sh("cd / && " .. h.shquote(root .. "/usr/bin/orch") .. " run --no-socket " .. h.shquote(script) .. " 2>&1")
    assert(ok, out)
    assert.are.equal("function\ttrue", out)
  end)
end)
