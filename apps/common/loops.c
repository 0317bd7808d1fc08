/* loops.c - N loops on N threads (see loops.h). */
#include "apps/common/loops.h"

#include <stdio.h>
#include <string.h>

typedef struct start {
  loop_group *g;
  int i;
} start;

static void *run_one(void *arg) {
  start *s = arg;
  s->g->rc[s->i] = s->g->main(s->g, s->i, s->g->arg);
  return NULL;
}

int loop_group_run(loop_group *g, int n, loop_main_fn fn, loop_stop_fn stop,
                   void *arg) {
  memset(g, 0, sizeof(*g));
  if (n < 1) n = 1;
  if (n > LOOPS_MAX) n = LOOPS_MAX;
  g->n = n;
  g->main = fn;
  g->on_stop = stop;
  g->arg = arg;
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  start st[LOOPS_MAX];
  int started = 0, rc = 0;
  if (n == 1) {
    st[0] = (start){g, 0};
    run_one(&st[0]);
    started = 0;
    rc = g->rc[0];
  } else {
    for (; started < n; started++) {
      st[started] = (start){g, started};
      if (pthread_create(&g->th[started], NULL, run_one, &st[started])) {
        fprintf(stderr, "cannot start thread %d\n", started);
        loop_group_fail(g);
        rc = 1;
        break;
      }
    }
  }
  for (int i = 0; i < started; i++) {
    pthread_join(g->th[i], NULL);
    if (g->rc[i] > rc) rc = g->rc[i];
  }
  for (int i = 0; i < n; i++)
    if (g->loop[i]) ursa_loop_release(g->loop[i]);
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
  return rc;
}

void loop_group_join(loop_group *g, int i, ursa_loop *loop) {
  ursa_loop_retain(loop); /* others post to it until every thread ends */
  pthread_mutex_lock(&g->mu);
  g->loop[i] = loop;
  pthread_mutex_unlock(&g->mu);
}

static int wait_phase(loop_group *g, int phase) {
  pthread_mutex_lock(&g->mu);
  while (g->phase < phase && !g->failed) pthread_cond_wait(&g->cv, &g->mu);
  int ok = !g->failed;
  pthread_mutex_unlock(&g->mu);
  return ok ? 0 : -1;
}

int loop_group_publish(loop_group *g, const struct sockaddr_storage *addr,
                       socklen_t len) {
  pthread_mutex_lock(&g->mu);
  g->addr = *addr;
  g->addr_len = len;
  if (g->phase < 1) g->phase = 1;
  pthread_cond_broadcast(&g->cv);
  /* Every other loop must be listening before the program says it is: a
   * client that connects at once may land on any of them. */
  while (g->ready < g->n - 1 && !g->failed) pthread_cond_wait(&g->cv, &g->mu);
  int ok = !g->failed;
  if (ok) g->phase = 2;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
  return ok ? 0 : -1;
}

int loop_group_address(loop_group *g, struct sockaddr_storage *addr,
                       socklen_t *len) {
  if (wait_phase(g, 1) < 0) return -1;
  pthread_mutex_lock(&g->mu);
  *addr = g->addr;
  *len = g->addr_len;
  pthread_mutex_unlock(&g->mu);
  return 0;
}

int loop_group_ready(loop_group *g) {
  pthread_mutex_lock(&g->mu);
  g->ready++;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
  return wait_phase(g, 2);
}

void loop_group_fail(loop_group *g) {
  pthread_mutex_lock(&g->mu);
  g->failed = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

static void on_stop_post(ursa_post_req *req, int status) {
  loop_group *g = req->data;
  if (status < 0) return; /* that loop closed first */
  int i = (int)(req - g->stop_req);
  g->on_stop(g, i, g->arg);
}

void loop_group_stop(loop_group *g, int self) {
  if (g->n <= 1 || __atomic_exchange_n(&g->stopping, 1, __ATOMIC_ACQ_REL))
    return;
  for (int i = 0; i < g->n; i++) {
    if (i == self) continue;
    pthread_mutex_lock(&g->mu);
    ursa_loop *l = g->loop[i];
    pthread_mutex_unlock(&g->mu);
    g->stop_req[i].data = g;
    if (l) ursa_post(l, &g->stop_req[i], on_stop_post);
  }
}

int loop_group_pick(loop_group *g, int fewest) {
  if (!fewest) return (int)(g->next++ % (unsigned)g->n);
  int best = 0;
  long least = -1;
  for (int i = 0; i < g->n; i++) {
    long n = __atomic_load_n(&g->open[i], __ATOMIC_RELAXED);
    if (least < 0 || n < least) least = n, best = i;
  }
  return best;
}

void loop_group_count(loop_group *g, int i, int delta) {
  __atomic_fetch_add(&g->open[i], delta, __ATOMIC_RELAXED);
}

long loop_group_open(const loop_group *g) {
  long n = 0;
  for (int i = 0; i < g->n; i++)
    n += __atomic_load_n(&g->open[i], __ATOMIC_RELAXED);
  return n;
}
