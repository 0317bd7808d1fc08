/* tls_int.h - what the TLS layer's two files share: a context, the
 * layer's own error detail, and OpenSSL's words for an error. */
#ifndef URSA_TLS_INT_H
#define URSA_TLS_INT_H

#include "ursa/tls.h"

#include <openssl/ssl.h>

struct ursa_tls_ctx {
  SSL_CTX *ssl;
  int server;
  int refs; /* the context's own, and one per TLS stream */
  uint32_t handshake_ms;
  unsigned char alpn[256]; /* wire format: length-prefixed names */
  unsigned alpn_len;
};

/* Sets ursa_tls_error_detail() and returns err. */
int ursa__tls_refuse(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), visibility("hidden")));
/* OpenSSL's own words for the newest error on this thread's queue. */
const char *ursa__tls_reason(void) __attribute__((visibility("hidden")));
/* Drops a reference; the last frees the context. */
void ursa__tls_ctx_unref(ursa_tls_ctx *c) __attribute__((visibility("hidden")));

#endif /* URSA_TLS_INT_H */
