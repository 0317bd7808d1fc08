/* poller.h - the seam between the readiness loop and its system call:
 * epoll and select each fill the same table, as Redis's ae backends do. */
#ifndef URSA_APPS_POLLER_H
#define URSA_APPS_POLLER_H

#define P_IN 1u
#define P_OUT 2u

typedef struct poll_ev {
  int fd;
  unsigned events;
} poll_ev;

typedef struct poller_ops {
  const char *name;
  int fd_limit; /* descriptors at or above this cannot be watched */
  void *(*create)(void);
  int (*add)(void *p, int fd, unsigned events);
  int (*mod)(void *p, int fd, unsigned events);
  int (*del)(void *p, int fd);
  /* Waits up to timeout_ms; fills at most max events; returns how many,
   * or -errno. */
  int (*wait)(void *p, int timeout_ms, poll_ev *out, int max);
  void (*destroy)(void *p);
} poller_ops;

extern const poller_ops epoll_ops;
extern const poller_ops select_ops;

#endif /* URSA_APPS_POLLER_H */
