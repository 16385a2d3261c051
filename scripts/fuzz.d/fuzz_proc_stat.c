// link: src/heartbeat.c src/procfs.c -Wl,--wrap=open
/*
 * fuzz_proc_stat.c: libFuzzer harness of the /proc/PID/stat and
 * /proc/PID/status parsing in src/procfs.c (the one parser, reached through
 * the heartbeat library's orch_hb_proc_stat): the
 * kernel's text is replaced by the input (open of /proc/FAKE_PID/... is
 * wrapped to return a memfd holding it), so a command name with ") " or
 * newlines, missing fields, huge numbers and no NUL are all tried. Built and
 * run by scripts/fuzz.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "orch_heartbeat.h"

#define FAKE_PID 424242

static const uint8_t *cur_data;
static size_t cur_size;

int __real_open(const char *path, int flags, ...);

int __wrap_open(const char *path, int flags, ...) {
  char prefix[32];
  snprintf(prefix, sizeof prefix, "/proc/%d/", FAKE_PID);
  if (strncmp(path, prefix, strlen(prefix)) == 0) {
    int fd = memfd_create("stat", MFD_CLOEXEC);
    if (fd < 0) return -1;
    /* stat gets the input, status the same bytes (Uid: lines and all). */
    if (cur_size && write(fd, cur_data, cur_size) != (ssize_t)cur_size) { close(fd); errno = EIO; return -1; }
    lseek(fd, 0, SEEK_SET);
    return fd;
  }
  va_list ap;
  va_start(ap, flags);
  int mode = (flags & O_CREAT) ? va_arg(ap, int) : 0;
  va_end(ap);
  return __real_open(path, flags, mode);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cur_data = data;
  cur_size = size;
  uint64_t start = 0;
  char state = 0;
  uint32_t uid = 0;
  (void)orch_hb_proc_stat(FAKE_PID, &start, &state, &uid);
  (void)orch_hb_proc_stat(FAKE_PID, &start, NULL, NULL);
  return 0;
}
