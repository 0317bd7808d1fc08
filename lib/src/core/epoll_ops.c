/* epoll_ops.c - what each io_uring opcode the layers use means on the
 * epoll backend: a designated table (decode the SQE, run it without
 * blocking, which side it waits on), as the kernel's opdef.c lists its
 * ops.  Operations that finish at once (nop, cancel, shutdown, close) do
 * it in decode; file operations go from decode to the work pool. */
#include "epoll.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

/* The i-th buffer after the group's head, without taking it. */
static bool peek_buf(struct ursa__ep *ep, uint16_t bgid, unsigned i,
                     char **addr, uint32_t *len, uint16_t *bid) {
  struct io_uring_buf_ring *br = ep->groups[bgid].br;
  uint16_t tail = __atomic_load_n(&br->tail, __ATOMIC_ACQUIRE);
  uint16_t at = (uint16_t)(ep->groups[bgid].head + i);
  if ((uint16_t)(tail - ep->groups[bgid].head) <= i) return false;
  struct io_uring_buf *b = &br->bufs[at & ep->groups[bgid].mask];
  *addr = (char *)(uintptr_t)b->addr;
  *len = b->len;
  *bid = b->bid;
  return true;
}

static bool take_buf(struct ursa__ep *ep, uint16_t bgid, char **addr,
                     uint32_t *len, uint16_t *bid) {
  if (bgid >= MAX_GROUPS || !ep->groups[bgid].br) return false;
  return peek_buf(ep, bgid, 0, addr, len, bid);
}

static uint32_t buf_used(struct ursa__ep *ep, uint16_t bgid, uint16_t bid) {
  ep->groups[bgid].head++;
  return IORING_CQE_F_BUFFER | ((uint32_t)bid << IORING_CQE_BUFFER_SHIFT);
}

/* Ends a multishot or a single shot on a result that is not data. */
static int finish(ursa_loop *loop, ep_req *r, int res) {
  post(loop, r->ud, res, 0);
  return R_DONE;
}

static int run_recv(ursa_loop *loop, ep_req *r) {
  struct ursa__ep *ep = loop->ep;
  char *buf = (char *)(uintptr_t)r->addr;
  uint32_t len = r->len;
  uint16_t bid = 0;
  if (r->bits & R_BUFSEL) {
    uint32_t blen;
    if (!take_buf(ep, r->bgid, &buf, &blen, &bid))
      return finish(loop, r, -ENOBUFS); /* the layer above counts it */
    if (!len || len > blen) len = blen;
  }
  SYSCALL(loop);
  ssize_t n = r->opcode == IORING_OP_RECV
                  ? recv(r->fd, buf, len, (int)r->msg_flags | MSG_DONTWAIT)
                  : read(r->fd, buf, len); /* a stream's pipe: non-blocking */
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return R_WAIT;
    if (errno == EINTR) return R_WAIT;
    return finish(loop, r, -errno);
  }
  uint32_t flags = 0;
  if ((r->bits & R_BUFSEL) && n > 0) flags = buf_used(ep, r->bgid, bid);
  if ((r->bits & R_MULTI) && n > 0) {
    post(loop, r->ud, (int)n, flags | IORING_CQE_F_MORE);
    return (size_t)n >= len ? R_MORE : R_DRAINED;
  }
  post(loop, r->ud, (int)n, flags);
  return R_DONE;
}

#define RECV_BATCH 8

/* Multishot recvmsg: up to RECV_BATCH datagrams with one recvmmsg, each
 * into a buffer of the group in the kernel's layout: a struct
 * io_uring_recvmsg_out, the name's room, the control's room, the
 * payload. */
static int run_recvmsg_multi(ursa_loop *loop, ep_req *r,
                             const struct msghdr *um) {
  struct ursa__ep *ep = loop->ep;
  size_t head = sizeof(struct io_uring_recvmsg_out) + um->msg_namelen +
                um->msg_controllen;
  struct mmsghdr mm[RECV_BATCH];
  struct iovec iov[RECV_BATCH];
  char *bufs[RECV_BATCH];
  uint16_t bids[RECV_BATCH];
  unsigned n = 0;
  if (!(r->bits & R_BUFSEL) || r->bgid >= MAX_GROUPS ||
      !ep->groups[r->bgid].br)
    return finish(loop, r, -EFAULT);
  for (; n < RECV_BATCH; n++) {
    uint32_t blen;
    if (!peek_buf(ep, r->bgid, n, &bufs[n], &blen, &bids[n])) break;
    if (blen < head) return finish(loop, r, -EFAULT);
    struct msghdr *m = &mm[n].msg_hdr;
    *m = *um;
    m->msg_name = um->msg_namelen
                      ? bufs[n] + sizeof(struct io_uring_recvmsg_out)
                      : NULL;
    m->msg_control = um->msg_controllen
                         ? bufs[n] + sizeof(struct io_uring_recvmsg_out) +
                               um->msg_namelen
                         : NULL;
    iov[n].iov_base = bufs[n] + head;
    iov[n].iov_len = blen - head;
    m->msg_iov = &iov[n];
    m->msg_iovlen = 1;
  }
  if (!n) return finish(loop, r, -ENOBUFS); /* the layer above counts it */
  SYSCALL(loop);
  int got = recvmmsg(r->fd, mm, n, (int)r->msg_flags | MSG_DONTWAIT | MSG_TRUNC,
                     NULL);
  if (got < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      return R_WAIT;
    return finish(loop, r, -errno);
  }
  for (int i = 0; i < got; i++) {
    struct msghdr *m = &mm[i].msg_hdr;
    struct io_uring_recvmsg_out o = {
        .namelen = m->msg_namelen,
        .controllen = (uint32_t)m->msg_controllen,
        .payloadlen = mm[i].msg_len,
        .flags = (uint32_t)m->msg_flags,
    };
    memcpy(bufs[i], &o, sizeof(o));
    size_t len = mm[i].msg_len < iov[i].iov_len ? mm[i].msg_len
                                                : iov[i].iov_len;
    post(loop, r->ud, (int)(head + len),
         buf_used(ep, r->bgid, bids[i]) | IORING_CQE_F_MORE);
  }
  return (unsigned)got == n ? R_MORE : R_DRAINED;
}

/* recvmsg: single shot into the msghdr's one iovec (or a buffer of the
 * group), or multishot (run_recvmsg_multi). */
static int run_recvmsg(ursa_loop *loop, ep_req *r) {
  struct ursa__ep *ep = loop->ep;
  struct msghdr *um = (struct msghdr *)(uintptr_t)r->addr;
  if (r->bits & R_MULTI) return run_recvmsg_multi(loop, r, um);
  char *buf = NULL;
  uint32_t blen = 0;
  uint16_t bid = 0;
  if (r->bits & R_BUFSEL) {
    if (!take_buf(ep, r->bgid, &buf, &blen, &bid))
      return finish(loop, r, -ENOBUFS);
  }
  struct msghdr m = *um;
  struct iovec iov;
  if (r->bits & R_BUFSEL) {
    if (um->msg_iovlen != 1) return finish(loop, r, -EINVAL);
    iov.iov_base = buf;
    iov.iov_len = um->msg_iov[0].iov_len && um->msg_iov[0].iov_len < blen
                      ? um->msg_iov[0].iov_len
                      : blen;
    m.msg_iov = &iov;
  }
  SYSCALL(loop);
  ssize_t n = recvmsg(r->fd, &m, (int)r->msg_flags | MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      return R_WAIT;
    return finish(loop, r, -errno);
  }
  um->msg_namelen = m.msg_namelen;
  um->msg_controllen = m.msg_controllen;
  um->msg_flags = m.msg_flags;
  uint32_t flags = 0;
  if ((r->bits & R_BUFSEL) && n > 0) flags = buf_used(ep, r->bgid, bid);
  post(loop, r->ud, (int)n, flags);
  return R_DONE;
}

static int run_send(ursa_loop *loop, ep_req *r) {
  SYSCALL(loop);
  ssize_t n;
  if (r->opcode == IORING_OP_SEND)
    n = send(r->fd, (const void *)(uintptr_t)r->addr, r->len,
             (int)r->msg_flags | MSG_DONTWAIT);
  else if (r->opcode == IORING_OP_SENDMSG)
    n = sendmsg(r->fd, (const struct msghdr *)(uintptr_t)r->addr,
                (int)r->msg_flags | MSG_DONTWAIT);
  else if (r->opcode == IORING_OP_WRITE) /* a stream's pipe: non-blocking */
    n = write(r->fd, (const void *)(uintptr_t)r->addr, r->len);
  else
    n = writev(r->fd, (const struct iovec *)(uintptr_t)r->addr, (int)r->len);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      return R_WAIT;
    return finish(loop, r, -errno);
  }
  post(loop, r->ud, (int)n, 0);
  return R_DONE;
}

#define SEND_RUN 64

unsigned ursa__ep_send_run(ursa_loop *loop, const struct io_uring_sqe *sqe,
                           unsigned n) {
  struct ursa__ep *ep = loop->ep;
  unsigned k = 0;
  if (n > SEND_RUN) n = SEND_RUN;
  /* Plain sends only: no link (a linked timeout), no direct descriptor,
   * one socket, one set of flags. */
  while (k < n && sqe[k].opcode == IORING_OP_SENDMSG &&
         !(sqe[k].flags & (IOSQE_IO_LINK | IOSQE_FIXED_FILE)) &&
         sqe[k].fd == sqe[0].fd && sqe[k].msg_flags == sqe[0].msg_flags)
    k++;
  if (k < 2 || sqe[0].fd < 0) return 0;
  ep_fd *f = ursa__ep_fd(ep, sqe[0].fd);
  if (!f || f->wq) return 0; /* behind sends that wait: keep their order */
  struct mmsghdr mm[SEND_RUN];
  for (unsigned i = 0; i < k; i++) {
    mm[i].msg_hdr = *(const struct msghdr *)(uintptr_t)sqe[i].addr;
    mm[i].msg_len = 0;
  }
  SYSCALL(loop);
  int sent = sendmmsg(sqe[0].fd, mm, k, (int)sqe[0].msg_flags | MSG_DONTWAIT);
  if (sent <= 0) return 0; /* the first one's error or EAGAIN: alone */
  for (int i = 0; i < sent; i++) post(loop, sqe[i].user_data, (int)mm[i].msg_len, 0);
  return (unsigned)sent;
}

static int run_accept(ursa_loop *loop, ep_req *r) {
  /* Another process on the same listener may take the connection that
   * made it ready: a blocking accept would then hang the loop. */
  int e = ursa__ep_set_nonblock(loop, r->fd);
  if (e < 0) return finish(loop, r, e);
  SYSCALL(loop);
  int fd = accept4(r->fd, NULL, NULL, (int)r->msg_flags | SOCK_NONBLOCK);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
        errno == ECONNABORTED)
      return R_WAIT;
    return finish(loop, r, -errno);
  }
  if (ursa__ep_fd(loop->ep, fd)) loop->ep->fdbits[fd] |= FB_NONBLOCK;
  if (r->bits & R_MULTI) {
    post(loop, r->ud, fd, IORING_CQE_F_MORE);
    return R_MORE;
  }
  post(loop, r->ud, fd, 0);
  return R_DONE;
}

static int run_connect(ursa_loop *loop, ep_req *r) {
  if (r->bits & R_PROGRESS) {
    int err = 0;
    socklen_t el = sizeof(err);
    SYSCALL(loop);
    if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0) err = errno;
    return finish(loop, r, -err);
  }
  int e = ursa__ep_set_nonblock(loop, r->fd);
  if (e < 0) return finish(loop, r, e);
  SYSCALL(loop);
  if (connect(r->fd, (const struct sockaddr *)(uintptr_t)r->addr,
              (socklen_t)r->len) == 0)
    return finish(loop, r, 0);
  if (errno == EINPROGRESS) {
    r->bits |= R_PROGRESS;
    return R_WAIT;
  }
  if (errno == EAGAIN) { /* a Unix listener's full backlog: try again */
    r->bits |= R_RETRY;
    return R_WAIT;
  }
  if (errno == EISCONN) return finish(loop, r, 0);
  return finish(loop, r, -errno);
}

/* waitid(2) of a pidfd without waiting: the pidfd is readable once the
 * child has ended. */
static int run_waitid(ursa_loop *loop, ep_req *r) {
  siginfo_t *info = (siginfo_t *)(uintptr_t)r->addr;
  info->si_pid = 0;
  SYSCALL(loop);
  if (waitid((idtype_t)URSA__P_PIDFD, (id_t)r->fd, info,
             (int)r->msg_flags | WNOHANG) < 0)
    return errno == EINTR ? R_WAIT : finish(loop, r, -errno);
  return info->si_pid ? finish(loop, r, 0) : R_WAIT;
}

/* ---- decoding: what each SQE asks for ---- */

static int decode_nop(ursa_loop *loop, const struct io_uring_sqe *sqe,
                      ep_req *r) {
  (void)sqe;
  post(loop, r->ud, 0, 0);
  return 1;
}

static int decode_cancel(ursa_loop *loop, const struct io_uring_sqe *sqe,
                         ep_req *t) {
  struct ursa__ep *ep = loop->ep;
  ep_req *r = hash_find(ep, sqe->addr);
  if (r) {
    post(loop, r->ud, -ECANCELED, 0);
    ursa__ep_unwait(ep, r);
  }
  post(loop, t->ud, r ? 0 : ursa__ep_cancel_job(loop, sqe->addr), 0);
  return 1;
}

static int decode_shutdown(ursa_loop *loop, const struct io_uring_sqe *sqe,
                           ep_req *t) {
  SYSCALL(loop);
  post(loop, t->ud, shutdown(t->fd, (int)sqe->len) == 0 ? 0 : -errno, 0);
  return 1;
}

static int decode_close(ursa_loop *loop, const struct io_uring_sqe *sqe,
                        ep_req *t) {
  struct ursa__ep *ep = loop->ep;
  if (sqe->file_index) return -EBADF;
  if ((unsigned)t->fd < ep->nfds) {
    /* The layers end every operation before the close; one left would
     * otherwise wait on a descriptor number that is reused. */
    ursa__ep_fail_waiting(loop, t->fd, -ECANCELED);
    uint8_t *bits = &ep->fdbits[t->fd];
    if (*bits & (FB_IN | FB_OUT)) {
      SYSCALL(loop);
      epoll_ctl(ep->epfd, EPOLL_CTL_DEL, t->fd, NULL);
    }
    *bits &= FB_DIRTY; /* the dirty list still holds it */
  }
  SYSCALL(loop);
  post(loop, t->ud, close(t->fd) == 0 ? 0 : -errno, 0);
  return 1;
}

static int decode_recv(ursa_loop *loop, const struct io_uring_sqe *sqe,
                       ep_req *t) {
  (void)loop;
  if (sqe->ioprio & IORING_RECV_MULTISHOT) t->bits |= R_MULTI;
  if (sqe->ioprio & IORING_RECVSEND_BUNDLE) return -EINVAL;
  if (sqe->flags & IOSQE_BUFFER_SELECT) t->bits |= R_BUFSEL;
  t->bgid = sqe->buf_group;
  return 0;
}

static int decode_accept(ursa_loop *loop, const struct io_uring_sqe *sqe,
                         ep_req *t) {
  (void)loop;
  if (sqe->ioprio & IORING_ACCEPT_MULTISHOT) t->bits |= R_MULTI;
  /* Direct slots, and the peer's address, which no layer asks for. */
  if (sqe->file_index || sqe->addr || sqe->addr2) return -EINVAL;
  t->msg_flags = sqe->accept_flags;
  return 0;
}

static int decode_connect(ursa_loop *loop, const struct io_uring_sqe *sqe,
                          ep_req *t) {
  (void)loop;
  t->len = (uint32_t)sqe->off; /* the address length */
  return 0;
}

static int decode_poll(ursa_loop *loop, const struct io_uring_sqe *sqe,
                       ep_req *t) {
  (void)loop;
  if (sqe->len & IORING_POLL_ADD_MULTI) t->bits |= R_MULTI;
  t->bits |= R_POLL;
  t->msg_flags = sqe->poll32_events & (EPOLLIN | EPOLLOUT);
  return 0;
}

/* READ, WRITE, WRITEV and READ_MULTISHOT: on a descriptor a stream reads
 * and writes (the backend's stream_fd: a pipe, a terminal) they wait on
 * readiness as recv and send do; on any other (a file) they go to the
 * work pool, since readiness says nothing of a file. */
static int decode_rw(ursa_loop *loop, const struct io_uring_sqe *sqe,
                     ep_req *t) {
  struct ursa__ep *ep = loop->ep;
  bool multi = sqe->opcode == URSA__IORING_OP_READ_MULTISHOT;
  if (t->fd < 0 || (unsigned)t->fd >= ep->nfds ||
      !(ep->fdbits[t->fd] & FB_STREAM))
    return multi ? -EBADFD : ursa__ep_decode_pool(loop, sqe, t);
  if (multi && (ep->fdbits[t->fd] & FB_NOPOLL)) return -EBADFD;
  if (multi) t->bits |= R_MULTI;
  if (sqe->flags & IOSQE_BUFFER_SELECT) t->bits |= R_BUFSEL;
  t->bgid = sqe->buf_group;
  t->msg_flags = 0; /* rw_flags: none of a recv's */
  return 0;
}

static int decode_waitid(ursa_loop *loop, const struct io_uring_sqe *sqe,
                         ep_req *t) {
  (void)loop;
  /* A pidfd is what epoll can watch; a plain pid is not asked for. */
  if (sqe->len != URSA__P_PIDFD || !sqe->addr2) return -EINVAL;
  t->addr = sqe->addr2;
  t->msg_flags = sqe->file_index; /* the options */
  return 0;
}

/* Zero copy is io_uring's alone: said so, not run as a copy. */
static int decode_send_zc(ursa_loop *loop, const struct io_uring_sqe *sqe,
                          ep_req *t) {
  (void)loop;
  (void)sqe;
  (void)t;
  return -EOPNOTSUPP;
}

const ursa__ep_op ursa__ep_ops[URSA__OP_TABLE] = {
    [IORING_OP_NOP] = {.decode = decode_nop},
    [IORING_OP_ASYNC_CANCEL] = {.decode = decode_cancel},
    [IORING_OP_SHUTDOWN] = {.decode = decode_shutdown},
    [IORING_OP_CLOSE] = {.decode = decode_close},
    [IORING_OP_RECV] = {.decode = decode_recv, .run = run_recv},
    [IORING_OP_RECVMSG] = {.decode = decode_recv, .run = run_recvmsg},
    [IORING_OP_SEND] = {.run = run_send, .write = true},
    [IORING_OP_SENDMSG] = {.run = run_send, .write = true},
    [IORING_OP_SEND_ZC] = {.decode = decode_send_zc},
    [IORING_OP_ACCEPT] = {.decode = decode_accept, .run = run_accept},
    [IORING_OP_CONNECT] = {.decode = decode_connect,
                           .run = run_connect,
                           .write = true},
    /* Its readiness is reported by the reactor (epoll.c), never run. */
    [IORING_OP_POLL_ADD] = {.decode = decode_poll},
    /* Files: readiness says nothing of them; each runs on the work pool
     * (epoll_pool.c).  IORING_OP_CLOSE is the one above, on the loop. */
    [IORING_OP_READ] = {.decode = decode_rw, .run = run_recv},
    [IORING_OP_WRITE] = {.decode = decode_rw, .run = run_send, .write = true},
    [IORING_OP_READV] = {.decode = ursa__ep_decode_pool},
    [IORING_OP_READ_FIXED] = {.decode = ursa__ep_decode_pool},
    [IORING_OP_WRITE_FIXED] = {.decode = ursa__ep_decode_pool},
    [IORING_OP_WRITEV] = {.decode = decode_rw, .run = run_send,
                          .write = true},
    [URSA__IORING_OP_READ_MULTISHOT] = {.decode = decode_rw, .run = run_recv},
    [URSA__IORING_OP_WAITID] = {.decode = decode_waitid, .run = run_waitid},
    [IORING_OP_FSYNC] = {.decode = ursa__ep_decode_pool},
    [IORING_OP_OPENAT2] = {.decode = ursa__ep_decode_pool},
    [IORING_OP_STATX] = {.decode = ursa__ep_decode_pool},
    [IORING_OP_UNLINKAT] = {.decode = ursa__ep_decode_pool},
    [IORING_OP_RENAMEAT] = {.decode = ursa__ep_decode_pool},
    [IORING_OP_MKDIRAT] = {.decode = ursa__ep_decode_pool},
};
