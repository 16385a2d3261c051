// link: @orch_obj
/*
 * fuzz_ctl.c: libFuzzer harness of the control protocol as the server sees
 * it: the input is written, as it is, into a connection to a real
 * ctl.serve() socket of a runtime made once, and the loop runs until the
 * server has answered and closed (or the input ends mid-line). This covers
 * the C framing (read_line over an orch.Stream), JSON decoding and every
 * handler, with a stand-in supervisor (no processes). scripts/fuzz links it
 * with orch's objects built by clang and runs it sandboxed (user nobody,
 * private namespaces: `eval` runs Lua from the input).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#include "orch.h"

static orch_runtime *rt;
static char sock_path[108];

static void init(void) {
  snprintf(sock_path, sizeof sock_path, "/tmp/orch-fuzz-ctl.%d.sock", (int)getpid());
  unlink(sock_path);
  rt = orch_new();
  if (!rt) abort();
  char *argv[] = { sock_path };
  orch_set_args(rt, "fuzz_ctl", 1, argv);
  if (orch_load_string(rt, "local path = arg[1]\n" "orch.set_budget(0.05)\n"
                           "local fake = {}\n"
                           "local st = { { name = 'web', service = 'web', index = 1, state = 'running', pid = 1, restarts = 0 } }\n"
                           "function fake.status() return st end\n"
                           "for _, v in ipairs { 'start', 'stop', 'restart', 'signal' } do fake[v] = function(n) return true end end\n"
                           "function fake.tail(n, k) return { 'a', 'b\\255' } end\n"
                           "function fake.follow(n, fn) fn('line') return function() end end\n"
                           "assert(require('orch.ctl').serve { socket = path, supervisor = fake, idle_timeout = 0.2 })\n"
                           "HOLD = orch.timer.every(3600, function() end)\n",
                       "=fuzz_ctl") != ORCH_OK) {
    fprintf(stderr, "setup: %s\n", orch_last_error(rt));
    abort();
  }
  for (int i = 0; i < 100; i++) orch_step(rt);
  if (access(sock_path, F_OK) != 0) { fprintf(stderr, "no socket\n"); abort(); }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!rt) init();
  if (size > 100000) return 0;
  int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (c < 0) return 0;
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
  if (connect(c, (struct sockaddr *)&sa, sizeof sa) < 0) { close(c); return 0; }
  size_t off = 0;
  int shut = 0;
  char buf[65536];
  /* Write, read and run the loop until the server closes (it does at the
   * end of our input, or the idle timeout ends a half line). */
  for (int turns = 0; turns < 100000; turns++) {
    if (off < size) {
      ssize_t w = write(c, data + off, size - off);
      if (w > 0) off += (size_t)w;
    } else if (!shut) {
      shutdown(c, SHUT_WR);
      shut = 1;
    }
    ssize_t r = read(c, buf, sizeof buf);
    if (r == 0) break;
    if (r < 0 && errno != EAGAIN) break;
    orch_step(rt);
    if (orch_exited(rt, NULL)) abort();  /* the input made orch exit: a finding */
    if (r < 0) {
      struct pollfd p = { .fd = uv_backend_fd(orch_loop(rt)), .events = POLLIN };
      poll(&p, 1, 1);
    }
  }
  close(c);
  for (int i = 0; i < 3; i++) orch_step(rt);
  return 0;
}
