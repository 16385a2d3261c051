-- scripts/fuzz.d/ctl.lua: a control-protocol fuzzer, the client side.
--   orch run ctl.lua SOCKET SEED CONNECTIONS
-- Opens CONNECTIONS connections to a running orchestrator's control socket
-- (some of them at the same time, more than it accepts) and sends random
-- bytes, invalid UTF-8, deeply nested JSON, lines over the length limit,
-- pipelined and half-written requests, and requests with random commands,
-- fields and ids (never shutdown or reexec: the target must survive). Every
-- reply line must be valid JSON. Prints ctl_fuzz_connections,
-- ctl_fuzz_replies, ctl_fuzz_invalid_json (the invalid ones go to stderr).
local cjson = require "cjson"
local path = assert(arg[1], "usage: ctl.lua SOCKET SEED CONNECTIONS")
local seed = math.tointeger(tonumber(arg[2])) or os.time()
local nconn = math.tointeger(tonumber(arg[3])) or 500
math.randomseed(seed)
local random = math.random

local function bytes(n)
  local b = {}
  for i = 1, n do b[i] = string.char(random(0, 255)) end
  return table.concat(b)
end
local bad_utf8 = { "\xff", "\xc3\x28", "\xe2\x28\xa1", "\xf0\x28\x8c\x28", "\xed\xa0\x80", "\xc0\xaf", "\0" }
local function weird_string()
  local r = random(5)
  if r == 1 then return bytes(random(0, 64)) end
  if r == 2 then return "web" .. bad_utf8[random(#bad_utf8)] end
  if r == 3 then return string.rep("a", random(1000, 70000)) end
  if r == 4 then return ({ "all", "svc1", "svc2", "nope", "", "svc1:1", "*" })[random(7)] end
  return bad_utf8[random(#bad_utf8)]:rep(random(1, 10))
end
-- A JSON string literal holding raw bytes (no escaping beyond quotes and
-- backslashes: control bytes and invalid UTF-8 go through as they are).
local function raw_json_string(s)
  return '"' .. s:gsub('[\\"]', "\\%0"):gsub("\n", "\\n") .. '"'
end
local cmds = { "ping", "status", "start", "stop", "restart", "signal", "tail", "eval", "reload", "nope",
  "", "PING", "status\0" }
local codes = { "return 1", "error('x')", "return '\\255\\254'", "print(string.rep('x', 2e6))", "return {}",
  "return 1, nil, 3", "(", "return setmetatable({}, { __tostring = function() error('t') end })",
  "for i = 1, 1e4 do end return 'ok'", "return 2^63", "return math.mininteger" }
local function field_value()
  local r = random(8)
  if r == 1 then return raw_json_string(weird_string()) end
  if r == 2 then return tostring(({ 0, -1, 1e308, 2^53 + 1, 9007199254740993, 1.5, -0.0 })[random(7)]) end
  if r == 3 then return ({ "true", "false", "null", "[]", "{}", '"TERM"', '"SIGKILL"', '"HUP"', "9" })[random(9)] end
  if r == 4 then return string.rep("[", 30) .. string.rep("]", 30) end
  if r == 5 then return "12345678901234567890123" end
  if r == 6 then return raw_json_string(codes[random(#codes)]) end
  if r == 7 then return '"' .. ("\\u00" .. string.format("%02x", random(0, 31))) .. '"' end
  return '"svc' .. random(1, 3) .. '"'
end
local function request()
  local cmd = cmds[random(#cmds)]
  local parts = { '"cmd":' .. raw_json_string(cmd) }
  for _, k in ipairs { "name", "signal", "lines", "code", "id", "follow", "chunkname" } do
    if random(2) == 1 then parts[#parts + 1] = '"' .. k .. '":' .. field_value() end
  end
  -- never a follow: it would hold the connection until it is closed
  return "{" .. table.concat(parts, ","):gsub('"follow":[^,}]*', '"follow":false') .. "}"
end
local function line()
  local r = random(10)
  if r == 1 then return bytes(random(1, 512)) end
  if r == 2 then local d = random(10, 20000) return string.rep("[", d) .. string.rep("]", d) end
  if r == 3 then local d = random(10, 5000) return string.rep('{"a":', d) .. "1" .. string.rep("}", d) end
  if r == 4 then return string.rep("x", random(65537, 200000)) end
  if r == 5 then return '{"cmd":"ping"' .. bad_utf8[random(#bad_utf8)] .. '}' end
  return request()
end

local connections, replies, invalid = 0, 0, 0
local function check(reply)
  replies = replies + 1
  local ok, v = pcall(cjson.decode, reply)
  if not ok or type(v) ~= "table" then
    invalid = invalid + 1
    io.stderr:write("invalid JSON reply: ", string.format("%q", reply:sub(1, 200)), "\n")
  end
end

local function one()
  local c = orch.connect { unix = path, timeout = 5 }
  if not c then return end
  connections = connections + 1
  c:set_timeout(5)
  local n = random(1, 4)
  local out = {}
  for i = 1, n do out[i] = line() end
  local text = table.concat(out, "\n")
  local how = random(6)
  if how == 1 then
    -- half a request, then gone
    c:write(text:sub(1, random(1, #text)))
    c:close()
    return
  elseif how == 2 then
    c:write(text)   -- no newline: the server waits; we leave
    c:close()
    return
  end
  c:write(text .. "\n")
  for _ = 1, n do
    local reply = c:read_line(64 * 1024 * 1024)
    if not reply then break end
    check(reply)
  end
  c:close()
end

-- Sequential connections, with bursts of many at once (more than the
-- server's max_connections: those get an EBUSY reply).
local done = 0
while done < nconn do
  if random(10) == 1 then
    local burst = math.min(nconn - done, random(10, 40))
    local ts = {}
    for i = 1, burst do ts[i] = orch.task(one) end
    for _, t in ipairs(ts) do t:join() end
    done = done + burst
  else
    one()
    done = done + 1
  end
end
-- The server still answers.
local c = assert(orch.connect { unix = path, timeout = 5 })
c:set_timeout(10)
c:write('{"cmd":"ping"}\n')
local pong = assert(c:read_line(), "no reply to ping after the fuzzing")
check(pong)
assert(cjson.decode(pong).ok == true, "ping failed after the fuzzing: " .. pong)
c:close()
print("ctl_fuzz_seed " .. seed)
print("ctl_fuzz_connections " .. connections)
print("ctl_fuzz_replies " .. replies)
print("ctl_fuzz_invalid_json " .. invalid)
