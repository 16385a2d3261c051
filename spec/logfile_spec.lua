--- orch.logfile: log files opened without trusting the path (doc/logfile.md).
-- The attacks by a second user are in spec/security_spec.lua; this file
-- covers the API: modes, refusals, FIFOs, partial writes, bad arguments.
local h = require "spec.helper"
local orch = h.orch
local lf = orch.logfile

local function stat(path, fmt)
  return h.sh("stat -c " .. h.shquote(fmt) .. " " .. h.shquote(path))
end

describe("orch.logfile", function()
  it("creates a file with exactly the mode asked for, whatever the umask, and appends", function()
    local d = h.tmpdir()
    local f = assert(lf.open(d .. "/a.log"))
    assert.are.equal(2, f:write_lines { "one", "two" })
    assert.are.equal(8, f:size())
    assert.matches("^orch.LogFile: fd=%d+ size=8$", tostring(f))
    f:close()
    f:close()
    assert.are.equal("orch.LogFile: closed", tostring(f))
    assert.are.equal("640", stat(d .. "/a.log", "%a"))
    f = assert(lf.open(d .. "/a.log", { mode = 384 }))   -- existing: mode left alone
    assert.are.equal(8, f:size())
    assert.are.equal(1, f:write_lines({ "x", "three", "y" }, 2, 2))
    f:close()
    assert.are.equal("one\ntwo\nthree\n", h.slurp(d .. "/a.log"))
    assert.are.equal("640", stat(d .. "/a.log", "%a"))
    f = assert(lf.open(d .. "/b.log", { mode = 256 }))   -- 0400, umask 022 or not
    f:close()
    assert.are.equal("400", stat(d .. "/b.log", "%a"))
  end)

  it("ends a line an earlier writer left unfinished before writing", function()
    local d = h.tmpdir()
    h.write(d .. "/c.log", "cut sho")
    local f = assert(lf.open(d .. "/c.log"))
    assert(f:write_lines { "next" })
    f:close()
    assert.are.equal("cut sho\nnext\n", h.slurp(d .. "/c.log"))
  end)

  it("never blocks on a FIFO, and refuses one", function()
    local d = h.tmpdir()
    local fifo = d .. "/fifo.log"
    assert(os.execute("mkfifo " .. fifo))
    local f, err, en = lf.open(fifo)            -- no reader: at once
    assert.is_nil(f)
    assert.are.equal("EPERM", en)
    assert.matches("refused: it is not a regular file", err, 1, true)
    h.run(function()
      local r = assert(orch.fifo.open(fifo, "r"))
      f, err, en = lf.open(fifo)                -- a reader: opened, then refused
      r:close()
      assert.is_nil(f)
      assert.are.equal("EPERM", en)
    end)
  end)

  it("refuses links, other users' directories and files, and directories others may write", function()
    local d = h.tmpdir()
    h.write(d .. "/t", "x\n")
    os.execute("ln " .. d .. "/t " .. d .. "/hard.log; ln -s " .. d .. "/t " .. d .. "/soft.log")
    os.execute("mkdir -m 777 " .. d .. "/open; mkdir -m 775 " .. d .. "/group; mkdir -m 1777 " .. d .. "/sticky")
    h.write(d .. "/sticky/theirs.log", "")
    os.execute("chown 65534 " .. d .. "/sticky/theirs.log")
    local cases = {
      { d .. "/hard.log", "EPERM", "refused: it has 2 hard links" },
      { d .. "/soft.log", "ELOOP", "refused: it is a symbolic link (never followed)" },
      { d .. "/open/x.log", "EPERM", "refused: the directory " .. d .. "/open is writable by every user" },
      { d .. "/group/x.log", "EPERM", "refused: the directory " .. d .. "/group is writable by its group" },
      { d .. "/sticky/theirs.log", "EPERM", "refused: it belongs to uid 65534" },
      { d .. "/t/x.log", "ENOTDIR", "" },
      { d .. "/none/x.log", "ENOENT", "" },
      { d .. "/", "EISDIR", "a file name expected" },
    }
    for _, c in ipairs(cases) do
      local f, err, en = lf.open(c[1])
      assert.is_nil(f, c[1])
      assert.are.equal(c[2], en, c[1] .. ": " .. tostring(err))
      assert.matches(c[3], err, 1, true)
    end
    -- In a sticky directory, a file of our own is fine.
    local f = assert(lf.open(d .. "/sticky/mine.log"))
    f:close()
    assert.are.equal("x\n", h.slurp(d .. "/t"))
  end)

  it("resolves a relative path from the current directory", function()
    local name = ("rel-%d.log"):format(orch.getpid())   -- in the spec's cwd
    local f = assert(lf.open(name))
    f:close()
    local mode = stat(name, "%a")
    os.remove(name)
    assert.are.equal("640", mode)
  end)

  it("raises on bad arguments", function()
    local d = h.tmpdir()
    local f = assert(lf.open(d .. "/x.log"))
    h.check_raises {
      { function() lf.open() end, "bad argument #1 to 'open' (string expected, got no value)" },
      { function() lf.open("") end, "bad argument #1 to 'open' (path must not be empty)" },
      { function() lf.open("a\0b") end, "bad argument #1 to 'open' (string contains a zero byte)" },
      { function() lf.open("x", { mode = 512 }) end, "(option 'mode': permission bits (0 to 0777) expected)" },
      { function() lf.open("x", { mods = 1 }) end, "(unknown option 'mods')" },
      { function() lf.open("x", { owner = {} }) end, "(option 'owner': uid or user name expected)" },
      { function() lf.open("x", { owner = -1 }) end, "(option 'owner': uid or user name expected)" },
      { function() lf.open("x", {}, 1) end, "bad argument #3 to 'open' (no value expected)" },
      { function() f:write_lines("x") end, "bad argument #1 to 'write_lines' (table expected, got string)" },
      { function() f:write_lines({ "a", 2 }) end, "bad argument #1 to 'write_lines' (item 2: string expected, got number)" },
      { function() f:write_lines({ "a" }, 0) end, "bad argument #2 to 'write_lines' (index must be >= 1)" },
    }
    local _, err, en = lf.open(d .. "/y.log", { owner = "no-such-user-here" })
    assert.are.equal("ENOENT", en)
    assert.matches("unknown user 'no-such-user-here'", err, 1, true)
    f:close()
    h.check_raises {
      { function() f:write_lines({ "a" }) end, "attempt to use a closed orch.LogFile" },
      { function() f:size() end, "attempt to use a closed orch.LogFile" },
    }
  end)
end)
