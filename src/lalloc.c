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
 * have room. A page whose blocks are all free again can serve any class; the
 * first KEEP_EMPTY such pages stay resident (a burst of garbage comes back),
 * the others, and all of them at orch__lalloc_trim (orch.malloc_trim), are
 * given back to the kernel (MADV_DONTNEED) and used again before fresh pages.
 * Pages come in CHUNK-aligned chunks from mmap, so a block finds its page's
 * record from its address alone; chunks are unmapped when the state closes.
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

#define GRAIN 8
#define SMALL_MAX 256
#define NCLASSES (SMALL_MAX / GRAIN + 1)  /* class c: blocks of c * GRAIN bytes */
#define PAGE 4096
#define CHUNK (1024 * 1024)
#define PAGES (CHUNK / PAGE)
#define KEEP_EMPTY 32

typedef struct free_block { struct free_block *next; } free_block;

/* A page's record. A page is on one list at a time: its class's pages with
 * room (cls > 0), or the empty pages (cls == 0). */
typedef struct page {
  free_block *free;                 /* freed blocks of this page */
  struct page *prev, *next;
  uint16_t cls;                     /* 0: empty */
  uint16_t used;                    /* blocks in use */
  uint16_t carved;                  /* bytes handed out from the start at least once */
  uint16_t returned;                /* empty and given back to the kernel */
} page;

/* The chunk's first pages hold its header; the others are blocks' pages. */
typedef struct chunk {
  struct chunk *next;
  page pages[PAGES];
} chunk;
#define HEADER_PAGES ((sizeof(chunk) + PAGE - 1) / PAGE)

struct orch_lalloc {
  page *room[NCLASSES];             /* per class: its pages with room */
  page *hot, *cold;                 /* empty pages: resident / given back */
  size_t nhot;
  chunk *chunks;
  size_t fresh;                     /* next never-used page of the newest chunk */
};

orch_lalloc *orch__lalloc_new(void) { return calloc(1, sizeof(orch_lalloc)); }

void orch__lalloc_free(orch_lalloc *a) {
  if (!a) return;
  chunk *c = a->chunks;
  while (c) {
    chunk *next = c->next;
    munmap(c, CHUNK);
    c = next;
  }
  free(a);
}

static chunk *chunk_of(const void *p) { return (chunk *)((uintptr_t)p & ~(uintptr_t)(CHUNK - 1)); }
static page *page_of(const void *p) { return &chunk_of(p)->pages[((uintptr_t)p & (CHUNK - 1)) / PAGE]; }
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

static chunk *new_chunk(orch_lalloc *a) {
  /* Twice the size, then the unaligned ends unmapped: an aligned chunk. */
  char *p = mmap(NULL, 2 * CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  uintptr_t start = ((uintptr_t)p + CHUNK - 1) & ~(uintptr_t)(CHUNK - 1);
  if (start > (uintptr_t)p) munmap(p, start - (uintptr_t)p);
  if ((uintptr_t)p + 2 * CHUNK > start + CHUNK) munmap((char *)start + CHUNK, (uintptr_t)p + 2 * CHUNK - start - CHUNK);
  chunk *c = (chunk *)start;       /* mmap's pages are zero: every record empty */
  c->next = a->chunks;
  a->chunks = c;
  a->fresh = HEADER_PAGES;
  return c;
}

/* An empty page for class cls: a resident one, one given back, or a fresh one. */
static page *take_page(orch_lalloc *a, size_t cls) {
  page *pg;
  if (a->hot) {
    pg = a->hot;
    unlink_page(&a->hot, pg);
    a->nhot--;
  } else if (a->cold) {
    pg = a->cold;
    unlink_page(&a->cold, pg);
  } else {
    if (!a->chunks || a->fresh == PAGES) {
      if (!new_chunk(a)) return NULL;
    }
    pg = &a->chunks->pages[a->fresh++];
  }
  pg->cls = (uint16_t)cls;
  pg->used = 0;
  pg->carved = 0;
  pg->returned = 0;
  pg->free = NULL;
  return pg;
}

static int has_room(page *pg, size_t size) { return pg->free || pg->carved + size <= PAGE; }

static void *small_alloc(orch_lalloc *a, size_t cls) {
  size_t size = cls * GRAIN;
  page *pg = a->room[cls];
  if (!pg) {
    pg = take_page(a, cls);
    if (!pg) return NULL;
    push(&a->room[cls], pg);
  }
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

static void give_back(page *pg) {
  madvise(base_of(pg), PAGE, MADV_DONTNEED);
  pg->returned = 1;
}

static void small_free(orch_lalloc *a, void *p) {
  page *pg = page_of(p);
  size_t cls = pg->cls, size = cls * GRAIN;
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
  if (a->nhot < KEEP_EMPTY) {
    push(&a->hot, pg);
    a->nhot++;
  } else {
    give_back(pg);
    push(&a->cold, pg);
  }
}

size_t orch__lalloc_trim(orch_lalloc *a) {
  size_t n = a->nhot;
  while (a->hot) {
    page *pg = a->hot;
    unlink_page(&a->hot, pg);
    give_back(pg);
    push(&a->cold, pg);
  }
  a->nhot = 0;
  return n;
}

void *orch__lalloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  orch_lalloc *a = ud;
  if (!ptr) osize = 0;              /* then osize was the kind of object made */
  size_t oc = LALLOC_SMALL && osize <= SMALL_MAX ? (osize + GRAIN - 1) / GRAIN : 0;
  size_t nc = LALLOC_SMALL && nsize <= SMALL_MAX ? (nsize + GRAIN - 1) / GRAIN : 0;
  if (nsize == 0) {
    if (oc) small_free(a, ptr);
    else free(ptr);
    return NULL;
  }
  if (!ptr) return nc ? small_alloc(a, nc) : malloc(nsize);
  if (oc && oc == nc) return ptr;
  if (!oc && !nc) return realloc(ptr, nsize);
  void *np = nc ? small_alloc(a, nc) : malloc(nsize);
  /* A small block that cannot move to a smaller class stays where it is
   * (its page knows its real size): Lua expects a shrink to succeed. */
  if (!np) return oc && nsize < osize ? ptr : NULL;
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
