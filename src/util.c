/*
 * util.c: the error contract, option tables, signal names and class
 * helpers shared by every binding. Nothing here blocks or keeps state.
 */
#include "util.h"
#include "runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

const char *orch__errname(int err) {
  static __thread char buf[16];
  const char *n = strerrorname_np(err);
  if (n) return n;
  snprintf(buf, sizeof buf, "E%d", err);
  return buf;
}

int orch__fail(lua_State *L, const char *op, int err) {
  char msg[128];
  lua_pushnil(L);
  /* strerror's "No such file or directory" reads better lower-cased. */
  snprintf(msg, sizeof msg, "%s", strerror(err));
  if (msg[0] >= 'A' && msg[0] <= 'Z' && !(msg[1] >= 'A' && msg[1] <= 'Z')) msg[0] = (char)(msg[0] - 'A' + 'a');
  lua_pushfstring(L, "%s: %s", op, msg);
  lua_pushstring(L, orch__errname(err));
  return 3;
}

int orch__fail_uv(lua_State *L, const char *op, int uverr) {
  /* libuv codes are negated errnos on Unix, except its getaddrinfo codes
   * (UV_EAI_*, -3000 and below) and its own extras (UV_EOF, ...). */
  if (uverr < 0 && uverr > -3000) return orch__fail(L, op, -uverr);
  lua_pushnil(L);
  lua_pushfstring(L, "%s: %s", op, uv_strerror(uverr));
  lua_pushstring(L, uv_err_name(uverr));
  return 3;
}

int orch__failf(lua_State *L, const char *ename, const char *fmt, ...) {
  va_list ap;
  lua_pushnil(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_pushstring(L, ename);
  return 3;
}

int orch__fail_errno(lua_State *L, int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  const char *op = lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  orch__fail(L, op, err);
  lua_remove(L, -4);                       /* the formatted op */
  return 3;
}

int orch__opt_mode(lua_State *L, int idx, const char *key, int def, int max, int *has) {
  idx = lua_absindex(L, idx);
  int t = lua_getfield(L, idx, key);
  lua_Integer v = def;
  if (has) *has = t != LUA_TNIL;
  if (t != LUA_TNIL) {
    int isint;
    v = lua_tointegerx(L, -1, &isint);
    if (t != LUA_TNUMBER)
      orch__opt_error(L, idx, key, lua_pushfstring(L, "integer expected, got %s", luaL_typename(L, -1)));
    if (!isint || v < 0 || v > max) {
      char msg[48];
      snprintf(msg, sizeof msg, "permission bits (0 to 0o%o) expected", (unsigned)max);
      orch__opt_error(L, idx, key, msg);
    }
  }
  lua_pop(L, 1);
  return (int)v;
}

int orch__opt_error(lua_State *L, int idx, const char *key, const char *msg) {
  return luaL_argerror(L, idx, lua_pushfstring(L, "option '%s': %s", key, msg));
}

void orch__check_options(lua_State *L, int idx, const char *const allowed[]) {
  idx = lua_absindex(L, idx);
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -1);
      int ok = 0;
      for (int i = 0; allowed[i]; i++)
        if (strcmp(allowed[i], k) == 0) { ok = 1; break; }
      if (!ok) luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", k));
    }
  }
}

/* Pushes option `key` of the table at the absolute index idx and returns
 * whether it is present; raises "<tname> expected, got ..." when it is
 * present with another type than `type`. */
static int opt_get(lua_State *L, int idx, const char *key, int type, const char *tname) {
  int t = lua_getfield(L, idx, key);
  if (t != LUA_TNIL && t != type)
    orch__opt_error(L, idx, key, lua_pushfstring(L, "%s expected, got %s", tname, luaL_typename(L, -1)));
  return t != LUA_TNIL;
}

lua_Integer orch__opt_integer(lua_State *L, int idx, const char *key, lua_Integer def) {
  lua_Integer v = def;
  idx = lua_absindex(L, idx);
  int t = lua_getfield(L, idx, key);
  if (t != LUA_TNIL) {
    int isnum;
    v = lua_tointegerx(L, -1, &isnum);
    if (!isnum) {
      if (t == LUA_TNUMBER) orch__opt_error(L, idx, key, "number has no integer representation");
      orch__opt_error(L, idx, key, lua_pushfstring(L, "integer expected, got %s", luaL_typename(L, -1)));
    }
  }
  lua_pop(L, 1);
  return v;
}

lua_Number orch__opt_number(lua_State *L, int idx, const char *key, lua_Number def) {
  idx = lua_absindex(L, idx);
  lua_Number v = opt_get(L, idx, key, LUA_TNUMBER, "number") ? lua_tonumber(L, -1) : def;
  lua_pop(L, 1);
  return v;
}

int orch__opt_boolean(lua_State *L, int idx, const char *key, int def) {
  idx = lua_absindex(L, idx);
  int v = opt_get(L, idx, key, LUA_TBOOLEAN, "boolean") ? lua_toboolean(L, -1) : def;
  lua_pop(L, 1);
  return v;
}

/* The string stays valid while the option table holds it. */
const char *orch__opt_string(lua_State *L, int idx, const char *key, const char *def) {
  idx = lua_absindex(L, idx);
  size_t len = 0;
  const char *v = opt_get(L, idx, key, LUA_TSTRING, "string") ? lua_tolstring(L, -1, &len) : def;
  lua_pop(L, 1);
  if (v != def && strlen(v) != len) orch__opt_error(L, idx, key, "string contains a zero byte");
  return v;
}

static const struct { const char *name; int num; } signals[] = {
  {"HUP", SIGHUP}, {"INT", SIGINT}, {"QUIT", SIGQUIT}, {"ILL", SIGILL},
  {"TRAP", SIGTRAP}, {"ABRT", SIGABRT}, {"BUS", SIGBUS}, {"FPE", SIGFPE},
  {"KILL", SIGKILL}, {"USR1", SIGUSR1}, {"SEGV", SIGSEGV}, {"USR2", SIGUSR2},
  {"PIPE", SIGPIPE}, {"ALRM", SIGALRM}, {"TERM", SIGTERM}, {"STKFLT", SIGSTKFLT},
  {"CHLD", SIGCHLD}, {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"TSTP", SIGTSTP},
  {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU}, {"URG", SIGURG}, {"XCPU", SIGXCPU},
  {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH},
  {"IO", SIGIO}, {"PWR", SIGPWR}, {"SYS", SIGSYS},
  {"IOT", SIGABRT}, {"CLD", SIGCHLD}, {"POLL", SIGIO},   /* aliases: looked up, never printed */
  {NULL, 0}
};

int orch__signum(const char *name) {
  if (strncasecmp(name, "SIG", 3) == 0) name += 3;
  for (int i = 0; signals[i].name; i++)
    if (strcasecmp(signals[i].name, name) == 0) return signals[i].num;
  /* RTMIN, RTMIN+n, RTMAX-n */
  if (strncasecmp(name, "RTMIN", 5) == 0 || strncasecmp(name, "RTMAX", 5) == 0) {
    int base = (name[4] == 'N' || name[4] == 'n') ? SIGRTMIN : SIGRTMAX;
    const char *p = name + 5;
    int off = 0;
    if (*p == '+' || *p == '-') {
      char *end;
      long n = strtol(p + 1, &end, 10);
      if (*end || end == p + 1 || n < 0 || n > 64) return -1;
      off = (*p == '+') ? (int)n : -(int)n;
    } else if (*p) return -1;
    int s = base + off;
    return (s >= SIGRTMIN && s <= SIGRTMAX) ? s : -1;
  }
  return -1;
}

const char *orch__signame(int sig) {
  static __thread char buf[16];
  for (int i = 0; signals[i].name; i++)
    if (signals[i].num == sig) return signals[i].name;
  if (sig >= SIGRTMIN && sig <= SIGRTMAX) {
    if (sig == SIGRTMIN) return "RTMIN";
    snprintf(buf, sizeof buf, "RTMIN+%d", sig - SIGRTMIN);
    return buf;
  }
  return NULL;
}

void orch__check_nargs(lua_State *L, int max) {
  if (lua_gettop(L) > max) luaL_argerror(L, max + 1, "no value expected");
}

int orch__checkpid(lua_State *L, int idx, int flags) {
  if (lua_type(L, idx) != LUA_TNUMBER) return luaL_typeerror(L, idx, "pid");
  int isint;
  lua_Integer n = lua_tointegerx(L, idx, &isint);
  if (isint && n <= 0 && (flags & ORCH__PID_ANY)) return 0;
  if (!isint || n <= 0 || n > 0x7fffffff) return luaL_argerror(L, idx, "invalid pid");
  return (int)n;
}

int orch__checksignal(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TNUMBER) {
    int isint;
    lua_Integer n = lua_tointegerx(L, idx, &isint);
    if (!isint || n < 0 || n > SIGRTMAX)
      return luaL_argerror(L, idx, "invalid signal number");
    return (int)n;
  }
  if (lua_type(L, idx) == LUA_TSTRING) {
    orch__checkpath(L, idx, NULL);
    int s = orch__signum(lua_tostring(L, idx));
    if (s < 0) return luaL_argerror(L, idx, lua_pushfstring(L, "unknown signal '%s'", lua_tostring(L, idx)));
    return s;
  }
  return luaL_typeerror(L, idx, "signal name or number");
}

int orch__optsignal(lua_State *L, int idx, int def) {
  return lua_isnoneornil(L, idx) ? def : orch__checksignal(L, idx);
}

void orch__newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                    const luaL_Reg *meta) {
  luaL_newmetatable(L, name);
  if (meta) luaL_setfuncs(L, meta, 0);
  if (methods) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
}

int orch__closed_error(lua_State *L, const char *name) {
  return luaL_error(L, "attempt to use a closed %s", name);
}

double orch__checkseconds(lua_State *L, int idx) {
  lua_Number s = luaL_checknumber(L, idx);
  if (!(s >= 0) || isinf(s)) luaL_argerror(L, idx, "seconds must be a finite number >= 0");
  return s;
}

double orch__optseconds(lua_State *L, int idx, double def) {
  return lua_isnoneornil(L, idx) ? def : orch__checkseconds(L, idx);
}

unsigned long long orch__mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

/* The monotonic clock as of the last tick (HZ: 4 ms here), never ahead of
 * orch__mono_ns: a vDSO read of a stored value, about 5 ns instead of 25. */
unsigned long long orch__mono_coarse_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

double orch__wall(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int orch__fd_renumber(int *fresh, int *inherited) {
  if (dup3(*fresh, *inherited, O_CLOEXEC) < 0) return -errno;
  close(*fresh);
  *fresh = *inherited;
  *inherited = -1;
  return 0;
}

int orch__cloexec(int fd) {
  int fl = fcntl(fd, F_GETFD);
  if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0) return -errno;
  return 0;
}

void orch__check_nonul(lua_State *L, int idx, const char *s, size_t len, const char *what) {
  if (strlen(s) == len) return;
  if (what) luaL_argerror(L, idx, lua_pushfstring(L, "%s contains a zero byte", what));
  luaL_argerror(L, idx, "string contains a zero byte");
}

const char *orch__checkpath(lua_State *L, int idx, size_t *len) {
  size_t n;
  const char *s = luaL_checklstring(L, idx, &n);
  orch__check_nonul(L, idx, s, n, NULL);
  if (len) *len = n;
  return s;
}

const char *orch__optpath(lua_State *L, int idx, const char *def) {
  if (lua_isnoneornil(L, idx)) return def;
  return orch__checkpath(L, idx, NULL);
}

int orch__open_path(const char *path, int flags, unsigned mode) {
  int fd;
  do fd = open(path, flags | O_NONBLOCK | O_CLOEXEC, (mode_t)mode); while (fd < 0 && errno == EINTR);
  if (fd < 0) return -errno;
  if (!(flags & O_NONBLOCK)) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
      int e = errno;
      close(fd);
      return -e;
    }
  }
  return fd;
}

int orch__fail_open(lua_State *L, const char *op, const char *path, int err) {
  struct stat sb;
  if (err == ENXIO && stat(path, &sb) == 0 && S_ISFIFO(sb.st_mode))
    return orch__failf(L, "ENXIO", "%s: cannot open %s: no process has the FIFO open for reading", op, path);
  return orch__fail_errno(L, err, "%s: cannot open %s", op, path);
}

ssize_t orch__read_small(int dirfd, const char *name, char *buf, size_t size) {
  /* Opened and closed here: at EMFILE with a spare fd, taken back after. */
  int fd = orch__fd_open_at(dirfd, name, O_RDONLY | O_CLOEXEC, 0, NULL);
  if (fd < 0) {
    int e = errno;
    orch__fd_spare_settle();
    return -e;
  }
  size_t n = 0;
  while (n + 1 < size) {
    ssize_t k = read(fd, buf + n, size - 1 - n);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) { int e = errno; close(fd); orch__fd_spare_settle(); return -e; }
    n += (size_t)k;
    /* A seq file returns everything up to the buffer's size, less only at
     * its end: a short read into a small buffer is the end (one read, not
     * two). A full buffer reads on. */
    if (k == 0 || (n + 1 < size && size <= 2048)) break;
  }
  close(fd);
  orch__fd_spare_settle();
  buf[n] = 0;
  return (ssize_t)n;
}
