/*
 * prog_sup_notify.c: a service speaking sd_notify(3), for the supervisor's
 * specs. It sends datagrams to $NOTIFY_SOCKET (a path, or "@name" for the
 * abstract namespace) without libsystemd.
 *
 * usage: prog_sup_notify [-r READY_MS] [-p PINGS] [-i PING_MS] [-s STATUS]
 *                        [-m] [-M PID] [-n] [-x CODE]
 *   -r  wait READY_MS before READY=1 (default 0)
 *   -p  send PINGS WATCHDOG=1 pings, then stop pinging (default: forever)
 *   -i  ms between pings (default 50)
 *   -s  STATUS= text sent with READY=1 (default "serving")
 *   -m  send MAINPID=<own pid> with READY=1
 *   -M  send MAINPID=PID with READY=1 (a lie, for the adoption specs)
 *   -n  never send READY=1
 *   -x  exit with CODE right after READY=1
 * SIGTERM: prints "term", exits 0. stdout: "started pid=P", "ready".
 * Exit codes: 0 on SIGTERM, 1 notify error, 2 usage, -x CODE.
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

static void sleep_ms(long ms) {
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  nanosleep(&ts, NULL);
}

static int notify(const char *msg) {
  const char *path = getenv("NOTIFY_SOCKET");
  if (!path || !*path) return -ENOENT;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  size_t len = strlen(path);
  if (len >= sizeof sa.sun_path) return -ENAMETOOLONG;
  memcpy(sa.sun_path, path, len);
  if (sa.sun_path[0] == '@') sa.sun_path[0] = '\0';
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  ssize_t n = sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sa,
                     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
  int e = n < 0 ? -errno : 0;
  close(fd);
  return e;
}

int main(int argc, char **argv) {
  long ready_ms = 0, pings = -1, ping_ms = 50;
  const char *status = "serving";
  int mainpid = 0, never = 0, exit_code = -1, c;
  long other = 0;
  while ((c = getopt(argc, argv, "r:p:i:s:mM:nx:")) != -1) {
    switch (c) {
    case 'r': ready_ms = atol(optarg); break;
    case 'p': pings = atol(optarg); break;
    case 'i': ping_ms = atol(optarg); break;
    case 's': status = optarg; break;
    case 'm': mainpid = 1; break;
    case 'M': mainpid = 1; other = atol(optarg); break;
    case 'n': never = 1; break;
    case 'x': exit_code = atoi(optarg); break;
    default:
      fprintf(stderr, "usage: prog_sup_notify [-r MS] [-p PINGS] [-i MS] [-s STATUS] [-m] [-M PID] [-n] [-x CODE]\n");
      return 2;
    }
  }
  signal(SIGTERM, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("started pid=%d\n", (int)getpid());
  char buf[512];
  int r = notify("STATUS=starting");
  if (r < 0) {
    /* notify() returns -errno (errno itself is not set for a missing
     * NOTIFY_SOCKET or a path too long). */
    fprintf(stderr, "prog_sup_notify: NOTIFY_SOCKET: %s\n", strerror(-r));
    return 1;
  }
  if (ready_ms) sleep_ms(ready_ms);
  if (!never) {
    if (mainpid)
      snprintf(buf, sizeof buf, "READY=1\nSTATUS=%s\nMAINPID=%ld", status, other ? other : (long)getpid());
    else
      snprintf(buf, sizeof buf, "READY=1\nSTATUS=%s", status);
    notify(buf);
    printf("ready\n");
    if (exit_code >= 0) return exit_code;
  }
  long sent = 0;
  while (!g_term) {
    if (pings < 0 || sent < pings) {
      notify("WATCHDOG=1");
      sent++;
      if (sent == pings) printf("pings done\n");
    }
    sleep_ms(ping_ms);
  }
  notify("STOPPING=1");
  printf("term\n");
  return 0;
}
