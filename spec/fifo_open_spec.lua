-- A FIFO (or a slow device) at a user-given path never blocks the loop:
-- spawn's stdin/stdout/stderr paths, history files and daemonize's logs are
-- opened non-blocking. Each case runs in its own orch process under
-- `timeout`, so a blocking open() fails the spec instead of hanging it.
local h = require "spec.helper"
local orch = h.orch

-- Runs src (with FIFO and DIR defined) in `orch run` with a ticking timer
-- task; returns the exit code and stdout.
local function run_with_ticker(dir, src)
  local script = h.script(string.format("local orch = require 'orch'\nlocal DIR, FIFO = %q, %q\n", dir, dir .. "/fifo")
    .. "local ticks = 0\nlocal ticker = orch.timer.every(0.01, function() ticks = ticks + 1 end)\n"
    .. src .. "\nticker:stop()\n")
  local out = dir .. "/out.txt"
  local ok, how, code = os.execute(string.format("timeout -s KILL 60 %s run %s >%s 2>&1 </dev/null",
    h.shquote(h.bin), h.shquote(script), h.shquote(out)))
  return code, h.slurp(out)
end

local function fifo_dir()
  local dir = h.tmpdir()
  assert(orch.fifo.make(dir .. "/fifo"))
  return dir
end

describe("opening a FIFO at a user-given path", function()
  it("spawn{ stdout = fifo } without a reader fails at once with ENXIO", function()
    local dir = fifo_dir()
    local code, out = run_with_ticker(dir, [[
      for _, key in ipairs{ "stdout", "stderr" } do
        print(orch.spawn{ "true", [key] = FIFO })
      end
      -- The loop went on: the ticker runs.
      while ticks < 3 do orch.sleep(0.01) end
      print("ticked")
    ]])
    assert.are.equal(0, code, out)
    assert.are.equal(
      "nil\tspawn: stdout: cannot open " .. dir .. "/fifo: no process has the FIFO open for reading\tENXIO\n"
      .. "nil\tspawn: stderr: cannot open " .. dir .. "/fifo: no process has the FIFO open for reading\tENXIO\n"
      .. "ticked\n", out)
  end)

  it("spawn{ stdout = fifo } with a reader writes to it (the child's fd blocks as usual)", function()
    local dir = fifo_dir()
    h.run(function()
      -- The reader holds the FIFO open read-write (so its open does not
      -- wait) and reads one line.
      local reader = assert(orch.spawn{ "sh", "-c", 'exec 3<>"$1"; : >"$2"; head -n1 <&3 >"$3"', "sh",
        dir .. "/fifo", dir .. "/ready", dir .. "/got" })
      h.eventually(function() return io.open(dir .. "/ready") end, "reader ready")
      local p = assert(orch.spawn{ "echo", "through the fifo", stdout = dir .. "/fifo" })
      assert.are.same({ 0 }, { p:wait() })
      assert.are.same({ 0 }, { reader:wait() })
      assert.are.equal("through the fifo\n", h.slurp(dir .. "/got"))
    end)
  end)

  it("spawn{ stdin = fifo } without a writer completes: the child reads end of file", function()
    local dir = fifo_dir()
    local code, out = run_with_ticker(dir, [[
      local p = assert(orch.spawn{ "cat", stdin = FIFO, stdout = "pipe" })
      print(#p.stdout:read_all(), p:wait())
    ]])
    assert.are.equal(0, code, out)
    assert.are.equal("0\t0\tnil\n", out)
  end)

  it("history files: a FIFO is refused, never waited on", function()
    local dir = fifo_dir()
    local code, out = run_with_ticker(dir, [[
      print(orch.term.read_history(FIFO))
      print(orch.term.write_history(FIFO))
      print(orch.term.EDITLINE)
    ]])
    assert.are.equal(0, code, out)
    if out:match("true\n$") then
      assert.are.equal("nil\tread_history: " .. dir .. "/fifo: not a regular file\tEINVAL\n"
        .. "nil\twrite_history: cannot open " .. dir .. "/fifo: no process has the FIFO open for reading\tENXIO\n"
        .. "true\n", out)
    else
      assert.matches("ENOSYS", out, 1, true)
    end
  end)

  it("daemonize{ stdout = fifo } without a reader fails in the caller with ENXIO", function()
    local dir = fifo_dir()
    local code, out = run_with_ticker(dir, [[
      print(orch.daemonize{ stdout = FIFO, pidfile = DIR .. "/pid" })
    ]])
    assert.are.equal(0, code, out)
    assert.are.equal("nil\tdaemonize: stdout: cannot open " .. dir
      .. "/fifo: no process has the FIFO open for reading\tENXIO\n", out)
  end)
end)
