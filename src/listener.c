/*
 * listener.c: orch.Listener (listening unix and TCP sockets) and
 * orch.listen. Accepting is pull-based: libuv holds one accepted fd and
 * stops polling until uv_accept, which runs only when a task asks. An
 * accepted connection becomes an orch.Stream (stream.c).
 *
 * Ownership: the userdata points to a core (lcore) with the lifetime every
 * object of the module shares (handle.h). The socket file is unlinked on
 * close only by the process that created it, and only if it is still that
 * file. Nothing here blocks.
 */
#include "stream_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"
#include "util.h"

struct lcore;
typedef struct Listener { struct lcore *l; int kind; int port; } Listener;   /* the userdata */

typedef struct lcore {
  orch__hobj o;
  anystream u;
  uv_loop_t *loop;
  int kind, inited, pending;
  lua_State *co;
  char *path;                   /* the socket file we created, or NULL */
  dev_t dev;
  ino_t ino;
  pid_t owner;                  /* only the creating process unlinks it */
  int port;
  char host[INET6_ADDRSTRLEN];
  char *name;                   /* abstract or path name, for address() */
} lcore;

static void lcore_close(orch__hobj *o);
static void lcore_forget(orch__hobj *o) { ((lcore *)o)->co = NULL; }

static int lcore_fd(orch__hobj *o) {
  int fd = -1;
  uv_fileno(&((lcore *)o)->u.h, &fd);
  return fd;
}

static int lcore_describe(lua_State *L, orch__hobj *o, void *ud) {
  lcore *l = (lcore *)o;
  if (!l) lua_pushstring(L, orch__stream_kinds[((Listener *)ud)->kind]);
  else if (l->kind == K_UNIX) lua_pushfstring(L, "unix=%s", l->name);
  else lua_pushfstring(L, "tcp=%s:%d", l->host, l->port);
  return 1;
}

static const orch__hclass listener_class = {
  LISTENER_MT, lcore_close, lcore_forget, NULL, lcore_fd, lcore_describe
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
  if (l->inited) uv_close(&l->u.h, lcore_close_cb);
  else lcore_free(l);
}

/* [-0,+1|3] Accepts the connection libuv holds into a new orch.Stream. */
static int do_accept(lua_State *L, lcore *l) {
  l->pending = 0;
  score *c = orch__score_new(l->o.st, l->kind, -1, ORCH_STREAM_READ | ORCH_STREAM_WRITE);
  if (!c) return orch__fail(L, "accept", ENOMEM);
  int r = orch__score_init_handle(c);
  if (r < 0) return orch__fail_uv(L, "accept", r);
  r = uv_accept(&l->u.s, &c->u.s);
  if (r < 0) {
    orch__hobj_close(&c->o);
    return orch__fail_uv(L, "accept", r);
  }
  int fd = -1;
  uv_fileno(&c->u.h, &fd);
  c->fdnum = fd;
  orch__stream_push_core(L, c);
  return 1;
}

static void conn_cb(uv_stream_t *server, int status) {
  lcore *l = server->data;
  lua_State *co = l->co;
  if (!co) {
    if (status == 0) l->pending = 1;   /* libuv holds it and stops polling */
    return;
  }
  l->co = NULL;
  uv_unref(&l->u.h);
  int n = status < 0 ? orch__fail_uv(co, "accept", status) : do_accept(co, l);
  orch__wake(co, n);
}

static void accept_cancel(void *data) {
  lcore *l = data;
  l->co = NULL;
  if (!l->o.closing) uv_unref(&l->u.h);
}

static int listen_unix(lcore *l, const char *path, size_t len, int mode, int backlog) {
  struct sockaddr_un sa;
  socklen_t salen;
  int r = orch__sun_make(path, len, &sa, &salen);
  if (r < 0) return r;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  r = orch__sun_bind(fd, &sa, salen, mode, SOCK_STREAM, &l->dev, &l->ino);
  if (r < 0) { orch__close_fd(fd); return r; }
  l->owner = getpid();
  if (path[0] != '@' && !(l->path = strdup(path))) { unlink(path); orch__close_fd(fd); return UV_ENOMEM; }
  if (!(l->name = strdup(path))) { orch__close_fd(fd); return UV_ENOMEM; }
  uv_pipe_init(l->loop, &l->u.pipe, 0);
  l->u.h.data = l;
  l->inited = 1;
  r = uv_pipe_open(&l->u.pipe, fd);
  if (r < 0) { orch__close_fd(fd); return r; }
  return uv_listen(&l->u.s, backlog, conn_cb);
}

static int listen_tcp(lcore *l, const struct sockaddr *sa, int backlog) {
  int r = uv_tcp_init(l->loop, &l->u.tcp);
  if (r < 0) return r;
  l->u.h.data = l;
  l->inited = 1;
  r = uv_tcp_bind(&l->u.tcp, sa, 0);
  if (r < 0) return r;
  r = uv_listen(&l->u.s, backlog, conn_cb);
  if (r < 0) return r;
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  r = uv_tcp_getsockname(&l->u.tcp, (struct sockaddr *)&ss, &sl);
  if (r < 0) return r;
  if (ss.ss_family == AF_INET6) {
    l->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    uv_ip6_name((struct sockaddr_in6 *)&ss, l->host, sizeof l->host);
  } else {
    l->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_ip4_name((struct sockaddr_in *)&ss, l->host, sizeof l->host);
  }
  return 0;
}

int orch__stream_listen(lua_State *L) {
  static const char *const opts[] = { "unix", "host", "port", "backlog", "mode", NULL };
  orch__check_options(L, 1, opts);
  orch__check_nargs(L, 1);
  int has_unix = orch__has_option(L, 1, "unix");
  int has_port = orch__has_option(L, 1, "port");
  if (has_unix && (has_port || orch__has_option(L, 1, "host")))
    luaL_argerror(L, 1, "option 'unix' excludes 'host' and 'port'");
  if (!has_unix && !has_port) luaL_argerror(L, 1, "option 'unix' or 'port' expected");
  lua_Integer backlog = orch__opt_integer(L, 1, "backlog", SOMAXCONN);
  if (backlog < 1 || backlog > 65535) orch__opt_error(L, 1, "backlog", "a number from 1 to 65535 expected");
  int mode = orch__opt_mode(L, 1, "mode", 0600, 07777, NULL);
  const char *path = NULL;
  size_t len = 0;
  struct sockaddr_storage ss;
  if (has_unix) {
    orch__opt_string(L, 1, "unix", NULL);
    lua_getfield(L, 1, "unix");
    path = lua_tolstring(L, -1, &len);
    orch__sun_check(L, 1, "option 'unix'", path, len);
  } else {
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
  int r = has_unix ? listen_unix(l, path, len, mode, (int)backlog)
                   : listen_tcp(l, (struct sockaddr *)&ss, (int)backlog);
  if (r < 0) {
    orch__hobj_close(&l->o);
    return orch__fail_uv(L, "listen", r);
  }
  /* Listening alone does not keep orch running; a waiting accept does. */
  uv_unref(&l->u.h);
  orch__hobj_attach(u, &l->o);
  u->port = l->port;
  return 1;
}

static lcore *check_listener(lua_State *L, int idx) {
  return (lcore *)orch__hobj_check(L, idx, &listener_class);
}

static int listener_accept(lua_State *L) {
  lcore *l = check_listener(L, 1);
  orch__check_nargs(L, 1);
  orch__check_task(L, "accept");
  if (l->co) return orch__failf(L, "EBUSY", "accept: another task is accepting on this listener");
  if (l->pending) return do_accept(L, l);
  l->co = L;
  uv_ref(&l->u.h);
  return orch__await(L, l->o.timeout, "accept", accept_cancel, l);
}

static int listener_address(lua_State *L) {
  lcore *l = check_listener(L, 1);
  if (l->kind == K_UNIX) {
    lua_pushstring(L, l->name);
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


void orch__listener_class(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"accept", listener_accept}, {"address", listener_address}, {NULL, NULL}
  };
  orch__hclass_new(L, &listener_class, methods, NULL);
  lua_getfield(L, -1, "__index");
  lua_pushcclosure(L, listener_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
