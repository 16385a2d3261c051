/*
 * handle.h: the lifetime of a handle-backed Lua object, shared by the
 * stream family (orch.Stream in stream.c, orch.Listener in listener.c,
 * orch.Dgram in dgram.c, the connects in progress of connect.c).
 *
 * Such an object is two pieces. The userdata is small and starts with a
 * pointer to its core (NULL: closed). The core is malloc'ed, starts with an
 * orch__hobj, and holds the libuv handle; it is freed only once libuv is
 * done with the handle (in its close callback), so it may outlive the
 * userdata. The core points back to the userdata's pointer while both live
 * (orch__hobj_attach); freeing the core clears that pointer, so the
 * userdata reads as closed. Every core sits in a per-runtime list, so that
 * when the runtime closes (every userdata already collected) or forks, each
 * class can let go of what it holds.
 *
 * What a class supplies is an orch__hclass: how to start closing a core,
 * what to drop when the Lua state goes away, what to reset in a fork child,
 * its descriptor and how it describes itself. What this file supplies, the
 * same for every class: the userdata in its closed state before anything can
 * fail (orch__hobj_push), the check that raises "attempt to use a closed
 * orch.X", and the methods close, fd, set_timeout, __gc, __close and
 * __tostring ("orch.Dgram: unix=@x fd=7 open", "orch.Dgram: closed").
 *
 * Example (a class Foo whose core owns a uv_poll_t):
 *
 *   typedef struct { orch__hobj o; uv_poll_t poll; } foo;
 *   typedef struct { foo *f; } Foo;                 // the userdata
 *   static void foo_freed(uv_handle_t *h) {
 *     orch__hobj_unlink(h->data);                   // the userdata reads closed
 *     free(h->data);
 *   }
 *   static void foo_close(orch__hobj *o) {          // o->closing is set
 *     foo *f = (foo *)o;                            // wake waiters here
 *     uv_close((uv_handle_t *)&f->poll, foo_freed);
 *   }
 *   static const orch__hclass foo_class = { "orch.Foo", foo_close, ... };
 *
 *   Foo *u = orch__hobj_push(L, &foo_class, sizeof *u);   // closed
 *   foo *f = calloc(1, sizeof *f);
 *   if (!f) return orch__fail(L, "foo", ENOMEM);
 *   orch__hobj_link(orch__hstate_get(L), &f->o, &foo_class);
 *   ... on failure: orch__hobj_close(&f->o); return orch__fail(...) ...
 *   orch__hobj_attach(u, &f->o);
 *
 * Nothing here blocks; nothing here runs Lua but the methods themselves.
 */
#ifndef ORCH_HANDLE_H
#define ORCH_HANDLE_H

#include <lua.h>
#include <lauxlib.h>
#include <uv.h>

#include "runtime.h"

typedef struct orch__hobj orch__hobj;

typedef struct orch__hstate {
  orch_runtime *rt;
  uv_loop_t *loop;
  lua_State *L;                 /* the runtime's main thread */
  orch__hobj *all;              /* every live core */
  struct orch__eofs *eofs;      /* stream.c's EOFs waiting for the check phase */
} orch__hstate;

typedef struct orch__hclass {
  const char *name;             /* the metatable's name, "orch.Stream" */
  /* Starts closing o (o->closing is already set, and o is detached from its
   * userdata when that was closed or collected): wakes the tasks waiting on
   * it with "<op>: ... closed", then uv_close (whose callback ends in
   * orch__hobj_unlink and free) or, with no handle yet, frees at once. */
  void (*close)(orch__hobj *o);
  /* The runtime is closing and the Lua state is gone: forget every
   * coroutine and registry reference o holds, without touching Lua. May be
   * NULL. */
  void (*forget)(orch__hobj *o);
  /* In orch.fork's child, after the runtime stopped every handle: reset
   * what says a handle is running. May be NULL. */
  void (*forked)(orch__hobj *o);
  /* The descriptor, for :fd() and __tostring (-1 if none). */
  int (*fd)(orch__hobj *o);
  /* [-0,+1] Pushes what names the object in __tostring, "tcp=host:port";
   * o is NULL when closed, then ud is the userdata (its kind, say).
   * Pushes nothing and returns 0 when there is nothing to say. */
  int (*describe)(lua_State *L, orch__hobj *o, void *ud);
} orch__hclass;

struct orch__hobj {
  orch__hobj *prev, *next;
  orch__hstate *st;             /* NULL once unlinked */
  const orch__hclass *cls;
  void **ud;                    /* the userdata's core pointer; NULL: detached */
  int closing;
  double timeout;               /* for waits on o (-1: none): set_timeout */
};

/* The runtime's list of cores (made at first use with its close and fork
 * hooks). */
orch__hstate *orch__hstate_get(lua_State *L);

/* Puts a zeroed core into the list (setup; timeout none). */
void orch__hobj_link(orch__hstate *st, orch__hobj *o, const orch__hclass *cls);

/* [-0,+1] A new userdata of `size` bytes for the class, zeroed (closed:
 * its core pointer is NULL) and with its metatable. */
void *orch__hobj_push(lua_State *L, const orch__hclass *cls, size_t size);

/* Binds userdata ud (its first field is the core pointer) and core o. */
void orch__hobj_attach(void *ud, orch__hobj *o);

/* Closes o once: marks it closing and calls its class's close. */
void orch__hobj_close(orch__hobj *o);

/* Detaches userdata ud from its core (which may outlive it until libuv is
 * done) and closes the core; nothing if ud is closed already. */
void orch__hobj_close_ud(void *ud);

/* Takes o out of the list and clears its userdata's pointer; the caller
 * then frees what the core owns and the core itself. */
void orch__hobj_unlink(orch__hobj *o);

/* The open core of the userdata at idx, or raises "attempt to use a closed
 * <name>" (and the usual bad argument for another type). */
orch__hobj *orch__hobj_check(lua_State *L, int idx, const orch__hclass *cls);

/* [-0,+1] Makes the class's metatable with the shared methods (close, fd,
 * set_timeout) and metamethods (__gc, __close, __tostring) beside the
 * class's own methods and metamethods; leaves it on the stack. */
void orch__hclass_new(lua_State *L, const orch__hclass *cls, const luaL_Reg *methods,
                      const luaL_Reg *meta);

/* Wakes co waiting in <op> with nil, "<op>: <what> closed", "ECANCELED". */
void orch__wake_closed(lua_State *co, const char *op, const char *what);

#endif
