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
 * collections. Out of memory (oom_run: its mmap and malloc failing for real
 * under RLIMIT_AS; budget_run: a budget on top of it) an allocation returns
 * NULL, a shrink still succeeds, Lua raises its memory error and the state
 * goes on. Exits 0 when every check passed.
 */
#include "../../src/lalloc.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

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

/* A script that allocates small objects until Lua says it is out of
 * memory, then (the garbage gone) works again: "not enough memory 1000". */
static const char *oom_script =
  "local ok, err = pcall(function()\n"
  "  local t = {}\n"
  "  for i = 1, 1e9 do t[i] = { i, tostring(i) } end\n"
  "end)\n"
  "collectgarbage()\n"
  "local t = {}\n"
  "for i = 1, 1000 do t[i] = { i } end\n"
  "return tostring(ok) .. ' ' .. tostring(err) .. ' ' .. #t\n";

static void check_oom_script(lua_State *L, const char *what) {
  int r = luaL_dostring(L, oom_script);
  const char *res = lua_tostring(L, -1);
  if (r != LUA_OK || !res || strcmp(res, "false not enough memory 1000") != 0)
    printf("#   %s: %s\n", what, res ? res : "(no result)");
  CHECK(r == LUA_OK && res && strcmp(res, "false not enough memory 1000") == 0);
  lua_settop(L, 0);
}

/* Both builds: orch's allocator under a budget (what it is asked for past
 * the budget fails, shrinks never). The sanitizer build sends every block
 * to malloc: this is what it can check there. */
typedef struct { orch_lalloc *a; size_t used, budget; } budget;

static void *budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  budget *b = ud;
  size_t old = ptr ? osize : 0;
  if (nsize > old && b->used - old + nsize > b->budget) return NULL;
  void *np = orch__lalloc(b->a, ptr, osize, nsize);
  if (np || nsize == 0) b->used = b->used - old + nsize;
  return np;
}

static void budget_run(void) {
  budget b = { orch__lalloc_new(), 0, 16u << 20 };
  CHECK(b.a != NULL);
  if (!b.a) return;
  lua_State *L = lua_newstate(budget_alloc, &b);
  CHECK(L != NULL);
  if (L) {
    luaL_openlibs(L);
    check_oom_script(L, "budget");
    lua_close(L);
  }
  orch__lalloc_free(b.a);
}

/* Release build: the allocator's mmap fails for real, under an RLIMIT_AS
 * just above what the process maps. Not in the sanitizer build, which
 * needs terabytes of address space for its shadow memory and sends every
 * block to malloc anyway (budget_run is what it checks). */
static void oom_run(void) {
#if defined(__SANITIZE_ADDRESS__)
  printf("# oom_run: release build only (ASan: no lalloc pages, no RLIMIT_AS)\n");
#else
  enum { MAXB = 1 << 20 };
  void **blocks = calloc(MAXB, sizeof *blocks);
  orch_lalloc *a = orch__lalloc_new();
  lua_State *L = orch__lalloc_newstate();
  CHECK(blocks && a && L);
  if (!blocks || !a || !L) return;
  luaL_openlibs(L);
  /* A malloc block (past the small sizes) to shrink once memory is out. */
  char *big = orch__lalloc(a, NULL, 0, 1000);
  CHECK(big != NULL);
  memset(big, 'b', 1000);
  struct rlimit old;
  CHECK(getrlimit(RLIMIT_AS, &old) == 0);
  /* The address space the process uses now (VmSize). */
  unsigned long vm_pages = 0;
  FILE *statm = fopen("/proc/self/statm", "r");
  if (statm) {
    if (fscanf(statm, "%lu", &vm_pages) != 1) vm_pages = 0;
    fclose(statm);
  }
  struct rlimit lim = { (rlim_t)vm_pages * 4096 + (8u << 20), old.rlim_max };
  CHECK(setrlimit(RLIMIT_AS, &lim) == 0);
  /* Small blocks until the allocator has no page left: NULL, no crash. */
  size_t n = 0;
  while (n < MAXB && (blocks[n] = orch__lalloc(a, NULL, 0, 64))) memset(blocks[n++], 'x', 64);
  CHECK(n > 0 && n < MAXB);
  /* No page for its class: a shrink of the malloc block still succeeds
   * (it stays where it is), keeps its bytes, and goes through a later
   * grow, shrink and free by its small size. */
  char *s = orch__lalloc(a, big, 1000, 100);
  CHECK(s == big);
  CHECK(s && s[0] == 'b' && s[99] == 'b');
  char *s2 = orch__lalloc(a, s, 100, 50);
  CHECK(s2 == s);
  /* Room again: blocks come once some are freed. */
  for (size_t i = 0; i < n; i += 2) orch__lalloc(a, blocks[i], 64, 0), blocks[i] = NULL;
  void *again = orch__lalloc(a, NULL, 0, 64);
  CHECK(again != NULL);
  if (again) orch__lalloc(a, again, 64, 0);
  if (s2) {
    char *s3 = orch__lalloc(a, s2, 50, 64);      /* moves to a page of its class */
    CHECK(s3 != NULL && s3 != s2 && s3[0] == 'b' && s3[49] == 'b');
    if (s3) orch__lalloc(a, s3, 64, 0);
  }
  for (size_t i = 0; i < n; i++) if (blocks[i]) orch__lalloc(a, blocks[i], 64, 0);
  orch__lalloc_trim(a);
  /* A Lua state on the allocator, out of memory: its memory error, then
   * it goes on. */
  check_oom_script(L, "RLIMIT_AS");
  CHECK(setrlimit(RLIMIT_AS, &old) == 0);
  orch__lalloc_close(L);
  orch__lalloc_free(a);
  free(blocks);
#endif
}

/* A burst of new blocks in a big state: fresh pages are made resident in
 * batches that double (fewer system calls a page: 16 pages, then 32, ...
 * up to a chunk), the caller is told (the runtime then purges a while
 * after), and what the last batch made resident ahead and the burst left
 * unused goes back at the purge. */
#if !defined(__SANITIZE_ADDRESS__)
static int surplus_calls;
static void count_surplus(void *ud) { (void)ud; surplus_calls++; }

static size_t resident(void *at, size_t pages) {
  unsigned char vec[256];
  if (pages > sizeof vec || mincore(at, pages * 4096, vec) != 0) return (size_t)-1;
  size_t n = 0;
  for (size_t i = 0; i < pages; i++) n += vec[i] & 1;
  return n;
}

#endif

static void populate_run(void) {
#if defined(__SANITIZE_ADDRESS__)
  printf("# populate_run: release build only (ASan: no lalloc pages)\n");
#else
  enum { N = 150000, SIZE = 200 };     /* 30 MB: past the first 4 MiB chunks */
  void **blocks = calloc(N, sizeof *blocks);
  orch_lalloc *a = orch__lalloc_new();
  CHECK(blocks && a);
  if (!blocks || !a) return;
  orch__lalloc_on_surplus(a, count_surplus, NULL);
  size_t most = 0;
  for (size_t i = 0; i < N; i++) {
    blocks[i] = orch__lalloc(a, NULL, 0, SIZE);
    CHECK(blocks[i] != NULL);
    if (!blocks[i]) break;
    memset(blocks[i], 'p', SIZE);
    size_t ahead = orch__lalloc_ahead(a, NULL);
    if (ahead > most) most = ahead;
  }
  CHECK(most > 128);                   /* a batch of 16 pages at a time: at most 16 */
  CHECK(surplus_calls > 0);
  void *at = NULL;
  size_t ahead = orch__lalloc_ahead(a, &at);
  if (ahead > 0) {
    CHECK(resident(at, ahead) == ahead);
    orch__lalloc_purge(a);
    CHECK(orch__lalloc_ahead(a, NULL) == 0);
    CHECK(resident(at, ahead) == 0);   /* back to the kernel */
  }
  /* Then the burst goes on from the first batch size. */
  void *more = orch__lalloc(a, NULL, 0, SIZE);
  CHECK(more != NULL);
  CHECK(orch__lalloc_ahead(a, NULL) <= 16);
  if (more) orch__lalloc(a, more, SIZE, 0);
  for (size_t i = 0; i < N; i++) if (blocks[i]) orch__lalloc(a, blocks[i], SIZE, 0);
  orch__lalloc_free(a);
  free(blocks);
#endif
}

int main(void) {
  populate_run();
  model_run();
  lua_run();
  budget_run();
  oom_run();
  if (failed) {
    printf("test_lalloc: %d checks failed\n", failed);
    return 1;
  }
  printf("test_lalloc: ok\n");
  return 0;
}
