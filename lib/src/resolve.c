/* resolve.c - name resolution off the loop: getaddrinfo(3) on a pool of
 * helper threads (up to URSA__LOOKUP_THREADS per process, started as
 * lookups queue up, kept for the next), the answers handed back through
 * an eventfd that the
 * loop polls with an op of its own (not a handle: it is armed only while a
 * request waits for its answer, so it neither shows in a walk nor keeps an
 * idle loop alive).  A cancelled lookup finishes on its thread and its
 * answer is dropped; the shared state lives until both the loop and the
 * last thread are done with it. */
#include "addr.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

URSA__OP_DECLARE(resolve);
URSA__OP_DECLARE(resolve_wake);

struct ursa__job {
  struct ursa__job *next; /* the pool's queue, then the done list */
  struct ursa__resolver *r;
  ursa_resolve_req *req; /* loop side only; NULL once cancelled */
  int family;
  int has_service;
  char host[256];
  char service[64];
  /* the answer, written by the thread before it lists the job as done */
  int status;
  ursa_addr *addrs;
  size_t n;
  char detail[160];
};

struct ursa__resolver {
  pthread_mutex_t mu;
  struct ursa__job *done; /* answered, for the loop to take */
  int threads;            /* lookups queued or running */
  int loop_gone;          /* the loop closed: the last thread frees this */
  int efd;
  /* loop side */
  ursa_loop *loop;
  unsigned outstanding; /* requests not yet called back */
  ursa_op wake;         /* poll of efd, armed while outstanding > 0 */
};

static void free_job(struct ursa__job *j) {
  free(j->addrs);
  free(j);
}

static void destroy(struct ursa__resolver *r) {
  for (struct ursa__job *j = r->done, *n; j; j = n) {
    n = j->next;
    free_job(j);
  }
  pthread_mutex_destroy(&r->mu);
  free(r);
}

static int gai_status(int g, char *detail, size_t len, const char *host) {
  snprintf(detail, len, "resolving '%.100s': %s", host, gai_strerror(g));
  switch (g) {
    case EAI_NONAME:
    case EAI_NODATA:
    case EAI_ADDRFAMILY:
    case EAI_SERVICE:
      return -ENOENT;
    case EAI_AGAIN:
      return -EAGAIN;
    case EAI_MEMORY:
      return -ENOMEM;
    case EAI_SYSTEM:
      return errno ? -errno : -EIO;
    default:
      return -EIO;
  }
}

static void lookup(struct ursa__job *j) {
  struct ursa__resolver *r = j->r;
  struct addrinfo *res = NULL;
  int g = ursa__getaddrinfo(j->host, j->has_service ? j->service : NULL,
                            j->family, &res);
  if (g) {
    j->status = gai_status(g, j->detail, sizeof(j->detail), j->host);
  } else {
    size_t n = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next)
      if (a->ai_addrlen <= sizeof(struct sockaddr_storage)) n++;
    j->addrs = calloc(n ? n : 1, sizeof(*j->addrs));
    if (!j->addrs) {
      j->status = -ENOMEM;
    } else {
      for (struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_addrlen > sizeof(struct sockaddr_storage)) continue;
        memcpy(&j->addrs[j->n].ss, a->ai_addr, a->ai_addrlen);
        j->addrs[j->n++].len = a->ai_addrlen;
      }
      j->status = j->n ? 0 : -ENOENT;
    }
    freeaddrinfo(res);
  }
  pthread_mutex_lock(&r->mu);
  j->next = r->done;
  r->done = j;
  r->threads--;
  int gone = r->loop_gone, last = gone && !r->threads;
  if (!gone) {
    uint64_t one = 1;
    (void)!write(r->efd, &one, sizeof(one));
  }
  pthread_mutex_unlock(&r->mu);
  if (last) destroy(r);
}

/* ---- the pool: lookups of every loop of the process queue here ---- */
#define URSA__LOOKUP_THREADS 4

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct ursa__job *head, *tail; /* through next, until a thread takes it */
  int queued;
  int threads; /* alive */
  int idle;    /* waiting for a job */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL,
          0, 0, 0};
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

/* A child after fork() has none of the parent's threads, and the queued
 * lookups are the parent's loops'. */
static void pool_prepare(void) { pthread_mutex_lock(&pool.mu); }
static void pool_parent(void) { pthread_mutex_unlock(&pool.mu); }
static void pool_child(void) {
  pthread_mutex_init(&pool.mu, NULL);
  pthread_cond_init(&pool.cv, NULL);
  pool.head = pool.tail = NULL;
  pool.queued = pool.threads = pool.idle = 0;
}
static void pool_setup(void) {
  pthread_atfork(pool_prepare, pool_parent, pool_child);
}

static void *pool_main(void *arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "ursa-lookup"); /* for ps and tests */
  for (;;) {
    pthread_mutex_lock(&pool.mu);
    pool.idle++;
    while (!pool.head) pthread_cond_wait(&pool.cv, &pool.mu);
    pool.idle--;
    struct ursa__job *j = pool.head;
    pool.head = j->next;
    if (!pool.head) pool.tail = NULL;
    pool.queued--;
    pthread_mutex_unlock(&pool.mu);
    j->next = NULL;
    lookup(j);
  }
  return NULL;
}

/* Queues j, starting a thread when more wait than threads are idle.
 * 0, or the error of pthread_create when no thread is there to take it. */
static int pool_submit(struct ursa__job *j) {
  pthread_once(&pool_once, pool_setup);
  pthread_mutex_lock(&pool.mu);
  int err = 0;
  if (pool.queued + 1 > pool.idle && pool.threads < URSA__LOOKUP_THREADS) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t th;
    err = pthread_create(&th, &attr, pool_main, NULL);
    pthread_attr_destroy(&attr);
    if (err == 0) pool.threads++;
  }
  if (err && pool.threads == 0) {
    pthread_mutex_unlock(&pool.mu);
    return err;
  }
  j->next = NULL;
  if (pool.tail) pool.tail->next = j; else pool.head = j;
  pool.tail = j;
  pool.queued++;
  pthread_cond_signal(&pool.cv);
  pthread_mutex_unlock(&pool.mu);
  return 0;
}

static struct ursa__resolver *resolver(ursa_loop *loop) {
  if (loop->resolver) return loop->resolver;
  struct ursa__resolver *r = calloc(1, sizeof(*r));
  if (!r) return NULL;
  r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (r->efd < 0 || pthread_mutex_init(&r->mu, NULL)) {
    if (r->efd >= 0) close(r->efd);
    free(r);
    return NULL;
  }
  r->loop = loop;
  r->wake.kind = URSA__KIND(resolve_wake);
  r->wake.nsqe = 1;
  loop->resolver = r;
  return r;
}

int ursa_resolve(ursa_loop *loop, ursa_resolve_req *req, const char *host,
                 const char *service, int family, ursa_resolve_cb cb) {
  if (!loop || !req || !host || !cb)
    return ursa__invalid("ursa_resolve: NULL %s",
                         !loop ? "loop" : !req ? "request"
                                   : !host ? "host" : "callback");
  size_t hl = strlen(host);
  if (!hl || hl >= sizeof(((struct ursa__job *)0)->host))
    return ursa__invalid("ursa_resolve: host name of %zu bytes (want 1 to "
                         "255)", hl);
  if (service && strlen(service) >= sizeof(((struct ursa__job *)0)->service))
    return ursa__invalid("ursa_resolve: service name too long");
  if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6)
    return ursa__invalid("ursa_resolve: family %d (want AF_UNSPEC, AF_INET "
                         "or AF_INET6)", family);
  if (req->op.state != URSA__IDLE) return -EBUSY;
  struct ursa__resolver *r = resolver(loop);
  struct ursa__job *j = r ? calloc(1, sizeof(*j)) : NULL;
  if (!j) return -ENOMEM;
  j->r = r;
  j->req = req;
  j->family = family;
  memcpy(j->host, host, hl + 1);
  if (service) {
    j->has_service = 1;
    snprintf(j->service, sizeof(j->service), "%s", service);
  }
  pthread_mutex_lock(&r->mu);
  r->threads++;
  pthread_mutex_unlock(&r->mu);
  int e = pool_submit(j);
  if (e) {
    pthread_mutex_lock(&r->mu);
    r->threads--;
    pthread_mutex_unlock(&r->mu);
    free(j);
    return -e;
  }
  req->loop = loop;
  req->job = j;
  req->cb = cb;
  req->op.kind = URSA__KIND(resolve);
  req->op.flags = 0;
  req->op.state = URSA__QUEUED; /* with its thread */
  loop->active++;
  if (r->outstanding++ == 0 && r->wake.state == URSA__IDLE)
    ursa__op_submit(loop, &r->wake);
  return 0;
}

/* One fewer request waits: with none left the poll goes, so that it holds
 * no idle loop open (threads of cancelled lookups finish on their own). */
static void one_less(ursa_loop *loop, struct ursa__resolver *r) {
  if (--r->outstanding == 0) ursa__op_cancel(loop, &r->wake);
}

static int resolve_cancel(ursa_loop *loop, ursa_op *op) {
  ursa_resolve_req *req = (ursa_resolve_req *)op;
  if (op->state == URSA__IDLE) return -ENOENT;
  if (op->state == URSA__PENDING) return -EALREADY;
  req->job->req = NULL; /* its answer is dropped when it comes */
  req->job = NULL;
  op->flags |= URSA__F_CANCEL;
  ursa__op_defer(loop, op, -ECANCELED);
  one_less(loop, loop->resolver);
  return 0;
}

int ursa_resolve_cancel(ursa_resolve_req *req) {
  if (!req) return ursa__invalid("ursa_resolve_cancel: NULL request");
  if (req->op.state == URSA__IDLE) return -ENOENT;
  return resolve_cancel(req->loop, &req->op);
}

/* A cancelled request's deferred result. */
static void resolve_complete(ursa_loop *loop, ursa_op *op, int res,
                            uint32_t flags) {
  ursa_resolve_req *req = (ursa_resolve_req *)op;
  (void)flags;
  ursa__op_done(loop, op);
  req->cb(req, res, NULL, 0);
}

URSA__OP_TYPE(resolve) = {
    .name = "resolve",
    .complete = resolve_complete,
    .cancel = resolve_cancel,
};

static void resolve_wake_prep(ursa_loop *loop, ursa_op *op) {
  struct ursa__resolver *r = URSA__CONTAINER(op, struct ursa__resolver, wake);
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  io_uring_prep_poll_add(sqe, r->efd, POLLIN);
  io_uring_sqe_set_data(sqe, op);
}

static void resolve_wake_complete(ursa_loop *loop, ursa_op *op, int res,
                                 uint32_t flags) {
  struct ursa__resolver *r = URSA__CONTAINER(op, struct ursa__resolver, wake);
  (void)res;
  (void)flags;
  ursa__op_done(loop, op);
  uint64_t v;
  (void)!read(r->efd, &v, sizeof(v));
  pthread_mutex_lock(&r->mu);
  struct ursa__job *done = r->done;
  r->done = NULL;
  pthread_mutex_unlock(&r->mu);
  /* Oldest first: the list was pushed at its head. */
  struct ursa__job *rev = NULL;
  while (done) {
    struct ursa__job *n = done->next;
    done->next = rev;
    rev = done;
    done = n;
  }
  for (struct ursa__job *j = rev, *n; j; j = n) {
    n = j->next;
    ursa_resolve_req *req = j->req;
    if (req) {
      req->job = NULL;
      ursa__op_done(loop, &req->op);
      r->outstanding--;
      if (j->status < 0 && j->detail[0]) ursa__refuse(j->status, "%s",
                                                      j->detail);
      req->cb(req, j->status, j->addrs, j->n);
    }
    free_job(j);
  }
  if (r->outstanding && r->wake.state == URSA__IDLE)
    ursa__op_submit(loop, &r->wake);
}

URSA__OP_TYPE(resolve_wake) = {
    .name = "poll",
    .prep = resolve_wake_prep,
    .complete = resolve_wake_complete,
};

void ursa__resolver_free(ursa_loop *loop) {
  struct ursa__resolver *r = loop->resolver;
  if (!r) return;
  loop->resolver = NULL;
  pthread_mutex_lock(&r->mu);
  r->loop_gone = 1;
  close(r->efd);
  r->efd = -1;
  int last = !r->threads;
  pthread_mutex_unlock(&r->mu);
  if (last) destroy(r);
}
