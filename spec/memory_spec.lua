-- What every process of the orch binary pays for before it does anything
-- (issues 14 and 15: memory per service): the orchestrator, the fd holder
-- and each `orch ctl` run the same binary.
local h = require "spec.helper"

-- The p_memsz of the ELF file's PT_TLS program header (0 without one).
local function tls_size(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  assert.are.equal("\127ELF", data:sub(1, 4))
  assert.are.equal(2, data:byte(5))                 -- ELFCLASS64
  local phoff = string.unpack("<I8", data, 0x20 + 1)
  local phentsize, phnum = string.unpack("<I2I2", data, 0x36 + 1)
  for i = 0, phnum - 1 do
    local at = phoff + i * phentsize + 1
    if string.unpack("<I4", data, at) == 7 then      -- PT_TLS
      return (string.unpack("<I8", data, at + 0x28))
    end
  end
  return 0
end

describe("memory of every orch process", function()
  it("keeps the binary's thread-local storage under 4 KiB (each thread's copy is zeroed, so resident, at its start)", function()
    assert.is_true(tls_size(h.bin) < 4096)
  end)

  it("reads a child's output in a fresh process (the read buffer made at the first read)", function()
    local code, out = h.cli({ "-e", [[print(orch.run{ "sh", "-c", "printf abc; printf def >&2" })]] })
    assert.are.equal(0, code)
    assert.are.equal("0\tabc\tdef\tnil\n", out)
  end)
end)
