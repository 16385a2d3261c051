-- `orch fdholder` (src/fdholder.c, C entered from main.c before any Lua
-- state exists) lives as long as the services whose log pipes it holds, so
-- it loads nothing (issue 14: memory per service): not the command-line
-- parser nor any command's module. Spoken to here as the supervisor speaks
-- to it (lua/orch/supervisor/holder.lua), by real processes: a stand-in
-- orch that puts a pipe and dies of kill -9, a service that outlives it,
-- and a second user (nobody, through setpriv) who must not be heard.
local h = require "spec.helper"
local orch = h.orch
local ctl = require "orch.ctl.client"

-- A tree for $ORCH_LUA_DIR: every command module but fdholder raises.
local function shadow_tree()
  local d = h.tmpdir()
  os.execute("mkdir -p " .. h.shquote(d .. "/orch/cmd"))
  local n = 0
  for f in h.sh("ls lua/orch/cmd"):gmatch("[^\n]+") do
    if f:match("%.lua$") and f ~= "fdholder.lua" then
      h.write(d .. "/orch/cmd/" .. f, string.format("error(%q, 0)\n", "the fd holder loaded orch/cmd/" .. f))
      n = n + 1
    end
  end
  return d, n
end

describe("orch fdholder", function()
  local shadow, n
  setup(function() shadow, n = shadow_tree() end)

  it("shadows the other commands (the test's own check)", function()
    assert.is_true(n > 5)
    local code, _, err = h.cli({ "version" }, nil, { ORCH_LUA_DIR = shadow })
    assert.are_not.equal(0, code)
    assert.truthy(err:find("the fd holder loaded orch/cmd/", 1, true), err)
  end)

  it("holds a pipe and hands it back without loading the parser or another command", function()

    local dir = h.tmpdir()
    local sock = dir .. "/holder.sock"
    h.run(function()
      local me = orch.getpid()
      local start = orch.proc.info(me).start_time
      local p = assert(orch.spawn{ h.bin, "fdholder", sock, tostring(me), tostring(start),
        env = { ORCH_LUA_DIR = shadow }, stdin = "null", stdout = "null", stderr = "pipe" })
      local d = assert(orch.dgram{ unix = string.format("@orch-spec-fdholder-%d-%d", me, math.random(1, 1e9)),
                                   passcred = true })
      local ok, err = pcall(function()
        local r, w = assert(orch.pipe())
        -- Until the holder has bound its socket, a send fails (ENOENT).
        local put = ctl.encode{ op = "put", entries = { { name = "svc", pid = me, start = start } } }
        h.eventually(function()
          if not p:running() then
            p.stderr:set_timeout(5)
            error("the holder ended: " .. tostring(p.stderr:read_all()), 0)
          end
          return d:send(put, sock, { r })
        end, "the holder's socket")
        r:close()
        assert(w:write("held line\n"))
        w:close()
        assert(d:send(ctl.encode{ op = "hello", pid = me, start = start }, sock))
        d:set_timeout(10)
        local data, _, cred, fds = d:recv{ fds = true }
        assert(data, _)
        assert.are.equal(p.pid, cred.pid)
        local m = ctl.decode(data)
        assert.are.equal("held", m.op)
        assert.are.equal(1, m.n)
        assert.are.equal("svc", m.entries[1].name)
        assert.are.equal("held line", fds[1]:read_line())
        fds[1]:close()
        assert(d:send(ctl.encode{ op = "bye" }, sock))
        local code = p:wait()
        assert.are.equal(0, code)
      end)
      if p:running() then p:kill("KILL") p:wait() end
      p.stderr:close()
      d:close()
      if not ok then error(err, 0) end
    end)
    assert.are.same({}, h.children())
  end)
  -- A stand-in for orch (`orch -e`): puts the read end of a pipe under
  -- "svc" for the service (svc_pid, svc_start), writes a line into it, says
  -- "put" and waits to be killed.
  local FAKE_ORCH = [[
    local sock, pid, start = ...
    local d = assert(orch.dgram{ passcred = true })
    local r, w = assert(orch.pipe())
    local put = string.format('{"op":"put","entries":[{"name":"svc","pid":%d,"start":%d}]}', pid, start)
    -- Until the holder has bound its socket, a send fails (ENOENT).
    while not d:send(put, sock, { r }) do orch.sleep(0.01) end
    assert(w:write("held line\n"))
    print("put")
    io.stdout:flush()
    orch.sleep(1000)
  ]]

  local function start_of(pid) return orch.proc.info(pid).start_time end

  -- Whether the socket file exists (open(2) of a socket fails with ENXIO).
  local function exists(path) return h.sh("test -e " .. h.shquote(path) .. " && echo yes") == "yes" end

  -- The holder for the orch (pid, start) on sock.
  local function holder(sock, pid, start)
    return assert(orch.spawn{ h.bin, "fdholder", sock, tostring(pid), tostring(start),
      stdin = "null", stdout = "null", stderr = "pipe" })
  end

  local function hello_from_me(d, sock)
    local me = orch.getpid()
    assert(d:send(ctl.encode{ op = "hello", pid = me, start = start_of(me) }, sock))
    d:set_timeout(10)
    local data, err, cred, fds = d:recv{ fds = true }
    assert(data, err)
    return ctl.decode(data), cred, fds
  end

  local function kill_all(...)
    for _, p in ipairs{ ... } do
      if p:running() then p:kill("KILL") end
      p:wait()
    end
  end

  -- The holder's heap after a put: a large one's parse (200 entries, about
  -- 60 KiB of JSON nodes) is given back (malloc_trim), so that the holder
  -- does not stay at the size of its largest datagram; a small one's nodes
  -- stay for the next (no trim in every restart's put: its madvise calls
  -- and page faults came while the new process execs).
  it("gives back the memory of a large put's parse, not of each small put's", function()
    local me = orch.getpid()
    local sock = string.format("@orch-spec-fdholder-%d-%d", me, math.random(1, 1e9))
    h.run(function()
      local p = holder(sock, me, start_of(me))
      local d = assert(orch.dgram{ passcred = true })
      local pipes = {}
      local ok, err = pcall(function()
        -- Idle in its poll with every fd of a put received: the put handled.
        local function idle_holding(n)
          local listed = 0
          for _ in h.sh("ls /proc/" .. p.pid .. "/fd"):gmatch("%d+") do listed = listed + 1 end
          return listed >= n and (h.slurp("/proc/" .. p.pid .. "/wchan") or ""):find("poll") ~= nil
        end
        local function heap_dirty_kib()
          local smaps = h.slurp("/proc/" .. p.pid .. "/smaps") or ""
          local heap = smaps:match("%[heap%]\n(.-)\nVmFlags")
          return heap and tonumber(heap:match("Private_Dirty:%s+(%d+) kB")) or 0
        end
        local base
        h.eventually(function()
          base = 0
          for _ in h.sh("ls /proc/" .. p.pid .. "/fd"):gmatch("%d+") do base = base + 1 end
          return base >= 5 and (h.slurp("/proc/" .. p.pid .. "/wchan") or ""):find("poll") ~= nil
        end, "the holder bound and idle")
        local entries, fds = {}, {}
        for i = 1, 200 do
          local r, w = assert(orch.pipe())
          pipes[#pipes + 1] = w
          entries[i] = string.format('{"name":"svc-%d-%s","pid":%d,"start":%d}', i, string.rep("x", 120), me,
            start_of(me))
          fds[i] = r
        end
        h.eventually(function()
          return d:send('{"op":"put","entries":[' .. table.concat(entries, ",") .. ']}', sock, fds)
        end, "the holder's socket")
        for _, r in ipairs(fds) do r:close() end
        h.eventually(function() return idle_holding(base + 200) end, "the large put held")
        local after_large = heap_dirty_kib()
        -- 50 small puts (one pipe each, under names held already).
        for i = 1, 50 do
          local r, w = assert(orch.pipe())
          pipes[#pipes + 1] = w
          local put = string.format('{"op":"put","entries":[{"name":"svc-%d-%s","pid":%d,"start":%d}]}', i,
            string.rep("x", 120), me, start_of(me))
          -- (Its queue may be full a moment: EAGAIN.)
          h.eventually(function() return d:send(put, sock, { r }) end, "room in the holder's queue")
          r:close()
        end
        h.eventually(function() return idle_holding(base + 200) end, "the small puts held")
        local after_small = heap_dirty_kib()
        -- 200 entries of about 150 bytes are 30 KiB held; the heap stays at
        -- about 100 KiB with the trim, 220 without (glibc 2.36).
        assert.is_true(after_large < 160, "heap after the large put: " .. after_large .. " KiB")
        assert.is_true(after_small <= after_large + 8, string.format("heap %d KiB after the small puts, %d before",
          after_small, after_large))
      end)
      for _, w in ipairs(pipes) do w:close() end
      if p:running() then p:kill("TERM") p:wait() end
      p.stderr:close()
      d:close()
      if not ok then error(err, 0) end
    end)
    assert.are.same({}, h.children())
  end)

  it("keeps a pipe after its orch's kill -9 while the service lives, hears no other user, then ends with the service", function()
    local me = orch.getpid()
    local sock = string.format("@orch-spec-fdholder-%d-%d", me, math.random(1, 1e9))
    h.run(function()
      local svc = assert(orch.spawn{ "sleep", "1000" })
      local fake = assert(orch.spawn{ h.bin, "-e", FAKE_ORCH, sock, tostring(svc.pid), tostring(start_of(svc.pid)),
        stdin = "null", stdout = "pipe" })
      local p = holder(sock, fake.pid, start_of(fake.pid))
      local nobody = assert(orch.spawn{ "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", h.bin, "-e", [[
        local sock = ...
        -- Told to go once the holder is bound (it took the stand-in's put).
        io.read("l")
        local d = assert(orch.dgram{ unix = string.format("@orch-spec-fdholder-nobody-%d", orch.getpid()), passcred = true })
        local me = orch.getpid()
        assert(d:send(string.format('{"op":"hello","pid":%d,"start":%d}', me, orch.proc.info(me).start_time), sock))
        assert(d:send('{"op":"bye"}', sock))
        print("sent")
        io.stdout:flush()
        io.read("l")
        d:set_timeout(0)
        local data, _, code = d:recv()
        print(data or code)
      ]], sock, stdin = "pipe", stdout = "pipe" })
      local d = assert(orch.dgram{ unix = string.format("@orch-spec-fdholder-%d-%d", me, math.random(1, 1e9)),
                                   passcred = true })
      local ok, err = pcall(function()
        fake.stdout:set_timeout(20)
        assert.are.equal("put", fake.stdout:read_line())
        assert(nobody.stdin:write("start\n"))
        fake:kill("KILL")
        fake:wait()
        -- The stand-in is gone and the service lives: the pipe is held. Then
        -- nobody says hello (which, heard, would hand it the pipe: its orch
        -- is dead) and bye (which, heard, would end the holder).
        nobody.stdout:set_timeout(20)
        assert.are.equal("sent", nobody.stdout:read_line())
        -- Datagrams are read in order: ours comes after nobody's two.
        local m, cred, fds = hello_from_me(d, sock)
        assert.are.equal(p.pid, cred.pid)
        assert.are.equal("held", m.op)
        assert.are.equal(1, m.n)
        assert.are.same({ name = "svc", pid = svc.pid, start = start_of(svc.pid) }, m.entries[1])
        assert.are.equal("held line", fds[1]:read_line())
        fds[1]:close()
        -- nobody got no answer at all.
        assert(nobody.stdin:write("go\n"))
        assert.are.equal("ETIMEDOUT", nobody.stdout:read_line())
        assert.are.equal(0, nobody:wait())
        assert.is_true(p:running())
        -- We are its orch now; told nothing more, it holds the pipe while we
        -- live. A bye from us ends it.
        assert(d:send(ctl.encode{ op = "bye" }, sock))
        assert.are.equal(0, p:wait())
      end)
      kill_all(p, fake, nobody, svc)
      for _, s in ipairs{ p.stderr, fake.stdout, nobody.stdin, nobody.stdout } do s:close() end
      d:close()
      if not ok then error(err, 0) end
    end)
    assert.are.same({}, h.children())
  end)

  it("without an orch, holds a pipe as long as its service lives", function()
    local dir = h.tmpdir()
    local sock = dir .. "/holder.sock"
    h.run(function()
      local svc = assert(orch.spawn{ "sleep", "1000" })
      local fake = assert(orch.spawn{ h.bin, "-e", FAKE_ORCH, sock, tostring(svc.pid), tostring(start_of(svc.pid)),
        stdin = "null", stdout = "pipe" })
      local p = holder(sock, fake.pid, start_of(fake.pid))
      local ok, err = pcall(function()
        fake.stdout:set_timeout(20)
        assert.are.equal("put", fake.stdout:read_line())
        -- Its socket is its own user's only.
        assert.are.equal("600", (h.sh("stat -c %a " .. h.shquote(sock))))
        fake:kill("KILL")
        fake:wait()
        -- Holding the pipe: the read end is among its descriptors.
        h.eventually(function()
          return h.sh("ls -l /proc/" .. p.pid .. "/fd"):find("pipe:", 1, true)
        end, "the holder to hold the pipe")
        assert.is_true(p:running())
        svc:kill("KILL")
        svc:wait()
        assert.are.equal(0, p:wait())
        -- Its socket file went with it.
        assert.is_false(exists(sock))
      end)
      kill_all(p, fake, svc)
      p.stderr:close()
      fake.stdout:close()
      if not ok then error(err, 0) end
    end)
    assert.are.same({}, h.children())
  end)

  it("answers busy to another orch while its own lives, and ends with it when it holds nothing", function()
    local dir = h.tmpdir()
    local sock = dir .. "/holder.sock"
    h.run(function()
      local other = assert(orch.spawn{ "sleep", "1000" })
      local p = holder(sock, other.pid, start_of(other.pid))
      local d = assert(orch.dgram{ unix = string.format("@orch-spec-fdholder-%d-%d", orch.getpid(), math.random(1, 1e9)),
                                   passcred = true })
      local ok, err = pcall(function()
        h.eventually(function() return exists(sock) end, "the holder's socket")
        local m = hello_from_me(d, sock)
        assert.are.same({ op = "busy", pid = other.pid }, m)
        other:kill("KILL")
        other:wait()
        assert.are.equal(0, p:wait())
        assert.is_false(exists(sock))
      end)
      kill_all(p, other)
      p.stderr:close()
      d:close()
      if not ok then error(err, 0) end
    end)
    assert.are.same({}, h.children())
  end)

  it("exits 2 on a usage error and 1 when it cannot bind its socket", function()
    local me = tostring(orch.getpid())
    local start = tostring(orch.proc.info(orch.getpid()).start_time)
    for _, args in ipairs{ { "", me, start }, { "/tmp/x", "x", start }, { "/tmp/x", me, "1.5" }, { "/tmp/x", "0", start } } do
      local code, _, err = h.cli({ "fdholder", table.unpack(args) })
      assert.are.equal(2, code, table.concat(args, " "))
      assert.matches("^usage: orch fdholder SOCKET ORCH_PID ORCH_START", err)
    end
    local code, _, err = h.cli({ "fdholder", h.tmpdir() .. "/no/such/dir/sock", me, start })
    assert.are.equal(1, code)
    assert.are.equal("orch fdholder: dgram: no such file or directory\n", err)
  end)
end)
