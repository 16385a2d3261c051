/*
 * fdholder.h: `orch fdholder`, the fd holder the supervisor starts
 * (src/fdholder.c). main.c calls it before it makes a runtime: the holder
 * has no Lua state and no libuv loop.
 *
 *   if ((argc == 5 || argc == 7) && strcmp(argv[1], "fdholder") == 0 && argv[2][0] != '-')
 *     return orch__fdholder_main(argv[2], argv[3], argv[4], argc == 7 ? argv[5] : NULL,
 *                                argc == 7 ? argv[6] : NULL);
 */
#ifndef ORCH_FDHOLDER_H
#define ORCH_FDHOLDER_H

/* Serves the socket path until it has nothing left to hold; returns the
 * process's exit status (0, 1 failure, 2 usage). tree and lock (or NULL):
 * the v2 directory of orch's cgroup tree and the control socket's lock
 * file, for the sweep of the tree's empty cgroups at an end after orch
 * died. */
int orch__fdholder_main(const char *path, const char *orch_pid, const char *orch_start,
                        const char *tree, const char *lock);

#endif
