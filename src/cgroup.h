/*
 * cgroup.h: control groups as a mechanism, for the binding (l_cgroup.c), the
 * spawner and the supervisor's C side.
 *
 * Where the hierarchies are comes from /proc/self/mountinfo (never a fixed
 * path): the cgroup v2 hierarchy tracks, kills and freezes; a resource
 * controller (memory, pids, cpu, io) is used in v2 when it is enabled for
 * the cgroup, else through the matching v1 hierarchy (a hybrid host mounts
 * v2 without controllers beside v1 memory/pids/cpu). A cgroup made with
 * orch__cg_create therefore is one v2 directory plus one "mirror"
 * directory, at the same relative place, in each v1 hierarchy that has a
 * controller v2 lacks; adding a process writes it to all of them, and
 * orch__cg_set writes a limit where the controller lives.
 *
 * Paths: "/a/b" is a place in the v2 hierarchy as /proc/PID/cgroup writes
 * it; "a/b" is relative to orch's own cgroup (in every hierarchy; in v2,
 * to the one orch was started in, see orch__cg_home). Each
 * component is a plain name (no "", ".", ".." and no "cgroup." prefix).
 *
 * Usage from C (every call returns 0 or -errno and never raises):
 *
 *   orch__cgroup cg;
 *   orch__cg_init(&cg);                       // closed: orch__cg_close is safe
 *   int r = orch__cg_create(&cg, "orch.web/api@1", ORCH__CG_ALL);
 *   if (r < 0) ...;                           // -EACCES without delegation
 *   orch__cg_set(&cg, ORCH__CG_MEMORY_MAX, 256 << 20, 0);   // v2 or v1
 *   orch__cg_add(&cg, pid);                   // or orch__spawn_req.cgroup
 *   int populated, frozen;
 *   orch__cg_events(&cg, &populated, &frozen);  // watch cg.fs[0]/cgroup.events
 *   orch__cg_kill(&cg, SIGKILL, 0, NULL, 0, NULL);  // cgroup.kill, or every pid
 *   ... wait for populated 0 (poll cgroup.events for POLLPRI, l_cgroup.c) ...
 *   orch__cg_remove(&cg, 0);                  // rmdir v2 and the mirrors
 *   orch__cg_close(&cg);
 *
 * What may block: nothing for long. Reads and writes of cgroupfs files
 * return at once; a v1 memory limit lower than the usage reclaims first.
 * Loop thread only (the layout is cached in a static).
 */
#ifndef ORCH_CGROUP_H
#define ORCH_CGROUP_H

#include <sys/types.h>

/* Controllers orch uses, as bits of a mask. */
enum { ORCH__CG_MEMORY, ORCH__CG_PIDS, ORCH__CG_CPU, ORCH__CG_IO, ORCH__CG_NCTL };
#define ORCH__CG_ALL ((1u << ORCH__CG_NCTL) - 1)
extern const char *const orch__cg_ctl_names[ORCH__CG_NCTL];   /* "memory", ... */
/* Controllers only v2 has, which orch enables for a new cgroup only when
 * asked to (they cost: a hugetlb css doubles the time of a mkdir): bit
 * ORCH__CG_V2ONLY + i of a `want` mask is orch__cg_v2only_names[i]. */
enum { ORCH__CG_V2ONLY = 8, ORCH__CG_NV2ONLY = 4 };
extern const char *const orch__cg_v2only_names[ORCH__CG_NV2ONLY];   /* "cpuset", ... */

/* The hierarchies of this host (all strings; "" when absent). */
typedef struct {
  char v2_mount[4096];               /* where the v2 hierarchy is mounted */
  char v2_root[4096];                /* the mount's root inside the hierarchy */
  char v1_mount[ORCH__CG_NCTL][1024];
  char v1_root[ORCH__CG_NCTL][1024];
} orch__cg_layout;

/* The layout (read once from /proc/self/mountinfo). Returns NULL and sets
 * *err (-ENOENT: no v2 hierarchy) on failure. */
const orch__cg_layout *orch__cg_layout_get(int *err);

/* orch's own cgroups are read once; this forgets them (after a fork; a
 * move of orch itself through orch__cg_add forgets them too). */
void orch__cg_forget_self(void);

/* The v2 cgroup of pid (0: orch) into buf, "/..."; 0 or -errno. With
 * ctl >= 0, the v1 cgroup of that controller (-ENOENT: none). */
int orch__cg_of(pid_t pid, int ctl, char *buf, size_t size);
/* The v2 cgroup relative paths start from: orch's own, or the one it was
 * started in when it moved itself into its leaf "supervisor" below it to
 * enable controllers there (the "no internal processes" rule). */
int orch__cg_home(char *buf, size_t size);

/* Why path is not a valid cgroup path (a message), or NULL when it is. */
const char *orch__cg_path_error(const char *path);

/* fs[0] is the v2 directory; fs[1 + c] the v1 mirror of controller c.
 * The fds held: those of the two accounting files orch__cg_usage (and
 * orch__cg_stat) read, cpu.stat and the memory figure, and of
 * cgroup.events (orch__cg_events), opened at the first read: a metrics
 * scrape of hundreds of services then costs a pread per file instead of an
 * open, a read and a close (the path walk through cgroupfs is most of it:
 * 14-17 us against 1 us for cgroup.events), and so does the emptiness check
 * before each restart; and the v2 directory, opened at the first spawn
 * into the cgroup (orch__cg_join_fds) or the first listing, with its
 * cgroup.procs, opened at the first listing (not at a spawn: the first
 * open of a new cgroup's file makes its kernfs node): a stop's listing of each cgroup is then a pread and an fstat
 * instead of six syscalls with a path walk, and cgroup.kill and
 * cgroup.freeze are opened below the held directory. The files' fds are
 * kept only while orch uses less than a quarter of its fd limit (fd number
 * below RLIMIT_NOFILE / 4), the directory's and cgroup.procs' below an
 * eighth (they are made at every start, the others once read), so a
 * supervisor of thousands of services keeps its fds; above that each use
 * opens and closes (at EMFILE with one of the runtime's spare fds, lent:
 * fdlimit.c). orch__cg_remove and orch__cg_close close them. */
typedef struct {
  char *path;                        /* v2 path, "/a/b"; NULL when closed */
  char *fs[1 + ORCH__CG_NCTL];       /* directories in the file system, or NULL */
  unsigned v2ctl;                    /* controllers enabled in v2 for it (a mask), or
                                      * ORCH__CG_V2CTL_UNREAD: orch__cg_v2ctl reads them */
  int acct[2];                       /* held cpu.stat, memory figure fds, or -1 */
  int events;                        /* held cgroup.events fd, or -1 */
  int dir, procs;                    /* held v2 directory, its cgroup.procs, or -1 */
} orch__cgroup;

/* cg->v2ctl of a cgroup made without v2 controllers: its cgroup.controllers
 * is read when first asked (orch__cg_v2ctl), not at its create. */
#define ORCH__CG_V2CTL_UNREAD (~0u)

void orch__cg_init(orch__cgroup *cg);
/* The controllers enabled in v2 for the cgroup (a mask as for
 * orch__cg_create), read from its cgroup.controllers at the first call
 * for one made without v2 controllers (0 when that read fails, and read
 * again at the next call). */
unsigned orch__cg_v2ctl(orch__cgroup *cg);
/* Makes the cgroup (and missing parents; EEXIST if it exists) with the
 * controllers of `want` (bits 1 << ORCH__CG_MEMORY..., and 1 <<
 * (ORCH__CG_V2ONLY + i)) and no other: those v2 offers orch here
 * (orch__cg_v2_offered) are enabled in the cgroup.subtree_control of
 * every cgroup from orch's own (orch__cg_home; the mount's root for a path
 * outside it) down to the new cgroup's parent, where not enabled yet;
 * orch's four that v2 does not offer get v1 mirrors now. -ENOTSUP when a
 * wanted controller is in neither; a failed enabling returns the kernel's
 * error (-EBUSY: a process is inside an ancestor; -EACCES; -EOPNOTSUPP).
 * On failure nothing made is left, and orch__cg_why says which step
 * failed. Controllers a limit needs later are enabled (or mirrored) by
 * orch__cg_set. orch never disables a controller: a cgroup it did not
 * make may use it. */
int orch__cg_create(orch__cgroup *cg, const char *path, unsigned want);
/* The step the last failed orch__cg_create or orch__cg_set failed at
 * ("io: enabling it in /a/cgroup.subtree_control"), or NULL. Loop thread. */
const char *orch__cg_why(void);
/* The controllers (a mask as for orch__cg_create) that cgroup v2 offers
 * orch's own cgroup (its cgroup.controllers): those orch can have in v2. */
unsigned orch__cg_v2_offered(void);
/* Opens an existing cgroup and the v1 mirrors that exist. */
int orch__cg_open(orch__cgroup *cg, const char *path);
/* 0 when only orch's uid or root can change the open cgroup cg and every
 * ancestor from orch's own cgroup down (or from the hierarchy's root for a
 * cgroup outside it), in v2 and in its v1 mirrors: the directories and
 * their cgroup.procs, cgroup.subtree_control and cgroup.threads owned by
 * one of them and not writable by group or others. Else -EPERM (owner) or
 * -EACCES (mode), orch__cg_why saying which ("refused: ..."). create checks
 * the same of the new cgroup's parent (and of a v1 mirror it finds made)
 * before it makes or enables anything. */
int orch__cg_trusted(const orch__cgroup *cg);
void orch__cg_close(orch__cgroup *cg);
/* rmdir of the cgroup and its mirrors (-EBUSY while populated); with
 * recursive, empty descendants first. The object stays open (its fds). */
int orch__cg_remove(orch__cgroup *cg, int recursive);

/* Moves pid into the cgroup (v1 mirrors first, then v2). */
int orch__cg_add(const orch__cgroup *cg, pid_t pid);
/* The pids in the cgroup (with recursive, in its descendants too) as a
 * malloc'ed array the caller frees. */
int orch__cg_procs(orch__cgroup *cg, int recursive, pid_t **pids, size_t *n);
/* The names of the cgroup's child cgroups, NUL-separated in a malloc'ed
 * block the caller frees; *n of them. */
int orch__cg_children(const orch__cgroup *cg, char **names, size_t *n);
/* cgroup.events: populated (this cgroup or a descendant) and frozen. */
int orch__cg_events(orch__cgroup *cg, int *populated, int *frozen);
/* Is the cgroup frozen? The answer of the last orch__cg_events, when it
 * read this cgroup less than 1 ms ago (once: the next call reads the file),
 * else read now. For the spawner's check right before a clone into it. */
int orch__cg_frozen(orch__cgroup *cg, int *frozen);
/* The same for the cgroup whose v2 directory is dir, without an object
 * (a started spawn's wait for its child's exec, spawner.c): 1 frozen (a
 * cgroup born below a frozen one says so at once), 0 not, or -errno. */
int orch__cg_dir_frozen(const char *dir);
/* Is orch itself inside the cgroup (or a descendant)? 1, 0 or -errno. */
int orch__cg_holds_self(const orch__cgroup *cg);

/* Signals every process in the cgroup and its descendants. SIGKILL writes
 * cgroup.kill when the kernel has it (unless ORCH__CG_KILL_LIST); every
 * other case lists the pids and signals each one (pinned with a pidfd, or
 * where orch is a subreaper by being orch's unreaped child, and checked to
 * still be a member; one it cannot pin is not signalled), repeated until
 * a pass finds no new pid;
 * the nskip pids in skip (signalled by the caller already) are left out of
 * a listing's signals. Refuses (-EPERM) a cgroup that holds orch. At
 * EMFILE the pidfds borrow the spare fds, and a pass pins what it can (the
 * next takes the rest; the listing that confirms the pins opens one fd at
 * a time, however deep the tree); -EMFILE when not one pid can be pinned
 * and confirmed. Returns the number of processes signalled (0 for
 * cgroup.kill: the kernel does not say), or -errno when a listed process
 * could not be signalled (nor pinned: not by its number) or the listing
 * failed; *signalled (may be NULL) is the number signalled either way. */
#define ORCH__CG_KILL_LIST 1
/* The caller knows the cgroup has no cgroup below it: its own listing
 * alone (no fstat of its directory to ask). */
#define ORCH__CG_KILL_LEAF 2
int orch__cg_kill(orch__cgroup *cg, int sig, int flags, const pid_t *skip, size_t nskip, int *signalled);
/* cgroup.freeze: 1 freezes, 0 thaws. The state is reached asynchronously
 * (cgroup.events "frozen"). Refuses (-EPERM) a cgroup that holds orch. */
int orch__cg_freeze(orch__cgroup *cg, int on);
/* cgroup.stat's nr_descendants (the live cgroups below it), or -errno. */
long long orch__cg_descendants(orch__cgroup *cg);

/* Accounting; -1 when unknown. Limits: ORCH__CG_UNLIMITED for "max". */
#define ORCH__CG_UNLIMITED (-2)
typedef struct {
  long long usage_usec, user_usec, system_usec;   /* cpu.stat (always v2) */
  long long nr_periods, nr_throttled, throttled_usec;
  long long memory_current, memory_peak, memory_max;
  long long pids_current, pids_max;
  long long oom, oom_kill;                        /* memory.events / memory.oom_control */
} orch__cg_stats;
int orch__cg_stat(orch__cgroup *cg, orch__cg_stats *st);
/* The two figures a metrics scrape wants, and nothing else: cpu.stat's
 * usage_usec (always v2) and the memory in use (v2 memory.current, or the
 * v1 mirror's memory.usage_in_bytes; -1 without memory accounting). Reads
 * through the held fds (see orch__cgroup). memory NULL: cpu.stat alone
 * (one file, one held fd). 0 or -errno (-ENODEV or -ENOENT once the
 * cgroup is removed). */
int orch__cg_usage(orch__cgroup *cg, long long *usage_usec, long long *memory);

/* Limits. value < 0 (ORCH__CG_UNLIMITED) is "max". cpu_max takes quota
 * (value) and period (arg, microseconds); the weights 1..10000. */
enum { ORCH__CG_MEMORY_MAX, ORCH__CG_MEMORY_HIGH, ORCH__CG_SWAP_MAX, ORCH__CG_PIDS_MAX,
       ORCH__CG_CPU_MAX, ORCH__CG_CPU_WEIGHT, ORCH__CG_IO_WEIGHT, ORCH__CG_NLIMITS };
extern const char *const orch__cg_limit_names[ORCH__CG_NLIMITS];   /* "memory_max", ... */
/* Writes the limit: in v2 when its controller is enabled for the cgroup,
 * or offered to orch in v2 (it is enabled then down to the cgroup's
 * parent, as orch__cg_create does), else through the v1 hierarchy.
 * -ENOTSUP when neither v2 nor a v1 hierarchy of this host offers it (v1
 * has no memory_high, swap_max nor io_weight); *where is then the reason,
 * else the file written ("memory.max" or "v1 memory.limit_in_bytes"), or
 * the step that failed. A v1 mirror missing for an opened cgroup is made,
 * and the cgroup's processes are moved into it. */
int orch__cg_set(orch__cgroup *cg, int limit, long long value, long long arg,
                 const char **where);

/* Below this fd limit (RLIMIT_NOFILE's soft value), a spawn into a cgroup
 * opens (and holds, within the budget) its cgroup.procs, and
 * orch.spawn_begin reads its cgroup.events before the clone, as orch.spawn
 * does: where fds are few, a stop at the limit must find them held. At
 * or above it (orch raises its limit at start), neither is opened by a
 * spawn: the first open of a new cgroup's file makes its kernfs node,
 * about 12 us of orch's CPU a service in a start of many. */
#define ORCH__CG_LAZY_NOFILE 4096

/* For the spawner: opens, close-on-exec, the cgroup.procs files a child
 * must write "0" to before exec to enter the cgroup (the v1 mirrors'; and
 * the v2 one, last, when v2_too), and with dirfd the v2 directory (for
 * clone3 CLONE_INTO_CGROUP): the one the cgroup holds, or a fresh one when
 * it holds none (*dir_owned true). Returns how many fds were stored in fds
 * (at most max) or -errno (nothing open then). The caller closes those of
 * fds, and *dirfd when *dir_owned, once the clone is made. */
int orch__cg_join_fds(orch__cgroup *cg, int v2_too, int *fds, int max, int *dirfd, int *dir_owned);

/* For the spawner (l_cgroup.c): the orch.Cgroup at idx, or NULL when the
 * value is not one; raises "attempt to use a closed orch.Cgroup". */
struct lua_State;
orch__cgroup *orch__cg_check(struct lua_State *L, int idx);

#endif
