/* op.c - getting ops into the SQ, cancel, and deferred results. */
#include "core.h"

#include <errno.h>
#include <time.h>


void ursa__ms_to_ts(uint64_t ms, ursa_timespec *ts) {
  ts->tv_sec = (int64_t)(ms / 1000u);
  ts->tv_nsec = (long long)(ms % 1000u) * 1000000;
}

/* ---- intrusive FIFO lists through op->next ---- */

static void list_push(ursa_op **head, ursa_op **tail, ursa_op *op) {
  op->next = NULL;
  if (*tail)
    (*tail)->next = op;
  else
    *head = op;
  *tail = op;
}

static ursa_op *list_pop(ursa_op **head, ursa_op **tail) {
  ursa_op *op = *head;
  if (op) {
    *head = op->next;
    if (!*head) *tail = NULL;
    op->next = NULL;
  }
  return op;
}

/* O(n), but only cancel and close of an op that is still waiting use it. */
static void list_remove(ursa_op **head, ursa_op **tail, ursa_op *op) {
  ursa_op *prev = NULL;
  for (ursa_op *it = *head; it; prev = it, it = it->next) {
    if (it != op) continue;
    if (prev)
      prev->next = op->next;
    else
      *head = op->next;
    if (*tail == op) *tail = prev;
    op->next = NULL;
    return;
  }
}

/* ---- the SQ ---- */

bool ursa__sq_reserve(ursa_loop *loop, unsigned n) {
  if (loop->be->sq_space(loop) >= n) return true;
  /* Full: hand what is queued over now.  CQEs were copied out before
   * dispatch, so this is safe from inside callbacks. */
  loop->be->submit(loop);
  loop->sq_dirty = false;
  return loop->be->sq_space(loop) >= n;
}

struct io_uring_sqe *ursa__get_sqe(ursa_loop *loop) {
  loop->stats.sqes++;
  loop->sq_dirty = true;
  return loop->be->get_sqe(loop);
}

static void start(ursa_loop *loop, ursa_op *op) {
  /* Behind anything already waiting, so ops reach the kernel in order. */
  if (!loop->wait_head && ursa__sq_reserve(loop, op->nsqe)) {
    op->state = URSA__INFLIGHT;
    ursa__op_type_of(op)->prep(loop, op);
    return;
  }
  loop->stats.sq_full++;
  op->state = URSA__WAITING;
  list_push(&loop->wait_head, &loop->wait_tail, op);
}

void ursa__op_submit(ursa_loop *loop, ursa_op *op) {
  if (op->state == URSA__IDLE) loop->active++;
  op->flags &= (uint8_t)~(URSA__F_CANCEL | URSA__F_MULTISHOT);
  start(loop, op);
}

void ursa__op_resubmit(ursa_loop *loop, ursa_op *op) {
  op->flags &= (uint8_t)~URSA__F_MULTISHOT;
  start(loop, op);
}

static void prep_cancel(ursa_loop *loop, ursa_op *op) {
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
  sqe->user_data = 0; /* its own result is of no interest */
}

void ursa__flush_waiting(ursa_loop *loop) {
  while (loop->cancel_head && ursa__sq_reserve(loop, 1)) {
    ursa_op *op = list_pop(&loop->cancel_head, &loop->cancel_tail);
    op->flags &= (uint8_t)~URSA__F_CANCELQ;
    prep_cancel(loop, op);
  }
  while (loop->wait_head && ursa__sq_reserve(loop, loop->wait_head->nsqe)) {
    ursa_op *op = list_pop(&loop->wait_head, &loop->wait_tail);
    op->state = URSA__INFLIGHT;
    ursa__op_type_of(op)->prep(loop, op);
  }
}

int ursa__op_cancel(ursa_loop *loop, ursa_op *op) {
  switch (op->state) {
    case URSA__IDLE:
      return -ENOENT;
    case URSA__PENDING:
      /* A cancel already asked for counts as asked again. */
      return (op->flags & URSA__F_CANCEL) ? 0 : -EALREADY;
    case URSA__WAITING:
      /* Never reached the kernel: the result is ursa's to give. */
      list_remove(&loop->wait_head, &loop->wait_tail, op);
      op->flags |= URSA__F_CANCEL;
      ursa__op_defer(loop, op, -ECANCELED);
      return 0;
    case URSA__ARMED:
      /* A timer in the loop's heap: the kernel knows nothing of it. */
      ursa__timer_unarm(loop, op);
      op->flags |= URSA__F_CANCEL;
      ursa__op_defer(loop, op, -ECANCELED);
      return 0;
    case URSA__INFLIGHT:
      if (op->flags & URSA__F_CANCEL) return 0;
      op->flags |= URSA__F_CANCEL;
      if (!loop->cancel_head && ursa__sq_reserve(loop, 1)) {
        prep_cancel(loop, op);
      } else {
        op->flags |= URSA__F_CANCELQ;
        list_push(&loop->cancel_head, &loop->cancel_tail, op);
      }
      return 0;
    default:
      return -EINVAL;
  }
}

int ursa_cancel(ursa_loop *loop, ursa_op *op) {
  if (!loop || !op) return ursa__invalid("ursa_cancel: NULL %s", op ? "loop" : "op");
  if (op->kind >= ursa__op_kinds())
    return ursa__invalid("ursa_cancel: op kind %u is unknown", op->kind);
  if (op->state == URSA__IDLE) return -ENOENT; /* never started, or done */
  const ursa__op_type *t = ursa__op_type_of(op);
  return t->cancel ? t->cancel(loop, op) : ursa__op_cancel(loop, op);
}

void ursa__op_defer(ursa_loop *loop, ursa_op *op, int res) {
  if (op->state == URSA__IDLE) loop->active++;
  op->state = URSA__PENDING;
  op->res = res;
  list_push(&loop->pend_head, &loop->pend_tail, op);
}

void ursa__op_done(ursa_loop *loop, ursa_op *op) {
  /* A cancel still waiting for an SQE must not hit the op's next use. */
  if (op->flags & URSA__F_CANCELQ)
    list_remove(&loop->cancel_head, &loop->cancel_tail, op);
  op->state = URSA__IDLE;
  op->flags = 0;
  loop->active--;
}

unsigned ursa__run_pending(ursa_loop *loop) {
  unsigned n = 0;
  /* Only what is queued now: callbacks may defer more, for the next round. */
  ursa_op *tail = loop->pend_tail;
  while (loop->pend_head) {
    ursa_op *op = list_pop(&loop->pend_head, &loop->pend_tail);
    bool last = op == tail;
    ursa__op_type_of(op)->complete(loop, op, op->res, 0);
    n++;
    if (last) break;
  }
  return n;
}
