/*
 * cgroup_members.c: a cgroup's processes (see cgroup.h): adding one,
 * listing them (or its children), cgroup.events (populated, frozen),
 * cgroup.kill with its pid-listing fallback, cgroup.freeze, and the fds a
 * spawn's child joins its cgroups through. It reaches cgroupfs through the
 * held fds and helpers of cgroup.c (cgroup_int.h), moved here unchanged.
 *
 * What may block: nothing for long (cgroupfs reads and writes).
 */
#include "cgroup.h"
#include "cgroup_int.h"
#include "proc.h"
#include "runtime.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int orch__cg_add(const orch__cgroup *cg, pid_t pid) {
  char s[24];
  if (pid == getpid()) orch__cg_forget_self();
  snprintf(s, sizeof s, "%d", (int)pid);
  for (int c = 0; c < ORCH__CG_NCTL; c++) {
    if (!cg->fs[1 + c]) continue;
    int r = orch__cg_write_path(cg->fs[1 + c], "cgroup.procs", s);
    if (r < 0) return r;
  }
  return orch__cg_write_path(cg->fs[0], "cgroup.procs", s);
}

typedef struct { pid_t *p; size_t n, cap; } pidvec;

static int pid_push(pidvec *v, pid_t pid) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 64;
    pid_t *np = realloc(v->p, cap * sizeof *np);
    if (!np) return -ENOMEM;
    v->p = np;
    v->cap = cap;
  }
  v->p[v->n++] = pid;
  return 0;
}

static int push_text(char *text, pidvec *v) {
  int r = 0;
  for (char *p = text; *p; ) {
    char *e;
    long pid = strtol(p, &e, 10);
    if (e == p) break;
    if (pid > 0 && (r = pid_push(v, (pid_t)pid)) < 0) break;
    p = e;
    while (*p == '\n') p++;
  }
  free(text);
  return r;
}

/* The names of the directories in dir (below dfd) into a malloc'ed list
 * of NUL-terminated names; its fd is closed before it returns. */
static int subdirs(int dfd, const char *dir, char **names, size_t *len) {
  int d2 = orch__cg_open_at(dfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, NULL);
  if (d2 < 0) return -errno;
  DIR *d = fdopendir(d2);
  if (!d) { int e = errno; close(d2); orch__fd_spare_settle(); return -e; }
  size_t cap = 0, n = 0;
  char *buf = NULL;
  int r = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
    size_t k = strlen(e->d_name) + 1;
    if (n + k > cap) {
      char *nb = realloc(buf, cap * 2 + k + 64);
      if (!nb) { r = -ENOMEM; break; }
      buf = nb;
      cap = cap * 2 + k + 64;
    }
    memcpy(buf + n, e->d_name, k);
    n += k;
  }
  closedir(d);
  orch__fd_spare_settle();
  if (r < 0) { free(buf); return r; }
  *names = buf;
  *len = n;
  return 0;
}

/* The pids of the cgroups below path (relative to dfd, its directory
 * when plen is 0; path has room for PATH_MAX bytes) into v. One fd at a
 * time: the cgroups' names are read first and their directory closed,
 * and each cgroup.procs is opened by its path from dfd. A stop at EMFILE
 * lists a tree while its pidfds hold what the spares lend: a directory,
 * a cgroup below it and its cgroup.procs open at once took three fds
 * where one was left, and the listing failed. A cgroup removed meanwhile
 * (ENOENT, ENODEV) has nothing to list; any other failure is the
 * listing's: a cgroup it could not open (EMFILE) was once left out as if
 * removed, and its processes were never signalled. */
static int collect_below(int dfd, char *path, size_t plen, pidvec *v) {
  /* cgroupfs (kernfs) counts a directory's subdirectories in its link
   * count (2 + subdirectories): a leaf, the common case, needs no listing
   * (a stop signals hundreds of leaves, each listed once per pass). */
  struct stat st;
  if ((plen ? fstatat(dfd, path, &st, 0) : fstat(dfd, &st)) < 0) return -errno;
  if (st.st_nlink == 2) return 0;
  char *names = NULL;
  size_t len = 0;
  int r = subdirs(dfd, plen ? path : ".", &names, &len);
  if (r < 0) return r;
  static const char procs[] = "/cgroup.procs";
  for (size_t at = 0; r == 0 && at < len; at += strlen(names + at) + 1) {
    const char *name = names + at;
    size_t k = strlen(name), nl = plen + (plen > 0) + k;
    if (nl + sizeof procs > PATH_MAX) { r = -ENAMETOOLONG; break; }
    if (plen) path[plen] = '/';
    memcpy(path + plen + (plen > 0), name, k);
    memcpy(path + nl, procs, sizeof procs);
    char *text;
    r = orch__cg_read_records_at(dfd, path, &text, 16);
    path[nl] = 0;
    if (r == 0) r = push_text(text, v);
    if (r == 0) r = collect_below(dfd, path, nl, v);
    if (r == -ENOENT || r == -ENODEV) r = 0;      /* removed meanwhile */
    path[plen] = 0;
  }
  free(names);
  return r;
}

/* The pids of a cgroup.procs text (freed here) into v; then, with
 * recursive, those of the cgroups below dfd. */
static int collect_text(char *text, int dfd, int recursive, pidvec *v) {
  int r = push_text(text, v);
  if (r < 0 || !recursive) return r;
  char path[PATH_MAX];
  path[0] = 0;
  return collect_below(dfd, path, 0, v);
}

/* The pids of the cgroup (dfd: its directory) through its held
 * cgroup.procs, and with recursive those below it. */
static int procs_of(orch__cgroup *cg, int dfd, int recursive, pid_t **pids, size_t *n) {
  int fresh, pf = orch__cg_held_procs(cg, dfd, &fresh);
  if (pf < 0) return -errno;
  char *text;
  int r = orch__cg_read_records_fd(pf, &text, 16);
  if (fresh) close(pf);
  pidvec v = { NULL, 0, 0 };
  if (r == 0) r = collect_text(text, dfd, recursive, &v);
  if (r < 0) { free(v.p); return r; }
  *pids = v.p;
  *n = v.n;
  return 0;
}

static int procs_now(orch__cgroup *cg, int recursive, pid_t **pids, size_t *n) {
  for (int again = 1;; again = 0) {
    int fresh, dfd = orch__cg_held_dir(cg, &fresh);
    if (dfd < 0) return -errno;
    int r = procs_of(cg, dfd, recursive, pids, n);
    if (fresh) close(dfd);
    else if (again && orch__cg_let_go(cg, dfd, r)) continue;
    return r;
  }
}

/* A stop lists, signals and watches its cgroups with the kill reserve's
 * fds when the spares are out (fdlimit.c): what these open they close. */
int orch__cg_procs(orch__cgroup *cg, int recursive, pid_t **pids, size_t *n) {
  orch__fd_kill_path(1);
  int r = procs_now(cg, recursive, pids, n);
  orch__fd_kill_path(0);
  return r;
}

int orch__cg_children(const orch__cgroup *cg, char **names, size_t *n) {
  DIR *d = opendir(cg->fs[0]);
  if (!d) return -errno;
  size_t cap = 256, len = 0;
  char *buf = malloc(cap);
  int r = buf ? 0 : -ENOMEM;
  *n = 0;
  struct dirent *e;
  while (r == 0 && (e = readdir(d))) {
    if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
    size_t k = strlen(e->d_name) + 1;
    if (len + k > cap) {
      char *nb = realloc(buf, cap * 2 + k);
      if (!nb) { r = -ENOMEM; break; }
      buf = nb;
      cap = cap * 2 + k;
    }
    memcpy(buf + len, e->d_name, k);
    len += k;
    (*n)++;
  }
  closedir(d);
  if (r < 0) { free(buf); return r; }
  *names = buf;
  return 0;
}

/* The last cgroup.events read (loop thread only, as the layout): a
 * restart reads it to see that the old run's cgroup is empty, and the spawn
 * into the same cgroup right after takes that read's "frozen" instead of
 * opening the file again (orch__cg_frozen). */
static struct {
  unsigned long long ns;             /* CLOCK_MONOTONIC of the read; 0: none */
  int frozen;
  char path[PATH_MAX];
} last_events;

static unsigned long long mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

int orch__cg_events(orch__cgroup *cg, int *populated, int *frozen) {
  char buf[256];
  ssize_t r;
  if (cg->events >= 0) {
    r = orch__cg_read_held(&cg->events, cg->fs[0], "cgroup.events", buf, sizeof buf);
  } else {
    orch__fd_kill_path(1);
    r = orch__cg_read_held(&cg->events, cg->fs[0], "cgroup.events", buf, sizeof buf);
    orch__fd_kill_path(0);
  }
  if (r < 0) return (int)r;
  long long p = orch__cg_keyed(buf, "populated"), f = orch__cg_keyed(buf, "frozen");
  if (populated) *populated = p > 0;
  if (frozen) *frozen = f > 0;
  size_t len = strlen(cg->path);
  if (len < sizeof last_events.path) {
    memcpy(last_events.path, cg->path, len + 1);
    last_events.frozen = f > 0;
    last_events.ns = mono_ns();
  }
  return 0;
}

int orch__cg_dir_frozen(const char *dir) {
  char buf[256];
  ssize_t r = orch__cg_read_path(dir, "cgroup.events", buf, sizeof buf);
  if (r < 0) return (int)r;
  return orch__cg_keyed(buf, "frozen") > 0;
}

/* A read less than this old stands for one made now: a freeze that lands
 * after it could as well land between a read of our own and the clone. */
#define EVENTS_FRESH_NS 1000000ull

int orch__cg_frozen(orch__cgroup *cg, int *frozen) {
  unsigned long long then = last_events.ns;
  last_events.ns = 0;                /* taken once */
  if (then && mono_ns() - then < EVENTS_FRESH_NS && strcmp(last_events.path, cg->path) == 0) {
    *frozen = last_events.frozen;
    return 0;
  }
  return orch__cg_events(cg, NULL, frozen);
}

int orch__cg_holds_self(const orch__cgroup *cg) {
  char self[PATH_MAX];
  int r = orch__cg_of(0, -1, self, sizeof self);
  if (r < 0) return r;
  return orch__cg_beneath(self, cg->path);
}

/* A pin of orch__cg_kill that is no pidfd: the pid is orch's child. */
#define PIN_CHILD (-2)

/* Is pid a child of orch's, not reaped (running, or ended and waiting for
 * orch's wait4)? Its pid cannot be reused until orch reaps it. Asked only
 * where orch adopts orphans (*adopts, read at the first call: a subreaper,
 * or pid 1), so that a listed process can be its child without orch having
 * spawned it; elsewhere the pidfd's pin costs no waitid more. */
static int is_child(pid_t pid, int *adopts) {
  if (*adopts < 0) *adopts = orch__proc_adopts();
  if (!*adopts) return 0;
  siginfo_t si;
  int r;
  do r = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT); while (r < 0 && errno == EINTR);
  return r == 0;
}

static int listed(const pid_t *list, size_t n, pid_t pid) {
  for (size_t j = 0; j < n; j++)
    if (list[j] == pid) return 1;
  return 0;
}

static int kill_now(orch__cgroup *cg, int sig, int flags, const pid_t *skip, size_t nskip, int *signalled);

int orch__cg_kill(orch__cgroup *cg, int sig, int flags, const pid_t *skip, size_t nskip, int *signalled) {
  if (signalled) *signalled = 0;
  orch__fd_kill_path(1);
  int r = kill_now(cg, sig, flags, skip, nskip, signalled);
  orch__fd_kill_path(0);
  return r;
}

static int kill_now(orch__cgroup *cg, int sig, int flags, const pid_t *skip, size_t nskip, int *signalled) {
  int r = orch__cg_holds_self(cg);
  if (r < 0) return r;
  if (r) return -EPERM;
  /* One directory fd for everything below (the held one). */
  int fresh, dfd = orch__cg_held_dir(cg, &fresh);
  if (dfd < 0) return -errno;
  if (sig == SIGKILL && !(flags & ORCH__CG_KILL_LIST)) {
    r = orch__cg_write_at(dfd, "cgroup.kill", "1");
    if (!fresh && orch__cg_let_go(cg, dfd, r)) {
      if ((dfd = orch__cg_held_dir(cg, &fresh)) < 0) return -errno;
      r = orch__cg_write_at(dfd, "cgroup.kill", "1");
    }
    if (r != -ENOENT) {                   /* 0, or a real failure */
      if (fresh) close(dfd);
      return r;
    }
    r = 0;
  }
  /* Without cgroup.kill (before Linux 5.14), or for another signal: each
   * listed process once; a pass that finds new pids (forked meanwhile)
   * signals those, until a pass finds none. A pid is pinned and signalled
   * only if the cgroup still lists it after that: then the pin names a
   * member (the listed process, or one that reused its pid inside the
   * cgroup), never a stranger. Where orch adopts orphans (a subreaper),
   * a pid that is orch's own child, not reaped (an escapee reparented to
   * orch: the usual double-forked daemon, or a process orch spawned), is
   * pinned by that alone: its pid cannot name another process until orch
   * reaps it, which no thread does meanwhile (every wait4 runs on the loop
   * thread; the ring's waits leave the child unreaped), and
   * waitid(WNOWAIT) asks that without an fd (a pidfd's open and close are
   * most of a listed signal's cost). Any other pid is pinned with a pidfd;
   * where pidfd_open fails (ENOSYS before Linux 5.3, or a container's
   * seccomp profile) it is left unsignalled, never signalled by a pid that
   * may have changed, and the call fails with that error once the others
   * are signalled. Never pid 1 nor orch itself. A fork bomb outrunning
   * 100 passes is left to the caller's next call. */
  /* A pass pins the listed pids it has not seen and lists again: that
   * listing confirms the pinned ones and is the next pass's (a pid in it
   * not seen yet was forked meanwhile), so the usual case, nothing
   * forked, costs two reads of cgroup.procs (one when only pids the
   * caller signalled are listed: a pread and an fstat on held fds). */
  /* The pids the caller signalled itself count as done: never signalled
   * here, so a process that handles the signal gets it once. */
  pidvec done = { NULL, 0, 0 };
  for (size_t i = 0; i < nskip && r == 0; i++) r = pid_push(&done, skip[i]);
  if (r < 0) { if (fresh) close(dfd); free(done.p); return r; }
  int count = 0, adopts = -1;
  /* orch's own pid, asked (getpid) only once a listed pid is not one the
   * caller signalled: a stop's listing of a leaf usually finds only its
   * main process, or nothing. */
  pid_t self = 0, *list = NULL;
  size_t n = 0;
  int below = !(flags & ORCH__CG_KILL_LEAF);
  r = procs_of(cg, dfd, below, &list, &n);
  if (!fresh && orch__cg_let_go(cg, dfd, r)) {
    if ((dfd = orch__cg_held_dir(cg, &fresh)) < 0) { free(done.p); return -errno; }
    r = procs_of(cg, dfd, below, &list, &n);
  }
  /* Out of fds (EMFILE: the services took them all), a pass pins what it
   * can (one pid at least, with a spare fd) and leaves the rest to the
   * next pass. The listing that confirms the pins needs an fd of its own
   * (one at a time, however deep the tree: collect_below): while it fails
   * at EMFILE, the last pin is given back to the next pass, so that one
   * pinned process at least is confirmed and signalled. Such a pass does
   * not count. A listed process that cannot be pinned (pidfd_open refused
   * for another reason than its end) or signalled is missed: an error
   * once the passes are over, with *signalled telling how many were. */
  int miss = 0;                         /* the first missed one's errno */
  for (int pass = 0; r == 0 && pass < 100; ) {
    pid_t *again = NULL;
    size_t n2 = 0;
    int *pfd = malloc((n ? n : 1) * sizeof *pfd);
    if (!pfd) { r = -ENOMEM; break; }
    int fresh_pids = 0, pinned = 0, children = 0, cut = 0;
    for (size_t i = 0; i < n; i++) {
      pfd[i] = -1;
      if (cut || listed(done.p, done.n, list[i])) continue;
      if (!self) self = getpid();
      if (list[i] <= 1 || list[i] == self) {
        if (r == 0) r = pid_push(&done, list[i]);
        continue;
      }
      if (is_child(list[i], &adopts)) {
        pfd[i] = PIN_CHILD;
        fresh_pids++;
        children++;
        if (r == 0) r = pid_push(&done, list[i]);
        continue;
      }
      int fd = (int)syscall(SYS_pidfd_open, list[i], 0), e = fd < 0 ? errno : 0;
      if ((e == EMFILE || e == ENFILE) && !pinned && orch__fd_spare_lend()) {
        fd = (int)syscall(SYS_pidfd_open, list[i], 0);
        e = fd < 0 ? errno : 0;
      }
      if (e == EMFILE || e == ENFILE) {
        cut = 1;
        continue;
      }
      pfd[i] = fd;
      fresh_pids++;
      pinned += fd >= 0;
      if (fd < 0 && e != ESRCH && !miss) miss = e;   /* never signalled by its number */
      if (r == 0) r = pid_push(&done, list[i]);
    }
    if (cut && !pinned && !children && r == 0) r = -EMFILE;
    while (fresh_pids && r == 0) {
      r = procs_of(cg, dfd, below, &again, &n2);
      if ((r != -EMFILE && r != -ENFILE) || !(pinned > 1 || (pinned && children))) break;
      for (size_t i = n; i-- > 0; ) {
        if (pfd[i] < 0) continue;          /* a child's pin holds no fd */
        close(pfd[i]);
        pfd[i] = -1;
        for (size_t k = done.n; k-- > 0; )
          if (done.p[k] == list[i]) { done.p[k] = done.p[--done.n]; break; }
        fresh_pids--;
        pinned--;
        cut = 1;
        break;
      }
      r = 0;
    }
    if (fresh_pids && r == 0) {
      for (size_t i = 0; i < n; i++) {
        if ((pfd[i] < 0 && pfd[i] != PIN_CHILD) || !listed(again, n2, list[i])) continue;
        if ((pfd[i] == PIN_CHILD ? kill(list[i], sig) : (int)syscall(SYS_pidfd_send_signal, pfd[i], sig, NULL, 0)) == 0)
          count++;
        else if (errno != ESRCH && !miss)
          miss = errno;
      }
    }
    for (size_t i = 0; i < n; i++)
      if (pfd[i] >= 0) close(pfd[i]);
    if (cut) orch__fd_spare_settle();
    free(pfd);
    free(list);
    list = again;
    n = n2;
    if (!fresh_pids) break;
    if (!cut) pass++;
  }
  free(list);
  if (fresh) close(dfd);
  free(done.p);
  if (signalled) *signalled = count;
  if (r == 0 && miss) r = -miss;
  return r < 0 ? r : count;
}

long long orch__cg_descendants(orch__cgroup *cg) {
  char buf[512];
  ssize_t r = orch__cg_read_path(cg->fs[0], "cgroup.stat", buf, sizeof buf - 1);
  if (r < 0) return (long long)r;
  buf[r] = 0;
  long long d = orch__cg_keyed(buf, "nr_descendants");
  return d < 0 ? -ENODATA : d;
}

int orch__cg_freeze(orch__cgroup *cg, int on) {
  int r = orch__cg_holds_self(cg);
  if (r < 0) return r;
  if (r) return -EPERM;
  int fresh, dfd = orch__cg_held_dir(cg, &fresh);
  if (dfd < 0) return -errno;
  r = orch__cg_write_at(dfd, "cgroup.freeze", on ? "1" : "0");
  if (!fresh && orch__cg_let_go(cg, dfd, r)) {
    if ((dfd = orch__cg_held_dir(cg, &fresh)) < 0) return -errno;
    r = orch__cg_write_at(dfd, "cgroup.freeze", on ? "1" : "0");
  }
  if (fresh) close(dfd);
  last_events.ns = 0;                /* what it said may be untrue now */
  return r == -ENOENT ? -ENOTSUP : r;
}

int orch__cg_join_fds(orch__cgroup *cg, int v2_too, int *fds, int max, int *dirfd, int *dir_owned) {
  int n = 0;
  if (dirfd) {
    /* The held directory itself (the clone only reads it, and nothing runs
     * between the two calls that could close it), or above the fd budget a
     * fresh one the caller closes (*dir_owned). Its cgroup.procs, held for
     * the listing of a stop, is opened here only below
     * ORCH__CG_LAZY_NOFILE: the first open of a file of a new cgroup makes
     * its kernfs node (about 5 us of a start's 170 a service), and the
     * first listing opens it below the held directory (the supervisor's
     * does it once its start is over). */
    int fresh, dfd = orch__cg_held_dir(cg, &fresh);
    if (dfd < 0) return -errno;
    *dirfd = dfd;
    *dir_owned = fresh;
    if (!fresh && cg->procs < 0 && orch__nofile_soft() < ORCH__CG_LAZY_NOFILE) {
      int pf = orch__cg_held_procs(cg, dfd, &fresh);
      if (pf >= 0 && fresh) close(pf);
    }
  }
  char p[PATH_MAX];
  for (int c = 0; c < ORCH__CG_NCTL && n < max; c++) {
    const char *m = cg->fs[1 + c];
    if (!m) continue;
    int dup_of_earlier = 0;
    for (int k = 0; k < c; k++)
      if (cg->fs[1 + k] && strcmp(cg->fs[1 + k], m) == 0) dup_of_earlier = 1;
    if (dup_of_earlier) continue;
    snprintf(p, sizeof p, "%s/cgroup.procs", m);
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0) goto fail;
    fds[n++] = fd;
  }
  if (v2_too && n < max) {
    snprintf(p, sizeof p, "%s/cgroup.procs", cg->fs[0]);
    int at;
    const char *rel = orch__cg_at_v2(p, &at);
    int fd = openat(at, rel, O_WRONLY | O_CLOEXEC);
    if (fd < 0) goto fail;
    fds[n++] = fd;
  }
  return n;
fail: {
    int e = errno;
    while (n > 0) close(fds[--n]);
    if (dirfd) {
      if (*dir_owned) close(*dirfd);
      *dirfd = -1;
    }
    return -e;
  }
}
