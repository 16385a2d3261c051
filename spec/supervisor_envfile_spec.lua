-- Service conveniences: env_file (systemd's EnvironmentFile= rules) and
-- templated services (name = "worker@%i", instances = {...}). Real files,
-- real processes through `orch run`.
local h = require "spec.helper"
local envfile = require "orch.supervisor.envfile"
local schema = require "orch.supervisor.schema"

-- Runs a supervisor script; returns code, stdout, stderr.
local function run(src)
  return h.cli({ "run", "--no-socket", h.script([[
local sup = require "orch.supervisor"
sup.configure{ log = function(m) io.stderr:write(m, "\n") end,
               output = function(name, line) print(name .. " | " .. line) io.stdout:flush() end }
]] .. src) })
end

describe("env_file", function()
  it("parses as systemd does", function()
    local cases = {
      { "A=1\nB=2\n", { { "A", "1" }, { "B", "2" } } },
      { "# c\n; c\n\n  A = x y  \n", { { "A", "x y" } } },
      { "A='s $x \\n'\n", { { "A", "s $x \\n" } } },
      { 'A="d \\"q\\" \\$x \\\\ \\n"\n', { { "A", 'd "q" $x \\ \\n' } } },
      { "A=x # not a comment\n", { { "A", "x # not a comment" } } },
      { "A=a\\\nb\n", { { "A", "ab" } } },
      { 'A="multi\nline"\n', { { "A", "multi\nline" } } },
      -- A quote opens only where a value (or a quoted part) begins.
      { "A=\"x\"'y'\n", { { "A", "xy" } } },
      { "A=\"x\"y'z'\n", { { "A", "xy'z'" } } },
      { "A=\n", { { "A", "" } } },
      { "A=last", { { "A", "last" } } },
      { "A=1\nA=2\n", { { "A", "1" }, { "A", "2" } } },
    }
    for _, c in ipairs(cases) do
      local got, warns = envfile.parse(c[1])
      assert.are.same(c[2], got, c[1])
      assert.are.same({}, warns, c[1])
    end
    local got, warns = envfile.parse("export B=1\nNOEQUALS\n1A=x\nC=ok\n")
    assert.are.same({ { "C", "ok" } }, got)
    assert.are.same({ "line 1: 'export B' is not a variable name: ignored", "line 2: no '=': ignored",
                      "line 3: '1A' is not a variable name: ignored" }, warns)
  end)

  it("sets the service's environment at each start; the file wins over env; ORCH_SERVICE stays orch's", function()
    local dir = h.tmpdir()
    local file = dir .. "/web.env"
    h.write(file, "# /etc/default/web\nMODE=\"from file\"\nPORT=8080\nORCH_SERVICE=forged\nexport BAD=1\n")
    local code, out, err = run(string.format([[
      sup.service{ name = "web", restart = "never", env = { MODE = "from env", KEEP = "kept" }, env_file = %q,
                   cmd = { "sh", "-c", 'echo "$MODE|$PORT|$KEEP|$ORCH_SERVICE|${BAD-unset}"' } }
      sup.start("web")
      sup.wait("web", "exited", 10)
      -- A changed file takes effect at the next start.
      local f = io.open(%q, "w") f:write("MODE=changed\n") f:close()
      sup.start("web")
      orch.sleep(0)
      sup.wait("web", "exited", 10)
      sup.shutdown(0)
    ]], file, file))
    assert.are.equal(0, code, err)
    assert.matches("web | from file|8080|kept|web|unset\n", out, 1, true)
    assert.matches("web | changed||kept|web|unset\n", out, 1, true)
    assert.matches("web: " .. file .. ": line 5: 'export BAD' is not a variable name: ignored", err, 1, true)
  end)

  it("a missing, untrusted or FIFO file fails the start with the reason; '-' makes a missing one optional", function()
    local dir = h.tmpdir()
    h.write(dir .. "/open.env", "A=1\n")
    os.execute("chmod 666 " .. h.shquote(dir .. "/open.env") .. " && mkfifo " .. h.shquote(dir .. "/fifo"))
    local code, out, err = run(string.format([[
      local D = %q
      local function one(name, file)
        sup.service{ name = name, restart = "never", start_limit = false, env_file = file, cmd = { "echo", name .. " ran" } }
      end
      one("missing", D .. "/none.env")
      one("optional", "-" .. D .. "/none.env")
      one("open", D .. "/open.env")
      one("fifo", D .. "/fifo")
      sup.start("all")
      for _, n in ipairs { "missing", "open", "fifo" } do
        orch.sleep(0)
        sup.wait(n, { "backoff", "fatal", "exited" }, 10)
        local st = sup.status(n)[1]
        print(n, st.reason)
      end
      sup.wait("optional", "exited", 10)
      sup.shutdown(0)
    ]], dir))
    assert.are.equal(0, code, err)
    assert.matches("missing\tspawn failed: env_file cannot open " .. dir .. "/none.env: no such file or directory", out, 1, true)
    assert.matches("open\tspawn failed: env_file " .. dir .. "/open.env may be written by others", out, 1, true)
    assert.matches("fifo\tspawn failed: env_file " .. dir .. "/fifo is not a regular file", out, 1, true)
    assert.matches("optional | optional ran", out, 1, true)
    assert.is_nil(out:find("missing ran", 1, true))
  end)
end)

describe("templated services", function()
  it("worker@%i with instances: one service each, %i and %n replaced in strings", function()
    local code, out, err = run([[
      local names = sup.service{ name = "worker@%i", instances = { "a", "b", 3 }, restart = "never",
                                 env = { WHO = "%n" }, cmd = { "sh", "-c", 'echo "instance %i of $WHO 100%%"' } }
      print(table.concat(names, " "))
      sup.start("all")
      sup.wait("all", "exited", 10)
      for _, s in ipairs(sup.status()) do print(s.name, s.state) end
      sup.shutdown(0)
    ]])
    assert.are.equal(0, code, err)
    assert.matches("^worker@a worker@b worker@3\n", out)
    for _, i in ipairs({ "a", "b", "3" }) do
      assert.matches("worker@" .. i .. " | instance " .. i .. " of worker@" .. i .. " 100%\n", out, 1, true)
      assert.matches("worker@" .. i .. "\texited\n", out, 1, true)
    end
  end)

  it("refuses templates without %i, bad or repeated instance names", function()
    local cases = {
      { { name = "w", instances = { "a" }, cmd = { "true" } }, "service 'w': 'instances' needs a name with %i" },
      { { name = "w@%i", instances = {}, cmd = { "true" } }, "'instances' must be a non-empty list" },
      { { name = "w@%i", instances = { "a b" }, cmd = { "true" } }, "instances[1]: name" },
      { { name = "w@%i", instances = { "a", "a" }, cmd = { "true" } }, "instance 'a' given twice" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(schema.expand, c[1])
      assert.is_false(ok)
      assert.matches(c[2], err, 1, true)
    end
  end)
end)
