-- Streams: pipes, FIFOs, unix and TCP sockets, unix datagram sockets.
-- Every test uses real kernel objects under a fresh h.tmpdir().
local h = require "spec.helper"
local orch = h.orch

local function my_uid() return tonumber((h.sh("id -u"))) end
local my_pid = orch.getpid
local eventually = h.eventually

-- A to-be-closed value closing every object given (Lua allows only one
-- <close> variable per local statement).
local function closer(...)
  local objs = table.pack(...)
  return setmetatable({}, { __close = function()
    for i = 1, objs.n do objs[i]:close() end
  end })
end

local function mode_of(path)
  return (h.sh("stat -c %a " .. h.shquote(path)))
end

local function exists(path)
  local _, ok = h.sh("test -e " .. h.shquote(path))
  return ok == true
end

-- Waits until the task is suspended in a wait (it has started its call).
local function waiting(task)
  while task:status() ~= "waiting" do orch.sleep(0) end
end

-- A task writing `total` bytes to w in 64 KiB blocks, then closing it;
-- it returns "written".
local function writer_task(w, total)
  return orch.task(function()
    local block = string.rep("0123456789abcdef", 4096)
    for _ = 1, total // #block do assert(w:write(block)) end
    w:close()
    return "written"
  end)
end

-- Runs fn(r, w) in the loop (h.run) on a fresh pipe, closed afterwards;
-- returns fn's results.
local function with_pipe(fn, deadline)
  return h.run(function()
    local r, w = orch.pipe()
    local _ <close> = closer(r, w)
    return fn(r, w)
  end, deadline)
end

describe("orch.pipe", function()
  it("carries data from the write end to the read end, then EOF", function()
    local got = table.pack(with_pipe(function(r, w)
      assert.are.equal("pipe", r:kind())
      assert.is_true(w:write("hello "))
      assert.is_true(w:write("wor", "ld", 42))
      w:close()
      local all = r:read_all()
      local after = table.pack(r:read())
      r:close()
      return all, after.n, after[1]
    end))
    assert.are.same({ "hello world42", 1, nil, n = 3 }, got)
  end)

  it("read returns a chunk as soon as data arrives, at most max bytes", function()
    local chunks = with_pipe(function(r, w)
      local t = orch.task(function()
        w:write("abcdef")
        orch.sleep(0.01)
        w:write("gh")
        w:close()
      end)
      local out = { r:read(4), r:read(), r:read(), r:read() }
      t:join()
      return out
    end)
    assert.are.same({ "abcd", "ef", "gh" }, chunks)
  end)

  it("reads lines, including one split over chunks and a last one without newline", function()
    local lines = with_pipe(function(r, w)
      orch.task(function()
        for _, piece in ipairs({ "ab", "c\nde", "f\n\nx", "yz\r\n", "tail" }) do
          w:write(piece)
          orch.sleep(0.005)
        end
        w:close()
      end)
      local out = {}
      for line in r:lines() do out[#out + 1] = line end
      out[#out + 1] = tostring(r:read_line())
      return out
    end)
    assert.are.same({ "abc", "def", "", "xyz\r", "tail", "nil" }, lines)
  end)

  it("bounds a line: a longer one is an error and stays readable with read", function()
    local r1 = table.pack(with_pipe(function(r, w)
      w:write(string.rep("x", 100) .. "\nshort\n")
      local a = table.pack(r:read_line(10))
      local rest = r:read(100)
      local nl = r:read_line(10)
      local line = r:read_line(10)
      return a[1], a[2], a[3], #rest, nl, line
    end))
    assert.are.same({ nil, "read_line: line longer than 10 bytes", "EMSGSIZE", 100, "", "short", n = 6 }, r1)
  end)

  it("bounds a line that has no newline yet", function()
    local r1 = table.pack(with_pipe(function(r, w)
      orch.task(function() w:write(string.rep("y", 300)) end)
      return r:read_line(200)
    end))
    assert.are.same({ nil, "read_line: line longer than 200 bytes", "EMSGSIZE", n = 3 }, r1)
  end)

  it("lines() raises a read error", function()
    local ok, err = pcall(with_pipe, function(r, w)
      w:write(string.rep("z", 50))
      w:close()
      for _ in r:lines(10) do end
    end)
    assert.is_false(ok)
    assert.matches("read_line: line longer than 10 bytes", err, 1, true)
  end)

  it("read_all with a limit", function()
    local r1 = table.pack(with_pipe(function(r, w)
      orch.task(function() w:write(string.rep("a", 1000)); w:close() end)
      return r:read_all(10)
    end))
    assert.are.same({ nil, "read_all: more than 10 bytes", "ENOBUFS", n = 3 }, r1)
  end)

  it("read_all of an empty stream is the empty string", function()
    assert.are.equal("", with_pipe(function(r, w)
      w:close()
      return r:read_all()
    end))
  end)

  it("applies back-pressure: a slow reader blocks only the writer's task", function()
    local total = 8 * 1024 * 1024
    local res = with_pipe(function(r, w)
      local ticks = 0
      local ticker = orch.timer.every(0.005, function() ticks = ticks + 1 end)
      local writer = writer_task(w, total)
      local first = r:read()
      -- The reader pauses: nobody reads, so orch must not drain the pipe
      -- into memory, and the writer stays suspended while timers run.
      local t0 = ticks
      eventually(function() return ticks >= t0 + 10 end, "timer ticks")
      local writer_waiting = writer:status()
      local n = #first
      while true do
        local c = r:read()
        if not c then break end
        n = n + #c
      end
      ticker:stop()
      return { writer_waiting = writer_waiting, n = n, writer = writer:join() }
    end, 120)
    assert.are.equal("waiting", res.writer_waiting)
    assert.are.equal(total, res.n)
    assert.are.equal("written", res.writer)
  end)

  it("a write to a pipe whose reader is gone fails with EPIPE", function()
    local r1 = table.pack(with_pipe(function(r, w)
      r:close()
      return w:write("x")
    end))
    assert.are.same({ nil, "write: broken pipe", "EPIPE", n = 3 }, r1)
  end)

  it("reports wrong-direction use as an error", function()
    local r1 = table.pack(with_pipe(function(r, w)
      local a = table.pack(r:write("x"))
      local b = table.pack(w:read())
      local c = table.pack(r:shutdown())
      return a[2], a[3], b[2], b[3], c[2]
    end))
    assert.are.same({ "write: stream is not writable", "EBADF", "read: stream is not readable",
                      "EBADF", "shutdown: stream is not writable", n = 5 }, r1)
  end)

  it("shutdown of a pipe's write end flushes and closes it", function()
    local r1 = table.pack(with_pipe(function(r, w)
      orch.task(function()
        w:write(string.rep("q", 300000))
      end)
      orch.sleep(0)
      local t = orch.task(function() return w:shutdown() end)
      local all = r:read_all()
      return #all, t:join(), tostring(w)
    end))
    assert.are.same({ 300000, true, "orch.Stream: pipe closed", n = 3 }, r1)
  end)

  it("close wakes a task reading in another task", function()
    local r1 = table.pack(with_pipe(function(r, w)
      local reader = orch.task(function() return r:read() end)
      waiting(reader)
      r:close()
      return reader:join()
    end))
    assert.are.same({ nil, "read: stream closed", "ECANCELED", n = 3 }, r1)
  end)

  it("close wakes a task writing into a full pipe", function()
    local r1 = table.pack(with_pipe(function(r, w)
      local writer = orch.task(function() return w:write(string.rep("x", 4 * 1024 * 1024)) end)
      waiting(writer)
      w:close()
      return writer:join()
    end))
    assert.are.same({ nil, "write: stream closed", "ECANCELED", n = 3 }, r1)
  end)

  it("a cancelled reader leaves the stream usable", function()
    local got = with_pipe(function(r, w)
      local reader = orch.task(function() return r:read_line() end)
      waiting(reader)
      w:write("partial ")
      orch.sleep(0.01)
      reader:cancel()
      w:write("line\nnext\n")
      return { r:read_line(), r:read_line() }
    end)
    assert.are.same({ "partial line", "next" }, got)
  end)

  it("writes several pieces in order when the pipe takes only part of them at once", function()
    -- A pipe holds 64 KiB: the kernel takes the first pieces (the first
    -- one whole or in part) and the rest is queued, piece after piece.
    local pieces = { string.rep("a", 65536), "", string.rep("b", 100000), "\n", 42, string.rep("c", 70001) }
    local all = with_pipe(function(r, w)
      local writer = orch.task(function()
        assert(w:write(table.unpack(pieces)))
        assert(w:write(string.rep("d", 30000), "END"))
        w:close()
      end)
      local s = r:read_all()
      writer:join()
      return s
    end)
    assert.are.equal(string.rep("a", 65536) .. string.rep("b", 100000) .. "\n42" .. string.rep("c", 70001)
                     .. string.rep("d", 30000) .. "END", all)
  end)

  it("streams with data in the same loop turn each get their own bytes", function()
    -- An idle stream reads into a buffer all streams share, then keeps a
    -- copy of what it read: five pipes filled before any reader runs, read
    -- in one loop turn by read_all, lines, a partial read and on_read.
    local res = h.run(function()
      local pipes, want = {}, {}
      for i = 1, 5 do
        local r, w = orch.pipe()
        pipes[i] = { r = r, w = w }
        local line = string.rep(string.char(96 + i), 99) .. "\n"
        want[i] = string.rep(line, 400)                -- 40,000 bytes, under a pipe's 64 KiB
        assert(w:write(want[i]))
        w:close()
      end
      local got, tasks = {}, {}
      tasks[1] = orch.task(function() got[1] = pipes[1].r:read_all() end)
      tasks[2] = orch.task(function()
        local out = {}
        for l in pipes[2].r:lines() do out[#out + 1] = l .. "\n" end
        got[2] = table.concat(out)
      end)
      tasks[3] = orch.task(function()
        local head = pipes[3].r:read(150)               -- a part stays buffered
        orch.sleep(0.01)
        got[3] = head .. pipes[3].r:read_all()
      end)
      tasks[4] = orch.task(function() got[4] = pipes[4].r:read_all() end)
      local chunks, eof = {}, orch.cond()
      pipes[5].r:on_read(function(chunk)
        if chunk then chunks[#chunks + 1] = chunk else eof:signal() end
      end)
      for _, t in ipairs(tasks) do t:join() end
      eof:wait(10)
      got[5] = table.concat(chunks)
      for _, p in ipairs(pipes) do p.r:close() end
      local same = {}
      for i = 1, 5 do same[i] = got[i] == want[i] or (#tostring(got[i]) .. " bytes differ") end
      return same
    end)
    assert.are.same({ true, true, true, true, true }, res)
  end)

  it("a cancelled writer leaves the stream consistent", function()
    local n, tail = with_pipe(function(r, w)
      local big = string.rep("w", 1024 * 1024)
      local writer = orch.task(function() return w:write(big) end)
      waiting(writer)
      writer:cancel()
      -- The bytes already queued still arrive, then the next write;
      -- shutdown flushes them all before closing the pipe.
      local done = orch.task(function() assert(w:write("END")); assert(w:shutdown()) end)
      local all = r:read_all()
      done:join()
      return #all, all:sub(-3)
    end)
    assert.are.equal(1024 * 1024 + 3, n)
    assert.are.equal("END", tail)
  end)

  it("times out a read with set_timeout, then reads what came later", function()
    local r1 = table.pack(with_pipe(function(r, w)
      assert.are.equal(r, r:set_timeout(0.02))
      local a, b, c = r:read()
      w:write("late")
      r:set_timeout(nil)
      return a, b, c, r:read()
    end))
    assert.are.same({ nil, "read: timed out", "ETIMEDOUT", "late", n = 4 }, r1)
  end)

  it("refuses a second reader", function()
    local r1 = table.pack(with_pipe(function(r, w)
      local first = orch.task(function() return r:read() end)
      waiting(first)
      local a = table.pack(r:read())
      w:write("x")
      return a[2], a[3], first:join()
    end))
    assert.are.same({ "read: another task is reading this stream", "EBUSY", "x", n = 3 }, r1)
  end)

  it("has a readable __tostring and fd", function()
    local r, w = orch.pipe()
    local _ <close> = closer(r, w)
    assert.matches("^orch.Stream: pipe fd=%d+ open$", tostring(r))
    assert.are.equal(tostring(r), "orch.Stream: pipe fd=" .. r:fd() .. " open")
    assert.are_not.equal(r:fd(), w:fd())
    r:close()
    w:close()
    assert.are.equal("orch.Stream: pipe closed", tostring(r))
  end)

  it("fds are close-on-exec", function()
    local r, w = orch.pipe()
    local _ <close> = closer(r, w)
    local flags = h.slurp("/proc/self/fdinfo/" .. r:fd()):match("flags:%s*(%d+)")
    assert.is_truthy(flags)
    assert.are_not.equal(0, tonumber(flags, 8) & tonumber("2000000", 8))
  end)

  it("close is idempotent; <close> and the GC close", function()
    local r, w = orch.pipe()
    local _ <close> = closer(r, w)
    assert.is_true(r:close())
    assert.is_true(r:close())
    do local _ <close> = w end
    assert.are.equal("orch.Stream: pipe closed", tostring(w))
    -- The pipes' own inodes (from one listing of the fd table) must all be
    -- gone once they are collected. Counting fds instead would also see
    -- unrelated fds that earlier tests' garbage closes meanwhile.
    local function pipe_inodes()
      local set = {}
      for ino in h.sh("ls -l /proc/" .. my_pid() .. "/fd"):gmatch("pipe:%[(%d+)%]") do set[ino] = true end
      return set
    end
    local before = pipe_inodes()
    local fds = {}
    for _ = 1, 50 do
      local a, b = orch.pipe()
      fds[#fds + 1], fds[#fds + 2] = a:fd(), b:fd()
    end
    local mine = {}
    local listing = h.sh("ls -l /proc/" .. my_pid() .. "/fd")
    for _, fd in ipairs(fds) do
      local ino = listing:match("%f[%d]" .. fd .. " %-> pipe:%[(%d+)%]")
      assert.is_truthy(ino, "fd " .. fd .. " is a pipe")
      if not before[ino] then mine[#mine + 1] = ino end
    end
    assert.are.equal(100, #mine)
    collectgarbage()
    collectgarbage()
    local after = pipe_inodes()
    for _, ino in ipairs(mine) do assert.is_nil(after[ino], "pipe " .. ino .. " still open") end
  end)

  it("use after close raises", function()
    local r, w = orch.pipe()
    local _ <close> = closer(r, w)
    r:close()
    w:close()
    local calls = {
      function() return r:read() end, function() return r:read_line() end,
      function() return r:read_all() end, function() return r:lines() end,
      function() return w:write("x") end, function() return w:shutdown() end,
      function() return r:fd() end, function() return r:kind() end,
      function() return r:set_timeout(1) end, function() return r:peer_cred() end,
    }
    for i, f in ipairs(calls) do
      local ok, err = pcall(f)
      assert.is_false(ok, "call " .. i)
      assert.matches("attempt to use a closed orch.Stream", err, 1, true)
    end
  end)

  it("waiting methods must be called from a task", function()
    local r, w = orch.pipe()
    local _ <close> = closer(r, w)
    for name, f in pairs({
      read = function() return r:read() end, read_line = function() return r:read_line() end,
      read_all = function() return r:read_all() end, write = function() return w:write("x") end,
      shutdown = function() return w:shutdown() end,
    }) do
      assert.matches(name .. ": must be called from a task", h.error_of(f), 1, true)
    end
  end)
end)

describe("bad arguments", function()
  local r, w
  setup(function() r, w = orch.pipe() end)
  teardown(function() r:close(); w:close() end)

  local cases = {
    { function() return orch.pipe(1) end, "bad argument #1 to 'pipe' (no value expected)" },
    { function() return r:read(0) end, "bad argument #1 to 'read' (size must be positive)" },
    { function() return r:read("x") end, "bad argument #1 to 'read' (number expected, got string)" },
    { function() return r:read_line(-1) end, "bad argument #1 to 'read_line' (size must be positive)" },
    { function() return r:read_all(1.5) end, "bad argument #1 to 'read_all' (number has no integer representation)" },
    { function() return r:read(1, 2) end, "bad argument #2 to 'read' (no value expected)" },
    { function() return w:write() end, "bad argument #1 to 'write' (string expected, got no value)" },
    { function() return w:write({}) end, "bad argument #1 to 'write' (string expected, got table)" },
    { function() return w:write("a", true) end, "bad argument #2 to 'write' (string expected, got boolean)" },
    { function() return r.read(42) end, "bad argument #1 to 'read' (orch.Stream expected, got number)" },
    { function() return r:set_timeout(-1) end, "bad argument #1 to 'set_timeout' (seconds must be a finite number >= 0)" },
    { function() return orch.fifo.make() end, "bad argument #1 to 'make' (string expected, got no value)" },
    { function() return orch.fifo.make("/tmp/x", 0x10000) end, "bad argument #2 to 'make' (permission bits (0 to 0o7777) expected)" },
    { function() return orch.fifo.make("/tmp/a\0b") end, "bad argument #1 to 'make' (path contains a zero byte)" },
    { function() return orch.fifo.open("", "r") end, "bad argument #1 to 'open' (empty path)" },
    { function() return orch.fifo.open("/tmp/x", "rw") end, "bad argument #2 to 'open' (invalid option 'rw')" },
    { function() return orch.fifo.open("/tmp/x") end, "bad argument #2 to 'open' (string expected, got no value)" },
    { function() return orch.listen() end, "bad argument #1 to 'listen' (table expected, got no value)" },
    { function() return orch.listen{ unixx = "/x" } end, "bad argument #1 to 'listen' (unknown option 'unixx')" },
    { function() return orch.listen{} end, "bad argument #1 to 'listen' (option 'unix', 'port' or 'fd' expected)" },
    { function() return orch.listen{ unix = "/x", port = 1 } end, "bad argument #1 to 'listen' (option 'unix' excludes 'host' and 'port')" },
    { function() return orch.listen{ unix = "" } end, "bad argument #1 to 'listen' (option 'unix': empty socket path)" },
    { function() return orch.listen{ unix = "a\0b" } end, "bad argument #1 to 'listen' (option 'unix': string contains a zero byte)" },
    { function() return orch.listen{ unix = 5 } end, "bad argument #1 to 'listen' (option 'unix': string expected, got number)" },
    { function() return orch.listen{ port = 70000 } end, "bad argument #1 to 'listen' (option 'port': port number (0 to 65535) expected)" },
    { function() return orch.listen{ port = "eighty" } end, "bad argument #1 to 'listen' (option 'port': integer expected, got string)" },
    { function() return orch.listen{ port = 0, host = "example.com" } end, "bad argument #1 to 'listen' (option 'host': numeric IPv4 or IPv6 address expected)" },
    { function() return orch.listen{ port = 0, mode = 384 } end, "bad argument #1 to 'listen' (option 'mode' applies to unix sockets only)" },
    { function() return orch.listen{ unix = "/x", mode = -1 } end, "bad argument #1 to 'listen' (option 'mode': permission bits (0 to 0o7777) expected)" },
    { function() return orch.listen{ port = 0, backlog = 0 } end, "bad argument #1 to 'listen' (option 'backlog': a number from 1 to 65535 expected)" },
    { function() return orch.listen({ port = 0 }, 1) end, "bad argument #2 to 'listen' (no value expected)" },
    { function() return orch.connect{ port = 0 } end, "bad argument #1 to 'connect' (option 'port': port number (1 to 65535) expected)" },
    { function() return orch.connect{ port = 1, timeout = -1 } end, "bad argument #1 to 'connect' (option 'timeout': seconds (a finite number >= 0) expected)" },
    { function() return orch.connect{ port = 1, host = "" } end, "bad argument #1 to 'connect' (option 'host': empty host name)" },
    { function() return orch.connect{ host = "h" } end, "bad argument #1 to 'connect' (option 'unix' or 'port' expected)" },
    { function() return orch.connect{ unix = "@" } end, "bad argument #1 to 'connect' (option 'unix': empty socket path)" },
    { function() return orch.connect{ port = 1, path = "x" } end, "bad argument #1 to 'connect' (unknown option 'path')" },
    { function() return orch.dgram{ unix = "/x", passcred = 1 } end, "bad argument #1 to 'dgram' (option 'passcred': boolean expected, got number)" },
    { function() return orch.dgram{ sock = "/x" } end, "bad argument #1 to 'dgram' (unknown option 'sock')" },
    { function() return orch.dgram("x") end, "bad argument #1 to 'dgram' (table expected, got string)" },
  }
  for i, c in ipairs(cases) do
    it("case " .. i .. ": " .. c[2], function()
      assert.are.equal(c[2], (h.error_of(c[1]):gsub("^[^:]*:%d+: ", "")))
    end)
  end

  it("connect must be called from a task", function()
    assert.matches("connect: must be called from a task", h.error_of(orch.connect, { port = 1 }), 1, true)
  end)
end)

describe("orch.fifo", function()
  local dir
  before_each(function() dir = h.tmpdir() end)

  it("make creates a FIFO with mode 0600 by default, or the given mode exactly", function()
    assert.is_true(orch.fifo.make(dir .. "/f"))
    assert.are.equal("600", mode_of(dir .. "/f"))
    assert.are.equal("fifo", (h.sh("stat -c %F " .. dir .. "/f")))
    assert.is_true(orch.fifo.make(dir .. "/g", tonumber("640", 8)))
    assert.are.equal("640", mode_of(dir .. "/g"))
    assert.are.same({ nil, "fifo.make: file exists", "EEXIST" }, { orch.fifo.make(dir .. "/f") })
  end)

  it("reads what a child shell writes", function()
    local path = dir .. "/f"
    assert(orch.fifo.make(path))
    local got = table.pack(h.run(function()
      local r <close> = assert(orch.fifo.open(path, "r"))
      assert.are.equal("fifo", r:kind())
      os.execute("sh -c 'printf \"hi\\nthere\\n\" > " .. path .. "' &")
      return r:read_line(), r:read_line(), r:read_line()
    end))
    assert.are.same({ "hi", "there", nil, n = 3 }, got)
  end)

  it("writes to a child shell, waiting for the reader to open", function()
    local path, out = dir .. "/f", dir .. "/out"
    assert(orch.fifo.make(path))
    local text = h.run(function()
      -- Nobody reads yet: the open retries until the shell opens its end.
      local opener = orch.task(function() return assert(orch.fifo.open(path, "w")) end)
      waiting(opener)
      os.execute("sh -c 'cat " .. path .. " > " .. out .. ".tmp && mv " .. out .. ".tmp " .. out .. "' &")
      local w <close> = opener:join()
      assert(w:write("from orch\n"))
      w:close()
      eventually(function() return exists(out) end, "the shell's output")
      return h.slurp(out)
    end)
    assert.are.equal("from orch\n", text)
  end)

  it("open for writing times out when nobody reads", function()
    assert(orch.fifo.make(dir .. "/f"))
    local r1 = table.pack(h.run(function() return orch.fifo.open(dir .. "/f", "w", 0.05) end))
    assert.are.same({ nil, "fifo.open: timed out", "ETIMEDOUT", n = 3 }, r1)
  end)

  it("refuses a file that is not a FIFO, and a missing one", function()
    local f = io.open(dir .. "/plain", "w")
    f:close()
    assert.are.same({ nil, "fifo.open: not a FIFO: " .. dir .. "/plain", "EINVAL" },
                    { orch.fifo.open(dir .. "/plain", "r") })
    assert.are.same({ nil, "fifo.open: no such file or directory", "ENOENT" },
                    { orch.fifo.open(dir .. "/none", "r") })
    local r1 = table.pack(h.run(function() return orch.fifo.open(dir .. "/plain", "w") end))
    assert.are.equal("EINVAL", r1[3])
  end)

  it("opening for writing must be called from a task", function()
    assert(orch.fifo.make(dir .. "/f"))
    assert.matches("fifo.open: must be called from a task", h.error_of(orch.fifo.open, dir .. "/f", "w"), 1, true)
  end)
end)

describe("unix sockets", function()
  local dir
  before_each(function() dir = h.tmpdir() end)

  it("listen, accept, connect: a round trip", function()
    local path = dir .. "/s.sock"
    local res = h.run(function()
      local l <close> = assert(orch.listen{ unix = path })
      assert.are.equal(path, l:address())
      assert.is_nil(l.port)
      assert.are.equal("orch.Listener: unix=" .. path .. " fd=" .. l:fd() .. " open", tostring(l))
      local client = orch.task(function()
        local c <close> = assert(orch.connect{ unix = path })
        assert.are.equal("unix", c:kind())
        assert(c:write("ping\n"))
        assert(c:shutdown())          -- half-close: the server sees EOF
        return c:read_all()
      end)
      local s <close> = assert(l:accept())
      local line = s:read_line()
      local eof = s:read()
      s:write("pong:" .. line)
      s:close()
      return { client = client:join(), eof = eof, mode = mode_of(path) }
    end)
    assert.are.same({ client = "pong:ping", mode = "600" }, res)
    assert.is_false(exists(path), "close removes the socket file")
  end)

  it("peer_cred returns the peer's pid, uid and gid", function()
    local path = dir .. "/s.sock"
    local cred, ccred = h.run(function()
      local l <close> = assert(orch.listen{ unix = path })
      local t = orch.task(function()
        local c <close> = assert(orch.connect{ unix = path })
        local cr = c:peer_cred()
        c:read()
        return cr
      end)
      local s <close> = l:accept()
      local cr = s:peer_cred()
      s:close()
      return cr, t:join()
    end)
    assert.are.equal(my_uid(), cred.uid)
    assert.are.equal(my_pid(), cred.pid)
    assert.are.equal(tonumber((h.sh("id -g"))), cred.gid)
    assert.are.same(cred, ccred)
  end)

  it("the socket file gets the requested mode", function()
    local path = dir .. "/m.sock"
    local m = h.run(function()
      local l <close> = assert(orch.listen{ unix = path, mode = tonumber("660", 8) })
      return mode_of(path)
    end)
    assert.are.equal("660", m)
  end)

  it("replaces a stale socket file but not a live one or a regular file", function()
    local path = dir .. "/s.sock"
    local res = h.run(function()
      -- A stale socket file: a hard link to a socket whose owner is gone.
      local d = assert(orch.dgram{ unix = dir .. "/orig" })
      assert(os.execute("ln " .. dir .. "/orig " .. path))
      d:close()
      local l1 = assert(orch.listen{ unix = path })
      local a = table.pack(orch.listen{ unix = path })
      l1:close()
      local f = io.open(dir .. "/plain", "w")
      f:close()
      local b = table.pack(orch.listen{ unix = dir .. "/plain" })
      return { a[1], a[2], a[3], b[2], b[3], exists(dir .. "/plain") }
    end)
    assert.are.same({ nil, "listen: address already in use", "EADDRINUSE",
                      "listen: file exists", "EEXIST", true }, res)
  end)

  it("abstract socket names work", function()
    local name = "@orch-spec-" .. my_pid() .. "-" .. math.random(1e9)
    local got = h.run(function()
      local l <close> = assert(orch.listen{ unix = name })
      assert.are.equal(name, l:address())
      orch.task(function()
        local c <close> = assert(orch.connect{ unix = name })
        c:write("abstract")
      end)
      local s <close> = l:accept()
      return s:read_all()
    end)
    assert.are.equal("abstract", got)
  end)

  it("connect errors: missing socket, nobody listening, name too long", function()
    local res = h.run(function()
      local a = table.pack(orch.connect{ unix = dir .. "/none" })
      local d = assert(orch.dgram{ unix = dir .. "/orig" })
      assert(os.execute("ln " .. dir .. "/orig " .. dir .. "/stale"))
      d:close()
      local b = table.pack(orch.connect{ unix = dir .. "/stale" })
      local c = table.pack(orch.connect{ unix = "/" .. string.rep("n", 200) })
      return { a[2], a[3], b[2], b[3], c[2], c[3] }
    end)
    assert.are.same({ "connect: no such file or directory", "ENOENT",
                      "connect: connection refused", "ECONNREFUSED",
                      "connect: file name too long", "ENAMETOOLONG" }, res)
  end)

  it("close wakes a task waiting in accept; accept honours set_timeout", function()
    local res = table.pack(h.run(function()
      local l = assert(orch.listen{ unix = dir .. "/s" })
      local t = orch.task(function() return l:accept() end)
      waiting(t)
      l:close()
      local a = table.pack(t:join())
      local l2 <close> = assert(orch.listen{ unix = dir .. "/s2" })
      l2:set_timeout(0.02)
      local b = table.pack(l2:accept())
      return a[1], a[2], a[3], b[2], b[3]
    end))
    assert.are.same({ nil, "accept: listener closed", "ECANCELED", "accept: timed out", "ETIMEDOUT", n = 5 },
                    res)
  end)

  it("queued connections wait in the kernel until accepted", function()
    local path = dir .. "/q.sock"
    local got = h.run(function()
      local l <close> = assert(orch.listen{ unix = path })
      local clients = {}
      for i = 1, 5 do
        clients[i] = orch.task(function()
          local c <close> = assert(orch.connect{ unix = path })
          c:write("client" .. i)
          c:shutdown()
          return c:read_all()
        end)
      end
      orch.sleep(0.02)
      local seen = {}
      for _ = 1, 5 do
        local s <close> = assert(l:accept())
        local msg = s:read_all()
        seen[#seen + 1] = msg
        s:write("ok " .. msg)
      end
      for i = 1, 5 do assert.are.equal("ok client" .. i, clients[i]:join()) end
      table.sort(seen)
      return seen
    end)
    assert.are.same({ "client1", "client2", "client3", "client4", "client5" }, got)
  end)

  -- The fds libuv's epoll set watches (each eventpoll fd's fdinfo lists
  -- them as "tfd: N").
  local function polled()
    local set, pid = {}, my_pid()
    for ep in h.sh("ls -l /proc/" .. pid .. "/fd"):gmatch(" (%d+) %-> anon_inode:%[eventpoll%]") do
      for fd in h.slurp("/proc/" .. pid .. "/fdinfo/" .. ep):gmatch("tfd:%s*(%d+)") do set[tonumber(fd)] = true end
    end
    return set
  end

  -- `orch ctl`'s server (issue 15): a task that accepts again right away
  -- waits on the same poll, which is not removed from the epoll set and
  -- added back at every connection; the poll stops once no task waits.
  it("keeps the listener polled while its task handles a connection it waited for, and no longer once no task waits", function()
    local path = dir .. "/p.sock"
    local res = h.run(function()
      local l <close> = assert(orch.listen{ unix = path })
      local lfd = l:fd()
      local server = orch.task(function()
        local s <close> = assert(l:accept())
        return polled()[lfd] == true
      end)
      waiting(server)
      local c <close> = assert(orch.connect{ unix = path })
      local during = server:join()
      return { during = during, after = polled()[lfd] == true }
    end)
    assert.are.same({ during = true, after = false }, res)
  end)

  it("reads a request the client sent before the accept without waiting for the loop", function()
    local path = dir .. "/r.sock"
    local res = h.run(function()
      local l <close> = assert(orch.listen{ unix = path })
      local sent = orch.cond()
      local client = orch.task(function()
        local c <close> = assert(orch.connect{ unix = path })
        assert(c:write("ping\n"))
        sent:signal()
        return c:read_line() .. "\n"
      end)
      sent:wait()
      local s <close> = assert(l:accept())
      local line = s:read_line()
      -- Read from the socket at once, not through the loop's poll.
      local through_poll = polled()[s:fd()] == true
      -- The next read waits as usual: the client's EOF once it has the reply.
      assert(s:write("pong\n"))
      local client_got = client:join()
      return { line = line, through_poll = through_poll, client_got = client_got, eof = s:read_line() }
    end)
    assert.are.same({ line = "ping", through_poll = false, client_got = "pong\n" }, res)
  end)

  it("a listener alone does not keep orch running", function()
    local v = h.run(function()
      orch.task(function()
        local l = assert(orch.listen{ unix = dir .. "/idle" })
        orch.sleep(0.01)
        return l
      end)
      return "done"
    end)
    assert.are.equal("done", v)
  end)

  it("use after close raises", function()
    local l = assert(orch.listen{ unix = dir .. "/c" })
    l:close()
    assert.is_true(l:close())
    assert.are.equal("orch.Listener: unix closed", tostring(l))
    for _, f in ipairs({ function() return l:accept() end, function() return l:address() end,
                         function() return l:fd() end, function() return l:set_timeout(1) end }) do
      assert.matches("attempt to use a closed orch.Listener", h.error_of(f), 1, true)
    end
  end)
end)

describe("TCP", function()
  it("listens on 127.0.0.1 with port 0 and round-trips", function()
    local res = h.run(function()
      local l <close> = assert(orch.listen{ host = "127.0.0.1", port = 0 })
      assert.is_true(l.port > 0)
      local host, port = l:address()
      assert.are.equal("127.0.0.1", host)
      assert.are.equal(l.port, port)
      assert.are.equal("orch.Listener: tcp=127.0.0.1:" .. port .. " fd=" .. l:fd() .. " open", tostring(l))
      local client = orch.task(function()
        local c <close> = assert(orch.connect{ host = "127.0.0.1", port = l.port, timeout = 10 })
        assert.are.equal("tcp", c:kind())
        for i = 1, 3 do assert(c:write("line " .. i .. "\n")) end
        assert(c:shutdown())
        return c:read_all()
      end)
      local s <close> = assert(l:accept())
      local lines = {}
      for line in s:lines() do lines[#lines + 1] = line end
      s:write(table.concat(lines, ","))
      s:close()
      return { reply = client:join(), n = #lines }
    end)
    assert.are.same({ reply = "line 1,line 2,line 3", n = 3 }, res)
  end)

  it("resolves host names and reports refused connections", function()
    local res = h.run(function()
      local l = assert(orch.listen{ port = 0 })
      local port = l.port
      l:close()
      local a = table.pack(orch.connect{ host = "localhost", port = port })
      local b = table.pack(orch.connect{ host = "no-such-host.invalid", port = port })
      return { a[2], a[3], b[3] }
    end)
    assert.are.equal("connect: connection refused", res[1])
    assert.are.equal("ECONNREFUSED", res[2])
    assert.matches("^EAI_", res[3])
  end)

  it("peer_cred on TCP is an error; a busy port is EADDRINUSE", function()
    local res = h.run(function()
      local l <close> = assert(orch.listen{ port = 0 })
      local b = table.pack(orch.listen{ port = l.port })
      orch.task(function() local c <close> = orch.connect{ port = l.port }; c:read() end)
      local s <close> = l:accept()
      local a = table.pack(s:peer_cred())
      return { a[2], a[3], b[2], b[3] }
    end)
    assert.are.same({ "peer_cred: not a unix socket", "EINVAL",
                      "listen: address already in use", "EADDRINUSE" }, res)
  end)
end)

describe("orch.dgram", function()
  local dir
  before_each(function() dir = h.tmpdir() end)

  it("sends and receives datagrams with the sender's address", function()
    local res = h.run(function()
      local a <close> = assert(orch.dgram{ unix = dir .. "/a" })
      local b <close> = assert(orch.dgram{ unix = dir .. "/b" })
      local anon <close> = assert(orch.dgram())
      assert.are.equal("600", mode_of(dir .. "/a"))
      assert.are.equal(dir .. "/a", a:address())
      assert.matches("^orch.Dgram: unix=.* fd=%d+ open$", tostring(a))
      local t = orch.task(function() return table.pack(b:recv()) end)
      waiting(t)
      assert(a:send("READY=1", dir .. "/b"))
      local got = t:join()
      assert(anon:send("", dir .. "/b"))
      local empty = table.pack(b:recv())
      return { got[1], got[2], got.n, empty[1], empty[2] }
    end)
    assert.are.same({ "READY=1", dir .. "/a", 2, "" }, res)
  end)

  it("passes credentials when asked, and abstract names", function()
    local name = "@orch-spec-dgram-" .. my_pid() .. "-" .. math.random(1e9)
    local data, from, cred = h.run(function()
      local b <close> = assert(orch.dgram{ unix = name, passcred = true })
      local a <close> = assert(orch.dgram())
      assert(a:send("WATCHDOG=1", name))
      return b:recv()
    end)
    assert.are.equal("WATCHDOG=1", data)
    assert.is_true(from == nil or from:sub(1, 1) == "@")
    assert.are.same({ pid = my_pid(), uid = my_uid(), gid = tonumber((h.sh("id -g"))) }, cred)
  end)

  it("a blocked recv lets other tasks run; close wakes it; timeouts", function()
    local res = table.pack(h.run(function()
      local b = assert(orch.dgram{ unix = dir .. "/b" })
      local ticks = 0
      local t = orch.task(function() return b:recv() end)
      for _ = 1, 5 do orch.sleep(0.002); ticks = ticks + 1 end
      b:close()
      local r = table.pack(t:join())
      local c <close> = assert(orch.dgram{ unix = dir .. "/c" })
      c:set_timeout(0.01)
      local r2 = table.pack(c:recv())
      return ticks, r[2], r[3], r2[3], exists(dir .. "/b")
    end))
    assert.are.same({ 5, "recv: socket closed", "ECANCELED", "ETIMEDOUT", false, n = 5 }, res)
  end)

  it("send errors are returned", function()
    local d <close> = assert(orch.dgram())
    assert.are.same({ nil, "send: no such file or directory", "ENOENT" },
                    { d:send("x", dir .. "/nobody") })
    local b = assert(orch.dgram{ unix = dir .. "/b" })
    local dup = table.pack(orch.dgram{ unix = dir .. "/b" })
    b:close()
    assert.are.same({ nil, "dgram: address already in use", "EADDRINUSE", n = 3 }, dup)
  end)

  -- The flags of fd in this process (octal, from /proc/self/fdinfo).
  local function fd_flags(fd)
    local f = assert(io.open("/proc/self/fdinfo/" .. fd))
    local t = f:read("a")
    f:close()
    return tonumber(t:match("flags:%s*(%d+)"), 8)
  end
  local O_CLOEXEC = tonumber("2000000", 8)

  it("passes descriptors (SCM_RIGHTS): they arrive as close-on-exec streams", function()
    local res = h.run(function()
      local a <close> = assert(orch.dgram{ unix = dir .. "/a", passcred = true })
      local b <close> = assert(orch.dgram())
      local r, w = assert(orch.pipe())
      -- A stream and a plain descriptor number; the sender keeps its copies.
      assert(b:send("two", dir .. "/a", { r, w:fd() }))
      r:close()
      local data, from, cred, fds = a:recv{ fds = true }
      local out = { data, from, cred.pid == my_pid(), #fds,
                    getmetatable(fds[1]).__name, fds[1]:kind(), fds[2]:kind() }
      for i = 1, 2 do
        out[#out + 1] = fd_flags(fds[i]:fd()) & O_CLOEXEC == O_CLOEXEC
      end
      -- The received read end reads what the original write end writes,
      -- and what the received write end writes.
      assert(w:write("via the original\n"))
      out[#out + 1] = fds[1]:read_line()
      assert(fds[2]:write("via the copy\n"))
      out[#out + 1] = fds[1]:read_line()
      w:close()
      fds[2]:close()
      out[#out + 1] = fds[1]:read_line() == nil   -- every write end closed: EOF
      fds[1]:close()
      -- Without passcred, the credentials' place holds nil.
      local c <close> = assert(orch.dgram{ unix = dir .. "/c" })
      local r2, w2 = assert(orch.pipe())
      assert(b:send("one", dir .. "/c", { r2 }))
      local got = table.pack(c:recv{ fds = true })
      r2:close() w2:close() got[4][1]:close()
      out[#out + 1] = got.n
      out[#out + 1] = got[3] == nil
      return out
    end)
    assert.are.same({ "two", nil, true, 2, "orch.Stream", "pipe", "pipe", true, true,
                      "via the original", "via the copy", true, 4, true }, res)
  end)

  it("passes descriptors as plain numbers with fds = \"raw\": the receiver owns them (orch.fd.close)", function()
    local res = h.run(function()
      local a <close> = assert(orch.dgram{ unix = dir .. "/a" })
      local b <close> = assert(orch.dgram())
      local r, w = assert(orch.pipe())
      local mfd = assert(orch.fd.memfd("a memfd"))
      assert(b:send("raw", dir .. "/a", { r, mfd }))
      r:close()
      assert(orch.fd.close(mfd))  -- the copy that came stays open
      local data, _, _, fds = a:recv{ fds = "raw" }
      -- Any descriptor comes (a regular file too), close-on-exec.
      local out = { data, #fds, math.type(fds[1]), math.type(fds[2]),
                    fd_flags(fds[1]) & O_CLOEXEC == O_CLOEXEC, fd_flags(fds[2]) & O_CLOEXEC == O_CLOEXEC }
      out[#out + 1] = orch.fd.read(fds[2])
      -- Passed on as a number, it still is the pipe's read end.
      local c <close> = assert(orch.dgram{ unix = dir .. "/c" })
      assert(b:send("again", dir .. "/c", { fds[1] }))
      assert(orch.fd.close(fds[1]))
      local _, _, _, again = c:recv{ fds = true }
      assert(w:write("through two sockets\n"))
      out[#out + 1] = again[1]:read_line()
      again[1]:close()
      -- Closed: the number is not the caller's any more (whatever opens
      -- under it next is not closed by a second close).
      out[#out + 1] = table.concat({ orch.fd.close(fds[1]) }, " ", 2)
      w:close()
      return out
    end)
    assert.matches("^fd%.close: fd %d+ is not one orch handed out %(an object's or orch's own%) EBADF$", res[9])
    res[9] = nil
    assert.are.same({ "raw", 2, "integer", "integer", true, true, "a memfd", "through two sockets" }, res)
  end)

  it("orch.fd.close and orch.fd.read refuse a descriptor orch did not hand out: an object's, or libuv's own", function()
    -- In an orch of its own, started with nothing but 0, 1 and 2 open:
    -- every other descriptor is an object's or orch's (libuv's signal and
    -- wake-up pipes, its epoll, the budget's timers...).
    local script = [[
      local lk = assert(orch.flock(arg[1]))
      local r, w = assert(orch.pipe())
      print(table.concat({ orch.fd.close(r:fd()) }, " ", 2))
      print(table.concat({ orch.fd.read(lk:fd()) }, " ", 2))
      assert(w:write("still open\n"))
      print(r:read_line())
      -- (Those inherited from whoever started this orch, not close-on-exec,
      -- are the caller's: left out.)
      local function cloexec(fd)
        local f = io.open("/proc/self/fdinfo/" .. fd)
        local flags = f and f:read("a"):match("flags:%s*(%d+)")
        if f then f:close() end
        return flags ~= nil and tonumber(flags, 8) & 0x80000 ~= 0
      end
      local refused, tried = 0, 0
      for fd = 3, 64 do
        if orch.fd.stat(fd) and cloexec(fd) then
          tried = tried + 1
          local ok, _, code = orch.fd.close(fd)
          if not ok and code == "EBADF" then refused = refused + 1 end
        end
      end
      print(tried > 3 and refused == tried)
      -- The loop goes on: a timer, and a child's exit (SIGCHLD).
      orch.sleep(0.01)
      local p = assert(orch.spawn{ "true" })
      print(p:wait() == 0)
    ]]
    local code, out, err = h.cli({ "-e", script, h.tmpdir() .. "/lock" })
    assert.are.equal(0, code, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(5, #lines, out)
    assert.matches("^fd%.close: fd %d+ is not one orch handed out %(an object's or orch's own%) EBADF$", lines[1])
    assert.matches("^fd%.read: fd %d+ is not one orch handed out %(an object's or orch's own%) EBADF$", lines[2])
    assert.are.same({ "still open", "true", "true" }, { lines[3], lines[4], lines[5] })
  end)

  it("descriptors from another uid: a 0600 socket refuses them; one given to that uid takes them, and fd.stat names their owner", function()
    os.execute("chmod 755 " .. h.shquote(dir))
    local drop = dir .. "/drop"
    assert(os.execute("mkdir -m 777 " .. h.shquote(drop)))
    local res = h.run(function()
      local closed <close> = assert(orch.dgram{ unix = dir .. "/closed" })
      local given <close> = assert(orch.dgram{ unix = dir .. "/given", uid = 65534, passcred = true })
      -- nobody makes a FIFO and a memfd of its own and sends both to each.
      local out = h.sh("setpriv --reuid=65534 --regid=65534 --clear-groups " .. h.shquote(h.bin) .. " -e "
        .. h.shquote(([[
          assert(orch.fifo.make(%q, tonumber("666", 8)))
          local f = assert(orch.fifo.open(%q, "r"))
          local m = assert(orch.fd.memfd("nobody's"))
          local s = assert(orch.dgram())
          print(select(3, s:send("to closed", %q, { f, m })))
          print(assert(s:send("to given", %q, { f, m })))
        ]]):format(drop .. "/f", drop .. "/f", dir .. "/closed", dir .. "/given")) .. " 2>&1")
      local data, _, cred, fds = given:recv{ fds = "raw" }
      local f, m = assert(orch.fd.stat(fds[1])), assert(orch.fd.stat(fds[2]))
      local r = { out, data, cred.uid, #fds, f.type, f.uid, m.type, m.uid, orch.fd.read(fds[2]) }
      orch.fd.close(fds[1])
      closed:set_timeout(0.01)
      r[#r + 1] = select(3, closed:recv())
      return r
    end)
    assert.are.same({ "EACCES\ntrue", "to given", 65534, 2, "fifo", 65534, "file", 65534, "nobody's", "ETIMEDOUT" }, res)
  end)

  it("descriptors nobody asked for, or that are no stream, are closed", function()
    local res = h.run(function()
      local a <close> = assert(orch.dgram{ unix = dir .. "/a" })
      local b <close> = assert(orch.dgram())
      local r, w = assert(orch.pipe())
      -- A write end passed to a recv without fds: closed on arrival, so the
      -- reader sees EOF once the sender's own copy is closed.
      assert(b:send("x", dir .. "/a", { w }))
      local got = table.pack(a:recv())
      w:close()
      local eof = table.pack(r:read())
      r:close()
      -- A regular file (a memfd) cannot be a stream: false in its place.
      local mfd = assert(orch.fd.memfd("x"))
      local r2, w2 = assert(orch.pipe())
      assert(b:send("y", dir .. "/a", { mfd, r2 }))
      assert(orch.fd.read(mfd))   -- reads and closes our copy
      local _, _, _, fds = a:recv{ fds = true }
      local out = { got.n, got[1], eof[1], #fds, fds[1], fds[2]:kind() }
      fds[2]:close() r2:close() w2:close()
      return out
    end)
    assert.are.same({ 2, "x", nil, 2, false, "pipe" }, res)
  end)

  it("rejects bad descriptor lists before sending anything", function()
    local d <close> = assert(orch.dgram())
    local r, w = assert(orch.pipe())
    r:close()
    local many = {}
    for i = 1, 254 do many[i] = 0 end
    h.check_raises({
      { function() return d:send("x", "/y", {}) end, "bad argument #3 to 'send' (list of 1 to 253 descriptors expected)" },
      { function() return d:send("x", "/y", many) end, "bad argument #3 to 'send' (list of 1 to 253 descriptors expected)" },
      { function() return d:send("x", "/y", 3) end, "bad argument #3 to 'send' (table expected, got number)" },
      { function() return d:send("x", "/y", { "a" }) end, "bad argument #3 to 'send' (entry 1: descriptor or orch.Stream expected, got string)" },
      { function() return d:send("x", "/y", { -1 }) end, "bad argument #3 to 'send' (descriptor 1 out of range)" },
      { function() return d:send("x", "/y", { r }) end, "bad argument #3 to 'send' (entry 1 is a closed orch.Stream)" },
      { function() return d:send("x", "/y", { 0 }, 1) end, "bad argument #4 to 'send' (no value expected)" },
      { function() return d:recv{ fd = true } end, "bad argument #1 to 'recv' (unknown option 'fd')" },
      { function() return d:recv{ fds = 1 } end, "bad argument #1 to 'recv' (option 'fds': boolean or \"raw\" expected, got number)" },
      { function() return d:recv{ fds = "streams" } end, "bad argument #1 to 'recv' (option 'fds': boolean or \"raw\" expected, got another string)" },
    })
    w:close()
    -- A bad descriptor number is the kernel's to refuse.
    local dd <close> = assert(orch.dgram{ unix = dir .. "/dd" })
    assert.are.same({ nil, "send: bad file descriptor", "EBADF" }, { d:send("x", dir .. "/dd", { 999999 }) })
  end)

  it("use after close raises", function()
    local d = assert(orch.dgram())
    d:close()
    assert.is_true(d:close())
    assert.are.equal("orch.Dgram: closed", tostring(d))
    for _, f in ipairs({ function() return d:recv() end, function() return d:send("x", "/y") end,
                         function() return d:fd() end }) do
      assert.matches("attempt to use a closed orch.Dgram", h.error_of(f), 1, true)
    end
  end)
end)

describe("stream:on_read", function()
  it("passes every chunk in order, then nil once at EOF", function()
    local res = with_pipe(function(r, w)
      local got, eofs, done = {}, 0, orch.cond()
      assert.is_true(r:on_read(function(chunk, ...)
        if chunk then got[#got + 1] = chunk
        else
          eofs = eofs + 1
          assert.are.equal(0, select("#", ...))
          done:signal()
        end
      end))
      for i = 1, 5 do
        assert(w:write("part" .. i .. "\n"))
        orch.sleep(0.01)
      end
      w:close()
      done:wait(10)
      orch.sleep(0.05)               -- a second EOF call would come now
      return { data = table.concat(got), eofs = eofs }
    end)
    assert.are.equal("part1\npart2\npart3\npart4\npart5\n", res.data)
    assert.are.equal(1, res.eofs)
  end)

  it("pauses reading while the callback waits: the writer blocks, nothing piles up in orch", function()
    local total = 4 * 1024 * 1024
    local res = with_pipe(function(r, w)
      local n, calls, release, done = 0, 0, orch.cond(), orch.cond()
      local hold = true
      r:on_read(function(chunk)
        if not chunk then done:signal() return end
        calls = calls + 1
        n = n + #chunk
        while hold do release:wait() end     -- the first callback waits
      end)
      local writer = writer_task(w, total)
      eventually(function() return calls == 1 end, "first callback")
      orch.sleep(0.1)
      local held = { calls = calls, writer = writer:status(), lua_kib = collectgarbage("count") }
      hold = false
      release:broadcast()
      done:wait(60)
      return { held = held, n = n, writer = writer:join() }
    end, 120)
    -- While the first callback waited, no second chunk was read and the
    -- writer stayed blocked on the full pipe.
    assert.are.equal(1, res.held.calls)
    assert.are.equal("waiting", res.held.writer)
    assert.are.equal(total, res.n)
    assert.are.equal("written", res.writer)
  end)

  it("serves many streams whose data arrives together with a few shared tasks", function()
    local res = h.run(function()
      local N = 200
      local pipes, cos, ncos, seen, pending = {}, {}, 0, 0, orch.cond()
      for i = 1, N do
        local r, w = orch.pipe()
        pipes[i] = { r, w }
        r:on_read(function(chunk)
          if not chunk then return end
          local co = coroutine.running()
          if not cos[co] then cos[co] = true ncos = ncos + 1 end
          seen = seen + 1
          pending:signal()
        end)
      end
      -- Every pipe becomes readable before the loop polls again.
      for i = 1, N do assert(pipes[i][2]:write("x")) end
      while seen < N do pending:wait(10) end
      for i = 1, N do pipes[i][1]:close() pipes[i][2]:close() end
      return { seen = seen, ncos = ncos }
    end)
    assert.are.equal(200, res.seen)
    -- The callbacks that did not wait ran one after the other in the same
    -- runner: far fewer coroutines than streams.
    assert.is_true(res.ncos <= 5, "coroutines used: " .. res.ncos)
  end)

  it("keeps an active stream alive without other references", function()
    local got = h.run(function()
      local p = assert(orch.spawn { "sh", "-c", "sleep 0.1; echo late", stdout = "pipe" })
      local out, done = {}, orch.cond()
      p.stdout:on_read(function(chunk)
        if chunk then out[#out + 1] = chunk else done:signal() end
      end)
      p = nil
      collectgarbage() collectgarbage()
      done:wait(10)
      return table.concat(out)
    end)
    assert.are.equal("late\n", got)
  end)

  -- A process writes `script`'s output to a pipe read with on_read and
  -- exits; the task holds the loop until the process is a zombie, so that
  -- the pipe's EOF and the exit are read in the same loop turn. Returns
  -- the order in which the callbacks ran.
  local function eof_and_exit(script)
    return h.run(function()
      local p = assert(orch.spawn { "sh", "-c", script, stdout = "pipe" })
      local order, done = {}, orch.cond()
      local function note(what)
        order[#order + 1] = what
        done:signal()
      end
      p.stdout:on_read(function(chunk)
        if chunk then
          if order[#order] ~= "chunk" then note("chunk") end
        else
          note("eof")
        end
      end)
      p:on_exit(function() note("exit") end)
      -- Not a sleep: the loop must not run before both events are there.
      repeat
        local f = io.open("/proc/" .. p.pid .. "/stat")
        local st = f and f:read("a"):match("%) (%a)")
        if f then f:close() end
      until st == "Z" or st == nil
      while #order < 3 do done:wait(10) end
      p:wait()
      return order
    end)
  end

  it("hands an EOF after a newline to its callback after the other events read with it: the writer's exit first", function()
    -- A service's log pipe ends as its process exits: the restart does not
    -- wait for the pipe's callback (issue 15).
    assert.are.same({ "chunk", "exit", "eof" }, eof_and_exit("echo line"))
  end)

  it("hands an EOF after a partial line to its callback at once: the line before anything the exit's callbacks write", function()
    assert.are.same({ "chunk", "eof", "exit" }, eof_and_exit("printf partial"))
  end)

  it("on_read(nil) stops the callbacks; the stream can be read again", function()
    local res = with_pipe(function(r, w)
      local calls = 0
      r:on_read(function() calls = calls + 1 end)
      assert(w:write("a"))
      eventually(function() return calls == 1 end, "callback")
      assert.is_true(r:on_read(nil))
      assert(w:write("b"))
      orch.sleep(0.05)
      return { calls = calls, next = r:read() }
    end)
    assert.are.equal(1, res.calls)
    assert.are.equal("b", res.next)
  end)

  it("a callback may close its stream", function()
    local res = h.run(function()
      local r, w = orch.pipe()
      local _ <close> = closer(w)
      local calls = 0
      r:on_read(function() calls = calls + 1 r:close() end)
      assert(w:write("a"))
      eventually(function() return calls == 1 end, "callback")
      local ok, err, ename = w:write("b")
      orch.sleep(0.05)
      return { calls = calls, tostring = tostring(r), ename = ename }
    end)
    assert.are.equal(1, res.calls)
    assert.matches("closed", res.tostring)
    assert.are.equal("EPIPE", res.ename)
  end)

  it("reports a callback's error with its traceback and stops calling it", function()
    local script = h.script([[
      local orch = require "orch"
      local r, w = orch.pipe()
      local calls = 0
      r:on_read(function(chunk)
        calls = calls + 1
        error("boom in callback")
      end)
      assert(w:write("a"))
      orch.sleep(0.05)
      assert(w:write("b"))
      orch.sleep(0.05)
      print("calls", calls, r:read())
    ]])
    local code, out, err = h.cli { "run", script }
    assert.are.equal(0, code)
    assert.matches("boom in callback", err, 1, true)
    assert.matches("stack traceback", err, 1, true)
    -- Not called again; the second chunk stayed in the pipe for read().
    assert.matches("calls\t1\tb", out, 1, true)
  end)

  it("gives a read error as nil, message, ename", function()
    local res = h.run(function()
      local l <close> = assert(orch.listen { unix = h.tmpdir() .. "/s" })
      local c <close> = assert(orch.connect { unix = l:address() })
      local s <close> = assert(l:accept())
      local got, done = nil, orch.cond()
      s:on_read(function(...) got = table.pack(...) done:signal() end)
      -- Unread data at close makes the kernel reset the connection.
      assert(s:write("unread"))
      orch.sleep(0.02)
      c:close()
      done:wait(10)
      return got
    end)
    assert.is_nil(res[1])
    -- Either EOF (nil) or a reset (nil, msg, "ECONNRESET"), never a chunk.
    if res.n > 1 then assert.are.equal("ECONNRESET", res[3]) end
  end)

  it("refuses a second reader, a write-only stream and bad arguments", function()
    local res = with_pipe(function(r, w)
      r:on_read(function() end)
      local out = {}
      out.read = table.pack(r:read())
      out.line = table.pack(r:read_line())
      out.wend = table.pack(w:on_read(function() end))
      local r2, w2 = orch.pipe()
      local _2 <close> = closer(r2, w2)
      local t = orch.task(function() return r2:read() end)
      waiting(t)
      out.busy = table.pack(r2:on_read(function() end))
      t:cancel()
      out.badfn = table.pack(pcall(r.on_read, r, 42))
      out.extra = table.pack(pcall(r.on_read, r, print, 1, 2))
      out.argless = table.pack(pcall(r.on_read, r, nil, 1))
      return out
    end)
    assert.are.equal("EBUSY", res.read[3])
    assert.are.equal("EBUSY", res.line[3])
    assert.are.equal("EBADF", res.wend[3])
    assert.are.equal("EBUSY", res.busy[3])
    assert.is_false(res.badfn[1])
    assert.matches("function expected", res.badfn[2])
    assert.is_false(res.extra[1])
    assert.is_false(res.argless[1])
    assert.matches("no argument without a callback", res.argless[2])
  end)

  it("passes an argument given after the callback first, at EOF too; a replacement brings its own or none", function()
    local res = with_pipe(function(r, w)
      local got, done, tick = {}, orch.cond(), orch.cond()
      local state = { "first" }
      local function cb(arg, chunk, ...)
        got[#got + 1] = { arg = arg, chunk = chunk, n = select("#", ...) }
        tick:signal()
        if not chunk then done:signal() end
      end
      local function calls(n)
        for _ = 1, 100 do
          if #got >= n then return true end
          tick:wait(1)
        end
        return false
      end
      assert.is_true(r:on_read(cb, state))
      assert(w:write("a"))
      assert.is_true(calls(1))
      local state2 = { "second" }
      assert.is_true(r:on_read(cb, state2))
      assert(w:write("b"))
      assert.is_true(calls(2))
      -- Without an argument the callback gets the chunk first again.
      assert.is_true(r:on_read(function(chunk) got[#got + 1] = { plain = chunk } tick:signal() end))
      assert(w:write("c"))
      assert.is_true(calls(3))
      assert.is_true(r:on_read(cb, state))
      w:close()
      done:wait(10)
      return { got = got, state = state, state2 = state2 }
    end)
    local got = res.got
    assert.are.equal(4, #got)
    assert.are.equal(res.state, got[1].arg)
    assert.are.equal("a", got[1].chunk)
    assert.are.equal(res.state2, got[2].arg)
    assert.are.equal("b", got[2].chunk)
    assert.are.same({ plain = "c" }, got[3])
    assert.are.equal(res.state, got[4].arg)
    assert.is_nil(got[4].chunk)
    assert.are.equal(0, got[4].n)
  end)
end)

describe("orch.socketpair", function()
  it("makes two connected unix streams: both ways, half-close, peer, close-on-exec", function()
    local res = h.run(function()
      local a, b = assert(orch.socketpair())
      local _ <close> = closer(a, b)
      local out = { a:kind(), b:kind(), tostring(a):match("^orch.Stream: unix fd=%d+ open$") ~= nil }
      assert(a:write("ping\n"))
      out[#out + 1] = b:read_line()
      assert(b:write("pong\n"))
      out[#out + 1] = a:read_line()
      assert(a:shutdown())             -- b sees EOF, and may still answer
      out[#out + 1] = b:read() == nil
      assert(b:write("after\n"))
      out[#out + 1] = a:read_line()
      out[#out + 1] = b:peer_cred().pid == my_pid()
      for _, s in ipairs { a, b } do
        local flags = h.slurp("/proc/self/fdinfo/" .. s:fd()):match("flags:%s*(%d+)")
        out[#out + 1] = tonumber(flags, 8) & tonumber("2000000", 8) ~= 0
      end
      return out
    end)
    assert.are.same({ "unix", "unix", true, "ping", "pong", true, "after", true, true, true }, res)
  end)

  it("gives a child one end: it reads and writes the same socket", function()
    local res = h.run(function()
      local mine, child = assert(orch.socketpair())
      local _ <close> = closer(mine, child)
      local p = assert(orch.spawn{ "sh", "-c", "read x; echo \"got $x\"", stdin = child, stdout = child })
      child:close()                    -- the child holds its copy
      assert(mine:write("hello\n"))
      local line = mine:read_line()
      local eof = mine:read()          -- the child exited: its copy closed
      return { line, eof, p:wait() }
    end)
    assert.are.same({ "got hello", nil, 0 }, res)
  end)

  it("makes two connected datagram sockets: message boundaries, descriptors", function()
    local res = h.run(function()
      local a, b = assert(orch.socketpair("dgram"))
      local _ <close> = closer(a, b)
      local out = { tostring(a):match("^orch.Dgram: unbound fd=%d+ open$") ~= nil }
      assert(a:send("one"))
      assert(a:send("two"))
      out[#out + 1] = b:recv()
      out[#out + 1] = b:recv()
      local r, w = assert(orch.pipe())
      assert(b:send("pipe", nil, { r }))
      r:close()
      local msg, _, _, fds = a:recv{ fds = true }
      w:write("through\n")
      w:close()
      out[#out + 1] = msg
      out[#out + 1] = fds[1]:read_line()
      fds[1]:close()
      return out
    end)
    assert.are.same({ true, "one", "two", "pipe", "through" }, res)
  end)

  it("sending without a path on an unconnected socket fails", function()
    local d <close> = assert(orch.dgram())
    local ok, msg, code = d:send("x")
    assert.is_nil(ok)
    assert.are.equal("ENOTCONN", code)
    assert.matches("^send: ", msg)
  end)

  it("rejects bad arguments", function()
    h.check_raises({
      { function() return orch.socketpair("seqpacket") end, "bad argument #1 to 'socketpair' (invalid option 'seqpacket')" },
      { function() return orch.socketpair(1) end, "bad argument #1 to 'socketpair' (invalid option '1')" },
      { function() return orch.socketpair("stream", 1) end, "bad argument #2 to 'socketpair' (no value expected)" },
    })
  end)
end)

describe("orch.listen options for servers", function()
  local dir
  before_each(function() dir = h.tmpdir() end)

  -- Runs `orch run script` as a child while fn(p) runs; the child is
  -- killed if it is still there. Returns fn's results.
  local function with_run(src, fn, opts)
    local path = h.script(src)
    return h.run(function()
      local spec = { h.bin, "run", path }
      for k, v in pairs(opts or {}) do spec[k] = v end
      local p = assert(orch.spawn(spec))
      local ok, a, b = pcall(fn, p)
      if p:running() then p:kill("KILL") p:wait() end
      assert(ok, a)
      return a, b
    end)
  end

  it("ref = false: a task waiting in accept does not keep `orch run` running", function()
    local sock = dir .. "/s.sock"
    local code = with_run(([[
      local l = assert(orch.listen{ unix = %q, mode = tonumber("600", 8), ref = false })
      orch.task(function() l:accept() end)
      io.open(%q, "w"):close()
    ]]):format(sock, dir .. "/listening"), function(p) return p:wait() end)
    assert.are.equal(0, code)
    assert.is_true(exists(dir .. "/listening"))
  end)

  it("by default a task waiting in accept keeps it running until a client comes", function()
    local sock = dir .. "/s.sock"
    -- Waits for a mark written after orch.listen returned: the socket file
    -- exists from bind() on, before listen(), and a connect in between is
    -- refused.
    local code, line = with_run(([[
      local l = assert(orch.listen{ unix = %q })
      io.open(%q, "w"):close()
      local c = assert(l:accept())
      c:write("served\n")
      c:close()
    ]]):format(sock, dir .. "/listening2"), function(p)
      eventually(function() return exists(dir .. "/listening2") end, "the listener")
      local c = assert(orch.connect{ unix = sock, timeout = 20 })
      local got = c:read_line()
      c:close()
      return p:wait(), got
    end)
    assert.are.same({ 0, "served" }, { code, line })
  end)

  it("mode 0600: another uid cannot connect", function()
    local sock = dir .. "/s.sock"
    os.execute("chmod 755 " .. h.shquote(dir))
    local res = h.run(function()
      local l <close> = assert(orch.listen{ unix = sock, mode = tonumber("600", 8), ref = false })
      local out = h.sh("setpriv --reuid=65534 --regid=65534 --clear-groups " .. h.shquote(h.bin) .. " -e "
        .. h.shquote(("print(select(3, orch.connect{ unix = %q }))"):format(sock)) .. " 2>&1")
      return { mode_of(sock), out }
    end)
    assert.are.same({ "600", "EACCES" }, res)
  end)

  it("fd = n adopts an inherited listening socket; fdopen an inherited pipe", function()
    local sock = dir .. "/s.sock"
    local res = h.run(function()
      local l = assert(orch.listen{ unix = sock })
      local r, w = assert(orch.pipe())
      local path = h.script(([[
        local l = assert(orch.listen{ unix = %q, fd = 3 })
        local s = assert(orch.fdopen(4))
        local word = s:read_line()
        local c = assert(l:accept())
        c:write(word, " ", tostring(l), "\n")
        c:close()
        -- Each once; a pipe is no listening socket.
        print(select(3, orch.fdopen(4)), select(3, orch.listen{ fd = 4 }))
        l:close()
      ]]):format(sock))
      local out = assert(orch.pipe())
      local p = assert(orch.spawn{ h.bin, "run", path, fds = { [3] = l:fd(), [4] = r }, stdout = "pipe" })
      r:close()
      -- The child has its own copy of the socket: ours may go, the file stays.
      w:write("hello\n")
      local c = assert(orch.connect{ unix = sock, timeout = 20 })
      local line = c:read_line()
      c:close()
      local printed = p.stdout:read_all()
      local code = p:wait()
      w:close()
      out:close()
      local gone = not exists(sock)   -- the child owned the file at close
      l:close()
      return { line, printed, code, gone }
    end)
    assert.matches("^hello orch.Listener: unix=" .. sock:gsub("%p", "%%%0") .. " fd=3 open$", res[1])
    assert.are.equal("EBADF\tEINVAL\n", res[2])
    assert.are.same({ 0, true }, { res[3], res[4] })
  end)

  it("refuses descriptors it did not inherit, and bad fd options", function()
    local res = h.run(function()
      local r, w = assert(orch.pipe())
      local l = assert(orch.listen{ unix = dir .. "/own.sock" })
      local _ <close> = closer(r, w, l)
      return { select(3, orch.fdopen(r:fd())), select(3, orch.listen{ fd = l:fd() }),
               select(3, orch.listen{ fd = r:fd() }) }
    end)
    -- Its own descriptors are not inherited ones; a pipe is no listener.
    assert.are.same({ "EBADF", "EBADF", "EINVAL" }, res)
    h.check_raises({
      { function() return orch.fdopen(2) end, "bad argument #1 to 'fdopen' (file descriptor >= 3 expected)" },
      { function() return orch.fdopen("x") end, "bad argument #1 to 'fdopen' (number expected, got string)" },
      { function() return orch.fdopen(5, 1) end, "bad argument #2 to 'fdopen' (no value expected)" },
      { function() return orch.listen{ fd = 1 } end, "bad argument #1 to 'listen' (option 'fd': file descriptor >= 3 expected)" },
      { function() return orch.listen{ fd = 5, port = 1 } end, "bad argument #1 to 'listen' (option 'fd' excludes 'host', 'port', 'mode' and 'backlog' (the socket exists))" },
      { function() return orch.listen{ unix = "/x", ref = 1 } end, "bad argument #1 to 'listen' (option 'ref': boolean expected, got number)" },
    })
  end)
end)
