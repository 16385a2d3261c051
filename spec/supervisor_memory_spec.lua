-- What a supervisor holds per service (issue 14: memory per service at 500
-- logged services), counted exactly: the number of fields of the tables
-- every service has, which decides their size (a Lua table's hash part is
-- a power of two: 8 fields take 8 slots, 9 to 16 fields take 16).
local u = require "spec.supervisor_util"

-- The fields a table holds itself (not through its metatable).
local function nfields(t)
  local n, keys = 0, {}
  for k in next, t do n, keys[#keys + 1] = n + 1, tostring(k) end
  table.sort(keys)
  return n, table.concat(keys, " ")
end

describe("supervisor memory per service", function()
  it("keeps a running, logged instance that never restarted at 8 fields (sup, index, restarts, its sink and start history beside it)", function()
    u.with(function(s, _, dir)
      s.service { name = "one", cmd = { "sh", "-c", "echo up; exec sleep 60" }, log = { dir = dir } }
      s.service { name = "two", numprocs = 2, cmd = { "sh", "-c", "echo up; exec sleep 60" }, log = { dir = dir } }
      assert(s.start("all"))
      assert.is_true(u.until_true(function()
        for _, name in ipairs({ "one", "two:1", "two:2" }) do
          if #s.tail(name) ~= 1 then return false end
        end
        return true
      end))
      for _, name in ipairs({ "one", "two:1", "two:2" }) do
        local inst = s.instance(name)
        assert.are.equal("running", inst.state)
        -- (an instance past the first of its service holds its index too)
        local n, keys = nfields(inst)
        assert.is_true(n <= (inst.index > 1 and 9 or 8), name .. ": " .. n .. " fields: " .. keys)
        assert.are.equal(0, inst.restarts)
        assert.are.equal(1, inst:status().log_lines)
        assert.are.same({ "up" }, s.tail(name))
      end
      -- The documented fields read the same as when the instance held them.
      assert.are.equal(1, s.instance("one").index)
      assert.are.equal(1, s.instance("two:1").index)
      assert.are.equal(2, s.instance("two:2").index)
      assert.are.equal("two", s.instance("two:2").service)
      assert.are.equal(s.instance("one").sup, s.instance("two:2").sup)
      assert.are.equal("table", type(s.instance("one").sup))
      -- A restart counts on the instance itself.
      local old = s.instance("one").pid
      u.orch.kill(old, "KILL")
      assert.is_true(u.until_true(function()
        local inst = s.instance("one")
        return inst.state == "running" and inst.pid ~= old and #s.tail("one") == 2
      end))
      assert.are.equal(1, s.instance("one").restarts)
      assert.are.equal(0, s.instance("two:1").restarts)
      assert.are.same({ "up", "up" }, s.tail("one"))
    end)
  end)

  -- A stop of many removes its runs' cgroups at its end; the instances it
  -- will remove them for are marked beside them, not with a field of their
  -- own: a ninth field grew each instance's table to 16 slots (and Lua never
  -- shrinks it again), a reallocation each in the middle of the stop.
  it("adds no field to the instances of a stop of many while it runs", function()
    u.with(function(s)
      -- (counted in the stop hook, which runs in the stop; a raise there
      -- would only be logged)
      local counted = {}
      local function hook(svc) counted[svc.name] = { nfields(svc) } end
      s.service { name = "a", cmd = { "sleep", "60" }, stop = hook }
      s.service { name = "b", cmd = { "sleep", "60" }, stop = hook }
      assert(s.start("all"))
      assert.is_true(s.wait("all", "running", 10))
      assert.truthy(u.st(s, "a").cgroup, "cgroups are on")
      assert(s.stop("all"))
      assert.are.equal("stopped", u.st(s, "a").state)
      for _, name in ipairs({ "a", "b" }) do
        local c = assert(counted[name], name .. "'s stop hook ran")
        assert.is_true(c[1] <= 8, name .. " in the stop: " .. c[1] .. " fields: " .. c[2])
      end
    end)
  end)

  -- Lua never shrinks a table's hash part when fields go back to nil: the
  -- fields a sink holds while a batch of lines is written count as much as
  -- those it keeps (9 at any moment, and it is a 16-slot table for good).
  it("keeps a logged service's sink at 8 fields, while a batch of lines is written to its file too", function()
    u.with(function(s, _, dir)
      s.service { name = "one", cmd = { "sh", "-c", "echo up; echo more; exec sleep 60" }, log = { dir = dir } }
      assert(s.start("one"))
      local sink = s.instance("one"):log_sink()
      local class = getmetatable(sink).__index
      local close, most, seen = class.close, 0, ""
      class.close = function(self, ...)
        if self == sink then
          local n, keys = nfields(self)
          if n > most then most, seen = n, keys end
        end
        return close(self, ...)
      end
      local ok, err = pcall(function()
        assert.is_true(u.until_true(function() return #s.tail("one") == 2 end))
      end)
      class.close = close
      assert(ok, err)
      assert.is_true(most > 0, "no batch was written")
      assert.is_true(most <= 8, most .. " fields: " .. seen)
      assert.are.same({ "up", "more" }, s.tail("one"))
      local f = assert(io.open(dir .. "/one.log"))
      assert.are.equal("up\nmore\n", f:read("a"))
      f:close()
      local n, keys = nfields(sink)
      assert.is_true(n <= 7, n .. " fields: " .. keys)
    end)
  end)

  -- Most runs have one part, their cgroup, whose closer is the same for
  -- every run (Run.closer): it is noted in its field alone, without a table
  -- of parts per run (80 bytes a service).
  it("keeps no table of parts for a run whose parts have the closer every run's has", function()
    local Run = require "orch.supervisor.run"
    local key = "spec_part_" .. tostring({}):match("0x%x+")
    local closed = {}
    local function closer(obj) closed[#closed + 1] = obj end
    Run.closer(key, closer)
    local run = Run.new()
    local a, b, c = {}, {}, { close = function(self) closed[#closed + 1] = self end }
    assert.are.equal(a, run:own(key, a, closer))
    assert.is_nil(run.parts)
    assert.are.equal(a, run[key])
    -- A second part under the key closes the first.
    run:own(key, b, closer)
    assert.are.same({ a }, closed)
    assert.is_nil(run.parts)
    -- A part of another closer is noted as before; release closes both.
    run:own("spec_other", c)
    assert.are.equal("table", type(run.parts))
    run:release()
    assert.are.equal(3, #closed)
    assert.is_true((closed[2] == b and closed[3] == c) or (closed[2] == c and closed[3] == b))
    assert.is_nil(run[key])
    assert.is_nil(run.spec_other)
    -- A dropped part is closed once; dropping again does nothing.
    local run2 = Run.new()
    run2:own(key, a, closer)
    run2:drop(key)
    run2:drop(key)
    run2:release()
    assert.are.equal(4, #closed)
    -- A supervisor's running service: its cgroup (where orch makes one) is
    -- such a part.
    u.with(function(s, _, dir)
      s.service { name = "one", cmd = { "sh", "-c", "echo up; exec sleep 60" }, log = { dir = dir } }
      assert(s.start("one"))
      local run = s.instance("one").run
      assert.is_nil(run.parts, "a table of parts")
    end)
  end)

  -- A service keeps its checked configuration and, beside it, only what
  -- the configuration does not hold as the definition gave it (a second
  -- full copy of every definition was about 0.4 KiB a service at 500).
  it("keeps of a definition only what its configuration does not hold as given", function()
    u.with(function(s, _, dir)
      local function given(name) return s.instance(name).sup.services[name].given end
      local function kept_keys(name)
        local keys = {}
        for k in pairs(given(name) or {}) do keys[#keys + 1] = k end
        table.sort(keys)
        return keys
      end
      s.service { name = "strings", cmd = { "sleep", "60" }, env = { A = "1" }, log = { dir = dir },
                  backoff = 0, start_limit = false, restart = "always", success_codes = { 0, 2 },
                  stop = { signal = "TERM", timeout = 2 } }
      assert.is_nil(given("strings"))
      -- A command as a string, a size as a string, a float made an
      -- integer: those values are kept as given.
      s.service { name = "converted", cmd = "sleep 60", env = { A = 1, B = "b" }, log = { dir = dir, keep = 5.0,
                  max_bytes = "1M" }, backoff = { initial = 1, max = 2 } }
      assert.are.same({ "cmd", "log" }, kept_keys("converted"))
      -- The numbers of env are the configuration's own (written as
      -- tostring writes them into the process's environment): no second
      -- table of them beside it.
      s.service { name = "numbers", cmd = { "sh", "-c", "echo \"$N $F $G $S\"; exec sleep 60" },
                  env = { N = 8080, F = 2.5, G = 3.0, S = "s" }, log = { dir = dir } }
      assert.is_nil(given("numbers"))
      assert(s.start("numbers"))
      assert.is_true(u.until_true(function() return #s.tail("numbers") == 1 end))
      assert.are.same({ "8080 2.5 3.0 s" }, s.tail("numbers"))
    end)
  end)

  -- Services of the same log options (a directory for all) share one
  -- checked configuration of them (80 bytes a service).
  it("keeps one configuration of the log options that services share", function()
    u.with(function(s, _, dir)
      local filter = function(line) return line end
      s.service { name = "a", cmd = { "sleep", "60" }, log = { dir = dir } }
      s.service { name = "b", cmd = { "sleep", "60" }, log = { dir = dir } }
      s.service { name = "c", cmd = { "sleep", "60" }, log = { dir = dir, keep = 3 } }
      s.service { name = "d", cmd = { "sleep", "60" }, log = { dir = dir, keep = 3.0 } }
      s.service { name = "e", cmd = { "sleep", "60" }, log = { dir = dir, filter = filter } }
      s.service { name = "f", cmd = { "sleep", "60" }, log = { dir = dir, filter = filter } }
      local function l(name) return s.instance(name).cfg.log end
      assert.is_true(rawequal(l("a"), l("b")))
      assert.is_false(rawequal(l("a"), l("c")))
      assert.is_true(rawequal(l("c"), l("d")))
      assert.is_false(rawequal(l("e"), l("f")))
      assert.are.equal(3, l("c").keep)
      assert.are.equal(5, l("a").keep)
      -- Each definition comes back as given.
      local back = {}
      for _, d in ipairs(s.services()) do back[d.name] = d end
      assert.are.equal("float", math.type(back.d.log.keep))
      assert.are.equal("integer", math.type(back.c.log.keep))
      assert.is_nil(back.a.log.keep)
      assert.are.equal(filter, back.f.log.filter)
    end)
  end)

  -- A service's list of instances is the service's own table, not a list
  -- of one beside it (72 bytes a service).
  it("keeps a service's instances in the service's own table", function()
    u.with(function(s)
      s.service { name = "one", cmd = { "sleep", "60" } }
      s.service { name = "two", numprocs = 2, cmd = { "sleep", "60" } }
      local services = s.instance("one").sup.services
      for name, n in pairs({ one = 1, two = 2 }) do
        local svc = services[name]
        assert.is_true(rawequal(svc, svc.instances), name)
        assert.are.equal(n, #svc.instances)
        local names = {}
        for i, inst in ipairs(svc.instances) do names[i] = inst.name end
        assert.are.same(n == 1 and { "one" } or { "two:1", "two:2" }, names)
      end
      assert(s.start("all"))
      assert.are.equal(3, #s.instances())
      assert(s.stop("two"))
      assert.are.equal("stopped", s.instance("two:2").state)
      assert.are.equal("running", s.instance("one").state)
    end)
  end)

  -- The exact value, of the same type (5 and 5.0, 0.0 and -0.0 differ).
  local function same(a, b, path)
    path = path or "def"
    if type(a) == "number" and type(b) == "number" then
      assert.are.equal(string.format("%q", a), string.format("%q", b), path)
    elseif type(a) ~= "table" or type(b) ~= "table" then
      assert.are.equal(a, b, path)
    else
      assert.is_nil(getmetatable(b), path .. ": a metatable")
      for k, x in pairs(a) do same(x, b[k], path .. "." .. tostring(k)) end
      for k, x in pairs(b) do assert.is_true(a[k] ~= nil, path .. "." .. tostring(k) .. " added: " .. tostring(x)) end
    end
  end

  it("gives back every definition as given: sup.services, the digest of the state record, a reload's comparison", function()
    u.with(function(s, _, dir)
      local handoff = require "orch.supervisor.handoff"
      local hook = function() end
      local defs = {
        { name = "a", cmd = { "sleep", "60" } },
        { name = "b", cmd = "sleep 60", env = { N = 1, F = 2.5, S = "s", U = false } },
        { name = "c", cmd = { "sleep", 60 }, backoff = 0 },
        { name = "d", cmd = { "sleep", "60" }, backoff = 0.0, start_limit = false },
        { name = "e", cmd = { "sleep", "60" }, backoff = -0.0, log = false },
        { name = "f", cmd = { "sleep", "60" }, backoff = 2.5, log = "null" },
        { name = "g", cmd = { "sleep", "60" }, backoff = { initial = 1, factor = 3.0, max = 10 },
          start_limit = { burst = 2.0, interval = 5 } },
        { name = "h", cmd = { "sleep", "60" }, log = { dir = dir, keep = 5.0, max_bytes = "1M", timestamps = true },
          stop = { signal = 15, timeout = 1.0 }, success_codes = 3, depends_on = "a", numprocs = 2 },
        { name = "i", cmd = { "sleep", "60" }, ready = { tcp = 1 }, health = { http = "http://localhost/x" },
          heartbeat = { timeout = 5 }, limits = { rss = "1G" }, rlimits = { nofile = { 10, 20 }, core = 0 } },
        { name = "j", cmd = { "sleep", "60" }, on_start = hook, on_exit = hook, ready = hook, stop = hook,
          restart = hook, env_file = "-/nonexistent", cwd = "/", umask = 18, nice = 0.0, autostart = false },
        { name = "k", cmd = { "sleep", "60" }, health = hook, depends_on = { "a", "b" }, success_codes = { 0 },
          log = { dir = dir }, backoff = 0 },
      }
      for _, d in ipairs(defs) do s.service(d) end
      local back = s.services()
      assert.are.equal(#defs, #back)
      for i, d in ipairs(defs) do
        same(d, back[i], d.name)
        local svc = s.instance(d.name == "h" and "h:1" or d.name).sup.services[d.name]
        assert.are.equal(handoff.digest(d), handoff.digest_of(svc.cfg, svc.given), d.name)
      end
      -- What sup.services returns is the caller's: changing it changes nothing.
      back[2].env.N, back[8].log.keep = 7, 1
      same(defs[2], s.services()[2], "b")
      same(defs[8], s.services()[8], "h")
      -- The same definitions again keep every service; one changed value
      -- (an integer for a float is no change, as before) restarts its own.
      local res = s.reload(defs)
      assert.are.equal(#defs, #res.kept)
      local changed = {}
      for i, d in ipairs(defs) do changed[i] = d end
      changed[3] = { name = "c", cmd = { "sleep", 60 }, backoff = 1 }
      changed[8] = { name = "h", cmd = { "sleep", "60" }, log = { dir = dir, keep = 5, max_bytes = "1M", timestamps = true },
          stop = { signal = 15, timeout = 1.0 }, success_codes = 3, depends_on = "a", numprocs = 2 }
      changed[9] = { name = "i", cmd = { "sleep", "60" }, ready = { tcp = 1 }, health = { http = "http://localhost/x" },
          heartbeat = { timeout = 6 }, limits = { rss = "1G" }, rlimits = { nofile = { 10, 20 }, core = 0 } }
      res = s.reload(changed)
      assert.are.same({ "c", "i" }, res.restarted)
      same(changed[3], s.services()[3], "c")
    end)
  end)
end)
