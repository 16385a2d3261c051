-- critical_section.lua: a state file rewritten in several steps that a
-- signal must never interrupt halfway. TERM and INT are blocked for the
-- critical section (sigprocmask): one that arrives meanwhile waits, pending
-- in the kernel, and is handled once the section is over, so the file is
-- always whole when orch stops.
--   orch run examples/critical_section.lua [state-file]
-- With no argument it sends itself a TERM in the middle of the section
-- (orch.signal.raise) to show the deferral; with a path, try
-- `kill -TERM <pid>` while it runs.
local path = arg and arg[1] or os.tmpname()
local demo = not (arg and arg[1])

local stopping = false
local function on_stop(name)
  print(("got %s: stopping after the section"):format(name))
  stopping = true
end
local term = orch.signal.on("TERM", on_stop)
local int = orch.signal.on("INT", on_stop)

local function update(generation)
  -- The critical section: write a temporary file, then rename it over the
  -- old one. A stop between the two would leave a stray temporary.
  local old = orch.signal.sigprocmask("block", { "TERM", "INT" })
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "w"))
  f:write(("generation %d\n"):format(generation))
  if demo and generation == 3 then
    orch.signal.raise("TERM")                       -- arrives mid-section
    print("in the section, pending: " .. table.concat(orch.signal.sigpending(), ","))
  end
  f:close()
  assert(os.rename(tmp, path))
  orch.signal.sigprocmask("setmask", old)           -- a pending TERM is delivered now
  if demo and generation == 3 then
    -- Its handler runs as a task as soon as this one yields.
    while not stopping do orch.sleep(0) end
  end
end

local generation = 0
while not stopping and generation < 100 do
  generation = generation + 1
  update(generation)
  orch.sleep(0.01)                                  -- the handler runs here, as a task
end

local f = assert(io.open(path))
print("state file: " .. f:read("l"))
f:close()
print("temporary left: " .. tostring(io.open(path .. ".tmp") ~= nil))
term:stop()
int:stop()
if demo then os.remove(path) end
