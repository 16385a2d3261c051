/*
 * lalloc.c: the allocator of the Lua states orch makes (orch_new).
 *
 * Lua tells its allocator the size of every block it frees or resizes, so a
 * small block needs no header. glibc's malloc puts an 8-byte header before
 * every block and rounds the whole up to 16 bytes (a 56-byte table takes 64,
 * a 40-byte upvalue 48, a 48-byte string 64): a supervisor holds tens of such
 * objects per service, and the rounding was about a sixth of its heap. Here a
 * block of up to SMALL_MAX bytes comes from a page of its size class (8-byte
 * steps), without a header; larger blocks go to malloc.
 *
 * Each page keeps its own free list; a class allocates from its pages that
 * have room. One more class holds a new coroutine's stack (STACK_SIZE: Lua
 * makes one for every coroutine, 720 bytes, too large for a small class and
 * the largest part of a task), in spans of three pages (17 stacks, 48 bytes
 * left over); a span is one page record for its pages. A page (or span)
 * whose blocks are all free again can serve any class of its span size;
 * the first KEEP_EMPTY such pages stay resident (a burst of garbage comes
 * back); the others are given back to the kernel (MADV_DONTNEED) at
 * orch__lalloc_purge, which the runtime calls PURGE_MS after there were
 * more (runtime.c), and all of them at orch__lalloc_trim
 * (orch.malloc_trim); pages given back are used again before fresh pages.
 * Meanwhile the memory a burst of objects left (100,000 ended tasks: 35,000
 * pages) serves the next burst without a system call and a page fault a
 * page. Pages given back one after the other go in runs of adjacent pages,
 * one system call a run (RUN_MAX pages at most wait for it). Pages come in
 * CHUNK-aligned chunks from mmap, so a block finds its page's record from
 * its address alone; chunks are unmapped when the state closes. They are
 * mapped as many at a time as the state has (up to SPARE_MAX; address space
 * only until used): a heap growing by 140 MiB makes about a dozen mappings
 * instead of 140 (and two munmaps each for the alignment). Once the state
 * has POPULATE_FROM chunks, fresh pages are made resident in batches
 * (MADV_POPULATE_WRITE: one system call instead of a page fault a page, for
 * a burst of new objects such as 100,000 tasks): POPULATE_PAGES, and from
 * GROW_FROM chunks on twice as many each time up to a chunk, until the
 * next purge (the kernel's cost a call is then spread over more pages);
 * the pages the last batch made resident and the burst left unused go back
 * at the next purge, which starts again from POPULATE_PAGES (the runtime
 * purges a second after the batch first grew). A supervisor of 500
 * services (a heap of a few MiB) keeps making 16 pages resident at a time.
 *
 * A state is used by one thread at a time (the loop thread): nothing here
 * locks. Sanitizer builds (ASan) send every block to malloc, so that an
 * overflow of a userdata in a binding is still caught.
 */
#include "lalloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <lauxlib.h>

#if defined(__SANITIZE_ADDRESS__)
#define LALLOC_SMALL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LALLOC_SMALL 0
#endif
#endif
#ifndef LALLOC_SMALL
#define LALLOC_SMALL 1
#endif

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23          /* Linux 5.14 */
#endif

#define GRAIN 8
#define SMALL_MAX 256
#define NSMALL (SMALL_MAX / GRAIN + 1)  /* class c < NSMALL: blocks of c * GRAIN bytes */
/* A new coroutine's stack in Lua 5.4: BASIC_STACK_SIZE (2 * LUA_MINSTACK)
 * and EXTRA_STACK (5) slots of 16 bytes. Another Lua's size just goes to
 * malloc. */
#define STACK_SIZE ((2 * LUA_MINSTACK + 5) * 16)
#define STACK_CLASS NSMALL
#define STACK_SPAN 3                    /* pages: 17 stacks of 720 bytes */
#define NCLASSES (NSMALL + 1)
#define MAX_SPAN 3
#define PAGE 4096
#define CHUNK (1024 * 1024)
#define PAGES (CHUNK / PAGE)
#define KEEP_EMPTY 32
#define RUN_MAX 16
#define POPULATE_FROM 4                 /* chunks (MiB) */
#define POPULATE_PAGES 16               /* the first batch of a burst */
#define POPULATE_MAX 256                /* the largest (a chunk) */
#define GROW_FROM 16                    /* chunks (MiB) from which batches grow */

typedef struct free_block { struct free_block *next; } free_block;

/* A page's record (a span's: its first page's; the records of its other
 * pages only say how far back it is). A page is on one list at a time: its
 * class's pages with room (cls > 0), or the empty pages of its span size
 * (cls == 0). */
typedef struct page {
  free_block *free;                 /* freed blocks of this page */
  struct page *prev, *next;
  uint8_t cls;                      /* 0: empty */
  uint8_t span;                     /* pages (1, or STACK_SPAN) */
  uint8_t off;                      /* in a span: records back to its first */
  uint8_t returned;                 /* empty and given back to the kernel */
  uint16_t used;                    /* blocks in use */
  uint16_t carved;                  /* bytes handed out from the start at least once */
} page;

/* The chunk's first pages hold its header; the others are blocks' pages. */
typedef struct chunk {
  struct chunk *next;
  page pages[PAGES];
} chunk;
#define HEADER_PAGES ((sizeof(chunk) + PAGE - 1) / PAGE)

/* Lua assumes that a shrink never fails. A large block (malloc's) shrunk
 * to a small size moves to a page of its class; when no page can be had
 * (mmap failed: out of memory) it stays where it is, a malloc block of a
 * small size, and is noted here until it is freed or moved: a block's
 * size no longer says whose it is. At most KEPT of them; past that a shrink
 * fails as any allocation would (Lua raises its memory error where it
 * can). Looked at only while one is noted. */
#define KEPT 64

struct orch_lalloc {
  void *kept[KEPT];                 /* malloc blocks of small sizes */
  size_t nkept;
  page *room[NCLASSES];             /* per class: its pages with room */
  page *hot[MAX_SPAN + 1], *cold[MAX_SPAN + 1];   /* empty pages by span: resident / given back */
  size_t nhot;                      /* pages in the hot lists */
  chunk *chunks;
  size_t nchunks;
  char *spare;                      /* aligned chunks mapped ahead, not yet used */
  size_t nspare;
  size_t fresh;                     /* next never-used page of the newest chunk */
  size_t populated;                 /* pages of the newest chunk made resident */
  size_t batch;                     /* pages the next populate makes resident */
  int no_populate;                  /* the kernel has no MADV_POPULATE_WRITE */
  char *run;                        /* pages given back, their madvise to come */
  size_t run_pages;
  void (*surplus)(void *);          /* told of empty pages beyond KEEP_EMPTY */
  void *surplus_ud;
};

static size_t class_size(size_t cls) { return cls == STACK_CLASS ? STACK_SIZE : cls * GRAIN; }
static size_t class_span(size_t cls) { return cls == STACK_CLASS ? STACK_SPAN : 1; }

/* The class of a block of size bytes; 0: malloc's. */
static size_t class_of(size_t size) {
  if (!LALLOC_SMALL) return 0;
  if (size <= SMALL_MAX) return (size + GRAIN - 1) / GRAIN;
  return size == STACK_SIZE ? STACK_CLASS : 0;
}

orch_lalloc *orch__lalloc_new(void) { return calloc(1, sizeof(orch_lalloc)); }

void orch__lalloc_free(orch_lalloc *a) {
  if (!a) return;
  chunk *c = a->chunks;
  while (c) {
    chunk *next = c->next;
    munmap(c, CHUNK);
    c = next;
  }
  if (a->nspare) munmap(a->spare, a->nspare * CHUNK);
  free(a);
}

static chunk *chunk_of(const void *p) { return (chunk *)((uintptr_t)p & ~(uintptr_t)(CHUNK - 1)); }
static page *page_of(const void *p) {
  page *pg = &chunk_of(p)->pages[((uintptr_t)p & (CHUNK - 1)) / PAGE];
  return pg - pg->off;
}
static char *base_of(page *pg) { chunk *c = chunk_of(pg); return (char *)c + (size_t)(pg - c->pages) * PAGE; }

static void push(page **list, page *pg) {
  pg->prev = NULL;
  pg->next = *list;
  if (*list) (*list)->prev = pg;
  *list = pg;
}

static void unlink_page(page **list, page *pg) {
  if (pg->prev) pg->prev->next = pg->next;
  else *list = pg->next;
  if (pg->next) pg->next->prev = pg->prev;
  pg->prev = pg->next = NULL;
}

/* Maps n aligned chunks: n + 1 chunks' worth, then the unaligned ends
 * unmapped. NULL when the kernel has no room. */
static char *map_chunks(size_t n) {
  char *p = mmap(NULL, (n + 1) * CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  uintptr_t start = ((uintptr_t)p + CHUNK - 1) & ~(uintptr_t)(CHUNK - 1);
  uintptr_t end = (uintptr_t)p + (n + 1) * CHUNK;
  if (start > (uintptr_t)p) munmap(p, start - (uintptr_t)p);
  if (end > start + n * CHUNK) munmap((char *)start + n * CHUNK, end - start - n * CHUNK);
  return (char *)start;
}

/* A new chunk: from the ones mapped ahead, else from a new mapping of as
 * many as the state has (1 to SPARE_MAX): a heap that grows by a hundred
 * MiB makes a few mappings, not one (and two munmaps) a MiB. Chunks mapped
 * ahead are address space only: no page of them is touched before use. */
#define SPARE_MAX 16
static chunk *new_chunk(orch_lalloc *a) {
  if (!a->nspare) {
    size_t n = a->nchunks < 1 ? 1 : a->nchunks > SPARE_MAX ? SPARE_MAX : a->nchunks;
    char *p = map_chunks(n);
    if (!p && n > 1) p = map_chunks(n = 1);
    if (!p) return NULL;
    a->spare = p;
    a->nspare = n;
  }
  chunk *c = (chunk *)a->spare;    /* mmap's pages are zero: every record empty */
  a->spare += CHUNK;
  a->nspare--;
  c->next = a->chunks;
  a->chunks = c;
  a->nchunks++;
  a->fresh = a->populated = HEADER_PAGES;
  return c;
}

/* The pages given back so far are: one madvise for the run. */
static void run_flush(orch_lalloc *a) {
  if (a->run_pages) madvise(a->run, a->run_pages * PAGE, MADV_DONTNEED);
  a->run_pages = 0;
}

/* pg (empty) goes back to the kernel: with the run when next to it. */
static void give_back(orch_lalloc *a, page *pg) {
  char *b = base_of(pg);
  size_t k = pg->span;
  pg->returned = 1;
  if (a->run_pages && b + k * PAGE == a->run) {
    a->run = b;
    a->run_pages += k;
  } else if (a->run_pages && b == a->run + a->run_pages * PAGE) {
    a->run_pages += k;
  } else {
    run_flush(a);
    a->run = b;
    a->run_pages = k;
  }
  if (a->run_pages >= RUN_MAX) run_flush(a);
}

/* k fresh pages of the newest chunk, made resident ahead in a big state. */
static page *fresh_pages(orch_lalloc *a, size_t k) {
  if (!a->chunks || a->fresh + k > PAGES) {
    if (!new_chunk(a)) return NULL;
  }
  chunk *c = a->chunks;
  if (a->fresh + k > a->populated && a->nchunks >= POPULATE_FROM && !a->no_populate) {
    if (a->batch < POPULATE_PAGES) a->batch = POPULATE_PAGES;
    size_t n = PAGES - a->fresh < a->batch ? PAGES - a->fresh : a->batch;
    if (madvise((char *)c + a->fresh * PAGE, n * PAGE, MADV_POPULATE_WRITE) == 0) a->populated = a->fresh + n;
    else a->no_populate = 1;      /* an older kernel: pages fault in one by one */
    /* A burst: the next batch is twice as large (fewer system calls a page),
     * up to a chunk; what it made resident ahead and left unused goes back
     * with the next purge, which starts over from the first batch size. */
    if (a->surplus && a->batch < POPULATE_MAX && a->nchunks >= GROW_FROM) {
      a->batch *= 2;
      a->surplus(a->surplus_ud);
    }
  }
  page *pg = &c->pages[a->fresh];
  for (size_t i = 1; i < k; i++) pg[i].off = (uint8_t)i;
  a->fresh += k;
  return pg;
}

/* An empty page (span) for class cls: a resident one, one given back, or
 * a fresh one. */
static page *take_page(orch_lalloc *a, size_t cls) {
  size_t k = class_span(cls);
  page *pg;
  if (a->hot[k]) {
    pg = a->hot[k];
    unlink_page(&a->hot[k], pg);
    a->nhot -= k;
  } else if (a->cold[k]) {
    run_flush(a);                   /* it may be in the run */
    pg = a->cold[k];
    unlink_page(&a->cold[k], pg);
  } else {
    pg = fresh_pages(a, k);
    if (!pg) return NULL;
  }
  pg->cls = (uint8_t)cls;
  pg->span = (uint8_t)k;
  pg->used = 0;
  pg->carved = 0;
  pg->returned = 0;
  pg->free = NULL;
  return pg;
}

static int has_room(page *pg, size_t size) { return pg->free || pg->carved + size <= (size_t)PAGE * pg->span; }

/* A block of class cls from pg, a page of the class with room. */
static inline void *carve(orch_lalloc *a, page *pg, size_t cls) {
  size_t size = class_size(cls);
  void *p;
  if (pg->free) {
    p = pg->free;
    pg->free = pg->free->next;
  } else {
    p = base_of(pg) + pg->carved;
    pg->carved = (uint16_t)(pg->carved + size);
  }
  pg->used++;
  if (!has_room(pg, size)) unlink_page(&a->room[cls], pg);
  return p;
}

/* The class has no page with room: one is taken (apart from the common
 * case, which then needs no saved registers). */
static __attribute__((noinline)) void *small_alloc_page(orch_lalloc *a, size_t cls) {
  page *pg = take_page(a, cls);
  if (!pg) return NULL;
  push(&a->room[cls], pg);
  return carve(a, pg, cls);
}

static inline void *small_alloc(orch_lalloc *a, size_t cls) {
  page *pg = a->room[cls];
  return pg ? carve(a, pg, cls) : small_alloc_page(a, cls);
}

static void small_free(orch_lalloc *a, void *p) {
  page *pg = page_of(p);
  size_t cls = pg->cls, size = class_size(cls), k = pg->span;
  int was_full = !has_room(pg, size);
  free_block *b = p;
  b->next = pg->free;
  pg->free = b;
  if (--pg->used > 0) {
    if (was_full) push(&a->room[cls], pg);
    return;
  }
  if (!was_full) unlink_page(&a->room[cls], pg);
  pg->cls = 0;
  pg->free = NULL;
  push(&a->hot[k], pg);
  a->nhot += k;
  if (a->nhot > KEEP_EMPTY) {
    if (a->surplus) a->surplus(a->surplus_ud);
    else orch__lalloc_purge(a);
  }
}

/* Gives back the empty pages beyond keep, the longest empty first (the
 * lists' tails). */
static size_t purge_to(orch_lalloc *a, size_t keep) {
  size_t n = 0;
  /* The pages made resident ahead of a burst and not used: back too. */
  if (a->chunks && a->populated > a->fresh) {
    madvise((char *)a->chunks + a->fresh * PAGE, (a->populated - a->fresh) * PAGE, MADV_DONTNEED);
    n += a->populated - a->fresh;
    a->populated = a->fresh;
  }
  a->batch = POPULATE_PAGES;
  for (size_t k = MAX_SPAN; k >= 1 && a->nhot > keep; k--) {
    page *pg = a->hot[k];
    while (pg && pg->next) pg = pg->next;
    while (pg && a->nhot > keep) {
      page *prev = pg->prev;
      unlink_page(&a->hot[k], pg);
      a->nhot -= k;
      n += k;
      give_back(a, pg);
      push(&a->cold[k], pg);
      pg = prev;
    }
  }
  run_flush(a);
  return n;
}

size_t orch__lalloc_purge(orch_lalloc *a) { return purge_to(a, KEEP_EMPTY); }

size_t orch__lalloc_trim(orch_lalloc *a) { return purge_to(a, 0); }

size_t orch__lalloc_ahead(orch_lalloc *a, void **at) {
  if (!a->chunks || a->populated <= a->fresh) return 0;
  if (at) *at = (char *)a->chunks + a->fresh * PAGE;
  return a->populated - a->fresh;
}

void orch__lalloc_on_surplus(orch_lalloc *a, void (*fn)(void *), void *ud) {
  a->surplus = fn;
  a->surplus_ud = ud;
}

/* Whether p is a kept malloc block (see KEPT); with drop, forgets it. */
static int kept(orch_lalloc *a, const void *p, int drop) {
  for (size_t i = 0; i < a->nkept; i++)
    if (a->kept[i] == p) {
      if (drop) a->kept[i] = a->kept[--a->nkept];
      return 1;
    }
  return 0;
}

static __attribute__((noinline)) void *lalloc_rest(orch_lalloc *a, void *ptr, size_t osize, size_t nsize);

/* The common cases, a new small block from a page with room and a small
 * block freed from a page that keeps others, need no saved register (a
 * function apart from the rest); osize is the kind of object made when
 * there is no ptr. */
void *orch__lalloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  orch_lalloc *a = ud;
  if (!ptr) {
    size_t nc = class_of(nsize);
    if (nc && a->room[nc]) return carve(a, a->room[nc], nc);
  } else if (!nsize && class_of(osize) && !a->nkept) {
    page *pg = page_of(ptr);
    if (pg->used > 1 && has_room(pg, class_size(pg->cls))) {
      free_block *b = ptr;
      b->next = pg->free;
      pg->free = b;
      pg->used--;
      return NULL;
    }
  }
  return lalloc_rest(a, ptr, osize, nsize);
}

static void *lalloc_rest(orch_lalloc *a, void *ptr, size_t osize, size_t nsize) {
  size_t nc = class_of(nsize);
  if (!ptr) return nc ? small_alloc(a, nc) : nsize ? malloc(nsize) : NULL;
  size_t oc = class_of(osize);
  /* A kept block is malloc's whatever its size; it stops being kept when
   * it is freed or moves (it stays kept where it stays put). */
  int was_kept = oc && a->nkept && kept(a, ptr, 1);
  if (was_kept) oc = 0;
  if (nsize == 0) {
    if (oc) small_free(a, ptr);
    else free(ptr);
    return NULL;
  }
  if (oc && oc == nc) return ptr;
  if (!oc && !nc) {
    void *rp = realloc(ptr, nsize);
    if (!rp && was_kept) a->kept[a->nkept++] = ptr;   /* still there, still small */
    return rp;
  }
  void *np = nc ? small_alloc(a, nc) : malloc(nsize);
  if (!np) {
    /* Out of memory. Lua expects a shrink to succeed: a small block that
     * cannot move to a smaller class stays where it is (its page knows its
     * real size), and so does a malloc block (kept, while there is room to
     * note it). */
    if (nsize >= osize) {
      if (was_kept) a->kept[a->nkept++] = ptr;
      return NULL;
    }
    if (oc) return ptr;
    if (a->nkept < KEPT) {
      a->kept[a->nkept++] = ptr;
      return ptr;
    }
    return NULL;
  }
  memcpy(np, ptr, osize < nsize ? osize : nsize);
  if (oc) small_free(a, ptr);
  else free(ptr);
  return np;
}

/* ---------------------------------------------------------------- the state */

/* lauxlib's panic and warning functions (luaL_newstate installs them, but
 * only for its own allocator): the same messages and the same "@on"/"@off"
 * control of warnings, off at the start. */
static int panic(lua_State *L) {
  const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error object is not a string";
  lua_writestringerror("PANIC: unprotected error in call to Lua API (%s)\n", msg);
  return 0;
}

static void warn_on(void *ud, const char *message, int tocont);
static void warn_off(void *ud, const char *message, int tocont);

static int warn_control(lua_State *L, const char *message, int tocont) {
  if (tocont || *(message++) != '@') return 0;
  if (strcmp(message, "off") == 0) lua_setwarnf(L, warn_off, L);
  else if (strcmp(message, "on") == 0) lua_setwarnf(L, warn_on, L);
  return 1;
}

static void warn_off(void *ud, const char *message, int tocont) { warn_control(ud, message, tocont); }

static void warn_cont(void *ud, const char *message, int tocont) {
  lua_State *L = ud;
  lua_writestringerror("%s", message);
  if (tocont) {
    lua_setwarnf(L, warn_cont, L);
  } else {
    lua_writestringerror("%s", "\n");
    lua_setwarnf(L, warn_on, L);
  }
}

static void warn_on(void *ud, const char *message, int tocont) {
  if (warn_control(ud, message, tocont)) return;
  lua_writestringerror("%s", "Lua warning: ");
  warn_cont(ud, message, tocont);
}

lua_State *orch__lalloc_newstate(void) {
  orch_lalloc *a = orch__lalloc_new();
  if (!a) return NULL;
  lua_State *L = lua_newstate(orch__lalloc, a);
  if (!L) { orch__lalloc_free(a); return NULL; }
  lua_atpanic(L, panic);
  lua_setwarnf(L, warn_off, L);
  return L;
}

orch_lalloc *orch__lalloc_of(lua_State *L) {
  void *ud;
  return lua_getallocf(L, &ud) == orch__lalloc ? ud : NULL;
}

void orch__lalloc_close(lua_State *L) {
  orch_lalloc *a = orch__lalloc_of(L);
  lua_close(L);
  orch__lalloc_free(a);
}
