/*
 * spawn.h: orch.spawn's options made into a spawn (src/spawn.c): the
 * checks of every option before anything is allocated, user and group
 * lookups, the new program's argv and envp, the child's fds and cgroup, and
 * the error a failed spawn returns. The request goes to orch__spawn
 * (proc.h, process.c: the clone and the child's side, no Lua).
 *
 * spawn.c knows nothing of the object orch.spawn returns: its binding
 * (l_proc.c, orch.Process) hands it four calls that make and fill one, as
 * an orch__child hands process.c its callbacks. Usage from a binding:
 *
 *   static const orch__spawn_object ops = { my_push, my_set_stdio,
 *                                           my_anchor, my_spawned, my_forget };
 *   static int my_spawn(lua_State *L) { return orch__spawn_lua(L, &ops); }
 *
 * The argv/envp builder and the rlimit names serve orch.exec and
 * orch.proc.setrlimit (l_daemon.c) too.
 */
#ifndef ORCH_SPAWN_H
#define ORCH_SPAWN_H

#include "proc.h"

/* How orch.spawn makes the object it returns. Each call gets the object's
 * stack index idx. */
typedef struct {
  /* [-0,+1] A new object, not started and not anchored; its child goes to
   * orch__spawn. */
  orch__child *(*push)(lua_State *L);
  /* Pops the stream on top of the stack (a pipe's parent end) into the
   * object as its stdin (fd 0), stdout (1) or stderr (2). */
  void (*set_stdio)(lua_State *L, int idx, int fd);
  /* Anchors the object: from now on its status may come. */
  void (*anchor)(lua_State *L, int idx);
  /* The end of the spawn: pid > 0 is running (orch__spawn registered it);
   * otherwise nothing was started: the anchor (if any) goes and the stdio
   * streams are closed. */
  void (*spawned)(lua_State *L, int idx, pid_t pid);
  /* Drops the anchor of an object whose started spawn failed after all
   * and that nobody will see (orch.spawn_begin's request collected
   * unfinished): no Lua runs, its streams go with the object. */
  void (*forget)(lua_State *L, int idx);
} orch__spawn_object;

/* orch.spawn(options): checks the options table at index 1 (a programmer
 * error raises), spawns, and returns the count of its results: the object
 * (1), or the error triple (3; e.g. nil, "spawn: no such file: x",
 * "ENOENT"). */
int orch__spawn_lua(lua_State *L, const orch__spawn_object *obj);

/* orch.spawn_begin(options): the same checks and failures, but the call
 * returns once the child exists, before its exec (orch__spawn_start),
 * with an orch.SpawnRequest whose :finish() gives what orch.spawn would
 * have given. Where the kernel cannot start a spawn so, the spawn is made
 * at once and :finish() hands its result on. */
int orch__spawn_begin_lua(lua_State *L, const orch__spawn_object *obj);

/* Makes the class of the to-be-closed box that orch__spawn_lua and
 * orch__exec_args keep their memory and fds in (once, when orch.proc opens). */
void orch__spawn_open(lua_State *L);

/* The RLIMIT_ constant of a limit's name as the rlimits option spells it
 * ("nofile", "core", ...), or -1. */
int orch__rlimit_byname(const char *name);

/* [-0,+1] For orch.exec: the argv (argc entries of the table at args, which
 * holds strings or numbers) and envp (the table at env replaces the
 * environment; env 0: orch's own) of a new program, in memory owned by a
 * to-be-closed value pushed on the stack; *search is the PATH to look the
 * program up in. Returns 0, or -1 after pushing the error triple above it. */
int orch__exec_args(lua_State *L, const char *op, int args, int argc, int env,
                    char ***argv, char ***envp, const char **search);

#endif
