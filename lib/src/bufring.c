/* bufring.c - the provided buffer ring that multishot receives fill. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int ursa__bufring_init(ursa_loop *loop, unsigned count, unsigned size) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t ring_bytes = (count * sizeof(struct io_uring_buf) + page - 1) &
                      ~(page - 1);
  size_t data_bytes = (size_t)count * size;
  /* The ring must be page aligned; the buffers come from the same mapping,
   * and pages are only backed once the kernel writes into them. */
  char *mem = mmap(NULL, ring_bytes + data_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return -errno;
  loop->kept_map = calloc(count, 1);
  if (!loop->kept_map) {
    munmap(mem, ring_bytes + data_bytes);
    return -ENOMEM;
  }

  struct io_uring_buf_reg reg = {0};
  reg.ring_addr = (uint64_t)(uintptr_t)mem;
  reg.ring_entries = count;
  reg.bgid = 0;
  int r = io_uring_register_buf_ring(&loop->ring, &reg, 0);
  if (r < 0) {
    munmap(mem, ring_bytes + data_bytes);
    free(loop->kept_map);
    loop->kept_map = NULL;
    /* Kernels before 5.19 do not know the registration opcode. */
    return r == -EINVAL ? -EOPNOTSUPP : r;
  }
  loop->br = (struct io_uring_buf_ring *)mem;
  loop->br_bytes = ring_bytes + data_bytes;
  loop->bufs = mem + ring_bytes;
  loop->buf_count = count;
  loop->buf_size = size;
  loop->buf_mask = io_uring_buf_ring_mask(count);
  loop->bgid = 0;
  loop->lent_bid = -1;
  io_uring_buf_ring_init(loop->br);
  for (unsigned i = 0; i < count; i++)
    io_uring_buf_ring_add(loop->br, ursa__buf_addr(loop, i), size,
                          (unsigned short)i, loop->buf_mask, (int)i);
  io_uring_buf_ring_advance(loop->br, (int)count);
  loop->used |= URSA_FEAT_BUF_RING;
  return 0;
}

void ursa__bufring_free(ursa_loop *loop) {
  if (!loop->br) return;
  io_uring_unregister_buf_ring(&loop->ring, loop->bgid);
  munmap(loop->br, loop->br_bytes);
  loop->br = NULL;
  free(loop->kept_map);
  loop->kept_map = NULL;
}

/* The buffer that holds p, or -1 when p is not in the ring's memory. */
static int bid_of(const ursa_loop *loop, const void *p) {
  const char *c = p;
  if (!loop->br || c < loop->bufs ||
      c >= loop->bufs + (size_t)loop->buf_count * loop->buf_size)
    return -1;
  return (int)((size_t)(c - loop->bufs) / loop->buf_size);
}

int ursa_buf_keep(ursa_loop *loop, const void *buf) {
  if (!loop || !buf)
    return ursa__invalid("ursa_buf_keep: NULL %s", loop ? "buffer" : "loop");
  if (loop->lent_bid < 0)
    return ursa__invalid("ursa_buf_keep: only inside a read or receive "
                         "callback, for the buffer it was given");
  if (bid_of(loop, buf) != loop->lent_bid)
    return ursa__invalid("ursa_buf_keep: not the buffer this callback was "
                         "given");
  if (loop->lent_kept) return -EALREADY;
  if (loop->kept >= loop->keep_max) return -ENOBUFS;
  loop->kept_map[loop->lent_bid] = 1;
  loop->kept++;
  loop->lent_kept = true;
  return 0;
}

int ursa_buf_release(ursa_loop *loop, const void *buf) {
  if (!loop || !buf)
    return ursa__invalid("ursa_buf_release: NULL %s",
                         loop ? "buffer" : "loop");
  int bid = bid_of(loop, buf);
  if (bid < 0 || !loop->kept_map[bid])
    return ursa__invalid("ursa_buf_release: %p is not a kept buffer", buf);
  loop->kept_map[bid] = 0;
  loop->kept--;
  if (bid == loop->lent_bid)
    loop->lent_kept = false; /* released in its own callback */
  else
    ursa__buf_recycle(loop, (unsigned)bid);
  return 0;
}
