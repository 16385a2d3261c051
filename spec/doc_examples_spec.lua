-- Docs that are true: every ```lua block of the manual is a complete program
-- that runs and exits 0 (doc/supervisor.md's blocks run in
-- supervisor_doc_spec). A block that cannot run alone (it needs a running
-- orchestrator, a program of the reader's, or runs forever on purpose) is
-- fenced ```lua fragment and must still compile. A block whose first line
-- says `-- plain lua5.4` runs under a stock lua5.4 with orch's C module.
local h = require "spec.helper"
local u = require "spec.ctl_util"

local examples, fragments = {}, {}
for path in h.sh("ls " .. h.shquote(h.root .. "/doc") .. "/*.md"):gmatch("[^\n]+") do
  local page = path:match("([^/]+)%.md$")
  if page ~= "supervisor" then
    local text = h.slurp(path)
    local i = 0
    for info, code in text:gmatch("\n```lua([^\n]*)\n(.-)\n```") do
      i = i + 1
      local ex = { page = page, n = i, code = code, first = code:match("^[^\n]*") }
      if info:match("^%s*fragment") then fragments[#fragments + 1] = ex
      elseif info == "" then examples[#examples + 1] = ex
      else error(page .. ".md block " .. i .. ": unknown fence ```lua" .. info) end
    end
  end
end

local ipcns = select(2, h.sh("unshare --ipc true")) and "unshare --ipc " or ""

describe("the manual's examples", function()
  it("exist", function()
    assert.is_true(#examples >= 50, #examples .. " examples")
  end)

  for _, ex in ipairs(examples) do
    it(ex.page .. ".md example " .. ex.n .. " runs: " .. ex.first, function()
      local dir = h.tmpdir()
      local script = dir .. "/example.lua"
      h.write(script, ex.code .. "\n")
      local cmd
      if ex.first:find("plain lua5.4", 1, true) then
        cmd = "env LUA_CPATH=" .. h.shquote(h.build .. "/lua/?.so") .. " lua5.4 example.lua"
      else
        cmd = h.shquote(h.bin) .. " run example.lua"
      end
      -- Its own control socket: the default one (/run/orch/example.sock for
      -- root) and its lock would be shared by every example. Its own SysV
      -- IPC namespace where one can be made: an example that uses the
      -- default heartbeat table (as a reader's program would) leaves it to
      -- nobody else.
      local out, ok = h.sh(string.format("cd %s && XDG_RUNTIME_DIR=%s ORCH_SOCKET=%s timeout -s KILL 60 %s%s </dev/null 2>&1",
        h.shquote(dir), h.shquote(dir), h.shquote(dir .. "/ctl.sock"), ipcns, cmd))
      assert.is_true(ok, ex.page .. ".md example " .. ex.n .. " failed:\n" .. out)
      u.sanitizer_clean(out, ex.page .. ".md example " .. ex.n)
    end)
  end

  it("fragments still compile", function()
    for _, ex in ipairs(fragments) do
      local f, err = load(ex.code, "=" .. ex.page .. ".md fragment " .. ex.n)
      assert.is_truthy(f, err)
    end
  end)
end)
