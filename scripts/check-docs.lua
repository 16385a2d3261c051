-- scripts/check-docs.lua (run by scripts/test with the orch binary):
-- fails when a public function or method has no entry in doc/*.md.
-- A function orch.a.b is documented by a heading line containing "orch.a.b(";
-- a method m of a class orch.X by a heading line containing ":m(".
local root = arg[1] or "."
local docs = {}
local p = io.popen("cat " .. root .. "/doc/*.md 2>/dev/null")
for line in p:lines() do
  if line:match("^#+ ") then docs[#docs + 1] = line end
end
p:close()
local text = table.concat(docs, "\n")

local missing = {}
local function need(pattern, what)
  if not text:find(pattern, 1, true) then missing[#missing + 1] = what end
end

local seen = {}
local function walk(t, prefix, depth)
  if seen[t] or depth > 3 then return end
  seen[t] = true
  for k, v in pairs(t) do
    if type(k) == "string" and not k:match("^_") then
      local name = prefix .. "." .. k
      if type(v) == "function" then need(name .. "(", name .. "()")
      elseif type(v) == "table" then walk(v, name, depth + 1) end
    end
  end
end
walk(orch, "orch", 1)

for name, mt in pairs(debug.getregistry()) do
  if type(name) == "string" and name:match("^orch%.%u") and type(mt) == "table"
     and type(mt.__index) == "table" then
    for m, f in pairs(mt.__index) do
      if type(f) == "function" and not m:match("^_") then need(":" .. m .. "(", name .. ":" .. m .. "()") end
    end
  end
end

-- The policy modules (lua/orch/*.lua beyond `require "orch"`) are
-- documented under the short name their page uses for the module table:
-- `sup.start(`, `sched.every(`, ... Their classes' methods (a Job, a
-- Watchdog) are covered by the registry walk above when they have a
-- metatable there, else by their page's `obj:method(` headings.
local policy_modules = {
  ["orch.supervisor"] = "sup", ["orch.scheduler"] = "sched", ["orch.watchdog"] = "watchdog",
  ["orch.ctl"] = "ctl", ["orch.sdnotify"] = "sdnotify", ["orch.repl"] = "repl",
  ["orch.heartbeat"] = "orch.heartbeat", ["orch.import"] = "import",
  ["orch.http"] = "http", ["orch.check"] = "check", ["orch.log"] = "log",
}
-- Every module file of lua/orch/ is covered: one without an entry above is
-- documented under its last name (orch.sim -> `sim.run(`). init.lua and
-- proc.lua are parts of `orch` (walked above); cli.lua is the command's own.
local internal = { init = true, proc = true, cli = true }
local ls = io.popen("ls " .. root .. "/lua/orch/*.lua 2>/dev/null")
for path in ls:lines() do
  local base = path:match("([^/]+)%.lua$")
  if base and not internal[base] and not policy_modules["orch." .. base] then
    policy_modules["orch." .. base] = base
  end
end
ls:close()
for modname, short in pairs(policy_modules) do
  local ok, m = pcall(require, modname)
  if not ok then
    missing[#missing + 1] = modname .. " (does not load: " .. tostring(m) .. ")"
  elseif type(m) == "table" then
    for k, v in pairs(m) do
      if type(k) == "string" and not k:match("^_") and type(v) == "function" then
        need(short .. "." .. k .. "(", modname .. "." .. k .. "()")
      end
    end
  end
end

table.sort(missing)
if #missing > 0 then
  io.stderr:write("check-docs: no doc/*.md heading for:\n  ", table.concat(missing, "\n  "), "\n")
  orch.exit(1)
end
print(("check-docs: every public function and method is documented"))
