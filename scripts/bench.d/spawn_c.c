/*
 * spawn_c: the raw C limit for spawning and reaping /bin/true, the baseline
 * of spawn.lua (orch), spawn_luv.lua and spawn_luaposix.lua.
 *   spawn_serial_c  posix_spawn + waitpid, one child at a time
 *   spawn_16_c      16 children in flight: waitpid(-1) and respawn
 * Each figure is the best of ROUNDS rounds of N spawns (machines are shared).
 * Usage: spawn_c [N [ROUNDS]]      prints "name value unit" lines
 */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *argv_true[] = { "/bin/true", NULL };

static pid_t spawn_one(void) {
  pid_t pid;
  int r = posix_spawn(&pid, "/bin/true", NULL, NULL, argv_true, environ);
  if (r != 0) {   /* posix_spawn returns the error; errno is not set */
    fprintf(stderr, "posix_spawn: %s\n", strerror(r));
    exit(1);
  }
  return pid;
}

static double serial(int n) {
  double t0 = now();
  for (int i = 0; i < n; i++) {
    pid_t pid = spawn_one();
    int st;
    while (waitpid(pid, &st, 0) < 0) {}
  }
  return n / (now() - t0);
}

static double inflight(int n, int k) {
  double t0 = now();
  int started = 0, done = 0;
  for (; started < k && started < n; started++) spawn_one();
  while (done < n) {
    int st;
    if (waitpid(-1, &st, 0) < 0) continue;
    done++;
    if (started < n) { spawn_one(); started++; }
  }
  return n / (now() - t0);
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2000;
  int rounds = argc > 2 ? atoi(argv[2]) : 3;
  double best_s = 0, best_p = 0;
  for (int r = 0; r < rounds; r++) {
    double s = serial(n), p = inflight(n, 16);
    if (s > best_s) best_s = s;
    if (p > best_p) best_p = p;
  }
  printf("spawn_serial_c %.0f spawns/s\n", best_s);
  printf("spawn_16_c %.0f spawns/s\n", best_p);
  return 0;
}
