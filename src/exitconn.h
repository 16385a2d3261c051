/*
 * exitconn.h: the exits of orch's children through the kernel's proc
 * connector (netlink, CN_IDX_PROC), one socket for all of them: no fd and
 * no kernel wait a child, no walk over all children (exitconn.c). Internal
 * to the reaper (process.c).
 *
 *   orch__exitconn *x;
 *   if (orch__exitconn_open(&x, 0) == 0) {          // -errno: not here
 *     // ... orch__exitconn_fd(x) readable (or at each SIGCHLD):
 *     pid_t pid;
 *     int r;
 *     while ((r = orch__exitconn_next(x, &pid)) != 0)
 *       if (r > 0) ...          // pid (a child of this process) ended,
 *                               // or is ending: waitid(P_PID, WNOHANG)
 *       else ...                // -ENOBUFS: events were lost (walk)
 *     orch__exitconn_close(x);
 *   }
 * Loop thread only.
 */
#ifndef ORCH_EXITCONN_H
#define ORCH_EXITCONN_H

#include <sys/types.h>

typedef struct orch__exitconn orch__exitconn;

/* 0 and *x, or -errno: -EPERM (no CAP_NET_ADMIN, or not in the initial
 * user and pid namespaces: the kernel did not acknowledge the
 * subscription), -ECONNREFUSED (another network namespace), -ENOSYS (no
 * proc connector), or the socket's own error (e.g. seccomp). rcvbuf: the
 * socket's receive buffer in bytes, 0 for the default (8 MiB: the events
 * of 10,000 exits at once). */
int orch__exitconn_open(orch__exitconn **x, int rcvbuf);
/* NULL is allowed. Unsubscribes when this process subscribed. */
void orch__exitconn_close(orch__exitconn *x);
/* The fd to watch: readable while events wait (and on an overflow). */
int orch__exitconn_fd(const orch__exitconn *x);
/* The next exit of one of this process's children (a thread group
 * leader's): 1 and *pid; 0 when none is waiting; -ENOBUFS when the kernel
 * dropped events since the last call (the calls after it go on). */
int orch__exitconn_next(orch__exitconn *x, pid_t *pid);
/* Datagrams read so far (each exit event that passed the socket filter,
 * and anything else that reached the socket). */
unsigned long long orch__exitconn_events(const orch__exitconn *x);

/* In a fork child: the inherited socket is the parent's (its filter names
 * the parent); *x becomes a new one for this process under the same fd
 * number, so that a watcher of that fd goes on. On failure (-errno) *x is
 * NULL and the fd closed. */
int orch__exitconn_fork(orch__exitconn **x);

#endif
