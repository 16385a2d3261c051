-- examples/job.lua: pipelines run as jobs, the way a shell runs them. Every
-- member goes into the first one's process group (orch.spawn's pgroup = N,
-- setpgid(2)), and the job is waited for as a group (orch.wait_group,
-- waitpid(-pgid)): member by member as they end, whoever they are. A
-- member that fails ends the job: the rest of its group gets TERM (a
-- shell's pipefail, made fail-fast).
--
--   orch run examples/job.lua
--
-- `yes | head -n 3`: head ends first, after three lines; yes then dies of
-- SIGPIPE at its next write, which is how a pipeline's writer learns that
-- nobody reads any more. `sh -c 'exit 2' | sleep 100`: the first member
-- fails, so sleep is stopped at once instead of in 100 seconds.
io.stdout:setvbuf("line")

-- Runs the commands connected stdout to stdin, as one process group.
local function job(...)
  local cmds = { ... }
  local procs, names, pg = {}, {}, nil
  local input                              -- the read end for the next member
  for i, cmd in ipairs(cmds) do
    local r, w
    if i < #cmds then r, w = assert(orch.pipe()) end
    local spec = { table.unpack(cmd) }
    spec.stdin, spec.stdout = input, w
    spec.pgroup = pg or true               -- the first leads; the others join
    local p = assert(orch.spawn(spec))
    pg = pg or p.pid
    -- The children have their copies: orch keeps none, or a reader would
    -- never see end of file and a writer never SIGPIPE.
    if input then input:close() end
    if w then w:close() end
    input = r
    procs[i], names[p.pid] = p, cmd[1]
  end
  local failed, ended = false, {}
  while true do
    local pid, code, sig = orch.wait_group(pg)
    if not pid then break end              -- ECHILD: nobody left in the job
    ended[pid] = code and "exit " .. code or "killed by " .. sig
    if not failed and (code and code ~= 0 or sig and sig ~= "PIPE") then
      failed = true
      orch.killpg(pg, "TERM")              -- the rest of the job
    end
  end
  -- Members that end together are collected in the kernel's order, not
  -- theirs: report them in the pipeline's.
  for _, p in ipairs(procs) do print(("  %s: %s"):format(names[p.pid], ended[p.pid])) end
  return not failed
end

print("yes | head -n 3")
print("job ok:", job({ "yes", "y" }, { "head", "-n", "3" }))
print("sh -c 'exit 2' | sleep 100")
print("job ok:", job({ "sh", "-c", "exit 2" }, { "sleep", "100" }))
