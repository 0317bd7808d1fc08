/* listener.c - listening stream sockets with multishot accept. */
#include "sock.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define L_LISTENING 0x01
#define L_IN_CALLBACK 0x08
#define L_SEQPACKET 0x10
#define L_DIRECT 0x20 /* accepts go into direct descriptors */
#define L_UNIX 0x40   /* AF_UNIX: accepted streams never go zero-copy */

/* Direct accepts are single-shot, each holding a reserved slot: when the
 * kernel finds the table full it has already taken the connection off the
 * backlog and resets it, so ursa never lets an accept meet a full table. */
static bool reserve_slot(ursa_listener *l) {
  return !(l->flags & L_DIRECT) || ursa__direct_reserve(l->loop);
}

#define LISTENER_OF(op, member) URSA__CONTAINER(op, ursa_listener, member)

static void backoff_cb(ursa_timer *t, int status);
static void pause_accepting(ursa_listener *l);

static const ursa__handle_kind listener_kind;

static void maybe_finish_close(ursa_listener *l) {
  ursa__handle_maybe_close(&l->handle);
}

int ursa_listen(ursa_loop *loop, ursa_listener *l, const struct sockaddr *addr,
                socklen_t addrlen, int backlog, unsigned flags,
                ursa_connection_cb cb) {
  if (!loop || !l || !cb)
    return ursa__invalid("ursa_listen: NULL %s",
                         !loop ? "loop" : !l ? "listener" : "callback");
  int r = ursa__check_sockaddr(addr, addrlen, "ursa_listen");
  if (r) return r;
  if (flags & ~(URSA_LISTEN_REUSEPORT | URSA_LISTEN_V6ONLY | URSA_SEQPACKET |
                URSA_LISTEN_NODELAY))
    return ursa__invalid("ursa_listen: unknown flags 0x%x", flags);
  if ((flags & URSA_SEQPACKET) && addr->sa_family != AF_UNIX)
    return ursa__invalid("ursa_listen: seqpacket needs a unix: address");
  int type = (flags & URSA_SEQPACKET) ? SOCK_SEQPACKET : SOCK_STREAM;
  ursa_sockfile file;
  int fd = ursa__socket_open(
      addr, addrlen, type,
      URSA__SO_REUSEADDR |
          ((flags & URSA_LISTEN_REUSEPORT) ? URSA__SO_REUSEPORT : 0) |
          ((flags & URSA_LISTEN_V6ONLY) ? URSA__SO_V6ONLY : 0) |
          ((flags & URSA_LISTEN_NODELAY) ? URSA__SO_NODELAY : 0),
      backlog > 0 ? backlog : 0, &file);
  if (fd < 0) return fd;
  void *data = l->data;
  memset(l, 0, sizeof(*l));
  l->data = data;
  l->file = file;
  l->fd = fd;
  l->cb = cb;
  l->pending_fd = -1;
  l->flags = L_LISTENING;
  l->accept_op.kind = URSA__KIND(accept);
  l->accept_op.nsqe = 1;
  ursa__handle_init(loop, &l->handle, &listener_kind, URSA_HANDLE_LISTENER);
  l->handle.nops = 1; /* the accept, or the back-off standing in for it */
  if (type == SOCK_SEQPACKET) l->flags |= L_SEQPACKET;
  if (addr->sa_family == AF_UNIX) l->flags |= L_UNIX;
  if (loop->used & URSA_FEAT_DIRECT_FILES) {
    l->flags |= L_DIRECT;
    /* Its streams' local address, when one address is bound: asked once
     * here, not at every accept. */
    l->local_len = sizeof(l->local);
    if (getsockname(fd, (struct sockaddr *)&l->local, &l->local_len) < 0 ||
        ursa__addr_is_any((struct sockaddr *)&l->local) ||
        l->local_len > sizeof(l->local))
      l->local_len = 0;
  }
  if (reserve_slot(l))
    ursa__op_submit(loop, &l->accept_op);
  else /* every slot is taken: look again after the back-off */
    pause_accepting(l);
  return 0;
}

int ursa_listener_addr(const ursa_listener *l, struct sockaddr_storage *addr,
                       socklen_t *addrlen) {
  if (!l || !addr || !addrlen)
    return ursa__invalid("ursa_listener_addr: NULL argument");
  if (!(l->flags & L_LISTENING))
    return ursa__invalid("ursa_listener_addr: listener is not open");
  *addrlen = sizeof(*addr);
  return getsockname(l->fd, (struct sockaddr *)addr, addrlen) < 0 ? -errno
                                                                  : 0;
}

/* No descriptor to ask later: a direct stream keeps what the accept said,
 * and the listener's address unless it is a wildcard. */
static struct ursa__peer *make_peer(const ursa_listener *l) {
  socklen_t pl = l->peer_len < sizeof(l->peer) ? l->peer_len
                                               : sizeof(l->peer);
  struct ursa__peer *peer = malloc(sizeof(*peer) + pl + l->local_len);
  if (!peer) return NULL;
  peer->len = pl;
  peer->local_len = l->local_len;
  memcpy(peer->bytes, &l->peer, pl);
  memcpy(peer->bytes + pl, &l->local, l->local_len);
  return peer;
}

int ursa_accept(ursa_listener *l, ursa_stream *client) {
  if (!l || !client)
    return ursa__invalid("ursa_accept: NULL %s", l ? "stream" : "listener");
  if (!(l->flags & L_IN_CALLBACK) || l->pending_fd < 0)
    return ursa__invalid(
        "ursa_accept: no connection waiting (call it from the connection "
        "callback with status 0)");
  struct ursa__peer *peer = NULL;
  if ((l->flags & L_DIRECT) && !(peer = make_peer(l))) return -ENOMEM;
  ursa__stream_init(l->loop, client, l->pending_fd,
                    (l->flags & L_SEQPACKET) != 0,
                    (l->flags & L_DIRECT) != 0, (l->flags & L_UNIX) != 0);
  client->direct_peer = peer;
  l->pending_fd = -1;
  return 0;
}

/* ---- for hand-offs (handoff.c) ---- */

int ursa__listener_take(ursa_listener *l, const char *fn, int *fd,
                        uint32_t *hflags, struct ursa__peer **peer) {
  if (!(l->flags & L_IN_CALLBACK) || l->pending_fd < 0)
    return ursa__invalid("%s: no connection waiting (call it from the "
                         "connection callback with status 0)", fn);
  *fd = l->pending_fd;
  *hflags = ((l->flags & L_SEQPACKET) ? URSA__H_SEQPACKET : 0) |
            ((l->flags & L_UNIX) ? URSA__H_UNIX : 0) |
            ((l->flags & L_DIRECT) ? URSA__H_DIRECT : 0);
  if (peer && (l->flags & L_DIRECT) && !(*peer = make_peer(l)))
    return -ENOMEM;
  return 0;
}

void ursa__listener_taken(ursa_listener *l) { l->pending_fd = -1; }

static void accept_prep(ursa_loop *loop, ursa_op *op) {
  ursa_listener *l = LISTENER_OF(op, accept_op);
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  bool multi = (loop->used & URSA_FEAT_MULTISHOT_ACCEPT) &&
               !(l->flags & L_DIRECT);
  if (l->flags & L_DIRECT) {
    /* The kernel picks a free slot (one is reserved for this accept);
     * close-on-exec means nothing there. */
    l->peer_len = sizeof(l->peer);
    io_uring_prep_accept_direct(sqe, l->fd, (struct sockaddr *)&l->peer,
                                &l->peer_len, 0, IORING_FILE_INDEX_ALLOC - 1);
  } else if (multi) {
    io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
  } else {
    io_uring_prep_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
  }
  if (multi) op->flags |= URSA__F_MULTISHOT;
  io_uring_sqe_set_data(sqe, op);
}

/* With no accept in flight: wait out a back-off before the next, or, if
 * the listener is closing, give up the accept's share of the close. */
static void pause_accepting(ursa_listener *l) {
  if (l->handle.closing) {
    l->handle.nops--;
    maybe_finish_close(l);
  } else {
    ursa_timer_start(l->loop, &l->backoff, URSA_ACCEPT_BACKOFF_MS, 0,
                     backoff_cb);
  }
}

/* Out of descriptors (or direct slots): tell the application, which may
 * free some, then try again after a pause instead of spinning.  The
 * accept op ends here; the back-off timer stands in for it. */
static void back_off(ursa_loop *loop, ursa_listener *l, ursa_op *op,
                     int err) {
  l->cb(l, err);
  ursa__op_done(loop, op);
  pause_accepting(l);
}

/* Arms the accept again from its completion, if a slot can be had. */
static void rearm(ursa_loop *loop, ursa_listener *l, ursa_op *op) {
  if (!reserve_slot(l)) {
    back_off(loop, l, op, -ENFILE);
    return;
  }
  loop->stats.rearms++;
  ursa__op_resubmit(loop, op);
}

/* Closes a connection nobody took: a descriptor, or a direct slot. */
static void drop_accepted(ursa_listener *l, int fd) {
  if (l->flags & L_DIRECT)
    ursa__direct_release(l->loop, fd);
  else
    close(fd);
}

/* Errors after which accepting again makes sense. */
static bool transient(int err) {
  switch (err) {
    case -ECONNABORTED:
    case -EPROTO:
    case -EPERM: /* a firewall rule refused this one */
    case -ENOBUFS:
    case -ENOMEM:
    case -EINTR:
    case -EAGAIN:
    case -ENETDOWN:
    case -EHOSTUNREACH:
    case -ENETUNREACH:
    case -ENOPROTOOPT:
    case -EOPNOTSUPP:
      return true;
    default:
      return false;
  }
}

static void accept_complete(ursa_loop *loop, ursa_op *op, int res,
                           uint32_t flags) {
  ursa_listener *l = LISTENER_OF(op, accept_op);
  bool more = flags & IORING_CQE_F_MORE;
  bool closing = l->handle.closing || (op->flags & URSA__F_CANCEL);
  /* A direct accept is single-shot: its reserved slot is now the new
   * connection's, or free again. */
  if ((l->flags & L_DIRECT) && res < 0) ursa__direct_unreserve(loop);
  if (res >= 0) {
    if (closing) {
      drop_accepted(l, res);
    } else {
      l->pending_fd = res;
      l->flags |= L_IN_CALLBACK;
      l->cb(l, 0);
      l->flags &= ~L_IN_CALLBACK;
      if (l->pending_fd >= 0) { /* not taken: refuse it */
        drop_accepted(l, l->pending_fd);
        l->pending_fd = -1;
      }
    }
    if (more) return;
    closing = l->handle.closing || (op->flags & URSA__F_CANCEL);
    if (!closing) {
      rearm(loop, l, op);
      return;
    }
  } else if (!closing) {
    if (res == -EINVAL && (op->flags & URSA__F_MULTISHOT)) {
      loop->used &= ~URSA_FEAT_MULTISHOT_ACCEPT; /* fall back */
      ursa__op_resubmit(loop, op);
      return;
    }
    if ((res == -EMFILE || res == -ENFILE) && !more) {
      /* The connection stays in the backlog (a direct accept never meets
       * a full table, so this is the process's descriptor limit). */
      back_off(loop, l, op, res);
      return;
    }
    l->cb(l, res);
    if (more) return;
    closing = l->handle.closing;
    if (transient(res) && !closing) {
      rearm(loop, l, op);
      return;
    }
  }
  if (more) return;
  ursa__handle_op_end(loop, &l->handle, op);
  maybe_finish_close(l);
}

URSA__OP_TYPE(accept) = {
    .name = "accept",
    .prep = accept_prep,
    .complete = accept_complete,
};

static void backoff_cb(ursa_timer *t, int status) {
  ursa_listener *l = URSA__CONTAINER(t, ursa_listener, backoff);
  (void)status;
  if (!l->handle.closing) {
    if (reserve_slot(l)) {
      ursa__op_submit(l->loop, &l->accept_op);
      return;
    }
    /* Still no slot: say so (the application may close some) and wait. */
    l->cb(l, -ENFILE);
  }
  pause_accepting(l);
}

static void listener_close(ursa_handle *h) {
  ursa_listener *l = (ursa_listener *)h;
  ursa__op_cancel(l->loop, &l->accept_op);
  ursa__op_cancel(l->loop, &l->backoff.op);
}

static void listener_prep_close(ursa_loop *loop, ursa_handle *h) {
  ursa__handle_prep_close(loop, h, ((ursa_listener *)h)->fd, -1);
}

static void listener_closed(ursa_handle *h) {
  ursa_listener *l = (ursa_listener *)h;
  ursa_sockfile_remove(&l->file);
  l->fd = -1;
  l->flags = 0;
}

static const ursa__handle_kind listener_kind = {
    .name = "listener",
    .close = listener_close,
    .prep_close = listener_prep_close,
    .closed = listener_closed,
};

int ursa_listener_close(ursa_listener *l, ursa_close_cb cb) {
  return ursa_close(l ? &l->handle : NULL, cb);
}
