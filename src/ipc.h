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

/* The signal that interrupts a waiter thread. It is blocked on the loop
 * thread; scripts should not use it for their own purposes. */
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

/* ------------------------------------------------------------ spinning */

/* Before a wait becomes a waiter-thread job, the loop thread retries the
 * non-blocking call for a few microseconds, yielding the CPU between tries:
 * in a request/reply exchange the answer usually comes within that time,
 * and the hop to a thread and back (two wake-ups) costs more than the whole
 * exchange. orch__ipc_spin_start returns the deadline (0: no spinning this
 * time); orch__ipc_spin_more yields and says whether to try again. The
 * budget is SPIN_US_DEFAULT (l_ipc.c) or $ORCH_IPC_SPIN_US microseconds (0:
 * off), and it adapts: after a spin that ran out, the next waits skip it. */
unsigned long long orch__ipc_spin_start(void);
int orch__ipc_spin_more(unsigned long long deadline);
/* After the last try: ok says whether it succeeded (a success while
 * spinning re-enables spinning at once). */
void orch__ipc_spin_done(unsigned long long deadline, int ok);

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
