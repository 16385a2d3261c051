/*
 * l_proc.c: the process bindings: orch.spawn (its options, validated before
 * anything is allocated), the orch.Process object, the group waits
 * (orch.wait_group, orch.wait_any), orch.proc.on_orphan_exit and
 * orch.getpid/getppid. The mechanism (process table, reaper, spawner,
 * safe kill) is process.c's (proc.h); fork, exec, daemonize and init mode are
 * l_daemon.c's (its own module, merged into orch); the rest of orch.proc
 * (what /proc says) is procscan.c's, registered from here.
 *
 * Ownership: an orch.Process userdata embeds its orch__child; it is anchored
 * in the registry from spawn until its status arrives, so the GC never
 * collects a process that can still report. Tasks waiting in :wait() are
 * malloc'ed waiter records, freed when woken or cancelled, and so are tasks
 * in orch.wait_group/wait_any (process.c lists them). The set of
 * orch.OrphanWatch handlers is a registry table (registry[&orphans_key]).
 *
 * What may block: nothing on the loop thread, except opening stdio paths and
 * user lookups (getpwnam_r).
 */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cgroup.h"
#include "spawn.h"
#include "stream.h"
#include "util.h"

extern char **environ;

#define PROCESS_MT "orch.Process"
#define FDBOX_MT "orch.proc.fdbox"
#define ORPHAN_MT "orch.OrphanWatch"
#define DEFAULT_PATH ORCH__DEFAULT_PATH
#define MAX_EXTRA_FDS 64

static const char orphans_key = 0;   /* registry[&orphans_key]: OrphanWatch -> true */

/* The process table must exist before anything is spawned. */
static void check_state(lua_State *L) {
  if (orch__proc_devnull(orch__rt(L)) == -ENOSYS)
    luaL_error(L, "orch.proc: the module is not initialised");
}

/* ---------------------------------------------------------------- statuses */

/* [-0,+2] code, signal name: `3, nil` for exit(3), `nil, "KILL"` when killed. */
static int push_status(lua_State *L, int status) {
  if (WIFEXITED(status)) {
    lua_pushinteger(L, WEXITSTATUS(status));
    lua_pushnil(L);
  } else {
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    const char *n = orch__signame(sig);
    lua_pushnil(L);
    if (n) lua_pushstring(L, n); else lua_pushinteger(L, sig);
  }
  return 2;
}

/* ---------------------------------------------------------------- orphans */

static void orphan_exit(orch_runtime *rt, pid_t pid, int status, void *data) {
  lua_State *L = orch__mainthread(rt);
  luaL_checkstack(L, 8, NULL);
  int set = lua_gettop(L) + 1;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &orphans_key) != LUA_TTABLE) {
    lua_settop(L, set - 1);
    return;
  }
  lua_pushnil(L);
  while (lua_next(L, set)) {
    lua_pop(L, 1);
    lua_getiuservalue(L, -1, 1);          /* the handler */
    if (lua_isfunction(L, -1)) {
      lua_pushinteger(L, pid);
      push_status(L, status);
      orch__callback(L, 3, NULL, 0);     /* pops the handler too */
    } else {
      lua_pop(L, 1);
    }
  }
  lua_settop(L, set - 1);
}

/* ---------------------------------------------------------------- kill */

int orch__kill_fail(lua_State *L, const char *op, pid_t pid, int flags, int r) {
  if (r == ORCH__KILL_REFUSED) {
    if (pid <= 1)
      return orch__failf(L, "EPERM", "%s: refusing to signal pid %d", op, (int)pid);
    if ((flags & ORCH__KILL_GROUP) && pid == getpgrp())
      return orch__failf(L, "EPERM", "%s: refusing to signal orch's own process group", op);
    return orch__failf(L, "EPERM", "%s: refusing to signal orch itself", op);
  }
  return orch__fail(L, op, -r);
}

/* ---------------------------------------------------------------- Process */

enum { P_RUNNING, P_EXITED, P_FOREIGN };
enum { UVAL_STDIN = 1, UVAL_STDOUT, UVAL_STDERR, UVAL_ONEXIT, UVAL_ONSTOP, UVAL_ONCONT,
       UVAL_NSLOTS = UVAL_ONCONT };

typedef struct waiter {
  struct waiter *next, **pprev;
  lua_State *co;
} waiter;

typedef struct {
  orch__child child;          /* first: the reaper hands us &child */
  orch_runtime *rt;
  int state;
  int status;
  int stopsig;                /* stopped by this signal (P_RUNNING), or 0 */
  int anchor;                 /* registry ref while the status may come */
  waiter *waiters;
  /* What p:rusage() reports of the reaper's struct rusage (kept from the
   * exit on; the whole struct would cost every live process 144 bytes). */
  struct timeval ru_utime, ru_stime;
  long ru_maxrss, ru_minflt, ru_majflt, ru_nvcsw, ru_nivcsw;
} process;

static process *check_process(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, PROCESS_MT);
}

static void waiter_unlink(waiter *w) {
  if (w->pprev) {
    *w->pprev = w->next;
    if (w->next) w->next->pprev = w->pprev;
  }
  w->next = NULL;
  w->pprev = NULL;
}

static void waiter_cancel(void *data) {
  waiter *w = data;
  waiter_unlink(w);
  free(w);
}

/* A handler slot (on_exit, on_stop, on_continue) holds nil, the one handler
 * itself (most processes have exactly one: no list for it), or a list of
 * them in the order they were added. */
static lua_Integer handler_count(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
    case LUA_TFUNCTION: return 1;
    case LUA_TTABLE: return (lua_Integer)lua_rawlen(L, idx);
    default: return 0;
  }
}

/* [-0,+1] Handler i (1-based) of the slot value at idx. */
static void push_handler(lua_State *L, int idx, lua_Integer i) {
  if (lua_type(L, idx) == LUA_TTABLE) lua_rawgeti(L, idx, i);
  else lua_pushvalue(L, idx);
}

/* Returns whether the exit was reported here (a task waiting in p:wait(),
 * an on_exit handler); otherwise process.c keeps it for a group wait. */
static int process_exited(orch__child *c, int status, const struct rusage *ru) {
  process *p = (process *)c;
  lua_State *L = orch__mainthread(p->rt);
  p->state = P_EXITED;
  p->status = status;
  p->ru_utime = ru->ru_utime;
  p->ru_stime = ru->ru_stime;
  p->ru_maxrss = ru->ru_maxrss;
  p->ru_minflt = ru->ru_minflt;
  p->ru_majflt = ru->ru_majflt;
  p->ru_nvcsw = ru->ru_nvcsw;
  p->ru_nivcsw = ru->ru_nivcsw;
  luaL_checkstack(L, 8, NULL);
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->anchor);   /* keeps p alive below */
  int ud = lua_gettop(L);
  luaL_unref(L, LUA_REGISTRYINDEX, p->anchor);
  p->anchor = LUA_NOREF;
  int seen = p->waiters != NULL;

  lua_getiuservalue(L, ud, UVAL_ONEXIT);
  int hs = lua_gettop(L);
  lua_Integer n = handler_count(L, hs);
  if (n > 0) {
    seen = 1;
    for (lua_Integer i = 1; i <= n; i++) {
      push_handler(L, hs, i);
      push_status(L, status);
      orch__callback(L, 2, NULL, 0);
    }
    lua_pushnil(L);
    lua_setiuservalue(L, ud, UVAL_ONEXIT);
  }
  lua_pop(L, 1);
  p->stopsig = 0;
  lua_pushnil(L);
  lua_setiuservalue(L, ud, UVAL_ONSTOP);
  lua_pushnil(L);
  lua_setiuservalue(L, ud, UVAL_ONCONT);

  /* Woken tasks run right away and may cancel other waiters: those unlink
   * themselves from this local list through their pprev. */
  waiter *head = p->waiters;
  p->waiters = NULL;
  if (head) head->pprev = &head;
  while (head) {
    waiter *w = head;
    waiter_unlink(w);
    lua_State *co = w->co;
    free(w);
    push_status(co, status);
    orch__wake(co, 2);
  }
  lua_settop(L, ud - 1);
  return seen;
}

/* A stop (WIFSTOPPED) or a continue (WIFCONTINUED) of a running child: the
 * state changes and each on_stop(signal_name) or on_continue() handler runs
 * as a new task. A continue the process never stopped for (SIGCONT sent to
 * a running process) is reported too: the kernel reports it. */
static void process_stopped(orch__child *c, int status) {
  process *p = (process *)c;
  if (p->state != P_RUNNING || p->anchor == LUA_NOREF) return;
  lua_State *L = orch__mainthread(p->rt);
  luaL_checkstack(L, 8, NULL);
  int stopped = WIFSTOPPED(status);
  p->stopsig = stopped ? WSTOPSIG(status) : 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->anchor);
  int ud = lua_gettop(L);
  lua_getiuservalue(L, ud, stopped ? UVAL_ONSTOP : UVAL_ONCONT);
  int hs = lua_gettop(L);
  lua_Integer n = handler_count(L, hs);
  for (lua_Integer i = 1; i <= n; i++) {
    push_handler(L, hs, i);
    int nargs = 0;
    if (stopped) {
      const char *nm = orch__signame(p->stopsig);
      if (nm) lua_pushstring(L, nm); else lua_pushinteger(L, p->stopsig);
      nargs = 1;
    }
    orch__spawn_task(L, nargs);
    lua_pop(L, 1);
  }
  lua_settop(L, ud - 1);
}

/* In a fork child: the process is the parent's. */
static void process_forget(orch__child *c) {
  process *p = (process *)c;
  p->state = P_FOREIGN;
  luaL_unref(orch__mainthread(p->rt), LUA_REGISTRYINDEX, p->anchor);
  p->anchor = LUA_NOREF;
}

/* [-0,+1] A new orch.Process in the not-started state. */
static process *process_new(lua_State *L, orch_runtime *rt) {
  process *p = lua_newuserdatauv(L, sizeof *p, UVAL_NSLOTS);
  memset(p, 0, sizeof *p);
  p->rt = rt;
  p->state = P_FOREIGN;
  p->anchor = LUA_NOREF;
  p->child.on_exit = process_exited;
  p->child.on_forget = process_forget;
  p->child.on_stop = process_stopped;
  luaL_setmetatable(L, PROCESS_MT);
  return p;
}

orch__child *orch__process_new(lua_State *L) {
  process *p = process_new(L, orch__rt(L));
  lua_pushvalue(L, -1);
  p->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
  return &p->child;
}

void orch__process_track(lua_State *L, int idx, pid_t pid) {
  process *p = check_process(L, idx);
  if (pid <= 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, p->anchor);
    p->anchor = LUA_NOREF;
    return;
  }
  p->child.pid = pid;
  p->child.pgid = getpgrp();               /* a fork starts in orch's group */
  p->state = P_RUNNING;
  orch__child_add(p->rt, &p->child);
}

/* Closes the streams made for pipes when the spawn fails after making them. */
static void close_streams(lua_State *L, int ud) {
  for (int i = UVAL_STDIN; i <= UVAL_STDERR; i++) {
    if (lua_getiuservalue(L, ud, i) != LUA_TNIL) {
      if (lua_getfield(L, -1, "close") == LUA_TFUNCTION) {
        lua_pushvalue(L, -2);
        lua_pcall(L, 1, 0, 0);
      } else {
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_setiuservalue(L, ud, i);
  }
}

/* What orch.spawn (spawn.c) makes its orch.Process with: spawn.h. */
static orch__child *spawn_push(lua_State *L) {
  return &process_new(L, orch__rt(L))->child;
}

static void spawn_set_stdio(lua_State *L, int idx, int fd) {
  lua_setiuservalue(L, idx, UVAL_STDIN + fd);
}

static void spawn_anchor(lua_State *L, int idx) {
  process *p = lua_touserdata(L, idx);
  lua_pushvalue(L, idx);
  p->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
}

static void spawn_spawned(lua_State *L, int idx, pid_t pid) {
  process *p = lua_touserdata(L, idx);
  if (pid > 0) {
    p->state = P_RUNNING;
    return;
  }
  luaL_unref(L, LUA_REGISTRYINDEX, p->anchor);
  p->anchor = LUA_NOREF;
  close_streams(L, idx);
}

static const orch__spawn_object process_spawn = {
  spawn_push, spawn_set_stdio, spawn_anchor, spawn_spawned
};

static int proc_spawn(lua_State *L) {
  return orch__spawn_lua(L, &process_spawn);
}

static int process_wait(lua_State *L) {
  process *p = check_process(L, 1);
  double timeout = orch__optseconds(L, 2, -1);
  orch__check_task(L, "wait");
  if (p->state == P_EXITED) {
    orch__proc_exit_seen(p->rt, &p->child);   /* no group wait reports it now */
    return push_status(L, p->status);
  }
  if (p->state != P_RUNNING)
    return orch__failf(L, "ECHILD", "wait: process %d is not a child of this process", (int)p->child.pid);
  waiter *w = malloc(sizeof *w);
  if (!w) return luaL_error(L, "wait: out of memory");
  w->co = L;
  w->next = p->waiters;
  w->pprev = &p->waiters;
  if (p->waiters) p->waiters->pprev = &w->next;
  p->waiters = w;
  return orch__await(L, timeout, "wait", waiter_cancel, w);
}

/* Adds the function at index 2 to the handlers in process 1's uservalue
 * slot: the first is kept alone, a second makes the list. */
static void append_handler(lua_State *L, int slot) {
  switch (lua_getiuservalue(L, 1, slot)) {
    case LUA_TTABLE:
      lua_pushvalue(L, 2);
      lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
      break;
    case LUA_TFUNCTION:
      lua_createtable(L, 2, 0);
      lua_insert(L, -2);
      lua_rawseti(L, -2, 1);
      lua_pushvalue(L, 2);
      lua_rawseti(L, -2, 2);
      lua_setiuservalue(L, 1, slot);
      return;
    default:
      lua_pushvalue(L, 2);
      lua_setiuservalue(L, 1, slot);
      break;
  }
  lua_pop(L, 1);
}

static int process_on_exit(lua_State *L) {
  process *p = check_process(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  if (p->state == P_EXITED) {
    orch__proc_exit_seen(p->rt, &p->child);
    lua_pushvalue(L, 2);
    push_status(L, p->status);
    orch__callback(L, 2, NULL, 0);
  } else if (p->state == P_RUNNING) {
    append_handler(L, UVAL_ONEXIT);
  } else {
    return orch__failf(L, "ECHILD", "on_exit: process %d is not a child of this process", (int)p->child.pid);
  }
  lua_settop(L, 1);
  return 1;
}

/* p:on_stop(fn), p:on_continue(fn): handlers kept in a list (a uservalue)
 * until the exit. */
static int add_handler(lua_State *L, int slot, const char *what) {
  process *p = check_process(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  orch__check_nargs(L, 2);
  if (p->state == P_FOREIGN)
    return orch__failf(L, "ECHILD", "%s: process %d is not a child of this process", what, (int)p->child.pid);
  if (p->state == P_RUNNING) {
    append_handler(L, slot);
  }
  lua_settop(L, 1);
  return 1;
}

static int process_on_stop(lua_State *L) {
  return add_handler(L, UVAL_ONSTOP, "on_stop");
}

static int process_on_continue(lua_State *L) {
  return add_handler(L, UVAL_ONCONT, "on_continue");
}

static int process_kill(lua_State *L) {
  static const char *const opts[] = { "group", NULL };
  process *p = check_process(L, 1);
  int sig = orch__optsignal(L, 2, SIGTERM);
  int group = 0;
  if (!lua_isnoneornil(L, 3)) {
    orch__check_options(L, 3, opts);
    group = orch__opt_boolean(L, 3, "group", 0);
  }
  if (p->state == P_EXITED) return orch__failf(L, "ESRCH", "kill: process has exited");
  if (p->state != P_RUNNING)
    return orch__failf(L, "ECHILD", "kill: process %d is not a child of this process", (int)p->child.pid);
  /* The child is not reaped yet, so its pid cannot have been reused. */
  if (group && !p->child.group && getpgid(p->child.pid) != p->child.pid)
    return orch__failf(L, "EINVAL", "kill: process %d does not lead a process group", (int)p->child.pid);
  /* An unreaped child, its own group's leader with group: never orch, one
   * of its threads or its group. */
  int flags = (group ? ORCH__KILL_GROUP : 0) | ORCH__KILL_CHILD;
  int r = orch__kill(p->child.pid, sig, flags, 0);
  if (r < 0) return orch__kill_fail(L, "kill", p->child.pid, flags, r);
  lua_pushboolean(L, 1);
  return 1;
}

static int process_running(lua_State *L) {
  process *p = check_process(L, 1);
  lua_pushboolean(L, p->state == P_RUNNING);
  return 1;
}

static int process_status(lua_State *L) {
  process *p = check_process(L, 1);
  switch (p->state) {
    case P_RUNNING:
      if (p->stopsig) {
        const char *nm = orch__signame(p->stopsig);
        lua_pushliteral(L, "stopped");
        lua_pushnil(L);
        if (nm) lua_pushstring(L, nm); else lua_pushinteger(L, p->stopsig);
        return 3;
      }
      lua_pushliteral(L, "running");
      return 1;
    case P_EXITED:
      lua_pushstring(L, WIFEXITED(p->status) ? "exited" : "killed");
      push_status(L, p->status);
      return 3;
    default: lua_pushliteral(L, "unknown"); return 1;
  }
}

static double tv_seconds(struct timeval tv) {
  return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static int process_rusage(lua_State *L) {
  process *p = check_process(L, 1);
  if (p->state != P_EXITED) return orch__failf(L, "EBUSY", "rusage: process %d has not exited", (int)p->child.pid);
  lua_createtable(L, 0, 7);
  lua_pushnumber(L, tv_seconds(p->ru_utime)); lua_setfield(L, -2, "utime");
  lua_pushnumber(L, tv_seconds(p->ru_stime)); lua_setfield(L, -2, "stime");
  lua_pushinteger(L, (lua_Integer)p->ru_maxrss * 1024); lua_setfield(L, -2, "maxrss");
  lua_pushinteger(L, p->ru_minflt); lua_setfield(L, -2, "minflt");
  lua_pushinteger(L, p->ru_majflt); lua_setfield(L, -2, "majflt");
  lua_pushinteger(L, p->ru_nvcsw); lua_setfield(L, -2, "nvcsw");
  lua_pushinteger(L, p->ru_nivcsw); lua_setfield(L, -2, "nivcsw");
  return 1;
}

static int process_tostring(lua_State *L) {
  process *p = check_process(L, 1);
  int pid = (int)p->child.pid;
  if (p->state == P_RUNNING && p->stopsig) {
    const char *n = orch__signame(p->stopsig);
    lua_pushfstring(L, PROCESS_MT ": pid=%d stopped %s", pid, n ? n : "?");
  } else if (p->state == P_RUNNING) {
    lua_pushfstring(L, PROCESS_MT ": pid=%d running", pid);
  } else if (p->state == P_EXITED && WIFEXITED(p->status)) {
    lua_pushfstring(L, PROCESS_MT ": pid=%d exited %d", pid, WEXITSTATUS(p->status));
  } else if (p->state == P_EXITED) {
    const char *n = orch__signame(WTERMSIG(p->status));
    lua_pushfstring(L, PROCESS_MT ": pid=%d killed %s", pid, n ? n : "?");
  } else {
    lua_pushfstring(L, PROCESS_MT ": pid=%d not a child", pid);
  }
  return 1;
}

static int process_index(lua_State *L) {
  process *p = check_process(L, 1);
  const char *k = lua_tostring(L, 2);
  if (k && lua_type(L, 2) == LUA_TSTRING) {
    if (strcmp(k, "pid") == 0) { lua_pushinteger(L, p->child.pid); return 1; }
    if (strcmp(k, "stdin") == 0) { lua_getiuservalue(L, 1, UVAL_STDIN); return 1; }
    if (strcmp(k, "stdout") == 0) { lua_getiuservalue(L, 1, UVAL_STDOUT); return 1; }
    if (strcmp(k, "stderr") == 0) { lua_getiuservalue(L, 1, UVAL_STDERR); return 1; }
  }
  lua_pushvalue(L, 2);
  lua_rawget(L, lua_upvalueindex(1));
  return 1;
}

/* <close>: a scope never leaks a running child. It is killed (its group
 * when it leads one), not waited for: the reaper still reports it. */
static int process_close(lua_State *L) {
  process *p = check_process(L, 1);
  if (p->state == P_RUNNING) {
    if (p->child.group) orch__kill(p->child.pid, SIGKILL, ORCH__KILL_GROUP, 0);
    orch__kill(p->child.pid, SIGKILL, 0, 0);
  }
  return 0;
}

/* Only unanchored processes get here (exited, never started, or not ours),
 * or every process when the Lua state closes. */
static int process_gc(lua_State *L) {
  process *p = check_process(L, 1);
  if (p->state == P_RUNNING) {
    orch__child_remove(p->rt, &p->child);
    p->state = P_FOREIGN;
  }
  while (p->waiters) {
    waiter *w = p->waiters;
    waiter_unlink(w);
    free(w);
  }
  return 0;
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
                      char ***argvp, char ***envpp) {
  size_t bytes = 0, nenv = 0, ntab = 0, nkeys = 0;
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
    if (a->replace_env) {                    /* env_mode = "replace", no table */
      envp[0] = NULL;
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
  if (build_exec(L, op, &a, box, argv, envp) < 0) return -1;
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

static int spawn_failure(lua_State *L, int err, const char *step, const char *file,
                         spawn_args *a, creds *c) {
  if (strcmp(step, "exec") == 0) {
    if (err == ENOENT) return orch__failf(L, "ENOENT", "spawn: no such file: %s", file);
    if (err == EACCES) return orch__failf(L, "EACCES", "spawn: permission denied: %s", file);
    return orch__fail_errno(L, err, "spawn: exec %s", file);
  }
  if (strcmp(step, "chdir") == 0) return orch__fail_errno(L, err, "spawn: chdir %s", a->cwd);
  if (strcmp(step, "cgroup") == 0) return orch__fail_errno(L, err, "spawn: cgroup %s", a->cgroup->path);
  if (strcmp(step, "setuid") == 0) return orch__fail_errno(L, err, "spawn: setuid %d", (int)c->uid);
  if (strcmp(step, "setgid") == 0) return orch__fail_errno(L, err, "spawn: setgid %d", (int)c->gid);
  return orch__fail_errno(L, err, "spawn: %s", step);
}

int orch__spawn_lua(lua_State *L, const orch__spawn_object *obj) {
  spawn_args a;
  spawn_validate(L, &a);
  orch_runtime *rt = orch__rt(L);
  check_state(L);

  /* Phase 2: lookups that can fail. */
  creds c;
  int n = resolve_creds(L, "spawn", &a, &c);
  if (n) return n;

  /* Phase 3: memory, owned by a to-be-closed box (a raise here leaks
   * nothing): argv and envp, the process object. */
  fdbox *box = fdbox_new(L);
  char **argv, **envp;
  if (build_exec(L, "spawn", &a, box, &argv, &envp) < 0) return 3;
  const char *search_path = child_search_path(L, &a);
  orch__child *child = obj->push(L);
  int ud = lua_gettop(L);

  /* Phase 4: fds, in the box. */
  orch__fdmap map[3 + MAX_EXTRA_FDS];
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

  orch__spawn_req req = {
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

  obj->anchor(L, ud);
  const char *step = "cgroup";
  /* A child born frozen would never exec, and the vfork parent (orch)
   * would wait for it until a thaw. */
  int frozen = 0;
  if (a.cgroup && orch__cg_frozen(a.cgroup, &frozen) == 0 && frozen) {
    obj->spawned(L, ud, 0);
    return orch__failf(L, "EBUSY", "spawn: cgroup %s is frozen", a.cgroup->path);
  }
  /* Opened last and closed right after the spawn: nothing between raises. */
  int cgfds[1 + ORCH__CG_NCTL], cgdir = -1;
  /* The v2 cgroup.procs fd only while clone3 has not shown it works: the
   * fallback's child writes it. */
  int nofd = orch__spawn_into_cgroup_works();
  int pid = a.cgroup ? orch__cg_join_fds(a.cgroup, !nofd, cgfds, 1 + ORCH__CG_NCTL, &cgdir) : 0;
  if (pid >= 0) {
    req.cgroup_fds = cgfds;
    req.ncgroup_fds = pid;
    if (a.cgroup) {
      req.flags |= ORCH__SPAWN_CGROUP | (nofd ? ORCH__SPAWN_CGROUP_NOFD : 0);
      req.cgroup_dir = cgdir;
    }
    pid = orch__spawn(rt, &req, child, &step);
    for (int i = 0; i < req.ncgroup_fds; i++) close(cgfds[i]);
    if (cgdir >= 0) close(cgdir);
  }
  obj->spawned(L, ud, pid);
  if (pid < 0) return spawn_failure(L, -pid, step, argv[0], &a, &c);
  lua_pushvalue(L, ud);
  return 1;                                /* the box closes the child's ends */
}

void orch__spawn_open(lua_State *L) {
  static const luaL_Reg fdbox_meta[] = { {"__close", fdbox_close}, {"__gc", fdbox_close}, {NULL, NULL} };
  orch__newclass(L, FDBOX_MT, NULL, fdbox_meta);
  lua_pop(L, 1);
}

/* ---------------------------------------------------------------- pids */

static int proc_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

static int proc_getppid(lua_State *L) {
  lua_pushinteger(L, getppid());
  return 1;
}

/* ---------------------------------------------------------------- group waits */

/* A task in orch.wait_group / orch.wait_any (malloc'ed, freed when done or
 * cancelled). */
typedef struct {
  orch__group_wait gw;        /* first: process.c hands us &gw */
  lua_State *co;
  const char *op;
} gwaiter;

/* [-0,+3] The ECHILD triple of a group wait. */
static int group_echild(lua_State *L, const char *op, pid_t pgid) {
  if (pgid == ORCH__WAIT_ANY) return orch__failf(L, "ECHILD", "%s: orch has no child", op);
  return orch__failf(L, "ECHILD", "%s: no child of orch in process group %d", op, (int)pgid);
}

static void gwait_done(orch__group_wait *g, pid_t pid, int status) {
  gwaiter *w = (gwaiter *)g;
  lua_State *co = w->co;
  const char *op = w->op;
  pid_t pgid = g->pgid;
  free(w);
  luaL_checkstack(co, 4, NULL);
  if (pid > 0) {
    lua_pushinteger(co, pid);
    push_status(co, status);
  } else {
    group_echild(co, op, pgid);
  }
  orch__wake(co, 3);
}

static void gwait_cancel(void *data) {
  gwaiter *w = data;
  orch__proc_group_cancel(&w->gw);
  free(w);
}

/* pid, code, signal_name of the first exit in group pgid (ORCH__WAIT_ANY:
 * of any child) that nobody was told of: a kept one at once, else the
 * next. */
static int group_wait(lua_State *L, const char *op, pid_t pgid, double timeout) {
  orch_runtime *rt = orch__rt(L);
  check_state(L);
  int status;
  int pid = orch__proc_take_exit(rt, pgid, &status);
  if (pid > 0) {
    lua_pushinteger(L, pid);
    push_status(L, status);
    return 3;
  }
  if (pid < 0) return group_echild(L, op, pgid);
  gwaiter *w = malloc(sizeof *w);
  if (!w) return luaL_error(L, "%s: out of memory", op);
  w->gw.pgid = pgid;
  w->gw.done = gwait_done;
  w->co = L;
  w->op = op;
  orch__proc_group_wait(rt, &w->gw);
  return orch__await(L, timeout, op, gwait_cancel, w);
}

static int proc_wait_group(lua_State *L) {
  int isint;
  lua_Integer pgid = lua_tointegerx(L, 1, &isint);
  if (lua_type(L, 1) != LUA_TNUMBER || !isint || pgid < 0 || pgid > INT_MAX)
    return luaL_argerror(L, 1, "process group id (an integer >= 0) expected");
  double timeout = orch__optseconds(L, 2, -1);
  orch__check_nargs(L, 2);
  orch__check_task(L, "wait_group");
  return group_wait(L, "wait_group", pgid ? (pid_t)pgid : getpgrp(), timeout);
}

static int proc_wait_any(lua_State *L) {
  double timeout = orch__optseconds(L, 1, -1);
  orch__check_nargs(L, 1);
  orch__check_task(L, "wait_any");
  return group_wait(L, "wait_any", ORCH__WAIT_ANY, timeout);
}

/* ---------------------------------------------------------------- orphan watches */

static int orphan_stop(lua_State *L) {
  luaL_checkudata(L, 1, ORPHAN_MT);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &orphans_key) == LUA_TTABLE) {
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 1);
  return 0;
}

static int orphan_tostring(lua_State *L) {
  luaL_checkudata(L, 1, ORPHAN_MT);
  int active = lua_getiuservalue(L, 1, 1) != LUA_TNIL;
  lua_pushfstring(L, ORPHAN_MT ": %s", active ? "active" : "stopped");
  return 1;
}

static int proc_on_orphan_exit(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  check_state(L);
  lua_newuserdatauv(L, 0, 1);
  luaL_setmetatable(L, ORPHAN_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &orphans_key);
  lua_pushvalue(L, -2);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return 1;
}

/* p:lines(): the lines of the process's stdout (spawned with stdout =
 * "pipe"); the iterator is the stream's own (stream:lines()). */
static int process_lines(lua_State *L) {
  luaL_checkudata(L, 1, PROCESS_MT);
  lua_settop(L, 1);
  if (lua_getiuservalue(L, 1, UVAL_STDOUT) != LUA_TUSERDATA)
    return luaL_error(L, "lines: the process's stdout is not a pipe");
  lua_getfield(L, 2, "lines");             /* the stream's own method */
  lua_insert(L, 2);
  lua_call(L, 1, LUA_MULTRET);
  return lua_gettop(L) - 1;
}

/* ---------------------------------------------------------------- module */

int orch__open_proc(lua_State *L) {
  orch_runtime *rt = orch__rt(L);
  int r = orch__proc_open(rt, orch__loop(L));
  if (r < 0) return luaL_error(L, "orch.proc: cannot watch SIGCHLD: %s", uv_strerror(r));
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &orphans_key) != LUA_TTABLE) {
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &orphans_key);
    orch__proc_on_orphan(rt, orphan_exit, NULL);
  }
  lua_pop(L, 1);

  static const luaL_Reg process_methods[] = {
    {"wait", process_wait}, {"kill", process_kill}, {"on_exit", process_on_exit},
    {"running", process_running}, {"status", process_status}, {"rusage", process_rusage},
    {"on_stop", process_on_stop}, {"on_continue", process_on_continue},
    {"lines", process_lines}, {NULL, NULL}
  };
  static const luaL_Reg process_meta[] = {
    {"__gc", process_gc}, {"__close", process_close}, {"__tostring", process_tostring},
    {NULL, NULL}
  };
  orch__newclass(L, PROCESS_MT, NULL, process_meta);
  lua_newtable(L);
  luaL_setfuncs(L, process_methods, 0);
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, process_index, 1);
  lua_setfield(L, -3, "__index");
  lua_remove(L, -2);                       /* keep the methods table */
  int methods = lua_gettop(L);

  orch__spawn_open(L);
  static const luaL_Reg orphan_methods[] = { {"stop", orphan_stop}, {NULL, NULL} };
  static const luaL_Reg orphan_meta[] = { {"__close", orphan_stop}, {"__tostring", orphan_tostring}, {NULL, NULL} };
  orch__newclass(L, ORPHAN_MT, orphan_methods, orphan_meta);
  lua_pop(L, 1);

  static const luaL_Reg fns[] = {
    {"spawn", proc_spawn}, {"getpid", proc_getpid}, {"getppid", proc_getppid},
    {"wait_group", proc_wait_group}, {"wait_any", proc_wait_any},
    {NULL, NULL}
  };
  static const luaL_Reg procfns[] = {
    {"on_orphan_exit", proc_on_orphan_exit}, {NULL, NULL}
  };
  luaL_newlib(L, fns);
  luaL_newlib(L, procfns);
  orch__procscan_register(L);        /* children, sockets, tcp_listeners, ... */
  lua_setfield(L, -2, "proc");
  lua_remove(L, methods);

  /* Children that ended before orch was loaded (or while it was not
   * watching) are collected now. */
  orch__proc_reap(rt);
  return 1;
}

