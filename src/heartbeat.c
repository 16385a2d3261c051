/*
 * heartbeat.c: liborch_heartbeat, the heartbeat table in a SysV segment
 * (include/orch_heartbeat.h, doc/heartbeat.md).
 *
 * Ownership: an orch_hb_table handle is malloc'd by orch_hb_open and owns one
 * attachment (shmdt in orch_hb_close). Slots are owned by whoever won the CAS
 * on their owner word; nothing else is ever locked, so a process may die at
 * any instruction and the worst it leaves is a slot with a dead pid, which
 * the next claimer or the watchdog reclaims.
 *
 * Blocking: none, except the bounded waits of orch_hb_attach (the caller's
 * choice) and of orch_hb_open when it meets a segment its creator has not
 * initialised yet (at most a second). /proc reads are used to tell a live
 * owner from a dead one or from a new process that reused its pid.
 *
 * No libuv, no Lua: this file is also the whole client library.
 */
#include "orch_heartbeat.h"
#include "procfs.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <time.h>
#include <unistd.h>

/* The layout is a protocol between processes (and the Lua binding and the
 * watchdog): pin every offset the documentation promises. */
_Static_assert(sizeof(orch_hb_header) == ORCH_HB_HEADER_SIZE, "header size");
_Static_assert(offsetof(orch_hb_header, changes) == 20, "header.changes");
_Static_assert(sizeof(orch_hb_entry) == ORCH_HB_SLOT_SIZE, "slot size");
_Static_assert(offsetof(orch_hb_entry, owner) == 0, "slot.owner");
_Static_assert(offsetof(orch_hb_entry, pid) == 0, "slot.pid");
_Static_assert(offsetof(orch_hb_entry, generation) == 4, "slot.generation");
_Static_assert(offsetof(orch_hb_entry, last_beat) == 8, "slot.last_beat");
_Static_assert(offsetof(orch_hb_entry, start_time) == 16, "slot.start_time");
_Static_assert(offsetof(orch_hb_entry, uid) == 24, "slot.uid");
_Static_assert(offsetof(orch_hb_entry, timeout_ms) == 28, "slot.timeout_ms");
_Static_assert(offsetof(orch_hb_entry, flags) == 32, "slot.flags");
_Static_assert(offsetof(orch_hb_entry, registered) == 40, "slot.registered");
_Static_assert(offsetof(orch_hb_entry, name) == 64, "slot.name");
_Static_assert(sizeof(orch_hbc_entry) == ORCH_HBC_SLOT_SIZE, "classic slot size");
_Static_assert(offsetof(orch_hbc_entry, pname) == 4, "classic pname");
_Static_assert(offsetof(orch_hbc_entry, timeout) == 56, "classic timeout");
_Static_assert(offsetof(orch_hbc_entry, atime) == 64, "classic atime");

/* Enough for 2^20 slots (128 MiB); more is a mistake, not a table. */
#define MAX_SLOTS (1u << 20)
#define READ_TRIES 64
#define INIT_WAIT_MS 1000

struct orch_hb_table {
  key_t    key;
  int      shmid;
  char    *base;
  size_t   size;
  uint32_t nslots;
  uint32_t stride;     /* native: slot_size from the header */
  uint32_t first;      /* native: header_size */
  int      compat;
  int      rdonly;
};

/* ---- Owner word ------------------------------------------------------ */

/* The pid and generation share one 64-bit word; composing it through the
 * struct keeps "pid at offset 0" true on either endianness. */
static uint64_t owner_pack(int32_t pid, uint32_t gen) {
  orch_hb_entry e;
  e.pid = pid;
  e.generation = gen;
  return e.owner;
}

static int32_t owner_pid(uint64_t w) {
  orch_hb_entry e;
  e.owner = w;
  return e.pid;
}

static uint32_t owner_gen(uint64_t w) {
  orch_hb_entry e;
  e.owner = w;
  return e.generation;
}

static uint64_t load_owner(const orch_hb_entry *e) {
  return __atomic_load_n(&e->owner, __ATOMIC_ACQUIRE);
}

static int cas_owner(orch_hb_entry *e, uint64_t expect, uint64_t want) {
  return __atomic_compare_exchange_n(&e->owner, &expect, want, 0,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static void sleep_ms(int ms) {
  struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

uint64_t orch_hb_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- /proc ------------------------------------------------------------ */

/* /proc is read by procfs.c, the one parser of /proc/PID/stat (shared with
 * the bindings), linked into this library too. */
int orch_hb_proc_stat(pid_t pid, uint64_t *start_time, char *state, uint32_t *uid) {
  orch__procfs_stat st;
  int r = orch__procfs_read_stat(pid, &st);
  if (r < 0) return r;
  if (start_time) *start_time = st.start;
  if (state) *state = st.state;
  if (uid) return orch__procfs_uid(pid, uid);
  return 0;
}

/* Whether kill(pid, 0) finds the pid (EPERM: it exists, owned by another
 * user). Never called with pid <= 0, which would address a group. */
static int pid_exists(pid_t pid) {
  return kill(pid, 0) == 0 || errno != ESRCH;
}

int orch_hb_alive(pid_t pid, uint64_t start_time) {
  if (pid <= 0) return 0;
  if (!pid_exists(pid)) return 0;
  uint64_t st;
  char state;
  int r = orch_hb_proc_stat(pid, &st, &state, NULL);
  if (r == -ESRCH) {
    /* Gone between the two checks, or hidden from us (hidepid): only a
     * second kill() can tell, and when in doubt the owner is alive. */
    return pid_exists(pid);
  }
  if (r < 0) return 1;
  if (state == 'Z' || state == 'X') return 0;
  if (start_time && st != start_time) return 0;
  return 1;
}

/* ---- Opening ---------------------------------------------------------- */

static int env_key(key_t *key) {
  const char *s = getenv(ORCH_HB_ENV_KEY);
  if (!s || !*s) return 0;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 0);
  if (errno || *end || v <= 0 || v > INT_MAX) return -EINVAL;
  *key = (key_t)v;
  return 1;
}

static orch_hb_entry *slot_at(const orch_hb_table *t, uint32_t i) {
  return (orch_hb_entry *)(t->base + t->first + (size_t)i * t->stride);
}

static orch_hbc_entry *cslot_at(const orch_hb_table *t, uint32_t i) {
  return (orch_hbc_entry *)(t->base + (size_t)i * ORCH_HBC_SLOT_SIZE);
}

static void init_header(orch_hb_table *t, size_t size) {
  orch_hb_header *h = (orch_hb_header *)t->base;
  uint32_t n = (uint32_t)((size - ORCH_HB_HEADER_SIZE) / ORCH_HB_SLOT_SIZE);
  /* Racing initialisers store identical values; magic goes last. */
  __atomic_store_n(&h->version, ORCH_HB_VERSION, __ATOMIC_RELAXED);
  __atomic_store_n(&h->slot_count, n, __ATOMIC_RELAXED);
  __atomic_store_n(&h->slot_size, ORCH_HB_SLOT_SIZE, __ATOMIC_RELAXED);
  __atomic_store_n(&h->header_size, ORCH_HB_HEADER_SIZE, __ATOMIC_RELAXED);
  uint32_t zero = 0;
  __atomic_compare_exchange_n(&h->magic, &zero, ORCH_HB_MAGIC, 0,
                              __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

static int all_zero(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (__atomic_load_n(p + i, __ATOMIC_RELAXED)) return 0;
  return 1;
}

static int attach_native(orch_hb_table *t, int created) {
  orch_hb_header *h = (orch_hb_header *)t->base;
  if (t->size < ORCH_HB_HEADER_SIZE) return -EPROTO;
  uint32_t magic = __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE);
  if (magic == 0 && created && !t->rdonly) {
    init_header(t, t->size);
  } else if (magic == 0) {
    /* Created by someone else a moment ago: its creator is between shmget
     * and its first store. Should the creator have died right there, an
     * all-zero segment of the native size is still safe to initialise. */
    for (int waited = 0; waited < INIT_WAIT_MS && magic == 0; waited++) {
      sleep_ms(1);
      magic = __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE);
    }
    if (magic == 0) {
      /* An empty classic table has a size that fits the native formula too
       * (72000 = 64 + 562 * 128): never convert the classic key. */
      if ((t->size - ORCH_HB_HEADER_SIZE) % ORCH_HB_SLOT_SIZE || t->key == ORCH_HB_COMPAT_KEY ||
          !all_zero(t->base, t->size))
        return -EPROTO;
      if (t->rdonly) {
        t->first = ORCH_HB_HEADER_SIZE;
        t->stride = ORCH_HB_SLOT_SIZE;
        t->nslots = (uint32_t)((t->size - ORCH_HB_HEADER_SIZE) / ORCH_HB_SLOT_SIZE);
        return 0;
      }
      init_header(t, t->size);
    }
  }
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != ORCH_HB_MAGIC) return -EPROTO;
  uint32_t version = __atomic_load_n(&h->version, __ATOMIC_RELAXED);
  uint32_t count = __atomic_load_n(&h->slot_count, __ATOMIC_RELAXED);
  uint32_t stride = __atomic_load_n(&h->slot_size, __ATOMIC_RELAXED);
  uint32_t first = __atomic_load_n(&h->header_size, __ATOMIC_RELAXED);
  /* Later versions may grow the header or the slots (by whole cache lines)
   * but never move a field. */
  if (version != ORCH_HB_VERSION || stride < ORCH_HB_SLOT_SIZE || stride % 64 ||
      first < ORCH_HB_HEADER_SIZE || first % 64 || count > MAX_SLOTS ||
      (uint64_t)first + (uint64_t)count * stride > t->size)
    return -EPROTO;
  t->nslots = count;
  t->stride = stride;
  t->first = first;
  return 0;
}

static int attach_compat(orch_hb_table *t) {
  if (t->size < ORCH_HBC_SLOT_SIZE) return -EPROTO;
  /* A native table opened as classic would be read as garbage. */
  if (__atomic_load_n((const uint32_t *)t->base, __ATOMIC_RELAXED) == ORCH_HB_MAGIC)
    return -EPROTO;
  size_t n = t->size / ORCH_HBC_SLOT_SIZE;
  t->nslots = n > MAX_SLOTS ? MAX_SLOTS : (uint32_t)n;
  return 0;
}

/* Whether a segment someone else may have created can be trusted: its
 * owner and creator are us or root (a user cannot give a segment away to
 * root, and only its creator or root can change its owner or mode), and
 * nobody else may write it unless the caller accepts a shared table. */
static int check_trust(const struct shmid_ds *ds, int flags) {
  uid_t me = geteuid();
  if ((ds->shm_perm.uid != me && ds->shm_perm.uid != 0) ||
      (ds->shm_perm.cuid != me && ds->shm_perm.cuid != 0))
    return -EPERM;
  if (!(flags & ORCH_HB_SHARED) && (ds->shm_perm.mode & 022)) return -EACCES;
  return 0;
}

static int resolve_key(key_t *key, int compat) {
  if (*key != ORCH_HB_KEY_DEFAULT) return 0;
  *key = compat ? ORCH_HB_COMPAT_KEY : ORCH_HB_DEFAULT_KEY;
  if (compat) return 0;
  int r = env_key(key);
  return r < 0 ? r : 0;
}

int orch_hb_owner(key_t key, int flags, uint32_t *uid, uint32_t *cuid, uint32_t *mode) {
  int r = resolve_key(&key, (flags & ORCH_HB_COMPAT) != 0);
  if (r < 0) return r;
  int shmid = shmget(key, 0, 0);
  if (shmid < 0) return -errno;
  struct shmid_ds ds;
  if (shmctl(shmid, IPC_STAT, &ds) < 0) return -errno;
  if (uid) *uid = (uint32_t)ds.shm_perm.uid;
  if (cuid) *cuid = (uint32_t)ds.shm_perm.cuid;
  if (mode) *mode = (uint32_t)(ds.shm_perm.mode & 0777);
  return 0;
}

int orch_hb_open_slots(key_t key, int flags, int mode, uint32_t slots,
                       orch_hb_table **tablep) {
  if (!tablep) return -EINVAL;
  *tablep = NULL;
  if (flags & ~(ORCH_HB_CREATE | ORCH_HB_EXCL | ORCH_HB_COMPAT | ORCH_HB_RDONLY | ORCH_HB_SHARED))
    return -EINVAL;
  if (mode == 0) mode = 0600;
  if (mode & ~0777) return -EINVAL;
  if (slots > MAX_SLOTS) return -EINVAL;
  int compat = (flags & ORCH_HB_COMPAT) != 0;
  int kr = resolve_key(&key, compat);
  if (kr < 0) return kr;
  if (slots == 0) slots = compat ? ORCH_HBC_DEFAULT_SLOTS : ORCH_HB_DEFAULT_SLOTS;
  size_t want = compat ? (size_t)slots * ORCH_HBC_SLOT_SIZE
                       : ORCH_HB_HEADER_SIZE + (size_t)slots * ORCH_HB_SLOT_SIZE;

  int shmid, created = 0;
  if (key == IPC_PRIVATE) {
    shmid = shmget(IPC_PRIVATE, want, IPC_CREAT | mode);
    created = 1;
  } else if (flags & ORCH_HB_CREATE) {
    shmid = shmget(key, want, IPC_CREAT | IPC_EXCL | mode);
    if (shmid >= 0) created = 1;
    else if (errno == EEXIST && !(flags & ORCH_HB_EXCL)) shmid = shmget(key, 0, 0);
  } else {
    shmid = shmget(key, 0, 0);
  }
  if (shmid < 0) return -errno;

  struct shmid_ds ds;
  if (shmctl(shmid, IPC_STAT, &ds) < 0) return -errno;
  if (!created) {
    int tr = check_trust(&ds, flags);
    if (tr < 0) return tr;
  }
  orch_hb_table *t = calloc(1, sizeof *t);
  if (!t) return -ENOMEM;
  t->key = key;
  t->shmid = shmid;
  t->size = ds.shm_segsz;
  t->compat = compat;
  t->rdonly = (flags & ORCH_HB_RDONLY) != 0;
  void *base = shmat(shmid, NULL, t->rdonly ? SHM_RDONLY : 0);
  if (base == (void *)-1) {
    int err = errno;
    free(t);
    return -err;
  }
  t->base = base;
  int r = compat ? attach_compat(t) : attach_native(t, created);
  if (r < 0) {
    shmdt(t->base);
    free(t);
    return r;
  }
  *tablep = t;
  return 0;
}

int orch_hb_open(key_t key, int flags, int mode, orch_hb_table **tablep) {
  return orch_hb_open_slots(key, flags, mode, 0, tablep);
}

int orch_hbc_open(key_t key, int flags, int mode, orch_hb_table **tablep) {
  return orch_hb_open_slots(key, flags | ORCH_HB_COMPAT, mode, 0, tablep);
}

void orch_hb_close(orch_hb_table *t) {
  if (!t) return;
  shmdt(t->base);
  free(t);
}

int orch_hb_remove(orch_hb_table *t) {
  if (!t) return -EINVAL;
  return shmctl(t->shmid, IPC_RMID, NULL) < 0 ? -errno : 0;
}

key_t orch_hb_key(const orch_hb_table *t) { return t->key; }
int orch_hb_shmid(const orch_hb_table *t) { return t->shmid; }
uint32_t orch_hb_slot_count(const orch_hb_table *t) { return t->nslots; }
int orch_hb_is_compat(const orch_hb_table *t) { return t->compat; }

uint32_t orch_hb_changes(const orch_hb_table *t) {
  if (t->compat) return 0;
  return __atomic_load_n(&((orch_hb_header *)t->base)->changes, __ATOMIC_ACQUIRE);
}

void *orch_hb_entry_at(const orch_hb_table *t, uint32_t i) {
  if (!t || i >= t->nslots) return NULL;
  return t->compat ? (void *)cslot_at(t, i) : (void *)slot_at(t, i);
}

static void bump_changes(orch_hb_table *t) {
  __atomic_fetch_add(&((orch_hb_header *)t->base)->changes, 1, __ATOMIC_RELEASE);
}

/* ---- Native slots ----------------------------------------------------- */

typedef struct {
  int32_t pid;
  uint64_t start_time;
  uint32_t uid;
  uint32_t timeout_ms;
  uint32_t flags;
  uint64_t registered; /* 0: now */
  const char *name;   /* NULL: keep the slot's name */
} identity;

static int check_name(const char *name) {
  if (!name || !*name) return -EINVAL;
  if (strlen(name) >= ORCH_HB_NAME_MAX) return -ENAMETOOLONG;
  return 0;
}

/* Called holding the slot with the odd generation `gen`: writes the identity
 * and publishes it with gen + 1. */
static uint64_t publish(orch_hb_table *t, orch_hb_entry *e, uint32_t gen,
                        const identity *id) {
  uint64_t now = orch_hb_now_ns();
  __atomic_store_n(&e->start_time, id->start_time, __ATOMIC_RELAXED);
  __atomic_store_n(&e->uid, id->uid, __ATOMIC_RELAXED);
  __atomic_store_n(&e->timeout_ms, id->timeout_ms, __ATOMIC_RELAXED);
  __atomic_store_n(&e->flags, id->flags, __ATOMIC_RELAXED);
  __atomic_store_n(&e->registered, id->registered ? id->registered : now, __ATOMIC_RELAXED);
  __atomic_store_n(&e->last_beat, now, __ATOMIC_RELAXED);
  if (id->name) {
    union { char c[ORCH_HB_NAME_MAX]; uint64_t w[ORCH_HB_NAME_MAX / 8]; } n;
    memset(&n, 0, sizeof n);
    memcpy(n.c, id->name, strlen(id->name));
    for (unsigned i = 0; i < ORCH_HB_NAME_MAX / 8; i++)
      __atomic_store_n(&e->name_words[i], n.w[i], __ATOMIC_RELAXED);
  }
  uint64_t w = owner_pack(id->pid, gen + 1);
  __atomic_store_n(&e->owner, w, __ATOMIC_RELEASE);
  bump_changes(t);
  return w;
}

static void fill_slot(orch_hb_slot *s, orch_hb_table *t, uint32_t i, uint64_t w) {
  s->table = t;
  s->entry = orch_hb_entry_at(t, i);
  s->owner = w;
  s->index = i;
  s->pid = t->compat ? (int32_t)w : owner_pid(w);
  s->compat = t->compat;
}

static int claim(orch_hb_table *t, const identity *id, orch_hb_slot *s) {
  /* Free slots first: a CAS each, no syscall. */
  for (uint32_t i = 0; i < t->nslots; i++) {
    orch_hb_entry *e = slot_at(t, i);
    uint64_t w = load_owner(e);
    if (owner_pid(w) != 0 || (owner_gen(w) & 1)) continue;
    if (!cas_owner(e, w, owner_pack(id->pid, owner_gen(w) + 1))) continue;
    fill_slot(s, t, i, publish(t, e, owner_gen(w) + 1, id));
    return 0;
  }
  /* Then slots whose owner is gone, exited or replaced by a new process
   * with the same pid. An odd generation means the claimer died (or is
   * still writing, in which case its pid is alive); its start time is not
   * trustworthy yet, so only the pid's existence counts then. */
  for (uint32_t i = 0; i < t->nslots; i++) {
    orch_hb_entry *e = slot_at(t, i);
    uint64_t w = load_owner(e);
    int32_t pid = owner_pid(w);
    uint32_t gen = owner_gen(w);
    if (pid == 0) continue;
    uint64_t start = 0;
    if (!(gen & 1)) {
      start = __atomic_load_n(&e->start_time, __ATOMIC_RELAXED);
      __atomic_thread_fence(__ATOMIC_ACQUIRE);
      if (__atomic_load_n(&e->owner, __ATOMIC_RELAXED) != w) continue;
    }
    if (pid > 0 && orch_hb_alive(pid, start)) continue;
    uint32_t odd = (gen + 1) | 1;
    if (!cas_owner(e, w, owner_pack(id->pid, odd))) continue;
    fill_slot(s, t, i, publish(t, e, odd, id));
    return 0;
  }
  return -ENOSPC;
}

static int self_identity(identity *id) {
  pid_t pid = getpid();
  int r = orch_hb_proc_stat(pid, &id->start_time, NULL, NULL);
  if (r < 0) return r;
  id->pid = pid;
  id->uid = getuid();
  return 0;
}

static int pid_identity(pid_t pid, identity *id) {
  char state;
  int r = orch_hb_proc_stat(pid, &id->start_time, &state, &id->uid);
  if (r < 0) return r;
  if (state == 'Z' || state == 'X') return -ESRCH;
  id->pid = pid;
  return 0;
}

/* Rounded up; at most 4294968, so it always fits the classic int. */
static int ms_to_s(uint32_t ms) {
  return (int)(ms / 1000 + (ms % 1000 != 0));
}

int orch_hb_register(orch_hb_table *t, const char *name, uint32_t timeout_ms,
                     orch_hb_slot *s) {
  return orch_hb_register_pid(t, t ? getpid() : 0, name, timeout_ms, s);
}

int orch_hb_register_pid(orch_hb_table *t, pid_t pid, const char *name,
                         uint32_t timeout_ms, orch_hb_slot *s) {
  if (!t || !s || pid <= 0) return -EINVAL;
  if (t->rdonly) return -EROFS;
  if (t->compat) return orch_hbc_register(t, pid, name, ms_to_s(timeout_ms), s);
  int r = check_name(name);
  if (r < 0) return r;
  identity id = { .timeout_ms = timeout_ms, .name = name };
  if (pid == getpid()) {
    r = self_identity(&id);
  } else {
    r = pid_identity(pid, &id);
    id.flags = ORCH_HB_F_PROXY;
  }
  if (r < 0) return r;
  return claim(t, &id, s);
}

int orch_hb_reserve(orch_hb_table *t, const char *name, uint32_t timeout_ms,
                    orch_hb_slot *s) {
  if (!t || !s) return -EINVAL;
  if (t->rdonly) return -EROFS;
  if (t->compat) return -EOPNOTSUPP;
  int r = check_name(name);
  if (r < 0) return r;
  identity id = { .timeout_ms = timeout_ms, .name = name, .flags = ORCH_HB_F_RESERVED };
  r = self_identity(&id);
  if (r < 0) return r;
  return claim(t, &id, s);
}

int orch_hb_read(const orch_hb_table *t, uint32_t index, orch_hb_info *info) {
  if (!t || !info || index >= t->nslots) return -ERANGE;
  if (t->compat) return orch_hbc_read(t, index, info);
  const orch_hb_entry *e = slot_at(t, index);
  memset(info, 0, sizeof *info);
  info->index = index;
  for (int tries = 0; tries < READ_TRIES; tries++) {
    uint64_t w1 = load_owner(e);
    if (owner_gen(w1) & 1) { cpu_relax(); continue; }
    if (owner_pid(w1) == 0) return -ENOENT;
    orch_hb_info v;
    memset(&v, 0, sizeof v);
    v.index = index;
    v.pid = owner_pid(w1);
    v.generation = owner_gen(w1);
    v.last_beat = __atomic_load_n(&e->last_beat, __ATOMIC_RELAXED);
    v.start_time = __atomic_load_n(&e->start_time, __ATOMIC_RELAXED);
    v.uid = __atomic_load_n(&e->uid, __ATOMIC_RELAXED);
    v.timeout_ms = __atomic_load_n(&e->timeout_ms, __ATOMIC_RELAXED);
    v.flags = __atomic_load_n(&e->flags, __ATOMIC_RELAXED);
    v.registered = __atomic_load_n(&e->registered, __ATOMIC_RELAXED);
    uint64_t words[ORCH_HB_NAME_MAX / 8];
    for (unsigned i = 0; i < ORCH_HB_NAME_MAX / 8; i++)
      words[i] = __atomic_load_n(&e->name_words[i], __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&e->owner, __ATOMIC_RELAXED) != w1) continue;
    memcpy(v.name, words, sizeof v.name);
    v.name[ORCH_HB_NAME_MAX - 1] = '\0';   /* a forged slot may lack the NUL */
    *info = v;
    return 0;
  }
  return -EAGAIN;
}

int orch_hb_next(const orch_hb_table *t, uint32_t *cursor, orch_hb_info *info) {
  if (!t || !cursor) return 0;
  for (uint32_t i = *cursor; i < t->nslots; i++) {
    if (orch_hb_read(t, i, info) == 0) {
      *cursor = i + 1;
      return 1;
    }
  }
  *cursor = t->nslots;
  return 0;
}

int orch_hb_clear(orch_hb_table *t, const orch_hb_info *info) {
  if (!t || !info || info->index >= t->nslots) return -EINVAL;
  if (t->rdonly) return -EROFS;
  if (t->compat) return orch_hbc_clear(t, info->index, info->pid);
  if (info->pid == 0 || (info->generation & 1)) return -ESTALE;
  orch_hb_entry *e = slot_at(t, info->index);
  if (!cas_owner(e, owner_pack(info->pid, info->generation),
                 owner_pack(0, info->generation + 2)))
    return -ESTALE;
  bump_changes(t);
  return 0;
}

int orch_hb_beat(const orch_hb_slot *s) {
  if (!s || !s->entry) return -ESTALE;
  if (s->compat) return orch_hbc_beat(s);
  orch_hb_entry *e = s->entry;
  /* The check costs a load of the line the store touches anyway, and tells
   * a process whose slot was taken from it. */
  if (__atomic_load_n(&e->owner, __ATOMIC_RELAXED) != s->owner) return -ESTALE;
  __atomic_store_n(&e->last_beat, orch_hb_now_ns(), __ATOMIC_RELEASE);
  return 0;
}

int orch_hb_unregister(orch_hb_slot *s) {
  if (!s || !s->entry) return -ESTALE;
  if (s->compat) return orch_hbc_unregister(s);
  if (s->table->rdonly) return -EROFS;
  orch_hb_entry *e = s->entry;
  uint32_t gen = owner_gen(s->owner);
  if (!cas_owner(e, s->owner, owner_pack(0, gen + 2))) return -ESTALE;
  bump_changes(s->table);
  s->entry = NULL;
  return 0;
}

/* Rewrites a registration in place: {pid, g} -> {pid', g+1} -> identity ->
 * {pid', g+2}. */
static int rewrite(orch_hb_slot *s, uint64_t expect, const identity *id) {
  orch_hb_entry *e = s->entry;
  uint32_t gen = owner_gen(expect);
  if (!cas_owner(e, expect, owner_pack(owner_pid(expect), gen + 1))) return -ESTALE;
  uint64_t w = publish(s->table, e, gen + 1, id);
  s->owner = w;
  s->pid = id->pid;
  return 0;
}

int orch_hb_set_timeout(orch_hb_slot *s, uint32_t timeout_ms) {
  if (!s || !s->entry) return -ESTALE;
  if (s->table->rdonly) return -EROFS;
  if (s->compat) {
    orch_hbc_entry *c = s->entry;
    if (__atomic_load_n(&c->pid, __ATOMIC_RELAXED) != s->pid) return -ESTALE;
    __atomic_store_n(&c->timeout, ms_to_s(timeout_ms), __ATOMIC_RELAXED);
    return 0;
  }
  orch_hb_info info;
  int r = orch_hb_read(s->table, s->index, &info);
  if (r == -ENOENT) return -ESTALE;
  if (r < 0) return r;
  if (owner_pack(info.pid, info.generation) != s->owner) return -ESTALE;
  /* The registration time is kept; last_beat is restamped: a new timeout
   * runs from now. */
  identity id = { .pid = info.pid, .start_time = info.start_time, .uid = info.uid,
                  .timeout_ms = timeout_ms, .flags = info.flags,
                  .registered = info.registered, .name = NULL };
  return rewrite(s, s->owner, &id);
}

int orch_hb_assign(orch_hb_slot *s, pid_t pid) {
  if (!s || !s->entry || pid <= 0) return -EINVAL;
  if (s->compat) return -EOPNOTSUPP;
  if (s->table->rdonly) return -EROFS;
  identity id = { .name = NULL };
  int r = pid_identity(pid, &id);
  if (r < 0) return r;
  orch_hb_info info;
  for (int tries = 0; tries < 1000; tries++) {
    r = orch_hb_read(s->table, s->index, &info);
    if (r == -EAGAIN) { sched_yield(); continue; }
    if (r < 0) return -ESTALE;
    if (info.pid == pid && info.start_time == id.start_time) {
      /* The child adopted the slot first. */
      fill_slot(s, s->table, s->index, owner_pack(info.pid, info.generation));
      return 0;
    }
    if (owner_pack(info.pid, info.generation) != s->owner || !(info.flags & ORCH_HB_F_RESERVED))
      return -ESTALE;
    id.timeout_ms = info.timeout_ms;
    id.flags = 0;
    r = rewrite(s, s->owner, &id);
    if (r == 0) return 0;
  }
  return -EAGAIN;
}

int orch_hb_find(orch_hb_table *t, pid_t pid, orch_hb_slot *s) {
  if (!t || !s || pid <= 0) return -EINVAL;
  uint64_t start;
  char state;
  int r = orch_hb_proc_stat(pid, &start, &state, NULL);
  if (r < 0) return r;
  orch_hb_info info;
  for (uint32_t i = 0; i < t->nslots; i++) {
    if (orch_hb_read(t, i, &info) != 0 || info.pid != pid) continue;
    if (t->compat) {
      fill_slot(s, t, i, (uint64_t)(uint32_t)pid);
      return 0;
    }
    if (info.start_time != start || (info.flags & ORCH_HB_F_RESERVED)) continue;
    fill_slot(s, t, i, owner_pack(info.pid, info.generation));
    return 0;
  }
  return -ENOENT;
}

int orch_hb_attach(orch_hb_table *t, uint32_t index, int wait_ms, orch_hb_slot *s) {
  if (!t || !s || index >= t->nslots || wait_ms < 0) return -EINVAL;
  pid_t self = getpid(), parent = getppid();
  uint64_t self_start = 0, parent_start = 0;
  int r = orch_hb_proc_stat(self, &self_start, NULL, NULL);
  if (r < 0) return r;
  if (orch_hb_proc_stat(parent, &parent_start, NULL, NULL) < 0) parent = -1;
  uint64_t deadline = orch_hb_now_ns() + (uint64_t)wait_ms * 1000000u;
  for (;;) {
    orch_hb_info info;
    r = orch_hb_read(t, index, &info);
    if (r == 0 && !t->compat) {
      uint64_t w = owner_pack(info.pid, info.generation);
      if (info.pid == self && info.start_time == self_start) {
        fill_slot(s, t, index, w);
        return 0;
      }
      if (info.pid == parent && info.start_time == parent_start) {
        if (!(info.flags & ORCH_HB_F_RESERVED)) {
          fill_slot(s, t, index, w);
          return 0;
        }
        if (t->rdonly) return -EROFS;
        identity id = { .pid = self, .start_time = self_start, .uid = getuid(),
                        .timeout_ms = info.timeout_ms, .flags = 0, .name = NULL };
        fill_slot(s, t, index, w);
        if (rewrite(s, w, &id) == 0) return 0;
        continue;   /* the parent assigned it meanwhile: look again */
      }
    } else if (r == 0) {
      if (info.pid == self || info.pid == parent) {
        fill_slot(s, t, index, (uint64_t)(uint32_t)info.pid);
        return 0;
      }
    } else if (r != -ENOENT && r != -EAGAIN) {
      return r;
    }
    if (orch_hb_now_ns() >= deadline) return -EAGAIN;
    sleep_ms(1);
  }
}

int orch_hb_env(key_t *key, uint32_t *index) {
  if (key) {
    int r = env_key(key);
    if (r < 0) return r;
    if (r == 0) return -ENOENT;
  }
  if (index) {
    const char *ss = getenv(ORCH_HB_ENV_SLOT);
    if (!ss || !*ss) return -ENOENT;
    char *end;
    errno = 0;
    unsigned long v = strtoul(ss, &end, 10);
    if (errno || *end || *ss < '0' || *ss > '9' || v >= MAX_SLOTS) return -EINVAL;
    *index = (uint32_t)v;
  }
  return 0;
}

int orch_hb_slot_from_env(orch_hb_table **tablep, orch_hb_slot *s) {
  if (!tablep || !s) return -EINVAL;
  *tablep = NULL;
  key_t key;
  uint32_t index;
  int r = orch_hb_env(&key, &index);
  if (r < 0) return r;
  orch_hb_table *t;
  r = orch_hb_open(key, 0, 0, &t);
  if (r < 0) return r;
  r = orch_hb_attach(t, index, 2000, s);
  if (r < 0) {
    orch_hb_close(t);
    return r;
  }
  *tablep = t;
  return 0;
}

/* ---- Classic slots ---------------------------------------------------- */

/* The classic programs write these fields with plain stores under a SysV
 * semaphore orch never takes; our own accesses are atomic so that orch's
 * writers and readers at least never tear a field. */

int orch_hbc_register(orch_hb_table *t, pid_t pid, const char *pname,
                      int timeout_s, orch_hb_slot *s) {
  if (!t || !s || !pname || !*pname || pid <= 0 || timeout_s < 0) return -EINVAL;
  if (!t->compat) return -EINVAL;
  if (t->rdonly) return -EROFS;
  uint32_t found = UINT32_MAX;
  /* Like the classic code: a slot still holding our pid was left by an
   * earlier process with the same pid and is ours to reuse. */
  for (uint32_t i = 0; i < t->nslots && found == UINT32_MAX; i++)
    if (__atomic_load_n(&cslot_at(t, i)->pid, __ATOMIC_ACQUIRE) == pid) found = i;
  for (int pass = 0; pass < 2 && found == UINT32_MAX; pass++) {
    for (uint32_t i = 0; i < t->nslots; i++) {
      orch_hbc_entry *c = cslot_at(t, i);
      int cur = __atomic_load_n(&c->pid, __ATOMIC_ACQUIRE);
      if (pass == 0 ? cur != 0 : (cur == 0 || orch_hb_alive(cur, 0))) continue;
      if (__atomic_compare_exchange_n(&c->pid, &cur, pid, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        found = i;
        break;
      }
    }
  }
  if (found == UINT32_MAX) return -ENOSPC;
  orch_hbc_entry *c = cslot_at(t, found);
  /* atime first: a reader between these stores sees a fresh beat rather
   * than a stale one. */
  __atomic_store_n(&c->atime, time(NULL), __ATOMIC_RELAXED);
  __atomic_store_n(&c->timeout, timeout_s, __ATOMIC_RELAXED);
  size_t n = strlen(pname);
  if (n > ORCH_HBC_PNAME_MAX - 1) n = ORCH_HBC_PNAME_MAX - 1;
  for (size_t i = 0; i < ORCH_HBC_PNAME_MAX; i++)
    __atomic_store_n(&c->pname[i], i < n ? pname[i] : '\0', __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_RELEASE);
  fill_slot(s, t, found, (uint64_t)(uint32_t)pid);
  return 0;
}

int orch_hbc_beat(const orch_hb_slot *s) {
  if (!s || !s->entry || !s->compat) return -ESTALE;
  orch_hbc_entry *c = s->entry;
  if (__atomic_load_n(&c->pid, __ATOMIC_RELAXED) != s->pid) return -ESTALE;
  __atomic_store_n(&c->atime, time(NULL), __ATOMIC_RELEASE);
  return 0;
}

int orch_hbc_unregister(orch_hb_slot *s) {
  if (!s || !s->entry || !s->compat) return -ESTALE;
  if (s->table->rdonly) return -EROFS;
  orch_hbc_entry *c = s->entry;
  int cur = s->pid;
  /* Only the pid is cleared: zeroing the rest after the CAS could clobber
   * a new claimer's fields, and before it would look like a timeout. */
  if (!__atomic_compare_exchange_n(&c->pid, &cur, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    return -ESTALE;
  s->entry = NULL;
  return 0;
}

int orch_hbc_read(const orch_hb_table *t, uint32_t index, orch_hb_info *info) {
  if (!t || !info || index >= t->nslots || !t->compat) return -ERANGE;
  const orch_hbc_entry *c = cslot_at(t, index);
  memset(info, 0, sizeof *info);
  info->index = index;
  info->compat = 1;
  orch_hbc_entry a, b;
  for (int tries = 0; tries < READ_TRIES; tries++) {
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    orch_hbc_entry *copy[2] = { &a, &b };
    for (int k = 0; k < 2; k++) {
      copy[k]->pid = __atomic_load_n(&c->pid, __ATOMIC_ACQUIRE);
      for (size_t i = 0; i < ORCH_HBC_PNAME_MAX; i++)
        copy[k]->pname[i] = __atomic_load_n(&c->pname[i], __ATOMIC_RELAXED);
      copy[k]->timeout = __atomic_load_n(&c->timeout, __ATOMIC_RELAXED);
      copy[k]->atime = __atomic_load_n(&c->atime, __ATOMIC_RELAXED);
    }
    if (a.pid != b.pid || a.timeout != b.timeout || a.atime != b.atime ||
        memcmp(a.pname, b.pname, sizeof a.pname) != 0) {
      cpu_relax();
      continue;
    }
    if (a.pid == 0) return -ENOENT;
    info->pid = a.pid;
    info->raw_timeout = a.timeout;
    info->timeout_ms = a.timeout <= 0 ? 0
                     : (uint64_t)a.timeout * 1000u > UINT32_MAX ? UINT32_MAX
                     : (uint32_t)a.timeout * 1000u;
    info->atime = (int64_t)a.atime;
    memcpy(info->name, a.pname, ORCH_HBC_PNAME_MAX);
    info->name[ORCH_HBC_PNAME_MAX - 1] = '\0';
    return 0;
  }
  return -EAGAIN;
}

int orch_hbc_clear(orch_hb_table *t, uint32_t index, pid_t pid) {
  if (!t || !t->compat || index >= t->nslots || pid == 0) return -EINVAL;
  if (t->rdonly) return -EROFS;
  int cur = pid;
  if (!__atomic_compare_exchange_n(&cslot_at(t, index)->pid, &cur, 0, 0,
                                   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    return -ESTALE;
  return 0;
}
