/*
 * hb_worker.c: the C worker of examples/watchdog.lua. A program that does
 * "work" in a loop and says so in the heartbeat table through the client
 * library (include/orch_heartbeat.h, liborch_heartbeat): register once, one
 * orch_hb_beat() per unit of work. With -s it hangs after that many beats,
 * the way a real program wedges on a lock or a dead peer, so that the
 * watchdog has something to do.
 *
 * usage: hb_worker [-n NAME] [-t TIMEOUT_MS] [-i INTERVAL_MS] [-s STALL_AFTER]
 * The table is the one of $ORCH_HEARTBEAT_KEY (the default key otherwise);
 * it must exist. Each line on stdout is "HH:MM:SS.mmm NAME message".
 * SIGTERM: says so and dies of it (the slot is left for the watchdog, as a
 * crash would leave it). Exit codes: 1 heartbeat error, 2 usage.
 */
#include "orch_heartbeat.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *g_name = "c-worker";
static volatile sig_atomic_t g_term;

static void on_term(int sig) { (void)sig; g_term = 1; }

/* One line per write(2), so that lines of several workers never mix. */
static void say(const char *fmt, ...) {
  char buf[512];
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  localtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  n += (size_t)snprintf(buf + n, sizeof buf - n, ".%03ld %-10s ", ts.tv_nsec / 1000000L, g_name);
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(buf + n, sizeof buf - n, fmt, ap);
  va_end(ap);
  n = k < 0 ? n : n + (size_t)k;
  if (n > sizeof buf - 2) n = sizeof buf - 2;
  buf[n++] = '\n';
  ssize_t w = write(STDOUT_FILENO, buf, n);
  (void)w;
}

/* SIGTERM interrupts the sleep (no SA_RESTART); report it, then die of it. */
static void check_term(void) {
  if (!g_term) return;
  say("SIGTERM: exiting");
  signal(SIGTERM, SIG_DFL);
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  sigprocmask(SIG_UNBLOCK, &term, NULL);
  raise(SIGTERM);
}

static void work_ms(long ms) {
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  check_term();
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) check_term();
}

int main(int argc, char **argv) {
  long timeout = 3000, interval = 1000, stall = -1;
  int c;
  while ((c = getopt(argc, argv, "n:t:i:s:")) != -1) {
    switch (c) {
    case 'n': g_name = optarg; break;
    case 't': timeout = atol(optarg); break;
    case 'i': interval = atol(optarg); break;
    case 's': stall = atol(optarg); break;
    default:
      fprintf(stderr, "usage: hb_worker [-n NAME] [-t TIMEOUT_MS] [-i INTERVAL_MS] [-s STALL_AFTER]\n");
      return 2;
    }
  }
  if (optind != argc || timeout < 0 || timeout > 0xffffffffL || interval < 0) {
    fprintf(stderr, "hb_worker: bad arguments\n");
    return 2;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigaction(SIGTERM, &sa, NULL);

  orch_hb_table *t;
  orch_hb_slot s;
  int r = orch_hb_open(ORCH_HB_KEY_DEFAULT, 0, 0, &t);
  if (r < 0) { fprintf(stderr, "hb_worker: open: %s\n", strerror(-r)); return 1; }
  r = orch_hb_register(t, g_name, (uint32_t)timeout, &s);
  if (r < 0) { fprintf(stderr, "hb_worker: register: %s\n", strerror(-r)); return 1; }
  say("registered (pid %d, slot %u, timeout %.1f s)", (int)getpid(), s.index, timeout / 1000.0);

  for (long n = 1;; n++) {
    work_ms(interval);                 /* one unit of work */
    r = orch_hb_beat(&s);
    if (r < 0) { say("beat: %s", strerror(-r)); return 1; }
    if (stall >= 0 && n >= stall) {
      say("beat %ld, and now stalling (a simulated hang: no more beats)", n);
      /* SIGTERM blocked between the check and the wait: none is missed. */
      sigset_t term, old;
      sigemptyset(&term);
      sigaddset(&term, SIGTERM);
      sigprocmask(SIG_BLOCK, &term, &old);
      for (;;) { check_term(); sigsuspend(&old); }
    }
    say("beat %ld", n);
  }
}
