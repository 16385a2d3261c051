-- The IPC examples (examples/shm_ring.lua, semop_pc.lua, msg_types.lua,
-- atomic_counter.lua) run through the orch binary and do what they say.
local h = require "spec.helper"

local function run(name, ...)
  local code, out, err = h.cli({ "run", h.root .. "/examples/" .. name, ... })
  assert.are.equal(0, code, err)
  assert.are.equal("", err)
  return out
end

describe("IPC examples", function()
  it("shm_ring.lua: producers and consumers over a shared-memory ring", function()
    assert.are.equal(table.concat({
      "2 producers, 2 consumers, 8 slots",
      "consumed 400 of 400 items",
      "sum matches:\ttrue",
      "ring indexes:\t402\t402",
    }, "\n") .. "\n", run("shm_ring.lua"))
    assert.matches("consumed 150 of 150 items\nsum matches:\ttrue\n",
                   run("shm_ring.lua", "3", "1", "50"))
  end)

  it("semop_pc.lua: producers and consumers, every step one multi-operation semop", function()
    assert.are.equal(table.concat({
      "2 producers, 2 consumers, 4 slots",
      "consumed 200 of 200 items",
      "sum matches:\ttrue",
      "all slots free again:\ttrue",
    }, "\n") .. "\n", run("semop_pc.lua"))
    assert.matches("consumed 150 of 150 items\nsum matches:\ttrue\n",
                   run("semop_pc.lua", "3", "1", "50"))
  end)

  it("msg_types.lua: two processes talking by message type", function()
    assert.are.equal(table.concat({
      "1 squared is 1 (type 2)",
      "2 squared is 4 (type 2)",
      "3 squared is 9 (type 2)",
      "4 squared is 16 (type 2)",
      "5 squared is 25 (type 2)",
      "server: done",
      "server: bye",
      "queue empty:\ttrue",
    }, "\n") .. "\n", run("msg_types.lua"))
  end)

  it("atomic_counter.lua: forked children increment a shared counter", function()
    assert.are.equal("4 children x 10000 increments = 40000\nhighest child number:\t4\n",
                     run("atomic_counter.lua"))
    assert.are.equal("8 children x 5000 increments = 40000\nhighest child number:\t8\n",
                     run("atomic_counter.lua", "8", "5000"))
  end)
end)
