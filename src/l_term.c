/*
 * l_term.c: orch.term, standard input for `orch repl`, `orch attach` and
 * `orch top` (raw mode, keys as bytes, the window's size).
 * Lines are read through the loop so tasks and timers keep running while a
 * prompt waits: on a terminal with libedit's readline callback interface
 * (line editing, history), driven by a uv_poll_t on fd 0; on a pipe or a
 * socket by the same poll and plain read(2); on a regular file or a device
 * that cannot be polled by uv_fs_read on the threadpool. Ctrl-C is a
 * uv_signal_t on SIGINT (the handler never touches Lua): it ends the
 * current readline with EINTR and wakes orch.term.wait_interrupt().
 *
 * Ownership: one term_state per runtime, malloc'ed at the first call,
 * kept in the runtime's module slot; it owns its uv handles (each malloc'ed,
 * freed in its close callback) and the in-flight file read. The close hook
 * stops everything, gives the terminal back its cooked mode and frees the
 * state once the last handle has closed. libedit has process-wide state:
 * only one runtime at a time may edit lines.
 *
 * libedit (and its libtinfo, libbsd, libmd) is not linked: most orch
 * processes never show a prompt, and mapping it costs every one of them.
 * It is dlopen()ed by soname (from the build) on the first call that edits
 * or keeps history, its symbols resolved into `ed`, and kept loaded for the
 * life of the process. When it cannot be loaded, orch behaves as if built
 * without it: plain lines, ENOSYS from the history functions.
 *
 * What may block: reading the history file (a small local file); reads of
 * fd 0 happen only after the poll reported it readable, so they do not.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#ifdef ORCH_HAVE_EDITLINE
#include <dlfcn.h>
#include <editline/readline.h>   /* prototypes only: nothing is linked */
#ifndef ORCH_EDITLINE_SONAME
#error "ORCH_EDITLINE_SONAME (libedit's soname) must come from the build"
#endif
#endif

#include "runtime.h"
#include "util.h"

#define MAX_LINE (1 << 20)      /* a longer line is refused, not buffered */
#define READ_CHUNK 65536

enum { M_NONE, M_EDIT, M_POLL, M_FILE };

typedef struct term_state {
  uv_loop_t *loop;
  int mode;
  int handles;              /* open uv handles + in-flight requests */
  int closing;              /* the runtime is being torn down */
  uv_poll_t *poll;
  int polling;
  uv_fs_t *req;             /* in-flight read in M_FILE mode */
  char *req_buf;
  uv_signal_t *sigint;
  uv_signal_t *sigwinch;
  lua_State *reader;        /* the task waiting in readline */
  lua_State *waiter;        /* the task waiting in wait_interrupt */
  char *buf;                /* M_POLL/M_FILE input not yet returned */
  size_t len, cap;
  int eof;
  int skipping;             /* dropping the rest of an over-long line */
  int read_err;             /* pending read error (errno) */
  int editing;              /* libedit's handler is installed */
  char *edit_line;          /* the line libedit handed over */
  int edit_done;            /* 1: a line, 2: end of file */
  int want_bytes;           /* the reader asked for bytes (read), not a line */
  int raw;                  /* fd 0 is in raw mode; `cooked` restores it */
  struct termios cooked;
} term_state;

#ifdef ORCH_HAVE_EDITLINE
static term_state *edit_owner;  /* the runtime whose lines libedit edits */

/* Every libedit symbol this file uses. Each member of `ed` is a pointer to
 * the declaration's type in <editline/readline.h>, so calls are checked
 * against libedit's prototypes; a variable is reached through its pointer
 * (*ed.rl_instream = stdin). Only the loop thread touches these. */
#define EDIT_SYMBOLS(X) \
  X(rl_callback_handler_install) X(rl_callback_handler_remove) \
  X(rl_callback_read_char) X(rl_initialize) X(rl_resize_terminal) \
  X(rl_forced_update_display) X(stifle_history) X(add_history) \
  X(read_history) X(write_history) \
  X(rl_catch_signals) X(rl_catch_sigwinch) X(rl_readline_name) \
  X(rl_instream) X(rl_outstream)

#define EDIT_MEMBER(name) __typeof__(name) *name;
typedef struct edit_syms { EDIT_SYMBOLS(EDIT_MEMBER) } edit_syms;
#undef EDIT_MEMBER

static edit_syms ed;
static int edit_ready;          /* 0: not tried, 1: loaded, -1: unavailable */
static char edit_error[256];    /* why it is unavailable (dlerror) */
#endif

/* ------------------------------------------------------------ lifetime */

static void maybe_free(term_state *st) {
  if (st->closing && st->handles == 0) {
    free(st->buf);
    free(st->req_buf);        /* M_FILE's read buffer, kept between reads */
    free(st);
  }
}

static void handle_closed(uv_handle_t *h) {
  term_state *st = h->data;
  free(h);
  st->handles--;
  maybe_free(st);
}

static void close_handle(term_state *st, uv_handle_t *h) {
  if (h && !uv_is_closing(h)) uv_close(h, handle_closed);
}

static void edit_stop(term_state *st) {
#ifdef ORCH_HAVE_EDITLINE
  if (st->editing) {
    st->editing = 0;
    ed.rl_callback_handler_remove();  /* back to cooked mode */
  }
  if (st->edit_line) { free(st->edit_line); st->edit_line = NULL; }
  st->edit_done = 0;
#else
  (void)st;
#endif
}

static void raw_off(term_state *st) {
  if (!st->raw) return;
  st->raw = 0;
  int r;
  do r = tcsetattr(0, TCSADRAIN, &st->cooked); while (r < 0 && errno == EINTR);
}

static void close_hook(orch_runtime *rt, void *data) {
  term_state *st = data;
  *orch__slot(rt, ORCH__SLOT_TERM) = NULL;
  st->reader = st->waiter = NULL;
  edit_stop(st);
  raw_off(st);            /* the terminal goes back as it was found */
#ifdef ORCH_HAVE_EDITLINE
  if (edit_owner == st) edit_owner = NULL;
#endif
  st->closing = 1;
  close_handle(st, (uv_handle_t *)st->poll);
  close_handle(st, (uv_handle_t *)st->sigint);
  close_handle(st, (uv_handle_t *)st->sigwinch);
  st->poll = NULL;
  st->sigint = st->sigwinch = NULL;
  /* An in-flight file read finishes on its own and then frees the state. */
  maybe_free(st);
}

static void fork_hook(orch_runtime *rt, void *data) {
  /* The child's tasks are gone; so are its waits. The terminal stays as
   * the parent left it: the parent still owns it. */
  term_state *st = data;
  st->reader = st->waiter = NULL;
  st->polling = 0;
  st->raw = 0;
#ifdef ORCH_HAVE_EDITLINE
  st->editing = 0;
  if (edit_owner == st) edit_owner = NULL;
#endif
}

static term_state *get_state(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  void **slot = orch__slot(rt, ORCH__SLOT_TERM);
  if (*slot) return *slot;
  term_state *st = calloc(1, sizeof *st);
  if (!st) { luaL_error(L, "orch.term: out of memory"); return NULL; }
  st->loop = orch_loop(rt);
  *slot = st;
  orch__on_close(rt, close_hook, st);
  orch__on_fork_child(rt, fork_hook, st);
  return st;
}

/* ------------------------------------------------------------ waking */

static void stop_poll(term_state *st) {
  if (st->poll && st->polling) uv_poll_stop(st->poll);
  st->polling = 0;
}

/* Ends the readline wait with the n values pushed on the reader's stack. */
static void wake_reader(term_state *st, int n) {
  lua_State *co = st->reader;
  st->reader = NULL;
  stop_poll(st);
  orch__wake(co, n);
}

/* [-0,+3] The readline result at end of input. */
static int push_eof(lua_State *L) {
  return orch__failf(L, "EOF", "readline: end of file");
}

/* ------------------------------------------------------------ line buffer */

/* Pushes the results of a readline answerable from the buffer onto L and
 * returns their count, or returns 0 when more input is needed. */
static int buffered_result(lua_State *L, term_state *st) {
  for (;;) {
    char *nl = st->len ? memchr(st->buf, '\n', st->len) : NULL;
    if (st->skipping) {
      if (!nl) { st->len = 0; break; }
      size_t used = (size_t)(nl - st->buf) + 1;
      memmove(st->buf, st->buf + used, st->len - used);
      st->len -= used;
      st->skipping = 0;
      continue;
    }
    if (nl) {
      size_t n = (size_t)(nl - st->buf);
      size_t used = n + 1;
      if (n > 0 && st->buf[n - 1] == '\r') n--;
      lua_pushlstring(L, st->buf, n);
      memmove(st->buf, st->buf + used, st->len - used);
      st->len -= used;
      return 1;
    }
    break;
  }
  if (st->len > MAX_LINE) {
    st->len = 0;
    st->skipping = 1;
    return orch__failf(L, "E2BIG", "readline: line longer than %d bytes", MAX_LINE);
  }
  if (st->read_err) {
    int e = st->read_err;
    st->read_err = 0;
    return orch__fail(L, "readline", e);
  }
  if (st->eof) {
    if (st->len > 0 && !st->skipping) {
      lua_pushlstring(L, st->buf, st->len);
      st->len = 0;
      return 1;
    }
    st->len = 0;
    return push_eof(L);
  }
  return 0;
}

/* Pushes what orch.term.read answers from the buffer (every byte in it, an
 * error, or the end of input) and returns the count, or 0 when more input
 * is needed. */
static int bytes_result(lua_State *L, term_state *st) {
  if (st->len > 0) {
    lua_pushlstring(L, st->buf, st->len);
    st->len = 0;
    st->skipping = 0;
    return 1;
  }
  if (st->read_err) {
    int e = st->read_err;
    st->read_err = 0;
    return orch__fail(L, "read", e);
  }
  if (st->eof) { lua_pushnil(L); return 1; }
  return 0;
}

static void deliver(term_state *st) {
  if (!st->reader) return;
  int n = st->want_bytes ? bytes_result(st->reader, st) : buffered_result(st->reader, st);
  if (n > 0) wake_reader(st, n);
}

static int append(term_state *st, const char *s, size_t n) {
  if (st->skipping) {
    const char *nl = memchr(s, '\n', n);
    if (!nl) return 0;
    st->skipping = 0;
    n -= (size_t)(nl - s) + 1;
    s = nl + 1;
  }
  if (st->len + n > st->cap) {
    size_t cap = st->cap ? st->cap : 4096;
    while (cap < st->len + n) cap *= 2;
    char *b = realloc(st->buf, cap);
    if (!b) return ENOMEM;
    st->buf = b;
    st->cap = cap;
  }
  memcpy(st->buf + st->len, s, n);
  st->len += n;
  return 0;
}

/* ------------------------------------------------------------ libedit */

#ifdef ORCH_HAVE_EDITLINE
static void edit_linefunc(char *line) {
  term_state *st = edit_owner;
  if (!st) { free(line); return; }
  st->edit_line = line;         /* NULL at end of file */
  st->edit_done = line ? 1 : 2;
}

static int edit_unavailable(void *lib, const char *what) {
  const char *e = dlerror();
  snprintf(edit_error, sizeof edit_error, "%s", e ? e : what);
  if (lib) dlclose(lib);
  edit_ready = -1;
  return 0;
}

/* Loads and initialises libedit, once per process. Returns 1 when it is
 * ready; 0 when it is not (and will not be), the reason in edit_error. */
static int edit_init(void) {
  if (edit_ready) return edit_ready > 0;
  dlerror();
  void *lib = dlopen(ORCH_EDITLINE_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (!lib) return edit_unavailable(NULL, ORCH_EDITLINE_SONAME ": cannot be loaded");
  /* All or nothing: `ed` is set only once every symbol resolved. */
  edit_syms syms;
#define EDIT_RESOLVE(name) \
  if (!(syms.name = dlsym(lib, #name))) \
    return edit_unavailable(lib, ORCH_EDITLINE_SONAME ": no symbol " #name);
  EDIT_SYMBOLS(EDIT_RESOLVE)
#undef EDIT_RESOLVE
  ed = syms;
  edit_ready = 1;
  /* libuv owns the signals: libedit must not install handlers of its own. */
  *ed.rl_catch_signals = 0;
  *ed.rl_catch_sigwinch = 0;
  *ed.rl_readline_name = "orch";
  *ed.rl_instream = stdin;
  *ed.rl_outstream = stdout;
  ed.rl_initialize();
  ed.stifle_history(1000);
  return 1;
}

static void edit_read(term_state *st) {
  ed.rl_callback_read_char();
  if (!st->edit_done) return;
  char *line = st->edit_line;
  int done = st->edit_done;
  st->edit_line = NULL;
  st->edit_done = 0;
  st->editing = 0;
  ed.rl_callback_handler_remove();
  if (!st->reader) { free(line); return; }
  if (done == 2) {
    /* libedit leaves the cursor after the prompt. */
    fputc('\n', stdout);
    fflush(stdout);
    wake_reader(st, push_eof(st->reader));
    return;
  }
  lua_pushstring(st->reader, line);
  free(line);
  wake_reader(st, 1);
}
#endif

/* ------------------------------------------------------------ input */

static void poll_cb(uv_poll_t *h, int status, int events) {
  term_state *st = h->data;
  if (status < 0) {
    if (st->reader)
      wake_reader(st, orch__failf(st->reader, uv_err_name(status), "readline: cannot poll standard input"));
    stop_poll(st);
    return;
  }
#ifdef ORCH_HAVE_EDITLINE
  if (st->mode == M_EDIT) {
    if (st->editing) edit_read(st);
    else stop_poll(st);
    return;
  }
#endif
  char tmp[READ_CHUNK];
  ssize_t n;
  do n = read(0, tmp, sizeof tmp); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    st->read_err = errno;
  } else if (n == 0) {
    st->eof = 1;
  } else {
    int e = append(st, tmp, (size_t)n);
    if (e) st->read_err = e;
  }
  deliver(st);
  /* Nobody waits any more: stop until the next readline. */
  if (!st->reader) stop_poll(st);
}

static void file_read_start(term_state *st);

static void file_read_cb(uv_fs_t *req) {
  term_state *st = req->data;
  ssize_t n = req->result;
  uv_fs_req_cleanup(req);
  free(req);
  st->req = NULL;
  st->handles--;
  if (st->closing) {
    free(st->req_buf);
    st->req_buf = NULL;
    maybe_free(st);
    return;
  }
  if (n < 0) st->read_err = (int)-n;
  else if (n == 0) st->eof = 1;
  else {
    int e = append(st, st->req_buf, (size_t)n);
    if (e) st->read_err = e;
  }
  deliver(st);
  if (st->reader) file_read_start(st);
}

static void file_read_start(term_state *st) {
  if (st->req || st->eof) return;
  if (!st->req_buf && !(st->req_buf = malloc(READ_CHUNK))) { st->read_err = ENOMEM; return; }
  uv_fs_t *req = malloc(sizeof *req);
  if (!req) { st->read_err = ENOMEM; return; }
  req->data = st;
  uv_buf_t b = uv_buf_init(st->req_buf, READ_CHUNK);
  int r = orch__threadpool_start();
  if (r < 0) { free(req); st->read_err = -r; return; }
  r = uv_fs_read(st->loop, req, 0, &b, 1, -1, file_read_cb);
  if (r < 0) { free(req); st->read_err = -r; return; }
  st->req = req;
  st->handles++;
}

static int poll_start(term_state *st) {
  if (st->polling) return 0;
  int r = uv_poll_start(st->poll, UV_READABLE, poll_cb);
  if (r == 0) st->polling = 1;
  return r;
}

/* Chooses how fd 0 is read, once (line editing only when allowed: a raw
 * reader wants the keys themselves). */
static int choose_mode(term_state *st, int allow_edit) {
  if (st->mode != M_NONE) return 0;
  int tty = isatty(0);
  int flags = fcntl(0, F_GETFL);
  if (flags < 0) return -errno;
  uv_poll_t *p = malloc(sizeof *p);
  if (!p) return UV_ENOMEM;
  int r = uv_poll_init(st->loop, p, 0);
  if (r < 0) {
    free(p);
    /* Regular files (and devices epoll refuses) are read on the pool. */
    if (r == UV_EPERM) { st->mode = M_FILE; return 0; }
    return r;
  }
  /* uv_poll_init made fd 0 non-blocking, which would leak to the shell
   * sharing this file description: reads only happen after readiness, so
   * the original flags are fine. */
  fcntl(0, F_SETFL, flags);
  p->data = st;
  st->poll = p;
  st->handles++;
  st->mode = M_POLL;
#ifdef ORCH_HAVE_EDITLINE
  const char *noedit = getenv("ORCH_NO_EDITLINE");
  if (tty && allow_edit && !(noedit && *noedit)) {
    if (edit_init()) {
      st->mode = M_EDIT;
    } else {
      /* Said once per process, on the terminal that expected editing. */
      static int told;
      if (!told) {
        told = 1;
        fprintf(stderr, "orch: no line editing: %s\n", edit_error);
      }
    }
  }
#else
  (void)tty;
  (void)allow_edit;
#endif
  return 0;
}

/* ------------------------------------------------------------ signals */

static void sigint_cb(uv_signal_t *h, int signum) {
  term_state *st = h->data;
  if (st->reader) {
    if (st->editing) {
      edit_stop(st);
      fputs("^C\n", stdout);
      fflush(stdout);
    }
    wake_reader(st, orch__failf(st->reader, "EINTR", "readline: interrupted"));
  }
  if (st->waiter) {
    lua_State *co = st->waiter;
    st->waiter = NULL;
    lua_pushboolean(co, 1);
    orch__wake(co, 1);
  }
}

#ifdef ORCH_HAVE_EDITLINE
static void sigwinch_cb(uv_signal_t *h, int signum) {
  term_state *st = h->data;
  if (st->editing) ed.rl_resize_terminal();
}
#endif

static int start_signal(term_state *st, uv_signal_t **slot, int signum, uv_signal_cb cb) {
  if (*slot) return 0;
  uv_signal_t *s = malloc(sizeof *s);
  if (!s) return UV_ENOMEM;
  uv_signal_init(st->loop, s);
  s->data = st;
  st->handles++;
  int r = uv_signal_start(s, cb, signum);
  if (r < 0) { uv_close((uv_handle_t *)s, handle_closed); return r; }
  /* Catching Ctrl-C must not keep an otherwise finished orch alive. */
  uv_unref((uv_handle_t *)s);
  *slot = s;
  return 0;
}

/* ------------------------------------------------------------ bindings */

static void cancel_read(void *data) {
  term_state *st = data;
  st->reader = NULL;
  stop_poll(st);
  edit_stop(st);
}

static void cancel_wait(void *data) {
  term_state *st = data;
  st->waiter = NULL;
}

static int term_readline(lua_State *L) {
  size_t plen;
  const char *prompt = luaL_optlstring(L, 1, "", &plen);
  orch__check_nargs(L, 1);
  orch__check_task(L, "orch.term.readline");
  term_state *st = get_state(L);
  if (st->reader) return luaL_error(L, "orch.term.readline: another task is already reading standard input");
  int r = choose_mode(st, 1);
  if (r < 0) return orch__fail_uv(L, "readline", r);
  r = start_signal(st, &st->sigint, SIGINT, sigint_cb);
  if (r < 0) return orch__fail_uv(L, "readline", r);
#ifdef ORCH_HAVE_EDITLINE
  if (st->mode == M_EDIT) {
    if (edit_owner && edit_owner != st)
      return orch__failf(L, "EBUSY", "readline: another orch runtime is editing lines");
    edit_owner = st;
    start_signal(st, &st->sigwinch, SIGWINCH, sigwinch_cb);
    r = poll_start(st);
    if (r < 0) return orch__fail_uv(L, "readline", r);
    fflush(stdout);
    st->edit_done = 0;
    ed.rl_callback_handler_install(prompt, edit_linefunc);
    st->editing = 1;
    st->reader = L;
    return orch__await(L, -1, "readline", cancel_read, st);
  }
#endif
  st->want_bytes = 0;
  int n = buffered_result(L, st);
  if (n > 0) return n;
  if (plen > 0) { fwrite(prompt, 1, plen, stdout); fflush(stdout); }
  if (st->mode == M_FILE) {
    file_read_start(st);
    if (st->read_err) return buffered_result(L, st);
  } else {
    r = poll_start(st);
    if (r < 0) return orch__fail_uv(L, "readline", r);
  }
  st->reader = L;
  return orch__await(L, -1, "readline", cancel_read, st);
}

/* orch.term.read([timeout]): the bytes standard input has (keys, in raw
 * mode), as they come. */
static int term_read(lua_State *L) {
  double timeout = orch__optseconds(L, 1, -1);
  orch__check_nargs(L, 1);
  orch__check_task(L, "orch.term.read");
  term_state *st = get_state(L);
  if (st->reader) return luaL_error(L, "orch.term.read: another task is already reading standard input");
  int r = choose_mode(st, 0);
  if (r < 0) return orch__fail_uv(L, "read", r);
  if (st->mode == M_EDIT)
    return orch__failf(L, "EBUSY", "read: standard input is read by line editing (orch.term.readline)");
  st->want_bytes = 1;
  int n = bytes_result(L, st);
  if (n > 0) return n;
  if (st->mode == M_FILE) {
    file_read_start(st);
    if (st->read_err) return bytes_result(L, st);
  } else {
    r = poll_start(st);
    if (r < 0) return orch__fail_uv(L, "read", r);
  }
  st->reader = L;
  return orch__await(L, timeout, "read", cancel_read, st);
}

/* orch.term.raw(on): keys one by one, without echo (ISIG stays: Ctrl-C is
 * still SIGINT); off restores the mode found. */
static int term_raw(lua_State *L) {
  luaL_checktype(L, 1, LUA_TBOOLEAN);
  int on = lua_toboolean(L, 1);
  orch__check_nargs(L, 1);
  term_state *st = get_state(L);
  if (!on) {
    raw_off(st);
    lua_pushboolean(L, 1);
    return 1;
  }
  if (st->raw) { lua_pushboolean(L, 1); return 1; }
  if (!isatty(0)) return orch__fail(L, "raw", ENOTTY);
  struct termios t;
  if (tcgetattr(0, &t) < 0) return orch__fail(L, "raw", errno);
  st->cooked = t;
  t.c_lflag &= ~(tcflag_t)(ICANON | ECHO | IEXTEN);
  t.c_iflag &= ~(tcflag_t)(IXON | ICRNL);
  t.c_cc[VMIN] = 1;
  t.c_cc[VTIME] = 0;
  int r;
  do r = tcsetattr(0, TCSADRAIN, &t); while (r < 0 && errno == EINTR);
  if (r < 0) return orch__fail(L, "raw", errno);
  st->raw = 1;
  lua_pushboolean(L, 1);
  return 1;
}

/* orch.term.size([fd]): rows, columns of the terminal on fd (default 1). */
static int term_size(lua_State *L) {
  lua_Integer fd = luaL_optinteger(L, 1, 1);
  orch__check_nargs(L, 1);
  if (fd < 0 || fd > 0x7fffffff) return luaL_argerror(L, 1, "file descriptor expected");
  struct winsize w;
  if (ioctl((int)fd, TIOCGWINSZ, &w) < 0) return orch__fail(L, "size", errno);
  lua_pushinteger(L, w.ws_row);
  lua_pushinteger(L, w.ws_col);
  return 2;
}

static int term_wait_interrupt(lua_State *L) {
  double timeout = orch__optseconds(L, 1, -1);
  orch__check_nargs(L, 1);
  orch__check_task(L, "orch.term.wait_interrupt");
  term_state *st = get_state(L);
  if (st->waiter) return luaL_error(L, "orch.term.wait_interrupt: another task is already waiting");
  int r = start_signal(st, &st->sigint, SIGINT, sigint_cb);
  if (r < 0) return orch__fail_uv(L, "wait_interrupt", r);
  st->waiter = L;
  return orch__await(L, timeout, "wait_interrupt", cancel_wait, st);
}

static int term_write(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  orch__check_nargs(L, 1);
  term_state *st = get_state(L);
#ifdef ORCH_HAVE_EDITLINE
  if (st->editing) {
    /* Erase the prompt line, write, and let libedit draw it again below. */
    fputs("\r\033[K", stdout);
    fwrite(s, 1, n, stdout);
    if (n == 0 || s[n - 1] != '\n') fputc('\n', stdout);
    fflush(stdout);
    ed.rl_forced_update_display();
    fflush(stdout);
    lua_pushboolean(L, 1);
    return 1;
  }
#else
  (void)st;
#endif
  if (fwrite(s, 1, n, stdout) != n || fflush(stdout) != 0) {
    int e = errno;
    clearerr(stdout);
    return orch__fail(L, "write", e ? e : EIO);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int term_isatty(lua_State *L) {
  lua_Integer fd = luaL_optinteger(L, 1, 0);
  luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 1, "file descriptor out of range");
  lua_pushboolean(L, isatty((int)fd));
  return 1;
}

/* [-0,+3 on failure] Whether this runtime may use libedit's history now:
 * returns 0, or pushes the error triple for `op` and returns 3. */
static int history_ready(lua_State *L, const char *op) {
#ifdef ORCH_HAVE_EDITLINE
  term_state *st = get_state(L);
  if (edit_owner && edit_owner != st)
    return orch__failf(L, "EBUSY", "%s: another orch runtime is editing lines", op);
  if (!edit_init()) return orch__failf(L, "ENOSYS", "%s: libedit is unavailable (%s)", op, edit_error);
  return 0;
#else
  return orch__failf(L, "ENOSYS", "%s: orch was built without libedit", op);
#endif
}

static int term_add_history(lua_State *L) {
  const char *line = luaL_checkstring(L, 1);
  int n = history_ready(L, "add_history");
  if (n) return n;
#ifdef ORCH_HAVE_EDITLINE
  if (*line) ed.add_history(line);
#else
  (void)line;
#endif
  lua_pushboolean(L, 1);
  return 1;
}

#ifdef ORCH_HAVE_EDITLINE
/* [-0,+3 on failure] Opens a history file without blocking the loop (a
 * FIFO or a device at the path would: libedit reads and writes it with
 * stdio) and writes "/proc/self/fd/N" to buf for libedit, so it opens the
 * very file checked here. Returns the fd, or -1 after pushing the error. */
static int history_open(lua_State *L, const char *op, const char *path, int flags, char *buf, size_t size) {
  int fd = orch__open_path(path, flags, 0600);
  if (fd < 0) {
    orch__fail_open(L, op, path, -fd);
    return -1;
  }
  struct stat sb;
  int e = fstat(fd, &sb) < 0 ? errno : 0;
  if (e || !S_ISREG(sb.st_mode)) {
    close(fd);
    if (e) orch__fail_errno(L, e, "%s: %s", op, path);
    else orch__failf(L, "EINVAL", "%s: %s: not a regular file", op, path);
    return -1;
  }
  snprintf(buf, size, "/proc/self/fd/%d", fd);
  return fd;
}
#endif

static int term_read_history(lua_State *L) {
  const char *path = orch__checkpath(L, 1, NULL);
  int n = history_ready(L, "read_history");
  if (n) return n;
#ifdef ORCH_HAVE_EDITLINE
  char fdpath[64];
  int fd = history_open(L, "read_history", path, O_RDONLY, fdpath, sizeof fdpath);
  if (fd < 0) return 3;
  /* libedit returns an errno-ish value, or nonzero without setting one. */
  errno = 0;
  int r = ed.read_history(fdpath);
  int e = errno;
  close(fd);
  if (r != 0) return orch__fail(L, "read_history", e ? e : EINVAL);
#else
  (void)path;
#endif
  lua_pushboolean(L, 1);
  return 1;
}

static int term_write_history(lua_State *L) {
  const char *path = orch__checkpath(L, 1, NULL);
  int n = history_ready(L, "write_history");
  if (n) return n;
#ifdef ORCH_HAVE_EDITLINE
  /* History may hold secrets typed at the prompt: create it 0600. */
  char fdpath[64];
  int fd = history_open(L, "write_history", path, O_WRONLY | O_CREAT | O_NOFOLLOW, fdpath, sizeof fdpath);
  if (fd < 0) return 3;
  errno = 0;
  int r = ed.write_history(fdpath);
  int e = errno;
  close(fd);
  if (r != 0) return orch__fail(L, "write_history", e ? e : EIO);
#else
  (void)path;
#endif
  lua_pushboolean(L, 1);
  return 1;
}

int orch__open_term(lua_State *L) {
  static const luaL_Reg fns[] = {
    {"readline", term_readline}, {"wait_interrupt", term_wait_interrupt},
    {"write", term_write}, {"isatty", term_isatty},
    {"read", term_read}, {"raw", term_raw}, {"size", term_size},
    {"add_history", term_add_history}, {"read_history", term_read_history},
    {"write_history", term_write_history}, {NULL, NULL}
  };
  lua_newtable(L);
  luaL_newlib(L, fns);
#ifdef ORCH_HAVE_EDITLINE
  lua_pushboolean(L, 1);
#else
  lua_pushboolean(L, 0);
#endif
  lua_setfield(L, -2, "EDITLINE");
  lua_setfield(L, -2, "term");
  return 1;
}
