-- examples/echo_server.lua: a fork-per-connection echo server (the classic
-- multi-process server): the parent accepts, a forked child serves each
-- connection and exits when the client hangs up.
--   orch run examples/echo_server.lua [ADDRESS [MAX]]
-- ADDRESS is a unix socket path (default /tmp/orch-echo.sock) or a TCP port
-- on 127.0.0.1; after MAX connections (default: no limit) the server stops
-- accepting and exits once its children have.
local address = arg[1] or "/tmp/orch-echo.sock"
local max = tonumber(arg[2])
io.stdout:setvbuf("line")

local port = tonumber(address)
local listener = assert(port and orch.listen{ port = port } or orch.listen{ unix = address })
print("listening on " .. (port and ("127.0.0.1:" .. listener.port) or listener:address()))

local function serve(conn)
  -- The forked child: it does not accept, so it drops its listener copy
  -- (only the parent removes the socket file).
  listener:close()
  for line in conn:lines() do
    assert(conn:write(line .. "\n"))
  end
  conn:close()
end

local children, served = {}, 0
while not max or served < max do
  local conn = assert(listener:accept())
  served = served + 1
  local child = assert(orch.fork(function() serve(conn) end))
  conn:close()   -- the child has its own copy of the connection
  children[#children + 1] = child
  print(("connection %d: child %d"):format(served, child.pid))
end
listener:close()
for _, child in ipairs(children) do child:wait() end
print("served " .. served .. " connections")
