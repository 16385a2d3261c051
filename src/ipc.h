/*
 * ipc.h: what the SysV modules (l_shm.c, l_sem.c, l_msg.c) share, all
 * implemented in l_ipc.c:
 *  - option helpers (key, mode) and the table :stat() returns;
 *  - the waiter pool that runs blocking semop/msgrcv/msgsnd calls off the
 *    loop thread and resumes the waiting task.
 *
 * The waiter pool. Dedicated threads (created lazily, never libuv's
 * threadpool, since msgrcv can block forever) run one job each. A job that
 * finishes is handed back with uv_async_t; its `complete` function then runs
 * on the loop thread and pushes the task's results. Cancelling a job (task
 * cancel, await timeout, orch.exit) interrupts its thread with a signal
 * (ORCH__IPC_WAKE_SIGNAL: a handler that does nothing, installed without
 * SA_RESTART; SysV calls then fail with EINTR). A job that completed anyway
 * is given to its `abandon` function, which undoes it (posts the unit back,
 * re-sends the message) so nothing is lost. Worker threads only read and
 * write the job's plain C fields; nothing but the loop thread touches Lua.
 */
#ifndef ORCH_IPC_H
#define ORCH_IPC_H

#include <signal.h>
#include <stddef.h>
#include <sys/ipc.h>
#include <lua.h>

/* The signal that interrupts a waiter thread, and the loop thread's brief
 * waits (below). It is blocked on the loop thread until its first brief
 * sleep; scripts should not use it for their own purposes. */
#define ORCH__IPC_WAKE_SIGNAL (SIGRTMAX - 1)

/* ------------------------------------------------------------ options */

/* The required option `key` of the table at idx: an integer in
 * [-2^31, 2^32) other than 0 (IPC_PRIVATE has its own functions). */
key_t orch__ipc_optkey(lua_State *L, int idx);
/* The option `mode` (permission bits, default 0600). */
int orch__ipc_optmode(lua_State *L, int idx);
/* "0x00005095" into buf (at least 16 bytes). */
const char *orch__ipc_keystr(key_t key, char *buf);
/* The open functions' failure: ENOENT and EEXIST name the key
 * ("shm.open: no segment for key 0x00005095"), others read as orch__fail.
 * `what` names the object ("segment"). Pushes nil, msg, ename; returns 3. */
int orch__ipc_fail_open(lua_State *L, const char *op, const char *what, key_t key, int err);
/* [-0,+1] The table :stat() returns, holding id and the ipc_perm fields
 * (key, uid, gid, cuid, cgid, mode); the caller adds its own fields. */
void orch__ipc_stat_table(lua_State *L, int id, const struct ipc_perm *p);
/* Sets field `name` of the table on top to v. */
void orch__ipc_setint(lua_State *L, const char *name, lua_Integer v);

/* IPC_SET: the new owner and mode an :ipc_set{uid, gid, mode} call gives
 * (each optional), read from the option table at idx before anything is
 * changed, then applied to the ipc_perm an IPC_STAT returned. Raises for a
 * bad value; the caller checks for unknown keys. */
typedef struct {
  int has_uid, has_gid, has_mode;
  unsigned uid, gid;
  int mode;
} orch__ipc_perm_opts;
void orch__ipc_optperm(lua_State *L, int idx, orch__ipc_perm_opts *o);
void orch__ipc_applyperm(const orch__ipc_perm_opts *o, struct ipc_perm *p);

/* ------------------------------------------------------------ brief waits */

/* Before a wait becomes a waiter-thread job, the loop thread tries the call
 * a little longer itself: in a request/reply exchange the answer usually
 * comes within microseconds, and the hop to a waiter thread and back costs
 * two more thread wake-ups than the exchange itself.
 *  1. The spin: the non-blocking call again and again, for up to
 *     $ORCH_IPC_SPIN_US (default SPIN_US_DEFAULT in l_ipc.c). It never
 *     yields the CPU: on a loaded machine a yielding task waits behind
 *     CPU-bound ones for whole time slices.
 *  2. The sleep: the blocking call (no IPC_NOWAIT), which the kernel ends
 *     when the answer comes, as it wakes a blocking C program (a task woken
 *     from a sleep runs ahead of CPU-bound ones), for up to
 *     $ORCH_IPC_SLEEP_US more (default SLEEP_US_DEFAULT). A guard thread
 *     ends it past that with ORCH__IPC_WAKE_SIGNAL (the call fails with
 *     EINTR), within one of its ticks (250 µs): no per-call timer, since
 *     arming a timer that near costs tens of microseconds on a VM.
 * So the loop is held at most the two budgets and a tick. It adapts: after
 * one that ran out, the next waits skip it (1, 2, 4, ... up to 1024 of
 * them); a success resets that. Both never last longer than the caller's
 * timeout.
 *
 *   orch__ipc_brief b;
 *   if (would block && orch__ipc_brief_begin(&b, timeout)) {
 *     int m;
 *     while ((m = orch__ipc_brief_next(&b)) >= 0) {
 *       r = call(m ? 0 : IPC_NOWAIT);   // m = 1: sleep in the call
 *       if (r >= 0 || (errno != EAGAIN && errno != EINTR)) break;
 *     }
 *     orch__ipc_brief_end(&b, r >= 0);   // EINTR then means "would block"
 *     timeout = orch__ipc_brief_left(&b, timeout);
 *   }
 */
typedef struct {
  unsigned long long start, spin_end, sleep_end;
  int state;                /* 1: sleeping (the guard watches) */
  unsigned tries;

} orch__ipc_brief;
/* 1: go ahead; 0: no brief wait this time. */
int orch__ipc_brief_begin(orch__ipc_brief *b, double timeout);
/* After a try that would block: 0 try without waiting, 1 try blocking
 * (the guard watches), -1 stop. */
int orch__ipc_brief_next(orch__ipc_brief *b);
/* After the last try: ok says whether it succeeded. */
void orch__ipc_brief_end(orch__ipc_brief *b, int ok);
/* The caller's timeout (seconds; <= 0 unchanged) less the time spent. */
double orch__ipc_brief_left(orch__ipc_brief *b, double timeout);

/* ------------------------------------------------------------ waiters */

typedef struct orch__ipc_job orch__ipc_job;

struct orch__ipc_job {
  /* Set by the submitter. */
  int (*run)(orch__ipc_job *job);   /* worker: 0 or an errno; EINTR retried */
  int (*complete)(lua_State *co, orch__ipc_job *job);   /* loop: push, return n */
  void (*abandon)(orch__ipc_job *job);   /* loop: undo a cancelled success */
  int id;                 /* semid or msqid */
  long long deadline;     /* CLOCK_MONOTONIC ns, or -1 (run may use it) */
  union {
    struct { unsigned nops; int which; } sem;   /* sembufs in buf */
    struct { long type; size_t cap; size_t len; } msg;
  } u;
  void *buf;              /* malloc'ed with the job; freed with it */
  /* Results, written by the worker. */
  int err;                /* 0, an errno, or ECANCELED */
  long long result;
  /* Owned by l_ipc.c. */
  void *pool;
  lua_State *co;          /* the waiting task; NULL for background jobs */
  int state, cancelled, held;
  unsigned gen;
  unsigned long thread;   /* pthread_t of the worker running it */
  orch__ipc_job *next;
};

/* A zeroed job with `bufsize` bytes at job->buf (raises on out of memory;
 * the _alloc form returns NULL instead). */
orch__ipc_job *orch__ipc_job_new(lua_State *L, size_t bufsize);
orch__ipc_job *orch__ipc_job_alloc(size_t bufsize);

/* Queues job for a waiter thread and suspends the calling task until it
 * completes: use as `return orch__ipc_await(L, job, timeout, op);`. The pool
 * owns job from here on. timeout < 0: none (a job can also stop itself at
 * job->deadline). op names the operation in timeout messages. */
int orch__ipc_await(lua_State *L, orch__ipc_job *job, double timeout, const char *op);

/* Queues a job that no task waits for (e.g. re-sending a message that a
 * cancelled receive took) on the pool of `from` (a job being finished); it
 * is freed when done, and dropped if the runtime closes first. Returns 0 or
 * an errno (then job was freed). Loop thread only. */
int orch__ipc_background(orch__ipc_job *from, orch__ipc_job *job);

#endif
