/*
 * dgram.c: orch.Dgram (unix datagram sockets: sd_notify, descriptors passed
 * with SCM_RIGHTS, senders' credentials) and orch.dgram. A receive waits on
 * a uv_poll_t that runs only while a task waits; sends never wait (a full
 * receiver fails with EAGAIN).
 *
 * Ownership: the userdata points to a core (dcore) with the lifetime every
 * object of the module shares (handle.h); the socket fd is closed with it.
 * Received descriptors are owned by the streams made of them (or closed),
 * or with recv{ fds = "raw" } by the caller (orch.fd.close).
 * Nothing here blocks.
 */
#include "stream_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"
#include "util.h"

struct dcore;
typedef struct Dgram { struct dcore *d; } Dgram;   /* the userdata */

typedef struct dcore {
  orch__hobj o;
  uv_poll_t poll;
  uv_loop_t *loop;
  int fd, inited, polling, passcred;
  int want_fds;                 /* the waiting recv asked for descriptors */
  lua_State *co;
  char *path;
  char *name;
  dev_t dev;
  ino_t ino;
  pid_t owner;
} dcore;

static void dcore_close(orch__hobj *o);
static void dcore_forget(orch__hobj *o) { ((dcore *)o)->co = NULL; }
static void dcore_forked(orch__hobj *o) { ((dcore *)o)->polling = 0; }
static int dcore_fd(orch__hobj *o) { return ((dcore *)o)->fd; }

static int dcore_describe(lua_State *L, orch__hobj *o, void *ud) {
  dcore *d = (dcore *)o;
  if (!d) return 0;
  if (d->name) lua_pushfstring(L, "unix=%s", d->name);
  else lua_pushliteral(L, "unbound");
  return 1;
}

static const orch__hclass dgram_class = {
  DGRAM_MT, dcore_close, dcore_forget, dcore_forked, dcore_fd, dcore_describe
};

/* A core owning fd (-1: none yet), or NULL. */
static dcore *dcore_new(orch__hstate *st, int fd) {
  dcore *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  orch__hobj_link(st, &d->o, &dgram_class);
  d->loop = st->loop;
  d->fd = fd;
  return d;
}

static void dcore_free(dcore *d) {
  orch__hobj_unlink(&d->o);
  free(d->path);
  free(d->name);
  free(d);
}

static void dcore_close_cb(uv_handle_t *h) {
  dcore *d = h->data;
  orch__close_fd(d->fd);
  dcore_free(d);
}

static void dcore_close(orch__hobj *o) {
  dcore *d = (dcore *)o;
  lua_State *co = d->co;
  if (co) {
    d->co = NULL;
    orch__wake_closed(co, "recv", "socket");
  }
  orch__sun_unlink(&d->path, d->dev, d->ino, d->owner);
  if (d->inited) {
    uv_close((uv_handle_t *)&d->poll, dcore_close_cb);
  } else {
    orch__close_fd(d->fd);
    dcore_free(d);
  }
}

/* At most this many descriptors travel with one datagram (the kernel's
 * SCM_MAX_FD). */
#define MAX_PASS_FDS ORCH_MAX_PASS_FDS

/* [-0,+1..4] One datagram: data, sender (or nil), credentials (passcred),
 * and with want_fds the descriptors it carried (a list of streams, or of
 * descriptor numbers the caller owns when want_fds is FDS_RAW).
 * Returns 0 when none is waiting. */
#define FDS_RAW 2
static int try_recv(lua_State *L, dcore *d, int want_fds) {
  ssize_t size;
  do size = recv(d->fd, NULL, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT); while (size < 0 && errno == EINTR);
  if (size < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return orch__fail(L, "recv", errno);
  }
  lua_checkstack(L, 8);
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, size ? (size_t)size : 1);
  struct sockaddr_un from;
  socklen_t fromlen = 0;
  struct ucred cr;
  int have_cred, fds[MAX_PASS_FDS], nfds, ctrunc;
  ssize_t n = orch__dgram_recv(d->fd, p, size ? (size_t)size : 1, &from, &fromlen, &cr, &have_cred,
                               want_fds ? fds : NULL, MAX_PASS_FDS, &nfds, &ctrunc);
  if (n < 0) {
    int e = (int)-n;
    luaL_pushresultsize(&b, 0);
    lua_pop(L, 1);
    if (e == EAGAIN || e == EWOULDBLOCK) return 0;
    return orch__fail(L, "recv", e);
  }
  if (want_fds && ctrunc && nfds < MAX_PASS_FDS) {
    /* The kernel could not install every descriptor sent (orch is out of
     * fds): the datagram is gone, and with it those it dropped. Not a
     * datagram without them: the caller must know (a hand-over asks
     * again once fds are free). */
    for (int i = 0; i < nfds; i++) orch__close_fd(fds[i]);
    luaL_pushresultsize(&b, 0);
    lua_pop(L, 1);
    return orch__failf(L, "EMFILE", "recv: too many open files: descriptors sent with the datagram were lost");
  }
  struct ucred *cred = have_cred ? &cr : NULL;
  luaL_pushresultsize(&b, (size_t)n > (size_t)size ? (size_t)size : (size_t)n);
  orch__sun_push(L, &from, fromlen);
  if (!want_fds) {
    if (!d->passcred) return 2;
    if (cred) orch__push_ucred(L, cred); else lua_pushnil(L);
    return 3;
  }
  if (d->passcred && cred) orch__push_ucred(L, cred); else lua_pushnil(L);
  lua_createtable(L, nfds, 0);
  for (int i = 0; i < nfds; i++) {
    /* A descriptor that cannot be a stream (a regular file, a directory, a
     * datagram socket) is closed and shows as false. */
    if (want_fds == FDS_RAW) {
      orch__fd_own(fds[i]);
      lua_pushinteger(L, fds[i]);
    }
    else if (orch__stream_push_fd(L, fds[i], 0) < 0) lua_pushboolean(L, 0);
    lua_rawseti(L, -2, i + 1);
  }
  return 4;
}

static void poll_stop(dcore *d) {
  if (d->polling) {
    uv_poll_stop(&d->poll);
    d->polling = 0;
  }
}

static void poll_cb(uv_poll_t *h, int status, int events) {
  dcore *d = h->data;
  lua_State *co = d->co;
  if (!co) { poll_stop(d); return; }
  int n = status < 0 ? orch__fail_uv(co, "recv", status) : try_recv(co, d, d->want_fds);
  if (!n) return;
  d->co = NULL;
  poll_stop(d);
  orch__wake(co, n);
}

static void recv_cancel(void *data) {
  dcore *d = data;
  d->co = NULL;
  if (!d->o.closing) poll_stop(d);
}

static dcore *check_dgram(lua_State *L, int idx) {
  return (dcore *)orch__hobj_check(L, idx, &dgram_class);
}

/* dgram:recv([{ fds = true | "raw" }]) */
static int dgram_recv(lua_State *L) {
  static const char *const opts[] = { "fds", NULL };
  dcore *d = check_dgram(L, 1);
  int want_fds = 0;
  if (!lua_isnoneornil(L, 2)) {
    orch__check_options(L, 2, opts);
    lua_getfield(L, 2, "fds");
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING && strcmp(lua_tostring(L, -1), "raw") == 0) want_fds = FDS_RAW;
    else if (t == LUA_TBOOLEAN || t == LUA_TNIL) want_fds = lua_toboolean(L, -1);
    else orch__opt_error(L, 2, "fds", lua_pushfstring(L, "boolean or \"raw\" expected, got %s",
                                                      t == LUA_TSTRING ? "another string" : luaL_typename(L, -1)));
    lua_pop(L, 1);
  }
  orch__check_nargs(L, 2);
  orch__check_task(L, "recv");
  if (d->co) return orch__failf(L, "EBUSY", "recv: another task is receiving on this socket");
  lua_settop(L, 1);
  int n = try_recv(L, d, want_fds);
  if (n) return n;
  if (!d->inited) {
    int r = uv_poll_init(d->loop, &d->poll, d->fd);
    if (r < 0) return orch__fail_uv(L, "recv", r);
    d->poll.data = d;
    d->inited = 1;
  }
  if (!d->polling) {
    int r = uv_poll_start(&d->poll, UV_READABLE, poll_cb);
    if (r < 0) return orch__fail_uv(L, "recv", r);
    d->polling = 1;
  }
  d->co = L;
  d->want_fds = want_fds;
  return orch__await(L, d->o.timeout, "recv", recv_cancel, d);
}

/* The descriptors of dgram:send's list argument (integers >= 0 or open
 * streams), checked before anything is sent. Returns their count. */
static int check_send_fds(lua_State *L, int idx, int *fds) {
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_Integer n = luaL_len(L, idx);
  if (n < 1 || n > MAX_PASS_FDS) luaL_argerror(L, idx, "list of 1 to 253 descriptors expected");
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, idx, i);
    int fd = -1;
    if (lua_isinteger(L, -1)) {
      lua_Integer v = lua_tointeger(L, -1);
      if (v < 0 || v > 0x7fffffff)
        luaL_argerror(L, idx, lua_pushfstring(L, "descriptor %d out of range", (int)i));
      fd = (int)v;
    } else if (luaL_testudata(L, -1, STREAM_MT)) {
      fd = orch__stream_fd(L, -1);
      if (fd < 0) luaL_argerror(L, idx, lua_pushfstring(L, "entry %d is a closed orch.Stream", (int)i));
    } else {
      luaL_argerror(L, idx, lua_pushfstring(L, "entry %d: descriptor or orch.Stream expected, got %s",
                                            (int)i, luaL_typename(L, -1)));
    }
    lua_pop(L, 1);
    fds[i - 1] = fd;
  }
  return (int)n;
}

/* dgram:send(data [, path [, fds]]): without path, to the connected peer
 * (a socketpair's other end). */
static int dgram_send(lua_State *L) {
  dcore *d = check_dgram(L, 1);
  size_t len, plen = 0;
  const char *data = luaL_checklstring(L, 2, &len);
  const char *path = NULL;
  if (!lua_isnoneornil(L, 3)) {
    path = luaL_checklstring(L, 3, &plen);
    orch__sun_check(L, 3, "send", path, plen);
  }
  int fds[MAX_PASS_FDS];
  int nfds = lua_isnoneornil(L, 4) ? 0 : check_send_fds(L, 4, fds);
  orch__check_nargs(L, 4);
  struct sockaddr_un sa;
  socklen_t salen = 0;
  if (path) {
    int r = orch__sun_make(path, plen, &sa, &salen);
    if (r < 0) return orch__fail_uv(L, "send", r);
  }
  union { struct cmsghdr align; char buf[CMSG_SPACE(MAX_PASS_FDS * sizeof(int))]; } cbuf;
  struct iovec iov = { (void *)data, len };
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_name = path ? &sa : NULL;
  msg.msg_namelen = salen;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds) {
    memset(cbuf.buf, 0, sizeof cbuf.buf);
    msg.msg_control = cbuf.buf;
    msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
  }
  ssize_t n;
  do n = sendmsg(d->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  if (n < 0) return orch__fail(L, "send", errno);
  lua_pushboolean(L, 1);
  return 1;
}

static int dgram_address(lua_State *L) {
  dcore *d = check_dgram(L, 1);
  if (d->name) lua_pushstring(L, d->name); else lua_pushnil(L);
  return 1;
}

int orch__stream_dgram(lua_State *L) {
  static const char *const opts[] = { "unix", "mode", "passcred", "uid", "gid", NULL };
  if (lua_isnoneornil(L, 1)) { lua_settop(L, 0); lua_newtable(L); }
  orch__check_options(L, 1, opts);
  orch__check_nargs(L, 1);
  int mode = orch__opt_mode(L, 1, "mode", 0600, 07777, NULL);
  int passcred = orch__opt_boolean(L, 1, "passcred", 0);
  /* The owner of the socket file (so that a service running as another
   * user may send to a 0600 socket): -1 keeps orch's. */
  lua_Integer uid = orch__opt_integer(L, 1, "uid", -1), gid = orch__opt_integer(L, 1, "gid", -1);
  if (uid < -1 || uid > 0x7fffffff) orch__opt_error(L, 1, "uid", "uid expected");
  if (gid < -1 || gid > 0x7fffffff) orch__opt_error(L, 1, "gid", "gid expected");
  const char *path = orch__opt_string(L, 1, "unix", NULL);
  if ((uid >= 0 || gid >= 0) && (!path || path[0] == '@'))
    luaL_argerror(L, 1, "options 'uid' and 'gid' apply to unix socket paths only");
  size_t len = 0;
  if (path) {
    lua_getfield(L, 1, "unix");
    path = lua_tolstring(L, -1, &len);
    orch__sun_check(L, 1, "option 'unix'", path, len);
  }
  orch__hstate *st = orch__hstate_get(L);
  Dgram *u = orch__hobj_push(L, &dgram_class, sizeof *u);
  struct sockaddr_un sa;
  socklen_t salen = 0;
  if (path) {
    int r = orch__sun_make(path, len, &sa, &salen);
    if (r < 0) return orch__fail_uv(L, "dgram", r);
  }
  dcore *d = dcore_new(st, -1);
  if (!d) return orch__fail(L, "dgram", ENOMEM);
  d->passcred = passcred;
  d->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = d->fd < 0 ? errno : 0;
  int one = 1;
  if (!err && passcred && setsockopt(d->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) err = errno;
  if (!err && path) {
    int r = orch__sun_bind(d->fd, &sa, salen, mode, SOCK_DGRAM, &d->dev, &d->ino);
    if (r == 0 && (uid >= 0 || gid >= 0)) {
      /* The file is the one just bound (0600, ours): changing its owner
       * opens it to that user only. */
      struct stat fst;
      if (lchown(path, (uid_t)uid, (gid_t)gid) < 0 || lstat(path, &fst) < 0) r = -errno;
      else if (fst.st_dev != d->dev || fst.st_ino != d->ino) r = -EEXIST;
      if (r < 0) unlink(path);
    }
    if (r < 0) err = -r;
    else {
      d->owner = getpid();
      if (path[0] != '@' && !(d->path = strdup(path))) err = ENOMEM;
      if (!(d->name = strdup(path))) err = ENOMEM;
    }
  }
  if (err) {
    orch__hobj_close(&d->o);
    return orch__fail(L, "dgram", err);
  }
  orch__hobj_attach(u, &d->o);
  return 1;
}

int orch__dgram_push_pair(lua_State *L, orch__hstate *st, int fds[2]) {
  for (int i = 0; i < 2; i++) {
    Dgram *u = orch__hobj_push(L, &dgram_class, sizeof *u);
    int fl = fcntl(fds[i], F_GETFL);
    int err = fl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) < 0 ? errno : 0;
    dcore *d = err ? NULL : dcore_new(st, fds[i]);
    if (!d) {
      orch__close_fd(fds[i]);
      if (i == 0) orch__close_fd(fds[1]);
      else orch__hobj_close_ud(lua_touserdata(L, -2));
      lua_pop(L, i + 1);
      return orch__fail(L, "socketpair", err ? err : ENOMEM);
    }
    orch__hobj_attach(u, &d->o);
  }
  return 2;
}

void orch__dgram_register(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"recv", dgram_recv}, {"send", dgram_send}, {"address", dgram_address}, {NULL, NULL}
  };
  orch__hclass_new(L, &dgram_class, methods, NULL);
  lua_pop(L, 1);
}

