/*
 * l_daemon.c: orch's own process: the calls that turn orch itself into
 * another process, orch.fork (a Lua child), orch.exec (replace orch),
 * orch.daemonize (detach) and orch.proc.init_mode (orch as PID 1 or a
 * container's init: forward signals, drain at exit); and orch's own
 * environment and limits, which its children inherit (orch.setenv,
 * orch.unsetenv, orch.getrlimit, orch.setrlimit). The module orch.core.daemon, merged into orch
 * and orch.proc.
 *
 * Ownership: a per-runtime daemon_state (malloc'ed, reached from the Lua
 * registry and the functions' upvalue) holds init mode's signal forwarders
 * (uv_signal_t, malloc'ed, freed in their close callback), the pidfile
 * descriptor a daemon keeps locked for its life, and the descriptors orch
 * inherited. The runtime's close hook stops the forwarders and frees it.
 * Reaping stays process.c's: a fork child is an orch.Process (l_proc.c).
 *
 * What may block: the original process's short waits inside orch.daemonize
 * before it exits; init mode's drain at exit as PID 1 (the loop is over).
 * orch.fork returns into Lua only in the child's own task.
 */
#include "proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "spawn.h"
#include "stream.h"
#include "util.h"

extern char **environ;

typedef struct {
  orch_runtime *rt;
  uv_signal_t *init_sigs[32]; /* init mode forwarders (malloc'ed) */
  int ninit;
  int init_on;                /* init mode was asked for (and not stopped) */
  double init_grace;          /* PID 1: seconds between TERM and KILL at exit */
  int pidfile_fd;             /* held (locked) for the life of a daemon */
  /* Descriptors orch inherited (open without close-on-exec when the module
   * was opened), by number and identity: what orch.daemonize closes. */
  struct { int fd; dev_t dev; ino_t ino; } inherited[64];
  int ninherited;
} daemon_state;

/* ---------------------------------------------------------------- fork */

static int exit_code_of(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return 0;
  if (lua_isboolean(L, idx)) return lua_toboolean(L, idx) ? 0 : 1;
  int isint;
  lua_Integer n = lua_tointegerx(L, idx, &isint);
  return isint ? (int)(n & 0xff) : 1;
}

/* The fork child's end: fn returned (or failed); the child never returns
 * into the code that called orch.fork. */
static int fork_child_k(lua_State *L, int status, lua_KContext ctx) {
  int code;
  if (status != LUA_OK && status != LUA_YIELD) {
    const char *m = lua_tostring(L, -1);
    fprintf(stderr, "orch: fork child %d: %s\n", (int)getpid(), m ? m : "(error object is not a string)");
    code = 1;
  } else {
    code = exit_code_of(L, -1);
  }
  fflush(NULL);
  _exit(code);
  return 0;
}

static int traceback_handler(lua_State *L) {
  const char *m = lua_tostring(L, 1);
  luaL_traceback(L, L, m ? m : "(error object is not a string)", 1);
  return 1;
}

static int proc_fork(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  orch__check_task(L, "fork");
  orch__process_new(L);
  fflush(NULL);                            /* or both processes flush it */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pid_t pid = fork();
  if (pid == 0) {
    orch__after_fork_child(L);
    orch__fork_child_exits(L);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    orch__process_track(L, 2, 0);          /* the parent's object */
    lua_pushcfunction(L, traceback_handler);
    lua_pushvalue(L, 1);
    int st = lua_pcallk(L, 0, 1, 3, 0, fork_child_k);
    return fork_child_k(L, st, 0);
  }
  int e = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  orch__process_track(L, 2, pid);
  if (pid < 0) return orch__fail(L, "fork", e);
  return 1;
}


/* ---------------------------------------------------------------- exec */

static int proc_exec(lua_State *L) {
  const char *path = orch__checkpath(L, 1, NULL);
  if (!*path) luaL_argerror(L, 1, "program name must not be empty");
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  orch__check_nargs(L, 3);
  lua_settop(L, 3);
  lua_Integer n = lua_isnil(L, 2) ? 0 : luaL_len(L, 2);
  if (n < 0 || n > 100000) luaL_argerror(L, 2, "too many arguments");
  for (lua_Integer i = 1; i <= n; i++) {
    int t = lua_geti(L, 2, i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      luaL_argerror(L, 2, lua_pushfstring(L, "argument %d: string expected, got %s", (int)i, luaL_typename(L, -1)));
    if (t == LUA_TSTRING && strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
      luaL_argerror(L, 2, lua_pushfstring(L, "argument %d contains a zero byte", (int)i));
    lua_pop(L, 1);
  }
  /* args[0], as in execv's argv: what the program sees as its name. */
  int has_argv0 = 0;
  if (!lua_isnil(L, 2)) {
    int t = lua_geti(L, 2, 0);
    if (t != LUA_TNIL && t != LUA_TSTRING)
      luaL_argerror(L, 2, lua_pushfstring(L, "argument 0: string expected, got %s", luaL_typename(L, -1)));
    if (t == LUA_TSTRING && strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
      luaL_argerror(L, 2, "argument 0 contains a zero byte");
    has_argv0 = t == LUA_TSTRING;
    lua_pop(L, 1);
  }
  if (!lua_isnil(L, 3)) {
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      if (lua_type(L, -2) != LUA_TSTRING || strchr(lua_tostring(L, -2), '=') || !*lua_tostring(L, -2)
          || strlen(lua_tostring(L, -2)) != lua_rawlen(L, -2))
        luaL_argerror(L, 3, "keys must be variable names");
      if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        luaL_argerror(L, 3, lua_pushfstring(L, "'%s': string or number expected", lua_tostring(L, -2)));
      if (lua_type(L, -1) == LUA_TSTRING && strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
        luaL_argerror(L, 3, lua_pushfstring(L, "'%s' contains a zero byte", lua_tostring(L, -2)));
      lua_pop(L, 1);
    }
  }
  /* The program and its arguments as one argv table; an env table is the
   * whole environment. Built the way spawn builds them. */
  lua_createtable(L, (int)n + 1, 0);
  if (has_argv0) lua_geti(L, 2, 0); else lua_pushvalue(L, 1);
  lua_rawseti(L, -2, 1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, 2, i);
    lua_rawseti(L, -2, i + 1);
  }
  char **argv, **envp;
  const char *search;
  if (orch__exec_args(L, "exec", lua_gettop(L), (int)n + 1, lua_isnil(L, 3) ? 0 : 3,
                      &argv, &envp, &search) < 0)
    return 3;

  /* The new program starts with default dispositions and nothing blocked;
   * if exec fails, orch's own come back. */
  orch__ksigaction saved[NSIG];
  int have[NSIG];
  sigset_t all, old, none;
  sigfillset(&all);
  sigemptyset(&none);
  fflush(NULL);
  /* Exits taken but not released yet: reaped now (the new program would
   * inherit them as zombies it never made). */
  orch__proc_release(orch__rt(L));
  pthread_sigmask(SIG_BLOCK, &all, &old);
  for (int s = 1; s < NSIG; s++)
    have[s] = s != SIGKILL && s != SIGSTOP && orch__raw_sigaction(s, &orch__ksa_default, &saved[s]) == 0;
  pthread_sigmask(SIG_SETMASK, &none, NULL);
  orch__exec_search(path, search, argv, envp ? envp : environ);
  int e = errno;
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  for (int s = 1; s < NSIG; s++)
    if (have[s]) orch__raw_sigaction(s, &saved[s], NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (e == ENOENT) return orch__failf(L, "ENOENT", "exec: no such file: %s", path);
  if (e == EACCES) return orch__failf(L, "EACCES", "exec: permission denied: %s", path);
  return orch__fail_errno(L, e, "exec %s", path);
}


/* ---------------------------------------------------------------- init mode */

/* As PID 1 (or a container's init), orch passes these signals on to every
 * child in the table, like tini, unless a handler of the script's is active
 * for the signal (the supervisor's ordered stop: forwarding as well would
 * stop every service at once, out of order). Reaping everything is what the
 * reaper already does. */
static void init_forward(uv_signal_t *h, int sig) {
  daemon_state *st = h->data;
  if (orch__signal_handled(st->rt, sig)) return;
  orch__proc_signal_children(st->rt, sig);
}

static void free_handle(uv_handle_t *h) { free(h); }

static void init_stop(daemon_state *st) {
  for (int i = 0; i < st->ninit; i++) {
    uv_signal_stop(st->init_sigs[i]);
    uv_close((uv_handle_t *)st->init_sigs[i], free_handle);
    st->init_sigs[i] = NULL;
  }
  st->ninit = 0;
  st->init_on = 0;
  orch__proc_set_init_active(st->rt, 0);
}

/* Whether /proc is this pid namespace's own (mounted for it: `unshare
 * --mount-proc`, a container runtime's): its "self" is the pid getpid()
 * gives. Under `unshare --pid --fork` alone it is the parent namespace's,
 * where the pids name other processes (the host's, which never end). */
static int proc_is_ours(void) {
  char buf[24];
  ssize_t n = readlink("/proc/self", buf, sizeof buf - 1);
  if (n <= 0) return 0;
  buf[n] = '\0';
  return strtol(buf, NULL, 10) == (long)getpid();
}

/* orch's children: every other process of the namespace descends from its
 * PID 1 (an orphan is reparented to it), so none is left once it has no
 * child. Counted in /proc/self/task/TID/children, which names orch in any
 * pid namespace's /proc (the count is the same in each); where that cannot
 * be read (no /proc), 1 while a child is left (waitid). */
static int count_children(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0) return 1;
    return errno == ECHILD ? 0 : -1;
  }
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char path[300];
    snprintf(path, sizeof path, "/proc/self/task/%s/children", e->d_name);
    FILE *f = fopen(path, "re");
    if (!f) continue;
    long pid;
    while (fscanf(f, "%ld", &pid) == 1) n++;
    fclose(f);
  }
  closedir(d);
  return n;
}

/* The other processes of the pid namespace, i.e. everything but us: from
 * /proc where it is the namespace's (a process that entered the namespace
 * from outside, not orch's descendant, is counted too), else orch's
 * children. */
static int count_others(void) {
  if (!proc_is_ours()) return count_children();
  DIR *d = opendir("/proc");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (!*end && pid > 0 && pid != getpid()) n++;
  }
  closedir(d);
  return n;
}

static void reap_all(void) {
  while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

/* PID 1 at exit: whatever is left in the namespace once the script (the
 * supervisor's ordered stop) is done are processes that are not orch's
 * services, e.g. orphans reparented to us. They get SIGTERM, then SIGKILL
 * after the grace period, and are reaped: exiting PID 1 would SIGKILL them
 * without a word. Blocks, but the loop is over. */
static void init_drain(daemon_state *st) {
  reap_all();
  int n = count_others();
  if (n <= 0) return;
  fprintf(stderr, "orch: init: %d process%s left after the services stopped: sending SIGTERM\n",
          n, n == 1 ? "" : "es");
  kill(-1, SIGTERM);
  struct timespec t0, now, tick = { 0, 10 * 1000 * 1000 };
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    reap_all();
    if ((n = count_others()) <= 0) return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double dt = (double)(now.tv_sec - t0.tv_sec) + (double)(now.tv_nsec - t0.tv_nsec) / 1e9;
    if (dt >= st->init_grace) break;
    nanosleep(&tick, NULL);
  }
  fprintf(stderr, "orch: init: %d process%s still there after %gs: sending SIGKILL\n",
          n, n == 1 ? "" : "es", st->init_grace);
  kill(-1, SIGKILL);
  /* KILL cannot be ignored; a process stuck in the kernel is waited for at
   * most 2 s more, then left to the kernel (which kills it with us). */
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    reap_all();
    if (count_others() <= 0) return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (now.tv_sec - t0.tv_sec >= 2) break;
    nanosleep(&tick, NULL);
  }
  fprintf(stderr, "orch: init: some processes did not end after SIGKILL\n");
}

static int proc_init_mode(lua_State *L) {
  static const char *const opts[] = { "signals", "grace", NULL };
  int sigs[32], n = 0;
  int given = 0, has_grace = 0;
  double grace = 5;
  if (!lua_isnoneornil(L, 1)) {
    orch__check_options(L, 1, opts);
    if (lua_getfield(L, 1, "grace") != LUA_TNIL) {
      int isnum;
      has_grace = 1;
      grace = lua_tonumberx(L, -1, &isnum);
      if (!isnum || !(grace >= 0 && grace <= 3600)) orch__opt_error(L, 1, "grace", "seconds (0 to 3600) expected");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "signals") != LUA_TNIL) {
      given = 1;
      if (!lua_istable(L, -1)) orch__opt_error(L, 1, "signals", lua_pushfstring(L, "table expected, got %s", luaL_typename(L, -1)));
      int t = lua_gettop(L);
      lua_Integer len = luaL_len(L, t);
      if (len > 32) orch__opt_error(L, 1, "signals", "too many signals");
      for (lua_Integer i = 1; i <= len; i++) {
        lua_rawgeti(L, t, i);
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
          orch__opt_error(L, 1, "signals", "signal names or numbers expected");
        int s = lua_type(L, -1) == LUA_TNUMBER ? (int)lua_tointeger(L, -1) : orch__signum(lua_tostring(L, -1));
        if (s <= 0 || s >= NSIG)
          orch__opt_error(L, 1, "signals", lua_pushfstring(L, "unknown signal '%s'", luaL_tolstring(L, -1, NULL)));
        if (s == SIGKILL || s == SIGSTOP || s == SIGCHLD)
          orch__opt_error(L, 1, "signals", lua_pushfstring(L, "cannot forward %s", orch__signame(s)));
        sigs[n++] = s;
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  if (!given) {
    sigs[n++] = SIGTERM;
    sigs[n++] = SIGINT;
  }
  daemon_state *st = lua_touserdata(L, lua_upvalueindex(1));
  init_stop(st);
  for (int i = 0; i < n; i++) {
    uv_signal_t *h = malloc(sizeof *h);
    if (!h) return luaL_error(L, "proc.init_mode: out of memory");
    uv_signal_init(orch__loop(L), h);
    h->data = st;
    int r = uv_signal_start(h, init_forward, sigs[i]);
    st->init_sigs[st->ninit++] = h;
    if (r < 0) {
      init_stop(st);
      return orch__fail_uv(L, "proc.init_mode", r);
    }
    uv_unref((uv_handle_t *)h);
  }
  st->init_on = 1;
  orch__proc_set_init_active(st->rt, 1);
  if (has_grace) st->init_grace = grace;
  lua_pushboolean(L, 1);
  return 1;
}


/* ---------------------------------------------------------------- daemonize */

/* What orch inherited from the process that started it: descriptors above
 * 2 without close-on-exec (orch opens every one of its own close-on-exec),
 * from the process's one scan (stream.h). */
static void record_inherited(daemon_state *st) {
  const orch__inherited_fd *list;
  int n = orch__inherited_fds(&list);
  for (int i = 0; i < n && st->ninherited < (int)(sizeof st->inherited / sizeof st->inherited[0]); i++) {
    st->inherited[st->ninherited].fd = list[i].fd;
    st->inherited[st->ninherited].dev = list[i].dev;
    st->inherited[st->ninherited].ino = list[i].ino;
    st->ninherited++;
  }
}

/* In the daemon: closes the inherited descriptors that are still the same
 * files and still inheritable (one orch adopted is close-on-exec now), except
 * the ones in keep. */
static void close_inherited(daemon_state *st, const int *keep, int nkeep) {
  for (int i = 0; i < st->ninherited; i++) {
    int fd = st->inherited[i].fd, kept = 0;
    for (int k = 0; k < nkeep; k++) if (keep[k] == fd) kept = 1;
    struct stat sb;
    int fl = fcntl(fd, F_GETFD);
    if (kept || fl < 0 || (fl & FD_CLOEXEC) || fstat(fd, &sb) < 0) continue;
    if (sb.st_dev == st->inherited[i].dev && sb.st_ino == st->inherited[i].ino) close(fd);
  }
}

typedef struct { int err; char what[120]; } daemon_report;

/* In the daemon, before it is ready: tell the original and give up. */
static void daemon_fail(int fd, int err, const char *what) {
  daemon_report r;
  memset(&r, 0, sizeof r);
  r.err = err;
  snprintf(r.what, sizeof r.what, "%s", what);
  ssize_t w = write(fd, &r, sizeof r);
  (void)w;
  _exit(1);
}

static int open_log(lua_State *L, const char *key, const char *path, int *fd) {
  /* Never blocks the loop: a FIFO without a reader fails (ENXIO). */
  *fd = orch__open_path(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (*fd >= 0) return 0;
  char op[64];
  snprintf(op, sizeof op, "daemonize: %s", key);
  orch__fail_open(L, op, path, -*fd);
  *fd = -1;
  return 3;
}

static int proc_daemonize(lua_State *L) {
  static const char *const opts[] = { "pidfile", "chdir", "umask", "stdout", "stderr", "keep_fds", NULL };
  if (lua_isnoneornil(L, 1)) { lua_settop(L, 0); lua_newtable(L); }
  orch__check_options(L, 1, opts);
  int keep[64], nkeep = 0;
  if (lua_getfield(L, 1, "keep_fds") != LUA_TNIL) {
    if (!lua_istable(L, -1)) orch__opt_error(L, 1, "keep_fds", lua_pushfstring(L, "table expected, got %s", luaL_typename(L, -1)));
    lua_Integer len = luaL_len(L, -1);
    if (len > 64) orch__opt_error(L, 1, "keep_fds", "at most 64 descriptors");
    for (lua_Integer i = 1; i <= len; i++) {
      lua_rawgeti(L, -1, i);
      int isint;
      lua_Integer fd = lua_tointegerx(L, -1, &isint);
      if (!isint || fd < 0 || fd > 0x7fffffff) orch__opt_error(L, 1, "keep_fds", "file descriptor numbers expected");
      keep[nkeep++] = (int)fd;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  const char *pidfile = orch__opt_string(L, 1, "pidfile", NULL);
  const char *dir = orch__opt_string(L, 1, "chdir", "/");
  const char *out = orch__opt_string(L, 1, "stdout", NULL);
  const char *err = orch__opt_string(L, 1, "stderr", NULL);
  int has_umask;
  lua_Integer um = orch__opt_mode(L, 1, "umask", 0, 0777, &has_umask);
  orch__check_task(L, "daemonize");
  daemon_state *st = lua_touserdata(L, lua_upvalueindex(1));

  /* Everything that can fail for a clear reason is tried here, in the
   * original process, whose caller gets the error. */
  int pfd = -1, ofd = -1, efd = -1, nfd = -1, rep[2] = { -1, -1 };
  int n = 0;
  if (pidfile) {
    pfd = open(pidfile, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (pfd < 0) {
      int e = errno;
      return orch__fail_errno(L, e, "daemonize: pidfile %s", pidfile);
    }
    /* An flock belongs to the open file description, which the daemon
     * inherits: the lock lives exactly as long as the daemon. */
    if (flock(pfd, LOCK_EX | LOCK_NB) < 0) {
      int e = errno;
      char buf[32] = "";
      ssize_t k = pread(pfd, buf, sizeof buf - 1, 0);
      if (k > 0) buf[k] = 0;
      close(pfd);
      if (e == EWOULDBLOCK)
        return orch__failf(L, "EAGAIN", "daemonize: already running (pid %d holds %s)", atoi(buf), pidfile);
      return orch__fail_errno(L, e, "daemonize: lock %s", pidfile);
    }
  }
  if (out && (n = open_log(L, "stdout", out, &ofd))) goto fail;
  if (err && (n = open_log(L, "stderr", err, &efd))) goto fail;
  nfd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (nfd < 0) { n = orch__fail(L, "daemonize: /dev/null", errno); goto fail; }
  if (pipe2(rep, O_CLOEXEC) < 0) { n = orch__fail(L, "daemonize: pipe", errno); goto fail; }

  fflush(NULL);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pid_t mid = fork();
  if (mid < 0) {
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    n = orch__fail(L, "daemonize: fork", errno);
    goto fail;
  }
  if (mid == 0) {
    /* The middle process: a new session, then a child that is not its
     * leader (so it can never acquire a controlling terminal). */
    close(rep[0]);
    if (setsid() < 0) daemon_fail(rep[1], errno, "setsid");
    pid_t d = fork();
    if (d < 0) daemon_fail(rep[1], errno, "fork");
    if (d > 0) _exit(0);
    orch__after_fork_child(L);
    if (has_umask) umask((mode_t)um);
    if (chdir(dir) < 0) {
      char what[120];
      snprintf(what, sizeof what, "chdir %s", dir);
      daemon_fail(rep[1], errno, what);
    }
    if (dup2(nfd, 0) < 0 || dup2(ofd >= 0 ? ofd : nfd, 1) < 0 || dup2(efd >= 0 ? efd : nfd, 2) < 0)
      daemon_fail(rep[1], errno, "dup2");
    close_inherited(st, keep, nkeep);
    if (pfd >= 0) {
      char buf[32];
      int len = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
      if (ftruncate(pfd, 0) < 0 || pwrite(pfd, buf, (size_t)len, 0) != len)
        daemon_fail(rep[1], errno, "write pidfile");
      st->pidfile_fd = pfd;
    }
    close(nfd);
    if (ofd >= 0) close(ofd);
    if (efd >= 0) close(efd);
    close(rep[1]);                         /* EOF without a report: ready */
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    lua_pushboolean(L, 1);
    return 1;
  }
  /* The original: wait for the middle process and for the daemon's word,
   * then end; the script goes on in the daemon. */
  close(rep[1]);
  rep[1] = -1;
  while (waitpid(mid, NULL, 0) < 0 && errno == EINTR) {}
  daemon_report r;
  ssize_t k;
  do k = read(rep[0], &r, sizeof r); while (k < 0 && errno == EINTR);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (k == (ssize_t)sizeof r) {
    n = orch__fail_errno(L, r.err, "daemonize: %s", r.what);
    goto fail;
  }
  fflush(NULL);
  _exit(0);

fail:
  if (pfd >= 0) close(pfd);
  if (ofd >= 0) close(ofd);
  if (efd >= 0) close(efd);
  if (nfd >= 0) close(nfd);
  if (rep[0] >= 0) close(rep[0]);
  if (rep[1] >= 0) close(rep[1]);
  return n;
}


/* ---------------------------------------------------------------- orch's own environment and limits */

static const char *check_envname(lua_State *L, int idx) {
  size_t len;
  const char *k = luaL_checklstring(L, idx, &len);
  if (!*k || strchr(k, '=') || strlen(k) != len)
    luaL_argerror(L, idx, "variable name expected (not empty, no '=' or zero byte)");
  return k;
}

/* orch.setenv(name, value [, overwrite]): orch's own environment, which
 * spawned children inherit (and os.getenv reads). */
static int proc_setenv(lua_State *L) {
  const char *k = check_envname(L, 1);
  if (lua_type(L, 2) != LUA_TSTRING && lua_type(L, 2) != LUA_TNUMBER)
    luaL_typeerror(L, 2, "string");
  size_t len;
  const char *v = lua_tolstring(L, 2, &len);
  if (strlen(v) != len) luaL_argerror(L, 2, "value contains a zero byte");
  int overwrite = 1;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TBOOLEAN);
    overwrite = lua_toboolean(L, 3);
  }
  orch__check_nargs(L, 3);
  if (setenv(k, v, overwrite) < 0) return orch__fail(L, "setenv", errno);
  lua_pushboolean(L, 1);
  return 1;
}

static int proc_unsetenv(lua_State *L) {
  const char *k = check_envname(L, 1);
  orch__check_nargs(L, 1);
  if (unsetenv(k) < 0) return orch__fail(L, "unsetenv", errno);
  lua_pushboolean(L, 1);
  return 1;
}

static int check_resource(lua_State *L, int idx) {
  const char *name = luaL_checkstring(L, idx);
  int res = orch__rlimit_byname(name);
  if (res < 0) luaL_argerror(L, idx, lua_pushfstring(L, "unknown limit '%s'", name));
  return res;
}

static void push_rlim(lua_State *L, rlim_t v) {
  if (v == RLIM_INFINITY) lua_pushliteral(L, "unlimited");
  else lua_pushinteger(L, (lua_Integer)v);
}

static rlim_t check_rlim(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TSTRING && strcmp(lua_tostring(L, idx), "unlimited") == 0)
    return RLIM_INFINITY;
  int isint;
  lua_Integer n = lua_tointegerx(L, idx, &isint);
  if (lua_type(L, idx) != LUA_TNUMBER || !isint || n < 0)
    luaL_argerror(L, idx, "a non-negative integer or 'unlimited' expected");
  return (rlim_t)n;
}

/* orch.getrlimit(name): soft, hard of orch itself. */
static int proc_getrlimit(lua_State *L) {
  int res = check_resource(L, 1);
  orch__check_nargs(L, 1);
  struct rlimit rl;
  if (getrlimit((__rlimit_resource_t)res, &rl) < 0) return orch__fail(L, "getrlimit", errno);
  push_rlim(L, rl.rlim_cur);
  push_rlim(L, rl.rlim_max);
  return 2;
}

/* orch.setrlimit(name, soft [, hard]): hard defaults to the current one. */
static int proc_setrlimit(lua_State *L) {
  int res = check_resource(L, 1);
  rlim_t soft = check_rlim(L, 2);
  int has_hard = !lua_isnoneornil(L, 3);
  rlim_t hard = has_hard ? check_rlim(L, 3) : 0;
  orch__check_nargs(L, 3);
  if (has_hard && hard != RLIM_INFINITY && (soft == RLIM_INFINITY || soft > hard))
    luaL_argerror(L, 2, "soft limit above hard limit");
  struct rlimit rl;
  if (!has_hard) {
    if (getrlimit((__rlimit_resource_t)res, &rl) < 0) return orch__fail(L, "setrlimit", errno);
    hard = rl.rlim_max;
  }
  rl.rlim_cur = soft;
  rl.rlim_max = hard;
  if (setrlimit((__rlimit_resource_t)res, &rl) < 0) return orch__fail(L, "setrlimit", errno);
  if (res == RLIMIT_NOFILE) orch__nofile_changed();
  lua_pushboolean(L, 1);
  return 1;
}

/* ---------------------------------------------------------------- hooks */

/* The Lua state may already be closed here: no Lua. */
static void daemon_close_hook(orch_runtime *rt, void *data) {
  daemon_state *st = data;
  if (st->init_on && getpid() == 1) init_drain(st);
  init_stop(st);
  free(st);
}

static void daemon_fork_hook(orch_runtime *rt, void *data) {
  init_stop(data);
}

static const char state_key = 0;          /* registry[&state_key]: the state */

int orch__open_daemon(lua_State *L) {
  int r = orch__proc_open(orch__rt(L), orch__loop(L));
  if (r < 0) return luaL_error(L, "orch.proc: cannot watch SIGCHLD: %s", uv_strerror(r));
  daemon_state *st;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &state_key) == LUA_TLIGHTUSERDATA) {
    st = lua_touserdata(L, -1);
  } else {
    st = calloc(1, sizeof *st);
    if (!st) luaL_error(L, "orch.proc: out of memory");
    st->rt = orch__rt(L);
    st->pidfile_fd = -1;
    st->init_grace = 5;
    record_inherited(st);
    lua_pushlightuserdata(L, st);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &state_key);
    orch__on_close(st->rt, daemon_close_hook, st);
    orch__on_fork_child(st->rt, daemon_fork_hook, st);
  }
  lua_pop(L, 1);
  static const luaL_Reg plain[] = {
    {"fork", proc_fork}, {"exec", proc_exec}, {"setenv", proc_setenv}, {"unsetenv", proc_unsetenv},
    {"getrlimit", proc_getrlimit}, {"setrlimit", proc_setrlimit}, {NULL, NULL}
  };
  static const luaL_Reg with_state[] = { {"daemonize", proc_daemonize}, {NULL, NULL} };
  static const luaL_Reg proc_with_state[] = { {"init_mode", proc_init_mode}, {NULL, NULL} };
  luaL_newlib(L, plain);
  lua_pushlightuserdata(L, st);
  luaL_setfuncs(L, with_state, 1);
  lua_newtable(L);
  lua_pushlightuserdata(L, st);
  luaL_setfuncs(L, proc_with_state, 1);
  lua_setfield(L, -2, "proc");
  return 1;
}
