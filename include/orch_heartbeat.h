/*
 * orch_heartbeat.h: the heartbeat table, client and reader side
 * (liborch_heartbeat; no libuv, no Lua, no lock).
 *
 * A heartbeat table is one SysV shared-memory segment: a 64-byte header
 * followed by fixed-size 128-byte slots. A process registers (claims a slot
 * with a compare-and-swap on the slot's owner word, pid + generation), then
 * beats: one atomic store of CLOCK_MONOTONIC nanoseconds into its slot. A
 * watchdog reads the slots and acts on those whose last beat is older than
 * their timeout. Because nothing ever takes a lock, a process that dies at any
 * point cannot wedge the table: its slot is reclaimed once its pid is gone
 * (or its pid now names another process: the start time recorded at
 * registration, from /proc/<pid>/stat field 22, no longer matches).
 *
 * The classic table (key 0x5095, 1000 slots of
 * `struct { int pid; char pname[51]; int timeout; time_t atime; }`, 72 bytes,
 * wall-clock seconds) is supported by the same handle when the table is
 * opened with ORCH_HB_COMPAT; the orch_hbc_* functions read and write it.
 *
 * Functions return 0 (or a count) on success and a negated errno on failure,
 * like libuv. Nothing here blocks except orch_hb_attach()/from_env() with a
 * non-zero wait. See doc/heartbeat.md for the protocol.
 */
#ifndef ORCH_HEARTBEAT_H
#define ORCH_HEARTBEAT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Constants ------------------------------------------------------- */

/* The default key of the native table: "orhb" in ASCII. Overridden by the
 * environment variable ORCH_HEARTBEAT_KEY (decimal, or 0x-prefixed hex). */
#define ORCH_HB_DEFAULT_KEY   0x6F726862
/* The key of the classic table. */
#define ORCH_HB_COMPAT_KEY    0x5095
/* Pass as key to orch_hb_open() to mean "the default": ORCH_HEARTBEAT_KEY if
 * set, else ORCH_HB_DEFAULT_KEY (ORCH_HB_COMPAT_KEY with ORCH_HB_COMPAT). */
#define ORCH_HB_KEY_DEFAULT   ((key_t)-1)

#define ORCH_HB_MAGIC         0x4F524842u   /* "BHRO" in memory on x86 */
#define ORCH_HB_VERSION       1u
#define ORCH_HB_HEADER_SIZE   64u
#define ORCH_HB_SLOT_SIZE     128u
#define ORCH_HB_NAME_MAX      64u           /* bytes, including the NUL */
#define ORCH_HB_DEFAULT_SLOTS 1024u

#define ORCH_HBC_SLOT_SIZE    72u
#define ORCH_HBC_PNAME_MAX    51u           /* bytes, including the NUL */
#define ORCH_HBC_DEFAULT_SLOTS 1000u

/* Environment variables a supervisor gives a child (see orch_hb_slot_from_env). */
#define ORCH_HB_ENV_KEY       "ORCH_HEARTBEAT_KEY"
#define ORCH_HB_ENV_SLOT      "ORCH_HEARTBEAT_SLOT"

/* orch_hb_open() flags. */
#define ORCH_HB_CREATE  0x1   /* create the segment when it does not exist */
#define ORCH_HB_EXCL    0x2   /* with CREATE: fail with -EEXIST if it exists */
#define ORCH_HB_COMPAT  0x4   /* the classic 72-byte layout */
#define ORCH_HB_RDONLY  0x8   /* attach read-only (writers return -EROFS) */
#define ORCH_HB_SHARED  0x10  /* accept an existing table that users other
                                 than its owner may write (mode 0660/0666):
                                 the classic shared table; see below */

/* Slot flags (orch_hb_entry.flags). */
#define ORCH_HB_F_RESERVED 0x1u  /* held by a supervisor (pid = its own) for a
                                    child not started yet: never timed out */
#define ORCH_HB_F_PROXY    0x2u  /* registered by another process on the
                                    owner's behalf (orch_hb_register_pid) */

/* ---- Shared-memory layout (native) ------------------------------------ */

/* Offset 0 of the segment. Every field is written once, at creation,
 * except `changes`. A segment whose magic is still 0 is being initialised;
 * any opener may finish that (the values derive from the segment size). */
typedef struct orch_hb_header {
  uint32_t magic;         /*  0: ORCH_HB_MAGIC */
  uint32_t version;       /*  4: ORCH_HB_VERSION */
  uint32_t slot_count;    /*  8: (segment size - header_size) / slot_size */
  uint32_t slot_size;     /* 12: ORCH_HB_SLOT_SIZE */
  uint32_t header_size;   /* 16: offset of slot 0 (ORCH_HB_HEADER_SIZE) */
  uint32_t changes;       /* 20: atomically incremented on every claim,
                                 release and identity change; a reader that
                                 sees it unchanged may skip a rescan */
  uint8_t  reserved[40];  /* 24..63: zero */
} orch_hb_header;

/* Slot i lives at offset header_size + i * slot_size; 64-byte aligned.
 *
 * `owner` is the slot's one synchronisation word: the pid (low half in
 * memory order, offset 0) and the generation (offset 4) change together with
 * one 64-bit CAS. A free slot is {pid 0, even generation}. Claiming CASes
 * {0, g} -> {pid, g+1}: while the generation is odd the identity fields
 * (start_time .. name) are being written and readers retry; the claimer then
 * stores {pid, g+2}. Releasing CASes {pid, g} -> {0, g+2}. Reclaiming a dead
 * owner's slot CASes {dead, g} -> {pid, next odd}. Readers take seqlock
 * snapshots: owner, fields, owner again, equal and even or retry.
 * last_beat is outside the seqlock: a beat never bumps the generation. */
typedef struct orch_hb_entry {
  union {
    uint64_t owner;                    /*  0: CAS word */
    struct {
      int32_t  pid;                    /*  0: 0 = free */
      uint32_t generation;             /*  4: odd = identity being written */
    };
  };
  uint64_t last_beat;                  /*  8: CLOCK_MONOTONIC ns of the last beat
                                              (the claim counts as one) */
  uint64_t start_time;                 /* 16: clock ticks after boot, from
                                              /proc/<pid>/stat field 22 */
  uint32_t uid;                        /* 24: real uid of the owner */
  uint32_t timeout_ms;                 /* 28: 0 = never times out */
  uint32_t flags;                      /* 32: ORCH_HB_F_* */
  uint32_t reserved0;                  /* 36 */
  uint64_t registered;                 /* 40: CLOCK_MONOTONIC ns of the claim */
  uint8_t  reserved[16];               /* 48..63 */
  union {
    char     name[ORCH_HB_NAME_MAX];   /* 64..127: NUL-terminated, zero-padded */
    uint64_t name_words[ORCH_HB_NAME_MAX / 8];
  };
} orch_hb_entry;

/* ---- Shared-memory layout (classic, "compat") ------------------------- */

/* Exactly the classic programs' struct: offsets 0 / 4 / 56 / 64, 72 bytes on
 * x86-64 (time_t is 64-bit). atime is wall-clock seconds (time(0)). */
typedef struct orch_hbc_entry {
  int    pid;                          /*  0 */
  char   pname[ORCH_HBC_PNAME_MAX];    /*  4 */
  int    timeout;                      /* 56: seconds */
  time_t atime;                        /* 64: time(0) of the last beat */
} orch_hbc_entry;

/* ---- Handles --------------------------------------------------------- */

typedef struct orch_hb_table orch_hb_table;   /* opaque; one per attach */

/* A registration held by this process (for itself or on behalf of `pid`).
 * Plain data: copy it freely; it stays valid until unregistered or the table
 * is closed. */
typedef struct orch_hb_slot {
  orch_hb_table *table;
  void     *entry;      /* orch_hb_entry * or orch_hbc_entry * */
  uint64_t  owner;      /* the owner word while the registration is ours */
  uint32_t  index;
  int32_t   pid;
  int       compat;
} orch_hb_slot;

/* A consistent snapshot of one registration (native or compat). */
typedef struct orch_hb_info {
  uint32_t index;
  int32_t  pid;
  uint32_t generation;   /* compat: 0 */
  uint32_t uid;          /* compat: 0 (unknown) */
  uint64_t start_time;   /* compat: 0 (unknown) */
  uint64_t last_beat;    /* native: monotonic ns; compat: 0 (see atime) */
  uint64_t registered;   /* native: monotonic ns; compat: 0 */
  uint32_t timeout_ms;   /* compat: timeout * 1000 (negative timeouts: 0) */
  uint32_t flags;
  int64_t  atime;        /* compat: wall-clock seconds; native: 0 */
  int32_t  raw_timeout;  /* compat: the timeout field as written; native: 0 */
  int      compat;
  char     name[ORCH_HB_NAME_MAX];
} orch_hb_info;

/* ---- Opening --------------------------------------------------------- */

/* Attaches the table with SysV key `key` (ORCH_HB_KEY_DEFAULT: see above;
 * IPC_PRIVATE: always a new segment, shared by fork). mode: permission bits
 * when creating, 0 = 0600; pass 0660 or 0666 only for tables shared between
 * users (any writer can then forge any slot). Creates ORCH_HB_DEFAULT_SLOTS
 * (or ORCH_HBC_DEFAULT_SLOTS) slots.
 *
 * Trust: a table that already exists is attached only when its owner and
 * its creator (shm_perm.uid and cuid) are this process's effective uid or
 * root (-EPERM otherwise), and, unless flags has ORCH_HB_SHARED, when no
 * group or other write bit is set in its mode (-EACCES otherwise). Another
 * user who created the table first could otherwise forge every slot: make a
 * root watchdog kill a root process, or keep a hung service "alive".
 * orch_hb_owner() tells why a table was refused.
 * Errors: -ENOENT (no such table, no CREATE), -EEXIST, -EACCES, -EPERM,
 * -EPROTO (the segment is not a heartbeat table of this version / layout),
 * -ENOMEM, and shmget(2) / shmat(2) errors. */
int orch_hb_open(key_t key, int flags, int mode, orch_hb_table **tablep);
/* The owner uid, creator uid and permission bits of the existing segment
 * that orch_hb_open(key, flags, ...) would attach (key resolved the same
 * way), without attaching it. Returns 0, or -ENOENT and shmget(2)/shmctl(2)
 * errors. */
int orch_hb_owner(key_t key, int flags, uint32_t *uid, uint32_t *cuid, uint32_t *mode);
/* Same, with the slot count used when creating (0 = default). */
int orch_hb_open_slots(key_t key, int flags, int mode, uint32_t slots,
                       orch_hb_table **tablep);
/* Detaches and frees the handle; slot handles on it become invalid.
 * Registrations stay in the table (close is not unregister). */
void orch_hb_close(orch_hb_table *table);
/* Marks the segment for removal (IPC_RMID); it goes when the last process
 * detaches. The handle stays usable until orch_hb_close(). */
int orch_hb_remove(orch_hb_table *table);

key_t    orch_hb_key(const orch_hb_table *table);
int      orch_hb_shmid(const orch_hb_table *table);
uint32_t orch_hb_slot_count(const orch_hb_table *table);
int      orch_hb_is_compat(const orch_hb_table *table);
/* The header's change counter (compat: always 0). */
uint32_t orch_hb_changes(const orch_hb_table *table);
/* The slot's address, for readers that want the raw layout; NULL if out of
 * range. orch_hb_entry * (native) or orch_hbc_entry * (compat). */
void    *orch_hb_entry_at(const orch_hb_table *table, uint32_t index);

/* ---- Registering and beating (both layouts) --------------------------- */

/* Registers the calling process: claims a free slot, or reclaims one whose
 * owner is dead. name: 1..63 bytes (compat: truncated to 50). timeout_ms: 0 =
 * never times out (compat: rounded up to whole seconds).
 * Errors: -EINVAL, -ENAMETOOLONG, -ENOSPC (every slot held by a live
 * process), -EROFS, /proc read errors. */
int orch_hb_register(orch_hb_table *table, const char *name,
                     uint32_t timeout_ms, orch_hb_slot *slot);
/* Registers `pid` (> 0, alive) on its behalf: `orch beat --pid`, a supervisor
 * registering a child. -ESRCH if pid does not exist. */
int orch_hb_register_pid(orch_hb_table *table, pid_t pid, const char *name,
                         uint32_t timeout_ms, orch_hb_slot *slot);
/* One beat: checks the slot is still this registration, then one atomic
 * store of the monotonic clock (compat: time(0)). -ESTALE if the slot was
 * released or reclaimed meanwhile (register again). */
int orch_hb_beat(const orch_hb_slot *slot);
/* Releases the slot. -ESTALE if it was no longer ours (nothing changed). */
int orch_hb_unregister(orch_hb_slot *slot);
/* Changes the timeout of a registration (0 = never times out). Updates
 * slot->owner (the generation moves). -ESTALE as above. */
int orch_hb_set_timeout(orch_hb_slot *slot, uint32_t timeout_ms);
/* Finds the registration of `pid` whose start time matches the process that
 * holds the pid now (compat: the first slot with that pid). -ENOENT if none,
 * -ESRCH if pid does not exist. */
int orch_hb_find(orch_hb_table *table, pid_t pid, orch_hb_slot *slot);

/* ---- Supervisor hand-off (native only) -------------------------------- */

/* A supervisor must tell a child its slot index (ORCH_HEARTBEAT_SLOT) before
 * the child's pid exists. It reserves a slot under its own pid with
 * ORCH_HB_F_RESERVED (never timed out), spawns the child with the two
 * environment variables, then calls orch_hb_assign(slot, child_pid). The
 * child's orch_hb_slot_from_env() adopts the slot itself if it runs first;
 * either order ends in the same registration. */
int orch_hb_reserve(orch_hb_table *table, const char *name,
                    uint32_t timeout_ms, orch_hb_slot *slot);
int orch_hb_assign(orch_hb_slot *slot, pid_t pid);

/* Attaches the calling process to slot `index`: the slot holds its pid, or is
 * reserved by its parent (adopted), or holds its parent's pid (a wrapper
 * shell registered in its place: the beats count for the parent). Otherwise
 * waits up to wait_ms (polling every millisecond) for the parent to assign
 * it, then fails with -EAGAIN. */
int orch_hb_attach(orch_hb_table *table, uint32_t index, int wait_ms,
                   orch_hb_slot *slot);
/* Opens the table named by ORCH_HEARTBEAT_KEY (no create) and attaches slot
 * ORCH_HEARTBEAT_SLOT, waiting up to 2 s. -ENOENT when either variable is
 * unset, -EINVAL when malformed. On success *tablep is the caller's to close. */
int orch_hb_slot_from_env(orch_hb_table **tablep, orch_hb_slot *slot);
/* Parses ORCH_HEARTBEAT_KEY and ORCH_HEARTBEAT_SLOT (either pointer may be
 * NULL to skip it). -ENOENT when a wanted one is unset, -EINVAL when
 * malformed (key: decimal or 0x-hex, > 0; slot: decimal). */
int orch_hb_env(key_t *key, uint32_t *index);

/* ---- Reading (the watchdog's side) ------------------------------------ */

/* A consistent snapshot of slot `index`. Returns 0 (in use), -ENOENT (free),
 * -EAGAIN (identity being written: try again soon), -ERANGE (bad index). */
int orch_hb_read(const orch_hb_table *table, uint32_t index, orch_hb_info *info);
/* Iterates over the slots in use: start with *cursor = 0; returns 1 with
 * *info filled and *cursor advanced, 0 at the end. Slots being written are
 * skipped. */
int orch_hb_next(const orch_hb_table *table, uint32_t *cursor, orch_hb_info *info);
/* Frees the slot if it still holds exactly the registration in `info` (same
 * pid and generation). -ESTALE otherwise. Never signals anything. */
int orch_hb_clear(orch_hb_table *table, const orch_hb_info *info);
/* 1 if the process of `info` still runs (pid exists, not a zombie, and, when
 * info->start_time is non-zero, the same start time), 0 if not. Sends no
 * signal (kill(pid, 0) and /proc only); pid <= 0 is never alive. */
int orch_hb_alive(pid_t pid, uint64_t start_time);

/* ---- Small helpers --------------------------------------------------- */

/* Start time (clock ticks after boot, /proc/<pid>/stat field 22), state
 * letter and real uid of pid; any pointer may be NULL. -ESRCH if gone. */
int orch_hb_proc_stat(pid_t pid, uint64_t *start_time, char *state, uint32_t *uid);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t orch_hb_now_ns(void);

/* ---- The classic layout by name -------------------------------------- */

/* orch_hb_open(key, flags | ORCH_HB_COMPAT, mode, tablep). */
int orch_hbc_open(key_t key, int flags, int mode, orch_hb_table **tablep);
/* Registers like the classic programs: reuses a slot already holding pid,
 * else CASes a free one; writes atime, timeout (seconds) and pname. */
int orch_hbc_register(orch_hb_table *table, pid_t pid, const char *pname,
                      int timeout_s, orch_hb_slot *slot);
/* atime = time(0) if the slot still holds slot->pid; -ESTALE otherwise. */
int orch_hbc_beat(const orch_hb_slot *slot);
int orch_hbc_unregister(orch_hb_slot *slot);
/* A snapshot of a classic slot (two equal copies, bounded retries). */
int orch_hbc_read(const orch_hb_table *table, uint32_t index, orch_hb_info *info);
/* pid -> 0 by CAS if the slot still holds pid (-ESTALE otherwise). */
int orch_hbc_clear(orch_hb_table *table, uint32_t index, pid_t pid);

#ifdef __cplusplus
}
#endif
#endif
