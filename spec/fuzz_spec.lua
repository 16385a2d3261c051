-- Fuzzing that stays in the tree (short runs here, long ones with
-- scripts/fuzz): every public binding called with random arguments, and the
-- control socket fed random and hostile input. Under the ASan+UBSan build a
-- memory error or undefined behaviour fails the run. A failure prints the
-- seed; ORCH_FUZZ_SEED=n replays it, ORCH_FUZZ_CALLS / ORCH_FUZZ_CONNECTIONS
-- set the lengths.
local h = require "spec.helper"
local u = require "spec.ctl_util"

local function seed()
  return tonumber(os.getenv("ORCH_FUZZ_SEED")) or (os.time() * 1000 + h.orch.getpid()) % 1000000007
end

describe("fuzzing", function()
  it("every public binding with random arguments: no crash, no sanitizer report", function()
    local s = seed()
    local calls = tonumber(os.getenv("ORCH_FUZZ_CALLS")) or 2000
    local d = h.tmpdir()
    local box = d .. "/box"
    -- Sanitizer reports to files as well: a fuzzed call may close stderr.
    local env = string.format("ASAN_OPTIONS=%s UBSAN_OPTIONS=%s",
      h.shquote((os.getenv("ASAN_OPTIONS") or "") .. ":log_path=" .. box .. "/asan"),
      h.shquote((os.getenv("UBSAN_OPTIONS") or "") .. ":log_path=" .. box .. "/ubsan"))
    local cmd = string.format(env .. " %s %s timeout -s KILL 300 %s run %s %d %d %s </dev/null >%s/out 2>%s/err",
      h.shquote(h.root .. "/scripts/fuzz.d/sandbox.sh"), h.shquote(box), h.shquote(h.bin),
      h.shquote(h.root .. "/scripts/fuzz.d/bindings.lua"), s, calls, "calls.log", d, d)
    local _, _, code = os.execute(cmd)
    local out, err = h.slurp(d .. "/out"), h.slurp(d .. "/err")
    local log = h.slurp(box .. "/calls.log")
    for _, f in ipairs { "asan", "ubsan" } do
      err = err .. h.sh("cat " .. h.shquote(box) .. "/" .. f .. "* 2>/dev/null")
    end
    local context = string.format("seed %d (ORCH_FUZZ_SEED=%d replays it); last calls:\n%s\nstderr:\n%s",
      s, s, log:sub(-1500), err:sub(-3000))
    u.sanitizer_clean(err, "the binding fuzzer, " .. context)
    -- (`timeout` exits 128 + N when the fuzzer died of signal N.) A fuzzed
    -- orch.kill or signal.default may end the run with a signal that kills
    -- by default (TERM, HUP, USR1...): not a finding. A crash (SEGV, ABRT,
    -- BUS, ILL, FPE, TRAP, SYS) or a hang (KILL from the timeout) is.
    local benign = { [129] = 1, [130] = 1, [138] = 1, [140] = 1, [141] = 1, [142] = 1, [143] = 1,
                     [154] = 1, [155] = 1, [157] = 1, [158] = 1 }
    assert(code == 0 or benign[code], string.format("the fuzzer ended with status %s; %s", tostring(code), context))
    if code == 0 then
      -- From stdout, or from the log when a fuzzed call closed stdout.
      local summary = out:match("fuzz_calls %d+") and out or log
      assert.are.equal(tostring(calls), summary:match("fuzz_calls (%d+)"), context)
      assert.truthy(tonumber(summary:match("fuzz_functions (%d+)")) > 150)
    else
      assert.truthy(log:find("\n1 ", 1, true) or log:find("^1 "), "no call was made; " .. context)
    end
  end)

  it("regression: orch.fdopen never adopts the loop's own fds (libuv aborted)", function()
    local code, out, err = h.cli({ "-e", [[
      for fd = 3, 64 do local s = orch.fdopen(fd) if s then s:close() end end
      local sig = orch.signal.on("USR1", function() end)
      sig:stop()
      orch.proc.init_mode()
      orch.sleep(0.01)
      print("loop ok")
    ]] })
    assert.are.equal(0, code, err)
    assert.are.equal("loop ok\n", out)
  end)

  it("the control socket under random bytes, bad UTF-8, deep nesting, huge lines and many connections", function()
    local s = seed()
    local n = tonumber(os.getenv("ORCH_FUZZ_CONNECTIONS")) or 300
    local o = u.start([[
      local sup = require "orch.supervisor"
      sup.configure { log = false }
      for i = 1, 3 do sup.service { name = "svc" .. i, cmd = { "sleep", "1000" } } end
      sup.run()
      assert(require("orch.ctl").serve { socket = SOCK })
    ]])
    finally(function() u.stop(o) end)
    local code, out, err = h.cli({ "run", h.root .. "/scripts/fuzz.d/ctl.lua", o.sock, tostring(s), tostring(n) })
    local context = string.format("seed %d (ORCH_FUZZ_SEED=%d replays it)\n%s", s, s, err:sub(-3000))
    assert.are.equal(0, code, context)
    u.sanitizer_clean(err, "the control fuzzer")
    assert.are.equal(tostring(n), out:match("ctl_fuzz_connections (%d+)"), context)
    assert.are.equal("0", out:match("ctl_fuzz_invalid_json (%d+)"), context)
    assert.truthy(h.alive(o.pid))
    assert.are.equal(0, (u.ctl_cli(o, "ping")))
    u.sanitizer_clean(h.slurp(o.dir .. "/err"), "the fuzzed orchestrator")
  end)
end)
