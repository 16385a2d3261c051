/*
 * orch.h: the embedding API of liborch.
 *
 * A runtime owns one libuv loop and one Lua 5.4 state with the orch module
 * loaded. A host creates a runtime, loads code (each loaded chunk starts as a
 * task; the first one is the main task), then either runs the loop to
 * completion with orch_run() or drives it step by step with orch_step() from
 * its own loop (poll uv_backend_fd(orch_loop(rt)) for readiness).
 *
 * Nothing here calls exit(). Errors are reported through return codes and
 * orch_last_error().
 */
#ifndef ORCH_H
#define ORCH_H

#ifdef __cplusplus
extern "C" {
#endif

#include <lua.h>
#include <uv.h>

#define ORCH_VERSION_MAJOR 0
#define ORCH_VERSION_MINOR 1
#define ORCH_VERSION_PATCH 0
#define ORCH_VERSION "0.1.0"

/* Return codes of the loading functions. */
#define ORCH_OK 0
#define ORCH_ERR_RUN 1     /* the code raised, or failed to compile */
#define ORCH_ERR_FILE 2    /* the file could not be opened */

typedef struct orch_runtime orch_runtime;

/* Called with each error of a task that nobody joins (message + traceback).
 * The default handler writes "orch: <message>" to stderr. */
typedef void (*orch_error_fn)(orch_runtime *rt, const char *message, void *ud);

/* A new runtime with its own loop and Lua state (standard libraries opened,
 * the global `orch` set). NULL when out of memory. */
orch_runtime *orch_new(void);

/* Frees the runtime: cancels every task, closes the Lua state, closes every
 * handle and the loop. Running child processes are left alone. */
void orch_free(orch_runtime *rt);

lua_State *orch_lua(orch_runtime *rt);
uv_loop_t *orch_loop(orch_runtime *rt);

/* Sets arg[] as lua5.4 does: arg[0] = script, arg[1..] = the arguments. */
void orch_set_args(orch_runtime *rt, const char *script, int argc, char **argv);

/* Compile a file or a string and start it as a task (the first one loaded is
 * the main task, whose failure makes orch_run return 1). The extra arguments
 * of orch_load_file are passed to the chunk as `...`. */
int orch_load_file(orch_runtime *rt, const char *path, int argc, char **argv);
int orch_load_string(orch_runtime *rt, const char *code, const char *chunkname);

/* Compiles `len` bytes of code (chunk name `chunkname`) and starts it as a
 * task with argv[0..argc-1] as `...` (strings). */
int orch_load_buffer(orch_runtime *rt, const char *code, size_t len, const char *chunkname,
                     int argc, char **argv);

/* Starts require(module)[fn](argv...) as a task (the main task if it is the
 * first one loaded). ORCH_ERR_RUN when the module cannot be loaded or has no
 * such function (see orch_last_error). */
int orch_load_function(orch_runtime *rt, const char *module, const char *fn, int argc, char **argv);

/* Calls require(module)[fn](argv...) now, outside any task (it may not
 * wait). ORCH_OK, or ORCH_ERR_RUN with the error in orch_last_error. When
 * `result` is not NULL, *result is a malloc'ed copy of a string result (free
 * it), or NULL. */
int orch_call(orch_runtime *rt, const char *module, const char *fn, int argc, char **argv,
              char **result);

/* Runs the loop until no task is runnable and no handle is active, or until
 * orch.exit() / orch_stop(). Returns the exit status: the code given to
 * orch.exit, 1 when the main task failed, otherwise 0. */
int orch_run(orch_runtime *rt);

/* One non-blocking turn of the loop. Returns nonzero while there is more to
 * do (runnable tasks or active handles) and orch.exit was not called. */
int orch_step(orch_runtime *rt);

/* Asks the loop to stop after the current turn; orch_run returns. */
void orch_stop(orch_runtime *rt);

/* 1 after orch.exit() was called; *code (if not NULL) receives its code. */
int orch_exited(orch_runtime *rt, int *code);

/* The last load or main-task error (message and traceback), or NULL. */
const char *orch_last_error(orch_runtime *rt);

void orch_set_error_handler(orch_runtime *rt, orch_error_fn fn, void *ud);

/* Versions, e.g. "orch 0.1.0, Lua 5.4.4, libuv 1.44.2". */
const char *orch_version_string(void);

/* The Lua time budget: a callback (any resume of a task) running longer
 * than `seconds` without yielding is interrupted with an error. 0 turns it
 * off; the default is 5 s. Same as orch.set_budget(seconds) from Lua. */
void orch_set_budget(orch_runtime *rt, double seconds);
double orch_get_budget(orch_runtime *rt);

/* For programs (the orch command calls it at start), not libraries: raises
 * the soft RLIMIT_NOFILE to the hard limit (at most 2^20), as systemd does.
 * Processes orch spawns get the original soft limit back unless their
 * `rlimits` set `nofile`. Returns 1 if raised, 0 if nothing to do, or
 * -errno. */
int orch_raise_nofile(void);

#ifdef __cplusplus
}
#endif
#endif
