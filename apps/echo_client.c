/* echo_client.c - ursa-echo-client: the tutorial client.  Connects, sends
 * a message, and prints what comes back (until the server closes, or for a
 * datagram, one reply). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/time.h>

#include "apps/common/cli.h"
#include "ursa/ursa.h"

#define PROG "ursa-echo-client"

static void usage(FILE *f) {
  fprintf(f,
      "usage: ursa-echo-client ADDR [options]\n"
      "  ADDR                  127.0.0.1:7000, [::1]:7000, localhost:7000, "
      "unix:/path,\n"
      "                        unix:@name\n"
      "  --proto P             tcp (default), udp or unix\n"
      "  --message TEXT        what to send (default \"Hello, ursa\")\n"
      "  --connect-timeout S   give up on connecting after S seconds "
      "(default 5)\n"
      "  --timeout S           give up when no reply comes for S seconds "
      "(default 5)\n"
      "  --tls                 over TLS (OpenSSL on the socket): close_notify "
      "ends it\n"
      "  --tls-ca FILE         the roots to check the server against "
      "(default: the\n"
      "                        system's); implies --tls\n"
      "  --tls-name NAME       the name checked and sent as SNI (default "
      "localhost)\n"
      "  --tls-insecure        no certificate or name checks\n"
      "  -h, --help            this text\n");
}

/* Waits up to ms for fd to be ready for events. */
static int ready(int fd, short events, int ms) {
  struct pollfd p = {fd, events, 0};
  return poll(&p, 1, ms) > 0;
}

/* connect(2) bounded by ms: non-blocking, then a poll for writability.
 * Returns 0, or -1 with errno set (ETIMEDOUT when the time ran out). */
static int connect_within(int fd, const ursa_addr *to, int ms) {
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  if (connect(fd, (const struct sockaddr *)&to->ss, to->len) < 0) {
    if (errno != EINPROGRESS) return -1;
    if (!ready(fd, POLLOUT, ms)) {
      errno = ETIMEDOUT;
      return -1;
    }
    int err = 0;
    socklen_t el = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
      errno = err;
      return -1;
    }
  }
  fcntl(fd, F_SETFL, fl);
  return 0;
}

/* --tls: the same exchange through OpenSSL on the blocking socket. */
static int tls_exchange(int fd, const char *msg, const char *ca,
                        const char *name, int insecure) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return 1;
  if (insecure) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1
           : SSL_CTX_set_default_verify_paths(ctx) != 1) {
      char e[256];
      ERR_error_string_n(ERR_peek_last_error(), e, sizeof(e));
      fprintf(stderr, "%s: --tls-ca '%s': %s\n", PROG, ca ? ca : "", e);
      SSL_CTX_free(ctx);
      return 2;
    }
  }
  SSL *ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  SSL_set_tlsext_host_name(ssl, name);
  if (!insecure) SSL_set1_host(ssl, name);
  int rc = 1;
  if (SSL_connect(ssl) != 1) {
    long v = SSL_get_verify_result(ssl);
    char e[256];
    ERR_error_string_n(ERR_peek_last_error(), e, sizeof(e));
    fprintf(stderr, "%s: TLS handshake failed: %s\n", PROG,
            !insecure && v != X509_V_OK ? X509_verify_cert_error_string(v)
                                        : e);
    goto out;
  }
  size_t len = strlen(msg);
  if (SSL_write(ssl, msg, (int)len) != (int)len) {
    fprintf(stderr, "%s: TLS write failed\n", PROG);
    goto out;
  }
  SSL_shutdown(ssl); /* close_notify: the server echoes, then ends too */
  char buf[65536];
  size_t total = 0;
  for (;;) {
    int n = SSL_read(ssl, buf, sizeof(buf));
    if (n > 0) {
      fwrite(buf, 1, (size_t)n, stdout);
      total += (size_t)n;
      continue;
    }
    int e = SSL_get_error(ssl, n);
    if (e == SSL_ERROR_ZERO_RETURN) break; /* the server's close_notify */
    fprintf(stderr, "%s: %s\n", PROG,
            e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)
                ? "no reply within --timeout"
                : "the server closed without close_notify");
    goto out;
  }
  printf("\n");
  rc = total ? 0 : 1;
out:
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  return rc;
}

int main(int argc, char **argv) {
  const char *addr = NULL, *msg = "Hello, ursa", *proto = "tcp";
  const char *tls_ca = NULL, *tls_name = "localhost";
  int tls = 0, tls_insecure = 0;
  double connect_s = 5, reply_s = 5;
  static const struct option longs[] = {
      {"help", no_argument, NULL, 'h'},
      {"message", required_argument, NULL, 'm'},
      {"proto", required_argument, NULL, 'p'},
      {"connect-timeout", required_argument, NULL, 'C'},
      {"timeout", required_argument, NULL, 'T'},
      {"tls", no_argument, NULL, 't'},
      {"tls-ca", required_argument, NULL, 'A'},
      {"tls-name", required_argument, NULL, 'N'},
      {"tls-insecure", no_argument, NULL, 'I'},
      {NULL, 0, NULL, 0},
  };
  const char *flag, *v;
  int c;
  while ((c = cli_next(PROG, argc, argv, "h", longs, &flag, &v)) > 0) {
    switch (c) {
      case 'h':
        usage(stdout);
        return 0;
      case 'm':
        msg = v;
        break;
      case 'p':
        proto = v;
        break;
      case 'C':
        if (cli_seconds(PROG, flag, v, 0.001, 3600, &connect_s) < 0) return 2;
        break;
      case 'T':
        if (cli_seconds(PROG, flag, v, 0.001, 3600, &reply_s) < 0) return 2;
        break;
      case 't':
        tls = 1;
        break;
      case 'A':
        tls = 1;
        tls_ca = v;
        break;
      case 'N':
        tls = 1;
        tls_name = v;
        break;
      case 'I':
        tls = 1;
        tls_insecure = 1;
        break;
    }
  }
  if (c < 0) {
    usage(stderr);
    return 2;
  }
  if (optind < argc) addr = argv[optind++];
  if (optind < argc) {
    fprintf(stderr, "%s: one address only ('%s' and '%s')\n", PROG, addr,
            argv[optind]);
    return 2;
  }
  if (!addr) {
    usage(stderr);
    return 2;
  }
  int dgram = !strcmp(proto, "udp");
  if (!dgram && strcmp(proto, "tcp") && strcmp(proto, "unix")) {
    fprintf(stderr, "ursa-echo-client: unknown --proto '%s' (want tcp, udp "
                    "or unix)\n", proto);
    return 2;
  }
  ursa_addr to;
  if (ursa_addr_parse(addr, &to) < 0) {
    fprintf(stderr, "ursa-echo-client: bad address: %s\n", ursa_error_detail());
    return 2;
  }
  int fd = socket(to.ss.ss_family, (dgram ? SOCK_DGRAM : SOCK_STREAM) |
                  SOCK_CLOEXEC, 0);
  if (fd < 0 || connect_within(fd, &to, (int)(connect_s * 1000 + 0.5)) < 0) {
    fprintf(stderr, "ursa-echo-client: cannot connect to %s: %s\n", addr,
            errno == ETIMEDOUT ? "no answer within --connect-timeout"
                               : strerror(errno));
    if (fd >= 0) close(fd);
    return 1;
  }
  if (tls) {
    if (dgram) {
      fprintf(stderr, "%s: --tls needs a stream (tcp or unix)\n", PROG);
      close(fd);
      return 2;
    }
    struct timeval tv = {(time_t)reply_s,
                         (suseconds_t)((reply_s - (long)reply_s) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int rc = tls_exchange(fd, msg, tls_ca, tls_name, tls_insecure);
    close(fd);
    return rc;
  }
  size_t len = strlen(msg);
  if (send(fd, msg, len, MSG_NOSIGNAL) != (ssize_t)len) {
    fprintf(stderr, "ursa-echo-client: send: %s\n", strerror(errno));
    return 1;
  }
  if (!dgram) shutdown(fd, SHUT_WR); /* the server echoes, then closes */
  char buf[65536];
  size_t total = 0;
  for (;;) {
    if (!ready(fd, POLLIN, (int)(reply_s * 1000 + 0.5))) {
      fprintf(stderr, "ursa-echo-client: no reply within %g s\n", reply_s);
      close(fd);
      return 1;
    }
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0) {
      fprintf(stderr, "ursa-echo-client: receive: %s\n", strerror(errno));
      return 1;
    }
    if (n == 0) break;
    fwrite(buf, 1, (size_t)n, stdout);
    total += (size_t)n;
    if (dgram) break;
  }
  printf("\n");
  close(fd);
  return total ? 0 : 1;
}
