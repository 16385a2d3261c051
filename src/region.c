/*
 * region.c: the Region accessors shared by orch.Shm and orch.Mmap (and any
 * other class built with orch__region_class): bytes, fixed-width integers,
 * doubles, aligned atomics and string.pack layouts over shared memory.
 *
 * Ownership: the memory belongs to the module that attached it (l_shm.c,
 * l_mmap.c); this file only calls its release function, once. This file
 * registers no Lua module of its own.
 *
 * Nothing here blocks. Every access checks the region is open, the range
 * lies inside it (overflow-safe: offsets are compared against the size, never
 * added first) and, for writes, that the memory is writable; a failed check
 * raises, because a wrong offset is a programmer error and touching memory
 * outside the mapping would crash orch.
 */
#include "region.h"

#include <lualib.h>
#include <stdint.h>
#include <string.h>

#include "util.h"

/* Key of the field that marks a metatable as a region class. */
static const char region_marker = 0;

orch__region *orch__region_new(lua_State *L, const char *tname, size_t usize) {
  if (usize < sizeof(orch__region)) usize = sizeof(orch__region);
  orch__region *r = lua_newuserdatauv(L, usize, 0);
  memset(r, 0, usize);
  r->tname = tname;
  luaL_setmetatable(L, tname);
  return r;
}

void orch__region_attach(orch__region *r, void *base, size_t size,
                         unsigned flags, orch__region_release_fn release) {
  r->base = r->mem = base;
  r->size = size;
  r->flags = flags;
  r->release = release;
}

static int region_release(orch__region *r) {
  int err = 0;
  if (r->mem && r->release) err = r->release(r);
  r->mem = NULL;
  return err;
}

int orch__region_close(orch__region *r) {
  if (!r->base) return 0;
  r->base = NULL;
  return r->pins > 0 ? 0 : region_release(r);
}

void orch__region_pin(orch__region *r) { r->pins++; }

int orch__region_unpin(orch__region *r) {
  if (--r->pins > 0 || r->base) return 0;
  return region_release(r);
}

orch__region *orch__region_test(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
  int t = lua_rawgetp(L, -1, &region_marker);
  lua_pop(L, 2);
  return t == LUA_TNIL ? NULL : lua_touserdata(L, idx);
}

orch__region *orch__region_check(lua_State *L, int idx) {
  orch__region *r = orch__region_test(L, idx);
  if (!r) luaL_typeerror(L, idx, "orch region");
  if (!r->base) orch__closed_error(L, r->tname);
  return r;
}

void orch__region_check_range(lua_State *L, orch__region *r, int argidx,
                              lua_Integer off, lua_Integer len) {
  if (len < 0) luaL_argerror(L, argidx + 1, "length must be >= 0");
  if (off < 0 || (lua_Unsigned)off > r->size ||
      (lua_Unsigned)len > r->size - (size_t)off)
    luaL_argerror(L, argidx, lua_pushfstring(L,
      "offset %I + %I bytes is out of bounds (size %I)",
      off, len, (lua_Integer)r->size));
}

/* The open region `self`, checked for writing when `write` is set. */
static orch__region *self(lua_State *L, int write) {
  orch__region *r = orch__region_check(L, 1);
  if (write && (r->flags & ORCH__REGION_READONLY))
    luaL_error(L, "attempt to write to a read-only %s", r->tname);
  return r;
}

/* The offset at idx, with [off, off+len) checked. */
static size_t checkoff(lua_State *L, orch__region *r, int idx, size_t len) {
  lua_Integer off = luaL_checkinteger(L, idx);
  orch__region_check_range(L, r, idx, off, (lua_Integer)len);
  return (size_t)off;
}

static size_t checkaligned(lua_State *L, orch__region *r, int idx, size_t width) {
  size_t off = checkoff(L, r, idx, width);
  if ((uintptr_t)(r->base + off) % width != 0)
    luaL_argerror(L, idx, lua_pushfstring(L, "offset %I is not %d-byte aligned",
                                          (lua_Integer)off, (int)width));
  return off;
}

static lua_Integer checkrange(lua_State *L, int idx, lua_Integer lo, lua_Integer hi) {
  lua_Integer v = luaL_checkinteger(L, idx);
  if (v < lo || v > hi)
    luaL_argerror(L, idx, lua_pushfstring(L, "value %I out of range [%I, %I]", v, lo, hi));
  return v;
}

static int region_size(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)self(L, 0)->size);
  return 1;
}

static int region_read(lua_State *L) {
  orch__region *r = self(L, 0);
  lua_Integer off = luaL_optinteger(L, 2, 0);
  orch__region_check_range(L, r, 2, off, 0);
  lua_Integer len = luaL_optinteger(L, 3, (lua_Integer)(r->size - (size_t)off));
  orch__region_check_range(L, r, 2, off, len);
  lua_pushlstring(L, (const char *)r->base + off, (size_t)len);
  return 1;
}

static int region_write(lua_State *L) {
  orch__region *r = self(L, 1);
  size_t len;
  lua_Integer off = luaL_checkinteger(L, 2);
  const char *s = luaL_checklstring(L, 3, &len);
  orch__region_check_range(L, r, 2, off, (lua_Integer)len);
  memcpy(r->base + off, s, len);
  lua_pushinteger(L, off + (lua_Integer)len);
  return 1;
}

/* Typed accessors: memcpy makes any alignment safe (and keeps UBSan quiet);
 * the compiler turns it into one load or store. u64 values >= 2^63 come
 * back as negative integers (Lua has no unsigned 64-bit type). */
#define REGION_INT(name, ctype, lo, hi)                                   \
  static int region_##name(lua_State *L) {                                \
    orch__region *r = self(L, 0);                                         \
    size_t off = checkoff(L, r, 2, sizeof(ctype));                        \
    ctype v;                                                              \
    memcpy(&v, r->base + off, sizeof v);                                  \
    lua_pushinteger(L, (lua_Integer)v);                                   \
    return 1;                                                             \
  }                                                                       \
  static int region_set_##name(lua_State *L) {                            \
    orch__region *r = self(L, 1);                                         \
    size_t off = checkoff(L, r, 2, sizeof(ctype));                        \
    ctype v = (ctype)checkrange(L, 3, lo, hi);                            \
    memcpy(r->base + off, &v, sizeof v);                                  \
    return 0;                                                             \
  }

REGION_INT(i8, int8_t, INT8_MIN, INT8_MAX)
REGION_INT(u8, uint8_t, 0, UINT8_MAX)
REGION_INT(i16, int16_t, INT16_MIN, INT16_MAX)
REGION_INT(u16, uint16_t, 0, UINT16_MAX)
REGION_INT(i32, int32_t, INT32_MIN, INT32_MAX)
REGION_INT(u32, uint32_t, 0, UINT32_MAX)
REGION_INT(i64, int64_t, LUA_MININTEGER, LUA_MAXINTEGER)
/* Any integer: a negative one stores its two's-complement bit pattern, so
 * a value read with u64 can always be written back. */
REGION_INT(u64, uint64_t, LUA_MININTEGER, LUA_MAXINTEGER)

static int region_f64(lua_State *L) {
  orch__region *r = self(L, 0);
  size_t off = checkoff(L, r, 2, sizeof(double));
  double v;
  memcpy(&v, r->base + off, sizeof v);
  lua_pushnumber(L, v);
  return 1;
}

static int region_set_f64(lua_State *L) {
  orch__region *r = self(L, 1);
  size_t off = checkoff(L, r, 2, sizeof(double));
  double v = (double)luaL_checknumber(L, 3);
  memcpy(r->base + off, &v, sizeof v);
  return 0;
}

/* Atomics: sequentially consistent, on naturally aligned words, so they are
 * atomic against any other process mapping the same memory. Arithmetic is
 * done unsigned so overflow wraps instead of being undefined. */
static int region_load(lua_State *L) {
  orch__region *r = self(L, 0);
  size_t off = checkaligned(L, r, 2, 8);
  lua_pushinteger(L, (lua_Integer)__atomic_load_n((int64_t *)(void *)(r->base + off), __ATOMIC_SEQ_CST));
  return 1;
}

static int region_store(lua_State *L) {
  orch__region *r = self(L, 1);
  size_t off = checkaligned(L, r, 2, 8);
  int64_t v = (int64_t)luaL_checkinteger(L, 3);
  __atomic_store_n((int64_t *)(void *)(r->base + off), v, __ATOMIC_SEQ_CST);
  return 0;
}

static int region_add(lua_State *L) {
  orch__region *r = self(L, 1);
  size_t off = checkaligned(L, r, 2, 8);
  uint64_t d = (uint64_t)luaL_checkinteger(L, 3);
  uint64_t n = __atomic_add_fetch((uint64_t *)(void *)(r->base + off), d, __ATOMIC_SEQ_CST);
  lua_pushinteger(L, (lua_Integer)(int64_t)n);
  return 1;
}

static int region_cas(lua_State *L) {
  orch__region *r = self(L, 1);
  size_t off = checkaligned(L, r, 2, 8);
  int64_t expected = (int64_t)luaL_checkinteger(L, 3);
  int64_t desired = (int64_t)luaL_checkinteger(L, 4);
  int ok = __atomic_compare_exchange_n((int64_t *)(void *)(r->base + off), &expected,
                                       desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  lua_pushboolean(L, ok);
  if (ok) return 1;
  lua_pushinteger(L, (lua_Integer)expected);   /* the value found instead */
  return 2;
}

/* 32-bit words hold int32 values; [2^31, 2^32) is also accepted (stored as
 * its bit pattern) so a C unsigned int can be written. Reads are signed. */
static int32_t check32(lua_State *L, int idx) {
  return (int32_t)(uint32_t)checkrange(L, idx, INT32_MIN, UINT32_MAX);
}

static int region_load32(lua_State *L) {
  orch__region *r = self(L, 0);
  size_t off = checkaligned(L, r, 2, 4);
  lua_pushinteger(L, __atomic_load_n((int32_t *)(void *)(r->base + off), __ATOMIC_SEQ_CST));
  return 1;
}

static int region_store32(lua_State *L) {
  orch__region *r = self(L, 1);
  size_t off = checkaligned(L, r, 2, 4);
  int32_t v = check32(L, 3);
  __atomic_store_n((int32_t *)(void *)(r->base + off), v, __ATOMIC_SEQ_CST);
  return 0;
}

static int region_add32(lua_State *L) {
  orch__region *r = self(L, 1);
  size_t off = checkaligned(L, r, 2, 4);
  /* Any integer delta: only its low 32 bits matter modulo 2^32. */
  uint32_t d = (uint32_t)(uint64_t)luaL_checkinteger(L, 3);
  uint32_t n = __atomic_add_fetch((uint32_t *)(void *)(r->base + off), d, __ATOMIC_SEQ_CST);
  lua_pushinteger(L, (int32_t)n);
  return 1;
}

static int region_cas32(lua_State *L) {
  orch__region *r = self(L, 1);
  size_t off = checkaligned(L, r, 2, 4);
  int32_t expected = check32(L, 3);
  int32_t desired = check32(L, 4);
  int ok = __atomic_compare_exchange_n((int32_t *)(void *)(r->base + off), &expected,
                                       desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  lua_pushboolean(L, ok);
  if (ok) return 1;
  lua_pushinteger(L, expected);
  return 2;
}

/* pack/unpack delegate the format to string.pack/string.unpack (upvalue 1;
 * string.packsize is upvalue 2 of unpack) and only check bounds, so the
 * formats are exactly Lua's. */
static int region_pack(lua_State *L) {
  orch__region *r = self(L, 1);
  lua_Integer off = luaL_checkinteger(L, 2);
  luaL_checkstring(L, 3);
  int top = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  for (int i = 3; i <= top; i++) lua_pushvalue(L, i);
  lua_call(L, top - 2, 1);
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  r = self(L, 1);   /* string.pack runs no user code, but stay safe */
  orch__region_check_range(L, r, 2, off, (lua_Integer)len);
  memcpy(r->base + off, s, len);
  lua_pushinteger(L, off + (lua_Integer)len);
  return 1;
}

static int region_unpack(lua_State *L) {
  orch__region *r = self(L, 0);
  lua_Integer off = luaL_checkinteger(L, 2);
  luaL_checkstring(L, 3);
  lua_settop(L, 3);
  orch__region_check_range(L, r, 2, off, 0);
  /* A fixed-size format copies just its bytes; a variable one (s, z) needs
   * the rest of the region, since its size depends on the data. */
  lua_Integer len = (lua_Integer)(r->size - (size_t)off);
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_pushvalue(L, 3);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
    len = lua_tointeger(L, -1);
    orch__region_check_range(L, r, 2, off, len);
  }
  lua_pop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 3);
  lua_pushlstring(L, (const char *)r->base + off, (size_t)len);
  lua_call(L, 2, LUA_MULTRET);
  /* The last result is the next position in the copy (1-based): turn it
   * into the next offset in the region. */
  int nres = lua_gettop(L) - 3;
  lua_Integer pos = lua_tointeger(L, -1);
  lua_pop(L, 1);
  lua_pushinteger(L, off + pos - 1);
  return nres;
}

/* __gc and __close of every region class. */
static int region_gc(lua_State *L) {
  orch__region *r = orch__region_test(L, 1);
  if (r) orch__region_close(r);
  return 0;
}

static const luaL_Reg region_methods[] = {
  {"size", region_size}, {"read", region_read}, {"write", region_write},
#define REG(n) {#n, region_##n}, {"set_" #n, region_set_##n},
  REG(i8) REG(u8) REG(i16) REG(u16) REG(i32) REG(u32) REG(i64) REG(u64) REG(f64)
#undef REG
  {"load", region_load}, {"store", region_store}, {"add", region_add}, {"cas", region_cas},
  {"load32", region_load32}, {"store32", region_store32}, {"add32", region_add32},
  {"cas32", region_cas32},
  {NULL, NULL}
};

static void push_strlib_fn(lua_State *L, const char *name) {
  luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 0);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
}

void orch__region_class(lua_State *L, const char *tname,
                        const luaL_Reg *methods, const luaL_Reg *meta) {
  luaL_newmetatable(L, tname);
  lua_pushcfunction(L, region_size);
  lua_setfield(L, -2, "__len");
  lua_pushcfunction(L, region_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, region_gc);
  lua_setfield(L, -2, "__close");
  if (meta) luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, region_methods, 0);
  push_strlib_fn(L, "pack");
  lua_pushcclosure(L, region_pack, 1);
  lua_setfield(L, -2, "pack");
  push_strlib_fn(L, "unpack");
  push_strlib_fn(L, "packsize");
  lua_pushcclosure(L, region_unpack, 2);
  lua_setfield(L, -2, "unpack");
  if (methods) luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushboolean(L, 1);
  lua_rawsetp(L, -2, &region_marker);
}
