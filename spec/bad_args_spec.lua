-- Bad arguments to the Lua-facing helpers raise Lua's standard
-- "bad argument #n to 'fn' (...)" instead of "attempt to index/concatenate";
-- and a readline from a file leaves nothing for LeakSanitizer at exit.
local h = require "spec.helper"
local orch = h.orch
local repl = require "orch.repl"
local sched = require "orch.scheduler"

describe("bad arguments", function()
  it("raise bad-argument errors (table-driven)", function()
    h.run(function()
      local p = assert(orch.spawn{ "true" })
      p:wait()
      h.check_raises{
        { function() return p.lines(42) end, "bad argument #1 to 'lines' (orch.Process expected, got number)" },
        { function() return repl.compile({}) end, "bad argument #1 to 'compile' (string expected, got table)" },
        { function() return repl.compile("1", {}) end, "bad argument #2 to 'compile' (string expected, got table)" },
        { function() return repl.compile("1", "=x", 42) end, "bad argument #3 to 'compile' (table expected, got number)" },
        { function() return repl.local_eval(nil) end, "bad argument #1 to 'local_eval' (string expected, got no value)" },
        { function() return repl.run_task(42) end, "bad argument #1 to 'run_task' (function expected, got number)" },
        { function() return repl.pretty(1, 42) end, "bad argument #2 to 'pretty' (table expected, got number)" },
        { function() return repl.pretty(1, { depth = -1 }) end, "bad argument #2 to 'pretty' (option 'depth': integer >= 0 expected)" },
        { function() return repl.pretty_results(42) end, "bad argument #1 to 'pretty_results' (table expected, got number)" },
        { function() return repl.loop(42) end, "bad argument #1 to 'loop' (table expected, got number)" },
        { function() return sched.next_cron("x") end, "bad argument #1 to 'next_cron' (cron: 'x' needs 5 fields" },
      }
    end)
  end)
end)

describe("orch.term.readline from a file", function()
  it("reads the line, and frees its read buffer at exit (LeakSanitizer clean under ASan)", function()
    local dir = h.tmpdir()
    h.write(dir .. "/in", "a line\nanother\n")
    local out = h.sh(string.format("ASAN_OPTIONS=detect_leaks=1 %s -e 'print(orch.term.readline())' <%s 2>&1; echo rc=$?",
      h.shquote(h.bin), h.shquote(dir .. "/in")))
    assert.are.equal("a line\nrc=0", out)
  end)
end)
