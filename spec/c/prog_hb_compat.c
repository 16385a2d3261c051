/*
 * prog_hb_compat.c: a heartbeat client written the way the classic programs
 * were, against the classic table and nothing else: it attaches the segment
 * with raw shmget/shmat, takes a slot with its pid (a slot already holding
 * its pid, else the first with pid 0), fills pname/timeout/atime, and sets
 * atime = time(0) on every beat. It does not use liborch_heartbeat: it is
 * the "existing program" the watchdog must watch unchanged. (The classic
 * code also took a SysV semaphore around the claim; nothing here needs it.)
 *
 * usage: prog_hb_compat [-k KEY] [-n NAME] [-t TIMEOUT_S] [-i INTERVAL_MS]
 *                       [-s STALL_AFTER] [-x EXIT_AFTER] [-N SLOTS] [-T]
 *   -k  segment key (default 0x5095; hex with 0x)     -n  pname (default prog_hb_compat)
 *   -t  timeout in seconds (default 10)               -i  ms between beats (default 1000)
 *   -s  stop beating after N beats (keep running)     -x  exit 0 after N beats
 *   -N  slots when creating the segment (default 1000)
 *   -T  ignore SIGTERM (otherwise SIGTERM/SIGINT clear the slot and exit 0)
 * stdout: "ready pid=P slot=I", then "stalled" when it stops beating.
 * Exit codes: 0 done, 1 shm error, 2 usage, 3 table full.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <time.h>
#include <unistd.h>

struct st_procinfo {
  int pid;
  char pname[51];
  int timeout;
  time_t atime;
};

static struct st_procinfo *g_shm;
static int g_pos = -1;

static void on_exit_signal(int sig) {
  (void)sig;
  if (g_shm && g_pos >= 0) memset(&g_shm[g_pos], 0, sizeof g_shm[g_pos]);
  _exit(0);
}

static void sleep_ms(long ms) {
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

static void usage(void) {
  fprintf(stderr, "usage: prog_hb_compat [-k KEY] [-n NAME] [-t TIMEOUT_S] [-i INTERVAL_MS] "
                  "[-s STALL_AFTER] [-x EXIT_AFTER] [-N SLOTS] [-T]\n");
  exit(2);
}

int main(int argc, char **argv) {
  long key = 0x5095, timeout = 10, interval = 1000, stall = -1, stop = -1, slots = 1000;
  const char *name = "prog_hb_compat";
  int ignore_term = 0, c;
  while ((c = getopt(argc, argv, "k:n:t:i:s:x:N:T")) != -1) {
    switch (c) {
    case 'k': key = strtol(optarg, NULL, 0); break;
    case 'n': name = optarg; break;
    case 't': timeout = atol(optarg); break;
    case 'i': interval = atol(optarg); break;
    case 's': stall = atol(optarg); break;
    case 'x': stop = atol(optarg); break;
    case 'N': slots = atol(optarg); break;
    case 'T': ignore_term = 1; break;
    default: usage();
    }
  }
  if (optind != argc || slots <= 0 || interval < 0) usage();
  setvbuf(stdout, NULL, _IOLBF, 0);

  signal(SIGINT, on_exit_signal);
  signal(SIGTERM, ignore_term ? SIG_IGN : on_exit_signal);

  int shmid = shmget((key_t)key, (size_t)slots * sizeof(struct st_procinfo), 0600 | IPC_CREAT);
  if (shmid < 0) shmid = shmget((key_t)key, 0, 0);   /* exists, other size */
  if (shmid < 0) { perror("shmget"); return 1; }
  struct shmid_ds ds;
  if (shmctl(shmid, IPC_STAT, &ds) < 0) { perror("shmctl"); return 1; }
  long n = (long)(ds.shm_segsz / sizeof(struct st_procinfo));
  g_shm = shmat(shmid, NULL, 0);
  if (g_shm == (void *)-1) { perror("shmat"); return 1; }

  struct st_procinfo me;
  memset(&me, 0, sizeof me);
  me.pid = getpid();
  strncpy(me.pname, name, 50);
  me.timeout = (int)timeout;
  me.atime = time(0);
  for (long i = 0; i < n; i++)
    if (g_shm[i].pid == me.pid) { g_pos = (int)i; break; }
  if (g_pos < 0)
    for (long i = 0; i < n; i++)
      if (g_shm[i].pid == 0) { g_pos = (int)i; break; }
  if (g_pos < 0) { fprintf(stderr, "prog_hb_compat: table full\n"); return 3; }
  memcpy(&g_shm[g_pos], &me, sizeof me);
  printf("ready pid=%d slot=%d\n", (int)me.pid, g_pos);

  for (long beats = 0;; ) {
    if (stop >= 0 && beats >= stop) {
      memset(&g_shm[g_pos], 0, sizeof g_shm[g_pos]);
      return 0;
    }
    if (stall >= 0 && beats >= stall) {
      printf("stalled\n");
      for (;;) pause();
    }
    sleep_ms(interval);
    g_shm[g_pos].atime = time(0);
    beats++;
  }
}
