-- `orch test`: busted specs run inside orch on the virtual clock, tested
-- from the outside on temporary spec files.
local h = require "spec.helper"

local PASSING = [[
local sim = require "orch.sim"
describe("a crash-looping web", function()
  it("goes fatal at its start limit", function()
    sim.service { name = "web", program = { sim.after(2, sim.exit(1)) }, restart = "always",
                  backoff = { initial = 1, jitter = 0 }, start_limit = { burst = 5, interval = 60 } }
    local sup = sim.supervisor()
    sup.start("web")
    sim.advance(3600)
    assert.equals("fatal", sup.status("web")[1].state)
  end)
end)
]]

local FAILING = [[
local sim = require "orch.sim"
describe("web", function()
  it("is not fatal yet", function()
    sim.service { name = "web", program = { sim.write_log("listening"), sim.after(2, sim.exit(1)) },
                  restart = "always", backoff = { initial = 1, jitter = 0 } }
    sim.supervisor().start("web")
    sim.advance(10)
    assert.equals("fatal", sim.supervisor().status("web")[1].state)
  end)
end)
]]

local RANDOM = [[
local sim = require "orch.sim"
describe("under faults", function()
  it("runs", function()
    sim.service { name = "web", program = { sim.write_log("up") }, restart = "always" }
    sim.supervisor().start("web")
    sim.advance(300)
  end)
end)
]]

-- Two services depending on one: the world's close stops them in one
-- layer, in parallel.
local LAYERED = [[
local sim = require "orch.sim"
describe("two dependents", function()
  it("stop together", function()
    sim.service { name = "db", program = { sim.ready_after(1) }, ready = { notify = true }, restart = "always" }
    sim.service { name = "web", program = { sim.write_log("up") }, depends_on = { "db" }, restart = "always" }
    sim.service { name = "api", program = { sim.ignore("TERM") }, depends_on = { "db" }, restart = "always",
                  stop = { timeout = 2 } }
    sim.supervisor().start("all")
    sim.advance(30)
  end)
end)
]]

local function spec_file(src)
  local d = h.tmpdir()
  h.write(d .. "/x_spec.lua", src)
  return d .. "/x_spec.lua", d
end

describe("orch test", function()
  it("runs a passing spec on virtual time, prints its seed and exits 0", function()
    local path = spec_file(PASSING)
    local code, out = h.cli { "test", "--seed", "12", "-o", "plainTerminal", path }
    assert.are.equal(0, code, out)
    assert.matches("^orch test: seed 12\n", out)
    assert.matches("1 success / 0 failures / 0 errors / 0 pending", out, 1, true)
    assert.matches("orch test: 1 worlds, 3600 s of virtual time in ", out, 1, true)
  end)

  it("runs every spec of a directory", function()
    local _, dir = spec_file(PASSING)
    h.write(dir .. "/y_spec.lua", PASSING)
    local code, out = h.cli { "test", "--seed", "1", "-o", "plainTerminal", dir }
    assert.are.equal(0, code, out)
    assert.matches("2 successes / 0 failures", out, 1, true)
  end)

  it("exits 1 on a failure and prints the timeline with virtual times and the seed", function()
    local path = spec_file(FAILING)
    local code, out = h.cli { "test", "--seed", "3", "-o", "plainTerminal", path }
    assert.are.equal(1, code, out)
    assert.matches("-- timeline of 'is not fatal yet' (seed 4) [failure]", out, 1, true)
    assert.matches("\n       0.000 spawn    web[10000001] sim:web\n", out, 1, true)
    assert.matches("\n       0.000 output   web | listening\n", out, 1, true)
    assert.matches("\n       2.000 exit     web[10000001] code 1\n", out, 1, true)
    assert.matches("0 successes / 1 failure", out, 1, true)
  end)

  it("replays the same trace for the same seed and faults", function()
    local path = spec_file(RANDOM)
    local runs = {}
    for i = 1, 3 do
      local code, out = h.cli { "test", "--seed", i == 3 and "78" or "77", "--faults", "kill:0.02,spawn_fail:0.1",
                                "--trace", "-o", "plainTerminal", path }
      assert.are.equal(0, code, out)
      runs[i] = out:gsub("[%d.]+ seconds", ""):gsub("in [%d.]+ s of CPU", "")
    end
    assert.matches("fault    web", runs[1], 1, true)
    assert.are.equal(runs[1], runs[2])
    assert.are_not.equal(runs[1], runs[3])
  end)

  it("replays the same trace in another process (no order taken from a table's keys)", function()
    -- Lua seeds its string hashes at random in each process: an order read
    -- from pairs() differs between two processes half of the time, so
    -- eight processes all agreeing catches one with odds of 127 to 1.
    local path = spec_file(LAYERED)
    local first
    for _ = 1, 8 do
      local code, out = h.cli { "test", "--seed", "5", "--trace", "-o", "plainTerminal", path }
      assert.are.equal(0, code, out)
      out = out:gsub("[%d.]+ seconds", ""):gsub("in [%d.]+ s of CPU", "")
      assert.matches("stopping", out, 1, true)
      first = first or out
      assert.are.equal(first, out)
    end
  end)

  it("rejects bad usage with exit 2", function()
    local path = spec_file(PASSING)
    for _, case in ipairs {
      { { "test" }, "no FILE or DIR given" },
      { { "test", "--seed", "x", path }, "--seed: integer expected" },
      { { "test", "--faults", "boom:1", path }, "--faults: unknown fault 'boom'" },
      { { "test", "--bogus", path }, "unknown option '--bogus'" },
      { { "test", "/nonexistent/x_spec.lua" }, "/nonexistent/x_spec.lua: no such file or directory" },
    } do
      local code, _, err = h.cli(case[1])
      assert.are.equal(2, code, err)
      assert.matches("orch test: " .. case[2], err, 1, true)
    end
  end)

  it("has --help", function()
    local code, out = h.cli { "test", "--help" }
    assert.are.equal(0, code)
    assert.matches("usage: orch test [OPTIONS] FILE|DIR...", out, 1, true)
  end)
end)
