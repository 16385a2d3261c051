--- orch.supervisor.log: a service's output, from its pipe to a file (with
-- size rotation) or to the supervisor's own log, through an optional
-- per-line filter, with an in-memory tail of the last lines.
--
-- Memory is bounded whatever the child writes: the reader takes one chunk
-- at a time from the pipe (at most the stream's read size), splits it into
-- lines of at most `max_line` bytes (longer lines are cut), and writes them
-- synchronously to the file before reading again, so a fast writer blocks in
-- the kernel's pipe buffer, never in orch. A write that fails (disk full) is
-- dropped and counted. The tail keeps `tail` lines of at most 2 KiB each.
local orch = require "orch"

local log = {}

local TAIL_LINE_MAX = 2048

local Sink = {}
Sink.__index = Sink

--- A sink for one instance. cfg: the normalised `log` option; name: the
-- instance name (file name stem); sup: the supervisor (sup.output(name,
-- line) receives lines when no directory is configured, sup:log(msg) the
-- sink's own reports).
--
-- The file is open only while a batch of lines is written (one chunk read
-- from the pipe): an idle service holds no FILE and no stdio buffer.
function log.sink(cfg, name, sup)
  return setmetatable({ cfg = cfg, name = name, sup = sup, lines = 0, dropped = 0, rpos = 0, rcount = 0 }, Sink)
end

function Sink:report(msg)
  self.sup:log(msg)
end

function Sink:path()
  return self.cfg.dir .. "/" .. self.name .. ".log"
end

function Sink:open()
  if self.f then return true end
  local f, err = io.open(self:path(), "ab")
  if not f then
    if not self.open_failed then
      self:report(string.format("%s: cannot open log file: %s", self.name, err))
    end
    self.open_failed = true
    return false
  end
  self.open_failed = nil
  self.f = f
  self.size = f:seek("end") or 0
  return true
end

function Sink:close()
  if self.f then
    if not self.f:flush() then self.dropped = self.dropped + 1 end
    self.f:close()
    self.f = nil
  end
end

--- Renames name.log -> name.log.1 -> ... -> name.log.<keep> (the oldest is
-- overwritten) and reopens name.log empty.
function Sink:rotate()
  self:close()
  local keep, p = self.cfg.keep, self:path()
  if keep == 0 then
    os.remove(p)
  else
    for i = keep - 1, 1, -1 do os.rename(p .. "." .. i, p .. "." .. (i + 1)) end
    os.rename(p, p .. ".1")
  end
  return self:open()
end

-- One timestamp cache for every sink: the date part changes once a second.
local stamp_sec, stamp_str
local function stamp()
  local now = orch.time()
  local sec = math.floor(now)
  if sec ~= stamp_sec then
    stamp_sec = sec
    stamp_str = os.date("!%Y-%m-%dT%H:%M:%S", sec)
  end
  return string.format("%s.%03dZ ", stamp_str, math.floor((now - sec) * 1000))
end

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
    local pos = self.rpos % cap + 1
    local ring = self.ring
    if not ring then
      ring = {}
      self.ring = ring
    end
    ring[pos] = #text > TAIL_LINE_MAX and text:sub(1, TAIL_LINE_MAX) or text
    self.rpos = pos
    if self.rcount < cap then self.rcount = self.rcount + 1 end
  end
  if self.cfg.timestamps then text = stamp() .. text end
  if not self.cfg.dir then
    if not pcall(self.sup.output, self.name, text) then self.dropped = self.dropped + 1 end
    return
  end
  if not self.f and not self:open() then
    self.dropped = self.dropped + 1
    return
  end
  local n = #text + 1
  if self.size > 0 and self.size + n > self.cfg.max_bytes then
    if not self:rotate() then
      self.dropped = self.dropped + 1
      return
    end
  end
  if self.f:write(text, "\n") then
    self.size = self.size + n
  else
    self.dropped = self.dropped + 1
  end
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
  local cap, count = self.cfg.tail, self.rcount
  if not n or n > count then n = count end
  local out = {}
  for i = n - 1, 0, -1 do
    out[#out + 1] = self.ring[(self.rpos - 1 - i) % cap + 1]
  end
  return out
end

--- Copies `stream` into the sink line by line until EOF (or a read error),
-- then closes the stream and calls on_end(). The stream calls back with each
-- chunk (stream:on_read) and reads the next only once the chunk's lines are
-- written: an idle service costs this closure, no task and no buffer.
function log.capture(sink, stream, on_end)
  local max = sink.cfg.max_line
  local partial = ""
  stream:on_read(function(chunk)
    if not chunk then
      if #partial > 0 then sink:line(partial) end
      partial = ""
      sink:flush()
      stream:close()
      if on_end then on_end() end
      return
    end
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
    partial = data:sub(pos)
    sink:flush()
  end)
end

--- Reopens the log file of every sink in the list (SIGUSR1, for logrotate
-- without copytruncate): each file sink closes its file, so that its next
-- line opens the path again (the file logrotate moved away is released).
function log.reopen(sinks)
  for _, sink in ipairs(sinks) do
    if sink.cfg.dir then
      sink:close()
      sink.open_failed = nil
    end
  end
end

return log
