/*
 * fdholder.c: `orch fdholder SOCKET ORCH_PID ORCH_START`, the fd holder. It
 * holds the read ends of a supervisor's log pipes so that its services
 * outlive a `kill -9` of orch (they would otherwise die of SIGPIPE at their
 * next write), and hands them to the next `orch run` of the same control
 * socket (like s6-fdholder or systemd's fd store). The supervisor starts it
 * (lua/orch/supervisor/persist.lua); see doc/supervisor.md, "If orch is
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
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "procfs.h"
#include "stream_int.h"

#define PART 200             /* descriptors per reply datagram (the kernel allows 253) */
#define MAX_PASS_FDS 253     /* the kernel's SCM_MAX_FD */
#define MAX_DEPTH 64         /* nesting the supervisor's JSON reader accepts */

static const char usage[] =
  "usage: orch fdholder SOCKET ORCH_PID ORCH_START\n"
  "\n"
  "Holds the log pipes of the supervisor ORCH_PID (started at ORCH_START, in\n"
  "clock ticks) on the datagram socket SOCKET, and hands them over to the next\n"
  "orch of the same control socket after ORCH_PID died. Started by the\n"
  "supervisor itself; see doc/supervisor.md, \"If orch is killed\".\n"
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

/* A parsed datagram: nodes in one array (children by index), decoded
 * strings in one buffer (by offset). */
enum { J_NULL, J_FALSE, J_TRUE, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct {
  unsigned char type;
  int first, next;              /* first child (arrays, objects), next sibling; -1 */
  size_t key, klen;             /* a member's key in the string buffer */
  size_t str, slen;             /* a string's bytes in the string buffer */
  double num;
} jnode;

typedef struct {
  const char *p, *end;
  jnode *v;
  int n, cap;
  char *sb;
  size_t sn, scap;
  int depth;
} jparse;

static void jfree(jparse *J) {
  free(J->v);
  free(J->sb);
  memset(J, 0, sizeof *J);
}

static int jnew(jparse *J, int type) {
  if (J->n == J->cap) {
    int cap = J->cap ? J->cap * 2 : 64;
    jnode *v = realloc(J->v, (size_t)cap * sizeof *v);
    if (!v) return -1;
    J->v = v;
    J->cap = cap;
  }
  jnode *x = &J->v[J->n];
  memset(x, 0, sizeof *x);
  x->type = (unsigned char)type;
  x->first = x->next = -1;
  return J->n++;
}

static int jputc(jparse *J, unsigned c) {
  if (J->sn == J->scap) {
    size_t cap = J->scap ? J->scap * 2 : 256;
    char *b = realloc(J->sb, cap);
    if (!b) return -1;
    J->sb = b;
    J->scap = cap;
  }
  J->sb[J->sn++] = (char)c;
  return 0;
}

static void jws(jparse *J) {
  while (J->p < J->end && (*J->p == ' ' || *J->p == '\t' || *J->p == '\n' || *J->p == '\r')) J->p++;
}

static int hex4(const char *p, const char *end, unsigned *out) {
  if (end - p < 4) return -1;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

/* A string at J->p (its opening quote) into the string buffer. */
static int jstring(jparse *J, size_t *off, size_t *len) {
  J->p++;
  *off = J->sn;
  for (;;) {
    if (J->p >= J->end) return -1;
    unsigned char c = (unsigned char)*J->p++;
    if (c == '"') break;
    if (c == 0) return -1;
    if (c != '\\') {
      if (jputc(J, c) < 0) return -1;
      continue;
    }
    if (J->p >= J->end) return -1;
    c = (unsigned char)*J->p++;
    const char *esc = strchr("\"\\/bfnrt", c);
    if (c && esc) {
      if (jputc(J, (unsigned char)"\"\\/\b\f\n\r\t"[esc - "\"\\/bfnrt"]) < 0) return -1;
      continue;
    }
    unsigned cp, lo;
    if (c != 'u' || hex4(J->p, J->end, &cp) < 0) return -1;
    J->p += 4;
    if (cp >= 0xDC00 && cp <= 0xDFFF) return -1;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (J->end - J->p < 6 || J->p[0] != '\\' || J->p[1] != 'u' || hex4(J->p + 2, J->end, &lo) < 0
          || lo < 0xDC00 || lo > 0xDFFF) return -1;
      J->p += 6;
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    int r = 0;
    if (cp < 0x80) r = jputc(J, cp);
    else if (cp < 0x800) r = jputc(J, 0xC0 | (cp >> 6)) | jputc(J, 0x80 | (cp & 0x3F));
    else if (cp < 0x10000)
      r = jputc(J, 0xE0 | (cp >> 12)) | jputc(J, 0x80 | ((cp >> 6) & 0x3F)) | jputc(J, 0x80 | (cp & 0x3F));
    else
      r = jputc(J, 0xF0 | (cp >> 18)) | jputc(J, 0x80 | ((cp >> 12) & 0x3F))
        | jputc(J, 0x80 | ((cp >> 6) & 0x3F)) | jputc(J, 0x80 | (cp & 0x3F));
    if (r < 0) return -1;
  }
  *len = J->sn - *off;
  return 0;
}

static int jvalue(jparse *J);

/* The members or elements of an object or array at J->p. */
static int jcontainer(jparse *J, int obj) {
  if (++J->depth > MAX_DEPTH) return -1;
  int self = jnew(J, obj ? J_OBJ : J_ARR), last = -1;
  if (self < 0) return -1;
  char close = obj ? '}' : ']';
  J->p++;
  jws(J);
  if (J->p < J->end && *J->p == close) {
    J->p++;
    J->depth--;
    return self;
  }
  for (;;) {
    size_t key = 0, klen = 0;
    if (obj) {
      if (J->p >= J->end || *J->p != '"' || jstring(J, &key, &klen) < 0) return -1;
      jws(J);
      if (J->p >= J->end || *J->p != ':') return -1;
      J->p++;
    }
    int c = jvalue(J);
    if (c < 0) return -1;
    J->v[c].key = key;
    J->v[c].klen = klen;
    if (last < 0) J->v[self].first = c; else J->v[last].next = c;
    last = c;
    jws(J);
    if (J->p >= J->end) return -1;
    if (*J->p == ',') { J->p++; jws(J); continue; }
    if (*J->p != close) return -1;
    J->p++;
    J->depth--;
    return self;
  }
}

static int jvalue(jparse *J) {
  jws(J);
  if (J->p >= J->end) return -1;
  const char *p = J->p;
  size_t left = (size_t)(J->end - p);
  switch (*p) {
  case '{': return jcontainer(J, 1);
  case '[': return jcontainer(J, 0);
  case '"': {
    int x = jnew(J, J_STR);
    if (x < 0) return -1;
    size_t off, len;
    if (jstring(J, &off, &len) < 0) return -1;
    J->v[x].str = off;
    J->v[x].slen = len;
    return x;
  }
  case 't': if (left >= 4 && !memcmp(p, "true", 4)) { J->p += 4; return jnew(J, J_TRUE); } return -1;
  case 'f': if (left >= 5 && !memcmp(p, "false", 5)) { J->p += 5; return jnew(J, J_FALSE); } return -1;
  case 'n': if (left >= 4 && !memcmp(p, "null", 4)) { J->p += 4; return jnew(J, J_NULL); } return -1;
  default: break;
  }
  /* A number: -?digits(.digits)?([eE][+-]?digits)? */
  const char *q = p;
  if (q < J->end && *q == '-') q++;
  const char *d0 = q;
  while (q < J->end && *q >= '0' && *q <= '9') q++;
  if (q == d0) return -1;
  if (q < J->end && *q == '.') {
    const char *f0 = ++q;
    while (q < J->end && *q >= '0' && *q <= '9') q++;
    if (q == f0) return -1;
  }
  if (q < J->end && (*q == 'e' || *q == 'E')) {
    q++;
    if (q < J->end && (*q == '+' || *q == '-')) q++;
    const char *e0 = q;
    while (q < J->end && *q >= '0' && *q <= '9') q++;
    if (q == e0) return -1;
  }
  char buf[64];
  if ((size_t)(q - p) >= sizeof buf) return -1;
  memcpy(buf, p, (size_t)(q - p));
  buf[q - p] = 0;
  int x = jnew(J, J_NUM);
  if (x < 0) return -1;
  J->v[x].num = strtod(buf, NULL);
  J->p = q;
  return x;
}

/* Parses a whole datagram; the root's index, or -1. */
static int jparse_all(jparse *J, const char *text, size_t len) {
  J->p = text;
  J->end = text + len;
  int root = jvalue(J);
  if (root < 0) return -1;
  jws(J);
  return J->p == J->end ? root : -1;
}

/* An object's member (the last of that name, as a Lua table keeps it), or -1. */
static int jget(const jparse *J, int obj, const char *key) {
  if (obj < 0 || J->v[obj].type != J_OBJ) return -1;
  size_t klen = strlen(key);
  int found = -1;
  for (int c = J->v[obj].first; c >= 0; c = J->v[c].next)
    if (J->v[c].klen == klen && !memcmp(J->sb + J->v[c].key, key, klen)) found = c;
  return found;
}

/* An integral number as an integer. */
static int jint(const jparse *J, int x, long long *out) {
  if (x < 0 || J->v[x].type != J_NUM) return 0;
  double d = J->v[x].num;
  if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || d != floor(d)) return 0;
  *out = (long long)d;
  return 1;
}

static int jis_str(const jparse *J, int x, const char *s) {
  return x >= 0 && J->v[x].type == J_STR && J->v[x].slen == strlen(s) && !memcmp(J->sb + J->v[x].str, s, J->v[x].slen);
}

/* ---------------------------------------------------------------- output */

typedef struct { char *b; size_t n, cap; int oom; } obuf;

static void oput(obuf *o, const char *s, size_t len) {
  if (o->oom) return;
  if (o->n + len + 1 > o->cap) {
    size_t cap = o->cap ? o->cap : 1024;
    while (cap < o->n + len + 1) cap *= 2;
    char *b = realloc(o->b, cap);
    if (!b) { o->oom = 1; return; }
    o->b = b;
    o->cap = cap;
  }
  memcpy(o->b + o->n, s, len);
  o->n += len;
}

static void oputs(obuf *o, const char *s) { oput(o, s, strlen(s)); }

static void oint(obuf *o, long long v) {
  char buf[32];
  oput(o, buf, (size_t)snprintf(buf, sizeof buf, "%lld", v));
}

/* Length of the valid UTF-8 sequence at s (strict: no overlong forms, no
 * surrogates, nothing past U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t left) {
  unsigned c = s[0];
  size_t n;
  unsigned cp, min;
  if (c < 0x80) return 1;
  if (c >= 0xC0 && c < 0xE0) { n = 2; cp = c & 0x1F; min = 0x80; }
  else if (c >= 0xE0 && c < 0xF0) { n = 3; cp = c & 0x0F; min = 0x800; }
  else if (c >= 0xF0 && c < 0xF8) { n = 4; cp = c & 0x07; min = 0x10000; }
  else return 0;
  if (left < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

/* A JSON string; a byte that starts no valid UTF-8 sequence becomes
 * U+FFFD, as orch's JSON writer does. */
static void ostr(obuf *o, const char *s, size_t len) {
  oputs(o, "\"");
  for (size_t i = 0; i < len;) {
    unsigned char c = (unsigned char)s[i];
    size_t n = utf8_seq((const unsigned char *)s + i, len - i);
    if (n == 0) { oputs(o, "\xEF\xBF\xBD"); i++; continue; }
    if (n > 1) { oput(o, s + i, n); i += n; continue; }
    i++;
    if (c == '"') oputs(o, "\\\"");
    else if (c == '\\') oputs(o, "\\\\");
    else if (c == '\n') oputs(o, "\\n");
    else if (c == '\t') oputs(o, "\\t");
    else if (c == '\r') oputs(o, "\\r");
    else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      oput(o, buf, (size_t)snprintf(buf, sizeof buf, "\\u%04x", c));
    } else oput(o, (const char *)&c, 1);
  }
  oputs(o, "\"");
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

/* A pidfd on the process pid started at start (0: any start), readable
 * once it exits; W_GONE when it is gone already (or cannot be watched,
 * which counts as gone), W_NEVER when pid or start cannot name a process. */
static int watch_process(long long pid, long long start) {
  if (pid <= 0 || pid > INT_MAX || start < 0) return W_NEVER;
  int fd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (fd < 0) return W_GONE;
  if (start) {
    unsigned long long t = 0;
    if (orch__procfs_start_time((pid_t)pid, &t) < 0 || t != (unsigned long long)start) {
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
static void watch_services(void) {
  for (size_t i = 0; i < nbuckets; i++) {
    entry **pe = &buckets[i];
    while (*pe) {
      entry *e = *pe;
      if (e->watch == W_NONE) e->watch = watch_process(e->pid, e->start);
      if (e->watch == W_GONE) {
        *pe = e->next;
        nheld--;
        entry_free(e);
      } else {
        pe = &e->next;
      }
    }
  }
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

static int send_to(const obuf *o, const struct sockaddr_un *to, socklen_t tolen, const int *fds, int nfds) {
  union { struct cmsghdr align; char buf[CMSG_SPACE(PART * sizeof(int))]; } cbuf;
  struct iovec iov = { o->b, o->n };
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
  return n < 0 ? -errno : 0;
}

/* What it holds, to a new orch: names in order, in parts of PART. */
static void reply_held(const struct sockaddr_un *to, socklen_t tolen) {
  entry **all = malloc((nheld ? nheld : 1) * sizeof *all);
  if (!all) { say("cannot answer: %s", reason(ENOMEM)); return; }
  size_t n = 0;
  for (size_t i = 0; i < nbuckets; i++)
    for (entry *e = buckets[i]; e; e = e->next) all[n++] = e;
  qsort(all, n, sizeof *all, by_name);
  obuf o = { 0 };
  size_t i = 0;
  do {
    int fds[PART], nfds = 0;
    o.n = 0;
    oputs(&o, "{\"op\":\"held\",\"n\":");
    oint(&o, (long long)n);
    oputs(&o, ",\"entries\":[");
    for (; i < n && nfds < PART; i++) {
      if (nfds) oputs(&o, ",");
      oputs(&o, "{\"name\":");
      ostr(&o, all[i]->name, all[i]->len);
      oputs(&o, ",\"pid\":");
      oint(&o, all[i]->pid);
      oputs(&o, ",\"start\":");
      oint(&o, all[i]->start);
      oputs(&o, "}");
      fds[nfds++] = all[i]->fd;
    }
    oputs(&o, "]}");
    int r = o.oom ? -ENOMEM : send_to(&o, to, tolen, fds, nfds);
    if (r < 0) {
      char name[sizeof to->sun_path + 2];
      addr_name(to, tolen, name, sizeof name);
      say("cannot answer %s: %s", name, reason(-r));
      break;
    }
  } while (i < n);
  free(o.b);
  free(all);
}

/* A number, or a string Lua would turn into one, as an integer
 * (math.tointeger). */
static int any_integer(const jparse *J, int x, long long *out) {
  if (x >= 0 && J->v[x].type == J_STR) return str_integer(J->sb + J->v[x].str, J->v[x].slen, out);
  return jint(J, x, out);
}

static void on_hello(const jparse *J, int m, const struct ucred *cred,
                     const struct sockaddr_un *from, socklen_t fromlen) {
  long long pid, start;
  if (!any_integer(J, jget(J, m, "pid"), &pid) || !any_integer(J, jget(J, m, "start"), &start)) return;
  /* Only a process can say hello for itself. */
  if (pid != cred->pid || !exists(pid, start)) return;
  if (serving && (cur_pid != pid || cur_start != start) && alive(cur_pid, cur_start)) {
    if (fromlen > offsetof(struct sockaddr_un, sun_path)) {
      obuf o = { 0 };
      oputs(&o, "{\"op\":\"busy\",\"pid\":");
      oint(&o, cur_pid);
      oputs(&o, "}");
      if (!o.oom) send_to(&o, from, fromlen, NULL, 0);
      free(o.b);
    }
    return;
  }
  if (fromlen <= offsetof(struct sockaddr_un, sun_path)) return;
  serve_orch(pid, start);
  reply_held(from, fromlen);
}

static void on_put(const jparse *J, int m, int *fds, int nfds) {
  int list = jget(J, m, "entries");
  if (list < 0 || J->v[list].type != J_ARR) return;
  int i = 0;
  for (int e = J->v[list].first; e >= 0; e = J->v[e].next, i++) {
    if (i >= nfds || fds[i] < 0 || J->v[e].type != J_OBJ) continue;
    int name = jget(J, e, "name");
    long long pid, start;
    if (name < 0 || J->v[name].type != J_STR || !jint(J, jget(J, e, "pid"), &pid)
        || !jint(J, jget(J, e, "start"), &start)) continue;
    if (hold(J->sb + J->v[name].str, J->v[name].slen, pid, start, fds[i]) < 0) {
      say("put: %s", reason(ENOMEM));
      continue;
    }
    fds[i] = -1;
  }
}

static void on_drop(const jparse *J, int m) {
  int list = jget(J, m, "names");
  if (list < 0 || J->v[list].type != J_ARR) return;
  for (int x = J->v[list].first; x >= 0; x = J->v[x].next)
    if (J->v[x].type == J_STR) drop(J->sb + J->v[x].str, J->v[x].slen);
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
  union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(MAX_PASS_FDS * sizeof(int))]; } cbuf;
  struct iovec iov = { *buf, want };
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  memset(&from, 0, sizeof from);
  msg.msg_name = &from;
  msg.msg_namelen = sizeof from;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf.buf;
  msg.msg_controllen = sizeof cbuf.buf;
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    say("recv: %s", reason(errno));
    return -1;
  }
  struct ucred cred;
  int have_cred = 0, fds[MAX_PASS_FDS], nfds = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof cred)) {
      memcpy(&cred, CMSG_DATA(c), sizeof cred);
      have_cred = 1;
    } else if (c->cmsg_type == SCM_RIGHTS) {
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k; i++) {
        int fd;
        memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        if (nfds < MAX_PASS_FDS) fds[nfds++] = fd; else close(fd);
      }
    }
  }
  /* Only a process of our own uid is heard; only the orch served last (or
   * anyone's hello, which checks more) changes anything. */
  if (have_cred && cred.uid == uid) {
    jparse J = { 0 };
    int m = jparse_all(&J, *buf, (size_t)n < want ? (size_t)n : want);
    int op = jget(&J, m, "op");
    if (jis_str(&J, op, "hello")) on_hello(&J, m, &cred, &from, msg.msg_namelen);
    else if (have_last && cred.pid == last_pid) {
      if (jis_str(&J, op, "put")) on_put(&J, m, fds, nfds);
      else if (jis_str(&J, op, "drop")) on_drop(&J, m);
      else if (jis_str(&J, op, "bye")) {
        serving = 0;
        drop_all();
        finished = 1;
      }
    }
    jfree(&J);
  }
  /* Whatever came and was not taken is closed now. */
  for (int i = 0; i < nfds; i++)
    if (fds[i] >= 0) close(fds[i]);
  return 1;
}

int orch__fdholder_main(const char *path, const char *pid_arg, const char *start_arg) {
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
  while (!finished && !(!serving && nheld == 0)) {
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
    int k;
    do k = poll(pfd, (nfds_t)np, serving && cur_watch == W_GONE ? 0 : -1); while (k < 0 && errno == EINTR);
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
  return 0;
}
