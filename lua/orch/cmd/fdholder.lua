--- `orch fdholder`: holds the read ends of a supervisor's log pipes so that
-- its services outlive a `kill -9` of orch (they would otherwise die of
-- SIGPIPE at their next write), and hands them to the next `orch run` of
-- the same control socket (like s6-fdholder or systemd's fd store). The
-- supervisor starts it (lua/orch/supervisor/persist.lua); nobody else has a
-- reason to. See doc/supervisor.md, "If orch is killed".
--
-- Protocol: JSON datagrams on a unix datagram socket (mode 0600), every one
-- checked against the sender's credentials (SO_PASSCRED): only a process of
-- the holder's own uid is heard, and only its current orch (or, once that
-- orch is dead, a new one saying hello) may change what it holds.
--   {op="hello", pid, start}    -> {op="held", n, entries=[{name,pid,start}]}
--                                  (+ their fds, in parts of at most 200)
--   {op="put", entries=[...]}   + one fd per entry: hold them (by name)
--   {op="drop", names=[...]}    close them
--   {op="bye"}                  exit
-- The holder exits on "bye", or once its orch is gone and no service it
-- holds a pipe for is alive any more.
local M = {}

M.usage = [[
usage: orch fdholder SOCKET ORCH_PID ORCH_START

Holds the log pipes of the supervisor ORCH_PID (started at ORCH_START, in
clock ticks) on the datagram socket SOCKET, and hands them over to the next
orch of the same control socket after ORCH_PID died. Started by the
supervisor itself; see doc/supervisor.md, "If orch is killed".
Exit codes: 0 nothing left to hold, 1 failure, 2 usage error.
]]

local PART = 200   -- descriptors per reply datagram (the kernel allows 253)

function M.args(c)
  c:argument("SOCKET"):target("socket")
  c:argument("ORCH_PID"):target("orch_pid")
  c:argument("ORCH_START"):target("orch_start")
end

function M.main(o)
  local orch = require "orch"
  local ctl = require "orch.ctl.client"
  local path = o.socket
  local orch_pid, orch_start = math.tointeger(tonumber(o.orch_pid)), math.tointeger(tonumber(o.orch_start))
  if path == "" or not orch_pid or not orch_start then
    io.stderr:write(M.usage)
    return 2
  end
  local function log(fmt, ...)
    io.stderr:write("orch fdholder: ", string.format(fmt, ...), "\n")
  end
  local uid = orch.geteuid()
  local sock, err = orch.dgram{ unix = path, mode = tonumber("600", 8), passcred = true }
  if not sock then
    log("%s", err)
    return 1
  end

  -- Descriptor numbers, not orch.Stream objects: a stream would cost about
  -- 0.6 KiB a pipe, and the holder only passes them on. An entry is its
  -- three integers packed in one string (64 bytes, against 160 for a table
  -- of three fields).
  local ENTRY = "<jjj"
  local held = {}          -- name -> string.pack(ENTRY, pid, start, fd)
  local nheld = 0
  local current            -- { pid, start } of the orch we serve, or nil
  local last               -- the orch served last, alive or not: what it
                           -- sent before it died still counts
  local watchers = {}      -- tasks waiting for a held service to end
  local done, finished = orch.cond(), false
  local function finish()
    finished = true
    done:signal()
  end

  local function drop(name)
    local e = held[name]
    if not e then return end
    held[name] = nil
    nheld = nheld - 1
    orch.fd.close((select(3, string.unpack(ENTRY, e))))
  end

  local function check_done()
    if not current and nheld == 0 then finish() end
  end

  -- Without an orch, a pipe is worth holding only while its service lives.
  local function watch_services()
    for name, e in pairs(held) do
      if not watchers[name] then
        watchers[name] = orch.task(function()
          local pid, start = string.unpack(ENTRY, e)
          orch.proc.wait_exit(pid, start)
          watchers[name] = nil
          if not current and held[name] == e then
            drop(name)
            check_done()
          end
        end)
      end
    end
  end

  local function serve_orch(pid, start)
    for name, t in pairs(watchers) do
      watchers[name] = nil
      t:cancel()
    end
    local me = { pid = pid, start = start }
    current, last = me, me
    orch.task(function()
      orch.proc.wait_exit(pid, start)
      if current == me then
        current = nil
        watch_services()
        check_done()
      end
    end)
  end

  local function reply_held(to)
    local names = {}
    for name in pairs(held) do names[#names + 1] = name end
    table.sort(names)
    local i = 1
    repeat
      local entries, fds = {}, {}
      for j = i, math.min(i + PART - 1, #names) do
        local pid, start, fd = string.unpack(ENTRY, held[names[j]])
        entries[#entries + 1] = { name = names[j], pid = pid, start = start }
        fds[#fds + 1] = fd
      end
      local msg = ctl.encode{ op = "held", n = #names, entries = entries }
      local ok, serr = sock:send(msg, to, #fds > 0 and fds or nil)
      if not ok then log("cannot answer %s: %s", to, serr) return end
      i = i + PART
    until i > #names
  end

  local handlers = {}

  function handlers.hello(m, cred, from, fds)
    local pid, start = math.tointeger(m.pid), math.tointeger(m.start)
    local info = pid and orch.proc.info(pid)
    if pid ~= cred.pid or not info or info.start_time ~= start then return end
    if current and (current.pid ~= pid or current.start ~= start) then
      local ci = orch.proc.info(current.pid)
      if ci and ci.start_time == current.start and ci.state ~= "Z" then
        sock:send(ctl.encode{ op = "busy", pid = current.pid }, from)
        return
      end
    end
    if not from then return end
    serve_orch(pid, start)
    reply_held(from)
  end

  function handlers.put(m, cred, from, fds)
    if type(m.entries) ~= "table" then return end
    for i, e in ipairs(m.entries) do
      local fd = fds[i]
      if fd and type(e) == "table" and type(e.name) == "string" and math.type(e.pid) == "integer"
         and math.type(e.start) == "integer" then
        fds[i] = nil
        drop(e.name)
        held[e.name] = string.pack(ENTRY, e.pid, e.start, fd)
        nheld = nheld + 1
      end
    end
  end

  function handlers.drop(m)
    if type(m.names) ~= "table" then return end
    for _, name in ipairs(m.names) do drop(name) end
  end

  function handlers.bye()
    current = nil
    for name in pairs(held) do drop(name) end
    finish()
  end

  orch.task(function()
    while true do
      local data, from, cred, fds = sock:recv{ fds = "raw" }
      if not data then
        log("%s", from)
        finish()
        return
      end
      local m = cred and cred.uid == uid and ctl.decode(data)
      local op = type(m) == "table" and m.op
      local h = type(op) == "string" and handlers[op]
      if h and (op == "hello" or (last and cred.pid == last.pid)) then
        local ok, herr = pcall(h, m, cred, from, fds)
        if not ok then log("%s: %s", op, tostring(herr)) end
        -- Pipes that came after their orch died are watched like the rest.
        if op == "put" and not current then
          watch_services()
          check_done()
        end
      end
      -- Whatever came and was not taken is closed now, not at the next GC.
      for _, fd in pairs(fds) do orch.fd.close(fd) end
    end
  end)

  -- TERM (orch's end, when the bye may not have been read) ends it like a
  -- bye: its socket file goes too.
  local handlers_sig = {
    orch.signal.on("TERM", function() current = nil finish() end),
    orch.signal.on("INT", function() current = nil finish() end),
  }
  local info = orch.proc.info(orch_pid)
  if info and info.start_time == orch_start then serve_orch(orch_pid, orch_start) end
  check_done()
  while not finished do done:wait() end
  for _, hs in ipairs(handlers_sig) do hs:stop() end
  for name in pairs(held) do drop(name) end
  sock:close()
  orch.exit(0)
end

return M
