/*
 * task.c: the task scheduler: tasks as coroutines, the ready queue, waits
 * (orch__await) and wake-ups (orch__wake), timeouts, cancellation, joins.
 *
 * Every piece of Lua code runs in a task: a coroutine whose extra space
 * points to its orch__task. Runnable tasks sit in a ready queue drained by a
 * uv_idle_t (active only while the queue is not empty, so an idle orch never
 * wakes up).
 *
 * Ownership: a task's C struct is its orch.Task userdata (its timeout is a
 * wheel entry in the struct, clock.c: no handle outlives it); the userdata
 * is anchored (in a table of the runtime's own: "anchors" below) from
 * creation until the task finishes, so the GC never collects a live task. When it finishes, everything that pointed
 * at it lets go (the ready queue, the list of unfinished tasks, the wheel,
 * its coroutine's extra space): the userdata needs no finalizer, and the
 * collector frees a finished task, its coroutine and function in one cycle.
 * Nothing here blocks.
 *
 * The coroutine of a task that returned nothing goes to a small pool (a
 * registry table) and runs a later task: a new coroutine starts with a
 * small stack and no call frames, and grows both, reallocating, as deep as
 * its code calls; a reused one has them already (until a collection
 * shrinks them). The finished task lets go of it first (its userdata and
 * its struct no longer name it): nothing can reach a pooled coroutine from
 * the task it ran. A task made without arguments (orch.task(fn)) takes its
 * coroutine only when it first runs, so tasks started in a burst that each
 * run to their end share a few coroutines, and a task waiting for its first
 * turn is only its userdata and function (fewer and smaller objects for the
 * collector to go through meanwhile). The memory a task allocates for
 * itself counts towards the collector's next cycle from the task's end,
 * not its start (see "collector" below): a burst of new tasks, all live,
 * no longer starts cycle after cycle that free nothing.
 */
#include "runtime_int.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* The userdata of a task (its struct after Lua's 56-byte header with one
 * uservalue) is then a small block of src/lalloc.c (up to 256 bytes). */
_Static_assert(sizeof(orch__task) <= 200, "orch__task: at most 200 bytes");

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


void orch__queue_push(orch__task *t, int nargs) {
  orch_runtime *rt = t->rt;
  t->queued = 1;
  t->nargs = nargs;
  t->status = T_READY;
  t->next = NULL;
  t->prev = rt->rq_tail;
  if (rt->rq_tail) rt->rq_tail->next = t; else rt->rq_head = t;
  rt->rq_tail = t;
  if (!rt->idle_active && !rt->torn_down) {
    uv_idle_start(&rt->idle, orch__idle_cb);
    rt->idle_active = 1;
  }
}

void orch__queue_remove(orch__task *t) {
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

void orch__all_remove(orch__task *t) {
  orch_runtime *rt = t->rt;
  if (t->all_prev) t->all_prev->all_next = t->all_next;
  else if (rt->all == t) rt->all = t->all_next;
  if (t->all_next) t->all_next->all_prev = t->all_prev;
  t->all_prev = t->all_next = NULL;
}

/* [-0,+1] Pushes "message\nstack traceback:..." for the failed coroutine co,
 * whose error object is on top of co's stack (left there). Nothing is called
 * in co itself: a coroutine in error state may only be inspected. */
static int traceback_p(lua_State *L) {
  lua_State *co = lua_touserdata(L, 1);
  if (lua_type(L, 2) != LUA_TSTRING) {
    if (lua_type(L, 2) == LUA_TNUMBER || luaL_getmetafield(L, 2, "__tostring") != LUA_TNIL) {
      if (lua_type(L, 2) != LUA_TNUMBER) lua_pop(L, 1);
      luaL_tolstring(L, 2, NULL);
    } else {
      lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 2));
    }
    lua_replace(L, 2);
  }
  luaL_traceback(L, co, lua_tostring(L, 2), 0);
  return 1;
}

static void push_traceback(lua_State *L, lua_State *co) {
  /* In protected mode: the task may have failed for want of memory, and
   * the text needs some (an error here, unprotected, was Lua's panic and
   * an abort of orch). Then its text is the error's own ("not enough
   * memory"), which Lua keeps made. */
  lua_pushcfunction(L, traceback_p);
  lua_pushlightuserdata(L, co);
  lua_pushvalue(co, -1);
  lua_xmove(co, L, 1);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK && lua_type(L, -1) != LUA_TSTRING) {
    lua_pop(L, 1);
    lua_pushliteral(L, "not enough memory");
  }
}

/* ---------------------------------------------------------------- collector */

/* Lua's collector starts a cycle when the memory allocated since the last
 * one reaches its pause (by default as much again as was live then). A
 * task's object and coroutine are live until the task ends, whatever a
 * cycle finds: a burst of 100,000 new tasks made the collector mark and
 * sweep every live task about ten times, freeing nothing. So the memory a
 * task allocates for itself (its object; a new coroutine, not a pooled
 * one, with the call frames of its first wait) and its function count
 * towards the next cycle only from the task's end, when they may become
 * garbage: taken off the collector's debt when made (or given), put back
 * when the task ends. Every byte is still counted once, so the heap stays
 * within the pause of what is live plus the tasks alive. The debt is
 * changed through lua_gc(LUA_GCSTEP, n), which in Lua 5.4 adds n KiB to it
 * (taking them when n < 0) and steps if it is then positive; only where a
 * task is being made, which allocates (and may step) anyway, with the new
 * object on the stack, and at the end of a turn of the ready queue or the
 * wheel: a task's end never runs the collector, which could free the task
 * under its caller. A stopped collector is left alone. */
static size_t heap_bytes(lua_State *L) {
  return (size_t)lua_gc(L, LUA_GCCOUNT) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB);
}

/* A burst of tasks. Once the unfinished tasks hold GC_BURST bytes or more
 * (100,000 sleeping tasks hold 140 MB), the bytes of those that end wait
 * until GC_DEAD_RATIO times what the live ones hold has ended. Put back as
 * they ended, the first ended tasks' bytes started a cycle that marked all
 * the others, still alive, and re-traversed all their coroutines in its
 * atomic step; the bytes of the tasks ending meanwhile, a turn's worth at a
 * time, then made the collector do the rest (the atomic step, the sweep)
 * in one step: 33-67 ms of CPU at once, somewhere in the middle of the
 * wake-ups, and most of the marking for nothing (eleventh session in
 * doc/benchmarks.md). Once the burst has ended, the collector runs one
 * cycle in its own steps (LUA_GCSTEP 0: Lua's step size), one every
 * DRAIN_TICK_MS while the loop is not busy, on a timer that keeps no loop alive:
 * that cycle frees the burst, marking little, and its end sets the pace
 * again from what it found alive, so what the burst owed is dropped. A
 * cycle already under way when the burst ended may end at the first step:
 * then the next one is run too. Ended tasks' bytes owed while new tasks are
 * made net out against theirs, as always: tasks made as fast as others end
 * (or faster) owe nothing and other allocations count as always, so the
 * heap stays within what the burst took. A new task stops the drain (the
 * cycle goes on at the usual pace). Below GC_BURST (a supervisor's tasks)
 * nothing changes. */
#define GC_BURST (16L << 20)
#define GC_DEAD_RATIO 64
#define DRAIN_TICK_MS 10

static void gc_flush(lua_State *L, orch_runtime *rt);

static void gc_drain_step(lua_State *L, orch_runtime *rt);

/* The drain's steps run on its timer only, and only when fewer than
 * DRAIN_BUSY tasks were resumed since its last tick: the last tasks of a
 * burst waking (a thousand a millisecond) are not held up by steps of the
 * sweep (a step frees up to 50,000 objects: 3-5 ms), a loop with a task or
 * two every tick drains as an idle one. */
#define DRAIN_BUSY 100

static void gc_tick_cb(uv_timer_t *h) {
  orch_runtime *rt = h->data;
  if (rt->gc_drain && !rt->current && rt->resumes - rt->gc_drain_resumes < DRAIN_BUSY) {
    if (rt->gc_debt > 0) rt->gc_debt = 0;
    gc_drain_step(rt->L, rt);
  }
  rt->gc_drain_resumes = rt->resumes;
  if (!rt->gc_drain) uv_timer_stop(h);
}

/* One step of the cycle after a burst. A collector in generational mode
 * never reports a cycle's end to a step: the drain then ends after
 * DRAIN_STEPS steps (so does one in a heap too large for them, whose cycle
 * goes on at the usual pace). */
#define DRAIN_STEPS 1000

static void gc_drain_step(lua_State *L, orch_runtime *rt) {
  int running = lua_gc(L, LUA_GCISRUNNING);
  if (running < 0) return;              /* inside a finalizer: later */
  if (running && !lua_gc(L, LUA_GCSTEP, 0) && ++rt->gc_drain_steps < DRAIN_STEPS) {
    rt->gc_drain = 2;                   /* a step that ended no cycle */
    return;
  }
  if (!running || rt->gc_drain == 2 || rt->gc_drain_steps >= DRAIN_STEPS) rt->gc_drain = 0;
}

/* Makes the debt changes owed, in whole KiB: a debt taken off from 8 KiB
 * on (every few dozen tasks rather than every few), one put back from 1
 * KiB on; a burst's, see above. */
static void gc_flush(lua_State *L, orch_runtime *rt) {
  if (rt->gc_burst && rt->gc_debt >= 1024 && rt->gc_debt >= GC_DEAD_RATIO * rt->gc_live) {
    rt->gc_burst = 0;
    rt->gc_drain = 1;
    rt->gc_drain_steps = 0;
    rt->gc_drain_resumes = rt->resumes;
    if (!rt->torn_down) uv_timer_start(&rt->gc_tick, gc_tick_cb, DRAIN_TICK_MS, DRAIN_TICK_MS);
  }
  if (rt->gc_drain) {                   /* its steps: gc_tick_cb */
    if (rt->gc_debt > 0) rt->gc_debt = 0;
    return;
  }
  if (rt->gc_debt > -8192 && rt->gc_debt < 1024) return;
  if (rt->gc_debt > 0 && rt->gc_burst) return;
  int running = lua_gc(L, LUA_GCISRUNNING);
  if (running < 0) return;              /* inside a finalizer: later */
  long kb = rt->gc_debt / 1024;
  rt->gc_debt -= kb * 1024;
  /* Stopped, the collector keeps no debt (a restart sets it to 0). */
  if (running) lua_gc(L, LUA_GCSTEP, (int)kb);
}

/* A new task: a drain stops (the cycle goes on at the usual pace). */
static void gc_drain_end(orch_runtime *rt) {
  rt->gc_drain = 0;
}

/* What a task's new object (kind GC_OBJ) or new coroutine (GC_CO) adds to
 * the heap: the same every time for a given Lua, so it is measured (the
 * heap before and after) only at the first GC_SAMPLES creations of each,
 * the largest kept (a step of the collector during one may have freed
 * some meanwhile: a smaller figure), then known (four calls into Lua a
 * task fewer). What is held is given back exactly, whatever the figure. */
enum { GC_OBJ, GC_CO, GC_SAMPLES = 8 };

static size_t gc_measure_begin(lua_State *L, orch_runtime *rt, int kind) {
  return rt->gc_samples[kind] < GC_SAMPLES ? heap_bytes(L) : 0;
}

/* The task's new object of that kind (the heap was before before it,
 * when measured; the growth taken at most limit) counts from its end. */
static void gc_hold(lua_State *L, orch__task *t, int kind, size_t before, size_t limit) {
  orch_runtime *rt = t->rt;
  if (rt->gc_samples[kind] < GC_SAMPLES) {
    rt->gc_samples[kind]++;
    size_t now = heap_bytes(L);
    size_t b = now > before ? now - before : 0;
    if (b > limit) b = limit;
    if (b > rt->gc_size[kind]) rt->gc_size[kind] = (unsigned)b;
  }
  gc_drain_end(rt);
  t->gc_held += rt->gc_size[kind];
  rt->gc_live += (long)rt->gc_size[kind];
  if (rt->gc_live >= GC_BURST) rt->gc_burst = 1;
  rt->gc_debt -= (long)rt->gc_size[kind];
  gc_flush(L, rt);
}

/* b more bytes of t count from its end (flushed with the next gc_hold). */
static void gc_hold_bytes(orch__task *t, unsigned b) {
  gc_drain_end(t->rt);
  t->gc_held += b;
  t->rt->gc_live += (long)b;
  t->rt->gc_debt -= (long)b;
}

/* The task's function (at idx), when a Lua function, counts from the
 * task's end as well: the task holds it until then, and a burst of tasks
 * each made with a closure of its own (orch.task(function() ... end)) made
 * the collector start cycles that went through every task made so far and
 * freed nothing. Its size is Lua 5.4's LClosure, a 32-byte header and a
 * pointer per upvalue (an upvalue's own object may be shared: not held).
 * A function shared by many tasks is held for each: at most that many
 * bytes a live task (itself about 1.4 KiB), each given back at its end. */
/* The upvalue count of the Lua function at idx. lua_getinfo (">u") is
 * about a fifth of an orch.task call's instructions; the count is also the
 * byte after the object header of Lua 5.4's closures (a pointer and two
 * bytes), read there once the first FN_CHECKS functions' counts read so
 * matched lua_getinfo's (and never if one did not: another layout). */
#define LCL_NUPS_AT (sizeof(void *) + 2)
#define FN_CHECKS 8

static unsigned fn_nups(lua_State *L, orch_runtime *rt, int idx) {
  const unsigned char *cl = lua_topointer(L, idx);
  if (rt->fn_nups_ok >= FN_CHECKS) return cl[LCL_NUPS_AT];
  lua_Debug ar;
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">u", &ar);
  if (rt->fn_nups_ok >= 0) rt->fn_nups_ok = cl[LCL_NUPS_AT] == ar.nups ? rt->fn_nups_ok + 1 : -1;
  return ar.nups;
}

static void gc_hold_fn(lua_State *L, orch__task *t, int idx) {
  if (lua_type(L, idx) != LUA_TFUNCTION || lua_iscfunction(L, idx)) return;
  gc_hold_bytes(t, 32 + 8 * fn_nups(L, t->rt, idx));
}

/* The ended tasks' memory is counted: at the end of a turn of the ready
 * queue or of the wheel, where no task runs and nothing holds one. */
void orch__gc_settle(orch_runtime *rt) {
  if ((rt->gc_debt >= 1024 || rt->gc_drain) && !rt->current) gc_flush(rt->L, rt);
}

/* The task ended (or was abandoned): its memory counts from now. */
void orch__task_gc_release(orch__task *t) {
  t->rt->gc_debt += (long)t->gc_held;
  t->rt->gc_live -= (long)t->gc_held;
  t->gc_held = 0;
}

/* ---------------------------------------------------------------- tasks */

void orch__task_stop_timer(orch__task *t) {
  if (t->vtimed) orch__vtimer_stop(t->rt, &t->timer.v);
  else orch__wtimer_stop(t->rt, &t->timer.w);
}

/* Brings in what waking the task waiting in w will read, ahead of it
 * (clock.c), in five stages, each relying on the one before having been
 * asked for a turn earlier, and each only asking (a read that misses holds
 * the processor up for as long as the miss):
 *   0, its struct (found from w's address, nothing read);
 *   1, its coroutine's lua_State (the extra space lies just before it) and
 *      the neighbours its end unlinks from the list of unfinished tasks;
 *   2, the coroutine's current call frame, the waiting call's (lua_getstack
 *      reads only the lua_State);
 *   3, the frame of the task's function that made the call, the stack
 *      around the waiting call's slot, and the anchors' slot that holds
 *      the task, which its end clears;
 *   4, the task's function (a Lua closure), found from its frame's slot.
 * Lua 5.4's internals are read for addresses only, from lines brought in
 * by the stage before: a CallInfo starts with its function's stack slot, a
 * stack slot (TValue) with its value, and a Table's array pointer follows
 * its 16-byte header. A prefetch of a wrong address does nothing. */
#define LCL_TAG 0x46                /* a stack slot's tag: a Lua closure (5.4) */

void orch__task_prefetch(const orch__wtimer *w, int stage) {
  const orch__task *t = (const orch__task *)((const char *)w - offsetof(orch__task, timer.w));
  if (stage == 0) {
    for (size_t i = 0; i < sizeof *t; i += 64) __builtin_prefetch((const char *)t + i);
    return;
  }
  if (!t->co) return;
  if (stage == 1) {
    const char *p = (const char *)t->co - sizeof(void *);
    for (size_t i = 0; i < 256; i += 64) __builtin_prefetch(p + i);
    if (t->all_prev) __builtin_prefetch(&t->all_prev->all_next);
    if (t->all_next) __builtin_prefetch(&t->all_next->all_prev);
    return;
  }
  lua_Debug ar;
  if (stage == 2) {
    if (!lua_getstack(t->co, 0, &ar)) return;
    __builtin_prefetch(ar.i_ci);
    __builtin_prefetch((const char *)ar.i_ci + 63);
    return;
  }
  if (stage == 3) {
    if (!lua_getstack(t->co, 0, &ar)) return;
    const char *slot = *(const char *const *)ar.i_ci;
    for (int i = -2; i <= 1; i++) __builtin_prefetch(slot + 64 * i);
    if (lua_getstack(t->co, 1, &ar)) {
      __builtin_prefetch(ar.i_ci);
      __builtin_prefetch((const char *)ar.i_ci + 63);
    }
    const char *tab = t->rt->anchor_L ? lua_topointer(t->rt->anchor_L, 1) : NULL;
    if (tab && t->ref > 0) __builtin_prefetch(*(const char *const *)(tab + 16) + 16 * (size_t)(t->ref - 1));
    return;
  }
  if (!lua_getstack(t->co, 1, &ar)) return;
  const char *slot = *(const char *const *)ar.i_ci;
  if ((unsigned char)slot[8] == LCL_TAG) {
    const char *cl = *(const char *const *)slot;
    __builtin_prefetch(cl);
    __builtin_prefetch(cl + 63);
  }
}

/* ---------------------------------------------------------------- joins */

/* A task is in the joiners list of the task it joins exactly while its
 * joining is set: both are set by task:join and cleared together when the
 * wait ends (the joined task ended, a timeout, a cancel), so the list never
 * names a task that no longer waits (nor a collected one). */
void orch__join_begin(orch__task *self, orch__task *t) {
  self->joining = t;
  self->join_next = t->joiners;
  t->joiners = self;
}

static void join_end(orch__task *j) {
  orch__task *t = j->joining;
  if (!t) return;
  for (orch__task **p = &t->joiners; *p; p = &(*p)->join_next) {
    if (*p == j) { *p = j->join_next; break; }
  }
  j->joining = NULL;
  j->join_next = NULL;
}

static void task_resume(orch__task *t, int nargs);

/* Wakes every task joined on owner (status done/failed/cancelled). */
static void wake_joiners(orch__task *owner) {
  /* The list is newest first: the joiners are woken in the order they
   * joined. */
  orch__task *j = NULL, *rest = owner->joiners;
  owner->joiners = NULL;
  while (rest) {
    orch__task *next = rest->join_next;
    rest->join_next = j;
    j = rest;
    rest = next;
  }
  while (j) {
    orch__task *next = j->join_next;
    j->joining = NULL;
    j->join_next = NULL;
    /* Queued, never resumed from here: the joiner's continuation reads the
     * result from the joined task. */
    if (j->status == T_WAITING) {
      j->cancel = NULL;
      orch__task_stop_timer(j);
      orch__queue_push(j, 0);
    }
    j = next;
  }
}

/* The task ended (status already set): unanchor it and wake joiners. */
static void task_finish(orch__task *t) {
  orch__task_stop_timer(t);
  orch__queue_remove(t);
  orch__all_remove(t);
  join_end(t);
  wake_joiners(t);
  orch__task_unanchor(t);
  /* The coroutine may outlive the userdata (coroutine.running() kept
   * somewhere): it must not point at it. */
  if (t->co && *extra(t->co) == t) *extra(t->co) = NULL;
  orch__task_gc_release(t);
}

static void task_failed(orch__task *t) {
  orch_runtime *rt = t->rt;
  lua_State *L = rt->L;
  lua_State *co = t->co;
  t->status = T_FAILED;
  push_traceback(L, co);                 /* traceback text */
  if (t == rt->main_task) {
    free(rt->last_error);
    rt->last_error = strdup(lua_tostring(L, -1));
  } else if (!t->joiners) {
    orch__report(rt, lua_tostring(L, -1));
  }
  lua_xmove(co, L, 1);                   /* the error object */
  /* Close the coroutine's to-be-closed variables; it then keeps the
   * outcome: co[1] the error object, co[2] the traceback. */
  lua_resetthread(co);
  lua_settop(co, 0);
  lua_rotate(L, -2, 1);                  /* error, traceback */
  lua_xmove(L, co, 2);
  task_finish(t);
  /* The run ends with the main task's error (exit 1 for orch run). */
  if (t == rt->main_task) uv_stop(rt->loop);
}

/* ---------------------------------------------------------------- pool */

#define COPOOL_MAX 16
static const char copool_key = 0;

/* [-0,+1] The pool's anchor table. */
static void push_copool(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &copool_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_createtable(L, COPOOL_MAX, 0);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &copool_key);
}

/* t returned nothing: its coroutine goes to the pool (if there is room). */
static void copool_put(orch__task *t) {
  orch_runtime *rt = t->rt;
  lua_State *L = rt->L, *co = t->co;
  if (rt->ncopool >= COPOOL_MAX || rt->torn_down || lua_status(co) != LUA_OK) return;
  lua_settop(co, 0);
  push_copool(L);
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_rawseti(L, -2, ++rt->ncopool);
  lua_pop(L, 1);
  orch__push_task(L, t);
  lua_pushnil(L);
  lua_setiuservalue(L, -2, UVAL_CO);
  lua_pop(L, 1);
  *extra(co) = NULL;
  t->co = NULL;
}

/* [-0,+1] A pooled coroutine, pushed as lua_newthread pushes a new one;
 * NULL (nothing pushed) when the pool is empty. */
static lua_State *copool_get(lua_State *L, orch_runtime *rt) {
  if (rt->ncopool == 0) return NULL;
  push_copool(L);
  lua_rawgeti(L, -1, rt->ncopool);
  lua_pushnil(L);
  lua_rawseti(L, -3, rt->ncopool--);
  lua_remove(L, -2);
  return lua_tothread(L, -1);
}

/* [-0,+1] A new coroutine for t, pushed on L (its memory held until t
 * ends). */
static lua_State *new_thread(lua_State *L, orch__task *t) {
  size_t before = gc_measure_begin(L, t->rt, GC_CO);
  lua_State *co = lua_newthread(L);
  gc_hold(L, t, GC_CO, before, 4096);
  /* Its first wait adds two call frames (the task's function's and the
   * waiting call's: Lua 5.4's CallInfo, 64 bytes each), kept as long as
   * the coroutine: held with it. */
  gc_hold_bytes(t, 2 * 64);
  return co;
}

/* A task made without arguments gets its coroutine when it first runs: a
 * pooled one when there is one (a burst of tasks that each run to their
 * end share a few), else a new one. */
static void task_start(orch__task *t) {
  orch_runtime *rt = t->rt;
  lua_State *L = rt->L;
  orch__push_task(L, t);                 /* ud */
  lua_getiuservalue(L, -1, UVAL_CO);     /* ud fn */
  lua_State *co = copool_get(L, rt);     /* ud fn co */
  if (!co) co = new_thread(L, t);
  t->co = co;
  *extra(co) = t;
  lua_setiuservalue(L, -3, UVAL_CO);     /* ud fn */
  lua_xmove(L, co, 1);
  lua_pop(L, 1);
}

static void task_resume(orch__task *t, int nargs) {
  orch_runtime *rt = t->rt;
  if (!t->co) task_start(t);
  orch__task *prev = rt->current;
  int nres = 0;
  rt->current = t;
  t->status = T_RUNNING;
  t->awaiting = 0;
  t->waking = 1;
  t->nargs = nargs;
  rt->resumes++;
  /* The outermost resume starts the clock; a nested one runs on its time. */
  uint64_t budget = t->budget_us ? orch__task_budget_ns(t) : rt->budget_ns;
  int armed = budget && !rt->budget_start;
  int counted = t->cpu_limit_ns != 0;
  if (armed) {
    rt->budget_run_ns = budget;
    rt->budget_start = budget >= BUDGET_COARSE_NS ? orch__mono_coarse_ns() : orch__mono_ns();
    rt->budget_trip = 0;
    orch__budget_mark(rt);
    /* The alarm sets the hook once the budget may be exceeded. */
    if (!orch__budget_begin(rt)) counted = 1;
  } else if (rt->budget_start && !orch__budget_begin(rt)) {
    counted = 1;
  }
  if (counted) lua_sethook(t->co, orch__budget_hook, LUA_MASKCOUNT, BUDGET_COUNT);
  uint64_t outer_mark = rt->task_cpu_mark;
  if (t->cpu_limit_ns) rt->task_cpu_mark = orch__thread_cpu_ns();
  lua_State *prev_co = rt->running_co;
  rt->running_co = t->co;
  int st = lua_resume(t->co, prev ? prev->co : NULL, nargs, &nres);
  rt->running_co = prev_co;
  if (t->cpu_limit_ns) t->cpu_ns += orch__thread_cpu_ns() - rt->task_cpu_mark;
  rt->task_cpu_mark = outer_mark;
  if (lua_gethook(t->co)) lua_sethook(t->co, NULL, 0, 0);
  if (armed) rt->budget_start = 0;
  rt->current = prev;
  if (st == LUA_YIELD) {
    lua_pop(t->co, nres);
    if (t->self_cancel || t->exit_yield || t->awaiting) {
      t->status = T_WAITING;
      if (t->self_cancel) orch__task_cancel(t);
    } else {
      /* A bare coroutine.yield() in a task yields to the other tasks. */
      orch__queue_push(t, 0);
    }
  } else if (st == LUA_OK) {
    t->status = T_DONE;
    t->nres = lua_gettop(t->co);
    if (t->nres == 0) copool_put(t);
    task_finish(t);
  } else {
    task_failed(t);
  }
}

/* Runs t now when called from a libuv callback; queues it when a task is
 * running (Lua is never re-entered) or orch is exiting. */
static void run_or_queue(orch__task *t, int nargs) {
  if (t->rt->current || t->rt->exiting) orch__queue_push(t, nargs);
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
  orch__task_stop_timer(t);
  t->cancel = NULL;
  t->cancel_data = NULL;
  join_end(t);
  return t;
}

void orch__wake(lua_State *co, int nargs) {
  orch__task *t = wake_begin(co, nargs);
  if (t) run_or_queue(t, nargs);
}

void orch__wake_later(lua_State *co, int nargs) {
  orch__task *t = wake_begin(co, nargs);
  if (t) orch__queue_push(t, nargs);
}

/* The task struct is its userdata's block after Lua 5.4's header (56
 * bytes with one uservalue; the uservalue read at a task's first run is in
 * it): 256 bytes, four lines, all read or written as the task runs. After
 * a burst they are cold (100,000 new tasks are 140 MB: the first run of
 * each read its struct from memory, a wait at each line), and the ready
 * queue knows which task runs next: the one two places ahead is asked for
 * (its place in the queue comes with the one before it, asked a task
 * earlier). A wrong address (another Lua's header) makes the prefetch
 * useless, never wrong. */
#define UDATA_HEADER 56

static void queue_prefetch(const orch__task *t) {
  const char *ud = (const char *)t - UDATA_HEADER;
  for (size_t i = 0; i < UDATA_HEADER + sizeof *t; i += 64) __builtin_prefetch(ud + i);
}

void orch__idle_cb(uv_idle_t *h) {
  orch_runtime *rt = h->data;
  /* Run the tasks queued so far; tasks they queue run next turn, so a task
   * looping on orch.sleep(0) lets I/O in between. */
  orch__task *last = rt->rq_tail;
  while (rt->rq_head && !rt->exiting) {
    orch__task *t = rt->rq_head;
    orch__task *n1 = t->next, *n2 = n1 ? n1->next : NULL;
    if (n2) queue_prefetch(n2);
    orch__queue_remove(t);
    task_resume(t, t->nargs);
    if (t == last) break;
  }
  if (!rt->rq_head && rt->idle_active) {
    uv_idle_stop(&rt->idle);
    rt->idle_active = 0;
  }
  orch__gc_settle(rt);
}

int orch__await_k(lua_State *L, int status, lua_KContext ctx) {
  orch__task *t = (orch__task *)ctx;
  if (!t->waking)
    return luaL_error(L, "orch: a waiting task was resumed by coroutine.resume");
  t->waking = 0;
  return t->nargs;
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

static void wtimeout_cb(orch__vtimer *h) { timed_out(h->data); }

static void vtimeout_cb(orch__vtimer *vt) { timed_out(vt->data); }

static int start_timer(orch__task *t, double seconds) {
  int virt = t->rt->vclock != 0;
  if (t->vtimed != virt) {
    /* The other clock's kind of timer (orch.clock switched): stopped, the
     * union starts afresh. */
    orch__task_stop_timer(t);
    memset(&t->timer, 0, sizeof t->timer);
    t->vtimed = (unsigned char)virt;
  }
  if (virt) {
    t->timer.v.data = t;
    orch__vtimer_start(t->rt, &t->timer.v, seconds, vtimeout_cb);
    return 0;
  }
  t->timer.w.h.data = t;
  orch__wtimer_start(t->rt, &t->timer.w, seconds, wtimeout_cb);
  return 0;
}

/* Marks t as suspended in a wait (the caller yields next) and starts its
 * timeout. Returns 0 or a libuv error from the timer. */
int orch__wait_begin(orch__task *t, double timeout, const char *op,
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
  int r = orch__wait_begin(t, timeout, op, cancel, data);
  if (r < 0) {
    t->awaiting = 0;
    if (cancel) cancel(data);
    return luaL_error(L, "orch: cannot start a timer: %s", uv_strerror(r));
  }
  return lua_yieldk(L, 0, (lua_KContext)t, orch__await_k);
}

/* ---------------------------------------------------------------- anchors */

/* An unfinished task's userdata is anchored (the collector keeps it while
 * the task can still run) in a table of the runtime's own, at an integer
 * key, t->ref; the keys of ended tasks form a free list through their
 * slots (each holds the next free key; the head is rt->anchor_free), as
 * luaL_ref's do. The table lives on a thread of the runtime's own (its
 * stack's first slot; the thread is anchored in the registry and never
 * runs), so that C reaches it without a look-up: an anchoring is a move
 * onto that thread and a raw set (about 80 instructions), where luaL_ref
 * on the registry also read the free list's head from the table, its
 * length, and a second slot (about 300: a tenth of what orch.task costs
 * a burst of sleeping tasks).
 *
 * The table's array doubles as a burst of tasks is anchored (2 MiB for
 * 100,000, 16 bytes a slot): memory no cycle can free while they live,
 * kept afterwards for the next tasks. Counted as an allocation, it started
 * a collector cycle or two while a burst was being made, each marking
 * every task made so far and freeing nothing (17,000 steps while 100,000
 * tasks were made: a tenth of the making's CPU). So the growth is taken
 * off the collector's debt for good, at once (before anything can step),
 * and the next cycle's end counts it as live. The array grows only with a
 * new key one past a power of two (every key below it is in use: a free
 * one would have been taken first): the heap is measured then only. */
static const char anchors_key = 0;

/* The thread of the anchors (its first slot; its second: orch.Task's
 * metatable once known), made with the first task. */
static lua_State *anchors(lua_State *L, orch_runtime *rt) {
  if (rt->anchor_L) return rt->anchor_L;
  lua_State *A = lua_newthread(L);
  lua_createtable(A, 0, 0);
  lua_pushnil(A);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &anchors_key);
  return rt->anchor_L = A;
}

/* [-0,+0] Sets orch.Task's metatable on the userdata on top: kept on the
 * anchors' thread once known, rather than found by its name (a string
 * look-up in the registry) for every task. */
static void set_task_mt(lua_State *L, lua_State *A) {
  if (lua_type(A, 2) != LUA_TTABLE) {
    luaL_getmetatable(A, TASK_MT);
    lua_replace(A, 2);
  }
  lua_pushvalue(A, 2);
  lua_xmove(A, L, 1);
  lua_setmetatable(L, -2);
}

/* [-1,+0] Anchors the task userdata on top; returns its key. */
static int anchor_task(lua_State *L, orch_runtime *rt) {
  lua_State *A = rt->anchor_L;
  int ref = rt->anchor_free;
  lua_xmove(L, A, 1);
  if (ref > 0) {
    lua_rawgeti(A, 1, ref);
    rt->anchor_free = (int)lua_tointeger(A, -1);
    lua_pop(A, 1);
    lua_rawseti(A, 1, ref);
    return ref;
  }
  ref = ++rt->anchor_last;
  unsigned past = (unsigned)ref - 1;
  if (past & (past - 1)) {
    lua_rawseti(A, 1, ref);
    return ref;
  }
  int kb = lua_gc(L, LUA_GCCOUNT);
  lua_rawseti(A, 1, ref);
  int grown = lua_gc(L, LUA_GCCOUNT) - kb;
  if (grown > 0 && lua_gc(L, LUA_GCISRUNNING) > 0) lua_gc(L, LUA_GCSTEP, -grown);
  return ref;
}

void orch__task_unanchor(orch__task *t) {
  orch_runtime *rt = t->rt;
  if (t->ref <= 0 || !rt->anchor_L) return;
  lua_pushinteger(rt->anchor_L, rt->anchor_free);
  lua_rawseti(rt->anchor_L, 1, t->ref);
  rt->anchor_free = t->ref;
  t->ref = LUA_NOREF;
}

int orch__push_task(lua_State *L, orch__task *t) {
  lua_State *A = t->rt->anchor_L;
  if (!A || t->ref <= 0) {
    lua_pushnil(L);
    return 1;
  }
  lua_rawgeti(A, 1, t->ref);
  lua_xmove(A, L, 1);
  return 1;
}

/* Creates a task for the function at -(nargs+1); pops fn and args, pushes
 * the task userdata. Does not queue it. */
orch__task *orch__task_new(lua_State *L, int nargs) {
  /* Made from a running task (the usual case): its runtime, without the
   * registry look-up of orch__rt. */
  orch__task *cur = orch__current(L);
  orch_runtime *rt = cur ? cur->rt : orch__rt(L);
  lua_State *A = anchors(L, rt);
  size_t before = gc_measure_begin(L, rt, GC_OBJ);
  /* The struct is the userdata (no timer handle outlives it). */
  orch__task *t = lua_newuserdatauv(L, sizeof *t, UVAL_NSLOTS);
  memset(t, 0, sizeof *t);
  set_task_mt(L, A);
  t->rt = rt;
  t->ref = LUA_NOREF;
  gc_hold_fn(L, t, -(nargs + 2));
  gc_hold(L, t, GC_OBJ, before, 1024);
  if (nargs == 0) {
    /* The coroutine comes at the first resume (task_start); meanwhile the
     * uservalue holds the function. */
    lua_insert(L, -2);                    /* ud fn */
    lua_setiuservalue(L, -2, UVAL_CO);
  } else {
    lua_State *co = copool_get(L, rt);
    if (!co) co = new_thread(L, t);
    t->co = co;
    *extra(co) = t;
    lua_setiuservalue(L, -2, UVAL_CO);
    /* stack: fn args... ud  -> move fn and args into co */
    lua_insert(L, -(nargs + 2));          /* ud fn args... */
    lua_xmove(L, co, nargs + 1);
  }
  lua_pushvalue(L, -1);
  t->ref = anchor_task(L, rt);
  t->status = T_READY;
  all_add(t);
  return t;
}

void orch__spawn_task(lua_State *L, int nargs) {
  orch__queue_push(orch__task_new(L, nargs), nargs);
}

void orch__spawn_task_now(lua_State *L, int nargs) {
  run_or_queue(orch__task_new(L, nargs), nargs);
}

/* Cancels a task that is not running: stops its wait, closes its
 * to-be-closed variables, wakes joiners. */
void orch__task_cancel(orch__task *t) {
  if (t->status == T_DONE || t->status == T_FAILED || t->status == T_CANCELLED) return;
  orch__cancel_fn cancel = t->cancel;
  void *data = t->cancel_data;
  t->cancel = NULL;
  orch__task_stop_timer(t);
  orch__queue_remove(t);
  t->status = T_CANCELLED;
  join_end(t);
  if (cancel) cancel(data);
  /* A coroutine that already died of an error (resumed by hand) has
   * nothing left to close; its error is not news. */
  if (t->co) {   /* (none before its first run) */
    int alive = lua_status(t->co) == LUA_YIELD || lua_status(t->co) == LUA_OK;
    int st = lua_resetthread(t->co);
    if (st != LUA_OK && alive) {
      const char *m = lua_tostring(t->co, -1);
      char buf[512];
      snprintf(buf, sizeof buf, "error while closing a cancelled task: %s", m ? m : "?");
      orch__report(t->rt, buf);
    }
    lua_settop(t->co, 0);
  }
  task_finish(t);
  /* orch.run(fn) ends when its main task is cancelled (a deadline's
   * guard): the other tasks and handles no longer keep it waiting. */
  if (t == t->rt->main_task && t->rt->host_run) uv_stop(t->rt->loop);
}

void orch__cancel_leftovers(orch_runtime *rt) {
  /* Cancel every unfinished task so its to-be-closed variables run. */
  while (rt->all) {
    orch__task *t = rt->all;
    if (t->status == T_RUNNING) { orch__all_remove(t); continue; }
    t->exit_yield = 0;
    orch__task_cancel(t);
  }
}
