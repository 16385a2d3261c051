--- orch.proc layer: the Lua side of processes.
-- Adds orch.capture (what `orch.run{...}` dispatches to: spawn, capture
-- stdout and stderr, wait; a safe popen) and Process:lines().
-- The C side is src/l_proc.c; see doc/proc.md.

local capture_options = { input = true, timeout = true }

return function(orch)
  local spawn = orch.spawn
  local run_loop = orch.run           -- the core's orch.run(fn), before init.lua wraps it
  -- The methods of orch.Process, handed over by the C module for this layer.
  local Process = orch.proc._Process
  orch.proc._Process = nil

  local function capture(cmd)
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
    if not orch.current() then
      return run_loop(function() return orch.capture(cmd) end)
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
    local err_reader = orch.task(function() return p.stderr:read_all() end)
    local feeder
    if input then
      feeder = orch.task(function()
        p.stdin:write(input)          -- a child that stops reading gets EPIPE: fine
        p.stdin:close()
      end)
    end
    local killer
    if timeout then
      killer = orch.timer.after(timeout, function() p:kill("KILL") end)
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
  orch.capture = capture

  --- p:lines(): the lines of a process's stdout (spawned with stdout = "pipe").
  function Process.lines(p)
    local out = p.stdout
    if not out then error("lines: the process's stdout is not a pipe", 2) end
    return out:lines()
  end
end
