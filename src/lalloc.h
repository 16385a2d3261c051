/*
 * lalloc.h: the allocator of the Lua states orch makes (src/lalloc.c).
 *
 *   lua_State *L = orch__lalloc_newstate();   // like luaL_newstate()
 *   ...
 *   orch__lalloc_close(L);                    // lua_close, then the pages
 *
 * orch__lalloc_trim gives the pages that hold no block back to the kernel
 * (orch.malloc_trim calls it beside glibc's malloc_trim); orch__lalloc_purge
 * all but the few kept for reuse. Empty pages beyond those are given back
 * at once, or, with orch__lalloc_on_surplus, when the caller purges (the
 * runtime: a while after, runtime.c).
 */
#ifndef ORCH_LALLOC_H
#define ORCH_LALLOC_H

#include <stddef.h>

#include <lua.h>

typedef struct orch_lalloc orch_lalloc;

orch_lalloc *orch__lalloc_new(void);
void orch__lalloc_free(orch_lalloc *a);
void *orch__lalloc(void *ud, void *ptr, size_t osize, size_t nsize);
size_t orch__lalloc_trim(orch_lalloc *a);   /* pages given back */
size_t orch__lalloc_purge(orch_lalloc *a);  /* pages given back */
/* fn(ud) is called (from inside any allocation or free) whenever a page
 * empties while more than the kept ones are empty; the caller then calls
 * orch__lalloc_purge outside of Lua. */
void orch__lalloc_on_surplus(orch_lalloc *a, void (*fn)(void *), void *ud);
/* The pages made resident ahead of use (a burst's last batch, given back
 * at the next purge or trim), and where they start (for tests). */
size_t orch__lalloc_ahead(orch_lalloc *a, void **at);

/* A new state using the allocator, with lauxlib's panic and warning
 * functions (warnings off until "@on"); NULL without memory. */
lua_State *orch__lalloc_newstate(void);
/* lua_close(L), then the allocator's pages if L uses it. */
void orch__lalloc_close(lua_State *L);
/* The allocator of L, or NULL when L uses another one (a host's state). */
orch_lalloc *orch__lalloc_of(lua_State *L);

#endif
