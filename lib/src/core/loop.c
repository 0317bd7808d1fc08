/* loop.c - the run loop, dispatch, stats: the same on every backend. */
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

/* A stop from another thread or a signal handler, taken once. */
static bool stop_async(ursa_loop *loop) {
  return __atomic_load_n(&loop->stop_async, __ATOMIC_RELAXED) &&
         __atomic_exchange_n(&loop->stop_async, 0, __ATOMIC_ACQUIRE);
}

unsigned ursa_loop_alive(const ursa_loop *loop) {
  return loop->active > 0xffffffffu ? 0xffffffffu : (unsigned)loop->active;
}

uint64_t ursa_loop_now(const ursa_loop *loop) { return loop->now_ms; }

void ursa_loop_stats(const ursa_loop *loop, ursa_stats *out) {
  *out = loop->stats;
  out->wakeups = __atomic_load_n(&loop->wakeups_in, __ATOMIC_RELAXED);
  if (loop->be->stats) loop->be->stats(loop, out);
}

const char *ursa_loop_backend(const ursa_loop *loop) {
  return loop ? loop->be->name : "none";
}

/* Moves ready completions out of the backend before dispatching them, so
 * that callbacks may submit (and so complete) freely.  Returns how many
 * were dispatched: linked timeouts' and cancel requests' are not. */
static unsigned reap(ursa_loop *loop) {
  ursa__cqe got[REAP_BATCH];
  unsigned total = 0, skipped = 0;
  for (;;) {
    unsigned n = loop->be->reap(loop, got, REAP_BATCH);
    for (unsigned i = 0; i < n; i++) {
      /* user_data 0 marks linked timeouts and cancel requests: the op
       * they belong to learns their outcome from its own completion. */
      if (!got[i].ud || got[i].ud == LIBURING_UDATA_TIMEOUT) {
        skipped++;
        continue;
      }
      if (got[i].ud == URSA__UD_WAKE || (got[i].ud & URSA__UD_SENT_WAKE)) {
        ursa__post_cqe(loop, got[i].ud, got[i].res);
        continue;
      }
      if (got[i].ud & URSA__UD_ARRIVE) {
        ursa__arrive(loop, got[i].ud, got[i].res, got[i].flags);
        continue;
      }
      ursa_op *op = (ursa_op *)(uintptr_t)got[i].ud;
      ursa__op_type_of(op)->complete(loop, op, got[i].res, got[i].flags);
    }
    total += n;
    if (n < REAP_BATCH) break;
  }
  loop->stats.cqes += total;
  return total - skipped;
}

#define PEND_ROUNDS 8

/* Submits what is queued and waits for a completion, no longer than until
 * the nearest timer is due. */
static int wait(ursa_loop *loop, ursa_run_mode mode, bool ran) {
  /* Results already at hand (a read done on the loop's thread, a cancel)
   * and nothing to submit: the next round calls them back without a
   * system call, up to PEND_ROUNDS rounds in a row, so that what the
   * kernel completes meanwhile waits a few rounds at most. */
  if (loop->pend_head && !loop->sq_dirty && loop->pend_rounds < PEND_ROUNDS) {
    loop->pend_rounds++;
    return 0;
  }
  loop->pend_rounds = 0;
  loop->sq_dirty = false;
  /* RUN_ONCE that already called back (a deferred result, a timer) has
   * had its completion: it only collects what else is ready. */
  if (mode == URSA_RUN_NOWAIT || loop->pend_head || loop->post_self ||
      loop->held_off < loop->held_n || (ran && mode == URSA_RUN_ONCE))
    return loop->be->enter(loop, 0);
  if (!loop->timers.root) return loop->be->enter(loop, -1);
  /* Callbacks may have run long since the clock was read. */
  return loop->be->enter(loop, ursa__timer_wait_ns(loop, ursa__clock_ns()));
}

/* ---- end-of-round hooks ---- */

int ursa_round_start(ursa_loop *loop, ursa_round *r, ursa_round_cb cb) {
  if (!loop || !r || !cb)
    return ursa__invalid("ursa_round_start: NULL %s",
                         !loop ? "loop" : !r ? "hook" : "callback");
  if (r->loop) return ursa__refuse(-EBUSY, "ursa_round_start: started already");
  r->loop = loop;
  r->cb = cb;
  /* Inside a run of the hooks this equals the run's number: it waits for
   * the next round.  Anywhere else the next run's number is higher. */
  r->gen = loop->round_gen;
  r->next = NULL;
  r->prev = loop->rounds_tail;
  if (loop->rounds_tail)
    loop->rounds_tail->next = r;
  else
    loop->rounds = r;
  loop->rounds_tail = r;
  return 0;
}

int ursa_round_stop(ursa_round *r) {
  if (!r || !r->loop) return -ENOENT;
  ursa_loop *loop = r->loop;
  if (loop->round_cursor == r) loop->round_cursor = r->next;
  if (r->prev)
    r->prev->next = r->next;
  else
    loop->rounds = r->next;
  if (r->next)
    r->next->prev = r->prev;
  else
    loop->rounds_tail = r->prev;
  r->next = r->prev = NULL;
  r->loop = NULL;
  return 0;
}

void ursa__run_rounds(ursa_loop *loop) {
  if (!loop->rounds) return;
  uint64_t gen = ++loop->round_gen;
  for (ursa_round *r = loop->rounds; r; r = loop->round_cursor) {
    loop->round_cursor = r->next;
    if (r->gen != gen) r->cb(r);
  }
  loop->round_cursor = NULL;
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
  ursa_loop *outer = ursa__running_loop; /* another loop's callback */
  ursa__running_loop = loop;
  int err = 0;
  for (;;) {
    ursa__set_clock(loop);
    unsigned ran = ursa__run_pending(loop);
    if (loop->post_self) ran += ursa__post_run(loop);
    ursa__flush_waiting(loop);
    if (loop->stop || stop_async(loop) || (!loop->active && !loop->holds))
      break;
    int r = wait(loop, mode, ran > 0);
    /* EINTR: a signal; EBUSY/EAGAIN: completions must be reaped first;
     * ETIME: the nearest timer is due. */
    if (r < 0 && r != -EINTR && r != -EBUSY && r != -EAGAIN && r != -ETIME) {
      err = r;
      break;
    }
    ursa__set_clock(loop);
    unsigned got = reap(loop);
    /* Due timers run after what the kernel had ready: a read timeout
     * whose bytes have arrived is no timeout. */
    got += ursa__run_timers(loop);
    if (mode != URSA_RUN_DEFAULT) {
      got += ursa__run_pending(loop);
      if (loop->post_self) got += ursa__post_run(loop);
      /* RUN_ONCE waits on through a wait that ended with nothing to
       * dispatch: a signal (EINTR), or only a linked timeout's own CQE. */
      if (mode == URSA_RUN_ONCE && !ran && !got) {
        ursa__flush_waiting(loop);
        continue;
      }
      ursa__run_rounds(loop);
      ursa__flush_waiting(loop);
      break;
    }
    ursa__run_rounds(loop);
  }
  ursa__running_loop = outer;
  loop->running = false;
  if (err) return err;
  return loop->active > 0 || loop->holds > 0;
}
