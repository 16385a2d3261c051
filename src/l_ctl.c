/*
 * l_ctl.c: orch.core.ctl, the C half of the control plane (lua/orch/ctl.lua):
 * the control socket's listener and its lock, a private directory for it, the file
 * descriptor helpers `orch ctl reexec` needs, and sd_notify datagrams
 * (READY=1, and the watchdog pets on an unref'd timer). Not merged into `orch`: only
 * lua/orch/ctl.lua and lua/orch/sdnotify.lua use it.
 *
 * The listener is its own small object rather than an orch.Listener because
 * the control socket must never keep orch alive: its uv_poll_t is unref'd,
 * so a script that is done exits even while a task waits in :accept().
 * Accepted connections become ordinary orch.Stream objects (stream.h), with
 * the peer's credentials (SO_PEERCRED) read at accept time.
 *
 * Ownership: an orch.ctl.Listener userdata points to a malloc'ed core that
 * holds the socket fd and the poll handle; the core is freed in the handle's
 * close callback. The socket file is unlinked by :close()/__gc only by the
 * process that created it, and only if it is still the same file.
 *
 * Out of file descriptors: the runtime holds spare fds from its start
 * (orch__fd_reserve_*). When accept fails with EMFILE/ENFILE (orch at its fd
 * limit, e.g. services crash-looping through pipes), they are closed so the
 * connection can be accepted and served (its reply may need one fd more, a
 * /proc read for status); the connection is flagged (cred.emfile) so the
 * server can say why, and the server takes the reserve back as soon as the
 * connection closes (C.fd_reserve). libuv's own EMFILE trick would accept
 * and silently close the connection.
 *
 * What may block: nothing (non-blocking socket, accept4 after readiness);
 * secure_dir and memfd/read_fd are short local file system calls.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "runtime.h"
#include "stream.h"
#include "util.h"

/* Linked in when the stream module is; otherwise accept reports ENOSYS. */
#pragma weak orch__stream_push_fd

#define LISTENER_MT "orch.ctl.Listener"
#define LOCK_MT "orch.ctl.Lock"
#define MAX_STATE (64 << 20)

typedef struct lcore {
  uv_poll_t poll;
  int fd;
  int inited;               /* poll initialised: free in its close callback */
  int polling;
  lua_State *co;            /* the task waiting in :accept() */
  char *path;               /* the socket file we created, for unlink */
  dev_t dev;
  ino_t ino;
  pid_t owner;
} lcore;

typedef struct { lcore *l; } Listener;

/* ------------------------------------------------------------ listener */

static lcore *check_listener(lua_State *L, int idx) {
  Listener *u = luaL_checkudata(L, idx, LISTENER_MT);
  if (!u->l) orch__closed_error(L, LISTENER_MT);
  return u->l;
}

static void core_closed(uv_handle_t *h) {
  free(h->data);
}

/* wake: end a pending :accept() (an explicit close from another task);
 * __gc never runs Lua, and nothing waits on a collected listener. */
static void core_close(lcore *l, int wake) {
  if (l->co && wake) {
    lua_State *co = l->co;
    l->co = NULL;
    orch__failf(co, "ECANCELED", "accept: listener closed");
    orch__wake(co, 3);
  }
  l->co = NULL;
  if (l->path) {
    struct stat st;
    if (l->owner == getpid() && lstat(l->path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
      unlink(l->path);
    free(l->path);
    l->path = NULL;
  }
  if (l->fd >= 0) {
    /* libuv must forget the fd before it is closed and maybe reused. */
    if (l->inited) uv_poll_stop(&l->poll);
    close(l->fd);
    l->fd = -1;
  }
  if (l->inited) {
    l->poll.data = l;
    uv_close((uv_handle_t *)&l->poll, core_closed);
  } else {
    free(l);
  }
}

static int listener_close_(lua_State *L, int wake) {
  Listener *u = luaL_checkudata(L, 1, LISTENER_MT);
  if (u->l) {
    lcore *l = u->l;
    u->l = NULL;
    core_close(l, wake);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int listener_close(lua_State *L) { return listener_close_(L, 1); }
static int listener_gc(lua_State *L) { return listener_close_(L, 0); }

/* Is something listening on the socket file? 0 no (stale), 1 yes, <0 error. */
static int alive(const struct sockaddr_un *sa, socklen_t salen) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  int r = connect(fd, (const struct sockaddr *)sa, salen);
  int e = errno;
  close(fd);
  if (r == 0 || e == EAGAIN || e == EINPROGRESS) return 1;
  if (e == ECONNREFUSED) return 0;
  return -e;
}

static int make_addr(const char *path, size_t len, struct sockaddr_un *sa, socklen_t *salen) {
  if (len == 0 || len >= sizeof sa->sun_path) return -ENAMETOOLONG;
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  memcpy(sa->sun_path, path, len);
  *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
  return 0;
}

/* Binds and listens; the socket file is 0600 from its creation. A stale
 * socket file (nobody listening) is replaced only with `locked`: the caller
 * holds the socket's lock (ctl.claim), so no other orch can be about to
 * serve it; otherwise it is reported as in use. */
static int bind_listen(lcore *l, const char *path, size_t len, int backlog, int locked) {
  struct sockaddr_un sa;
  socklen_t salen;
  int r = make_addr(path, len, &sa, &salen);
  if (r < 0) return r;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (fchmod(fd, 0600) < 0) { r = -errno; close(fd); return r; }
  r = bind(fd, (struct sockaddr *)&sa, salen);
  if (r < 0 && errno == EADDRINUSE) {
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) { close(fd); return -EEXIST; }
    int a = alive(&sa, salen);
    if (a != 0 || !locked) { close(fd); return a > 0 || !locked ? -EADDRINUSE : a; }
    unlink(path);
    r = bind(fd, (struct sockaddr *)&sa, salen);
  }
  if (r < 0) { r = -errno; close(fd); return r; }
  struct stat st;
  if (chmod(path, 0600) < 0 || stat(path, &st) < 0 || listen(fd, backlog) < 0) {
    r = -errno;
    unlink(path);
    close(fd);
    return r;
  }
  l->fd = fd;
  l->dev = st.st_dev;
  l->ino = st.st_ino;
  l->owner = getpid();
  if (!(l->path = strdup(path))) return -ENOMEM;
  return 0;
}

/* An inherited listening socket (orch ctl reexec): check it, adopt it. */
static int adopt_fd(lcore *l, int fd, const char *path) {
  int type = 0, acc = 0;
  socklen_t tl = sizeof type, al = sizeof acc;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) return -errno;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) < 0) return -errno;
  if (type != SOCK_STREAM || !acc) return -EINVAL;
  int r = orch__cloexec(fd);
  if (r < 0) return r;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
  struct stat st;
  l->fd = fd;
  l->owner = getpid();
  if (path && stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    if (!(l->path = strdup(path))) return -ENOMEM;
  }
  return 0;
}

/* ctl.listen(path [, backlog [, fd [, locked]]]) */
static int ctl_listen(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  lua_Integer backlog = luaL_optinteger(L, 2, 64);
  luaL_argcheck(L, backlog >= 1 && backlog <= 65535, 2, "backlog out of range (1 to 65535)");
  lua_Integer fd = luaL_optinteger(L, 3, -1);
  luaL_argcheck(L, fd >= -1 && fd <= 0x7fffffff, 3, "file descriptor out of range");
  int locked = lua_toboolean(L, 4);
  orch__check_nargs(L, 4);
  luaL_argcheck(L, len > 0 && len < sizeof(((struct sockaddr_un *)0)->sun_path) && strlen(path) == len,
                1, "socket path empty, too long or containing a zero byte");
  Listener *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->l = NULL;
  luaL_setmetatable(L, LISTENER_MT);
  lcore *l = calloc(1, sizeof *l);
  if (!l) return orch__fail(L, "listen", ENOMEM);
  l->fd = -1;
  u->l = l;
  int r = fd >= 0 ? adopt_fd(l, (int)fd, path) : bind_listen(l, path, len, (int)backlog, locked);
  if ((r == -EMFILE || r == -ENFILE) && fd < 0 && orch__fd_reserve_held() > 0) {
    /* Services took every fd before the socket was made: use the spare
     * ones, then take back what is left. */
    orch__fd_reserve_release();
    r = bind_listen(l, path, len, (int)backlog, locked);
    orch__fd_reserve_fill();
  }
  if (r < 0) {
    u->l = NULL;
    core_close(l, 0);
    if (r == -EADDRINUSE)
      return orch__failf(L, "EADDRINUSE", "listen: %s: another process is listening there", path);
    if (r == -EEXIST)
      return orch__failf(L, "EEXIST", "listen: %s: exists and is not a socket", path);
    return orch__fail(L, "listen", -r);
  }
  r = uv_poll_init(orch__loop(L), &l->poll, l->fd);
  if (r < 0) {
    u->l = NULL;
    core_close(l, 0);
    return orch__fail_uv(L, "listen", r);
  }
  l->inited = 1;
  l->poll.data = l;
  /* The control socket never keeps orch alive by itself. */
  uv_unref((uv_handle_t *)&l->poll);
  return 1;
}

static void stop_polling(lcore *l) {
  if (l->polling) uv_poll_stop(&l->poll);
  l->polling = 0;
}

/* Accepts one connection onto co's stack: stream, cred. Returns the count
 * of values pushed, or 0 when nothing is pending. */
static int try_accept(lua_State *co, lcore *l) {
  int fd, emfile = 0;
  do fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  while (fd < 0 && errno == EINTR);
  if (fd < 0 && (errno == EMFILE || errno == ENFILE) && orch__fd_reserve_held() > 0) {
    emfile = errno == EMFILE ? 1 : 2;
    orch__fd_reserve_release();
    do fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    while (fd < 0 && errno == EINTR);
    /* accept(2) fails with EMFILE before it looks for a connection: with
     * none pending, take the spare fds back at once. */
    if (fd < 0) {
      int e = errno;
      orch__fd_reserve_fill();
      errno = e;
    }
  }
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) return 0;
    return orch__fail(co, "accept", errno);
  }
  struct ucred cr;
  socklen_t cl = sizeof cr;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0) {
    int e = errno;
    close(fd);
    return orch__fail(co, "accept", e);
  }
  if (!orch__stream_push_fd) {
    close(fd);
    return orch__failf(co, "ENOSYS", "accept: orch was built without the stream module");
  }
  int r = orch__stream_push_fd(co, fd, ORCH_STREAM_READ | ORCH_STREAM_WRITE);
  if (r < 0) return orch__fail_uv(co, "accept", r);
  lua_createtable(co, 0, 4);
  if (emfile) {
    lua_pushstring(co, emfile == 1 ? "EMFILE" : "ENFILE");
    lua_setfield(co, -2, "emfile");
  }
  lua_pushinteger(co, cr.pid);
  lua_setfield(co, -2, "pid");
  lua_pushinteger(co, cr.uid);
  lua_setfield(co, -2, "uid");
  lua_pushinteger(co, cr.gid);
  lua_setfield(co, -2, "gid");
  return 2;
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  lcore *l = h->data;
  lua_State *co = l->co;
  if (!co) { stop_polling(l); return; }
  int n;
  if (status < 0) n = orch__fail_uv(co, "accept", status);
  else if (!(n = try_accept(co, l))) return;
  l->co = NULL;
  stop_polling(l);
  orch__wake(co, n);
}

static void accept_cancel(void *data) {
  lcore *l = data;
  l->co = NULL;
  stop_polling(l);
}

static int listener_accept(lua_State *L) {
  lcore *l = check_listener(L, 1);
  double timeout = orch__optseconds(L, 2, -1);
  orch__check_nargs(L, 2);
  orch__check_task(L, "accept");
  if (l->co) return orch__failf(L, "EBUSY", "accept: another task is accepting on this listener");
  int n = try_accept(L, l);
  if (n) return n;
  if (!l->polling) {
    int r = uv_poll_start(&l->poll, UV_READABLE, poll_cb);
    if (r < 0) return orch__fail_uv(L, "accept", r);
    l->polling = 1;
  }
  l->co = L;
  return orch__await(L, timeout, "accept", accept_cancel, l);
}

static int listener_fd(lua_State *L) {
  lua_pushinteger(L, check_listener(L, 1)->fd);
  return 1;
}

static int listener_path(lua_State *L) {
  lcore *l = check_listener(L, 1);
  if (l->path) lua_pushstring(L, l->path); else lua_pushnil(L);
  return 1;
}

static int listener_tostring(lua_State *L) {
  Listener *u = luaL_checkudata(L, 1, LISTENER_MT);
  if (!u->l) lua_pushliteral(L, "orch.ctl.Listener: closed");
  else lua_pushfstring(L, "orch.ctl.Listener: %s", u->l->path ? u->l->path : "(inherited)");
  return 1;
}

/* ------------------------------------------------------------ helpers */

/* ctl.secure_dir(path, strict): creates path (mode 0700) if missing. With
 * strict, an existing directory must be ours (or root's, when we are root)
 * and is narrowed to 0700; it must not be a symbolic link. */
static int ctl_secure_dir(lua_State *L) {
  const char *path = orch__checkpath(L, 1, NULL);
  int strict = lua_toboolean(L, 2);
  orch__check_nargs(L, 2);
  if (mkdir(path, 0700) < 0 && errno != EEXIST) return orch__fail(L, "mkdir", errno);
  struct stat st;
  if (lstat(path, &st) < 0) return orch__fail(L, "stat", errno);
  if (!S_ISDIR(st.st_mode))
    return orch__failf(L, "ENOTDIR", "secure_dir: %s is not a directory", path);
  if (strict) {
    if (st.st_uid != geteuid())
      return orch__failf(L, "EPERM", "secure_dir: %s belongs to uid %d, not to us", path, (int)st.st_uid);
    if ((st.st_mode & 07777) != 0700 && chmod(path, 0700) < 0) return orch__fail(L, "chmod", errno);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* C.fd_reserve(): takes back the spare fds that are free again; returns
 * how many are held. */
static int ctl_fd_reserve(lua_State *L) {
  orch__fd_reserve_fill();
  lua_pushinteger(L, orch__fd_reserve_held());
  return 1;
}

/* C.nofile() -> soft, hard: orch's RLIMIT_NOFILE (-1: unlimited). */
static int ctl_nofile(lua_State *L) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return orch__fail(L, "getrlimit", errno);
  lua_pushinteger(L, rl.rlim_cur == RLIM_INFINITY ? -1 : (lua_Integer)rl.rlim_cur);
  lua_pushinteger(L, rl.rlim_max == RLIM_INFINITY ? -1 : (lua_Integer)rl.rlim_max);
  return 2;
}

/* ctl.private_dir(path): true if path is a directory (not a symbolic link)
 * owned by our uid that neither group nor others may write to, so that no
 * one else can create, replace or remove the files in it; otherwise nil,
 * message, code (EPERM when it is not private). */
static int ctl_private_dir(lua_State *L) {
  const char *path = orch__checkpath(L, 1, NULL);
  orch__check_nargs(L, 1);
  struct stat st;
  if (lstat(path, &st) < 0) return orch__fail(L, "private_dir", errno);
  const char *why = !S_ISDIR(st.st_mode) ? "is not a directory"
                  : st.st_uid != geteuid() ? "belongs to another user"
                  : (st.st_mode & 022) ? "is writable by group or others" : NULL;
  if (why) return orch__failf(L, "EPERM", "private_dir: %s %s", path, why);
  lua_pushboolean(L, 1);
  return 1;
}

static int ctl_getuid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)geteuid());
  return 1;
}

/* ctl.inherit(fd [, on]): clears (or sets back) close-on-exec so that fd
 * survives an exec of orch itself. */
static int ctl_inherit(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 1, "file descriptor out of range");
  int on = lua_isnoneornil(L, 2) ? 1 : lua_toboolean(L, 2);
  orch__check_nargs(L, 2);
  int fl = fcntl((int)fd, F_GETFD);
  if (fl < 0) return orch__fail(L, "inherit", errno);
  fl = on ? (fl & ~FD_CLOEXEC) : (fl | FD_CLOEXEC);
  if (fcntl((int)fd, F_SETFD, fl) < 0) return orch__fail(L, "inherit", errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* ctl.memfd(data): an anonymous file holding data, positioned at 0
 * (close-on-exec; see inherit). */
static int ctl_memfd(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len <= MAX_STATE, 1, "more than 64 MiB");
  int fd = memfd_create("orch-state", MFD_CLOEXEC);
  if (fd < 0) return orch__fail(L, "memfd_create", errno);
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, data + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { int e = errno; close(fd); return orch__fail(L, "write", e); }
    done += (size_t)n;
  }
  if (lseek(fd, 0, SEEK_SET) < 0) { int e = errno; close(fd); return orch__fail(L, "lseek", e); }
  lua_pushinteger(L, fd);
  return 1;
}

/* ctl.read_fd(fd): reads fd to its end (at most 64 MiB) and closes it. */
static int ctl_read_fd(lua_State *L) {
  lua_Integer fdi = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fdi >= 0 && fdi <= 0x7fffffff, 1, "file descriptor out of range");
  orch__check_nargs(L, 1);
  int fd = (int)fdi;
  struct stat st;
  if (fstat(fd, &st) < 0) return orch__fail(L, "read_fd", errno);
  if (!S_ISREG(st.st_mode)) return orch__failf(L, "EINVAL", "read_fd: not a regular file");
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  size_t total = 0;
  for (;;) {
    char *p = luaL_prepbuffer(&b);
    ssize_t n = read(fd, p, LUAL_BUFFERSIZE);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { int e = errno; close(fd); return orch__fail(L, "read_fd", e); }
    if (n == 0) break;
    luaL_addsize(&b, (size_t)n);
    total += (size_t)n;
    if (total > MAX_STATE) { close(fd); return orch__failf(L, "EFBIG", "read_fd: more than 64 MiB"); }
  }
  close(fd);
  luaL_pushresult(&b);
  return 1;
}

/* ctl.write_private(path, data): replaces path with a file holding data,
 * atomically (a temporary file beside it, mode 0600, renamed over it), so
 * that a reader never sees half a record, even after orch was killed in
 * the middle of writing it. No fsync: the record must survive the death of
 * orch, not of the machine (which ends its processes too). */
static int ctl_write_private(lua_State *L) {
  size_t plen, len;
  const char *path = luaL_checklstring(L, 1, &plen);
  const char *data = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, plen > 0 && strlen(path) == plen, 1, "path without zero bytes expected");
  luaL_argcheck(L, len <= MAX_STATE, 2, "more than 64 MiB");
  orch__check_nargs(L, 2);
  lua_pushfstring(L, "%s.tmp", path);
  const char *tmp = lua_tostring(L, -1);
  if (unlink(tmp) < 0 && errno != ENOENT) return orch__fail(L, "write_private", errno);
  int fd;
  do fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return orch__fail(L, "write_private", errno);
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, data + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      unlink(tmp);
      return orch__fail(L, "write_private", e);
    }
    done += (size_t)n;
  }
  if (close(fd) < 0 && errno != EINTR) {
    int e = errno;
    unlink(tmp);
    return orch__fail(L, "write_private", e);
  }
  if (rename(tmp, path) < 0) {
    int e = errno;
    unlink(tmp);
    return orch__fail(L, "write_private", e);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ctl.append_private(path, data): appends data to path in one write
 * (created mode 0600; a symbolic link is refused), for a journal line that
 * must be on file before anything else happens. */
static int ctl_append_private(lua_State *L) {
  size_t plen, len;
  const char *path = luaL_checklstring(L, 1, &plen);
  const char *data = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, plen > 0 && strlen(path) == plen, 1, "path without zero bytes expected");
  luaL_argcheck(L, len <= 65536, 2, "more than 64 KiB");
  luaL_argcheck(L, lua_gettop(L) <= 2, 3, "no value expected");
  int fd;
  do fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return orch__fail(L, "append_private", errno);
  ssize_t n;
  do n = write(fd, data, len); while (n < 0 && errno == EINTR);
  int e = n < 0 ? errno : (size_t)n != len ? EIO : 0;
  close(fd);
  if (e) return orch__fail(L, "append_private", e);
  lua_pushboolean(L, 1);
  return 1;
}

/* ctl.read_private(path): the content of path, trusted only if it is a
 * regular file (not a symlink) owned by our uid that neither group nor
 * others may read or write. Otherwise nil, message, code: ENOENT when it
 * does not exist, EPERM when it is not to be trusted. */
static int ctl_read_private(lua_State *L) {
  size_t plen;
  const char *path = luaL_checklstring(L, 1, &plen);
  luaL_argcheck(L, plen > 0 && strlen(path) == plen, 1, "path without zero bytes expected");
  orch__check_nargs(L, 1);
  int fd;
  do fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    if (errno == ELOOP) return orch__failf(L, "EPERM", "read_private: %s is a symbolic link", path);
    return orch__fail(L, "read_private", errno);
  }
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    return orch__fail(L, "read_private", e);
  }
  const char *why = !S_ISREG(st.st_mode) ? "is not a regular file"
                  : st.st_uid != geteuid() ? "belongs to another user"
                  : (st.st_mode & 077) ? "is accessible to group or others"
                  : st.st_size > MAX_STATE ? "is larger than 64 MiB" : NULL;
  if (why) {
    close(fd);
    return orch__failf(L, "EPERM", "read_private: %s %s", path, why);
  }
  /* read_fd wants a regular file and closes it. */
  lua_settop(L, 0);
  lua_pushinteger(L, fd);
  return ctl_read_fd(L);
}

/* ctl.read_config(path): the content of a configuration file a user named
 * (a service's env_file), read without ever blocking the loop (O_NONBLOCK:
 * a FIFO fails at once) and trusted only as DESIGN's rule says: a regular
 * file owned by our uid or root that others may not write. Otherwise nil,
 * message, code (ENOENT, EACCES, EPERM for an untrusted file). */
static int ctl_read_config(lua_State *L) {
  size_t plen;
  const char *path = luaL_checklstring(L, 1, &plen);
  luaL_argcheck(L, plen > 0 && strlen(path) == plen, 1, "path without zero bytes expected");
  orch__check_nargs(L, 1);
  int fd;
  do fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return orch__fail_errno(L, errno, "read_config: cannot open %s", path);
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    return orch__fail(L, "read_config", e);
  }
  const char *why = !S_ISREG(st.st_mode) ? "is not a regular file"
                  : (st.st_uid != geteuid() && st.st_uid != 0) ? "belongs to another user"
                  : (st.st_mode & 002) ? "may be written by others"
                  : st.st_size > (1 << 20) ? "is larger than 1 MiB" : NULL;
  if (why) {
    close(fd);
    return orch__failf(L, "EPERM", "read_config: %s %s", path, why);
  }
  lua_settop(L, 0);
  lua_pushinteger(L, fd);
  return ctl_read_fd(L);
}

/* ctl.stream(fd): wraps a descriptor inherited across `orch ctl reexec`
 * (a service's log pipe) in an orch.Stream again, for reading; the stream
 * owns it then (non-blocking, close-on-exec). */
/* The fds this process image was given across exec (open, not
 * close-on-exec when the module opened, before any Lua ran): the only ones
 * ctl.stream() adopts, each once. Every fd orch or libuv made itself is
 * close-on-exec (the loop's epoll fd, its wake-up pipes, libuv's signal lock
 * pipe, the listener, every stream): turned into a second stream and
 * closed, one of those would break the loop or another object for good. */
static int *inherited_fds;
static int ninherited = -1;

static void note_inherited(void) {
  if (ninherited >= 0) return;
  ninherited = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d) return;
  int self = dirfd(d), cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    char *end;
    long fd = strtol(e->d_name, &end, 10);
    if (*end || end == e->d_name || fd < 3 || fd == self || fd > 0x7fffffff) continue;
    int fl = fcntl((int)fd, F_GETFD);
    if (fl < 0 || (fl & FD_CLOEXEC)) continue;
    if (ninherited == cap) {
      int *n = realloc(inherited_fds, (size_t)(cap = cap ? cap * 2 : 8) * sizeof *n);
      if (!n) break;
      inherited_fds = n;
    }
    inherited_fds[ninherited++] = (int)fd;
  }
  closedir(d);
}

static int take_inherited(int fd) {
  for (int i = 0; i < ninherited; i++)
    if (inherited_fds[i] == fd) { inherited_fds[i] = inherited_fds[--ninherited]; return 1; }
  return 0;
}

/* ctl.stream(fd): an orch.Stream (read side) on a pipe or socket this image
 * inherited across exec (the log pipes `orch ctl reexec` hands over). */
static int ctl_stream(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 3 && fd <= 0x7fffffff, 1, "file descriptor >= 3 expected");
  orch__check_nargs(L, 1);
  struct stat st;
  if (fstat((int)fd, &st) < 0) return orch__fail(L, "stream", errno);
  if (!S_ISSOCK(st.st_mode) && !S_ISFIFO(st.st_mode))
    return orch__failf(L, "EINVAL", "stream: fd %d is not a pipe or a socket", (int)fd);
  if (!take_inherited((int)fd))
    return orch__failf(L, "EBADF", "stream: fd %d was not inherited across exec (or is taken)", (int)fd);
  if (!orch__stream_push_fd)
    return orch__failf(L, "ENOSYS", "stream: orch was built without the stream module");
  int r = orch__stream_push_fd(L, (int)fd, ORCH_STREAM_READ);
  if (r < 0) return orch__fail_uv(L, "stream", r);
  return 1;
}

/* ctl.sockets(dir): the names of the unix sockets in dir, sorted by the
 * caller (for `orch ctl` to find the one orchestrator running). */
static int ctl_sockets(lua_State *L) {
  const char *dir = orch__checkpath(L, 1, NULL);
  orch__check_nargs(L, 1);
  DIR *d = opendir(dir);
  if (!d) return orch__fail(L, "opendir", errno);
  lua_newtable(L);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode)) {
      lua_pushstring(L, e->d_name);
      lua_rawseti(L, -2, ++n);
    }
  }
  closedir(d);
  return 1;
}

/* ctl.exe_path(): the file orch was executed from, for `orch ctl reexec`
 * (after an upgrade replaced it, the new file at the same path). */
static int ctl_exe_path(lua_State *L) {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) return orch__fail(L, "readlink", errno);
  buf[n] = 0;
  static const char deleted[] = " (deleted)";
  size_t dl = sizeof deleted - 1;
  if ((size_t)n > dl && strcmp(buf + n - dl, deleted) == 0) buf[n - dl] = 0;
  lua_pushstring(L, buf);
  return 1;
}

/* ------------------------------------------------------------ lock */

/* One orchestrator per control socket: an flock on a file beside it, held
 * for the life of the process (close-on-exec; `orch ctl reexec` hands the
 * descriptor over explicitly), with the holder's pid in it for the message
 * a second orch prints. The lock file is never removed: unlinking it while
 * another process waits on the old inode would let two hold "the" lock. */
typedef struct { int fd; char *path; } Lock;

static Lock *check_lock(lua_State *L, int idx) {
  Lock *k = luaL_checkudata(L, idx, LOCK_MT);
  if (k->fd < 0) orch__closed_error(L, LOCK_MT);
  return k;
}

static int write_pid(int fd) {
  char buf[32];
  int len = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
  if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)len, 0) != len) return -errno;
  return 0;
}

/* The pid written in the lock file by its holder, or 0. */
static int holder_pid(int fd) {
  char buf[32];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = 0;
  return atoi(buf);
}

/* ctl.lock(path [, fd]): takes the lock (path is the lock file), or adopts
 * an inherited descriptor that holds it. Returns the orch.ctl.Lock, or
 * nil, message, "EAGAIN" naming the holder's pid. */
static int ctl_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer ifd = luaL_optinteger(L, 2, -1);
  luaL_argcheck(L, ifd >= -1 && ifd <= 0x7fffffff, 2, "file descriptor out of range");
  orch__check_nargs(L, 2);
  Lock *k = lua_newuserdatauv(L, sizeof *k, 0);
  k->fd = -1;
  k->path = NULL;
  luaL_setmetatable(L, LOCK_MT);
  int fd = (int)ifd;
  if (fd < 0) {
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
    if (fd < 0) return orch__fail_errno(L, errno, "lock %s", path);
  }
  struct stat st;
  int e = 0;
  if (fstat(fd, &st) < 0) e = errno;
  else if (!S_ISREG(st.st_mode)) {
    if (ifd < 0) close(fd);
    return orch__failf(L, "EINVAL", "lock %s: not a regular file", path);
  } else if (st.st_uid != geteuid() && st.st_uid != 0) {
    if (ifd < 0) close(fd);
    return orch__failf(L, "EPERM", "lock %s: belongs to uid %d, not to us", path, (int)st.st_uid);
  }
  if (!e && (st.st_mode & 0077) && fchmod(fd, 0600) < 0) e = errno;
  if (e) {
    if (ifd < 0) close(fd);
    return orch__fail_errno(L, e, "lock %s", path);
  }
  int r;
  do r = flock(fd, LOCK_EX | LOCK_NB); while (r < 0 && errno == EINTR);
  if (r < 0) {
    e = errno;
    int pid = holder_pid(fd);
    if (ifd < 0) close(fd);
    if (e == EWOULDBLOCK) {
      if (pid > 0) return orch__failf(L, "EAGAIN", "already held by pid %d (lock file %s)", pid, path);
      return orch__failf(L, "EAGAIN", "already held by another process (lock file %s)", path);
    }
    return orch__fail_errno(L, e, "lock %s", path);
  }
  if (ifd >= 0 && (r = orch__cloexec(fd)) < 0) return orch__fail(L, "lock", -r);
  if (ifd < 0 && (r = write_pid(fd)) < 0) {
    close(fd);
    return orch__fail_errno(L, -r, "lock %s", path);
  }
  if (!(k->path = strdup(path))) {
    if (ifd < 0) close(fd);
    return orch__fail(L, "lock", ENOMEM);
  }
  k->fd = fd;
  return 1;
}

static int lock_close(lua_State *L) {
  Lock *k = luaL_checkudata(L, 1, LOCK_MT);
  if (k->fd >= 0) close(k->fd);
  k->fd = -1;
  free(k->path);
  k->path = NULL;
  lua_pushboolean(L, 1);
  return 1;
}

static int lock_fd(lua_State *L) {
  lua_pushinteger(L, check_lock(L, 1)->fd);
  return 1;
}

static int lock_path(lua_State *L) {
  lua_pushstring(L, check_lock(L, 1)->path);
  return 1;
}

/* lock:write_pid(): the current pid into the lock file (after daemonize). */
static int lock_write_pid(lua_State *L) {
  Lock *k = check_lock(L, 1);
  int r = write_pid(k->fd);
  if (r < 0) return orch__fail(L, "lock", -r);
  lua_pushboolean(L, 1);
  return 1;
}

static int lock_tostring(lua_State *L) {
  Lock *k = luaL_checkudata(L, 1, LOCK_MT);
  if (k->fd < 0) lua_pushliteral(L, LOCK_MT ": closed");
  else lua_pushfstring(L, LOCK_MT ": %s", k->path);
  return 1;
}

/* ------------------------------------------------------------ sd_notify */

/* The watchdog pets are a C timer rather than orch.timer.every because they
 * must not keep orch alive: the timer is unref'd. The state lives in the
 * runtime's ctl slot; the close hook closes the timer. */
typedef struct {
  uv_timer_t timer;
  int armed;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
} wdog;

static int notify_send(const char *path, const char *msg, size_t len) {
  struct sockaddr_un sa;
  socklen_t salen;
  size_t plen = strlen(path);
  if (plen < 2 || (path[0] != '/' && path[0] != '@') || make_addr(path, plen, &sa, &salen) < 0)
    return -EINVAL;
  if (path[0] == '@') {         /* abstract namespace: no terminating zero */
    sa.sun_path[0] = 0;
    salen--;
  }
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  ssize_t n;
  do n = sendto(fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
  while (n < 0 && errno == EINTR);
  int e = n < 0 ? errno : 0;
  close(fd);
  return -e;
}

static int ctl_sd_notify(lua_State *L) {
  size_t len;
  const char *msg = luaL_checklstring(L, 1, &len);
  const char *path = orch__checkpath(L, 2, NULL);
  orch__check_nargs(L, 2);
  int r = notify_send(path, msg, len);
  if (r < 0) return orch__fail(L, "sd_notify", -r);
  lua_pushboolean(L, 1);
  return 1;
}

static void wdog_cb(uv_timer_t *t) {
  wdog *w = t->data;
  notify_send(w->path, "WATCHDOG=1", 10);
}

static void wdog_closed(uv_handle_t *h) { free(h->data); }

static void wdog_close_hook(orch_runtime *rt, void *data) {
  void **slot = orch__slot(rt, ORCH__SLOT_CTL);
  wdog *w = *slot;
  *slot = NULL;
  if (w) uv_close((uv_handle_t *)&w->timer, wdog_closed);
}

/* ctl.sd_watchdog(seconds, path): sends WATCHDOG=1 to path every seconds
 * (0 stops). */
static int ctl_sd_watchdog(lua_State *L) {
  double s = orch__checkseconds(L, 1);
  size_t plen;
  const char *path = luaL_checklstring(L, 2, &plen);
  orch__check_nargs(L, 2);
  orch_runtime *rt = orch__rt(L);
  void **slot = orch__slot(rt, ORCH__SLOT_CTL);
  wdog *w = *slot;
  if (!w) {
    if (s == 0) { lua_pushboolean(L, 1); return 1; }
    w = calloc(1, sizeof *w);
    if (!w) return orch__fail(L, "sd_watchdog", ENOMEM);
    uv_timer_init(orch__loop(L), &w->timer);
    w->timer.data = w;
    uv_unref((uv_handle_t *)&w->timer);
    *slot = w;
    orch__on_close(rt, wdog_close_hook, NULL);
  }
  if (s == 0) {
    uv_timer_stop(&w->timer);
    lua_pushboolean(L, 1);
    return 1;
  }
  luaL_argcheck(L, plen >= 2 && plen < sizeof w->path - 1, 2, "socket path too short or too long");
  memcpy(w->path, path, plen + 1);
  uint64_t ms = (uint64_t)(s * 1000.0);
  if (ms < 1) ms = 1;
  uv_timer_start(&w->timer, wdog_cb, ms, ms);
  lua_pushboolean(L, 1);
  return 1;
}

int orch__open_ctl(lua_State *L) {
  note_inherited();
  static const luaL_Reg methods[] = {
    {"accept", listener_accept}, {"close", listener_close}, {"fd", listener_fd},
    {"path", listener_path}, {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", listener_gc}, {"__close", listener_close}, {"__tostring", listener_tostring},
    {NULL, NULL}
  };
  orch__newclass(L, LISTENER_MT, methods, meta);
  lua_pop(L, 1);
  static const luaL_Reg lock_methods[] = {
    {"close", lock_close}, {"fd", lock_fd}, {"path", lock_path}, {"write_pid", lock_write_pid}, {NULL, NULL}
  };
  static const luaL_Reg lock_meta[] = {
    {"__gc", lock_close}, {"__close", lock_close}, {"__tostring", lock_tostring}, {NULL, NULL}
  };
  orch__newclass(L, LOCK_MT, lock_methods, lock_meta);
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {
    {"listen", ctl_listen}, {"secure_dir", ctl_secure_dir}, {"getuid", ctl_getuid},
    {"inherit", ctl_inherit}, {"memfd", ctl_memfd}, {"read_fd", ctl_read_fd},
    {"sd_notify", ctl_sd_notify}, {"sd_watchdog", ctl_sd_watchdog}, {"sockets", ctl_sockets}, {"exe_path", ctl_exe_path},
    {"stream", ctl_stream}, {"write_private", ctl_write_private}, {"read_private", ctl_read_private},
    {"read_config", ctl_read_config},
    {"append_private", ctl_append_private},
    {"nofile", ctl_nofile}, {"fd_reserve", ctl_fd_reserve},
    {"private_dir", ctl_private_dir}, {"lock", ctl_lock},
    {NULL, NULL}
  };
  luaL_newlib(L, fns);
  return 1;
}
