/* sock.h - the socket layer's ops, for the op table (ursa.c) and between
 * the layer's own files. */
#ifndef URSA_SOCK_H
#define URSA_SOCK_H

#include "addr.h"
#include "bufring.h"
#include "core.h"

void ursa__accept_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__accept_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__lclose_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__lclose_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__connect_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__connect_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__recv_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__recv_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__send_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__send_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__write_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__shutdown_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__shutdown_complete(ursa_loop *, ursa_op *, int, uint32_t)
    URSA__HIDDEN;
void ursa__sclose_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__sclose_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
/* Cancels a write (the SEND kind of ursa_cancel). */
int ursa__write_cancel(ursa_loop *loop, ursa_op *op) URSA__HIDDEN;
void ursa__drecv_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__drecv_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__dsend_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__dsend_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
void ursa__dclose_prep(ursa_loop *, ursa_op *) URSA__HIDDEN;
void ursa__dclose_complete(ursa_loop *, ursa_op *, int, uint32_t) URSA__HIDDEN;
/* Prepares a stream for an open fd (accept, connect, open); fd is a
 * direct-descriptor slot when direct is set, local marks AF_UNIX. */
void ursa__stream_init(ursa_loop *loop, ursa_stream *s, int fd,
                       bool seqpacket, bool direct, bool local) URSA__HIDDEN;

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
