-- examples/fifo.lua: two unrelated processes talking through a FIFO. They
-- share no descriptor: each opens the FIFO by its path.
--   orch run examples/fifo.lua read PATH    makes the FIFO, prints what arrives
--   orch run examples/fifo.lua write PATH   sends three lines into it
--   orch run examples/fifo.lua              both: the reader here, the writer
--                                           started as a separate program
local role, path = arg[1], arg[2]

local function reader(fifo)
  -- Opening for reading never waits; the first read waits for a writer.
  local r <close> = assert(orch.fifo.open(fifo, "r"))
  for line in r:lines() do print("reader got: " .. line) end
  print("reader: end of file")
end

local function writer(fifo)
  -- The reader makes the FIFO: if it was started at the same time, give it
  -- a moment. Opening for writing then waits (up to 10 s) for the reader.
  local deadline = orch.now() + 10
  local w, err, code = orch.fifo.open(fifo, "w", 10)
  while not w and code == "ENOENT" and orch.now() < deadline do
    orch.sleep(0.01)
    w, err, code = orch.fifo.open(fifo, "w", 10)
  end
  assert(w, err)
  local _ <close> = w
  for i = 1, 3 do assert(w:write(("message %d\n"):format(i))) end
end

if role == "read" then
  local ok, err, code = orch.fifo.make(path)
  if not ok and code ~= "EEXIST" then error(err) end
  reader(path)
elseif role == "write" then
  writer(path)
elseif role == nil then
  local dir = assert(io.popen("mktemp -d /tmp/orch-fifo.XXXXXX")):read("l")
  local fifo = dir .. "/fifo"
  assert(orch.fifo.make(fifo))
  -- /proc/self/exe is the orch binary running this script.
  local other = assert(orch.spawn{ "/proc/self/exe", "run", arg[0], "write", fifo })
  reader(fifo)
  other:wait()
  os.remove(fifo)
  os.remove(dir)
else
  io.stderr:write("usage: orch run examples/fifo.lua [read|write PATH]\n")
  orch.exit(2)
end
