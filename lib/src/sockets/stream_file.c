/* stream_file.c - file writes (ursa_write_file): a range of a file sent
 * in the write queue's order.  The head file write runs as steps, one op
 * of the stream's send_op (kind "fsend") in flight at a time:
 *   - cached, and the socket a descriptor of the stream's own: sendfile(2)
 *     here, no copy, up to ROUND_BYTES a step; a full socket (EAGAIN) or
 *     the round's bytes spent: a poll for writability, then on;
 *   - otherwise: a read through the ring (the pool on epoll) into the
 *     request's CHUNK buffer, then sends of it.
 * The write is marked BATCHED while it runs, as a send's writes are, so a
 * close or a cancel stops its op and it fails when that op returns. */
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <unistd.h>

URSA__OP_DECLARE(fsend);

#define CHUNK (128u << 10)
#define ROUND_BYTES (1u << 20)

enum { F_POLL = 1, F_READ, F_SEND };

/* cachestat(2) is missing before 6.5 (or refused by a filter): then every
 * file write reads through its buffer. */
static int no_cachestat;

/* Every page of [off, off + len) of fd is in the page cache. */
static bool cached(int fd, uint64_t off, uint64_t len) {
  if (no_cachestat) return false;
  struct ursa__cachestat_range r = {off, len};
  struct ursa__cachestat c;
  if (syscall(URSA__NR_CACHESTAT, fd, &r, &c, 0) != 0) {
    if (errno == ENOSYS || errno == EPERM)
      __atomic_store_n(&no_cachestat, 1, __ATOMIC_RELAXED);
    return false;
  }
  uint64_t pages = (off + len + 4095) / 4096 - off / 4096;
  return c.nr_cache >= pages;
}

int ursa_write_file(ursa_write_req *w, ursa_stream *s, int fd, int64_t off,
                    size_t len, ursa_write_cb cb) {
  int r = check_stream(s, "ursa_write_file");
  if (r) return r;
  if (!w || !cb)
    return ursa__invalid("ursa_write_file: NULL %s",
                         !w ? "request" : "callback");
  if (fd < 0)
    return ursa__invalid("ursa_write_file: file descriptor %d is negative",
                         fd);
  if (off < 0)
    return ursa__invalid("ursa_write_file: offset %lld is negative",
                         (long long)off);
  if (!len) return ursa__invalid("ursa_write_file: length is 0");
  if (w->op.state != URSA__IDLE) return -EBUSY;
  return ursa__stream_queue_file(w, s, fd, (uint64_t)off, len, cb);
}

static void submit(ursa_stream *s, ursa_write_req *w, int step) {
  w->fstep = (uint8_t)step;
  s->send_op.kind = URSA__KIND(fsend);
  s->send_op.nsqe = 1;
  stream_submit(s, &s->send_op);
}

/* The head file write is over: off the queue, its callback deferred (a
 * step may run inside the call that queued it), the stream torn when it
 * failed part-way or for anything but a clean cancel. */
static void end(ursa_stream *s, ursa_write_req *w, int status) {
  w->op.flags &= (uint8_t)~URSA__F_BATCHED;
  free(w->chunk);
  w->chunk = NULL;
  w->chunk_len = w->chunk_sent = 0;
  ursa__stream_unlink_head(s);
  if (status < 0 && (status != -ECANCELED || w->done > 0)) {
    if (!s->write_error) s->write_error = status;
    ursa__stream_fail_unbatched(s);
  }
  ursa__op_defer(s->loop, &w->op, status);
}

/* Bytes of the write that reached the socket. */
static void sent(ursa_stream *s, ursa_write_req *w, size_t n) {
  w->done += n;
  s->wq_bytes -= n;
  s->loop->stats.bytes_out += n;
}

void ursa__stream_file_step(ursa_stream *s) {
  ursa_write_req *w = s->wq_head;
  w->op.flags |= URSA__F_BATCHED;
  if (w->op.flags & URSA__F_CANCEL) {
    end(s, w, -ECANCELED);
    return;
  }
  size_t budget = ROUND_BYTES;
  while (w->done < w->len) {
    if (w->chunk_sent < w->chunk_len) {
      submit(s, w, F_SEND);
      return;
    }
    size_t left = w->len - w->done;
    size_t n = left < ROUND_BYTES ? left : ROUND_BYTES;
    if (!(s->flags & S_DIRECT) && cached(w->file_fd, w->file_off, n)) {
      if (!budget) { /* the round's share: the poll answers at once */
        submit(s, w, F_POLL);
        return;
      }
      /* sendfile has no flag for it: the socket is made non-blocking once
       * (io_uring's sends and receives on it wait by poll all the same). */
      if (!(s->flags & S_NONBLOCK)) {
        int fl = fcntl(s->fd, F_GETFL);
        if (fl < 0 || fcntl(s->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
          end(s, w, -errno);
          return;
        }
        s->flags |= S_NONBLOCK;
      }
      if (n > budget) n = budget;
      off_t o = (off_t)w->file_off;
      if (s->loop->be->caps & URSA__BE_COUNTS_SYSCALLS) s->loop->stats.enters++;
      ssize_t r = sendfile(s->fd, w->file_fd, &o, n);
      if (r > 0) {
        w->file_off = (uint64_t)o;
        sent(s, w, (size_t)r);
        budget -= (size_t)r;
        continue;
      }
      if (r == 0) {
        end(s, w, -ENODATA); /* the file ended before off + len */
        return;
      }
      if (errno == EAGAIN) {
        submit(s, w, F_POLL);
        return;
      }
      if (errno == EINTR) continue;
      end(s, w, errno == EPIPE ? -EPIPE : -errno);
      return;
    }
    if (!w->chunk && !(w->chunk = malloc(CHUNK))) {
      end(s, w, -ENOMEM);
      return;
    }
    submit(s, w, F_READ);
    return;
  }
  end(s, w, 0);
}

static void fsend_prep(ursa_loop *loop, ursa_op *op) {
  ursa_stream *s = STREAM_OF(op, send_op);
  ursa_write_req *w = s->wq_head;
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  if (w->fstep == F_POLL) {
    io_uring_prep_poll_add(sqe, s->fd, POLLOUT);
    set_socket(s, sqe);
  } else if (w->fstep == F_READ) {
    size_t left = w->len - w->done;
    io_uring_prep_read(sqe, w->file_fd, w->chunk,
                       left < CHUNK ? (unsigned)left : CHUNK, w->file_off);
  } else if (s->flags & S_PIPE) {
    io_uring_prep_write(sqe, s->fd, w->chunk + w->chunk_sent,
                        w->chunk_len - w->chunk_sent, (uint64_t)-1);
  } else {
    io_uring_prep_send(sqe, s->fd, w->chunk + w->chunk_sent,
                       w->chunk_len - w->chunk_sent, MSG_NOSIGNAL);
    set_socket(s, sqe);
  }
  io_uring_sqe_set_data(sqe, op);
}

static void fsend_complete(ursa_loop *loop, ursa_op *op, int res,
                           uint32_t flags) {
  ursa_stream *s = STREAM_OF(op, send_op);
  ursa_write_req *w = s->wq_head;
  (void)flags;
  bool stopped = (op->flags & URSA__F_CANCEL) || s->handle.closing ||
                 (w->op.flags & URSA__F_CANCEL);
  op_end(s, op);
  op->kind = URSA__KIND(send);
  if (stopped) {
    end(s, w, -ECANCELED);
  } else if (res < 0) {
    end(s, w, res);
  } else if (w->fstep == F_READ) {
    if (res == 0) {
      end(s, w, -ENODATA);
    } else {
      w->chunk_len = (uint32_t)res;
      w->chunk_sent = 0;
      w->file_off += (uint64_t)res;
      ursa__stream_file_step(s);
    }
  } else if (w->fstep == F_SEND) {
    w->chunk_sent += (uint32_t)res;
    sent(s, w, (size_t)res);
    if (w->chunk_sent == w->chunk_len) w->chunk_len = w->chunk_sent = 0;
    ursa__stream_file_step(s);
  } else {
    ursa__stream_file_step(s);
  }
  (void)loop;
  ursa__stream_check_watermarks(s);
  ursa__stream_check_writable(s);
  maybe_finish_close(s);
}

URSA__OP_TYPE(fsend) = {
    .name = "fsend",
    .prep = fsend_prep,
    .complete = fsend_complete,
};
