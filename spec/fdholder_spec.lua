-- `orch fdholder` (lua/orch/cmd/fdholder.lua) lives as long as the services
-- whose log pipes it holds, so it loads only what it needs (issue 15:
-- memory per service): not the command-line parser nor any other command.
-- Run with $ORCH_LUA_DIR pointing at a tree where every other command's
-- module raises when loaded; the holder must still hold a pipe and hand it
-- back, spoken to as the supervisor speaks to it (lua/orch/supervisor/persist.lua).
local h = require "spec.helper"
local orch = h.orch

-- A tree for $ORCH_LUA_DIR: every command module but fdholder raises.
local function shadow_tree()
  local d = h.tmpdir()
  os.execute("mkdir -p " .. h.shquote(d .. "/orch/cmd"))
  local n = 0
  for f in h.sh("ls lua/orch/cmd"):gmatch("[^\n]+") do
    if f:match("%.lua$") and f ~= "fdholder.lua" then
      h.write(d .. "/orch/cmd/" .. f, string.format("error(%q, 0)\n", "the fd holder loaded orch/cmd/" .. f))
      n = n + 1
    end
  end
  return d, n
end

describe("orch fdholder", function()
  local shadow, n
  setup(function() shadow, n = shadow_tree() end)

  it("shadows the other commands (the test's own check)", function()
    assert.is_true(n > 5)
    local code, _, err = h.cli({ "version" }, nil, { ORCH_LUA_DIR = shadow })
    assert.are_not.equal(0, code)
    assert.truthy(err:find("the fd holder loaded orch/cmd/", 1, true), err)
  end)

  it("holds a pipe and hands it back without loading the parser or another command", function()
    local ctl = require "orch.ctl.client"
    local dir = h.tmpdir()
    local sock = dir .. "/holder.sock"
    h.run(function()
      local me = orch.getpid()
      local start = orch.proc.info(me).start_time
      local p = assert(orch.spawn{ h.bin, "fdholder", sock, tostring(me), tostring(start),
        env = { ORCH_LUA_DIR = shadow }, stdin = "null", stdout = "null", stderr = "pipe" })
      local d = assert(orch.dgram{ unix = string.format("@orch-spec-fdholder-%d-%d", me, math.random(1, 1e9)),
                                   passcred = true })
      local ok, err = pcall(function()
        local r, w = assert(orch.pipe())
        -- Until the holder has bound its socket, a send fails (ENOENT).
        local put = ctl.encode{ op = "put", entries = { { name = "svc", pid = me, start = start } } }
        h.eventually(function()
          if not p:running() then
            p.stderr:set_timeout(5)
            error("the holder ended: " .. tostring(p.stderr:read_all()), 0)
          end
          return d:send(put, sock, { r })
        end, "the holder's socket")
        r:close()
        assert(w:write("held line\n"))
        w:close()
        assert(d:send(ctl.encode{ op = "hello", pid = me, start = start }, sock))
        d:set_timeout(10)
        local data, _, cred, fds = d:recv{ fds = true }
        assert(data, _)
        assert.are.equal(p.pid, cred.pid)
        local m = ctl.decode(data)
        assert.are.equal("held", m.op)
        assert.are.equal(1, m.n)
        assert.are.equal("svc", m.entries[1].name)
        assert.are.equal("held line", fds[1]:read_line())
        fds[1]:close()
        assert(d:send(ctl.encode{ op = "bye" }, sock))
        local code = p:wait()
        assert.are.equal(0, code)
      end)
      if p:running() then p:kill("KILL") p:wait() end
      p.stderr:close()
      d:close()
      if not ok then error(err, 0) end
    end)
    assert.are.same({}, h.children())
  end)
end)
