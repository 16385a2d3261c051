-- orch's start-up modules come from the executable's bytecode when the file
-- found has the text they were compiled from (src/precompiled.h, issue 15:
-- `orch ctl ping` spent a fifth of its CPU compiling them), and from the
-- file otherwise: an edited module always runs as edited, and a module
-- loaded either way reads the same in errors and tracebacks.
local h = require "spec.helper"

local LUA = h.sh("readlink -f " .. h.shquote(h.root .. "/lua")):gsub("\n$", "")  -- (the build's own path)

-- What `orch -e CODE` prints, with env.
local function eval(code, env)
  local rc, out, err = h.cli({ "-e", code }, nil, env)
  assert.are.equal(0, rc, err)
  return out
end

-- (orch.spawn: the rest of `orch` loads at its first key beyond the
-- start-up modules', with orch.callback, orch.heartbeat and orch.proc.)
local LIST = [[
local _ = orch.spawn
for _, m in ipairs { "orch.ctl.command", "orch.ctl.client", "orch.cmd.ctl" } do require(m) end
print(table.concat(orch._precompiled(), " "))]]

-- A tree for $ORCH_LUA_DIR holding orch/cli.lua as text.
local function tree_with_cli(text)
  local d = h.tmpdir()
  os.execute("mkdir -p " .. h.shquote(d .. "/orch"))
  h.write(d .. "/orch/cli.lua", text)
  return d
end

describe("precompiled modules", function()
  it("are what orch and orch ctl load at start, from the executable", function()
    local out = eval(LIST)
    for _, m in ipairs { "orch/init.lua", "orch/callback.lua", "orch/heartbeat.lua", "orch/proc.lua",
                         "orch/cli.lua", "orch/ctl/command.lua", "orch/ctl/client.lua", "orch/cmd/ctl.lua" } do
      assert.truthy((" " .. out:gsub("\n", "") .. " "):find(" " .. m .. " ", 1, true), m .. " not in: " .. out)
    end
  end)

  it("are not used for a file whose text changed, even with its length kept", function()
    local text = h.slurp(LUA .. "/orch/cli.lua")
    local same_len = text:gsub("usage: orch COMMAND", "usage: ORCH COMMAND", 1)
    local longer = text:gsub("usage: orch COMMAND", "usage: orch (edited) COMMAND", 1)
    assert.are.equal(#text, #same_len)
    for _, edited in ipairs { same_len, longer } do
      assert.are_not.equal(text, edited)
      local env = { ORCH_LUA_DIR = tree_with_cli(edited) }
      local out = eval(LIST, env)
      assert.falsy(out:find("orch/cli.lua", 1, true), out)
      assert.truthy(out:find("orch/init.lua", 1, true), out)     -- (the others still are)
      -- The edited text is what runs.
      local rc, _, err = h.cli({}, nil, env)
      assert.are.equal(2, rc)
      assert.truthy(err:find(edited:match("usage: [^\n]*"), 1, true), err)
    end
  end)

  it("read as the file they were compiled from: its path, lines and local names", function()
    local code = [[
      local f = require("orch.cli").plan
      local g = loadfile(package.searchpath("orch.cli", ...))().plan
      local a, b = debug.getinfo(f, "S"), debug.getinfo(g, "S")
      print(a.source, a.linedefined == b.linedefined, a.lastlinedefined == b.lastlinedefined,
            debug.getlocal(f, 1) == debug.getlocal(g, 1), table.concat(orch._precompiled(), " "))
    ]]
    -- From the source tree, and a copy of it in $ORCH_LUA_DIR (the same
    -- text at another path).
    local copy = tree_with_cli(h.slurp(LUA .. "/orch/cli.lua"))
    for _, case in ipairs { { LUA, {} }, { copy, { ORCH_LUA_DIR = copy } } } do
      local dir, env = case[1], case[2]
      local rc, out, err = h.cli({ "-e", code, dir .. "/?.lua" }, nil, env)
      assert.are.equal(0, rc, err)
      local source, line, last, locals, list = out:match("^(%S+)\t(%S+)\t(%S+)\t(%S+)\t(.-)\n$")
      assert.are.equal("@" .. dir .. "/orch/cli.lua", source, out)
      assert.are.same({ "true", "true", "true" }, { line, last, locals })
      assert.truthy(list:find("orch/cli.lua", 1, true), list)
    end
    -- An error raised inside a precompiled module names its file and line.
    local rc, _, err = h.cli({ "-e", "require('orch.cli').dispatch()" })
    assert.are.equal(1, rc)
    assert.truthy(err:find(LUA .. "/orch/cli.lua:", 1, true), err)
    assert.truthy(err:find("orch.cli.dispatch: no command was parsed", 1, true), err)
  end)
end)
