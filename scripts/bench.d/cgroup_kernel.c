/*
 * cgroup_kernel.c: what containment costs the kernel, apart from orch
 * (scripts/bench cgroup; doc/benchmarks.md, "The kernel's price of a
 * cgroup"). Root only; every cgroup it makes is below
 * <v2 mount>/orch-kbench.<pid> (and the same name in the v1 hierarchies it
 * times) and removed at the end.
 *
 *   cgroup_kernel [N [PROG]]
 *
 * PROG (default /bin/true) must exit 0 at once. The hierarchies come from
 * /proc/self/mountinfo; the cgroups are made below this process's own.
 * Prints "name value unit" lines, each the median over N operations (µs of
 * wall time; N = 300):
 *   kernel_mkdir_v2_c / kernel_rmdir_v2_c   an empty v2 cgroup, no
 *                                controller enabled for it
 *   kernel_spawn_plain_c         clone3(CLONE_VFORK) + exec PROG + waitpid
 *   kernel_spawn_same_c          the same with CLONE_INTO_CGROUP into one
 *                                cgroup kept from spawn to spawn
 *   kernel_spawn_fresh_c         mkdir + clone3 into it + waitpid + rmdir
 *   kernel_fresh_{mkdir,clone,wait,rmdir}_c   its parts
 *   kernel_cpu_{plain,same,fresh}_c   this process's CPU per spawn (µs,
 *                                the kernel's work for the parent)
 *   kernel_populated_after_reap_c     times (of N) the fresh cgroup's
 *                                cgroup.events still said populated 1 once
 *                                waitpid had returned
 *   kernel_rmdir_ebusy_c         times rmdir failed with EBUSY right after
 *   kernel_migrate_v2_c          a child writes 0 to a v2 cgroup.procs
 *                                before exec (over a plain spawn)
 *   kernel_{mkdir,rmdir}_v1_<c>_c  an empty cgroup in the v1 hierarchy of
 *                                controller c (memory, pids, cpu), if any
 *   kernel_migrate_v1_<c>_c      a child writes 0 to its cgroup.procs
 *   kernel_migrate_alone_v2_c, kernel_migrate_alone_v1_memory_c   the
 *                                write itself (µs), when no migration
 *                                happened in the 200 ms before: median of 5
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

static double now_us(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static char *prog;

/* snprintf of a path; a path too long for buf ends the program. */
static void pathf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void pathf(char *buf, size_t size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, size, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= size) { fprintf(stderr, "cgroup_kernel: path too long\n"); exit(1); }
}

/* clone3 without CLONE_VM, CLONE_VFORK: returns once the child exec'd. */
static pid_t spawn(int cgfd, const char *join) {
  struct {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
        set_tid_size, cgroup;
  } ca;
  memset(&ca, 0, sizeof ca);
  ca.flags = CLONE_VFORK | (cgfd >= 0 ? CLONE_INTO_CGROUP : 0);
  ca.exit_signal = SIGCHLD;
  ca.cgroup = (uint64_t)(cgfd >= 0 ? cgfd : 0);
  long pid = syscall(SYS_clone3, &ca, sizeof ca);
  if (pid == 0) {
    if (join) {
      int fd = open(join, O_WRONLY);
      if (fd < 0 || write(fd, "0", 1) != 1) _exit(126);
      close(fd);
    }
    char *argv[] = { prog, NULL };
    execv(prog, argv);
    _exit(127);
  }
  if (pid < 0) { perror("clone3"); exit(1); }
  return (pid_t)pid;
}

static void reap(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { fprintf(stderr, "child failed: %d\n", st); exit(1); }
}

static int populated(const char *dir) {
  char p[4096], buf[256];
  pathf(p, sizeof p, "%s/cgroup.events", dir);
  int fd = open(p, O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  char *s = strstr(buf, "populated ");
  return s ? s[10] == '1' : -1;
}

/* One write of "0" to dir/cgroup.procs by a child, 200 ms after the
 * previous one: its median over 5 (µs). */
static void migrate_alone(const char *dir, const char *tag) {
  double v[5];
  char join[4200], name[128];
  pathf(join, sizeof join, "%s/cgroup.procs", dir);
  for (int i = 0; i < 5; i++) {
    int fds[2];
    if (pipe(fds) < 0) { perror("pipe"); exit(1); }
    struct timespec gap = { 0, 200000000 };
    nanosleep(&gap, NULL);
    pid_t c = fork();
    if (c == 0) {
      int fd = open(join, O_WRONLY);
      struct timespec a, b;
      clock_gettime(CLOCK_MONOTONIC, &a);
      int ok = fd >= 0 && write(fd, "0", 1) == 1;
      clock_gettime(CLOCK_MONOTONIC, &b);
      double us = (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
      _exit(ok && write(fds[1], &us, sizeof us) == sizeof us ? 0 : 1);
    }
    close(fds[1]);
    if (read(fds[0], &v[i], sizeof v[i]) != sizeof v[i]) v[i] = -1;
    close(fds[0]);
    reap(c);
  }
  snprintf(name, sizeof name, "kernel_migrate_alone_%s_c", tag);
  printf("%s %.1f us\n", name, median(v, 5));
}

static void out(const char *name, double v, const char *unit) {
  printf("kernel_%s_c %.1f %s\n", name, v, unit);
}

static void mkdir_rmdir(const char *base, const char *tag, int n) {
  double *a = calloc((size_t)n, sizeof *a), *b = calloc((size_t)n, sizeof *b);
  char d[4200], name[128];
  for (int i = 0; i < n; i++) {
    pathf(d, sizeof d, "%s/m%d", base, i);
    double t0 = now_us(CLOCK_MONOTONIC);
    if (mkdir(d, 0755) < 0) { perror(d); exit(1); }
    double t1 = now_us(CLOCK_MONOTONIC);
    if (rmdir(d) < 0) { perror(d); exit(1); }
    double t2 = now_us(CLOCK_MONOTONIC);
    a[i] = t1 - t0;
    b[i] = t2 - t1;
  }
  snprintf(name, sizeof name, "mkdir_%s", tag);
  out(name, median(a, n), "us");
  snprintf(name, sizeof name, "rmdir_%s", tag);
  out(name, median(b, n), "us");
  free(a);
  free(b);
}

/* A child that joins cgroup dir by writing cgroup.procs before exec: the
 * time of its spawn and reap, minus a plain one's. */
static void migrate(const char *dir, const char *tag, int n, double plain) {
  double *a = calloc((size_t)n, sizeof *a);
  char join[4200], name[128];
  pathf(join, sizeof join, "%s/cgroup.procs", dir);
  for (int i = 0; i < n; i++) {
    double t0 = now_us(CLOCK_MONOTONIC);
    reap(spawn(-1, join));
    a[i] = now_us(CLOCK_MONOTONIC) - t0;
  }
  snprintf(name, sizeof name, "migrate_%s", tag);
  out(name, median(a, n) - plain, "us");
  free(a);
}

/* The mount point of the v2 hierarchy (fstype "cgroup2") or of the v1
 * hierarchy with controller ctl in its options, into buf; 0 or -1. */
static int mount_of(const char *fstype, const char *ctl, char *buf, size_t size) {
  FILE *f = fopen("/proc/self/mountinfo", "r");
  char line[8192];
  int found = -1;
  while (f && found < 0 && fgets(line, sizeof line, f)) {
    char *sep = strstr(line, " - ");
    if (!sep) continue;
    char mnt[4096], type[64], src[256], opts[1024];
    if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1) continue;
    if (sscanf(sep + 3, "%63s %255s %1023s", type, src, opts) != 3 || strcmp(type, fstype)) continue;
    if (ctl) {
      int hit = 0;
      for (char *sv = NULL, *t = strtok_r(opts, ",", &sv); t; t = strtok_r(NULL, ",", &sv)) hit |= !strcmp(t, ctl);
      if (!hit) continue;
    }
    pathf(buf, size, "%s", mnt);
    found = 0;
  }
  if (f) fclose(f);
  return found;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 300;
  if (n < 1) n = 1;
  prog = argc > 2 ? argv[2] : "/bin/true";
  char v2[4096], own[4096] = "", top[4200], same[4300], d[4400];
  if (mount_of("cgroup2", NULL, v2, sizeof v2) < 0) { fprintf(stderr, "cgroup_kernel: no cgroup v2 hierarchy\n"); return 1; }
  FILE *cf = fopen("/proc/self/cgroup", "r");
  char line[4096];
  while (cf && fgets(line, sizeof line, cf))
    if (!strncmp(line, "0::", 3)) { line[strcspn(line, "\n")] = 0; pathf(own, sizeof own, "%s", strcmp(line + 3, "/") ? line + 3 : ""); }
  if (cf) fclose(cf);
  pathf(top, sizeof top, "%s%s/orch-kbench.%d", v2, own, (int)getpid());
  if (mkdir(top, 0755) < 0) { perror(top); return 1; }
  pathf(same, sizeof same, "%s/same", top);
  if (mkdir(same, 0755) < 0) { perror(same); return 1; }
  int samefd = open(same, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

  mkdir_rmdir(top, "v2", n);

  double *w = calloc((size_t)n, sizeof *w), *p1 = calloc((size_t)n, sizeof *w),
         *p2 = calloc((size_t)n, sizeof *w), *p3 = calloc((size_t)n, sizeof *w),
         *p4 = calloc((size_t)n, sizeof *w);
  double c0, plain;
  int pop = 0, busy = 0;

  /* Interleaved, so that a change of the machine's load hits all three. */
  double *ws = calloc((size_t)n, sizeof *w), *wf = calloc((size_t)n, sizeof *w);
  double cpu[3] = { 0, 0, 0 };
  int pop_same = 0;
  for (int i = 0; i < n; i++) {
    c0 = now_us(CLOCK_PROCESS_CPUTIME_ID);
    double t0 = now_us(CLOCK_MONOTONIC);
    reap(spawn(-1, NULL));
    w[i] = now_us(CLOCK_MONOTONIC) - t0;
    cpu[0] += now_us(CLOCK_PROCESS_CPUTIME_ID) - c0;

    c0 = now_us(CLOCK_PROCESS_CPUTIME_ID);
    t0 = now_us(CLOCK_MONOTONIC);
    pid_t p = spawn(samefd, NULL);
    reap(p);
    ws[i] = now_us(CLOCK_MONOTONIC) - t0;
    cpu[1] += now_us(CLOCK_PROCESS_CPUTIME_ID) - c0;
    if (populated(same) == 1) pop_same++;

    pathf(d, sizeof d, "%s/f%d", top, i);
    c0 = now_us(CLOCK_PROCESS_CPUTIME_ID);
    t0 = now_us(CLOCK_MONOTONIC);
    if (mkdir(d, 0755) < 0) { perror(d); return 1; }
    double t1 = now_us(CLOCK_MONOTONIC);
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    p = spawn(fd, NULL);
    close(fd);
    double t2 = now_us(CLOCK_MONOTONIC);
    reap(p);
    double t3 = now_us(CLOCK_MONOTONIC);
    if (populated(d) == 1) pop++;
    double t4 = now_us(CLOCK_MONOTONIC);
    while (rmdir(d) < 0) {
      if (errno != EBUSY) { perror(d); return 1; }
      busy++;
      sched_yield();
    }
    double t5 = now_us(CLOCK_MONOTONIC);
    cpu[2] += now_us(CLOCK_PROCESS_CPUTIME_ID) - c0;
    wf[i] = (t1 - t0) + (t2 - t1) + (t3 - t2) + (t5 - t4);
    p1[i] = t1 - t0;
    p2[i] = t2 - t1;
    p3[i] = t3 - t2;
    p4[i] = t5 - t4;
  }
  out("spawn_plain", plain = median(w, n), "us");
  out("spawn_same", median(ws, n), "us");
  out("spawn_fresh", median(wf, n), "us");
  out("fresh_mkdir", median(p1, n), "us");
  out("fresh_clone", median(p2, n), "us");
  out("fresh_wait", median(p3, n), "us");
  out("fresh_rmdir", median(p4, n), "us");
  out("cpu_plain", cpu[0] / n, "us");
  out("cpu_same", cpu[1] / n, "us");
  out("cpu_fresh", cpu[2] / n, "us");
  out("populated_after_reap", pop + pop_same, "times");
  out("rmdir_ebusy", busy, "times");

  /* Migration by writing cgroup.procs (what a child does for a v1 mirror). */
  {
    double *a = calloc((size_t)n, sizeof *a);
    for (int i = 0; i < n; i++) {
      double t0 = now_us(CLOCK_MONOTONIC);
      reap(spawn(-1, NULL));
      a[i] = now_us(CLOCK_MONOTONIC) - t0;
    }
    plain = median(a, n);
    free(a);
  }
  migrate(same, "v2", n, plain);
  migrate_alone(same, "v2");

  const char *v1[] = { "memory", "pids", "cpu" };
  for (size_t k = 0; k < sizeof v1 / sizeof v1[0]; k++) {
    const char *tag = v1[k];
    char m[4096], v1top[4200], v1tag[128];
    if (mount_of("cgroup", tag, m, sizeof m) < 0) continue;
    pathf(v1top, sizeof v1top, "%s/orch-kbench.%d", m, (int)getpid());
    if (mkdir(v1top, 0755) < 0) { perror(v1top); continue; }
    snprintf(v1tag, sizeof v1tag, "v1_%s", tag);
    mkdir_rmdir(v1top, v1tag, n);
    migrate(v1top, v1tag, n, plain);
    if (!strcmp(tag, "memory")) migrate_alone(v1top, v1tag);
    /* Back out: the next spawns must not inherit the v1 cgroup. */
    rmdir(v1top);
  }

  close(samefd);
  rmdir(same);
  if (rmdir(top) < 0) perror(top);
  return 0;
}
