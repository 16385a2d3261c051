-- orch repl and orch.term: the prompt driven through a pseudo-terminal
-- (spec/c/prog_pty.c), scripted stdin, the pretty-printer, bad arguments.
local h = require "spec.helper"
local orch = h.orch
local repl = require "orch.repl"

local pty = h.progs .. "/prog_pty"

-- Runs `orch ARGS` on a pseudo-terminal driven by `script` (prog_pty's
-- expect/send lines). HOME is a fresh directory (history goes there); `env`
-- (a table NAME = value) adds to the environment.
-- Returns exit code, transcript, stderr of prog_pty, home.
local function on_pty(args, script, home, env)
  home = home or h.tmpdir()
  local d = h.tmpdir()
  h.write(d .. "/script", script)
  local parts = { "env -u ORCH_HISTORY", "HOME=" .. h.shquote(home), "TERM=xterm" }
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. h.shquote(v) end
  for _, p in ipairs({ h.shquote(pty), "-t", "30", "--", h.shquote(h.bin) }) do parts[#parts + 1] = p end
  for _, a in ipairs(args) do parts[#parts + 1] = h.shquote(a) end
  local cmd = table.concat(parts, " ") .. " <" .. d .. "/script >" .. d .. "/out 2>" .. d .. "/err"
  local _, how, code = os.execute(cmd)
  if how == "signal" then code = 128 + code end
  return code, h.slurp(d .. "/out"), h.slurp(d .. "/err"), home
end

local function lines(...) return table.concat({ ... }, "\n") .. "\n" end

describe("orch repl on a terminal", function()
  it("prints an expression's value and exits 0 on Ctrl-D", function()
    local code, out, err = on_pty({ "repl" }, lines(
      "expect > ", "send 6 * 7\\r", "expect 42\\r\\n", "expect > ",
      "send {1, 'two', x = {y = true}}\\r", "expect { 1, \"two\", x = { y = true } }",
      "expect > ", "send \\x04"))
    assert.are.equal(0, code, err .. out)
    assert.truthy(out:find("orch 0", 1, true))
  end)

  it("continues a multi-line function and calls it", function()
    local code, out, err = on_pty({ "repl" }, lines(
      "expect > ", "send function triple(a)\\r", "expect >> ",
      "send   return a * 3\\r", "expect >> ", "send end\\r", "expect > ",
      "send triple(14001)\\r", "expect 42003", "expect > ", "send \\x04"))
    assert.are.equal(0, code, err .. out)
  end)

  it("runs tasks and timers while the prompt waits, and Ctrl-C cancels the line", function()
    local code, out, err = on_pty({ "repl" }, lines(
      "expect > ",
      "send n = 0; t = orch.timer.every(0.05, function() n = n + 1; print('tick ' .. n) end)\\r",
      "expect tick 3",
      "send half a line",
      "expect tick 5",
      "send \\x03",
      "expect ^C\\r\\n> ",
      "send t:stop(); print('ticks', n >= 5)\\r",
      "expect ticks\\ttrue",
      "expect > ",
      "send \\x04"))
    assert.are.equal(0, code, err .. out)
    -- The interrupted line was never evaluated.
    assert.falsy(out:find("half a line\r\n[^\r]*error", 1))
    assert.falsy(out:find("syntax error", 1, true))
  end)

  it("interrupts a waiting evaluation with Ctrl-C and keeps the prompt", function()
    local code, out, err = on_pty({ "repl" }, lines(
      "expect > ", "send orch.sleep(3600)\\r", "sleep 0.3", "send \\x03",
      "expect interrupted", "expect > ", "send 'still' .. 'here'\\r",
      "expect \"stillhere\"", "expect > ", "send \\x04"))
    assert.are.equal(0, code, err .. out)
  end)

  it("shows errors with their message and goes on", function()
    local code, out, err = on_pty({ "repl" }, lines(
      "expect > ", "send error('kaboom')\\r", "expect kaboom", "expect > ",
      "send y = 1 +\\r", "expect >> ", "send )\\r", "expect unexpected symbol", "expect > ",
      "send \\x04"))
    assert.are.equal(0, code, err .. out)
  end)

  it("keeps history in ~/.orch_history (0600) across sessions", function()
    local home = h.tmpdir()
    local code, out, err = on_pty({ "repl" }, lines(
      "expect > ", "send 'remembered' .. 1\\r", "expect \"remembered1\"", "expect > ", "send \\x04"), home)
    assert.are.equal(0, code, err .. out)
    local mode = h.sh("stat -c %a " .. h.shquote(home .. "/.orch_history"))
    assert.are.equal("600", mode)
    -- Up arrow recalls the line in a new session.
    code, out, err = on_pty({ "repl" }, lines(
      "expect > ", "send \\x1b[A", "expect remembered", "send \\r", "expect \"remembered1\"",
      "expect > ", "send \\x04"), home)
    assert.are.equal(0, code, err .. out)
  end)

  it("loads FILE first, then gives the prompt with its globals", function()
    local path = h.script("greeting = 'hello ' .. (... or '?')\norch.sleep(0.05)\nlate = true\n")
    local code, out, err = on_pty({ "repl", path, "world" }, lines(
      "expect > ", "send greeting\\r", "expect \"hello world\"", "expect > ",
      "send orch.sleep(0.2) return late\\r", "expect true", "expect > ", "send \\x04"))
    assert.are.equal(0, code, err .. out)
  end)

  it("exits with the code given to orch.exit", function()
    local code, out, err = on_pty({ "repl" }, lines("expect > ", "send orch.exit(7)\\r"))
    assert.are.equal(7, code, err .. out)
  end)
end)

describe("orch repl with standard input not a terminal", function()
  it("evaluates the lines without prompts", function()
    local code, out, err = h.cli({ "repl" }, lines(
      "1 + 1", "x = 20", "x * 2 + 2", "function f(a)", "  return a .. '!'", "end",
      "f('hey')", "print('printed', nil)", "orch.sleep(0.01) return 'slept'", "'a\\nb', nil, 2.0"))
    assert.are.equal(0, code, err)
    assert.are.equal(lines("2", "42", "\"hey!\"", "printed\tnil", "\"slept\"", "\"a\\nb\"\tnil\t2.0"), out)
    assert.are.equal("", err)
  end)

  it("writes errors to stderr, goes on, and exits 1", function()
    local code, out, err = h.cli({ "repl" }, lines("error('first')", "y = 1 + ", "2", "y", "z = {"))
    assert.are.equal(1, code)
    assert.are.equal("3\n", out)
    assert.truthy(err:find("first", 1, true))
    assert.truthy(err:find("<eof>", 1, true))
  end)

  it("joins continuation lines", function()
    local code, out = h.cli({ "repl" }, lines("local t = {", "  a = 1,", "}", "for i = 1, 3 do", "  io.write(i)", "end", "print()"))
    assert.are.equal(0, code)
    assert.are.equal("123\n", out)
  end)

  it("reads from a pipe through the loop while a task runs", function()
    local out = h.sh(string.format(
      "{ echo 'done = false; orch.task(function() orch.sleep(0.2) done = true end)'; sleep 0.6; echo 'done'; } | %s repl; echo \"rc=$?\"",
      h.shquote(h.bin)))
    assert.are.equal("true\nrc=0", out)
  end)

  it("refuses an unknown option and a missing file", function()
    local code, _, err = h.cli({ "repl", "--bogus" })
    assert.are.equal(2, code)
    assert.truthy(err:find("unknown option '--bogus'", 1, true))
    code, _, err = h.cli({ "repl", "/nonexistent/x.lua" })
    assert.are.equal(2, code)
    assert.truthy(err:find("/nonexistent/x.lua", 1, true))
  end)

  it("has help", function()
    local code, out = h.cli({ "help", "repl" })
    assert.are.equal(0, code)
    assert.truthy(out:find("usage: orch repl", 1, true))
  end)
end)

describe("orch.repl.pretty", function()
  local cases = {
    { 42, "42" }, { 1.5, "1.5" }, { 3.0, "3.0" }, { "a\"b\n", '"a\\"b\\n"' }, { true, "true" },
    { nil, "nil" }, { {}, "{}" }, { { 1, 2, 3 }, "{ 1, 2, 3 }" },
    { { b = 1, a = 2, [10] = 3, ["not id"] = 4 }, '{ [10] = 3, a = 2, b = 1, ["not id"] = 4 }' },
    { { ["end"] = 1 }, '{ ["end"] = 1 }' },
    { { { { { { deep = 1 } } } } }, "{ { { { {...} } } } }" },
  }
  for _, c in ipairs(cases) do
    it("formats " .. tostring(c[2]), function()
      assert.are.equal(c[2], repl.pretty(c[1]))
    end)
  end

  it("marks cycles and limits items", function()
    local t = { name = "loop" }
    t.self = t
    assert.truthy(repl.pretty(t):find("self = <cycle table: ", 1, true))
    local big = {}
    for i = 1, 300 do big[i] = i end
    assert.truthy(repl.pretty(big):find("... (100 more)", 1, true))
    assert.are.equal("{ 1, {...} }", repl.pretty({ 1, { 2 } }, { depth = 1 }))
  end)

  it("looks at a bounded number of a big table's keys", function()
    -- Keys whose __tostring counts its calls: sorting them calls it for
    -- every comparison. All 20,000 were sorted before (some 600,000
    -- calls); now at most 4 x items (40) are looked at and the first 10
    -- sorted: at most 45 comparisons (90 calls) and one call each shown.
    local calls = 0
    local mt = { __tostring = function() calls = calls + 1 return "K" end }
    local t = {}
    for i = 1, 20000 do t[setmetatable({}, mt)] = i end
    local s = repl.pretty(t, { items = 10 })
    assert.is_true(calls <= 100, calls)
    assert.truthy(s:find("... (at least 30 more)", 1, true), s)
    -- A proxy's pairs is followed only that far: 41 steps, not 100,001.
    local steps = 0
    local proxy = setmetatable({}, { __pairs = function()
      return function(_, k)
        steps = steps + 1
        k = (k or 0) + 1
        if k <= 100000 then return k, k end
      end, nil, nil
    end })
    s = repl.pretty(proxy, { items = 10 })
    assert.is_true(steps <= 41, steps)
    assert.are.equal("{ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... (at least 30 more) }", s)
    -- The array part is shown up to items, the rest counted, not walked.
    local a = {}
    for i = 1, 1000 do a[i] = i end
    assert.are.equal("{ 1, 2, 3, ... (at least 997 more) }", repl.pretty(a, { items = 3 }))
    -- A table within the walk shows as before: its smallest keys, sorted,
    -- and the exact count of the rest.
    local w = {}
    for i = 1, 300 do w[("k%03d"):format(i)] = i end
    s = repl.pretty(w)
    assert.truthy(s:find("{\n  k001 = 1,\n", 1, true), s)
    assert.truthy(s:find("k200 = 200,\n  ... (100 more)\n}", 1, true), s)
  end)

  it("breaks long tables over lines", function()
    local t = {}
    for i = 1, 30 do t["key" .. i] = i end
    local s = repl.pretty(t)
    assert.truthy(s:find("{\n  key1 = 1,\n", 1, true))
  end)

  it("uses __tostring", function()
    local obj = setmetatable({}, { __tostring = function() return "OBJ" end })
    assert.are.equal("OBJ", repl.pretty(obj))
  end)

  it("compiles like lua.c", function()
    assert.is_function(repl.compile("1 + 1"))
    assert.is_function(repl.compile("x = 1"))
    local fn, err, incomplete = repl.compile("function f()")
    assert.is_nil(fn)
    assert.truthy(err:find("<eof>", 1, true))
    assert.is_true(incomplete)
    fn, err, incomplete = repl.compile("1 +* 2")
    assert.is_nil(fn)
    assert.is_false(incomplete)
  end)
end)

describe("orch.term", function()
  local bad = {
    { "readline", { 1, 2 }, "bad argument #2 to 'readline' (no value expected)" },
    { "readline", { {} }, "bad argument #1 to 'readline' (string expected, got table)" },
    { "wait_interrupt", { -1 }, "bad argument #1 to 'wait_interrupt'" },
    { "write", { {} }, "bad argument #1 to 'write' (string expected, got table)" },
    { "isatty", { -1 }, "bad argument #1 to 'isatty' (file descriptor out of range)" },
    { "isatty", { "x" }, "bad argument #1 to 'isatty' (number expected, got string)" },
    { "add_history", { nil }, "bad argument #1 to 'add_history' (string expected, got nil)" },
    { "read_history", { {} }, "bad argument #1 to 'read_history' (string expected, got table)" },
    { "write_history", { nil }, "bad argument #1 to 'write_history' (string expected, got nil)" },
  }
  for _, c in ipairs(bad) do
    it(c[1] .. " rejects " .. c[3], function()
      -- Called as a field so that the message names the function.
      local call = load("local term = ... return function(...) return term." .. c[1] .. "(...) end")(orch.term)
      local ok, err = pcall(call, table.unpack(c[2], 1, 2))
      assert.is_false(ok)
      assert.truthy(tostring(err):find(c[3], 1, true), err)
    end)
  end

  it("waiting functions need a task", function()
    assert.has_error(function() orch.term.readline("> ") end, "orch.term.readline: must be called from a task")
    assert.has_error(function() orch.term.wait_interrupt() end, "orch.term.wait_interrupt: must be called from a task")
  end)

  it("isatty answers for a non-terminal", function()
    assert.is_false(orch.term.isatty(99))
  end)

  it("wait_interrupt times out and catches SIGINT", function()
    h.run(function()
      local ok, err, code = orch.term.wait_interrupt(0.05)
      assert.is_nil(ok)
      assert.are.equal("ETIMEDOUT", code, err)
      local me = orch.getpid()
      -- Not os.execute: system(3) ignores SIGINT in the caller meanwhile.
      orch.timer.after(0.05, function() orch.run{ "kill", "-INT", tostring(me) } end)
      assert.is_true(orch.term.wait_interrupt(10))
    end)
  end)

  it("history files round-trip", function()
    local d = h.tmpdir()
    if not orch.term.EDITLINE then
      -- Built without libedit: each history call says so, none pretends.
      for _, op in ipairs { "add_history", "write_history", "read_history" } do
        assert.are.same({ nil, op .. ": orch was built without libedit", "ENOSYS" },
          { orch.term[op](op == "add_history" and "print('hist')" or d .. "/h") })
      end
      assert.is_nil(io.open(d .. "/h"))
      return
    end
    assert.is_true(orch.term.add_history("print('hist')"))
    assert.is_true(orch.term.write_history(d .. "/h"))
    assert.truthy(h.slurp(d .. "/h"):find("hist", 1, true))
    assert.is_true(orch.term.read_history(d .. "/h"))
    local ok, _, code = orch.term.read_history(d .. "/missing")
    assert.is_nil(ok)
    assert.are.equal("ENOENT", code)
  end)
end)

-- libedit (with libtinfo, libbsd, libmd) is dlopen()ed by l_term.c on the
-- first call that edits a line or keeps history; nothing links it.
describe("libedit, loaded on first use", function()
  local EDIT_LIBS = { "libedit", "libtinfo", "libbsd", "libmd" }

  -- The libraries of EDIT_LIBS mapped in `maps` (text of /proc/PID/maps).
  local function edit_mappings(maps)
    local found = {}
    for _, name in ipairs(EDIT_LIBS) do
      if maps:find("/" .. name .. "[%.%-]") then found[#found + 1] = name end
    end
    return found
  end

  -- A stand-in libedit.so.2 in a fresh directory (for LD_LIBRARY_PATH):
  -- "nosym" defines rl_initialize only (dlopen works, dlsym fails);
  -- "nodep" needs a library that does not exist (dlopen fails).
  local function fake_libedit(kind)
    local d = h.tmpdir()
    h.write(d .. "/stub.c", "int rl_initialize(void) { return 0; }\n")
    local cmd
    if kind == "nodep" then
      h.write(d .. "/dep.c", "int orch_spec_dep(void) { return 0; }\n")
      cmd = string.format("cd %s && cc -shared -fPIC -o libgone.so dep.c && "
        .. "cc -shared -fPIC -o libedit.so.2 stub.c -L. -Wl,--no-as-needed -lgone && rm libgone.so",
        h.shquote(d))
    else
      cmd = string.format("cd %s && cc -shared -fPIC -o libedit.so.2 stub.c", h.shquote(d))
    end
    local _, ok = h.sh(cmd .. " 2>&1")
    assert.is_true(ok, "cannot build the stand-in libedit")
    return d
  end

  it("is not a dependency of orch, liborch or lua/orch.so", function()
    for _, f in ipairs({ h.bin, h.build .. "/liborch.so", h.build .. "/lua/orch.so" }) do
      local dyn, ok = h.sh("readelf -d " .. h.shquote(f))
      assert.is_true(ok, f)
      assert.truthy(dyn:find("(NEEDED)", 1, true), f .. ": " .. dyn)
      assert.falsy(dyn:find("libedit", 1, true), f .. " needs libedit:\n" .. dyn)
      -- No libedit function or variable is referenced directly (it would be
      -- bound to whatever readline the host process has loaded).
      local undef = h.sh("nm -D --undefined-only " .. h.shquote(f))
      assert.falsy(undef:find("%f[%w_]rl_[%w_]+"), f .. ": " .. tostring(undef:match("%f[%w_]rl_[%w_]+")))
      assert.falsy(undef:find("%f[%w_]%a+_history%f[^%w_]"), f)
    end
  end)

  it("is not mapped by an idle orch run", function()
    local path = h.script("io.write('ready\\n') io.stdout:flush() orch.sleep(30)\n")
    h.run(function()
      local p = assert(orch.spawn{ h.bin, "run", path, stdout = "pipe" })
      local ok, err = pcall(function()
        assert.are.equal("ready", p.stdout:read_line())
        local maps = h.slurp("/proc/" .. p.pid .. "/maps")
        assert.truthy(maps:find("liblua", 1, true) or maps:find("/orch", 1, true), maps)
        assert.are.same({}, edit_mappings(maps))
      end)
      p:kill("KILL")
      p:wait()
      p.stdout:close()
      assert(ok, err)
    end)
  end)

  it("is not loaded by orch repl reading a pipe", function()
    local code, out, err = h.cli({ "repl" }, lines(
      "io.open('/proc/self/maps'):read('a'):find('/libedit', 1, true) == nil"))
    assert.are.equal(0, code, err)
    assert.are.equal(lines("true"), out)
  end)

  it("is loaded by add_history, and the history works", function()
    local d = h.tmpdir()
    local code, out, err = h.cli({ "-e", [[
      local function mapped() return io.open("/proc/self/maps"):read("a"):find("/libedit", 1, true) ~= nil end
      print("before", mapped())
      assert(orch.term.add_history("print('kept')"))
      print("after", mapped())
      assert(orch.term.write_history(...))
      print(io.open(...):read("a"):find("kept", 1, true) ~= nil)
      assert(orch.term.read_history(...))
    ]], d .. "/hist" })
    assert.are.equal(0, code, err)
    assert.are.equal(lines("before\tfalse", "after\ttrue", "true"), out)
  end)

  it("is loaded by the prompt on a terminal, which edits lines", function()
    local code, out, err = on_pty({ "repl" }, lines(
      "expect > ", "send 'mapped ' .. tostring(io.open('/proc/self/maps'):read('a'):find('/libedit', 1, true) ~= nil)\\r",
      "expect \"mapped true\"", "expect > ",
      -- Ctrl-A (start of line) is an edit only libedit performs.
      "send 0)\\x01 21 * (2 + \\r", "expect 42", "expect > ", "send \\x04"))
    assert.are.equal(0, code, err .. out)
    assert.falsy(out:find("no line editing", 1, true), out)
  end)

  for _, kind in ipairs({ "nosym", "nodep" }) do
    local reason = kind == "nosym" and "undefined symbol: rl_callback_handler_install"
      or "libgone.so: cannot open shared object file"

    it("missing (" .. kind .. "): history gives ENOSYS with the reason", function()
      local d = fake_libedit(kind)
      local code, out, err = h.cli({ "-e", [[
        for _, f in ipairs{ "add_history", "read_history", "write_history" } do
          local ok, msg, ename = orch.term[f]("/nonexistent/x")
          print(f, ok, ename, msg)
        end
        print(orch.term.EDITLINE, io.open("/proc/self/maps"):read("a"):find("/libedit", 1, true) ~= nil)
      ]] }, nil, { LD_LIBRARY_PATH = d })
      assert.are.equal(0, code, err)
      local n = 0
      for f, ok, ename, msg in out:gmatch("(%S+)\t(%S+)\t(%S+)\t([^\n]*)\n") do
        n = n + 1
        assert.are.equal("nil", ok, f)
        assert.are.equal("ENOSYS", ename, f)
        assert.truthy(msg:find(f .. ": libedit is unavailable (", 1, true), msg)
        assert.truthy(msg:find(reason, 1, true), msg)
      end
      assert.are.equal(3, n, out)
      -- A failed load is undone (the stand-in stays unmapped).
      assert.truthy(out:find("true\tfalse\n", 1, true), out)
    end)

    it("missing (" .. kind .. "): the prompt says so once and reads plain lines", function()
      local d = fake_libedit(kind)
      local code, out, err = on_pty({ "repl" }, lines(
        "expect no line editing: ", "expect " .. reason, "expect > ",
        "send 6 * 7\\r", "expect 42", "expect > ",
        "send function f()\\r", "expect >> ", "send return 'plain' end\\r", "expect > ",
        "send f()\\r", "expect \"plain\"", "expect > ", "send \\x04"), nil, { LD_LIBRARY_PATH = d })
      assert.are.equal(0, code, err .. out)
      local _, count = out:gsub("no line editing", "")
      assert.are.equal(1, count, out)
    end)
  end
end)
