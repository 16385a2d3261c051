/*
 * prog_hb_client.c: a heartbeat client using liborch_heartbeat, for specs,
 * examples and the watchdog's tests.
 *
 * usage: prog_hb_client [-k KEY | -e] [-C] [-c] [-n NAME] [-t TIMEOUT_MS]
 *                       [-i INTERVAL_MS] [-s STALL_AFTER] [-x EXIT_AFTER] [-T] [-u]
 *   -k  table key (default: ORCH_HEARTBEAT_KEY, else the default key)
 *   -e  take table and slot from ORCH_HEARTBEAT_KEY / ORCH_HEARTBEAT_SLOT
 *   -C  the classic table layout          -c  create the table if missing
 *   -n  name (default prog_hb_client)     -t  timeout in ms (default 5000)
 *   -i  ms between beats (default 100)    -s  stop beating after N beats
 *   -x  unregister and exit 0 after N beats
 *   -T  ignore SIGTERM                    -u  on SIGTERM: unregister, exit 0
 * Without -u, SIGTERM kills it with its slot left behind (as a crash would).
 * stdout: "ready pid=P slot=I", then "stalled" when it stops beating.
 * Exit codes: 0 done, 1 heartbeat error (message on stderr), 2 usage.
 */
#include "orch_heartbeat.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_term;

static void on_term(int sig) { (void)sig; g_term = 1; }

static void sleep_ms(long ms) {
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  /* Interrupted by SIGTERM (with -u): return and let the loop notice. */
  nanosleep(&ts, NULL);
}

static int fail(const char *what, int r) {
  fprintf(stderr, "prog_hb_client: %s: %s\n", what, strerror(-r));
  return 1;
}

static void usage(void) {
  fprintf(stderr, "usage: prog_hb_client [-k KEY | -e] [-C] [-c] [-n NAME] [-t TIMEOUT_MS] "
                  "[-i INTERVAL_MS] [-s STALL_AFTER] [-x EXIT_AFTER] [-T] [-u]\n");
  exit(2);
}

int main(int argc, char **argv) {
  long key = ORCH_HB_KEY_DEFAULT, timeout = 5000, interval = 100, stall = -1, stop = -1;
  const char *name = "prog_hb_client";
  int from_env = 0, flags = 0, ignore_term = 0, clean_term = 0, c;
  while ((c = getopt(argc, argv, "k:eCcn:t:i:s:x:Tu")) != -1) {
    switch (c) {
    case 'k': key = strtol(optarg, NULL, 0); break;
    case 'e': from_env = 1; break;
    case 'C': flags |= ORCH_HB_COMPAT; break;
    case 'c': flags |= ORCH_HB_CREATE; break;
    case 'n': name = optarg; break;
    case 't': timeout = atol(optarg); break;
    case 'i': interval = atol(optarg); break;
    case 's': stall = atol(optarg); break;
    case 'x': stop = atol(optarg); break;
    case 'T': ignore_term = 1; break;
    case 'u': clean_term = 1; break;
    default: usage();
    }
  }
  if (optind != argc || timeout < 0 || interval < 0) usage();
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (ignore_term) signal(SIGTERM, SIG_IGN);
  else if (clean_term) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
  }

  orch_hb_table *t;
  orch_hb_slot s;
  int r;
  if (from_env) {
    r = orch_hb_slot_from_env(&t, &s);
    if (r < 0) return fail("slot_from_env", r);
  } else {
    r = orch_hb_open((key_t)key, flags, 0, &t);
    if (r < 0) return fail("open", r);
    r = orch_hb_register(t, name, (uint32_t)timeout, &s);
    if (r < 0) return fail("register", r);
  }
  printf("ready pid=%d slot=%u\n", (int)getpid(), s.index);

  for (long beats = 0; ; ) {
    if (g_term || (stop >= 0 && beats >= stop)) {
      orch_hb_unregister(&s);
      orch_hb_close(t);
      return 0;
    }
    if (stall >= 0 && beats >= stall) {
      printf("stalled\n");
      while (!g_term) pause();
      continue;
    }
    sleep_ms(interval);
    r = orch_hb_beat(&s);
    if (r < 0) return fail("beat", r);
    beats++;
  }
}
