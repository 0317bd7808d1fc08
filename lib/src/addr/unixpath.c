/* unixpath.c - binding to addresses, and socket files on Unix paths:
 * replacing stale ones safely and removing only the ones ursa made. */
#include "addr.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* The path of a path-bound AF_UNIX address, or NULL (abstract, unnamed or
 * not Unix). */
static const char *unix_path(const struct sockaddr *addr, socklen_t len,
                             char *buf, size_t size) {
  if (addr->sa_family != AF_UNIX) return NULL;
  const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
  size_t off = offsetof(struct sockaddr_un, sun_path);
  if (len <= off || un->sun_path[0] == '\0') return NULL;
  size_t n = strnlen(un->sun_path, len - off);
  if (n >= size) return NULL;
  memcpy(buf, un->sun_path, n);
  buf[n] = '\0';
  return buf;
}

/* Serialises replace-and-bind among ursa programs: an exclusive flock on
 * the path's directory.  Returns the locked descriptor, or -1 when the
 * directory cannot be opened for reading (then nothing is serialised). */
static int lock_dir(const char *path) {
  char dir[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  const char *slash = strrchr(path, '/');
  if (!slash) {
    strcpy(dir, ".");
  } else if (slash == path) {
    strcpy(dir, "/");
  } else {
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  while (flock(fd, LOCK_EX) < 0 && errno == EINTR) {
  }
  return fd;
}

/* Is a socket listening (or bound, for datagrams) behind the socket file
 * at path?  A non-blocking connect answers at once: 0 or EAGAIN (backlog
 * full) or EPROTOTYPE (a socket of another type) mean alive, ECONNREFUSED
 * stale.  Returns 1 alive, 0 stale or gone, or a negative errno. */
static int probe_alive(const struct sockaddr *addr, socklen_t len, int type) {
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  int r = connect(fd, addr, len);
  int e = errno;
  close(fd);
  if (r == 0 || e == EAGAIN || e == EINPROGRESS || e == EPROTOTYPE) return 1;
  if (e == ECONNREFUSED || e == ENOENT) return 0;
  return -e;
}

/* With the directory locked: makes room on the path (or refuses), binds
 * and listens. */
static int bind_path(int fd, const struct sockaddr *addr, socklen_t len,
                     int backlog, const char *path) {
  struct stat st;
  if (lstat(path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return ursa__refuse(-EEXIST, "%s exists and is not a socket; not "
                          "replacing it", path);
    int type = SOCK_STREAM;
    socklen_t tl = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) return -errno;
    int alive = probe_alive(addr, len, type);
    if (alive < 0) return alive;
    if (alive)
      return ursa__refuse(-EADDRINUSE, "%s: a process is listening on it",
                          path);
    /* Stale: left by a process that died without removing it. */
    if (unlink(path) < 0 && errno != ENOENT) return -errno;
  } else if (errno != ENOENT) {
    return -errno;
  }
  if (bind(fd, addr, len) < 0) return -errno;
  /* Listen before the lock goes: a bound socket that does not listen yet
   * looks stale to the next prober. */
  if (backlog >= 0 && listen(fd, backlog ? backlog : SOMAXCONN) < 0) {
    int e = errno;
    unlink(path); /* the file just made, of a socket that will not serve */
    return -e;
  }
  return 0;
}

int ursa_socket_bind(int fd, const struct sockaddr *addr, socklen_t addrlen,
                     int backlog, ursa_sockfile *file) {
  if (file) file->path[0] = '\0';
  if (fd < 0) return ursa__invalid("ursa_socket_bind: fd %d is negative", fd);
  int r = ursa__check_sockaddr(addr, addrlen, "ursa_socket_bind");
  if (r) return r;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  if (!unix_path(addr, addrlen, path, sizeof(path))) {
    if (bind(fd, addr, addrlen) < 0) return -errno;
    if (backlog >= 0 && listen(fd, backlog ? backlog : SOMAXCONN) < 0)
      return -errno;
    return 0;
  }
  int lock = lock_dir(path);
  r = bind_path(fd, addr, addrlen, backlog, path);
  struct stat st;
  if (r == 0 && file && lstat(path, &st) == 0) {
    _Static_assert(sizeof(file->path) >= sizeof(path), "room for the path");
    memcpy(file->path, path, sizeof(path));
    file->dev = (uint64_t)st.st_dev;
    file->ino = (uint64_t)st.st_ino;
  }
  if (lock >= 0) close(lock); /* releases the flock */
  return r;
}

void ursa_sockfile_remove(ursa_sockfile *file) {
  if (!file || !file->path[0]) return;
  /* Only the file this socket made: another process may have replaced it
   * (an ursa program does that under the lock, so check and unlink are
   * one step for it). */
  int lock = lock_dir(file->path);
  struct stat st;
  if (lstat(file->path, &st) == 0 && S_ISSOCK(st.st_mode) &&
      (uint64_t)st.st_dev == file->dev && (uint64_t)st.st_ino == file->ino)
    unlink(file->path);
  if (lock >= 0) close(lock);
  file->path[0] = '\0';
}

static int set_int(int fd, int level, int name, int v) {
  return setsockopt(fd, level, name, &v, sizeof(v)) < 0 ? -errno : 0;
}

int ursa__socket_open(const struct sockaddr *addr, socklen_t len, int type,
                      unsigned opts, int backlog, ursa_sockfile *file) {
  int fd = socket(addr->sa_family, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int r = 0;
  if (addr->sa_family != AF_UNIX) {
    if (opts & URSA__SO_REUSEADDR)
      r = set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (!r && (opts & URSA__SO_REUSEPORT))
      r = set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1);
    if (!r && addr->sa_family == AF_INET6)
      r = set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY,
                  (opts & URSA__SO_V6ONLY) ? 1 : 0);
    if (!r && (opts & URSA__SO_NODELAY))
      r = set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1);
  }
  if (!r) r = ursa_socket_bind(fd, addr, len, backlog, file);
  if (r) {
    close(fd);
    return r;
  }
  return fd;
}
