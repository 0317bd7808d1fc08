/* slots.c - the one owner of direct-descriptor slots: the table's set-up,
 * reserving a slot for an accept, and giving one back. */
#include "sock.h"

#include <sys/resource.h>

#define MAX_DIRECT (1u << 20) /* the kernel's limit on fixed files */

/* A sparse table of direct descriptors for accepted streams.  The kernel
 * caps its size at RLIMIT_NOFILE; one that refuses the table leaves accepts
 * on ordinary descriptors (the feature report says so). */
void ursa__direct_init(ursa_loop *loop, unsigned want, uint32_t disable) {
  if (!want || (disable & URSA_FEAT_DIRECT_FILES) ||
      !loop->be->files_register)
    return; /* a backend without the table (io_uring's alone) */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want)
    want = (unsigned)rl.rlim_cur;
  if (want > MAX_DIRECT) want = MAX_DIRECT;
  if (want && loop->be->files_register(loop, want) == 0) {
    loop->direct_files = want;
    loop->used |= URSA_FEAT_DIRECT_FILES;
  }
}

void ursa__direct_release(ursa_loop *loop, int slot) {
  loop->be->files_clear(loop, (unsigned)slot); /* its last reference goes */
  loop->direct_used--;
}

bool ursa__direct_reserve(ursa_loop *loop) {
  if (loop->direct_used >= loop->direct_files) return false;
  loop->direct_used++;
  return true;
}

void ursa__direct_unreserve(ursa_loop *loop) { loop->direct_used--; }
