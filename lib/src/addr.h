/* addr.h - the address layer: what users type, and binding to it (socket
 * files on Unix paths). */
#ifndef URSA_ADDR_H
#define URSA_ADDR_H

#include "core.h"

/* Checks that addr is an IPv4, IPv6 or Unix address of a length that fits
 * it; -EINVAL naming fn and the fault otherwise. */
int ursa__check_sockaddr(const struct sockaddr *addr, socklen_t len,
                         const char *fn) URSA__HIDDEN;

#endif /* URSA_ADDR_H */
