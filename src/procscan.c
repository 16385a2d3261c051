/*
 * procscan.c: what /proc says about a process: orch.proc.info,
 * orch.proc.stat, orch.proc.start_time, orch.proc.wait_exit (a pidfd), orch.proc.list and
 * orch.proc.subreaper; and its relations and sockets, for the supervisor's
 * readiness and adoption checks: orch.proc.children, orch.proc.sockets,
 * orch.proc.tcp_listeners, orch.proc.is_child, orch.proc.user_ids,
 * orch.proc.can_access and orch.proc.read_pidfile. l_proc.c adds them to the
 * orch.proc table (orch__procscan_register).
 *
 * The formats read here are read nowhere else: /proc/PID/task/TID/children,
 * /proc/PID/fd links ("socket:[inode]"), sock_diag netlink answers and
 * /proc/PID/net/tcp{,6}
 * (/proc/PID/stat is procfs.c's: the children fallback asks it for the
 * parent pid through orch__procfs_ppid).
 *
 * Ownership: nothing outlives a call but a wait_exit watch (a malloc'ed
 * uv_poll_t on a pidfd, freed in its close callback). A file's whole text is
 * read into a Lua string before it is parsed, so a memory error while
 * results are pushed leaks nothing.
 *
 * What may block: reads of /proc files (in memory, short) and user/group
 * lookups (getpwnam_r, getgrnam_r: NSS, as orch.spawn's).
 */
#include <arpa/inet.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "proc.h"
#include "procfs.h"
#include "util.h"

static pid_t check_pid(lua_State *L, int idx) {
  int isint;
  lua_Integer n = lua_tointegerx(L, idx, &isint);
  if (lua_type(L, idx) != LUA_TNUMBER) luaL_typeerror(L, idx, "pid");
  if (!isint || n <= 0 || n > 0x7fffffff) luaL_argerror(L, idx, "invalid pid");
  return (pid_t)n;
}

static void no_more_args(lua_State *L, int n) {
  if (lua_gettop(L) > n) luaL_argerror(L, n + 1, "no value expected");
}

#define FDHOLD_MT "orch.procscan.fd"

/* An fd held by a userdata while Lua may raise (a memory error while a file
 * is read): the GC closes it then. */
typedef struct { int fd; } fdhold;

static int fdhold_gc(lua_State *L) {
  fdhold *h = luaL_checkudata(L, 1, FDHOLD_MT);
  if (h->fd >= 0) close(h->fd);
  h->fd = -1;
  return 0;
}

/* [-0,+1] Pushes the whole text of a /proc file as a string. Returns 0 or
 * -errno (nothing pushed then). */
static int push_file(lua_State *L, const char *path) {
  fdhold *h = lua_newuserdatauv(L, sizeof *h, 0);
  h->fd = -1;
  luaL_setmetatable(L, FDHOLD_MT);
  h->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (h->fd < 0) {
    int e = errno;
    lua_pop(L, 1);
    return -e;
  }
  int err = 0;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (;;) {
    char *dst = luaL_prepbuffer(&b);
    ssize_t k = read(h->fd, dst, LUAL_BUFFERSIZE);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) err = errno;
    if (k <= 0) break;
    luaL_addsize(&b, (size_t)k);
  }
  luaL_pushresult(&b);
  close(h->fd);
  h->fd = -1;
  lua_remove(L, -2);
  if (err) {
    lua_pop(L, 1);
    return -err;
  }
  return 0;
}

/* ---------------------------------------------------------------- children */

/* Appends the pids of the space-separated list s to the array at -1. */
static void add_pids(lua_State *L, const char *s, size_t len, lua_Integer *n) {
  const char *end = s + len;
  while (s < end) {
    char *e;
    long v = strtol(s, &e, 10);
    if (e == s) { s++; continue; }
    if (v > 0) {
      lua_pushinteger(L, v);
      lua_rawseti(L, -2, ++*n);
    }
    s = e;
  }
}

/* Without CONFIG_PROC_CHILDREN: every process whose parent is pid. */
static int children_scan(lua_State *L, pid_t pid) {
  DIR *d = opendir("/proc");
  if (!d) return orch__fail(L, "proc.children", errno);
  lua_newtable(L);
  lua_Integer n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    char *end;
    long p = strtol(e->d_name, &end, 10);
    if (*end || p <= 0) continue;
    pid_t pp;
    if (orch__procfs_ppid((pid_t)p, &pp) == 0 && pp == pid) {
      lua_pushinteger(L, p);
      lua_rawseti(L, -2, ++n);
    }
  }
  closedir(d);
  return 1;
}

/* Appends the pids of one children file to the array at -1: 0, or -errno.
 * The file is read into a buffer on the stack (one read: a seq_file read
 * fills what it is given, so a short one is the whole file); one that
 * fills it is read again whole into a Lua string (push_file). */
static int add_children_file(lua_State *L, const char *path, lua_Integer *n) {
  char buf[2048];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t k;
  do k = read(fd, buf, sizeof buf); while (k < 0 && errno == EINTR);
  int e = k < 0 ? errno : 0;
  close(fd);
  if (e) return -e;
  if ((size_t)k < sizeof buf) {
    add_pids(L, buf, (size_t)k, n);
    return 0;
  }
  int r = push_file(L, path);
  if (r < 0) return r;
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  lua_pushvalue(L, -2);
  add_pids(L, s, len, n);
  lua_pop(L, 2);
  return 0;
}

/* orch.proc.children(pid): the pids whose parent is pid (each thread's
 * /proc/PID/task/TID/children). A process of one thread (the common
 * case: /proc/PID/task's link count is 2 + its threads) has its main
 * thread's file read alone, without a listing of the directory: half the
 * system calls, in the no-cgroup first pass of a stop of 100 (one call a
 * service). */
static int proc_children(lua_State *L) {
  pid_t pid = check_pid(L, 1);
  no_more_args(L, 1);
  char path[96];
  /* The children files list numbers of /proc's namespace. */
  if (orch__procfs_foreign())
    return orch__failf(L, "EXDEV", "proc.children: /proc is another pid namespace's (it lists other numbers)");
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  struct stat sb;
  if (stat(path, &sb) < 0) return orch__fail(L, "proc.children", errno == ENOENT ? ESRCH : errno);
  if (sb.st_nlink == 3) {
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)pid);
    lua_newtable(L);
    lua_Integer n = 0;
    int r = add_children_file(L, path, &n);
    if (r == 0) return 1;
    lua_pop(L, 1);
    /* No children file (the kernel has none, or the only thread is not the
     * leader's): the listing below. */
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  }
  DIR *d = opendir(path);
  if (!d) return orch__fail(L, "proc.children", errno == ENOENT ? ESRCH : errno);
  lua_newtable(L);
  lua_Integer n = 0;
  struct dirent *e;
  int missing = 0;
  while ((e = readdir(d))) {
    char *end;
    long tid = strtol(e->d_name, &end, 10);
    if (*end || tid <= 0) continue;
    snprintf(path, sizeof path, "/proc/%d/task/%ld/children", (int)pid, tid);
    int r = add_children_file(L, path, &n);
    /* The thread ended, or the kernel has no children files: the latter
     * shows on the main thread. */
    if (r == -ENOENT && tid == pid) missing = 1;
  }
  closedir(d);
  if (missing) {
    lua_pop(L, 1);
    return children_scan(L, pid);
  }
  return 1;
}

/* ---------------------------------------------------------------- sockets */

/* orch.proc.sockets(pid): { [inode] = fd } for the sockets pid holds. */
/* orch.proc.fd_count(pid): the number of entries of /proc/PID/fd (for
 * orch's own open-fd gauge: no process is spawned to count them). */
static int proc_fd_count(lua_State *L) {
  pid_t pid = check_pid(L, 1);
  no_more_args(L, 1);
  char path[64];
  int pr = orch__procfs_pid_path(pid, "fd", path, sizeof path);
  if (pr < 0) return orch__fail(L, "proc.fd_count", -pr);
  /* Linux 6.2 and later give orch's own count as the directory's size
   * without listing it (a listing costs a dentry per fd: about 1 ms at a
   * thousand fds, in every /metrics scrape). Earlier kernels say 0. Only
   * for orch itself: another process's count needs the permission a
   * listing checks. */
  struct stat sb;
  if (pid == getpid() && stat(path, &sb) == 0 && sb.st_size > 0) {
    lua_pushinteger(L, (lua_Integer)sb.st_size);
    return 1;
  }
  DIR *d = opendir(path);
  if (!d) return orch__fail(L, "proc.fd_count", errno == ENOENT ? ESRCH : errno);
  lua_Integer n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] != '.') n++;
  }
  closedir(d);
  /* opendir's own descriptor is not one of the process's when it counts
   * itself. */
  if (pid == getpid() && n > 0) n--;
  lua_pushinteger(L, n);
  return 1;
}

static int proc_sockets(lua_State *L) {
  pid_t pid = check_pid(L, 1);
  no_more_args(L, 1);
  char path[64];
  int pr = orch__procfs_pid_path(pid, "fd", path, sizeof path);
  if (pr < 0) return orch__fail(L, "proc.sockets", -pr);
  int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return orch__fail(L, "proc.sockets", errno == ENOENT ? ESRCH : errno);
  DIR *d = fdopendir(dfd);
  if (!d) {
    int e = errno;
    close(dfd);
    return orch__fail(L, "proc.sockets", e);
  }
  lua_newtable(L);
  struct dirent *e;
  while ((e = readdir(d))) {
    char *end;
    long fd = strtol(e->d_name, &end, 10);
    if (*end || fd < 0) continue;
    char link[64];
    ssize_t k = readlinkat(dfd, e->d_name, link, sizeof link - 1);
    if (k <= 0) continue;
    link[k] = 0;
    unsigned long long ino;
    if (sscanf(link, "socket:[%llu]", &ino) != 1) continue;
    lua_pushinteger(L, fd);
    lua_rawseti(L, -2, (lua_Integer)ino);
  }
  closedir(d);
  return 1;
}

/* ---------------------------------------------------------------- tcp */

#define TCP_LISTEN 0x0A

/* [-0,+1] Pushes one listener record. */
static void push_listener(lua_State *L, const char *addr, unsigned port, int family,
                          unsigned long long inode, unsigned uid) {
  lua_createtable(L, 0, 5);
  lua_pushstring(L, addr); lua_setfield(L, -2, "address");
  lua_pushinteger(L, (lua_Integer)port); lua_setfield(L, -2, "port");
  lua_pushstring(L, family == AF_INET ? "inet" : "inet6"); lua_setfield(L, -2, "family");
  lua_pushinteger(L, (lua_Integer)inode); lua_setfield(L, -2, "inode");
  lua_pushinteger(L, (lua_Integer)uid); lua_setfield(L, -2, "uid");
}


/* The kernel prints each 32-bit word of the address as the host-order value
 * of the network-order bytes: reading each word back as a host integer
 * restores the bytes. */
static int parse_addr(const char *hex, size_t len, int family, char *out, size_t cap) {
  unsigned char bytes[16];
  size_t words = family == AF_INET ? 1 : 4;
  if (len != words * 8) return -1;
  for (size_t i = 0; i < words; i++) {
    char w[9];
    memcpy(w, hex + i * 8, 8);
    w[8] = 0;
    char *end;
    uint32_t v = (uint32_t)strtoul(w, &end, 16);
    if (*end) return -1;
    memcpy(bytes + i * 4, &v, 4);
  }
  return inet_ntop(family, bytes, out, (socklen_t)cap) ? 0 : -1;
}

/* Appends the listeners of one file (tcp or tcp6) to the array at -1. */
static void scan_tcp(lua_State *L, const char *text, size_t len, int family, long port,
                     lua_Integer *n) {
  const char *p = text, *end = text + len;
  const char *nl = memchr(p, '\n', (size_t)(end - p));   /* the header */
  p = nl ? nl + 1 : end;
  while (p < end) {
    nl = memchr(p, '\n', (size_t)(end - p));
    size_t ll = (size_t)((nl ? nl : end) - p);
    char line[512];
    if (ll >= sizeof line) ll = sizeof line - 1;
    memcpy(line, p, ll);
    line[ll] = 0;
    p = nl ? nl + 1 : end;
    char local[40];
    unsigned lport, st, uid;
    unsigned long long inode;
    if (sscanf(line, " %*d: %39[0-9A-Fa-f]:%x %*s %x %*s %*s %*s %u %*u %llu",
               local, &lport, &st, &uid, &inode) != 5)
      continue;
    if (st != TCP_LISTEN || (port > 0 && (long)lport != port)) continue;
    char addr[INET6_ADDRSTRLEN];
    if (parse_addr(local, strlen(local), family, addr, sizeof addr) < 0) continue;
    push_listener(L, addr, lport, family, inode, uid);
    lua_rawseti(L, -2, ++*n);
  }
}

/* The listening sockets of one family through NETLINK_SOCK_DIAG (what ss
 * uses): the kernel walks only its listening hash, where reading
 * /proc/net/tcp walks every socket bucket (about 10 ms on a loaded machine
 * with an empty table). Appends to the array at -1; returns 0 or -errno.
 * The answers of a dump come at once: the reads do not wait. */
static int diag_listeners(lua_State *L, int family, long port, lua_Integer *n) {
  int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return -errno;
  struct {
    struct nlmsghdr nlh;
    struct inet_diag_req_v2 r;
  } req;
  memset(&req, 0, sizeof req);
  req.nlh.nlmsg_len = sizeof req;
  req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.r.sdiag_family = (unsigned char)family;
  req.r.sdiag_protocol = IPPROTO_TCP;
  req.r.idiag_states = 1u << TCP_LISTEN;
  struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
  ssize_t k;
  do k = sendto(fd, &req, sizeof req, 0, (struct sockaddr *)&sa, sizeof sa); while (k < 0 && errno == EINTR);
  if (k < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  /* Records are pushed while the fd is open: a memory error while pushing
   * leaks it (as push_file's comment says, orch is in trouble then). */
  long buf[8192 / sizeof(long)];
  for (;;) {
    do k = recv(fd, buf, sizeof buf, 0); while (k < 0 && errno == EINTR);
    if (k < 0) {
      int e = errno;
      close(fd);
      return -e;
    }
    if (k == 0) break;
    size_t len = (size_t)k;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_type == NLMSG_DONE) {
        close(fd);
        return 0;
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr *err = NLMSG_DATA(h);
        close(fd);
        return err->error < 0 ? err->error : -EIO;
      }
      if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) continue;
      struct inet_diag_msg *m = NLMSG_DATA(h);
      unsigned lport = ntohs(m->id.idiag_sport);
      if (m->idiag_state != TCP_LISTEN || (port > 0 && (long)lport != port)) continue;
      char addr[INET6_ADDRSTRLEN];
      if (!inet_ntop(m->idiag_family, m->id.idiag_src, addr, sizeof addr)) continue;
      push_listener(L, addr, lport, m->idiag_family, m->idiag_inode, m->idiag_uid);
      lua_rawseti(L, -2, ++*n);
    }
  }
  close(fd);
  return 0;
}

/* Whether pid is in orch's network namespace (then netlink answers for it). */
static int same_netns(pid_t pid) {
  char path[64];
  struct stat a, b;
  if (orch__procfs_pid_path(pid, "ns/net", path, sizeof path) < 0) return 0;
  if (stat("/proc/self/ns/net", &a) < 0 || stat(path, &b) < 0) return 0;
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* orch.proc.tcp_listeners([port [, pid]]): the listening TCP sockets (IPv4
 * and IPv6) of pid's network namespace (default: orch's), on `port` when
 * given. Through sock_diag netlink for orch's own namespace; from
 * /proc/PID/net/tcp{,6} for another one, or when netlink is refused. */
static int proc_tcp_listeners(lua_State *L) {
  long port = 0;
  if (!lua_isnoneornil(L, 1)) {
    lua_Integer v = luaL_checkinteger(L, 1);
    if (v < 1 || v > 65535) luaL_argerror(L, 1, "port number from 1 to 65535 expected");
    port = (long)v;
  }
  pid_t pid = lua_isnoneornil(L, 2) ? 0 : check_pid(L, 2);
  no_more_args(L, 2);
  if (pid) {
    char path[64];
    int pr = orch__procfs_pid_path(pid, "", path, sizeof path);
    if (pr < 0) return orch__fail(L, "proc.tcp_listeners", -pr);
    struct stat st;
    if (stat(path, &st) < 0) return orch__fail(L, "proc.tcp_listeners", errno == ENOENT ? ESRCH : errno);
  }
  lua_newtable(L);
  int result = lua_gettop(L);
  lua_Integer n = 0;
  if (!pid || same_netns(pid)) {
    int r = diag_listeners(L, AF_INET, port, &n);
    /* No IPv6 in this kernel: the IPv4 answer is the whole one. */
    int r6 = r == 0 ? diag_listeners(L, AF_INET6, port, &n) : r;
    if (r == 0 && (r6 == 0 || r6 == -EAFNOSUPPORT || r6 == -ENOENT)) return 1;
    lua_settop(L, result - 1);        /* netlink refused: read /proc */
    lua_newtable(L);
    n = 0;
  }
  int found = 0, err = 0;
  static const struct { const char *name; int family; } files[] = {
    { "tcp", AF_INET }, { "tcp6", AF_INET6 },
  };
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char path[64];
    char file[16];
    snprintf(file, sizeof file, "net/%s", files[i].name);
    if (!pid) snprintf(path, sizeof path, "/proc/self/%s", file);
    else if (orch__procfs_pid_path(pid, file, path, sizeof path) < 0) continue;
    int r = push_file(L, path);
    if (r < 0) {
      /* No IPv6 in this kernel: tcp6 is missing, tcp is enough. */
      if (!err) err = -r;
      continue;
    }
    found = 1;
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    lua_pushvalue(L, result);
    scan_tcp(L, s, len, files[i].family, port, &n);
    lua_pop(L, 2);
  }
  if (!found) return orch__fail(L, "proc.tcp_listeners", err == ENOENT && pid ? ESRCH : err);
  return 1;
}

/* ---------------------------------------------------------------- is_child */

/* orch.proc.is_child(pid): whether pid is a child orch started and still
 * tracks (orch.spawn, orch.fork), as opposed to an orphan it adopted as a
 * subreaper, or no child at all. */
static int proc_is_child(lua_State *L) {
  pid_t pid = check_pid(L, 1);
  no_more_args(L, 1);
  lua_pushboolean(L, orch__child_find(orch__rt(L), pid) != NULL);
  return 1;
}

/* ---------------------------------------------------------------- user_ids */

/* orch.proc.user_ids([user [, group]]): the uid and gid a process spawned
 * with { uid = user, gid = group } runs as (names resolved as orch.spawn
 * resolves them: without a group, the user's primary group). */
static int proc_user_ids(lua_State *L) {
  int tu = lua_type(L, 1), tg = lua_type(L, 2);
  if (tu != LUA_TNONE && tu != LUA_TNIL && tu != LUA_TSTRING && !lua_isinteger(L, 1))
    luaL_typeerror(L, 1, "user name or uid");
  if (tg != LUA_TNONE && tg != LUA_TNIL && tg != LUA_TSTRING && !lua_isinteger(L, 2))
    luaL_typeerror(L, 2, "group name or gid");
  no_more_args(L, 2);
  if (tu == LUA_TNUMBER && (lua_tointeger(L, 1) < 0 || lua_tointeger(L, 1) > 0x7fffffff))
    luaL_argerror(L, 1, "invalid uid");
  if (tg == LUA_TNUMBER && (lua_tointeger(L, 2) < 0 || lua_tointeger(L, 2) > 0x7fffffff))
    luaL_argerror(L, 2, "invalid gid");
  char buf[16384];
  uid_t uid = geteuid();
  gid_t gid = getegid();
  int have_pw = 0;
  gid_t pw_gid = 0;
  if (tu == LUA_TSTRING || tu == LUA_TNUMBER) {
    struct passwd pw, *pwp = NULL;
    int r = tu == LUA_TSTRING ? getpwnam_r(lua_tostring(L, 1), &pw, buf, sizeof buf, &pwp)
                              : getpwuid_r((uid_t)lua_tointeger(L, 1), &pw, buf, sizeof buf, &pwp);
    if (r != 0) return orch__fail(L, "proc.user_ids: user lookup", r);
    if (!pwp && tu == LUA_TSTRING)
      return orch__failf(L, "ENOENT", "proc.user_ids: unknown user '%s'", lua_tostring(L, 1));
    uid = pwp ? pwp->pw_uid : (uid_t)lua_tointeger(L, 1);
    if (pwp) { have_pw = 1; pw_gid = pwp->pw_gid; }
  }
  if (tg == LUA_TSTRING) {
    struct group gr, *grp = NULL;
    int r = getgrnam_r(lua_tostring(L, 2), &gr, buf, sizeof buf, &grp);
    if (r != 0) return orch__fail(L, "proc.user_ids: group lookup", r);
    if (!grp) return orch__failf(L, "ENOENT", "proc.user_ids: unknown group '%s'", lua_tostring(L, 2));
    gid = grp->gr_gid;
  } else if (tg == LUA_TNUMBER) {
    gid = (gid_t)lua_tointeger(L, 2);
  } else if (have_pw) {
    gid = pw_gid;
  } else if (tu == LUA_TNUMBER) {
    return orch__failf(L, "EINVAL", "proc.user_ids: uid %d has no passwd entry: give gid too",
                       (int)lua_tointeger(L, 1));
  }
  lua_pushinteger(L, (lua_Integer)uid);
  lua_pushinteger(L, (lua_Integer)gid);
  return 2;
}

/* ---------------------------------------------------------------- can_access */

/* Whether the permission bits of st grant `want` (4 r, 2 w, 1 x) to uid
 * with groups gs (ACLs are not read: a refusal may be too strict). */
static int granted(const struct stat *st, uid_t uid, const gid_t *gs, int ng, int want) {
  if (uid == 0) return (want & 1) == 0 || S_ISDIR(st->st_mode) || (st->st_mode & 0111);
  int bits;
  if (st->st_uid == uid) bits = (st->st_mode >> 6) & 7;
  else {
    bits = st->st_mode & 7;
    for (int i = 0; i < ng; i++)
      if (gs[i] == st->st_gid) { bits = (st->st_mode >> 3) & 7; break; }
  }
  return (bits & want) == want;
}

/* orch.proc.can_access(path, uid, gid, how): whether a process running as
 * uid/gid (with the supplementary groups of uid's passwd entry) can reach
 * path (search permission on every directory above it) and access it as
 * `how` says ("r", "w", "x" or a combination). Returns true, or false and
 * the first path that refuses. */
static int proc_can_access(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  lua_Integer uid = luaL_checkinteger(L, 2), gid = luaL_checkinteger(L, 3);
  const char *how = luaL_checkstring(L, 4);
  no_more_args(L, 4);
  if (path[0] != '/' || strlen(path) != len || len >= 4096) luaL_argerror(L, 1, "absolute path expected");
  if (uid < 0 || uid > 0x7fffffff) luaL_argerror(L, 2, "invalid uid");
  if (gid < 0 || gid > 0x7fffffff) luaL_argerror(L, 3, "invalid gid");
  int want = 0;
  for (const char *c = how; *c; c++) {
    if (*c == 'r') want |= 4;
    else if (*c == 'w') want |= 2;
    else if (*c == 'x') want |= 1;
    else luaL_argerror(L, 4, "\"r\", \"w\" and/or \"x\" expected");
  }
  gid_t groups[256];
  int ng = 256;
  char buf[16384];
  struct passwd pw, *pwp = NULL;
  groups[0] = (gid_t)gid;
  if (getpwuid_r((uid_t)uid, &pw, buf, sizeof buf, &pwp) == 0 && pwp &&
      getgrouplist(pwp->pw_name, (gid_t)gid, groups, &ng) >= 0) {
    /* groups[0..ng) */
  } else {
    ng = 1;
  }
  char p[4096];
  memcpy(p, path, len + 1);
  /* Each directory above the path, then the path itself. */
  for (size_t i = 1; i <= len; i++) {
    if (i < len && p[i] != '/') continue;
    char saved = p[i];
    p[i] = 0;
    struct stat st;
    int last = i == len;
    int ok = stat(p, &st) == 0 && granted(&st, (uid_t)uid, groups, ng, last ? want : 1);
    if (!ok) {
      lua_pushboolean(L, 0);
      lua_pushstring(L, p);
      return 2;
    }
    p[i] = saved;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ---------------------------------------------------------------- read_pidfile */

/* orch.proc.read_pidfile(path): the pid a pidfile names. Opened without
 * following a symbolic link and without blocking (a FIFO planted at the
 * path would otherwise stop the loop), and only if it is a regular file;
 * at most 64 bytes are read. Returns pid, or nil, message, code (ENOENT
 * while it does not exist; EINVAL when it holds no pid). */
static int proc_read_pidfile(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  no_more_args(L, 1);
  if (strlen(path) != len) luaL_argerror(L, 1, "path contains a zero byte");
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    int e = errno;
    if (e == ELOOP) return orch__failf(L, "ELOOP", "read_pidfile: %s is a symbolic link", path);
    return orch__fail(L, "read_pidfile", e);
  }
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return orch__failf(L, "EINVAL", "read_pidfile: %s is not a regular file", path);
  }
  char buf[65];
  ssize_t k;
  do k = read(fd, buf, sizeof buf - 1); while (k < 0 && errno == EINTR);
  int e = errno;
  close(fd);
  if (k < 0) return orch__fail(L, "read_pidfile", e);
  buf[k] = 0;
  char *p = buf, *end;
  while (*p == ' ' || *p == '\t') p++;
  long v = strtol(p, &end, 10);
  while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r') end++;
  if (end == p || *end || v <= 0 || v > 0x7fffffff)
    return orch__failf(L, "EINVAL", "read_pidfile: %s holds no pid", path);
  lua_pushinteger(L, v);
  return 1;
}

/* ---------------------------------------------------------------- register */

/* ---------------------------------------------------------------- a process */

/* The fields of /proc/PID/stat as a new table (nrec: room for more). [-0,+1] */
/* Pushes a new table (into == 0), or the table at index into, with the
 * fields of si set. */
static void push_stat(lua_State *L, pid_t pid, const orch__procfs_stat *si, int nrec, int into) {
  long tck = sysconf(_SC_CLK_TCK);
  long page = sysconf(_SC_PAGESIZE);
  if (into) lua_pushvalue(L, into);
  else lua_createtable(L, 0, 11 + nrec);
  lua_pushinteger(L, pid); lua_setfield(L, -2, "pid");
  lua_pushlstring(L, &si->state, 1); lua_setfield(L, -2, "state");
  lua_pushinteger(L, si->ppid); lua_setfield(L, -2, "ppid");
  lua_pushinteger(L, si->pgid); lua_setfield(L, -2, "pgid");
  lua_pushinteger(L, si->sid); lua_setfield(L, -2, "sid");
  lua_pushstring(L, si->name); lua_setfield(L, -2, "name");
  lua_pushinteger(L, (lua_Integer)si->start); lua_setfield(L, -2, "start_time");
  lua_pushinteger(L, (lua_Integer)si->rss_pages * page); lua_setfield(L, -2, "rss");
  lua_pushnumber(L, (double)(si->utime + si->stime) / (double)(tck > 0 ? tck : 100)); lua_setfield(L, -2, "cpu");
  lua_pushinteger(L, si->threads); lua_setfield(L, -2, "threads");
  lua_pushinteger(L, si->nice); lua_setfield(L, -2, "nice");
}

/* orch.proc.stat(pid [, t]): what /proc/PID/stat alone says (one read; a
 * status of thousands of services asks it for each, and fills one table t
 * again and again instead of making a table each time). */
static int proc_stat(lua_State *L) {
  pid_t pid = orch__checkpid(L, 1, 0);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  orch__check_nargs(L, 2);
  orch__procfs_stat si;
  int r = orch__procfs_read_stat(pid, &si);
  if (r < 0) return orch__fail(L, "proc.stat", -r);
  push_stat(L, pid, &si, 0, lua_istable(L, 2) ? 2 : 0);
  return 1;
}

static int proc_info(lua_State *L) {
  pid_t pid = orch__checkpid(L, 1, 0);
  orch__check_nargs(L, 1);
  orch__procfs_stat si;
  int r = orch__procfs_read_stat(pid, &si);
  if (r < 0) return orch__fail(L, "proc.info", -r);
  char path[64];
  uint32_t u;
  long long uid = orch__procfs_uid(pid, &u) == 0 ? (long long)u : -1;
  push_stat(L, pid, &si, 3, 0);
  lua_pushinteger(L, uid); lua_setfield(L, -2, "uid");
  /* A zombie still has its exit status (until its parent reaps it): how it
   * ended, for a watcher that is not its parent. */
  if (si.state == 'Z' && si.exit_status >= 0) {
    int st = (int)si.exit_status;
    if ((st & 0x7f) == 0) {
      lua_pushinteger(L, (st >> 8) & 0xff);
      lua_setfield(L, -2, "exit_code");
    } else {
      const char *nm = orch__signame(st & 0x7f);
      if (nm) lua_pushstring(L, nm); else lua_pushinteger(L, st & 0x7f);
      lua_setfield(L, -2, "exit_signal");
    }
  }
  /* cmdline: NUL-separated arguments; empty for kernel threads and zombies. */
  lua_newtable(L);
  int fd = orch__procfs_pid_path(pid, "cmdline", path, sizeof path) < 0 ? -1 : open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (;;) {
      char *dst = luaL_prepbuffer(&b);
      ssize_t k = read(fd, dst, LUAL_BUFFERSIZE);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) break;
      luaL_addsize(&b, (size_t)k);
    }
    close(fd);
    luaL_pushresult(&b);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    int i = 0;
    for (size_t off = 0; off < len;) {
      size_t l = strnlen(s + off, len - off);
      lua_pushlstring(L, s + off, l);
      lua_rawseti(L, -3, ++i);
      off += l + 1;
    }
    lua_pop(L, 1);
  }
  lua_setfield(L, -2, "cmdline");
  return 1;
}

/* The one start-time binding: orch.proc.start_time, and
 * orch.heartbeat.start_time as its alias (l_heartbeat.c). */
int orch__proc_start_time(lua_State *L) {
  pid_t pid = lua_isnoneornil(L, 1) ? getpid() : orch__checkpid(L, 1, 0);
  orch__check_nargs(L, 1);
  unsigned long long t;
  /* One of orch's own unreaped children: known since its spawn. */
  int r = orch__child_start_time(orch__rt(L), pid, &t);
  if (r < 0) r = orch__procfs_start_time(pid, &t);
  if (r < 0) return orch__fail(L, "proc.start_time", -r);
  lua_pushinteger(L, (lua_Integer)t);
  return 1;
}

/* orch.proc.wait_exit(pid [, start_time [, timeout]]): any process, child
 * or not. A pidfd pins the process (its start time is checked through it)
 * and becomes readable when it exits; a uv_poll_t on it wakes the task. */
typedef struct {
  uv_poll_t poll;
  int fd;
  lua_State *co;
} exitwatch;

static void exitwatch_close_cb(uv_handle_t *h) {
  exitwatch *w = h->data;
  close(w->fd);
  free(w);
}

static void exitwatch_done(exitwatch *w) {
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, exitwatch_close_cb);
}

static void exitwatch_cb(uv_poll_t *h, int status, int events) {
  exitwatch *w = h->data;
  lua_State *co = w->co;
  w->co = NULL;
  exitwatch_done(w);
  if (!co) return;
  /* A poll error on a pidfd means it cannot be watched: say it is gone only
   * when it is. */
  if (status < 0) orch__fail_uv(co, "wait_exit", status);
  else lua_pushboolean(co, 1);
  orch__wake(co, status < 0 ? 3 : 1);
}

static void exitwatch_cancel(void *data) {
  exitwatch *w = data;
  w->co = NULL;
  exitwatch_done(w);
}

static int proc_wait_exit(lua_State *L) {
  pid_t pid = orch__checkpid(L, 1, 0);
  lua_Integer start = 0;
  if (!lua_isnoneornil(L, 2)) {
    start = luaL_checkinteger(L, 2);
    if (start < 0) luaL_argerror(L, 2, "start time (clock ticks >= 0) expected");
  }
  double timeout = orch__optseconds(L, 3, -1);
  orch__check_nargs(L, 3);
  orch__check_task(L, "proc.wait_exit");
  /* (At EMFILE with a spare: kept for the watch, outside the spares once
   * fds are free again.) */
  int fd = orch__fd_pidfd_lent(pid);
  if (fd < 0) {
    int e = errno;
    orch__fd_spare_settle();
    if (e == ESRCH) { lua_pushboolean(L, 1); return 1; }
    return orch__fail(L, "proc.wait_exit", e);
  }
  if (start) {
    unsigned long long t = 0;
    int r = orch__procfs_start_time(pid, &t);
    if (r == -EXDEV) {
      close(fd);
      return orch__failf(L, "EXDEV", "proc.wait_exit: cannot check pid %d's start time (/proc is another pid namespace's)",
                         (int)pid);
    }
    /* No fd to read its start time with is not a process gone. */
    if (r == -EMFILE || r == -ENFILE || r == -ENOMEM) {
      close(fd);
      orch__fd_spare_settle();
      return orch__fail(L, "proc.wait_exit", -r);
    }
    if (r < 0 || t != (unsigned long long)start) {
      /* The pid names another process now (or none): the one asked for is
       * gone. */
      close(fd);
      lua_pushboolean(L, 1);
      return 1;
    }
  }
  exitwatch *w = malloc(sizeof *w);
  if (!w) {
    close(fd);
    return orch__fail(L, "proc.wait_exit", ENOMEM);
  }
  w->fd = fd;
  w->co = NULL;
  int r = uv_poll_init(orch__loop(L), &w->poll, fd);
  if (r < 0) {
    close(fd);
    free(w);
    return orch__fail_uv(L, "proc.wait_exit", r);
  }
  w->poll.data = w;
  r = uv_poll_start(&w->poll, UV_READABLE, exitwatch_cb);
  if (r < 0) {
    exitwatch_done(w);
    return orch__fail_uv(L, "proc.wait_exit", r);
  }
  w->co = L;
  return orch__await(L, timeout, "proc.wait_exit", exitwatch_cancel, w);
}

static int proc_list(lua_State *L) {
  DIR *d = opendir("/proc");
  if (!d) return orch__fail(L, "proc.list", errno);
  lua_newtable(L);
  int i = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    char *end;
    long pid = strtol(e->d_name, &end, 10);
    if (*end || pid <= 0) continue;
    lua_pushinteger(L, pid);
    lua_rawseti(L, -2, ++i);
  }
  closedir(d);
  return 1;
}

static int proc_subreaper(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    int v = 0;
    if (prctl(PR_GET_CHILD_SUBREAPER, &v, 0, 0, 0) < 0) return orch__fail(L, "proc.subreaper", errno);
    lua_pushboolean(L, v);
    return 1;
  }
  luaL_checktype(L, 1, LUA_TBOOLEAN);
  orch__proc_subreaper(lua_toboolean(L, 1));
  if (prctl(PR_SET_CHILD_SUBREAPER, (unsigned long)lua_toboolean(L, 1), 0, 0, 0) < 0)
    return orch__fail(L, "proc.subreaper", errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* orch.proc.procfs(): "own" when /proc is this pid namespace's, "foreign"
 * when it is another's (orch__procfs_foreign), "absent" without one. */
static int proc_procfs(lua_State *L) {
  no_more_args(L, 0);
  if (orch__procfs_foreign()) lua_pushliteral(L, "foreign");
  else if (access("/proc/self/stat", F_OK) == 0) lua_pushliteral(L, "own");
  else lua_pushliteral(L, "absent");
  return 1;
}

void orch__procscan_register(lua_State *L) {
  static const luaL_Reg fdhold_meta[] = { {"__gc", fdhold_gc}, {NULL, NULL} };
  orch__newclass(L, FDHOLD_MT, NULL, fdhold_meta);
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {
    {"children", proc_children}, {"sockets", proc_sockets}, {"tcp_listeners", proc_tcp_listeners},
    {"fd_count", proc_fd_count},
    {"is_child", proc_is_child}, {"user_ids", proc_user_ids}, {"can_access", proc_can_access},
    {"read_pidfile", proc_read_pidfile}, {"info", proc_info}, {"list", proc_list},
    {"start_time", orch__proc_start_time}, {"wait_exit", proc_wait_exit}, {"subreaper", proc_subreaper},
    {"stat", proc_stat}, {"procfs", proc_procfs},
    {NULL, NULL}
  };
  luaL_setfuncs(L, fns, 0);
}
