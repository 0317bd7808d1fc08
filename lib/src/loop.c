/* loop.c - a loop owns one ring: creation, the run loop, dispatch, stats. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define REAP_BATCH 64
#define MAX_ENTRIES 32768u
#define MAX_DIRECT (1u << 20) /* the kernel's limit on fixed files */

static void set_clock(ursa_loop *loop) {
  loop->now_ns = ursa__clock_ns();
  loop->now_ms = loop->now_ns / 1000000u;
}

static int check_options(const ursa_loop_options *in, ursa_loop_options *o) {
  memset(o, 0, sizeof(*o));
  if (in) *o = *in;
  if (!o->sq_entries) o->sq_entries = 256;
  if (!o->cq_entries) o->cq_entries = 4 * o->sq_entries;
  if (!o->buf_count) o->buf_count = 256;
  if (!o->buf_size) o->buf_size = 16384;
  if (o->sq_entries > MAX_ENTRIES)
    return ursa__invalid("ursa_loop_new: sq_entries %u is over %u",
                         o->sq_entries, MAX_ENTRIES);
  if (o->cq_entries < o->sq_entries || o->cq_entries > 4 * MAX_ENTRIES)
    return ursa__invalid(
        "ursa_loop_new: cq_entries %u must be from sq_entries (%u) to %u",
        o->cq_entries, o->sq_entries, 4 * MAX_ENTRIES);
  if (o->buf_count > MAX_ENTRIES || (o->buf_count & (o->buf_count - 1)))
    return ursa__invalid(
        "ursa_loop_new: buf_count %u is not a power of two up to %u",
        o->buf_count, MAX_ENTRIES);
  if (o->buf_size > (1u << 24))
    return ursa__invalid("ursa_loop_new: buf_size %u is over 16 MiB",
                         o->buf_size);
  if (o->disable & ~((1u << URSA_FEAT_COUNT) - 1))
    return ursa__invalid("ursa_loop_new: disable 0x%x has unknown bits",
                         o->disable);
  if (!o->write_batch) o->write_batch = URSA_WRITE_BATCH;
  if (o->write_batch > URSA_WRITE_BATCH)
    return ursa__invalid("ursa_loop_new: write_batch %u is over %d",
                         o->write_batch, URSA_WRITE_BATCH);
  if (!o->buf_keep_max) o->buf_keep_max = o->buf_count / 2;
  if (o->buf_keep_max > o->buf_count)
    return ursa__invalid("ursa_loop_new: buf_keep_max %u is over buf_count "
                         "%u", o->buf_keep_max, o->buf_count);
  if (o->enable & ~(uint32_t)(URSA_FEAT_RECV_BUNDLE | URSA_FEAT_BUF_INC))
    return ursa__invalid("ursa_loop_new: enable 0x%x names features that "
                         "are not opt-in (only recv_bundle and buf_inc are)",
                         o->enable);
  o->enable &= ~o->disable;
  if (o->disable & URSA_FEAT_BUF_RING)
    return ursa__invalid(
        "ursa_loop_new: buf_ring cannot be disabled (receives need it)");
  return 0;
}

/* A sparse table of direct descriptors for accepted streams.  The kernel
 * caps its size at RLIMIT_NOFILE; one that refuses the table leaves accepts
 * on ordinary descriptors (the feature report says so). */
static void direct_init(ursa_loop *loop, unsigned want, uint32_t disable) {
  if (!want || (disable & URSA_FEAT_DIRECT_FILES)) return;
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want)
    want = (unsigned)rl.rlim_cur;
  if (want > MAX_DIRECT) want = MAX_DIRECT;
  if (want && io_uring_register_files_sparse(&loop->ring, want) == 0) {
    loop->direct_files = want;
    loop->used |= URSA_FEAT_DIRECT_FILES;
  }
}

void ursa__direct_release(ursa_loop *loop, int slot) {
  int gone = -1; /* an empty slot: the socket's last reference goes */
  io_uring_register_files_update(&loop->ring, (unsigned)slot, &gone, 1);
  loop->direct_used--;
}

int ursa_loop_new(ursa_loop **out, const ursa_loop_options *opts) {
  if (!out) return ursa__invalid("ursa_loop_new: NULL loop pointer");
  *out = NULL;
  ursa_loop_options o;
  int r = check_options(opts, &o);
  if (r < 0) return r;
  ursa_loop *loop = calloc(1, sizeof(*loop));
  if (!loop) return -ENOMEM;
  r = ursa__ring_setup(loop, &o);
  if (r < 0) goto err_free;
  r = ursa__bufring_init(loop, o.buf_count, o.buf_size, o.enable);
  if (r < 0) goto err_ring;
  direct_init(loop, o.direct_files, o.disable);
  loop->keep_max = o.buf_keep_max;
  loop->zc_threshold = o.zc_threshold;
  set_clock(loop);
  loop->write_batch = o.write_batch;
  loop->owner_pid = (int)getpid();
  *out = loop;
  return 0;
err_ring:
  io_uring_queue_exit(&loop->ring);
err_free:
  free(loop);
  return r;
}

int ursa_loop_close(ursa_loop *loop) {
  if (!loop) return ursa__invalid("ursa_loop_close: NULL loop");
  if (loop->running || loop->active || loop->pend_head)
    return ursa__refuse(-EBUSY, "ursa_loop_close: %llu operations active",
                        (unsigned long long)loop->active);
  if (loop->handles)
    return ursa__refuse(-EBUSY, "ursa_loop_close: %u handles (streams, "
                        "listeners, datagram sockets) still open; close "
                        "them and run the loop first", loop->handles);
  ursa__bufring_free(loop);
  io_uring_queue_exit(&loop->ring);
  free(loop);
  return 0;
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
    set_clock(loop);
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
    set_clock(loop);
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
