/*
 * fdlimit.c: the process's fd limit: RLIMIT_NOFILE raised at start (and put
 * back in spawned children), and the spare fds a listener gives up at
 * EMFILE, or lends one at a time to the cgroup files of a stop. Process-wide state (the limit is); no Lua, nothing blocks.
 */
#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- fd limit */

/* Spare fds, taken when the first runtime starts, given up so the control
 * socket can accept at EMFILE (src/listener.c). Process-wide: the fd limit is. */
#define FD_RESERVE 3
static int fd_reserve[FD_RESERVE] = { -1, -1, -1 };
static struct rlimit nofile_orig;
static int nofile_raised;

void orch__fd_reserve_fill(void) {
  for (int i = 0; i < FD_RESERVE; i++)
    if (fd_reserve[i] < 0 && (fd_reserve[i] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) return;
}

void orch__fd_reserve_release(void) {
  for (int i = 0; i < FD_RESERVE; i++)
    if (fd_reserve[i] >= 0) { close(fd_reserve[i]); fd_reserve[i] = -1; }
}

int orch__fd_reserve_held(void) {
  int n = 0;
  for (int i = 0; i < FD_RESERVE; i++) n += fd_reserve[i] >= 0;
  return n;
}

/* Spares lent one at a time (orch__fd_spare_lend) and not taken back yet. */
static int fd_lent;

int orch__fd_spare_lend(void) {
  for (int i = 0; i < FD_RESERVE; i++)
    if (fd_reserve[i] >= 0) {
      close(fd_reserve[i]);
      fd_reserve[i] = -1;
      fd_lent++;
      return 1;
    }
  return 0;
}

void orch__fd_spare_settle(void) {
  for (int i = 0; i < FD_RESERVE && fd_lent > 0; i++)
    if (fd_reserve[i] < 0) {
      if ((fd_reserve[i] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) return;
      fd_lent--;
    }
}

/* The cached soft limit and the second it was read in (CLOCK_MONOTONIC_COARSE,
 * a vDSO read); -1: to be read. Process-wide, like the limit. */
static rlim_t nofile_soft;
static time_t nofile_read_at = -1;

rlim_t orch__nofile_soft(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
  if (nofile_read_at != now.tv_sec) {
    struct rlimit rl;
    /* Unreadable (it never is): no budget rather than a wrong one. */
    nofile_soft = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 0;
    nofile_read_at = now.tv_sec;
  }
  return nofile_soft;
}

void orch__nofile_changed(void) { nofile_read_at = -1; }

int orch_raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return -errno;
  if (!nofile_raised) nofile_orig = rl;
  if (rl.rlim_cur == rl.rlim_max) return 0;
  rlim_t want = rl.rlim_max;
  /* An unlimited hard limit is capped by fs.nr_open anyway. */
  if (want == RLIM_INFINITY || want > (1u << 20)) want = 1u << 20;
  if (want <= rl.rlim_cur) return 0;
  rl.rlim_cur = want;
  if (setrlimit(RLIMIT_NOFILE, &rl) < 0) return -errno;
  orch__nofile_changed();
  nofile_raised = 1;
  return 1;
}

/* Starts keep this many fds free (a quarter of a smaller limit) for what
 * must not fail at the limit: a stop's cgroup files and pidfds, the
 * control socket, a log rotation. */
#define FD_HEADROOM 32

int orch__fd_headroom_short(int fd) {
  rlim_t cur = orch__nofile_soft();
  if (cur == 0 || cur == RLIM_INFINITY) return 0;
  rlim_t keep = cur / 4 < FD_HEADROOM ? cur / 4 : FD_HEADROOM;
  /* Fds are allocated lowest first: every one below fd is in use. */
  return (rlim_t)fd + keep >= cur;
}

/* In a child about to exec: the soft limit orch was started with (a
 * program may use select(2) with fds below FD_SETSIZE). Async-signal-safe. */
void orch__child_nofile(void) {
  if (nofile_raised) setrlimit(RLIMIT_NOFILE, &nofile_orig);
}

const struct rlimit *orch__nofile_orig(void) {
  return nofile_raised ? &nofile_orig : NULL;
}
