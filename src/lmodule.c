/*
 * lmodule.c: the entry point of build/lua/orch.so for a stock lua5.4:
 * `require "orch"` finds this file through package.cpath when no
 * orch/init.lua is on package.path, and loads the Lua half (init.lua) from
 * the orch Lua directories (see src/searcher.c).
 * `require "orch.core"` reaches luaopen_orch_core in the same file through
 * Lua's all-in-one loader.
 */
#include <lauxlib.h>
#include <lua.h>

int luaopen_orch_core(lua_State *L);
int luaopen_orch(lua_State *L);

int luaopen_orch(lua_State *L) {
  luaL_requiref(L, "orch.core", luaopen_orch_core, 0);
  lua_pop(L, 1);
  /* The runtime installed a searcher for orch and orch.*: use it. */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchers");
  lua_rawgeti(L, -1, 2);
  lua_pushliteral(L, "orch");
  lua_call(L, 1, 2);
  if (!lua_isfunction(L, -2))
    return luaL_error(L, "orch: cannot find orch/init.lua: %s", lua_tostring(L, -2));
  lua_pushliteral(L, "orch");
  lua_insert(L, -2);
  lua_call(L, 2, 1);
  return 1;
}
