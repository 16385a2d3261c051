/*
 * minisup.c: the physical limit of a process supervisor, for the supervisor
 * benchmark (scripts/bench.d/supervisors.sh): posix_spawn, one sigwaitinfo
 * loop, immediate restart, nothing else (no logging, no backoff, no state).
 *
 * usage: minisup N PROG [ARGS...]
 * Runs N copies of PROG (each with SVC_INDEX=i in its environment, in its own
 * process group) and restarts any that exits, at once. SIGUSR1 stops them all
 * (TERM), SIGUSR2 starts them all again, SIGTERM/SIGINT stop them and exit.
 *
 * With MINISUP_CGROUP=DIR (a directory of the cgroup v2 hierarchy, made at
 * start and removed at exit), the same containment as orch's: each copy i
 * runs in its own cgroup DIR/s<i>, made (mkdir) before its spawn, born into
 * it (clone3 CLONE_VM|CLONE_VFORK|CLONE_INTO_CGROUP on a stack of its own,
 * as orch spawns) and removed (rmdir) once reaped and not restarted; with
 * MINISUP_CGROUP_FRESH=1 also between a restart's reap and spawn (a fresh
 * cgroup per run). The kernel's price of containment, without orch.
 *
 * The floor of a restart at scale (issue 15, seventh session):
 * MINISUP_FDS=K holds K more fds (/dev/null, close-on-exec), as orch holds
 * its services' pipes; MINISUP_REAP=pid reaps the pid SIGCHLD names
 * (wait4(pid)) and the copy found through a table by pid, instead of
 * waitpid(-1) (the kernel's walk over every child) and a scan of the
 * copies (exact for exits one at a time, which is what it measures);
 * MINISUP_FILES=1 spawns with clone3(CLONE_VM|CLONE_VFORK|CLONE_FILES), the
 * child copying only fds 0-2 (close_range(3, ~0, CLOSE_RANGE_UNSHARE))
 * instead of the whole table.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int n;
static pid_t *pids;
static char ***envs;
static char **args;
static posix_spawnattr_t attr;

static const char *cgdir;          /* MINISUP_CGROUP, or NULL */
static int cgfresh;                /* MINISUP_CGROUP_FRESH=1 */
static char *cgmade;               /* cgmade[i]: DIR/s<i> exists */
static char *stack;
static int files;                  /* MINISUP_FILES=1 */
static int *slot_of;               /* MINISUP_REAP=pid: pid -> copy + 1 */
static long pid_max;

static void cgpath(char *buf, size_t size, int i) { snprintf(buf, size, "%s/s%d", cgdir, i); }

/* clone3(CLONE_VM|CLONE_VFORK|CLONE_INTO_CGROUP) running child(i) on
 * `stack`, as orch's spawner does (src/process.c). */
static int child_i;
static int child(void) {
  if (files && syscall(SYS_close_range, 3u, ~0u, 2u /* CLOSE_RANGE_UNSHARE */) < 0) return 126;
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  setpgid(0, 0);
  execve(args[0], args, envs[child_i]);
  return 127;
}
static long clone3_into(int cgfd) {
  struct {
    unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size,
                       tls, set_tid, set_tid_size, cgroup;
  } ca;
  memset(&ca, 0, sizeof ca);
  ca.flags = CLONE_VM | CLONE_VFORK | (cgfd >= 0 ? 0x200000000ULL /* CLONE_INTO_CGROUP */ : 0) |
             (files ? CLONE_FILES : 0);
  ca.exit_signal = SIGCHLD;
  ca.stack = (unsigned long long)(uintptr_t)stack;
  ca.stack_size = 1 << 16;
  ca.cgroup = cgfd >= 0 ? (unsigned long long)cgfd : 0;
  register long rax __asm__("rax") = SYS_clone3;
  register void *rdi __asm__("rdi") = &ca;
  register size_t rsi __asm__("rsi") = sizeof ca;
  register int (*r12)(void) __asm__("r12") = child;
  __asm__ volatile(
    "syscall\n\t"
    "test %%rax, %%rax\n\t"
    "jnz 1f\n\t"
    "xor %%ebp, %%ebp\n\t"
    "call *%%r12\n\t"
    "mov %%eax, %%edi\n\t"
    "mov $60, %%eax\n\t"        /* exit: only the child thread */
    "syscall\n\t"
    "hlt\n"
    "1:\n\t"
    : "+r"(rax)
    : "r"(rdi), "r"(rsi), "r"(r12)
    : "rcx", "r11", "memory");
  return rax;
}

static void start(int i) {
  pid_t pid;
  int r;
  if (cgdir) {
    char path[4096];
    cgpath(path, sizeof path, i);
    if (!cgmade[i] && mkdir(path, 0755) < 0 && errno != EEXIST) {
      fprintf(stderr, "minisup: mkdir %s: %s\n", path, strerror(errno));
      pids[i] = 0;
      return;
    }
    cgmade[i] = 1;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    child_i = i;
    long p = fd < 0 ? -errno : clone3_into(fd);
    if (fd >= 0) close(fd);
    r = p < 0 ? (int)-p : 0;
    pid = p < 0 ? 0 : (pid_t)p;
  } else if (files) {
    child_i = i;
    long p = clone3_into(-1);
    r = p < 0 ? (int)-p : 0;
    pid = p < 0 ? 0 : (pid_t)p;
  } else {
    r = posix_spawn(&pid, args[0], NULL, &attr, args, envs[i]);
  }
  pids[i] = r == 0 ? pid : 0;
  if (slot_of && r == 0 && pid < pid_max) slot_of[pid] = i + 1;
  if (r) fprintf(stderr, "minisup: spawn %s: %s\n", args[0], strerror(r));
}

/* After the reap of copy i: its cgroup goes unless it is kept for the
 * restart that follows. */
static void ended(int i, int restarting) {
  if (!cgdir || !cgmade[i] || (restarting && !cgfresh)) return;
  char path[4096];
  cgpath(path, sizeof path, i);
  if (rmdir(path) == 0 || errno == ENOENT) cgmade[i] = 0;
}

static void cleanup(void) {
  if (cgdir) rmdir(cgdir);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: minisup N PROG [ARGS...]\n");
    return 2;
  }
  n = atoi(argv[1]);
  args = argv + 2;
  pids = calloc((size_t)n, sizeof *pids);
  envs = calloc((size_t)n, sizeof *envs);
  size_t ne = 0;
  while (environ[ne]) ne++;
  for (int i = 0; i < n; i++) {
    envs[i] = calloc(ne + 2, sizeof(char *));
    memcpy(envs[i], environ, ne * sizeof(char *));
    char *v = malloc(32);
    snprintf(v, 32, "SVC_INDEX=%d", i);
    envs[i][ne] = v;
  }
  sigset_t set, none;
  sigemptyset(&set);
  sigemptyset(&none);
  int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGUSR1, SIGUSR2 };
  for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++) sigaddset(&set, sigs[k]);
  sigprocmask(SIG_BLOCK, &set, NULL);
  cgdir = getenv("MINISUP_CGROUP");
  if (cgdir && !*cgdir) cgdir = NULL;
  const char *fds = getenv("MINISUP_FDS");
  for (long k = fds ? atol(fds) : 0; k > 0; k--)
    if (open("/dev/null", O_RDONLY | O_CLOEXEC) < 0) { perror("MINISUP_FDS"); return 1; }
  const char *reap = getenv("MINISUP_REAP");
  if (reap && !strcmp(reap, "pid")) {
    FILE *f = fopen("/proc/sys/kernel/pid_max", "r");
    if (!f || fscanf(f, "%ld", &pid_max) != 1) pid_max = 4194304;
    if (f) fclose(f);
    slot_of = calloc((size_t)pid_max, sizeof *slot_of);
  }
  const char *fl = getenv("MINISUP_FILES");
  files = fl && !strcmp(fl, "1");
  if (files && !stack) {
    stack = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) { perror("mmap"); return 1; }
  }
  if (cgdir) {
    const char *f = getenv("MINISUP_CGROUP_FRESH");
    cgfresh = f && !strcmp(f, "1");
    cgmade = calloc((size_t)n, 1);
    if (!stack) stack = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED || (mkdir(cgdir, 0755) < 0 && errno != EEXIST)) {
      perror(cgdir);
      return 1;
    }
  }
  posix_spawnattr_init(&attr);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &set);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  for (int i = 0; i < n; i++) start(i);
  int stopping = 0, quitting = 0;
  for (;;) {
    siginfo_t si;
    int sig = sigwaitinfo(&set, &si);
    if (sig < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (sig == SIGCHLD && slot_of) {
      /* One exit at a time: the pid the signal names, found by pid. */
      pid_t pid = si.si_pid;
      int st, i, fast = 0;
      if (pid > 0 && pid < pid_max && (i = slot_of[pid] - 1) >= 0 && waitpid(pid, &st, WNOHANG) == pid) {
        fast = 1;
        slot_of[pid] = 0;
        pids[i] = 0;
        ended(i, !stopping);
        if (!stopping) start(i);
      }
      if (stopping || !fast) {
        /* A stop's exits come together (merged signals): the walk. */
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
          if (pid < pid_max && (i = slot_of[pid] - 1) >= 0) {
            slot_of[pid] = 0;
            pids[i] = 0;
            ended(i, !stopping);
            if (!stopping) start(i);
          }
        }
      }
      if (quitting) {
        int alive = 0;
        for (int k = 0; k < n; k++) alive |= pids[k] != 0;
        if (!alive) { cleanup(); return 0; }
      }
    } else if (sig == SIGCHLD) {
      pid_t pid;
      int st;
      while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (int i = 0; i < n; i++) {
          if (pids[i] != pid) continue;
          pids[i] = 0;
          ended(i, !stopping);
          if (!stopping) start(i);
          break;
        }
      }
      if (quitting) {
        int alive = 0;
        for (int i = 0; i < n; i++) alive |= pids[i] != 0;
        if (!alive) { cleanup(); return 0; }
      }
    } else if (sig == SIGUSR2) {
      stopping = 0;
      for (int i = 0; i < n; i++) if (!pids[i]) start(i);
    } else {
      stopping = 1;
      if (sig != SIGUSR1) quitting = 1;
      int alive = 0;
      for (int i = 0; i < n; i++) {
        if (pids[i] > 0) {
          kill(pids[i], SIGTERM);
          alive = 1;
        }
      }
      if (quitting && !alive) { cleanup(); return 0; }
    }
  }
}
