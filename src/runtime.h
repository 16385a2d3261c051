/*
 * runtime.h: the internal API every binding module uses.
 *
 * The runtime owns one uv_loop_t and one lua_State. Every piece of Lua code
 * runs in a task (a coroutine). A binding that has to wait starts a libuv
 * operation, remembers the coroutine it was called in (the `L` it received),
 * and returns orch__await(L, ...). When the operation completes, its callback
 * pushes the results onto that coroutine's stack and calls orch__wake(co, n):
 * the values become the binding's return values.
 *
 * Rules:
 *  - Only the loop thread touches a lua_State.
 *  - A pending wait can be cancelled (task:cancel(), a timeout, orch.exit):
 *    the runtime then calls the cancel function given to orch__await, which
 *    must guarantee that orch__wake is not called for that wait afterwards
 *    (stop the timer, close the handle, or mark the request abandoned).
 *  - orch__wake never runs Lua re-entrantly: called from inside a task it
 *    queues the woken task, called from a libuv callback it resumes directly.
 */
#ifndef ORCH_RUNTIME_H
#define ORCH_RUNTIME_H

#include <lua.h>
#include <lauxlib.h>
#include <sys/resource.h>
#include <uv.h>

#include "orch.h"

typedef struct orch__task orch__task;
typedef void (*orch__cancel_fn)(void *data);

/* The runtime owning L (any thread of it). Raises if orch is not loaded. */
orch_runtime *orch__rt(lua_State *L);
uv_loop_t *orch__loop(lua_State *L);
lua_State *orch__mainthread(orch_runtime *rt);

/* The task L runs in, or NULL when L is not an orch task. */
orch__task *orch__current(lua_State *L);

/* Raises "<fname>: must be called from a task" unless L is a task. */
void orch__check_task(lua_State *L, const char *fname);

/* Suspends the calling task; use as `return orch__await(L, t, op, fn, d);`.
 * timeout < 0: no timeout. On timeout the runtime calls cancel(data) and the
 * binding returns nil, "<op>: timed out", "ETIMEDOUT". cancel may be NULL
 * only when nothing can call orch__wake for this wait after a cancel. */
int orch__await(lua_State *L, double timeout, const char *op,
                orch__cancel_fn cancel, void *data);

/* Resumes the task waiting in `co` with the nargs values on top of co's
 * stack. Safe from libuv callbacks and from inside other tasks. */
void orch__wake(lua_State *co, int nargs);

/* Starts a task running the function at stack index -(nargs+1) with the nargs
 * values above it (both popped); pushes the orch.Task object. The task runs
 * when the current one yields (or at the next loop turn). */
void orch__spawn_task(lua_State *L, int nargs);

/* Like orch__spawn_task, but from a libuv callback (no task running) the
 * task runs at once, up to its first wait or its end. */
void orch__spawn_task_now(lua_State *L, int nargs);

/* Like orch__wake, but always through the ready queue: the task runs at
 * the loop's next idle turn, never from inside this call. */
void orch__wake_later(lua_State *co, int nargs);

/* Callbacks (src/callback.c): the one way a libuv event runs a Lua function
 * (a timer's, a signal handler, an on_exit, a stream's on_read). The function at
 * -(nargs+1) and the nargs values above it are popped, and fn(args...) runs
 * in a task: a runner task that waits for the next callback once fn returns
 * (a few are kept waiting), or a new one. now: run at once when called from
 * a libuv callback (queued when a task is running); otherwise queued like a
 * new task. An error raised by fn is reported as its task's error. With
 * `end`, the value at -(nargs+2) (the owner; popped too) is kept alive while
 * fn runs, and end->done(L, owner_index, failed) is called when fn returns
 * or its runner is cancelled (failed 0) or fn raised (failed 1). */
typedef struct orch__callback_end {
  void (*done)(lua_State *L, int owner, int failed);
} orch__callback_end;
void orch__callback(lua_State *L, int nargs, const orch__callback_end *end, int now);

/* Reports an error through the runtime's error handler (not Lua). */
void orch__report(orch_runtime *rt, const char *message);

/* For orch.fork: in the child, re-initialises the loop and drops every task
 * except the calling one (their coroutines are abandoned, not resumed). */
int orch__after_fork_child(lua_State *L);
/* In orch.fork's child: when the child's loop ends (orch.exit, or nothing
 * left to wait for) the process ends there (_exit with the code) instead of
 * returning into the code that ran the parent's loop. */
void orch__fork_child_exits(lua_State *L);

/* Hooks run by orch_free / after fork, for modules owning global state
 * (e.g. the process table). Registered once per runtime. */
typedef void (*orch__hook_fn)(orch_runtime *rt, void *data);
void orch__on_close(orch_runtime *rt, orch__hook_fn fn, void *data);
void orch__on_fork_child(orch_runtime *rt, orch__hook_fn fn, void *data);

/* The runtime's spare fds (fdlimit.c): given up when orch is out of fds,
 * taken back where fds are free again. fill takes back every spare out;
 * release gives them all up (a listener accepting at EMFILE), and hold(+1)
 * keeps them given up for the connection so accepted until its close
 * (hold(-1), which settles); held counts those held. */
void orch__fd_reserve_fill(void);
void orch__fd_reserve_release(void);
void orch__fd_reserve_hold(int delta);
int orch__fd_reserve_held(void);
/* One spare lent to a call that must open a file at EMFILE (a stop's
 * cgroup files and pidfds, a module loaded on first use, the state record,
 * a /proc file): lend gives one up (0: none left); settle takes back every
 * spare out where fds are free again (the borrower closed its own, or fds
 * were freed since), unless a connection accepted at EMFILE holds them.
 * The runtime settles at each turn of its loop while a spare is out
 * (spares_out: one is out that a settle may take back), so a borrower that
 * keeps its fd keeps it outside the spares once fds are free: whatever
 * leaves a spare out calls the waker given to orch__fd_spares_on_out()
 * (runtime.c's starts every runtime's check); a check stops once
 * spares_out is false.
 * spares: how many are held (*total: of how many), for orch.fd.spares();
 * spare_turns: the turns of rt's loop at which it settled (its third
 * value). */
int orch__fd_spare_lend(void);
void orch__fd_spare_settle(void);
/* The kill reserve (fdlimit.c): between orch__fd_kill_path(1) and
 * orch__fd_kill_path(0) (nested: counted), a lend that finds no spare left
 * lends one of its fds; the outermost (0) takes them back. For a stop's
 * cgroup work only (cgroup_members.c), which closes whatever it opened
 * before it returns. kill_held: how many it holds (of 3). */
void orch__fd_kill_path(int on);
int orch__fd_kill_held(void);
int orch__fd_spares_out(void);
int orch__fd_spares(int *total);
void orch__fd_spares_on_out(void (*wake)(void));
unsigned long long orch__fd_spare_turns(orch_runtime *rt);
/* openat(2) (EINTR retried) of a file a call opens and closes again, or
 * socket(2) (type with its flags): at EMFILE or ENFILE with a spare lent
 * (*lent set then, when lent is not NULL). The caller closes the fd and
 * calls orch__fd_spare_settle() before anything else opens one. */
int orch__fd_open_at(int dirfd, const char *name, int flags, unsigned mode, int *lent);
int orch__fd_socket_lent(int domain, int type);
/* pidfd_open(2) of pid, the same way (a stop's signal with a start time,
 * a wait for a process's exit: at EMFILE they failed, and a shutdown took
 * the fd holder that had ended of its bye for one stuck, and killed it). */
int orch__fd_pidfd_lent(pid_t pid);
/* True when fd, just made by a start that keeps it (a pipe's end), leaves
 * fewer than the headroom of free fds that starts must not take (32, or a
 * quarter of a smaller limit): the start then fails with EMFILE. */
int orch__fd_headroom_short(int fd);
/* The soft RLIMIT_NOFILE for the fd budgets of the hot paths (the fds a
 * cgroup keeps, a start's headroom): read again when orch changes it
 * (orch__nofile_changed, after any setrlimit of it) and at most once a
 * second otherwise (another process's prlimit(1) on orch), not at each of
 * the four checks of every spawn. */
rlim_t orch__nofile_soft(void);
void orch__nofile_changed(void);

/* In a spawned child before exec: back to the soft RLIMIT_NOFILE orch was
 * started with, when orch_raise_nofile raised it. Async-signal-safe. */
void orch__child_nofile(void);
/* The same limit for a child that sets it itself (a spawn's, through a raw
 * prlimit64), or NULL when orch_raise_nofile did not raise it. Written once
 * at start: a child may read it while orch runs. */
const struct rlimit *orch__nofile_orig(void);

/* libuv's threadpool (src/l_signal.c): call right before every
 * uv_queue_work, uv_fs_* with a callback or uv_getaddrinfo. The first call
 * in a process starts the pool with every asynchronous signal blocked, so
 * its threads never take a signal the loop thread blocks; later calls cost
 * a getpid(). -errno (EAGAIN: a pids limit) when its threads cannot be
 * made: the caller fails with it (libuv would abort the process). */
int orch__threadpool_start(void);

/* The signal of the Lua time budget's timer (src/budget.c): orch's own,
 * refused by orch.signal like ORCH__IPC_WAKE_SIGNAL (src/ipc.h). */
#define ORCH__BUDGET_SIGNAL (SIGRTMAX - 2)

/* Per-runtime module state: a module keeps one pointer in the runtime. */
enum { ORCH__SLOT_PROC, ORCH__SLOT_SIGNAL, ORCH__SLOT_STREAM, ORCH__SLOT_IPC,
       ORCH__SLOT_HEARTBEAT, ORCH__SLOT_TERM,
       ORCH__SLOT_CALLBACK, ORCH__SLOT_MAX };
void **orch__slot(orch_runtime *rt, int slot);

/* Keeps the loop alive while count > 0 (e.g. a child process that was
 * spawned and not yet reaped). */
void orch__hold(orch_runtime *rt, int delta);

/* The runtime's clock: the real one, or the virtual one of orch.clock
 * ("virtual"), which jumps to the next deadline when nothing else can
 * happen first (src/runtime.c). Seconds. */
double orch__now(orch_runtime *rt);     /* monotonic */
/* uv_timer_start from the loop clock read now (not at the start of the turn). */
int orch__timer_start(uv_timer_t *h, uv_timer_cb cb, uint64_t ms, uint64_t repeat);
/* The same with the first firing due after seconds (not whole milliseconds). */
int orch__timer_start_after(uv_timer_t *h, uv_timer_cb cb, double seconds, uint64_t repeat);
double orch__time(orch_runtime *rt);    /* since the epoch */
int orch__virtual(orch_runtime *rt);

/* A timer on the virtual clock. The struct lives in its owner (zeroed:
 * not armed); it must be stopped before its memory goes. Example:
 *   if (orch__virtual(rt)) orch__vtimer_start(rt, &o->vt, 2.5, fire);
 *   else uv_timer_start(&o->h, ...);
 * fire(vt) runs from the loop (a libuv callback: it may resume tasks). */
typedef struct orch__vtimer orch__vtimer;
typedef void (*orch__vtimer_cb)(orch__vtimer *t);
struct orch__vtimer {
  unsigned long long due, seq;
  size_t pos;                 /* 1 + index in the heap; 0: not armed */
  orch__vtimer_cb cb;
  void *data;
};
void orch__vtimer_start(orch_runtime *rt, orch__vtimer *t, double seconds, orch__vtimer_cb cb);
void orch__vtimer_stop(orch_runtime *rt, orch__vtimer *t);

#endif
