/*
 * procfs.h: what /proc/PID/stat and /proc/PID/status say about a process,
 * read in one place (src/procfs.c) for the bindings (l_proc.c), the process
 * mechanism (process.c), procscan.c and the heartbeat client library
 * (heartbeat.c). No libuv, no Lua: procfs.c is linked into
 * liborch_heartbeat too, where these names are hidden.
 *
 *   orch__procfs_stat st;
 *   if (orch__procfs_read_stat(pid, &st) == 0 && st.state != 'Z') ...
 *   unsigned long long t;
 *   orch__procfs_start_time(pid, &t);   // the identity against pid reuse
 *
 * Every function returns 0 or -errno; -ESRCH when there is no such process.
 * A reply that does not parse (never from a real kernel) is -EPROTO.
 */
#ifndef ORCH_PROCFS_H
#define ORCH_PROCFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#if defined(__GNUC__)
#define ORCH__HIDDEN __attribute__((visibility("hidden")))
#else
#define ORCH__HIDDEN
#endif

/* The fields of /proc/PID/stat orch uses (proc(5) numbers in comments). */
typedef struct {
  char state;                   /* 3: R, S, D, Z, T, t, X, ... */
  long long ppid, pgid, sid;    /* 4, 5, 6 */
  long long nice;               /* 19 */
  long long threads;            /* 20 */
  long long exit_status;        /* 52, waitpid's form; -1 when absent */
  unsigned long long utime, stime;  /* 14, 15: clock ticks */
  unsigned long long start;     /* 22: clock ticks after boot */
  unsigned long long rss_pages; /* 24 */
  char name[64];                /* 2, without the parentheses */
} orch__procfs_stat;

/* Parses the text of a /proc/PID/stat file (len bytes, need not end in a
 * NUL). The name may hold spaces, ')' and newlines: the fields are counted
 * from the last ')'. Returns 0 or -EPROTO. */
ORCH__HIDDEN int orch__procfs_parse_stat(const char *text, size_t len, orch__procfs_stat *st);

/* Reads and parses /proc/PID/stat. */
ORCH__HIDDEN int orch__procfs_read_stat(pid_t pid, orch__procfs_stat *st);

/* The start time of pid in clock ticks since boot (field 22): with the pid,
 * the identity of a process. The one function every start time comes from
 * (orch.proc.start_time, the heartbeat slots, the safe kill). */
ORCH__HIDDEN int orch__procfs_start_time(pid_t pid, unsigned long long *ticks);

/* The parent pid of pid (field 4). */
ORCH__HIDDEN int orch__procfs_ppid(pid_t pid, pid_t *ppid);

/* The real uid of pid (the first number of /proc/PID/status's Uid: line). */
ORCH__HIDDEN int orch__procfs_uid(pid_t pid, uint32_t *uid);

/* 1 when /proc is another pid namespace's (/proc/self is not getpid()):
 * the functions above then read pid's files through the number /proc knows
 * it by (a pidfd's fdinfo), and fail with -EXDEV where /proc cannot show it
 * or no pidfd can be made; parent, group and session read -1 (numbers of
 * /proc's namespace) and orch__procfs_ppid fails with -EXDEV. */
ORCH__HIDDEN int orch__procfs_foreign(void);

/* The path of pid's /proc file `file` ("cgroup", "cmdline", "fd"): through
 * the number /proc knows pid by (see orch__procfs_foreign). 0 or -errno
 * (-EXDEV: /proc cannot show pid). */
ORCH__HIDDEN int orch__procfs_pid_path(pid_t pid, const char *file, char *out, size_t cap);

/* Reads a small file whole into buf (at most cap - 1 bytes, then a NUL).
 * Returns the length or -errno (-ESRCH for a /proc/PID file that is gone). */
ORCH__HIDDEN ssize_t orch__procfs_read(const char *path, char *buf, size_t cap);

#endif
