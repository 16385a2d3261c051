/*
 * l_timer.c: orch.timer.after / orch.timer.every.
 *
 * A timer is a malloc'ed uv_timer_t owned by an orch.Timer userdata. While
 * armed, the userdata and the callback are anchored in the registry (so a
 * timer the script dropped still fires); :stop() or the last firing of an
 * `after` timer unanchors them. The handle memory is freed in its close
 * callback, started from __gc. Each firing runs the callback in a task
 * (orch__callback). On the virtual clock (orch.clock) the timer is a virtual
 * one (vt) instead.
 *
 * orch.timer.setitimer/getitimer bind the process's interval timers
 * (setitimer(2)): ITIMER_REAL, and the CPU-time ones ITIMER_VIRTUAL (user
 * time) and ITIMER_PROF (user + system time). They only send a signal
 * (ALRM, VTALRM, PROF), which reaches Lua as any signal does: libuv's
 * handler writes to a pipe, and orch.signal.on handlers run on the loop.
 * Nothing here blocks.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/time.h>

#include "runtime.h"
#include "util.h"

#define TIMER_MT "orch.Timer"

typedef struct {
  uv_timer_t h;
  orch__vtimer vt;    /* armed instead of h on the virtual clock */
  int has_h;          /* h was initialised (a timer made on the real clock) */
  orch_runtime *rt;
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
  if (t->has_h) uv_timer_stop(&t->h);
  orch__vtimer_stop(t->rt, &t->vt);
  luaL_unref(t->L, LUA_REGISTRYINDEX, t->self_ref);
  luaL_unref(t->L, LUA_REGISTRYINDEX, t->fn_ref);
  t->self_ref = t->fn_ref = LUA_NOREF;
}

static int armed(otimer *t) {
  return (t->has_h && uv_is_active((uv_handle_t *)&t->h)) || t->vt.pos != 0;
}

static void fire_t(otimer *t);
static void fire(uv_timer_t *h) { fire_t(h->data); }
static void vfire(orch__vtimer *vt) {
  otimer *t = vt->data;
  /* Re-armed first, as libuv does with a repeating timer. */
  if (t->repeat) orch__vtimer_start(t->rt, &t->vt, t->seconds > 0.001 ? t->seconds : 0.001, vfire);
  fire_t(t);
}

static void fire_t(otimer *t) {
  lua_State *L = t->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->fn_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->self_ref);   /* the timer is fn's argument */
  if (!t->repeat) disarm(t);
  orch__callback(L, 1, NULL, 0);
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
  int ref = 1;
  if (!lua_isnoneornil(L, 3)) {
    static const char *const opts[] = { "ref", NULL };
    orch__check_options(L, 3, opts);
    ref = orch__opt_boolean(L, 3, "ref", 1);
  }
  orch__check_nargs(L, 3);
  lua_settop(L, 2);
  orch_runtime *rt = orch__rt(L);
  otimer **p = lua_newuserdatauv(L, sizeof *p, 0);
  *p = NULL;
  luaL_setmetatable(L, TIMER_MT);
  otimer *t = calloc(1, sizeof *t);
  if (!t) return luaL_error(L, "orch.timer: out of memory");
  *p = t;
  t->L = orch__mainthread(rt);
  t->rt = rt;
  /* A timer made on the virtual clock stays on it: no libuv handle. */
  if (!orch__virtual(rt)) {
    uv_timer_init(orch_loop(rt), &t->h);
    t->has_h = 1;
  }
  t->h.data = t;
  t->vt.data = t;
  /* ref = false: an armed timer does not keep orch running (a keep-alive
   * ping, say), as luv's handle:unref(). A virtual timer keeps a simulated
   * run going either way (its horizon bounds it). */
  if (!ref && t->has_h) uv_unref((uv_handle_t *)&t->h);
  t->repeat = repeat;
  t->seconds = s;
  lua_pushvalue(L, 2);
  t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  t->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  uint64_t ms = to_ms(s);
  /* The loop's clock counts milliseconds: 1 ms is the floor. */
  if (repeat && ms == 0) ms = 1;
  if (!t->has_h) orch__vtimer_start(rt, &t->vt, repeat ? (double)ms / 1000.0 : s, vfire);
  else if (repeat) orch__timer_start(&t->h, fire, ms, ms);
  else orch__timer_start_after(&t->h, fire, s, 0);
  return 1;
}

static int timer_after(lua_State *L) { return timer_new(L, 0); }
static int timer_every(lua_State *L) { return timer_new(L, 1); }

static int timer_stop(lua_State *L) {
  otimer *t = check_timer(L, 1);
  int was = armed(t);
  disarm(t);
  lua_pushboolean(L, was);
  return 1;
}

static int timer_active(lua_State *L) {
  otimer *t = check_timer(L, 1);
  lua_pushboolean(L, armed(t));
  return 1;
}

static void close_cb(uv_handle_t *h) { free(h->data); }

static int timer_gc(lua_State *L) {
  otimer **p = luaL_checkudata(L, 1, TIMER_MT);
  otimer *t = *p;
  if (!t) return 0;
  *p = NULL;
  /* Only reached when unanchored, or when the Lua state closes. */
  orch__vtimer_stop(t->rt, &t->vt);
  if (!t->has_h) {
    free(t);
    return 0;
  }
  uv_timer_stop(&t->h);
  uv_close((uv_handle_t *)&t->h, close_cb);
  return 0;
}

static int timer_tostring(lua_State *L) {
  otimer **p = luaL_checkudata(L, 1, TIMER_MT);
  if (!*p) { lua_pushliteral(L, "orch.Timer: closed"); return 1; }
  lua_pushfstring(L, "orch.Timer: %s %f s %s", (*p)->repeat ? "every" : "after",
                  (*p)->seconds, armed(*p) ? "armed" : "stopped");
  return 1;
}

/* ------------------------------------------------------------ itimers */

static const char *const which_names[] = { "real", "virtual", "prof", NULL };
static const int which_of[] = { ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF };

static struct timeval to_tv(double s) {
  struct timeval tv;
  if (s > 1e12) s = 1e12;
  tv.tv_sec = (time_t)s;
  tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6 + 0.5);
  if (tv.tv_usec >= 1000000) tv.tv_sec++, tv.tv_usec -= 1000000;
  /* A positive value below the clock's resolution must not disarm. */
  if (s > 0 && tv.tv_sec == 0 && tv.tv_usec == 0) tv.tv_usec = 1;
  return tv;
}

static double from_tv(struct timeval tv) {
  return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* [-0,+2] value and interval of it, in seconds. */
static int push_itimer(lua_State *L, const struct itimerval *it) {
  lua_pushnumber(L, from_tv(it->it_value));
  lua_pushnumber(L, from_tv(it->it_interval));
  return 2;
}

/* orch.timer.setitimer(which, value [, interval]): arms the process's
 * interval timer `which` (value 0 disarms it); returns the old value and
 * interval. The signal it sends (ALRM, VTALRM, PROF) reaches the script
 * through orch.signal.on like any other. */
static int timer_setitimer(lua_State *L) {
  int which = which_of[luaL_checkoption(L, 1, NULL, which_names)];
  double value = orch__checkseconds(L, 2);
  double interval = orch__optseconds(L, 3, 0);
  orch__check_nargs(L, 3);
  struct itimerval it = { to_tv(interval), to_tv(value) }, old;
  if (value == 0) it.it_value.tv_sec = 0, it.it_value.tv_usec = 0;
  if (interval == 0) it.it_interval.tv_sec = 0, it.it_interval.tv_usec = 0;
  if (setitimer(which, &it, &old) < 0) return orch__fail(L, "timer.setitimer", errno);
  return push_itimer(L, &old);
}

static int timer_getitimer(lua_State *L) {
  int which = which_of[luaL_checkoption(L, 1, NULL, which_names)];
  orch__check_nargs(L, 1);
  struct itimerval it;
  if (getitimer(which, &it) < 0) return orch__fail(L, "timer.getitimer", errno);
  return push_itimer(L, &it);
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
    {"after", timer_after}, {"every", timer_every}, {"setitimer", timer_setitimer},
    {"getitimer", timer_getitimer}, {NULL, NULL}
  };
  lua_newtable(L);
  luaL_newlib(L, fns);
  lua_setfield(L, -2, "timer");
  return 1;
}
