/* uring.c - the io_uring backend: the layers' SQEs go to the kernel's
 * ring as they are, its CQEs come back as they are. */
#include "core.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

static unsigned u_sq_space(ursa_loop *loop) {
  return io_uring_sq_space_left(&loop->ring);
}

static struct io_uring_sqe *u_get_sqe(ursa_loop *loop) {
  return io_uring_get_sqe(&loop->ring);
}

static void u_submit(ursa_loop *loop) {
  io_uring_submit(&loop->ring);
  loop->stats.enters++;
}

/* Hands the queued SQEs to the kernel's ring; returns how many it has not
 * consumed yet.  (liburing 2.3 keeps its own flush private.) */
static unsigned flush_sq(struct io_uring *ring) {
  struct io_uring_sq *sq = &ring->sq;
  if (sq->sqe_head != sq->sqe_tail) {
    sq->sqe_head = sq->sqe_tail;
    io_uring_smp_store_release(sq->ktail, sq->sqe_tail);
  }
  return sq->sqe_tail - IO_URING_READ_ONCE(*sq->khead);
}

#define BATCH_MAX 32u
#define BATCH_MIN_HANDLES 8u /* fewer peers than this: no batching (AUTO) */
#define BATCH_BACKOFF_MAX 256u
#define BATCH_RESET 4u /* a full batch this big resets the back-off */
#define RING_REGISTERED 1 /* liburing's flag: enter_ring_fd is registered */

/* How many completions from outside the next wait asks for; below 2 the
 * wait is plain.  URSA_BATCH_AUTO (ursa.h gives the rules): a quarter of
 * the handles at most, so a few peers waiting on the loop's answers are
 * never all held back at once; one more than the last batch got, so the
 * batch grows while arrivals keep up; none while backing off. */
static unsigned batch_ask(ursa_loop *loop) {
  if (loop->batch_policy == URSA_BATCH_ALWAYS) return loop->batch_seen;
  unsigned cap = loop->handles / 4;
  if (cap > BATCH_MAX) cap = BATCH_MAX;
  if (loop->handles < BATCH_MIN_HANDLES || cap < 2) return 0;
  if (loop->batch_skip) {
    loop->batch_skip--;
    return 0;
  }
  unsigned ask = loop->batch_next < 2 ? 2 : loop->batch_next;
  return ask > cap ? cap : ask;
}

/* One enter that submits submit SQEs and waits for want completions,
 * for wait_ns at most (negative: an hour), the first min_us of it for the
 * whole count (0: no minimum).  The argument is copied in with the enter,
 * or, with URSA_FEAT_REG_WAIT, written into the registered region, where
 * the kernel reads it in place (the enter passes its offset, 0). */
static int enter_wait(ursa_loop *loop, unsigned submit, unsigned want,
                      int64_t wait_ns, unsigned min_us) {
  struct io_uring *ring = &loop->ring;
  /* Always a bound: without one the kernel ends the whole wait when the
   * minimum timeout passes, even with nothing completed. */
  if (wait_ns < 0) wait_ns = 3600 * (int64_t)1000000000;
  struct __kernel_timespec ts = {.tv_sec = wait_ns / 1000000000,
                                 .tv_nsec = wait_ns % 1000000000};
  unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
  int fd = ring->ring_fd;
  if (ring->int_flags & RING_REGISTERED) {
    flags |= IORING_ENTER_REGISTERED_RING;
    fd = ring->enter_ring_fd;
  }
  if (loop->wait_region) {
    struct ursa__reg_wait *w = loop->wait_region;
    w->ts = ts;
    w->min_wait_usec = min_us;
    w->flags = URSA__IORING_REG_WAIT_TS;
    return io_uring_enter2((unsigned)fd, submit, want,
                           flags | URSA__IORING_ENTER_EXT_ARG_REG, NULL,
                           sizeof(*w));
  }
  struct io_uring_getevents_arg arg = {0};
  arg.ts = (uint64_t)(uintptr_t)&ts;
  arg.pad = min_us; /* min_wait_usec since 6.12 */
  return io_uring_enter2((unsigned)fd, submit, want, flags,
                         (sigset_t *)(void *)&arg, sizeof(arg));
}

/* A wait for a batch (URSA_FEAT_MIN_WAIT): the completions this enter's
 * own SQEs post at once (sends mostly complete inline) plus ask from
 * outside; the kernel's minimum timeout (batch_wait_us) bounds how long
 * the first waits for the rest.  With DEFER_TASKRUN the task is only woken
 * once that many are ready, so a loop whose peers are slow wakes once per
 * batch instead of once per completion. */
static int enter_batch(ursa_loop *loop, int64_t wait_ns, unsigned ask) {
  struct io_uring *ring = &loop->ring;
  unsigned submit = flush_sq(ring);
  unsigned want = submit + ask;
  if (want < 1) want = 1;
  if (want > BATCH_MAX) want = BATCH_MAX;
  bool batched = want > 1;
  if (batched) loop->stats.batch_waits++;
  int r = enter_wait(loop, submit, want, wait_ns,
                     batched ? loop->batch_wait_us : 0);
  unsigned ready = io_uring_cq_ready(ring);
  unsigned got = ready > submit ? ready - submit : 0;
  loop->batch_seen = got;
  if (batched && ready < want) loop->stats.batch_short++;
  if (loop->batch_policy == URSA_BATCH_AUTO && ask >= 2) {
    if (ready >= want) { /* arrivals kept up: ask for one more */
      loop->batch_next = got + 1;
      /* A costly hold loses up to batch_wait_us; a full batch of g saves
       * g - 1 wake-ups.  A big one starts batching over at once, a small
       * one only steps the back-off down, so a loop whose small batches
       * alternate with costly holds stays mostly plain. */
      if (got >= BATCH_RESET)
        loop->batch_backoff = 1;
      else if (loop->batch_backoff > 1)
        loop->batch_backoff--;
    } else { /* the bound came first: judged at the next enter */
      loop->batch_next = got;
      loop->batch_judge = true;
    }
  }
  return r; /* liburing's wrapper returns -errno itself */
}

/* A short batch held what had come for up to batch_wait_us.  If handling
 * it queued new work (a reply, the next piece of a write), the hold cost
 * that work the wait: plain waits for the next 1, 2, 4 ... 256 enters.
 * If not (send completions at the end of a burst), the loop had nothing
 * to do meanwhile and batching goes on. */
static void batch_judge(ursa_loop *loop) {
  loop->batch_judge = false;
  if (!io_uring_sq_ready(&loop->ring)) return;
  loop->batch_skip = loop->batch_backoff;
  if (loop->batch_backoff < BATCH_BACKOFF_MAX) loop->batch_backoff *= 2;
}

/* One enter either way: the wait's bound travels in the enter's own
 * argument (IORING_FEAT_EXT_ARG [5.11]), so it costs no SQE. */
static int u_enter(ursa_loop *loop, int64_t wait_ns) {
  loop->stats.enters++;
  if (wait_ns == 0) return io_uring_submit_and_get_events(&loop->ring);
  if (loop->used & URSA_FEAT_MIN_WAIT) {
    if (loop->batch_judge) batch_judge(loop);
    unsigned ask = batch_ask(loop);
    if (ask >= 2 || loop->batch_policy == URSA_BATCH_ALWAYS)
      return enter_batch(loop, wait_ns, ask);
  }
  if (wait_ns < 0) return io_uring_submit_and_wait(&loop->ring, 1);
  if (loop->wait_region)
    return enter_wait(loop, flush_sq(&loop->ring), 1, wait_ns, 0);
  struct __kernel_timespec ts = {.tv_sec = wait_ns / 1000000000,
                                 .tv_nsec = wait_ns % 1000000000};
  struct io_uring_cqe *cqe;
  return io_uring_submit_and_wait_timeout(&loop->ring, &cqe, 1, &ts, NULL);
}

static unsigned u_reap(ursa_loop *loop, ursa__cqe *out, unsigned max) {
  struct io_uring_cqe *cqes[64];
  if (max > 64) max = 64;
  if (loop->held_off < loop->held_n) { /* what run_now set aside: first */
    unsigned n = 0;
    while (loop->held_off < loop->held_n && n < max)
      out[n++] = loop->held[loop->held_off++];
    if (loop->held_off == loop->held_n) loop->held_off = loop->held_n = 0;
    return n;
  }
  /* The kernel keeps what did not fit and hands it over on the next enter;
   * reaping empties the CQ for it. */
  if (IO_URING_READ_ONCE(*loop->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW)
    loop->stats.cq_overflows++;
  unsigned n = io_uring_peek_batch_cqe(&loop->ring, cqes, max);
  for (unsigned i = 0; i < n; i++) {
    out[i].ud = cqes[i]->user_data;
    out[i].res = cqes[i]->res;
    out[i].flags = cqes[i]->flags;
  }
  io_uring_cq_advance(&loop->ring, n);
  return n;
}

static int u_buf_ring_register(ursa_loop *loop, struct io_uring_buf_ring *br,
                               unsigned entries, uint16_t bgid, bool inc) {
  struct io_uring_buf_reg reg = {0};
  reg.ring_addr = (uint64_t)(uintptr_t)br;
  reg.ring_entries = entries;
  reg.bgid = bgid;
  reg.pad = inc ? URSA__PBUF_RING_INC : 0;
  int ret = io_uring_register_buf_ring(&loop->ring, &reg, 0);
  /* Kernels before 5.19 do not know the registration opcode, nor those
   * before 6.12 the incremental flag. */
  return ret == -EINVAL ? -EOPNOTSUPP : ret;
}

static void u_buf_ring_unregister(ursa_loop *loop, uint16_t bgid) {
  io_uring_unregister_buf_ring(&loop->ring, bgid);
}

static void u_free(ursa_loop *loop) {
  io_uring_queue_exit(&loop->ring);
  ursa__reg_wait_free(loop);
  free(loop->held);
  loop->held = NULL;
}

static int u_run_now(ursa_loop *loop,
                     void (*prep)(struct io_uring_sqe *sqe, void *arg),
                     void *arg) {
  if (!ursa__sq_reserve(loop, 1)) return -EBUSY;
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  prep(sqe, arg);
  sqe->user_data = URSA__UD_NOW;
  for (;;) {
    loop->stats.enters++;
    int r = io_uring_submit_and_wait(&loop->ring, 1);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME)
      return r;
    /* Room for every completion ready before any is taken off the CQ. */
    unsigned ready = io_uring_cq_ready(&loop->ring);
    if (loop->held_n + ready > loop->held_cap) {
      unsigned cap = loop->held_cap ? loop->held_cap : 64;
      while (cap < loop->held_n + ready) cap *= 2;
      ursa__cqe *h = realloc(loop->held, cap * sizeof(*h));
      if (!h) return -ENOMEM; /* they stay in the CQ for the loop */
      loop->held = h;
      loop->held_cap = cap;
    }
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    int res = INT_MIN;
    io_uring_for_each_cqe(&loop->ring, head, cqe) {
      n++;
      if (cqe->user_data == URSA__UD_NOW) {
        res = cqe->res;
        continue;
      }
      ursa__cqe *h = &loop->held[loop->held_n++];
      h->ud = cqe->user_data;
      h->res = cqe->res;
      h->flags = cqe->flags;
    }
    io_uring_cq_advance(&loop->ring, n);
    if (res != INT_MIN) return res;
  }
}

static int u_ring_fd(const ursa_loop *loop) { return loop->ring.ring_fd; }

static int u_files_register(ursa_loop *loop, unsigned n) {
  return io_uring_register_files_sparse(&loop->ring, n);
}

static int u_buffers_register(ursa_loop *loop, const struct iovec *iov,
                              unsigned n) {
  return io_uring_register_buffers(&loop->ring, iov, n);
}

static void u_buffers_unregister(ursa_loop *loop) {
  io_uring_unregister_buffers(&loop->ring);
}

static void u_files_clear(ursa_loop *loop, unsigned slot) {
  int gone = -1; /* an empty slot: the socket's last reference goes */
  io_uring_register_files_update(&loop->ring, slot, &gone, 1);
}

static void u_drain(ursa_loop *loop) {
  struct io_uring_cqe *cqe;
  unsigned head, n = 0;
  io_uring_for_each_cqe(&loop->ring, head, cqe) {
    n++;
    uint64_t ud = cqe->user_data;
    if (ud & URSA__UD_SENT_WAKE)
      ursa__post_cqe(loop, ud, cqe->res);
    else if (ud != LIBURING_UDATA_TIMEOUT && (ud & URSA__UD_ARRIVE))
      ursa__arrive(loop, ud, -ECANCELED, 0);
  }
  io_uring_cq_advance(&loop->ring, n);
}

/* MSG_RINGs complete inline, so their completions come at once; nothing
 * else is active by now (the eventfd's read means nothing any more). */
static void u_settle(ursa_loop *loop) {
  for (int tries = 0; loop->msg_rings_out && tries < 1000; tries++) {
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 1000000};
    io_uring_submit_and_wait_timeout(&loop->ring, &cqe, 1, &ts, NULL);
    u_drain(loop);
  }
}

static void u_stats(const ursa_loop *loop, ursa_stats *out) {
  out->cq_dropped = *loop->ring.cq.koverflow;
}

const ursa__backend ursa__uring_backend = {
    .name = "io_uring",
    .sq_space = u_sq_space,
    .get_sqe = u_get_sqe,
    .submit = u_submit,
    .enter = u_enter,
    .reap = u_reap,
    .buf_ring_register = u_buf_ring_register,
    .buf_ring_unregister = u_buf_ring_unregister,
    .free = u_free,
    .caps = URSA__BE_READS_FILES,
    .ring_fd = u_ring_fd,
    .files_register = u_files_register,
    .files_clear = u_files_clear,
    .buffers_register = u_buffers_register,
    .buffers_unregister = u_buffers_unregister,
    .run_now = u_run_now,
    .drain = u_drain,
    .settle = u_settle,
    .stats = u_stats,
};
