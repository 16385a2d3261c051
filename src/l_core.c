/*
 * l_core.c: the orch.core module: orch.task, orch.sleep, orch.now/time,
 * orch.clock, orch.exit, orch.run, orch.set_budget, and the orch.Task and
 * orch.Cond objects. The mechanism behind them is the scheduler (task.c),
 * the clock (clock.c) and the budget (budget.c). Nothing here blocks: a
 * waiting call yields its task.
 */
#include "runtime_int.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char *const task_status_names[] = {
  "ready", "running", "waiting", "done", "failed", "cancelled"
};

/* orch.set_budget([seconds]): 0 or false turns it off; returns the old
 * one (none given: the budget, unchanged). */
static int core_set_budget(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  double s = 0;
  if (lua_isnoneornil(L, 1)) {
    if (lua_gettop(L) > 1) luaL_argerror(L, 2, "no value expected");
    lua_pushnumber(L, orch_get_budget(rt));
    return 1;
  }
  if (lua_type(L, 1) == LUA_TBOOLEAN && !lua_toboolean(L, 1)) s = 0;
  else {
    s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0 && s < HUGE_VAL, 1, "seconds >= 0 expected (0 or false: no budget)");
  }
  lua_pushnumber(L, orch_get_budget(rt));
  orch_set_budget(rt, s);
  return 1;
}

/* A task's struct is its userdata, which has no finalizer: nothing outside
 * the userdata points into a finished task (task.c), so the collector frees
 * a finished task in one cycle, and a task object is usable as long as it
 * is reachable. */
static orch__task *check_task_ud(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, TASK_MT);
}

/* ---------------------------------------------------------------- Task methods */

/* task:set_cpu_limit(seconds): 0 or false removes the limit. Counting
 * starts with the first limit; returns the old limit. */
static int task_set_cpu_limit(lua_State *L) {
  orch__task *t = check_task_ud(L, 1);
  double s = 0;
  if (!(lua_type(L, 2) == LUA_TBOOLEAN && !lua_toboolean(L, 2))) {
    s = luaL_checknumber(L, 2);
    luaL_argcheck(L, s >= 0 && s < 1e9, 2, "seconds >= 0 expected (0 or false: no limit)");
  }
  if (lua_gettop(L) > 2) luaL_argerror(L, 3, "no value expected");
  lua_pushnumber(L, (double)t->cpu_limit_ns / 1e9);
  uint64_t ns = (uint64_t)(s * 1e9);
  if (s > 0 && ns == 0) ns = 1;
  if (t->rt->current == t) {
    /* Running: account what it used so far under the old setting. */
    if (t->cpu_limit_ns) t->cpu_ns += orch__thread_cpu_ns() - t->rt->task_cpu_mark;
    t->rt->task_cpu_mark = orch__thread_cpu_ns();
    if (ns && !t->cpu_limit_ns) lua_sethook(t->co, orch__budget_hook, LUA_MASKCOUNT, BUDGET_COUNT);
  }
  t->cpu_limit_ns = ns;
  return 1;
}

/* task:set_budget(seconds): the task's own Lua time budget (0 or false:
 * none; nil: the runtime's again). Returns the old one (nil: it followed
 * the runtime's). */
static int task_set_budget(lua_State *L) {
  orch__task *t = check_task_ud(L, 1);
  double s = -1;
  if (lua_type(L, 2) == LUA_TBOOLEAN && !lua_toboolean(L, 2)) s = 0;
  else if (!lua_isnoneornil(L, 2)) {
    s = luaL_checknumber(L, 2);
    luaL_argcheck(L, s >= 0 && s < HUGE_VAL, 2, "seconds >= 0 expected (0 or false: no budget, nil: orch's)");
  }
  if (lua_gettop(L) > 2) luaL_argerror(L, 3, "no value expected");
  if (!t->budget_us) lua_pushnil(L);
  else lua_pushnumber(L, (double)orch__task_budget_ns(t) / 1e9);
  orch__task_set_budget(t, s);
  return 1;
}

/* task:cpu_time(): seconds of CPU the task used while it had a limit. */
static int task_cpu_time(lua_State *L) {
  orch__task *t = check_task_ud(L, 1);
  lua_pushnumber(L, (double)orch__task_cpu_ns(t) / 1e9);
  return 1;
}

static int task_status(lua_State *L) {
  orch__task *t = check_task_ud(L, 1);
  lua_pushstring(L, task_status_names[t->status]);
  return 1;
}

/* Pushes the results of a finished task (its values, or raises its error). */
static int join_result(lua_State *L, orch__task *t, int ud) {
  if (t->status == T_DONE) {
    if (t->nres == 0) return 0;       /* its coroutine may run another task */
    lua_getiuservalue(L, ud, UVAL_CO);
    lua_State *co = lua_tothread(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, t->nres + 1, "too many results");
    for (int i = 1; i <= t->nres; i++) lua_pushvalue(co, i);
    lua_xmove(co, L, t->nres);
    return t->nres;
  }
  if (t->status == T_FAILED) {
    lua_getiuservalue(L, ud, UVAL_CO);    /* holds error, traceback */
    lua_State *co = lua_tothread(L, -1);
    lua_pop(L, 1);
    lua_pushvalue(co, 1);
    lua_xmove(co, L, 1);
    return lua_error(L);
  }
  return orch__failf(L, "ECANCELED", "join: the task was cancelled");
}


/* Woken with values (a timeout: nil, msg, ETIMEDOUT) or with none (the
 * joined task ended: its results). The joined task is argument 1. */
static int join_k(lua_State *L, int status, lua_KContext ctx) {
  int woke = orch__await_k(L, status, ctx);
  if (woke > 0) return woke;
  return join_result(L, check_task_ud(L, 1), 1);
}

static int task_join(lua_State *L) {
  orch__task *t = check_task_ud(L, 1);
  double timeout = orch__optseconds(L, 2, -1);
  lua_settop(L, 1);
  orch__task *self = orch__current(L);
  if (!self) return luaL_error(L, "join: must be called from a task");
  if (self == t) return luaL_error(L, "join: a task cannot join itself");
  if (t->status == T_DONE || t->status == T_FAILED || t->status == T_CANCELLED)
    return join_result(L, t, 1);
  /* No cancel function: the end of the wait takes self off t's joiners. */
  orch__join_begin(self, t);
  orch__wait_begin(self, timeout, "join", NULL, NULL);
  return lua_yieldk(L, 0, (lua_KContext)self, join_k);
}

static int task_cancel_m(lua_State *L) {
  orch__task *t = check_task_ud(L, 1);
  if (t->status == T_DONE || t->status == T_FAILED || t->status == T_CANCELLED) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (t->status == T_RUNNING) {
    if (orch__current(L) == t) {
      /* Cancelling oneself: suspend here; the runtime closes the coroutine
       * (running its to-be-closed variables) as soon as the yield lands. */
      t->self_cancel = 1;
      return lua_yield(L, 0);
    }
    /* A task that resumed the caller (nested): cannot be closed now. */
    return luaL_error(L, "task:cancel(): the task is running");
  }
  orch__task_cancel(t);
  lua_pushboolean(L, 1);
  return 1;
}

static int task_traceback(lua_State *L) {
  orch__task *t = check_task_ud(L, 1);
  if (t->status != T_FAILED) {
    lua_pushnil(L);
    return 1;
  }
  lua_getiuservalue(L, 1, UVAL_CO);      /* holds error, traceback */
  lua_State *co = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_pushvalue(co, 2);
  lua_xmove(co, L, 1);
  return 1;
}

static int task_tostring(lua_State *L) {
  orch__task *t = check_task_ud(L, 1);
  lua_pushfstring(L, "orch.Task: %p %s", (void *)t, task_status_names[t->status]);
  return 1;
}

/* ---------------------------------------------------------------- orch.Cond */

/* A condition: tasks wait on it, others signal it. The waiting threads are
 * kept in the userdata's uservalue (a Lua sequence); an entry is live while
 * its task waits with cancel_data == the Cond (so a task that timed out or
 * was cancelled, and now waits on something else, is skipped). */
#define COND_MT "orch.Cond"

static int cond_new(lua_State *L) {
  lua_newuserdatauv(L, 1, 1);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, COND_MT);
  return 1;
}

static int cond_wait(lua_State *L) {
  void *c = luaL_checkudata(L, 1, COND_MT);
  double timeout = orch__optseconds(L, 2, -1);
  orch__check_task(L, "cond:wait");
  lua_getiuservalue(L, 1, 1);
  lua_pushthread(L);
  lua_rawseti(L, -2, luaL_len(L, -2) + 1);
  lua_pop(L, 1);
  /* No cancel function: a stale entry is skipped by cancel_data. */
  return orch__await(L, timeout, "cond.wait", NULL, c);
}

/* Wakes up to `max` waiters with the values at 2..top; returns the count. */
static int cond_wake(lua_State *L, int max) {
  void *c = luaL_checkudata(L, 1, COND_MT);
  int nvals = lua_gettop(L) - 1;
  lua_getiuservalue(L, 1, 1);
  int list = lua_gettop(L);
  lua_Integer n = luaL_len(L, list), i = 1;
  int woken = 0;
  for (; i <= n && woken < max; i++) {
    lua_rawgeti(L, list, i);
    lua_State *co = lua_tothread(L, -1);
    lua_pop(L, 1);
    orch__task *t = co ? *extra(co) : NULL;
    if (!t || t->co != co || t->status != T_WAITING || t->cancel_data != c) continue;
    t->cancel_data = NULL;
    if (nvals == 0) lua_pushboolean(co, 1);
    for (int v = 2; v <= nvals + 1; v++) {
      lua_pushvalue(L, v);
      lua_xmove(L, co, 1);
    }
    orch__wake(co, nvals == 0 ? 1 : nvals);
    woken++;
  }
  /* Drop the entries consumed or stale, in place (a broadcast on every
   * supervisor state change must not make garbage). A task woken right
   * away may have added entries: they are kept. */
  lua_Integer m = luaL_len(L, list), k = 1;
  for (lua_Integer j = i; j <= m; j++, k++) {
    lua_rawgeti(L, list, j);
    lua_rawseti(L, list, k);
  }
  for (; k <= m; k++) {
    lua_pushnil(L);
    lua_rawseti(L, list, k);
  }
  lua_pushinteger(L, woken);
  return 1;
}

static int cond_signal(lua_State *L) { return cond_wake(L, 1); }
static int cond_broadcast(lua_State *L) { return cond_wake(L, INT_MAX); }

static int cond_tostring(lua_State *L) {
  lua_pushfstring(L, "orch.Cond: %p", lua_touserdata(L, 1));
  return 1;
}

/* ---------------------------------------------------------------- core module */

static int core_task(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  orch__spawn_task(L, lua_gettop(L) - 1);
  return 1;
}

static int core_current(lua_State *L) {
  orch__task *t = orch__current(L);
  if (!t) { lua_pushnil(L); return 1; }
  return orch__push_task(L, t);
}

static int core_sleep(lua_State *L) {
  double s = orch__checkseconds(L, 1);
  orch__task *t = orch__current(L);
  if (!t) return luaL_error(L, "orch.sleep: must be called from a task");
  if (s == 0) {
    /* Yield to the other tasks: a plain yield is requeued by task_resume. */
    t->awaiting = 0;
    t->waking = 0;
    return lua_yieldk(L, 0, (lua_KContext)t, orch__await_k);
  }
  return orch__await(L, s, NULL, NULL, NULL);
}

static int core_now(lua_State *L) {
  lua_pushnumber(L, orch__now(orch__rt(L)));
  return 1;
}

static int core_time(lua_State *L) {
  lua_pushnumber(L, orch__time(orch__rt(L)));
  return 1;
}

/* orch.clock() -> "real" | "virtual"; orch.clock("virtual" [, {now=, time=,
 * horizon=}]) or orch.clock("real") switches, when no virtual timer is
 * armed (nil, msg, "EBUSY" otherwise); returns true. */
static int core_clock(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  if (lua_isnoneornil(L, 1)) {
    lua_pushstring(L, rt->vclock ? "virtual" : "real");
    return 1;
  }
  static const char *const modes[] = { "real", "virtual", NULL };
  int mode = luaL_checkoption(L, 1, NULL, modes);
  double now = 1000.0, wall = 1767225600.0, horizon = 1e8;   /* 2026-01-01T00:00:00Z */
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_argcheck(L, mode == 1, 2, "options are for the virtual clock");
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
      double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : -1;
      if (strcmp(k, "now") == 0) now = v;
      else if (strcmp(k, "time") == 0) wall = v;
      else if (strcmp(k, "horizon") == 0) horizon = v;
      else return luaL_argerror(L, 2, lua_pushfstring(L, "unknown option '%s'", k));
      if (!(v >= 0 && v < 9e9))
        return luaL_argerror(L, 2, lua_pushfstring(L, "option '%s': seconds from 0 to 9e9 expected", k));
      lua_pop(L, 1);
    }
  }
  if (rt->vh.n > 0)
    return orch__failf(L, "EBUSY", "clock: %d virtual timers are armed", (int)rt->vh.n);
  rt->vclock = mode == 1;
  rt->vnow = rt->vbase = (uint64_t)(now * 1e9);
  rt->vwall = wall;
  rt->vhorizon = rt->vnow + (uint64_t)(horizon * 1e9);
  rt->vpoked = 0;
  lua_pushboolean(L, 1);
  return 1;
}

static char exit_hook_key;

/* orch._exit_hook(fn | nil): internal, the dispatcher of lua/orch/init.lua. */
static int core_exit_hook(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &exit_hook_key);
  return 0;
}

static int core_exit(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  int code;
  if (lua_isboolean(L, 1)) code = lua_toboolean(L, 1) ? 0 : 1;
  else {
    lua_Integer n = luaL_optinteger(L, 1, 0);
    /* An exit status is 8 bits: 256 would silently become 0. */
    luaL_argcheck(L, n >= 0 && n <= 255, 1, "exit code 0 to 255 expected");
    code = (int)n;
  }
  orch__task *t = orch__current(L);
  if (!t && !rt->running) return luaL_error(L, "orch.exit: orch is not running");
  /* While a supervisor runs, the hook it set (orch._exit_hook, see
   * lua/orch/init.lua) stops its services first: "wait" means it exits with
   * `code` once they are stopped (the caller waits, until that exit cancels
   * it); "return" that the call comes from that stop itself, which goes on. */
  if (!rt->exiting && lua_rawgetp(L, LUA_REGISTRYINDEX, &exit_hook_key) == LUA_TFUNCTION) {
    lua_pushinteger(L, code);
    if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) {
      const char *r = lua_tostring(L, -1);
      if (strcmp(r, "return") == 0) return 0;
      if (strcmp(r, "wait") == 0) return t ? orch__await(L, -1, "orch.exit", NULL, NULL) : 0;
    }
  }
  rt->exiting = 1;
  rt->exit_code = code;
  uv_stop(rt->loop);
  if (t) {
    t->exit_yield = 1;
    t->awaiting = 1;
    return lua_yield(L, 0);
  }
  return 0;
}

/* orch.run(fn, ...) from a host Lua (busted, lua5.4): fn is the main task. */
static int core_run(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (rt->running || orch__current(L))
    return luaL_error(L, "orch.run: the loop is already running (start a task with orch.task)");
  int nargs = lua_gettop(L) - 1;
  orch__task *t = orch__task_new(L, nargs);
  int ud = lua_gettop(L);
  rt->main_task = t;
  orch__queue_push(t, nargs);
  rt->exiting = 0;
  rt->host_run = 1;
  orch__run_loop(rt);
  rt->host_run = 0;
  rt->main_task = NULL;
  if (rt->exiting) {
    int code = rt->exit_code;
    rt->exiting = 0;
    orch__cancel_leftovers(rt);
    lua_pushnil(L);
    lua_pushfstring(L, "orch.exit(%d)", code);
    lua_pushliteral(L, "EXIT");
    lua_pushinteger(L, code);
    return 4;
  }
  if (t->status == T_DONE || t->status == T_FAILED) {
    orch__cancel_leftovers(rt);
    return join_result(L, t, ud);
  }
  int cancelled = t->status == T_CANCELLED;
  orch__cancel_leftovers(rt);
  if (cancelled) return luaL_error(L, "orch.run: the main task was cancelled");
  return luaL_error(L, "orch.run: the main task waits for something that can never happen "
                       "(no task is runnable and no handle is active)");
}

static int core_version(lua_State *L) {
  lua_pushstring(L, orch_version_string());
  return 1;
}

static int task_new_index(lua_State *L) {
  return luaL_error(L, "orch.Task objects are read-only");
}

int orch__open_core(lua_State *L) {
  static const luaL_Reg task_methods[] = {
    {"join", task_join}, {"status", task_status}, {"cancel", task_cancel_m},
    {"traceback", task_traceback}, {"set_cpu_limit", task_set_cpu_limit},
    {"set_budget", task_set_budget},
    {"cpu_time", task_cpu_time}, {NULL, NULL}
  };
  static const luaL_Reg task_meta[] = {
    {"__tostring", task_tostring}, {"__newindex", task_new_index},
    {NULL, NULL}
  };
  orch__newclass(L, TASK_MT, task_methods, task_meta);
  lua_pop(L, 1);
  static const luaL_Reg cond_methods[] = {
    {"wait", cond_wait}, {"signal", cond_signal}, {"broadcast", cond_broadcast}, {NULL, NULL}
  };
  static const luaL_Reg cond_meta[] = { {"__tostring", cond_tostring}, {NULL, NULL} };
  orch__newclass(L, COND_MT, cond_methods, cond_meta);
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {
    {"task", core_task}, {"current", core_current}, {"sleep", core_sleep},
    {"now", core_now}, {"time", core_time}, {"exit", core_exit}, {"_exit_hook", core_exit_hook}, {"run", core_run},
    {"version", core_version}, {"cond", cond_new}, {"set_budget", core_set_budget},
    {"clock", core_clock}, {"_precompiled", orch__l_precompiled},
    {NULL, NULL}
  };
  luaL_newlib(L, fns);
  lua_pushstring(L, ORCH_VERSION);
  lua_setfield(L, -2, "VERSION");
  return 1;
}
