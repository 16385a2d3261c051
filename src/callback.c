/*
 * callback.c: orch__callback (runtime.h), the one way a libuv event runs a
 * Lua function: a timer firing, a signal arriving, a process exiting
 * (on_exit, on_orphan_exit), a chunk reaching a stream's on_read.
 *
 * The function runs in a task, so that it may wait (sleep, write, spawn)
 * like any other code, and its errors are reported like any task's. Tasks
 * are "runners" shared by every callback: a runner that finished one waits
 * for the next (at most RUNNERS_IDLE wait), and an event that arrives hands
 * its function to an idle runner, or starts a new one. A thousand timers or
 * log pipes firing together are served one after the other by the same
 * coroutine; nothing is allocated per event but the arguments.
 *
 * A callback may have an end (orch__callback_end): the runner holds a
 * to-be-closed guard while the function runs, which keeps the owner (a
 * stream, say) alive and calls end->done when the function returns, raises,
 * or its runner is cancelled. on_read uses it to pause reading while its
 * function waits.
 *
 * The runner itself is Lua (lua/orch/callback.lua), made into a function
 * once per runtime when orch is loaded (orch.core.callback).
 *
 * Ownership: the runner function is a registry ref made once per runtime;
 * idle runners are remembered as their coroutines (they are waiting tasks,
 * anchored by the runtime). Nothing here blocks.
 */
#include <stdlib.h>

#include "runtime.h"
#include "util.h"

#define RUNNERS_IDLE 4          /* runners kept waiting for a callback */
#define GUARD_MT "orch.callback.guard"

typedef struct {
  int runner_ref;               /* the runner function */
  int nidle;                    /* runners waiting for a callback to run */
  lua_State *idle[RUNNERS_IDLE];
} cbstate;

static void close_hook(orch_runtime *rt, void *data) {
  *orch__slot(rt, ORCH__SLOT_CALLBACK) = NULL;
  free(data);
}

static void fork_hook(orch_runtime *rt, void *data) {
  cbstate *st = data;
  st->nidle = 0;                /* their tasks were dropped */
}

static cbstate *get_state(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  void **slot = orch__slot(rt, ORCH__SLOT_CALLBACK);
  if (!*slot) {
    cbstate *st = calloc(1, sizeof *st);
    if (!st) luaL_error(L, "orch: out of memory");
    st->runner_ref = LUA_NOREF;
    *slot = st;
    orch__on_close(rt, close_hook, st);
    orch__on_fork_child(rt, fork_hook, st);
  }
  return *slot;
}

/* __close of guard(end, owner): the function returned (err nil; a
 * cancelled runner closes the same way) or raised (err set). */
static int guard_close(lua_State *L) {
  const orch__callback_end *e = *(const orch__callback_end **)lua_touserdata(L, 1);
  int failed = !lua_isnil(L, 2);
  lua_getiuservalue(L, 1, 1);
  e->done(L, lua_gettop(L), failed);
  return 0;
}

static int runner_guard(lua_State *L) {
  const orch__callback_end **g = lua_newuserdatauv(L, sizeof *g, 1);
  *g = lua_touserdata(L, 1);
  luaL_setmetatable(L, GUARD_MT);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

static void runner_cancel(void *data) {
  lua_State *co = data;
  cbstate *st = get_state(co);
  for (int i = 0; i < st->nidle; i++) {
    if (st->idle[i] == co) {
      st->idle[i] = st->idle[--st->nidle];
      break;
    }
  }
}

static int runner_next_job(lua_State *L) {
  cbstate *st = get_state(L);
  if (st->nidle >= RUNNERS_IDLE) return 0;
  st->idle[st->nidle++] = L;
  return orch__await(L, -1, "callback", runner_cancel, L);
}

/* [-0,+0] Makes the runner function (once per runtime): the function
 * lua/orch/callback.lua returns, given guard(end, owner) (the to-be-closed
 * object that calls end->done) and next_job() (waits until a callback is
 * handed over and returns end, owner, fn, args..., or returns nothing when
 * enough runners wait already). May raise: called when orch is loaded. */
static void runner_init(lua_State *L, cbstate *st) {
  if (st->runner_ref != LUA_NOREF) return;
  if (luaL_newmetatable(L, GUARD_MT)) {
    lua_pushcfunction(L, guard_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "orch.callback");
  lua_call(L, 1, 1);
  if (!lua_isfunction(L, -1)) luaL_error(L, "orch.callback: function expected from the module");
  lua_pushcfunction(L, runner_guard);
  lua_pushcfunction(L, runner_next_job);
  lua_call(L, 2, 1);
  if (!lua_isfunction(L, -1)) luaL_error(L, "orch.callback: the module made no runner function");
  st->runner_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* [-0,+1] orch.core.callback (modules.c): an empty table. Opening it makes
 * the runner when orch is loaded, so that a missing or broken
 * lua/orch/callback.lua fails `require "orch"` instead of the first event's
 * callback (which runs outside any protected call). */
int orch__open_callback(lua_State *L) {
  runner_init(L, get_state(L));
  lua_newtable(L);
  return 1;
}

void orch__callback(lua_State *L, int nargs, const orch__callback_end *end, int now) {
  cbstate *st = get_state(L);
  runner_init(L, st);
  /* The job is end, owner, fn, args... (end and owner nil without end). */
  int below = -(nargs + 1);
  luaL_checkstack(L, 4, NULL);
  if (end) {
    lua_pushlightuserdata(L, (void *)end);
    lua_insert(L, below - 2);           /* below the owner */
  } else {
    lua_pushnil(L);
    lua_insert(L, below - 1);           /* below fn */
    lua_pushnil(L);
    lua_insert(L, below - 1);
  }
  int total = nargs + 3;
  lua_State *co = st->nidle ? st->idle[--st->nidle] : NULL;
  if (co) {
    lua_checkstack(co, total);
    lua_xmove(L, co, total);
    if (now) orch__wake(co, total); else orch__wake_later(co, total);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->runner_ref);
  lua_insert(L, -(total + 1));
  if (now) orch__spawn_task_now(L, total); else orch__spawn_task(L, total);
  lua_pop(L, 1);
}
