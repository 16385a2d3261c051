/*
 * listener.c: orch.Listener (listening unix and TCP sockets) and
 * orch.listen. Accepting is pull-based: the socket is polled only while a
 * task waits in :accept(), so unaccepted connections wait in the kernel's
 * backlog. An accepted connection becomes an orch.Stream (stream.c).
 *
 * The listener is a socket of ours and a uv_poll_t rather than libuv's
 * uv_listen, for two things the control socket needs: a listener that never
 * keeps orch running (ref = false: its poll is unref'd, like luv's
 * handle:unref()), and accepting when orch is out of descriptors. At
 * EMFILE/ENFILE, libuv would accept and silently close the connection;
 * here the runtime's spare fds (orch__fd_reserve_*) are given up so the
 * connection is accepted and served, :accept() says so ("EMFILE" as a
 * second value), and the spares are taken back when that stream closes.
 *
 * Ownership: the userdata points to a core (lcore) with the lifetime every
 * object of the module shares (handle.h); the socket is closed with it, the
 * core freed in the poll handle's close callback. The socket file is unlinked on close only by the
 * process that created it, and only if it is still that file. Nothing here
 * blocks (accept4 after readiness; the stale-socket probe does not wait).
 */
#include "stream_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"
#include "util.h"

struct lcore;
typedef struct Listener { struct lcore *l; int kind; int port; } Listener;   /* the userdata */

typedef struct lcore {
  orch__hobj o;
  uv_poll_t poll;
  uv_loop_t *loop;
  int fd;                       /* the listening socket */
  int kind, inited, polling;
  lua_State *co;                /* the task waiting in :accept() */
  char *path;                   /* the socket file we own, or NULL */
  dev_t dev;
  ino_t ino;
  pid_t owner;                  /* only the creating process unlinks it */
  int port;
  char host[INET6_ADDRSTRLEN];
  char *name;                   /* abstract or path name, for address() */
} lcore;

static void lcore_close(orch__hobj *o);
static void lcore_forget(orch__hobj *o) { ((lcore *)o)->co = NULL; }
static void lcore_forked(orch__hobj *o) { ((lcore *)o)->polling = 0; }
static int lcore_fd(orch__hobj *o) { return ((lcore *)o)->fd; }

static int lcore_describe(lua_State *L, orch__hobj *o, void *ud) {
  lcore *l = (lcore *)o;
  if (!l) lua_pushstring(L, orch__stream_kinds[((Listener *)ud)->kind]);
  else if (l->kind == K_UNIX) lua_pushfstring(L, "unix=%s", l->name ? l->name : "?");
  else lua_pushfstring(L, "tcp=%s:%d", l->host, l->port);
  return 1;
}

static const orch__hclass listener_class = {
  LISTENER_MT, lcore_close, lcore_forget, lcore_forked, lcore_fd, lcore_describe
};

static void lcore_free(lcore *l) {
  orch__hobj_unlink(&l->o);
  free(l->path);
  free(l->name);
  free(l);
}

static void lcore_close_cb(uv_handle_t *h) { lcore_free(h->data); }

static void lcore_close(orch__hobj *o) {
  lcore *l = (lcore *)o;
  lua_State *co = l->co;
  if (co) {
    l->co = NULL;
    orch__wake_closed(co, "accept", "listener");
  }
  orch__sun_unlink(&l->path, l->dev, l->ino, l->owner);
  /* Closed now, not in the close callback: a connect right after close
   * must be refused. libuv forgets the fd first (it may be reused). */
  if (l->inited) uv_poll_stop(&l->poll);
  orch__close_fd(l->fd);
  l->fd = -1;
  if (l->inited) uv_close((uv_handle_t *)&l->poll, lcore_close_cb);
  else lcore_free(l);
}

/* ------------------------------------------------------------------ accepting */

static int accept_fd(int lfd) {
  int fd;
  do fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK); while (fd < 0 && errno == EINTR);
  return fd;
}

/* [-0,+1..3] Accepts one connection onto L's stack: the stream, plus
 * "EMFILE"/"ENFILE" when it took the spare fds. Returns the count of values
 * pushed, or 0 when nothing is pending. */
static int try_accept(lua_State *L, lcore *l) {
  int fd = accept_fd(l->fd), emfile = 0;
  if (fd < 0 && (errno == EMFILE || errno == ENFILE) && orch__fd_reserve_held() > 0) {
    emfile = errno;
    orch__fd_reserve_release();
    fd = accept_fd(l->fd);
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
    return orch__fail(L, "accept", errno);
  }
  if (orch__stream_push_new(L, l->o.st, fd, l->kind, ORCH_STREAM_READ | ORCH_STREAM_WRITE,
                            "accept") != 1)
    return 3;
  Stream *u = lua_touserdata(L, -1);
  u->s->unread = 1;
  if (!emfile) return 1;
  u->s->refill = 1;
  orch__fd_reserve_hold(1);
  lua_pushstring(L, emfile == EMFILE ? "EMFILE" : "ENFILE");
  return 2;
}

static void poll_stop(lcore *l) {
  if (l->polling) {
    uv_poll_stop(&l->poll);
    l->polling = 0;
  }
}

/* The task is woken with the poll still on: from a libuv callback it runs
 * at once, and one that accepts again right away (a server's loop) waits
 * on the same poll. The poll stops only if no task waits when the task
 * yields (the listener is still watched only while a task waits in
 * :accept()), instead of stopping and starting it at every connection (two
 * epoll_ctl calls and a failed third, each `orch ctl` command). */
static void poll_cb(uv_poll_t *h, int status, int events) {
  lcore *l = h->data;
  lua_State *co = l->co;
  if (!co) { poll_stop(l); return; }
  int n = status < 0 ? orch__fail_uv(co, "accept", status) : try_accept(co, l);
  if (!n) return;
  l->co = NULL;
  orch__wake(co, n);
  /* (A listener the task closed is closing: its close stopped the poll.) */
  if (!l->co && !l->o.closing) poll_stop(l);
}

static void accept_cancel(void *data) {
  lcore *l = data;
  l->co = NULL;
  if (!l->o.closing) poll_stop(l);
}

static lcore *check_listener(lua_State *L, int idx) {
  return (lcore *)orch__hobj_check(L, idx, &listener_class);
}

static int listener_accept(lua_State *L) {
  lcore *l = check_listener(L, 1);
  orch__check_nargs(L, 1);
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
  return orch__await(L, l->o.timeout, "accept", accept_cancel, l);
}

/* ------------------------------------------------------------------ listening */

/* 0, or -errno with the spare fds' help when the socket could not be made
 * because orch is out of descriptors. */
static int make_socket(int domain) {
  /* Services took every fd before the socket was made: a spare one is lent
   * to it, taken back (under another number) once fds are free again. */
  int fd = orch__fd_socket_lent(domain, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

static int listen_unix(lcore *l, const char *path, size_t len, int mode, int backlog) {
  struct sockaddr_un sa;
  socklen_t salen;
  int r = orch__sun_make(path, len, &sa, &salen);
  if (r < 0) return r;
  if ((l->fd = make_socket(AF_UNIX)) < 0) return l->fd;
  r = orch__sun_bind(l->fd, &sa, salen, mode, SOCK_STREAM, &l->dev, &l->ino);
  if (r < 0) return r;
  l->owner = getpid();
  if (path[0] != '@' && !(l->path = strdup(path))) { unlink(path); return -ENOMEM; }
  if (!(l->name = strdup(path))) return -ENOMEM;
  return listen(l->fd, backlog) < 0 ? -errno : 0;
}

/* The address a TCP listener is bound to, for address() and `port`. */
static int note_tcp_name(lcore *l) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(l->fd, (struct sockaddr *)&ss, &sl) < 0) return -errno;
  if (ss.ss_family == AF_INET6) {
    l->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    uv_ip6_name((struct sockaddr_in6 *)&ss, l->host, sizeof l->host);
  } else {
    l->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_ip4_name((struct sockaddr_in *)&ss, l->host, sizeof l->host);
  }
  return 0;
}

static int listen_tcp(lcore *l, const struct sockaddr *sa, int backlog) {
  if ((l->fd = make_socket(sa->sa_family)) < 0) return l->fd;
  /* As libuv does: a restarted server may bind while old connections are
   * in TIME_WAIT. */
  int one = 1;
  if (setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) return -errno;
  socklen_t salen = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  if (bind(l->fd, sa, salen) < 0 || listen(l->fd, backlog) < 0) return -errno;
  return note_tcp_name(l);
}

/* A listening socket inherited across exec (`orch ctl reexec` hands the
 * control socket over): checked, made non-blocking, adopted. With path,
 * the socket file there is ours to remove on close (if it is a socket). */
static int listen_fd(lcore *l, int fd, const char *path) {
  int type = 0, acc = 0, dom = 0;
  socklen_t tl = sizeof type, al = sizeof acc, dl = sizeof dom;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 ||
      getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) < 0 ||
      getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &dl) < 0)
    return -errno;
  if (type != SOCK_STREAM || !acc) return -EINVAL;
  if (path ? dom != AF_UNIX : dom != AF_UNIX && dom != AF_INET && dom != AF_INET6) return -EINVAL;
  l->kind = dom == AF_UNIX ? K_UNIX : K_TCP;
  if (!orch__fd_take_inherited(fd)) return -EBADF;
  l->fd = fd;
  int r = orch__cloexec(fd);
  if (r < 0) return r;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
  if (l->kind == K_TCP) return note_tcp_name(l);
  l->owner = getpid();
  struct stat st;
  if (path && stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
    l->dev = st.st_dev;
    l->ino = st.st_ino;
    if (path[0] != '@' && !(l->path = strdup(path))) return -ENOMEM;
  }
  if (path && !(l->name = strdup(path))) return -ENOMEM;
  return 0;
}

int orch__stream_listen(lua_State *L) {
  static const char *const opts[] = { "unix", "host", "port", "backlog", "mode", "ref", "fd", NULL };
  orch__check_options(L, 1, opts);
  orch__check_nargs(L, 1);
  int has_unix = orch__has_option(L, 1, "unix");
  int has_port = orch__has_option(L, 1, "port");
  int has_fd = orch__has_option(L, 1, "fd");
  if (has_unix && (has_port || orch__has_option(L, 1, "host")))
    luaL_argerror(L, 1, "option 'unix' excludes 'host' and 'port'");
  if (!has_unix && !has_port && !has_fd) luaL_argerror(L, 1, "option 'unix', 'port' or 'fd' expected");
  if (has_fd && (has_port || orch__has_option(L, 1, "host") || orch__has_option(L, 1, "mode") ||
                 orch__has_option(L, 1, "backlog")))
    luaL_argerror(L, 1, "option 'fd' excludes 'host', 'port', 'mode' and 'backlog' (the socket exists)");
  lua_Integer backlog = orch__opt_integer(L, 1, "backlog", SOMAXCONN);
  if (backlog < 1 || backlog > 65535) orch__opt_error(L, 1, "backlog", "a number from 1 to 65535 expected");
  int mode = orch__opt_mode(L, 1, "mode", 0600, 07777, NULL);
  int ref = orch__opt_boolean(L, 1, "ref", 1);
  lua_Integer ifd = orch__opt_integer(L, 1, "fd", -1);
  if (has_fd && (ifd < 3 || ifd > 0x7fffffff)) orch__opt_error(L, 1, "fd", "file descriptor >= 3 expected");
  const char *path = NULL;
  size_t len = 0;
  struct sockaddr_storage ss;
  if (has_unix) {
    orch__opt_string(L, 1, "unix", NULL);
    lua_getfield(L, 1, "unix");
    path = lua_tolstring(L, -1, &len);
    orch__sun_check(L, 1, "option 'unix'", path, len);
  } else if (!has_fd) {
    if (orch__has_option(L, 1, "mode")) luaL_argerror(L, 1, "option 'mode' applies to unix sockets only");
    int port = orch__opt_port(L, 1);
    const char *host = orch__opt_string(L, 1, "host", "127.0.0.1");
    if (orch__parse_host(host, port, &ss) < 0)
      orch__opt_error(L, 1, "host", "numeric IPv4 or IPv6 address expected");
  }
  orch__hstate *st = orch__hstate_get(L);
  Listener *u = orch__hobj_push(L, &listener_class, sizeof *u);
  u->kind = has_unix ? K_UNIX : K_TCP;
  lcore *l = calloc(1, sizeof *l);
  if (!l) return orch__fail(L, "listen", ENOMEM);
  orch__hobj_link(st, &l->o, &listener_class);
  l->loop = st->loop;
  l->kind = u->kind;
  l->fd = -1;
  int r = has_fd ? listen_fd(l, (int)ifd, path)
        : has_unix ? listen_unix(l, path, len, mode, (int)backlog)
        : listen_tcp(l, (struct sockaddr *)&ss, (int)backlog);
  if (r == 0) {
    r = uv_poll_init(l->loop, &l->poll, l->fd);
    if (r == 0) {
      l->poll.data = l;
      l->inited = 1;
    }
  }
  if (r < 0) {
    int taken = l->fd >= 0;
    orch__hobj_close(&l->o);
    if (has_fd && !taken && r == -EBADF)
      return orch__failf(L, "EBADF", "listen: fd %d was not inherited across exec (or is taken)", (int)ifd);
    if (has_fd && !taken)
      return orch__failf(L, "EINVAL", "listen: fd %d is not a listening %ssocket", (int)ifd,
                         has_unix ? "unix " : "");
    return orch__fail_uv(L, "listen", r);
  }
  u->kind = l->kind;
  /* Listening alone does not keep orch running; a waiting accept does
   * (the poll is active only then), unless ref is false. */
  if (!ref) uv_unref((uv_handle_t *)&l->poll);
  orch__hobj_attach(u, &l->o);
  u->port = l->port;
  return 1;
}

static int listener_address(lua_State *L) {
  lcore *l = check_listener(L, 1);
  if (l->kind == K_UNIX) {
    if (l->name) lua_pushstring(L, l->name); else lua_pushnil(L);
    return 1;
  }
  lua_pushstring(L, l->host);
  lua_pushinteger(L, l->port);
  return 2;
}

/* __index: the methods, plus the read-only field `port`. */
static int listener_index(lua_State *L) {
  Listener *u = luaL_checkudata(L, 1, LISTENER_MT);
  const char *k = lua_tostring(L, 2);
  if (k && strcmp(k, "port") == 0) {
    if (u->kind == K_TCP) lua_pushinteger(L, u->port); else lua_pushnil(L);
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

void orch__listener_register(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"accept", listener_accept}, {"address", listener_address}, {NULL, NULL}
  };
  orch__hclass_new(L, &listener_class, methods, NULL);
  lua_getfield(L, -1, "__index");
  lua_pushcclosure(L, listener_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
