-- examples/stop_continue.lua: job control seen from a supervisor. A service
-- is stopped with SIGSTOP (as a shell's Ctrl-Z or `kill -STOP` would) and
-- continued with SIGCONT; `orch ctl status` shows it `stopped` in between,
-- with its pid, because the one reaper of orch hears WUNTRACED and
-- WCONTINUED statuses (p:on_stop, p:on_continue in doc/proc.md). The
-- service also runs with a low CPU and I/O priority (nice, ioprio).
--
-- Run it:   scripts/orch run examples/stop_continue.lua
-- It prints three `orch ctl status` tables (running, stopped, running) and
-- exits.
local orch = require "orch"
local sup = require "orch.supervisor"
local ctl = require "orch.ctl"

io.stdout:setvbuf("line")
local exe = orch.proc.info(orch.getpid()).cmdline[1]
local _, out = orch.run { "mktemp", "-d", "/tmp/orch-stop-continue.XXXXXX" }
local dir = out:gsub("%s+$", "")
local sock = dir .. "/ctl.sock"

sup.configure { log = false, runtime_dir = dir }
sup.service { name = "cruncher", cmd = { "sleep", "600" }, nice = 15, ioprio = "idle" }
sup.run()
assert(ctl.serve { socket = sock })
assert(sup.wait("cruncher", "running", 10))
local pid = sup.status("cruncher")[1].pid

-- What an operator sees, from another process (the orch ctl client). Its
-- exit status answers like an LSB init script's: 0 when every service named
-- is running, 3 when one is not (a stopped one is not).
local function show(title)
  local code, text, err = orch.run { exe, "ctl", "--socket", sock, "status", "cruncher" }
  assert(code == 0 or code == 3, err)
  print("-- " .. title .. " (orch ctl status exits " .. code .. ")")
  io.write(text)
end

local function until_state(want)
  while sup.status("cruncher")[1].state ~= want do orch.sleep(0.01) end
end

show("running, at nice " .. orch.proc.info(pid).nice)
orch.kill(pid, "STOP")                   -- what Ctrl-Z in a terminal sends is TSTP
until_state("stopped")
show("after kill -STOP " .. pid .. " (the kernel says state " .. orch.proc.info(pid).state .. ")")
orch.kill(pid, "CONT")
until_state("running")
show("after kill -CONT " .. pid)

orch.run { "rm", "-rf", dir }            -- the socket and its lock: nobody else uses them
sup.shutdown(0)                          -- stops the service and ends orch with 0
