/*
 * budget.c: the Lua time budget and task CPU limits (one count hook).
 *
 * Time budget: Lua that never yields would hold the loop for good (no
 * signal, reap or control request is served meanwhile). While a task runs,
 * a count hook (every BUDGET_COUNT VM instructions) reads the monotonic clock;
 * past the budget it raises an error in the running code (catchable, so a
 * caller's pcall can report which callback it was); code that keeps running
 * after that for the grace period gets the error at every instruction, which
 * no pcall can absorb. The hook is set on a task's coroutine for the time of
 * one resume (task.c); coroutines created meanwhile inherit it.
 *
 * CPU limit (task:set_cpu_limit): a task with a limit has the thread's CPU
 * clock read at each resume and yield, and the same count hook raises in it
 * at every check once the CPU time it used passes the limit. Tasks without
 * one pay nothing.
 */
#include "runtime_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "util.h"

/* ---------------------------------------------------------------- time budget */

static uint64_t budget_grace(const orch_runtime *rt) {
  uint64_t g = rt->budget_ns / 10;
  if (g < 10000000ULL) g = 10000000ULL;
  if (g > 1000000000ULL) g = 1000000000ULL;
  return g;
}

uint64_t orch__thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* The CPU time task t used so far (it may be running). */
uint64_t orch__task_cpu_ns(const orch__task *t) {
  if (t->rt->current == t && t->cpu_limit_ns) return t->cpu_ns + (orch__thread_cpu_ns() - t->cpu_mark);
  return t->cpu_ns;
}

/* The count hook: a no-op unless the running callback is over its budget
 * (or its task over its CPU limit). */
void orch__budget_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &orch__rt_key);
  orch_runtime *rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  orch__task *cur = rt ? rt->current : NULL;
  if (cur && cur->cpu_limit_ns && orch__task_cpu_ns(cur) > cur->cpu_limit_ns) {
    luaL_where(L, 0);
    lua_pushfstring(L, "orch: task used more than %f s of CPU time (its CPU limit)",
                    (double)cur->cpu_limit_ns / 1e9);
    lua_concat(L, 2);
    lua_error(L);
  }
  /* A coroutine left with the every-instruction hook by an earlier
   * interruption goes back to the cheap one. */
  if (lua_gethookcount(L) == 1 && !(rt && rt->budget_start && rt->budget_trip))
    lua_sethook(L, orch__budget_hook, LUA_MASKCOUNT, BUDGET_COUNT);
  if (!rt || !rt->budget_ns || !rt->budget_start) return;
  uint64_t now = orch__mono_ns();
  if (!rt->budget_trip) {
    if (now - rt->budget_start < rt->budget_ns) return;
    rt->budget_trip = now;
  } else if (now - rt->budget_trip < budget_grace(rt)) {
    return;
  } else {
    lua_sethook(L, orch__budget_hook, LUA_MASKCOUNT, 1);
  }
  lua_Debug d;
  const char *what = "Lua code";
  char desc[160];
  if (lua_getstack(L, 0, &d) && lua_getinfo(L, "nS", &d)) {
    if (d.what && strcmp(d.what, "main") == 0)
      snprintf(desc, sizeof desc, "the main chunk of %s", d.short_src);
    else if (d.name)
      snprintf(desc, sizeof desc, "%s '%s' (%s:%d)", d.namewhat, d.name, d.short_src, d.linedefined);
    else
      snprintf(desc, sizeof desc, "function <%s:%d>", d.short_src, d.linedefined);
    what = desc;
  }
  luaL_where(L, 0);
  lua_pushfstring(L, "orch: %s ran for more than %f s without yielding (Lua time budget)",
                  what, (double)rt->budget_ns / 1e9);
  lua_concat(L, 2);
  lua_error(L);
}

void orch_set_budget(orch_runtime *rt, double seconds) {
  if (!(seconds > 0)) rt->budget_ns = 0;
  else if (seconds > 1e9) rt->budget_ns = (uint64_t)1e18;
  else rt->budget_ns = (uint64_t)(seconds * 1e9);
}

double orch_get_budget(orch_runtime *rt) { return (double)rt->budget_ns / 1e9; }
