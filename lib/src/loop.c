/* loop.c - a loop owns one ring: the run loop, dispatch, stats. */
#include "core.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#define REAP_BATCH 64

void ursa__set_clock(ursa_loop *loop) {
  loop->now_ns = ursa__clock_ns();
  loop->now_ms = loop->now_ns / 1000000u;
}

void ursa_loop_stop(ursa_loop *loop) { loop->stop = true; }

unsigned ursa_loop_alive(const ursa_loop *loop) {
  return loop->active > 0xffffffffu ? 0xffffffffu : (unsigned)loop->active;
}

uint64_t ursa_loop_now(const ursa_loop *loop) { return loop->now_ms; }

void ursa_loop_stats(const ursa_loop *loop, ursa_stats *out) {
  *out = loop->stats;
  out->cq_dropped = *loop->ring.cq.koverflow;
}

static void dispatch(ursa_loop *loop, uint64_t ud, int res, uint32_t flags) {
  /* user_data 0 marks linked timeouts and cancel requests: the op they
   * belong to learns their outcome from its own completion. */
  if (!ud || ud == LIBURING_UDATA_TIMEOUT) return;
  ursa_op *op = (ursa_op *)(uintptr_t)ud;
  ursa__op_table[op->kind].complete(loop, op, res, flags);
}

/* Copies ready CQEs out and frees their slots before dispatching, so that
 * callbacks may submit (and so post CQEs) freely. */
static unsigned reap(ursa_loop *loop) {
  struct io_uring_cqe *cqes[REAP_BATCH];
  struct {
    uint64_t ud;
    int32_t res;
    uint32_t flags;
  } got[REAP_BATCH];
  unsigned total = 0;
  /* The kernel keeps what did not fit and hands it over on the next enter;
   * the reap below empties the CQ for it. */
  if (IO_URING_READ_ONCE(*loop->ring.sq.kflags) & IORING_SQ_CQ_OVERFLOW)
    loop->stats.cq_overflows++;
  for (;;) {
    unsigned n = io_uring_peek_batch_cqe(&loop->ring, cqes, REAP_BATCH);
    for (unsigned i = 0; i < n; i++) {
      got[i].ud = cqes[i]->user_data;
      got[i].res = cqes[i]->res;
      got[i].flags = cqes[i]->flags;
    }
    io_uring_cq_advance(&loop->ring, n);
    for (unsigned i = 0; i < n; i++)
      dispatch(loop, got[i].ud, got[i].res, got[i].flags);
    total += n;
    if (n < REAP_BATCH) break;
  }
  loop->stats.cqes += total;
  return total;
}

/* Submits what is queued and waits for a completion, no longer than until
 * the nearest timer is due (one enter either way: the bound travels in
 * the enter's own argument, IORING_FEAT_EXT_ARG [5.11]). */
static int wait(ursa_loop *loop, ursa_run_mode mode, bool ran) {
  /* RUN_ONCE that already called back (a deferred result, a timer) has
   * had its completion: it only collects what else is ready. */
  if (mode == URSA_RUN_NOWAIT || loop->pend_head ||
      (ran && mode == URSA_RUN_ONCE))
    return io_uring_submit_and_get_events(&loop->ring);
  if (!loop->timers) return io_uring_submit_and_wait(&loop->ring, 1);
  /* Callbacks may have run long since the clock was read. */
  int64_t left = ursa__timer_wait_ns(loop, ursa__clock_ns());
  if (left == 0) return io_uring_submit_and_get_events(&loop->ring);
  struct __kernel_timespec ts = {.tv_sec = left / 1000000000,
                                 .tv_nsec = left % 1000000000};
  struct io_uring_cqe *cqe;
  return io_uring_submit_and_wait_timeout(&loop->ring, &cqe, 1, &ts, NULL);
}

int ursa_loop_run(ursa_loop *loop, ursa_run_mode mode) {
  if (!loop) return ursa__invalid("ursa_loop_run: NULL loop");
  if (mode != URSA_RUN_DEFAULT && mode != URSA_RUN_ONCE &&
      mode != URSA_RUN_NOWAIT)
    return ursa__invalid("ursa_loop_run: unknown mode %d", (int)mode);
  if (loop->running) return -EBUSY;
  if ((int)getpid() != loop->owner_pid)
    return ursa__refuse(-EPERM, "ursa_loop_run: this loop belongs to process "
                        "%d; after fork a child makes a loop of its own",
                        loop->owner_pid);
  loop->running = true;
  loop->stop = false;
  int err = 0;
  for (;;) {
    ursa__set_clock(loop);
    unsigned ran = ursa__run_pending(loop);
    ursa__flush_waiting(loop);
    if (loop->stop || !loop->active) break;
    int r = wait(loop, mode, ran > 0);
    loop->stats.enters++;
    /* EINTR: a signal; EBUSY/EAGAIN: completions must be reaped first;
     * ETIME: the nearest timer is due. */
    if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN && r != -ETIME) {
      err = r;
      break;
    }
    ursa__set_clock(loop);
    reap(loop);
    /* Due timers run after what the kernel had ready: a read timeout
     * whose bytes have arrived is no timeout. */
    ursa__run_timers(loop);
    if (mode != URSA_RUN_DEFAULT) {
      ursa__run_pending(loop);
      ursa__flush_waiting(loop);
      break;
    }
  }
  loop->running = false;
  if (err) return err;
  return loop->active > 0;
}
