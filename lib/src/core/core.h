/* core.h - the core layer (errors, the ring and its loop, operations,
 * timers): what every layer above it builds on.  It includes nothing of
 * ursa's but the public header and the compat constants. */
#ifndef URSA_CORE_H
#define URSA_CORE_H

#include "compat.h"
#include "ursa/ursa.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* the layer tests are C++ */
#define URSA__STATIC_ASSERT static_assert
#else
#define URSA__STATIC_ASSERT _Static_assert
#endif

#define URSA__HIDDEN __attribute__((visibility("hidden")))
#define URSA__LIKELY(x) __builtin_expect(!!(x), 1)
#define URSA__UNLIKELY(x) __builtin_expect(!!(x), 0)

#define URSA__CONTAINER(ptr, type, member) \
  ((type *)((char *)(ptr)-offsetof(type, member)))

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

/* An operation kind: what a completion of an op of this kind runs.  Each
 * kind is a row that the layer owning it defines next to its code, with
 * URSA__OP_TYPE(id); the linker gathers the rows into one table (the
 * "ursa_ops" section), and an op's kind is its row's index there
 * (URSA__KIND(id)).  The core numbers none of them: adding a kind touches
 * only the file that defines it.  Every row is 32 bytes and 32-aligned,
 * so the section is an array without gaps. */
typedef struct ursa__op_type {
  const char *name;
  /* Fills op->nsqe SQEs, which the caller made sure are free. */
  void (*prep)(ursa_loop *loop, ursa_op *op);
  /* Handles one completion (or a deferred result, with flags 0). */
  void (*complete)(ursa_loop *loop, ursa_op *op, int res, uint32_t flags);
  /* ursa_cancel() of this kind, when it is not ursa__op_cancel(). */
  int (*cancel)(ursa_loop *loop, ursa_op *op);
} __attribute__((aligned(32))) ursa__op_type;
URSA__STATIC_ASSERT(sizeof(ursa__op_type) == 32, "op rows pack the section");

/* Defines (or, with extern, declares) the row of kind id. */
#define URSA__OP_TYPE(id)                                       \
  const ursa__op_type ursa__op_##id                             \
      __attribute__((section("ursa_ops"), used)) URSA__HIDDEN
#define URSA__OP_DECLARE(id) extern const ursa__op_type ursa__op_##id URSA__HIDDEN
/* The table, as the linker bounds it. */
extern const ursa__op_type __start_ursa_ops[] URSA__HIDDEN;
extern const ursa__op_type __stop_ursa_ops[] URSA__HIDDEN;
/* The kind number an op of kind id carries in op->kind. */
#define URSA__KIND(id) ((uint8_t)(&ursa__op_##id - __start_ursa_ops))
static inline const ursa__op_type *ursa__op_type_of(const ursa_op *op) {
  return &__start_ursa_ops[op->kind];
}
static inline unsigned ursa__op_kinds(void) {
  return (unsigned)(__stop_ursa_ops - __start_ursa_ops);
}

/* The core's own kinds. */
URSA__OP_DECLARE(timer);
URSA__OP_DECLARE(post_wake);

/* A completion posted into this ring by another loop's request (a
 * hand-off's MSG_RING: user_data has URSA__UD_ARRIVE); set by the layer
 * that sends such requests before it sends one. */
typedef void (*ursa__arrive_fn)(ursa_loop *loop, ursa_op *op, int res,
                                uint32_t flags);
void ursa__set_arrive(ursa__arrive_fn fn) URSA__HIDDEN;
/* Runs one MSG_RING data message without a ring of the caller's
 * (URSA_FEAT_SYNC_MSG_RING): 0 or -errno (-EINVAL for a NULL sqe where the
 * kernel has it, -EBADF for the -1 descriptor where it does not). */
int ursa__sync_msg_ring(const struct io_uring_sqe *sqe) URSA__HIDDEN;
/* Unmaps the loop's wait region, if any (after the ring is gone). */
void ursa__reg_wait_free(ursa_loop *loop) URSA__HIDDEN;
void ursa__arrive(ursa_loop *loop, uint64_t ud, int res, uint32_t flags)
    URSA__HIDDEN;

/* user_data values that are not ops (ops are pointers, never this small):
 * a wake-up another ring's MSG_RING posted into this one.  A MSG_RING this
 * loop sent carries the target loop's address with bit 0 set. */
#define URSA__UD_WAKE 2u
#define URSA__UD_SENT_WAKE 1u
/* A hand-off's arrival: its op's address with bit 2 set, so that the loop
 * need not read the op (another thread's memory) to know its kind. */
#define URSA__UD_ARRIVE 4u
/* The one SQE the backend's run_now waits for; never reaches dispatch. */
#define URSA__UD_NOW 16u

struct ursa__bufs;
struct ursa__ep;

/* A heap of deadlines (timer.c): its root is the nearest. */
typedef struct ursa__heap {
  struct ursa__hnode *root;
  uint64_t seq; /* insertions so far */
} ursa__heap;

/* One completion, as the loop dispatches it. */
typedef struct ursa__cqe {
  uint64_t ud;
  int32_t res;
  uint32_t flags;
} ursa__cqe;

/* The backend seam: the layers above prepare io_uring SQEs and handle
 * CQEs; a backend takes the one and gives back the other.  io_uring hands
 * them to the kernel; epoll runs them itself (epoll.c). */
typedef struct ursa__backend {
  const char *name;
  /* Free SQEs without submitting. */
  unsigned (*sq_space)(ursa_loop *loop);
  /* The next SQE; the caller made sure one is free. */
  struct io_uring_sqe *(*get_sqe)(ursa_loop *loop);
  /* Hands queued SQEs over without waiting. */
  void (*submit)(ursa_loop *loop);
  /* Submits, then waits for a completion up to wait_ns (-1: no bound,
   * 0: does not wait).  0 or a negative errno (-EINTR, -ETIME: no harm). */
  int (*enter)(ursa_loop *loop, int64_t wait_ns);
  /* Moves up to max completions into out; returns how many. */
  unsigned (*reap)(ursa_loop *loop, ursa__cqe *out, unsigned max);
  /* Registers a provided buffer ring (the kernel ABI's layout) as group
   * bgid; inc: filled by parts.  0 or a negative errno. */
  int (*buf_ring_register)(ursa_loop *loop, struct io_uring_buf_ring *br,
                           unsigned entries, uint16_t bgid, bool inc);
  void (*buf_ring_unregister)(ursa_loop *loop, uint16_t bgid);
  void (*free)(ursa_loop *loop);
  unsigned caps; /* URSA__BE_* */
  /* What only some backends have: NULL where absent. */
  /* The descriptor another loop's MSG_RING names to reach this one. */
  int (*ring_fd)(const ursa_loop *loop);
  /* Registers a sparse table of n direct descriptors; 0 or -errno. */
  int (*files_register)(ursa_loop *loop, unsigned n);
  /* Empties one slot of that table. */
  void (*files_clear)(ursa_loop *loop, unsigned slot);
  /* Registers n buffers for fixed reads and writes (the kernel pins
   * them), and drops them; 0 or -errno. */
  int (*buffers_register)(ursa_loop *loop, const struct iovec *iov,
                          unsigned n);
  void (*buffers_unregister)(ursa_loop *loop);
  /* Runs one SQE, filled by prep, to its completion now and returns its
   * result; completions that come meanwhile wait for the next reap.  On
   * the loop's thread (a callback may call it). */
  int (*run_now)(ursa_loop *loop,
                 void (*prep)(struct io_uring_sqe *sqe, void *arg), void *arg);
  /* At a close and at the last release: hands every completion still
   * queued that belongs to another loop's request (a hand-off's arrival,
   * a wake-up this loop sent) to its handler, and drops the rest. */
  void (*drain)(ursa_loop *loop);
  /* Before a close: submits and reaps until every MSG_RING this loop sent
   * has completed (each holds a reference on its target). */
  void (*settle)(ursa_loop *loop);
  /* Fills the backend's own counts into ursa_loop_stats()'s answer. */
  void (*stats)(const ursa_loop *loop, ursa_stats *out);
  /* The layers will read and write fd, a pipe, FIFO, terminal or device
   * they made non-blocking, as a stream by READ, READ_MULTISHOT, WRITE
   * and WRITEV: a backend that runs those itself waits on its readiness
   * rather than a thread (until the descriptor's CLOSE).  0 or -errno. */
  int (*stream_fd)(ursa_loop *loop, int fd);
} ursa__backend;

/* The backend reads a blocking file (the post eventfd) as an operation;
 * without it the file is polled, then read when ready. */
#define URSA__BE_READS_FILES 0x1u
/* stats.enters counts every system call the backend makes (else only its
 * io_uring_enter calls), so work the layers do by system call counts. */
#define URSA__BE_COUNTS_SYSCALLS 0x2u

extern const ursa__backend ursa__uring_backend URSA__HIDDEN;
extern const ursa__backend ursa__epoll_backend URSA__HIDDEN;

struct ursa_loop {
  const ursa__backend *be;
  ursa_backend backend; /* URSA_BACKEND_URING or _EPOLL */
  struct io_uring ring; /* io_uring only */
  struct ursa__reg_wait *wait_region; /* URSA_FEAT_REG_WAIT: the page the
                                         kernel reads wait arguments from */
  struct ursa__ep *ep;  /* epoll only */
  uint32_t used;      /* URSA_FEAT_* in use */
  uint32_t disabled;  /* URSA_FEAT_* switched off by options */
  bool running;
  bool stop;
  bool send_addr;     /* IORING_OP_SEND takes a destination (6.1): a
                         datagram send without a msghdr to copy in */
  bool no_fd_install; /* IORING_OP_FIXED_FD_INSTALL refused once: not asked
                         again (ursa__stream_install_fd) */
  int owner_pid; /* the process that made the ring: a forked child may not */
  uint64_t now_ms;
  uint64_t now_ns;       /* the same instant, for timer deadlines */
  ursa__heap timers;     /* the timers, nearest deadline at the root */
  uint64_t active; /* ops not idle: the loop is alive while > 0 */
  unsigned handles; /* streams, listeners and datagram sockets not yet
                       called back from their close: close waits for 0 */
  ursa_handle *handles_head, *handles_tail; /* the same, in order */
  /* Settings and counts the socket layer keeps on the loop. */
  unsigned write_batch;
  unsigned batch_wait_us; /* URSA_FEAT_MIN_WAIT: the bound on a batch */
  unsigned batch_seen;    /* completions the last wait got from outside */
  ursa_batch_policy batch_policy;
  unsigned batch_next;    /* URSA_BATCH_AUTO: the next batch's count */
  unsigned batch_skip;    /* plain waits left before batching again */
  unsigned batch_backoff; /* the next backing off's length (1 to 256) */
  bool batch_judge;       /* the last batch was short: judge it next enter */
  unsigned zc_threshold; /* sends of at least this many bytes are SEND_ZC */
  unsigned direct_files; /* slots in the registered file table, or 0 */
  unsigned direct_used;  /* slots held by direct streams or reserved by an
                            accept in flight: never above direct_files */
  struct ursa__sendv *sendv_free[2]; /* batched-send vectors not in use:
                                        small ones, write_batch ones */

  ursa_round *rounds, *rounds_tail; /* end-of-round hooks, in start order */
  ursa_round *round_cursor;         /* the next hook of the run under way */
  uint64_t round_gen;               /* end-of-round runs so far */
  ursa_op *wait_head, *wait_tail;     /* ops waiting for SQEs */
  ursa_op *cancel_head, *cancel_tail; /* ops whose cancel waits for an SQE */
  ursa_op *pend_head, *pend_tail;     /* results to call back */
  bool sq_dirty;        /* SQEs taken since the backend last submitted */
  uint8_t pend_rounds;  /* rounds in a row that skipped the enter */

  struct ursa__bufs *bufs; /* the receive buffers (bufring.h) */
  struct ursa__fscache *fscache; /* the files layer's verdicts (fs.c) */
  struct ursa__pipes *pipes;     /* the socket layer's pipes for spliced
                                    file writes (stream_file.c) */
  struct ursa__orphans *orphans; /* the process layer's children closed
                                    before their exit (process.c) */

  /* Posts (post.c).  The first four are shared with other threads. */
  ursa_post_req *post_head; /* a stack of posts, newest first */
  int post_closing;         /* ursa_loop_close() has begun */
  int post_busy;            /* posts between their closing check and wake */
  int refs;                 /* 1 for the loop, + ursa_loop_retain()s and
                               MSG_RING wake-ups in flight */
  int stop_async;           /* ursa_loop_stop_async() asked */
  uint64_t wakeups_in;      /* wake-ups sent to the loop, by any thread */
  int post_efd;             /* the eventfd other threads wake the loop by */
  bool post_self;           /* a post from the loop's own thread waits */
  bool closed;              /* resources freed; the memory waits for refs */
  unsigned holds;           /* ursa_loop_hold()s: keep the loop running */
  unsigned msg_rings_out;      /* MSG_RINGs sent whose completion is to come */
  uint64_t post_val;        /* the eventfd's read lands here */
  /* ursa_post_call()'s ring (post.c): cells, tail shared by the posters
   * (bit 63: closed), head the loop's. */
  struct ursa__cell *cells;
  uint64_t cell_mask;
  /* Padding keeps the posters' line off the loop's (the loop struct is
   * heap memory, 16-aligned, so no alignment attribute). */
  char call_pad0[64];
  uint64_t call_tail;
  int call_wake; /* a wake-up is on its way, or the loop is to look */
  char call_pad1[64];
  uint64_t call_head;
  ursa_op post_wake;        /* that read: not counted in active */

  /* Completions that came while the backend's run_now waited: the next
   * reap hands them out first, in order. */
  ursa__cqe *held;
  unsigned held_n, held_off, held_cap;

  ursa_stats stats;
  char backend_why[320];
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
/* Fills a kernel timespec from milliseconds. */
void ursa__ms_to_ts(uint64_t ms, ursa_timespec *ts) URSA__HIDDEN;
URSA__STATIC_ASSERT(sizeof(ursa_timespec) ==
                            sizeof(struct __kernel_timespec) &&
                   offsetof(ursa_timespec, tv_nsec) ==
                       offsetof(struct __kernel_timespec, tv_nsec),
               "ursa_timespec has the kernel's layout");
static inline struct __kernel_timespec *ursa__kts(ursa_timespec *ts) {
  return (struct __kernel_timespec *)(void *)ts;
}

/* ---- handle.c: the one life every handle shares ----
 * A handle counts on the loop from init to its close callback; its close
 * waits until every op of its own has been called back, then closes its
 * descriptor with one op of the core's kind "close". */
typedef struct ursa__handle_kind {
  const char *name;
  /* Stops what the handle has in flight (ursa_close() marked it closing
   * and will submit the close op once the handle's ops are all back). */
  void (*close)(ursa_handle *h);
  /* Fills the close op's SQE (ursa__handle_prep_close()); NULL: a NOP,
   * for a handle with no descriptor of its own. */
  void (*prep_close)(ursa_loop *loop, ursa_handle *h);
  /* After the close op, before the callback: frees what the kind holds.
   * May be NULL. */
  void (*closed)(ursa_handle *h);
} ursa__handle_kind;

/* Opens h on the loop (its data is left as it is). */
void ursa__handle_init(ursa_loop *loop, ursa_handle *h,
                       const ursa__handle_kind *kind,
                       ursa_handle_type type) URSA__HIDDEN;
/* Starts op as one of the handle's own (counted against its close). */
void ursa__handle_submit(ursa_loop *loop, ursa_handle *h,
                         ursa_op *op) URSA__HIDDEN;
/* One of the handle's ops is over: idle again, no longer counted. */
void ursa__handle_op_end(ursa_loop *loop, ursa_handle *h,
                         ursa_op *op) URSA__HIDDEN;
/* After each of the handle's ops ends: once it is closing and none is
 * left, submits the close op (once). */
void ursa__handle_maybe_close(ursa_handle *h) URSA__HIDDEN;
/* Fills the close op's SQE: the descriptor, or the direct slot (>= 0). */
void ursa__handle_prep_close(ursa_loop *loop, ursa_handle *h, int fd,
                             int slot) URSA__HIDDEN;

/* ---- work.c: the process's pool of threads ---- */
/* Queues t; t->run(t) runs on a pool thread.  0, -EINVAL (a bad
 * URSA_WORK_THREADS, named), or -EAGAIN/-ENOMEM when the pool has no
 * thread and none could be started. */
int ursa__pool_submit(struct ursa__task *t) URSA__HIDDEN;
/* Takes t off the queue if no thread has taken it yet; true if so. */
bool ursa__pool_unqueue(struct ursa__task *t) URSA__HIDDEN;

/* ---- loop.c ---- */
/* Reads the clock into now_ns and now_ms. */
void ursa__set_clock(ursa_loop *loop) URSA__HIDDEN;

/* Runs the end-of-round hooks (a no-op with none). */
void ursa__run_rounds(ursa_loop *loop) URSA__HIDDEN;

/* ---- timer.c ---- */
uint64_t ursa__clock_ns(void) URSA__HIDDEN;
/* The one heap of deadlines: a pairing heap of intrusive nodes, nearest
 * first (equal deadlines in insertion order).  Insert sets the node's seq;
 * the caller sets due_ns first.  O(1) insert, O(log n) amortised remove. */
void ursa__heap_insert(ursa__heap *h, struct ursa__hnode *n) URSA__HIDDEN;
void ursa__heap_remove(ursa__heap *h, struct ursa__hnode *n) URSA__HIDDEN;
/* Takes an armed timer out of the heap (its cancel). */
void ursa__timer_unarm(ursa_loop *loop, ursa_op *op) URSA__HIDDEN;
/* Nanoseconds until the nearest timer is due (0: due now), or -1 when no
 * timer is armed. */
int64_t ursa__timer_wait_ns(const ursa_loop *loop, uint64_t now_ns)
    URSA__HIDDEN;
/* Calls back every timer due at loop->now_ns; returns how many. */
unsigned ursa__run_timers(ursa_loop *loop) URSA__HIDDEN;

/* ---- error.c ---- */
/* Sets ursa_error_detail() and returns -EINVAL (or err). */
int ursa__invalid(const char *fmt, ...) URSA__HIDDEN
    __attribute__((format(printf, 1, 2)));
int ursa__refuse(int err, const char *fmt, ...) URSA__HIDDEN
    __attribute__((format(printf, 2, 3)));

/* ---- probe.c ---- */
/* Sets up loop->ring per opts, dropping refused flags; fills used. */
int ursa__ring_setup(ursa_loop *loop, const ursa_loop_options *opts)
    URSA__HIDDEN;

/* Writes a short cause of an io_uring set-up error ("io_uring set-up
 * failed with EPERM: refused, most likely by a seccomp filter"). */
int ursa__setup_cause(int err, char *buf, size_t len) URSA__HIDDEN;

/* ---- post.c ---- */
/* Makes the eventfd and the call ring (cells entries), arms the read; 0 or
 * a negative errno. */
int ursa__post_init(ursa_loop *loop, unsigned cells) URSA__HIDDEN;
/* Runs the posts waiting; returns how many. */
unsigned ursa__post_run(ursa_loop *loop) URSA__HIDDEN;
/* A completion of a wake-up: one that came in, or one this loop sent. */
void ursa__post_cqe(ursa_loop *loop, uint64_t ud, int res) URSA__HIDDEN;
/* Refuses posts from now on, waits for those in progress and calls back the
 * rest with -ECANCELED; closes the eventfd. */
void ursa__post_shutdown(ursa_loop *loop) URSA__HIDDEN;
/* The loop whose ursa_loop_run() is on this thread's stack, or NULL. */
extern __thread ursa_loop *ursa__running_loop URSA__HIDDEN;

/* ---- epoll.c ---- */
/* Sets up the epoll backend (loop->ep); fills used. */
int ursa__epoll_setup(ursa_loop *loop, const ursa_loop_options *opts)
    URSA__HIDDEN;

#ifdef __cplusplus
}
#endif

#endif /* URSA_CORE_H */
