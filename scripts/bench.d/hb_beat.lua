--- hb_beat.lua: the cost of one slot:beat() from Lua (the method call, the
-- ownership check and the atomic store), averaged over 10,000,000 beats (or
-- arg[1]) on a private table. Prints `hb_beat_lua <ns> ns` (s:beat()) and
-- `hb_beat_lua_cached <ns> ns` (the method looked up once).
-- Run: scripts/orch run scripts/bench.d/hb_beat.lua [BEATS]
local orch = rawget(_G, "orch") or require "orch"
local n = math.tointeger(tonumber(arg and arg[1] or "")) or 10000000
local t = assert(orch.heartbeat.open { key = 0, create = true, slots = 4 })
assert(t:remove())
local s = assert(t:register("bench", 0))
local t0 = orch.now()
for _ = 1, n do s:beat() end
local t1 = orch.now()
-- The same with the method looked up once (a tight loop's usual form).
local beat = s.beat
for _ = 1, n do beat(s) end
local t2 = orch.now()
assert(s:beat())
print(string.format("hb_beat_lua %.1f ns", (t1 - t0) * 1e9 / n))
print(string.format("hb_beat_lua_cached %.1f ns", (t2 - t1) * 1e9 / n))
s:unregister()
t:close()
