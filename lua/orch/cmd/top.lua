--- `orch top`: a live terminal view of a running orchestrator over its
-- control socket (see doc/ctl.md#orch-top): one row per service instance
-- (state, pid, CPU %, memory, restarts, uptime, reason), sparklines of CPU
-- and memory, the last output lines of the selected service, and keys to
-- restart, stop, start and tail it.
--
-- The screen is drawn with a few ECMA-48 sequences (alternate screen,
-- cursor home, erase to end of line, reverse video, optional colours) that
-- every terminal and tmux understand: the whole frame is built in memory
-- and written with one write, over the previous one (no clear: no
-- flicker). Keys are read through orch.term (raw mode, on the loop), the
-- size from orch.term.size and SIGWINCH. NO_COLOR or TERM=dumb: no colours
-- (the selection stays visible in reverse video).
local orch = require "orch"

local M = {}

M.summary = "live view of a running orchestrator's services (CPU, memory, logs)"

M.usage = [=[
usage: orch top [--socket PATH] [--trust-uid UID] [--interval SECONDS] [--once]

A live view of a running orchestrator: one row per service (state, pid,
CPU %, memory, restarts, uptime, reason), CPU and memory sparklines, and
the last output lines of the selected service.

Keys:
  Up/Down, k/j   select a service        r   restart it
  s              start it                x   stop it
  t              a taller log pane       q   quit (also Ctrl-C)

Options:
  --socket PATH     the control socket (as for orch ctl)
  --trust-uid UID   talk to an orchestrator running as UID (as for orch ctl)
  --interval S      seconds between refreshes (default 1)
  --once            print one plain frame (no escapes, no keys) and exit

Exit status: 0 ok, 2 usage error, 3 cannot connect.
]=]

local EXIT_USAGE, EXIT_CONNECT = 2, 3
local HISTORY = 120          -- samples kept per service (2 minutes at 1 s)

local SPARK = { "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█" }
local SPARK_ASCII = { "_", ".", "-", "~", "=", "+", "*", "#" }

-- ---------------------------------------------------------------- formatting

local function human_bytes(n)
  if not n then return "-" end
  local units = { "B", "K", "M", "G", "T" }
  local i = 1
  while n >= 1024 and i < #units do n = n / 1024 i = i + 1 end
  return (i == 1 or n >= 100) and string.format("%d%s", math.floor(n + 0.5), units[i])
    or string.format("%.1f%s", n, units[i])
end

local function human_time(s)
  if not s then return "-" end
  s = math.floor(s)
  if s < 60 then return s .. "s" end
  if s < 3600 then return string.format("%dm%02ds", s // 60, s % 60) end
  if s < 86400 then return string.format("%dh%02dm", s // 3600, s % 3600 // 60) end
  return string.format("%dd%02dh", s // 86400, s % 86400 // 3600)
end

-- Display width: one column per code point (names and text are ASCII or
-- narrow; sparkline blocks are narrow).
local function width(s) return utf8.len(s) or #s end

-- s cut or padded to exactly w columns.
local function fit(s, w, right)
  -- Control characters (C1 ones too, as UTF-8: U+009B is a CSI to some
  -- terminals) are spaces: a service's output reaches the screen.
  s = tostring(s):gsub("[%c]", " "):gsub("\194[\128-\159]", " ")
  local n = width(s)
  if n > w then
    local cut = utf8.offset(s, w + 1)
    return cut and s:sub(1, cut - 1) or s:sub(1, w)
  end
  local pad = string.rep(" ", w - n)
  return right and (pad .. s) or (s .. pad)
end

--- The sparkline of the last `w` values of `list` (scaled to their max, or
-- to `top` when larger).
function M.spark(list, w, top, ascii)
  local chars = ascii and SPARK_ASCII or SPARK
  local from = math.max(1, #list - w + 1)
  local max = top or 0
  for i = from, #list do if list[i] > max then max = list[i] end end
  local out = {}
  for i = from, #list do
    local v = list[i]
    local k = max > 0 and math.floor(v / max * (#chars - 1) + 0.5) + 1 or 1
    out[#out + 1] = chars[math.max(1, math.min(#chars, k))]
  end
  return string.rep(" ", w - #out) .. table.concat(out)
end

-- ---------------------------------------------------------------- the model

local function new_model()
  return { hist = {}, prev = {}, rows = {}, sel = 1, log = {}, msg = nil, tall = false }
end

--- Takes a status reply's service list into the model: CPU % from the
-- difference of CPU seconds between two samples of the same process.
function M.sample(model, services, now)
  local rows = {}
  for _, s in ipairs(services) do
    local name = s.name
    local h = model.hist[name] or { cpu = {}, mem = {} }
    model.hist[name] = h
    local prev = model.prev[name]
    local pct
    if s.pid and s.cpu and prev and prev.pid == s.pid and prev.cpu and now > prev.t then
      pct = math.max(0, (s.cpu - prev.cpu) / (now - prev.t) * 100)
    end
    model.prev[name] = { pid = s.pid, cpu = s.cpu, t = now }
    local mem = s.memory or s.rss
    h.cpu[#h.cpu + 1] = pct or 0
    h.mem[#h.mem + 1] = s.pid and mem or 0
    if #h.cpu > HISTORY then table.remove(h.cpu, 1) table.remove(h.mem, 1) end
    rows[#rows + 1] = { name = name, state = s.state, pid = s.pid, cpu = pct, mem = s.pid and mem or nil,
                        restarts = s.restarts or 0, uptime = s.uptime, reason = s.reason or s.status_text }
  end
  local selected = model.rows[model.sel] and model.rows[model.sel].name
  model.rows = rows
  model.sel = 1
  for i, r in ipairs(rows) do if r.name == selected then model.sel = i end end
end

local STATE_COLOR = { running = "32", starting = "33", stopping = "33", waiting = "33", backoff = "31",
                      fatal = "1;31", exited = "31", stopped = "2", frozen = "36" }

--- The frame: a list of exactly `rows` lines, each `cols` columns wide
-- (escapes aside). opts: { color, ascii, title, plain }.
function M.frame(model, rows, cols, opts)
  opts = opts or {}
  local lines = {}
  local function add(s) lines[#lines + 1] = s end
  local running = 0
  for _, r in ipairs(model.rows) do if r.state == "running" then running = running + 1 end end
  add(fit(string.format("orch top - %s - %d services, %d running - %s", opts.title or "",
    #model.rows, running, os.date("%H:%M:%S")), cols))
  local nw = 4
  for _, r in ipairs(model.rows) do nw = math.max(nw, width(r.name)) end
  nw = math.min(nw, 24)
  local spark_w = cols >= 110 and 16 or cols >= 90 and 10 or 0
  local function row_text(r)
    local cells = {
      fit(r.name, nw), fit(r.state, 8), fit(r.pid or "-", 7, true),
      fit(r.cpu and string.format("%.1f", r.cpu) or "-", 6, true), fit(human_bytes(r.mem), 7, true),
      fit(r.restarts, 4, true), fit(human_time(r.uptime), 7, true),
    }
    if spark_w > 0 then
      local h = model.hist[r.name]
      cells[#cells + 1] = M.spark(h and h.cpu or {}, spark_w, 100, opts.ascii)
      cells[#cells + 1] = M.spark(h and h.mem or {}, spark_w, nil, opts.ascii)
    end
    cells[#cells + 1] = r.reason or ""
    return fit(table.concat(cells, " "), cols)
  end
  local head = { fit("NAME", nw), fit("STATE", 8), fit("PID", 7, true), fit("CPU%", 6, true), fit("MEM", 7, true),
                 fit("RST", 4, true), fit("UPTIME", 7, true) }
  if spark_w > 0 then
    head[#head + 1] = fit("CPU", spark_w)
    head[#head + 1] = fit("MEMORY", spark_w)
  end
  head[#head + 1] = "REASON"
  add((opts.color and "\27[1m" or "") .. fit(table.concat(head, " "), cols) .. (opts.color and "\27[0m" or ""))

  -- The log pane: a third of the screen, or two thirds when tall.
  local log_rows = math.max(2, math.floor((rows - 4) * (model.tall and 2 / 3 or 1 / 3)))
  local list_rows = math.max(1, rows - 4 - log_rows)
  local first = 1
  if model.sel > list_rows then first = model.sel - list_rows + 1 end
  for i = first, first + list_rows - 1 do
    local r = model.rows[i]
    if not r then add(fit("", cols))
    else
      local text = row_text(r)
      if i == model.sel and not opts.plain then
        add("\27[7m" .. text .. "\27[0m")
      elseif opts.color and STATE_COLOR[r.state] then
        -- Only the state cell is coloured.
        local pre = nw + 1
        local cut = utf8.offset(text, pre + 1) or (#text + 1)
        local cut2 = utf8.offset(text, pre + 9) or (#text + 1)
        add(text:sub(1, cut - 1) .. "\27[" .. STATE_COLOR[r.state] .. "m" .. text:sub(cut, cut2 - 1) .. "\27[0m" ..
          text:sub(cut2))
      else
        add(text)
      end
    end
  end
  local sel = model.rows[model.sel]
  add(fit("-- " .. (sel and ("output of " .. sel.name) or "no service") .. " " .. string.rep("-", cols), cols))
  local log = model.log or {}
  local from = math.max(1, #log - log_rows + 1)
  for i = 1, log_rows do
    add(fit(log[from + i - 1] or "", cols))
  end
  local keys = "Up/Down select  r restart  s start  x stop  t tail  q quit"
  add(fit(model.msg and (model.msg .. "  |  " .. keys) or keys, cols))
  return lines
end

-- ---------------------------------------------------------------- options

function M.args(c)
  c:option("--socket"):argname("PATH")
  c:option("--trust-uid"):argname("UID")
  c:option("--interval"):argname("SECONDS")
  c:flag("--once")
end

-- Checks the values of the parsed options (orch.cli's result).
local function parse(p)
  local opts = { interval = 1, once = p.once, socket = p.socket }
  if opts.socket == "" then return nil, "--socket needs a path" end
  local terr
  opts.trust_uid, terr = require("orch.ctl.command").trust_uid(p.trust_uid)
  if terr then return nil, terr end
  if p.interval then
    local v = tonumber(p.interval)
    if not v or v < 0.1 or v > 3600 then return nil, "--interval needs seconds from 0.1 to 3600" end
    opts.interval = v
  end
  return opts
end

-- ---------------------------------------------------------------- main

function M.main(o)
  local opts, err = parse(o)
  if not opts then
    io.stderr:write("orch top: ", err, " (see 'orch help top')\n")
    return EXIT_USAGE
  end
  local ctl = require "orch.ctl"
  local path, perr, pcode = require("orch.cmd.ctl").find_socket(opts.socket)
  if not path then
    io.stderr:write("orch top: ", perr, "\n")
    return pcode or EXIT_CONNECT
  end
  local client, cerr = ctl.connect(path, 5, opts.trust_uid)
  if not client then
    io.stderr:write("orch top: cannot connect to ", path, ": ", tostring(cerr), "\n")
    return EXIT_CONNECT
  end
  local model = new_model()
  local term = orch.term
  local color = not os.getenv("NO_COLOR") and os.getenv("TERM") ~= "dumb"
  local ascii = not ((os.getenv("LC_ALL") or os.getenv("LC_CTYPE") or os.getenv("LANG") or ""):upper()
    :find("UTF%-?8"))

  local function refresh()
    local reply, rerr = client:request({ cmd = "status" }, 10)
    if not reply then return nil, rerr end
    if not reply.ok then return nil, reply.error end
    M.sample(model, reply.services or {}, orch.now())
    local sel = model.rows[model.sel]
    if sel then
      local t = client:request({ cmd = "tail", name = sel.name, lines = 50 }, 10)
      model.log = t and t.ok and t.lines or {}
    else
      model.log = {}
    end
    return true
  end

  local ok, rerr = refresh()
  if not ok then
    io.stderr:write("orch top: ", tostring(rerr), "\n")
    return EXIT_CONNECT
  end
  if opts.once then
    -- A plain frame: what a script or a bug report can hold.
    local cols = tonumber(os.getenv("COLUMNS")) or 120
    local rows = math.max(10, #model.rows + 10)
    orch.sleep(math.min(opts.interval, 1))
    refresh()                                -- a second sample: CPU % known
    io.stdout:write(table.concat(M.frame(model, rows, cols, { title = path, ascii = ascii, plain = true }), "\n"), "\n")
    client:close()
    return 0
  end

  local done = orch.cond()
  local quit = false
  local dirty = orch.cond()
  local function draw()
    local rows, cols = term.size(1)
    if not rows or rows < 5 or cols < 20 then rows, cols = 24, 80 end
    local lines = M.frame(model, rows, cols, { title = path, color = color, ascii = ascii })
    term.write("\27[H" .. table.concat(lines, "\27[K\r\n") .. "\27[K\27[J")
  end

  local function act(verb, name)
    model.msg = verb .. " " .. name .. " ..."
    dirty:signal()
    orch.task(function()
      local c = ctl.connect(path, 5, opts.trust_uid)
      local reply = c and c:request({ cmd = verb, name = name })
      if c then c:close() end
      model.msg = (reply and reply.ok) and (verb .. " " .. name .. ": done")
        or (verb .. " " .. name .. ": " .. tostring(reply and reply.error or "no answer"))
      dirty:signal()
    end)
  end

  local keys = {
    ["q"] = function() quit = true end,
    ["k"] = function() model.sel = math.max(1, model.sel - 1) end,
    ["j"] = function() model.sel = math.min(math.max(1, #model.rows), model.sel + 1) end,
    ["t"] = function() model.tall = not model.tall end,
  }
  keys["\27[A"], keys["\27OA"] = keys.k, keys.k
  keys["\27[B"], keys["\27OB"] = keys.j, keys.j
  for k, verb in pairs { r = "restart", s = "start", x = "stop" } do
    keys[k] = function()
      local sel = model.rows[model.sel]
      if sel then act(verb, sel.name) end
    end
  end

  term.raw(true)
  term.write("\27[?1049h\27[?25l")
  local tasks = {}
  local handlers = {}
  local function finish()
    quit = true
    done:broadcast()
  end
  for _, sig in ipairs { "INT", "TERM", "HUP" } do handlers[#handlers + 1] = orch.signal.on(sig, finish) end
  handlers[#handlers + 1] = orch.signal.on("WINCH", function() dirty:signal() end)

  tasks[#tasks + 1] = orch.task(function()             -- keys
    while not quit do
      local bytes = term.read()
      if not bytes then finish() return end
      -- One read may hold several keys; escape sequences stay whole.
      local i = 1
      while i <= #bytes do
        local k = bytes:match("^\27[%[O][%d;]*.", i) or bytes:sub(i, i)
        i = i + #k
        local f = keys[k]
        if f then f() end
      end
      if quit then finish() return end
      dirty:signal()
    end
  end)
  tasks[#tasks + 1] = orch.task(function()             -- samples
    while not quit do
      local rok, e = refresh()
      if not rok then model.msg = "lost the orchestrator: " .. tostring(e) end
      dirty:signal()
      orch.sleep(opts.interval)
    end
  end)
  tasks[#tasks + 1] = orch.task(function()             -- drawing
    while not quit do
      draw()
      dirty:wait()
    end
  end)

  local status = 0
  local wok, werr = pcall(function() done:wait() end)
  for _, t in ipairs(tasks) do if t ~= orch.current() then t:cancel() end end
  for _, hd in ipairs(handlers) do hd:stop() end
  term.write("\27[0m\27[?25h\27[?1049l")
  term.raw(false)
  client:close()
  if not wok then
    io.stderr:write("orch top: ", tostring(werr), "\n")
    status = 1
  end
  return status
end

return M
