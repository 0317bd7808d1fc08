/* handle.c - the handle base: the one close path that streams, listeners
 * and datagram sockets share (cancel what is in flight, wait for every
 * completion, close the socket, one callback). */
#include "sock.h"

#include <errno.h>

void ursa__handle_init(ursa_loop *loop, ursa_handle_base *h,
                       uint8_t close_kind) {
  h->close_op = (ursa_op){0};
  h->close_op.kind = close_kind;
  h->close_op.nsqe = 1;
  h->nops = 0;
  h->closing = h->closed = 0;
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
  loop->handles--;
}
