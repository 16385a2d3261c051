-- examples/watchdog/worker.lua: the Lua worker of examples/watchdog.lua.
-- usage: orch run worker.lua [NAME [TIMEOUT [INTERVAL]]]
-- Registers in the table of $ORCH_HEARTBEAT_KEY and beats once per unit of
-- work; SIGTERM unregisters and exits 0.
local hb = require "orch.heartbeat"

local name = arg[1] or "lua-worker"
local timeout = tonumber(arg[2]) or 3
local interval = tonumber(arg[3]) or 1

local function say(fmt, ...)
  local now = orch.time()
  io.stdout:write(os.date("%H:%M:%S", math.floor(now)), (".%03d %-10s "):format(math.floor(now % 1 * 1000), name),
    fmt:format(...), "\n")
end
io.stdout:setvbuf("line")

local t = assert(hb.open())                       -- $ORCH_HEARTBEAT_KEY
local slot = assert(t:register(name, timeout))
say("registered (pid %d, slot %d, timeout %.1f s)", slot.pid, slot.index, timeout)

orch.signal.on("TERM", function()
  slot:unregister()
  say("SIGTERM: unregistered, exiting")
  orch.exit(0)
end)

for n = 1, math.huge do
  orch.sleep(interval)                            -- one unit of work
  assert(slot:beat())
  say("beat %d", n)
end
