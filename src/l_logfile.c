/*
 * l_logfile.c: orch.logfile, log files opened without trusting the path
 * (doc/security.md#log-files, doc/logfile.md).
 *
 * A log path given to root orch may sit in a directory another user can
 * write (a service's own log directory, /tmp). open() would follow a symbolic
 * link planted there and append to whatever it names. So the directory is
 * reached one component at a time from "/" (openat with O_NOFOLLOW, a
 * symbolic link followed only when root or orch's user owns it, every
 * directory owned by a trusted user and not writable by others unless
 * sticky), and the file is opened relative to it with O_NOFOLLOW, O_APPEND,
 * O_CLOEXEC and O_NONBLOCK (a FIFO at the path fails at once instead of
 * blocking the loop), then checked: a regular file with one link, owned by a
 * trusted user. A new file gets exactly the requested mode (0640 unless
 * told). Trusted: root, orch's effective uid, and the `owner` option's uid
 * for the last directory and the file (a service user's own log directory).
 *
 * Objects: an orch.LogFile userdata owns one fd (-1 once closed; __gc and
 * __close share :close()). Writes are write(2)/writev(2) with no buffer in
 * between, so a failed write is seen at once and counted per line.
 *
 * At orch's fd limit (EMFILE, ENFILE) an open's walk and its file use the
 * runtime's spare fds (src/fdlimit.c), at most two at a time, taken back
 * once closed: a service's last lines, written as it stops while the
 * services hold every fd, were dropped for want of one. (Not check_dir's:
 * at orch's start it says the limit was too low.)
 *
 * Blocking: the path walk is a few fstatat/openat calls on local metadata;
 * the open never waits on a FIFO; writes go to a regular file (the page
 * cache). The owner option's user name is looked up with getpwnam_r.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "runtime.h"
#include "util.h"

#define LOGFILE_MT "orch.LogFile"
#define MAX_HOPS 40
#define BATCH 256          /* lines per writev (two iovecs each) */

typedef struct {
  int fd;            /* -1 once closed */
  int torn;          /* the file ends mid-line (a write cut short by a full
                        disk, now or before the open): start with "\n" */
  long long size;    /* bytes in the file (at open, plus what we wrote) */
} lfile;

typedef struct {
  uid_t me;
  uid_t owner;       /* trusted for the last directory and the file */
  int has_owner;
  int lend;          /* the walk may use a spare fd at EMFILE (an open) */
} trust;

/* openat of a directory of the walk: with a spare fd at EMFILE for an
 * open (logfile.check_dir, at orch's start, says the limit instead). */
static int walk_open(const trust *t, int dirfd, const char *name, int flags) {
  if (t->lend) return orch__fd_open_at(dirfd, name, flags, 0, NULL);
  return openat(dirfd, name, flags);
}

/* ---- The walk ---------------------------------------------------------- */

static int trusted(const trust *t, uid_t uid, int leaf) {
  return uid == 0 || uid == t->me || (leaf && t->has_owner && uid == t->owner);
}

/* Opens the directory `dir` (absolute) as an O_PATH fd, checking every
 * component. *shared: the directory is sticky and writable by others (then
 * only files of root or orch's uid are accepted in it). Returns the fd, or
 * -errno with `why` set for the refusals. */
static int walk(const char *dir, const trust *t, int *shared, char *why, size_t whylen) {
  char rest[PATH_MAX * 2], done[PATH_MAX];
  int hops = 0;
  if (strlen(dir) >= sizeof rest) return -ENAMETOOLONG;
  strcpy(rest, dir);
  strcpy(done, "");
  int fd = walk_open(t, AT_FDCWD, "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -errno;
  *shared = 0;
  char *p = rest;
  for (;;) {
    while (*p == '/') p++;
    if (!*p) return fd;
    char *end = strchr(p, '/');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    char comp[NAME_MAX + 1];
    if (len > NAME_MAX) { close(fd); return -ENAMETOOLONG; }
    memcpy(comp, p, len);
    comp[len] = '\0';
    p += len;
    if (strcmp(comp, ".") == 0) continue;
    while (*p == '/') p++;
    int leaf = *p == '\0';
    struct stat st;
    if (strcmp(comp, "..") == 0) {
      /* Up from where the walk physically is (a link target such as
       * /var/run -> ../run): the parent is checked like any directory. */
      char *slash = strrchr(done, '/');
      if (slash) *slash = '\0';   /* "/x" -> "", then "/" below */
      len = 0;
    } else if (fstatat(fd, comp, &st, AT_SYMLINK_NOFOLLOW) < 0) {
      int err = errno;
      close(fd);
      snprintf(why, whylen, "%s/%s", done, comp);
      return -err;
    }
    if (len && S_ISLNK(st.st_mode)) {
      if (st.st_uid != 0 && st.st_uid != t->me) {
        close(fd);
        snprintf(why, whylen, "the symbolic link %s/%s belongs to uid %d: not followed",
                 done, comp, (int)st.st_uid);
        return -EPERM;
      }
      if (++hops > MAX_HOPS) { close(fd); return -ELOOP; }
      char target[PATH_MAX];
      ssize_t n = readlinkat(fd, comp, target, sizeof target - 1);
      if (n < 0) { int err = errno; close(fd); return -err; }
      target[n] = '\0';
      char next[PATH_MAX * 2];
      if ((size_t)snprintf(next, sizeof next, "%s/%s", target, p) >= sizeof next) {
        close(fd);
        return -ENAMETOOLONG;
      }
      strcpy(rest, next);
      p = rest;
      if (target[0] == '/') {
        close(fd);
        fd = walk_open(t, AT_FDCWD, "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return -errno;
        strcpy(done, "");
      }
      continue;
    }
    if (len && !S_ISDIR(st.st_mode)) {
      close(fd);
      snprintf(why, whylen, "%s/%s", done, comp);
      return -ENOTDIR;
    }
    int nfd = walk_open(t, fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int err = errno;
    close(fd);
    if (nfd < 0) {
      snprintf(why, whylen, "%s/%s", done, comp);
      return -err;
    }
    fd = nfd;
    if (len && strlen(done) + len + 2 < sizeof done) {
      if (strcmp(done, "/") == 0) done[0] = '\0';
      strcat(done, "/");
      strcat(done, comp);
    }
    if (fstat(fd, &st) < 0) { err = errno; close(fd); return -err; }
    if (!*done) strcpy(done, "/");
    if (!trusted(t, st.st_uid, leaf)) {
      close(fd);
      snprintf(why, whylen, "the directory %s belongs to uid %d, neither orch's user (uid %d)%s nor root",
               done, (int)st.st_uid, (int)t->me, t->has_owner ? " nor the log's owner" : "");
      return -EPERM;
    }
    int sticky = (st.st_mode & S_ISVTX) != 0;
    if ((st.st_mode & S_IWOTH) && !sticky) {
      close(fd);
      snprintf(why, whylen, "the directory %s is writable by every user", done);
      return -EPERM;
    }
    if (leaf && (st.st_mode & S_IWGRP) && !sticky) {
      close(fd);
      snprintf(why, whylen, "the directory %s is writable by its group", done);
      return -EPERM;
    }
    if (leaf) *shared = sticky && (st.st_mode & (S_IWGRP | S_IWOTH));
  }
}

/* The absolute directory of path's first len bytes into dir (PATH_MAX * 2
 * bytes): a relative path starts at the current directory. 0 or -errno. */
static int absolute(char *dir, const char *path, size_t len) {
  size_t cl = 0;
  if (path[0] != '/') {
    if (!getcwd(dir, PATH_MAX)) return -errno;
    cl = strlen(dir);
    dir[cl++] = '/';
  }
  memcpy(dir + cl, path, len);
  dir[cl + len] = '\0';
  return 0;
}

/* The walk of dir for op (path: as given, for the messages): the
 * directory's fd, or -1 with nil, message, code pushed (3 values). */
static int walk_or_fail(lua_State *L, const char *op, const char *path, const char *dir, const trust *t,
                        int *shared) {
  char why[PATH_MAX + 160] = "";
  int dfd = walk(dir, t, shared, why, sizeof why);
  if (dfd >= 0) return dfd;
  if (dfd == -EPERM || dfd == -EINVAL) orch__failf(L, orch__errname(-dfd), "%s: %s: refused: %s", op, path, why);
  else if (*why) orch__fail_errno(L, -dfd, "%s: %s: %s", op, path, why);
  else orch__fail_errno(L, -dfd, "%s: %s", op, path);
  return -1;
}

/* Opens `name` in the checked directory dfd. Returns the fd (and its size)
 * or -errno with `why` set for the refusals. */
static int open_in(int dfd, const char *name, int mode, const trust *t,
                   int shared, long long *size, int *torn, char *why, size_t whylen) {
  /* Read access too: the last byte tells whether an earlier writer (a full
   * disk, a crash) left a line unfinished. */
  const int fl = O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
  int fd, created = 1;
  fd = orch__fd_open_at(dfd, name, fl | O_CREAT | O_EXCL, (unsigned)mode, NULL);
  if (fd < 0 && errno == EEXIST) {
    created = 0;
    fd = orch__fd_open_at(dfd, name, fl, 0, NULL);
  }
  if (fd < 0) {
    int err = errno;
    if (err == ELOOP) {
      snprintf(why, whylen, "it is a symbolic link (never followed)");
      return -ELOOP;
    }
    if (err == ENXIO) {
      snprintf(why, whylen, "it is not a regular file");
      return -EPERM;
    }
    return -err;
  }
  struct stat st;
  if (fstat(fd, &st) < 0) { int err = errno; close(fd); return -err; }
  const char *bad = NULL;
  char what[96];
  if (!S_ISREG(st.st_mode)) {
    bad = "it is not a regular file";
  } else if (st.st_nlink != 1) {
    snprintf(what, sizeof what, "it has %lu hard links (a log file has one)", (unsigned long)st.st_nlink);
    bad = what;
  } else if (!trusted(t, st.st_uid, !shared)) {
    snprintf(what, sizeof what, "it belongs to uid %d, neither orch's user (uid %d)%s nor root",
             (int)st.st_uid, (int)t->me, t->has_owner && !shared ? " nor the log's owner" : "");
    bad = what;
  }
  if (bad) {
    close(fd);
    snprintf(why, whylen, "%s", bad);
    return -EPERM;
  }
  /* Exactly the mode asked for, whatever the umask. */
  if (created && fchmod(fd, (mode_t)mode) < 0) { int err = errno; close(fd); return -err; }
  *size = (long long)st.st_size;
  *torn = 0;
  if (st.st_size > 0) {
    char c;
    ssize_t r;
    do r = pread(fd, &c, 1, st.st_size - 1); while (r < 0 && errno == EINTR);
    *torn = r == 1 && c != '\n';
  }
  return fd;
}

/* ---- orch.logfile.open ------------------------------------------------- */

static const char *const open_options[] = { "mode", "owner", NULL };

static lfile *check_lfile(lua_State *L, int idx) {
  lfile *f = luaL_checkudata(L, idx, LOGFILE_MT);
  if (f->fd < 0) orch__closed_error(L, LOGFILE_MT);
  return f;
}

/* The `owner` option: a uid or a user name. Returns 1 when set, 0 when
 * absent, or pushes the failure triple and returns -3. */
static int opt_owner(lua_State *L, int idx, uid_t *uid) {
  int ty = lua_getfield(L, idx, "owner");
  if (ty == LUA_TNIL) { lua_pop(L, 1); return 0; }
  if (ty == LUA_TNUMBER) {
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (!isint || v < 0 || v >= 0xffffffffLL) orch__opt_error(L, idx, "owner", "uid or user name expected");
    lua_pop(L, 1);
    *uid = (uid_t)v;
    return 1;
  }
  if (ty != LUA_TSTRING) orch__opt_error(L, idx, "owner", "uid or user name expected");
  size_t len;
  const char *name = lua_tolstring(L, -1, &len);
  orch__check_nonul(L, idx, name, len, "option 'owner'");
  struct passwd pw, *pwp = NULL;
  char buf[4096];
  int r;
  do r = getpwnam_r(name, &pw, buf, sizeof buf, &pwp); while (r == EINTR);
  if (r != 0) { orch__fail(L, "logfile.open: user lookup", r); return -3; }
  if (!pwp) { orch__failf(L, "ENOENT", "logfile.open: unknown user '%s'", name); return -3; }
  lua_pop(L, 1);
  *uid = pw.pw_uid;
  return 1;
}

/* logfile.open(path [, { mode = 0640, owner = uid|name }]) */
static int logfile_open(lua_State *L) {
  size_t plen;
  const char *path = orch__checkpath(L, 1, &plen);
  trust t = { geteuid(), 0, 0, 1 };
  lua_Integer mode = 0640;
  if (!lua_isnoneornil(L, 2)) {
    orch__check_options(L, 2, open_options);
    mode = orch__opt_integer(L, 2, "mode", 0640);
    if (mode < 0 || mode > 0777) orch__opt_error(L, 2, "mode", "permission bits (0 to 0777) expected");
    int r = opt_owner(L, 2, &t.owner);
    if (r < 0) return 3;
    t.has_owner = r;
  }
  if (lua_gettop(L) > 2) luaL_argerror(L, 3, "no value expected");
  if (plen == 0) luaL_argerror(L, 1, "path must not be empty");
  if (plen >= PATH_MAX) return orch__fail_errno(L, ENAMETOOLONG, "logfile.open: %s", path);

  /* Split into an absolute directory and the file name. */
  char dir[PATH_MAX * 2];
  const char *slash = strrchr(path, '/');
  const char *name = slash ? slash + 1 : path;
  if (!*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
    return orch__failf(L, "EISDIR", "logfile.open: %s: a file name expected", path);
  int r = absolute(dir, path, slash ? (size_t)(slash - path) : 0);
  if (r < 0) return orch__fail(L, "logfile.open: getcwd", -r);

  lfile *f = lua_newuserdatauv(L, sizeof *f, 0);
  f->fd = -1;
  f->torn = 0;
  f->size = 0;
  luaL_setmetatable(L, LOGFILE_MT);

  int shared = 0;
  int dfd = walk_or_fail(L, "logfile.open", path, dir, &t, &shared);
  if (dfd < 0) {
    orch__fd_spare_settle();
    return 3;
  }
  long long size = 0;
  int torn = 0;
  char why[PATH_MAX + 160] = "";
  int fd = open_in(dfd, name, (int)mode, &t, shared, &size, &torn, why, sizeof why);
  close(dfd);
  orch__fd_spare_settle();
  if (fd < 0) {
    if (*why) return orch__failf(L, orch__errname(-fd), "logfile.open: %s: refused: %s", path, why);
    return orch__fail_errno(L, -fd, "logfile.open: %s", path);
  }
  f->fd = fd;
  f->size = size;
  f->torn = torn;
  return 1;
}

/* ---- orch.LogFile ------------------------------------------------------ */

/* lf:write_lines(list [, i [, j]]): writes list[i..j], each followed by a
 * newline. Returns the count, or nil, message, ename, written: the lines
 * before the failure are in the file, the others are not (a line cut short
 * by a full disk counts as not written, and the next write starts a new
 * line). */
static int lf_write_lines(lua_State *L) {
  lfile *f = check_lfile(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer n = (lua_Integer)luaL_len(L, 2);
  lua_Integer i = luaL_optinteger(L, 3, 1), j = luaL_optinteger(L, 4, n);
  if (lua_gettop(L) > 4) luaL_argerror(L, 5, "no value expected");
  if (i < 1) luaL_argerror(L, 3, "index must be >= 1");
  for (lua_Integer k = i; k <= j; k++) {
    if (lua_geti(L, 2, k) != LUA_TSTRING)
      luaL_argerror(L, 2, lua_pushfstring(L, "item %I: string expected, got %s", (lua_Integer)k,
                                          luaL_typename(L, -1)));
    lua_pop(L, 1);
  }
  static char nl[1] = { '\n' };
  lua_Integer written = 0;
  lua_Integer k = i;
  while (k <= j) {
    struct iovec iov[2 * BATCH + 1];
    size_t lens[BATCH];
    int cnt = 0, lines = 0;
    size_t lead = 0;
    if (f->torn) {
      iov[cnt].iov_base = nl;
      iov[cnt++].iov_len = 1;
      lead = 1;
    }
    for (; k + lines <= j && lines < BATCH; lines++) {
      lua_geti(L, 2, k + lines);
      size_t len;
      const char *s = lua_tolstring(L, -1, &len);
      lua_pop(L, 1);           /* the list keeps the string alive */
      iov[cnt].iov_base = (void *)s;
      iov[cnt++].iov_len = len;
      iov[cnt].iov_base = nl;
      iov[cnt++].iov_len = 1;
      lens[lines] = len + 1;
    }
    /* Write everything, continuing after short writes. */
    struct iovec *v = iov;
    int vc = cnt;
    size_t total = 0;
    int err = 0;
    while (vc > 0) {
      ssize_t r = writev(f->fd, v, vc);
      if (r < 0) {
        if (errno == EINTR) continue;
        err = errno;
        break;
      }
      if (r == 0) { err = EIO; break; }
      total += (size_t)r;
      f->size += r;
      while (vc > 0 && (size_t)r >= v->iov_len) { r -= (ssize_t)v->iov_len; v++; vc--; }
      if (vc > 0 && r > 0) {
        v->iov_base = (char *)v->iov_base + r;
        v->iov_len -= (size_t)r;
      }
    }
    if (!err) {
      f->torn = 0;
      written += lines;
      k += lines;
      continue;
    }
    /* Which lines made it whole; a partial one leaves the file mid-line. */
    size_t left = total;
    if (lead) {
      if (left < lead) { left = 0; goto failed; }   /* still torn */
      left -= lead;
      f->torn = 0;
    }
    for (int m = 0; m < lines; m++) {
      if (left >= lens[m]) { left -= lens[m]; written++; continue; }
      if (left > 0) f->torn = 1;
      break;
    }
  failed:
    lua_pushnil(L);
    lua_pushfstring(L, "logfile.write: %s", strerror(err));
    lua_pushstring(L, orch__errname(err));
    lua_pushinteger(L, written);
    return 4;
  }
  lua_pushinteger(L, written);
  return 1;
}

static int lf_size(lua_State *L) {
  lfile *f = check_lfile(L, 1);
  lua_pushinteger(L, (lua_Integer)f->size);
  return 1;
}

static int lf_fd(lua_State *L) {
  lfile *f = check_lfile(L, 1);
  lua_pushinteger(L, f->fd);
  return 1;
}

static int lf_close(lua_State *L) {
  lfile *f = luaL_checkudata(L, 1, LOGFILE_MT);
  if (f->fd >= 0) {
    close(f->fd);
    f->fd = -1;
    orch__fd_spare_settle();
  }
  return 0;
}

static int lf_tostring(lua_State *L) {
  lfile *f = luaL_checkudata(L, 1, LOGFILE_MT);
  if (f->fd < 0) lua_pushstring(L, LOGFILE_MT ": closed");
  else lua_pushfstring(L, LOGFILE_MT ": fd=%d size=%I", f->fd, (lua_Integer)f->size);
  return 1;
}

/* logfile.check_dir(dir): true when dir is reached from "/" the way a log's
 * directory is (every component owned by root or orch's uid, none writable
 * by others unless sticky, the last one not by its group unless sticky; a
 * symbolic link followed only when root or orch's uid owns it), so that no
 * other user can replace or remove what orch makes in it (a control
 * socket given by path); otherwise nil, message, code (EPERM: refused). */
static int logfile_check_dir(lua_State *L) {
  size_t plen;
  const char *path = orch__checkpath(L, 1, &plen);
  orch__check_nargs(L, 1);
  if (plen == 0) luaL_argerror(L, 1, "path must not be empty");
  if (plen >= PATH_MAX) return orch__fail_errno(L, ENAMETOOLONG, "logfile.check_dir: %s", path);
  char dir[PATH_MAX * 2];
  int r = absolute(dir, path, plen);
  if (r < 0) return orch__fail(L, "logfile.check_dir: getcwd", -r);
  trust t = { geteuid(), 0, 0, 0 };
  int shared = 0;
  int dfd = walk_or_fail(L, "logfile.check_dir", path, dir, &t, &shared);
  if (dfd < 0) return 3;
  close(dfd);
  lua_pushboolean(L, 1);
  return 1;
}

int orch__open_logfile(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"write_lines", lf_write_lines}, {"size", lf_size}, {"fd", lf_fd}, {"close", lf_close},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__close", lf_close}, {"__gc", lf_close}, {"__tostring", lf_tostring}, {NULL, NULL}
  };
  orch__newclass(L, LOGFILE_MT, methods, meta);
  lua_pop(L, 1);
  lua_newtable(L);
  lua_newtable(L);
  lua_pushcfunction(L, logfile_open);
  lua_setfield(L, -2, "open");
  lua_pushcfunction(L, logfile_check_dir);
  lua_setfield(L, -2, "check_dir");
  lua_setfield(L, -2, "logfile");
  return 1;
}
