/* dgram.c - datagram sockets: UDP, Unix datagram, and raw or ICMP sockets
 * the caller opens; multishot recvmsg in, one sendmsg per datagram out.
 * Socket options, control data and batched sends are in dgram_msg.c. */
#include "sock.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#define D_OPEN 0x01
#define D_RECEIVING 0x02

#define DGRAM_OF(op, member) URSA__CONTAINER(op, ursa_dgram, member)

/* Room multishot recvmsg takes at the front of each buffer. */
#define RECV_HEADER \
  (sizeof(struct io_uring_recvmsg_out) + sizeof(struct sockaddr_storage))

static const ursa__handle_kind dgram_kind;

static void init(ursa_loop *loop, ursa_dgram *d, int fd) {
  void *data = d->data;
  memset(d, 0, sizeof(*d));
  d->data = data;
  d->fd = fd;
  d->flags = D_OPEN;
  int v = 0;
  socklen_t vl = sizeof(v);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &vl) == 0) d->family = v;
  vl = sizeof(v);
  d->udp = (d->family == AF_INET || d->family == AF_INET6) &&
           getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &vl) == 0 &&
           v == IPPROTO_UDP;
  d->recv_op.kind = URSA__KIND(drecv);
  d->recv_op.nsqe = 1;
  ursa__handle_init(loop, &d->handle, &dgram_kind, URSA_HANDLE_DGRAM);
}

int ursa__dgram_check_open(const ursa_dgram *d, const char *fn) {
  if (!d) return ursa__invalid("%s: NULL socket", fn);
  if (!(d->flags & D_OPEN)) return ursa__invalid("%s: socket is not open", fn);
  return 0;
}

static void maybe_finish_close(ursa_dgram *d) {
  ursa__handle_maybe_close(&d->handle);
}

int ursa_dgram_bind(ursa_loop *loop, ursa_dgram *d, const struct sockaddr *addr,
                    socklen_t addrlen, unsigned flags) {
  if (!loop || !d)
    return ursa__invalid("ursa_dgram_bind: NULL %s", loop ? "socket" : "loop");
  if (flags & ~(URSA_DGRAM_REUSEPORT | URSA_DGRAM_V6ONLY))
    return ursa__invalid("ursa_dgram_bind: unknown flags 0x%x", flags);
  int r = ursa__check_sockaddr(addr, addrlen, "ursa_dgram_bind");
  if (r) return r;
  ursa_sockfile file;
  int fd = ursa__socket_open(
      addr, addrlen, SOCK_DGRAM,
      ((flags & URSA_DGRAM_REUSEPORT) ? URSA__SO_REUSEPORT : 0) |
          ((flags & URSA_DGRAM_V6ONLY) ? URSA__SO_V6ONLY : 0),
      -1, &file);
  if (fd < 0) return fd;
  init(loop, d, fd);
  d->file = file;
  return 0;
}

int ursa_dgram_open(ursa_loop *loop, ursa_dgram *d, int fd) {
  if (!loop || !d)
    return ursa__invalid("ursa_dgram_open: NULL %s", loop ? "socket" : "loop");
  if (fd < 0) return ursa__invalid("ursa_dgram_open: fd %d is negative", fd);
  int type = 0;
  socklen_t tl = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) return -errno;
  if (type != SOCK_DGRAM && type != SOCK_RAW)
    return ursa__invalid("ursa_dgram_open: fd %d is not a datagram or raw "
                         "socket", fd);
  init(loop, d, fd);
  return 0;
}

int ursa_dgram_connect(ursa_dgram *d, const struct sockaddr *addr,
                       socklen_t addrlen) {
  int r = ursa__dgram_check_open(d, "ursa_dgram_connect");
  if (r) return r;
  r = ursa__check_sockaddr(addr, addrlen, "ursa_dgram_connect");
  if (r) return r;
  return connect(d->fd, addr, addrlen) < 0 ? -errno : 0;
}

int ursa_dgram_addr(const ursa_dgram *d, struct sockaddr_storage *addr,
                    socklen_t *addrlen) {
  int r = ursa__dgram_check_open(d, "ursa_dgram_addr");
  if (r) return r;
  if (!addr || !addrlen) return ursa__invalid("ursa_dgram_addr: NULL argument");
  *addrlen = sizeof(*addr);
  return getsockname(d->fd, (struct sockaddr *)addr, addrlen) < 0 ? -errno
                                                                  : 0;
}

/* ---- receive ---- */

/* The ring a receive asking for `what` takes its buffers from. */
static ursa__bufring *ring_for(ursa_loop *loop, unsigned what) {
  return &loop->bufs->rings[(what & (URSA_RECV_GRO | URSA_RECV_LARGE))
                                ? URSA__LARGE_RING
                                : 0];
}

static int recv_begin(ursa_dgram *d, unsigned what, const char *fn,
                      bool with_cb) {
  int r = ursa__dgram_check_open(d, fn);
  if (r) return r;
  if (!with_cb) return ursa__invalid("%s: NULL callback", fn);
  if (d->handle.closing) return ursa__invalid("%s: socket is closing", fn);
  if (d->flags & D_RECEIVING) return -EALREADY;
  if (what) {
    r = ursa__dgram_recv_opts(d, what, fn);
    if (r) return r;
  }
  size_t head = RECV_HEADER + ((what & URSA__RECV_CTRL) ? URSA__DGRAM_CTRL : 0);
  if (!(what & (URSA_RECV_GRO | URSA_RECV_LARGE)) &&
      d->loop->bufs->buf_size <= head)
    return ursa__invalid("%s: buf_size %u leaves no room for datagrams "
                         "(needs over %zu)", fn, d->loop->bufs->buf_size,
                         head);
  d->recv_what = what;
  d->flags |= D_RECEIVING;
  if (d->recv_op.state == URSA__IDLE) {
    ursa__handle_submit(d->loop, &d->handle, &d->recv_op);
  }
  return 0;
}

int ursa_dgram_recv_start(ursa_dgram *d, ursa_recv_cb cb) {
  int r = recv_begin(d, 0, "ursa_dgram_recv_start", cb != NULL);
  if (r == 0) {
    d->recv_cb = cb;
    d->recvmsg_cb = NULL;
  }
  return r;
}

int ursa_dgram_recvmsg_start(ursa_dgram *d, unsigned what,
                             ursa_recvmsg_cb cb) {
  int r = recv_begin(d, what, "ursa_dgram_recvmsg_start", cb != NULL);
  if (r == 0) {
    d->recvmsg_cb = cb;
    d->recv_cb = NULL;
  }
  return r;
}

/* An error ends receiving: told to whichever callback is set. */
static void recv_failed(ursa_dgram *d, int res) {
  if (d->recvmsg_cb)
    d->recvmsg_cb(d, res, NULL, NULL);
  else
    d->recv_cb(d, res, NULL, NULL, 0, 0);
}

int ursa_dgram_recv_stop(ursa_dgram *d) {
  int r = ursa__dgram_check_open(d, "ursa_dgram_recv_stop");
  if (r) return r;
  d->flags &= ~D_RECEIVING;
  ursa__op_cancel(d->loop, &d->recv_op);
  return 0;
}

static void drecv_prep(ursa_loop *loop, ursa_op *op) {
  ursa_dgram *d = DGRAM_OF(op, recv_op);
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  ursa__bufring *ring = ring_for(loop, d->recv_what);
  d->armed_ring = (uint8_t)(ring - loop->bufs->rings);
  size_t control = (d->recv_what & URSA__RECV_CTRL) ? URSA__DGRAM_CTRL : 0;
  memset(&d->msg, 0, sizeof(d->msg));
  if (loop->used & URSA_FEAT_MULTISHOT_RECV) {
    /* The kernel puts a header, the sender's address, the control data
     * and the payload in each buffer; msg only says how much room the
     * address and the control data get. */
    d->msg.msg_namelen = sizeof(struct sockaddr_storage);
    d->msg.msg_controllen = control;
    io_uring_prep_recvmsg_multishot(sqe, d->fd, &d->msg, 0);
    op->flags |= URSA__F_MULTISHOT;
  } else {
    /* MSG_TRUNC makes the result the datagram's full length. */
    d->msg.msg_name = &d->from;
    d->msg.msg_namelen = sizeof(d->from);
    d->msg.msg_control = control ? d->control : NULL;
    d->msg.msg_controllen = control;
    d->iov.iov_base = NULL;
    d->iov.iov_len = ring->size;
    d->msg.msg_iov = &d->iov;
    d->msg.msg_iovlen = 1;
    io_uring_prep_recvmsg(sqe, d->fd, &d->msg, MSG_TRUNC);
  }
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = ring->bgid;
  io_uring_sqe_set_data(sqe, op);
}

static socklen_t family_len(const struct sockaddr_storage *ss) {
  switch (ss->ss_family) {
    case AF_INET:
      return sizeof(struct sockaddr_in);
    case AF_INET6:
      return sizeof(struct sockaddr_in6);
    default:
      return 0;
  }
}

/* Delivers the datagram in buf (NULL: an empty one that took no buffer);
 * returns false if the CQE was not a datagram after all. */
static bool deliver(ursa_loop *loop, ursa_dgram *d, int res, char *buf,
                    bool multishot) {
  const void *payload;
  size_t n;
  const struct sockaddr *from;
  socklen_t fromlen;
  unsigned flags = 0;
  const void *control;
  size_t controllen;
  if (multishot) {
    struct io_uring_recvmsg_out *o =
        io_uring_recvmsg_validate(buf, res, &d->msg);
    if (!o) return false;
    payload = io_uring_recvmsg_payload(o, &d->msg);
    n = io_uring_recvmsg_payload_length(o, res, &d->msg);
    from = io_uring_recvmsg_name(o);
    fromlen = o->namelen > d->msg.msg_namelen ? d->msg.msg_namelen : o->namelen;
    if ((o->flags & MSG_TRUNC) || o->payloadlen > n) flags |= URSA_DGRAM_TRUNC;
    control = (const char *)from + d->msg.msg_namelen;
    controllen = o->controllen;
  } else {
    size_t room = loop->bufs->rings[d->armed_ring].size;
    payload = buf ? buf : "";
    n = (size_t)res;
    if (n > room) {
      n = room;
      flags |= URSA_DGRAM_TRUNC;
    }
    from = (const struct sockaddr *)&d->from;
    fromlen = d->msg.msg_namelen;
    if (!fromlen || fromlen > sizeof(d->from)) fromlen = family_len(&d->from);
    control = d->control;
    controllen = d->msg.msg_controllen;
  }
  loop->stats.bytes_in += n;
  if (!d->recvmsg_cb) {
    d->recv_cb(d, (ssize_t)n, payload, fromlen ? from : NULL, fromlen, flags);
    return true;
  }
  ursa_dgram_info info;
  ursa__dgram_info(&info, control, controllen, n);
  info.from = fromlen ? from : NULL;
  info.fromlen = fromlen;
  info.flags = flags;
  d->recvmsg_cb(d, (ssize_t)n, payload, &info);
  return true;
}

static void drecv_complete(ursa_loop *loop, ursa_op *op, int res,
                          uint32_t flags) {
  ursa_dgram *d = DGRAM_OF(op, recv_op);
  bool multishot = op->flags & URSA__F_MULTISHOT;
  if (flags & IORING_CQE_F_BUFFER) {
    /* One datagram, one buffer: the slice is the whole of it. */
    ursa__slices it;
    if (!ursa__slices_begin(loop, &loop->bufs->rings[d->armed_ring], &it,
                            res, flags, false)) {
      ursa__invalid("ursa: receive buffers came back out of ring order");
      res = -EIO;
    } else if (ursa__slices_next(loop, &it)) {
      if (res >= 0 && !d->handle.closing &&
          !deliver(loop, d, res, it.data, multishot))
        res = -EFAULT;
      ursa__slice_done(loop, &it);
    } else if (res == 0 && !multishot && !d->handle.closing) {
      deliver(loop, d, 0, NULL, false); /* an empty datagram */
    }
    if (flags & IORING_CQE_F_MORE) {
      if (res < 0 && (d->flags & D_RECEIVING) && !d->handle.closing) {
        /* Receiving ends on this error; the recv's last completion only
         * finishes the operation. */
        d->flags &= ~D_RECEIVING;
        ursa__op_cancel(loop, op);
        recv_failed(d, res);
      }
      return;
    }
  } else if (res == 0 && !multishot) {
    /* An empty datagram: the kernel gives its buffer straight back. */
    if (!d->handle.closing) deliver(loop, d, 0, NULL, false);
  } else if (res >= 0) {
    res = -EFAULT; /* a datagram without a buffer breaks the contract */
  }
  res = ursa__recv_fallback(loop, op, res);
  bool again = res >= 0 || res == -ENOBUFS || res == -ECANCELED;
  if (again && (d->flags & D_RECEIVING) && !d->handle.closing) {
    loop->stats.rearms++;
    op->flags &= (uint8_t)~URSA__F_CANCEL;
    ursa__op_resubmit(loop, op);
    return;
  }
  ursa__handle_op_end(loop, &d->handle, op);
  if (!again && !d->handle.closing) {
    d->flags &= ~D_RECEIVING;
    recv_failed(d, res);
  }
  maybe_finish_close(d);
}

URSA__OP_TYPE(drecv) = {
    .name = "recvmsg",
    .prep = drecv_prep,
    .complete = drecv_complete,
};

/* ---- send ---- */

int ursa_dgram_send(ursa_send_req *req, ursa_dgram *d, const void *buf,
                    size_t len, const struct sockaddr *to, socklen_t tolen,
                    ursa_send_cb cb) {
  int r = ursa__dgram_check_open(d, "ursa_dgram_send");
  if (r) return r;
  if (!req || !cb || (!buf && len))
    return ursa__invalid("ursa_dgram_send: NULL %s", !req  ? "request"
                                                     : !cb ? "callback"
                                                           : "buffer");
  if (to) {
    r = ursa__check_sockaddr(to, tolen, "ursa_dgram_send");
    if (r) return r;
  }
  if (req->op.state != URSA__IDLE) return -EBUSY;
  if (d->handle.closing) return -EBADF;
  req->op.kind = URSA__KIND(dsend);
  req->op.nsqe = 1;
  req->op.flags = 0;
  req->dgram = d;
  req->cb = cb;
  memset(&req->msg, 0, sizeof(req->msg));
  if (to) {
    memcpy(&req->to, to, tolen);
    req->msg.msg_name = &req->to;
    req->msg.msg_namelen = tolen;
  }
  req->iov.iov_base = (void *)buf;
  req->iov.iov_len = len;
  req->msg.msg_iov = &req->iov;
  req->msg.msg_iovlen = 1;
  req->sprev = NULL;
  req->snext = d->sends;
  if (d->sends) d->sends->sprev = req;
  d->sends = req;
  ursa__handle_submit(d->loop, &d->handle, &req->op);
  return 0;
}

int ursa_dgram_send_cancel(ursa_send_req *req) {
  if (!req) return ursa__invalid("ursa_dgram_send_cancel: NULL request");
  if (req->op.state == URSA__IDLE) return -ENOENT;
  return ursa__op_cancel(req->dgram->loop, &req->op);
}

int ursa_dgram_send_active(const ursa_send_req *req) {
  return req && req->op.state != URSA__IDLE;
}

static void dsend_prep(ursa_loop *loop, ursa_op *op) {
  ursa_send_req *req = (ursa_send_req *)op;
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  if (loop->send_addr) { /* no msghdr for the kernel to copy in */
    io_uring_prep_send(sqe, req->dgram->fd, req->iov.iov_base,
                       req->iov.iov_len, MSG_NOSIGNAL);
    if (req->msg.msg_name)
      io_uring_prep_send_set_addr(sqe, req->msg.msg_name,
                                  (uint16_t)req->msg.msg_namelen);
  } else {
    io_uring_prep_sendmsg(sqe, req->dgram->fd, &req->msg, MSG_NOSIGNAL);
  }
  io_uring_sqe_set_data(sqe, op);
}

static void dsend_complete(ursa_loop *loop, ursa_op *op, int res,
                          uint32_t flags) {
  ursa_send_req *req = (ursa_send_req *)op;
  ursa_dgram *d = req->dgram;
  (void)flags;
  if (req->sprev)
    req->sprev->snext = req->snext;
  else
    d->sends = req->snext;
  if (req->snext) req->snext->sprev = req->sprev;
  req->snext = req->sprev = NULL;
  int status = res;
  if (res >= 0) {
    loop->stats.bytes_out += (uint64_t)res;
    /* Datagrams go out whole or not at all. */
    status = (size_t)res == req->iov.iov_len ? 0 : -EMSGSIZE;
  }
  ursa__handle_op_end(loop, &d->handle, op);
  req->cb(req, status); /* may free req */
  maybe_finish_close(d);
}

URSA__OP_TYPE(dsend) = {
    .name = "sendmsg",
    .prep = dsend_prep,
    .complete = dsend_complete,
};

/* ---- close ---- */

static void dgram_close(ursa_handle *h) {
  ursa_dgram *d = (ursa_dgram *)h;
  d->flags &= ~D_RECEIVING;
  ursa__op_cancel(d->loop, &d->recv_op);
  for (ursa_send_req *s = d->sends; s; s = s->snext)
    ursa__op_cancel(d->loop, &s->op);
  ursa__dgram_sendmsgs_cancel_all(d);
}

static void dgram_prep_close(ursa_loop *loop, ursa_handle *h) {
  ursa__handle_prep_close(loop, h, ((ursa_dgram *)h)->fd, -1);
}

static void dgram_closed(ursa_handle *h) {
  ursa_dgram *d = (ursa_dgram *)h;
  ursa_sockfile_remove(&d->file);
  d->fd = -1;
  d->flags = 0;
}

static const ursa__handle_kind dgram_kind = {
    .name = "dgram",
    .close = dgram_close,
    .prep_close = dgram_prep_close,
    .closed = dgram_closed,
};

int ursa_dgram_close(ursa_dgram *d, ursa_close_cb cb) {
  return ursa_close(d ? &d->handle : NULL, cb);
}
