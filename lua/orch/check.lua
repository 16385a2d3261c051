--- orch.check: the one way the Lua modules check an options table, with the
-- messages of the C bindings ("bad argument #1 to 'serve' (option 'timeout':
-- positive number expected)"). Programmer errors raise; nothing is
-- allocated or started before the options are known to be good.
--
--   local check = require "orch.check"
--   check.options("serve", 1, opts, {
--     listen = "string", timeout = "posnum", mode = { "delay", "rate" },
--     max = function(v) return v < 10, "a number below 10" end,
--   })
--
-- A rule is
--   a type name, or names joined by "|"   ("string", "function|string")
--   "posint"   a positive integer          "posnum"  a positive finite number
--   "seconds"  a finite number >= 0        "count"   an integer >= 0
--   "any"      anything (checked later)    "nonempty" a non-empty string
--   { "a", "b", ... }                     one of these strings
--   function(v) -> ok [, expected]        anything else; `expected` names
--                                         what was expected when ok is false
--                                         (or is the whole message when it
--                                         contains " expected")
-- The named rules say "number expected, got string" for a value of the
-- wrong type, and what they want otherwise.
-- Keys without a rule are refused ("unknown option 'x'").
local M = {}

local function blame(fname, argn, level, msg)
  error(("bad argument #%d to '%s' (%s)"):format(argn, fname, msg), level + 1)
end

local function finite(v) return type(v) == "number" and v == v and v > -math.huge and v < math.huge end

-- name = { base type, test, what is expected }
local named = {
  posint = { "number", function(v) return math.type(v) == "integer" and v > 0 end, "positive integer" },
  posnum = { "number", function(v) return finite(v) and v > 0 end, "positive number" },
  seconds = { "number", function(v) return finite(v) and v >= 0 end, "seconds >= 0" },
  count = { "number", function(v) return math.type(v) == "integer" and v >= 0 end, "integer >= 0" },
  nonempty = { "string", function(v) return v ~= "" end, "non-empty string" },
  any = { nil, function() return true end, "any value" },
}
M.rules = named

local function quote_list(list)
  local q = {}
  for i, s in ipairs(list) do q[i] = string.format("%q", s) end
  if #q == 1 then return q[1] end
  return table.concat(q, ", ", 1, #q - 1) .. " or " .. q[#q]
end

-- nil when v satisfies rule, else the message after "option 'k': ".
local function violation(rule, v)
  local tr = type(rule)
  if tr == "string" then
    local n = named[rule]
    if n then
      if n[1] and type(v) ~= n[1] then return ("%s expected, got %s"):format(n[1], type(v)) end
      if n[2](v) then return nil end
      return n[3] .. " expected"
    end
    local t = type(v)
    for want in rule:gmatch("[^|]+") do if t == want then return nil end end
    return ("%s expected, got %s"):format((rule:gsub("|", " or ")), t)
  elseif tr == "table" then
    for _, s in ipairs(rule) do if v == s then return nil end end
    return quote_list(rule) .. " expected"
  elseif tr == "function" then
    local ok, want = rule(v)
    if ok then return nil end
    want = want or "a valid value"
    -- A rule may say the whole message ("number expected, got string").
    if want:find(" expected", 1, true) then return want end
    return want .. " expected"
  end
  error("orch.check: bad rule " .. tostring(rule), 3)
end

--- check.options(fname, argn, opts, rules [, level]) -> opts
-- Raises "bad argument #argn to 'fname' (...)" blaming the caller of the
-- function that called check.options (`level` more frames up when that
-- function is itself a helper). A nil opts is an empty table.
function M.options(fname, argn, opts, rules, level)
  level = (level or 1) + 2
  if opts == nil then return {} end
  if type(opts) ~= "table" then blame(fname, argn, level, "table expected, got " .. type(opts)) end
  for k, v in pairs(opts) do
    local rule = rules[k]
    if rule == nil then blame(fname, argn, level, ("unknown option '%s'"):format(tostring(k))) end
    local why = violation(rule, v)
    if why then blame(fname, argn, level, ("option '%s': %s"):format(k, why)) end
  end
  return opts
end

--- check.value(fname, argn, what, v, rule [, level]): one option checked
-- on its own (an option whose rule depends on another), "option 'what': ...".
function M.value(fname, argn, what, v, rule, level)
  local why = violation(rule, v)
  if why then blame(fname, argn, (level or 1) + 2, ("option '%s': %s"):format(what, why)) end
  return v
end

return M
