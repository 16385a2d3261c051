/*
 * exit_signal.c: which signal a child's exit sends its parent when it was
 * cloned with another exit signal than SIGCHLD (clone's CSIGNAL byte, as
 * clone3's exit_signal), depending on whether the child execs. Issue 15,
 * seventh session: a realtime exit signal would be queued with its
 * siginfo (never merged), so each exit's pid would reach the reaper; this
 * shows whether a service (a child that execs) keeps it.
 *   cc -O2 -o exit_signal scripts/bench.d/exit_signal.c && ./exit_signal
 * Prints, for a child that only calls _exit and for one that execs
 * /bin/true, the signal its exit raised and whether waitpid without
 * __WALL sees it (a child whose exit signal is not SIGCHLD is a "clone"
 * child, seen only with __WALL or __WCLONE).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char stack[64 * 1024];

static int child(void *arg) {
  if (arg) execl("/bin/true", "true", (char *)NULL);
  _exit(7);
}

static void one(const char *what, void *arg, int sig) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  sigaddset(&set, SIGCHLD);
  pid_t pid = clone(child, stack + sizeof stack, CLONE_VM | CLONE_VFORK | sig, arg);
  if (pid < 0) { perror("clone"); return; }
  struct timespec ts = {2, 0};
  siginfo_t si;
  int got = sigtimedwait(&set, &si, &ts);
  int st;
  pid_t r = waitpid(pid, &st, WNOHANG);
  int plain = r == pid;
  if (!plain) r = waitpid(pid, &st, __WALL);
  printf("%-14s exit signal asked %d, raised %d (%s, si_pid %s), waitpid without __WALL: %s\n",
         what, sig, got, got == SIGCHLD ? "SIGCHLD" : got == sig ? "the one asked" : "none",
         got > 0 && si.si_pid == pid ? "the child's" : "other", plain ? "sees it" : "does not");
}

int main(void) {
  int sig = SIGRTMAX;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  sigaddset(&set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &set, NULL);
  one("_exit only:", NULL, sig);
  one("exec, then exit:", "exec", sig);
  return 0;
}
