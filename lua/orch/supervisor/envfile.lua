--- orch.supervisor.envfile: a service's `env_file`, read the way systemd
-- reads EnvironmentFile= (systemd.exec(5)), so that /etc/default/NAME files
-- written for a unit work unchanged:
--   - KEY=VALUE assignments; whitespace around the key and before the value
--     is dropped, trailing whitespace of an unquoted value too;
--   - a line starting with # or ; is a comment (a comment is never at the
--     end of an assignment: "A=b # c" sets A to "b # c");
--   - 'single quotes' keep everything as it is; "double quotes" take \" \\
--     \` \$ as escapes (any other backslash stays) and may span lines; a
--     quote opens only where the value or a quoted part begins ("a"'b' is
--     ab, but "a"b'c' is ab'c');
--   - outside quotes a backslash takes the next character as it is, and a
--     backslash before a newline joins the next line;
--   - a key that is no variable name (`export A=b` has the key "export A")
--     is ignored, as systemd ignores it, with a warning.
-- Files are read when the service starts (each start: a changed file takes
-- effect on the next restart), without blocking the loop, and only when
-- trusted (a regular file owned by orch's user or root that others may not
-- write). A path starting with "-" may be missing.
local M = {}

local WS = { [" "] = true, ["\t"] = true, ["\n"] = true, ["\r"] = true }
local NL = { ["\n"] = true, ["\r"] = true }
local DQ_ESCAPES = { ['"'] = true, ["\\"] = true, ["`"] = true, ["$"] = true }

--- Parses the text of an environment file. Returns the assignments as a
-- list of { key, value } in file order, and a list of warnings.
function M.parse(text)
  local out, warnings = {}, {}
  local state, key, value = "pre_key", {}, nil
  local key_ws, value_ws = nil, nil   -- where trailing whitespace began
  local line = 1
  local function push()
    local k = table.concat(key, "", 1, key_ws and (key_ws - 1) or #key)
    local v = value and table.concat(value, "", 1, value_ws and (value_ws - 1) or #value) or ""
    if k:match("^[%a_][%w_]*$") then
      out[#out + 1] = { k, v }
    else
      warnings[#warnings + 1] = string.format("line %d: '%s' is not a variable name: ignored", line, k)
    end
    key, value, key_ws, value_ws = {}, nil, nil, nil
  end
  local function addv(c)
    value = value or {}
    value[#value + 1] = c
  end
  for c in text:gmatch(".") do
    if state == "pre_key" then
      if c == "#" or c == ";" then state = "comment"
      elseif not WS[c] then state, key, key_ws = "key", { c }, nil end
    elseif state == "key" then
      if NL[c] then
        state, key = "pre_key", {}
        warnings[#warnings + 1] = string.format("line %d: no '=': ignored", line)
      elseif c == "=" then state, value_ws = "pre_value", nil
      else
        if not WS[c] then key_ws = nil elseif not key_ws then key_ws = #key + 1 end
        key[#key + 1] = c
      end
    elseif state == "pre_value" then
      if NL[c] then push() state = "pre_key"
      elseif c == "'" then state = "squote"
      elseif c == '"' then state = "dquote"
      elseif c == "\\" then state = "value_escape"
      elseif not WS[c] then state = "value" addv(c) end
    elseif state == "value" then
      if NL[c] then
        value_ws = value_ws
        push()
        state = "pre_key"
      elseif c == "\\" then state, value_ws = "value_escape", nil
      else
        if not WS[c] then value_ws = nil elseif not value_ws then value_ws = (value and #value or 0) + 1 end
        addv(c)
      end
    elseif state == "value_escape" then
      state = "value"
      if not NL[c] then addv(c) end
    elseif state == "squote" then
      if c == "'" then state = "pre_value" else addv(c) end
    elseif state == "dquote" then
      if c == '"' then state = "pre_value"
      elseif c == "\\" then state = "dquote_escape"
      else addv(c) end
    elseif state == "dquote_escape" then
      state = "dquote"
      if DQ_ESCAPES[c] then addv(c)
      elseif c ~= "\n" then addv("\\") addv(c) end
    elseif state == "comment" then
      if c == "\\" then state = "comment_escape"
      elseif NL[c] then state = "pre_key" end
    elseif state == "comment_escape" then
      state = NL[c] and "pre_key" or "comment"
    end
    if c == "\n" then line = line + 1 end
  end
  if state == "pre_value" or state == "value" or state == "value_escape" or state == "squote"
     or state == "dquote" or state == "dquote_escape" then
    if state ~= "value" then value_ws = nil end
    push()
  elseif state == "key" then
    warnings[#warnings + 1] = string.format("line %d: no '=': ignored", line)
  end
  return out, warnings
end

--- Reads the files of `env_file` (a path or a list) into `env` (a table,
-- changed in place; later files and lines win). Returns true and the
-- warnings, or nil and a message naming the file.
function M.load(files, env)
  local read_config = require("orch").read_config
  if type(files) == "string" then files = { files } end
  local warnings = {}
  for _, f in ipairs(files) do
    local optional = f:sub(1, 1) == "-"
    local path = optional and f:sub(2) or f
    local text, err, code = read_config(path)
    if not text then
      if not (optional and code == "ENOENT") then
        return nil, "env_file " .. tostring(err):gsub("^read_config: ", "")
      end
    else
      local list, warns = M.parse(text)
      for _, kv in ipairs(list) do env[kv[1]] = kv[2] end
      for _, w in ipairs(warns) do warnings[#warnings + 1] = path .. ": " .. w end
    end
  end
  return true, warnings
end

return M
