/*
 * l_signal.c: orch.signal.on / ignore / default / name / number, and
 * orch.kill / orch.killpg.
 *
 * A handler is a malloc'ed uv_signal_t owned by an orch.Signal userdata. While
 * active, the userdata and the Lua function are anchored in the registry (a
 * handler the script dropped still runs) and the handle is unref'd (it never
 * keeps orch alive by itself). :stop() unanchors them and closes the handle;
 * its memory is freed in the close callback. libuv's own signal handler only
 * writes to a pipe: the Lua function runs later in a task on the loop
 * (orch__callback), never in signal context. SIGCHLD belongs to the reaper
 * in l_proc.c: a handler may watch it, but it can be neither ignored nor
 * reset here.
 *
 * orch.signal.protect (called by `orch run`, `orch every`, `orch watchdog`)
 * arms one more unref'd watcher ("guard") per signal whose default action
 * would end orch: it does nothing while a handler of the script's is active
 * for that signal, logs the first arrival otherwise, and for TERM/INT with no
 * handler passes the signal on to orch's children before ending as the
 * default action would. Guards survive orch.fork/daemonize (re-armed in the
 * child); orch.signal.ignore/default replace a signal's guard.
 *
 * Signal masks (orch.signal.sigprocmask, sigpending, sighold, sigrelse):
 * the mask is the loop thread's. For a blocked signal to really wait, no
 * other thread may take it: orch's waiter threads (l_ipc.c) block every
 * signal but their wake signal, and libuv's threadpool threads, which
 * inherit the mask of the thread that starts the pool and never change it,
 * are started by orch__threadpool_start with every asynchronous signal
 * blocked, on a throwaway loop so the runtime's loop sees no extra request.
 * Every use of the pool (mmap:sync, a host name to resolve, the terminal's
 * file reads) calls it first: the pool starts when something needs it (once
 * a process; again in a fork child, where libuv makes a new pool), so an
 * orch that never uses it has no threads. A process-directed signal can
 * then only be delivered to the loop thread, and waits while it blocks it.
 * orch.signal.raise sends a signal to the loop thread (raise(3)): libuv's
 * handler writes to its pipe and the Lua handlers run on the loop.
 * Nothing here blocks.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pthread.h>

#include "ipc.h"
#include "proc.h"
#include "runtime.h"
#include "util.h"

#define SIGNAL_MT "orch.Signal"

typedef struct {
  int active[NSIG];     /* active handlers per signal in this runtime */
  /* orch.signal.protect: one unref'd watcher per guarded signal (malloc'ed,
   * freed in its close callback), whether its first arrival was logged,
   * and an optional Lua log function (registry ref). */
  uv_signal_t *guard[NSIG];
  unsigned char logged[NSIG];
  int log_ref;
  orch_runtime *rt;
} signal_state;

typedef struct {
  uv_signal_t h;
  lua_State *L;         /* the runtime's main thread */
  signal_state *st;
  int fn_ref;
  int self_ref;
  int signum;
} osignal;

static void guard_close(signal_state *st, int sig);

static signal_state *get_state(orch_runtime *rt) {
  return *orch__slot(rt, ORCH__SLOT_SIGNAL);
}

static void on_signal(uv_signal_t *h, int signum) {
  osignal *s = h->data;
  lua_State *L = s->L;
  const char *name = orch__signame(signum);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->fn_ref);
  if (name) lua_pushstring(L, name); else lua_pushinteger(L, signum);
  orch__callback(L, 1, NULL, 0);
}

static void free_handle(uv_handle_t *h) { free(h->data); }

/* Stops and releases the handler; unanchor is 0 from __gc (the state is
 * closing and the registry refs go with it). */
static void handler_release(lua_State *L, osignal **box, int unanchor) {
  osignal *s = *box;
  if (!s) return;
  *box = NULL;
  uv_signal_stop(&s->h);
  if (s->st && s->st->active[s->signum] > 0) s->st->active[s->signum]--;
  if (unanchor) {
    luaL_unref(L, LUA_REGISTRYINDEX, s->fn_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, s->self_ref);
  }
  uv_close((uv_handle_t *)&s->h, free_handle);
}

static int handler_stop(lua_State *L) {
  osignal **box = luaL_checkudata(L, 1, SIGNAL_MT);
  handler_release(L, box, 1);
  return 0;
}

static int handler_gc(lua_State *L) {
  osignal **box = luaL_checkudata(L, 1, SIGNAL_MT);
  handler_release(L, box, 0);
  return 0;
}

static int handler_active(lua_State *L) {
  osignal **box = luaL_checkudata(L, 1, SIGNAL_MT);
  lua_pushboolean(L, *box != NULL);
  return 1;
}

static int handler_tostring(lua_State *L) {
  osignal **box = luaL_checkudata(L, 1, SIGNAL_MT);
  if (*box) {
    const char *n = orch__signame((*box)->signum);
    lua_pushfstring(L, SIGNAL_MT ": %s active", n ? n : "?");
  } else {
    lua_pushliteral(L, SIGNAL_MT ": stopped");
  }
  return 1;
}

/* A signal that can be caught: not 0, KILL or STOP. */
static int check_catchable(lua_State *L, int idx, const char *what) {
  int sig = orch__checksignal(L, idx);
  if (sig == 0 || sig == SIGKILL || sig == SIGSTOP) {
    const char *n = orch__signame(sig);
    luaL_argerror(L, idx, lua_pushfstring(L, "cannot %s %s", what, n ? n : "signal 0"));
  }
  if (sig >= NSIG) luaL_argerror(L, idx, "invalid signal number");
  if (sig == ORCH__BUDGET_SIGNAL)
    luaL_argerror(L, idx, "RTMAX-2 is orch's own (the Lua time budget's timer)");
  return sig;
}

static int signal_on(lua_State *L) {
  int sig = check_catchable(L, 1, "catch");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  orch__check_nargs(L, 2);
  orch_runtime *rt = orch__rt(L);
  signal_state *st = get_state(rt);
  osignal **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, SIGNAL_MT);
  osignal *s = calloc(1, sizeof *s);
  if (!s) return luaL_error(L, "signal.on: out of memory");
  uv_signal_init(orch_loop(rt), &s->h);
  s->h.data = s;
  s->L = orch__mainthread(rt);
  s->st = st;
  s->signum = sig;
  s->fn_ref = s->self_ref = LUA_NOREF;
  *box = s;
  int r = uv_signal_start(&s->h, on_signal, sig);
  if (r < 0) {
    *box = NULL;
    uv_close((uv_handle_t *)&s->h, free_handle);
    return orch__fail_uv(L, "signal.on", r);
  }
  uv_unref((uv_handle_t *)&s->h);
  if (st) st->active[sig]++;
  lua_pushvalue(L, 2);
  s->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  s->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

static int set_disposition(lua_State *L, const char *op, const char *verb, void (*handler)(int)) {
  int sig = check_catchable(L, 1, verb);
  orch__check_nargs(L, 1);
  if (sig == SIGCHLD)
    luaL_argerror(L, 1, "CHLD belongs to the process reaper");
  signal_state *st = get_state(orch__rt(L));
  if (st && st->active[sig] > 0)
    return orch__failf(L, "EBUSY", "%s: %s has active handlers (stop them first)", op, orch__signame(sig));
  /* The script's explicit choice replaces orch.signal.protect's guard. */
  if (st) guard_close(st, sig);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  if (sigaction(sig, &sa, NULL) < 0) return orch__fail(L, op, errno);
  if (handler == SIG_IGN) orch__proc_ignored(sig);
  lua_pushboolean(L, 1);
  return 1;
}

static int signal_ignore(lua_State *L) { return set_disposition(L, "signal.ignore", "ignore", SIG_IGN); }
static int signal_default(lua_State *L) { return set_disposition(L, "signal.default", "reset", SIG_DFL); }

/* The signal argument 1 names or numbers, or -1 when it is not a known
 * signal. Raises for a value that is neither a string nor a number. */
static int known_signal(lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING) {
    orch__checkpath(L, 1, NULL);              /* "TERM\0x" is not TERM */
    return orch__signum(lua_tostring(L, 1));
  }
  if (lua_type(L, 1) != LUA_TNUMBER) return luaL_typeerror(L, 1, "signal name or number");
  int isint;
  lua_Integer n = lua_tointegerx(L, 1, &isint);
  return isint && n > 0 && n < NSIG && orch__signame((int)n) ? (int)n : -1;
}

static int signal_name(lua_State *L) {
  int sig = known_signal(L);
  if (sig > 0) lua_pushstring(L, orch__signame(sig)); else lua_pushnil(L);
  return 1;
}

static int signal_number(lua_State *L) {
  int sig = known_signal(L);
  if (sig > 0) lua_pushinteger(L, sig); else lua_pushnil(L);
  return 1;
}

/* The refusal of a pid <= 0, which kill(2) takes as a group or every
 * process: say which. */
static int refuse_nonpositive(lua_State *L, const char *op, lua_Integer pid) {
  if (pid == 0)
    return orch__failf(L, "EPERM", "%s: refusing to signal %s 0 (orch's own process group)", op,
                       strcmp(op, "kill") == 0 ? "pid" : "process group");
  if (pid == -1)
    return orch__failf(L, "EPERM", "%s: refusing to signal %s -1 (every process orch may signal)", op,
                       strcmp(op, "kill") == 0 ? "pid" : "process group");
  /* (-pid names a process group only within pid_t's range: the negation
   * of math.mininteger would overflow.) */
  if (strcmp(op, "kill") == 0 && pid < -(lua_Integer)INT_MAX)
    return orch__failf(L, "EPERM", "kill: refusing to signal pid %I (not a process id)", pid);
  if (strcmp(op, "kill") == 0)
    return orch__failf(L, "EPERM", "kill: refusing to signal pid %I (process group %I: use orch.killpg)",
                       pid, -pid);
  return orch__failf(L, "EPERM", "killpg: refusing to signal process group %I", pid);
}

/* The integer argument 1 as given (checked by orch__checkpid already). */
static lua_Integer given_pid(lua_State *L) {
  return lua_tointeger(L, 1);
}

/* Any integer: pids <= 1 are refused with an error result, not raised. */
static int signal_kill(lua_State *L) {
  pid_t pid = orch__checkpid(L, 1, ORCH__PID_ANY);
  int sig = orch__optsignal(L, 2, SIGTERM);
  lua_Integer start = 0;
  if (!lua_isnoneornil(L, 3)) {
    start = luaL_checkinteger(L, 3);
    if (start <= 0) luaL_argerror(L, 3, "start time must be positive");
  }
  orch__check_nargs(L, 3);
  if (given_pid(L) <= 0) return refuse_nonpositive(L, "kill", given_pid(L));
  int r = orch__kill(pid, sig, 0, (unsigned long long)start);
  if (r < 0) {
    if (r == -ESRCH && start) return orch__failf(L, "ESRCH", "kill: pid %d is gone or was reused", (int)pid);
    if (r == -EXDEV && start)
      return orch__failf(L, "EXDEV", "kill: refusing to signal pid %d: its start time cannot be checked "
                         "(/proc is another pid namespace's)", (int)pid);
    return orch__kill_fail(L, "kill", pid, 0, r);
  }
  if (sig) orch__proc_signalled(orch__rt(L), pid);
  lua_pushboolean(L, 1);
  return 1;
}

static int signal_killpg(lua_State *L) {
  pid_t pgid = orch__checkpid(L, 1, ORCH__PID_ANY);
  int sig = orch__optsignal(L, 2, SIGTERM);
  orch__check_nargs(L, 2);
  if (given_pid(L) <= 0) return refuse_nonpositive(L, "killpg", given_pid(L));
  int r = orch__kill(pgid, sig, ORCH__KILL_GROUP, 0);
  if (r < 0) return orch__kill_fail(L, "killpg", pgid, ORCH__KILL_GROUP, r);
  if (sig) orch__proc_signalled(orch__rt(L), pgid);     /* its leader, when a child */
  lua_pushboolean(L, 1);
  return 1;
}

/* ---------------------------------------------------------------- masks */

/* Signals a thread must never block: the synchronous faults (blocked, a
 * real fault kills the process anyway, with no core of the right thread). */
static const int faults[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, 0 };

static void threadpool_noop(uv_work_t *req) { (void)req; }

/* How many threads libuv's pool starts (its own rule: UV_THREADPOOL_SIZE,
 * default 4, at least 1, at most 1024). */
static int pool_size(void) {
  const char *v = getenv("UV_THREADPOOL_SIZE");
  if (!v) return 4;
  int n = atoi(v);
  return n < 1 ? 1 : n > 1024 ? 1024 : n;
}

static pthread_mutex_t probe_gate = PTHREAD_MUTEX_INITIALIZER;

static void *probe_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&probe_gate);
  pthread_mutex_unlock(&probe_gate);
  return NULL;
}

/* Can the pool's threads be made now? libuv aborts the process when it
 * cannot make one (a pids limit reached: pids.max, RLIMIT_NPROC,
 * threads-max), and a host name resolved in a stop hook at a service's
 * pids limit killed orch with its services left running unsupervised. So
 * as many threads as the pool will have are made first, alive together,
 * then ended: 0, or -errno (EAGAIN) and nothing is started. What another
 * process of the same cgroup takes in the moment between their end and
 * the pool's start is not covered. */
static int probe_threads(void) {
  int n = pool_size(), made = 0, err = 0;
  pthread_t *t = malloc(sizeof *t * (size_t)n);
  if (!t) return -ENOMEM;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_mutex_lock(&probe_gate);
  for (; made < n; made++)
    if ((err = pthread_create(&t[made], &attr, probe_main, NULL)) != 0) break;
  pthread_mutex_unlock(&probe_gate);
  for (int i = 0; i < made; i++) pthread_join(t[i], NULL);
  pthread_attr_destroy(&attr);
  free(t);
  return -err;
}

/* Starts libuv's threadpool (global, sized once) with every asynchronous
 * signal blocked, so its threads never take a signal the loop thread
 * blocks. Done on a private loop: the runtime's loop gets no request. */
static int threadpool_mask(void) {
  sigset_t all, old;
  sigfillset(&all);
  for (int i = 0; faults[i]; i++) sigdelset(&all, faults[i]);
  /* SETMASK, not BLOCK: in a fork child this runs with every signal
   * blocked, and the faults must stay deliverable in the new threads. */
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int r = probe_threads();
  uv_loop_t loop;
  if (r == 0 && uv_loop_init(&loop) == 0) {
    uv_work_t req;
    if (uv_queue_work(&loop, &req, threadpool_noop, NULL) == 0) uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return r;
}

static pid_t masked_pid;   /* the process whose threadpool was started masked */

/* Lazily, at the first use of the pool in this process (a fork child's
 * libuv starts a pool of its own): an orch that never uses the pool never
 * starts its threads. Where they cannot be made, nothing is started, the
 * caller fails with the error, and the next use tries again. A supervisor
 * starts it at sup.run (orch.signal._threadpool), while its threads can
 * be made: the probe cannot hold what it probed until libuv makes its own
 * threads, and a process of the same cgroup that took the last pids in
 * between (a service's fork bomb) had libuv abort orch. */
int orch__threadpool_start(void) {
  if (masked_pid == getpid()) return 0;
  int r = threadpool_mask();
  if (r == 0) masked_pid = getpid();
  return r;
}

/* The signal on top of the stack (a name or number), which a mask may
 * hold: known, catchable, not orch's internal one. Raises naming argument
 * arg (and the list position k, if > 0). */
static int check_maskable(lua_State *L, int arg, lua_Integer k) {
  char where[48] = "";
  if (k > 0) snprintf(where, sizeof where, "signal %lld: ", (long long)k);
  int sig = -1, isint;
  if (lua_type(L, -1) == LUA_TNUMBER) {
    lua_Integer n = lua_tointegerx(L, -1, &isint);
    if (isint && n > 0 && n < NSIG && orch__signame((int)n)) sig = (int)n;
    else luaL_argerror(L, arg, lua_pushfstring(L, "%sinvalid signal number", where));
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    size_t len;
    const char *name = lua_tolstring(L, -1, &len);
    if (strlen(name) == len) sig = orch__signum(name);
    if (sig <= 0) luaL_argerror(L, arg, lua_pushfstring(L, "%sunknown signal '%s'", where, name));
  } else {
    luaL_argerror(L, arg, lua_pushfstring(L, "%ssignal name or number expected, got %s", where,
                                          luaL_typename(L, -1)));
  }
  const char *why = NULL;
  if (sig == SIGKILL || sig == SIGSTOP) why = "cannot be blocked";
  else if (sig == ORCH__IPC_WAKE_SIGNAL) why = "is orch's own (it wakes SysV waiter threads)";
  else if (sig == ORCH__BUDGET_SIGNAL) why = "is orch's own (the Lua time budget's timer)";
  if (why) luaL_argerror(L, arg, lua_pushfstring(L, "%s%s %s", where,
                                                 sig == ORCH__IPC_WAKE_SIGNAL ? "RTMAX-1" :
                                                 sig == ORCH__BUDGET_SIGNAL ? "RTMAX-2" : orch__signame(sig), why));
  return sig;
}

/* The set at argument arg: one signal, or a list of them. */
static void check_set(lua_State *L, int arg, sigset_t *set) {
  sigemptyset(set);
  if (lua_type(L, arg) == LUA_TTABLE) {
    lua_Integer n = luaL_len(L, arg);
    for (lua_Integer k = 1; k <= n; k++) {
      lua_geti(L, arg, k);
      sigaddset(set, check_maskable(L, arg, k));
      lua_pop(L, 1);
    }
    return;
  }
  lua_pushvalue(L, arg);
  sigaddset(set, check_maskable(L, arg, 0));
  lua_pop(L, 1);
}

/* [-0,+1] The signals of set as a list of names, by number; orch's
 * internal wake signal is left out. */
static void push_set(lua_State *L, const sigset_t *set) {
  lua_newtable(L);
  int n = 0;
  for (int s = 1; s < NSIG; s++) {
    if (s == ORCH__IPC_WAKE_SIGNAL || s == ORCH__BUDGET_SIGNAL || sigismember(set, s) != 1) continue;
    const char *name = orch__signame(s);
    if (name) lua_pushstring(L, name); else lua_pushinteger(L, s);
    lua_rawseti(L, -2, ++n);
  }
}

/* Changes the loop thread's mask; returns 0 or an errno. The wake signal
 * stays blocked whatever the script asks. */
static int change_mask(int how, const sigset_t *set, sigset_t *old) {
  sigset_t s = *set;
  if (how == SIG_SETMASK) sigaddset(&s, ORCH__IPC_WAKE_SIGNAL);
  else if (how == SIG_UNBLOCK) sigdelset(&s, ORCH__IPC_WAKE_SIGNAL);
  /* The budget's timer is never blocked. */
  sigdelset(&s, ORCH__BUDGET_SIGNAL);
  return pthread_sigmask(how, &s, old);
}

/* orch.signal.sigprocmask([how, set]): returns the mask before the change
 * (the current one without arguments). */
static int signal_sigprocmask(lua_State *L) {
  static const char *const hows[] = { "block", "unblock", "setmask", NULL };
  static const int how_of[] = { SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK };
  sigset_t set, old;
  if (lua_isnoneornil(L, 1)) {
    orch__check_nargs(L, 0);
    pthread_sigmask(SIG_BLOCK, NULL, &old);
    push_set(L, &old);
    return 1;
  }
  int how = how_of[luaL_checkoption(L, 1, NULL, hows)];
  luaL_checkany(L, 2);
  check_set(L, 2, &set);
  orch__check_nargs(L, 2);
  int err = change_mask(how, &set, &old);
  if (err) return orch__fail(L, "signal.sigprocmask", err);
  push_set(L, &old);
  return 1;
}

static int signal_sigpending(lua_State *L) {
  orch__check_nargs(L, 0);
  sigset_t set;
  if (sigpending(&set) < 0) return orch__fail(L, "signal.sigpending", errno);
  push_set(L, &set);
  return 1;
}

static int hold_or_release(lua_State *L, int how, const char *op) {
  sigset_t set;
  luaL_checkany(L, 1);
  check_set(L, 1, &set);
  orch__check_nargs(L, 1);
  int err = change_mask(how, &set, NULL);
  if (err) return orch__fail(L, op, err);
  lua_pushboolean(L, 1);
  return 1;
}

static int signal_sighold(lua_State *L) { return hold_or_release(L, SIG_BLOCK, "signal.sighold"); }
static int signal_sigrelse(lua_State *L) { return hold_or_release(L, SIG_UNBLOCK, "signal.sigrelse"); }

/* orch.signal._threadpool() -> true, or nil, msg, "EAGAIN" (internal: the
 * supervisor's start, see orch__threadpool_start). */
static int signal_threadpool(lua_State *L) {
  int r = orch__threadpool_start();
  if (r < 0) return orch__fail_errno(L, -r, "threadpool: cannot start its threads");
  lua_pushboolean(L, 1);
  return 1;
}

/* orch.signal.raise(sig): the signal to the loop thread, as raise(3). */
static int signal_raise(lua_State *L) {
  int sig = orch__checksignal(L, 1);
  orch__check_nargs(L, 1);
  if (sig == 0 || sig >= NSIG) luaL_argerror(L, 1, "invalid signal number");
  if (sig == ORCH__IPC_WAKE_SIGNAL) luaL_argerror(L, 1, "RTMAX-1 is orch's own (it wakes SysV waiter threads)");
  if (sig == ORCH__BUDGET_SIGNAL) luaL_argerror(L, 1, "RTMAX-2 is orch's own (the Lua time budget's timer)");
  int err = raise(sig);
  if (err) return orch__fail(L, "signal.raise", errno ? errno : EINVAL);
  lua_pushboolean(L, 1);
  return 1;
}

/* ---------------------------------------------------------------- protect */

/* The signals whose default action ends the process and that orch guards:
 * everything catchable except the faults (ILL, ABRT, BUS, FPE, SEGV: a real
 * fault must still end orch with a core dump) and PIPE (main() ignores it:
 * a write to a closed pipe fails with EPIPE, and it is no news worth a log
 * line). TERM and INT have their own rule below. Realtime signals are added
 * from SIGRTMIN. */
static const int guarded[] = {
  SIGHUP, SIGQUIT, SIGTRAP, SIGUSR1, SIGUSR2, SIGALRM, SIGSTKFLT,
  SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGSYS, SIGTERM, SIGINT, 0
};

static void guard_log(signal_state *st, const char *msg) {
  if (st->log_ref != LUA_NOREF) {
    lua_State *L = orch__mainthread(st->rt);
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->log_ref);
    lua_pushstring(L, msg);
    orch__callback(L, 1, NULL, 0);
    return;
  }
  char line[256];
  int n = snprintf(line, sizeof line, "orch: %s\n", msg);
  if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
  ssize_t w = write(2, line, (size_t)n);
  (void)w;
}

static void on_guard(uv_signal_t *h, int sig) {
  signal_state *st = h->data;
  /* A handler of the script's (or the supervisor's) wins. */
  if (st->active[sig] > 0) return;
  const char *name = orch__signame(sig);
  char msg[200];
  if (sig == SIGTERM || sig == SIGINT) {
    /* Init mode forwards these itself and orch ends when its children do. */
    if (orch__proc_init_active(st->rt)) return;
    /* No handler: end as the default action would, but never leave a
     * child running unsupervised: it gets the same signal first. */
    int n = orch__proc_signal_children(st->rt, sig);
    snprintf(msg, sizeof msg, "received SIG%s (no handler): SIG%s sent to %d child%s, exiting",
             name, name, n, n == 1 ? "" : "ren");
    char line[256];
    int len = snprintf(line, sizeof line, "orch: %s\n", msg);
    ssize_t w = write(2, line, (size_t)len);
    (void)w;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
    _exit(128 + sig);
  }
  if (st->logged[sig]) return;
  st->logged[sig] = 1;
  snprintf(msg, sizeof msg, "received SIG%s: ignored (orch logs this signal once)", name ? name : "?");
  guard_log(st, msg);
}

static void guard_free(uv_handle_t *h) { free(h); }

static int guard_start(signal_state *st, uv_loop_t *loop, int sig) {
  uv_signal_t *h = st->guard[sig];
  if (!h) {
    h = malloc(sizeof *h);
    if (!h) return UV_ENOMEM;
    uv_signal_init(loop, h);
    h->data = st;
    st->guard[sig] = h;
  }
  int r = uv_signal_start(h, on_guard, sig);
  if (r == 0) uv_unref((uv_handle_t *)h);
  return r;
}

static void guard_close(signal_state *st, int sig) {
  uv_signal_t *h = st->guard[sig];
  if (!h) return;
  st->guard[sig] = NULL;
  uv_signal_stop(h);
  uv_close((uv_handle_t *)h, guard_free);
}

/* orch.signal.protect([{log = fn}]) */
static int signal_protect(lua_State *L) {
  static const char *const opts[] = { "log", NULL };
  int has_log = 0;
  if (!lua_isnoneornil(L, 1)) {
    orch__check_options(L, 1, opts);
    if (lua_getfield(L, 1, "log") != LUA_TNIL) {
      if (!lua_isfunction(L, -1)) orch__opt_error(L, 1, "log", lua_pushfstring(L, "function expected, got %s", luaL_typename(L, -1)));
      has_log = 1;
    } else {
      lua_pop(L, 1);
    }
  }
  if (lua_gettop(L) > 2 || (lua_gettop(L) == 2 && !has_log)) luaL_argerror(L, 2, "no value expected");
  orch_runtime *rt = orch__rt(L);
  signal_state *st = get_state(rt);
  if (!st) return luaL_error(L, "orch.signal: the module is not initialised");
  if (has_log) {
    if (st->log_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, st->log_ref);
    st->log_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  for (int i = 0; guarded[i]; i++) {
    int r = guard_start(st, orch_loop(rt), guarded[i]);
    if (r < 0) return orch__fail_uv(L, "signal.protect", r);
  }
  for (int s = SIGRTMIN; s <= SIGRTMAX; s++) {
    if (s == ORCH__BUDGET_SIGNAL) continue;   /* orch's own handler */
    int r = guard_start(st, orch_loop(rt), s);
    if (r < 0) return orch__fail_uv(L, "signal.protect", r);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* orch.signal.protected(): the list of guarded signal names. */
static int signal_protected(lua_State *L) {
  signal_state *st = get_state(orch__rt(L));
  lua_newtable(L);
  int n = 0;
  for (int s = 1; st && s < NSIG; s++) {
    if (!st->guard[s] || !uv_is_active((uv_handle_t *)st->guard[s])) continue;
    lua_pushstring(L, orch__signame(s));
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

int orch__signal_handled(orch_runtime *rt, int sig) {
  signal_state *st = get_state(rt);
  return st && sig > 0 && sig < NSIG && st->active[sig] > 0;
}

/* The Lua state may be closed already: no Lua (the log ref goes with it). */
static void signal_close_hook(orch_runtime *rt, void *data) {
  signal_state *st = data;
  *orch__slot(rt, ORCH__SLOT_SIGNAL) = NULL;
  for (int s = 1; s < NSIG; s++) guard_close(st, s);
  free(st);
}

/* The runtime stopped every handle in a fork child: no handler of the
 * script's is active; the guards are armed again (a daemon keeps them). */
static void signal_fork_hook(orch_runtime *rt, void *data) {
  signal_state *st = data;
  memset(st->active, 0, sizeof st->active);
  for (int s = 1; s < NSIG; s++)
    if (st->guard[s]) guard_start(st, orch_loop(rt), s);
}

int orch__open_signal(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  void **slot = orch__slot(rt, ORCH__SLOT_SIGNAL);
  if (!*slot) {
    signal_state *st = calloc(1, sizeof *st);
    if (!st) return luaL_error(L, "orch.signal: out of memory");
    st->log_ref = LUA_NOREF;
    st->rt = rt;
    *slot = st;
    orch__on_close(rt, signal_close_hook, st);
    orch__on_fork_child(rt, signal_fork_hook, st);
  }
  static const luaL_Reg methods[] = {
    {"stop", handler_stop}, {"active", handler_active}, {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", handler_gc}, {"__close", handler_stop}, {"__tostring", handler_tostring},
    {NULL, NULL}
  };
  orch__newclass(L, SIGNAL_MT, methods, meta);
  lua_pop(L, 1);
  static const luaL_Reg sigfns[] = {
    {"on", signal_on}, {"ignore", signal_ignore}, {"default", signal_default},
    {"name", signal_name}, {"number", signal_number}, {"protect", signal_protect},
    {"protected", signal_protected}, {"sigprocmask", signal_sigprocmask},
    {"sigpending", signal_sigpending}, {"sighold", signal_sighold}, {"sigrelse", signal_sigrelse},
    {"raise", signal_raise}, {"_threadpool", signal_threadpool}, {NULL, NULL}
  };
  lua_newtable(L);
  luaL_newlib(L, sigfns);
  lua_setfield(L, -2, "signal");
  lua_pushcfunction(L, signal_kill);
  lua_setfield(L, -2, "kill");
  lua_pushcfunction(L, signal_killpg);
  lua_setfield(L, -2, "killpg");
  return 1;
}
