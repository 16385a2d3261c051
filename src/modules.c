/*
 * modules.c: the table of C binding modules that make up orch.core.
 *
 * Each module is a function `int orch__open_<name>(lua_State *L)` that pushes
 * one table. luaopen_orch_core (runtime.c) returns { <name> = <table>, ... }
 * and registers each as package.loaded["orch.core.<name>"]; lua/orch/init.lua
 * merges them into `orch` in this order.
 */
#include "modules.h"
#include "orch_module_list.h"

#define X(name) int orch__open_##name(lua_State *L);
ORCH_MODULE_LIST(X)
#undef X

const orch__module orch__modules[] = {
#define X(name) { #name, orch__open_##name },
  ORCH_MODULE_LIST(X)
#undef X
  { NULL, NULL }
};
