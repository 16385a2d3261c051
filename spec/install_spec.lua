-- `cmake --install` puts everything in the standard places, and the
-- installed orch (binary and Lua module) finds its Lua half on its own.
local h = require "spec.helper"

describe("cmake --install", function()
  local prefix

  -- Runs a shell command from / (away from the source tree), which must
  -- succeed; returns its output (stdout and stderr).
  local function from_root(cmd)
    local out, ok = h.sh("cd / && " .. cmd .. " 2>&1")
    assert.is_true(ok, out)
    return out
  end

  setup(function()
    prefix = h.tmpdir() .. "/prefix"
    local out, ok = h.sh("cmake --install " .. h.shquote(h.build) .. " --prefix " .. h.shquote(prefix) .. " 2>&1")
    assert(ok, out)
  end)

  it("installs the binary, libraries, headers, pkg-config file and Lua modules", function()
    for _, f in ipairs({ "bin/orch", "lib/liborch.a", "lib/liborch.so", "lib/liborch_heartbeat.a",
                         "include/orch.h", "include/orch_heartbeat.h", "lib/pkgconfig/orch.pc",
                         "lib/lua/5.4/orch.so", "share/lua/5.4/orch/init.lua" }) do
      local _, ok = h.sh("test -e " .. h.shquote(prefix .. "/" .. f))
      assert.is_true(ok, f .. " missing")
    end
  end)

  it("the installed orch runs scripts from another directory", function()
    local out = from_root(h.shquote(prefix .. "/bin/orch") ..
      " -e 'print(type(orch.task), require(\"orch\") == orch)'")
    assert.are.equal("function\ttrue", out)
  end)

  it("a stock lua5.4 requires the installed module without LUA_PATH", function()
    local out = from_root("LUA_CPATH=" .. h.shquote(prefix .. "/lib/lua/5.4/?.so") ..
      " lua5.4 -e 'print(require(\"orch\").run(function() return \"installed\" end))'")
    assert.are.equal("installed", out)
  end)

  it("a C program builds against the installed header and library with pkg-config", function()
    local src = h.tmpdir() .. "/host.c"
    h.write(src, [[
#include <orch.h>
#include <stdio.h>
int main(void) {
  orch_runtime *rt = orch_new();
  orch_load_string(rt, "orch.sleep(0.01) result = 6 * 7", "=t");
  int st = orch_run(rt);
  lua_getglobal(orch_lua(rt), "result");
  printf("%d %d\n", st, (int)lua_tointeger(orch_lua(rt), -1));
  orch_free(rt);
  return st;
}
]])
    local exe = src:gsub("%.c$", "")
    local pc = "PKG_CONFIG_PATH=" .. h.shquote(prefix .. "/lib/pkgconfig")
    local out, ok = h.sh(pc .. " cc " .. h.cflags .. " -o " .. h.shquote(exe) .. " " .. h.shquote(src) ..
      " $(" .. pc .. " pkg-config --cflags --libs orch) -Wl,-rpath," .. h.shquote(prefix .. "/lib") .. " 2>&1 && " .. h.shquote(exe))
    assert.is_true(ok, out)
    assert.are.equal("0 42", out)
  end)
end)
