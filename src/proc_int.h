/*
 * proc_int.h: what process.c (the process table, the reaper) and
 * spawner.c (the clone/exec spawner) share; internal to those two files.
 * process.c owns the per-runtime proc_state; spawner.c registers the
 * children it makes through the calls below and keeps its stacks and
 * started spawns in it.
 */
#ifndef ORCH_PROC_INT_H
#define ORCH_PROC_INT_H

#include "proc.h"
#include "exitconn.h"
#include "waitring.h"

#define ORCH__OWED 4096

typedef struct {
  orch_runtime *rt;
  uv_signal_t sigchld;
  /* Exits through pidfds: every child orch__spawn made with a pidfd has it
   * in this epoll set (data: pid and fd), watched by pidpoll; the walk over
   * all children (wait4(-1)) runs from walker, once per loop turn after
   * SIGCHLD, after the pidfd exits of that turn were reaped. */
  int epfd;                   /* -1 when pidfds are not used */
  uv_poll_t pidpoll;
  uv_check_t walker;
  /* Exits taken without reaping (defer_release): their zombies, released
   * by releaser (a prepare handle: after the loop turn's tasks). */
  uv_prepare_t releaser;
  pid_t *late_pids;
  size_t nlate, late_cap;
  uv_timer_t late;            /* the late walk (see on_sigchld) */
  int haspoll;                /* pidpoll was made */
  int nopen;                  /* handles not closed yet (at the end) */
  size_t npidfd;              /* children with a pidfd */
  /* Exits through io_uring waits (waitring.c, Linux 6.7): every child
   * registered in the table has one wait in the ring (no fd a child),
   * whose completion ringpoll hears of; preferred to pidfds when the
   * kernel has it. */
  orch__waitring *ring;       /* NULL when not used */
  uv_poll_t ringpoll;
  int hasring;                /* ringpoll was made */
  size_t nwait;               /* registered children with a wait in the ring */
  /* Exits through the proc connector (exitconn.c): one socket hears of
   * the exit of each child, watched by connpoll and drained at each
   * SIGCHLD; the pids it names, and those that SIGCHLD records name, wait
   * in gone until reaped by pid. Preferred to the ring where the kernel
   * lets orch subscribe (no pending wait a child). */
  orch__exitconn *conn;       /* NULL when not used */
  uv_poll_t connpoll;
  int hasconn;                /* connpoll was made */
  pid_t *gone;                /* pids said to have ended, not reaped yet */
  pid_t reaped[ORCH__OWED];   /* pids reaped whose event may still come (by
                               * pid % ORCH__OWED, 0: empty) */
  size_t ngone, gone_cap;
  int conn_lost;              /* events were lost: a walk is due */
  unsigned long long conn_exits, overflows;
  int mode;                   /* ORCH_REAPER: 0 every way, 1 no ring (nor
                               * connector), 2 the walk only, 3 no connector */
  /* Whether a SIGCHLD needs the walk (see explained()). */
  unsigned long tail;         /* the next record of the SIGCHLD ring to read */
  unsigned long ncb, nrec;    /* SIGCHLDs delivered, their records read */
  pid_t owed[ORCH__OWED];     /* pids reaped through a pidfd or the ring
                               * whose SIGCHLD record may still come (by
                               * pid % ORCH__OWED, 0: empty) */
  int pidfds_off;             /* a child could not get a pidfd: none for any */
  int stops;                  /* a child stopped or continued once */
  unsigned long long walks, late_walks, pidfd_exits, walk_exits, ring_exits;  /* orch.proc.reaper */
  unsigned long long signals; /* SIGCHLDs through libuv's handler (on_sigchld) */
  orch__child **buckets;
  size_t mask;                /* nbuckets - 1 */
  size_t count;
  char *stack;                /* the spawner's child stack, made on first use */
  orch__spawn_job *jobs;      /* started spawns not settled yet (the callers') */
  char *stacks[4];            /* their stacks, kept for the next ones */
  int nstacks;
  int slots[6];               /* low fds (/dev/null when idle) into which a
                               * spawn moves its child's high-numbered fds */
  int nslots;                 /* made (at the first spawn), or -1: none */
  int jslots[4][4];           /* the started spawns' sets of such slots */
  int njsets;                 /* made (at the first started spawn), or -1 */
  unsigned jbusy;             /* the sets a pending job holds (bits) */
  int devnull;                /* cached /dev/null (close-on-exec) or -1 */
  orch__orphan_fn on_orphan;  /* adopted orphans' statuses go here */
  void *orphan_data;
  int init_on;                /* init mode forwards signals (l_daemon.c) */
  unsigned long long serial;  /* the last orch__child.serial given */
  struct kept_exit *kept;     /* exits kept for group waits, oldest first */
  struct kept_exit **kept_tail;
  size_t nkept;
  orch__group_wait waits;     /* group waits, oldest first (a ring; this is
                               * its head, never a wait) */
} proc_state;

/* process.c */
proc_state *orch__proc_state(orch_runtime *rt);
proc_state *orch__proc_need(orch_runtime *rt);   /* made if not yet (the first child) */
void orch__proc_table_add(proc_state *st, orch__child *c);
int orch__proc_pidfd_wanted(proc_state *st);     /* whether a spawn asks for a pidfd */
void orch__proc_pidfd_watch(proc_state *st, orch__child *c, int pidfd);
unsigned long long orch__proc_boot_ns(void);

/* spawner.c */
void orch__spawner_settle(proc_state *st);       /* every started spawn settles */
void orch__spawner_close(proc_state *st);        /* the runtime closes */
void orch__spawner_fork(proc_state *st);         /* in a fork child */

#endif
