/*
 * prog_sup_tcp.c: listens on 127.0.0.1:PORT after DELAY_MS and accepts (and
 * closes) connections until killed, for the supervisor's tcp readiness spec.
 * usage: prog_sup_tcp PORT [DELAY_MS [RETRY]]. With RETRY = 1, a port in use
 * is tried again every 20 ms until it is free (as nginx retries its bind);
 * otherwise exit 1 if the port cannot be bound.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: prog_sup_tcp PORT [DELAY_MS]\n");
    return 2;
  }
  int port = atoi(argv[1]);
  long delay = argc > 2 ? atol(argv[2]) : 0;
  int retry = argc > 3 && atoi(argv[3]) == 1;
  struct timespec ts = { delay / 1000, (delay % 1000) * 1000000L };
  nanosleep(&ts, NULL);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int r;
  while ((r = bind(fd, (struct sockaddr *)&sa, sizeof sa)) < 0 && retry && errno == EADDRINUSE) {
    struct timespec w = { 0, 20 * 1000000L };
    nanosleep(&w, NULL);
  }
  if (r < 0 || listen(fd, 16) < 0) {
    perror("prog_sup_tcp");
    return 1;
  }
  printf("listening %d\n", port);
  fflush(stdout);
  for (;;) {
    int c = accept(fd, NULL, NULL);
    if (c >= 0) close(c);
  }
}
