-- What every process of the orch binary pays for before it does anything
-- (issues 14 and 15: memory per service): the orchestrator, the fd holder
-- and each `orch ctl` run the same binary.
local h = require "spec.helper"

-- The p_memsz of the ELF file's PT_TLS program header (0 without one).
local function tls_size(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  assert.are.equal("\127ELF", data:sub(1, 4))
  assert.are.equal(2, data:byte(5))                 -- ELFCLASS64
  local phoff = string.unpack("<I8", data, 0x20 + 1)
  local phentsize, phnum = string.unpack("<I2I2", data, 0x36 + 1)
  for i = 0, phnum - 1 do
    local at = phoff + i * phentsize + 1
    if string.unpack("<I4", data, at) == 7 then      -- PT_TLS
      return (string.unpack("<I8", data, at + 0x28))
    end
  end
  return 0
end

describe("memory of every orch process", function()
  it("keeps the binary's thread-local storage under 4 KiB (each thread's copy is zeroed, so resident, at its start)", function()
    assert.is_true(tls_size(h.bin) < 4096)
  end)

  -- Lua, libuv, jansson and http-parser are linked into the executable
  -- (CMakeLists.txt, ORCH_EXE_STATIC): no process of the orch binary (orch,
  -- its fd holder, `orch ctl`) maps them as shared libraries, each with its
  -- relocated pages and its text resident around every page touched. The
  -- executable exports Lua's API, so a C module a script requires
  -- (lua-cjson) binds to that Lua, the only one in the process.
  it("maps no shared Lua or libuv, and a C module a script requires binds to the Lua linked into orch", function()
    local code, out, err = h.cli({ "-e", [[
      local cjson = require "cjson"
      local mapped = {}
      for l in io.lines("/proc/self/maps") do
        local path = l:match("%s(/%S+)$")
        local base = path and path:match("([^/]+)$") or ""
        if base:match("^liblua5%.4%.so") or base:match("^libuv%.so") or base:match("^libjansson%.so")
          or base:match("^libhttp_parser%.so") then
          mapped[base] = true
        end
      end
      local names = {}
      for k in pairs(mapped) do names[#names + 1] = k end
      table.sort(names)
      print(cjson.encode({ a = { 1, 2 } }), #names, table.concat(names, " "))
    ]] })
    assert.are.equal(0, code, err)
    assert.are.equal('{"a":[1,2]}\t0\t\n', out)
  end)

  -- libm's text: ld.so runs its IFUNC resolvers as it loads it, and the
  -- kernel maps a 64 KiB window of the page cache around each page a fault
  -- touches, so the whole text was resident in every orch process; main()
  -- unmaps it (src/main.c) and only the windows of what orch calls come back.
  -- Lua's `^` is libm's pow (its code and tables, four windows): the
  -- modules a supervisor loads write their constants without it, and the
  -- backoff multiplies (lua/orch/supervisor/policy.lua). In pages: at most
  -- two windows of the text (one in practice), and of the read-only
  -- segments the first (the symbol tables) and the relocated page (without
  -- these changes: 248 to 312 KiB of text, 236 KiB read-only).
  it("holds only the windows of libm's text that orch calls, in a fresh process and in a supervisor that computed backoffs", function()
    local code, out, err = h.cli({ "-e", [[
      local function libm()
        local rss, cur = {}, nil
        for l in io.lines("/proc/self/smaps") do
          local perm, path = l:match("^%x+%-%x+ (%S+) %x+ %S+ %d+%s*(%S*)")
          if perm then cur = path:match("/libm%.so") and perm or nil
          elseif cur then
            local kb = l:match("^Rss:%s+(%d+)")
            if kb then rss[cur] = (rss[cur] or 0) + tonumber(kb) end
          end
        end
        return (rss["r-xp"] or 0) .. " " .. (rss["r--p"] or 0)
      end
      local fresh = libm()
      require "orch.supervisor"
      require "orch.supervisor.limits"
      require "orch.scheduler"
      local policy = require "orch.supervisor.policy"
      local d = {}
      for i = 1, 6 do d[i] = policy.backoff({ initial = 0.1, factor = 2, max = 3, jitter = 0 }, i) end
      print(fresh, libm(), table.concat(d, " "))
    ]] })
    assert.are.equal(0, code, err)
    local x0, r0, x1, r1, delays = out:match("^(%d+) (%d+)\t(%d+) (%d+)\t(.-)\n$")
    assert.is_truthy(x0, out)
    assert.are.equal("0.1 0.2 0.4 0.8 1.6 3", delays)
    if not h.sanitized then
      for _, kb in ipairs { x0, r0, x1, r1 } do assert.is_true(tonumber(kb) <= 128, out) end
    end
  end)

  -- libm is mapped at the first call of one of its functions (src/libm.c),
  -- not by ld.so at every start (issue 15: about 65 us of every orch
  -- process's start, `orch ctl` and the fd holder included, which seldom
  -- call it). Under the sanitizers libasan maps it at start.
  it("maps libm at the first call of a libm function, not at start", function()
    local code, out, err = h.cli({ "-e", [[
      local function libm()
        for l in io.lines("/proc/self/maps") do if l:find("/libm%.so") then return true end end
        return false
      end
      local before = libm()
      local x = tonumber("2.5")    -- (a constant would be folded as the chunk compiles)
      local r = { x // 1, x % 2, x ^ 2, string.format("%.6f %.6f", math.sin(x), math.log(x, 10)) }
      print(before, libm(), r[1], r[2], r[3], r[4])
    ]] })
    assert.are.equal(0, code, err)
    assert.are.equal(string.format("%s\ttrue\t2.0\t0.5\t6.25\t0.598472 0.397940\n", tostring(h.sanitized)), out)
  end)

  -- A C module built without naming libm (`cc -shared` alone, as luarocks
  -- builds them) found any of libm's functions in the executable's scope
  -- when ld.so mapped libm at start: a C library that fails to load is
  -- loaded again with libm global (src/libm.c), by require and by
  -- package.loadlib.
  it("lets a C module call any libm function without naming libm as a dependency", function()
    local d = h.tmpdir()
    h.write(d .. "/m.c", [[
      typedef struct lua_State lua_State;
      double luaL_checknumber(lua_State *L, int arg);
      void lua_pushnumber(lua_State *L, double n);
      void lua_pushcclosure(lua_State *L, int (*fn)(lua_State *), int n);
      double floor(double x);
      long lround(double x);
      float sqrtf(float x);
      static int f(lua_State *L) {
        double x = luaL_checknumber(L, 1);
        lua_pushnumber(L, floor(x) + (double)lround(x) + (double)sqrtf(16.0f));
        return 1;
      }
      int luaopen_orch_spec_libm(lua_State *L) { lua_pushcclosure(L, f, 0); return 1; }
    ]])
    local _, ok = h.sh(string.format("cd %s && cc -shared -fPIC -fno-builtin -o orch_spec_libm.so m.c 2>&1",
      h.shquote(d)))
    assert.is_true(ok, "cannot build the module")
    assert.are.equal("", (h.sh("readelf -d " .. h.shquote(d .. "/orch_spec_libm.so") .. " | grep libm || true")))
    local code, out, err = h.cli({ "-e", "package.cpath = ... .. '/?.so'; print(require('orch_spec_libm')(tonumber('2.7')))", d })
    assert.are.equal(0, code, err)
    assert.are.equal("9.0\n", out)
    code, out, err = h.cli({ "-e", [[
      local open = assert(package.loadlib(... .. "/orch_spec_libm.so", "luaopen_orch_spec_libm"))
      print(open()(tonumber("3.2")))
    ]], d })
    assert.are.equal(0, code, err)
    assert.are.equal("10.0\n", out)
  end)

  it("reads a child's output in a fresh process (the read buffer made at the first read)", function()
    local code, out = h.cli({ "-e", [[print(orch.run{ "sh", "-c", "printf abc; printf def >&2" })]] })
    assert.are.equal(0, code)
    assert.are.equal("0\tabc\tdef\tnil\n", out)
  end)
  -- orch's Lua allocator (src/lalloc.c): a block of up to 256 bytes takes
  -- its size rounded to 8, without a header; glibc's malloc takes 8 bytes
  -- more, rounded to 16 (a 32-byte object 48). Lua counts the exact sizes
  -- (collectgarbage "count"): the process's anonymous memory grows by about
  -- that much with orch's allocator, by about 1.3 times as much with malloc.
  it("holds small Lua objects without malloc's header and rounding", function()
    local code, out, err = h.cli({ "-e", [[
      local function anon() return tonumber(io.open("/proc/self/smaps_rollup"):read("a"):match("\nAnonymous:%s+(%d+)")) end
      local t = {}
      for i = 1, 400000 do t[i] = false end     -- the array part, before the baseline
      collectgarbage() collectgarbage()
      local a0, c0 = anon(), collectgarbage("count")
      for i = 1, 400000 do t[i] = function() end end   -- a closure without upvalues: 32 bytes
      local a1, c1 = anon(), collectgarbage("count")
      print(a1 - a0, c1 - c0)
    ]] })
    assert.are.equal(0, code, err)
    local grew, counted = out:match("^(%d+)%s+([%d.]+)")
    local ratio = tonumber(grew) / tonumber(counted)
    assert.is_true(tonumber(counted) > 10000, out)
    if h.sanitized then
      -- Under ASan every block is the sanitizer's (with its red zones), so
      -- that an overflow of a binding's userdata is still caught.
      assert.is_true(ratio > 1.3, out)
    else
      assert.is_true(ratio < 1.15, out)
    end
  end)

  it("gives the pages of collected Lua objects back to the kernel", function()
    local code, out, err = h.cli({ "-e", [[
      local function anon() return tonumber(io.open("/proc/self/smaps_rollup"):read("a"):match("\nAnonymous:%s+(%d+)")) end
      local a0 = anon()
      local t = {}
      for i = 1, 200000 do t[i] = { tostring(i) } end
      local pin = { "stays" }                    -- allocated after them
      local a1 = anon()
      t = nil
      collectgarbage() collectgarbage()
      orch.malloc_trim()
      print(a1 - a0, a1 - anon(), pin[1])
    ]] })
    assert.are.equal(0, code, err)
    local grew, freed = out:match("^(%d+)%s+(%-?%d+)%s+stays")
    assert.is_true(tonumber(grew) > 10000, out)
    if not h.sanitized then
      assert.is_true(tonumber(freed) > tonumber(grew) * 0.8, out)
    end
  end)

  -- The empty pages beyond the few kept go back to the kernel a while after
  -- they emptied (a second), not as the collector frees them: the memory a
  -- burst of objects left (100,000 ended tasks) serves the next burst
  -- without a page fault a page, and still goes back without
  -- orch.malloc_trim. Nothing yields between the collection and the second
  -- burst, so the loop (and the timer that gives the pages back) cannot
  -- run in between.
  it("gives the empty pages of collected Lua objects back a while after, a burst's garbage serving the next burst meanwhile", function()
    local code, out, err = h.cli({ "-e", [[
      local function anon() return tonumber(io.open("/proc/self/smaps_rollup"):read("a"):match("\nAnonymous:%s+(%d+)")) end
      local function minflt()
        local f = {}
        for w in io.open("/proc/self/stat"):read("a"):match("%b()%s+(.*)"):gmatch("%S+") do f[#f + 1] = w end
        return tonumber(f[8])
      end
      local n, t = 200000, {}
      for i = 1, n do t[i] = false end       -- the array part, before the baseline
      collectgarbage() collectgarbage()
      local a0 = anon()
      for i = 1, n do t[i] = { tostring(i) } end
      local a1 = anon()
      for i = 1, n do t[i] = false end
      collectgarbage() collectgarbage()
      local a2 = anon()
      local f0 = minflt()
      for i = 1, n do t[i] = { tostring(i) } end
      local f1 = minflt()
      for i = 1, n do t[i] = false end
      collectgarbage() collectgarbage()
      local deadline = orch.now() + ]] .. (h.sanitized and 0 or 120) .. [[   -- (ASan: malloc's, never given back)
      while anon() > a0 + (a1 - a0) * 0.3 and orch.now() < deadline do orch.sleep(0.05) end
      print(a1 - a0, a2 - a0, f1 - f0, anon() - a0)
    ]] })
    assert.are.equal(0, code, err)
    local grew, kept, faults, left = out:match("^(%d+)%s+(%-?%d+)%s+(%d+)%s+(%-?%d+)")
    grew, kept, faults, left = tonumber(grew), tonumber(kept), tonumber(faults), tonumber(left)
    assert.is_true(grew > 10000, out)
    if not h.sanitized then
      assert.is_true(kept > grew * 0.8, out)             -- not given back at once
      assert.is_true(faults < grew / 4 * 0.2, out)       -- the second burst in those pages
      assert.is_true(left < grew * 0.3, out)             -- then given back
    end
  end)
end)

-- Out of memory for real. The release build's Lua allocator (src/lalloc.c:
-- pages from mmap, large blocks from malloc) runs under an address-space
-- limit (prlimit --as) where both fail. The ASan build sends every Lua
-- block to malloc and cannot run under such a limit (its shadow memory):
-- there ASan's soft RSS limit makes malloc return NULL instead (lalloc's
-- own pages are tested in the release build only, here and in
-- spec/c/test_lalloc.c). Either way: the task gets Lua's memory error,
-- orch goes on and exits cleanly.
describe("out of memory", function()
  it("a task that allocates until it fails gets 'not enough memory'; orch answers and exits cleanly", function()
    local u = require "spec.ctl_util"
    local d = h.tmpdir()
    local sock, script = d .. "/ctl.sock", d .. "/oom.lua"
    h.write(script, string.format([[
      local SOCK, DIR = %q, %q
      require("orch.ctl").serve { socket = SOCK }
      orch.task(function() orch.sleep(1e6) end)
      orch.signal.on("TERM", function() orch.exit(0) end)
      local hog = orch.task(function()
        local t = {}
        for i = 1, 1e10 do t[i] = { i, tostring(i) } end
      end)
      orch.task(function()
        local ok, err = pcall(hog.join, hog)
        hog = nil
        collectgarbage()
        local f = assert(io.open(DIR .. "/result", "w"))
        f:write(tostring(ok), " ", tostring(err))
        f:close()
      end)
    ]], sock, d))
    local cmd = { h.bin, "run", script, stderr = d .. "/err" }
    if h.sanitized then
      cmd.env = { ASAN_OPTIONS = (os.getenv("ASAN_OPTIONS") or "")
        .. ":allocator_may_return_null=1:soft_rss_limit_mb=300:quarantine_size_mb=0:allocator_release_to_os_interval_ms=100" }
      for k, v in pairs { LD_PRELOAD = os.getenv("LD_PRELOAD"), UBSAN_OPTIONS = os.getenv("UBSAN_OPTIONS"),
                          PATH = os.getenv("PATH"), LUA_PATH = os.getenv("LUA_PATH"), LUA_CPATH = os.getenv("LUA_CPATH") } do
        cmd.env[k] = v
      end
    else
      table.insert(cmd, 1, "--as=200000000")
      table.insert(cmd, 1, "prlimit")
    end
    h.run(function()
      local p = assert(h.orch.spawn(cmd))
      local ok, err = pcall(function()
        h.eventually(function() return h.slurp(d .. "/result") ~= "" end, "the task to run out of memory", 120)
        assert.are.equal("false not enough memory", h.slurp(d .. "/result"))
        -- orch goes on: it answers, and its Lua state works (under ASan
        -- once the freed memory went back to the kernel: RSS is its limit).
        h.eventually(function()
          local code, out = h.cli({ "ctl", "--socket", sock, "eval", "local t = {} for i = 1, 1000 do t[i] = { i } end return #t" })
          return code == 0 and out == "1000\n"
        end, "orch to answer with its Lua state working", 60)
      end)
      assert(p:kill("TERM"))
      local code, sig = p:wait()
      if not ok then error(tostring(err) .. "\n" .. h.slurp(d .. "/err"), 0) end
      assert.are.equal(0, code, tostring(sig) .. " " .. h.slurp(d .. "/err"))
      -- (ASan says when its soft limit is reached: that is no report.)
      u.sanitizer_clean((h.slurp(d .. "/err"):gsub("==%d+==AddressSanitizer: soft rss limit exhausted[^\n]*\n", "")), "orch run")
    end, 180)
  end)
end)
