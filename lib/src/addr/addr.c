/* addr.c - parsing and formatting the addresses users type. */
#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path))

static int parse_port(const char *text, const char *p, uint16_t *port) {
  if (!*p) return ursa__invalid("address '%.80s': missing port after ':'", text);
  unsigned long v = 0;
  const char *q = p;
  while (*q >= '0' && *q <= '9' && q - p < 6) v = v * 10 + (unsigned)(*q++ - '0');
  if (q == p)
    return ursa__invalid("address '%.80s': port '%s' is not a number", text, p);
  if (*q >= '0' && *q <= '9')
    return ursa__invalid("address '%.80s': port %s is out of range 0-65535",
                         text, p);
  if (*q)
    return ursa__invalid("address '%.80s': stray characters '%s' after the port",
                         text, q);
  if (v > 65535)
    return ursa__invalid("address '%.80s': port %lu is out of range 0-65535",
                         text, v);
  *port = (uint16_t)v;
  return 0;
}

static int parse_unix(const char *text, ursa_addr *out) {
  const char *path = text + 5;
  struct sockaddr_un *un = (struct sockaddr_un *)&out->ss;
  un->sun_family = AF_UNIX;
  size_t n = strlen(path);
  if (path[0] == '@') {
    /* Abstract: a leading NUL, then the name, not NUL-terminated. */
    if (n < 2) return ursa__invalid("address '%.80s': empty abstract name", text);
    if (n > SUN_PATH_MAX)
      return ursa__invalid(
          "address '%.80s': abstract name is %zu bytes, longer than sun_path "
          "allows (%zu)", text, n - 1, SUN_PATH_MAX - 1);
    un->sun_path[0] = '\0';
    memcpy(un->sun_path + 1, path + 1, n - 1);
    out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    return 0;
  }
  if (!n) return ursa__invalid("address '%.80s': empty Unix socket path", text);
  if (n >= SUN_PATH_MAX)
    return ursa__invalid(
        "address '%.80s': path is %zu bytes, longer than sun_path allows (%zu)",
        text, n, SUN_PATH_MAX - 1);
  memcpy(un->sun_path, path, n + 1);
  out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  return 0;
}

static bool ipv6_usable(void) {
  int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  close(fd);
  return true;
}

int ursa_addr_parse(const char *text, ursa_addr *out) {
  if (!text || !out)
    return ursa__invalid("ursa_addr_parse: NULL %s", text ? "out" : "text");
  memset(out, 0, sizeof(*out));
  if (!strncmp(text, "unix:", 5)) return parse_unix(text, out);
  if (!*text) return ursa__invalid("address is empty");

  char host[256];
  const char *port_at;
  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (!close)
      return ursa__invalid("address '%.80s': '[' without a closing ']'", text);
    if (close[1] != ':')
      return close[1] ? ursa__invalid("address '%.80s': stray characters '%s' "
                                      "after ']' (want ]:PORT)", text, close + 1)
                      : ursa__invalid("address '%.80s': missing ':PORT'", text);
    size_t hl = (size_t)(close - text - 1);
    if (hl >= sizeof(host))
      return ursa__invalid("address '%.80s': host is too long", text);
    memcpy(host, text + 1, hl);
    host[hl] = '\0';
    port_at = close + 2;
    uint16_t port;
    int r = parse_port(text, port_at, &port);
    if (r) return r;
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&out->ss;
    char *pct = strchr(host, '%');
    if (pct) {
      *pct = '\0';
      a->sin6_scope_id = if_nametoindex(pct + 1);
      if (!a->sin6_scope_id) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(pct + 1, &end, 10);
        /* strtoul takes a sign and wraps it: only digits are a number. */
        if (*end || end == pct + 1 || pct[1] < '0' || pct[1] > '9')
          return ursa__invalid("address '%.80s': unknown interface '%s'", text,
                               pct + 1);
        if (errno == ERANGE || v > UINT32_MAX)
          return ursa__invalid("address '%.80s': scope id %s is out of range "
                               "0-4294967295", text, pct + 1);
        a->sin6_scope_id = (uint32_t)v;
      }
    }
    if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
      return ursa__invalid("address '%.80s': '%s' is not an IPv6 address", text,
                           host);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    out->len = sizeof(*a);
    return 0;
  }

  const char *colon = strrchr(text, ':');
  if (!colon)
    return ursa__invalid("address '%.80s': missing ':PORT'", text);
  if (strchr(text, ':') != colon)
    return ursa__invalid(
        "address '%.80s': an IPv6 address needs brackets, as in [::1]:7000",
        text);
  size_t hl = (size_t)(colon - text);
  if (hl >= sizeof(host))
    return ursa__invalid("address '%.80s': host is too long", text);
  memcpy(host, text, hl);
  host[hl] = '\0';
  uint16_t port;
  int r = parse_port(text, colon + 1, &port);
  if (r) return r;

  if (!hl) {
    if (ipv6_usable()) {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&out->ss;
      a->sin6_family = AF_INET6;
      a->sin6_addr = in6addr_any;
      a->sin6_port = htons(port);
      out->len = sizeof(*a);
    } else {
      struct sockaddr_in *a = (struct sockaddr_in *)&out->ss;
      a->sin_family = AF_INET;
      a->sin_addr.s_addr = htonl(INADDR_ANY);
      a->sin_port = htons(port);
      out->len = sizeof(*a);
    }
    return 0;
  }
  struct sockaddr_in *a4 = (struct sockaddr_in *)&out->ss;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    out->len = sizeof(*a4);
    return 0;
  }
  for (const char *c = host; *c; c++)
    if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
          (*c >= '0' && *c <= '9') || *c == '-' || *c == '.' || *c == '_'))
      return ursa__invalid("address '%.80s': stray character '%c' in host '%s'",
                           text, *c, host);
  struct addrinfo *res = NULL;
  int g = ursa__getaddrinfo(host, NULL, AF_UNSPEC, &res);
  if (g == EAI_AGAIN)
    return ursa__refuse(-EAGAIN, "address '%.80s': temporary failure "
                        "resolving '%s' (%s): try again", text, host,
                        gai_strerror(g));
  if (g != 0 || !res)
    return ursa__invalid("address '%.80s': unknown host '%s' (%s)", text, host,
                         gai_strerror(g));
  memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
  out->len = res->ai_addrlen;
  freeaddrinfo(res);
  if (out->ss.ss_family == AF_INET)
    ((struct sockaddr_in *)&out->ss)->sin_port = htons(port);
  else if (out->ss.ss_family == AF_INET6)
    ((struct sockaddr_in6 *)&out->ss)->sin6_port = htons(port);
  else
    return ursa__invalid("address '%.80s': host resolved to family %d", text,
                         out->ss.ss_family);
  return 0;
}

int ursa_addr_format(const struct sockaddr *sa, socklen_t len, char *buf,
                     size_t size) {
  if (!sa || (!buf && size))
    return ursa__invalid("ursa_addr_format: NULL argument");
  char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  switch (sa->sa_family) {
    case AF_INET: {
      const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
      inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
      return snprintf(buf, size, "%s:%u", host, ntohs(a->sin_port));
    }
    case AF_INET6: {
      const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
      inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
      if (a->sin6_scope_id)
        return snprintf(buf, size, "[%s%%%u]:%u", host, a->sin6_scope_id,
                        ntohs(a->sin6_port));
      return snprintf(buf, size, "[%s]:%u", host, ntohs(a->sin6_port));
    }
    case AF_UNIX: {
      const struct sockaddr_un *u = (const struct sockaddr_un *)sa;
      size_t off = offsetof(struct sockaddr_un, sun_path);
      if (len <= off) return snprintf(buf, size, "unix:");
      size_t n = len - off;
      if (u->sun_path[0] == '\0')
        return snprintf(buf, size, "unix:@%.*s", (int)(n - 1),
                        u->sun_path + 1);
      return snprintf(buf, size, "unix:%.*s", (int)strnlen(u->sun_path, n),
                      u->sun_path);
    }
    default:
      return ursa__invalid("ursa_addr_format: unknown family %d",
                           sa->sa_family);
  }
}

int ursa__check_sockaddr(const struct sockaddr *addr, socklen_t len,
                         const char *fn) {
  if (!addr) return ursa__invalid("%s: NULL address", fn);
  if (len < sizeof(sa_family_t) || len > sizeof(struct sockaddr_storage))
    return ursa__invalid("%s: address length %u is out of range", fn,
                         (unsigned)len);
  switch (addr->sa_family) {
    case AF_INET:
      if (len < sizeof(struct sockaddr_in))
        return ursa__invalid("%s: address length %u is short for IPv4", fn,
                             (unsigned)len);
      return 0;
    case AF_INET6:
      if (len < sizeof(struct sockaddr_in6))
        return ursa__invalid("%s: address length %u is short for IPv6", fn,
                             (unsigned)len);
      return 0;
    case AF_UNIX:
      return 0;
    default:
      return ursa__invalid("%s: address family %d is not IPv4, IPv6 or Unix",
                           fn, addr->sa_family);
  }
}

int ursa__getaddrinfo(const char *host, const char *service, int family,
                      struct addrinfo **res) {
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = family;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_ADDRCONFIG;
  int g = getaddrinfo(host, service, &hints, res);
  if (g == EAI_NONAME || g == EAI_ADDRFAMILY || g == EAI_NODATA) {
    hints.ai_flags = 0;
    g = getaddrinfo(host, service, &hints, res);
  }
  return g;
}

bool ursa__addr_is_any(const struct sockaddr *addr) {
  if (addr->sa_family == AF_INET)
    return ((const struct sockaddr_in *)(const void *)addr)->sin_addr.s_addr ==
           htonl(INADDR_ANY);
  if (addr->sa_family == AF_INET6)
    return IN6_IS_ADDR_UNSPECIFIED(
        &((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr);
  return false;
}
