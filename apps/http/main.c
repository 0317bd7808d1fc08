/* ursa-http - an HTTP/1.1 server on ursa: http_core (llhttp) for the
 * protocol, one ursa loop per thread (SO_REUSEPORT between them) for the
 * connections.  Each read is parsed at once and every response it
 * completes goes out in one write, so pipelined requests cost one send
 * per batch; a second batch waits for the first's write. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apps/common/cli.h"
#include "apps/common/loops.h"
#include "apps/http/http_core.h"
#include "ursa/ursa.h"

#define PROG "ursa-http"
/* Reading pauses while this many response bytes wait behind a write. */
#define OUT_HIGH (4u << 20)
/* A closing connection's last bytes are read and dropped this long. */
#define LINGER_MS 2000

typedef struct opts {
  const char *listen, *backend, *root, *stats_json;
  long threads, cpu;
  double duration, header_timeout, idle_timeout;
  http_cfg cfg;
  ursa_addr addr;
  int stop_fd;
} opts;

typedef struct hconn {
  ursa_stream s;
  http_conn h;
  http_out out;      /* responses waiting */
  http_out inflight; /* responses being written */
  ursa_write_req w;
  int writing, close_after, closing, paused, discarding, peer_eof;
  uint64_t last_ms, hdr_since;
  struct hconn *prev, *next;
} hconn;

typedef struct totals {
  uint64_t connections, requests, by_class[6], timeouts;
} totals;

static opts O;
static loop_group G;
static totals T[LOOPS_MAX];

/* One loop's state, on its thread. */
static __thread struct {
  int index, stopping;
  ursa_loop *loop;
  ursa_listener listener;
  ursa_timer sweep;
  ursa_poll stopper;
  hconn *conns;
  http_cfg cfg; /* O.cfg with this thread's Date line */
  char date[48];
  long long date_sec;
  uint64_t deadline;
  totals *t;
} S;

static void close_conn(hconn *c);
static void flush(hconn *c);
static void on_read(ursa_stream *s, ssize_t n, const void *buf);

static void on_closed(ursa_handle *h) {
  hconn *c = h->data;
  if (c->prev) c->prev->next = c->next;
  else S.conns = c->next;
  if (c->next) c->next->prev = c->prev;
  S.t->requests += c->h.counts.requests;
  for (int i = 0; i < 6; i++) S.t->by_class[i] += c->h.counts.by_class[i];
  http_conn_free(&c->h);
  http_out_free(&c->out);
  http_out_free(&c->inflight);
  loop_group_count(&G, S.index, -1);
  free(c);
}

static void close_conn(hconn *c) {
  if (c->closing) return;
  c->closing = 1;
  ursa_stream_close(&c->s, on_closed);
}

/* After the last response: FIN, then what the peer still sends is read
 * and dropped until it closes (closing with bytes unread would reset the
 * connection and could destroy the response in flight). */
static void on_shut(ursa_stream *s, int status) {
  hconn *c = s->data;
  if (status < 0 || c->peer_eof) {
    close_conn(c);
    return;
  }
  c->discarding = 1;
  ursa_read_timeout(s, LINGER_MS);
  if (c->paused) {
    c->paused = 0;
    if (ursa_read_start(s, on_read) < 0) close_conn(c);
  }
}

static void finish(hconn *c) {
  if (ursa_shutdown(&c->s, on_shut) < 0) close_conn(c);
}

static void on_written(ursa_write_req *w, int status) {
  hconn *c = w->data;
  c->writing = 0;
  c->inflight.len = 0;
  if (status < 0 || c->closing) {
    close_conn(c);
    return;
  }
  if (c->out.len) {
    flush(c);
  } else if (c->close_after || c->peer_eof) {
    finish(c);
  }
}

static void flush(hconn *c) {
  if (c->out.failed) {
    close_conn(c);
    return;
  }
  if (c->writing || !c->out.len) return;
  http_out t = c->inflight;
  c->inflight = c->out;
  c->out = t;
  c->out.len = 0;
  c->w = (ursa_write_req){0};
  c->w.data = c;
  c->writing = 1;
  if (ursa_write(&c->w, &c->s, c->inflight.buf, c->inflight.len, 0,
                 on_written) < 0) {
    c->writing = 0;
    close_conn(c);
    return;
  }
  if (c->paused && !c->close_after) {
    c->paused = 0;
    if (ursa_read_start(&c->s, on_read) < 0) close_conn(c);
  }
}

static void on_read(ursa_stream *s, ssize_t n, const void *buf) {
  hconn *c = s->data;
  if (n < 0) {
    if (n == -ETIMEDOUT) S.t->timeouts++;
    if (n != URSA_EOF || c->discarding || c->close_after) {
      close_conn(c);
      return;
    }
    /* The peer is done sending: answer what it asked, then go. */
    c->peer_eof = 1;
    if (!c->writing && !c->out.len) close_conn(c);
    return;
  }
  if (c->discarding || c->close_after) return;
  c->last_ms = ursa_loop_now(S.loop);
  int done = http_conn_feed(&c->h, buf, (size_t)n, &c->out);
  if (c->h.in_headers) {
    if (!c->hdr_since) c->hdr_since = c->last_ms;
  } else {
    c->hdr_since = 0;
  }
  if (done) c->close_after = 1;
  flush(c);
  if (!c->closing && c->writing && c->out.len >= OUT_HIGH && !c->paused) {
    c->paused = 1;
    ursa_read_stop(s);
  }
}

static void on_connection(ursa_listener *l, int status) {
  if (status < 0) {
    if (status != -EMFILE && status != -ENFILE)
      fprintf(stderr, PROG ": accept: %s\n", ursa_strerror(status));
    return;
  }
  hconn *c = calloc(1, sizeof(*c));
  if (!c) return;
  if (ursa_accept(l, &c->s) < 0) {
    free(c);
    return;
  }
  c->s.data = c;
  http_conn_init(&c->h, &S.cfg);
  c->next = S.conns;
  if (S.conns) S.conns->prev = c;
  S.conns = c;
  S.t->connections++;
  loop_group_count(&G, S.index, 1);
  c->last_ms = ursa_loop_now(S.loop);
  if (S.stopping || ursa_read_start(&c->s, on_read) < 0) close_conn(c);
}

static void begin_stop(void) {
  if (S.stopping) return;
  S.stopping = 1;
  loop_group_stop(&G, S.index);
  ursa_timer_stop(&S.sweep);
  if (S.index == 0) ursa_poll_close(&S.stopper, NULL);
  ursa_listener_close(&S.listener, NULL);
  for (hconn *c = S.conns; c; c = c->next) close_conn(c);
}

static void on_group_stop(loop_group *g, int i, void *arg) {
  (void)g;
  (void)i;
  (void)arg;
  begin_stop();
}

static void set_date(void) {
  long long now = (long long)time(NULL);
  if (now == S.date_sec) return;
  S.date_sec = now;
  http_date_line(now, S.date);
}

/* Every 100 ms: the Date line (formatted once a second), the header
 * timeout (a request's header section begun and not finished: 408), the
 * idle timeout (no request under way: closed), and --duration. */
static void on_sweep(ursa_timer *t, int status) {
  (void)t;
  if (status < 0 || S.stopping) return;
  set_date();
  uint64_t now = ursa_loop_now(S.loop);
  uint64_t hdr_ms = (uint64_t)(O.header_timeout * 1000),
           idle_ms = (uint64_t)(O.idle_timeout * 1000);
  for (hconn *c = S.conns, *next; c; c = next) {
    next = c->next;
    if (c->closing || c->close_after) continue;
    if (c->hdr_since && now - c->hdr_since >= hdr_ms) {
      S.t->timeouts++;
      http_conn_timeout(&c->h, &c->out);
      c->close_after = 1;
      c->hdr_since = 0;
      if (c->writing || c->out.len) flush(c);
      else finish(c);
    } else if (idle_ms && !c->h.in_request && !c->writing && !c->out.len &&
               now - c->last_ms >= idle_ms) {
      S.t->timeouts++;
      finish(c);
    }
  }
  if (S.deadline && now >= S.deadline) begin_stop();
}

static void on_stop_fd(ursa_poll *p, int status, unsigned events) {
  (void)p;
  (void)status;
  (void)events;
  begin_stop();
}

static int serve(loop_group *g, int index, void *arg) {
  (void)arg;
  memset(&S, 0, sizeof(S));
  S.index = index;
  S.t = &T[index];
  S.cfg = O.cfg;
  S.cfg.date = S.date;
  S.date_sec = -1;
  set_date();
  ursa_loop_options lo = {0};
  lo.backend = !strcmp(O.backend, "uring") ? URSA_BACKEND_URING
                                           : URSA_BACKEND_EPOLL;
  lo.direct_files = 65536;
  int r = ursa_loop_new(&S.loop, &lo);
  if (r < 0) {
    char why[512];
    ursa_explain_setup_error(r, why, sizeof(why));
    fprintf(stderr, PROG ": the %s backend cannot start: %s\n", O.backend,
            why);
    if (g->n > 1) loop_group_fail(g);
    return 2;
  }
  if (g->n > 1) loop_group_join(g, index, S.loop);
  struct sockaddr_storage first, bound;
  socklen_t salen = O.addr.len, bl = 0;
  const struct sockaddr *sa = (const struct sockaddr *)&O.addr.ss;
  r = 0;
  if (index > 0) {
    if (loop_group_address(g, &first, &salen) < 0) r = -ECANCELED;
    sa = (const struct sockaddr *)&first;
  }
  if (!r)
    r = ursa_listen(S.loop, &S.listener, sa, salen, 0,
                    URSA_LISTEN_NODELAY |
                        (g->n > 1 ? URSA_LISTEN_REUSEPORT : 0),
                    on_connection);
  if (!r) r = ursa_listener_addr(&S.listener, &bound, &bl);
  if (r < 0) {
    if (r != -ECANCELED)
      fprintf(stderr, PROG ": cannot listen on %s: %s\n", O.listen,
              ursa_strerror(r));
    if (g->n > 1) loop_group_fail(g);
    ursa_loop_close(S.loop);
    return 2;
  }
  if (g->n > 1 && (index == 0 ? loop_group_publish(g, &bound, bl)
                              : loop_group_ready(g)) < 0) {
    begin_stop();
    ursa_loop_run(S.loop, URSA_RUN_DEFAULT);
    ursa_loop_close(S.loop);
    return 2;
  }
  if (index == 0) {
    char name[160];
    ursa_addr_format((struct sockaddr *)&bound, bl, name, sizeof(name));
    printf(PROG ": %s, %ld thread%s, listening on %s\n", O.backend,
           O.threads, O.threads > 1 ? "s" : "", name);
    fflush(stdout);
    ursa_poll_open(S.loop, &S.stopper, O.stop_fd);
    ursa_poll_start(&S.stopper, URSA_READABLE, on_stop_fd);
  }
  if (O.duration > 0)
    S.deadline = ursa_loop_now(S.loop) + (uint64_t)(O.duration * 1000);
  ursa_timer_start(S.loop, &S.sweep, 100, 100, on_sweep);
  r = ursa_loop_run(S.loop, URSA_RUN_DEFAULT);
  if (r < 0) fprintf(stderr, PROG ": loop failed: %s\n", ursa_strerror(r));
  if (ursa_loop_close(S.loop) < 0) r = -EBUSY;
  return r < 0 ? 1 : 0;
}

static int bad(const char *fmt, const char *a) {
  fprintf(stderr, PROG ": ");
  fprintf(stderr, fmt, a);
  fprintf(stderr, " (see --help)\n");
  return 2;
}

static void usage(void) {
  printf(
      "usage: " PROG " [options]\n"
      "  --listen ADDR          where to listen (default 127.0.0.1:8080;\n"
      "                         :PORT for every address, [::1]:PORT, ...)\n"
      "  --backend B            uring (default) or ursa-epoll\n"
      "  --threads N            loops on N threads, SO_REUSEPORT (1-64)\n"
      "  --cpu N                pin the process to CPU N\n"
      "  --root DIR             serve the files under DIR (no way out of "
      "it:\n"
      "                         no '..', no symlinks)\n"
      "  --max-url BYTES        request target (default 8192): 414\n"
      "  --max-header-bytes N   request line and headers (default 16384): "
      "431\n"
      "  --max-headers N        header fields (default 100): 431\n"
      "  --max-body BYTES       request body (default 8388608): 413\n"
      "  --header-timeout S     a request's headers must be in within S\n"
      "                         seconds of its first byte (default 10): "
      "408\n"
      "  --idle-timeout S       a connection with no request for S seconds\n"
      "                         is closed (default 60; 0: never)\n"
      "  --duration S           stop after S seconds (default: at "
      "SIGINT/SIGTERM)\n"
      "  --stats-json FILE      counters as JSON at exit\n"
      "  -h, --help             this text\n"
      "Routes: GET/HEAD /plaintext, /json; POST/PUT /upload (answers the\n"
      "body's length and FNV-1a); other paths from --root.\n");
}

static int parse(int argc, char **argv) {
  O.listen = "127.0.0.1:8080";
  O.backend = "uring";
  O.threads = 1;
  O.cpu = -1;
  O.header_timeout = 10;
  O.idle_timeout = 60;
  O.cfg = (http_cfg){.max_url = 8192, .max_header_bytes = 16384,
                     .max_headers = 100, .max_body = 8u << 20,
                     .max_file = 64u << 20, .root_fd = -1};
  static const struct option longs[] = {
      {"listen", required_argument, NULL, 'l'},
      {"backend", required_argument, NULL, 'b'},
      {"threads", required_argument, NULL, 't'},
      {"cpu", required_argument, NULL, 'c'},
      {"root", required_argument, NULL, 'r'},
      {"max-url", required_argument, NULL, 'U'},
      {"max-header-bytes", required_argument, NULL, 'H'},
      {"max-headers", required_argument, NULL, 'N'},
      {"max-body", required_argument, NULL, 'B'},
      {"header-timeout", required_argument, NULL, 'T'},
      {"idle-timeout", required_argument, NULL, 'I'},
      {"duration", required_argument, NULL, 'd'},
      {"stats-json", required_argument, NULL, 'j'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  const char *flag, *v;
  int ch;
  long x;
  while ((ch = cli_next(PROG, argc, argv, "h", longs, &flag, &v)) != 0) {
    switch (ch) {
      case -1: return 2;
      case 'h': usage(); return 1;
      case 'l': O.listen = v; break;
      case 'b':
        if (strcmp(v, "uring") && strcmp(v, "ursa-epoll"))
          return bad("unknown --backend '%s' (want uring or ursa-epoll)", v);
        O.backend = v;
        break;
      case 't':
        if (cli_long(PROG, flag, v, 1, LOOPS_MAX, &O.threads) < 0) return 2;
        break;
      case 'c':
        if (cli_long(PROG, flag, v, 0, 4095, &O.cpu) < 0) return 2;
        break;
      case 'r': O.root = v; break;
      case 'U':
        if (cli_long(PROG, flag, v, 16, 1 << 20, &x) < 0) return 2;
        O.cfg.max_url = (size_t)x;
        break;
      case 'H':
        if (cli_long(PROG, flag, v, 256, 1 << 24, &x) < 0) return 2;
        O.cfg.max_header_bytes = (size_t)x;
        break;
      case 'N':
        if (cli_long(PROG, flag, v, 1, 100000, &x) < 0) return 2;
        O.cfg.max_headers = (unsigned)x;
        break;
      case 'B':
        if (cli_long(PROG, flag, v, 0, 1L << 40, &x) < 0) return 2;
        O.cfg.max_body = (uint64_t)x;
        break;
      case 'T':
        if (cli_seconds(PROG, flag, v, 0.05, 86400, &O.header_timeout) < 0)
          return 2;
        break;
      case 'I':
        if (cli_seconds(PROG, flag, v, 0, 86400, &O.idle_timeout) < 0)
          return 2;
        break;
      case 'd':
        if (cli_seconds(PROG, flag, v, 0.01, 1e7, &O.duration) < 0) return 2;
        break;
      case 'j': O.stats_json = v; break;
    }
  }
  if (optind < argc) return bad("unexpected argument '%s'", argv[optind]);
  if (ursa_addr_parse(O.listen, &O.addr) < 0) {
    fprintf(stderr, PROG ": bad --listen '%s': %s\n", O.listen,
            ursa_error_detail());
    return 2;
  }
  if (O.root) {
    O.cfg.root_fd = open(O.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (O.cfg.root_fd < 0) {
      fprintf(stderr, PROG ": --root '%s': %s\n", O.root, strerror(errno));
      return 2;
    }
  }
  return 0;
}

static void report(void) {
  totals t = {0};
  for (int i = 0; i < LOOPS_MAX; i++) {
    t.connections += T[i].connections;
    t.requests += T[i].requests;
    t.timeouts += T[i].timeouts;
    for (int k = 0; k < 6; k++) t.by_class[k] += T[i].by_class[k];
  }
  printf(PROG ": %llu connections, %llu requests, responses 1xx %llu 2xx "
         "%llu 3xx %llu 4xx %llu 5xx %llu, %llu timed out\n",
         (unsigned long long)t.connections, (unsigned long long)t.requests,
         (unsigned long long)t.by_class[1], (unsigned long long)t.by_class[2],
         (unsigned long long)t.by_class[3], (unsigned long long)t.by_class[4],
         (unsigned long long)t.by_class[5], (unsigned long long)t.timeouts);
  if (!O.stats_json) return;
  FILE *f = fopen(O.stats_json, "w");
  if (!f) {
    fprintf(stderr, PROG ": cannot write %s: %s\n", O.stats_json,
            strerror(errno));
    return;
  }
  fprintf(f,
          "{\"backend\":\"%s\",\"threads\":%ld,\"connections\":%llu,"
          "\"requests\":%llu,\"responses_1xx\":%llu,\"responses_2xx\":%llu,"
          "\"responses_4xx\":%llu,\"responses_5xx\":%llu,"
          "\"timed_out\":%llu}\n",
          O.backend, O.threads, (unsigned long long)t.connections,
          (unsigned long long)t.requests, (unsigned long long)t.by_class[1],
          (unsigned long long)t.by_class[2], (unsigned long long)t.by_class[4],
          (unsigned long long)t.by_class[5], (unsigned long long)t.timeouts);
  fclose(f);
}

int main(int argc, char **argv) {
  int r = parse(argc, argv);
  if (r) return r == 1 ? 0 : r;
  if (O.cpu >= 0 && cli_pin(PROG, O.cpu) < 0) return 2;
  O.stop_fd = cli_stop_fd(PROG);
  if (O.stop_fd < 0) return 1;
  int rc = loop_group_run(&G, (int)O.threads, serve, on_group_stop, NULL);
  report();
  if (O.cfg.root_fd >= 0) close(O.cfg.root_fd);
  close(O.stop_fd);
  return rc;
}
