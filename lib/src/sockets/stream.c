/* stream.c - TCP and Unix stream sockets: making a stream (accept,
 * connect, open), TCP_NODELAY, shutdown and close.  Receiving is in
 * stream_read.c, writing in stream_write.c. */
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static const ursa__handle_kind stream_kind;

void ursa__stream_init(ursa_loop *loop, ursa_stream *s, int fd,
                       bool seqpacket, bool direct, bool local) {
  void *data = s->data;
  memset(s, 0, sizeof(*s));
  s->data = data;
  s->fd = direct ? -1 : fd;
  s->slot = direct ? fd : -1;
  /* A Unix socket has no zero-copy path: the kernel would refuse each. */
  s->flags = S_OPEN | (seqpacket ? S_SEQPACKET : 0) | (direct ? S_DIRECT : 0) |
             (local ? S_NO_ZC : 0);
  s->recv_op.kind = URSA__KIND(recv);
  s->recv_op.nsqe = 1;
  s->shutdown_op.kind = URSA__KIND(shutdown);
  s->shutdown_op.nsqe = 1;
  s->send_op.kind = URSA__KIND(send);
  ursa__handle_init(loop, &s->handle, &stream_kind, URSA_HANDLE_STREAM);
}

int ursa_stream_open(ursa_loop *loop, ursa_stream *s, int fd) {
  if (!loop || !s)
    return ursa__invalid("ursa_stream_open: NULL %s", loop ? "stream" : "loop");
  int type = 0;
  socklen_t tl = sizeof(type);
  if (fd < 0) return ursa__invalid("ursa_stream_open: fd %d is negative", fd);
  struct stat st;
  if (fstat(fd, &st) < 0) return -errno;
  if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
    /* Pipes, terminals, devices: RECV and SEND refuse them (ENOTSOCK).
     * Non-blocking on every backend: a terminal's write ignores the
     * kernel's per-request no-wait flag that io_uring tries it with, so a
     * blocking one would stall the loop in its enter until the other side
     * read (io_uring still waits by poll for a file that says it can). */
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return -errno;
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
      return -errno;
    if (loop->be->stream_fd) {
      int r = loop->be->stream_fd(loop, fd);
      if (r < 0) return r;
    }
    ursa__stream_init(loop, s, fd, false, false, true);
    s->flags |= S_PIPE | S_NONBLOCK;
    return 0;
  }
  if (!S_ISSOCK(st.st_mode))
    return ursa__invalid("ursa_stream_open: fd %d is %s, not a socket, pipe, "
                         "FIFO, terminal or device", fd,
                         S_ISREG(st.st_mode)   ? "a regular file (use "
                                                 "ursa_fs_read() and "
                                                 "ursa_write_file())"
                         : S_ISDIR(st.st_mode) ? "a directory"
                                               : "a block device");
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) return -errno;
  if (type != SOCK_STREAM && type != SOCK_SEQPACKET)
    return ursa__invalid("ursa_stream_open: fd %d is not a stream socket "
                         "(a datagram or raw one)", fd);
  int listening = 0;
  tl = sizeof(listening);
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &tl) == 0 &&
      listening)
    return ursa__invalid("ursa_stream_open: fd %d is a listening socket "
                         "(use ursa_listen())", fd);
  int domain = 0;
  tl = sizeof(domain);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &tl) < 0) return -errno;
  ursa__stream_init(loop, s, fd, type == SOCK_SEQPACKET, false,
                    domain == AF_UNIX);
  return 0;
}

static void prep_install(struct io_uring_sqe *sqe, void *arg) {
  io_uring_prep_rw(URSA__IORING_OP_FIXED_FD_INSTALL, sqe, *(int *)arg, NULL,
                   0, 0);
  sqe->flags |= IOSQE_FIXED_FILE;
}

int ursa__stream_install_fd(const ursa_stream *s) {
  ursa_loop *loop = s->loop;
  if (loop->no_fd_install || !loop->be->run_now) return -EOPNOTSUPP;
  int slot = s->slot;
  int fd = loop->be->run_now(loop, prep_install, &slot);
  if (fd == -EINVAL || fd == -EOPNOTSUPP) {
    loop->no_fd_install = true; /* the kernel has no FIXED_FD_INSTALL */
    return -EOPNOTSUPP;
  }
  return fd;
}

/* A direct stream accepted on a wildcard listener: which of the host's
 * addresses it came in on is the socket's to say, so the slot is
 * installed as a plain descriptor for a moment to ask it. */
static int direct_local(const ursa_stream *s, struct sockaddr_storage *addr,
                        socklen_t *addrlen, const char *fn) {
  int fd = ursa__stream_install_fd(s);
  if (fd == -EOPNOTSUPP)
    return ursa__refuse(-EOPNOTSUPP, "%s: a direct-descriptor stream "
                        "accepted on a listener bound to any address needs "
                        "IORING_OP_FIXED_FD_INSTALL (Linux 6.8) to learn its "
                        "local address", fn);
  if (fd < 0) return fd;
  *addrlen = sizeof(*addr);
  int r = getsockname(fd, (struct sockaddr *)addr, addrlen) < 0 ? -errno : 0;
  close(fd);
  return r;
}

/* The two addresses, asked of the kernel or, for a direct stream, as its
 * accept recorded them. */
static int stream_addr(const ursa_stream *s, struct sockaddr_storage *addr,
                       socklen_t *addrlen, bool peer, const char *fn) {
  int r = check_stream(s, fn);
  if (r) return r;
  if (!addr || !addrlen) return ursa__invalid("%s: NULL address", fn);
  if (s->flags & S_DIRECT) {
    const struct ursa__peer *p = s->direct_peer;
    socklen_t len = !p ? 0 : peer ? p->len : p->local_len;
    if (!len && !peer) return direct_local(s, addr, addrlen, fn);
    if (!len)
      return ursa__refuse(-EOPNOTSUPP, "%s: the stream's accept did not "
                          "record the address", fn);
    memset(addr, 0, sizeof(*addr));
    memcpy(addr, p->bytes + (peer ? 0 : p->len), len);
    *addrlen = len;
    return 0;
  }
  if (s->connecting) return -ENOTCONN;
  *addrlen = sizeof(*addr);
  int ok = peer ? getpeername(s->fd, (struct sockaddr *)addr, addrlen)
                : getsockname(s->fd, (struct sockaddr *)addr, addrlen);
  return ok < 0 ? -errno : 0;
}

int ursa_stream_peer_addr(const ursa_stream *s, struct sockaddr_storage *addr,
                          socklen_t *addrlen) {
  return stream_addr(s, addr, addrlen, true, "ursa_stream_peer_addr");
}

int ursa_stream_local_addr(const ursa_stream *s,
                           struct sockaddr_storage *addr, socklen_t *addrlen) {
  return stream_addr(s, addr, addrlen, false, "ursa_stream_local_addr");
}

int ursa_stream_nodelay(ursa_stream *s, int on) {
  int r = check_stream(s, "ursa_stream_nodelay");
  if (r) return r;
  on = !!on;
  if (s->flags & S_DIRECT)
    return ursa__refuse(-EOPNOTSUPP, "ursa_stream_nodelay: the stream is a "
                        "direct descriptor; listen with URSA_LISTEN_NODELAY "
                        "instead (accepted sockets inherit it)");
  if (setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) < 0) {
    if (errno == EOPNOTSUPP || errno == ENOPROTOOPT) return 0; /* Unix */
    return -errno;
  }
  return 0;
}

/* ---- connect ---- */

int ursa_connect(ursa_loop *loop, ursa_stream *s, const struct sockaddr *addr,
                 socklen_t addrlen, unsigned flags, uint32_t timeout_ms,
                 ursa_connect_cb cb) {
  if (!loop || !s || !cb)
    return ursa__invalid("ursa_connect: NULL %s",
                         !loop ? "loop" : !s ? "stream" : "callback");
  int r = ursa__check_sockaddr(addr, addrlen, "ursa_connect");
  if (r) return r;
  if (flags & ~URSA_SEQPACKET)
    return ursa__invalid("ursa_connect: unknown flags 0x%x", flags);
  if ((flags & URSA_SEQPACKET) && addr->sa_family != AF_UNIX)
    return ursa__invalid("ursa_connect: seqpacket needs a unix: address");
  bool seq = flags & URSA_SEQPACKET;
  struct ursa__connecting *cx = calloc(1, sizeof(*cx));
  if (!cx) return -ENOMEM;
  int fd = socket(addr->sa_family,
                  (seq ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    free(cx);
    return -errno;
  }
  ursa__stream_init(loop, s, fd, seq, false, addr->sa_family == AF_UNIX);
  memcpy(&cx->peer, addr, addrlen);
  cx->len = addrlen;
  cx->s = s;
  cx->cb = cb;
  cx->op.kind = URSA__KIND(connect);
  cx->op.nsqe = timeout_ms ? 2 : 1;
  ursa__ms_to_ts(timeout_ms, &cx->ts);
  s->connecting = cx;
  stream_submit(s, &cx->op);
  return 0;
}

static void connect_prep(ursa_loop *loop, ursa_op *op) {
  struct ursa__connecting *cx = (struct ursa__connecting *)op;
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  io_uring_prep_connect(sqe, cx->s->fd, (struct sockaddr *)&cx->peer,
                        cx->len);
  io_uring_sqe_set_data(sqe, op);
  if (op->nsqe == 2) {
    op->flags |= URSA__F_TIMEOUT;
    sqe->flags |= IOSQE_IO_LINK;
    sqe = ursa__get_sqe(loop);
    io_uring_prep_link_timeout(sqe, ursa__kts(&cx->ts), 0);
    sqe->user_data = 0;
  }
}

static void connect_complete(ursa_loop *loop, ursa_op *op, int res,
                            uint32_t flags) {
  struct ursa__connecting *cx = (struct ursa__connecting *)op;
  ursa_stream *s = cx->s;
  ursa_connect_cb cb = cx->cb;
  (void)flags;
  int status = timeout_status(op, res);
  if (status > 0) status = 0;
  if (s->handle.closing && status == 0) status = -ECANCELED;
  op_end(s, op);
  s->connecting = NULL;
  free(cx);
  cb(s, status);
  maybe_finish_close(s);
}

URSA__OP_TYPE(connect) = {
    .name = "connect",
    .prep = connect_prep,
    .complete = connect_complete,
};

/* ---- shutdown ---- */

int ursa_shutdown(ursa_stream *s, ursa_shutdown_cb cb) {
  int r = check_stream(s, "ursa_shutdown");
  if (r) return r;
  if (!cb) return ursa__invalid("ursa_shutdown: NULL callback");
  if (s->handle.closing) return -EBADF;
  if (s->flags & S_SHUT) return -EALREADY;
  if ((s->flags & S_PIPE) && (s->flags & S_READING))
    return ursa__invalid("ursa_shutdown: fd %d is not a socket, so shutdown "
                         "closes it, and the stream is reading from it: "
                         "stop reading first", s->fd);
  s->flags |= S_SHUT | S_SHUT_WAITING;
  s->shutdown_cb = cb;
  s->handle.nops++;
  ursa__stream_maybe_shutdown(s);
  return 0;
}

static void shutdown_prep(ursa_loop *loop, ursa_op *op) {
  ursa_stream *s = STREAM_OF(op, shutdown_op);
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  if (s->flags & S_PIPE)
    io_uring_prep_close(sqe, s->fd); /* a pipe's writer ends by closing */
  else
    io_uring_prep_shutdown(sqe, s->fd, SHUT_WR);
  set_socket(s, sqe);
  io_uring_sqe_set_data(sqe, op);
}

static void shutdown_complete(ursa_loop *loop, ursa_op *op, int res,
                             uint32_t flags) {
  ursa_stream *s = STREAM_OF(op, shutdown_op);
  (void)flags;
  (void)loop;
  if (s->flags & S_PIPE) s->fd = -1; /* closed, whatever close said */
  op_end(s, op);
  s->shutdown_cb(s, res);
  maybe_finish_close(s);
}

URSA__OP_TYPE(shutdown) = {
    .name = "shutdown",
    .prep = shutdown_prep,
    .complete = shutdown_complete,
};

/* shutdown(2) here and now: 0 or -errno, or 1 when it cannot be done here
 * (a direct descriptor on a kernel without FIXED_FD_INSTALL). */
static int shutdown_inline(ursa_stream *s) {
  ursa_loop *loop = s->loop;
  if (s->flags & S_PIPE) return 1; /* a close, which the backend must see */
  if (!(s->flags & S_DIRECT)) {
    if (loop->be->caps & URSA__BE_COUNTS_SYSCALLS) loop->stats.enters++;
    return shutdown(s->fd, SHUT_WR) == 0 ? 0 : -errno;
  }
  /* A direct descriptor has no fd to call it on: installed as one for the
   * moment (one SQE, waited for here), still cheaper than a worker. */
  int fd = ursa__stream_install_fd(s);
  if (fd < 0) return 1;
  int r = shutdown(fd, SHUT_WR) == 0 ? 0 : -errno;
  close(fd);
  return r;
}

void ursa__stream_maybe_shutdown(ursa_stream *s) {
  if ((s->flags & S_SHUT_WAITING) && !s->wq_head) {
    s->flags &= ~S_SHUT_WAITING;
    /* io_uring runs IORING_OP_SHUTDOWN on an io-wq worker thread (it has
     * no non-blocking path): a wake-up and two context switches per call,
     * a quarter of the greet server's CPU.  shutdown(2) never blocks, so
     * it is called here and its result handed to the callback from the
     * loop, as a completion would be. */
    int r = shutdown_inline(s);
    if (r <= 0)
      ursa__op_defer(s->loop, &s->shutdown_op, r);
    else
      ursa__op_submit(s->loop, &s->shutdown_op);
  }
}

/* ---- close ---- */

static void stream_close(ursa_handle *h) {
  ursa_stream *s = (ursa_stream *)h;
  ursa_loop *loop = s->loop;
  s->flags &= ~S_READING;
  ursa__op_cancel(loop, &s->recv_op);
  if (s->connecting) ursa__op_cancel(loop, &s->connecting->op);
  if (s->read_timer) ursa__op_cancel(loop, &s->read_timer->t.op);
  if (s->flags & S_SHUT_WAITING) {
    s->flags &= ~S_SHUT_WAITING;
    ursa__op_defer(loop, &s->shutdown_op, -ECANCELED);
  } else {
    ursa__op_cancel(loop, &s->shutdown_op);
  }
  /* Writes the kernel reads are failed when the cancelled send returns. */
  ursa__op_cancel(loop, &s->send_op);
  ursa__stream_fail_unbatched(s);
}

static void stream_prep_close(ursa_loop *loop, ursa_handle *h) {
  ursa_stream *s = (ursa_stream *)h;
  if (s->fd < 0 && !(s->flags & S_DIRECT)) {
    /* A pipe stream's shutdown closed it already. */
    struct io_uring_sqe *sqe = ursa__get_sqe(loop);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data(sqe, &h->close_op);
    return;
  }
  ursa__handle_prep_close(loop, h, s->fd, (s->flags & S_DIRECT) ? s->slot : -1);
}

static void stream_closed(ursa_handle *h) {
  ursa_stream *s = (ursa_stream *)h;
  if (s->flags & S_DIRECT) ursa__direct_unreserve(s->loop); /* slot free */
  free(s->read_timer); /* idle: the close waited for its callback */
  s->read_timer = NULL;
  if (s->flags & S_DIRECT) free(s->direct_peer);
  s->direct_peer = NULL;
  s->fd = -1;
  s->slot = -1;
  s->flags = 0;
}

static const ursa__handle_kind stream_kind = {
    .name = "stream",
    .close = stream_close,
    .prep_close = stream_prep_close,
    .closed = stream_closed,
};

int ursa_stream_close(ursa_stream *s, ursa_close_cb cb) {
  return ursa_close(s ? &s->handle : NULL, cb);
}
