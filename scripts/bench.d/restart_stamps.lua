-- scripts/bench.d/restart_stamps.lua: phases.lua (the configuration a user
-- gets) with orch's side of each restart stamped, for restart_trace.sh:
-- the exit's callback (Instance:proc_exited), orch.spawn's call and
-- return, the callback's end, as CLOCK_MONOTONIC (orch.now(), the clock
-- svc_stamp and the probe use) and orch's CPU (os.clock). SIGWINCH writes
-- one line a restart to $RESTART_STAMPS and forgets them:
--   R name exit_ns spawn_call_ns spawn_return_ns end_ns cpu_before_us cpu_spawn_us cpu_after_us
--   orch run restart_stamps.lua N PROG
local orch = require "orch"
local Instance = require "orch.supervisor.instance"
local now, clock = orch.now, os.clock
local out = assert(os.getenv("RESTART_STAMPS"), "RESTART_STAMPS: the file to write")
local rec, cur = {}, nil

local proc_exited = Instance.proc_exited
function Instance.proc_exited(self, run, code, sig)
  cur = { name = self.name, t_exit = now(), c_exit = clock() }
  rec[#rec + 1] = cur
  local r = table.pack(proc_exited(self, run, code, sig))
  cur.t_done, cur.c_done = now(), clock()
  cur = nil
  return table.unpack(r, 1, r.n)
end

local spawn = orch.spawn
function orch.spawn(opts)
  local c = cur
  if c then c.t_sp0, c.c_sp0 = now(), clock() end
  local p, err, ename = spawn(opts)
  if c then c.t_sp1, c.c_sp1 = now(), clock() end
  return p, err, ename
end

orch.signal.on("WINCH", function()
  local f = assert(io.open(out, "w"))
  local function ns(t) return math.floor((t or 0) * 1e9) end
  for _, r in ipairs(rec) do
    if r.t_sp0 then
      f:write(string.format("R %s %d %d %d %d %.1f %.1f %.1f\n", r.name, ns(r.t_exit), ns(r.t_sp0), ns(r.t_sp1),
        ns(r.t_done), (r.c_sp0 - r.c_exit) * 1e6, (r.c_sp1 - r.c_sp0) * 1e6, (r.c_done - r.c_sp1) * 1e6))
    else
      f:write(string.format("N %s\n", r.name))    -- an exit that spawned nothing
    end
  end
  f:close()
  rec = {}
end)

arg = { [0] = "phases.lua", ... }
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
dofile(here .. "/phases.lua")
