/*
 * svc_stamp.c: the tiny service of the supervisor benchmark
 * (scripts/bench.d/supervisors.sh). First thing in main() it stores its
 * CLOCK_MONOTONIC start time and its pid into slot INDEX of a shared file
 * (tmpfs), prints one line (so that log capture has something to do), then
 * waits for a signal. Built static by the driver so exec costs the least.
 *
 * Slot INDEX: the number ending argv[1] ("12", or "svc12" as s6-supervise
 * passes the service name), else $SVC_INDEX, else the trailing digits of the
 * working directory (runsv and s6-supervise run ./run in the service
 * directory ".../svc<INDEX>"). File: $SVC_SHM (default
 * /dev/shm/orch-bench-stamps). Slot layout: u64 start_ns, i32 pid, i32 count.
 * With $SVC_EXIT_SHM (a file of u64 by slot) a SIGTERM is caught: its
 * CLOCK_MONOTONIC time goes into slot INDEX there, then _exit(0) (the probe's
 * stoptime tells the services' last exit from the moment it saw it).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 16384

typedef struct { uint64_t start_ns; int32_t pid; int32_t count; } slot;

/* The number at the end of s ("svc12" -> 12, "7" -> 7), or -1. */
static long trailing_number(const char *s) {
  size_t n = strlen(s);
  while (n && s[n - 1] >= '0' && s[n - 1] <= '9') n--;
  return s[n] ? atol(s + n) : -1;
}

static long index_from_cwd(void) {
  char buf[4096];
  return getcwd(buf, sizeof buf) ? trailing_number(buf) : -1;
}

static uint64_t *exits;
static long exit_idx;
static void on_term(int sig) {
  (void)sig;
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  __atomic_store_n(&exits[exit_idx], (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec, __ATOMIC_RELAXED);
  _exit(0);
}

int main(int argc, char **argv) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  /* s6-supervise runs ./run with the service name ("svc12") as argv[1]. */
  long idx = argc > 1 ? trailing_number(argv[1]) : getenv("SVC_INDEX") ? atol(getenv("SVC_INDEX")) : index_from_cwd();
  const char *path = getenv("SVC_SHM");
  if (!path) path = "/dev/shm/orch-bench-stamps";
  if (idx < 0 || idx >= SLOTS) return 2;
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) return 1;
  slot *s = mmap(NULL, SLOTS * sizeof(slot), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (s == MAP_FAILED) return 1;
  __atomic_store_n(&s[idx].pid, (int32_t)getpid(), __ATOMIC_RELAXED);
  __atomic_fetch_add(&s[idx].count, 1, __ATOMIC_RELAXED);
  __atomic_store_n(&s[idx].start_ns, now, __ATOMIC_RELEASE);
  signal(SIGPIPE, SIG_IGN);
  const char *ep = getenv("SVC_EXIT_SHM");
  int efd = ep ? open(ep, O_RDWR | O_CLOEXEC) : -1;
  if (efd >= 0) {
    void *m = mmap(NULL, SLOTS * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, efd, 0);
    close(efd);
    if (m != MAP_FAILED) { exits = m; exit_idx = idx; signal(SIGTERM, on_term); }
  }
  static const char line[] = "svc_stamp started\n";
  ssize_t w = write(1, line, sizeof line - 1);
  (void)w;
  for (;;) pause();
}
