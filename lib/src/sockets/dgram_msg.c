/* dgram_msg.c - what datagrams carry besides their bytes: the socket
 * options a receive asks for (GRO, PKTINFO, TOS, timestamps) and the
 * control data that comes back, parsed; and send requests of several
 * messages, each with its own segment size (GSO), source address and TOS.
 * On io_uring a request is one SENDMSG SQE per message, submitted
 * together; the epoll backend sends a run of them with one sendmmsg. */
#include "sock.h"

#include <netinet/udp.h>
#include <string.h>
#include <time.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

#define OPT_GSO_OK 0x100u /* the kernel takes UDP_SEGMENT on this socket */

static bool inet(const ursa_dgram *d) {
  return d->family == AF_INET || d->family == AF_INET6;
}

/* Sets an option of the IPv4 level, and on an IPv6 socket its IPv6 twin
 * too (a dual-stack socket receives IPv4 datagrams as well). */
static int set_both(ursa_dgram *d, int v4opt, int v6opt) {
  int one = 1;
  if (d->family == AF_INET6) {
    if (setsockopt(d->fd, IPPROTO_IPV6, v6opt, &one, sizeof(one)) < 0)
      return -errno;
    /* A v6-only socket may refuse the IPv4 option; it has no use for it. */
    (void)setsockopt(d->fd, IPPROTO_IP, v4opt, &one, sizeof(one));
    return 0;
  }
  return setsockopt(d->fd, IPPROTO_IP, v4opt, &one, sizeof(one)) < 0 ? -errno
                                                                     : 0;
}

int ursa__dgram_recv_opts(ursa_dgram *d, unsigned what, const char *fn) {
  const unsigned known = URSA_RECV_GRO | URSA_RECV_LARGE | URSA_RECV_PKTINFO |
                         URSA_RECV_TOS | URSA_RECV_TIMESTAMP;
  if (what & ~known) return ursa__invalid("%s: unknown flags 0x%x", fn, what);
  if ((what & URSA_RECV_GRO) && !d->udp)
    return ursa__invalid("%s: GRO needs a UDP socket", fn);
  if ((what & (URSA_RECV_PKTINFO | URSA_RECV_TOS)) && !inet(d))
    return ursa__invalid("%s: %s needs an IPv4 or IPv6 socket", fn,
                         (what & URSA_RECV_PKTINFO) ? "PKTINFO" : "TOS");
  int one = 1, r = 0;
  unsigned todo = what & ~d->opts_set;
  if (todo & URSA_RECV_GRO) {
    if (setsockopt(d->fd, IPPROTO_UDP, UDP_GRO, &one, sizeof(one)) < 0)
      return errno == ENOPROTOOPT
                 ? ursa__invalid("%s: this kernel has no UDP_GRO", fn)
                 : ursa__refuse(-errno, "%s: setsockopt UDP_GRO: %s", fn,
                                strerror(errno));
  }
  if ((todo & URSA_RECV_PKTINFO) &&
      (r = set_both(d, IP_PKTINFO, IPV6_RECVPKTINFO)) < 0)
    return ursa__refuse(r, "%s: setsockopt PKTINFO: %s", fn, strerror(-r));
  if ((todo & URSA_RECV_TOS) && (r = set_both(d, IP_RECVTOS,
                                              IPV6_RECVTCLASS)) < 0)
    return ursa__refuse(r, "%s: setsockopt RECVTOS: %s", fn, strerror(-r));
  if ((todo & URSA_RECV_TIMESTAMP) &&
      setsockopt(d->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) < 0)
    return ursa__refuse(-errno, "%s: setsockopt SO_TIMESTAMPNS: %s", fn,
                        strerror(errno));
  if ((what & (URSA_RECV_GRO | URSA_RECV_LARGE)) &&
      (r = ursa__bufring_large(d->loop)) < 0)
    return ursa__refuse(r, "%s: the large receive buffers (%u of %u bytes): "
                        "%s", fn, d->loop->bufs->large_count,
                        URSA__LARGE_SIZE, strerror(-r));
  d->opts_set |= what & ~URSA_RECV_LARGE;
  return 0;
}

void ursa__dgram_info(ursa_dgram_info *info, const void *control,
                      size_t controllen, size_t n) {
  memset(info, 0, sizeof(*info));
  info->tos = -1;
  info->segment = (unsigned)n;
  if (!controllen) return;
  struct msghdr m = {0};
  m.msg_control = (void *)control;
  m.msg_controllen = controllen;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
    const unsigned char *p = CMSG_DATA(c);
    size_t len = c->cmsg_len - CMSG_LEN(0);
    int v;
    if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO &&
        len >= sizeof(int)) {
      memcpy(&v, p, sizeof(v));
      if (v > 0 && (size_t)v < n) info->segment = (unsigned)v;
    } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
               len >= sizeof(struct in_pktinfo)) {
      struct in_pktinfo pi;
      memcpy(&pi, p, sizeof(pi));
      struct sockaddr_in *a = (struct sockaddr_in *)&info->local;
      a->sin_family = AF_INET;
      a->sin_addr = pi.ipi_addr;
      info->locallen = sizeof(*a);
      info->ifindex = (unsigned)pi.ipi_ifindex;
    } else if (c->cmsg_level == IPPROTO_IPV6 &&
               c->cmsg_type == IPV6_PKTINFO &&
               len >= sizeof(struct in6_pktinfo)) {
      struct in6_pktinfo pi;
      memcpy(&pi, p, sizeof(pi));
      info->local.sin6_family = AF_INET6;
      info->local.sin6_addr = pi.ipi6_addr;
      info->locallen = sizeof(info->local);
      info->ifindex = pi.ipi6_ifindex;
    } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS &&
               len >= 1) {
      info->tos = p[0]; /* one byte on receive */
    } else if (c->cmsg_level == IPPROTO_IPV6 &&
               c->cmsg_type == IPV6_TCLASS && len >= sizeof(int)) {
      memcpy(&v, p, sizeof(v));
      info->tos = v & 0xff;
    } else if (c->cmsg_level == SOL_SOCKET &&
               c->cmsg_type == SCM_TIMESTAMPNS &&
               len >= sizeof(struct timespec)) {
      struct timespec ts;
      memcpy(&ts, p, sizeof(ts));
      info->timestamp_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    }
  }
}

const void *ursa_dgram_segment(const void *buf, ssize_t n,
                               const ursa_dgram_info *info, unsigned i,
                               size_t *len) {
  size_t seg = info && info->segment ? info->segment : (size_t)n;
  if (len) *len = 0;
  if (!buf || n <= 0 || !seg || (size_t)i * seg >= (size_t)n) return NULL;
  size_t off = (size_t)i * seg;
  if (len) *len = (size_t)n - off < seg ? (size_t)n - off : seg;
  return (const char *)buf + off;
}

/* ---- send requests of several messages ---- */

static bool is_v4_mapped(const struct sockaddr *a) {
  return a->sa_family == AF_INET6 &&
         IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)a)->sin6_addr);
}

/* Checks message i; 0 or a named -EINVAL. */
static int check_msg(ursa_dgram *d, const ursa_dgram_msg *m, unsigned i) {
  static const char fn[] = "ursa_dgram_sendmsgs";
  if (!m->buf && m->len)
    return ursa__invalid("%s: message %u: NULL buffer", fn, i);
  if (m->flags & ~(URSA_MSG_GSO | URSA_MSG_TOS))
    return ursa__invalid("%s: message %u: unknown flags 0x%x", fn, i,
                         m->flags);
  if (m->to) {
    int r = ursa__check_sockaddr(m->to, m->tolen, fn);
    if (r) return r;
  }
  if ((m->flags & (URSA_MSG_GSO | URSA_MSG_TOS)) || m->src) {
    if (!d->udp)
      return ursa__invalid("%s: message %u: %s needs a UDP socket", fn, i,
                           (m->flags & URSA_MSG_GSO)   ? "a segment size"
                           : (m->flags & URSA_MSG_TOS) ? "a TOS"
                                                       : "a source address");
  }
  if (m->flags & URSA_MSG_GSO) {
    if (!m->segment)
      return ursa__invalid("%s: message %u: segment 0 (want 1 to len)", fn,
                           i);
    if (m->segment > m->len)
      return ursa__invalid("%s: message %u: segment %u is above its "
                           "length %zu", fn, i, m->segment, m->len);
    if ((m->len + m->segment - 1) / m->segment > URSA_DGRAM_MAX_SEGMENTS)
      return ursa__invalid("%s: message %u: %zu bytes in segments of %u "
                           "is more than %d segments", fn, i, m->len,
                           m->segment, URSA_DGRAM_MAX_SEGMENTS);
    if (m->segment > 0xffff)
      return ursa__invalid("%s: message %u: segment %u is over 65535", fn, i,
                           m->segment);
    if (!(d->opts_set & OPT_GSO_OK)) {
      int v = 0;
      socklen_t vl = sizeof(v);
      if (getsockopt(d->fd, IPPROTO_UDP, UDP_SEGMENT, &v, &vl) < 0)
        return ursa__invalid("%s: this kernel has no UDP_SEGMENT (GSO)", fn);
      d->opts_set |= OPT_GSO_OK;
    }
  }
  if ((m->flags & URSA_MSG_TOS) && (m->tos < 0 || m->tos > 255))
    return ursa__invalid("%s: message %u: tos %d is not 0 to 255", fn, i,
                         m->tos);
  if (m->src) {
    int fam = m->src->sa_family;
    if ((fam != AF_INET && fam != AF_INET6) ||
        m->srclen < (fam == AF_INET ? sizeof(struct sockaddr_in)
                                    : sizeof(struct sockaddr_in6)))
      return ursa__invalid("%s: message %u: source is not a whole IPv4 or "
                           "IPv6 address", fn, i);
    if (fam == AF_INET6 && d->family == AF_INET)
      return ursa__invalid("%s: message %u: an IPv6 source on an IPv4 "
                           "socket", fn, i);
  }
  return 0;
}

static struct cmsghdr *add_cmsg(struct msghdr *h, struct cmsghdr *prev,
                                int level, int type, const void *data,
                                size_t len) {
  struct cmsghdr *c = prev ? CMSG_NXTHDR(h, prev) : CMSG_FIRSTHDR(h);
  c->cmsg_level = level;
  c->cmsg_type = type;
  c->cmsg_len = CMSG_LEN(len);
  memcpy(CMSG_DATA(c), data, len);
  return c;
}

static void build(ursa_dgram *d, ursa__dmsg *dm, const ursa_dgram_msg *m) {
  struct msghdr *h = &dm->msg;
  memset(h, 0, sizeof(*h));
  h->msg_name = (void *)m->to;
  h->msg_namelen = m->to ? m->tolen : 0;
  dm->iov.iov_base = (void *)m->buf;
  dm->iov.iov_len = m->len;
  h->msg_iov = &dm->iov;
  h->msg_iovlen = 1;
  if (!(m->flags & (URSA_MSG_GSO | URSA_MSG_TOS)) && !m->src) return;
  /* CMSG_NXTHDR reads the whole room as if it held headers: clear it. */
  memset(dm->control, 0, sizeof(dm->control));
  h->msg_control = dm->control;
  h->msg_controllen = sizeof(dm->control);
  struct cmsghdr *c = NULL;
  size_t used = 0;
  if (m->flags & URSA_MSG_GSO) {
    uint16_t seg = (uint16_t)m->segment;
    c = add_cmsg(h, c, IPPROTO_UDP, UDP_SEGMENT, &seg, sizeof(seg));
    used += CMSG_SPACE(sizeof(seg));
  }
  if (m->src && m->src->sa_family == AF_INET) {
    struct in_pktinfo pi = {0};
    pi.ipi_spec_dst = ((const struct sockaddr_in *)m->src)->sin_addr;
    c = add_cmsg(h, c, IPPROTO_IP, IP_PKTINFO, &pi, sizeof(pi));
    used += CMSG_SPACE(sizeof(pi));
  } else if (m->src) {
    struct in6_pktinfo pi = {0};
    pi.ipi6_addr = ((const struct sockaddr_in6 *)m->src)->sin6_addr;
    c = add_cmsg(h, c, IPPROTO_IPV6, IPV6_PKTINFO, &pi, sizeof(pi));
    used += CMSG_SPACE(sizeof(pi));
  }
  if (m->flags & URSA_MSG_TOS) {
    /* The datagram leaves over IPv4 on an IPv4 socket and to a v4-mapped
     * destination; the kernel reads the IPv4 option there. */
    bool v4 = d->family == AF_INET || (m->to && is_v4_mapped(m->to));
    int tos = m->tos;
    c = add_cmsg(h, c, v4 ? IPPROTO_IP : IPPROTO_IPV6,
                 v4 ? IP_TOS : IPV6_TCLASS, &tos, sizeof(tos));
    used += CMSG_SPACE(sizeof(tos));
  }
  h->msg_controllen = used;
}

int ursa_dgram_sendmsgs(ursa_sendmsgs_req *req, ursa_dgram *d,
                        const ursa_dgram_msg *msgs, unsigned n,
                        ursa_sendmsgs_cb cb) {
  static const char fn[] = "ursa_dgram_sendmsgs";
  int r = ursa__dgram_check_open(d, fn);
  if (r) return r;
  if (!req || !cb || !msgs)
    return ursa__invalid("%s: NULL %s", fn,
                         !req ? "request" : !cb ? "callback" : "messages");
  if (!n || n > URSA_DGRAM_BATCH)
    return ursa__invalid("%s: %u messages (want 1 to %d)", fn, n,
                         URSA_DGRAM_BATCH);
  if (req->left) return -EBUSY;
  if (d->handle.closing) return -EBADF;
  for (unsigned i = 0; i < n; i++) {
    r = check_msg(d, &msgs[i], i);
    if (r) return r;
  }
  req->dgram = d;
  req->cb = cb;
  req->n = req->left = n;
  req->bprev = NULL;
  req->bnext = d->bsends;
  if (d->bsends) d->bsends->bprev = req;
  d->bsends = req;
  for (unsigned i = 0; i < n; i++) {
    ursa__dmsg *dm = &req->m[i];
    build(d, dm, &msgs[i]);
    req->res[i] = -ECANCELED;
    dm->req = req;
    dm->op.kind = URSA__KIND(dsendm);
    dm->op.nsqe = 1;
    dm->op.flags = 0;
    ursa__handle_submit(d->loop, &d->handle, &dm->op);
  }
  return 0;
}

int ursa_sendmsgs_result(const ursa_sendmsgs_req *req, unsigned i) {
  if (!req || i >= req->n)
    return ursa__invalid("ursa_sendmsgs_result: %s", req ? "no such message"
                                                         : "NULL request");
  return req->res[i];
}

int ursa_sendmsgs_cancel(ursa_sendmsgs_req *req) {
  if (!req) return ursa__invalid("ursa_sendmsgs_cancel: NULL request");
  if (!req->left) return -ENOENT;
  for (unsigned i = 0; i < req->n; i++)
    if (req->m[i].op.state != URSA__IDLE)
      ursa__op_cancel(req->dgram->loop, &req->m[i].op);
  return 0;
}

int ursa_sendmsgs_active(const ursa_sendmsgs_req *req) {
  return req && req->left > 0;
}

void ursa__dgram_sendmsgs_cancel_all(ursa_dgram *d) {
  for (ursa_sendmsgs_req *b = d->bsends; b; b = b->bnext)
    ursa_sendmsgs_cancel(b);
}

static void dsendm_prep(ursa_loop *loop, ursa_op *op) {
  ursa__dmsg *dm = (ursa__dmsg *)op;
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  io_uring_prep_sendmsg(sqe, dm->req->dgram->fd, &dm->msg, MSG_NOSIGNAL);
  io_uring_sqe_set_data(sqe, op);
}

static void dsendm_complete(ursa_loop *loop, ursa_op *op, int res,
                            uint32_t flags) {
  ursa__dmsg *dm = (ursa__dmsg *)op;
  ursa_sendmsgs_req *req = dm->req;
  ursa_dgram *d = req->dgram;
  (void)flags;
  unsigned i = (unsigned)(dm - req->m);
  if (res >= 0) {
    loop->stats.bytes_out += (uint64_t)res;
    /* Datagrams go out whole or not at all. */
    if ((size_t)res != dm->iov.iov_len) res = -EMSGSIZE;
  }
  req->res[i] = res;
  ursa__handle_op_end(loop, &d->handle, op);
  if (--req->left) return;
  if (req->bprev)
    req->bprev->bnext = req->bnext;
  else
    d->bsends = req->bnext;
  if (req->bnext) req->bnext->bprev = req->bprev;
  req->bnext = req->bprev = NULL;
  int status = 0;
  for (unsigned k = 0; k < req->n && !status; k++)
    if (req->res[k] < 0) status = req->res[k];
  req->cb(req, status); /* may free req */
  ursa__handle_maybe_close(&d->handle);
}

URSA__OP_TYPE(dsendm) = {
    .name = "sendmsgs",
    .prep = dsendm_prep,
    .complete = dsendm_complete,
};
