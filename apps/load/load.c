/* load.c - ursa-load: an echo load generator on the ursa runtime.  Each
 * connection keeps --inflight messages of --size bytes going; every echoed
 * byte is checked against what was sent, and round-trip times go into a
 * histogram.  Any mismatch or lost reply makes the exit status non-zero. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "apps/common/cli.h"
#include "apps/load/hist.h"
#include "apps/load/http_load.h"
#include "apps/load/udp_bulk.h"
#include "ursa/tls.h"
#include "ursa/ursa.h"

#define PROG "ursa-load"

typedef struct conn conn;

/* One message in flight: its bytes stay put until both the write has
 * completed and the whole echo has come back. */
typedef struct slot {
  ursa_write_req w;
  ursa_tls_write_req tw; /* the same, over TLS */
  ursa_send_req dw; /* the same, for a datagram */
  conn *c;
  uint64_t seq;
  uint64_t sent_ns;
  int writing;
  int waiting; /* for its echo */
  int filled;  /* bulk mode writes the same bytes again: filled once */
  char *buf;
} slot;

struct conn {
  ursa_stream s;
  ursa_tls tls; /* --tls: over s once connected */
  int tls_on;
  int recycle;      /* --reconnect: closing to open again */
  int ever_open;
  uint64_t since;   /* round trips on this connection since it opened */
  uint64_t t0_ns;   /* --greet: when its connect began */
  ursa_dgram d; /* --proto udp: one socket per "connection" */
  int id;
  int connected;
  int closing;
  int closed;
  uint64_t next_seq; /* of the next message to send */
  uint64_t recv_seq; /* of the message being received */
  uint64_t done;     /* round trips completed */
  size_t recv_off;   /* bytes of it received */
  slot *slots;
};

/* What one loop's thread keeps (each has its own with --threads). */
typedef struct load_state {
  ursa_loop *loop;
  ursa_addr to;
  unsigned flags;
  long conns, size, inflight, count;
  double warmup_s, duration_s;
  double connect_timeout_s; /* each connect's bound */
  int bulk; /* one way: write only, the server sinks */
  int idle; /* connect, hold, close: no traffic */
  int udp;  /* datagrams: each message one, matched by number */
  long server_pid;
  double server_cpu0, server_cpu_s;
  uint64_t bytes_written;
  conn *cs;
  int sending; /* 0 once the run is over */
  int measuring;
  uint64_t t_start_ns, t_measure_ns, t_end_ns;
  uint64_t rts, rts_total, bytes;
  uint64_t mismatches, lost, conn_errors, io_errors;
  long open, closed;
  hist h;
  ursa_timer tick;
  double cpu0;
  double cpu_s_own; /* this thread's view of the client's CPU */
  int first_id; /* the connection ids this loop has start here */
  const char *tls_ca, *tls_name; /* --tls */
  int tls, tls_insecure;
  ursa_tls_ctx *tls_ctx; /* this loop's */
  uint64_t handshakes, tls_failed;
  long reconnect;          /* --reconnect N: a new connection every N */
  int greet;               /* --greet: read the greeting to EOF, again */
  const char *greeting;
  size_t greet_len;
  uint64_t opened_measured; /* connections opened in the measured window */
  int index;    /* of its thread */
  int setup_rc; /* 2: it could not start */
} load_state;

static __thread load_state L;

/* CPU time of another process (all its threads), from /proc; -1 if it
 * cannot be read.  Ticks are 10 ms: measure for a second or more. */
double load_proc_cpu_s(long pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  if (!p) return -1;
  unsigned long long ut = 0, stime = 0;
  /* After ")": state, then fields 4..13, then utime (14) and stime (15). */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
             &ut, &stime) != 2)
    return -1;
  return (double)(ut + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* The bytes of message seq on connection id: a pattern that differs by
 * connection, message and position, so a lost, repeated, reordered or
 * altered byte shows. */
static void fill(char *b, size_t n, int id, uint64_t seq) {
  uint64_t x = (seq + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t)(id + 1) << 40;
  for (size_t i = 0; i < n; i++) {
    if (!(i & 7)) x = x * 6364136223846793005ull + 1442695040888963407ull;
    b[i] = (char)(x >> (8 * (i & 7)));
  }
}

static void on_connect(ursa_stream *s, int status);

/* --reconnect: the connection closed on purpose opens again. */
static int reopen(conn *c) {
  if (!c->recycle || !L.sending) return 0;
  c->recycle = c->closing = c->connected = c->tls_on = 0;
  c->since = 0;
  c->recv_off = 0;
  c->s = (ursa_stream){0};
  c->tls = (ursa_tls){0};
  c->s.data = c;
  c->t0_ns = cli_now_ns();
  if (ursa_connect(L.loop, &c->s, (struct sockaddr *)&L.to.ss, L.to.len,
                   L.flags, (uint32_t)(L.connect_timeout_s * 1000 + 0.5),
                   on_connect) < 0) {
    L.conn_errors++;
    c->connected = c->closed = 1;
    return 0;
  }
  return 1;
}

static void on_closed(ursa_handle *h) {
  conn *c = h->data;
  if (reopen(c)) return;
  c->closed = 1;
  L.closed++;
}

static void on_dclosed(ursa_handle *h) {
  conn *c = h->data;
  c->closed = 1;
  L.closed++;
}

static void on_tls_closed(ursa_tls *t) {
  conn *c = t->data;
  if (reopen(c)) return;
  c->closed = 1;
  L.closed++;
}

static void close_conn(conn *c) {
  if (c->closing || !c->connected) return;
  c->closing = 1;
  if (L.udp)
    ursa_dgram_close(&c->d, on_dclosed);
  else if (c->tls_on)
    ursa_tls_close(&c->tls, on_tls_closed);
  else
    ursa_stream_close(&c->s, on_closed);
}

static void send_slot(slot *sl);

static int all_idle(conn *c) {
  for (long k = 0; k < L.inflight; k++)
    if (c->slots[k].writing || c->slots[k].waiting) return 0;
  return 1;
}

static void maybe_next(slot *sl) {
  if (sl->writing || sl->waiting) return;
  conn *c = sl->c;
  if (L.reconnect && L.sending && !c->closing &&
      c->since >= (uint64_t)L.reconnect) {
    if (all_idle(c)) {
      c->recycle = 1;
      close_conn(c);
    }
    return;
  }
  if (L.sending && !c->closing &&
      (!L.count || c->next_seq < (uint64_t)L.count)) {
    send_slot(sl);
  } else if (!L.sending && all_idle(c)) {
    close_conn(c);
  }
}

static void sent(slot *sl, int status, size_t done) {
  sl->writing = 0;
  if (L.bulk && status == 0) {
    sl->waiting = 0; /* nothing comes back in bulk mode */
    if (L.measuring) {
      L.rts++;
      L.bytes += done;
      L.bytes_written += done;
    }
    L.rts_total++;
    sl->c->done++;
  }
  if (status < 0) {
    if (!sl->c->closing) L.io_errors++;
    sl->waiting = 0;
    close_conn(sl->c);
    return;
  }
  maybe_next(sl);
}

static void on_written(ursa_write_req *w, int status) {
  sent(w->data, status, w->done);
}

static void on_tls_sent(ursa_tls_write_req *w, int status) {
  sent(w->data, status, w->len);
}

static void on_dsent(ursa_send_req *q, int status) {
  sent(q->data, status, (size_t)L.size);
}

static void send_slot(slot *sl) {
  conn *c = sl->c;
  sl->seq = c->next_seq++;
  if (!L.bulk || !sl->filled) fill(sl->buf, (size_t)L.size, c->id, sl->seq);
  sl->filled = 1;
  sl->writing = sl->waiting = 1;
  sl->sent_ns = cli_now_ns();
  int r;
  if (L.udp) {
    memcpy(sl->buf, &sl->seq, sizeof(sl->seq)); /* replies are matched by it */
    sl->dw = (ursa_send_req){0};
    sl->dw.data = sl;
    r = ursa_dgram_send(&sl->dw, &c->d, sl->buf, (size_t)L.size, NULL, 0,
                        on_dsent);
  } else if (c->tls_on) {
    sl->tw = (ursa_tls_write_req){0};
    sl->tw.data = sl;
    r = ursa_tls_write(&sl->tw, &c->tls, sl->buf, (size_t)L.size,
                       on_tls_sent);
  } else {
    sl->w = (ursa_write_req){0};
    sl->w.data = sl;
    r = ursa_write(&sl->w, &c->s, sl->buf, (size_t)L.size, 0, on_written);
  }
  if (r < 0) {
    sl->writing = sl->waiting = 0;
    L.io_errors++;
    close_conn(c);
  }
}

/* Message sl came back whole: time it, and send the next in its place. */
static void echoed(slot *sl) {
  if (L.measuring) {
    hist_add(&L.h, cli_now_ns() - sl->sent_ns);
    L.rts++;
    L.bytes += (uint64_t)L.size;
  }
  L.rts_total++;
  sl->c->done++;
  sl->c->since++;
  sl->waiting = 0;
  maybe_next(sl);
}

/* A connection the server ended while the run still wanted it: an error
 * that says so (the first few are named). */
static void ended_early(conn *c, ssize_t why) {
  if (c->closing) return;
  int unfinished = !all_idle(c) ||
                   (L.sending && (!L.count || c->done < (uint64_t)L.count));
  if (!unfinished) return;
  if (L.io_errors++ < 3) {
    char left[64] = "";
    if (L.count)
      snprintf(left, sizeof(left), " after %llu of %ld round trips",
               (unsigned long long)c->done, L.count);
    char what[96];
    if (why == URSA_EOF)
      snprintf(what, sizeof(what), "was closed by the server");
    else if (why == -ECONNRESET || why == -EPIPE)
      snprintf(what, sizeof(what), "was closed by the server (%s)",
               ursa_strerror((int)why));
    else
      snprintf(what, sizeof(what), "failed: %s", ursa_strerror((int)why));
    fprintf(stderr, "ursa-load: connection %d %s%s\n", c->id, what, left);
  }
}

static void got_bytes(conn *c, ssize_t n, const void *buf);

static void on_read(ursa_stream *s, ssize_t n, const void *buf) {
  got_bytes(s->data, n, buf);
}

static void on_tls_read(ursa_tls *t, ssize_t n, const void *buf) {
  got_bytes(t->data, n, buf);
}

/* --greet: the server's greeting, byte for byte, then its EOF; a
 * connection that got it all is one "round trip" and opens again. */
static void greet_bytes(conn *c, ssize_t n, const void *buf) {
  if (n == URSA_EOF && c->recv_off == L.greet_len) {
    if (L.measuring) {
      hist_add(&L.h, cli_now_ns() - c->t0_ns);
      L.rts++;
      L.bytes += L.greet_len;
    }
    L.rts_total++;
    c->done++;
    if (L.sending) c->recycle = 1;
    /* The greeting is all in: close with a reset, so that this side keeps
     * no TIME_WAIT.  Tens of thousands of connections a second would
     * otherwise use up the ephemeral ports within a run (60 s each), and
     * the next run would wait for ports instead of the server. */
    struct linger lg = {1, 0};
    if (c->s.fd >= 0)
      setsockopt(c->s.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close_conn(c);
    return;
  }
  if (n < 0 && n != URSA_EOF) {
    if (L.sending && L.io_errors++ < 3)
      fprintf(stderr, "ursa-load: connection %d: %s before its greeting "
              "ended\n", c->id, ursa_strerror((int)n));
    close_conn(c);
    return;
  }
  if (n == URSA_EOF || c->recv_off + (size_t)n > L.greet_len ||
      memcmp(L.greeting + c->recv_off, buf, (size_t)n) != 0) {
    if (L.mismatches++ < 3)
      fprintf(stderr, "ursa-load: connection %d: the greeting differs from "
              "'%s' (%s at byte %zu)\n", c->id, L.greeting,
              n == URSA_EOF ? "EOF" : "other bytes", c->recv_off);
    close_conn(c);
    return;
  }
  c->recv_off += (size_t)n;
}

static void got_bytes(conn *c, ssize_t n, const void *buf) {
  if (L.greet) {
    greet_bytes(c, n, buf);
    return;
  }
  if (n < 0) {
    ended_early(c, n);
    close_conn(c);
    return;
  }
  const char *p = buf;
  while (n > 0) {
    slot *sl = &c->slots[c->recv_seq % (uint64_t)L.inflight];
    if (!sl->waiting || sl->seq != c->recv_seq) {
      L.mismatches++; /* bytes nobody asked for */
      close_conn(c);
      return;
    }
    size_t take = (size_t)L.size - c->recv_off;
    if ((size_t)n < take) take = (size_t)n;
    if (memcmp(p, sl->buf + c->recv_off, take) != 0) {
      L.mismatches++;
      fprintf(stderr,
              "ursa-load: connection %d message %llu: echoed bytes "
              "differ from those sent\n",
              c->id, (unsigned long long)sl->seq);
      close_conn(c);
      return;
    }
    p += take;
    n -= (ssize_t)take;
    c->recv_off += take;
    if (c->recv_off < (size_t)L.size) break;
    c->recv_off = 0;
    c->recv_seq++;
    echoed(sl); /* a whole message is back */
  }
}

static void on_datagram(ursa_dgram *d, ssize_t n, const void *buf,
                        const struct sockaddr *from, socklen_t fromlen,
                        unsigned flags) {
  conn *c = d->data;
  (void)from;
  (void)fromlen;
  if (n < 0) {
    if (!c->closing) L.io_errors++;
    close_conn(c);
    return;
  }
  uint64_t seq;
  if (n != L.size || (flags & URSA_DGRAM_TRUNC)) {
    L.mismatches++;
    fprintf(stderr,
            "ursa-load: socket %d: a %zd-byte reply to %ld-byte "
            "datagrams\n",
            c->id, n, L.size);
    return;
  }
  memcpy(&seq, buf, sizeof(seq));
  slot *sl = &c->slots[seq % (uint64_t)L.inflight];
  if (!sl->waiting || sl->seq != seq) {
    L.mismatches++; /* a reply nobody waits for: duplicated or made up */
    return;
  }
  if (memcmp(buf, sl->buf, (size_t)n) != 0) {
    L.mismatches++;
    fprintf(stderr,
            "ursa-load: socket %d datagram %llu: echoed bytes differ "
            "from those sent\n",
            c->id, (unsigned long long)seq);
    close_conn(c);
    return;
  }
  echoed(sl);
}

/* A UDP "connection": a socket bound on the loopback (any address when
 * the server is on another host), connected to the server so that only
 * its datagrams arrive. */
static int open_udp(conn *c) {
  ursa_addr local = {0};
  int v6 = L.to.ss.ss_family == AF_INET6;
  int loop = v6 ? IN6_IS_ADDR_LOOPBACK(
                      &((struct sockaddr_in6 *)&L.to.ss)->sin6_addr)
                : (ntohl(((struct sockaddr_in *)&L.to.ss)->sin_addr.s_addr) >>
                   24) == 127;
  const char *any = v6 ? (loop ? "[::1]:0" : "[::]:0")
                       : (loop ? "127.0.0.1:0" : "0.0.0.0:0");
  int r = ursa_addr_parse(any, &local);
  c->d.data = c;
  if (!r)
    r = ursa_dgram_bind(L.loop, &c->d, (struct sockaddr *)&local.ss, local.len,
                        0);
  if (r) return r;
  c->connected = 1;
  if ((r = ursa_dgram_connect(&c->d, (struct sockaddr *)&L.to.ss, L.to.len)) ||
      (r = ursa_dgram_recv_start(&c->d, on_datagram))) {
    fprintf(stderr, "ursa-load: udp socket: %s\n", ursa_strerror(r));
    L.conn_errors++;
    close_conn(c); /* counted as closed when it is */
    return 0;
  }
  L.open++;
  for (long k = 0; k < L.inflight; k++) maybe_next(&c->slots[k]);
  return 0;
}

static void on_tls_hs(ursa_tls *t, int status) {
  conn *c = t->data;
  if (status < 0) {
    L.tls_failed++;
    if (L.conn_errors++ < 3)
      fprintf(stderr, "ursa-load: TLS: %s\n", ursa_tls_error_detail());
    close_conn(c);
    return;
  }
  L.handshakes++;
  if (L.measuring) L.opened_measured++;
  if (ursa_tls_read_start(t, on_tls_read) < 0) {
    L.io_errors++;
    close_conn(c);
    return;
  }
  for (long k = 0; k < L.inflight; k++) maybe_next(&c->slots[k]);
}

static void on_connect(ursa_stream *s, int status) {
  conn *c = s->data;
  c->connected = 1;
  if (status < 0) {
    if (L.conn_errors++ < 3)
      fprintf(stderr, "ursa-load: connect: %s\n", ursa_strerror(status));
    close_conn(c);
    return;
  }
  if (!c->ever_open) { /* a reopened one counts once */
    c->ever_open = 1;
    L.open++;
  }
  if (L.measuring && !L.tls) L.opened_measured++;
  if (L.idle) return;
  if (L.greet) {
    if (ursa_read_start(s, on_read) < 0) {
      L.io_errors++;
      close_conn(c);
    }
    return;
  }
  ursa_stream_nodelay(s, 1);
  if (L.tls) {
    c->tls.data = c;
    if (ursa_tls_start(&c->tls, L.tls_ctx, s, L.tls_name, on_tls_hs) < 0) {
      L.io_errors++;
      close_conn(c);
      return;
    }
    c->tls_on = 1;
    return; /* the rest once the handshake is done */
  }
  if (!L.bulk && ursa_read_start(s, on_read) < 0) {
    L.io_errors++;
    close_conn(c);
    return;
  }
  for (long k = 0; k < L.inflight; k++) maybe_next(&c->slots[k]);
}

static void stop_sending(void) {
  if (!L.sending) return;
  L.sending = 0;
  L.t_end_ns = cli_now_ns();
  L.measuring = 0;
  if (L.server_pid && L.index == 0)
    L.server_cpu_s = load_proc_cpu_s(L.server_pid) - L.server_cpu0;
  for (long i = 0; i < L.conns; i++)
    if (L.cs[i].connected && all_idle(&L.cs[i])) close_conn(&L.cs[i]);
}

/* Every 20 ms: warm-up over?  Run over?  Replies overdue after the run? */
static void on_tick(ursa_timer *t, int status) {
  if (status < 0) return;
  uint64_t now = cli_now_ns();
  uint64_t el = now - L.t_start_ns;
  if (!L.measuring && L.sending && el >= (uint64_t)(L.warmup_s * 1e9)) {
    L.measuring = 1;
    L.t_measure_ns = now;
    L.cpu0 = cli_cpu_s();
    if (L.server_pid && L.index == 0)
      L.server_cpu0 = load_proc_cpu_s(L.server_pid);
  }
  /* With --count: over once every connection has its count or is gone. */
  int count_done = 0;
  if (L.count) {
    count_done = 1;
    for (long i = 0; i < L.conns && count_done; i++)
      if (!L.cs[i].closing && !L.cs[i].closed &&
          L.cs[i].done < (uint64_t)L.count)
        count_done = 0;
  }
  if (L.sending &&
      (count_done || el >= (uint64_t)((L.warmup_s + L.duration_s) * 1e9)))
    stop_sending();
  if (!L.sending && now > L.t_end_ns && now - L.t_end_ns > 2000000000ull) {
    /* Two seconds after the end, what has not come back is lost. */
    for (long i = 0; i < L.conns; i++) {
      conn *c = &L.cs[i];
      for (long k = 0; k < L.inflight; k++)
        if (c->slots[k].waiting) L.lost++;
      close_conn(c);
    }
  }
  if (L.closed == L.conns) ursa_timer_stop(t);
}

/* One loop and its share of the connections, on its own thread (the
 * first on main's).  Fills its load_state; setup_rc 2 when it cannot
 * start, a negative errno when its loop failed. */
static void *run_thread(void *arg) {
  load_state *me = arg;
  L = *me;
  ursa_loop_options lo = {0};
  if (L.udp) lo.buf_size = (unsigned)L.size + 1024; /* header and address */
  int r = ursa_loop_new(&L.loop, &lo);
  if (r < 0) {
    char why[512];
    ursa_explain_setup_error(r, why, sizeof(why));
    fprintf(stderr, "ursa-load: %s\n", why);
    me->setup_rc = 2;
    return NULL;
  }
  if (L.tls) {
    ursa_tls_options to = {0};
    to.ca_file = L.tls_ca;
    to.no_verify = L.tls_insecure;
    if (ursa_tls_ctx_new(&L.tls_ctx, 0, &to) < 0) {
      fprintf(stderr, "ursa-load: --tls: %s\n", ursa_tls_error_detail());
      ursa_loop_close(L.loop);
      me->setup_rc = 2;
      return NULL;
    }
  }
  size_t per = (size_t)L.conns * (size_t)L.inflight;
  L.cs = calloc((size_t)L.conns ? (size_t)L.conns : 1, sizeof(conn));
  char *bufs = malloc(per * (size_t)L.size + 1);
  slot *slots = calloc(per ? per : 1, sizeof(slot));
  if (!L.cs || !bufs || !slots) {
    fprintf(stderr, "ursa-load: not enough memory for %ld x %ld x %ld bytes\n",
            L.conns, L.inflight, L.size);
    me->setup_rc = 2;
    return NULL;
  }
  L.sending = 1;
  L.t_start_ns = cli_now_ns();
  if (L.warmup_s == 0) {
    L.measuring = 1;
    L.t_measure_ns = L.t_start_ns;
    L.cpu0 = cli_cpu_s();
    if (L.server_pid && L.index == 0)
      L.server_cpu0 = load_proc_cpu_s(L.server_pid);
  }
  for (long i = 0; i < L.conns; i++) {
    conn *c = &L.cs[i];
    c->id = L.first_id + (int)i;
    c->slots = slots + i * L.inflight;
    for (long k = 0; k < L.inflight; k++) {
      c->slots[k].c = c;
      c->slots[k].buf = bufs + ((size_t)(i * L.inflight + k)) * (size_t)L.size;
    }
    c->s.data = c;
    c->t0_ns = cli_now_ns();
    if (L.udp)
      r = open_udp(c);
    else
      r = ursa_connect(L.loop, &c->s, (struct sockaddr *)&L.to.ss, L.to.len,
                       L.flags,
                       (uint32_t)(L.connect_timeout_s * 1000 + 0.5),
                       on_connect);
    if (r < 0) {
      fprintf(stderr, "ursa-load: connect: %s\n", ursa_strerror(r));
      L.conn_errors++;
      c->connected = c->closed = 1;
      L.closed++;
    }
  }
  ursa_timer_start(L.loop, &L.tick, 20, 20, on_tick);
  r = ursa_loop_run(L.loop, URSA_RUN_DEFAULT);
  L.cpu_s_own = cli_cpu_s() - L.cpu0;
  if (!L.t_end_ns) L.t_end_ns = cli_now_ns();
  int cr = ursa_loop_close(L.loop);
  ursa_tls_ctx_free(L.tls_ctx);
  free(bufs);
  free(slots);
  free(L.cs);
  L.cs = NULL;
  L.setup_rc = r < 0 ? r : cr < 0 ? cr : 0;
  *me = L;
  return NULL;
}

static void usage(FILE *f) {
  fprintf(
      f,
      "usage: ursa-load ADDR [options]\n"
      "  ADDR                127.0.0.1:7000, [::1]:7000, unix:/path, ...\n"
      "  --proto P           tcp (default), udp, unix or seqpacket\n"
      "  --connections N     connections (default 1)\n"
      "  --size B            bytes per message (default 64)\n"
      "  --inflight K        messages in flight per connection (default 1: "
      "ping-pong)\n"
      "  --duration S        seconds to measure, may be fractional "
      "(default 5)\n"
      "  --count N           or: stop after N round trips per connection\n"
      "  --warmup S          seconds before measuring (default 1)\n"
      "  --bulk              one way: only write (to a --mode sink server);\n"
      "                      with --proto udp: streams of datagrams, each\n"
      "                      echoed, --inflight per peer (--connections)\n"
      "  --gso               udp bulk: send each window with UDP GSO\n"
      "  --http URL          (instead of ADDR) HTTP/1.1 requests to "
      "http://HOST:PORT/PATH\n"
      "                      on --connections keep-alive connections, "
      "--inflight\n"
      "                      pipelined on each, --reconnect N: a new "
      "connection every\n"
      "                      N (the Nth asks for Connection: close); "
      "every response's\n"
      "                      status and framing checked\n"
      "  --http-body N       POST N bytes (default: GET)\n"
      "  --http-json         POST a small JSON document\n"
      "  --http-status N     the status every response must have "
      "(default 200)\n"
      "  --http-length N     the body length every response must have\n"
      "  --http-fragment N   write each request in pieces of N bytes, "
      "each once\n"
      "                      the last has been sent\n"
      "  --batch-waits P     --http: the loop's batched waits, auto "
      "(default),\n"
      "                      always or never\n"
      "  --idle              connect, hold for --duration, close: no "
      "traffic\n"
      "  --connect-timeout S give up on a connect after S seconds "
      "(default 5)\n"
      "  --server-pid PID    also measure that process's CPU time\n"
      "  --tls               over TLS (each connection's handshake first)\n"
      "  --tls-ca FILE       the roots to check the server against (default: "
      "the\n"
      "                      system's); implies --tls\n"
      "  --tls-name NAME     the name checked and sent as SNI (default "
      "localhost)\n"
      "  --tls-insecure      no certificate or name checks\n"
      "  --reconnect N       close each connection after N round trips and "
      "open\n"
      "                      a new one (connections, or TLS handshakes, per "
      "second)\n"
      "  --greet             connect, read the greeting to the server's EOF,"
      " close,\n"
      "                      connect again (to a --mode greet server): "
      "connections/s\n"
      "  --greeting TEXT     the greeting expected (default 'Thank you for "
      "connecting')\n"
      "  --threads N         N loops on threads of their own, the connections "
      "shared\n"
      "                      out (so that the client is not the bottleneck)\n"
      "  --cpu N             pin to CPU N (every thread)\n"
      "  --json FILE         write the results as JSON\n"
      "  -h, --help          this text\n");
}

int main(int argc, char **argv) {
  const char *addr = NULL, *json = NULL, *proto = "tcp";
  long cpu = -1, threads = 1;
  int gso = 0, http_json = 0;
  const char *http_url = NULL;
  long http_body = -1, http_status = 200, http_length = -1, http_frag = 0;
  int batch = URSA_BATCH_AUTO, batch_set = 0;
  L.conns = 1;
  L.size = 64;
  L.inflight = 1;
  L.duration_s = 5;
  L.warmup_s = 1;
  L.connect_timeout_s = 5;
  enum {
    O_CONNS = 256, O_SIZE, O_INFLIGHT, O_DURATION, O_COUNT, O_WARMUP, O_BULK,
    O_IDLE, O_CTIMEOUT, O_SPID, O_CPU, O_JSON, O_PROTO, O_THREADS, O_TLS,
    O_TLSCA, O_TLSINSECURE, O_TLSNAME, O_RECONNECT, O_GREET, O_GREETING,
    O_GSO, O_HTTP, O_HTTPBODY, O_HTTPJSON, O_HTTPSTATUS, O_HTTPLEN,
    O_HTTPFRAG, O_BWAITS
  };
  static const struct option longs[] = {
      {"help", no_argument, NULL, 'h'},
      {"proto", required_argument, NULL, O_PROTO},
      {"connections", required_argument, NULL, O_CONNS},
      {"size", required_argument, NULL, O_SIZE},
      {"inflight", required_argument, NULL, O_INFLIGHT},
      {"duration", required_argument, NULL, O_DURATION},
      {"count", required_argument, NULL, O_COUNT},
      {"warmup", required_argument, NULL, O_WARMUP},
      {"bulk", no_argument, NULL, O_BULK},
      {"gso", no_argument, NULL, O_GSO},
      {"http", required_argument, NULL, O_HTTP},
      {"http-body", required_argument, NULL, O_HTTPBODY},
      {"http-json", no_argument, NULL, O_HTTPJSON},
      {"http-status", required_argument, NULL, O_HTTPSTATUS},
      {"http-length", required_argument, NULL, O_HTTPLEN},
      {"http-fragment", required_argument, NULL, O_HTTPFRAG},
      {"batch-waits", required_argument, NULL, O_BWAITS},
      {"idle", no_argument, NULL, O_IDLE},
      {"connect-timeout", required_argument, NULL, O_CTIMEOUT},
      {"server-pid", required_argument, NULL, O_SPID},
      {"cpu", required_argument, NULL, O_CPU},
      {"json", required_argument, NULL, O_JSON},
      {"threads", required_argument, NULL, O_THREADS},
      {"tls", no_argument, NULL, O_TLS},
      {"tls-ca", required_argument, NULL, O_TLSCA},
      {"tls-insecure", no_argument, NULL, O_TLSINSECURE},
      {"tls-name", required_argument, NULL, O_TLSNAME},
      {"reconnect", required_argument, NULL, O_RECONNECT},
      {"greet", no_argument, NULL, O_GREET},
      {"greeting", required_argument, NULL, O_GREETING},
      {NULL, 0, NULL, 0},
  };
  const char *a, *v;
  int c;
  while ((c = cli_next(PROG, argc, argv, "h", longs, &a, &v)) > 0) {
    int r = 0;
    switch (c) {
      case 'h':
        usage(stdout);
        return 0;
      case O_BULK:
        L.bulk = 1;
        break;
      case O_GSO:
        gso = 1;
        break;
      case O_HTTP:
        http_url = v;
        break;
      case O_HTTPBODY:
        r = cli_long(PROG, a, v, 0, 1L << 30, &http_body);
        break;
      case O_HTTPJSON:
        http_json = 1;
        break;
      case O_HTTPSTATUS:
        r = cli_long(PROG, a, v, 100, 599, &http_status);
        break;
      case O_HTTPLEN:
        r = cli_long(PROG, a, v, 0, 1L << 40, &http_length);
        break;
      case O_HTTPFRAG:
        r = cli_long(PROG, a, v, 1, 1L << 20, &http_frag);
        break;
      case O_BWAITS:
        batch_set = 1;
        r = cli_batch_policy(PROG, a, v, &batch);
        break;
      case O_IDLE:
        L.idle = 1;
        break;
      case O_GREET:
        L.greet = 1;
        break;
      case O_GREETING:
        L.greeting = v;
        break;
      case O_CONNS:
        r = cli_long(PROG, a, v, 1, 100000, &L.conns);
        break;
      case O_SIZE:
        r = cli_long(PROG, a, v, 1, 64 << 20, &L.size);
        break;
      case O_INFLIGHT:
        r = cli_long(PROG, a, v, 1, 1024, &L.inflight);
        break;
      case O_DURATION:
        r = cli_seconds(PROG, a, v, 0.01, 86400, &L.duration_s);
        break;
      case O_COUNT:
        r = cli_long(PROG, a, v, 1, 1000000000, &L.count);
        break;
      case O_WARMUP:
        r = cli_seconds(PROG, a, v, 0, 3600, &L.warmup_s);
        break;
      case O_CTIMEOUT:
        r = cli_seconds(PROG, a, v, 0.001, 3600, &L.connect_timeout_s);
        break;
      case O_SPID:
        r = cli_long(PROG, a, v, 1, 1 << 30, &L.server_pid);
        break;
      case O_CPU:
        r = cli_long(PROG, a, v, 0, CPU_SETSIZE - 1, &cpu);
        break;
      case O_JSON:
        json = v;
        break;
      case O_PROTO:
        proto = v;
        break;
      case O_THREADS:
        r = cli_long(PROG, a, v, 1, 64, &threads);
        break;
      case O_TLS:
        L.tls = 1;
        break;
      case O_TLSCA:
        L.tls = 1;
        L.tls_ca = v;
        break;
      case O_TLSINSECURE:
        L.tls = 1;
        L.tls_insecure = 1;
        break;
      case O_TLSNAME:
        L.tls = 1;
        L.tls_name = v;
        break;
      case O_RECONNECT:
        r = cli_long(PROG, a, v, 1, 1000000000, &L.reconnect);
        break;
    }
    if (r < 0) return 2;
  }
  if (c < 0) {
    usage(stderr);
    return 2;
  }
  if (optind < argc) addr = argv[optind++];
  if (optind < argc) {
    fprintf(stderr, "ursa-load: one address only ('%s' and '%s')\n", addr,
            argv[optind]);
    return 2;
  }
  if ((http_body >= 0 || http_json || http_status != 200 ||
       http_length >= 0 || http_frag || batch_set) && !http_url) {
    fprintf(stderr, "ursa-load: --http-body, --http-json, --http-status, "
            "--http-length, --http-fragment and --batch-waits go with "
            "--http URL\n");
    return 2;
  }
  if (http_url) {
    if (addr || L.bulk || L.idle || L.greet || L.tls || L.count ||
        threads > 1 || strcmp(proto, "tcp") || (http_json && http_body >= 0)) {
      fprintf(stderr, "ursa-load: --http URL takes the place of ADDR, runs "
              "for --duration on one thread over plain TCP, and takes one "
              "of --http-body and --http-json\n");
      return 2;
    }
    if (cpu >= 0 && cli_pin(PROG, cpu) < 0) return 2;
    http_load_opts ho = {http_url, L.conns, L.inflight, L.reconnect,
                         http_body, http_json, (int)http_status,
                         http_length, http_frag, batch, L.warmup_s,
                         L.duration_s, L.server_pid, json};
    return http_load_run(&ho);
  }
  if (!addr) {
    usage(stderr);
    return 2;
  }
  if (ursa_addr_parse(addr, &L.to) < 0) {
    fprintf(stderr, "ursa-load: bad address: %s\n", ursa_error_detail());
    return 2;
  }
  if (!strcmp(proto, "seqpacket")) L.flags = URSA_SEQPACKET;
  L.udp = !strcmp(proto, "udp");
  if (strcmp(proto, "tcp") && strcmp(proto, "unix") && !L.udp && !L.flags) {
    fprintf(stderr,
            "ursa-load: unknown --proto '%s' (want tcp, udp, unix or "
            "seqpacket)\n",
            proto);
    return 2;
  }
  if (gso && !(L.udp && L.bulk)) {
    fprintf(stderr, "ursa-load: --gso is for --proto udp --bulk\n");
    return 2;
  }
  if (L.udp && L.bulk) {
    if (L.size < 8 || L.size > 65507 || L.idle || L.count || L.tls ||
        L.greet || L.reconnect || threads > 1) {
      fprintf(stderr, "ursa-load: --proto udp --bulk takes datagrams of 8 "
              "to 65507 bytes, with --duration, on one thread\n");
      return 2;
    }
    if (L.to.ss.ss_family == AF_UNIX) {
      fprintf(stderr, "ursa-load: --proto udp needs an IP address\n");
      return 2;
    }
    if (cpu >= 0 && cli_pin(PROG, cpu) < 0) return 2;
    udp_bulk_opts uo = {L.to, L.conns, L.inflight, L.size, L.warmup_s,
                        L.duration_s, gso, L.server_pid, json};
    return udp_bulk_run(&uo);
  }
  if (L.udp && (L.bulk || L.idle || L.size < 8 || L.size > 65507)) {
    fprintf(stderr,
            "ursa-load: --proto udp takes echo runs of 8 to 65507 "
            "bytes per datagram\n");
    return 2;
  }
  int ip = !strcmp(proto, "tcp") || L.udp;
  if (ip == (L.to.ss.ss_family == AF_UNIX)) {
    fprintf(stderr, "ursa-load: --proto %s does not fit address '%s'\n", proto,
            addr);
    return 2;
  }
  if (L.reconnect && (L.udp || L.bulk || L.idle || L.count)) {
    fprintf(stderr, "ursa-load: --reconnect is for echo runs over tcp or "
            "unix, with --duration\n");
    return 2;
  }
  if (L.greeting && !*L.greeting) {
    fprintf(stderr, "ursa-load: --greeting must not be empty\n");
    return 2;
  }
  if (L.greeting) L.greet = 1;
  if (L.greet && (L.udp || L.bulk || L.idle || L.tls || L.reconnect ||
                  L.count)) {
    fprintf(stderr, "ursa-load: --greet reads greetings over tcp or unix, "
            "with --duration (not --udp, --bulk, --idle, --tls, "
            "--reconnect or --count)\n");
    return 2;
  }
  if (L.greet && !L.greeting) L.greeting = "Thank you for connecting";
  if (L.greet) L.greet_len = strlen(L.greeting);
  if (L.tls && (L.udp || L.bulk || L.idle)) {
    fprintf(stderr, "ursa-load: --tls drives echo runs over tcp or unix\n");
    return 2;
  }
  if (L.tls && !L.tls_name && !L.tls_insecure) L.tls_name = "localhost";
  if (L.count) L.duration_s = 86400;
  if (cpu >= 0 && cli_pin(PROG, cpu) < 0) return 2;
  if (threads > L.conns) threads = L.conns;
  /* The buffers take connections x in flight x size bytes: refuse a
   * product over the machine's memory before asking for it. */
  size_t per = 0, total = 0;
  uint64_t phys = (uint64_t)sysconf(_SC_PHYS_PAGES) *
                  (uint64_t)sysconf(_SC_PAGESIZE);
  if (__builtin_mul_overflow((size_t)L.conns, (size_t)L.inflight, &per) ||
      __builtin_mul_overflow(per, (size_t)L.size, &total) || total > phys) {
    fprintf(stderr,
            "ursa-load: --connections x --inflight x --size = %ld x %ld x "
            "%ld bytes is more than this machine's memory (%llu MiB)\n",
            L.conns, L.inflight, L.size, (unsigned long long)(phys >> 20));
    return 2;
  }
  /* Each thread a loop of its own with its share of the connections. */
  load_state cfg = L;
  load_state *ls = calloc((size_t)threads, sizeof(*ls));
  pthread_t *th = calloc((size_t)threads, sizeof(*th));
  if (!ls || !th) {
    fprintf(stderr, "ursa-load: out of memory\n");
    return 2;
  }
  double cpu_all0 = cli_cpu_s();
  long given = 0;
  for (int t = 0; t < threads; t++) {
    ls[t] = cfg;
    ls[t].index = t;
    ls[t].first_id = (int)given;
    ls[t].conns = cfg.conns / threads + (t < cfg.conns % threads);
    given += ls[t].conns;
    if (t > 0 && pthread_create(&th[t], NULL, run_thread, &ls[t]) != 0) {
      fprintf(stderr, "ursa-load: cannot start thread %d\n", t);
      return 2;
    }
  }
  run_thread(&ls[0]);
  for (int t = 1; t < threads; t++) pthread_join(th[t], NULL);
  int r = 0;
  for (int t = 0; t < threads; t++)
    if (ls[t].setup_rc) return ls[t].setup_rc;
  /* Sums over the threads; the measured time is the longest one's. */
  L = ls[0];
  L.conns = cfg.conns;
  for (int t = 1; t < threads; t++) {
    load_state *o = &ls[t];
    L.rts += o->rts;
    L.rts_total += o->rts_total;
    L.bytes += o->bytes;
    L.mismatches += o->mismatches;
    L.lost += o->lost;
    L.conn_errors += o->conn_errors;
    L.io_errors += o->io_errors;
    L.handshakes += o->handshakes;
    L.opened_measured += o->opened_measured;
    L.tls_failed += o->tls_failed;
    L.open += o->open;
    hist_merge(&L.h, &o->h);
    if (o->t_measure_ns && (!L.t_measure_ns || o->t_measure_ns < L.t_measure_ns))
      L.t_measure_ns = o->t_measure_ns;
    if (o->t_end_ns > L.t_end_ns) L.t_end_ns = o->t_end_ns;
    if (o->setup_rc < 0) L.setup_rc = o->setup_rc;
  }
  r = L.setup_rc;
  free(ls);
  free(th);
  /* One thread: its own CPU from the end of its warm-up; several: the
   * process's, warm-up included. */
  double cpu_s = threads == 1 ? L.cpu_s_own : cli_cpu_s() - cpu_all0;
  if (!L.t_end_ns) L.t_end_ns = cli_now_ns();
  /* A run that ended in its warm-up measured nothing. */
  int measured = L.t_measure_ns != 0;
  double secs = measured ? (double)(L.t_end_ns - L.t_measure_ns) / 1e9 : 0;
  double div = secs > 0 ? secs : 1e-9;
  uint64_t errors = L.mismatches + L.lost + L.conn_errors + L.io_errors;
  if (L.idle && L.open < L.conns) errors += (uint64_t)(L.conns - L.open);
  double rps = (double)L.rts / div;
  double mbps = (double)L.bytes / div / 1e6;
  double p50 = hist_quantile(&L.h, 0.50) / 1e3,
         p90 = hist_quantile(&L.h, 0.90) / 1e3,
         p99 = hist_quantile(&L.h, 0.99) / 1e3,
         p999 = hist_quantile(&L.h, 0.999) / 1e3,
         p9999 = hist_quantile(&L.h, 0.9999) / 1e3,
         mx = (double)L.h.max / 1e3;
  printf(
      "ursa-load: %s, %ld connections (%ld connected) x %ld in flight, "
      "%ld-byte messages, %.2f s measured%s\n",
      L.bulk    ? "bulk"
      : L.idle  ? "idle"
      : L.greet ? "greet"
                : "echo",
      L.conns, L.open, L.inflight, L.size, secs,
      measured ? "" : " (the run ended in its warm-up: nothing measured)");
  printf("  %llu round trips, %.0f round trips/s, %.2f MB/s each way\n",
         (unsigned long long)L.rts, rps, mbps);
  double cps = (double)L.opened_measured / div;
  if (L.reconnect || L.greet)
    printf("  %llu %s in the measured time, %.0f/s\n",
           (unsigned long long)L.opened_measured,
           L.tls ? "TLS handshakes" : "connections", cps);
  printf(
      "  latency us: p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  p99.99 %.1f  "
      "max %.1f\n",
      p50, p90, p99, p999, p9999, mx);
  printf(
      "  errors: %llu (mismatched %llu, lost %llu, connect %llu, i/o %llu); "
      "client CPU %.3f s\n",
      (unsigned long long)errors, (unsigned long long)L.mismatches,
      (unsigned long long)L.lost, (unsigned long long)L.conn_errors,
      (unsigned long long)L.io_errors, cpu_s);
  if (json) {
    FILE *f = fopen(json, "w");
    if (!f) {
      fprintf(stderr, "ursa-load: cannot write %s: %s\n", json,
              strerror(errno));
    } else {
      fprintf(f,
              "{\"conns\":%ld,\"inflight\":%ld,\"size\":%ld,\"seconds\":%.4f,"
              "\"round_trips\":%llu,\"rt_per_s\":%.1f,\"mb_per_s\":%.3f,"
              "\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,"
              "\"p999_us\":%.2f,\"p9999_us\":%.2f,\"max_us\":%.2f,"
              "\"errors\":%llu,"
              "\"mismatched\":%llu,\"lost\":%llu,\"connect_errors\":%llu,"
              "\"io_errors\":%llu,\"client_cpu_s\":%.4f,"
              "\"round_trips_total\":%llu,\"server_cpu_s\":%.4f,"
              "\"connected\":%ld,\"handshakes\":%llu,\"tls_failed\":%llu,"
              "\"opened_per_s\":%.1f,"
              "\"mode\":\"%s\"}\n",
              L.conns, L.inflight, L.size, secs, (unsigned long long)L.rts, rps,
              mbps, p50, p90, p99, p999, p9999, mx, (unsigned long long)errors,
              (unsigned long long)L.mismatches, (unsigned long long)L.lost,
              (unsigned long long)L.conn_errors,
              (unsigned long long)L.io_errors, cpu_s,
              (unsigned long long)L.rts_total,
              L.server_pid ? L.server_cpu_s : -1.0, L.open,
              (unsigned long long)L.handshakes,
              (unsigned long long)L.tls_failed,
              (double)L.opened_measured / div,
              L.bulk    ? "bulk"
              : L.idle  ? "idle"
              : L.greet ? "greet"
                        : "echo");
      fclose(f);
    }
  }
  if (r < 0) {
    fprintf(stderr, "ursa-load: event loop failed: %s\n", ursa_strerror(r));
    return 1;
  }
  /* A non-zero exit always says why on stderr: callers that keep only
   * stderr (the bench) must not be left with a bare status. */
  if (errors) {
    fprintf(stderr,
            "ursa-load: %llu errors (mismatched %llu, lost %llu, connect "
            "%llu, i/o %llu)\n",
            (unsigned long long)errors, (unsigned long long)L.mismatches,
            (unsigned long long)L.lost, (unsigned long long)L.conn_errors,
            (unsigned long long)L.io_errors);
    return 1;
  }
  if (L.rts_total == 0 && !L.idle) {
    fprintf(stderr, "ursa-load: no message completed a round trip\n");
    return 1;
  }
  return 0;
}
