--- orch.callback: the runner task behind every callback (src/callback.c).
-- A libuv event that calls a Lua function (a timer firing, a signal
-- arriving, a process exiting, a chunk reaching a stream's on_read) hands
-- the function to a runner: a task that calls it, then waits for the next
-- one (callback.c keeps a few waiting), so a thousand events in a row are
-- served by the same coroutine.
--
-- This module returns a maker, called once per runtime by callback.c with
-- its two C helpers: guard(end, owner), the to-be-closed object that tells
-- the event's owner the function is done (returned, raised, or its runner
-- cancelled), and next_job(), which waits for the next callback and returns
-- end, owner, fn, args... (or nothing when enough runners wait already).
-- A job is end, owner, fn, args... (end and owner nil when the callback has
-- no end).
return function(guard, next_job)
  local function serve(e, owner, fn, ...)
    if not fn then return false end
    local g <close> = e and guard(e, owner)
    fn(...)
    return true
  end
  return function(...)
    local more = serve(...)
    while more do more = serve(next_job()) end
  end
end
