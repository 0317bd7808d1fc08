/* main.c - ursa-echo-server: one command line, five I/O models (uring,
 * epoll, select, blocking, libuv), the same wire behaviour, and a summary
 * of what each spent (CPU time, system calls) for the bench suite to
 * compare. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "apps/common/cli.h"
#include "apps/server/server.h"

#define PROG "ursa-echo-server"

/* The servers, as data: uring and ursa-epoll are the same server on the
 * library, forced to one backend; "auto" is the library's choice
 * (resolved in main).  The bench and the app tests read this table
 * (--list-backends --json) instead of lists of their own. */
#define LIB_CAPS                                                        \
  (CAP_THREADS | CAP_ANY_PROTO_THREADS | CAP_DISPATCH | CAP_TLS |       \
   CAP_WORKERS | CAP_MESSAGES | CAP_OWN_LISTENER | CAP_LIB | CAP_UDP_OFFLOAD)
static const backend backends[] = {
    {"uring", serve_uring, LIB_CAPS, URSA_BACKEND_URING,
     "this runtime on io_uring"},
    {"ursa-epoll", serve_uring, LIB_CAPS, URSA_BACKEND_EPOLL,
     "the same server on the library's epoll backend"},
    {"epoll", serve_epoll, CAP_THREADS | CAP_TLS, 0,
     "hand-written, level-triggered, non-blocking"},
    {"select", serve_select, 0, 0, "the same loop over select(2)"},
    {"blocking", serve_blocking, 0, 0, "a thread per connection"},
    {"libuv", serve_libuv, CAP_OWN_LISTENER, 0, "libuv's loop"},
    {"mmsg", serve_mmsg, CAP_UDP_ONLY, 0,
     "udp only: recvmmsg with GRO in, sendmmsg with GSO out"},
};
#define NBACKENDS (sizeof(backends) / sizeof(backends[0]))

static const struct {
  unsigned cap;
  const char *name;
} cap_names[] = {
    {CAP_THREADS, "threads"},   {CAP_ANY_PROTO_THREADS, "threads_any_proto"},
    {CAP_DISPATCH, "dispatch"}, {CAP_TLS, "tls"},
    {CAP_WORKERS, "workers"},   {CAP_MESSAGES, "messages"},
    {CAP_OWN_LISTENER, "own_listener"}, {CAP_LIB, "library"},
    {CAP_UDP_OFFLOAD, "udp_offload"}, {CAP_UDP_ONLY, "udp_only"},
};

/* "uring, ursa-epoll and epoll": the servers that have cap. */
static void names_with(unsigned cap, char *buf, size_t len) {
  size_t n = 0, left = 0;
  buf[0] = 0;
  for (unsigned i = 0; i < NBACKENDS; i++) left += (backends[i].caps & cap) == cap;
  for (unsigned i = 0; i < NBACKENDS && n < len; i++) {
    if ((backends[i].caps & cap) != cap) continue;
    left--;
    n += (size_t)snprintf(buf + n, len - n, "%s%s",
                          n == 0 ? "" : left == 0 ? " and " : ", ",
                          backends[i].name);
  }
}

static void list_backends(int json) {
  if (json) printf("[");
  for (unsigned i = 0; i < NBACKENDS; i++) {
    const backend *b = &backends[i];
    if (json) {
      printf("%s{\"name\":\"%s\",\"about\":\"%s\",\"caps\":[", i ? "," : "",
             b->name, b->about);
      int first = 1;
      for (unsigned c = 0; c < sizeof(cap_names) / sizeof(cap_names[0]); c++)
        if (b->caps & cap_names[c].cap) {
          printf("%s\"%s\"", first ? "" : ",", cap_names[c].name);
          first = 0;
        }
      printf("]}");
    } else {
      printf("%-11s %s\n", b->name, b->about);
    }
  }
  if (json) printf("]\n");
}

static const char *const proto_names[] = {"tcp", "udp", "unix", "seqpacket",
                                          "unixgram"};

uint64_t now_ms(void) { return cli_now_ns() / 1000000u; }

void announce(const server_opts *o, const struct sockaddr *sa, socklen_t len) {
  char name[160];
  ursa_addr_format(sa, len, name, sizeof(name));
  printf("server: %s %s listening on %s\n", o->backend, proto_names[o->proto],
         name);
  fflush(stdout);
}

int past_deadline(const server_opts *o) {
  return o->deadline_ms && now_ms() >= o->deadline_ms;
}

int should_stop(const server_opts *o, server_stats *st) {
  if (past_deadline(o)) return 1;
  struct pollfd p = {o->stop_fd, POLLIN, 0};
  /* Atomic: the blocking backend's threads count into the same field. */
  __atomic_fetch_add(&st->syscalls, 1, __ATOMIC_RELAXED);
  return poll(&p, 1, 0) > 0;
}

int clock_slow(const server_opts *o, conn_clock *k, uint64_t now) {
  if (!o->min_rate || now - k->win_ms < o->idle_ms) return 0;
  /* Bytes owed over the window that just ended, at min_rate per s. */
  if (k->win_bytes * 1000 < o->min_rate * (now - k->win_ms)) return 1;
  k->win_ms = now;
  k->win_bytes = 0;
  return 0;
}

int clock_expired(const server_opts *o, conn_clock *k, uint64_t now) {
  if (o->idle_ms && now - k->last_ms >= o->idle_ms) return 1;
  return clock_slow(o, k, now);
}

uint64_t clock_sweep_ms(const server_opts *o) {
  uint64_t p = o->idle_ms / 4;
  return p < 10 ? 10 : p > 250 ? 250 : p;
}

/* What --uring-enable takes: the library's opt-in features, and direct
 * descriptors (ursa_loop_options.direct_files), which greet mode leaves
 * off unless asked. */
#define OPT_IN (URSA_FEAT_OPT_IN | URSA_FEAT_DIRECT_FILES)

static void usage(FILE *f) {
  char opt_in[128];
  ursa_feature_list(OPT_IN, opt_in, sizeof(opt_in));
  fprintf(
      f,
      "usage: ursa-echo-server [options]\n"
      "       ursa-echo-server --list-backends [--json]\n"
      "  --list-backends  list the servers --backend takes, and exit\n"
      "  --json           with --list-backends: name, about and capabilities\n"
      "                   of each, as JSON\n"
      "  --backend B      uring (default), ursa-epoll (the same server on the\n"
      "                   library's epoll backend), epoll (hand-written),\n"
      "                   select, blocking, libuv, or auto (the library's\n"
      "                   choice: uring, else ursa-epoll where io_uring is\n"
      "                   blocked)\n"
      "  --listen ADDR    127.0.0.1:7000 (default), [::1]:7000, "
      "localhost:7000,\n"
      "                   :7000 (any), unix:/path or unix:@name; port 0 "
      "picks one\n"
      "  --proto P        tcp (default), udp, unix; uring also seqpacket "
      "and unixgram\n"
      "  --mode M         echo (default), greet (\"" GREETING
      "\", then "
      "close)\n"
      "                   or sink (read and discard: the bulk-stream case)\n"
      "  --cpu N          pin the server to CPU N\n"
      "  --duration S     stop after S seconds (default: at SIGINT/SIGTERM)\n"
      "  --max-conns N    close connections beyond N at once\n"
      "  --idle-timeout S close a connection that sends nothing for S "
      "seconds\n"
      "                   (nor takes its replies while reading waits on "
      "it)\n"
      "  --min-rate B     with --idle-timeout: close a connection that sends "
      "fewer\n"
      "                   than B bytes/s over a window of that length "
      "(slowloris)\n"
      "  --stats-json F   write the summary as JSON to F\n"
      "  --uring-disable LIST  io_uring features to leave off, comma "
      "separated\n"
      "                   (multishot_recv,multishot_accept,defer_taskrun,...)\n"
      "  --uring-enable LIST  opt-in io_uring features to use: %s\n"
      "                   (greet mode's connections are plain by default)\n"
      "  --batch-waits P  uring: when a wait asks for a batch of "
      "completions:\n"
      "                   auto (default: while arrivals keep up, with 8 "
      "or more\n"
      "                   connections), always or never\n"
      "  --batch-wait US  uring, batched waits: the longest a completion "
      "waits for a\n"
      "                   batch (1-10000 us, default 200)\n"
      "  --write-batch N  uring: queued writes one send may carry (1-8)\n"
      "  --buf-count N    uring: receive buffers in the ring (power of two, "
      "default 256)\n"
      "  --buf-size B     uring: bytes per receive buffer (default 16384)\n"
      "  --zc-threshold B uring: send writes of B bytes and more with "
      "SEND_ZC\n"
      "                   (default: never; echoes are at most --buf-size)\n"
      "  --threads N      uring, ursa-epoll, epoll: N loops, each on a thread "
      "of its own\n"
      "                   (--max-conns then counts them all)\n"
      "  --dispatch D     with --threads: reuseport (default: a listener per "
      "loop,\n"
      "                   the kernel spreads connections), handoff (one "
      "acceptor\n"
      "                   hands them out in turn) or fewest (to the loop "
      "with the\n"
      "                   fewest open); epoll: reuseport only\n"
      "  --tls-cert F     uring, ursa-epoll, epoll (OpenSSL on the socket): "
      "serve\n"
      "                   TLS (echo, sink) with this "
      "PEM\n"
      "                   certificate chain\n"
      "  --tls-key F      and this key\n"
      "  --workers N      uring, ursa-epoll: hand each message to one of N "
      "worker\n"
      "                   threads (a connection's always to the same one) "
      "and write\n"
      "                   its reply from the loop once the worker posts it "
      "back\n"
      "  --echo-copy      uring: copy each echo instead of sending it from "
      "the\n"
      "                   receive buffer (for A/B runs)\n"
      "  --gro            uring, ursa-epoll with --proto udp: coalesced "
      "receives\n"
      "                   (UDP_GRO); each datagram is echoed alone\n"
      "  --large-bufs N   with --gro: 64 KiB receive buffers (power of two "
      "up to 4096,\n"
      "                   default 64)\n"
      "  --gso            with --gro: a coalesced receive is echoed as one "
      "GSO send;\n"
      "                   alone: a round's echoes to one peer leave as one "
      "GSO send\n"
      "                   (mmsg does both always)\n"
      "  --high-water B   bytes queued for a peer before reading pauses\n"
      "                   (default 1 MiB; uring and libuv; epoll and select\n"
      "                   hold one receive at most, blocking blocks)\n"
      "  -h, --help       this text\n",
      opt_in);
}

static int bad(const char *fmt, const char *a, const char *b) {
  fprintf(stderr, "ursa-echo-server: ");
  fprintf(stderr, fmt, a, b);
  fprintf(stderr, "\n");
  return 2;
}

void udp_buffers(int fd) {
  int big = UDP_SOCKET_BUFFER;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
}

/* The listening (or datagram) socket for the backends that use plain
 * sockets. */
static int open_listener(const server_opts *o, ursa_sockfile *file,
                         char *err, size_t errlen) {
  int dgram = o->proto == PROTO_UDP;
  int type = dgram ? SOCK_DGRAM : SOCK_STREAM;
  int fd = socket(o->listen.ss.ss_family, type | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    snprintf(err, errlen, "%s", strerror(errno));
    return -1;
  }
  int one = 1, zero = 0;
  if (o->listen.ss.ss_family != AF_UNIX)
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (o->listen.ss.ss_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  /* --threads: every loop's listener shares the address. */
  if (o->threads > 1)
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (dgram) udp_buffers(fd);
  /* The library's rules for socket files: a stale one is replaced, a live
   * one (even with a full backlog) refused, at once. */
  int r = ursa_socket_bind(fd, (const struct sockaddr *)&o->listen.ss,
                           o->listen.len, dgram ? -1 : 0, file);
  if (r < 0) {
    snprintf(err, errlen, "%s%s%s", ursa_strerror(r),
             r == -EADDRINUSE || r == -EEXIST ? ": " : "",
             r == -EADDRINUSE || r == -EEXIST ? ursa_error_detail() : "");
    close(fd);
    return -1;
  }
  return fd;
}

static void write_json(const char *path, const server_opts *o,
                       const server_stats *s, double cpu_s, double wall_s,
                       const char *addr) {
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "ursa-echo-server: cannot write %s: %s\n", path,
            strerror(errno));
    return;
  }
  fprintf(f,
          "{\"backend\":\"%s\",\"proto\":\"%s\",\"mode\":\"%s\","
          "\"listen\":\"%s\",\"connections\":%llu,\"refused\":%llu,"
          "\"timed_out\":%llu,"
          "\"bytes_in\":%llu,\"bytes_out\":%llu,\"reads\":%llu,"
          "\"round_trips\":%llu,"
          "\"syscalls\":%lld,\"enters\":%llu,\"batch_waits\":%llu,"
          "\"sqes\":%llu,"
          "\"enobufs\":%llu,\"handshakes\":%llu,\"tls_failed\":%llu,"
          "\"cpu_s\":%.6f,\"wall_s\":%.3f}\n",
          o->backend, proto_names[o->proto],
          o->mode == MODE_GREET  ? "greet"
          : o->mode == MODE_SINK ? "sink"
                                 : "echo",
          addr, (unsigned long long)s->connections,
          (unsigned long long)s->refused, (unsigned long long)s->timed_out,
          (unsigned long long)s->bytes_in,
          (unsigned long long)s->bytes_out, (unsigned long long)s->reads,
          (unsigned long long)(o->mode == MODE_ECHO ? s->reads : 0),
          s->syscalls == UINT64_MAX ? -1LL : (long long)s->syscalls,
          (unsigned long long)s->enters,
          (unsigned long long)s->batch_waits, (unsigned long long)s->sqes,
          (unsigned long long)s->enobufs, (unsigned long long)s->handshakes,
          (unsigned long long)s->tls_failed, cpu_s, wall_s);
  fclose(f);
}

int main(int argc, char **argv) {
  server_opts o = {0};
  o.backend = "uring";
  o.high_water = HIGH_WATER;
  const char *listen_at = "127.0.0.1:7000", *json = NULL, *proto = "tcp";
  long cpu = -1, duration = 0, max_conns = 0;
  int dispatch_set = 0, list = 0, list_json = 0;
  enum {
    O_BACKEND = 256, O_LISTEN, O_PROTO, O_MODE, O_CPU, O_DURATION,
    O_MAXCONNS, O_IDLE, O_MINRATE, O_JSON, O_HIGHWATER, O_BUFCOUNT, O_LARGEBUFS,
    O_BUFSIZE, O_ZC, O_WBATCH, O_BWAIT, O_BWAITS, O_DISABLE, O_ENABLE, O_ECHOCOPY, O_GRO, O_GSO, O_THREADS,
    O_DISPATCH, O_WORKERS, O_TLSCERT, O_TLSKEY, O_LIST, O_LISTJSON
  };
  static const struct option longs[] = {
      {"help", no_argument, NULL, 'h'},
      {"list-backends", no_argument, NULL, O_LIST},
      {"json", no_argument, NULL, O_LISTJSON},
      {"backend", required_argument, NULL, O_BACKEND},
      {"listen", required_argument, NULL, O_LISTEN},
      {"proto", required_argument, NULL, O_PROTO},
      {"mode", required_argument, NULL, O_MODE},
      {"cpu", required_argument, NULL, O_CPU},
      {"duration", required_argument, NULL, O_DURATION},
      {"max-conns", required_argument, NULL, O_MAXCONNS},
      {"idle-timeout", required_argument, NULL, O_IDLE},
      {"min-rate", required_argument, NULL, O_MINRATE},
      {"stats-json", required_argument, NULL, O_JSON},
      {"uring-disable", required_argument, NULL, O_DISABLE},
      {"uring-enable", required_argument, NULL, O_ENABLE},
      {"write-batch", required_argument, NULL, O_WBATCH},
      {"batch-wait", required_argument, NULL, O_BWAIT},
      {"batch-waits", required_argument, NULL, O_BWAITS},
      {"buf-count", required_argument, NULL, O_BUFCOUNT},
      {"large-bufs", required_argument, NULL, O_LARGEBUFS},
      {"buf-size", required_argument, NULL, O_BUFSIZE},
      {"zc-threshold", required_argument, NULL, O_ZC},
      {"echo-copy", no_argument, NULL, O_ECHOCOPY},
      {"gro", no_argument, NULL, O_GRO},
      {"gso", no_argument, NULL, O_GSO},
      {"high-water", required_argument, NULL, O_HIGHWATER},
      {"threads", required_argument, NULL, O_THREADS},
      {"dispatch", required_argument, NULL, O_DISPATCH},
      {"workers", required_argument, NULL, O_WORKERS},
      {"tls-cert", required_argument, NULL, O_TLSCERT},
      {"tls-key", required_argument, NULL, O_TLSKEY},
      {NULL, 0, NULL, 0},
  };
  const char *a, *v;
  int c;
  while ((c = cli_next(PROG, argc, argv, "h", longs, &a, &v)) > 0) {
    long n;
    double sec;
    switch (c) {
      case 'h':
        usage(stdout);
        return 0;
      case O_ECHOCOPY:
        o.echo_copy = 1;
        break;
      case O_GRO:
        o.gro = 1;
        break;
      case O_GSO:
        o.gso = 1;
        break;
      case O_THREADS:
        if (cli_long(PROG, a, v, 1, MAX_THREADS, &n) < 0) return 2;
        o.threads = (int)n;
        break;
      case O_TLSCERT:
        o.tls_cert = v;
        break;
      case O_TLSKEY:
        o.tls_key = v;
        break;
      case O_WORKERS:
        if (cli_long(PROG, a, v, 1, MAX_THREADS, &n) < 0) return 2;
        o.workers = (int)n;
        break;
      case O_DISPATCH:
        if (!strcmp(v, "reuseport"))
          o.dispatch = DISPATCH_REUSEPORT;
        else if (!strcmp(v, "handoff"))
          o.dispatch = DISPATCH_HANDOFF;
        else if (!strcmp(v, "fewest"))
          o.dispatch = DISPATCH_FEWEST;
        else
          return bad("unknown --dispatch '%s' (want reuseport, handoff or "
                     "fewest)%s", v, "");
        dispatch_set = 1;
        break;
      case O_LIST:
        list = 1;
        break;
      case O_LISTJSON:
        list_json = 1;
        break;
      case O_BACKEND:
        o.backend = v;
        break;
      case O_LISTEN:
        listen_at = v;
        break;
      case O_PROTO:
        proto = v;
        break;
      case O_MODE:
        if (!strcmp(v, "echo"))
          o.mode = MODE_ECHO;
        else if (!strcmp(v, "greet"))
          o.mode = MODE_GREET;
        else if (!strcmp(v, "sink"))
          o.mode = MODE_SINK;
        else
          return bad("unknown --mode '%s' (want echo, greet or sink)%s", v,
                     "");
        break;
      case O_CPU:
        if (cli_long(PROG, a, v, 0, CPU_SETSIZE - 1, &cpu) < 0) return 2;
        break;
      case O_DURATION:
        if (cli_long(PROG, a, v, 1, 86400 * 365, &duration) < 0) return 2;
        break;
      case O_MAXCONNS:
        if (cli_long(PROG, a, v, 1, 10000000, &max_conns) < 0) return 2;
        break;
      case O_IDLE:
        if (cli_seconds(PROG, a, v, 0.01, 86400, &sec) < 0) return 2;
        o.idle_ms = (uint64_t)(sec * 1000 + 0.5);
        break;
      case O_MINRATE:
        if (cli_long(PROG, a, v, 1, 1L << 30, &n) < 0) return 2;
        o.min_rate = (uint64_t)n;
        break;
      case O_JSON:
        json = v;
        break;
      case O_HIGHWATER:
        if (cli_long(PROG, a, v, 4096, 1L << 30, &n) < 0) return 2;
        o.high_water = (size_t)n;
        break;
      case O_LARGEBUFS:
        if (cli_long(PROG, a, v, 1, 4096, &n) < 0) return 2;
        if (n & (n - 1))
          return bad("--large-bufs %s is not a power of two%s", v, "");
        o.large_bufs = (unsigned)n;
        break;
      case O_BUFCOUNT:
        if (cli_long(PROG, a, v, 1, 32768, &n) < 0) return 2;
        if (n & (n - 1))
          return bad("--buf-count %s is not a power of two%s", v, "");
        o.buf_count = (unsigned)n;
        break;
      case O_ZC:
        if (cli_long(PROG, a, v, 1, 1L << 30, &n) < 0) return 2;
        o.zc_threshold = (unsigned)n;
        break;
      case O_BUFSIZE:
        if (cli_long(PROG, a, v, 256, 1L << 24, &n) < 0) return 2;
        o.buf_size = (unsigned)n;
        break;
      case O_WBATCH:
        if (cli_long(PROG, a, v, 1, URSA_WRITE_BATCH_MAX, &n) < 0) return 2;
        o.write_batch = (unsigned)n;
        break;
      case O_BWAIT:
        if (cli_long(PROG, a, v, 1, 10000, &n) < 0) return 2;
        o.batch_wait_us = (unsigned)n;
        break;
      case O_BWAITS: {
        int pol;
        if (cli_batch_policy(PROG, a, v, &pol) < 0) return 2;
        o.batch_policy = (ursa_batch_policy)pol;
        break;
      }
      case O_DISABLE:
        if (cli_features("ursa-echo-server", a, v, &o.uring_disable) < 0) return 2;
        break;
      case O_ENABLE:
        if (cli_opt_in("ursa-echo-server", a, v, OPT_IN, &o.uring_enable) < 0)
          return 2;
        break;
    }
  }
  if (c < 0) {
    usage(stderr);
    return 2;
  }
  if (optind < argc) {
    fprintf(stderr, "%s: unexpected argument '%s' (options only)\n", PROG,
            argv[optind]);
    usage(stderr);
    return 2;
  }
  if (list_json && !list)
    return bad("--json goes with --list-backends%s%s", "", "");
  if (list) {
    list_backends(list_json);
    return 0;
  }
  if (o.min_rate && !o.idle_ms)
    return bad("--min-rate needs --idle-timeout: its window%s%s", "", "");
  if (!strcmp(o.backend, "auto")) {
    /* A throwaway loop answers which backend the library picks here. */
    ursa_loop *probe;
    int pr = ursa_loop_new(&probe, NULL);
    if (pr < 0) {
      char why[512];
      ursa_explain_setup_error(pr, why, sizeof(why));
      return bad("--backend auto: no loop can be made: %s%s", why, "");
    }
    ursa_features f;
    ursa_loop_features(probe, &f);
    ursa_loop_close(probe);
    if (f.backend == URSA_BACKEND_EPOLL) {
      fprintf(stderr, "ursa-echo-server: --backend auto: %s; using epoll\n",
              f.backend_why);
      o.backend = "ursa-epoll";
    } else {
      o.backend = "uring";
    }
  }
  const backend *be = NULL;
  for (unsigned i = 0; i < NBACKENDS; i++)
    if (!strcmp(o.backend, backends[i].name)) be = &backends[i];
  if (!be) {
    char all[160] = "";
    for (unsigned i = 0; i < NBACKENDS; i++)
      snprintf(all + strlen(all), sizeof(all) - strlen(all), "%s, ",
               backends[i].name);
    return bad("unknown --backend '%s' (want %sor auto)", o.backend, all);
  }
  o.lib_backend = be->lib_backend;
  o.proto = -1;
  for (int i = 0; i < 5; i++)
    if (!strcmp(proto, proto_names[i])) o.proto = i;
  if (o.proto < 0)
    return bad(
        "unknown --proto '%s' (want tcp, udp, unix, seqpacket or "
        "unixgram)%s",
        proto, "");
  if (!o.tls_cert != !o.tls_key)
    return bad("--tls-cert and --tls-key go together%s%s", "", "");
  if (dispatch_set && o.threads < 2)
    return bad("--dispatch needs --threads 2 or more%s%s", "", "");
  /* What each option asks of the server, checked against its table. */
  const struct {
    int asked;
    unsigned cap;
    const char *what;
  } needs[] = {
      {o.threads > 1, CAP_THREADS, "--threads"},
      {o.threads > 1 && o.proto != PROTO_TCP && o.proto != PROTO_UDP,
       CAP_ANY_PROTO_THREADS, "--threads over unix streams and messages"},
      {o.dispatch != DISPATCH_REUSEPORT, CAP_DISPATCH,
       "--dispatch handoff and fewest"},
      {o.tls_cert != NULL, CAP_TLS, "--tls-cert"},
      {o.workers > 0, CAP_WORKERS, "--workers"},
      {o.proto >= PROTO_SEQPACKET, CAP_MESSAGES,
       "--proto seqpacket and unixgram"},
      {o.gro || o.gso, CAP_UDP_OFFLOAD, "--gro and --gso"},
  };
  for (unsigned i = 0; i < sizeof(needs) / sizeof(needs[0]); i++) {
    if (!needs[i].asked || (be->caps & needs[i].cap)) continue;
    char who[96];
    names_with(needs[i].cap, who, sizeof(who));
    char msg[256];
    snprintf(msg, sizeof(msg), "%s is for %s, not %s", needs[i].what, who,
             o.backend);
    return bad("%s%s", msg, "");
  }
  if (o.tls_cert) {
    if (o.proto != PROTO_TCP && o.proto != PROTO_UNIX)
      return bad("--tls-cert needs a stream: --proto tcp or unix, not "
                 "%s%s", proto, "");
    if (o.mode == MODE_GREET || o.workers)
      return bad("--tls-cert serves echo and sink, without --workers%s%s",
                 "", "");
  }
  if ((o.gro || o.gso) && o.proto != PROTO_UDP)
    return bad("--gro and --gso are for --proto udp, not %s%s", proto, "");
  if (o.large_bufs && !o.gro)
    return bad("--large-bufs sizes the ring --gro receives into: it needs "
               "--gro%s%s", "", "");
  if ((be->caps & CAP_UDP_ONLY) && o.proto != PROTO_UDP)
    return bad("the %s server is udp only (--proto udp), not %s", o.backend,
               proto);
  if (o.workers && (o.proto == PROTO_UDP || o.proto == PROTO_UNIXGRAM ||
                    o.mode != MODE_ECHO))
    return bad("--workers handles stream echoes: not with --proto %s or "
               "--mode %s", proto, o.mode == MODE_GREET ? "greet" : "sink");
  if (o.dispatch != DISPATCH_REUSEPORT && o.threads > 1 &&
      (o.proto == PROTO_UDP || o.proto == PROTO_UNIXGRAM))
    return bad("--dispatch %s hands off connections: not for --proto %s",
               o.dispatch == DISPATCH_HANDOFF ? "handoff" : "fewest", proto);
  if (ursa_addr_parse(listen_at, &o.listen) < 0)
    return bad("bad --listen: %s%s", ursa_error_detail(), "");
  int want_unix = o.proto >= PROTO_UNIX;
  if (want_unix != (o.listen.ss.ss_family == AF_UNIX))
    return bad("--proto %s needs %s address", proto,
               want_unix ? "a unix:" : "an IP");
  o.max_conns = (int)max_conns;
  if (cpu >= 0 && cli_pin(PROG, cpu) < 0) return 2;
  /* SIGINT and SIGTERM arrive on a descriptor every backend can watch. */
  o.stop_fd = cli_stop_fd("ursa-echo-server");
  if (o.stop_fd < 0) return 1;
  if (duration) o.deadline_ms = now_ms() + (uint64_t)duration * 1000u;

  int lfd = -1;
  ursa_sockfile file = {0};
  if (!(be->caps & CAP_OWN_LISTENER)) {
    char err[512];
    lfd = open_listener(&o, &file, err, sizeof(err));
    if (lfd < 0) return bad("cannot listen on %s: %s", listen_at, err);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(lfd, (struct sockaddr *)&ss, &sl);
    announce(&o, (struct sockaddr *)&ss, sl);
  }
  server_stats st = {0};
  double cpu0 = cli_cpu_s();
  uint64_t t0 = now_ms();
  int rc = be->serve(&o, lfd, &st);
  double cpu_s = cli_cpu_s() - cpu0;
  double wall_s = (double)(now_ms() - t0) / 1000.0;
  if (rc == 0) {
    /* In echo mode each receive is echoed at once: one round trip. */
    printf(
        "server: %s: %llu connections (%llu refused, %llu timed out), "
        "%llu bytes in, %llu bytes out, %llu round trips (receives), ",
        o.backend, (unsigned long long)st.connections,
        (unsigned long long)st.refused, (unsigned long long)st.timed_out,
        (unsigned long long)st.bytes_in,
        (unsigned long long)st.bytes_out, (unsigned long long)st.reads);
    if (st.syscalls == UINT64_MAX)
      printf("syscalls not counted");
    else
      printf("%llu syscalls", (unsigned long long)st.syscalls);
    if ((be->caps & CAP_LIB) && be->lib_backend == URSA_BACKEND_URING)
      printf(" (%llu io_uring_enter, %llu SQEs)", (unsigned long long)st.enters,
             (unsigned long long)st.sqes);
    else if (be->caps & CAP_LIB)
      printf(" (%llu by the library's backend, %llu operations)",
             (unsigned long long)st.enters, (unsigned long long)st.sqes);
    printf(", %.3f s CPU in %.3f s\n", cpu_s, wall_s);
    if (json) write_json(json, &o, &st, cpu_s, wall_s, listen_at);
  }
  if (lfd >= 0) {
    close(lfd);
    ursa_sockfile_remove(&file); /* only if it is still ours */
  }
  return rc;
}
