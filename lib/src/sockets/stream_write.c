/* stream_write.c - a stream's write queue: ordered, whole writes, sent
 * one send at a time, batched, in pieces of at most SEND_MAX, zero-copy
 * above a threshold. */
#include "stream.h"

#include <errno.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- send ----
 *
 * Writes wait in a FIFO (their op QUEUED).  One send_op per stream is in
 * flight at a time and carries the head write, or up to write_batch writes
 * as one sendmsg; those are marked BATCHED, since the kernel reads their
 * buffers until send_op completes.  Only then are they called back. */


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

void ursa__stream_unlink_head(ursa_stream *s) {
  unlink_write(s, NULL, s->wq_head);
}

/* Fails every queued write the kernel is not reading, from the pending
 * list (these run from API calls, so their callbacks must wait). */
void ursa__stream_fail_unbatched(ursa_stream *s) {
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

static struct ursa__sendv *take_sendv(ursa_loop *loop, unsigned want) {
  int big = want > SENDV_SMALL && loop->write_batch > SENDV_SMALL;
  unsigned cap = big ? loop->write_batch : SENDV_SMALL;
  struct ursa__sendv *v = loop->sendv_free[big];
  if (v) {
    loop->sendv_free[big] = v->next;
    return v;
  }
  v = malloc(sizeof(*v) + cap * sizeof(struct iovec));
  if (v) v->cap = cap;
  return v;
}

static void give_sendv(ursa_stream *s) {
  struct ursa__sendv *v = s->sendv;
  if (!v) return;
  int big = v->cap > SENDV_SMALL;
  v->next = s->loop->sendv_free[big];
  s->loop->sendv_free[big] = v;
  s->sendv = NULL;
}

void ursa__sendv_free_all(ursa_loop *loop) {
  for (int k = 0; k < 2; k++) {
    while (loop->sendv_free[k]) {
      struct ursa__sendv *v = loop->sendv_free[k];
      loop->sendv_free[k] = v->next;
      free(v);
    }
  }
}

/* Buffers a send starting at head may carry: up to max, none of a write
 * with a timeout but the head's (alone: the head's only), and no more
 * once the byte budget is reached. */
static unsigned batchable(const ursa_write_req *head, unsigned max,
                          bool alone) {
  unsigned n = 0;
  size_t bytes = 0;
  for (const ursa_write_req *w = head;
       w && n < max && bytes < URSA_SEND_BUDGET &&
       (w == head || (!alone && w->op.nsqe == 1 && w->file_fd < 0));
       w = w->wnext) {
    n += w->iovcnt - w->cur;
    bytes += w->len - w->done;
  }
  return n < max ? n : max;
}

/* The write's bytes sent so far move its cursor on. */
static void advance(ursa_write_req *w, size_t n) {
  w->done += n;
  while (w->cur < w->iovcnt) {
    size_t left = w->iov[w->cur].iov_len - w->cur_off;
    if (n < left || (n == left && !n)) {
      w->cur_off += n;
      if (w->iov[w->cur].iov_len != w->cur_off) return;
      n = 0;
    } else {
      n -= left;
    }
    w->cur++;
    w->cur_off = 0;
  }
}

static void start_send(ursa_stream *s) {
  ursa_write_req *w = s->wq_head;
  if (!w || s->send_op.state != URSA__IDLE || s->handle.closing ||
      s->write_error)
    return;
  if (w->file_fd >= 0) { /* a file write goes alone, by steps */
    ursa__stream_file_step(s);
    return;
  }
  ursa_write_req *head = w;
  if (head->op.nsqe == 2 && !(head->op.flags & URSA__F_STARTED)) {
    head->op.flags |= URSA__F_STARTED; /* its timeout clock starts now */
    head->deadline_ms += s->loop->now_ms;
  }
  /* A write with a timeout goes alone: its linked timeout bounds this one
   * send, and a send carrying others would time them out with it.  Others
   * go up to write_batch buffers at a time (and the byte budget), as far
   * as the next write with a timeout.  On seqpacket every write is one
   * message, so there writes never share a sendmsg. */
  bool alone = head->op.nsqe == 2 || (s->flags & S_SEQPACKET);
  unsigned max = batchable(head, s->loop->write_batch, alone);
  /* One buffer goes from the stream's own iovec; several take a vector
   * from the loop's pool for as long as their send is out (none at hand
   * and no memory for one: one buffer at a time, but never a message
   * cut, which waits for memory instead). */
  struct iovec *iov = &s->iov1;
  if (max > 1 && (s->sendv = take_sendv(s->loop, max)) != NULL) {
    iov = s->sendv->iov;
    if (max > s->sendv->cap) max = s->sendv->cap;
  } else if (max > 1 && (s->flags & S_SEQPACKET)) {
    s->write_error = -ENOMEM;
    ursa__stream_fail_unbatched(s);
    return;
  } else {
    max = 1;
  }
  unsigned n = 0;
  size_t total = 0;
  for (; w && n < max && total < SEND_MAX &&
         (w == head || (!alone && w->op.nsqe == 1 && w->file_fd < 0));
       w = w->wnext) {
    size_t off = w->cur_off;
    for (unsigned i = w->cur; i < w->iovcnt && n < max && total < SEND_MAX;
         i++, off = 0) {
      size_t left = w->iov[i].iov_len - off;
      if (!left) continue;
      if (left > SEND_MAX - total) left = SEND_MAX - total;
      iov[n].iov_base = (char *)w->iov[i].iov_base + off;
      iov[n++].iov_len = left;
      total += left;
    }
    w->op.flags |= URSA__F_BATCHED;
  }
  s->batch = n;
  s->send_op.nsqe = head->op.nsqe;
  stream_submit(s, &s->send_op);
}

/* Queues an idle write request (its caller checked) of len bytes: of
 * buffers, or of a file (fd >= 0, from off). */
static int queue(ursa_write_req *w, ursa_stream *s, const struct iovec *iov,
                 unsigned iovcnt, size_t len, uint32_t timeout_ms,
                 ursa_write_cb cb, int fd, uint64_t off) {
  if (s->handle.closing) return -EBADF;
  if (s->flags & S_SHUT) return -EPIPE;
  if (s->write_error) return s->write_error;
  w->op.kind = URSA__KIND(write);
  w->op.nsqe = timeout_ms ? 2 : 1; /* 2: sent alone, with a linked timeout */
  w->op.flags = 0;
  w->op.state = URSA__QUEUED;
  w->stream = s;
  w->wnext = NULL;
  w->iov = iov;
  w->iovcnt = iovcnt;
  w->cur = 0;
  w->cur_off = 0;
  w->len = len;
  w->done = 0;
  advance(w, 0); /* past leading empty buffers */
  w->cb = cb;
  w->deadline_ms = timeout_ms; /* made absolute when it reaches the socket */
  w->file_fd = fd;
  w->file_off = off;
  w->file_cached = 0;
  w->fpipe = -1;
  w->chunk = NULL;
  w->chunk_len = w->chunk_sent = 0;
  w->fstep = 0;
  s->loop->active++;
  s->handle.nops++;
  s->wq_bytes += len;
  if (s->wq_tail)
    s->wq_tail->wnext = w;
  else
    s->wq_head = w;
  s->wq_tail = w;
  if (s->write_high && s->wq_bytes >= s->write_high) s->flags |= S_BACKED;
  start_send(s);
  ursa__stream_check_watermarks(s);
  return 0;
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
  w->one.iov_base = (void *)buf;
  w->one.iov_len = len;
  return queue(w, s, &w->one, 1, len, timeout_ms, cb, -1, 0);
}

int ursa_writev(ursa_write_req *w, ursa_stream *s, const struct iovec *iov,
                unsigned iovcnt, uint32_t timeout_ms, ursa_write_cb cb) {
  int r = check_stream(s, "ursa_writev");
  if (r) return r;
  if (!w || !iov || !cb)
    return ursa__invalid("ursa_writev: NULL %s",
                         !w ? "request" : !iov ? "iovec array" : "callback");
  if (!iovcnt || iovcnt > URSA_WRITE_BATCH_MAX)
    return ursa__invalid("ursa_writev: iovcnt %u is not from 1 to %d",
                         iovcnt, URSA_WRITE_BATCH_MAX);
  if ((s->flags & S_SEQPACKET) && iovcnt > s->loop->write_batch)
    return ursa__invalid("ursa_writev: a seqpacket message of %u buffers "
                         "is over the loop's write_batch (%u)", iovcnt,
                         s->loop->write_batch);
  size_t len = 0;
  for (unsigned i = 0; i < iovcnt; i++) {
    if (iov[i].iov_len && !iov[i].iov_base)
      return ursa__invalid("ursa_writev: buffer %u is NULL", i);
    if (iov[i].iov_len > SIZE_MAX - len)
      return ursa__invalid("ursa_writev: the buffers' total overflows");
    len += iov[i].iov_len;
  }
  if (!len) return ursa__invalid("ursa_writev: the buffers hold 0 bytes");
  if (w->op.state != URSA__IDLE) return -EBUSY;
  return queue(w, s, iov, iovcnt, len, timeout_ms, cb, -1, 0);
}

int ursa__stream_queue_file(ursa_write_req *w, ursa_stream *s, int fd,
                            uint64_t off, size_t len, ursa_write_cb cb) {
  return queue(w, s, NULL, 0, len, 0, cb, fd, off);
}

int ursa_stream_write_marks(ursa_stream *s, size_t high, size_t low,
                            ursa_writable_cb cb) {
  int r = check_stream(s, "ursa_stream_write_marks");
  if (r) return r;
  if (high && low >= high)
    return ursa__invalid("ursa_stream_write_marks: low %zu is not below "
                         "high %zu", low, high);
  if (high > UINT32_MAX)
    return ursa__invalid("ursa_stream_write_marks: high %zu is not below "
                         "4 GiB", high);
  s->write_high = (uint32_t)high;
  s->write_low = (uint32_t)(high ? low : 0);
  s->writable_cb = high ? cb : NULL;
  if (!high) s->flags &= ~S_BACKED;
  else if (s->wq_bytes >= high) s->flags |= S_BACKED;
  return 0;
}

int ursa_stream_writable(const ursa_stream *s) {
  return !s || !(s->flags & S_BACKED);
}

void ursa__stream_check_writable(ursa_stream *s) {
  if (!(s->flags & S_BACKED) || s->wq_bytes > s->write_low || s->handle.closing)
    return;
  s->flags &= ~S_BACKED;
  if (s->writable_cb) s->writable_cb(s);
}

static int write_cancel(ursa_loop *loop, ursa_op *op);

int ursa_write_cancel(ursa_write_req *w) {
  if (!w) return ursa__invalid("ursa_write_cancel: NULL request");
  if (w->op.state == URSA__IDLE) return -ENOENT;
  return write_cancel(w->stream->loop, &w->op);
}

int ursa_write_active(const ursa_write_req *w) {
  return w && w->op.state != URSA__IDLE;
}

size_t ursa_write_queue_size(const ursa_stream *s) {
  return s ? s->wq_bytes : 0;
}

static int write_cancel(ursa_loop *loop, ursa_op *op) {
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

static void send_prep(ursa_loop *loop, ursa_op *op) {
  ursa_stream *s = STREAM_OF(op, send_op);
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  if (s->flags & S_PIPE) { /* a pipe has no send; -1: no offset */
    if (s->batch == 1)
      io_uring_prep_write(sqe, s->fd, s->iov1.iov_base,
                          (unsigned)s->iov1.iov_len, (uint64_t)-1);
    else
      io_uring_prep_writev(sqe, s->fd, s->sendv->iov, s->batch, (uint64_t)-1);
  } else if (s->batch == 1 && op->nsqe == 1 && loop->zc_threshold &&
      !(s->flags & S_NO_ZC) &&
      (loop->used & URSA_FEAT_SEND_ZC) &&
      s->iov1.iov_len >= loop->zc_threshold) {
    io_uring_prep_send_zc(sqe, s->fd, s->iov1.iov_base, s->iov1.iov_len,
                          MSG_NOSIGNAL, 0);
    op->flags |= URSA__F_ZC;
  } else if (s->batch == 1) {
    io_uring_prep_send(sqe, s->fd, s->iov1.iov_base, s->iov1.iov_len,
                       MSG_NOSIGNAL);
  } else {
    struct msghdr *m = &s->sendv->msg;
    memset(m, 0, sizeof(*m));
    m->msg_iov = s->sendv->iov;
    m->msg_iovlen = s->batch;
    io_uring_prep_sendmsg(sqe, s->fd, m, MSG_NOSIGNAL);
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
  ursa__handle_op_end(s->loop, &s->handle, &w->op);
  w->cb(w, status);
}

/* Step 1, zero copy: the result comes first (MORE: a notification
 * follows) and the pages are the application's again only at the
 * notification.  Returns false while the send is not over yet (waiting
 * for its notification, or sent again as a copy); else true with *res the
 * send's result. */
static bool zc_result(ursa_loop *loop, ursa_stream *s, ursa_op *op,
                      int *res, uint32_t flags) {
  if (flags & IORING_CQE_F_NOTIF) {
    *res = s->zc_res;
  } else if (flags & IORING_CQE_F_MORE) {
    s->zc_res = *res;
    loop->stats.zc_sends++;
    return false;
  }
  op->flags &= (uint8_t)~URSA__F_ZC;
  if (*res == -ENOMEM || *res == -EOPNOTSUPP) {
    /* Pinning the pages went over RLIMIT_MEMLOCK, or the socket has no
     * zero-copy path: nothing was sent.  Send the same bytes the ordinary
     * way, and on this stream from now on; with a cancel or a close
     * pending they are cancelled instead, the stream whole. */
    s->flags |= S_NO_ZC;
    loop->stats.zc_refused++;
    if (!(op->flags & URSA__F_CANCEL) && !s->handle.closing) {
      ursa__op_resubmit(loop, op);
      return false;
    }
    *res = -ECANCELED;
  }
  return true;
}

/* Step 2: the bytes sent go to the send's writes (the marked head of the
 * queue) in order; the whole ones leave the queue for *done.  Returns how
 * many are whole. */
static unsigned take_sent(ursa_loop *loop, ursa_stream *s, size_t sent,
                          ursa_write_req **done) {
  ursa_write_req **tail = done;
  unsigned k = 0;
  loop->stats.bytes_out += sent;
  /* While reading is paused on our queue, the peer taking bytes is the
   * progress the read timeout watches. */
  if (s->flags & S_PAUSED) note_activity(s, loop->now_ms);
  while (sent && s->wq_head && (s->wq_head->op.flags & URSA__F_BATCHED)) {
    ursa_write_req *w = s->wq_head;
    size_t take = w->len - w->done;
    if (take > sent) take = sent;
    advance(w, take);
    s->wq_bytes -= take;
    sent -= take;
    if (w->done < w->len) break;
    unlink_write(s, NULL, w);
    *tail = w;
    tail = &w->wnext;
    k++;
  }
  return k;
}

/* Step 3, a send that failed or was stopped before its writes were whole:
 * moves the writes that fail onto *failed and returns their status.  A
 * send that put bytes out, or failed for any reason but a cancel, tears
 * the stream (nothing after can go); a clean cancel fails only what was
 * cancelled (or everything, when closing), and the rest is sent again. */
static int take_failed(ursa_stream *s, int status, ursa_write_req **failed) {
  ursa_write_req **tail = failed;
  bool torn = s->wq_head->done > 0 || status != -ECANCELED;
  if (torn && !s->write_error) s->write_error = status;
  ursa_write_req *prev = NULL;
  for (ursa_write_req *w = s->wq_head; w;) {
    ursa_write_req *next = w->wnext;
    bool batched = w->op.flags & URSA__F_BATCHED;
    if (torn || s->handle.closing ||
        (batched && (w->op.flags & URSA__F_CANCEL))) {
      unlink_write(s, prev, w);
      *tail = w;
      tail = &w->wnext;
    } else {
      prev = w;
    }
    w = next;
  }
  return status;
}

static void send_complete(ursa_loop *loop, ursa_op *op, int res,
                         uint32_t flags) {
  ursa_stream *s = STREAM_OF(op, send_op);
  if ((op->flags & URSA__F_ZC) && !zc_result(loop, s, op, &res, flags))
    return;
  bool stopped = (op->flags & URSA__F_CANCEL) || s->handle.closing;
  int err = timeout_status(op, res);
  s->batch = 0;
  give_sendv(s); /* the kernel is done with the iovecs */
  op_end(s, op);

  ursa_write_req *done = NULL, *failed = NULL;
  if (res > 0) take_sent(loop, s, (size_t)res, &done);
  /* The rest of the batch (still marked at the head): go on (a short
   * send), or fail. */
  bool rest = s->wq_head && (s->wq_head->op.flags & URSA__F_BATCHED);
  int fail_status = 0;
  if (rest && (res <= 0 || stopped))
    fail_status = take_failed(s, res < 0 ? err : -ECANCELED, &failed);
  /* Failed writes lose the mark when they finish; the rest lose it here.
   * A send's writes are the queue's head, so the walk ends at the first
   * write it did not carry: the send's own, never the whole queue. */
  for (ursa_write_req *w = s->wq_head;
       w && (w->op.flags & URSA__F_BATCHED); w = w->wnext)
    w->op.flags &= (uint8_t)~URSA__F_BATCHED;

  /* Step 4: what is left goes on before callbacks queue more behind it;
   * then the callbacks, done writes first. */
  start_send(s);
  ursa__stream_check_watermarks(s);
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
  ursa__stream_check_writable(s);
  ursa__stream_maybe_shutdown(s);
  maybe_finish_close(s);
}

URSA__OP_TYPE(send) = {
    .name = "send",
    .prep = send_prep,
    .complete = send_complete,
};

/* A write's result that came from ursa, not the kernel (cancelled while
 * queued, or failed by close). */
static void write_complete(ursa_loop *loop, ursa_op *op, int res,
                          uint32_t flags) {
  ursa_write_req *w = (ursa_write_req *)op;
  ursa_stream *s = w->stream;
  (void)loop;
  (void)flags;
  finish_write(s, w, res);
  start_send(s);
  ursa__stream_check_watermarks(s);
  ursa__stream_check_writable(s);
  ursa__stream_maybe_shutdown(s);
  maybe_finish_close(s);
}

URSA__OP_TYPE(write) = {
    .name = "write",
    .complete = write_complete,
    .cancel = write_cancel,
};
