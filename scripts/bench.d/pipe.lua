-- pipe.lua (run by `orch run`): pipe throughput through orch.Stream, the
-- orch side of pipe_c.c. Both directions go through a FIFO whose other end
-- is the C program pipe_c, so only orch's own path is measured:
--   pipe_orchread   pipe_c writes, orch reads with :read()   (orch's read path)
--   pipe_orchwrite  orch writes 64 KiB strings, pipe_c reads (orch's write path)
-- Usage: orch run scripts/bench.d/pipe.lua [MB] [PROGS_DIR]
local orch = require "orch"

local MB = tonumber(arg and arg[1]) or 1024
local here = (arg and arg[0] or "scripts/bench.d/pipe.lua"):match("^(.*)/[^/]*$") or "."
local progs = (arg and arg[2]) or os.getenv("ORCH_PROGS") or (here .. "/../../build/progs")
local pipe_c = progs .. "/pipe_c"
local total = MB * 1024 * 1024

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local mk = io.popen("mktemp -d /tmp/orch-bench-pipe.XXXXXX")
local dir = assert(mk:read("l"), "mktemp failed")
mk:close()
-- The directory goes on every way out: the end of the script and an error
-- close this variable, and so does orch.exit, which SIGINT, SIGTERM and
-- SIGHUP are turned into (their default action would skip the clean-up).
local _ <close> = setmetatable({}, { __close = function() os.execute("rm -rf " .. q(dir)) end })
for _, sig in ipairs { "INT", "TERM", "HUP" } do
  orch.signal.on(sig, function() orch.exit(128 + orch.signal.number(sig)) end)
end
local fifo = dir .. "/fifo"

-- orch reads: the C writer blocks in open() until orch opens the FIFO.
assert(orch.fifo.make(fifo))
local r = assert(orch.fifo.open(fifo, "r"))
local t0 = orch.now()
local writer = io.popen(q(pipe_c) .. " --write " .. q(fifo) .. " " .. MB)
local n = 0
while true do
  local chunk, e = r:read()
  if not chunk then assert(not e, e) break end
  n = n + #chunk
end
local dt = orch.now() - t0
r:close()
writer:close()
assert(n == total, ("read %d bytes, expected %d"):format(n, total))
print(("pipe_orchread %.0f MB/s"):format(MB / dt))

-- orch writes: the open for writing waits (on a timer) for the reader.
local reader = io.popen(q(pipe_c) .. " --read " .. q(fifo))
local w = assert(orch.fifo.open(fifo, "w", 30))
local block = string.rep("x", 65536)
t0 = orch.now()
for _ = 1, total // #block do assert(w:write(block)) end
assert(w:shutdown())
dt = orch.now() - t0
local got = tonumber(reader:read("l"))
reader:close()
assert(got == total, ("the reader got %s bytes, expected %d"):format(tostring(got), total))
print(("pipe_orchwrite %.0f MB/s"):format(MB / dt))
