-- scripts/bench.d/ready.lua: the cost of one look of the supervisor's
-- `ready = { tcp = port }` probe (issue 11), which runs on the loop thread
-- every `interval` (up to 0.5 s) while a service starts: the listening
-- sockets of the port (sock_diag netlink, as ss; against reading
-- /proc/net/tcp and tcp6, which walks every socket bucket of the kernel),
-- the service's processes (main pid and descendants) and their fds.
--   build/orch run scripts/bench.d/ready.lua [rounds]
local ready = require "orch.supervisor.ready"
local rounds = tonumber(arg and arg[1]) or 200

-- Best of 3 rounds of n calls; a yield between rounds (a round of the slow
-- /proc reads would otherwise pass the Lua time budget).
local function per_call_ms(f, n)
  n = n or rounds
  local best = math.huge
  for _ = 1, 3 do
    local t0 = orch.now()
    for _ = 1, n do f() end
    best = math.min(best, (orch.now() - t0) * 1000 / n)
    orch.sleep(0)
  end
  return best
end

local l = assert(orch.listen { host = "127.0.0.1", port = 0 })
-- A service: a shell with two children, none of which listens.
local p = assert(orch.spawn { "sh", "-c", "sleep 60 & sleep 60 & wait", pgroup = true })
while #orch.proc.children(p.pid) < 2 do orch.sleep(0.01) end
local foreign = { pid = p.pid }
local own = { pid = orch.getpid() }

local function read_procnet()
  for _, f in ipairs { "/proc/self/net/tcp", "/proc/self/net/tcp6" } do
    local h = io.open(f)
    if h then h:read("a") h:close() end
  end
end

print(string.format("tcp_listeners_netlink %.4f ms", per_call_ms(function() orch.proc.tcp_listeners(l.port) end)))
print(string.format("tcp_listeners_procnet %.4f ms", per_call_ms(read_procnet, math.max(1, rounds // 20))))
print(string.format("tcp_check_own %.4f ms", per_call_ms(function() assert(ready.tcp_check(own, l.port, "127.0.0.1")) end)))
print(string.format("tcp_check_foreign %.4f ms", per_call_ms(function() ready.tcp_check(foreign, l.port, "127.0.0.1") end)))
io.stderr:write(string.format("# %d processes, %d listening TCP sockets\n", #orch.proc.list(), #orch.proc.tcp_listeners()))
p:kill("KILL", { group = true })
p:wait()
l:close()
