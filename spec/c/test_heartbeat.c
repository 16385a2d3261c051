/*
 * test_heartbeat.c: the heartbeat table's C library (src/heartbeat.c) with
 * real processes and real SysV segments. Private keys (IPC_PRIVATE, shared
 * with children by fork) or per-run keys; every segment is removed before the
 * test that made it returns. Exits 0 when every check passed.
 */
#include "orch_heartbeat.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int passed, failed, current_failed;

static void check(int cond, const char *fmt, ...) {
  if (cond) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stdout, "#   check failed: ");
  vfprintf(stdout, fmt, ap);
  fprintf(stdout, "\n");
  va_end(ap);
  current_failed++;
}

#define CHECK(cond) check((cond), "%s (line %d)", #cond, __LINE__)
#define CHECK_EQ(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); \
  check(a_ == b_, "%s == %s: %lld != %lld (line %d)", #a, #b, a_, b_, __LINE__); } while (0)

static void run(const char *name, void (*fn)(void)) {
  current_failed = 0;
  fn();
  if (current_failed) { failed++; printf("not ok - %s\n", name); }
  else { passed++; printf("ok - %s\n", name); }
  fflush(stdout);
}

/* A private table, marked for removal at once: it lives exactly as long as
 * this process and its forked children keep it attached. */
static orch_hb_table *private_table(int flags, uint32_t slots) {
  orch_hb_table *t = NULL;
  int r = orch_hb_open_slots(IPC_PRIVATE, flags | ORCH_HB_CREATE, 0, slots, &t);
  check(r == 0, "open private table: %s", strerror(-r));
  if (t) orch_hb_remove(t);
  return t;
}

/* A per-run key no other test run uses. */
static key_t run_key(int n) {
  return (key_t)(0x0E000000 | ((getpid() & 0xffff) << 8) | (n & 0xff));
}

static void sleep_ms(int ms) {
  struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
  nanosleep(&ts, NULL);
}

static int wait_exit(pid_t pid) {
  int st;
  while (waitpid(pid, &st, 0) < 0) if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- Layout ---------------------------------------------------------- */

static void test_layout(void) {
  CHECK_EQ(sizeof(orch_hbc_entry), 72);
  CHECK_EQ(offsetof(orch_hbc_entry, pid), 0);
  CHECK_EQ(offsetof(orch_hbc_entry, pname), 4);
  CHECK_EQ(offsetof(orch_hbc_entry, timeout), 56);
  CHECK_EQ(offsetof(orch_hbc_entry, atime), 64);
  CHECK_EQ(sizeof(orch_hb_header), 64);
  CHECK_EQ(sizeof(orch_hb_entry), 128);
  CHECK_EQ(offsetof(orch_hb_entry, pid), 0);
  CHECK_EQ(offsetof(orch_hb_entry, generation), 4);
  CHECK_EQ(offsetof(orch_hb_entry, last_beat), 8);
  CHECK_EQ(offsetof(orch_hb_entry, start_time), 16);
  CHECK_EQ(offsetof(orch_hb_entry, uid), 24);
  CHECK_EQ(offsetof(orch_hb_entry, timeout_ms), 28);
  CHECK_EQ(offsetof(orch_hb_entry, flags), 32);
  CHECK_EQ(offsetof(orch_hb_entry, registered), 40);
  CHECK_EQ(offsetof(orch_hb_entry, name), 64);

  orch_hb_table *t = private_table(0, 0);
  if (!t) return;
  CHECK_EQ(orch_hb_slot_count(t), ORCH_HB_DEFAULT_SLOTS);
  struct shmid_ds ds;
  CHECK(shmctl(orch_hb_shmid(t), IPC_STAT, &ds) == 0);
  CHECK_EQ(ds.shm_segsz, 64 + 1024 * 128);
  CHECK_EQ(ds.shm_perm.mode & 0777, 0600);
  const orch_hb_header *h = orch_hb_entry_at(t, 0);
  h = (const orch_hb_header *)((const char *)h - 64);
  CHECK_EQ(h->magic, ORCH_HB_MAGIC);
  CHECK_EQ(h->version, 1);
  CHECK_EQ(h->slot_count, 1024);
  CHECK_EQ(h->slot_size, 128);
  CHECK_EQ(h->header_size, 64);
  CHECK_EQ((uintptr_t)orch_hb_entry_at(t, 1) % 64, 0);
  CHECK(orch_hb_entry_at(t, 1024) == NULL);
  orch_hb_close(t);

  t = private_table(ORCH_HB_COMPAT, 0);
  if (!t) return;
  CHECK(orch_hb_is_compat(t));
  CHECK_EQ(orch_hb_slot_count(t), 1000);
  CHECK(shmctl(orch_hb_shmid(t), IPC_STAT, &ds) == 0);
  CHECK_EQ(ds.shm_segsz, 72000);
  orch_hb_close(t);
}

/* ---- Register, beat, unregister -------------------------------------- */

static void test_register_beat_unregister(void) {
  orch_hb_table *t = private_table(0, 8);
  if (!t) return;
  uint32_t changes = orch_hb_changes(t);
  orch_hb_slot s;
  CHECK_EQ(orch_hb_register(t, "worker", 1500, &s), 0);
  CHECK_EQ(s.index, 0);
  CHECK_EQ(s.pid, getpid());
  CHECK(orch_hb_changes(t) != changes);

  uint64_t start;
  CHECK_EQ(orch_hb_proc_stat(getpid(), &start, NULL, NULL), 0);
  orch_hb_info info;
  CHECK_EQ(orch_hb_read(t, 0, &info), 0);
  CHECK_EQ(info.pid, getpid());
  CHECK_EQ(info.start_time, start);
  CHECK_EQ(info.uid, getuid());
  CHECK_EQ(info.timeout_ms, 1500);
  CHECK_EQ(info.flags, 0);
  CHECK(strcmp(info.name, "worker") == 0);
  CHECK_EQ(info.generation % 2, 0);
  CHECK(info.last_beat > 0 && info.last_beat <= orch_hb_now_ns());
  CHECK_EQ(info.registered, info.last_beat);

  uint64_t before = info.last_beat;
  sleep_ms(2);
  CHECK_EQ(orch_hb_beat(&s), 0);
  CHECK_EQ(orch_hb_read(t, 0, &info), 0);
  CHECK(info.last_beat > before);
  CHECK(info.registered == before);

  /* A second registration of the same process gets another slot. */
  orch_hb_slot s2;
  CHECK_EQ(orch_hb_register(t, "worker-2", 0, &s2), 0);
  CHECK_EQ(s2.index, 1);

  uint32_t cursor = 0, seen = 0;
  while (orch_hb_next(t, &cursor, &info)) seen++;
  CHECK_EQ(seen, 2);

  /* find() returns the first registration of a pid with its start time. */
  orch_hb_slot f;
  CHECK_EQ(orch_hb_find(t, getpid(), &f), 0);
  CHECK_EQ(f.index, 0);
  CHECK_EQ(orch_hb_beat(&f), 0);

  CHECK_EQ(orch_hb_unregister(&s), 0);
  CHECK_EQ(orch_hb_read(t, 0, &info), -ENOENT);
  CHECK_EQ(orch_hb_beat(&s), -ESTALE);
  CHECK_EQ(orch_hb_unregister(&s), -ESTALE);
  CHECK_EQ(orch_hb_beat(&f), -ESTALE);    /* a copy of the released handle */
  CHECK_EQ(orch_hb_find(t, getpid(), &f), 0);
  CHECK_EQ(f.index, 1);

  /* The freed slot is the next one claimed. */
  CHECK_EQ(orch_hb_register(t, "worker-3", 10, &s), 0);
  CHECK_EQ(s.index, 0);
  CHECK_EQ(orch_hb_unregister(&s), 0);
  CHECK_EQ(orch_hb_unregister(&s2), 0);
  cursor = 0;
  CHECK_EQ(orch_hb_next(t, &cursor, &info), 0);
  orch_hb_close(t);
}

static void test_set_timeout_and_clear(void) {
  orch_hb_table *t = private_table(0, 4);
  if (!t) return;
  orch_hb_slot s, old;
  orch_hb_info info, info2;
  CHECK_EQ(orch_hb_register(t, "t", 1000, &s), 0);
  old = s;
  CHECK_EQ(orch_hb_read(t, s.index, &info), 0);
  CHECK_EQ(orch_hb_set_timeout(&s, 2500), 0);
  CHECK_EQ(orch_hb_read(t, s.index, &info2), 0);
  CHECK_EQ(info2.timeout_ms, 2500);
  CHECK_EQ(info2.generation, info.generation + 2);
  CHECK_EQ(info2.registered, info.registered);
  CHECK(strcmp(info2.name, "t") == 0);
  CHECK_EQ(orch_hb_beat(&s), 0);
  CHECK_EQ(orch_hb_beat(&old), -ESTALE);     /* a stale copy learns it */

  /* clear() acts only on the exact registration it read. */
  CHECK_EQ(orch_hb_clear(t, &info), -ESTALE);
  CHECK_EQ(orch_hb_clear(t, &info2), 0);
  CHECK_EQ(orch_hb_clear(t, &info2), -ESTALE);
  CHECK_EQ(orch_hb_read(t, s.index, &info), -ENOENT);
  CHECK_EQ(orch_hb_beat(&s), -ESTALE);
  CHECK_EQ(orch_hb_set_timeout(&s, 1), -ESTALE);
  orch_hb_close(t);
}

static void test_bad_arguments(void) {
  orch_hb_table *t = private_table(0, 2);
  if (!t) return;
  orch_hb_slot s;
  orch_hb_info info;
  char long_name[80];
  memset(long_name, 'x', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  CHECK_EQ(orch_hb_register(t, "", 1, &s), -EINVAL);
  CHECK_EQ(orch_hb_register(t, NULL, 1, &s), -EINVAL);
  CHECK_EQ(orch_hb_register(t, long_name, 1, &s), -ENAMETOOLONG);
  long_name[64] = '\0';
  CHECK_EQ(orch_hb_register(t, long_name, 1, &s), -ENAMETOOLONG);
  long_name[63] = '\0';
  CHECK_EQ(orch_hb_register(t, long_name, 1, &s), 0);
  CHECK_EQ(orch_hb_read(t, s.index, &info), 0);
  CHECK_EQ(strlen(info.name), 63);
  CHECK_EQ(orch_hb_unregister(&s), 0);
  CHECK_EQ(orch_hb_register_pid(t, 0, "x", 1, &s), -EINVAL);
  CHECK_EQ(orch_hb_register_pid(t, -1, "x", 1, &s), -EINVAL);
  pid_t gone = fork();
  if (gone == 0) _exit(0);
  wait_exit(gone);
  CHECK_EQ(orch_hb_register_pid(t, gone, "x", 1, &s), -ESRCH);
  CHECK_EQ(orch_hb_read(t, 2, &info), -ERANGE);
  CHECK_EQ(orch_hb_read(t, 0, &info), -ENOENT);
  CHECK_EQ(orch_hb_find(t, getpid(), &s), -ENOENT);
  CHECK_EQ(orch_hb_find(t, gone, &s), -ESRCH);
  CHECK_EQ(orch_hb_attach(t, 5, 0, &s), -EINVAL);
  CHECK_EQ(orch_hb_beat(NULL), -ESTALE);

  orch_hb_table *u = NULL;
  CHECK_EQ(orch_hb_open(IPC_PRIVATE, 0x100, 0, &u), -EINVAL);
  CHECK_EQ(orch_hb_open(IPC_PRIVATE, ORCH_HB_CREATE, 01777, &u), -EINVAL);
  CHECK_EQ(orch_hb_open(run_key(1), 0, 0, &u), -ENOENT);
  CHECK(u == NULL);
  CHECK_EQ(orch_hb_open(run_key(1), 0, 0, NULL), -EINVAL);
  setenv(ORCH_HB_ENV_KEY, "0xnope", 1);
  CHECK_EQ(orch_hb_open(ORCH_HB_KEY_DEFAULT, 0, 0, &u), -EINVAL);
  unsetenv(ORCH_HB_ENV_KEY);
  orch_hb_close(t);
}

/* ---- Keys, modes, sharing between processes --------------------------- */

static void test_keyed_table(void) {
  key_t key = run_key(2);
  orch_hb_table *t = NULL, *u = NULL;
  CHECK_EQ(orch_hb_open_slots(key, ORCH_HB_CREATE | ORCH_HB_EXCL, 0640, 16, &t), 0);
  if (!t) return;
  struct shmid_ds ds;
  CHECK(shmctl(orch_hb_shmid(t), IPC_STAT, &ds) == 0);
  CHECK_EQ(ds.shm_perm.mode & 0777, 0640);
  CHECK_EQ(orch_hb_key(t), key);
  CHECK_EQ(orch_hb_open(key, ORCH_HB_CREATE | ORCH_HB_EXCL, 0, &u), -EEXIST);
  /* Attaching an existing table takes its size from the header. */
  CHECK_EQ(orch_hb_open(key, ORCH_HB_CREATE, 0, &u), 0);
  if (u) { CHECK_EQ(orch_hb_slot_count(u), 16); orch_hb_close(u); u = NULL; }

  /* The default key comes from ORCH_HEARTBEAT_KEY. */
  char buf[32];
  snprintf(buf, sizeof buf, "0x%x", (unsigned)key);
  setenv(ORCH_HB_ENV_KEY, buf, 1);
  CHECK_EQ(orch_hb_open(ORCH_HB_KEY_DEFAULT, 0, 0, &u), 0);
  unsetenv(ORCH_HB_ENV_KEY);
  if (u) { CHECK_EQ(orch_hb_key(u), key); orch_hb_close(u); u = NULL; }

  /* A read-only attachment reads but never writes. */
  CHECK_EQ(orch_hb_open(key, ORCH_HB_RDONLY, 0, &u), 0);
  orch_hb_slot s;
  orch_hb_info info;
  if (u) {
    CHECK_EQ(orch_hb_register(u, "ro", 1, &s), -EROFS);
    CHECK_EQ(orch_hb_register(t, "rw", 1, &s), 0);
    CHECK_EQ(orch_hb_read(u, s.index, &info), 0);
    CHECK_EQ(orch_hb_clear(u, &info), -EROFS);
    CHECK(strcmp(info.name, "rw") == 0);
    CHECK_EQ(orch_hb_unregister(&s), 0);
    orch_hb_close(u);
  }

  /* Another process opening by key sees the same slots. */
  int ready[2];
  CHECK(pipe(ready) == 0);
  pid_t child = fork();
  if (child == 0) {
    orch_hb_table *c;
    orch_hb_slot cs;
    close(ready[0]);
    if (orch_hb_open(key, 0, 0, &c) != 0) _exit(10);
    if (orch_hb_register(c, "child", 2000, &cs) != 0) _exit(11);
    if (write(ready[1], &cs.index, sizeof cs.index) != sizeof cs.index) _exit(12);
    pause();
    _exit(0);
  }
  close(ready[1]);
  uint32_t idx = 99;
  CHECK(read(ready[0], &idx, sizeof idx) == sizeof idx);
  close(ready[0]);
  CHECK_EQ(orch_hb_read(t, idx, &info), 0);
  CHECK_EQ(info.pid, child);
  CHECK(strcmp(info.name, "child") == 0);
  CHECK(orch_hb_alive(child, info.start_time));
  CHECK_EQ(orch_hb_find(t, child, &s), 0);
  CHECK_EQ(s.index, idx);
  kill(child, SIGKILL);
  CHECK_EQ(wait_exit(child), 128 + SIGKILL);
  CHECK(!orch_hb_alive(child, info.start_time));
  CHECK_EQ(orch_hb_clear(t, &info), 0);
  CHECK_EQ(orch_hb_remove(t), 0);
  orch_hb_close(t);
}

/* A segment somebody created without initialising it (its creator died
 * between shmget and the header): all zero, it is initialised; anything
 * else is not taken for a table. */
static void test_uninitialised_segment(void) {
  key_t key = run_key(3);
  int id = shmget(key, 64 + 4 * 128, IPC_CREAT | IPC_EXCL | 0600);
  CHECK(id >= 0);
  if (id < 0) return;
  orch_hb_table *t = NULL;
  CHECK_EQ(orch_hb_open(key, 0, 0, &t), 0);
  if (t) { CHECK_EQ(orch_hb_slot_count(t), 4); orch_hb_close(t); t = NULL; }
  shmctl(id, IPC_RMID, NULL);

  id = shmget(key, 64 + 4 * 128, IPC_CREAT | IPC_EXCL | 0600);
  CHECK(id >= 0);
  if (id < 0) return;
  char *p = shmat(id, NULL, 0);
  CHECK(p != (void *)-1);
  if (p != (void *)-1) { p[200] = 7; shmdt(p); }
  CHECK_EQ(orch_hb_open(key, 0, 0, &t), -EPROTO);
  shmctl(id, IPC_RMID, NULL);

  /* A native table is not a classic one, nor the other way round. */
  t = private_table(0, 2);
  orch_hb_table *c = private_table(ORCH_HB_COMPAT, 2);
  if (t && c) {
    orch_hb_slot s;
    CHECK_EQ(orch_hbc_register(c, getpid(), "classic", 5, &s), 0);
    key_t k1 = run_key(4), k2 = run_key(5);
    int a = shmget(k1, 64 + 2 * 128, IPC_CREAT | IPC_EXCL | 0600);
    int b = shmget(k2, 2 * 72, IPC_CREAT | IPC_EXCL | 0600);
    CHECK(a >= 0 && b >= 0);
    char *pa = shmat(a, NULL, 0), *pb = shmat(b, NULL, 0);
    memcpy(pa, (char *)orch_hb_entry_at(t, 0) - 64, 64 + 2 * 128);
    memcpy(pb, orch_hb_entry_at(c, 0), 2 * 72);
    orch_hb_table *x = NULL;
    CHECK_EQ(orch_hb_open(k1, ORCH_HB_COMPAT, 0, &x), -EPROTO);
    CHECK_EQ(orch_hb_open(k2, 0, 0, &x), -EPROTO);
    shmdt(pa);
    shmdt(pb);
    shmctl(a, IPC_RMID, NULL);
    shmctl(b, IPC_RMID, NULL);
  }
  orch_hb_close(t);
  orch_hb_close(c);
}

/* ---- Claim races ------------------------------------------------------ */

/* 8 processes claim a table's 64 slots at the same moment: each slot goes
 * to exactly one of them and nobody gets more than it asked for. */
static void test_claim_race_fill(void) {
  enum { KIDS = 8, EACH = 8 };
  orch_hb_table *t = private_table(0, KIDS * EACH);
  if (!t) return;
  int go[2], out[2];
  CHECK(pipe(go) == 0 && pipe(out) == 0);
  pid_t kids[KIDS];
  for (int k = 0; k < KIDS; k++) {
    kids[k] = fork();
    if (kids[k] == 0) {
      char c;
      close(go[1]);
      close(out[0]);
      if (read(go[0], &c, 1) != 0) _exit(20);   /* released by EOF */
      for (int j = 0; j < EACH; j++) {
        char name[32];
        orch_hb_slot s;
        snprintf(name, sizeof name, "kid%d-%d", k, j);
        if (orch_hb_register(t, name, 1000, &s) != 0) _exit(21);
        uint32_t rec[2] = { (uint32_t)k, s.index };
        if (write(out[1], rec, sizeof rec) != sizeof rec) _exit(22);
      }
      close(out[1]);
      pause();
      _exit(0);
    }
  }
  close(go[0]);
  close(out[1]);
  close(go[1]);      /* everyone starts now */
  int owner[KIDS * EACH];
  for (int i = 0; i < KIDS * EACH; i++) owner[i] = -1;
  uint32_t rec[2];
  int n = 0, dup = 0;
  while (read(out[0], rec, sizeof rec) == sizeof rec) {
    n++;
    if (rec[1] >= KIDS * EACH) { dup++; continue; }
    if (owner[rec[1]] != -1) dup++;
    owner[rec[1]] = (int)rec[0];
  }
  close(out[0]);
  CHECK_EQ(n, KIDS * EACH);
  CHECK_EQ(dup, 0);
  orch_hb_info info;
  for (uint32_t i = 0; i < KIDS * EACH; i++) {
    CHECK_EQ(orch_hb_read(t, i, &info), 0);
    if (owner[i] >= 0) {
      CHECK_EQ(info.pid, kids[owner[i]]);
      char prefix[16];
      snprintf(prefix, sizeof prefix, "kid%d-", owner[i]);
      CHECK(strncmp(info.name, prefix, strlen(prefix)) == 0);
    }
  }
  /* Full of live processes: no room, and nobody's slot is taken. */
  orch_hb_slot s;
  CHECK_EQ(orch_hb_register(t, "late", 1, &s), -ENOSPC);
  for (int k = 0; k < KIDS; k++) kill(kids[k], SIGKILL);
  for (int k = 0; k < KIDS; k++) CHECK_EQ(wait_exit(kids[k]), 128 + SIGKILL);
  /* Now every slot is a dead process's: reclaimable. */
  CHECK_EQ(orch_hb_register(t, "late", 1, &s), 0);
  orch_hb_close(t);
}

/* 8 processes register, verify and unregister in a tight loop on a table
 * with just enough slots for all of them (and two spare): any double claim
 * shows up as a slot holding somebody else's pid or name. */
static void test_claim_race_churn(void) {
  enum { KIDS = 8, ROUNDS = 3000 };
  orch_hb_table *t = private_table(0, KIDS + 2);
  if (!t) return;
  int go[2];
  CHECK(pipe(go) == 0);
  pid_t kids[KIDS];
  for (int k = 0; k < KIDS; k++) {
    kids[k] = fork();
    if (kids[k] == 0) {
      char c, name[32];
      int errors = 0;
      close(go[1]);
      if (read(go[0], &c, 1) != 0) _exit(100);
      snprintf(name, sizeof name, "churn-%d", k);
      for (int r = 0; r < ROUNDS && errors < 50; r++) {
        orch_hb_slot s;
        orch_hb_info info;
        if (orch_hb_register(t, name, 100, &s) != 0) { errors++; continue; }
        if (orch_hb_beat(&s) != 0) errors++;
        if (orch_hb_read(t, s.index, &info) != 0 || info.pid != getpid() ||
            strcmp(info.name, name) != 0)
          errors++;
        if (orch_hb_unregister(&s) != 0) errors++;
      }
      _exit(errors);
    }
  }
  close(go[0]);
  close(go[1]);
  for (int k = 0; k < KIDS; k++) CHECK_EQ(wait_exit(kids[k]), 0);
  orch_hb_info info;
  uint32_t cursor = 0;
  CHECK_EQ(orch_hb_next(t, &cursor, &info), 0);
  orch_hb_close(t);
}

/* ---- Dead owners and pid reuse ---------------------------------------- */

static void test_reclaim_dead(void) {
  orch_hb_table *t = private_table(0, 2);
  if (!t) return;
  /* A child fills the table and exits without unregistering. */
  pid_t child = fork();
  if (child == 0) {
    orch_hb_slot a, b;
    if (orch_hb_register(t, "a", 1, &a) || orch_hb_register(t, "b", 1, &b)) _exit(1);
    _exit(0);
  }
  CHECK_EQ(wait_exit(child), 0);
  orch_hb_info info;
  CHECK_EQ(orch_hb_read(t, 0, &info), 0);
  CHECK_EQ(info.pid, child);
  CHECK(!orch_hb_alive(info.pid, info.start_time));
  orch_hb_slot s;
  CHECK_EQ(orch_hb_register(t, "heir", 1, &s), 0);
  CHECK_EQ(orch_hb_read(t, s.index, &info), 0);
  CHECK_EQ(info.pid, getpid());
  CHECK(strcmp(info.name, "heir") == 0);
  CHECK_EQ(orch_hb_unregister(&s), 0);

  /* A zombie (exited, not reaped yet) never beats again either. */
  t = (orch_hb_close(t), private_table(0, 1));
  if (!t) return;
  int done[2];
  CHECK(pipe(done) == 0);
  child = fork();
  if (child == 0) {
    orch_hb_slot a;
    close(done[0]);
    if (orch_hb_register(t, "z", 1, &a)) _exit(1);
    _exit(0);       /* closing done[1] tells the parent */
  }
  close(done[1]);
  char c;
  CHECK(read(done[0], &c, 1) == 0);
  close(done[0]);
  char state = '?';
  for (int i = 0; i < 2000 && state != 'Z'; i++) {
    if (orch_hb_proc_stat(child, NULL, &state, NULL) < 0) break;
    if (state != 'Z') sleep_ms(1);
  }
  CHECK_EQ(state, 'Z');
  CHECK_EQ(orch_hb_read(t, 0, &info), 0);
  CHECK_EQ(info.pid, child);
  CHECK_EQ(orch_hb_register(t, "after-zombie", 1, &s), 0);
  CHECK_EQ(s.index, 0);
  CHECK_EQ(wait_exit(child), 0);
  orch_hb_close(t);
}

/* Writes a slot the way a buggy or hostile writer could. */
static void forge(orch_hb_table *t, uint32_t i, int32_t pid, uint32_t gen,
                  uint64_t start, uint32_t timeout_ms, const char *name) {
  orch_hb_entry *e = orch_hb_entry_at(t, i);
  e->start_time = start;
  e->timeout_ms = timeout_ms;
  e->last_beat = 1;
  memset(e->name, 'g', sizeof e->name);   /* no NUL at all */
  if (name) { memset(e->name, 0, sizeof e->name); strcpy(e->name, name); }
  e->pid = pid;
  e->generation = gen;
}

static void test_pid_reuse_defence(void) {
  orch_hb_table *t = private_table(0, 1);
  if (!t) return;
  pid_t child = fork();
  if (child == 0) { pause(); _exit(0); }
  uint64_t start;
  CHECK_EQ(orch_hb_proc_stat(child, &start, NULL, NULL), 0);
  CHECK(orch_hb_alive(child, start));
  CHECK(orch_hb_alive(child, 0));
  CHECK(!orch_hb_alive(child, start + 12345));
  CHECK(!orch_hb_alive(0, 0));
  CHECK(!orch_hb_alive(-1, 0));

  /* The right pid with the right start time: a live owner, left alone. */
  forge(t, 0, child, 2, start, 1000, "owner");
  orch_hb_slot s;
  CHECK_EQ(orch_hb_register(t, "intruder", 1, &s), -ENOSPC);
  CHECK_EQ(orch_hb_find(t, child, &s), 0);

  /* The right pid, a different start time: the registration was made by an
   * earlier process that had this pid. It is reclaimed, and find() does
   * not take it for the live process's. */
  forge(t, 0, child, 4, start + 12345, 1000, "owner");
  CHECK_EQ(orch_hb_find(t, child, &s), -ENOENT);
  CHECK_EQ(orch_hb_register(t, "heir", 1, &s), 0);
  orch_hb_info info;
  CHECK_EQ(orch_hb_read(t, 0, &info), 0);
  CHECK_EQ(info.pid, getpid());
  CHECK_EQ(info.generation % 2, 0);
  CHECK(info.generation > 4);

  /* An odd generation with a live pid is a claimer still writing: wait. */
  forge(t, 0, child, 7, 0, 0, NULL);
  CHECK_EQ(orch_hb_read(t, 0, &info), -EAGAIN);
  CHECK_EQ(orch_hb_register(t, "x", 1, &s), -ENOSPC);

  kill(child, SIGKILL);
  CHECK_EQ(wait_exit(child), 128 + SIGKILL);
  /* ...and with a dead pid, a claimer that died mid-write: reclaimed. */
  CHECK_EQ(orch_hb_register(t, "x", 1, &s), 0);
  CHECK_EQ(orch_hb_read(t, 0, &info), 0);
  CHECK_EQ(info.generation, 10);
  orch_hb_close(t);
}

static void test_garbage_survived(void) {
  orch_hb_table *t = private_table(0, 5);
  if (!t) return;
  uint64_t init_start;
  CHECK_EQ(orch_hb_proc_stat(1, &init_start, NULL, NULL), 0);
  forge(t, 0, -1, 0, 0, 0xffffffffu, NULL);
  forge(t, 1, 1, 2, init_start, 0xffffffffu, "init");
  forge(t, 2, 1, 2, init_start + 1, 5, "fake-init");
  forge(t, 3, 0x7fffffff, 2, 99, 1, NULL);
  forge(t, 4, 0, 3, 0, 0, NULL);     /* odd and free: never happens, skip */
  orch_hb_info info;
  CHECK_EQ(orch_hb_read(t, 0, &info), 0);
  CHECK_EQ(info.pid, -1);
  CHECK_EQ(strlen(info.name), 63);   /* NUL forced */
  CHECK_EQ(orch_hb_read(t, 4, &info), -EAGAIN);
  /* Reclaiming takes the garbage and the dead, never init. */
  orch_hb_slot s[4];
  int got = 0;
  while (got < 4 && orch_hb_register(t, "r", 1, &s[got]) == 0) got++;
  CHECK_EQ(got, 3);
  CHECK_EQ(orch_hb_read(t, 1, &info), 0);
  CHECK_EQ(info.pid, 1);
  CHECK(strcmp(info.name, "init") == 0);
  orch_hb_close(t);
}

/* ---- Supervisor hand-off and the environment -------------------------- */

static void test_handoff(void) {
  for (int order = 0; order < 2; order++) {
    key_t key = run_key(6 + order);
    orch_hb_table *t = NULL;
    CHECK_EQ(orch_hb_open_slots(key, ORCH_HB_CREATE | ORCH_HB_EXCL, 0, 4, &t), 0);
    if (!t) return;
    orch_hb_slot r;
    CHECK_EQ(orch_hb_reserve(t, "svc", 3000, &r), 0);
    orch_hb_info info;
    CHECK_EQ(orch_hb_read(t, r.index, &info), 0);
    CHECK_EQ(info.pid, getpid());
    CHECK_EQ(info.flags, ORCH_HB_F_RESERVED);
    char kbuf[32], sbuf[16];
    snprintf(kbuf, sizeof kbuf, "%d", (int)key);
    snprintf(sbuf, sizeof sbuf, "%u", r.index);
    int to_child[2], to_parent[2];
    CHECK(pipe(to_child) == 0 && pipe(to_parent) == 0);
    pid_t child = fork();
    if (child == 0) {
      char c;
      orch_hb_table *ct;
      orch_hb_slot cs;
      close(to_child[1]);
      close(to_parent[0]);
      if (order == 1 && read(to_child[0], &c, 1) != 1) _exit(30);  /* assigned first */
      setenv(ORCH_HB_ENV_KEY, kbuf, 1);
      setenv(ORCH_HB_ENV_SLOT, sbuf, 1);
      int rc = orch_hb_slot_from_env(&ct, &cs);
      if (rc != 0) _exit(31);
      if (cs.pid != getpid()) _exit(32);
      if (orch_hb_beat(&cs) != 0) _exit(33);
      if (write(to_parent[1], "x", 1) != 1) _exit(34);
      if (read(to_child[0], &c, 1) < 0) _exit(35);   /* until the parent is done */
      orch_hb_close(ct);
      _exit(0);
    }
    close(to_child[0]);
    close(to_parent[1]);
    char c;
    if (order == 1) {
      CHECK_EQ(orch_hb_assign(&r, child), 0);
      CHECK(write(to_child[1], "g", 1) == 1);
      CHECK(read(to_parent[0], &c, 1) == 1);
    } else {
      CHECK(read(to_parent[0], &c, 1) == 1);   /* the child adopted it */
      CHECK_EQ(orch_hb_assign(&r, child), 0);
    }
    CHECK_EQ(r.pid, child);
    CHECK_EQ(orch_hb_read(t, r.index, &info), 0);
    CHECK_EQ(info.pid, child);
    CHECK_EQ(info.flags, 0);
    CHECK_EQ(info.timeout_ms, 3000);
    CHECK(strcmp(info.name, "svc") == 0);
    uint64_t st;
    CHECK_EQ(orch_hb_proc_stat(child, &st, NULL, NULL), 0);
    CHECK_EQ(info.start_time, st);
    CHECK_EQ(orch_hb_beat(&r), 0);   /* the supervisor's handle follows */
    close(to_child[1]);
    CHECK_EQ(wait_exit(child), 0);
    close(to_parent[0]);
    CHECK_EQ(orch_hb_remove(t), 0);
    orch_hb_close(t);
  }

  /* The environment, malformed or missing. */
  orch_hb_table *t;
  orch_hb_slot s;
  unsetenv(ORCH_HB_ENV_KEY);
  unsetenv(ORCH_HB_ENV_SLOT);
  CHECK_EQ(orch_hb_slot_from_env(&t, &s), -ENOENT);
  setenv(ORCH_HB_ENV_KEY, "12345", 1);
  CHECK_EQ(orch_hb_slot_from_env(&t, &s), -ENOENT);
  setenv(ORCH_HB_ENV_SLOT, "-1", 1);
  CHECK_EQ(orch_hb_slot_from_env(&t, &s), -EINVAL);
  setenv(ORCH_HB_ENV_SLOT, "1x", 1);
  CHECK_EQ(orch_hb_slot_from_env(&t, &s), -EINVAL);
  setenv(ORCH_HB_ENV_KEY, "nope", 1);
  setenv(ORCH_HB_ENV_SLOT, "1", 1);
  CHECK_EQ(orch_hb_slot_from_env(&t, &s), -EINVAL);
  unsetenv(ORCH_HB_ENV_KEY);
  unsetenv(ORCH_HB_ENV_SLOT);

  /* A slot nobody hands over: attach gives up after its wait. */
  t = private_table(0, 2);
  if (!t) return;
  CHECK_EQ(orch_hb_attach(t, 1, 20, &s), -EAGAIN);
  /* A slot held by an unrelated live process is not ours to take. */
  pid_t other = fork();
  if (other == 0) { pause(); _exit(0); }
  CHECK_EQ(orch_hb_register_pid(t, other, "other", 0, &s), 0);
  CHECK_EQ(orch_hb_attach(t, s.index, 0, &s), -EAGAIN);
  kill(other, SIGKILL);
  CHECK_EQ(wait_exit(other), 128 + SIGKILL);
  /* Registered by the parent in our place (a wrapper shell): the beats
   * count for the parent. */
  CHECK_EQ(orch_hb_register(t, "wrapper", 0, &s), 0);
  pid_t child = fork();
  if (child == 0) {
    orch_hb_slot cs;
    if (orch_hb_attach(t, s.index, 0, &cs) != 0) _exit(40);
    if (cs.pid != getppid()) _exit(41);
    _exit(orch_hb_beat(&cs) == 0 ? 0 : 42);
  }
  CHECK_EQ(wait_exit(child), 0);
  orch_hb_close(t);
}

/* ---- The classic table ------------------------------------------------ */

static void test_compat(void) {
  orch_hb_table *t = private_table(ORCH_HB_COMPAT, 0);
  if (!t) return;
  orch_hbc_entry *raw = orch_hb_entry_at(t, 0);
  orch_hb_slot s;
  time_t before = time(NULL);
  CHECK_EQ(orch_hbc_register(t, getpid(), "classic-prog", 30, &s), 0);
  CHECK_EQ(s.index, 0);
  CHECK_EQ(raw[0].pid, getpid());
  CHECK(strcmp(raw[0].pname, "classic-prog") == 0);
  CHECK_EQ(raw[0].timeout, 30);
  CHECK(raw[0].atime >= before && raw[0].atime <= time(NULL));
  raw[0].atime = 100;
  CHECK_EQ(orch_hbc_beat(&s), 0);
  CHECK(raw[0].atime >= before);
  CHECK_EQ(orch_hb_beat(&s), 0);       /* the generic verbs dispatch */

  /* A classic program's plain writes, read back by orch. */
  raw[7].pid = 4242;
  strcpy(raw[7].pname, "old-style");
  raw[7].timeout = 60;
  raw[7].atime = 1700000000;
  orch_hb_info info;
  CHECK_EQ(orch_hbc_read(t, 7, &info), 0);
  CHECK(info.compat);
  CHECK_EQ(info.pid, 4242);
  CHECK(strcmp(info.name, "old-style") == 0);
  CHECK_EQ(info.raw_timeout, 60);
  CHECK_EQ(info.timeout_ms, 60000);
  CHECK_EQ(info.atime, 1700000000);
  CHECK_EQ(info.start_time, 0);
  CHECK_EQ(orch_hb_read(t, 7, &info), 0);
  CHECK_EQ(orch_hbc_read(t, 8, &info), -ENOENT);
  raw[8].pid = 1;
  raw[8].timeout = -5;
  memset(raw[8].pname, 'p', sizeof raw[8].pname);
  CHECK_EQ(orch_hbc_read(t, 8, &info), 0);
  CHECK_EQ(info.timeout_ms, 0);
  CHECK_EQ(info.raw_timeout, -5);
  CHECK_EQ(strlen(info.name), 50);
  CHECK_EQ(orch_hbc_clear(t, 8, 2), -ESTALE);
  CHECK_EQ(orch_hbc_clear(t, 8, 1), 0);
  CHECK_EQ(raw[8].pid, 0);
  uint32_t cursor = 0, n = 0;
  while (orch_hb_next(t, &cursor, &info)) n++;
  CHECK_EQ(n, 2);

  /* Like the classic code, a slot left with our pid is reused; names are
   * truncated to 50 bytes; timeouts in ms round up to seconds. */
  orch_hb_slot again;
  char longname[100];
  memset(longname, 'n', 99);
  longname[99] = '\0';
  CHECK_EQ(orch_hbc_register(t, getpid(), longname, 5, &again), 0);
  CHECK_EQ(again.index, 0);
  CHECK_EQ(strlen(raw[0].pname), 50);
  CHECK_EQ(orch_hb_find(t, getpid(), &again), 0);
  CHECK_EQ(again.index, 0);
  CHECK_EQ(orch_hb_set_timeout(&again, 1500), 0);
  CHECK_EQ(raw[0].timeout, 2);
  CHECK_EQ(orch_hbc_unregister(&s), 0);
  CHECK_EQ(raw[0].pid, 0);
  CHECK_EQ(orch_hbc_beat(&again), -ESTALE);
  CHECK_EQ(orch_hb_register(t, "via-native", 2500, &s), 0);
  CHECK_EQ(raw[0].timeout, 3);
  CHECK_EQ(orch_hb_unregister(&s), 0);
  CHECK_EQ(orch_hb_reserve(t, "x", 1, &s), -EOPNOTSUPP);

  /* A dead classic owner's slot is reused once every slot is taken. */
  orch_hb_close(t);
  t = private_table(ORCH_HB_COMPAT, 1);
  if (!t) return;
  raw = orch_hb_entry_at(t, 0);
  pid_t gone = fork();
  if (gone == 0) _exit(0);
  wait_exit(gone);
  raw[0].pid = gone;
  CHECK_EQ(orch_hbc_register(t, getpid(), "p", 1, &s), 0);
  CHECK_EQ(raw[0].pid, getpid());
  orch_hb_close(t);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  unsetenv(ORCH_HB_ENV_KEY);
  unsetenv(ORCH_HB_ENV_SLOT);
  run("layout: sizes and offsets", test_layout);
  run("register, beat, unregister", test_register_beat_unregister);
  run("set_timeout and clear", test_set_timeout_and_clear);
  run("bad arguments", test_bad_arguments);
  run("keyed table, modes, sharing by key", test_keyed_table);
  run("uninitialised and foreign segments", test_uninitialised_segment);
  run("claim race: 8 processes fill 64 slots", test_claim_race_fill);
  run("claim race: 8 processes churn", test_claim_race_churn);
  run("reclaim a dead process's slot", test_reclaim_dead);
  run("pid-reuse defence", test_pid_reuse_defence);
  run("garbage in the table", test_garbage_survived);
  run("supervisor hand-off and environment", test_handoff);
  run("classic table round trip", test_compat);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
