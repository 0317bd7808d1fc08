/* echo_server.c - a TCP echo server on ursa: the smallest complete program
 * that uses the runtime (listen, accept, read, write, backpressure, close). */
#include <arpa/inet.h>
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
  ursa_listener_close(&listener, on_listener_close);
  for (conn *c = conns; c; c = c->next) close_conn(c);
}

static int parse_addr(const char *s, struct sockaddr_storage *ss,
                      socklen_t *len) {
  char host[64];
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s || strlen(s) >= sizeof(host)) return -1;
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || end == colon + 1 || port < 0 || port > 65535) return -1;
  size_t hl = (size_t)(colon - s);
  memcpy(host, s, hl);
  host[hl] = '\0';
  memset(ss, 0, sizeof(*ss));
  if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
    host[hl - 1] = '\0';
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1) return -1;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    *len = sizeof(*a);
    return 0;
  }
  struct sockaddr_in *a = (struct sockaddr_in *)ss;
  if (inet_pton(AF_INET, host, &a->sin_addr) != 1) return -1;
  a->sin_family = AF_INET;
  a->sin_port = htons((uint16_t)port);
  *len = sizeof(*a);
  return 0;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: echo_server [--listen ADDR] [--duration SECONDS]\n"
          "  --listen ADDR      IPv4 a.b.c.d:PORT or IPv6 [::1]:PORT "
          "(default 127.0.0.1:7000; port 0 picks one)\n"
          "  --duration SECONDS stop after this long (default: run until "
          "SIGINT/SIGTERM)\n");
}

int main(int argc, char **argv) {
  const char *listen_at = "127.0.0.1:7000";
  long duration = 0; /* seconds */
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(argv[i], "--listen") && i + 1 < argc) {
      listen_at = argv[++i];
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
  struct sockaddr_storage ss;
  socklen_t len;
  if (parse_addr(listen_at, &ss, &len) < 0) {
    fprintf(stderr, "echo: bad listen address '%s' (want a.b.c.d:PORT or "
                    "[v6]:PORT with PORT 0-65535)\n", listen_at);
    return 2;
  }

  ursa_loop *loop;
  int r = ursa_loop_new(&loop, NULL);
  if (r < 0) {
    char why[512];
    ursa_explain_setup_error(r, why, sizeof(why));
    fprintf(stderr, "echo: cannot start the io_uring loop: %s\n", why);
    return 1;
  }
  r = ursa_listen(loop, &listener, (struct sockaddr *)&ss, len, 0, 0,
                  on_connection);
  if (r < 0) {
    fprintf(stderr, "echo: cannot listen on %s: %s\n", listen_at,
            ursa_strerror(r));
    ursa_loop_close(loop);
    return 2;
  }
  struct sockaddr_storage bound;
  socklen_t bl;
  ursa_listener_addr(&listener, &bound, &bl);
  char host[INET6_ADDRSTRLEN];
  uint16_t port;
  if (bound.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&bound;
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    port = ntohs(a->sin6_port);
    printf("echo: listening on [%s]:%u\n", host, port);
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&bound;
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    port = ntohs(a->sin_port);
    printf("echo: listening on %s:%u\n", host, port);
  }
  fflush(stdout);

  /* SIGINT/SIGTERM end the run; the tick timer looks for them. */
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigprocmask(SIG_BLOCK, &stop_signals, NULL);
  if (duration) duration_ms = (long)ursa_loop_now(loop) + duration * 1000;
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
