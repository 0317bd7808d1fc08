/* addr.h - the address layer: what users type, and binding to it (socket
 * files on Unix paths). */
#ifndef URSA_ADDR_H
#define URSA_ADDR_H

#include "core.h"

/* Checks that addr is an IPv4, IPv6 or Unix address of a length that fits
 * it; -EINVAL naming fn and the fault otherwise. */
int ursa__check_sockaddr(const struct sockaddr *addr, socklen_t len,
                         const char *fn) URSA__HIDDEN;

struct addrinfo;

/* getaddrinfo(3) for streams of family (AF_UNSPEC for both): asks with
 * AI_ADDRCONFIG, and again without it when that hides every answer (a
 * loopback-only host on a machine without a routable address).  Returns
 * getaddrinfo's code; *res is the caller's to free on 0.  It blocks. */
int ursa__getaddrinfo(const char *host, const char *service, int family,
                      struct addrinfo **res) URSA__HIDDEN;

/* True for 0.0.0.0 and :: (a listener bound to any address). */
bool ursa__addr_is_any(const struct sockaddr *addr) URSA__HIDDEN;

/* Socket options ursa__socket_open() sets (IP sockets only). */
#define URSA__SO_REUSEADDR 1u
#define URSA__SO_REUSEPORT 2u
#define URSA__SO_V6ONLY 4u /* else an IPv6 socket is made dual-stack */
#define URSA__SO_NODELAY 8u

/* The one socket set-up every listener and datagram socket goes through:
 * a socket of addr's family and type (close-on-exec), the options, then
 * ursa_socket_bind() with backlog and file.  Returns the descriptor, or a
 * negative errno with nothing left open. */
int ursa__socket_open(const struct sockaddr *addr, socklen_t len, int type,
                      unsigned opts, int backlog, ursa_sockfile *file)
    URSA__HIDDEN;


#endif /* URSA_ADDR_H */
