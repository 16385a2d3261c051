/*
 * main.c: the orch command line. A thin user of the embedding API
 * (include/orch.h): it parses the command, loads code into a runtime, runs
 * the loop and turns the outcome into an exit status. Commands other than
 * the built-in ones are Lua modules, lua/orch/cmd/<name>.lua. The Lua side
 * of the command itself is lua/orch/cli.lua, reached through orch_call and
 * orch_load_function with the arguments passed as arguments: no globals, no
 * Lua code in C strings.
 *
 * Exit statuses: 0 success, 1 the script failed, 2 usage error or missing
 * file, or the code given to orch.exit().
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "orch.h"

static const char *progname = "orch";

/* orch run: another orchestrator holds the control socket's lock
 * (EX_TEMPFAIL: try again once it has ended). */
#define EXIT_LOCKED 75

static const char usage_text[] =
  "usage: orch COMMAND [ARGS...]\n"
  "\n"
  "Commands:\n"
  "  run FILE [ARGS...]     run a Lua script on the event loop (also: orch FILE)\n"
  "  -e CODE [ARGS...]      run a string of Lua code\n"
  "  repl [FILE]            interactive prompt while the loop runs\n"
  "  ctl [--socket P] CMD   control a running orchestrator (status, start, stop, ...)\n"
  "  attach [--socket P]    a prompt inside a running orchestrator\n"
  "  watchdog [OPTIONS]     kill processes whose heartbeat stopped\n"
  "  every N -- PROG ARGS   run PROG, wait, sleep N seconds, repeat\n"
  "  beat --name N --timeout S   register or beat a heartbeat (for shell scripts)\n"
  "  import FILE            a supervisord.conf or pm2 ecosystem file as a policy script\n"
  "  test [OPTIONS] FILE|DIR   busted specs on virtual time with simulated processes\n"
  "  version                print the orch, Lua and libuv versions\n"
  "  help [COMMAND]         this text, or a command's help\n"
  "\n"
  "See orch(1), orch-ctl(1) and orch-lua(7) (the Lua API), or `orch help COMMAND`.\n";

static const struct { const char *name; const char *text; } builtin_help[] = {
  {"run",
   "usage: orch run FILE [ARGS...]\n"
   "       orch run [--socket PATH | --no-socket] [--lua-budget SECONDS] [--http ADDR] FILE [ARGS...]\n"
   "       orch FILE [ARGS...]\n"
   "\n"
   "Runs FILE as the main task on one event loop. `arg` is set as lua5.4 sets it\n"
   "(arg[0] = FILE, arg[1..] = ARGS) and the arguments are also the chunk's `...`.\n"
   "The global `orch` is the orch module. orch exits when no task is runnable and\n"
   "no handle is active, or when the script calls orch.exit(code).\n"
   "\n"
   "--socket PATH serves the control socket there (see `orch help ctl`); by\n"
   "default it is served when the script uses the supervisor; --no-socket never.\n"
   "\n"
   "--lua-budget SECONDS interrupts Lua code (a task, hook, callback, ctl eval)\n"
   "that runs longer than SECONDS without yielding (default 5; 0: no budget).\n"
   "\n"
   "--http ADDR serves read-only HTTP on ADDR (host:port, :port, [::1]:port or a\n"
   "unix socket path): /healthz, /readyz, /metrics (Prometheus), /status.\n"
   "Off by default; the address it listens on is logged (port 0 picks one).\n"
   "\n"
   "Exit status: 0, or 1 when the main task raised (message and traceback on\n"
   "stderr), 2 when FILE cannot be opened, or the code given to orch.exit.\n"},
  {"-e",
   "usage: orch -e CODE [ARGS...]\n"
   "\n"
   "Runs CODE as the main task, like `orch run` runs a file; ARGS are `...`.\n"},
  {"version", "usage: orch version | orch --version\n\nPrints the orch, Lua and libuv versions.\n"},
  {"help", "usage: orch help [COMMAND]\n\nPrints the list of commands, or one command's help.\n"},
  {NULL, NULL}
};

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "%s: ", progname);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (see 'orch --help')\n");
  return 2;
}

/* Runs a runtime whose main task is loaded; reports the outcome. */
static int finish(orch_runtime *rt) {
  int status = orch_run(rt);
  int code;
  if (!orch_exited(rt, &code) && status != 0 && orch_last_error(rt))
    fprintf(stderr, "%s: %s\n", progname, orch_last_error(rt));
  fflush(stdout);
  orch_free(rt);
  return status;
}

static int lock_refused(orch_runtime *rt);

/* finish() for orch run: a refused lock is its own exit status. */
static int finish_run(orch_runtime *rt) {
  int status = orch_run(rt);
  int code;
  if (lock_refused(rt)) status = EXIT_LOCKED;
  else if (!orch_exited(rt, &code) && status != 0 && orch_last_error(rt))
    fprintf(stderr, "%s: %s\n", progname, orch_last_error(rt));
  fflush(stdout);
  orch_free(rt);
  return status;
}

static orch_runtime *new_runtime(void) {
  orch_runtime *rt = orch_new();
  if (!rt) fprintf(stderr, "%s: cannot create the runtime (out of memory?)\n", progname);
  return rt;
}

/* The control socket and systemd readiness (lua/orch/ctl.lua) start as a
 * second task, i.e. once the script's main chunk has run or waits.
 * socket: --socket PATH, or NULL (default rules), or "" for --no-socket. */
static void start_ctl(orch_runtime *rt, const char *socket) {
  char *argv[] = { (char *)(socket ? socket : "") };
  if (orch_load_function(rt, "orch.cli", "start_ctl", socket ? 1 : 0, argv) != ORCH_OK)
    fprintf(stderr, "%s: control socket: %s\n", progname, orch_last_error(rt));
}

/* As PID 1 (a container's init), orch reaps every orphan and forwards
 * SIGTERM/SIGINT to its children, like tini (orch.proc.init_mode). */
static void init_mode_if_pid1(orch_runtime *rt) {
  if (getpid() != 1) return;
  if (orch_call(rt, "orch.cli", "init_mode", 0, NULL, NULL) != ORCH_OK)
    fprintf(stderr, "%s: init mode: %s\n", progname, orch_last_error(rt));
}

/* No catchable signal may end orch by its default action while children
 * run (orch.signal.protect; the table is in doc/cli.md). */
static void protect_signals(orch_runtime *rt) {
  if (orch_call(rt, "orch.cli", "protect", 0, NULL, NULL) != ORCH_OK)
    fprintf(stderr, "%s: signal table: %s\n", progname, orch_last_error(rt));
}

/* One orchestrator per control socket (lua/orch/ctl.lua, ctl.claim_for_run):
 * the lock is taken before the script runs when a socket is asked for, or
 * when the script loads the supervisor. Returns 0, or EXIT_LOCKED after
 * printing who holds it. */
static int claim_socket(orch_runtime *rt, const char *file, const char *socket) {
  char *argv[] = { (char *)file, (char *)socket };
  char *held = NULL;
  if (orch_call(rt, "orch.cli", "claim", socket ? 2 : 1, argv, &held) != ORCH_OK) {
    fprintf(stderr, "%s: control socket lock: %s\n", progname, orch_last_error(rt));
    return 1;
  }
  if (!held) return 0;
  fprintf(stderr, "%s: %s: another orchestrator runs (nothing was started)\n", progname, held);
  free(held);
  return EXIT_LOCKED;
}

/* The lock refused when the script loaded the supervisor: that error ended
 * the main task; say it once, without a traceback. */
static int lock_refused(orch_runtime *rt) {
  char *held = NULL;
  if (orch_call(rt, "orch.cli", "lock_refused", 0, NULL, &held) != ORCH_OK || !held) return 0;
  fprintf(stderr, "%s: %s: another orchestrator runs (nothing was started)\n", progname, held);
  free(held);
  return 1;
}

/* --http ADDR: the read-only HTTP endpoint (lua/orch/http.lua), started as
 * a task with the control socket. */
static void start_http(orch_runtime *rt, const char *addr) {
  char *argv[] = { (char *)addr };
  if (orch_load_function(rt, "orch.cli", "start_http", 1, argv) != ORCH_OK)
    fprintf(stderr, "%s: http: %s\n", progname, orch_last_error(rt));
}

static int cmd_run(const char *file, const char *socket, const char *http, double budget,
                   int argc, char **argv) {
  orch_runtime *rt = new_runtime();
  if (!rt) return 1;
  if (budget >= 0) orch_set_budget(rt, budget);
  init_mode_if_pid1(rt);
  protect_signals(rt);
  int lr = claim_socket(rt, file, socket);
  if (lr) { orch_free(rt); return lr; }
  orch_set_args(rt, file, argc, argv);
  int r = orch_load_file(rt, file, argc, argv);
  if (r != ORCH_OK) {
    if (r == ORCH_ERR_FILE) fprintf(stderr, "%s: cannot open %s: no such file or not readable\n", progname, file);
    else fprintf(stderr, "%s: %s\n", progname, orch_last_error(rt));
    orch_free(rt);
    return r == ORCH_ERR_FILE ? 2 : 1;
  }
  start_ctl(rt, socket);
  if (http) start_http(rt, http);
  return finish_run(rt);
}

/* Starts the main task (already loaded: status r) and runs the loop. */
static int run_loaded(orch_runtime *rt, int r) {
  if (r != ORCH_OK) {
    fprintf(stderr, "%s: %s\n", progname, orch_last_error(rt));
    orch_free(rt);
    return 1;
  }
  return finish(rt);
}

static int cmd_eval(const char *code, int argc, char **argv) {
  orch_runtime *rt = new_runtime();
  if (!rt) return 1;
  orch_set_args(rt, "-e", argc, argv);
  /* The string sees ARGS as `...`. */
  return run_loaded(rt, orch_load_buffer(rt, code, strlen(code), "=(command line)", argc, argv));
}

static int valid_command_name(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return 0;
  return 1;
}

static int cmd_lua(const char *name, int argc, char **argv) {
  if (!valid_command_name(name)) return usage_error("unknown command '%s'", name);
  orch_runtime *rt = new_runtime();
  if (!rt) return 1;
  /* The long-running commands get the signal table from the start (they
   * set their own log function for it once their log is open). */
  if (strcmp(name, "every") == 0 || strcmp(name, "watchdog") == 0) protect_signals(rt);
  orch_set_args(rt, name, argc, argv);
  /* lua/orch/cli.lua's dispatch(name, ARGS...) runs lua/orch/cmd/NAME.lua. */
  char **args = malloc(sizeof(char *) * (size_t)(argc + 1));
  if (!args) { orch_free(rt); return 1; }
  args[0] = (char *)name;
  for (int i = 0; i < argc; i++) args[i + 1] = argv[i];
  int r = orch_load_function(rt, "orch.cli", "dispatch", argc + 1, args);
  free(args);
  return run_loaded(rt, r);
}

static int cmd_help(const char *topic) {
  if (!topic) { fputs(usage_text, stdout); return 0; }
  for (int i = 0; builtin_help[i].name; i++)
    if (strcmp(builtin_help[i].name, topic) == 0) { fputs(builtin_help[i].text, stdout); return 0; }
  char *argv[] = {"--help"};
  return cmd_lua(topic, 1, argv);
}

static int looks_like_file(const char *s) {
  size_t n = strlen(s);
  return strchr(s, '/') != NULL || (n > 4 && strcmp(s + n - 4, ".lua") == 0);
}

int main(int argc, char **argv) {
  /* A write to a closed pipe must fail with EPIPE, not kill the
   * orchestrator. Spawned children get the default disposition back. */
  signal(SIGPIPE, SIG_IGN);
  /* As systemd does: soft fd limit up to the hard one (children get the
   * original back), so many services and connections fit. */
  orch_raise_nofile();
  if (argc < 2) { fputs(usage_text, stderr); return 2; }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) return cmd_help(NULL);
  if (strcmp(cmd, "help") == 0) {
    if (argc > 3) return usage_error("help takes one command name, got '%s'", argv[3]);
    return cmd_help(argc > 2 ? argv[2] : NULL);
  }
  if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0 || strcmp(cmd, "-v") == 0) {
    if (argc > 2) return usage_error("version takes no arguments, got '%s'", argv[2]);
    printf("%s\n", orch_version_string());
    return 0;
  }
  if (strcmp(cmd, "-e") == 0) {
    if (argc < 3) return usage_error("%s needs an argument", "-e");
    return cmd_eval(argv[2], argc - 3, argv + 3);
  }
  if (strcmp(cmd, "run") == 0) {
    int i = 2;
    const char *socket = NULL, *http = NULL;
    double budget = -1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] != 0; i++) {
      if (strcmp(argv[i], "--") == 0) { i++; break; }
      if (strcmp(argv[i], "--socket") == 0) {
        if (i + 1 >= argc || !argv[i + 1][0]) return usage_error("%s needs a PATH", "--socket");
        socket = argv[++i];
      } else if (strncmp(argv[i], "--socket=", 9) == 0 && argv[i][9]) {
        socket = argv[i] + 9;
      } else if (strcmp(argv[i], "--no-socket") == 0) {
        socket = "";
      } else if (strcmp(argv[i], "--http") == 0) {
        if (i + 1 >= argc || !argv[i + 1][0]) return usage_error("%s needs an ADDR (host:port)", "--http");
        http = argv[++i];
      } else if (strcmp(argv[i], "--lua-budget") == 0) {
        char *end = NULL;
        if (i + 1 < argc) budget = strtod(argv[i + 1], &end);
        if (i + 1 >= argc || end == argv[i + 1] || *end || !(budget >= 0 && budget <= 1e9))
          return usage_error("%s needs SECONDS (a number >= 0; 0: no budget)", "--lua-budget");
        i++;
      } else {
        return usage_error("unknown option '%s' for run", argv[i]);
      }
    }
    if (i >= argc) return usage_error("%s needs a FILE", "run");
    return cmd_run(argv[i], socket, http, budget, argc - i - 1, argv + i + 1);
  }
  if (cmd[0] == '-') return usage_error("unknown option '%s'", cmd);
  if (looks_like_file(cmd)) return cmd_run(cmd, NULL, NULL, -1, argc - 2, argv + 2);
  return cmd_lua(cmd, argc - 2, argv + 2);
}
