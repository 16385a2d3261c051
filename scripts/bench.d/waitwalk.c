/*
 * waitwalk.c: what one wait4(-1, WNOHANG) costs a process with N children,
 * none of which has ended (scripts/bench.d/scale.sh, issue 15). The kernel
 * answers it by looking at every child in turn; orch's reaper makes this
 * call at each SIGCHLD (a restart makes one) until it returns 0, so at
 * 10,000 services one restart pays at least one such walk.
 *
 *   waitwalk N [WALKS]   prints "wait_walk_N_kernel MEDIAN_US us" (WALKS: 51)
 *
 * The children pause until killed; all are killed and reaped at the end.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: waitwalk N [WALKS]\n"); return 2; }
  int n = atoi(argv[1]), walks = argc > 2 ? atoi(argv[2]) : 51;
  if (n < 1 || walks < 1) return 2;
  pid_t *kids = calloc((size_t)n, sizeof *kids);
  double *t = calloc((size_t)walks, sizeof *t);
  if (!kids || !t) return 1;
  int made = 0;
  for (; made < n; made++) {
    pid_t p = fork();
    if (p < 0) break;
    if (p == 0) { pause(); _exit(0); }
    kids[made] = p;
  }
  if (made == n) {
    /* The flags of orch's reaper (src/process.c). */
    for (int i = 0; i < walks; i++) {
      int st;
      double t0 = now_us();
      pid_t r = wait4(-1, &st, WNOHANG | WUNTRACED | WCONTINUED, NULL);
      t[i] = now_us() - t0;
      if (r != 0) { t[i] = -1; break; }
    }
    qsort(t, (size_t)walks, sizeof *t, cmp);
    printf("wait_walk_%d_kernel %.1f us\n", n, t[walks / 2]);
  } else {
    fprintf(stderr, "waitwalk: fork failed after %d children\n", made);
  }
  for (int i = 0; i < made; i++) kill(kids[i], SIGKILL);
  while (wait(NULL) > 0) {}
  return made == n ? 0 : 1;
}
