/*
 * l_proc.c: processes. orch.spawn, orch.fork, orch.exec, orch.daemonize, the
 * orch.Process object, the process table and the reaper, orch.proc.* (/proc
 * info, subreaper, orphans, init mode), orch.getpid/getppid.
 *
 * Ownership: this file is the only reaper of the process (see proc.h). The
 * per-runtime proc_state holds one unref'd SIGCHLD uv_signal_t whose
 * callback loops wait4(-1, WNOHANG) and dispatches each status to the
 * orch__child registered for that pid in a hash table; unknown pids are
 * adopted orphans. A registered child holds the loop (orch__hold).
 * An orch.Process userdata embeds its orch__child; it is anchored in the
 * registry from spawn until its status arrives, so the GC never collects a
 * process that can still report. Tasks waiting in :wait() are malloc'ed
 * waiter records, freed when woken or cancelled.
 *
 * Spawning: clone(CLONE_VM|CLONE_VFORK) on a private stack. The child only
 * makes system calls (no Lua, no malloc, no locks), resets every signal to
 * its default and unblocks them right before exec, and reports a failure by
 * writing errno into memory it shares with the suspended parent (which is
 * what a close-on-exec error pipe would carry, without the fd and the three
 * extra system calls). Credentials change with raw system calls: glibc's
 * setuid() would broadcast to the parent's threads, whose memory we share.
 *
 * What may block: nothing on the loop thread, except reading /proc files
 * (orch.proc.info), opening stdio paths, user lookups (getpwnam_r) and the
 * original process's short waits inside orch.daemonize before it exits.
 */
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cgroup.h"
#include "procfs.h"
#include "stream.h"
#include "util.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
/* A spawned child leaves its frames on the shared stack when it execs, and
 * AddressSanitizer's shadow of them (scopes, redzones) with them. */
#define UNPOISON_STACK(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define UNPOISON_STACK(p, n) ((void)0)
#endif

extern char **environ;

#define PROCESS_MT "orch.Process"
#define FDBOX_MT "orch.proc.fdbox"
#define ORPHAN_MT "orch.OrphanWatch"
#define DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"
#define CHILD_STACK (256 * 1024)
#define MAX_EXTRA_FDS 64
#define MAX_FDMAP 256

/* ---------------------------------------------------------------- state */

typedef struct {
  orch_runtime *rt;
  uv_signal_t sigchld;
  orch__child **buckets;
  size_t mask;                /* nbuckets - 1 */
  size_t count;
  char *stack;                /* the spawner's child stack, made on first use */
  int devnull;                /* cached /dev/null (close-on-exec) or -1 */
  int orphans_ref;            /* registry: set of orch.OrphanWatch -> true */
  uv_signal_t *init_sigs[32]; /* init mode forwarders (malloc'ed) */
  int ninit;
  int init_on;                /* init mode was asked for (and not stopped) */
  double init_grace;          /* PID 1: seconds between TERM and KILL at exit */
  int pidfile_fd;             /* held (locked) for the life of a daemon */
  /* Descriptors orch inherited (open without close-on-exec when the module
   * was opened), by number and identity: what orch.daemonize closes. */
  struct { int fd; dev_t dev; ino_t ino; } inherited[64];
  int ninherited;
} proc_state;

static proc_state *get_state(orch_runtime *rt) {
  return *orch__slot(rt, ORCH__SLOT_PROC);
}

static proc_state *check_state(lua_State *L) {
  proc_state *st = get_state(orch__rt(L));
  if (!st) luaL_error(L, "orch.proc: the module is not initialised");
  return st;
}

static void table_grow(proc_state *st) {
  size_t n = (st->mask + 1) * 2;
  orch__child **b = calloc(n, sizeof *b);
  if (!b) return;                       /* longer chains, still correct */
  for (size_t i = 0; i <= st->mask; i++) {
    orch__child *c = st->buckets[i];
    while (c) {
      orch__child *next = c->next;
      size_t k = (size_t)c->pid & (n - 1);
      c->next = b[k];
      b[k] = c;
      c = next;
    }
  }
  free(st->buckets);
  st->buckets = b;
  st->mask = n - 1;
}

static void table_add(proc_state *st, orch__child *c) {
  if (st->count >= (st->mask + 1) * 2) table_grow(st);
  size_t k = (size_t)c->pid & st->mask;
  c->next = st->buckets[k];
  st->buckets[k] = c;
  st->count++;
  orch__hold(st->rt, 1);
}

/* Unlinks and returns the child registered for pid, or NULL. */
static orch__child *table_take(proc_state *st, pid_t pid, orch__child *want) {
  orch__child **pp = &st->buckets[(size_t)pid & st->mask];
  for (; *pp; pp = &(*pp)->next) {
    orch__child *c = *pp;
    if (c->pid == pid && (!want || c == want)) {
      *pp = c->next;
      c->next = NULL;
      st->count--;
      orch__hold(st->rt, -1);
      return c;
    }
  }
  return NULL;
}

void orch__child_add(orch_runtime *rt, orch__child *c) {
  proc_state *st = get_state(rt);
  if (st) table_add(st, c);
}

void orch__child_remove(orch_runtime *rt, orch__child *c) {
  proc_state *st = get_state(rt);
  if (st) table_take(st, c->pid, c);
}

orch__child *orch__child_find(orch_runtime *rt, pid_t pid) {
  proc_state *st = get_state(rt);
  if (!st) return NULL;
  for (orch__child *c = st->buckets[(size_t)pid & st->mask]; c; c = c->next)
    if (c->pid == pid) return c;
  return NULL;
}

/* ---------------------------------------------------------------- statuses */

/* [-0,+2] code, signal name: `3, nil` for exit(3), `nil, "KILL"` when killed. */
static int push_status(lua_State *L, int status) {
  if (WIFEXITED(status)) {
    lua_pushinteger(L, WEXITSTATUS(status));
    lua_pushnil(L);
  } else {
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    const char *n = orch__signame(sig);
    lua_pushnil(L);
    if (n) lua_pushstring(L, n); else lua_pushinteger(L, sig);
  }
  return 2;
}

/* ---------------------------------------------------------------- orphans */

static void orphan_exit(proc_state *st, pid_t pid, int status) {
  lua_State *L = orch__mainthread(st->rt);
  if (st->orphans_ref == LUA_NOREF) return;
  luaL_checkstack(L, 8, NULL);
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->orphans_ref);
  int set = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, set)) {
    lua_pop(L, 1);
    lua_getiuservalue(L, -1, 1);          /* the handler */
    if (lua_isfunction(L, -1)) {
      lua_pushinteger(L, pid);
      push_status(L, status);
      orch__spawn_task(L, 3);
    }
    lua_pop(L, 1);
  }
  lua_settop(L, set - 1);
}

/* ---------------------------------------------------------------- reaper */

static void reap(proc_state *st) {
  for (;;) {
    int status;
    struct rusage ru;
    pid_t pid = wait4(-1, &status, WNOHANG, &ru);
    if (pid < 0 && errno == EINTR) continue;
    if (pid <= 0) break;
    orch__child *c = table_take(st, pid, NULL);
    if (c) c->on_exit(c, status, &ru);
    else orphan_exit(st, pid, status);
  }
}

static void on_sigchld(uv_signal_t *h, int sig) {
  reap(h->data);
}

/* ---------------------------------------------------------------- spawner */

typedef struct {
  const orch__spawn_req *req;
  const char *path;          /* search path, or NULL for no search */
  volatile int err;
  const char *volatile step;
  int ncg;                   /* how many of req->cgroup_fds to write */
} spawn_ctx;

/* Tries file in each directory of path like execvp (no /bin/sh fallback).
 * Returns only on failure, with errno set. */
static void exec_search(const char *file, const char *path, char *const argv[],
                        char *const envp[]) {
  if (!path || strchr(file, '/')) {
    execve(file, argv, envp);
    return;
  }
  size_t flen = strlen(file);
  char buf[PATH_MAX];
  int eacces = 0;
  const char *p = path;
  for (;;) {
    const char *e = strchrnul(p, ':');
    size_t dlen = (size_t)(e - p);
    if (dlen + flen + 2 <= sizeof buf) {
      if (dlen) {
        memcpy(buf, p, dlen);
        buf[dlen++] = '/';
      }
      memcpy(buf + dlen, file, flen + 1);
      execve(buf, argv, envp);
      switch (errno) {
        case EACCES: eacces = 1; break;
        case ENOENT: case ENOTDIR: case ESTALE: case ENODEV: case ETIMEDOUT: break;
        default: return;
      }
    }
    if (!*e) break;
    p = e + 1;
  }
  errno = eacces ? EACCES : ENOENT;
}

/* The kernel's struct sigaction, opaque: all zeroes is SIG_DFL with no
 * flags and an empty mask whatever the architecture's layout. The raw call
 * also reaches the signals glibc reserves (32, 33), which an ignoring parent
 * of orch may have left ignored, and bypasses sanitizer interceptors. */
typedef struct { unsigned long w[8]; } ksigaction;
static const ksigaction ksa_default;

static int raw_sigaction(int sig, const ksigaction *act, ksigaction *old) {
  return (int)syscall(SYS_rt_sigaction, sig, act, old, (size_t)(_NSIG / 8));
}

/* Never returns: exit_group through syscall() so no sanitizer runtime sees a
 * noreturn call on a foreign stack. */
static void child_fail(spawn_ctx *x, const char *step) {
  x->err = errno ? errno : EINVAL;
  x->step = step;
  for (;;) syscall(SYS_exit_group, 127);
}

static int spawn_child(void *arg) {
  spawn_ctx *x = arg;
  const orch__spawn_req *r = x->req;
  /* Handlers of the parent must never run here (they would write into its
   * memory and its signal pipe), and ignored signals should not leak into
   * the new program: every disposition goes back to the default while all
   * signals are still blocked. */
  for (int s = 1; s < NSIG; s++)
    if (s != SIGKILL && s != SIGSTOP) raw_sigaction(s, &ksa_default, NULL);

  /* Into the cgroups before anything else: what the program does, and the
   * children it forks, are accounted and limited there. */
  for (int i = 0; i < x->ncg; i++)
    if (write(r->cgroup_fds[i], "0", 1) < 0) child_fail(x, "cgroup");

  if (r->flags & ORCH__SPAWN_SETSID) {
    if (setsid() < 0) child_fail(x, "setsid");
  } else if (r->flags & ORCH__SPAWN_PGROUP) {
    if (setpgid(0, 0) < 0) child_fail(x, "setpgid");
  }
  orch__child_nofile();
  for (int i = 0; i < r->nrlimits; i++)
    if (setrlimit((__rlimit_resource_t)r->rlimits[i].resource, &r->rlimits[i].lim) < 0)
      child_fail(x, "setrlimit");
  if (r->flags & ORCH__SPAWN_UMASK) umask(r->umask);

  /* Only the fds asked for reach the program, even those orch itself was
   * started with: everything above 2 becomes close-on-exec, and dup2 below
   * clears the flag on the targets. */
  syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */);

  if (r->nfds > 0) {
    /* Move every source out of the way of every target first, so that a
     * source that is also another mapping's target is not clobbered. */
    int src[MAX_FDMAP];
    int maxt = 2;
    for (int i = 0; i < r->nfds; i++)
      if (r->fds[i].target > maxt) maxt = r->fds[i].target;
    for (int i = 0; i < r->nfds; i++) {
      int s = r->fds[i].source;
      if (s <= maxt) {
        s = fcntl(s, F_DUPFD_CLOEXEC, maxt + 1);
        if (s < 0) child_fail(x, "dup");
      }
      src[i] = s;
    }
    for (int i = 0; i < r->nfds; i++)
      if (dup2(src[i], r->fds[i].target) < 0) child_fail(x, "dup");
  }

  if (r->flags & ORCH__SPAWN_GROUPS)
    if (syscall(SYS_setgroups, (size_t)r->ngroups, r->groups) < 0) child_fail(x, "setgroups");
  if (r->flags & ORCH__SPAWN_SETGID)
    if (syscall(SYS_setresgid, r->gid, r->gid, r->gid) < 0) child_fail(x, "setgid");
  if (r->flags & ORCH__SPAWN_SETUID)
    if (syscall(SYS_setresuid, r->uid, r->uid, r->uid) < 0) child_fail(x, "setuid");
  if (r->cwd && chdir(r->cwd) < 0) child_fail(x, "chdir");

  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  exec_search(r->file, x->path, r->argv, r->envp ? r->envp : environ);
  child_fail(x, "exec");
  return 127;
}

static int ensure_stack(proc_state *st) {
  if (st->stack) return 0;
  void *p = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return -errno;
  st->stack = p;
  return 0;
}

#if defined(__x86_64__) && defined(SYS_clone3)
#define HAVE_CLONE3_INTO 1
/* clone3(CLONE_VM|CLONE_VFORK|CLONE_INTO_CGROUP) running fn(arg) on the
 * given stack, as glibc's clone() does for clone(2) (glibc exports no
 * clone3). The child starts on the new stack with every register but rax,
 * rcx and r11 as the parent had them: it calls fn with arg from r12/r13
 * and exits with its result; it never returns here. Returns the pid or
 * -errno. */
static long clone3_into(int (*fn)(void *), void *arg, char *stack, size_t size, int cgdir) {
  struct {
    unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size,
                       tls, set_tid, set_tid_size, cgroup;
  } ca;
  memset(&ca, 0, sizeof ca);
  ca.flags = CLONE_VM | CLONE_VFORK | 0x200000000ULL /* CLONE_INTO_CGROUP */;
  ca.exit_signal = SIGCHLD;
  ca.stack = (unsigned long long)(uintptr_t)stack;
  ca.stack_size = size;
  ca.cgroup = (unsigned long long)cgdir;
  register long rax __asm__("rax") = SYS_clone3;
  register void *rdi __asm__("rdi") = &ca;
  register size_t rsi __asm__("rsi") = sizeof ca;
  register int (*r12)(void *) __asm__("r12") = fn;
  register void *r13 __asm__("r13") = arg;
  __asm__ volatile(
    "syscall\n\t"
    "test %%rax, %%rax\n\t"
    "jnz 1f\n\t"
    "xor %%ebp, %%ebp\n\t"
    "mov %%r13, %%rdi\n\t"
    "call *%%r12\n\t"
    "mov %%eax, %%edi\n\t"
    "mov $231, %%eax\n\t"       /* exit_group */
    "syscall\n\t"
    "hlt\n"
    "1:\n\t"
    : "+r"(rax)
    : "r"(rdi), "r"(rsi), "r"(r12), "r"(r13)
    : "rcx", "r11", "memory");
  return rax;
}
static int clone3_works = 1;       /* cleared on ENOSYS/E2BIG/EINVAL */
#endif

int orch__spawn(orch_runtime *rt, const orch__spawn_req *req, orch__child *c,
                const char **step) {
  proc_state *st = get_state(rt);
  *step = "spawn";
  if (!st) return -ENOSYS;
  if (req->nfds < 0 || req->nfds > MAX_FDMAP) return -EINVAL;
  int r = ensure_stack(st);
  if (r < 0) return r;
  spawn_ctx x = { req, NULL, 0, NULL, req->ncgroup_fds };
  if (req->search && !strchr(req->file, '/')) {
    x.path = req->search_path;
    if (!x.path) x.path = getenv("PATH");
    if (!x.path) x.path = DEFAULT_PATH;
  }
  UNPOISON_STACK(st->stack, CHILD_STACK);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pid_t pid = -1;
  int e = 0;
#ifdef HAVE_CLONE3_INTO
  if ((req->flags & ORCH__SPAWN_CGROUP) && clone3_works && req->ncgroup_fds > 0) {
    /* Born in the v2 cgroup: the child skips writing the last fd. */
    x.ncg = req->ncgroup_fds - 1;
    long r3 = clone3_into(spawn_child, &x, st->stack, CHILD_STACK, req->cgroup_dir);
    if (r3 >= 0) pid = (pid_t)r3;
    else if (r3 == -ENOSYS || r3 == -E2BIG || r3 == -EINVAL) clone3_works = 0;
    else e = (int)-r3;
    if (pid < 0 && !e) x.ncg = req->ncgroup_fds;
  }
  if (pid < 0 && !e) {
#endif
  pid = clone(spawn_child, st->stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &x);
  e = errno;
#ifdef HAVE_CLONE3_INTO
  }
#endif
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (pid < 0) {
    *step = "clone";
    return -e;
  }
  if (x.err) {
    /* The child has already called exit: this wait is immediate. */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    *step = x.step;
    return -x.err;
  }
  c->pid = pid;
  table_add(st, c);
  return pid;
}

/* ---------------------------------------------------------------- kill */

/* pid is the id of one of orch's own threads (a libuv threadpool worker, a
 * waiter thread): kill(2) takes thread ids and would signal orch itself. */
static int own_thread(pid_t pid) {
  char path[48];
  snprintf(path, sizeof path, "/proc/self/task/%d", (int)pid);
  return access(path, F_OK) == 0;
}

int orch__kill(pid_t pid, int sig, int flags, unsigned long long start) {
  int group = flags & ORCH__KILL_GROUP;
  if (pid <= 1 || pid == getpid() || (group && pid == getpgrp())) return ORCH__KILL_REFUSED;
  if (!group && own_thread(pid)) return ORCH__KILL_REFUSED;
  if (start) {
    /* A pidfd pins the process: checked and signalled as one identity. */
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0 && errno != ENOSYS) return -errno;
    unsigned long long t = 0;
    int r = orch__procfs_start_time(pid, &t);
    if (r == 0 && t != start) r = -ESRCH;
    if (r == 0) {
      if (group) r = killpg(pid, sig) < 0 ? -errno : 0;
      else if (fd >= 0) r = syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0) < 0 ? -errno : 0;
      else r = kill(pid, sig) < 0 ? -errno : 0;
    }
    if (fd >= 0) close(fd);
    return r;
  }
  int r = group ? killpg(pid, sig) : kill(pid, sig);
  return r < 0 ? -errno : 0;
}

int orch__kill_fail(lua_State *L, const char *op, pid_t pid, int flags, int r) {
  if (r == ORCH__KILL_REFUSED) {
    if (pid <= 1)
      return orch__failf(L, "EPERM", "%s: refusing to signal pid %d", op, (int)pid);
    if ((flags & ORCH__KILL_GROUP) && pid == getpgrp())
      return orch__failf(L, "EPERM", "%s: refusing to signal orch's own process group", op);
    return orch__failf(L, "EPERM", "%s: refusing to signal orch itself", op);
  }
  return orch__fail(L, op, -r);
}

/* ---------------------------------------------------------------- Process */

enum { P_RUNNING, P_EXITED, P_FOREIGN };
enum { UVAL_STDIN = 1, UVAL_STDOUT, UVAL_STDERR, UVAL_ONEXIT, UVAL_NSLOTS = UVAL_ONEXIT };

typedef struct waiter {
  struct waiter *next, **pprev;
  lua_State *co;
} waiter;

typedef struct {
  orch__child child;          /* first: the reaper hands us &child */
  orch_runtime *rt;
  int state;
  int status;
  int leader;                 /* spawned as a process group leader */
  int anchor;                 /* registry ref while the status may come */
  struct rusage ru;
  waiter *waiters;
} process;

static process *check_process(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, PROCESS_MT);
}

static void waiter_unlink(waiter *w) {
  if (w->pprev) {
    *w->pprev = w->next;
    if (w->next) w->next->pprev = w->pprev;
  }
  w->next = NULL;
  w->pprev = NULL;
}

static void waiter_cancel(void *data) {
  waiter *w = data;
  waiter_unlink(w);
  free(w);
}

static void process_exited(orch__child *c, int status, const struct rusage *ru) {
  process *p = (process *)c;
  lua_State *L = orch__mainthread(p->rt);
  p->state = P_EXITED;
  p->status = status;
  p->ru = *ru;
  luaL_checkstack(L, 8, NULL);
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->anchor);   /* keeps p alive below */
  int ud = lua_gettop(L);
  luaL_unref(L, LUA_REGISTRYINDEX, p->anchor);
  p->anchor = LUA_NOREF;

  if (lua_getiuservalue(L, ud, UVAL_ONEXIT) == LUA_TTABLE) {
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      push_status(L, status);
      orch__spawn_task(L, 2);
      lua_pop(L, 1);
    }
    lua_pushnil(L);
    lua_setiuservalue(L, ud, UVAL_ONEXIT);
  }
  lua_pop(L, 1);

  /* Woken tasks run right away and may cancel other waiters: those unlink
   * themselves from this local list through their pprev. */
  waiter *head = p->waiters;
  p->waiters = NULL;
  if (head) head->pprev = &head;
  while (head) {
    waiter *w = head;
    waiter_unlink(w);
    lua_State *co = w->co;
    free(w);
    push_status(co, status);
    orch__wake(co, 2);
  }
  lua_settop(L, ud - 1);
}

/* [-0,+1] A new orch.Process in the not-started state. */
static process *process_new(lua_State *L, orch_runtime *rt) {
  process *p = lua_newuserdatauv(L, sizeof *p, UVAL_NSLOTS);
  memset(p, 0, sizeof *p);
  p->rt = rt;
  p->state = P_FOREIGN;
  p->anchor = LUA_NOREF;
  p->child.on_exit = process_exited;
  luaL_setmetatable(L, PROCESS_MT);
  return p;
}

static int process_wait(lua_State *L) {
  process *p = check_process(L, 1);
  double timeout = orch__optseconds(L, 2, -1);
  orch__check_task(L, "wait");
  if (p->state == P_EXITED) return push_status(L, p->status);
  if (p->state != P_RUNNING)
    return orch__failf(L, "ECHILD", "wait: process %d is not a child of this process", (int)p->child.pid);
  waiter *w = malloc(sizeof *w);
  if (!w) return luaL_error(L, "wait: out of memory");
  w->co = L;
  w->next = p->waiters;
  w->pprev = &p->waiters;
  if (p->waiters) p->waiters->pprev = &w->next;
  p->waiters = w;
  return orch__await(L, timeout, "wait", waiter_cancel, w);
}

static int process_on_exit(lua_State *L) {
  process *p = check_process(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  if (p->state == P_EXITED) {
    lua_pushvalue(L, 2);
    push_status(L, p->status);
    orch__spawn_task(L, 2);
    lua_pop(L, 1);
  } else if (p->state == P_RUNNING) {
    if (lua_getiuservalue(L, 1, UVAL_ONEXIT) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_setiuservalue(L, 1, UVAL_ONEXIT);
    }
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, luaL_len(L, -2) + 1);
    lua_pop(L, 1);
  } else {
    return orch__failf(L, "ECHILD", "on_exit: process %d is not a child of this process", (int)p->child.pid);
  }
  lua_settop(L, 1);
  return 1;
}

static int process_kill(lua_State *L) {
  static const char *const opts[] = { "group", NULL };
  process *p = check_process(L, 1);
  int sig = orch__optsignal(L, 2, SIGTERM);
  int group = 0;
  if (!lua_isnoneornil(L, 3)) {
    orch__check_options(L, 3, opts);
    group = orch__opt_boolean(L, 3, "group", 0);
  }
  if (p->state == P_EXITED) return orch__failf(L, "ESRCH", "kill: process has exited");
  if (p->state != P_RUNNING)
    return orch__failf(L, "ECHILD", "kill: process %d is not a child of this process", (int)p->child.pid);
  /* The child is not reaped yet, so its pid cannot have been reused. */
  if (group && !p->leader && getpgid(p->child.pid) != p->child.pid)
    return orch__failf(L, "EINVAL", "kill: process %d does not lead a process group", (int)p->child.pid);
  int flags = group ? ORCH__KILL_GROUP : 0;
  int r = orch__kill(p->child.pid, sig, flags, 0);
  if (r < 0) return orch__kill_fail(L, "kill", p->child.pid, flags, r);
  lua_pushboolean(L, 1);
  return 1;
}

static int process_running(lua_State *L) {
  process *p = check_process(L, 1);
  lua_pushboolean(L, p->state == P_RUNNING);
  return 1;
}

static int process_status(lua_State *L) {
  process *p = check_process(L, 1);
  switch (p->state) {
    case P_RUNNING: lua_pushliteral(L, "running"); return 1;
    case P_EXITED:
      lua_pushstring(L, WIFEXITED(p->status) ? "exited" : "killed");
      push_status(L, p->status);
      return 3;
    default: lua_pushliteral(L, "unknown"); return 1;
  }
}

static double tv_seconds(struct timeval tv) {
  return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static int process_rusage(lua_State *L) {
  process *p = check_process(L, 1);
  if (p->state != P_EXITED) return orch__failf(L, "EBUSY", "rusage: process %d has not exited", (int)p->child.pid);
  lua_createtable(L, 0, 7);
  lua_pushnumber(L, tv_seconds(p->ru.ru_utime)); lua_setfield(L, -2, "utime");
  lua_pushnumber(L, tv_seconds(p->ru.ru_stime)); lua_setfield(L, -2, "stime");
  lua_pushinteger(L, (lua_Integer)p->ru.ru_maxrss * 1024); lua_setfield(L, -2, "maxrss");
  lua_pushinteger(L, p->ru.ru_minflt); lua_setfield(L, -2, "minflt");
  lua_pushinteger(L, p->ru.ru_majflt); lua_setfield(L, -2, "majflt");
  lua_pushinteger(L, p->ru.ru_nvcsw); lua_setfield(L, -2, "nvcsw");
  lua_pushinteger(L, p->ru.ru_nivcsw); lua_setfield(L, -2, "nivcsw");
  return 1;
}

static int process_tostring(lua_State *L) {
  process *p = check_process(L, 1);
  int pid = (int)p->child.pid;
  if (p->state == P_RUNNING) {
    lua_pushfstring(L, PROCESS_MT ": pid=%d running", pid);
  } else if (p->state == P_EXITED && WIFEXITED(p->status)) {
    lua_pushfstring(L, PROCESS_MT ": pid=%d exited %d", pid, WEXITSTATUS(p->status));
  } else if (p->state == P_EXITED) {
    const char *n = orch__signame(WTERMSIG(p->status));
    lua_pushfstring(L, PROCESS_MT ": pid=%d killed %s", pid, n ? n : "?");
  } else {
    lua_pushfstring(L, PROCESS_MT ": pid=%d not a child", pid);
  }
  return 1;
}

static int process_index(lua_State *L) {
  process *p = check_process(L, 1);
  const char *k = lua_tostring(L, 2);
  if (k && lua_type(L, 2) == LUA_TSTRING) {
    if (strcmp(k, "pid") == 0) { lua_pushinteger(L, p->child.pid); return 1; }
    if (strcmp(k, "stdin") == 0) { lua_getiuservalue(L, 1, UVAL_STDIN); return 1; }
    if (strcmp(k, "stdout") == 0) { lua_getiuservalue(L, 1, UVAL_STDOUT); return 1; }
    if (strcmp(k, "stderr") == 0) { lua_getiuservalue(L, 1, UVAL_STDERR); return 1; }
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

/* <close>: a scope never leaks a running child. It is killed (its group
 * when it leads one), not waited for: the reaper still reports it. */
static int process_close(lua_State *L) {
  process *p = check_process(L, 1);
  if (p->state == P_RUNNING) {
    if (p->leader) orch__kill(p->child.pid, SIGKILL, ORCH__KILL_GROUP, 0);
    orch__kill(p->child.pid, SIGKILL, 0, 0);
  }
  return 0;
}

/* Only unanchored processes get here (exited, never started, or not ours),
 * or every process when the Lua state closes. */
static int process_gc(lua_State *L) {
  process *p = check_process(L, 1);
  if (p->state == P_RUNNING) {
    orch__child_remove(p->rt, &p->child);
    p->state = P_FOREIGN;
  }
  while (p->waiters) {
    waiter *w = p->waiters;
    waiter_unlink(w);
    free(w);
  }
  return 0;
}

/* ---------------------------------------------------------------- fd box */

/* A to-be-closed list of fds a spawn must close however it ends (the
 * child's ends of pipes, opened files), so a raise never leaks them, and
 * the malloc'ed memory of a spawn or an exec (argv, envp and the fd list:
 * build_exec). */
typedef struct { int n, cap; int *fd; void *mem; } fdbox;

static int fdbox_close(lua_State *L) {
  fdbox *b = luaL_checkudata(L, 1, FDBOX_MT);
  for (int i = 0; i < b->n; i++)
    if (b->fd[i] >= 0) close(b->fd[i]);
  b->n = 0;
  free(b->mem);
  b->mem = NULL;
  b->fd = NULL;
  b->cap = 0;
  return 0;
}

static fdbox *fdbox_new(lua_State *L) {
  fdbox *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->n = b->cap = 0;
  b->fd = NULL;
  b->mem = NULL;
  luaL_setmetatable(L, FDBOX_MT);
  lua_toclose(L, -1);
  return b;
}

static void fdbox_add(fdbox *b, int fd) {
  if (b->n < b->cap) b->fd[b->n++] = fd;
}

/* ---------------------------------------------------------------- spawn */

enum { IO_INHERIT, IO_NULL, IO_PIPE, IO_PATH, IO_FD, IO_STDOUT };

typedef struct {
  int kind;
  int fd;              /* IO_FD: the parent's fd */
  const char *path;    /* IO_PATH */
} io_spec;

typedef struct {
  int target;
  io_spec io;
} extra_fd;

static const char *const io_keys[] = { "stdin", "stdout", "stderr" };

static const char *const spawn_options[] = {
  "path", "env", "env_mode", "cwd", "uid", "gid", "stdin", "stdout", "stderr",
  "fds", "pgroup", "setsid", "rlimits", "umask", "cgroup", NULL
};

static const struct { const char *name; int res; } rlimit_names[] = {
  {"as", RLIMIT_AS}, {"core", RLIMIT_CORE}, {"cpu", RLIMIT_CPU}, {"data", RLIMIT_DATA},
  {"fsize", RLIMIT_FSIZE}, {"locks", RLIMIT_LOCKS}, {"memlock", RLIMIT_MEMLOCK},
  {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE}, {"nofile", RLIMIT_NOFILE},
  {"nproc", RLIMIT_NPROC}, {"rss", RLIMIT_RSS}, {"rtprio", RLIMIT_RTPRIO},
  {"rttime", RLIMIT_RTTIME}, {"sigpending", RLIMIT_SIGPENDING}, {"stack", RLIMIT_STACK},
  {NULL, 0}
};
#define NRLIMITS 16

typedef struct {
  int args;                   /* stack index of the argv table */
  int argc;
  int env;                    /* stack index of the env table or 0 */
  int replace_env;
  int search;
  const char *search_path;
  const char *cwd;
  int has_uid, has_gid;
  lua_Integer uid_num, gid_num;
  const char *uid_name, *gid_name;
  io_spec io[3];
  extra_fd extra[MAX_EXTRA_FDS];
  int nextra;
  int pgroup, setsid;
  orch__rlimit rl[NRLIMITS];
  int nrl;
  int has_umask;
  mode_t umask;
  orch__cgroup *cgroup;       /* NULL: orch's own */
} spawn_args;

/* Is the value at idx a stream? Pushes nothing. Returns its fd or -1; raises
 * for a closed stream. */
static int stream_arg_fd(lua_State *L, int idx) {
  int fd = orch__stream_fd(L, idx);
  if (fd >= 0) return fd;
  if (luaL_testudata(L, idx, "orch.Stream")) orch__closed_error(L, "orch.Stream");
  return -1;
}

/* Validates one stdio option (value on top of the stack; left there). */
static void parse_io(lua_State *L, int arg, const char *key, int target, io_spec *io, int is_extra) {
  const char *expected = is_extra ? "an fd number or a stream expected"
                                  : "expected 'inherit', 'null', 'pipe', a path containing '/', a stream or an fd";
  io->kind = IO_INHERIT;
  io->fd = -1;
  io->path = NULL;
  switch (lua_type(L, -1)) {
    case LUA_TNIL:
      return;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, -1, &len);
      if (is_extra) break;
      if (strlen(s) != len) orch__opt_error(L, arg, key, "string contains a zero byte");
      if (strcmp(s, "inherit") == 0) io->kind = IO_INHERIT;
      else if (strcmp(s, "null") == 0) io->kind = IO_NULL;
      else if (strcmp(s, "pipe") == 0) io->kind = IO_PIPE;
      else if (target == 2 && strcmp(s, "stdout") == 0) io->kind = IO_STDOUT;
      else if (strchr(s, '/')) { io->kind = IO_PATH; io->path = s; }
      else break;
      return;
    }
    case LUA_TNUMBER: {
      int isint;
      lua_Integer n = lua_tointegerx(L, -1, &isint);
      if (!isint || n < 0 || n > INT_MAX) orch__opt_error(L, arg, key, "invalid fd number");
      io->kind = IO_FD;
      io->fd = (int)n;
      return;
    }
    case LUA_TUSERDATA: {
      int fd = stream_arg_fd(L, -1);
      if (fd < 0) break;
      io->kind = IO_FD;
      io->fd = fd;
      return;
    }
    default: break;
  }
  if (lua_type(L, -1) == LUA_TSTRING)
    orch__opt_error(L, arg, key, lua_pushfstring(L, "%s, got '%s'", expected, lua_tostring(L, -1)));
  orch__opt_error(L, arg, key, lua_pushfstring(L, "%s, got %s", expected, luaL_typename(L, -1)));
}

static rlim_t parse_rlim(lua_State *L, int arg, const char *name, int idx) {
  if (lua_type(L, idx) == LUA_TSTRING && strcmp(lua_tostring(L, idx), "unlimited") == 0)
    return RLIM_INFINITY;
  int isint;
  lua_Integer n = lua_tointegerx(L, idx, &isint);
  if (lua_type(L, idx) != LUA_TNUMBER || !isint || n < 0)
    orch__opt_error(L, arg, "rlimits", lua_pushfstring(L, "'%s': a non-negative integer or 'unlimited' expected", name));
  return (rlim_t)n;
}

static void parse_rlimits(lua_State *L, int arg, spawn_args *a) {
  int t = lua_gettop(L);
  if (!lua_istable(L, t)) orch__opt_error(L, arg, "rlimits", lua_pushfstring(L, "table expected, got %s", luaL_typename(L, t)));
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (lua_type(L, -2) != LUA_TSTRING) orch__opt_error(L, arg, "rlimits", "keys must be limit names");
    const char *name = lua_tostring(L, -2);
    int res = -1;
    for (int i = 0; rlimit_names[i].name; i++)
      if (strcmp(rlimit_names[i].name, name) == 0) res = rlimit_names[i].res;
    if (res < 0) orch__opt_error(L, arg, "rlimits", lua_pushfstring(L, "unknown limit '%s'", name));
    struct rlimit lim;
    if (lua_istable(L, -1)) {
      lua_rawgeti(L, -1, 1);
      lua_rawgeti(L, -2, 2);
      lim.rlim_cur = parse_rlim(L, arg, name, -2);
      lim.rlim_max = parse_rlim(L, arg, name, -1);
      lua_pop(L, 2);
      if (lim.rlim_max != RLIM_INFINITY && (lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur > lim.rlim_max))
        orch__opt_error(L, arg, "rlimits", lua_pushfstring(L, "'%s': soft limit above hard limit", name));
    } else {
      lim.rlim_cur = lim.rlim_max = parse_rlim(L, arg, name, -1);
    }
    if (a->nrl < NRLIMITS) {
      a->rl[a->nrl].resource = res;
      a->rl[a->nrl].lim = lim;
      a->nrl++;
    }
    lua_pop(L, 1);
  }
}

static void parse_id(lua_State *L, int arg, const char *key, int *has, lua_Integer *num, const char **name) {
  int t = lua_getfield(L, arg, key);
  if (t == LUA_TNUMBER) {
    int isint;
    *num = lua_tointegerx(L, -1, &isint);
    if (!isint || *num < 0 || *num > 0x7ffffffe) orch__opt_error(L, arg, key, "invalid id");
    *has = 1;
  } else if (t == LUA_TSTRING) {
    *name = lua_tostring(L, -1);
    if (strlen(*name) != lua_rawlen(L, -1)) orch__opt_error(L, arg, key, "string contains a zero byte");
    *has = 1;
  } else if (t != LUA_TNIL) {
    orch__opt_error(L, arg, key, lua_pushfstring(L, "number or name expected, got %s", luaL_typename(L, -1)));
  }
  lua_pop(L, 1);
}

/* Phase 1: every check that can raise. Nothing is allocated outside Lua. */
static void spawn_validate(lua_State *L, spawn_args *a) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_gettop(L) > 1) luaL_argerror(L, 2, "no value expected (options go in the table)");
  orch__check_options(L, 1, spawn_options);
  memset(a, 0, sizeof *a);
  a->args = 1;
  a->argc = (int)luaL_len(L, 1);
  if (a->argc < 1) luaL_argerror(L, 1, "program name expected at index 1");
  if (a->argc > 100000) luaL_argerror(L, 1, "too many arguments");
  for (int i = 1; i <= a->argc; i++) {
    int t = lua_geti(L, 1, i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      luaL_argerror(L, 1, lua_pushfstring(L, "argument %d: string expected, got %s", i, luaL_typename(L, -1)));
    if (t == LUA_TSTRING && strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
      luaL_argerror(L, 1, lua_pushfstring(L, "argument %d contains a zero byte", i));
    lua_pop(L, 1);
  }
  lua_geti(L, 1, 1);
  if (lua_rawlen(L, -1) == 0 || lua_type(L, -1) != LUA_TSTRING) luaL_argerror(L, 1, "program name must be a non-empty string");
  lua_pop(L, 1);

  /* path: true (default) searches $PATH, false never, a string is the path. */
  a->search = 1;
  int t = lua_getfield(L, 1, "path");
  if (t == LUA_TBOOLEAN) a->search = lua_toboolean(L, -1);
  else if (t == LUA_TSTRING) {
    a->search_path = lua_tostring(L, -1);
    if (strlen(a->search_path) != lua_rawlen(L, -1)) orch__opt_error(L, 1, "path", "string contains a zero byte");
  }
  else if (t != LUA_TNIL) orch__opt_error(L, 1, "path", lua_pushfstring(L, "boolean or string expected, got %s", luaL_typename(L, -1)));
  lua_pop(L, 1);

  static const char *const modes[] = { "merge", "replace", NULL };
  const char *mode = orch__opt_string(L, 1, "env_mode", "merge");
  int m = 0;
  while (modes[m] && strcmp(modes[m], mode) != 0) m++;
  if (!modes[m]) orch__opt_error(L, 1, "env_mode", lua_pushfstring(L, "'merge' or 'replace' expected, got '%s'", mode));
  a->replace_env = m == 1;
  t = lua_getfield(L, 1, "env");
  if (t == LUA_TTABLE) {
    int e = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, e)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        orch__opt_error(L, 1, "env", "keys must be strings");
      const char *k = lua_tostring(L, -2);
      if (!*k || strchr(k, '=') || strlen(k) != lua_rawlen(L, -2))
        orch__opt_error(L, 1, "env", lua_pushfstring(L, "invalid variable name '%s'", k));
      int vt = lua_type(L, -1);
      if (vt != LUA_TSTRING && vt != LUA_TNUMBER && !(vt == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
        orch__opt_error(L, 1, "env", lua_pushfstring(L, "'%s': string, number or false expected, got %s", k, luaL_typename(L, -1)));
      if (vt == LUA_TSTRING && strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
        orch__opt_error(L, 1, "env", lua_pushfstring(L, "'%s' contains a zero byte", k));
      lua_pop(L, 1);
    }
    a->env = e;                          /* stays on the stack */
  } else {
    if (t != LUA_TNIL) orch__opt_error(L, 1, "env", lua_pushfstring(L, "table expected, got %s", luaL_typename(L, -1)));
    lua_pop(L, 1);
  }

  a->cwd = orch__opt_string(L, 1, "cwd", NULL);
  parse_id(L, 1, "uid", &a->has_uid, &a->uid_num, &a->uid_name);
  parse_id(L, 1, "gid", &a->has_gid, &a->gid_num, &a->gid_name);

  for (int i = 0; i < 3; i++) {
    lua_getfield(L, 1, io_keys[i]);
    parse_io(L, 1, io_keys[i], i, &a->io[i], 0);
    lua_pop(L, 1);
  }
  t = lua_getfield(L, 1, "fds");
  if (t == LUA_TTABLE) {
    int f = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, f)) {
      int isint;
      lua_Integer target = lua_tointegerx(L, -2, &isint);
      if (lua_type(L, -2) != LUA_TNUMBER || !isint || target < 3 || target > 1023)
        orch__opt_error(L, 1, "fds", "keys must be fd numbers from 3 to 1023");
      if (a->nextra >= MAX_EXTRA_FDS) orch__opt_error(L, 1, "fds", "too many fds (at most 64)");
      a->extra[a->nextra].target = (int)target;
      parse_io(L, 1, "fds", (int)target, &a->extra[a->nextra].io, 1);
      a->nextra++;
      lua_pop(L, 1);
    }
  } else if (t != LUA_TNIL) {
    orch__opt_error(L, 1, "fds", lua_pushfstring(L, "table expected, got %s", luaL_typename(L, -1)));
  }
  lua_pop(L, 1);

  a->pgroup = orch__opt_boolean(L, 1, "pgroup", 0);
  a->setsid = orch__opt_boolean(L, 1, "setsid", 0);
  t = lua_getfield(L, 1, "rlimits");
  if (t != LUA_TNIL) parse_rlimits(L, 1, a);
  lua_pop(L, 1);
  int has;
  lua_Integer u = orch__opt_mode(L, 1, "umask", 0, 0777, &has);
  a->has_umask = has;
  a->umask = (mode_t)u;
  if (lua_getfield(L, 1, "cgroup") != LUA_TNIL && !(a->cgroup = orch__cg_check(L, -1)))
    orch__opt_error(L, 1, "cgroup", lua_pushfstring(L, "orch.Cgroup expected, got %s", luaL_typename(L, -1)));
  lua_pop(L, 1);
}

typedef struct {
  uid_t uid;
  gid_t gid;
  gid_t *groups;
  int ngroups;
  int flags;
} creds;

/* Phase 2: user and group names to ids. Expected failures return 3 results
 * (nothing is held yet); 0 on success. */
static int resolve_creds(lua_State *L, const char *op, spawn_args *a, creds *c) {
  char buf[16384];
  struct passwd pw, *pwp = NULL;
  memset(c, 0, sizeof *c);
  if (!a->has_uid && !a->has_gid) return 0;
  int root = geteuid() == 0;
  if (a->has_uid) {
    int r = a->uid_name ? getpwnam_r(a->uid_name, &pw, buf, sizeof buf, &pwp)
                        : getpwuid_r((uid_t)a->uid_num, &pw, buf, sizeof buf, &pwp);
    if (r != 0) return orch__fail_errno(L, r, "%s: user lookup", op);
    if (!pwp && a->uid_name) return orch__failf(L, "ENOENT", "%s: unknown user '%s'", op, a->uid_name);
    c->uid = pwp ? pwp->pw_uid : (uid_t)a->uid_num;
    c->flags |= ORCH__SPAWN_SETUID;
  }
  if (a->has_gid) {
    if (a->gid_name) {
      char gbuf[16384];
      struct group gr, *grp = NULL;
      int r = getgrnam_r(a->gid_name, &gr, gbuf, sizeof gbuf, &grp);
      if (r != 0) return orch__fail_errno(L, r, "%s: group lookup", op);
      if (!grp) return orch__failf(L, "ENOENT", "%s: unknown group '%s'", op, a->gid_name);
      c->gid = grp->gr_gid;
    } else {
      c->gid = (gid_t)a->gid_num;
    }
  } else if (pwp) {
    c->gid = pwp->pw_gid;
  } else {
    return orch__failf(L, "EINVAL", "%s: uid %d has no passwd entry: give gid too", op, (int)a->uid_num);
  }
  c->flags |= ORCH__SPAWN_SETGID;
  if (root) {
    /* The supplementary groups follow the user, never orch's own. */
    int n = 1;
    if (pwp) {
      n = 64;
      for (;;) {
        c->groups = lua_newuserdatauv(L, (size_t)n * sizeof(gid_t), 0);
        int want = n;
        if (getgrouplist(pwp->pw_name, c->gid, c->groups, &want) >= 0) { n = want; break; }
        lua_pop(L, 1);
        if (want <= n || want > 65536) { n = 1; c->groups = NULL; break; }
        n = want;
      }
    }
    if (!c->groups) {
      c->groups = lua_newuserdatauv(L, sizeof(gid_t), 0);
      c->groups[0] = c->gid;
      n = 1;
    }
    c->ngroups = n;
    c->flags |= ORCH__SPAWN_GROUPS;
  }
  return 0;
}

/* The new program's argv and envp (for orch.spawn and orch.exec), built in
 * one malloc'ed block that the box frees when the call returns (a spawned
 * child has exec'd or failed by then): no Lua garbage is left behind for
 * them. Environment entries the env table names (a value or false) are left
 * out of environ; the table's values follow as "K=V". *envpp is NULL for
 * orch's own environment. Returns 0, or -1 after pushing the error triple. */
static int build_exec(lua_State *L, const char *op, const spawn_args *a, fdbox *box,
                      char ***argvp, char ***envpp) {
  size_t bytes = 0, nenv = 0, ntab = 0, nkeys = 0;
  for (int i = 1; i <= a->argc; i++) {
    size_t len;
    lua_geti(L, a->args, i);
    lua_tolstring(L, -1, &len);              /* numbers become strings */
    bytes += len + 1;
    lua_pop(L, 1);
  }
  if (a->env) {
    if (!a->replace_env) while (environ[nenv]) nenv++;
    lua_pushnil(L);
    while (lua_next(L, a->env)) {
      nkeys++;
      if (lua_type(L, -1) != LUA_TBOOLEAN) {
        size_t kl, vl;
        lua_tolstring(L, -2, &kl);
        lua_tolstring(L, -1, &vl);             /* a copy on the stack: safe */
        bytes += kl + vl + 2;
        ntab++;
      }
      lua_pop(L, 1);
    }
  }
  size_t nptr = (size_t)a->argc + 1 + nenv + ntab + 1;
  size_t nfd = 2 * (3 + (size_t)a->nextra) + 4;   /* each io: at most 2 fds */
  char *mem = malloc(nptr * sizeof(char *) + nkeys * (sizeof(const char *) + sizeof(size_t)) +
                     nfd * sizeof(int) + bytes);
  if (!mem) return orch__fail(L, op, ENOMEM), -1;
  box->mem = mem;
  char **argv = (char **)mem;
  char **envp = argv + a->argc + 1;
  const char **keys = (const char **)(envp + nenv + ntab + 1);
  size_t *klens = (size_t *)(keys + nkeys);
  box->fd = (int *)(klens + nkeys);
  box->cap = (int)nfd;
  char *out = (char *)(box->fd + nfd);
  for (int i = 1; i <= a->argc; i++) {
    size_t len;
    lua_geti(L, a->args, i);
    const char *v = lua_tolstring(L, -1, &len);
    memcpy(out, v, len + 1);
    argv[i - 1] = out;
    out += len + 1;
    lua_pop(L, 1);
  }
  argv[a->argc] = NULL;
  *argvp = argv;
  if (!a->env) {
    *envpp = NULL;
    if (a->replace_env) {                    /* env_mode = "replace", no table */
      envp[0] = NULL;
      *envpp = envp;
    }
    return 0;
  }
  size_t k = 0, nk = 0;
  lua_pushnil(L);
  while (lua_next(L, a->env)) {
    size_t kl;
    keys[nk] = lua_tolstring(L, -2, &kl);    /* anchored by the table */
    klens[nk++] = kl;
    if (lua_type(L, -1) != LUA_TBOOLEAN) {
      size_t vl;
      const char *v = lua_tolstring(L, -1, &vl);
      memcpy(out, keys[nk - 1], kl);
      out[kl] = '=';
      memcpy(out + kl + 1, v, vl + 1);
      envp[nenv + k++] = out;                /* after environ's entries */
      out += kl + vl + 2;
    }
    lua_pop(L, 1);
  }
  size_t e = 0;
  for (size_t i = 0; i < nenv; i++) {
    const char *entry = environ[i];
    const char *eq = strchr(entry, '=');
    if (!eq) continue;
    size_t len = (size_t)(eq - entry);
    int named = 0;
    for (size_t j = 0; j < nkeys && !named; j++)
      named = klens[j] == len && memcmp(keys[j], entry, len) == 0;
    if (!named) envp[e++] = (char *)entry;
  }
  /* Close the gap between environ's kept entries and the table's. */
  memmove(envp + e, envp + nenv, k * sizeof(char *));
  envp[e + k] = NULL;
  *envpp = envp;
  return 0;
}

/* The PATH the child's program is looked up in. */
static const char *child_search_path(lua_State *L, spawn_args *a) {
  if (a->search_path) return a->search_path;
  if (a->env) {
    lua_getfield(L, a->env, "PATH");
    const char *p = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);                         /* still held by the env table */
    if (p) return p;
    if (a->replace_env) return DEFAULT_PATH;
  }
  return NULL;
}

/* [-0,+3 on failure] Makes the fd a child gets for an io spec. Returns the
 * source fd (>= 0) or -1 after pushing the error triple. Fds opened here go
 * in the box. For pipes, *parent receives the parent's end. */
static int open_io(lua_State *L, proc_state *st, fdbox *box, const char *key, int target,
                   io_spec *io, int *parent) {
  *parent = -1;
  switch (io->kind) {
    case IO_NULL:
      if (st->devnull < 0) {
        st->devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (st->devnull < 0) { orch__fail(L, "spawn: /dev/null", errno); return -1; }
      }
      return st->devnull;
    case IO_PIPE: {
      int p[2];
      if (pipe2(p, O_CLOEXEC) < 0) { orch__fail(L, "spawn: pipe", errno); return -1; }
      int child = target == 0 ? p[0] : p[1];
      *parent = target == 0 ? p[1] : p[0];
      fdbox_add(box, child);
      fdbox_add(box, *parent);             /* until a stream owns it */
      return child;
    }
    case IO_PATH: {
      /* Never blocks the loop: a FIFO without a reader fails (ENXIO). */
      int flags = target == 0 ? O_RDONLY : (O_WRONLY | O_APPEND | O_CREAT);
      int fd = orch__open_path(io->path, flags, 0666);
      if (fd < 0) {
        char op[64];
        snprintf(op, sizeof op, "spawn: %s", key);
        orch__fail_open(L, op, io->path, -fd);
        return -1;
      }
      fdbox_add(box, fd);
      return fd;
    }
    case IO_FD: {
      int fl = fcntl(io->fd, F_GETFL);
      if (fl < 0) {
        orch__failf(L, "EBADF", "spawn: %s: bad file descriptor %d", key, io->fd);
        return -1;
      }
      /* A non-blocking pipe (an orch stream's) would make the child's reads
       * and writes fail with EAGAIN. Reopening it through /proc gives the
       * child its own, blocking, open file description of the same pipe. */
      struct stat sb;
      if ((fl & O_NONBLOCK) && fstat(io->fd, &sb) == 0 && S_ISFIFO(sb.st_mode)) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", io->fd);
        int acc = fl & O_ACCMODE;
        int fd = open(path, (acc == O_RDONLY ? O_RDONLY : acc == O_WRONLY ? O_WRONLY : O_RDWR) | O_CLOEXEC);
        if (fd >= 0) {
          fdbox_add(box, fd);
          return fd;
        }
      }
      return io->fd;
    }
    default:
      return -1;
  }
}

static int spawn_failure(lua_State *L, int err, const char *step, const char *file,
                         spawn_args *a, creds *c) {
  if (strcmp(step, "exec") == 0) {
    if (err == ENOENT) return orch__failf(L, "ENOENT", "spawn: no such file: %s", file);
    if (err == EACCES) return orch__failf(L, "EACCES", "spawn: permission denied: %s", file);
    return orch__fail_errno(L, err, "spawn: exec %s", file);
  }
  if (strcmp(step, "chdir") == 0) return orch__fail_errno(L, err, "spawn: chdir %s", a->cwd);
  if (strcmp(step, "cgroup") == 0) return orch__fail_errno(L, err, "spawn: cgroup %s", a->cgroup->path);
  if (strcmp(step, "setuid") == 0) return orch__fail_errno(L, err, "spawn: setuid %d", (int)c->uid);
  if (strcmp(step, "setgid") == 0) return orch__fail_errno(L, err, "spawn: setgid %d", (int)c->gid);
  return orch__fail_errno(L, err, "spawn: %s", step);
}

/* Closes the streams made for pipes when the spawn fails after making them. */
static void close_streams(lua_State *L, int ud) {
  for (int i = UVAL_STDIN; i <= UVAL_STDERR; i++) {
    if (lua_getiuservalue(L, ud, i) != LUA_TNIL) {
      if (lua_getfield(L, -1, "close") == LUA_TFUNCTION) {
        lua_pushvalue(L, -2);
        lua_pcall(L, 1, 0, 0);
      } else {
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_setiuservalue(L, ud, i);
  }
}

static int proc_spawn(lua_State *L) {
  spawn_args a;
  spawn_validate(L, &a);
  orch_runtime *rt = orch__rt(L);
  proc_state *st = check_state(L);

  /* Phase 2: lookups that can fail. */
  creds c;
  int n = resolve_creds(L, "spawn", &a, &c);
  if (n) return n;

  /* Phase 3: memory, owned by a to-be-closed box (a raise here leaks
   * nothing): argv and envp, the process object. */
  fdbox *box = fdbox_new(L);
  char **argv, **envp;
  if (build_exec(L, "spawn", &a, box, &argv, &envp) < 0) return 3;
  const char *search_path = child_search_path(L, &a);
  process *p = process_new(L, rt);
  int ud = lua_gettop(L);

  /* Phase 4: fds, in the box. */
  orch__fdmap map[3 + MAX_EXTRA_FDS];
  int nmap = 0;
  int stdout_src = 1;
  for (int i = 0; i < 3; i++) {
    if (a.io[i].kind == IO_INHERIT) continue;
    int src, parent;
    if (a.io[i].kind == IO_STDOUT) {
      src = stdout_src;
    } else {
      src = open_io(L, st, box, io_keys[i], i, &a.io[i], &parent);
      if (src < 0) { close_streams(L, ud); return 3; }
      if (parent >= 0) {
        box->n--;                          /* the stream owns it now (or closed it) */
        int r = orch__stream_push_fd(L, parent, i == 0 ? ORCH_STREAM_WRITE : ORCH_STREAM_READ);
        if (r < 0) { close_streams(L, ud); return orch__fail_uv(L, "spawn: pipe", r); }
        lua_setiuservalue(L, ud, UVAL_STDIN + i);
      }
    }
    if (i == 1) stdout_src = src;
    map[nmap].target = i;
    map[nmap].source = src;
    nmap++;
  }
  for (int i = 0; i < a.nextra; i++) {
    int parent;
    int src = open_io(L, st, box, "fds", a.extra[i].target, &a.extra[i].io, &parent);
    if (src < 0) { close_streams(L, ud); return 3; }
    map[nmap].target = a.extra[i].target;
    map[nmap].source = src;
    nmap++;
  }

  orch__spawn_req req = {
    .file = argv[0], .argv = argv, .envp = envp, .search = a.search,
    .search_path = search_path, .cwd = a.cwd, .flags = c.flags,
    .uid = c.uid, .gid = c.gid, .groups = c.groups, .ngroups = c.ngroups,
    .umask = a.umask, .rlimits = a.rl, .nrlimits = a.nrl, .fds = map, .nfds = nmap,
  };
  if (a.setsid) req.flags |= ORCH__SPAWN_SETSID;
  else if (a.pgroup) req.flags |= ORCH__SPAWN_PGROUP;
  if (a.has_umask) req.flags |= ORCH__SPAWN_UMASK;

  lua_pushvalue(L, ud);
  p->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
  const char *step = "cgroup";
  /* A child born frozen would never exec, and the vfork parent (orch)
   * would wait for it until a thaw. */
  int frozen = 0;
  if (a.cgroup && orch__cg_events(a.cgroup, NULL, &frozen) == 0 && frozen) {
    luaL_unref(L, LUA_REGISTRYINDEX, p->anchor);
    p->anchor = LUA_NOREF;
    close_streams(L, ud);
    return orch__failf(L, "EBUSY", "spawn: cgroup %s is frozen", a.cgroup->path);
  }
  /* Opened last and closed right after the spawn: nothing between raises. */
  int cgfds[1 + ORCH__CG_NCTL], cgdir = -1;
  int pid = a.cgroup ? orch__cg_join_fds(a.cgroup, 1, cgfds, 1 + ORCH__CG_NCTL, &cgdir) : 0;
  if (pid >= 0) {
    req.cgroup_fds = cgfds;
    req.ncgroup_fds = pid;
    if (a.cgroup) {
      req.flags |= ORCH__SPAWN_CGROUP;
      req.cgroup_dir = cgdir;
    }
    pid = orch__spawn(rt, &req, &p->child, &step);
    for (int i = 0; i < req.ncgroup_fds; i++) close(cgfds[i]);
    if (cgdir >= 0) close(cgdir);
  }
  if (pid < 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, p->anchor);
    p->anchor = LUA_NOREF;
    close_streams(L, ud);
    return spawn_failure(L, -pid, step, argv[0], &a, &c);
  }
  p->state = P_RUNNING;
  p->leader = a.setsid || a.pgroup;
  lua_pushvalue(L, ud);
  return 1;                                /* the box closes the child's ends */
}

/* ---------------------------------------------------------------- fork */

static int exit_code_of(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return 0;
  if (lua_isboolean(L, idx)) return lua_toboolean(L, idx) ? 0 : 1;
  int isint;
  lua_Integer n = lua_tointegerx(L, idx, &isint);
  return isint ? (int)(n & 0xff) : 1;
}

/* The fork child's end: fn returned (or failed); the child never returns
 * into the code that called orch.fork. */
static int fork_child_k(lua_State *L, int status, lua_KContext ctx) {
  int code;
  if (status != LUA_OK && status != LUA_YIELD) {
    const char *m = lua_tostring(L, -1);
    fprintf(stderr, "orch: fork child %d: %s\n", (int)getpid(), m ? m : "(error object is not a string)");
    code = 1;
  } else {
    code = exit_code_of(L, -1);
  }
  fflush(NULL);
  _exit(code);
  return 0;
}

static int traceback_handler(lua_State *L) {
  const char *m = lua_tostring(L, 1);
  luaL_traceback(L, L, m ? m : "(error object is not a string)", 1);
  return 1;
}

static int proc_fork(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  orch__check_task(L, "fork");
  orch_runtime *rt = orch__rt(L);
  check_state(L);
  process *p = process_new(L, rt);
  lua_pushvalue(L, -1);
  p->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
  fflush(NULL);                            /* or both processes flush it */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pid_t pid = fork();
  if (pid == 0) {
    orch__after_fork_child(L);
    orch__fork_child_exits(L);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    luaL_unref(L, LUA_REGISTRYINDEX, p->anchor);   /* the parent's object */
    p->anchor = LUA_NOREF;
    lua_pushcfunction(L, traceback_handler);
    lua_pushvalue(L, 1);
    int st = lua_pcallk(L, 0, 1, 3, 0, fork_child_k);
    return fork_child_k(L, st, 0);
  }
  int e = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (pid < 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, p->anchor);
    p->anchor = LUA_NOREF;
    return orch__fail(L, "fork", e);
  }
  p->child.pid = pid;
  p->state = P_RUNNING;
  orch__child_add(rt, &p->child);
  return 1;
}

/* ---------------------------------------------------------------- exec */

static int proc_exec(lua_State *L) {
  const char *path = orch__checkpath(L, 1, NULL);
  if (!*path) luaL_argerror(L, 1, "program name must not be empty");
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  orch__check_nargs(L, 3);
  lua_settop(L, 3);
  lua_Integer n = lua_isnil(L, 2) ? 0 : luaL_len(L, 2);
  if (n < 0 || n > 100000) luaL_argerror(L, 2, "too many arguments");
  for (lua_Integer i = 1; i <= n; i++) {
    int t = lua_geti(L, 2, i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      luaL_argerror(L, 2, lua_pushfstring(L, "argument %d: string expected, got %s", (int)i, luaL_typename(L, -1)));
    if (t == LUA_TSTRING && strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
      luaL_argerror(L, 2, lua_pushfstring(L, "argument %d contains a zero byte", (int)i));
    lua_pop(L, 1);
  }
  if (!lua_isnil(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      if (lua_type(L, -2) != LUA_TSTRING || strchr(lua_tostring(L, -2), '=') || !*lua_tostring(L, -2)
          || strlen(lua_tostring(L, -2)) != lua_rawlen(L, -2))
        luaL_argerror(L, 3, "keys must be variable names");
      if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        luaL_argerror(L, 3, lua_pushfstring(L, "'%s': string or number expected", lua_tostring(L, -2)));
      if (lua_type(L, -1) == LUA_TSTRING && strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
        luaL_argerror(L, 3, lua_pushfstring(L, "'%s' contains a zero byte", lua_tostring(L, -2)));
      lua_pop(L, 1);
    }
  }
  /* The program and its arguments as one argv table; an env table is the
   * whole environment. Built the way spawn builds them. */
  spawn_args a;
  memset(&a, 0, sizeof a);
  lua_createtable(L, (int)n + 1, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, 2, i);
    lua_rawseti(L, -2, i + 1);
  }
  a.args = lua_gettop(L);
  a.argc = (int)n + 1;
  if (!lua_isnil(L, 3)) {
    a.env = 3;
    a.replace_env = 1;
  }
  fdbox *box = fdbox_new(L);
  char **argv, **envp;
  if (build_exec(L, "exec", &a, box, &argv, &envp) < 0) return 3;
  const char *search = child_search_path(L, &a);
  if (!search) search = getenv("PATH");
  if (!search) search = DEFAULT_PATH;

  /* The new program starts with default dispositions and nothing blocked;
   * if exec fails, orch's own come back. */
  ksigaction saved[NSIG];
  int have[NSIG];
  sigset_t all, old, none;
  sigfillset(&all);
  sigemptyset(&none);
  fflush(NULL);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  for (int s = 1; s < NSIG; s++)
    have[s] = s != SIGKILL && s != SIGSTOP && raw_sigaction(s, &ksa_default, &saved[s]) == 0;
  pthread_sigmask(SIG_SETMASK, &none, NULL);
  exec_search(path, search, argv, envp ? envp : environ);
  int e = errno;
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  for (int s = 1; s < NSIG; s++)
    if (have[s]) raw_sigaction(s, &saved[s], NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (e == ENOENT) return orch__failf(L, "ENOENT", "exec: no such file: %s", path);
  if (e == EACCES) return orch__failf(L, "EACCES", "exec: permission denied: %s", path);
  return orch__fail_errno(L, e, "exec %s", path);
}

/* ---------------------------------------------------------------- pids, /proc */

static int proc_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

static int proc_getppid(lua_State *L) {
  lua_pushinteger(L, getppid());
  return 1;
}

/* The fields of /proc/PID/stat as a new table (nrec: room for more). [-0,+1] */
static void push_stat(lua_State *L, pid_t pid, const orch__procfs_stat *si, int nrec) {
  long tck = sysconf(_SC_CLK_TCK);
  long page = sysconf(_SC_PAGESIZE);
  lua_createtable(L, 0, 10 + nrec);
  lua_pushinteger(L, pid); lua_setfield(L, -2, "pid");
  lua_pushlstring(L, &si->state, 1); lua_setfield(L, -2, "state");
  lua_pushinteger(L, si->ppid); lua_setfield(L, -2, "ppid");
  lua_pushinteger(L, si->pgid); lua_setfield(L, -2, "pgid");
  lua_pushinteger(L, si->sid); lua_setfield(L, -2, "sid");
  lua_pushstring(L, si->name); lua_setfield(L, -2, "name");
  lua_pushinteger(L, (lua_Integer)si->start); lua_setfield(L, -2, "start_time");
  lua_pushinteger(L, (lua_Integer)si->rss_pages * page); lua_setfield(L, -2, "rss");
  lua_pushnumber(L, (double)(si->utime + si->stime) / (double)(tck > 0 ? tck : 100)); lua_setfield(L, -2, "cpu");
  lua_pushinteger(L, si->threads); lua_setfield(L, -2, "threads");
}

/* orch.proc.stat(pid): what /proc/PID/stat alone says (one read; a status
 * of thousands of services asks it for each). */
static int proc_stat(lua_State *L) {
  pid_t pid = orch__checkpid(L, 1, 0);
  orch__check_nargs(L, 1);
  orch__procfs_stat si;
  int r = orch__procfs_read_stat(pid, &si);
  if (r < 0) return orch__fail(L, "proc.stat", -r);
  push_stat(L, pid, &si, 0);
  return 1;
}

static int proc_info(lua_State *L) {
  pid_t pid = orch__checkpid(L, 1, 0);
  orch__check_nargs(L, 1);
  orch__procfs_stat si;
  int r = orch__procfs_read_stat(pid, &si);
  if (r < 0) return orch__fail(L, "proc.info", -r);
  char path[64];
  uint32_t u;
  long long uid = orch__procfs_uid(pid, &u) == 0 ? (long long)u : -1;
  push_stat(L, pid, &si, 3);
  lua_pushinteger(L, uid); lua_setfield(L, -2, "uid");
  /* A zombie still has its exit status (until its parent reaps it): how it
   * ended, for a watcher that is not its parent. */
  if (si.state == 'Z' && si.exit_status >= 0) {
    int st = (int)si.exit_status;
    if ((st & 0x7f) == 0) {
      lua_pushinteger(L, (st >> 8) & 0xff);
      lua_setfield(L, -2, "exit_code");
    } else {
      const char *nm = orch__signame(st & 0x7f);
      if (nm) lua_pushstring(L, nm); else lua_pushinteger(L, st & 0x7f);
      lua_setfield(L, -2, "exit_signal");
    }
  }
  /* cmdline: NUL-separated arguments; empty for kernel threads and zombies. */
  lua_newtable(L);
  snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (;;) {
      char *dst = luaL_prepbuffer(&b);
      ssize_t k = read(fd, dst, LUAL_BUFFERSIZE);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) break;
      luaL_addsize(&b, (size_t)k);
    }
    close(fd);
    luaL_pushresult(&b);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    int i = 0;
    for (size_t off = 0; off < len;) {
      size_t l = strnlen(s + off, len - off);
      lua_pushlstring(L, s + off, l);
      lua_rawseti(L, -3, ++i);
      off += l + 1;
    }
    lua_pop(L, 1);
  }
  lua_setfield(L, -2, "cmdline");
  return 1;
}

static int proc_start_time(lua_State *L) {
  pid_t pid = orch__checkpid(L, 1, 0);
  unsigned long long t;
  int r = orch__procfs_start_time(pid, &t);
  if (r < 0) return orch__fail(L, "proc.start_time", -r);
  lua_pushinteger(L, (lua_Integer)t);
  return 1;
}

/* orch.proc.wait_exit(pid [, start_time [, timeout]]): any process, child
 * or not. A pidfd pins the process (its start time is checked through it)
 * and becomes readable when it exits; a uv_poll_t on it wakes the task. */
typedef struct {
  uv_poll_t poll;
  int fd;
  lua_State *co;
} exitwatch;

static void exitwatch_close_cb(uv_handle_t *h) {
  exitwatch *w = h->data;
  close(w->fd);
  free(w);
}

static void exitwatch_done(exitwatch *w) {
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, exitwatch_close_cb);
}

static void exitwatch_cb(uv_poll_t *h, int status, int events) {
  exitwatch *w = h->data;
  lua_State *co = w->co;
  w->co = NULL;
  exitwatch_done(w);
  if (!co) return;
  /* A poll error on a pidfd means it cannot be watched: say it is gone only
   * when it is. */
  if (status < 0) orch__fail_uv(co, "wait_exit", status);
  else lua_pushboolean(co, 1);
  orch__wake(co, status < 0 ? 3 : 1);
}

static void exitwatch_cancel(void *data) {
  exitwatch *w = data;
  w->co = NULL;
  exitwatch_done(w);
}

static int proc_wait_exit(lua_State *L) {
  pid_t pid = orch__checkpid(L, 1, 0);
  lua_Integer start = 0;
  if (!lua_isnoneornil(L, 2)) {
    start = luaL_checkinteger(L, 2);
    if (start < 0) luaL_argerror(L, 2, "start time (clock ticks >= 0) expected");
  }
  double timeout = orch__optseconds(L, 3, -1);
  orch__check_nargs(L, 3);
  orch__check_task(L, "proc.wait_exit");
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) {
    if (errno == ESRCH) { lua_pushboolean(L, 1); return 1; }
    return orch__fail(L, "proc.wait_exit", errno);
  }
  if (start) {
    unsigned long long t = 0;
    int r = orch__procfs_start_time(pid, &t);
    if (r < 0 || t != (unsigned long long)start) {
      /* The pid names another process now (or none): the one asked for is
       * gone. */
      close(fd);
      lua_pushboolean(L, 1);
      return 1;
    }
  }
  exitwatch *w = malloc(sizeof *w);
  if (!w) {
    close(fd);
    return orch__fail(L, "proc.wait_exit", ENOMEM);
  }
  w->fd = fd;
  w->co = NULL;
  int r = uv_poll_init(orch__loop(L), &w->poll, fd);
  if (r < 0) {
    close(fd);
    free(w);
    return orch__fail_uv(L, "proc.wait_exit", r);
  }
  w->poll.data = w;
  r = uv_poll_start(&w->poll, UV_READABLE, exitwatch_cb);
  if (r < 0) {
    exitwatch_done(w);
    return orch__fail_uv(L, "proc.wait_exit", r);
  }
  w->co = L;
  return orch__await(L, timeout, "proc.wait_exit", exitwatch_cancel, w);
}

static int proc_list(lua_State *L) {
  DIR *d = opendir("/proc");
  if (!d) return orch__fail(L, "proc.list", errno);
  lua_newtable(L);
  int i = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0) continue;
    lua_pushinteger(L, pid);
    lua_rawseti(L, -2, ++i);
  }
  closedir(d);
  return 1;
}

static int proc_subreaper(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    int v = 0;
    if (prctl(PR_GET_CHILD_SUBREAPER, &v, 0, 0, 0) < 0) return orch__fail(L, "proc.subreaper", errno);
    lua_pushboolean(L, v);
    return 1;
  }
  luaL_checktype(L, 1, LUA_TBOOLEAN);
  if (prctl(PR_SET_CHILD_SUBREAPER, (unsigned long)lua_toboolean(L, 1), 0, 0, 0) < 0)
    return orch__fail(L, "proc.subreaper", errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* ---------------------------------------------------------------- orphan watches */

static int orphan_stop(lua_State *L) {
  luaL_checkudata(L, 1, ORPHAN_MT);
  proc_state *st = get_state(orch__rt(L));
  if (st && st->orphans_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->orphans_ref);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 1);
  return 0;
}

static int orphan_tostring(lua_State *L) {
  luaL_checkudata(L, 1, ORPHAN_MT);
  int active = lua_getiuservalue(L, 1, 1) != LUA_TNIL;
  lua_pushfstring(L, ORPHAN_MT ": %s", active ? "active" : "stopped");
  return 1;
}

static int proc_on_orphan_exit(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  proc_state *st = check_state(L);
  lua_newuserdatauv(L, 0, 1);
  luaL_setmetatable(L, ORPHAN_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  lua_rawgeti(L, LUA_REGISTRYINDEX, st->orphans_ref);
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return 1;
}

/* ---------------------------------------------------------------- init mode */

/* As PID 1 (or a container's init), orch passes these signals on to every
 * child in the table, like tini, unless a handler of the script's is active
 * for the signal (the supervisor's ordered stop: forwarding as well would
 * stop every service at once, out of order). Reaping everything is what the
 * reaper already does. */
static void init_forward(uv_signal_t *h, int sig) {
  proc_state *st = h->data;
  if (orch__signal_handled(st->rt, sig)) return;
  orch__proc_signal_children(st->rt, sig);
}

int orch__proc_signal_children(orch_runtime *rt, int sig) {
  proc_state *st = get_state(rt);
  int n = 0;
  if (!st) return 0;
  for (size_t i = 0; i <= st->mask; i++)
    for (orch__child *c = st->buckets[i]; c; c = c->next) {
      if (c->pid <= 1) continue;
      int group = c->on_exit == process_exited && ((process *)c)->leader;
      if ((group ? killpg(c->pid, sig) : kill(c->pid, sig)) == 0) n++;
    }
  return n;
}

int orch__proc_init_active(orch_runtime *rt) {
  proc_state *st = get_state(rt);
  return st && st->init_on;
}

static void free_handle(uv_handle_t *h) { free(h); }

static void init_stop(proc_state *st) {
  for (int i = 0; i < st->ninit; i++) {
    uv_signal_stop(st->init_sigs[i]);
    uv_close((uv_handle_t *)st->init_sigs[i], free_handle);
    st->init_sigs[i] = NULL;
  }
  st->ninit = 0;
  st->init_on = 0;
}

/* The other processes of the pid namespace, i.e. everything but us. */
static int count_others(void) {
  DIR *d = opendir("/proc");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (!*end && pid > 0 && pid != getpid()) n++;
  }
  closedir(d);
  return n;
}

static void reap_all(void) {
  while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

/* PID 1 at exit: whatever is left in the namespace once the script (the
 * supervisor's ordered stop) is done are processes that are not orch's
 * services, e.g. orphans reparented to us. They get SIGTERM, then SIGKILL
 * after the grace period, and are reaped: exiting PID 1 would SIGKILL them
 * without a word. Blocks, but the loop is over. */
static void init_drain(proc_state *st) {
  reap_all();
  int n = count_others();
  if (n <= 0) return;
  fprintf(stderr, "orch: init: %d process%s left after the services stopped: sending SIGTERM\n",
          n, n == 1 ? "" : "es");
  kill(-1, SIGTERM);
  struct timespec t0, now, tick = { 0, 10 * 1000 * 1000 };
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    reap_all();
    if ((n = count_others()) <= 0) return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double dt = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
    if (dt >= st->init_grace) break;
    nanosleep(&tick, NULL);
  }
  fprintf(stderr, "orch: init: %d process%s still there after %gs: sending SIGKILL\n",
          n, n == 1 ? "" : "es", st->init_grace);
  kill(-1, SIGKILL);
  /* KILL cannot be ignored; a process stuck in the kernel is waited for at
   * most 2 s more, then left to the kernel (which kills it with us). */
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    reap_all();
    if (count_others() <= 0) return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - t0.tv_sec >= 2) break;
    nanosleep(&tick, NULL);
  }
  fprintf(stderr, "orch: init: some processes did not end after SIGKILL\n");
}

static int proc_init_mode(lua_State *L) {
  static const char *const opts[] = { "signals", "grace", NULL };
  int sigs[32], n = 0;
  int given = 0, has_grace = 0;
  double grace = 5;
  if (!lua_isnoneornil(L, 1)) {
    orch__check_options(L, 1, opts);
    if (lua_getfield(L, 1, "grace") != LUA_TNIL) {
      int isnum;
      has_grace = 1;
      grace = lua_tonumberx(L, -1, &isnum);
      if (!isnum || !(grace >= 0 && grace <= 3600)) orch__opt_error(L, 1, "grace", "seconds (0 to 3600) expected");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "signals") != LUA_TNIL) {
      given = 1;
      if (!lua_istable(L, -1)) orch__opt_error(L, 1, "signals", lua_pushfstring(L, "table expected, got %s", luaL_typename(L, -1)));
      int t = lua_gettop(L);
      lua_Integer len = luaL_len(L, t);
      if (len > 32) orch__opt_error(L, 1, "signals", "too many signals");
      for (lua_Integer i = 1; i <= len; i++) {
        lua_rawgeti(L, t, i);
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
          orch__opt_error(L, 1, "signals", "signal names or numbers expected");
        int s = lua_type(L, -1) == LUA_TNUMBER ? (int)lua_tointeger(L, -1) : orch__signum(lua_tostring(L, -1));
        if (s <= 0 || s >= NSIG)
          orch__opt_error(L, 1, "signals", lua_pushfstring(L, "unknown signal '%s'", luaL_tolstring(L, -1, NULL)));
        if (s == SIGKILL || s == SIGSTOP || s == SIGCHLD)
          orch__opt_error(L, 1, "signals", lua_pushfstring(L, "cannot forward %s", orch__signame(s)));
        sigs[n++] = s;
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  if (!given) {
    sigs[n++] = SIGTERM;
    sigs[n++] = SIGINT;
  }
  proc_state *st = check_state(L);
  init_stop(st);
  for (int i = 0; i < n; i++) {
    uv_signal_t *h = malloc(sizeof *h);
    if (!h) return luaL_error(L, "proc.init_mode: out of memory");
    uv_signal_init(orch__loop(L), h);
    h->data = st;
    int r = uv_signal_start(h, init_forward, sigs[i]);
    st->init_sigs[st->ninit++] = h;
    if (r < 0) {
      init_stop(st);
      return orch__fail_uv(L, "proc.init_mode", r);
    }
    uv_unref((uv_handle_t *)h);
  }
  st->init_on = 1;
  if (has_grace) st->init_grace = grace;
  lua_pushboolean(L, 1);
  return 1;
}

/* ---------------------------------------------------------------- daemonize */

/* What orch inherited from the process that started it: descriptors above
 * 2 without close-on-exec (orch opens every one of its own close-on-exec). */
static void record_inherited(proc_state *st) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) && st->ninherited < (int)(sizeof st->inherited / sizeof st->inherited[0])) {
    char *end;
    long fd = strtol(e->d_name, &end, 10);
    if (*end || fd <= 2 || fd == dirfd(d)) continue;
    int fl = fcntl((int)fd, F_GETFD);
    struct stat sb;
    if (fl < 0 || (fl & FD_CLOEXEC) || fstat((int)fd, &sb) < 0) continue;
    st->inherited[st->ninherited].fd = (int)fd;
    st->inherited[st->ninherited].dev = sb.st_dev;
    st->inherited[st->ninherited].ino = sb.st_ino;
    st->ninherited++;
  }
  closedir(d);
}

/* In the daemon: closes the inherited descriptors that are still the same
 * files and still inheritable (one orch adopted is close-on-exec now), except
 * the ones in keep. */
static void close_inherited(proc_state *st, const int *keep, int nkeep) {
  for (int i = 0; i < st->ninherited; i++) {
    int fd = st->inherited[i].fd, kept = 0;
    for (int k = 0; k < nkeep; k++) if (keep[k] == fd) kept = 1;
    struct stat sb;
    int fl = fcntl(fd, F_GETFD);
    if (kept || fl < 0 || (fl & FD_CLOEXEC) || fstat(fd, &sb) < 0) continue;
    if (sb.st_dev == st->inherited[i].dev && sb.st_ino == st->inherited[i].ino) close(fd);
  }
}

typedef struct { int err; char what[120]; } daemon_report;

/* In the daemon, before it is ready: tell the original and give up. */
static void daemon_fail(int fd, int err, const char *what) {
  daemon_report r;
  memset(&r, 0, sizeof r);
  r.err = err;
  snprintf(r.what, sizeof r.what, "%s", what);
  ssize_t w = write(fd, &r, sizeof r);
  (void)w;
  _exit(1);
}

static int open_log(lua_State *L, const char *key, const char *path, int *fd) {
  /* Never blocks the loop: a FIFO without a reader fails (ENXIO). */
  *fd = orch__open_path(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (*fd >= 0) return 0;
  char op[64];
  snprintf(op, sizeof op, "daemonize: %s", key);
  orch__fail_open(L, op, path, -*fd);
  *fd = -1;
  return 3;
}

static int proc_daemonize(lua_State *L) {
  static const char *const opts[] = { "pidfile", "chdir", "umask", "stdout", "stderr", "keep_fds", NULL };
  if (lua_isnoneornil(L, 1)) { lua_settop(L, 0); lua_newtable(L); }
  orch__check_options(L, 1, opts);
  int keep[64], nkeep = 0;
  if (lua_getfield(L, 1, "keep_fds") != LUA_TNIL) {
    if (!lua_istable(L, -1)) orch__opt_error(L, 1, "keep_fds", lua_pushfstring(L, "table expected, got %s", luaL_typename(L, -1)));
    lua_Integer len = luaL_len(L, -1);
    if (len > 64) orch__opt_error(L, 1, "keep_fds", "at most 64 descriptors");
    for (lua_Integer i = 1; i <= len; i++) {
      lua_rawgeti(L, -1, i);
      int isint;
      lua_Integer fd = lua_tointegerx(L, -1, &isint);
      if (!isint || fd < 0 || fd > 0x7fffffff) orch__opt_error(L, 1, "keep_fds", "file descriptor numbers expected");
      keep[nkeep++] = (int)fd;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  const char *pidfile = orch__opt_string(L, 1, "pidfile", NULL);
  const char *dir = orch__opt_string(L, 1, "chdir", "/");
  const char *out = orch__opt_string(L, 1, "stdout", NULL);
  const char *err = orch__opt_string(L, 1, "stderr", NULL);
  int has_umask;
  lua_Integer um = orch__opt_mode(L, 1, "umask", 0, 0777, &has_umask);
  orch__check_task(L, "daemonize");
  proc_state *st = check_state(L);

  /* Everything that can fail for a clear reason is tried here, in the
   * original process, whose caller gets the error. */
  int pfd = -1, ofd = -1, efd = -1, nfd = -1, rep[2] = { -1, -1 };
  int n = 0;
  if (pidfile) {
    pfd = open(pidfile, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (pfd < 0) {
      int e = errno;
      return orch__fail_errno(L, e, "daemonize: pidfile %s", pidfile);
    }
    /* An flock belongs to the open file description, which the daemon
     * inherits: the lock lives exactly as long as the daemon. */
    if (flock(pfd, LOCK_EX | LOCK_NB) < 0) {
      int e = errno;
      char buf[32] = "";
      ssize_t k = pread(pfd, buf, sizeof buf - 1, 0);
      if (k > 0) buf[k] = 0;
      close(pfd);
      if (e == EWOULDBLOCK)
        return orch__failf(L, "EAGAIN", "daemonize: already running (pid %d holds %s)", atoi(buf), pidfile);
      return orch__fail_errno(L, e, "daemonize: lock %s", pidfile);
    }
  }
  if (out && (n = open_log(L, "stdout", out, &ofd))) goto fail;
  if (err && (n = open_log(L, "stderr", err, &efd))) goto fail;
  nfd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (nfd < 0) { n = orch__fail(L, "daemonize: /dev/null", errno); goto fail; }
  if (pipe2(rep, O_CLOEXEC) < 0) { n = orch__fail(L, "daemonize: pipe", errno); goto fail; }

  fflush(NULL);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pid_t mid = fork();
  if (mid < 0) {
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    n = orch__fail(L, "daemonize: fork", errno);
    goto fail;
  }
  if (mid == 0) {
    /* The middle process: a new session, then a child that is not its
     * leader (so it can never acquire a controlling terminal). */
    close(rep[0]);
    if (setsid() < 0) daemon_fail(rep[1], errno, "setsid");
    pid_t d = fork();
    if (d < 0) daemon_fail(rep[1], errno, "fork");
    if (d > 0) _exit(0);
    orch__after_fork_child(L);
    if (has_umask) umask((mode_t)um);
    if (chdir(dir) < 0) {
      char what[120];
      snprintf(what, sizeof what, "chdir %s", dir);
      daemon_fail(rep[1], errno, what);
    }
    if (dup2(nfd, 0) < 0 || dup2(ofd >= 0 ? ofd : nfd, 1) < 0 || dup2(efd >= 0 ? efd : nfd, 2) < 0)
      daemon_fail(rep[1], errno, "dup2");
    close_inherited(st, keep, nkeep);
    if (pfd >= 0) {
      char buf[32];
      int len = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
      if (ftruncate(pfd, 0) < 0 || pwrite(pfd, buf, (size_t)len, 0) != len)
        daemon_fail(rep[1], errno, "write pidfile");
      st->pidfile_fd = pfd;
    }
    close(nfd);
    if (ofd >= 0) close(ofd);
    if (efd >= 0) close(efd);
    close(rep[1]);                         /* EOF without a report: ready */
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    lua_pushboolean(L, 1);
    return 1;
  }
  /* The original: wait for the middle process and for the daemon's word,
   * then end; the script goes on in the daemon. */
  close(rep[1]);
  rep[1] = -1;
  while (waitpid(mid, NULL, 0) < 0 && errno == EINTR) {}
  daemon_report r;
  ssize_t k;
  do k = read(rep[0], &r, sizeof r); while (k < 0 && errno == EINTR);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (k == (ssize_t)sizeof r) {
    n = orch__fail_errno(L, r.err, "daemonize: %s", r.what);
    goto fail;
  }
  fflush(NULL);
  _exit(0);

fail:
  if (pfd >= 0) close(pfd);
  if (ofd >= 0) close(ofd);
  if (efd >= 0) close(efd);
  if (nfd >= 0) close(nfd);
  if (rep[0] >= 0) close(rep[0]);
  if (rep[1] >= 0) close(rep[1]);
  return n;
}

/* ---------------------------------------------------------------- hooks */

static void state_free(uv_handle_t *h) {
  proc_state *st = h->data;
  free(st->buckets);
  free(st);
}

/* The Lua state may already be closed here: no Lua. */
static void proc_close_hook(orch_runtime *rt, void *data) {
  proc_state *st = data;
  *orch__slot(rt, ORCH__SLOT_PROC) = NULL;
  if (st->init_on && getpid() == 1) init_drain(st);
  init_stop(st);
  if (st->stack) munmap(st->stack, CHILD_STACK);
  st->stack = NULL;
  if (st->devnull >= 0) close(st->devnull);
  st->devnull = -1;
  uv_signal_stop(&st->sigchld);
  uv_close((uv_handle_t *)&st->sigchld, state_free);
}

/* In a fork child: every child in the table belongs to the parent. */
static void proc_fork_hook(orch_runtime *rt, void *data) {
  proc_state *st = data;
  lua_State *L = orch__mainthread(rt);
  for (size_t i = 0; i <= st->mask; i++) {
    orch__child *c = st->buckets[i];
    while (c) {
      orch__child *next = c->next;
      c->next = NULL;
      if (c->on_exit == process_exited) {
        process *p = (process *)c;
        p->state = P_FOREIGN;
        luaL_unref(L, LUA_REGISTRYINDEX, p->anchor);
        p->anchor = LUA_NOREF;
      }
      c = next;
    }
    st->buckets[i] = NULL;
  }
  st->count = 0;
  init_stop(st);
  /* The runtime stopped every handle; the child reaps its own children. */
  uv_signal_start(&st->sigchld, on_sigchld, SIGCHLD);
  uv_unref((uv_handle_t *)&st->sigchld);
}

/* p:lines(): the lines of the process's stdout (spawned with stdout =
 * "pipe"); the iterator is the stream's own (stream:lines()). */
static int process_lines(lua_State *L) {
  luaL_checkudata(L, 1, PROCESS_MT);
  lua_settop(L, 1);
  if (lua_getiuservalue(L, 1, UVAL_STDOUT) != LUA_TUSERDATA)
    return luaL_error(L, "lines: the process's stdout is not a pipe");
  lua_getfield(L, 2, "lines");             /* the stream's own method */
  lua_insert(L, 2);
  lua_call(L, 1, LUA_MULTRET);
  return lua_gettop(L) - 1;
}

/* ---------------------------------------------------------------- module */

int orch__open_proc(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  void **slot = orch__slot(rt, ORCH__SLOT_PROC);
  proc_state *st = *slot;
  if (!st) {
    st = calloc(1, sizeof *st);
    if (!st) return luaL_error(L, "orch.proc: out of memory");
    st->buckets = calloc(64, sizeof *st->buckets);
    if (!st->buckets) { free(st); return luaL_error(L, "orch.proc: out of memory"); }
    st->mask = 63;
    st->rt = rt;
    st->devnull = -1;
    st->pidfile_fd = -1;
    st->init_grace = 5;
    record_inherited(st);
    lua_newtable(L);
    st->orphans_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    uv_signal_init(orch__loop(L), &st->sigchld);
    st->sigchld.data = st;
    int r = uv_signal_start(&st->sigchld, on_sigchld, SIGCHLD);
    if (r < 0) {
      free(st->buckets);
      free(st);
      return luaL_error(L, "orch.proc: cannot watch SIGCHLD: %s", uv_strerror(r));
    }
    uv_unref((uv_handle_t *)&st->sigchld);
    *slot = st;
    orch__on_close(rt, proc_close_hook, st);
    orch__on_fork_child(rt, proc_fork_hook, st);
  }

  static const luaL_Reg process_methods[] = {
    {"wait", process_wait}, {"kill", process_kill}, {"on_exit", process_on_exit},
    {"running", process_running}, {"status", process_status}, {"rusage", process_rusage},
    {"lines", process_lines}, {NULL, NULL}
  };
  static const luaL_Reg process_meta[] = {
    {"__gc", process_gc}, {"__close", process_close}, {"__tostring", process_tostring},
    {NULL, NULL}
  };
  orch__newclass(L, PROCESS_MT, NULL, process_meta);
  lua_newtable(L);
  luaL_setfuncs(L, process_methods, 0);
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, process_index, 1);
  lua_setfield(L, -3, "__index");
  lua_remove(L, -2);                       /* keep the methods table */
  int methods = lua_gettop(L);

  static const luaL_Reg fdbox_meta[] = { {"__close", fdbox_close}, {"__gc", fdbox_close}, {NULL, NULL} };
  orch__newclass(L, FDBOX_MT, NULL, fdbox_meta);
  lua_pop(L, 1);
  static const luaL_Reg orphan_methods[] = { {"stop", orphan_stop}, {NULL, NULL} };
  static const luaL_Reg orphan_meta[] = { {"__close", orphan_stop}, {"__tostring", orphan_tostring}, {NULL, NULL} };
  orch__newclass(L, ORPHAN_MT, orphan_methods, orphan_meta);
  lua_pop(L, 1);

  static const luaL_Reg fns[] = {
    {"spawn", proc_spawn}, {"fork", proc_fork}, {"exec", proc_exec},
    {"daemonize", proc_daemonize}, {"getpid", proc_getpid}, {"getppid", proc_getppid},
    {NULL, NULL}
  };
  static const luaL_Reg procfns[] = {
    {"info", proc_info}, {"list", proc_list}, {"start_time", proc_start_time},
    {"stat", proc_stat},
    {"wait_exit", proc_wait_exit}, {"subreaper", proc_subreaper}, {"on_orphan_exit", proc_on_orphan_exit},
    {"init_mode", proc_init_mode}, {NULL, NULL}
  };
  luaL_newlib(L, fns);
  luaL_newlib(L, procfns);
  orch__procscan_register(L);        /* children, sockets, tcp_listeners, ... */
  lua_setfield(L, -2, "proc");
  lua_remove(L, methods);

  /* Children that ended before orch was loaded (or while it was not
   * watching) are collected now. */
  reap(st);
  return 1;
}
