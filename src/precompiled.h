/*
 * precompiled.h: orch's own Lua modules as bytecode inside the orch
 * executable, so that a command's start-up does not compile them (issue
 * 15: compiling the modules `orch ctl ping` loads was a fifth of its CPU).
 *
 * At build time src/tools/precompile.c (linked with the same static Lua as
 * the executable) compiles the modules listed in CMakeLists.txt and writes
 * build/precompiled.c: one entry per module, with the length and a hash of
 * the source it was compiled from. At run time the module searcher
 * (searcher.c) reads the file it found, as before; when its length and hash
 * are an entry's, it loads the entry's bytecode instead of compiling the
 * text, else it compiles the text (an edited tree, $ORCH_LUA_DIR, another
 * install). Either way the module is the text of that file: the bytecode
 * keeps its debug information (lines, local names), and its chunk name is
 * replaced by "@" and the path found, as luaL_loadfile names it, so errors
 * and tracebacks read the same.
 *
 * Example (the generated file):
 *
 *   static const unsigned char blob[65536] ORCH__PRECOMPILED_ALIGN = { 27, 76, ... };
 *   static const orch__precompiled modules[] = {
 *     { "orch/cli.lua", 13530, 0x3f...ULL, blob + 0, 8525, 32, 14 }, ...,
 *     { NULL, 0, 0, NULL, 0, 0, 0 } };
 *   const orch__precompiled_set orch__precompiled_modules = { blob, sizeof blob, modules };
 *
 * The dumps are one blob in whole 64 KiB windows of their own (aligned and
 * padded): once a module is loaded the blob is dropped from the process
 * (MADV_DONTNEED; the page cache keeps it), and no fault on other read-only
 * data maps it back, which the kernel's fault-around would (it maps the
 * page cache's pages of the 64 KiB window around a fault). A long-running
 * orch keeps none of the bytecode it has turned into objects.
 */
#ifndef ORCH_PRECOMPILED_H
#define ORCH_PRECOMPILED_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The kernel's fault-around window (fault_around_bytes' default). The blob
 * is a section of its own, which the linker puts after the other read-only
 * data (an orphan section): inside .rodata it split the data every orch
 * touches over one more window. */
#define ORCH__PRECOMPILED_WINDOW 65536
#define ORCH__PRECOMPILED_ALIGN __attribute__((section("orch_bytecode"), aligned(ORCH__PRECOMPILED_WINDOW)))

typedef struct {
  const char *name;            /* the path below a Lua directory: "orch/cli.lua" */
  size_t source_len;           /* the source compiled */
  uint64_t source_hash;        /* orch__source_hash of it */
  const unsigned char *code;   /* lua_dump's output (not stripped), in the blob */
  size_t code_len;
  size_t name_at, name_len;    /* where the dump holds the main function's chunk name */
} orch__precompiled;

typedef struct {
  const unsigned char *blob;   /* every dump, in whole fault-around windows */
  size_t blob_size;
  const orch__precompiled *modules;   /* ended by a NULL name */
} orch__precompiled_set;

/* A hash of a module's text, eight bytes a step: a change inside one word
 * always changes it (each step is a bijection of the state); any other
 * change with a chance of 2^-64 of going unseen. */
static inline uint64_t orch__source_hash(const unsigned char *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001b3ULL;
    h ^= h >> 29;
  }
  for (; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

/* The set of the orch executable (build/precompiled.c), given to the
 * searcher by main.c before the runtime is made. liborch and the Lua C
 * module have none: they run on their host's Lua, which may be another
 * release than the one the bytecode was made for. */
void orch__use_precompiled(const orch__precompiled_set *set);

#endif
