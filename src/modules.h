#ifndef ORCH_MODULES_H
#define ORCH_MODULES_H
#include <lua.h>

/* Every C binding module, in the order lua/orch/init.lua merges them into
 * `orch` (src/modules.c lists them). Each pushes one table. */
typedef struct { const char *name; lua_CFunction open; } orch__module;
extern const orch__module orch__modules[];

#endif
