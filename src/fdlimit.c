/*
 * fdlimit.c: the process's fd limit: RLIMIT_NOFILE raised at start (and put
 * back in spawned children), and the spare fds a listener gives up at
 * EMFILE, or lends one at a time to a call that must open a file there.
 * Process-wide state (the limit is); no Lua, nothing blocks.
 */
#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- fd limit */

/* Spare fds, taken when the first runtime starts, and given up when orch
 * is out of fds: all of them so the control socket can accept and serve a
 * connection at EMFILE (src/listener.c), or one at a time (lent) to a call
 * that must open a file there (a cgroup file of a stop, a module loaded on
 * first use, the state record, a /proc file, the control socket itself).
 * Process-wide: the fd limit is.
 *
 * The rule that keeps them whole: a slot without its fd is a spare out,
 * and every settle takes back every spare out where an fd is free again
 * (the runtime settles at each turn of its loop while one is out, and each
 * borrower right after it closed what it opened). The runtime looks only
 * while one is out: whatever leaves a spare out wakes it (watch_spares),
 * and it stops looking once they are whole, so an idle loop pays nothing.
 * So a borrower that keeps its fd (the loop's inotify fd, the control
 * socket's listening socket) keeps it outside the spares as soon as fds
 * are free: the spare comes back under another number. The one exception: a connection accepted at
 * EMFILE keeps every spare given up for it until it closes (conn_holds),
 * so that serving it has fds to work with. */
#define FD_RESERVE 3
static int fd_reserve[FD_RESERVE] = { -1, -1, -1 };
static int fd_filled;           /* the first fill was made: an empty slot is a spare out */
static int conn_holds;          /* connections accepted at EMFILE still open */
static struct rlimit nofile_orig;
static int nofile_raised;

/* The kill reserve: fds, open on /dev/null like the spares, lent only to
 * what a stop must do to its cgroups (orch__fd_kill_path: the listing and
 * its pidfds, cgroup.kill, cgroup.events) once the spares are out, and
 * never given up to a connection accepted at EMFILE. The spares alone did
 * not do: a `ctl stop` at EMFILE came through a connection that took them
 * all, and the fds its accept freed went to other opens (the stop's
 * journal write, a wait's cgroup.events), so its cgroup.kill found none
 * and its escapees outlived it. What the kill path opens it closes before
 * it returns (a lent fd is never held), so its fds are free again at its
 * end, and taken back then: nothing else can run in between (loop thread).
 * Three: the cgroup's directory, and a pidfd and the listing that confirms
 * it, or cgroup.kill. Filled before the spares. */
#define FD_KILL 3
static int fd_kill[FD_KILL] = { -1, -1, -1 };
static int kill_path;           /* depth of orch__fd_kill_path(1) calls */

static int held_of(const int *slots, int n) {
  int k = 0;
  for (int i = 0; i < n; i++) k += slots[i] >= 0;
  return k;
}

static void fill_slots(int *slots, int n) {
  for (int i = 0; i < n; i++)
    if (slots[i] < 0 && (slots[i] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) break;
}

/* After anything that may leave a spare out: while one is out that a
 * settle may take back, the runtimes settle at each turn of their loops
 * (the waker runtime.c gave), until the spares are whole. */
static void (*spares_waker)(void);

void orch__fd_spares_on_out(void (*wake)(void)) { spares_waker = wake; }

static void watch_spares(void) {
  if (spares_waker && orch__fd_spares_out()) spares_waker();
}

void orch__fd_reserve_fill(void) {
  fd_filled = 1;
  fill_slots(fd_kill, FD_KILL);
  fill_slots(fd_reserve, FD_RESERVE);
  watch_spares();
}

void orch__fd_reserve_release(void) {
  for (int i = 0; i < FD_RESERVE; i++)
    if (fd_reserve[i] >= 0) { close(fd_reserve[i]); fd_reserve[i] = -1; }
  watch_spares();
}

void orch__fd_reserve_hold(int delta) {
  conn_holds += delta;
  if (conn_holds < 0) conn_holds = 0;
  if (delta < 0) orch__fd_spare_settle();
}

int orch__fd_reserve_held(void) {
  return held_of(fd_reserve, FD_RESERVE);
}

int orch__fd_kill_held(void) {
  return held_of(fd_kill, FD_KILL);
}

int orch__fd_spares(int *total) {
  if (total) *total = FD_RESERVE;
  return orch__fd_reserve_held();
}

int orch__fd_spares_out(void) {
  return fd_filled && ((!conn_holds && orch__fd_reserve_held() < FD_RESERVE) || orch__fd_kill_held() < FD_KILL);
}

static int lend_from(int *slots, int n) {
  for (int i = 0; i < n; i++)
    if (slots[i] >= 0) {
      close(slots[i]);
      slots[i] = -1;
      watch_spares();
      return 1;
    }
  return 0;
}

int orch__fd_spare_lend(void) {
  return lend_from(fd_reserve, FD_RESERVE) || (kill_path > 0 && lend_from(fd_kill, FD_KILL));
}

void orch__fd_spare_settle(void) {
  if (!fd_filled) return;
  if (!conn_holds) {
    orch__fd_reserve_fill();
  } else if (orch__fd_kill_held() < FD_KILL) {
    fill_slots(fd_kill, FD_KILL);
    watch_spares();
  }
}

void orch__fd_kill_path(int on) {
  kill_path += on ? 1 : -1;
  if (kill_path <= 0) {
    kill_path = 0;
    orch__fd_spare_settle();
  }
}

int orch__fd_open_at(int dirfd, const char *name, int flags, unsigned mode, int *lent) {
  orch__fd_spare_settle();
  if (lent) *lent = 0;
  int fd;
  do fd = openat(dirfd, name, flags, (mode_t)mode); while (fd < 0 && errno == EINTR);
  if (fd < 0 && (errno == EMFILE || errno == ENFILE) && orch__fd_spare_lend()) {
    if (lent) *lent = 1;
    do fd = openat(dirfd, name, flags, (mode_t)mode); while (fd < 0 && errno == EINTR);
  }
  return fd;
}

int orch__fd_pidfd_lent(pid_t pid) {
  orch__fd_spare_settle();
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0 && (errno == EMFILE || errno == ENFILE) && orch__fd_spare_lend()) fd = (int)syscall(SYS_pidfd_open, pid, 0);
  return fd;
}

int orch__fd_socket_lent(int domain, int type) {
  orch__fd_spare_settle();
  int fd = socket(domain, type, 0);
  if (fd < 0 && (errno == EMFILE || errno == ENFILE) && orch__fd_spare_lend()) fd = socket(domain, type, 0);
  return fd;
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
 * control socket, a log rotation. The kill reserve, held apart for the
 * first of these, counts in it: at nofile 64 as many services start as
 * before it was. */
#define FD_HEADROOM 32

int orch__fd_headroom_short(int fd) {
  rlim_t cur = orch__nofile_soft();
  if (cur == 0 || cur == RLIM_INFINITY) return 0;
  rlim_t keep = cur / 4 < FD_HEADROOM ? cur / 4 : FD_HEADROOM;
  keep = keep > FD_KILL ? keep - FD_KILL : 0;
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
