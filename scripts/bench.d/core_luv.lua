-- core_luv.lua (run by a stock lua5.4 with Debian's lua-luv): the same work
-- as core.lua, written the way a luv user would: coroutines resumed from an
-- idle callback, and one uv timer per sleeper.
local uv = require "luv"
local N = tonumber(arg[1]) or 2000000

local function now() return uv.hrtime() / 1e9 end

-- One coroutine yielding N times, resumed by an idle handle.
local co = coroutine.create(function() for _ = 1, N do coroutine.yield() end end)
local idle = uv.new_idle()
local t0 = now()
idle:start(function()
  coroutine.resume(co)
  if coroutine.status(co) == "dead" then idle:stop() end
end)
uv.run()
print(("core_switch_luv %.0f switches/s"):format(N / (now() - t0)))
idle:close()

math.randomseed(1)
local n, fired = 100000, 0
t0 = now()
local c0 = os.clock()
for _ = 1, n do
  local c = coroutine.create(function()
    local me = coroutine.running()
    local t = uv.new_timer()
    t:start(math.random(0, 99), 0, function() t:close(); coroutine.resume(me) end)
    coroutine.yield()
    fired = fired + 1
  end)
  coroutine.resume(c)
end
uv.run()
print(("core_timers100k_luv %.1f ms"):format((now() - t0) * 1000))
print(("core_timers100k_cpu_luv %.1f ms"):format((os.clock() - c0) * 1000))
