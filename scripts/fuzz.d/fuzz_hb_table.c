// link: src/heartbeat.c
/*
 * fuzz_hb_table.c: libFuzzer harness of the heartbeat table reader
 * (src/heartbeat.c): a segment with arbitrary contents and size, as another
 * user could leave it at the table's key, attached as a native table and as
 * a classic one, every slot read. Built and run by scripts/fuzz (in a private
 * IPC namespace: the key is fixed).
 */
#include <stdint.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>

#include "orch_heartbeat.h"

#define KEY ((key_t)0x0f7a2e01)

static void read_all(int flags) {
  orch_hb_table *t = NULL;
  if (orch_hb_open(KEY, flags, 0600, &t) != 0) return;
  uint32_t cursor = 0, n = orch_hb_slot_count(t);
  orch_hb_info info;
  while (orch_hb_next(t, &cursor, &info)) (void)strlen(info.name);
  for (uint32_t i = 0; i < n && i < 64; i++) (void)orch_hb_read(t, i, &info);
  (void)orch_hb_read(t, n, &info);
  (void)orch_hb_changes(t);
  orch_hb_close(t);
}

/* The first input byte chooses: bit 0 set, a native header (magic and
 * version) is written over the segment's first bytes, so the slot reader is
 * reached more often than random bytes would; otherwise the segment is the
 * input as it is (a classic table, or garbage). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2 || size > (1u << 20)) return 0;
  int patch = data[0] & 1;
  data++, size--;
  int id = shmget(KEY, 1, 0);
  if (id >= 0) shmctl(id, IPC_RMID, NULL);
  id = shmget(KEY, size, IPC_CREAT | IPC_EXCL | 0600);
  if (id < 0) return 0;
  void *p = shmat(id, NULL, 0);
  if (p == (void *)-1) { shmctl(id, IPC_RMID, NULL); return 0; }
  memcpy(p, data, size);
  if (patch && size >= 8) {
    uint32_t hdr[2] = { ORCH_HB_MAGIC, ORCH_HB_VERSION };
    memcpy(p, hdr, sizeof hdr);
  }
  shmdt(p);
  /* A zero magic makes a native attach wait for a creator (a timing path,
   * not parsing, and slow): only the classic reader sees those. */
  uint32_t magic = 0;
  if (size >= 4) memcpy(&magic, patch ? (const void *)&(uint32_t){ ORCH_HB_MAGIC } : (const void *)data, 4);
  if (magic) {
    read_all(ORCH_HB_RDONLY);
    read_all(0);
  }
  read_all(ORCH_HB_COMPAT | ORCH_HB_RDONLY);
  shmctl(id, IPC_RMID, NULL);
  return 0;
}
