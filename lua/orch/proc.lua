--- orch.proc (Lua side): orch.capture, what `orch.run{...}` dispatches to:
-- spawn, capture stdout and stderr, wait; a safe popen. lua/orch/init.lua
-- installs it as orch.capture. The C side is src/l_proc.c (options: src/spawn.c); see doc/proc.md.
local C = require "orch.core"
local spawn, task, current, run_loop = C.proc.spawn, C.core.task, C.core.current, C.core.run
local after = C.timer.timer.after

local M = {}

local capture_options = { input = true, timeout = true }

function M.capture(cmd)
  if type(cmd) ~= "table" then
    error("bad argument #1 to 'run' (table expected, got " .. type(cmd) .. ")", 0)
  end
  local input, timeout = cmd.input, cmd.timeout
  if input ~= nil and type(input) ~= "string" then
    error("bad argument #1 to 'run' (option 'input': string expected, got " .. type(input) .. ")", 0)
  end
  if timeout ~= nil and (type(timeout) ~= "number" or timeout < 0 or timeout ~= timeout) then
    error("bad argument #1 to 'run' (option 'timeout': seconds expected)", 0)
  end
  if cmd.stdout ~= nil or cmd.stderr ~= nil then
    error("bad argument #1 to 'run' (stdout and stderr are captured: use orch.spawn to redirect them)", 0)
  end
  if input ~= nil and cmd.stdin ~= nil then
    error("bad argument #1 to 'run' (give either 'input' or 'stdin')", 0)
  end
  -- Outside any task (a plain lua5.4 script), drive the loop for this one call.
  if not current() then
    return run_loop(function() return M.capture(cmd) end)
  end
  local opts = {}
  for k, v in pairs(cmd) do
    if not capture_options[k] then opts[k] = v end
  end
  opts.stdout, opts.stderr = "pipe", "pipe"
  if input then opts.stdin = "pipe" elseif opts.stdin == nil then opts.stdin = "null" end

  local p, err, ename = spawn(opts)
  if not p then return nil, err, ename end
  -- The child may fill either pipe first: both are drained at once, and
  -- the input is fed from its own task (tmux's rule: done means exited
  -- and both outputs at EOF).
  local err_reader = task(function() return p.stderr:read_all() end)
  local feeder
  if input then
    feeder = task(function()
      p.stdin:write(input)          -- a child that stops reading gets EPIPE: fine
      p.stdin:close()
    end)
  end
  local killer
  if timeout then
    killer = after(timeout, function() p:kill("KILL") end)
  end
  local out, rerr, rename = p.stdout:read_all()
  local errout = err_reader:join()
  local code, sig = p:wait()
  if killer then killer:stop() end
  if feeder then feeder:join() end
  p.stdout:close()
  p.stderr:close()
  if out == nil then return nil, rerr, rename end
  return code, out, errout or "", sig
end

return M
