-- spawn_luaposix.lua: the same work with luaposix (fork, exec, wait), the
-- way a luaposix user would write it. Debian 12's lua-posix has no Lua 5.4
-- module, so this runs under lua5.3 (packages lua5.3 and lua-posix).
-- Usage: lua5.3 scripts/bench.d/spawn_luaposix.lua [N [ROUNDS]]
local unistd = require "posix.unistd"
local wait = require "posix.sys.wait"
local ptime = require "posix.time"
local N = tonumber(arg[1]) or 2000
local ROUNDS = tonumber(arg[2]) or 3

local function now()
  local t = ptime.clock_gettime(ptime.CLOCK_MONOTONIC)
  return t.tv_sec + t.tv_nsec / 1e9
end

local function spawn_one()
  local pid = unistd.fork()
  if pid == 0 then
    unistd.exec("/bin/true", {})
    unistd._exit(127)
  end
  return pid
end

local function run(n, k)
  local t0 = now()
  local started, done = 0, 0
  while started < k and started < n do spawn_one(); started = started + 1 end
  while done < n do
    wait.wait(-1)
    done = done + 1
    if started < n then spawn_one(); started = started + 1 end
  end
  return n / (now() - t0)
end

local best_s, best_p = 0, 0
for _ = 1, ROUNDS do
  best_s = math.max(best_s, run(N, 1))
  best_p = math.max(best_p, run(N, 16))
end
print(("spawn_serial_luaposix %.0f spawns/s"):format(best_s))
print(("spawn_16_luaposix %.0f spawns/s"):format(best_p))
