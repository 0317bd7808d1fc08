/* block_uring.h - makes io_uring_setup fail with EPERM in this process from
 * now on, as a container's default seccomp profile does. */
#ifndef URSA_TESTS_BLOCK_URING_H
#define URSA_TESTS_BLOCK_URING_H

#ifdef __cplusplus
extern "C" {
#endif

/* Returns 0, or -1 when seccomp filters are not available here. */
int t_block_io_uring(void);

#ifdef __cplusplus
}
#endif

#endif /* URSA_TESTS_BLOCK_URING_H */
