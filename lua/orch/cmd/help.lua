--- `orch help [COMMAND]`: the list of commands, or one command's help.
local M = {}

M.usage = [[
usage: orch help [COMMAND]

Prints the list of commands, or one command's help (the same as
`orch COMMAND --help`).
]]

function M.args(c)
  c:argument("COMMAND"):target("topic"):args("?")
end

function M.plan(o)
  local text, err = require("orch.cli").help_of(o.topic)
  if not text then
    io.stderr:write(err, "\n")
    return 2
  end
  io.stdout:write(text)
  return 0
end

return M
