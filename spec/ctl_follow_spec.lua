-- `orch ctl tail -f` against a client that stops reading: the followed
-- service and orch never wait for it; the client is dropped with a marker.
local h = require "spec.helper"
local u = require "spec.ctl_util"

describe("a stopped tail -f client", function()
  it("never blocks the service or orch, and is dropped with a marker line", function()
    local o = u.start([[
      local sup = require "orch.supervisor"
      sup.configure { log = function(msg) io.stderr:write("orch.supervisor: ", msg, "\n") end }
      -- Slow ticks, then a flood once DIR/flood exists.
      sup.service { name = "chatty", cmd = "while :; do if [ -e " .. DIR .. "/flood ]; then yes "
                      .. string.rep("x", 200) .. " | head -n 1000; else echo tick; sleep 0.05; fi; done",
                    log = { dir = DIR, max_bytes = "1m", keep = 1, tail = 5 } }
      sup.run()
      assert(require("orch.ctl").serve { socket = SOCK, follow_buffer = 65536 })
    ]])
    local client
    finally(function()
      if client and h.alive(client) then os.execute("kill -CONT " .. client .. "; kill -KILL " .. client) end
      u.stop(o)
    end)
    local out = o.dir .. "/follow.out"
    client = tonumber((h.sh(string.format("{ %s ctl --socket %s tail chatty -n 0 -f >%s 2>%s.err & echo $!; }",
      h.shquote(h.bin), h.shquote(o.sock), h.shquote(out), h.shquote(out)))))
    -- Stopped once it has received something: it follows, then reads no more.
    u.until_true(function() return #h.slurp(out) > 0 end, "the client to receive lines")
    os.execute("kill -STOP " .. client)
    h.write(o.dir .. "/flood", "")
    u.until_true(function() return h.slurp(o.dir .. "/err"):find("tail -f chatty: client too slow, dropped", 1, true) end,
      "orch to drop the client")
    -- The service goes on writing and its log flows: far more than any
    -- kernel buffer between it, orch and the stopped client could hold.
    local before = u.status(o).chatty.log_lines
    u.until_true(function() return u.status(o).chatty.log_lines > before + 50000 end, "the log to flow on")
    assert.are.equal(0, (u.ctl_cli(o, "ping")))
    -- Resumed, the client reads what was in flight, then the marker, then
    -- the end of the connection.
    os.execute("kill -CONT " .. client)
    u.until_true(function() return not h.alive(client) end, "the client to end")
    local text = h.slurp(out)
    assert.matches("%.%.%. dropped %d+ bytes: client too slow\n$", text)
    assert.are.equal("tick", text:match("^([^\n]*)\n"))
  end)
end)
