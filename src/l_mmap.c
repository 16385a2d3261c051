/*
 * l_mmap.c: orch.mmap{...} and the orch.Mmap class: a file or anonymous
 * memory mapping accessed as a Region (region.h).
 *
 * Ownership: an orch.Mmap owns its mapping (munmap on :unmap(), __close or
 * __gc). The file descriptor is closed as soon as the mapping exists. An
 * anonymous mapping is MAP_SHARED by default, so children forked afterwards
 * share it.
 *
 * What may block: :sync() (msync MS_SYNC writes dirty pages to disk) runs
 * in libuv's threadpool while the task waits; the region is pinned and
 * anchored meanwhile so an :unmap() or the GC cannot pull the memory from
 * under it. open(2) uses O_NONBLOCK so a FIFO path cannot stall the loop;
 * only regular files are mapped. A file truncated by someone else while
 * mapped makes accesses past its new end fault (SIGBUS): the kernel offers
 * no way to check that from here.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "region.h"
#include "runtime.h"
#include "util.h"

#define MMAP_MT "orch.Mmap"

typedef struct {
  orch__region r;            /* first: this is a Region */
  int shared;
  int anonymous;
} ommap;

static int mmap_release(orch__region *r) {
  return munmap(r->mem, r->size) < 0 ? errno : 0;
}

static ommap *check_mmap(lua_State *L) {
  return luaL_checkudata(L, 1, MMAP_MT);
}

/* "mmap: <path>: <reason>" (the reason lower-cased as orch__fail does). */
static int fail_path(lua_State *L, const char *path, int err, const char *why) {
  if (why) return orch__failf(L, orch__errname(err), "mmap: %s: %s", path, why);
  return orch__fail_errno(L, err, "mmap: %s", path);
}

static const char *const opts[] = {
  "path", "size", "shared", "readonly", "create", "mode", "anonymous", "offset", NULL
};

static int mapping_new(lua_State *L) {
  orch__check_options(L, 1, opts);
  lua_settop(L, 1);
  const char *path = orch__opt_string(L, 1, "path", NULL);
  int anonymous = orch__opt_boolean(L, 1, "anonymous", 0);
  int shared = orch__opt_boolean(L, 1, "shared", 1);
  int readonly = orch__opt_boolean(L, 1, "readonly", 0);
  int create = orch__opt_boolean(L, 1, "create", 0);
  int mode = orch__opt_mode(L, 1, "mode", 0600, 07777, NULL);
  /* size absent: the whole file. Given, it must be >= 1 (-1 is not "the
   * whole file"). */
  lua_Integer size = orch__opt_integer(L, 1, "size", 0);
  int has_offset = lua_getfield(L, 1, "offset") != LUA_TNIL;
  lua_pop(L, 1);
  lua_Integer offset = orch__opt_integer(L, 1, "offset", 0);
  if (!path == !anonymous)
    luaL_argerror(L, 1, "exactly one of 'path' and 'anonymous = true' expected");
  long page = sysconf(_SC_PAGESIZE);
  if (offset < 0 || offset > ((lua_Integer)1 << 62) || offset % page != 0)
    orch__opt_error(L, 1, "offset", lua_pushfstring(L, "a non-negative multiple of the page size (%d) expected",
                                                    (int)page));
  lua_getfield(L, 1, "size");
  int has_size = !lua_isnil(L, -1);
  lua_pop(L, 1);
  if (has_size && (size < 1 || (lua_Unsigned)size > SIZE_MAX / 2))
    orch__opt_error(L, 1, "size", "size must be >= 1");
  if (!has_size) size = -1;
  else if (size > INT64_MAX - offset) orch__opt_error(L, 1, "size", "offset + size is out of range");
  if (anonymous) {
    if (size < 0) orch__opt_error(L, 1, "size", "required with anonymous");
    if (readonly) orch__opt_error(L, 1, "readonly", "an anonymous mapping must be writable");
    if (create) orch__opt_error(L, 1, "create", "only with 'path'");
    if (has_offset) orch__opt_error(L, 1, "offset", "only with 'path'");
  } else if (create && readonly) {
    orch__opt_error(L, 1, "create", "not with readonly");
  }
  ommap *m = (ommap *)orch__region_new(L, MMAP_MT, sizeof *m);
  int prot = PROT_READ | (readonly ? 0 : PROT_WRITE);
  int flags = shared ? MAP_SHARED : MAP_PRIVATE;
  void *base;
  if (anonymous) {
    base = mmap(NULL, (size_t)size, prot, flags | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return orch__fail(L, "mmap", errno);
  } else {
    int oflags = (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY;
    if (create) oflags |= O_CREAT;
    int fd;
    do fd = open(path, oflags, (mode_t)mode); while (fd < 0 && errno == EINTR);
    if (fd < 0) return fail_path(L, path, errno, NULL);
    struct stat st;
    int err = 0;
    const char *why = NULL;
    if (fstat(fd, &st) < 0) err = errno;
    else if (!S_ISREG(st.st_mode)) err = ENODEV, why = "not a regular file";
    else if (size < 0 && st.st_size == 0) err = EINVAL, why = "empty file (give size)";
    else if (size < 0 && st.st_size <= offset) err = EINVAL, why = "offset is at or past the end of the file";
    else if (size < 0) size = st.st_size - offset;
    else if (st.st_size - offset < size) {
      if (!create)
        err = EINVAL, why = offset ? "file is smaller than offset + size (use create = true to extend it)"
                                   : "file is smaller than size (use create = true to extend it)";
      else if (ftruncate(fd, (off_t)(offset + size)) < 0) err = errno;
    }
    if (err) {
      close(fd);
      return fail_path(L, path, err, why);
    }
    base = mmap(NULL, (size_t)size, prot, flags, fd, (off_t)offset);
    err = errno;
    close(fd);
    if (base == MAP_FAILED) return fail_path(L, path, err, NULL);
  }
  m->shared = shared;
  m->anonymous = anonymous;
  orch__region_attach(&m->r, base, (size_t)size, readonly ? ORCH__REGION_READONLY : 0, mmap_release);
  return 1;
}

/* ------------------------------------------------------------ sync */

typedef struct {
  uv_work_t req;
  orch__region *r;
  lua_State *L;              /* the runtime's main thread (for the registry) */
  lua_State *co;
  int ref;                   /* anchors the region userdata */
  int abandoned;
  int err;
} sync_req;

static void sync_work(uv_work_t *req) {
  sync_req *s = req->data;
  s->err = msync(s->r->mem, s->r->size, MS_SYNC) < 0 ? errno : 0;
}

static void sync_done(uv_work_t *req, int status) {
  sync_req *s = req->data;
  orch__region_unpin(s->r);
  luaL_unref(s->L, LUA_REGISTRYINDEX, s->ref);
  if (!s->abandoned) {
    lua_State *co = s->co;
    int n;
    if (status < 0) n = orch__fail_uv(co, "mmap.sync", status);
    else if (s->err) n = orch__fail(co, "mmap.sync", s->err);
    else lua_pushboolean(co, 1), n = 1;
    free(s);
    orch__wake(co, n);
    return;
  }
  free(s);
}

static void sync_cancel(void *data) {
  sync_req *s = data;
  s->abandoned = 1;
  uv_cancel((uv_req_t *)&s->req);   /* sync_done still runs and frees s */
}

static int mapping_sync(lua_State *L) {
  ommap *m = check_mmap(L);
  orch__region_check(L, 1);
  orch__check_task(L, "mmap.sync");
  sync_req *s = calloc(1, sizeof *s);
  if (!s) return luaL_error(L, "out of memory");
  s->req.data = s;
  s->r = &m->r;
  s->L = orch__mainthread(orch__rt(L));
  s->co = L;
  int r = orch__threadpool_start();
  if (r < 0) {
    free(s);
    return orch__fail_errno(L, -r, "mmap.sync: cannot start the thread pool");
  }
  r = uv_queue_work(orch__loop(L), &s->req, sync_work, sync_done);
  if (r < 0) {
    free(s);
    return orch__fail_uv(L, "mmap.sync", r);
  }
  lua_pushvalue(L, 1);
  s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  orch__region_pin(&m->r);
  return orch__await(L, -1, "mmap.sync", sync_cancel, s);
}

/* ------------------------------------------------------------ methods */

static int mapping_unmap(lua_State *L) {
  ommap *m = check_mmap(L);
  int err = orch__region_close(&m->r);
  if (err) return orch__fail(L, "mmap.unmap", err);
  lua_pushboolean(L, 1);
  return 1;
}

static int mapping_tostring(lua_State *L) {
  ommap *m = check_mmap(L);
  if (!m->r.base) lua_pushliteral(L, MMAP_MT ": unmapped");
  else lua_pushfstring(L, MMAP_MT ": %p size=%I %s%s%s", (void *)m->r.base, (lua_Integer)m->r.size,
                       m->shared ? "shared" : "private", m->anonymous ? " anonymous" : "",
                       (m->r.flags & ORCH__REGION_READONLY) ? " readonly" : "");
  return 1;
}

int orch__open_mmap(lua_State *L) {
  static const luaL_Reg methods[] = { {"sync", mapping_sync}, {"unmap", mapping_unmap}, {NULL, NULL} };
  static const luaL_Reg meta[] = { {"__tostring", mapping_tostring}, {NULL, NULL} };
  orch__region_class(L, MMAP_MT, methods, meta);
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushcfunction(L, mapping_new);
  lua_setfield(L, -2, "mmap");
  return 1;
}
