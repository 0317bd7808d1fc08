/* backend_poll.c - the readiness-loop servers: one loop over a poller
 * (epoll or select), non-blocking sockets, one receive per readiness event,
 * and a per-connection buffer only while a reply could not be sent whole. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "apps/server/poller.h"
#include "apps/server/server.h"

#define BUF (64 * 1024)
#define EVENTS 256

typedef struct conn {
  SSL *ssl;      /* --tls-cert (epoll): OpenSSL over the non-blocking socket */
  int hs_done;
  char *pending; /* what the peer has not taken yet (with TLS: plaintext
                    SSL_write must be given again) */
  size_t plen, poff;
  int discard; /* greeted: read and drop until the peer closes */
  conn_clock clock;
} conn;

typedef struct loop {
  const poller_ops *ops;
  void *p;
  const server_opts *o;
  server_stats *st;
  conn **conns; /* by descriptor */
  int nconns_max;
  long open;
  uint64_t accept_resume; /* EMFILE: listener unwatched until then (ms) */
  int max_fd; /* highest descriptor with a connection, for the sweep */
  int warned;
  SSL_CTX *tls; /* --tls-cert */
  char buf[BUF];
} loop;

static void drop(loop *l, int fd) {
  conn *c = l->conns[fd];
  l->ops->del(l->p, fd);
  close(fd);
  l->st->syscalls += 2;
  free(c->pending);
  SSL_free(c->ssl);
  free(c);
  l->conns[fd] = NULL;
  l->open--;
}

/* ---- --tls-cert: the same echo through OpenSSL on the socket itself
 * (its own read and write calls, each counted as one system call): the
 * comparison for ursa's TLS over memory BIOs. ---- */

/* The handshake's next step; 1 when done, 0 to wait, -1 to drop. */
static int tls_handshake(loop *l, int fd, conn *c) {
  ERR_clear_error();
  int r = SSL_do_handshake(c->ssl);
  l->st->syscalls++;
  if (r == 1) {
    c->hs_done = 1;
    l->st->handshakes++;
    l->ops->mod(l->p, fd, P_IN);
    l->st->syscalls++;
    return 1;
  }
  int e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ) return 0;
  if (e == SSL_ERROR_WANT_WRITE) {
    l->ops->mod(l->p, fd, P_OUT);
    l->st->syscalls++;
    return 0;
  }
  l->st->tls_failed++;
  return -1;
}

/* Writes plaintext whole, or keeps it for when the socket takes more
 * (SSL_write must then be given the same bytes again). */
static int tls_send(loop *l, int fd, conn *c, const char *p, size_t n) {
  ERR_clear_error();
  int w = SSL_write(c->ssl, p, (int)n);
  l->st->syscalls++;
  if (w > 0) {
    l->st->bytes_out += (uint64_t)w;
    return 1;
  }
  if (SSL_get_error(c->ssl, w) != SSL_ERROR_WANT_WRITE) return -1;
  c->pending = malloc(n);
  if (!c->pending) return -1;
  memcpy(c->pending, p, n);
  c->plen = n;
  c->poff = 0;
  l->ops->mod(l->p, fd, P_OUT);
  l->st->syscalls++;
  return 0;
}

static void tls_readable(loop *l, int fd, conn *c) {
  if (!c->hs_done) {
    int r = tls_handshake(l, fd, c);
    if (r < 0) drop(l, fd);
    if (r <= 0) return;
  }
  /* Level-triggered readiness does not see what OpenSSL has buffered:
   * read until it wants the socket again. */
  while (!c->pending) {
    ERR_clear_error();
    int n = SSL_read(c->ssl, l->buf, BUF);
    l->st->syscalls++;
    if (n <= 0) {
      int e = SSL_get_error(c->ssl, n);
      if (e == SSL_ERROR_WANT_READ) return;
      if (e == SSL_ERROR_ZERO_RETURN) SSL_shutdown(c->ssl);
      drop(l, fd);
      return;
    }
    l->st->bytes_in += (uint64_t)n;
    l->st->reads++;
    if (l->o->idle_ms) clock_rx(&c->clock, now_ms(), (uint64_t)n);
    if (c->discard) continue;
    if (tls_send(l, fd, c, l->buf, (size_t)n) < 0) {
      drop(l, fd);
      return;
    }
  }
}

static void tls_writable(loop *l, int fd, conn *c) {
  if (!c->hs_done) {
    if (tls_handshake(l, fd, c) < 0) drop(l, fd);
    return;
  }
  if (!c->pending) return;
  ERR_clear_error();
  int w = SSL_write(c->ssl, c->pending, (int)c->plen);
  l->st->syscalls++;
  if (w <= 0) {
    if (SSL_get_error(c->ssl, w) != SSL_ERROR_WANT_WRITE) drop(l, fd);
    return;
  }
  l->st->bytes_out += (uint64_t)w;
  free(c->pending);
  c->pending = NULL;
  c->plen = c->poff = 0;
  l->ops->mod(l->p, fd, P_IN);
  l->st->syscalls++;
  tls_readable(l, fd, c); /* what came meanwhile */
}

/* Sends what is pending; returns 1 when all of it is out, 0 when the peer
 * is full, -1 on error. */
static int flush(loop *l, int fd, conn *c) {
  while (c->poff < c->plen) {
    ssize_t n = send(fd, c->pending + c->poff, c->plen - c->poff,
                     MSG_NOSIGNAL);
    l->st->syscalls++;
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    if (l->o->idle_ms) c->clock.last_ms = now_ms(); /* took some: not idle */
    c->poff += (size_t)n;
    l->st->bytes_out += (uint64_t)n;
  }
  free(c->pending);
  c->pending = NULL;
  c->plen = c->poff = 0;
  return 1;
}

static void on_readable(loop *l, int fd, conn *c) {
  ssize_t n = recv(fd, l->buf, BUF, 0);
  l->st->syscalls++;
  if (n < 0) {
    if (errno != EAGAIN && errno != EINTR) drop(l, fd);
    return;
  }
  if (n == 0) { /* the peer is done; everything it sent went back */
    drop(l, fd);
    return;
  }
  l->st->bytes_in += (uint64_t)n;
  l->st->reads++;
  if (l->o->idle_ms) clock_rx(&c->clock, now_ms(), (uint64_t)n);
  if (c->discard) return;
  ssize_t w = send(fd, l->buf, (size_t)n, MSG_NOSIGNAL);
  l->st->syscalls++;
  if (w < 0 && errno != EAGAIN) {
    drop(l, fd);
    return;
  }
  if (w < 0) w = 0;
  l->st->bytes_out += (uint64_t)w;
  if (w == n) return;
  /* The peer is not reading fast enough: keep the rest, stop reading. */
  c->plen = (size_t)(n - w);
  c->poff = 0;
  c->pending = malloc(c->plen);
  if (!c->pending) {
    drop(l, fd);
    return;
  }
  memcpy(c->pending, l->buf + w, c->plen);
  l->ops->mod(l->p, fd, P_OUT);
  l->st->syscalls++;
}

static void on_writable(loop *l, int fd, conn *c) {
  int r = flush(l, fd, c);
  if (r < 0) {
    drop(l, fd);
  } else if (r > 0) {
    l->ops->mod(l->p, fd, P_IN);
    l->st->syscalls++;
  }
}

static void refuse(loop *l, int fd, const char *why) {
  close(fd);
  l->st->syscalls++;
  l->st->refused++;
  if (why && !l->warned) {
    l->warned = 1;
    fprintf(stderr, "server: %s\n", why);
  }
}

static void on_accept(loop *l, int lfd) {
  for (;;) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    l->st->syscalls++;
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        /* The backlog keeps the connection; level-triggered readiness
         * would report it again at once, so stop watching for a while. */
        l->ops->del(l->p, lfd);
        l->st->syscalls++;
        l->accept_resume = now_ms() + 20;
      }
      return;
    }
    if (fd >= l->ops->fd_limit || fd >= l->nconns_max) {
      char why[160];
      snprintf(why, sizeof(why), "%s: refusing connections: descriptor %d "
               "is at or above the limit of %d", l->ops->name, fd,
               fd >= l->ops->fd_limit ? l->ops->fd_limit : l->nconns_max);
      refuse(l, fd, why);
      continue;
    }
    if (l->o->max_conns && l->open >= l->o->max_conns) {
      refuse(l, fd, NULL);
      continue;
    }
    l->st->connections++;
    int greet = l->o->mode == MODE_GREET;
    if (greet) {
      /* Greet, shut our side, and read until the peer closes: closing with
       * its bytes unread would reset the connection under the greeting. */
      if (send(fd, GREETING, sizeof(GREETING) - 1, MSG_NOSIGNAL) > 0)
        l->st->bytes_out += sizeof(GREETING) - 1;
      shutdown(fd, SHUT_WR);
      l->st->syscalls += 2;
    } else if (l->o->proto == PROTO_TCP) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      l->st->syscalls++;
    }
    conn *c = calloc(1, sizeof(*c));
    if (!c || l->ops->add(l->p, fd, P_IN) < 0) {
      free(c);
      close(fd);
      continue;
    }
    l->st->syscalls++;
    if (l->tls) {
      c->ssl = SSL_new(l->tls);
      if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
        l->ops->del(l->p, fd);
        SSL_free(c->ssl);
        free(c);
        close(fd);
        continue;
      }
      SSL_set_accept_state(c->ssl);
    }
    c->discard = greet || l->o->mode == MODE_SINK;
    if (l->o->idle_ms) clock_start(&c->clock, now_ms());
    l->conns[fd] = c;
    if (fd > l->max_fd) l->max_fd = fd;
    l->open++;
  }
}

static void on_datagrams(loop *l, int fd) {
  struct sockaddr_storage from;
  socklen_t fl = sizeof(from);
  ssize_t n = recvfrom(fd, l->buf, BUF, MSG_TRUNC, (struct sockaddr *)&from,
                       &fl);
  l->st->syscalls++;
  if (n < 0) return;
  l->st->bytes_in += (uint64_t)n;
  l->st->reads++;
  if (n > BUF || l->o->mode == MODE_SINK) return; /* never echo a cut one */
  const void *out = l->o->mode == MODE_GREET ? GREETING : l->buf;
  size_t len = l->o->mode == MODE_GREET ? sizeof(GREETING) - 1 : (size_t)n;
  ssize_t w = sendto(fd, out, len, MSG_NOSIGNAL, (struct sockaddr *)&from, fl);
  l->st->syscalls++;
  if (w > 0) l->st->bytes_out += (uint64_t)w;
}

/* Closes the connections --idle-timeout or --min-rate give up on. */
static void sweep(loop *l, uint64_t now) {
  for (int fd = 0; fd <= l->max_fd; fd++) {
    conn *c = l->conns[fd];
    if (c && clock_expired(l->o, &c->clock, now)) {
      l->st->timed_out++;
      drop(l, fd);
    }
  }
  while (l->max_fd > 0 && !l->conns[l->max_fd]) l->max_fd--;
}

static int serve(const poller_ops *ops, const server_opts *o, int lfd,
                 server_stats *st) {
  /* The 64 KiB buffer stays off the stack; one per thread with --threads. */
  loop *l = calloc(1, sizeof(*l));
  if (!l) {
    fprintf(stderr, "server: %s: out of memory\n", ops->name);
    return 1;
  }
  l->ops = ops;
  l->o = o;
  l->st = st;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  l->nconns_max = rl.rlim_cur > 1 << 20 ? 1 << 20 : (int)rl.rlim_cur;
  l->conns = calloc((size_t)l->nconns_max, sizeof(conn *));
  l->p = ops->create();
  if (!l->conns || !l->p) {
    fprintf(stderr, "server: %s: out of memory\n", ops->name);
    free(l->conns);
    free(l);
    return 1;
  }
  if (o->tls_cert) {
    l->tls = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(l->tls, TLS1_2_VERSION);
    SSL_CTX_set_mode(l->tls, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                 SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(l->tls, o->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(l->tls, o->tls_key, SSL_FILETYPE_PEM) !=
            1 ||
        SSL_CTX_check_private_key(l->tls) != 1) {
      char e[256];
      ERR_error_string_n(ERR_peek_last_error(), e, sizeof(e));
      fprintf(stderr, "ursa-echo-server: --tls-cert '%s', --tls-key '%s': "
              "%s\n", o->tls_cert, o->tls_key, e);
      SSL_CTX_free(l->tls);
      free(l->conns);
      ops->destroy(l->p);
      free(l);
      return 2;
    }
  }
  fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
  int dgram = o->proto == PROTO_UDP;
  if (ops->add(l->p, lfd, P_IN) < 0 || ops->add(l->p, o->stop_fd, P_IN) < 0) {
    fprintf(stderr, "server: %s: cannot watch the listener\n", ops->name);
    return 1;
  }
  poll_ev evs[EVENTS];
  int stop = 0;
  uint64_t next_sweep = now_ms() + clock_sweep_ms(o);
  while (!stop) {
    int timeout = 1000;
    /* The clock is read only when something is timed. */
    uint64_t now =
        o->deadline_ms || o->idle_ms || l->accept_resume ? now_ms() : 0;
    if (o->deadline_ms) {
      if (now >= o->deadline_ms) break;
      if (o->deadline_ms - now < 1000) timeout = (int)(o->deadline_ms - now);
    }
    if (l->accept_resume) {
      if (now >= l->accept_resume) {
        l->accept_resume = 0;
        ops->add(l->p, lfd, P_IN);
        st->syscalls++;
      } else if ((int)(l->accept_resume - now) < timeout) {
        timeout = (int)(l->accept_resume - now);
      }
    }
    if (o->idle_ms) {
      if (now >= next_sweep) {
        sweep(l, now);
        next_sweep = now + clock_sweep_ms(o);
      }
      if ((int)(next_sweep - now) < timeout) timeout = (int)(next_sweep - now);
    }
    int n = ops->wait(l->p, timeout, evs, EVENTS);
    st->syscalls++;
    if (n < 0) {
      fprintf(stderr, "server: %s: %s\n", ops->name, strerror(-n));
      return 1;
    }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].fd;
      if (fd == o->stop_fd) {
        stop = 1;
      } else if (fd == lfd) {
        if (dgram) on_datagrams(l, fd); else on_accept(l, fd);
      } else if (l->conns[fd] && l->tls) {
        if (evs[i].events & P_OUT) tls_writable(l, fd, l->conns[fd]);
        else if (evs[i].events & P_IN) tls_readable(l, fd, l->conns[fd]);
      } else if (l->conns[fd]) {
        if (evs[i].events & P_OUT) on_writable(l, fd, l->conns[fd]);
        else if (evs[i].events & P_IN) on_readable(l, fd, l->conns[fd]);
      }
    }
  }
  for (int fd = 0; fd < l->nconns_max; fd++)
    if (l->conns[fd]) drop(l, fd);
  ops->destroy(l->p);
  free(l->conns);
  SSL_CTX_free(l->tls);
  free(l);
  return 0;
}

/* --threads N: N loops, each with a listener of its own on the first's
 * address (SO_REUSEPORT: the kernel spreads the connections), as the
 * library's server does with --dispatch reuseport.  SIGINT/SIGTERM make
 * the signalfd readable for every loop at once. */
typedef struct eworker {
  const server_opts *o;
  server_stats st;
  int lfd, rc;
  pthread_t th;
} eworker;

static void *eworker_main(void *arg) {
  eworker *w = arg;
  w->rc = serve(&epoll_ops, w->o, w->lfd, &w->st);
  return NULL;
}

static int reuseport_twin(int lfd, int dgram) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (getsockname(lfd, (struct sockaddr *)&ss, &len) < 0) return -1;
  int fd = socket(ss.ss_family, (dgram ? SOCK_DGRAM : SOCK_STREAM) |
                                    SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1, zero = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (ss.ss_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  if (bind(fd, (struct sockaddr *)&ss, len) < 0 ||
      (!dgram && listen(fd, SOMAXCONN) < 0)) {
    close(fd);
    return -1;
  }
  return fd;
}

int serve_epoll(const server_opts *o, int lfd, server_stats *st) {
  if (o->threads <= 1) return serve(&epoll_ops, o, lfd, st);
  eworker w[MAX_THREADS];
  int n = o->threads, started = 0, rc = 0;
  memset(w, 0, sizeof(w));
  for (int i = 0; i < n; i++) {
    w[i].o = o;
    w[i].lfd = i == 0 ? lfd : reuseport_twin(lfd, o->proto == PROTO_UDP);
    if (w[i].lfd < 0) {
      fprintf(stderr, "server: epoll: listener %d: %s\n", i, strerror(errno));
      rc = 2;
      break;
    }
  }
  if (rc) {
    for (int i = 1; i < n; i++)
      if (w[i].lfd > 0) close(w[i].lfd);
    return rc;
  }
  for (; started < n; started++)
    if (pthread_create(&w[started].th, NULL, eworker_main, &w[started])) {
      fprintf(stderr, "server: epoll: cannot start thread %d\n", started);
      rc = 1;
      break;
    }
  for (int i = 0; i < started; i++) {
    pthread_join(w[i].th, NULL);
    if (w[i].rc > rc) rc = w[i].rc;
    st->connections += w[i].st.connections;
    st->refused += w[i].st.refused;
    st->timed_out += w[i].st.timed_out;
    st->bytes_in += w[i].st.bytes_in;
    st->bytes_out += w[i].st.bytes_out;
    st->reads += w[i].st.reads;
    st->syscalls += w[i].st.syscalls;
    st->handshakes += w[i].st.handshakes;
    st->tls_failed += w[i].st.tls_failed;
  }
  for (int i = 1; i < n; i++) close(w[i].lfd);
  return rc;
}

int serve_select(const server_opts *o, int lfd, server_stats *st) {
  return serve(&select_ops, o, lfd, st);
}
