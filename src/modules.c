/*
 * modules.c: the table of C binding modules that make up orch.core.
 *
 * Each module is a function `int orch__open_<name>(lua_State *L)` that pushes
 * one table. luaopen_orch_core (runtime.c) returns a table whose field <name>
 * opens that module at its first read (also `require "orch.core.<name>"`,
 * then package.loaded["orch.core.<name>"]); lua/orch/init.lua merges the
 * public ones into `orch` in this order (core, stream and sys at once, the
 * others at the first key `orch` lacks). A new binding file adds
 * one line here (model: luv's luv_functions[]).
 */
#include "modules.h"

#define ORCH_MODULE_LIST(X) \
  X(core)      /* l_core.c: tasks, sleep, now, exit, cond (mechanism: task.c, clock.c, budget.c) */ \
  X(callback)  /* callback.c: the runner of every callback (lua/orch/callback.lua) */ \
  X(timer)     /* l_timer.c */ \
  X(signal)    /* l_signal.c */ \
  X(proc)      /* l_proc.c, spawn.c, procscan.c (mechanism: process.c, procfs.c) */ \
  X(daemon)    /* l_daemon.c: fork, exec, daemonize, proc.init_mode */ \
  X(stream)    /* l_stream.c (objects: stream.c listener.c dgram.c connect.c) */ \
  X(shm)       /* l_shm.c (Region accessors: region.c) */ \
  X(mmap)      /* l_mmap.c */ \
  X(sem)       /* l_sem.c */ \
  X(msg)       /* l_msg.c */ \
  X(ipc)       /* l_ipc.c */ \
  X(heartbeat) /* l_heartbeat.c */ \
  X(logfile)   /* l_logfile.c: log files opened without trusting the path */ \
  X(term)      /* l_term.c: line editing */ \
  X(cgroup)    /* l_cgroup.c (mechanism: cgroup.c) */ \
  X(httpparse) /* l_http.c: HTTP request parser (libhttp-parser) */ \
  X(sys)       /* l_sys.c: uids, exepath, private files, flock, fds across exec */ \
  X(fmt)       /* l_fmt.c: the status table's text (private: lua/orch/ctl/format.lua) */

#define X(name) int orch__open_##name(lua_State *L);
ORCH_MODULE_LIST(X)
#undef X

const orch__module orch__modules[] = {
#define X(name) { #name, orch__open_##name },
  ORCH_MODULE_LIST(X)
#undef X
  { NULL, NULL }
};
