--- orch.log: orch's own log records (the supervisor's lines, the
-- scheduler's, the watchdog's), in one place and one timestamp format:
-- RFC 3339 in UTC with milliseconds (2026-12-05T22:15:17.123Z).
--
-- A record goes to stderr as text (the default), as one JSON object per line
-- (`orch run --log-format json`, for container log collectors), or, when orch
-- runs under systemd with its stderr connected to the journal
-- (JOURNAL_STREAM names stderr's device and inode), to the journal through its native protocol: one
-- datagram per record to /run/systemd/journal/socket with MESSAGE, PRIORITY,
-- SYSLOG_IDENTIFIER and the record's fields (ORCH_SERVICE, ...). A datagram
-- that cannot be sent (no journald) falls back to the text line on stderr.
-- Nothing here waits: a write to stderr is one write(2), a datagram is sent
-- without waiting (a full journal queue drops it, as a full pipe would block
-- nothing).
local orch = require "orch"

local M = {}

-- syslog(3) priorities, by name.
local PRIORITY = { emerg = 0, alert = 1, crit = 2, err = 3, warning = 4, notice = 5, info = 6, debug = 7 }
local LEVEL = {}
for k, v in pairs(PRIORITY) do LEVEL[v] = k end

local state = { format = nil, journal = nil }

--- The journal's socket: $ORCH_JOURNAL_SOCKET, else systemd's.
local function journal_socket()
  local p = os.getenv("ORCH_JOURNAL_SOCKET")
  if p and p ~= "" then return p end
  return "/run/systemd/journal/socket"
end

--- Whether stderr is the journal's stream: JOURNAL_STREAM holds the
-- "device:inode" systemd gave the stream it connected, and it is inherited
-- by every descendant, also those whose stderr was redirected since
-- (systemd.exec(5) asks programs to compare it with fstat of stderr).
function M.stderr_is_journal(env)
  env = env or os.getenv("JOURNAL_STREAM")
  if type(env) ~= "string" then return false end
  local dev, ino = env:match("^(%d+):(%d+)$")
  if not dev then return false end
  local st = orch.fd.stat(2)
  return st ~= nil and tostring(st.dev) == dev and tostring(st.ino) == ino
end

-- The format in effect: configured, else the journal when JOURNAL_STREAM
-- says stderr goes to it, else text.
local function format()
  if state.format then return state.format end
  state.format = M.stderr_is_journal() and "journal" or "text"
  return state.format
end

--- log.configure{ format = "text" | "json" | "journal", journal_socket = path }
-- Changes where and how records go. Returns true.
function M.configure(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'configure' (table expected, got " .. type(opts) .. ")", 2) end
  for k, v in pairs(opts) do
    if k == "format" then
      if v ~= "text" and v ~= "json" and v ~= "journal" then
        error("bad argument #1 to 'configure' (option 'format': \"text\", \"json\" or \"journal\" expected)", 2)
      end
    elseif k == "journal_socket" then
      if type(v) ~= "string" or v == "" then error("bad argument #1 to 'configure' (option 'journal_socket': path expected)", 2) end
    else
      error("bad argument #1 to 'configure' (unknown option '" .. tostring(k) .. "')", 2)
    end
  end
  if opts.format then state.format = opts.format end
  if opts.journal_socket then state.journal_path = opts.journal_socket end
  return true
end

--- The format records are written in: "text", "json" or "journal".
function M.format() return format() end

-- One timestamp cache: the date part changes once a second.
local stamp_sec, stamp_str

--- log.timestamp([t]): t (seconds since the epoch, default now) as RFC 3339
-- in UTC with milliseconds: "2026-12-05T22:15:17.123Z".
function M.timestamp(t)
  t = t or orch.time()
  local sec = math.floor(t)
  local ms = math.floor((t - sec) * 1000)
  if ms > 999 then ms = 999 end
  if sec ~= stamp_sec then
    stamp_sec = sec
    stamp_str = os.date("!%Y-%m-%dT%H:%M:%S", sec)
  end
  return string.format("%s.%03dZ", stamp_str, ms)
end

-- A JSON string (no lua-cjson needed for the log).
local function jstr(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\"
    elseif c == "\n" then return "\\n" elseif c == "\t" then return "\\t"
    elseif c == "\r" then return "\\r" end
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

--- log.json(t): one JSON object of a flat table of strings, numbers and
-- booleans, keys sorted (the line a record is in --log-format json).
function M.json(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    -- time, level, source and message first: what a reader looks for.
    local order = { time = 1, level = 2, source = 3, service = 4, message = 5 }
    local oa, ob = order[a] or 9, order[b] or 9
    if oa ~= ob then return oa < ob end
    return a < b
  end)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    local js
    if type(v) == "number" then
      js = (v ~= v or v == math.huge or v == -math.huge) and "null"
           or (math.type(v) == "integer" and tostring(v) or string.format("%.17g", v))
    elseif type(v) == "boolean" then js = tostring(v)
    else js = jstr(v) end
    parts[#parts + 1] = jstr(k) .. ":" .. js
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- A journal field name: upper-case letters, digits and _, not starting with _.
local function field_name(k)
  local n = tostring(k):upper():gsub("[^A-Z0-9_]", "_"):gsub("^_+", "")
  if n == "" or n:match("^%d") then n = "F" .. n end
  return n
end

--- log.journal_datagram(fields): the native journal protocol's datagram for a
-- table of fields (a value holding a newline uses the binary form).
function M.journal_datagram(fields)
  local keys = {}
  for k in pairs(fields) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local v = tostring(fields[k])
    if v:find("\n", 1, true) then
      out[#out + 1] = k .. "\n" .. string.pack("<I8", #v) .. v .. "\n"
    else
      out[#out + 1] = k .. "=" .. v .. "\n"
    end
  end
  return table.concat(out)
end

local sender
local function send_journal(data)
  if not sender then
    local s, err = orch.dgram()
    if not s then return nil, err end
    sender = s
  end
  return sender:send(data, state.journal_path or journal_socket())
end

--- log.write(rec): writes one record. rec = { message = string, source =
-- "supervisor" | "scheduler" | ..., priority = "info" | "warning" | "err" |
-- ... (default "info"), service = NAME, and any other fields (strings or
-- numbers) }. Text: "TIME SOURCE: MESSAGE"; json: one object per line;
-- journal: a datagram (fields upper-cased, prefixed ORCH_ except MESSAGE,
-- PRIORITY, SYSLOG_IDENTIFIER). Returns true.
function M.write(rec)
  if type(rec) ~= "table" then error("bad argument #1 to 'write' (table expected, got " .. type(rec) .. ")", 2) end
  local msg = tostring(rec.message or "")
  local prio = rec.priority or "info"
  local pnum = type(prio) == "number" and prio or PRIORITY[prio]
  if not pnum then error("bad argument #1 to 'write' (unknown priority '" .. tostring(prio) .. "')", 2) end
  local source = rec.source or "orch"
  local f = format()
  if f == "journal" then
    local fields = { MESSAGE = msg, PRIORITY = pnum, SYSLOG_IDENTIFIER = rec.identifier or "orch" }
    for k, v in pairs(rec) do
      if k ~= "message" and k ~= "priority" and k ~= "identifier" then fields["ORCH_" .. field_name(k)] = v end
    end
    if send_journal(M.journal_datagram(fields)) then return true end
    f = "text"
  end
  if f == "json" then
    local t = { time = M.timestamp(rec.time), level = LEVEL[pnum] or tostring(pnum), message = msg }
    for k, v in pairs(rec) do
      if k ~= "message" and k ~= "priority" and k ~= "time" and k ~= "identifier" then t[k] = v end
    end
    io.stderr:write(M.json(t) .. "\n")
    return true
  end
  -- Text as text mode writes it (also a journal record no journal took): a
  -- service's output line is "NAME | LINE", as the supervisor's own output
  -- function writes it, not "TIME service: LINE" without the name.
  if rec.stream == "output" and rec.service then
    io.stderr:write(tostring(rec.service) .. " | " .. msg .. "\n")
    return true
  end
  io.stderr:write(M.timestamp(rec.time) .. " " .. source .. ": " .. msg .. "\n")
  return true
end

return M
