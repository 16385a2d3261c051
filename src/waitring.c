/*
 * waitring.c: waits for children's exits through io_uring (Linux 6.7's
 * IORING_OP_WAITID), for process.c's reaper. Each wait is one request in
 * one ring: waitid(P_PID, pid, WEXITED | WNOWAIT), which completes when
 * that child has ended and leaves it to be reaped (by wait4(pid), which
 * also gives its rusage). Unlike a pidfd it takes no fd, and unlike the
 * wait4(-1) walk it makes the kernel look at that one child only.
 *
 * Raw system calls and the ring's own memory (no liburing): the ring is
 * set up with io_uring_setup, its queues mapped, a request written into
 * the submission queue and submitted at once; completions are read from
 * the completion queue, which the loop watches (the ring's fd is readable
 * while completions wait). The kernel keeps the completions that do not fit
 * (IORING_FEAT_NODROP) until they are asked for.
 *
 * Ownership: the caller (process.c's proc_state) owns the ring; the ring
 * owns its fd and mappings. Closing the fd cancels the waits not completed.
 * What may block: nothing (io_uring_enter only submits, or flushes
 * completions that overflowed, without waiting).
 */
#include "waitring.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <linux/io_uring.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* The opcode is newer than some kernel headers. */
#define OP_WAITID 50
#define SQ_ENTRIES 16
#define CQ_ENTRIES 1024

struct orch__waitring {
  int fd;
  void *sq, *cq, *sqe_map;
  size_t sq_len, cq_len, sqe_len;
  unsigned *sq_head, *sq_tail, *sq_mask, *sq_flags, *sq_array;
  unsigned *cq_head, *cq_tail, *cq_mask;
  struct io_uring_sqe *sqes;
  struct io_uring_cqe *cqes;
  siginfo_t info;             /* where the kernel writes each wait's answer
                               * (read by nobody: wait4 reaps) */
};

static int sys_setup(unsigned n, struct io_uring_params *p) {
  return (int)syscall(SYS_io_uring_setup, n, p);
}

static int sys_enter(int fd, unsigned submit, unsigned flags) {
  return (int)syscall(SYS_io_uring_enter, fd, submit, 0, flags, NULL, 0);
}

/* Whether the kernel knows IORING_OP_WAITID. */
static int has_waitid(int fd) {
  size_t len = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
  struct io_uring_probe *p = calloc(1, len);
  if (!p) return 0;
  int ok = syscall(SYS_io_uring_register, fd, IORING_REGISTER_PROBE, p, 256) == 0 &&
           p->last_op >= OP_WAITID && (p->ops[OP_WAITID].flags & IO_URING_OP_SUPPORTED);
  free(p);
  return ok;
}

void orch__waitring_close(orch__waitring *r) {
  if (!r) return;
  if (r->sqe_map && r->sqe_map != MAP_FAILED) munmap(r->sqe_map, r->sqe_len);
  if (r->cq && r->cq != MAP_FAILED && r->cq != r->sq) munmap(r->cq, r->cq_len);
  if (r->sq && r->sq != MAP_FAILED) munmap(r->sq, r->sq_len);
  if (r->fd >= 0) close(r->fd);
  free(r);
}

int orch__waitring_open(orch__waitring **out) {
  *out = NULL;
  orch__waitring *r = calloc(1, sizeof *r);
  if (!r) return -ENOMEM;
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_CQSIZE;
  p.cq_entries = CQ_ENTRIES;
  r->fd = sys_setup(SQ_ENTRIES, &p);
  if (r->fd < 0) { int e = errno; free(r); return -e; }
  int e = 0;
  if (!(p.features & IORING_FEAT_NODROP) || !(p.features & IORING_FEAT_SINGLE_MMAP) || !has_waitid(r->fd)) {
    e = -ENOSYS;
    goto fail;
  }
  r->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
  r->cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
  if (r->cq_len > r->sq_len) r->sq_len = r->cq_len;
  r->cq_len = r->sq_len;
  r->sq = mmap(NULL, r->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
  if (r->sq == MAP_FAILED) { e = -errno; goto fail; }
  r->cq = r->sq;
  r->sqe_len = p.sq_entries * sizeof(struct io_uring_sqe);
  r->sqe_map = mmap(NULL, r->sqe_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
  if (r->sqe_map == MAP_FAILED) { e = -errno; goto fail; }
  char *sq = r->sq, *cq = r->cq;
  r->sq_head = (unsigned *)(sq + p.sq_off.head);
  r->sq_tail = (unsigned *)(sq + p.sq_off.tail);
  r->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
  r->sq_flags = (unsigned *)(sq + p.sq_off.flags);
  r->sq_array = (unsigned *)(sq + p.sq_off.array);
  r->cq_head = (unsigned *)(cq + p.cq_off.head);
  r->cq_tail = (unsigned *)(cq + p.cq_off.tail);
  r->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
  r->sqes = r->sqe_map;
  *out = r;
  return 0;
fail:
  orch__waitring_close(r);
  return e;
}

int orch__waitring_fd(const orch__waitring *r) {
  return r->fd;
}

int orch__waitring_add(orch__waitring *r, pid_t pid, unsigned long long tag) {
  unsigned tail = *r->sq_tail;
  unsigned head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
  if (tail - head >= SQ_ENTRIES) return -EBUSY;   /* never: each is submitted at once */
  unsigned i = tail & *r->sq_mask;
  struct io_uring_sqe *s = &r->sqes[i];
  memset(s, 0, sizeof *s);
  s->opcode = OP_WAITID;
  s->fd = pid;                        /* the id */
  s->len = P_PID;                     /* its type */
  s->file_index = WEXITED | WNOWAIT;  /* the options */
  s->addr2 = (unsigned long long)(uintptr_t)&r->info;
  s->user_data = tag;
  r->sq_array[i] = i;
  __atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
  int n;
  do n = sys_enter(r->fd, 1, 0); while (n < 0 && errno == EINTR);
  if (n == 1) return 0;
  /* Not taken: the entry goes back. */
  int e = n < 0 ? -errno : -EAGAIN;
  __atomic_store_n(r->sq_tail, tail, __ATOMIC_RELEASE);
  return e;
}

int orch__waitring_next(orch__waitring *r, unsigned long long *tag, int *res) {
  for (int flushed = 0;; flushed = 1) {
    unsigned head = *r->cq_head;
    if (head != __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) {
      struct io_uring_cqe *c = &r->cqes[head & *r->cq_mask];
      *tag = c->user_data;
      *res = c->res;
      __atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
      return 1;
    }
    /* Completions that did not fit wait in the kernel until asked for. */
    if (flushed || !(__atomic_load_n(r->sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_CQ_OVERFLOW)) return 0;
    while (sys_enter(r->fd, 0, IORING_ENTER_GETEVENTS) < 0 && errno == EINTR) {}
  }
}

int orch__waitring_fork(orch__waitring **rp) {
  orch__waitring *old = *rp, *r = NULL;
  int e = orch__waitring_open(&r);
  if (e == 0 && (e = orch__fd_renumber(&r->fd, &old->fd)) < 0) orch__waitring_close(r);
  orch__waitring_close(old);
  *rp = e < 0 ? NULL : r;
  return e;
}
