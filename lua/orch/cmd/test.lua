--- `orch test [OPTIONS] FILE|DIR...`: busted specs on the virtual clock,
-- with simulated processes (orch.sim). See doc/testing.md.
local M = {}

M.summary = "run busted specs in simulation (virtual time, simulated processes)"

M.usage = [=[
usage: orch test [OPTIONS] FILE|DIR...

Runs the busted specs in FILE (or every *_spec.lua under DIR) inside orch,
on the virtual clock (orch.clock "virtual"): sleeps, timers and timeouts
take no real time, and the clock jumps to the next deadline whenever
nothing else can happen. Each test gets a fresh simulated world
(require "orch.sim": sim.service, sim.advance, sim.supervisor, ...) whose
processes are Lua behaviours; its seed is the run's seed plus the test's
number, and a failing test prints its timeline (every event with its
virtual time) and its seed.

Options:
  --seed N         the seed of the run (default: drawn from the clock;
                   printed on the first line either way)
  --faults SPEC    faults injected in every world, e.g.
                   "kill:0.01,spawn_fail:0.05,slow_ready:0.1"
                   (kill, term: rate per virtual second per process;
                   spawn_fail, slow_ready, late_beat: probability)
  --trace          print every world's timeline, not only failing ones
  -o, --output X   busted's output handler (default: utfTerminal on a
                   terminal, plainTerminal otherwise)
  --filter PATTERN run only the tests whose name matches
  --help           this text

Exit status: 0 when every test passed, 1 when one failed, 2 on a usage
error (an unknown option, no FILE|DIR, a bad --faults).
]=]

local function fail(msg)
  io.stderr:write("orch test: ", msg, " (see 'orch test --help')\n")
  return 2
end

function M.args(c)
  c:option("--seed"):argname("N")
  c:option("--faults"):argname("SPEC")
  c:flag("--trace")
  c:option("-o --output"):argname("X")
  c:option("--filter"):argname("PATTERN"):count("*")
  c:argument("FILE|DIR"):target("roots"):args("*")
end

function M.main(o)
  local orch = require "orch"
  local sim = require "orch.sim"
  local seed, faults, trace, output = nil, o.faults, o.trace, o.output
  local pass, roots = {}, o.roots
  if o.seed then
    seed = math.tointeger(tonumber(o.seed))
    if not seed then return fail("--seed: integer expected") end
  end
  if faults then
    local fok, ferr = pcall(sim.parse_faults, faults)
    if not fok then return fail("--faults: " .. tostring(ferr):gsub("^faults: ", "")) end
  end
  for _, f in ipairs(o.filter or {}) do pass[#pass + 1] = "--filter=" .. f end
  if #roots == 0 then return fail("no FILE or DIR given") end
  for _, r in ipairs(roots) do
    local f = io.open(r, "r")
    if not f then return fail(r .. ": no such file or directory") end
    f:close()
  end
  if not seed then seed = math.floor(orch.time() * 1000) % 1000000007 end
  io.stdout:write("orch test: seed ", seed, faults and (" faults " .. faults) or "", "\n")
  io.stdout:flush()
  sim.defaults = { seed = seed, faults = faults, trace = trace }
  local budget = orch.set_budget(false)
  local clock_ok, cerr = orch.clock("virtual")
  if not clock_ok then error(cerr, 0) end

  local bargs = { [0] = "orch test", "--ignore-lua", "--helper=orch.sim.busted", "--pattern=_spec" }
  if output then bargs[#bargs + 1] = "--output=" .. output end
  for _, p in ipairs(pass) do bargs[#bargs + 1] = p end
  for _, r in ipairs(roots) do bargs[#bargs + 1] = r end
  local old_arg, old_exit = rawget(_G, "arg"), os.exit
  -- busted ends a failed run with os.exit: that becomes this command's
  -- exit status (orch exits as it always does, closing its own state).
  local code
  local EXIT = {}
  _G.arg = bargs
  os.exit = function(c)
    code = (c == true or c == nil) and 0 or (c == false and 1 or c)
    error(EXIT, 0)
  end
  local rok, rerr = pcall(function() require("busted.runner")({ standalone = false }) end)
  os.exit = old_exit
  _G.arg = old_arg
  orch.set_budget(budget)
  if not rok and rerr ~= EXIT then error(rerr, 0) end
  if code and code ~= 0 then return 1 end
  return 0
end

return M
