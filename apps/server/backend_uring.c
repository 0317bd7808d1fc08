/* backend_uring.c - the comparison server on the ursa runtime. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "apps/server/server.h"

typedef struct conn {
  ursa_stream s;
  struct conn *prev, *next;
  int closing;
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
  char buf[];
} dreply;

static struct {
  const server_opts *o;
  server_stats *st;
  ursa_loop *loop;
  ursa_listener listener;
  ursa_dgram dsock;
  ursa_timer tick;
  ursa_poll stopper; /* the signalfd of SIGINT/SIGTERM */
  uint64_t next_sweep;
  conn *conns;
  long open;
  int stopping;
  int dgram;
} S;

static const char greeting[] = GREETING;

static void on_closed(ursa_stream *s) {
  conn *c = s->data;
  if (c->prev) c->prev->next = c->next; else S.conns = c->next;
  if (c->next) c->next->prev = c->prev;
  S.open--;
  free(c);
}

static void close_conn(conn *c) {
  if (c->closing) return;
  c->closing = 1;
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
    if (n != URSA_EOF || ursa_shutdown(s, on_shutdown) < 0) close_conn(c);
    return;
  }
  S.st->bytes_in += (uint64_t)n;
  S.st->reads++;
  if (S.o->min_rate) clock_rx(&c->clock, ursa_loop_now(S.loop), (uint64_t)n);
  if (S.o->mode == MODE_SINK) return;
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

static void on_connection(ursa_listener *l, int status) {
  if (status < 0) {
    if (status != -EMFILE && status != -ENFILE)
      fprintf(stderr, "server: accept: %s\n", ursa_strerror(status));
    return;
  }
  if (S.o->max_conns && S.open >= S.o->max_conns) {
    S.st->refused++; /* not accepted: ursa closes it on return */
    return;
  }
  conn *c = calloc(1, sizeof(*c));
  if (!c) return;
  if (ursa_accept(l, &c->s) < 0) {
    free(c);
    return;
  }
  c->s.data = c;
  c->next = S.conns;
  if (S.conns) S.conns->prev = c;
  S.conns = c;
  S.open++;
  S.st->connections++;
  /* The runtime pauses reading for a peer that does not take its echo,
   * and times out one that goes silent. */
  ursa_stream_watermarks(&c->s, S.o->high_water, S.o->high_water / 2);
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
  if (ursa_read_start(&c->s, on_read) < 0) close_conn(c);
}

static void on_dsent(ursa_send_req *req, int status) {
  if (status == 0) S.st->bytes_out += req->msg.msg_iov->iov_len;
  free(req->data);
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
  const void *out = S.o->mode == MODE_GREET ? greeting : buf;
  size_t len = S.o->mode == MODE_GREET ? sizeof(greeting) - 1 : (size_t)n;
  dreply *r = malloc(sizeof(*r) + len);
  if (!r) return;
  memcpy(r->buf, out, len);
  r->req = (ursa_send_req){0};
  r->req.data = r;
  if (ursa_dgram_send(&r->req, d, r->buf, len, from, fromlen, on_dsent) < 0)
    free(r);
}

static void on_listener_closed(ursa_listener *l) { (void)l; }
static void on_dgram_closed(ursa_dgram *d) { (void)d; }

static void on_poll_closed(ursa_poll *p) { (void)p; }

static void begin_stop(void) {
  if (S.stopping) return;
  S.stopping = 1;
  ursa_timer_stop(&S.tick);
  ursa_poll_close(&S.stopper, on_poll_closed);
  if (S.dgram) {
    ursa_dgram_close(&S.dsock, on_dgram_closed);
    return;
  }
  ursa_listener_close(&S.listener, on_listener_closed);
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

int serve_uring(const server_opts *o, int listen_fd, server_stats *st) {
  (void)listen_fd;
  memset(&S, 0, sizeof(S));
  S.o = o;
  S.st = st;
  S.dgram = o->proto == PROTO_UDP || o->proto == PROTO_UNIXGRAM;
  ursa_loop_options lo = {0};
  lo.disable = o->uring_disable;
  lo.enable = o->uring_enable;
  lo.write_batch = o->write_batch;
  /* Accepted connections live in direct descriptors (off with
   * --uring-disable direct_files); the table is capped at RLIMIT_NOFILE. */
  lo.direct_files = 65536;
  /* Room for the largest UDP datagram with its header. */
  if (S.dgram) lo.buf_size = 65536 + 1024;
  if (o->buf_size) lo.buf_size = o->buf_size;
  lo.buf_count = o->buf_count;
  lo.zc_threshold = o->zc_threshold;
  lo.backend = o->lib_backend;
  int r = ursa_loop_new(&S.loop, &lo);
  if (r < 0) {
    char why[512];
    ursa_explain_setup_error(r, why, sizeof(why));
    fprintf(stderr, "ursa-echo-server: the %s backend cannot start: %s\n",
            o->backend, why);
    return 2;
  }
  const struct sockaddr *sa = (const struct sockaddr *)&o->listen.ss;
  struct sockaddr_storage bound;
  socklen_t bl = 0;
  if (S.dgram) {
    r = ursa_dgram_bind(S.loop, &S.dsock, sa, o->listen.len, 0);
    if (!r) r = ursa_dgram_recv_start(&S.dsock, on_datagram);
    if (!r) r = ursa_dgram_addr(&S.dsock, &bound, &bl);
  } else {
    /* TCP_NODELAY is set once, on the listener: accepted sockets inherit
     * it (and a direct descriptor has no fd to set it on). */
    r = ursa_listen(S.loop, &S.listener, sa, o->listen.len, 0,
                    o->proto == PROTO_SEQPACKET ? URSA_SEQPACKET
                    : o->proto == PROTO_TCP     ? URSA_LISTEN_NODELAY
                                                : 0,
                    on_connection);
    if (!r) r = ursa_listener_addr(&S.listener, &bound, &bl);
  }
  if (r < 0) {
    char name[160];
    ursa_addr_format(sa, o->listen.len, name, sizeof(name));
    fprintf(stderr, "ursa-echo-server: cannot listen on %s: %s%s%s\n", name,
            ursa_strerror(r), *ursa_error_detail() ? ": " : "",
            r == -EINVAL || r == -EEXIST ? ursa_error_detail() : "");
    ursa_loop_close(S.loop);
    return 2;
  }
  announce(o, (struct sockaddr *)&bound, bl);
  ursa_timer_start(S.loop, &S.tick, 50, 50, on_tick);
  ursa_poll_open(S.loop, &S.stopper, o->stop_fd);
  ursa_poll_start(&S.stopper, URSA_READABLE, on_stop_fd);
  r = ursa_loop_run(S.loop, URSA_RUN_DEFAULT);
  ursa_stats us;
  ursa_loop_stats(S.loop, &us);
  st->enters = us.enters;
  st->sqes = us.sqes;
  st->enobufs = us.enobufs;
  st->syscalls += us.enters;
  if (r < 0) fprintf(stderr, "server: loop failed: %s\n", ursa_strerror(r));
  if (ursa_loop_close(S.loop) < 0) r = -EBUSY;
  return r < 0 ? 1 : 0;
}
