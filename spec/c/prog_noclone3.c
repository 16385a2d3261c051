/*
 * prog_noclone3: runs a program in which clone3(2) fails with ENOSYS, as in
 * a container whose seccomp profile predates the call (Docker before 20.10)
 * or on a kernel before Linux 5.3: for the specs of the spawner's fallback
 * to clone(2) (spec/spawn_signals_spec.lua). glibc's own threads fall back
 * to clone(2) on ENOSYS too.
 *
 *   prog_noclone3 PROGRAM ARGS...
 *
 * On an architecture other than x86-64 it only runs the program (orch uses
 * clone3 on x86-64 alone).
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: prog_noclone3 PROGRAM ARGS...\n");
    return 2;
  }
#if defined(__x86_64__)
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = { (unsigned short)(sizeof f / sizeof f[0]), f };
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
    perror("prog_noclone3: seccomp");
    return 1;
  }
#endif
  execvp(argv[1], argv + 1);
  perror(argv[1]);
  return 127;
}
