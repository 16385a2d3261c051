/*
 * pipe_c.c: the raw-C baseline for pipe throughput, and the C peer that
 * pipe.lua measures orch against.
 *
 *   pipe_c [MB]               fork a reader, write MB MiB through a pipe in
 *                             64 KiB writes; prints "pipe_c <MB/s> MB/s"
 *   pipe_c --write PATH MB    open PATH (a FIFO) and write MB MiB into it
 *   pipe_c --read PATH        read PATH to EOF; prints the byte count
 *
 * Blocking I/O with 64 KiB buffers, the way a plain C program does it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int writer(int fd, long mb) {
  static char buf[CHUNK];
  memset(buf, 'x', sizeof buf);
  long long total = (long long)mb * 1024 * 1024;
  for (long long done = 0; done < total; done += CHUNK)
    if (write_all(fd, buf, CHUNK) < 0) { perror("pipe_c: write"); return 1; }
  return 0;
}

static long long reader(int fd) {
  static char buf[CHUNK];
  long long n = 0;
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) { perror("pipe_c: read"); return -1; }
    if (r == 0) return n;
    n += r;
  }
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "--write") == 0) {
    int fd = open(argv[2], O_WRONLY);
    if (fd < 0) { perror("pipe_c: open"); return 1; }
    return writer(fd, atol(argv[3]));
  }
  if (argc == 3 && strcmp(argv[1], "--read") == 0) {
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) { perror("pipe_c: open"); return 1; }
    long long n = reader(fd);
    if (n < 0) return 1;
    printf("%lld\n", n);
    return 0;
  }
  long mb = argc > 1 ? atol(argv[1]) : 1024;
  if (mb <= 0) { fprintf(stderr, "usage: pipe_c [MB] | --write PATH MB | --read PATH\n"); return 2; }
  int fds[2];
  if (pipe(fds) < 0) { perror("pipe_c: pipe"); return 1; }
  double t0 = now();
  pid_t pid = fork();
  if (pid < 0) { perror("pipe_c: fork"); return 1; }
  if (pid == 0) {
    close(fds[1]);
    long long n = reader(fds[0]);
    _exit(n == (long long)mb * 1024 * 1024 ? 0 : 1);
  }
  close(fds[0]);
  int r = writer(fds[1], mb);
  close(fds[1]);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
  double dt = now() - t0;
  if (r || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "pipe_c: transfer failed\n");
    return 1;
  }
  printf("pipe_c %.0f MB/s\n", mb / dt);
  return 0;
}
