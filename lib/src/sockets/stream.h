/* stream.h - what the stream files (stream.c: open, connect, shutdown,
 * close; stream_read.c: receive, read timeout, watermarks; stream_write.c:
 * the write queue and its sends) share.  Private to the socket layer. */
#ifndef URSA_STREAM_H
#define URSA_STREAM_H

#include "sock.h"

/* Stream flags. */
#define S_OPEN 0x01
#define S_READING 0x02
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
#define S_BACKED 0x4000   /* the write queue passed write_high: not writable */
#define S_NONBLOCK 0x8000 /* O_NONBLOCK set, for a file write's sendfile */
#define S_PIPE 0x10000    /* a pipe, FIFO, terminal or device: READ/WRITE */
#define S_PIPE_ONCE 0x20000 /* a device without poll: one read at a time */
#define S_PIPE_RING 0x40000 /* reads into the pipe ring */

#define STREAM_OF(op, member) URSA__CONTAINER(op, ursa_stream, member)

/* A connect in progress: held from ursa_connect() to its callback, so that
 * a stream carries no address room once connected. */
struct ursa__connecting {
  ursa_op op;
  ursa_stream *s;
  ursa_connect_cb cb;
  ursa_timespec ts; /* a linked timeout's time */
  socklen_t len;
  struct sockaddr_storage peer;
};

/* A read timeout's state, made by the first ursa_read_timeout(): most
 * streams never have one. */
struct ursa__readtimer {
  ursa_timer t;
  uint64_t last_read_ms; /* the last sign of life (a receive, a send taken
                            while paused) */
  uint32_t ms;           /* the timeout; 0: off */
};

/* Notes a sign of life for the read timeout. */
static inline void note_activity(ursa_stream *s, uint64_t now_ms) {
  if (s->read_timer) s->read_timer->last_read_ms = now_ms;
}

struct ursa__sendv {
  struct ursa__sendv *next; /* the loop's free list */
  unsigned cap;             /* iovecs: SENDV_SMALL or write_batch */
  struct msghdr msg;
  struct iovec iov[];
};

/* A send of a few writes takes a small vector; one with more queued
 * behind it a vector of write_batch, so that a stream with a short queue
 * holds 200 bytes while sending, not 16 KiB. */
#define SENDV_SMALL 8u

/* Points sqe at the stream's socket: its descriptor, or its direct slot. */
static inline void set_socket(const ursa_stream *s, struct io_uring_sqe *sqe) {
  if (s->flags & S_DIRECT) {
    sqe->fd = s->slot;
    sqe->flags |= IOSQE_FIXED_FILE;
  }
}

/* Starts one of the stream's own ops, counting it against close. */
static inline void stream_submit(ursa_stream *s, ursa_op *op) {
  ursa__handle_submit(s->loop, &s->handle, op);
}

/* Called after each op of the stream ends: the close waits for the last. */
static inline void maybe_finish_close(ursa_stream *s) {
  ursa__handle_maybe_close(&s->handle);
}

static inline void op_end(ursa_stream *s, ursa_op *op) {
  ursa__handle_op_end(s->loop, &s->handle, op);
}

static inline int check_stream(const ursa_stream *s, const char *fn) {
  if (!s) return ursa__invalid("%s: NULL stream", fn);
  if (!(s->flags & S_OPEN) || !s->loop)
    return ursa__invalid("%s: stream is not open", fn);
  return 0;
}

/* A linked timeout shows as -ECANCELED on the op it guards, or as -EINTR
 * when the kernel ran the op in a worker thread that blocked (a connect
 * to a Unix listener with a full backlog) and interrupted it; a cancel of
 * such an op shows as -EINTR too. */
static inline int timeout_status(const ursa_op *op, int res) {
  if (res != -ECANCELED && res != -EINTR) return res;
  if (op->flags & URSA__F_CANCEL) return -ECANCELED;
  if (op->flags & URSA__F_TIMEOUT) return -ETIMEDOUT;
  return res;
}

/* stream_read.c: pauses or resumes receiving as the write queue crosses
 * the watermarks. */
void ursa__stream_check_watermarks(ursa_stream *s) URSA__HIDDEN;
/* stream_write.c: after the queue shrank, from the loop: a stream past
 * its write mark's high that has drained to its low is writable again,
 * and its callback runs. */
void ursa__stream_check_writable(ursa_stream *s) URSA__HIDDEN;
/* stream_write.c: submits the shutdown once the queue is empty. */
void ursa__stream_maybe_shutdown(ursa_stream *s) URSA__HIDDEN;
/* A direct stream's slot installed as a plain descriptor, the caller's to
 * close: the fd, -EOPNOTSUPP without IORING_OP_FIXED_FD_INSTALL (Linux
 * 6.8; remembered by the loop), or another -errno. */
int ursa__stream_install_fd(const ursa_stream *s) URSA__HIDDEN;
/* stream_write.c: fails (from the pending list) every queued write the
 * kernel is not reading; for close. */
void ursa__stream_fail_unbatched(ursa_stream *s) URSA__HIDDEN;
/* stream_write.c: queues a file write (ursa_write_file() checked it). */
int ursa__stream_queue_file(ursa_write_req *w, ursa_stream *s, int fd,
                            uint64_t off, size_t len,
                            ursa_write_cb cb) URSA__HIDDEN;
/* stream_write.c: takes the head write off the queue. */
void ursa__stream_unlink_head(ursa_stream *s) URSA__HIDDEN;
/* stream_file.c: runs the head write, a file write, on (send_op idle). */
void ursa__stream_file_step(ursa_stream *s) URSA__HIDDEN;

#endif /* URSA_STREAM_H */
