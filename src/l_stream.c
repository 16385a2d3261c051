/*
 * l_stream.c: orch.Stream (pipes, FIFOs, ttys, unix and TCP sockets over
 * libuv streams), orch.Listener (listening unix/TCP sockets), orch.Dgram
 * (unix datagram sockets, for sd_notify) and the stream.h API that proc uses
 * for stdio pipes.
 *
 * Ownership: every Lua object is a small userdata pointing to a malloc'ed C
 * struct (a "core") that holds the libuv handle. A core is freed only in its
 * handle's close callback; it points back to its userdata (cleared when the
 * userdata is closed or collected) so a close that libuv finishes can mark the
 * userdata closed. A waiting task is remembered as its coroutine, which keeps
 * the userdata alive (it is the method's `self`). Connects in progress are
 * "ops" owning a core until a task receives it. Every core and op sits in a
 * per-runtime list so the close and fork hooks can find them.
 *
 * Reading is pull-based: uv_read_start runs only while a task waits for data
 * the buffer cannot satisfy, so a fast producer fills the kernel's buffer and
 * blocks there, never in orch's memory. Accepting is pull-based the same way
 * (libuv holds one accepted fd and stops polling until uv_accept). Writes try
 * uv_try_write first and queue only the rest, copied, so C never references a
 * Lua string. Streams made from fds (orch.pipe, FIFOs, proc's pipes) become
 * libuv handles lazily, at their first read or write, so an fd handed to a
 * child process is still blocking.
 *
 * Nothing here blocks: FIFOs open O_NONBLOCK (a writer whose FIFO has no
 * reader yet retries on a timer), unix connects are non-blocking (a full
 * backlog retries on a timer), TCP host names resolve on the threadpool.
 */
#include "stream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "runtime.h"
#include "util.h"

#define STREAM_MT "orch.Stream"
#define LISTENER_MT "orch.Listener"
#define DGRAM_MT "orch.Dgram"

#define READ_CHUNK 65536
#define DEFAULT_MAX_LINE 65536
#define RETRY_MAX_MS 100

enum { K_PIPE, K_FIFO, K_UNIX, K_TCP, K_TTY, K_CHAR };
static const char *const kind_names[] = { "pipe", "fifo", "unix", "tcp", "tty", "char" };

enum { T_STREAM, T_LISTENER, T_DGRAM, T_OP };
enum { RM_CHUNK, RM_LINE, RM_ALL };

/* ------------------------------------------------------------------ state */

#define RUNNERS_IDLE 4          /* on_read runners kept waiting (see on_read) */

typedef struct sstate sstate;
typedef struct obj { struct obj *prev, *next; sstate *st; int type; } obj;
struct sstate {
  orch_runtime *rt;
  uv_loop_t *loop;
  lua_State *L;                 /* the runtime's main thread */
  obj *all;
  int runner_ref;               /* on_read's runner function */
  int nidle;                    /* runners waiting for a callback to run */
  lua_State *idle[RUNNERS_IDLE];
};

static void obj_link(sstate *st, obj *o, int type) {
  o->st = st;
  o->type = type;
  o->prev = NULL;
  o->next = st->all;
  if (st->all) st->all->prev = o;
  st->all = o;
}

static void obj_unlink(obj *o) {
  sstate *st = o->st;
  if (!st) return;
  if (o->prev) o->prev->next = o->next; else st->all = o->next;
  if (o->next) o->next->prev = o->prev;
  o->prev = o->next = NULL;
  o->st = NULL;
}

typedef union {
  uv_handle_t h;
  uv_stream_t s;
  uv_pipe_t pipe;
  uv_tcp_t tcp;
} anystream;

/* ------------------------------------------------------------------ types */

struct score;
typedef struct Stream { struct score *s; int kind; } Stream;

typedef struct wreq {
  uv_write_t req;
  struct score *s;
  lua_State *co;                /* NULL once nobody waits for it */
  struct wreq *prev, *next;     /* the core's waiting writes */
  int linked;
  char data[];
} wreq;

typedef struct score {
  obj o;
  anystream u;
  uv_loop_t *loop;
  Stream *ud;
  int fd;                       /* ours until a handle owns it, then -1 */
  int fdnum;                    /* for fd() and __tostring */
  int kind, flags;
  int hstate;                   /* a uv handle was initialised */
  int open_err;                 /* the handle could not take the fd */
  int closing, reading, eof, rerr;
  int shutting, shut_done;
  char *buf;                    /* buffered input: buf[off, len) */
  size_t off, len, cap, scanned;
  lua_State *reader;
  const char *rop;
  int rmode;
  size_t rmax;
  wreq *writes;
  uv_shutdown_t shut;
  lua_State *shut_co;
  double timeout;
  /* stream:on_read: while cb_on, registry refs to the callback and to the
   * userdata (an active stream is not collected); cb_busy while a task runs
   * the callback (reading pauses); cb_final once EOF or an error was passed. */
  int cb_on, cb_busy, cb_final;
  int cb_fn, cb_self;
} score;

struct lcore;
typedef struct Listener { struct lcore *l; int kind; int port; } Listener;

typedef struct lcore {
  obj o;
  anystream u;
  uv_loop_t *loop;
  Listener *ud;
  int kind, inited, closing, pending;
  lua_State *co;
  double timeout;
  char *path;                   /* the socket file we created, or NULL */
  dev_t dev;
  ino_t ino;
  pid_t owner;                  /* only the creating process unlinks it */
  int port;
  char host[INET6_ADDRSTRLEN];
  char *name;                   /* abstract or path name, for address() */
} lcore;

struct dcore;
typedef struct Dgram { struct dcore *d; } Dgram;

typedef struct dcore {
  obj o;
  uv_poll_t poll;
  uv_loop_t *loop;
  Dgram *ud;
  int fd, inited, polling, closing, passcred;
  int want_fds;                 /* the waiting recv asked for descriptors */
  lua_State *co;
  double timeout;
  char *path;
  char *name;
  dev_t dev;
  ino_t ino;
  pid_t owner;
} dcore;

enum { OP_TCP, OP_UNIX, OP_FIFO };

typedef struct op {
  obj o;
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

static void core_close(score *s);
static void lcore_close(lcore *l);
static void dcore_close(dcore *d);
static void op_cancel(void *data);

/* ------------------------------------------------------------------ hooks */

static void close_hook(orch_runtime *rt, void *data) {
  sstate *st = data;
  /* Runs after every userdata was collected: no task waits any more and no
   * userdata pointer may be touched. Close what is still open (ops owning a
   * core, mostly); the close callbacks run in the runtime's final uv_run. */
  while (st->all) {
    obj *o = st->all;
    obj_unlink(o);
    switch (o->type) {
      case T_STREAM: {
        score *s = (score *)o;
        s->cb_on = 0;             /* the Lua state is gone: no unref */
        s->reader = NULL;
        s->shut_co = NULL;
        while (s->writes) {
          wreq *w = s->writes;
          s->writes = w->next;
          w->linked = 0;
          w->co = NULL;
        }
        s->ud = NULL;
        core_close(s);
        break;
      }
      case T_LISTENER: ((lcore *)o)->co = NULL; ((lcore *)o)->ud = NULL; lcore_close((lcore *)o); break;
      case T_DGRAM: ((dcore *)o)->co = NULL; ((dcore *)o)->ud = NULL; dcore_close((dcore *)o); break;
      case T_OP: op_cancel(o); break;
    }
  }
  *orch__slot(rt, ORCH__SLOT_STREAM) = NULL;
  free(st);
}

static void fork_hook(orch_runtime *rt, void *data) {
  sstate *st = data;
  st->nidle = 0;                /* their tasks were dropped */
  /* The runtime stopped every read and poll in the child. */
  for (obj *o = st->all; o; o = o->next) {
    if (o->type == T_STREAM) ((score *)o)->reading = 0;
    else if (o->type == T_DGRAM) ((dcore *)o)->polling = 0;
  }
}

static sstate *get_state(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  void **slot = orch__slot(rt, ORCH__SLOT_STREAM);
  if (!*slot) {
    sstate *st = calloc(1, sizeof *st);
    if (!st) luaL_error(L, "orch: out of memory");
    st->rt = rt;
    st->loop = orch__loop(L);
    st->L = orch__mainthread(rt);
    st->runner_ref = LUA_NOREF;
    *slot = st;
    orch__on_close(rt, close_hook, st);
    orch__on_fork_child(rt, fork_hook, st);
  }
  return *slot;
}

/* ------------------------------------------------------------------ helpers */

static int close_fd(int fd) {
  /* Linux closes the fd even when close() reports EINTR: never retry. */
  return fd >= 0 ? close(fd) : 0;
}

/* Fills a sockaddr_un; "@name" is the abstract namespace. Returns 0 or a
 * negative errno. Empty names and zero bytes are checked by the caller. */
static int make_sun(const char *path, size_t len, struct sockaddr_un *sa, socklen_t *salen) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (len >= sizeof sa->sun_path + (path[0] == '@')) return -ENAMETOOLONG;
  if (path[0] == '@') {
    memcpy(sa->sun_path + 1, path + 1, len - 1);
    *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  } else {
    memcpy(sa->sun_path, path, len);
    *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
  }
  return 0;
}

/* Raises for an empty unix socket name or one with a zero byte. */
static const char *check_sun_name(lua_State *L, int arg, const char *what, const char *s, size_t len) {
  if (len == 0 || (len == 1 && s[0] == '@'))
    luaL_argerror(L, arg, lua_pushfstring(L, "%s: empty socket path", what));
  if (memchr(s, 0, len))
    luaL_argerror(L, arg, lua_pushfstring(L, "%s: socket path contains a zero byte", what));
  return s;
}

/* Pushes the name of a unix socket address: "@name", a path, or nil. */
static void push_sun(lua_State *L, const struct sockaddr_un *sa, socklen_t salen) {
  size_t off = offsetof(struct sockaddr_un, sun_path);
  if (salen <= off) { lua_pushnil(L); return; }
  size_t n = salen - off;
  if (sa->sun_path[0] == 0) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '@');
    luaL_addlstring(&b, sa->sun_path + 1, n - 1);
    luaL_pushresult(&b);
  } else {
    lua_pushlstring(L, sa->sun_path, strnlen(sa->sun_path, n));
  }
}

/* A stale socket file (nobody accepts on it) is removed; a live one or any
 * other kind of file makes the bind fail with EADDRINUSE. */
static int remove_stale(const struct sockaddr_un *sa, socklen_t salen, int type) {
  struct stat st;
  if (lstat(sa->sun_path, &st) < 0) return errno == ENOENT ? 0 : -errno;
  if (!S_ISSOCK(st.st_mode)) return -EADDRINUSE;
  int probe = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) return -errno;
  int r;
  do r = connect(probe, (const struct sockaddr *)sa, salen); while (r < 0 && errno == EINTR);
  int e = r < 0 ? errno : 0;
  close_fd(probe);
  if (r < 0 && e == ECONNREFUSED) {
    if (unlink(sa->sun_path) < 0 && errno != ENOENT) return -errno;
    return 0;
  }
  if (r < 0 && e == EACCES) return -EACCES;
  return -EADDRINUSE;
}

/* Binds a unix socket with exactly `mode`: fchmod before bind narrows the
 * mode the file is created with (no window with a wider mode), chmod after
 * bind undoes the umask. Records the file's identity for a later unlink. */
static int bind_unix(int fd, const struct sockaddr_un *sa, socklen_t salen, int mode, int type,
                     dev_t *dev, ino_t *ino) {
  int abstract = sa->sun_path[0] == 0;
  if (!abstract && fchmod(fd, (mode_t)mode) < 0) return -errno;
  int r = bind(fd, (const struct sockaddr *)sa, salen);
  if (r < 0 && errno == EADDRINUSE && !abstract) {
    r = remove_stale(sa, salen, type);
    if (r < 0) return r;
    r = bind(fd, (const struct sockaddr *)sa, salen);
  }
  if (r < 0) return -errno;
  if (!abstract) {
    struct stat st;
    if (chmod(sa->sun_path, (mode_t)mode) < 0 || stat(sa->sun_path, &st) < 0) {
      r = -errno;
      unlink(sa->sun_path);
      return r;
    }
    *dev = st.st_dev;
    *ino = st.st_ino;
  }
  return 0;
}

/* Unlinks a socket file we created, unless it was replaced meanwhile or we
 * are a forked child (the parent still serves on it). */
static void unlink_ours(char **path, dev_t dev, ino_t ino, pid_t owner) {
  if (!*path) return;
  struct stat st;
  if (owner == getpid() && lstat(*path, &st) == 0 && st.st_dev == dev && st.st_ino == ino)
    unlink(*path);
  free(*path);
  *path = NULL;
}


static int has_field(lua_State *L, int idx, const char *k) {
  int t = lua_getfield(L, idx, k);
  lua_pop(L, 1);
  return t != LUA_TNIL;
}

static double opt_timeout(lua_State *L, int idx) {
  if (!has_field(L, idx, "timeout")) return -1;
  double t = orch__opt_number(L, idx, "timeout", -1);
  if (!(t >= 0) || t > 1e12) orch__opt_error(L, idx, "timeout", "seconds (a finite number >= 0) expected");
  return t;
}

/* A file path argument: a string without zero bytes (the kernel would see
 * only the part before the first one). */
static const char *check_path(lua_State *L, int idx) {
  size_t len;
  const char *p = luaL_checklstring(L, idx, &len);
  if (len == 0) luaL_argerror(L, idx, "empty path");
  if (strlen(p) != len) luaL_argerror(L, idx, "path contains a zero byte");
  return p;
}


/* obj:set_timeout([seconds]): nil for none. Returns obj. */
static int set_timeout(lua_State *L, double *timeout) {
  double t = orch__optseconds(L, 2, -1);
  orch__check_nargs(L, 2);
  *timeout = t;
  lua_settop(L, 1);
  return 1;
}

/* [-0,+1] A peer's or sender's credentials as { pid, uid, gid }. */
static void push_ucred(lua_State *L, const struct ucred *cr) {
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, cr->pid);
  lua_setfield(L, -2, "pid");
  lua_pushinteger(L, cr->uid);
  lua_setfield(L, -2, "uid");
  lua_pushinteger(L, cr->gid);
  lua_setfield(L, -2, "gid");
}

/* ------------------------------------------------------------------ stream cores */

static score *core_new(sstate *st, int kind, int fd, int flags) {
  score *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->loop = st->loop;
  s->fd = fd;
  s->fdnum = fd;
  s->kind = kind;
  s->flags = flags;
  s->timeout = -1;
  s->cb_fn = s->cb_self = LUA_NOREF;
  obj_link(st, &s->o, T_STREAM);
  return s;
}

static void core_free(score *s) {
  if (s->ud) s->ud->s = NULL;
  obj_unlink(&s->o);
  free(s->buf);
  free(s);
}

static void core_close_cb(uv_handle_t *h) {
  score *s = h->data;
  close_fd(s->fd);
  core_free(s);
}

static void wlist_add(score *s, wreq *w) {
  w->prev = NULL;
  w->next = s->writes;
  if (s->writes) s->writes->prev = w;
  s->writes = w;
  w->linked = 1;
}

static void wlist_remove(score *s, wreq *w) {
  if (!w->linked) return;
  if (w->prev) w->prev->next = w->next; else s->writes = w->next;
  if (w->next) w->next->prev = w->prev;
  w->prev = w->next = NULL;
  w->linked = 0;
}

static void wake_closed(lua_State *co, const char *op, const char *what) {
  orch__failf(co, "ECANCELED", "%s: %s closed", op, what);
  orch__wake(co, 3);
}

/* Wakes co with true, or with the error triple for a libuv status < 0. */
static void wake_status(lua_State *co, const char *op, int status) {
  if (status < 0) orch__fail_uv(co, op, status);
  else lua_pushboolean(co, 1);
  orch__wake(co, status < 0 ? 3 : 1);
}

/* Wakes every task waiting on s with "<op>: stream closed". A woken task may
 * run right here (from a libuv callback), so each waiter is detached before
 * its task runs. */
static void core_wake_all(score *s) {
  lua_State *co;
  if ((co = s->reader)) { s->reader = NULL; wake_closed(co, s->rop, "stream"); }
  while (s->writes) {
    wreq *w = s->writes;
    wlist_remove(s, w);
    co = w->co;
    w->co = NULL;
    if (co) wake_closed(co, "write", "stream");
  }
  if ((co = s->shut_co)) { s->shut_co = NULL; wake_closed(co, "shutdown", "stream"); }
}

static void cb_release(score *s);

static void core_close(score *s) {
  if (s->closing) return;
  s->closing = 1;
  cb_release(s);
  core_wake_all(s);
  if (s->hstate) {
    uv_close(&s->u.h, core_close_cb);
  } else {
    close_fd(s->fd);
    s->fd = -1;
    core_free(s);
  }
}

/* Makes the libuv handle for a stream created from an fd. */
static int core_activate(score *s) {
  if (s->hstate) return s->open_err;
  int r = s->kind == K_TCP ? uv_tcp_init(s->loop, &s->u.tcp) : uv_pipe_init(s->loop, &s->u.pipe, 0);
  if (r < 0) return r;
  s->u.h.data = s;
  s->hstate = 1;
  r = s->kind == K_TCP ? uv_tcp_open(&s->u.tcp, s->fd) : uv_pipe_open(&s->u.pipe, s->fd);
  if (r < 0) {
    s->open_err = r;   /* the fd stays ours: core_close_cb closes it */
    return r;
  }
  s->fd = -1;
  return 0;
}

/* [-0,+1] A new orch.Stream, closed until a core is attached. */
static Stream *push_ud(lua_State *L, int kind) {
  Stream *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->s = NULL;
  u->kind = kind;
  luaL_setmetatable(L, STREAM_MT);
  return u;
}

static void attach(Stream *u, score *s) {
  u->s = s;
  s->ud = u;
}

/* [-0,+1] A new orch.Stream for core s (which must have no userdata yet). */
static void push_core(lua_State *L, score *s) {
  attach(push_ud(L, s->kind), s);
}

/* [-0,+1|3] A new orch.Stream owning fd; on failure fd is closed and the
 * error triple pushed (op names the failing call). Returns the count. */
static int push_fd_stream(lua_State *L, sstate *st, int fd, int kind, int flags, const char *opname) {
  Stream *u = push_ud(L, kind);
  score *s = core_new(st, kind, fd, flags);
  if (!s) {
    close_fd(fd);
    lua_pop(L, 1);
    return orch__fail(L, opname, ENOMEM);
  }
  attach(u, s);
  return 1;
}

static Stream *check_ud(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, STREAM_MT);
}

static score *check_stream(lua_State *L, int idx) {
  Stream *u = check_ud(L, idx);
  if (!u->s || u->s->closing) orch__closed_error(L, STREAM_MT);
  return u->s;
}

/* ------------------------------------------------------------------ reading */

static void consume(score *s, size_t n) {
  s->off += n;
  s->scanned = s->scanned > n ? s->scanned - n : 0;
  if (s->off == s->len) {
    s->off = s->len = s->scanned = 0;
    /* An empty buffer is freed: hundreds of idle streams (a supervisor's
     * log pipes) would otherwise each pin 64 KiB. A busy stream pays one
     * malloc per read, which glibc serves from its free lists. */
    free(s->buf);
    s->buf = NULL;
    s->cap = 0;
  }
}

/* Pushes the answer to a read of the given mode if the buffer (or EOF, or
 * an error) allows one; returns the number of values pushed, 0 to wait. */
static int deliver(lua_State *L, score *s, int mode, size_t max, const char *opname) {
  size_t avail = s->len - s->off;
  char *p = s->buf ? s->buf + s->off : NULL;   /* no buffer yet: NULL + 0 is UB */
  lua_checkstack(L, 4);
  switch (mode) {
    case RM_CHUNK:
      if (avail) {
        size_t n = (max && max < avail) ? max : avail;
        lua_pushlstring(L, p, n);
        consume(s, n);
        return 1;
      }
      break;
    case RM_LINE: {
      char *nl = avail > s->scanned ? memchr(p + s->scanned, '\n', avail - s->scanned) : NULL;
      if (nl) {
        size_t n = (size_t)(nl - p);
        if (n > max) break;
        lua_pushlstring(L, p, n);
        consume(s, n + 1);
        return 1;
      }
      s->scanned = avail;
      if (avail > max) break;
      if ((s->eof || s->rerr) && avail) {
        lua_pushlstring(L, p, avail);
        consume(s, avail);
        return 1;
      }
      break;
    }
    case RM_ALL:
      if (max && avail > max)
        return orch__failf(L, "ENOBUFS", "%s: more than %I bytes", opname, (lua_Integer)max);
      if (s->eof) {
        lua_pushlstring(L, avail ? p : "", avail);
        consume(s, avail);
        return 1;
      }
      break;
  }
  if (mode == RM_LINE && avail > max)
    return orch__failf(L, "EMSGSIZE", "%s: line longer than %I bytes", opname, (lua_Integer)max);
  if (s->rerr) return orch__fail_uv(L, opname, s->rerr);
  if (s->eof) { lua_pushnil(L); return 1; }
  return 0;
}

static int ensure_space(score *s, size_t want) {
  if (s->cap - s->len >= want) return 0;
  if (s->off) {
    memmove(s->buf, s->buf + s->off, s->len - s->off);
    s->len -= s->off;
    s->off = 0;
    if (s->cap - s->len >= want) return 0;
  }
  size_t ncap = s->cap ? s->cap : want;
  while (ncap - s->len < want) ncap *= 2;
  char *nb = realloc(s->buf, ncap);
  if (!nb) return -1;
  s->buf = nb;
  s->cap = ncap;
  return 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  score *s = h->data;
  if (ensure_space(s, READ_CHUNK) < 0) {
    buf->base = NULL;
    buf->len = 0;
    return;
  }
  buf->base = s->buf + s->len;
  buf->len = s->cap - s->len;
}

static void read_stop(score *s) {
  if (s->reading) {
    uv_read_stop(&s->u.s);
    s->reading = 0;
  }
}

static void cb_dispatch(score *s);

static void read_cb(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf) {
  score *s = h->data;
  if (nread > 0) {
    s->len += (size_t)nread;
  } else {
    /* Nothing read (EAGAIN, EOF, an error): an idle stream keeps no buffer. */
    consume(s, 0);
    if (nread == UV_EOF) { s->eof = 1; read_stop(s); }
    else if (nread < 0) { s->rerr = (int)nread; read_stop(s); }
  }
  if (s->cb_on) {
    if (!s->cb_busy && (s->len > s->off || s->eof || s->rerr)) {
      cb_dispatch(s);
      /* A callback that returned at once (the runner ran it right here)
       * leaves reading on for the next chunk; one that waits pauses it.
       * s is still allocated even if the callback closed it (its handle
       * closes later), and then, like after on_read(nil), cb_on is 0. */
      if (s->cb_on && s->cb_busy) read_stop(s);
    }
    return;
  }
  if (s->reader) {
    lua_State *co = s->reader;
    int n = deliver(co, s, s->rmode, s->rmax, s->rop);
    if (n) {
      s->reader = NULL;
      orch__wake(co, n);   /* may run the task, which may read again or close s */
    }
  }
  if (!s->reader && !s->closing) read_stop(s);
}

static void read_cancel(void *data) {
  score *s = data;
  s->reader = NULL;
  if (!s->closing) read_stop(s);
}

static int start_read(lua_State *L, score *s, int mode, size_t max, const char *opname) {
  orch__check_task(L, opname);
  if (!(s->flags & ORCH_STREAM_READ))
    return orch__failf(L, "EBADF", "%s: stream is not readable", opname);
  if (s->reader)
    return orch__failf(L, "EBUSY", "%s: another task is reading this stream", opname);
  if (s->cb_on)
    return orch__failf(L, "EBUSY", "%s: the stream is read by on_read", opname);
  int n = deliver(L, s, mode, max, opname);
  if (n) return n;
  int r = core_activate(s);
  if (r < 0) return orch__fail_uv(L, opname, r);
  if (!s->reading) {
    r = uv_read_start(&s->u.s, alloc_cb, read_cb);
    if (r < 0) return orch__fail_uv(L, opname, r);
    s->reading = 1;
  }
  s->reader = L;
  s->rmode = mode;
  s->rmax = max;
  s->rop = opname;
  return orch__await(L, s->timeout, opname, read_cancel, s);
}

static size_t opt_size(lua_State *L, int idx, lua_Integer def) {
  lua_Integer n = luaL_optinteger(L, idx, def);
  if (n < 1) luaL_argerror(L, idx, "size must be positive");
  return (size_t)n;
}

static int stream_read(lua_State *L) {
  score *s = check_stream(L, 1);
  size_t max = lua_isnoneornil(L, 2) ? 0 : opt_size(L, 2, 0);
  orch__check_nargs(L, 2);
  return start_read(L, s, RM_CHUNK, max, "read");
}

static int stream_read_line(lua_State *L) {
  score *s = check_stream(L, 1);
  size_t max = opt_size(L, 2, DEFAULT_MAX_LINE);
  orch__check_nargs(L, 2);
  return start_read(L, s, RM_LINE, max, "read_line");
}

static int stream_read_all(lua_State *L) {
  score *s = check_stream(L, 1);
  size_t max = lua_isnoneornil(L, 2) ? 0 : opt_size(L, 2, 0);
  orch__check_nargs(L, 2);
  return start_read(L, s, RM_ALL, max, "read_all");
}

/* The iterator of :lines() calls read_line through lua_callk so that it can
 * raise read errors after the wait (a generic for stops at nil). */
static int lines_k(lua_State *L, int status, lua_KContext ctx) {
  if (lua_isnil(L, -3) && lua_type(L, -2) == LUA_TSTRING)
    return luaL_error(L, "%s", lua_tostring(L, -2));
  lua_pop(L, 2);
  return 1;
}

static int lines_iter(lua_State *L) {
  lua_settop(L, 0);
  lua_pushcfunction(L, stream_read_line);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_callk(L, 2, 3, 0, lines_k);
  return lines_k(L, LUA_OK, 0);
}

static int stream_lines(lua_State *L) {
  check_stream(L, 1);
  lua_Integer max = (lua_Integer)opt_size(L, 2, DEFAULT_MAX_LINE);
  orch__check_nargs(L, 2);
  lua_settop(L, 1);
  lua_pushinteger(L, max);
  lua_pushcclosure(L, lines_iter, 2);
  return 1;
}

/* ------------------------------------------------------------------ on_read
 *
 * stream:on_read(fn): every chunk that arrives is passed to fn(chunk) in a
 * task; reading pauses until that call returns, so a callback that waits
 * (writes elsewhere, sleeps) slows the producer down instead of queueing
 * data in orch. At EOF fn(nil) runs once, after a read error
 * fn(nil, msg, ename); then the stream is back to pull mode. An error raised
 * by fn is reported as the task's error and stops the callbacks.
 *
 * The tasks are "runners" shared by every stream: a runner that finished a
 * callback waits for the next one (at most RUNNERS_IDLE wait), and a chunk
 * that arrives in a libuv callback runs its callback at once in an idle
 * runner. Hundreds of streams whose data arrives together are served one
 * after the other by the same runner, and an idle stream in this mode holds
 * no buffer and no coroutine: only fn. */

#define CB_GUARD_MT "orch.Stream.on_read"

/* The runner, in Lua: guard(ud) makes the to-be-closed object that ends the
 * callback (cb_guard_close); next_job() waits until a chunk is handed over
 * and returns ud, fn, args..., or returns nothing when enough runners wait. */
static const char runner_src[] =
  "local guard, next_job = ...\n"
  "local function serve(ud, fn, ...)\n"
  "  if not ud then return false end\n"
  "  local g <close> = guard(ud)\n"
  "  fn(...)\n"
  "  return true\n"
  "end\n"
  "return function(...)\n"
  "  local more = serve(...)\n"
  "  while more do more = serve(next_job()) end\n"
  "end\n";

/* Ends the callbacks; reading stops (no task reads an on_read stream). The
 * runtime's close hook clears cb_on first: the Lua state is gone then. */
static void cb_release(score *s) {
  if (!s->cb_on) return;
  lua_State *L = s->o.st->L;
  s->cb_on = 0;
  s->cb_final = 0;
  read_stop(s);
  luaL_unref(L, LUA_REGISTRYINDEX, s->cb_fn);
  luaL_unref(L, LUA_REGISTRYINDEX, s->cb_self);
  s->cb_fn = s->cb_self = LUA_NOREF;
}

/* Delivers what is buffered (or EOF, or the read error) to the callback:
 * at once in an idle runner, or in a new one. Reading is on here only when
 * read_cb calls, which pauses it if the callback waits. */
static void cb_dispatch(score *s) {
  sstate *st = s->o.st;
  lua_State *L = st->L;
  lua_State *co = st->nidle ? st->idle[--st->nidle] : NULL;
  lua_State *to = co ? co : L;
  size_t avail = s->len - s->off;
  int nargs = 3;
  s->cb_busy = 1;
  lua_checkstack(to, 8);
  if (!co) lua_rawgeti(L, LUA_REGISTRYINDEX, st->runner_ref);
  lua_rawgeti(to, LUA_REGISTRYINDEX, s->cb_self);
  lua_rawgeti(to, LUA_REGISTRYINDEX, s->cb_fn);
  if (avail) {
    lua_pushlstring(to, s->buf + s->off, avail);
    consume(s, avail);
  } else if (s->rerr) {
    nargs += orch__fail_uv(to, "read", s->rerr) - 1;
    s->cb_final = 1;
  } else {
    lua_pushnil(to);
    s->cb_final = 1;
  }
  if (co) {
    orch__wake(co, nargs);
  } else {
    orch__spawn_task_now(L, nargs);
    lua_pop(L, 1);
  }
}

/* Goes on after a callback returned (or when on_read starts). */
static int cb_continue(score *s) {
  if (!s->cb_on || s->cb_busy || s->closing) return 0;
  if (s->cb_final) {
    cb_release(s);
    return 0;
  }
  if (s->len > s->off || s->eof || s->rerr) {
    cb_dispatch(s);
    return 0;
  }
  int r = core_activate(s);
  if (r == 0 && !s->reading) {
    r = uv_read_start(&s->u.s, alloc_cb, read_cb);
    if (r == 0) s->reading = 1;
  }
  return r;
}

/* __close of guard(ud): the callback returned (err nil; a cancelled runner
 * closes the same way) or raised (err set: no more callbacks). */
static int cb_guard_close(lua_State *L) {
  lua_getiuservalue(L, 1, 1);
  Stream *u = luaL_testudata(L, -1, STREAM_MT);
  score *s = u ? u->s : NULL;
  if (!s || s->closing || !s->cb_busy) return 0;
  s->cb_busy = 0;
  if (!lua_isnil(L, 2)) {
    cb_release(s);
    return 0;
  }
  int r = cb_continue(s);
  if (r < 0) {
    /* The callback learns of it as of any read error. */
    s->rerr = r;
    cb_continue(s);
  }
  return 0;
}

static int runner_guard(lua_State *L) {
  lua_newuserdatauv(L, 0, 1);
  luaL_setmetatable(L, CB_GUARD_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

static void runner_cancel(void *data) {
  lua_State *co = data;
  sstate *st = get_state(co);
  for (int i = 0; i < st->nidle; i++) {
    if (st->idle[i] == co) {
      st->idle[i] = st->idle[--st->nidle];
      break;
    }
  }
}

static int runner_next_job(lua_State *L) {
  sstate *st = get_state(L);
  if (st->nidle >= RUNNERS_IDLE) return 0;
  st->idle[st->nidle++] = L;
  return orch__await(L, -1, "on_read", runner_cancel, L);
}

/* [-0,+0] Makes the runner function (once per runtime). */
static void runner_init(lua_State *L, sstate *st) {
  if (st->runner_ref != LUA_NOREF) return;
  if (luaL_loadbuffer(L, runner_src, sizeof runner_src - 1, "=orch.stream.on_read") != LUA_OK)
    lua_error(L);
  lua_pushcfunction(L, runner_guard);
  lua_pushcfunction(L, runner_next_job);
  lua_call(L, 2, 1);
  st->runner_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static int stream_on_read(lua_State *L) {
  score *s = check_stream(L, 1);
  if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  orch__check_nargs(L, 2);
  if (lua_isnil(L, 2)) {
    cb_release(s);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (!(s->flags & ORCH_STREAM_READ))
    return orch__failf(L, "EBADF", "on_read: stream is not readable");
  if (s->reader)
    return orch__failf(L, "EBUSY", "on_read: a task is reading this stream");
  if (s->cb_on) {
    /* A new callback replaces the old one, from the next chunk on. */
    lua_pushvalue(L, 2);
    lua_rawseti(L, LUA_REGISTRYINDEX, s->cb_fn);
    lua_pushboolean(L, 1);
    return 1;
  }
  runner_init(L, get_state(L));
  lua_pushvalue(L, 2);
  s->cb_fn = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 1);
  s->cb_self = luaL_ref(L, LUA_REGISTRYINDEX);
  s->cb_on = 1;
  s->cb_final = 0;
  int r = cb_continue(s);
  if (r < 0) {
    cb_release(s);
    return orch__fail_uv(L, "on_read", r);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ------------------------------------------------------------------ writing */

static void write_cb(uv_write_t *req, int status) {
  wreq *w = req->data;
  lua_State *co = w->co;
  wlist_remove(w->s, w);
  free(w);
  if (co) wake_status(co, "write", status);
}

static void write_cancel(void *data) {
  /* The bytes already queued still go out: the stream stays consistent. */
  wreq *w = data;
  w->co = NULL;
  wlist_remove(w->s, w);
}

static int stream_write(lua_State *L) {
  score *s = check_stream(L, 1);
  int n = lua_gettop(L);
  luaL_checklstring(L, 2, NULL);
  for (int i = 3; i <= n; i++) luaL_checklstring(L, i, NULL);
  if (n > 2) lua_concat(L, n - 1);
  size_t len;
  const char *data = lua_tolstring(L, 2, &len);
  orch__check_task(L, "write");
  if (!(s->flags & ORCH_STREAM_WRITE))
    return orch__failf(L, "EBADF", "write: stream is not writable");
  if (s->shutting || s->shut_done)
    return orch__failf(L, "EPIPE", "write: stream is shut down");
  int r = core_activate(s);
  if (r < 0) return orch__fail_uv(L, "write", r);
  size_t done = 0;
  if (len) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned int)len);
    /* uv_try_write refuses (EAGAIN) while earlier writes are queued. */
    r = len <= 0x7fffffff ? uv_try_write(&s->u.s, &b, 1) : UV_EAGAIN;
    if (r >= 0) done = (size_t)r;
    else if (r != UV_EAGAIN) return orch__fail_uv(L, "write", r);
  }
  if (done == len) {
    lua_pushboolean(L, 1);
    return 1;
  }
  size_t rest = len - done;
  if (rest > 0x7fffffff) return orch__failf(L, "EMSGSIZE", "write: more than 2 GiB in one call");
  wreq *w = malloc(sizeof *w + rest);
  if (!w) return orch__fail(L, "write", ENOMEM);
  memcpy(w->data, data + done, rest);
  w->s = s;
  w->co = NULL;
  w->linked = 0;
  w->req.data = w;
  uv_buf_t b = uv_buf_init(w->data, (unsigned int)rest);
  r = uv_write(&w->req, &s->u.s, &b, 1, write_cb);
  if (r < 0) {
    free(w);
    return orch__fail_uv(L, "write", r);
  }
  w->co = L;
  wlist_add(s, w);
  return orch__await(L, s->timeout, "write", write_cancel, w);
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
  score *s = req->data;
  lua_State *co = s->shut_co;
  s->shut_co = NULL;
  s->shutting = 0;
  s->shut_done = 1;
  /* A pipe, FIFO or tty has no half-close: its writing end ends by closing. */
  if (status == UV_ENOTSOCK) {
    status = 0;
    core_close(s);
  }
  if (co) wake_status(co, "shutdown", status);
}

static void shutdown_cancel(void *data) {
  score *s = data;
  s->shut_co = NULL;
}

static int stream_shutdown(lua_State *L) {
  score *s = check_stream(L, 1);
  orch__check_nargs(L, 1);
  orch__check_task(L, "shutdown");
  if (!(s->flags & ORCH_STREAM_WRITE))
    return orch__failf(L, "EBADF", "shutdown: stream is not writable");
  if (s->shut_done) { lua_pushboolean(L, 1); return 1; }
  if (s->shutting) return orch__failf(L, "EALREADY", "shutdown: already in progress");
  int r = core_activate(s);
  if (r < 0) return orch__fail_uv(L, "shutdown", r);
  s->shut.data = s;
  r = uv_shutdown(&s->shut, &s->u.s, shutdown_cb);
  if (r < 0) return orch__fail_uv(L, "shutdown", r);
  s->shutting = 1;
  s->shut_co = L;
  return orch__await(L, s->timeout, "shutdown", shutdown_cancel, s);
}

/* ------------------------------------------------------------------ other methods */

/* Detaches u from its core (which may outlive it, until libuv is done) and
 * closes the core. */
static void ud_close(Stream *u) {
  score *s = u->s;
  if (s) {
    u->s = NULL;
    s->ud = NULL;
    core_close(s);
  }
}

static int stream_close(lua_State *L) {
  ud_close(check_ud(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

static int stream_fd(lua_State *L) {
  score *s = check_stream(L, 1);
  lua_pushinteger(L, s->fdnum);
  return 1;
}

static int stream_kind(lua_State *L) {
  score *s = check_stream(L, 1);
  lua_pushstring(L, kind_names[s->kind]);
  return 1;
}

static int stream_set_timeout(lua_State *L) {
  return set_timeout(L, &check_stream(L, 1)->timeout);
}

static int stream_peer_cred(lua_State *L) {
  score *s = check_stream(L, 1);
  orch__check_nargs(L, 1);
  if (s->kind != K_UNIX) return orch__failf(L, "EINVAL", "peer_cred: not a unix socket");
  struct ucred cr;
  socklen_t len = sizeof cr;
  if (getsockopt(s->fdnum, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
    return orch__fail(L, "peer_cred", errno);
  push_ucred(L, &cr);
  return 1;
}

static int stream_tostring(lua_State *L) {
  Stream *u = check_ud(L, 1);
  if (u->s && !u->s->closing)
    lua_pushfstring(L, "orch.Stream: %s fd=%d open", kind_names[u->s->kind], u->s->fdnum);
  else
    lua_pushfstring(L, "orch.Stream: %s closed", kind_names[u->kind]);
  return 1;
}

/* ------------------------------------------------------------------ stream.h */

/* The kind of a pollable fd, or a negative libuv error for files, dirs,
 * datagram sockets and devices epoll refuses (libuv would abort on them). */
static int fd_kind(int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  if (S_ISFIFO(st.st_mode)) return K_PIPE;
  if (S_ISSOCK(st.st_mode)) {
    int dom = 0, type = 0;
    socklen_t l1 = sizeof dom, l2 = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &l1) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l2) < 0) return -errno;
    if (type != SOCK_STREAM) return UV_EINVAL;
    if (dom == AF_UNIX) return K_UNIX;
    if (dom == AF_INET || dom == AF_INET6) return K_TCP;
    return UV_EINVAL;
  }
  if (S_ISCHR(st.st_mode)) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return -errno;
    struct epoll_event ev = { .events = EPOLLIN };
    int r = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    int e = errno;
    close_fd(ep);
    if (r < 0) return e == EPERM ? UV_EINVAL : -e;
    return isatty(fd) ? K_TTY : K_CHAR;
  }
  return UV_EINVAL;
}

static int access_flags(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -errno;
  switch (fl & O_ACCMODE) {
    case O_RDONLY: return ORCH_STREAM_READ;
    case O_WRONLY: return ORCH_STREAM_WRITE;
    default: return ORCH_STREAM_READ | ORCH_STREAM_WRITE;
  }
}

int orch__stream_push_fd(lua_State *L, int fd, int flags) {
  int kind = fd_kind(fd);
  int acc = kind >= 0 ? access_flags(fd) : kind;
  int r = kind < 0 ? kind : acc < 0 ? acc : orch__cloexec(fd);
  if (r < 0) {
    close_fd(fd);
    return r;
  }
  flags &= ORCH_STREAM_READ | ORCH_STREAM_WRITE;
  flags = flags ? (flags & acc) : acc;
  sstate *st = get_state(L);
  if (push_fd_stream(L, st, fd, kind, flags, "stream") != 1) {
    lua_pop(L, 3);
    return UV_ENOMEM;
  }
  return 0;
}

int orch__stream_fd(lua_State *L, int idx) {
  Stream *u = luaL_testudata(L, idx, STREAM_MT);
  if (!u || !u->s || u->s->closing) return -1;
  return u->s->fdnum;
}

/* ------------------------------------------------------------------ orch.pipe, orch.fifo */

static int stream_pipe(lua_State *L) {
  orch__check_nargs(L, 0);
  sstate *st = get_state(L);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return orch__fail(L, "pipe", errno);
  if (push_fd_stream(L, st, fds[0], K_PIPE, ORCH_STREAM_READ, "pipe") != 1) {
    close_fd(fds[1]);
    return 3;
  }
  if (push_fd_stream(L, st, fds[1], K_PIPE, ORCH_STREAM_WRITE, "pipe") != 1) {
    ud_close(lua_touserdata(L, -4));   /* the read end, below the error */
    return 3;
  }
  return 2;
}

static int fifo_make(lua_State *L) {
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
    close_fd(fd);
    return -ENOSTR;   /* reported as "not a FIFO" */
  }
  return fd;
}

static int fail_fifo(lua_State *L, int err, const char *path) {
  if (err == -ENOSTR) return orch__failf(L, "EINVAL", "fifo.open: not a FIFO: %s", path);
  return orch__fail_uv(L, "fifo.open", err);
}

/* ------------------------------------------------------------------ retrying ops */

static op_t *op_new(sstate *st, int what) {
  op_t *o = calloc(1, sizeof *o);
  if (!o) return NULL;
  o->what = what;
  o->delay = 1;
  obj_link(st, &o->o, T_OP);
  return o;
}

static void op_unref(op_t *o) {
  if (--o->refs > 0) return;
  obj_unlink(&o->o);
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
  if (o->core) core_close(o->core);   /* connect_cb runs with ECANCELED */
  op_stop_timer(o);
}

static int unix_try_connect(const struct sockaddr_un *sa, socklen_t salen) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int r;
  do r = connect(fd, (const struct sockaddr *)sa, salen); while (r < 0 && errno == EINTR);
  if (r == 0) return fd;
  int e = errno;
  close_fd(fd);
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
               : push_fd_stream(co, o->o.st, fd, K_UNIX, ORCH_STREAM_READ | ORCH_STREAM_WRITE, "connect");
  } else {
    n = fd < 0 ? fail_fifo(co, fd, o->path)
               : push_fd_stream(co, o->o.st, fd, K_FIFO, ORCH_STREAM_WRITE, "fifo.open");
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

static int fifo_open(lua_State *L) {
  static const char *const modes[] = { "r", "w", NULL };
  const char *path = check_path(L, 1);
  int how = luaL_checkoption(L, 2, NULL, modes);
  double timeout = orch__optseconds(L, 3, -1);
  orch__check_nargs(L, 3);
  sstate *st = get_state(L);
  if (how == 0) {
    int fd = fifo_try_open(path, O_RDONLY);
    if (fd < 0) return fail_fifo(L, fd, path);
    return push_fd_stream(L, st, fd, K_FIFO, ORCH_STREAM_READ, "fifo.open");
  }
  orch__check_task(L, "fifo.open");
  int fd = fifo_try_open(path, O_WRONLY);
  if (fd >= 0) return push_fd_stream(L, st, fd, K_FIFO, ORCH_STREAM_WRITE, "fifo.open");
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
    if (c) core_close(c);
    if (co) {
      orch__fail_uv(co, "connect", status);
      orch__wake(co, 3);
    }
  } else {
    push_core(co, c);
    orch__wake(co, 1);
  }
  op_unref(o);
}

static int op_connect(op_t *o, const struct sockaddr *sa) {
  score *c = core_new(o->o.st, K_TCP, -1, ORCH_STREAM_READ | ORCH_STREAM_WRITE);
  if (!c) return UV_ENOMEM;
  int r = uv_tcp_init(o->o.st->loop, &c->u.tcp);
  if (r < 0) { core_free(c); return r; }
  c->u.h.data = c;
  c->hstate = 1;
  o->conn.data = o;
  r = uv_tcp_connect(&o->conn, &c->u.tcp, sa, connect_cb);
  if (r < 0) { core_close(c); return r; }
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

/* Parses a numeric host; "localhost" and "*" are accepted as shortcuts. */
static int parse_host(const char *host, int port, struct sockaddr_storage *ss) {
  if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
  else if (strcmp(host, "*") == 0) host = "0.0.0.0";
  memset(ss, 0, sizeof *ss);
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) return 0;
  return -1;
}

static int connect_tcp(lua_State *L, sstate *st, const char *host, int port, double timeout) {
  struct sockaddr_storage ss;
  op_t *o = op_new(st, OP_TCP);
  if (!o) return orch__fail(L, "connect", ENOMEM);
  o->port = port;
  if (parse_host(host, port, &ss) == 0) {
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
    int r = uv_getaddrinfo(st->loop, &o->gai, gai_cb, host, NULL, &hints);
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

static int connect_unix(lua_State *L, sstate *st, const char *path, size_t len, double timeout) {
  struct sockaddr_un sa;
  socklen_t salen;
  int r = make_sun(path, len, &sa, &salen);
  if (r < 0) return orch__fail_uv(L, "connect", r);
  int fd = unix_try_connect(&sa, salen);
  if (fd >= 0) return push_fd_stream(L, st, fd, K_UNIX, ORCH_STREAM_READ | ORCH_STREAM_WRITE, "connect");
  if (fd != -EAGAIN) return orch__fail_uv(L, "connect", fd);
  op_t *o = op_new(st, OP_UNIX);
  if (!o) return orch__fail(L, "connect", ENOMEM);
  o->sun = sa;
  o->sunlen = salen;
  return op_retry(L, o, timeout, "connect");
}

static int check_port(lua_State *L, int idx) {
  lua_Integer port = orch__opt_integer(L, idx, "port", -1);
  if (port < 0 || port > 65535) orch__opt_error(L, idx, "port", "port number (0 to 65535) expected");
  return (int)port;
}

static int stream_connect(lua_State *L) {
  static const char *const opts[] = { "unix", "host", "port", "timeout", NULL };
  orch__check_options(L, 1, opts);
  orch__check_nargs(L, 1);
  int has_unix = has_field(L, 1, "unix");
  int has_port = has_field(L, 1, "port");
  if (has_unix && (has_port || has_field(L, 1, "host")))
    luaL_argerror(L, 1, "option 'unix' excludes 'host' and 'port'");
  if (!has_unix && !has_port) luaL_argerror(L, 1, "option 'unix' or 'port' expected");
  double timeout = opt_timeout(L, 1);
  if (has_unix) {
    orch__opt_string(L, 1, "unix", NULL);
    lua_getfield(L, 1, "unix");
    size_t len;
    const char *path = lua_tolstring(L, -1, &len);
    check_sun_name(L, 1, "option 'unix'", path, len);
    orch__check_task(L, "connect");
    return connect_unix(L, get_state(L), path, len, timeout);
  }
  int port = check_port(L, 1);
  const char *host = orch__opt_string(L, 1, "host", "127.0.0.1");
  if (!*host) orch__opt_error(L, 1, "host", "empty host name");
  if (port == 0) orch__opt_error(L, 1, "port", "port number (1 to 65535) expected");
  orch__check_task(L, "connect");
  return connect_tcp(L, get_state(L), host, port, timeout);
}

/* ------------------------------------------------------------------ listeners */

static void lcore_free(lcore *l) {
  if (l->ud) l->ud->l = NULL;
  obj_unlink(&l->o);
  free(l->path);
  free(l->name);
  free(l);
}

static void lcore_close_cb(uv_handle_t *h) { lcore_free(h->data); }

static void lcore_close(lcore *l) {
  if (l->closing) return;
  l->closing = 1;
  lua_State *co = l->co;
  if (co) {
    l->co = NULL;
    wake_closed(co, "accept", "listener");
  }
  unlink_ours(&l->path, l->dev, l->ino, l->owner);
  if (l->inited) uv_close(&l->u.h, lcore_close_cb);
  else lcore_free(l);
}

/* [-0,+1|3] Accepts the connection libuv holds into a new orch.Stream. */
static int do_accept(lua_State *L, lcore *l) {
  l->pending = 0;
  score *c = core_new(l->o.st, l->kind, -1, ORCH_STREAM_READ | ORCH_STREAM_WRITE);
  if (!c) return orch__fail(L, "accept", ENOMEM);
  int r = l->kind == K_TCP ? uv_tcp_init(l->loop, &c->u.tcp) : uv_pipe_init(l->loop, &c->u.pipe, 0);
  if (r < 0) { core_free(c); return orch__fail_uv(L, "accept", r); }
  c->u.h.data = c;
  c->hstate = 1;
  r = uv_accept(&l->u.s, &c->u.s);
  if (r < 0) {
    core_close(c);
    return orch__fail_uv(L, "accept", r);
  }
  int fd = -1;
  uv_fileno(&c->u.h, &fd);
  c->fdnum = fd;
  push_core(L, c);
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
  if (!l->closing) uv_unref(&l->u.h);
}

static int listen_unix(lcore *l, const char *path, size_t len, int mode, int backlog) {
  struct sockaddr_un sa;
  socklen_t salen;
  int r = make_sun(path, len, &sa, &salen);
  if (r < 0) return r;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  r = bind_unix(fd, &sa, salen, mode, SOCK_STREAM, &l->dev, &l->ino);
  if (r < 0) { close_fd(fd); return r; }
  l->owner = getpid();
  if (path[0] != '@' && !(l->path = strdup(path))) { unlink(path); close_fd(fd); return UV_ENOMEM; }
  if (!(l->name = strdup(path))) { close_fd(fd); return UV_ENOMEM; }
  uv_pipe_init(l->loop, &l->u.pipe, 0);
  l->u.h.data = l;
  l->inited = 1;
  r = uv_pipe_open(&l->u.pipe, fd);
  if (r < 0) { close_fd(fd); return r; }
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

static int stream_listen(lua_State *L) {
  static const char *const opts[] = { "unix", "host", "port", "backlog", "mode", NULL };
  orch__check_options(L, 1, opts);
  orch__check_nargs(L, 1);
  int has_unix = has_field(L, 1, "unix");
  int has_port = has_field(L, 1, "port");
  if (has_unix && (has_port || has_field(L, 1, "host")))
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
    check_sun_name(L, 1, "option 'unix'", path, len);
  } else {
    if (has_field(L, 1, "mode")) luaL_argerror(L, 1, "option 'mode' applies to unix sockets only");
    int port = check_port(L, 1);
    const char *host = orch__opt_string(L, 1, "host", "127.0.0.1");
    if (parse_host(host, port, &ss) < 0)
      orch__opt_error(L, 1, "host", "numeric IPv4 or IPv6 address expected");
  }
  sstate *st = get_state(L);
  Listener *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->l = NULL;
  u->kind = has_unix ? K_UNIX : K_TCP;
  u->port = 0;
  luaL_setmetatable(L, LISTENER_MT);
  lcore *l = calloc(1, sizeof *l);
  if (!l) return orch__fail(L, "listen", ENOMEM);
  l->loop = st->loop;
  l->kind = u->kind;
  l->timeout = -1;
  obj_link(st, &l->o, T_LISTENER);
  int r = has_unix ? listen_unix(l, path, len, mode, (int)backlog)
                   : listen_tcp(l, (struct sockaddr *)&ss, (int)backlog);
  if (r < 0) {
    lcore_close(l);
    return orch__fail_uv(L, "listen", r);
  }
  /* Listening alone does not keep orch running; a waiting accept does. */
  uv_unref(&l->u.h);
  u->l = l;
  u->port = l->port;
  l->ud = u;
  return 1;
}

static lcore *check_listener(lua_State *L, int idx) {
  Listener *u = luaL_checkudata(L, idx, LISTENER_MT);
  if (!u->l || u->l->closing) orch__closed_error(L, LISTENER_MT);
  return u->l;
}

static int listener_accept(lua_State *L) {
  lcore *l = check_listener(L, 1);
  orch__check_nargs(L, 1);
  orch__check_task(L, "accept");
  if (l->co) return orch__failf(L, "EBUSY", "accept: another task is accepting on this listener");
  if (l->pending) return do_accept(L, l);
  l->co = L;
  uv_ref(&l->u.h);
  return orch__await(L, l->timeout, "accept", accept_cancel, l);
}

static int listener_close(lua_State *L) {
  Listener *u = luaL_checkudata(L, 1, LISTENER_MT);
  lcore *l = u->l;
  if (l) {
    u->l = NULL;
    l->ud = NULL;
    lcore_close(l);
  }
  lua_pushboolean(L, 1);
  return 1;
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

static int listener_fd(lua_State *L) {
  lcore *l = check_listener(L, 1);
  int fd = -1;
  uv_fileno(&l->u.h, &fd);
  lua_pushinteger(L, fd);
  return 1;
}

static int listener_set_timeout(lua_State *L) {
  return set_timeout(L, &check_listener(L, 1)->timeout);
}

static int listener_tostring(lua_State *L) {
  Listener *u = luaL_checkudata(L, 1, LISTENER_MT);
  lcore *l = u->l;
  if (!l || l->closing) {
    lua_pushfstring(L, "orch.Listener: %s closed", kind_names[u->kind]);
    return 1;
  }
  int fd = -1;
  uv_fileno(&l->u.h, &fd);
  if (l->kind == K_UNIX) lua_pushfstring(L, "orch.Listener: unix=%s fd=%d open", l->name, fd);
  else lua_pushfstring(L, "orch.Listener: tcp=%s:%d fd=%d open", l->host, l->port, fd);
  return 1;
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

/* ------------------------------------------------------------------ datagrams */

static void dcore_free(dcore *d) {
  if (d->ud) d->ud->d = NULL;
  obj_unlink(&d->o);
  free(d->path);
  free(d->name);
  free(d);
}

static void dcore_close_cb(uv_handle_t *h) {
  dcore *d = h->data;
  close_fd(d->fd);
  dcore_free(d);
}

static void dcore_close(dcore *d) {
  if (d->closing) return;
  d->closing = 1;
  lua_State *co = d->co;
  if (co) {
    d->co = NULL;
    wake_closed(co, "recv", "socket");
  }
  unlink_ours(&d->path, d->dev, d->ino, d->owner);
  if (d->inited) {
    uv_close((uv_handle_t *)&d->poll, dcore_close_cb);
  } else {
    close_fd(d->fd);
    dcore_free(d);
  }
}

/* At most this many descriptors travel with one datagram (the kernel's
 * SCM_MAX_FD). */
#define MAX_PASS_FDS 253

/* [-0,+1..4] One datagram: data, sender (or nil), credentials (passcred),
 * and with want_fds the descriptors it carried (a list of streams).
 * Returns 0 when none is waiting. */
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
  union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(MAX_PASS_FDS * sizeof(int))]; } cbuf;
  struct iovec iov = { p, size ? (size_t)size : 1 };
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  memset(&from, 0, sizeof from);
  msg.msg_name = &from;
  msg.msg_namelen = sizeof from;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf.buf;
  msg.msg_controllen = sizeof cbuf.buf;
  ssize_t n;
  /* Received descriptors are close-on-exec from the start: no child spawned
   * by another thread of work can inherit them. */
  do n = recvmsg(d->fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
  if (n < 0) {
    int e = errno;
    luaL_pushresultsize(&b, 0);
    lua_pop(L, 1);
    if (e == EAGAIN || e == EWOULDBLOCK) return 0;
    return orch__fail(L, "recv", e);
  }
  struct ucred *cred = NULL;
  int fds[MAX_PASS_FDS];
  int nfds = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof *cred)) {
      cred = (struct ucred *)CMSG_DATA(c);
    } else if (c->cmsg_type == SCM_RIGHTS) {
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      int *in = (int *)CMSG_DATA(c);
      for (size_t i = 0; i < k; i++) {
        int fd;
        memcpy(&fd, in + i, sizeof fd);
        /* Nobody asked for descriptors (or more came than fit): do not
         * leak them. */
        if (want_fds && nfds < MAX_PASS_FDS) fds[nfds++] = fd;
        else close_fd(fd);
      }
    }
  }
  luaL_pushresultsize(&b, (size_t)n > (size_t)size ? (size_t)size : (size_t)n);
  push_sun(L, &from, msg.msg_namelen);
  if (!want_fds) {
    if (!d->passcred) return 2;
    if (cred) push_ucred(L, cred); else lua_pushnil(L);
    return 3;
  }
  if (d->passcred && cred) push_ucred(L, cred); else lua_pushnil(L);
  lua_createtable(L, nfds, 0);
  for (int i = 0; i < nfds; i++) {
    /* A descriptor that cannot be a stream (a regular file, a directory, a
     * datagram socket) is closed and shows as false. */
    if (orch__stream_push_fd(L, fds[i], 0) < 0) lua_pushboolean(L, 0);
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
  if (!d->closing) poll_stop(d);
}

static dcore *check_dgram(lua_State *L, int idx) {
  Dgram *u = luaL_checkudata(L, idx, DGRAM_MT);
  if (!u->d || u->d->closing) orch__closed_error(L, DGRAM_MT);
  return u->d;
}

/* dgram:recv([{ fds = true }]) */
static int dgram_recv(lua_State *L) {
  static const char *const opts[] = { "fds", NULL };
  dcore *d = check_dgram(L, 1);
  int want_fds = 0;
  if (!lua_isnoneornil(L, 2)) {
    orch__check_options(L, 2, opts);
    want_fds = orch__opt_boolean(L, 2, "fds", 0);
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
  return orch__await(L, d->timeout, "recv", recv_cancel, d);
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

/* dgram:send(data, path [, fds]) */
static int dgram_send(lua_State *L) {
  dcore *d = check_dgram(L, 1);
  size_t len, plen;
  const char *data = luaL_checklstring(L, 2, &len);
  const char *path = luaL_checklstring(L, 3, &plen);
  check_sun_name(L, 3, "send", path, plen);
  int fds[MAX_PASS_FDS];
  int nfds = lua_isnoneornil(L, 4) ? 0 : check_send_fds(L, 4, fds);
  orch__check_nargs(L, 4);
  struct sockaddr_un sa;
  socklen_t salen;
  int r = make_sun(path, plen, &sa, &salen);
  if (r < 0) return orch__fail_uv(L, "send", r);
  union { struct cmsghdr align; char buf[CMSG_SPACE(MAX_PASS_FDS * sizeof(int))]; } cbuf;
  struct iovec iov = { (void *)data, len };
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_name = &sa;
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

static int dgram_close(lua_State *L) {
  Dgram *u = luaL_checkudata(L, 1, DGRAM_MT);
  dcore *d = u->d;
  if (d) {
    u->d = NULL;
    d->ud = NULL;
    dcore_close(d);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int dgram_fd(lua_State *L) {
  lua_pushinteger(L, check_dgram(L, 1)->fd);
  return 1;
}

static int dgram_address(lua_State *L) {
  dcore *d = check_dgram(L, 1);
  if (d->name) lua_pushstring(L, d->name); else lua_pushnil(L);
  return 1;
}

static int dgram_set_timeout(lua_State *L) {
  return set_timeout(L, &check_dgram(L, 1)->timeout);
}

static int dgram_tostring(lua_State *L) {
  Dgram *u = luaL_checkudata(L, 1, DGRAM_MT);
  dcore *d = u->d;
  if (!d || d->closing) lua_pushliteral(L, "orch.Dgram: closed");
  else if (d->name) lua_pushfstring(L, "orch.Dgram: unix=%s fd=%d open", d->name, d->fd);
  else lua_pushfstring(L, "orch.Dgram: unbound fd=%d open", d->fd);
  return 1;
}

static int stream_dgram(lua_State *L) {
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
    check_sun_name(L, 1, "option 'unix'", path, len);
  }
  sstate *st = get_state(L);
  Dgram *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->d = NULL;
  luaL_setmetatable(L, DGRAM_MT);
  struct sockaddr_un sa;
  socklen_t salen = 0;
  if (path) {
    int r = make_sun(path, len, &sa, &salen);
    if (r < 0) return orch__fail_uv(L, "dgram", r);
  }
  dcore *d = calloc(1, sizeof *d);
  if (!d) return orch__fail(L, "dgram", ENOMEM);
  d->loop = st->loop;
  d->timeout = -1;
  d->passcred = passcred;
  d->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  obj_link(st, &d->o, T_DGRAM);
  int err = d->fd < 0 ? errno : 0;
  int one = 1;
  if (!err && passcred && setsockopt(d->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) err = errno;
  if (!err && path) {
    int r = bind_unix(d->fd, &sa, salen, mode, SOCK_DGRAM, &d->dev, &d->ino);
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
    dcore_close(d);
    return orch__fail(L, "dgram", err);
  }
  u->d = d;
  d->ud = u;
  return 1;
}

/* ------------------------------------------------------------------ module */

int orch__open_stream(lua_State *L) {
  /* A write to a pipe whose reader has gone must fail with EPIPE, not kill
   * orch. Only the default disposition is changed; spawned children get
   * their signal dispositions reset by proc. */
  struct sigaction old;
  if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL && !(old.sa_flags & SA_SIGINFO))
    signal(SIGPIPE, SIG_IGN);

  static const luaL_Reg stream_methods[] = {
    {"read", stream_read}, {"read_line", stream_read_line}, {"read_all", stream_read_all},
    {"lines", stream_lines}, {"write", stream_write}, {"shutdown", stream_shutdown},
    {"close", stream_close}, {"fd", stream_fd}, {"kind", stream_kind},
    {"set_timeout", stream_set_timeout}, {"peer_cred", stream_peer_cred},
    {"on_read", stream_on_read}, {NULL, NULL}
  };
  static const luaL_Reg stream_meta[] = {
    {"__gc", stream_close}, {"__close", stream_close}, {"__tostring", stream_tostring}, {NULL, NULL}
  };
  orch__newclass(L, STREAM_MT, stream_methods, stream_meta);
  lua_pop(L, 1);
  luaL_newmetatable(L, CB_GUARD_MT);
  lua_pushcfunction(L, cb_guard_close);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);

  static const luaL_Reg listener_methods[] = {
    {"accept", listener_accept}, {"close", listener_close}, {"address", listener_address},
    {"fd", listener_fd}, {"set_timeout", listener_set_timeout}, {NULL, NULL}
  };
  static const luaL_Reg listener_meta[] = {
    {"__gc", listener_close}, {"__close", listener_close}, {"__tostring", listener_tostring},
    {NULL, NULL}
  };
  orch__newclass(L, LISTENER_MT, listener_methods, listener_meta);
  lua_getfield(L, -1, "__index");
  lua_pushcclosure(L, listener_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);

  static const luaL_Reg dgram_methods[] = {
    {"recv", dgram_recv}, {"send", dgram_send}, {"close", dgram_close}, {"fd", dgram_fd},
    {"address", dgram_address}, {"set_timeout", dgram_set_timeout}, {NULL, NULL}
  };
  static const luaL_Reg dgram_meta[] = {
    {"__gc", dgram_close}, {"__close", dgram_close}, {"__tostring", dgram_tostring}, {NULL, NULL}
  };
  orch__newclass(L, DGRAM_MT, dgram_methods, dgram_meta);
  lua_pop(L, 1);

  static const luaL_Reg fns[] = {
    {"pipe", stream_pipe}, {"listen", stream_listen}, {"connect", stream_connect},
    {"dgram", stream_dgram}, {NULL, NULL}
  };
  luaL_newlib(L, fns);
  static const luaL_Reg fifo_fns[] = { {"make", fifo_make}, {"open", fifo_open}, {NULL, NULL} };
  luaL_newlib(L, fifo_fns);
  lua_setfield(L, -2, "fifo");
  return 1;
}
