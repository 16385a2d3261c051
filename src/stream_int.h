/*
 * stream_int.h: what the files of the stream module share (not for other
 * modules: they use stream.h).
 *
 *   l_stream.c  the module's table; orch.socketpair (streams or datagrams)
 *   stream.c    orch.Stream: its core (buffer, reads, on_read, writes), the
 *               stream.h API, orch.pipe, orch.fdopen, inherited fds
 *   listener.c  orch.Listener and orch.listen (unix and TCP)
 *   dgram.c     orch.Dgram and orch.dgram (unix datagrams, fd passing)
 *   connect.c   orch.connect and orch.fifo: what waits for a peer
 *   sockaddr.c  unix socket names and files, option helpers
 *   handle.c    the lifetime every object above shares (handle.h)
 *
 * A stream core (score) is created by stream.c, accept (listener.c),
 * connect (connect.c) and a datagram carrying descriptors (dgram.c); it is
 * given to Lua with orch__stream_push_core or, for a descriptor that is not
 * a libuv handle yet, orch__stream_push_new.
 */
#ifndef ORCH_STREAM_INT_H
#define ORCH_STREAM_INT_H

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include "handle.h"
#include "stream.h"

#define STREAM_MT "orch.Stream"
#define LISTENER_MT "orch.Listener"
#define DGRAM_MT "orch.Dgram"

enum { K_PIPE, K_FIFO, K_UNIX, K_TCP, K_TTY, K_CHAR };
extern const char *const orch__stream_kinds[];

typedef union {
  uv_handle_t h;
  uv_stream_t s;
  uv_pipe_t pipe;
  uv_tcp_t tcp;
} anystream;

struct score;
typedef struct Stream { struct score *s; int kind; } Stream;   /* the userdata */

typedef struct wreq {
  uv_write_t req;
  struct score *s;
  lua_State *co;                /* NULL once nobody waits for it */
  struct wreq *prev, *next;     /* the core's waiting writes */
  int linked;
  char data[];
} wreq;

/* Laid out small (issue 14: memory per service): every logged service's
 * output pipe has one, 440 bytes (malloc's 448) instead of 496 (512): the
 * flags and states are bytes, and the loop is the runtime's (o.st). */
typedef struct score {
  orch__hobj o;
  anystream u;
  int fd;                       /* ours until a handle owns it, then -1 */
  int fdnum;                    /* for fd() and __tostring */
  int open_err;                 /* the handle could not take the fd */
  int rerr;
  /* stream:on_read: while cb_on, registry refs to the callback and to the
   * userdata (an active stream is not collected); cb_busy while a task runs
   * the callback (reading pauses); cb_final once EOF or an error was passed. */
  int cb_fn, cb_self, cb_arg;   /* cb_arg: LUA_NOREF without one */
  unsigned char kind, flags;
  unsigned char hstate;         /* a uv handle was initialised */
  unsigned char reading, eof, rmode;
  unsigned char shutting, shut_done;
  unsigned char cb_on, cb_busy, cb_final;
  unsigned char refill : 1;     /* accepted with the spare fds: take them back at close */
  unsigned char partial : 1;    /* the last byte read was not a newline (on_read's EOF) */
  unsigned char eof_later : 1;  /* its EOF waits for the loop turn's check (eof_defer) */
  unsigned char unread : 1;     /* accepted, never read: its first read tries the socket at once */
  char *buf;                    /* buffered input: buf[off, len) */
  size_t off, len, cap, scanned;
  lua_State *reader;
  const char *rop;
  size_t rmax;
  wreq *writes;
  lua_State *shut_co;           /* its request is allocated by stream:shutdown */
} score;

/* stream.c */
extern const orch__hclass orch__stream_class;
/* A new core (no userdata, no handle yet: fd is ours), or NULL. */
score *orch__score_new(orch__hstate *st, int kind, int fd, int flags);
/* Frees a core that never had a handle initialised. */
void orch__score_free(score *s);
/* The libuv handle of a core made with fd -1: initialised for its kind
 * (pipe or TCP), ready for accept or connect. 0 or a libuv error (then the
 * core is freed). */
int orch__score_init_handle(score *s);
/* [-0,+1] A new orch.Stream for core s (which has no userdata yet). */
void orch__stream_push_core(lua_State *L, score *s);
/* [-0,+1|3] A new orch.Stream owning fd; on failure fd is closed and the
 * error triple pushed (op names the failing call). Returns the count. */
int orch__stream_push_new(lua_State *L, orch__hstate *st, int fd, int kind, int flags,
                          const char *op);

/* Descriptors this process image inherited across exec (open and not
 * close-on-exec when the module opened, before any Lua ran): the only ones
 * orch.fdopen and orch.listen{ fd = n } adopt, each once. 1 if fd was one
 * (and is now taken), 0 otherwise. */
int orch__fd_take_inherited(int fd);
/* Descriptor numbers handed to Lua raw (orch.fd.memfd, dgram:recv{ fds =
 * "raw" }), which orch.fd.close and orch.fd.read may close: no other (an
 * object's, libuv's own) can be closed from Lua. Process-wide (every
 * runtime's thread), under a lock. own marks fd; disown clears it and says
 * whether it was marked (or was inherited across exec and not taken). */
void orch__fd_own(int fd);
int orch__fd_disown(int fd);

/* sockaddr.c */
/* close(2), never retried (Linux closes the fd even on EINTR); -1 ignored. */
int orch__close_fd(int fd);
/* Fills a sockaddr_un; "@name" is the abstract namespace. 0 or -errno. */
int orch__sun_make(const char *path, size_t len, struct sockaddr_un *sa, socklen_t *salen);
/* Raises for an empty unix socket name or one with a zero byte. */
const char *orch__sun_check(lua_State *L, int arg, const char *what, const char *s, size_t len);
/* [-0,+1] The name of a unix socket address: "@name", a path, or nil. */
void orch__sun_push(lua_State *L, const struct sockaddr_un *sa, socklen_t salen);
/* Binds a unix socket with exactly `mode`, replacing a stale socket file;
 * records the file's identity for orch__sun_unlink. 0 or -errno. */
int orch__sun_bind(int fd, const struct sockaddr_un *sa, socklen_t salen, int mode, int type,
                   dev_t *dev, ino_t *ino);
/* Unlinks the socket file *path (and frees it) if this process made it
 * and it is still that file. */
void orch__sun_unlink(char **path, dev_t dev, ino_t ino, pid_t owner);
/* The most descriptors one datagram carries (the kernel's SCM_MAX_FD). */
#define ORCH_MAX_PASS_FDS 253
/* One datagram from fd without blocking (EINTR retried): up to len bytes
 * into buf, the sender's address into from and fromlen, its credentials into
 * *cred (*have_cred 1, when SO_PASSCRED passed them) and its descriptors
 * (close-on-exec from the start) into fds, up to max (*nfds of them); any
 * past max are closed (all when fds is NULL); *ctrunc (when not NULL) says
 * the kernel cut them short (MSG_CTRUNC: more than fit, or orch out of
 * fds). Returns the bytes received, or -errno (-EAGAIN when none waits). */
ssize_t orch__dgram_recv(int fd, void *buf, size_t len, struct sockaddr_un *from, socklen_t *fromlen,
                         struct ucred *cred, int *have_cred, int *fds, int max, int *nfds, int *ctrunc);
/* [-0,+1] A peer's or sender's credentials as { pid, uid, gid }. */
void orch__push_ucred(lua_State *L, const struct ucred *cr);
/* Whether option table idx has key k (not nil). */
int orch__has_option(lua_State *L, int idx, const char *k);
/* Option `timeout` of table idx: seconds, -1 when absent. */
double orch__opt_timeout(lua_State *L, int idx);
/* Option `port` of table idx (0 to 65535; -1 absent is refused). */
int orch__opt_port(lua_State *L, int idx);
/* A numeric host ("localhost" and "*" too) into ss with port. 0 or -1. */
int orch__parse_host(const char *host, int port, struct sockaddr_storage *ss);

/* The module's classes and functions, by file (l_stream.c makes the table). */
void orch__stream_register(lua_State *L);
int orch__stream_pipe(lua_State *L);
int orch__stream_fdopen(lua_State *L);
void orch__listener_register(lua_State *L);
int orch__stream_listen(lua_State *L);
void orch__dgram_register(lua_State *L);
int orch__stream_dgram(lua_State *L);
/* [-0,+2|3] Two orch.Dgram objects owning fds[0] and fds[1] (a socketpair);
 * on failure both are closed and the error triple pushed. Returns the count. */
int orch__dgram_push_pair(lua_State *L, orch__hstate *st, int fds[2]);
int orch__stream_connect(lua_State *L);
int orch__fifo_make(lua_State *L);
int orch__fifo_open(lua_State *L);

#endif
