/* backend_libuv.c - the comparison server on libuv: what a user might pick
 * instead of ursa, written as its documentation recommends. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "apps/server/server.h"

typedef struct conn {
  union {
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } h;
  uv_shutdown_t shut;
  struct conn *prev, *next;
  int closing;
  conn_clock clock;
} conn;

typedef struct wreq {
  uv_write_t req;
  conn *c;
  uv_buf_t buf;
  char data[];
} wreq;

typedef struct sreq {
  uv_udp_send_t req;
  uv_buf_t buf;
  char data[];
} sreq;

static struct {
  const server_opts *o;
  server_stats *st;
  uv_loop_t loop;
  union {
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_udp_t udp;
  } server;
  uv_poll_t stop;
  uv_timer_t deadline;
  uv_timer_t sweep; /* --idle-timeout, --min-rate */
  conn *conns;
  long open;
  char rbuf[64 * 1024]; /* every read lands here; replies take a copy */
} U;

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)h;
  (void)suggested;
  *buf = uv_buf_init(U.rbuf, sizeof(U.rbuf));
}

static void on_closed(uv_handle_t *h) {
  conn *c = h->data;
  if (c->prev) c->prev->next = c->next; else U.conns = c->next;
  if (c->next) c->next->prev = c->prev;
  U.open--;
  free(c);
}

static void close_conn(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  uv_close((uv_handle_t *)&c->h, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  close_conn(req->data);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void on_written(uv_write_t *req, int status) {
  wreq *w = req->data;
  conn *c = w->c;
  if (status == 0) U.st->bytes_out += w->buf.len;
  free(w);
  if (status < 0) {
    close_conn(c);
    return;
  }
  c->clock.last_ms = uv_now(&U.loop); /* the peer took some: not idle */
  if (!c->closing && uv_stream_get_write_queue_size(&c->h.stream) < U.o->high_water / 2)
    uv_read_start(&c->h.stream, on_alloc, on_read);
}

static int write_copy(conn *c, const char *p, size_t n, uv_write_cb cb) {
  wreq *w = malloc(sizeof(*w) + n);
  if (!w) return -1;
  memcpy(w->data, p, n);
  w->c = c;
  w->buf = uv_buf_init(w->data, (unsigned)n);
  w->req.data = w;
  if (uv_write(&w->req, &c->h.stream, &w->buf, 1, cb) < 0) {
    free(w);
    return -1;
  }
  return 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  conn *c = s->data;
  if (n == 0) return; /* EAGAIN in libuv's terms */
  if (n < 0) {
    c->shut.data = c;
    if (n != UV_EOF || c->closing ||
        uv_shutdown(&c->shut, s, on_shutdown) < 0)
      close_conn(c);
    return;
  }
  U.st->bytes_in += (uint64_t)n;
  U.st->reads++;
  clock_rx(&c->clock, uv_now(&U.loop), (uint64_t)n);
  if (U.o->mode != MODE_ECHO) return; /* sink, or a greeted peer's bytes */
  if (write_copy(c, buf->base, (size_t)n, on_written) < 0) {
    close_conn(c);
    return;
  }
  if (uv_stream_get_write_queue_size(s) >= U.o->high_water) uv_read_stop(s);
}

static void on_greeted(uv_write_t *req, int status) {
  wreq *w = req->data;
  conn *c = w->c;
  if (status == 0) U.st->bytes_out += w->buf.len;
  free(w);
  /* Shut our side and drain until the peer closes (see the uring
   * backend): on_read drops what arrives and closes at EOF. */
  c->shut.data = c;
  if (status < 0 || uv_shutdown(&c->shut, &c->h.stream, NULL) < 0 ||
      uv_read_start(&c->h.stream, on_alloc, on_read) < 0)
    close_conn(c);
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  conn *c = calloc(1, sizeof(*c));
  if (!c) return;
  if (U.o->proto == PROTO_TCP)
    uv_tcp_init(&U.loop, &c->h.tcp);
  else
    uv_pipe_init(&U.loop, &c->h.pipe, 0);
  c->h.stream.data = c;
  c->next = U.conns;
  if (U.conns) U.conns->prev = c;
  U.conns = c;
  U.open++;
  if (uv_accept(server, &c->h.stream) < 0) {
    close_conn(c);
    return;
  }
  if (U.o->max_conns && U.open > U.o->max_conns) {
    U.st->refused++;
    close_conn(c);
    return;
  }
  U.st->connections++;
  clock_start(&c->clock, uv_now(&U.loop));
  if (U.o->proto == PROTO_TCP) uv_tcp_nodelay(&c->h.tcp, 1);
  if (U.o->mode == MODE_GREET) {
    if (write_copy(c, GREETING, sizeof(GREETING) - 1, on_greeted) < 0)
      close_conn(c);
    return;
  }
  if (uv_read_start(&c->h.stream, on_alloc, on_read) < 0) close_conn(c);
}

static void on_udp_sent(uv_udp_send_t *req, int status) {
  sreq *r = req->data;
  if (status == 0) U.st->bytes_out += r->buf.len;
  free(r);
}

static void on_datagram(uv_udp_t *h, ssize_t n, const uv_buf_t *buf,
                        const struct sockaddr *from, unsigned flags) {
  if (n < 0 || !from) return;
  U.st->bytes_in += (uint64_t)n;
  U.st->reads++;
  if ((flags & UV_UDP_PARTIAL) || U.o->mode == MODE_SINK) return;
  const char *out = U.o->mode == MODE_GREET ? GREETING : buf->base;
  size_t len = U.o->mode == MODE_GREET ? sizeof(GREETING) - 1 : (size_t)n;
  sreq *r = malloc(sizeof(*r) + len);
  if (!r) return;
  memcpy(r->data, out, len);
  r->buf = uv_buf_init(r->data, (unsigned)len);
  r->req.data = r;
  if (uv_udp_send(&r->req, h, &r->buf, 1, from, on_udp_sent) < 0) free(r);
}

static void on_sweep(uv_timer_t *t) {
  (void)t;
  uint64_t now = uv_now(&U.loop);
  for (conn *c = U.conns; c; c = c->next)
    if (!c->closing && clock_expired(U.o, &c->clock, now)) {
      U.st->timed_out++;
      close_conn(c);
    }
}

static void stop_all(void) {
  if (!uv_is_closing((uv_handle_t *)&U.stop)) {
    uv_close((uv_handle_t *)&U.stop, NULL);
    uv_close((uv_handle_t *)&U.deadline, NULL);
    uv_close((uv_handle_t *)&U.sweep, NULL);
    uv_close((uv_handle_t *)&U.server, NULL);
    for (conn *c = U.conns; c; c = c->next) close_conn(c);
  }
}

static void on_stop_signal(uv_poll_t *p, int status, int events) {
  (void)p;
  (void)status;
  (void)events;
  stop_all();
}

static void on_deadline(uv_timer_t *t) {
  (void)t;
  if (past_deadline(U.o)) stop_all();
}

int serve_libuv(const server_opts *o, int listen_fd, server_stats *st) {
  (void)listen_fd;
  memset(&U, 0, sizeof(U));
  U.o = o;
  U.st = st;
  st->syscalls = UINT64_MAX; /* libuv does not tell */
  uv_loop_init(&U.loop);
  const struct sockaddr *sa = (const struct sockaddr *)&o->listen.ss;
  ursa_sockfile file = {0};
  const char *why = NULL;
  int r;
  if (o->proto == PROTO_UDP) {
    uv_udp_init(&U.loop, &U.server.udp);
    r = uv_udp_bind(&U.server.udp, sa, 0);
    if (!r) r = uv_udp_recv_start(&U.server.udp, on_alloc, on_datagram);
  } else if (o->proto == PROTO_TCP) {
    uv_tcp_init(&U.loop, &U.server.tcp);
    r = uv_tcp_bind(&U.server.tcp, sa, 0);
    if (!r) r = uv_listen(&U.server.stream, SOMAXCONN, on_connection);
  } else {
    /* Bound by the library, for its socket-file rules (a stale file is
     * replaced, a live one refused), then handed to libuv. */
    uv_pipe_init(&U.loop, &U.server.pipe, 0);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    r = fd < 0 ? -errno : ursa_socket_bind(fd, sa, o->listen.len, 0, &file);
    if (r < 0) {
      why = r == -EADDRINUSE || r == -EEXIST ? ursa_error_detail()
                                             : ursa_strerror(r);
      if (fd >= 0) close(fd);
    } else {
      r = uv_pipe_open(&U.server.pipe, fd);
      if (r < 0) close(fd);
      if (!r) r = uv_listen(&U.server.stream, SOMAXCONN, on_connection);
    }
  }
  if (r < 0) {
    char name[160];
    ursa_addr_format(sa, o->listen.len, name, sizeof(name));
    fprintf(stderr, "ursa-echo-server: cannot listen on %s: %s\n", name,
            why ? why : uv_strerror(r));
    ursa_sockfile_remove(&file);
    uv_close((uv_handle_t *)&U.server, NULL);
    uv_run(&U.loop, UV_RUN_DEFAULT);
    uv_loop_close(&U.loop);
    return 2;
  }
  struct sockaddr_storage bound;
  int bl = sizeof(bound);
  if (o->proto == PROTO_UDP)
    uv_udp_getsockname(&U.server.udp, (struct sockaddr *)&bound, &bl);
  else if (o->proto == PROTO_TCP)
    uv_tcp_getsockname(&U.server.tcp, (struct sockaddr *)&bound, &bl);
  else {
    memcpy(&bound, sa, o->listen.len);
    bl = (int)o->listen.len;
  }
  announce(o, (struct sockaddr *)&bound, (socklen_t)bl);
  uv_poll_init(&U.loop, &U.stop, o->stop_fd);
  uv_poll_start(&U.stop, UV_READABLE, on_stop_signal);
  uv_timer_init(&U.loop, &U.deadline);
  uv_timer_start(&U.deadline, on_deadline, 50, 50);
  uv_timer_init(&U.loop, &U.sweep);
  if (o->idle_ms)
    uv_timer_start(&U.sweep, on_sweep, clock_sweep_ms(o), clock_sweep_ms(o));
  uv_run(&U.loop, UV_RUN_DEFAULT);
  ursa_sockfile_remove(&file); /* only if the path still holds it */
  return uv_loop_close(&U.loop) == 0 ? 0 : 1;
}
