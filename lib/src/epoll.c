/* epoll.c - the epoll backend, for where io_uring is blocked or absent.
 *
 * The layers above prepare io_uring SQEs whatever the backend; this one
 * runs them itself.  Each operation is tried at once with a non-blocking
 * system call, as the kernel's io_uring tries it first; one that would
 * block waits on its descriptor's read or write queue until epoll says the
 * descriptor is ready, and its completion is posted to a queue of ours that
 * the loop reaps as it reaps a CQ.  Multishot accepts and receives stay on
 * their queue and post a completion per readiness; receives take their
 * buffer from the same provided buffer ring the kernel would (its ABI: the
 * application moves the tail, the consumer the head), so ursa_buf_keep()
 * and the rest of the buffers layer are the same on both backends.
 *
 * Only what the layers ask for is run: accept, connect, recv, recvmsg,
 * send, sendmsg, shutdown, close, poll (multishot, edge-triggered as
 * io_uring's), nop, cancel by user_data and a linked timeout after an
 * operation.  What exists only on io_uring (direct
 * descriptors, SEND_ZC, bundles, buffers filled by parts) is refused, and
 * the feature report never shows it in use here.
 *
 * Interest is level-triggered and registered only while an operation waits
 * on the descriptor; changes are gathered and applied once per round, so a
 * stream that is read and answered costs epoll_wait, recv and send, as a
 * hand-written epoll loop does. */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define EVENTS 256
#define MAX_GROUPS 4
#define MULTI_TRIES 8    /* completions of one multishot per readiness */
#define STARVE_ROUNDS 8  /* rounds with completions at hand before epoll is
                            asked anyway, so ready sockets are not starved */
#define RETRY_NS 2000000 /* a Unix connect to a full backlog tries again */
#define SLAB 64

/* r->bits */
#define R_MULTI 0x01   /* multishot */
#define R_BUFSEL 0x02  /* takes a buffer from group bgid */
#define R_WRITE 0x04   /* waits for EPOLLOUT (else EPOLLIN) */
#define R_RETRY 0x08   /* on the retry list, not a descriptor queue */
#define R_PROGRESS 0x10 /* a connect under way: SO_ERROR tells the end */
#define R_POLL 0x20     /* a poll: posts the ready mask (msg_flags holds
                           the events asked for), edge-triggered */

/* An operation that waits. */
typedef struct ep_req {
  struct ep_req *next, *prev; /* its queue: circular, the head's prev is the
                                 tail */
  struct ep_req *hnext;       /* the user_data hash's chain */
  uint64_t ud;
  uint64_t deadline_ns; /* a linked timeout's expiry, or 0 */
  uint64_t addr;        /* buffer, msghdr or sockaddr */
  uint32_t len;         /* buffer length, address length */
  int32_t fd;
  int32_t heap; /* index in the deadline heap, or -1 */
  uint32_t msg_flags;
  uint16_t bgid;
  uint8_t opcode;
  uint8_t bits;
} ep_req;

/* Per descriptor, indexed by its number: what waits on it, and (in a byte
 * array beside, to keep the table at 16 bytes a descriptor) its bits. */
typedef struct ep_fd {
  ep_req *rq, *wq; /* operations waiting to read / to write */
} ep_fd;

#define FB_IN 0x01    /* epoll has EPOLLIN (and EPOLLRDHUP) */
#define FB_OUT 0x02   /* epoll has EPOLLOUT */
#define FB_DIRTY 0x04 /* on the dirty list */
#define FB_NONBLOCK 0x08 /* O_NONBLOCK set (accept and connect need it) */
#define FB_ET 0x10       /* epoll has EPOLLET (a poll waits on it) */
#define FD_STEP 1024     /* the table grows by this many descriptors */

typedef struct ep_slab {
  struct ep_slab *next;
  ep_req reqs[SLAB];
} ep_slab;

struct ursa__ep {
  int epfd;
  /* The submission queue: SQEs the layers fill, run at submit. */
  struct io_uring_sqe *sq;
  unsigned sq_n, sq_cap;
  /* The completion queue: grows, never drops. */
  ursa__cqe *cq;
  unsigned cq_head, cq_tail, cq_mask;
  ep_fd *fds;
  uint8_t *fdbits;
  unsigned nfds;
  int *dirty;
  unsigned ndirty, dirty_cap;
  ep_req **hash;
  unsigned hash_mask, nwaiting;
  ep_req **heap;
  unsigned nheap, heap_cap;
  ep_req *retry; /* circular, as a descriptor queue */
  ep_req *free_reqs;
  ep_slab *slabs;
  unsigned starved; /* rounds that skipped epoll_wait */
  struct {
    struct io_uring_buf_ring *br;
    unsigned mask;
    uint16_t head;
  } groups[MAX_GROUPS];
  struct epoll_event events[EVENTS];
};

#define SYSCALL(loop) ((loop)->stats.enters++)

/* ---- the completion queue ---- */

static bool cq_grow(struct ursa__ep *ep) {
  unsigned cap = ep->cq_mask + 1, n = ep->cq_tail - ep->cq_head;
  ursa__cqe *cq = malloc(2 * (size_t)cap * sizeof(*cq));
  if (!cq) return false;
  for (unsigned i = 0; i < n; i++)
    cq[i] = ep->cq[(ep->cq_head + i) & ep->cq_mask];
  free(ep->cq);
  ep->cq = cq;
  ep->cq_head = 0;
  ep->cq_tail = n;
  ep->cq_mask = 2 * cap - 1;
  return true;
}

static void post(ursa_loop *loop, uint64_t ud, int res, uint32_t flags) {
  struct ursa__ep *ep = loop->ep;
  if (!ud) return; /* nobody waits for it (a cancel, a linked timeout) */
  if (ep->cq_tail - ep->cq_head > ep->cq_mask && !cq_grow(ep)) {
    loop->stats.cq_dropped++; /* out of memory: the one loss, counted */
    return;
  }
  ursa__cqe *c = &ep->cq[ep->cq_tail++ & ep->cq_mask];
  c->ud = ud;
  c->res = res;
  c->flags = flags;
}

/* ---- waiting operations: allocation, the hash, queues, the heap ---- */

static ep_req *req_alloc(struct ursa__ep *ep) {
  if (!ep->free_reqs) {
    ep_slab *s = malloc(sizeof(*s));
    if (!s) return NULL;
    s->next = ep->slabs;
    ep->slabs = s;
    for (unsigned i = 0; i < SLAB; i++) {
      s->reqs[i].next = ep->free_reqs;
      ep->free_reqs = &s->reqs[i];
    }
  }
  ep_req *r = ep->free_reqs;
  ep->free_reqs = r->next;
  return r;
}

static void req_free(struct ursa__ep *ep, ep_req *r) {
  r->next = ep->free_reqs;
  ep->free_reqs = r;
}

static unsigned hash_of(const struct ursa__ep *ep, uint64_t ud) {
  return (unsigned)((ud >> 3) * 0x9E3779B97F4A7C15ull >> 32) & ep->hash_mask;
}

static bool hash_grow(struct ursa__ep *ep) {
  unsigned cap = ep->hash_mask + 1;
  ep_req **h = calloc(2 * (size_t)cap, sizeof(*h));
  if (!h) return false;
  ep_req **old = ep->hash;
  ep->hash = h;
  ep->hash_mask = 2 * cap - 1;
  for (unsigned i = 0; i < cap; i++) {
    for (ep_req *r = old[i], *n; r; r = n) {
      n = r->hnext;
      unsigned b = hash_of(ep, r->ud);
      r->hnext = h[b];
      h[b] = r;
    }
  }
  free(old);
  return true;
}

static void hash_put(struct ursa__ep *ep, ep_req *r) {
  /* Two to a bucket: only cancels look, and the table is memory every
   * waiting receive pays for.  A table that cannot grow makes longer
   * chains. */
  if (ep->nwaiting > 2 * (ep->hash_mask + 1)) hash_grow(ep);
  unsigned b = hash_of(ep, r->ud);
  r->hnext = ep->hash[b];
  ep->hash[b] = r;
  ep->nwaiting++;
}

static ep_req *hash_find(struct ursa__ep *ep, uint64_t ud) {
  for (ep_req *r = ep->hash[hash_of(ep, ud)]; r; r = r->hnext)
    if (r->ud == ud) return r;
  return NULL;
}

static void hash_del(struct ursa__ep *ep, ep_req *r) {
  ep_req **p = &ep->hash[hash_of(ep, r->ud)];
  while (*p != r) p = &(*p)->hnext;
  *p = r->hnext;
  ep->nwaiting--;
}

static void q_push(ep_req **q, ep_req *r) {
  if (!*q) {
    r->next = r->prev = r;
    *q = r;
    return;
  }
  ep_req *tail = (*q)->prev;
  r->prev = tail;
  r->next = *q;
  tail->next = r;
  (*q)->prev = r;
}

static void q_del(ep_req **q, ep_req *r) {
  if (r->next == r) {
    *q = NULL;
    return;
  }
  r->prev->next = r->next;
  r->next->prev = r->prev;
  if (*q == r) *q = r->next;
}

static void heap_swap(struct ursa__ep *ep, unsigned a, unsigned b) {
  ep_req *t = ep->heap[a];
  ep->heap[a] = ep->heap[b];
  ep->heap[b] = t;
  ep->heap[a]->heap = (int32_t)a;
  ep->heap[b]->heap = (int32_t)b;
}

static void heap_up(struct ursa__ep *ep, unsigned i) {
  while (i && ep->heap[(i - 1) / 2]->deadline_ns > ep->heap[i]->deadline_ns) {
    heap_swap(ep, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void heap_down(struct ursa__ep *ep, unsigned i) {
  for (;;) {
    unsigned l = 2 * i + 1, m = i;
    if (l < ep->nheap && ep->heap[l]->deadline_ns < ep->heap[m]->deadline_ns)
      m = l;
    if (l + 1 < ep->nheap &&
        ep->heap[l + 1]->deadline_ns < ep->heap[m]->deadline_ns)
      m = l + 1;
    if (m == i) return;
    heap_swap(ep, i, m);
    i = m;
  }
}

static bool heap_push(struct ursa__ep *ep, ep_req *r) {
  if (ep->nheap == ep->heap_cap) {
    unsigned cap = ep->heap_cap ? 2 * ep->heap_cap : 64;
    ep_req **h = realloc(ep->heap, cap * sizeof(*h));
    if (!h) return false;
    ep->heap = h;
    ep->heap_cap = cap;
  }
  r->heap = (int32_t)ep->nheap;
  ep->heap[ep->nheap++] = r;
  heap_up(ep, ep->nheap - 1);
  return true;
}

static void heap_del(struct ursa__ep *ep, ep_req *r) {
  unsigned i = (unsigned)r->heap;
  r->heap = -1;
  if (i != --ep->nheap) {
    ep->heap[i] = ep->heap[ep->nheap];
    ep->heap[i]->heap = (int32_t)i;
    heap_down(ep, i);
    heap_up(ep, i);
  }
}

/* ---- descriptors ---- */

/* Grows in steps rather than doubling: a server's descriptors are its
 * connections, and the table's slack is memory every one pays for. */
static ep_fd *fd_state(struct ursa__ep *ep, int fd) {
  if ((unsigned)fd >= ep->nfds) {
    unsigned n = ((unsigned)fd / FD_STEP + 1) * FD_STEP;
    ep_fd *f = realloc(ep->fds, n * sizeof(*f));
    if (!f) return NULL;
    ep->fds = f;
    uint8_t *b = realloc(ep->fdbits, n);
    if (!b) return NULL;
    ep->fdbits = b;
    memset(f + ep->nfds, 0, (n - ep->nfds) * sizeof(*f));
    memset(b + ep->nfds, 0, n - ep->nfds);
    ep->nfds = n;
  }
  return &ep->fds[fd];
}

static void mark_dirty(struct ursa__ep *ep, int fd) {
  if (ep->fdbits[fd] & FB_DIRTY) return;
  if (ep->ndirty == ep->dirty_cap) {
    unsigned cap = ep->dirty_cap ? 2 * ep->dirty_cap : 64;
    int *d = realloc(ep->dirty, cap * sizeof(*d));
    if (!d) return; /* applied when the fd is next marked */
    ep->dirty = d;
    ep->dirty_cap = cap;
  }
  ep->fdbits[fd] |= FB_DIRTY;
  ep->dirty[ep->ndirty++] = fd;
}

/* Brings epoll's interest in line with what waits on each changed fd. */
static void unwait(struct ursa__ep *ep, ep_req *r);

/* Ends everything waiting on fd with res. */
static void fail_waiting(ursa_loop *loop, int fd, int res) {
  struct ursa__ep *ep = loop->ep;
  for (ep_req *r; (r = ep->fds[fd].rq) || (r = ep->fds[fd].wq);) {
    post(loop, r->ud, res, 0);
    unwait(ep, r);
  }
}

static void flush_dirty(ursa_loop *loop) {
  struct ursa__ep *ep = loop->ep;
  for (unsigned i = 0; i < ep->ndirty; i++) {
    int fd = ep->dirty[i];
    ep_fd *f = &ep->fds[fd];
    uint8_t *bits = &ep->fdbits[fd];
    *bits &= (uint8_t)~FB_DIRTY;
    uint8_t want = (f->rq ? FB_IN : 0) | (f->wq ? FB_OUT : 0);
    if (f->rq && (f->rq->bits & R_POLL)) {
      /* A poll is alone on its descriptor: its events, as edges, which is
       * how io_uring's multishot poll reports them (per wake-up). */
      want = FB_ET | ((f->rq->msg_flags & EPOLLIN) ? FB_IN : 0) |
             ((f->rq->msg_flags & EPOLLOUT) ? FB_OUT : 0);
    }
    uint8_t has = *bits & (FB_IN | FB_OUT | FB_ET);
    if (want == has) continue;
    struct epoll_event ev = {
        .events = ((want & FB_IN) ? EPOLLIN | EPOLLRDHUP : 0) |
                  ((want & FB_OUT) ? EPOLLOUT : 0) |
                  ((want & FB_ET) ? EPOLLET : 0),
        .data.fd = fd};
    int op = !want ? EPOLL_CTL_DEL : has ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    SYSCALL(loop);
    if (epoll_ctl(ep->epfd, op, fd, &ev) == 0 || errno == ENOENT ||
        errno == EBADF) {
      *bits = (uint8_t)((*bits & ~(FB_IN | FB_OUT | FB_ET)) | want);
      continue;
    }
    /* EPERM: a descriptor epoll cannot watch (a regular file); that and
     * anything else fails what waits on it.  (Its queues empty, it comes
     * round once more on this list, with nothing to change.) */
    int err = errno;
    *bits &= (uint8_t)~(FB_IN | FB_OUT | FB_ET);
    fail_waiting(loop, fd, err == EPERM ? -EOPNOTSUPP : -err);
  }
  ep->ndirty = 0;
}

static int set_nonblock(ursa_loop *loop, int fd) {
  if (!fd_state(loop->ep, fd)) return -ENOMEM;
  if (loop->ep->fdbits[fd] & FB_NONBLOCK) return 0;
  SYSCALL(loop);
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -errno;
  if (!(fl & O_NONBLOCK)) {
    SYSCALL(loop);
    if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
  }
  loop->ep->fdbits[fd] |= FB_NONBLOCK;
  return 0;
}

/* ---- running one operation ---- */

enum {
  R_WAIT = 0, /* would block: wait for readiness */
  R_DONE,     /* completed: its last completion is posted */
  R_MORE,     /* a multishot posted one and goes on; likely more ready */
  R_DRAINED,  /* a multishot posted one and goes on; likely nothing more */
};

static bool take_buf(struct ursa__ep *ep, uint16_t bgid, char **addr,
                     uint32_t *len, uint16_t *bid) {
  if (bgid >= MAX_GROUPS || !ep->groups[bgid].br) return false;
  struct io_uring_buf_ring *br = ep->groups[bgid].br;
  uint16_t tail = __atomic_load_n(&br->tail, __ATOMIC_ACQUIRE);
  if (tail == ep->groups[bgid].head) return false;
  struct io_uring_buf *b = &br->bufs[ep->groups[bgid].head &
                                     ep->groups[bgid].mask];
  *addr = (char *)(uintptr_t)b->addr;
  *len = b->len;
  *bid = b->bid;
  return true;
}

static uint32_t buf_used(struct ursa__ep *ep, uint16_t bgid, uint16_t bid) {
  ep->groups[bgid].head++;
  return IORING_CQE_F_BUFFER | ((uint32_t)bid << IORING_CQE_BUFFER_SHIFT);
}

/* Ends a multishot or a single shot on a result that is not data. */
static int finish(ursa_loop *loop, ep_req *r, int res) {
  post(loop, r->ud, res, 0);
  return R_DONE;
}

static int run_recv(ursa_loop *loop, ep_req *r) {
  struct ursa__ep *ep = loop->ep;
  char *buf = (char *)(uintptr_t)r->addr;
  uint32_t len = r->len;
  uint16_t bid = 0;
  if (r->bits & R_BUFSEL) {
    uint32_t blen;
    if (!take_buf(ep, r->bgid, &buf, &blen, &bid))
      return finish(loop, r, -ENOBUFS); /* the layer above counts it */
    if (!len || len > blen) len = blen;
  }
  SYSCALL(loop);
  ssize_t n = recv(r->fd, buf, len, (int)r->msg_flags | MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return R_WAIT;
    if (errno == EINTR) return R_WAIT;
    return finish(loop, r, -errno);
  }
  uint32_t flags = 0;
  if ((r->bits & R_BUFSEL) && n > 0) flags = buf_used(ep, r->bgid, bid);
  if ((r->bits & R_MULTI) && n > 0) {
    post(loop, r->ud, (int)n, flags | IORING_CQE_F_MORE);
    return (size_t)n >= len ? R_MORE : R_DRAINED;
  }
  post(loop, r->ud, (int)n, flags);
  return R_DONE;
}

/* recvmsg: single shot into the msghdr's one iovec (or a buffer of the
 * group), or multishot in the kernel's layout: a struct
 * io_uring_recvmsg_out, the name's room, the control's room, the payload. */
static int run_recvmsg(ursa_loop *loop, ep_req *r) {
  struct ursa__ep *ep = loop->ep;
  struct msghdr *um = (struct msghdr *)(uintptr_t)r->addr;
  char *buf = NULL;
  uint32_t blen = 0;
  uint16_t bid = 0;
  if (r->bits & R_BUFSEL) {
    if (!take_buf(ep, r->bgid, &buf, &blen, &bid))
      return finish(loop, r, -ENOBUFS);
  }
  struct msghdr m = *um;
  struct iovec iov;
  if (r->bits & R_MULTI) {
    size_t head = sizeof(struct io_uring_recvmsg_out) + um->msg_namelen +
                  um->msg_controllen;
    if (!(r->bits & R_BUFSEL) || blen < head)
      return finish(loop, r, -EFAULT);
    m.msg_name = um->msg_namelen ? buf + sizeof(struct io_uring_recvmsg_out)
                                 : NULL;
    m.msg_control = um->msg_controllen
                        ? buf + sizeof(struct io_uring_recvmsg_out) +
                              um->msg_namelen
                        : NULL;
    iov.iov_base = buf + head;
    iov.iov_len = blen - head;
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    SYSCALL(loop);
    ssize_t n = recvmsg(r->fd, &m, (int)r->msg_flags | MSG_DONTWAIT |
                                       MSG_TRUNC);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return R_WAIT;
      return finish(loop, r, -errno);
    }
    struct io_uring_recvmsg_out o = {
        .namelen = m.msg_namelen,
        .controllen = (uint32_t)m.msg_controllen,
        .payloadlen = (uint32_t)n,
        .flags = (uint32_t)m.msg_flags,
    };
    memcpy(buf, &o, sizeof(o));
    size_t got = (size_t)n < iov.iov_len ? (size_t)n : iov.iov_len;
    post(loop, r->ud, (int)(head + got),
         buf_used(ep, r->bgid, bid) | IORING_CQE_F_MORE);
    return R_MORE;
  }
  if (r->bits & R_BUFSEL) {
    if (um->msg_iovlen != 1) return finish(loop, r, -EINVAL);
    iov.iov_base = buf;
    iov.iov_len = um->msg_iov[0].iov_len && um->msg_iov[0].iov_len < blen
                      ? um->msg_iov[0].iov_len
                      : blen;
    m.msg_iov = &iov;
  }
  SYSCALL(loop);
  ssize_t n = recvmsg(r->fd, &m, (int)r->msg_flags | MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      return R_WAIT;
    return finish(loop, r, -errno);
  }
  um->msg_namelen = m.msg_namelen;
  um->msg_controllen = m.msg_controllen;
  um->msg_flags = m.msg_flags;
  uint32_t flags = 0;
  if ((r->bits & R_BUFSEL) && n > 0) flags = buf_used(ep, r->bgid, bid);
  post(loop, r->ud, (int)n, flags);
  return R_DONE;
}

static int run_send(ursa_loop *loop, ep_req *r) {
  SYSCALL(loop);
  ssize_t n;
  if (r->opcode == IORING_OP_SEND)
    n = send(r->fd, (const void *)(uintptr_t)r->addr, r->len,
             (int)r->msg_flags | MSG_DONTWAIT);
  else
    n = sendmsg(r->fd, (const struct msghdr *)(uintptr_t)r->addr,
                (int)r->msg_flags | MSG_DONTWAIT);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      return R_WAIT;
    return finish(loop, r, -errno);
  }
  post(loop, r->ud, (int)n, 0);
  return R_DONE;
}

static int run_accept(ursa_loop *loop, ep_req *r) {
  /* Another process on the same listener may take the connection that
   * made it ready: a blocking accept would then hang the loop. */
  int e = set_nonblock(loop, r->fd);
  if (e < 0) return finish(loop, r, e);
  SYSCALL(loop);
  int fd = accept4(r->fd, NULL, NULL, (int)r->msg_flags | SOCK_NONBLOCK);
  if (fd < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
        errno == ECONNABORTED)
      return R_WAIT;
    return finish(loop, r, -errno);
  }
  if (fd_state(loop->ep, fd)) loop->ep->fdbits[fd] |= FB_NONBLOCK;
  if (r->bits & R_MULTI) {
    post(loop, r->ud, fd, IORING_CQE_F_MORE);
    return R_MORE;
  }
  post(loop, r->ud, fd, 0);
  return R_DONE;
}

static int run_connect(ursa_loop *loop, ep_req *r) {
  if (r->bits & R_PROGRESS) {
    int err = 0;
    socklen_t el = sizeof(err);
    SYSCALL(loop);
    if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0) err = errno;
    return finish(loop, r, -err);
  }
  int e = set_nonblock(loop, r->fd);
  if (e < 0) return finish(loop, r, e);
  SYSCALL(loop);
  if (connect(r->fd, (const struct sockaddr *)(uintptr_t)r->addr,
              (socklen_t)r->len) == 0)
    return finish(loop, r, 0);
  if (errno == EINPROGRESS) {
    r->bits |= R_PROGRESS;
    return R_WAIT;
  }
  if (errno == EAGAIN) { /* a Unix listener's full backlog: try again */
    r->bits |= R_RETRY;
    return R_WAIT;
  }
  if (errno == EISCONN) return finish(loop, r, 0);
  return finish(loop, r, -errno);
}

static int run(ursa_loop *loop, ep_req *r) {
  switch (r->opcode) {
    case IORING_OP_RECV:
      return run_recv(loop, r);
    case IORING_OP_RECVMSG:
      return run_recvmsg(loop, r);
    case IORING_OP_SEND:
    case IORING_OP_SENDMSG:
      return run_send(loop, r);
    case IORING_OP_ACCEPT:
      return run_accept(loop, r);
    case IORING_OP_CONNECT:
      return run_connect(loop, r);
    default:
      return finish(loop, r, -EINVAL);
  }
}

/* Runs r until it would block, is done, or has had its share. */
static int run_some(ursa_loop *loop, ep_req *r) {
  int st;
  for (int i = 0; i < MULTI_TRIES; i++) {
    st = run(loop, r);
    if (st != R_MORE) return st;
  }
  return st;
}

/* Takes a waiting operation off whatever holds it and frees it. */
static void unwait(struct ursa__ep *ep, ep_req *r) {
  if (r->bits & R_RETRY) {
    q_del(&ep->retry, r);
  } else {
    ep_fd *f = &ep->fds[r->fd];
    q_del((r->bits & R_WRITE) ? &f->wq : &f->rq, r);
    mark_dirty(ep, r->fd);
  }
  hash_del(ep, r);
  if (r->heap >= 0) heap_del(ep, r);
  req_free(ep, r);
}

/* Starts one SQE's operation (with the linked timeout after it, if any). */
static void start(ursa_loop *loop, const struct io_uring_sqe *sqe,
                  const struct io_uring_sqe *timeout) {
  struct ursa__ep *ep = loop->ep;
  ep_req t = {0};
  t.ud = sqe->user_data;
  t.fd = sqe->fd;
  t.opcode = sqe->opcode;
  t.addr = sqe->addr;
  t.len = sqe->len;
  t.msg_flags = sqe->msg_flags;
  t.heap = -1;
  if (sqe->flags & IOSQE_FIXED_FILE) {
    post(loop, t.ud, -EBADF, 0); /* no direct descriptors here */
    return;
  }
  switch (sqe->opcode) {
    case IORING_OP_NOP:
      post(loop, t.ud, 0, 0);
      return;
    case IORING_OP_ASYNC_CANCEL: {
      ep_req *r = hash_find(ep, sqe->addr);
      if (r) {
        post(loop, r->ud, -ECANCELED, 0);
        unwait(ep, r);
      }
      post(loop, t.ud, r ? 0 : -ENOENT, 0);
      return;
    }
    case IORING_OP_SHUTDOWN:
      SYSCALL(loop);
      post(loop, t.ud, shutdown(t.fd, (int)sqe->len) == 0 ? 0 : -errno, 0);
      return;
    case IORING_OP_CLOSE: {
      if (sqe->file_index) {
        post(loop, t.ud, -EBADF, 0);
        return;
      }
      ep_fd *f = (unsigned)t.fd < ep->nfds ? &ep->fds[t.fd] : NULL;
      if (f) {
        /* The layers end every operation before the close; one left would
         * otherwise wait on a descriptor number that is reused. */
        fail_waiting(loop, t.fd, -ECANCELED);
        uint8_t *bits = &ep->fdbits[t.fd];
        if (*bits & (FB_IN | FB_OUT)) {
          SYSCALL(loop);
          epoll_ctl(ep->epfd, EPOLL_CTL_DEL, t.fd, NULL);
        }
        *bits &= FB_DIRTY; /* the dirty list still holds it */
      }
      SYSCALL(loop);
      post(loop, t.ud, close(t.fd) == 0 ? 0 : -errno, 0);
      return;
    }
    case IORING_OP_RECV:
    case IORING_OP_RECVMSG:
      if (sqe->ioprio & IORING_RECV_MULTISHOT) t.bits |= R_MULTI;
      if (sqe->ioprio & IORING_RECVSEND_BUNDLE) {
        post(loop, t.ud, -EINVAL, 0);
        return;
      }
      if (sqe->flags & IOSQE_BUFFER_SELECT) t.bits |= R_BUFSEL;
      t.bgid = sqe->buf_group;
      break;
    case IORING_OP_ACCEPT:
      if (sqe->ioprio & IORING_ACCEPT_MULTISHOT) t.bits |= R_MULTI;
      /* Direct slots, and the peer's address, which no layer asks for. */
      if (sqe->file_index || sqe->addr || sqe->addr2) {
        post(loop, t.ud, -EINVAL, 0);
        return;
      }
      t.msg_flags = sqe->accept_flags;
      break;
    case IORING_OP_CONNECT:
      t.len = (uint32_t)sqe->off; /* the address length */
      t.bits |= R_WRITE;
      break;
    case IORING_OP_SEND:
    case IORING_OP_SENDMSG:
      t.bits |= R_WRITE;
      break;
    case IORING_OP_POLL_ADD:
      if (sqe->len & IORING_POLL_ADD_MULTI) t.bits |= R_MULTI;
      t.bits |= R_POLL;
      t.msg_flags = sqe->poll32_events & (EPOLLIN | EPOLLOUT);
      break;
    default: /* SEND_ZC and the rest: not on this backend */
      post(loop, t.ud, sqe->opcode == IORING_OP_SEND_ZC ? -EOPNOTSUPP
                                                        : -EINVAL, 0);
      return;
  }
  if (t.fd < 0) {
    post(loop, t.ud, -EBADF, 0);
    return;
  }
  ep_fd *f = fd_state(ep, t.fd);
  if (!f) {
    post(loop, t.ud, -ENOMEM, 0);
    return;
  }
  int st = R_WAIT;
  /* Behind others waiting on the same side, so a side keeps its order; a
   * poll waits for epoll to say (at once, when the descriptor is ready). */
  if (!(t.bits & R_POLL) && !((t.bits & R_WRITE) ? f->wq : f->rq))
    st = run_some(loop, &t);
  if (st == R_DONE) return;
  ep_req *r = req_alloc(ep);
  if (!r) {
    post(loop, t.ud, -ENOMEM, 0);
    return;
  }
  *r = t;
  if (r->bits & R_RETRY) {
    q_push(&ep->retry, r);
  } else {
    f = &ep->fds[r->fd]; /* an accept may have grown the table */
    q_push((r->bits & R_WRITE) ? &f->wq : &f->rq, r);
    mark_dirty(ep, r->fd);
  }
  hash_put(ep, r);
  if (timeout) {
    const struct __kernel_timespec *ts =
        (const struct __kernel_timespec *)(uintptr_t)timeout->addr;
    uint64_t ns = (uint64_t)ts->tv_sec * 1000000000u + (uint64_t)ts->tv_nsec;
    r->deadline_ns = ursa__clock_ns() + (ns ? ns : 1);
    if (!heap_push(ep, r)) r->deadline_ns = 0;
  }
}

static void ep_submit(ursa_loop *loop) {
  struct ursa__ep *ep = loop->ep;
  for (unsigned i = 0; i < ep->sq_n; i++) {
    const struct io_uring_sqe *sqe = &ep->sq[i];
    const struct io_uring_sqe *timeout = NULL;
    if ((sqe->flags & IOSQE_IO_LINK) && i + 1 < ep->sq_n &&
        ep->sq[i + 1].opcode == IORING_OP_LINK_TIMEOUT)
      timeout = &ep->sq[++i];
    start(loop, sqe, timeout);
  }
  ep->sq_n = 0;
}

/* Runs what waits on one side of a ready descriptor, in order. */
static void run_queue(ursa_loop *loop, int fd, bool write) {
  struct ursa__ep *ep = loop->ep;
  for (;;) {
    ep_fd *f = &ep->fds[fd];
    ep_req *r = write ? f->wq : f->rq;
    if (!r) return;
    int st = run_some(loop, r);
    if (st == R_DONE) {
      unwait(ep, r);
      continue;
    }
    return; /* would block, or had its share: level-triggered, it is back */
  }
}

static void run_retries(ursa_loop *loop) {
  struct ursa__ep *ep = loop->ep;
  unsigned n = 0;
  for (ep_req *r = ep->retry; r && n < 64; n++) {
    ep_req *next = r->next == ep->retry ? NULL : r->next;
    r->bits &= (uint8_t)~R_RETRY;
    int st = run(loop, r);
    r->bits |= R_RETRY;
    if (st == R_DONE) {
      unwait(ep, r);
    } else if (r->bits & R_PROGRESS) {
      /* In progress now: wait for writability like any connect. */
      q_del(&ep->retry, r);
      r->bits &= (uint8_t)~R_RETRY;
      q_push(&ep->fds[r->fd].wq, r);
      mark_dirty(ep, r->fd);
    }
    r = next;
  }
}

static void expire(ursa_loop *loop, uint64_t now) {
  struct ursa__ep *ep = loop->ep;
  while (ep->nheap && ep->heap[0]->deadline_ns <= now) {
    ep_req *r = ep->heap[0];
    post(loop, r->ud, -ECANCELED, 0); /* as a linked timeout ends it */
    unwait(ep, r);
  }
}

/* Submits, then waits as an enter does: until a completion is posted or
 * wait_ns has passed (a readiness event that completes nothing, as when
 * another process took the connection, waits on). */
static int ep_enter(ursa_loop *loop, int64_t wait_ns) {
  struct ursa__ep *ep = loop->ep;
  ep_submit(loop);
  flush_dirty(loop);
  if (ep->cq_tail != ep->cq_head) {
    /* Completions at hand: return them, as an enter would, but ask epoll
     * now and then so that ready sockets wait at most a few rounds. */
    if (++ep->starved < STARVE_ROUNDS) return 0;
    wait_ns = 0;
  }
  ep->starved = 0;
  uint64_t end = wait_ns > 0 ? ursa__clock_ns() + (uint64_t)wait_ns : 0;
  for (;;) {
    int timeout_ms = wait_ns < 0 ? -1 : (int)((wait_ns + 999999) / 1000000);
    if (timeout_ms != 0 && (ep->nheap || ep->retry)) {
      uint64_t now = ursa__clock_ns();
      int64_t until = ep->retry ? RETRY_NS : -1;
      if (ep->nheap) {
        int64_t d = ep->heap[0]->deadline_ns > now
                        ? (int64_t)(ep->heap[0]->deadline_ns - now)
                        : 0;
        if (until < 0 || d < until) until = d;
      }
      int ms = (int)((until + 999999) / 1000000);
      if (timeout_ms < 0 || ms < timeout_ms) timeout_ms = ms;
    }
    SYSCALL(loop);
    int n = epoll_wait(ep->epfd, ep->events, EVENTS, timeout_ms);
    if (n < 0) return errno == EINTR ? -EINTR : -errno;
    for (int i = 0; i < n; i++) {
      int fd = ep->events[i].data.fd;
      uint32_t ev = ep->events[i].events;
      if ((unsigned)fd >= ep->nfds) continue;
      ep_req *pr = ep->fds[fd].rq;
      if (pr && (pr->bits & R_POLL)) {
        uint32_t rev = ev & (pr->msg_flags | EPOLLERR | EPOLLHUP);
        if (!rev) continue;
        if (pr->bits & R_MULTI) {
          post(loop, pr->ud, (int)rev, IORING_CQE_F_MORE);
        } else {
          post(loop, pr->ud, (int)rev, 0);
          unwait(ep, pr);
        }
        continue;
      }
      if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        run_queue(loop, fd, false);
      if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) run_queue(loop, fd, true);
    }
    if (ep->retry) run_retries(loop);
    if (ep->nheap) expire(loop, ursa__clock_ns());
    flush_dirty(loop);
    if (ep->cq_tail != ep->cq_head || wait_ns == 0) return 0;
    if (wait_ns > 0) {
      uint64_t now = ursa__clock_ns();
      if (now >= end) return -ETIME;
      wait_ns = (int64_t)(end - now);
    }
  }
}

static unsigned ep_sq_space(ursa_loop *loop) {
  return loop->ep->sq_cap - loop->ep->sq_n;
}

static struct io_uring_sqe *ep_get_sqe(ursa_loop *loop) {
  struct ursa__ep *ep = loop->ep;
  return &ep->sq[ep->sq_n++];
}

static unsigned ep_reap(ursa_loop *loop, ursa__cqe *out, unsigned max) {
  struct ursa__ep *ep = loop->ep;
  unsigned n = 0;
  while (n < max && ep->cq_head != ep->cq_tail)
    out[n++] = ep->cq[ep->cq_head++ & ep->cq_mask];
  return n;
}

static int ep_buf_ring_register(ursa_loop *loop, struct io_uring_buf_ring *br,
                                unsigned entries, uint16_t bgid, bool inc) {
  struct ursa__ep *ep = loop->ep;
  if (inc) return -EOPNOTSUPP; /* io_uring's alone */
  if (bgid >= MAX_GROUPS || ep->groups[bgid].br) return -EINVAL;
  ep->groups[bgid].br = br;
  ep->groups[bgid].mask = entries - 1;
  ep->groups[bgid].head = 0;
  return 0;
}

static void ep_buf_ring_unregister(ursa_loop *loop, uint16_t bgid) {
  if (bgid < MAX_GROUPS) loop->ep->groups[bgid].br = NULL;
}

static void ep_free(ursa_loop *loop) {
  struct ursa__ep *ep = loop->ep;
  if (!ep) return;
  if (ep->epfd >= 0) close(ep->epfd);
  while (ep->slabs) {
    ep_slab *s = ep->slabs;
    ep->slabs = s->next;
    free(s);
  }
  free(ep->sq);
  free(ep->cq);
  free(ep->fds);
  free(ep->fdbits);
  free(ep->dirty);
  free(ep->hash);
  free(ep->heap);
  free(ep);
  loop->ep = NULL;
}

const ursa__backend ursa__epoll_backend = {
    "epoll",   ep_sq_space,          ep_get_sqe,
    ep_submit, ep_enter,             ep_reap,
    ep_buf_ring_register,            ep_buf_ring_unregister,
    ep_free,
};

int ursa__epoll_setup(ursa_loop *loop, const ursa_loop_options *o) {
  struct ursa__ep *ep = calloc(1, sizeof(*ep));
  if (!ep) return -ENOMEM;
  loop->ep = ep;
  ep->epfd = epoll_create1(EPOLL_CLOEXEC);
  unsigned cq = 64;
  while (cq < o->cq_entries) cq *= 2;
  ep->sq_cap = o->sq_entries;
  ep->sq = calloc(ep->sq_cap, sizeof(*ep->sq));
  ep->cq = malloc(cq * sizeof(*ep->cq));
  ep->cq_mask = cq - 1;
  ep->hash = calloc(64, sizeof(*ep->hash));
  ep->hash_mask = 63;
  if (ep->epfd < 0 || !ep->sq || !ep->cq || !ep->hash) {
    int err = ep->epfd < 0 ? -errno : -ENOMEM;
    ep_free(loop);
    return err;
  }
  loop->disabled = o->disable;
  /* What the layers may use here: the backend gives their behaviour. */
  loop->used = (URSA_FEAT_MULTISHOT_ACCEPT | URSA_FEAT_MULTISHOT_RECV) &
               ~o->disable;
  return 0;
}
