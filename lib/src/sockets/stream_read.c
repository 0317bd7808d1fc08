/* stream_read.c - a stream's receive: multishot recv into the buffer
 * ring, its fallbacks, the read timeout, and the watermarks that pause it. */
#include "stream.h"

#include <errno.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

static void read_timer_cb(ursa_timer *t, int status);

/* ---- receive ---- */

static void start_read_timer(ursa_stream *s, uint64_t ms) {
  s->read_timer->t.op.kind = URSA__KIND(timer);
  s->handle.nops++;
  ursa_timer_start(s->loop, &s->read_timer->t, ms, 0, read_timer_cb);
}

/* A read timeout is set and its timer is not running. */
static bool read_timer_idle(const ursa_stream *s) {
  return s->read_timer && s->read_timer->ms &&
         s->read_timer->t.op.state == URSA__IDLE;
}

static void read_timer_cb(ursa_timer *t, int status) {
  ursa_stream *s = t->data;
  struct ursa__readtimer *rt = s->read_timer;
  s->handle.nops--;
  /* Cancelled by ursa_read_stop() but reading again by now: a start that
   * came while this cancel was on its way left the timing to this
   * callback, which goes on as if the timer had fired. */
  if ((status == 0 || status == -ECANCELED) && (s->flags & S_READING) &&
      !s->handle.closing && rt->ms) {
    uint64_t idle = s->loop->now_ms - rt->last_read_ms;
    if (idle >= rt->ms && s->recv_op.state == URSA__IDLE) {
      /* Paused by the high watermark and the peer took nothing either:
       * no recv is there to end, so the read ends here. */
      s->flags &= ~(S_READING | S_READ_TIMEDOUT);
      s->read_cb(s, -ETIMEDOUT, NULL);
    } else if (idle >= rt->ms) {
      s->flags |= S_READ_TIMEDOUT;
      ursa__op_cancel(s->loop, &s->recv_op);
    } else {
      /* Data came meanwhile: sleep until the new deadline. */
      start_read_timer(s, rt->ms - idle);
    }
  }
  maybe_finish_close(s);
}

int ursa_read_start(ursa_stream *s, ursa_read_cb cb) {
  int r = check_stream(s, "ursa_read_start");
  if (r) return r;
  if (!cb) return ursa__invalid("ursa_read_start: NULL callback");
  if (s->handle.closing)
    return ursa__invalid("ursa_read_start: stream is closing");
  if (s->flags & S_EOF)
    return ursa__invalid("ursa_read_start: stream is at end of file");
  if ((s->flags & S_PIPE) && s->fd < 0)
    return ursa__invalid("ursa_read_start: the stream's descriptor closed "
                         "at its shutdown");
  if (s->flags & S_READING) return -EALREADY;
  /* Pipes read into a ring of their own (bufring.h says why); where it
   * cannot be made, into the stream ring. */
  if ((s->flags & S_PIPE) && !(s->flags & S_PIPE_RING) &&
      ursa__bufring_pipe(s->loop) == 0)
    s->flags |= S_PIPE_RING;
  s->flags |= S_READING;
  s->flags &= ~S_READ_TIMEDOUT;
  s->read_cb = cb;
  note_activity(s, s->loop->now_ms);
  /* If a stop is still on its way the recv ends later and is re-armed. */
  if (s->recv_op.state == URSA__IDLE && !(s->flags & S_PAUSED))
    stream_submit(s, &s->recv_op);
  if (read_timer_idle(s)) start_read_timer(s, s->read_timer->ms);
  return 0;
}

int ursa_read_stop(ursa_stream *s) {
  int r = check_stream(s, "ursa_read_stop");
  if (r) return r;
  if (!(s->flags & S_READING)) return 0;
  s->flags &= ~S_READING;
  ursa__op_cancel(s->loop, &s->recv_op);
  if (s->read_timer) ursa__op_cancel(s->loop, &s->read_timer->t.op);
  return 0;
}

int ursa_read_timeout(ursa_stream *s, uint32_t ms) {
  int r = check_stream(s, "ursa_read_timeout");
  if (r) return r;
  if (ms && !s->read_timer) {
    if (s->handle.closing) return -EBADF;
    s->read_timer = calloc(1, sizeof(*s->read_timer));
    if (!s->read_timer) return -ENOMEM;
    s->read_timer->t.data = s;
  }
  if (!s->read_timer) return 0; /* off, and never on */
  s->read_timer->ms = ms;
  s->read_timer->last_read_ms = s->loop->now_ms;
  if ((s->flags & S_READING) && read_timer_idle(s)) start_read_timer(s, ms);
  return 0;
}

static ursa__bufring *recv_ring(ursa_loop *loop, const ursa_stream *s) {
  if (s->flags & S_PIPE_RING) return &loop->bufs->rings[URSA__PIPE_RING];
  return (s->flags & S_SEQPACKET) ? &loop->bufs->rings[0] : loop->bufs->sring;
}

/* A pipe, terminal or device: READ into the same buffers, multishot
 * where the kernel has it and the file can be polled. */
static void read_prep(ursa_loop *loop, ursa_op *op, ursa_stream *s,
                      struct io_uring_sqe *sqe) {
  op->flags &= (uint8_t)~(URSA__F_BUNDLE | URSA__F_MULTISHOT);
  if ((loop->used & URSA_FEAT_READ_MULTISHOT) && !(s->flags & S_PIPE_ONCE)) {
    io_uring_prep_rw(URSA__IORING_OP_READ_MULTISHOT, sqe, s->fd, NULL, 0,
                     (uint64_t)-1);
    op->flags |= URSA__F_MULTISHOT;
  } else {
    io_uring_prep_rw(IORING_OP_READ, sqe, s->fd, NULL,
                     recv_ring(loop, s)->size,
                     (uint64_t)-1); /* -1: the file's position, if any */
  }
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = recv_ring(loop, s)->bgid;
  io_uring_sqe_set_data(sqe, op);
}

static void recv_prep(ursa_loop *loop, ursa_op *op) {
  ursa_stream *s = STREAM_OF(op, recv_op);
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  if (s->flags & S_PIPE) {
    read_prep(loop, op, s, sqe);
    return;
  }
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

static void recv_complete(ursa_loop *loop, ursa_op *op, int res,
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
      note_activity(s, loop->now_ms);
      while (ursa__slices_next(loop, &it)) {
        /* Delivered even after ursa_read_stop(): the bytes left the
         * socket.  A callback that closes the stream drops the rest. */
        if (!s->handle.closing) s->read_cb(s, (ssize_t)it.len, it.data);
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
  if ((s->flags & S_PIPE) && (op->flags & URSA__F_MULTISHOT) &&
      (res == -EBADFD || res == -EINVAL)) {
    /* A device without poll (EBADFD) reads one buffer at a time; a
     * kernel that refuses the multishot read (EINVAL), every stream. */
    if (res == -EBADFD)
      s->flags |= S_PIPE_ONCE;
    else
      loop->used &= ~URSA_FEAT_READ_MULTISHOT;
    res = -ENOBUFS; /* arm it again, uncounted */
  } else {
    res = ursa__recv_fallback(loop, op, res);
  }

  int status = 0;
  if (s->handle.closing) {
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
    if (s->read_timer && s->read_timer->t.op.state != URSA__IDLE)
      ursa__op_cancel(loop, &s->read_timer->t.op);
    s->read_cb(s, status, NULL);
  }
  maybe_finish_close(s);
}

URSA__OP_TYPE(recv) = {
    .name = "recv",
    .prep = recv_prep,
    .complete = recv_complete,
};

/* ---- watermarks ---- */

int ursa_stream_read_marks(ursa_stream *s, size_t high, size_t low) {
  int r = check_stream(s, "ursa_stream_read_marks");
  if (r) return r;
  if (high && low >= high)
    return ursa__invalid("ursa_stream_read_marks: low %zu is not below high "
                         "%zu", low, high);
  if (high > UINT32_MAX)
    return ursa__invalid("ursa_stream_read_marks: high %zu is not below "
                         "4 GiB", high);
  s->high_water = (uint32_t)high;
  s->low_water = (uint32_t)low;
  return 0;
}

/* Pauses the receive when too much waits to be sent, resumes it when the
 * queue has drained; the application's wish to read (S_READING) stands. */
void ursa__stream_check_watermarks(ursa_stream *s) {
  if (!s->high_water || s->handle.closing) return;
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

