/*
 * util.h: helpers shared by the binding modules: the error contract,
 * option tables, signal names, classes.
 */
#ifndef ORCH_UTIL_H
#define ORCH_UTIL_H

#include <sys/types.h>

#include <lua.h>
#include <lauxlib.h>

/* The error contract: push nil, "<op>: <reason>", "<ENAME>" and return 3.
 * err is a positive errno (orch__fail) or a negative libuv code
 * (orch__fail_uv). orch__failf formats its own reason. */
int orch__fail(lua_State *L, const char *op, int err);
int orch__fail_uv(lua_State *L, const char *op, int uverr);
int orch__failf(lua_State *L, const char *ename, const char *fmt, ...);

/* The same with a formatted op: pushes nil, "<formatted>: <reason>",
 * "<ENAME>" (err a positive errno) and returns 3; the stack holds nothing
 * else of it. */
int orch__fail_errno(lua_State *L, int err, const char *fmt, ...);

/* "ENOENT" for ENOENT; "E<number>" if unknown. */
const char *orch__errname(int err);

/* Option tables. orch__check_options raises
 * "bad argument #idx to 'fn' (unknown option 'evn')" for a string key not
 * in `allowed` (NULL-terminated); integer keys are left to the caller.
 * The getters raise "bad argument #idx to 'fn' (option 'key': number
 * expected, got string)" on a wrong type and return def when absent. */
void orch__check_options(lua_State *L, int idx, const char *const allowed[]);
lua_Integer orch__opt_integer(lua_State *L, int idx, const char *key, lua_Integer def);
lua_Number orch__opt_number(lua_State *L, int idx, const char *key, lua_Number def);
int orch__opt_boolean(lua_State *L, int idx, const char *key, int def);
const char *orch__opt_string(lua_State *L, int idx, const char *key, const char *def);
/* A permission-bits option (mode, umask): an integer from 0 to max (0777 or
 * 07777), else "option 'key': permission bits (0 to 0o777) expected"; a
 * string is refused ("022" would read as decimal). def when absent; *has
 * (may be NULL) says whether it was given. */
int orch__opt_mode(lua_State *L, int idx, const char *key, int def, int max, int *has);
/* Raises "bad argument #idx to 'fn' (option 'key': <msg>)". */
int orch__opt_error(lua_State *L, int idx, const char *key, const char *msg);

/* A process id argument (1 to 2^31-1): raises "pid expected, got string"
 * for a non-number, "invalid pid" for a non-integer or one out of range.
 * With ORCH__PID_ANY, 0 and negative integers give 0 (orch.kill's callers
 * refuse that with a returned EPERM, not a raise). */
#define ORCH__PID_ANY 1
int orch__checkpid(lua_State *L, int idx, int flags);

/* Signals: numbers or names ("TERM", "SIGTERM", "term"). */
int orch__signum(const char *name);     /* -1 if unknown */
const char *orch__signame(int sig);     /* "TERM"; NULL if unknown */
int orch__checksignal(lua_State *L, int idx);   /* raises on unknown */
int orch__optsignal(lua_State *L, int idx, int def);

/* Raises "bad argument #max+1 to 'fn' (no value expected)" when more than
 * max arguments were passed. */
void orch__check_nargs(lua_State *L, int max);

/* Creates the metatable `name` with the methods in __index, __name set, and
 * the metamethods in meta (may be NULL). Leaves it on the stack. */
void orch__newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                    const luaL_Reg *meta);

/* Raises "attempt to use a closed <name>" (the message STYLE.md asks for). */
int orch__closed_error(lua_State *L, const char *name);

/* Seconds as a double (non-negative, finite) from argument idx; raises. */
double orch__checkseconds(lua_State *L, int idx);
double orch__optseconds(lua_State *L, int idx, double def);

/* Monotonic clock in nanoseconds (CLOCK_MONOTONIC), wall clock in seconds. */
unsigned long long orch__mono_ns(void);
unsigned long long orch__mono_coarse_ns(void);
double orch__wall(void);

/* Makes fd close-on-exec; returns 0 or -errno. */
int orch__cloexec(int fd);

/* In an orch.fork child, where the poll handles watch the parent's fds by
 * number: *fresh (just made) takes the number of *inherited (close-on-exec;
 * the parent's is closed), *fresh becomes that number and *inherited -1.
 * Returns 0, or -errno with nothing changed. */
int orch__fd_renumber(int *fresh, int *inherited);

/* Strings that reach a syscall (paths, names, argv, environment) must not
 * hold a zero byte: C would cut them short. orch__checkpath raises
 * "bad argument #idx to 'fn' (string contains a zero byte)" (or the usual
 * "string expected"); orch__optpath returns def for none/nil;
 * orch__check_nonul checks a string already fetched (what: "path",
 * "option 'cwd'", ...). orch__opt_string refuses zero bytes too. */
const char *orch__checkpath(lua_State *L, int idx, size_t *len);
const char *orch__optpath(lua_State *L, int idx, const char *def);
void orch__check_nonul(lua_State *L, int idx, const char *s, size_t len, const char *what);

/* Opens a user-given path without ever blocking the loop on it: with
 * O_NONBLOCK (a FIFO opened for writing with no reader fails at once with
 * ENXIO instead of waiting for one; opened for reading, it does not wait for
 * a writer), which is then cleared so the fd behaves as usual (a child gets
 * it as a blocking stdin/stdout). O_CLOEXEC always; EINTR retried. Returns
 * the fd or -errno. */
/* Reads a whole small file (name relative to dirfd, or a path with
 * AT_FDCWD) into buf, NUL-terminated, retrying EINTR; returns its length or
 * -errno. For seq files (/proc, cgroupfs): with a buffer of at most 2 KiB a
 * short read is taken as the end, so a small file takes one read. At
 * EMFILE with one of the runtime's spare fds (fdlimit.c), taken back after. */
ssize_t orch__read_small(int dirfd, const char *name, char *buf, size_t size);

int orch__open_path(const char *path, int flags, unsigned mode);

/* [-0,+3] The error triple for a failed orch__open_path: "<op>: cannot open
 * <path>: <reason>", with "no process has the FIFO open for reading" for
 * ENXIO on a FIFO. Returns 3. */
int orch__fail_open(lua_State *L, const char *op, const char *path, int err);

#endif
