/* work.c - the process's pool of worker threads, for what cannot run on
 * a loop without stalling it, and ursa_work on top of it: a function run
 * on a pool thread whose callback comes back to the loop as a post.
 *
 * One queue serves every loop (FIFO, a mutex and a condition variable:
 * a queued job costs a lock and a signal, next to the blocking call it
 * stands for).  Threads start when more jobs wait than threads are idle,
 * up to the pool's size, and stay for the next; after fork() the child
 * starts from an empty pool (pthread_atfork). */
#include "core.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#define POOL_DEFAULT 4u
#define POOL_MAX 1024u

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct ursa__task *head, *tail;
  unsigned queued;
  unsigned threads; /* alive */
  unsigned idle;    /* waiting for a job */
  unsigned size;    /* the most threads; 0 until first use or set */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL,
          0, 0, 0, 0};
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_prepare(void) { pthread_mutex_lock(&pool.mu); }
static void pool_parent(void) { pthread_mutex_unlock(&pool.mu); }
/* The child has none of the parent's threads, and the queued jobs are
 * the parent's loops'. */
static void pool_child(void) {
  pthread_mutex_init(&pool.mu, NULL);
  pthread_cond_init(&pool.cv, NULL);
  pool.head = pool.tail = NULL;
  pool.queued = pool.threads = pool.idle = 0;
}
static void pool_setup(void) {
  pthread_atfork(pool_prepare, pool_parent, pool_child);
}

/* The size from URSA_WORK_THREADS, or the default; under pool.mu. */
static int size_from_env(void) {
  const char *env = getenv("URSA_WORK_THREADS");
  if (!env || !*env) {
    pool.size = POOL_DEFAULT;
    return 0;
  }
  char *end;
  unsigned long n = strtoul(env, &end, 10);
  if (*end || n < 1 || n > POOL_MAX)
    return ursa__invalid("URSA_WORK_THREADS=%.40s is not a number from 1 "
                         "to %u", env, POOL_MAX);
  pool.size = (unsigned)n;
  return 0;
}

static void *pool_main(void *arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "ursa-work"); /* for ps and tests */
  pthread_mutex_lock(&pool.mu);
  for (;;) {
    pool.idle++;
    while (!pool.head && pool.threads <= pool.size)
      pthread_cond_wait(&pool.cv, &pool.mu);
    pool.idle--;
    /* The pool shrank: one thread fewer, and it takes no job on the way
     * out (a job it took would run beside the size's threads, and one
     * queued behind a busy pool of one could no longer be cancelled).
     * The wake-up it had may have been a job's: passed on. */
    if (pool.threads > pool.size) {
      if (pool.head) pthread_cond_signal(&pool.cv);
      break;
    }
    if (!pool.head) continue;
    struct ursa__task *t = pool.head;
    pool.head = t->next;
    if (!pool.head) pool.tail = NULL;
    pool.queued--;
    pthread_mutex_unlock(&pool.mu);
    t->next = NULL;
    t->run(t);
    pthread_mutex_lock(&pool.mu);
  }
  pool.threads--;
  pthread_mutex_unlock(&pool.mu);
  return NULL;
}

int ursa__pool_submit(struct ursa__task *t) {
  pthread_once(&pool_once, pool_setup);
  pthread_mutex_lock(&pool.mu);
  int err = pool.size ? 0 : size_from_env();
  if (err) {
    pthread_mutex_unlock(&pool.mu);
    return err;
  }
  if (pool.queued + 1 > pool.idle && pool.threads < pool.size) {
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
    return ursa__refuse(-err, "the work pool has no thread and could not "
                        "start one");
  }
  t->next = NULL;
  if (pool.tail)
    pool.tail->next = t;
  else
    pool.head = t;
  pool.tail = t;
  pool.queued++;
  pthread_cond_signal(&pool.cv);
  pthread_mutex_unlock(&pool.mu);
  return 0;
}

bool ursa__pool_unqueue(struct ursa__task *t) {
  pthread_mutex_lock(&pool.mu);
  struct ursa__task *prev = NULL, *it = pool.head;
  while (it && it != t) {
    prev = it;
    it = it->next;
  }
  if (it) {
    if (prev)
      prev->next = t->next;
    else
      pool.head = t->next;
    if (pool.tail == t) pool.tail = prev;
    pool.queued--;
    t->next = NULL;
  }
  pthread_mutex_unlock(&pool.mu);
  return it != NULL;
}

int ursa_work_pool_size(unsigned threads) {
  if (threads < 1 || threads > POOL_MAX)
    return ursa__invalid("ursa_work_pool_size: %u threads (want 1 to %u)",
                         threads, POOL_MAX);
  pthread_once(&pool_once, pool_setup);
  pthread_mutex_lock(&pool.mu);
  pool.size = threads;
  pthread_cond_broadcast(&pool.cv); /* idle threads above it end */
  pthread_mutex_unlock(&pool.mu);
  return 0;
}

unsigned ursa_work_pool_threads(unsigned *running) {
  pthread_once(&pool_once, pool_setup);
  pthread_mutex_lock(&pool.mu);
  if (!pool.size) size_from_env(); /* stays 0 when the variable is bad */
  unsigned size = pool.size;
  if (running) *running = pool.threads;
  pthread_mutex_unlock(&pool.mu);
  return size;
}

/* ---- ursa_work ---- */

URSA__OP_DECLARE(work);

/* On the loop's thread.  The loop cannot close while work is active, so
 * the post is never refused or cancelled. */
static void work_posted(ursa_post_req *p, int status) {
  ursa_work *w = URSA__CONTAINER(p, ursa_work, post);
  (void)status;
  ursa__op_done(w->loop, &w->op);
  w->cb(w, 0);
}

static void work_run(struct ursa__task *t) {
  ursa_work *w = URSA__CONTAINER(t, ursa_work, task);
  w->fn(w);
  ursa_post(w->loop, &w->post, work_posted);
}

int ursa_work_queue(ursa_loop *loop, ursa_work *w, ursa_work_fn fn,
                    ursa_work_cb cb) {
  if (!loop || !w || !fn || !cb)
    return ursa__invalid("ursa_work_queue: NULL %s",
                         !loop ? "loop" : !w ? "request" : !fn ? "fn"
                                                               : "callback");
  if (w->op.state != URSA__IDLE)
    return ursa__refuse(-EBUSY, "ursa_work_queue: the request is queued "
                        "already (its callback has not run)");
  w->loop = loop;
  w->fn = fn;
  w->cb = cb;
  w->task.run = work_run;
  w->op.kind = URSA__KIND(work);
  w->op.flags = 0;
  int r = ursa__pool_submit(&w->task);
  if (r < 0) return r;
  w->op.state = URSA__QUEUED; /* with the pool */
  loop->active++;
  return 0;
}

static int work_cancel(ursa_loop *loop, ursa_op *op) {
  ursa_work *w = (ursa_work *)op;
  if (op->state == URSA__PENDING) return -EALREADY;
  if (!ursa__pool_unqueue(&w->task)) return -EBUSY;
  op->flags |= URSA__F_CANCEL;
  ursa__op_defer(loop, op, -ECANCELED);
  return 0;
}

int ursa_work_cancel(ursa_work *w) {
  if (!w) return ursa__invalid("ursa_work_cancel: NULL request");
  if (w->op.state == URSA__IDLE) return -ENOENT;
  return work_cancel(w->loop, &w->op);
}

/* A cancelled request's deferred result. */
static void work_complete(ursa_loop *loop, ursa_op *op, int res,
                          uint32_t flags) {
  ursa_work *w = (ursa_work *)op;
  (void)flags;
  ursa__op_done(loop, op);
  w->cb(w, res);
}

URSA__OP_TYPE(work) = {
    .name = "work",
    .complete = work_complete,
    .cancel = work_cancel,
};
