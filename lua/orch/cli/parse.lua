--- orch.cli.parse: the parser of the `orch` command line (lua-argparse),
-- loaded only for the lines that need it (orch.cli.plan reads a plain `orch
-- ctl` line without it, see orch.ctl.command): every command's parser, the
-- help texts, usage errors with "did you mean", the tail of words a script
-- or program keeps as its own. orch.cli forwards its parser functions here;
-- the parsers it builds are kept on orch.cli (_parser, _lone), which lets
-- them go (release_parser) once a command runs.
local cli = require "orch.cli"

local M = {}

local function load_command(name)
  local ok, m = pcall(require, "orch.cmd." .. name)
  if not ok then error(m, 0) end
  return m
end

-- A usage error or a help request, raised out of argparse and caught in
-- M.parse: { usage = message, cmd = command } or { help = command }.
local function help_flag(cmd)
  cmd:flag("-h --help"):description("Show the help and exit."):action(function()
    error({ help = cmd }, 0)
  end)
end

-- A parser of `orch` with the commands `names` (a list).
local function build_parser(names)
  local ok, argparse = pcall(require, "argparse")
  if not ok then
    -- (Out of file descriptors, it is not missing: the searchers say so.)
    if tostring(argparse):find("no file could be opened", 1, true) then error(tostring(argparse), 0) end
    error("lua-argparse is not installed (apt-get install lua-argparse): " .. tostring(argparse), 0)
  end
  local p = argparse("orch"):add_help(false):command_target("command"):require_command(false)
  p._orch_name = nil
  help_flag(p)
  p:flag("-v --version"):description("Print the versions and exit.")
  for _, name in ipairs(names) do
    local m = load_command(name)
    local c = p:command(name):add_help(false)
    if cli.hidden[name] then c:hidden(true) end
    c._orch_name, c._orch_module = name, m
    help_flag(c)
    if m.args then m.args(c, help_flag) end
  end
  return p
end

--- The parser of `orch` and every command (argparse objects). Each command
-- parser carries `_orch_name` ("ctl") and `_orch_module`.
function M.parser()
  if cli._parser then return cli._parser end
  local names = { table.unpack(cli.commands) }
  for name in pairs(cli.hidden) do names[#names + 1] = name end
  cli._parser = build_parser(names)
  return cli._parser
end

-- The entries of a package.path or package.cpath that are absolute paths:
-- not the default's last ones, ./?.lua, ./?/init.lua and ./?.so.
local function absolute_only(path)
  local kept = {}
  for entry in path:gmatch("[^;]+") do
    if entry:sub(1, 1) == "/" then kept[#kept + 1] = entry end
  end
  return table.concat(kept, ";")
end

-- A command module outside the list (lua/orch/cmd/NAME.lua of the user's
-- own), added to the parser when it is named. One without `args` gets its
-- words verbatim: main(argv) as a list of strings. Found in orch's Lua
-- directories and through the absolute entries of package.path and
-- package.cpath, never relative to the current directory: `orch NAME`
-- typed in a directory another user may write to (/tmp), a typo
-- included, ran whatever that user had put at ./orch/cmd/NAME.lua.
local function add_extra(name)
  if not name:match("^[%l%d_]+$") then return nil end
  local path, cpath = package.path, package.cpath
  package.path, package.cpath = absolute_only(path), absolute_only(cpath)
  local ok, m = pcall(require, "orch.cmd." .. name)
  package.path, package.cpath = path, cpath
  if not ok then
    if tostring(m):find("no orch module 'orch.cmd.", 1, true) or tostring(m):find("module 'orch.cmd." .. name .. "' not found", 1, true) then
      return nil
    end
    error(m, 0)
  end
  if type(m) == "function" then m = { main = m } end
  if type(m) ~= "table" or type(m.main) ~= "function" then return nil end
  local c = cli._parser:command(name):add_help(false)
  c._orch_name, c._orch_module = name, m
  help_flag(c)
  if m.args then
    m.args(c, help_flag)
  else
    -- Everything after the command word is its own, as a list.
    local main = m.main
    c._orch_module = setmetatable({ tail = 0, verbatim = true, main = function(o) return main(o.args) end }, { __index = m })
    c:argument("ARGS"):target("args"):args("*")
  end
  return c
end

local function command_parser(name)
  for _, c in ipairs(M.parser()._commands) do
    if c._name == name then return c end
  end
  return add_extra(name)
end

-- The options an argparse command knows: alias -> takes a value.
local function option_arity(cmd)
  local t = {}
  for _, o in ipairs(cmd._options) do
    for _, a in ipairs(o._aliases) do t[a] = o._maxargs > 0 end
  end
  return t
end

--- Every option the parser knows, as { {command, option}, ... } (ctl's
-- subcommands as "ctl status"); the man page check reads this.
function M.options()
  local out = {}
  local function walk(cmd, path)
    for _, o in ipairs(cmd._options) do
      for _, a in ipairs(o._aliases) do
        if a:sub(1, 2) == "--" then out[#out + 1] = { path, a } end
      end
    end
    for _, c in ipairs(cmd._commands) do
      walk(c, path == "" and c._name or (path .. " " .. c._name))
    end
  end
  walk(M.parser(), "")
  return out
end

-- For a command with a verbatim tail (`run FILE ARGS...`): inserts "--"
-- before the first word of the tail, so argparse takes none of it as an
-- option. args: the words after the command word. Returns the new list and
-- the index of the tail's first word in `args` (nil when there is none).
local function split_tail(cmd, args, fixed)
  local arity = option_arity(cmd)
  local positionals, i = 0, 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      -- The user's own end of options: the tail starts after the fixed
      -- positionals that follow it.
      local start = i + 1 + (fixed - positionals)
      return args, start <= #args and start or nil
    elseif a:sub(1, 1) == "-" and #a > 1 then
      local name = a:match("^(%-%-[^=]+)=") or a
      if arity[name] and not a:find("=", 1, true) then i = i + 1 end
    else
      if positionals == fixed then
        local out = { table.unpack(args, 1, i - 1) }
        out[#out + 1] = "--"
        for j = i, #args do out[#out + 1] = args[j] end
        return out, i
      end
      positionals = positionals + 1
    end
    i = i + 1
  end
  return args, nil
end

-- An option's value that starts with "-" (`--timeout -1`, `-n -5`) would be
-- read as an option: it is joined to its option (`--timeout=-1`, `-n-5`)
-- so that the option's own check reports it. cmd: the command's parser
-- (its options and its subcommands' count).
local function join_values(p, cmd, args)
  local arity = option_arity(p)
  if cmd then
    for k, v in pairs(option_arity(cmd)) do arity[k] = v end
    for _, sc in ipairs(cmd._commands) do
      for k, v in pairs(option_arity(sc)) do arity[k] = arity[k] or v end
    end
  end
  local out, i = {}, 1
  while i <= #args do
    local a = args[i]
    if a == "--" then
      table.move(args, i, #args, #out + 1, out)
      break
    end
    local nxt = args[i + 1]
    if arity[a] and nxt and nxt:sub(1, 1) == "-" and #nxt > 1 and nxt ~= "--" then
      out[#out + 1] = a:sub(1, 2) == "--" and (a .. "=" .. nxt) or (a .. nxt)
      i = i + 2
    else
      out[#out + 1] = a
      i = i + 1
    end
  end
  return out
end

-- argparse's "msg\nDid you mean 'x'?" as one line.
local function one_line(msg)
  local head, tip = tostring(msg):match("^(.-)\nDid you mean (.*)%?$")
  if head then return head .. " (did you mean " .. tip .. "?)" end
  return (tostring(msg):gsub("\n", " "))
end

local parse_with

-- The index in argv of the command word: the first word that is not an
-- option of `orch`.
local function command_index(argv)
  for i, a in ipairs(argv) do
    if a == "--" then break end
    if a:sub(1, 1) ~= "-" or a == "-" then return i end
  end
end

--- orch.cli.parse(argv) once a plain `orch ctl` line was not read without
-- argparse (see there).
function M.parse(argv)
  local ci = command_index(argv)
  local name = ci and argv[ci]
  -- A command line that parses needs only its own command's module: `orch
  -- ctl ping` does not load the other commands (start-up time). Help and
  -- usage errors (which may name other commands) come from the whole parser.
  local known = name and cli.hidden[name]
  for _, c in ipairs(cli.commands) do known = known or c == name end
  if known then
    local lone = build_parser({ name })
    local kind, o, m, tail = parse_with(argv, lone, ci, function(n)
      for _, c in ipairs(lone._commands) do
        if c._name == n then return c end
      end
    end)
    if kind == "ok" then
      cli._lone = lone
      return kind, o, m, tail
    end
  end
  return parse_with(argv, M.parser(), ci, command_parser)
end

--- For the specs: M.parse with argparse alone (no fast reading of a ctl line).
function M._parse_argparse(argv)
  return parse_with(argv, M.parser(), command_index(argv), command_parser)
end

-- M.parse with the parser p, whose command `lookup(name)` finds.
function parse_with(argv, p, ci, lookup)
  local args = { table.unpack(argv) }
  local name = ci and args[ci]
  local cmd = name and lookup(name)
  local m = cmd and cmd._orch_module
  local tail
  if m and m.tail then
    local rest = { table.unpack(args, ci + 1) }
    local split, t
    if m.verbatim and rest[1] ~= "-h" and rest[1] ~= "--help" then
      split, t = { "--", table.unpack(rest) }, #rest > 0 and 1 or nil
    else
      split, t = split_tail(cmd, rest, m.tail)
    end
    if t then tail = ci + t end
    args = { table.unpack(args, 1, ci) }
    for _, a in ipairs(split) do args[#args + 1] = a end
  end
  -- `--wait=SECONDS` beside a bare `--wait` (orch ctl start/restart): the
  -- value is taken out here, so that `--wait NAME` never reads NAME as it.
  local wait_value
  if name == "ctl" then
    for i, a in ipairs(args) do
      if a == "--" then break end
      local v = a:match("^%-%-wait=(.*)$")
      if v then args[i], wait_value = "--wait", v end
    end
  end
  args = join_values(p, cmd, args)
  local current = p
  local ok, res = pcall(p._parse, p, args, function(parser, msg)
    current = parser
    error({ usage = msg, cmd = parser }, 0)
  end)
  if ok then
    if wait_value then res.wait = wait_value end
    return "ok", res, res.command and lookup(res.command)._orch_module, tail
  end
  if type(res) ~= "table" then error(res, 0) end
  if res.help then return "help", M.help_text(res.help) end
  -- The prefix names the command the error is about (`orch ctl: ...`).
  local where = res.cmd or current
  local prefix = "orch"
  if where ~= p then prefix = "orch " .. (where._orch_name or (cmd and cmd._orch_name) or where._name) end
  local msg = one_line(res.usage)
  -- `orch status`: a ctl command given without `ctl`.
  local unknown = msg:match("^unknown command '([^']*)'")
  if unknown and where == p then
    local ctlp = command_parser("ctl")
    for _, c in ipairs(ctlp._commands) do
      if c._name == unknown then msg = msg .. " (did you mean 'orch ctl " .. unknown .. "'?)" break end
    end
  end
  local see = where == p and "orch --help" or ("orch help " .. (where._orch_name or name or ""))
  if not msg:find("did you mean", 1, true) then msg = msg .. " (see '" .. see .. "')" end
  return "error", prefix .. ": " .. msg
end

--- The help text of an argparse command (its module's usage).
function M.help_text(cmd)
  return cmd._orch_module and cmd._orch_module.usage or cli.usage
end

--- `orch help [COMMAND]`: the text, or nil and an error message.
function M.help_of(name)
  if name == nil then return cli.usage end
  if name == "-e" then return cli.eval_usage end
  local c = command_parser(name)
  if not c then
    local _, msg = M.parse({ name })
    return nil, msg
  end
  return c._orch_module.usage
end

return M
