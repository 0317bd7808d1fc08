/* epoll.h - the epoll backend's own types and the containers its two
 * files share: the reactor (epoll.c) and what each io_uring opcode means
 * here (epoll_ops.c).  Inside the core only. */
#ifndef URSA_EPOLL_H
#define URSA_EPOLL_H

#include "core.h"

#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

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
  struct ep_deadline *dl; /* its linked timeout, or NULL */
  uint64_t addr;        /* buffer, msghdr or sockaddr */
  uint32_t len;         /* buffer length, address length */
  int32_t fd;
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
#define FB_STREAM 0x20   /* read and written as a stream (a pipe): READ and
                            WRITE wait on readiness, not the work pool */
#define FB_NOPOLL 0x40   /* such a stream epoll cannot watch (/dev/zero):
                            its reads never wait, and are single-shot */
#define FD_STEP 1024     /* the table grows by this many descriptors */

/* A linked timeout's place in the deadline heap (the core's heap of
 * deadlines, as the timers'), taken from the backend's pool while an
 * operation waits with one: only connects and timed writes carry them,
 * so the operations that wait without one pay a pointer, not a node. */
typedef struct ep_deadline {
  struct ursa__hnode node; /* first: a heap node is its deadline */
  ep_req *r;
  struct ep_deadline *next; /* the pool's free list */
} ep_deadline;

/* An operation run as a system call on the work pool (epoll_pool.c). */
typedef struct ep_job ep_job;

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
  ursa__heap deadlines;   /* linked timeouts, nearest first */
  ep_deadline *free_dl;   /* the deadline pool: grows to the most timed
                             operations waiting at once */
  ep_req *retry; /* circular, as a descriptor queue */
  ep_job *jobs;      /* on the pool (circular), for cancel to find */
  ep_job *free_jobs; /* their memory, kept for the next */
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

/* What running an operation once came to. */
enum {
  R_WAIT = 0, /* would block: wait for readiness */
  R_DONE,     /* completed: its last completion is posted */
  R_MORE,     /* a multishot posted one and goes on; likely more ready */
  R_DRAINED,  /* a multishot posted one and goes on; likely nothing more */
};

/* What an io_uring opcode means on this backend: one row per opcode, in
 * epoll_ops.c, as the kernel's opdef.c lists its ops. */
typedef struct ursa__ep_op {
  /* Reads the SQE's fields into r (r already holds user_data, fd, addr,
   * len, msg_flags).  0: go on (run it, or wait); 1: it completed at once
   * and posted its result, or went to the work pool, which posts it; < 0:
   * post that as its result.  NULL: nothing more to read. */
  int (*decode)(ursa_loop *loop, const struct io_uring_sqe *sqe, ep_req *r);
  /* Tries it without blocking: R_WAIT, R_DONE, R_MORE or R_DRAINED.
   * NULL for an opcode that decode always completes. */
  int (*run)(ursa_loop *loop, ep_req *r);
  /* Waits for writability (else readability). */
  bool write;
} ursa__ep_op;

extern const ursa__ep_op ursa__ep_ops[URSA__OP_TABLE] URSA__HIDDEN;

/* ---- the completion queue (epoll.c grows it) ---- */

bool ursa__ep_cq_grow(struct ursa__ep *ep) URSA__HIDDEN;

static inline void post(ursa_loop *loop, uint64_t ud, int res, uint32_t flags) {
  struct ursa__ep *ep = loop->ep;
  if (!ud) return; /* nobody waits for it (a cancel, a linked timeout) */
  if (ep->cq_tail - ep->cq_head > ep->cq_mask && !ursa__ep_cq_grow(ep)) {
    loop->stats.cq_dropped++; /* out of memory: the one loss, counted */
    return;
  }
  ursa__cqe *c = &ep->cq[ep->cq_tail++ & ep->cq_mask];
  c->ud = ud;
  c->res = res;
  c->flags = flags;
}

/* ---- waiting operations: allocation, the hash, queues ---- */

static inline ep_req *req_alloc(struct ursa__ep *ep) {
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

static inline void req_free(struct ursa__ep *ep, ep_req *r) {
  r->next = ep->free_reqs;
  ep->free_reqs = r;
}

static inline unsigned hash_of(const struct ursa__ep *ep, uint64_t ud) {
  return (unsigned)((ud >> 3) * 0x9E3779B97F4A7C15ull >> 32) & ep->hash_mask;
}

static inline bool hash_grow(struct ursa__ep *ep) {
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

static inline void hash_put(struct ursa__ep *ep, ep_req *r) {
  /* Two to a bucket: only cancels look, and the table is memory every
   * waiting receive pays for.  A table that cannot grow makes longer
   * chains. */
  if (ep->nwaiting > 2 * (ep->hash_mask + 1)) hash_grow(ep);
  unsigned b = hash_of(ep, r->ud);
  r->hnext = ep->hash[b];
  ep->hash[b] = r;
  ep->nwaiting++;
}

static inline ep_req *hash_find(struct ursa__ep *ep, uint64_t ud) {
  for (ep_req *r = ep->hash[hash_of(ep, ud)]; r; r = r->hnext)
    if (r->ud == ud) return r;
  return NULL;
}

static inline void hash_del(struct ursa__ep *ep, ep_req *r) {
  ep_req **p = &ep->hash[hash_of(ep, r->ud)];
  while (*p != r) p = &(*p)->hnext;
  *p = r->hnext;
  ep->nwaiting--;
}

static inline void q_push(ep_req **q, ep_req *r) {
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

static inline void q_del(ep_req **q, ep_req *r) {
  if (r->next == r) {
    *q = NULL;
    return;
  }
  r->prev->next = r->next;
  r->next->prev = r->prev;
  if (*q == r) *q = r->next;
}

/* ---- descriptors (epoll.c) ---- */

/* The descriptor's state, the table grown to hold it; NULL: no memory. */
ep_fd *ursa__ep_fd(struct ursa__ep *ep, int fd) URSA__HIDDEN;
/* Sets O_NONBLOCK once per descriptor (accept and connect need it). */
int ursa__ep_set_nonblock(ursa_loop *loop, int fd) URSA__HIDDEN;
/* Ends everything waiting on fd with res. */
void ursa__ep_fail_waiting(ursa_loop *loop, int fd, int res) URSA__HIDDEN;
/* Takes a waiting operation off whatever holds it and frees it. */
void ursa__ep_unwait(struct ursa__ep *ep, ep_req *r) URSA__HIDDEN;

/* Sends a run of SENDMSG SQEs to one socket (from sqe, of at most n) with
 * one sendmmsg when nothing waits to write there; posts each one sent and
 * returns how many (0: none, start them one by one). */
unsigned ursa__ep_send_run(ursa_loop *loop, const struct io_uring_sqe *sqe,
                           unsigned n) URSA__HIDDEN;

/* ---- operations on the work pool (epoll_pool.c) ---- */

/* The decode of an opcode that readiness cannot help (a file's): queues
 * the SQE as a job on the work pool; 1, or a negative errno. */
int ursa__ep_decode_pool(ursa_loop *loop, const struct io_uring_sqe *sqe,
                         ep_req *r) URSA__HIDDEN;
/* Cancels the job of user_data ud: 0 (its -ECANCELED is posted), -EALREADY
 * (a thread runs it), -ENOENT (no such job). */
int ursa__ep_cancel_job(ursa_loop *loop, uint64_t ud) URSA__HIDDEN;
/* Frees the kept job memory (at the loop's end, with no job out). */
void ursa__ep_jobs_free(struct ursa__ep *ep) URSA__HIDDEN;

#endif /* URSA_EPOLL_H */
