/*
 * ipc_c.c: the C side of the SysV IPC benchmark (scripts/bench.d/ipc.lua is
 * the orch side). Prints "name value unit" lines:
 *   msg_roundtrip_c   message-queue round trips per second between two
 *                     processes (parent sends type 1, child answers type 2)
 *   sem_pingpong_c    semaphore hand-overs per second between two processes
 *   sem_postwait_c    uncontended post + wait pairs per second (SEM_UNDO)
 *   shm_rw_c          typed 32-bit reads and writes per second on a segment
 * Usage: ipc_c [scale]   (scale multiplies the iteration counts, default 1)
 * Stopped before its end (SIGINT, SIGTERM, SIGHUP), it removes the queue
 * or semaphore set it measures and exits 128 + the signal's number.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

/* This process's CPU time in seconds (the other side's is its own). */
static double cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The object being measured, removed by a stop (async-signal-safe calls). */
static volatile sig_atomic_t live_q = -1, live_s = -1;

static void on_stop(int sig) {
  if (live_q >= 0) msgctl(live_q, IPC_RMID, NULL);
  if (live_s >= 0) semctl(live_s, 0, IPC_RMID);
  _exit(128 + sig);
}

struct msg { long type; char text[64]; };

static void bench_msg(long n) {
  int q = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
  if (q < 0) die("msgget");
  live_q = q;
  struct msg m = { 1, "ping" };
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    for (long i = 0; i < n; i++) {
      if (msgrcv(q, &m, sizeof m.text, 1, 0) < 0) _exit(1);
      m.type = 2;
      if (msgsnd(q, &m, 4, 0) < 0) _exit(1);
    }
    _exit(0);
  }
  double t0 = now(), c0 = cpu();
  for (long i = 0; i < n; i++) {
    m.type = 1;
    if (msgsnd(q, &m, 4, 0) < 0) die("msgsnd");
    if (msgrcv(q, &m, sizeof m.text, 2, 0) < 0) die("msgrcv");
  }
  double dt = now() - t0;
  waitpid(pid, NULL, 0);
  msgctl(q, IPC_RMID, NULL);
  live_q = -1;
  printf("msg_roundtrip_c %.0f rt/s\n", (double)n / dt);
  printf("msg_roundtrip_cpu_c %.2f us\n", (cpu() - c0) * 1e6 / (double)n);
}

static void semop1(int id, unsigned short num, short op, short flg) {
  struct sembuf b = { num, op, flg };
  if (semop(id, &b, 1) < 0) die("semop");
}

static void bench_sem(long n, long m) {
  int s = semget(IPC_PRIVATE, 2, IPC_CREAT | 0600);
  if (s < 0) die("semget");
  live_s = s;
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    for (long i = 0; i < n; i++) {
      semop1(s, 0, -1, 0);
      semop1(s, 1, 1, 0);
    }
    _exit(0);
  }
  double t0 = now(), c0 = cpu();
  for (long i = 0; i < n; i++) {
    semop1(s, 0, 1, 0);
    semop1(s, 1, -1, 0);
  }
  double dt = now() - t0;
  waitpid(pid, NULL, 0);
  printf("sem_pingpong_c %.0f rt/s\n", (double)n / dt);
  printf("sem_pingpong_cpu_c %.2f us\n", (cpu() - c0) * 1e6 / (double)n);

  t0 = now();
  for (long i = 0; i < m; i++) {
    semop1(s, 0, 1, SEM_UNDO | IPC_NOWAIT);
    semop1(s, 0, -1, SEM_UNDO | IPC_NOWAIT);
  }
  dt = now() - t0;
  printf("sem_postwait_c %.0f pairs/s\n", (double)m / dt);
  semctl(s, 0, IPC_RMID);
  live_s = -1;
}

static void bench_shm(long n) {
  int id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
  if (id < 0) die("shmget");
  volatile unsigned char *p = shmat(id, NULL, 0);
  if (p == (void *)-1) die("shmat");
  shmctl(id, IPC_RMID, NULL);
  uint64_t sum = 0;
  double t0 = now();
  for (long i = 0; i < n; i++) {
    size_t off = ((size_t)i * 4) & 4095;
    *(volatile uint32_t *)(p + off) = (uint32_t)i;
    sum += *(volatile uint32_t *)(p + off);
  }
  double dt = now() - t0;
  shmdt((const void *)p);
  printf("shm_rw_c %.0f ops/s\n", 2.0 * (double)n / dt);
  if (sum == 1) printf("#\n");
}

int main(int argc, char **argv) {
  signal(SIGINT, on_stop);
  signal(SIGTERM, on_stop);
  signal(SIGHUP, on_stop);
  double scale = argc > 1 ? atof(argv[1]) : 1.0;
  if (scale <= 0) scale = 1.0;
  bench_msg((long)(50000 * scale));
  bench_sem((long)(50000 * scale), (long)(1000000 * scale));
  bench_shm((long)(100000000 * scale));
  return 0;
}
