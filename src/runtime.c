/*
 * runtime.c: the runtime's life and the embedding API (include/orch.h).
 *
 * A runtime owns one uv_loop_t and is bound to one lua_State (its own, made
 * by orch_new, or a host's, when orch is loaded as a Lua C module). This file
 * creates and frees it, runs its loop, loads the code a host gives, keeps
 * the loop alive for held work, runs the close and fork hooks, and rebuilds
 * the loop in an orch.fork child. The parts live beside it: the scheduler
 * (task.c), the clock and virtual timers (clock.c), the time budget
 * (budget.c), the fd limit (fdlimit.c), the orch.core bindings (l_core.c),
 * the module searcher (searcher.c). Nothing here blocks.
 */
#include "runtime_int.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lualib.h>

#include "lalloc.h"
#include "modules.h"
#include "stream.h"
#include "util.h"

const char orch__rt_key = 'r';

/* ---------------------------------------------------------------- lookup */

orch_runtime *orch__rt(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &orch__rt_key);
  orch_runtime *rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!rt) luaL_error(L, "orch: the runtime is not loaded in this Lua state");
  return rt;
}

uv_loop_t *orch__loop(lua_State *L) { return orch__rt(L)->loop; }
lua_State *orch__mainthread(orch_runtime *rt) { return rt->L; }
void **orch__slot(orch_runtime *rt, int slot) { return &rt->slots[slot]; }

/* ---------------------------------------------------------------- errors */

static void default_error(orch_runtime *rt, const char *message, void *ud) {
  fprintf(stderr, "orch: %s\n", message);
  fflush(stderr);
}

void orch__report(orch_runtime *rt, const char *message) {
  rt->on_error(rt, message, rt->on_error_ud);
}

/* The end of an orch.fork child whose function did not return: orch.exit,
 * or nothing left to wait for. The child never returns into the code that
 * ran the parent's loop (a host's Lua, main.c); its task's to-be-closed
 * variables run, stdio is flushed, and _exit skips libuv's exit-time
 * threadpool teardown, which would join the parent's threads. */
static void fork_child_end(orch_runtime *rt) {
  int code = rt->exit_code;
  if (!rt->exiting) {
    fprintf(stderr, "orch: fork child %d: the function waits for something that can never happen "
                    "(no task is runnable and no handle is active)\n", (int)getpid());
    code = 1;
  }
  orch__cancel_leftovers(rt);
  fflush(NULL);
  _exit(code & 0xff);
}

int orch__run_loop(orch_runtime *rt) {
  rt->running = 1;
  int r = uv_run(rt->loop, UV_RUN_DEFAULT);
  rt->running = 0;
  if (rt->fork_child) fork_child_end(rt);
  return r;
}

/* ---------------------------------------------------------------- runtime life */

static void teardown(orch_runtime *rt);

static int sentinel_gc(lua_State *L) {
  orch_runtime **p = lua_touserdata(L, 1);
  if (*p && !(*p)->own_state) {
    teardown(*p);
    free(*p);
  }
  *p = NULL;
  return 0;
}

static void walk_close(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* A spare fd lent at EMFILE comes back at the turn after fds were freed,
 * whoever kept the fd it was lent to (fdlimit.c). The check runs only
 * while a spare is out: the spares are the process's, so whatever leaves
 * one out starts the check of every runtime (any of their loops may be the
 * one that runs next), and each stops its own once they are whole. */
static orch_runtime *spare_watchers;   /* the process's runtimes, by spares_next */

static void spares_cb(uv_check_t *h) {
  orch_runtime *rt = h->data;
  rt->spare_turns++;
  orch__fd_spare_settle();
  if (!orch__fd_spares_out()) uv_check_stop(h);
}

static void spares_wake(void) {
  for (orch_runtime *rt = spare_watchers; rt; rt = rt->spares_next)
    uv_check_start(&rt->spares, spares_cb);
}

unsigned long long orch__fd_spare_turns(orch_runtime *rt) { return rt->spare_turns; }

static void spares_forget(orch_runtime *rt) {
  for (orch_runtime **p = &spare_watchers; *p; p = &(*p)->spares_next)
    if (*p == rt) { *p = rt->spares_next; break; }
  uv_check_stop(&rt->spares);
}

static void teardown(orch_runtime *rt) {
  if (rt->torn_down) return;
  spares_forget(rt);
  orch__budget_forget(rt);
  for (int i = rt->nclose_hooks - 1; i >= 0; i--)
    rt->close_hooks[i].fn(rt, rt->close_hooks[i].data);
  rt->torn_down = 1;
  if (rt->vprep_active) uv_prepare_stop(&rt->vprep);
  rt->vprep_active = 0;
  /* Every module closed its own handles in __gc or its close hook; what is
   * left (ours, or leaked ones) is closed here so the loop can close. */
  uv_walk(rt->loop, walk_close, NULL);
  uv_run(rt->loop, UV_RUN_DEFAULT);
  uv_loop_close(rt->loop);
  free(rt->vh.v);
  rt->vh.v = NULL;
  rt->vh.n = rt->vh.cap = 0;
  orch__wheel_free(rt);
  free(rt->last_error);
  rt->last_error = NULL;
}

/* The empty pages of orch's Lua allocator beyond the few it keeps go back
 * to the kernel PURGE_MS after there first were more (src/lalloc.c): the
 * memory a burst of garbage left (the objects of 100,000 ended tasks) is
 * meanwhile there for the next burst, without a system call and a page
 * fault a page. The timer does not keep the loop alive. */
#define PURGE_MS 1000

static void purge_cb(uv_timer_t *h) {
  orch_runtime *rt = h->data;
  orch_lalloc *a = orch__lalloc_of(rt->L);
  if (a) orch__lalloc_purge(a);
}

/* From inside an allocation or a free: only the timer is started. */
static void lalloc_surplus(void *ud) {
  orch_runtime *rt = ud;
  if (rt->torn_down || uv_is_active((uv_handle_t *)&rt->purge)) return;
  uv_timer_start(&rt->purge, purge_cb, PURGE_MS, 0);
}

/* Binds a new runtime to L (or returns the existing one). */
static orch_runtime *runtime_attach(lua_State *L, int own_state) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &orch__rt_key);
  orch_runtime *rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (rt) return rt;
  /* The fds this process was given across exec, before the loop's and the
   * spares' are open (src/stream.c: the scan then looks at fewer). */
  orch__fd_note_inherited();
  /* libuv aborts the process when its first loop cannot make the pipe of
   * its signal handling (uv__signal_global_init, after the epoll fd): at
   * the fd limit (ulimit -n 4 or 5), fail here with errno EMFILE instead
   * of a SIGABRT. Three fds free, or none is taken. */
  int probe[3];
  if (pipe2(probe, O_CLOEXEC) < 0) return NULL;
  probe[2] = fcntl(probe[0], F_DUPFD_CLOEXEC, 0);
  int perr = errno;
  close(probe[0]);
  close(probe[1]);
  if (probe[2] < 0) { errno = perr; return NULL; }
  close(probe[2]);
  rt = calloc(1, sizeof *rt);
  if (!rt) return NULL;
  rt->loop = &rt->loop_storage;
  int r = uv_loop_init(rt->loop);
  if (r != 0) { free(rt); errno = -r; return NULL; }
  rt->L = L;
  rt->own_state = own_state;
  rt->on_error = default_error;
  rt->main_ref = LUA_NOREF;
  rt->budget_ns = BUDGET_DEFAULT_NS;
  uv_idle_init(rt->loop, &rt->idle);
  rt->idle.data = rt;
  uv_async_init(rt->loop, &rt->holder, NULL);
  uv_unref((uv_handle_t *)&rt->holder);
  uv_prepare_init(rt->loop, &rt->vprep);
  rt->vprep.data = rt;
  uv_timer_init(rt->loop, &rt->purge);
  uv_unref((uv_handle_t *)&rt->purge);
  rt->purge.data = rt;
  uv_timer_init(rt->loop, &rt->gc_tick);
  uv_unref((uv_handle_t *)&rt->gc_tick);
  rt->gc_tick.data = rt;
  uv_check_init(rt->loop, &rt->spares);
  uv_unref((uv_handle_t *)&rt->spares);
  rt->spares.data = rt;
  rt->spares_next = spare_watchers;
  spare_watchers = rt;
  orch__fd_spares_on_out(spares_wake);
  orch__fd_reserve_fill();   /* (its check starts if a spare is out) */
  orch__wheel_init(rt);
  lua_pushlightuserdata(L, rt);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &orch__rt_key);
  /* The sentinel frees a runtime bound to a host's state when it closes.
   * It is created first, so it is finalized after every orch object. */
  orch_runtime **p = lua_newuserdatauv(L, sizeof *p, 0);
  *p = rt;
  lua_newtable(L);
  lua_pushcfunction(L, sentinel_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &orch__rt_key + 1);
  *extra(L) = NULL;
  orch__install_searcher(L);
  orch__budget_init(L, rt);
  return rt;
}

void orch__hold(orch_runtime *rt, int delta) {
  int before = rt->holds;
  rt->holds += delta;
  if (rt->holds < 0) rt->holds = 0;
  if (rt->torn_down) return;
  if (before == 0 && rt->holds > 0) uv_ref((uv_handle_t *)&rt->holder);
  else if (before > 0 && rt->holds == 0) uv_unref((uv_handle_t *)&rt->holder);
}

void orch__on_close(orch_runtime *rt, orch__hook_fn fn, void *data) {
  if (rt->nclose_hooks < MAX_HOOKS) rt->close_hooks[rt->nclose_hooks++] = (hook){fn, data};
}

void orch__on_fork_child(orch_runtime *rt, orch__hook_fn fn, void *data) {
  if (rt->nfork_hooks < MAX_HOOKS) rt->fork_hooks[rt->nfork_hooks++] = (hook){fn, data};
}

static void fork_stop_handle(uv_handle_t *h, void *arg) {
  orch_runtime *rt = arg;
  if (h == (uv_handle_t *)&rt->idle || h == (uv_handle_t *)&rt->holder) return;
  if (h == (uv_handle_t *)&rt->vprep || h == (uv_handle_t *)&rt->spares) return;
  if (uv_is_closing(h)) return;
  switch (h->type) {
    case UV_TIMER: uv_timer_stop((uv_timer_t *)h); break;
    case UV_SIGNAL: uv_signal_stop((uv_signal_t *)h); break;
    case UV_IDLE: uv_idle_stop((uv_idle_t *)h); break;
    case UV_PREPARE: uv_prepare_stop((uv_prepare_t *)h); break;
    case UV_CHECK: uv_check_stop((uv_check_t *)h); break;
    case UV_POLL: uv_poll_stop((uv_poll_t *)h); break;
    case UV_NAMED_PIPE: case UV_TCP: case UV_TTY:
      uv_read_stop((uv_stream_t *)h); break;
    default: break;
  }
}

/* A forked process must not run libuv's exit-time teardown: the threadpool
 * it would join belongs to the parent (those threads do not exist here, and
 * joining them crashes or spins). Whatever way this process calls exit(),
 * it flushes stdio and ends with _exit before the library destructors. */
#ifdef __GLIBC__
static void forked_exit(int status, void *arg) {
  (void)arg;
  fflush(NULL);
  _exit(status);
}
#endif

static void skip_uv_teardown_at_exit(void) {
#ifdef __GLIBC__
  static pid_t registered;
  if (registered == getpid()) return;
  registered = getpid();
  on_exit(forked_exit, NULL);
#endif
}

void orch__fork_child_exits(lua_State *L) {
  orch__rt(L)->fork_child = 1;
}

int orch__after_fork_child(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  skip_uv_teardown_at_exit();
  orch__task *self = orch__current(L);
  int r = uv_loop_fork(rt->loop);
  /* The child's code runs on inside the parent's resume: not on its clock.
   * The child's next resume starts a budget of its own. */
  rt->budget_start = 0;
  /* Abandon every other task: stop its wait (C only, no Lua runs) and
   * forget it. Their coroutines are garbage once unanchored. */
  orch__task *t = rt->all;
  while (t) {
    orch__task *next = t->all_next;
    if (t != self) {
      orch__cancel_fn cancel = t->cancel;
      t->cancel = NULL;
      orch__task_stop_timer(t);
      orch__queue_remove(t);
      if (cancel) cancel(t->cancel_data);
      t->status = T_CANCELLED;
      orch__all_remove(t);
      orch__task_unanchor(t);
      if (t->co && *extra(t->co) == t) *extra(t->co) = NULL;
      orch__task_gc_release(t);
    }
    t = next;
  }
  /* Tasks joined on self were abandoned above. */
  if (self) self->joiners = NULL;
  uv_walk(rt->loop, fork_stop_handle, rt);
  /* The parent's virtual timers are not the child's. */
  while (rt->vh.n > 0) orch__vtimer_stop(rt, rt->vh.v[0]);
  orch__wheel_reset(rt);
  rt->holds = 0;
  uv_unref((uv_handle_t *)&rt->holder);
  for (int i = 0; i < rt->nfork_hooks; i++) rt->fork_hooks[i].fn(rt, rt->fork_hooks[i].data);
  if (self) rt->main_task = self;
  return r;
}

/* ---------------------------------------------------------------- luaopen */

/* When orch is a Lua C module, lua_close() dlcloses it: a detached waiter
 * thread still returning, or a signal handler still installed, would then
 * run unmapped code. Pin the library for the life of the process. */
static void pin_library(void) {
  Dl_info info;
  if (dladdr((void *)&pin_library, &info) && info.dli_fname)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

/* The C modules open when first used, not all at once with the runtime: a
 * command that needs few of them (`orch ctl ping`: core, stream, sys) does
 * not pay for the others' opening (their classes, their state, the reaper's
 * set-up, the scan of inherited fds, callback.lua), about a third of a ping's
 * start-up (issue 15). A module opens once per state, with an empty stack,
 * when `require "orch.core.<name>"` or the first read of orch.core's field
 * <name> asks for it (lua/orch/init.lua opens the rest of `orch` at the
 * first key it does not hold). */
static int open_module(lua_State *L) {
  const orch__module *m = lua_touserdata(L, lua_upvalueindex(1));
  lua_settop(L, 0);
  lua_pushcfunction(L, m->open);
  lua_call(L, 0, 1);
  return 1;
}

/* orch.core's __index: core[name] is package.loaded["orch.core.<name>"],
 * its module opened first if needed; other keys are nil. */
static int core_index(lua_State *L) {
  const char *name = lua_tostring(L, 2);
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  for (const orch__module *m = orch__modules; m->name; m++) {
    if (!m->open || strcmp(m->name, name) != 0) continue;
    lua_pushfstring(L, "orch.core.%s", m->name);
    const char *modname = lua_tostring(L, -1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, modname) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushlightuserdata(L, (void *)m);
      lua_pushcclosure(L, open_module, 1);
      lua_call(L, 0, 1);
      lua_pushvalue(L, -1);
      lua_setfield(L, -3, modname);             /* loaded["orch.core.name"] = M */
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, 1, m->name);                  /* core[name] = M */
    return 1;
  }
  return 0;
}

int luaopen_orch_core(lua_State *L) {
  orch_runtime *rt = runtime_attach(L, 0);
  if (!rt) return luaL_error(L, "orch: cannot create the runtime");
  /* (A runtime orch_new made is the executable's or liborch's, which
   * lua_close does not unload: dlopen would only open the executable's
   * file to find it is loaded, at every start of orch.) */
  if (!rt->own_state) pin_library();
  lua_newtable(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const orch__module *m = orch__modules; m->name; m++) {
    if (!m->open) continue;
    lua_pushfstring(L, "orch.core.%s", m->name);
    lua_pushlightuserdata(L, (void *)m);
    lua_pushcclosure(L, open_module, 1);
    lua_settable(L, -3);                          /* preload["orch.core.name"] = opener */
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, core_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}

/* ---------------------------------------------------------------- public API */

const char *orch_version_string(void) {
  static char buf[96];
  if (!buf[0])
    snprintf(buf, sizeof buf, "orch %s, %s, libuv %s", ORCH_VERSION, LUA_RELEASE, uv_version_string());
  return buf;
}

static int open_orch_global(lua_State *L) {
  luaL_requiref(L, "orch.core", luaopen_orch_core, 0);
  lua_pop(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "orch");
  lua_call(L, 1, 1);
  lua_setglobal(L, "orch");
  return 0;
}

orch_runtime *orch_new(void) {
  lua_State *L = orch__lalloc_newstate();
  if (!L) return NULL;
  luaL_openlibs(L);
  orch_runtime *rt = runtime_attach(L, 1);
  if (!rt) {
    int err = errno;
    orch__lalloc_close(L);
    errno = err;
    return NULL;
  }
  orch__lalloc_on_surplus(orch__lalloc_of(L), lalloc_surplus, rt);
  lua_pushcfunction(L, open_orch_global);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    rt->last_error = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    fprintf(stderr, "orch: cannot load the orch module: %s\n", rt->last_error);
    lua_pop(L, 1);
  }
  return rt;
}

void orch_free(orch_runtime *rt) {
  if (!rt) return;
  if (rt->own_state) {
    orch__cancel_leftovers(rt);
    orch__lalloc_close(rt->L);   /* __gc of every object: modules close their handles */
    teardown(rt);
    free(rt);
  }
}

lua_State *orch_lua(orch_runtime *rt) { return rt->L; }
uv_loop_t *orch_loop(orch_runtime *rt) { return rt->loop; }

void orch_set_args(orch_runtime *rt, const char *script, int argc, char **argv) {
  lua_State *L = rt->L;
  lua_createtable(L, argc, 1);
  lua_pushstring(L, script);
  lua_rawseti(L, -2, 0);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setglobal(L, "arg");
}

static int start_loaded(orch_runtime *rt, int nargs) {
  lua_State *L = rt->L;
  orch__task *t = orch__task_new(L, nargs);
  if (!rt->main_task) {
    rt->main_task = t;
    rt->main_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  } else {
    lua_pop(L, 1);
  }
  orch__queue_push(t, nargs);
  return ORCH_OK;
}

static int load_failed(orch_runtime *rt, int code) {
  free(rt->last_error);
  const char *m = lua_tostring(rt->L, -1);
  rt->last_error = strdup(m ? m : "(error object is not a string)");
  lua_pop(rt->L, 1);
  return code;
}

int orch_load_file(orch_runtime *rt, const char *path, int argc, char **argv) {
  lua_State *L = rt->L;
  int st = luaL_loadfile(L, path);
  if (st == LUA_ERRFILE) return load_failed(rt, ORCH_ERR_FILE);
  if (st != LUA_OK) return load_failed(rt, ORCH_ERR_RUN);
  luaL_checkstack(L, argc, "too many arguments");
  for (int i = 0; i < argc; i++) lua_pushstring(L, argv[i]);
  return start_loaded(rt, argc);
}

int orch_load_string(orch_runtime *rt, const char *code, const char *chunkname) {
  lua_State *L = rt->L;
  if (luaL_loadbuffer(L, code, strlen(code), chunkname ? chunkname : "=(string)") != LUA_OK)
    return load_failed(rt, ORCH_ERR_RUN);
  return start_loaded(rt, 0);
}

int orch_load_buffer(orch_runtime *rt, const char *code, size_t len, const char *chunkname,
                     int argc, char **argv) {
  lua_State *L = rt->L;
  if (luaL_loadbuffer(L, code, len, chunkname ? chunkname : "=(buffer)") != LUA_OK)
    return load_failed(rt, ORCH_ERR_RUN);
  luaL_checkstack(L, argc, "too many arguments");
  for (int i = 0; i < argc; i++) lua_pushstring(L, argv[i]);
  return start_loaded(rt, argc);
}

/* [-0,+1] require(module)[fn] in protected mode: pushes the function, or
 * returns nonzero with the error message pushed. */
static int push_module_function(lua_State *L, const char *module, const char *fn) {
  int top = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushstring(L, module);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) return 1;          /* the message is on top */
  if (lua_type(L, -1) == LUA_TTABLE && lua_getfield(L, -1, fn) == LUA_TFUNCTION) {
    lua_remove(L, -2);
    return 0;
  }
  lua_settop(L, top);
  lua_pushfstring(L, "module '%s' has no function '%s'", module, fn);
  return 1;
}

int orch_load_function(orch_runtime *rt, const char *module, const char *fn, int argc, char **argv) {
  lua_State *L = rt->L;
  if (push_module_function(L, module, fn)) return load_failed(rt, ORCH_ERR_RUN);
  luaL_checkstack(L, argc, "too many arguments");
  for (int i = 0; i < argc; i++) lua_pushstring(L, argv[i]);
  return start_loaded(rt, argc);
}

int orch_call(orch_runtime *rt, const char *module, const char *fn, int argc, char **argv,
              char **result) {
  lua_State *L = rt->L;
  int top = lua_gettop(L);
  if (result) *result = NULL;
  if (push_module_function(L, module, fn)) return load_failed(rt, ORCH_ERR_RUN);
  luaL_checkstack(L, argc, "too many arguments");
  for (int i = 0; i < argc; i++) lua_pushstring(L, argv[i]);
  if (lua_pcall(L, argc, 1, 0) != LUA_OK) return load_failed(rt, ORCH_ERR_RUN);
  if (result && lua_type(L, -1) == LUA_TSTRING) *result = strdup(lua_tostring(L, -1));
  lua_settop(L, top);
  return ORCH_OK;
}

static int exit_status(orch_runtime *rt) {
  if (rt->exiting) return rt->exit_code;
  if (rt->main_task && rt->main_task->status == T_FAILED) return 1;
  if (rt->main_task && rt->main_task->status != T_DONE) {
    if (!rt->last_error)
      rt->last_error = strdup("the main task waits for something that can never happen "
                              "(no task is runnable and no handle is active)");
    return 1;
  }
  return 0;
}

int orch_run(orch_runtime *rt) {
  if (rt->running) return 1;
  orch__run_loop(rt);
  return exit_status(rt);
}

int orch_step(orch_runtime *rt) {
  if (rt->running) return 1;
  rt->running = 1;
  int more = uv_run(rt->loop, UV_RUN_NOWAIT);
  rt->running = 0;
  return more && !rt->exiting;
}

void orch_stop(orch_runtime *rt) { uv_stop(rt->loop); }

int orch_exited(orch_runtime *rt, int *code) {
  if (code) *code = rt->exit_code;
  return rt->exiting;
}

const char *orch_last_error(orch_runtime *rt) { return rt->last_error; }

void orch_set_error_handler(orch_runtime *rt, orch_error_fn fn, void *ud) {
  rt->on_error = fn ? fn : default_error;
  rt->on_error_ud = ud;
}

