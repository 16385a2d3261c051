--- The cgroup trust rule of doc/security.md ("Cgroups"), proven by the
-- attack it stops: a cgroup that another user (nobody, uid 65534, through
-- setpriv) owns or may write lets that user move root's processes out of
-- the cgroups below it (the kernel checks the writer against the common
-- ancestor's cgroup.procs, not against the process's owner), so root orch
-- must neither make a cgroup below it nor take one over. Every cgroup is
-- made under orch-test/ (h.cgroup_name) and removed by its test, with
-- whatever nobody made in it.
local h = require "spec.helper"
local orch = h.orch

local NOBODY = "setpriv --reuid=65534 --regid=65534 --clear-groups "

-- The v2 line of /proc/PID/cgroup (independently of orch.cgroup.of).
local function v2_of(pid)
  return h.slurp("/proc/" .. pid .. "/cgroup"):match("0::([^\n]*)")
end

describe("cgroups another user can change", function()
  local defer, T
  -- Each test's start: a root-owned cgroup T of its own; what is below it
  -- goes with it at the end.
  local function start()
    defer = h.make_defer(function(f) finally(f) end)
    T = assert(orch.cgroup.create(h.cgroup_name()))
    defer(function()
      local path = T:path()
      T:close()
      h.remove_cgroup_tree(path)
    end)
  end

  -- A cgroup below T given to nobody, as a delegation does (the directory
  -- and its files).
  local function nobodys(name)
    local dir = T:dir() .. "/" .. name
    assert(os.execute("mkdir " .. h.shquote(dir) .. " && chown -R 65534:65534 " .. h.shquote(dir)))
    return T:path() .. "/" .. name, dir
  end

  it("lets nobody move a root process out of a cgroup below nobody's; orch makes and opens nothing there", function()
    start()
    local x, xdir = nobodys("x")
    -- The attack, on the kernel alone: root's process in a root-made cgroup
    -- below nobody's is moved out by nobody.
    assert(os.execute("mkdir " .. h.shquote(xdir .. "/svc")))
    h.run(function()
      local p = assert(orch.spawn { "sleep", "60" })
      local ok, err = pcall(function()
        h.write(xdir .. "/svc/cgroup.procs", tostring(p.pid))
        assert.are.equal(x .. "/svc", v2_of(p.pid))
        local out, moved = h.sh(NOBODY .. "sh -c " .. h.shquote("mkdir " .. xdir .. "/evil && echo " .. p.pid
          .. " > " .. xdir .. "/evil/cgroup.procs") .. " 2>&1")
        assert(moved, "the kernel refused nobody's move (" .. out .. "): the rule would guard nothing here")
        assert.are.equal(x .. "/evil", v2_of(p.pid))
      end)
      p:kill("KILL")
      p:wait()
      if not ok then error(err, 0) end
    end)
    -- orch makes no cgroup there, and says why.
    local refused = "refused: " .. x .. " belongs to uid 65534, neither orch's uid (0) nor root: that user could "
      .. "move processes out of the cgroups below it, or replace them (see doc/security.md)"
    assert.are.same({ nil, "cgroup.create: " .. x .. "/svc2: " .. refused, "EPERM" },
                    { orch.cgroup.create(x .. "/svc2") })
    assert.is_nil(io.open(xdir .. "/svc2/cgroup.procs"))
    -- Nor deeper, nor with a controller to enable on the way (nothing
    -- written to nobody's cgroup.subtree_control).
    local before = h.slurp(xdir .. "/cgroup.subtree_control")
    assert.are.same({ nil, "cgroup.create: " .. x .. "/a/b: " .. refused, "EPERM" },
                    { orch.cgroup.create(x .. "/a/b", { controllers = { "pids" } }) })
    assert.is_nil(io.open(xdir .. "/a/cgroup.procs"))
    assert.are.equal(before, h.slurp(xdir .. "/cgroup.subtree_control"))
    -- It takes over neither nobody's cgroup nor root's cgroup below it.
    assert.are.same({ nil, "cgroup.open: " .. x .. ": " .. refused, "EPERM" },
                    { orch.cgroup.open(x, { trusted = true }) })
    assert.are.same({ nil, "cgroup.open: " .. x .. "/svc: " .. refused, "EPERM" },
                    { orch.cgroup.open(x .. "/svc", { trusted = true }) })
    -- A plain open (to read it) is still allowed.
    local cg = assert(orch.cgroup.open(x .. "/evil"))
    assert.is_false(cg:populated())
    cg:close()
    -- cgroupfs has no place for a symbolic link or a file of one's own: no
    -- path below a cgroup can lead elsewhere (orch needs no O_NOFOLLOW there).
    local out, ok = h.sh(NOBODY .. "sh -c " .. h.shquote("ln -s /etc/shadow " .. xdir .. "/evil/cgroup.kill2 || "
      .. "touch " .. xdir .. "/evil/memory.max") .. " 2>&1")
    assert.is_falsy(ok, out)
    assert.is_nil(io.open(xdir .. "/evil/cgroup.kill2"))
  end)

  it("refuses a root-owned cgroup whose cgroup.procs or directory others may write (EACCES)", function()
    start()
    local y = T:path() .. "/y"
    assert(orch.cgroup.create(y)):close()
    assert(os.execute("chmod 0666 " .. h.shquote(T:dir() .. "/y/cgroup.procs")))
    assert.are.same({ nil, "cgroup.create: " .. y .. "/z: refused: " .. y .. "/cgroup.procs may be written by its "
      .. "group or by every user (mode 0666): they could move processes out of the cgroups below it, or replace "
      .. "them (see doc/security.md)", "EACCES" }, { orch.cgroup.create(y .. "/z") })
    local w = T:path() .. "/w"
    assert(orch.cgroup.create(w)):close()
    assert(os.execute("chmod 0777 " .. h.shquote(T:dir() .. "/w")))
    local cg, err, code = orch.cgroup.create(w .. "/z")
    assert.is_nil(cg)
    assert.are.equal("EACCES", code)
    assert.matches("refused: " .. w .. " may be written by its group or by every user (mode 0777)", err, 1, true)
    assert.are.same({}, assert(orch.cgroup.open(w)):children())
    -- Once the mode is narrowed, both work again.
    assert(os.execute("chmod 0755 " .. h.shquote(T:dir() .. "/w")))
    cg = assert(orch.cgroup.create(w .. "/z"))
    assert(cg:remove())
    cg:close()
    assert(assert(orch.cgroup.open(T:path(), { trusted = true })):path() == T:path())
  end)

  it("the supervisor given a parent below nobody's, or nobody's parent itself, says so once and uses no cgroup", function()
    start()
    -- The parent asked for is in nobody's cgroup, and nobody made it first
    -- (its name is in the configuration).
    local x, xdir = nobodys("x")
    assert(os.execute(NOBODY .. "mkdir " .. h.shquote(xdir .. "/sup")))
    -- The parent asked for is nobody's (delegated), below a root cgroup.
    local v = T:path() .. "/v"
    assert(os.execute("mkdir " .. h.shquote(T:dir() .. "/v")))
    assert(os.execute("mkdir " .. h.shquote(T:dir() .. "/v/sup") .. " && chown -R 65534:65534 "
      .. h.shquote(T:dir() .. "/v/sup")))
    for _, parent in ipairs({ x .. "/sup", v .. "/sup" }) do
      local script = h.script(string.format([[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stdout:write(m, "\n") end, exit_when_idle = true, persist = false,
               cgroup = %q }
sup.service{ name = "a", restart = "never", cmd = { "sh", "-c", "cat /proc/self/cgroup | grep ^0::" } }
print("limits:", pcall(sup.service, { name = "b", cmd = { "true" }, limits = { pids_max = 10 } }))
sup.run()
]], parent))
      local out = h.sh(h.shquote(h.bin) .. " run " .. h.shquote(script) .. " 2>&1")
      local _, n = out:gsub("cgroups off: cgroup%.[a-z]+: " .. parent:gsub("%p", "%%%0") .. ": refused: [^\n]*"
        .. "belongs to uid 65534, neither orch's uid %(0%) nor root", "")
      assert.are.equal(1, n, out)
      assert.matches("limits:\tfalse\tservice 'b': limits.pids_max: cgroup limits need cgroups, which are off: "
        .. "cgroup.", out, 1, true)
      -- a ran, in orch's own cgroup (nothing of nobody's).
      assert.matches("a: exited with code 0", out, 1, true)
      assert.matches("0::" .. orch.cgroup.self(), out, 1, true)
      assert.is_nil(out:find("0::" .. parent, 1, true), out)
    end
    assert.are.same({}, assert(orch.cgroup.open(x .. "/sup")):children())
    assert.are.same({}, assert(orch.cgroup.open(v .. "/sup")):children())
  end)
end)
