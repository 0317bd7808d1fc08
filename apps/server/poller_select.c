/* poller_select.c - the poller on select(2).  select cannot watch a
 * descriptor at or above FD_SETSIZE; fd_limit tells the loop so that it
 * refuses such connections instead of writing past the fd_set. */
#include <errno.h>
#include <stdlib.h>
#include <sys/select.h>

#include "apps/server/poller.h"

typedef struct sel {
  fd_set rd, wr;
  int maxfd;
} sel;

static void *create(void) {
  sel *s = calloc(1, sizeof(*s));
  if (!s) return NULL;
  FD_ZERO(&s->rd);
  FD_ZERO(&s->wr);
  s->maxfd = -1;
  return s;
}

static int mod(void *v, int fd, unsigned events) {
  sel *s = v;
  if (fd < 0 || fd >= FD_SETSIZE) return -EBADF;
  if (events & P_IN) FD_SET(fd, &s->rd); else FD_CLR(fd, &s->rd);
  if (events & P_OUT) FD_SET(fd, &s->wr); else FD_CLR(fd, &s->wr);
  if (events && fd > s->maxfd) s->maxfd = fd;
  return 0;
}

static int add(void *v, int fd, unsigned events) { return mod(v, fd, events); }

static int del(void *v, int fd) {
  sel *s = v;
  int r = mod(v, fd, 0);
  /* O(n) walk down only when the highest descriptor leaves. */
  while (s->maxfd >= 0 && !FD_ISSET(s->maxfd, &s->rd) &&
         !FD_ISSET(s->maxfd, &s->wr))
    s->maxfd--;
  return r;
}

static int wait_events(void *v, int timeout_ms, poll_ev *out, int max) {
  sel *s = v;
  fd_set rd = s->rd, wr = s->wr;
  struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  int n = select(s->maxfd + 1, &rd, &wr, NULL, timeout_ms < 0 ? NULL : &tv);
  if (n < 0) return errno == EINTR ? 0 : -errno;
  int k = 0;
  for (int fd = 0; fd <= s->maxfd && k < max && n > 0; fd++) {
    unsigned e = (FD_ISSET(fd, &rd) ? P_IN : 0) | (FD_ISSET(fd, &wr) ? P_OUT : 0);
    if (!e) continue;
    out[k].fd = fd;
    out[k].events = e;
    k++;
  }
  return k;
}

static void destroy(void *v) { free(v); }

const poller_ops select_ops = {"select", FD_SETSIZE, create, add, mod, del,
                               wait_events, destroy};
