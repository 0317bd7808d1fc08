/* udp_bulk.c - ursa-load's UDP bulk mode.  The client is written on plain
 * sockets, as lean as a client can be (recvmmsg with GRO in; sendmmsg, or
 * GSO sends with --gso, out), so that every server is measured against the
 * same load and the client's own cost stays low.  Each peer sends a window
 * of datagrams and sends the next once all came back; a window not back
 * within 100 ms counts what is missing as lost and moves on. */
#include "apps/load/udp_bulk.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "apps/common/cli.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define RX_BATCH 8
#define RX_BUF (65536 + 64)
#define LOSS_NS 100000000ull
#define GSO_MAX 64

typedef struct peer {
  int fd;
  uint64_t base;  /* sequence number of the window's first datagram */
  long got;       /* of the window, back */
  uint64_t t0;    /* when the window went out */
  char *out;      /* window x size bytes */
} peer;

static struct {
  const udp_bulk_opts *o;
  peer *p;
  char *rx;
  /* echoed: in the measured window; echoed_all: warm-up included (a
   * server on another host has its CPU read over the whole run). */
  uint64_t echoed, echoed_all, lost, late, mismatched, sends, recvs;
  int measuring;
} U;

/* Datagram seq of peer i: its first 8 bytes say who and which; the rest is
 * a pattern of both, and its last byte is checked too. */
static uint64_t tag(long i, uint64_t seq) { return (uint64_t)i << 40 | seq; }

static void fill(char *b, long size, long i, uint64_t seq) {
  uint64_t t = tag(i, seq);
  memcpy(b, &t, sizeof(t));
  for (long k = 8; k < size; k++) b[k] = (char)(t * 31 + (uint64_t)k);
}

static int send_window(long i) {
  const udp_bulk_opts *o = U.o;
  peer *p = &U.p[i];
  p->got = 0;
  p->t0 = cli_now_ns();
  for (long k = 0; k < o->window; k++)
    fill(p->out + k * o->size, o->size, i, p->base + (uint64_t)k);
  long per = o->gso ? 65507 / o->size : 1;
  if (per > GSO_MAX) per = GSO_MAX;
  if (per < 1) per = 1;
  struct mmsghdr mm[256];
  struct iovec iov[256];
  union {
    struct cmsghdr align;
    char room[CMSG_SPACE(sizeof(uint16_t))];
  } c[256];
  unsigned n = 0;
  for (long k = 0; k < o->window && n < 256; k += per, n++) {
    long cnt = o->window - k < per ? o->window - k : per;
    iov[n].iov_base = p->out + k * o->size;
    iov[n].iov_len = (size_t)(cnt * o->size);
    struct msghdr *h = &mm[n].msg_hdr;
    memset(h, 0, sizeof(*h));
    h->msg_iov = &iov[n];
    h->msg_iovlen = 1;
    if (cnt > 1) {
      memset(&c[n], 0, sizeof(c[n]));
      h->msg_control = c[n].room;
      h->msg_controllen = sizeof(c[n].room);
      struct cmsghdr *cm = CMSG_FIRSTHDR(h);
      cm->cmsg_level = IPPROTO_UDP;
      cm->cmsg_type = UDP_SEGMENT;
      cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t seg = (uint16_t)o->size;
      memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
    }
  }
  for (unsigned sent = 0; sent < n;) {
    U.sends++;
    int m = sendmmsg(p->fd, mm + sent, n - sent, 0);
    if (m < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == ENOBUFS || errno == ECONNREFUSED) {
        sent++; /* counted lost when its window times out */
        continue;
      }
      fprintf(stderr, "ursa-load: udp send: %s\n", strerror(errno));
      return -1;
    }
    sent += (unsigned)m;
  }
  return 0;
}

/* One datagram back on peer i. */
static void take(long i, const char *d, size_t len) {
  peer *p = &U.p[i];
  uint64_t t;
  if ((long)len != U.o->size || len < 8) {
    U.mismatched++;
    return;
  }
  memcpy(&t, d, sizeof(t));
  uint64_t seq = t & ((1ull << 40) - 1);
  if (t >> 40 != (uint64_t)i ||
      d[len - 1] != (char)(t * 31 + (uint64_t)(len - 1))) {
    U.mismatched++;
    return;
  }
  if (seq < p->base || seq >= p->base + (uint64_t)U.o->window) {
    U.late++; /* from a window already counted lost */
    return;
  }
  p->got++;
  U.echoed_all++;
  if (U.measuring) U.echoed++;
}

static int drain(long i) {
  peer *p = &U.p[i];
  for (;;) {
    struct mmsghdr mm[RX_BATCH];
    struct iovec iov[RX_BATCH];
    union {
      struct cmsghdr align;
      char room[CMSG_SPACE(sizeof(int))];
    } c[RX_BATCH];
    for (int k = 0; k < RX_BATCH; k++) {
      iov[k].iov_base = U.rx + (size_t)k * RX_BUF;
      iov[k].iov_len = RX_BUF;
      struct msghdr *h = &mm[k].msg_hdr;
      memset(h, 0, sizeof(*h));
      h->msg_iov = &iov[k];
      h->msg_iovlen = 1;
      h->msg_control = c[k].room;
      h->msg_controllen = sizeof(c[k].room);
    }
    U.recvs++;
    int n = recvmmsg(p->fd, mm, RX_BATCH, MSG_DONTWAIT, NULL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      if (errno == EINTR || errno == ECONNREFUSED) continue;
      fprintf(stderr, "ursa-load: udp receive: %s\n", strerror(errno));
      return -1;
    }
    for (int k = 0; k < n; k++) {
      size_t len = mm[k].msg_len, seg = len;
      struct msghdr *h = &mm[k].msg_hdr;
      for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm;
           cm = CMSG_NXTHDR(h, cm))
        if (cm->cmsg_level == IPPROTO_UDP && cm->cmsg_type == UDP_GRO) {
          int v;
          memcpy(&v, CMSG_DATA(cm), sizeof(v));
          if (v > 0 && (size_t)v < len) seg = (size_t)v;
        }
      const char *b = U.rx + (size_t)k * RX_BUF;
      for (size_t off = 0; off < len; off += seg)
        take(i, b + off, len - off < seg ? len - off : seg);
    }
    if (p->got == U.o->window) {
      p->base += (uint64_t)U.o->window;
      if (send_window(i) < 0) return -1;
    }
  }
}

static int open_peer(long i, int ep) {
  const udp_bulk_opts *o = U.o;
  peer *p = &U.p[i];
  p->fd = socket(o->to.ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                 0);
  if (p->fd < 0) return -errno;
  int one = 1, big = 1 << 20;
  setsockopt(p->fd, IPPROTO_UDP, UDP_GRO, &one, sizeof(one));
  setsockopt(p->fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  setsockopt(p->fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
  if (connect(p->fd, (const struct sockaddr *)&o->to.ss, o->to.len) < 0)
    return -errno;
  p->out = malloc((size_t)(o->window * o->size));
  if (!p->out) return -ENOMEM;
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
  if (epoll_ctl(ep, EPOLL_CTL_ADD, p->fd, &ev) < 0) return -errno;
  return 0;
}

int udp_bulk_run(const udp_bulk_opts *o) {
  memset(&U, 0, sizeof(U));
  U.o = o;
  U.p = calloc((size_t)o->peers, sizeof(*U.p));
  U.rx = malloc((size_t)RX_BATCH * RX_BUF);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int rc = 0;
  if (!U.p || !U.rx || ep < 0) {
    fprintf(stderr, "ursa-load: udp: out of memory\n");
    rc = 2;
    goto out;
  }
  for (long i = 0; i < o->peers; i++) U.p[i].fd = -1;
  for (long i = 0; i < o->peers; i++) {
    int r = open_peer(i, ep);
    if (r < 0) {
      fprintf(stderr, "ursa-load: udp peer %ld: %s\n", i, strerror(-r));
      rc = 2;
      goto out;
    }
  }
  for (long i = 0; i < o->peers && !rc; i++)
    if (send_window(i) < 0) rc = 1;
  uint64_t t_start = cli_now_ns();
  uint64_t t_measure = t_start + (uint64_t)(o->warmup_s * 1e9);
  uint64_t t_end = t_measure + (uint64_t)(o->duration_s * 1e9);
  double cpu0 = 0, scpu0 = 0;
  uint64_t sends0 = 0, recvs0 = 0;
  while (!rc) {
    uint64_t now = cli_now_ns();
    if (!U.measuring && now >= t_measure) {
      U.measuring = 1;
      cpu0 = cli_cpu_s();
      if (o->server_pid) scpu0 = load_proc_cpu_s(o->server_pid);
      sends0 = U.sends;
      recvs0 = U.recvs;
      U.lost = U.late = 0;
    }
    if (now >= t_end) break;
    struct epoll_event evs[64];
    int n = epoll_wait(ep, evs, 64, 20);
    if (n < 0 && errno != EINTR) {
      fprintf(stderr, "ursa-load: epoll_wait: %s\n", strerror(errno));
      rc = 1;
    }
    for (int k = 0; k < n && !rc; k++)
      if (drain((long)evs[k].data.u64) < 0) rc = 1;
    now = cli_now_ns();
    for (long i = 0; i < o->peers && !rc; i++) {
      peer *p = &U.p[i];
      if (now - p->t0 < LOSS_NS) continue;
      U.lost += (uint64_t)(o->window - p->got);
      p->base += (uint64_t)o->window;
      if (send_window(i) < 0) rc = 1;
    }
  }
  double secs = (double)(cli_now_ns() - t_measure) / 1e9;
  double cpu = cli_cpu_s() - cpu0;
  double scpu = o->server_pid ? load_proc_cpu_s(o->server_pid) - scpu0 : -1;
  if (secs <= 0) secs = 1e-9;
  double dps = (double)U.echoed / secs;
  double mbps = dps * (double)o->size / 1e6;
  uint64_t calls = (U.sends - sends0) + (U.recvs - recvs0);
  printf("ursa-load: udp bulk, %ld peers x %ld in flight, %ld-byte "
         "datagrams%s, %.2f s measured\n",
         o->peers, o->window, o->size, o->gso ? " sent with GSO" : "", secs);
  printf("  %llu datagrams echoed, %.0f/s, %.2f MB/s each way; lost %llu, "
         "late %llu, mismatched %llu\n",
         (unsigned long long)U.echoed, dps, mbps,
         (unsigned long long)U.lost, (unsigned long long)U.late,
         (unsigned long long)U.mismatched);
  printf("  client CPU %.3f s, %llu system calls\n", cpu,
         (unsigned long long)calls);
  if (o->json) {
    FILE *f = fopen(o->json, "w");
    if (!f) {
      fprintf(stderr, "ursa-load: cannot write %s: %s\n", o->json,
              strerror(errno));
    } else {
      fprintf(f,
              "{\"mode\":\"udp_bulk\",\"conns\":%ld,\"inflight\":%ld,"
              "\"size\":%ld,\"gso\":%d,\"seconds\":%.4f,\"datagrams\":%llu,"
              "\"dgrams_per_s\":%.1f,\"mb_per_s\":%.3f,\"lost\":%llu,"
              "\"late\":%llu,\"mismatched\":%llu,\"errors\":%llu,"
              "\"client_cpu_s\":%.4f,\"client_syscalls\":%llu,"
              "\"server_cpu_s\":%.4f,\"datagrams_total\":%llu}\n",
              o->peers, o->window, o->size, o->gso, secs,
              (unsigned long long)U.echoed, dps, mbps,
              (unsigned long long)U.lost, (unsigned long long)U.late,
              (unsigned long long)U.mismatched,
              (unsigned long long)U.mismatched, cpu,
              (unsigned long long)calls, scpu,
              (unsigned long long)U.echoed_all);
      fclose(f);
    }
  }
  if (!rc && U.mismatched) {
    fprintf(stderr, "ursa-load: %llu datagrams came back altered\n",
            (unsigned long long)U.mismatched);
    rc = 1;
  }
  if (!rc && !U.echoed) {
    fprintf(stderr, "ursa-load: no datagram came back\n");
    rc = 1;
  }
out:
  if (U.p)
    for (long i = 0; i < o->peers; i++) {
      if (U.p[i].fd >= 0) close(U.p[i].fd);
      free(U.p[i].out);
    }
  if (ep >= 0) close(ep);
  free(U.p);
  free(U.rx);
  return rc;
}
