-- examples/pipeline.lua: `ls DIR | wc -l`, built from orch.pipe() and two
-- spawns, the way a shell connects a pipeline.
--   orch run examples/pipeline.lua [DIR]
local dir = arg[1] or "."

local r, w = assert(orch.pipe())
local ls = assert(orch.spawn{ "ls", "-1", dir, stdout = w })
local wc = assert(orch.spawn{ "wc", "-l", stdin = r, stdout = "pipe" })
-- Each child now has its own copy of its end. Close ours: while orch still
-- held the write end, wc would never see end-of-file.
r:close()
w:close()

local count = assert(wc.stdout:read_all())
wc.stdout:close()
ls:wait()
wc:wait()
print(("%s: %d entries"):format(dir, tonumber(count)))
