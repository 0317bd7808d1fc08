/* internal.h - what ursa's layers share and callers never see. */
#ifndef URSA_INTERNAL_H
#define URSA_INTERNAL_H

#include "compat.h"
#include "ursa/ursa.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define URSA__HIDDEN __attribute__((visibility("hidden")))
#define URSA__LIKELY(x) __builtin_expect(!!(x), 1)
#define URSA__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define URSA__CONTAINER(ptr, type, member) \
  ((type *)((char *)(ptr)-offsetof(type, member)))

/* Operation kinds: the index into ursa__op_table. */
enum {
  URSA__OP_NONE = 0,
  URSA__OP_TIMER,
  URSA__OP_ACCEPT,
  URSA__OP_CONNECT,
  URSA__OP_RECV,
  URSA__OP_SEND,   /* a stream's send_op */
  URSA__OP_WRITE,  /* a write request: only its deferred result */
  URSA__OP_SHUTDOWN,
  URSA__OP_CLOSE_STREAM,
  URSA__OP_CLOSE_LISTENER,
  URSA__OP_DRECV,
  URSA__OP_DSEND,
  URSA__OP_CLOSE_DGRAM,
  URSA__OP_KINDS
};

/* Operation states. */
enum {
  URSA__IDLE = 0,  /* the caller's memory; nothing of ursa refers to it */
  URSA__WAITING,   /* on the loop's wait list for an SQE */
  URSA__INFLIGHT,  /* submitted: the kernel holds its user_data */
  URSA__PENDING,   /* result known, callback queued on the pending list */
  URSA__QUEUED,    /* a write behind another in its stream's queue */
  URSA__ARMED,     /* a timer in the loop's heap (timer.c) */
};

/* Operation flags. */
#define URSA__F_CANCEL 0x01    /* cancellation asked for */
#define URSA__F_TIMEOUT 0x02   /* armed with a linked timeout */
#define URSA__F_MULTISHOT 0x04 /* armed as multishot */
#define URSA__F_CANCELQ 0x08   /* on the cancel list */
#define URSA__F_BATCHED 0x10   /* a write the stream's send in flight carries */
#define URSA__F_STARTED 0x20   /* a write whose timeout clock runs */
#define URSA__F_ZC 0x40        /* a zero-copy send: a notification follows */
#define URSA__F_BUNDLE 0x80    /* a recv armed as a bundle */

typedef struct ursa__op_type {
  const char *name;
  /* Fills op->nsqe SQEs, which the caller made sure are free. */
  void (*prep)(ursa_loop *loop, ursa_op *op);
  /* Handles one completion (or a deferred result, with flags 0). */
  void (*complete)(ursa_loop *loop, ursa_op *op, int res, uint32_t flags);
} ursa__op_type;

extern const ursa__op_type ursa__op_table[URSA__OP_KINDS] URSA__HIDDEN;

/* One provided buffer ring.  Buffers go back in any order, so the ring's
 * entries no longer say which buffer follows which; head follows the kernel
 * (it takes entries in ring order, and completions come in that order) so
 * that a bundle's later buffers and a partly filled buffer can be found. */
typedef struct ursa__bufring {
  struct io_uring_buf_ring *br; /* NULL: not set up */
  size_t map_bytes;
  char *bufs;
  unsigned count;
  unsigned size;
  int mask;
  uint16_t bgid;
  bool inc;        /* incremental consumption: buffers are filled by parts */
  uint16_t head;   /* ring index of the entry the kernel takes next */
  unsigned off;    /* inc: bytes of the head entry's buffer already filled */
  uint16_t *kept;  /* per buffer: slices of it the application keeps */
  uint8_t *out;    /* per buffer: the kernel is done with it, not back yet */
} ursa__bufring;

struct ursa_loop {
  struct io_uring ring;
  uint32_t used;      /* URSA_FEAT_* in use */
  uint32_t disabled;  /* URSA_FEAT_* switched off by options */
  bool running;
  bool stop;
  int owner_pid; /* the process that made the ring: a forked child may not */
  uint64_t now_ms;
  uint64_t now_ns;       /* the same instant, for timer deadlines */
  ursa_timer *timers;    /* the heap's root: the nearest deadline */
  uint64_t timer_seq;    /* start order, breaking ties between deadlines */
  uint64_t active; /* ops not idle: the loop is alive while > 0 */
  unsigned handles; /* streams, listeners and datagram sockets not yet
                       called back from their close: close waits for 0 */
  unsigned write_batch;
  unsigned direct_files; /* slots in the registered file table, or 0 */
  unsigned zc_threshold; /* sends of at least this many bytes are SEND_ZC */
  unsigned direct_used;  /* slots held by direct streams or reserved by an
                            accept in flight: never above direct_files */

  ursa_op *wait_head, *wait_tail;     /* ops waiting for SQEs */
  ursa_op *cancel_head, *cancel_tail; /* ops whose cancel waits for an SQE */
  ursa_op *pend_head, *pend_tail;     /* results to call back */

  /* Provided buffer rings: rings[0] for messages (datagrams, seqpacket),
   * sring for byte streams: rings[1] when the kernel fills buffers by parts
   * (incremental consumption), else rings[0] too. */
  ursa__bufring rings[2];
  ursa__bufring *sring;
  unsigned buf_size;   /* of every buffer in either ring */
  ursa__bufring *lent_ring; /* the slice a read callback holds now: */
  int lent_bid;             /* ...its buffer, or -1 */
  bool lent_kept;           /* ...and that callback kept it */
  unsigned kept;       /* slices the application keeps */
  unsigned keep_max;

  ursa_stats stats;
};

/* ---- op.c ---- */
/* Makes op active: takes op->nsqe SQEs and preps it, or puts it on the wait
 * list.  Never fails. */
void ursa__op_submit(ursa_loop *loop, ursa_op *op) URSA__HIDDEN;
/* Submits an op again that is already active (multishot re-arm, continued
 * send), with the same guarantees. */
void ursa__op_resubmit(ursa_loop *loop, ursa_op *op) URSA__HIDDEN;
/* Asks for op to be cancelled, whatever state it is in.  Returns as
 * ursa_cancel(). */
int ursa__op_cancel(ursa_loop *loop, ursa_op *op) URSA__HIDDEN;
/* Queues res as op's result, delivered from the loop (not now). */
void ursa__op_defer(ursa_loop *loop, ursa_op *op, int res) URSA__HIDDEN;
/* Marks op idle again: the last thing before its callback. */
void ursa__op_done(ursa_loop *loop, ursa_op *op) URSA__HIDDEN;
/* Flushes the wait and cancel lists into the SQ while SQEs last. */
void ursa__flush_waiting(ursa_loop *loop) URSA__HIDDEN;
/* Runs queued results; returns how many. */
unsigned ursa__run_pending(ursa_loop *loop) URSA__HIDDEN;
/* Returns an SQE, submitting queued ones first if the SQ is full; never
 * NULL for callers that made sure of space with ursa__sq_reserve(). */
struct io_uring_sqe *ursa__get_sqe(ursa_loop *loop) URSA__HIDDEN;
/* Ensures n free SQEs, submitting if needed; false if the SQ stays full. */
bool ursa__sq_reserve(ursa_loop *loop, unsigned n) URSA__HIDDEN;
/* Fills one SQE closing fd, completing op: every handle's close. */
void ursa__prep_close(ursa_loop *loop, ursa_op *op, int fd) URSA__HIDDEN;
/* Fills a kernel timespec from milliseconds. */
void ursa__ms_to_ts(uint64_t ms, ursa_timespec *ts) URSA__HIDDEN;
_Static_assert(sizeof(ursa_timespec) == sizeof(struct __kernel_timespec) &&
                   offsetof(ursa_timespec, tv_nsec) ==
                       offsetof(struct __kernel_timespec, tv_nsec),
               "ursa_timespec has the kernel's layout");
static inline struct __kernel_timespec *ursa__kts(ursa_timespec *ts) {
  return (struct __kernel_timespec *)(void *)ts;
}

/* ---- timer.c ---- */
uint64_t ursa__clock_ns(void) URSA__HIDDEN;
/* Takes an armed timer out of the heap (its cancel). */
void ursa__timer_unarm(ursa_loop *loop, ursa_op *op) URSA__HIDDEN;
/* Nanoseconds until the nearest timer is due (0: due now), or -1 when no
 * timer is armed. */
int64_t ursa__timer_wait_ns(const ursa_loop *loop, uint64_t now_ns)
    URSA__HIDDEN;
/* Calls back every timer due at loop->now_ns; returns how many. */
unsigned ursa__run_timers(ursa_loop *loop) URSA__HIDDEN;
/* A stopped timer's deferred result. */
void ursa__timer_complete(ursa_loop *loop, ursa_op *op, int res,
                          uint32_t flags) URSA__HIDDEN;

/* Sets ursa_error_detail() and returns -EINVAL (or err). */
int ursa__invalid(const char *fmt, ...) URSA__HIDDEN
    __attribute__((format(printf, 1, 2)));
int ursa__refuse(int err, const char *fmt, ...) URSA__HIDDEN
    __attribute__((format(printf, 2, 3)));

/* ---- probe.c ---- */
/* Sets up loop->ring per opts, dropping refused flags; fills used. */
int ursa__ring_setup(ursa_loop *loop, const ursa_loop_options *opts)
    URSA__HIDDEN;

/* ---- bufring.c ---- */
/* Registers rings[0] (and rings[1] when incremental consumption is used). */
int ursa__bufring_init(ursa_loop *loop, unsigned count, unsigned size,
                       uint32_t enable) URSA__HIDDEN;
void ursa__bufring_free(ursa_loop *loop) URSA__HIDDEN;
static inline char *ursa__buf_addr(const ursa__bufring *r, unsigned bid) {
  return r->bufs + (size_t)bid * r->size;
}
/* Gives buffer bid back to the kernel. */
void ursa__buf_recycle(ursa_loop *loop, ursa__bufring *r, unsigned bid)
    URSA__HIDDEN;

/* The bytes of one completion that carried buffers, handed out as slices
 * that never cross a buffer's end:
 *   ursa__slices_begin(); while (ursa__slices_next()) { use; ursa__slice_done(); }
 * Each slice is lent (ursa_buf_keep() may keep it) until ursa__slice_done().
 * A plain completion is one slice of one buffer; a bundle spans several
 * buffers; on an incremental ring a slice may be part of a buffer. */
typedef struct ursa__slices {
  ursa__bufring *r;
  unsigned left;    /* bytes not handed out yet */
  unsigned bid;     /* the current slice: its buffer, */
  char *data;       /* ...where it starts */
  unsigned len;     /* ...and its length */
  bool first;
  bool more;        /* IORING_CQE_F_BUF_MORE: the last buffer stays filling */
} ursa__slices;
/* Starts on a completion with IORING_CQE_F_BUFFER; res is its result and
 * bundle says how its operation was armed.  Returns false when the kernel
 * and ursa disagree on which buffer came next (never seen; the stream fails
 * with -EIO rather than hand out wrong bytes). */
bool ursa__slices_begin(ursa_loop *loop, ursa__bufring *r, ursa__slices *it,
                        int res, uint32_t cflags, bool bundle) URSA__HIDDEN;
bool ursa__slices_next(ursa_loop *loop, ursa__slices *it) URSA__HIDDEN;
void ursa__slice_done(ursa_loop *loop, ursa__slices *it) URSA__HIDDEN;
/* Hands back every slice left without using it. */
void ursa__slices_drop(ursa_loop *loop, ursa__slices *it) URSA__HIDDEN;

/* ---- stream.c / listener.c ---- */
void ursa__accept_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__accept_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__lclose_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__lclose_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__connect_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__connect_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__recv_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__recv_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__send_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__send_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__write_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__shutdown_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__shutdown_complete(ursa_loop *, ursa_op *, int, uint32_t)
    URSA__HIDDEN;
void ursa__sclose_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__sclose_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
int ursa__check_sockaddr(const struct sockaddr *addr, socklen_t len,
                         const char *fn) URSA__HIDDEN;
/* Cancels a write (the SEND kind of ursa_cancel). */
int ursa__write_cancel(ursa_loop *loop, ursa_op *op) URSA__HIDDEN;
void ursa__drecv_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__drecv_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__dsend_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__dsend_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__dclose_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__dclose_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
/* Prepares a stream for an open fd (accept, connect, open). */
/* Empties a direct-descriptor slot at once (a connection nobody took). */
void ursa__direct_release(ursa_loop *loop, int slot) URSA__HIDDEN;
/* fd is a direct-descriptor slot when direct is set. */
void ursa__stream_init(ursa_loop *loop, ursa_stream *s, int fd,
                       bool seqpacket, bool direct, bool local) URSA__HIDDEN;

#endif /* URSA_INTERNAL_H */
