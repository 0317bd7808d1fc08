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

int main(int argc, char **argv) {
  const char *addr = NULL, *msg = "Hello, ursa", *proto = "tcp";
  double connect_s = 5, reply_s = 5;
  static const struct option longs[] = {
      {"help", no_argument, NULL, 'h'},
      {"message", required_argument, NULL, 'm'},
      {"proto", required_argument, NULL, 'p'},
      {"connect-timeout", required_argument, NULL, 'C'},
      {"timeout", required_argument, NULL, 'T'},
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
