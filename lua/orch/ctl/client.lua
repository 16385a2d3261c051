--- orch.ctl.client: the client half of the control plane (doc/ctl.md):
-- the JSON encoding of requests and replies, the socket directory, and a
-- connection that sends requests and reads replies. `orch ctl` loads only
-- this (and cjson); the server half, lua/orch/ctl.lua, re-exports every
-- function here as ctl.encode, ctl.decode, ctl.connect, ...
local orch = require "orch"

local ctl = {}

-- lua-cjson is a C module: looked for along package.cpath at once, not
-- after every template of package.path (eight failed opens at each start
-- of `orch ctl`, issue 15). A preloaded or loaded one, or one found only
-- by another searcher, comes through require as before.
local function cjson()
  if package.loaded.cjson == nil and package.preload.cjson == nil then
    local path = package.searchpath("cjson", package.cpath)
    local open = path and package.loadlib(path, "luaopen_cjson")
    if open then package.loaded.cjson = open("cjson", path) end
  end
  return require "cjson"
end

local json = cjson().new()
json.encode_sparse_array(true)
json.decode_max_depth(64)
json.encode_max_depth(64)

ctl.MAX_REPLY = 64 * 1024 * 1024 -- longest reply line a client accepts

-- Fields holding lists: cjson writes an empty table as {}, these become [].
local list_fields = { "services", "lines", "kept", "added", "stopped", "restarted" }

-- JSON text is UTF-8. A string that is not (a request's bytes echoed in an
-- error, a service's output line, eval's output) has each byte that starts
-- no valid sequence replaced by U+FFFD.
local function fix_utf8(s)
  local out, i = {}, 1
  while true do
    local ok, bad = utf8.len(s, i)
    if ok then out[#out + 1] = s:sub(i); break end
    out[#out + 1] = s:sub(i, bad - 1)
    out[#out + 1] = "\u{FFFD}"
    i = bad + 1
  end
  return table.concat(out)
end

-- A copy of v whose strings (keys too) are valid UTF-8; tables are copied
-- only where something changed.
local function clean_utf8(v, depth)
  if type(v) == "string" then return utf8.len(v) and v or fix_utf8(v) end
  if type(v) ~= "table" or depth > 64 then return v end
  local copy
  for k, x in pairs(v) do
    local ck, cx = clean_utf8(k, depth + 1), clean_utf8(x, depth + 1)
    if ck ~= k or cx ~= x then
      copy = copy or {}
      copy[#copy + 1] = { k, ck, cx }
    end
  end
  if not copy then return v end
  local t = {}
  for k, x in pairs(v) do t[k] = x end
  for _, f in ipairs(copy) do
    t[f[1]] = nil
    t[f[2]] = f[3]
  end
  return t
end

-- A private key: a reply carrying it has its `id` written as this raw JSON
-- text (a request's numeric id, echoed digit for digit).
local RAW_ID = {}
ctl._RAW_ID = RAW_ID   -- for the server (orch.ctl)

--- Encodes a reply or request as one line of JSON (no newline).
function ctl.encode(t)
  local raw = type(t) == "table" and rawget(t, RAW_ID)
  if raw then t[RAW_ID] = nil end
  local ok, s = pcall(json.encode, t)
  if raw then t[RAW_ID] = raw end
  if not ok then error(s, 0) end
  -- One C call checks the common case: nothing to fix.
  if not utf8.len(s) then s = json.encode(clean_utf8(t, 0)) end
  if raw then s = '{"id":' .. raw .. (s == "{}" and "}" or "," .. s:sub(2)) end
  -- Most messages (every line a `tail -f` streams) have no empty table.
  if not s:find(":{}", 1, true) then return s end
  for _, f in ipairs(list_fields) do s = s:gsub('"' .. f .. '":{}', '"' .. f .. '":[]') end
  return s
end

-- cjson reads every number as a float: integral ones become integers
-- again (pids, counts, signal numbers). Only values need it: cjson's keys
-- are strings (objects) or integers already (arrays). Replacing the value
-- of an existing key is allowed during a traversal.
local tointeger = math.tointeger
local function integers(v)
  for k, x in next, v do
    local tx = type(x)
    if tx == "number" then
      local i = tointeger(x)
      if i then v[k] = i end
    elseif tx == "table" then
      integers(x)
    end
  end
end

--- Decodes one line; returns the value or nil, message. Integral numbers
-- are Lua integers.
function ctl.decode(line)
  local ok, v = pcall(json.decode, line)
  if not ok then return nil, (tostring(v):gsub("^.-:%d+: ", "")) end
  local tv = type(v)
  if tv == "table" then integers(v) elseif tv == "number" then v = tointeger(v) or v end
  return v
end

--- Decodes a reply without its last member `key`, a list left undecoded
-- (a status of 10,000 services, whose exit status needs only the reply's
-- other members: the server writes the list last). Returns the rest, or
-- nil when the line is not laid out so (then decode it whole). A '","' of
-- the key's text cannot appear inside a JSON string (its quote would be
-- escaped), and a cut that is not at the top level leaves the head
-- unbalanced, which fails to decode.
function ctl.decode_head(line, key)
  if line:sub(-2) ~= "]}" then return nil end
  local i = line:find(',"' .. key .. '":[', 1, true)
  if not i then return nil end
  local v = ctl.decode(line:sub(1, i - 1) .. "}")
  if type(v) ~= "table" then return nil end
  return v
end

---------------------------------------------------------------- paths

local function dirname(p)
  local d = p:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  return d == "" and "/" or d
end

--- The directory holding the default sockets: /run/orch for root,
-- $XDG_RUNTIME_DIR/orch otherwise (/tmp/orch-<uid> without it).
function ctl.socket_dir()
  local uid = orch.geteuid()
  if uid == 0 then return "/run/orch" end
  local x = os.getenv("XDG_RUNTIME_DIR")
  if x and x ~= "" then return x .. "/orch" end
  return "/tmp/orch-" .. uid
end

--- Creates the default socket directory (0700) or checks the one that
-- exists: a real directory (not a symbolic link) owned by orch's uid, then
-- narrowed to 0700. Anyone may create /tmp/orch-<uid> first: that one is
-- refused, never used. Returns the directory, or nil, message (with what to
-- do), code (doc/security.md#the-runtime-directory).
function ctl.ensure_socket_dir()
  local dir = ctl.socket_dir()
  if orch.geteuid() ~= 0 then orch.private.mkdir(dirname(dir), false) end
  local ok, err, code = orch.private.mkdir(dir, true)
  if ok then return dir end
  if code == "EPERM" or code == "ENOTDIR" then
    err = ("refused the runtime directory %s: %s; another user could replace the sockets in it "
      .. "(remove it if it is not yours, set XDG_RUNTIME_DIR to a private directory, "
      .. "or give --socket PATH; see doc/security.md)"):format(dir, err)
  end
  return nil, err, code
end

---------------------------------------------------------------- the client

local Client = {}
Client.__index = Client

--- Connects to a control socket. Returns a client or nil, message, code.
-- The process listening there must run as the caller's (effective) uid or
-- root (SO_PEERCRED: its uid when it called listen), or as trust_uid (the
-- caller means another user's orchestrator): any other user's server would
-- receive the requests (eval code included) and have its replies believed
-- and printed (doc/security.md#the-control-socket-client-side).
function ctl.connect(path, timeout, trust_uid)
  local conn, err, code = orch.connect{ unix = path, timeout = timeout or 10 }
  if not conn then return nil, err, code end
  local cred, cerr, ccode = conn:peer_cred()
  local me = orch.geteuid()
  if not cred or (cred.uid ~= me and cred.uid ~= 0 and cred.uid ~= trust_uid) then
    conn:close()
    if not cred then return nil, "connect: who serves " .. path .. " is unknown: " .. tostring(cerr), ccode end
    return nil, ("connect: refused: %s is served by uid %d (pid %d), neither yours (uid %d) nor root: that user "
      .. "would receive your requests (eval code included) and you would believe its replies "
      .. "(give --trust-uid %d if you mean to talk to it)"):format(path, cred.uid, cred.pid, me, cred.uid), "EPERM"
  end
  return setmetatable({ conn = conn, path = path, next_id = 0 }, Client)
end

--- Sends one request and waits for its reply (a table). Returns the reply
-- and its line of JSON, or nil, message, code when the connection failed.
function Client:request(req, timeout, lazy)
  local ok, err, code = self.conn:write(ctl.encode(req) .. "\n")
  if not ok then
    -- A server that refuses a peer replies and closes without reading the
    -- request, so the write may fail with EPIPE while the refusal is
    -- already waiting in the socket: read it before giving up.
    if code == "EPIPE" or code == "ECONNRESET" then
      local reply, line = self:receive(timeout, lazy)
      if reply then return reply, line end
    end
    return nil, err, code
  end
  return self:receive(timeout, lazy)
end

--- Reads the next reply line (also the `{"line": ...}` messages of a tail
-- that follows). Returns the decoded table and the line as received, or
-- nil, message, code. lazy: the name of a long list the caller does not
-- need decoded (ctl.decode_head), when the reply lays it out last.
function Client:receive(timeout, lazy)
  self.conn:set_timeout(timeout)
  local line, err, code = self.conn:read_line(ctl.MAX_REPLY)
  if not line then
    if err == nil then return nil, "the orchestrator closed the connection", "EOF" end
    return nil, err, code
  end
  local v = lazy and ctl.decode_head(line, lazy)
  local derr
  if not v then v, derr = ctl.decode(line) end
  if type(v) ~= "table" then return nil, "malformed reply: " .. tostring(derr), "EPROTO" end
  return v, line
end

function Client:close() self.conn:close() return true end
Client.__close = Client.close

return ctl
