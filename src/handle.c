/*
 * handle.c: the lifetime of a handle-backed Lua object (see handle.h): the
 * per-runtime list of cores with its close and fork hooks, the userdata in
 * its closed state, and the methods every such class shares (close, fd,
 * set_timeout, __gc, __close, __tostring), written once here.
 *
 * Ownership: the list owns nothing; each core is freed by its class (in its
 * handle's close callback). The shared methods find the class in their
 * upvalue. Nothing here blocks.
 */
#include "handle.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

static void close_hook(orch_runtime *rt, void *data) {
  orch__hstate *st = data;
  /* Runs after every userdata was collected: no task waits any more and no
   * userdata pointer may be touched. Close what is still open (connects in
   * progress owning a stream core, mostly); the close callbacks run in the
   * runtime's final uv_run. */
  while (st->all) {
    orch__hobj *o = st->all;
    o->ud = NULL;                 /* collected: never written through */
    orch__hobj_unlink(o);
    if (o->cls->forget) o->cls->forget(o);
    orch__hobj_close(o);
  }
  *orch__slot(rt, ORCH__SLOT_STREAM) = NULL;
  free(st);
}

static void fork_hook(orch_runtime *rt, void *data) {
  orch__hstate *st = data;
  for (orch__hobj *o = st->all; o; o = o->next)
    if (o->cls->forked) o->cls->forked(o);
}

orch__hstate *orch__hstate_get(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  void **slot = orch__slot(rt, ORCH__SLOT_STREAM);
  if (!*slot) {
    orch__hstate *st = calloc(1, sizeof *st);
    if (!st) luaL_error(L, "orch: out of memory");
    st->rt = rt;
    st->loop = orch__loop(L);
    st->L = orch__mainthread(rt);
    *slot = st;
    orch__on_close(rt, close_hook, st);
    orch__on_fork_child(rt, fork_hook, st);
  }
  return *slot;
}

void orch__hobj_link(orch__hstate *st, orch__hobj *o, const orch__hclass *cls) {
  o->st = st;
  o->cls = cls;
  o->ud = NULL;
  o->closing = 0;
  o->timeout = -1;
  o->prev = NULL;
  o->next = st->all;
  if (st->all) st->all->prev = o;
  st->all = o;
}

void orch__hobj_unlink(orch__hobj *o) {
  if (o->ud) *o->ud = NULL;
  o->ud = NULL;
  orch__hstate *st = o->st;
  if (!st) return;
  if (o->prev) o->prev->next = o->next; else st->all = o->next;
  if (o->next) o->next->prev = o->prev;
  o->prev = o->next = NULL;
  o->st = NULL;
}

void *orch__hobj_push(lua_State *L, const orch__hclass *cls, size_t size) {
  void *ud = lua_newuserdatauv(L, size, 0);
  memset(ud, 0, size);
  luaL_setmetatable(L, cls->name);
  return ud;
}

void orch__hobj_attach(void *ud, orch__hobj *o) {
  *(void **)ud = o;
  o->ud = ud;
}

void orch__hobj_close(orch__hobj *o) {
  if (o->closing) return;
  o->closing = 1;
  o->cls->close(o);
}

void orch__hobj_close_ud(void *ud) {
  orch__hobj *o = *(orch__hobj **)ud;
  if (o) {
    *(orch__hobj **)ud = NULL;
    o->ud = NULL;
    orch__hobj_close(o);
  }
}

orch__hobj *orch__hobj_check(lua_State *L, int idx, const orch__hclass *cls) {
  orch__hobj **u = luaL_checkudata(L, idx, cls->name);
  if (!*u || (*u)->closing) orch__closed_error(L, cls->name);
  return *u;
}

void orch__wake_closed(lua_State *co, const char *op, const char *what) {
  orch__failf(co, "ECANCELED", "%s: %s closed", op, what);
  orch__wake(co, 3);
}

/* ---------------------------------------------------------------- methods */

#define CLASS(L) ((const orch__hclass *)lua_touserdata(L, lua_upvalueindex(1)))

/* :close(), __close and __gc. Idempotent. */
static int hobj_close_m(lua_State *L) {
  orch__hobj_close_ud(luaL_checkudata(L, 1, CLASS(L)->name));
  lua_pushboolean(L, 1);
  return 1;
}

static int hobj_fd_m(lua_State *L) {
  orch__hobj *o = orch__hobj_check(L, 1, CLASS(L));
  lua_pushinteger(L, o->cls->fd(o));
  return 1;
}

/* :set_timeout([seconds]): the timeout of every later wait on the object
 * (nil: none). Returns the object. */
static int hobj_set_timeout_m(lua_State *L) {
  orch__hobj *o = orch__hobj_check(L, 1, CLASS(L));
  double t = orch__optseconds(L, 2, -1);
  orch__check_nargs(L, 2);
  o->timeout = t;
  lua_settop(L, 1);
  return 1;
}

/* "orch.X: <description> fd=N open" or "orch.X: <description> closed". */
static int hobj_tostring_m(lua_State *L) {
  const orch__hclass *cls = CLASS(L);
  orch__hobj **u = luaL_checkudata(L, 1, cls->name);
  orch__hobj *o = *u && !(*u)->closing ? *u : NULL;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, cls->name);
  luaL_addstring(&b, ": ");
  if (cls->describe(L, o, u)) {
    luaL_addvalue(&b);
    luaL_addchar(&b, ' ');
  }
  if (o) {
    lua_pushfstring(L, "fd=%d open", cls->fd(o));
    luaL_addvalue(&b);
  } else {
    luaL_addstring(&b, "closed");
  }
  luaL_pushresult(&b);
  return 1;
}

void orch__hclass_new(lua_State *L, const orch__hclass *cls, const luaL_Reg *methods,
                      const luaL_Reg *meta) {
  static const luaL_Reg shared_methods[] = {
    {"close", hobj_close_m}, {"fd", hobj_fd_m}, {"set_timeout", hobj_set_timeout_m}, {NULL, NULL}
  };
  static const luaL_Reg shared_meta[] = {
    {"__gc", hobj_close_m}, {"__close", hobj_close_m}, {"__tostring", hobj_tostring_m}, {NULL, NULL}
  };
  orch__newclass(L, cls->name, methods, meta);
  lua_pushlightuserdata(L, (void *)cls);
  luaL_setfuncs(L, shared_meta, 1);
  lua_getfield(L, -1, "__index");
  lua_pushlightuserdata(L, (void *)cls);
  luaL_setfuncs(L, shared_methods, 1);
  lua_pop(L, 1);
}
