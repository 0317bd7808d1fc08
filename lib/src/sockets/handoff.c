/* handoff.c - moving an accepted connection to another loop: a post that
 * carries the descriptor, or for a direct descriptor a MSG_RING that moves
 * it from one registered table to the other. */
#include "sock.h"

#include <stdlib.h>
#include <unistd.h>

/* On the target's thread (or in its close, with -ECANCELED). */
static void handoff_arrived(ursa_post_req *p, int status) {
  ursa_handoff_req *req = URSA__CONTAINER(p, ursa_handoff_req, post);
  int fd = req->fd;
  req->fd = -1;
  if (status < 0) {
    close(fd);
  } else {
    *req->stream = (ursa_stream){0};
    ursa__stream_init(req->target, req->stream, fd,
                      (req->flags & URSA__H_SEQPACKET) != 0, false,
                      (req->flags & URSA__H_UNIX) != 0);
  }
  req->cb(req, status);
}

/* ---- a direct descriptor's move: IORING_MSG_SEND_FD ----
 * Two completions end it, on two threads: the MSG_RING's on the accepting
 * loop (its request memory is in use until then) and the arrival on the
 * target (the slot the kernel gave it).  The request is the caller's, and
 * its callback may free it, so the callback waits for both: the one that
 * comes second finishes, on the target's thread (the accepting loop posts
 * to it when it is second). */

/* The last part, on the target's thread: the stream opens there. */
static void direct_finish(ursa_loop *target, ursa_handoff_req *req,
                          int status) {
  if (status < 0) {
    free(req->peer);
    req->peer = NULL;
    req->cb(req, status);
    return;
  }
  target->direct_used++; /* the kernel's allocation, counted here */
  *req->stream = (ursa_stream){0};
  ursa__stream_init(target, req->stream, req->slot,
                    (req->flags & URSA__H_SEQPACKET) != 0, true,
                    (req->flags & URSA__H_UNIX) != 0);
  req->stream->direct_peer = req->peer;
  req->peer = NULL;
  req->cb(req, 0);
}

static bool last_part(ursa_handoff_req *req) {
  return __atomic_sub_fetch(&req->parts, 1, __ATOMIC_ACQ_REL) == 0;
}

/* Posted by the accepting loop when it came second, or failed. */
static void direct_posted(ursa_post_req *p, int status) {
  ursa_handoff_req *req = URSA__CONTAINER(p, ursa_handoff_req, post);
  direct_finish(req->target, req, status < 0 ? -ECANCELED : req->err);
}

/* The MSG_RING's arrival on the target (the core hands it here: the op is
 * the accepting loop's memory, and its kind is not read). */
static void arrive_complete(ursa_loop *loop, ursa_op *op, int res,
                            uint32_t flags) {
  ursa_handoff_req *req = URSA__CONTAINER(op, ursa_handoff_req, arrive_op);
  (void)flags;
  /* The request was filled on the accepting loop's thread: the kernel
   * orders it before this completion, the acquire says so to tools that
   * cannot see through the ring. */
  (void)__atomic_load_n(&req->parts, __ATOMIC_ACQUIRE);
  if (res >= 0)
    req->slot = res;
  else
    req->err = res; /* -ECANCELED: the target closed with it in its ring */
  if (last_part(req)) direct_finish(loop, req, req->err);
}

static void handoff_send_prep(ursa_loop *loop, ursa_op *op) {
  ursa_handoff_req *req = URSA__CONTAINER(op, ursa_handoff_req, send_op);
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  io_uring_prep_rw(IORING_OP_MSG_RING, sqe,
                   req->target->be->ring_fd(req->target),
                   (void *)(uintptr_t)IORING_MSG_SEND_FD, 0,
                   (uint64_t)(uintptr_t)&req->arrive_op | URSA__UD_ARRIVE);
  sqe->addr3 = (uint64_t)(unsigned)req->fd;
  sqe->file_index = IORING_FILE_INDEX_ALLOC;
  io_uring_sqe_set_data(sqe, op);
}

static void handoff_send_complete(ursa_loop *loop, ursa_op *op, int res,
                                 uint32_t flags) {
  ursa_handoff_req *req = URSA__CONTAINER(op, ursa_handoff_req, send_op);
  ursa_loop *target = req->target;
  (void)flags;
  ursa__op_done(loop, op);
  /* Moved or not, this ring's slot goes: the socket lives on in the
   * target's table, or closes. */
  ursa__direct_release(loop, req->fd);
  req->fd = -1;
  /* Failed: no arrival will come, this is the only part. */
  if (res < 0) req->err = res;
  if (res < 0 || last_part(req)) {
    if (ursa_post(target, &req->post, direct_posted) < 0) {
      /* The target is closing: a slot it got goes with its ring. */
      free(req->peer);
      req->peer = NULL;
      req->cb(req, -ECANCELED);
    }
  }
  ursa_loop_release(target);
}

URSA__OP_TYPE(handoff_send) = {
    .name = "msg_ring",
    .prep = handoff_send_prep,
    .complete = handoff_send_complete,
};

static int handoff_direct(ursa_listener *l, ursa_loop *target,
                          ursa_handoff_req *req, ursa_handoff_cb cb) {
  ursa_loop *src = l->loop;
  if (!target->be->ring_fd || !target->direct_files ||
      !(src->used & URSA_FEAT_MSG_RING))
    return ursa__refuse(-EOPNOTSUPP, "ursa_accept_handoff: a direct "
                        "descriptor moves only by MSG_RING into an io_uring "
                        "loop with direct_files");
  if (__atomic_load_n(&target->post_closing, __ATOMIC_SEQ_CST))
    return ursa__refuse(-ESHUTDOWN, "ursa_accept_handoff: the target loop "
                        "is closing");
  struct ursa__peer *peer = NULL;
  int r = ursa__listener_take(l, "ursa_accept_handoff", &req->fd,
                              &req->flags, &peer);
  if (r < 0) return r;
  req->target = target;
  req->cb = cb;
  req->slot = -1;
  req->err = 0;
  req->peer = peer;
  req->send_op = (ursa_op){0};
  req->send_op.kind = URSA__KIND(handoff_send);
  req->send_op.nsqe = 1;
  req->arrive_op = (ursa_op){0};
  ursa__set_arrive(arrive_complete);
  ursa_loop_retain(target); /* until the MSG_RING's completion */
  __atomic_store_n(&req->parts, 2, __ATOMIC_RELEASE); /* all of it filled */
  ursa__op_submit(src, &req->send_op);
  ursa__listener_taken(l);
  return 0;
}

int ursa_accept_handoff(ursa_listener *l, ursa_loop *target,
                        ursa_handoff_req *req, ursa_handoff_cb cb) {
  if (!l || !target || !req || !req->stream || !cb)
    return ursa__invalid("ursa_accept_handoff: NULL %s",
                         !l ? "listener" : !target ? "target loop"
                         : !req ? "request" : !cb ? "callback"
                                : "req->stream");
  int fd;
  uint32_t flags;
  int r = ursa__listener_take(l, "ursa_accept_handoff", &fd, &flags, NULL);
  if (r < 0) return r;
  if (__atomic_load_n(&req->post.busy, __ATOMIC_ACQUIRE))
    return ursa__refuse(-EBUSY, "ursa_accept_handoff: the request is still "
                        "in flight");
  if (flags & URSA__H_DIRECT) return handoff_direct(l, target, req, cb);
  req->target = target;
  req->cb = cb;
  req->fd = fd;
  req->flags = flags;
  r = ursa_post(target, &req->post, handoff_arrived);
  if (r < 0) return r; /* the listener still owns the connection */
  ursa__listener_taken(l);
  return 0;
}
