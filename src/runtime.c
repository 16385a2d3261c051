/*
 * runtime.c: the loop, the Lua state and the task scheduler.
 *
 * A runtime owns one uv_loop_t and is bound to one lua_State (its own, made
 * by orch_new, or a host's, when orch is loaded as a Lua C module). Every
 * piece of Lua code runs in a task: a coroutine whose extra space points to
 * its orch__task. Runnable tasks sit in a ready queue drained by a uv_idle_t
 * (active only while the queue is not empty, so an idle orch never wakes up).
 *
 * Ownership: a task's C struct is malloc'ed (its timeout timer must outlive
 * the userdata until uv_close completes); the orch.Task userdata points to
 * it; the userdata is anchored in the registry from creation until the task
 * finishes, so the GC never collects a live task. Nothing here blocks.
 *
 * Time budget: Lua that never yields would hold the loop for good (no
 * signal, reap or control request is served meanwhile). While a task runs,
 * a count hook (every BUDGET_COUNT VM instructions) reads the monotonic clock;
 * past the budget it raises an error in the running code (catchable, so a
 * caller's pcall can report which callback it was); code that keeps running
 * after that for the grace period gets the error at every instruction, which
 * no pcall can absorb. The hook is set on a task's coroutine for the time of
 * one resume; coroutines created meanwhile inherit it.
 *
 * CPU limit (task:set_cpu_limit): a task with a limit has the thread's CPU
 * clock read at each resume and yield, and the same count hook raises in it
 * at every check once the CPU time it used passes the limit. Tasks without
 * one pay nothing.
 *
 * Clock: orch.now, orch.time, orch.sleep, task timeouts and orch.timer read
 * the runtime's clock (orch__now, orch__time, orch__vtimer_*), the real one
 * or, after orch.clock("virtual"), a virtual one for simulation testing.
 * Virtual timers sit in a binary heap ordered by (due, arming order); a
 * uv_prepare_t, active while one is armed, jumps the clock to the earliest
 * deadline once nothing else can happen first: no task is ready, no real
 * work is in flight (a live child, a libuv request) and one poll that does
 * not block brought no I/O. Real I/O goes on meanwhile on real time.
 */
#include "runtime.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <lualib.h>

#include "modules.h"
#include "util.h"

#define TASK_MT "orch.Task"

enum { T_READY, T_RUNNING, T_WAITING, T_DONE, T_FAILED, T_CANCELLED };
static const char *const task_status_names[] = {
  "ready", "running", "waiting", "done", "failed", "cancelled"
};

/* Uservalue slots of an orch.Task userdata. */
enum { UVAL_CO = 1, UVAL_JOINERS, UVAL_ERROR, UVAL_TRACE, UVAL_NSLOTS = UVAL_TRACE };

struct orch__task {
  lua_State *co;
  orch_runtime *rt;
  int ref;                  /* registry ref to the userdata while unfinished */
  int status;
  int awaiting;             /* suspended inside orch__await */
  int sleeping;             /* the timer ends the wait with no values */
  int waking;               /* resumed by the runtime, not by coroutine.resume */
  int exit_yield;           /* suspended by orch.exit: never resumed */
  int self_cancel;          /* called task:cancel() on itself */
  orch__task *joining;      /* the task this one waits for in :join() */
  int wake_nargs;
  int nres;                 /* results left on co's stack when done */
  int gone;                 /* userdata collected: free when timer closes */
  orch__cancel_fn cancel;
  void *cancel_data;
  const char *timeout_op;
  uv_timer_t *timer;        /* lazily created; freed in its close callback */
  orch__vtimer vtimer;      /* the timeout on the virtual clock */
  orch__task *prev, *next;  /* ready queue (doubly linked) */
  int queued;
  int qnargs;
  orch__task *all_prev, *all_next;  /* every unfinished task */
  uint64_t cpu_limit_ns;    /* task:set_cpu_limit; 0: none */
  uint64_t cpu_ns;          /* CPU time used while a limit was set */
  uint64_t cpu_mark;        /* thread CPU clock at the current resume */
};

#define MAX_HOOKS 16
#define BUDGET_COUNT 1000           /* VM instructions between clock reads */
#define BUDGET_DEFAULT_NS 5000000000ULL
typedef struct { orch__hook_fn fn; void *data; } hook;

struct orch_runtime {
  uv_loop_t loop_storage;
  uv_loop_t *loop;
  lua_State *L;
  int own_state;
  uv_idle_t idle;
  int idle_active;
  uv_async_t holder;        /* ref'd while something holds the loop */
  int holds;
  orch__task *rq_head, *rq_tail;
  orch__task *all;          /* unfinished tasks */
  orch__task *current;
  orch__task *main_task;
  int main_ref;             /* registry ref to the main task userdata */
  int running;              /* inside uv_run */
  int exiting, exit_code;
  char *last_error;
  orch_error_fn on_error;
  void *on_error_ud;
  hook close_hooks[MAX_HOOKS];
  int nclose_hooks;
  hook fork_hooks[MAX_HOOKS];
  int nfork_hooks;
  void *slots[ORCH__SLOT_MAX];
  int torn_down;
  uint64_t budget_ns;       /* 0: no budget */
  uint64_t budget_start;    /* when the running callback was resumed; 0: none */
  uint64_t budget_trip;     /* when it was interrupted; 0: not yet */
  int fork_child;           /* orch.fork's child: its loop's end is the process's */
  /* The virtual clock (see the opening comment). */
  int vclock;               /* orch.clock("virtual") */
  uint64_t vnow;            /* its monotonic time, ns */
  double vwall;             /* orch.time() when vnow was vbase */
  uint64_t vbase;
  uint64_t vhorizon;        /* deadlines past it do not keep the loop alive */
  orch__vtimer **vheap;
  size_t vn, vcap;
  uint64_t vseq;
  uv_prepare_t vprep;
  int vprep_active;
  int vpoked;               /* a poll that does not block ran since... */
  uint64_t vmark;           /* ...this count of resumes */
  uint64_t resumes;
};

static const char RT_KEY = 'r';

/* ---------------------------------------------------------------- lookup */

orch_runtime *orch__rt(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &RT_KEY);
  orch_runtime *rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!rt) luaL_error(L, "orch: the runtime is not loaded in this Lua state");
  return rt;
}

uv_loop_t *orch__loop(lua_State *L) { return orch__rt(L)->loop; }
lua_State *orch__mainthread(orch_runtime *rt) { return rt->L; }
void **orch__slot(orch_runtime *rt, int slot) { return &rt->slots[slot]; }

static orch__task **extra(lua_State *co) { return (orch__task **)lua_getextraspace(co); }

orch__task *orch__current(lua_State *L) {
  orch__task *t = *extra(L);
  /* A coroutine created by coroutine.create inside a task copies the main
   * thread's extra space (NULL), so only real task threads match. */
  if (t && t->co == L && t->status == T_RUNNING) return t;
  return NULL;
}

void orch__check_task(lua_State *L, const char *fname) {
  if (!orch__current(L)) luaL_error(L, "%s: must be called from a task", fname);
}

/* ---------------------------------------------------------------- queue */

static void idle_cb(uv_idle_t *h);

static void queue_push(orch__task *t, int nargs) {
  orch_runtime *rt = t->rt;
  t->queued = 1;
  t->qnargs = nargs;
  t->status = T_READY;
  t->next = NULL;
  t->prev = rt->rq_tail;
  if (rt->rq_tail) rt->rq_tail->next = t; else rt->rq_head = t;
  rt->rq_tail = t;
  if (!rt->idle_active && !rt->torn_down) {
    uv_idle_start(&rt->idle, idle_cb);
    rt->idle_active = 1;
  }
}

static void queue_remove(orch__task *t) {
  orch_runtime *rt = t->rt;
  if (!t->queued) return;
  if (t->prev) t->prev->next = t->next; else rt->rq_head = t->next;
  if (t->next) t->next->prev = t->prev; else rt->rq_tail = t->prev;
  t->prev = t->next = NULL;
  t->queued = 0;
}

static void all_add(orch__task *t) {
  orch_runtime *rt = t->rt;
  t->all_prev = NULL;
  t->all_next = rt->all;
  if (rt->all) rt->all->all_prev = t;
  rt->all = t;
}

static void all_remove(orch__task *t) {
  orch_runtime *rt = t->rt;
  if (t->all_prev) t->all_prev->all_next = t->all_next;
  else if (rt->all == t) rt->all = t->all_next;
  if (t->all_next) t->all_next->all_prev = t->all_prev;
  t->all_prev = t->all_next = NULL;
}

/* ---------------------------------------------------------------- errors */

static void default_error(orch_runtime *rt, const char *message, void *ud) {
  fprintf(stderr, "orch: %s\n", message);
  fflush(stderr);
}

void orch__report(orch_runtime *rt, const char *message) {
  rt->on_error(rt, message, rt->on_error_ud);
}

/* [-0,+1] Pushes "message\nstack traceback:..." for the failed coroutine co,
 * whose error object is on top of co's stack (left there). Nothing is called
 * in co itself: a coroutine in error state may only be inspected. */
static void push_traceback(lua_State *L, lua_State *co) {
  lua_pushvalue(co, -1);
  lua_xmove(co, L, 1);
  if (lua_type(L, -1) != LUA_TSTRING) {
    if (lua_type(L, -1) == LUA_TNUMBER || luaL_getmetafield(L, -1, "__tostring") != LUA_TNIL) {
      if (lua_type(L, -1) != LUA_TNUMBER) lua_pop(L, 1);
      luaL_tolstring(L, -1, NULL);
    } else {
      lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, -1));
    }
    lua_remove(L, -2);
  }
  luaL_traceback(L, co, lua_tostring(L, -1), 0);
  lua_remove(L, -2);
}

/* ---------------------------------------------------------------- clock */

double orch__now(orch_runtime *rt) {
  if (rt->vclock) return (double)rt->vnow / 1e9;
  return (double)orch__mono_ns() / 1e9;
}

double orch__time(orch_runtime *rt) {
  if (rt->vclock) return rt->vwall + (double)(rt->vnow - rt->vbase) / 1e9;
  return orch__wall();
}

int orch__virtual(orch_runtime *rt) { return rt->vclock; }

static int vt_before(const orch__vtimer *a, const orch__vtimer *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void vheap_set(orch_runtime *rt, size_t i, orch__vtimer *t) {
  rt->vheap[i] = t;
  t->pos = i + 1;
}

static void vheap_up(orch_runtime *rt, size_t i) {
  orch__vtimer *t = rt->vheap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!vt_before(t, rt->vheap[parent])) break;
    vheap_set(rt, i, rt->vheap[parent]);
    i = parent;
  }
  vheap_set(rt, i, t);
}

static void vheap_down(orch_runtime *rt, size_t i) {
  orch__vtimer *t = rt->vheap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= rt->vn) break;
    if (c + 1 < rt->vn && vt_before(rt->vheap[c + 1], rt->vheap[c])) c++;
    if (!vt_before(rt->vheap[c], t)) break;
    vheap_set(rt, i, rt->vheap[c]);
    i = c;
  }
  vheap_set(rt, i, t);
}

static void vclock_prepare(uv_prepare_t *h);

static void vprep_update(orch_runtime *rt) {
  int want = rt->vn > 0 && rt->vheap[0]->due <= rt->vhorizon && !rt->torn_down;
  if (want && !rt->vprep_active) uv_prepare_start(&rt->vprep, vclock_prepare);
  else if (!want && rt->vprep_active) uv_prepare_stop(&rt->vprep);
  rt->vprep_active = want;
}

void orch__vtimer_stop(orch_runtime *rt, orch__vtimer *t) {
  if (!t->pos) return;
  size_t i = t->pos - 1;
  t->pos = 0;
  orch__vtimer *last = rt->vheap[--rt->vn];
  if (last != t) {
    vheap_set(rt, i, last);
    vheap_up(rt, i);
    vheap_down(rt, last->pos - 1);
  }
  vprep_update(rt);
}

void orch__vtimer_start(orch_runtime *rt, orch__vtimer *t, double seconds, orch__vtimer_cb cb) {
  orch__vtimer_stop(rt, t);
  if (rt->vn == rt->vcap) {
    size_t cap = rt->vcap ? rt->vcap * 2 : 64;
    orch__vtimer **heap = realloc(rt->vheap, cap * sizeof *heap);
    if (!heap) { fprintf(stderr, "orch: out of memory (virtual timers)\n"); abort(); }
    rt->vheap = heap;
    rt->vcap = cap;
  }
  double ns = ceil(seconds * 1e9);
  if (!(ns >= 0)) ns = 0;
  if (ns > 9.0e18 - (double)rt->vnow) ns = 9.0e18 - (double)rt->vnow;
  t->due = rt->vnow + (uint64_t)ns;
  t->seq = rt->vseq++;
  t->cb = cb;
  rt->vheap[rt->vn++] = t;
  vheap_up(rt, rt->vn - 1);
  vprep_update(rt);
}

/* Nothing can happen before the next virtual deadline: no task is ready,
 * no real work is in flight (a child not reaped, an IPC wait, a libuv
 * request such as a file write), orch is not exiting. */
static int vclock_idle(orch_runtime *rt) {
  return !rt->rq_head && !rt->current && !rt->exiting && rt->holds == 0 &&
         rt->loop->active_reqs.count == 0;
}

static void vclock_prepare(uv_prepare_t *h) {
  orch_runtime *rt = h->data;
  while (rt->vprep_active && vclock_idle(rt)) {
    if (!rt->vpoked || rt->vmark != rt->resumes) {
      /* First one poll that does not block (the idle handle makes the
       * loop's timeout 0): real I/O that is ready is served before. */
      rt->vpoked = 1;
      rt->vmark = rt->resumes;
      if (!rt->idle_active) {
        uv_idle_start(&rt->idle, idle_cb);
        rt->idle_active = 1;
      }
      return;
    }
    rt->vpoked = 0;
    /* Jump to the earliest deadline; run every timer due then, in the
     * order they were armed. */
    rt->vnow = rt->vheap[0]->due;
    while (rt->vn > 0 && rt->vheap[0]->due <= rt->vnow && !rt->exiting) {
      orch__vtimer *t = rt->vheap[0];
      orch__vtimer_stop(rt, t);
      t->cb(t);
    }
  }
}

/* ---------------------------------------------------------------- tasks */

static int push_task_ud(lua_State *L, orch__task *t) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  return 1;
}

static void timer_close_cb(uv_handle_t *h) {
  orch__task *t = h->data;
  free(h);
  if (t) {
    t->timer = NULL;
    if (t->gone) free(t);
  }
}

static void stop_timer(orch__task *t) {
  if (t->timer) uv_timer_stop(t->timer);
  orch__vtimer_stop(t->rt, &t->vtimer);
}

static void task_resume(orch__task *t, int nargs);
static void task_cancel(orch__task *t);

/* Wakes every task joined on t (status done/failed/cancelled). */
static void wake_joiners(lua_State *L, int ud_idx, orch__task *owner) {
  ud_idx = lua_absindex(L, ud_idx);
  if (lua_getiuservalue(L, ud_idx, UVAL_JOINERS) != LUA_TTABLE) { lua_pop(L, 1); return; }
  lua_Integer n = luaL_len(L, -1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lua_State *jco = lua_tothread(L, -1);
    lua_pop(L, 1);
    if (!jco) continue;
    orch__task *j = *extra(jco);
    if (!j || j->status != T_WAITING || j->joining != owner) continue;
    /* Queued, never resumed from here: the joiner's continuation reads the
     * result from the joined task. */
    j->joining = NULL;
    j->cancel = NULL;
    stop_timer(j);
    queue_push(j, 0);
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_setiuservalue(L, ud_idx, UVAL_JOINERS);
}

static int has_joiners(lua_State *L, int ud_idx) {
  int r = 0;
  if (lua_getiuservalue(L, ud_idx, UVAL_JOINERS) == LUA_TTABLE) r = luaL_len(L, -1) > 0;
  lua_pop(L, 1);
  return r;
}

/* The task ended (status already set): unanchor it and wake joiners. */
static void task_finish(orch__task *t) {
  orch_runtime *rt = t->rt;
  lua_State *L = rt->L;
  stop_timer(t);
  queue_remove(t);
  all_remove(t);
  push_task_ud(L, t);
  wake_joiners(L, -1, t);
  lua_pop(L, 1);
  luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
  t->ref = LUA_NOREF;
}

static void task_failed(orch__task *t) {
  orch_runtime *rt = t->rt;
  lua_State *L = rt->L;
  lua_State *co = t->co;
  t->status = T_FAILED;
  push_task_ud(L, t);
  int ud = lua_gettop(L);
  push_traceback(L, co);                 /* traceback text */
  lua_setiuservalue(L, ud, UVAL_TRACE);
  lua_xmove(co, L, 1);                   /* the error object */
  lua_setiuservalue(L, ud, UVAL_ERROR);
  int joined = has_joiners(L, ud);
  if (t == rt->main_task) {
    lua_getiuservalue(L, ud, UVAL_TRACE);
    free(rt->last_error);
    rt->last_error = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
  } else if (!joined) {
    lua_getiuservalue(L, ud, UVAL_TRACE);
    orch__report(rt, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  /* Close the coroutine's to-be-closed variables. */
  lua_resetthread(co);
  lua_settop(co, 0);
  task_finish(t);
  /* The run ends with the main task's error (exit 1 for orch run). */
  if (t == rt->main_task) uv_stop(rt->loop);
}

/* ---------------------------------------------------------------- time budget */

static uint64_t budget_grace(const orch_runtime *rt) {
  uint64_t g = rt->budget_ns / 10;
  if (g < 10000000ULL) g = 10000000ULL;
  if (g > 1000000000ULL) g = 1000000000ULL;
  return g;
}

static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* The CPU time task t used so far (it may be running). */
static uint64_t task_cpu_ns(const orch__task *t) {
  if (t->rt->current == t && t->cpu_limit_ns) return t->cpu_ns + (thread_cpu_ns() - t->cpu_mark);
  return t->cpu_ns;
}

/* The count hook: a no-op unless the running callback is over its budget
 * (or its task over its CPU limit). */
static void budget_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &RT_KEY);
  orch_runtime *rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  orch__task *cur = rt ? rt->current : NULL;
  if (cur && cur->cpu_limit_ns && task_cpu_ns(cur) > cur->cpu_limit_ns) {
    luaL_where(L, 0);
    lua_pushfstring(L, "orch: task used more than %f s of CPU time (its CPU limit)",
                    (double)cur->cpu_limit_ns / 1e9);
    lua_concat(L, 2);
    lua_error(L);
  }
  /* A coroutine left with the every-instruction hook by an earlier
   * interruption goes back to the cheap one. */
  if (lua_gethookcount(L) == 1 && !(rt && rt->budget_start && rt->budget_trip))
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, BUDGET_COUNT);
  if (!rt || !rt->budget_ns || !rt->budget_start) return;
  uint64_t now = orch__mono_ns();
  if (!rt->budget_trip) {
    if (now - rt->budget_start < rt->budget_ns) return;
    rt->budget_trip = now;
  } else if (now - rt->budget_trip < budget_grace(rt)) {
    return;
  } else {
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
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

/* ---------------------------------------------------------------- fd limit */

/* Spare fds, taken when the first runtime starts, given up so the control
 * socket can accept at EMFILE (src/listener.c). Process-wide: the fd limit is. */
#define FD_RESERVE 3
static int fd_reserve[FD_RESERVE] = { -1, -1, -1 };
static struct rlimit nofile_orig;
static int nofile_raised;

void orch__fd_reserve_fill(void) {
  for (int i = 0; i < FD_RESERVE; i++)
    if (fd_reserve[i] < 0 && (fd_reserve[i] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) return;
}

void orch__fd_reserve_release(void) {
  for (int i = 0; i < FD_RESERVE; i++)
    if (fd_reserve[i] >= 0) { close(fd_reserve[i]); fd_reserve[i] = -1; }
}

int orch__fd_reserve_held(void) {
  int n = 0;
  for (int i = 0; i < FD_RESERVE; i++) n += fd_reserve[i] >= 0;
  return n;
}

int orch_raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return -errno;
  if (!nofile_raised) nofile_orig = rl;
  if (rl.rlim_cur == rl.rlim_max) return 0;
  rlim_t want = rl.rlim_max;
  /* An unlimited hard limit is capped by fs.nr_open anyway. */
  if (want == RLIM_INFINITY || want > (1u << 20)) want = 1u << 20;
  if (want <= rl.rlim_cur) return 0;
  rl.rlim_cur = want;
  if (setrlimit(RLIMIT_NOFILE, &rl) < 0) return -errno;
  nofile_raised = 1;
  return 1;
}

/* In a child about to exec: the soft limit orch was started with (a
 * program may use select(2) with fds below FD_SETSIZE). Async-signal-safe. */
void orch__child_nofile(void) {
  if (nofile_raised) setrlimit(RLIMIT_NOFILE, &nofile_orig);
}

void orch_set_budget(orch_runtime *rt, double seconds) {
  if (!(seconds > 0)) rt->budget_ns = 0;
  else if (seconds > 1e9) rt->budget_ns = (uint64_t)1e18;
  else rt->budget_ns = (uint64_t)(seconds * 1e9);
}

double orch_get_budget(orch_runtime *rt) { return (double)rt->budget_ns / 1e9; }

/* orch.set_budget(seconds): 0 or false turns it off; returns the old one. */
static int core_set_budget(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  double s = 0;
  if (lua_type(L, 1) == LUA_TBOOLEAN && !lua_toboolean(L, 1)) s = 0;
  else {
    s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0 && s < HUGE_VAL, 1, "seconds >= 0 expected (0 or false: no budget)");
  }
  lua_pushnumber(L, orch_get_budget(rt));
  orch_set_budget(rt, s);
  return 1;
}

static void task_resume(orch__task *t, int nargs) {
  orch_runtime *rt = t->rt;
  orch__task *prev = rt->current;
  int nres = 0;
  rt->current = t;
  t->status = T_RUNNING;
  t->awaiting = 0;
  t->waking = 1;
  t->wake_nargs = nargs;
  rt->resumes++;
  /* The outermost resume starts the clock; a nested one runs on its time. */
  int armed = rt->budget_ns && !rt->budget_start;
  if (armed) {
    rt->budget_start = orch__mono_ns();
    rt->budget_trip = 0;
  }
  if (rt->budget_ns || t->cpu_limit_ns) lua_sethook(t->co, budget_hook, LUA_MASKCOUNT, BUDGET_COUNT);
  if (t->cpu_limit_ns) t->cpu_mark = thread_cpu_ns();
  int st = lua_resume(t->co, prev ? prev->co : NULL, nargs, &nres);
  if (t->cpu_limit_ns) t->cpu_ns += thread_cpu_ns() - t->cpu_mark;
  lua_sethook(t->co, NULL, 0, 0);
  if (armed) rt->budget_start = 0;
  rt->current = prev;
  if (st == LUA_YIELD) {
    lua_pop(t->co, nres);
    if (t->self_cancel || t->exit_yield || t->awaiting) {
      t->status = T_WAITING;
      if (t->self_cancel) task_cancel(t);
    } else {
      /* A bare coroutine.yield() in a task yields to the other tasks. */
      queue_push(t, 0);
    }
  } else if (st == LUA_OK) {
    t->status = T_DONE;
    t->nres = lua_gettop(t->co);
    task_finish(t);
  } else {
    task_failed(t);
  }
}

/* Runs t now when called from a libuv callback; queues it when a task is
 * running (Lua is never re-entered) or orch is exiting. */
static void run_or_queue(orch__task *t, int nargs) {
  if (t->rt->current || t->rt->exiting) queue_push(t, nargs);
  else task_resume(t, nargs);
}

/* The task waiting in co, its wait ended; NULL (the values popped) when
 * co does not wait. */
static orch__task *wake_begin(lua_State *co, int nargs) {
  orch__task *t = *extra(co);
  if (!t || t->co != co || t->status != T_WAITING || t->exit_yield) {
    lua_pop(co, nargs);
    return NULL;
  }
  stop_timer(t);
  t->cancel = NULL;
  t->cancel_data = NULL;
  t->joining = NULL;
  return t;
}

void orch__wake(lua_State *co, int nargs) {
  orch__task *t = wake_begin(co, nargs);
  if (t) run_or_queue(t, nargs);
}

void orch__wake_later(lua_State *co, int nargs) {
  orch__task *t = wake_begin(co, nargs);
  if (t) queue_push(t, nargs);
}

static void idle_cb(uv_idle_t *h) {
  orch_runtime *rt = h->data;
  /* Run the tasks queued so far; tasks they queue run next turn, so a task
   * looping on orch.sleep(0) lets I/O in between. */
  orch__task *last = rt->rq_tail;
  while (rt->rq_head && !rt->exiting) {
    orch__task *t = rt->rq_head;
    queue_remove(t);
    task_resume(t, t->qnargs);
    if (t == last) break;
  }
  if (!rt->rq_head && rt->idle_active) {
    uv_idle_stop(&rt->idle);
    rt->idle_active = 0;
  }
}

static int await_k(lua_State *L, int status, lua_KContext ctx) {
  orch__task *t = (orch__task *)ctx;
  if (!t->waking)
    return luaL_error(L, "orch: a waiting task was resumed by coroutine.resume");
  t->waking = 0;
  return t->wake_nargs;
}

static void timed_out(orch__task *t) {
  if (!t || t->status != T_WAITING) return;
  lua_State *co = t->co;
  if (t->sleeping) {
    t->sleeping = 0;
    orch__wake(co, 0);
    return;
  }
  orch__cancel_fn cancel = t->cancel;
  void *data = t->cancel_data;
  t->cancel = NULL;
  if (cancel) cancel(data);
  if (t->status != T_WAITING) return;   /* the cancel function woke it */
  lua_pushnil(co);
  lua_pushfstring(co, "%s: timed out", t->timeout_op ? t->timeout_op : "wait");
  lua_pushliteral(co, "ETIMEDOUT");
  orch__wake(co, 3);
}

static void timeout_cb(uv_timer_t *h) { timed_out(h->data); }

/* libuv counts a timer from the loop's clock, read once a turn: a task that
 * computed for a while (or runs in a fork child, whose loop clock is the
 * parent's at fork time) would have its wait cut short by that much. The
 * clock is read again first (one vDSO clock read). */
int orch__timer_start(uv_timer_t *h, uv_timer_cb cb, uint64_t ms, uint64_t repeat) {
  uv_update_time(h->loop);
  return uv_timer_start(h, cb, ms, repeat);
}
static void vtimeout_cb(orch__vtimer *vt) { timed_out(vt->data); }

static int start_timer(orch__task *t, double seconds) {
  if (t->rt->vclock) {
    t->vtimer.data = t;
    orch__vtimer_start(t->rt, &t->vtimer, seconds, vtimeout_cb);
    return 0;
  }
  if (!t->timer) {
    t->timer = malloc(sizeof *t->timer);
    if (!t->timer) return UV_ENOMEM;
    uv_timer_init(t->rt->loop, t->timer);
    t->timer->data = t;
  }
  double ms = ceil(seconds * 1000.0);
  if (ms > 9.0e15) ms = 9.0e15;
  return orch__timer_start(t->timer, timeout_cb, (uint64_t)ms, 0);
}

/* Marks t as suspended in a wait (the caller yields next) and starts its
 * timeout. Returns 0 or a libuv error from the timer. */
static int wait_begin(orch__task *t, double timeout, const char *op,
                      orch__cancel_fn cancel, void *data) {
  t->awaiting = 1;
  t->waking = 0;
  t->cancel = cancel;
  t->cancel_data = data;
  t->timeout_op = op;
  t->sleeping = (op == NULL);
  return timeout >= 0 ? start_timer(t, timeout) : 0;
}

int orch__await(lua_State *L, double timeout, const char *op,
                orch__cancel_fn cancel, void *data) {
  orch__task *t = orch__current(L);
  if (!t) return luaL_error(L, "%s: must be called from a task", op ? op : "orch.sleep");
  int r = wait_begin(t, timeout, op, cancel, data);
  if (r < 0) {
    t->awaiting = 0;
    if (cancel) cancel(data);
    return luaL_error(L, "orch: cannot start a timer: %s", uv_strerror(r));
  }
  return lua_yieldk(L, 0, (lua_KContext)t, await_k);
}

/* A task's userdata outlives its C struct once its finalizer has run (a
 * __gc called by hand, or a userdata resurrected by another finalizer):
 * using it then raises instead of touching freed memory. */
static orch__task *check_task_ud(lua_State *L, int idx) {
  orch__task **p = luaL_checkudata(L, idx, TASK_MT);
  if (!*p) luaL_error(L, "attempt to use a finalized " TASK_MT);
  return *p;
}

/* Creates a task for the function at -(nargs+1); pops fn and args, pushes
 * the task userdata. Does not queue it. */
static orch__task *task_new(lua_State *L, int nargs) {
  orch_runtime *rt = orch__rt(L);
  orch__task **box = lua_newuserdatauv(L, sizeof *box, UVAL_NSLOTS);
  *box = NULL;
  luaL_setmetatable(L, TASK_MT);
  orch__task *t = calloc(1, sizeof *t);
  if (!t) luaL_error(L, "orch.task: out of memory");
  *box = t;
  t->rt = rt;
  t->ref = LUA_NOREF;
  lua_State *co = lua_newthread(L);
  t->co = co;
  *extra(co) = t;
  lua_setiuservalue(L, -2, UVAL_CO);
  /* stack: fn args... ud  -> move fn and args into co */
  lua_insert(L, -(nargs + 2));          /* ud fn args... */
  lua_xmove(L, co, nargs + 1);
  lua_pushvalue(L, -1);
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  t->status = T_READY;
  all_add(t);
  return t;
}

void orch__spawn_task(lua_State *L, int nargs) {
  queue_push(task_new(L, nargs), nargs);
}

void orch__spawn_task_now(lua_State *L, int nargs) {
  run_or_queue(task_new(L, nargs), nargs);
}

/* Cancels a task that is not running: stops its wait, closes its
 * to-be-closed variables, wakes joiners. */
static void task_cancel(orch__task *t) {
  if (t->status == T_DONE || t->status == T_FAILED || t->status == T_CANCELLED) return;
  orch__cancel_fn cancel = t->cancel;
  void *data = t->cancel_data;
  t->cancel = NULL;
  stop_timer(t);
  queue_remove(t);
  t->status = T_CANCELLED;
  if (cancel) cancel(data);
  /* A coroutine that already died of an error (resumed by hand) has
   * nothing left to close; its error is not news. */
  int alive = lua_status(t->co) == LUA_YIELD || lua_status(t->co) == LUA_OK;
  int st = lua_resetthread(t->co);
  if (st != LUA_OK && alive) {
    const char *m = lua_tostring(t->co, -1);
    char buf[512];
    snprintf(buf, sizeof buf, "error while closing a cancelled task: %s", m ? m : "?");
    orch__report(t->rt, buf);
  }
  lua_settop(t->co, 0);
  task_finish(t);
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
    if (t->cpu_limit_ns) t->cpu_ns += thread_cpu_ns() - t->cpu_mark;
    t->cpu_mark = thread_cpu_ns();
    if (ns && !t->cpu_limit_ns) lua_sethook(t->co, budget_hook, LUA_MASKCOUNT, BUDGET_COUNT);
  }
  t->cpu_limit_ns = ns;
  return 1;
}

/* task:cpu_time(): seconds of CPU the task used while it had a limit. */
static int task_cpu_time(lua_State *L) {
  orch__task *t = check_task_ud(L, 1);
  lua_pushnumber(L, (double)task_cpu_ns(t) / 1e9);
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
    lua_getiuservalue(L, ud, UVAL_CO);
    lua_State *co = lua_tothread(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, t->nres + 1, "too many results");
    for (int i = 1; i <= t->nres; i++) lua_pushvalue(co, i);
    lua_xmove(co, L, t->nres);
    return t->nres;
  }
  if (t->status == T_FAILED) {
    lua_getiuservalue(L, ud, UVAL_ERROR);
    return lua_error(L);
  }
  return orch__failf(L, "ECANCELED", "join: the task was cancelled");
}


/* Woken with values (a timeout: nil, msg, ETIMEDOUT) or with none (the
 * joined task ended: its results). The joined task is argument 1. */
static int join_k(lua_State *L, int status, lua_KContext ctx) {
  int woke = await_k(L, status, ctx);
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
  if (lua_getiuservalue(L, 1, UVAL_JOINERS) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, UVAL_JOINERS);
  }
  lua_pushthread(L);
  lua_rawseti(L, -2, luaL_len(L, -2) + 1);
  lua_pop(L, 1);
  /* No cancel function: a stale joiners entry is skipped (joining is
   * cleared when the wait ends). */
  self->joining = t;
  wait_begin(self, timeout, "join", NULL, NULL);
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
  task_cancel(t);
  lua_pushboolean(L, 1);
  return 1;
}

static int task_traceback(lua_State *L) {
  check_task_ud(L, 1);
  lua_getiuservalue(L, 1, UVAL_TRACE);
  return 1;
}

static int task_tostring(lua_State *L) {
  orch__task **box = luaL_checkudata(L, 1, TASK_MT);
  orch__task *t = *box;
  if (!t) {
    lua_pushliteral(L, TASK_MT ": finalized");
    return 1;
  }
  lua_pushfstring(L, "orch.Task: %p %s", (void *)t, task_status_names[t->status]);
  return 1;
}

static int task_gc(lua_State *L) {
  orch__task **box = luaL_checkudata(L, 1, TASK_MT);
  orch__task *t = *box;
  if (!t) return 0;
  /* The collector only finalizes unreachable tasks (live ones are anchored
   * in the registry), or every task when the Lua state closes. A call by
   * hand on a live task is ignored: its struct is still in use. Inside a
   * finalizer run by the collector (lua_close included) lua_gc answers -1
   * (Lua 5.4.4 and later), which tells the two apart. */
  if (t->ref != LUA_NOREF && t->rt && !t->rt->torn_down && lua_gc(L, LUA_GCISRUNNING) != -1)
    return 0;
  *box = NULL;
  if (t->rt && !t->rt->torn_down) {
    queue_remove(t);
    all_remove(t);
  }
  if (t->rt && t->rt->main_task == t) t->rt->main_task = NULL;
  *extra(t->co) = NULL;
  if (t->rt) orch__vtimer_stop(t->rt, &t->vtimer);
  if (t->timer) {
    t->gone = 1;
    t->timer->data = t;
    if (!uv_is_closing((uv_handle_t *)t->timer))
      uv_close((uv_handle_t *)t->timer, timer_close_cb);
  } else {
    free(t);
  }
  return 0;
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
  return push_task_ud(L, t);
}

static int core_sleep(lua_State *L) {
  double s = orch__checkseconds(L, 1);
  orch__task *t = orch__current(L);
  if (!t) return luaL_error(L, "orch.sleep: must be called from a task");
  if (s == 0) {
    /* Yield to the other tasks: a plain yield is requeued by task_resume. */
    t->awaiting = 0;
    t->waking = 0;
    return lua_yieldk(L, 0, (lua_KContext)t, await_k);
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
  if (rt->vn > 0)
    return orch__failf(L, "EBUSY", "clock: %d virtual timers are armed", (int)rt->vn);
  rt->vclock = mode == 1;
  rt->vnow = rt->vbase = (uint64_t)(now * 1e9);
  rt->vwall = wall;
  rt->vhorizon = rt->vnow + (uint64_t)(horizon * 1e9);
  rt->vpoked = 0;
  lua_pushboolean(L, 1);
  return 1;
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

static void cancel_leftovers(orch_runtime *rt) {
  /* Cancel every unfinished task so its to-be-closed variables run. */
  while (rt->all) {
    orch__task *t = rt->all;
    if (t->status == T_RUNNING) { all_remove(t); continue; }
    t->exit_yield = 0;
    task_cancel(t);
  }
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
  cancel_leftovers(rt);
  fflush(NULL);
  _exit(code & 0xff);
}

static int run_loop(orch_runtime *rt) {
  rt->running = 1;
  int r = uv_run(rt->loop, UV_RUN_DEFAULT);
  rt->running = 0;
  if (rt->fork_child) fork_child_end(rt);
  return r;
}

/* orch.run(fn, ...) from a host Lua (busted, lua5.4): fn is the main task. */
static int core_run(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (rt->running || orch__current(L))
    return luaL_error(L, "orch.run: the loop is already running (start a task with orch.task)");
  int nargs = lua_gettop(L) - 1;
  orch__task *t = task_new(L, nargs);
  int ud = lua_gettop(L);
  rt->main_task = t;
  queue_push(t, nargs);
  rt->exiting = 0;
  run_loop(rt);
  rt->main_task = NULL;
  if (rt->exiting) {
    int code = rt->exit_code;
    rt->exiting = 0;
    cancel_leftovers(rt);
    lua_pushnil(L);
    lua_pushfstring(L, "orch.exit(%d)", code);
    lua_pushliteral(L, "EXIT");
    lua_pushinteger(L, code);
    return 4;
  }
  if (t->status == T_DONE || t->status == T_FAILED) {
    cancel_leftovers(rt);
    return join_result(L, t, ud);
  }
  cancel_leftovers(rt);
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
    {"cpu_time", task_cpu_time}, {NULL, NULL}
  };
  static const luaL_Reg task_meta[] = {
    {"__gc", task_gc}, {"__tostring", task_tostring}, {"__newindex", task_new_index},
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
    {"now", core_now}, {"time", core_time}, {"exit", core_exit}, {"run", core_run},
    {"version", core_version}, {"cond", cond_new}, {"set_budget", core_set_budget},
    {"clock", core_clock},
    {NULL, NULL}
  };
  luaL_newlib(L, fns);
  lua_pushstring(L, ORCH_VERSION);
  lua_setfield(L, -2, "VERSION");
  return 1;
}

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
        if (luaL_loadfile(L, cands[c]) != LUA_OK)
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

static void install_searcher(lua_State *L) {
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

static void teardown(orch_runtime *rt) {
  if (rt->torn_down) return;
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
  free(rt->vheap);
  rt->vheap = NULL;
  rt->vn = rt->vcap = 0;
  free(rt->last_error);
  rt->last_error = NULL;
}

/* Binds a new runtime to L (or returns the existing one). */
static orch_runtime *runtime_attach(lua_State *L, int own_state) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &RT_KEY);
  orch_runtime *rt = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (rt) return rt;
  rt = calloc(1, sizeof *rt);
  if (!rt) return NULL;
  rt->loop = &rt->loop_storage;
  if (uv_loop_init(rt->loop) != 0) { free(rt); return NULL; }
  rt->L = L;
  rt->own_state = own_state;
  rt->on_error = default_error;
  rt->main_ref = LUA_NOREF;
  rt->budget_ns = BUDGET_DEFAULT_NS;
  orch__fd_reserve_fill();
  uv_idle_init(rt->loop, &rt->idle);
  rt->idle.data = rt;
  uv_async_init(rt->loop, &rt->holder, NULL);
  uv_unref((uv_handle_t *)&rt->holder);
  uv_prepare_init(rt->loop, &rt->vprep);
  rt->vprep.data = rt;
  lua_pushlightuserdata(L, rt);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &RT_KEY);
  /* The sentinel frees a runtime bound to a host's state when it closes.
   * It is created first, so it is finalized after every orch object. */
  orch_runtime **p = lua_newuserdatauv(L, sizeof *p, 0);
  *p = rt;
  lua_newtable(L);
  lua_pushcfunction(L, sentinel_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &RT_KEY + 1);
  *extra(L) = NULL;
  install_searcher(L);
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
  if (h == (uv_handle_t *)&rt->vprep) return;
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
      stop_timer(t);
      queue_remove(t);
      if (cancel) cancel(t->cancel_data);
      t->status = T_CANCELLED;
      all_remove(t);
      if (t->ref != LUA_NOREF) {
        luaL_unref(rt->L, LUA_REGISTRYINDEX, t->ref);
        t->ref = LUA_NOREF;
      }
    }
    t = next;
  }
  uv_walk(rt->loop, fork_stop_handle, rt);
  /* The parent's virtual timers are not the child's. */
  while (rt->vn > 0) orch__vtimer_stop(rt, rt->vheap[0]);
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

int luaopen_orch_core(lua_State *L) {
  pin_library();
  orch_runtime *rt = runtime_attach(L, 0);
  if (!rt) return luaL_error(L, "orch: cannot create the runtime");
  lua_newtable(L);
  for (const orch__module *m = orch__modules; m->name; m++) {
    if (!m->open) continue;
    lua_pushcfunction(L, m->open);
    lua_call(L, 0, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, m->name);                 /* core[name] = M */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushfstring(L, "orch.core.%s", m->name);
    lua_pushvalue(L, -3);
    lua_settable(L, -3);                          /* loaded["orch.core.name"] = M */
    lua_pop(L, 2);
  }
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
  lua_State *L = luaL_newstate();
  if (!L) return NULL;
  luaL_openlibs(L);
  orch_runtime *rt = runtime_attach(L, 1);
  if (!rt) { lua_close(L); return NULL; }
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
    cancel_leftovers(rt);
    lua_close(rt->L);   /* __gc of every object: modules close their handles */
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
  orch__task *t = task_new(L, nargs);
  if (!rt->main_task) {
    rt->main_task = t;
    rt->main_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  } else {
    lua_pop(L, 1);
  }
  queue_push(t, nargs);
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
  run_loop(rt);
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
