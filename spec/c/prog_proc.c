/*
 * prog_proc: a helper for spec/proc_spec.lua and spec/signal_spec.lua.
 *
 *   prog_proc exit N          exit with status N
 *   prog_proc raise SIG       kill itself with signal number SIG
 *   prog_proc fds             print the open fds, one per line
 *   prog_proc fdsize          the size of its fd table (FDSize in /proc/self/status)
 *   prog_proc ids             uid gid groups... (one line)
 *   prog_proc umask           the umask in octal
 *   prog_proc rlimit NAME     "soft hard" of nofile|core|cpu ("inf" for unlimited)
 *   prog_proc sigs            "SigBlk SigIgn" as hex masks
 *   prog_proc fdflags N       "nonblock" or "block" for fd N
 *   prog_proc write N TEXT    write TEXT to fd N, exit 0
 *   prog_proc daemon SEC CODE double fork; the grandchild (new session)
 *                             prints its pid, sleeps SEC, exits CODE;
 *                             the caller's child exits 0 at once
 *   prog_proc sleep SEC       sleep SEC seconds, exit 0
 *   prog_proc leader CODE     the main thread (the thread group's leader)
 *                             ends at once; a second thread reads stdin
 *                             until EOF, then the process exits CODE
 *   prog_proc forks N WHO     forks N children that pause until killed,
 *                             then prints "ready" and pauses; WHO forks
 *                             them: main (the main thread), thread (a
 *                             second thread, the main one paused) or
 *                             leaderless (a second thread, the main one
 *                             ended: a zombie leader)
 */
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void nap(double s) {
  struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
  while (nanosleep(&ts, &ts) < 0) {}
}

static int status_line(const char *key, char *out, size_t size) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  size_t kl = strlen(key);
  if (!f) return -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, kl) == 0) {
      char *v = line + kl;
      while (*v == ' ' || *v == '\t') v++;
      v[strcspn(v, "\n")] = 0;
      snprintf(out, size, "%s", v);
      fclose(f);
      return 0;
    }
  }
  fclose(f);
  return -1;
}

static void *read_to_eof(void *arg) {
  char b[256];
  while (read(0, b, sizeof b) > 0) {}
  exit(atoi(arg));
}

static int forks_n;

static void fork_children(void) {
  for (int i = 0; i < forks_n; i++) {
    pid_t p = fork();
    if (p < 0) _exit(107);
    if (p == 0) for (;;) pause();
  }
  printf("ready\n");
  fflush(stdout);
}

static void *forker(void *arg) {
  (void)arg;
  fork_children();
  for (;;) pause();
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) return 100;
  const char *cmd = argv[1];
  if (strcmp(cmd, "exit") == 0 && argc > 2) return atoi(argv[2]);
  if (strcmp(cmd, "raise") == 0 && argc > 2) {
    int sig = atoi(argv[2]);
    signal(sig, SIG_DFL);
    kill(getpid(), sig);
    return 101;
  }
  if (strcmp(cmd, "fds") == 0) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 102;
    struct dirent *e;
    while ((e = readdir(d))) {
      if (e->d_name[0] == '.') continue;
      if (atoi(e->d_name) == dirfd(d)) continue;
      printf("%s\n", e->d_name);
    }
    closedir(d);
    return 0;
  }
  if (strcmp(cmd, "fdsize") == 0) {       /* the size of its fd table */
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
      if (strncmp(line, "FDSize:", 7) == 0) printf("%d\n", atoi(line + 7));
    if (f) fclose(f);
    return 0;
  }
  if (strcmp(cmd, "ids") == 0) {
    gid_t groups[256];
    int n = getgroups(256, groups);
    printf("%d %d", (int)getuid(), (int)getgid());
    for (int i = 0; i < n; i++) printf(" %d", (int)groups[i]);
    printf("\n");
    return 0;
  }
  if (strcmp(cmd, "umask") == 0) {
    mode_t m = umask(0);
    printf("%03o\n", (unsigned)m);
    return 0;
  }
  if (strcmp(cmd, "rlimit") == 0 && argc > 2) {
    int res = strcmp(argv[2], "nofile") == 0 ? RLIMIT_NOFILE
            : strcmp(argv[2], "core") == 0 ? RLIMIT_CORE : RLIMIT_CPU;
    struct rlimit rl;
    getrlimit(res, &rl);
    if (rl.rlim_cur == RLIM_INFINITY) printf("inf "); else printf("%llu ", (unsigned long long)rl.rlim_cur);
    if (rl.rlim_max == RLIM_INFINITY) printf("inf\n"); else printf("%llu\n", (unsigned long long)rl.rlim_max);
    return 0;
  }
  if (strcmp(cmd, "sigs") == 0) {
    char blk[64] = "?", ign[64] = "?";
    status_line("SigBlk:", blk, sizeof blk);
    status_line("SigIgn:", ign, sizeof ign);
    printf("%s %s\n", blk, ign);
    return 0;
  }
  if (strcmp(cmd, "fdflags") == 0 && argc > 2) {
    int fl = fcntl(atoi(argv[2]), F_GETFL);
    if (fl < 0) { printf("bad\n"); return 1; }
    printf("%s\n", (fl & O_NONBLOCK) ? "nonblock" : "block");
    return 0;
  }
  if (strcmp(cmd, "write") == 0 && argc > 3) {
    size_t len = strlen(argv[3]);
    return write(atoi(argv[2]), argv[3], len) == (ssize_t)len ? 0 : 1;
  }
  if (strcmp(cmd, "daemon") == 0 && argc > 3) {
    pid_t p = fork();
    if (p < 0) return 103;
    if (p > 0) return 0;
    setsid();
    p = fork();
    if (p < 0) _exit(104);
    if (p > 0) _exit(0);
    printf("%d\n", (int)getpid());
    fflush(stdout);
    fclose(stdout);
    nap(atof(argv[2]));
    _exit(atoi(argv[3]));
  }
  if (strcmp(cmd, "leader") == 0 && argc > 2) {
    pthread_t t;
    if (pthread_create(&t, NULL, read_to_eof, argv[2]) != 0) return 105;
    pthread_exit(NULL);
  }
  if (strcmp(cmd, "forks") == 0 && argc > 3) {
    forks_n = atoi(argv[2]);
    if (strcmp(argv[3], "main") == 0) {
      fork_children();
      for (;;) pause();
    }
    pthread_t t;
    if (pthread_create(&t, NULL, forker, NULL) != 0) return 106;
    if (strcmp(argv[3], "leaderless") == 0) pthread_exit(NULL);
    for (;;) pause();
  }
  if (strcmp(cmd, "sleep") == 0 && argc > 2) {
    nap(atof(argv[2]));
    return 0;
  }
  return 100;
}
