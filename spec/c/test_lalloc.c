/*
 * test_lalloc.c: orch's Lua allocator (src/lalloc.c) against a model.
 *
 * The allocator keeps no header: a block's size is what Lua says it is, its
 * class comes from its page. A mistake there (a page on two lists, a block
 * handed out twice, a page given back while in use, a shrink that loses
 * bytes) corrupts the Lua heap of a daemon that runs for months, and the
 * sanitizer build cannot see it (it sends every block to malloc). So this
 * test drives the allocator the way Lua does, millions of times, with every
 * live block filled with its own pattern, checked before each free or
 * resize and all together after each trim; then a real Lua state on it runs
 * tables, strings, closures and coroutines through full and incremental
 * collections. Exits 0 when every check passed.
 */
#include "../../src/lalloc.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failed;

#define CHECK(cond) do { \
    if (!(cond)) { printf("#   check failed (line %d): %s\n", __LINE__, #cond); failed++; } \
  } while (0)

#define SLOTS 6000

typedef struct { unsigned char *p; size_t size; unsigned char tag; } slot;

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void) {  /* xorshift64*: the same run every time */
  rng ^= rng >> 12; rng ^= rng << 25; rng ^= rng >> 27;
  return rng * 2685821657736338717ull;
}

/* Mostly Lua's small objects, some just past the small limit, a few large. */
static size_t some_size(void) {
  uint64_t r = next_rand() % 100;
  if (r < 80) return 1 + next_rand() % 256;
  if (r < 95) return 200 + next_rand() % 200;
  return 1 + next_rand() % 20000;
}

static void fill(slot *s) {
  for (size_t i = 0; i < s->size; i++) s->p[i] = (unsigned char)(s->tag + i * 7);
}

static int intact(const slot *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s->p[i] != (unsigned char)(s->tag + i * 7)) return 0;
  return 1;
}

static int all_intact(slot *slots) {
  for (int i = 0; i < SLOTS; i++)
    if (slots[i].p && !intact(&slots[i], slots[i].size)) return 0;
  return 1;
}

static void model_run(void) {
  orch_lalloc *a = orch__lalloc_new();
  CHECK(a != NULL);
  if (!a) return;
  slot *slots = calloc(SLOTS, sizeof *slots);
  long bad = 0, misaligned = 0, ops = 2000000;
  for (long op = 0; op < ops; op++) {
    slot *s = &slots[next_rand() % SLOTS];
    if (!s->p) {                                   /* a new object */
      s->size = some_size();
      s->tag = (unsigned char)next_rand();
      s->p = orch__lalloc(a, NULL, next_rand() % 9, s->size);
      if (!s->p) { bad++; continue; }
      if ((uintptr_t)s->p % 8) misaligned++;
      fill(s);
      continue;
    }
    if (!intact(s, s->size)) bad++;
    if (next_rand() % 3 == 0) {                    /* freed */
      CHECK(orch__lalloc(a, s->p, s->size, 0) == NULL);
      s->p = NULL;
      continue;
    }
    size_t n = some_size();                        /* grown or shrunk */
    unsigned char *np = orch__lalloc(a, s->p, s->size, n);
    if (!np) { bad++; continue; }
    if ((uintptr_t)np % 8) misaligned++;
    s->p = np;
    if (!intact(s, s->size < n ? s->size : n)) bad++;
    s->size = n;
    fill(s);
    if (op % 250000 == 0) {                        /* pages back to the kernel */
      orch__lalloc_trim(a);
      if (!all_intact(slots)) bad++;
    }
  }
  CHECK(bad == 0);
  CHECK(misaligned == 0);
  /* Everything freed and trimmed, then used again from the pages given back. */
  for (int i = 0; i < SLOTS; i++)
    if (slots[i].p) { orch__lalloc(a, slots[i].p, slots[i].size, 0); slots[i].p = NULL; }
#if !defined(__SANITIZE_ADDRESS__)
  CHECK(orch__lalloc_trim(a) > 0);   /* (a sanitizer build sends all to malloc) */
#endif
  for (int i = 0; i < SLOTS; i++) {
    slots[i].size = 1 + next_rand() % 256;
    slots[i].tag = (unsigned char)i;
    slots[i].p = orch__lalloc(a, NULL, 0, slots[i].size);
    CHECK(slots[i].p != NULL);
    if (slots[i].p) fill(&slots[i]);
  }
  CHECK(all_intact(slots));
  for (int i = 0; i < SLOTS; i++)
    if (slots[i].p) orch__lalloc(a, slots[i].p, slots[i].size, 0);
  free(slots);
  orch__lalloc_free(a);
}

static const char *workload =
  "local t, keep = {}, {}\n"
  "for round = 1, 30 do\n"
  "  for i = 1, 3000 do\n"
  "    local s = ('k%d.%d'):format(round, i)\n"
  "    t[s] = { i, s, function() return i end, s:rep(i % 40) }\n"
  "    if i % 7 == 0 then t[s] = nil end\n"
  "  end\n"
  "  local co = {}\n"
  "  for i = 1, 300 do\n"
  "    co[i] = coroutine.wrap(function(x) local y = coroutine.yield(x + 1); return y * 2 end)\n"
  "    assert(co[i](i) == i + 1)\n"
  "  end\n"
  "  for i = 1, 300 do assert(co[i](i) == 2 * i) end\n"
  "  keep[round] = t\n"
  "  if round % 3 == 0 then t = {} ; keep[round - 2] = nil end\n"
  "  if round % 5 == 0 then collectgarbage() end\n"
  "end\n"
  "local n = 0\n"
  "for _, tt in pairs(keep) do for k, v in pairs(tt) do\n"
  "  assert(v[2] == k and v[3]() == v[1] and #v[4] == #k * (v[1] % 40)); n = n + 1\n"
  "end end\n"
  "return n\n";

static void lua_run(void) {
  lua_State *L = orch__lalloc_newstate();
  CHECK(L != NULL);
  if (!L) return;
  CHECK(orch__lalloc_of(L) != NULL);
  luaL_openlibs(L);
  for (int pass = 0; pass < 2; pass++) {
    int r = luaL_dostring(L, workload);
    if (r != LUA_OK) printf("#   lua: %s\n", lua_tostring(L, -1));
    CHECK(r == LUA_OK);
    CHECK(lua_tointeger(L, -1) > 0);
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    orch__lalloc_trim(orch__lalloc_of(L));   /* the second pass reuses given-back pages */
  }
  orch__lalloc_close(L);
  /* A state made by someone else is not the allocator's. */
  lua_State *H = luaL_newstate();
  CHECK(orch__lalloc_of(H) == NULL);
  lua_close(H);
}

int main(void) {
  model_run();
  lua_run();
  if (failed) {
    printf("test_lalloc: %d checks failed\n", failed);
    return 1;
  }
  printf("test_lalloc: ok\n");
  return 0;
}
