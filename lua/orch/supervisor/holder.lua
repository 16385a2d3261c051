--- orch.supervisor.holder: persist.lua's side of the fd holder (`orch
-- fdholder`, src/fdholder.c: C, no Lua state), the small process of its own
-- session that holds a duplicate of the read end of every log pipe, so
-- that no service dies of SIGPIPE while no orch reads, and hands them to
-- the next orch (doc/supervisor.md, "If orch is killed").
--
-- The protocol: datagrams of JSON on the unix socket SOCKET.holder (the
-- pipes ride along with SCM_RIGHTS), from orch's client socket
-- SOCKET.client (0600, in the same private directory), with credentials: hello (the next orch asks for what the holder holds:
-- "held" answers, or "busy" when another orch has it), put (pipes given, at
-- a spawn or a sync), drop (pipes no longer held), bye (a clean end).
--
-- The state is persist's (P): P.holder ({ pid, start, proc }), P.held (name
-- -> the pid whose pipe the holder holds), P.holder_path, P.holder_failed,
-- P.respawns, P.closed, and P.dgram, the client socket. Nothing here blocks
-- the loop: the datagrams are non-blocking, and only hello waits (task only).
local orch = require "orch"

local holder = {}

local PART = 200          -- descriptors per datagram (the kernel allows 253)
local WAIT = 5            -- seconds to wait for the holder's answer
local RETRY = 0.05        -- seconds between hellos to a holder not bound yet

local function ctl() return require "orch.ctl" end

--- JSON text of a string, made by hand (a put is on the restart path, and
-- persist's record is made the same way): cjson formats every number with
-- sprintf.
function holder.jstr(v)
  return '"' .. (v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end)) .. '"'
end
local jstr = holder.jstr

--- Whether h ({ pid, start }) is a live process with that start time.
function holder.alive(h)
  local info = h and h.pid and orch.proc.info(h.pid)
  return info ~= nil and info.state ~= "Z" and info.start_time == h.start
end

-- Our end of the conversation with the holder, with credentials so that
-- the holder's answers are checked: SOCKET.client, 0600 in the directory
-- persist.recover found private, so that no other user can send to it.
-- (An abstract name, listed in /proc/net/unix, took anyone's datagrams: a
-- flood of them during the hello can keep its queue full, the holder's
-- answer then finds no room (it never waits: MSG_DONTWAIT), and orch kills
-- its holder and restarts every service whose pipe it held.) As long a
-- name as SOCKET.holder: it fits wherever that one does.
local function client(P)
  if not P.dgram then
    local d, err, code = orch.dgram{ unix = P.socket .. ".client", passcred = true }
    if not d then return nil, err, code end
    P.dgram = d
  end
  return P.dgram
end

-- orch's own start time (its identity beside its pid), read once per
-- process: at the fd limit /proc cannot be opened, and it never changes.
local own = {}
function holder.own_start()
  local pid = orch.getpid()
  if own.pid ~= pid then
    local info = orch.proc.info(pid)
    if not info then return nil end
    own.pid, own.start = pid, info.start_time
  end
  return own.start
end
local own_start = holder.own_start

--- Asks the holder at P.holder_path for what it holds (we are its orch from
-- now on). Task only. Returns name -> { pid, start, stream }, or nil, why,
-- and "ENOTHOLDER" when what is bound at the path is no fd holder of
-- orch's. h: the holder the record names ({ pid, start }), or {} for
-- whichever holder is bound at the path: h's pid and start are then those
-- of the process bound there when it is an fd holder orch started for this
-- socket (bound.lua; persist.recover kills it when it does not answer), or
-- else the answer's.
function holder.hello(P, h)
  local d, err, code = client(P)
  if not d then return nil, err, code end
  local start = own_start()
  if not start then return nil, "cannot read orch's own start time", "EMFILE" end
  if not h.pid then
    -- Anything else bound there (another program of orch's uid: the
    -- directory is private) never answers: no wait for it.
    local bound = require "orch.supervisor.bound"
    local info = bound.process(P.holder_path)
    if info and not bound.is_holder(info, P.holder_path) then
      return nil, string.format("%s is bound by pid %d (uid %d: %s), not by an fd holder of orch's",
        P.holder_path, info.pid, info.uid, table.concat(info.cmdline or {}, " ")), "ENOTHOLDER"
    end
    if info then h.pid, h.start = info.pid, info.start_time end
  end
  local deadline = orch.now() + WAIT
  -- A holder that has just started may not have bound its socket yet.
  while true do
    local ok, serr, scode = d:send(ctl().encode{ op = "hello", pid = orch.getpid(), start = start }, P.holder_path)
    if ok then break end
    if (scode ~= "ENOENT" and scode ~= "ECONNREFUSED" and scode ~= "EAGAIN") or orch.now() > deadline
       or not (h.pid and holder.alive(h) or not h.pid and scode == "EAGAIN") then
      return nil, serr, scode
    end
    orch.sleep(RETRY)
  end
  local got, total = {}, nil
  local n = 0
  local function fail(why, fcode)
    for _, e in pairs(got) do e.stream:close() end
    d:set_timeout(nil)
    return nil, why, fcode
  end
  d:set_timeout(WAIT)
  while total == nil or n < total do
    if orch.now() > deadline then return fail("no answer within " .. WAIT .. " s") end
    local data, from, cred, fds = d:recv{ fds = true }
    if not data then
      -- EMFILE: the pipes it sent could not all be received (orch is out
      -- of fds); the holder still has them: asked again once fds are free.
      return fail(cred == "ETIMEDOUT" and "no answer within " .. WAIT .. " s" or from, cred)
    end
    if not h.pid and cred and cred.uid == orch.geteuid() and cred.pid ~= orch.getpid() then
      -- The holder bound at the path (in a directory only our uid may
      -- write to) is the one that answers.
      local info = orch.proc.info(cred.pid)
      if info and info.state ~= "Z" then h.pid, h.start = cred.pid, info.start_time end
    end
    local m = cred and cred.pid == h.pid and cred.uid == orch.geteuid() and ctl().decode(data)
    if type(m) == "table" and m.op == "busy" then
      for _, s in pairs(fds) do if s then s:close() end end
      return fail("the fd holder serves another orch (pid " .. tostring(m.pid) .. ")")
    end
    if type(m) == "table" and m.op == "held" and math.type(m.n) == "integer" and type(m.entries) == "table" then
      total = m.n
      for i, e in ipairs(m.entries) do
        n = n + 1
        local s = fds[i]
        if s and type(e.name) == "string" then
          got[e.name] = { pid = e.pid, start = e.start, stream = s }
          fds[i] = nil
        end
      end
    end
    for _, s in pairs(fds) do if s then s:close() end end
  end
  d:set_timeout(nil)
  return got
end

--- A holder we cannot talk to (stopped, wedged), h = { pid, start }: it
-- only keeps its name from a new one. Killed, and waited for (task only).
function holder.kill(h)
  orch.kill(h.pid, "KILL", h.start)
  orch.proc.wait_exit(h.pid, h.start, WAIT)
end

--- Starts a holder for P.holder_path (P.holder then names it). on_end() is
-- called when it ends before persist closed (a new one is then started at
-- the next sync, up to 5 times, unless it failed by itself). Returns it,
-- or nil (logged).
function holder.start(S, P, on_end)
  local exe = orch.exepath()
  local start = own_start()
  if not start then
    S:log("cannot start the fd holder: cannot read orch's own start time")
    return nil
  end
  -- With the cgroup tree of the socket and its lock: a holder that outlives
  -- its orch (killed) and every service removes the tree's empty cgroups
  -- when it ends, unless a new orch of the socket holds the lock.
  local argv = { exe, "fdholder", P.holder_path, tostring(orch.getpid()), tostring(start),
                 setsid = true, stdin = "null", stdout = "null" }
  local tree = require("orch.supervisor.cgroup").tree_dir(S)
  if tree then
    argv[6], argv[7] = tree, P.socket .. ".lock"
  end
  local p, err = orch.spawn(argv)
  if not p then
    S:log("cannot start the fd holder: " .. tostring(err))
    return nil
  end
  local info = orch.proc.info(p.pid)
  local h = { pid = p.pid, start = info and info.start_time, proc = p }
  p:on_exit(function(code, sig)
    if P.holder ~= h then return end
    P.holder, P.held = nil, {}
    if P.closed then return end
    -- Killed: a new holder takes the pipes again. Failed by itself (it
    -- could not bind its socket): not again, or it would fail in a loop.
    P.respawns = (P.respawns or 0) + 1
    if code ~= nil or P.respawns > 5 then P.holder_failed = true end
    S:log(string.format("the fd holder (pid %d) ended (%s)%s", p.pid,
      code and ("exit code " .. code) or ("signal " .. tostring(sig)),
      P.holder_failed and ": log pipes are not held any more" or ": a new one takes the log pipes"))
    on_end()
  end)
  P.holder, P.held = h, {}
  return h
end

-- Gives the holder the pipes of list ({ name, pid, start, stream } each),
-- one datagram per PART of them. Returns true, or nil, err, code (what
-- went before the failure is held).
local function put(P, d, list)
  local i = 1
  while i <= #list do
    local last = math.min(i + PART - 1, #list)
    local parts, fds = {}, {}
    for j = i, last do
      local x = list[j]
      parts[#parts + 1] = string.format('{"name":%s,"pid":%d,"start":%d}', jstr(x[1]), x[2], x[3])
      fds[#fds + 1] = x[4]
    end
    local ok, err, code = d:send('{"op":"put","entries":[' .. table.concat(parts, ",") .. ']}', P.holder_path, fds)
    if not ok then return nil, err, code end
    for j = i, last do P.held[list[j][1]] = list[j][2] end
    i = last + 1
  end
  return true
end

--- The pipes of new processes go to the holder at their spawn (not at the
-- next sync, which comes 5 ms later at the least and up to half a second
-- after: a kill -9 of orch in between lost those pipes). list: { name,
-- pid, start, stream } each (a large start sends each batch of launches in
-- one datagram). Only to a holder that is bound already; what cannot go
-- now (no holder yet, its queue full) goes at the next sync, which the
-- spawn has scheduled anyway.
function holder.hand_over(P, list)
  local d = P.holder and not P.holder_failed and not P.closed and client(P)
  if d then put(P, d, list) end
end

--- Brings the holder in line: drops (names) no longer held, puts ({ name,
-- pid, start, stream } each, a pipe whose process changed replacing what
-- the holder held under its name) given. Returns true when done, nil when
-- it must be tried again (the holder has not bound its socket yet, or its
-- queue is full), false when it failed otherwise (logged).
function holder.send(S, P, drops, puts)
  local d, err = client(P)
  if not d then
    S:log("fd holder: " .. tostring(err))
    return false
  end
  local function fail(e, code)
    -- The holder binds its socket right after it starts: until then, and
    -- while its queue is full, try again a little later.
    if code == "ENOENT" or code == "ECONNREFUSED" or code == "EAGAIN" or code == "ENOBUFS" then return nil end
    S:log("fd holder: " .. tostring(e))
    return false
  end
  if #drops > 0 then
    local ok, e, code = d:send(ctl().encode{ op = "drop", names = drops }, P.holder_path)
    if not ok then return fail(e, code) end
    for _, name in ipairs(drops) do P.held[name] = nil end
  end
  local ok, e, code = put(P, d, puts)
  if not ok then return fail(e, code) end
  return true
end

--- Ends the holder: "bye", and TERM to its process (a holder that has not
-- bound its socket yet never reads the bye, and as orch's child it would
-- keep orch's loop alive). An adopted holder (a killed orch's, or ours
-- before `orch ctl reexec`: not orch's child) is TERMed, by its pid and
-- start time, when the bye cannot go: orch's end of the conversation
-- cannot be opened (out of fds), or the holder's socket is gone (its file
-- removed) or full. It used to get neither, and was killed 5 s later. It
-- is kept in P.ending until persist's clean end has seen it gone
-- (holder.close).
function holder.stop(P)
  local h = P.holder
  if not h then return end
  P.holder, P.held = nil, {}
  local d = client(P)
  local said = d and d:send(ctl().encode{ op = "bye" }, P.holder_path)
  if h.proc then
    if h.proc:running() then h.proc:kill("TERM") end
  elseif not said and h.pid and h.start then
    orch.kill(h.pid, "TERM", h.start)
  end
  local ending = {}
  for _, e in ipairs(P.ending or {}) do
    if holder.alive(e) then ending[#ending + 1] = e end
  end
  ending[#ending + 1] = h
  P.ending = ending
end

--- persist's clean end: the holder ends, and the client socket closes. In
-- a task, orch waits until every holder it told to end is gone (SIGKILL
-- after WAIT seconds, logged), so that nothing of it is left when it exits
-- (a service manager's unit, a test's check): the holder's exit used to
-- follow orch's by a scheduler slice or more, and an adopted holder (not
-- orch's child) whose bye was not read lived on.
function holder.close(P, S)
  holder.stop(P)
  if P.dgram then P.dgram:close() P.dgram = nil end
  local ending = P.ending or {}
  P.ending = nil
  if not orch.current() then return end
  for _, h in ipairs(ending) do
    local ok, err, code = orch.proc.wait_exit(h.pid, h.start, WAIT)
    if not ok then
      -- (A wait that could not be made, out of fds even with a spare, is
      -- not a holder that did not end.)
      S:log(code == "ETIMEDOUT"
        and string.format("the fd holder (pid %d) did not end within %d s of its bye: killed", h.pid, WAIT)
        or string.format("the fd holder (pid %d): cannot wait for its end (%s): killed", h.pid, tostring(err)))
      orch.kill(h.pid, "KILL", h.start)
      orch.proc.wait_exit(h.pid, h.start, WAIT)
    end
  end
end

return holder
