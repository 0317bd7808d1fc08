/* post.c - what other threads may do to a loop: post callbacks to it, wake
 * it, stop it, and keep its memory past its close.
 *
 * Posts go on a lock-free stack (a compare-and-swap push, an exchange to
 * take them all), reversed when taken so that they run in the order they
 * were made.  Only the post that finds the stack empty wakes the loop: the
 * loop empties the stack before it runs what it took, so a post that finds
 * it non-empty rides on a wake-up already on its way.
 *
 * A loop's close and posts from other threads meet at two counters: a poster
 * counts itself in (post_busy) before it looks at post_closing, the close
 * sets post_closing before it waits for post_busy to drain; with both
 * sequentially consistent, either the poster sees the close or the close
 * waits for the poster.  A MSG_RING wake-up outlives that window (it leaves
 * with the sender's next submit), so it holds a reference instead, and the
 * ring's descriptor stays open until the last reference goes. */
#include "core.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

__thread ursa_loop *ursa__running_loop;

#define SEQ __ATOMIC_SEQ_CST

/* The eventfd's read is armed for the loop's whole life, but it is not an
 * operation anyone waits for: it must not keep the loop running. */
static void arm(ursa_loop *loop) {
  ursa__op_submit(loop, &loop->post_wake);
  loop->active--;
}

/* A cell of the call ring.  seq is stored less the cell's index, so that
 * a fresh ring is all zeros (calloc's pages, untouched until used). */
struct ursa__cell {
  uint64_t seq;
  ursa_call_fn fn;
  void *arg;
  uint64_t pad;
};

#define RING_CLOSED (1ull << 63)

int ursa__post_init(ursa_loop *loop, unsigned cells) {
  loop->refs = 1;
  loop->cells = calloc(cells, sizeof(struct ursa__cell));
  if (!loop->cells) return -ENOMEM;
  loop->cell_mask = cells - 1;
  /* io_uring reads it as a blocking file (it waits by polling, and a
   * non-blocking file may come back -EAGAIN on older kernels); epoll reads
   * it only after it polled ready. */
  int flags = EFD_CLOEXEC;
  if (!(loop->be->caps & URSA__BE_READS_FILES)) flags |= EFD_NONBLOCK;
  loop->post_efd = eventfd(0, flags);
  if (loop->post_efd < 0) {
    int e = -errno;
    free(loop->cells);
    return e;
  }
  loop->post_wake.kind = URSA__KIND(post_wake);
  loop->post_wake.nsqe = 1;
  arm(loop);
  return 0;
}

static void post_wake_prep(ursa_loop *loop, ursa_op *op) {
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  if (loop->be->caps & URSA__BE_READS_FILES)
    io_uring_prep_read(sqe, loop->post_efd, &loop->post_val,
                       sizeof(loop->post_val), 0);
  else
    io_uring_prep_poll_add(sqe, loop->post_efd, POLLIN);
  io_uring_sqe_set_data(sqe, op);
}

/* Writes the eventfd unless the loop is closing (which closes it).  Inside
 * a post_busy window, or making one. */
static void wake_eventfd(ursa_loop *t) {
  __atomic_fetch_add(&t->post_busy, 1, SEQ);
  if (!__atomic_load_n(&t->post_closing, SEQ)) {
    uint64_t one = 1;
    (void)!write(t->post_efd, &one, sizeof(one));
    __atomic_fetch_add(&t->wakeups_in, 1, __ATOMIC_RELAXED);
  }
  __atomic_fetch_sub(&t->post_busy, 1, SEQ);
}

static void wake(ursa_loop *t) {
  ursa_loop *self = ursa__running_loop;
  if (self == t) {
    t->post_self = true; /* the loop looks before it next waits */
    return;
  }
  if (!self && (t->used & URSA_FEAT_SYNC_MSG_RING)) {
    /* A plain thread: the message is posted before the call returns, and
     * the poster's window (post_busy, or a claimed cell of the call ring)
     * keeps the loop's ring open until then.  The loop takes it as a
     * loop's MSG_RING, with no eventfd to read and no read to re-arm. */
    struct io_uring_sqe sqe;
    memset(&sqe, 0, sizeof(sqe));
    io_uring_prep_msg_ring(&sqe, t->be->ring_fd(t), 0, URSA__UD_WAKE, 0);
    if (ursa__sync_msg_ring(&sqe) >= 0) {
      __atomic_fetch_add(&t->wakeups_in, 1, __ATOMIC_RELAXED);
      return;
    }
  }
  if (self && (self->used & URSA_FEAT_MSG_RING) && t->be->ring_fd &&
      ursa__sq_reserve(self, 1)) {
    __atomic_fetch_add(&t->refs, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&t->wakeups_in, 1, __ATOMIC_RELAXED);
    struct io_uring_sqe *sqe = ursa__get_sqe(self);
    io_uring_prep_msg_ring(sqe, t->be->ring_fd(t), 0, URSA__UD_WAKE, 0);
    sqe->user_data = (uint64_t)(uintptr_t)t | URSA__UD_SENT_WAKE;
    self->stats.msg_ring_sent++;
    self->msg_rings_out++;
    return;
  }
  wake_eventfd(t);
}

int ursa_post(ursa_loop *loop, ursa_post_req *req, ursa_post_cb cb) {
  if (!loop || !req || !cb)
    return ursa__invalid("ursa_post: NULL %s", !loop  ? "loop"
                                               : !req ? "request"
                                                      : "callback");
  if (__atomic_exchange_n(&req->busy, 1, __ATOMIC_ACQUIRE))
    return ursa__refuse(-EBUSY, "ursa_post: the request is still posted "
                        "(its callback has not run)");
  __atomic_fetch_add(&loop->post_busy, 1, SEQ);
  if (__atomic_load_n(&loop->post_closing, SEQ)) {
    __atomic_fetch_sub(&loop->post_busy, 1, SEQ);
    __atomic_store_n(&req->busy, 0, __ATOMIC_RELEASE);
    return ursa__refuse(-ESHUTDOWN, "ursa_post: the loop is closing");
  }
  req->cb = cb;
  ursa_post_req *old = __atomic_load_n(&loop->post_head, __ATOMIC_RELAXED);
  do {
    req->next = old;
  } while (!__atomic_compare_exchange_n(&loop->post_head, &old, req, true,
                                        __ATOMIC_RELEASE, __ATOMIC_RELAXED));
  if (!old) wake(loop);
  __atomic_fetch_sub(&loop->post_busy, 1, SEQ);
  return 0;
}

/* ---- the call ring: a bounded queue of many posters and one taker, each
 * cell's sequence number saying whose turn it is (free for the poster at
 * lap L when it reads L * size + index, published for the loop when it
 * reads one more). ----
 * The poster wakes the loop before it publishes its cell, so that a close,
 * which waits for every claimed cell to be published, knows that no
 * poster will touch the loop after it; a loop woken early finds a claimed
 * cell not yet published and looks again before it next waits. */

int ursa_post_call(ursa_loop *loop, ursa_call_fn fn, void *arg) {
  if (!loop || !fn)
    return ursa__invalid("ursa_post_call: NULL %s", loop ? "fn" : "loop");
  uint64_t pos = __atomic_load_n(&loop->call_tail, __ATOMIC_RELAXED);
  struct ursa__cell *c;
  for (;;) {
    if (pos & RING_CLOSED)
      return ursa__refuse(-ESHUTDOWN, "ursa_post_call: the loop is closing");
    uint64_t idx = pos & loop->cell_mask;
    c = &loop->cells[idx];
    uint64_t seq = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE) + idx;
    int64_t diff = (int64_t)(seq - pos);
    if (diff == 0) {
      if (__atomic_compare_exchange_n(&loop->call_tail, &pos, pos + 1, true,
                                      SEQ, __ATOMIC_RELAXED))
        break;
    } else if (diff < 0) {
      return ursa__refuse(-EAGAIN, "ursa_post_call: the ring's %llu "
                          "entries are full",
                          (unsigned long long)loop->cell_mask + 1);
    } else {
      pos = __atomic_load_n(&loop->call_tail, __ATOMIC_RELAXED);
    }
  }
  c->fn = fn;
  c->arg = arg;
  if (!__atomic_load_n(&loop->call_wake, SEQ) &&
      !__atomic_exchange_n(&loop->call_wake, 1, SEQ))
    wake(loop);
  __atomic_store_n(&c->seq, pos + 1 - (pos & loop->cell_mask),
                   __ATOMIC_RELEASE);
  return 0;
}

/* Runs the published calls, at most a ring's worth per run.  call_wake
 * stays set while the loop is taking calls, so posters do not wake a loop
 * that is awake; it is cleared only when the ring is seen empty after it
 * (both sides sequentially consistent: a poster that claims after that
 * look sees it cleared and wakes the loop).  A claimed cell not yet
 * published ends the run with the flag still set: the loop looks again
 * before it waits.  Closing (status < 0): every claimed cell is waited
 * for and called back. */
static unsigned call_run(ursa_loop *loop, int status) {
  unsigned n = 0;
  uint64_t budget = loop->cell_mask + 1;
  for (;;) {
    uint64_t end = __atomic_load_n(&loop->call_tail, SEQ) & ~RING_CLOSED;
    while (loop->call_head != end) {
      uint64_t h = loop->call_head, idx = h & loop->cell_mask;
      struct ursa__cell *c = &loop->cells[idx];
      if (__atomic_load_n(&c->seq, __ATOMIC_ACQUIRE) + idx != h + 1) {
        if (status == 0) {
          loop->post_self = true;
          return n;
        }
        sched_yield(); /* closing: its poster is a few instructions away */
        continue;
      }
      ursa_call_fn fn = c->fn;
      void *arg = c->arg;
      __atomic_store_n(&c->seq, h + loop->cell_mask + 1 - idx,
                       __ATOMIC_RELEASE);
      loop->call_head = h + 1;
      fn(arg, status);
      if (++n >= budget && status == 0) {
        loop->post_self = true; /* the rest next round */
        return n;
      }
    }
    if (status < 0) return n;
    __atomic_store_n(&loop->call_wake, 0, SEQ);
    if ((__atomic_load_n(&loop->call_tail, SEQ) & ~RING_CLOSED) ==
        loop->call_head)
      return n;
    /* More came meanwhile: take them too, awake. */
    __atomic_store_n(&loop->call_wake, 1, SEQ);
  }
}

/* Takes every post waiting, oldest first. */
static ursa_post_req *take(ursa_loop *loop) {
  ursa_post_req *r = __atomic_exchange_n(&loop->post_head, NULL,
                                         __ATOMIC_ACQUIRE);
  ursa_post_req *rev = NULL;
  while (r) {
    ursa_post_req *n = r->next;
    r->next = rev;
    rev = r;
    r = n;
  }
  return rev;
}

static unsigned call_all(ursa_post_req *r, int status) {
  unsigned n = 0;
  while (r) {
    ursa_post_req *next = r->next;
    ursa_post_cb cb = r->cb;
    r->next = NULL;
    /* Free to be posted again from its own callback. */
    __atomic_store_n(&r->busy, 0, __ATOMIC_RELEASE);
    cb(r, status);
    r = next;
    n++;
  }
  return n;
}

unsigned ursa__post_run(ursa_loop *loop) {
  loop->post_self = false;
  unsigned n = call_all(take(loop), 0) + call_run(loop, 0);
  loop->stats.posts += n;
  return n;
}

static void post_wake_complete(ursa_loop *loop, ursa_op *op, int res,
                               uint32_t flags) {
  (void)flags;
  op->state = URSA__IDLE;
  op->flags = 0;
  if (!(loop->be->caps & URSA__BE_READS_FILES)) {
    uint64_t v;
    (void)!read(loop->post_efd, &v, sizeof(v));
  }
  (void)res; /* whatever it was, the stack is what tells */
  ursa__post_run(loop);
  arm(loop);
}

URSA__OP_TYPE(post_wake) = {
    .name = "read",
    .prep = post_wake_prep,
    .complete = post_wake_complete,
};

/* Another loop's request arriving: its layer says how to finish it. */
static ursa__arrive_fn arrive_fn;

void ursa__set_arrive(ursa__arrive_fn fn) {
  __atomic_store_n(&arrive_fn, fn, __ATOMIC_RELAXED);
}

void ursa__arrive(ursa_loop *loop, uint64_t ud, int res, uint32_t flags) {
  ursa__arrive_fn fn = __atomic_load_n(&arrive_fn, __ATOMIC_RELAXED);
  if (fn) fn(loop, (ursa_op *)(uintptr_t)(ud & ~(uint64_t)7), res, flags);
}

static void final_free(ursa_loop *loop) {
  /* Hand-offs that landed after the close still get their callback. */
  if (loop->be->drain) loop->be->drain(loop);
  loop->be->free(loop);
  free(loop->cells);
  free(loop);
}

void ursa__post_cqe(ursa_loop *loop, uint64_t ud, int res) {
  if (ud == URSA__UD_WAKE) {
    ursa__post_run(loop);
    return;
  }
  /* A MSG_RING this loop sent: the target may have closed (or its thread
   * ended) meanwhile; its eventfd then tells it, if it still listens. */
  ursa_loop *t = (ursa_loop *)(uintptr_t)(ud & ~(uint64_t)URSA__UD_SENT_WAKE);
  if (res < 0) wake_eventfd(t);
  loop->msg_rings_out--;
  ursa_loop_release(t);
}

void ursa__post_shutdown(ursa_loop *loop) {
  __atomic_store_n(&loop->post_closing, 1, SEQ);
  /* Posters inside their window finish in a few instructions (and one
   * write); none can enter it now. */
  while (__atomic_load_n(&loop->post_busy, SEQ)) sched_yield();
  call_all(take(loop), -ECANCELED);
  /* No poster claims a cell from now on; those that did are waited for. */
  __atomic_fetch_or(&loop->call_tail, RING_CLOSED, SEQ);
  call_run(loop, -ECANCELED);
  /* The MSG_RINGs this loop sent (maybe not even submitted yet) still
   * hold their targets. */
  if (loop->msg_rings_out && loop->be->settle) loop->be->settle(loop);
  close(loop->post_efd);
  loop->post_efd = -1;
}

void ursa_loop_stop_async(ursa_loop *loop) {
  if (!loop) return;
  __atomic_store_n(&loop->stop_async, 1, SEQ);
  wake_eventfd(loop);
}

void ursa_loop_hold(ursa_loop *loop) {
  if (loop) loop->holds++;
}

void ursa_loop_unhold(ursa_loop *loop) {
  if (loop && loop->holds) loop->holds--;
}

void ursa_loop_retain(ursa_loop *loop) {
  if (loop) __atomic_fetch_add(&loop->refs, 1, __ATOMIC_RELAXED);
}

void ursa_loop_release(ursa_loop *loop) {
  if (loop && __atomic_sub_fetch(&loop->refs, 1, __ATOMIC_ACQ_REL) == 0)
    final_free(loop);
}
