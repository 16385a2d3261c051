/*
 * prog_sigcount: a service for spec/supervisor_stop_first_spec.lua that
 * counts how many times it was sent a signal.
 *
 *   prog_sigcount SIG FILE GATE [escapee]
 *
 * Blocks signal number SIG, writes its pid to FILE, and waits (polling
 * every 10 ms) until the file GATE exists; meanwhile every SIG sent to it
 * stays pending (/proc/PID/status ShdPnd shows it). Then it takes the
 * pending ones with sigtimedwait (a real-time signal is queued once per
 * send, so the count is the number of sends; a standard one counts at most
 * 1), writes the count to FILE.count and exits 0.
 * With "escapee", it first double-forks a grandchild in a session of its own
 * (a setsid escapee) that does the same with FILE.esc; the main process then
 * waits for FILE.esc.count before it exits, so the escapee is never killed
 * as a leftover before it has counted. Files are written whole (a temporary
 * name, then rename).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void nap(void) {
  struct timespec ts = { 0, 10 * 1000 * 1000 };
  nanosleep(&ts, NULL);
}

static void put(const char *path, long v) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) exit(2);
  fprintf(f, "%ld\n", v);
  if (fclose(f) != 0 || rename(tmp, path) != 0) exit(2);
}

static void wait_for(const char *path) {
  while (access(path, F_OK) != 0) nap();
}

/* Writes the pid, waits for the gate, counts the pending signals. */
static void count(int sig, const char *file, const char *gate) {
  char path[4096];
  put(file, (long)getpid());
  wait_for(gate);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  struct timespec zero = { 0, 0 };
  long n = 0;
  while (sigtimedwait(&set, NULL, &zero) == sig) n++;
  snprintf(path, sizeof path, "%s.count", file);
  put(path, n);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: prog_sigcount SIG FILE GATE [escapee]\n");
    return 2;
  }
  int sig = atoi(argv[1]);
  const char *file = argv[2], *gate = argv[3];
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) return 2;
  char esc[4096], esc_count[4096];
  snprintf(esc, sizeof esc, "%s.esc", file);
  snprintf(esc_count, sizeof esc_count, "%s.esc.count", file);
  int escapee = argc > 4 && strcmp(argv[4], "escapee") == 0;
  if (escapee) {
    pid_t p = fork();
    if (p < 0) return 2;
    if (p == 0) {
      setsid();
      pid_t q = fork();
      if (q != 0) _exit(q < 0 ? 2 : 0);
      count(sig, esc, gate);
      return 0;
    }
    while (waitpid(p, NULL, 0) < 0 && errno == EINTR) {}
  }
  count(sig, file, gate);
  if (escapee) wait_for(esc_count);
  return 0;
}
