/*
 * fdholder.h: `orch fdholder`, the fd holder the supervisor starts
 * (src/fdholder.c). main.c calls it before it makes a runtime: the holder
 * has no Lua state and no libuv loop.
 *
 *   if (argc == 5 && strcmp(argv[1], "fdholder") == 0 && argv[2][0] != '-')
 *     return orch__fdholder_main(argv[2], argv[3], argv[4]);
 */
#ifndef ORCH_FDHOLDER_H
#define ORCH_FDHOLDER_H

/* Serves the socket path until it has nothing left to hold; returns the
 * process's exit status (0, 1 failure, 2 usage). */
int orch__fdholder_main(const char *path, const char *orch_pid, const char *orch_start);

#endif
