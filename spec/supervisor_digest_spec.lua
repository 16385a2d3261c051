-- The digest of a service's definition (orch.supervisor.handoff.digest) is
-- written into the state record, which the next orch reads after a kill -9
-- (lua/orch/supervisor/persist.lua): a definition whose digest changed is
-- restarted. So the value must not change from one version to the next: it
-- is the 64-bit FNV-1a of handoff.canon(def), hashed piece by piece without
-- making the text (which was most of a mass start's garbage, issue 14).
local u = require "spec.supervisor_util"
local orch = u.orch
local handoff = require "orch.supervisor.handoff"

-- The digest as it was first made: the whole text, then its bytes.
local function from_text(def)
  local text = handoff.canon(def)
  local h = -3750763034362895579
  for i = 1, #text do h = (h ~ text:byte(i)) * 1099511628211 end
  return string.format("%016x", h)
end

describe("supervisor definition digest", function()
  it("is the FNV-1a of the definition's canonical text", function()
    local deep, cur = {}, nil
    cur = deep
    for _ = 1, 60 do cur.x = {} cur = cur.x end
    local defs = {
      { name = "svc1", cmd = { "/bin/x" }, env = { SVC_INDEX = 1 }, backoff = 0, start_limit = false, log = { dir = "/tmp" } },
      { name = "a\nb\"c\0d\200\\", cmd = { "sh", "-c", "echo 1" }, n = 1.5, big = math.maxinteger, t = true,
        [1] = "x", [2.5] = "y", [true] = 1, [false] = 2 },
      { on_start = function() return orch.now() end, nested = { a = { b = { c = {} } } } },
      {},
      deep,
    }
    for i, def in ipairs(defs) do assert.are.equal(from_text(def), handoff.digest(def), "definition " .. i) end
  end)

  it("is the same in every version of orch", function()
    assert.are.equal("090c77e750414eea", handoff.digest{ name = "svc1", cmd = { "/bin/x" }, env = { SVC_INDEX = 1 },
      backoff = 0, start_limit = false, log = { dir = "/tmp" } })
  end)
end)
