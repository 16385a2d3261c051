/*
 * minisup.c: the physical limit of a process supervisor, for the supervisor
 * benchmark (scripts/bench.d/supervisors.sh): posix_spawn, one sigwaitinfo
 * loop, immediate restart, nothing else (no logging, no backoff, no state).
 *
 * usage: minisup N PROG [ARGS...]
 * Runs N copies of PROG (each with SVC_INDEX=i in its environment, in its own
 * process group) and restarts any that exits, at once. SIGUSR1 stops them all
 * (TERM), SIGUSR2 starts them all again, SIGTERM/SIGINT stop them and exit.
 */
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int n;
static pid_t *pids;
static char ***envs;
static char **args;
static posix_spawnattr_t attr;

static void start(int i) {
  pid_t pid;
  int r = posix_spawn(&pid, args[0], NULL, &attr, args, envs[i]);
  pids[i] = r == 0 ? pid : 0;
  if (r) fprintf(stderr, "minisup: spawn %s: %s\n", args[0], strerror(r));
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: minisup N PROG [ARGS...]\n");
    return 2;
  }
  n = atoi(argv[1]);
  args = argv + 2;
  pids = calloc((size_t)n, sizeof *pids);
  envs = calloc((size_t)n, sizeof *envs);
  size_t ne = 0;
  while (environ[ne]) ne++;
  for (int i = 0; i < n; i++) {
    envs[i] = calloc(ne + 2, sizeof(char *));
    memcpy(envs[i], environ, ne * sizeof(char *));
    char *v = malloc(32);
    snprintf(v, 32, "SVC_INDEX=%d", i);
    envs[i][ne] = v;
  }
  sigset_t set, none;
  sigemptyset(&set);
  sigemptyset(&none);
  int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGUSR1, SIGUSR2 };
  for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++) sigaddset(&set, sigs[k]);
  sigprocmask(SIG_BLOCK, &set, NULL);
  posix_spawnattr_init(&attr);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &set);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  for (int i = 0; i < n; i++) start(i);
  int stopping = 0, quitting = 0;
  for (;;) {
    siginfo_t si;
    int sig = sigwaitinfo(&set, &si);
    if (sig < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (sig == SIGCHLD) {
      pid_t pid;
      int st;
      while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (int i = 0; i < n; i++) {
          if (pids[i] != pid) continue;
          pids[i] = 0;
          if (!stopping) start(i);
          break;
        }
      }
      if (quitting) {
        int alive = 0;
        for (int i = 0; i < n; i++) alive |= pids[i] != 0;
        if (!alive) return 0;
      }
    } else if (sig == SIGUSR2) {
      stopping = 0;
      for (int i = 0; i < n; i++) if (!pids[i]) start(i);
    } else {
      stopping = 1;
      if (sig != SIGUSR1) quitting = 1;
      int alive = 0;
      for (int i = 0; i < n; i++) {
        if (pids[i] > 0) {
          kill(pids[i], SIGTERM);
          alive = 1;
        }
      }
      if (quitting && !alive) return 0;
    }
  }
}
