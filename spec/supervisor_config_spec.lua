-- A service's configuration as user code and orch's own printers read it.
-- The tables several services share (the same log options, the default
-- stop, backoff, success_codes, depends_on) are read-only proxies: empty
-- tables whose metatable reads the checked one, and behind a checked table
-- its defaults sit in a metatable. Code that reads tables raw (next,
-- rawget, rawlen, cjson.encode) saw {} and nil: svc:config() gives a plain
-- copy, and the REPL's printer (orch ctl eval, orch attach) shows what
-- pairs gives. Real `orch run` processes.
local h = require "spec.helper"
local u = require "spec.ctl_util"
local cjson = require "cjson"

describe("a service's configuration", function()
  it("svc:config() is a plain copy: next, rawget, rawlen and cjson.encode see every field", function()
    local d = h.tmpdir()
    local path = d .. "/policy.lua"
    h.write(path, string.format("local DIR = %q\n", d) .. [[
local cjson = require "cjson"
local sup = require "orch.supervisor"
sup.configure{ exit_when_idle = true, persist = false }
local function hook(svc)
  local c = svc:config()
  local raw = svc.cfg
  print(cjson.encode{
    -- What a raw read of the configuration itself gives (the defect).
    raw_log = cjson.encode(raw.log), raw_stop = next(raw.stop) == nil, raw_codes = rawlen(raw.success_codes),
    -- The copy.
    log = c.log, stop = c.stop, backoff = c.backoff, success_codes = c.success_codes,
    depends_on_len = rawlen(c.depends_on), stop_next = next(c.stop) ~= nil, name = c.name,
    success = c.success == nil,
    metatables = getmetatable(c) == nil and getmetatable(c.log) == nil and getmetatable(c.stop) == nil,
    on_exit = type(c.on_exit),
  })
  -- The copy is the caller's: a write there changes no service.
  c.log.dir = "/elsewhere"
  c.stop.timeout = 99
  print(cjson.encode{ dir = svc.cfg.log.dir, timeout = svc.cfg.stop.timeout, again = svc:config().log.dir })
end
for _, n in ipairs { "a", "b" } do
  sup.service{ name = n, cmd = { "true" }, restart = "never", log = { dir = DIR }, on_exit = n == "a" and hook or nil }
end
sup.run()
]])
    local code, out, err = h.cli({ "run", "--no-socket", path })
    u.sanitizer_clean(err, "orch run")
    assert.are.equal(0, code, err)
    local lines = h.lines(out)
    assert.are.equal(2, #lines, out)
    local r, w = cjson.decode(lines[1]), cjson.decode(lines[2])
    -- The shared tables, read raw, are empty.
    assert.are.equal("{}", r.raw_log)
    assert.is_true(r.raw_stop)
    assert.are.equal(0, r.raw_codes)
    -- The copy: given values and defaults, plain tables.
    assert.are.same({ dir = d, max_bytes = 10e6, keep = 5, timestamps = false, tail = 100, max_line = 8192,
                      stderr = true, mode = 416 }, r.log)
    assert.are.same({ signal = "TERM", timeout = 10, kill_timeout = 5, group = true }, r.stop)
    assert.are.same({ initial = 0.1, factor = 2, max = 30, jitter = 0.1, reset_after = 60 }, r.backoff)
    assert.are.same({ 0 }, r.success_codes)
    assert.are.equal(0, r.depends_on_len)
    assert.is_true(r.stop_next)
    assert.are.equal("a", r.name)
    assert.is_true(r.success, "the supervisor's own 'success' set is left out")
    assert.is_true(r.metatables)
    assert.are.equal("function", r.on_exit)
    assert.are.same({ dir = d, timeout = 10, again = d }, w)
  end)

  it("orch ctl eval shows a shared table as pairs gives it, not as {}", function()
    local o = u.start([[
local sup = require "orch.supervisor"
for _, n in ipairs { "a", "b" } do
  sup.service{ name = n, cmd = { "sleep", "600" }, log = { dir = DIR } }
end
sup.run()
]])
    finally(function() u.stop(o) end)
    local code, out, err = u.ctl_cli(o, "eval",
      'local c = require("orch.supervisor").instance("a").cfg return c.log, c.success_codes, c.depends_on')
    assert.are.equal(0, code, err)
    assert.are.equal(string.format('{ dir = "%s" }\t{ 0 }\t{}\n', o.dir), out)
    -- svc:config() there too: the defaults with the given.
    code, out, err = u.ctl_cli(o, "eval", 'return require("orch.supervisor").instance("a"):config().stop')
    assert.are.equal(0, code, err)
    assert.are.equal('{ group = true, kill_timeout = 5, signal = "TERM", timeout = 10 }\n', out)
  end)
end)
