/*
 * stream.h: what other modules (proc's stdio pipes, supervisor log capture,
 * ctl) need from the stream module (src/stream.c; its files: stream_int.h).
 */
#ifndef ORCH_STREAM_H
#define ORCH_STREAM_H
#include <sys/types.h>

#include <lua.h>

#define ORCH_STREAM_READ  1
#define ORCH_STREAM_WRITE 2

/* Wraps fd (ownership passes to the stream, which makes it non-blocking and
 * close-on-exec) in a new orch.Stream and pushes it. Returns 0, or a negative
 * libuv error with nothing pushed and fd closed. */
int orch__stream_push_fd(lua_State *L, int fd, int flags);
/* The same for one end of a pipe this process made itself with O_CLOEXEC
 * (pipe2): what orch__stream_push_fd asks the kernel (the fd's kind, its
 * access mode, its close-on-exec flag) is known. flags: ORCH_STREAM_READ
 * for the read end, ORCH_STREAM_WRITE for the write end. */
int orch__stream_push_pipe(lua_State *L, int fd, int flags);

/* The fd behind the orch.Stream at idx (>= 0), or -1 if idx is not an open
 * orch.Stream. The fd still belongs to the stream. */
int orch__stream_fd(lua_State *L, int idx);

/* The descriptors this process image was given across exec: above 2, open
 * and not close-on-exec when the first runtime was made (before
 * any Lua ran), each with the file it was then; less those orch.fdopen and
 * orch.listen{ fd = n } took since. One scan of /proc/self/fd a process
 * (stream.c), which proc.daemonize's list starts from too. Sets *list and
 * returns the count. */
typedef struct { int fd; dev_t dev; ino_t ino; } orch__inherited_fd;
int orch__inherited_fds(const orch__inherited_fd **list);
/* Notes them, once a process (the first runtime, before it opens its own
 * fds: fewer to look at; later calls do nothing). */
void orch__fd_note_inherited(void);

#endif
