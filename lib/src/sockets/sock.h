/* sock.h - the socket layer's ops, for the op table (ursa.c) and between
 * the layer's own files. */
#ifndef URSA_SOCK_H
#define URSA_SOCK_H

#include "addr.h"
#include "bufring.h"
#include "core.h"

#include <errno.h>

/* The layer's op kinds (each row is defined beside its code). */
URSA__OP_DECLARE(recv);
URSA__OP_DECLARE(connect);
URSA__OP_DECLARE(write);
URSA__OP_DECLARE(dsend);
URSA__OP_DECLARE(send);
URSA__OP_DECLARE(shutdown);
URSA__OP_DECLARE(drecv);
URSA__OP_DECLARE(accept);
URSA__OP_DECLARE(poll);
URSA__OP_DECLARE(handoff_send);

/* dgram.c: 0, or -EINVAL named for fn when d is NULL or not open. */
int ursa__dgram_check_open(const ursa_dgram *d, const char *fn) URSA__HIDDEN;

/* dgram_msg.c: the control data and socket options of datagram sockets. */
#define URSA__RECV_CTRL \
  (URSA_RECV_GRO | URSA_RECV_PKTINFO | URSA_RECV_TOS | URSA_RECV_TIMESTAMP)
#define URSA__DGRAM_CTRL 192 /* room for the control data asked for */
/* Sets the socket options `what` needs (once each); 0 or a named error. */
int ursa__dgram_recv_opts(ursa_dgram *d, unsigned what, const char *fn)
    URSA__HIDDEN;
/* Fills info from a receive's control data (n: the payload's length). */
void ursa__dgram_info(ursa_dgram_info *info, const void *control,
                      size_t controllen, size_t n) URSA__HIDDEN;
/* Cancels every ursa_dgram_sendmsgs() request in flight (close). */
void ursa__dgram_sendmsgs_cancel_all(ursa_dgram *d) URSA__HIDDEN;
URSA__OP_DECLARE(dsendm);

/* Prepares a stream for an open fd (accept, connect, open); fd is a
 * direct-descriptor slot when direct is set, local marks AF_UNIX. */
void ursa__stream_init(ursa_loop *loop, ursa_stream *s, int fd,
                       bool seqpacket, bool direct, bool local) URSA__HIDDEN;

/* An accepted direct stream's peer address (it has no descriptor to ask
 * with), and the listener it came from for its local one. */
struct ursa__peer {
  socklen_t len;       /* the peer's address: bytes[0, len) */
  socklen_t local_len; /* the local one, after it; 0: the listener's
                          address is a wildcard */
  char bytes[];        /* as long as the two need (24 for IPv4 peers) */
};

/* listener.c, for handoff.c: the connection waiting in the listener's
 * callback (its descriptor, or its direct slot), what kind of stream it
 * makes (URSA__H_*), and for a direct one its addresses (malloc'd, when
 * peer is given).  -EINVAL (named for fn) when none waits, -ENOMEM. */
#define URSA__H_SEQPACKET 1u
#define URSA__H_UNIX 2u
#define URSA__H_DIRECT 4u
int ursa__listener_take(ursa_listener *l, const char *fn, int *fd,
                        uint32_t *hflags, struct ursa__peer **peer)
    URSA__HIDDEN;
/* The connection went elsewhere: the listener no longer holds it. */
void ursa__listener_taken(ursa_listener *l) URSA__HIDDEN;

/* The end of a receive (stream or datagram), read the same way for both:
 * ENOBUFS (the ring ran dry) is counted, and a kernel that takes the
 * opcode but refuses multishot (EINVAL) drops the loop to single-shot
 * receives.  Returns the result to act on: -ENOBUFS, for both, means arm
 * the receive again. */
static inline int ursa__recv_fallback(ursa_loop *loop, const ursa_op *op,
                                      int res) {
  if (res == -EINVAL && (op->flags & URSA__F_MULTISHOT)) {
    loop->used &= ~URSA_FEAT_MULTISHOT_RECV;
    return -ENOBUFS;
  }
  if (res == -ENOBUFS) {
    loop->stats.enobufs++;
    ursa__bufs_starved(loop);
  }
  return res;
}

/* stream_write.c: the loop's pool of batched-send vectors (each a msghdr
 * and write_batch iovecs), taken by a stream while a batch is sent; the
 * pool grows to the most batches ever in flight at once and is freed with
 * the loop. */
void ursa__sendv_free_all(ursa_loop *loop) URSA__HIDDEN;
/* stream_file.c: the loop's pipes for spliced file writes, closed with
 * the loop. */
void ursa__stream_pipes_free(ursa_loop *loop) URSA__HIDDEN;

/* slots.c: the direct-descriptor table.  Sets it up with up to want slots
 * (capped at RLIMIT_NOFILE; a kernel that refuses leaves accepts on
 * ordinary descriptors). */
void ursa__direct_init(ursa_loop *loop, unsigned want, uint32_t disable)
    URSA__HIDDEN;
/* Reserves a slot for an accept; false when every slot is taken. */
bool ursa__direct_reserve(ursa_loop *loop) URSA__HIDDEN;
/* Gives a reserved or held slot back to the count (the kernel freed it:
 * a failed accept, a closed stream). */
void ursa__direct_unreserve(ursa_loop *loop) URSA__HIDDEN;
/* Empties a slot at once (a connection nobody took) and gives it back. */
void ursa__direct_release(ursa_loop *loop, int slot) URSA__HIDDEN;



#endif /* URSA_SOCK_H */
