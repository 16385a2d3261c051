--- orch.repl: the read-eval-print loop of `orch repl` and `orch attach`.
-- Lines are read with orch.term.readline, so the loop keeps running while
-- the prompt waits. A line is compiled as `return <line>` first, then as a
-- statement (like lua.c); a syntax error at <eof> asks for more lines. The
-- evaluation is pluggable: locally in a task (`orch repl`) or remotely over
-- the control socket (`orch attach`).
local M = {}

local orch = require "orch"

M.MAX_DEPTH = 4
M.MAX_ITEMS = 200
M.WIDTH = 78

---------------------------------------------------------------- pretty-printer

-- What quote writes for each byte it escapes (a table: gsub looks it up in
-- C, where a function cost a Lua call per byte: 1 MiB of control bytes
-- took 0.27 s); bytes from 128 up are kept as they are. Written out, not
-- made by a loop: this chunk runs where orch.repl is first required, under
-- whatever Lua time budget is set there (a loop over 128 bytes ran past
-- budget_spec's 10 us in a supervisor's start).
local ESCAPE = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\",
  ["\0"] = "\\0", ["\1"] = "\\1", ["\2"] = "\\2", ["\3"] = "\\3", ["\4"] = "\\4", ["\5"] = "\\5",
  ["\6"] = "\\6", ["\7"] = "\\7", ["\8"] = "\\8", ["\11"] = "\\11", ["\12"] = "\\12",
  ["\14"] = "\\14", ["\15"] = "\\15", ["\16"] = "\\16", ["\17"] = "\\17", ["\18"] = "\\18",
  ["\19"] = "\\19", ["\20"] = "\\20", ["\21"] = "\\21", ["\22"] = "\\22", ["\23"] = "\\23",
  ["\24"] = "\\24", ["\25"] = "\\25", ["\26"] = "\\26", ["\27"] = "\\27", ["\28"] = "\\28",
  ["\29"] = "\\29", ["\30"] = "\\30", ["\31"] = "\\31", ["\127"] = "\\127" }

local function quote(s)
  return '"' .. s:gsub('[%c"\\]', ESCAPE) .. '"'
end

-- A limit on the text made (opts.limit): o.left counts down what may still
-- be made, a lower bound of where each piece lands in the whole text (what
-- it counts is all there; indentation is not counted). Once it is spent
-- nothing more is made: a string is quoted only as far as the limit
-- reaches (without its closing quote), a table walked no further. Before,
-- `return {S}` with S 20 MB of byte 1 was quoted whole to show its first
-- MiB, and held orch's loop (every ctl client, the supervisor) 1.2 s.
-- What is made is the whole text's start (see M.pretty for why).

-- s, or its first o.left bytes when it is longer.
local function fit(o, s)
  local left = o.left
  if left == nil or #s <= left then return s end
  return s:sub(1, left > 0 and left or 0)
end

-- Counts s as made; s.
local function made(o, s)
  if o.left then o.left = o.left - #s end
  return s
end

-- True once nothing more may be made.
local function spent(o)
  return o.left ~= nil and o.left <= 0
end

local keywords = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
           repeat return then true until while]]):gmatch("%a+") do keywords[w] = true end

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil and not keywords[k]
end

local type_rank = { number = 1, string = 2, boolean = 3 }
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (type_rank[ta] or 9) < (type_rank[tb] or 9) or
    ((type_rank[ta] or 9) == (type_rank[tb] or 9) and ta < tb) end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

-- Sorts keys in key_less's order: numbers, strings, booleans, then the
-- rest by type name and tostring. Numbers and strings are sorted apart,
-- by table.sort's own `<` (in C), key_less only for the rest.
local function sort_keys(keys)
  local nums, strs, f, t, rest = {}, {}, false, false, {}
  for i = 1, #keys do
    local k = keys[i]
    local tk = type(k)
    if tk == "number" then nums[#nums + 1] = k
    elseif tk == "string" then strs[#strs + 1] = k
    elseif k == false then f = true
    elseif k == true then t = true
    else rest[#rest + 1] = k end
  end
  table.sort(nums)
  table.sort(strs)
  table.sort(rest, key_less)
  local i = 0
  for j = 1, #nums do i = i + 1 keys[i] = nums[j] end
  for j = 1, #strs do i = i + 1 keys[i] = strs[j] end
  if f then i = i + 1 keys[i] = false end
  if t then i = i + 1 keys[i] = true end
  for j = 1, #rest do i = i + 1 keys[i] = rest[j] end
end

local function has_tostring(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__tostring") ~= nil
end

local pretty_value

-- What a table shows: its own entries, or, when its metatable has a
-- __pairs (a proxy, such as the supervisor's read-only configuration
-- tables, empty themselves), what pairs gives (read raw, they showed as
-- {}); its own entries again when that __pairs fails. Of a proxy, at most
-- `max` entries are copied: the second result is false when it has more
-- (nil for a table read raw).
local function entries(t, max)
  local mt = getmetatable(t)
  if type(mt) ~= "table" or rawget(mt, "__pairs") == nil then return t end
  local ok, copy, whole = pcall(function()
    local c, count = {}, 0
    for k, v in pairs(t) do
      if count >= max then return c, false end
      count = count + 1
      c[k] = v
    end
    return c, true
  end)
  if ok then return copy, whole end
  return t
end

-- A table is shown as its array part (1 to its length) and then its other
-- keys, sorted, at most opts.items entries in all. Finding the smallest
-- keys of a table means looking at every one: sorting the million keys of
-- a table took 3.4 s and held orch's loop (`orch ctl eval 'return T'`:
-- every other client, the supervisor). So at most opts.walk keys are
-- looked at (next's order; 4 x items). A table that has no more shows as
-- before: every key sorted, the count of the rest exact. A bigger one
-- shows the first of its other keys that next gives (as many as there is
-- room for), sorted, and "... (at least N more)": N counts the array part
-- and the keys looked at, not the rest. The array part is never walked
-- past what is shown. So a table costs in proportion to what it shows.
local function pretty_table(t, depth, indent, seen, opts)
  if seen[t] then return made(opts, fit(opts, "<cycle " .. tostring(t) .. ">")) end
  if depth >= opts.depth then
    return made(opts, fit(opts, next((entries(t, 1))) == nil and "{}" or "{...}"))
  end
  local src, whole = entries(t, opts.walk)
  seen[t] = true
  -- "{ " or "{\n" before the first entry, ", " or ",\n" between two.
  made(opts, "{ ")
  local parts = {}
  local n = rawlen(src)
  local items = opts.items
  local count = 0
  for i = 1, n < items and n or items do
    if spent(opts) then break end
    count = count + 1
    if count > 1 then made(opts, ", ") end
    parts[#parts + 1] = pretty_value(rawget(src, i), depth + 1, indent .. "  ", seen, opts)
  end
  local shown_array = count
  -- The other keys: every one when the walk ends within opts.walk steps,
  -- else only the first ones that fit (the others just counted).
  local keys, others, complete = {}, 0, whole ~= false
  if not spent(opts) then
    local room, k, steps, walk = items - count, nil, 0, opts.walk
    while true do
      k = next(src, k)
      if k == nil then break end
      if steps >= walk then complete = false break end
      steps = steps + 1
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then
        others = others + 1
        keys[#keys + 1] = k
      end
    end
    if not complete then
      -- Only the first `room` of them are shown.
      for i = #keys, room + 1, -1 do keys[i] = nil end
    end
    if room > 0 then sort_keys(keys) end
  end
  for _, k in ipairs(keys) do
    if count >= items or spent(opts) then break end
    count = count + 1
    if count > 1 then made(opts, ", ") end
    local ks = is_identifier(k) and made(opts, fit(opts, k)) or
      ("[" .. pretty_value(k, depth + 1, indent .. "  ", seen, opts) .. "]")
    if spent(opts) then parts[#parts + 1] = ks break end
    parts[#parts + 1] = ks .. made(opts, " = ") .. pretty_value(rawget(src, k), depth + 1, indent .. "  ", seen, opts)
  end
  if not spent(opts) then
    local more = (n - shown_array) + (others - (count - shown_array))
    if not complete then
      parts[#parts + 1] = made(opts, fit(opts, "... (at least " .. more .. " more)"))
    elseif more > 0 then
      parts[#parts + 1] = made(opts, fit(opts, "... (" .. more .. " more)"))
    end
  end
  seen[t] = nil
  if #parts == 0 then return "{}" end
  local flat = "{ " .. table.concat(parts, ", ") .. " }"
  if #flat + #indent <= opts.width and not flat:find("\n", 1, true) then return flat end
  local inner = indent .. "  "
  return "{\n" .. inner .. table.concat(parts, ",\n" .. inner) .. "\n" .. indent .. "}"
end

function pretty_value(v, depth, indent, seen, opts)
  local tv = type(v)
  if tv == "string" then
    local f = fit(opts, v)
    local q = quote(f)
    return made(opts, #f < #v and q:sub(1, -2) or q)
  elseif tv == "table" and not has_tostring(v) then return pretty_table(v, depth, indent, seen, opts)
  elseif tv == "number" and math.type(v) == "float" and v == math.floor(v) and v == v
    and v > -0x1p53 and v < 0x1p53 then
    return made(opts, string.format("%.1f", v))
  end
  local ok, s = pcall(tostring, v)
  return made(opts, fit(opts, ok and tostring(s) or ("<" .. tv .. ": __tostring failed>")))
end

-- Raises "bad argument #n to 'fname' (<want> expected, got <type>)" unless
-- v's type is one of the `|`-separated names in want.
local function check_arg(fname, n, v, want)
  local t = type(v)
  for w in want:gmatch("[^|]+") do if t == w then return v end end
  error(("bad argument #%d to '%s' (%s expected, got %s)"):format(n, fname,
    (want:gsub("|nil$", ""):gsub("|", " or ")), v == nil and "no value" or t), 3)
end

local pretty_opts = { depth = "count", items = "count", width = "count", limit = "count" }
local function check_pretty_opts(fname, n, opts)
  require("orch.check").options(fname, n, opts, pretty_opts, 2)
end

-- The formatting state of one call: its options and, with a limit, what
-- may still be made. A table is laid out on one line when that line fits
-- `width`, so one cut short may fit where the whole one did not; each one
-- that does starts within `width` of where the cut is, so counting
-- `limit + width` keeps every difference past the first `limit` bytes.
local function state(opts)
  opts = opts or {}
  local o = { depth = opts.depth or M.MAX_DEPTH, items = opts.items or M.MAX_ITEMS,
              width = opts.width or M.WIDTH }
  -- How many keys of a table are looked at (see pretty_table).
  o.walk = o.items < math.maxinteger // 4 and math.max(4 * o.items, 1) or math.maxinteger
  if opts.limit then
    o.left = opts.limit < math.maxinteger - o.width - 1 and opts.limit + o.width + 1 or math.maxinteger
  end
  return o
end

--- Formats any value for display: strings quoted, tables expanded up to
-- `depth` levels (deeper ones shown as {...}), at most `items` entries per
-- table, cycles marked. With `limit`, formats only about `limit` bytes:
-- the text's first `limit` bytes are the whole text's, and it is longer
-- than `limit` when anything was left out.
function M.pretty(v, opts)
  check_pretty_opts("pretty", 2, opts)
  return pretty_value(v, 0, "", {}, state(opts))
end

--- Formats a packed list of results (t.n values) separated by tabs; "" when
-- there are none. `limit` bounds all of it, as for pretty.
function M.pretty_results(t, opts)
  check_arg("pretty_results", 1, t, "table")
  check_pretty_opts("pretty_results", 2, opts)
  local o = state(opts)
  local out = {}
  for i = 1, t.n or #t do
    if i > 1 then
      if spent(o) then break end
      made(o, "\t")
    end
    out[i] = pretty_value(t[i], 0, "", {}, o)
  end
  return table.concat(out, "\t")
end

--- An error value as a one-line-ish message.
function M.error_message(e)
  if type(e) == "string" then return e end
  if type(e) == "table" and not has_tostring(e) then return "(error object) " .. M.pretty(e) end
  local ok, s = pcall(tostring, e)
  return ok and s or "(error object is a " .. type(e) .. " value)"
end

---------------------------------------------------------------- compiling

--- Compiles a chunk as lua.c does: `return <code>` first, then `<code>`.
-- Returns fn, or nil, message, incomplete (true when the input ends inside
-- a statement and more lines may complete it).
function M.compile(code, chunkname, env)
  check_arg("compile", 1, code, "string")
  check_arg("compile", 2, chunkname, "string|nil")
  check_arg("compile", 3, env, "table|nil")
  chunkname = chunkname or "=stdin"
  env = env or _G
  local fn = load("return " .. code .. ";", chunkname, "t", env)
  if fn then return fn end
  local err
  fn, err = load(code, chunkname, "t", env)
  if fn then return fn end
  return nil, err, err:sub(-5) == "<eof>"
end

---------------------------------------------------------------- local evaluation

--- Runs fn in a new task and waits for it; Ctrl-C (SIGINT) cancels it.
-- Returns "ok", packed results | "error", message | "interrupted".
function M.run_task(fn)
  check_arg("run_task", 1, fn, "function")
  local t = orch.task(fn)
  local watcher = orch.task(function()
    if orch.term.wait_interrupt() then t:cancel() end
  end)
  local res = table.pack(pcall(t.join, t))
  watcher:cancel()
  if t:status() == "cancelled" then return "interrupted" end
  if not res[1] then return "error", M.error_message(res[2]) end
  return "ok", table.pack(table.unpack(res, 2, res.n))
end

--- The evaluator of `orch repl`: compiles and runs code in this Lua state.
-- Returns "incomplete" | "ok", text | "error", message | "interrupted".
function M.local_eval(code)
  check_arg("local_eval", 1, code, "string")
  local fn, err, incomplete = M.compile(code)
  if not fn then
    if incomplete then return "incomplete" end
    return "error", err
  end
  local how, r = M.run_task(fn)
  if how == "ok" then return "ok", M.pretty_results(r) end
  return how, r
end

---------------------------------------------------------------- the loop

local function history_path()
  local h = os.getenv("ORCH_HISTORY")
  if h then return h ~= "" and h or nil end
  local home = os.getenv("HOME")
  return home and home ~= "" and (home .. "/.orch_history") or nil
end

--- Reads, evaluates and prints until end of input.
-- opts: eval (function(code) as M.local_eval; default local), prompt ("> "),
-- prompt2 (">> "), history (a path, false for none; default
-- ~/.orch_history when interactive), banner (printed first when
-- interactive). Interactive when stdin is a terminal: prompts, line
-- editing, history, Ctrl-C cancels the line. Otherwise lines are read
-- without prompts and errors go to stderr.
-- Returns the number of lines that failed.
function M.loop(opts)
  check_arg("loop", 1, opts, "table|nil")
  opts = opts or {}
  local term = orch.term
  local eval = opts.eval or M.local_eval
  local interactive = opts.interactive
  if interactive == nil then interactive = term.isatty(0) end
  local p1 = interactive and (opts.prompt or "> ") or ""
  local p2 = interactive and (opts.prompt2 or ">> ") or ""
  local hist = nil
  if interactive and term.EDITLINE and opts.history ~= false then
    hist = opts.history or history_path()
    if hist then term.read_history(hist) end
  end
  local _ <close> = setmetatable({}, { __close = function()
    if hist then term.write_history(hist) end
  end })
  -- While a prompt is displayed, output of other tasks is written above it.
  local saved_print = print
  local _p <close> = setmetatable({}, { __close = function() _G.print = saved_print end })
  if interactive and term.EDITLINE then
    _G.print = function(...)
      local n = select("#", ...)
      local t = {}
      for i = 1, n do t[i] = tostring((select(i, ...))) end
      term.write(table.concat(t, "\t") .. "\n")
    end
  end
  local function out(s) term.write(s .. "\n") end
  local function err(s)
    if interactive then term.write(s .. "\n")
    else io.stderr:write(s, "\n") io.stderr:flush() end
  end
  if interactive and opts.banner then out(opts.banner) end
  local failures = 0
  local buffer = nil
  while true do
    local line, msg, code = term.readline(buffer and p2 or p1)
    if not line then
      if code == "EINTR" then
        buffer = nil
      elseif code == "EOF" then
        if buffer then
          local how, r = eval(buffer)
          if how == "incomplete" then
            -- Compile once more to get the message of the unfinished chunk.
            local _, e = M.compile(buffer)
            err(e or "unfinished input")
            failures = failures + 1
          elseif how == "error" then err(r) failures = failures + 1
          elseif how == "ok" and r ~= "" then out(r) end
        end
        break
      else
        err("orch: " .. tostring(msg))
        if code ~= "E2BIG" then failures = failures + 1 break end
        failures = failures + 1
      end
    else
      local code_text = buffer and (buffer .. "\n" .. line) or line
      if buffer == nil and line:match("^=") then code_text = "return " .. line:sub(2) end
      local how, r = eval(code_text)
      if how == "incomplete" then
        buffer = code_text
      else
        buffer = nil
        if hist and code_text:match("%S") then term.add_history(code_text) end
        if how == "ok" then
          if r ~= "" then out(r) end
        elseif how == "interrupted" then
          err("interrupted")
          failures = failures + 1
        else
          err(r)
          failures = failures + 1
        end
      end
    end
  end
  return failures
end

return M
