/*
 * supervisors_probe.c: the measuring side of the supervisor benchmark
 * (scripts/bench.d/supervisors.sh). It reads the start stamps that
 * svc_stamp.c writes, kills services, triggers stops and starts, and sums
 * /proc figures over a supervisor's process tree.
 *
 *   init FILE                            create the zeroed stamps file
 *   wait-started FILE N SECONDS          exit 0 once slots 0..N-1 run
 *   latency FILE NSLOTS SAMPLES GAP_MS   SIGKILL -> replacement started:
 *                                        prints "median_ms p95_ms" (with
 *                                        PROBE_SAMPLES set, first one line
 *                                        a sample: "S slot kill_ns start_ns")
 *   restart1 FILE I                      SIGKILL to slot I's process -> its
 *                                        replacement started: prints ms
 *   starttime FILE N TRIGGER...          ms until all N started again
 *   stoptime FILE N TRIGGER...           ms until all N exited; with
 *                                        $SVC_EXIT_SHM also the ms until the
 *                                        last service took its SIGTERM
 *   pss ROOT [EXCLUDE,...]               KiB of PSS of ROOT and descendants
 *                                        (comm names in EXCLUDE left out):
 *                                        prints "kib nprocs"
 *   idle ROOT SECONDS [EXCLUDE,...]      prints "wakeups_per_s cpu_ms"
 * TRIGGER: signal PID SIG | control DIRPREFIX N CHAR | exec ARGV...
 * (control writes CHAR to DIRPREFIX<i>/supervise/control, as sv and s6-svc
 * do). Times are CLOCK_MONOTONIC, the clock svc_stamp records.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 16384
typedef struct { uint64_t start_ns; int32_t pid; int32_t count; } slot;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void nap_us(long us) {
  struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
  nanosleep(&ts, NULL);
}

static slot *map_file(const char *path, int create) {
  int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_TRUNC : 0), 0644);
  if (fd < 0) { perror(path); exit(1); }
  if (create && ftruncate(fd, SLOTS * sizeof(slot)) < 0) { perror("ftruncate"); exit(1); }
  slot *s = mmap(NULL, SLOTS * sizeof(slot), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (s == MAP_FAILED) { perror("mmap"); exit(1); }
  return s;
}

/* $SVC_EXIT_SHM (svc_stamp.c): each service's CLOCK_MONOTONIC time of its
 * SIGTERM, u64 by slot; cleared here. NULL without it. */
static uint64_t *map_exits(void) {
  const char *path = getenv("SVC_EXIT_SHM");
  if (!path) return NULL;
  int fd = open(path, O_RDWR | O_CLOEXEC | O_CREAT, 0644);
  if (fd < 0 || ftruncate(fd, SLOTS * sizeof(uint64_t)) < 0) { perror(path); exit(1); }
  uint64_t *e = mmap(NULL, SLOTS * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (e == MAP_FAILED) { perror("mmap"); exit(1); }
  memset(e, 0, SLOTS * sizeof(uint64_t));
  return e;
}

/* Reads /proc/PID/FILE into buf (NUL-terminated); returns the length, or
 * <= 0 when the process or the file is gone. */
static ssize_t read_proc(int pid, const char *file, char *buf, size_t size) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, size - 1);
  close(fd);
  if (n > 0) buf[n] = 0;
  return n;
}

static uint64_t start_of(slot *s, int i) { return __atomic_load_n(&s[i].start_ns, __ATOMIC_ACQUIRE); }
static int32_t pid_of(slot *s, int i) { return __atomic_load_n(&s[i].pid, __ATOMIC_ACQUIRE); }

/* Alive and not a zombie. */
static int alive(pid_t pid) {
  char buf[512];
  if (pid <= 0 || read_proc(pid, "stat", buf, sizeof buf) <= 0) return 0;
  char *p = strrchr(buf, ')');
  return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static pid_t trigger(char **t) {
  if (!t[0]) return 0;
  if (!strcmp(t[0], "signal") && t[1] && t[2]) {
    if (atoi(t[1]) <= 1) { fprintf(stderr, "supervisors_probe: bad pid %s\n", t[1]); exit(2); }
    int sig = !strcmp(t[2], "USR1") ? SIGUSR1 : !strcmp(t[2], "USR2") ? SIGUSR2 :
              !strcmp(t[2], "TERM") ? SIGTERM : !strcmp(t[2], "HUP") ? SIGHUP : atoi(t[2]);
    kill(atoi(t[1]), sig);
    return 0;
  }
  if (!strcmp(t[0], "control") && t[1] && t[2] && t[3]) {
    int n = atoi(t[2]);
    for (int i = 0; i < n; i++) {
      char path[4096];
      snprintf(path, sizeof path, "%s%d/supervise/control", t[1], i);
      int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0) { perror(path); continue; }
      if (write(fd, t[3], 1) < 0) perror(path);
      close(fd);
    }
    return 0;
  }
  if (!strcmp(t[0], "exec") && t[1]) {
    pid_t p = fork();
    if (p == 0) {
      int fd = open("/dev/null", O_RDWR);
      dup2(fd, 1);
      dup2(fd, 2);
      execvp(t[1], t + 1);
      _exit(127);
    }
    return p;
  }
  fprintf(stderr, "supervisors_probe: bad trigger\n");
  exit(2);
}

/* ---- process trees --------------------------------------------------- */

typedef struct { int pid, ppid; char comm[32]; } pinfo;

static int read_procs(pinfo **out) {
  DIR *d = opendir("/proc");
  int cap = 1024, n = 0;
  pinfo *v = malloc(cap * sizeof *v);
  struct dirent *e;
  while ((e = readdir(d))) {
    int pid = atoi(e->d_name);
    if (pid <= 0) continue;
    char buf[512];
    if (read_proc(pid, "stat", buf, sizeof buf) <= 0) continue;
    char *l = strchr(buf, '('), *r = strrchr(buf, ')');
    if (!l || !r) continue;
    if (n == cap) v = realloc(v, (cap *= 2) * sizeof *v);
    v[n].pid = pid;
    size_t len = (size_t)(r - l - 1);
    if (len > 31) len = 31;
    memcpy(v[n].comm, l + 1, len);
    v[n].comm[len] = 0;
    v[n].ppid = atoi(r + 4);
    n++;
  }
  closedir(d);
  *out = v;
  return n;
}

static int excluded(const char *comm, const char *list) {
  if (!list) return 0;
  size_t len = strlen(comm);
  for (const char *p = list; *p;) {
    const char *c = strchr(p, ',');
    size_t l = c ? (size_t)(c - p) : strlen(p);
    if (l == len && !strncmp(p, comm, l)) return 1;
    if (!c) break;
    p = c + 1;
  }
  return 0;
}

/* The pids of root's tree, minus excluded comms (their children still count). */
static int tree(int root, const char *excl, int **out) {
  pinfo *v;
  int n = read_procs(&v);
  int *in = calloc((size_t)n, sizeof *in), *res = malloc(((size_t)n + 1) * sizeof *res), m = 0;
  for (int i = 0; i < n; i++) if (v[i].pid == root) in[i] = 1;
  for (int changed = 1; changed;) {
    changed = 0;
    for (int i = 0; i < n; i++) {
      if (in[i]) continue;
      for (int j = 0; j < n; j++) {
        if (in[j] && v[j].pid == v[i].ppid) { in[i] = 1; changed = 1; break; }
      }
    }
  }
  for (int i = 0; i < n; i++) if (in[i] && !excluded(v[i].comm, excl)) res[m++] = v[i].pid;
  free(v);
  free(in);
  *out = res;
  return m;
}

/* The number after `key` in buf, or 0. */
static long field(const char *buf, const char *key) {
  const char *p = strstr(buf, key);
  return p ? atol(p + strlen(key)) : 0;
}

static void tree_counters(int *pids, int n, long *switches, long *ticks) {
  *switches = *ticks = 0;
  for (int i = 0; i < n; i++) {
    char buf[8192];
    if (read_proc(pids[i], "status", buf, sizeof buf) > 0)
      *switches += field(buf, "\nvoluntary_ctxt_switches:") + field(buf, "\nnonvoluntary_ctxt_switches:");
    if (read_proc(pids[i], "stat", buf, sizeof buf) <= 0) continue;
    char *p = strrchr(buf, ')');
    if (!p) continue;
    /* Fields after ')': state(3) ... utime(14) stime(15). */
    unsigned long ut = 0, st = 0;
    char *q = p + 1;
    for (int f = 2; f < 14 && q; f++) q = strchr(q + 1, ' ');
    if (q && sscanf(q + 1, "%lu %lu", &ut, &st) == 2) *ticks += (long)(ut + st);
  }
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: see supervisors_probe.c\n"); return 2; }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "init")) {
    slot *s = map_file(argv[2], 1);
    (void)s;
    return 0;
  }
  if (!strcmp(cmd, "wait-started") && argc >= 5) {
    slot *s = map_file(argv[2], 0);
    int n = atoi(argv[3]);
    uint64_t deadline = now_ns() + (uint64_t)(atof(argv[4]) * 1e9);
    while (now_ns() < deadline) {
      int ok = 1;
      for (int i = 0; i < n && ok; i++) ok = start_of(s, i) && alive(pid_of(s, i));
      if (ok) return 0;
      nap_us(2000);
    }
    return 1;
  }
  if (!strcmp(cmd, "latency") && argc >= 6) {
    slot *s = map_file(argv[2], 0);
    int nslots = atoi(argv[3]), samples = atoi(argv[4]);
    long gap = atol(argv[5]);
    uint64_t *lat = calloc((size_t)samples, sizeof *lat);
    int got = 0;
    for (int k = 0; k < samples; k++) {
      int i = k % nslots;
      nap_us(gap * 1000);
      pid_t pid = pid_of(s, i);
      if (!alive(pid)) { nap_us(100000); pid = pid_of(s, i); }
      if (pid <= 1 || pid == getpid()) continue;     /* kill(0) would hit our own group */
      uint64_t t0 = now_ns();
      if (kill(pid, SIGKILL) < 0) continue;
      uint64_t deadline = t0 + 20000000000ull;
      while (start_of(s, i) <= t0 && now_ns() < deadline) nap_us(20);
      uint64_t st = start_of(s, i);
      if (st > t0) {
        lat[got++] = st - t0;
        if (getenv("PROBE_SAMPLES")) printf("S %d %llu %llu\n", i, (unsigned long long)t0, (unsigned long long)st);
      }
    }
    if (!got) { printf("nan nan\n"); return 1; }
    qsort(lat, (size_t)got, sizeof *lat, cmp_u64);
    double med = got % 2 ? lat[got / 2] : (lat[got / 2 - 1] + lat[got / 2]) / 2.0;
    int i95 = (int)(0.95 * (got - 1) + 0.5);
    printf("%.3f %.3f\n", med / 1e6, lat[i95] / 1e6);
    return got == samples ? 0 : 1;
  }
  if (!strcmp(cmd, "restart1") && argc >= 4) {
    slot *s = map_file(argv[2], 0);
    int i = atoi(argv[3]);
    pid_t pid = pid_of(s, i);
    if (pid <= 1 || pid == getpid() || !alive(pid)) { printf("nan\n"); return 1; }
    uint64_t t0 = now_ns();
    if (kill(pid, SIGKILL) < 0) { printf("nan\n"); return 1; }
    uint64_t deadline = t0 + 20000000000ull;
    while (start_of(s, i) <= t0 && now_ns() < deadline) nap_us(20);
    uint64_t st = start_of(s, i);
    if (st <= t0) { printf("nan\n"); return 1; }
    printf("%.3f\n", (st - t0) / 1e6);
    return 0;
  }
  if (!strcmp(cmd, "starttime") && argc >= 5) {
    slot *s = map_file(argv[2], 0);
    int n = atoi(argv[3]);
    uint64_t t0 = now_ns();
    pid_t child = trigger(argv + 4);
    uint64_t deadline = t0 + 60000000000ull, last = 0;
    for (;;) {
      int done = 1;
      last = 0;
      for (int i = 0; i < n; i++) {
        uint64_t st = start_of(s, i);
        if (st <= t0) { done = 0; break; }
        if (st > last) last = st;
      }
      if (done || now_ns() > deadline) break;
      nap_us(50);
    }
    if (child > 0) waitpid(child, NULL, 0);
    if (!last) { printf("nan\n"); return 1; }
    printf("%.3f\n", (last - t0) / 1e6);
    return 0;
  }
  if (!strcmp(cmd, "stoptime") && argc >= 5) {
    slot *s = map_file(argv[2], 0);
    int n = atoi(argv[3]);
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    for (int i = 0; i < n; i++) pids[i] = pid_of(s, i);
    uint64_t *exits = map_exits();
    uint64_t t0 = now_ns();
    pid_t child = trigger(argv + 4);
    uint64_t deadline = t0 + 60000000000ull, end = 0;
    int left = n;
    while (left > 0 && now_ns() < deadline) {
      left = 0;
      for (int i = 0; i < n; i++) {
        if (!pids[i]) continue;
        if (alive(pids[i])) left++; else pids[i] = 0;
      }
      end = now_ns();
      if (left) nap_us(50);
    }
    if (child > 0) waitpid(child, NULL, 0);
    if (left) { printf("nan\n"); return 1; }
    printf("%.3f", (end - t0) / 1e6);
    if (exits) {            /* SVC_EXIT_SHM: the last TERM taken, ms after t0 */
      uint64_t last = 0;
      for (int i = 0; i < n; i++) if (exits[i] > last) last = exits[i];
      if (last >= t0) printf(" %.3f", (last - t0) / 1e6); else printf(" nan");
    }
    printf("\n");
    return 0;
  }
  if (!strcmp(cmd, "pss")) {
    int *pids, n = tree(atoi(argv[2]), argc > 3 ? argv[3] : NULL, &pids);
    long kib = 0;
    char buf[8192];
    for (int i = 0; i < n; i++)
      if (read_proc(pids[i], "smaps_rollup", buf, sizeof buf) > 0) kib += field(buf, "\nPss:");
    printf("%ld %d\n", kib, n);
    return 0;
  }
  if (!strcmp(cmd, "idle") && argc >= 4) {
    int *pids, n = tree(atoi(argv[2]), argc > 4 ? argv[4] : NULL, &pids);
    double secs = atof(argv[3]);
    long s0, t0, s1, t1;
    tree_counters(pids, n, &s0, &t0);
    nap_us((long)(secs * 1e6));
    tree_counters(pids, n, &s1, &t1);
    long hz = sysconf(_SC_CLK_TCK);
    printf("%.2f %.1f\n", (s1 - s0) / secs, (t1 - t0) * 1000.0 / (double)hz);
    return 0;
  }
  fprintf(stderr, "supervisors_probe: unknown command %s\n", cmd);
  return 2;
}
