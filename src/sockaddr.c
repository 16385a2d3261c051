/*
 * sockaddr.c: what the stream module's files share about unix socket names
 * and files (the abstract namespace, a bind with exact permissions that
 * replaces a stale socket file, the unlink of only our own file), peer
 * credentials, and a few option helpers. Nothing here blocks: the probe of
 * a stale socket is a non-blocking connect.
 */
#include "stream_int.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"
#include "util.h"

int orch__close_fd(int fd) {
  /* Linux closes the fd even when close() reports EINTR: never retry. */
  return fd >= 0 ? close(fd) : 0;
}

/* Fills a sockaddr_un; "@name" is the abstract namespace. Returns 0 or a
 * negative errno. Empty names and zero bytes are checked by the caller. */
int orch__sun_make(const char *path, size_t len, struct sockaddr_un *sa, socklen_t *salen) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (len >= sizeof sa->sun_path + (path[0] == '@')) return -ENAMETOOLONG;
  if (path[0] == '@') {
    memcpy(sa->sun_path + 1, path + 1, len - 1);
    *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  } else {
    memcpy(sa->sun_path, path, len);
    *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
  }
  return 0;
}

/* Raises for an empty unix socket name or one with a zero byte. */
const char *orch__sun_check(lua_State *L, int arg, const char *what, const char *s, size_t len) {
  if (len == 0 || (len == 1 && s[0] == '@'))
    luaL_argerror(L, arg, lua_pushfstring(L, "%s: empty socket path", what));
  if (memchr(s, 0, len))
    luaL_argerror(L, arg, lua_pushfstring(L, "%s: socket path contains a zero byte", what));
  return s;
}

/* Pushes the name of a unix socket address: "@name", a path, or nil. */
void orch__sun_push(lua_State *L, const struct sockaddr_un *sa, socklen_t salen) {
  size_t off = offsetof(struct sockaddr_un, sun_path);
  if (salen <= off) { lua_pushnil(L); return; }
  size_t n = salen - off;
  if (sa->sun_path[0] == 0) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '@');
    luaL_addlstring(&b, sa->sun_path + 1, n - 1);
    luaL_pushresult(&b);
  } else {
    lua_pushlstring(L, sa->sun_path, strnlen(sa->sun_path, n));
  }
}

/* A stale socket file (nobody accepts on it) is removed; a live one makes
 * the bind fail with EADDRINUSE, any other kind of file with EEXIST. */
static int remove_stale(const struct sockaddr_un *sa, socklen_t salen, int type) {
  struct stat st;
  if (lstat(sa->sun_path, &st) < 0) return errno == ENOENT ? 0 : -errno;
  if (!S_ISSOCK(st.st_mode)) return -EEXIST;
  /* At EMFILE with a spare fd (the control socket of an orch restarted
   * after a kill -9 finds its predecessor's file), taken back at once. */
  int probe = orch__fd_socket_lent(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (probe < 0) {
    int e = errno;
    orch__fd_spare_settle();
    return -e;
  }
  int r;
  do r = connect(probe, (const struct sockaddr *)sa, salen); while (r < 0 && errno == EINTR);
  int e = r < 0 ? errno : 0;
  orch__close_fd(probe);
  orch__fd_spare_settle();
  if (r < 0 && e == ECONNREFUSED) {
    if (unlink(sa->sun_path) < 0 && errno != ENOENT) return -errno;
    return 0;
  }
  if (r < 0 && e == EACCES) return -EACCES;
  return -EADDRINUSE;
}

/* Binds a unix socket with exactly `mode`: fchmod before bind narrows the
 * mode the file is created with (no window with a wider mode), chmod after
 * bind undoes the umask. Records the file's identity for a later unlink. */
int orch__sun_bind(int fd, const struct sockaddr_un *sa, socklen_t salen, int mode, int type,
                   dev_t *dev, ino_t *ino) {
  int abstract = sa->sun_path[0] == 0;
  if (!abstract && fchmod(fd, (mode_t)mode) < 0) return -errno;
  int r = bind(fd, (const struct sockaddr *)sa, salen);
  if (r < 0 && errno == EADDRINUSE && !abstract) {
    r = remove_stale(sa, salen, type);
    if (r < 0) return r;
    r = bind(fd, (const struct sockaddr *)sa, salen);
  }
  if (r < 0) return -errno;
  if (!abstract) {
    struct stat st;
    if (chmod(sa->sun_path, (mode_t)mode) < 0 || stat(sa->sun_path, &st) < 0) {
      r = -errno;
      unlink(sa->sun_path);
      return r;
    }
    *dev = st.st_dev;
    *ino = st.st_ino;
  }
  return 0;
}

/* Unlinks a socket file we created, unless it was replaced meanwhile or we
 * are a forked child (the parent still serves on it). */
void orch__sun_unlink(char **path, dev_t dev, ino_t ino, pid_t owner) {
  if (!*path) return;
  struct stat st;
  if (owner == getpid() && lstat(*path, &st) == 0 && st.st_dev == dev && st.st_ino == ino)
    unlink(*path);
  free(*path);
  *path = NULL;
}

int orch__has_option(lua_State *L, int idx, const char *k) {
  int t = lua_getfield(L, idx, k);
  lua_pop(L, 1);
  return t != LUA_TNIL;
}

double orch__opt_timeout(lua_State *L, int idx) {
  if (!orch__has_option(L, idx, "timeout")) return -1;
  double t = orch__opt_number(L, idx, "timeout", -1);
  if (!(t >= 0) || t > 1e12) orch__opt_error(L, idx, "timeout", "seconds (a finite number >= 0) expected");
  return t;
}

/* [-0,+1] A peer's or sender's credentials as { pid, uid, gid }. */
void orch__push_ucred(lua_State *L, const struct ucred *cr) {
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, cr->pid);
  lua_setfield(L, -2, "pid");
  lua_pushinteger(L, cr->uid);
  lua_setfield(L, -2, "uid");
  lua_pushinteger(L, cr->gid);
  lua_setfield(L, -2, "gid");
}

/* Parses a numeric host; "localhost" and "*" are accepted as shortcuts. */
int orch__parse_host(const char *host, int port, struct sockaddr_storage *ss) {
  if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
  else if (strcmp(host, "*") == 0) host = "0.0.0.0";
  memset(ss, 0, sizeof *ss);
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) return 0;
  return -1;
}

int orch__opt_port(lua_State *L, int idx) {
  lua_Integer port = orch__opt_integer(L, idx, "port", -1);
  if (port < 0 || port > 65535) orch__opt_error(L, idx, "port", "port number (0 to 65535) expected");
  return (int)port;
}

ssize_t orch__dgram_recv(int fd, void *buf, size_t len, struct sockaddr_un *from, socklen_t *fromlen,
                         struct ucred *cred, int *have_cred, int *fds, int max, int *nfds, int *ctrunc) {
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(ORCH_MAX_PASS_FDS * sizeof(int))];
  } cbuf;
  struct iovec iov = { buf, len };
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  memset(from, 0, sizeof *from);
  msg.msg_name = from;
  msg.msg_namelen = sizeof *from;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf.buf;
  msg.msg_controllen = sizeof cbuf.buf;
  *have_cred = 0;
  *nfds = 0;
  ssize_t n;
  /* Received descriptors are close-on-exec from the start: no child spawned
   * by another thread of work can inherit them. */
  do n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  *fromlen = msg.msg_namelen;
  if (ctrunc) *ctrunc = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET) continue;
    if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof *cred)) {
      memcpy(cred, CMSG_DATA(c), sizeof *cred);
      *have_cred = 1;
    } else if (c->cmsg_type == SCM_RIGHTS) {
      size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < k; i++) {
        int got;
        memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof got);
        /* Nobody asked for descriptors (or more came than fit): do not
         * leak them. */
        if (fds && *nfds < max) fds[(*nfds)++] = got;
        else orch__close_fd(got);
      }
    }
  }
  return n;
}
