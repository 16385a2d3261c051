/*
 * l_heartbeat.c: orch.heartbeat, the Lua face of the heartbeat table
 * (include/orch_heartbeat.h, src/heartbeat.c, doc/heartbeat.md).
 *
 * Objects: an orch.HeartbeatTable userdata owns one attachment (closed by
 * :close(), __close or __gc: detaching, never removing; :remove() removes).
 * An orch.HeartbeatSlot userdata holds a registration by value and keeps its
 * table userdata alive through its user value; using it after the table was
 * closed raises. Dropping a slot does not unregister it (a process that stops
 * beating is exactly what a watchdog is for); :unregister() and __close do.
 *
 * Blocking: nothing waits. Registering scans the table and may read /proc
 * for owners that look dead; attach() never waits (the Lua layer retries
 * from a task). Times are seconds: monotonic ones compare with orch.now().
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <sys/ipc.h>
#include <unistd.h>

#include "orch_heartbeat.h"
#include "proc.h"
#include "util.h"

#define TABLE_MT "orch.HeartbeatTable"
#define SLOT_MT "orch.HeartbeatSlot"

typedef struct {
  orch_hb_table *t;   /* NULL once closed */
} ltable;

typedef struct {
  orch_hb_slot s;
  ltable *owner;      /* inside the user value, which keeps it alive */
  int held;           /* 0 after :unregister() */
} lslot;

/* ---- Errors ----------------------------------------------------------- */

/* The library's negated errnos, with clearer words for the ones whose
 * strerror would mislead. [-0,+3] */
static int hb_fail(lua_State *L, const char *op, int r) {
  switch (-r) {
  case EPROTO:
    return orch__failf(L, "EPROTO", "%s: not a heartbeat table of this layout or version", op);
  case ENOSPC:
    return orch__failf(L, "ENOSPC", "%s: table full (every slot held by a live process)", op);
  case ESTALE:
    return orch__failf(L, "ESTALE", "%s: slot no longer held (released or reclaimed)", op);
  case EAGAIN:
    return orch__failf(L, "EAGAIN", "%s: slot not handed over yet", op);
  case ENOENT:
    if (strcmp(op, "heartbeat.open") == 0)
      return orch__failf(L, "ENOENT", "%s: no such table", op);
    return orch__fail(L, op, -r);
  default:
    return orch__fail(L, op, -r);
  }
}

/* true, or the failure of op. [-0,+1|3] */
static int hb_result(lua_State *L, const char *op, int r) {
  if (r < 0) return hb_fail(L, op, r);
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- Argument helpers ------------------------------------------------- */

static ltable *check_table(lua_State *L, int idx) {
  ltable *lt = luaL_checkudata(L, idx, TABLE_MT);
  if (!lt->t) orch__closed_error(L, TABLE_MT);
  return lt;
}

static lslot *check_slot(lua_State *L, int idx) {
  lslot *ls = luaL_checkudata(L, idx, SLOT_MT);
  if (!ls->owner->t) orch__closed_error(L, TABLE_MT);
  return ls;
}


static const char *check_name(lua_State *L, int idx, size_t max) {
  size_t len;
  const char *name = luaL_checklstring(L, idx, &len);
  if (len == 0) luaL_argerror(L, idx, "name must not be empty");
  if (strlen(name) != len) luaL_argerror(L, idx, "name must not contain '\\0'");
  if (len > max) luaL_argerror(L, idx, lua_pushfstring(L, "name too long (at most %d bytes)", (int)max));
  return name;
}

/* Seconds -> milliseconds, rounded up so that a tiny positive timeout never
 * becomes 0 ("never times out"). */
static uint32_t check_timeout(lua_State *L, int idx) {
  double s = orch__checkseconds(L, idx);
  if (s > 4294967.295) luaL_argerror(L, idx, "timeout too large (at most 4294967 seconds)");
  double ms = ceil(s * 1000.0 - 1e-6);
  return ms <= 0 ? (s > 0 ? 1 : 0) : (uint32_t)ms;
}


/* ---- Snapshots -------------------------------------------------------- */

/* Pushes a snapshot as a table. [-0,+1] */
static void push_info(lua_State *L, const orch_hb_info *in) {
  double now = (double)orch_hb_now_ns() / 1e9;
  lua_createtable(L, 0, 16);
  lua_pushinteger(L, in->index);
  lua_setfield(L, -2, "index");
  lua_pushinteger(L, in->pid);
  lua_setfield(L, -2, "pid");
  lua_pushstring(L, in->name);
  lua_setfield(L, -2, "name");
  lua_pushboolean(L, in->compat);
  lua_setfield(L, -2, "compat");
  if (in->compat) {
    /* Classic beats are wall-clock seconds; the age is measured on the wall
     * clock and last_beat projected onto the monotonic one. */
    double age = orch__wall() - (double)in->atime;
    lua_pushinteger(L, in->raw_timeout);
    lua_setfield(L, -2, "timeout");
    lua_pushinteger(L, in->atime);
    lua_setfield(L, -2, "atime");
    lua_pushnumber(L, now - age);
    lua_setfield(L, -2, "last_beat");
    lua_pushnumber(L, age);
    lua_setfield(L, -2, "age");
    return;
  }
  double last = (double)in->last_beat / 1e9;
  lua_pushnumber(L, (double)in->timeout_ms / 1000.0);
  lua_setfield(L, -2, "timeout");
  lua_pushinteger(L, (lua_Integer)in->start_time);
  lua_setfield(L, -2, "start_time");
  lua_pushinteger(L, in->uid);
  lua_setfield(L, -2, "uid");
  lua_pushinteger(L, in->generation);
  lua_setfield(L, -2, "generation");
  lua_pushinteger(L, in->flags);
  lua_setfield(L, -2, "flags");
  lua_pushboolean(L, (in->flags & ORCH_HB_F_RESERVED) != 0);
  lua_setfield(L, -2, "reserved");
  lua_pushboolean(L, (in->flags & ORCH_HB_F_PROXY) != 0);
  lua_setfield(L, -2, "proxy");
  lua_pushnumber(L, last);
  lua_setfield(L, -2, "last_beat");
  lua_pushnumber(L, (double)in->registered / 1e9);
  lua_setfield(L, -2, "registered");
  lua_pushnumber(L, now > last ? now - last : 0.0);
  lua_setfield(L, -2, "age");
}

/* ---- orch.HeartbeatSlot ----------------------------------------------- */

/* Wraps a registration made on the table at index tidx. [-0,+1] */
static void push_slot(lua_State *L, int tidx, const orch_hb_slot *s) {
  tidx = lua_absindex(L, tidx);
  lslot *ls = lua_newuserdatauv(L, sizeof *ls, 1);
  ls->s = *s;
  ls->owner = lua_touserdata(L, tidx);
  ls->held = 1;
  lua_pushvalue(L, tidx);
  lua_setiuservalue(L, -2, 1);
  luaL_setmetatable(L, SLOT_MT);
}

static int slot_beat(lua_State *L) {
  lslot *ls = check_slot(L, 1);
  orch__check_nargs(L, 1);
  int r = ls->held ? orch_hb_beat(&ls->s) : -ESTALE;
  return hb_result(L, "heartbeat.beat", r);
}

static int slot_unregister(lua_State *L) {
  lslot *ls = check_slot(L, 1);
  orch__check_nargs(L, 1);
  int r = ls->held ? orch_hb_unregister(&ls->s) : -ESTALE;
  ls->held = 0;
  return hb_result(L, "heartbeat.unregister", r);
}

static int slot_set_timeout(lua_State *L) {
  lslot *ls = check_slot(L, 1);
  uint32_t ms = check_timeout(L, 2);
  orch__check_nargs(L, 2);
  int r = ls->held ? orch_hb_set_timeout(&ls->s, ms) : -ESTALE;
  return hb_result(L, "heartbeat.set_timeout", r);
}

static int slot_assign(lua_State *L) {
  lslot *ls = check_slot(L, 1);
  pid_t pid = orch__checkpid(L, 2, 0);
  orch__check_nargs(L, 2);
  int r = ls->held ? orch_hb_assign(&ls->s, pid) : -ESTALE;
  return hb_result(L, "heartbeat.assign", r);
}

static int slot_info(lua_State *L) {
  lslot *ls = check_slot(L, 1);
  orch__check_nargs(L, 1);
  orch_hb_info in;
  int r = ls->held ? orch_hb_read(ls->s.table, ls->s.index, &in) : -ESTALE;
  if (r == -ENOENT) r = -ESTALE;
  if (r == 0 && in.pid != ls->s.pid) r = -ESTALE;
  if (r == 0 && !in.compat) {
    orch_hb_entry w;
    w.owner = ls->s.owner;
    if (w.generation != in.generation) r = -ESTALE;
  }
  if (r < 0) return hb_fail(L, "heartbeat.info", r);
  push_info(L, &in);
  return 1;
}

static int slot_close(lua_State *L) {
  lslot *ls = luaL_checkudata(L, 1, SLOT_MT);
  if (ls->held && ls->owner->t) orch_hb_unregister(&ls->s);
  ls->held = 0;
  return 0;
}

/* Methods first: s:beat() is the hot path. */
static int slot_index(lua_State *L) {
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;   /* methods[k] */
  lua_pop(L, 1);
  lslot *ls = luaL_checkudata(L, 1, SLOT_MT);
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
  if (k) {
    if (strcmp(k, "index") == 0) { lua_pushinteger(L, ls->s.index); return 1; }
    if (strcmp(k, "pid") == 0) { lua_pushinteger(L, ls->s.pid); return 1; }
    if (strcmp(k, "table") == 0) { lua_getiuservalue(L, 1, 1); return 1; }
    if (strcmp(k, "held") == 0) { lua_pushboolean(L, ls->held); return 1; }
  }
  lua_pushnil(L);
  return 1;
}

static int slot_tostring(lua_State *L) {
  lslot *ls = luaL_checkudata(L, 1, SLOT_MT);
  if (ls->held && ls->owner->t)
    lua_pushfstring(L, SLOT_MT ": index=%d pid=%d", (int)ls->s.index, (int)ls->s.pid);
  else
    lua_pushfstring(L, SLOT_MT ": released");
  return 1;
}

/* ---- orch.HeartbeatTable ---------------------------------------------- */

static int table_register(lua_State *L) {
  ltable *lt = check_table(L, 1);
  int compat = orch_hb_is_compat(lt->t);
  const char *name = check_name(L, 2, compat ? ORCH_HBC_PNAME_MAX - 1 : ORCH_HB_NAME_MAX - 1);
  uint32_t ms = check_timeout(L, 3);
  pid_t pid = lua_isnoneornil(L, 4) ? getpid() : orch__checkpid(L, 4, 0);
  orch__check_nargs(L, 4);
  orch_hb_slot s;
  int r = orch_hb_register_pid(lt->t, pid, name, ms, &s);
  if (r < 0) return hb_fail(L, "heartbeat.register", r);
  push_slot(L, 1, &s);
  return 1;
}

static int table_reserve(lua_State *L) {
  ltable *lt = check_table(L, 1);
  const char *name = check_name(L, 2, ORCH_HB_NAME_MAX - 1);
  uint32_t ms = check_timeout(L, 3);
  orch__check_nargs(L, 3);
  orch_hb_slot s;
  int r = orch_hb_reserve(lt->t, name, ms, &s);
  if (r < 0) return hb_fail(L, "heartbeat.reserve", r);
  push_slot(L, 1, &s);
  return 1;
}

static int table_find(lua_State *L) {
  ltable *lt = check_table(L, 1);
  pid_t pid = lua_isnoneornil(L, 2) ? getpid() : orch__checkpid(L, 2, 0);
  orch__check_nargs(L, 2);
  orch_hb_slot s;
  int r = orch_hb_find(lt->t, pid, &s);
  if (r < 0) return hb_fail(L, "heartbeat.find", r);
  push_slot(L, 1, &s);
  return 1;
}

static int table_attach(lua_State *L) {
  ltable *lt = check_table(L, 1);
  lua_Integer i = luaL_checkinteger(L, 2);
  orch__check_nargs(L, 2);
  if (i < 0 || i >= (lua_Integer)orch_hb_slot_count(lt->t))
    luaL_argerror(L, 2, "slot index out of range");
  orch_hb_slot s;
  int r = orch_hb_attach(lt->t, (uint32_t)i, 0, &s);
  if (r < 0) return hb_fail(L, "heartbeat.attach", r);
  push_slot(L, 1, &s);
  return 1;
}

static int table_read(lua_State *L) {
  ltable *lt = check_table(L, 1);
  lua_Integer i = luaL_checkinteger(L, 2);
  orch__check_nargs(L, 2);
  if (i < 0 || i >= (lua_Integer)orch_hb_slot_count(lt->t))
    luaL_argerror(L, 2, "slot index out of range");
  orch_hb_info in;
  int r = orch_hb_read(lt->t, (uint32_t)i, &in);
  if (r == -ENOENT) return orch__failf(L, "ENOENT", "heartbeat.read: slot %d is free", (int)i);
  if (r == -EAGAIN) return orch__failf(L, "EAGAIN", "heartbeat.read: slot %d is being written", (int)i);
  if (r < 0) return hb_fail(L, "heartbeat.read", r);
  push_info(L, &in);
  return 1;
}

static int table_slots(lua_State *L) {
  ltable *lt = check_table(L, 1);
  orch__check_nargs(L, 1);
  orch_hb_info in;
  uint32_t cursor = 0;
  lua_Integer n = 0;
  lua_newtable(L);
  while (orch_hb_next(lt->t, &cursor, &in)) {
    push_info(L, &in);
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

static int table_clear(lua_State *L) {
  ltable *lt = check_table(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  orch__check_nargs(L, 2);
  orch_hb_info in;
  memset(&in, 0, sizeof in);
  lua_getfield(L, 2, "index");
  lua_getfield(L, 2, "pid");
  lua_getfield(L, 2, "generation");
  int ok_i, ok_p, ok_g;
  lua_Integer i = lua_tointegerx(L, -3, &ok_i), p = lua_tointegerx(L, -2, &ok_p),
              g = lua_tointegerx(L, -1, &ok_g);
  lua_pop(L, 3);
  int compat = orch_hb_is_compat(lt->t);
  if (!ok_i || i < 0 || i >= (lua_Integer)orch_hb_slot_count(lt->t))
    luaL_argerror(L, 2, "field 'index': slot index expected");
  if (!ok_p || p == 0 || p < INT32_MIN || p > INT32_MAX)
    luaL_argerror(L, 2, "field 'pid': non-zero pid expected");
  if (!compat && (!ok_g || g < 0 || g > UINT32_MAX))
    luaL_argerror(L, 2, "field 'generation': generation expected (a snapshot from :slots())");
  in.index = (uint32_t)i;
  in.pid = (int32_t)p;
  in.generation = compat ? 0 : (uint32_t)g;
  int r = orch_hb_clear(lt->t, &in);
  return hb_result(L, "heartbeat.clear", r);
}

static int table_changes(lua_State *L) {
  ltable *lt = check_table(L, 1);
  lua_pushinteger(L, orch_hb_changes(lt->t));
  return 1;
}

static int table_count(lua_State *L) {
  ltable *lt = check_table(L, 1);
  lua_pushinteger(L, orch_hb_slot_count(lt->t));
  return 1;
}

static int table_key(lua_State *L) {
  ltable *lt = check_table(L, 1);
  lua_pushinteger(L, (lua_Integer)(uint32_t)orch_hb_key(lt->t));
  return 1;
}

static int table_shmid(lua_State *L) {
  ltable *lt = check_table(L, 1);
  lua_pushinteger(L, orch_hb_shmid(lt->t));
  return 1;
}

static int table_is_compat(lua_State *L) {
  ltable *lt = check_table(L, 1);
  lua_pushboolean(L, orch_hb_is_compat(lt->t));
  return 1;
}

static int table_remove(lua_State *L) {
  ltable *lt = check_table(L, 1);
  orch__check_nargs(L, 1);
  int r = orch_hb_remove(lt->t);
  return hb_result(L, "heartbeat.remove", r);
}

static int table_close(lua_State *L) {
  ltable *lt = luaL_checkudata(L, 1, TABLE_MT);
  if (lt->t) {
    orch_hb_close(lt->t);
    lt->t = NULL;
  }
  return 0;
}

static int table_tostring(lua_State *L) {
  ltable *lt = luaL_checkudata(L, 1, TABLE_MT);
  if (!lt->t) {
    lua_pushstring(L, TABLE_MT ": closed");
    return 1;
  }
  char buf[128];
  snprintf(buf, sizeof buf, TABLE_MT ": key=0x%x shmid=%d slots=%u%s",
           (unsigned)orch_hb_key(lt->t), orch_hb_shmid(lt->t),
           (unsigned)orch_hb_slot_count(lt->t), orch_hb_is_compat(lt->t) ? " compat" : "");
  lua_pushstring(L, buf);
  return 1;
}

/* ---- orch.heartbeat --------------------------------------------------- */

/* A table handle in the closed state, safe to collect if the open fails. [-0,+1] */
static ltable *new_table(lua_State *L) {
  ltable *lt = lua_newuserdatauv(L, sizeof *lt, 0);
  lt->t = NULL;
  luaL_setmetatable(L, TABLE_MT);
  return lt;
}

static const char *const open_options[] = {
  "key", "create", "exclusive", "mode", "compat", "slots", "rdonly", "shared", NULL
};

/* Keys are 32-bit; accept them signed or unsigned (0x80000000 and above, as
 * written), 0 meaning IPC_PRIVATE. -1 is not a key. */
static key_t opt_key(lua_State *L, int idx) {
  if (lua_getfield(L, idx, "key") == LUA_TNIL) {
    lua_pop(L, 1);
    return ORCH_HB_KEY_DEFAULT;
  }
  lua_pop(L, 1);
  lua_Integer k = orch__opt_integer(L, idx, "key", 0);
  if (k < INT32_MIN || k > (lua_Integer)UINT32_MAX || k == -1 || k == (lua_Integer)UINT32_MAX)
    orch__opt_error(L, idx, "key", "not a SysV key (32 bits, not -1)");
  return (key_t)(int32_t)(uint32_t)k;
}

static int refused(lua_State *L, const char *op, key_t key, int flags, int r);

static int hb_open(lua_State *L) {
  int flags = 0;
  key_t key = ORCH_HB_KEY_DEFAULT;
  lua_Integer mode = 0, slots = 0;
  if (!lua_isnoneornil(L, 1)) {
    orch__check_options(L, 1, open_options);
    key = opt_key(L, 1);
    if (orch__opt_boolean(L, 1, "create", 0)) flags |= ORCH_HB_CREATE;
    if (orch__opt_boolean(L, 1, "exclusive", 0)) flags |= ORCH_HB_EXCL;
    if (orch__opt_boolean(L, 1, "compat", 0)) flags |= ORCH_HB_COMPAT;
    if (orch__opt_boolean(L, 1, "rdonly", 0)) flags |= ORCH_HB_RDONLY;
    if (orch__opt_boolean(L, 1, "shared", 0)) flags |= ORCH_HB_SHARED;
    mode = orch__opt_mode(L, 1, "mode", 0, 0777, NULL);
    slots = orch__opt_integer(L, 1, "slots", 0);
    if (slots < 0 || slots > (1 << 20)) orch__opt_error(L, 1, "slots", "0 to 1048576 expected");
  }
  orch__check_nargs(L, 1);
  /* Everything validated: now the handle, closed until the attach worked. */
  ltable *lt = new_table(L);
  int r = orch_hb_open_slots(key, flags, (int)mode, (uint32_t)slots, &lt->t);
  if (r == -EPERM || r == -EACCES) return refused(L, "heartbeat.open", key, flags, r);
  if (r < 0) return hb_fail(L, "heartbeat.open", r);
  return 1;
}

/* The failure of an open the trust rules refused (orch_hb_open: -EPERM for
 * a foreign owner, -EACCES for a table others may write), saying whose and
 * which mode; a plain permission failure of shmget/shmat otherwise. [-0,+3] */
static int refused(lua_State *L, const char *op, key_t key, int flags, int r) {
  uint32_t uid, cuid, mode;
  if (orch_hb_owner(key, flags, &uid, &cuid, &mode) < 0) return hb_fail(L, op, r);
  uid_t me = geteuid();
  if (r == -EPERM)
    return orch__failf(L, "EPERM",
      "%s: refused: the table belongs to uid %d (created by uid %d), neither this user (uid %d) "
      "nor root: its writer could forge every slot (see doc/security.md)",
      op, (int)uid, (int)cuid, (int)me);
  if (mode & 022) {
    char m[16];
    snprintf(m, sizeof m, "%03o", (unsigned)mode & 0777u);
    return orch__failf(L, "EACCES",
      "%s: refused: the table's mode %s lets other users write it: its writers could forge "
      "every slot (pass shared = true to accept a shared table; see doc/security.md)",
      op, m);
  }
  return hb_fail(L, op, r);
}

/* from_env(): the table and slot a supervisor handed this process, without
 * waiting (the Lua layer retries). Returns slot, table. */
static int hb_from_env(lua_State *L) {
  orch__check_nargs(L, 0);
  key_t key;
  uint32_t index;
  int r = orch_hb_env(&key, &index);
  if (r == -ENOENT)
    return orch__failf(L, "ENOENT", "heartbeat.from_env: %s and %s are not both set",
                       ORCH_HB_ENV_KEY, ORCH_HB_ENV_SLOT);
  if (r == -EINVAL)
    return orch__failf(L, "EINVAL", "heartbeat.from_env: malformed %s or %s",
                       ORCH_HB_ENV_KEY, ORCH_HB_ENV_SLOT);
  ltable *lt = new_table(L);
  r = orch_hb_open(key, 0, 0, &lt->t);
  if (r == -EPERM || r == -EACCES) return refused(L, "heartbeat.from_env", key, 0, r);
  if (r < 0) return hb_fail(L, "heartbeat.from_env", r);
  if (index >= orch_hb_slot_count(lt->t))
    return orch__failf(L, "EINVAL", "heartbeat.from_env: %s out of range", ORCH_HB_ENV_SLOT);
  orch_hb_slot s;
  r = orch_hb_attach(lt->t, index, 0, &s);
  if (r < 0) return hb_fail(L, "heartbeat.from_env", r);
  push_slot(L, -1, &s);
  lua_insert(L, -2);
  return 2;
}

static int hb_alive(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  lua_Integer st = luaL_optinteger(L, 2, 0);
  orch__check_nargs(L, 2);
  if (st < 0) luaL_argerror(L, 2, "start time must be >= 0");
  int alive = pid > 0 && pid <= INT32_MAX && orch_hb_alive((pid_t)pid, (uint64_t)st);
  lua_pushboolean(L, alive);
  return 1;
}

int orch__open_heartbeat(lua_State *L) {
  static const luaL_Reg slot_methods[] = {
    {"beat", slot_beat}, {"unregister", slot_unregister},
    {"set_timeout", slot_set_timeout}, {"assign", slot_assign},
    {"info", slot_info}, {NULL, NULL}
  };
  static const luaL_Reg table_methods[] = {
    {"register", table_register}, {"reserve", table_reserve},
    {"find", table_find}, {"attach", table_attach}, {"read", table_read},
    {"slots", table_slots}, {"clear", table_clear}, {"changes", table_changes},
    {"count", table_count}, {"key", table_key}, {"shmid", table_shmid},
    {"is_compat", table_is_compat}, {"remove", table_remove},
    {"close", table_close}, {NULL, NULL}
  };
  static const luaL_Reg table_meta[] = {
    {"__close", table_close}, {"__gc", table_close}, {"__tostring", table_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"open", hb_open}, {"from_env", hb_from_env}, {"alive", hb_alive},
    {"start_time", orch__proc_start_time},   /* an alias: orch.proc.start_time */
    {NULL, NULL}
  };

  orch__newclass(L, TABLE_MT, table_methods, table_meta);
  lua_pop(L, 1);

  /* The slot's __index also answers the fields index, pid, table, held. */
  luaL_newmetatable(L, SLOT_MT);
  lua_pushcfunction(L, slot_close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, slot_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_newtable(L);
  luaL_setfuncs(L, slot_methods, 0);
  lua_pushcclosure(L, slot_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);

  lua_newtable(L);                 /* the module's table: { heartbeat = {...} } */
  luaL_newlib(L, funcs);
  lua_pushinteger(L, ORCH_HB_DEFAULT_KEY);
  lua_setfield(L, -2, "DEFAULT_KEY");
  lua_pushinteger(L, ORCH_HB_COMPAT_KEY);
  lua_setfield(L, -2, "COMPAT_KEY");
  lua_pushinteger(L, ORCH_HB_NAME_MAX - 1);
  lua_setfield(L, -2, "NAME_MAX");
  lua_setfield(L, -2, "heartbeat");
  return 1;
}
