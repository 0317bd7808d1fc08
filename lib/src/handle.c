/* handle.c - the handle base: the one close path that streams, listeners
 * and datagram sockets share (cancel what is in flight, wait for every
 * completion, close the socket, one callback). */
#include "sock.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

void ursa__handle_init(ursa_loop *loop, ursa_handle_base *h,
                       uint8_t close_kind, ursa_handle_type type) {
  h->close_op = (ursa_op){0};
  h->close_op.kind = close_kind;
  h->close_op.nsqe = 1;
  h->nops = 0;
  h->closing = h->closed = 0;
  h->type = (uint8_t)type;
  h->hnext = NULL;
  h->hprev = loop->handles_tail;
  if (loop->handles_tail)
    loop->handles_tail->hnext = h;
  else
    loop->handles_head = h;
  loop->handles_tail = h;
  loop->handles++;
}

void ursa__handle_submit(ursa_loop *loop, ursa_handle_base *h, ursa_op *op) {
  h->nops++;
  ursa__op_submit(loop, op);
}

void ursa__handle_op_end(ursa_loop *loop, ursa_handle_base *h, ursa_op *op) {
  ursa__op_done(loop, op);
  h->nops--;
}

int ursa__handle_begin_close(ursa_handle_base *h) {
  if (h->closing) return -EALREADY;
  h->closing = 1;
  return 0;
}

void ursa__handle_maybe_close(ursa_loop *loop, ursa_handle_base *h) {
  if (!h->closing || h->closed || h->nops) return;
  h->closed = 1;
  ursa__op_submit(loop, &h->close_op);
}

void ursa__handle_prep_close(ursa_loop *loop, ursa_handle_base *h, int fd,
                             int slot) {
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  if (slot >= 0)
    io_uring_prep_close_direct(sqe, (unsigned)slot);
  else
    io_uring_prep_close(sqe, fd);
  io_uring_sqe_set_data(sqe, &h->close_op);
}

void ursa__handle_closed(ursa_loop *loop, ursa_handle_base *h) {
  ursa__op_done(loop, &h->close_op);
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
}

/* ---- walking and closing them all ---- */

static void *handle_of(ursa_handle_base *h) {
  switch (h->type) {
    case URSA_HANDLE_STREAM:
      return URSA__CONTAINER(h, ursa_stream, base);
    case URSA_HANDLE_LISTENER:
      return URSA__CONTAINER(h, ursa_listener, base);
    case URSA_HANDLE_DGRAM:
      return URSA__CONTAINER(h, ursa_dgram, base);
    case URSA_HANDLE_POLL:
      return URSA__CONTAINER(h, ursa_poll, base);
    case URSA_HANDLE_SIGNAL:
      return URSA__CONTAINER(URSA__CONTAINER(h, ursa_poll, base), ursa_signal,
                             poll);
    default:
      return NULL;
  }
}

static const ursa_handle_base *base_of(ursa_handle_type type,
                                       const void *handle) {
  switch (type) {
    case URSA_HANDLE_STREAM:
      return &((const ursa_stream *)handle)->base;
    case URSA_HANDLE_LISTENER:
      return &((const ursa_listener *)handle)->base;
    case URSA_HANDLE_DGRAM:
      return &((const ursa_dgram *)handle)->base;
    case URSA_HANDLE_POLL:
      return &((const ursa_poll *)handle)->base;
    case URSA_HANDLE_SIGNAL:
      return &((const ursa_signal *)handle)->poll.base;
    default:
      return NULL;
  }
}

void ursa_loop_walk(ursa_loop *loop, ursa_walk_cb cb, void *arg) {
  if (!loop || !cb) return;
  /* A handle closed by cb leaves the list only at its close callback,
   * which never runs inside cb: the walk's next pointer stays good. */
  for (ursa_handle_base *h = loop->handles_head, *next; h; h = next) {
    next = h->hnext;
    cb((ursa_handle_type)h->type, handle_of(h), arg);
  }
}

int ursa_handle_closing(ursa_handle_type type, const void *handle) {
  const ursa_handle_base *h = handle ? base_of(type, handle) : NULL;
  return h && h->closing;
}

#define H_CLOSE_ALL 0x02 /* in closing: closed by ursa_loop_close_all() */

bool ursa__handle_close_all_note(ursa_loop *loop, ursa_handle_base *h) {
  if (!(h->closing & H_CLOSE_ALL)) return false;
  if (loop->close_all_cb)
    loop->close_all_cb((ursa_handle_type)h->type, handle_of(h),
                       loop->close_all_arg);
  return true;
}

static void stream_closed(ursa_stream *s) { (void)s; }
static void listener_closed(ursa_listener *l) { (void)l; }
static void dgram_closed(ursa_dgram *d) { (void)d; }
static void poll_closed(ursa_poll *p) { (void)p; }
static void signal_closed(ursa_signal *s) { (void)s; }

unsigned ursa_loop_close_all(ursa_loop *loop, ursa_walk_cb cb, void *arg) {
  if (!loop) return 0;
  loop->close_all_cb = cb;
  loop->close_all_arg = arg;
  unsigned n = 0;
  for (ursa_handle_base *h = loop->handles_head, *next; h; h = next) {
    next = h->hnext;
    if (h->closing) continue;
    void *p = handle_of(h);
    int r = -EINVAL;
    switch (h->type) {
      case URSA_HANDLE_STREAM:
        r = ursa_stream_close(p, stream_closed);
        break;
      case URSA_HANDLE_LISTENER:
        r = ursa_listener_close(p, listener_closed);
        break;
      case URSA_HANDLE_DGRAM:
        r = ursa_dgram_close(p, dgram_closed);
        break;
      case URSA_HANDLE_POLL:
        r = ursa_poll_close(p, poll_closed);
        break;
      case URSA_HANDLE_SIGNAL:
        r = ursa_signal_close(p, signal_closed);
        break;
    }
    if (r == 0) {
      h->closing |= H_CLOSE_ALL;
      n++;
    }
  }
  return n;
}
