/*
 * notify_demo.c: a small service that speaks the sd_notify protocol, as a
 * program written for systemd would, to show orch's supervisor reading it
 * (examples/supervise.lua, doc/supervisor.md).
 *
 * It reports STATUS= while it "loads", READY=1 when it is ready, then pets
 * the watchdog (WATCHDOG=1) at half the interval orch gives it in
 * WATCHDOG_USEC, and prints a line per second. SIGTERM: STOPPING=1, exit 0.
 * Without NOTIFY_SOCKET it runs all the same (sd_notify is a no-op then).
 *
 * usage: notify_demo [LOAD_MS]
 */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_term;
static void on_term(int sig) { (void)sig; g_term = 1; }

/* sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET. */
static void sd_notify(const char *msg) {
  const char *path = getenv("NOTIFY_SOCKET");
  if (!path || !*path) return;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  size_t len = strlen(path);
  if (len >= sizeof sa.sun_path) return;
  memcpy(sa.sun_path, path, len);
  if (sa.sun_path[0] == '@') sa.sun_path[0] = '\0';   /* abstract namespace */
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
         (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
  close(fd);
}

static void sleep_ms(long ms) {
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
  long load_ms = argc > 1 ? atol(argv[1]) : 300;
  const char *wd = getenv("WATCHDOG_USEC");
  long ping_ms = wd ? atol(wd) / 2000 : 1000;
  if (ping_ms <= 0) ping_ms = 1000;
  signal(SIGTERM, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);

  sd_notify("STATUS=loading");
  printf("notify_demo %d: loading for %ld ms\n", (int)getpid(), load_ms);
  sleep_ms(load_ms);
  sd_notify("READY=1\nSTATUS=serving");
  printf("notify_demo: ready\n");

  long since_line = 0;
  unsigned long served = 0;
  while (!g_term) {
    sd_notify("WATCHDOG=1");
    sleep_ms(ping_ms);
    since_line += ping_ms;
    if (since_line >= 1000) {
      since_line = 0;
      char status[64];
      snprintf(status, sizeof status, "STATUS=serving, %lu ticks", ++served);
      sd_notify(status);
      printf("notify_demo: tick %lu\n", served);
    }
  }
  sd_notify("STOPPING=1");
  printf("notify_demo: stopping\n");
  return 0;
}
