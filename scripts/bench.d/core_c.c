/*
 * core_c.c: the raw-C baseline for the core benchmarks, on libuv directly.
 *  switch: one "task" re-armed from an idle callback N times (what a
 *          sleep(0) loop costs without Lua: one loop turn per switch).
 *  timers: 100,000 concurrent one-shot timers with deadlines spread over
 *          0..100 ms; wall time from arming the first to the last firing.
 * Prints lines "name value unit".
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <uv.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long remaining;
static void idle_cb(uv_idle_t *h) {
  if (--remaining == 0) uv_idle_stop(h);
}

static int fired;
static void timer_cb(uv_timer_t *t) { fired++; }

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 2000000;
  uv_loop_t *loop = uv_default_loop();
  uv_idle_t idle;
  uv_idle_init(loop, &idle);
  remaining = n;
  double t0 = now();
  uv_idle_start(&idle, idle_cb);
  uv_run(loop, UV_RUN_DEFAULT);
  double dt = now() - t0;
  printf("core_switch_c %.0f switches/s\n", n / dt);

  int nt = 100000;
  uv_timer_t *timers = malloc(sizeof *timers * nt);
  srand(1);
  t0 = now();
  for (int i = 0; i < nt; i++) {
    uv_timer_init(loop, &timers[i]);
    uv_timer_start(&timers[i], timer_cb, (uint64_t)(rand() % 100), 0);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  dt = now() - t0;
  printf("core_timers100k_c %.1f ms\n", dt * 1000);
  fprintf(stderr, "fired %d\n", fired);
  return fired == nt ? 0 : 1;
}
