-- A full disk under orch's newer log paths: orch's own records as JSON
-- lines (--log-format json), the journal's fallback to stderr when no
-- journal takes the records, and service log files rotated by age
-- (log.max_age). Each on a real, tiny tmpfs filled to the last block: orch
-- must keep supervising (a flapping service keeps being restarted, ctl
-- answers), never crash, and write again once space returns. security_spec
-- covers the size-rotated service log file the same way. The first test's
-- control socket is on the full disk too: its state record is written again
-- once there is space.
local h = require "spec.helper"
local u = require "spec.ctl_util"
local cjson = require "cjson"

-- A tmpfs of `size`, unmounted (and the orchestrator stopped) however the
-- test ends; fn(mnt, keep): keep(o) names the orchestrator to stop.
local function with_tmpfs(size, fn)
  local mnt = h.tmpdir() .. "/mnt"
  -- 0700: a directory others may write to gets no state record (persist).
  assert(os.execute("mkdir " .. mnt .. " && mount -t tmpfs -o size=" .. size .. ",mode=0700 tmpfs " .. mnt))
  local o
  local ok, err = pcall(fn, mnt, function(x) o = x end)
  if o then
    local sok, serr = pcall(u.stop, o)
    if not sok then
      h.orch.kill(o.pid, "KILL")           -- no fork needed, if forks fail
      if ok then ok, err = false, serr end
    end
  end
  if not os.execute("umount " .. mnt) then os.execute("umount -l " .. mnt) end
  if not ok then error(err, 0) end
end

local fills = {}   -- dir -> how many pairs of filler files fill made

-- Fills the file system of dir to its last block (dd stops at ENOSPC).
-- With `again`, fills again while blocks are left: a log rotation of the
-- test may free some meanwhile. (Only there: each fill may cut one of
-- orch's own records short, which the JSON test counts.)
local function fill(dir, again)
  local n = 0
  local function once()
    n = n + 1
    os.execute("dd if=/dev/zero of=" .. dir .. "/filler" .. n .. " bs=4096 2>/dev/null")
    os.execute("dd if=/dev/zero of=" .. dir .. "/filler" .. n .. "b bs=1 2>/dev/null")
    return h.sh("stat -f -c %a " .. dir)
  end
  if again then
    u.until_true(function() return once() == "0" end, "no free block left on " .. dir)
  else
    assert.are.equal("0", once(), "free blocks left on " .. dir)
  end
  fills[dir] = n
end

local function free(dir)
  for n = 1, fills[dir] or 0 do
    os.remove(dir .. "/filler" .. n)
    os.remove(dir .. "/filler" .. n .. "b")
  end
  fills[dir] = nil
end

-- The services every test runs: talker prints numbered lines of `len`
-- bytes, `burst` at a time then a pause of 0.05 s (a burst bigger than a
-- page fills what a rotation freed, however slow a loaded machine runs it);
-- flap exits after 50 ms and is restarted each time: its restarts show that
-- supervision goes on.
local function policy(len, burst, talker_log)
  local awk = string.format([[BEGIN { for (i = 0; ; i++) { printf "L%%06d%%0%dd\n", i, 0; if (i %% %d == 0) { fflush(); system("sleep 0.05") } } }]],
    len - 7, burst)
  return string.format([[
local sup = require "orch.supervisor"
sup.service{ name = "talker", cmd = { "awk", %q }, log = %s }
sup.service{ name = "flap", cmd = { "sh", "-c", "sleep 0.05; exit 1" }, backoff = 0.01, start_limit = false }
sup.run()
]], awk, talker_log or "nil")
end

-- `orch run ARGS... policy` in the background, its stderr in errfile; the
-- o of ctl_util (o.dir holds err, the file u.stop checks).
local function start(src, errdir, sock, args, env)
  local d = h.tmpdir()
  local path = d .. "/policy.lua"
  h.write(path, src)
  local envs = {}
  for k, v in pairs(env or {}) do envs[#envs + 1] = k .. "=" .. h.shquote(v) end
  local o = { dir = errdir, sock = sock }
  o.pid = tonumber((h.sh(string.format("cd %s && { env %s %s run --socket %s %s %s >/dev/null 2>%s/err & echo $!; }",
    h.shquote(d), table.concat(envs, " "), h.shquote(h.bin), h.shquote(sock), table.concat(args or {}, " "),
    h.shquote(path), h.shquote(errdir)))))
  u.until_true(function() return h.cli({ "ctl", "--socket", sock, "ping" }) == 0 end, "orch answers")
  return o
end

-- While the disk is full: flap is restarted again and again, talker runs
-- on with the same pid, ctl answers.
local function still_supervising(o)
  local s = u.status(o)
  local restarts, pid = s.flap.restarts, s.talker.pid
  u.until_true(function()
    local now = u.status(o)
    return now.flap.restarts >= restarts + 5 and now.talker.state == "running" and now.talker.pid == pid
  end, "flap restarted 5 more times on the full disk")
  assert.is_true(h.alive(o.pid))
end

local function lines_of(path)
  local t = {}
  for l in h.slurp(path):gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

describe("a full disk under orch's own log", function()
  it("--log-format json: records are dropped while it is full, supervision goes on, records resume after", function()
    with_tmpfs("1m", function(mnt, keep)
      -- The control socket's state record and journal are on the full disk too.
      local o = start(policy(60, 1), mnt, mnt .. "/ctl.sock", { "--log-format", "json" })
      keep(o)
      u.until_true(function() return h.slurp(mnt .. "/err"):find('"service":"talker"', 1, true) end, "talker's records")
      fill(mnt)
      still_supervising(o)
      local t_free = os.time() + 1
      free(mnt)
      -- A record stamped after the space returned, and every line but those
      -- the full disk cut short (at most one) is a whole JSON object.
      local bad
      u.until_true(function()
        bad = 0
        local late = false
        for _, l in ipairs(lines_of(mnt .. "/err")) do
          local ok, r = pcall(cjson.decode, l)
          if not ok or type(r) ~= "table" then bad = bad + 1
          elseif r.time and r.time >= os.date("!%Y-%m-%dT%H:%M:%S", t_free) then late = true end
        end
        return late
      end, "records written after the space returned")
      assert.is_true(bad <= 1, bad .. " broken lines")
      -- The state record (which lets the services outlive a kill -9 of
      -- orch) is written again too.
      assert.is_truthy(h.slurp(mnt .. "/ctl.sock.state"):find('"name":"talker"', 1, true))
      u.until_true(function()
        local t = tonumber((h.sh("stat -c %Y " .. mnt .. "/ctl.sock.state")))
        return t and t > t_free
      end,
        "the state record rewritten after the space returned")
      still_supervising(o)
    end)
  end)

  it("the journal's fallback (no journal to send to): text on a full stderr, dropped, then written again", function()
    with_tmpfs("1m", function(mnt, keep)
      local env = { ORCH_JOURNAL_SOCKET = h.tmpdir() .. "/no-journal.sock" }
      local o = start(policy(60, 1), mnt, mnt .. "/ctl.sock", { "--log-format", "journal" }, env)
      keep(o)
      -- A service's line falls back to what text mode writes: NAME | LINE.
      u.until_true(function() return h.slurp(mnt .. "/err"):find("\ntalker | L%d+") end, "talker's lines")
      assert.matches("orch%.supervisor: flap: started, pid %d+\n", h.slurp(mnt .. "/err"))
      fill(mnt)
      still_supervising(o)
      local before = #h.slurp(mnt .. "/err")
      free(mnt)
      -- (talker's lines: flap's own are throttled as a crash loop's.)
      u.until_true(function() return h.slurp(mnt .. "/err"):find("\ntalker | L", before + 1, true) end,
        "records written after the space returned")
      still_supervising(o)
    end)
  end)
end)

describe("a full disk under the state record (orch's log elsewhere)", function()
  it("says once that the record cannot be written, supervises on, and says when it is written again", function()
    with_tmpfs("256k", function(mnt, keep)
      local errdir = h.tmpdir()
      local o = start(policy(60, 1), errdir, mnt .. "/ctl.sock")
      keep(o)
      u.until_true(function() return h.slurp(mnt .. "/ctl.sock.state"):find('"name":"flap"', 1, true) end,
        "a first state record")
      fill(mnt)
      still_supervising(o)
      u.until_true(function() return h.slurp(errdir .. "/err"):find("cannot write the state record: ", 1, true) end,
        "the failure logged")
      free(mnt)
      u.until_true(function() return h.slurp(errdir .. "/err"):find("the state record is written again", 1, true) end,
        "the record written again")
      still_supervising(o)
      local err = h.slurp(errdir .. "/err")
      local function count(s)
        local n = 0
        for _ in err:gmatch(s) do n = n + 1 end
        return n
      end
      -- Once each: the failure flag is reset by the write that succeeded.
      assert.are.same({ 1, 1 }, { count("cannot write the state record: "), count("the state record is written again") })
      -- The journal's appends may have fitted in its last page's room; if
      -- one failed, its recovery is said too, once.
      assert.are.equal(count("cannot write the state journal: "), count("the state journal is written again"))
      assert.is_true(count("the state journal is written again") <= 1)
    end)
  end)
end)

describe("a full disk under service log files rotated by age", function()
  it("counts the dropped lines, keeps rotating and supervising, and writes again when space returns", function()
    with_tmpfs("256k", function(mnt, keep)
      local errdir = h.tmpdir()
      local o = start(policy(100, 60, string.format("{ dir = %q, max_age = 0.3, keep = 2 }", mnt)), errdir,
        errdir .. "/ctl.sock")
      keep(o)
      u.until_true(function() return h.slurp(mnt .. "/talker.log.1") ~= "" end, "a first rotation")
      local inode = h.sh("stat -c %i " .. mnt .. "/talker.log")
      fill(mnt, true)
      u.until_true(function() return u.status(o).talker.log_dropped > 0 end, "lines dropped")
      assert.matches("talker: log lines dropped (logfile.write: No space left on device): ",
        h.slurp(errdir .. "/err"), 1, true)
      still_supervising(o)
      -- Rotations go on (by age) while lines are dropped.
      u.until_true(function() return h.sh("stat -c %i " .. mnt .. "/talker.log 2>/dev/null") ~= inode end,
        "talker.log made again on the full disk")
      -- A rotation deletes the oldest file: writes may resume (and say so)
      -- before the fillers go, so the notice is looked for after the drop's.
      local dropped_at = h.slurp(errdir .. "/err"):find("talker: log lines dropped (", 1, true)
      local function newest()
        local top = -1
        for _, f in ipairs({ "talker.log.2", "talker.log.1", "talker.log" }) do
          for _, l in ipairs(lines_of(mnt .. "/" .. f)) do
            local n = #l == 100 and tonumber(l:match("^L(%d%d%d%d%d%d)0+$"))
            if n and n > top then top = n end
          end
        end
        return top
      end
      free(mnt)
      local at_free = newest()
      u.until_true(function() return h.slurp(errdir .. "/err"):find("talker: log writes resumed (", dropped_at + 1, true) end,
        "the resumed notice")
      -- And lines made after the space returned are written.
      u.until_true(function() return newest() > at_free end, "a line written after the space returned")
      -- Whole lines, numbered in order across the files kept (oldest
      -- first), but for pieces the full disk cut short.
      local last = -1
      for _, f in ipairs({ "talker.log.2", "talker.log.1", "talker.log" }) do
        for _, l in ipairs(lines_of(mnt .. "/" .. f)) do
          local n = #l == 100 and l:match("^L(%d%d%d%d%d%d)0+$")
          if n then
            assert.is_true(tonumber(n) > last, f .. ": line " .. n .. " after " .. last)
            last = tonumber(n)
          end
        end
      end
      assert.is_true(last > 0)
      still_supervising(o)
    end)
  end)
end)
