/*
 * l_shm.c: orch.shm.open / orch.shm.private and the orch.Shm class: a SysV
 * shared memory segment attached to this process, accessed as a Region
 * (region.h).
 *
 * Ownership: an orch.Shm owns its attachment (shmdt on :detach(), __close
 * or __gc). The segment itself is a kernel object that outlives the
 * process; only :remove() (IPC_RMID) destroys it, once the last process
 * detaches. :stat() and :remove() work after :detach() (they need only the
 * id); every Region method raises "attempt to use a closed orch.Shm".
 *
 * A segment opened with readonly = true is attached with SHM_RDONLY; its
 * Region refuses every write ("attempt to write to a read-only orch.Shm").
 *
 * What may block: nothing (shmget, shmat, shmctl, shmdt return at once).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/shm.h>

#include "ipc.h"
#include "region.h"
#include "util.h"

#define SHM_MT "orch.Shm"

typedef struct {
  orch__region r;            /* first: this is a Region */
  int id;                    /* -1 until shmget succeeded */
  key_t key;
  int removed;
} oshm;

static int shm_release(orch__region *r) {
  return shmdt(r->mem) < 0 ? errno : 0;
}

static oshm *check_shm(lua_State *L) {
  return luaL_checkudata(L, 1, SHM_MT);
}

static lua_Integer check_size(lua_State *L, int idx, const char *key, lua_Integer v) {
  if (v < 1 || (lua_Unsigned)v > SIZE_MAX / 2) {
    if (key) orch__opt_error(L, idx, key, "size must be >= 1");
    luaL_argerror(L, idx, "size must be >= 1");
  }
  return v;
}

/* Attaches segment id to the (closed) region s, sized as the segment is.
 * Read-only: SHM_RDONLY maps the pages without write permission, and the
 * region refuses writes before they reach them (a write from Lua raises;
 * it never faults). */
static int attach(oshm *s, int id, int readonly) {
  struct shmid_ds ds;
  if (shmctl(id, IPC_STAT, &ds) < 0) return errno;
  void *base = shmat(id, NULL, readonly ? SHM_RDONLY : 0);
  if (base == (void *)-1) return errno;
  orch__region_attach(&s->r, base, ds.shm_segsz, readonly ? ORCH__REGION_READONLY : 0, shm_release);
  return 0;
}

static const char *const open_opts[] = {
  "key", "size", "create", "exclusive", "mode", "readonly", NULL
};

static int segment_open(lua_State *L) {
  orch__check_options(L, 1, open_opts);
  lua_settop(L, 1);
  key_t key = orch__ipc_optkey(L, 1);
  int create = orch__opt_boolean(L, 1, "create", 0);
  int exclusive = orch__opt_boolean(L, 1, "exclusive", 0);
  int mode = orch__ipc_optmode(L, 1);
  int readonly = orch__opt_boolean(L, 1, "readonly", 0);
  lua_Integer size = orch__opt_integer(L, 1, "size", 0);
  if (create && size == 0) orch__opt_error(L, 1, "size", "required with create");
  if (size != 0) check_size(L, 1, "size", size);
  oshm *s = (oshm *)orch__region_new(L, SHM_MT, sizeof *s);
  s->id = -1;
  int flags = create ? IPC_CREAT | mode | (exclusive ? IPC_EXCL : 0) : 0;
  int id = shmget(key, (size_t)size, flags);
  if (id < 0) {
    int err = errno;
    if (err == EINVAL) {
      char k[16];
      return orch__failf(L, "EINVAL", "shm.open: size %I is invalid for key %s "
                         "(out of the system's limits, or larger than the segment)",
                         size, orch__ipc_keystr(key, k));
    }
    return orch__ipc_fail_open(L, "shm.open", "segment", key, err);
  }
  s->id = id;
  s->key = key;
  int err = attach(s, id, readonly);
  if (err) return orch__fail(L, "shm.open", err);
  return 1;
}

static int segment_private(lua_State *L) {
  lua_Integer size = check_size(L, 1, NULL, luaL_checkinteger(L, 1));
  orch__check_nargs(L, 1);
  oshm *s = (oshm *)orch__region_new(L, SHM_MT, sizeof *s);
  s->id = -1;
  int id = shmget(IPC_PRIVATE, (size_t)size, IPC_CREAT | 0600);
  if (id < 0) return orch__fail(L, "shm.private", errno);
  s->id = id;
  s->key = IPC_PRIVATE;
  int err = attach(s, id, 0);
  if (err) {
    /* Nobody else knows this segment: do not leak it. */
    shmctl(id, IPC_RMID, NULL);
    return orch__fail(L, "shm.private", err);
  }
  return 1;
}

static int segment_stat(lua_State *L) {
  oshm *s = check_shm(L);
  if (s->id < 0) return orch__closed_error(L, SHM_MT);
  struct shmid_ds ds;
  if (shmctl(s->id, IPC_STAT, &ds) < 0) return orch__fail(L, "shm.stat", errno);
  orch__ipc_stat_table(L, s->id, &ds.shm_perm);
  orch__ipc_setint(L, "size", (lua_Integer)ds.shm_segsz);
  orch__ipc_setint(L, "nattch", (lua_Integer)ds.shm_nattch);
  orch__ipc_setint(L, "cpid", (lua_Integer)ds.shm_cpid);
  orch__ipc_setint(L, "lpid", (lua_Integer)ds.shm_lpid);
  orch__ipc_setint(L, "atime", (lua_Integer)ds.shm_atime);
  orch__ipc_setint(L, "dtime", (lua_Integer)ds.shm_dtime);
  orch__ipc_setint(L, "ctime", (lua_Integer)ds.shm_ctime);
  lua_pushboolean(L, (ds.shm_perm.mode & SHM_DEST) != 0);
  lua_setfield(L, -2, "removed");
  return 1;
}

static const char *const set_opts[] = { "uid", "gid", "mode", NULL };

/* seg:ipc_set{uid, gid, mode}: IPC_SET on the segment (not the attachment). */
static int segment_ipc_set(lua_State *L) {
  oshm *s = check_shm(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  orch__check_options(L, 2, set_opts);
  orch__ipc_perm_opts o;
  orch__ipc_optperm(L, 2, &o);
  orch__check_nargs(L, 2);
  if (s->id < 0) return orch__closed_error(L, SHM_MT);
  struct shmid_ds ds;
  if (shmctl(s->id, IPC_STAT, &ds) < 0) return orch__fail(L, "shm.ipc_set", errno);
  orch__ipc_applyperm(&o, &ds.shm_perm);
  if (shmctl(s->id, IPC_SET, &ds) < 0) return orch__fail(L, "shm.ipc_set", errno);
  lua_pushboolean(L, 1);
  return 1;
}

static int segment_detach(lua_State *L) {
  oshm *s = check_shm(L);
  int err = orch__region_close(&s->r);
  if (err) return orch__fail(L, "shm.detach", err);
  lua_pushboolean(L, 1);
  return 1;
}

static int segment_remove(lua_State *L) {
  oshm *s = check_shm(L);
  if (s->id < 0) return orch__closed_error(L, SHM_MT);
  if (!s->removed) {
    if (shmctl(s->id, IPC_RMID, NULL) < 0) return orch__fail(L, "shm.remove", errno);
    s->removed = 1;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int segment_tostring(lua_State *L) {
  oshm *s = check_shm(L);
  char k[16];
  if (!s->r.base)
    lua_pushfstring(L, SHM_MT ": detached (id=%d)", s->id);
  else
    lua_pushfstring(L, SHM_MT ": id=%d key=%s size=%I%s%s", s->id, orch__ipc_keystr(s->key, k),
                    (lua_Integer)s->r.size, (s->r.flags & ORCH__REGION_READONLY) ? " readonly" : "",
                    s->removed ? " removed" : "");
  return 1;
}

int orch__open_shm(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"stat", segment_stat}, {"ipc_set", segment_ipc_set}, {"detach", segment_detach},
    {"remove", segment_remove}, {NULL, NULL}
  };
  static const luaL_Reg meta[] = { {"__tostring", segment_tostring}, {NULL, NULL} };
  orch__region_class(L, SHM_MT, methods, meta);
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"open", segment_open}, {"private", segment_private}, {NULL, NULL}};
  lua_newtable(L);
  luaL_newlib(L, fns);
  lua_setfield(L, -2, "shm");
  return 1;
}
