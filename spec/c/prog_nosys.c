/*
 * prog_nosys: runs a program in which the system calls named fail with
 * ENOSYS, as in a container whose seccomp profile predates them (Docker
 * before 20.10) or on an older kernel (clone3 and pidfd_open came in Linux
 * 5.3, pidfd_send_signal in 5.1): for the specs of orch's fallbacks (the
 * spawner's clone(2) in spec/spawn_signals_spec.lua, a listed signal
 * without pidfds in spec/cgroup_spec.lua). glibc's own threads fall back to
 * clone(2) on ENOSYS too.
 *
 *   prog_nosys SYSCALL[,SYSCALL...] PROGRAM ARGS...
 *
 * SYSCALL: clone3, pidfd_open, pidfd_send_signal. On an architecture other
 * than x86-64 it only runs the program (the filter checks x86-64's numbers).
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const struct { const char *name; unsigned nr; } calls[] = {
  { "clone3", 435 }, { "pidfd_open", 434 }, { "pidfd_send_signal", 424 },
};
#define NCALLS (sizeof calls / sizeof calls[0])

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: prog_nosys SYSCALL[,SYSCALL...] PROGRAM ARGS...\n");
    return 2;
  }
#if defined(__x86_64__)
  /* The arch check, then one test a call, then allow. */
  struct sock_filter f[4 + 2 * NCALLS + 1];
  unsigned n = 0, nr[NCALLS], k = 0;
  for (char *c = strtok(argv[1], ","); c; c = strtok(NULL, ",")) {
    size_t i = 0;
    while (i < NCALLS && strcmp(c, calls[i].name) != 0) i++;
    if (i == NCALLS || k == NCALLS) {
      fprintf(stderr, "prog_nosys: unknown system call %s\n", c);
      return 2;
    }
    nr[k++] = calls[i].nr;
  }
  f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
  f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
  f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
  for (unsigned i = 0; i < k; i++) {
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr[i], 0, 1);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA));
  }
  f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  struct sock_fprog prog = { (unsigned short)n, f };
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
    perror("prog_nosys: seccomp");
    return 1;
  }
#endif
  execvp(argv[2], argv + 2);
  perror(argv[2]);
  return 127;
}
