/*
 * libm.c: the orch executable's libm, mapped at the first call of one of its
 * functions rather than by ld.so at every start (ORCH_EXE_STATIC only;
 * liborch and the Lua module link libm as usual).
 *
 * Mapping libm.so.6 at start cost every orch process about 0.1 ms of CPU
 * (issue 15: a ping's client, measured against the same program without
 * it): its file opened and mapped, its relocations, the 21 IFUNC resolvers
 * spread over its text (each a page fault mapping a 64 KiB window), the
 * unmapping at exit. Most orch processes never call it: `orch ctl`, a
 * supervisor until it computes a backoff with `^`. The functions orch and
 * its static Lua call (Lua's floor, fmod, pow, the math library) are
 * defined here: the first call of any of them opens libm.so.6 (dlopen: the
 * soname ld.so would have loaded), drops the text its resolvers touched
 * (main.c), looks the function up once and from then on calls it through a
 * pointer. The fd holder, which holds many fds and calls floor, maps it at
 * its start (main.c).
 *
 * A C module a script requires may call libm without naming it as a
 * dependency (built with `cc -shared` alone, as luarocks does): with libm
 * mapped at start, ld.so found any of its functions in the executable's
 * scope. So package.loadlib and Lua's C searchers are wrapped
 * (orch__libm_wrap_loaders, main.c): a C library that fails to load is
 * loaded again once libm is in the global scope (RTLD_GLOBAL), as it was.
 *
 * The dlopen opens two files (ld.so's cache, libm), one after the other:
 * at EMFILE or ENFILE (a supervisor that took every fd, then computes its
 * first backoff) one of the runtime's spare fds is lent to it, as to a Lua
 * module loaded on first use (src/fdlimit.c). Only a libm that cannot be
 * mapped even so (no memory) ends the process, with a message, as ld.so
 * did when it could not map it at start.
 *
 * Thread-safe: a thread other than the loop's may be the first caller (the
 * pointers are atomic; two first callers both look up the same function,
 * dlopen counts the second open); Lua, orch's only caller, runs on the loop
 * thread, which alone may lend a spare. Nothing here runs in a signal
 * handler or a vfork child.
 */
#include "runtime.h"

#include <dlfcn.h>
#include <gnu/lib-names.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void orch__drop_libm_text(void);   /* main.c */
void orch__libm_load(void);
void orch__libm_wrap_loaders(lua_State *L);

/* dlopen of libm with flags, a spare fd lent at EMFILE; NULL if it fails. */
static void *libm_open(int flags) {
  void *h = dlopen(LIBM_SO, flags);
  if (!h && orch__fd_spare_lend()) {
    h = dlopen(LIBM_SO, flags);
    orch__fd_spare_settle();
  }
  return h;
}

static void *libm_handle(void) {
  static void *handle;
  void *h = __atomic_load_n(&handle, __ATOMIC_ACQUIRE);
  if (h) return h;
  h = libm_open(RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    fprintf(stderr, "orch: cannot load %s: %s\n", LIBM_SO, dlerror());
    abort();
  }
  if (!__atomic_exchange_n(&handle, h, __ATOMIC_ACQ_REL)) orch__drop_libm_text();
  return h;
}

/* Maps libm now (the fd holder, before it holds its fds). */
void orch__libm_load(void) { (void)libm_handle(); }

static void *libm_function(const char *name) {
  void *f = dlsym(libm_handle(), name);
  if (!f) {
    fprintf(stderr, "orch: %s has no function %s\n", LIBM_SO, name);
    abort();
  }
  return f;
}

#define LIBM_1(name)                                                        \
  double name(double x);                                                    \
  double name(double x) {                                                   \
    static double (*fn)(double);                                            \
    double (*f)(double) = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);           \
    if (!f) {                                                               \
      void *p = libm_function(#name);                                       \
      memcpy(&f, &p, sizeof f);                                             \
      __atomic_store_n(&fn, f, __ATOMIC_RELEASE);                           \
    }                                                                       \
    return f(x);                                                            \
  }

#define LIBM_2(name)                                                        \
  double name(double x, double y);                                          \
  double name(double x, double y) {                                         \
    static double (*fn)(double, double);                                    \
    double (*f)(double, double) = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);   \
    if (!f) {                                                               \
      void *p = libm_function(#name);                                       \
      memcpy(&f, &p, sizeof f);                                             \
      __atomic_store_n(&fn, f, __ATOMIC_RELEASE);                           \
    }                                                                       \
    return f(x, y);                                                         \
  }

/* What Lua (lvm.c, lmathlib.c) and orch call (ceil: where the compiler
 * does not inline it, as in the sanitizer build): the link fails on a
 * missing one. */
LIBM_1(acos) LIBM_1(asin) LIBM_1(ceil) LIBM_1(cos) LIBM_1(cosh) LIBM_1(exp) LIBM_1(floor) LIBM_1(log)
LIBM_1(log10) LIBM_1(log2) LIBM_1(sin) LIBM_1(sinh) LIBM_1(sqrt) LIBM_1(tan) LIBM_1(tanh)
LIBM_2(atan2) LIBM_2(fmod) LIBM_2(pow)

/* ---------------------------------------------------------------- C modules */

/* libm in the global scope (once): 1 if it is. */
static int libm_global(void) {
  static int done;
  if (done) return 1;
  if (!libm_open(RTLD_NOW | RTLD_GLOBAL)) return 0;
  done = 1;
  return 1;
}

/* A C searcher (upvalue 1: Lua's own): a library that fails to load (it
 * raises "error loading module") is searched for again with libm global. */
static int searcher_retry(lua_State *L) {
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  for (int i = 1; i <= n; i++) lua_pushvalue(L, i);
  if (lua_pcall(L, n, LUA_MULTRET, 0) == LUA_OK) return lua_gettop(L) - n;
  if (!libm_global()) return lua_error(L);
  lua_settop(L, n);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, n, LUA_MULTRET);
  return lua_gettop(L);
}

/* package.loadlib (upvalue 1: Lua's own): nil, message, "open" (the
 * library did not load) is tried again with libm global. */
static int loadlib_retry(lua_State *L) {
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  for (int i = 1; i <= n; i++) lua_pushvalue(L, i);
  lua_call(L, n, LUA_MULTRET);
  int r = lua_gettop(L) - n;
  if (r < 3 || !lua_isnil(L, n + 1) || !lua_isstring(L, n + 3) ||
      strcmp(lua_tostring(L, n + 3), "open") != 0 || !libm_global())
    return r;
  lua_settop(L, n);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, n, LUA_MULTRET);
  return lua_gettop(L);
}

/* Wraps package.loadlib and Lua's two C searchers, the last two entries of
 * package.searchers (Lua 5.4's preload, Lua, C, Croot, with orch's second:
 * src/searcher.c), of a state made by orch_new. */
void orch__libm_wrap_loaders(lua_State *L) {
  if (lua_getglobal(L, "package") != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  if (lua_getfield(L, -1, "loadlib") == LUA_TFUNCTION) {
    lua_pushcclosure(L, loadlib_retry, 1);
    lua_setfield(L, -2, "loadlib");
  } else {
    lua_pop(L, 1);
  }
  if (lua_getfield(L, -1, "searchers") == LUA_TTABLE && luaL_len(L, -1) == 5) {
    for (int i = 4; i <= 5; i++) {
      lua_rawgeti(L, -1, i);
      lua_pushcclosure(L, searcher_retry, 1);
      lua_rawseti(L, -2, i);
    }
  }
  lua_pop(L, 2);
}
