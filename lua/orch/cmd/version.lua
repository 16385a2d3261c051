--- `orch version`: the orch, Lua and libuv versions.
local M = {}

M.usage = [[
usage: orch version
       orch --version

Prints the orch, Lua and libuv versions.
]]

function M.args(c) end

function M.plan()
  io.stdout:write(require("orch").version(), "\n")
  return 0
end

return M
