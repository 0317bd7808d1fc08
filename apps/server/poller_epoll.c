/* poller_epoll.c - the poller on level-triggered epoll. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "apps/server/poller.h"

#define BATCH 256

typedef struct ep {
  int fd;
  struct epoll_event evs[BATCH];
} ep;

static void *create(void) {
  ep *p = calloc(1, sizeof(*p));
  if (!p) return NULL;
  p->fd = epoll_create1(EPOLL_CLOEXEC);
  if (p->fd < 0) {
    free(p);
    return NULL;
  }
  return p;
}

static int ctl(void *v, int op, int fd, unsigned events) {
  struct epoll_event e = {0};
  e.events = ((events & P_IN) ? EPOLLIN : 0) | ((events & P_OUT) ? EPOLLOUT : 0);
  e.data.fd = fd;
  return epoll_ctl(((ep *)v)->fd, op, fd, &e) < 0 ? -errno : 0;
}

static int add(void *v, int fd, unsigned events) {
  return ctl(v, EPOLL_CTL_ADD, fd, events);
}
static int mod(void *v, int fd, unsigned events) {
  return ctl(v, EPOLL_CTL_MOD, fd, events);
}
static int del(void *v, int fd) { return ctl(v, EPOLL_CTL_DEL, fd, 0); }

static int wait_events(void *v, int timeout_ms, poll_ev *out, int max) {
  ep *p = v;
  int n = epoll_wait(p->fd, p->evs, max < BATCH ? max : BATCH, timeout_ms);
  if (n < 0) return errno == EINTR ? 0 : -errno;
  for (int i = 0; i < n; i++) {
    uint32_t e = p->evs[i].events;
    out[i].fd = p->evs[i].data.fd;
    /* Errors and hang-ups show up as readable: the read reports them. */
    out[i].events = ((e & (EPOLLIN | EPOLLERR | EPOLLHUP)) ? P_IN : 0) |
                    ((e & EPOLLOUT) ? P_OUT : 0);
  }
  return n;
}

static void destroy(void *v) {
  close(((ep *)v)->fd);
  free(v);
}

const poller_ops epoll_ops = {"epoll", INT_MAX, create, add, mod, del,
                              wait_events, destroy};
