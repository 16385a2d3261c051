/*
 * cgroup_int.h: what the two files of the cgroup mechanism share. cgroup.c
 * owns the layout (with the held O_PATH fd of the v2 mount), the paths,
 * creation and enabling, the objects and their held fds, membership,
 * events, kill and freeze; cgroup_res.c is accounting and limits
 * (orch__cg_stat, orch__cg_usage, orch__cg_set). Everything below is
 * defined in cgroup.c and used by cgroup_res.c, never the other way: a
 * cgroupfs file is opened in one place (relative to the v2 mount), and
 * each of its formats is parsed in one place.
 *
 * Every call returns at once (cgroupfs reads and writes) and never raises.
 * Loop thread only, like the layout.
 *
 *   char buf[1024];
 *   if (orch__cg_read_held(&cg->acct[0], cg->fs[0], "cpu.stat", buf, sizeof buf) > 0)
 *     usage = orch__cg_keyed(buf, "usage_usec");
 *   r = orch__cg_write_path(cg->fs[0], "pids.max", "64");
 */
#ifndef ORCH_CGROUP_INT_H
#define ORCH_CGROUP_INT_H

#include <sys/types.h>

#include "cgroup.h"

/* dir/name, for a directory of any hierarchy (below the v2 mount it is
 * opened relative to the held mount fd). write: 0 or -errno; read: the
 * length read into buf (NUL-terminated) or -errno. */
int orch__cg_write_path(const char *dir, const char *name, const char *s);
ssize_t orch__cg_read_path(const char *dir, const char *name, char *buf, size_t size);
/* A single-value file: a number, or "max" (ORCH__CG_UNLIMITED; v1's huge
 * "unlimited" too); -1 when unreadable. */
long long orch__cg_value_path(const char *dir, const char *name);
/* The value of "key N" in a flat keyed file (cpu.stat, memory.events,
 * cgroup.events), or -1. */
long long orch__cg_keyed(const char *text, const char *key);
/* Reads the small file dir/name through the fd in *slot (one of an
 * orch__cgroup's held fds), opened and kept there at the first use while
 * the fd budget allows (see orch__cgroup); the length or -errno (EFBIG
 * when the file fills buf). */
ssize_t orch__cg_read_held(int *slot, const char *dir, const char *name, char *buf, size_t size);

/* The v1 mirror of controller c for the cgroup's path: its directory, made
 * (and its chain checked as orch__cg_trusted does) when create is set. 0
 * (cg->fs[1 + c] set) or -errno, orch__cg_why then perhaps saying why. */
int orch__cg_mirror(orch__cgroup *cg, const char *path, int c, int create);
/* Controller c, which the cgroup has neither in v2 nor through a v1
 * mirror, enabled in v2 down to the cgroup's parent when orch is offered it
 * there. 0 (also when it is not offered) or -errno, *where then the step
 * that failed. */
int orch__cg_enable_down(orch__cgroup *cg, int c, const char **where);
/* Forgets the last failed step, so that orch__cg_why says NULL until a step
 * fails again (orch__cg_set starts so). */
void orch__cg_why_clear(void);


/* For cgroup_members.c: the files below a held or v2 directory (open_at
 * borrows a spare fd at EMFILE, *lent then set), the v2 mount's fd and a
 * path relative to it, the held directory and cgroup.procs (*fresh: an fd
 * to close after use, above the budget), and let_go (a held directory
 * whose cgroup went away is dropped). */
int orch__cg_open_at(int dirfd, const char *name, int flags, int *lent);
int orch__cg_read_records_fd(int fd, char **out, size_t maxrec);
int orch__cg_read_records_at(int dirfd, const char *name, char **out, size_t maxrec);
int orch__cg_write_at(int dirfd, const char *name, const char *s);
const char *orch__cg_at_v2(const char *path, int *dfd);
int orch__cg_beneath(const char *inner, const char *outer);  /* inner at or below outer */
int orch__cg_held_dir(orch__cgroup *cg, int *fresh);
int orch__cg_held_procs(orch__cgroup *cg, int dfd, int *fresh);
int orch__cg_let_go(orch__cgroup *cg, int dfd, int err);

#endif
