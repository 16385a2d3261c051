-- Control replies are always valid JSON (UTF-8 text), whatever bytes a
-- request holds, and a numeric request id comes back digit for digit. A
-- property check: 2,500 random requests against a running orch.
local h = require "spec.helper"
local orch = h.orch
local u = require "spec.ctl_util"

-- A strict reader: no NaN/Infinity/hex numbers.
local strict = require("cjson").new()
strict.decode_invalid_numbers(false)

local POLICY = [[
local sup = require "orch.supervisor"
sup.configure{ log = false }
sup.service{ name = "svc", cmd = { "sleep", "1000" } }
sup.run()
assert(require("orch.ctl").serve{ socket = SOCK })
]]

-- JSON string with the bytes of s as they are (high bytes raw: invalid
-- UTF-8 stays invalid), escaping only what JSON requires.
local function jstr(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

local function rbytes(n, lo)
  local t = {}
  for i = 1, n do t[i] = string.char(math.random(lo or 0, 255)) end
  return table.concat(t)
end

local function rdigits(n)
  local t = { tostring(math.random(1, 9)) }
  for i = 2, n do t[i] = tostring(math.random(0, 9)) end
  return table.concat(t)
end

-- One random request line; returns it and, for a numeric id, its text.
local function random_request()
  local kind = math.random(10)
  if kind == 1 then                        -- not JSON at all
    return "x" .. rbytes(math.random(0, 80)):gsub("\n", "")
  end
  local fields = {}
  local cmds = { "ping", "status", "signal", "x" .. rbytes(math.random(0, 12), 1), "\xff\xfe", "st\xc3" }
  fields[#fields + 1] = '"cmd":' .. jstr(cmds[math.random(#cmds)])
  local idtext
  local idk = math.random(7)
  if idk == 1 then idtext = rdigits(math.random(16, 30))                         -- beyond 2^53
  elseif idk == 2 then idtext = "-" .. rdigits(math.random(15, 22))
  elseif idk == 3 then idtext = rdigits(math.random(1, 9)) .. "." .. rdigits(math.random(10, 20))
  elseif idk == 4 then idtext = rdigits(math.random(1, 3)) .. "e" .. math.random(10, 300)
  elseif idk == 5 then idtext = tostring(math.random(0, 1000))
  elseif idk == 6 then fields[#fields + 1] = '"id":' .. jstr(rbytes(math.random(0, 20)))
  end
  if math.random(3) == 1 then                -- a nested "id" that is not the request's
    fields[#fields + 1] = '"args":{"id":' .. rdigits(20) .. ',"s":' .. jstr(rbytes(5)) .. "}"
  end
  if idtext then fields[#fields + 1] = '"id":' .. idtext end
  -- A member of random bytes (never a second "id": 1 request in ~460,000
  -- drew exactly those two bytes, and the reply rightly echoed the last one).
  local key
  repeat key = rbytes(math.random(0, 6)) until key ~= "id"
  fields[#fields + 1] = jstr(key) .. ":" .. jstr(rbytes(math.random(0, 30)))
  if math.random(2) == 1 then fields[#fields + 1] = '"name":' .. jstr(rbytes(math.random(0, 30))) end
  for i = #fields, 2, -1 do                  -- any order
    local j = math.random(i)
    fields[i], fields[j] = fields[j], fields[i]
  end
  return "{" .. table.concat(fields, ",") .. "}", idtext
end

describe("control replies", function()
  it("are valid JSON for 2,500 random requests; numeric ids come back verbatim", function()
    local seed = os.time()
    math.randomseed(seed)
    local o = u.start(POLICY)
    local ok, err = pcall(h.run, function()
      local conn = assert(orch.connect{ unix = o.sock })
      for n = 1, 2500 do
        local line, idtext = random_request()
        assert(conn:write(line .. "\n"))
        local reply = assert(conn:read_line(64 * 1024 * 1024))
        local where = ("request %d (seed %d): %q -> %q"):format(n, seed, line, reply)
        assert(utf8.len(reply), "reply is not UTF-8: " .. where)
        local okd, v = pcall(strict.decode, reply)
        assert(okd and type(v) == "table" and type(v.ok) == "boolean", "reply is not a JSON object: " .. where)
        if idtext then
          -- Verbatim, or the same small integer (8e10 may come back as 80000000000).
          local small = math.tointeger(tonumber(idtext))
          small = small and math.abs(small) < 1e14 and small
          assert(reply:find('"id":' .. idtext, 1, true) or small and reply:find('"id":' .. small .. "[,}]"),
                 "id not echoed verbatim: " .. where)
        end
      end
      conn:close()
    end, 120)
    u.stop(o)
    assert(ok, err)
  end)

  it("a request with its id twice: the last one comes back, as JSON readers take it", function()
    local o = u.start(POLICY)
    local ok, err = pcall(h.run, function()
      local conn = assert(orch.connect{ unix = o.sock })
      local cases = {
        { '{"cmd":"ping","id":123456789012345678901,"id":"b"}', '"id":"b"' },
        { '{"cmd":"ping","id":"a","id":123456789012345678901}', '"id":123456789012345678901' },
        { '{"cmd":"ping","id":-98765432109876543210,"id":12345678901234567890123}',
          '"id":12345678901234567890123' },
      }
      for _, c in ipairs(cases) do
        assert(conn:write(c[1] .. "\n"))
        local reply = assert(conn:read_line())
        assert(strict.decode(reply).ok, reply)
        assert(reply:find(c[2], 1, true), c[1] .. " -> " .. reply)
        local _, n = reply:gsub('"id":', "")
        assert.are.equal(1, n, reply)
      end
      conn:close()
    end)
    u.stop(o)
    assert(ok, err)
  end)

  it("eval output and results with invalid UTF-8 come back as U+FFFD", function()
    local o = u.start(POLICY)
    local ok, err = pcall(h.run, function()
      local conn = assert(orch.connect{ unix = o.sock })
      assert(conn:write([[{"cmd":"eval","code":"print('a\\255b') return '\\254'","id":"e"}]] .. "\n"))
      local line = assert(conn:read_line())
      assert(utf8.len(line), line)
      local reply = strict.decode(line)
      assert.are.same({ ok = true, output = "a\u{FFFD}b", result = '"\u{FFFD}"', id = "e" }, reply)
      conn:close()
    end)
    u.stop(o)
    assert(ok, err)
  end)

  it("an eval with a table chunkname fails clearly, not as an internal error", function()
    local o = u.start(POLICY)
    local ok, err = pcall(h.run, function()
      local conn = assert(orch.connect{ unix = o.sock })
      assert(conn:write('{"cmd":"eval","code":"return 1","chunkname":{},"id":7}\n'))
      local reply = strict.decode((assert(conn:read_line())))
      assert.are.same({ ok = false, error = "'eval': 'chunkname' must be a string", code = "EINVAL", id = 7 }, reply)
      conn:close()
    end)
    u.stop(o)
    assert(ok, err)
  end)
end)
