/* ping.c - ursa-ping: ICMP echo through the ring, like ping(8), over IPv4
 * and IPv6, with a raw socket (root or CAP_NET_RAW) or an unprivileged ICMP
 * datagram socket (where net.ipv4.ping_group_range allows it). */
#include <errno.h>
#include <math.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip_icmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apps/common/cli.h"
#include "ursa/ursa.h"

#define PROG "ursa-ping"

#define MAX_COUNT 100000

typedef struct pinger {
  ursa_loop *loop;
  ursa_dgram sock;
  ursa_timer tick;
  ursa_send_req req;
  ursa_addr to;
  char name[128];
  int v6, raw;
  uint16_t id;
  long count, interval_ms, wait_ms, size;
  long sent, received, dups;
  uint64_t started_ms, last_send_ms;
  double min, max, sum, sum2;
  unsigned char seen[MAX_COUNT / 8 + 1];
  unsigned char packet[65536];
  int done;
} pinger;

static uint16_t checksum(const void *data, size_t len) {
  const unsigned char *p = data;
  uint32_t sum = 0;
  for (; len > 1; p += 2, len -= 2) sum += (uint32_t)(p[0] << 8 | p[1]);
  if (len) sum += (uint32_t)(p[0] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons((uint16_t)~sum);
}

static void finish(pinger *p);

static void on_sent(ursa_send_req *req, int status) {
  (void)req;
  if (status < 0)
    fprintf(stderr, "ursa-ping: send: %s\n", ursa_strerror(status));
}

/* Sends request number p->sent: an 8-byte ICMP header, then the send time
 * and a pattern, so a reply can be checked and timed. */
static void send_one(pinger *p) {
  if (ursa_dgram_send_active(&p->req))
    return; /* the previous request is still going out */
  unsigned char *b = p->packet;
  size_t len = 8 + (size_t)p->size;
  memset(b, 0, len);
  b[0] = p->v6 ? ICMP6_ECHO_REQUEST : ICMP_ECHO;
  uint16_t id = htons(p->id), seq = htons((uint16_t)(p->sent + 1));
  memcpy(b + 4, &id, 2);
  memcpy(b + 6, &seq, 2);
  double t = (cli_now_ns() / 1e3);
  if (p->size >= (long)sizeof(t)) memcpy(b + 8, &t, sizeof(t));
  for (size_t i = 8 + sizeof(t); i < len; i++) b[i] = (unsigned char)i;
  /* ICMPv6 and ping sockets have the kernel fill the checksum. */
  if (!p->v6) {
    uint16_t c = checksum(b, len);
    memcpy(b + 2, &c, 2);
  }
  p->sent++;
  p->last_send_ms = ursa_loop_now(p->loop);
  p->req.data = p;
  int r = ursa_dgram_send(&p->req, &p->sock, b, len,
                          (struct sockaddr *)&p->to.ss, p->to.len, on_sent);
  if (r < 0) fprintf(stderr, "ursa-ping: send: %s\n", ursa_strerror(r));
}

static void on_recv(ursa_dgram *d, ssize_t n, const void *buf,
                    const struct sockaddr *from, socklen_t fromlen,
                    unsigned flags) {
  pinger *p = d->data;
  if (n < 0) {
    fprintf(stderr, "ursa-ping: receive: %s\n", ursa_strerror((int)n));
    return;
  }
  const unsigned char *b = buf;
  int ttl = -1;
  /* A raw IPv4 socket hands over the IP header too. */
  if (p->raw && !p->v6) {
    if (n < 20) return;
    size_t ihl = (size_t)(b[0] & 0x0f) * 4;
    if ((size_t)n < ihl + 8) return;
    ttl = b[8];
    b += ihl;
    n -= (ssize_t)ihl;
  }
  if (n < 8 || (flags & URSA_DGRAM_TRUNC)) return;
  if (b[0] != (p->v6 ? ICMP6_ECHO_REPLY : ICMP_ECHOREPLY)) return;
  uint16_t id, seq;
  memcpy(&id, b + 4, 2);
  memcpy(&seq, b + 6, 2);
  /* A ping socket rewrites the id to its port and filters for us. */
  if (p->raw && ntohs(id) != p->id) return;
  long s = ntohs(seq);
  if (s < 1 || s > p->sent || s > MAX_COUNT) return;
  char who[128];
  ursa_addr_format(from, fromlen, who, sizeof(who));
  char *colon = strrchr(who, ':'); /* drop the port that ICMP lacks */
  if (colon) *colon = '\0';
  const char *host = who[0] == '[' ? who + 1 : who;
  if (who[0] == '[' && colon && colon[-1] == ']') colon[-1] = '\0';
  if (p->seen[s / 8] & (1u << (s % 8))) {
    p->dups++;
    printf("%zd bytes from %s: icmp_seq=%ld (DUP!)\n", n, host, s);
    return;
  }
  p->seen[s / 8] |= (unsigned char)(1u << (s % 8));
  p->received++;
  double ms = -1;
  if (p->size >= 8 && n >= 16) {
    double t;
    memcpy(&t, b + 8, sizeof(t));
    ms = ((cli_now_ns() / 1e3) - t) / 1000.0;
    if (ms < p->min || p->received == 1) p->min = ms;
    if (ms > p->max) p->max = ms;
    p->sum += ms;
    p->sum2 += ms * ms;
  }
  printf("%zd bytes from %s: icmp_seq=%ld", n, host, s);
  if (ttl >= 0) printf(" ttl=%d", ttl);
  if (ms >= 0) printf(" time=%.3f ms", ms);
  printf("\n");
  fflush(stdout);
  if (p->received == p->count) finish(p);
}

static void finish(pinger *p) {
  if (p->done) return;
  p->done = 1;
  ursa_timer_stop(&p->tick);
  ursa_dgram_close(&p->sock, NULL);
}

static void on_tick(ursa_timer *t, int status) {
  pinger *p = t->data;
  if (status < 0 || p->done) return;
  uint64_t now = ursa_loop_now(p->loop);
  if (p->sent < p->count) {
    if (now - p->last_send_ms + 1 >= (uint64_t)p->interval_ms) send_one(p);
  } else if (now - p->last_send_ms >= (uint64_t)p->wait_ms) {
    finish(p); /* the last reply is overdue */
  }
}

/* Opens a raw socket, or else a ping socket; NULL message on success. */
static int open_socket(pinger *p, const char **why) {
  int family = p->v6 ? AF_INET6 : AF_INET;
  int proto = p->v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
  int fd = socket(family, SOCK_RAW | SOCK_CLOEXEC, proto);
  if (fd >= 0) {
    p->raw = 1;
    return fd;
  }
  int raw_err = errno;
  fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, proto);
  if (fd >= 0) return fd;
  if ((raw_err == EPERM || raw_err == EACCES) &&
      (errno == EPERM || errno == EACCES))
    *why = p->v6 ? "neither a raw ICMPv6 socket (needs root or CAP_NET_RAW) "
                   "nor an ICMPv6 datagram socket (net.ipv4.ping_group_range "
                   "does not include this group) is permitted"
                 : "neither a raw ICMP socket (needs root or CAP_NET_RAW) nor "
                   "an ICMP datagram socket (net.ipv4.ping_group_range does "
                   "not include this group) is permitted";
  else
    *why = strerror(raw_err);
  return -1;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: ursa-ping [-c COUNT] [-i MS] [-W MS] [-s SIZE] HOST\n"
          "  HOST       an IPv4 or IPv6 address or a host name\n"
          "  -c COUNT   requests to send, 1-%d (default 4)\n"
          "  -i MS      milliseconds between requests (default 1000, at "
          "least 10)\n"
          "  -W MS      how long to wait for the last reply (default 1000)\n"
          "  -s SIZE    payload bytes, 0-65000 (default 56)\n"
          "  -h, --help this text\n",
          MAX_COUNT);
}

int main(int argc, char **argv) {
  static pinger p;
  p.count = 4;
  p.interval_ms = 1000;
  p.wait_ms = 1000;
  p.size = 56;
  const char *host = NULL;
  static const struct option longs[] = {
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *flag, *v;
  int c;
  while ((c = cli_next(PROG, argc, argv, "hc:i:W:s:", longs, &flag, &v)) >
         0) {
    long *dst = c == 'c'   ? &p.count
                : c == 'i' ? &p.interval_ms
                : c == 'W' ? &p.wait_ms
                : c == 's' ? &p.size
                           : NULL;
    if (!dst) {
      usage(stdout);
      return 0;
    }
    long lo = dst == &p.count ? 1 : dst == &p.interval_ms ? 10 : 0;
    long hi = dst == &p.count ? MAX_COUNT : dst == &p.size ? 65000 : 3600000;
    if (cli_long(PROG, flag, v, lo, hi, dst) < 0) return 2;
  }
  if (c < 0) {
    usage(stderr);
    return 2;
  }
  if (optind < argc) host = argv[optind++];
  if (optind < argc) {
    fprintf(stderr, "ursa-ping: one host only ('%s' and '%s')\n", host,
            argv[optind]);
    return 2;
  }
  if (!host) {
    usage(stderr);
    return 2;
  }
  char text[300];
  snprintf(text, sizeof(text), strchr(host, ':') ? "[%s]:0" : "%s:0", host);
  if (ursa_addr_parse(text, &p.to) < 0) {
    fprintf(stderr, "ursa-ping: bad host '%s': %s\n", host,
            ursa_error_detail());
    return 2;
  }
  p.v6 = p.to.ss.ss_family == AF_INET6;
  const char *why = NULL;
  int fd = open_socket(&p, &why);
  if (fd < 0) {
    fprintf(stderr, "ursa-ping: cannot open an ICMP socket: %s\n", why);
    return 2;
  }
  int r = ursa_loop_new(&p.loop, NULL);
  if (r < 0) {
    char msg[512];
    ursa_explain_setup_error(r, msg, sizeof(msg));
    fprintf(stderr, "ursa-ping: cannot start the io_uring loop: %s\n", msg);
    close(fd);
    return 2;
  }
  p.id = (uint16_t)getpid();
  p.sock.data = &p;
  if ((r = ursa_dgram_open(p.loop, &p.sock, fd)) < 0 ||
      (r = ursa_dgram_recv_start(&p.sock, on_recv)) < 0) {
    fprintf(stderr, "ursa-ping: %s\n", ursa_strerror(r));
    return 2;
  }
  ursa_addr_format((struct sockaddr *)&p.to.ss, p.to.len, p.name,
                   sizeof(p.name));
  *strrchr(p.name, ':') = '\0'; /* no port for ICMP, no brackets either */
  if (p.name[0] == '[') {
    memmove(p.name, p.name + 1, strlen(p.name));
    p.name[strlen(p.name) - 1] = '\0';
  }
  printf("PING %s (%s): %ld data bytes, %s socket\n", host, p.name, p.size,
         p.raw ? "raw" : "datagram");
  p.started_ms = ursa_loop_now(p.loop);
  send_one(&p);
  p.tick.data = &p;
  long step = p.interval_ms < 50 ? p.interval_ms : 10;
  ursa_timer_start(p.loop, &p.tick, (uint64_t)step, (uint64_t)step, on_tick);
  r = ursa_loop_run(p.loop, URSA_RUN_DEFAULT);
  uint64_t took = ursa_loop_now(p.loop) - p.started_ms;
  printf("\n--- %s ping statistics ---\n", host);
  printf("%ld packets transmitted, %ld received,", p.sent, p.received);
  if (p.dups) printf(" +%ld duplicates,", p.dups);
  printf(" %.0f%% packet loss, time %llums\n",
         p.sent ? 100.0 * (double)(p.sent - p.received) / (double)p.sent : 0.0,
         (unsigned long long)took);
  if (p.received && p.size >= 8) {
    double avg = p.sum / (double)p.received;
    double var = p.sum2 / (double)p.received - avg * avg;
    printf("rtt min/avg/max/mdev = %.3f/%.3f/%.3f/%.3f ms\n", p.min, avg, p.max,
           sqrt(var > 0 ? var : 0));
  }
  ursa_loop_close(p.loop);
  if (r < 0) return 2;
  return p.received ? 0 : 1;
}
