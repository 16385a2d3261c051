-- scripts/gen-lua-man.lua DOC_DIR > orch-lua.7.scd
-- Writes the scdoc source of orch-lua(7), the Lua API reference, from the
-- manual itself: every function and method heading of doc/*.md (the same
-- headings scripts/check-docs.lua requires) with the paragraph under it.
-- One source: a function documented in doc/ is in the man page.
local dir = arg[1] or "doc"

-- The pages in the manual's order (doc/index.md), then any other.
local pages, seen = {}, {}
local idx = assert(io.open(dir .. "/index.md")):read("a")
for page in idx:gmatch("%]%(([%w_%-]+%.md)%)") do
  if not seen[page] then seen[page] = true pages[#pages + 1] = page end
end

-- scdoc formats *bold* and _underline_; plain text escapes them.
local function esc(s)
  s = s:gsub("\\", "\\\\"):gsub("%*", "\\*"):gsub("_", "\\_")
  return (s:gsub("`", ""))
end

local out = { "orch-lua(7)", "", "# NAME", "",
  "orch-lua - the Lua API of orch (require \"orch\" and the policy modules)", "",
  "# DESCRIPTION", "",
  "Every function and method of orch's Lua API, with the first paragraph of",
  "its entry in the manual (_/usr/share/doc/orch/_, or _doc/_ in the source",
  "tree), where each has examples. Errors follow one rule: expected failures",
  "return *nil, message, ENAME*; programmer errors raise.", "" }

for _, page in ipairs(pages) do
  local f = io.open(dir .. "/" .. page)
  if f then
    local text = f:read("a")
    f:close()
    local title = text:match("^# ([^\n]+)")
    local entries = {}
    -- A heading naming a call ("### orch.spawn(opts)", "### p:wait([t])"),
    -- and the paragraph under it (up to a blank line, a heading or code).
    local head, body
    local function flush()
      if head then
        -- "*task.* Waits ..." (the context a call may be made in) -> "(task) Waits ...".
        local b = table.concat(body, " "):gsub("^%*([%w ,/]+)%.%*", "(%1)")
        entries[#entries + 1] = "*" .. esc(head) .. "*\n\t" .. esc(b)
      end
      head, body = nil, nil
    end
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
      local h = line:match("^###? ([^\n]-[%.:][%w_]+%b()[^\n]*)$")
      if h then
        flush()
        head, body = h, {}
      elseif head and (line:match("^%s*$") or line:match("^#") or line:match("^```")) then
        if #body > 0 or not line:match("^%s*$") then flush() end
      elseif head then
        body[#body + 1] = line:match("^%s*(.-)%s*$")
      end
    end
    flush()
    if #entries > 0 then
      out[#out + 1] = "# " .. esc((title or page):upper())
      out[#out + 1] = ""
      for _, e in ipairs(entries) do out[#out + 1] = e; out[#out + 1] = "" end
    end
  end
end
out[#out + 1] = "# SEE ALSO"
out[#out + 1] = ""
out[#out + 1] = "*orch*(1), *orch-ctl*(1), *lua5.4*(1)"
io.write(table.concat(out, "\n"), "\n")
