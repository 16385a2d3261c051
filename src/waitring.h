/*
 * waitring.h: waits for children's exits through io_uring's
 * IORING_OP_WAITID (Linux 6.7), no fd a child and no walk over all
 * children (waitring.c). Internal to the reaper (process.c).
 *
 *   orch__waitring *r;
 *   if (orch__waitring_open(&r) == 0) {             // -ENOSYS: no such kernel
 *     orch__waitring_add(r, pid, tag);              // one wait for one child
 *     // ... orch__waitring_fd(r) readable:
 *     unsigned long long tag; int res;
 *     while (orch__waitring_next(r, &tag, &res))   // res 0: that child ended
 *       ...                                         // (not reaped: wait4 it)
 *     orch__waitring_close(r);                      // cancels the others
 *   }
 * Loop thread only.
 */
#ifndef ORCH_WAITRING_H
#define ORCH_WAITRING_H

#include <sys/types.h>

typedef struct orch__waitring orch__waitring;

/* 0 and *r, or -errno (-ENOSYS: the kernel has no IORING_OP_WAITID). */
int orch__waitring_open(orch__waitring **r);
/* NULL is allowed. Waits not completed are cancelled. */
void orch__waitring_close(orch__waitring *r);
/* The fd to watch: readable while completions wait. */
int orch__waitring_fd(const orch__waitring *r);
/* Waits for pid's exit (it stays a zombie); its completion carries tag.
 * 0 or -errno (the wait was not made). */
int orch__waitring_add(orch__waitring *r, pid_t pid, unsigned long long tag);
/* The next completion: 1 with its tag and result (0: the child ended;
 * -ECHILD: it was reaped or is not a child; -ECANCELED), 0 when none. */
int orch__waitring_next(orch__waitring *r, unsigned long long *tag, int *res);

/* In a fork child: the inherited ring is the parent's (its waits, its
 * completions); *r becomes a new one under the same fd number, so that a
 * watcher of that fd goes on. On failure (-errno) *r is NULL and the fd
 * closed. */
int orch__waitring_fork(orch__waitring **r);

#endif
