/* echo_client.c - ursa-echo-client: the tutorial client.  Connects, sends
 * a message, and prints what comes back (until the server closes, or for a
 * datagram, one reply). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ursa/ursa.h"

static void usage(FILE *f) {
  fprintf(f,
      "usage: ursa-echo-client ADDR [--proto tcp|udp|unix] [--message TEXT]\n"
      "  ADDR  127.0.0.1:7000, [::1]:7000, localhost:7000, unix:/path, "
      "unix:@name\n");
}

/* Waits for fd to be readable for up to 5 s. */
static int readable(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, 5000) > 0;
}

int main(int argc, char **argv) {
  const char *addr = NULL, *msg = "Hello, ursa", *proto = "tcp";
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(argv[i], "--message") && i + 1 < argc) {
      msg = argv[++i];
    } else if (!strcmp(argv[i], "--proto") && i + 1 < argc) {
      proto = argv[++i];
    } else if (argv[i][0] != '-' && !addr) {
      addr = argv[i];
    } else {
      fprintf(stderr, "ursa-echo-client: unknown or incomplete option '%s'\n",
              argv[i]);
      usage(stderr);
      return 2;
    }
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
  if (fd < 0 || connect(fd, (struct sockaddr *)&to.ss, to.len) < 0) {
    fprintf(stderr, "ursa-echo-client: cannot connect to %s: %s\n", addr,
            strerror(errno));
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
    if (!readable(fd)) {
      fprintf(stderr, "ursa-echo-client: no reply within 5 s\n");
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
