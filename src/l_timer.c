/*
 * l_timer.c: orch.timer.after / orch.timer.every.
 *
 * A timer is a malloc'ed uv_timer_t owned by an orch.Timer userdata. While
 * armed, the userdata and the callback are anchored in the registry (so a
 * timer the script dropped still fires); :stop() or the last firing of an
 * `after` timer unanchors them. The handle memory is freed in its close
 * callback, started from __gc. Each firing runs the callback as a new task.
 */
#include <stdlib.h>

#include "runtime.h"
#include "util.h"

#define TIMER_MT "orch.Timer"

typedef struct {
  uv_timer_t h;
  lua_State *L;       /* the runtime's main thread */
  int self_ref;       /* anchors the userdata while armed */
  int fn_ref;
  int repeat;
  double seconds;
} otimer;

static otimer *check_timer(lua_State *L, int idx) {
  otimer **p = luaL_checkudata(L, idx, TIMER_MT);
  if (!*p) orch__closed_error(L, TIMER_MT);
  return *p;
}

static void disarm(otimer *t) {
  uv_timer_stop(&t->h);
  luaL_unref(t->L, LUA_REGISTRYINDEX, t->self_ref);
  luaL_unref(t->L, LUA_REGISTRYINDEX, t->fn_ref);
  t->self_ref = t->fn_ref = LUA_NOREF;
}

static void fire(uv_timer_t *h) {
  otimer *t = h->data;
  lua_State *L = t->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->fn_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->self_ref);   /* the timer is fn's argument */
  if (!t->repeat) disarm(t);
  orch__spawn_task(L, 1);
  lua_pop(L, 1);
}

static uint64_t to_ms(double s) {
  double ms = s * 1000.0;
  if (ms > 9.0e15) ms = 9.0e15;
  return (uint64_t)(ms + 0.5);
}

static int timer_new(lua_State *L, int repeat) {
  double s = orch__checkseconds(L, 1);
  /* A repeating timer of 0 s would spin the loop. */
  if (repeat && s == 0) luaL_argerror(L, 1, "seconds must be > 0");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  orch_runtime *rt = orch__rt(L);
  otimer **p = lua_newuserdatauv(L, sizeof *p, 0);
  *p = NULL;
  luaL_setmetatable(L, TIMER_MT);
  otimer *t = calloc(1, sizeof *t);
  if (!t) return luaL_error(L, "orch.timer: out of memory");
  *p = t;
  t->L = orch__mainthread(rt);
  uv_timer_init(orch_loop(rt), &t->h);
  t->h.data = t;
  t->repeat = repeat;
  t->seconds = s;
  lua_pushvalue(L, 2);
  t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  t->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  uint64_t ms = to_ms(s);
  /* The loop's clock counts milliseconds: 1 ms is the floor. */
  if (repeat && ms == 0) ms = 1;
  uv_timer_start(&t->h, fire, ms, repeat ? ms : 0);
  return 1;
}

static int timer_after(lua_State *L) { return timer_new(L, 0); }
static int timer_every(lua_State *L) { return timer_new(L, 1); }

static int timer_stop(lua_State *L) {
  otimer *t = check_timer(L, 1);
  int was = uv_is_active((uv_handle_t *)&t->h);
  disarm(t);
  lua_pushboolean(L, was);
  return 1;
}

static int timer_active(lua_State *L) {
  otimer *t = check_timer(L, 1);
  lua_pushboolean(L, uv_is_active((uv_handle_t *)&t->h));
  return 1;
}

static void close_cb(uv_handle_t *h) { free(h->data); }

static int timer_gc(lua_State *L) {
  otimer **p = luaL_checkudata(L, 1, TIMER_MT);
  otimer *t = *p;
  if (!t) return 0;
  *p = NULL;
  /* Only reached when unanchored, or when the Lua state closes. */
  uv_timer_stop(&t->h);
  uv_close((uv_handle_t *)&t->h, close_cb);
  return 0;
}

static int timer_tostring(lua_State *L) {
  otimer **p = luaL_checkudata(L, 1, TIMER_MT);
  if (!*p) { lua_pushliteral(L, "orch.Timer: closed"); return 1; }
  lua_pushfstring(L, "orch.Timer: %s %f s %s", (*p)->repeat ? "every" : "after",
                  (*p)->seconds, uv_is_active((uv_handle_t *)&(*p)->h) ? "armed" : "stopped");
  return 1;
}

int orch__open_timer(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"stop", timer_stop}, {"active", timer_active}, {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", timer_gc}, {"__close", timer_stop}, {"__tostring", timer_tostring}, {NULL, NULL}
  };
  orch__newclass(L, TIMER_MT, methods, meta);
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {
    {"after", timer_after}, {"every", timer_every}, {NULL, NULL}
  };
  lua_newtable(L);
  luaL_newlib(L, fns);
  lua_setfield(L, -2, "timer");
  return 1;
}
