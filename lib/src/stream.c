/* stream.c - TCP and Unix stream sockets: connect, multishot receive, the
 * write queue, shutdown and close. */
#include "sock.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

/* Stream flags. */
#define S_OPEN 0x01
#define S_READING 0x02
#define S_CLOSING 0x04
#define S_CLOSE_SUBMITTED 0x08
#define S_EOF 0x10
#define S_SHUT 0x20         /* ursa_shutdown() called */
#define S_SHUT_WAITING 0x40 /* shutdown waits for the write queue */
#define S_READ_TIMEDOUT 0x80
#define S_SEQPACKET 0x100 /* message boundaries: receives ask for MSG_TRUNC */
#define S_MSGSIZE 0x200   /* a message did not fit: reading ends with it */
#define S_PAUSED 0x400    /* reading held back by the high watermark */
#define S_DIRECT 0x800    /* the socket is direct descriptor s->slot */
#define S_NO_ZC 0x1000    /* a zero-copy send was refused: plain sends */
#define S_DESYNC 0x2000   /* buffers came out of order: reading ends, -EIO */

#define STREAM_OF(op, member) URSA__CONTAINER(op, ursa_stream, member)

static void read_timer_cb(ursa_timer *t, int status);

void ursa__stream_init(ursa_loop *loop, ursa_stream *s, int fd,
                       bool seqpacket, bool direct, bool local) {
  void *data = s->data;
  memset(s, 0, sizeof(*s));
  s->data = data;
  s->fd = direct ? -1 : fd;
  s->slot = direct ? fd : -1;
  s->loop = loop;
  /* A Unix socket has no zero-copy path: the kernel would refuse each. */
  s->flags = S_OPEN | (seqpacket ? S_SEQPACKET : 0) | (direct ? S_DIRECT : 0) |
             (local ? S_NO_ZC : 0);
  s->recv_op.kind = URSA__OP_RECV;
  s->recv_op.nsqe = 1;
  s->connect_op.kind = URSA__OP_CONNECT;
  s->shutdown_op.kind = URSA__OP_SHUTDOWN;
  s->shutdown_op.nsqe = 1;
  s->close_op.kind = URSA__OP_CLOSE_STREAM;
  s->close_op.nsqe = 1;
  s->send_op.kind = URSA__OP_SEND;
  loop->handles++;
}

/* Points sqe at the stream's socket: its descriptor, or its direct slot. */
static inline void set_socket(const ursa_stream *s, struct io_uring_sqe *sqe) {
  if (s->flags & S_DIRECT) {
    sqe->fd = s->slot;
    sqe->flags |= IOSQE_FIXED_FILE;
  }
}

/* Starts one of the stream's own ops, counting it against close. */
static void stream_submit(ursa_stream *s, ursa_op *op) {
  s->nops++;
  ursa__op_submit(s->loop, op);
}

/* Called after each op of the stream ends: the close waits for the last. */
static void maybe_finish_close(ursa_stream *s) {
  if ((s->flags & (S_CLOSING | S_CLOSE_SUBMITTED)) != S_CLOSING || s->nops)
    return;
  s->flags |= S_CLOSE_SUBMITTED;
  ursa__op_submit(s->loop, &s->close_op);
}

static void op_end(ursa_stream *s, ursa_op *op) {
  ursa__op_done(s->loop, op);
  s->nops--;
}

static int check_stream(const ursa_stream *s, const char *fn) {
  if (!s) return ursa__invalid("%s: NULL stream", fn);
  if (!(s->flags & S_OPEN) || !s->loop)
    return ursa__invalid("%s: stream is not open", fn);
  return 0;
}

int ursa_stream_open(ursa_loop *loop, ursa_stream *s, int fd) {
  if (!loop || !s)
    return ursa__invalid("ursa_stream_open: NULL %s", loop ? "stream" : "loop");
  int type = 0;
  socklen_t tl = sizeof(type);
  if (fd < 0) return ursa__invalid("ursa_stream_open: fd %d is negative", fd);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) return -errno;
  if (type != SOCK_STREAM && type != SOCK_SEQPACKET)
    return ursa__invalid("ursa_stream_open: fd %d is not a stream socket", fd);
  int domain = 0;
  tl = sizeof(domain);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &tl) < 0) return -errno;
  ursa__stream_init(loop, s, fd, type == SOCK_SEQPACKET, false,
                    domain == AF_UNIX);
  return 0;
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
  int fd = socket(addr->sa_family,
                  (seq ? SOCK_SEQPACKET : SOCK_STREAM) | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  ursa__stream_init(loop, s, fd, seq, false, addr->sa_family == AF_UNIX);
  memcpy(&s->peer, addr, addrlen);
  s->peer_len = addrlen;
  s->connect_cb = cb;
  s->connect_op.nsqe = timeout_ms ? 2 : 1;
  ursa__ms_to_ts(timeout_ms, &s->ts);
  stream_submit(s, &s->connect_op);
  return 0;
}

void ursa__connect_prep(ursa_loop *loop, ursa_op *op) {
  ursa_stream *s = STREAM_OF(op, connect_op);
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  io_uring_prep_connect(sqe, s->fd, (struct sockaddr *)&s->peer, s->peer_len);
  io_uring_sqe_set_data(sqe, op);
  if (op->nsqe == 2) {
    op->flags |= URSA__F_TIMEOUT;
    sqe->flags |= IOSQE_IO_LINK;
    sqe = ursa__get_sqe(loop);
    io_uring_prep_link_timeout(sqe, ursa__kts(&s->ts), 0);
    sqe->user_data = 0;
  }
}

/* A linked timeout shows as -ECANCELED on the op it guards. */
static int timeout_status(const ursa_op *op, int res) {
  if (res == -ECANCELED && (op->flags & URSA__F_TIMEOUT) &&
      !(op->flags & URSA__F_CANCEL))
    return -ETIMEDOUT;
  return res;
}

void ursa__connect_complete(ursa_loop *loop, ursa_op *op, int res,
                            uint32_t flags) {
  ursa_stream *s = STREAM_OF(op, connect_op);
  (void)flags;
  int status = timeout_status(op, res);
  if (status > 0) status = 0;
  if ((s->flags & S_CLOSING) && status == 0) status = -ECANCELED;
  op_end(s, op);
  s->connect_cb(s, status);
  maybe_finish_close(s);
}

/* ---- receive ---- */

static void start_read_timer(ursa_stream *s, uint64_t ms) {
  s->read_timer.op.kind = URSA__OP_TIMER;
  s->nops++;
  ursa_timer_start(s->loop, &s->read_timer, ms, 0, read_timer_cb);
}

static void read_timer_cb(ursa_timer *t, int status) {
  ursa_stream *s = URSA__CONTAINER(t, ursa_stream, read_timer);
  s->nops--;
  /* Cancelled by ursa_read_stop() but reading again by now: a start that
   * came while this cancel was on its way left the timing to this
   * callback, which goes on as if the timer had fired. */
  if ((status == 0 || status == -ECANCELED) && (s->flags & S_READING) &&
      !(s->flags & S_CLOSING) && s->read_timeout_ms) {
    uint64_t idle = s->loop->now_ms - s->last_read_ms;
    if (idle >= s->read_timeout_ms && s->recv_op.state == URSA__IDLE) {
      /* Paused by the high watermark and the peer took nothing either:
       * no recv is there to end, so the read ends here. */
      s->flags &= ~(S_READING | S_READ_TIMEDOUT);
      s->read_cb(s, -ETIMEDOUT, NULL);
    } else if (idle >= s->read_timeout_ms) {
      s->flags |= S_READ_TIMEDOUT;
      ursa__op_cancel(s->loop, &s->recv_op);
    } else {
      /* Data came meanwhile: sleep until the new deadline. */
      start_read_timer(s, s->read_timeout_ms - idle);
    }
  }
  maybe_finish_close(s);
}

int ursa_read_start(ursa_stream *s, ursa_read_cb cb) {
  int r = check_stream(s, "ursa_read_start");
  if (r) return r;
  if (!cb) return ursa__invalid("ursa_read_start: NULL callback");
  if (s->flags & S_CLOSING)
    return ursa__invalid("ursa_read_start: stream is closing");
  if (s->flags & S_EOF)
    return ursa__invalid("ursa_read_start: stream is at end of file");
  if (s->flags & S_READING) return -EALREADY;
  s->flags |= S_READING;
  s->flags &= ~S_READ_TIMEDOUT;
  s->read_cb = cb;
  s->last_read_ms = s->loop->now_ms;
  /* If a stop is still on its way the recv ends later and is re-armed. */
  if (s->recv_op.state == URSA__IDLE && !(s->flags & S_PAUSED))
    stream_submit(s, &s->recv_op);
  if (s->read_timeout_ms && s->read_timer.op.state == URSA__IDLE)
    start_read_timer(s, s->read_timeout_ms);
  return 0;
}

int ursa_read_stop(ursa_stream *s) {
  int r = check_stream(s, "ursa_read_stop");
  if (r) return r;
  if (!(s->flags & S_READING)) return 0;
  s->flags &= ~S_READING;
  ursa__op_cancel(s->loop, &s->recv_op);
  ursa__op_cancel(s->loop, &s->read_timer.op);
  return 0;
}

int ursa_read_timeout(ursa_stream *s, uint32_t ms) {
  int r = check_stream(s, "ursa_read_timeout");
  if (r) return r;
  s->read_timeout_ms = ms;
  s->last_read_ms = s->loop->now_ms;
  if (ms && (s->flags & S_READING) && s->read_timer.op.state == URSA__IDLE)
    start_read_timer(s, ms);
  return 0;
}

static ursa__bufring *recv_ring(ursa_loop *loop, const ursa_stream *s) {
  return (s->flags & S_SEQPACKET) ? &loop->bufs->rings[0] : loop->bufs->sring;
}

void ursa__recv_prep(ursa_loop *loop, ursa_op *op) {
  ursa_stream *s = STREAM_OF(op, recv_op);
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  /* MSG_TRUNC on a seqpacket socket returns a message's whole length, so a
   * message larger than the buffer shows as res > buf_size. */
  bool msg = s->flags & S_SEQPACKET;
  int rflags = msg ? MSG_TRUNC : 0;
  /* A bundle fills as many buffers as the socket has bytes for; messages
   * keep one buffer each. */
  bool bundle = !msg && (loop->used & URSA_FEAT_RECV_BUNDLE);
  op->flags &= (uint8_t)~URSA__F_BUNDLE;
  if (loop->used & URSA_FEAT_MULTISHOT_RECV) {
    io_uring_prep_recv_multishot(sqe, s->fd, NULL, 0, rflags);
    op->flags |= URSA__F_MULTISHOT;
  } else {
    io_uring_prep_recv(sqe, s->fd, NULL, bundle ? 0 : loop->bufs->buf_size,
                       rflags);
  }
  if (bundle) {
    sqe->ioprio |= IORING_RECVSEND_BUNDLE;
    op->flags |= URSA__F_BUNDLE;
  }
  set_socket(s, sqe);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = recv_ring(loop, s)->bgid;
  io_uring_sqe_set_data(sqe, op);
}

void ursa__recv_complete(ursa_loop *loop, ursa_op *op, int res,
                         uint32_t flags) {
  ursa_stream *s = STREAM_OF(op, recv_op);
  if (flags & IORING_CQE_F_BUFFER) {
    ursa__slices it;
    if (URSA__UNLIKELY(!ursa__slices_begin(loop, recv_ring(loop, s), &it,
                                           res, flags,
                                           op->flags & URSA__F_BUNDLE))) {
      /* Which buffers hold these bytes is unknown: fail loudly rather
       * than pass on wrong ones.  The buffers are lost to the ring. */
      ursa__invalid("ursa: receive buffers came back out of ring order");
      res = -EIO;
      s->flags |= S_DESYNC;
    } else if (res > 0 && (unsigned)res > loop->bufs->buf_size &&
               (s->flags & S_SEQPACKET)) {
      /* A seqpacket message cut to the buffer: an error, never data. */
      ursa__slices_drop(loop, &it);
      res = -EMSGSIZE;
      s->flags |= S_MSGSIZE;
    } else if (URSA__UNLIKELY(s->flags & (S_MSGSIZE | S_DESYNC))) {
      /* Reading is ending on an error: nothing after it. */
      ursa__slices_drop(loop, &it);
    } else if (res > 0) {
      loop->stats.bytes_in += (uint64_t)res;
      s->last_read_ms = loop->now_ms;
      while (ursa__slices_next(loop, &it)) {
        /* Delivered even after ursa_read_stop(): the bytes left the
         * socket.  A callback that closes the stream drops the rest. */
        if (!(s->flags & S_CLOSING))
          s->read_cb(s, (ssize_t)it.len, it.data);
        ursa__slice_done(loop, &it);
      }
    }
    if ((flags & IORING_CQE_F_MORE) && (res > 0 || res == -EMSGSIZE ||
                                        res == -EIO)) {
      /* A multishot recv that must stop handing out bytes: what still
       * arrives is dropped until its last completion reports the error. */
      if (res < 0) ursa__op_cancel(loop, op);
      return;
    }
  } else if (URSA__UNLIKELY(res > 0)) {
    /* Bytes without a buffer break the kernel's contract. */
    res = -EFAULT;
  }
  if (res == -ENOBUFS) loop->stats.enobufs++;
  if (res == -EINVAL && (op->flags & URSA__F_MULTISHOT)) {
    /* A kernel that takes the opcode but not multishot: fall back. */
    loop->used &= ~URSA_FEAT_MULTISHOT_RECV;
    res = -ENOBUFS;
  }

  int status = 0;
  if (s->flags & S_CLOSING) {
    status = 1; /* no callback */
  } else if (res == 0) {
    status = URSA_EOF;
    s->flags |= S_EOF;
  } else if (s->flags & S_READ_TIMEDOUT) {
    status = -ETIMEDOUT;
  } else if (s->flags & S_MSGSIZE) {
    status = -EMSGSIZE;
  } else if (s->flags & S_DESYNC) {
    status = -EIO;
  } else if (res < 0 && res != -ENOBUFS && res != -ECANCELED) {
    status = res;
  }
  if (status == 0 && (s->flags & S_READING) && !(s->flags & S_PAUSED)) {
    /* The recv ended with reading still wanted (single-shot, ENOBUFS, a
     * stop undone by a start): arm it again.  Only one recv is ever in
     * flight per stream, so bytes stay in order. */
    loop->stats.rearms++;
    op->flags &= (uint8_t)~URSA__F_CANCEL;
    ursa__op_resubmit(loop, op);
    return;
  }
  op_end(s, op);
  if (status < 0) {
    s->flags &= ~(S_READING | S_READ_TIMEDOUT | S_MSGSIZE | S_DESYNC);
    if (s->read_timer.op.state != URSA__IDLE)
      ursa__op_cancel(loop, &s->read_timer.op);
    s->read_cb(s, status, NULL);
  }
  maybe_finish_close(s);
}

/* ---- watermarks ---- */

int ursa_stream_watermarks(ursa_stream *s, size_t high, size_t low) {
  int r = check_stream(s, "ursa_stream_watermarks");
  if (r) return r;
  if (high && low >= high)
    return ursa__invalid("ursa_stream_watermarks: low %zu is not below high "
                         "%zu", low, high);
  s->high_water = high;
  s->low_water = low;
  return 0;
}

/* Pauses the receive when too much waits to be sent, resumes it when the
 * queue has drained; the application's wish to read (S_READING) stands. */
static void check_watermarks(ursa_stream *s) {
  if (!s->high_water || (s->flags & S_CLOSING)) return;
  if (!(s->flags & S_PAUSED) && s->wq_bytes >= s->high_water &&
      (s->flags & S_READING)) {
    s->flags |= S_PAUSED;
    ursa__op_cancel(s->loop, &s->recv_op);
  } else if ((s->flags & S_PAUSED) && s->wq_bytes <= s->low_water) {
    s->flags &= ~S_PAUSED;
    if ((s->flags & S_READING) && s->recv_op.state == URSA__IDLE)
      stream_submit(s, &s->recv_op);
  }
}

/* ---- send ----
 *
 * Writes wait in a FIFO (their op QUEUED).  One send_op per stream is in
 * flight at a time and carries the head write, or up to write_batch writes
 * as one sendmsg; those are marked BATCHED, since the kernel reads their
 * buffers until send_op completes.  Only then are they called back. */

static void maybe_shutdown(ursa_stream *s);

/* Bytes one send carries at most: an SQE's length and a CQE's result are
 * 32 bits, so a larger write goes out in pieces (each continues where the
 * last stopped, as a short send does). */
#define SEND_MAX ((size_t)1 << 30)

/* Unlinks w (which follows prev, NULL for the head) from the queue. */
static void unlink_write(ursa_stream *s, ursa_write_req *prev,
                         ursa_write_req *w) {
  if (prev)
    prev->wnext = w->wnext;
  else
    s->wq_head = w->wnext;
  if (s->wq_tail == w) s->wq_tail = prev;
  w->wnext = NULL;
  s->wq_bytes -= w->len - w->done;
}

/* Fails every queued write the kernel is not reading, from the pending
 * list (these run from API calls, so their callbacks must wait). */
static void fail_unbatched(ursa_stream *s) {
  ursa_write_req *prev = NULL;
  for (ursa_write_req *w = s->wq_head; w;) {
    ursa_write_req *next = w->wnext;
    if (w->op.flags & URSA__F_BATCHED) {
      prev = w;
    } else {
      unlink_write(s, prev, w);
      ursa__op_defer(s->loop, &w->op, -ECANCELED);
    }
    w = next;
  }
}

static void start_send(ursa_stream *s) {
  ursa_write_req *w = s->wq_head;
  if (!w || s->send_op.state != URSA__IDLE || (s->flags & S_CLOSING) ||
      s->write_error)
    return;
  ursa_write_req *head = w;
  if (head->op.nsqe == 2 && !(head->op.flags & URSA__F_STARTED)) {
    head->op.flags |= URSA__F_STARTED; /* its timeout clock starts now */
    head->deadline_ms += s->loop->now_ms;
  }
  /* A write with a timeout goes alone; others go up to write_batch at a
   * time, as far as the next write with a timeout.  On seqpacket every
   * write is one message, so there writes never share a sendmsg. */
  unsigned n = 0, max = head->op.nsqe == 2 || (s->flags & S_SEQPACKET)
                            ? 1
                            : s->loop->write_batch;
  size_t total = 0;
  for (; w && n < max && total < SEND_MAX && (w == head || w->op.nsqe == 1);
       w = w->wnext) {
    size_t left = w->len - w->done;
    if (left > SEND_MAX - total) left = SEND_MAX - total;
    s->iov[n].iov_base = (void *)(w->buf + w->done);
    s->iov[n++].iov_len = left;
    total += left;
    w->op.flags |= URSA__F_BATCHED;
  }
  s->batch = n;
  s->send_op.nsqe = head->op.nsqe;
  stream_submit(s, &s->send_op);
}

int ursa_write(ursa_write_req *w, ursa_stream *s, const void *buf, size_t len,
               uint32_t timeout_ms, ursa_write_cb cb) {
  int r = check_stream(s, "ursa_write");
  if (r) return r;
  if (!w || !buf || !cb)
    return ursa__invalid("ursa_write: NULL %s",
                         !w ? "request" : !buf ? "buffer" : "callback");
  if (!len) return ursa__invalid("ursa_write: length is 0");
  if (w->op.state != URSA__IDLE) return -EBUSY;
  if (s->flags & S_CLOSING) return -EBADF;
  if (s->flags & S_SHUT) return -EPIPE;
  if (s->write_error) return s->write_error;
  w->op.kind = URSA__OP_WRITE;
  w->op.nsqe = timeout_ms ? 2 : 1; /* 2: sent alone, with a linked timeout */
  w->op.flags = 0;
  w->op.state = URSA__QUEUED;
  w->stream = s;
  w->wnext = NULL;
  w->buf = buf;
  w->len = len;
  w->done = 0;
  w->cb = cb;
  w->deadline_ms = timeout_ms; /* made absolute when it reaches the socket */
  s->loop->active++;
  s->nops++;
  s->wq_bytes += len;
  if (s->wq_tail)
    s->wq_tail->wnext = w;
  else
    s->wq_head = w;
  s->wq_tail = w;
  start_send(s);
  check_watermarks(s);
  return 0;
}

int ursa_write_cancel(ursa_write_req *w) {
  if (!w) return ursa__invalid("ursa_write_cancel: NULL request");
  if (w->op.state == URSA__IDLE) return -ENOENT;
  return ursa__write_cancel(w->stream->loop, &w->op);
}

int ursa_write_active(const ursa_write_req *w) {
  return w && w->op.state != URSA__IDLE;
}

size_t ursa_write_queue_size(const ursa_stream *s) {
  return s ? s->wq_bytes : 0;
}

int ursa__write_cancel(ursa_loop *loop, ursa_op *op) {
  ursa_write_req *w = (ursa_write_req *)op;
  if (op->state == URSA__IDLE) return -ENOENT;
  if (op->state == URSA__PENDING) return -EALREADY;
  ursa_stream *s = w->stream;
  if (op->flags & URSA__F_BATCHED) {
    /* The kernel holds its bytes: stop the send that carries them. */
    op->flags |= URSA__F_CANCEL;
    int r = ursa__op_cancel(loop, &s->send_op);
    return r == -ENOENT || r == -EALREADY ? 0 : r;
  }
  ursa_write_req *prev = NULL;
  for (ursa_write_req *it = s->wq_head; it && it != w; it = it->wnext)
    prev = it;
  unlink_write(s, prev, w);
  ursa__op_defer(loop, op, -ECANCELED); /* the stream stays whole */
  return 0;
}

void ursa__send_prep(ursa_loop *loop, ursa_op *op) {
  ursa_stream *s = STREAM_OF(op, send_op);
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  if (s->batch == 1 && op->nsqe == 1 && loop->zc_threshold &&
      !(s->flags & S_NO_ZC) &&
      (loop->used & URSA_FEAT_SEND_ZC) &&
      s->iov[0].iov_len >= loop->zc_threshold) {
    io_uring_prep_send_zc(sqe, s->fd, s->iov[0].iov_base, s->iov[0].iov_len,
                          MSG_NOSIGNAL, 0);
    op->flags |= URSA__F_ZC;
  } else if (s->batch == 1) {
    io_uring_prep_send(sqe, s->fd, s->iov[0].iov_base, s->iov[0].iov_len,
                       MSG_NOSIGNAL);
  } else {
    memset(&s->msg, 0, sizeof(s->msg));
    s->msg.msg_iov = s->iov;
    s->msg.msg_iovlen = s->batch;
    io_uring_prep_sendmsg(sqe, s->fd, &s->msg, MSG_NOSIGNAL);
  }
  set_socket(s, sqe);
  io_uring_sqe_set_data(sqe, op);
  if (op->nsqe == 2) {
    ursa_write_req *w = s->wq_head;
    uint64_t left = w->deadline_ms > loop->now_ms
                        ? w->deadline_ms - loop->now_ms
                        : 0;
    ursa__ms_to_ts(left, &w->ts);
    if (!left) w->ts.tv_nsec = 1; /* past due: expire at once */
    op->flags |= URSA__F_TIMEOUT;
    sqe->flags |= IOSQE_IO_LINK;
    sqe = ursa__get_sqe(loop);
    io_uring_prep_link_timeout(sqe, ursa__kts(&w->ts), 0);
    sqe->user_data = 0;
  }
}

/* Calls back a write taken off the queue (it may free w). */
static void finish_write(ursa_stream *s, ursa_write_req *w, int status) {
  ursa__op_done(s->loop, &w->op);
  s->nops--;
  w->cb(w, status);
}

void ursa__send_complete(ursa_loop *loop, ursa_op *op, int res,
                         uint32_t flags) {
  ursa_stream *s = STREAM_OF(op, send_op);
  if (op->flags & URSA__F_ZC) {
    /* The result comes first (MORE: a notification follows); the pages
     * are the application's again only at the notification. */
    if (flags & IORING_CQE_F_NOTIF) {
      res = s->zc_res;
    } else if (flags & IORING_CQE_F_MORE) {
      s->zc_res = res;
      loop->stats.zc_sends++;
      return;
    }
    op->flags &= (uint8_t)~URSA__F_ZC;
    if (res == -ENOMEM || res == -EOPNOTSUPP) {
      /* Pinning the pages went over RLIMIT_MEMLOCK, or the socket has no
       * zero-copy path: nothing was sent.  Send the same bytes the
       * ordinary way, and on this stream from now on; with a cancel or a
       * close pending they are cancelled instead, the stream whole. */
      s->flags |= S_NO_ZC;
      loop->stats.zc_refused++;
      if (!(op->flags & URSA__F_CANCEL) && !(s->flags & S_CLOSING)) {
        ursa__op_resubmit(loop, op);
        return;
      }
      res = -ECANCELED;
    }
  }
  unsigned n = s->batch;
  bool stopped = (op->flags & URSA__F_CANCEL) || (s->flags & S_CLOSING);
  int err = timeout_status(op, res);
  s->batch = 0;
  op_end(s, op);

  /* Bytes out go to the writes in order; the whole ones are done. */
  ursa_write_req *done = NULL, **done_tail = &done;
  unsigned k = 0;
  if (res > 0) {
    loop->stats.bytes_out += (uint64_t)res;
    /* While reading is paused on our queue, the peer taking bytes is the
     * progress the read timeout watches. */
    if (s->flags & S_PAUSED) s->last_read_ms = loop->now_ms;
    size_t left = (size_t)res;
    while (left && k < n) {
      ursa_write_req *w = s->wq_head;
      size_t take = w->len - w->done;
      if (take > left) take = left;
      w->done += take;
      s->wq_bytes -= take;
      left -= take;
      if (w->done < w->len) break;
      unlink_write(s, NULL, w);
      *done_tail = w;
      done_tail = &w->wnext;
      k++;
    }
  }
  /* The rest of the batch: go on (short send), or fail. */
  ursa_write_req *failed = NULL, **failed_tail = &failed;
  int fail_status = 0;
  if (k < n && (res <= 0 || stopped)) {
    ursa_write_req *head = s->wq_head;
    fail_status = res < 0 ? err : -ECANCELED;
    bool torn = head->done > 0 || fail_status != -ECANCELED;
    if (torn && !s->write_error) s->write_error = fail_status;
    ursa_write_req *prev = NULL;
    for (ursa_write_req *w = s->wq_head; w;) {
      ursa_write_req *next = w->wnext;
      bool batched = w->op.flags & URSA__F_BATCHED;
      /* Torn: nothing after can go.  Whole: only what was cancelled (or
       * everything, when closing) fails; the rest is sent again. */
      if (torn || (s->flags & S_CLOSING) ||
          (batched && (w->op.flags & URSA__F_CANCEL))) {
        unlink_write(s, prev, w);
        *failed_tail = w;
        failed_tail = &w->wnext;
      } else {
        prev = w;
      }
      w = next;
    }
  }
  /* Failed writes lose the mark when they finish; the rest lose it here. */
  for (ursa_write_req *w = s->wq_head; w; w = w->wnext)
    w->op.flags &= (uint8_t)~URSA__F_BATCHED;

  start_send(s); /* what is left, before callbacks queue more behind it */
  check_watermarks(s);
  for (ursa_write_req *w = done; w;) {
    ursa_write_req *next = w->wnext;
    finish_write(s, w, 0);
    w = next;
  }
  for (ursa_write_req *w = failed; w;) {
    ursa_write_req *next = w->wnext;
    /* The first gets the error; those behind it were never tried. */
    finish_write(s, w, w == failed ? fail_status : -ECANCELED);
    w = next;
  }
  maybe_shutdown(s);
  maybe_finish_close(s);
}

/* A write's result that came from ursa, not the kernel (cancelled while
 * queued, or failed by close). */
void ursa__write_complete(ursa_loop *loop, ursa_op *op, int res,
                          uint32_t flags) {
  ursa_write_req *w = (ursa_write_req *)op;
  ursa_stream *s = w->stream;
  (void)loop;
  (void)flags;
  finish_write(s, w, res);
  start_send(s);
  check_watermarks(s);
  maybe_shutdown(s);
  maybe_finish_close(s);
}

static void maybe_shutdown(ursa_stream *s) {
  if ((s->flags & S_SHUT_WAITING) && !s->wq_head) {
    s->flags &= ~S_SHUT_WAITING;
    ursa__op_submit(s->loop, &s->shutdown_op);
  }
}

/* ---- shutdown ---- */

int ursa_shutdown(ursa_stream *s, ursa_shutdown_cb cb) {
  int r = check_stream(s, "ursa_shutdown");
  if (r) return r;
  if (!cb) return ursa__invalid("ursa_shutdown: NULL callback");
  if (s->flags & S_CLOSING) return -EBADF;
  if (s->flags & S_SHUT) return -EALREADY;
  s->flags |= S_SHUT | S_SHUT_WAITING;
  s->shutdown_cb = cb;
  s->nops++;
  maybe_shutdown(s);
  return 0;
}

void ursa__shutdown_prep(ursa_loop *loop, ursa_op *op) {
  ursa_stream *s = STREAM_OF(op, shutdown_op);
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  io_uring_prep_shutdown(sqe, s->fd, SHUT_WR);
  set_socket(s, sqe);
  io_uring_sqe_set_data(sqe, op);
}

void ursa__shutdown_complete(ursa_loop *loop, ursa_op *op, int res,
                             uint32_t flags) {
  ursa_stream *s = STREAM_OF(op, shutdown_op);
  (void)flags;
  (void)loop;
  op_end(s, op);
  s->shutdown_cb(s, res);
  maybe_finish_close(s);
}

/* ---- close ---- */

int ursa_stream_close(ursa_stream *s, ursa_stream_close_cb cb) {
  int r = check_stream(s, "ursa_stream_close");
  if (r) return r;
  if (!cb) return ursa__invalid("ursa_stream_close: NULL callback");
  if (s->flags & S_CLOSING) return -EALREADY;
  ursa_loop *loop = s->loop;
  s->flags |= S_CLOSING;
  s->flags &= ~S_READING;
  s->close_cb = cb;
  ursa__op_cancel(loop, &s->recv_op);
  ursa__op_cancel(loop, &s->connect_op);
  ursa__op_cancel(loop, &s->read_timer.op);
  if (s->flags & S_SHUT_WAITING) {
    s->flags &= ~S_SHUT_WAITING;
    ursa__op_defer(loop, &s->shutdown_op, -ECANCELED);
  } else {
    ursa__op_cancel(loop, &s->shutdown_op);
  }
  /* Writes the kernel reads are failed when the cancelled send returns. */
  ursa__op_cancel(loop, &s->send_op);
  fail_unbatched(s);
  maybe_finish_close(s);
  return 0;
}

void ursa__sclose_prep(ursa_loop *loop, ursa_op *op) {
  ursa_stream *s = STREAM_OF(op, close_op);
  if (s->flags & S_DIRECT) {
    struct io_uring_sqe *sqe = ursa__get_sqe(loop);
    io_uring_prep_close_direct(sqe, (unsigned)s->slot);
    io_uring_sqe_set_data(sqe, op);
  } else {
    ursa__prep_close(loop, op, s->fd);
  }
}

void ursa__sclose_complete(ursa_loop *loop, ursa_op *op, int res,
                           uint32_t flags) {
  ursa_stream *s = STREAM_OF(op, close_op);
  (void)flags;
  (void)res; /* the descriptor is gone whatever close said */
  ursa__op_done(loop, op);
  if (s->flags & S_DIRECT) ursa__direct_unreserve(loop); /* slot free */
  loop->handles--;
  s->fd = -1;
  s->slot = -1;
  s->flags = 0;
  s->close_cb(s); /* the last touch: it may free s */
}
