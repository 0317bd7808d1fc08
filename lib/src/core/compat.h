/* compat.h - io_uring ABI constants newer than liburing 2.3's headers.
 * They are kernel facts; every use is probed at run time. */
#ifndef URSA_COMPAT_H
#define URSA_COMPAT_H

#include <liburing.h>

#ifndef IORING_SETUP_SUBMIT_ALL
#define IORING_SETUP_SUBMIT_ALL (1U << 7) /* 5.18 */
#endif
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8) /* 5.19 */
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12) /* 6.0 */
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13) /* 6.1 */
#endif
#ifndef IORING_FEAT_CQE_SKIP
#define IORING_FEAT_CQE_SKIP (1U << 11) /* 5.17 */
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14) /* 6.10 */
#endif
#ifndef IORING_FEAT_MIN_TIMEOUT
#define IORING_FEAT_MIN_TIMEOUT (1U << 15) /* 6.12 */
#endif
#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE (1U << 4) /* sqe->ioprio, 6.10 */
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4) /* 6.12 */
#endif
/* Installs a direct descriptor as a plain one [6.8]: sqe->fd the slot,
 * IOSQE_FIXED_FILE set; its result the new descriptor (close-on-exec). */
#define URSA__IORING_OP_FIXED_FD_INSTALL 54
/* A multishot read into provided buffers of a pollable file [6.7]: len
 * and addr 0, IOSQE_BUFFER_SELECT; -EBADFD on a file without poll. */
#define URSA__IORING_OP_READ_MULTISHOT 49
/* waitid(2) as a request [6.7]: sqe->fd the id, len the idtype,
 * file_index the options, addr2 the siginfo_t the result fills. */
#define URSA__IORING_OP_WAITID 50
/* io_uring_register(-1, this, sqe, 1): runs one IORING_OP_MSG_RING data
 * message without a ring of the caller's [6.13] (a NULL sqe: -EINVAL); on
 * older kernels the -1 descriptor is -EBADF. */
#define URSA__IORING_REGISTER_SEND_MSG_RING 31
/* Registered wait arguments [6.13]: a memory region registered (while the
 * ring is still disabled, IORING_SETUP_R_DISABLED) as the home of wait
 * arguments; io_uring_enter with IORING_ENTER_EXT_ARG_REG then passes an
 * offset into it instead of a struct the kernel copies in. */
#define URSA__IORING_REGISTER_MEM_REGION 34
#define URSA__IORING_MEM_REGION_TYPE_USER 1   /* region_desc.flags */
#define URSA__IORING_MEM_REGION_REG_WAIT_ARG 1 /* mem_region_reg.flags */
#define URSA__IORING_ENTER_EXT_ARG_REG (1U << 6)
#define URSA__IORING_REG_WAIT_TS (1U << 0)
struct ursa__region_desc {
  uint64_t user_addr, size;
  uint32_t flags, id;
  uint64_t mmap_offset, resv[4];
};
struct ursa__mem_region_reg {
  uint64_t region_uptr; /* struct ursa__region_desc * */
  uint64_t flags, resv[2];
};
struct ursa__reg_wait {
  struct __kernel_timespec ts;
  uint32_t min_wait_usec, flags;
  uint64_t sigmask;
  uint32_t sigmask_sz, pad[3];
  uint64_t pad2[2];
};

/* The backends' opcode tables cover this many (liburing 2.3 stops at 49). */
#define URSA__OP_TABLE 64
/* waitid(2)'s idtype for a pidfd [5.4]. */
#define URSA__P_PIDFD 3
/* io_uring_buf_reg.flags, which liburing 2.3 still calls pad. */
#define URSA__PBUF_RING_INC 2 /* IOU_PBUF_RING_INC, 6.12 */

/* cachestat(2) [6.5], which Debian 12's headers predate: how much of a
 * file's range is in the page cache. */
#define URSA__NR_CACHESTAT 451 /* the same on every architecture */
struct ursa__cachestat_range {
  uint64_t off, len;
};
struct ursa__cachestat {
  uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted,
      nr_recently_evicted;
};

#endif /* URSA_COMPAT_H */
