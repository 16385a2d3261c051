-- examples/proc.lua: spawn a process, read its output, wait for it; then
-- the same in one call with orch.run{...}. Run: orch run examples/proc.lua
local p = assert(orch.spawn{ "sh", "-c", "echo hello; exit 3", stdout = "pipe" })
print(p)                          --> orch.Process: pid=812 running
print(p.stdout:read_line())       --> hello
print(p:wait())                   --> 3   nil
p.stdout:close()
local code, out = orch.run{ "uname", "-s" }
print(code, out)                  --> 0   Linux
