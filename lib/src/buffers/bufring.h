/* bufring.h - the buffer layer: the provided buffer rings receives land
 * in, and the slices a completion's bytes are handed out in. */
#ifndef URSA_BUFRING_H
#define URSA_BUFRING_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One provided buffer ring.  Buffers go back in any order, so the ring's
 * entries no longer say which buffer follows which; head follows the kernel
 * (it takes entries in ring order, and completions come in that order) so
 * that a bundle's later buffers and a partly filled buffer can be found. */
typedef struct ursa__bufring {
  struct io_uring_buf_ring *br; /* NULL: not set up */
  size_t map_bytes;
  char *bufs;
  unsigned count;
  unsigned size;
  int mask;
  uint16_t bgid;
  bool inc;        /* incremental consumption: buffers are filled by parts */
  uint16_t head;   /* ring index of the entry the kernel takes next */
  unsigned off;    /* inc: bytes of the head entry's buffer already filled */
  uint16_t *kept;  /* per buffer: slices of it the application keeps */
  unsigned nkept;  /* buffers kept (the large and pipe rings: at most half) */
  uint8_t *out;    /* per buffer: the kernel is done with it, not back yet */
  /* The ring holds at most depth entries; the other free buffers wait on
   * a stack, the last one given back on top (bufring.c says why). */
  uint16_t tail;   /* ring index of the next entry added */
  unsigned depth;
  uint16_t *spare;
  unsigned nspare;
} ursa__bufring;

/* The entries a ring starts with; it doubles, up to all its buffers, each
 * time a receive finds it empty. */
#define URSA__RING_DEPTH 32u
/* A receive found no buffer (ENOBUFS): every ring not at its full depth
 * gets twice the entries. */
void ursa__bufs_starved(ursa_loop *loop) URSA__HIDDEN;

/* A loop's receive buffers: rings[0] for messages (datagrams, seqpacket),
 * sring for byte streams: rings[1] when the kernel fills buffers by parts
 * (incremental consumption), else rings[0] too. */
struct ursa__bufs {
  ursa__bufring rings[4]; /* [2]: the large ring (URSA__LARGE_RING), [3]
                             the pipe ring (URSA__PIPE_RING) */
  ursa__bufring *sring;
  unsigned buf_size;        /* of every buffer in either ring */
  ursa__bufring *lent_ring; /* the slice a read callback holds now: */
  int lent_bid;             /* ...its buffer, or -1 */
  bool lent_kept;           /* ...and that callback kept it */
  unsigned kept;            /* slices the application keeps */
  unsigned keep_max;
  unsigned large_count;     /* buffers the large ring gets when made */
};

/* The large ring: 64 KiB buffers for whole large datagrams and coalesced
 * (GRO) receives, with room for the recvmsg header, address and control
 * data in front. */
#define URSA__LARGE_RING 2
#define URSA__LARGE_SIZE (65536u + 512u)
/* Makes the large ring on first use; 0, or the error of making it. */
int ursa__bufring_large(ursa_loop *loop) URSA__HIDDEN;

/* The pipe ring: what pipe streams read into.  A pipe holds 64 KiB unless
 * sized otherwise, so a read of that size empties it; a stream reads one
 * buffer at a time, so a ring of 4 entries (doubling when a read finds it
 * empty, as every ring) keeps the buffers the copy lands in warm in the
 * cache, where the 32 of a socket ring's start (2 MiB) did not
 * (docs/measurements.md). */
#define URSA__PIPE_RING 3
#define URSA__PIPE_SIZE 65536u
#define URSA__PIPE_COUNT 16u
#define URSA__PIPE_DEPTH 4u
#define URSA__RINGS 4
/* Makes the pipe ring on first use; 0, or the error of making it. */
int ursa__bufring_pipe(ursa_loop *loop) URSA__HIDDEN;

/* Makes loop->bufs and registers rings[0] (and rings[1] when incremental
 * consumption is used); keep_max caps ursa_buf_keep(). */
int ursa__bufring_init(ursa_loop *loop, unsigned count, unsigned size,
                       uint32_t enable, unsigned keep_max) URSA__HIDDEN;
void ursa__bufring_free(ursa_loop *loop) URSA__HIDDEN;
static inline char *ursa__buf_addr(const ursa__bufring *r, unsigned bid) {
  return r->bufs + (size_t)bid * r->size;
}
/* Gives buffer bid back to the kernel. */
void ursa__buf_recycle(ursa_loop *loop, ursa__bufring *r, unsigned bid)
    URSA__HIDDEN;

/* The bytes of one completion that carried buffers, handed out as slices
 * that never cross a buffer's end:
 *   ursa__slices_begin(); while (ursa__slices_next()) { use; ursa__slice_done(); }
 * Each slice is lent (ursa_buf_keep() may keep it) until ursa__slice_done().
 * A plain completion is one slice of one buffer; a bundle spans several
 * buffers; on an incremental ring a slice may be part of a buffer. */
typedef struct ursa__slices {
  ursa__bufring *r;
  unsigned left;    /* bytes not handed out yet */
  unsigned bid;     /* the current slice: its buffer, */
  char *data;       /* ...where it starts */
  unsigned len;     /* ...and its length */
  bool first;
  bool more;        /* IORING_CQE_F_BUF_MORE: the last buffer stays filling */
} ursa__slices;
/* Starts on a completion with IORING_CQE_F_BUFFER; res is its result and
 * bundle says how its operation was armed.  Returns false when the kernel
 * and ursa disagree on which buffer came next (never seen; the stream fails
 * with -EIO rather than hand out wrong bytes). */
bool ursa__slices_begin(ursa_loop *loop, ursa__bufring *r, ursa__slices *it,
                        int res, uint32_t cflags, bool bundle) URSA__HIDDEN;
bool ursa__slices_next(ursa_loop *loop, ursa__slices *it) URSA__HIDDEN;
void ursa__slice_done(ursa_loop *loop, ursa__slices *it) URSA__HIDDEN;
/* Hands back every slice left without using it. */
void ursa__slices_drop(ursa_loop *loop, ursa__slices *it) URSA__HIDDEN;

#ifdef __cplusplus
}
#endif

#endif /* URSA_BUFRING_H */
