-- orch.getuid/geteuid/exepath/realpath/sockets, orch.private, orch.flock, orch.fd:
-- checked against the kernel (stat, /proc, flock(1), a second uid).
local h = require "spec.helper"
local orch = h.orch

local function mode_of(path) return (h.sh("stat -c %a " .. h.shquote(path))) end
local function owner_of(path) return tonumber((h.sh("stat -c %u " .. h.shquote(path)))) end
local as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups "

describe("who and what", function()
  it("getuid and geteuid are the kernel's, also for a second uid", function()
    assert.are.equal(tonumber((h.sh("id -ru"))), orch.getuid())
    assert.are.equal(tonumber((h.sh("id -u"))), orch.geteuid())
    local out = h.sh(as_nobody .. h.shquote(h.bin) .. " -e 'print(orch.getuid(), orch.geteuid())'")
    assert.are.equal("65534\t65534", out)
  end)

  it("exepath is the file this process runs", function()
    assert.are.equal(h.sh("readlink -f /proc/" .. orch.getpid() .. "/exe"), orch.exepath())
    local code, out = h.cli({ "-e", "print(orch.exepath())" })
    assert.are.equal(0, code)
    assert.are.equal(h.sh("readlink -f " .. h.shquote(h.bin)) .. "\n", out)
  end)

  it("realpath resolves links, . and .. as the kernel does", function()
    local dir = h.tmpdir()
    assert(os.execute("mkdir " .. h.shquote(dir .. "/real") .. " && ln -s real " .. h.shquote(dir .. "/link")
      .. " && touch " .. h.shquote(dir .. "/real/f.lua")))
    local want = h.sh("readlink -f " .. h.shquote(dir .. "/real/f.lua"))
    assert.are.equal(want, orch.realpath(dir .. "/link/./f.lua"))
    assert.are.equal(want, orch.realpath(dir .. "/link/../link/f.lua"))
    assert.are.same({ nil, "realpath: no such file or directory", "ENOENT" },
      { orch.realpath(dir .. "/link/missing.lua") })
  end)

  it("sockets lists the unix sockets of a directory only", function()
    local dir = h.tmpdir()
    local names = h.run(function()
      local a <close> = assert(orch.listen{ unix = dir .. "/b.sock" })
      local d <close> = assert(orch.dgram{ unix = dir .. "/a.sock" })
      local hidden <close> = assert(orch.listen{ unix = dir .. "/.hidden.sock" })
      h.write(dir .. "/plain", "x")
      os.execute("mkdir " .. dir .. "/sub && ln -s " .. dir .. "/b.sock " .. dir .. "/link.sock")
      local got = assert(orch.sockets(dir))
      table.sort(got)
      return got
    end)
    assert.are.same({ "a.sock", "b.sock" }, names)
    assert.are.same({ nil, "opendir: no such file or directory", "ENOENT" }, { orch.sockets(dir .. "/none") })
  end)
end)

describe("orch.errname", function()
  it("names errnos as the bindings do, nil for none, raises for a non-integer", function()
    assert.are.equal("EPERM", orch.errname(1))
    assert.are.equal("ENOENT", orch.errname(2))
    assert.are.equal("EACCES", orch.errname(13))
    assert.are.equal("EMFILE", orch.errname(24))
    assert.are.equal("ELOOP", orch.errname(40))
    assert.are.equal("ENOENT", orch.errname(2.0))
    -- io.open's errno, and the name a binding returns for the same failure.
    local _, _, errno = io.open("/nonexistent/x")
    assert.are.equal(select(3, orch.realpath("/nonexistent/x")), orch.errname(errno))
    for _, n in ipairs { 0, -1, -2, 100000, math.mininteger, math.maxinteger, 1 << 32 | 2 } do
      assert.is_nil(orch.errname(n), n)
    end
    local bad = {
      { { 1.5 }, "bad argument #1 to 'errname' (number has no integer representation)" },
      { { "2" }, "bad argument #1 to 'errname' (number expected, got string)" },
      { { nil }, "bad argument #1 to 'errname' (number expected, got nil)" },
      { { 0 / 0 }, "bad argument #1 to 'errname' (number has no integer representation)" },
      { { 2, 3 }, "bad argument #2 to 'errname'" },
    }
    local ok, err = pcall(function() return orch.errname() end)
    assert.is_false(ok)
    assert.truthy(err:find("bad argument #1 to 'errname' (number expected, got no value)", 1, true), err)
    for _, c in ipairs(bad) do
      ok, err = pcall(function(...) return orch.errname(...) end, table.unpack(c[1], 1, #c[1] == 2 and 2 or 1))
      assert.is_false(ok)
      assert.truthy(tostring(err):find(c[2], 1, true), err)
    end
  end)
end)

describe("orch.read_config", function()
  it("reads a file no other user could have written, and never waits on a FIFO", function()
    local dir = h.tmpdir()
    local path = dir .. "/env"
    h.write(path, "A=1\n")
    os.execute("chmod 644 " .. h.shquote(path))
    assert.are.equal("A=1\n", orch.read_config(path))
    os.execute("chown 0 " .. h.shquote(path))            -- root's: trusted too
    assert.are.equal("A=1\n", orch.read_config(path))
    os.execute("chmod 646 " .. h.shquote(path))
    assert.are.same({ nil, "read_config: " .. path .. " may be written by others", "EPERM" }, { orch.read_config(path) })
    os.execute("chmod 644 " .. h.shquote(path) .. " && chown 65534 " .. h.shquote(path))
    assert.are.same({ nil, "read_config: " .. path .. " belongs to another user", "EPERM" }, { orch.read_config(path) })
    os.execute("mkfifo " .. h.shquote(dir .. "/fifo"))
    assert.are.same({ nil, "read_config: " .. dir .. "/fifo is not a regular file", "EPERM" },
                    { orch.read_config(dir .. "/fifo") })
    assert.are.equal("ENOENT", select(3, orch.read_config(dir .. "/none")))
  end)
end)

describe("orch.private", function()
  local dir
  before_each(function() dir = h.tmpdir() end)

  it("write replaces a record atomically with mode 0600; read trusts only such a file", function()
    local path = dir .. "/state"
    os.execute("umask 000; touch " .. h.shquote(dir .. "/x"))
    assert.is_true(orch.private.write(path, "one"))
    assert.are.equal("600", mode_of(path))
    assert.is_true(orch.private.write(path, "two"))
    assert.are.equal("two", orch.private.read(path))
    assert.is_false(io.open(path .. ".tmp") ~= nil)
    -- Readable by others: not trusted.
    os.execute("chmod 640 " .. h.shquote(path))
    local ok, msg, code = orch.private.read(path)
    assert.are.same({ nil, "private.read: " .. path .. " is accessible to group or others", "EPERM" }, { ok, msg, code })
    -- Another user's file: not trusted.
    os.execute("chmod 600 " .. h.shquote(path) .. " && chown 65534 " .. h.shquote(path))
    assert.are.same({ nil, "private.read: " .. path .. " belongs to another user", "EPERM" },
                    { orch.private.read(path) })
    -- A symbolic link (to a file that would pass): refused.
    assert.is_true(orch.private.write(dir .. "/real", "x"))
    os.execute("ln -s " .. h.shquote(dir .. "/real") .. " " .. h.shquote(dir .. "/link"))
    assert.are.same({ nil, "private.read: " .. dir .. "/link is a symbolic link", "EPERM" },
                    { orch.private.read(dir .. "/link") })
    assert.are.equal("ENOENT", select(3, orch.private.read(dir .. "/none")))
  end)

  it("append adds whole lines, 0600, never through a symbolic link", function()
    local path = dir .. "/journal"
    assert.is_true(orch.private.append(path, "a\n"))
    assert.is_true(orch.private.append(path, "b\n"))
    assert.are.equal("a\nb\n", h.slurp(path))
    assert.are.equal("600", mode_of(path))
    os.execute("ln -s " .. h.shquote(path) .. " " .. h.shquote(dir .. "/link"))
    assert.are.same({ nil, "private.append: " .. dir .. "/link is a symbolic link (never followed)", "EPERM" },
                    { orch.private.append(dir .. "/link", "c\n") })
    assert.are.equal("a\nb\n", h.slurp(path))
  end)

  it("append on a full disk adds all of data or none of it (ENOSPC), never half a line", function()
    local mnt = dir .. "/mnt"
    assert(os.execute("mkdir " .. mnt .. " && mount -t tmpfs -o size=64k,mode=0700 tmpfs " .. mnt))
    local ok, err = pcall(function()
      local path = mnt .. "/journal"
      assert.is_true(orch.private.append(path, "first\n"))
      -- Every block taken but the rest of the journal's first page.
      os.execute("dd if=/dev/zero of=" .. mnt .. "/filler bs=4096 2>/dev/null")
      assert.are.equal("0", h.sh("stat -f -c %a " .. mnt))
      -- 2000 bytes fit the page; then 3000 do not: the disk takes the first
      -- 2090 of them, which are cut off again.
      local a, b = string.rep("a", 1999) .. "\n", string.rep("b", 2999) .. "\n"
      assert.is_true(orch.private.append(path, a))
      assert.are.same({ nil, "private.append: no space left on device", "ENOSPC" }, { orch.private.append(path, b) })
      assert.are.equal("first\n" .. a, h.slurp(path))
      -- Space again: the next append starts on a whole line.
      os.remove(mnt .. "/filler")
      assert.is_true(orch.private.append(path, b))
      assert.are.equal("first\n" .. a .. b, h.slurp(path))
    end)
    if not os.execute("umount " .. mnt) then os.execute("umount -l " .. mnt) end
    if not ok then error(err, 0) end
  end)

  it("append never waits on a FIFO, with or without a reader, and appends to no file it would not read", function()
    local fifo = dir .. "/fifo"
    assert(os.execute("mkfifo -m 600 " .. h.shquote(fifo)))
    -- No reader: an open for writing would wait for one.
    assert.are.same({ nil, "private.append: " .. fifo .. " is a FIFO (refused, never waited on)", "EPERM" },
                    { orch.private.append(fifo, "c\n") })
    -- A reader (which would get the line, and could stop reading).
    h.run(function()
      local r = assert(orch.spawn { "sh", "-c", 'exec sleep 60 <>"$0"', fifo })
      -- Once sleep runs, the shell opened the FIFO (read-write: no wait).
      h.eventually(function() return h.sh("readlink /proc/" .. r.pid .. "/exe"):match("sleep$") end, "the reader")
      assert.are.same({ nil, "private.append: " .. fifo .. " is a FIFO (refused)", "EPERM" },
                      { orch.private.append(fifo, "c\n") })
      r:kill("KILL")
      r:wait()
    end)
    -- Another user's file, one that others may read, a hard link.
    local other = dir .. "/other"
    h.write(other, "")
    os.execute("chmod 600 " .. h.shquote(other) .. " && chown 65534 " .. h.shquote(other))
    assert.are.same({ nil, "private.append: " .. other .. " is a file of another user (refused)", "EPERM" },
                    { orch.private.append(other, "c\n") })
    local open = dir .. "/open"
    h.write(open, "")
    os.execute("chmod 644 " .. h.shquote(open))
    assert.are.same({ nil, "private.append: " .. open .. " is accessible to group or others (refused)", "EPERM" },
                    { orch.private.append(open, "c\n") })
    assert.is_true(orch.private.append(dir .. "/mine", "a\n"))
    os.execute("ln " .. h.shquote(dir .. "/mine") .. " " .. h.shquote(dir .. "/hard"))
    assert.are.same({ nil, "private.append: " .. dir .. "/hard is a file with another link (refused)", "EPERM" },
                    { orch.private.append(dir .. "/hard", "c\n") })
    assert.are.equal("", h.slurp(other) .. h.slurp(open))
    assert.are.equal("a\n", h.slurp(dir .. "/mine"))
  end)

  it("mkdir makes or narrows a directory; strict refuses another user's", function()
    local d = dir .. "/run"
    assert.is_true(orch.private.mkdir(d))
    assert.are.equal("700", mode_of(d))
    os.execute("chmod 755 " .. h.shquote(d))
    assert.is_true(orch.private.mkdir(d))
    assert.are.equal("755", mode_of(d))          -- not strict: left alone
    assert.is_true(orch.private.mkdir(d, true))
    assert.are.equal("700", mode_of(d))
    os.execute("chown 65534 " .. h.shquote(d))
    assert.are.same({ nil, "private.mkdir: " .. d .. " belongs to uid 65534, not to us", "EPERM" },
                    { orch.private.mkdir(d, true) })
    h.write(dir .. "/file", "x")
    assert.are.same({ nil, "private.mkdir: " .. dir .. "/file is a regular file, not a directory", "ENOTDIR" },
                    { orch.private.mkdir(dir .. "/file") })
    -- Another user's symbolic link to a directory: says so, never followed.
    os.execute("ln -s " .. h.shquote(dir) .. " " .. h.shquote(dir .. "/link") .. " && chown -h 65534 "
      .. h.shquote(dir .. "/link") .. " && mkfifo " .. h.shquote(dir .. "/fifo"))
    for _, strict in ipairs { false, true } do
      assert.are.same({ nil, "private.mkdir: " .. dir .. "/link is a symbolic link owned by uid 65534, not a "
                        .. "directory: refused (never followed)", "ENOTDIR" },
                      { orch.private.mkdir(dir .. "/link", strict) })
      assert.are.same({ nil, "private.mkdir: " .. dir .. "/fifo is a FIFO, not a directory", "ENOTDIR" },
                      { orch.private.mkdir(dir .. "/fifo", strict) })
    end
  end)

  it("check_dir accepts only a directory nobody else can change", function()
    local d = dir .. "/p"
    os.execute("mkdir -m 755 " .. h.shquote(d))
    assert.is_true(orch.private.check_dir(d))
    os.execute("chmod 775 " .. h.shquote(d))
    assert.are.same({ nil, "private.check_dir: " .. d .. " is writable by group or others", "EPERM" },
                    { orch.private.check_dir(d) })
    os.execute("chmod 755 " .. h.shquote(d) .. " && chown 65534 " .. h.shquote(d))
    assert.are.equal("EPERM", select(3, orch.private.check_dir(d)))
    h.write(dir .. "/f", "x")
    assert.are.same({ nil, "private.check_dir: " .. dir .. "/f is a regular file, not a directory", "EPERM" },
                    { orch.private.check_dir(dir .. "/f") })
  end)
end)

describe("orch.flock", function()
  it("holds the lock against other processes, names the holder, and is handed over by fd", function()
    local dir = h.tmpdir()
    local path = dir .. "/x.lock"
    local res = h.run(function()
      local lock = assert(orch.flock(path))
      local out = { tostring(lock) == "orch.Lock: " .. path, lock:path() == path, mode_of(path),
                    h.slurp(path) == orch.getpid() .. "\n" }
      -- flock(1) in another process cannot take it.
      out[#out + 1] = h.sh("flock -n " .. h.shquote(path) .. " true && echo free || echo busy")
      -- Neither can another orch: it names our pid.
      local script = h.script(("print(select(2, orch.flock(%q)))"):format(path))
      local p = assert(orch.spawn{ h.bin, "run", script, stdout = "pipe" })
      out[#out + 1] = p.stdout:read_all()
      p:wait()
      -- A child given the descriptor adopts the lock.
      script = h.script(("local l = assert(orch.flock(%q, 3)) print(l:fd(), l:write_pid())"):format(path))
      p = assert(orch.spawn{ h.bin, "run", script, stdout = "pipe", fds = { [3] = lock:fd() } })
      out[#out + 1] = p.stdout:read_all()
      out[#out + 1] = h.slurp(path) == p.pid .. "\n"
      p:wait()
      assert(lock:write_pid())
      lock:close()
      out[#out + 1] = h.sh("flock -n " .. h.shquote(path) .. " true && echo free || echo busy")
      out[#out + 1] = lock:close()
      out[#out + 1] = (h.error_of(function() return lock:fd() end):match("attempt to use a closed orch.Lock")) ~= nil
      return out
    end)
    assert.are.equal("busy", res[5])
    assert.matches("^already held by pid %d+ %(lock file " .. path:gsub("%p", "%%%0") .. "%)\tEAGAIN\n$", res[6])
    assert.are.same({ "3\ttrue\n", true, "free", true, true }, { res[7], res[8], res[9], res[10], res[11] })
    assert.are.same({ true, true, "600", true }, { res[1], res[2], res[3], res[4] })
  end)

  it("refuses a lock file that is another user's or not a regular file", function()
    local dir = h.tmpdir()
    h.write(dir .. "/theirs.lock", "")
    os.execute("chown 65534 " .. h.shquote(dir .. "/theirs.lock"))
    assert.are.equal("EPERM", select(3, orch.flock(dir .. "/theirs.lock")))
    os.execute("mkfifo " .. h.shquote(dir .. "/f.lock"))
    assert.are.same({ nil, "lock " .. dir .. "/f.lock: not a regular file", "EINVAL" }, { orch.flock(dir .. "/f.lock") })
    os.execute("mkdir " .. h.shquote(dir .. "/d.lock"))
    assert.are.equal("EISDIR", select(3, orch.flock(dir .. "/d.lock")))
  end)
end)

describe("orch.fd", function()
  local function cloexec(fd)
    local flags = h.slurp("/proc/self/fdinfo/" .. fd):match("flags:%s*(%d+)")
    return tonumber(flags, 8) & tonumber("2000000", 8) ~= 0
  end

  it("memfd holds data, inherit toggles close-on-exec, read reads it and closes it", function()
    local fd = assert(orch.fd.memfd("state"))
    assert.is_true(cloexec(fd))
    assert.is_true(orch.fd.inherit(fd))
    assert.is_false(cloexec(fd))
    assert.is_true(orch.fd.inherit(fd, false))
    assert.is_true(cloexec(fd))
    assert.are.equal("state", orch.fd.read(fd))
    assert.is_nil(io.open("/proc/self/fdinfo/" .. fd))
    assert.are.equal("EBADF", select(3, orch.fd.inherit(fd)))
  end)

  it("stat says what fstat says: a pipe's inode as /proc names it, a file's owner, mode and size", function()
    h.run(function()
      local r, w = assert(orch.pipe())
      local st = assert(orch.fd.stat(r:fd()))
      local link = assert(io.popen("readlink /proc/" .. orch.getpid() .. "/fd/" .. r:fd())):read("l")
      assert.are.same({ "fifo", "pipe:[" .. st.ino .. "]" }, { st.type, link })
      r:close(); w:close()
    end)
    local fd = assert(orch.fd.memfd("12345"))
    local st = assert(orch.fd.stat(fd))
    assert.are.same({ "file", 5, 0 }, { st.type, st.size, st.uid })
    local out = assert(io.popen("stat -L -c '%d %i %a' /proc/" .. orch.getpid() .. "/fd/" .. fd)):read("l")
    assert.are.equal(out, ("%d %d %o"):format(st.dev, st.ino, st.mode))
    orch.fd.read(fd)
    assert.are.same({ nil, "fd.stat: bad file descriptor", "EBADF" }, { orch.fd.stat(fd) })
    assert.has_error(function() orch.fd.stat(-1) end, "bad argument #1 to 'stat' (file descriptor out of range)")
  end)

  it("an inherited descriptor survives an exec of orch", function()
    local fd = assert(orch.fd.memfd("across"))
    assert(orch.fd.inherit(fd))
    local code, out = h.cli({ "-e", ("orch.exec(%q, { '-e', 'print(orch.fd.read(%d))' })"):format(h.bin, fd) })
    orch.fd.read(fd)
    assert.are.equal(0, code)
    assert.are.equal("across\n", out)
  end)

  it("read refuses what is no regular file", function()
    local res = h.run(function()
      local r, w = assert(orch.pipe())
      local out = { orch.fd.read(r:fd()) }
      r:close() w:close()
      return out
    end)
    assert.are.same({ nil, "fd.read: not a regular file", "EINVAL" }, res)
  end)
end)

describe("orch.malloc_trim", function()
  it("gives the freed heap below a live allocation back to the kernel", function()
    -- In a fresh orch: 200,000 small tables, then one that stays (above
    -- them in the heap, so that free() cannot shrink the heap's top), then
    -- the first ones collected. Their pages are given back by the time the
    -- trim returns (orch's Lua allocator gives most of its empty pages back
    -- as they empty, glibc's heap only at the trim).
    local code, out, err = h.cli({ "-e", [[
      local function rss() return tonumber(io.open("/proc/self/smaps_rollup"):read("a"):match("\nRss:%s+(%d+)")) end
      local t = {}
      for i = 1, 200000 do t[i] = { i } end
      local pin = { "stays" }
      local before = rss()
      t = nil
      collectgarbage() collectgarbage()
      local trimmed = orch.malloc_trim()
      print(before, rss(), trimmed, pin[1])
    ]] })
    assert.are.equal(0, code, err)
    local before, after, trimmed = out:match("^(%d+)%s+(%d+)%s+(%a+)%s+stays")
    -- Under ASan the heap is the sanitizer's, which glibc cannot trim.
    if h.sanitized then
      assert.are.equal("false", trimmed, out)
      return
    end
    assert.are.equal("true", trimmed, out)
    -- About 20 MB were freed; at least half of them left.
    assert.is_true(tonumber(before) - tonumber(after) > 10000, out)
  end)
end)

describe("orch.sched_yield", function()
  it("returns true, with or without another task to give the CPU to", function()
    assert.is_true(orch.sched_yield())
    h.run(function()
      -- A process just spawned (still finishing its exec, or running):
      -- the call hands it the CPU if it shares ours, and comes back.
      local p = assert(orch.spawn { "true" })
      assert.is_true(orch.sched_yield())
      assert.are.same({ 0 }, { p:wait() })
    end)
  end)
end)

describe("bad arguments", function()
  it("raise, table-driven", function()
    h.check_raises({
      { function() return orch.getuid(1) end, "bad argument #1 to 'getuid' (no value expected)" },
      { function() return orch.exepath(1) end, "bad argument #1 to 'exepath' (no value expected)" },
      { function() return orch.realpath() end, "bad argument #1 to 'realpath' (string expected, got no value)" },
      { function() return orch.realpath("/", 1) end, "bad argument #2 to 'realpath' (no value expected)" },
      { function() return orch.sockets() end, "bad argument #1 to 'sockets' (string expected, got no value)" },
      { function() return orch.read_config("/etc/x", 1) end, "bad argument #2 to 'read_config' (no value expected)" },
      { function() return orch.private.write("/tmp/x") end, "bad argument #2 to 'write' (string expected, got no value)" },
      { function() return orch.private.read("") end, "bad argument #1 to 'read' (path without zero bytes expected)" },
      { function() return orch.private.append("/tmp/x", string.rep("x", 65537)) end, "bad argument #2 to 'append' (more than 64 KiB)" },
      { function() return orch.private.mkdir({}) end, "bad argument #1 to 'mkdir' (string expected, got table)" },
      { function() return orch.private.check_dir("/tmp", 1) end, "bad argument #2 to 'check_dir' (no value expected)" },
      { function() return orch.flock("/tmp/x", -2) end, "bad argument #2 to 'flock' (file descriptor out of range)" },
      { function() return orch.fd.read(-1) end, "bad argument #1 to 'read' (file descriptor out of range)" },
      { function() return orch.fd.memfd(1, 2) end, "bad argument #2 to 'memfd' (no value expected)" },
      { function() return orch.fd.inherit("x") end, "bad argument #1 to 'inherit' (number expected, got string)" },
      { function() return orch.fd.close(-1) end, "bad argument #1 to 'close' (file descriptor out of range)" },
      { function() return orch.fd.close(3, 1) end, "bad argument #2 to 'close' (no value expected)" },
      { function() return orch.malloc_trim(0) end, "bad argument #1 to 'malloc_trim' (no value expected)" },
      { function() return orch.sched_yield(1) end, "bad argument #1 to 'sched_yield' (no value expected)" },
    })
  end)
end)
