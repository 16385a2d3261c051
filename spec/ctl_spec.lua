-- The control plane: `orch ctl` and `orch attach` against a real
-- `orch run` with real services, the socket's protocol and its defences,
-- and sd_notify.
local h = require "spec.helper"
local orch = h.orch
local ctl = require "orch.ctl"
local repl = require "orch.repl"
local sd = require "orch.sdnotify"
local cjson = require "cjson"

local write, alive = h.write, h.alive

-- A policy: services a (prints its signals) and b; the control socket at
-- SOCK (the script serves it itself; `orch run --socket` is the CLI's way).
local POLICY = [[
local sup = require "orch.supervisor"
sup.configure{ log = false, output = function(name, line) print(name .. " | " .. line) io.stdout:flush() end }
sup.service{ name = "a", cmd = { "sh", "-c", "echo a started; trap 'echo a got HUP' HUP; while :; do sleep 0.05; done" } }
sup.service{ name = "b", cmd = { "sleep", "1000" } }
--EXTRA--
sup.run()
if not require("orch.ctl").reloading then
  assert(require("orch.ctl").serve{ socket = SOCK --OPTS-- })
end
]]

-- POLICY with its markers replaced (extra services, serve options).
local function policy(extra, opts)
  return (POLICY:gsub("%-%-EXTRA%-%-", extra or ""):gsub("%-%-OPTS%-%-", opts or ""))
end

local u = require "spec.ctl_util"
local stop, ctl_cli, status, until_true = u.stop, u.ctl_cli, u.status, u.until_true

-- Starts `orch run` on a policy (its unused markers removed); see u.start.
local function start(src, env)
  return u.start((src:gsub("%-%-OPTS%-%-", ""):gsub("%-%-EXTRA%-%-", "")), env)
end

-- Runs fn(o) against a fresh `orch run` of src, stopped afterwards (u.stop)
-- whether fn fails or not.
local function with_orch(src, fn)
  local o = start(src)
  local ok, err = pcall(fn, o)
  stop(o)
  if not ok then error(err, 0) end
end

-- Runs fn(client) with a raw stream connected to o's socket, in a loop.
local function with_conn(o, fn)
  return h.run(function()
    local conn = assert(orch.connect{ unix = o.sock })
    local ok, err = pcall(fn, conn)
    conn:close()
    if not ok then error(err, 0) end
  end)
end

describe("orch ctl against orch run", function()
  local o
  setup(function() o = start(POLICY) end)
  teardown(function() if o then stop(o) end end)

  it("prints status as a table, and the raw reply with --json", function()
    local code, out, err = ctl_cli(o, "status")
    assert.are.equal(0, code, err)
    local header, rows = out:match("^(NAME[^\n]*)\n(.*)$")
    assert.truthy(header:find("NAME%s+STATE%s+PID%s+UPTIME%s+RESTARTS%s+RSS%s+CPU"))
    assert.truthy(rows:find("\na%s+running%s+%d+%s+%d+:%d%d:%d%d%s+0%s") or rows:find("^a%s+running%s+%d+"))
    assert.truthy(rows:find("\nb%s+running%s+%d+"))
    local s = status(o)
    assert.are.equal("running", s.a.state)
    assert.is_number(s.b.pid)
    assert.is_number(s.b.rss)
    code, out = ctl_cli(o, "status", "b")
    assert.are.equal(0, code)
    assert.falsy(out:find("\na ", 1, true))
  end)

  it("stops, starts and restarts one service or all", function()
    local before = status(o)
    local code, out, err = ctl_cli(o, "stop", "b")
    assert.are.equal(0, code, err)
    assert.are.equal("b: stopped\n", out)
    assert.is_false(alive(before.b.pid))
    assert.are.equal("stopped", status(o).b.state)
    code, out = ctl_cli(o, "start", "b")
    assert.are.equal(0, code)
    assert.matches("^b: started %(%a+, pid %d+%)\n$", out)
    local after = status(o)
    assert.are.equal("running", after.b.state)
    assert.are_not.equal(before.b.pid, after.b.pid)
    assert.are.equal(before.a.pid, after.a.pid)
    code, out = ctl_cli(o, "restart", "all")
    assert.are.equal(0, code)
    -- It lists what restarted.
    assert.matches("\nrestarted: a b\n$", out)
    local again = status(o)
    assert.are_not.equal(after.a.pid, again.a.pid)
    assert.are_not.equal(after.b.pid, again.b.pid)
    assert.is_false(alive(after.a.pid))
  end)

  it("signals a service and tails its output", function()
    local code, out, err = ctl_cli(o, "signal", "a", "HUP")
    assert.are.equal(0, code, err)
    assert.are.equal("a: sent HUP\n", out)
    local lines = until_true(function()
      local _, l = ctl_cli(o, "tail", "a", "-n", "5")
      return l:find("a got HUP", 1, true) and l
    end, "the HUP in the tail")
    assert.truthy(lines:find("a got HUP\n", 1, true))
    code, out = ctl_cli(o, "tail", "a", "-n", "1")
    assert.are.equal(0, code)
    assert.are.equal(1, select(2, out:gsub("\n", "")))
  end)

  it("follows a tail until Ctrl-C", function()
    h.run(function()
      local p = assert(orch.spawn{ h.bin, "ctl", "--socket", o.sock, "tail", "a", "-n", "0", "-f", stdout = "pipe" })
      local _ <close> = setmetatable({}, { __close = function()
        if p:running() then p:kill("KILL") p:wait() end
        p.stdout:close()
      end })
      -- HUP until a line shows up: the follow may start after the first.
      local pinger = orch.task(function()
        while true do
          orch.run{ h.bin, "ctl", "--socket", o.sock, "signal", "a", "HUP" }
          orch.sleep(0.5)
        end
      end)
      local seen
      for line in p.stdout:lines() do
        if line == "a got HUP" then seen = true break end
      end
      pinger:cancel()
      assert.is_true(seen)
      p:kill("INT")
      assert.are.equal(0, (p:wait()))
    end, 60)
  end)

  it("evaluates code inside the orchestrator", function()
    local code, out, err = ctl_cli(o, "eval", "print('inside', orch ~= nil) return #require('orch.supervisor').status(), {x = 1}")
    assert.are.equal(0, code, err)
    assert.are.equal("inside\ttrue\n2\t{ x = 1 }\n", out)
    code, out, err = ctl_cli(o, "eval", "error('nope')")
    assert.are.equal(1, code)
    assert.truthy(err:find("nope", 1, true))
  end)

  it("returns 1 when the command fails, 2 on usage errors", function()
    local code, _, err = ctl_cli(o, "start", "nosuch")
    assert.are.equal(1, code)
    assert.truthy(err:find("nosuch", 1, true))
    local usage = {
      { { "bogus" }, "orch ctl: unknown command 'bogus'" },
      { { "signal", "a" }, "orch ctl: missing argument 'SIGNAL'" },
      { { "signal", "a", "BOGUS" }, "orch ctl: signal: unknown signal 'BOGUS'" },
      { { "start" }, "orch ctl: missing argument 'NAME'" },
      { { "reload", "x" }, "orch ctl: too many arguments" },
      { { "tail", "a", "-n", "x" }, "-n needs a non-negative integer" },
      { { "--frob", "status" }, "orch ctl: unknown option '--frob'" },
      { {}, "orch ctl: a command is required" },
    }
    for _, u in ipairs(usage) do
      code, _, err = ctl_cli(o, table.unpack(u[1]))
      assert.are.equal(2, code, err)
      assert.truthy(err:find(u[2], 1, true), err)
    end
  end)

  it("answers malformed, unknown and oversized requests with errors", function()
    with_conn(o, function(conn)
      local function ask(line)
        assert(conn:write(line .. "\n"))
        return cjson.decode((assert(conn:read_line(1 << 20))))
      end
      local cases = {
        { "{not json", "EPROTO", "malformed JSON" },
        { "[1, 2]", "EPROTO", "a request is a JSON object" },
        { '"text"', "EPROTO", "a request is a JSON object" },
        { '{"cmd": 3}', "EPROTO", "a request is a JSON object" },
        { '{"cmd": "frobnicate"}', "ENOSYS", "unknown command 'frobnicate'" },
        { '{"cmd": "start"}', "EINVAL", "needs 'name'" },
        { '{"cmd": "signal", "name": "a"}', "EINVAL", "'signal' needs" },
        { '{"cmd": "signal", "name": "a", "signal": -1}', "EINVAL", "'signal' needs a signal name or number, got -1" },
        { '{"cmd": "signal", "name": "a", "signal": 0}', "EINVAL", "'signal' needs a signal name or number, got 0" },
        { '{"cmd": "signal", "name": "a", "signal": "NOPE"}', "EINVAL", "got 'NOPE'" },
        { '{"cmd": "tail", "name": "a", "lines": -1}', "EINVAL", "'lines'" },
        { '{"cmd": "eval"}', "EINVAL", "needs 'code'" },
        { '{"cmd": "eval", "code": "for"}', "ESYNTAX", "<eof>" },
        { string.rep("[", 1000) .. string.rep("]", 1000), "EPROTO", "malformed JSON" },
      }
      for _, c in ipairs(cases) do
        local r = ask(c[1])
        assert.is_false(r.ok, c[1])
        assert.are.equal(c[2], r.code, c[1])
        assert.truthy(r.error:find(c[3], 1, true), r.error)
      end
      local r = ask('{"cmd": "ping", "id": 17}')
      assert.is_true(r.ok)
      assert.are.equal(17, r.id)
      assert(conn:write(string.rep("x", 70000) .. "\n"))
      r = cjson.decode((assert(conn:read_line(1 << 20))))
      assert.are.equal("E2BIG", r.code)
      assert.is_nil(conn:read_line())      -- then the server hangs up
    end)
    assert.are.equal(0, (ctl_cli(o, "ping")))
  end)

  it("evaluation is cancelled when its client goes away", function()
    with_conn(o, function(conn)
      assert(conn:write(cjson.encode{ cmd = "eval", code = "cancelled_flag = 'started' orch.sleep(60) cancelled_flag = 'finished'" } .. "\n"))
      orch.sleep(0.3)
    end)
    local code, out
    until_true(function()
      code, out = ctl_cli(o, "eval", "return cancelled_flag")
      return out == '"started"\n'
    end, "the evaluation to start")
    assert.are.equal(0, code)
    assert.are.equal('"started"\n', out)
  end)

  it("reexec hands the services over to the new image (more in spec/reexec_spec.lua)", function()
    local before = status(o)
    local code, _, err = ctl_cli(o, "reexec")
    assert.are.equal(0, code, err)
    until_true(function()
      local c, out = ctl_cli(o, "eval", "return require('orch.ctl').inherited() ~= nil")
      return c == 0 and out == "true\n"
    end, "the new image")
    local after = status(o)
    assert.are.equal("running", after.a.state)
    assert.are.equal("running", after.b.state)
    assert.are.equal(before.a.pid, after.a.pid)
    assert.are.equal(before.b.pid, after.b.pid)
  end)

  it("attach on a terminal: Ctrl-C cancels a remote evaluation, Ctrl-D detaches", function()
    local d = h.tmpdir()
    write(d .. "/script", table.concat({
      "expect (Ctrl-D detaches)", "expect > ", "send remote_v = 6 * 7\\r", "expect > ",
      "send remote_v\\r", "expect 42", "expect > ",
      "send orch.sleep(3600) remote_after = true\\r", "sleep 0.5", "send \\x03", "expect interrupted",
      "expect > ", "send remote_after\\r", "expect nil", "expect > ", "send \\x04" }, "\n") .. "\n")
    local cmd = string.format("env -u ORCH_HISTORY HOME=%s %s -t 30 -- %s attach --socket %s <%s/script >%s/out 2>%s/err",
      h.shquote(d), h.shquote(h.progs .. "/prog_pty"), h.shquote(h.bin), h.shquote(o.sock), d, d, d)
    local _, _, code = os.execute(cmd)
    assert.are.equal(0, code, h.slurp(d .. "/err") .. h.slurp(d .. "/out"))
  end)

  it("attach evaluates lines inside the orchestrator", function()
    local code, out, err = h.cli({ "attach", "--socket", o.sock },
      "attached_x = 41\nattached_x + 1\nprint('from inside')\nfunction g()\n return 'multi'\nend\ng()\n")
    assert.are.equal(0, code, err)
    assert.are.equal("42\nfrom inside\n\"multi\"\n", out)
    code, out = ctl_cli(o, "eval", "return attached_x")
    assert.are.equal("41\n", out)
  end)
end)

describe("orch ctl tail of a service's escape sequences", function()
  -- The service prints ESC [2J, C1 CSI (U+009B) 31m, BEL, C1 NEL (U+0085)
  -- and a TAB in one line.
  local ESC_POLICY = policy([[
sup.service{ name = "esc", cmd = { "printf", "a\27[2Jb\194\15531mc\7d\194\133e\tf\n" } }
]])
  it("shows them as '?' on a terminal and as sent on a pipe", function()
    with_orch(ESC_POLICY, function(o)
      local raw = until_true(function()
        local _, l = ctl_cli(o, "tail", "esc", "-n", "5")
        return l:find("f\n", 1, true) and l
      end, "the line in the tail")
      assert.truthy(raw:find("a\27[2Jb\194\15531mc\7d\194\133e\tf\n", 1, true), raw)
      local d = h.tmpdir()
      write(d .. "/script", "\n")
      local cmd = string.format("%s -t 30 -- %s ctl --socket %s tail esc -n 5 <%s/script >%s/out 2>%s/err",
        h.shquote(h.progs .. "/prog_pty"), h.shquote(h.bin), h.shquote(o.sock), d, d, d)
      local _, _, code = os.execute(cmd)
      local out = h.slurp(d .. "/out")
      assert.are.equal(0, code, h.slurp(d .. "/err") .. out)
      assert.truthy(out:find("a?[2Jb?31mc?d?e\tf", 1, true), out)
      assert.is_nil(out:find("[\27\7]"), out)
      assert.is_nil(out:find("\194[\128-\159]"), out)
    end)
  end)
end)

describe("the control socket", function()
  it("cannot be reached by another uid, and SO_PEERCRED refuses it when it can", function()
    with_orch(POLICY, function(o)
      local as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups "
      local cmd = as_nobody .. h.shquote(h.bin) .. " ctl --socket " .. h.shquote(o.sock) .. " ping 2>&1; echo rc=$?"
      assert.are.equal("600", h.sh("stat -c %a " .. h.shquote(o.sock)))
      assert.are.equal("700", h.sh("stat -c %a " .. h.shquote(o.dir)))
      local out = h.sh(cmd)
      assert.truthy(out:find("cannot connect to " .. o.sock .. ": permission denied", 1, true), out)
      assert.truthy(out:find("rc=3$"), out)
      -- Loosened by hand, the file lets it in: the server refuses the peer.
      os.execute("chmod 755 " .. h.shquote(o.dir) .. " && chmod 666 " .. h.shquote(o.sock))
      out = h.sh(cmd)
      assert.truthy(out:find("permission denied: uid 65534 may not use this socket", 1, true), out)
      assert.truthy(out:find("rc=1$"), out)
      assert.are.equal(0, (ctl_cli(o, "ping")))
    end)
  end)

  it("survives a flood of connections and closes idle ones", function()
    with_orch(policy(nil, ", max_connections = 4, idle_timeout = 2"), function(o)
      local pids = status(o)
      h.run(function()
        local conns, busy = {}, 0
        for i = 1, 100 do
          local c = orch.connect{ unix = o.sock }
          if c then conns[#conns + 1] = c end
          if i % 10 == 0 then orch.sleep(0) end
        end
        for _, c in ipairs(conns) do
          c:set_timeout(5)
          local line = c:read_line()
          if line then
            local r = cjson.decode(line)
            if r.code == "EBUSY" then busy = busy + 1
            else assert.are.equal("ETIMEDOUT", r.code) end
          end
          c:close()
        end
        assert.is_true(busy >= 90, "busy " .. busy)
        -- A half-open client (no newline, then silence) is dropped too.
        local c = assert(orch.connect{ unix = o.sock })
        c:write('{"cmd": "ping"')
        c:set_timeout(10)
        local line = c:read_line()
        assert.are.equal("ETIMEDOUT", cjson.decode(line).code)
        assert.is_nil(c:read_line())
        c:close()
      end, 60)
      assert.are.equal(0, (ctl_cli(o, "ping")))
      local after = status(o)
      assert.are.equal(pids.a.pid, after.a.pid)
      assert.are.equal(pids.b.pid, after.b.pid)
    end)
  end)

  it("reload keeps unchanged services, restarts changed ones, stops removed ones", function()
    local src = policy('sup.service{ name = "c", cmd = { "sleep", "1001" } }')
    with_orch(src, function(o)
      local before = status(o)
      local v2 = src:gsub('"sleep", "1000"', '"sleep", "1002"')
                    :gsub('sup.service{ name = "c"[^\n]*', 'sup.service{ name = "d", cmd = { "sleep", "1003" } }')
      write(o.path, "local SOCK = " .. string.format("%q", o.sock) .. "\n" .. v2)
      local code, out, rerr = ctl_cli(o, "reload")
      assert.are.equal(0, code, rerr)
      assert.are.equal("kept: a\nrestarted: b\nstopped: c\nadded: d\n", out)
      local after = status(o)
      assert.are.equal(before.a.pid, after.a.pid)
      assert.are_not.equal(before.b.pid, after.b.pid)
      assert.are.equal("running", after.b.state)
      assert.is_nil(after.c)
      assert.is_false(alive(before.c.pid))
      assert.are.equal("running", after.d.state)
      -- A broken script changes nothing.
      write(o.path, "error('broken policy')")
      code, _, rerr = ctl_cli(o, "reload")
      assert.are.equal(1, code)
      assert.truthy(rerr:find("broken policy", 1, true))
      assert.are.equal(after.a.pid, status(o).a.pid)
    end)
  end)

  it("shutdown stops every service and ends orch with 0", function()
    local o = start(POLICY)
    local s = status(o)
    local code, out = ctl_cli(o, "shutdown")
    assert.are.equal(0, code)
    assert.are.equal("shutting down\n", out)
    until_true(function() return not alive(o.pid) end, "orch to exit")
    assert.is_false(alive(o.pid))
    assert.is_false(alive(s.a.pid))
    assert.is_false(alive(s.b.pid))
    assert.is_nil(io.open(o.sock, "r"))
    stop(o)
  end)

  it("reexec executes orch again, keeping its pid, its children and its socket", function()
    local o = start([[
      local ctl = require "orch.ctl"
      local st = ctl.inherited("test")
      if st then
        child_pid, generation = st.pid, st.generation + 1
      else
        local p = assert(orch.spawn{ "sleep", "1000" })
        child_pid, generation = p.pid, 1
      end
      ctl.on_reexec("test", function() return { pid = child_pid, generation = generation } end)
      assert(ctl.serve{ socket = SOCK })
      orch.sleep(3600)
    ]])
    local child
    local ok, err = pcall(function()
      local code, out, e = ctl_cli(o, "eval", "return orch.getpid(), child_pid, generation")
      assert.are.equal(0, code, e)
      local pid, cpid, gen = out:match("^(%d+)\t(%d+)\t(%d+)\n$")
      child = tonumber(cpid)
      assert.are.equal(o.pid, tonumber(pid))
      assert.are.equal("1", gen)
      for round = 2, 3 do
        code, out, e = ctl_cli(o, "reexec")
        assert.are.equal(0, code, e)
        assert.are.equal("re-executing\n", out)
        until_true(function()
          code, out = ctl_cli(o, "eval", "return orch.getpid(), child_pid, generation")
          return code == 0 and out:match("\t" .. round .. "\n$")
        end, "generation " .. round)
        assert.are.equal(string.format("%d\t%d\t%d\n", o.pid, child, round), out)
        assert.is_true(alive(child))
        -- Still orch's child: its exit will reach the new image.
        assert.are.equal(tostring(o.pid), h.slurp("/proc/" .. child .. "/stat"):match("^%d+ %b() %a (%d+)"))
      end
    end)
    if child and alive(child) then os.execute("kill -KILL " .. child) end
    stop(o)
    if not ok then error(err, 0) end
  end)

  it("a hand-over is only read by the process it was made for", function()
    local code, out, err = h.cli({ "-e", "print(require('orch.ctl').inherited(), io.read('l'))" }, "stdin intact\n",
      { ORCH_HANDOFF = "1:0" })
    assert.are.equal(0, code, err)
    assert.are.equal("nil\tstdin intact\n", out)
  end)

  it("reexec refuses when the script cannot be read", function()
    h.run(function()
      local d = h.tmpdir()
      local srv = assert(ctl.serve{ socket = d .. "/s.sock", script = d .. "/gone.lua",
                                    supervisor = require("orch.supervisor").new() })
      local c = assert(ctl.connect(srv.path))
      local r = assert(c:request{ cmd = "reexec" })
      assert.is_false(r.ok)
      assert.are.equal("ENOENT", r.code)
      assert.truthy(r.error:find("gone.lua", 1, true))
      r = assert(c:request{ cmd = "signal", name = "x", signal = 9 })
      assert.are.equal("ENOENT", r.code, r.error)   -- the number was accepted; no service 'x' 
      c:close()
      srv:close()
      -- io.open's errno is named (orch.errname): not a directory, a loop.
      assert(io.open(d .. "/file", "w")):close()
      assert(os.execute("ln -s loop " .. h.shquote(d .. "/loop")))
      for name, code in pairs { ["file/x.lua"] = "ENOTDIR", loop = "ELOOP" } do
        srv = assert(ctl.serve{ socket = d .. "/s.sock", script = d .. "/" .. name,
                                supervisor = require("orch.supervisor").new() })
        c = assert(ctl.connect(srv.path))
        r = assert(c:request{ cmd = "reexec" })
        assert.are.equal(code, r.code, r.error)
        assert.truthy(r.error:find("cannot be read: ", 1, true), r.error)
        c:close()
        srv:close()
      end
    end)
    local ok, err = pcall(ctl.on_reexec, "", print)
    assert.is_false(ok)
    assert.truthy(err:find("bad argument #1 to 'on_reexec'", 1, true))
  end)

  it("cannot connect: exit 3 with the socket's path", function()
    local d = h.tmpdir()
    local code, _, err = h.cli({ "ctl", "--socket", d .. "/none.sock", "status" })
    assert.are.equal(3, code)
    assert.truthy(err:find(d .. "/none.sock", 1, true))
    code, _, err = h.cli({ "attach", "--socket", d .. "/none.sock" })
    assert.are.equal(3, code)
    assert.truthy(err:find(d .. "/none.sock", 1, true))
  end)

  it("does not keep a finished script alive, and removes its socket", function()
    local d = h.tmpdir()
    local code, out, err = h.cli({ "run", h.script(string.format(
      "local srv = assert(require('orch.ctl').serve{ socket = %q }) print(srv.path)", d .. "/s.sock")) })
    assert.are.equal(0, code, err)
    assert.are.equal(d .. "/s.sock\n", out)
    assert.is_nil(io.open(d .. "/s.sock", "r"))
  end)

  it("replaces a stale socket file and refuses a live one", function()
    h.run(function()
      local d = h.tmpdir()
      local one = assert(ctl.serve{ socket = d .. "/s.sock" })
      local two, err, code = ctl.serve{ socket = d .. "/s.sock" }
      assert.is_nil(two)
      assert.are.equal("EADDRINUSE", code, err)
      -- A socket file nobody listens on (a crashed orch) is replaced.
      local raw = assert(orch.listen{ unix = d .. "/stale.sock" })
      os.execute("cp -a " .. h.shquote(d .. "/stale.sock") .. " " .. h.shquote(d .. "/stale2.sock"))
      raw:close()
      local three = assert(ctl.serve{ socket = d .. "/stale2.sock" })
      write(d .. "/plain", "x")
      local four, _, c4 = ctl.serve{ socket = d .. "/plain" }
      assert.is_nil(four)
      assert.are.equal("EEXIST", c4)
      one:close()
      three:close()
    end)
  end)

  it("a script's ctl.serve refuses a socket in a directory another user owns, may write or links to, making nothing there", function()
    -- nobody (a second uid) prepares the places in a sticky directory of
    -- root's (as /tmp): its own directories (one sticky and 1777, as a
    -- shared /tmp-like one of its own) and its symbolic link to a private
    -- directory of root's; root adds one every user may write to. A root
    -- script that served there would let nobody replace the socket (and
    -- take the requests, eval code included) or remove it.
    local base = h.tmpdir()
    local nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups "
    assert(os.execute("chmod 1777 " .. h.shquote(base) .. " && mkdir -m 700 " .. h.shquote(base .. "/mine")
      .. " && mkdir -m 777 " .. h.shquote(base .. "/open") .. " && chmod 777 " .. h.shquote(base .. "/open")
      .. " && " .. nobody .. "sh -c " .. h.shquote('mkdir -m 755 "$0/theirs" && mkdir -m 1777 "$0/shared" '
        .. '&& chmod 1777 "$0/shared" && ln -s "$0/mine" "$0/link"') .. " " .. h.shquote(base)))
    assert.are.equal("nobody nobody nobody", h.sh("stat -c %U " .. h.shquote(base .. "/theirs") .. " "
      .. h.shquote(base .. "/shared") .. " " .. h.shquote(base .. "/link") .. " | tr '\\n' ' ' | sed 's/ $//'"))
    local script = h.script(string.format([[
local ctl = require "orch.ctl"
local base = %q
local function try(path, opts)
  local srv, err, code = ctl.serve(opts or { socket = path })
  if srv then print(path .. ": served") srv:close() else print(path .. ": " .. tostring(code) .. ": " .. err) end
end
for _, p in ipairs { "theirs/ctl.sock", "theirs/new/ctl.sock", "shared/ctl.sock", "open/ctl.sock",
                     "link/ctl.sock", "link/new/ctl.sock", "mine/ok.sock", "mine/made/ok.sock" } do
  try(base .. "/" .. p)
end
-- $ORCH_SOCKET names the socket of a serve without one.
try("env", {})
]], base))
    local code, out, err = h.cli({ "run", "--no-socket", script }, nil, { ORCH_SOCKET = base .. "/theirs/env.sock" })
    assert.are.equal(0, code, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    local function refused(i, p, why)
      local want = string.format("%s/%s: EPERM: refused %s/%s: logfile.check_dir: ", base, p, base, p)
      assert.are.equal(want, lines[i]:sub(1, #want))
      assert.truthy(lines[i]:find(why, 1, true), lines[i])
      assert.truthy(lines[i]:find("; another user could replace the socket (give a path in a directory only root "
        .. "or this user can write to; see doc/security.md)", 1, true), lines[i])
    end
    local theirs = "the directory " .. base .. "/theirs belongs to uid 65534, neither orch's user (uid 0) nor root"
    refused(1, "theirs/ctl.sock", theirs)
    refused(2, "theirs/new/ctl.sock", theirs)
    refused(3, "shared/ctl.sock", "the directory " .. base .. "/shared belongs to uid 65534")
    refused(4, "open/ctl.sock", "the directory " .. base .. "/open is writable by every user")
    refused(5, "link/ctl.sock", "the symbolic link " .. base .. "/link belongs to uid 65534: not followed")
    refused(6, "link/new/ctl.sock", "the symbolic link " .. base .. "/link belongs to uid 65534: not followed")
    assert.are.equal(base .. "/mine/ok.sock: served", lines[7])
    assert.are.equal(base .. "/mine/made/ok.sock: served", lines[8])
    local want = "env: EPERM: refused " .. base .. "/theirs/env.sock: logfile.check_dir: "
    assert.are.equal(want, lines[9]:sub(1, #want))
    assert.are.equal(9, #lines, out)
    -- Nothing was made where nobody could touch it: no socket, lock file or
    -- directory of root's in theirs, shared, open or through the link.
    assert.are.equal("", h.sh("find " .. h.shquote(base .. "/theirs") .. " " .. h.shquote(base .. "/shared") .. " "
      .. h.shquote(base .. "/open") .. " -mindepth 1"))
    assert.are.equal("made\nok.sock.lock", h.sh("ls -A " .. h.shquote(base .. "/mine")))
    os.execute("rm -rf " .. h.shquote(base) .. "/*")
  end)

  it("rejects bad serve options and bad listener arguments", function()
    local bad = {
      { { frob = 1 }, "unknown option 'frob'" },
      { { max_connections = 0 }, "option 'max_connections': positive integer expected" },
      { { max_line = 1.5 }, "option 'max_line': positive integer expected" },
      { { idle_timeout = -1 }, "option 'idle_timeout': positive number expected" },
      { { socket = "" }, "option 'socket': non-empty string expected" },
    }
    for _, b in ipairs(bad) do
      local ok, err = pcall(ctl.serve, b[1])
      assert.is_false(ok)
      assert.truthy(err:find("bad argument #1 to 'serve' (" .. b[2] .. ")", 1, true), err)
    end
    local cbad = {
      { function() return orch.private.mkdir({}) end, "bad argument #1 to 'mkdir' (string expected, got table)" },
      { function() return orch.fd.inherit(-1) end, "bad argument #1 to 'inherit' (file descriptor out of range)" },
      { function() return sd.send("READY=1") end, "bad argument #2 to 'send' (string expected, got no value)" },
    }
    for _, b in ipairs(cbad) do
      local ok, err = pcall(b[1])
      assert.is_false(ok)
      assert.truthy(tostring(err):find(b[2], 1, true), err)
    end
    assert.has_error(function()
      local l = assert(orch.listen{ unix = h.tmpdir() .. "/y.sock", ref = false })
      l:accept()
    end, "accept: must be called from a task")
  end)

  it("names the default socket after the script, in a private directory", function()
    assert.are.equal(ctl.socket_dir() .. "/policy.sock", ctl.default_socket("/etc/orch/policy.lua"))
    assert.are.equal(ctl.socket_dir() .. "/my_app.sock", ctl.default_socket("my app.lua"))
    if orch.geteuid() == 0 then
      assert.are.equal("/run/orch", ctl.socket_dir())
    else
      local x = os.getenv("XDG_RUNTIME_DIR")
      assert.are.equal(x and x ~= "" and x .. "/orch" or "/tmp/orch-" .. orch.geteuid(), ctl.socket_dir())
    end
    local d = h.tmpdir() .. "/priv"
    assert.is_true(orch.private.mkdir(d, true))
    assert.are.equal("700", h.sh("stat -c %a " .. h.shquote(d)))
    os.execute("chmod 755 " .. h.shquote(d))
    assert.is_true(orch.private.mkdir(d, true))
    assert.are.equal("700", h.sh("stat -c %a " .. h.shquote(d)))
    write(d .. "/file", "")
    local ok, _, code = orch.private.mkdir(d .. "/file", true)
    assert.is_nil(ok)
    assert.are.equal("ENOTDIR", code)
  end)
end)

describe("systemd notification", function()
  it("sends READY=1 once the policies are loaded, then pets the watchdog", function()
    h.run(function()
      local d = h.tmpdir()
      local nsock = assert(orch.dgram{ unix = d .. "/notify" })
      local path = d .. "/policy.lua"
      write(path, string.format([[
        loaded = true
        require("orch.ctl").autostart{ socket = %q }
        orch.sleep(60)
      ]], d .. "/ctl.sock"))
      local p = assert(orch.spawn{ h.bin, "run", path,
        env = { NOTIFY_SOCKET = d .. "/notify", WATCHDOG_USEC = "200000", PATH = os.getenv("PATH") } })
      nsock:set_timeout(20)
      local msg = assert(nsock:recv())
      assert.are.equal("READY=1\nMAINPID=" .. p.pid, msg)
      assert.are.equal("WATCHDOG=1", assert(nsock:recv()))
      assert.are.equal("WATCHDOG=1", assert(nsock:recv()))
      p:kill("TERM")
      p:wait()
      nsock:close()
    end, 60)
  end)

  it("sd_notify reaches an abstract socket", function()
    h.run(function()
      local name = "@orch-spec-" .. tostring(h.key())
      local nsock = assert(orch.dgram{ unix = name })
      nsock:set_timeout(10)
      assert.is_true(sd.send("STATUS=hi", name))
      assert.are.equal("STATUS=hi", nsock:recv())
      nsock:close()
      local ok, _, code = sd.send("X=1", "/nonexistent/notify")
      assert.is_nil(ok)
      assert.are.equal("ENOENT", code)
    end)
  end)
end)

describe("orch ctl stop and the stop request's wait", function()
  -- hold ignores TERM (its sleeps too: an ignored signal stays ignored
  -- across exec) until the test creates DIR/release; its stop timeout is
  -- long enough that no KILL comes meanwhile. Released, it exits 0 and is
  -- not restarted (restart = "never"): a process restarted after the
  -- test's last release ignored the TERM of orch's shutdown for 120 s.
  local HOLD = [[
local sup = require "orch.supervisor"
sup.configure{ log = false }
sup.service{ name = "hold", stop = { timeout = 120 }, restart = "never",
  cmd = { "sh", "-c", "trap '' TERM; echo up > " .. DIR .. "/up; while [ ! -e " .. DIR .. "/release ]; do sleep 0.05; done" } }
sup.service{ name = "b", cmd = { "sleep", "1000" } }
sup.run()
]]

  it("waits for the exit by default, returns at once with --no-block, gives up after --wait=SECONDS", function()
    with_orch(HOLD, function(o)
      local pid = until_true(function()
        local s = status(o).hold
        return s and s.state == "running" and h.slurp(o.dir .. "/up") ~= "" and s.pid
      end, "hold running")
      -- --no-block: the stop is under way, the process still there.
      local code, out, err = ctl_cli(o, "stop", "hold", "--no-block")
      assert.are.equal(0, code, err)
      assert.are.equal("hold: stopping (pid " .. pid .. ")\n", out)
      assert.is_true(alive(pid))
      assert.are.equal("stopping", status(o).hold.state)
      -- --wait=SECONDS: gives up, naming what is still stopping; the stop goes on.
      code, out, err = ctl_cli(o, "stop", "hold", "--wait=0.2")
      assert.are.equal(1, code, err)
      assert.are.equal("", out)
      assert.are.equal("orch ctl: hold (pid " .. pid .. "): still stopping after 0.2 s (the stop goes on)\n", err)
      assert.is_true(alive(pid))
      -- The protocol: wait false, a number, or a bad value.
      h.run(function()
        local c = assert(ctl.connect(o.sock))
        local r = assert(c:request{ cmd = "stop", name = "hold", wait = false })
        assert.is_true(r.ok, r.error)
        assert.are.same({ { name = "hold", pid = pid } }, { { name = r.stopping[1].name, pid = math.tointeger(r.stopping[1].pid) } })
        r = assert(c:request{ cmd = "stop", name = "hold", wait = 0 })
        assert.are.equal("ETIMEDOUT", r.code, r.error)
        r = assert(c:request{ cmd = "stop", name = "hold", wait = "soon" })
        assert.are.equal("EINVAL", r.code, r.error)
        assert.are.equal("'wait' must be a number of seconds >= 0, true or false", r.error)
        c:close()
      end)
      assert.is_true(alive(pid))
      -- Without either: waits until the process has exited (as systemctl
      -- stop does), however long that takes.
      h.sh(string.format("{ %s ctl --socket %s stop hold >%s/stop.out 2>&1; echo $? >%s/stop.rc; } >/dev/null 2>&1 &",
        h.shquote(h.bin), h.shquote(o.sock), h.shquote(o.dir), h.shquote(o.dir)))
      -- (Its request has reached orch when a progress line was printed.)
      until_true(function() return h.slurp(o.dir .. "/stop.out"):find("waiting for hold", 1, true) end, "the stop's progress")
      assert.are.equal("", h.slurp(o.dir .. "/stop.rc"), "orch ctl stop returned before hold exited")
      assert.is_true(alive(pid))
      h.write(o.dir .. "/release", "")
      until_true(function() return h.slurp(o.dir .. "/stop.rc") ~= "" end, "orch ctl stop's end")
      assert.are.equal("0\n", h.slurp(o.dir .. "/stop.rc"))
      assert.matches("hold: stopped\n$", h.slurp(o.dir .. "/stop.out"))
      assert.is_false(alive(pid))
      assert.are.equal("stopped", status(o).hold.state)
      -- --no-block of what is stopped already: stopped.
      code, out = ctl_cli(o, "stop", "hold", "--no-block")
      assert.are.equal(0, code)
      assert.are.equal("hold: stopped\n", out)
      code, _, err = ctl_cli(o, "stop", "hold", "--no-block", "--wait=1")
      assert.are.equal(2, code)
      assert.truthy(err:find("--no-block and --wait cannot go together", 1, true), err)
    end)
  end)

  it("restart: waits for the exit by default, returns at once with --no-block, gives up after --wait=SECONDS", function()
    -- hold as above, but each process (its pid added to DIR/up) until
    -- DIR/release.<its pid>: the one a restart starts holds too. Every
    -- one is released at the end, whether the test fails or not.
    local src = HOLD:gsub('echo up > " %.%. DIR %.%. "/up; while %[ ! %-e " %.%. DIR %.%. "/release %]',
      'echo $$ >> " .. DIR .. "/up; while [ ! -e " .. DIR .. "/release.$$ ]')
    assert.are_not.equal(HOLD, src)
    local function release_all(o)
      for p in h.slurp(o.dir .. "/up"):gmatch("%d+") do h.write(o.dir .. "/release." .. p, "") end
    end
    with_orch(src, function(o)
      local ok, err = pcall(function()
        local pid = until_true(function()
          local s = status(o).hold
          return s and s.state == "running" and h.slurp(o.dir .. "/up") ~= "" and s.pid
        end, "hold running")
        -- --no-block: the restart is under way, the old process still there.
        local code, out, err = ctl_cli(o, "restart", "hold", "--no-block")
        assert.are.equal(0, code, err)
        assert.are.equal("hold: restarting (pid " .. pid .. ")\n", out)
        assert.is_true(alive(pid))
        assert.are.equal("stopping", status(o).hold.state)
        -- --wait=SECONDS: gives up, naming what is still stopping; the
        -- restart goes on.
        code, out, err = ctl_cli(o, "restart", "hold", "--wait=0.2")
        assert.are.equal(1, code, err)
        assert.are.equal("", out)
        assert.are.equal("orch ctl: hold (pid " .. pid .. "): still stopping after 0.2 s (the restart goes on)\n", err)
        assert.is_true(alive(pid))
        -- The protocol: wait false, a number, or a bad value.
        h.run(function()
          local c = assert(ctl.connect(o.sock))
          local r = assert(c:request{ cmd = "restart", name = "hold", wait = false })
          assert.is_true(r.ok, r.error)
          assert.are.same({ { name = "hold", pid = pid } }, { { name = r.restarting[1].name, pid = math.tointeger(r.restarting[1].pid) } })
          r = assert(c:request{ cmd = "restart", name = "hold", wait = 0 })
          assert.are.equal("ETIMEDOUT", r.code, r.error)
          assert.are.equal(pid, math.tointeger(r.stopping[1].pid))
          r = assert(c:request{ cmd = "restart", name = "hold", wait = "soon" })
          assert.are.equal("EINVAL", r.code, r.error)
          assert.are.equal("'wait' must be a number of seconds >= 0, true or false", r.error)
          c:close()
        end)
        assert.is_true(alive(pid))
        -- Without either: returns once the old process has exited and a new
        -- one started, however long the stop takes.
        h.sh(string.format("{ %s ctl --socket %s restart hold >%s/restart.out 2>&1; echo $? >%s/restart.rc; } >/dev/null 2>&1 &",
          h.shquote(h.bin), h.shquote(o.sock), h.shquote(o.dir), h.shquote(o.dir)))
        until_true(function() return h.slurp(o.dir .. "/restart.out"):find("waiting for hold", 1, true) end, "the restart's progress")
        assert.are.equal("", h.slurp(o.dir .. "/restart.rc"), "orch ctl restart returned before hold exited")
        assert.is_true(alive(pid))
        h.write(o.dir .. "/release." .. pid, "")
        until_true(function() return h.slurp(o.dir .. "/restart.rc") ~= "" end, "orch ctl restart's end")
        assert.are.equal("0\n", h.slurp(o.dir .. "/restart.rc"))
        local new = status(o).hold
        assert.matches("hold: restarted %(%a+, pid " .. new.pid .. "%)\nrestarted: hold\n$", h.slurp(o.dir .. "/restart.out"))
        assert.is_false(alive(pid))
        assert.are_not.equal(pid, new.pid)
        code, _, err = ctl_cli(o, "restart", "hold", "--no-block", "--wait=1")
        assert.are.equal(2, code)
        assert.truthy(err:find("--no-block and --wait cannot go together", 1, true), err)
      end)
      release_all(o)
      if not ok then error(err, 0) end
    end)
  end)
end)

describe("a big eval reply", function()
  it("is formatted only as far as the reply shows it, and a slow reader of it holds no other client", function()
    with_orch(POLICY, function(o)
      h.run(function()
        local a = assert(ctl.connect(o.sock))
        -- A spy on string.gsub (the REPL's quoting runs it over a string
        -- result) records the longest string it is given; a 20 MB result.
        local r = assert(a:request{ cmd = "eval", code = [[
          local gsub = string.gsub
          SPY = { gsub = gsub, longest = 0 }
          string.gsub = function(s, ...)
            if type(s) == "string" and #s > SPY.longest then SPY.longest = #s end
            return gsub(s, ...)
          end
          BIG = string.rep("x", 20 * 1024 * 1024)
        ]] })
        assert.is_true(r.ok, r.error)
        r = assert(a:request{ cmd = "eval", code = "return BIG" })
        local spied = assert(a:request{ cmd = "eval", code = "string.gsub = SPY.gsub return SPY.longest" })
        assert.is_true(r.ok, r.error)
        assert.are.equal('"' .. string.rep("x", ctl.MAX_OUTPUT - 1) .. "... (truncated)", r.result)
        -- Quoting all 20 MB held the loop (every client, the supervisor)
        -- for 0.5 s, 5 s with control bytes (then the Lua time budget
        -- ended it with an error). (The formatter's limit runs a line's
        -- width past MAX_OUTPUT: see repl.lua's state.)
        assert.is_true(math.tointeger(tonumber(spied.result)) <= ctl.MAX_OUTPUT + repl.WIDTH + 1, spied.result)
        -- A client that reads its big reply slowly (control bytes: 1.5 MB
        -- of JSON, more than the socket holds) holds no other: once it has
        -- the reply's first KiB and reads no more, a ping on another
        -- connection is answered; the big reply then comes whole.
        assert(a.conn:write(ctl.encode{ cmd = "eval", code = "return string.rep('\\1', 4 * 1024 * 1024)" } .. "\n"))
        a.conn:set_timeout(30)
        local head = assert(a.conn:read(1024))
        local b = assert(ctl.connect(o.sock))
        local p = assert(b:request({ cmd = "ping" }, 30))
        assert.is_true(p.ok)
        b:close()
        local rest = assert(a.conn:read_line(4 * 1024 * 1024))
        r = cjson.decode(head .. rest)
        assert.is_true(r.ok, r.error)
        assert.are.equal(('"' .. string.rep("\\1", ctl.MAX_OUTPUT)):sub(1, ctl.MAX_OUTPUT) .. "... (truncated)", r.result)
        a:close()
      end)
    end)
  end)

  it("holding a big string in a table is formatted only as far as the reply shows it", function()
    with_orch(POLICY, function(o)
      h.run(function()
        local a = assert(ctl.connect(o.sock))
        -- The spy on string.gsub again, and values whose __tostring counts
        -- its calls: a 20 MB string in a table, then 150 such values.
        local r = assert(a:request{ cmd = "eval", code = [[
          local gsub = string.gsub
          SPY = { gsub = gsub, longest = 0, shown = 0 }
          string.gsub = function(s, ...)
            if type(s) == "string" and #s > SPY.longest then SPY.longest = #s end
            return gsub(s, ...)
          end
          BIG = string.rep("x", 20 * 1024 * 1024)
          local counted = setmetatable({}, { __tostring = function() SPY.shown = SPY.shown + 1 return "c" end })
          T = { BIG }
          for i = 2, 151 do T[i] = counted end
        ]] })
        assert.is_true(r.ok, r.error)
        local nested = assert(a:request{ cmd = "eval", code = "return { a = { BIG } }" })
        r = assert(a:request{ cmd = "eval", code = "return T" })
        local spied = assert(a:request{ cmd = "eval", code = "string.gsub = SPY.gsub return SPY.longest, SPY.shown" })
        assert.is_true(nested.ok, nested.error)
        assert.is_true(r.ok, r.error)
        -- What the whole text starts with (broken over lines: too wide).
        assert.are.equal(('{\n  a = {\n    "' .. string.rep("x", ctl.MAX_OUTPUT)):sub(1, ctl.MAX_OUTPUT) .. "... (truncated)",
          nested.result)
        assert.are.equal(('{\n  "' .. string.rep("x", ctl.MAX_OUTPUT)):sub(1, ctl.MAX_OUTPUT) .. "... (truncated)", r.result)
        -- Without the limit each eval quoted all 20 MB (1.2 s of orch's
        -- loop) and T's 150 values were formatted too, past the cut; the
        -- limit lets the quoting run a line's width past MAX_OUTPUT.
        local longest, shown = spied.result:match("^(%d+)\t(%d+)$")
        assert.is_true(math.tointeger(longest) <= ctl.MAX_OUTPUT + repl.WIDTH + 1, spied.result)
        assert.are.equal("0", shown)
        a:close()
      end)
    end)
  end)

  it("of print output shows its first MAX_OUTPUT bytes, of a line longer than that too", function()
    with_orch(POLICY, function(o)
      h.run(function()
        local a = assert(ctl.connect(o.sock))
        local M = ctl.MAX_OUTPUT
        local function output(code)
          local r = assert(a:request{ cmd = "eval", code = code })
          assert.is_true(r.ok, r.error)
          return r.output
        end
        -- One line longer than MAX_OUTPUT showed nothing of it, only the
        -- note; a line that went past MAX_OUTPUT after others, nothing of
        -- it either.
        assert.are.equal(string.rep("y", M) .. "\n... (output truncated)",
          output(("print(string.rep('y', %d)) print('z')"):format(M + 10)))
        assert.are.equal("a\n" .. string.rep("y", M - 2) .. "\n... (output truncated)",
          output(("print('a') print(string.rep('y', %d)) print('z')"):format(M)))
        -- Exactly MAX_OUTPUT bytes are all there is: no note.
        assert.are.equal("a\n" .. string.rep("y", M - 2), output(("print('a') print(string.rep('y', %d))"):format(M - 2)))
        a:close()
      end)
    end)
  end)
end)

describe("the control socket out of file descriptors", function()
  local POLICY_TAKE = u.TAKE_FREE .. [[
orch.task(function() io.stdout:write("held ", TAKE(), "\n") io.stdout:flush() orch.sleep(1000) end)
]]

  it("names the fd limit in its warning when no fd is left to read it with", function()
    local o = u.start_nofile("32:32", POLICY_TAKE)
    finally(function() u.stop(o) end)
    until_true(function() return h.slurp(o.dir .. "/out"):find("held %d+") end, "the policy to take every fd")
    -- Four connections wait in the backlog when orch next accepts (it is
    -- stopped meanwhile): the first is accepted with the spare fds, the
    -- next take the fds that freed or wait for fds to come back. Serving
    -- the first then has no fd left: its warning must still name the limit.
    local warnings = {}
    h.run(function()
      os.execute("kill -STOP " .. o.pid)
      local conns = {}
      local ok, err = pcall(function()
        for i = 1, 4 do
          conns[i] = assert(orch.connect{ unix = o.sock })
          assert(conns[i]:write('{"cmd": "ping", "id": ' .. i .. '}\n'))
        end
      end)
      os.execute("kill -CONT " .. o.pid)
      assert(ok, err)
      local tasks = {}
      for i = 1, 4 do
        tasks[i] = orch.task(function()
          conns[i]:set_timeout(30)
          local line = assert(conns[i]:read_line())
          conns[i]:close()
          local r = cjson.decode(line)
          assert.is_true(r.ok, line)
          assert.are.equal(i, r.id)
          if r.warning then warnings[#warnings + 1] = r.warning end
        end)
      end
      for i = 1, 4 do tasks[i]:join() end
    end)
    assert.is_true(#warnings >= 1)
    for _, w in ipairs(warnings) do
      assert.are.equal("orch is out of file descriptors (EMFILE, limit 32): services may fail to start", w)
    end
    local err = h.slurp(o.dir .. "/err")
    assert.matches("orch.ctl: orch is out of file descriptors (EMFILE, limit 32)", err, 1, true)
    assert.is_nil(err:find("limit ?", 1, true), err)
  end)

  it("reexec out of file descriptors says so, not that the script is missing", function()
    local o = u.start_nofile("32:32", u.TAKE_FREE .. "orch.task(function() orch.sleep(1000) end)\n")
    finally(function() u.stop(o) end)
    h.run(function()
      local c = assert(ctl.connect(o.sock))
      -- This connection holds the spare fds: the policy takes what they freed.
      local r = assert(c:request{ cmd = "eval", code = "return TAKE()" })
      assert.is_true(r.ok, r.error)
      r = assert(c:request{ cmd = "reexec" })
      assert.is_false(r.ok)
      assert.are.equal("EMFILE", r.code, r.error)
      assert.are.equal("reexec: the script " .. o.path .. " cannot be read: Too many open files", r.error)
      -- Given the fds back, the same check passes (nothing was done).
      r = assert(c:request{ cmd = "eval", code = "FREE() local ctl = require('orch.ctl') return type((ctl.prepare_reexec(ctl.server)))" })
      assert.is_true(r.ok, r.error)
      assert.are.equal('"table"', r.result)
      c:close()
    end)
    assert.are.equal(0, (u.ctl_cli(o, "ping")))
  end)
end)
