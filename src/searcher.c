/*
 * searcher.c: where `require "orch.x"` finds orch's Lua half: a
 * package.searchers entry over $ORCH_LUA_DIR, the source tree (from a build
 * tree), the install location relative to the code, and the configured one.
 */
#include "runtime_int.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- module loading */

static int dir_exists(const char *p) { return access(p, R_OK | X_OK) == 0; }

/* Where this code lives: the executable, or orch.so when loaded by a host
 * Lua. Empty string if unknown. */
static void self_path(char *out, size_t n) {
  Dl_info info;
  char tmp[PATH_MAX];
  out[0] = 0;
  if (dladdr((void *)&self_path, &info) && info.dli_fname && strchr(info.dli_fname, '/') &&
      realpath(info.dli_fname, tmp)) {
    snprintf(out, n, "%s", tmp);
    return;
  }
  ssize_t r = readlink("/proc/self/exe", tmp, sizeof tmp - 1);
  if (r > 0) { tmp[r] = 0; snprintf(out, n, "%s", tmp); }
}

/* Is the code running from the build tree? Then the Lua half is taken from
 * the source tree, otherwise from the install location. */
static int in_build_tree(const char *where) {
  char build[PATH_MAX];
  const char *b = realpath(ORCH_BUILD_DIR, build) ? build : ORCH_BUILD_DIR;
  size_t bl = strlen(b);
  return where[0] && strncmp(where, b, bl) == 0 && where[bl] == '/';
}

/* [-0,+1] The list of directories holding orch/<module>.lua, as a table:
 * $ORCH_LUA_DIR, the source tree (from a build tree), the install location
 * relative to where the code is (a relocated install), the configured
 * install location. */
static void push_lua_dirs(lua_State *L) {
  char where[PATH_MAX];
  self_path(where, sizeof where);
  lua_newtable(L);
  int n = 0;
  const char *env = getenv("ORCH_LUA_DIR");
  if (env && *env) { lua_pushstring(L, env); lua_rawseti(L, -2, ++n); }
  if (in_build_tree(where) && dir_exists(ORCH_SOURCE_LUA_DIR)) {
    lua_pushstring(L, ORCH_SOURCE_LUA_DIR);
    lua_rawseti(L, -2, ++n);
  }
  char *slash = strrchr(where, '/');
  if (slash) {
    *slash = 0;
    char rel[PATH_MAX + 64];
    /* the executable is in <bindir>, liborch.so in <libdir>, orch.so in
     * <libdir>/lua/5.4 */
    const char *base = slash + 1;
    const char *suffix = strcmp(base, "orch.so") == 0 ? ORCH_REL_LUA_FROM_LMOD
                       : strncmp(base, "liborch", 7) == 0 ? ORCH_REL_LUA_FROM_LIB
                       : ORCH_REL_LUA_FROM_BIN;
    char real[PATH_MAX];
    int w = snprintf(rel, sizeof rel, "%s/%s", where, suffix);
    if (w > 0 && (size_t)w < sizeof rel && realpath(rel, real) && strcmp(real, ORCH_INSTALL_LUA_DIR) != 0 && dir_exists(real)) {
      lua_pushstring(L, real);
      lua_rawseti(L, -2, ++n);
    }
  }
  lua_pushstring(L, ORCH_INSTALL_LUA_DIR);
  lua_rawseti(L, -2, ++n);
}

/* luaL_loadfile of an orch module. A module loaded on first use (the
 * supervisor's log, orch.sdnotify when `orch run` starts its control
 * socket) may be required once a policy or its services took every fd: at
 * EMFILE or ENFILE one of the runtime's spare fds is lent to the file
 * (fdlimit.c), and taken back once it is closed again. */
static int load_module_file(lua_State *L, const char *path) {
  errno = 0;
  int st = luaL_loadfile(L, path);
  if (st != LUA_ERRFILE || (errno != EMFILE && errno != ENFILE)) return st;
  orch__fd_spare_settle();
  if (!orch__fd_spare_lend()) return st;
  lua_pop(L, 1);
  st = luaL_loadfile(L, path);
  orch__fd_spare_settle();
  return st;
}

/* package.searchers entry: "orch" and "orch.x.y" from the orch Lua dirs. */
static int orch_searcher(lua_State *L) {
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  if (strlen(name) != len) {
    lua_pushliteral(L, "\n\tmodule name contains a zero byte");
    return 1;
  }
  if (strcmp(name, "orch") != 0 && strncmp(name, "orch.", 5) != 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  int dirs = lua_gettop(L);
  lua_Integer nd = luaL_len(L, dirs);
  for (lua_Integer i = 1; i <= nd; i++) {
    lua_rawgeti(L, dirs, i);
    const char *dir = lua_tostring(L, -1);
    lua_pop(L, 1);
    const char *rel = luaL_gsub(L, name, ".", "/");
    const char *cands[2];
    cands[0] = lua_pushfstring(L, "%s/%s.lua", dir, rel);
    cands[1] = lua_pushfstring(L, "%s/%s/init.lua", dir, rel);
    for (int c = 0; c < 2; c++) {
      if (access(cands[c], R_OK) == 0) {
        if (load_module_file(L, cands[c]) != LUA_OK)
          return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s",
                            name, cands[c], lua_tostring(L, -1));
        lua_pushstring(L, cands[c]);
        return 2;
      }
    }
    lua_pop(L, 3);
  }
  lua_pushfstring(L, "no orch module '%s' in the orch Lua directories", name);
  return 1;
}

void orch__install_searcher(lua_State *L) {
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) { lua_pop(L, 1); return; }
  lua_getfield(L, -1, "searchers");
  if (!lua_istable(L, -1)) { lua_pop(L, 2); return; }
  lua_Integer n = luaL_len(L, -1);
  /* Insert at position 2 (after preload). */
  for (lua_Integer i = n; i >= 2; i--) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 1);
  }
  push_lua_dirs(L);
  lua_pushcclosure(L, orch_searcher, 1);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 2);
}
