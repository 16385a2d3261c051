/*
 * prog_sup_mem.c: allocates and touches MB megabytes after DELAY_MS, then
 * sleeps until killed, for the supervisor's memory-limit spec.
 * usage: prog_sup_mem MB [DELAY_MS]. stdout: "allocated".
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: prog_sup_mem MB [DELAY_MS]\n");
    return 2;
  }
  long mb = atol(argv[1]);
  long delay = argc > 2 ? atol(argv[2]) : 0;
  struct timespec ts = { delay / 1000, (delay % 1000) * 1000000L };
  nanosleep(&ts, NULL);
  char *p = malloc((size_t)mb << 20);
  if (!p) return 1;
  /* Touch every page through a volatile pointer: at -O2 a plain memset of
   * memory that is never read is optimized away with the malloc. */
  for (size_t i = 0; i < ((size_t)mb << 20); i += 4096) ((volatile char *)p)[i] = 1;
  printf("allocated\n");
  fflush(stdout);
  for (;;) pause();
}
