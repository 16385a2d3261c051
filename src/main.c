/*
 * main.c: the orch command line. A thin user of the embedding API
 * (include/orch.h). The command line itself is parsed by lua/orch/cli.lua
 * (orch.cli.plan, through orch_call): it prints help and usage errors, and
 * answers what is left to do here, which is what must be C: loading a
 * script file or a -e string as the main task, running the loop, and turning
 * the outcome into an exit status. Commands other than `run` and `-e` are Lua
 * modules (lua/orch/cmd/<name>.lua) that orch.cli.dispatch runs as the main
 * task.
 *
 * Exit statuses: 0 success, 1 the script failed, 2 usage error or missing
 * file, 75 another orchestrator holds the control socket's lock, or the code
 * given to orch.exit().
 */
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fdholder.h"
#include "orch.h"
#include "precompiled.h"
#include "runtime.h"

#ifdef ORCH_PRECOMPILED
/* build/precompiled.c: orch's start-up modules compiled with this
 * executable's Lua (precompiled.h). */
extern const orch__precompiled_set orch__precompiled_modules;
#endif

static const char *progname = "orch";

/* The lock refused when the script loaded the supervisor: that error ended
 * the main task; say it once, without a traceback (EX_TEMPFAIL). */
static int lock_refused(orch_runtime *rt) {
  char *held = NULL;
  if (orch_call(rt, "orch.cli", "lock_refused", 0, NULL, &held) != ORCH_OK || !held) return 0;
  fprintf(stderr, "%s: %s: another orchestrator runs (nothing was started)\n", progname, held);
  free(held);
  return 1;
}

/* Runs the loop of a runtime whose main task is loaded (load status r) and
 * reports the outcome. */
static int finish(orch_runtime *rt, int r, int is_run) {
  if (r != ORCH_OK) {
    fprintf(stderr, "%s: %s\n", progname, orch_last_error(rt));
    orch_free(rt);
    return 1;
  }
  int status = orch_run(rt);
  int code;
  if (is_run && lock_refused(rt)) status = 75;
  else if (!orch_exited(rt, &code) && status != 0 && orch_last_error(rt))
    fprintf(stderr, "%s: %s\n", progname, orch_last_error(rt));
  fflush(stdout);
  orch_free(rt);
  return status;
}

/* orch run FILE ARGS... (orch.cli.plan has set up the rest). */
static int run_file(orch_runtime *rt, const char *file, int argc, char **argv) {
  orch_set_args(rt, file, argc, argv);
  int r = orch_load_file(rt, file, argc, argv);
  if (r == ORCH_ERR_FILE) {
    fprintf(stderr, "%s: cannot open %s: no such file or not readable\n", progname, file);
    orch_free(rt);
    return 2;
  }
  /* The control socket and the HTTP endpoint, once the main chunk has run
   * or waits. */
  if (r == ORCH_OK && orch_load_function(rt, "orch.cli", "started", 0, NULL) != ORCH_OK)
    fprintf(stderr, "%s: control socket: %s\n", progname, orch_last_error(rt));
  return finish(rt, r, 1);
}

/* libm's text is resident whole from the start of every orch process,
 * though orch calls a few of its functions (Lua's floor, fmod, pow, frexp
 * and math library): ld.so runs its IFUNC resolvers as it relocates it (21
 * of them, spread over its text), and the kernel maps the page cache's
 * pages in a 64 KiB window around each page a fault touches (fault-around),
 * so every window of the text is mapped before main (issue 14, memory per
 * service; doc/benchmarks.md, tenth session). Those resolvers never run
 * again: the text is unmapped here (MADV_DONTNEED: the pages stay in the
 * page cache, clean copies of the file) and the kernel maps back, a window
 * at a time, only what orch calls from now on. Text with relocations of
 * its own (DT_TEXTREL: written pages that the file could not give back)
 * is left alone. */
static int drop_libm_text(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  (void)arg;
  const char *base = strrchr(info->dlpi_name, '/');
  if (!base || strncmp(base + 1, "libm.so", 7) != 0) return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_DYNAMIC) continue;
    for (const ElfW(Dyn) *d = (const ElfW(Dyn) *)(info->dlpi_addr + ph->p_vaddr); d->d_tag != DT_NULL; d++)
      if (d->d_tag == DT_TEXTREL || (d->d_tag == DT_FLAGS && (d->d_un.d_val & DF_TEXTREL))) return 1;
  }
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X) || (ph->p_flags & PF_W)) continue;
    uintptr_t lo = (info->dlpi_addr + ph->p_vaddr) & ~(page - 1);
    uintptr_t hi = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz + page - 1) & ~(page - 1);
    madvise((void *)lo, hi - lo, MADV_DONTNEED);
  }
  return 1;
}

/* Also when the executable maps libm on first use (src/libm.c). */
void orch__drop_libm_text(void);
void orch__libm_load(void);
void orch__libm_wrap_loaders(lua_State *L);
void orch__drop_libm_text(void) { dl_iterate_phdr(drop_libm_text, NULL); }

int main(int argc, char **argv) {
  /* (A libm already mapped: the shared Lua's, a sanitizer's.) */
  orch__drop_libm_text();
  /* A write to a closed pipe must fail with EPIPE, not kill the
   * orchestrator. Spawned children get the default disposition back. */
  signal(SIGPIPE, SIG_IGN);
  /* As systemd does: soft fd limit up to the hard one (children get the
   * original back), so many services and connections fit. */
  orch_raise_nofile();
  /* The fd holder (started by the supervisor with exactly its three
   * arguments, or five) lives as long as the services do: plain C, no runtime. */
  if ((argc == 5 || argc == 7) && strcmp(argv[1], "fdholder") == 0 && argv[2][0] != '-') {
#ifdef ORCH_LAZY_LIBM
    /* The holder reads numbers with floor: libm mapped before it holds
     * its fds (src/libm.c maps it at a first call, and the holder has no
     * spare fds to lend the dlopen at EMFILE). */
    orch__libm_load();
#endif
    return orch__fdholder_main(argv[2], argv[3], argv[4], argc == 7 ? argv[5] : NULL,
                               argc == 7 ? argv[6] : NULL);
  }
#ifdef ORCH_PRECOMPILED
  orch__use_precompiled(&orch__precompiled_modules);
#endif
  orch_runtime *rt = orch_new();
  if (!rt) {
    int err = errno;
    if (err == EMFILE)
      fprintf(stderr, "%s: cannot create the runtime: %s (the limit of open files, ulimit -n, is %llu)\n", progname,
              strerror(err), (unsigned long long)orch__nofile_soft());
    else
      fprintf(stderr, "%s: cannot create the runtime: %s\n", progname, strerror(err ? err : ENOMEM));
    return 1;
  }
#ifdef ORCH_LAZY_LIBM
  /* A C module that calls libm without naming it finds it (src/libm.c). */
  orch__libm_wrap_loaders(orch_lua(rt));
#endif
  char *plan = NULL;
  if (orch_call(rt, "orch.cli", "plan", argc - 1, argv + 1, &plan) != ORCH_OK || !plan) {
    fprintf(stderr, "%s: %s\n", progname, orch_last_error(rt) ? orch_last_error(rt) : "no plan");
    free(plan);
    orch_free(rt);
    return 1;
  }
  /* k indexes argv: 1 is the first word after `orch`. */
  int k = 0, status;
  if (sscanf(plan, "exit %d", &k) == 1) {
    fflush(stdout);
    orch_free(rt);
    status = k;
  } else if (sscanf(plan, "run %d", &k) == 1 && k >= 1 && k < argc) {
    status = run_file(rt, argv[k], argc - k - 1, argv + k + 1);
  } else if (sscanf(plan, "eval %d", &k) == 1 && k >= 1 && k < argc) {
    orch_set_args(rt, "-e", argc - k - 1, argv + k + 1);
    /* The string sees ARGS as `...`. */
    status = finish(rt, orch_load_buffer(rt, argv[k], strlen(argv[k]), "=(command line)",
                                         argc - k - 1, argv + k + 1), 0);
  } else if (sscanf(plan, "command %d", &k) == 1 && k >= 1 && k < argc) {
    orch_set_args(rt, argv[k], argc - k - 1, argv + k + 1);
    status = finish(rt, orch_load_function(rt, "orch.cli", "dispatch", 0, NULL), 0);
  } else {
    fprintf(stderr, "%s: internal error: unknown plan '%s'\n", progname, plan);
    orch_free(rt);
    status = 1;
  }
  free(plan);
  return status;
}
