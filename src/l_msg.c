/*
 * l_msg.c: orch.msg.open / orch.msg.private and the orch.Msg class (SysV
 * message queues).
 *
 * Ownership: an orch.Msg holds only the queue's id; the kernel object lives
 * until :remove() (the GC and :close() never remove it).
 *
 * What may block: nothing on the loop thread. msgsnd/msgrcv first run with
 * IPC_NOWAIT there, retried for a few microseconds (ipc.h's spin: in a
 * request/reply exchange the answer usually comes by then, and a hop to a
 * waiter thread costs more); only a call that would still block becomes a job
 * (ipc.h) on a worker thread. msgrcv has no timeout: timeouts and
 * cancellation interrupt the worker with a signal. A receive cancelled
 * after the worker took a message puts the message back with msgsnd: it
 * lands at the end of the queue (order is not preserved), or, when the
 * queue is full, is re-sent by a background job. A send cancelled after the
 * worker's msgsnd succeeded stays sent.
 *
 * msgsz in msgsnd/msgrcv counts the message text only, never the long type
 * that precedes it in the buffer.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/msg.h>

#include "ipc.h"
#include "runtime.h"
#include "util.h"

#define MSG_MT "orch.Msg"
#define DEFAULT_MAX_CAP (1024 * 1024)

typedef struct {
  int id;
  key_t key;
  int closed;
  int removed;
} omsg;

/* The default receive buffer: the system's msgmax (capped). */
static size_t default_max = 8192;

static omsg *check_msg(lua_State *L) {
  omsg *q = luaL_checkudata(L, 1, MSG_MT);
  if (q->closed) orch__closed_error(L, MSG_MT);
  return q;
}

static omsg *new_msg(lua_State *L) {
  omsg *q = lua_newuserdatauv(L, sizeof *q, 0);
  memset(q, 0, sizeof *q);
  q->id = -1;
  q->closed = 1;
  luaL_setmetatable(L, MSG_MT);
  return q;
}

/* ------------------------------------------------------------ opening */

static const char *const open_opts[] = { "key", "create", "exclusive", "mode", NULL };
static const char *const private_opts[] = { "mode", NULL };

static int msgq_open(lua_State *L) {
  orch__check_options(L, 1, open_opts);
  lua_settop(L, 1);
  key_t key = orch__ipc_optkey(L, 1);
  int create = orch__opt_boolean(L, 1, "create", 0);
  int exclusive = orch__opt_boolean(L, 1, "exclusive", 0);
  int mode = orch__ipc_optmode(L, 1);
  omsg *q = new_msg(L);
  int flags = create ? IPC_CREAT | mode | (exclusive ? IPC_EXCL : 0) : 0;
  int id = msgget(key, flags);
  if (id < 0) return orch__ipc_fail_open(L, "msg.open", "queue", key, errno);
  q->id = id;
  q->key = key;
  q->closed = 0;
  return 1;
}

static int msgq_private(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  orch__check_options(L, 1, private_opts);
  lua_settop(L, 1);
  int mode = orch__ipc_optmode(L, 1);
  omsg *q = new_msg(L);
  int id = msgget(IPC_PRIVATE, IPC_CREAT | mode);
  if (id < 0) return orch__fail(L, "msg.private", errno);
  q->id = id;
  q->key = IPC_PRIVATE;
  q->closed = 0;
  return 1;
}

/* The option `timeout` of the table at idx (seconds), or -1 when absent. */
static double opt_timeout(lua_State *L, int idx) {
  int absent = lua_getfield(L, idx, "timeout") == LUA_TNIL;
  lua_pop(L, 1);
  if (absent) return -1;
  double t = orch__opt_number(L, idx, "timeout", -1);
  if (!(t >= 0) || t > 1e15) orch__opt_error(L, idx, "timeout", "seconds must be a finite number >= 0");
  return t;
}

/* ------------------------------------------------------------ send */

static int send_run(orch__ipc_job *job) {
  return msgsnd(job->id, job->buf, job->u.msg.len, 0) < 0 ? errno : 0;
}

static int send_complete(lua_State *co, orch__ipc_job *job) {
  if (job->err) return orch__fail(co, "msg.send", job->err);
  lua_pushboolean(co, 1);
  return 1;
}

static const char *const send_opts[] = { "nowait", "timeout", NULL };

static int msgq_send(lua_State *L) {
  omsg *q = check_msg(L);
  lua_Integer type = luaL_checkinteger(L, 2);
  size_t len;
  const char *data = luaL_checklstring(L, 3, &len);
  int nowait = 0;
  double timeout = -1;
  if (!lua_isnoneornil(L, 4)) {
    orch__check_options(L, 4, send_opts);
    nowait = orch__opt_boolean(L, 4, "nowait", 0);
    timeout = opt_timeout(L, 4);
  }
  orch__check_nargs(L, 4);
  if (type < 1) luaL_argerror(L, 2, "message type must be >= 1");
  if (!nowait) orch__check_task(L, "msg.send");
  if (len > SIZE_MAX - sizeof(long)) luaL_argerror(L, 3, "message too long");

  luaL_Buffer b;
  char *buf = luaL_buffinitsize(L, &b, sizeof(long) + len);
  long t = (long)type;
  memcpy(buf, &t, sizeof t);
  memcpy(buf + sizeof(long), data, len);
  int r;
  unsigned long long spin = 0;
  for (;;) {
    do r = msgsnd(q->id, buf, len, IPC_NOWAIT); while (r < 0 && errno == EINTR);
    if (r == 0 || errno != EAGAIN || nowait || timeout == 0) break;
    if (!spin) spin = orch__ipc_spin_start();
    if (!orch__ipc_spin_more(spin)) break;
  }
  orch__ipc_spin_done(spin, r == 0);
  if (r == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (errno != EAGAIN || nowait) return orch__fail(L, "msg.send", errno);
  if (timeout == 0) return orch__failf(L, "ETIMEDOUT", "msg.send: timed out");
  orch__ipc_job *job = orch__ipc_job_new(L, sizeof(long) + len);
  memcpy(job->buf, buf, sizeof(long) + len);
  job->run = send_run;
  job->complete = send_complete;
  job->id = q->id;
  job->u.msg.len = len;
  return orch__ipc_await(L, job, timeout, "msg.send");
}

/* ------------------------------------------------------------ recv */

static int recv_run(orch__ipc_job *job) {
  ssize_t n = msgrcv(job->id, job->buf, job->u.msg.cap, job->u.msg.type, 0);
  if (n < 0) return errno;
  job->u.msg.len = (size_t)n;
  return 0;
}

static int recv_fail(lua_State *L, int err, size_t max) {
  if (err == E2BIG)
    return orch__failf(L, "E2BIG", "msg.recv: message longer than max (%I bytes)", (lua_Integer)max);
  if (err == ENOMSG) return orch__failf(L, "ENOMSG", "msg.recv: no message");
  return orch__fail(L, "msg.recv", err);
}

/* Pushes the type and text of the message in buf (len bytes of text). */
static int push_msg(lua_State *L, const char *buf, size_t len) {
  long t;
  memcpy(&t, buf, sizeof t);
  lua_pushinteger(L, (lua_Integer)t);
  lua_pushlstring(L, buf + sizeof(long), len);
  return 2;
}

static int recv_complete(lua_State *co, orch__ipc_job *job) {
  if (job->err) return recv_fail(co, job->err, job->u.msg.cap);
  return push_msg(co, job->buf, job->u.msg.len);
}

/* A cancelled receive took a message: put it back in the queue. */
static void recv_abandon(orch__ipc_job *job) {
  size_t len = job->u.msg.len;
  if (msgsnd(job->id, job->buf, len, IPC_NOWAIT) == 0 || errno != EAGAIN) return;
  orch__ipc_job *again = orch__ipc_job_alloc(sizeof(long) + len);
  if (!again) return;
  memcpy(again->buf, job->buf, sizeof(long) + len);
  again->run = send_run;
  again->id = job->id;
  again->u.msg.len = len;
  orch__ipc_background(job, again);
}

static const char *const recv_opts[] = { "type", "timeout", "max", "nowait", NULL };

static int msgq_recv(lua_State *L) {
  omsg *q = check_msg(L);
  lua_Integer type = 0, max = (lua_Integer)default_max;
  double timeout = -1;
  int nowait = 0;
  if (!lua_isnoneornil(L, 2)) {
    orch__check_options(L, 2, recv_opts);
    type = orch__opt_integer(L, 2, "type", 0);
    max = orch__opt_integer(L, 2, "max", max);
    nowait = orch__opt_boolean(L, 2, "nowait", 0);
    timeout = opt_timeout(L, 2);
    if (max < 0 || max > INT32_MAX) orch__opt_error(L, 2, "max", "out of range (0 to 2^31-1)");
  }
  orch__check_nargs(L, 2);
  if (!nowait) orch__check_task(L, "msg.recv");

  size_t cap = (size_t)max;
  luaL_Buffer b;
  char *buf = luaL_buffinitsize(L, &b, sizeof(long) + cap);
  ssize_t n;
  unsigned long long spin = 0;
  for (;;) {
    do n = msgrcv(q->id, buf, cap, (long)type, IPC_NOWAIT); while (n < 0 && errno == EINTR);
    if (n >= 0 || errno != ENOMSG || nowait || timeout == 0) break;
    if (!spin) spin = orch__ipc_spin_start();
    if (!orch__ipc_spin_more(spin)) break;
  }
  orch__ipc_spin_done(spin, n >= 0);
  if (n >= 0) return push_msg(L, buf, (size_t)n);
  if (errno != ENOMSG || nowait) return recv_fail(L, errno, cap);
  if (timeout == 0) return orch__failf(L, "ETIMEDOUT", "msg.recv: timed out");
  orch__ipc_job *job = orch__ipc_job_new(L, sizeof(long) + cap);
  job->run = recv_run;
  job->complete = recv_complete;
  job->abandon = recv_abandon;
  job->id = q->id;
  job->u.msg.type = (long)type;
  job->u.msg.cap = cap;
  return orch__ipc_await(L, job, timeout, "msg.recv");
}

/* ------------------------------------------------------------ methods */

static int msgq_stat(lua_State *L) {
  omsg *q = check_msg(L);
  struct msqid_ds ds;
  if (msgctl(q->id, IPC_STAT, &ds) < 0) return orch__fail(L, "msg.stat", errno);
  orch__ipc_stat_table(L, q->id, &ds.msg_perm);
  orch__ipc_setint(L, "qnum", (lua_Integer)ds.msg_qnum);
  orch__ipc_setint(L, "qbytes", (lua_Integer)ds.msg_qbytes);
  orch__ipc_setint(L, "cbytes", (lua_Integer)ds.__msg_cbytes);
  orch__ipc_setint(L, "lspid", (lua_Integer)ds.msg_lspid);
  orch__ipc_setint(L, "lrpid", (lua_Integer)ds.msg_lrpid);
  orch__ipc_setint(L, "stime", (lua_Integer)ds.msg_stime);
  orch__ipc_setint(L, "rtime", (lua_Integer)ds.msg_rtime);
  orch__ipc_setint(L, "ctime", (lua_Integer)ds.msg_ctime);
  return 1;
}

static const char *const set_opts[] = { "uid", "gid", "mode", "qbytes", NULL };

/* q:ipc_set{uid, gid, mode, qbytes}: IPC_SET on the queue. Raising qbytes
 * above /proc/sys/kernel/msgmnb takes CAP_SYS_RESOURCE (else EPERM). */
static int msgq_ipc_set(lua_State *L) {
  omsg *q = check_msg(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  orch__check_options(L, 2, set_opts);
  orch__ipc_perm_opts o;
  orch__ipc_optperm(L, 2, &o);
  int has_qbytes = lua_getfield(L, 2, "qbytes") != LUA_TNIL;
  lua_pop(L, 1);
  lua_Integer qbytes = orch__opt_integer(L, 2, "qbytes", 0);
  if (has_qbytes && (qbytes < 1 || qbytes > INT32_MAX))
    orch__opt_error(L, 2, "qbytes", "out of range (1 to 2^31-1)");
  orch__check_nargs(L, 2);
  struct msqid_ds ds;
  if (msgctl(q->id, IPC_STAT, &ds) < 0) return orch__fail(L, "msg.ipc_set", errno);
  orch__ipc_applyperm(&o, &ds.msg_perm);
  if (has_qbytes) ds.msg_qbytes = (msglen_t)qbytes;
  if (msgctl(q->id, IPC_SET, &ds) < 0) return orch__fail(L, "msg.ipc_set", errno);
  lua_pushboolean(L, 1);
  return 1;
}

static int msgq_remove(lua_State *L) {
  omsg *q = luaL_checkudata(L, 1, MSG_MT);
  if (!q->removed) {
    q = check_msg(L);
    if (msgctl(q->id, IPC_RMID, NULL) < 0) return orch__fail(L, "msg.remove", errno);
    q->removed = q->closed = 1;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int msgq_close(lua_State *L) {
  omsg *q = luaL_checkudata(L, 1, MSG_MT);
  q->closed = 1;
  return 0;
}

static int msgq_tostring(lua_State *L) {
  omsg *q = luaL_checkudata(L, 1, MSG_MT);
  char k[16];
  if (q->closed) lua_pushliteral(L, MSG_MT ": closed");
  else lua_pushfstring(L, MSG_MT ": id=%d key=%s", q->id, orch__ipc_keystr(q->key, k));
  return 1;
}

static void read_msgmax(void) {
  FILE *f = fopen("/proc/sys/kernel/msgmax", "re");
  if (!f) return;
  long long v;
  if (fscanf(f, "%lld", &v) == 1 && v > 0)
    default_max = v > DEFAULT_MAX_CAP ? DEFAULT_MAX_CAP : (size_t)v;
  fclose(f);
}

int orch__open_msg(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"send", msgq_send}, {"recv", msgq_recv}, {"stat", msgq_stat}, {"ipc_set", msgq_ipc_set},
    {"remove", msgq_remove}, {"close", msgq_close}, {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__close", msgq_close}, {"__tostring", msgq_tostring}, {NULL, NULL}
  };
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, read_msgmax);
  orch__newclass(L, MSG_MT, methods, meta);
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"open", msgq_open}, {"private", msgq_private}, {NULL, NULL}};
  lua_newtable(L);
  luaL_newlib(L, fns);
  lua_setfield(L, -2, "msg");
  return 1;
}
