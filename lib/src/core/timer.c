/* timer.c - timers in user space: a pairing heap per loop, ordered by
 * deadline (then start order), and one wait bounded by the nearest.
 *
 * Why not one kernel timeout per timer: the kernel keeps armed timeouts on
 * one list, so each cancel walks it (O(n), with interrupts off), and under
 * DEFER_TASKRUN every expiry is task work that an enter runs a bounded
 * batch of (20 since Linux 6.13).  20,000 armed timers with bursts of
 * stops left expiries hundreds of milliseconds late.  Here start and stop
 * are O(log n) (amortised) with no system call, and a stop before the
 * expiry's callback always wins.  The heap works on intrusive nodes, and
 * the epoll backend keeps its linked timeouts in one of its own. */
#include "core.h"

#include <errno.h>
#include <time.h>

uint64_t ursa__clock_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef struct ursa__hnode hnode;

static bool before(const hnode *a, const hnode *b) {
  return a->due_ns < b->due_ns || (a->due_ns == b->due_ns && a->seq < b->seq);
}

/* Joins two heaps whose roots have no siblings; returns the new root. */
static hnode *meld(hnode *a, hnode *b) {
  if (!a) return b;
  if (!b) return a;
  if (before(b, a)) {
    hnode *t = a;
    a = b;
    b = t;
  }
  b->prev = a;
  b->sibling = a->child;
  if (a->child) a->child->prev = b;
  a->child = b;
  return a;
}

/* The two-pass merge of a list of sibling heaps into one. */
static hnode *merge_pairs(hnode *first) {
  hnode *pairs = NULL; /* the melded pairs, last first */
  while (first) {
    hnode *a = first, *b = first->sibling;
    first = b ? b->sibling : NULL;
    a->sibling = a->prev = NULL;
    if (b) b->sibling = b->prev = NULL;
    hnode *m = meld(a, b);
    m->sibling = pairs;
    pairs = m;
  }
  hnode *root = NULL;
  while (pairs) {
    hnode *next = pairs->sibling;
    pairs->sibling = NULL;
    root = meld(root, pairs);
    pairs = next;
  }
  return root;
}

void ursa__heap_insert(ursa__heap *h, hnode *n) {
  n->child = n->sibling = n->prev = NULL;
  n->seq = h->seq++;
  h->root = meld(h->root, n);
}

void ursa__heap_remove(ursa__heap *h, hnode *n) {
  if (n == h->root) {
    h->root = merge_pairs(n->child);
  } else {
    /* Unlink n from its parent's child list, then meld its children. */
    if (n->prev->child == n)
      n->prev->child = n->sibling;
    else
      n->prev->sibling = n->sibling;
    if (n->sibling) n->sibling->prev = n->prev;
    h->root = meld(h->root, merge_pairs(n->child));
  }
  if (h->root) h->root->prev = NULL;
  n->child = n->sibling = n->prev = NULL;
}

#define TIMER_OF(n) URSA__CONTAINER(n, ursa_timer, node)

void ursa__timer_unarm(ursa_loop *loop, ursa_op *op) {
  ursa__heap_remove(&loop->timers, &((ursa_timer *)op)->node);
}

int64_t ursa__timer_wait_ns(const ursa_loop *loop, uint64_t now_ns) {
  const hnode *n = loop->timers.root;
  if (!n) return -1;
  return n->due_ns > now_ns ? (int64_t)(n->due_ns - now_ns) : 0;
}

unsigned ursa__run_timers(ursa_loop *loop) {
  unsigned n = 0;
  /* Timers started by these callbacks wait for the next round, even at
   * timeout 0, so a timer that restarts itself cannot hold the loop. */
  uint64_t limit = loop->timers.seq;
  hnode *h;
  while ((h = loop->timers.root) && h->due_ns <= loop->now_ns &&
         h->seq < limit) {
    ursa_timer *t = TIMER_OF(h);
    ursa__heap_remove(&loop->timers, h);
    n++;
    if (t->repeat_ms) {
      /* Armed again before the callback, which may stop it. */
      h->due_ns = loop->now_ns + t->repeat_ms * 1000000u;
      ursa__heap_insert(&loop->timers, h);
    } else {
      ursa__op_done(loop, &t->op);
    }
    t->cb(t, 0);
  }
  return n;
}

/* A stopped timer's result, from the pending list. */
static void timer_complete(ursa_loop *loop, ursa_op *op, int res,
                          uint32_t flags) {
  ursa_timer *t = (ursa_timer *)op;
  (void)flags;
  ursa__op_done(loop, op);
  t->cb(t, res);
}

URSA__OP_TYPE(timer) = {.name = "timer", .complete = timer_complete};

int ursa_timer_start(ursa_loop *loop, ursa_timer *t, uint64_t timeout_ms,
                     uint64_t repeat_ms, ursa_timer_cb cb) {
  if (!loop || !t || !cb)
    return ursa__invalid("ursa_timer_start: NULL %s",
                         !loop ? "loop" : !t ? "timer" : "callback");
  if (t->op.state != URSA__IDLE) return -EBUSY;
  /* Past ~584 years the deadline saturates: never, in practice. */
  uint64_t now = ursa__clock_ns(), span = timeout_ms * 1000000u;
  if (timeout_ms > UINT64_MAX / 1000000u || span > UINT64_MAX - now)
    span = UINT64_MAX - now;
  if (repeat_ms > UINT64_MAX / 2000000u) repeat_ms = UINT64_MAX / 2000000u;
  t->loop = loop;
  t->cb = cb;
  t->repeat_ms = repeat_ms;
  t->node.due_ns = now + span;
  t->op.kind = URSA__KIND(timer);
  t->op.nsqe = 0;
  t->op.flags = 0;
  t->op.state = URSA__ARMED;
  loop->active++;
  ursa__heap_insert(&loop->timers, &t->node);
  return 0;
}

int ursa_timer_stop(ursa_timer *t) {
  if (!t) return ursa__invalid("ursa_timer_stop: NULL timer");
  if (t->op.state == URSA__IDLE) return -ENOENT;
  return ursa__op_cancel(t->loop, &t->op);
}

int ursa_timer_active(const ursa_timer *t) {
  return t && t->op.state != URSA__IDLE;
}
