/*
 * process.c: the process mechanism behind proc.h: the process table, the
 * SIGCHLD reaper, the clone/exec spawner and the safe kill. Its users are the
 * bindings (spawn.c and l_proc.c: orch.spawn and orch.Process; l_daemon.c:
 * orch.fork, orch.exec, init mode) and any C module that starts or watches
 * processes.
 *
 * Ownership: this file is the only reaper of the process (see proc.h). The
 * per-runtime proc_state holds one unref'd SIGCHLD uv_signal_t whose
 * callback loops wait4(-1, WNOHANG | WUNTRACED | WCONTINUED) and dispatches
 * each status (an exit, a stop or a continue) to the
 * orch__child registered for that pid in a hash table; unknown pids are
 * adopted orphans, handed to the one orphan callback (l_proc.c's). A
 * registered child holds the loop (orch__hold). The children themselves
 * (orch__child) belong to their callers. Group waits (waitpid(-pgid) over
 * the table) are answered here too: the exits nobody was told of are kept
 * (malloc'ed records, freed when taken, seen or forgotten), and the waits
 * themselves belong to their callers.
 *
 * Spawning: clone3(CLONE_VM|CLONE_VFORK|CLONE_CLEAR_SIGHAND) on a private
 * stack (clone(2) where clone3 or the flag is missing). The child only
 * makes system calls (no Lua, no malloc, no locks), has every signal at its
 * default (the kernel resets the handlers; the child, the signals orch may
 * ignore, or all of them after a plain clone), unblocks them right before
 * exec, and reports a failure by
 * writing errno into memory it shares with the suspended parent (which is
 * what a close-on-exec error pipe would carry, without the fd and the three
 * extra system calls). Credentials change with raw system calls: glibc's
 * setuid() would broadcast to the parent's threads, whose memory we share.
 * A started spawn (orch__spawn_start, for orch.spawn_begin) is the same
 * child without CLONE_VFORK: orch goes on while it runs in orch's memory,
 * so the child writes nothing of orch's (no errno: every call is a raw
 * system call on x86-64, the only place this is done), and the job, its
 * stack and its request stay put until the kernel's CLONE_CHILD_CLEARTID
 * futex says the child has exec'd or exited; the job then settles (the
 * child registered, or reaped), at the latest when the reaper runs.
 *
 * No Lua here. What may block: nothing (the parent is suspended only until
 * the child has exec'd or failed; /proc reads of the safe kill are short).
 */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "procfs.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
/* A spawned child leaves its frames on the shared stack when it execs, and
 * AddressSanitizer's shadow of them (scopes, redzones) with them. */
#define UNPOISON_STACK(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define UNPOISON_STACK(p, n) ((void)0)
#endif

extern char **environ;

#define DEFAULT_PATH ORCH__DEFAULT_PATH
#define CHILD_STACK (256 * 1024)
#define MAX_FDMAP 256

/* ---------------------------------------------------------------- state */

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
  int haspoll;                /* pidpoll was made */
  int nopen;                  /* handles not closed yet (at the end) */
  size_t npidfd;              /* children with a pidfd */
  /* Whether a SIGCHLD needs the walk (see explained()). */
  unsigned long tail;         /* the next record of the SIGCHLD ring to read */
  unsigned long ncb, nrec;    /* SIGCHLDs delivered, their records read */
  pid_t owed[256];            /* pids reaped through a pidfd whose SIGCHLD
                               * record may still come (a ring, 0: empty) */
  unsigned nowed;
  int pidfds_off;             /* a child could not get a pidfd: none for any */
  int orphans;                /* orch was a subreaper (or is pid 1): orphans
                               * may be adopted at any time */
  int stops;                  /* a child stopped or continued once */
  unsigned long long walks, pidfd_exits, walk_exits;  /* orch.proc.reaper */
  orch__child **buckets;
  size_t mask;                /* nbuckets - 1 */
  size_t count;
  char *stack;                /* the spawner's child stack, made on first use */
  orch__spawn_job *jobs;      /* started spawns not settled yet (the callers') */
  char *stacks[4];            /* their stacks, kept for the next ones */
  int nstacks;
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

/* An exit nobody was told of, kept for the next group wait that asks. */
typedef struct kept_exit {
  struct kept_exit *next;
  pid_t pid, pgid;
  int status;
  unsigned long long serial;
} kept_exit;

static proc_state *get_state(orch_runtime *rt) {
  return *orch__slot(rt, ORCH__SLOT_PROC);
}

static void table_grow(proc_state *st) {
  size_t n = (st->mask + 1) * 2;
  orch__child **b = calloc(n, sizeof *b);
  if (!b) return;                       /* longer chains, still correct */
  for (size_t i = 0; i <= st->mask; i++) {
    orch__child *c = st->buckets[i];
    while (c) {
      orch__child *next = c->next;
      size_t k = (size_t)c->pid & (n - 1);
      c->next = b[k];
      b[k] = c;
      c = next;
    }
  }
  free(st->buckets);
  st->buckets = b;
  st->mask = n - 1;
}

static void table_add(proc_state *st, orch__child *c) {
  if (st->count >= (st->mask + 1) * 2) table_grow(st);
  c->serial = ++st->serial;
  size_t k = (size_t)c->pid & st->mask;
  c->next = st->buckets[k];
  st->buckets[k] = c;
  st->count++;
  orch__hold(st->rt, 1);
}

/* c no longer has a pidfd: out of the epoll set (explicitly: a fork child
 * may still hold a copy of the fd, which would keep it in the set), closed. */
static void pidfd_drop(proc_state *st, orch__child *c) {
  if (c->pidfd < 0) return;
  epoll_ctl(st->epfd, EPOLL_CTL_DEL, c->pidfd, NULL);
  close(c->pidfd);
  c->pidfd = -1;
  st->npidfd--;
}

/* Whether one more pidfd fits: pidfds take at most a quarter of the soft
 * RLIMIT_NOFILE, and none of the last 1/64 of it (64 fds at least), whose
 * numbers are the services' (their pipes, sockets and files) and orch's
 * own. A service's output alone costs orch one or two fds: under this
 * machine's limit of 20,000, 10,000 services leave no room for a pidfd
 * each (5,000 get one), where the usual hard limits (524,288 or more)
 * leave plenty. */
static int pidfd_fits(proc_state *st, int pidfd) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return 0;
  if (rl.rlim_cur == RLIM_INFINITY) return 1;
  rlim_t spare = rl.rlim_cur / 64 < 64 ? 64 : rl.rlim_cur / 64;
  return st->npidfd < rl.rlim_cur / 4 && (rlim_t)pidfd + spare < rl.rlim_cur;
}

/* A child left without a pidfd makes every SIGCHLD walk (explained): the
 * other children's pidfds then save nothing, and every later spawn pays for
 * them, since its clone copies orch's fd table (at 10,000 services under a
 * limit of 20,000, 5,000 pidfds took a start of all from 4.1 to 10.0 s of
 * orch's CPU). So they are all closed, and none is made until the children
 * are down to an eighth of the limit. */
static void pidfds_drop(proc_state *st) {
  st->pidfds_off = 1;
  for (size_t k = 0; st->npidfd > 0 && k <= st->mask; k++)
    for (orch__child *c = st->buckets[k]; c; c = c->next) pidfd_drop(st, c);
}

/* Whether a spawn asks the kernel for its child's pidfd. */
static int pidfd_wanted(proc_state *st) {
  if (st->epfd < 0) return 0;
  if (st->pidfds_off) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rl.rlim_cur == RLIM_INFINITY || st->count < rl.rlim_cur / 8))
      st->pidfds_off = 0;
  }
  return !st->pidfds_off;
}

/* c was born with pidfd: its exit is watched through it, or, when the fd
 * does not fit (pidfd_fits), left to the walk. */
static void pidfd_watch(proc_state *st, orch__child *c, int pidfd) {
  if (!pidfd_fits(st, pidfd)) { close(pidfd); pidfds_drop(st); return; }
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.u64 = (uint64_t)(uint32_t)c->pid | (uint64_t)(uint32_t)pidfd << 32;
  if (epoll_ctl(st->epfd, EPOLL_CTL_ADD, pidfd, &ev) < 0) { close(pidfd); return; }
  c->pidfd = pidfd;
  c->sig_seen = 0;
  st->npidfd++;
}

/* Unlinks and returns the child registered for pid, or NULL. */
static orch__child *table_take(proc_state *st, pid_t pid, orch__child *want) {
  orch__child **pp = &st->buckets[(size_t)pid & st->mask];
  for (; *pp; pp = &(*pp)->next) {
    orch__child *c = *pp;
    if (c->pid == pid && (!want || c == want)) {
      *pp = c->next;
      c->next = NULL;
      st->count--;
      pidfd_drop(st, c);
      orch__hold(st->rt, -1);
      return c;
    }
  }
  return NULL;
}

void orch__child_add(orch_runtime *rt, orch__child *c) {
  c->start_ticks = 0;
  c->pidfd = -1;
  proc_state *st = get_state(rt);
  if (st) table_add(st, c);
}

/* No group wait is ended here (it would run Lua): the only caller that
 * forgets a running child is its object's __gc, when the Lua state closes. */
void orch__child_remove(orch_runtime *rt, orch__child *c) {
  proc_state *st = get_state(rt);
  if (st) table_take(st, c->pid, c);
}

orch__child *orch__child_find(orch_runtime *rt, pid_t pid) {
  proc_state *st = get_state(rt);
  if (!st) return NULL;
  for (orch__child *c = st->buckets[(size_t)pid & st->mask]; c; c = c->next)
    if (c->pid == pid) return c;
  return NULL;
}

/* ---------------------------------------------------------------- group waits */

static int in_group(pid_t want, pid_t pgid) {
  return want == ORCH__WAIT_ANY || want == pgid;
}

static void wait_unlink(orch__group_wait *w) {
  w->prev->next = w->next;
  w->next->prev = w->prev;
  w->prev = w->next = w;               /* unlinking again does nothing */
}

/* Whether a registered child was started in group pgid. A scan of the
 * table, made only while group waits wait or when one starts. */
static int group_alive(proc_state *st, pid_t pgid) {
  if (pgid == ORCH__WAIT_ANY) return st->count > 0;
  for (size_t i = 0; i <= st->mask; i++)
    for (orch__child *c = st->buckets[i]; c; c = c->next)
      if (c->pgid == pgid) return 1;
  return 0;
}

/* Ends (ECHILD) each wait whose group has no registered child left: its
 * last one was reported to someone else, or forgotten. A done function may
 * run Lua that adds or cancels waits: start over after each. */
static void groups_check(proc_state *st) {
  for (;;) {
    orch__group_wait *w = st->waits.next;
    while (w != &st->waits && group_alive(st, w->pgid)) w = w->next;
    if (w == &st->waits) return;
    wait_unlink(w);
    w->done(w, 0, 0);
  }
}

static void kept_drop(proc_state *st, kept_exit **pp) {
  kept_exit *k = *pp;
  *pp = k->next;
  if (st->kept_tail == &k->next) st->kept_tail = pp;
  st->nkept--;
  free(k);
}

/* An exit nobody was told of: to the oldest wait for its group, or kept. */
static void exit_offer(proc_state *st, pid_t pid, pid_t pgid, int status,
                       unsigned long long serial) {
  for (orch__group_wait *w = st->waits.next; w != &st->waits; w = w->next) {
    if (!in_group(w->pgid, pgid)) continue;
    wait_unlink(w);
    w->done(w, pid, status);
    return;
  }
  if (st->nkept >= ORCH__KEPT_EXITS) kept_drop(st, &st->kept);
  kept_exit *k = malloc(sizeof *k);
  if (!k) return;                       /* the exit is lost to group waits only */
  k->next = NULL;
  k->pid = pid;
  k->pgid = pgid;
  k->status = status;
  k->serial = serial;
  *st->kept_tail = k;
  st->kept_tail = &k->next;
  st->nkept++;
}

int orch__proc_take_exit(orch_runtime *rt, pid_t pgid, int *status) {
  proc_state *st = get_state(rt);
  if (!st) return -ECHILD;
  for (kept_exit **pp = &st->kept; *pp; pp = &(*pp)->next) {
    if (!in_group(pgid, (*pp)->pgid)) continue;
    pid_t pid = (*pp)->pid;
    *status = (*pp)->status;
    kept_drop(st, pp);
    return pid;
  }
  return group_alive(st, pgid) ? 0 : -ECHILD;
}

void orch__proc_group_wait(orch_runtime *rt, orch__group_wait *w) {
  proc_state *st = get_state(rt);
  w->prev = w->next = w;
  if (!st) return;
  w->prev = st->waits.prev;
  w->next = &st->waits;
  st->waits.prev->next = w;
  st->waits.prev = w;
}

void orch__proc_group_cancel(orch__group_wait *w) {
  wait_unlink(w);
}

void orch__proc_exit_seen(orch_runtime *rt, orch__child *c) {
  proc_state *st = get_state(rt);
  if (!st || !st->nkept) return;
  for (kept_exit **pp = &st->kept; *pp; pp = &(*pp)->next) {
    if ((*pp)->serial != c->serial) continue;
    kept_drop(st, pp);
    return;
  }
}

int orch__child_start_time(orch_runtime *rt, pid_t pid, unsigned long long *t) {
  orch__child *c = orch__child_find(rt, pid);
  if (!c || !c->start_ticks) return -ENOENT;
  *t = c->start_ticks;
  return 0;
}

static unsigned long long boot_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

/* ---------------------------------------------------------------- reaper */

/* ---- Which SIGCHLD needs the walk
 *
 * Each SIGCHLD's siginfo (who, and why: an exit, a stop, a continue) is
 * recorded by a wrapper around libuv's handler in a ring, which the
 * SIGCHLD callback reads: a signal whose record names a child reaped (or
 * about to be) through its pidfd is explained, and makes no walk. Anything
 * else walks: a stop or continue, an unknown pid (an adopted orphan, a
 * child forked outside the table), a SIGCHLD sent by kill, a signal without
 * its record (the ring overflowed, the wrapper was not in place).
 *
 * SIGCHLD is a standard signal: one raised while another is pending is
 * merged into it, and its siginfo is lost. An event merged into a pidfd
 * exit's signal is seen only by a walk, so the walk is made at every
 * SIGCHLD whenever such an event may come: once orch has been a subreaper
 * (or is pid 1: orphans), while a registered child has no pidfd, once a
 * child has stopped or continued, and with more than one runtime in the
 * process. Left: the first stop of a child that the kernel merges into the
 * pending signal of another child's exit is reported at the next walk. */
#define RING 1024
static struct {
  _Atomic unsigned long seq;  /* index + 1 once pid and code are written */
  int pid, code;
} ring[RING];
static _Atomic unsigned long ring_head;
static void (*uv_chld)(int);  /* libuv's handler, which the wrapper calls */
static int nstates;           /* runtimes with a process table */

static void chld_info(int sig, siginfo_t *si, void *uc) {
  (void)uc;
  unsigned long i = atomic_fetch_add_explicit(&ring_head, 1, memory_order_relaxed);
  ring[i % RING].pid = si->si_pid;
  ring[i % RING].code = si->si_code;
  atomic_store_explicit(&ring[i % RING].seq, i + 1, memory_order_release);
  uv_chld(sig);
}

/* Puts chld_info in front of the handler libuv installed for SIGCHLD (call
 * after uv_signal_start). When it cannot, no record comes, and every
 * SIGCHLD walks. */
static void chld_wrap(void) {
  struct sigaction cur;
  if (sigaction(SIGCHLD, NULL, &cur) < 0) return;
  if (cur.sa_flags & SA_SIGINFO) return;           /* ours already, or unknown */
  if (cur.sa_handler == SIG_DFL || cur.sa_handler == SIG_IGN) return;
  uv_chld = cur.sa_handler;
  struct sigaction sa = cur;
  sa.sa_sigaction = chld_info;
  sa.sa_flags |= SA_SIGINFO;
  sigaction(SIGCHLD, &sa, NULL);
}

static void owed_add(proc_state *st, pid_t pid) {
  st->owed[st->nowed++ % 256] = pid;
}

static int owed_take(proc_state *st, pid_t pid) {
  for (int i = 0; i < 256; i++)
    if (st->owed[i] == pid) { st->owed[i] = 0; return 1; }
  return 0;
}

/* Whether the SIGCHLDs delivered so far are all explained by pidfd exits,
 * and no event can hide behind them (then no walk is needed). Reads the
 * ring's new records. */
static int explained(proc_state *st) {
  int ok = 1;
  unsigned long head = atomic_load_explicit(&ring_head, memory_order_acquire);
  if (head - st->tail > RING) {                   /* records overwritten */
    st->nrec += head - RING - st->tail;
    st->tail = head - RING;
    ok = 0;
  }
  for (; st->tail != head; st->tail++) {
    unsigned long i = st->tail % RING;
    /* A handler still writing it (in another thread): read it next time. */
    if (atomic_load_explicit(&ring[i].seq, memory_order_acquire) != st->tail + 1) { ok = 0; break; }
    pid_t pid = ring[i].pid;
    int code = ring[i].code;
    st->nrec++;
    if (code == CLD_EXITED || code == CLD_KILLED || code == CLD_DUMPED) {
      orch__child *c = orch__child_find(st->rt, pid);
      if (c && c->pidfd >= 0) { c->sig_seen = 1; continue; }   /* its pidfd follows */
      if (!c && owed_take(st, pid)) continue;
    } else if (code == CLD_STOPPED || code == CLD_CONTINUED || code == CLD_TRAPPED) {
      st->stops = 1;
    }
    ok = 0;
  }
  /* A delivered SIGCHLD without its record: the walk covers it. */
  if (st->ncb > st->nrec) { st->nrec = st->ncb; ok = 0; }
  if (!st->orphans) {
    int v = 0;
    if (getpid() == 1 || (prctl(PR_GET_CHILD_SUBREAPER, &v, 0, 0, 0) == 0 && v)) st->orphans = 1;
  }
  if (st->orphans || st->stops || st->count > st->npidfd || nstates > 1) ok = 0;
  return ok;
}

/* An exit the reaper collected: to the child registered for pid, or to the
 * orphan callback. */
static void dispatch_exit(proc_state *st, pid_t pid, int status, const struct rusage *ru) {
  orch__child *c = table_take(st, pid, NULL);
  if (c) {
    pid_t pgid = c->pgid;
    unsigned long long serial = c->serial;
    if (!c->on_exit(c, status, ru)) exit_offer(st, pid, pgid, status, serial);
    if (st->waits.next != &st->waits) groups_check(st);
  } else if (st->on_orphan) {
    st->on_orphan(st->rt, pid, status, st->orphan_data);
  }
}

static void jobs_settle(proc_state *st);

/* The walk: wait4(-1) makes the kernel look at each of orch's children in
 * turn (1 us at 100 children, 0.3-1.3 ms at 10,000: scripts/bench.d/
 * waitwalk.c), so it runs only when SIGCHLD came, once per loop turn.
 * Stops and continues are reported too (WUNTRACED, WCONTINUED): the child
 * stays in the table and its on_stop hears of them; an adopted orphan's are
 * not exits and go nowhere. */
static void reap(proc_state *st) {
  /* A started spawn's child is registered once it has exec'd: before any
   * status is taken, so that none of them is taken for an orphan's. */
  jobs_settle(st);
  for (;;) {
    int status;
    struct rusage ru;
    pid_t pid = wait4(-1, &status, WNOHANG | WUNTRACED | WCONTINUED, &ru);
    if (pid < 0 && errno == EINTR) continue;
    if (pid <= 0) break;
    if (WIFSTOPPED(status) || WIFCONTINUED(status)) {
      st->stops = 1;
      orch__child *c = orch__child_find(st->rt, pid);
      if (c && c->on_stop) c->on_stop(c, status);
      continue;
    }
    st->walk_exits++;
    dispatch_exit(st, pid, status, &ru);
  }
}

/* The children whose pidfd is readable have ended: each is reaped by pid,
 * which the kernel answers without the walk (Linux 5.14 and later). An
 * event is checked against the table first: the on_exit of an earlier one
 * may have reaped, forgotten or replaced that child. */
static void pidfd_reap(proc_state *st) {
  if (st->epfd < 0) return;
  struct epoll_event ev[64];
  int n;
  do {
    n = epoll_wait(st->epfd, ev, 64, 0);
    if (n < 0 && errno == EINTR) { n = 64; continue; }
    for (int i = 0; i < n; i++) {
      pid_t pid = (pid_t)(ev[i].data.u64 & 0xffffffffu);
      int fd = (int)(ev[i].data.u64 >> 32);
      orch__child *c = orch__child_find(st->rt, pid);
      if (!c || c->pidfd != fd) continue;
      int status;
      struct rusage ru;
      pid_t r;
      do r = wait4(pid, &status, WNOHANG, &ru); while (r < 0 && errno == EINTR);
      if (r == pid) {
        st->pidfd_exits++;
        if (!c->sig_seen) owed_add(st, pid);
        dispatch_exit(st, pid, status, &ru);
      }
      /* Readable but not waitable (never seen): the walk takes it. */
      else pidfd_drop(st, c);
    }
  } while (n == 64);
}

static void on_pidfd(uv_poll_t *h, int status, int events) {
  pidfd_reap(h->data);
}

static void walk(proc_state *st) {
  st->walks++;
  reap(st);
}

static void on_walk(uv_check_t *h) {
  uv_check_stop(h);
  walk(h->data);
}

/* SIGCHLD: the children that ended with a pidfd are reaped at once (a
 * restart's new process does not wait for the walk); the walk, when the
 * signal needs one (explained()), after the loop turn's callbacks, once
 * however many SIGCHLDs came in that turn. */
static void on_sigchld(uv_signal_t *h, int sig) {
  proc_state *st = h->data;
  pidfd_reap(st);
  st->ncb++;
  if (!explained(st)) uv_check_start(&st->walker, on_walk);
}

void orch__proc_reap(orch_runtime *rt) {
  proc_state *st = get_state(rt);
  if (!st) return;
  pidfd_reap(st);
  walk(st);
}

void orch__proc_reaper_stats(orch_runtime *rt, orch__reaper_stats *s) {
  proc_state *st = get_state(rt);
  memset(s, 0, sizeof *s);
  if (!st) return;
  s->children = st->count;
  s->pidfds = st->npidfd;
  s->walks = st->walks;
  s->pidfd_exits = st->pidfd_exits;
  s->walk_exits = st->walk_exits;
}

void orch__proc_on_orphan(orch_runtime *rt, orch__orphan_fn fn, void *data) {
  proc_state *st = get_state(rt);
  if (!st) return;
  st->on_orphan = fn;
  st->orphan_data = data;
}

int orch__proc_devnull(orch_runtime *rt) {
  proc_state *st = get_state(rt);
  if (!st) return -ENOSYS;
  if (st->devnull < 0) {
    st->devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (st->devnull < 0) return -errno;
  }
  return st->devnull;
}

/* ---------------------------------------------------------------- spawner */

/* A spawn's state (proc.h's orch__spawn_job): the child reads it and writes
 * err, step and born; a started spawn's parent reads them once the child
 * has exec'd or failed. */
typedef orch__spawn_job spawn_ctx;

/* Tries file in each directory of path like execvp (no /bin/sh fallback).
 * Returns only on failure, with errno set. */
void orch__exec_search(const char *file, const char *path, char *const argv[],
                        char *const envp[]) {
  if (!path || strchr(file, '/')) {
    execve(file, argv, envp);
    return;
  }
  size_t flen = strlen(file);
  char buf[PATH_MAX];
  int eacces = 0;
  const char *p = path;
  for (;;) {
    const char *e = strchrnul(p, ':');
    size_t dlen = (size_t)(e - p);
    if (dlen + flen + 2 <= sizeof buf) {
      if (dlen) {
        memcpy(buf, p, dlen);
        buf[dlen++] = '/';
      }
      memcpy(buf + dlen, file, flen + 1);
      execve(buf, argv, envp);
      switch (errno) {
        case EACCES: eacces = 1; break;
        case ENOENT: case ENOTDIR: case ESTALE: case ENODEV: case ETIMEDOUT: break;
        default: return;
      }
    }
    if (!*e) break;
    p = e + 1;
  }
  errno = eacces ? EACCES : ENOENT;
}

/* The raw call also reaches the signals glibc reserves (32, 33), which an
 * ignoring parent of orch may have left ignored, and bypasses sanitizer
 * interceptors. */
const orch__ksigaction orch__ksa_default;

int orch__raw_sigaction(int sig, const orch__ksigaction *act, orch__ksigaction *old) {
  return (int)syscall(SYS_rt_sigaction, sig, act, old, (size_t)(_NSIG / 8));
}

/* The signals orch may ignore, which CLONE_CLEAR_SIGHAND leaves ignored in
 * the child (it resets handlers only): those found ignored when the first
 * spawn asks (inherited from orch's parent, or SIGPIPE, ignored by orch),
 * and those ignored since through orch__proc_ignored. One list for the
 * process, as dispositions are; a signal listed that is no longer ignored
 * costs the child one needless reset. Entries are only ever appended: a
 * started child reads the first nign of them while orch may add more. */
static int ign_sigs[NSIG];
static int ign_count = -1;          /* -1: not looked at yet */

static void ign_add(int sig) {
  for (int i = 0; i < ign_count; i++)
    if (ign_sigs[i] == sig) return;
  if (ign_count < NSIG) ign_sigs[ign_count++] = sig;
}

void orch__proc_ignored(int sig) {
  if (ign_count >= 0 && sig > 0 && sig < NSIG) ign_add(sig);
}

#if defined(__x86_64__) && defined(SYS_clone3)
#define HAVE_CLONE3_INTO 1
#endif

/* The child's system calls. A started spawn's child (orch__spawn_start)
 * runs beside orch in orch's memory, on orch's thread-local storage: it
 * must not write errno, nor enter a sanitizer's interceptor, so on x86-64
 * it calls the kernel itself and gets -errno back. */
#ifdef HAVE_CLONE3_INTO
__attribute__((no_sanitize("address", "undefined")))
static inline long rsys(long n, long a, long b, long c, long d) {
  register long r10 __asm__("r10") = d;
  long ret;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                   : "rcx", "r11", "memory");
  return ret;
}
#else
static long rsys(long n, long a, long b, long c, long d) {
  long r = syscall(n, a, b, c, d);
  return r < 0 ? -errno : r;
}
#endif
#define RSYS(n, a, b, c, d) rsys((n), (long)(a), (long)(b), (long)(c), (long)(d))
#define CHILD_CODE __attribute__((no_sanitize("address", "undefined"), noinline))

/* Never returns. */
CHILD_CODE static void child_fail(spawn_ctx *x, const char *step, long r) {
  x->err = r < 0 ? (int)-r : EINVAL;
  x->step = step;
  for (;;) RSYS(SYS_exit_group, 127, 0, 0, 0);
}

/* orch__exec_search with the kernel's calls and no library function (the
 * byte copies go through a volatile pointer so that no memcpy is made of
 * them). Returns -errno. */
CHILD_CODE static long child_exec(const char *file, const char *path, char *const argv[],
                                  char *const envp[]) {
  const char *f = file;
  while (*f && *f != '/') f++;
  if (!path || *f) return RSYS(SYS_execve, file, argv, envp, 0);
  size_t flen = (size_t)(f - file);
  char buf[PATH_MAX];
  int eacces = 0;
  const char *p = path;
  for (;;) {
    const char *e = p;
    while (*e && *e != ':') e++;
    size_t dlen = (size_t)(e - p);
    if (dlen + flen + 2 <= sizeof buf) {
      volatile char *o = buf;
      for (size_t i = 0; i < dlen; i++) *o++ = p[i];
      if (dlen) *o++ = '/';
      for (size_t i = 0; i <= flen; i++) *o++ = file[i];
      long r = RSYS(SYS_execve, buf, argv, envp, 0);
      switch (-r) {
        case EACCES: eacces = 1; break;
        case ENOENT: case ENOTDIR: case ESTALE: case ENODEV: case ETIMEDOUT: break;
        default: return r;
      }
    }
    if (!*e) break;
    p = e + 1;
  }
  return eacces ? -EACCES : -ENOENT;
}

CHILD_CODE static int spawn_child(void *arg) {
  spawn_ctx *x = arg;
  struct timespec ts;
  if (RSYS(SYS_clock_gettime, CLOCK_BOOTTIME, &ts, 0, 0) == 0)   /* the end of the bracket */
    x->born = (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
  const orch__spawn_req *r = x->req;
  long e;
  /* Handlers of the parent must never run here (they would write into its
   * memory and its signal pipe), and ignored signals should not leak into
   * the new program: every disposition goes back to the default while all
   * signals are still blocked. With CLONE_CLEAR_SIGHAND the kernel has
   * reset the handlers already, and only the ignored signals are left. */
  if (x->cleared) {
    for (int i = 0; i < x->nign; i++)
      RSYS(SYS_rt_sigaction, ign_sigs[i], &orch__ksa_default, 0, _NSIG / 8);
  } else {
    for (int s = 1; s < NSIG; s++)
      if (s != SIGKILL && s != SIGSTOP) RSYS(SYS_rt_sigaction, s, &orch__ksa_default, 0, _NSIG / 8);
  }

  /* Into the cgroups before anything else: what the program does, and the
   * children it forks, are accounted and limited there. */
  for (int i = 0; i < x->ncg; i++)
    if ((e = RSYS(SYS_write, r->cgroup_fds[i], "0", 1, 0)) < 0) child_fail(x, "cgroup", e);

  if (r->flags & ORCH__SPAWN_SETSID) {
    if ((e = RSYS(SYS_setsid, 0, 0, 0, 0)) < 0) child_fail(x, "setsid", e);
  } else if (r->flags & ORCH__SPAWN_PGROUP) {
    if ((e = RSYS(SYS_setpgid, 0, 0, 0, 0)) < 0) child_fail(x, "setpgid", e);
  } else if (r->flags & ORCH__SPAWN_JOIN_PGROUP) {
    if ((e = RSYS(SYS_setpgid, 0, r->pgid, 0, 0)) < 0) child_fail(x, "setpgid", e);
  }
  if (x->nofile) RSYS(SYS_prlimit64, 0, RLIMIT_NOFILE, x->nofile, 0);
  for (int i = 0; i < r->nrlimits; i++)
    if ((e = RSYS(SYS_prlimit64, 0, r->rlimits[i].resource, &r->rlimits[i].lim, 0)) < 0)
      child_fail(x, "setrlimit", e);
  if (r->flags & ORCH__SPAWN_UMASK) RSYS(SYS_umask, r->umask, 0, 0, 0);
  if (r->flags & ORCH__SPAWN_NICE)
    if ((e = RSYS(SYS_setpriority, PRIO_PROCESS, 0, r->nice, 0)) < 0) child_fail(x, "setpriority", e);
  if (r->flags & ORCH__SPAWN_AFFINITY)
    if ((e = RSYS(SYS_sched_setaffinity, 0, sizeof(cpu_set_t), r->affinity, 0)) < 0)
      child_fail(x, "sched_setaffinity", e);
  if (r->flags & ORCH__SPAWN_IOPRIO)
    if ((e = RSYS(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0, r->ioprio, 0)) < 0)
      child_fail(x, "ioprio_set", e);

  /* Only the fds asked for reach the program, even those orch itself was
   * started with: everything above 2 becomes close-on-exec, and dup3 below
   * clears the flag on the targets. */
  RSYS(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */, 0);

  if (r->nfds > 0) {
    /* Move every source out of the way of every target first, so that a
     * source that is also another mapping's target is not clobbered (and
     * no source is its own target below). */
    int src[MAX_FDMAP];
    int maxt = 2;
    for (int i = 0; i < r->nfds; i++)
      if (r->fds[i].target > maxt) maxt = r->fds[i].target;
    for (int i = 0; i < r->nfds; i++) {
      long s = r->fds[i].source;
      if (s <= maxt) {
        s = RSYS(SYS_fcntl, s, F_DUPFD_CLOEXEC, maxt + 1, 0);
        if (s < 0) child_fail(x, "dup", s);
      }
      src[i] = (int)s;
    }
    for (int i = 0; i < r->nfds; i++)
      if ((e = RSYS(SYS_dup3, src[i], r->fds[i].target, 0, 0)) < 0) child_fail(x, "dup", e);
  }

  if (r->flags & ORCH__SPAWN_GROUPS)
    if ((e = RSYS(SYS_setgroups, r->ngroups, r->groups, 0, 0)) < 0) child_fail(x, "setgroups", e);
  if (r->flags & ORCH__SPAWN_SETGID)
    if ((e = RSYS(SYS_setresgid, r->gid, r->gid, r->gid, 0)) < 0) child_fail(x, "setgid", e);
  if (r->flags & ORCH__SPAWN_SETUID)
    if ((e = RSYS(SYS_setresuid, r->uid, r->uid, r->uid, 0)) < 0) child_fail(x, "setuid", e);
  if (r->cwd && (e = RSYS(SYS_chdir, r->cwd, 0, 0, 0)) < 0) child_fail(x, "chdir", e);

  unsigned long none = 0;
  RSYS(SYS_rt_sigprocmask, SIG_SETMASK, &none, 0, sizeof none);
  e = child_exec(r->file, x->path, r->argv, r->envp ? r->envp : environ);
  child_fail(x, "exec", e);
  return 127;
}

static int ensure_stack(proc_state *st) {
  if (st->stack) return 0;
  void *p = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return -errno;
  st->stack = p;
  return 0;
}

#ifdef HAVE_CLONE3_INTO
#define CLEAR_SIGHAND 0x100000000ULL  /* CLONE_CLEAR_SIGHAND, Linux 5.5 */
#define INTO_CGROUP 0x200000000ULL    /* CLONE_INTO_CGROUP, Linux 5.7 */
/* clone3(CLONE_VM|flags) running fn(arg) on the given stack, in the cgroup
 * cgdir with INTO_CGROUP, as glibc's clone() does for clone(2) (glibc
 * exports no clone3); child_tid for CLONE_CHILD_CLEARTID. The child starts
 * on the new stack with every register but rax, rcx and r11 as the parent
 * had them: it calls fn with arg from r12/r13 and exits with its result; it
 * never returns here. Returns the pid or -errno. */
static long clone3_into(int (*fn)(void *), void *arg, char *stack, size_t size,
                        unsigned long long flags, int cgdir, int *pidfd, int *child_tid) {
  struct {
    unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size,
                       tls, set_tid, set_tid_size, cgroup;
  } ca;
  memset(&ca, 0, sizeof ca);
  ca.flags = CLONE_VM | flags | (pidfd ? CLONE_PIDFD : 0);
  ca.pidfd = pidfd ? (unsigned long long)(uintptr_t)pidfd : 0;
  ca.child_tid = (unsigned long long)(uintptr_t)child_tid;
  ca.exit_signal = SIGCHLD;
  ca.stack = (unsigned long long)(uintptr_t)stack;
  ca.stack_size = size;
  ca.cgroup = (flags & INTO_CGROUP) ? (unsigned long long)cgdir : 0;
  register long rax __asm__("rax") = SYS_clone3;
  register void *rdi __asm__("rdi") = &ca;
  register size_t rsi __asm__("rsi") = sizeof ca;
  register int (*r12)(void *) __asm__("r12") = fn;
  register void *r13 __asm__("r13") = arg;
  __asm__ volatile(
    "syscall\n\t"
    "test %%rax, %%rax\n\t"
    "jnz 1f\n\t"
    "xor %%ebp, %%ebp\n\t"
    "mov %%r13, %%rdi\n\t"
    "call *%%r12\n\t"
    "mov %%eax, %%edi\n\t"
    "mov $231, %%eax\n\t"       /* exit_group */
    "syscall\n\t"
    "hlt\n"
    "1:\n\t"
    : "+r"(rax)
    : "r"(rdi), "r"(rsi), "r"(r12), "r"(r13)
    : "rcx", "r11", "memory");
  return rax;
}
/* clone3_into with a pidfd in *pidfd when pidfd is not NULL; without one
 * (*pidfd -1) when the fd table is full (EMFILE, ENFILE): the child is
 * then reaped by the walk, never refused for want of an fd. */
static long clone3_pidfd(int (*fn)(void *), void *arg, char *stack, size_t size,
                         unsigned long long flags, int cgdir, int *pidfd) {
  long r = clone3_into(fn, arg, stack, size, flags, cgdir, pidfd, NULL);
  if (pidfd && (r == -EMFILE || r == -ENFILE)) {
    *pidfd = -1;
    r = clone3_into(fn, arg, stack, size, flags, cgdir, NULL, NULL);
  }
  return r;
}
/* Read and written on the loop thread only. */
static int clone3_works = 1;       /* 0 after ENOSYS/E2BIG/EINVAL, 2 once it worked */
/* The same for clone3 with CLEAR_SIGHAND alone (no cgroup), which also
 * gives up after EPERM (a seccomp filter that refuses the call). */
static int clear_works = 1;

/* Fills ign_sigs the first time: which signals are ignored now. Reads the
 * kernel's struct sigaction, whose first word is the handler on x86-64. */
static void ign_init(void) {
  if (ign_count >= 0) return;
  ign_count = 0;
  for (int s = 1; s < NSIG; s++) {
    orch__ksigaction old;
    if (s != SIGKILL && s != SIGSTOP && orch__raw_sigaction(s, NULL, &old) == 0 &&
        old.w[0] == (unsigned long)(uintptr_t)SIG_IGN)
      ign_add(s);
  }
}
#endif

int orch__spawn_into_cgroup_works(void) {
#ifdef HAVE_CLONE3_INTO
  return clone3_works == 2;
#else
  return 0;
#endif
}

/* The parts of a spawn's state the parent fills before the clone. */
static void ctx_init(spawn_ctx *x, const orch__spawn_req *req) {
  memset(x, 0, sizeof *x);
  x->req = req;
  x->ncg = req->ncgroup_fds;
  x->nofile = orch__nofile_orig();
  if (req->search && !strchr(req->file, '/')) {
    x->path = req->search_path;
    if (!x->path) x->path = getenv("PATH");
    if (!x->path) x->path = DEFAULT_PATH;
  }
#ifdef HAVE_CLONE3_INTO
  ign_init();
#endif
  x->nign = ign_count > 0 ? ign_count : 0;
}

static unsigned long long tick_ns(void) {
  static unsigned long long ns;
  if (!ns) {
    long hz = sysconf(_SC_CLK_TCK);
    ns = 1000000000ull / (unsigned long long)(hz > 0 ? hz : 100);
  }
  return ns;
}

/* c of a child that started: its start time, pid and group. */
static void child_fill(const spawn_ctx *x, orch__child *c, pid_t pid) {
  /* The kernel stamps the child's start (CLOCK_BOOTTIME) inside the clone,
   * after our reading before it and before the child's own first reading
   * (spawn_child; it shares our memory until its exec): when both fall in
   * one clock tick, that tick is its start time, and nobody has to read
   * /proc/PID/stat for it (which waits until the child's exec is over). */
  const orch__spawn_req *req = x->req;
  unsigned long long t0 = x->born0 / tick_ns(), t1 = x->born / tick_ns();
  c->start_ticks = x->born && t0 == t1 ? t0 : 0;
  c->pid = pid;
  c->group = (req->flags & (ORCH__SPAWN_PGROUP | ORCH__SPAWN_SETSID)) != 0;
  c->pgid = c->group ? pid : (req->flags & ORCH__SPAWN_JOIN_PGROUP) ? req->pgid : getpgrp();
  c->pidfd = -1;     /* a started spawn's child is found by the walk */
}

int orch__spawn(orch_runtime *rt, const orch__spawn_req *req, orch__child *c,
                const char **step) {
  proc_state *st = get_state(rt);
  *step = "spawn";
  if (!st) return -ENOSYS;
  if (req->nfds < 0 || req->nfds > MAX_FDMAP) return -EINVAL;
  int r = ensure_stack(st);
  if (r < 0) return r;
  spawn_ctx x;
  ctx_init(&x, req);
  UNPOISON_STACK(st->stack, CHILD_STACK);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pid_t pid = -1;
  int e = 0;
  int pidfd = -1;
  x.born0 = boot_ns();
#ifdef HAVE_CLONE3_INTO
  int *want = pidfd_wanted(st) ? &pidfd : NULL;
  int nofd = (req->flags & ORCH__SPAWN_CGROUP_NOFD) != 0;
  if ((req->flags & ORCH__SPAWN_CGROUP) && clone3_works && (nofd || req->ncgroup_fds > 0)) {
    /* Born in the v2 cgroup: the child skips writing the last fd. The
     * kernels that have INTO_CGROUP have CLEAR_SIGHAND too. */
    x.ncg = nofd ? req->ncgroup_fds : req->ncgroup_fds - 1;
    x.cleared = clear_works != 0;
    long r3 = clone3_pidfd(spawn_child, &x, st->stack, CHILD_STACK,
                           CLONE_VFORK | INTO_CGROUP | (x.cleared ? CLEAR_SIGHAND : 0), req->cgroup_dir, want);
    if (r3 >= 0) { pid = (pid_t)r3; clone3_works = 2; }
    else if (!nofd && (r3 == -ENOSYS || r3 == -E2BIG || r3 == -EINVAL)) clone3_works = 0;
    else e = (int)-r3;
    if (pid < 0 && !e) x.ncg = req->ncgroup_fds;
  }
  if (pid < 0 && !e && clear_works) {
    /* Any failure here falls back to clone(2), which reports its own. */
    x.cleared = 1;
    long r3 = clone3_pidfd(spawn_child, &x, st->stack, CHILD_STACK, CLONE_VFORK | CLEAR_SIGHAND, -1, want);
    if (r3 >= 0) { pid = (pid_t)r3; clear_works = 2; }
    else if (r3 == -ENOSYS || r3 == -E2BIG || r3 == -EINVAL || r3 == -EPERM) clear_works = 0;
  }
  if (pid < 0 && !e) {
    x.cleared = 0;
    pidfd = -1;
#endif
  pid = clone(spawn_child, st->stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &x);
  e = errno;
#ifdef HAVE_CLONE3_INTO
  }
#endif
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (pid < 0) {
    *step = "clone";
    return -e;
  }
  if (x.err) {
    /* The child has already called exit: this wait is immediate. */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    if (pidfd >= 0) close(pidfd);
    *step = x.step;
    return -x.err;
  }
  child_fill(&x, c, pid);
  table_add(st, c);
  if (pidfd >= 0) pidfd_watch(st, c, pidfd);
  return pid;
}

/* ---- A started spawn (orch__spawn_start): orch goes on while its child
 * gets to its exec, on a stack of its own; the kernel clears job->tid and
 * wakes a futex on it when the child's exec (or exit) gives orch's memory
 * back (CLONE_CHILD_CLEARTID), which is when the job settles. */

#define JOB_STACK (64 * 1024)
#define JOB_STACKS_KEPT 4

enum { JOB_NONE, JOB_PENDING, JOB_STARTED, JOB_FAILED };

static char *job_stack_get(proc_state *st) {
  if (st->nstacks > 0) return st->stacks[--st->nstacks];
  void *p = mmap(NULL, JOB_STACK, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

static void job_stack_put(proc_state *st, char *stack) {
  if (st && st->nstacks < JOB_STACKS_KEPT) st->stacks[st->nstacks++] = stack;
  else munmap(stack, JOB_STACK);
}

/* Waits until the child no longer uses orch's memory (its exec or exit). */
static void job_wait(orch__spawn_job *j) {
  while (__atomic_load_n(&j->tid, __ATOMIC_ACQUIRE) != 0)
    syscall(SYS_futex, &j->tid, FUTEX_WAIT, 1, NULL, NULL, 0);
}

/* The pending job's end: its child has exec'd (then registered, its status
 * goes to c) or failed (then reaped). No Lua. st may be NULL (the table is
 * gone: the runtime closed). */
static void job_settle(proc_state *st, orch__spawn_job *j, int mine) {
  if (j->state != JOB_PENDING) return;
  if (mine) job_wait(j);
  if (j->pprev) {
    *j->pprev = j->next;
    if (j->next) j->next->pprev = j->pprev;
    j->pprev = NULL;
    j->next = NULL;
  }
  job_stack_put(st, j->stack);
  j->stack = NULL;
  int pidfd = j->pidfd;
  j->pidfd = -1;
  if (!mine || j->err || !st) {
    if (pidfd >= 0) close(pidfd);
    pidfd = -1;
  }
  if (!mine) {
    /* A fork child's copy: the child is the parent's. */
    j->state = JOB_FAILED;
    j->err = ECHILD;
    j->step = "started before a fork";
    return;
  }
  if (j->err) {
    while (waitpid(j->pid, NULL, 0) < 0 && errno == EINTR) {}
    j->state = JOB_FAILED;
    return;
  }
  child_fill(j, j->child, j->pid);
  j->state = JOB_STARTED;
  if (st) table_add(st, j->child);
  if (pidfd >= 0) pidfd_watch(st, j->child, pidfd);
}

static void jobs_settle(proc_state *st) {
  while (st->jobs) job_settle(st, st->jobs, 1);
}

int orch__spawn_start(orch_runtime *rt, const orch__spawn_req *req, orch__spawn_job *job,
                      orch__child *c, const char **step) {
  proc_state *st = get_state(rt);
  *step = "spawn";
  job->state = JOB_NONE;
  if (!st) return -ENOSYS;
  if (req->nfds < 0 || req->nfds > MAX_FDMAP) return -EINVAL;
#ifndef HAVE_CLONE3_INTO
  (void)c;
  return -ENOSYS;
#else
  if (!clear_works) return -ENOSYS;
  char *stack = job_stack_get(st);
  if (!stack) return -ENOMEM;
  ctx_init(job, req);
  job->child = c;
  job->tid = 1;
  job->pidfd = -1;
  int *want = pidfd_wanted(st) ? &job->pidfd : NULL;
  job->cleared = 1;
  UNPOISON_STACK(stack, JOB_STACK);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  long pid = -ENOSYS;
  int e = 0;
  job->born0 = boot_ns();
  int nofd = (req->flags & ORCH__SPAWN_CGROUP_NOFD) != 0;
  if ((req->flags & ORCH__SPAWN_CGROUP) && clone3_works && (nofd || req->ncgroup_fds > 0)) {
    job->ncg = nofd ? req->ncgroup_fds : req->ncgroup_fds - 1;
    long r3 = clone3_into(spawn_child, job, stack, JOB_STACK,
                          CLONE_CHILD_CLEARTID | INTO_CGROUP | CLEAR_SIGHAND, req->cgroup_dir,
                          want, (int *)&job->tid);
    if (want && (r3 == -EMFILE || r3 == -ENFILE)) {   /* no pidfd: the walk reaps it */
      job->pidfd = -1;
      r3 = clone3_into(spawn_child, job, stack, JOB_STACK,
                       CLONE_CHILD_CLEARTID | INTO_CGROUP | CLEAR_SIGHAND, req->cgroup_dir,
                       NULL, (int *)&job->tid);
    }
    if (r3 >= 0) { pid = r3; clone3_works = 2; }
    else if (!nofd && (r3 == -ENOSYS || r3 == -E2BIG || r3 == -EINVAL)) clone3_works = 0;
    else e = (int)-r3;
    if (pid < 0 && !e) job->ncg = req->ncgroup_fds;
  }
  if (pid < 0 && !e) {
    job->pidfd = -1;
    long r3 = clone3_into(spawn_child, job, stack, JOB_STACK, CLONE_CHILD_CLEARTID | CLEAR_SIGHAND,
                          -1, want, (int *)&job->tid);
    if (want && (r3 == -EMFILE || r3 == -ENFILE)) {
      job->pidfd = -1;
      r3 = clone3_into(spawn_child, job, stack, JOB_STACK, CLONE_CHILD_CLEARTID | CLEAR_SIGHAND,
                       -1, NULL, (int *)&job->tid);
    }
    if (r3 >= 0) { pid = r3; clear_works = 2; }
    else if (r3 == -ENOSYS || r3 == -E2BIG || r3 == -EINVAL || r3 == -EPERM) clear_works = 0;
    else e = (int)-r3;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (pid < 0) {
    if (job->pidfd >= 0) close(job->pidfd);
    job->pidfd = -1;
    job_stack_put(st, stack);
    if (!e) return -ENOSYS;            /* the caller spawns the old way */
    *step = "clone";
    return -e;
  }
  job->stack = stack;
  job->pid = (pid_t)pid;
  job->state = JOB_PENDING;
  job->next = st->jobs;
  if (st->jobs) st->jobs->pprev = &job->next;
  job->pprev = &st->jobs;
  st->jobs = job;
  return (int)pid;
#endif
}

int orch__spawn_settle(orch_runtime *rt, orch__spawn_job *job, const char **step) {
  job_settle(get_state(rt), job, 1);
  if (job->state == JOB_STARTED) return job->pid;
  *step = job->step ? job->step : "spawn";
  return -(job->err ? job->err : EINVAL);
}

int orch__spawn_pending(const orch__spawn_job *job) {
  return job->state == JOB_PENDING;
}

/* ---------------------------------------------------------------- kill */

/* pid is the id of one of orch's own threads (a libuv threadpool worker, a
 * waiter thread): kill(2) takes thread ids and would signal orch itself. */
static int own_thread(pid_t pid) {
  char path[48];
  snprintf(path, sizeof path, "/proc/self/task/%d", (int)pid);
  return access(path, F_OK) == 0;
}

int orch__kill(pid_t pid, int sig, int flags, unsigned long long start) {
  int group = flags & ORCH__KILL_GROUP;
  if (pid <= 1) return ORCH__KILL_REFUSED;
  if (!(flags & ORCH__KILL_CHILD)) {
    if (pid == getpid() || (group && pid == getpgrp())) return ORCH__KILL_REFUSED;
    if (!group && own_thread(pid)) return ORCH__KILL_REFUSED;
  }
  if (start) {
    /* A pidfd pins the process: checked and signalled as one identity. */
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0 && errno != ENOSYS) return -errno;
    unsigned long long t = 0;
    int r = orch__procfs_start_time(pid, &t);
    if (r == 0 && t != start) r = -ESRCH;
    if (r == 0) {
      if (group) r = killpg(pid, sig) < 0 ? -errno : 0;
      else if (fd >= 0) r = syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0) < 0 ? -errno : 0;
      else r = kill(pid, sig) < 0 ? -errno : 0;
    }
    if (fd >= 0) close(fd);
    return r;
  }
  int r = group ? killpg(pid, sig) : kill(pid, sig);
  return r < 0 ? -errno : 0;
}

/* ---------------------------------------------------------------- signalling every child */

int orch__proc_signal_children(orch_runtime *rt, int sig) {
  proc_state *st = get_state(rt);
  int n = 0;
  if (!st) return 0;
  for (size_t i = 0; i <= st->mask; i++)
    for (orch__child *c = st->buckets[i]; c; c = c->next) {
      if (c->pid <= 1) continue;
      if ((c->group ? killpg(c->pid, sig) : kill(c->pid, sig)) == 0) n++;
    }
  return n;
}

int orch__proc_init_active(orch_runtime *rt) {
  proc_state *st = get_state(rt);
  return st && st->init_on;
}

void orch__proc_set_init_active(orch_runtime *rt, int on) {
  proc_state *st = get_state(rt);
  if (st) st->init_on = on;
}


/* ---------------------------------------------------------------- lifetime */

static void kept_clear(proc_state *st) {
  while (st->kept) kept_drop(st, &st->kept);
}

/* Group waits still listed are detached (their owners free them). */
static void waits_clear(proc_state *st) {
  while (st->waits.next != &st->waits) wait_unlink(st->waits.next);
}

static void state_free(uv_handle_t *h) {
  proc_state *st = h->data;
  if (--st->nopen > 0) return;
  nstates--;
  kept_clear(st);
  free(st->buckets);
  free(st);
}

/* Closes the handles (then state_free frees st) and the epoll set. */
static void state_close(proc_state *st) {
  st->nopen = 2 + st->haspoll;
  uv_close((uv_handle_t *)&st->sigchld, state_free);
  uv_close((uv_handle_t *)&st->walker, state_free);
  if (st->haspoll) uv_close((uv_handle_t *)&st->pidpoll, state_free);
  if (st->epfd >= 0) close(st->epfd);
  st->epfd = -1;
}

/* The Lua state may already be closed here: no Lua. */
static void proc_close_hook(orch_runtime *rt, void *data) {
  proc_state *st = data;
  *orch__slot(rt, ORCH__SLOT_PROC) = NULL;
  if (st->stack) munmap(st->stack, CHILD_STACK);
  st->stack = NULL;
  while (st->jobs) job_settle(NULL, st->jobs, 1);   /* nothing is registered now */
  while (st->nstacks > 0) munmap(st->stacks[--st->nstacks], JOB_STACK);
  if (st->devnull >= 0) close(st->devnull);
  st->devnull = -1;
  waits_clear(st);
  /* The children still registered keep running; their pidfds go. */
  for (size_t i = 0; i <= st->mask; i++)
    for (orch__child *c = st->buckets[i]; c; c = c->next)
      if (c->pidfd >= 0) { close(c->pidfd); c->pidfd = -1; }
  uv_signal_stop(&st->sigchld);
  state_close(st);
}

/* In a fork child: every child in the table belongs to the parent. */
static void proc_fork_hook(orch_runtime *rt, void *data) {
  proc_state *st = data;
  for (size_t i = 0; i <= st->mask; i++) {
    orch__child *c = st->buckets[i];
    while (c) {
      orch__child *next = c->next;
      c->next = NULL;
      if (c->pidfd >= 0) close(c->pidfd);   /* this process's copy */
      c->pidfd = -1;
      if (c->on_forget) c->on_forget(c);
      c = next;
    }
    st->buckets[i] = NULL;
  }
  st->count = 0;
  st->npidfd = 0;
  st->init_on = 0;
  /* Started spawns are the parent's (their jobs settle as failed here,
   * before anything in the child can wait for them). */
  while (st->jobs) job_settle(st, st->jobs, 0);
  /* Their exits and the tasks waiting for groups are the parent's. */
  kept_clear(st);
  waits_clear(st);
  /* The runtime stopped every handle; the child reaps its own children.
   * The epoll set is the parent's (an inherited epoll fd is the same set):
   * a new one takes its number, so the poll handle watches it. */
  uv_signal_start(&st->sigchld, on_sigchld, SIGCHLD);
  uv_unref((uv_handle_t *)&st->sigchld);
  chld_wrap();
  /* Not a subreaper after fork(2); no child yet; the ring goes on. */
  st->tail = atomic_load(&ring_head);
  st->ncb = st->nrec = 0;
  memset(st->owed, 0, sizeof st->owed);
  st->orphans = st->stops = 0;
  if (st->epfd >= 0) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0 || dup3(fd, st->epfd, O_CLOEXEC) < 0) {
      /* No set of its own: the child's children are reaped by the walk. */
      uv_poll_stop(&st->pidpoll);
      close(st->epfd);
      st->epfd = -1;
    } else {
      uv_poll_start(&st->pidpoll, UV_READABLE, on_pidfd);
    }
    if (fd >= 0) close(fd);
  }
}

int orch__proc_open(orch_runtime *rt, uv_loop_t *loop) {
  void **slot = orch__slot(rt, ORCH__SLOT_PROC);
  if (*slot) return 0;
  proc_state *st = calloc(1, sizeof *st);
  if (!st) return UV_ENOMEM;
  st->buckets = calloc(64, sizeof *st->buckets);
  if (!st->buckets) { free(st); return UV_ENOMEM; }
  st->mask = 63;
  st->rt = rt;
  st->devnull = -1;
  st->kept_tail = &st->kept;
  st->waits.prev = st->waits.next = &st->waits;
  uv_signal_init(loop, &st->sigchld);
  st->sigchld.data = st;
  uv_check_init(loop, &st->walker);
  st->walker.data = st;
  uv_unref((uv_handle_t *)&st->walker);
  /* Without an epoll set (or a poll handle on it) every exit goes to the
   * walk, as before pidfds. */
  st->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (st->epfd >= 0 && uv_poll_init(loop, &st->pidpoll, st->epfd) == 0) {
    st->haspoll = 1;
    st->pidpoll.data = st;
    uv_poll_start(&st->pidpoll, UV_READABLE, on_pidfd);
    uv_unref((uv_handle_t *)&st->pidpoll);
  } else if (st->epfd >= 0) {
    close(st->epfd);
    st->epfd = -1;
  }
  nstates++;
  st->tail = atomic_load(&ring_head);
  int r = uv_signal_start(&st->sigchld, on_sigchld, SIGCHLD);
  if (r < 0) {
    state_close(st);
    return r;
  }
  chld_wrap();
  uv_unref((uv_handle_t *)&st->sigchld);
  *slot = st;
  orch__on_close(rt, proc_close_hook, st);
  orch__on_fork_child(rt, proc_fork_hook, st);
  return 0;
}
