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
 * (clone3 CLONE_INTO_CGROUP, fork semantics). Each stop is timed from its
 * first signal until every cgroup is removed and every main process reaped,
 * in several ways (each a line of figures; rounds alternate the ways):
 *
 *   path   the first version (until the sixth session): SIGTERM to every
 *          main process, each cgroup's cgroup.procs opened by path and
 *          read once and every other pid sent SIGTERM (the escapees), then
 *          in order each main process reaped, its cgroup.events opened and
 *          poll(2)ed until "populated 0", the cgroup removed.
 *   held   the same signals, through the directory, cgroup.procs and
 *          cgroup.events held open from the cgroup's making (as orch does);
 *          then one epoll over every cgroup.events (EPOLLPRI: the kernel
 *          wakes a poller at once on a change, inotify only from a work
 *          item) and waitpid(-1, WNOHANG), each cgroup removed as soon as
 *          it reads "populated 0", in the order they empty. orch's stop
 *          without its bookkeeping: the C limit.
 *   sub    held, as a child subreaper (PR_SET_CHILD_SUBREAPER), so that it
 *          reaps the escapees itself, as orch does.
 *   kill   held, but cgroup.kill in each cgroup instead of the signals
 *          (SIGKILL, no listing): the least a supervisor can do per
 *          service to end it, not a graceful stop.
 *   tree   one cgroup.kill in the parent of all (SIGKILL to everything at
 *          once), then the same waits and removals: the kernel's floor.
 *
 * Each round runs every way twice, plain and with escapees; the order of
 * the two alternates from round to round (plain first in odd rounds), so
 * that neither kind always follows the other's teardown.
 *
 * Prints, per way, best of ROUNDS rounds (3):
 *   cgstop_plain_c_WAY      ms  the stop of N plain services
 *   cgstop_escapee_c_WAY    ms  the same, each with an escapee
 *   cgstop_escapee_vs_plain_c_WAY   ratio
 * and the wall time's median over the rounds with its spread:
 *   cgstop_wall_c_WAY  plain MED [MIN-MAX] escapee MED [MIN-MAX] ms
 *   cgstop_wall_ratio_c_WAY  MED [MIN-MAX]  each round's escapee / plain
 *                           (the two stops of one round, run back to back)
 *   cgstop_wall_ratio_of_medians_c_WAY  ratio
 *   cgstop_wall_extra_c_WAY  ms  what the escapees add (escapee - plain,
 *                           medians): for a stopper whose plain stop takes
 *                           P ms, the 1.5x target leaves P / 2 for them
 *   cgstop_work_c_WAY  the stop's work (the stopper's CPU and the
 *                           services', below), medians, plain and escapee,
 *                           their ratio, and half of each against its wall
 *                           time: with two CPUs a stop lasts at least half
 *                           its work, so at 100% both CPUs were busy with it
 *                           and the ratio of the work is the wall ratio's
 *                           floor for this way
 *   cgstop_cpu_self_c_WAY   ms ms  the stopper's CPU in the stop (getrusage),
 *                           plain and escapee, least of the rounds
 *   cgstop_cpu_services_c_WAY  ms ms  the services' CPU from the signal to
 *                           their cgroup's end (each cgroup's cpu.stat
 *                           usage_usec: the signals' delivery and the exits),
 *                           plain and escapee, least of the rounds
 * and held's three under the names of the first version
 * (cgstop_plain_c, cgstop_escapee_c, cgstop_escapee_vs_plain_c).
 *
 * Environment: CGSTOP_WAYS=tree,held runs only the ways named;
 * CGSTOP_WINDOWS=1 prints each stop's window in CLOCK_MONOTONIC ns
 * (`cgstop_window WAY plain|escapee ROUND T0 T1 STOPPER_PID`), for a
 * kernel trace to be cut by (scripts/bench.d/cgroup_stop_trace.sh).
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
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
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

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000LL + ts.tv_nsec;
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

static int count_procs(int fd) {
  char buf[4096];
  ssize_t k = pread(fd, buf, sizeof buf - 1, 0);
  int n = 0;
  for (ssize_t i = 0; i < k; i++) n += buf[i] == '\n';
  return n;
}

enum { W_PATH, W_HELD, W_SUB, W_KILL, W_TREE, NWAYS };
static const char *const way_names[NWAYS] = { "path", "held", "sub", "kill", "tree" };

typedef struct {
  char *dir;
  int dfd, procs, events;   /* held: the directory, cgroup.procs, cgroup.events */
  pid_t main;
  int gone;                 /* removed */
  long long usage0;         /* cpu.stat usage_usec before the stop */
} svc;

/* SIGTERM to every listed pid but the main process (one pread of the held
 * cgroup.procs, or an open by path). */
static void signal_rest(svc *s, int held) {
  char p[4200], buf[4096];
  int fd = s->procs;
  if (!held) {
    snprintf(p, sizeof p, "%s/cgroup.procs", s->dir);
    fd = open(p, O_RDONLY | O_CLOEXEC);
  }
  ssize_t k = fd < 0 ? -1 : pread(fd, buf, sizeof buf - 1, 0);
  if (!held && fd >= 0) close(fd);
  if (k <= 0) return;
  buf[k] = 0;
  for (char *c = buf, *e; *c; c = e) {
    long pid = strtol(c, &e, 10);
    if (e == c) break;
    if (pid > 0 && pid != s->main) kill((pid_t)pid, SIGTERM);
    while (*e == '\n') e++;
  }
}

static int populated(int fd) {
  char buf[256];
  ssize_t k = pread(fd, buf, sizeof buf - 1, 0);
  if (k <= 0) return 0;
  buf[k] = 0;
  return strstr(buf, "populated 1") != NULL;
}

/* usage_usec of the cgroup's cpu.stat (in v2 without any controller). */
static long long usage_us(int dfd) {
  char buf[512];
  int fd = openat(dfd, "cpu.stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t k = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (k <= 0) return 0;
  buf[k] = 0;
  char *u = strstr(buf, "usage_usec ");
  return u ? atoll(u + 11) : 0;
}

static double cpu_self_ms(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

/* The CPU of the last round: the stopper's own (getrusage), and the
 * services' from the signal to their cgroup's end (cpu.stat: the signal's
 * delivery and each exit, charged to the cgroup of the process). */
static double last_self_ms, last_svc_ms;
static long long last_t0_ns, last_t1_ns;   /* the last round's window */

static void write_kill(int dfd) {
  int fd = openat(dfd, "cgroup.kill", O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, "1", 1) != 1) die("cgroup.kill");
  close(fd);
}

static void reap_some(int n, svc *s, int *reaped, int block) {
  pid_t pid;
  while (*reaped < n && (pid = waitpid(-1, NULL, block ? 0 : WNOHANG)) != 0) {
    if (pid < 0) {
      if (errno == EINTR) continue;
      if (errno == ECHILD) break;
      die("waitpid");
    }
    for (int i = 0; i < n; i++)
      if (s[i].main == pid) { (*reaped)++; break; }
  }
}

static double round_once(int n, int escapee, int way) {
  svc *s = calloc((size_t)n, sizeof *s);
  char *plain[] = { "sleep", "1000", NULL };
  char *esc[] = { "sh", "-c", "(setsid sleep 1000 &); exec sleep 1000", NULL };
  int basefd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (basefd < 0) die(base);
  if (prctl(PR_SET_CHILD_SUBREAPER, way == W_SUB ? 1 : 0) < 0) die("prctl");
  for (int i = 0; i < n; i++) {
    if (asprintf(&s[i].dir, "%s/s%d", base, i) < 0) die("asprintf");
    if (mkdir(s[i].dir, 0755) < 0) die(s[i].dir);
    s[i].dfd = open(s[i].dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s[i].dfd < 0) die(s[i].dir);
    s[i].procs = openat(s[i].dfd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
    s[i].events = openat(s[i].dfd, "cgroup.events", O_RDONLY | O_CLOEXEC);
    if (s[i].procs < 0 || s[i].events < 0) die("open");
    s[i].main = spawn_into(s[i].dfd, escapee ? esc : plain);
    if (s[i].main < 0) die("clone3");
  }
  /* Every process in place (the escapee forked, its launcher gone and
   * reaped when this is its subreaper). */
  for (int i = 0; i < n; i++)
    while (count_procs(s[i].procs) != (escapee ? 2 : 1)) {
      if (way == W_SUB) while (waitpid(-1, NULL, WNOHANG) > 0) {}
      usleep(1000);
    }
  usleep(300000);
  if (way == W_SUB) while (waitpid(-1, NULL, WNOHANG) > 0) {}
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1");
  long long svc_us = 0;
  for (int i = 0; i < n; i++) {
    s[i].usage0 = usage_us(s[i].dfd);
    (void)populated(s[i].events);   /* the poller's event count is the read's */
    if (way == W_PATH) continue;
    struct epoll_event ev = { .events = EPOLLPRI, .data.u32 = (uint32_t)i };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, s[i].events, &ev) < 0) die("epoll_ctl");
  }
  if (way == W_PATH) {   /* as the first version: nothing held */
    for (int i = 0; i < n; i++) {
      close(s[i].procs);
      close(s[i].events);
      close(s[i].dfd);
    }
  }
  int reaped = 0, left = n;
  double c0 = cpu_self_ms();
  last_t0_ns = now_ns();
  double t0 = now_ms();
  if (way == W_TREE) {
    write_kill(basefd);
  } else if (way == W_KILL) {
    for (int i = 0; i < n; i++) write_kill(s[i].dfd);
  } else {
    for (int i = 0; i < n; i++) kill(s[i].main, SIGTERM);
    for (int i = 0; i < n; i++) signal_rest(&s[i], way != W_PATH);
  }
  if (way == W_PATH) {
    for (int i = 0; i < n; i++) {
      while (waitpid(s[i].main, NULL, 0) < 0 && errno == EINTR) {}
      char p[4200], buf[256];
      snprintf(p, sizeof p, "%s/cgroup.events", s[i].dir);
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
      int dfd = open(s[i].dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      svc_us += usage_us(dfd) - s[i].usage0;   /* not in the first version's work: 2 syscalls */
      close(dfd);
      if (rmdir(s[i].dir) < 0) die(s[i].dir);
    }
    reaped = n;
    left = 0;
  }
  /* Each cgroup as it empties: the first look catches the ones that
   * emptied before their poll could fire. */
  for (int i = 0; i < n && way != W_PATH; i++) {
    if (populated(s[i].events)) continue;
    svc_us += usage_us(s[i].dfd) - s[i].usage0;
    if (unlinkat(basefd, s[i].dir + strlen(base) + 1, AT_REMOVEDIR) < 0) die(s[i].dir);
    close(s[i].events);
    close(s[i].procs);
    close(s[i].dfd);
    s[i].gone = 1;
    left--;
  }
  while (left > 0) {
    struct epoll_event evs[64];
    reap_some(n, s, &reaped, 0);
    int k = epoll_wait(ep, evs, 64, 1000);
    if (k < 0 && errno != EINTR) die("epoll_wait");
    for (int j = 0; j < k; j++) {
      svc *c = &s[evs[j].data.u32];
      if (c->gone || populated(c->events)) continue;
      svc_us += usage_us(c->dfd) - c->usage0;
      if (unlinkat(basefd, c->dir + strlen(base) + 1, AT_REMOVEDIR) < 0) die(c->dir);
      close(c->events);   /* out of the epoll set with it */
      close(c->procs);
      close(c->dfd);
      c->gone = 1;
      left--;
    }
  }
  reap_some(n, s, &reaped, 1);
  double ms = now_ms() - t0;
  last_t1_ns = now_ns();
  last_self_ms = cpu_self_ms() - c0;
  last_svc_ms = svc_us / 1e3;
  close(ep);
  close(basefd);
  for (int i = 0; i < n; i++) free(s[i].dir);
  free(s);
  /* The escapees (a subreaper's children; pid 1's otherwise). */
  while (waitpid(-1, NULL, WNOHANG) > 0) {}
  return ms;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The median of v[0..n) (sorted here) and its spread. */
static double median(double *v, int n, double *lo, double *hi) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  *lo = v[0];
  *hi = v[n - 1];
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 100, rounds = argc > 2 ? atoi(argv[2]) : 3;
  if (n < 1 || rounds < 1) { fprintf(stderr, "usage: cgroup_stop_c [N [ROUNDS]]\n"); return 2; }
  const char *only = getenv("CGSTOP_WAYS");
  int windows = getenv("CGSTOP_WINDOWS") != NULL;
  int run[NWAYS];
  for (int w = 0; w < NWAYS; w++) {
    run[w] = 1;
    if (only && *only) {
      size_t k = strlen(way_names[w]);
      const char *p = only;
      run[w] = 0;
      while ((p = strstr(p, way_names[w]))) {
        if ((p == only || p[-1] == ',') && (p[k] == 0 || p[k] == ',')) run[w] = 1;
        p += k;
      }
    }
  }
  find_base();
  double plain[NWAYS], esc[NWAYS], cpu[NWAYS][2][2];
  double *wall[NWAYS][2], *ratio[NWAYS], *work[NWAYS][2];
  for (int w = 0; w < NWAYS; w++) {
    plain[w] = esc[w] = 1e300;
    for (int e = 0; e < 2; e++) {
      cpu[w][e][0] = cpu[w][e][1] = 1e300;
      wall[w][e] = calloc((size_t)rounds, sizeof(double));
      work[w][e] = calloc((size_t)rounds, sizeof(double));
      if (!wall[w][e] || !work[w][e]) die("calloc");
    }
    ratio[w] = calloc((size_t)rounds, sizeof(double));
    if (!ratio[w]) die("calloc");
  }
  for (int r = 0; r < rounds; r++) {
    for (int w = 0; w < NWAYS; w++) {
      if (!run[w]) continue;
      for (int k = 0; k < 2; k++) {
        int e = r % 2 ? !k : k;          /* plain first in odd rounds (1, 3, ...) */
        double t = round_once(n, e, w);
        double *best = e ? &esc[w] : &plain[w];
        if (t < *best) *best = t;
        wall[w][e][r] = t;
        work[w][e][r] = last_self_ms + last_svc_ms;
        if (last_self_ms < cpu[w][e][0]) cpu[w][e][0] = last_self_ms;
        if (last_svc_ms < cpu[w][e][1]) cpu[w][e][1] = last_svc_ms;
        if (windows)
          printf("cgstop_window %s %s %d %lld %lld %d\n", way_names[w], e ? "escapee" : "plain", r + 1,
                 last_t0_ns, last_t1_ns, (int)getpid());
      }
      ratio[w][r] = wall[w][1][r] / wall[w][0][r];
    }
  }
  rmdir(base);
  for (int w = 0; w < NWAYS; w++) {
    if (!run[w]) continue;
    printf("cgstop_plain_c_%s %.1f ms\n", way_names[w], plain[w]);
    printf("cgstop_escapee_c_%s %.1f ms\n", way_names[w], esc[w]);
    printf("cgstop_escapee_vs_plain_c_%s %.2f ratio\n", way_names[w], esc[w] / plain[w]);
  }
  for (int w = 0; w < NWAYS; w++) {
    if (!run[w]) continue;
    double plo, phi, elo, ehi, rlo, rhi;
    double pm = median(wall[w][0], rounds, &plo, &phi), em = median(wall[w][1], rounds, &elo, &ehi);
    double rm = median(ratio[w], rounds, &rlo, &rhi);
    printf("cgstop_wall_c_%s plain %.1f [%.1f-%.1f] escapee %.1f [%.1f-%.1f] ms (median [min-max] of %d)\n",
           way_names[w], pm, plo, phi, em, elo, ehi, rounds);
    printf("cgstop_wall_ratio_c_%s %.2f [%.2f-%.2f] (each round's escapee / plain: median [min-max])\n",
           way_names[w], rm, rlo, rhi);
    printf("cgstop_wall_ratio_of_medians_c_%s %.2f ratio\n", way_names[w], em / pm);
    printf("cgstop_wall_extra_c_%s %.1f ms (the escapees' cost: escapee - plain, medians)\n", way_names[w], em - pm);
    double wp = median(work[w][0], rounds, &plo, &phi), we = median(work[w][1], rounds, &elo, &ehi);
    printf("cgstop_work_c_%s plain %.1f escapee %.1f ms, ratio %.2f; half the work against the wall: plain %.0f%% "
           "escapee %.0f%% (medians)\n", way_names[w], wp, we, we / wp, 100 * wp / 2 / pm, 100 * we / 2 / em);
  }
  for (int w = 0; w < NWAYS; w++) {
    if (!run[w]) continue;
    printf("cgstop_cpu_self_c_%s %.1f %.1f ms (plain, escapee)\n", way_names[w], cpu[w][0][0], cpu[w][1][0]);
    printf("cgstop_cpu_services_c_%s %.1f %.1f ms (plain, escapee)\n", way_names[w], cpu[w][0][1], cpu[w][1][1]);
  }
  if (run[W_HELD]) {
    printf("cgstop_plain_c %.1f ms\n", plain[W_HELD]);
    printf("cgstop_escapee_c %.1f ms\n", esc[W_HELD]);
    printf("cgstop_escapee_vs_plain_c %.2f ratio\n", esc[W_HELD] / plain[W_HELD]);
  }
  for (int w = 0; w < NWAYS; w++) {
    for (int e = 0; e < 2; e++) {
      free(wall[w][e]);
      free(work[w][e]);
    }
    free(ratio[w]);
  }
  return 0;
}
