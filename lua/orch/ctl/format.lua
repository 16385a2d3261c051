--- orch.ctl.format: the status table of `orch ctl status`, made in one
-- place for both sides of the control socket: the client makes it from a
-- reply's status records (orch.cmd.ctl's format_status), and the
-- supervisor straight from its instances when the client asks for the
-- table (a status of 10,000 services then decodes no record per service:
-- orch.supervisor.status). Plain string work; the supervisor's side of
-- 10,000 services is made in C (status_table and status_json below,
-- src/l_fmt.c).
local M = {}

local format, tointeger = string.format, math.tointeger

--- Seconds as "H:MM:SS" ("Nd H:MM:SS" past a day), "-" for no number.
function M.duration(s)
  if type(s) ~= "number" then return "-" end
  s = math.floor(s)
  local d, h, m = s // 86400, (s // 3600) % 24, (s // 60) % 60
  if d > 0 then return format("%dd %d:%02d:%02d", d, h, m, s % 60) end
  return format("%d:%02d:%02d", h, m, s % 60)
end

local UNITS = { "B", "K", "M", "G", "T" }
--- Bytes as "512B", "2.0K", "1.5M", ...; "-" for no number.
function M.bytes(n)
  if type(n) ~= "number" then return "-" end
  local i = 1
  while n >= 1024 and i < #UNITS do n = n / 1024 i = i + 1 end
  return i == 1 and format("%d%s", n, UNITS[i]) or format("%.1f%s", n, UNITS[i])
end

-- Columns of cells (each a list: its header, then one cell a row) as lines
-- of aligned columns, two spaces apart (the last column is not padded).
-- Column by column, and one string.format a line: a status of 10,000
-- services makes no table per row.
local NONE = {}
function M.align(cols)
  local ncol = #cols
  local widths, parts = {}, {}
  -- string.format takes widths up to 99 and strings without zero bytes:
  -- a line it refuses is padded by hand.
  local by_hand = ncol > 10
  for c = 1, ncol - 1 do
    local w = 0
    for _, v in ipairs(cols[c]) do if #v > w then w = #v end end
    widths[c] = w
    if w > 99 then by_hand = true end
    parts[c] = "%-" .. w .. "s"
  end
  parts[ncol] = "%s"
  local f = table.concat(parts, "  ")
  local c1, c2, c3, c4, c5, c6, c7, c8, c9, c10 = cols[1], cols[2] or NONE, cols[3] or NONE, cols[4] or NONE,
    cols[5] or NONE, cols[6] or NONE, cols[7] or NONE, cols[8] or NONE, cols[9] or NONE, cols[10] or NONE
  local out = {}
  for i = 1, #c1 do
    local ok, line = false, nil
    if not by_hand then ok, line = pcall(format, f, c1[i], c2[i], c3[i], c4[i], c5[i], c6[i], c7[i], c8[i], c9[i], c10[i]) end
    if not ok then
      local cells = {}
      for c = 1, ncol do
        local v = cols[c][i]
        cells[c] = c < ncol and (v .. string.rep(" ", widths[c] - #v)) or v
      end
      line = table.concat(cells, "  ")
    end
    out[i] = line
  end
  return out
end

local duration, bytes = M.duration, M.bytes

--- A text cell of the table (a service's STATUS= text, a reason): its
-- white space folded to one space, and every other control character
-- (ESC, BEL, DEL; C1 controls as UTF-8) shown as "?": the text a service
-- sends reaches the terminal of whoever runs `orch ctl status` (root), where
-- an escape sequence would retitle, clear or rewrite the screen.
function M.cell(s)
  s = s:gsub("%s+", " ")
  if s:find("[%c\194]") then s = s:gsub("[%c]", "?"):gsub("\194[\128-\159]", "?") end
  return s
end
local cell = M.cell

--- The lines said once after the table: why services have no cgroups
-- (cgroup_off, a string), and where the limits of services with cgroup
-- limits are held (where = { v2 = set, v1 = set } of controller names).
function M.status_notes(cgroup_off, where)
  local out = {}
  if type(cgroup_off) == "string" then out[#out + 1] = "cgroups off: " .. cgroup_off end
  local parts = {}
  for _, v in ipairs { "v2", "v1" } do
    local names = {}
    for ctl in pairs(where and where[v] or {}) do names[#names + 1] = ctl end
    table.sort(names)
    if #names > 0 then
      parts[#parts + 1] = table.concat(names, ", ") .. (v == "v2" and " in cgroup v2" or " through cgroup v1")
    end
  end
  if #parts > 0 then out[#out + 1] = "cgroup controllers: " .. table.concat(parts, "; ") end
  return out
end

--- The status table's lines for n services: row(i) gives the i-th one's
-- name, state, exit_code, exit_signal, pid, uptime, restarts, rss, cpu,
-- oom_kills, reason, status_text (the fields of a status record).
-- cgroup_off: why services have no cgroups, said once at the end; where:
-- { v2 = set, v1 = set } of the controllers that hold the limits of
-- services with cgroup limits, said once after it.
function M.status_lines(n, row, cgroup_off, where)
  local names, states, pids, uptimes = { "NAME" }, { "STATE" }, { "PID" }, { "UPTIME" }
  local restarts, rss, cpu = { "RESTARTS" }, { "RSS" }, { "CPU" }
  -- Optional last columns, each shown when any service has a value for it:
  -- OOM kills inside a service's cgroup (services with a memory limit); why a
  -- service is not running (a spawn that failed for lack of fds, a start
  -- limit, a missed heartbeat); what a service says about itself (sd_notify
  -- STATUS=...).
  local ooms, reasons, texts = { "OOM" }, { "REASON" }, { "STATUS" }
  local any_oom, any_reason, any_text = false, false, false
  for i = 1, n do
    local name, st, code, sig, pid, up, starts, mem, secs, oom, why, text = row(i)
    local state = tostring(st or "?")
    -- The exit belongs to the last run: shown only while no new run is
    -- under way (never "starting (exit 0)").
    local ended = st == "exited" or st == "backoff" or st == "fatal" or st == "stopped"
    if ended and (code ~= nil or sig ~= nil) then
      state = state .. (sig and (" (signal " .. tostring(sig) .. ")") or (" (exit " .. tostring(code) .. ")"))
    end
    local r = i + 1
    names[r], states[r] = tostring(name or "?"), state
    pids[r] = pid and tostring(tointeger(pid) or pid) or "-"
    uptimes[r] = duration(up)
    restarts[r] = tostring(tointeger(starts) or starts or 0)
    rss[r] = bytes(mem)
    cpu[r] = type(secs) == "number" and format("%.2fs", secs) or "-"
    if type(oom) == "number" then
      ooms[r] = tostring(tointeger(oom) or oom)
      if oom > 0 then any_oom = true end
    else
      ooms[r] = "-"
    end
    if type(why) == "string" and st ~= "running" then
      reasons[r] = cell(why)
      any_reason = true
    else
      reasons[r] = "-"
    end
    if type(text) == "string" and text ~= "" then
      texts[r] = cell(text)
      any_text = true
    else
      texts[r] = "-"
    end
  end
  local cols = { names, states, pids, uptimes, restarts, rss, cpu }
  if any_oom then cols[#cols + 1] = ooms end
  if any_reason then cols[#cols + 1] = reasons end
  if any_text then cols[#cols + 1] = texts end
  local out = M.align(cols)
  for _, l in ipairs(M.status_notes(cgroup_off, where)) do out[#out + 1] = l end
  return out
end

--- The same table's lines (without the notes) made in C (orch.core.fmt):
-- format.status_table(n) is an empty table (n: the rows to come);
-- t:row(name, state, pid, uptime, restarts, rss, cpu, oom_kills, reason,
-- status_text) adds one (the state with " (exit N)" / " (signal S)"
-- already added, the reason only when shown and both texts with their
-- white space folded; false where absent); t:text() is the lines as one
-- string; t:close() lets the rows go. The supervisor renders 10,000
-- services with it (orch.supervisor.status), with no string per cell or
-- line; status_lines above stays the reference, and specs compare the two.
M.status_table = require("orch.core").fmt.table

--- The JSON array of a status's records, made in C the same way:
-- format.status_json(n) is an empty array; j:common(name, service, index,
-- state, pid, start_time, uptime, restarts, log_lines, log_dropped, rss,
-- accounting_age, cpu, cgroup, memory, tasks, oom_kills) adds the record
-- of a running service with its figures read (strings that need no
-- escape; the last three may be nil), j:raw(text) a record made by the
-- caller, j:text() the array's text, j:close() lets it go.
M.status_json = require("orch.core").fmt.json

return M
