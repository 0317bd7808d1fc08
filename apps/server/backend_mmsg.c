/* backend_mmsg.c - the hand-written UDP server the library's is measured
 * against, as a QUIC stack's datapath does it: recvmmsg with UDP_GRO into
 * 64 KiB buffers, and each coalesced receive echoed with one UDP_SEGMENT
 * send, the lot with one sendmmsg; poll(2) when nothing is ready.  One
 * socket, one thread. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "server.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define BATCH 16
#define BUF (65536 + 64)

typedef struct slot {
  struct sockaddr_storage from;
  union {
    struct cmsghdr align;
    char in[CMSG_SPACE(sizeof(int))];
  } cin;
  union {
    struct cmsghdr align;
    char out[CMSG_SPACE(sizeof(uint16_t))];
  } cout;
  struct iovec iov;
} slot;

/* The GRO segment size of a receive, or its length when not coalesced. */
static size_t segment_of(struct msghdr *h, size_t len) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
    if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO) {
      int v;
      memcpy(&v, CMSG_DATA(c), sizeof(v));
      if (v > 0 && (size_t)v < len) return (size_t)v;
    }
  }
  return len;
}

int serve_mmsg(const server_opts *o, int fd, server_stats *st) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof(one)) < 0) {
    fprintf(stderr, "ursa-echo-server: mmsg: UDP_GRO: %s\n", strerror(errno));
    return 2;
  }
  char *bufs = malloc((size_t)BATCH * BUF);
  slot *sl = calloc(BATCH, sizeof(*sl));
  struct mmsghdr in[BATCH], out[BATCH];
  if (!bufs || !sl) {
    free(bufs);
    free(sl);
    fprintf(stderr, "ursa-echo-server: mmsg: out of memory\n");
    return 1;
  }
  int rc = 0;
  while (!past_deadline(o)) {
    for (int i = 0; i < BATCH; i++) {
      sl[i].iov.iov_base = bufs + (size_t)i * BUF;
      sl[i].iov.iov_len = BUF;
      struct msghdr *h = &in[i].msg_hdr;
      memset(h, 0, sizeof(*h));
      h->msg_name = &sl[i].from;
      h->msg_namelen = sizeof(sl[i].from);
      h->msg_iov = &sl[i].iov;
      h->msg_iovlen = 1;
      h->msg_control = sl[i].cin.in;
      h->msg_controllen = sizeof(sl[i].cin.in);
    }
    st->syscalls++;
    int n = recvmmsg(fd, in, BATCH, MSG_DONTWAIT, NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        fprintf(stderr, "server: recvmmsg: %s\n", strerror(errno));
        rc = 1;
        break;
      }
      struct pollfd p[2] = {{fd, POLLIN, 0}, {o->stop_fd, POLLIN, 0}};
      st->syscalls++;
      if (poll(p, 2, 100) > 0 && p[1].revents) break;
      continue;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
      struct msghdr *h = &in[i].msg_hdr;
      size_t len = in[i].msg_len;
      size_t seg = segment_of(h, len);
      st->bytes_in += len;
      st->reads += len ? (len + seg - 1) / seg : 1;
      if (o->mode != MODE_ECHO || (h->msg_flags & MSG_TRUNC)) continue;
      struct msghdr *r = &out[k].msg_hdr;
      memset(r, 0, sizeof(*r));
      r->msg_name = &sl[i].from;
      r->msg_namelen = h->msg_namelen;
      sl[i].iov.iov_len = len;
      r->msg_iov = &sl[i].iov;
      r->msg_iovlen = 1;
      if (seg < len) {
        r->msg_control = sl[i].cout.out;
        r->msg_controllen = sizeof(sl[i].cout.out);
        struct cmsghdr *c = CMSG_FIRSTHDR(r);
        c->cmsg_level = IPPROTO_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t s16 = (uint16_t)seg;
        memcpy(CMSG_DATA(c), &s16, sizeof(s16));
      }
      k++;
    }
    for (int sent = 0; sent < k;) {
      st->syscalls++;
      int m = sendmmsg(fd, out + sent, (unsigned)(k - sent), 0);
      if (m < 0) {
        if (errno == EINTR) continue;
        /* A datagram the kernel refuses (the peer's port closed) is lost,
         * as on any UDP server; the rest go on. */
        sent++;
        continue;
      }
      for (int i = 0; i < m; i++) st->bytes_out += out[sent + i].msg_len;
      sent += m;
    }
  }
  free(bufs);
  free(sl);
  return rc;
}
