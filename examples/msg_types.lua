-- msg_types.lua: two processes talking through one SysV message queue,
-- telling the conversations apart by message type:
--   type 1   requests to the server ("square <n>" or "quit")
--   type 2   the server's answers
--   type 3+  urgent notes, received by lowest type first
--   orch run examples/msg_types.lua
local REQUEST, ANSWER, NOTE = 1, 2, 3

local q = assert(orch.msg.private())
local cleanup <close> = setmetatable({}, { __close = function() q:remove() end })

-- The server: a forked child that answers requests until "quit". Its recv
-- waits on a waiter thread; the child's loop stays free.
local server = assert(orch.fork(function()
  while true do
    local _, req = assert(q:recv{ type = REQUEST })
    if req == "quit" then break end
    local n = tonumber(req:match("^square (%-?%d+)$"))
    assert(q:send(ANSWER, n and tostring(n * n) or "bad request"))
  end
  assert(q:send(NOTE + 1, "server: bye"))
  assert(q:send(NOTE, "server: done"))
end))

-- The client: this process. While it waits for an answer, a timer keeps
-- ticking: nothing blocks the loop.
local ticks = 0
local timer = orch.timer.every(0.001, function() ticks = ticks + 1 end)
for n = 1, 5 do
  assert(q:send(REQUEST, "square " .. n))
  local t, answer = assert(q:recv{ type = ANSWER, timeout = 30 })
  print(("%d squared is %s (type %d)"):format(n, answer, t))
end
assert(q:send(REQUEST, "quit"))
assert(server:wait() == 0)
timer:stop()

-- Notes arrive lowest type first, whatever the order they were sent in.
print(select(2, assert(q:recv{ type = -(NOTE + 10), nowait = true })))
print(select(2, assert(q:recv{ type = -(NOTE + 10), nowait = true })))
print("queue empty:", q:stat().qnum == 0)
