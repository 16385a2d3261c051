-- `orch top` against a real orchestrator, driven through tmux as a person
-- would: send-keys to type, capture-pane to read the screen.
local h = require "spec.helper"
local u = require "spec.ctl_util"

local policy = [[
local sup = require "orch.supervisor"
sup.configure { runtime_dir = DIR }
sup.service { name = "web", cmd = { "sh", "-c", "echo hello from web; exec sleep 1000" } }
sup.service { name = "db", cmd = { "sh", "-c", "echo db up; exec sleep 1000" } }
sup.run()
]]

-- tmux on a socket of this test only, without the sanitizer preload (it
-- hangs under it, as curl does).
local function tmux(sock, args)
  return h.sh("env -u LD_PRELOAD tmux -L " .. h.shquote(sock) .. " " .. args .. " 2>&1")
end

local function screen(sock, escapes)
  return tmux(sock, "capture-pane -p " .. (escapes and "-e " or "") .. "-t top")
end

local function start_top(o, sock, env, cols, rows)
  local cmd = string.format("env %s ORCH_SOCKET=%s %s top --interval 0.2; echo EXIT=$?; sleep 1000",
    env or "", h.shquote(o.sock), h.shquote(h.bin))
  tmux(sock, string.format("new-session -d -s top -x %d -y %d %s", cols or 120, rows or 30, h.shquote(cmd)))
end

local function wait_screen(sock, pred, what)
  return u.until_true(function()
    local s = screen(sock)
    return pred(s) and s
  end, what)
end

describe("orch top", function()
  it("shows every service, their output, and restarts, stops and starts them from the keyboard", function()
    local o = u.start(policy)
    local sock = "orch-top-" .. h.orch.getpid() .. "-" .. os.time()
    local ok, err = pcall(function()
      u.until_true(function() local s = u.status(o) return s.web and s.web.state == "running" and s.db
        and s.db.state == "running" end, "both running")
      start_top(o, sock, "LANG=C.UTF-8")
      local s = wait_screen(sock, function(x) return x:find("hello from web", 1, true) end, "the first frame")
      assert.matches("2 services, 2 running", s, 1, true)
      assert.matches("\nweb +running +%d+ ", s)
      assert.matches("\ndb +running +%d+ ", s)
      assert.matches("NAME +STATE +PID +CPU%% +MEM +RST +UPTIME +CPU +MEMORY +REASON", s)
      assert.matches("output of web", s, 1, true)
      -- The selection moves down: db's output shows.
      tmux(sock, "send-keys -t top j")
      wait_screen(sock, function(x) return x:find("output of db", 1, true) and x:find("db up", 1, true) end, "db selected")
      tmux(sock, "send-keys -t top Up")
      wait_screen(sock, function(x) return x:find("output of web", 1, true) end, "web selected again")
      local pid = u.status(o).web.pid
      tmux(sock, "send-keys -t top r")
      wait_screen(sock, function(x) return x:find("restart web: done", 1, true) end, "the restart done")
      local st = u.status(o).web
      assert.are_not.equal(pid, st.pid)
      assert.are.equal("running", st.state)
      tmux(sock, "send-keys -t top x")
      wait_screen(sock, function(x) return x:find("\nweb +stopped ") end, "web stopped on screen")
      assert.are.equal("stopped", u.status(o).web.state)
      tmux(sock, "send-keys -t top s")
      wait_screen(sock, function(x) return x:find("\nweb +running ") and x:find("start web: done", 1, true) end,
        "web running again")
      -- A taller log pane, then back.
      tmux(sock, "send-keys -t top t")
      -- Resize: the frame follows (no sparklines below 90 columns), no line
      -- is wider than the window.
      tmux(sock, "resize-window -t top -x 80 -y 20")
      s = wait_screen(sock, function(x) return not x:find("MEMORY", 1, true) and x:find("REASON", 1, true) end,
        "the narrow frame")
      local n = 0
      for line in (s .. "\n"):gmatch("(.-)\n") do
        n = n + 1
        assert.is_true(utf8.len(line) <= 80, line)
      end
      assert.are.equal(20, n)
      -- Colours: the state cell of a running service is green.
      assert.matches("\27[32mrunning", screen(sock, true), 1, true)
      -- q: the terminal is given back (the alternate screen left) and top
      -- exits 0.
      tmux(sock, "send-keys -t top q")
      s = wait_screen(sock, function(x) return x:find("EXIT=", 1, true) end, "top to exit")
      assert.matches("EXIT=0", s, 1, true)
      assert.is_nil(s:find("REASON", 1, true))
    end)
    tmux(sock, "kill-server")
    u.stop(o)
    assert(ok, err)
  end)

  it("is sensible without colour (NO_COLOR): only the selection in reverse video", function()
    local o = u.start(policy)
    local sock = "orch-top-nc-" .. h.orch.getpid() .. "-" .. os.time()
    local ok, err = pcall(function()
      u.until_true(function() local s = u.status(o) return s.db and s.db.state == "running" end, "db running")
      start_top(o, sock, "NO_COLOR=1 LANG=C")
      wait_screen(sock, function(x) return x:find("\ndb +running ") end, "the first frame")
      local e = screen(sock, true)
      for sgr in e:gmatch("\27%[([%d;]*)m") do
        -- (tmux writes 39 and 49, "default colour", when it resets)
        assert.is_true(sgr == "" or sgr == "0" or sgr == "7" or sgr == "27" or sgr == "39" or sgr == "49", "SGR " .. sgr)
      end
      assert.matches("\27[7m", e, 1, true)
      -- Without UTF-8, ASCII sparklines.
      assert.is_nil(screen(sock):find("▁", 1, true))
      tmux(sock, "send-keys -t top C-c")
      assert.matches("EXIT=0", wait_screen(sock, function(x) return x:find("EXIT=", 1, true) end, "exit"), 1, true)
    end)
    tmux(sock, "kill-server")
    u.stop(o)
    assert(ok, err)
  end)

  it("--once prints one plain frame; a missing orchestrator is exit status 3", function()
    local o = u.start(policy)
    local ok, err = pcall(function()
      u.until_true(function() local s = u.status(o) return s.db and s.db.state == "running" end, "db running")
      local code, out, stderr = h.cli({ "top", "--once", "--socket", o.sock })
      assert.are.equal(0, code, stderr)
      assert.is_nil(out:find("\27", 1, true))
      assert.matches("\nweb +running ", out)
      assert.matches("\ndb +running ", out)
    end)
    u.stop(o)
    assert(ok, err)
    local code, _, stderr = h.cli({ "top", "--once", "--socket", "/nonexistent/orch.sock" })
    assert.are.equal(3, code)
    assert.matches("orch top: cannot connect", stderr, 1, true)
    code = h.cli({ "top", "--interval", "0" })
    assert.are.equal(2, code)
  end)
end)

describe("orch top's frame", function()
  it("shows a service's output without its control characters, C1 ones (U+0080-U+009F) included", function()
    local o = u.start([[
local sup = require "orch.supervisor"
sup.service { name = "web", cmd = { "printf", "a\27[2Jb\194\155%sc\7d\194\133e\\n", "31m" } }
sup.run()
]])
    local ok, err = pcall(function()
      u.until_true(function()
        local code, out = u.ctl_cli(o, "tail", "web")
        return code == 0 and out:find("e\n", 1, true)
      end, "web's line")
      local code, out, stderr = h.cli({ "top", "--once", "--socket", o.sock })
      assert.are.equal(0, code, stderr)
      assert.is_nil((out:gsub("\n", "")):find("%c"), out)
      assert.is_nil(out:find("\194[\128-\159]"), out)
      assert.matches("a [2Jb 31mc d e", out, 1, true)
    end)
    u.stop(o)
    assert(ok, err)
  end)
end)
