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
#include "epoll.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the completion queue ---- */

bool ursa__ep_cq_grow(struct ursa__ep *ep) {
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

/* ---- descriptors ---- */

/* Grows in steps rather than doubling: a server's descriptors are its
 * connections, and the table's slack is memory every one pays for. */
ep_fd *ursa__ep_fd(struct ursa__ep *ep, int fd) {
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

/* Ends everything waiting on fd with res. */
void ursa__ep_fail_waiting(ursa_loop *loop, int fd, int res) {
  struct ursa__ep *ep = loop->ep;
  for (ep_req *r; (r = ep->fds[fd].rq) || (r = ep->fds[fd].wq);) {
    post(loop, r->ud, res, 0);
    ursa__ep_unwait(ep, r);
  }
}

/* Brings epoll's interest in line with what waits on each changed fd. */
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
    ursa__ep_fail_waiting(loop, fd, err == EPERM ? -EOPNOTSUPP : -err);
  }
  ep->ndirty = 0;
}

int ursa__ep_set_nonblock(ursa_loop *loop, int fd) {
  if (!ursa__ep_fd(loop->ep, fd)) return -ENOMEM;
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

/* ---- running operations ---- */

static int run(ursa_loop *loop, ep_req *r) {
  int (*fn)(ursa_loop *, ep_req *) = ursa__ep_ops[r->opcode].run;
  if (fn) return fn(loop, r);
  post(loop, r->ud, -EINVAL, 0); /* a poll is never run: epoll reports it */
  return R_DONE;
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
void ursa__ep_unwait(struct ursa__ep *ep, ep_req *r) {
  if (r->bits & R_RETRY) {
    q_del(&ep->retry, r);
  } else {
    ep_fd *f = &ep->fds[r->fd];
    q_del((r->bits & R_WRITE) ? &f->wq : &f->rq, r);
    mark_dirty(ep, r->fd);
  }
  hash_del(ep, r);
  if (r->dl) {
    ursa__heap_remove(&ep->deadlines, &r->dl->node);
    r->dl->next = ep->free_dl;
    ep->free_dl = r->dl;
    r->dl = NULL;
  }
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
  if (sqe->flags & IOSQE_FIXED_FILE) {
    post(loop, t.ud, -EBADF, 0); /* no direct descriptors here */
    return;
  }
  const ursa__ep_op *op =
      sqe->opcode < URSA__OP_TABLE ? &ursa__ep_ops[sqe->opcode] : NULL;
  if (!op || (!op->decode && !op->run)) {
    post(loop, t.ud, -EINVAL, 0); /* an opcode no layer uses here */
    return;
  }
  int d = op->decode ? op->decode(loop, sqe, &t) : 0;
  if (d) {
    if (d < 0) post(loop, t.ud, d, 0);
    return;
  }
  if (op->write) t.bits |= R_WRITE;
  if (t.fd < 0) {
    post(loop, t.ud, -EBADF, 0);
    return;
  }
  ep_fd *f = ursa__ep_fd(ep, t.fd);
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
    ep_deadline *dl = ep->free_dl;
    if (dl)
      ep->free_dl = dl->next;
    else
      dl = malloc(sizeof(*dl)); /* none: the operation waits untimed */
    if (dl) {
      dl->r = r;
      dl->node.due_ns = ursa__clock_ns() + (ns ? ns : 1);
      r->dl = dl;
      ursa__heap_insert(&ep->deadlines, &dl->node);
    }
  }
}

static void ep_submit(ursa_loop *loop) {
  struct ursa__ep *ep = loop->ep;
  for (unsigned i = 0; i < ep->sq_n; i++) {
    const struct io_uring_sqe *sqe = &ep->sq[i];
    const struct io_uring_sqe *timeout = NULL;
    if (sqe->opcode == IORING_OP_SENDMSG && i + 1 < ep->sq_n) {
      /* A run of sends to one socket goes out with one sendmmsg. */
      unsigned sent = ursa__ep_send_run(loop, sqe, ep->sq_n - i);
      if (sent) {
        i += sent - 1;
        continue;
      }
    }
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
      ursa__ep_unwait(ep, r);
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
      ursa__ep_unwait(ep, r);
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
  struct ursa__hnode *n;
  while ((n = ep->deadlines.root) && n->due_ns <= now) {
    ep_req *r = ((ep_deadline *)n)->r;
    post(loop, r->ud, -ECANCELED, 0); /* as a linked timeout ends it */
    ursa__ep_unwait(ep, r);
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
    const struct ursa__hnode *first = ep->deadlines.root;
    if (timeout_ms != 0 && (first || ep->retry)) {
      uint64_t now = ursa__clock_ns();
      int64_t until = ep->retry ? RETRY_NS : -1;
      if (first) {
        int64_t d = first->due_ns > now ? (int64_t)(first->due_ns - now) : 0;
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
          ursa__ep_unwait(ep, pr);
        }
        continue;
      }
      if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        run_queue(loop, fd, false);
      if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) run_queue(loop, fd, true);
    }
    if (ep->retry) run_retries(loop);
    if (ep->deadlines.root) expire(loop, ursa__clock_ns());
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
  /* Deadlines still in the heap belong to waiting operations, which close
   * ended; the rest are on the free list. */
  while (ep->deadlines.root) {
    ep_deadline *dl = (ep_deadline *)ep->deadlines.root;
    ursa__heap_remove(&ep->deadlines, &dl->node);
    free(dl);
  }
  for (ep_deadline *dl = ep->free_dl, *next; dl; dl = next) {
    next = dl->next;
    free(dl);
  }
  ursa__ep_jobs_free(ep);
  free(ep);
  loop->ep = NULL;
}

/* A pipe or a terminal read and written as a stream (the stream layer
 * made it non-blocking): its READ and WRITE are tried at once and wait on
 * readiness. */
static int ep_stream_fd(ursa_loop *loop, int fd) {
  if (!ursa__ep_fd(loop->ep, fd)) return -ENOMEM;
  uint8_t *bits = &loop->ep->fdbits[fd];
  *bits |= FB_STREAM | FB_NONBLOCK;
  if (!(*bits & (FB_IN | FB_OUT))) {
    /* A device without poll (EPERM) is always ready: io_uring refuses
     * its multishot read (EBADFD), and so does this backend. */
    struct epoll_event ev = {.events = 0, .data.fd = fd};
    SYSCALL(loop);
    if (epoll_ctl(loop->ep->epfd, EPOLL_CTL_ADD, fd, &ev) == 0) {
      SYSCALL(loop);
      epoll_ctl(loop->ep->epfd, EPOLL_CTL_DEL, fd, NULL);
    } else if (errno == EPERM) {
      *bits |= FB_NOPOLL;
    }
  }
  return 0;
}

const ursa__backend ursa__epoll_backend = {
    .name = "epoll",
    .sq_space = ep_sq_space,
    .get_sqe = ep_get_sqe,
    .submit = ep_submit,
    .enter = ep_enter,
    .reap = ep_reap,
    .buf_ring_register = ep_buf_ring_register,
    .buf_ring_unregister = ep_buf_ring_unregister,
    .free = ep_free,
    .caps = URSA__BE_COUNTS_SYSCALLS,
    .stream_fd = ep_stream_fd,
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
  loop->used = ((URSA_FEAT_MULTISHOT_ACCEPT | URSA_FEAT_MULTISHOT_RECV |
                 URSA_FEAT_FILE_INLINE | URSA_FEAT_WAITID) |
                (o->enable & URSA_FEAT_READ_MULTISHOT)) &
               ~o->disable;
  return 0;
}
