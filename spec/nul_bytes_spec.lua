-- Strings with a zero byte are refused (bad argument) wherever they would
-- reach the system as a C string, instead of being cut short there.
local h = require "spec.helper"
local orch = h.orch

describe("a zero byte in a name or path", function()
  it("raises a bad-argument error naming the function and the argument", function()
    local dir = h.tmpdir()
    local cases = {
      -- signals
      { function() return orch.kill(orch.getpid(), "TERM\0x") end, "bad argument #2 to 'kill' (string contains a zero byte)" },
      { function() return orch.killpg(orch.getpid(), "CONT\0x") end, "bad argument #2 to 'killpg' (string contains a zero byte)" },
      { function() return orch.signal.on("USR1\0x", function() end) end, "bad argument #1 to 'on' (string contains a zero byte)" },
      { function() return orch.signal.number("TERM\0x") end, "bad argument #1 to 'number' (string contains a zero byte)" },
      { function() return orch.signal.name("TERM\0x") end, "bad argument #1 to 'name' (string contains a zero byte)" },
      { function() return orch.signal.ignore("PIPE\0x") end, "bad argument #1 to 'ignore' (string contains a zero byte)" },
      -- spawn: program, arguments, environment, cwd, stdio paths, PATH, ids
      { function() return orch.spawn{ "/bin/true\0y" } end, "bad argument #1 to 'spawn' (argument 1 contains a zero byte)" },
      { function() return orch.spawn{ "true", "a\0b" } end, "bad argument #1 to 'spawn' (argument 2 contains a zero byte)" },
      { function() return orch.spawn{ "true", env = { A = "x\0y" } } end, "(option 'env': 'A' contains a zero byte)" },
      { function() return orch.spawn{ "true", env = { ["A\0B"] = "x" } } end, "(option 'env': invalid variable name" },
      { function() return orch.spawn{ "true", cwd = "/tmp\0x" } end, "bad argument #1 to 'spawn' (option 'cwd': string contains a zero byte)" },
      { function() return orch.spawn{ "true", stdout = dir .. "/o\0x" } end, "bad argument #1 to 'spawn' (option 'stdout': string contains a zero byte)" },
      { function() return orch.spawn{ "true", stderr = dir .. "/e\0x" } end, "bad argument #1 to 'spawn' (option 'stderr': string contains a zero byte)" },
      { function() return orch.spawn{ "true", stdin = "/dev/null\0x" } end, "bad argument #1 to 'spawn' (option 'stdin': string contains a zero byte)" },
      { function() return orch.spawn{ "true", path = "/bin\0:/usr/bin" } end, "bad argument #1 to 'spawn' (option 'path': string contains a zero byte)" },
      { function() return orch.spawn{ "true", uid = "root\0x" } end, "bad argument #1 to 'spawn' (option 'uid': string contains a zero byte)" },
      { function() return orch.spawn{ "true", gid = "root\0x" } end, "bad argument #1 to 'spawn' (option 'gid': string contains a zero byte)" },
      { function() return orch.spawn{ "true", env_mode = "merge\0x" } end, "bad argument #1 to 'spawn' (option 'env_mode': string contains a zero byte)" },
      -- daemonize refuses before it forks
      { function() return orch.daemonize{ stdout = dir .. "/o\0x" } end, "bad argument #1 to 'daemonize' (option 'stdout': string contains a zero byte)" },
      { function() return orch.daemonize{ pidfile = dir .. "/p\0x" } end, "bad argument #1 to 'daemonize' (option 'pidfile': string contains a zero byte)" },
      { function() return orch.daemonize{ chdir = "/\0tmp" } end, "bad argument #1 to 'daemonize' (option 'chdir': string contains a zero byte)" },
      -- files, FIFOs, sockets, keys
      { function() return orch.mmap{ path = dir .. "/m\0x", size = 10, create = true } end, "bad argument #1 to 'mmap' (option 'path': string contains a zero byte)" },
      { function() return orch.ipc.ftok("/tmp\0x") end, "bad argument #1 to 'ftok' (string contains a zero byte)" },
      { function() return orch.fifo.make(dir .. "/f\0x") end, "bad argument #1 to 'make' (path contains a zero byte)" },
      { function() return orch.listen{ unix = dir .. "/s\0x" } end, "bad argument #1 to 'listen' (option 'unix': string contains a zero byte)" },
      { function() return orch.connect{ unix = dir .. "/s\0x" } end, "bad argument #1 to 'connect' (option 'unix': string contains a zero byte)" },
      { function() return orch.connect{ host = "localhost\0x", port = 1 } end, "bad argument #1 to 'connect' (option 'host': string contains a zero byte)" },
      { function() return orch.term.read_history(dir .. "/h\0x") end, "bad argument #1 to 'read_history' (string contains a zero byte)" },
      { function() return orch.term.write_history(dir .. "/h\0x") end, "bad argument #1 to 'write_history' (string contains a zero byte)" },
      -- the control plane's own helpers
      { function() return orch.private.mkdir(dir .. "/d\0x", false) end, "bad argument #1 to 'mkdir' (string contains a zero byte)" },
      { function() return orch.sockets(dir .. "\0x") end, "bad argument #1 to 'sockets' (string contains a zero byte)" },
      { function() return require("orch.sdnotify").send("READY=1", dir .. "/n\0x") end, "bad argument #2 to 'send' (send: socket path contains a zero byte)" },
    }
    h.run(function() h.check_raises(cases) end)
    -- Nothing was created under the cut-short names.
    assert.are.equal("", h.sh("ls -A " .. h.shquote(dir)))
  end)

  it("orch.exec refuses the program, an argument or the environment (in a fork child)", function()
    h.run(function()
      for _, args in ipairs{ { "/bin/true\0y" }, { "sh", { "-c", "exit 3\0" } }, { "sh", { "-c", "exit 3" }, { X = "a\0b" } } } do
        local p = assert(orch.fork(function()
          local ok, err = pcall(orch.exec, table.unpack(args))
          if not ok and tostring(err):find("bad argument #%d to '[%w.]*exec' %(.*zero byte%)") then return 42 end
          io.stderr:write(tostring(err), "\n")
          return 1
        end))
        assert.are.same({ 42 }, { p:wait() })
      end
    end)
  end)
end)
