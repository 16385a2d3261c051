/*
 * stream.c: orch.Stream (pipes, FIFOs, ttys, unix and TCP sockets over
 * libuv streams), orch.pipe, orch.socketpair, the stream.h API that proc
 * uses for stdio pipes, and the module's table (the other objects of the
 * module live beside it: see stream_int.h).
 *
 * Ownership: an orch.Stream is a small userdata pointing to a malloc'ed
 * core (score) that holds the libuv handle, with the lifetime every object
 * of the module shares (handle.h): the core is freed only in its handle's
 * close callback. A waiting task is remembered as its coroutine, which keeps
 * the userdata alive (it is the method's `self`).
 *
 * Reading is pull-based: uv_read_start runs only while a task waits for data
 * the buffer cannot satisfy, so a fast producer fills the kernel's buffer and
 * blocks there, never in orch's memory. Writes try uv_try_write first and
 * queue only the rest, copied, so C never references a Lua string. Streams
 * made from fds (orch.pipe, FIFOs, proc's pipes) become libuv handles
 * lazily, at their first read or write, so an fd handed to a child process
 * is still blocking. on_read hands each chunk to a callback task
 * (orch__callback) and reads on only when that returned.
 *
 * Nothing here blocks.
 */
#include "stream_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"
#include "util.h"

#define READ_CHUNK 65536
#define DEFAULT_MAX_LINE 65536

enum { RM_CHUNK, RM_LINE, RM_ALL };

const char *const orch__stream_kinds[] = { "pipe", "fifo", "unix", "tcp", "tty", "char" };

/* ------------------------------------------------------------------ stream cores */

static void core_close(orch__hobj *o);
static void core_forget(orch__hobj *o);
static void core_forked(orch__hobj *o);
static int core_fd(orch__hobj *o);
static int core_describe(lua_State *L, orch__hobj *o, void *ud);

const orch__hclass orch__stream_class = {
  STREAM_MT, core_close, core_forget, core_forked, core_fd, core_describe
};

score *orch__score_new(orch__hstate *st, int kind, int fd, int flags) {
  score *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  orch__hobj_link(st, &s->o, &orch__stream_class);
  s->fd = fd;
  s->fdnum = fd;
  s->kind = kind;
  s->flags = flags;
  s->cb_fn = s->cb_self = s->cb_arg = LUA_NOREF;
  return s;
}

void orch__score_free(score *s) {
  orch__hobj_unlink(&s->o);
  free(s->buf);
  free(s);
}

static void core_close_cb(uv_handle_t *h) {
  score *s = h->data;
  int refill = s->refill;
  orch__close_fd(s->fd);
  orch__score_free(s);
  /* The fd just closed refills the spare fds given up at EMFILE (before a
   * crash-looping service takes it). */
  if (refill) orch__fd_reserve_hold(-1);
}

int orch__score_init_handle(score *s) {
  int r = s->kind == K_TCP ? uv_tcp_init(s->o.st->loop, &s->u.tcp) : uv_pipe_init(s->o.st->loop, &s->u.pipe, 0);
  if (r < 0) {
    orch__score_free(s);
    return r;
  }
  s->u.h.data = s;
  s->hstate = 1;
  return 0;
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
  if ((co = s->reader)) { s->reader = NULL; orch__wake_closed(co, s->rop, "stream"); }
  while (s->writes) {
    wreq *w = s->writes;
    wlist_remove(s, w);
    co = w->co;
    w->co = NULL;
    if (co) orch__wake_closed(co, "write", "stream");
  }
  if ((co = s->shut_co)) { s->shut_co = NULL; orch__wake_closed(co, "shutdown", "stream"); }
}

static void cb_release(score *s);

static void eofs_remove(score *s);

static void core_close(orch__hobj *o) {
  score *s = (score *)o;
  if (s->eof_later) eofs_remove(s);
  cb_release(s);
  core_wake_all(s);
  if (s->hstate) {
    uv_close(&s->u.h, core_close_cb);
  } else {
    int refill = s->refill;
    orch__close_fd(s->fd);
    s->fd = -1;
    orch__score_free(s);
    if (refill) orch__fd_reserve_hold(-1);
  }
}

/* The Lua state is gone (the runtime closes): no unref, no wake. */
static void core_forget(orch__hobj *o) {
  score *s = (score *)o;
  s->cb_on = 0;
  s->reader = NULL;
  s->shut_co = NULL;
  while (s->writes) {
    wreq *w = s->writes;
    s->writes = w->next;
    w->linked = 0;
    w->co = NULL;
  }
}

/* The runtime stopped every read in the fork child. */
static void core_forked(orch__hobj *o) { ((score *)o)->reading = 0; }

static int core_fd(orch__hobj *o) { return ((score *)o)->fdnum; }

static int core_describe(lua_State *L, orch__hobj *o, void *ud) {
  lua_pushstring(L, orch__stream_kinds[o ? ((score *)o)->kind : ((Stream *)ud)->kind]);
  return 1;
}

/* Makes the libuv handle for a stream created from an fd. */
static int core_activate(score *s) {
  if (s->hstate) return s->open_err;
  int r = s->kind == K_TCP ? uv_tcp_init(s->o.st->loop, &s->u.tcp) : uv_pipe_init(s->o.st->loop, &s->u.pipe, 0);
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
  Stream *u = orch__hobj_push(L, &orch__stream_class, sizeof *u);
  u->kind = kind;
  return u;
}

void orch__stream_push_core(lua_State *L, score *s) {
  orch__hobj_attach(push_ud(L, s->kind), &s->o);
}

int orch__stream_push_new(lua_State *L, orch__hstate *st, int fd, int kind, int flags,
                          const char *opname) {
  Stream *u = push_ud(L, kind);
  score *s = orch__score_new(st, kind, fd, flags);
  if (!s) {
    orch__close_fd(fd);
    lua_pop(L, 1);
    return orch__fail(L, opname, ENOMEM);
  }
  orch__hobj_attach(u, &s->o);
  return 1;
}

static score *check_stream(lua_State *L, int idx) {
  return (score *)orch__hobj_check(L, idx, &orch__stream_class);
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

/* Where a stream that holds no data reads into: one buffer for the loop
 * thread, the bytes read then copied into a buffer of their size
 * (read_cb). Without it, every read of an idle stream (a service's line of
 * output) took a 64 KiB block from the heap and gave it back, and finding
 * one in the heap of a supervisor of 10,000 services is a malloc's slow
 * path. libuv calls alloc_cb and read_cb in pairs with nothing between
 * them, so one buffer a thread serves every stream. It is allocated at the
 * thread's first read and freed when the thread ends: a _Thread_local
 * array is zeroed at every thread's start, so its 64 KiB were resident in
 * every process of this binary (the fd holder and `orch ctl` too). */
static _Thread_local char *first_read;
static pthread_key_t first_read_key;
static pthread_once_t first_read_once = PTHREAD_ONCE_INIT;
static int first_read_keyed;

static void first_read_key_make(void) {
  first_read_keyed = pthread_key_create(&first_read_key, free) == 0;
}

/* The thread's read buffer, or NULL without memory. */
static char *first_read_buffer(void) {
  if (!first_read) {
    pthread_once(&first_read_once, first_read_key_make);
    first_read = malloc(READ_CHUNK);
    if (first_read && first_read_keyed) pthread_setspecific(first_read_key, first_read);
  }
  return first_read;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  score *s = h->data;
  (void)suggested;
  if (s->len == s->off) {
    if (s->buf) consume(s, 0);                  /* an empty buffer goes */
    buf->base = first_read_buffer();
    if (buf->base) {
      buf->len = READ_CHUNK;
      return;
    }
  }
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
static int eofs_add(score *s);

static void read_cb(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf) {
  score *s = h->data;
  if (nread > 0) s->partial = buf->base[nread - 1] != '\n';
  if (nread > 0 && first_read && buf->base == first_read) {
    if (ensure_space(s, (size_t)nread) < 0) {
      s->rerr = UV_ENOMEM;
      read_stop(s);
    } else {
      memcpy(s->buf + s->len, first_read, (size_t)nread);
      s->len += (size_t)nread;
    }
  } else if (nread > 0) {
    s->len += (size_t)nread;
  } else {
    /* Nothing read (EAGAIN, EOF, an error): an idle stream keeps no buffer. */
    consume(s, 0);
    if (nread == UV_EOF) { s->eof = 1; read_stop(s); }
    else if (nread < 0) { s->rerr = (int)nread; read_stop(s); }
  }
  if (s->cb_on) {
    if (s->eof_later) return;
    if (!s->cb_busy && nread == UV_EOF && s->len == s->off && !s->partial && eofs_add(s) == 0) return;
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
  if (!s->reader && !s->o.closing) read_stop(s);
}

/* An accepted connection's first read: a client writes its request right
 * after its connect (`orch ctl`), so when the server's task first reads,
 * the request is usually in the socket already. It is read at once, as
 * read_cb would (s has no handle yet: the fd is still ours, and
 * non-blocking), rather than after a turn of the loop (epoll_ctl,
 * epoll_wait). 1 if the read changed s (data, EOF or an error), 0 when
 * nothing was there: then the usual wait, for one read(2) more. */
static int read_at_once(score *s) {
  s->unread = 0;
  if (s->hstate || s->fd < 0) return 0;
  char *b = first_read_buffer();
  if (!b) return 0;
  ssize_t r;
  do r = read(s->fd, b, READ_CHUNK); while (r < 0 && errno == EINTR);
  if (r > 0) {
    s->partial = b[r - 1] != '\n';
    if (ensure_space(s, (size_t)r) < 0) {
      s->rerr = UV_ENOMEM;
    } else {
      memcpy(s->buf + s->len, b, (size_t)r);
      s->len += (size_t)r;
    }
  } else if (r == 0) {
    s->eof = 1;
  } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
    return 0;
  } else {
    s->rerr = -errno;
  }
  return 1;
}

static void read_cancel(void *data) {
  score *s = data;
  s->reader = NULL;
  if (!s->o.closing) read_stop(s);
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
  if (s->unread && read_at_once(s) && (n = deliver(L, s, mode, max, opname))) return n;
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
  return orch__await(L, s->o.timeout, opname, read_cancel, s);
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
 * The calls go through orch__callback (src/callback.c): a chunk that arrives
 * in a libuv callback runs its callback at once in an idle runner task, so
 * hundreds of streams whose data arrives together are served one after the
 * other by the same runner, and an idle stream in this mode holds no buffer
 * and no coroutine: only fn. The callback's end (cb_done) goes on reading. */

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
  luaL_unref(L, LUA_REGISTRYINDEX, s->cb_arg);
  s->cb_fn = s->cb_self = s->cb_arg = LUA_NOREF;
}

static void cb_done(lua_State *L, int owner, int failed);
static const orch__callback_end cb_end = { cb_done };

/* Delivers what is buffered (or EOF, or the read error) to the callback.
 * Reading is on here only when read_cb calls, which pauses it if the
 * callback waits. */
static void cb_dispatch_as(score *s, int now) {
  lua_State *L = s->o.st->L;
  size_t avail = s->len - s->off;
  int nargs = 1;
  s->cb_busy = 1;
  lua_checkstack(L, 8);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->cb_self);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->cb_fn);
  if (s->cb_arg != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->cb_arg);
    nargs++;
  }
  if (avail) {
    lua_pushlstring(L, s->buf + s->off, avail);
    consume(s, avail);
  } else if (s->rerr) {
    nargs += orch__fail_uv(L, "read", s->rerr) - 1;
    s->cb_final = 1;
  } else {
    lua_pushnil(L);
    s->cb_final = 1;
  }
  orch__callback(L, nargs, &cb_end, now);
}

static void cb_dispatch(score *s) { cb_dispatch_as(s, 1); }

/* ---- EOFs after the loop turn's other events
 *
 * A service's log pipe reaches EOF as its process exits, an instant before
 * orch hears of the exit, and libuv hands out the pipe's event first: its
 * callback (a task's resume, the sink, the pipe's close) ran before the
 * exit's, on the way to a crashed service's restart (issue 15). An EOF
 * right after a newline (or after no data), which writes no line, is
 * instead held until the loop turn's check phase and handed to a callback
 * task queued there, behind the callbacks of the events read in the same
 * turn (the exit's among them). After a partial line it goes at once, so
 * that the line comes before anything the exit's handling writes. One
 * list and one check handle a runtime, in its hstate. */
typedef struct orch__eofs {
  uv_check_t check;
  score **v;
  int n, cap;
} eofs;

static void eofs_closed(uv_handle_t *h) {
  eofs *q = h->data;
  free(q->v);
  free(q);
}

static void eofs_close_hook(orch_runtime *rt, void *data) {
  orch__hstate *st = data;
  (void)rt;
  if (!st->eofs) return;
  st->eofs->n = 0;
  uv_close((uv_handle_t *)&st->eofs->check, eofs_closed);
  st->eofs = NULL;
}

static void eofs_check_cb(uv_check_t *h) {
  eofs *q = h->data;
  /* Queued (not run): nothing runs Lua in this loop, and the callbacks
   * queued by the turn's events go first. */
  for (int i = 0; i < q->n; i++) {
    score *s = q->v[i];
    s->eof_later = 0;
    if (s->cb_on && !s->cb_busy && !s->o.closing) cb_dispatch_as(s, 0);
  }
  q->n = 0;
  uv_check_stop(h);
}

/* The forked child's loop stopped the check: its EOFs go on there. */
static void eofs_fork_hook(orch_runtime *rt, void *data) {
  orch__hstate *st = data;
  (void)rt;
  if (st->eofs && st->eofs->n > 0) uv_check_start(&st->eofs->check, eofs_check_cb);
}

/* Holds s's EOF for the check phase; 0, or -1 without memory (then it goes
 * at once). */
static int eofs_add(score *s) {
  orch__hstate *st = s->o.st;
  eofs *q = st->eofs;
  if (!q) {
    q = calloc(1, sizeof *q);
    if (!q) return -1;
    uv_check_init(st->loop, &q->check);
    q->check.data = q;
    st->eofs = q;
    orch__on_close(st->rt, eofs_close_hook, st);
    orch__on_fork_child(st->rt, eofs_fork_hook, st);
  }
  if (q->n == q->cap) {
    int cap = q->cap ? 2 * q->cap : 8;
    score **v = realloc(q->v, (size_t)cap * sizeof *v);
    if (!v) return -1;
    q->v = v;
    q->cap = cap;
  }
  q->v[q->n++] = s;
  s->eof_later = 1;
  if (q->n == 1) uv_check_start(&q->check, eofs_check_cb);
  return 0;
}

/* s closes: it leaves the list (its core is freed before the check could
 * run when it never had a handle). */
static void eofs_remove(score *s) {
  eofs *q = s->o.st ? s->o.st->eofs : NULL;
  s->eof_later = 0;
  if (!q) return;
  for (int i = 0; i < q->n; i++) {
    if (q->v[i] == s) {
      q->v[i] = q->v[--q->n];
      break;
    }
  }
}

/* Goes on after a callback returned (or when on_read starts). */
static int cb_continue(score *s) {
  if (!s->cb_on || s->cb_busy || s->o.closing || s->eof_later) return 0;
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

/* The callback returned (its runner may also have been cancelled) or
 * raised (failed: no more callbacks). */
static void cb_done(lua_State *L, int owner, int failed) {
  Stream *u = luaL_testudata(L, owner, STREAM_MT);
  score *s = u ? u->s : NULL;
  if (!s || s->o.closing || !s->cb_busy) return;
  s->cb_busy = 0;
  if (failed) {
    cb_release(s);
    return;
  }
  int r = cb_continue(s);
  if (r < 0) {
    /* The callback learns of it as of any read error. */
    s->rerr = r;
    cb_continue(s);
  }
}

/* An argument (not nil) given after the callback is passed to it first:
 * fn(arg, chunk). The supervisor's log capture passes its state so,
 * instead of making a closure over it for each pipe (80 bytes a service). */
static void cb_set_arg(lua_State *L, score *s) {
  int has = !lua_isnoneornil(L, 3);
  if (s->cb_arg != LUA_NOREF && has) {
    lua_pushvalue(L, 3);
    lua_rawseti(L, LUA_REGISTRYINDEX, s->cb_arg);
    return;
  }
  luaL_unref(L, LUA_REGISTRYINDEX, s->cb_arg);
  s->cb_arg = LUA_NOREF;
  if (has) {
    lua_pushvalue(L, 3);
    s->cb_arg = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

static int stream_on_read(lua_State *L) {
  score *s = check_stream(L, 1);
  if (!lua_isnil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  orch__check_nargs(L, 3);
  if (lua_isnil(L, 2) && !lua_isnoneornil(L, 3))
    return luaL_argerror(L, 3, "no argument without a callback");
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
    cb_set_arg(L, s);
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushvalue(L, 2);
  s->cb_fn = luaL_ref(L, LUA_REGISTRYINDEX);
  cb_set_arg(L, s);
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

/* write(data, ...): the pieces go out in one writev, not joined into a new
 * Lua string first (a control reply of megabytes and its newline would be
 * copied, and the copy counted against the collector); what the kernel does
 * not take at once is copied into one queued request. More than WRITE_BUFS
 * pieces are joined. */
#define WRITE_BUFS 16
static int stream_write(lua_State *L) {
  score *s = check_stream(L, 1);
  int n = lua_gettop(L);
  luaL_checklstring(L, 2, NULL);
  for (int i = 3; i <= n; i++) luaL_checklstring(L, i, NULL);
  if (n - 1 > WRITE_BUFS) {
    lua_concat(L, n - 1);
    n = 2;
  }
  uv_buf_t bufs[WRITE_BUFS];
  int nb = 0;
  size_t len = 0;
  for (int i = 2; i <= n; i++) {
    size_t l;
    const char *p = lua_tolstring(L, i, &l);
    if (l == 0) continue;
    bufs[nb].base = (char *)p;   /* .len is size_t on Unix: no truncation */
    bufs[nb].len = l;
    nb++;
    len += l;
  }
  orch__check_task(L, "write");
  if (!(s->flags & ORCH_STREAM_WRITE))
    return orch__failf(L, "EBADF", "write: stream is not writable");
  if (s->shutting || s->shut_done)
    return orch__failf(L, "EPIPE", "write: stream is shut down");
  int r = core_activate(s);
  if (r < 0) return orch__fail_uv(L, "write", r);
  size_t done = 0;
  if (len) {
    /* uv_try_write refuses (EAGAIN) while earlier writes are queued. */
    r = len <= 0x7fffffff ? uv_try_write(&s->u.s, bufs, (unsigned int)nb) : UV_EAGAIN;
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
  size_t off = 0, skip = done;
  for (int i = 0; i < nb; i++) {
    size_t l = bufs[i].len;
    if (skip >= l) {
      skip -= l;
      continue;
    }
    memcpy(w->data + off, bufs[i].base + skip, l - skip);
    off += l - skip;
    skip = 0;
  }
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
  return orch__await(L, s->o.timeout, "write", write_cancel, w);
}

static void shutdown_cb(uv_shutdown_t *req, int status) {
  score *s = req->data;
  free(req);
  lua_State *co = s->shut_co;
  s->shut_co = NULL;
  s->shutting = 0;
  s->shut_done = 1;
  /* A pipe, FIFO or tty has no half-close: its writing end ends by closing. */
  if (status == UV_ENOTSOCK) {
    status = 0;
    orch__hobj_close(&s->o);
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
  /* Allocated here, not in the core: few streams are ever shut down, and
   * libuv calls shutdown_cb (which frees it) even when the stream closes
   * first (UV_ECANCELED). */
  uv_shutdown_t *req = malloc(sizeof *req);
  if (!req) return orch__failf(L, "ENOMEM", "shutdown: out of memory");
  req->data = s;
  r = uv_shutdown(req, &s->u.s, shutdown_cb);
  if (r < 0) {
    free(req);
    return orch__fail_uv(L, "shutdown", r);
  }
  s->shutting = 1;
  s->shut_co = L;
  return orch__await(L, s->o.timeout, "shutdown", shutdown_cancel, s);
}

/* ------------------------------------------------------------------ other methods */

static int stream_kind(lua_State *L) {
  score *s = check_stream(L, 1);
  lua_pushstring(L, orch__stream_kinds[s->kind]);
  return 1;
}

static int stream_peer_cred(lua_State *L) {
  score *s = check_stream(L, 1);
  orch__check_nargs(L, 1);
  if (s->kind != K_UNIX) return orch__failf(L, "EINVAL", "peer_cred: not a unix socket");
  struct ucred cr;
  socklen_t len = sizeof cr;
  if (getsockopt(s->fdnum, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
    return orch__fail(L, "peer_cred", errno);
  orch__push_ucred(L, &cr);
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
    orch__close_fd(ep);
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
    orch__close_fd(fd);
    return r;
  }
  flags &= ORCH_STREAM_READ | ORCH_STREAM_WRITE;
  flags = flags ? (flags & acc) : acc;
  orch__hstate *st = orch__hstate_get(L);
  if (orch__stream_push_new(L, st, fd, kind, flags, "stream") != 1) {
    lua_pop(L, 3);
    return UV_ENOMEM;
  }
  return 0;
}

int orch__stream_push_pipe(lua_State *L, int fd, int flags) {
  orch__hstate *st = orch__hstate_get(L);
  if (orch__stream_push_new(L, st, fd, K_PIPE, flags & (ORCH_STREAM_READ | ORCH_STREAM_WRITE), "stream") != 1) {
    lua_pop(L, 3);
    return UV_ENOMEM;
  }
  return 0;
}

int orch__stream_fd(lua_State *L, int idx) {
  Stream *u = luaL_testudata(L, idx, STREAM_MT);
  if (!u || !u->s || u->s->o.closing) return -1;
  return u->s->fdnum;
}

/* ------------------------------------------------------------------ inherited fds */

/* The fds this process image was given across exec (open, not close-on-exec
 * when the first runtime was made, before any Lua ran). Every fd orch or
 * libuv made itself is close-on-exec (the loop's epoll fd, its wake-up pipes, libuv's
 * signal lock pipe, every stream): turned into a second stream and closed,
 * one of those would break the loop or another object for good. Process-wide,
 * like the fd table. */
typedef orch__inherited_fd inherited_fd;
static inherited_fd *inherited_fds;   /* with the file each one was then */
static int ninherited = -1;

void orch__fd_note_inherited(void) {
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
    struct stat st;
    if (fl < 0 || (fl & FD_CLOEXEC) || fstat((int)fd, &st) < 0) continue;
    if (ninherited == cap) {
      inherited_fd *n = realloc(inherited_fds, (size_t)(cap = cap ? cap * 2 : 8) * sizeof *n);
      if (!n) break;
      inherited_fds = n;
    }
    inherited_fds[ninherited++] = (inherited_fd){ (int)fd, st.st_dev, st.st_ino };
  }
  closedir(d);
}

int orch__inherited_fds(const orch__inherited_fd **list) {
  orch__fd_note_inherited();
  *list = inherited_fds;
  return ninherited;
}

static pthread_mutex_t owned_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *owned;     /* a byte per descriptor number */
static size_t nowned;

void orch__fd_own(int fd) {
  if (fd < 0) return;
  pthread_mutex_lock(&owned_lock);
  if ((size_t)fd >= nowned) {
    size_t n = nowned ? nowned : 64;
    while (n <= (size_t)fd) n *= 2;
    unsigned char *o = realloc(owned, n);
    if (o) {
      memset(o + nowned, 0, n - nowned);
      owned = o;
      nowned = n;
    }
  }
  if ((size_t)fd < nowned) owned[fd] = 1;
  pthread_mutex_unlock(&owned_lock);
}

int orch__fd_disown(int fd) {
  int was = 0;
  pthread_mutex_lock(&owned_lock);
  if (fd >= 0 && (size_t)fd < nowned && owned[fd]) {
    owned[fd] = 0;
    was = 1;
  }
  pthread_mutex_unlock(&owned_lock);
  return was || orch__fd_take_inherited(fd);
}

int orch__fd_take_inherited(int fd) {
  for (int i = 0; i < ninherited; i++)
    if (inherited_fds[i].fd == fd) {
      /* Still the file inherited: a number closed since (by a library, or
       * the host program) may have been reused by libuv or an object. */
      struct stat st;
      int same = fstat(fd, &st) == 0 && st.st_dev == inherited_fds[i].dev && st.st_ino == inherited_fds[i].ino;
      inherited_fds[i] = inherited_fds[--ninherited];
      return same;
    }
  return 0;
}

/* orch.fdopen(fd): an orch.Stream on a pipe, FIFO or stream socket this
 * process inherited across exec (a log pipe `orch ctl reexec` hands over,
 * a socket a parent passed). The stream owns the fd from then on. */
int orch__stream_fdopen(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 3 && fd <= 0x7fffffff, 1, "file descriptor >= 3 expected");
  orch__check_nargs(L, 1);
  struct stat st;
  if (fstat((int)fd, &st) < 0) return orch__fail(L, "fdopen", errno);
  if (!S_ISSOCK(st.st_mode) && !S_ISFIFO(st.st_mode))
    return orch__failf(L, "EINVAL", "fdopen: fd %d is not a pipe or a socket", (int)fd);
  if (!orch__fd_take_inherited((int)fd))
    return orch__failf(L, "EBADF", "fdopen: fd %d was not inherited across exec (or is taken)", (int)fd);
  int r = orch__stream_push_fd(L, (int)fd, 0);
  if (r < 0) return orch__fail_uv(L, "fdopen", r);
  return 1;
}

/* ------------------------------------------------------------------ orch.pipe */

int orch__stream_pipe(lua_State *L) {
  orch__check_nargs(L, 0);
  orch__hstate *st = orch__hstate_get(L);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return orch__fail(L, "pipe", errno);
  if (orch__stream_push_new(L, st, fds[0], K_PIPE, ORCH_STREAM_READ, "pipe") != 1) {
    orch__close_fd(fds[1]);
    return 3;
  }
  if (orch__stream_push_new(L, st, fds[1], K_PIPE, ORCH_STREAM_WRITE, "pipe") != 1) {
    orch__hobj_close_ud(lua_touserdata(L, -4));   /* the read end, below the error */
    return 3;
  }
  return 2;
}

/* ------------------------------------------------------------------ the class */

void orch__stream_register(lua_State *L) {
  orch__fd_note_inherited();
  static const luaL_Reg methods[] = {
    {"read", stream_read}, {"read_line", stream_read_line}, {"read_all", stream_read_all},
    {"lines", stream_lines}, {"write", stream_write}, {"shutdown", stream_shutdown},
    {"kind", stream_kind}, {"peer_cred", stream_peer_cred}, {"on_read", stream_on_read},
    {NULL, NULL}
  };
  orch__hclass_new(L, &orch__stream_class, methods, NULL);
  lua_pop(L, 1);
}
