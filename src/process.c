/*
 * process.c: the process mechanism behind proc.h: the process table, the
 * SIGCHLD reaper and the safe kill. Its users are the
 * bindings (spawn.c and l_proc.c: orch.spawn and orch.Process; l_daemon.c:
 * orch.fork, orch.exec, init mode) and any C module that starts or watches
 * processes.
 *
 * Ownership: this file is the only reaper of the process (see proc.h). The
 * per-runtime proc_state holds one unref'd SIGCHLD uv_signal_t whose
 * callback loops wait4(-1, WNOHANG | WUNTRACED | WCONTINUED) (the walk,
 * when a signal needs it) and dispatches
 * each status (an exit, a stop or a continue) to the
 * orch__child registered for that pid in a hash table; a registered child's
 * exit usually comes first, and without the walk, through the proc
 * connector's event (exitconn.c: one socket for all children, then a wait
 * by pid), its wait in an io_uring ring (waitring.c) or its pidfd (an epoll
 * set); unknown pids are
 * adopted orphans, handed to the one orphan callback (l_proc.c's). A
 * registered child holds the loop (orch__hold). The children themselves
 * (orch__child) belong to their callers. Group waits (waitpid(-pgid) over
 * the table) are answered here too: the exits nobody was told of are kept
 * (malloc'ed records, freed when taken, seen or forgotten), and the waits
 * themselves belong to their callers.
 *
 * Spawning is spawner.c's (the clone/exec child, started spawns); it
 * shares proc_state through proc_int.h and registers its children here.
 *
 * No Lua here. What may block: nothing (the parent is suspended only until
 * the child has exec'd or failed; /proc reads of the safe kill are short).
 */
#include "proc_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "procfs.h"
#include "util.h"

/* ---------------------------------------------------------------- state */

/* An exit nobody was told of, kept for the next group wait that asks. */
typedef struct kept_exit {
  struct kept_exit *next;
  pid_t pid, pgid;
  int status;
  unsigned long long serial;
} kept_exit;

proc_state *orch__proc_state(orch_runtime *rt) {
  return *orch__slot(rt, ORCH__SLOT_PROC);
}

/* The state, made at the first child when no binding module made it yet
 * (the modules open when first used: a C host's orch__spawn, or a spawn
 * before orch.proc opened, finds none). NULL when it cannot be made. */
proc_state *orch__proc_need(orch_runtime *rt) {
  proc_state *st = orch__proc_state(rt);
  if (!st && orch__proc_open(rt, orch_loop(rt)) == 0) st = orch__proc_state(rt);
  return st;
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

/* The tag of c's wait in the ring: its pid, and its serial's low bits (a
 * completion for an earlier child of the same pid is not c's). */
static unsigned long long ring_tag(const orch__child *c) {
  return (unsigned long long)(uint32_t)c->pid | (unsigned long long)(uint32_t)c->serial << 32;
}

/* At most this many children wait in the ring at once. Each pending wait
 * sits on orch's child-exit wait queue, which the kernel runs through at
 * every child's exit: with n waits, an exit costs O(n) in the exiting
 * child, and n children ending together O(n^2) (a stop of all at 10,000:
 * 1.9 s against 0.56 s by the walk). The children past it are reaped
 * through their pidfd or the walk. */
#define RING_WAITS_MAX 2048

void orch__proc_table_add(proc_state *st, orch__child *c) {
  if (st->count >= (st->mask + 1) * 2) table_grow(st);
  c->serial = ++st->serial;
  size_t k = (size_t)c->pid & st->mask;
  c->next = st->buckets[k];
  st->buckets[k] = c;
  st->count++;
  orch__hold(st->rt, 1);
  /* Its exit through the proc connector's event or the ring (no walk);
   * without either (not used, or the ring refused it), through its pidfd
   * or the walk. */
  c->ring_wait = 0;
  c->sig_seen = 0;
  if (st->ring && st->nwait < RING_WAITS_MAX && orch__waitring_add(st->ring, c->pid, ring_tag(c)) == 0) {
    c->ring_wait = 1;
    st->nwait++;
  }
}

static void ring_drop(proc_state *st, orch__child *c) {
  if (!c->ring_wait) return;
  c->ring_wait = 0;
  st->nwait--;
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

/* Whether a spawn asks the kernel for its child's pidfd (not when the
 * connector or the ring tells of its exit). */
int orch__proc_pidfd_wanted(proc_state *st) {
  if (st->epfd < 0 || st->ring || st->conn) return 0;
  if (st->pidfds_off) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rl.rlim_cur == RLIM_INFINITY || st->count < rl.rlim_cur / 8))
      st->pidfds_off = 0;
  }
  return !st->pidfds_off;
}

/* c was born with pidfd: its exit is watched through it, or, when the fd
 * does not fit (pidfd_fits), left to the walk. */
void orch__proc_pidfd_watch(proc_state *st, orch__child *c, int pidfd) {
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
      ring_drop(st, c);
      orch__hold(st->rt, -1);
      return c;
    }
  }
  return NULL;
}

void orch__child_add(orch_runtime *rt, orch__child *c) {
  c->start_ticks = 0;
  c->pidfd = -1;
  c->ring_wait = 0;
  proc_state *st = orch__proc_need(rt);
  if (st) orch__proc_table_add(st, c);
}

/* No group wait is ended here (it would run Lua): the only caller that
 * forgets a running child is its object's __gc, when the Lua state closes. */
void orch__child_remove(orch_runtime *rt, orch__child *c) {
  proc_state *st = orch__proc_state(rt);
  if (st) table_take(st, c->pid, c);
}

orch__child *orch__child_find(orch_runtime *rt, pid_t pid) {
  proc_state *st = orch__proc_state(rt);
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
  proc_state *st = orch__proc_state(rt);
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
  proc_state *st = orch__proc_state(rt);
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
  proc_state *st = orch__proc_state(rt);
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

unsigned long long orch__proc_boot_ns(void) {
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
 * about to be) through its ring wait or pidfd, or by pid with the
 * connector, is explained, and makes no walk. Anything
 * else walks: a stop or continue, an unknown pid (an adopted orphan, a
 * child forked outside the table), a SIGCHLD sent by kill, a signal without
 * its record (the ring overflowed, the wrapper was not in place).
 *
 * SIGCHLD is a standard signal: one raised while another is pending is
 * merged into it, and its siginfo is lost. An event merged into a watched
 * exit's signal is seen only by a walk, so the walk is made at every
 * SIGCHLD whenever such an event may come: once orch has been a subreaper
 * (or is pid 1: orphans), while a registered child has neither a ring wait
 * nor a pidfd (and the connector is not used), once a
 * child has stopped or continued, and with more than one runtime in the
 * process. (The connector hears of every child's exit whatever the kernel
 * merged, but of no stop, and of an orphan's exit only if it was adopted
 * before it ended; its lost events make one walk.) The first stop of a
 * child that the kernel merges into the pending signal of another child's
 * exit would be seen only at the next walk, which may never come: so a
 * SIGCHLD explained without a walk arms the late walk, late_ms() later (at
 * most one a late_ms(), and none while no SIGCHLD comes: an idle orch never
 * wakes for it). */
#define LATE_MS 1000
#define LATE_MS_MAX 10000

/* The late walk's delay: LATE_MS up to 1,000 children, LATE_MS more for
 * each 1,000 more (at most LATE_MS_MAX), so that what it costs a second (a
 * walk looks at every child) stays about a walk over 1,000 children's,
 * whatever the fleet: at 10,000 children a walk a second would cost each
 * restart's second more than the restart itself. */
static uint64_t late_ms(const proc_state *st) {
  uint64_t k = st->count / 1000;
  uint64_t ms = LATE_MS * (k ? k : 1);
  return ms < LATE_MS_MAX ? ms : LATE_MS_MAX;
}
#define RING 1024
static struct {
  _Atomic unsigned long seq;  /* index + 1 once pid and code are written */
  int pid, code;
  int quiet;                  /* libuv's handler was not called for it */
} ring[RING];
static _Atomic unsigned long ring_head;
static void (*uv_chld)(int);  /* libuv's handler, which the wrapper calls */
static int nstates;           /* runtimes with a process table */
/* Whether an exit's SIGCHLD may leave libuv's handler out (quiet_set):
 * the connector's event for that exit, which the kernel sends right after
 * the signal, wakes the loop, and its callback reads the signal's record.
 * libuv's handler costs the exit three system calls before anything else
 * runs (a read and a write of its lock pipe, a write to the loop's signal
 * pipe) and the loop three more after (the pipe's read, then the reaper's
 * second look at the connector and the pidfds), all on the way from a
 * service's exit to its restart. Set by the loop thread, for that thread:
 * a signal another thread (a libuv worker) takes goes through libuv. */
static _Atomic int quiet;
static pthread_t quiet_thread;
/* Orphans may be adopted at any time: orch is pid 1, or has been a
 * subreaper. Process-wide, like both. -1: to be read (getpid, prctl) at the
 * next SIGCHLD, not at each: it is so at first, and again in the child of
 * any fork (a new pid, and not a subreaper after fork(2): an atfork
 * handler); orch making itself a subreaper sets it (orch__proc_subreaper). */
static int orphans = -1;
static pthread_once_t orphans_once = PTHREAD_ONCE_INIT;

static int orphans_now(void) {
  int v = 0;
  return getpid() == 1 || (prctl(PR_GET_CHILD_SUBREAPER, &v, 0, 0, 0) == 0 && v);
}

static void orphans_forget(void) { orphans = -1; }
static void orphans_atfork(void) { pthread_atfork(NULL, NULL, orphans_forget); }

int orch__proc_adopts(void) {
  pthread_once(&orphans_once, orphans_atfork);
  if (orphans < 0) orphans = orphans_now();
  return orphans;
}

void orch__proc_subreaper(int on) {
  if (orphans < 0) orphans = orphans_now();   /* what it was until now */
  if (on) orphans = 1;
}

/* (pthread_self reads the thread pointer: safe in a handler with glibc.) */
static void chld_info(int sig, siginfo_t *si, void *uc) {
  (void)uc;
  int code = si->si_code;
  int q = (code == CLD_EXITED || code == CLD_KILLED || code == CLD_DUMPED) &&
          atomic_load_explicit(&quiet, memory_order_acquire) && orphans == 0 &&
          pthread_equal(pthread_self(), quiet_thread);
  unsigned long i = atomic_fetch_add_explicit(&ring_head, 1, memory_order_relaxed);
  ring[i % RING].pid = si->si_pid;
  ring[i % RING].code = code;
  ring[i % RING].quiet = q;
  atomic_store_explicit(&ring[i % RING].seq, i + 1, memory_order_release);
  if (!q) uv_chld(sig);
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

/* The pids reaped before their SIGCHLD's record was read: one slot a pid
 * (its low bits), so that a burst of exits (a stop of all) is looked up in
 * constant time; a pid that finds its slot taken by another's replaces it,
 * and the other's record, when it comes, makes a walk. */
static void owed_add(proc_state *st, pid_t pid) {
  st->owed[(unsigned)pid % ORCH__OWED] = pid;
}

static int owed_take(proc_state *st, pid_t pid) {
  pid_t *o = &st->owed[(unsigned)pid % ORCH__OWED];
  if (*o != pid) return 0;
  *o = 0;
  return 1;
}

/* Whether pid is still a child of orch's, ended or not (waitid with
 * WNOWAIT takes nothing). An exit's record whose pid is not one any more,
 * and whose slot in owed another pid took (pid % ORCH__OWED: children
 * whose pids are 4,096 apart, as on a machine whose other processes fork a
 * lot, reaped before their records were read), was reaped already, by pid:
 * nothing is left for a walk to find. One that is (an adopted orphan, a
 * spawn's child not registered yet) still walks. */
static int still_child(pid_t pid) {
  siginfo_t si;
  int r;
  do r = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT); while (r < 0 && errno == EINTR);
  return r == 0 || errno != ECHILD;
}

/* At most this many pids wait to be reaped by pid (the events of a stop of
 * all come together); past it, the walk takes them. */
#define GONE_MAX (1 << 17)

/* pid ended (the connector said so, or its SIGCHLD's record): reaped by
 * pid at the next gone_reap. */
static void gone_add(proc_state *st, pid_t pid) {
  if (st->ngone == st->gone_cap) {
    size_t n = st->gone_cap ? st->gone_cap * 2 : 64;
    pid_t *g = n <= GONE_MAX ? realloc(st->gone, n * sizeof *g) : NULL;
    if (!g) { st->conn_lost = 1; return; }   /* the walk finds it */
    st->gone = g;
    st->gone_cap = n;
  }
  st->gone[st->ngone++] = pid;
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
    if (ring[i].quiet) st->ncb++;               /* delivered, without a callback */
    if (code == CLD_EXITED || code == CLD_KILLED || code == CLD_DUMPED) {
      orch__child *c = orch__child_find(st->rt, pid);
      if (c && (c->pidfd >= 0 || c->ring_wait)) { c->sig_seen = 1; continue; }   /* its pidfd or wait follows */
      /* With the connector, reaped by pid after the records (its event, if
       * not read yet, then finds it gone). */
      if (c && st->conn) { c->sig_seen = 1; gone_add(st, pid); continue; }
      if (!c && owed_take(st, pid)) continue;
      if (!c && !still_child(pid)) continue;
    } else if (code == CLD_STOPPED || code == CLD_CONTINUED || code == CLD_TRAPPED) {
      st->stops = 1;
    }
    ok = 0;
  }
  /* A delivered SIGCHLD without its record: the walk covers it. */
  if (st->ncb > st->nrec) { st->nrec = st->ncb; ok = 0; }
  /* With the connector every child's exit has its event, unless some were
   * lost. */
  if (st->conn_lost) ok = 0;
  if (orphans < 0) orphans = orphans_now();
  if (orphans || st->stops || nstates > 1) ok = 0;
  if (!st->conn && st->count > st->npidfd + st->nwait) ok = 0;
  return ok;
}

/* Whether the next exits' SIGCHLDs may leave libuv's handler out: only
 * where the connector's event follows each of them (subscribed, nothing
 * lost; no orphan can be adopted, whose exit as a zombie reparented to
 * orch has no event of orch's; one runtime), and where no signal is
 * needed for anything else: no walk due (no child stopped or continued
 * once) and no pid waiting to be waitable (a group leader whose last
 * thread has not ended yet: its signal comes after its event). */
static void quiet_set(proc_state *st) {
  if (orphans < 0 && st->conn) orphans = orphans_now();
  int q = st->conn && st->hasconn && !st->conn_lost && !st->stops && nstates == 1 &&
          st->ngone == 0 && orphans == 0;
  if (q) quiet_thread = pthread_self();
  atomic_store_explicit(&quiet, q, memory_order_release);
}

/* An exit the reaper collected: to the child registered for pid, or to the
 * orphan callback. */
static void dispatch_exit(proc_state *st, pid_t pid, int status, const struct rusage *ru) {
  /* With the connector, its event may still come (or be read again). */
  if (st->conn) st->reaped[(unsigned)pid % ORCH__OWED] = pid;
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

/* The walk: wait4(-1) makes the kernel look at each of orch's children in
 * turn (1 us at 100 children, 0.3-1.3 ms at 10,000: scripts/bench.d/
 * waitwalk.c), so it runs only when SIGCHLD came, once per loop turn.
 * Stops and continues are reported too (WUNTRACED, WCONTINUED): the child
 * stays in the table and its on_stop hears of them; an adopted orphan's are
 * not exits and go nowhere. */
static void release_late(proc_state *st);

static void reap(proc_state *st) {
  /* A started spawn's child is registered once it has exec'd: before any
   * status is taken, so that none of them is taken for an orphan's. */
  orch__spawner_settle(st);
  release_late(st);
  /* The exits whose events were lost are zombies now (the event follows
   * exit_notify), so this walk finds them. */
  st->conn_lost = 0;
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
  if (st->epfd < 0 || st->npidfd == 0) return;
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

/* The children whose wait in the ring completed have ended: each is reaped
 * by pid (wait4, which gives its rusage; the wait left it a zombie). A
 * completion is checked against the table first, as a pidfd's event is. A
 * wait that ended otherwise (the child was reaped by a walk, or the ring
 * refused it) leaves the child to the walk. */
static void ring_reap(proc_state *st) {
  if (!st->ring) return;
  unsigned long long tag;
  int res;
  while (st->ring && orch__waitring_next(st->ring, &tag, &res)) {
    pid_t pid = (pid_t)(tag & 0xffffffffu);
    orch__child *c = orch__child_find(st->rt, pid);
    if (!c || !c->ring_wait || ring_tag(c) != tag) continue;
    int status;
    struct rusage ru;
    pid_t r = 0;
    if (res == 0)
      do r = wait4(pid, &status, WNOHANG, &ru); while (r < 0 && errno == EINTR);
    if (r == pid) {
      st->ring_exits++;
      if (!c->sig_seen) owed_add(st, pid);
      dispatch_exit(st, pid, status, &ru);
    } else {
      ring_drop(st, c);
    }
  }
}

static void on_ring(uv_poll_t *h, int status, int events) {
  ring_reap(h->data);
}

/* pid's exit (status and rusage as wait4 gives them) without reaping it
 * (waitid's WNOWAIT): pid, 0 while it has not ended (or cannot be waited
 * for yet), -1 when it is no child. The kernel's release of a zombie
 * (release_task: its pid's /proc entries dropped, 10-35 us) then comes
 * after the exit's callback, whose restart's clone3 need not wait for it;
 * the pid cannot be taken by another process meanwhile. */
static pid_t exit_peek(pid_t pid, int *status, struct rusage *ru) {
  siginfo_t si;
  long r;
  si.si_pid = 0;
  do r = syscall(SYS_waitid, P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT, ru);
  while (r < 0 && errno == EINTR);
  if (r < 0) return -1;
  if (si.si_pid != pid) return 0;
  switch (si.si_code) {
    case CLD_EXITED: *status = (si.si_status & 0xff) << 8; break;
    case CLD_KILLED: *status = si.si_status & 0x7f; break;
    case CLD_DUMPED: *status = (si.si_status & 0x7f) | 0x80; break;
    default: return 0;
  }
  return pid;
}

/* Reaps pid, whose exit was taken already (a zombie of orch's). */
static void release(pid_t pid) {
  pid_t r;
  int status;
  do r = wait4(pid, &status, WNOHANG, NULL); while (r < 0 && errno == EINTR);
}

/* The zombies whose exits were taken, released (after the loop turn's
 * tasks; before a walk, which would take them for orphans). */
static void release_late(proc_state *st) {
  for (size_t i = 0; i < st->nlate; i++) release(st->late_pids[i]);
  st->nlate = 0;
}

static void on_release(uv_prepare_t *h) {
  uv_prepare_stop(h);
  release_late(h->data);
}

static void late_add(proc_state *st, pid_t pid) {
  if (st->nlate == st->late_cap) {
    size_t n = st->late_cap ? st->late_cap * 2 : 16;
    pid_t *g = realloc(st->late_pids, n * sizeof *g);
    if (!g) { release(pid); return; }
    st->late_pids = g;
    st->late_cap = n;
  }
  st->late_pids[st->nlate++] = pid;
  uv_prepare_start(&st->releaser, on_release);
}

static int late_has(const proc_state *st, pid_t pid) {
  for (size_t i = 0; i < st->nlate; i++)
    if (st->late_pids[i] == pid) return 1;
  return 0;
}

void orch__proc_release(orch_runtime *rt) {
  proc_state *st = orch__proc_state(rt);
  if (st) release_late(st);
}

void orch__proc_release_pid(orch_runtime *rt, pid_t pid) {
  proc_state *st = orch__proc_state(rt);
  if (!st) return;
  for (size_t i = 0; i < st->nlate; i++) {
    if (st->late_pids[i] != pid) continue;
    st->late_pids[i] = st->late_pids[--st->nlate];
    release(pid);
    return;
  }
}

void orch__proc_signalled(orch_runtime *rt, pid_t pid) {
  proc_state *st = orch__proc_state(rt);
  orch__child *c = st ? orch__child_find(rt, pid) : NULL;
  if (c) c->signalled = 1;
}

/* The pids said to have ended, each reaped by pid (wait4(pid), which the
 * kernel answers without looking at the other children). One not
 * waitable yet stays (an older kernel sends the event before the child is
 * a zombie; a group leader waits for its other threads); one that is no
 * child (reaped already, by its record or a walk) goes. A pid nobody
 * registered may be a started spawn's child: the spawns settle first, as
 * before a walk; then it is an adopted orphan's, as the walk would find. */
static void gone_reap(proc_state *st) {
  size_t j = 0;
  for (size_t i = 0; i < st->ngone; i++) {
    pid_t pid = st->gone[i];
    orch__child *c = orch__child_find(st->rt, pid);
    /* Reaped already (by its record, or a walk): its event came after. */
    if (!c && st->reaped[(unsigned)pid % ORCH__OWED] == pid) {
      st->reaped[(unsigned)pid % ORCH__OWED] = 0;
      continue;
    }
    if (!c && st->jobs) {
      orch__spawner_settle(st);
      c = orch__child_find(st->rt, pid);
    }
    /* Taken already, its zombie not released yet. */
    if (!c && late_has(st, pid)) continue;
    int status;
    struct rusage ru;
    pid_t r;
    int peek = c && c->defer_release && !c->signalled;
    if (peek) r = exit_peek(pid, &status, &ru);
    else do r = wait4(pid, &status, WNOHANG, &ru); while (r < 0 && errno == EINTR);
    if (r == pid) {
      st->conn_exits++;
      /* Its SIGCHLD's record, if not read yet, is explained. */
      if (!c || !c->sig_seen) owed_add(st, pid);
      dispatch_exit(st, pid, status, &ru);
      if (peek) late_add(st, pid);
    } else if (r == 0) {
      st->gone[j++] = pid;
    }
  }
  st->ngone = j;
}

/* The connector's new events: their pids to gone; an overflow (events
 * lost) makes the next walk due. */
static void conn_drain(proc_state *st) {
  if (!st->conn) return;
  pid_t pid;
  int r;
  while ((r = orch__exitconn_next(st->conn, &pid)) != 0) {
    if (r > 0) {
      gone_add(st, pid);
    } else {
      st->overflows++;
      st->conn_lost = 1;
    }
  }
}

static void on_walk(uv_check_t *h);
static void on_late(uv_timer_t *h);

/* The connector's socket is readable, or in error: libuv stops the handle
 * on an error, which an overflow is (the read clears it), so it is started
 * again; an error that no overflow explains leaves the connector out, and
 * the walk takes its place. */
static void on_conn(uv_poll_t *h, int status, int events) {
  proc_state *st = h->data;
  unsigned long long over = st->overflows;
  conn_drain(st);
  /* The records of the SIGCHLDs that did not wake the loop (quiet: these
   * are their exits' events), read as on_sigchld reads them. */
  int fresh = atomic_load_explicit(&ring_head, memory_order_acquire) != st->tail;
  int ok = !fresh || explained(st);
  gone_reap(st);
  if (status < 0 && st->conn) {
    if (st->overflows != over) {
      uv_poll_start(&st->connpoll, UV_READABLE, on_conn);
    } else {
      uv_poll_stop(&st->connpoll);
      orch__exitconn_close(st->conn);
      st->conn = NULL;
      st->conn_lost = 1;
    }
  }
  if (st->conn_lost || !ok) uv_check_start(&st->walker, on_walk);
  else if (fresh && !uv_is_active((uv_handle_t *)&st->late)) uv_timer_start(&st->late, on_late, late_ms(st), 0);
  quiet_set(st);
}

static void walk(proc_state *st) {
  st->walks++;
  reap(st);
}

static void on_walk(uv_check_t *h) {
  uv_check_stop(h);
  walk(h->data);
  quiet_set(h->data);
}

static void on_late(uv_timer_t *h) {
  proc_state *st = h->data;
  st->late_walks++;
  reap(st);
  quiet_set(st);
}

/* SIGCHLD: the children that ended with a pidfd are reaped at once (a
 * restart's new process does not wait for the walk); the walk, when the
 * signal needs one (explained()), after the loop turn's callbacks, once
 * however many SIGCHLDs came in that turn. */
static void on_sigchld(uv_signal_t *h, int sig) {
  proc_state *st = h->data;
  ring_reap(st);
  pidfd_reap(st);
  conn_drain(st);
  st->ncb++;
  st->signals++;
  int ok = explained(st);
  gone_reap(st);
  if (!ok) uv_check_start(&st->walker, on_walk);
  else if (!uv_is_active((uv_handle_t *)&st->late)) uv_timer_start(&st->late, on_late, late_ms(st), 0);
  quiet_set(st);
}

void orch__proc_reap(orch_runtime *rt) {
  proc_state *st = orch__proc_state(rt);
  if (!st) return;
  ring_reap(st);
  pidfd_reap(st);
  conn_drain(st);
  gone_reap(st);
  walk(st);
}

void orch__proc_reaper_stats(orch_runtime *rt, orch__reaper_stats *s) {
  proc_state *st = orch__proc_state(rt);
  memset(s, 0, sizeof *s);
  s->mode = "walk";
  if (!st) return;
  s->children = st->count;
  s->pidfds = st->npidfd;
  s->waits = st->nwait;
  s->walks = st->walks;
  s->late_walks = st->late_walks;
  s->signals = st->signals;
  s->pidfd_exits = st->pidfd_exits;
  s->walk_exits = st->walk_exits;
  s->ring_exits = st->ring_exits;
  s->connector_exits = st->conn_exits;
  s->overflows = st->overflows;
  s->late_ms = late_ms(st);
  s->events = st->conn ? orch__exitconn_events(st->conn) : 0;
  s->mode = st->conn ? "connector" : st->ring ? "ring" : st->epfd >= 0 ? "pidfd" : "walk";
}

void orch__proc_on_orphan(orch_runtime *rt, orch__orphan_fn fn, void *data) {
  proc_state *st = orch__proc_need(rt);
  if (!st) return;
  st->on_orphan = fn;
  st->orphan_data = data;
}

int orch__proc_devnull(orch_runtime *rt) {
  proc_state *st = orch__proc_need(rt);
  if (!st) return -ENOSYS;
  if (st->devnull < 0) {
    st->devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (st->devnull < 0) return -errno;
  }
  return st->devnull;
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
    int fd = orch__fd_pidfd_lent(pid);
    if (fd < 0 && errno != ENOSYS) {
      int e = errno;
      orch__fd_spare_settle();
      return -e;
    }
    unsigned long long t = 0;
    int r = orch__procfs_start_time(pid, &t);
    if (r == 0 && t != start) r = -ESRCH;
    if (r == 0) {
      if (group) r = killpg(pid, sig) < 0 ? -errno : 0;
      else if (fd >= 0) r = syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0) < 0 ? -errno : 0;
      else r = kill(pid, sig) < 0 ? -errno : 0;
    }
    if (fd >= 0) close(fd);
    orch__fd_spare_settle();
    return r;
  }
  int r = group ? killpg(pid, sig) : kill(pid, sig);
  return r < 0 ? -errno : 0;
}

/* ---------------------------------------------------------------- signalling every child */

int orch__proc_signal_children(orch_runtime *rt, int sig) {
  proc_state *st = orch__proc_state(rt);
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
  proc_state *st = orch__proc_state(rt);
  return st && st->init_on;
}

void orch__proc_set_init_active(orch_runtime *rt, int on) {
  proc_state *st = orch__proc_need(rt);
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
  free(st->gone);
  free(st->late_pids);
  free(st->buckets);
  free(st);
}

/* Closes the handles (then state_free frees st), the epoll set and the
 * ring (its waits are cancelled). */
static void state_close(proc_state *st) {
  st->nopen = 4 + st->haspoll + st->hasring + st->hasconn;
  release_late(st);
  uv_close((uv_handle_t *)&st->releaser, state_free);
  uv_close((uv_handle_t *)&st->sigchld, state_free);
  uv_close((uv_handle_t *)&st->walker, state_free);
  uv_close((uv_handle_t *)&st->late, state_free);
  if (st->haspoll) uv_close((uv_handle_t *)&st->pidpoll, state_free);
  if (st->hasring) uv_close((uv_handle_t *)&st->ringpoll, state_free);
  if (st->hasconn) uv_close((uv_handle_t *)&st->connpoll, state_free);
  if (st->epfd >= 0) close(st->epfd);
  st->epfd = -1;
  orch__waitring_close(st->ring);
  st->ring = NULL;
  orch__exitconn_close(st->conn);
  st->conn = NULL;
}

/* The Lua state may already be closed here: no Lua. */
static void proc_close_hook(orch_runtime *rt, void *data) {
  proc_state *st = data;
  *orch__slot(rt, ORCH__SLOT_PROC) = NULL;
  orch__spawner_close(st);
  if (st->devnull >= 0) close(st->devnull);
  st->devnull = -1;
  waits_clear(st);
  /* The children still registered keep running; their pidfds go. */
  for (size_t i = 0; i <= st->mask; i++)
    for (orch__child *c = st->buckets[i]; c; c = c->next)
      if (c->pidfd >= 0) { close(c->pidfd); c->pidfd = -1; }
  uv_signal_stop(&st->sigchld);
  atomic_store(&quiet, 0);
  state_close(st);
}

/* In a fork child: every child in the table belongs to the parent. */
static void proc_fork_hook(orch_runtime *rt, void *data) {
  proc_state *st = data;
  /* The parent's connector until the child has one (read again at its
   * first SIGCHLD). */
  atomic_store(&quiet, 0);
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
  st->nwait = 0;
  st->init_on = 0;
  st->nlate = 0;                            /* the parent's zombies */
  uv_prepare_stop(&st->releaser);
  /* Started spawns are the parent's (their jobs settle as failed here,
   * before anything in the child can wait for them). */
  orch__spawner_fork(st);
  /* Their exits and the tasks waiting for groups are the parent's. */
  kept_clear(st);
  waits_clear(st);
  /* The runtime stopped every handle; the child reaps its own children.
   * The epoll set is the parent's (an inherited epoll fd is the same set):
   * a new one takes its number, so the poll handle watches it. */
  uv_signal_start(&st->sigchld, on_sigchld, SIGCHLD);
  uv_unref((uv_handle_t *)&st->sigchld);
  chld_wrap();
  /* No child yet (whether orphans may be adopted is read again at the
   * first SIGCHLD: orphans_forget); the ring goes on. */
  st->tail = atomic_load(&ring_head);
  st->ncb = st->nrec = 0;
  memset(st->owed, 0, sizeof st->owed);
  st->stops = 0;
  if (st->epfd >= 0) {
    int fd = epoll_create1(EPOLL_CLOEXEC), number = st->epfd;
    if (fd >= 0 && orch__fd_renumber(&fd, &number) == 0) {
      uv_poll_start(&st->pidpoll, UV_READABLE, on_pidfd);
    } else {
      /* No set of its own: the child's children are reaped by the walk. */
      if (fd >= 0) close(fd);
      uv_poll_stop(&st->pidpoll);
      close(st->epfd);
      st->epfd = -1;
    }
  }
  /* The ring is the parent's too (its waits): a new one takes its fd. */
  if (st->ring) {
    if (orch__waitring_fork(&st->ring) == 0) uv_poll_start(&st->ringpoll, UV_READABLE, on_ring);
    else uv_poll_stop(&st->ringpoll);
  }
  /* So is the connector's socket (its filter names the parent); the exits
   * it told of are the parent's children's. Without one of its own, the
   * child's children are reaped by the walk. */
  st->ngone = 0;
  st->conn_lost = 0;
  memset(st->reaped, 0, sizeof st->reaped);
  if (st->conn) {
    if (orch__exitconn_fork(&st->conn) == 0) uv_poll_start(&st->connpoll, UV_READABLE, on_conn);
    else uv_poll_stop(&st->connpoll);
  }
}

/* A poll handle (unref'd: it does not keep the loop alive) calling cb when
 * fd is readable. 1, or 0 when libuv refused the fd. */
static int watch(proc_state *st, uv_loop_t *loop, uv_poll_t *h, int fd, uv_poll_cb cb) {
  if (uv_poll_init(loop, h, fd) != 0) return 0;
  h->data = st;
  uv_poll_start(h, UV_READABLE, cb);
  uv_unref((uv_handle_t *)h);
  return 1;
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
  uv_prepare_init(loop, &st->releaser);
  st->releaser.data = st;
  uv_unref((uv_handle_t *)&st->releaser);
  uv_timer_init(loop, &st->late);
  st->late.data = st;
  uv_unref((uv_handle_t *)&st->late);
  /* ORCH_REAPER=ring leaves the connector out, =pidfd the ring too, =walk
   * pidfds too (to measure and test each way on a kernel that has them
   * all); ORCH_REAPER_RCVBUF sets the connector's receive buffer (bytes:
   * a test's overflow). */
  const char *mode = getenv("ORCH_REAPER");
  st->mode = !mode ? 0 : !strcmp(mode, "walk") ? 2 : !strcmp(mode, "pidfd") ? 1 : !strcmp(mode, "ring") ? 3 : 0;
  /* Exits through the proc connector where the kernel lets orch subscribe
   * (one socket, no wait a child). */
  const char *rcv = getenv("ORCH_REAPER_RCVBUF");
  if (st->mode == 0 && orch__exitconn_open(&st->conn, rcv ? atoi(rcv) : 0) == 0) {
    st->hasconn = watch(st, loop, &st->connpoll, orch__exitconn_fd(st->conn), on_conn);
    if (!st->hasconn) {
      orch__exitconn_close(st->conn);
      st->conn = NULL;
    }
  }
  /* Else through the ring where the kernel has it (no fd a child). */
  if (!st->conn && (st->mode == 0 || st->mode == 3) && orch__waitring_open(&st->ring) == 0) {
    st->hasring = watch(st, loop, &st->ringpoll, orch__waitring_fd(st->ring), on_ring);
    if (!st->hasring) {
      orch__waitring_close(st->ring);
      st->ring = NULL;
    }
  }
  /* Without an epoll set (or a poll handle on it) every exit goes to the
   * walk, as before pidfds. */
  st->epfd = st->mode == 2 ? -1 : epoll_create1(EPOLL_CLOEXEC);
  if (st->epfd >= 0 && watch(st, loop, &st->pidpoll, st->epfd, on_pidfd)) {
    st->haspoll = 1;
  } else if (st->epfd >= 0) {
    close(st->epfd);
    st->epfd = -1;
  }
  nstates++;
  pthread_once(&orphans_once, orphans_atfork);
  st->tail = atomic_load(&ring_head);
  int r = uv_signal_start(&st->sigchld, on_sigchld, SIGCHLD);
  if (r < 0) {
    state_close(st);
    return r;
  }
  chld_wrap();
  uv_unref((uv_handle_t *)&st->sigchld);
  *slot = st;
  quiet_set(st);
  orch__on_close(rt, proc_close_hook, st);
  orch__on_fork_child(rt, proc_fork_hook, st);
  return 0;
}
