/*
 * exitconn.c: the exits of orch's children through the kernel's proc
 * connector, for process.c's reaper. One netlink socket (NETLINK_CONNECTOR,
 * group CN_IDX_PROC) hears every process's exit on the machine
 * (PROC_EVENT_EXIT: the task's pid and tgid, its parent's pid and tgid); a
 * classic BPF filter attached to it keeps only the exits of thread group
 * leaders whose parent is this process, so that the kernel drops the
 * others in the exiting task and orch never wakes for them. The reaper then
 * reaps each pid with a wait by pid (no walk over the other children).
 *
 * The event is sent by the exiting task right after exit_notify (Linux 3.x
 * on; before it in older kernels): usually the child is a zombie when the
 * event is read, sometimes not yet (an older kernel; a group leader whose
 * other threads still run), which the reaper's wait by pid tells.
 *
 * The subscription needs CAP_NET_ADMIN and the initial user, pid and network
 * namespaces: the kernel answers PROC_CN_MCAST_LISTEN with an
 * acknowledgement (multicast to every listener, so ours is told apart by
 * its ack number) only where it took it; the pids in the events are the
 * initial namespace's, which are orch's own only there. No acknowledgement,
 * no connector: the reaper uses its other ways.
 *
 * Ownership: the caller (process.c's proc_state) owns the connector; it
 * owns its socket. What may block: nothing (the socket is non-blocking; the
 * kernel acknowledges the subscription within the send).
 */
#include "exitconn.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_RCVBUF (8 << 20)
#define BATCH 32
#define MSG_MAX 128                     /* an exit event is 76 bytes */

struct orch__exitconn {
  int fd;
  pid_t owner;                 /* the process whose children it hears of */
  int rcvbuf;                  /* as asked (0: the default), for a fork child */
  unsigned long long events;
  /* Datagrams read by the last recvmmsg and not yet handed out. */
  int n, i;
  struct mmsghdr hdr[BATCH];
  struct iovec iov[BATCH];
  struct sockaddr_nl from[BATCH];
  unsigned char buf[BATCH][MSG_MAX] __attribute__((aligned(8)));
};

/* The offsets of an exit event's fields in the datagram: a netlink header,
 * the connector's header, then struct proc_event. */
#define EV (NLMSG_LENGTH(0) + sizeof(struct cn_msg))
#define OFF_WHAT (EV + offsetof(struct proc_event, what))
#define OFF_PID (EV + offsetof(struct proc_event, event_data.exit.process_pid))
#define OFF_TGID (EV + offsetof(struct proc_event, event_data.exit.process_tgid))
#define OFF_PTGID (EV + offsetof(struct proc_event, event_data.exit.parent_tgid))
#define EXIT_LEN (EV + offsetof(struct proc_event, event_data.exit.parent_tgid) + sizeof(__kernel_pid_t))

/* Keeps an exit of a thread group leader whose parent is process me.
 * (Classic BPF loads words in network order, hence htonl.) */
static int filter_attach(int fd, pid_t me) {
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, OFF_WHAT),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, htonl(PROC_EVENT_EXIT), 0, 7),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, OFF_PTGID),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, htonl((uint32_t)me), 0, 5),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, OFF_PID),
    BPF_STMT(BPF_MISC | BPF_TAX, 0),
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, OFF_TGID),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_X, 0, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),
    BPF_STMT(BPF_RET | BPF_K, 0),
  };
  struct sock_fprog prog = { .len = sizeof f / sizeof f[0], .filter = f };
  return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0 ? -errno : 0;
}

static int mcast_op(int fd, enum proc_cn_mcast_op op, uint32_t ack) {
  struct {
    struct nlmsghdr nl;
    struct cn_msg cn;
    enum proc_cn_mcast_op op;
  } __attribute__((packed)) m;
  memset(&m, 0, sizeof m);
  m.nl.nlmsg_len = sizeof m;
  m.nl.nlmsg_type = NLMSG_DONE;
  m.cn.id.idx = CN_IDX_PROC;
  m.cn.id.val = CN_VAL_PROC;
  m.cn.ack = ack;
  m.cn.len = sizeof m.op;
  m.op = op;
  ssize_t n;
  do n = send(fd, &m, sizeof m, 0); while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : 0;
}

/* The connector's header and event of the message b (n bytes, at least up
 * to the event's data), copied out: the event starts 36 bytes in (after the
 * netlink and connector headers), not on the 8 bytes its u64 needs. */
static const struct proc_event *event_copy(const unsigned char *b, size_t n, struct cn_msg *cn,
                                           struct proc_event *ev) {
  size_t len = n - EV < sizeof *ev ? n - EV : sizeof *ev;
  memcpy(cn, b + NLMSG_LENGTH(0), sizeof *cn);
  memset(ev, 0, sizeof *ev);
  memcpy(ev, b + EV, len);
  return ev;
}

/* The kernel's answer to our subscription (ack number ack + 1): 0 when it
 * took it, its error, or -EPERM when none came (the kernel ignores a
 * subscription from outside the initial user and pid namespaces). */
static int mcast_ack(int fd, uint32_t ack) {
  unsigned char b[512] __attribute__((aligned(8)));
  for (;;) {
    ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno == EAGAIN ? -EPERM : -errno;
    if ((size_t)n < EV + offsetof(struct proc_event, event_data) + sizeof(__u32)) continue;
    struct cn_msg cnb;
    struct proc_event evb;
    const struct cn_msg *cn = &cnb;
    const struct proc_event *ev = event_copy(b, (size_t)n, &cnb, &evb);
    if (cn->id.idx != CN_IDX_PROC || ev->what != PROC_EVENT_NONE || cn->ack != ack + 1) continue;
    return ev->event_data.ack.err ? -(int)ev->event_data.ack.err : 0;
  }
}

void orch__exitconn_close(orch__exitconn *x) {
  if (!x) return;
  if (x->fd >= 0) {
    if (x->owner == getpid()) mcast_op(x->fd, PROC_CN_MCAST_IGNORE, 0);
    close(x->fd);
  }
  free(x);
}

int orch__exitconn_open(orch__exitconn **out, int rcvbuf) {
  *out = NULL;
  orch__exitconn *x = calloc(1, sizeof *x);
  if (!x) return -ENOMEM;
  x->rcvbuf = rcvbuf;
  x->owner = getpid();
  x->fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_CONNECTOR);
  int e = 0;
  if (x->fd < 0) { e = errno == EPROTONOSUPPORT ? -ENOSYS : -errno; goto fail; }
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof sa);
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = CN_IDX_PROC;
  if (bind(x->fd, (struct sockaddr *)&sa, sizeof sa) < 0) { e = -errno; goto fail; }
  /* An ack number of our own: the kernel's acknowledgement goes to every
   * listener on the machine. */
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint32_t ack = (uint32_t)x->owner * 2654435761u ^ (uint32_t)ts.tv_nsec;
  if ((e = mcast_op(x->fd, PROC_CN_MCAST_LISTEN, ack)) < 0) goto fail;
  if ((e = mcast_ack(x->fd, ack)) < 0) goto fail;
  /* Subscribed: from here on, close unsubscribes. */
  if ((e = filter_attach(x->fd, x->owner)) < 0) goto fail;
  /* After the acknowledgement, so that a small buffer (a test's) does not
   * lose it. Without CAP_NET_ADMIN's FORCE, the system's maximum. */
  int want = rcvbuf > 0 ? rcvbuf : DEFAULT_RCVBUF;
  if (setsockopt(x->fd, SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) < 0)
    setsockopt(x->fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
  for (int i = 0; i < BATCH; i++) {
    x->iov[i].iov_base = x->buf[i];
    x->iov[i].iov_len = MSG_MAX;
    x->hdr[i].msg_hdr.msg_iov = &x->iov[i];
    x->hdr[i].msg_hdr.msg_iovlen = 1;
    x->hdr[i].msg_hdr.msg_name = &x->from[i];
    x->hdr[i].msg_hdr.msg_namelen = sizeof x->from[i];
  }
  *out = x;
  return 0;
fail:
  if (x->fd >= 0) close(x->fd);
  free(x);
  return e;
}

int orch__exitconn_fd(const orch__exitconn *x) {
  return x->fd;
}

unsigned long long orch__exitconn_events(const orch__exitconn *x) {
  return x->events;
}

/* Whether datagram i is the exit of one of our children, and which. The
 * filter kept only those; the checks here stand for it where a datagram
 * reached the socket before it was attached, and refuse anything not sent
 * by the kernel. */
static int exit_of(const orch__exitconn *x, int i, pid_t *pid) {
  const struct msghdr *h = &x->hdr[i].msg_hdr;
  if (x->hdr[i].msg_len < EXIT_LEN || (h->msg_flags & MSG_TRUNC)) return 0;
  if (h->msg_namelen < sizeof(struct sockaddr_nl) || x->from[i].nl_pid != 0) return 0;
  struct cn_msg cnb;
  struct proc_event evb;
  const struct cn_msg *cn = &cnb;
  const struct proc_event *ev = event_copy(x->buf[i], x->hdr[i].msg_len, &cnb, &evb);
  if (cn->id.idx != CN_IDX_PROC || cn->id.val != CN_VAL_PROC || ev->what != PROC_EVENT_EXIT) return 0;
  if (ev->event_data.exit.process_pid != ev->event_data.exit.process_tgid ||
      ev->event_data.exit.parent_tgid != x->owner)
    return 0;
  *pid = ev->event_data.exit.process_pid;
  return 1;
}

int orch__exitconn_next(orch__exitconn *x, pid_t *pid) {
  for (;;) {
    while (x->i < x->n)
      if (exit_of(x, x->i++, pid)) return 1;
    /* A read that did not fill the batch emptied the socket: the caller's
     * last call asks nothing new (a recvmmsg less an exit; what comes
     * later makes the fd readable again, and the next call reads). */
    if (x->n > 0 && x->n < BATCH) {
      x->i = x->n = 0;
      return 0;
    }
    for (int i = 0; i < BATCH; i++) {
      x->hdr[i].msg_hdr.msg_namelen = sizeof x->from[i];
      x->hdr[i].msg_hdr.msg_flags = 0;
    }
    int n;
    do n = recvmmsg(x->fd, x->hdr, BATCH, MSG_DONTWAIT, NULL); while (n < 0 && errno == EINTR);
    x->i = x->n = 0;
    if (n < 0) return errno == ENOBUFS ? -ENOBUFS : 0;
    x->n = n;
    x->events += (unsigned long long)n;
    if (n == 0) return 0;
  }
}

int orch__exitconn_fork(orch__exitconn **xp) {
  orch__exitconn *old = *xp, *x = NULL;
  int e = orch__exitconn_open(&x, old->rcvbuf);
  if (e == 0 && (e = orch__fd_renumber(&x->fd, &old->fd)) < 0) orch__exitconn_close(x);
  if (e == 0) x->events = old->events;
  /* The inherited socket is the parent's subscription: closed without
   * unsubscribing it. */
  old->owner = 0;
  orch__exitconn_close(old);
  *xp = e < 0 ? NULL : x;
  return e;
}
