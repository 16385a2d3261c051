-- examples/echo_client.lua: the client of examples/echo_server.lua. Sends
-- each argument as a line and prints the echoed replies.
--   orch run examples/echo_client.lua [ADDRESS] LINE...
local address = arg[1] or "/tmp/orch-echo.sock"
local port = tonumber(address)
local conn <close> = assert(port and orch.connect{ port = port, timeout = 10 }
                                  or orch.connect{ unix = address, timeout = 10 })
for i = 2, #arg do
  assert(conn:write(arg[i] .. "\n"))
  print("echo: " .. assert(conn:read_line()))
end
assert(conn:shutdown())
