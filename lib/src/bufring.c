/* bufring.c - the provided buffer ring that multishot receives fill. */
#include "internal.h"

#include <errno.h>
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

  struct io_uring_buf_reg reg = {0};
  reg.ring_addr = (uint64_t)(uintptr_t)mem;
  reg.ring_entries = count;
  reg.bgid = 0;
  int r = io_uring_register_buf_ring(&loop->ring, &reg, 0);
  if (r < 0) {
    munmap(mem, ring_bytes + data_bytes);
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
}
