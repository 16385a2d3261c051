-- orch's own log (orch.log): one timestamp format, every spawn and exit
-- logged, --log-format json, the journal's native protocol (against a
-- datagram socket standing in for journald), and service log files rotated
-- by age. Real `orch run` processes, real sockets.
local h = require "spec.helper"
local orch = h.orch
local cjson = require "cjson"
local olog = require "orch.log"

local RFC3339 = "^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$"

-- A supervisor script: web prints a line and exits 3 twice (start limit),
-- then is fatal; the script ends once it is.
local SCRIPT = [[
local sup = require "orch.supervisor"
sup.service{ name = "web", cmd = { "sh", "-c", "echo web says hi; exit 3" }, backoff = 0.01,
             start_limit = { burst = 2, interval = 60 } }
sup.start("web")
sup.wait("web", "fatal", 20)
sup.shutdown(0)
]]

describe("orch.log", function()
  it("timestamps are RFC 3339 in UTC with milliseconds", function()
    assert.are.equal("1970-01-01T00:00:00.000Z", olog.timestamp(0))
    assert.are.equal("2001-09-09T01:46:40.250Z", olog.timestamp(1e9 + 0.25))
    assert.matches(RFC3339, olog.timestamp())
  end)

  it("json and journal encodings", function()
    assert.are.same({ a = "x\"\n\1", n = 3, b = true }, cjson.decode(olog.json({ a = "x\"\n\1", n = 3, b = true })))
    assert.are.equal("MESSAGE=hi\nPRIORITY=6\n", olog.journal_datagram({ MESSAGE = "hi", PRIORITY = 6 }))
    assert.are.equal("MESSAGE\n" .. string.pack("<I8", 3) .. "a\nb\n", olog.journal_datagram({ MESSAGE = "a\nb" }))
    assert.matches("unknown option 'colour'", h.error_of(olog.configure, { colour = true }), 1, true)
    assert.matches("option 'format'", h.error_of(olog.configure, { format = "xml" }), 1, true)
  end)

  it("the supervisor logs each spawn with its pid and each exit, timestamped", function()
    local code, _, err = h.cli({ "run", "--no-socket", h.script(SCRIPT) })
    assert.are.equal(0, code, err)
    local pids = {}
    for line in err:gmatch("[^\n]+") do
      if line:find("orch.supervisor: ", 1, true) then
        assert.matches(RFC3339:sub(1, -2) .. " orch%.supervisor: ", line)
      end
      local pid = line:match("orch%.supervisor: web: started, pid (%d+)$")
      if pid then pids[#pids + 1] = pid end
    end
    assert.are.equal(2, #pids, err)
    assert.matches("orch.supervisor: web: exited with code 3 after", err, 1, true)
    assert.matches("orch.supervisor: web: FATAL: start limit reached", err, 1, true)
  end)

  it("--log-format json: one JSON object per line, with level and fields", function()
    local code, _, err = h.cli({ "run", "--no-socket", "--log-format", "json", h.script(SCRIPT) })
    assert.are.equal(0, code, err)
    local started, exited, output, fatal = 0, 0, 0, 0
    for line in err:gmatch("[^\n]+") do
      local ok, r = pcall(cjson.decode, line)
      assert.is_true(ok, "not JSON: " .. line)
      assert.matches(RFC3339, r.time)
      if r.message:match("^web: started, pid %d+$") then
        started = started + 1
        assert.are.same({ "info", "orch.supervisor", "web" }, { r.level, r.source, r.service })
        assert.are.equal(tonumber(r.message:match("%d+$")), r.pid)
      elseif r.message:find("exited with code 3", 1, true) then
        exited = exited + 1
        assert.are.same({ "warning", "web" }, { r.level, r.service })
      elseif r.message:find("FATAL", 1, true) then
        fatal = fatal + 1
        assert.are.equal("err", r.level)
      elseif r.message == "web says hi" then
        output = output + 1
        assert.are.same({ "service", "web", "output" }, { r.source, r.service, r.stream })
      end
    end
    assert.are.same({ 2, 2, 2, 1 }, { started, exited, output, fatal })
  end)

  it("under systemd (JOURNAL_STREAM): native journal datagrams with priorities and per-service fields", function()
    local dir = h.tmpdir()
    local path = dir .. "/journal.sock"
    local script = h.script(SCRIPT)
    local records = h.run(function()
      local sock <close> = assert(orch.dgram{ unix = path })
      -- systemd names the stream it connected as stderr in JOURNAL_STREAM.
      local r, w = assert(orch.pipe())
      local st = assert(orch.fd.stat(w:fd()))
      local p = assert(orch.spawn{ h.bin, "run", "--no-socket", script,
        env = { JOURNAL_STREAM = st.dev .. ":" .. st.ino, ORCH_JOURNAL_SOCKET = path }, stderr = w })
      w:close()
      local stderr <close> = r
      local got = {}
      local reader = orch.task(function()
        while true do
          local msg = sock:recv()
          if not msg then return end
          local r = {}
          for k, v in msg:gmatch("([A-Z0-9_]+)=([^\n]*)\n") do r[k] = v end
          got[#got + 1] = r
        end
      end)
      local chunks = {}
      while true do
        local c = stderr:read()
        if not c then break end
        chunks[#chunks + 1] = c
      end
      stderr:close()
      local err = table.concat(chunks)
      local code = p:wait()
      -- Everything the run sent is queued in the socket by now.
      h.eventually(function() return #got >= 7 end, "journal records", 10)
      reader:cancel()
      assert.are.equal(0, code, err)
      assert.are.equal("", err or "")   -- nothing went to stderr
      return got
    end)
    local spawned, exited, output, fatal = 0, 0, 0, 0
    for _, r in ipairs(records) do
      if r.MESSAGE:match("^web: started, pid %d+$") then
        spawned = spawned + 1
        assert.are.same({ "6", "orch", "web", "orch.supervisor" }, { r.PRIORITY, r.SYSLOG_IDENTIFIER, r.ORCH_SERVICE, r.ORCH_SOURCE })
        assert.are.equal(r.MESSAGE:match("%d+$"), r.ORCH_PID)
      elseif r.MESSAGE:find("exited with code 3", 1, true) then
        exited = exited + 1
        assert.are.same({ "4", "web" }, { r.PRIORITY, r.ORCH_SERVICE })
      elseif r.MESSAGE:find("FATAL", 1, true) then
        fatal = fatal + 1
        assert.are.equal("3", r.PRIORITY)
      elseif r.MESSAGE == "web says hi" then
        output = output + 1
        assert.are.same({ "6", "web", "web" }, { r.PRIORITY, r.SYSLOG_IDENTIFIER, r.ORCH_SERVICE })
      end
    end
    assert.are.same({ 2, 2, 2, 1 }, { spawned, exited, output, fatal })
  end)

  it("JOURNAL_STREAM naming another stream than stderr (inherited, stderr redirected since) means text on stderr", function()
    local dir = h.tmpdir()
    local path = dir .. "/journal.sock"
    local got, err = h.run(function()
      local sock <close> = assert(orch.dgram{ unix = path })
      local r, w = assert(orch.pipe())
      local st = assert(orch.fd.stat(w:fd()))
      -- The variable names w, but the child's stderr is a pipe of its own.
      local code, _, e = orch.run{ h.bin, "run", "--no-socket", h.script(SCRIPT),
        env = { JOURNAL_STREAM = st.dev .. ":" .. st.ino, ORCH_JOURNAL_SOCKET = path } }
      r:close(); w:close()
      assert.are.equal(0, code, e)
      -- Everything the run sent would be queued in the socket by now.
      sock:set_timeout(0.01)
      return sock:recv(), e
    end)
    assert.is_nil(got)
    assert.matches("orch.supervisor: web: started, pid %d+\n", err)
  end)

  it("a malformed JOURNAL_STREAM means text, never an error", function()
    local log = require "orch.log"
    local st = assert(orch.fd.stat(2))
    local good = st.dev .. ":" .. st.ino
    for _, v in ipairs { "", ":", "x", "1:", ":1", good .. ":1", " " .. good, good .. " ", good .. "\n", "-" .. good,
                         "0x1:0x2", "1.5:2", "99999999999999999999999999:1", string.rep("9", 10000) .. ":1", "1\0:2" } do
      assert.is_false(log.stderr_is_journal(v), ("%q"):format(v))
    end
    assert.is_true(log.stderr_is_journal(good))
    -- The same through orch run: text on stderr, nothing sent.
    local dir = h.tmpdir()
    local got, err = h.run(function()
      local sock <close> = assert(orch.dgram{ unix = dir .. "/journal.sock" })
      local code, _, e = orch.run{ h.bin, "run", "--no-socket", h.script(SCRIPT),
        env = { JOURNAL_STREAM = "1:2:3\nMESSAGE=x", ORCH_JOURNAL_SOCKET = dir .. "/journal.sock" } }
      assert.are.equal(0, code, e)
      sock:set_timeout(0.01)
      return sock:recv(), e
    end)
    assert.is_nil(got)
    assert.matches("orch.supervisor: web: started, pid %d+\n", err)
  end)

  it("without a journal to send to, the records go to stderr as text", function()
    local code, _, err = h.cli({ "run", "--no-socket", "--log-format", "journal", h.script(SCRIPT) }, nil,
      { ORCH_JOURNAL_SOCKET = h.tmpdir() .. "/none.sock" })
    assert.are.equal(0, code, err)
    assert.matches("orch.supervisor: web: started, pid %d+\n", err)
    -- A service's output as text mode writes it, with the service's name.
    assert.matches("web | web says hi\n", err, 1, true)
  end)

  it("service log files are rotated by age as well as size", function()
    local dir = h.tmpdir()
    local code, _, err = h.cli({ "run", "--no-socket", h.script(string.format([[
      local sup = require "orch.supervisor"
      sup.service{ name = "w", cmd = { "sh", "-c", "while :; do echo tick; sleep 0.02; done" },
                   log = { dir = %q, max_age = 0.2, keep = 2 } }
      sup.start("w")
      -- Until the file was rotated twice by age (it stays far under max_bytes).
      while not io.open(%q) do orch.sleep(0.02) end
      sup.shutdown(0)
    ]], dir, dir .. "/w.log.2")) })
    assert.are.equal(0, code, err)
    local size1 = #h.slurp(dir .. "/w.log.1")
    assert.is_true(size1 > 0 and size1 < 10000, "w.log.1 has " .. size1 .. " bytes")
    assert.matches("^tick\n", h.slurp(dir .. "/w.log.2"))
  end)
end)
