/*
 * spawner.c: the clone/exec spawner behind proc.h (orch__spawn,
 * orch__spawn_start and orch__spawn_settle, orch__exec_search): the child
 * a spawn runs until its exec, and the started spawns of orch.spawn_begin.
 * The children it makes are registered in process.c's table
 * (proc_int.h), whose reaper settles the started spawns before it takes
 * any status.
 *
 * Spawning: clone3(CLONE_VM|CLONE_VFORK|CLONE_CLEAR_SIGHAND|CLONE_FILES) on
 * a private stack (clone(2) where clone3 or the flag is missing); the child
 * first copies the part of orch's fd table it needs (files_prepare). It only
 * makes system calls (no Lua, no malloc, no locks), has every signal at its
 * default (the kernel resets the handlers; the child, the signals orch may
 * ignore, or all of them after a plain clone), unblocks them right before
 * exec, and reports a failure by
 * writing errno into memory it shares with the suspended parent (which is
 * what a close-on-exec error pipe would carry, without the fd and the three
 * extra system calls). Credentials change with raw system calls: glibc's
 * setuid() would broadcast to the parent's threads, whose memory we share.
 * A started spawn (orch__spawn_start, for orch.spawn_begin) is the same
 * child without CLONE_VFORK: orch goes on while it runs in orch's memory,
 * so the child writes nothing of orch's (no errno: every call is a raw
 * system call on x86-64, the only place this is done), and the job, its
 * stack and its request stay put until the kernel's CLONE_CHILD_CLEARTID
 * futex says the child has exec'd or exited; the job then settles (the
 * child registered, or reaped), at the latest when the reaper runs.
 *
 * No Lua here. What may block: nothing (the parent is suspended only until
 * the child has exec'd or failed).
 */
#include "cgroup.h"
#include "proc_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
/* A spawned child leaves its frames on the shared stack when it execs, and
 * AddressSanitizer's shadow of them (scopes, redzones) with them. */
#define UNPOISON_STACK(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define UNPOISON_STACK(p, n) ((void)0)
#endif

extern char **environ;

#define DEFAULT_PATH ORCH__DEFAULT_PATH
#define CHILD_STACK (256 * 1024)
#define MAX_FDMAP 256

/* ---------------------------------------------------------------- spawner */

/* A spawn's state (proc.h's orch__spawn_job): the child reads it and writes
 * err, step and born; a started spawn's parent reads them once the child
 * has exec'd or failed. */
typedef orch__spawn_job spawn_ctx;

/* The raw call also reaches the signals glibc reserves (32, 33), which an
 * ignoring parent of orch may have left ignored, and bypasses sanitizer
 * interceptors. */
const orch__ksigaction orch__ksa_default;

int orch__raw_sigaction(int sig, const orch__ksigaction *act, orch__ksigaction *old) {
  return (int)syscall(SYS_rt_sigaction, sig, act, old, (size_t)(_NSIG / 8));
}

/* The signals orch may ignore, which CLONE_CLEAR_SIGHAND leaves ignored in
 * the child (it resets handlers only): those found ignored when the first
 * spawn asks (inherited from orch's parent, or SIGPIPE, ignored by orch),
 * and those ignored since through orch__proc_ignored. One list for the
 * process, as dispositions are; a signal listed that is no longer ignored
 * costs the child one needless reset. Entries are only ever appended: a
 * started child reads the first nign of them while orch may add more. */
static int ign_sigs[NSIG];
static int ign_count = -1;          /* -1: not looked at yet */

static void ign_add(int sig) {
  for (int i = 0; i < ign_count; i++)
    if (ign_sigs[i] == sig) return;
  if (ign_count < NSIG) ign_sigs[ign_count++] = sig;
}

void orch__proc_ignored(int sig) {
  if (ign_count >= 0 && sig > 0 && sig < NSIG) ign_add(sig);
}

#if defined(__x86_64__) && defined(SYS_clone3)
#define HAVE_CLONE3_INTO 1
#endif

/* The child's system calls. A started spawn's child (orch__spawn_start)
 * runs beside orch in orch's memory, on orch's thread-local storage: it
 * must not write errno, nor enter a sanitizer's interceptor, so on x86-64
 * it calls the kernel itself and gets -errno back. */
#ifdef HAVE_CLONE3_INTO
__attribute__((no_sanitize("address", "undefined")))
static inline long rsys(long n, long a, long b, long c, long d) {
  register long r10 __asm__("r10") = d;
  long ret;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                   : "rcx", "r11", "memory");
  return ret;
}
#else
static long rsys(long n, long a, long b, long c, long d) {
  long r = syscall(n, a, b, c, d);
  return r < 0 ? -errno : r;
}
#endif
#define RSYS(n, a, b, c, d) rsys((n), (long)(a), (long)(b), (long)(c), (long)(d))
#define CHILD_CODE __attribute__((no_sanitize("address", "undefined"), noinline))

/* Never returns. */
CHILD_CODE static void child_fail(spawn_ctx *x, const char *step, long r) {
  x->err = r < 0 ? (int)-r : EINVAL;
  x->step = step;
  for (;;) RSYS(SYS_exit_group, 127, 0, 0, 0);
}

/* execvp's search of path (no /bin/sh fallback) with the kernel's calls and
 * no library function (the byte copies go through a volatile pointer so
 * that no memcpy is made of them). Returns -errno. */
CHILD_CODE static long child_exec(const char *file, const char *path, char *const argv[],
                                  char *const envp[]) {
  const char *f = file;
  while (*f && *f != '/') f++;
  if (!path || *f) return RSYS(SYS_execve, file, argv, envp, 0);
  size_t flen = (size_t)(f - file);
  char buf[PATH_MAX];
  int eacces = 0;
  const char *p = path;
  for (;;) {
    const char *e = p;
    while (*e && *e != ':') e++;
    size_t dlen = (size_t)(e - p);
    if (dlen + flen + 2 <= sizeof buf) {
      volatile char *o = buf;
      for (size_t i = 0; i < dlen; i++) *o++ = p[i];
      if (dlen) *o++ = '/';
      for (size_t i = 0; i <= flen; i++) *o++ = file[i];
      long r = RSYS(SYS_execve, buf, argv, envp, 0);
      switch (-r) {
        case EACCES: eacces = 1; break;
        case ENOENT: case ENOTDIR: case ESTALE: case ENODEV: case ETIMEDOUT: break;
        default: return r;
      }
    }
    if (!*e) break;
    p = e + 1;
  }
  return eacces ? -EACCES : -ENOENT;
}

/* Tries file in each directory of path like execvp (no /bin/sh fallback):
 * child_exec, with errno. Returns only on failure. */
void orch__exec_search(const char *file, const char *path, char *const argv[],
                        char *const envp[]) {
  errno = (int)-child_exec(file, path, argv, envp);
}

CHILD_CODE static int spawn_child(void *arg) {
  spawn_ctx *x = arg;
  struct timespec ts;
  if (RSYS(SYS_clock_gettime, CLOCK_BOOTTIME, &ts, 0, 0) == 0)   /* the end of the bracket */
    x->born = (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
  const orch__spawn_req *r = x->req;
  long e;
  /* Born sharing orch's fd table: a copy of its own first, of the fds
   * below files_below only (its fds were moved there), before anything
   * touches an fd. */
  if (x->files_below && (e = RSYS(SYS_close_range, x->files_below, ~0u, 2u /* CLOSE_RANGE_UNSHARE */, 0)) < 0) {
    x->files_failed = 1;
    /* A started spawn cannot be tried again (its caller has let go of its
     * fds): the whole table, as without CLONE_FILES. */
    if (x->slotset < 0 || (e = RSYS(SYS_unshare, CLONE_FILES, 0, 0, 0)) < 0) child_fail(x, "clone", e);
    x->files_unshared = 1;
  }
  /* Handlers of the parent must never run here (they would write into its
   * memory and its signal pipe), and ignored signals should not leak into
   * the new program: every disposition goes back to the default while all
   * signals are still blocked. With CLONE_CLEAR_SIGHAND the kernel has
   * reset the handlers already, and only the ignored signals are left. */
  if (x->cleared) {
    for (int i = 0; i < x->nign; i++)
      RSYS(SYS_rt_sigaction, ign_sigs[i], &orch__ksa_default, 0, _NSIG / 8);
  } else {
    for (int s = 1; s < NSIG; s++)
      if (s != SIGKILL && s != SIGSTOP) RSYS(SYS_rt_sigaction, s, &orch__ksa_default, 0, _NSIG / 8);
  }

  /* Into the cgroups before anything else: what the program does, and the
   * children it forks, are accounted and limited there. */
  for (int i = 0; i < x->ncg; i++)
    if ((e = RSYS(SYS_write, r->cgroup_fds[i], "0", 1, 0)) < 0) child_fail(x, "cgroup", e);

  if (r->flags & ORCH__SPAWN_SETSID) {
    if ((e = RSYS(SYS_setsid, 0, 0, 0, 0)) < 0) child_fail(x, "setsid", e);
  } else if (r->flags & ORCH__SPAWN_PGROUP) {
    if ((e = RSYS(SYS_setpgid, 0, 0, 0, 0)) < 0) child_fail(x, "setpgid", e);
  } else if (r->flags & ORCH__SPAWN_JOIN_PGROUP) {
    if ((e = RSYS(SYS_setpgid, 0, r->pgid, 0, 0)) < 0) child_fail(x, "setpgid", e);
  }
  if (x->nofile) RSYS(SYS_prlimit64, 0, RLIMIT_NOFILE, x->nofile, 0);
  for (int i = 0; i < r->nrlimits; i++)
    if ((e = RSYS(SYS_prlimit64, 0, r->rlimits[i].resource, &r->rlimits[i].lim, 0)) < 0)
      child_fail(x, "setrlimit", e);
  if (r->flags & ORCH__SPAWN_UMASK) RSYS(SYS_umask, r->umask, 0, 0, 0);
  if (r->flags & ORCH__SPAWN_NICE)
    if ((e = RSYS(SYS_setpriority, PRIO_PROCESS, 0, r->nice, 0)) < 0) child_fail(x, "setpriority", e);
  if (r->flags & ORCH__SPAWN_AFFINITY)
    if ((e = RSYS(SYS_sched_setaffinity, 0, sizeof(cpu_set_t), r->affinity, 0)) < 0)
      child_fail(x, "sched_setaffinity", e);
  if (r->flags & ORCH__SPAWN_IOPRIO)
    if ((e = RSYS(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0, r->ioprio, 0)) < 0)
      child_fail(x, "ioprio_set", e);

  /* Only the fds asked for reach the program, even those orch itself was
   * started with: everything above 2 becomes close-on-exec, and dup3 below
   * clears the flag on the targets. */
  RSYS(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */, 0);

  if (r->nfds > 0) {
    /* Move every source out of the way of every target first, so that a
     * source that is also another mapping's target is not clobbered (and
     * no source is its own target below). */
    int src[MAX_FDMAP];
    int maxt = 2;
    for (int i = 0; i < r->nfds; i++)
      if (r->fds[i].target > maxt) maxt = r->fds[i].target;
    for (int i = 0; i < r->nfds; i++) {
      long s = r->fds[i].source;
      if (s <= maxt) {
        s = RSYS(SYS_fcntl, s, F_DUPFD_CLOEXEC, maxt + 1, 0);
        if (s < 0) child_fail(x, "dup", s);
      }
      src[i] = (int)s;
    }
    for (int i = 0; i < r->nfds; i++)
      if ((e = RSYS(SYS_dup3, src[i], r->fds[i].target, 0, 0)) < 0) child_fail(x, "dup", e);
  }

  if (r->flags & ORCH__SPAWN_GROUPS)
    if ((e = RSYS(SYS_setgroups, r->ngroups, r->groups, 0, 0)) < 0) child_fail(x, "setgroups", e);
  if (r->flags & ORCH__SPAWN_SETGID)
    if ((e = RSYS(SYS_setresgid, r->gid, r->gid, r->gid, 0)) < 0) child_fail(x, "setgid", e);
  if (r->flags & ORCH__SPAWN_SETUID)
    if ((e = RSYS(SYS_setresuid, r->uid, r->uid, r->uid, 0)) < 0) child_fail(x, "setuid", e);
  if (r->cwd && (e = RSYS(SYS_chdir, r->cwd, 0, 0, 0)) < 0) child_fail(x, "chdir", e);

  unsigned long none = 0;
  RSYS(SYS_rt_sigprocmask, SIG_SETMASK, &none, 0, sizeof none);
  e = child_exec(r->file, x->path, r->argv, r->envp ? r->envp : environ);
  child_fail(x, "exec", e);
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

#ifdef HAVE_CLONE3_INTO
#define CLEAR_SIGHAND 0x100000000ULL  /* CLONE_CLEAR_SIGHAND, Linux 5.5 */
#define INTO_CGROUP 0x200000000ULL    /* CLONE_INTO_CGROUP, Linux 5.7 */
/* clone3(CLONE_VM|flags) running fn(arg) on the given stack, in the cgroup
 * cgdir with INTO_CGROUP, as glibc's clone() does for clone(2) (glibc
 * exports no clone3); child_tid for CLONE_CHILD_CLEARTID. The child starts
 * on the new stack with every register but rax, rcx and r11 as the parent
 * had them: it calls fn with arg from r12/r13 and exits with its result; it
 * never returns here. Returns the pid or -errno. */
static long clone3_into(int (*fn)(void *), void *arg, char *stack, size_t size,
                        unsigned long long flags, int cgdir, int *pidfd, int *child_tid) {
  struct {
    unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size,
                       tls, set_tid, set_tid_size, cgroup;
  } ca;
  memset(&ca, 0, sizeof ca);
  ca.flags = CLONE_VM | flags | (pidfd ? CLONE_PIDFD : 0);
  ca.pidfd = pidfd ? (unsigned long long)(uintptr_t)pidfd : 0;
  ca.child_tid = (unsigned long long)(uintptr_t)child_tid;
  ca.exit_signal = SIGCHLD;
  ca.stack = (unsigned long long)(uintptr_t)stack;
  ca.stack_size = size;
  ca.cgroup = (flags & INTO_CGROUP) ? (unsigned long long)cgdir : 0;
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
/* clone3_into with a pidfd in *pidfd when pidfd is not NULL; without one
 * (*pidfd -1) when the fd table is full (EMFILE, ENFILE): the child is
 * then reaped by the walk, never refused for want of an fd. */
static long clone3_pidfd(int (*fn)(void *), void *arg, char *stack, size_t size,
                         unsigned long long flags, int cgdir, int *pidfd) {
  long r = clone3_into(fn, arg, stack, size, flags, cgdir, pidfd, NULL);
  if (pidfd && (r == -EMFILE || r == -ENFILE)) {
    *pidfd = -1;
    r = clone3_into(fn, arg, stack, size, flags, cgdir, NULL, NULL);
  }
  return r;
}
/* Read and written on the loop thread only. */
static int clone3_works = 1;       /* 0 after ENOSYS/E2BIG/EINVAL, 2 once it worked */
/* The same for clone3 with CLEAR_SIGHAND alone (no cgroup), which also
 * gives up after EPERM (a seccomp filter that refuses the call). */
static int clear_works = 1;

/* Fills ign_sigs the first time: which signals are ignored now. Reads the
 * kernel's struct sigaction, whose first word is the handler on x86-64. */
static void ign_init(void) {
  if (ign_count >= 0) return;
  ign_count = 0;
  for (int s = 1; s < NSIG; s++) {
    orch__ksigaction old;
    if (s != SIGKILL && s != SIGSTOP && orch__raw_sigaction(s, NULL, &old) == 0 &&
        old.w[0] == (unsigned long)(uintptr_t)SIG_IGN)
      ign_add(s);
  }
}
#endif

int orch__spawn_into_cgroup_works(void) {
#ifdef HAVE_CLONE3_INTO
  return clone3_works == 2;
#else
  return 0;
#endif
}

/* The parts of a spawn's state the parent fills before the clone. */
static void ctx_init(spawn_ctx *x, const orch__spawn_req *req) {
  memset(x, 0, sizeof *x);
  x->req = req;
  x->slotset = -1;
  x->ncg = req->ncgroup_fds;
  x->nofile = orch__nofile_orig();
  if (req->search && !strchr(req->file, '/')) {
    x->path = req->search_path;
    if (!x->path) x->path = getenv("PATH");
    if (!x->path) x->path = DEFAULT_PATH;
  }
#ifdef HAVE_CLONE3_INTO
  ign_init();
#endif
  x->nign = ign_count > 0 ? ign_count : 0;
}

static unsigned long long tick_ns(void) {
  static unsigned long long ns;
  if (!ns) {
    long hz = sysconf(_SC_CLK_TCK);
    ns = 1000000000ull / (unsigned long long)(hz > 0 ? hz : 100);
  }
  return ns;
}

/* c of a child that started: its start time, pid and group. */
static void child_fill(const spawn_ctx *x, orch__child *c, pid_t pid) {
  /* The kernel stamps the child's start (CLOCK_BOOTTIME) inside the clone,
   * after our reading before it and before the child's own first reading
   * (spawn_child; it shares our memory until its exec): when both fall in
   * one clock tick, that tick is its start time, and nobody has to read
   * /proc/PID/stat for it (which waits until the child's exec is over). */
  const orch__spawn_req *req = x->req;
  unsigned long long t0 = x->born0 / tick_ns(), t1 = x->born / tick_ns();
  c->start_ticks = x->born && t0 == t1 ? t0 : 0;
  c->pid = pid;
  c->group = (req->flags & (ORCH__SPAWN_PGROUP | ORCH__SPAWN_SETSID)) != 0;
  c->pgid = c->group ? pid : (req->flags & ORCH__SPAWN_JOIN_PGROUP) ? req->pgid : getpgrp();
  c->pidfd = -1;     /* a started spawn's child is found by the walk */
}

/* ---- The child's fd table. A clone without CLONE_FILES copies orch's
 * whole fd table into the child (the kernel's dup_fd, under orch's CPU,
 * while orch waits), and the child's exec then closes every one of them
 * (close-on-exec): 13,000 fds at 10,000 services. Born sharing the table
 * instead (CLONE_FILES), the child copies only the fds below files_below
 * (close_range(CLOSE_RANGE_UNSHARE), Linux 5.9) before anything else, and
 * the fds it needs are moved below that: the high-numbered ones are
 * dup'ed into a few low slots of orch's (made at the first spawn,
 * /dev/null when idle) for the time of the clone. */

#define FILES_LOW 64                /* a child's fd from here on is moved into a slot */
#define SLOTS_MAX 128               /* the slots are below this, or not made */
#define NSLOTS ((int)(sizeof ((proc_state *)0)->slots / sizeof(int)))
static int files_works = 1;         /* 0 once the child's copy was refused */

/* The slots, made at the first spawn (long-lived fds of the runtime, like
 * its cached /dev/null), when there is room below SLOTS_MAX; 0 when there
 * are none. */
/* n fds on /dev/null (orch's cached one), each below SLOTS_MAX, into out:
 * 1; 0 when there is no room that low (none kept); -1 without /dev/null. */
static int slots_make(proc_state *st, int *out, int n) {
  if (st->devnull < 0) st->devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (st->devnull < 0) return -1;
  int k = 0;
  for (; k < n; k++) {
    int fd = fcntl(st->devnull, F_DUPFD_CLOEXEC, 3);
    if (fd < 0 || fd >= SLOTS_MAX) {
      if (fd >= 0) close(fd);
      break;
    }
    out[k] = fd;
  }
  if (k == n) return 1;
  while (k > 0) close(out[--k]);
  return 0;
}

/* The first n slots let go of what they held (a pipe's end held there would
 * keep its reader from seeing the end). */
static void slots_clear(proc_state *st, const int *slots, int n) {
  for (int k = 0; k < n; k++)
    while (dup3(st->devnull, slots[k], O_CLOEXEC) < 0 && errno == EINTR) {}
}

static int slots_ready(proc_state *st) {
  if (st->nslots) return st->nslots > 0;
  int r = slots_make(st, st->slots, NSLOTS);
  if (r < 0) return 0;
  st->nslots = r ? NSLOTS : -1;     /* no room low enough: never again */
  return r;
}

static int jslots_ready(proc_state *st);

static int moved_to(const int *src, int n, int fd) {
  for (int k = 0; k < n; k++)
    if (src[k] == fd) return k;
  return -1;
}

/* Whether fd is one of orch's slots (a source given as one, its number
 * guessed, would be overwritten). */
static int is_slot(const proc_state *st, int fd) {
  if (st->nslots > 0 && moved_to(st->slots, NSLOTS, fd) >= 0) return 1;
  return st->njsets > 0 && moved_to(&st->jslots[0][0], (int)(sizeof st->jslots / sizeof(int)), fd) >= 0;
}

/* Moves the fds of the child's view (map: nmap fds, cg: ncg cgroup fds) from
 * low on, but keep, into slots (nslots of them; *nmoved used, to be cleared
 * by slots_clear). Returns files_below (one past the highest fd the child
 * uses), or -1 when one could not be moved. */
static int files_move(proc_state *st, orch__fdmap *map, int nmap, int *cg, int ncg,
                      const int *slots, int nslots, int low, int keep, int *nmoved) {
  int src[NSLOTS], n = 0, below = 3;
  *nmoved = 0;
  for (int i = 0; i < nmap + ncg; i++) {
    int *f = i < nmap ? &map[i].source : &cg[i - nmap];
    if (is_slot(st, *f)) return -1;
    if (*f >= low && *f != keep) {
      int k = moved_to(src, n, *f);
      if (k < 0) {
        if (n == nslots || dup3(*f, slots[n], O_CLOEXEC) < 0) return -1;
        src[n] = *f;
        k = n++;
        *nmoved = n;
      }
      *f = slots[k];
    }
    if (*f >= below) below = *f + 1;
  }
  return below;
}

/* The child's view of req's fds, in map and cg (ncg cgroup fds): its
 * sources below FILES_LOW as they are, the others moved into the slots
 * (*nmoved of them, to be put back by files_restore). Returns files_below:
 * one past the highest fd the child uses. */
static int set_take(proc_state *st, int nfds);
static const int *set_slots(proc_state *st, int set);
static void set_give(proc_state *st, int set, int nmoved);
static void files_restore(proc_state *st, int nmoved, int set);
#define JOB_SLOTS_N ((int)(sizeof ((proc_state *)0)->jslots[0] / sizeof(int)))

static int files_prepare(proc_state *st, const orch__spawn_req *req, orch__fdmap *map,
                         int *cg, int *nmoved, int *set) {
  int maxfd = 2, high = 0;
  *nmoved = 0;
  for (int i = 0; i < req->nfds; i++) {
    map[i] = req->fds[i];
    if (map[i].source > maxfd) maxfd = map[i].source;
    if (map[i].source >= FILES_LOW) high = 1;
  }
  for (int i = 0; i < req->ncgroup_fds; i++) {
    cg[i] = req->cgroup_fds[i];
    if (cg[i] > maxfd) maxfd = cg[i];
    if (cg[i] >= FILES_LOW) high = 1;
  }
  *set = -1;
  if (!high) return maxfd + 1;
  int below = -1;
  if (slots_ready(st)) {
    below = files_move(st, map, req->nfds, cg, req->ncgroup_fds, st->slots, NSLOTS, FILES_LOW, -1, nmoved);
  } else if ((*set = set_take(st, req->nfds + req->ncgroup_fds)) >= 0) {
    /* No slots of its own (they are made at the first spawn, and a
     * supervisor's start is all started spawns: its first restart found no
     * fd below SLOTS_MAX free past the fleet's pipes, and every restart's
     * child copied orch's whole table, 13,000 fds at 10,000 services, and
     * closed them at its exec): a free set of the started spawns', held
     * for the time of the clone. */
    below = files_move(st, map, req->nfds, cg, req->ncgroup_fds, set_slots(st, *set), JOB_SLOTS_N, FILES_LOW,
                       -1, nmoved);
  }
  if (below >= 0) return below;
  /* As they are: the copy goes up to maxfd. */
  files_restore(st, *nmoved, *set);
  *set = -1;
  *nmoved = 0;
  for (int i = 0; i < req->nfds; i++) map[i] = req->fds[i];
  for (int i = 0; i < req->ncgroup_fds; i++) cg[i] = req->cgroup_fds[i];
  return maxfd + 1;
}

/* The slots (set -1) or the borrowed set let go of what they held. */
static void files_restore(proc_state *st, int nmoved, int set) {
  if (set < 0) slots_clear(st, st->slots, nmoved);
  else set_give(st, set, nmoved);
}

int orch__spawn(orch_runtime *rt, const orch__spawn_req *req, orch__child *c,
                const char **step) {
  proc_state *st = orch__proc_need(rt);
  *step = "spawn";
  if (!st) return -ENOSYS;
  if (req->nfds < 0 || req->nfds > MAX_FDMAP) return -EINVAL;
  int r = ensure_stack(st);
  if (r < 0) return r;
  /* The child sees its fds where files_prepare put them. */
  orch__spawn_req creq = *req;
  orch__fdmap map[MAX_FDMAP];
  int cgmap[16];
  int nmoved = 0, below = 0, set = -1;
  if (files_works && req->ncgroup_fds <= (int)(sizeof cgmap / sizeof *cgmap)) {
    slots_ready(st);
    below = files_prepare(st, req, map, cgmap, &nmoved, &set);
    creq.fds = map;
    creq.cgroup_fds = cgmap;
    req = &creq;
  }
  unsigned long files = below ? CLONE_FILES : 0;
  spawn_ctx x;
  pid_t pid;
  int e, pidfd;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
again:
  ctx_init(&x, req);
  x.files_below = below;
  UNPOISON_STACK(st->stack, CHILD_STACK);
  pid = -1;
  e = 0;
  pidfd = -1;
  x.born0 = orch__proc_boot_ns();
#ifdef HAVE_CLONE3_INTO
  int *want = orch__proc_pidfd_wanted(st) ? &pidfd : NULL;
  int nofd = (req->flags & ORCH__SPAWN_CGROUP_NOFD) != 0;
  if ((req->flags & ORCH__SPAWN_CGROUP) && clone3_works && (nofd || req->ncgroup_fds > 0)) {
    /* Born in the v2 cgroup: the child skips writing the last fd. The
     * kernels that have INTO_CGROUP have CLEAR_SIGHAND too. */
    x.ncg = nofd ? req->ncgroup_fds : req->ncgroup_fds - 1;
    x.cleared = clear_works != 0;
    long r3 = clone3_pidfd(spawn_child, &x, st->stack, CHILD_STACK,
                           CLONE_VFORK | files | INTO_CGROUP | (x.cleared ? CLEAR_SIGHAND : 0), req->cgroup_dir, want);
    if (r3 >= 0) { pid = (pid_t)r3; clone3_works = 2; }
    else if (!nofd && (r3 == -ENOSYS || r3 == -E2BIG || r3 == -EINVAL)) clone3_works = 0;
    else e = (int)-r3;
    if (pid < 0 && !e) x.ncg = req->ncgroup_fds;
  }
  if (pid < 0 && !e && clear_works) {
    /* Any failure here falls back to clone(2), which reports its own. */
    x.cleared = 1;
    long r3 = clone3_pidfd(spawn_child, &x, st->stack, CHILD_STACK, CLONE_VFORK | files | CLEAR_SIGHAND, -1, want);
    if (r3 >= 0) { pid = (pid_t)r3; clear_works = 2; }
    else if (r3 == -ENOSYS || r3 == -E2BIG || r3 == -EINVAL || r3 == -EPERM) clear_works = 0;
  }
  if (pid < 0 && !e) {
    x.cleared = 0;
    pidfd = -1;
#endif
  pid = clone(spawn_child, st->stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | (int)files | SIGCHLD, &x);
  e = errno;
#ifdef HAVE_CLONE3_INTO
  }
#endif
  if (pid >= 0 && x.files_failed) {
    /* The kernel has no CLOSE_RANGE_UNSHARE (Linux 5.9), or a filter
     * refused it: the child ended at once; the fd table is copied whole. */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    if (pidfd >= 0) close(pidfd);
    files_works = 0;
    files = 0;
    below = 0;
    goto again;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  files_restore(st, nmoved, set);
  if (pid < 0) {
    *step = "clone";
    return -e;
  }
  if (x.err) {
    /* The child has already called exit: this wait is immediate. */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    if (pidfd >= 0) close(pidfd);
    *step = x.step;
    return -x.err;
  }
  child_fill(&x, c, pid);
  orch__proc_table_add(st, c);
  if (pidfd >= 0) orch__proc_pidfd_watch(st, c, pidfd);
  return pid;
}

/* ---- A started spawn's fds. Its child is born sharing orch's fd table
 * too (CLONE_FILES), but orch goes on while the child has not copied it
 * yet: the caller closes the child's ends of its pipes at once, and orch
 * may open, close and reuse any number meanwhile. So every fd the child
 * uses above 2 (and every cgroup.procs fd it writes) is dup'ed into a set
 * of low slots of the job's own, which it holds until it settles (the
 * child has exec'd or failed: it copied the table long before; the
 * runtime's /dev/null, open as long as the table, stays where it is), and the
 * child copies only the fds below the highest of them. A job that finds
 * no free set (four started spawns pending), or has more fds than a set
 * holds, copies the whole table at its clone as before. Where the kernel
 * refuses the copy (close_range's CLOSE_RANGE_UNSHARE, Linux 5.9, or a
 * filter), the child copies the whole table (unshare(CLONE_FILES)) and the
 * next jobs no longer share. */

#define JOB_SETS ((int)(sizeof ((proc_state *)0)->jslots / sizeof ((proc_state *)0)->jslots[0]))
#define JOB_SLOTS ((int)(sizeof ((proc_state *)0)->jslots[0] / sizeof(int)))
_Static_assert(sizeof ((proc_state *)0)->jslots[0] <= sizeof ((proc_state *)0)->slots, "a set fits files_move's sources");

/* The sets, made at the first started spawn when there is room below
 * SLOTS_MAX; 0 when there are none. */
static int jslots_ready(proc_state *st) {
  if (st->njsets) return st->njsets > 0;
  int r = slots_make(st, &st->jslots[0][0], JOB_SETS * JOB_SLOTS);
  if (r < 0) return 0;
  st->njsets = r ? JOB_SETS : -1;
  return r;
}

/* The set's slots let go of what they held; the set is free again. */
static void job_files_release(proc_state *st, orch__spawn_job *j) {
  if (j->slotset < 0) return;
  slots_clear(st, st->jslots[j->slotset], j->nmoved);
  st->jbusy &= ~(1u << j->slotset);
  j->slotset = -1;
  j->nmoved = 0;
}

/* A free set for a spawn of nfds fds (files_prepare, when the spawn has no
 * slots of its own), taken: its index, or -1. */
static int set_take(proc_state *st, int nfds) {
  if (nfds > JOB_SLOTS || !jslots_ready(st)) return -1;
  int s = 0;
  while (s < JOB_SETS && (st->jbusy & (1u << s))) s++;
  if (s == JOB_SETS) return -1;
  st->jbusy |= 1u << s;
  return s;
}

static const int *set_slots(proc_state *st, int set) { return st->jslots[set]; }

static void set_give(proc_state *st, int set, int nmoved) {
  slots_clear(st, st->jslots[set], nmoved);
  st->jbusy &= ~(1u << set);
}

/* The job's own view of req (j->freq) with its fds above 2 in a free set
 * (the runtime's /dev/null, open as long as the table, as it is): returns
 * files_below, or 0 (the child copies the whole table; j->req is req). */
static int job_files(proc_state *st, const orch__spawn_req *req, orch__spawn_job *j) {
  int nf = req->nfds, nc = req->ncgroup_fds;
  if (!files_works || nf > JOB_SLOTS || nc > JOB_SLOTS || !jslots_ready(st)) return 0;
  int s = 0;
  while (s < JOB_SETS && (st->jbusy & (1u << s))) s++;
  if (s == JOB_SETS) return 0;
  j->slotset = s;
  st->jbusy |= 1u << s;
  for (int i = 0; i < nf; i++) j->fmap[i] = req->fds[i];
  for (int i = 0; i < nc; i++) j->fcg[i] = req->cgroup_fds[i];
  int keep = st->devnull < SLOTS_MAX ? st->devnull : -1;
  int below = files_move(st, j->fmap, nf, j->fcg, nc, st->jslots[s], JOB_SLOTS, 3, keep, &j->nmoved);
  if (below < 0) {
    job_files_release(st, j);
    return 0;
  }
  j->freq = *req;
  j->freq.fds = j->fmap;
  j->freq.cgroup_fds = j->fcg;
  j->req = &j->freq;
  return below;
}

/* ---- A started spawn (orch__spawn_start): orch goes on while its child
 * gets to its exec, on a stack of its own; the kernel clears job->tid and
 * wakes a futex on it when the child's exec (or exit) gives orch's memory
 * back (CLONE_CHILD_CLEARTID), which is when the job settles. */

#define JOB_STACK (64 * 1024)
#define JOB_STACKS_KEPT 4

enum { JOB_NONE, JOB_PENDING, JOB_STARTED, JOB_FAILED };

static char *job_stack_get(proc_state *st) {
  if (st->nstacks > 0) return st->stacks[--st->nstacks];
  void *p = mmap(NULL, JOB_STACK, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

static void job_stack_put(proc_state *st, char *stack) {
  if (st && st->nstacks < JOB_STACKS_KEPT) st->stacks[st->nstacks++] = stack;
  else munmap(stack, JOB_STACK);
}

/* How long a wait for the exec of a child born in a cgroup not read
 * before its clone (job->frozen_dir) lasts before that cgroup's
 * cgroup.events is read (and again each time as long). */
#define JOB_FROZEN_WAIT_NS 10000000L

/* Waits until the child no longer uses orch's memory (its exec or exit).
 * orch.spawn_begin does not read a cgroup before the clone (the first read
 * of a new cgroup's cgroup.events, an open that makes its kernfs node, was
 * a tenth of orch's CPU for each service of a start of many): a child born
 * frozen (below a frozen cgroup), or frozen on its way, would never exec.
 * So a wait for such a child that lasts reads its cgroup.events, and a
 * frozen child is killed: its spawn fails (EBUSY, "frozen"). */
static void job_wait(orch__spawn_job *j) {
  while (__atomic_load_n(&j->tid, __ATOMIC_ACQUIRE) != 0) {
    if (!j->frozen_dir) {
      syscall(SYS_futex, &j->tid, FUTEX_WAIT, 1, NULL, NULL, 0);
      continue;
    }
    struct timespec ts = { 0, JOB_FROZEN_WAIT_NS };
    if (syscall(SYS_futex, &j->tid, FUTEX_WAIT, 1, &ts, NULL, 0) == 0 || errno != ETIMEDOUT) continue;
    if (__atomic_load_n(&j->tid, __ATOMIC_ACQUIRE) != 0 && orch__cg_dir_frozen(j->frozen_dir) > 0) {
      /* Not exec'd, not reaped (a started spawn settles before any
       * status is taken): the pid is still the child's. */
      kill(j->pid, SIGKILL);
      j->frozen_dir = NULL;
      j->frozen = 1;
    }
  }
  if (j->frozen) {
    j->err = EBUSY;
    j->step = "frozen";
  }
}

/* The pending job's end: its child has exec'd (then registered, its status
 * goes to c) or failed (then reaped). No Lua. st may be NULL (the table is
 * gone: the runtime closed). */
static void job_settle(proc_state *st, orch__spawn_job *j, int mine) {
  if (j->state != JOB_PENDING) return;
  if (mine) job_wait(j);
  if (st) job_files_release(st, j);
  if (j->files_unshared) files_works = 0;
  if (j->pprev) {
    *j->pprev = j->next;
    if (j->next) j->next->pprev = j->pprev;
    j->pprev = NULL;
    j->next = NULL;
  }
  job_stack_put(st, j->stack);
  j->stack = NULL;
  int pidfd = j->pidfd;
  j->pidfd = -1;
  if (!mine || j->err || !st) {
    if (pidfd >= 0) close(pidfd);
    pidfd = -1;
  }
  if (!mine) {
    /* A fork child's copy: the child is the parent's. */
    j->state = JOB_FAILED;
    j->err = ECHILD;
    j->step = "started before a fork";
    return;
  }
  if (j->err) {
    while (waitpid(j->pid, NULL, 0) < 0 && errno == EINTR) {}
    j->state = JOB_FAILED;
    return;
  }
  child_fill(j, j->child, j->pid);
  j->state = JOB_STARTED;
  if (st) orch__proc_table_add(st, j->child);
  if (pidfd >= 0) orch__proc_pidfd_watch(st, j->child, pidfd);
}

void orch__spawner_settle(proc_state *st) {
  while (st->jobs) job_settle(st, st->jobs, 1);
}

int orch__spawn_start(orch_runtime *rt, const orch__spawn_req *req, orch__spawn_job *job,
                      orch__child *c, const char **step) {
  proc_state *st = orch__proc_need(rt);
  *step = "spawn";
  job->state = JOB_NONE;
  if (!st) return -ENOSYS;
  if (req->nfds < 0 || req->nfds > MAX_FDMAP) return -EINVAL;
#ifndef HAVE_CLONE3_INTO
  (void)c;
  return -ENOSYS;
#else
  if (!clear_works) return -ENOSYS;
  char *stack = job_stack_get(st);
  if (!stack) return -ENOMEM;
  ctx_init(job, req);
  job->child = c;
  job->tid = 1;
  job->pidfd = -1;
  int *want = orch__proc_pidfd_wanted(st) ? &job->pidfd : NULL;
  job->cleared = 1;
  job->files_below = job_files(st, req, job);
  unsigned long files = job->files_below ? CLONE_FILES : 0;
  UNPOISON_STACK(stack, JOB_STACK);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  long pid = -ENOSYS;
  int e = 0;
  job->born0 = orch__proc_boot_ns();
  int nofd = (req->flags & ORCH__SPAWN_CGROUP_NOFD) != 0;
  if ((req->flags & ORCH__SPAWN_CGROUP) && clone3_works && (nofd || req->ncgroup_fds > 0)) {
    job->ncg = nofd ? req->ncgroup_fds : req->ncgroup_fds - 1;
    long r3 = clone3_into(spawn_child, job, stack, JOB_STACK,
                          CLONE_CHILD_CLEARTID | files | INTO_CGROUP | CLEAR_SIGHAND, req->cgroup_dir,
                          want, (int *)&job->tid);
    if (want && (r3 == -EMFILE || r3 == -ENFILE)) {   /* no pidfd: the walk reaps it */
      job->pidfd = -1;
      r3 = clone3_into(spawn_child, job, stack, JOB_STACK,
                       CLONE_CHILD_CLEARTID | files | INTO_CGROUP | CLEAR_SIGHAND, req->cgroup_dir,
                       NULL, (int *)&job->tid);
    }
    if (r3 >= 0) { pid = r3; clone3_works = 2; }
    else if (!nofd && (r3 == -ENOSYS || r3 == -E2BIG || r3 == -EINVAL)) clone3_works = 0;
    else e = (int)-r3;
    if (pid < 0 && !e) job->ncg = req->ncgroup_fds;
  }
  if (pid < 0 && !e) {
    job->pidfd = -1;
    long r3 = clone3_into(spawn_child, job, stack, JOB_STACK, CLONE_CHILD_CLEARTID | files | CLEAR_SIGHAND,
                          -1, want, (int *)&job->tid);
    if (want && (r3 == -EMFILE || r3 == -ENFILE)) {
      job->pidfd = -1;
      r3 = clone3_into(spawn_child, job, stack, JOB_STACK, CLONE_CHILD_CLEARTID | files | CLEAR_SIGHAND,
                       -1, NULL, (int *)&job->tid);
    }
    if (r3 >= 0) { pid = r3; clear_works = 2; }
    else if (r3 == -ENOSYS || r3 == -E2BIG || r3 == -EINVAL || r3 == -EPERM) clear_works = 0;
    else e = (int)-r3;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (pid < 0) {
    if (job->pidfd >= 0) close(job->pidfd);
    job->pidfd = -1;
    job_files_release(st, job);
    job_stack_put(st, stack);
    if (!e) return -ENOSYS;            /* the caller spawns the old way */
    *step = "clone";
    return -e;
  }
  job->stack = stack;
  job->pid = (pid_t)pid;
  job->state = JOB_PENDING;
  job->next = st->jobs;
  if (st->jobs) st->jobs->pprev = &job->next;
  job->pprev = &st->jobs;
  st->jobs = job;
  return (int)pid;
#endif
}

int orch__spawn_settle(orch_runtime *rt, orch__spawn_job *job, const char **step) {
  job_settle(orch__proc_state(rt), job, 1);
  if (job->state == JOB_STARTED) return job->pid;
  *step = job->step ? job->step : "spawn";
  return -(job->err ? job->err : EINVAL);
}

int orch__spawn_pending(const orch__spawn_job *job) {
  return job->state == JOB_PENDING;
}

/* The runtime closes: nothing is registered any more, the stacks go. */
void orch__spawner_close(proc_state *st) {
  while (st->nslots > 0) close(st->slots[--st->nslots]);
  if (st->stack) munmap(st->stack, CHILD_STACK);
  st->stack = NULL;
  while (st->jobs) {
    job_wait(st->jobs);
    job_files_release(st, st->jobs);
    job_settle(NULL, st->jobs, 1);
  }
  if (st->njsets > 0)
    for (int s = 0; s < JOB_SETS; s++)
      for (int k = 0; k < JOB_SLOTS; k++) close(st->jslots[s][k]);
  st->njsets = 0;
  while (st->nstacks > 0) munmap(st->stacks[--st->nstacks], JOB_STACK);
}

/* In a fork child: started spawns are the parent's (their jobs settle as
 * failed here, before anything in the child can wait for them). */
void orch__spawner_fork(proc_state *st) {
  while (st->jobs) job_settle(st, st->jobs, 0);
}
