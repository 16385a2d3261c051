/*
 * l_proc.c: the process bindings: orch.spawn and the orch.Process object it
 * returns, the group waits (orch.wait_group, orch.wait_any),
 * orch.proc.on_orphan_exit and orch.getpid/getppid. orch.spawn's options,
 * validated before anything is allocated, and the request they make are
 * spawn.c's (spawn.h); the rest of orch.proc (what /proc says) is
 * procscan.c's, registered from here. The mechanism (process table, reaper,
 * spawner, safe kill) is process.c's (proc.h); fork, exec, daemonize and
 * init mode are l_daemon.c's (its own module, merged into orch).
 *
 * Ownership: an orch.Process userdata embeds its orch__child; it is anchored
 * in the registry from spawn until its status arrives, so the GC never
 * collects a process that can still report. Tasks waiting in :wait() are
 * malloc'ed waiter records, freed when woken or cancelled, and so are tasks
 * in orch.wait_group/wait_any (process.c lists them). The set of
 * orch.OrphanWatch handlers is a registry table (registry[&orphans_key]).
 *
 * What may block: nothing on the loop thread.
 */
#include "proc.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "spawn.h"
#include "util.h"

#define SCHED_FLAG_RESET_ON_FORK_ 0x01   /* <linux/sched.h>'s SCHED_FLAG_RESET_ON_FORK */

#define PROCESS_MT "orch.Process"
#define ORPHAN_MT "orch.OrphanWatch"

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

/* What p:rusage() reports of the reaper's struct rusage. */
typedef struct {
  struct timeval utime, stime;
  long maxrss, minflt, majflt, nvcsw, nivcsw;
} kept_rusage;

typedef struct {
  orch__child child;          /* first: the reaper hands us &child */
  orch_runtime *rt;
  int state;
  int status;
  int stopsig;                /* stopped by this signal (P_RUNNING), or 0 */
  int anchor;                 /* registry ref while the status may come */
  waiter *waiters;
  /* Allocated at the exit (NULL before, or without memory then): a live
   * process does not carry it. The userdata (its 6 user values and this
   * struct) is then 256 bytes, a small block of orch's Lua allocator
   * (src/lalloc.c), instead of 328 from malloc. */
  kept_rusage *ru;
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
  p->ru = malloc(sizeof *p->ru);
  if (p->ru) {
    p->ru->utime = ru->ru_utime;
    p->ru->stime = ru->ru_stime;
    p->ru->maxrss = ru->ru_maxrss;
    p->ru->minflt = ru->ru_minflt;
    p->ru->majflt = ru->ru_majflt;
    p->ru->nvcsw = ru->ru_nvcsw;
    p->ru->nivcsw = ru->ru_nivcsw;
  }
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

static void spawn_forget(lua_State *L, int idx) {
  process *p = lua_touserdata(L, idx);
  luaL_unref(L, LUA_REGISTRYINDEX, p->anchor);
  p->anchor = LUA_NOREF;
}

static const orch__spawn_object process_spawn = {
  spawn_push, spawn_set_stdio, spawn_anchor, spawn_spawned, spawn_forget
};

static int proc_spawn(lua_State *L) {
  return orch__spawn_lua(L, &process_spawn);
}

static int proc_spawn_begin(lua_State *L) {
  return orch__spawn_begin_lua(L, &process_spawn);
}

static int process_wait(lua_State *L) {
  process *p = check_process(L, 1);
  double timeout = orch__optseconds(L, 2, -1);
  orch__check_task(L, "wait");
  if (p->state == P_EXITED) {
    orch__proc_exit_seen(p->rt, &p->child);   /* no group wait reports it now */
    /* Its exit may have been taken for on_exit handlers alone, the zombie
     * kept to the loop turn's end: reaped now, as for a waiter there at
     * the exit. */
    orch__proc_release_pid(p->rt, p->child.pid);
    return push_status(L, p->status);
  }
  if (p->state != P_RUNNING)
    return orch__failf(L, "ECHILD", "wait: process %d is not a child of this process", (int)p->child.pid);
  waiter *w = malloc(sizeof *w);
  if (!w) return luaL_error(L, "wait: out of memory");
  p->child.defer_release = 0;        /* a waiter runs at once at the exit */
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
    /* Handlers run as queued tasks: its zombie may wait for them. */
    if (!p->waiters) p->child.defer_release = 1;
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
  if (sig) orch__proc_signalled(p->rt, p->child.pid);
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
  const kept_rusage *ru = p->ru;
  if (!ru) return orch__failf(L, "ENOMEM", "rusage: no memory was left to keep it at the exit of process %d",
                              (int)p->child.pid);
  lua_createtable(L, 0, 7);
  lua_pushnumber(L, tv_seconds(ru->utime)); lua_setfield(L, -2, "utime");
  lua_pushnumber(L, tv_seconds(ru->stime)); lua_setfield(L, -2, "stime");
  lua_pushinteger(L, (lua_Integer)ru->maxrss * 1024); lua_setfield(L, -2, "maxrss");
  lua_pushinteger(L, ru->minflt); lua_setfield(L, -2, "minflt");
  lua_pushinteger(L, ru->majflt); lua_setfield(L, -2, "majflt");
  lua_pushinteger(L, ru->nvcsw); lua_setfield(L, -2, "nvcsw");
  lua_pushinteger(L, ru->nivcsw); lua_setfield(L, -2, "nivcsw");
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
  free(p->ru);
  p->ru = NULL;
  return 0;
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

/* orch.proc.reaper(): what the reaper did, as a table. */
static int proc_reaper(lua_State *L) {
  orch__check_nargs(L, 0);
  orch__reaper_stats s;
  orch__proc_reaper_stats(orch__rt(L), &s);
  lua_createtable(L, 0, 14);
  lua_pushstring(L, s.mode); lua_setfield(L, -2, "mode");
  lua_pushinteger(L, (lua_Integer)s.children); lua_setfield(L, -2, "children");
  lua_pushinteger(L, (lua_Integer)s.pidfds); lua_setfield(L, -2, "pidfds");
  lua_pushinteger(L, (lua_Integer)s.waits); lua_setfield(L, -2, "waits");
  lua_pushinteger(L, (lua_Integer)s.ring_exits); lua_setfield(L, -2, "ring_exits");
  lua_pushinteger(L, (lua_Integer)s.walks); lua_setfield(L, -2, "walks");
  lua_pushinteger(L, (lua_Integer)s.late_walks); lua_setfield(L, -2, "late_walks");
  lua_pushinteger(L, (lua_Integer)s.pidfd_exits); lua_setfield(L, -2, "pidfd_exits");
  lua_pushinteger(L, (lua_Integer)s.walk_exits); lua_setfield(L, -2, "walk_exits");
  lua_pushinteger(L, (lua_Integer)s.connector_exits); lua_setfield(L, -2, "connector_exits");
  lua_pushinteger(L, (lua_Integer)s.events); lua_setfield(L, -2, "events");
  lua_pushinteger(L, (lua_Integer)s.overflows); lua_setfield(L, -2, "overflows");
  lua_pushinteger(L, (lua_Integer)s.late_ms); lua_setfield(L, -2, "late_ms");
  lua_pushinteger(L, (lua_Integer)s.signals); lua_setfield(L, -2, "signals");
  return 1;
}

/* orch.proc._slice(us) -> true | nil, msg, ename (internal): the calling
 * (loop) thread's scheduler slice: sched_attr's sched_runtime for a fair
 * policy (Linux 6.12+, EEVDF: 100-100,000 us; 0: the kernel's default),
 * allowed without privileges; older kernels take it and ignore it. A
 * shorter slice lets a task woken on orch's CPU run within it, where with
 * the default it waits for the end of orch's slice (0.7-3 ms) and the tick
 * after it (orch's bookkeeping after a shutdown's exits, and whoever waits
 * for those exits: graph.lua). The policy and the nice value are kept.
 * While a slice is set, SCHED_FLAG_RESET_ON_FORK is too: a child spawned
 * meanwhile starts with the default slice, as it would without. The flag
 * also resets a negative nice value to 0 in a child, so with one nothing
 * is changed (EPERM). 0 clears the flag again when it was not set before
 * (an unprivileged thread may not: then it stays set). */
struct orch_sched_attr {
  uint32_t size, sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime, sched_deadline, sched_period;
};
static int slice_flag_before = -1;            /* RESET_ON_FORK before the slice; -1: none set */
static int proc_slice(lua_State *L) {
  lua_Integer us = luaL_checkinteger(L, 1);
  if (us != 0 && (us < 100 || us > 100000)) return luaL_argerror(L, 1, "0 or 100-100000 (us)");
  struct orch_sched_attr a;
  memset(&a, 0, sizeof a);
  if (syscall(SYS_sched_getattr, 0, &a, (unsigned)sizeof a, 0) < 0) return orch__fail(L, "sched_getattr", errno);
  if (a.sched_policy != SCHED_OTHER && a.sched_policy != SCHED_BATCH)
    return orch__failf(L, "EINVAL", "slice: not a fair policy (%u)", (unsigned)a.sched_policy);
  int had = (int)(a.sched_flags & SCHED_FLAG_RESET_ON_FORK_);
  a.size = sizeof a;
  a.sched_runtime = (uint64_t)us * 1000;
  if (us > 0) {
    if (a.sched_nice < 0) return orch__failf(L, "EPERM", "slice: a negative nice value (%d)", (int)a.sched_nice);
    a.sched_flags = SCHED_FLAG_RESET_ON_FORK_;
  } else {
    a.sched_flags = slice_flag_before == 0 ? 0 : (uint64_t)had;
  }
  long r = syscall(SYS_sched_setattr, 0, &a, 0);
  if (r < 0 && errno == EPERM && us == 0 && !a.sched_flags && had) {
    a.sched_flags = SCHED_FLAG_RESET_ON_FORK_;  /* not ours to clear */
    r = syscall(SYS_sched_setattr, 0, &a, 0);
  }
  if (r < 0) return orch__fail(L, "sched_setattr", errno);
  if (us > 0) { if (slice_flag_before < 0) slice_flag_before = had; }
  else slice_flag_before = -1;
  lua_pushboolean(L, 1);
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
    {"spawn", proc_spawn}, {"spawn_begin", proc_spawn_begin}, {"getpid", proc_getpid}, {"getppid", proc_getppid},
    {"wait_group", proc_wait_group}, {"wait_any", proc_wait_any},
    {NULL, NULL}
  };
  static const luaL_Reg procfns[] = {
    {"on_orphan_exit", proc_on_orphan_exit}, {"reaper", proc_reaper}, {"_slice", proc_slice}, {NULL, NULL}
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

