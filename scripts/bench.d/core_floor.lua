-- core_floor.lua (run by a stock lua5.4, a process of its own): the floor
-- under 100,000 sleeping tasks on this Lua, whatever the scheduler. Each
-- is a coroutine made with a closure of its own (as core.lua's tasks are),
-- resumed up to a yield, then resumed to its end: no timer, no task object,
-- no scheduler. Lua's CPU for it (os.clock), and for its parts: the making
-- and first resumes (what comes before the last sleep starts, in core.lua),
-- and the second resumes. The memory is fresh, as in core.lua's first run.
math.randomseed(1)
local n, done = 100000, 0
local create, resume, yield = coroutine.create, coroutine.resume, coroutine.yield
collectgarbage("collect")
local cos = {}
local c0 = os.clock()
for i = 1, n do
  local co = create(function()
    yield(math.random(0, 99) / 1000)
    done = done + 1
  end)
  resume(co)
  cos[i] = co
end
local c1 = os.clock()
for i = 1, n do
  resume(cos[i])
  cos[i] = nil
end
local c2 = os.clock()
assert(done == n)
print(("core_coro100k_cpu_lua %.1f ms"):format((c2 - c0) * 1000))
print(("core_coro100k_first_cpu_lua %.1f ms"):format((c1 - c0) * 1000))
print(("core_coro100k_end_cpu_lua %.1f ms"):format((c2 - c1) * 1000))
