/*
 * prog_ipc_peer: the other process in the IPC specs, in plain C (no orch).
 *   msgsend KEY TYPE TEXT [DELAY_MS]  sleep, then msgsnd (blocking)
 *   msgrecv KEY TYPE                  msgrcv (blocking), print "TYPE TEXT"
 *   shmadd KEY OFFSET N               N atomic increments of the 8-byte word
 *   semwait KEY INDEX                 semop -1 (blocking, no SEM_UNDO)
 *   sempost KEY INDEX                 semop +1
 *   semzero KEY INDEX                 semop 0 (wait until the value is 0), print "zero"
 *   semops KEY I:OP [I:OP...]         one semop of all these operations (blocking,
 *                                     no SEM_UNDO), print "done"
 *   stat shm|sem|msg KEY              IPC_STAT: print "uid=U gid=G mode=OOO"
 *                                     (and " qbytes=N" for msg)
 *   msgtry KEY TYPE LEN               msgsnd of LEN bytes with IPC_NOWAIT:
 *                                     exit 0 sent, 4 EAGAIN (the queue is full)
 * Exit codes: 0 ok, 2 usage, 3 a syscall failed.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <time.h>
#include <unistd.h>

static int usage(void) {
  fprintf(stderr, "usage: prog_ipc_peer msgsend|msgrecv|shmadd|semwait|sempost KEY ...\n");
  return 2;
}

int main(int argc, char **argv) {
  if (argc < 3) return usage();
  const char *cmd = argv[1];
  key_t key = (key_t)strtoul(argv[2], NULL, 0);
  if (strcmp(cmd, "msgsend") == 0 && argc >= 5) {
    if (argc > 5) {
      long ms = atol(argv[5]);
      struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
      nanosleep(&ts, NULL);
    }
    int id = msgget(key, 0);
    if (id < 0) { perror("msgget"); return 3; }
    size_t len = strlen(argv[4]);
    struct { long type; char text[8192]; } m;
    if (len > sizeof m.text) return usage();
    m.type = atol(argv[3]);
    memcpy(m.text, argv[4], len);
    if (msgsnd(id, &m, len, 0) < 0) { perror("msgsnd"); return 3; }
    return 0;
  }
  if (strcmp(cmd, "msgrecv") == 0 && argc == 4) {
    int id = msgget(key, 0);
    if (id < 0) { perror("msgget"); return 3; }
    struct { long type; char text[8192]; } m;
    ssize_t n = msgrcv(id, &m, sizeof m.text, atol(argv[3]), 0);
    if (n < 0) { perror("msgrcv"); return 3; }
    printf("%ld %.*s\n", m.type, (int)n, m.text);
    return 0;
  }
  if (strcmp(cmd, "shmadd") == 0 && argc == 5) {
    int id = shmget(key, 0, 0);
    if (id < 0) { perror("shmget"); return 3; }
    char *p = shmat(id, NULL, 0);
    if (p == (void *)-1) { perror("shmat"); return 3; }
    long off = atol(argv[3]), n = atol(argv[4]);
    for (long i = 0; i < n; i++)
      __atomic_add_fetch((int64_t *)(void *)(p + off), 1, __ATOMIC_SEQ_CST);
    shmdt(p);
    return 0;
  }
  if ((strcmp(cmd, "semwait") == 0 || strcmp(cmd, "sempost") == 0) && argc == 4) {
    int id = semget(key, 0, 0);
    if (id < 0) { perror("semget"); return 3; }
    struct sembuf op = { (unsigned short)atoi(argv[3]), (short)(cmd[3] == 'w' ? -1 : 1), 0 };
    if (semop(id, &op, 1) < 0) { perror("semop"); return 3; }
    return 0;
  }
  if (strcmp(cmd, "semzero") == 0 && argc == 4) {
    int id = semget(key, 0, 0);
    if (id < 0) { perror("semget"); return 3; }
    struct sembuf op = { (unsigned short)atoi(argv[3]), 0, 0 };
    if (semop(id, &op, 1) < 0) { perror("semop"); return 3; }
    printf("zero\n");
    return 0;
  }
  if (strcmp(cmd, "semops") == 0 && argc >= 4 && argc - 3 <= 16) {
    int id = semget(key, 0, 0);
    if (id < 0) { perror("semget"); return 3; }
    struct sembuf ops[16];
    int n = 0;
    for (int i = 3; i < argc; i++, n++) {
      int num, op;
      if (sscanf(argv[i], "%d:%d", &num, &op) != 2) return usage();
      ops[n].sem_num = (unsigned short)num;
      ops[n].sem_op = (short)op;
      ops[n].sem_flg = 0;
    }
    if (semop(id, ops, (size_t)n) < 0) { perror("semop"); return 3; }
    printf("done\n");
    return 0;
  }
  if (strcmp(cmd, "stat") == 0 && argc == 4) {
    key = (key_t)strtoul(argv[3], NULL, 0);
    struct ipc_perm *p;
    struct shmid_ds shm;
    struct semid_ds sem;
    struct msqid_ds msg;
    int id;
    if (strcmp(argv[2], "shm") == 0) {
      if ((id = shmget(key, 0, 0)) < 0 || shmctl(id, IPC_STAT, &shm) < 0) { perror("shm"); return 3; }
      p = &shm.shm_perm;
    } else if (strcmp(argv[2], "sem") == 0) {
      if ((id = semget(key, 0, 0)) < 0 || semctl(id, 0, IPC_STAT, &sem) < 0) { perror("sem"); return 3; }
      p = &sem.sem_perm;
    } else if (strcmp(argv[2], "msg") == 0) {
      if ((id = msgget(key, 0)) < 0 || msgctl(id, IPC_STAT, &msg) < 0) { perror("msg"); return 3; }
      p = &msg.msg_perm;
    } else {
      return usage();
    }
    printf("uid=%u gid=%u mode=%03o", (unsigned)p->uid, (unsigned)p->gid, (unsigned)(p->mode & 0777));
    if (p == &msg.msg_perm) printf(" qbytes=%lu", (unsigned long)msg.msg_qbytes);
    printf("\n");
    return 0;
  }
  if (strcmp(cmd, "msgtry") == 0 && argc == 5) {
    int id = msgget(key, 0);
    if (id < 0) { perror("msgget"); return 3; }
    struct { long type; char text[8192]; } m;
    size_t len = (size_t)atol(argv[4]);
    if (len > sizeof m.text) return usage();
    m.type = atol(argv[3]);
    memset(m.text, 'x', len);
    if (msgsnd(id, &m, len, IPC_NOWAIT) < 0) {
      if (errno == EAGAIN) return 4;
      perror("msgsnd");
      return 3;
    }
    return 0;
  }
  return usage();
}
