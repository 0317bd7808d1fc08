/* no_uring.c - runs a command with io_uring_setup refused (EPERM) by a
 * seccomp filter, as a container's default profile does. */
#include <stdio.h>
#include <unistd.h>

#include "tests/block_uring.h"

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: no_uring COMMAND [ARGS...]\n");
    return 2;
  }
  if (t_block_io_uring() != 0) {
    perror("no_uring: seccomp");
    return 2;
  }
  execvp(argv[1], argv + 1);
  perror("no_uring: exec");
  return 2;
}
