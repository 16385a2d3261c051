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
    assert.matches("-e needs an argument", err, 1, true)
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
    assert.matches("usage: orch run FILE", out, 1, true)
  end)

  it("no arguments: usage on stderr, exit 2", function()
    local code, out, err = h.cli({})
    assert.are.equal(2, code)
    assert.are.equal("", out)
    assert.matches("usage: orch", err, 1, true)
  end)

  it("unknown commands and options: a clear message, exit 2", function()
    local cases = {
      { { "frobnicate" }, "orch: unknown command 'frobnicate'" },
      { { "--frobnicate" }, "orch: unknown option '--frobnicate'" },
      { { "run", "--bogus", "x.lua" }, "unknown option '--bogus' for run" },
      { { "run" }, "run needs a FILE" },
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
