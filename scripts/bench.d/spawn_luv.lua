-- spawn_luv.lua (run by a stock lua5.4 with Debian's lua-luv): the same
-- work as spawn.lua the way a luv user would write it: uv.spawn with an exit
-- callback that starts the next child.
-- Usage: lua5.4 scripts/bench.d/spawn_luv.lua [N [ROUNDS]]
local uv = require "luv"
local N = tonumber(arg[1]) or 2000
local ROUNDS = tonumber(arg[2]) or 3

local function now() return uv.hrtime() / 1e9 end

local function run(n, k)
  local started = 0
  local function start()
    if started >= n then return end
    started = started + 1
    local h
    h = uv.spawn("/bin/true", { args = {} }, function()
      h:close()
      start()
    end)
  end
  local t0 = now()
  for _ = 1, k do start() end
  uv.run()
  return n / (now() - t0)
end

local best_s, best_p = 0, 0
for _ = 1, ROUNDS do
  best_s = math.max(best_s, run(N, 1))
  best_p = math.max(best_p, run(N, 16))
end
print(("spawn_serial_luv %.0f spawns/s"):format(best_s))
print(("spawn_16_luv %.0f spawns/s"):format(best_p))
