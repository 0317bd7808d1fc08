/* bufring.c - the provided buffer rings that receives fill, and the
 * slices a completion's bytes are handed out in.
 *
 * The kernel takes a ring's entries in order, so a ring holding all of
 * its buffers sends a busy stream through every one of them in turn: 4 MiB
 * at 256 of 16 KiB, which the copy into them then finds out of cache (a
 * bulk stream's server CPU per 64 KiB was about 10% lower with a ring of
 * 32; docs/measurements.md).  So a ring holds only `depth` entries, and a
 * buffer given back goes on a stack of spares whose top goes into the
 * ring first: a stream cycles through `depth` buffers, the ones it
 * released last.  A receive that finds the ring empty doubles the depth,
 * so many busy streams soon get every buffer. */
#include "bufring.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static void ring_free(ursa_loop *loop, ursa__bufring *r) {
  if (!r->br) return;
  loop->be->buf_ring_unregister(loop, r->bgid);
  munmap(r->br, r->map_bytes);
  free(r->kept);
  free(r->out);
  free(r->spare);
  r->br = NULL;
}

/* Tops the ring up to its depth from the spares, newest first. */
static void refill(ursa__bufring *r) {
  int n = 0;
  while ((uint16_t)(r->tail - r->head) < r->depth && r->nspare) {
    unsigned bid = r->spare[--r->nspare];
    io_uring_buf_ring_add(r->br, ursa__buf_addr(r, bid), r->size,
                          (unsigned short)bid, r->mask, n++);
    r->tail++;
  }
  if (n) io_uring_buf_ring_advance(r->br, n);
}

static int ring_init(ursa_loop *loop, ursa__bufring *r, uint16_t bgid,
                     unsigned count, unsigned size, bool inc,
                     unsigned depth) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t ring_bytes = (count * sizeof(struct io_uring_buf) + page - 1) &
                      ~(page - 1);
  size_t data_bytes = (size_t)count * size;
  /* The ring must be page aligned; the buffers come from the same mapping,
   * and pages are only backed once the kernel writes into them. */
  char *mem = mmap(NULL, ring_bytes + data_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return -errno;
  r->kept = calloc(count, sizeof(*r->kept));
  r->out = calloc(count, 1);
  r->spare = calloc(count, sizeof(*r->spare));
  if (!r->kept || !r->out || !r->spare) {
    free(r->kept);
    free(r->out);
    free(r->spare);
    munmap(mem, ring_bytes + data_bytes);
    return -ENOMEM;
  }
  r->br = (struct io_uring_buf_ring *)mem;
  io_uring_buf_ring_init(r->br);
  int ret = loop->be->buf_ring_register(loop, r->br, count, bgid, inc);
  if (ret < 0) {
    r->br = NULL;
    free(r->kept);
    free(r->out);
    free(r->spare);
    munmap(mem, ring_bytes + data_bytes);
    return ret;
  }
  r->map_bytes = ring_bytes + data_bytes;
  r->bufs = mem + ring_bytes;
  r->count = count;
  r->size = size;
  r->mask = io_uring_buf_ring_mask(count);
  r->bgid = bgid;
  r->inc = inc;
  r->head = 0;
  r->nkept = 0;
  r->off = 0;
  r->tail = 0;
  r->depth = count < depth ? count : depth;
  /* Buffer 0 on top, so that the ring starts with 0, 1, 2 ... */
  r->nspare = 0;
  for (unsigned i = count; i-- > 0;) r->spare[r->nspare++] = (uint16_t)i;
  refill(r);
  return 0;
}

void ursa__bufs_starved(ursa_loop *loop) {
  if (!loop->bufs) return;
  for (int i = 0; i < URSA__RINGS; i++) {
    ursa__bufring *r = &loop->bufs->rings[i];
    if (!r->br || r->depth >= r->count) continue;
    r->depth = r->depth * 2 < r->count ? r->depth * 2 : r->count;
    refill(r);
  }
}

int ursa__bufring_init(ursa_loop *loop, unsigned count, unsigned size,
                       uint32_t enable, unsigned keep_max) {
  loop->bufs = calloc(1, sizeof(*loop->bufs));
  if (!loop->bufs) return -ENOMEM;
  loop->bufs->lent_bid = -1;
  loop->bufs->buf_size = size;
  loop->bufs->keep_max = keep_max;
  int r = ring_init(loop, &loop->bufs->rings[0], 0, count, size, false,
                 URSA__RING_DEPTH);
  if (r < 0) {
    free(loop->bufs);
    loop->bufs = NULL;
    return r;
  }
  loop->used |= URSA_FEAT_BUF_RING;
  loop->bufs->sring = &loop->bufs->rings[0];
  /* Streams get a ring of their own that the kernel fills by parts: small
   * reads then share a buffer instead of taking one each.  Messages stay
   * on the plain ring, where a message always finds a whole buffer. */
  if ((enable & URSA_FEAT_BUF_INC) &&
      ring_init(loop, &loop->bufs->rings[1], 1, count, size, true,
                URSA__RING_DEPTH) == 0) {
    loop->bufs->sring = &loop->bufs->rings[1];
    loop->used |= URSA_FEAT_BUF_INC;
  }
  return 0;
}

int ursa__bufring_large(ursa_loop *loop) {
  ursa__bufring *r = &loop->bufs->rings[URSA__LARGE_RING];
  if (r->br) return 0;
  return ring_init(loop, r, URSA__LARGE_RING, loop->bufs->large_count,
                   URSA__LARGE_SIZE, false, URSA__RING_DEPTH);
}

int ursa__bufring_pipe(ursa_loop *loop) {
  ursa__bufring *r = &loop->bufs->rings[URSA__PIPE_RING];
  if (r->br) return 0;
  return ring_init(loop, r, URSA__PIPE_RING, URSA__PIPE_COUNT,
                   URSA__PIPE_SIZE, false, URSA__PIPE_DEPTH);
}

void ursa__bufring_free(ursa_loop *loop) {
  if (!loop->bufs) return;
  ring_free(loop, &loop->bufs->rings[URSA__PIPE_RING]);
  ring_free(loop, &loop->bufs->rings[URSA__LARGE_RING]);
  ring_free(loop, &loop->bufs->rings[1]);
  ring_free(loop, &loop->bufs->rings[0]);
  free(loop->bufs);
  loop->bufs = NULL;
}

void ursa__buf_recycle(ursa_loop *loop, ursa__bufring *r, unsigned bid) {
  r->out[bid] = 0;
  r->spare[r->nspare++] = (uint16_t)bid;
  refill(r);
  loop->stats.bufs_out--;
}

/* ---- slices ---- */

/* The buffer behind ring entry i. */
static unsigned entry_bid(const ursa__bufring *r, unsigned i) {
  return r->br->bufs[i & (unsigned)r->mask].bid;
}

/* The kernel is done with buffer bid: it comes back once nobody holds it. */
static void buf_out(ursa_loop *loop, ursa__bufring *r, unsigned bid) {
  r->out[bid] = 1;
  r->head++;
  loop->stats.bufs_out++;
}

bool ursa__slices_begin(ursa_loop *loop, ursa__bufring *r, ursa__slices *it,
                        int res, uint32_t cflags, bool bundle) {
  unsigned bid = cflags >> IORING_CQE_BUFFER_SHIFT;
  it->r = r;
  it->bid = bid;
  it->first = true;
  it->more = (cflags & IORING_CQE_F_BUF_MORE) != 0;
  it->left = res > 0 ? (unsigned)res : 0;
  if (URSA__UNLIKELY(bid >= r->count || entry_bid(r, r->head) != bid))
    return false;
  if (!bundle && !r->inc) {
    /* One buffer, taken whole whatever the result: a datagram cut short
     * reports its full length, and an empty result still used it. */
    if (it->left > r->size) it->left = r->size;
    if (!it->left) {
      buf_out(loop, r, bid);
      ursa__buf_recycle(loop, r, bid);
    }
  }
  /* A bundle or an incremental ring that moved no bytes took no buffer. */
  return true;
}

bool ursa__slices_next(ursa_loop *loop, ursa__slices *it) {
  if (!it->left) return false;
  ursa__bufring *r = it->r;
  unsigned bid = it->first ? it->bid : entry_bid(r, r->head);
  unsigned off = r->inc ? r->off : 0;
  unsigned len = r->size - off;
  if (len > it->left) len = it->left;
  it->first = false;
  it->left -= len;
  it->bid = bid;
  it->data = ursa__buf_addr(r, bid) + off;
  it->len = len;
  if (!r->inc) {
    buf_out(loop, r, bid);
  } else if (off + len == r->size) {
    r->off = 0;
    buf_out(loop, r, bid);
  } else {
    r->off = off + len;
  }
  loop->bufs->lent_ring = r;
  loop->bufs->lent_bid = (int)bid;
  return true;
}

void ursa__slice_done(ursa_loop *loop, ursa__slices *it) {
  ursa__bufring *r = it->r;
  loop->bufs->lent_bid = -1;
  loop->bufs->lent_ring = NULL;
  loop->bufs->lent_kept = false;
  if (r->out[it->bid] && !r->kept[it->bid]) ursa__buf_recycle(loop, r, it->bid);
}

void ursa__slices_drop(ursa_loop *loop, ursa__slices *it) {
  while (ursa__slices_next(loop, it)) ursa__slice_done(loop, it);
}

/* ---- keeping buffers ---- */

/* The ring and buffer that hold p, or NULL when p is in neither ring. */
static ursa__bufring *ring_of(ursa_loop *loop, const void *p, unsigned *bid) {
  const char *c = p;
  for (int i = 0; i < URSA__RINGS; i++) {
    ursa__bufring *r = &loop->bufs->rings[i];
    if (r->br && c >= r->bufs && c < r->bufs + (size_t)r->count * r->size) {
      *bid = (unsigned)((size_t)(c - r->bufs) / r->size);
      return r;
    }
  }
  return NULL;
}

int ursa_buf_keep(ursa_loop *loop, const void *buf) {
  if (!loop || !buf)
    return ursa__invalid("ursa_buf_keep: NULL %s", loop ? "buffer" : "loop");
  if (loop->bufs->lent_bid < 0)
    return ursa__invalid("ursa_buf_keep: only inside a read or receive "
                         "callback, for the buffer it was given");
  unsigned bid;
  ursa__bufring *r = ring_of(loop, buf, &bid);
  if (r != loop->bufs->lent_ring || (int)bid != loop->bufs->lent_bid)
    return ursa__invalid("ursa_buf_keep: not the buffer this callback was "
                         "given");
  if (loop->bufs->lent_kept) return -EALREADY;
  if (loop->bufs->kept >= loop->bufs->keep_max) return -ENOBUFS;
  /* The large and pipe rings are small: half of each at most, as for
   * the others (keep_max). */
  bool small = r >= &loop->bufs->rings[URSA__LARGE_RING];
  if (small && !r->kept[bid] && r->nkept >= r->count / 2) return -ENOBUFS;
  r->nkept += !r->kept[bid];
  r->kept[bid]++;
  loop->bufs->kept++;
  loop->bufs->lent_kept = true;
  return 0;
}

int ursa_buf_release(ursa_loop *loop, const void *buf) {
  if (!loop || !buf)
    return ursa__invalid("ursa_buf_release: NULL %s",
                         loop ? "buffer" : "loop");
  unsigned bid;
  ursa__bufring *r = ring_of(loop, buf, &bid);
  if (!r || !r->kept[bid])
    return ursa__invalid("ursa_buf_release: %p is not a kept buffer", buf);
  r->kept[bid]--;
  loop->bufs->kept--;
  r->nkept -= !r->kept[bid];
  if (r == loop->bufs->lent_ring && (int)bid == loop->bufs->lent_bid)
    loop->bufs->lent_kept = false; /* released in its own callback */
  else if (r->out[bid] && !r->kept[bid])
    ursa__buf_recycle(loop, r, bid);
  return 0;
}
