/*
 * test_stream.c: the C side of the stream module (src/stream.h) as proc and
 * other modules use it: wrapping fds into orch.Stream objects, refusing fds
 * libuv cannot poll, and finding the fd of a stream argument. Uses a real
 * runtime (orch_new) and real pipes, sockets and files. Exits 0 when every
 * check passed.
 */
#include "orch.h"
#include "../../src/stream.h"
#include "../../src/stream_int.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int failed;

#define CHECK(cond) do { \
    if (!(cond)) { printf("#   check failed (line %d): %s\n", __LINE__, #cond); failed++; } \
  } while (0)

static int fd_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }

int main(void) {
  orch_runtime *rt = orch_new();
  CHECK(rt != NULL);
  if (!rt) return 1;
  lua_State *L = orch_lua(rt);
  int top = lua_gettop(L);

  /* A pipe's read end becomes a readable stream that owns the fd. */
  int p[2];
  CHECK(pipe(p) == 0);
  CHECK(orch__stream_push_fd(L, p[0], ORCH_STREAM_READ) == 0);
  CHECK(lua_gettop(L) == top + 1);
  CHECK(luaL_testudata(L, -1, "orch.Stream") != NULL);
  CHECK(orch__stream_fd(L, -1) == p[0]);
  /* Its core takes 448 bytes of malloc's (issue 14: every logged service
   * has one for its output pipe), not 512. */
  {
    Stream *u = luaL_testudata(L, -1, "orch.Stream");
    CHECK(u && u->s && malloc_usable_size(u->s) <= 440);
  }
  CHECK((fcntl(p[0], F_GETFD) & FD_CLOEXEC) != 0);
  /* Not yet used for I/O: still blocking, as a child would want it. */
  CHECK((fcntl(p[0], F_GETFL) & O_NONBLOCK) == 0);
  luaL_tolstring(L, -1, NULL);
  char expect[64];
  snprintf(expect, sizeof expect, "orch.Stream: pipe fd=%d open", p[0]);
  CHECK(strcmp(lua_tostring(L, -1), expect) == 0);
  lua_pop(L, 1);

  /* close() releases the fd; a closed stream has no fd. */
  lua_getfield(L, -1, "close");
  lua_pushvalue(L, -2);
  CHECK(lua_pcall(L, 1, 1, 0) == LUA_OK);
  lua_pop(L, 1);
  CHECK(orch__stream_fd(L, -1) == -1);
  CHECK(!fd_open(p[0]));
  lua_pop(L, 1);
  close(p[1]);

  /* A unix socket: kind "unix", readable and writable. */
  int sv[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  CHECK(orch__stream_push_fd(L, sv[0], 0) == 0);
  lua_getfield(L, -1, "kind");
  lua_pushvalue(L, -2);
  CHECK(lua_pcall(L, 1, 1, 0) == LUA_OK);
  CHECK(strcmp(lua_tostring(L, -1), "unix") == 0);
  lua_pop(L, 2);
  close(sv[1]);

  /* A regular file and /dev/null cannot be polled: refused, fd closed. */
  char path[] = "/tmp/orch-test-stream.XXXXXX";
  int f = mkstemp(path);
  CHECK(f >= 0);
  unlink(path);
  CHECK(orch__stream_push_fd(L, f, ORCH_STREAM_READ) == UV_EINVAL);
  CHECK(lua_gettop(L) == top);
  CHECK(!fd_open(f));
  int dn = open("/dev/null", O_RDWR);
  CHECK(dn >= 0);
  CHECK(orch__stream_push_fd(L, dn, 0) == UV_EINVAL);
  CHECK(!fd_open(dn));
  /* A datagram socket is not a stream. */
  CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0);
  CHECK(orch__stream_push_fd(L, sv[0], 0) == UV_EINVAL);
  CHECK(!fd_open(sv[0]));
  close(sv[1]);
  /* A bad fd. */
  CHECK(orch__stream_push_fd(L, 987654, 0) == UV_EBADF);
  CHECK(lua_gettop(L) == top);

  /* Anything else is not a stream. */
  lua_pushinteger(L, 3);
  CHECK(orch__stream_fd(L, -1) == -1);
  lua_pop(L, 1);

  orch_free(rt);
  if (failed) {
    printf("test_stream: %d checks failed\n", failed);
    return 1;
  }
  printf("test_stream: ok\n");
  return 0;
}
