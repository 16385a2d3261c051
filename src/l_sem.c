/*
 * l_sem.c: orch.sem.open / orch.sem.private and the orch.Sem class (SysV
 * semaphore sets).
 *
 * Ownership: an orch.Sem holds only the set's id; the kernel object lives
 * until :remove() (the GC and :close() never remove it).
 *
 * What may block: nothing on the loop thread. Every semop first runs with
 * IPC_NOWAIT there, retried for a few microseconds (ipc.h's spin); only a
 * wait that would still block becomes a waiter-pool job
 * (ipc.h) running semtimedop on a worker thread, with the timeout as its
 * deadline. A wait cancelled after it took the unit posts it back.
 * Opening a set another process is still initialising polls its sem_otime
 * for at most OTIME_WAIT_MS.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/sem.h>
#include <time.h>

#include "ipc.h"
#include "runtime.h"
#include "util.h"

#define SEM_MT "orch.Sem"
#define SEMVMX_ 32767        /* the kernel's maximum semaphore value */
#define OTIME_WAIT_MS 20
#define SEMOPM_MAX 500       /* operations per semop (the kernel's SEMOPM) */

typedef struct {
  int id;
  key_t key;
  int nsems;
  int undo;                  /* SEM_UNDO on wait, try and post */
  int closed;
  int removed;
} osem;

union semun_ {
  int val;
  struct semid_ds *buf;
  unsigned short *array;
};

static osem *check_sem(lua_State *L) {
  osem *s = luaL_checkudata(L, 1, SEM_MT);
  if (s->closed) orch__closed_error(L, SEM_MT);
  return s;
}

static unsigned short check_index(lua_State *L, osem *s, int idx) {
  lua_Integer i = luaL_optinteger(L, idx, 0);
  if (i < 0 || i >= s->nsems)
    luaL_argerror(L, idx, lua_pushfstring(L, "semaphore index %I out of range (0 to %d)",
                                          i, s->nsems - 1));
  return (unsigned short)i;
}

static short undo_flag(osem *s) { return s->undo ? SEM_UNDO : 0; }

static int semop_nowait(osem *s, unsigned short num, short op) {
  struct sembuf b = { num, op, (short)(IPC_NOWAIT | undo_flag(s)) };
  int r;
  do r = semop(s->id, &b, 1); while (r < 0 && errno == EINTR);
  return r < 0 ? errno : 0;
}

/* ------------------------------------------------------------ opening */

static const char *const open_opts[] = {
  "key", "n", "init", "mode", "create", "exclusive", "undo", NULL
};
static const char *const private_opts[] = { "n", "init", "mode", "undo", NULL };

/* [-0,+1] Reads n and init from the option table at 1: sets *np to n and
 * returns the n initial values, in a userdata left on the stack. */
static unsigned short *read_values(lua_State *L, int *np) {
  lua_Integer nopt = orch__opt_integer(L, 1, "n", 1);
  if (nopt < 1 || nopt > 32000) orch__opt_error(L, 1, "n", "out of range (1 to 32000)");
  int n = *np = (int)nopt;
  unsigned short *vals = lua_newuserdatauv(L, sizeof(unsigned short) * (size_t)n, 0);
  int t = lua_getfield(L, 1, "init");
  if (t == LUA_TNIL || t == LUA_TNUMBER) {
    lua_Integer v = orch__opt_integer(L, 1, "init", 1);
    if (v < 0 || v > SEMVMX_) orch__opt_error(L, 1, "init", "value out of range (0 to 32767)");
    for (int i = 0; i < n; i++) vals[i] = (unsigned short)v;
  } else if (t == LUA_TTABLE) {
    if (luaL_len(L, -1) != n)
      orch__opt_error(L, 1, "init", lua_pushfstring(L, "table of %d values expected", n));
    for (int i = 0; i < n; i++) {
      int isint;
      lua_geti(L, -1, i + 1);
      lua_Integer v = lua_tointegerx(L, -1, &isint);
      if (!isint || v < 0 || v > SEMVMX_)
        orch__opt_error(L, 1, "init", lua_pushfstring(L, "value %d out of range (0 to 32767)", i + 1));
      vals[i] = (unsigned short)v;
      lua_pop(L, 1);
    }
  } else {
    orch__opt_error(L, 1, "init", lua_pushfstring(L, "integer or table expected, got %s",
                                                  luaL_typename(L, -1)));
  }
  lua_pop(L, 1);
  return vals;
}

/* Sets the values of a set this call created, then marks it initialised
 * by touching sem_otime (a +1/-1 pair, atomic, so values do not change):
 * openers of an existing set wait for that mark. */
static int init_set(int id, unsigned short *vals) {
  union semun_ arg;
  arg.array = vals;
  if (semctl(id, 0, SETALL, arg) < 0) return errno;
  struct sembuf ops[2] = { {0, 1, 0}, {0, -1, 0} };
  if (semop(id, ops, 2) < 0) return errno;
  return 0;
}

static int stat_set(int id, struct semid_ds *ds) {
  union semun_ arg;
  arg.buf = ds;
  return semctl(id, 0, IPC_STAT, arg) < 0 ? errno : 0;
}

static osem *new_sem(lua_State *L) {
  osem *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  s->id = -1;
  s->closed = 1;
  luaL_setmetatable(L, SEM_MT);
  return s;
}

static int semset_open(lua_State *L) {
  orch__check_options(L, 1, open_opts);
  lua_settop(L, 1);
  key_t key = orch__ipc_optkey(L, 1);
  int n_given = lua_getfield(L, 1, "n") != LUA_TNIL;
  lua_pop(L, 1);
  int n;
  unsigned short *vals = read_values(L, &n);
  int mode = orch__ipc_optmode(L, 1);
  int create = orch__opt_boolean(L, 1, "create", 1);
  int exclusive = orch__opt_boolean(L, 1, "exclusive", 0);
  int undo = orch__opt_boolean(L, 1, "undo", 1);
  osem *s = new_sem(L);
  int id = -1, err;
  if (create) {
    id = semget(key, n, IPC_CREAT | IPC_EXCL | mode);
    if (id >= 0) {
      if ((err = init_set(id, vals)) != 0) {
        semctl(id, 0, IPC_RMID);
        return orch__fail(L, "sem.open", err);
      }
    } else if (errno != EEXIST || exclusive) {
      return orch__ipc_fail_open(L, "sem.open", "semaphore set", key, errno);
    }
  }
  struct semid_ds ds;
  if (id < 0) {
    id = semget(key, 0, 0);
    if (id < 0) return orch__ipc_fail_open(L, "sem.open", "semaphore set", key, errno);
    /* Its creator may still be setting the values. A set made by a program
     * that never operates on it keeps sem_otime at 0: use it after a while. */
    for (int i = 0; ; i++) {
      if ((err = stat_set(id, &ds)) != 0) return orch__fail(L, "sem.open", err);
      if (ds.sem_otime != 0 || i >= OTIME_WAIT_MS) break;
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
    if (n_given && (unsigned long)n > ds.sem_nsems) {
      char k[16];
      return orch__failf(L, "EINVAL", "sem.open: the set for key %s has %d semaphores, fewer than n",
                         orch__ipc_keystr(key, k), (int)ds.sem_nsems);
    }
  } else if ((err = stat_set(id, &ds)) != 0) {
    return orch__fail(L, "sem.open", err);
  }
  s->id = id;
  s->key = key;
  s->nsems = (int)ds.sem_nsems;
  s->undo = undo;
  s->closed = 0;
  return 1;
}

static int semset_private(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  }
  orch__check_options(L, 1, private_opts);
  lua_settop(L, 1);
  int n;
  unsigned short *vals = read_values(L, &n);
  int mode = orch__ipc_optmode(L, 1);
  int undo = orch__opt_boolean(L, 1, "undo", 1);
  osem *s = new_sem(L);
  int id = semget(IPC_PRIVATE, n, IPC_CREAT | mode), err;
  if (id < 0) return orch__fail(L, "sem.private", errno);
  if ((err = init_set(id, vals)) != 0) {
    semctl(id, 0, IPC_RMID);
    return orch__fail(L, "sem.private", err);
  }
  s->id = id;
  s->key = IPC_PRIVATE;
  s->nsems = n;
  s->undo = undo;
  s->closed = 0;
  return 1;
}

/* ------------------------------------------------------------ waiting */

/* Every wait (:wait, :wait_zero, :semop) is an array of sembufs in job->buf
 * (job->u.sem.nops of them) applied atomically by one semop. */
static int wait_run(orch__ipc_job *job) {
  struct sembuf *b = job->buf;
  int r;
  if (job->deadline < 0) {
    r = semop(job->id, b, job->u.sem.nops);
  } else {
    long long left = job->deadline - (long long)orch__mono_ns();
    if (left <= 0) return EAGAIN;
    struct timespec ts = { (time_t)(left / 1000000000), (long)(left % 1000000000) };
    r = semtimedop(job->id, b, job->u.sem.nops, &ts);
  }
  return r < 0 ? errno : 0;
}

static const char *const wait_ops[] = { "sem.wait", "sem.wait_zero", "sem.semop" };

static int wait_complete(lua_State *co, orch__ipc_job *job) {
  const char *op = wait_ops[job->u.sem.which];
  if (job->err == 0) {
    lua_pushboolean(co, 1);
    return 1;
  }
  if (job->err == EAGAIN) return orch__failf(co, "ETIMEDOUT", "%s: timed out", op);
  return orch__fail(co, op, job->err);
}

/* The task went away but the worker's semop went through: undo it (the
 * opposite of every non-zero operation, at once, without waiting; if that
 * would block, say because another process already took units it added,
 * the operations stay done). */
static void wait_abandon(orch__ipc_job *job) {
  struct sembuf *b = job->buf;
  unsigned n = 0;
  for (unsigned i = 0; i < job->u.sem.nops; i++) {
    if (b[i].sem_op == 0) continue;   /* a wait for zero changed nothing */
    b[n].sem_num = b[i].sem_num;
    b[n].sem_op = (short)-b[i].sem_op;
    b[n].sem_flg = (short)(IPC_NOWAIT | (b[i].sem_flg & SEM_UNDO));
    n++;
  }
  if (n) semop(job->id, b, n);
}

/* Runs the nops operations in ops (which may be a Lua-owned scratch
 * buffer) for task L: at once with IPC_NOWAIT on the loop thread, and only
 * if that would block (and the caller allows waiting) on a waiter thread
 * until timeout (< 0: none). which indexes wait_ops. */
static int run_ops(lua_State *L, osem *s, struct sembuf *ops, unsigned nops, double timeout,
                   int which, int nowait) {
  const char *op = wait_ops[which];
  int any_nowait = 0;
  for (unsigned k = 0; k < nops; k++) {
    any_nowait |= ops[k].sem_flg & IPC_NOWAIT;
    ops[k].sem_flg |= IPC_NOWAIT;
  }
  int r;
  unsigned long long spin = 0;
  for (;;) {
    do r = semop(s->id, ops, nops); while (r < 0 && errno == EINTR);
    if (r == 0 || errno != EAGAIN || any_nowait || nowait || timeout == 0) break;
    if (!spin) spin = orch__ipc_spin_start();
    if (!orch__ipc_spin_more(spin)) break;
  }
  orch__ipc_spin_done(spin, r == 0);
  if (r == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  int err = errno;
  if (err != EAGAIN) return orch__fail(L, op, err);
  if (any_nowait || nowait) return orch__failf(L, "EAGAIN", "%s: would block", op);
  if (timeout == 0) return orch__failf(L, "ETIMEDOUT", "%s: timed out", op);
  orch__ipc_job *job = orch__ipc_job_new(L, sizeof(struct sembuf) * nops);
  memcpy(job->buf, ops, sizeof(struct sembuf) * nops);
  struct sembuf *b = job->buf;
  for (unsigned k = 0; k < nops; k++) b[k].sem_flg &= (short)~IPC_NOWAIT;
  job->run = wait_run;
  job->complete = wait_complete;
  job->abandon = wait_abandon;
  job->id = s->id;
  job->u.sem.nops = nops;
  job->u.sem.which = which;
  if (timeout > 0) {
    double ns = timeout * 1e9;
    job->deadline = ns > 9e18 ? -1 : (long long)orch__mono_ns() + (long long)ns;
  }
  return orch__ipc_await(L, job, -1, op);
}

static int semset_wait(lua_State *L) {
  osem *s = check_sem(L);
  unsigned short i = check_index(L, s, 2);
  double timeout = orch__optseconds(L, 3, -1);
  orch__check_nargs(L, 3);
  orch__check_task(L, "sem.wait");
  struct sembuf b = { i, -1, undo_flag(s) };
  return run_ops(L, s, &b, 1, timeout, 0, 0);
}

/* sem:wait_zero([i [, timeout]]): waits until semaphore i is 0. */
static int semset_wait_zero(lua_State *L) {
  osem *s = check_sem(L);
  unsigned short i = check_index(L, s, 2);
  double timeout = orch__optseconds(L, 3, -1);
  orch__check_nargs(L, 3);
  if (timeout != 0) orch__check_task(L, "sem.wait_zero");
  struct sembuf b = { i, 0, 0 };
  return run_ops(L, s, &b, 1, timeout, 1, 0);
}

static const char *const semop_opts[] = { "timeout", "nowait", NULL };
/* The options of operation k (the table at t): messages name argument 1
 * of the method (the ops list), not the stack slot. */
static void op_check_keys(lua_State *L, int t, lua_Integer k) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) continue;
    const char *key = lua_tostring(L, -1);
    if (strcmp(key, "undo") != 0 && strcmp(key, "nowait") != 0)
      luaL_argerror(L, 2, lua_pushfstring(L, "operation %I: unknown option '%s'", k, key));
  }
}

static int op_flag(lua_State *L, int t, lua_Integer k, const char *key, int def) {
  int ty = lua_getfield(L, t, key);
  int v = ty == LUA_TNIL ? def : lua_toboolean(L, -1);
  if (ty != LUA_TNIL && ty != LUA_TBOOLEAN)
    luaL_argerror(L, 2, lua_pushfstring(L, "operation %I: option '%s': boolean expected, got %s",
                                        k, key, luaL_typename(L, -1)));
  lua_pop(L, 1);
  return v;
}

/* sem:semop(ops [, opts]): ops = { {i, op [, undo = b, nowait = b]}, ... },
 * all applied atomically (semop(2)). */
static int semset_semop(lua_State *L) {
  osem *s = check_sem(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  double timeout = -1;
  int nowait = 0;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    orch__check_options(L, 3, semop_opts);
    nowait = orch__opt_boolean(L, 3, "nowait", 0);
    if (lua_getfield(L, 3, "timeout") != LUA_TNIL) {
      timeout = orch__opt_number(L, 3, "timeout", -1);
      if (!(timeout >= 0) || timeout > 1e15)
        orch__opt_error(L, 3, "timeout", "seconds must be a finite number >= 0");
    }
    lua_pop(L, 1);
  }
  orch__check_nargs(L, 3);
  lua_Integer n = luaL_len(L, 2);
  if (n < 1 || n > SEMOPM_MAX)
    luaL_argerror(L, 2, lua_pushfstring(L, "1 to %d operations expected, got %I", SEMOPM_MAX, n));
  /* Scratch the GC owns: nothing leaks if a later check raises. */
  struct sembuf *ops = lua_newuserdatauv(L, sizeof(struct sembuf) * (size_t)n, 0);
  for (lua_Integer k = 1; k <= n; k++) {
    if (lua_geti(L, 2, k) != LUA_TTABLE)
      luaL_argerror(L, 2, lua_pushfstring(L, "operation %I: table {i, op} expected, got %s",
                                          k, luaL_typename(L, -1)));
    int t = lua_absindex(L, -1);
    op_check_keys(L, t, k);
    int isint;
    lua_geti(L, t, 1);
    lua_Integer i = lua_tointegerx(L, -1, &isint);
    if (!isint || i < 0 || i >= s->nsems)
      luaL_argerror(L, 2, lua_pushfstring(L, "operation %I: semaphore index out of range (0 to %d)",
                                          k, s->nsems - 1));
    lua_geti(L, t, 2);
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (!isint || v < -SEMVMX_ || v > SEMVMX_)
      luaL_argerror(L, 2, lua_pushfstring(L, "operation %I: op must be an integer from -32767 to 32767",
                                          k));
    lua_pop(L, 2);
    int undo = op_flag(L, t, k, "undo", s->undo);
    int nw = op_flag(L, t, k, "nowait", 0);
    lua_pop(L, 1);
    ops[k - 1].sem_num = (unsigned short)i;
    ops[k - 1].sem_op = (short)v;
    ops[k - 1].sem_flg = (short)((undo && v != 0 ? SEM_UNDO : 0) | (nw ? IPC_NOWAIT : 0));
  }
  if (!nowait && timeout != 0) orch__check_task(L, "sem.semop");
  return run_ops(L, s, ops, (unsigned)n, timeout, 2, nowait);
}

/* ------------------------------------------------------------ methods */

static int semset_post(lua_State *L) {
  osem *s = check_sem(L);
  unsigned short i = check_index(L, s, 2);
  int err = semop_nowait(s, i, 1);
  if (err) return orch__fail(L, "sem.post", err);
  lua_pushboolean(L, 1);
  return 1;
}

static int semset_try(lua_State *L) {
  osem *s = check_sem(L);
  unsigned short i = check_index(L, s, 2);
  int err = semop_nowait(s, i, -1);
  if (err && err != EAGAIN) return orch__fail(L, "sem.try", err);
  lua_pushboolean(L, err == 0);
  return 1;
}

static int semset_value(lua_State *L) {
  osem *s = check_sem(L);
  unsigned short i = check_index(L, s, 2);
  int v = semctl(s->id, i, GETVAL);
  if (v < 0) return orch__fail(L, "sem.value", errno);
  lua_pushinteger(L, v);
  return 1;
}

static int semset_set(lua_State *L) {
  osem *s = check_sem(L);
  unsigned short i = check_index(L, s, 2);
  lua_Integer v = luaL_checkinteger(L, 3);
  if (v < 0 || v > SEMVMX_) luaL_argerror(L, 3, "value out of range (0 to 32767)");
  union semun_ arg;
  arg.val = (int)v;
  if (semctl(s->id, i, SETVAL, arg) < 0) return orch__fail(L, "sem.set", errno);
  lua_pushboolean(L, 1);
  return 1;
}

static int semset_stat(lua_State *L) {
  osem *s = check_sem(L);
  struct semid_ds ds;
  int err = stat_set(s->id, &ds);
  if (err) return orch__fail(L, "sem.stat", err);
  orch__ipc_stat_table(L, s->id, &ds.sem_perm);
  orch__ipc_setint(L, "nsems", (lua_Integer)ds.sem_nsems);
  orch__ipc_setint(L, "otime", (lua_Integer)ds.sem_otime);
  orch__ipc_setint(L, "ctime", (lua_Integer)ds.sem_ctime);
  lua_createtable(L, (int)ds.sem_nsems, 0);
  for (int i = 0; i < (int)ds.sem_nsems; i++) {
    int v = semctl(s->id, i, GETVAL);
    if (v < 0) return orch__fail(L, "sem.stat", errno);
    lua_pushinteger(L, v);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "values");
  /* How many processes wait for a unit (ncnt) or for zero (zcnt). */
  static const struct { int cmd; const char *name; } counts[] = { {GETNCNT, "ncnt"}, {GETZCNT, "zcnt"} };
  for (int c = 0; c < 2; c++) {
    lua_createtable(L, (int)ds.sem_nsems, 0);
    for (int i = 0; i < (int)ds.sem_nsems; i++) {
      int v = semctl(s->id, i, counts[c].cmd);
      if (v < 0) return orch__fail(L, "sem.stat", errno);
      lua_pushinteger(L, v);
      lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, counts[c].name);
  }
  return 1;
}

static const char *const set_opts[] = { "uid", "gid", "mode", NULL };

/* sem:ipc_set{uid, gid, mode}: IPC_SET on the set. */
static int semset_ipc_set(lua_State *L) {
  osem *s = check_sem(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  orch__check_options(L, 2, set_opts);
  orch__ipc_perm_opts o;
  orch__ipc_optperm(L, 2, &o);
  orch__check_nargs(L, 2);
  struct semid_ds ds;
  int err = stat_set(s->id, &ds);
  if (err) return orch__fail(L, "sem.ipc_set", err);
  orch__ipc_applyperm(&o, &ds.sem_perm);
  union semun_ arg;
  arg.buf = &ds;
  if (semctl(s->id, 0, IPC_SET, arg) < 0) return orch__fail(L, "sem.ipc_set", errno);
  lua_pushboolean(L, 1);
  return 1;
}

static int semset_remove(lua_State *L) {
  osem *s = luaL_checkudata(L, 1, SEM_MT);
  if (!s->removed) {
    s = check_sem(L);
    if (semctl(s->id, 0, IPC_RMID) < 0) return orch__fail(L, "sem.remove", errno);
    s->removed = s->closed = 1;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int semset_close(lua_State *L) {
  osem *s = luaL_checkudata(L, 1, SEM_MT);
  s->closed = 1;
  return 0;
}

static int semset_tostring(lua_State *L) {
  osem *s = luaL_checkudata(L, 1, SEM_MT);
  char k[16];
  if (s->closed) lua_pushliteral(L, SEM_MT ": closed");
  else lua_pushfstring(L, SEM_MT ": id=%d key=%s n=%d", s->id, orch__ipc_keystr(s->key, k), s->nsems);
  return 1;
}

int orch__open_sem(lua_State *L) {
  static const luaL_Reg methods[] = {
    {"wait", semset_wait}, {"wait_zero", semset_wait_zero}, {"semop", semset_semop},
    {"ipc_set", semset_ipc_set}, {"post", semset_post}, {"try", semset_try}, {"value", semset_value},
    {"set", semset_set}, {"stat", semset_stat}, {"remove", semset_remove}, {"close", semset_close},
    {NULL, NULL}
  };
  static const luaL_Reg meta[] = {
    {"__close", semset_close}, {"__tostring", semset_tostring}, {NULL, NULL}
  };
  orch__newclass(L, SEM_MT, methods, meta);
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {{"open", semset_open}, {"private", semset_private}, {NULL, NULL}};
  lua_newtable(L);
  luaL_newlib(L, fns);
  lua_setfield(L, -2, "sem");
  return 1;
}
