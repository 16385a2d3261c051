/*
 * procfs.c: the one reader of /proc/PID/stat (and of the Uid: line of
 * /proc/PID/status), for everything in orch that asks the kernel about a
 * process: its start time (the identity that defeats pid reuse), state,
 * parent, group, session, CPU time, size and, for a zombie, its exit status.
 * Users: l_proc.c (orch.proc.info, orch.proc.start_time), process.c (the
 * safe kill), procscan.c (parent pids) and heartbeat.c (slot owners).
 *
 * Ownership: nothing outlives a call; the caller's buffers only.
 * What may block: reads of /proc files (in memory, short).
 * No libuv, no Lua: this file is linked into liborch_heartbeat as well.
 */
#include "procfs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* In liborch (src/fdlimit.c), absent from liborch_heartbeat: at EMFILE a
 * /proc file is read with one of the runtime's spare fds (a process of a
 * killed orch's state record must not look gone for want of an fd), and
 * the spare taken back after the close. */
extern int orch__fd_open_at(int dirfd, const char *name, int flags, unsigned mode, int *lent)
  __attribute__((weak));
extern void orch__fd_spare_settle(void) __attribute__((weak));

static ssize_t read_fd(int fd, char *buf, size_t cap);

ssize_t orch__procfs_read(const char *path, char *buf, size_t cap) {
  int fd;
  if (orch__fd_open_at && orch__fd_spare_settle) {
    fd = orch__fd_open_at(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0, NULL);
    if (fd < 0) {
      int e = errno;
      orch__fd_spare_settle();
      return e == ENOENT ? -ESRCH : -e;
    }
    ssize_t n = read_fd(fd, buf, cap);
    orch__fd_spare_settle();
    return n;
  }
  do fd = open(path, O_RDONLY | O_CLOEXEC); while (fd < 0 && errno == EINTR);
  if (fd < 0) return errno == ENOENT ? -ESRCH : -errno;
  return read_fd(fd, buf, cap);
}

/* Reads fd to its end (at most cap - 1 bytes) and closes it. */
static ssize_t read_fd(int fd, char *buf, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap) {
    ssize_t r = read(fd, buf + n, cap - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      close(fd);
      return e == ENOENT ? -ESRCH : -e;    /* ESRCH: it exited meanwhile */
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  buf[n] = '\0';
  return (ssize_t)n;
}

/* The number at *pp (an optional '-', then digits) up to the next space or
 * end; *pp moves past it. Digits beyond 64 bits wrap (no kernel writes
 * them). Returns 0, or -1 when the token is not a number. */
static int next_number(const char **pp, const char *end, unsigned long long *v) {
  const char *p = *pp;
  if (p >= end || *p != ' ') return -1;
  p++;
  int neg = p < end && *p == '-';
  if (neg) p++;
  if (p >= end || *p < '0' || *p > '9') return -1;
  unsigned long long x = 0;
  while (p < end && *p >= '0' && *p <= '9') x = x * 10 + (unsigned long long)(*p++ - '0');
  if (p < end && *p != ' ' && *p != '\n') return -1;
  *v = neg ? 0 - x : x;
  *pp = p;
  return 0;
}

int orch__procfs_parse_stat(const char *text, size_t len, orch__procfs_stat *st) {
  const char *end = text + len;
  const char *open_p = memchr(text, '(', len);
  const char *close_p = memrchr(text, ')', len);
  if (!open_p || !close_p || close_p < open_p) return -EPROTO;
  size_t nl = (size_t)(close_p - open_p - 1);
  if (nl >= sizeof st->name) nl = sizeof st->name - 1;
  memcpy(st->name, open_p + 1, nl);
  st->name[nl] = '\0';
  const char *p = close_p + 1;
  if (end - p < 2 || p[0] != ' ') return -EPROTO;
  st->state = p[1];
  p += 2;
  /* f[i] is field i of proc(5); 4 to 52 are numbers. */
  unsigned long long f[53];
  int last = 3;
  while (last < 52 && next_number(&p, end, &f[last + 1]) == 0) last++;
  if (last < 22) return -EPROTO;            /* up to the start time at least */
  st->ppid = (long long)f[4];
  st->pgid = (long long)f[5];
  st->sid = (long long)f[6];
  st->utime = f[14];
  st->stime = f[15];
  st->nice = (long long)f[19];
  st->threads = (long long)f[20];
  st->start = f[22];
  st->rss_pages = last >= 24 ? f[24] : 0;
  st->exit_status = last >= 52 ? (long long)f[52] : -1;
  return 0;
}

/* ---------------------------------------------------------------- another namespace's /proc */

/* In a pid namespace without a /proc of its own (`unshare --pid --fork`
 * without --mount-proc, a container that bind-mounts the host's), /proc
 * shows another namespace's processes: /proc/4711 is not our pid 4711, and
 * a start time read there is a stranger's. /proc/self still names the
 * reader (the kernel resolves it), as the number it has in /proc's
 * namespace: it differs from getpid() exactly then. Asked again after a
 * fork (another pid, the same answer). */
static pid_t foreign_for;
static int foreign_is;

int orch__procfs_foreign(void) {
  pid_t me = getpid();
  if (foreign_for == me) return foreign_is;
  char link[32];
  ssize_t n = readlink("/proc/self", link, sizeof link - 1);
  int is = 0;
  if (n > 0) {
    link[n] = 0;
    is = atoi(link) != (int)me;
  }
  foreign_is = is;
  foreign_for = me;
  return is;
}

/* The number /proc knows pid by: pid itself with a /proc of our own;
 * otherwise "self" for orch, and for another process the Pid: line of a
 * pidfd's fdinfo (the pidfd names our pid's process; the kernel writes its
 * number in the namespace of the /proc it is read from). -EXDEV when /proc
 * cannot show it (it is not in /proc's namespace, or no pidfd: then nothing
 * read there could be checked to be pid's). */
static int proc_name(pid_t pid, char *out, size_t cap) {
  if (!orch__procfs_foreign()) {
    snprintf(out, cap, "%d", (int)pid);
    return 0;
  }
  if (pid == getpid()) {
    snprintf(out, cap, "self");
    return 0;
  }
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) return errno == ESRCH ? -ESRCH : -EXDEV;
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  ssize_t n = orch__procfs_read(path, buf, sizeof buf);
  close(fd);
  if (n < 0) return -EXDEV;
  const char *p = strstr(buf, "\nPid:");
  long v = p ? strtol(p + 5, NULL, 10) : 0;
  /* 0: not in /proc's namespace; -1: it ended since the pidfd was made. */
  if (v == -1) return -ESRCH;
  if (v <= 0) return -EXDEV;
  snprintf(out, cap, "%ld", v);
  return 0;
}

int orch__procfs_pid_path(pid_t pid, const char *file, char *out, size_t cap) {
  char name[24];
  if (pid <= 0) return -ESRCH;
  int r = proc_name(pid, name, sizeof name);
  if (r < 0) return r;
  int n = snprintf(out, cap, "/proc/%s/%s", name, file);
  return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int orch__procfs_read_stat(pid_t pid, orch__procfs_stat *st) {
  char path[64], buf[2048];
  int r = orch__procfs_pid_path(pid, "stat", path, sizeof path);
  if (r < 0) return r;
  ssize_t n = orch__procfs_read(path, buf, sizeof buf);
  if (n < 0) return (int)n;
  r = orch__procfs_parse_stat(buf, (size_t)n, st);
  /* Its parent, group and session are numbers of /proc's namespace. */
  if (r == 0 && orch__procfs_foreign()) st->ppid = st->pgid = st->sid = -1;
  return r;
}

int orch__procfs_start_time(pid_t pid, unsigned long long *ticks) {
  orch__procfs_stat st;
  int r = orch__procfs_read_stat(pid, &st);
  if (r == 0) *ticks = st.start;
  return r;
}

int orch__procfs_ppid(pid_t pid, pid_t *ppid) {
  orch__procfs_stat st;
  int r = orch__procfs_read_stat(pid, &st);
  if (r == 0 && st.ppid < 0) r = -EXDEV;
  if (r == 0) *ppid = (pid_t)st.ppid;
  return r;
}

int orch__procfs_uid(pid_t pid, uint32_t *uid) {
  char path[64], buf[4096];
  int r = orch__procfs_pid_path(pid, "status", path, sizeof path);
  if (r < 0) return r;
  ssize_t n = orch__procfs_read(path, buf, sizeof buf);
  if (n < 0) return (int)n;
  const char *u = strstr(buf, "\nUid:");
  if (!u) return -EPROTO;
  u += 5;
  while (*u == '\t' || *u == ' ') u++;
  if (*u < '0' || *u > '9') return -EPROTO;
  unsigned long v = 0;
  while (*u >= '0' && *u <= '9') v = v * 10 + (unsigned long)(*u++ - '0');
  *uid = (uint32_t)v;
  return 0;
}
