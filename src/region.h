/*
 * region.h: the one accessor implementation for memory shared between
 * processes (SysV shm segments, mmap mappings, and any other module that
 * wants a bounds-checked window on shared memory, e.g. the heartbeat table).
 *
 * A Region is a Lua userdata whose first member is an orch__region. The
 * module that obtains the memory (l_shm.c, l_mmap.c) embeds orch__region at
 * the start of its own struct, creates the userdata *closed* with
 * orch__region_new() before anything can fail, then obtains the memory and
 * calls orch__region_attach(). The release function it passes is called
 * exactly once, on the loop thread, when the region is closed (explicitly,
 * or by the __close and __gc that orch__region_class installs), so __gc is
 * always safe.
 *
 * Every Lua method (see doc/shm.md) checks bounds with overflow-safe
 * arithmetic, refuses writes to read-only memory, and raises
 * "attempt to use a closed <class>" once the region is closed.
 *
 * Nothing here blocks. Typed accesses use memcpy (any alignment, native byte
 * order); the atomics need natural alignment and raise otherwise.
 */
#ifndef ORCH_REGION_H
#define ORCH_REGION_H

#include <stddef.h>
#include <lua.h>
#include <lauxlib.h>

typedef struct orch__region orch__region;

/* Releases the memory (munmap, shmdt, ...): r->mem and r->size hold the
 * values given to orch__region_attach (r->base is already NULL). Runs on
 * the loop thread. Returns 0 or a positive errno. */
typedef int (*orch__region_release_fn)(orch__region *r);

#define ORCH__REGION_READONLY 1u

struct orch__region {
  unsigned char *base;   /* the memory; NULL while closed (Lua sees it closed) */
  size_t size;           /* bytes usable from base */
  unsigned flags;        /* ORCH__REGION_READONLY */
  const char *tname;     /* class name for messages, e.g. "orch.Shm" (static) */
  orch__region_release_fn release;
  /* Off-loop users (e.g. an msync in the threadpool): while pins > 0 the
   * release is deferred; orch__region_unpin performs it. */
  int pins;
  unsigned char *mem;    /* the memory to release (stays set while pinned) */
};

/* [-0,+1] Creates a closed region userdata of `usize` bytes (at least
 * sizeof(orch__region); the rest is zeroed and belongs to the caller) with
 * the metatable `tname`, which must have been made by orch__region_class. */
orch__region *orch__region_new(lua_State *L, const char *tname, size_t usize);

/* Opens r on [base, base+size). release is called once when r is closed. */
void orch__region_attach(orch__region *r, void *base, size_t size,
                         unsigned flags, orch__region_release_fn release);

/* Closes r: hides the memory from Lua and calls release (now, or when the
 * last pin goes). Idempotent: returns 0 when already closed. */
int orch__region_close(orch__region *r);

/* Pin/unpin r across an off-loop use of r->mem (loop thread only). The
 * caller also anchors the userdata (registry ref) while pinned, so the GC
 * cannot free it; orch__region_unpin returns the deferred release's result. */
void orch__region_pin(orch__region *r);
int orch__region_unpin(orch__region *r);

/* The region at idx if it is a userdata of any region class (open or
 * closed), else NULL. Never raises. */
orch__region *orch__region_test(lua_State *L, int idx);

/* The open region at idx; raises a type error if idx is not a region and
 * "attempt to use a closed <class>" if it is closed. */
orch__region *orch__region_check(lua_State *L, int idx);

/* Raises a bad-argument error unless [off, off+len) lies inside r (r open).
 * argidx is the stack index of the offset argument (for the message). */
void orch__region_check_range(lua_State *L, orch__region *r, int argidx,
                              lua_Integer off, lua_Integer len);

/* [-0,+1] Creates the metatable `tname` for a region class: every region
 * method (size, read, write, u8 ... f64, set_*, load/store/add/cas[32],
 * pack, unpack) plus `methods` in __index, __len, __gc and __close (both
 * close the region), then the metamethods in `meta` (the class must supply
 * __tostring; it may override the others). Leaves it on the stack, like
 * orch__newclass. */
void orch__region_class(lua_State *L, const char *tname,
                        const luaL_Reg *methods, const luaL_Reg *meta);

#endif
