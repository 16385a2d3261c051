/*
 * spawn.c: orch.spawn's options made into a spawn (spawn.h): every option
 * checked before anything is allocated (spawn_validate), user and group
 * names looked up, the new program's argv and envp built, the child's fds
 * opened, the cgroup joined, and a failure turned into its error triple;
 * the argv and envp of orch.exec too (orch__exec_args, for l_daemon.c). The
 * request goes to orch__spawn (process.c: the clone and the child's side);
 * the object orch.spawn returns is its binding's (l_proc.c's orch.Process),
 * made through the calls that binding hands over (orch__spawn_object).
 *
 * Ownership: what a spawn allocates or opens before the child exists (argv,
 * envp, the fd list, the child's ends of pipes, opened files) is in a
 * to-be-closed box (an orch.proc.fdbox userdata), so a raise leaks nothing;
 * the box is closed when the call returns (the child has exec'd or failed
 * by then). A pipe's parent end belongs to its orch.Stream once made.
 * orch.spawn_begin's orch.SpawnRequest takes argv and envp over from the
 * box (its child reads them until its exec), with copies of what else the
 * child reads (proc.h's orch__spawn_job and request, cwd, the search path,
 * groups), freed at :finish() or __gc once the spawn has settled; the
 * child's fds are closed at once (the child has its own copies).
 *
 * What may block: nothing on the loop thread, except opening stdio paths and
 * user lookups (getpwnam_r).
 */
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup.h"
#include "stream.h"
#include "util.h"

extern char **environ;

#define FDBOX_MT "orch.proc.fdbox"
#define DEFAULT_PATH ORCH__DEFAULT_PATH
#define MAX_EXTRA_FDS 64

/* The process table must exist before anything is spawned. */
static void check_state(lua_State *L) {
  if (orch__proc_devnull(orch__rt(L)) == -ENOSYS)
    luaL_error(L, "orch.proc: the module is not initialised");
}

/* ---------------------------------------------------------------- fd box */

/* A to-be-closed list of fds a spawn must close however it ends (the
 * child's ends of pipes, opened files), so a raise never leaks them, and
 * the malloc'ed memory of a spawn or an exec (argv, envp and the fd list:
 * build_exec). */
typedef struct { int n, cap; int *fd; void *mem; } fdbox;

static int fdbox_close(lua_State *L) {
  fdbox *b = luaL_checkudata(L, 1, FDBOX_MT);
  for (int i = 0; i < b->n; i++)
    if (b->fd[i] >= 0) close(b->fd[i]);
  b->n = 0;
  free(b->mem);
  b->mem = NULL;
  b->fd = NULL;
  b->cap = 0;
  return 0;
}

static fdbox *fdbox_new(lua_State *L) {
  fdbox *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->n = b->cap = 0;
  b->fd = NULL;
  b->mem = NULL;
  luaL_setmetatable(L, FDBOX_MT);
  lua_toclose(L, -1);
  return b;
}

static void fdbox_add(fdbox *b, int fd) {
  if (b->n < b->cap) b->fd[b->n++] = fd;
}

/* ---------------------------------------------------------------- spawn */

enum { IO_INHERIT, IO_NULL, IO_PIPE, IO_PATH, IO_FD, IO_STDOUT };

typedef struct {
  int kind;
  int fd;              /* IO_FD: the parent's fd */
  const char *path;    /* IO_PATH */
} io_spec;

typedef struct {
  int target;
  io_spec io;
} extra_fd;

static const char *const io_keys[] = { "stdin", "stdout", "stderr" };

static const char *const spawn_options[] = {
  "path", "env", "env_mode", "cwd", "uid", "gid", "stdin", "stdout", "stderr",
  "fds", "pgroup", "setsid", "rlimits", "umask", "cgroup", "nice", "cpu_affinity", "ioprio", NULL
};

static const struct { const char *name; int res; } rlimit_names[] = {
  {"as", RLIMIT_AS}, {"core", RLIMIT_CORE}, {"cpu", RLIMIT_CPU}, {"data", RLIMIT_DATA},
  {"fsize", RLIMIT_FSIZE}, {"locks", RLIMIT_LOCKS}, {"memlock", RLIMIT_MEMLOCK},
  {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE}, {"nofile", RLIMIT_NOFILE},
  {"nproc", RLIMIT_NPROC}, {"rss", RLIMIT_RSS}, {"rtprio", RLIMIT_RTPRIO},
  {"rttime", RLIMIT_RTTIME}, {"sigpending", RLIMIT_SIGPENDING}, {"stack", RLIMIT_STACK},
  {NULL, 0}
};
#define NRLIMITS 16

int orch__rlimit_byname(const char *name) {
  for (int i = 0; rlimit_names[i].name; i++)
    if (strcmp(rlimit_names[i].name, name) == 0) return rlimit_names[i].res;
  return -1;
}

typedef struct {
  int args;                   /* stack index of the argv table */
  int argc;
  int env;                    /* stack index of the env table or 0 */
  int replace_env;
  int search;
  const char *search_path;
  const char *cwd;
  int has_uid, has_gid;
  lua_Integer uid_num, gid_num;
  const char *uid_name, *gid_name;
  io_spec io[3];
  extra_fd extra[MAX_EXTRA_FDS];
  int nextra;
  int pgroup, setsid;
  lua_Integer join_pgid;      /* pgroup = N: join group N (else 0) */
  orch__rlimit rl[NRLIMITS];
  int nrl;
  int has_umask;
  mode_t umask;
  orch__cgroup *cgroup;       /* NULL: orch's own */
  int has_nice, nice;
  int has_affinity;
  cpu_set_t affinity;
  int has_ioprio, ioprio;
} spawn_args;

/* Is the value at idx a stream? Pushes nothing. Returns its fd or -1; raises
 * for a closed stream. */
static int stream_arg_fd(lua_State *L, int idx) {
  int fd = orch__stream_fd(L, idx);
  if (fd >= 0) return fd;
  if (luaL_testudata(L, idx, "orch.Stream")) orch__closed_error(L, "orch.Stream");
  return -1;
}

/* Validates one stdio option (value on top of the stack; left there). */
static void parse_io(lua_State *L, int arg, const char *key, int target, io_spec *io, int is_extra) {
  const char *expected = is_extra ? "an fd number or a stream expected"
                                  : "expected 'inherit', 'null', 'pipe', a path containing '/', a stream or an fd";
  io->kind = IO_INHERIT;
  io->fd = -1;
  io->path = NULL;
  switch (lua_type(L, -1)) {
    case LUA_TNIL:
      return;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, -1, &len);
      if (is_extra) break;
      if (strlen(s) != len) orch__opt_error(L, arg, key, "string contains a zero byte");
      if (strcmp(s, "inherit") == 0) io->kind = IO_INHERIT;
      else if (strcmp(s, "null") == 0) io->kind = IO_NULL;
      else if (strcmp(s, "pipe") == 0) io->kind = IO_PIPE;
      else if (target == 2 && strcmp(s, "stdout") == 0) io->kind = IO_STDOUT;
      else if (strchr(s, '/')) { io->kind = IO_PATH; io->path = s; }
      else break;
      return;
    }
    case LUA_TNUMBER: {
      int isint;
      lua_Integer n = lua_tointegerx(L, -1, &isint);
      if (!isint || n < 0 || n > INT_MAX) orch__opt_error(L, arg, key, "invalid fd number");
      io->kind = IO_FD;
      io->fd = (int)n;
      return;
    }
    case LUA_TUSERDATA: {
      int fd = stream_arg_fd(L, -1);
      if (fd < 0) break;
      io->kind = IO_FD;
      io->fd = fd;
      return;
    }
    default: break;
  }
  if (lua_type(L, -1) == LUA_TSTRING)
    orch__opt_error(L, arg, key, lua_pushfstring(L, "%s, got '%s'", expected, lua_tostring(L, -1)));
  orch__opt_error(L, arg, key, lua_pushfstring(L, "%s, got %s", expected, luaL_typename(L, -1)));
}

static rlim_t parse_rlim(lua_State *L, int arg, const char *name, int idx) {
  if (lua_type(L, idx) == LUA_TSTRING && strcmp(lua_tostring(L, idx), "unlimited") == 0)
    return RLIM_INFINITY;
  int isint;
  lua_Integer n = lua_tointegerx(L, idx, &isint);
  if (lua_type(L, idx) != LUA_TNUMBER || !isint || n < 0)
    orch__opt_error(L, arg, "rlimits", lua_pushfstring(L, "'%s': a non-negative integer or 'unlimited' expected", name));
  return (rlim_t)n;
}

static void parse_rlimits(lua_State *L, int arg, spawn_args *a) {
  int t = lua_gettop(L);
  if (!lua_istable(L, t)) orch__opt_error(L, arg, "rlimits", lua_pushfstring(L, "table expected, got %s", luaL_typename(L, t)));
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (lua_type(L, -2) != LUA_TSTRING) orch__opt_error(L, arg, "rlimits", "keys must be limit names");
    const char *name = lua_tostring(L, -2);
    int res = orch__rlimit_byname(name);
    if (res < 0) orch__opt_error(L, arg, "rlimits", lua_pushfstring(L, "unknown limit '%s'", name));
    struct rlimit lim;
    if (lua_istable(L, -1)) {
      lua_rawgeti(L, -1, 1);
      lua_rawgeti(L, -2, 2);
      lim.rlim_cur = parse_rlim(L, arg, name, -2);
      lim.rlim_max = parse_rlim(L, arg, name, -1);
      lua_pop(L, 2);
      if (lim.rlim_max != RLIM_INFINITY && (lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur > lim.rlim_max))
        orch__opt_error(L, arg, "rlimits", lua_pushfstring(L, "'%s': soft limit above hard limit", name));
    } else {
      lim.rlim_cur = lim.rlim_max = parse_rlim(L, arg, name, -1);
    }
    if (a->nrl < NRLIMITS) {
      a->rl[a->nrl].resource = res;
      a->rl[a->nrl].lim = lim;
      a->nrl++;
    }
    lua_pop(L, 1);
  }
}

static void parse_id(lua_State *L, int arg, const char *key, int *has, lua_Integer *num, const char **name) {
  int t = lua_getfield(L, arg, key);
  if (t == LUA_TNUMBER) {
    int isint;
    *num = lua_tointegerx(L, -1, &isint);
    if (!isint || *num < 0 || *num > 0x7ffffffe) orch__opt_error(L, arg, key, "invalid id");
    *has = 1;
  } else if (t == LUA_TSTRING) {
    *name = lua_tostring(L, -1);
    if (strlen(*name) != lua_rawlen(L, -1)) orch__opt_error(L, arg, key, "string contains a zero byte");
    *has = 1;
  } else if (t != LUA_TNIL) {
    orch__opt_error(L, arg, key, lua_pushfstring(L, "number or name expected, got %s", luaL_typename(L, -1)));
  }
  lua_pop(L, 1);
}

/* The scheduling options (value on top of the stack), shared with the
 * supervisor's service options (lua/orch/supervisor/schema.lua says the
 * same). */
static void parse_nice(lua_State *L, int arg, spawn_args *a) {
  int isint;
  lua_Integer n = lua_tointegerx(L, -1, &isint);
  if (lua_type(L, -1) != LUA_TNUMBER || !isint || n < -20 || n > 19)
    orch__opt_error(L, arg, "nice", "integer from -20 to 19 expected");
  a->has_nice = 1;
  a->nice = (int)n;
}

static void parse_affinity(lua_State *L, int arg, spawn_args *a) {
  static const char msg[] = "a non-empty list of CPU numbers (0 to 1023) expected";
  if (!lua_istable(L, -1)) orch__opt_error(L, arg, "cpu_affinity", msg);
  int t = lua_gettop(L);
  lua_Integer len = (lua_Integer)lua_rawlen(L, t);
  if (len < 1 || len > CPU_SETSIZE) orch__opt_error(L, arg, "cpu_affinity", msg);
  CPU_ZERO(&a->affinity);
  int count = 0;
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int isint;
    lua_Integer k = lua_tointegerx(L, -2, &isint);
    lua_Integer cpu = lua_tointegerx(L, -1, &isint);
    if (lua_type(L, -2) != LUA_TNUMBER || k < 1 || k > len || lua_type(L, -1) != LUA_TNUMBER ||
        !isint || cpu < 0 || cpu >= CPU_SETSIZE)
      orch__opt_error(L, arg, "cpu_affinity", msg);
    CPU_SET((int)cpu, &a->affinity);
    count++;
    lua_pop(L, 1);
  }
  if (count != len) orch__opt_error(L, arg, "cpu_affinity", msg);
  a->has_affinity = 1;
}

/* "idle", "best-effort", "realtime", or { class = ..., level = 0..7 }. */
static void parse_ioprio(lua_State *L, int arg, spawn_args *a) {
  static const char *const classes[] = { "none", "realtime", "best-effort", "idle", NULL };
  int t = lua_gettop(L);
  const char *cls = NULL;
  lua_Integer level = 4;
  int has_level = 0;
  if (lua_type(L, t) == LUA_TSTRING) {
    cls = lua_tostring(L, t);
  } else if (lua_istable(L, t)) {
    lua_pushnil(L);
    while (lua_next(L, t)) {
      const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
      if (!k || (strcmp(k, "class") != 0 && strcmp(k, "level") != 0))
        orch__opt_error(L, arg, "ioprio", lua_pushfstring(L, "unknown key '%s'", luaL_tolstring(L, -2, NULL)));
      lua_pop(L, 1);
    }
    if (lua_getfield(L, t, "class") == LUA_TSTRING) cls = lua_tostring(L, -1);
    else orch__opt_error(L, arg, "ioprio", "'class' expected ('realtime', 'best-effort' or 'idle')");
    if (lua_getfield(L, t, "level") != LUA_TNIL) {
      int isint;
      level = lua_tointegerx(L, -1, &isint);
      if (lua_type(L, -1) != LUA_TNUMBER || !isint || level < 0 || level > 7)
        orch__opt_error(L, arg, "ioprio", "level 0 to 7 expected");
      has_level = 1;
    }
    lua_settop(L, t);
  } else {
    orch__opt_error(L, arg, "ioprio", lua_pushfstring(L, "class name or table expected, got %s", luaL_typename(L, t)));
  }
  int c = 1;
  while (classes[c] && strcmp(classes[c], cls) != 0) c++;
  if (!classes[c])
    orch__opt_error(L, arg, "ioprio", lua_pushfstring(L, "'realtime', 'best-effort' or 'idle' expected, got '%s'", cls));
  if (c == 3) {
    if (has_level && level != 0) orch__opt_error(L, arg, "ioprio", "the idle class has no level");
    level = 0;
  }
  a->has_ioprio = 1;
  a->ioprio = (c << 13) | (int)level;
}

/* Phase 1: every check that can raise. Nothing is allocated outside Lua. */
static void spawn_validate(lua_State *L, spawn_args *a) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_gettop(L) > 1) luaL_argerror(L, 2, "no value expected (options go in the table)");
  orch__check_options(L, 1, spawn_options);
  memset(a, 0, sizeof *a);
  a->args = 1;
  a->argc = (int)luaL_len(L, 1);
  if (a->argc < 1) luaL_argerror(L, 1, "program name expected at index 1");
  if (a->argc > 100000) luaL_argerror(L, 1, "too many arguments");
  for (int i = 1; i <= a->argc; i++) {
    int t = lua_geti(L, 1, i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      luaL_argerror(L, 1, lua_pushfstring(L, "argument %d: string expected, got %s", i, luaL_typename(L, -1)));
    if (t == LUA_TSTRING && strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
      luaL_argerror(L, 1, lua_pushfstring(L, "argument %d contains a zero byte", i));
    lua_pop(L, 1);
  }
  lua_geti(L, 1, 1);
  if (lua_rawlen(L, -1) == 0 || lua_type(L, -1) != LUA_TSTRING) luaL_argerror(L, 1, "program name must be a non-empty string");
  lua_pop(L, 1);

  /* path: true (default) searches $PATH, false never, a string is the path. */
  a->search = 1;
  int t = lua_getfield(L, 1, "path");
  if (t == LUA_TBOOLEAN) a->search = lua_toboolean(L, -1);
  else if (t == LUA_TSTRING) {
    a->search_path = lua_tostring(L, -1);
    if (strlen(a->search_path) != lua_rawlen(L, -1)) orch__opt_error(L, 1, "path", "string contains a zero byte");
  }
  else if (t != LUA_TNIL) orch__opt_error(L, 1, "path", lua_pushfstring(L, "boolean or string expected, got %s", luaL_typename(L, -1)));
  lua_pop(L, 1);

  static const char *const modes[] = { "merge", "replace", NULL };
  const char *mode = orch__opt_string(L, 1, "env_mode", "merge");
  int m = 0;
  while (modes[m] && strcmp(modes[m], mode) != 0) m++;
  if (!modes[m]) orch__opt_error(L, 1, "env_mode", lua_pushfstring(L, "'merge' or 'replace' expected, got '%s'", mode));
  a->replace_env = m == 1;
  t = lua_getfield(L, 1, "env");
  if (t == LUA_TTABLE) {
    int e = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, e)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        orch__opt_error(L, 1, "env", "keys must be strings");
      const char *k = lua_tostring(L, -2);
      if (!*k || strchr(k, '=') || strlen(k) != lua_rawlen(L, -2))
        orch__opt_error(L, 1, "env", lua_pushfstring(L, "invalid variable name '%s'", k));
      int vt = lua_type(L, -1);
      if (vt != LUA_TSTRING && vt != LUA_TNUMBER && !(vt == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
        orch__opt_error(L, 1, "env", lua_pushfstring(L, "'%s': string, number or false expected, got %s", k, luaL_typename(L, -1)));
      if (vt == LUA_TSTRING && strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
        orch__opt_error(L, 1, "env", lua_pushfstring(L, "'%s' contains a zero byte", k));
      lua_pop(L, 1);
    }
    a->env = e;                          /* stays on the stack */
  } else {
    if (t != LUA_TNIL) orch__opt_error(L, 1, "env", lua_pushfstring(L, "table expected, got %s", luaL_typename(L, -1)));
    lua_pop(L, 1);
  }

  a->cwd = orch__opt_string(L, 1, "cwd", NULL);
  parse_id(L, 1, "uid", &a->has_uid, &a->uid_num, &a->uid_name);
  parse_id(L, 1, "gid", &a->has_gid, &a->gid_num, &a->gid_name);

  for (int i = 0; i < 3; i++) {
    lua_getfield(L, 1, io_keys[i]);
    parse_io(L, 1, io_keys[i], i, &a->io[i], 0);
    lua_pop(L, 1);
  }
  t = lua_getfield(L, 1, "fds");
  if (t == LUA_TTABLE) {
    int f = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, f)) {
      int isint;
      lua_Integer target = lua_tointegerx(L, -2, &isint);
      if (lua_type(L, -2) != LUA_TNUMBER || !isint || target < 3 || target > 1023)
        orch__opt_error(L, 1, "fds", "keys must be fd numbers from 3 to 1023");
      if (a->nextra >= MAX_EXTRA_FDS) orch__opt_error(L, 1, "fds", "too many fds (at most 64)");
      a->extra[a->nextra].target = (int)target;
      parse_io(L, 1, "fds", (int)target, &a->extra[a->nextra].io, 1);
      a->nextra++;
      lua_pop(L, 1);
    }
  } else if (t != LUA_TNIL) {
    orch__opt_error(L, 1, "fds", lua_pushfstring(L, "table expected, got %s", luaL_typename(L, -1)));
  }
  lua_pop(L, 1);

  /* pgroup: true (its own group), or a group to join as a shell puts each
   * member of a pipeline in the first one's (setpgid(0, N)). */
  t = lua_getfield(L, 1, "pgroup");
  if (t == LUA_TNUMBER) {
    int isint;
    a->join_pgid = lua_tointegerx(L, -1, &isint);
    if (!isint || a->join_pgid < 1 || a->join_pgid > INT_MAX)
      orch__opt_error(L, 1, "pgroup", "boolean or process group id (a positive integer) expected");
  } else if (t != LUA_TNIL && t != LUA_TBOOLEAN) {
    orch__opt_error(L, 1, "pgroup", lua_pushfstring(L, "boolean or process group id expected, got %s", luaL_typename(L, -1)));
  }
  lua_pop(L, 1);
  if (!a->join_pgid) a->pgroup = orch__opt_boolean(L, 1, "pgroup", 0);
  a->setsid = orch__opt_boolean(L, 1, "setsid", 0);
  if (a->setsid && a->join_pgid)
    orch__opt_error(L, 1, "pgroup", "a process group to join and setsid exclude each other");
  t = lua_getfield(L, 1, "rlimits");
  if (t != LUA_TNIL) parse_rlimits(L, 1, a);
  lua_pop(L, 1);
  int has;
  lua_Integer u = orch__opt_mode(L, 1, "umask", 0, 0777, &has);
  a->has_umask = has;
  a->umask = (mode_t)u;
  if (lua_getfield(L, 1, "cgroup") != LUA_TNIL && !(a->cgroup = orch__cg_check(L, -1)))
    orch__opt_error(L, 1, "cgroup", lua_pushfstring(L, "orch.Cgroup expected, got %s", luaL_typename(L, -1)));
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "nice") != LUA_TNIL) parse_nice(L, 1, a);
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "cpu_affinity") != LUA_TNIL) parse_affinity(L, 1, a);
  lua_pop(L, 1);
  if (lua_getfield(L, 1, "ioprio") != LUA_TNIL) parse_ioprio(L, 1, a);
  lua_pop(L, 1);
}

typedef struct {
  uid_t uid;
  gid_t gid;
  gid_t *groups;
  int ngroups;
  int flags;
} creds;

/* Phase 2: user and group names to ids. Expected failures return 3 results
 * (nothing is held yet); 0 on success. */
static int resolve_creds(lua_State *L, const char *op, spawn_args *a, creds *c) {
  char buf[16384];
  struct passwd pw, *pwp = NULL;
  memset(c, 0, sizeof *c);
  if (!a->has_uid && !a->has_gid) return 0;
  int root = geteuid() == 0;
  if (a->has_uid) {
    int r = a->uid_name ? getpwnam_r(a->uid_name, &pw, buf, sizeof buf, &pwp)
                        : getpwuid_r((uid_t)a->uid_num, &pw, buf, sizeof buf, &pwp);
    if (r != 0) return orch__fail_errno(L, r, "%s: user lookup", op);
    if (!pwp && a->uid_name) return orch__failf(L, "ENOENT", "%s: unknown user '%s'", op, a->uid_name);
    c->uid = pwp ? pwp->pw_uid : (uid_t)a->uid_num;
    c->flags |= ORCH__SPAWN_SETUID;
  }
  if (a->has_gid) {
    if (a->gid_name) {
      char gbuf[16384];
      struct group gr, *grp = NULL;
      int r = getgrnam_r(a->gid_name, &gr, gbuf, sizeof gbuf, &grp);
      if (r != 0) return orch__fail_errno(L, r, "%s: group lookup", op);
      if (!grp) return orch__failf(L, "ENOENT", "%s: unknown group '%s'", op, a->gid_name);
      c->gid = grp->gr_gid;
    } else {
      c->gid = (gid_t)a->gid_num;
    }
  } else if (pwp) {
    c->gid = pwp->pw_gid;
  } else {
    return orch__failf(L, "EINVAL", "%s: uid %d has no passwd entry: give gid too", op, (int)a->uid_num);
  }
  c->flags |= ORCH__SPAWN_SETGID;
  if (root) {
    /* The supplementary groups follow the user, never orch's own. */
    int n = 1;
    if (pwp) {
      n = 64;
      for (;;) {
        c->groups = lua_newuserdatauv(L, (size_t)n * sizeof(gid_t), 0);
        int want = n;
        if (getgrouplist(pwp->pw_name, c->gid, c->groups, &want) >= 0) { n = want; break; }
        lua_pop(L, 1);
        if (want <= n || want > 65536) { n = 1; c->groups = NULL; break; }
        n = want;
      }
    }
    if (!c->groups) {
      c->groups = lua_newuserdatauv(L, sizeof(gid_t), 0);
      c->groups[0] = c->gid;
      n = 1;
    }
    c->ngroups = n;
    c->flags |= ORCH__SPAWN_GROUPS;
  }
  return 0;
}

/* The new program's argv and envp (for orch.spawn and orch.exec), built in
 * one malloc'ed block that the box frees when the call returns (a spawned
 * child has exec'd or failed by then): no Lua garbage is left behind for
 * them. Environment entries the env table names (a value or false) are left
 * out of environ; the table's values follow as "K=V". *envpp is NULL for
 * orch's own environment. Returns 0, or -1 after pushing the error triple. */
static int build_exec(lua_State *L, const char *op, const spawn_args *a, fdbox *box,
                      char ***argvp, char ***envpp, int snapshot) {
  size_t bytes = 0, nenv = 0, ntab = 0, nkeys = 0;
  if (!a->env && snapshot && !a->replace_env) while (environ[nenv]) nenv++;
  for (int i = 1; i <= a->argc; i++) {
    size_t len;
    lua_geti(L, a->args, i);
    lua_tolstring(L, -1, &len);              /* numbers become strings */
    bytes += len + 1;
    lua_pop(L, 1);
  }
  if (a->env) {
    if (!a->replace_env) while (environ[nenv]) nenv++;
    lua_pushnil(L);
    while (lua_next(L, a->env)) {
      nkeys++;
      if (lua_type(L, -1) != LUA_TBOOLEAN) {
        size_t kl, vl;
        lua_tolstring(L, -2, &kl);
        lua_tolstring(L, -1, &vl);             /* a copy on the stack: safe */
        bytes += kl + vl + 2;
        ntab++;
      }
      lua_pop(L, 1);
    }
  }
  size_t nptr = (size_t)a->argc + 1 + nenv + ntab + 1;
  size_t nfd = 2 * (3 + (size_t)a->nextra) + 4;   /* each io: at most 2 fds */
  char *mem = malloc(nptr * sizeof(char *) + nkeys * (sizeof(const char *) + sizeof(size_t)) +
                     nfd * sizeof(int) + bytes);
  if (!mem) return orch__fail(L, op, ENOMEM), -1;
  box->mem = mem;
  char **argv = (char **)mem;
  char **envp = argv + a->argc + 1;
  const char **keys = (const char **)(envp + nenv + ntab + 1);
  size_t *klens = (size_t *)(keys + nkeys);
  box->fd = (int *)(klens + nkeys);
  box->cap = (int)nfd;
  char *out = (char *)(box->fd + nfd);
  for (int i = 1; i <= a->argc; i++) {
    size_t len;
    lua_geti(L, a->args, i);
    const char *v = lua_tolstring(L, -1, &len);
    memcpy(out, v, len + 1);
    argv[i - 1] = out;
    out += len + 1;
    lua_pop(L, 1);
  }
  argv[a->argc] = NULL;
  *argvp = argv;
  if (!a->env) {
    *envpp = NULL;
    if (a->replace_env || snapshot) {        /* env_mode = "replace", no table */
      /* A started spawn's child reads its environment while orch runs on:
       * a copy of environ's entries, not environ, which setenv may move. */
      for (size_t i = 0; i < nenv; i++) envp[i] = environ[i];
      envp[nenv] = NULL;
      *envpp = envp;
    }
    return 0;
  }
  size_t k = 0, nk = 0;
  lua_pushnil(L);
  while (lua_next(L, a->env)) {
    size_t kl;
    keys[nk] = lua_tolstring(L, -2, &kl);    /* anchored by the table */
    klens[nk++] = kl;
    if (lua_type(L, -1) != LUA_TBOOLEAN) {
      size_t vl;
      const char *v = lua_tolstring(L, -1, &vl);
      memcpy(out, keys[nk - 1], kl);
      out[kl] = '=';
      memcpy(out + kl + 1, v, vl + 1);
      envp[nenv + k++] = out;                /* after environ's entries */
      out += kl + vl + 2;
    }
    lua_pop(L, 1);
  }
  size_t e = 0;
  for (size_t i = 0; i < nenv; i++) {
    const char *entry = environ[i];
    const char *eq = strchr(entry, '=');
    if (!eq) continue;
    size_t len = (size_t)(eq - entry);
    int named = 0;
    for (size_t j = 0; j < nkeys && !named; j++)
      named = klens[j] == len && memcmp(keys[j], entry, len) == 0;
    if (!named) envp[e++] = (char *)entry;
  }
  /* Close the gap between environ's kept entries and the table's. */
  memmove(envp + e, envp + nenv, k * sizeof(char *));
  envp[e + k] = NULL;
  *envpp = envp;
  return 0;
}

/* The PATH the child's program is looked up in. */
static const char *child_search_path(lua_State *L, spawn_args *a) {
  if (a->search_path) return a->search_path;
  if (a->env) {
    lua_getfield(L, a->env, "PATH");
    const char *p = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);                         /* still held by the env table */
    if (p) return p;
    if (a->replace_env) return DEFAULT_PATH;
  }
  return NULL;
}

int orch__exec_args(lua_State *L, const char *op, int args, int argc, int env,
                    char ***argv, char ***envp, const char **search) {
  spawn_args a;
  memset(&a, 0, sizeof a);
  a.args = lua_absindex(L, args);
  a.argc = argc;
  if (env) {
    a.env = lua_absindex(L, env);
    a.replace_env = 1;
  }
  fdbox *box = fdbox_new(L);
  if (build_exec(L, op, &a, box, argv, envp, 0) < 0) return -1;
  *search = child_search_path(L, &a);
  if (!*search) *search = getenv("PATH");
  if (!*search) *search = DEFAULT_PATH;
  return 0;
}

/* [-0,+3 on failure] Makes the fd a child gets for an io spec. Returns the
 * source fd (>= 0) or -1 after pushing the error triple. Fds opened here go
 * in the box. For pipes, *parent receives the parent's end. */
static int open_io(lua_State *L, fdbox *box, const char *key, int target,
                   io_spec *io, int *parent) {
  *parent = -1;
  switch (io->kind) {
    case IO_NULL: {
      int fd = orch__proc_devnull(orch__rt(L));
      if (fd < 0) { orch__fail(L, "spawn: /dev/null", -fd); return -1; }
      return fd;
    }
    case IO_PIPE: {
      int p[2];
      if (pipe2(p, O_CLOEXEC) < 0) { orch__fail(L, "spawn: pipe", errno); return -1; }
      if (orch__fd_headroom_short(p[1])) {
        /* What it keeps would leave too few fds for stopping what runs. */
        close(p[0]);
        close(p[1]);
        orch__failf(L, "EMFILE", "spawn: pipe: too many open files (the last fds are kept for stops)");
        return -1;
      }
      int child = target == 0 ? p[0] : p[1];
      *parent = target == 0 ? p[1] : p[0];
      fdbox_add(box, child);
      fdbox_add(box, *parent);             /* until a stream owns it */
      return child;
    }
    case IO_PATH: {
      /* Never blocks the loop: a FIFO without a reader fails (ENXIO). */
      int flags = target == 0 ? O_RDONLY : (O_WRONLY | O_APPEND | O_CREAT);
      int fd = orch__open_path(io->path, flags, 0666);
      if (fd < 0) {
        char op[64];
        snprintf(op, sizeof op, "spawn: %s", key);
        orch__fail_open(L, op, io->path, -fd);
        return -1;
      }
      fdbox_add(box, fd);
      return fd;
    }
    case IO_FD: {
      int fl = fcntl(io->fd, F_GETFL);
      if (fl < 0) {
        orch__failf(L, "EBADF", "spawn: %s: bad file descriptor %d", key, io->fd);
        return -1;
      }
      /* A non-blocking pipe (an orch stream's) would make the child's reads
       * and writes fail with EAGAIN. Reopening it through /proc gives the
       * child its own, blocking, open file description of the same pipe. */
      struct stat sb;
      if ((fl & O_NONBLOCK) && fstat(io->fd, &sb) == 0 && S_ISFIFO(sb.st_mode)) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", io->fd);
        int acc = fl & O_ACCMODE;
        int fd = open(path, (acc == O_RDONLY ? O_RDONLY : acc == O_WRONLY ? O_WRONLY : O_RDWR) | O_CLOEXEC);
        if (fd >= 0) {
          fdbox_add(box, fd);
          return fd;
        }
      }
      return io->fd;
    }
    default:
      return -1;
  }
}

/* What a failure's message names. */
typedef struct {
  const char *file, *cwd, *cgroup;
  uid_t uid;
  gid_t gid;
} fail_names;

static int spawn_failure(lua_State *L, int err, const char *step, const fail_names *f) {
  if (strcmp(step, "exec") == 0) {
    if (err == ENOENT) return orch__failf(L, "ENOENT", "spawn: no such file: %s", f->file);
    if (err == EACCES) return orch__failf(L, "EACCES", "spawn: permission denied: %s", f->file);
    return orch__fail_errno(L, err, "spawn: exec %s", f->file);
  }
  if (strcmp(step, "chdir") == 0) return orch__fail_errno(L, err, "spawn: chdir %s", f->cwd);
  if (strcmp(step, "frozen") == 0) return orch__failf(L, "EBUSY", "spawn: cgroup %s is frozen", f->cgroup);
  if (strcmp(step, "cgroup") == 0) return orch__fail_errno(L, err, "spawn: cgroup %s", f->cgroup);
  if (strcmp(step, "setuid") == 0) return orch__fail_errno(L, err, "spawn: setuid %d", (int)f->uid);
  if (strcmp(step, "setgid") == 0) return orch__fail_errno(L, err, "spawn: setgid %d", (int)f->gid);
  return orch__fail_errno(L, err, "spawn: %s", step);
}

/* ---------------------------------------------------------------- started spawns */

/* orch.spawn_begin's request: a spawn whose child may still be on its way
 * to its exec (orch__spawn_start), with everything that child reads until
 * then: the request, its fd map, limits and CPU set, and one malloc'ed
 * block (argv, envp, the fd list: build_exec's) plus one for the strings
 * and groups (cwd, search path, the cgroup's path for a message). The
 * object orch.spawn_begin made is its first user value, anchored (see
 * orch__spawn_object) from the start on. */
#define REQUEST_MT "orch.SpawnRequest"
enum { RQ_EMPTY, RQ_STARTED, RQ_DONE, RQ_FINISHED };

typedef struct {
  orch__spawn_job job;
  orch__spawn_req req;
  orch__fdmap map[3 + MAX_EXTRA_FDS];
  orch__rlimit rl[NRLIMITS];
  cpu_set_t affinity;
  fail_names names;
  int cgfds[1 + ORCH__CG_NCTL];   /* their numbers: the child reads the list */
  const orch__spawn_object *obj;
  orch_runtime *rt;
  const char *step;
  const char *cgdir;            /* the cgroup's v2 directory (in strs), or NULL */
  void *mem, *strs;
} request_data;

/* The userdata stays small: a start of many makes one per service, and
 * its memory goes only with the collection after the one that finalizes
 * it; the rest is malloc'ed and freed at :finish(). */
typedef struct {
  int state;
  int pid;                      /* RQ_DONE: the spawn's result (pid or -errno) */
  request_data *d;
} spawn_request;

static spawn_request *check_request(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, REQUEST_MT);
}

/* The request's result once its child has exec'd or failed. */
static int request_settle(spawn_request *rq) {
  if (rq->state == RQ_STARTED) {
    rq->pid = orch__spawn_settle(rq->d->rt, &rq->d->job, &rq->d->step);
    rq->state = RQ_DONE;
  }
  return rq->pid;
}

static void request_free(spawn_request *rq) {
  if (!rq->d) return;
  free(rq->d->mem);
  free(rq->d->strs);
  free(rq->d);
  rq->d = NULL;
}

/* __gc and __close: a request nobody finished. Its child is waited for (as
 * long as orch.spawn waits) and then runs on unseen (its object stays
 * anchored until its status comes), or is reaped when it failed. */
static int request_gc(lua_State *L) {
  spawn_request *rq = check_request(L, 1);
  if (rq->state == RQ_STARTED || rq->state == RQ_DONE) {
    int pid = request_settle(rq);
    if (pid <= 0 && lua_getiuservalue(L, 1, 1) == LUA_TUSERDATA) rq->d->obj->forget(L, lua_gettop(L));
    rq->state = RQ_FINISHED;
  }
  request_free(rq);
  return 0;
}

/* req:finish(): what orch.spawn would have returned. */
static int request_finish(lua_State *L) {
  spawn_request *rq = check_request(L, 1);
  lua_settop(L, 1);
  if (rq->state == RQ_FINISHED) return luaL_error(L, "attempt to use a finished " REQUEST_MT);
  if (rq->state == RQ_EMPTY) return luaL_error(L, "attempt to use an empty " REQUEST_MT);
  int pid = request_settle(rq);
  rq->state = RQ_FINISHED;
  lua_getiuservalue(L, 1, 1);
  int ud = lua_gettop(L);
  int n;
  if (pid > 0) {
    n = 1;
  } else {
    rq->d->obj->spawned(L, ud, 0);
    n = spawn_failure(L, -pid, rq->d->step, &rq->d->names);
  }
  request_free(rq);
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 1);
  return n;
}

static int request_tostring(lua_State *L) {
  spawn_request *rq = check_request(L, 1);
  static const char *const names[] = { "empty", "started", "started", "finished" };
  const char *st = rq->state == RQ_STARTED && !orch__spawn_pending(&rq->d->job) ? "started" : names[rq->state];
  lua_pushfstring(L, REQUEST_MT ": %s", st);
  return 1;
}

/* A copy of the strings a started spawn's child reads (cwd, the search
 * path) and of its groups, in one malloc'ed block; NULL on ENOMEM. */
static void *copy_strings(spawn_request *rq, const char *cwd, const char *path,
                          const char *cgpath, const char *cgdir, creds *c) {
  size_t lc = cwd ? strlen(cwd) + 1 : 0, lp = path ? strlen(path) + 1 : 0;
  size_t lg = cgpath ? strlen(cgpath) + 1 : 0, ng = (size_t)c->ngroups * sizeof(gid_t);
  size_t ld = cgdir ? strlen(cgdir) + 1 : 0;
  char *m = malloc(ng + lc + lp + lg + ld + 1);
  if (!m) return NULL;
  char *o = m + ng;
  if (ng) { memcpy(m, c->groups, ng); c->groups = (gid_t *)m; }
  if (cwd) { memcpy(o, cwd, lc); rq->d->req.cwd = rq->d->names.cwd = o; o += lc; }
  if (path) { memcpy(o, path, lp); rq->d->req.search_path = o; o += lp; }
  if (cgpath) { memcpy(o, cgpath, lg); rq->d->names.cgroup = o; o += lg; }
  if (cgdir) { memcpy(o, cgdir, ld); rq->d->cgdir = o; }
  return m;
}

static int spawn_common(lua_State *L, const orch__spawn_object *obj, int start) {
  spawn_args a;
  spawn_validate(L, &a);
  orch_runtime *rt = orch__rt(L);
  check_state(L);

  /* Phase 2: lookups that can fail. */
  creds c;
  int n = resolve_creds(L, "spawn", &a, &c);
  if (n) return n;

  /* orch.spawn_begin's request, empty (its __gc is safe) until it starts. */
  spawn_request *rq = NULL;
  int rqi = 0;
  if (start) {
    rq = lua_newuserdatauv(L, sizeof *rq, 1);
    memset(rq, 0, sizeof *rq);
    luaL_setmetatable(L, REQUEST_MT);
    rqi = lua_gettop(L);
    if (!(rq->d = calloc(1, sizeof *rq->d))) return orch__fail(L, "spawn", ENOMEM);
    rq->d->obj = obj;
    rq->d->rt = rt;
  }

  /* Phase 3: memory, owned by a to-be-closed box (a raise here leaks
   * nothing): argv and envp, the process object. */
  fdbox *box = fdbox_new(L);
  char **argv, **envp;
  if (build_exec(L, "spawn", &a, box, &argv, &envp, start) < 0) return 3;
  const char *search_path = child_search_path(L, &a);
  orch__child *child = obj->push(L);
  int ud = lua_gettop(L);

  /* Phase 4: fds, in the box. */
  orch__fdmap map_local[3 + MAX_EXTRA_FDS];
  orch__fdmap *map = rq ? rq->d->map : map_local;
  int nmap = 0;
  int stdout_src = 1;
  for (int i = 0; i < 3; i++) {
    if (a.io[i].kind == IO_INHERIT) continue;
    int src, parent;
    if (a.io[i].kind == IO_STDOUT) {
      src = stdout_src;
    } else {
      src = open_io(L, box, io_keys[i], i, &a.io[i], &parent);
      if (src < 0) { obj->spawned(L, ud, 0); return 3; }
      if (parent >= 0) {
        box->n--;                          /* the stream owns it now (or closed it) */
        int r = orch__stream_push_pipe(L, parent, i == 0 ? ORCH_STREAM_WRITE : ORCH_STREAM_READ);
        if (r < 0) { obj->spawned(L, ud, 0); return orch__fail_uv(L, "spawn: pipe", r); }
        obj->set_stdio(L, ud, i);
      }
    }
    if (i == 1) stdout_src = src;
    map[nmap].target = i;
    map[nmap].source = src;
    nmap++;
  }
  for (int i = 0; i < a.nextra; i++) {
    int parent;
    int src = open_io(L, box, "fds", a.extra[i].target, &a.extra[i].io, &parent);
    if (src < 0) { obj->spawned(L, ud, 0); return 3; }
    map[nmap].target = a.extra[i].target;
    map[nmap].source = src;
    nmap++;
  }

  orch__spawn_req req_local;
  orch__spawn_req *req_p = rq ? &rq->d->req : &req_local;
#define req (*req_p)
  req = (orch__spawn_req){
    .file = argv[0], .argv = argv, .envp = envp, .search = a.search,
    .search_path = search_path, .cwd = a.cwd, .flags = c.flags,
    .uid = c.uid, .gid = c.gid, .groups = c.groups, .ngroups = c.ngroups,
    .umask = a.umask, .rlimits = a.rl, .nrlimits = a.nrl, .fds = map, .nfds = nmap,
  };
  if (a.setsid) req.flags |= ORCH__SPAWN_SETSID;
  else if (a.pgroup) req.flags |= ORCH__SPAWN_PGROUP;
  else if (a.join_pgid) { req.flags |= ORCH__SPAWN_JOIN_PGROUP; req.pgid = (pid_t)a.join_pgid; }
  if (a.has_umask) req.flags |= ORCH__SPAWN_UMASK;
  if (a.has_nice) { req.flags |= ORCH__SPAWN_NICE; req.nice = a.nice; }
  if (a.has_affinity) { req.flags |= ORCH__SPAWN_AFFINITY; req.affinity = &a.affinity; }
  if (a.has_ioprio) { req.flags |= ORCH__SPAWN_IOPRIO; req.ioprio = a.ioprio; }
  fail_names names = { argv[0], a.cwd, a.cgroup ? a.cgroup->path : NULL, c.uid, c.gid };
  if (rq) {
    /* What the child reads moves into the request, which outlives this
     * call; a.cwd and the search path may be Lua strings the caller drops. */
    memcpy(rq->d->rl, a.rl, sizeof a.rl);
    req.rlimits = rq->d->rl;
    if (a.has_affinity) { rq->d->affinity = a.affinity; req.affinity = &rq->d->affinity; }
    rq->d->names = names;
    rq->d->strs = copy_strings(rq, a.cwd, search_path, names.cgroup, a.cgroup ? a.cgroup->fs[0] : NULL, &c);
    if (!rq->d->strs) { obj->spawned(L, ud, 0); return orch__fail(L, "spawn", ENOMEM); }
    req.groups = c.groups;
  }

  obj->anchor(L, ud);
  const char *step = "cgroup";
  /* A child born frozen would never exec, and the vfork parent (orch)
   * would wait for it until a thaw. orch.spawn_begin reads the cgroup only
   * if its child is slow to exec (spawner.c, job_wait): a start of many
   * makes each service's cgroup just before, and the first read of its
   * cgroup.events would open the file (not below ORCH__CG_LAZY_NOFILE). */
  int frozen = 0, unread = rq && a.cgroup && a.cgroup->fs[0] && orch__nofile_soft() >= ORCH__CG_LAZY_NOFILE;
  if (a.cgroup && !unread && orch__cg_frozen(a.cgroup, &frozen) == 0 && frozen) {
    obj->spawned(L, ud, 0);
    return orch__failf(L, "EBUSY", "spawn: cgroup %s is frozen", a.cgroup->path);
  }
  /* Opened last and closed right after the spawn: nothing between raises. */
  int cgfds_local[1 + ORCH__CG_NCTL], cgdir = -1, cgdir_owned = 0;
  int *cgfds = rq ? rq->d->cgfds : cgfds_local;
  /* The v2 cgroup.procs fd only while clone3 has not shown it works: the
   * fallback's child writes it. */
  int nofd = orch__spawn_into_cgroup_works();
  int pid = a.cgroup ? orch__cg_join_fds(a.cgroup, !nofd, cgfds, 1 + ORCH__CG_NCTL, &cgdir,
                                               &cgdir_owned) : 0;
  if (pid >= 0) {
    req.cgroup_fds = cgfds;
    req.ncgroup_fds = pid;
    if (a.cgroup) {
      req.flags |= ORCH__SPAWN_CGROUP | (nofd ? ORCH__SPAWN_CGROUP_NOFD : 0);
      req.cgroup_dir = cgdir;
    }
    pid = -ENOSYS;
    if (rq) {
      pid = orch__spawn_start(rt, &req, &rq->d->job, child, &step);
      if (pid > 0) {
        rq->state = RQ_STARTED;
        if (unread) rq->d->job.frozen_dir = rq->d->cgdir;
      }
    }
    if (pid == -ENOSYS && unread && orch__cg_frozen(a.cgroup, &frozen) == 0 && frozen) {
      pid = -EBUSY;                    /* the vfork spawn below would wait */
      step = "frozen";
    } else if (pid == -ENOSYS) {
      pid = orch__spawn(rt, &req, child, &step);
    }
    /* The child has its own copies of the fds by now (no CLONE_FILES). */
    for (int i = 0; i < req.ncgroup_fds; i++) close(cgfds[i]);
    if (cgdir_owned) close(cgdir);
  }
#undef req
  if (rq && rq->state == RQ_STARTED) {
    /* The request keeps argv and envp until the child's exec; the box
     * closes the child's ends now. */
    obj->spawned(L, ud, pid);
    rq->d->mem = box->mem;
    box->mem = NULL;
    lua_pushvalue(L, ud);
    lua_setiuservalue(L, rqi, 1);
    lua_pushvalue(L, rqi);
    return 1;
  }
  if (rq && pid > 0) {
    /* Spawned at once (no clone3): the request only hands the result on. */
    obj->spawned(L, ud, pid);
    rq->state = RQ_DONE;
    rq->pid = pid;
    request_free(rq);
    lua_pushvalue(L, ud);
    lua_setiuservalue(L, rqi, 1);
    lua_pushvalue(L, rqi);
    return 1;
  }
  obj->spawned(L, ud, pid);
  if (pid < 0) return spawn_failure(L, -pid, step, &names);
  lua_pushvalue(L, ud);
  return 1;                                /* the box closes the child's ends */
}

int orch__spawn_lua(lua_State *L, const orch__spawn_object *obj) {
  return spawn_common(L, obj, 0);
}

int orch__spawn_begin_lua(lua_State *L, const orch__spawn_object *obj) {
  return spawn_common(L, obj, 1);
}

void orch__spawn_open(lua_State *L) {
  static const luaL_Reg fdbox_meta[] = { {"__close", fdbox_close}, {"__gc", fdbox_close}, {NULL, NULL} };
  orch__newclass(L, FDBOX_MT, NULL, fdbox_meta);
  lua_pop(L, 1);
  static const luaL_Reg request_methods[] = { {"finish", request_finish}, {NULL, NULL} };
  static const luaL_Reg request_meta[] = {
    {"__gc", request_gc}, {"__close", request_gc}, {"__tostring", request_tostring}, {NULL, NULL}
  };
  orch__newclass(L, REQUEST_MT, request_methods, request_meta);
  lua_pop(L, 1);
}
