/*
 * proc.h: the process table, the spawner and the safe kill (src/process.c),
 * for modules that start or watch processes from C (the bindings l_proc.c,
 * spawn.c and l_daemon.c, the supervisor, watchdog, ctl).
 *
 * One owner reaps every child (src/process.c) and hands each status to the
 * orch__child registered for that pid (stops and continues to its on_stop;
 * unknown pids are adopted orphans, reported to orch.proc.on_orphan_exit
 * handlers). A child orch__spawn made is reaped through its pidfd, without
 * the kernel's walk over all of orch's children; everything else (stops,
 * continues, orphans, forks, children without a pidfd) by a wait4(-1,
 * WNOHANG | WUNTRACED | WCONTINUED) walk after SIGCHLD. Never call
 * waitpid/wait4 elsewhere, and never use uv_spawn: either would steal
 * statuses from this table.
 *
 * Usage from C:
 *
 *   struct my_svc { orch__child child; ... };
 *   static int my_exit(orch__child *c, int status, const struct rusage *ru) {
 *     struct my_svc *s = (struct my_svc *)c;   // child is the first member
 *     ... WIFEXITED(status) ...                // runs on the loop thread
 *     return 1;                                // reported: no group wait gets it
 *   }
 *   char *argv[] = { "sleep", "10", NULL };
 *   orch__spawn_req req = { .file = "sleep", .argv = argv, .search = 1,
 *                           .flags = ORCH__SPAWN_PGROUP };
 *   s->child.on_exit = my_exit;
 *   const char *step;
 *   int pid = orch__spawn(rt, &req, &s->child, &step);  // pid or -errno
 *
 * While registered, a child holds the loop alive. The callback runs once,
 * after the child has been removed from the table; it may spawn again.
 */
#ifndef ORCH_PROC_H
#define ORCH_PROC_H

#include <sched.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "runtime.h"

typedef struct orch__child orch__child;
/* Returns non-zero when the exit was reported to someone (a task waiting
 * for this very child, an exit handler); zero keeps it for a group wait. */
typedef int (*orch__child_exit_fn)(orch__child *c, int status, const struct rusage *ru);

struct orch__child {
  pid_t pid;                      /* set by orch__spawn / before orch__child_add */
  int group;                      /* leads its process group (set by orch__spawn
                                   * for PGROUP/SETSID): signalled as a group */
  pid_t pgid;                     /* the process group it was started in (set
                                   * by orch__spawn; before orch__child_add) */
  orch__child_exit_fn on_exit;    /* called once with the wait status */
  /* Optional: called instead when the table forgets the child without a
   * status (in a fork child, where it is the parent's). */
  void (*on_forget)(orch__child *c);
  /* Optional: called when the child stops (WIFSTOPPED(status): SIGSTOP,
   * SIGTSTP, ...) or continues (WIFCONTINUED). It stays registered. */
  void (*on_stop)(orch__child *c, int status);
  /* Its start time (/proc/PID/stat's, clock ticks since boot) when
   * orch__spawn could tell it without reading /proc, else 0. */
  unsigned long long start_ticks;
  orch__child *next;              /* private: hash chain */
  unsigned long long serial;      /* private: which kept exit is this child's */
  int pidfd;                      /* private: its pidfd in the reaper's epoll
                                   * set (orch__spawn's children), or -1 */
  int sig_seen;                   /* private: its exit's SIGCHLD was read */
  int ring_wait;                  /* private: a wait for its exit is in the
                                   * reaper's io_uring ring */
  /* Set by the owner when nothing runs at once with the exit's status
   * (its callbacks are queued tasks): then, with the connector, the exit
   * is taken without reaping the child (waitid's WNOWAIT), and its zombie
   * released after the loop turn's callbacks, so that a restart's clone3
   * in them does not wait for the kernel's release (release_task: 10-35
   * us, the most of it dropping the pid's /proc entries). Not for a child
   * orch signalled (orch__proc_signalled): a stop's exits each take one
   * system call, as before. */
  int defer_release;
  int signalled;                  /* private: see orch__proc_signalled */
};

/* The runtime's process table and SIGCHLD watcher, made once (the first
 * binding module that needs them calls this, else the first orch__spawn or
 * orch__child_add). Returns 0 or a UV_ error. */
int orch__proc_open(orch_runtime *rt, uv_loop_t *loop);

/* Collects the statuses already waiting (children that ended before the
 * watcher was started). */
void orch__proc_reap(orch_runtime *rt);

/* What the reaper did (orch.proc.reaper): children registered, those with
 * a pidfd, those with a wait in the io_uring ring, walks made (wait4(-1)
 * until it returned 0), late walks (a second after a SIGCHLD that needed
 * none), exits reaped through a pidfd, through the ring, by pid after the
 * proc connector's event (or the SIGCHLD's record) and by a walk; the
 * connector's datagrams read and its overflows (events lost); the late
 * walk's delay (it grows with the number of children); how it
 * watches exits ("connector", "ring", "pidfd" or "walk"); the SIGCHLDs
 * that woke the loop (with the connector, an exit's does not: its event
 * does). */
typedef struct {
  size_t children, pidfds, waits;
  unsigned long long walks, late_walks, pidfd_exits, walk_exits, ring_exits;
  unsigned long long connector_exits, events, overflows;
  unsigned long long signals;          /* SIGCHLDs that woke the loop */
  unsigned long long late_ms;          /* the late walk's delay now */
  const char *mode;
} orch__reaper_stats;
void orch__proc_reaper_stats(orch_runtime *rt, orch__reaper_stats *s);

/* Where the statuses of children nobody registered (adopted orphans) go:
 * one callback a runtime (l_proc.c's orch.proc.on_orphan_exit). */
typedef void (*orch__orphan_fn)(orch_runtime *rt, pid_t pid, int status, void *data);
void orch__proc_on_orphan(orch_runtime *rt, orch__orphan_fn fn, void *data);

/* orch makes itself a child subreaper (on) or not, right before its
 * prctl(2) PR_SET_CHILD_SUBREAPER (orch.proc.subreaper): once it has been
 * one, every SIGCHLD walks, since an adopted orphan's exit may hide behind
 * any of them. The reaper reads the attribute itself (and whether orch is
 * pid 1) only at its first SIGCHLD and at the first after a fork. */
void orch__proc_subreaper(int on);

/* Whether orphans may be adopted (orch is pid 1, or has been a subreaper):
 * the reaper's own cached answer, read at most once between forks. */
int orch__proc_adopts(void);

/* A cached /dev/null (O_RDWR, close-on-exec) for children's stdio, or
 * -errno. */
int orch__proc_devnull(orch_runtime *rt);

/* Flags of orch__spawn_req. */
#define ORCH__SPAWN_PGROUP  0x01  /* setpgid(0, 0): its own process group */
#define ORCH__SPAWN_SETSID  0x02  /* setsid(): new session and group */
#define ORCH__SPAWN_SETUID  0x04  /* uid is valid */
#define ORCH__SPAWN_SETGID  0x08  /* gid is valid */
#define ORCH__SPAWN_UMASK   0x10  /* umask is valid */
#define ORCH__SPAWN_GROUPS  0x20  /* groups/ngroups are valid (setgroups) */
#define ORCH__SPAWN_CGROUP  0x40  /* cgroup_dir is valid (clone3 CLONE_INTO_CGROUP) */
#define ORCH__SPAWN_NICE    0x80  /* nice is valid (setpriority) */
#define ORCH__SPAWN_AFFINITY 0x100 /* affinity is valid (sched_setaffinity) */
#define ORCH__SPAWN_IOPRIO  0x200 /* ioprio is valid (ioprio_set) */
#define ORCH__SPAWN_CGROUP_NOFD 0x400 /* with ORCH__SPAWN_CGROUP: cgroup_fds has
                                       * no v2 cgroup.procs fd (clone3 is known
                                       * to work: orch__spawn_into_cgroup_works) */
#define ORCH__SPAWN_JOIN_PGROUP 0x800 /* setpgid(0, pgid): join that group */

typedef struct { int resource; struct rlimit lim; } orch__rlimit;
typedef struct { int target, source; } orch__fdmap;

typedef struct {
  const char *file;          /* program: a path, or a name looked up in `search_path` */
  char *const *argv;         /* NULL-terminated; argv[0] is what the child sees */
  char *const *envp;         /* NULL: orch's environment */
  int search;                /* look `file` up when it has no '/' */
  const char *search_path;   /* NULL: $PATH, else "/usr/local/bin:/usr/bin:/bin" */
  const char *cwd;           /* NULL: inherit */
  int flags;
  uid_t uid;
  gid_t gid;
  const gid_t *groups;
  int ngroups;
  mode_t umask;
  const orch__rlimit *rlimits;
  int nrlimits;
  /* Scheduling, set after the rlimits and before the credentials change (so
   * root may give a service a negative nice, then drop its rights): */
  int nice;                  /* -20..19: setpriority(PRIO_PROCESS, 0, nice) */
  const cpu_set_t *affinity; /* sched_setaffinity(0, sizeof *affinity, affinity) */
  int ioprio;                /* ioprio_set(IOPRIO_WHO_PROCESS, 0, ioprio):
                              * class << 13 | level */
  pid_t pgid;                /* ORCH__SPAWN_JOIN_PGROUP: the group to join */
  /* The child's fds: target <- source (dup2). fds 0-2 not listed are
   * inherited; every other fd of orch is close-on-exec. Sources may be any
   * fd of the parent, including other targets' numbers. At most 256. */
  const orch__fdmap *fds;
  int nfds;
  /* cgroup.procs files (O_WRONLY) the child writes "0" to first, so that it
   * runs in those cgroups before anything else (orch__cg_join_fds). With
   * ORCH__SPAWN_CGROUP the last one is the v2 cgroup's (none with
   * ORCH__SPAWN_CGROUP_NOFD), and the child is born in cgroup_dir (clone3
   * CLONE_INTO_CGROUP) instead of writing it when the kernel can (Linux 5.7,
   * x86-64 here). */
  const int *cgroup_fds;
  int ncgroup_fds;
  int cgroup_dir;
} orch__spawn_req;

/* Spawns a child (clone(CLONE_VM|CLONE_VFORK): the parent is suspended until
 * the child execs or fails; no Lua, no malloc in the child). On success
 * registers c (c->pid set) and returns the pid. On failure returns -errno and
 * sets *step to what failed: "exec", "cgroup", "chdir", "setuid", "setgid",
 * "setgroups", "setrlimit", "setpriority", "sched_setaffinity", "ioprio_set",
 * "setsid", "setpgid", "dup", "clone". Sets c->pgid. Nothing is
 * registered then and the failed child is already reaped. Loop thread only. */
/* A started spawn (orch__spawn_start): the caller's memory, which must
 * stay where it is, with the request it was started with and everything
 * that request points to, until orch__spawn_settle (or the reaper) settled
 * it. The fields are private. */
typedef struct orch__spawn_job orch__spawn_job;
struct orch__spawn_job {
  const orch__spawn_req *req;
  const char *path;               /* search path, or NULL for no search */
  volatile int err;               /* the child's failure (errno), its step */
  const char *volatile step;
  int ncg;                        /* how many of req->cgroup_fds to write */
  int cleared;                    /* born with CLONE_CLEAR_SIGHAND */
  int files_below;                /* born sharing orch's fd table (CLONE_FILES):
                                   * its own copy keeps the fds below this */
  volatile int files_failed;      /* that copy was refused */
  int nign;                       /* how many ignored signals to reset */
  const struct rlimit *nofile;    /* RLIMIT_NOFILE to give back, or NULL */
  volatile unsigned long long born;   /* CLOCK_BOOTTIME, the child's first act */
  unsigned long long born0;       /* CLOCK_BOOTTIME before the clone */
  volatile int tid;               /* 1 until the child's exec or exit */
  const char *frozen_dir;         /* the cgroup (its v2 directory) the child
                                   * was born in unread: a wait for its exec
                                   * reads its cgroup.events (see spawner.c) */
  int frozen;                     /* killed there, frozen: the spawn fails */
  int pidfd;                      /* CLONE_PIDFD's, or -1 */
  int state;
  pid_t pid;
  char *stack;
  orch__child *child;
  orch__spawn_job *next, **pprev;
  /* Born sharing orch's fd table (see spawner.c, "A started spawn's
   * fds"): the request as the child sees it, its fds dup'ed into a set of
   * low slots that the job holds until it settles (-1: none held). */
  orch__spawn_req freq;
  orch__fdmap fmap[4];
  int fcg[4];
  int slotset, nmoved;
  int files_unshared;             /* the child copied the whole table instead
                                   * (unshare(CLONE_FILES)) */
};

/* Starts a spawn without waiting for the child's exec: clone3 with CLONE_VM
 * but not CLONE_VFORK, the child on a stack of its own, making only raw
 * system calls (x86-64, Linux 5.5+). Returns the child's pid (the spawn is
 * pending: settle it), -ENOSYS where this cannot be done (use orch__spawn;
 * nothing was started), or another -errno with *step "clone" (nothing was
 * started). c is registered when the spawn settles, before the reaper takes
 * any status (the reaper settles every pending spawn first). Loop thread. */
int orch__spawn_start(orch_runtime *rt, const orch__spawn_req *req, orch__spawn_job *job,
                      orch__child *c, const char **step);
/* Waits for a pending spawn's child to exec or fail (as long as orch__spawn
 * would have waited), if it has not yet. Returns what orch__spawn would have
 * returned: the pid (c registered) or -errno and *step. Any number of times. */
int orch__spawn_settle(orch_runtime *rt, orch__spawn_job *job, const char **step);
/* Whether a job was started and has not settled yet. */
int orch__spawn_pending(const orch__spawn_job *job);

/* 1 once a spawn was born in its cgroup through clone3 CLONE_INTO_CGROUP
 * (the child then never needs the v2 cgroup.procs fd of the fallback). */
int orch__spawn_into_cgroup_works(void);
int orch__spawn(orch_runtime *rt, const orch__spawn_req *req, orch__child *c,
                const char **step);

/* Tracks a child created some other way (fork): its status goes to c. */
void orch__child_add(orch_runtime *rt, orch__child *c);
/* Stops tracking c (its status will then be reported as an orphan's). */
void orch__child_remove(orch_runtime *rt, orch__child *c);
orch__child *orch__child_find(orch_runtime *rt, pid_t pid);
/* The start time of pid, a child orch__spawn made and nothing reaped yet
 * (its pid cannot have been reused): 0 and *t, or -ENOENT when unknown. */
int orch__child_start_time(orch_runtime *rt, pid_t pid, unsigned long long *t);

/* ---- Group waits: waitpid(-pgid), waitpid(-1) over the table --------
 *
 * The reaper takes every status at once, so a group wait is answered from
 * the table: each child carries the group it was started in (pgid), and an
 * exit nobody was told of (on_exit returned 0) goes to the oldest group
 * wait for its group (or for any child), or is kept, in exit order, for the
 * next one to ask (at most ORCH__KEPT_EXITS; past that the oldest is
 * forgotten). Each exit is handed to one group wait at most, as the kernel
 * reaps a child once. Loop thread only. */
#define ORCH__WAIT_ANY (-1)
#define ORCH__KEPT_EXITS 65536

typedef struct orch__group_wait orch__group_wait;
struct orch__group_wait {
  pid_t pgid;                     /* a process group (> 0) or ORCH__WAIT_ANY */
  /* Called once, then w is forgotten: pid > 0 with its wait status, or
   * pid 0 when no child that could answer is left (ECHILD). May run Lua. */
  void (*done)(orch__group_wait *w, pid_t pid, int status);
  orch__group_wait *prev, *next;  /* private */
};

/* Takes the oldest kept exit of group pgid (ORCH__WAIT_ANY: of any child):
 * returns its pid (> 0) and sets *status; 0 when none is kept but a child
 * of that group is still registered (wait: orch__proc_group_wait); -ECHILD
 * when there is neither. */
int orch__proc_take_exit(orch_runtime *rt, pid_t pgid, int *status);
/* Waits for the next exit of w->pgid (call after take_exit returned 0). */
void orch__proc_group_wait(orch_runtime *rt, orch__group_wait *w);
/* Forgets a wait that was not done yet (a timeout, a cancelled task). */
void orch__proc_group_cancel(orch__group_wait *w);
/* c's exit was reported after all (p:wait() after the exit): it is no
 * longer kept for a group wait. */
void orch__proc_exit_seen(orch_runtime *rt, orch__child *c);

/* orch sent pid a signal (p:kill, orch.kill, orch.killpg of the group it
 * leads): its exit, when it is a registered child's, is reaped at once
 * (no defer_release: a stop's exits are not restarts). */
void orch__proc_signalled(orch_runtime *rt, pid_t pid);

/* Reaps now the zombies whose exits were taken and whose release waits
 * for the loop turn's end (defer_release): before an exec, whose new
 * program would find them as children it knows nothing of. */
void orch__proc_release(orch_runtime *rt);
/* The same for one pid (p:wait() of an exit taken already: the process is
 * reaped when the wait returns). */
void orch__proc_release_pid(orch_runtime *rt, pid_t pid);

/* Sends sig to pid, or to the process group pid with ORCH__KILL_GROUP.
 * Refuses pid <= 1, orch itself (its pid or one of its threads' ids) and
 * orch's own process group (returns
 * ORCH__KILL_REFUSED). With start_time != 0 the pid must still be the process
 * that started at that time (clock ticks since boot, as orch__procfs_start_time
 * reports); the check and the signal are atomic (pidfd), and a mismatch
 * returns -ESRCH. Returns 0 or -errno. ORCH__KILL_CHILD says pid is a
 * child orch spawned and has not reaped (its own group leader with
 * ORCH__KILL_GROUP): none of the refusals can apply, and the checks (a
 * getpid and a /proc/self/task lookup per call) are skipped. */
#define ORCH__KILL_GROUP 1
#define ORCH__KILL_CHILD 2
#define ORCH__KILL_REFUSED (-100000)
int orch__kill(pid_t pid, int sig, int flags, unsigned long long start_time);

/* [-0,+3] Pushes the error triple for an orch__kill result r < 0 and returns
 * 3 (e.g. nil, "kill: refusing to signal pid 1", "EPERM"). */
int orch__kill_fail(lua_State *L, const char *op, pid_t pid, int flags, int r);

/* orch.proc.start_time([pid]) (procscan.c): the start time of pid (default:
 * orch) in clock ticks since boot. orch.heartbeat.start_time is this same
 * function. */
int orch__proc_start_time(lua_State *L);

/* Adds procscan.c's functions (info, start_time, wait_exit, list,
 * subreaper, children, sockets, tcp_listeners, is_child, user_ids,
 * can_access, read_pidfile) to the table at the top of the stack (orch.proc). */
void orch__procscan_register(lua_State *L);

/* Sends sig to every child in the process table (to its whole group when
 * it leads one). Returns how many were signalled. For orch.signal.protect's
 * TERM/INT rule. */
int orch__proc_signal_children(orch_runtime *rt, int sig);

/* Non-zero while orch.proc.init_mode forwards signals (the guard of
 * orch.signal.protect then leaves TERM/INT to it); l_daemon.c sets it. */
int orch__proc_init_active(orch_runtime *rt);
void orch__proc_set_init_active(orch_runtime *rt, int on);

/* ---- Shared by the spawner and orch.exec (both async-signal-safe) ---- */

#define ORCH__DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

/* Tries file in each directory of path like execvp (no /bin/sh fallback);
 * path NULL or a file with a '/': file itself. Returns only on failure, with
 * errno set. */
void orch__exec_search(const char *file, const char *path, char *const argv[],
                       char *const envp[]);

/* The kernel's struct sigaction, opaque: all zeroes (orch__ksa_default) is
 * SIG_DFL with no flags and an empty mask whatever the architecture's
 * layout. orch__raw_sigaction is rt_sigaction(2) without libc. */
typedef struct { unsigned long w[8]; } orch__ksigaction;
extern const orch__ksigaction orch__ksa_default;
int orch__raw_sigaction(int sig, const orch__ksigaction *act, orch__ksigaction *old);

/* Tells the spawner that orch now ignores sig (SIG_IGN): a child is born
 * with its handlers reset by the kernel (CLONE_CLEAR_SIGHAND), which keeps
 * ignored signals ignored, so the child resets the ones orch ignores
 * itself. Whoever sets SIG_IGN in orch calls this. */
void orch__proc_ignored(int sig);

/* ---- Between the binding files (l_proc.c for l_daemon.c) ------------- */

/* [-0,+1] A new orch.Process (not started), anchored so it cannot be
 * collected while it may report; returns its child. */
orch__child *orch__process_new(lua_State *L);
/* The orch.Process at idx is the running child pid (a fork's): registered
 * in the table. With pid <= 0 nothing was started: the anchor goes. */
void orch__process_track(lua_State *L, int idx, pid_t pid);

/* Non-zero while a handler of the script's (orch.signal.on) is active for
 * sig: init mode then does not forward it (l_signal.c). */
int orch__signal_handled(orch_runtime *rt, int sig);

#endif
