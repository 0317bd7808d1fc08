/* handle.c - the one life of every handle: open, its own ops counted,
 * one close (cancel what is in flight, wait for every completion, close
 * the descriptor, one callback), the loop's list for walks and close-all.
 * It names no kind of handle: each kind says what its close takes in its
 * ursa__handle_kind. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

#include "core.h"

URSA__OP_DECLARE(close);

void ursa__handle_init(ursa_loop *loop, ursa_handle *h,
                       const ursa__handle_kind *kind, ursa_handle_type type) {
  h->loop = loop;
  h->type = (uint8_t)type;
  h->closing = h->closed = 0;
  h->nops = 0;
  h->kind = kind;
  h->close_cb = NULL;
  h->close_op = (ursa_op){0};
  h->close_op.kind = URSA__KIND(close);
  h->close_op.nsqe = 1;
  h->hnext = NULL;
  h->hprev = loop->handles_tail;
  if (loop->handles_tail)
    loop->handles_tail->hnext = h;
  else
    loop->handles_head = h;
  loop->handles_tail = h;
  loop->handles++;
}

void ursa__handle_submit(ursa_loop *loop, ursa_handle *h, ursa_op *op) {
  h->nops++;
  ursa__op_submit(loop, op);
}

void ursa__handle_op_end(ursa_loop *loop, ursa_handle *h, ursa_op *op) {
  ursa__op_done(loop, op);
  h->nops--;
}

void ursa__handle_maybe_close(ursa_handle *h) {
  if (!h->closing || h->closed || h->nops) return;
  h->closed = 1;
  ursa__op_submit(h->loop, &h->close_op);
}

void ursa__handle_prep_close(ursa_loop *loop, ursa_handle *h, int fd,
                             int slot) {
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  if (slot >= 0)
    io_uring_prep_close_direct(sqe, (unsigned)slot);
  else
    io_uring_prep_close(sqe, fd);
  io_uring_sqe_set_data(sqe, &h->close_op);
}

int ursa_close(ursa_handle *h, ursa_close_cb cb) {
  if (!h) return ursa__invalid("ursa_close: NULL handle");
  if (!h->kind)
    return ursa__invalid(
        "ursa_close: the handle is not open (never "
        "opened, or its close callback has run)");
  if (h->closing) return -EALREADY;
  h->closing = 1;
  h->close_cb = cb;
  h->kind->close(h);
  ursa__handle_maybe_close(h);
  return 0;
}

int ursa_handle_closing(const ursa_handle *h) {
  return h && h->kind && h->closing;
}

/* A handle with no descriptor of its own closes with a NOP, so that its
 * callback still comes in order with the rest. */
static void close_prep(ursa_loop *loop, ursa_op *op) {
  ursa_handle *h = URSA__CONTAINER(op, ursa_handle, close_op);
  if (h->kind->prep_close) {
    h->kind->prep_close(loop, h);
    return;
  }
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  io_uring_prep_nop(sqe);
  io_uring_sqe_set_data(sqe, op);
}

static void close_complete(ursa_loop *loop, ursa_op *op, int res,
                           uint32_t flags) {
  ursa_handle *h = URSA__CONTAINER(op, ursa_handle, close_op);
  (void)res; /* the descriptor is gone whatever close said */
  (void)flags;
  ursa__op_done(loop, op);
  if (h->hprev)
    h->hprev->hnext = h->hnext;
  else
    loop->handles_head = h->hnext;
  if (h->hnext)
    h->hnext->hprev = h->hprev;
  else
    loop->handles_tail = h->hprev;
  h->hnext = h->hprev = NULL;
  loop->handles--;
  const ursa__handle_kind *kind = h->kind;
  ursa_close_cb cb = h->close_cb;
  h->kind = NULL; /* closed: a second close is refused */
  h->close_cb = NULL;
  if (kind->closed) kind->closed(h);
  if (cb) cb(h); /* the last touch: it may free h */
}

URSA__OP_TYPE(close) = {
    .name = "close",
    .prep = close_prep,
    .complete = close_complete,
};

/* ---- walking and closing them all ---- */

void ursa_loop_walk(ursa_loop *loop, ursa_walk_cb cb, void *arg) {
  if (!loop || !cb) return;
  /* A handle closed by cb leaves the list only at its close callback,
   * which never runs inside cb: the walk's next pointer stays good. */
  for (ursa_handle *h = loop->handles_head, *next; h; h = next) {
    next = h->hnext;
    cb(h, arg);
  }
}

unsigned ursa_loop_close_all(ursa_loop *loop, ursa_close_cb cb) {
  if (!loop) return 0;
  unsigned n = 0;
  for (ursa_handle *h = loop->handles_head, *next; h; h = next) {
    next = h->hnext;
    if (!h->closing && ursa_close(h, cb) == 0) n++;
  }
  return n;
}
