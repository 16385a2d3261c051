-- The orch command, tested from the outside: temp scripts, exit codes,
-- stdout and stderr (the way Lua's testes/main.lua tests lua.c).
local h = require "spec.helper"

describe("orch run", function()
  it("runs a script with arg and ... set like lua5.4", function()
    local path = h.script([[
      print(arg[0] == ..., select('#', ...), ...)
      print(arg[1], arg[2], #arg)
    ]])
    -- arg[0] is the script, so the first print compares it with the first arg
    local code, out, err = h.cli({ "run", path, "a", "b c" })
    assert.are.equal(0, code, err)
    assert.are.equal("false\t2\ta\tb c\na\tb c\t2\n", out)
  end)

  it("makes `orch` a global and require 'orch' the same table", function()
    local code, out = h.cli({ "run", h.script("print(orch == require 'orch', type(orch.task))") })
    assert.are.equal(0, code)
    assert.are.equal("true\tfunction\n", out)
  end)

  it("waits for every task and timer before exiting", function()
    local code, out = h.cli({ "run", h.script([[
      orch.task(function() orch.sleep(0.05); print("task") end)
      orch.timer.after(0.02, function() print("timer") end)
      print("main")
    ]]) })
    assert.are.equal(0, code)
    -- Both ran before the exit; their order is the clock's (a loaded
    -- machine may start the task's sleep 30 ms before the timer).
    assert.is_true(out == "main\ntimer\ntask\n" or out == "main\ntask\ntimer\n", out)
  end)

  it("exits with orch.exit's code at once", function()
    local code, out = h.cli({ "run", h.script([[
      orch.task(function() orch.sleep(30) end)
      orch.timer.after(0.01, function() print("bye"); orch.exit(7) end)
    ]]) })
    assert.are.equal(7, code)
    assert.are.equal("bye\n", out)
  end)

  it("orch.exit(true/false) like os.exit", function()
    assert.are.equal(0, (h.cli({ "-e", "orch.exit(true)" })))
    assert.are.equal(1, (h.cli({ "-e", "orch.exit(false)" })))
  end)

  it("an error in the main task: message, traceback, exit 1", function()
    local path = h.script("local x = 1\nerror('main failed')\n")
    local code, out, err = h.cli({ "run", path })
    assert.are.equal(1, code)
    assert.are.equal("", out)
    assert.matches("^orch: " .. path:gsub("%p", "%%%0") .. ":2: main failed\n", err)
    assert.matches("stack traceback:", err, 1, true)
  end)

  it("a syntax error: exit 1 with the position", function()
    local path = h.script("local = 1\n")
    local code, _, err = h.cli({ "run", path })
    assert.are.equal(1, code)
    assert.matches("^orch: .*script.lua:1:", err)
  end)

  it("a missing file: exit 2", function()
    local code, _, err = h.cli({ "run", "/nonexistent/x.lua" })
    assert.are.equal(2, code)
    assert.matches("cannot open /nonexistent/x.lua", err, 1, true)
  end)

  it("an error in another task is reported and the loop goes on", function()
    local code, out, err = h.cli({ "run", h.script([[
      orch.task(function() error("side task failed") end)
      orch.sleep(0.02)
      print("still here")
    ]]) })
    assert.are.equal(0, code)
    assert.are.equal("still here\n", out)
    assert.matches("side task failed", err, 1, true)
    assert.matches("stack traceback", err, 1, true)
  end)

  it("orch FILE is orch run FILE", function()
    local code, out = h.cli({ h.script("print('short form', ...)"), "x" })
    assert.are.equal(0, code)
    assert.are.equal("short form\tx\n", out)
  end)

  it("reads the script's stdin through io", function()
    local code, out = h.cli({ "run", h.script("print(io.read('l'))") }, "hello\n")
    assert.are.equal(0, code)
    assert.are.equal("hello\n", out)
  end)
end)

describe("orch -e", function()
  it("runs code with arguments as ...", function()
    local code, out = h.cli({ "-e", "print(...)", "1", "2" })
    assert.are.equal(0, code)
    assert.are.equal("1\t2\n", out)
  end)

  it("can wait", function()
    local code, out = h.cli({ "-e", "orch.sleep(0.01) print('ok')" })
    assert.are.equal(0, code)
    assert.are.equal("ok\n", out)
  end)

  it("needs an argument", function()
    local code, _, err = h.cli({ "-e" })
    assert.are.equal(2, code)
    assert.matches("orch: -e needs CODE", err, 1, true)
  end)
end)

describe("orch version and help", function()
  it("prints orch, Lua and libuv versions", function()
    for _, a in ipairs({ "version", "--version" }) do
      local code, out = h.cli({ a })
      assert.are.equal(0, code)
      assert.matches("^orch %d+%.%d+%.%d+, Lua 5%.4%.%d+, libuv %d+%.%d+%.%d+\n$", out)
    end
  end)

  it("--help lists the commands", function()
    local code, out = h.cli({ "--help" })
    assert.are.equal(0, code)
    assert.matches("usage: orch COMMAND", out, 1, true)
    assert.matches("run FILE", out, 1, true)
  end)

  it("help COMMAND prints that command's help", function()
    local code, out = h.cli({ "help", "run" })
    assert.are.equal(0, code)
    assert.matches("usage: orch run [OPTIONS] FILE", out, 1, true)
  end)

  it("no arguments: usage on stderr, exit 2", function()
    local code, out, err = h.cli({})
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches("usage: orch", err, 1, true)
  end)

  it("never takes a command from the current directory (./orch/cmd/NAME.lua), which another user may write", function()
    -- A typo typed in /tmp, where another user put orch/cmd/<typo>.lua:
    -- nothing of it runs. The same module through an absolute LUA_PATH
    -- entry (a user's own command) still runs.
    local d = h.tmpdir()
    os.execute("mkdir -p " .. h.shquote(d .. "/orch/cmd"))
    h.write(d .. "/orch/cmd/zzplanted.lua", string.format("io.open(%q, 'w'):close()\nreturn function() print('ran') end\n",
      d .. "/ran"))
    local said = h.sh("cd " .. h.shquote(d) .. " && " .. h.shquote(h.bin) .. " zzplanted 2>&1; echo \"exit $?\"")
    assert.truthy(said:find("unknown command 'zzplanted'", 1, true), said)
    assert.truthy(said:find("exit 2$"), said)
    assert.is_nil(io.open(d .. "/ran"))
    local code, out, err = h.cli({ "zzplanted" }, nil, { LUA_PATH = d .. "/?.lua;;" })
    assert.are.equal(0, code, err)
    assert.are.equal("ran\n", out)
    os.remove(d .. "/ran")
  end)

  it("unknown commands and options: a clear message, exit 2", function()
    local cases = {
      { { "frobnicate" }, "orch: unknown command 'frobnicate'" },
      { { "--frobnicate" }, "orch: unknown option '--frobnicate'" },
      { { "run", "--bogus", "x.lua" }, "orch run: unknown option '--bogus'" },
      { { "run" }, "orch run: a FILE is needed" },
      { { "help", "nosuchcommand" }, "orch: unknown command 'nosuchcommand'" },
      { { "Bad/Name" }, "cannot open Bad/Name" },
    }
    for _, c in ipairs(cases) do
      local code, _, err = h.cli(c[1])
      assert.are.equal(2, code, table.concat(c[1], " "))
      assert.matches(c[2], err, 1, true)
    end
  end)
end)

describe("the command line parser", function()
  -- The commands `orch help` lists, and ctl's subcommands from its help.
  local function commands()
    local _, out = h.cli({ "help" })
    local list = {}
    for name in out:gmatch("\n  (%l+)[ \n]") do list[#list + 1] = name end
    return list
  end

  it("--help and -h work for every command and ctl subcommand, before or after other words", function()
    local cmds = commands()
    assert.is_true(#cmds >= 9, table.concat(cmds, " "))
    for _, cmd in ipairs(cmds) do
      for _, flag in ipairs({ "--help", "-h" }) do
        local code, out, err = h.cli({ cmd, flag })
        assert.are.equal(0, code, cmd .. " " .. flag .. ": " .. err)
        assert.matches("^usage: orch " .. cmd, out)
      end
    end
    for _, sub in ipairs({ "status", "start", "stop", "restart", "signal", "tail", "eval", "ping" }) do
      local code, out = h.cli({ "ctl", sub, "--help" })
      assert.are.equal(0, code, sub)
      assert.matches("^usage: orch ctl", out)
    end
    -- After arguments too, and before the command word.
    assert.are.equal(0, (h.cli({ "ctl", "start", "web", "-h" })))
    local code, out = h.cli({ "-h", "ctl" })
    assert.are.equal(0, code)
    assert.matches("^usage: orch COMMAND", out)
  end)

  it("misspelled commands and options: 'did you mean', orch CMD: prefix, exit 2", function()
    local cases = {
      { { "rnu", "x.lua" }, "orch: unknown command 'rnu' (did you mean 'run'?)" },
      { { "status" }, "orch: unknown command 'status' (did you mean 'orch ctl status'?)" },
      { { "ctl", "stauts" }, "orch ctl: unknown command 'stauts' (did you mean 'status'?)" },
      { { "ctl", "status", "--jsn" }, "orch ctl: unknown option '--jsn' (did you mean '--json'?)" },
      { { "ctl", "--sockt", "x", "ping" }, "orch ctl: unknown option '--sockt' (did you mean '--socket'?)" },
      { { "run", "--htp", ":0", "x.lua" }, "orch run: unknown option '--htp' (did you mean '--http'?)" },
      { { "watchdog", "--grase", "1" }, "orch watchdog: unknown option '--grase' (did you mean '--grace'?)" },
      { { "every", "5", "--rat", "true" }, "orch every: unknown option '--rat' (did you mean '--rate'?)" },
      { { "beat", "--timeuot", "1" }, "orch beat: unknown option '--timeuot' (did you mean '--timeout'?)" },
      { { "ctl", "signal", "web", "BOGUS" }, "orch ctl: signal: unknown signal 'BOGUS'" },
    }
    for _, c in ipairs(cases) do
      local code, out, err = h.cli(c[1])
      assert.are.equal(2, code, table.concat(c[1], " ") .. ": " .. err)
      assert.are.equal("", out)
      assert.are.equal(c[2], err:sub(1, #c[2]), table.concat(c[1], " "))
      assert.are.equal(1, select(2, err:gsub("\n", "")), "one line: " .. err)
    end
  end)

  it("options go before or after the command's arguments", function()
    local sock = h.tmpdir() .. "/none.sock"
    -- Both parse (and then fail to connect: exit 3, not a usage error).
    for _, args in ipairs({
      { "ctl", "--json", "--socket", sock, "status", "web" },
      { "ctl", "status", "web", "--json", "--socket", sock },
      { "ctl", "status", "--socket=" .. sock, "web", "--json" },
    }) do
      local code, _, err = h.cli(args)
      assert.are.equal(3, code, table.concat(args, " ") .. ": " .. err)
      assert.matches("orch ctl: cannot connect to " .. sock, err, 1, true)
    end
  end)

  it("the words after a script or program are its own, and -- ends the options", function()
    local path = h.script("print(...)")
    local code, out, err = h.cli({ "run", path, "--help", "--socket", "-x" })
    assert.are.equal(0, code, err)
    assert.are.equal("--help\t--socket\t-x\n", out)
    code, out, err = h.cli({ "run", "--no-socket", "--", path, "-h" })
    assert.are.equal(0, code, err)
    assert.are.equal("-h\n", out)
    code, out, err = h.cli({ "every", "1", "--max-runs", "1", "--quiet", "echo", "--rate", "-h" })
    assert.are.equal(0, code, err)
    assert.are.equal("--rate -h\n", out)
    code, out, err = h.cli({ "every", "1", "--max-runs=1", "--quiet", "--", "echo", "--", "x" })
    assert.are.equal(0, code, err)
    assert.are.equal("-- x\n", out)
  end)

  it("is let go once orch run has parsed its options: the script's orch keeps no parser nor other commands", function()
    local path = h.script([[
      local loaded = {}
      for name in pairs(package.loaded) do
        if name == "argparse" or name:match("^orch%.cmd%.") then loaded[#loaded + 1] = name end
      end
      table.sort(loaded)
      local cli = require "orch.cli"
      print(#loaded == 0 and "none" or table.concat(loaded, " "), cli._parser == nil)
      -- A later need builds it again.
      print((cli.help_of("ctl"):match("^usage: orch ctl")))
    ]])
    local code, out, err = h.cli({ "run", "--no-socket", path })
    assert.are.equal(0, code, err)
    assert.are.equal("none\ttrue\nusage: orch ctl\n", out)
  end)
end)

describe("embedding", function()
  it("a C host drives the loop step by step (examples/embed)", function()
    local out, ok = h.sh(h.progs .. "/embed_host")
    assert.is_true(ok)
    assert.matches("embedded: result=42", out, 1, true)
    assert.matches("host: result=42 steps>0=yes", out, 1, true)
  end)

  it("a C host runs a script file and sees its errors", function()
    local path = h.script("error('from script')")
    local out, ok = h.sh(h.progs .. "/embed_host " .. h.shquote(path) .. " 2>&1")
    assert.is_falsy(ok)
    assert.matches("from script", out, 1, true)
  end)
end)

describe("require 'orch' from a stock lua5.4", function()
  it("finds the Lua half without LUA_PATH", function()
    local out, ok = h.sh("cd /tmp && LUA_CPATH=" .. h.shquote(h.build .. "/lua/?.so") ..
      " lua5.4 -e 'local o = require \"orch\"; print(o.run(function() o.sleep(0.01) return \"ran\" end))' 2>&1")
    assert.is_true(ok, out)
    assert.are.equal("ran", out)
  end)
end)
