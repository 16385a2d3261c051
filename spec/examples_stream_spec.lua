-- The stream examples (examples/fifo.lua, pipeline.lua, echo_server.lua and
-- echo_client.lua) run with the orch binary and do what they say.
local h = require "spec.helper"
local orch = h.orch

local function example(name) return h.root .. "/examples/" .. name end

describe("stream examples", function()
  it("pipeline.lua counts a directory like ls | wc -l", function()
    local dir = h.tmpdir()
    for i = 1, 7 do h.write(dir .. "/file" .. i, "") end
    local code, out, err = h.cli({ "run", example("pipeline.lua"), dir })
    assert.are.equal(0, code, err)
    assert.are.equal(dir .. ": 7 entries\n", out)
  end)

  it("fifo.lua: the reader and a separate writer program", function()
    local code, out, err = h.cli({ "run", example("fifo.lua") })
    assert.are.equal(0, code, err)
    assert.are.equal("reader got: message 1\nreader got: message 2\nreader got: message 3\n"
                     .. "reader: end of file\n", out)
  end)

  it("fifo.lua: two orch processes started independently", function()
    local fifo = h.tmpdir() .. "/fifo"
    local out = h.run(function()
      local reader = assert(orch.spawn{ h.bin, "run", example("fifo.lua"), "read", fifo, stdout = "pipe" })
      -- The writer waits until the reader has made and opened the FIFO.
      local writer = assert(orch.spawn{ h.bin, "run", example("fifo.lua"), "write", fifo })
      local text = reader.stdout:read_all()
      reader.stdout:close()
      assert.are.equal(0, (writer:wait()))
      assert.are.equal(0, (reader:wait()))
      return text
    end, 60)
    assert.are.equal("reader got: message 1\nreader got: message 2\nreader got: message 3\n"
                     .. "reader: end of file\n", out)
  end)

  for _, kind in ipairs({ "unix", "tcp" }) do
    it("echo_server.lua forks a child per " .. kind .. " connection for echo_client.lua", function()
      local address = kind == "unix" and (h.tmpdir() .. "/echo.sock") or "0"
      local res = h.run(function()
        local server = assert(orch.spawn{ h.bin, "run", example("echo_server.lua"), address, "3",
                                          stdout = "pipe" })
        local banner = server.stdout:read_line()
        local where = assert(banner:match("^listening on (.*)$"), banner)
        local target = kind == "unix" and where or where:match(":(%d+)$")
        local replies = {}
        -- Three clients at once: each is served by its own forked child.
        local clients = {}
        for i = 1, 3 do
          clients[i] = assert(orch.spawn{ h.bin, "run", example("echo_client.lua"), target,
                                          "hello " .. i, "bye " .. i, stdout = "pipe" })
        end
        for i = 1, 3 do
          replies[i] = clients[i].stdout:read_all()
          clients[i].stdout:close()
          assert.are.equal(0, (clients[i]:wait()))
        end
        local log = server.stdout:read_all()
        server.stdout:close()
        assert.are.equal(0, (server:wait()))
        return { replies = replies, log = log, where = where }
      end, 60)
      for i = 1, 3 do
        assert.are.equal(("echo: hello %d\necho: bye %d\n"):format(i, i), res.replies[i])
      end
      local _, forks = res.log:gsub("connection %d: child %d+\n", "")
      assert.are.equal(3, forks)
      assert.matches("served 3 connections\n$", res.log)
      if kind == "unix" then
        local _, gone = h.sh("test ! -e " .. h.shquote(res.where))
        assert.is_true(gone, "the server removed its socket file")
      end
    end)
  end
end)
