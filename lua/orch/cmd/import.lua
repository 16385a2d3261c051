--- `orch import FILE`: writes an orch policy script equivalent to a
-- supervisord configuration or a pm2 ecosystem file (lua/orch/import.lua
-- does the translation; doc/migrating.md explains the mapping).
local M = {}

M.summary = "import FILE            a supervisord.conf or pm2 ecosystem file as an orch policy script"

M.usage = [[
usage: orch import [--format supervisord|pm2] [--output FILE] [--force] FILE

Reads a supervisord configuration (supervisord.conf, conf.d/*.conf; its
[include] files are read too) or a pm2 ecosystem file (ecosystem.json,
or an ecosystem.config.js that is a plain `module.exports = {...}` object
literal: it is read, never run; code in it is refused with its line) and
writes an orch policy
script: one sup.service{...} per program or app, with a comment on every
option that has no equivalent in orch. Run the result with `orch run`.

  --format F      supervisord or pm2 (default: from the file name:
                  *.json, *.js and *ecosystem* are pm2, the rest supervisord)
  --output FILE   write the script to FILE (mode 0644) instead of stdout
  --force         with --output: replace an existing FILE

Exit status: 0 written, 1 the file could not be read or translated,
2 usage error.
]]

local function fail(code, msg)
  io.stderr:write("orch import: ", msg, "\n")
  return code
end

function M.args(p)
  p:argument("FILE"):target("file")
  p:option("--format"):argname("F"):choices({ "supervisord", "pm2" })
  p:option("--output"):argname("FILE")
  p:flag("--force")
end

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

local function decode_pm2(path, text)
  if path:match("%.[cm]?js$") then
    -- A JavaScript ecosystem file is read, not run: a plain object literal
    -- (module.exports = {...}) is understood, code is refused with its line.
    local t, err = require("orch.import").parse_js(text)
    if err then return nil, err end
    return t
  end
  local ok, cjson = pcall(require, "cjson.safe")
  if not ok then return nil, "lua-cjson is not installed (apt-get install lua-cjson)" end
  local t, err = cjson.decode(text)
  if t == nil then return nil, "not JSON: " .. tostring(err) end
  return t
end

function M.main(o)
  local format = o.format
  if not format then
    local base = o.file:match("([^/]*)$")
    format = (base:match("%.json$") or base:match("%.[cm]?js$") or base:find("ecosystem", 1, true)) and "pm2" or "supervisord"
  end
  local text, rerr = read(o.file)
  if not text then return fail(1, rerr) end
  local import = require "orch.import"
  local dir = o.file:match("^(.*)/[^/]*$") or "."
  if dir:sub(1, 1) ~= "/" then dir = (os.getenv("PWD") or ".") .. (dir == "." and "" or "/" .. dir) end
  local src, werr
  if format == "pm2" then
    local apps, derr = decode_pm2(o.file, text)
    if not apps then return fail(1, o.file .. ": " .. derr) end
    src, werr = import.pm2(apps, { dir = dir, name = o.file })
  else
    src, werr = import.supervisord(text, { dir = dir, name = o.file })
  end
  if not src then return fail(1, o.file .. ": " .. werr) end
  for _, w in ipairs(werr or {}) do io.stderr:write("orch import: warning: ", w, "\n") end
  if o.output then
    if not o.force and io.open(o.output, "rb") then
      return fail(1, o.output .. " exists (use --force to replace it)")
    end
    local f, oerr = io.open(o.output, "wb")
    if not f then return fail(1, oerr) end
    f:write(src)
    f:close()
  else
    io.stdout:write(src)
  end
  return 0
end

return M
