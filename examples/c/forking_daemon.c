/*
 * forking_daemon.c: a classic double-forking daemon, to show orch
 * supervising one through its pidfile (examples/supervise.lua).
 *
 * The process orch starts forks and exits 0 at once; the child calls
 * setsid() (leaving orch's process group) and forks again; the grandchild
 * writes its pid to PIDFILE and works until SIGTERM, writing a line per
 * interval to its own log file (a daemon has no stdout). Its parent is gone,
 * so only a subreaper (orch) or init will see it exit.
 *
 * usage: forking_daemon PIDFILE [LOGFILE] [INTERVAL_MS]
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_term;
static void on_term(int sig) { (void)sig; g_term = 1; }

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: forking_daemon PIDFILE [LOGFILE] [INTERVAL_MS]\n");
    return 2;
  }
  const char *pidfile = argv[1];
  const char *logfile = argc > 2 ? argv[2] : "/dev/null";
  long interval = argc > 3 ? atol(argv[3]) : 1000;
  pid_t p = fork();
  if (p < 0) return 1;
  if (p > 0) return 0;                 /* the launcher: done */
  setsid();
  p = fork();
  if (p < 0) _exit(1);
  if (p > 0) _exit(0);                 /* the session leader: gone too */
  umask(022);
  int fd = open("/dev/null", O_RDWR);
  if (fd >= 0) {
    dup2(fd, 0);
    if (fd > 2) close(fd);
  }
  fd = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd >= 0) {
    dup2(fd, 1);
    dup2(fd, 2);
    if (fd > 2) close(fd);
  }
  signal(SIGTERM, on_term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", pidfile);
  FILE *f = fopen(tmp, "w");
  if (!f) _exit(1);
  fprintf(f, "%d\n", (int)getpid());
  fclose(f);
  rename(tmp, pidfile);                /* the pidfile appears complete */
  printf("forking_daemon %d: running\n", (int)getpid());
  unsigned long n = 0;
  while (!g_term) {
    struct timespec ts = { interval / 1000, (interval % 1000) * 1000000L };
    nanosleep(&ts, NULL);
    printf("forking_daemon: working %lu\n", ++n);
  }
  printf("forking_daemon: stopping\n");
  unlink(pidfile);
  return 0;
}
