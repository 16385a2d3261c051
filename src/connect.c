/*
 * connect.c: what waits for a peer: orch.connect (unix and TCP sockets) and
 * orch.fifo (make, open). A connect in progress is an "op" owning what it
 * waits on (a retry timer, a name lookup, a TCP core) until a task receives
 * the stream; ops sit in the module's list of objects (handle.h) so that
 * the runtime's close can cancel them.
 *
 * Nothing here blocks: FIFOs open O_NONBLOCK (a writer whose FIFO has no
 * reader yet retries on a timer), unix connects are non-blocking (a full
 * backlog retries on a timer), TCP host names resolve on the threadpool.
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

#define RETRY_MAX_MS 100

enum { OP_TCP, OP_UNIX, OP_FIFO };

typedef struct op {
  orch__hobj o;
  int what;
  lua_State *co;                /* the waiting task; NULL once answered */
  int refs;                     /* libuv requests and handles pending */
  int gai_pending;
  uv_getaddrinfo_t gai;
  uv_connect_t conn;
  uv_timer_t timer;
  int timer_on;
  score *core;                  /* the TCP stream being connected */
  int port;
  unsigned delay;
  struct sockaddr_un sun;
  socklen_t sunlen;
  char *path;
} op_t;

static void op_cancel(void *data);
static void op_close(orch__hobj *o) { op_cancel(o); }
static const orch__hclass op_class = { "orch.connect", op_close, NULL, NULL, NULL, NULL };

/* A file path argument: a string without zero bytes (the kernel would see
 * only the part before the first one). */
static const char *check_path(lua_State *L, int idx) {
  size_t len;
  const char *p = luaL_checklstring(L, idx, &len);
  if (len == 0) luaL_argerror(L, idx, "empty path");
  if (strlen(p) != len) luaL_argerror(L, idx, "path contains a zero byte");
  return p;
}

/* ------------------------------------------------------------------ orch.fifo */

int orch__fifo_make(lua_State *L) {
  const char *path = check_path(L, 1);
  int mode = 0600;
  if (!lua_isnoneornil(L, 2)) {
    lua_Integer m = luaL_checkinteger(L, 2);
    if (m < 0 || m > 07777) luaL_argerror(L, 2, "permission bits (0 to 0o7777) expected");
    mode = (int)m;
  }
  orch__check_nargs(L, 2);
  if (mkfifo(path, (mode_t)mode) < 0) return orch__fail(L, "fifo.make", errno);
  /* mkfifo applies the umask; the caller asked for exactly `mode`. */
  if (chmod(path, (mode_t)mode) < 0) {
    int e = errno;
    unlink(path);
    return orch__fail(L, "fifo.make", e);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* Opens a FIFO without blocking; returns the fd or a negative errno
 * (-ENXIO: opening for writing and nobody reads yet). */
static int fifo_try_open(const char *path, int oflags) {
  int fd;
  do fd = open(path, oflags | O_NONBLOCK | O_CLOEXEC | O_NOCTTY); while (fd < 0 && errno == EINTR);
  if (fd < 0) return -errno;
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode)) {
    orch__close_fd(fd);
    return -ENOSTR;   /* reported as "not a FIFO" */
  }
  return fd;
}

static int fail_fifo(lua_State *L, int err, const char *path) {
  if (err == -ENOSTR) return orch__failf(L, "EINVAL", "fifo.open: not a FIFO: %s", path);
  return orch__fail_uv(L, "fifo.open", err);
}

/* ------------------------------------------------------------------ retrying ops */

static op_t *op_new(orch__hstate *st, int what) {
  op_t *o = calloc(1, sizeof *o);
  if (!o) return NULL;
  o->what = what;
  o->delay = 1;
  orch__hobj_link(st, &o->o, &op_class);
  return o;
}

static void op_unref(op_t *o) {
  if (--o->refs > 0) return;
  orch__hobj_unlink(&o->o);
  free(o->path);
  free(o);
}

static void op_timer_close_cb(uv_handle_t *h) { op_unref(h->data); }

static void op_stop_timer(op_t *o) {
  if (o->timer_on) {
    o->timer_on = 0;
    uv_close((uv_handle_t *)&o->timer, op_timer_close_cb);
  }
}

static void op_cancel(void *data) {
  op_t *o = data;
  o->co = NULL;
  if (o->gai_pending) uv_cancel((uv_req_t *)&o->gai);
  if (o->core) orch__hobj_close(&o->core->o);   /* connect_cb runs with ECANCELED */
  op_stop_timer(o);
}

static int unix_try_connect(const struct sockaddr_un *sa, socklen_t salen) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int r;
  do r = connect(fd, (const struct sockaddr *)sa, salen); while (r < 0 && errno == EINTR);
  if (r == 0) return fd;
  int e = errno;
  orch__close_fd(fd);
  return e == EINPROGRESS ? -EAGAIN : -e;
}

static void op_timer_cb(uv_timer_t *t) {
  op_t *o = t->data;
  lua_State *co = o->co;
  if (!co) return;
  int fd = o->what == OP_UNIX ? unix_try_connect(&o->sun, o->sunlen)
                              : fifo_try_open(o->path, O_WRONLY);
  if (fd == -EAGAIN || fd == -ENXIO) {
    o->delay = o->delay * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : o->delay * 2;
    uv_timer_start(&o->timer, op_timer_cb, o->delay, 0);
    return;
  }
  o->co = NULL;
  op_stop_timer(o);
  int n;
  if (o->what == OP_UNIX) {
    n = fd < 0 ? orch__fail_uv(co, "connect", fd)
               : orch__stream_push_new(co, o->o.st, fd, K_UNIX, ORCH_STREAM_READ | ORCH_STREAM_WRITE, "connect");
  } else {
    n = fd < 0 ? fail_fifo(co, fd, o->path)
               : orch__stream_push_new(co, o->o.st, fd, K_FIFO, ORCH_STREAM_WRITE, "fifo.open");
  }
  orch__wake(co, n);
}

/* Waits in the calling task, retrying every few milliseconds. */
static int op_retry(lua_State *L, op_t *o, double timeout, const char *opname) {
  int r = uv_timer_init(o->o.st->loop, &o->timer);
  if (r < 0) {
    o->refs = 1;
    op_unref(o);
    return orch__fail_uv(L, opname, r);
  }
  o->timer.data = o;
  o->timer_on = 1;
  o->refs = 1;
  uv_timer_start(&o->timer, op_timer_cb, o->delay, 0);
  o->co = L;
  return orch__await(L, timeout, opname, op_cancel, o);
}

int orch__fifo_open(lua_State *L) {
  static const char *const modes[] = { "r", "w", NULL };
  const char *path = check_path(L, 1);
  int how = luaL_checkoption(L, 2, NULL, modes);
  double timeout = orch__optseconds(L, 3, -1);
  orch__check_nargs(L, 3);
  orch__hstate *st = orch__hstate_get(L);
  if (how == 0) {
    int fd = fifo_try_open(path, O_RDONLY);
    if (fd < 0) return fail_fifo(L, fd, path);
    return orch__stream_push_new(L, st, fd, K_FIFO, ORCH_STREAM_READ, "fifo.open");
  }
  orch__check_task(L, "fifo.open");
  int fd = fifo_try_open(path, O_WRONLY);
  if (fd >= 0) return orch__stream_push_new(L, st, fd, K_FIFO, ORCH_STREAM_WRITE, "fifo.open");
  if (fd != -ENXIO) return fail_fifo(L, fd, path);
  op_t *o = op_new(st, OP_FIFO);
  if (!o || !(o->path = strdup(path))) {
    if (o) { o->refs = 1; op_unref(o); }
    return orch__fail(L, "fifo.open", ENOMEM);
  }
  return op_retry(L, o, timeout, "fifo.open");
}

/* ------------------------------------------------------------------ TCP connect */

static void connect_cb(uv_connect_t *req, int status) {
  op_t *o = req->data;
  score *c = o->core;
  lua_State *co = o->co;
  o->core = NULL;
  o->co = NULL;
  if (!co || status < 0) {
    if (c) orch__hobj_close(&c->o);
    if (co) {
      orch__fail_uv(co, "connect", status);
      orch__wake(co, 3);
    }
  } else {
    orch__stream_push_core(co, c);
    orch__wake(co, 1);
  }
  op_unref(o);
}

static int op_connect(op_t *o, const struct sockaddr *sa) {
  score *c = orch__score_new(o->o.st, K_TCP, -1, ORCH_STREAM_READ | ORCH_STREAM_WRITE);
  if (!c) return UV_ENOMEM;
  int r = orch__score_init_handle(c);
  if (r < 0) return r;
  o->conn.data = o;
  r = uv_tcp_connect(&o->conn, &c->u.tcp, sa, connect_cb);
  if (r < 0) { orch__hobj_close(&c->o); return r; }
  int fd = -1;
  uv_fileno(&c->u.h, &fd);
  c->fdnum = fd;
  o->core = c;
  o->refs++;
  return 0;
}

static void gai_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  op_t *o = req->data;
  lua_State *co = o->co;
  o->gai_pending = 0;
  if (co && status == 0 && res) {
    struct sockaddr_storage ss;
    memcpy(&ss, res->ai_addr, res->ai_addrlen);
    if (ss.ss_family == AF_INET) ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)o->port);
    else ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)o->port);
    int r = op_connect(o, (struct sockaddr *)&ss);
    if (r < 0) {
      o->co = NULL;
      orch__fail_uv(co, "connect", r);
      orch__wake(co, 3);
    }
  } else if (co) {
    o->co = NULL;
    if (status == 0) status = UV_EAI_NONAME;
    /* libuv's EAI codes are not errnos: name and message come from libuv. */
    orch__failf(co, uv_err_name(status), "connect: %s", uv_strerror(status));
    orch__wake(co, 3);
  }
  if (res) uv_freeaddrinfo(res);
  op_unref(o);
}

static int connect_tcp(lua_State *L, orch__hstate *st, const char *host, int port, double timeout) {
  struct sockaddr_storage ss;
  op_t *o = op_new(st, OP_TCP);
  if (!o) return orch__fail(L, "connect", ENOMEM);
  o->port = port;
  if (orch__parse_host(host, port, &ss) == 0) {
    int r = op_connect(o, (struct sockaddr *)&ss);
    if (r < 0) {
      o->refs = 1;
      op_unref(o);
      return orch__fail_uv(L, "connect", r);
    }
  } else {
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    o->gai.data = o;
    int r = orch__threadpool_start();
    if (r < 0) {
      o->refs = 1;
      op_unref(o);
      return orch__fail_errno(L, -r, "connect: %s: cannot start the threads that resolve host names", host);
    }
    r = uv_getaddrinfo(st->loop, &o->gai, gai_cb, host, NULL, &hints);
    if (r < 0) {
      o->refs = 1;
      op_unref(o);
      return orch__failf(L, uv_err_name(r), "connect: %s", uv_strerror(r));
    }
    o->gai_pending = 1;
    o->refs++;
  }
  o->co = L;
  return orch__await(L, timeout, "connect", op_cancel, o);
}

static int connect_unix(lua_State *L, orch__hstate *st, const char *path, size_t len, double timeout) {
  struct sockaddr_un sa;
  socklen_t salen;
  int r = orch__sun_make(path, len, &sa, &salen);
  if (r < 0) return orch__fail_uv(L, "connect", r);
  int fd = unix_try_connect(&sa, salen);
  if (fd >= 0) return orch__stream_push_new(L, st, fd, K_UNIX, ORCH_STREAM_READ | ORCH_STREAM_WRITE, "connect");
  if (fd != -EAGAIN) return orch__fail_uv(L, "connect", fd);
  op_t *o = op_new(st, OP_UNIX);
  if (!o) return orch__fail(L, "connect", ENOMEM);
  o->sun = sa;
  o->sunlen = salen;
  return op_retry(L, o, timeout, "connect");
}

int orch__stream_connect(lua_State *L) {
  static const char *const opts[] = { "unix", "host", "port", "timeout", NULL };
  orch__check_options(L, 1, opts);
  orch__check_nargs(L, 1);
  int has_unix = orch__has_option(L, 1, "unix");
  int has_port = orch__has_option(L, 1, "port");
  if (has_unix && (has_port || orch__has_option(L, 1, "host")))
    luaL_argerror(L, 1, "option 'unix' excludes 'host' and 'port'");
  if (!has_unix && !has_port) luaL_argerror(L, 1, "option 'unix' or 'port' expected");
  double timeout = orch__opt_timeout(L, 1);
  if (has_unix) {
    orch__opt_string(L, 1, "unix", NULL);
    lua_getfield(L, 1, "unix");
    size_t len;
    const char *path = lua_tolstring(L, -1, &len);
    orch__sun_check(L, 1, "option 'unix'", path, len);
    orch__check_task(L, "connect");
    return connect_unix(L, orch__hstate_get(L), path, len, timeout);
  }
  int port = orch__opt_port(L, 1);
  const char *host = orch__opt_string(L, 1, "host", "127.0.0.1");
  if (!*host) orch__opt_error(L, 1, "host", "empty host name");
  if (port == 0) orch__opt_error(L, 1, "port", "port number (1 to 65535) expected");
  orch__check_task(L, "connect");
  return connect_tcp(L, orch__hstate_get(L), host, port, timeout);
}

