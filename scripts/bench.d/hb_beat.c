/*
 * hb_beat.c: the cost of one orch_hb_beat() (the ownership check and one
 * atomic store of CLOCK_MONOTONIC) on a private table, averaged over
 * 100,000,000 beats (or argv[1]). Prints `hb_beat_c <ns> ns`. Also prints,
 * for reference, the cost of clock_gettime alone (`hb_clock_c <ns> ns`).
 * The segment is removed before anything is measured.
 */
#include "orch_heartbeat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <time.h>

int main(int argc, char **argv) {
  long long n = argc > 1 ? atoll(argv[1]) : 100000000LL;
  if (n <= 0) { fprintf(stderr, "usage: hb_beat [BEATS]\n"); return 2; }
  orch_hb_table *t;
  orch_hb_slot s;
  int r = orch_hb_open_slots(IPC_PRIVATE, ORCH_HB_CREATE, 0, 4, &t);
  if (r < 0) { fprintf(stderr, "hb_beat: open: %s\n", strerror(-r)); return 1; }
  orch_hb_remove(t);
  r = orch_hb_register(t, "bench", 0, &s);
  if (r < 0) { fprintf(stderr, "hb_beat: register: %s\n", strerror(-r)); return 1; }

  int bad = 0;
  uint64_t t0 = orch_hb_now_ns();
  for (long long i = 0; i < n; i++) bad |= orch_hb_beat(&s);
  uint64_t t1 = orch_hb_now_ns();
  volatile uint64_t sink = 0;
  long long m = n / 10 ? n / 10 : 1;
  for (long long i = 0; i < m; i++) sink += orch_hb_now_ns();
  uint64_t t2 = orch_hb_now_ns();
  if (bad) { fprintf(stderr, "hb_beat: beat failed\n"); return 1; }
  printf("hb_beat_c %.1f ns\n", (double)(t1 - t0) / (double)n);
  printf("hb_clock_c %.1f ns\n", (double)(t2 - t1) / (double)m);
  orch_hb_unregister(&s);
  orch_hb_close(t);
  return 0;
}
