/*
 * test_proc: the C API of src/proc.h, as the supervisor or watchdog would
 * use it: spawn with a C exit callback, fd mapping, failure steps, the safe
 * kill and start times. Exits 0 on success.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "orch.h"
#include "../../src/proc.h"
#include "../../src/procfs.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); exit(1); } } while (0)

typedef struct {
  orch__child child;
  int calls;
  int status;
  double maxrss;
} svc;

static int on_exit_cb(orch__child *c, int status, const struct rusage *ru) {
  svc *s = (svc *)c;
  s->calls++;
  s->status = status;
  s->maxrss = (double)ru->ru_maxrss;
  return 1;                      /* reported: kept for no group wait */
}

int main(void) {
  orch_runtime *rt = orch_new();
  CHECK(rt);

  /* A normal exit, reported once to the C callback; the loop stays alive
   * until then. */
  svc a = { .child = { .on_exit = on_exit_cb } };
  char *argv_a[] = { "sh", "-c", "exit 7", NULL };
  orch__spawn_req req = { .file = "sh", .argv = argv_a, .search = 1, .flags = ORCH__SPAWN_PGROUP };
  const char *step = NULL;
  int pid = orch__spawn(rt, &req, &a.child, &step);
  CHECK(pid > 1);
  CHECK(a.child.pid == pid);
  CHECK(orch__child_find(rt, pid) == &a.child);
  CHECK(getpgid(pid) == pid || errno == ESRCH);

  /* stdout into a pipe through the fd map. */
  int p[2];
  CHECK(pipe2(p, O_CLOEXEC) == 0);
  svc b = { .child = { .on_exit = on_exit_cb } };
  char *argv_b[] = { "echo", "mapped", NULL };
  orch__fdmap map[] = { { 1, p[1] } };
  orch__spawn_req rb = { .file = "/bin/echo", .argv = argv_b, .fds = map, .nfds = 1 };
  CHECK(orch__spawn(rt, &rb, &b.child, &step) > 1);
  close(p[1]);

  /* Failures say which step failed and register nothing. */
  svc c = { .child = { .on_exit = on_exit_cb } };
  char *argv_c[] = { "no-such-program-x", NULL };
  orch__spawn_req rc = { .file = "no-such-program-x", .argv = argv_c, .search = 1 };
  CHECK(orch__spawn(rt, &rc, &c.child, &step) == -ENOENT);
  CHECK(strcmp(step, "exec") == 0);
  orch__spawn_req rd = { .file = "/bin/true", .argv = argv_c, .cwd = "/nonexistent/dir" };
  CHECK(orch__spawn(rt, &rd, &c.child, &step) == -ENOENT);
  CHECK(strcmp(step, "chdir") == 0);

  CHECK(orch_run(rt) == 0);
  CHECK(a.calls == 1 && WIFEXITED(a.status) && WEXITSTATUS(a.status) == 7);
  CHECK(a.maxrss > 0);
  CHECK(b.calls == 1 && WIFEXITED(b.status) && WEXITSTATUS(b.status) == 0);
  CHECK(c.calls == 0);
  CHECK(orch__child_find(rt, pid) == NULL);
  char buf[32] = "";
  CHECK(read(p[0], buf, sizeof buf - 1) == 7);
  CHECK(strcmp(buf, "mapped\n") == 0);
  close(p[0]);

  /* The safe kill. */
  CHECK(orch__kill(1, 0, 0, 0) == ORCH__KILL_REFUSED);
  CHECK(orch__kill(0, 0, 0, 0) == ORCH__KILL_REFUSED);
  CHECK(orch__kill(getpid(), 0, 0, 0) == ORCH__KILL_REFUSED);
  CHECK(orch__kill(getpgrp(), 0, ORCH__KILL_GROUP, 0) == ORCH__KILL_REFUSED);
  unsigned long long t = 0;
  CHECK(orch__procfs_start_time(getpid(), &t) == 0 && t > 0);
  CHECK(orch__procfs_start_time(pid, &t) == -ESRCH);   /* reaped */

  svc d = { .child = { .on_exit = on_exit_cb } };
  char *argv_d[] = { "sleep", "100", NULL };
  orch__spawn_req rs = { .file = "sleep", .argv = argv_d, .search = 1 };
  int dp = orch__spawn(rt, &rs, &d.child, &step);
  CHECK(dp > 1);
  unsigned long long st = 0;
  CHECK(orch__procfs_start_time(dp, &st) == 0);
  CHECK(orch__kill(dp, SIGTERM, 0, st + 1) == -ESRCH);   /* not that process */
  CHECK(orch__kill(dp, SIGTERM, 0, st) == 0);
  CHECK(orch_run(rt) == 0);
  CHECK(d.calls == 1 && WIFSIGNALED(d.status) && WTERMSIG(d.status) == SIGTERM);

  orch_free(rt);
  puts("test_proc: ok");
  return 0;
}
