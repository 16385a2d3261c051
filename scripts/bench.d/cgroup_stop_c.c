/*
 * cgroup_stop_c.c: the C limit of scripts/bench.d/cgroup_stop.lua (issue
 * 14): the stop of N services, each in its own cgroup, with and without a
 * double-forked escapee per service, done by the least a supervisor can do,
 * so that the kernel's part of the escapee stop's ratio is seen apart from
 * orch's. Root only (it makes cgroups below its own v2 cgroup, found from
 * /proc/self/mountinfo and /proc/self/cgroup, and removes them).
 *
 *   cgroup_stop_c [N [ROUNDS]]
 *
 * Each service is what cgroup_stop.lua runs: `sleep 1000`, or
 * `sh -c "(setsid sleep 1000 &); exec sleep 1000"` (the escapee: a sleep
 * in a session of its own, reparented away), born in its cgroup
 * (clone3 CLONE_INTO_CGROUP, fork semantics). The stop, timed from its first
 * signal until every cgroup is removed: SIGTERM to every main process (one
 * kill each), then each cgroup's cgroup.procs read once and every other
 * pid sent SIGTERM (the escapees), then each main process reaped, each
 * cgroup waited for until cgroup.events says "populated 0" (poll(2) on
 * the file, which the kernel wakes on a change) and removed. That is orch's
 * stop without its bookkeeping. Prints, best of ROUNDS rounds (3):
 *   cgstop_plain_c      ms  the stop of N plain services
 *   cgstop_escapee_c    ms  the same, each with an escapee
 *   cgstop_escapee_vs_plain_c   ratio
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
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

static char base[8400];

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

/* The v2 mount (from mountinfo) + this process's v2 cgroup. */
static void find_base(void) {
  char line[8192], mount[4096] = "", self[4096] = "";
  FILE *f = fopen("/proc/self/mountinfo", "r");
  if (!f) die("mountinfo");
  while (fgets(line, sizeof line, f)) {
    char *sep = strstr(line, " - cgroup2 ");
    if (!sep) continue;
    char *p = line;
    for (int i = 0; i < 4 && p; i++) p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
    if (!p) continue;
    size_t n = strcspn(p, " ");
    memcpy(mount, p, n);
    mount[n] = 0;
    break;
  }
  fclose(f);
  f = fopen("/proc/self/cgroup", "r");
  if (!f) die("cgroup");
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "0::", 3) == 0) {
      snprintf(self, sizeof self, "%.4000s", line + 3);
      self[strcspn(self, "\n")] = 0;
    }
  }
  fclose(f);
  if (!mount[0]) { fprintf(stderr, "cgroup_stop_c: no cgroup v2 hierarchy\n"); exit(1); }
  snprintf(base, sizeof base, "%s%s/orch-cstop.%d", mount, strcmp(self, "/") ? self : "", (int)getpid());
  if (mkdir(base, 0755) < 0) die(base);
}

static pid_t spawn_into(int cgfd, char **argv) {
  struct {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
             set_tid_size, cgroup;
  } ca;
  memset(&ca, 0, sizeof ca);
  ca.flags = CLONE_INTO_CGROUP;
  ca.exit_signal = SIGCHLD;
  ca.cgroup = (uint64_t)cgfd;
  long pid = syscall(SYS_clone3, &ca, sizeof ca);
  if (pid == 0) {
    setpgid(0, 0);
    execvp(argv[0], argv);
    _exit(127);
  }
  return (pid_t)pid;
}

static int count_procs(const char *dir) {
  char p[4200], buf[4096];
  snprintf(p, sizeof p, "%s/cgroup.procs", dir);
  int fd = open(p, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t k = read(fd, buf, sizeof buf - 1);
  close(fd);
  int n = 0;
  for (ssize_t i = 0; i < k; i++) n += buf[i] == '\n';
  return n;
}

static double round_once(int n, int escapee) {
  char **dirs = calloc((size_t)n, sizeof *dirs);
  pid_t *mains = calloc((size_t)n, sizeof *mains);
  char *plain[] = { "sleep", "1000", NULL };
  char *esc[] = { "sh", "-c", "(setsid sleep 1000 &); exec sleep 1000", NULL };
  for (int i = 0; i < n; i++) {
    if (asprintf(&dirs[i], "%s/s%d", base, i) < 0) die("asprintf");
    if (mkdir(dirs[i], 0755) < 0) die(dirs[i]);
    int fd = open(dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) die(dirs[i]);
    mains[i] = spawn_into(fd, escapee ? esc : plain);
    close(fd);
    if (mains[i] < 0) die("clone3");
  }
  /* Every process in place (the escapee forked, its launcher gone). */
  for (int i = 0; i < n; i++)
    while (count_procs(dirs[i]) != (escapee ? 2 : 1)) usleep(1000);
  usleep(300000);
  double t0 = now_ms();
  for (int i = 0; i < n; i++) kill(mains[i], SIGTERM);
  for (int i = 0; i < n; i++) {
    char p[4200], buf[4096];
    snprintf(p, sizeof p, "%s/cgroup.procs", dirs[i]);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    ssize_t k = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0) close(fd);
    if (k <= 0) continue;
    buf[k] = 0;
    for (char *s = buf, *e; *s; s = e) {
      long pid = strtol(s, &e, 10);
      if (e == s) break;
      if (pid > 0 && pid != mains[i]) kill((pid_t)pid, SIGTERM);
      while (*e == '\n') e++;
    }
  }
  for (int i = 0; i < n; i++) {
    while (waitpid(mains[i], NULL, 0) < 0 && errno == EINTR) {}
    char p[4200], buf[256];
    snprintf(p, sizeof p, "%s/cgroup.events", dirs[i]);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    for (;;) {
      ssize_t k = pread(fd, buf, sizeof buf - 1, 0);
      if (k <= 0) break;
      buf[k] = 0;
      if (strstr(buf, "populated 0")) break;
      struct pollfd pfd = { fd, POLLPRI, 0 };
      poll(&pfd, 1, 1000);
    }
    close(fd);
    if (rmdir(dirs[i]) < 0) die(dirs[i]);
  }
  double ms = now_ms() - t0;
  for (int i = 0; i < n; i++) free(dirs[i]);
  free(dirs);
  free(mains);
  return ms;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 100, rounds = argc > 2 ? atoi(argv[2]) : 3;
  find_base();
  double plain = 1e300, esc = 1e300;
  for (int r = 0; r < rounds; r++) {
    double a = round_once(n, 0), b = round_once(n, 1);
    if (a < plain) plain = a;
    if (b < esc) esc = b;
  }
  rmdir(base);
  printf("cgstop_plain_c %.1f ms\n", plain);
  printf("cgstop_escapee_c %.1f ms\n", esc);
  printf("cgstop_escapee_vs_plain_c %.2f ratio\n", esc / plain);
  return 0;
}
