-- The length of `orch run`'s control socket path. A unix socket's path
-- holds 107 bytes, and the supervisor's fd holder binds SOCKET.holder (7
-- more) beside the control socket: a path of 101 to 107 bytes served `orch
-- ctl`, but the fd holder exited ("dgram: file name too long"), the log
-- pipes were not held, and a kill -9 of orch then killed the services with
-- SIGPIPE. orch run now refuses such a path at start, saying the limit
-- (ctl.MAX_RUN_SOCKET, 100); a path of 100 bytes works, fd holder included.
-- Real `orch run` processes; each test has its own private directory.
local h = require "spec.helper"
local u = require "spec.ctl_util"

-- A path of exactly n bytes in the private directory d.
local function path_of(d, n)
  local name = string.rep("s", n - #d - 1)
  assert(#name >= 1, "the temporary directory is too long for this test")
  return d .. "/" .. name
end

-- A script that marks that it ran, starts one service and ends by itself
-- (an orch that took the path would not hang the test).
local function script(d)
  local path = d .. "/policy.lua"
  h.write(path, string.format([[
local DIR = %q
local f = assert(io.open(DIR .. "/ran", "w")) f:close()
local sup = require "orch.supervisor"
sup.service{ name = "a", cmd = { "sleep", "600" } }
sup.run()
orch.exit(0)
]], d))
  return path
end

local function exists(p) return h.sh("test -e " .. h.shquote(p) .. " && echo yes") == "yes" end

describe("orch run's control socket path", function()
  for _, n in ipairs { 101, 107, 109 } do
    it(n .. " bytes: refused at start with the limit, before the script runs (--socket and $ORCH_SOCKET)", function()
      local d = h.tmpdir()
      local sock, file = path_of(d, n), script(d)
      for _, how in ipairs { "option", "env" } do
        local code, _, err
        if how == "option" then
          code, _, err = h.cli({ "run", "--socket", sock, file })
        else
          code, _, err = h.cli({ "run", file }, nil, { ORCH_SOCKET = sock })
        end
        u.sanitizer_clean(err, "orch run")
        assert.are.equal(2, code, err)
        assert.truthy(err:find("control socket " .. sock .. ": path too long (" .. n .. " bytes, at most 100", 1, true), err)
        assert.truthy(err:find("(nothing was started)", 1, true), err)
        assert.is_false(exists(d .. "/ran"), "the script ran")
        for _, suffix in ipairs { "", ".lock", ".holder", ".state" } do
          assert.is_false(exists(sock .. suffix), sock .. suffix .. " was made")
        end
      end
    end)
  end

  it("sup.configure{ persist = PATH } takes at most 100 bytes too", function()
    local d = h.tmpdir()
    local file = d .. "/conf.lua"
    h.write(file, string.format([[
local sup = require("orch.supervisor").new()
assert(sup.configure{ persist = %q })
local ok, err = pcall(sup.configure, { persist = %q })
print(ok, err)
]], path_of(d, 100), path_of(d, 101)))
    local code, out, err = h.cli({ "run", "--no-socket", file })
    u.sanitizer_clean(err, "orch run")
    assert.are.equal(0, code, err)
    assert.truthy(out:find("false\t.*option 'persist': socket path too long %(101 bytes, at most 100%)"), out)
  end)

  it("100 bytes: ctl answers and the fd holder binds SOCKET.holder", function()
    local d = h.tmpdir()
    local sock = path_of(d, 100)
    local file = d .. "/policy.lua"
    h.write(file, [[
local sup = require "orch.supervisor"
sup.service{ name = "a", cmd = { "sh", "-c", "echo up; exec sleep 600" } }
sup.run()
orch.task(function() orch.sleep(1e6) end)
]])
    local o = { sock = sock, dir = d }
    o.pid = math.tointeger(tonumber((h.sh(string.format("{ %s run --socket %s %s >%s/out 2>%s/err & echo $!; }",
      h.shquote(h.bin), h.shquote(sock), h.shquote(file), h.shquote(d), h.shquote(d))))))
    finally(function()
      u.ctl_cli(o, "shutdown")
      u.until_true(function() return not h.alive(o.pid) end, "orch's end")
    end)
    u.until_true(function()
      if not h.alive(o.pid) then error("orch run ended early:\n" .. (h.slurp(d .. "/err") or ""), 0) end
      return h.cli({ "ctl", "--socket", sock, "ping" }) == 0
    end, "the control socket")
    -- The holder's socket is bound (listed in /proc/net/unix) and its
    -- process holds the service's pipe.
    u.until_true(function()
      return h.sh("grep -cF " .. h.shquote(" " .. sock .. ".holder") .. " /proc/net/unix") == "1"
    end, "the fd holder's socket")
    local code, out, err = u.ctl_cli(o, "status")
    assert.are.equal(0, code, err)
    assert.truthy(out:find("running", 1, true), out)
    local log = h.slurp(o.dir .. "/err") or ""
    assert.falsy(log:find("fd holder", 1, true), log)
  end)
end)
