/*
 * l_sys.c: the small system calls a supervisor needs around its control
 * socket, as public API (merged into `orch`): who we are (getuid,
 * geteuid), which file we run (exepath) and the real path of a file
 * (realpath), the name of an errno (errname); files and directories only we
 * may use (orch.private: an atomic 0600 record, an append-only journal, a
 * read that trusts only our own private file, a private directory); a
 * configuration file read only if no other user could have written it
 * (orch.read_config); an flock'ed pid file (orch.flock, one orchestrator
 * per socket); descriptors
 * handed across an exec of orch itself (orch.fd: memfd, read, inherit, close);
 * the unix sockets in a directory (orch.sockets); the C heap's free memory
 * given back to the kernel (orch.malloc_trim); the CPU given up for a moment
 * (orch.sched_yield: a process just spawned finishes its exec first).
 *
 * Ownership: an orch.Lock owns its descriptor (closed by :close() or the
 * GC); every other function leaves nothing open but what it returns.
 * What may block: nothing but short local file system calls.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime.h"
#include "stream_int.h"
#include "lalloc.h"
#include "util.h"

#define LOCK_MT "orch.Lock"
#define MAX_STATE (64 << 20)

/* ------------------------------------------------------------ helpers */

/* What a non-directory found where a directory was expected is: "is a
 * symbolic link owned by uid N, refused (never followed)", "is a FIFO", ... */
static const char *not_dir(const struct stat *st, char *buf, size_t len) {
  switch (st->st_mode & S_IFMT) {
  case S_IFLNK:
    snprintf(buf, len, "is a symbolic link owned by uid %d, not a directory: refused (never followed)",
             (int)st->st_uid);
    return buf;
  case S_IFREG: return "is a regular file, not a directory";
  case S_IFIFO: return "is a FIFO, not a directory";
  case S_IFSOCK: return "is a socket, not a directory";
  case S_IFCHR: case S_IFBLK: return "is a device, not a directory";
  default: return "is not a directory";
  }
}

/* orch.private.mkdir(path [, strict]): creates path (mode 0700) if missing. With
 * strict, an existing directory must be ours (or root's, when we are root)
 * and is narrowed to 0700; it must not be a symbolic link. */
static int private_mkdir(lua_State *L) {
  const char *path = orch__checkpath(L, 1, NULL);
  int strict = lua_toboolean(L, 2);
  orch__check_nargs(L, 2);
  if (mkdir(path, 0700) < 0 && errno != EEXIST) return orch__fail(L, "mkdir", errno);
  struct stat st;
  if (lstat(path, &st) < 0) return orch__fail(L, "stat", errno);
  char buf[96];
  if (!S_ISDIR(st.st_mode))
    return orch__failf(L, "ENOTDIR", "private.mkdir: %s %s", path, not_dir(&st, buf, sizeof buf));
  if (strict) {
    if (st.st_uid != geteuid())
      return orch__failf(L, "EPERM", "private.mkdir: %s belongs to uid %d, not to us", path, (int)st.st_uid);
    if ((st.st_mode & 07777) != 0700 && chmod(path, 0700) < 0) return orch__fail(L, "chmod", errno);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* orch.private.check_dir(path): true if path is a directory (not a symbolic link)
 * owned by our uid or root that neither group nor others may write to, so
 * that no one else can create, replace or remove the files in it; otherwise nil,
 * message, code (EPERM when it is not private). */
static int private_check_dir(lua_State *L) {
  const char *path = orch__checkpath(L, 1, NULL);
  orch__check_nargs(L, 1);
  struct stat st;
  if (lstat(path, &st) < 0) return orch__fail(L, "private.check_dir", errno);
  char buf[96];
  const char *why = !S_ISDIR(st.st_mode) ? not_dir(&st, buf, sizeof buf)
                  : st.st_uid != geteuid() && st.st_uid != 0 ? "belongs to another user"
                  : (st.st_mode & 022) ? "is writable by group or others" : NULL;
  if (why) return orch__failf(L, "EPERM", "private.check_dir: %s %s", path, why);
  lua_pushboolean(L, 1);
  return 1;
}

/* orch.getuid(), orch.geteuid(): the real and the effective uid. */
static int sys_getuid(lua_State *L) {
  orch__check_nargs(L, 0);
  lua_pushinteger(L, (lua_Integer)getuid());
  return 1;
}

static int sys_geteuid(lua_State *L) {
  orch__check_nargs(L, 0);
  lua_pushinteger(L, (lua_Integer)geteuid());
  return 1;
}

/* orch.fd.inherit(fd [, on]): clears (or sets back) close-on-exec so that fd
 * survives an exec of orch itself. */
static int fd_inherit(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 1, "file descriptor out of range");
  int on = lua_isnoneornil(L, 2) ? 1 : lua_toboolean(L, 2);
  orch__check_nargs(L, 2);
  int fl = fcntl((int)fd, F_GETFD);
  if (fl < 0) return orch__fail(L, "fd.inherit", errno);
  fl = on ? (fl & ~FD_CLOEXEC) : (fl | FD_CLOEXEC);
  if (fcntl((int)fd, F_SETFD, fl) < 0) return orch__fail(L, "fd.inherit", errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* orch.fd.stat(fd): what fstat(2) says of fd: a table of dev, ino, type,
 * mode (the permission bits), uid and size. */
static int fd_stat(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 1, "file descriptor out of range");
  orch__check_nargs(L, 1);
  struct stat sb;
  if (fstat((int)fd, &sb) < 0) return orch__fail(L, "fd.stat", errno);
  const char *type = S_ISREG(sb.st_mode) ? "file" : S_ISDIR(sb.st_mode) ? "directory"
                   : S_ISSOCK(sb.st_mode) ? "socket" : S_ISFIFO(sb.st_mode) ? "fifo"
                   : S_ISCHR(sb.st_mode) ? "char" : S_ISBLK(sb.st_mode) ? "block"
                   : S_ISLNK(sb.st_mode) ? "link" : "unknown";
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, (lua_Integer)sb.st_dev); lua_setfield(L, -2, "dev");
  lua_pushinteger(L, (lua_Integer)sb.st_ino); lua_setfield(L, -2, "ino");
  lua_pushstring(L, type); lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)(sb.st_mode & 07777)); lua_setfield(L, -2, "mode");
  lua_pushinteger(L, (lua_Integer)sb.st_uid); lua_setfield(L, -2, "uid");
  lua_pushinteger(L, (lua_Integer)sb.st_size); lua_setfield(L, -2, "size");
  return 1;
}

/* orch.fd.memfd(data): an anonymous file holding data, positioned at 0
 * (close-on-exec; see inherit). */
static int fd_memfd(lua_State *L) {
  size_t len;
  const char *data = luaL_checklstring(L, 1, &len);
  luaL_argcheck(L, len <= MAX_STATE, 1, "more than 64 MiB");
  orch__check_nargs(L, 1);
  int fd = memfd_create("orch-state", MFD_CLOEXEC);
  if (fd < 0) return orch__fail(L, "fd.memfd", errno);
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, data + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { int e = errno; close(fd); return orch__fail(L, "fd.memfd", e); }
    done += (size_t)n;
  }
  if (lseek(fd, 0, SEEK_SET) < 0) { int e = errno; close(fd); return orch__fail(L, "fd.memfd", e); }
  orch__fd_own(fd);
  lua_pushinteger(L, fd);
  return 1;
}

/* A descriptor orch did not hand out raw: an object's (close the object),
 * or orch's own (libuv's), which Lua must never close. */
static int not_handed(lua_State *L, const char *op, int fd) {
  return orch__failf(L, "EBADF", "%s: fd %d is not one orch handed out (an object's or orch's own)", op, fd);
}

/* orch.fd.close(fd): closes a descriptor number the caller owns (one that
 * dgram:recv{ fds = "raw" } or orch.fd.memfd gave), never retried (Linux
 * closes it even when close(2) says EINTR). */
static int fd_close(lua_State *L) {
  lua_Integer fd = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fd >= 0 && fd <= 0x7fffffff, 1, "file descriptor out of range");
  orch__check_nargs(L, 1);
  if (!orch__fd_disown((int)fd)) return not_handed(L, "fd.close", (int)fd);
  if (close((int)fd) < 0 && errno != EINTR) return orch__fail(L, "fd.close", errno);
  lua_pushboolean(L, 1);
  return 1;
}

/* Reads fd (a regular file) to its end (at most 64 MiB) and closes it. */
static int read_close(lua_State *L, int fd) {
  struct stat st;
  if (fstat(fd, &st) < 0) return orch__fail(L, "fd.read", errno);
  if (!S_ISREG(st.st_mode)) return orch__failf(L, "EINVAL", "fd.read: not a regular file");
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  size_t total = 0;
  for (;;) {
    char *p = luaL_prepbuffer(&b);
    ssize_t n = read(fd, p, LUAL_BUFFERSIZE);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { int e = errno; close(fd); return orch__fail(L, "fd.read", e); }
    if (n == 0) break;
    luaL_addsize(&b, (size_t)n);
    total += (size_t)n;
    if (total > MAX_STATE) { close(fd); return orch__failf(L, "EFBIG", "fd.read: more than 64 MiB"); }
  }
  close(fd);
  luaL_pushresult(&b);
  return 1;
}

/* orch.fd.spares(): the runtime's spare fds held now, and how many there
 * are (fdlimit.c): fewer only while orch is out of fds; and the turns of
 * the loop at which the runtime looked for free fds to take them back. */
static int fd_spares(lua_State *L) {
  orch__check_nargs(L, 0);
  int total, held = orch__fd_spares(&total);
  lua_pushinteger(L, held);
  lua_pushinteger(L, total);
  lua_pushinteger(L, (lua_Integer)orch__fd_spare_turns(orch__rt(L)));
  return 3;
}

/* orch.fd.read(fd): reads a descriptor orch handed out to its end and
 * closes it. */
static int fd_read(lua_State *L) {
  lua_Integer fdi = luaL_checkinteger(L, 1);
  luaL_argcheck(L, fdi >= 0 && fdi <= 0x7fffffff, 1, "file descriptor out of range");
  orch__check_nargs(L, 1);
  int fd = (int)fdi;
  struct stat st;
  if (fstat(fd, &st) < 0) return orch__fail(L, "fd.read", errno);
  if (!S_ISREG(st.st_mode)) return orch__failf(L, "EINVAL", "fd.read: not a regular file");
  if (!orch__fd_disown(fd)) return not_handed(L, "fd.read", fd);
  return read_close(L, fd);
}

/* orch.private.write(path, data): replaces path with a file holding data,
 * atomically (a temporary file beside it, mode 0600, renamed over it), so
 * that a reader never sees half a record, even after orch was killed in
 * the middle of writing it. No fsync: the record must survive the death of
 * orch, not of the machine (which ends its processes too). */
static int private_write(lua_State *L) {
  size_t plen, len;
  const char *path = luaL_checklstring(L, 1, &plen);
  const char *data = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, plen > 0 && strlen(path) == plen, 1, "path without zero bytes expected");
  luaL_argcheck(L, len <= MAX_STATE, 2, "more than 64 MiB");
  orch__check_nargs(L, 2);
  lua_pushfstring(L, "%s.tmp", path);
  const char *tmp = lua_tostring(L, -1);
  if (unlink(tmp) < 0 && errno != ENOENT) return orch__fail(L, "private.write", errno);
  /* At EMFILE with a spare fd (the record must be written whoever took
   * every fd), taken back at once after the close. */
  int fd = orch__fd_open_at(AT_FDCWD, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600, NULL);
  if (fd < 0) {
    int e = errno;
    orch__fd_spare_settle();
    return orch__fail(L, "private.write", e);
  }
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, data + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      orch__fd_spare_settle();
      unlink(tmp);
      return orch__fail(L, "private.write", e);
    }
    done += (size_t)n;
  }
  int cr = close(fd), ce = errno;
  orch__fd_spare_settle();
  if (cr < 0 && ce != EINTR) {
    unlink(tmp);
    return orch__fail(L, "private.write", ce);
  }
  if (rename(tmp, path) < 0) {
    int e = errno;
    unlink(tmp);
    return orch__fail(L, "private.write", e);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* What a file that is not a regular one is, for a refusal. */
static const char *file_kind(mode_t m) {
  return S_ISFIFO(m) ? "a FIFO" : S_ISSOCK(m) ? "a socket" : S_ISDIR(m) ? "a directory"
       : S_ISCHR(m) || S_ISBLK(m) ? "a device" : S_ISLNK(m) ? "a symbolic link" : "not a regular file";
}

/* orch.private.append(path, data): appends data to path in one write
 * (created mode 0600), for a journal line that must be on file before
 * anything else happens. It appends only to what orch.private.read would
 * trust: a regular file with one link, owned by our uid, that group and
 * others may not access. A symbolic link is never followed; a FIFO (or a
 * socket, a device) is never waited on: the open does not block
 * (O_NONBLOCK: a FIFO without a reader fails with ENXIO, one with a reader
 * is refused before anything is written). Else nil, "private.append: PATH
 * is a FIFO (refused)", "EPERM". All of data or nothing: a short write (a
 * full disk) is cut off again, and fails with ENOSPC. */
static int private_append(lua_State *L) {
  size_t plen, len;
  const char *path = luaL_checklstring(L, 1, &plen);
  const char *data = luaL_checklstring(L, 2, &len);
  luaL_argcheck(L, plen > 0 && strlen(path) == plen, 1, "path without zero bytes expected");
  luaL_argcheck(L, len <= 65536, 2, "more than 64 KiB");
  luaL_argcheck(L, lua_gettop(L) <= 2, 3, "no value expected");
  int fd = orch__fd_open_at(AT_FDCWD, path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC,
                            0600, NULL);
  struct stat st;
  if (fd < 0) {
    int e = errno;
    orch__fd_spare_settle();
    if (e == ELOOP) return orch__failf(L, "EPERM", "private.append: %s is a symbolic link (never followed)", path);
    if (e == ENXIO && lstat(path, &st) == 0)
      return orch__failf(L, "EPERM", "private.append: %s is %s (refused, never waited on)", path, file_kind(st.st_mode));
    return orch__fail(L, "private.append", e);
  }
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    orch__fd_spare_settle();
    return orch__fail(L, "private.append", e);
  }
  const char *why = !S_ISREG(st.st_mode) ? file_kind(st.st_mode)
                  : st.st_uid != geteuid() ? "a file of another user"
                  : (st.st_mode & 077) ? "accessible to group or others"
                  : st.st_nlink != 1 ? "a file with another link" : NULL;
  if (why) {
    close(fd);
    orch__fd_spare_settle();
    return orch__failf(L, "EPERM", "private.append: %s is %s (refused)", path, why);
  }
  ssize_t n;
  do n = write(fd, data, len); while (n < 0 && errno == EINTR);
  int e = n < 0 ? errno : (size_t)n != len ? ENOSPC : 0;
  /* A full disk took only the start of data: cut it off again, so that
   * the file never ends in half a line (the size before the write is
   * where it began: only orch, holding its socket's lock, appends). */
  if (n > 0 && (size_t)n != len && ftruncate(fd, st.st_size) < 0) e = errno;
  close(fd);
  orch__fd_spare_settle();
  if (e) return orch__fail(L, "private.append", e);
  lua_pushboolean(L, 1);
  return 1;
}

/* orch.private.read(path): the content of path, trusted only if it is a
 * regular file (not a symlink) owned by our uid that neither group nor
 * others may read or write. Otherwise nil, message, code: ENOENT when it
 * does not exist, EPERM when it is not to be trusted. */
static int private_read(lua_State *L) {
  size_t plen;
  const char *path = luaL_checklstring(L, 1, &plen);
  luaL_argcheck(L, plen > 0 && strlen(path) == plen, 1, "path without zero bytes expected");
  orch__check_nargs(L, 1);
  /* At EMFILE with a spare fd: a state record is read whoever took every
   * fd (persist.recover must not take it for none), and the spare taken
   * back once the file is closed. */
  int fd = orch__fd_open_at(AT_FDCWD, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0, NULL);
  if (fd < 0) {
    int e = errno;
    orch__fd_spare_settle();
    if (e == ELOOP) return orch__failf(L, "EPERM", "private.read: %s is a symbolic link", path);
    return orch__fail(L, "private.read", e);
  }
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    orch__fd_spare_settle();
    return orch__fail(L, "private.read", e);
  }
  const char *why = !S_ISREG(st.st_mode) ? "is not a regular file"
                  : st.st_uid != geteuid() && st.st_uid != 0 ? "belongs to another user"
                  : (st.st_mode & 077) ? "is accessible to group or others"
                  : st.st_size > MAX_STATE ? "is larger than 64 MiB" : NULL;
  if (why) {
    close(fd);
    orch__fd_spare_settle();
    return orch__failf(L, "EPERM", "private.read: %s %s", path, why);
  }
  /* read_fd wants a regular file and closes it. */
  int n = read_close(L, fd);
  orch__fd_spare_settle();
  return n;
}

/* orch.read_config(path): the content of a configuration file a user named
 * (a service's env_file), read without ever blocking the loop (O_NONBLOCK:
 * a FIFO fails at once) and trusted only as DESIGN's rule says: a regular
 * file owned by our uid or root that others may not write. Otherwise nil,
 * message, code (ENOENT, EACCES, EPERM for an untrusted file). */
static int sys_read_config(lua_State *L) {
  size_t plen;
  const char *path = luaL_checklstring(L, 1, &plen);
  luaL_argcheck(L, plen > 0 && strlen(path) == plen, 1, "path without zero bytes expected");
  orch__check_nargs(L, 1);
  int fd;
  do fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return orch__fail_errno(L, errno, "read_config: cannot open %s", path);
  struct stat st;
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    return orch__fail(L, "read_config", e);
  }
  const char *why = !S_ISREG(st.st_mode) ? "is not a regular file"
                  : (st.st_uid != geteuid() && st.st_uid != 0) ? "belongs to another user"
                  : (st.st_mode & 002) ? "may be written by others"
                  : st.st_size > (1 << 20) ? "is larger than 1 MiB" : NULL;
  if (why) {
    close(fd);
    return orch__failf(L, "EPERM", "read_config: %s %s", path, why);
  }
  return read_close(L, fd);
}

/* orch.sockets(dir): the names of the unix sockets in dir, sorted by the
 * caller (for `orch ctl` to find the one orchestrator running). */
static int sys_sockets(lua_State *L) {
  const char *dir = orch__checkpath(L, 1, NULL);
  orch__check_nargs(L, 1);
  DIR *d = opendir(dir);
  if (!d) return orch__fail(L, "opendir", errno);
  lua_newtable(L);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode)) {
      lua_pushstring(L, e->d_name);
      lua_rawseti(L, -2, ++n);
    }
  }
  closedir(d);
  return 1;
}

/* orch.exepath(): the file orch was executed from, for `orch ctl reexec`
 * (after an upgrade replaced it, the new file at the same path). */
static int sys_exepath(lua_State *L) {
  orch__check_nargs(L, 0);
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) return orch__fail(L, "readlink", errno);
  buf[n] = 0;
  static const char deleted[] = " (deleted)";
  size_t dl = sizeof deleted - 1;
  if ((size_t)n > dl && strcmp(buf + n - dl, deleted) == 0) buf[n - dl] = 0;
  lua_pushstring(L, buf);
  return 1;
}

/* orch.errname(n): the name of errno n ("ENOENT"), the one every binding
 * returns third (orch__errname, strerrorname_np(3)), for an errno Lua got
 * elsewhere (io.open's third result); nil when n names none. A value that
 * is not an integer raises (a numeric string too: "2" is not an errno). */
static int sys_errname(lua_State *L) {
  if (lua_type(L, 1) != LUA_TNUMBER) return luaL_typeerror(L, 1, "number");
  lua_Integer n = luaL_checkinteger(L, 1);
  orch__check_nargs(L, 1);
  /* (0 is no errno: strerrorname_np names it "0".) */
  const char *name = n > 0 && n <= INT_MAX ? strerrorname_np((int)n) : NULL;
  if (name) lua_pushstring(L, name);
  else lua_pushnil(L);
  return 1;
}

/* orch.realpath(path): the absolute path of path with every symbolic link,
 * `.` and `..` resolved (realpath(3)); the file must exist. `orch run` names
 * the script a control socket's state belongs to with it. */
static int sys_realpath(lua_State *L) {
  const char *path = orch__checkpath(L, 1, NULL);
  orch__check_nargs(L, 1);
  char buf[PATH_MAX];
  if (!realpath(path, buf)) return orch__fail(L, "realpath", errno);
  lua_pushstring(L, buf);
  return 1;
}

/* ------------------------------------------------------------ lock */

/* One orchestrator per control socket: an flock on a file beside it, held
 * for the life of the process (close-on-exec; `orch ctl reexec` hands the
 * descriptor over explicitly), with the holder's pid in it for the message
 * a second orch prints. The lock file is never removed: unlinking it while
 * another process waits on the old inode would let two hold "the" lock. */
typedef struct { int fd; char *path; } Lock;

static Lock *check_lock(lua_State *L, int idx) {
  Lock *k = luaL_checkudata(L, idx, LOCK_MT);
  if (k->fd < 0) orch__closed_error(L, LOCK_MT);
  return k;
}

static int write_pid(int fd) {
  char buf[32];
  int len = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
  if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)len, 0) != len) return -errno;
  return 0;
}

/* The pid written in the lock file by its holder, or 0. */
static int holder_pid(int fd) {
  char buf[32];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = 0;
  return atoi(buf);
}

/* orch.flock(path [, fd]): takes the lock (path is the lock file), or adopts
 * an inherited descriptor that holds it. Returns the orch.Lock, or
 * nil, message, "EAGAIN" naming the holder's pid. */
static int sys_flock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer ifd = luaL_optinteger(L, 2, -1);
  luaL_argcheck(L, ifd >= -1 && ifd <= 0x7fffffff, 2, "file descriptor out of range");
  orch__check_nargs(L, 2);
  Lock *k = lua_newuserdatauv(L, sizeof *k, 0);
  k->fd = -1;
  k->path = NULL;
  luaL_setmetatable(L, LOCK_MT);
  int fd = (int)ifd;
  if (fd < 0) {
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
    if (fd < 0) return orch__fail_errno(L, errno, "lock %s", path);
  }
  struct stat st;
  int e = 0;
  if (fstat(fd, &st) < 0) e = errno;
  else if (!S_ISREG(st.st_mode)) {
    if (ifd < 0) close(fd);
    return orch__failf(L, "EINVAL", "lock %s: not a regular file", path);
  } else if (st.st_uid != geteuid() && st.st_uid != 0) {
    if (ifd < 0) close(fd);
    return orch__failf(L, "EPERM", "lock %s: belongs to uid %d, not to us", path, (int)st.st_uid);
  }
  if (!e && (st.st_mode & 0077) && fchmod(fd, 0600) < 0) e = errno;
  if (e) {
    if (ifd < 0) close(fd);
    return orch__fail_errno(L, e, "lock %s", path);
  }
  int r;
  do r = flock(fd, LOCK_EX | LOCK_NB); while (r < 0 && errno == EINTR);
  if (r < 0) {
    e = errno;
    int pid = holder_pid(fd);
    if (ifd < 0) close(fd);
    if (e == EWOULDBLOCK) {
      if (pid > 0) return orch__failf(L, "EAGAIN", "already held by pid %d (lock file %s)", pid, path);
      return orch__failf(L, "EAGAIN", "already held by another process (lock file %s)", path);
    }
    return orch__fail_errno(L, e, "lock %s", path);
  }
  if (ifd >= 0 && (r = orch__cloexec(fd)) < 0) return orch__fail(L, "lock", -r);
  if (ifd < 0 && (r = write_pid(fd)) < 0) {
    close(fd);
    return orch__fail_errno(L, -r, "lock %s", path);
  }
  if (!(k->path = strdup(path))) {
    if (ifd < 0) close(fd);
    return orch__fail(L, "lock", ENOMEM);
  }
  k->fd = fd;
  return 1;
}

static int lock_close(lua_State *L) {
  Lock *k = luaL_checkudata(L, 1, LOCK_MT);
  if (k->fd >= 0) close(k->fd);
  k->fd = -1;
  free(k->path);
  k->path = NULL;
  lua_pushboolean(L, 1);
  return 1;
}

static int lock_fd(lua_State *L) {
  lua_pushinteger(L, check_lock(L, 1)->fd);
  return 1;
}

static int lock_path(lua_State *L) {
  lua_pushstring(L, check_lock(L, 1)->path);
  return 1;
}

/* lock:write_pid(): the current pid into the lock file (after daemonize). */
static int lock_write_pid(lua_State *L) {
  Lock *k = check_lock(L, 1);
  int r = write_pid(k->fd);
  if (r < 0) return orch__fail(L, "lock", -r);
  lua_pushboolean(L, 1);
  return 1;
}

/* orch.malloc_trim(): glibc's malloc_trim(0), and the same for the pages
 * of orch's Lua allocator (src/lalloc.c) that hold no object. Freed memory
 * stays in the C heap until then (only its top is given back by itself):
 * after a full collection that freed a lot (a mass start's garbage), this
 * returns the free pages anywhere in the heap to the kernel. true when some
 * were. */
static int sys_malloc_trim(lua_State *L) {
  orch__check_nargs(L, 0);
  orch_lalloc *a = orch__lalloc_of(L);
  int some = a && orch__lalloc_trim(a) > 0;
#ifdef __GLIBC__
  some = malloc_trim(0) || some;
#endif
  lua_pushboolean(L, some);
  return 1;
}

/* orch.sched_yield() -> true: the rest of this CPU's turn goes to the
 * other runnable tasks on it (sched_yield(2) never fails on Linux). */
static int sys_sched_yield(lua_State *L) {
  orch__check_nargs(L, 0);
  sched_yield();
  lua_pushboolean(L, 1);
  return 1;
}

static int lock_tostring(lua_State *L) {
  Lock *k = luaL_checkudata(L, 1, LOCK_MT);
  if (k->fd < 0) lua_pushliteral(L, LOCK_MT ": closed");
  else lua_pushfstring(L, LOCK_MT ": %s", k->path);
  return 1;
}

int orch__open_sys(lua_State *L) {
  static const luaL_Reg lock_methods[] = {
    {"close", lock_close}, {"fd", lock_fd}, {"path", lock_path}, {"write_pid", lock_write_pid}, {NULL, NULL}
  };
  static const luaL_Reg lock_meta[] = {
    {"__gc", lock_close}, {"__close", lock_close}, {"__tostring", lock_tostring}, {NULL, NULL}
  };
  orch__newclass(L, LOCK_MT, lock_methods, lock_meta);
  lua_pop(L, 1);
  static const luaL_Reg fns[] = {
    {"getuid", sys_getuid}, {"geteuid", sys_geteuid}, {"exepath", sys_exepath},
    {"realpath", sys_realpath}, {"errname", sys_errname},
    {"sockets", sys_sockets}, {"flock", sys_flock}, {"read_config", sys_read_config},
    {"malloc_trim", sys_malloc_trim}, {"sched_yield", sys_sched_yield}, {NULL, NULL}
  };
  luaL_newlib(L, fns);
  static const luaL_Reg private_fns[] = {
    {"write", private_write}, {"append", private_append}, {"read", private_read},
    {"mkdir", private_mkdir}, {"check_dir", private_check_dir}, {NULL, NULL}
  };
  luaL_newlib(L, private_fns);
  lua_setfield(L, -2, "private");
  static const luaL_Reg fd_fns[] = {
    {"memfd", fd_memfd}, {"read", fd_read}, {"inherit", fd_inherit}, {"stat", fd_stat},
    {"close", fd_close}, {"spares", fd_spares}, {NULL, NULL}
  };
  luaL_newlib(L, fd_fns);
  lua_setfield(L, -2, "fd");
  return 1;
}
