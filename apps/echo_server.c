/* echo_server.c - a TCP echo server on ursa: the smallest complete program
 * that uses the runtime (listen, accept, read, write, backpressure, close). */
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "ursa/ursa.h"

/* Reading pauses while this many bytes wait to be echoed: a peer that sends
 * and never reads cannot make the server grow without bound. */
#define HIGH_WATER (1u << 20)

typedef struct conn {
  ursa_stream s;
  int closing;
  struct conn *prev, *next; /* all open connections, to close at the end */
} conn;

typedef struct echo_write {
  ursa_write_req req;
  conn *c;
  size_t len;
  char buf[]; /* the received bytes, copied: read buffers are borrowed */
} echo_write;

static ursa_listener listener;
static ursa_timer tick;
static conn *conns;
static unsigned long long conns_total;
static long duration_ms;
static sigset_t stop_signals;
static int stopping;
static int serving_dgram;
static ursa_dgram dsock;
static void on_dclose(ursa_dgram *d);

static void on_close(ursa_stream *s) {
  conn *c = s->data;
  if (c->prev) c->prev->next = c->next; else conns = c->next;
  if (c->next) c->next->prev = c->prev;
  free(c);
}

static void close_conn(conn *c) {
  if (c->closing) return;
  c->closing = 1;
  ursa_stream_close(&c->s, on_close);
}

static void on_read(ursa_stream *s, ssize_t n, const void *buf);

static void on_write(ursa_write_req *req, int status) {
  echo_write *w = req->data;
  conn *c = w->c;
  free(w);
  if (status < 0) {
    close_conn(c);
    return;
  }
  /* Drained below the mark: read again. */
  if (!c->closing && ursa_write_queue_size(&c->s) < HIGH_WATER / 2)
    ursa_read_start(&c->s, on_read); /* -EALREADY when still reading */
}

static void on_shutdown(ursa_stream *s, int status) {
  (void)status;
  close_conn(s->data);
}

static void on_read(ursa_stream *s, ssize_t n, const void *buf) {
  conn *c = s->data;
  if (n < 0) {
    /* EOF: echo what is queued, then shut down our side and close. */
    if (n != URSA_EOF || ursa_shutdown(s, on_shutdown) < 0) close_conn(c);
    return;
  }
  echo_write *w = malloc(sizeof(*w) + (size_t)n);
  if (!w) {
    close_conn(c);
    return;
  }
  memcpy(w->buf, buf, (size_t)n);
  w->c = c;
  w->len = (size_t)n;
  w->req = (ursa_write_req){0};
  w->req.data = w;
  if (ursa_write(&w->req, s, w->buf, w->len, 0, on_write) < 0) {
    free(w);
    close_conn(c);
    return;
  }
  if (ursa_write_queue_size(s) >= HIGH_WATER) ursa_read_stop(s);
}

static void on_connection(ursa_listener *l, int status) {
  if (status < 0) {
    fprintf(stderr, "echo: accept: %s\n", ursa_strerror(status));
    return;
  }
  conn *c = calloc(1, sizeof(*c));
  if (!c) return; /* the connection is closed when we return */
  if (ursa_accept(l, &c->s) < 0) {
    free(c);
    return;
  }
  c->s.data = c;
  c->next = conns;
  if (conns) conns->prev = c;
  conns = c;
  conns_total++;
  ursa_stream_nodelay(&c->s, 1);
  if (ursa_read_start(&c->s, on_read) < 0) close_conn(c);
}

static void on_listener_close(ursa_listener *l) { (void)l; }

/* Every 100 ms: a stop signal pending, or the duration over?  Then close
 * the listener and every connection; the loop ends when all are closed. */
static void on_tick(ursa_timer *t, int status) {
  if (status < 0 || stopping) return;
  struct timespec zero = {0, 0};
  int sig = sigtimedwait(&stop_signals, NULL, &zero);
  if (sig < 0 && !(duration_ms && ursa_loop_now(t->loop) >= (uint64_t)duration_ms))
    return;
  stopping = 1;
  ursa_timer_stop(t);
  if (serving_dgram) {
    ursa_dgram_close(&dsock, on_dclose);
    return;
  }
  ursa_listener_close(&listener, on_listener_close);
  for (conn *c = conns; c; c = c->next) close_conn(c);
}

/* ---- datagrams: each one goes straight back to its sender ---- */

typedef struct dreply {
  ursa_send_req req;
  size_t len;
  char buf[];
} dreply;

static void on_dsent(ursa_send_req *req, int status) {
  (void)status; /* a lost datagram is a datagram's fate */
  free(req->data);
}

static void on_datagram(ursa_dgram *d, ssize_t n, const void *buf,
                        const struct sockaddr *from, socklen_t fromlen,
                        unsigned flags) {
  if (n < 0) {
    fprintf(stderr, "echo: receive: %s\n", ursa_strerror((int)n));
    return;
  }
  if ((flags & URSA_DGRAM_TRUNC) || !from) return; /* never echo a cut one */
  dreply *r = malloc(sizeof(*r) + (size_t)n);
  if (!r) return;
  memcpy(r->buf, buf, (size_t)n);
  r->len = (size_t)n;
  r->req = (ursa_send_req){0};
  r->req.data = r;
  if (ursa_send(&r->req, d, r->buf, r->len, from, fromlen, on_dsent) < 0)
    free(r);
}

static void on_dclose(ursa_dgram *d) { (void)d; }

static void usage(FILE *f) {
  fprintf(f,
          "usage: echo_server [--proto P] [--listen ADDR] [--duration S]\n"
          "  --proto P      tcp (default), udp, unix (stream), seqpacket or\n"
          "                 unixgram\n"
          "  --listen ADDR  127.0.0.1:7000 (default), [::1]:7000, "
          "localhost:7000,\n"
          "                 :7000 (any), unix:/path or unix:@name; port 0 "
          "picks one\n"
          "  --duration S   stop after S seconds (default: at SIGINT or "
          "SIGTERM)\n");
}

int main(int argc, char **argv) {
  const char *listen_at = "127.0.0.1:7000";
  const char *proto = "tcp";
  long duration = 0; /* seconds */
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
      listen_at = argv[++i];
    } else if (!strcmp(argv[i], "--proto") && i + 1 < argc) {
      proto = argv[++i];
    } else if (!strcmp(argv[i], "--duration") && i + 1 < argc) {
      char *end;
      duration = strtol(argv[++i], &end, 10);
      if (*end || duration <= 0) {
        fprintf(stderr, "echo: --duration wants a positive whole number of "
                        "seconds, not '%s'\n", argv[i]);
        return 2;
      }
    } else {
      fprintf(stderr, "echo: unknown or incomplete option '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  int dgram = !strcmp(proto, "udp") || !strcmp(proto, "unixgram");
  unsigned lflags = !strcmp(proto, "seqpacket") ? URSA_SEQPACKET : 0;
  int want_unix = strcmp(proto, "tcp") && strcmp(proto, "udp");
  if (strcmp(proto, "tcp") && strcmp(proto, "unix") && !dgram && !lflags) {
    fprintf(stderr, "echo: unknown --proto '%s' (want tcp, udp, unix, "
                    "seqpacket or unixgram)\n", proto);
    return 2;
  }
  ursa_addr at;
  if (ursa_addr_parse(listen_at, &at) < 0) {
    fprintf(stderr, "echo: bad --listen: %s\n", ursa_error_detail());
    return 2;
  }
  if (want_unix != (at.ss.ss_family == AF_UNIX)) {
    fprintf(stderr, "echo: --proto %s needs %s address, not '%s'\n", proto,
            want_unix ? "a unix:" : "an IP", listen_at);
    return 2;
  }

  ursa_loop *loop;
  /* Buffers big enough for the largest UDP datagram and its header. */
  ursa_loop_options opts = {0};
  if (dgram) opts.buf_size = 65536 + 1024;
  int r = ursa_loop_new(&loop, &opts);
  if (r < 0) {
    char why[512];
    ursa_explain_setup_error(r, why, sizeof(why));
    fprintf(stderr, "echo: cannot start the io_uring loop: %s\n", why);
    return 1;
  }
  struct sockaddr_storage bound;
  socklen_t bl;
  if (dgram) {
    r = ursa_dgram_bind(loop, &dsock, (struct sockaddr *)&at.ss, at.len, 0);
    if (r == 0) r = ursa_recv_start(&dsock, on_datagram);
    if (r == 0) r = ursa_dgram_addr(&dsock, &bound, &bl);
  } else {
    r = ursa_listen(loop, &listener, (struct sockaddr *)&at.ss, at.len, 0,
                    lflags, on_connection);
    if (r == 0) r = ursa_listener_addr(&listener, &bound, &bl);
  }
  if (r < 0) {
    fprintf(stderr, "echo: cannot listen on %s: %s%s%s\n", listen_at,
            ursa_strerror(r), *ursa_error_detail() ? ": " : "",
            ursa_error_detail());
    ursa_loop_close(loop);
    return 2;
  }
  char name[160];
  ursa_addr_format((struct sockaddr *)&bound, bl, name, sizeof(name));
  printf("echo: %s listening on %s\n", proto, name);
  fflush(stdout);

  /* SIGINT/SIGTERM end the run; the tick timer looks for them. */
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigprocmask(SIG_BLOCK, &stop_signals, NULL);
  if (duration) duration_ms = (long)ursa_loop_now(loop) + duration * 1000;
  serving_dgram = dgram;
  ursa_timer_start(loop, &tick, 100, 100, on_tick);
  r = ursa_loop_run(loop, URSA_RUN_DEFAULT);
  if (r < 0) fprintf(stderr, "echo: loop failed: %s\n", ursa_strerror(r));
  ursa_stats st;
  ursa_loop_stats(loop, &st);
  printf("echo: %llu connections, %llu bytes in, %llu bytes out, "
         "%llu io_uring_enter calls, %llu SQEs, %llu CQEs\n",
         conns_total, (unsigned long long)st.bytes_in,
         (unsigned long long)st.bytes_out, (unsigned long long)st.enters,
         (unsigned long long)st.sqes, (unsigned long long)st.cqes);
  int cr = ursa_loop_close(loop);
  if (cr < 0) fprintf(stderr, "echo: loop close: %s\n", ursa_strerror(cr));
  return r < 0 || cr < 0 ? 1 : 0;
}
