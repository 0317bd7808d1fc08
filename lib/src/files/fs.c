/* fs.c - file requests: each a single io_uring operation of one kind
 * ("fs"), prepared from the request's fields.  The epoll backend runs the
 * same SQEs as system calls on the work pool (core/epoll_pool.c), so
 * nothing here knows which backend runs. */
#include "files.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>

URSA__OP_DECLARE(fs);

enum {
  FS_OPEN = 1,
  FS_READ,
  FS_WRITE,
  FS_READV,
  FS_WRITEV,
  FS_FSYNC,
  FS_STATX,
  FS_CLOSE,
  FS_UNLINK,
  FS_RENAME,
  FS_MKDIR,
  FS_READ_FIXED,
  FS_WRITE_FIXED,
};

static const char *const fs_names[] = {
    [FS_OPEN] = "ursa_fs_open",     [FS_READ] = "ursa_fs_read",
    [FS_WRITE] = "ursa_fs_write",   [FS_READV] = "ursa_fs_readv",
    [FS_WRITEV] = "ursa_fs_writev", [FS_FSYNC] = "ursa_fs_fsync",
    [FS_STATX] = "ursa_fs_statx",   [FS_CLOSE] = "ursa_fs_close",
    [FS_UNLINK] = "ursa_fs_unlink", [FS_RENAME] = "ursa_fs_rename",
    [FS_MKDIR] = "ursa_fs_mkdir",   [FS_READ_FIXED] = "ursa_fs_read_fixed",
    [FS_WRITE_FIXED] = "ursa_fs_write_fixed",
};

URSA__STATIC_ASSERT(sizeof(((ursa_fs_req *)0)->how) == sizeof(struct open_how),
                    "the request holds an open_how");

/* The checks every call shares; fills what every request has. */
static int begin(ursa_loop *loop, ursa_fs_req *req, int type, ursa_fs_cb cb) {
  const char *fn = fs_names[type];
  if (!loop || !req || !cb)
    return ursa__invalid("%s: NULL %s", fn,
                         !loop ? "loop" : !req ? "request" : "callback");
  if (req->op.state != URSA__IDLE)
    return ursa__refuse(-EBUSY, "%s: the request is active (its callback "
                        "has not run)", fn);
  req->loop = loop;
  req->cb = cb;
  req->type = (uint8_t)type;
  req->counted = 0;
  req->fixed = 0;
  req->index = 0;
  req->op.kind = URSA__KIND(fs);
  req->op.flags = 0;
  req->op.nsqe = 1;
  req->fd = req->fd2 = -1;
  req->len = 0;
  req->flags = 0;
  req->off = 0;
  req->ptr = req->path2 = NULL;
  req->names = NULL;
  req->out = NULL;
  return 0;
}

static int bad_fd(int type, int fd) {
  return ursa__invalid("%s: descriptor %d is negative", fs_names[type], fd);
}

static int bad_dirfd(int type, int dirfd) {
  return ursa__invalid("%s: directory descriptor %d is neither a descriptor "
                       "nor AT_FDCWD", fs_names[type], dirfd);
}

static int check_path(int type, const char *path, const char *which) {
  if (!path) return ursa__invalid("%s: NULL %s", fs_names[type], which);
  return 0;
}

/* Copies the path (and rename's second) into one block the request owns
 * until its callback: the operation reads it only when it starts. */
static int copy_paths(ursa_fs_req *req, const char *path, const char *path2) {
  size_t a = strlen(path) + 1, b = path2 ? strlen(path2) + 1 : 0;
  char *m = malloc(a + b);
  if (!m)
    return ursa__refuse(-ENOMEM, "%s: no memory for a copy of the path",
                        fs_names[req->type]);
  memcpy(m, path, a);
  if (path2) memcpy(m + a, path2, b);
  req->names = m;
  req->ptr = m;
  req->path2 = path2 ? m + a : NULL;
  return 0;
}

static int check_off(int type, int64_t off) {
  if (off < -1)
    return ursa__invalid("%s: offset %lld is negative (-1 means the "
                         "descriptor's position)", fs_names[type],
                         (long long)off);
  return 0;
}

static int start(ursa_fs_req *req) {
  ursa__op_submit(req->loop, &req->op);
  return 0;
}

/* ---- reads at once (URSA_FEAT_FILE_INLINE) ----
 * A read whose pages are cached costs one system call done here, where
 * the ring would add an SQE, a completion and (for a file system that
 * cannot read without blocking, such as tmpfs) a hand-off to a kernel
 * worker; the epoll backend would add a pool thread.  (At depth the ring
 * wins on cached pages instead: see read_now.)  preadv2 with
 * RWF_NOWAIT answers at once or says EAGAIN, and the read goes to the
 * ring.  tmpfs and ramfs refuse RWF_NOWAIT (EOPNOTSUPP) although their
 * reads never wait on a disk: a regular file there is read with plain
 * pread.  That verdict is kept per descriptor number and checked by
 * fstat (device and inode) before each use, since the number may have
 * been closed and reused; a descriptor found not to be such a file is
 * remembered unchecked (a stale "no" costs only the ring). */

#define FSC_SLOTS 64

struct ursa__fscache {
  unsigned reads; /* the loop's reads not yet called back */
  /* Registered buffers (ursa_fs_buffers_register): the caller's iovecs,
   * copied; fixed requests under way, which unregistering waits for. */
  struct iovec *fixed;
  unsigned nfixed, fixed_busy;
  struct {
    int fd; /* -1: empty */
    int memfs;
    uint64_t dev, ino;
  } e[FSC_SLOTS];
};

void ursa__fs_free(ursa_loop *loop) {
  /* The ring's registration goes with the ring. */
  if (loop->fscache) free(loop->fscache->fixed);
  free(loop->fscache);
  loop->fscache = NULL;
}

static struct ursa__fscache *fsc_get(ursa_loop *loop) {
  struct ursa__fscache *c = loop->fscache;
  if (!c && (c = loop->fscache = malloc(sizeof(*c)))) {
    c->reads = 0;
    c->fixed = NULL;
    c->nfixed = c->fixed_busy = 0;
    for (unsigned i = 0; i < FSC_SLOTS; i++) c->e[i].fd = -1;
  }
  return c;
}

/* fd is a regular file on tmpfs or ramfs: from the kept verdict, checked
 * by fstat, or found out (fstat, fstatfs) and kept. */
static bool memfs_regular(struct ursa__fscache *c, int fd) {
  unsigned i = (unsigned)fd % FSC_SLOTS;
  if (c->e[i].fd == fd && !c->e[i].memfs) return false;
  struct stat st;
  if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
    c->e[i].fd = -1;
    return false;
  }
  if (c->e[i].fd == fd && c->e[i].dev == (uint64_t)st.st_dev &&
      c->e[i].ino == (uint64_t)st.st_ino)
    return true;
  struct statfs sf;
  int mem = fstatfs(fd, &sf) == 0 &&
            (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC);
  c->e[i].fd = fd;
  c->e[i].memfs = mem;
  c->e[i].dev = (uint64_t)st.st_dev;
  c->e[i].ino = (uint64_t)st.st_ino;
  return mem;
}

/* Tries the read here; true when it is done (its result deferred to the
 * loop, so the callback still never runs inside the call).  With other
 * reads out, one that may go to the ring does: one enter then carries
 * them all, and the kernel completes cached ones there as cheaply. */
static bool read_now(ursa_fs_req *req, struct ursa__fscache *c) {
  ursa_loop *loop = req->loop;
  struct iovec one = {(void *)(uintptr_t)req->ptr, req->len};
  const struct iovec *iov = &one;
  int cnt = 1;
  if (req->type == FS_READV) {
    iov = req->ptr;
    cnt = (int)req->len;
  }
  /* A descriptor known to be on tmpfs skips the RWF_NOWAIT try it would
   * fail (once its verdict is checked). */
  unsigned slot = (unsigned)req->fd % FSC_SLOTS;
  bool mem = c->e[slot].fd == req->fd && c->e[slot].memfs &&
             req->off >= 0 && memfs_regular(c, req->fd);
  if (!mem && c->reads > 1) return false;
  if (loop->be->caps & URSA__BE_COUNTS_SYSCALLS) loop->stats.enters++;
  ssize_t n = -1;
  if (!mem) {
    n = preadv2(req->fd, iov, cnt, (off_t)req->off, req->flags | RWF_NOWAIT);
    mem = n < 0 && errno == EOPNOTSUPP && req->off >= 0 &&
          memfs_regular(c, req->fd);
  }
  if (mem) n = preadv2(req->fd, iov, cnt, (off_t)req->off, req->flags);
  /* Anything else (EAGAIN: not cached; a pipe, a socket, an error) is the
   * ring's or the pool's to do and to report. */
  if (n < 0) return false;
  ursa__op_defer(loop, &req->op, (int)n);
  return true;
}

static int start_read(ursa_fs_req *req) {
  struct ursa__fscache *c = fsc_get(req->loop);
  if (c) {
    c->reads++;
    req->counted = 1;
    if ((req->loop->used & URSA_FEAT_FILE_INLINE) && read_now(req, c))
      return 0;
  }
  return start(req);
}

int ursa_fs_open(ursa_loop *loop, ursa_fs_req *req, int dirfd,
                 const char *path, int flags, unsigned mode,
                 uint64_t resolve, ursa_fs_cb cb) {
  int r = begin(loop, req, FS_OPEN, cb);
  if (r) return r;
  if (dirfd < 0 && dirfd != AT_FDCWD) return bad_dirfd(FS_OPEN, dirfd);
  if ((r = check_path(FS_OPEN, path, "path"))) return r;
  if (mode & ~07777u)
    return ursa__invalid("ursa_fs_open: mode %#o has bits beyond 07777", mode);
  if (mode && !(flags & O_CREAT) && (flags & O_TMPFILE) != O_TMPFILE)
    return ursa__invalid("ursa_fs_open: mode %#o without O_CREAT or "
                         "O_TMPFILE (openat2 refuses it)", mode);
  if ((r = copy_paths(req, path, NULL))) return r;
  req->fd = dirfd;
  req->how.flags = (uint64_t)(unsigned)(flags | O_CLOEXEC);
  req->how.mode = mode;
  req->how.resolve = resolve;
  return start(req);
}

/* The checks and fields a read or a write (fixed or not) shares. */
static int rw_begin(ursa_loop *loop, ursa_fs_req *req, int type, int fd,
                    const void *buf, size_t len, int64_t off, ursa_fs_cb cb) {
  int r = begin(loop, req, type, cb);
  if (r) return r;
  if (fd < 0) return bad_fd(type, fd);
  if (!buf && len) return ursa__invalid("%s: NULL buffer", fs_names[type]);
  if ((r = check_off(type, off))) return r;
  req->fd = fd;
  req->ptr = buf;
  /* The kernel moves at most 2 GiB - 4 KiB in one call anyway. */
  req->len = len > 0x7ffff000u ? 0x7ffff000u : (uint32_t)len;
  req->off = off;
  return 0;
}

static int rw(ursa_loop *loop, ursa_fs_req *req, int type, int fd,
              const void *buf, size_t len, int64_t off, ursa_fs_cb cb) {
  int r = rw_begin(loop, req, type, fd, buf, len, off, cb);
  if (r) return r;
  return type == FS_READ ? start_read(req) : start(req);
}

int ursa_fs_read(ursa_loop *loop, ursa_fs_req *req, int fd, void *buf,
                 size_t len, int64_t off, ursa_fs_cb cb) {
  return rw(loop, req, FS_READ, fd, buf, len, off, cb);
}

int ursa_fs_write(ursa_loop *loop, ursa_fs_req *req, int fd, const void *buf,
                  size_t len, int64_t off, ursa_fs_cb cb) {
  return rw(loop, req, FS_WRITE, fd, buf, len, off, cb);
}

static int rwv(ursa_loop *loop, ursa_fs_req *req, int type, int fd,
               const struct iovec *iov, unsigned iovcnt, int64_t off,
               int flags, ursa_fs_cb cb) {
  int r = begin(loop, req, type, cb);
  if (r) return r;
  if (fd < 0) return bad_fd(type, fd);
  if (!iov) return ursa__invalid("%s: NULL iovecs", fs_names[type]);
  if (iovcnt < 1 || iovcnt > IOV_MAX)
    return ursa__invalid("%s: %u iovecs (want 1 to %d)", fs_names[type],
                         iovcnt, IOV_MAX);
  if ((r = check_off(type, off))) return r;
  req->fd = fd;
  req->ptr = iov;
  req->len = iovcnt;
  req->off = off;
  req->flags = flags;
  return type == FS_READV ? start_read(req) : start(req);
}

#define FIXED_MAX 1024u          /* the kernel's limit on buffers */
#define FIXED_LEN_MAX (1ul << 30) /* and on each one's size */

int ursa_fs_buffers_register(ursa_loop *loop, const struct iovec *iov,
                             unsigned n) {
  static const char fn[] = "ursa_fs_buffers_register";
  if (!loop || !iov)
    return ursa__invalid("%s: NULL %s", fn, !loop ? "loop" : "iovecs");
  if (n < 1 || n > FIXED_MAX)
    return ursa__invalid("%s: %u buffers (want 1 to %u)", fn, n, FIXED_MAX);
  for (unsigned i = 0; i < n; i++)
    if (!iov[i].iov_base || !iov[i].iov_len || iov[i].iov_len > FIXED_LEN_MAX)
      return ursa__invalid("%s: buffer %u is %s", fn, i,
                           !iov[i].iov_base ? "NULL"
                           : !iov[i].iov_len ? "empty"
                                             : "over 1 GiB");
  struct ursa__fscache *c = fsc_get(loop);
  if (!c) return ursa__refuse(-ENOMEM, "%s: no memory", fn);
  if (c->fixed)
    return ursa__refuse(-EBUSY, "%s: a set of %u buffers is registered "
                        "already", fn, c->nfixed);
  struct iovec *copy = malloc(n * sizeof(*copy));
  if (!copy) return ursa__refuse(-ENOMEM, "%s: no memory", fn);
  memcpy(copy, iov, n * sizeof(*copy));
  int r = loop->be->buffers_register ? loop->be->buffers_register(loop, iov, n)
                                     : 0;
  if (r < 0) {
    free(copy);
    return ursa__refuse(r, "%s: the kernel refused %u buffers: %s%s", fn, n,
                        strerror(-r),
                        r == -ENOMEM ? " (RLIMIT_MEMLOCK?)" : "");
  }
  c->fixed = copy;
  c->nfixed = n;
  return 0;
}

int ursa_fs_buffers_unregister(ursa_loop *loop) {
  static const char fn[] = "ursa_fs_buffers_unregister";
  if (!loop) return ursa__invalid("%s: NULL loop", fn);
  struct ursa__fscache *c = loop->fscache;
  if (!c || !c->fixed) return -ENOENT;
  if (c->fixed_busy)
    return ursa__refuse(-EBUSY, "%s: %u fixed requests under way", fn,
                        c->fixed_busy);
  if (loop->be->buffers_unregister) loop->be->buffers_unregister(loop);
  free(c->fixed);
  c->fixed = NULL;
  c->nfixed = 0;
  return 0;
}

static int rw_fixed(ursa_loop *loop, ursa_fs_req *req, int type, int fd,
                    unsigned index, const void *buf, size_t len, int64_t off,
                    ursa_fs_cb cb) {
  const char *fn = fs_names[type];
  int r = rw_begin(loop, req, type, fd, buf, len, off, cb);
  if (r) return r;
  struct ursa__fscache *c = loop->fscache;
  if (!c || !c->fixed)
    return ursa__invalid("%s: no buffers registered "
                         "(ursa_fs_buffers_register)", fn);
  if (index >= c->nfixed)
    return ursa__invalid("%s: buffer %u of %u registered", fn, index,
                         c->nfixed);
  uintptr_t b = (uintptr_t)c->fixed[index].iov_base;
  uintptr_t e = b + c->fixed[index].iov_len;
  if ((uintptr_t)buf < b || (uintptr_t)buf > e || len > e - (uintptr_t)buf)
    return ursa__invalid("%s: %zu bytes at %p are not inside buffer %u "
                         "(%zu bytes at %p)", fn, len, buf, index,
                         c->fixed[index].iov_len, c->fixed[index].iov_base);
  req->index = (uint16_t)index;
  req->fixed = 1;
  c->fixed_busy++;
  return type == FS_READ_FIXED ? start_read(req) : start(req);
}

int ursa_fs_read_fixed(ursa_loop *loop, ursa_fs_req *req, int fd,
                       unsigned index, void *buf, size_t len, int64_t off,
                       ursa_fs_cb cb) {
  return rw_fixed(loop, req, FS_READ_FIXED, fd, index, buf, len, off, cb);
}

int ursa_fs_write_fixed(ursa_loop *loop, ursa_fs_req *req, int fd,
                        unsigned index, const void *buf, size_t len,
                        int64_t off, ursa_fs_cb cb) {
  return rw_fixed(loop, req, FS_WRITE_FIXED, fd, index, buf, len, off, cb);
}

int ursa_fs_readv(ursa_loop *loop, ursa_fs_req *req, int fd,
                  const struct iovec *iov, unsigned iovcnt, int64_t off,
                  int flags, ursa_fs_cb cb) {
  return rwv(loop, req, FS_READV, fd, iov, iovcnt, off, flags, cb);
}

int ursa_fs_writev(ursa_loop *loop, ursa_fs_req *req, int fd,
                   const struct iovec *iov, unsigned iovcnt, int64_t off,
                   int flags, ursa_fs_cb cb) {
  return rwv(loop, req, FS_WRITEV, fd, iov, iovcnt, off, flags, cb);
}

int ursa_fs_fsync(ursa_loop *loop, ursa_fs_req *req, int fd, int datasync,
                  ursa_fs_cb cb) {
  int r = begin(loop, req, FS_FSYNC, cb);
  if (r) return r;
  if (fd < 0) return bad_fd(FS_FSYNC, fd);
  req->fd = fd;
  req->flags = datasync ? 1 : 0;
  return start(req);
}

int ursa_fs_statx(ursa_loop *loop, ursa_fs_req *req, int dirfd,
                  const char *path, int flags, unsigned mask,
                  struct statx *out, ursa_fs_cb cb) {
  int r = begin(loop, req, FS_STATX, cb);
  if (r) return r;
  if (dirfd < 0 && dirfd != AT_FDCWD) return bad_dirfd(FS_STATX, dirfd);
  if ((r = check_path(FS_STATX, path, "path"))) return r;
  if (!out) return ursa__invalid("ursa_fs_statx: NULL answer");
  /* An open descriptor's attributes as the kernel has them cached
   * (AT_STATX_DONT_SYNC: no round trip to a network file system's server)
   * never wait: asked here, the result deferred to the loop. */
  if ((loop->used & URSA_FEAT_FILE_INLINE) && !path[0] && dirfd >= 0 &&
      (flags & AT_EMPTY_PATH) && (flags & AT_STATX_DONT_SYNC)) {
    if (loop->be->caps & URSA__BE_COUNTS_SYSCALLS) loop->stats.enters++;
    r = statx(dirfd, "", flags, mask, out);
    ursa__op_defer(loop, &req->op, r < 0 ? -errno : 0);
    return 0;
  }
  if ((r = copy_paths(req, path, NULL))) return r;
  req->fd = dirfd;
  req->flags = flags;
  req->len = mask;
  req->out = out;
  return start(req);
}

int ursa_fs_close(ursa_loop *loop, ursa_fs_req *req, int fd, ursa_fs_cb cb) {
  int r = begin(loop, req, FS_CLOSE, cb);
  if (r) return r;
  if (fd < 0) return bad_fd(FS_CLOSE, fd);
  req->fd = fd;
  return start(req);
}

int ursa_fs_unlink(ursa_loop *loop, ursa_fs_req *req, int dirfd,
                   const char *path, int flags, ursa_fs_cb cb) {
  int r = begin(loop, req, FS_UNLINK, cb);
  if (r) return r;
  if (dirfd < 0 && dirfd != AT_FDCWD) return bad_dirfd(FS_UNLINK, dirfd);
  if ((r = check_path(FS_UNLINK, path, "path"))) return r;
  if (flags & ~AT_REMOVEDIR)
    return ursa__invalid("ursa_fs_unlink: flags %#x (only AT_REMOVEDIR)",
                         (unsigned)flags);
  if ((r = copy_paths(req, path, NULL))) return r;
  req->fd = dirfd;
  req->flags = flags;
  return start(req);
}

int ursa_fs_rename(ursa_loop *loop, ursa_fs_req *req, int olddirfd,
                   const char *oldpath, int newdirfd, const char *newpath,
                   int flags, ursa_fs_cb cb) {
  int r = begin(loop, req, FS_RENAME, cb);
  if (r) return r;
  if (olddirfd < 0 && olddirfd != AT_FDCWD)
    return bad_dirfd(FS_RENAME, olddirfd);
  if (newdirfd < 0 && newdirfd != AT_FDCWD)
    return bad_dirfd(FS_RENAME, newdirfd);
  if ((r = check_path(FS_RENAME, oldpath, "old path")) ||
      (r = check_path(FS_RENAME, newpath, "new path")))
    return r;
  if ((r = copy_paths(req, oldpath, newpath))) return r;
  req->fd = olddirfd;
  req->fd2 = newdirfd;
  req->flags = flags;
  return start(req);
}

int ursa_fs_mkdir(ursa_loop *loop, ursa_fs_req *req, int dirfd,
                  const char *path, unsigned mode, ursa_fs_cb cb) {
  int r = begin(loop, req, FS_MKDIR, cb);
  if (r) return r;
  if (dirfd < 0 && dirfd != AT_FDCWD) return bad_dirfd(FS_MKDIR, dirfd);
  if ((r = check_path(FS_MKDIR, path, "path"))) return r;
  if (mode & ~07777u)
    return ursa__invalid("ursa_fs_mkdir: mode %#o has bits beyond 07777",
                         mode);
  if ((r = copy_paths(req, path, NULL))) return r;
  req->fd = dirfd;
  req->len = mode;
  return start(req);
}

int ursa_fs_cancel(ursa_fs_req *req) {
  if (!req) return ursa__invalid("ursa_fs_cancel: NULL request");
  if (req->op.state == URSA__IDLE) return -ENOENT;
  return ursa__op_cancel(req->loop, &req->op);
}

static void fs_prep(ursa_loop *loop, ursa_op *op) {
  ursa_fs_req *req = (ursa_fs_req *)op;
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  void *p = (void *)(uintptr_t)req->ptr;
  uint64_t off = (uint64_t)req->off; /* -1: the position */
  switch (req->type) {
    case FS_OPEN:
      io_uring_prep_openat2(sqe, req->fd, p, (struct open_how *)&req->how);
      break;
    case FS_READ:
      io_uring_prep_read(sqe, req->fd, p, req->len, off);
      break;
    case FS_WRITE:
      io_uring_prep_write(sqe, req->fd, p, req->len, off);
      break;
    case FS_READ_FIXED:
      io_uring_prep_read_fixed(sqe, req->fd, p, req->len, off, req->index);
      break;
    case FS_WRITE_FIXED:
      io_uring_prep_write_fixed(sqe, req->fd, p, req->len, off, req->index);
      break;
    case FS_READV:
      io_uring_prep_readv2(sqe, req->fd, p, req->len, off, req->flags);
      break;
    case FS_WRITEV:
      io_uring_prep_writev2(sqe, req->fd, p, req->len, off, req->flags);
      break;
    case FS_FSYNC:
      io_uring_prep_fsync(sqe, req->fd,
                          req->flags ? IORING_FSYNC_DATASYNC : 0);
      break;
    case FS_STATX:
      io_uring_prep_statx(sqe, req->fd, p, req->flags, req->len, req->out);
      break;
    case FS_CLOSE:
      io_uring_prep_close(sqe, req->fd);
      break;
    case FS_UNLINK:
      io_uring_prep_unlinkat(sqe, req->fd, p, req->flags);
      break;
    case FS_RENAME:
      io_uring_prep_renameat(sqe, req->fd, p, req->fd2, req->path2,
                             (unsigned)req->flags);
      break;
    case FS_MKDIR:
      io_uring_prep_mkdirat(sqe, req->fd, p, req->len);
      break;
  }
  io_uring_sqe_set_data(sqe, op);
}

static void fs_complete(ursa_loop *loop, ursa_op *op, int res,
                        uint32_t flags) {
  ursa_fs_req *req = (ursa_fs_req *)op;
  (void)flags; /* the loop's byte counts are its sockets' alone */
  if (req->counted) {
    loop->fscache->reads--;
    req->counted = 0;
  }
  if (req->fixed) {
    loop->fscache->fixed_busy--;
    req->fixed = 0;
  }
  free(req->names);
  req->names = NULL;
  ursa__op_done(loop, op);
  req->cb(req, res); /* may free or reuse req */
}

URSA__OP_TYPE(fs) = {
    .name = "fs",
    .prep = fs_prep,
    .complete = fs_complete,
};
