/*
 * cgroup.c: the cgroup mechanism (see cgroup.h): discovery from
 * /proc/self/mountinfo and /proc/PID/cgroup, paths, trust, controllers,
 * create/open/remove and the held fds. Accounting and limits (v2 or the v1
 * controller behind one interface) are in cgroup_res.c; the members
 * (membership, listing, cgroup.events, cgroup.kill with its pid-listing
 * fallback, cgroup.freeze) in cgroup_members.c. Both read and write
 * cgroupfs through the helpers this file shares in cgroup_int.h; this file
 * calls nothing of theirs.
 *
 * Ownership: an orch__cgroup owns its malloc'ed strings and the fds of
 * its accounting files and cgroup.events while it holds them
 * (orch__cg_close frees them).
 * The kernel objects (the directories) are removed only by
 * orch__cg_remove. The layout is a static read once per process, with one
 * O_PATH fd of the v2 mount that lookups below it start from (v2fd, held
 * for the process's life, close-on-exec).
 *
 * What may block: nothing for long (cgroupfs and /proc reads and writes).
 */
#include "cgroup.h"
#include "cgroup_int.h"
#include "procfs.h"
#include "runtime.h"
#include "util.h"

#include <dirent.h>
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
#include <time.h>
#include <unistd.h>

const char *const orch__cg_ctl_names[ORCH__CG_NCTL] = { "memory", "pids", "cpu", "io" };
const char *const orch__cg_v2only_names[ORCH__CG_NV2ONLY] = { "cpuset", "hugetlb", "rdma", "misc" };
const char *const orch__cg_limit_names[ORCH__CG_NLIMITS] = {
  "memory_max", "memory_high", "swap_max", "pids_max", "cpu_max", "cpu_weight", "io_weight"
};

/* ---------------------------------------------------------------- files */

/* openat of a cgroup file or directory. At EMFILE or ENFILE (the services
 * took every fd: log pipes, and starts that keep failing for want of fds)
 * one of the runtime's spare fds is lent to it (fdlimit.c; *lent is set
 * then, when lent is not NULL: such an fd is never held) and taken back
 * once the caller closed this one: a stop must still list, signal and
 * watch the cgroups whose processes, once gone, free the fds. */
int orch__cg_open_at(int dirfd, const char *name, int flags, int *lent) {
  return orch__fd_open_at(dirfd, name, flags, 0, lent);
}

/* Reads a file of any size into a malloc'ed, NUL-terminated string. With
 * maxrec > 0, for a seq file whose records are at most maxrec bytes
 * (cgroup.procs): a read of at most a page that returns more than maxrec
 * bytes short of what it asked for ended at the end of the file (a seq
 * file's read stops short only there, or before a record that would not
 * fit its page), and no read is made to see the end: listing a cgroup of
 * a few hundred processes is one read. */
int orch__cg_read_records_fd(int fd, char **out, size_t maxrec) {
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  if (!buf) return -ENOMEM;
  for (;;) {
    if (n + 1 >= cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) { free(buf); return -ENOMEM; }
      buf = nb;
      cap *= 2;
    }
    size_t want = cap - 1 - n;
    /* pread from 0 on: a seq file read again from offset 0 is made anew,
     * so a held fd lists the cgroup as it is now. */
    ssize_t k = pread(fd, buf + n, want, (off_t)n);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) { int e = errno; free(buf); return -e; }
    if (k == 0) break;
    n += (size_t)k;
    /* One read fills at most the kernel's page-sized buffer: the rule
     * holds for reads that asked for no more. */
    if (maxrec && want <= 4096 && (size_t)k + maxrec < want) break;
  }
  buf[n] = 0;
  *out = buf;
  return 0;
}

int orch__cg_read_records_at(int dirfd, const char *name, char **out, size_t maxrec) {
  int fd = orch__cg_open_at(dirfd, name, O_RDONLY | O_CLOEXEC, NULL);
  if (fd < 0) return -errno;
  int r = orch__cg_read_records_fd(fd, out, maxrec);
  close(fd);
  /* A spare lent to it is taken back at once, before anything that keeps
   * its fd (the v2 mount's, a new cgroup's directory) takes the number. */
  orch__fd_spare_settle();
  return r;
}

static int read_all_at(int dirfd, const char *name, char **out) {
  return orch__cg_read_records_at(dirfd, name, out, 0);
}

int orch__cg_write_at(int dirfd, const char *name, const char *s) {
  int fd = orch__cg_open_at(dirfd, name, O_WRONLY | O_CLOEXEC, NULL);
  if (fd < 0) return -errno;
  size_t len = strlen(s);
  ssize_t k;
  do k = write(fd, s, len); while (k < 0 && errno == EINTR);
  int e = k < 0 ? errno : 0;
  close(fd);
  orch__fd_spare_settle();
  return -e;
}

/* The v2 hierarchy's mount, held open (O_PATH) once the layout is read:
 * a path below it is opened relative to this fd (at_v2), so that a lookup
 * walks only the components below the mount instead of /sys/fs/cgroup/...
 * again (each component a kernfs revalidation and permission check; a
 * start and a stop of a service open a dozen cgroup files). */
static int v2fd = -1;
/* Its open failed for want of fds (EMFILE, ENFILE): tried again at the next
 * lookup, with the spares taken back first (a held fd is never a spare). */
static int v2fd_retry;

static void v2fd_open(void);

int orch__cg_write_path(const char *dir, const char *name, const char *s) {
  char p[PATH_MAX];
  if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, name) >= sizeof p) return -ENAMETOOLONG;
  int dfd;
  const char *rel = orch__cg_at_v2(p, &dfd);
  return orch__cg_write_at(dfd, rel, s);
}

ssize_t orch__cg_read_path(const char *dir, const char *name, char *buf, size_t size) {
  char p[PATH_MAX];
  if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, name) >= sizeof p) return -ENAMETOOLONG;
  int dfd;
  const char *rel = orch__cg_at_v2(p, &dfd);
  return orch__read_small(dfd, rel, buf, size);
}

/* The value of "key N" in a flat keyed file (cpu.stat, memory.events), or -1. */
long long orch__cg_keyed(const char *text, const char *key) {
  size_t kl = strlen(key);
  for (const char *p = text; p && *p; ) {
    if (strncmp(p, key, kl) == 0 && p[kl] == ' ') return strtoll(p + kl + 1, NULL, 10);
    p = strchr(p, '\n');
    if (p) p++;
  }
  return -1;
}

/* A single-value file: a number, or "max" (ORCH__CG_UNLIMITED); v1 writes
 * "unlimited" as a huge number. -1 when unreadable. */
static long long value_at(int dirfd, const char *name) {
  char buf[64];
  if (orch__read_small(dirfd, name, buf, sizeof buf) <= 0) return -1;
  if (strncmp(buf, "max", 3) == 0) return ORCH__CG_UNLIMITED;
  long long v = strtoll(buf, NULL, 10);
  if (v >= (1LL << 62)) return ORCH__CG_UNLIMITED;
  return v;
}

long long orch__cg_value_path(const char *dir, const char *name) {
  char p[PATH_MAX];
  if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, name) >= sizeof p) return -1;
  int dfd;
  const char *rel = orch__cg_at_v2(p, &dfd);
  return value_at(dfd, rel);
}

/* ---------------------------------------------------------------- layout */

static orch__cg_layout layout;
static int layout_state;     /* 0 unread, 1 read, < 0 -errno */

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s) {
  char *w = s;
  for (char *r = s; *r; ) {
    if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
      *w++ = (char)(((r[1] - '0') << 6) | ((r[2] - '0') << 3) | (r[3] - '0'));
      r += 4;
    } else {
      *w++ = *r++;
    }
  }
  *w = 0;
}

static int has_token(const char *list, const char *tok) {
  size_t tl = strlen(tok);
  for (const char *p = list; p; p = strchr(p, ',')) {
    if (*p == ',') p++;
    if (strncmp(p, tok, tl) == 0 && (p[tl] == ',' || p[tl] == 0)) return 1;
  }
  return 0;
}

static void copy(char *dst, size_t size, const char *src) {
  snprintf(dst, size, "%s", src);
}

static int read_layout(void) {
  char *text;
  int r = read_all_at(AT_FDCWD, "/proc/self/mountinfo", &text);
  if (r < 0) return r;
  memset(&layout, 0, sizeof layout);
  for (char *line = text, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = 0;
    /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPER */
    char *f[6], *save = NULL;
    int i = 0;
    char *t = strtok_r(line, " ", &save);
    while (t && i < 6) {
      f[i++] = t;
      if (i < 6) t = strtok_r(NULL, " ", &save);
    }
    if (i < 6) continue;
    while ((t = strtok_r(NULL, " ", &save)) && strcmp(t, "-") != 0) {}
    if (!t) continue;
    char *fstype = strtok_r(NULL, " ", &save);
    strtok_r(NULL, " ", &save);
    char *super = strtok_r(NULL, " ", &save);
    if (!fstype || !super) continue;
    unescape(f[3]);
    unescape(f[4]);
    if (strcmp(fstype, "cgroup2") == 0) {
      /* The first v2 mount wins, unless a later one shows the whole tree. */
      if (!layout.v2_mount[0] || (strcmp(f[3], "/") == 0 && strcmp(layout.v2_root, "/") != 0)) {
        copy(layout.v2_mount, sizeof layout.v2_mount, f[4]);
        copy(layout.v2_root, sizeof layout.v2_root, f[3]);
      }
    } else if (strcmp(fstype, "cgroup") == 0) {
      for (int c = 0; c < ORCH__CG_NCTL; c++) {
        if (!layout.v1_mount[c][0] && has_token(super, orch__cg_ctl_names[c])) {
          copy(layout.v1_mount[c], sizeof layout.v1_mount[c], f[4]);
          copy(layout.v1_root[c], sizeof layout.v1_root[c], f[3]);
        }
      }
    }
  }
  free(text);
  return layout.v2_mount[0] ? 1 : -ENOENT;
}

static void v2fd_open(void) {
  orch__fd_spare_settle();
  v2fd = open(layout.v2_mount, O_PATH | O_DIRECTORY | O_CLOEXEC);
  v2fd_retry = v2fd < 0 && (errno == EMFILE || errno == ENFILE);
}

/* path as (dirfd, relative path): relative to v2fd below the v2 mount,
 * else (AT_FDCWD, path). */
const char *orch__cg_at_v2(const char *path, int *dfd) {
  *dfd = AT_FDCWD;
  if (v2fd < 0 && v2fd_retry) v2fd_open();
  if (v2fd < 0) return path;
  size_t ml = strlen(layout.v2_mount);
  while (ml > 1 && layout.v2_mount[ml - 1] == '/') ml--;
  if (strncmp(path, layout.v2_mount, ml) != 0 || (path[ml] != '/' && path[ml] != 0)) return path;
  const char *rel = path + ml;
  while (*rel == '/') rel++;
  *dfd = v2fd;
  return *rel ? rel : ".";
}

const orch__cg_layout *orch__cg_layout_get(int *err) {
  if (layout_state == 0) {
    layout_state = read_layout();
    if (layout_state > 0) v2fd_open();
  }
  if (layout_state < 0) {
    if (err) *err = layout_state;
    return NULL;
  }
  return &layout;
}

/* orch's own /proc/self/cgroup, read once: it changes only when orch is
 * moved, which orch__cg_add of orch itself notices. */
static char *self_cgroup;
/* Where relative paths start from once orch moved itself into its leaf
 * (into_leaf): the v2 cgroup it was started in. NULL until then. */
static char *home_cgroup;

int orch__cg_of(pid_t pid, int ctl, char *buf, size_t size) {
  char p[64], *text;
  int r;
  if (pid) {
    if ((r = orch__procfs_pid_path(pid, "cgroup", p, sizeof p)) < 0) return r;
    r = read_all_at(AT_FDCWD, p, &text);
  } else {
    if (!self_cgroup && (r = read_all_at(AT_FDCWD, "/proc/self/cgroup", &self_cgroup)) < 0) return r;
    text = strdup(self_cgroup);
    r = text ? 0 : -ENOMEM;
  }
  if (r < 0) return r;
  r = -ENOENT;
  for (char *line = text, *next; line && *line; line = next) {
    next = strchr(line, '\n');
    if (next) *next++ = 0;
    char *c1 = strchr(line, ':');
    char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c2) continue;
    *c1 = *c2 = 0;
    int match = ctl < 0 ? (strcmp(line, "0") == 0 && c1[1] == 0)
                        : has_token(c1 + 1, orch__cg_ctl_names[ctl]);
    if (match) {
      r = (size_t)snprintf(buf, size, "%s", c2 + 1) >= size ? -ENAMETOOLONG : 0;
      break;
    }
  }
  free(text);
  return r;
}

int orch__cg_home(char *buf, size_t size) {
  if (!home_cgroup) return orch__cg_of(0, -1, buf, size);
  return (size_t)snprintf(buf, size, "%s", home_cgroup) >= size ? -ENAMETOOLONG : 0;
}

/* ---------------------------------------------------------------- paths */

static int check_path(const char *path) {
  if (!*path) return -EINVAL;
  const char *p = path;
  if (*p == '/') p++;
  if (!*p) return 0;                      /* "/": the root */
  for (;;) {
    const char *e = strchrnul(p, '/');
    size_t n = (size_t)(e - p);
    if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) return -EINVAL;
    if (n > 255 || strncmp(p, "cgroup.", 7) == 0) return -EINVAL;
    if (!*e) return 0;
    p = e + 1;
  }
}

const char *orch__cg_path_error(const char *path) {
  if (!*path) return "empty cgroup path";
  if (check_path(path) < 0) return "each component of a cgroup path must be a plain name";
  return NULL;
}

/* Is the v2 path `inner` at or below `outer`? */
int orch__cg_beneath(const char *inner, const char *outer) {
  size_t ol = strlen(outer);
  while (ol > 0 && outer[ol - 1] == '/') ol--;
  return strncmp(inner, outer, ol) == 0 && (inner[ol] == '/' || inner[ol] == 0);
}


/* The path in hierarchy ctl (-1: v2) that `path` means, malloc'ed. A v1
 * mirror sits at the same place relative to orch's own v1 cgroup as the v2
 * cgroup relative to orch's own v2 cgroup (an absolute path outside orch's
 * own cgroup is taken as is in every hierarchy). */
static int resolve(const char *path, int ctl, char **out) {
  char self[PATH_MAX], self1[PATH_MAX];
  int r = orch__cg_home(self, sizeof self);
  if (r < 0) return r;
  size_t sl = strlen(self);
  while (sl > 0 && self[sl - 1] == '/') self[--sl] = 0;
  const char *rel;
  if (path[0] != '/') rel = path;
  else if (orch__cg_beneath(path, self) && ctl >= 0) rel = path + sl;
  else rel = NULL;
  while (rel && *rel == '/') rel++;
  if (!rel || (ctl < 0 && path[0] == '/')) {
    *out = strdup(path);
    return *out ? 0 : -ENOMEM;
  }
  if (ctl >= 0) {
    if ((r = orch__cg_of(0, ctl, self1, sizeof self1)) < 0) return r;
    sl = strlen(self1);
    while (sl > 0 && self1[sl - 1] == '/') self1[--sl] = 0;
    memcpy(self, self1, sl + 1);
  }
  if (asprintf(out, "%s%s%s", self, *rel ? "/" : "", rel) < 0) return -ENOMEM;
  if (!**out) { free(*out); *out = strdup("/"); if (!*out) return -ENOMEM; }
  return 0;
}

/* Where the hierarchy path cgp (of a mount with root `root` at `mount`) is
 * in the file system, malloc'ed. -ENOENT if outside that mount. */
static int fs_path(const char *mount, const char *root, const char *cgp, char **out) {
  size_t rl = strlen(root);
  while (rl > 0 && root[rl - 1] == '/') rl--;
  if (strncmp(cgp, root, rl) != 0 || (cgp[rl] != '/' && cgp[rl] != 0)) return -ENOENT;
  const char *rest = cgp + rl;
  while (*rest == '/') rest++;
  int n = *rest ? asprintf(out, "%s/%s", mount, rest) : asprintf(out, "%s", mount);
  return n < 0 ? -ENOMEM : 0;
}

/* mkdir -p of dir below `base` (which exists), for the v1 mirrors. With
 * exclusive, the last component must be new. */
static int mkdirs(const char *base, const char *dir, int exclusive) {
  char buf[PATH_MAX];
  size_t bl = strlen(base);
  if (strlen(dir) >= sizeof buf) return -ENAMETOOLONG;
  strcpy(buf, dir);
  for (char *p = buf + bl; ; ) {
    while (*p == '/') p++;
    if (!*p) return 0;
    char *e = strchrnul(p, '/');
    int last = *e == 0;
    char save = *e;
    *e = 0;
    if (mkdir(buf, 0755) < 0 && (errno != EEXIST || (last && exclusive))) return -errno;
    *e = save;
    if (last) return 0;
    p = e;
  }
}

/* The bit of controller name in a controller mask (orch's four, then the
 * v2-only ones at ORCH__CG_V2ONLY), or 0; and the name of a bit. */
static unsigned ctl_bit(const char *name, size_t len) {
  for (int c = 0; c < ORCH__CG_NCTL; c++)
    if (strlen(orch__cg_ctl_names[c]) == len && strncmp(name, orch__cg_ctl_names[c], len) == 0) return 1u << c;
  for (int c = 0; c < ORCH__CG_NV2ONLY; c++)
    if (strlen(orch__cg_v2only_names[c]) == len && strncmp(name, orch__cg_v2only_names[c], len) == 0)
      return 1u << (ORCH__CG_V2ONLY + c);
  return 0;
}

static const char *bit_name(unsigned bit) {
  for (int c = 0; c < ORCH__CG_NCTL; c++)
    if (bit == 1u << c) return orch__cg_ctl_names[c];
  for (int c = 0; c < ORCH__CG_NV2ONLY; c++)
    if (bit == 1u << (ORCH__CG_V2ONLY + c)) return orch__cg_v2only_names[c];
  return "?";
}

/* The controllers named in a space-separated list (cgroup.controllers,
 * cgroup.subtree_control) that orch knows, as a mask. */
static unsigned parse_controllers(const char *list) {
  unsigned m = 0;
  for (const char *p = list; *p; ) {
    p += strspn(p, " \n");
    size_t n = strcspn(p, " \n");
    if (n) m |= ctl_bit(p, n);
    p += n;
  }
  return m;
}

/* What the last failed step of a create or set was, for the binding's
 * message (loop thread only, like the layout). */
static char why_buf[PATH_MAX + 256];

/* The v2 path ("/a/b") of the v2 directory dir, for messages. */
static const char *v2_name(const char *dir, char *buf, size_t size) {
  size_t ml = strlen(layout.v2_mount);
  const char *rest = strncmp(dir, layout.v2_mount, ml) == 0 ? dir + ml : dir;
  while (*rest == '/') rest++;
  const char *root = strcmp(layout.v2_root, "/") == 0 ? "" : layout.v2_root;
  if ((size_t)snprintf(buf, size, "%s/%s", root, rest) >= size) buf[size - 1] = 0;   /* a message: cut */
  return buf;
}

static void why(const char *fmt, const char *ctl, const char *dir) {
  char name[PATH_MAX];
  snprintf(why_buf, sizeof why_buf, fmt, ctl, v2_name(dir, name, sizeof name));
}

/* The kernel enables a domain controller for the children of a cgroup
 * only while that cgroup holds no process itself ("no internal processes";
 * the root is exempt). A service manager that delegates a cgroup (systemd's
 * Delegate=yes) starts orch inside it: so when dir is orch's own cgroup,
 * orch moves itself into a leaf below it, ORCH__CG_LEAF, and relative paths
 * go on starting from dir (orch__cg_home). Only orch moves (no other
 * process is orch's to move): if another process is there, enabling fails
 * with EBUSY, and orch does not move at all (a move that cannot make room
 * would only leave a leaf behind and change orch's cgroup for nothing).
 * 0, or -errno. */
#define ORCH__CG_LEAF "supervisor"
/* 1 when orch is the only process of the v2 directory dir (its
 * cgroup.procs lists orch's pid alone: threads are not listed), 0 when
 * another is there, or -errno. A buffer of 64 bytes holds orch's line and
 * the start of any other. */
static int alone_in(const char *dir) {
  char b[64], own[24];
  ssize_t k = orch__cg_read_path(dir, "cgroup.procs", b, sizeof b - 1);
  if (k < 0) return (int)k;
  b[k] = 0;
  int n = snprintf(own, sizeof own, "%d\n", (int)getpid());
  return (size_t)k == (size_t)n && memcmp(b, own, (size_t)n) == 0;
}

static int trusted_level(const char *dir, int v2);

static int into_leaf(const char *dir) {
  if (home_cgroup) return -EBUSY;
  char self[PATH_MAX], leaf[PATH_MAX], pid[24];
  char *fs = NULL;
  int r = orch__cg_of(0, -1, self, sizeof self);
  if (r == 0) r = fs_path(layout.v2_mount, layout.v2_root, self, &fs);
  if (r < 0) return r;
  int mine = strcmp(fs, dir) == 0;
  free(fs);
  if (!mine) return -EBUSY;
  if ((r = alone_in(dir)) <= 0) return r < 0 ? r : -EBUSY;
  if ((size_t)snprintf(leaf, sizeof leaf, "%s/%s", dir, ORCH__CG_LEAF) >= sizeof leaf) return -ENAMETOOLONG;
  /* A leaf found there (an earlier orch's, or one another made) is
   * joined only when nobody but orch's uid or root can change it, as any
   * cgroup orch builds on (trusted_level, why_buf saying why not): its
   * owner could freeze orch, kill it (cgroup.kill), or limit it. */
  if (mkdir(leaf, 0755) < 0) {
    if (errno != EEXIST) return -errno;
    if ((r = trusted_level(leaf, 1)) < 0) return r;
  }
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  if ((r = orch__cg_write_path(leaf, "cgroup.procs", pid)) < 0) return r;
  if (!(home_cgroup = strdup(self))) return -ENOMEM;
  orch__cg_forget_self();
  return 0;
}

/* Whether the kernel lets controller `name` be enabled in a cgroup that
 * holds processes: the threaded ones orch knows (cgroup-v2.rst, "Threads";
 * perf_event is one too). But that
 * makes the cgroup a threaded root ("domain threaded"), and every domain
 * cgroup below it "domain invalid": no process can join them, no
 * controller be enabled in them (EOPNOTSUPP). So orch enables them only
 * where no process is, as the domain ones (the root aside, which the
 * kernel exempts: it has no cgroup.type). */
static int threaded_ctl(const char *name) {
  return strcmp(name, "cpu") == 0 || strcmp(name, "cpuset") == 0 || strcmp(name, "pids") == 0;
}

/* 1 when the v2 directory dir holds a process itself (its children's
 * aside) and is not the root; 0; or -errno. */
static int holds_process(const char *dir) {
  char b[16];
  ssize_t k = orch__cg_read_path(dir, "cgroup.type", b, sizeof b);
  if (k == -ENOENT) return 0;
  if (k < 0) return (int)k;
  k = orch__cg_read_path(dir, "cgroup.procs", b, sizeof b);
  if (k < 0) return (int)k;
  return k > 0;
}

/* Enables the controllers of `want` (a mask) for the children of the v2
 * directory dir where its subtree_control lacks them, moving orch out of
 * the way first when dir is its own cgroup (into_leaf). *got is then what
 * dir's subtree_control has: what its children get. Reads one file when
 * nothing is missing. 0, or -errno with why_buf saying which step failed:
 * -ENOTSUP when dir's parent does not offer the controller, -EBUSY when a
 * process other than orch is inside dir, -EACCES when orch may not write
 * it, -EOPNOTSUPP, ... as the kernel says. */
static int enable_at(const char *dir, unsigned want, unsigned *got) {
  char enabled[512], offered[512], cmd[64];
  ssize_t k = orch__cg_read_path(dir, "cgroup.subtree_control", enabled, sizeof enabled);
  if (k < 0) { why("%sreading %s/cgroup.subtree_control", "", dir); return (int)k; }
  unsigned have = parse_controllers(enabled), missing = want & ~have;
  *got = have;
  if (!missing) return 0;
  k = orch__cg_read_path(dir, "cgroup.controllers", offered, sizeof offered);
  if (k < 0) { why("%s: reading %s/cgroup.controllers", bit_name(missing & -missing), dir); return (int)k; }
  unsigned offers = parse_controllers(offered);
  for (unsigned bit = 1; bit && bit <= missing; bit <<= 1) {
    if (!(missing & bit)) continue;
    const char *name = bit_name(bit);
    if (!(offers & bit)) {
      why("%s: not offered to %s by its parent (cgroup.controllers)", name, dir);
      return -ENOTSUP;
    }
    snprintf(cmd, sizeof cmd, "+%s", name);
    int r;
    int m = 0;
    if (threaded_ctl(name) && (r = holds_process(dir)) != 0 && (r < 0 || (m = into_leaf(dir)) < 0 ||
                                                                 (r = holds_process(dir)) != 0)) {
      if (r < 0) { why("%s: reading %s/cgroup.procs", name, dir); return r; }
      if (m == -EPERM || m == -EACCES) return m;          /* an untrusted leaf: why_buf says so */
      why("%s: enabling it in %s/cgroup.subtree_control (a process is inside that cgroup, and there the "
          "kernel would make it a threaded root, whose child cgroups take no process)", name, dir);
      return -EBUSY;
    }
    r = orch__cg_write_path(dir, "cgroup.subtree_control", cmd);
    if (r == -EBUSY) {
      m = into_leaf(dir);
      if (m == -EPERM || m == -EACCES) return m;
      if (m == 0) r = orch__cg_write_path(dir, "cgroup.subtree_control", cmd);
    }
    if (r == -EBUSY) {
      why("%s: enabling it in %s/cgroup.subtree_control (a process is inside that cgroup, and the kernel "
          "enables a controller only for the children of a cgroup without processes)", name, dir);
      return r;
    }
    if (r < 0) { why("%s: enabling it in %s/cgroup.subtree_control", name, dir); return r; }
    have |= bit;
    *got = have;
  }
  return 0;
}

/* The v2 directory orch enables controllers from, for a cgroup at dir:
 * orch's own cgroup (orch__cg_home) when dir is below it, else the
 * mount's root. orch writes no subtree_control above it: what its own
 * cgroup is offered is its service manager's (or delegator's) to say. */
static char *chain_top(const char *dir) {
  char home[PATH_MAX];
  char *fs = NULL;
  if (orch__cg_home(home, sizeof home) == 0 &&
      fs_path(layout.v2_mount, layout.v2_root, home, &fs) == 0) {
    size_t n = strlen(fs);
    while (n > 1 && fs[n - 1] == '/') fs[--n] = 0;
    if (strncmp(dir, fs, n) == 0 && dir[n] == '/') return fs;
  }
  free(fs);
  return strdup(layout.v2_mount);
}

/* What the top of dir's chain is offered (its cgroup.controllers): the
 * controllers orch can have in v2 for a cgroup at dir. */
static unsigned offered_at(const char *top) {
  char buf[512];
  if (orch__cg_read_path(top, "cgroup.controllers", buf, sizeof buf) < 0) return 0;
  return parse_controllers(buf);
}

unsigned orch__cg_v2_offered(void) {
  char home[PATH_MAX];
  char *fs = NULL;
  if (!orch__cg_layout_get(NULL) || orch__cg_home(home, sizeof home) < 0 ||
      fs_path(layout.v2_mount, layout.v2_root, home, &fs) < 0)
    return 0;
  unsigned m = offered_at(fs);
  free(fs);
  return m;
}

/* ---------------------------------------------------------------- trust */

/* A cgroup orch builds on must be one that only orch's uid or root can
 * change (doc/security.md, "Cgroups"). Whoever may write a cgroup's
 * cgroup.procs may move any process between two cgroups below it that it
 * may write: the kernel checks the writer against the common ancestor's
 * cgroup.procs, not against the process's owner, so a root service could
 * be moved out of its cgroup and escape every stop. Whoever may write a
 * cgroup's directory may remove an empty cgroup of orch's and make its own
 * under the same name; whoever may write its cgroup.subtree_control may
 * take a controller (and so a limit) away from its children. cgroupfs
 * holds no symbolic links and no files but its own: the owner and mode of
 * these are the whole question. */
static const char *const trust_names[] = { NULL, "cgroup.procs", "cgroup.subtree_control", "cgroup.threads" };

/* One level: 0, -EPERM (owner) or -EACCES (mode) with why_buf saying
 * which, -ENOENT when dir does not exist. v2: a directory of the v2 mount
 * (named as /proc/PID/cgroup does), else of a v1 one (named by its path). */
static int trusted_level(const char *dir, int v2) {
  char p[PATH_MAX], name[PATH_MAX];
  for (size_t i = 0; i < sizeof trust_names / sizeof *trust_names; i++) {
    const char *f = trust_names[i];
    if ((size_t)snprintf(p, sizeof p, f ? "%s/%s" : "%s", dir, f) >= sizeof p) return -ENAMETOOLONG;
    int dfd = AT_FDCWD;
    const char *rel = v2 ? orch__cg_at_v2(p, &dfd) : p;
    struct stat sb;
    if (fstatat(dfd, rel, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
      if (errno == ENOENT && f) continue;         /* a v1 hierarchy, an old kernel */
      return -errno;
    }
    uid_t me = geteuid();
    int owner_ok = sb.st_uid == 0 || sb.st_uid == me;
    if (owner_ok && !(sb.st_mode & (S_IWGRP | S_IWOTH)) && (f ? S_ISREG(sb.st_mode) : S_ISDIR(sb.st_mode)))
      continue;
    char what[PATH_MAX + 32];
    const char *d = v2 ? v2_name(dir, name, sizeof name) : dir;
    snprintf(what, sizeof what, "%s%s%s", d, f ? "/" : "", f ? f : "");
    if (!owner_ok)
      snprintf(why_buf, sizeof why_buf, "refused: %s belongs to uid %u, neither orch's uid (%u) nor root: that "
               "user could move processes out of the cgroups below it, or replace them (see doc/security.md)",
               what, (unsigned)sb.st_uid, (unsigned)me);
    else if (sb.st_mode & (S_IWGRP | S_IWOTH))
      snprintf(why_buf, sizeof why_buf, "refused: %s may be written by its group or by every user (mode %04o): "
               "they could move processes out of the cgroups below it, or replace them (see doc/security.md)",
               what, (unsigned)(sb.st_mode & 07777));
    else
      snprintf(why_buf, sizeof why_buf, "refused: %s is not a cgroup's own %s", what, f ? "file" : "directory");
    return owner_ok ? -EACCES : -EPERM;
  }
  return 0;
}

/* Every level from top down to dir, both included (top is dir or an
 * ancestor of it). 1 when all exist and may be trusted, 0 when the walk
 * stopped at one that does not exist (what orch makes below is its own),
 * or the first refusal (trusted_level). */
static int trusted_chain(const char *top, const char *dir, int v2) {
  char buf[PATH_MAX];
  size_t tl = strlen(top);
  if (strlen(dir) >= sizeof buf) return -ENAMETOOLONG;
  strcpy(buf, dir);
  for (char *e = buf + tl; ; ) {
    char save = *e;
    *e = 0;
    int r = trusted_level(buf, v2);
    *e = save;
    if (r == -ENOENT) return 0;
    if (r < 0) return r;
    if (!save) return 1;
    while (*e == '/') e++;
    e = strchrnul(e, '/');
  }
}

/* The last v2 directory whose whole chain was found trusted: the parent of
 * the next cgroup is usually the same (a supervisor's services), and once a
 * chain is trusted only orch's uid or root can change it. */
static char *trusted_v2;

/* For a new cgroup in the v2 directory parent (below top): its chain. */
static int trusted_parent(const char *top, const char *parent) {
  if (trusted_v2 && strcmp(trusted_v2, parent) == 0) return 0;
  int r = trusted_chain(top, parent, 1);
  if (r == 1) {
    free(trusted_v2);
    trusted_v2 = strdup(parent);
  }
  return r < 0 ? r : 0;
}

/* Where the chain of a v1 directory fs of controller c starts: orch's own
 * v1 cgroup when fs is below it, else the mount (as chain_top for v2). */
static char *v1_top(int c, const char *fs) {
  char self1[PATH_MAX];
  char *top = NULL;
  if (orch__cg_of(0, c, self1, sizeof self1) == 0 &&
      fs_path(layout.v1_mount[c], layout.v1_root[c], self1, &top) == 0) {
    size_t n = strlen(top);
    while (n > 1 && top[n - 1] == '/') top[--n] = 0;
    if (strncmp(fs, top, n) == 0 && (fs[n] == '/' || fs[n] == 0)) return top;
  }
  free(top);
  return strdup(layout.v1_mount[c]);
}

/* rmdir of dir and of its `up` nearest ancestors, deepest first (what a
 * failed create made). */
static void unmake(const char *dir, int up) {
  char buf[PATH_MAX];
  snprintf(buf, sizeof buf, "%s", dir);
  for (int i = 0; i <= up; i++) {
    int dfd;
    const char *rel = orch__cg_at_v2(buf, &dfd);
    unlinkat(dfd, rel, AT_REMOVEDIR);
    char *slash = strrchr(buf, '/');
    if (!slash) break;
    *slash = 0;
  }
}

/* A controller reaches a cgroup only if every ancestor enables it for its
 * children. Walks the v2 directories from top down to dir (top is dir or
 * an ancestor of it): with mk, makes those missing (*made counts them; they
 * are the deepest); enables `want` in each (enable_at). *got is what dir
 * enables for its children. With nothing wanted only dir is read, and not
 * even dir when got is NULL. On failure what it made is removed again. */
static int walk_down(const char *top, const char *dir, int mk, unsigned want, unsigned *got, int *made) {
  char buf[PATH_MAX];
  size_t tl = strlen(top);
  if (strlen(dir) >= sizeof buf) return -ENAMETOOLONG;
  strcpy(buf, dir);
  if (made) *made = 0;
  int r = 0;
  char *p = buf + tl, *e = p;           /* the first level is top itself */
  for (;;) {
    int last = *e == 0;
    char save = *e;
    *e = 0;
    if (mk && p != e) {                /* not top, which exists */
      int dfd;
      const char *rel = orch__cg_at_v2(buf, &dfd);
      if (mkdirat(dfd, rel, 0755) == 0) (*made)++;
      else if (errno != EEXIST) {
        r = -errno;
        why("%smaking %s", "", buf);
        *strrchr(buf, '/') = 0;          /* not made: what was is above */
        break;
      }
    }
    if ((want || (last && got)) && (r = enable_at(buf, want, got)) < 0) break;
    *e = save;
    if (last) return 0;
    for (p = e; *p == '/'; p++) {}
    e = strchrnul(p, '/');
  }
  /* buf ends at the level that failed: what was made is it (if made) and
   * the levels above it. */
  if (mk && *made) unmake(buf, *made - 1);
  return r;
}

/* For orch__cg_set (cgroup_res.c), a limit of controller c that the
 * cgroup has neither in v2 nor through a v1 mirror: when the top of its
 * chain is offered c in v2, c is enabled down to the cgroup's parent now
 * (the v2 counterpart of a v1 mirror made at the first limit). 0 (also
 * when c is not offered), or -errno and *where the step that failed. */
int orch__cg_enable_down(orch__cgroup *cg, int c, const char **where) {
  char *top = chain_top(cg->fs[0]);
  if (!top) return -ENOMEM;
  int r = 0;
  size_t tl = strlen(top);
  if (strncmp(cg->fs[0], top, tl) == 0 && cg->fs[0][tl] == '/' && (offered_at(top) & (1u << c))) {
    char *parent = strdup(cg->fs[0]);
    if (!parent) r = -ENOMEM;
    else {
      *strrchr(parent, '/') = 0;
      unsigned got = 0;
      r = walk_down(top, parent, 0, 1u << c, &got, NULL);
      if (r == 0) cg->v2ctl = got;
      free(parent);
    }
  }
  free(top);
  if (r < 0) { *where = why_buf; return r; }
  return 0;
}

static unsigned v2_controllers(const char *dir) {
  char buf[512];
  if (orch__cg_read_path(dir, "cgroup.controllers", buf, sizeof buf) < 0) return 0;
  return parse_controllers(buf);
}

/* ---------------------------------------------------------------- objects */

unsigned orch__cg_v2ctl(orch__cgroup *cg) {
  if (cg->v2ctl != ORCH__CG_V2CTL_UNREAD) return cg->v2ctl;
  char buf[512];
  if (!cg->fs[0] || orch__cg_read_path(cg->fs[0], "cgroup.controllers", buf, sizeof buf) < 0) return 0;
  return cg->v2ctl = parse_controllers(buf);
}

void orch__cg_init(orch__cgroup *cg) {
  memset(cg, 0, sizeof *cg);
  cg->acct[0] = cg->acct[1] = cg->events = -1;
  cg->dir = cg->procs = -1;
}

static void drop_held(orch__cgroup *cg) {
  for (int i = 0; i < 2; i++)
    if (cg->acct[i] >= 0) { close(cg->acct[i]); cg->acct[i] = -1; }
  if (cg->events >= 0) { close(cg->events); cg->events = -1; }
  if (cg->procs >= 0) { close(cg->procs); cg->procs = -1; }
  if (cg->dir >= 0) { close(cg->dir); cg->dir = -1; }
}

/* May fd be kept open for later uses? While its number is below the fd
 * limit divided by div (see orch__cgroup). */
static int may_hold(int fd, rlim_t div) {
  return (rlim_t)fd < orch__nofile_soft() / div;
}

/* The cgroup's v2 directory (O_DIRECTORY): the held fd, opened and kept
 * at the first use, or above the budget a fresh one that *fresh tells the
 * caller to close. -1 with errno set on failure. */
int orch__cg_held_dir(orch__cgroup *cg, int *fresh) {
  *fresh = 0;
  if (cg->dir >= 0) return cg->dir;
  int at;
  const char *rel = orch__cg_at_v2(cg->fs[0], &at);
  int lent, fd = orch__cg_open_at(at, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC, &lent);
  if (fd < 0) return -1;
  if (!lent && may_hold(fd, 8)) cg->dir = fd;
  else *fresh = 1;
  return fd;
}

/* Its cgroup.procs (read), the same way; dfd is its directory. */
int orch__cg_held_procs(orch__cgroup *cg, int dfd, int *fresh) {
  *fresh = 0;
  if (cg->procs >= 0) return cg->procs;
  int lent, fd = orch__cg_open_at(dfd, "cgroup.procs", O_RDONLY | O_CLOEXEC, &lent);
  if (fd < 0) return -1;
  if (!lent && dfd == cg->dir && may_hold(fd, 8)) cg->procs = fd;
  else *fresh = 1;
  return fd;
}

/* A held directory whose cgroup went behind orch's back (removed, perhaps
 * made again under the same name) fails with ENOENT (a file opened below
 * it) or ENODEV (its held cgroup.procs): let go, so that the next use opens
 * the path again. True when the error is that and dfd was the held one. */
int orch__cg_let_go(orch__cgroup *cg, int dfd, int err) {
  if ((err != -ENOENT && err != -ENODEV) || dfd != cg->dir) return 0;
  if (cg->procs >= 0) { close(cg->procs); cg->procs = -1; }
  close(cg->dir);
  cg->dir = -1;
  return 1;
}

/* Reads the small file dir/name through the fd in *slot, opened (and kept
 * there, see orch__cgroup) on first use: one pread at offset 0, which
 * makes cgroupfs generate the file again. The files read so (cpu.stat, a
 * single value, cgroup.events) fit the buffer; one that fills it is an
 * error (EFBIG) rather than a truncated figure. */
ssize_t orch__cg_read_held(int *slot, const char *dir, const char *name, char *buf, size_t size) {
  int fd = *slot;
  if (fd < 0) {
    char p[PATH_MAX];
    if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, name) >= sizeof p) return -ENAMETOOLONG;
    int dfd, lent;
    const char *rel = orch__cg_at_v2(p, &dfd);
    if ((fd = orch__cg_open_at(dfd, rel, O_RDONLY | O_CLOEXEC, &lent)) < 0) return -errno;
    if (!lent && may_hold(fd, 4)) *slot = fd;
  }
  ssize_t k;
  do k = pread(fd, buf, size - 1, 0); while (k < 0 && errno == EINTR);
  int e = k < 0 ? errno : (size_t)k == size - 1 ? EFBIG : 0;
  if (fd != *slot) {
    close(fd);
    orch__fd_spare_settle();
  } else if (e == ENODEV) {
    /* The directory went (removed behind our back, perhaps made again
     * under the same name): the path says what is there now. */
    close(fd);
    *slot = -1;
    return orch__cg_read_held(slot, dir, name, buf, size);
  }
  if (e) return -e;
  buf[k] = 0;
  return k;
}

void orch__cg_close(orch__cgroup *cg) {
  drop_held(cg);
  free(cg->path);
  for (int i = 0; i <= ORCH__CG_NCTL; i++) free(cg->fs[i]);
  orch__cg_init(cg);
}

/* Bit c: this process made (or tried to make) a directory in the v1
 * hierarchy of controller c. Until it has, a removal need not look for
 * mirrors an object does not know of (see orch__cg_remove). */
static unsigned v1_made;

/* The v1 mirror of controller c for the cgroup's path: its directory, made
 * when create is set. 0 (cg->fs[1 + c] set), or -errno. */
int orch__cg_mirror(orch__cgroup *cg, const char *path, int c, int create) {
  const orch__cg_layout *lo = &layout;
  if (!lo->v1_mount[c][0]) return -ENOTSUP;
  char *cgp = NULL, *fs = NULL;
  int r = resolve(path, c, &cgp);
  if (r == 0) r = fs_path(lo->v1_mount[c], lo->v1_root[c], cgp, &fs);
  free(cgp);
  if (r < 0) return r;
  if (create) {
    v1_made |= 1u << c;
    r = mkdirs(lo->v1_mount[c], fs, 0);
    /* The mirror may have been there already: its chain and itself. */
    char *top = r == 0 ? v1_top(c, fs) : NULL;
    if (r == 0 && !top) r = -ENOMEM;
    if (r == 0 && (r = trusted_chain(top, fs, 0)) > 0) r = 0;
    free(top);
  } else {
    struct stat sb;
    r = stat(fs, &sb) < 0 ? -errno : 0;
  }
  if (r < 0) { free(fs); return r; }
  cg->fs[1 + c] = fs;
  return 0;
}

/* Makes the v2 directory of cg (cg->fs[0]) and enables the v2 part of
 * `want` down to its parent; the v1 part (orch's four controllers that v2
 * does not offer orch here) gets mirrors. Nothing is left made on failure. */
static int make_v2(orch__cgroup *cg, const char *path, unsigned want) {
  const orch__cg_layout *lo = &layout;
  char *top = chain_top(cg->fs[0]);
  if (!top) return -ENOMEM;
  unsigned v2 = want ? offered_at(top) & want : 0, rest = want & ~v2;
  for (unsigned bit = 1; bit && bit <= rest; bit <<= 1) {
    if (!(rest & bit)) continue;
    int c = __builtin_ctz(bit);
    if (c < ORCH__CG_NCTL && lo->v1_mount[c][0]) continue;
    why(c < ORCH__CG_NCTL ? "%s: cgroup v2 does not offer it to %s here (cgroup.controllers), and there is "
                            "no cgroup v1 hierarchy of it"
                          : "%s: cgroup v2 does not offer it to %s here (cgroup.controllers)",
        bit_name(bit), top);
    free(top);
    return -ENOTSUP;
  }
  char *parent = strdup(cg->fs[0]);
  if (!parent) { free(top); return -ENOMEM; }
  *strrchr(parent, '/') = 0;
  int made = 0, dfd;
  /* With no v2 controller to enable, the parent's subtree_control is not
   * read: what the new cgroup has in v2 is read from its own
   * cgroup.controllers when first asked (orch__cg_v2ctl), which a start of
   * services without limits on a hybrid host never does (an openat, a read
   * and a close less a create, about a sixth of it). */
  unsigned got = 0, *gotp = v2 ? &got : NULL;
  const char *rel = orch__cg_at_v2(cg->fs[0], &dfd);
  /* Nothing is made, and no controller enabled, in a chain another user
   * could change. The parent usually exists: one mkdir, else the whole
   * walk. */
  int r = trusted_parent(top, parent);
  if (r < 0) {
    /* refused (why_buf) */
  } else if (mkdirat(dfd, rel, 0755) == 0) {
    r = walk_down(top, parent, 0, v2, gotp, NULL);
    if (r < 0) unmake(cg->fs[0], 0);
  } else if (errno == ENOENT) {
    r = walk_down(top, parent, 1, v2, gotp, &made);
    if (r == 0 && mkdirat(dfd, rel, 0755) < 0) {
      r = -errno;
      if (made) unmake(parent, made - 1);
    }
  } else {
    r = -errno;
  }
  free(parent);
  free(top);
  if (r < 0) return r;
  cg->v2ctl = gotp ? got : ORCH__CG_V2CTL_UNREAD;
  for (int c = 0; c < ORCH__CG_NCTL; c++) {
    if (!(rest & (1u << c))) continue;
    /* A mirror costs a directory per hierarchy (a v1 memory cgroup is slow
     * to make): made only when asked for, else at the first limit. */
    if ((r = orch__cg_mirror(cg, path, c, 1)) < 0) {
      if (!why_buf[0]) why("%s: making its cgroup v1 directory%s", orch__cg_ctl_names[c], "");
      orch__cg_remove(cg, 0);
      return r;
    }
  }
  return 0;
}

static int open_v2(orch__cgroup *cg, const char *path, int create, unsigned want) {
  int err = 0;
  const orch__cg_layout *lo = orch__cg_layout_get(&err);
  if (!lo) return err;
  int r = check_path(path);
  if (r < 0) return r;
  orch__cg_close(cg);
  why_buf[0] = 0;
  r = resolve(path, -1, &cg->path);
  if (r == 0) r = fs_path(lo->v2_mount, lo->v2_root, cg->path, &cg->fs[0]);
  if (r == 0 && create) r = make_v2(cg, path, want);
  if (r == 0 && !create) {
    struct stat sb;
    int dfd;
    const char *rel = orch__cg_at_v2(cg->fs[0], &dfd);
    if (fstatat(dfd, rel, &sb, 0) < 0) r = -errno;
    else if (!S_ISDIR(sb.st_mode)) r = -ENOTDIR;
    if (r == 0) {
      cg->v2ctl = v2_controllers(cg->fs[0]);
      for (int c = 0; c < ORCH__CG_NCTL; c++)
        if (!(cg->v2ctl & (1u << c))) orch__cg_mirror(cg, path, c, 0);
    }
  }
  if (r < 0) { orch__cg_close(cg); return r; }
  return 0;
}

const char *orch__cg_why(void) { return why_buf[0] ? why_buf : NULL; }

void orch__cg_why_clear(void) { why_buf[0] = 0; }

int orch__cg_create(orch__cgroup *cg, const char *path, unsigned want) {
  return open_v2(cg, path, 1, want);
}

int orch__cg_open(orch__cgroup *cg, const char *path) {
  return open_v2(cg, path, 0, 0);
}

int orch__cg_trusted(const orch__cgroup *cg) {
  if (!cg->fs[0]) return -EBADF;
  why_buf[0] = 0;
  char *top = chain_top(cg->fs[0]);
  if (!top) return -ENOMEM;
  int r = trusted_chain(top, cg->fs[0], 1);
  free(top);
  for (int c = 0; r >= 0 && c < ORCH__CG_NCTL; c++) {
    if (!cg->fs[1 + c]) continue;
    if (!(top = v1_top(c, cg->fs[1 + c]))) return -ENOMEM;
    r = trusted_chain(top, cg->fs[1 + c], 0);
    free(top);
  }
  return r < 0 ? r : 0;
}

/* rmdir of a cgroup directory (relative to the v2 mount's fd below it):
 * 0 also when it is gone already. */
static int rmdir_cg(const char *dir) {
  int at;
  const char *rel = orch__cg_at_v2(dir, &at);
  return unlinkat(at, rel, AT_REMOVEDIR) < 0 && errno != ENOENT ? -errno : 0;
}

static int remove_tree(const char *dir);

/* rmdir of dir's empty descendants, deepest first. A level's names are
 * read and its directory closed before going down: one fd at a time, lent
 * from the spares at EMFILE (a shutdown with every fd taken left orch's
 * empty tree behind: its opendir failed, and the removal gave up before
 * the rmdirs, which need none). */
static int remove_below(const char *dir) {
  int at;
  const char *rel = orch__cg_at_v2(dir, &at);
  int fd = orch__cg_open_at(at, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC, NULL);
  if (fd < 0) return errno == ENOENT ? 0 : -errno;
  DIR *d = fdopendir(fd);
  if (!d) {
    int e = errno;
    close(fd);
    orch__fd_spare_settle();
    return -e;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  int r = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_type != DT_DIR || e->d_name[0] == '.') continue;
    if (n == cap) {
      char **nn = realloc(names, (cap = cap ? cap * 2 : 8) * sizeof *names);
      if (!nn) { r = -ENOMEM; break; }
      names = nn;
    }
    if (asprintf(&names[n], "%s/%s", dir, e->d_name) < 0) { r = -ENOMEM; break; }
    n++;
  }
  closedir(d);
  orch__fd_spare_settle();
  /* Every sibling is tried: one a process keeps (EBUSY) leaves the
   * others' removal to be done. */
  for (size_t i = 0; i < n; i++) {
    int k = remove_tree(names[i]);
    if (k < 0 && r == 0) r = k;
    free(names[i]);
  }
  free(names);
  return r;
}

/* rmdir of dir and of its empty descendants: the rmdir first (an empty
 * leaf, the usual case, opens nothing); a cgroup with children fails with
 * EBUSY, and its descendants go first. */
static int remove_tree(const char *dir) {
  int r = rmdir_cg(dir);
  if (r != -EBUSY && r != -ENOTEMPTY) return r;
  if ((r = remove_below(dir)) < 0) return r;
  return rmdir_cg(dir);
}

int orch__cg_remove(orch__cgroup *cg, int recursive) {
  if (!cg->fs[0]) return -EBADF;
  /* An open file would keep the removed cgroup's memory (a dying cgroup)
   * until closed. */
  drop_held(cg);
  /* A listing of the tree is a stop's work on its cgroups: with the kill
   * reserve's fds when the spares are out (a shutdown whose connections
   * or waits took them), closed before it returns. */
  orch__fd_kill_path(1);
  int r = recursive ? remove_tree(cg->fs[0]) : rmdir_cg(cg->fs[0]);
  orch__fd_kill_path(0);
  if (r < 0) return r;
  /* Mirrors this object did not make may exist: a descendant's mirror
   * (made by its first limit) makes its parents in each v1 hierarchy, and
   * they stay once the descendant is removed. Looked for only in a
   * hierarchy this process made a directory in (an object opened finds the
   * mirrors that exist at its open), or for a recursive removal: a stop of
   * hundreds of services without limits made three failing stat(2)s of
   * v1 paths per cgroup. */
  for (int c = 0; c < ORCH__CG_NCTL; c++)
    if (!cg->fs[1 + c] && layout_state > 0 && (recursive || (v1_made & (1u << c))))
      orch__cg_mirror(cg, cg->path, c, 0);
  for (int c = 0; c < ORCH__CG_NCTL; c++) {
    const char *m = cg->fs[1 + c];
    if (!m) continue;
    /* Two controllers may share one v1 hierarchy (cpu,cpuacct). */
    int k = recursive ? remove_tree(m) : rmdir_cg(m);
    if (k < 0 && r == 0) r = k;
  }
  return r;
}

/* ---------------------------------------------------------------- members */

void orch__cg_forget_self(void) {
  free(self_cgroup);
  self_cgroup = NULL;
}
