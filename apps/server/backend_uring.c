/* backend_uring.c - the comparison server on the ursa runtime: one loop,
 * or --threads N loops on threads of their own that share the connections
 * by SO_REUSEPORT or by one acceptor handing them out (ursa_accept_handoff),
 * and stop together by ursa_post(). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "apps/common/loops.h"
#include "ursa/tls.h"
#include "apps/server/server.h"

typedef struct conn {
  ursa_stream s;
  ursa_tls *tls; /* --tls-cert: the TLS stream over s, once started
                    (allocated then: plain connections do without) */
  struct conn *prev, *next;
  int refs;   /* the stream's, and one per message at a worker (atomic) */
  int worker; /* --workers: the one that takes its messages, in order */
  int pending; /* messages at a worker or being written back (loop's) */
  unsigned char closing;
  unsigned char eof; /* the peer shut down: shut ours once pending is 0 */
  conn_clock clock; /* --min-rate; ursa_read_timeout does --idle-timeout */
} conn;

#define KEEP_MIN 1024 /* bytes: smaller echoes are copied */

typedef struct reply {
  ursa_write_req req;
  conn *c;
  const void *kept; /* the ring buffer written from, released when done */
  char buf[];       /* or a copy */
} reply;

typedef struct dreply {
  ursa_send_req req;
  size_t cap;
  char buf[];
} dreply;
/* Echoes of datagrams up to this size take a spare reply of this size
 * instead of a malloc each. */
#define DREPLY_SMALL 2048

/* Sent replies kept for the next echoes, a list per kind.  A malloc and
 * free per echo is not only its own cost: hundreds of replies in flight,
 * freed together, leave glibc's heap top above its trim threshold, and
 * each round then gives the pages back (brk, a TLB flush) and faults
 * them in again.  That measured 4-6x the server's CPU per datagram. */
typedef struct spare {
  struct spare *next;
} spare;
typedef struct spares {
  spare *top;
  int n, max;
} spares;

static void *spare_get(spares *l) {
  spare *s = l->top;
  if (s) {
    l->top = s->next;
    l->n--;
  }
  return s;
}

static void spare_put(spares *l, void *p) {
  if (l->n >= l->max) {
    free(p);
    return;
  }
  spare *s = p;
  s->next = l->top;
  l->top = s;
  l->n++;
}

static void spares_free(spares *l) {
  void *p;
  while ((p = spare_get(l))) free(p);
}

/* --gso without --gro: peers whose echoes one round merges. */
#define MERGE_PEERS 32

/* Each loop's thread has its own. */
static __thread struct {
  const server_opts *o;
  server_stats *st;
  int index;      /* of the loop in G */
  int listening;  /* has a listener of its own */
  ursa_loop *loop;
  ursa_tls_ctx *tls; /* --tls-cert: this loop's context */
  ursa_listener listener;
  ursa_dgram dsock;
  ursa_timer tick;
  ursa_poll stopper; /* the signalfd of SIGINT/SIGTERM */
  uint64_t next_sweep;
  conn *conns;
  long open;
  int stopping;
  int dgram;
  ursa_round merge_round;  /* --gso without --gro: flushes the batches */
  struct mbatch *mb[MERGE_PEERS]; /* a round's echoes, a batch per peer */
  int nmb;
  spares dspare, mspare, gspare; /* dreply, mbatch, greply (GREPLY_SIZE) */
} S;

/* The loops of --threads (apps/common/loops.h); one loop is a group of
 * one. */
static loop_group G;
/* The loops the workers post to, retained until the workers end (after
 * the group's own references are gone). */
static ursa_loop *pool_loops[MAX_THREADS];

static const char greeting[] = GREETING;

static void begin_stop(void);

static void close_conn(conn *c);

static void conn_unref(conn *c) {
  if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0) {
    free(c->tls);
    free(c);
  }
}

static void conn_closed(conn *c);

static void on_closed(ursa_handle *h) { conn_closed(h->data); }

static void on_tls_closed(ursa_tls *t) { conn_closed(t->data); }

static void conn_closed(conn *c) {
  if (c->prev) c->prev->next = c->next; else S.conns = c->next;
  if (c->next) c->next->prev = c->prev;
  S.open--;
  loop_group_count(&G, S.index, -1);
  conn_unref(c); /* messages still at a worker hold it */
}

/* ---- --workers: each message is handled on a pool thread, and its reply
 * is written from the loop's thread (posted back with ursa_post).  A
 * connection's messages all go to one worker, whose posts run in order,
 * so its replies keep their order. */
typedef struct job {
  ursa_post_req post;
  ursa_write_req w;
  struct job *next;
  conn *c;
  ursa_loop *loop;
  size_t n;
  char buf[];
} job;

typedef struct worker_q {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  job *head, *tail;
  int quit;
  pthread_t th;
} worker_q;

static struct {
  int n;
  worker_q q[MAX_THREADS];
  unsigned next; /* round robin over connections (atomic) */
} P;

static void job_free(job *j) {
  conn_unref(j->c);
  free(j);
}

static void on_shutdown(ursa_stream *s, int status);

/* On the loop's thread: one message of c is through.  A peer that shut
 * its side down is answered in kind once every reply before is out. */
static void job_finished(job *j) {
  conn *c = j->c;
  if (--c->pending == 0 && c->eof && !c->closing &&
      ursa_shutdown(&c->s, on_shutdown) < 0)
    close_conn(c);
  job_free(j);
}

static void on_job_written(ursa_write_req *w, int status) {
  job *j = w->data;
  if (status == 0) S.st->bytes_out += w->done;
  else close_conn(j->c);
  job_finished(j);
}

/* Back on the loop's thread (or in its close, with -ECANCELED). */
static void on_job_done(ursa_post_req *p, int status) {
  job *j = p->data;
  if (status < 0 || j->c->closing) {
    job_finished(j);
    return;
  }
  j->w.data = j;
  if (ursa_write(&j->w, &j->c->s, j->buf, j->n, 0, on_job_written) < 0) {
    close_conn(j->c);
    job_finished(j);
  }
}

static void *worker_main_pool(void *arg) {
  worker_q *q = arg;
  for (;;) {
    pthread_mutex_lock(&q->mu);
    while (!q->head && !q->quit) pthread_cond_wait(&q->cv, &q->mu);
    job *j = q->head;
    if (j) {
      q->head = j->next;
      if (!q->head) q->tail = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    if (!j) return NULL; /* quit, and nothing left */
    /* The work: an echo's is none; the reply is the message. */
    j->post.data = j;
    if (ursa_post(j->loop, &j->post, on_job_done) < 0) job_free(j);
  }
}

static int to_worker(conn *c, const void *buf, size_t n) {
  job *j = malloc(sizeof(*j) + n);
  if (!j) return -1;
  memset(j, 0, sizeof(*j));
  memcpy(j->buf, buf, n);
  j->n = n;
  j->c = c;
  j->loop = S.loop;
  c->pending++;
  __atomic_fetch_add(&c->refs, 1, __ATOMIC_RELAXED);
  worker_q *q = &P.q[c->worker];
  pthread_mutex_lock(&q->mu);
  if (q->tail) q->tail->next = j; else q->head = j;
  q->tail = j;
  pthread_cond_signal(&q->cv);
  pthread_mutex_unlock(&q->mu);
  return 0;
}

static int pool_start(int n) {
  P.n = n;
  for (int i = 0; i < n; i++) {
    pthread_mutex_init(&P.q[i].mu, NULL);
    pthread_cond_init(&P.q[i].cv, NULL);
    if (pthread_create(&P.q[i].th, NULL, worker_main_pool, &P.q[i])) {
      P.n = i;
      return -1;
    }
  }
  return 0;
}

/* After every loop has closed: the workers finish what is queued (their
 * posts are refused now, and they free it) and end. */
static void pool_stop(void) {
  for (int i = 0; i < P.n; i++) {
    pthread_mutex_lock(&P.q[i].mu);
    P.q[i].quit = 1;
    pthread_cond_signal(&P.q[i].cv);
    pthread_mutex_unlock(&P.q[i].mu);
  }
  for (int i = 0; i < P.n; i++) {
    pthread_join(P.q[i].th, NULL);
    pthread_mutex_destroy(&P.q[i].mu);
    pthread_cond_destroy(&P.q[i].cv);
  }
  P.n = 0;
}

static void close_conn(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->tls)
    ursa_tls_close(c->tls, on_tls_closed);
  else
    ursa_stream_close(&c->s, on_closed);
}

static void on_shutdown(ursa_stream *s, int status) {
  (void)status;
  close_conn(s->data);
}

static void on_read(ursa_stream *s, ssize_t n, const void *buf);

static void on_written(ursa_write_req *w, int status) {
  reply *r = w->data;
  conn *c = r->c;
  if (status == 0) S.st->bytes_out += w->done;
  if (r->kept) ursa_buf_release(S.loop, r->kept);
  free(r);
  if (status < 0) close_conn(c);
}

static void on_read(ursa_stream *s, ssize_t n, const void *buf) {
  conn *c = s->data;
  if (n < 0) {
    if (n == -ETIMEDOUT) S.st->timed_out++;
    if (n == URSA_EOF && c->pending) {
      c->eof = 1; /* replies are still at the workers */
      return;
    }
    if (n != URSA_EOF || ursa_shutdown(s, on_shutdown) < 0) close_conn(c);
    return;
  }
  S.st->bytes_in += (uint64_t)n;
  S.st->reads++;
  if (S.o->min_rate) clock_rx(&c->clock, ursa_loop_now(S.loop), (uint64_t)n);
  if (S.o->mode == MODE_SINK) return;
  if (P.n) {
    if (to_worker(c, buf, (size_t)n) < 0) close_conn(c);
    return;
  }
  /* A large echo goes out of the ring buffer itself when it can be kept
   * (up to the loop's keep limit); a small one is cheaper to copy than to
   * hold a whole ring buffer for. */
  int keep = !S.o->echo_copy && n >= KEEP_MIN &&
             ursa_buf_keep(S.loop, buf) == 0;
  reply *r = malloc(sizeof(*r) + (keep ? 0 : (size_t)n));
  if (!r) {
    if (keep) ursa_buf_release(S.loop, buf);
    close_conn(c);
    return;
  }
  r->kept = keep ? buf : NULL;
  if (!keep) memcpy(r->buf, buf, (size_t)n);
  r->c = c;
  r->req = (ursa_write_req){0};
  r->req.data = r;
  if (ursa_write(&r->req, s, keep ? buf : r->buf, (size_t)n, 0,
                 on_written) < 0) {
    if (keep) ursa_buf_release(S.loop, buf);
    free(r);
    close_conn(c);
  }
}

/* Greeted and shut down: read and drop until the peer closes, since
 * closing with its bytes unread would reset the connection. */
static void on_discard(ursa_stream *s, ssize_t n, const void *buf) {
  (void)buf;
  if (n == -ETIMEDOUT) S.st->timed_out++;
  if (n < 0) close_conn(s->data);
  else S.st->bytes_in += (uint64_t)n;
}

static void on_greet_shutdown(ursa_stream *s, int status) {
  if (status < 0 || ursa_read_start(s, on_discard) < 0) close_conn(s->data);
}

static void on_greeted(ursa_write_req *w, int status) {
  reply *r = w->data;
  conn *c = r->c;
  if (status == 0) S.st->bytes_out += w->done;
  free(r);
  if (status < 0 || ursa_shutdown(&c->s, on_greet_shutdown) < 0)
    close_conn(c);
}

/* ---- --tls-cert: the same echo over TLS (plaintext counts) ---- */
typedef struct tls_reply {
  ursa_tls_write_req w;
  conn *c;
} tls_reply;

static void on_tls_written(ursa_tls_write_req *w, int status) {
  tls_reply *r = w->data;
  if (status == 0) S.st->bytes_out += w->len;
  else close_conn(r->c);
  free(r);
}

static void on_tls_shut(ursa_tls *t, int status) {
  (void)status;
  close_conn(t->data);
}

static void on_tls_read(ursa_tls *t, ssize_t n, const void *buf) {
  conn *c = t->data;
  if (n < 0) {
    if (n == -ETIMEDOUT) S.st->timed_out++;
    if (n != URSA_EOF || ursa_tls_shutdown(t, on_tls_shut) < 0)
      close_conn(c);
    return;
  }
  S.st->bytes_in += (uint64_t)n;
  S.st->reads++;
  if (S.o->min_rate) clock_rx(&c->clock, ursa_loop_now(S.loop), (uint64_t)n);
  if (S.o->mode == MODE_SINK) return;
  /* The write encrypts at once: no copy of the plaintext is kept. */
  tls_reply *r = malloc(sizeof(*r));
  if (!r) {
    close_conn(c);
    return;
  }
  r->c = c;
  r->w = (ursa_tls_write_req){0};
  r->w.data = r;
  if (ursa_tls_write(&r->w, t, buf, (size_t)n, on_tls_written) < 0) {
    free(r);
    close_conn(c);
  }
}

static void on_tls_handshake(ursa_tls *t, int status) {
  conn *c = t->data;
  if (status < 0) {
    S.st->tls_failed++;
    close_conn(c);
    return;
  }
  S.st->handshakes++;
  if (ursa_tls_read_start(t, on_tls_read) < 0) close_conn(c);
}

/* A connection this loop serves, accepted here or handed over. */
static void start_conn(conn *c) {
  c->s.data = c;
  c->refs = 1;
  if (P.n)
    c->worker = (int)(__atomic_fetch_add(&P.next, 1, __ATOMIC_RELAXED) %
                      (unsigned)P.n);
  c->next = S.conns;
  if (S.conns) S.conns->prev = c;
  S.conns = c;
  S.open++;
  loop_group_count(&G, S.index, 1);
  S.st->connections++;
  if (S.stopping) {
    close_conn(c);
    return;
  }
  /* The runtime pauses reading for a peer that does not take its echo,
   * and times out one that goes silent. */
  ursa_stream_read_marks(&c->s, S.o->high_water, S.o->high_water / 2);
  if (S.o->idle_ms) ursa_read_timeout(&c->s, (uint32_t)S.o->idle_ms);
  clock_start(&c->clock, ursa_loop_now(S.loop));
  if (S.o->mode == MODE_GREET) {
    reply *r = calloc(1, sizeof(*r) + sizeof(greeting));
    if (!r) {
      close_conn(c);
      return;
    }
    memcpy(r->buf, greeting, sizeof(greeting) - 1);
    r->c = c;
    r->req.data = r;
    if (ursa_write(&r->req, &c->s, r->buf, sizeof(greeting) - 1, 0,
                   on_greeted) < 0) {
      free(r);
      close_conn(c);
    }
    return;
  }
  if (S.tls) {
    ursa_tls *t = calloc(1, sizeof(*t));
    if (!t) {
      close_conn(c);
      return;
    }
    t->data = c;
    if (ursa_tls_start(t, S.tls, &c->s, NULL, on_tls_handshake) < 0) {
      free(t);
      close_conn(c);
    } else {
      c->tls = t;
    }
    return;
  }
  if (ursa_read_start(&c->s, on_read) < 0) close_conn(c);
}

/* A connection on its way from the acceptor's loop: allocated for the
 * hand-off alone, so that a connection served where it was accepted does
 * not carry the request's 128 bytes (the idle-memory case counts them). */
typedef struct handoff {
  ursa_handoff_req req;
  conn *c;
} handoff;

/* On the loop the acceptor chose (or in its close, with -ECANCELED). */
static void on_handed(ursa_handoff_req *req, int status) {
  handoff *h = req->data;
  conn *c = h->c;
  free(h);
  if (status < 0) {
    free(c);
    return;
  }
  start_conn(c);
}

static void on_connection(ursa_listener *l, int status) {
  if (status < 0) {
    if (status != -EMFILE && status != -ENFILE)
      fprintf(stderr, "server: accept: %s\n", ursa_strerror(status));
    return;
  }
  if (S.o->max_conns && loop_group_open(&G) >= S.o->max_conns) {
    S.st->refused++; /* not accepted: ursa closes it on return */
    return;
  }
  conn *c = calloc(1, sizeof(*c));
  if (!c) return;
  int to = G.n > 1 && S.o->dispatch != DISPATCH_REUSEPORT
               ? loop_group_pick(&G, S.o->dispatch == DISPATCH_FEWEST)
               : S.index;
  if (to != S.index) {
    handoff *h = calloc(1, sizeof(*h));
    if (!h) {
      free(c);
      return;
    }
    h->c = c;
    h->req.data = h;
    h->req.stream = &c->s;
    if (ursa_accept_handoff(l, G.loop[to], &h->req, on_handed) < 0) {
      S.st->refused++; /* that loop is closing: refused on return */
      free(h);
      free(c);
    }
    return;
  }
  if (ursa_accept(l, &c->s) < 0) {
    free(c);
    return;
  }
  start_conn(c);
}

static void on_dsent(ursa_send_req *req, int status) {
  dreply *r = req->data;
  if (status == 0) S.st->bytes_out += req->msg.msg_iov->iov_len;
  if (r->cap == DREPLY_SMALL)
    spare_put(&S.dspare, r);
  else
    free(r);
}

static dreply *dreply_get(size_t len) {
  dreply *r = len <= DREPLY_SMALL ? spare_get(&S.dspare) : NULL;
  if (r) return r;
  size_t cap = len <= DREPLY_SMALL ? DREPLY_SMALL : len;
  if ((r = malloc(sizeof(*r) + cap))) r->cap = cap;
  return r;
}

/* --gso without --gro: a round's echoes to one peer, equal-sized datagrams
 * back to back, leave at the round's end as one GSO send. */
#define MERGE_BYTES 65000
typedef struct mbatch {
  struct sockaddr_storage to;
  socklen_t tolen;
  size_t seg, len;
  unsigned count;
  ursa_sendmsgs_req req;
  char buf[MERGE_BYTES];
} mbatch;

static void on_msent(ursa_sendmsgs_req *req, int status) {
  (void)status;
  int r = ursa_sendmsgs_result(req, 0);
  if (r > 0) S.st->bytes_out += (uint64_t)r;
  spare_put(&S.mspare, req->data);
}

/* Sends batch i and takes it off the round's table. */
static void merge_send(int i) {
  mbatch *b = S.mb[i];
  S.mb[i] = S.mb[--S.nmb];
  ursa_dgram_msg m = {0};
  m.buf = b->buf;
  m.len = b->len;
  m.to = (const struct sockaddr *)&b->to;
  m.tolen = b->tolen;
  if (b->count > 1) {
    m.flags = URSA_MSG_GSO;
    m.segment = (unsigned)b->seg;
  }
  b->req = (ursa_sendmsgs_req){0};
  b->req.data = b;
  if (ursa_dgram_sendmsgs(&b->req, &S.dsock, &m, 1, on_msent) < 0)
    spare_put(&S.mspare, b);
}

static void merge_flush(ursa_round *r) {
  (void)r;
  while (S.nmb) merge_send(S.nmb - 1);
}

/* Adds an echo to its peer's batch; 0, or -1 when it must go alone. */
static int merge_add(const void *buf, size_t n, const struct sockaddr *from,
                     socklen_t fromlen) {
  if (!n || n > MERGE_BYTES) return -1;
  int i = 0;
  while (i < S.nmb && !(S.mb[i]->tolen == fromlen &&
                        !memcmp(&S.mb[i]->to, from, fromlen)))
    i++;
  mbatch *b = i < S.nmb ? S.mb[i] : NULL;
  /* GSO cuts at seg: every datagram but the last must be seg long. */
  if (b && (n > b->seg || b->len % b->seg || b->len + n > MERGE_BYTES ||
            b->count == URSA_DGRAM_MAX_SEGMENTS)) {
    merge_send(i);
    b = NULL;
  }
  if (!b) {
    if (S.nmb == MERGE_PEERS) return -1;
    if (!(b = spare_get(&S.mspare)) && !(b = malloc(sizeof(*b)))) return -1;
    memcpy(&b->to, from, fromlen);
    b->tolen = fromlen;
    b->seg = n;
    b->len = 0;
    b->count = 0;
    S.mb[S.nmb++] = b;
  }
  memcpy(b->buf + b->len, buf, n);
  b->len += n;
  b->count++;
  return 0;
}

static void on_datagram(ursa_dgram *d, ssize_t n, const void *buf,
                        const struct sockaddr *from, socklen_t fromlen,
                        unsigned flags) {
  if (n < 0) {
    fprintf(stderr, "server: receive: %s\n", ursa_strerror((int)n));
    return;
  }
  S.st->bytes_in += (uint64_t)n;
  S.st->reads++;
  if ((flags & URSA_DGRAM_TRUNC) || !from || S.o->mode == MODE_SINK) return;
  if (S.o->gso && S.o->mode == MODE_ECHO && S.o->proto == PROTO_UDP &&
      merge_add(buf, (size_t)n, from, fromlen) == 0)
    return;
  const void *out = S.o->mode == MODE_GREET ? greeting : buf;
  size_t len = S.o->mode == MODE_GREET ? sizeof(greeting) - 1 : (size_t)n;
  dreply *r = dreply_get(len);
  if (!r) return;
  memcpy(r->buf, out, len);
  r->req = (ursa_send_req){0};
  r->req.data = r;
  if (ursa_dgram_send(&r->req, d, r->buf, len, from, fromlen, on_dsent) < 0)
    free(r);
}

/* --gro: a coalesced receive's echo, copied; its datagrams go back in
 * requests of up to URSA_DGRAM_BATCH, or (--gso) as one GSO send. */
#define GRO_REQS (URSA_DGRAM_MAX_SEGMENTS / URSA_DGRAM_BATCH)
typedef struct greply {
  int pending;
  struct sockaddr_storage to;
  char *buf;                /* the kept receive buffer, or a copy after the
                               requests */
  int kept;
  int pooled;               /* GREPLY_SIZE: goes back to the spares */
  ursa_sendmsgs_req reqs[]; /* as many as the datagrams need */
} greply;
/* A reply sent from the kept receive buffer, or with a copy of up to
 * GREPLY_COPY bytes, is of this size and is reused. */
#define GREPLY_COPY 2048
#define GREPLY_SIZE \
  (sizeof(greply) + GRO_REQS * sizeof(ursa_sendmsgs_req) + GREPLY_COPY)

static void greply_done(greply *g) {
  if (g->kept) ursa_buf_release(S.loop, g->buf);
  if (g->pooled)
    spare_put(&S.gspare, g);
  else
    free(g);
}

static void on_gsent(ursa_sendmsgs_req *req, int status) {
  greply *g = req->data;
  (void)status;
  for (unsigned i = 0; i < req->n; i++) {
    int r = ursa_sendmsgs_result(req, i);
    if (r > 0) S.st->bytes_out += (uint64_t)r;
  }
  if (--g->pending == 0) greply_done(g);
}

static void on_datagram_gro(ursa_dgram *d, ssize_t n, const void *buf,
                            const ursa_dgram_info *info) {
  if (n < 0) {
    fprintf(stderr, "server: receive: %s\n", ursa_strerror((int)n));
    return;
  }
  size_t seg = info->segment ? info->segment : (size_t)n;
  size_t count = n ? ((size_t)n + seg - 1) / seg : 1;
  S.st->bytes_in += (uint64_t)n;
  S.st->reads += count;
  if ((info->flags & URSA_DGRAM_TRUNC) || !info->from ||
      S.o->mode != MODE_ECHO)
    return;
  int want = S.o->gso && count > 1
                 ? 1
                 : (int)((count + URSA_DGRAM_BATCH - 1) / URSA_DGRAM_BATCH);
  if (want > GRO_REQS) want = GRO_REQS;
  /* Sent from the receive buffer itself unless --echo-copy, or the ring
   * has lent out its share. */
  int kept = !S.o->echo_copy && n > 0 && ursa_buf_keep(S.loop, buf) == 0;
  int pooled = kept || (size_t)n <= GREPLY_COPY;
  greply *g = pooled ? spare_get(&S.gspare) : NULL;
  if (!g)
    g = malloc(pooled ? GREPLY_SIZE
                      : sizeof(*g) + (size_t)want * sizeof(g->reqs[0]) +
                            (size_t)n);
  if (!g) {
    if (kept) ursa_buf_release(S.loop, buf);
    return;
  }
  g->kept = kept;
  g->pooled = pooled;
  g->buf = kept ? (char *)buf
                : (char *)&g->reqs[pooled ? GRO_REQS : want];
  if (!kept) memcpy(g->buf, buf, (size_t)n);
  memcpy(&g->to, info->from, info->fromlen);
  ursa_dgram_msg m[URSA_DGRAM_BATCH];
  memset(m, 0, sizeof(m));
  g->pending = 0;
  size_t off = 0;
  int nreq = 0;
  while (nreq < want && (off < (size_t)n || (n == 0 && nreq == 0))) {
    unsigned k = 0;
    if (S.o->gso && count > 1) {
      m[0].buf = g->buf;
      m[0].len = (size_t)n;
      m[0].flags = URSA_MSG_GSO;
      m[0].segment = (unsigned)seg;
      k = 1;
      off = (size_t)n;
    } else {
      for (; k < URSA_DGRAM_BATCH && (off < (size_t)n || n == 0); k++) {
        size_t len = (size_t)n - off < seg ? (size_t)n - off : seg;
        m[k].buf = g->buf + off;
        m[k].len = len;
        off += len;
        if (n == 0) {
          k++;
          break;
        }
      }
    }
    for (unsigned i = 0; i < k; i++) {
      m[i].to = (const struct sockaddr *)&g->to;
      m[i].tolen = info->fromlen;
    }
    ursa_sendmsgs_req *q = &g->reqs[nreq++];
    memset(q, 0, sizeof(*q)); /* a request starts zeroed */
    q->data = g;
    g->pending++;
    if (ursa_dgram_sendmsgs(q, d, m, k, on_gsent) < 0) g->pending--;
    if (n == 0) break;
  }
  if (g->pending == 0) greply_done(g);
}

/* The group's stop, on this loop's thread. */
static void on_group_stop(loop_group *g, int i, void *arg) {
  (void)g;
  (void)i;
  (void)arg;
  begin_stop();
}

static void begin_stop(void) {
  if (S.stopping) return;
  S.stopping = 1;
  /* One stop ends every loop: the first to stop posts it to the others. */
  loop_group_stop(&G, S.index);
  ursa_timer_stop(&S.tick);
  if (S.index == 0) ursa_poll_close(&S.stopper, NULL);
  if (S.dgram) {
    ursa_dgram_close(&S.dsock, NULL);
    return;
  }
  if (S.listening) ursa_listener_close(&S.listener, NULL);
  for (conn *c = S.conns; c; c = c->next) close_conn(c);
}

static void on_tick(ursa_timer *t, int status) {
  (void)t;
  if (status < 0 || S.stopping) return;
  uint64_t now = ursa_loop_now(S.loop);
  if (S.o->min_rate && now >= S.next_sweep) {
    S.next_sweep = now + clock_sweep_ms(S.o);
    for (conn *c = S.conns; c; c = c->next)
      if (!c->closing && clock_slow(S.o, &c->clock, now)) {
        S.st->timed_out++;
        close_conn(c);
      }
  }
  if (past_deadline(S.o)) begin_stop();
}

/* SIGINT/SIGTERM arrive on the signalfd: the loop watches it (no system
 * call per tick to look). */
static void on_stop_fd(ursa_poll *p, int status, unsigned events) {
  (void)p;
  (void)status;
  (void)events;
  begin_stop();
}

/* Set-up among the loops: the first listens first (its port may be
 * picked by the kernel), the others then listen on that address or not at
 * all, and the first announces once every loop is ready. */
static int serve_one(const server_opts *o, server_stats *st, int index) {
  memset(&S, 0, sizeof(S));
  S.o = o;
  S.st = st;
  S.index = index;
  S.dgram = o->proto == PROTO_UDP || o->proto == PROTO_UNIXGRAM;
  /* Spares enough for the replies in flight: 16 peers x 32 datagrams in
   * the bench; a batch per peer per round; a coalesced receive each. */
  S.dspare.max = 1024;
  S.mspare.max = 2 * MERGE_PEERS;
  S.gspare.max = 256;
  int group = G.n > 1, handoff = group && o->dispatch != DISPATCH_REUSEPORT;
  ursa_loop_options lo = {0};
  lo.disable = o->uring_disable;
  /* direct_files is the server's to turn on (below), not the library's. */
  lo.enable = o->uring_enable & ~(uint32_t)URSA_FEAT_DIRECT_FILES;
  lo.write_batch = o->write_batch;
  lo.batch_wait_us = o->batch_wait_us;
  lo.batch_policy = o->batch_policy;
  /* Accepted connections live in direct descriptors (off with
   * --uring-disable direct_files); the table is capped at RLIMIT_NOFILE.
   * Handed to other loops, they move by MSG_RING from table to table;
   * without MSG_RING they go as plain descriptors. */
  /* Greet mode's connections live for one write: there the slot's
   * single-shot accept and the install a shutdown needs cost more than
   * descriptor lookups save (server CPU per connection 19.8 us with direct
   * descriptors, 17.8 without, docs/measurements.md), so they are plain
   * unless --uring-enable direct_files. */
  lo.direct_files = o->mode == MODE_GREET &&
                            !(o->uring_enable & URSA_FEAT_DIRECT_FILES)
                        ? 0
                        : 65536;
  if (handoff) {
    ursa_features kf;
    ursa_probe(&kf);
    if (!(kf.kernel & URSA_FEAT_MSG_RING & ~o->uring_disable))
      lo.direct_files = 0;
  }
  /* Room for the largest UDP datagram with its header. */
  if (S.dgram) lo.buf_size = 65536 + 1024;
  if (o->buf_size) lo.buf_size = o->buf_size;
  lo.buf_count = o->buf_count;
  lo.large_bufs = o->large_bufs;
  lo.zc_threshold = o->zc_threshold;
  lo.backend = o->lib_backend;
  int r = ursa_loop_new(&S.loop, &lo);
  if (r < 0) {
    char why[512];
    ursa_explain_setup_error(r, why, sizeof(why));
    fprintf(stderr, "ursa-echo-server: the %s backend cannot start: %s\n",
            o->backend, why);
    if (group) loop_group_fail(&G);
    return 2;
  }
  if (o->tls_cert) {
    ursa_tls_options to = {0};
    to.cert_file = o->tls_cert;
    to.key_file = o->tls_key;
    int tr = ursa_tls_ctx_new(&S.tls, 1, &to);
    if (tr < 0) {
      fprintf(stderr, "ursa-echo-server: --tls-cert: %s\n",
              ursa_tls_error_detail());
      if (group) loop_group_fail(&G);
      ursa_loop_close(S.loop);
      return 2;
    }
  }
  if (group) loop_group_join(&G, index, S.loop);
  if (P.n) {
    ursa_loop_retain(S.loop); /* the workers post to it */
    pool_loops[index] = S.loop;
  }
  const struct sockaddr *sa = (const struct sockaddr *)&o->listen.ss;
  socklen_t salen = o->listen.len;
  struct sockaddr_storage bound;
  socklen_t bl = 0;
  r = 0;
  struct sockaddr_storage first;
  if (index > 0) {
    if (loop_group_address(&G, &first, &salen) < 0) r = -ECANCELED;
    sa = (const struct sockaddr *)&first;
  }
  S.listening = !S.dgram && (index == 0 || !handoff);
  if (r < 0) {
  } else if (S.dgram) {
    r = ursa_dgram_bind(S.loop, &S.dsock, sa, salen,
                        group ? URSA_DGRAM_REUSEPORT : 0);
    if (!r) udp_buffers(S.dsock.fd);
    if (!r)
      r = o->gro ? ursa_dgram_recvmsg_start(&S.dsock, URSA_RECV_GRO,
                                            on_datagram_gro)
                 : ursa_dgram_recv_start(&S.dsock, on_datagram);
    if (!r && o->gso && !o->gro)
      r = ursa_round_start(S.loop, &S.merge_round, merge_flush);
    if (!r) r = ursa_dgram_addr(&S.dsock, &bound, &bl);
  } else if (S.listening) {
    /* TCP_NODELAY is set once, on the listener: accepted sockets inherit
     * it (and a direct descriptor has no fd to set it on). */
    unsigned flags = o->proto == PROTO_SEQPACKET ? URSA_SEQPACKET
                     : o->proto == PROTO_TCP     ? URSA_LISTEN_NODELAY
                                                 : 0;
    if (group && !handoff) flags |= URSA_LISTEN_REUSEPORT;
    r = ursa_listen(S.loop, &S.listener, sa, salen, 0, flags, on_connection);
    if (!r) r = ursa_listener_addr(&S.listener, &bound, &bl);
  }
  if (r < 0) {
    if (r != -ECANCELED) {
      char name[160];
      ursa_addr_format(sa, salen, name, sizeof(name));
      fprintf(stderr, "ursa-echo-server: cannot listen on %s: %s%s%s\n",
              name, ursa_strerror(r), *ursa_error_detail() ? ": " : "",
              r == -EINVAL || r == -EEXIST ? ursa_error_detail() : "");
    }
    if (group) loop_group_fail(&G);
    S.listening = 0;
    ursa_loop_close(S.loop);
    return 2;
  }
  if (group && (index == 0 ? loop_group_publish(&G, &bound, bl)
                            : loop_group_ready(&G)) < 0) {
    begin_stop();
    ursa_loop_run(S.loop, URSA_RUN_DEFAULT);
    ursa_loop_close(S.loop);
    return 2;
  }
  if (index == 0) announce(o, (struct sockaddr *)&bound, bl);
  ursa_timer_start(S.loop, &S.tick, 50, 50, on_tick);
  if (index == 0) {
    ursa_poll_open(S.loop, &S.stopper, o->stop_fd);
    ursa_poll_start(&S.stopper, URSA_READABLE, on_stop_fd);
  }
  r = ursa_loop_run(S.loop, URSA_RUN_DEFAULT);
  ursa_stats us;
  ursa_loop_stats(S.loop, &us);
  st->enters = us.enters;
  st->batch_waits = us.batch_waits;
  st->sqes = us.sqes;
  st->enobufs = us.enobufs;
  st->syscalls += us.enters;
  if (r < 0) fprintf(stderr, "server: loop failed: %s\n", ursa_strerror(r));
  if (ursa_loop_close(S.loop) < 0) r = -EBUSY;
  ursa_tls_ctx_free(S.tls);
  spares_free(&S.dspare);
  spares_free(&S.mspare);
  spares_free(&S.gspare);
  return r < 0 ? 1 : 0;
}

/* Thread i of the group: its loop, and its counters summed after. */
static server_stats thread_stats[MAX_THREADS];

static int group_main(loop_group *g, int i, void *arg) {
  (void)g;
  return serve_one(arg, &thread_stats[i], i);
}

int serve_uring(const server_opts *o, int listen_fd, server_stats *st) {
  (void)listen_fd;
  memset(thread_stats, 0, sizeof(thread_stats));
  memset(pool_loops, 0, sizeof(pool_loops));
  if (o->workers > 0 && pool_start(o->workers) < 0) {
    fprintf(stderr, "ursa-echo-server: cannot start the workers\n");
    pool_stop();
    return 1;
  }
  int n = o->threads > 1 ? o->threads : 1;
  int rc = loop_group_run(&G, n, group_main, on_group_stop, (void *)o);
  for (int i = 0; i < n; i++) {
    server_stats *w = &thread_stats[i];
    st->connections += w->connections;
    st->refused += w->refused;
    st->timed_out += w->timed_out;
    st->bytes_in += w->bytes_in;
    st->bytes_out += w->bytes_out;
    st->reads += w->reads;
    st->syscalls += w->syscalls;
    st->enters += w->enters;
    st->batch_waits += w->batch_waits;
    st->sqes += w->sqes;
    st->enobufs += w->enobufs;
    st->handshakes += w->handshakes;
    st->tls_failed += w->tls_failed;
  }
  /* Every loop has closed: the workers finish (their posts refused now)
   * before the loops they post to go. */
  pool_stop();
  for (int i = 0; i < n; i++)
    if (pool_loops[i]) ursa_loop_release(pool_loops[i]);
  return rc;
}
