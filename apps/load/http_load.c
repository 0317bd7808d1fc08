/* http_load.c - ursa-load --http: an HTTP/1.1 load generator on the
 * runtime.  Each connection keeps `depth` requests in flight (1:
 * request-response; more: pipelined), writes the requests its last read
 * completed in one write (from a buffer of depth copies that never
 * changes, so writes in flight may share it), parses every response with
 * llhttp (status, Content-Length or chunked framing) and times it from
 * its request's write to its last byte.  With --reconnect N a connection's
 * Nth request asks for Connection: close, the server closes after
 * answering it (so TIME_WAIT falls on the server's side, not on the
 * client's ports) and a new connection opens.  With --http-fragment N
 * requests leave in pieces of N bytes, each written once the last has
 * been sent (TCP_NODELAY: a segment each), so the server reads headers
 * cut anywhere. */
#include "apps/load/http_load.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps/common/cli.h"
#include "apps/load/hist.h"
#include "apps/load/udp_bulk.h"
#include "llhttp.h"

typedef struct hwrite {
  ursa_write_req w;
  struct hwrite *next;
  struct hconn *c;
  size_t len;
} hwrite;

typedef struct hconn {
  ursa_stream s;
  llhttp_t p;
  int open, closing;
  int again; /* closed on purpose (--reconnect, or the server's idle
                close): a new connection takes its place */
  int last;  /* a response said Connection: close: no more requests */
  long inflight;       /* requests written, responses not complete */
  uint64_t *sent_ns;   /* a ring of depth: each request's write time */
  unsigned head, tail; /* the ring's oldest, and its next free slot */
  uint64_t done;       /* responses on this connection (for --reconnect) */
  uint64_t body_len;   /* the response being parsed: its body */
  hwrite *free_w;
  /* --http-fragment: where the next piece starts in H.req, the bytes of
   * requests not yet written, and whether a piece is in flight. */
  size_t frag_off;
  uint64_t frag_left;
  int frag_busy;
} hconn;

static struct {
  const http_load_opts *o;
  ursa_loop *loop;
  ursa_addr to;
  char *req;          /* depth copies of the request */
  size_t req_len;
  char *req_close;    /* the request asking for Connection: close */
  size_t req_close_len;
  hconn *cs;
  ursa_timer tick;
  int sending, measuring;
  uint64_t t_start, t_measure, t_end;
  double cpu0, cpu_s, scpu0, scpu_s;
  uint64_t done, done_total, bad_status, bad_frame, bad_length, conn_errors,
      opened, server_closes, abandoned;
  uint64_t bytes;
  long live;
  hist h;
  llhttp_settings_t settings;
} H;

static void open_conn(hconn *c);
static int write_piece(hconn *c, const char *at, size_t len);

static void closed_cb(ursa_handle *h) {
  hconn *c = h->data;
  c->open = c->closing = 0;
  H.live--;
  for (hwrite *w = c->free_w, *n; w; w = n) {
    n = w->next;
    free(w);
  }
  c->free_w = NULL;
  /* An error loses the connection for the rest of the run (counted): a
   * server that refuses does not turn the run into a connect loop. */
  if (H.sending && c->again) open_conn(c);
}

static void close_conn(hconn *c) {
  if (!c->open || c->closing) return;
  c->closing = 1;
  ursa_stream_close(&c->s, closed_cb);
}

/* The next piece of the requests owed (--http-fragment). */
static void next_piece(hconn *c) {
  size_t all = H.req_len * (size_t)H.o->depth;
  size_t n = (size_t)H.o->fragment;
  if (n > c->frag_left) n = (size_t)c->frag_left;
  if (n > all - c->frag_off) n = all - c->frag_off;
  c->frag_busy = 1;
  if (write_piece(c, H.req + c->frag_off, n) < 0) c->frag_busy = 0;
}

/* The server ended a connection that has answered before (a keep-alive
 * limit, RFC 9112 9.3: a client must expect it): the requests in flight
 * go unanswered, counted, and a new connection takes over. */
static int server_ended(hconn *c, int err) {
  if (!c->done || (err != URSA_EOF && err != -ECONNRESET && err != -EPIPE))
    return 0;
  if (H.measuring) {
    H.server_closes++;
    H.abandoned += (uint64_t)c->inflight;
  }
  c->inflight = 0;
  c->again = 1;
  close_conn(c);
  return 1;
}

static void on_written(ursa_write_req *w, int status) {
  hwrite *hw = (hwrite *)w;
  hconn *c = hw->c;
  size_t len = hw->len;
  hw->next = c->free_w;
  c->free_w = hw;
  if (status < 0 && !c->closing && !server_ended(c, status)) {
    H.conn_errors++;
    close_conn(c);
  }
  if (H.o->fragment && c->frag_busy && status >= 0) {
    c->frag_busy = 0;
    c->frag_off = (c->frag_off + len) % (H.req_len * (size_t)H.o->depth);
    c->frag_left -= len;
    if (c->frag_left && !c->closing) next_piece(c);
  }
}

/* One write of len bytes at at (inside H.req, which never changes); 0, or
 * -1 with the connection closing. */
static int write_piece(hconn *c, const char *at, size_t len) {
  hwrite *hw = c->free_w;
  if (hw) {
    c->free_w = hw->next;
  } else if (!(hw = calloc(1, sizeof(*hw)))) {
    H.conn_errors++;
    close_conn(c);
    return -1;
  }
  hw->c = c;
  hw->len = len;
  hw->w = (ursa_write_req){0};
  if (ursa_write(&hw->w, &c->s, at, len, 0, on_written) < 0) {
    free(hw);
    H.conn_errors++;
    close_conn(c);
    return -1;
  }
  return 0;
}

/* Writes k more requests (k <= depth - inflight). */
static void send_reqs(hconn *c, long k) {
  if (k <= 0 || c->closing) return;
  if (H.o->reconnect) {
    long left = H.o->reconnect - (long)c->done - c->inflight;
    if (k > left) k = left;
    if (k <= 0) return;
  }
  uint64_t now = cli_now_ns();
  for (long i = 0; i < k; i++) c->sent_ns[c->tail++ % H.o->depth] = now;
  c->inflight += k;
  if (!H.o->fragment) {
    /* The connection's last request under --reconnect asks for close. */
    int last = H.o->reconnect &&
               (long)c->done + c->inflight == H.o->reconnect;
    if (k - last > 0 &&
        write_piece(c, H.req, (size_t)(k - last) * H.req_len) < 0)
      return;
    if (last) write_piece(c, H.req_close, H.req_close_len);
    return;
  }
  c->frag_left += (uint64_t)k * H.req_len;
  if (!c->frag_busy) next_piece(c);
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
  (void)at;
  ((hconn *)p->data)->body_len += n;
  return 0;
}

static int on_message_begin(llhttp_t *p) {
  ((hconn *)p->data)->body_len = 0;
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  hconn *c = p->data;
  if (!c->inflight) {
    H.bad_frame++; /* a response nobody asked for */
    return HPE_USER;
  }
  uint64_t now = cli_now_ns();
  uint64_t t = c->sent_ns[c->head++ % H.o->depth];
  c->inflight--;
  c->done++;
  H.done_total++;
  if (llhttp_get_status_code(p) != H.o->status) H.bad_status++;
  if (!llhttp_should_keep_alive(p)) c->last = 1;
  if (H.o->length >= 0 && c->body_len != (uint64_t)H.o->length &&
      H.bad_length++ < 3)
    fprintf(stderr, "ursa-load: a response body of %llu bytes, not %ld\n",
            (unsigned long long)c->body_len, H.o->length);
  if (H.measuring) {
    H.done++;
    H.bytes += c->body_len;
    hist_add(&H.h, (now - t) / 1000);
  }
  return 0;
}

static void on_read(ursa_stream *s, ssize_t n, const void *buf) {
  hconn *c = s->data;
  if (n < 0) {
    /* The server closing with nothing in flight ends a --reconnect
     * connection cleanly; anything else is an error while sending. */
    if (c->inflight && server_ended(c, (int)n)) return;
    if (c->inflight || n != URSA_EOF) {
      if (H.sending) H.conn_errors++;
    } else {
      c->again = 1;
    }
    close_conn(c);
    return;
  }
  long before = c->inflight;
  llhttp_errno_t e = llhttp_execute(&c->p, buf, (size_t)n);
  if (e != HPE_OK) {
    H.bad_frame++;
    if (H.bad_frame < 4)
      fprintf(stderr, "ursa-load: a response llhttp refuses: %s\n",
              llhttp_get_error_reason(&c->p));
    close_conn(c);
    return;
  }
  /* The server ends the connection (nginx's keepalive_requests): requests
   * pipelined behind that response go unanswered, as they would for any
   * client; counted, and a new connection takes over. */
  if (c->last) {
    if (H.o->reconnect && c->done >= (uint64_t)H.o->reconnect &&
        !c->inflight) {
      c->again = 1; /* the close this connection asked for */
      close_conn(c);
    } else {
      server_ended(c, URSA_EOF);
    }
    return;
  }
  if (H.o->reconnect && c->done >= (uint64_t)H.o->reconnect &&
      !c->inflight) {
    c->again = 1;
    close_conn(c);
    return;
  }
  if (H.sending) send_reqs(c, before - c->inflight);
}

static void on_connect(ursa_stream *s, int status) {
  hconn *c = s->data;
  if (status < 0) {
    /* A connect still under way when the run ends is cancelled: no error. */
    if ((H.sending || status != -ECANCELED) && H.conn_errors++ < 3)
      fprintf(stderr, "ursa-load: connect: %s\n", ursa_strerror(status));
    if (!c->closing) {
      c->closing = 1;
      ursa_stream_close(&c->s, closed_cb);
    }
    return;
  }
  if (H.measuring) H.opened++;
  ursa_stream_nodelay(s, 1);
  if (ursa_read_start(s, on_read) < 0) {
    H.conn_errors++;
    close_conn(c);
    return;
  }
  send_reqs(c, H.o->depth);
}

static void open_conn(hconn *c) {
  if (!H.sending) return;
  c->inflight = 0;
  c->head = c->tail = 0;
  c->done = 0;
  c->frag_off = 0;
  c->frag_left = 0;
  c->frag_busy = 0;
  c->s = (ursa_stream){0};
  c->s.data = c;
  llhttp_init(&c->p, HTTP_RESPONSE, &H.settings);
  c->p.data = c;
  c->open = 1;
  c->closing = c->again = c->last = 0;
  H.live++;
  if (ursa_connect(H.loop, &c->s, (struct sockaddr *)&H.to.ss, H.to.len, 0,
                   5000, on_connect) < 0) {
    c->open = 0;
    H.live--;
    H.conn_errors++;
  }
}

static void on_tick(ursa_timer *t, int status) {
  (void)t;
  if (status < 0) return;
  uint64_t now = cli_now_ns();
  if (H.sending && !H.measuring && now >= H.t_measure) {
    H.measuring = 1;
    H.t_measure = now;
    H.cpu0 = cli_cpu_s();
    if (H.o->server_pid) H.scpu0 = load_proc_cpu_s(H.o->server_pid);
  }
  if (H.sending && now >= H.t_end) {
    H.sending = H.measuring = 0;
    H.t_end = now;
    H.cpu_s = cli_cpu_s() - H.cpu0;
    if (H.o->server_pid)
      H.scpu_s = load_proc_cpu_s(H.o->server_pid) - H.scpu0;
    for (long i = 0; i < H.o->conns; i++) close_conn(&H.cs[i]);
  }
  if (!H.sending && !H.live) ursa_timer_stop(&H.tick);
}

/* http://HOST:PORT/PATH into the address, the Host value and the path. */
static int parse_url(const char *url, char *host, size_t hl, char *path,
                     size_t pl) {
  if (strncmp(url, "http://", 7)) {
    fprintf(stderr, "ursa-load: --http '%s': want http://HOST:PORT/PATH "
            "(https is not spoken here)\n", url);
    return -1;
  }
  const char *a = url + 7, *slash = strchr(a, '/');
  size_t n = slash ? (size_t)(slash - a) : strlen(a);
  if (n == 0 || n >= hl) {
    fprintf(stderr, "ursa-load: --http '%s': no host\n", url);
    return -1;
  }
  memcpy(host, a, n);
  host[n] = '\0';
  snprintf(path, pl, "%s", slash ? slash : "/");
  if (ursa_addr_parse(host, &H.to) < 0) {
    fprintf(stderr, "ursa-load: --http '%s': %s\n", url, ursa_error_detail());
    return -1;
  }
  return 0;
}

static int build_request(const char *host, const char *path) {
  static const char doc[] = "{\"message\":\"Hello, World!\",\"n\":42}";
  const http_load_opts *o = H.o;
  long body = o->json ? (long)sizeof(doc) - 1 : o->body;
  char head[1024];
  int n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: %s\r\n%s",
                   body >= 0 ? "POST" : "GET", path, host,
                   o->json ? "Content-Type: application/json\r\n" : "");
  if (n < 0 || (size_t)n >= sizeof(head) - 96) return -1;
  if (body >= 0)
    n += snprintf(head + n, sizeof(head) - (size_t)n,
                  "Content-Length: %ld\r\n", body);
  static const char closing[] = "Connection: close\r\n";
  int nc = n; /* where the close variant's header goes */
  n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
  H.req_len = (size_t)n + (size_t)(body > 0 ? body : 0);
  H.req = malloc(H.req_len * (size_t)o->depth);
  H.req_close_len = H.req_len + sizeof(closing) - 1;
  H.req_close = malloc(H.req_close_len);
  if (!H.req || !H.req_close) {
    free(H.req);
    free(H.req_close);
    H.req = H.req_close = NULL;
    return -1;
  }
  for (long i = 0; i < o->depth; i++) {
    char *r = H.req + (size_t)i * H.req_len;
    memcpy(r, head, (size_t)n);
    if (o->json)
      memcpy(r + n, doc, sizeof(doc) - 1);
    else if (body > 0)
      memset(r + n, 'x', (size_t)body);
  }
  memcpy(H.req_close, H.req, (size_t)nc);
  memcpy(H.req_close + nc, closing, sizeof(closing) - 1);
  memcpy(H.req_close + nc + sizeof(closing) - 1, H.req + nc,
         H.req_len - (size_t)nc);
  return 0;
}

int http_load_run(const http_load_opts *o) {
  memset(&H, 0, sizeof(H));
  H.o = o;
  char host[256], path[2048];
  if (parse_url(o->url, host, sizeof(host), path, sizeof(path)) < 0) return 2;
  if (build_request(host, path) < 0) {
    fprintf(stderr, "ursa-load: --http: the request does not fit\n");
    return 2;
  }
  llhttp_settings_init(&H.settings);
  H.settings.on_message_begin = on_message_begin;
  H.settings.on_body = on_body;
  H.settings.on_message_complete = on_message_complete;
  ursa_loop_options lo = {0};
  lo.batch_policy = (ursa_batch_policy)o->batch_policy;
  int r = ursa_loop_new(&H.loop, &lo);
  H.cs = calloc((size_t)o->conns, sizeof(*H.cs));
  uint64_t *ring = calloc((size_t)(o->conns * o->depth), sizeof(*ring));
  if (r < 0 || !H.cs || !ring) {
    fprintf(stderr, "ursa-load: cannot start: %s\n",
            r < 0 ? ursa_strerror(r) : "out of memory");
    if (H.loop) ursa_loop_close(H.loop);
    free(H.cs);
    free(ring);
    free(H.req);
    free(H.req_close);
    return 2;
  }
  H.sending = 1;
  H.t_start = cli_now_ns();
  H.t_measure = H.t_start + (uint64_t)(o->warmup_s * 1e9);
  H.t_end = H.t_measure + (uint64_t)(o->duration_s * 1e9);
  for (long i = 0; i < o->conns; i++) {
    H.cs[i].sent_ns = ring + i * o->depth;
    open_conn(&H.cs[i]);
  }
  ursa_timer_start(H.loop, &H.tick, 20, 20, on_tick);
  r = ursa_loop_run(H.loop, URSA_RUN_DEFAULT);
  if (ursa_loop_close(H.loop) < 0 && r >= 0) r = -EBUSY;
  double secs = (double)(H.t_end - H.t_measure) / 1e9;
  if (secs <= 0) secs = 1e-9;
  double rps = (double)H.done / secs;
  double cpu_us = H.done ? H.cpu_s * 1e6 / (double)H.done : 0;
  double p50 = (double)hist_quantile(&H.h, 0.5),
         p90 = (double)hist_quantile(&H.h, 0.9),
         p99 = (double)hist_quantile(&H.h, 0.99),
         p999 = (double)hist_quantile(&H.h, 0.999),
         mx = (double)H.h.max;
  uint64_t errors = H.bad_status + H.bad_frame + H.bad_length + H.conn_errors;
  printf("ursa-load: http, %ld connections x %ld in flight%s, %s %s, "
         "%.2f s measured\n", o->conns, o->depth,
         o->reconnect ? " (reconnecting)" : "",
         o->json || o->body >= 0 ? "POST" : "GET", o->url, secs);
  printf("  %llu responses, %.0f requests/s, %.2f MB/s of bodies\n",
         (unsigned long long)H.done, rps, (double)H.bytes / secs / 1e6);
  printf("  latency us: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f\n",
         p50, p90, p99, p999, mx);
  if (H.server_closes)
    printf("  the server closed %llu connections (Connection: close), "
           "%llu pipelined requests unanswered\n",
           (unsigned long long)H.server_closes,
           (unsigned long long)H.abandoned);
  printf("  errors: %llu (status %llu, framing %llu, length %llu, "
         "connection %llu); client CPU %.3f s, %.2f us per request\n",
         (unsigned long long)errors, (unsigned long long)H.bad_status,
         (unsigned long long)H.bad_frame, (unsigned long long)H.bad_length,
         (unsigned long long)H.conn_errors, H.cpu_s, cpu_us);
  if (o->json_out) {
    FILE *f = fopen(o->json_out, "w");
    if (!f) {
      fprintf(stderr, "ursa-load: cannot write %s: %s\n", o->json_out,
              strerror(errno));
    } else {
      fprintf(f,
              "{\"mode\":\"http\",\"conns\":%ld,\"inflight\":%ld,"
              "\"seconds\":%.4f,\"requests\":%llu,\"rps\":%.1f,"
              "\"mb_per_s\":%.3f,\"p50_us\":%.1f,\"p90_us\":%.1f,"
              "\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,"
              "\"errors\":%llu,\"bad_status\":%llu,\"bad_framing\":%llu,"
              "\"bad_length\":%llu,\"connect_errors\":%llu,\"client_cpu_s\":%.4f,"
              "\"client_cpu_us_per_req\":%.3f,\"server_cpu_s\":%.4f,"
              "\"opened\":%llu,\"requests_total\":%llu,"
              "\"server_closes\":%llu,\"abandoned\":%llu}\n",
              o->conns, o->depth, secs, (unsigned long long)H.done, rps,
              (double)H.bytes / secs / 1e6, p50, p90, p99, p999, mx,
              (unsigned long long)errors, (unsigned long long)H.bad_status,
              (unsigned long long)H.bad_frame,
              (unsigned long long)H.bad_length,
              (unsigned long long)H.conn_errors, H.cpu_s, cpu_us,
              o->server_pid ? H.scpu_s : -1.0, (unsigned long long)H.opened,
              (unsigned long long)H.done_total,
              (unsigned long long)H.server_closes,
              (unsigned long long)H.abandoned);
      fclose(f);
    }
  }
  free(H.cs);
  free(ring);
  free(H.req);
  free(H.req_close);
  if (r < 0) {
    fprintf(stderr, "ursa-load: event loop failed: %s\n", ursa_strerror(r));
    return 1;
  }
  if (errors) {
    fprintf(stderr, "ursa-load: %llu errors (status %llu, framing %llu, "
            "length %llu, connection %llu)\n", (unsigned long long)errors,
            (unsigned long long)H.bad_status,
            (unsigned long long)H.bad_frame,
            (unsigned long long)H.bad_length,
            (unsigned long long)H.conn_errors);
    return 1;
  }
  if (!H.done_total) {
    fprintf(stderr, "ursa-load: no response came\n");
    return 1;
  }
  return 0;
}
