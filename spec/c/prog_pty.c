/*
 * prog_pty: runs a command on a new pseudo-terminal and drives it with a
 * tiny expect-like script read from standard input, for the REPL specs.
 *
 *   prog_pty [-t SECONDS] -- COMMAND [ARGS...]  < script
 *
 * Script lines (C-style escapes \n \r \t \\ \xHH are decoded):
 *   expect TEXT   wait until TEXT appears in the output after the previous
 *                 match (fails after -t seconds, default 30)
 *   send TEXT     write TEXT to the terminal (\x03 is Ctrl-C, \x04 Ctrl-D)
 *   sleep SECONDS
 *
 * After the script, reads until the terminal closes and reaps the command.
 * Writes the whole transcript to standard output. Exit status: the
 * command's status (128+N if killed by signal N), 124 when an expect timed
 * out (the command is then killed), 125 on a usage or system error.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static char *out;
static size_t out_len, out_cap, matched;
static int master = -1;
static pid_t child;
static double limit = 30;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void append(const char *s, size_t n) {
  if (out_len + n + 1 > out_cap) {
    out_cap = (out_len + n + 1) * 2;
    out = realloc(out, out_cap);
    if (!out) { perror("prog_pty: realloc"); exit(125); }
  }
  memcpy(out + out_len, s, n);
  out_len += n;
  out[out_len] = 0;
}

static void dump(void) {
  fwrite(out, 1, out_len, stdout);
  fflush(stdout);
}

/* Reads what is available within `wait` seconds; returns 0 at end (EIO). */
static int pump(double wait) {
  struct pollfd p = { master, POLLIN, 0 };
  int ms = wait <= 0 ? 0 : (int)(wait * 1000) + 1;
  int r = poll(&p, 1, ms);
  if (r < 0 && errno == EINTR) return 1;
  if (r <= 0) return 1;
  char buf[4096];
  ssize_t n = read(master, buf, sizeof buf);
  if (n > 0) { append(buf, (size_t)n); return 1; }
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 1;
  return 0;
}

static size_t unescape(char *s) {
  char *w = s;
  for (char *r = s; *r; r++) {
    if (*r != '\\' || !r[1]) { *w++ = *r; continue; }
    r++;
    switch (*r) {
      case 'n': *w++ = '\n'; break;
      case 'r': *w++ = '\r'; break;
      case 't': *w++ = '\t'; break;
      case 'x': {
        char hex[3] = { r[1], r[1] ? r[2] : 0, 0 };
        *w++ = (char)strtol(hex, NULL, 16);
        r += 2;
        break;
      }
      default: *w++ = *r;
    }
  }
  *w = 0;
  return (size_t)(w - s);
}

static void give_up(const char *what) {
  fprintf(stderr, "prog_pty: timed out waiting for %s\n", what);
  kill(-child, SIGKILL);
  kill(child, SIGKILL);
  while (pump(0.2)) if (out_len > (1 << 24)) break;
  waitpid(child, NULL, 0);
  dump();
  exit(124);
}

int main(int argc, char **argv) {
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) limit = atof(argv[++i]);
    else if (strcmp(argv[i], "--") == 0) { i++; break; }
    else break;
  }
  if (i >= argc) { fprintf(stderr, "usage: prog_pty [-t SECONDS] -- COMMAND [ARGS...] < script\n"); return 125; }
  master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) { perror("prog_pty: openpt"); return 125; }
  const char *name = ptsname(master);
  struct winsize ws = { 24, 80, 0, 0 };
  ioctl(master, TIOCSWINSZ, &ws);
  child = fork();
  if (child < 0) { perror("prog_pty: fork"); return 125; }
  if (child == 0) {
    setsid();
    int s = open(name, O_RDWR);
    if (s < 0) _exit(125);
    ioctl(s, TIOCSCTTY, 0);
    dup2(s, 0); dup2(s, 1); dup2(s, 2);
    if (s > 2) close(s);
    execvp(argv[i], argv + i);
    _exit(127);
  }
  append("", 0);   /* out is never NULL from here on */
  char line[8192];
  while (fgets(line, sizeof line, stdin)) {
    size_t l = strlen(line);
    if (l && line[l - 1] == '\n') line[--l] = 0;
    if (strncmp(line, "expect ", 7) == 0) {
      char *text = line + 7;
      size_t tl = unescape(text);
      double deadline = now() + limit;
      for (;;) {
        char *hit = tl ? memmem(out + matched, out_len - matched, text, tl) : out + matched;
        if (hit) { matched = (size_t)(hit - out) + tl; break; }
        double left = deadline - now();
        if (left <= 0) give_up(text);
        if (!pump(left > 0.2 ? 0.2 : left) && !memmem(out + matched, out_len - matched, text, tl)) {
          fprintf(stderr, "prog_pty: the terminal closed while waiting for %s\n", text);
          waitpid(child, NULL, 0);
          dump();
          return 124;
        }
      }
    } else if (strncmp(line, "send ", 5) == 0) {
      char *text = line + 5;
      size_t tl = unescape(text);
      if (write(master, text, tl) != (ssize_t)tl) { perror("prog_pty: write"); return 125; }
    } else if (strncmp(line, "sleep ", 6) == 0) {
      double end = now() + atof(line + 6);
      while (now() < end) pump(end - now());
    } else if (l) {
      fprintf(stderr, "prog_pty: unknown script line '%s'\n", line);
      return 125;
    }
  }
  double deadline = now() + limit;
  while (pump(0.2)) if (now() > deadline) give_up("the end of the output");
  int status;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
  dump();
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 125;
}
