/* stream_file.c - file writes (ursa_write_file): a range of a file sent
 * in the write queue's order.  The head file write runs as steps, one op
 * of the stream's send_op (kind "fsend") in flight at a time:
 *   - cached, and the socket a descriptor of the stream's own: sendfile(2)
 *     here, no copy, up to ROUND_BYTES a step; a full socket (EAGAIN) or
 *     the round's bytes spent: a poll for writability, then on;
 *   - otherwise: a read through the ring (the pool on epoll) into the
 *     request's CHUNK buffer, then sends of it;
 *   - with URSA_FEAT_FILE_SPLICE (opt-in): a splice of the file into a pipe
 *     of the loop's, then splices of the pipe into the socket, each one
 *     IORING_OP_SPLICE (which the kernel runs in an io-wq worker); a
 *     write that finds every pipe taken goes by the two ways above.
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

/* The loop's pipes for spliced writes: made as needed, up to PIPES_MAX,
 * each held by the head file write of one stream while that runs, so the
 * pages a loop's pipes hold are bounded by PIPES_MAX x PIPE_BYTES. */
#define PIPES_MAX 16
#define PIPE_BYTES (256u << 10)

enum { F_POLL = 1, F_READ, F_SEND, F_SPLICE_IN, F_SPLICE_OUT };

struct ursa__pipes {
  int fd[PIPES_MAX][2]; /* -1: not made */
  unsigned cap[PIPES_MAX];
  bool busy[PIPES_MAX];
};

void ursa__stream_pipes_free(ursa_loop *loop) {
  struct ursa__pipes *p = loop->pipes;
  if (!p) return;
  for (int i = 0; i < PIPES_MAX; i++)
    if (p->fd[i][0] >= 0) {
      close(p->fd[i][0]);
      close(p->fd[i][1]);
    }
  free(p);
  loop->pipes = NULL;
}

/* A free pipe of the loop's, made if need be; -1 when all PIPES_MAX are
 * busy (or none can be made). */
static int pipe_take(ursa_loop *loop) {
  struct ursa__pipes *p = loop->pipes;
  if (!p) {
    if (!(p = loop->pipes = malloc(sizeof(*p)))) return -1;
    for (int i = 0; i < PIPES_MAX; i++) {
      p->fd[i][0] = p->fd[i][1] = -1;
      p->busy[i] = false;
    }
  }
  for (int i = 0; i < PIPES_MAX; i++) {
    if (p->busy[i]) continue;
    if (p->fd[i][0] < 0) {
      /* Non-blocking: a splice out of it never waits on an empty pipe,
       * and one into it never on a full one (it is empty then). */
      if (pipe2(p->fd[i], O_CLOEXEC | O_NONBLOCK) < 0) return -1;
      int cap = fcntl(p->fd[i][1], F_SETPIPE_SZ, (int)PIPE_BYTES);
      if (cap < 0) cap = fcntl(p->fd[i][1], F_GETPIPE_SZ);
      p->cap[i] = cap > 0 ? (unsigned)cap : 4096u;
    }
    p->busy[i] = true;
    return i;
  }
  return -1;
}

/* The write's pipe back to the pool; one that still holds bytes (a write
 * that failed or was cancelled) is closed instead, its pages with it. */
static void pipe_give(ursa_loop *loop, ursa_write_req *w) {
  struct ursa__pipes *p = loop->pipes;
  int i = w->fpipe;
  if (i < 0) return;
  w->fpipe = -1;
  p->busy[i] = false;
  if (w->chunk_sent < w->chunk_len) {
    close(p->fd[i][0]);
    close(p->fd[i][1]);
    p->fd[i][0] = p->fd[i][1] = -1;
  }
}

/* sendfile and splice have no flag for it: the socket is made
 * non-blocking once (io_uring's sends and receives on it wait by poll all
 * the same). */
static int make_nonblocking(ursa_stream *s) {
  if (s->flags & S_NONBLOCK) return 0;
  int fl = fcntl(s->fd, F_GETFL);
  if (fl < 0 || fcntl(s->fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
  s->flags |= S_NONBLOCK;
  return 0;
}

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
  pipe_give(s->loop, w);
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
  /* Spliced: a pipe for as long as the write runs, if one is free. */
  if (w->fpipe < 0 && !w->done && !w->chunk &&
      (s->loop->used & URSA_FEAT_FILE_SPLICE) &&
      !(s->flags & (S_DIRECT | S_PIPE)) &&
      (w->fpipe = (int8_t)pipe_take(s->loop)) >= 0) {
    int r = make_nonblocking(s);
    if (r) {
      end(s, w, r);
      return;
    }
  }
  while (w->done < w->len) {
    if (w->chunk_sent < w->chunk_len) {
      submit(s, w, w->fpipe >= 0 ? F_SPLICE_OUT : F_SEND);
      return;
    }
    if (w->fpipe >= 0) {
      submit(s, w, F_SPLICE_IN);
      return;
    }
    size_t left = w->len - w->done;
    size_t n = left < ROUND_BYTES ? left : ROUND_BYTES;
    /* A range found cached is not asked about again while it is sent
     * (cachestat walks every page: 9.7% of ursa-http's samples at 16 MiB
     * files; a partial send would ask about the next 1 MiB anew). */
    if (!(s->flags & S_DIRECT) && w->file_off >= w->file_cached &&
        cached(w->file_fd, w->file_off, n))
      w->file_cached = w->file_off + n;
    if (w->file_off < w->file_cached) {
      if (!budget) { /* the round's share: the poll answers at once */
        submit(s, w, F_POLL);
        return;
      }
      int e = make_nonblocking(s);
      if (e) {
        end(s, w, e);
        return;
      }
      if (n > w->file_cached - w->file_off) n = w->file_cached - w->file_off;
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
  } else if (w->fstep == F_SPLICE_IN) {
    size_t left = w->len - w->done;
    unsigned cap = s->loop->pipes->cap[w->fpipe];
    io_uring_prep_splice(sqe, w->file_fd, (int64_t)w->file_off,
                         s->loop->pipes->fd[w->fpipe][1], -1,
                         left < cap ? (unsigned)left : cap, 0);
  } else if (w->fstep == F_SPLICE_OUT) {
    io_uring_prep_splice(sqe, s->loop->pipes->fd[w->fpipe][0], -1, s->fd, -1,
                         w->chunk_len - w->chunk_sent, SPLICE_F_NONBLOCK);
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
  } else if (res == -EAGAIN && w->fstep == F_SPLICE_OUT) {
    submit(s, w, F_POLL); /* the socket is full */
  } else if (res < 0) {
    end(s, w, res);
  } else if (w->fstep == F_READ || w->fstep == F_SPLICE_IN) {
    if (res == 0) {
      end(s, w, -ENODATA);
    } else {
      w->chunk_len = (uint32_t)res;
      w->chunk_sent = 0;
      w->file_off += (uint64_t)res;
      ursa__stream_file_step(s);
    }
  } else if (w->fstep == F_SEND || w->fstep == F_SPLICE_OUT) {
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
