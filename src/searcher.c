/*
 * searcher.c: where `require "orch.x"` finds orch's Lua half: a
 * package.searchers entry over $ORCH_LUA_DIR, the source tree (from a build
 * tree), the install location relative to the code, and the configured one.
 * A module found whose text is one the orch executable carries compiled
 * (precompiled.h) is loaded from that bytecode. Reading a module file is the
 * only I/O, at require time, as Lua's own searcher does.
 */
#include "runtime_int.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "precompiled.h"

/* ---------------------------------------------------------------- module loading */

static int dir_exists(const char *p) { return access(p, R_OK | X_OK) == 0; }

/* dl_iterate_phdr's first object is the main program: 1 if addr is in it,
 * then -1 (stop). */
static int main_program_has(struct dl_phdr_info *info, size_t size, void *addr) {
  (void)size;
  uintptr_t a = (uintptr_t)addr;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type == PT_LOAD && a - (uintptr_t)(info->dlpi_addr + ph->p_vaddr) < ph->p_memsz) return 1;
  }
  return -1;
}

/* Where this code lives: the executable, or orch.so when loaded by a host
 * Lua. Empty string if unknown. Resolved (no symbolic link, no "."): the
 * executable's from /proc/self/exe, one readlink where realpath makes one
 * a component (every start of orch: issue 15). */
static void self_path(char *out, size_t n) {
  Dl_info info;
  char tmp[PATH_MAX];
  out[0] = 0;
  if (dl_iterate_phdr(main_program_has, (void *)&self_path) == 1) {
    ssize_t r = readlink("/proc/self/exe", tmp, sizeof tmp - 1);
    if (r > 0 && tmp[0] == '/') {
      tmp[r] = 0;
      snprintf(out, n, "%s", tmp);
      return;
    }
  }
  if (dladdr((void *)&self_path, &info) && info.dli_fname && strchr(info.dli_fname, '/') &&
      realpath(info.dli_fname, tmp)) {
    snprintf(out, n, "%s", tmp);
    return;
  }
  ssize_t r = readlink("/proc/self/exe", tmp, sizeof tmp - 1);
  if (r > 0) { tmp[r] = 0; snprintf(out, n, "%s", tmp); }
}

/* Is the code running from the build tree? Then the Lua half is taken from
 * the source tree, otherwise from the install location. (where is
 * resolved: a build directory it starts with is too, and needs no
 * realpath.) */
static int in_build_tree(const char *where) {
  size_t l = strlen(ORCH_BUILD_DIR);
  if (where[0] && strncmp(where, ORCH_BUILD_DIR, l) == 0 && where[l] == '/') return 1;
  char build[PATH_MAX];
  const char *b = realpath(ORCH_BUILD_DIR, build) ? build : ORCH_BUILD_DIR;
  size_t bl = strlen(b);
  return where[0] && strncmp(where, b, bl) == 0 && where[bl] == '/';
}

/* [-0,+1] The list of directories holding orch/<module>.lua, as a table:
 * $ORCH_LUA_DIR, the source tree (from a build tree), the install location
 * relative to where the code is (a relocated install), the configured
 * install location. */
static void push_lua_dirs(lua_State *L) {
  char where[PATH_MAX];
  self_path(where, sizeof where);
  lua_newtable(L);
  int n = 0;
  const char *env = getenv("ORCH_LUA_DIR");
  if (env && *env) { lua_pushstring(L, env); lua_rawseti(L, -2, ++n); }
  if (in_build_tree(where) && dir_exists(ORCH_SOURCE_LUA_DIR)) {
    lua_pushstring(L, ORCH_SOURCE_LUA_DIR);
    lua_rawseti(L, -2, ++n);
  }
  char *slash = strrchr(where, '/');
  if (slash) {
    *slash = 0;
    char rel[PATH_MAX + 64];
    /* the executable is in <bindir>, liborch.so in <libdir>, orch.so in
     * <libdir>/lua/5.4 */
    const char *base = slash + 1;
    const char *suffix = strcmp(base, "orch.so") == 0 ? ORCH_REL_LUA_FROM_LMOD
                       : strncmp(base, "liborch", 7) == 0 ? ORCH_REL_LUA_FROM_LIB
                       : ORCH_REL_LUA_FROM_BIN;
    char real[PATH_MAX];
    int w = snprintf(rel, sizeof rel, "%s/%s", where, suffix);
    /* (Looked for first: in a build tree there is none, and realpath
     * would read a link a component to find out.) */
    if (w > 0 && (size_t)w < sizeof rel && dir_exists(rel) && realpath(rel, real) &&
        strcmp(real, ORCH_INSTALL_LUA_DIR) != 0 && dir_exists(real)) {
      lua_pushstring(L, real);
      lua_rawseti(L, -2, ++n);
    }
  }
  lua_pushstring(L, ORCH_INSTALL_LUA_DIR);
  lua_rawseti(L, -2, ++n);
}

/* ---------------------------------------------------------------- precompiled modules */

/* Set once, before any runtime is made (main.c); read-only afterwards. */
static const orch__precompiled_set *precompiled_set;
static const orch__precompiled *precompiled;
/* The entries loaded from bytecode in this process (orch._precompiled). */
static unsigned char *precompiled_used;

void orch__use_precompiled(const orch__precompiled_set *set) {
  size_t n = 0;
  while (set && set->modules[n].name) n++;
  precompiled_used = n ? calloc(n, 1) : NULL;
  precompiled_set = precompiled_used ? set : NULL;
  precompiled = precompiled_used ? set->modules : NULL;
}

/* The dump with its chunk name replaced: three pieces for lua_load. */
typedef struct { const char *piece[3]; size_t len[3]; int next; } spliced;

static const char *spliced_read(lua_State *L, void *ud, size_t *size) {
  (void)L;
  spliced *s = ud;
  while (s->next < 3) {
    int i = s->next++;
    if (s->len[i]) { *size = s->len[i]; return s->piece[i]; }
  }
  *size = 0;
  return NULL;
}

/* Does the file at fd hold exactly the text e was compiled from? */
static int same_text(int fd, const orch__precompiled *e) {
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || (size_t)sb.st_size != e->source_len) return 0;
  unsigned char *text = malloc(e->source_len + 1);
  if (!text) return 0;
  /* One byte more than expected: a file that grew since fstat differs. */
  size_t got = 0;
  for (;;) {
    ssize_t r = read(fd, text + got, e->source_len + 1 - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) { if (r < 0) got = e->source_len + 1; break; }
    got += (size_t)r;
    if (got > e->source_len) break;
  }
  int same = got == e->source_len && orch__source_hash(text, got) == e->source_hash;
  free(text);
  return same;
}

/* [-0,+1 when it returns LUA_OK] The module at path (key: its path below
 * the Lua directory, "orch/cli.lua") from the executable's bytecode, when
 * the file's text is the one compiled. Else -1 and nothing pushed: the
 * caller compiles the file (a changed text, no entry, a file it cannot
 * read here, a Lua that refuses the dump). */
static int load_precompiled(lua_State *L, const char *path, const char *key) {
  if (!precompiled) return -1;
  const orch__precompiled *e = precompiled;
  while (e->name && strcmp(e->name, key) != 0) e++;
  if (!e->name) return -1;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int same = same_text(fd, e);
  close(fd);
  if (!same) return -1;
  /* The chunk name as luaL_loadfile gives it ("@" path), in the dump's
   * encoding of a string: its length + 1, 7 bits a byte, most significant
   * first, the last byte marked with 0x80 (Lua 5.4's ldump.c). */
  size_t plen = strlen(path), n = plen + 2, k = 0;
  unsigned char enc[16], tmp[16];
  do { tmp[k++] = n & 0x7f; n >>= 7; } while (n);
  for (size_t i = 0; i < k; i++) enc[i] = tmp[k - 1 - i];
  enc[k - 1] |= 0x80;
  char *name = malloc(k + plen + 1);
  if (!name) return -1;
  memcpy(name, enc, k);
  name[k] = '@';
  memcpy(name + k + 1, path, plen);
  spliced s = { { (const char *)e->code, name, (const char *)e->code + e->name_at + e->name_len },
                { e->name_at, k + plen + 1, e->code_len - e->name_at - e->name_len }, 0 };
  int st = lua_load(L, spliced_read, &s, name + k, "b");
  free(name);
  if (st != LUA_OK) {
    lua_pop(L, 1);
    return -1;
  }
  precompiled_used[e - precompiled] = 1;
  /* The bytes are objects now: the blob's pages go (the page cache keeps
   * them for the next process; fault-around mapped the neighbours' too). */
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const orch__precompiled_set *set = precompiled_set;
  if (page && (uintptr_t)set->blob % page == 0 && set->blob_size % page == 0)
    madvise((void *)set->blob, set->blob_size, MADV_DONTNEED);
  return LUA_OK;
}

/* orch._precompiled(): internal, for the specs: the modules this process
 * loaded from the executable's bytecode ("orch/cli.lua", ...), a list. */
int orch__l_precompiled(lua_State *L) {
  lua_newtable(L);
  int n = 0;
  for (const orch__precompiled *e = precompiled; e && e->name; e++)
    if (precompiled_used[e - precompiled]) {
      lua_pushstring(L, e->name);
      lua_rawseti(L, -2, ++n);
    }
  return 1;
}

/* ---------------------------------------------------------------- loading */

/* luaL_loadfile of an orch module. A module loaded on first use (the
 * supervisor's log, orch.sdnotify when `orch run` starts its control
 * socket) may be required once a policy or its services took every fd: at
 * EMFILE or ENFILE one of the runtime's spare fds is lent to the file
 * (fdlimit.c), and taken back once it is closed again. */
static int load_module_file(lua_State *L, const char *path, const char *key) {
  if (load_precompiled(L, path, key) == LUA_OK) return LUA_OK;
  errno = 0;
  int st = luaL_loadfile(L, path);
  if (st != LUA_ERRFILE || (errno != EMFILE && errno != ENFILE)) return st;
  orch__fd_spare_settle();
  if (!orch__fd_spare_lend()) return st;
  lua_pop(L, 1);
  st = luaL_loadfile(L, path);
  orch__fd_spare_settle();
  return st;
}

/* package.searchers entry: "orch" and "orch.x.y" from the orch Lua dirs. */
static int orch_searcher(lua_State *L) {
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  if (strlen(name) != len) {
    lua_pushliteral(L, "\n\tmodule name contains a zero byte");
    return 1;
  }
  if (strcmp(name, "orch") != 0 && strncmp(name, "orch.", 5) != 0) {
    /* At the fd limit every searcher's open fails, and each says "no
     * file": say why once (a module is not missing, fds are). */
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      close(fd);
      lua_pushnil(L);
    } else if (errno == EMFILE || errno == ENFILE) {
      lua_pushfstring(L, "(no file could be opened: %s; the limit of open files, ulimit -n, is %I)",
                      strerror(errno), (lua_Integer)orch__nofile_soft());
    } else {
      lua_pushnil(L);
    }
    return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  int dirs = lua_gettop(L);
  lua_Integer nd = luaL_len(L, dirs);
  for (lua_Integer i = 1; i <= nd; i++) {
    lua_rawgeti(L, dirs, i);
    const char *dir = lua_tostring(L, -1);
    lua_pop(L, 1);
    const char *rel = luaL_gsub(L, name, ".", "/");
    const char *cands[2];
    cands[0] = lua_pushfstring(L, "%s/%s.lua", dir, rel);
    cands[1] = lua_pushfstring(L, "%s/%s/init.lua", dir, rel);
    for (int c = 0; c < 2; c++) {
      if (access(cands[c], R_OK) == 0) {
        if (load_module_file(L, cands[c], cands[c] + strlen(dir) + 1) != LUA_OK)
          return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s",
                            name, cands[c], lua_tostring(L, -1));
        lua_pushstring(L, cands[c]);
        return 2;
      }
    }
    lua_pop(L, 3);
  }
  lua_pushfstring(L, "no orch module '%s' in the orch Lua directories", name);
  return 1;
}

void orch__install_searcher(lua_State *L) {
  lua_getglobal(L, "package");
  if (!lua_istable(L, -1)) { lua_pop(L, 1); return; }
  lua_getfield(L, -1, "searchers");
  if (!lua_istable(L, -1)) { lua_pop(L, 2); return; }
  lua_Integer n = luaL_len(L, -1);
  /* Insert at position 2 (after preload). */
  for (lua_Integer i = n; i >= 2; i--) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 1);
  }
  push_lua_dirs(L);
  lua_pushcclosure(L, orch_searcher, 1);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 2);
}
