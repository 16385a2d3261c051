/*
 * test_embed.c: the embedding API that passes arguments (include/orch.h):
 * orch_load_buffer, orch_load_function and orch_call, on a real runtime.
 * Arguments travel as arguments (no globals); errors are reported through
 * the return code and orch_last_error. Exits 0 when every check passed.
 */
#include "orch.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failed, passed;

#define CHECK(cond) do { \
    if (!(cond)) { printf("#   check failed (line %d): %s\n", __LINE__, #cond); failed++; } \
    else passed++; \
  } while (0)

/* A module of the test's own, found by require through package.preload. */
static const char module_src[] =
  "local M = {}\n"
  "function M.join(...) return table.concat({ ... }, '+') end\n"
  "function M.count(...) return select('#', ...) end\n"
  "function M.fail() error('asked to fail', 0) end\n"
  "function M.task(a, b) orch.sleep(0.01) result = a .. b end\n"
  "return M\n";

static void preload(lua_State *L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  if (luaL_loadstring(L, module_src) != LUA_OK) { printf("# %s\n", lua_tostring(L, -1)); exit(1); }
  lua_setfield(L, -2, "embed_test");
  lua_pop(L, 2);
}

static const char *global_string(lua_State *L, const char *name, char *buf, size_t size) {
  lua_getglobal(L, name);
  snprintf(buf, size, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "(nil)");
  lua_pop(L, 1);
  return buf;
}

int main(void) {
  char buf[256];
  char *argv[] = { "a", "b\0hidden", "c" };

  /* orch_call: now, with arguments, a string result copied out. */
  orch_runtime *rt = orch_new();
  CHECK(rt != NULL);
  if (!rt) return 1;
  lua_State *L = orch_lua(rt);
  preload(L);
  int top = lua_gettop(L);
  char *res = NULL;
  CHECK(orch_call(rt, "embed_test", "join", 3, argv, &res) == ORCH_OK);
  CHECK(res != NULL && strcmp(res, "a+b+c") == 0);
  free(res);
  /* A result that is not a string gives NULL; the stack is left as it was. */
  res = (char *)1;
  CHECK(orch_call(rt, "embed_test", "count", 2, argv, &res) == ORCH_OK);
  CHECK(res == NULL);
  CHECK(orch_call(rt, "embed_test", "count", 0, NULL, NULL) == ORCH_OK);
  CHECK(lua_gettop(L) == top);
  /* Errors: a raising function, a missing function, a missing module. */
  CHECK(orch_call(rt, "embed_test", "fail", 0, NULL, NULL) == ORCH_ERR_RUN);
  CHECK(strcmp(orch_last_error(rt), "asked to fail") == 0);
  CHECK(orch_call(rt, "embed_test", "nosuch", 0, NULL, NULL) == ORCH_ERR_RUN);
  CHECK(strcmp(orch_last_error(rt), "module 'embed_test' has no function 'nosuch'") == 0);
  CHECK(orch_call(rt, "no.such.module", "f", 0, NULL, NULL) == ORCH_ERR_RUN);
  CHECK(strstr(orch_last_error(rt), "no.such.module") != NULL);
  CHECK(lua_gettop(L) == top);

  /* orch_load_function: a task that may wait, with its arguments. */
  CHECK(orch_load_function(rt, "embed_test", "task", 2, argv) == ORCH_OK);
  CHECK(orch_run(rt) == 0);
  CHECK(strcmp(global_string(L, "result", buf, sizeof buf), "ab") == 0);
  orch_free(rt);

  /* orch_load_buffer: a chunk of the given length, argv as `...`; a syntax
   * error is ORCH_ERR_RUN with the chunk name in the message. */
  rt = orch_new();
  L = orch_lua(rt);
  const char code[] = "result = table.concat({ ... }, ',') .. '/' .. select('#', ...) -- trailing bytes ignored";
  CHECK(orch_load_buffer(rt, code, strlen(code), "=buf", 3, argv) == ORCH_OK);
  CHECK(orch_run(rt) == 0);
  CHECK(strcmp(global_string(L, "result", buf, sizeof buf), "a,b,c/3") == 0);
  CHECK(orch_load_buffer(rt, "x = = 1", 7, "=broken", 0, NULL) == ORCH_ERR_RUN);
  CHECK(strncmp(orch_last_error(rt), "broken:1:", 9) == 0);
  /* Only len bytes count: the rest of the buffer is not compiled. */
  CHECK(orch_load_buffer(rt, "done = 1 garbage(", 8, "=part", 0, NULL) == ORCH_OK);
  CHECK(orch_run(rt) == 0);
  lua_getglobal(L, "done");
  CHECK(lua_tointeger(L, -1) == 1);
  lua_pop(L, 1);
  orch_free(rt);

  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
