/*
 * prog_semhold KEY [INDEX]: takes one unit of semaphore INDEX (default 0) of
 * the existing set KEY with SEM_UNDO, prints "held", then sleeps until
 * killed. Used to check that a holder killed with SIGKILL gives its unit
 * back. Exit codes: 2 usage, 3 semget/semop failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/sem.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: prog_semhold KEY [INDEX]\n");
    return 2;
  }
  key_t key = (key_t)strtoul(argv[1], NULL, 0);
  unsigned short idx = argc > 2 ? (unsigned short)atoi(argv[2]) : 0;
  int id = semget(key, 0, 0);
  if (id < 0) { perror("semget"); return 3; }
  struct sembuf op = { idx, -1, SEM_UNDO };
  if (semop(id, &op, 1) < 0) { perror("semop"); return 3; }
  printf("held\n");
  fflush(stdout);
  for (;;) pause();
}
