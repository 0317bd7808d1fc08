/* unixpath.c - socket files on Unix paths: replacing stale ones safely and
 * removing the ones ursa made. */
#include "internal.h"

#include <errno.h>
#include <string.h>
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

int ursa__unix_prepare(const struct sockaddr *addr, socklen_t len, int type) {
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  if (!unix_path(addr, len, path, sizeof(path))) return 0;
  struct stat st;
  if (lstat(path, &st) < 0) return errno == ENOENT ? 0 : -errno;
  if (!S_ISSOCK(st.st_mode))
    return ursa__refuse(-EEXIST, "%s exists and is not a socket; not "
                        "replacing it", path);
  /* A socket file: is anyone behind it? */
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int r = connect(fd, addr, len);
  int e = errno;
  close(fd);
  /* Connected, backlog full (EAGAIN) or another socket type: alive. */
  if (r == 0 || e == EAGAIN || e == EPROTOTYPE)
    return ursa__refuse(-EADDRINUSE, "%s: a process is listening on it",
                        path);
  if (e != ECONNREFUSED) return -e;
  /* Stale: left by a process that died without removing it. */
  if (unlink(path) < 0 && errno != ENOENT) return -errno;
  return 0;
}

void ursa__unix_remember(const struct sockaddr *addr, socklen_t len,
                         char *path, size_t size, uint64_t *dev,
                         uint64_t *ino) {
  path[0] = '\0';
  if (!unix_path(addr, len, path, size)) {
    path[0] = '\0';
    return;
  }
  struct stat st;
  if (lstat(path, &st) < 0) {
    path[0] = '\0';
    return;
  }
  *dev = (uint64_t)st.st_dev;
  *ino = (uint64_t)st.st_ino;
}

void ursa__unix_forget(const char *path, uint64_t dev, uint64_t ino) {
  if (!path[0]) return;
  /* Only the file this socket made: another process may have replaced it. */
  struct stat st;
  if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) &&
      (uint64_t)st.st_dev == dev && (uint64_t)st.st_ino == ino)
    unlink(path);
}
