--- orch.supervisor.persist: what lets the services outlive a `kill -9` of
-- orch and the next `orch run` of the same control socket adopt them
-- (doc/supervisor.md, "If orch is killed").
--
-- Two things survive orch:
--  * the state record, SOCKET.state (JSON, mode 0600, replaced atomically):
--    the live processes (name, pid, start time, want, restarts, ...), the
--    state and counters of the instances without one, the
--    heartbeat tables this supervisor created and the fd holder's pid,
--    and SOCKET.journal beside it: the changes since the record was
--    written, one line each (a process at its spawn, persist.spawned; the
--    new entry of each instance that changed, or its removal, at each
--    sync). A sync (persist.touch: at most once per loop turn, 5 ms after a
--    spawn, and at most 10% of orch's time) handles only the instances that changed since the
--    last one: it appends their entries to the journal, or, when the
--    record is small (WHOLE) or the journal has grown as large as the
--    record, rewrites the record whole from the entries kept per instance
--    and removes the journal. The cost of a change is thus independent of
--    the number of services. A restart whose new process's spawn line
--    says all its entry says (covered) asks for no sync: the line stays
--    the journal's until the journal holds as much as the record or WHOLE.
--    Both go at a clean shutdown;
--  * the fd holder (`orch fdholder`, src/fdholder.c: C, no Lua state), a
--    small process of its own session holding a duplicate of the read end of
--    every log pipe, so that no service dies of SIGPIPE while no orch
--    reads, and handing them to the next orch. It is started at the first
--    log pipe and told "bye" by a clean shutdown. Its protocol (hello,
--    put, drop, bye) is holder.lua's; what it holds is decided here
--    (sync_holder).
-- The next orch (persist.recover, in sup.run, before anything starts) reads
-- the record, verifies each pid against its start time, asks the holder for
-- the pipes, and lists what it found in S.inherited, the table `orch ctl
-- reexec` fills: the adoption itself is handoff.adopt's. A process whose
-- log pipe was lost (the holder is gone) is stopped and started again, never
-- run twice.
--
-- Functions of the supervisor state S. Nothing here blocks the loop: the
-- record is a small local file, the holder is reached by non-blocking
-- datagrams.
local orch = require "orch"
local holder = require "orch.supervisor.holder"

local persist = {}
local merge_journal   -- defined with the journal below
local append_journal  -- idem

local RETRY = 0.05        -- seconds before a failed sync is tried again
local WHOLE = 16384       -- bytes: a record this small is rewritten whole at each change
-- The most one append to the journal takes (orch.private.append's bound,
-- less its generation line): more changes than that are a whole record.
local JOURNAL_WRITE = 65536 - 64
local SPACING = 10        -- a sync waits this many times the last one's duration
local MAX_SPACING = 0.5   -- seconds, at most
-- After a spawn, the sync waits this long (seconds): the new process is in
-- the journal already and its log pipe with the holder (holder.hand_over,
-- at the spawn: a kill -9 in the wait lost it before), and the record's
-- rewrite would otherwise take the CPU from the exec of the process just
-- spawned.
-- On two cores the rewrite and the holder's datagram together added about
-- 0.2 ms to a restart's latency (doc/benchmarks.md, issue 15).
local SPAWN_SETTLE = 0.005
-- Seconds the collection that ends a large start waits for the holder to
-- take every new pipe (persist.sync).
local COMPACT_WAIT = 5

local function ctl() return require "orch.ctl" end

--- The control socket of this supervisor's `orch run`: its identity across
-- runs. The socket whose lock `orch run` holds (one orchestrator per
-- socket), else the one it was told to serve (`--socket`, $ORCH_SOCKET, or
-- the one `orch ctl reexec` handed over).
-- nil when persistence is off: a supervisor made by
-- sup.new(), one not run by `orch run`, `orch run --no-socket`, or
-- `sup.configure{ persist = false }`.
function persist.socket(S)
  if S.persist_socket ~= nil then return S.persist_socket or nil end
  if not S.main then return nil end
  local c = package.loaded["orch.ctl"]
  if c and type(c.locks) == "table" then
    for path, l in pairs(c.locks) do
      if type(path) == "string" and type(l) == "table" and not l.by_serve then return path end
    end
  end
  -- After `orch ctl reexec` (which runs `orch run SCRIPT` again): the
  -- socket the previous image served, handed over.
  if os.getenv("ORCH_HANDOFF") then
    local h = c and c.inherited and c.inherited()
    local l = type(h) == "table" and h.listener
    if type(l) == "table" and type(l.path) == "string" then return l.path end
  end
  -- Set by `orch run` (src/main.c) until its control socket starts: a
  -- path (--socket), true (the default rules), false (--no-socket). Without
  -- it this is no `orch run` (a host, a test runner) or the control socket
  -- started before sup.run: no persistence.
  local planned = rawget(_G, "__orch_ctl_socket")
  if type(planned) == "string" then return planned end
  if planned == true then
    local env = os.getenv("ORCH_SOCKET")
    if env and env ~= "" then return env end
  end
  return nil
end

local function paths(sock)
  return sock .. ".state", sock .. ".holder", sock .. ".journal"
end

-- ---------------------------------------------------------------- the record

-- The digest of a service's definition, computed once per definition (a
-- reload makes a new service table) and kept in it: a field of a table of
-- three (cfg, given, instances) costs nothing, an entry of a weak table about
-- 40 bytes a service.
local function def_digest(svc)
  local d = svc.digest
  if not d then
    d = require("orch.supervisor.handoff").digest_of(svc.cfg, svc.given)
    svc.digest = d
  end
  return d
end

-- What persist keeps of a run (a run's fields are instance.lua's to
-- write: this is persist's own), one small list per run and pid, made at
-- its spawn and kept up to date by the syncs: the process's start time
-- (read once), the values the record's entry was made of and that entry
-- (remade only when one changed), and the log pipe the holder is given.
-- A list of fixed size, not named fields: thousands of services hold one.
local PID, START, WANT, RESTARTS, LOG, DEF, START_TIME, TEXT, STREAM = 1, 2, 3, 4, 5, 6, 7, 8, 9
local recs = setmetatable({}, { __mode = "k" })
-- A new record of pid (started at start): every slot from the start, so
-- that the list keeps its exact size.
local function new_rec(pid, start)
  return { pid, start or false, false, false, false, false, false, false, false }
end

local function rec_of(run, pid)
  local r = recs[run]
  if not r or r[PID] ~= pid then
    r = new_rec(pid, orch.proc.start_time(pid))
    recs[run] = r
  end
  return r
end

-- s when it is an open stream (a pipe at its EOF is closed), else nil.
local function open_stream(s)
  if not s then return nil end
  local ok, fd = pcall(s.fd, s)
  if ok and math.type(fd) == "integer" and fd >= 0 then return s end
  return nil
end

local function log_stream(run)
  return open_stream(run.log_stream)
end

-- JSON text of a string, a number or nil (the record is written often:
-- by hand, from fragments kept per run, rather than through cjson, which
-- formats every number with sprintf: 5x the time for 100 services).
local jstr = holder.jstr
local own_start = holder.own_start
local function jnum(v)
  if v == nil then return "null" end
  if math.type(v) == "integer" then return string.format("%d", v) end
  return string.format("%.3f", v)
end

-- The record's entry of a run (r: its rec_of), as JSON; remade only when
-- one of its values changed (a sync of hundreds of services mostly
-- concatenates).
-- A second result, true: the entry says what the journal's line of the
-- process's spawn says (r[TEXT] was true: see journaled), which the journal
-- holds already.
local function fragment(inst, run, r, def, has_log, now, wall)
  local want = inst.want and true or false
  local text = r[TEXT]
  local same = text and r[WANT] == want and r[RESTARTS] == inst.restarts and r[LOG] == has_log
     and r[DEF] == def and r[START_TIME] == inst.start_time
  if same and text ~= true then return text end
  r[WANT], r[RESTARTS], r[LOG], r[DEF], r[START_TIME] = want, inst.restarts, has_log, def, inst.start_time
  local started_at = math.floor((wall - (now - (run.started or now))) * 1000) / 1000
  text = string.format('{"name":%s,"pid":%d,"pid_start":%d,"want":%s,"restarts":%s,"start_time":%s,'
    .. '"started_at":%s,"def":%s%s}', jstr(inst.name), r[PID], r[START], tostring(want), jnum(inst.restarts),
    jnum(inst.start_time), jnum(started_at), jstr(def), has_log and ',"log":true' or "")
  r[TEXT] = text
  return text, same
end

-- The record's entry of an instance without a process (backoff, fatal,
-- exited, or stopped after restarts): its counters and state, so that the
-- next orch goes on where this one was (handoff.restore / resume).
local idle_frags = setmetatable({}, { __mode = "k" })
local function idle_fragment(inst, backoff_at)
  local f = idle_frags[inst]
  local want = inst.want and true or false
  if f and f.state == inst.state and f.want == want and f.restarts == inst.restarts and f.fails == inst.fails
     and f.exit_code == inst.exit_code and f.exit_signal == inst.exit_signal and f.backoff_at == backoff_at then
    return f.text
  end
  f = { state = inst.state, want = want, restarts = inst.restarts, fails = inst.fails,
        exit_code = inst.exit_code, exit_signal = inst.exit_signal, backoff_at = backoff_at }
  f.text = string.format('{"name":%s,"state":%s,"want":%s,"restarts":%s,"fails":%s,"exit_code":%s,'
    .. '"exit_signal":%s,"backoff_at":%s}', jstr(inst.name), jstr(inst.state), tostring(want),
    jnum(inst.restarts), jnum(inst.fails), jnum(inst.exit_code),
    inst.exit_signal ~= nil and jstr(tostring(inst.exit_signal)) or "null", jnum(backoff_at))
  idle_frags[inst] = f
  return f.text
end

-- The record's entry of an instance (JSON text, or nil when the record
-- leaves it out: stopped and never run), and the rec_of of its live
-- process when that has a log pipe (the pipe is its STREAM).
local function entry(S, inst, now, wall)
  local run = inst.run
  local pid = run and run.alive and (run.main_pid or run.pid)
  local r = pid and rec_of(run, pid)
  if r and r[START] then
    local s = log_stream(run)
    r[STREAM] = s or false
    local text, journaled = fragment(inst, run, r, def_digest(S.services[inst.service]), s ~= nil, now, wall)
    return text, s and r or nil, journaled
  elseif not (run and run.alive) and (inst.state ~= "stopped" or inst.restarts > 0
         or inst.exit_code ~= nil or inst.exit_signal ~= nil) then
    -- Stopped after it ran (by hand: `orch ctl stop`) is named too, so that
    -- the next orch after a kill -9 leaves it stopped, not started again.
    local at = inst.state == "backoff" and inst.backoff_until
      and math.floor((wall + (inst.backoff_until - now)) * 1000) / 1000 or nil
    return idle_fragment(inst, at), nil
  end
  return nil, nil
end

-- The journal's line for an instance the record no longer names.
local function gone_line(name) return '{"name":' .. jstr(name) .. ',"gone":true}' end

-- name's entry is text now (nil: the record leaves it out): a line for the
-- journal when that changed it, unless the journal says it already
-- (journaled: the line of the process's spawn).
local function note(frags, lines, name, text, journaled)
  if text ~= frags[name] then
    frags[name] = text
    if not journaled then lines[#lines + 1] = text or gone_line(name) end
  end
end

-- Whether the process the previous orch (or image) left for this instance
-- is still to be adopted: until then the instance has no run here, but
-- the record's entry and the holder's pipe of that process stand. A sync
-- during the adoption (it yields every few services) otherwise wrote a
-- record without the instances not adopted yet and had the holder drop
-- their pipes: a kill -9 of orch then lost them.
local function pending(S, name)
  local h = S.inherited
  local e = h and h[name]
  return e and e.pid ~= nil or false
end

-- Brings P.frags (name -> the entry the record and journal hold), P.pipes
-- (name -> rec_of, the live log pipes) and P.recheck (the names whose pipe
-- the holder may hold wrongly) up to date; returns the journal lines of
-- what changed. Only the instances marked by persist.touch, unless the
-- set of instances changed (a reload) or a change was not attributed to
-- one (P.full): then all of them.
local function collect(S, P)
  local now, wall = orch.now(), orch.time()
  local all = S:all_instances()
  local frags, pipes, recheck, lines = P.frags, P.pipes, P.recheck, {}
  local dirty = P.dirty
  P.dirty = {}
  if P.full or P.scanned ~= all then
    P.full, P.scanned = nil, all
    local by_name = S.by_name
    for _, inst in ipairs(all) do
      local name = inst.name
      if not pending(S, name) then
        local text, r, journaled = entry(S, inst, now, wall)
        if pipes[name] ~= r then pipes[name] = r end
        note(frags, lines, name, text, journaled)
      end
    end
    -- The names of the instances a reload removed.
    for name in pairs(frags) do
      if not by_name[name] then
        frags[name] = nil
        lines[#lines + 1] = gone_line(name)
      end
    end
    for name in pairs(pipes) do
      if not by_name[name] then pipes[name] = nil end
      recheck[name] = true
    end
    for name in pairs(P.held) do recheck[name] = true end
  else
    for inst in pairs(dirty) do
      local name = inst.name
      if S.by_name[name] == inst and not pending(S, name) then
        local text, r, journaled = entry(S, inst, now, wall)
        pipes[name] = r
        recheck[name] = true
        note(frags, lines, name, text, journaled)
      end
    end
  end
  return lines
end

-- ---------------------------------------------------------------- the holder

-- Brings the holder in line with the live log pipes (P.pipes) for the
-- names in P.recheck: drop what ended, put what is new. Returns true, or
-- nil when it must be tried again.
local function sync_holder(S, P)
  local pipes = P.pipes
  -- Nothing left to hold and nothing about to run (every service ended):
  -- no holder either, so that an idle supervisor (exit_when_idle) lets orch
  -- end. A service in backoff keeps it: a crash loop would otherwise start
  -- a holder at every restart.
  if next(pipes) == nil and P.holder then
    local busy = false
    for _, inst in ipairs(S:all_instances()) do
      local st = inst.state
      if st == "backoff" or st == "waiting" or st == "starting" or st == "running" or st == "stopping" then
        busy = true
        break
      end
    end
    -- Nor while processes are still to be adopted (their pipes are held).
    if not busy and S.inherited then
      for name in pairs(S.inherited) do
        if pending(S, name) then busy = true break end
      end
    end
    if not busy then
      holder.stop(P)
      P.recheck = {}
      return true
    end
  end
  local drops, puts = {}, {}
  -- A pipe whose process changed (a restart) is replaced by its put: the
  -- holder drops what it held under that name (one datagram, not two).
  for name in pairs(P.recheck) do
    local r = pipes[name]
    -- A pipe closed since its entry was made (the run ended before this
    -- sync): nothing left to hold; dropped if held.
    local s = r and r[STREAM]
    if r and not (s and pcall(s.fd, s)) then r = nil end
    if r then
      if P.held[name] ~= r[PID] then puts[#puts + 1] = name end
    elseif P.held[name] and not pending(S, name) then
      drops[#drops + 1] = name
    end
  end
  if #drops == 0 and #puts == 0 then
    P.recheck = {}
    return true
  end
  if not P.holder then
    if P.holder_failed then
      P.recheck = {}
      return true
    end
    if not holder.start(S, P, function() persist.touch(S) end) then
      P.holder_failed = true
      P.recheck = {}
      return true
    end
  end
  table.sort(puts)
  for i, name in ipairs(puts) do
    local r = pipes[name]
    puts[i] = { name, r[PID], r[START], r[STREAM] }
  end
  local sent = holder.send(S, P, drops, puts)
  -- (After a failure the names stay in P.recheck: the next sync tries
  -- them again.)
  if sent then P.recheck = {} end
  return sent ~= nil
end

-- ---------------------------------------------------------------- sync

--- Writes what changed (the journal, or the record whole) and updates the
-- holder now.
function persist.sync(S)
  local P = S.persist
  if not P or P.closed then return end
  if P.compact == "both" then
    P.compact = true
    collectgarbage()
  end
  local t0 = orch.now()
  P.since = nil
  local lines = collect(S, P)
  local again = not sync_holder(S, P)
  local created = {}
  for k in pairs(S.created_tables) do created[#created + 1] = k end
  table.sort(created)
  local h = P.holder
  local head = string.format('"orch":{"pid":%d,"start":%s},%s"heartbeat_tables":[%s],"instances":[',
    orch.getpid(), jnum(own_start()),
    h and string.format('"holder":{"pid":%d,"start":%s},', h.pid, jnum(h.start)) or "",
    table.concat(created, ","))
  local nbytes = 0
  for i = 1, #lines do nbytes = nbytes + #lines[i] + 1 end
  -- The record is rewritten whole when its head changed, when it is small,
  -- or when the journal would grow past its size (so that the work of the
  -- rewrites stays in proportion to the changes); otherwise the changes
  -- go to the journal. The lines of spawns alone (a restart: its line went
  -- to the journal at the spawn, nothing else changed) stay there until the
  -- journal holds as much as the record, or WHOLE for a small one: a
  -- restart then writes one line, not the record.
  local size = P.record_bytes
  local whole = head ~= P.written_head or not size
  if not whole and nbytes > 0 then
    -- (Changes of more than one append takes, a restart of hundreds: the
    -- append raised, and the sync's changes never reached the file.)
    whole = size <= WHOLE or P.jbytes + nbytes > size or nbytes > JOURNAL_WRITE
  elseif not whole and P.jbytes > 0 then
    whole = P.jbytes > math.max(size, WHOLE)
  end
  if whole then
    local list, frags = {}, P.frags
    for _, inst in ipairs(S:all_instances()) do
      local f = frags[inst.name]
      if f then list[#list + 1] = f end
    end
    -- A new generation: a journal of an older one (left by a kill between
    -- this write and the journal's removal) is not replayed over it.
    local gen = P.gen + 1
    local record = string.format('{"version":1,"gen":%d,', gen) .. head .. table.concat(list, ",") .. "]}"
    local ok, err = orch.private.write(P.state_path, record)
    if ok then
      if P.write_failed then
        P.write_failed = nil
        S:log("the state record is written again")
      end
      P.written_head, P.record_bytes, P.gen = head, #record, gen
      if P.jbytes > 0 or P.jstale then
        os.remove(P.journal_path)
        P.jbytes, P.jstale = 0, nil
      end
    else
      -- The changes are in P.frags: the next sync tries the whole record again.
      P.record_bytes = nil
      if not P.write_failed then
        P.write_failed = true
        S:log("cannot write the state record: " .. tostring(err))
      end
    end
  elseif nbytes > 0 and not append_journal(S, P, table.concat(lines, "\n") .. "\n") then
    again = true
  end
  -- The next sync waits SPACING times as long as this one took: a record
  -- of thousands of services costs milliseconds to write whole, and a
  -- mass start (which yields every few launches) or a restart storm would
  -- otherwise rewrite it at every loop turn. What spawns meanwhile is in
  -- the journal at once; other changes reach the record a little later.
  local now = orch.now()
  P.next_sync = now + math.min(MAX_SPACING, (now - t0) * SPACING)
  -- The holder may not have taken every new pipe yet (it had not bound
  -- its socket, or its queue was full): the retry (RETRY later) sends the
  -- rest, and the collection waits for it (at most COMPACT_WAIT): what
  -- that makes (about 0.4 KiB a pipe, 200 KiB at 500 services) otherwise
  -- stayed resident until the heap had doubled.
  if P.compact and (not again or now >= (P.compact_by or now + COMPACT_WAIT)) then
    P.compact, P.compact_by = nil, nil
    collectgarbage()
    orch.malloc_trim()
  elseif P.compact then
    P.compact, P.compact_by = true, P.compact_by or now + COMPACT_WAIT
  end
  if again and not P.timer then
    P.timer = orch.timer.after(RETRY, function()
      P.timer = nil
      local _ <close> = S.own_budget()
      persist.sync(S)
    end)
  end
end

--- Something the record holds changed: sync once this loop turn is over
-- (a mass start or a restart storm costs one write per turn, not one per
-- service), and not before the spacing the last sync earned, nor sooner
-- than SPAWN_SETTLE after a spawn.
-- inst: the instance that changed (only its entry is made again), nil
-- for a change of no one instance's (every entry is looked at).
local function schedule(S, P)
  if P.timer then return end
  if P.holds then
    P.touched = true
    return
  end
  local now = orch.now()
  P.since = P.since or now
  local wait = P.next_sync and P.next_sync - now or 0
  -- A spawn's settle defers the sync, but never past MAX_SPACING after the
  -- oldest change it holds: restarts less than SPAWN_SETTLE apart (a crash
  -- loop) pushed it back for as long as they went on.
  local settle = P.settle and math.min(P.settle, P.since + MAX_SPACING)
  if settle and settle - now > wait then wait = settle - now end
  P.timer = orch.timer.after(wait > 0 and wait or 0, function()
    P.timer = nil
    -- The supervisor's own work: not cut short by a Lua time budget
    -- smaller than its own (a record of hundreds of entries was never
    -- written at 10 us).
    local _ <close> = S.own_budget()
    persist.sync(S)
  end)
end

-- The journal's bound while it holds spawn lines alone (see persist.sync).
local function journal_full(P)
  return not P.record_bytes or P.jbytes > math.max(P.record_bytes, WHOLE)
end

-- inst's live process is in the journal (its spawn's line: journaled)
-- with the values its entry has now, and its log pipe with the holder: a
-- sync would write nothing of it. The stream is the one persist.spawned
-- hands over (the capture takes it a moment later).
local function covered(S, P, inst)
  local run = inst.run
  local pid = run and run.alive and (run.main_pid or run.pid)
  local r = pid and recs[run]
  if not (r and r[TEXT] == true and r[PID] == pid) or P.full or journal_full(P) then return false end
  local s = open_stream(run.log_stream or (run.proc and run.proc.stdout))
  return r[LOG] == (s ~= nil) and (s == nil or P.held[inst.name] == pid)
    and r[WANT] == (inst.want and true or false) and r[RESTARTS] == inst.restarts
    and r[START_TIME] == inst.start_time and r[DEF] == def_digest(S.services[inst.service])
end

--- inst changed (nil: something not of one instance). An instance whose
-- entry the journal holds already (covered: a restart's new process, from
-- its spawn to its running state) is only marked: the next sync, whenever
-- something else brings it, makes its entry, and a restart costs no sync.
function persist.touch(S, inst)
  local P = S.persist
  if not P or P.closed then return end
  if inst then
    P.dirty[inst] = true
    if covered(S, P, inst) then return end
  else
    P.full = true
  end
  schedule(S, P)
end

--- The full collection that ends a large start (Sup:compact) is the
-- first thing the sync that follows does, once the spawns settled, and
-- the sync makes one more at its end: the first record of the new
-- processes and the holder's new pipes leave garbage of their own, about
-- half as much as the start (2,000 services: 0.8 MiB of orch's PSS less).
-- Only one after the sync would make it grow the heap instead of reusing
-- the start's garbage. False when no sync is on its way.
function persist.compact_in_sync(S)
  local P = S.persist
  if not (P and not P.closed and (P.timer or P.touched)) then return false end
  P.compact = "both"
  return true
end

--- A large start holds the record's rewrites (on = true) until it is over
-- (on = false): they cover the whole fleet each time, and what spawns is
-- journaled at once anyway. Holds nest.
function persist.hold(S, on)
  local P = S.persist
  if not P then return end
  if on and not P.holds then P.hold_task = orch.current() end
  P.holds = (P.holds or 0) + (on and 1 or -1)
  if P.holds > 0 then return end
  P.holds, P.hold_task = nil, nil
  persist.flush(S)
  if P.touched then
    P.touched = nil
    schedule(S, P)
  end
end

-- A hold as a to-be-closed value (persist.holding): released by its
-- release() or, whatever happens first, when it goes out of scope (a
-- start that raises, or whose task is cancelled at one of its yields: a
-- hold left behind kept every later change off the record for good).
local Hold = {}
Hold.__index = Hold
function Hold:release()
  local S = self.S
  if S then
    self.S = nil
    persist.hold(S, false)
  end
end
Hold.__close = Hold.release

--- persist.hold(S, true), undone when the value returned is released or
-- closed (local h <close> = persist.holding(S)).
function persist.holding(S)
  persist.hold(S, true)
  return setmetatable({ S = S }, Hold)
end

-- ---------------------------------------------------------------- start, end

-- ---------------------------------------------------------------- journal
-- A new process is appended to SOCKET.journal at once (one write), so that
-- a kill before the next record write still finds it; the journal goes
-- once the record holds what it says.

local function jfield(v) return (tostring(v):gsub("[\t\n]", " ")) end

-- Its first line names the generation of the record it follows.
append_journal = function(S, P, text)
  if P.jstale then
    os.remove(P.journal_path)
    P.jstale, P.jbytes = nil, 0
  end
  if P.jbytes == 0 then text = string.format("#gen %d\n", P.gen) .. text end
  local ok, err, code = orch.private.append(P.journal_path, text)
  if ok then
    P.jbytes = P.jbytes + #text
    if P.journal_failed then
      P.journal_failed = nil
      S:log("the state journal is written again")
    end
    return true
  end
  -- The record is written whole at the next sync instead (the changes are
  -- in P.frags), and what append refused at the path (a FIFO, a symbolic
  -- link, another user's file) is removed then, or before the next append.
  -- A journal that only lacked room (a full disk: append wrote nothing)
  -- keeps its lines, which the record on file lacks until that write.
  P.record_bytes = nil
  if code == "EPERM" then P.jstale = true end
  if not P.journal_failed then
    P.journal_failed = true
    S:log("cannot write the state journal: " .. tostring(err) .. "; the state record is written whole instead")
  end
  return false
end

-- The journal line of a new process (pid, start time start) of inst, and
-- P.settle pushed past its spawn.
local function spawn_line(S, P, inst, pid, start, restarts, start_time)
  P.settle = orch.now() + SPAWN_SETTLE
  if P.timer and not P.holds then
    -- A sync on its way waits for the new process too: armed again, past
    -- the new settle, within schedule's bound. (Only stopped, it was left
    -- to the spawn's own touch to arm again, which a restart whose journal
    -- line covers its entry never does: the change it was for, a stop by
    -- hand, never reached the record.)
    P.timer:stop()
    P.timer = nil
    schedule(S, P)
  end
  return string.format("%s\t%d\t%d\t%s\t%s\t%s\t%s\n", jfield(inst.name), pid, start,
    jnum(restarts), def_digest(S.services[inst.service]), inst.want and "1" or "0", jnum(start_time))
end

-- The journal holds the line of r's process's spawn (spawn_line's values):
-- r takes them as its entry's, and TEXT true says that the entry the next
-- sync makes of them (unless one changed meanwhile) is the journal's line,
-- which needs no line again. A restart then costs the journal one line (at
-- its spawn) and the record nothing until the journal is rewritten into it.
local function journaled(S, inst, r, restarts, start_time, has_log)
  r[WANT], r[RESTARTS], r[LOG] = inst.want and true or false, restarts, has_log
  r[DEF], r[START_TIME], r[TEXT] = def_digest(S.services[inst.service]), start_time, true
end

-- The record of the restart respawn_early spawned (instance.lua), made
-- at its spawn, per instance: its run does not exist yet.
local early_recs = setmetatable({}, { __mode = "k" })

--- inst's restart was spawned by its exit's action (process p), before
-- that exit's bookkeeping (instance.lua, respawn_early): it goes to the
-- journal and its pipe to the holder now, as persist.spawned does for any
-- other spawn, so that a kill -9 of orch during that bookkeeping leaves no
-- process that the next orch does not know (without cgroups nothing else
-- finds it). restarts: the count the restart makes. The run made for it
-- next (persist.spawned) takes this record and writes nothing again.
function persist.spawned_early(S, inst, p, restarts, start_time)
  local P = S.persist
  if not P or P.closed then return end
  local pid = p.pid
  local start = orch.proc.start_time(pid)
  if not start then return end
  local r = new_rec(pid, start)
  early_recs[inst] = r
  local s = open_stream(p.stdout)
  if append_journal(S, P, spawn_line(S, P, inst, pid, start, restarts, start_time)) then
    journaled(S, inst, r, restarts, start_time, s ~= nil)
  end
  if s and P.holder then holder.hand_over(P, { { inst.name, pid, start, s } }) end
end

--- The restart spawned early was not taken (instance.lua, respawn_left):
-- the journal's line for it is undone by the next sync's entry of inst.
function persist.early_dropped(S, inst)
  local P = S.persist
  early_recs[inst] = nil
  if not P or P.closed then return end
  P.frags[inst.name] = false
  persist.touch(S, inst)
end

--- inst's run has a new process (Sup:spawned); start_time: its start
-- time when inst.start_time is not set to it yet.
function persist.spawned(S, inst, run, start_time)
  local P = S.persist
  if not P or P.closed then return end
  local pid = run.main_pid or run.pid
  local e = early_recs[inst]
  if e then
    early_recs[inst] = nil
    if pid == e[PID] then
      -- Journaled and handed over at its spawn (persist.spawned_early).
      -- The run is not alive yet (covered cannot tell): only marked when
      -- the journal has its line and the holder its pipe (the touch of
      -- the state that follows at once decides on the sync).
      recs[run] = e
      local s = open_stream(run.proc and run.proc.stdout)
      if e[TEXT] == true and not P.full and not journal_full(P) and e[LOG] == (s ~= nil)
         and (s == nil or P.held[inst.name] == pid) then
        P.dirty[inst] = true
      else
        persist.touch(S, inst)
      end
      return
    end
  end
  local r = pid and rec_of(run, pid)
  local start = r and r[START]
  if not start then return end
  start_time = start_time or inst.start_time
  local line = spawn_line(S, P, inst, pid, start, inst.restarts, start_time)
  -- Its log pipe (captured right after this: the process's stdout), while
  -- open: a daemon's main process (Instance:set_main) comes after its
  -- launcher's pipe may have reached its EOF and been closed.
  local s = open_stream(run.log_stream or (run.proc and run.proc.stdout))
  local put = s and P.holder and { inst.name, pid, start, s } or nil
  if P.holds and P.hold_task == orch.current() then
    -- A large start's own launches: a batch's lines go in one write, and
    -- its pipes in one datagram, before it yields (persist.flush), within
    -- the loop turn that spawned them.
    local buf = P.jbuf or {}
    P.jbuf = buf
    buf[#buf + 1] = line
    if put then
      local pbuf = P.pbuf or {}
      P.pbuf = pbuf
      pbuf[#pbuf + 1] = put
    end
    if #buf >= 64 then persist.flush(S) end
  else
    if append_journal(S, P, line) then journaled(S, inst, r, inst.restarts, start_time, s ~= nil) end
    if put then holder.hand_over(P, { put }) end
  end
  persist.touch(S, inst)
end

--- The journal lines a large start gathered go on file now (before it
-- yields to the loop, and at its end).
function persist.flush(S)
  local P = S.persist
  local buf = P and P.jbuf
  if not buf then return end
  P.jbuf = nil
  if not P.closed then append_journal(S, P, table.concat(buf)) end
  local pbuf = P.pbuf
  P.pbuf = nil
  if pbuf then holder.hand_over(P, pbuf) end
end

-- The journal's lines (newer than the record) replace, add or remove
-- entries, in their order: a process's line written at its spawn
-- (tab-separated), an instance's whole entry (JSON), or its removal
-- ({"name":...,"gone":true}). A line that does not parse (the last one,
-- cut by a kill in the middle of its write) is skipped.
merge_journal = function(S, rec, text)
  local list, by = rec.instances, {}
  for i, e in ipairs(list) do
    if type(e) == "table" and type(e.name) == "string" then by[e.name] = i end
  end
  local function put(name, e)
    local i = by[name]
    if i then list[i] = e else
      list[#list + 1] = e
      by[name] = #list
    end
  end
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, 1) == "{" then
      local e = ctl().decode(line)
      if type(e) == "table" and type(e.name) == "string" then put(e.name, not e.gone and e) end
    else
      local name, pid, start, restarts, def, want, st = line:match("^([^\t]+)\t(%d+)\t(%d+)\t([^\t]*)\t([^\t]*)\t([01])\t([^\t]*)$")
      if name then
        local inst = S.by_name[name]
        local l = inst and inst.cfg.log
        put(name, {
          name = name, pid = math.tointeger(tonumber(pid)), pid_start = math.tointeger(tonumber(start)),
          restarts = math.tointeger(tonumber(restarts)), def = def, want = want == "1",
          start_time = tonumber(st), started_at = tonumber(st),
          log = (l and not l.null and not l.inherit) or nil,
        })
      end
    end
  end
  -- What the journal removed (false) goes.
  local kept = {}
  for _, e in ipairs(list) do
    if e then kept[#kept + 1] = e end
  end
  rec.instances = kept
end

-- A process of the record is still the one the record names.
local function same_process(pid, start)
  if math.type(pid) ~= "integer" or pid <= 1 or pid == orch.getpid() or math.type(start) ~= "integer" then
    return false
  end
  local info = orch.proc.info(pid)
  return info ~= nil and info.state ~= "Z" and info.start_time == start
end
persist.same_process = same_process

-- Out of fds: a take-over cannot go on (the record and /proc are read
-- with the runtime's spare fds, but the fd holder's pipes are kept).
local function short_of_fds(code) return code == "EMFILE" or code == "ENFILE" end

-- Whether `need` fds can be opened now.
local function fds_free(need)
  local got, ok = {}, true
  for i = 1, need do
    local f = io.open("/dev/null")
    if not f then
      ok = false
      break
    end
    got[i] = f
  end
  for _, f in ipairs(got) do f:close() end
  return ok
end

-- Fds a take-over wants free before it begins: the fd holder's answer, a
-- cgroup or two, /proc and the record.
local TAKEOVER_FDS = 16

--- Waits (task only) until `need` fds are free, and one pause at least
-- (what called it failed for want of fds), saying once what waits: a
-- supervisor never starts a service beside the unsupervised processes of
-- a killed orch because it could not read what that orch left (the policy
-- or the services took every fd before sup.run). Meanwhile nothing starts;
-- control requests wait for sup.run (bounded) and then answer. false
-- outside a task (nothing can wait there).
function persist.wait_fds(S, need, what)
  if not orch.current() then return false end
  local said = false
  local pause = 0.05
  repeat
    if not said and not fds_free(need) then
      S:log("out of file descriptors: " .. what .. " waits until some are free; nothing starts meanwhile")
      said = true
    end
    orch.sleep(pause)
    pause = math.min(pause * 2, 1)
  until fds_free(need)
  if said then S:log("file descriptors free again: " .. what .. " goes on") end
  return true
end

--- Whether a killed orch may have left something here to take over (P:
-- persist's state): a record or a journal, or processes in the socket's
-- cgroup tree. Unknown (no fd to look with) counts as yes.
function persist.leftover(S, P)
  for _, path in ipairs { P.state_path, P.journal_path } do
    local text, _, code = orch.private.read(path)
    if text or short_of_fds(code) then return true end
  end
  local pids, _, code = require("orch.supervisor.cgroup").tree_pids(S)
  return short_of_fds(code) or (pids ~= nil and #pids > 0)
end

-- same_process for a take-over: a process that cannot be looked up for
-- want of fds is not gone (it would be started again beside itself).
local function still_there(S, pid, start)
  while math.type(pid) == "integer" and pid > 1 and orch.current() do
    local info, _, code = orch.proc.info(pid)
    if info or not short_of_fds(code) then break end
    persist.wait_fds(S, TAKEOVER_FDS, "looking up pid " .. pid .. " of the state record")
  end
  return same_process(pid, start)
end

--- In sup.run, before any service starts (task only): turns on persistence
-- for this run and takes over what a killed orch of the same control socket
-- left running. Fills S.inherited (see handoff.lua) unless `orch ctl
-- reexec` already did. Returns nil, or the message saying why orch must
-- not start: another script's services run on the socket (owner.lua).
function persist.recover(S)
  if S.persist then return end
  local sock = persist.socket(S)
  if not sock then return end
  local state_path, holder_path, journal_path = paths(sock)
  -- Only in a directory no one else can write to: nobody may plant a record
  -- or bind the holder's name (and receive the log pipes).
  local dir = sock:match("^(.*)/[^/]*$")
  local ok, derr = orch.private.check_dir(dir == nil and "." or dir == "" and "/" or dir)
  if not ok then
    S:log("no state record and no fd holder (services will not survive a kill -9 of orch): " .. tostring(derr))
    return
  end
  -- frags, pipes, recheck, dirty: see collect; jbytes: the journal's
  -- size; gen: the generation of the record on file; jstale: a journal on
  -- file may be one this orch does not continue (removed before the first
  -- line is appended).
  local P = { socket = sock, state_path = state_path, holder_path = holder_path, journal_path = journal_path,
              held = {}, frags = {}, pipes = {}, recheck = {}, dirty = {}, full = true, jbytes = 0, gen = 0,
              jstale = true }
  S.persist = P
  -- Whose state this is: another script's (the same default socket name)
  -- is never adopted or killed silently (owner.lua).
  P.owner_path = sock .. ".owner"
  -- What a killed orch left (its record, journal or cgroup tree) is taken
  -- over with fds free; out of them (even of the spare ones), unknown is
  -- the same as something left.
  if not fds_free(TAKEOVER_FDS) and persist.leftover(S, P) then
    persist.wait_fds(S, TAKEOVER_FDS, "taking over what the previous orch of " .. sock .. " left")
  end
  local verdict, refusal = require("orch.supervisor.owner").check(S, P)
  if not verdict then
    P.closed = true
    return refusal
  elseif verdict == "stale" then
    os.remove(state_path)
    os.remove(journal_path)
    P.jstale = nil
    return
  end
  local text, err, code, jtext, jerr, jcode
  while true do
    text, err, code = orch.private.read(state_path)
    jtext, jerr, jcode = orch.private.read(journal_path)
    if not (short_of_fds(code) or short_of_fds(jcode)) or not orch.current() then break end
    persist.wait_fds(S, TAKEOVER_FDS, "reading the state record " .. state_path)
  end
  if not text and code ~= "ENOENT" then
    S:log("state record ignored: " .. tostring(err))
    return
  end
  if not jtext and jcode ~= "ENOENT" then
    S:log("state journal ignored: " .. tostring(jerr))
    jtext = nil
  end
  if not jtext and jcode == "ENOENT" then P.jstale = nil end
  if not text and not jtext then return end
  local rec = text and ctl().decode(text) or { version = 1, instances = {} }
  if type(rec) ~= "table" or rec.version ~= 1 or type(rec.instances) ~= "table" then
    S:log("state record ignored: " .. state_path .. " is not a state record of this version")
    return
  end
  P.gen = math.tointeger(rec.gen) or 0
  -- A journal of another generation than the record's is older than the
  -- record (orch was killed between the record's write and the journal's
  -- removal): the record already holds what it says.
  local jgen = jtext and math.tointeger(tonumber(jtext:match("^#gen (%d+)\n")))
  if jgen and jgen ~= P.gen then jtext = nil end
  if jtext then
    merge_journal(S, rec, jtext)
    -- This orch goes on appending to it, until it writes the record whole.
    P.jbytes, P.jstale = #jtext, nil
  end
  -- The entries on file stand for the instances this orch has not made its
  -- own yet (see pending): a record written whole before the adoption is
  -- over names them as the previous one did.
  for _, e in ipairs(rec.instances) do
    if type(e) == "table" and type(e.name) == "string" and S.by_name[e.name] then
      P.frags[e.name] = ctl().encode(e)
    end
  end
  local prev = type(rec.orch) == "table" and rec.orch or {}
  local start = own_start()
  -- After `orch ctl reexec` (the same process), the hand-over has the
  -- processes; the record only names the holder.
  local reexec = S.inherited or (prev.pid == orch.getpid() and start ~= nil and prev.start == start)
  if not reexec and same_process(prev.pid, prev.start) then
    -- The lock beside the socket keeps a second orch out; this is only
    -- reached without it.
    S:log(string.format("state record of a live orch (pid %d): not taken over", prev.pid))
    P.closed = true
    return
  end
  -- The holder: ours from now on, with the pipes it kept.
  local h = type(rec.holder) == "table" and rec.holder or nil
  if not (h and holder.alive(h)) then
    -- The holder the record names is gone (or none is named), but another
    -- may be bound at the holder's path: the one the killed orch started
    -- when the first ended, if the record naming it could not be written
    -- (a full disk) or orch was killed first. It holds the pipes.
    h = {}
  end
  local pipes = {}
  local named, answered = type(rec.holder) == "table", false
  if not orch.current() then
    if h.pid then
      S:log("fd holder (pid " .. h.pid .. "): sup.run was not called from a task: its pipes cannot be fetched")
    end
  else
    local got, herr, hcode = holder.hello(P, h)
    -- Out of fds for the pipes (or to ask): never a reason to kill the
    -- holder and lose them. Asked again once fds are free.
    while not got and short_of_fds(hcode) do
      persist.wait_fds(S, TAKEOVER_FDS, "taking the log pipes from the fd holder")
      got, herr, hcode = holder.hello(P, h)
    end
    if got then
      P.holder = h
      for name, e in pairs(got) do P.held[name] = e.pid end
      pipes, answered = got, true
    elseif hcode == "ENOTHOLDER" then
      -- Not ours to signal: its pipes (none) are lost, and no holder of
      -- ours can bind the path while it holds it.
      S:log("fd holder: " .. herr)
    elseif h.pid then
      -- A holder we cannot talk to (stopped, wedged) only keeps its name
      -- from a new one; the pipes it holds are lost to us anyway.
      S:log("fd holder (pid " .. h.pid .. "): " .. tostring(herr) .. ": killing it")
      holder.kill(h)
    end
  end
  -- The heartbeat tables the killed orch created are ours to remove.
  for _, k in ipairs(type(rec.heartbeat_tables) == "table" and rec.heartbeat_tables or {}) do
    if math.type(k) == "integer" and S:heartbeat_table(k) then S.created_tables[k] = true end
  end
  if reexec then
    for _, e in pairs(pipes) do e.stream:close() end
    return
  end
  local inherited, n = {}, 0
  local wall = orch.time()
  for _, e in ipairs(rec.instances) do
    if type(e) == "table" and type(e.name) == "string" then
      local p = pipes[e.name]
      pipes[e.name] = nil
      if e.pid == nil then
        -- No process: its counters and state go on (handoff.resume).
        local left = tonumber(e.backoff_at) and math.max(0, e.backoff_at - wall) or nil
        inherited[e.name] = {
          name = e.name, want = e.want == true, state = type(e.state) == "string" and e.state or "stopped",
          restarts = math.tointeger(e.restarts), fails = math.tointeger(e.fails),
          exit_code = math.tointeger(e.exit_code), exit_signal = e.exit_signal, backoff_left = left,
        }
        n = n + 1
      elseif not still_there(S, e.pid, e.pid_start) then
        -- Ended meanwhile, or its pid now names an unrelated process: not
        -- ours to adopt or to signal. It ended while no orch watched: that
        -- counts as a restart, as an exit during `orch ctl reexec` does.
        if p then p.stream:close() end
        if math.type(e.pid) == "integer" then
          S:log(string.format("%s: pid %d of the state record is gone", e.name, e.pid))
        end
        inherited[e.name] = { name = e.name, want = e.want == true, state = "running",
                              restarts = math.tointeger(e.restarts), ended_unwatched = true }
        n = n + 1
      else
        local x = {
          name = e.name, pid = e.pid, pid_start = e.pid_start, want = e.want == true,
          restarts = math.tointeger(e.restarts), start_time = tonumber(e.start_time),
          uptime = tonumber(e.started_at) and math.max(0, wall - e.started_at) or 0,
          def = e.def, killed = true,
        }
        if e.log then
          if p and p.pid == e.pid and p.start == e.pid_start then
            x.log_stream = p.stream
          else
            if p then p.stream:close() end
            -- Why, truthfully: a holder answered without this pipe (orch
            -- was killed before it went: the moments between a spawn and
            -- its datagram, or before a holder had bound its socket), or
            -- none answered (the one the record names is gone, or there
            -- was none yet).
            x.lost_log = answered and "unsent" or named and "gone" or "none"
          end
        end
        inherited[e.name] = x
        n = n + 1
      end
    end
  end
  for _, p in pairs(pipes) do p.stream:close() end
  if n > 0 then S.inherited = inherited end
end

--- A clean end (every service stopped): the holder exits, the record goes.
function persist.close(S)
  local P = S.persist
  if not P or P.closed then return end
  P.closed = true
  if P.timer then P.timer:stop() P.timer = nil end
  holder.close(P, S)
  os.remove(P.state_path)
  os.remove(P.journal_path)
  if P.owner_path then os.remove(P.owner_path) end
end

return persist
