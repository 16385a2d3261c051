/*
 * l_stream.c: the stream module's table (orch.pipe, orch.socketpair,
 * orch.fdopen, orch.listen, orch.connect, orch.dgram, orch.fifo) and its
 * classes; the objects live in stream.c, listener.c, dgram.c and connect.c
 * (see stream_int.h). orch.socketpair is here because it makes either kind
 * of object. Nothing here blocks.
 */
#include "stream_int.h"

#include <errno.h>
#include <signal.h>

#include "proc.h"
#include "util.h"

/* orch.socketpair([type]): two connected unix sockets, close-on-exec:
 * streams ("stream", the default) or datagram sockets ("dgram"). */
static int stream_socketpair(lua_State *L) {
  static const char *const types[] = { "stream", "dgram", NULL };
  int dgram = luaL_checkoption(L, 1, "stream", types);
  orch__check_nargs(L, 1);
  orch__hstate *st = orch__hstate_get(L);
  int fds[2];
  if (socketpair(AF_UNIX, (dgram ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0, fds) < 0)
    return orch__fail(L, "socketpair", errno);
  if (dgram) return orch__dgram_push_pair(L, st, fds);
  const int rw = ORCH_STREAM_READ | ORCH_STREAM_WRITE;
  if (orch__stream_push_new(L, st, fds[0], K_UNIX, rw, "socketpair") != 1) {
    orch__close_fd(fds[1]);
    return 3;
  }
  if (orch__stream_push_new(L, st, fds[1], K_UNIX, rw, "socketpair") != 1) {
    orch__hobj_close_ud(lua_touserdata(L, -4));
    return 3;
  }
  return 2;
}

/* ------------------------------------------------------------------ module */

int orch__open_stream(lua_State *L) {
  /* A write to a pipe whose reader has gone must fail with EPIPE, not kill
   * orch. Only the default disposition is changed; spawned children get
   * their signal dispositions reset by proc. */
  struct sigaction old;
  if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL && !(old.sa_flags & SA_SIGINFO)) {
    signal(SIGPIPE, SIG_IGN);
    orch__proc_ignored(SIGPIPE);
  }
  orch__stream_register(L);
  orch__listener_register(L);
  orch__dgram_register(L);
  static const luaL_Reg fns[] = {
    {"pipe", orch__stream_pipe}, {"socketpair", stream_socketpair}, {"fdopen", orch__stream_fdopen},
    {"listen", orch__stream_listen}, {"connect", orch__stream_connect}, {"dgram", orch__stream_dgram},
    {NULL, NULL}
  };
  luaL_newlib(L, fns);
  static const luaL_Reg fifo_fns[] = { {"make", orch__fifo_make}, {"open", orch__fifo_open}, {NULL, NULL} };
  luaL_newlib(L, fifo_fns);
  lua_setfield(L, -2, "fifo");
  return 1;
}
