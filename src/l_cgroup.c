/*
 * l_cgroup.c: orch.cgroup.* and the orch.Cgroup class, the Lua face of
 * cgroup.c: info/self/of, create/open, and per cgroup procs, add, kill,
 * freeze/thaw, events, stat, usage, set (limits), wait (populated, empty, frozen,
 * thawed), remove and close.
 *
 * Ownership: an orch.Cgroup userdata embeds its orch__cgroup (fds and
 * strings, released by :close(), __close and __gc). The directories are
 * kernel objects: only :remove() deletes them, never the GC. While a task
 * waits in :wait(), a malloc'ed watcher polls a cgroup.events fd of its own
 * (uv_poll_t, UV_PRIORITIZED: the kernel wakes a poller at once on every
 * change of populated and frozen; an inotify watch of the path, the
 * fallback when no fd can be opened, is woken only from a work item) and
 * the userdata is anchored in the registry; the last waiter leaving (woken,
 * timed out, cancelled) stops the watch and drops the anchor. The handle
 * memory is freed, and the fd closed, in its close callback.
 *
 * What may block: nothing for long (cgroupfs reads and writes, see
 * cgroup.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cgroup.h"
#include "runtime.h"
#include "util.h"

#define CGROUP_MT "orch.Cgroup"
#define PIDBOX_MT "orch.cgroup.pidbox"

enum { W_EMPTY, W_POPULATED, W_FROZEN, W_THAWED };
static const char *const wait_names[] = { "empty", "populated", "frozen", "thawed", NULL };

typedef struct waiter {
  struct waiter *next, **pprev;
  lua_State *co;
  int what;
  struct ocg *owner;
} waiter;

/* What watches cgroup.events while tasks wait: a poll of an fd of its own
 * (never the held one that orch__cg_events reads: a read resets what the
 * kernel reports to that file's pollers, so a cg:populated() between a
 * change and the loop's next poll would swallow the wake-up), or inotify. */
typedef struct {
  union { uv_poll_t poll; uv_fs_event_t event; } h;
  int fd;                          /* the polled fd, or -1: inotify */
} watcher;

/* The removal of a cgroup from outside (an admin's rmdir) wakes neither a
 * poll of its cgroup.events nor an inotify watch of that file; a watch of
 * its parent directory sees it (IN_DELETE of its name). */
typedef struct {
  uv_fs_event_t h;
  char name[];                     /* the cgroup directory's name */
} gone_watch;

typedef struct ocg {
  orch__cgroup cg;                 /* cg.path == NULL: closed */
  lua_State *L;                    /* the runtime's main thread */
  watcher *watch;                  /* while tasks wait */
  gone_watch *gone;                /* while a task waits for other than empty */
  int anchor;                      /* registry ref while watching */
  waiter *waiters;
  int removed;
} ocg;

static ocg *check_cg(lua_State *L, int idx) {
  ocg *o = luaL_checkudata(L, idx, CGROUP_MT);
  if (!o->cg.path) orch__closed_error(L, CGROUP_MT);
  return o;
}

/* [-0,+3] nil, "<op>: <path>: <reason>", "<ENAME>". */
static int fail_path(lua_State *L, const char *op, const char *path, int err) {
  return orch__fail_errno(L, err, "%s: %s", op, path);
}

/* ---------------------------------------------------------------- watch */

static void waiter_unlink(waiter *w) {
  if (w->pprev) {
    *w->pprev = w->next;
    if (w->next) w->next->pprev = w->pprev;
  }
  w->next = NULL;
  w->pprev = NULL;
}

static void free_watcher(uv_handle_t *h) {
  watcher *w = (watcher *)h;
  if (w->fd >= 0) close(w->fd);
  free(w);
}

static void free_gone(uv_handle_t *h) { free(h); }

static void watch_stop(ocg *o) {
  if (o->gone) {
    uv_fs_event_stop(&o->gone->h);
    uv_close((uv_handle_t *)&o->gone->h, free_gone);
    o->gone = NULL;
  }
  watcher *w = o->watch;
  if (!w) return;
  if (w->fd >= 0) uv_poll_stop(&w->h.poll);
  else uv_fs_event_stop(&w->h.event);
  uv_close((uv_handle_t *)&w->h, free_watcher);
  o->watch = NULL;
  luaL_unref(o->L, LUA_REGISTRYINDEX, o->anchor);
  o->anchor = LUA_NOREF;
}

static int satisfied(int what, int populated, int frozen) {
  switch (what) {
    case W_EMPTY: return !populated;
    case W_POPULATED: return populated;
    case W_FROZEN: return frozen;
    default: return !frozen;
  }
}

/* "populated 1\nfrozen 0\n": the value of key (0 when absent). */
static int events_key(const char *buf, const char *key) {
  size_t n = strlen(key);
  for (const char *l = buf; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
    if (strncmp(l, key, n) == 0 && l[n] == ' ') return atoi(l + n + 1) != 0;
  return 0;
}

/* The cgroup's populated and frozen: through the watcher's own fd while it
 * polls one (the read is what re-arms its poll), else orch__cg_events. */
static int read_events(ocg *o, int *populated, int *frozen) {
  watcher *w = o->watch;
  if (!w || w->fd < 0) return orch__cg_events(&o->cg, populated, frozen);
  char buf[256];
  ssize_t k;
  do k = pread(w->fd, buf, sizeof buf - 1, 0); while (k < 0 && errno == EINTR);
  if (k < 0) return -errno;
  buf[k] = 0;
  *populated = events_key(buf, "populated");
  *frozen = events_key(buf, "frozen");
  return 0;
}

/* Wakes the waiters whose condition holds (all of them, with an error, when
 * cgroup.events cannot be read: the cgroup is gone, "ENOENT"). */
static void check_waiters(ocg *o) {
  int populated = 0, frozen = 0;
  int r = read_events(o, &populated, &frozen);
  /* The watcher's own fd of a removed cgroup's file: ENODEV. */
  if (r == -ENODEV) r = -ENOENT;
  waiter *ready = NULL;
  for (waiter *w = o->waiters, *next; w; w = next) {
    next = w->next;
    if (r == 0 && !satisfied(w->what, populated, frozen)) continue;
    waiter_unlink(w);
    w->next = ready;
    if (ready) ready->pprev = &w->next;
    w->pprev = &ready;
    ready = w;
  }
  if (!o->waiters) watch_stop(o);
  /* Woken tasks run at once and may cancel other woken waiters: those
   * unlink themselves from this local list through their pprev. */
  while (ready) {
    waiter *w = ready;
    waiter_unlink(w);
    lua_State *co = w->co;
    free(w);
    if (r == 0) {
      lua_pushboolean(co, 1);
      orch__wake(co, 1);
    } else {
      fail_path(co, "cgroup.wait", o->cg.path, -r);
      orch__wake(co, 3);
    }
  }
}

static void on_change(ocg *o) {
  lua_State *L = o->L;
  /* The anchor keeps o alive while woken tasks run. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, o->anchor);
  check_waiters(o);
  lua_pop(L, 1);
}

static void on_event(uv_fs_event_t *h, const char *file, int events, int status) {
  (void)file, (void)events, (void)status;
  on_change(h->data);
}

/* A poll error (UV_EBADF: the kernel said POLLERR without POLLPRI, which
 * cgroupfs does not do; libuv stopped the handle) leaves the read to tell:
 * it fails for a cgroup that is gone; otherwise the poll goes on. */
static void on_poll(uv_poll_t *h, int status, int events) {
  (void)events;
  if (status < 0) uv_poll_start(h, UV_PRIORITIZED, on_poll);
  on_change(h->data);
}

static void on_gone(uv_fs_event_t *h, const char *file, int events, int status) {
  (void)events;
  gone_watch *g = (gone_watch *)h;
  if (status < 0 || !file || strcmp(file, g->name) == 0) on_change(h->data);
}

/* uv_fs_event_start. libuv opens its inotify fd at the loop's first watch:
 * at EMFILE or ENFILE one of the runtime's spare fds is lent to it (the
 * loop keeps it; the spare is taken back once fds are free again, see
 * fdlimit.c), since what watches without an fd of its own must not fail
 * for want of one. */
static int event_start(uv_fs_event_t *h, uv_fs_event_cb cb, const char *path) {
  int r = uv_fs_event_start(h, cb, path, 0);
  if ((r == UV_EMFILE || r == UV_ENFILE) && orch__fd_spare_lend()) r = uv_fs_event_start(h, cb, path, 0);
  return r;
}

/* Watches the parent directory for the cgroup's removal, while a task
 * waits for something an empty cgroup may never do (populated, frozen,
 * thawed): a wait for empty is woken when it empties, before any rmdir can
 * remove it. Best effort: without it such a wait ends at its timeout. */
static void gone_start(lua_State *L, ocg *o) {
  const char *dir = o->cg.fs[0];
  const char *slash = strrchr(dir, '/');
  if (o->gone || !slash || slash == dir || !slash[1]) return;
  size_t nl = strlen(slash + 1);
  gone_watch *g = malloc(sizeof *g + nl + 1);
  char *parent = strndup(dir, (size_t)(slash - dir));
  if (!g || !parent) {
    free(g);
    free(parent);
    return;
  }
  memcpy(g->name, slash + 1, nl + 1);
  uv_fs_event_init(orch__loop(L), &g->h);
  g->h.data = o;
  int r = event_start(&g->h, on_gone, parent);
  free(parent);
  if (r < 0) {
    uv_close((uv_handle_t *)&g->h, free_gone);
    return;
  }
  o->gone = g;
}

static void waiter_cancel(void *data) {
  waiter *w = data;
  ocg *o = w->owner;
  waiter_unlink(w);
  free(w);
  if (!o->waiters) watch_stop(o);
}

/* The poll of a cgroup.events fd of the watcher's own (below the held
 * directory when there is one), or -errno. */
static int poll_start(uv_loop_t *loop, ocg *o, watcher *w) {
  /* A spare fd lent to a cgroup file just closed goes back first: a wait
   * that holds an fd must not hold a spare one. */
  orch__fd_spare_settle();
  int fd;
  if (o->cg.dir >= 0) {
    fd = openat(o->cg.dir, "cgroup.events", O_RDONLY | O_CLOEXEC);
  } else {
    char p[4200];
    if ((size_t)snprintf(p, sizeof p, "%s/cgroup.events", o->cg.fs[0]) >= sizeof p) return -ENAMETOOLONG;
    fd = open(p, O_RDONLY | O_CLOEXEC);
  }
  if (fd < 0) return -errno;
  int r = uv_poll_init(loop, &w->h.poll, fd);
  if (r < 0) {
    close(fd);
    return r;
  }
  w->fd = fd;
  w->h.poll.data = o;
  if ((r = uv_poll_start(&w->h.poll, UV_PRIORITIZED, on_poll)) < 0) {
    uv_close((uv_handle_t *)&w->h, free_watcher);
    return 1;                      /* freed */
  }
  return 0;
}

static int watch_start(lua_State *L, ocg *o) {
  if (o->watch) return 0;
  watcher *w = malloc(sizeof *w);
  if (!w) return -ENOMEM;
  w->fd = -1;
  int r = poll_start(orch__loop(L), o, w);
  if (r == 1) return -EIO;
  if (r == -ENOENT || r == -ENODEV) {
    free(w);
    return r;
  }
  if (r < 0) {
    /* No fd to spare (EMFILE, ENFILE): inotify, which needs none. */
    uv_fs_event_init(orch__loop(L), &w->h.event);
    w->h.event.data = o;
    char *p = NULL;
    if (asprintf(&p, "%s/cgroup.events", o->cg.fs[0]) < 0) {
      uv_close((uv_handle_t *)&w->h, free_watcher);
      return -ENOMEM;
    }
    r = event_start(&w->h.event, on_event, p);
    free(p);
    if (r < 0) {
      uv_close((uv_handle_t *)&w->h, free_watcher);
      return r;
    }
  }
  o->watch = w;
  lua_pushvalue(L, 1);
  o->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static int wait_common(lua_State *L, int what, double timeout) {
  ocg *o = check_cg(L, 1);
  orch__check_task(L, "wait");
  /* Already so (a stop's drain often finds its cgroup empty): no watch. */
  int populated, frozen;
  int r = o->watch ? 0 : orch__cg_events(&o->cg, &populated, &frozen);
  if (r < 0) return fail_path(L, "cgroup.wait", o->cg.path, -r);
  if (!o->watch && satisfied(what, populated, frozen)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  /* Watch first, then read: a change between the two is not lost (the
   * polled fd's read is what the kernel's next wake-up is measured from). */
  r = watch_start(L, o);
  if (r < 0) return fail_path(L, "cgroup.wait", o->cg.path, -r);
  if (what != W_EMPTY) gone_start(L, o);
  r = read_events(o, &populated, &frozen);
  if (r == -ENODEV) r = -ENOENT;
  if (r < 0 || satisfied(what, populated, frozen)) {
    if (!o->waiters) watch_stop(o);
    if (r < 0) return fail_path(L, "cgroup.wait", o->cg.path, -r);
    lua_pushboolean(L, 1);
    return 1;
  }
  waiter *w = malloc(sizeof *w);
  if (!w) {
    if (!o->waiters) watch_stop(o);
    return luaL_error(L, "wait: out of memory");
  }
  w->co = L;
  w->what = what;
  w->owner = o;
  w->next = o->waiters;
  w->pprev = &o->waiters;
  if (o->waiters) o->waiters->pprev = &w->next;
  o->waiters = w;
  return orch__await(L, timeout, "cgroup.wait", waiter_cancel, w);
}

static int cg_wait(lua_State *L) {
  check_cg(L, 1);
  int what = luaL_checkoption(L, 2, NULL, wait_names);
  double timeout = orch__optseconds(L, 3, -1);
  lua_settop(L, 1);
  return wait_common(L, what, timeout);
}

static int cg_wait_empty(lua_State *L) {
  check_cg(L, 1);
  double timeout = orch__optseconds(L, 2, -1);
  lua_settop(L, 1);
  return wait_common(L, W_EMPTY, timeout);
}

/* ---------------------------------------------------------------- objects */

/* [-0,+1] A closed orch.Cgroup (safe to collect before anything is open). */
static ocg *cg_new(lua_State *L) {
  ocg *o = lua_newuserdatauv(L, sizeof *o, 0);
  memset(o, 0, sizeof *o);
  orch__cg_init(&o->cg);
  o->L = orch__mainthread(orch__rt(L));
  o->anchor = LUA_NOREF;
  luaL_setmetatable(L, CGROUP_MT);
  return o;
}

static void check_path_arg(lua_State *L, int idx) {
  const char *path = luaL_checkstring(L, idx);
  if (strlen(path) != lua_rawlen(L, idx)) luaL_argerror(L, idx, "cgroup path contains a zero byte");
  const char *why = orch__cg_path_error(path);
  if (why) luaL_argerror(L, idx, lua_pushfstring(L, "%s: '%s'", why, path));
}

static unsigned check_controllers(lua_State *L, int idx) {
  int t = lua_getfield(L, idx, "controllers");
  unsigned want = 0;
  if (t == LUA_TTABLE) {
    want = 0;
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_geti(L, -1, i);
      const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
      unsigned bit = 0;
      for (int c = 0; name && !bit && c < ORCH__CG_NCTL; c++)
        if (strcmp(name, orch__cg_ctl_names[c]) == 0) bit = 1u << c;
      for (int c = 0; name && !bit && c < ORCH__CG_NV2ONLY; c++)
        if (strcmp(name, orch__cg_v2only_names[c]) == 0) bit = 1u << (ORCH__CG_V2ONLY + c);
      if (!bit)
        orch__opt_error(L, idx, "controllers",
                        "'memory', 'pids', 'cpu', 'io', 'cpuset', 'hugetlb', 'rdma' or 'misc' expected");
      want |= bit;
      lua_pop(L, 1);
    }
  } else if (t != LUA_TNIL) {
    orch__opt_error(L, idx, "controllers", lua_pushfstring(L, "table expected, got %s", luaL_typename(L, -1)));
  }
  lua_pop(L, 1);
  return want;
}

static int cgroup_create(lua_State *L) {
  static const char *const opts[] = { "controllers", NULL };
  check_path_arg(L, 1);
  unsigned want = 0;
  if (!lua_isnoneornil(L, 2)) {
    orch__check_options(L, 2, opts);
    want = check_controllers(L, 2);
  }
  if (lua_gettop(L) > 2) luaL_argerror(L, 3, "no value expected");
  const char *path = lua_tostring(L, 1);
  ocg *o = cg_new(L);
  int r = orch__cg_create(&o->cg, path, want);
  if (r < 0) {
    const char *why = orch__cg_why();
    if (!why) return fail_path(L, "cgroup.create", path, -r);
    if (r == -ENOTSUP) return orch__failf(L, "ENOTSUP", "cgroup.create: %s: %s", path, why);
    if (strncmp(why, "refused:", 8) == 0)
      return orch__failf(L, r == -EPERM ? "EPERM" : "EACCES", "cgroup.create: %s: %s", path, why);
    return orch__fail_errno(L, -r, "cgroup.create: %s: %s", path, why);
  }
  return 1;
}

static int cgroup_open(lua_State *L) {
  static const char *const opts[] = { "trusted", NULL };
  check_path_arg(L, 1);
  int trusted = 0;
  if (!lua_isnoneornil(L, 2)) {
    orch__check_options(L, 2, opts);
    int t = lua_getfield(L, 2, "trusted");
    if (t != LUA_TNIL && t != LUA_TBOOLEAN)
      orch__opt_error(L, 2, "trusted", lua_pushfstring(L, "boolean expected, got %s", luaL_typename(L, -1)));
    trusted = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if (lua_gettop(L) > 2) luaL_argerror(L, 3, "no value expected");
  const char *path = lua_tostring(L, 1);
  ocg *o = cg_new(L);
  int r = orch__cg_open(&o->cg, path);
  if (r < 0) return fail_path(L, "cgroup.open", path, -r);
  if (trusted && (r = orch__cg_trusted(&o->cg)) < 0) {
    const char *why = orch__cg_why();
    orch__cg_close(&o->cg);
    if (!why) return fail_path(L, "cgroup.open", path, -r);
    return orch__failf(L, r == -EPERM ? "EPERM" : "EACCES", "cgroup.open: %s: %s", path, why);
  }
  return 1;
}

static int cgroup_of(lua_State *L) {
  lua_Integer pid = luaL_optinteger(L, 1, 0);
  if (pid < 0 || pid > 0x7fffffff) luaL_argerror(L, 1, "invalid pid");
  char buf[4096];
  int r = orch__cg_of((pid_t)pid, -1, buf, sizeof buf);
  if (r < 0) {
    if (r == -ENOENT && pid) r = -ESRCH;
    return orch__fail_errno(L, -r, "cgroup.of: pid %d", (int)pid);
  }
  lua_pushstring(L, buf);
  return 1;
}

static int cgroup_self(lua_State *L) {
  char buf[4096];
  int r = orch__cg_home(buf, sizeof buf);
  if (r < 0) return orch__fail(L, "cgroup.self", -r);
  lua_pushstring(L, buf);
  return 1;
}

static int cgroup_info(lua_State *L) {
  int err = 0;
  const orch__cg_layout *lo = orch__cg_layout_get(&err);
  if (!lo) {
    if (err == -ENOENT) return orch__failf(L, "ENOENT", "cgroup.info: no cgroup v2 hierarchy is mounted");
    return orch__fail(L, "cgroup.info", -err);
  }
  lua_createtable(L, 0, 5);
  lua_pushstring(L, lo->v2_mount);
  lua_setfield(L, -2, "mount");
  char self[4096];
  if (orch__cg_home(self, sizeof self) == 0) {
    lua_pushstring(L, self);
    lua_setfield(L, -2, "self");
  }
  lua_newtable(L);
  int hybrid = 0;
  for (int c = 0; c < ORCH__CG_NCTL; c++) {
    if (!lo->v1_mount[c][0]) continue;
    lua_pushstring(L, lo->v1_mount[c]);
    lua_setfield(L, -2, orch__cg_ctl_names[c]);
    hybrid = 1;
  }
  lua_setfield(L, -2, "v1");
  /* Where orch's cgroups can have each controller. */
  unsigned v2 = orch__cg_v2_offered();
  lua_newtable(L);
  for (int c = 0; c < ORCH__CG_NCTL; c++) {
    if (v2 & (1u << c)) lua_pushliteral(L, "v2");
    else if (lo->v1_mount[c][0]) lua_pushliteral(L, "v1");
    else continue;
    lua_setfield(L, -2, orch__cg_ctl_names[c]);
  }
  for (int c = 0; c < ORCH__CG_NV2ONLY; c++) {
    if (!(v2 & (1u << (ORCH__CG_V2ONLY + c)))) continue;
    lua_pushliteral(L, "v2");
    lua_setfield(L, -2, orch__cg_v2only_names[c]);
  }
  lua_setfield(L, -2, "controllers");
  lua_pushstring(L, hybrid ? "hybrid" : "v2");
  lua_setfield(L, -2, "layout");
  return 1;
}

/* ---------------------------------------------------------------- methods */

static int cg_path(lua_State *L) {
  ocg *o = check_cg(L, 1);
  lua_pushstring(L, o->cg.path);
  return 1;
}

static int cg_dir(lua_State *L) {
  ocg *o = check_cg(L, 1);
  lua_pushstring(L, o->cg.fs[0]);
  return 1;
}

static int cg_controllers(lua_State *L) {
  ocg *o = check_cg(L, 1);
  unsigned v2ctl = orch__cg_v2ctl(&o->cg);
  lua_createtable(L, 0, ORCH__CG_NCTL);
  for (int c = 0; c < ORCH__CG_NCTL; c++) {
    if (v2ctl & (1u << c)) lua_pushliteral(L, "v2");
    else if (o->cg.fs[1 + c]) lua_pushliteral(L, "v1");
    else continue;
    lua_setfield(L, -2, orch__cg_ctl_names[c]);
  }
  for (int c = 0; c < ORCH__CG_NV2ONLY; c++) {
    if (!(v2ctl & (1u << (ORCH__CG_V2ONLY + c)))) continue;
    lua_pushliteral(L, "v2");
    lua_setfield(L, -2, orch__cg_v2only_names[c]);
  }
  return 1;
}

static int cg_add(lua_State *L) {
  ocg *o = check_cg(L, 1);
  lua_Integer pid = luaL_checkinteger(L, 2);
  if (pid <= 0 || pid > 0x7fffffff) luaL_argerror(L, 2, "invalid pid");
  int r = orch__cg_add(&o->cg, (pid_t)pid);
  if (r < 0) return fail_path(L, "cgroup.add", o->cg.path, -r);
  lua_pushboolean(L, 1);
  return 1;
}

typedef struct { void *p; } pidbox;

static int pidbox_close(lua_State *L) {
  pidbox *b = luaL_checkudata(L, 1, PIDBOX_MT);
  free(b->p);
  b->p = NULL;
  return 0;
}

static int cg_procs(lua_State *L) {
  static const char *const opts[] = { "recursive", NULL };
  ocg *o = check_cg(L, 1);
  int recursive = 1;
  if (!lua_isnoneornil(L, 2)) {
    orch__check_options(L, 2, opts);
    recursive = orch__opt_boolean(L, 2, "recursive", 1);
  }
  pidbox *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->p = NULL;
  luaL_setmetatable(L, PIDBOX_MT);
  lua_toclose(L, -1);
  size_t n;
  pid_t *pids;
  int r = orch__cg_procs(&o->cg, recursive, &pids, &n);
  if (r < 0) return fail_path(L, "cgroup.procs", o->cg.path, -r);
  b->p = pids;
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushinteger(L, pids[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int cg_children(lua_State *L) {
  ocg *o = check_cg(L, 1);
  pidbox *b = lua_newuserdatauv(L, sizeof *b, 0);
  b->p = NULL;
  luaL_setmetatable(L, PIDBOX_MT);
  lua_toclose(L, -1);
  size_t n;
  char *names;
  int r = orch__cg_children(&o->cg, &names, &n);
  if (r < 0) return fail_path(L, "cgroup.children", o->cg.path, -r);
  b->p = names;
  lua_createtable(L, (int)n, 0);
  const char *q = names;
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, q);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
    q += strlen(q) + 1;
  }
  return 1;
}

/* The `except` option of cg:kill: a pid or a list of at most KILL_EXCEPT
 * pids, into skip; returns how many. */
#define KILL_EXCEPT 64
static size_t kill_except(lua_State *L, int idx, pid_t *skip) {
  lua_getfield(L, idx, "except");
  size_t n = 0;
  if (lua_isinteger(L, -1)) {
    lua_Integer v = lua_tointeger(L, -1);
    if (v < 1 || v > INT32_MAX) orch__opt_error(L, idx, "except", "invalid pid");
    skip[n++] = (pid_t)v;
  } else if (lua_istable(L, -1)) {
    lua_Integer len = luaL_len(L, -1);
    if (len > KILL_EXCEPT) orch__opt_error(L, idx, "except", "at most 64 pids");
    for (lua_Integer i = 1; i <= len; i++) {
      lua_geti(L, -1, i);
      int isint;
      lua_Integer v = lua_tointegerx(L, -1, &isint);
      if (!isint || v < 1 || v > INT32_MAX) orch__opt_error(L, idx, "except", "list of pids expected");
      skip[n++] = (pid_t)v;
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    orch__opt_error(L, idx, "except", "pid or list of pids expected");
  }
  lua_pop(L, 1);
  return n;
}

static int cg_kill(lua_State *L) {
  static const char *const opts[] = { "list", "except", NULL };
  ocg *o = check_cg(L, 1);
  int sig = orch__optsignal(L, 2, SIGKILL);
  int flags = 0;
  pid_t skip[KILL_EXCEPT];
  size_t nskip = 0;
  if (!lua_isnoneornil(L, 3)) {
    orch__check_options(L, 3, opts);
    if (orch__opt_boolean(L, 3, "list", 0)) flags |= ORCH__CG_KILL_LIST;
    nskip = kill_except(L, 3, skip);
  }
  int sent, r = orch__cg_kill(&o->cg, sig, flags, skip, nskip, &sent);
  if (r == -EPERM)
    return orch__failf(L, "EPERM", "cgroup.kill: %s: refusing to signal the cgroup orch runs in", o->cg.path);
  if (r < 0 && sent > 0) {
    /* Some processes have the signal: how many is a 4th value. */
    orch__fail_errno(L, -r, "cgroup.kill: %s: %d signalled, not every one", o->cg.path, sent);
    lua_pushinteger(L, sent);
    return 4;
  }
  if (r < 0) return fail_path(L, "cgroup.kill", o->cg.path, -r);
  lua_pushinteger(L, r);
  return 1;
}

/* orch.cgroup._kill_rest(parent, cgs, pids, sig) -> n (internal: the
 * supervisor's first pass of a stop, Instance.signal_rests): sig to every
 * process of each cgs[i] but pids[i] (its main process, signalled
 * already), as cgs[i]:kill(sig, { except = pids[i] }) each, in one call.
 * Where every one of them is a child of parent and parent has no other
 * cgroup below it (its cgroup.stat's nr_descendants, one read), each is a
 * leaf: listed alone, without the fstat of its directory that asks
 * whether a cgroup is below it (a stop of 100 asked 100 times). Errors
 * are left out (a cgroup gone meanwhile has nothing to signal). Returns
 * how many processes it signalled. */
static int cgroup_kill_rest(lua_State *L) {
  ocg *parent = luaL_testudata(L, 1, CGROUP_MT);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TTABLE);
  int sig = orch__optsignal(L, 4, SIGTERM);
  lua_Integer n = luaL_len(L, 2);
  int flags = 0;
  if (parent && parent->cg.path && n > 0 && orch__cg_descendants(&parent->cg) == n) {
    size_t pl = strlen(parent->cg.fs[0]);
    flags = ORCH__CG_KILL_LEAF;
    for (lua_Integer i = 1; i <= n && flags; i++) {
      lua_geti(L, 2, i);
      ocg *o = luaL_testudata(L, -1, CGROUP_MT);
      const char *d = o && o->cg.path ? o->cg.fs[0] : NULL;
      if (!d || strncmp(d, parent->cg.fs[0], pl) != 0 || d[pl] != '/' || strchr(d + pl + 1, '/')) flags = 0;
      lua_pop(L, 1);
    }
  }
  lua_Integer count = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, 2, i);
    lua_geti(L, 3, i);
    ocg *o = luaL_testudata(L, -2, CGROUP_MT);
    lua_Integer pid = lua_tointeger(L, -1);
    if (o && o->cg.path && pid > 0 && pid <= INT32_MAX) {
      pid_t skip = (pid_t)pid;
      int sent;
      orch__cg_kill(&o->cg, sig, flags, &skip, 1, &sent);
      count += sent;
    }
    lua_pop(L, 2);
  }
  lua_pushinteger(L, count);
  return 1;
}

static int freeze(lua_State *L, int on) {
  ocg *o = check_cg(L, 1);
  const char *op = on ? "cgroup.freeze" : "cgroup.thaw";
  int r = orch__cg_freeze(&o->cg, on);
  if (r == -EPERM)
    return orch__failf(L, "EPERM", "%s: %s: refusing to freeze the cgroup orch runs in", op, o->cg.path);
  if (r < 0) return fail_path(L, op, o->cg.path, -r);
  lua_pushboolean(L, 1);
  return 1;
}

static int cg_freeze(lua_State *L) { return freeze(L, 1); }
static int cg_thaw(lua_State *L) { return freeze(L, 0); }

static int cg_events(lua_State *L) {
  ocg *o = check_cg(L, 1);
  int populated, frozen;
  int r = orch__cg_events(&o->cg, &populated, &frozen);
  if (r < 0) return fail_path(L, "cgroup.events", o->cg.path, -r);
  lua_createtable(L, 0, 2);
  lua_pushboolean(L, populated);
  lua_setfield(L, -2, "populated");
  lua_pushboolean(L, frozen);
  lua_setfield(L, -2, "frozen");
  return 1;
}

static int cg_populated(lua_State *L) {
  ocg *o = check_cg(L, 1);
  int populated;
  int r = orch__cg_events(&o->cg, &populated, NULL);
  if (r < 0) return fail_path(L, "cgroup.populated", o->cg.path, -r);
  lua_pushboolean(L, populated);
  return 1;
}

/* A field of cg:stat (absent, i.e. nil, when unknown: a filled table must
 * not keep an earlier value). */
static void set_num(lua_State *L, const char *key, long long v) {
  if (v == ORCH__CG_UNLIMITED) lua_pushnumber(L, HUGE_VAL);
  else if (v < 0) lua_pushnil(L);
  else lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, key);
}

static void set_usec(lua_State *L, const char *key, long long v) {
  if (v < 0) lua_pushnil(L);
  else lua_pushnumber(L, (double)v / 1e6);
  lua_setfield(L, -2, key);
}

/* cg:stat([t]): a new table, or t filled (a status of thousands of
 * services reuses one). */
static int cg_stat(lua_State *L) {
  ocg *o = check_cg(L, 1);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  orch__check_nargs(L, 2);
  orch__cg_stats st;
  int r = orch__cg_stat(&o->cg, &st);
  if (r < 0) return fail_path(L, "cgroup.stat", o->cg.path, -r);
  if (lua_istable(L, 2)) lua_pushvalue(L, 2);
  else lua_createtable(L, 0, 16);
  set_usec(L, "cpu", st.usage_usec);
  set_usec(L, "user", st.user_usec);
  set_usec(L, "system", st.system_usec);
  set_num(L, "nr_periods", st.nr_periods);
  set_num(L, "nr_throttled", st.nr_throttled);
  set_usec(L, "throttled", st.throttled_usec);
  set_num(L, "memory_current", st.memory_current);
  set_num(L, "memory_peak", st.memory_peak);
  set_num(L, "memory_max", st.memory_max);
  set_num(L, "pids_current", st.pids_current);
  set_num(L, "pids_max", st.pids_max);
  set_num(L, "oom", st.oom);
  set_num(L, "oom_kill", st.oom_kill);
  return 1;
}

/* cg:usage() -> cpu seconds, memory bytes (nil without memory accounting):
 * the lean read of a metrics scrape, no table. */
static int cg_usage(lua_State *L) {
  ocg *o = check_cg(L, 1);
  orch__check_nargs(L, 2);
  /* "cpu": cpu.stat alone (one file, one fd held), and whether its fd is
   * kept (within the fd budget) for the next reads. */
  static const char *const what[] = { "cpu", NULL };
  int cpu_only = !lua_isnoneornil(L, 2) && luaL_checkoption(L, 2, NULL, what) == 0;
  long long usec, mem;
  int r = orch__cg_usage(&o->cg, &usec, cpu_only ? NULL : &mem);
  if (r < 0) return fail_path(L, "cgroup.usage", o->cg.path, -r);
  if (usec < 0) lua_pushnil(L);
  else lua_pushnumber(L, (double)usec / 1e6);
  if (cpu_only) {
    lua_pushboolean(L, o->cg.acct[0] >= 0);
    return 2;
  }
  if (mem < 0) lua_pushnil(L);
  else lua_pushinteger(L, (lua_Integer)mem);
  return 2;
}

/* ---------------------------------------------------------------- limits */

typedef struct { long long value, arg; } limit_val;

static void limit_error(lua_State *L, int arg, const char *name, const char *expected) {
  luaL_argerror(L, arg, lua_pushfstring(L, "limit '%s': %s", name, expected));
}

static long long parse_bytes(lua_State *L, int arg, const char *name, int idx) {
  const char *expected = "bytes (an integer, or a string like '256M'), or 'max' expected";
  if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Number n = lua_tonumber(L, idx);
    if (n == HUGE_VAL) return ORCH__CG_UNLIMITED;
    int isint;
    lua_Integer v = lua_tointegerx(L, idx, &isint);
    if (!isint || v < 0) limit_error(L, arg, name, expected);
    return v;
  }
  if (lua_type(L, idx) != LUA_TSTRING) limit_error(L, arg, name, expected);
  const char *s = lua_tostring(L, idx);
  if (strcmp(s, "max") == 0) return ORCH__CG_UNLIMITED;
  char *e;
  errno = 0;
  long long v = strtoll(s, &e, 10);
  if (e == s || v < 0 || errno || *s == '-' || *s == '+' || *s == ' ') limit_error(L, arg, name, expected);
  int shift = 0;
  switch (*e) {
    case 'k': case 'K': shift = 10; e++; break;
    case 'm': case 'M': shift = 20; e++; break;
    case 'g': case 'G': shift = 30; e++; break;
    case 't': case 'T': shift = 40; e++; break;
    default: break;
  }
  if (*e || (shift && v > (LLONG_MAX >> shift))) limit_error(L, arg, name, expected);
  return v << shift;
}

static long long parse_count(lua_State *L, int arg, const char *name, int idx, long long lo, long long hi,
                             int allow_max, const char *expected) {
  if (allow_max && lua_type(L, idx) == LUA_TSTRING && strcmp(lua_tostring(L, idx), "max") == 0)
    return ORCH__CG_UNLIMITED;
  if (allow_max && lua_type(L, idx) == LUA_TNUMBER && lua_tonumber(L, idx) == HUGE_VAL)
    return ORCH__CG_UNLIMITED;
  int isint;
  lua_Integer v = lua_tointegerx(L, idx, &isint);
  if (lua_type(L, idx) != LUA_TNUMBER || !isint || v < lo || v > hi) limit_error(L, arg, name, expected);
  return v;
}

static limit_val parse_cpu_max(lua_State *L, int arg, int idx) {
  const char *expected = "'50%', 'max', 'QUOTA PERIOD' (microseconds) or { quota, period } expected";
  limit_val lv = { ORCH__CG_UNLIMITED, 100000 };
  if (lua_type(L, idx) == LUA_TTABLE) {
    lua_rawgeti(L, idx, 1);
    lua_rawgeti(L, idx, 2);
    int isint1, isint2;
    lua_Integer q = lua_tointegerx(L, -2, &isint1), p = lua_tointegerx(L, -1, &isint2);
    if (!isint1 || !isint2 || q < 1000 || p < 1000 || p > 1000000) limit_error(L, arg, "cpu_max", expected);
    lua_pop(L, 2);
    lv.value = q;
    lv.arg = p;
    return lv;
  }
  if (lua_type(L, idx) != LUA_TSTRING) limit_error(L, arg, "cpu_max", expected);
  const char *s = lua_tostring(L, idx);
  if (strcmp(s, "max") == 0) return lv;
  char *e;
  double pct = strtod(s, &e);
  if (e != s && strcmp(e, "%") == 0 && pct > 0 && pct <= 100000 && *s >= '0' && *s <= '9') {
    lv.value = (long long)(pct * 1000.0 + 0.5);      /* of a 100 ms period */
    if (lv.value < 1000) limit_error(L, arg, "cpu_max", "at least 1% (1 ms of each 100 ms)");
    return lv;
  }
  long long q, p;
  char tail;
  if (sscanf(s, "%lld %lld%c", &q, &p, &tail) == 2 && q >= 1000 && p >= 1000 && p <= 1000000) {
    lv.value = q;
    lv.arg = p;
    return lv;
  }
  limit_error(L, arg, "cpu_max", expected);
  return lv;
}

/* Reads limit `which` from the value at idx (raises when invalid). */
static limit_val parse_limit(lua_State *L, int arg, int which, int idx) {
  limit_val lv = { 0, 0 };
  const char *name = orch__cg_limit_names[which];
  switch (which) {
    case ORCH__CG_MEMORY_MAX: case ORCH__CG_MEMORY_HIGH: case ORCH__CG_SWAP_MAX:
      lv.value = parse_bytes(L, arg, name, idx);
      break;
    case ORCH__CG_PIDS_MAX:
      lv.value = parse_count(L, arg, name, idx, 0, 0x7fffffff, 1, "a count >= 0 or 'max' expected");
      break;
    case ORCH__CG_CPU_MAX:
      lv = parse_cpu_max(L, arg, idx);
      break;
    default:
      lv.value = parse_count(L, arg, name, idx, 1, 10000, 0, "an integer from 1 to 10000 expected");
  }
  return lv;
}

static int limit_index(lua_State *L, int arg, int idx) {
  const char *name = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : NULL;
  for (int i = 0; name && i < ORCH__CG_NLIMITS; i++)
    if (strcmp(name, orch__cg_limit_names[i]) == 0) return i;
  if (!name) luaL_argerror(L, arg, "limit names are strings");
  luaL_argerror(L, arg, lua_pushfstring(L, "unknown limit '%s'", name));
  return -1;
}

static int apply(lua_State *L, ocg *o, int which, limit_val lv) {
  const char *where;
  int r = orch__cg_set(&o->cg, which, lv.value, lv.arg, &where);
  if (r == -ENOTSUP)
    return orch__failf(L, "ENOTSUP", "cgroup.set: %s: %s: %s", o->cg.path, orch__cg_limit_names[which], where);
  if (r < 0) {
    return orch__fail_errno(L, -r, "cgroup.set: %s: %s (%s)", o->cg.path, orch__cg_limit_names[which], where);
  }
  return 0;
}

/* cg:set{ name = value, ... } or cg:set(name, value): every value is
 * checked before the first is written; they are written in the order of
 * orch__cg_limit_names (memory first). */
static int cg_set(lua_State *L) {
  ocg *o = check_cg(L, 1);
  limit_val vals[ORCH__CG_NLIMITS];
  int has[ORCH__CG_NLIMITS] = { 0 };
  if (lua_type(L, 2) == LUA_TTABLE) {
    if (lua_gettop(L) > 2) luaL_argerror(L, 3, "no value expected");
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      int which = limit_index(L, 2, -2);
      vals[which] = parse_limit(L, 2, which, lua_gettop(L));
      has[which] = 1;
      lua_pop(L, 1);
    }
  } else {
    luaL_checkstring(L, 2);
    int which = limit_index(L, 2, 2);
    luaL_checkany(L, 3);
    vals[which] = parse_limit(L, 3, which, 3);
    has[which] = 1;
  }
  for (int i = 0; i < ORCH__CG_NLIMITS; i++)
    if (has[i] && apply(L, o, i, vals[i])) return 3;
  lua_pushboolean(L, 1);
  return 1;
}

/* ---------------------------------------------------------------- lifetime */

static int cg_remove(lua_State *L) {
  static const char *const opts[] = { "recursive", NULL };
  ocg *o = check_cg(L, 1);
  int recursive = 0;
  if (!lua_isnoneornil(L, 2)) {
    orch__check_options(L, 2, opts);
    recursive = orch__opt_boolean(L, 2, "recursive", 0);
  }
  int r = orch__cg_remove(&o->cg, recursive);
  if (r < 0) return fail_path(L, "cgroup.remove", o->cg.path, -r);
  o->removed = 1;
  lua_pushboolean(L, 1);
  return 1;
}

/* Tasks still waiting are woken with an error: a closed cgroup reports
 * nothing more. */
static void release(ocg *o, int wake) {
  while (o->waiters) {
    waiter *w = o->waiters;
    waiter_unlink(w);
    lua_State *co = w->co;
    free(w);
    if (wake) {
      orch__failf(co, "ECANCELED", "cgroup.wait: %s: closed", o->cg.path);
      orch__wake(co, 3);
    }
  }
  watch_stop(o);
  orch__cg_close(&o->cg);
}

static int cg_close(lua_State *L) {
  ocg *o = luaL_checkudata(L, 1, CGROUP_MT);
  if (o->cg.path) release(o, 1);
  return 0;
}

/* Reached only when no task waits (a waiter anchors the object) or when the
 * Lua state closes: nothing is woken then. */
static int cg_gc(lua_State *L) {
  ocg *o = luaL_checkudata(L, 1, CGROUP_MT);
  if (o->cg.path) release(o, 0);
  return 0;
}

static int cg_tostring(lua_State *L) {
  ocg *o = luaL_checkudata(L, 1, CGROUP_MT);
  if (!o->cg.path) { lua_pushliteral(L, CGROUP_MT ": closed"); return 1; }
  if (o->removed) { lua_pushfstring(L, CGROUP_MT ": %s removed", o->cg.path); return 1; }
  int populated = 0, frozen = 0;
  if (orch__cg_events(&o->cg, &populated, &frozen) < 0) {
    lua_pushfstring(L, CGROUP_MT ": %s gone", o->cg.path);
    return 1;
  }
  lua_pushfstring(L, CGROUP_MT ": %s %s%s", o->cg.path, populated ? "populated" : "empty",
                  frozen ? " frozen" : "");
  return 1;
}

/* For the spawner (orch.spawn{ cgroup = cg }): the cgroup at idx, or NULL
 * when the value is not an orch.Cgroup; raises for a closed one. */
orch__cgroup *orch__cg_check(lua_State *L, int idx) {
  ocg *o = luaL_testudata(L, idx, CGROUP_MT);
  if (!o) return NULL;
  if (!o->cg.path) orch__closed_error(L, CGROUP_MT);
  return &o->cg;
}

static void forget_self(orch_runtime *rt, void *data) { orch__cg_forget_self(); }

int orch__open_cgroup(lua_State *L) {
  /* A forked child may be moved to another cgroup than orch's. */
  orch__on_fork_child(orch__rt(L), forget_self, NULL);
  static const luaL_Reg methods[] = {
    {"path", cg_path}, {"dir", cg_dir}, {"controllers", cg_controllers},
    {"add", cg_add}, {"procs", cg_procs}, {"children", cg_children}, {"kill", cg_kill},
    {"freeze", cg_freeze}, {"thaw", cg_thaw}, {"events", cg_events},
    {"populated", cg_populated}, {"stat", cg_stat}, {"usage", cg_usage}, {"set", cg_set},
    {"wait", cg_wait}, {"wait_empty", cg_wait_empty},
    {"remove", cg_remove}, {"close", cg_close}, {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__gc", cg_gc}, {"__close", cg_close}, {"__tostring", cg_tostring}, {NULL, NULL}
  };
  orch__newclass(L, CGROUP_MT, methods, meta);
  lua_pop(L, 1);
  luaL_newmetatable(L, PIDBOX_MT);
  lua_pushcfunction(L, pidbox_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, pidbox_close);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {
    {"info", cgroup_info}, {"self", cgroup_self}, {"of", cgroup_of},
    {"create", cgroup_create}, {"open", cgroup_open}, {"_kill_rest", cgroup_kill_rest}, {NULL, NULL}
  };
  lua_newtable(L);
  luaL_newlib(L, fns);
  lua_setfield(L, -2, "cgroup");
  return 1;
}
