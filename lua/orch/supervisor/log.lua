--- orch.supervisor.log: a service's output, from its pipe to a file (with
-- size rotation) or to the supervisor's own log, through an optional
-- per-line filter, with an in-memory tail of the last lines.
--
-- Memory is bounded whatever the child writes: the reader takes one chunk
-- at a time from the pipe (at most the stream's read size), splits it into
-- lines of at most `max_line` bytes (longer lines are cut), and writes them
-- synchronously to the file before reading again, so a fast writer blocks in
-- the kernel's pipe buffer, never in orch. The tail keeps `tail` lines of at
-- most 2 KiB each.
--
-- Files are opened with orch.logfile.open (doc/security.md#log-files): never
-- through a symbolic link, only in a directory owned by orch's user, root or
-- the service's user, created with the `log.mode` bits (0640). Writes are
-- plain write(2) calls with no stdio buffer between, so a failed write (a
-- full disk) is seen at once: every line that did not reach the file is
-- counted in `dropped`, one notice per minute per service says so, and the
-- next batch tries again, so writing resumes by itself when space returns.
local orch = require "orch"

local log = {}

local TAIL_LINE_MAX = 2048
-- At most one "lines dropped" notice per service this often (seconds).
local NOTICE_EVERY = 60

local Sink = {}
Sink.__index = Sink
-- The counters (lines, dropped, the lines ever put in the tail's ring:
-- ringn) start at 0 here, in the class: a sink stores them once they
-- change (see log.sink).
Sink.lines, Sink.dropped, Sink.ringn = 0, 0, 0

--- A sink for one instance. cfg: the normalised `log` option; name: the
-- instance name (file name stem); sup: the supervisor (sup.output(name,
-- line) receives lines when no directory is configured, sup:log(msg) the
-- sink's own reports); owner: the service's user (uid or name), trusted to
-- own the log directory and file.
--
-- The file is open only while a batch of lines is written (one chunk read
-- from the pipe): an idle service holds no descriptor.
function log.sink(cfg, name, sup, owner)
  -- A table of up to 8 fields is half the size of one of 9 to 16 (whose
  -- 16-slot hash part, 384 bytes, comes from malloc), and thousands of
  -- services hold a sink each. Lua never shrinks a table's hash part when
  -- fields go back to nil, so the fields of a batch count too: a sink of a
  -- service that writes lines to a file holds cfg, name, sup, owner, lines,
  -- ringn and ring, and during a batch out (the open file, its size and
  -- the batch's lines in one table, dropped with the batch); dropped once a
  -- line was dropped, born only with max_age.
  return setmetatable({ cfg = cfg, name = name, sup = sup, owner = owner }, Sink)
end

function Sink:report(msg)
  self.sup:log(msg)
end

function Sink:path()
  return self.cfg.dir .. "/" .. self.name .. ".log"
end

--- Counts n lines that did not reach the file; the first drop (and then at
-- most one a minute) is reported with its reason.
function Sink:drop(n, why)
  self.dropped = self.dropped + n
  self.dropping = (self.dropping or 0) + n
  local now = orch.now()
  if not self.noticed or now - self.noticed >= NOTICE_EVERY then
    self.noticed = now
    self:report(string.format("%s: log lines dropped (%s): %d so far; writing resumes when it can",
      self.name, tostring(why), self.dropping))
  end
end

--- A batch reached the file after drops: say so once.
function Sink:resumed()
  if self.dropping then
    self:report(string.format("%s: log writes resumed (%d lines dropped)", self.name, self.dropping))
    self.dropping, self.noticed = nil, nil
  end
end

--- Opens the file for a batch: self.out = { f = file, size = its size
-- when opened, bytes = of the lines collected, the lines 1..n }.
function Sink:open()
  if self.out then return true end
  local f, err = orch.logfile.open(self:path(), { mode = self.cfg.mode, owner = self.owner })
  if not f then
    self.open_error = "cannot open " .. self:path() .. ": " .. tostring(err)
    return false
  end
  self.open_error = nil
  local size = f:size()
  self.out = { f = f, size = size, bytes = 0 }
  -- When this file began (for max_age): an empty file now; a file found
  -- with lines in it, no later than now.
  if self.cfg.max_age and (not self.born or size == 0) then self.born = orch.time() end
  return true
end

--- Writes the batch's lines to its file and closes it (the size is read
-- again at the next open).
function Sink:close()
  local out = self.out
  if not out then return end
  self.out = nil
  local count = #out
  if count > 0 then
    local n, err, _, written = out.f:write_lines(out)
    if n then
      self:resumed()
    else
      self:drop(count - written, err)
    end
  end
  out.f:close()
end

--- Renames name.log -> name.log.1 -> ... -> name.log.<keep> (the oldest is
-- overwritten) and reopens name.log empty. The directory was checked by the
-- open a moment ago, and rename(2) moves a symbolic link, never its target.
function Sink:rotate()
  self:close()
  self.born = nil
  local keep, p = self.cfg.keep, self:path()
  if keep == 0 then
    os.remove(p)
  else
    for i = keep - 1, 1, -1 do os.rename(p .. "." .. i, p .. "." .. (i + 1)) end
    os.rename(p, p .. ".1")
  end
  return self:open()
end

-- The one timestamp format of orch's logs (orch.log: RFC 3339, UTC, ms).
local timestamp = require("orch.log").timestamp
local function stamp() return timestamp() .. " " end

--- Handles one line (without its newline).
function Sink:line(text)
  self.lines = self.lines + 1
  local filter = self.cfg.filter
  if filter then
    local ok, r = pcall(filter, text, self.name)
    if not ok then
      local n = (self.filter_errors or 0) + 1
      self.filter_errors = n
      -- One report per power of two keeps a broken filter visible but quiet.
      if n & (n - 1) == 0 then
        self:report(string.format("%s: log filter failed (%d times): %s", self.name, n, tostring(r)))
      end
    elseif r == nil or r == false then
      return
    elseif type(r) == "string" then
      text = r
    end
  end
  if self.followers then
    for fn in pairs(self.followers) do
      local ok, err = pcall(fn, text)
      if not ok then
        self.followers[fn] = nil
        self:report(string.format("%s: log follower failed (removed): %s", self.name, tostring(err)))
      end
    end
  end
  local cap = self.cfg.tail
  if cap > 0 then
    local ringn = self.ringn
    local ring = self.ring
    if not ring then
      ring = {}
      self.ring = ring
    end
    ring[ringn % cap + 1] = #text > TAIL_LINE_MAX and text:sub(1, TAIL_LINE_MAX) or text
    self.ringn = ringn + 1
  end
  if self.cfg.timestamps then text = stamp() .. text end
  if not self.cfg.dir then
    if not pcall(self.sup.output, self.name, text) then self.dropped = self.dropped + 1 end
    return
  end
  if not self.out and not self:open() then
    self:drop(1, self.open_error)
    return
  end
  local out = self.out
  local n = #text + 1
  local size = out.size + out.bytes
  -- Rotated by size, or by age (max_age: the file began that long ago).
  local age = self.cfg.max_age
  if size > 0 and (size + n > self.cfg.max_bytes or (age and orch.time() - (self.born or orch.time()) >= age)) then
    if not self:rotate() then
      self:drop(1, self.open_error)
      return
    end
    out = self.out
  end
  out[#out + 1] = text
  out.bytes = out.bytes + n
end

--- End of a batch: the lines go to the file now, and the file is closed.
function Sink:flush()
  self:close()
end

--- Calls fn(line) for every line from now on (after the filter, before
-- timestamps); returns a function that stops it.
function Sink:follow(fn)
  self.followers = self.followers or {}
  self.followers[fn] = true
  return function()
    if self.followers then self.followers[fn] = nil end
  end
end

--- The last n lines (all kept lines when n is nil), oldest first.
function Sink:tail(n)
  local cap, ringn = self.cfg.tail, self.ringn
  local count = ringn < cap and ringn or cap
  if not n or n > count then n = count end
  local out = {}
  for i = n - 1, 0, -1 do
    out[#out + 1] = self.ring[(ringn - 1 - i) % cap + 1]
  end
  return out
end

-- A capture's state, one fixed-size list per captured pipe (thousands of
-- services hold one each): the sink, the stream, the end callback and its
-- argument, and the start of a line the last chunk cut.
local C_SINK, C_STREAM, C_END, C_ARG, C_PARTIAL = 1, 2, 3, 4, 5

local function captured(c, chunk)
  local sink, partial = c[C_SINK], c[C_PARTIAL]
  if not chunk then
    if #partial > 0 then sink:line(partial) end
    c[C_PARTIAL] = ""
    sink:flush()
    c[C_STREAM]:close()
    local on_end = c[C_END]
    if on_end then on_end(c[C_ARG]) end
    return
  end
  local max = sink.cfg.max_line
  local data = partial .. chunk
  local pos = 1
  while true do
    local nl = data:find("\n", pos, true)
    if not nl then break end
    if nl - pos > max then
      -- A cut line: the pieces become lines of their own.
      for i = pos, nl - 1, max do sink:line(data:sub(i, math.min(i + max - 1, nl - 1))) end
    else
      sink:line(data:sub(pos, nl - 1))
    end
    pos = nl + 1
  end
  while #data - pos + 1 > max do
    sink:line(data:sub(pos, pos + max - 1))
    pos = pos + max
  end
  c[C_PARTIAL] = data:sub(pos)
  sink:flush()
end

--- Copies `stream` into the sink line by line until EOF (or a read error),
-- then closes the stream and calls on_end(arg). The stream calls back with
-- each chunk (stream:on_read) and reads the next only once the chunk's
-- lines are written: an idle service costs its state list (passed to
-- `captured` by the stream: no closure), no task and no buffer.
function log.capture(sink, stream, on_end, arg)
  stream:on_read(captured, { sink, stream, on_end or false, arg or false, "" })
end

--- Reopens the log file of every sink in the list (SIGUSR1, for logrotate
-- without copytruncate): each file sink closes its file, so that its next
-- line opens the path again (the file logrotate moved away is released).
function log.reopen(sinks)
  for _, sink in ipairs(sinks) do
    if sink.cfg.dir then
      sink:close()
    end
  end
end

-- ---------------------------------------------------------------- own lines

--- One log record is one line: a message holding newlines (a Lua traceback
-- from a hook, an error quoting a service's output) has them escaped as
-- "\\n" (tabs "\\t", other control bytes "\\xNN"), so that a record never
-- spans lines and nothing it quotes can forge another record.
function log.one_line(msg)
  msg = tostring(msg)
  if not msg:find("%c") then return msg end
  return (msg:gsub("%c", function(c)
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    return string.format("\\x%02x", c:byte())
  end))
end

-- A crash loop: at most loop_burst restarts of an instance are logged per
-- loop_window seconds; the others are counted and summed up in one line.
-- (Module fields, so that a spec can shorten them.)
log.loop_window, log.loop_burst = 60, 10

--- Ends the instance's crash-loop window if its time is over, logging the
-- summary when restarts went unlogged: "web: 218 restarts in the last 60 s
-- (208 not logged)". Called before each of the instance's own lines.
function log.loop_summary(inst)
  local l = inst.loop_log
  if not l or orch.now() - l.start < l.window then return l end
  inst.loop_log = nil
  if l.hidden > 0 then
    inst.sup:log(string.format("%s: %d restarts in the last %d s (%d not logged)",
      inst.name, l.count, l.window, l.hidden), inst)
  end
  return nil
end

--- The lines of one restart of `inst` (its exit line, an error, the
-- decision; nils skipped): logged for the first loop_burst restarts of a
-- window, then only counted until the window ends.
function log.restart(inst, ...)
  local l = log.loop_summary(inst)
  if not l then
    l = { start = orch.now(), count = 0, hidden = 0, window = log.loop_window, burst = log.loop_burst }
    inst.loop_log = l
  end
  l.count = l.count + 1
  if l.count > l.burst then
    l.hidden = l.hidden + 1
    return
  end
  for i = 1, select("#", ...) do
    local line = select(i, ...)
    if line then inst.sup:log(inst.name .. ": " .. line, inst) end
  end
  if l.count == l.burst then
    inst.sup:log(string.format("%s: %d restarts within %d s: the next ones in this window are counted, not logged",
      inst.name, l.burst, l.window), inst)
  end
end

return log
