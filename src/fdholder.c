/*
 * fdholder.c: `orch fdholder SOCKET ORCH_PID ORCH_START`, the fd holder. It
 * holds the read ends of a supervisor's log pipes so that its services
 * outlive a `kill -9` of orch (they would otherwise die of SIGPIPE at their
 * next write), and hands them to the next `orch run` of the same control
 * socket (like s6-fdholder or systemd's fd store). The supervisor starts it
 * (lua/orch/supervisor/holder.lua); see doc/supervisor.md, "If orch is
 * killed".
 *
 * It lives as long as the services do, so it is plain C entered from
 * main.c before any Lua state or libuv loop exists: a few private pages
 * instead of a second orch with a Lua heap (issue 14: memory per service).
 * It only receives descriptors, keeps them and gives them back; one
 * poll(2) loop over its socket, a signalfd and pidfds.
 *
 * Protocol: JSON datagrams on a unix datagram socket (mode 0600), every one
 * checked against the sender's credentials (SO_PASSCRED): only a process of
 * the holder's own effective uid is heard, and only its current orch (or,
 * once that orch is dead, a new one saying hello) may change what it holds.
 *   {op="hello", pid, start}    -> {op="held", n, entries=[{name,pid,start}]}
 *                                  (+ their fds, in parts of at most 200);
 *                                  {op="busy", pid} while another orch lives
 *   {op="put", entries=[...]}   + one fd per entry: hold them (by name)
 *   {op="drop", names=[...]}    close them
 *   {op="bye"}                  exit
 * Numbers are read as the supervisor's JSON reader reads them (an integral
 * number is an integer). The holder exits on "bye", TERM or INT, or once
 * its orch is gone and no service it holds a pipe for is alive any more.
 * Exit codes: 0 nothing left to hold, 1 failure (the socket), 2 usage.
 * When it ends so after its orch died, it removes the empty cgroups of
 * orch's tree (given as CGROUP, with the control socket's LOCK), unless an
 * orch holds the lock: nothing else would after a kill -9 of the last orch
 * of a socket.
 *
 * Ownership: every held descriptor and every pidfd belongs to its entry
 * (one malloc each, name inline) until dropped; a datagram's parse lives
 * until the datagram is handled. Nothing blocks but the poll.
 */
#include "fdholder.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "procfs.h"
#include "stream_int.h"

#define PART 200             /* descriptors per reply datagram (the kernel allows 253) */
#define MAX_PASS_FDS ORCH_MAX_PASS_FDS
#define TRIM_AT 4096         /* a datagram this large is followed by a malloc_trim */

static const char usage[] =
  "usage: orch fdholder SOCKET ORCH_PID ORCH_START [CGROUP LOCK]\n"
  "\n"
  "Holds the log pipes of the supervisor ORCH_PID (started at ORCH_START, in\n"
  "clock ticks) on the datagram socket SOCKET, and hands them over to the next\n"
  "orch of the same control socket after ORCH_PID died. With CGROUP (the\n"
  "directory of orch's cgroup tree) and LOCK (its control socket's lock file):\n"
  "when it exits after ORCH_PID died, nothing left to hold and no orch holding\n"
  "LOCK, it removes the empty cgroups of that tree. Started by the supervisor\n"
  "itself; see doc/supervisor.md, \"If orch is killed\".\n"
  "Exit codes: 0 nothing left to hold, 1 failure, 2 usage error.\n";

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "orch fdholder: %s\n", buf);
}

/* strerror, lower-cased as orch's error messages are. */
static const char *reason(int err) {
  static char msg[128];
  snprintf(msg, sizeof msg, "%s", strerror(err));
  if (msg[0] >= 'A' && msg[0] <= 'Z' && !(msg[1] >= 'A' && msg[1] <= 'Z')) msg[0] = (char)(msg[0] - 'A' + 'a');
  return msg;
}

/* ---------------------------------------------------------------- numbers */

/* A string Lua would convert to an integer (tonumber, then math.tointeger):
 * a decimal or hex integer, or an integral decimal number, with spaces
 * around. 1 and *out, or 0. */
static int str_integer(const char *s, size_t len, long long *out) {
  char buf[128];
  if (len == 0 || len >= sizeof buf || memchr(s, 0, len)) return 0;
  memcpy(buf, s, len);
  buf[len] = 0;
  char *p = buf, *end;
  while (*p && strchr(" \t\n\v\f\r", *p)) p++;
  int neg = *p == '-';
  const char *q = p + (neg || *p == '+');
  if (q[0] == '0' && (q[1] == 'x' || q[1] == 'X')) {
    errno = 0;
    unsigned long long u = strtoull(q + 2, &end, 16);
    if (end == q + 2 || errno) return 0;
    while (*end && strchr(" \t\n\v\f\r", *end)) end++;
    if (*end) return 0;
    *out = (long long)(neg ? 0 - u : u);   /* wraps around, as Lua's does */
    return 1;
  }
  if (strpbrk(p, "nN")) return 0;          /* no "inf" nor "nan" */
  errno = 0;
  double d = strtod(p, &end);
  if (end == p) return 0;
  while (*end && strchr(" \t\n\v\f\r", *end)) end++;
  if (*end) return 0;
  if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || d != floor(d)) return 0;
  /* Exact for integers past 2^53 too. */
  errno = 0;
  long long i = strtoll(p, &end, 10);
  while (*end && strchr(" \t\n\v\f\r", *end)) end++;
  *out = !errno && !*end ? i : (long long)d;
  return 1;
}

/* ---------------------------------------------------------------- JSON */

/* Datagrams are read and written with jansson (Debian's libjansson). */

/* An integral number as an integer (an integral real too, as the
 * supervisor's reader gives it). */
static int jint(const json_t *x, long long *out) {
  if (json_is_integer(x)) {
    *out = (long long)json_integer_value(x);
    return 1;
  }
  if (!json_is_real(x)) return 0;
  double d = json_real_value(x);
  if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || d != floor(d)) return 0;
  *out = (long long)d;
  return 1;
}

static int jis_str(const json_t *x, const char *s) {
  return json_is_string(x) && json_string_length(x) == strlen(s)
    && !memcmp(json_string_value(x), s, json_string_length(x));
}

/* ---------------------------------------------------------------- held pipes */

/* A process watch: a pidfd (>= 0), or one of these. */
#define W_NONE (-1)           /* not watched */
#define W_NEVER (-2)          /* no process can have this pid and start: never ends */
#define W_GONE (-3)           /* the process is gone */

typedef struct entry {
  struct entry *next;           /* hash chain */
  long long pid, start;
  int fd;                       /* the held pipe */
  int watch;                    /* pidfd of its service while watched, or W_* */
  size_t len;
  char name[];
} entry;

static entry **buckets;
static size_t nbuckets, nheld;

static size_t hash(const char *s, size_t len) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return (size_t)h;
}

static entry **find(const char *name, size_t len) {
  if (!nbuckets) return NULL;
  entry **pe = &buckets[hash(name, len) & (nbuckets - 1)];
  for (; *pe; pe = &(*pe)->next)
    if ((*pe)->len == len && !memcmp((*pe)->name, name, len)) return pe;
  return NULL;
}

static void unwatch(int *w) {
  if (*w >= 0) close(*w);
  *w = W_NONE;
}

static void entry_free(entry *e) {
  close(e->fd);
  unwatch(&e->watch);
  free(e);
}

static void drop(const char *name, size_t len) {
  entry **pe = find(name, len);
  if (!pe) return;
  entry *e = *pe;
  *pe = e->next;
  nheld--;
  entry_free(e);
}

/* Holds fd under name (replacing what was held so). 0, or -1 without
 * memory (fd is then the caller's still). */
static int hold(const char *name, size_t len, long long pid, long long start, int fd) {
  if (nheld + 1 > nbuckets) {
    size_t n = nbuckets ? nbuckets * 2 : 64;
    entry **b = calloc(n, sizeof *b);
    if (!b) return -1;
    for (size_t i = 0; i < nbuckets; i++)
      for (entry *e = buckets[i], *next; e; e = next) {
        next = e->next;
        size_t k = hash(e->name, e->len) & (n - 1);
        e->next = b[k];
        b[k] = e;
      }
    free(buckets);
    buckets = b;
    nbuckets = n;
  }
  entry *e = malloc(sizeof *e + len);
  if (!e) return -1;
  drop(name, len);
  memcpy(e->name, name, len);
  e->len = len;
  e->pid = pid;
  e->start = start;
  e->fd = fd;
  e->watch = -1;
  size_t k = hash(name, len) & (nbuckets - 1);
  e->next = buckets[k];
  buckets[k] = e;
  nheld++;
  return 0;
}

/* ---------------------------------------------------------------- processes */

/* Whether err says "no fd or memory now" (the holder at its fd limit):
 * a watch that failed so is tried again later, never taken for an end. */
static int transient(int err) { return err == EMFILE || err == ENFILE || err == ENOMEM; }

static int retry_watch;   /* a watch failed for want of fds: poll again in a while */

/* A pidfd on the process pid started at start (0: any start), readable
 * once it exits; W_GONE when it is gone already (or cannot be watched,
 * which counts as gone), W_NEVER when pid or start cannot name a process,
 * W_NONE when it could not be looked at for want of fds or memory (the
 * holder's fd limit: dropping its pipe then would kill a live service
 * with SIGPIPE; retry_watch is set). */
static int watch_process(long long pid, long long start) {
  if (pid <= 0 || pid > INT_MAX || start < 0) return W_NEVER;
  int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (fd < 0) {
    if (!transient(errno)) return W_GONE;
    retry_watch = 1;
    return W_NONE;
  }
  if (start) {
    unsigned long long t = 0;
    int r = orch__procfs_start_time((pid_t)pid, &t);
    if (r < 0 && transient(-r)) {
      close(fd);
      retry_watch = 1;
      return W_NONE;
    }
    if (r < 0 || t != (unsigned long long)start) {
      close(fd);
      return W_GONE;
    }
  }
  return fd;
}

/* Whether pid (started at start) is alive and not a zombie. */
static int alive(long long pid, long long start) {
  orch__procfs_stat st;
  return pid > 0 && pid <= INT_MAX && orch__procfs_read_stat((pid_t)pid, &st) == 0
      && (long long)st.start == start && st.state != 'Z';
}

/* Whether pid exists (a zombie too) and started at start. */
static int exists(long long pid, long long start) {
  orch__procfs_stat st;
  return pid > 0 && pid <= INT_MAX && orch__procfs_read_stat((pid_t)pid, &st) == 0
      && (long long)st.start == start;
}

/* ---------------------------------------------------------------- the holder */

static int sock = -1;
static uid_t uid;
static int finished;

static int serving;                     /* an orch is current */
static long long cur_pid, cur_start;
static int cur_watch = W_NONE;          /* its process (W_GONE once it ended) */
static int have_last;                   /* the orch served last, alive or not: */
static long long last_pid;              /* what it sent before it died counts */

static void drop_all(void) {
  for (size_t i = 0; i < nbuckets; i++)
    while (buckets[i]) {
      entry *e = buckets[i];
      buckets[i] = e->next;
      entry_free(e);
    }
  nheld = 0;
}

static void serve_orch(long long pid, long long start) {
  /* A new orch: the services are its to watch, not ours. */
  for (size_t i = 0; i < nbuckets; i++)
    for (entry *e = buckets[i]; e; e = e->next) unwatch(&e->watch);
  unwatch(&cur_watch);
  serving = 1;
  cur_pid = pid;
  cur_start = start;
  have_last = 1;
  last_pid = pid;
  cur_watch = watch_process(pid, start);
}

/* Without an orch, a pipe is worth holding only while its service lives:
 * watch every held service, and drop the pipes of those gone. */
static int said_unwatched;   /* the want of fds to watch with was said */

static void watch_services(void) {
  size_t unwatched = 0;
  for (size_t i = 0; i < nbuckets; i++) {
    entry **pe = &buckets[i];
    while (*pe) {
      entry *e = *pe;
      if (e->watch == W_NONE) e->watch = watch_process(e->pid, e->start);
      if (e->watch == W_NONE) unwatched++;
      if (e->watch == W_GONE) {
        *pe = e->next;
        nheld--;
        entry_free(e);
      } else {
        pe = &e->next;
      }
    }
  }
  if (unwatched && !said_unwatched)
    say("cannot watch %zu services for want of fds (the holder's fd limit): their pipes are kept, "
        "tried again each second", unwatched);
  said_unwatched = unwatched > 0;
}

static int by_name(const void *a, const void *b) {
  const entry *x = *(entry *const *)a, *y = *(entry *const *)b;
  int c = memcmp(x->name, y->name, x->len < y->len ? x->len : y->len);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* The name of a sender's address ("@name" or a path), for messages. */
static void addr_name(const struct sockaddr_un *sa, socklen_t salen, char *buf, size_t cap) {
  size_t off = offsetof(struct sockaddr_un, sun_path), n = salen > off ? salen - off : 0;
  if (n && sa->sun_path[0] == 0) snprintf(buf, cap, "@%.*s", (int)(n - 1), sa->sun_path + 1);
  else snprintf(buf, cap, "%.*s", (int)strnlen(sa->sun_path, n), sa->sun_path);
}

/* Sends v (released here) as one compact JSON datagram with fds. */
static int send_to(json_t *v, const struct sockaddr_un *to, socklen_t tolen, const int *fds, int nfds) {
  union { struct cmsghdr align; char buf[CMSG_SPACE(PART * sizeof(int))]; } cbuf;
  char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
  json_decref(v);
  if (!text) return -ENOMEM;
  struct iovec iov = { text, strlen(text) };
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_name = (void *)to;
  msg.msg_namelen = tolen;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds) {
    memset(cbuf.buf, 0, sizeof cbuf.buf);
    msg.msg_control = cbuf.buf;
    msg.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
  }
  ssize_t n;
  do n = sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
  int err = n < 0 ? errno : 0;
  free(text);
  return -err;
}

/* What it holds, to a new orch: names in order, in parts of PART. */
static void reply_held(const struct sockaddr_un *to, socklen_t tolen) {
  entry **all = malloc((nheld ? nheld : 1) * sizeof *all);
  if (!all) { say("cannot answer: %s", reason(ENOMEM)); return; }
  size_t n = 0;
  for (size_t i = 0; i < nbuckets; i++)
    for (entry *e = buckets[i]; e; e = e->next) all[n++] = e;
  qsort(all, n, sizeof *all, by_name);
  size_t i = 0;
  do {
    int fds[PART], nfds = 0;
    json_t *list = json_array();
    for (; i < n && nfds < PART; i++) {
      json_array_append_new(list, json_pack("{s:s%,s:I,s:I}", "name", all[i]->name, all[i]->len,
                                            "pid", (json_int_t)all[i]->pid, "start", (json_int_t)all[i]->start));
      fds[nfds++] = all[i]->fd;
    }
    /* An entry that could not be made (out of memory) fails the part. */
    json_t *v = list && json_array_size(list) == (size_t)nfds
      ? json_pack("{s:s,s:I,s:o}", "op", "held", "n", (json_int_t)n, "entries", list)
      : (json_decref(list), NULL);
    int r = send_to(v, to, tolen, fds, nfds);
    if (r < 0) {
      char name[sizeof to->sun_path + 2];
      addr_name(to, tolen, name, sizeof name);
      say("cannot answer %s: %s", name, reason(-r));
      break;
    }
  } while (i < n);
  free(all);
}

/* A number, or a string Lua would turn into one, as an integer
 * (math.tointeger). */
static int any_integer(const json_t *x, long long *out) {
  if (json_is_string(x)) return str_integer(json_string_value(x), json_string_length(x), out);
  return jint(x, out);
}

static void on_hello(const json_t *m, const struct ucred *cred,
                     const struct sockaddr_un *from, socklen_t fromlen) {
  long long pid, start;
  if (!any_integer(json_object_get(m, "pid"), &pid) || !any_integer(json_object_get(m, "start"), &start)) return;
  /* Only a process can say hello for itself. */
  if (pid != cred->pid || !exists(pid, start)) return;
  if (serving && (cur_pid != pid || cur_start != start) && alive(cur_pid, cur_start)) {
    if (fromlen > offsetof(struct sockaddr_un, sun_path)) {
      send_to(json_pack("{s:s,s:I}", "op", "busy", "pid", (json_int_t)cur_pid), from, fromlen, NULL, 0);
    }
    return;
  }
  if (fromlen <= offsetof(struct sockaddr_un, sun_path)) return;
  serve_orch(pid, start);
  reply_held(from, fromlen);
}

/* A put: each entry's pipe held under its name. A pipe that did not come
 * (the receive was cut short: MSG_CTRUNC, the holder at its fd limit) or
 * could not be kept (no memory) is not held, and orch believes it is (its
 * send succeeded): said on stderr, orch's own, with the names, so that a
 * service the next orch restarts instead of adopting after a kill -9 of
 * this one ("its log pipe had not reached the fd holder") has its cause
 * on record. */
static void on_put(const json_t *m, int *fds, int nfds, int ctrunc) {
  const json_t *list = json_object_get(m, "entries"), *e;
  size_t i, lost = 0, nomem = 0;
  char names[256];
  size_t used = 0;
  names[0] = 0;
  if (!json_is_array(list)) return;
  json_array_foreach(list, i, e) {
    if (!json_is_object(e)) continue;
    const json_t *name = json_object_get(e, "name");
    long long pid, start;
    if (!json_is_string(name) || !jint(json_object_get(e, "pid"), &pid)
        || !jint(json_object_get(e, "start"), &start)) continue;
    int got = i < (size_t)nfds && fds[i] >= 0;
    if (got && hold(json_string_value(name), json_string_length(name), pid, start, fds[i]) == 0) {
      fds[i] = -1;
      continue;
    }
    if (got) nomem++;
    lost++;
    if (used + 3 < sizeof names) {
      int w = snprintf(names + used, sizeof names - used, "%s%.*s", used ? ", " : "",
                       (int)json_string_length(name), json_string_value(name));
      used = w < 0 ? sizeof names : used + (size_t)w;
      if (used >= sizeof names) memcpy(names + sizeof names - 4, "...", 4);
    }
  }
  if (lost)
    say("put: %zu of %zu pipes not held (%s): %s", lost, json_array_size(list),
        nomem == lost ? reason(ENOMEM)
        : ctrunc ? "their descriptors were cut from the datagram: the holder's fd limit"
        : "fewer descriptors than entries came", names);
}

static void on_drop(const json_t *m) {
  const json_t *list = json_object_get(m, "names"), *x;
  size_t i;
  if (!json_is_array(list)) return;
  json_array_foreach(list, i, x)
    if (json_is_string(x)) drop(json_string_value(x), json_string_length(x));
}

/* One datagram: 1, or 0 when none is waiting, -1 on a socket error. */
static int receive(char **buf, size_t *cap) {
  ssize_t size;
  do size = recv(sock, NULL, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT); while (size < 0 && errno == EINTR);
  if (size < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    say("recv: %s", reason(errno));
    return -1;
  }
  size_t want = size ? (size_t)size : 1;
  if (want > *cap) {
    char *b = realloc(*buf, want);
    if (!b) { say("recv: %s", reason(ENOMEM)); return -1; }
    *buf = b;
    *cap = want;
  }
  struct sockaddr_un from;
  socklen_t fromlen = 0;
  struct ucred cred;
  int have_cred, fds[MAX_PASS_FDS], nfds, ctrunc = 0;
  ssize_t n = orch__dgram_recv(sock, *buf, want, &from, &fromlen, &cred, &have_cred, fds, MAX_PASS_FDS, &nfds, &ctrunc);
  if (n < 0) {
    if (n == -EAGAIN || n == -EWOULDBLOCK) return 0;
    say("recv: %s", reason((int)-n));
    return -1;
  }
  /* Only a process of our own uid is heard; only the orch served last (or
   * anyone's hello, which checks more) changes anything. */
  if (have_cred && cred.uid == uid) {
    json_t *m = json_loadb(*buf, (size_t)n < want ? (size_t)n : want, 0, NULL);
    const json_t *op = json_object_get(m, "op");
    int hello = jis_str(op, "hello");
    if (hello) on_hello(m, &cred, &from, fromlen);
    else if (have_last && cred.pid == last_pid) {
      if (jis_str(op, "put")) on_put(m, fds, nfds, ctrunc);
      else if (jis_str(op, "drop")) on_drop(m);
      else if (jis_str(op, "bye")) {
        serving = 0;
        drop_all();
        finished = 1;
      }
    }
    json_decref(m);
    /* The parse's many small nodes (a put of 200 entries: about 60 KiB)
     * were freed between the entries kept: give the whole free pages back,
     * or the heap stays at the size of the largest parse; so too after a
     * hello's reply (the JSON of up to 200 entries a part). Not after a
     * small datagram (a restart's put of one pipe: under a KiB of nodes,
     * reused by the next): its trim was three madvise calls and the page
     * faults that made those pages again, a third of the holder's CPU in
     * every restart, while the new process execs. */
    if (hello || (size_t)n > TRIM_AT) malloc_trim(0);
  }
  /* Whatever came and was not taken is closed now. */
  for (int i = 0; i < nfds; i++)
    if (fds[i] >= 0) close(fds[i]);
  return 1;
}

/* ---------------------------------------------------------------- the tree */

#define CGROUP2_MAGIC 0x63677270   /* CGROUP2_SUPER_MAGIC */

/* The cgroup `name` below dfd and the empty cgroups below it, deepest
 * first: rmdir fails (EBUSY) for one with a process in it or below it, which
 * stays. Never follows a symbolic link (cgroupfs has none). */
static void remove_empty(int dfd, const char *name, int depth) {
  int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  DIR *d = depth < 32 ? fdopendir(fd) : NULL;
  if (!d) {
    close(fd);
  } else {
    struct dirent *e;
    while ((e = readdir(d)))
      if (e->d_type == DT_DIR && e->d_name[0] != '.') remove_empty(dirfd(d), e->d_name, depth + 1);
    closedir(d);
  }
  unlinkat(dfd, name, AT_REMOVEDIR);
}

/* After its orch died and the last service it held a pipe for ended: the
 * cgroups orch's tree still has, emptied, would stay forever if no orch of
 * the socket ever runs again. Only while no orch holds the control
 * socket's lock (a new one sweeps the tree itself), holding it meanwhile,
 * and only in a cgroup v2 file system. */
static void sweep_tree(const char *tree, const char *lock) {
  if (!tree || !lock) return;
  int lk = open(lock, O_RDWR | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
  if (lk < 0) return;
  if (flock(lk, LOCK_EX | LOCK_NB) == 0) {
    struct statfs fs;
    if (statfs(tree, &fs) == 0 && fs.f_type == CGROUP2_MAGIC) remove_empty(AT_FDCWD, tree, 0);
  }
  close(lk);
}

int orch__fdholder_main(const char *path, const char *pid_arg, const char *start_arg,
                        const char *tree, const char *lock) {
  long long orch_pid, orch_start;
  if (!*path || !str_integer(pid_arg, strlen(pid_arg), &orch_pid)
      || !str_integer(start_arg, strlen(start_arg), &orch_start) || orch_pid <= 0 || orch_pid > INT_MAX) {
    fputs(usage, stderr);
    return 2;
  }
  /* A put's parse (about 60 KiB for 200 entries) comes and goes with its
   * datagram: from mmap, so that it does not stay in the heap. */
  mallopt(M_MMAP_THRESHOLD, 16 * 1024);
  uid = geteuid();
  size_t len = strlen(path);
  struct sockaddr_un sa;
  socklen_t salen = 0;
  dev_t dev = 0;
  ino_t ino = 0;
  int r = len == 1 && path[0] == '@' ? -EINVAL : orch__sun_make(path, len, &sa, &salen);
  if (r == 0) {
    sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (sock < 0 || setsockopt(sock, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) r = -errno;
    else r = orch__sun_bind(sock, &sa, salen, 0600, SOCK_DGRAM, &dev, &ino);
  }
  if (r < 0) {
    say("dgram: %s", reason(-r));
    return 1;
  }
  char *own = path[0] == '@' ? NULL : strdup(path);
  pid_t me = getpid();

  /* TERM (orch's end, when the bye may not have been read) and INT end it
   * like a bye: its socket file goes too. */
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigprocmask(SIG_BLOCK, &sigs, NULL);
  int sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) {
    say("signalfd: %s", reason(errno));
    orch__sun_unlink(&own, dev, ino, me);
    return 1;
  }

  if (exists(orch_pid, orch_start)) serve_orch(orch_pid, orch_start);
  char *buf = NULL;
  size_t cap = 0;
  struct pollfd *pfd = NULL;
  entry **pent = NULL;
  size_t pcap = 0;
  /* Its orch died, and nothing is left to hold: the end that sweeps the
   * tree (not a bye, a signal or a failure). */
  int orphaned = 0;
  while (!finished) {
    if (!serving && nheld == 0) {
      orphaned = 1;
      break;
    }
    if (serving && cur_watch == W_NONE) cur_watch = watch_process(cur_pid, cur_start);
    /* The socket, the signals, the orch and (without an orch) the services. */
    if (pcap < nheld + 3) {
      size_t n = (nheld + 3) * 2;
      struct pollfd *p = realloc(pfd, n * sizeof *p);
      if (p) pfd = p;
      entry **q = realloc(pent, n * sizeof *q);
      if (q) pent = q;
      if (!p || !q) { say("poll: %s", reason(ENOMEM)); break; }
      pcap = n;
    }
    size_t np = 0;
    pfd[np++] = (struct pollfd){ .fd = sock, .events = POLLIN };
    pfd[np++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
    pfd[np++] = (struct pollfd){ .fd = serving && cur_watch >= 0 ? cur_watch : -1, .events = POLLIN };
    for (size_t i = 0; i < nbuckets; i++)
      for (entry *e = buckets[i]; e; e = e->next)
        if (e->watch >= 0) {
          pent[np] = e;
          pfd[np++] = (struct pollfd){ .fd = e->watch, .events = POLLIN };
        }
    /* A watch that failed for want of fds is tried again each second. */
    int k, wait_ms = serving && cur_watch == W_GONE ? 0 : retry_watch ? 1000 : -1;
    retry_watch = 0;
    do k = poll(pfd, (nfds_t)np, wait_ms); while (k < 0 && errno == EINTR);
    if (k < 0) {
      say("poll: %s", reason(errno));
      break;
    }
    if (pfd[1].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {}
      serving = 0;
      break;
    }
    /* What ended is marked first: the datagrams may drop entries, and a
     * hello from a new orch takes the services over. */
    if (pfd[2].revents) unwatch(&cur_watch), cur_watch = W_GONE;
    for (size_t i = 3; i < np; i++)
      if (pfd[i].revents) unwatch(&pent[i]->watch), pent[i]->watch = W_GONE;
    /* Datagrams first: what the orch sent before it died still counts. */
    if (pfd[0].revents) {
      int got = 0;
      while (!finished && (got = receive(&buf, &cap)) > 0) {}
      if (!finished && got < 0) break;
    }
    if (serving && cur_watch == W_GONE) serving = 0;
    if (!serving && !finished) watch_services();
  }
  free(pfd);
  free(pent);
  free(buf);
  drop_all();
  free(buckets);
  unwatch(&cur_watch);
  close(sfd);
  close(sock);
  orch__sun_unlink(&own, dev, ino, me);
  if (orphaned) sweep_tree(tree, lock);
  return 0;
}
