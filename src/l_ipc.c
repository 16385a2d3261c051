/*
 * l_ipc.c: orch.ipc.list() and orch.ipc.ftok(), the option helpers shared
 * by the SysV modules, and the waiter pool (see ipc.h) that runs their
 * blocking calls.
 *
 * Ownership: the pool state hangs off the runtime (ORCH__SLOT_IPC), created
 * on the first blocking wait and freed by the runtime's close hook. A job
 * belongs to the pool from submission until it is freed: by the canceller
 * (still queued), or on the loop thread once its worker handed it back.
 * Worker threads never touch Lua; a lock guards the queues.
 *
 * What may block: only the worker threads (semtimedop, msgrcv, msgsnd
 * without IPC_NOWAIT). list() reads /proc/sysvipc and ftok() calls stat(2)
 * on the loop thread. The close hook waits (bounded) for workers to leave
 * their syscalls after interrupting them.
 */
#include "ipc.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "runtime.h"
#include "util.h"

#define SPIN_US_DEFAULT 50

/* ------------------------------------------------------------ options */

key_t orch__ipc_optkey(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (lua_getfield(L, idx, "key") == LUA_TNIL)
    orch__opt_error(L, idx, "key", "integer expected, got no value");
  lua_pop(L, 1);
  lua_Integer k = orch__opt_integer(L, idx, "key", 0);
  /* Keys are 32-bit unsigned as ipcs(1) prints them: -1 would silently
   * become 0xffffffff. */
  if (k < 0 || k > (lua_Integer)UINT32_MAX)
    orch__opt_error(L, idx, "key", "out of range (1 to 0xffffffff)");
  if (k == 0)
    orch__opt_error(L, idx, "key", "0 is IPC_PRIVATE (use private())");
  return (key_t)(int32_t)(uint32_t)k;
}

int orch__ipc_optmode(lua_State *L, int idx) {
  return orch__opt_mode(L, idx, "mode", 0600, 0777, NULL);
}

const char *orch__ipc_keystr(key_t key, char *buf) {
  snprintf(buf, 16, "0x%08x", (unsigned)key);
  return buf;
}

int orch__ipc_fail_open(lua_State *L, const char *op, const char *what, key_t key, int err) {
  char k[16];
  if (err == ENOENT)
    return orch__failf(L, "ENOENT", "%s: no %s for key %s", op, what, orch__ipc_keystr(key, k));
  if (err == EEXIST)
    return orch__failf(L, "EEXIST", "%s: a %s exists for key %s", op, what, orch__ipc_keystr(key, k));
  return orch__fail(L, op, err);
}

void orch__ipc_setint(lua_State *L, const char *name, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, name);
}

void orch__ipc_stat_table(lua_State *L, int id, const struct ipc_perm *p) {
  lua_createtable(L, 0, 16);
  orch__ipc_setint(L, "key", (lua_Integer)(uint32_t)p->__key);
  orch__ipc_setint(L, "uid", (lua_Integer)p->uid);
  orch__ipc_setint(L, "gid", (lua_Integer)p->gid);
  orch__ipc_setint(L, "cuid", (lua_Integer)p->cuid);
  orch__ipc_setint(L, "cgid", (lua_Integer)p->cgid);
  orch__ipc_setint(L, "mode", (lua_Integer)(p->mode & 0777));
  orch__ipc_setint(L, "id", id);
}

static unsigned opt_id(lua_State *L, int idx, const char *key, int *has) {
  int t = lua_getfield(L, idx, key);
  lua_pop(L, 1);
  *has = t != LUA_TNIL;
  if (!*has) return 0;
  lua_Integer v = orch__opt_integer(L, idx, key, 0);
  /* (uid_t)-1 means "unchanged" to chown(2); IPC_SET would store it. */
  if (v < 0 || v >= (lua_Integer)UINT32_MAX) orch__opt_error(L, idx, key, "out of range (0 to 2^32-2)");
  return (unsigned)v;
}

void orch__ipc_optperm(lua_State *L, int idx, orch__ipc_perm_opts *o) {
  idx = lua_absindex(L, idx);
  o->uid = opt_id(L, idx, "uid", &o->has_uid);
  o->gid = opt_id(L, idx, "gid", &o->has_gid);
  o->mode = orch__opt_mode(L, idx, "mode", 0, 0777, &o->has_mode);
}

void orch__ipc_applyperm(const orch__ipc_perm_opts *o, struct ipc_perm *p) {
  if (o->has_uid) p->uid = (uid_t)o->uid;
  if (o->has_gid) p->gid = (gid_t)o->gid;
  if (o->has_mode) p->mode = (unsigned short)((p->mode & ~0777u) | (unsigned)o->mode);
}

/* ------------------------------------------------------------ spinning */

/* The spin budget in nanoseconds (ORCH_IPC_SPIN_US overrides it; 0 turns
 * spinning off). Read once. */
static long long spin_ns = -1;

static void read_spin(void) {
  const char *e = getenv("ORCH_IPC_SPIN_US");
  long long us = SPIN_US_DEFAULT;
  if (e && *e) {
    char *end;
    long long v = strtoll(e, &end, 10);
    if (*end == '\0' && v >= 0 && v <= 10000) us = v;
  }
  spin_ns = us * 1000;
}

/* Adaptive: a spin that ran out (nothing came) makes the next waits skip
 * spinning, 1, 2, 4, ... up to SPIN_SKIP_MAX of them, so a loop starting
 * many long waits at once spends a handful of budgets, not one per wait; a
 * spin that succeeded resets it. Per thread: a runtime is one thread. */
#define SPIN_SKIP_MAX 1024
static _Thread_local unsigned spin_skip, spin_penalty;

unsigned long long orch__ipc_spin_start(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, read_spin);
  if (spin_ns <= 0) return 0;
  if (spin_skip) {
    spin_skip--;
    return 0;
  }
  return orch__mono_ns() + (unsigned long long)spin_ns;
}

int orch__ipc_spin_more(unsigned long long deadline) {
  if (!deadline) return 0;
  sched_yield();
  if (orch__mono_ns() < deadline) return 1;
  spin_penalty = spin_penalty ? (spin_penalty >= SPIN_SKIP_MAX / 2 ? SPIN_SKIP_MAX : spin_penalty * 2) : 1;
  spin_skip = spin_penalty;
  return 0;
}

void orch__ipc_spin_done(unsigned long long deadline, int ok) {
  if (deadline && ok) spin_penalty = spin_skip = 0;
}

/* ------------------------------------------------------------ waiter pool */

enum { J_QUEUED = 1, J_RUNNING, J_DONE };

/* At most MAX_THREADS concurrent blocking calls (more wait in the queue);
 * at most MAX_IDLE threads stay parked for the next wait. */
#define MAX_THREADS 256
#define MAX_IDLE 4
#define WORKER_STACK (256 * 1024)
#define KICK_MS 10

typedef struct {
  orch_runtime *rt;
  uv_async_t async;
  uv_timer_t kick;          /* re-sends the wake signal to cancelled jobs */
  int nclosing;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  orch__ipc_job *qhead, *qtail;   /* J_QUEUED, FIFO */
  orch__ipc_job *running;         /* J_RUNNING */
  orch__ipc_job *dhead, *dtail;   /* J_DONE, not yet seen by the loop */
  int nthreads, nidle, nqueued;
  int shutdown;
  int async_dead;           /* handles closed: workers must not touch them */
  unsigned gen;             /* bumped in a forked child: older jobs are orphans */
  pid_t pid;
} pool;

static void noop_handler(int sig) { (void)sig; }

static void install_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = noop_handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;   /* no SA_RESTART: the waiter's syscall must see EINTR */
  sigaction(ORCH__IPC_WAKE_SIGNAL, &sa, NULL);
}

static void job_free(orch__ipc_job *job) {
  free(job);   /* job->buf lives in the same block */
}

orch__ipc_job *orch__ipc_job_alloc(size_t bufsize) {
  size_t head = (sizeof(orch__ipc_job) + 15) & ~(size_t)15;
  if (bufsize > SIZE_MAX - head) return NULL;
  orch__ipc_job *job = calloc(1, head + bufsize);
  if (!job) return NULL;
  job->buf = (char *)job + head;
  job->deadline = -1;
  return job;
}

orch__ipc_job *orch__ipc_job_new(lua_State *L, size_t bufsize) {
  orch__ipc_job *job = orch__ipc_job_alloc(bufsize);
  if (!job) luaL_error(L, "out of memory");
  return job;
}

static void unlink_job(orch__ipc_job **head, orch__ipc_job *job) {
  for (orch__ipc_job **p = head; *p; p = &(*p)->next)
    if (*p == job) { *p = job->next; job->next = NULL; return; }
}

/* Takes a J_QUEUED job off the queue (lock held). */
static void dequeue(pool *p, orch__ipc_job *job) {
  orch__ipc_job *prev = NULL;
  for (orch__ipc_job **q = &p->qhead; *q; prev = *q, q = &(*q)->next)
    if (*q == job) {
      *q = job->next;
      if (p->qtail == job) p->qtail = prev;
      job->next = NULL;
      p->nqueued--;
      return;
    }
}

/* In a forked child the workers do not exist and the lock may have been
 * held by one of them: start over. Jobs of the parent are left alone (a
 * few bytes, never freed) since the runtime may still cancel them. */
static void check_fork(pool *p) {
  if (p->pid == getpid()) return;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  p->qhead = p->qtail = p->running = p->dhead = p->dtail = NULL;
  p->nthreads = p->nidle = p->nqueued = 0;
  p->shutdown = 0;
  p->gen++;
  p->pid = getpid();
}

static void release_hold(pool *p, orch__ipc_job *job) {
  if (job->held) {
    job->held = 0;
    orch__hold(p->rt, -1);
  }
}

static void *worker_main(void *arg) {
  pool *p = arg;
  sigset_t set;
  sigfillset(&set);
  sigdelset(&set, ORCH__IPC_WAKE_SIGNAL);
  /* Faults stay deliverable (a sanitizer's or debugger's handler). */
  sigdelset(&set, SIGSEGV);
  sigdelset(&set, SIGBUS);
  sigdelset(&set, SIGFPE);
  sigdelset(&set, SIGILL);
  pthread_sigmask(SIG_SETMASK, &set, NULL);
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->qhead && !p->shutdown) {
      if (p->nidle >= MAX_IDLE) goto out;
      p->nidle++;
      pthread_cond_wait(&p->cv, &p->mu);
      p->nidle--;
    }
    if (p->shutdown) break;
    orch__ipc_job *job = p->qhead;
    p->qhead = job->next;
    if (!p->qhead) p->qtail = NULL;
    p->nqueued--;
    job->state = J_RUNNING;
    job->thread = (unsigned long)pthread_self();
    job->next = p->running;
    p->running = job;
    pthread_mutex_unlock(&p->mu);

    int err = ECANCELED;
    while (!__atomic_load_n(&job->cancelled, __ATOMIC_SEQ_CST)) {
      err = job->run(job);
      if (err != EINTR) break;
      err = ECANCELED;
    }

    pthread_mutex_lock(&p->mu);
    job->err = err;
    unlink_job(&p->running, job);
    job->state = J_DONE;
    if (p->dtail) p->dtail->next = job;
    else p->dhead = job;
    p->dtail = job;
    if (!p->async_dead) uv_async_send(&p->async);
  }
out:
  p->nthreads--;
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* Queues job; starts a thread when no parked one will take it. */
static int enqueue(pool *p, orch__ipc_job *job) {
  int err = 0;
  pthread_mutex_lock(&p->mu);
  if (p->shutdown) {
    pthread_mutex_unlock(&p->mu);
    return ESHUTDOWN;
  }
  job->state = J_QUEUED;
  job->next = NULL;
  if (p->qtail) p->qtail->next = job;
  else p->qhead = job;
  p->qtail = job;
  p->nqueued++;
  if (p->nidle < p->nqueued && p->nthreads < MAX_THREADS) {
    pthread_attr_t attr;
    pthread_t tid;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, WORKER_STACK);
    err = pthread_create(&tid, &attr, worker_main, p);
    pthread_attr_destroy(&attr);
    if (err == 0) p->nthreads++;
    else if (p->nthreads > 0) err = 0;   /* an existing thread takes it later */
    else dequeue(p, job);
  }
  if (err == 0) pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return err;
}

static void kick_cb(uv_timer_t *h) {
  pool *p = h->data;
  int any = 0;
  pthread_mutex_lock(&p->mu);
  for (orch__ipc_job *j = p->running; j; j = j->next)
    if (j->cancelled) {
      pthread_kill((pthread_t)j->thread, ORCH__IPC_WAKE_SIGNAL);
      any = 1;
    }
  pthread_mutex_unlock(&p->mu);
  if (!any) uv_timer_stop(&p->kick);
}

/* The runtime's cancel function: afterwards the task is never woken. */
static void job_cancel(void *data) {
  orch__ipc_job *job = data;
  pool *p = job->pool;
  check_fork(p);
  if (job->gen != p->gen) return;
  release_hold(p, job);
  pthread_mutex_lock(&p->mu);
  if (job->state == J_QUEUED) {
    dequeue(p, job);
    pthread_mutex_unlock(&p->mu);
    job_free(job);
    return;
  }
  __atomic_store_n(&job->cancelled, 1, __ATOMIC_SEQ_CST);
  if (job->state == J_RUNNING) {
    pthread_kill((pthread_t)job->thread, ORCH__IPC_WAKE_SIGNAL);
    pthread_mutex_unlock(&p->mu);
    /* The signal is lost if it lands just before the worker enters its
     * syscall; the kick timer repeats it until the worker lets go. */
    if (!uv_is_active((uv_handle_t *)&p->kick))
      uv_timer_start(&p->kick, kick_cb, KICK_MS, KICK_MS);
    return;
  }
  pthread_mutex_unlock(&p->mu);   /* J_DONE: async_cb undoes it */
}

static void finish(pool *p, orch__ipc_job *job) {
  if (!job->co || job->cancelled) {
    if (job->cancelled && job->err == 0 && job->abandon) job->abandon(job);
    job_free(job);
    return;
  }
  lua_State *co = job->co;
  release_hold(p, job);
  lua_checkstack(co, 8);
  int n = job->complete(co, job);
  job_free(job);
  orch__wake(co, n);
}

static void async_cb(uv_async_t *h) {
  pool *p = h->data;
  pthread_mutex_lock(&p->mu);
  orch__ipc_job *list = p->dhead;
  p->dhead = p->dtail = NULL;
  pthread_mutex_unlock(&p->mu);
  while (list) {
    orch__ipc_job *next = list->next;
    finish(p, list);
    list = next;
  }
}

static void handle_closed(uv_handle_t *h) {
  pool *p = h->data;
  if (--p->nclosing == 0) free(p);
}

static void pool_close(orch_runtime *rt, void *data) {
  pool *p = data;
  *orch__slot(rt, ORCH__SLOT_IPC) = NULL;
  check_fork(p);
  pthread_mutex_lock(&p->mu);
  p->shutdown = 1;
  pthread_cond_broadcast(&p->cv);
  while (p->qhead) {
    orch__ipc_job *j = p->qhead;
    p->qhead = j->next;
    job_free(j);
  }
  p->qtail = NULL;
  for (orch__ipc_job *j = p->running; j; j = j->next)
    __atomic_store_n(&j->cancelled, 1, __ATOMIC_SEQ_CST);
  pthread_mutex_unlock(&p->mu);
  /* Interrupt the workers until they leave (repeating, for the same reason
   * as the kick timer); give up after a few seconds rather than hang. */
  int left = 1;
  for (int i = 0; i < 5000 && left; i++) {
    pthread_mutex_lock(&p->mu);
    left = p->nthreads;
    for (orch__ipc_job *j = p->running; j; j = j->next)
      pthread_kill((pthread_t)j->thread, ORCH__IPC_WAKE_SIGNAL);
    pthread_mutex_unlock(&p->mu);
    if (left) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
  }
  pthread_mutex_lock(&p->mu);
  p->async_dead = 1;
  orch__ipc_job *list = p->dhead;
  p->dhead = p->dtail = NULL;
  pthread_mutex_unlock(&p->mu);
  while (list) {
    orch__ipc_job *next = list->next;
    list->cancelled = 1;   /* nobody to wake: undo what completed */
    finish(p, list);
    list = next;
  }
  p->nclosing = 2;
  if (left) p->nclosing++;   /* a stuck worker still uses p: never free it */
  uv_close((uv_handle_t *)&p->async, handle_closed);
  uv_close((uv_handle_t *)&p->kick, handle_closed);
}

static void pool_fork_child(orch_runtime *rt, void *data) {
  check_fork(data);
}

static pool *get_pool(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  pool **slot = (pool **)orch__slot(rt, ORCH__SLOT_IPC);
  if (*slot) {
    check_fork(*slot);
    return *slot;
  }
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, install_handler);
  /* Keep the wake signal off the loop thread (threads it starts inherit
   * this; the workers unblock it). */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, ORCH__IPC_WAKE_SIGNAL);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  pool *p = calloc(1, sizeof *p);
  if (!p) luaL_error(L, "out of memory");
  p->rt = rt;
  p->pid = getpid();
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  uv_async_init(orch__loop(L), &p->async, async_cb);
  p->async.data = p;
  uv_unref((uv_handle_t *)&p->async);
  uv_timer_init(orch__loop(L), &p->kick);
  p->kick.data = p;
  uv_unref((uv_handle_t *)&p->kick);
  orch__on_close(rt, pool_close, p);
  orch__on_fork_child(rt, pool_fork_child, p);
  *slot = p;
  return p;
}

int orch__ipc_await(lua_State *L, orch__ipc_job *job, double timeout, const char *op) {
  if (!orch__current(L)) {
    job_free(job);
    return luaL_error(L, "%s: must be called from a task", op);
  }
  pool *p = get_pool(L);
  job->pool = p;
  job->co = L;
  job->gen = p->gen;
  int err = enqueue(p, job);
  if (err) {
    job_free(job);
    return orch__failf(L, orch__errname(err), "%s: cannot start a waiter thread", op);
  }
  job->held = 1;
  orch__hold(p->rt, 1);
  return orch__await(L, timeout, op, job_cancel, job);
}

int orch__ipc_background(orch__ipc_job *from, orch__ipc_job *job) {
  pool *p = from->pool;
  if (p->pid != getpid() || from->gen != p->gen) {
    job_free(job);
    return ESRCH;
  }
  job->pool = p;
  job->co = NULL;
  job->gen = p->gen;
  int err = enqueue(p, job);
  if (err) job_free(job);
  return err;
}

/* ------------------------------------------------------------ orch.ipc */

static const char *const kinds[] = {"shm", "sem", "msg", NULL};

/* One /proc/sysvipc file: a header naming the columns, one row per object.
 * Every column becomes a field (perms is octal there); then the common
 * fields kind, id, mode, owner and size. */
static void list_kind(lua_State *L, const char *kind, lua_Integer *n) {
  char path[64], line[1024];
  snprintf(path, sizeof path, "/proc/sysvipc/%s", kind);
  FILE *f = fopen(path, "re");
  if (!f) return;
  char names[32][16];
  int ncol = 0;
  if (fgets(line, sizeof line, f)) {
    char *save, *tok = strtok_r(line, " \t\n", &save);
    while (tok && ncol < 32) {
      snprintf(names[ncol++], sizeof names[0], "%s", tok);
      tok = strtok_r(NULL, " \t\n", &save);
    }
  }
  while (fgets(line, sizeof line, f)) {
    char *save, *tok = strtok_r(line, " \t\n", &save);
    if (!tok) continue;
    lua_createtable(L, 0, ncol + 5);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    for (int i = 0; i < ncol && tok; i++, tok = strtok_r(NULL, " \t\n", &save)) {
      const char *name = names[i];
      long long v;
      if (strcmp(name, "perms") == 0) {
        v = strtoll(tok, NULL, 8);
        lua_pushinteger(L, v & 0777);
        lua_setfield(L, -2, "mode");
      } else if (strcmp(name, "key") == 0) {
        v = (uint32_t)strtol(tok, NULL, 10);   /* printed signed */
      } else {
        v = (long long)strtoull(tok, NULL, 10);
      }
      lua_pushinteger(L, v);
      if (strcmp(name, "shmid") == 0 || strcmp(name, "semid") == 0 || strcmp(name, "msqid") == 0)
        lua_pushvalue(L, -1), lua_setfield(L, -3, "id");
      else if (strcmp(name, "uid") == 0)
        lua_pushvalue(L, -1), lua_setfield(L, -3, "owner");
      else if (strcmp(name, "size") == 0 || strcmp(name, "nsems") == 0 || strcmp(name, "cbytes") == 0)
        lua_pushvalue(L, -1), lua_setfield(L, -3, "size");
      lua_setfield(L, -2, name);
    }
    lua_rawseti(L, -2, ++*n);
  }
  fclose(f);
}

static int ipc_list(lua_State *L) {
  int only = lua_isnoneornil(L, 1) ? -1 : luaL_checkoption(L, 1, NULL, kinds);
  lua_settop(L, 1);
  lua_newtable(L);
  lua_Integer n = 0;
  for (int i = 0; kinds[i]; i++)
    if (only < 0 || only == i) list_kind(L, kinds[i], &n);
  return 1;
}

static int ipc_ftok(lua_State *L) {
  const char *path = orch__checkpath(L, 1, NULL);
  lua_Integer proj = luaL_optinteger(L, 2, 1);
  if (proj < 1 || proj > 255) luaL_argerror(L, 2, "project id must be 1 to 255");
  orch__check_nargs(L, 2);
  key_t k = ftok(path, (int)proj);
  if (k == -1) return orch__fail(L, "ipc.ftok", errno);
  lua_pushinteger(L, (lua_Integer)(uint32_t)k);
  return 1;
}

int orch__open_ipc(lua_State *L) {
  static const luaL_Reg fns[] = {{"list", ipc_list}, {"ftok", ipc_ftok}, {NULL, NULL}};
  lua_newtable(L);
  luaL_newlib(L, fns);
  lua_setfield(L, -2, "ipc");
  return 1;
}
