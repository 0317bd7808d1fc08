/* tls_ctx.c - TLS contexts (certificates, keys, verification, ALPN), the
 * layer's error detail, and the kernel TLS probe. */
#include "tls_int.h"

#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ursa_error_detail()'s buffer is the library's; this layer keeps its
 * own, and its refusals say where to look. */
static __thread char detail[512];

const char *ursa_tls_error_detail(void) { return detail; }

int ursa__tls_refuse(int err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof(detail), fmt, ap);
  va_end(ap);
  return err;
}

const char *ursa__tls_reason(void) {
  static __thread char buf[256];
  unsigned long e = ERR_peek_last_error();
  if (!e) return "no reason given";
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

/* ---- contexts ---- */

static int parse_alpn(ursa_tls_ctx *c, const char *list) {
  c->alpn_len = 0;
  if (!list || !*list) return 0;
  const char *p = list;
  while (*p) {
    const char *e = strchr(p, ',');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    if (n == 0 || n > 255 || c->alpn_len + 1 + n > sizeof(c->alpn))
      return ursa__tls_refuse(-EINVAL, "ursa_tls_ctx_new: bad ALPN list '%.100s'",
                    list);
    c->alpn[c->alpn_len++] = (unsigned char)n;
    memcpy(c->alpn + c->alpn_len, p, n);
    c->alpn_len += (unsigned)n;
    p += n;
    if (*p == ',') p++;
  }
  return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned inlen, void *arg) {
  ursa_tls_ctx *c = arg;
  (void)ssl;
  unsigned char *o;
  if (SSL_select_next_proto(&o, outlen, c->alpn, c->alpn_len, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = o;
  return SSL_TLSEXT_ERR_OK;
}

static int file_readable(const char *what, const char *path) {
  if (access(path, R_OK) == 0) return 0;
  snprintf(detail, sizeof(detail), "ursa_tls_ctx_new: %s '%.300s': %s",
           what, path, strerror(errno));
  return -ENOENT;
}

int ursa_tls_ctx_new(ursa_tls_ctx **out, int server,
                     const ursa_tls_options *o) {
  if (!out || !o)
    return ursa__tls_refuse(-EINVAL, "ursa_tls_ctx_new: NULL %s",
                  out ? "options" : "context pointer");
  *out = NULL;
  int minv = o->min_version ? o->min_version : URSA_TLS_1_2;
  if ((minv != URSA_TLS_1_2 && minv != URSA_TLS_1_3) ||
      (o->max_version && o->max_version != URSA_TLS_1_2 &&
       o->max_version != URSA_TLS_1_3) ||
      (o->max_version && o->max_version < minv))
    return ursa__tls_refuse(-EINVAL, "ursa_tls_ctx_new: versions from %s to %s (want "
                  "URSA_TLS_1_2 or URSA_TLS_1_3, the lower first)",
                  minv == URSA_TLS_1_2 ? "1.2" : minv == URSA_TLS_1_3 ? "1.3"
                                                                      : "?",
                  o->max_version ? "the given" : "the newest");
  if (server && (!o->cert_file || !o->key_file))
    return ursa__tls_refuse(-EINVAL, "ursa_tls_ctx_new: a server needs %s",
                  !o->cert_file ? "a certificate file (cert_file)"
                                : "a key file (key_file)");
  int r;
  if (o->cert_file && (r = file_readable("certificate", o->cert_file)))
    return r;
  if (o->key_file && (r = file_readable("key", o->key_file))) return r;
  if (o->ca_file && (r = file_readable("CA file", o->ca_file))) return r;
  if (o->ca_dir && (r = file_readable("CA directory", o->ca_dir))) return r;
  ursa_tls_ctx *c = calloc(1, sizeof(*c));
  if (!c) return -ENOMEM;
  c->server = !!server;
  c->refs = 1;
  c->handshake_ms = o->handshake_timeout_ms ? o->handshake_timeout_ms
                                            : 10000;
  if ((r = parse_alpn(c, o->alpn)) < 0) {
    free(c);
    return r;
  }
  ERR_clear_error();
  c->ssl = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!c->ssl) {
    free(c);
    return -ENOMEM;
  }
  SSL_CTX_set_min_proto_version(c->ssl, minv);
  if (o->max_version) SSL_CTX_set_max_proto_version(c->ssl, o->max_version);
  /* A write is whole: the memory BIO takes any size. */
  SSL_CTX_set_mode(c->ssl, SSL_MODE_RELEASE_BUFFERS);
  if (o->cert_file &&
      SSL_CTX_use_certificate_chain_file(c->ssl, o->cert_file) != 1) {
    r = ursa__tls_refuse(-EKEYREJECTED, "ursa_tls_ctx_new: certificate '%.200s': %s",
               o->cert_file, ursa__tls_reason());
    goto fail;
  }
  if (o->key_file &&
      (SSL_CTX_use_PrivateKey_file(c->ssl, o->key_file, SSL_FILETYPE_PEM) !=
           1 ||
       SSL_CTX_check_private_key(c->ssl) != 1)) {
    r = ursa__tls_refuse(-EKEYREJECTED, "ursa_tls_ctx_new: key '%.200s': %s "
               "(is it the certificate's key, in PEM?)", o->key_file,
               ursa__tls_reason());
    goto fail;
  }
  if (o->ca_file || o->ca_dir) {
    if (SSL_CTX_load_verify_locations(c->ssl, o->ca_file, o->ca_dir) != 1) {
      r = ursa__tls_refuse(-EKEYREJECTED, "ursa_tls_ctx_new: CA roots '%.200s': %s",
                 o->ca_file ? o->ca_file : o->ca_dir, ursa__tls_reason());
      goto fail;
    }
  } else if (!server) {
    SSL_CTX_set_default_verify_paths(c->ssl);
  }
  if (!server && !o->no_verify)
    SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
  if (server && o->verify_client)
    SSL_CTX_set_verify(c->ssl,
                       SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       NULL);
  if (c->alpn_len) {
    if (server)
      SSL_CTX_set_alpn_select_cb(c->ssl, alpn_select, c);
    else
      SSL_CTX_set_alpn_protos(c->ssl, c->alpn, c->alpn_len);
  }
  *out = c;
  return 0;
fail:
  SSL_CTX_free(c->ssl);
  free(c);
  return r;
}

void ursa__tls_ctx_unref(ursa_tls_ctx *c) {
  if (--c->refs == 0) {
    SSL_CTX_free(c->ssl);
    free(c);
  }
}

void ursa_tls_ctx_free(ursa_tls_ctx *c) {
  if (c) ursa__tls_ctx_unref(c);
}

int ursa_tls_ktls(char *why, size_t len) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    if (why && len) snprintf(why, len, "ktls: not probed: %s",
                             strerror(errno));
    return 0;
  }
  /* The ULP attaches only to a connected socket: ENOTCONN means the
   * kernel knows "tls"; ENOENT that it does not (CONFIG_TLS not set). */
  int r = setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls"));
  int e = errno;
  close(fd);
  int ok = r == 0 || e == ENOTCONN;
  if (why && len)
    snprintf(why, len, ok ? "ktls: the kernel has the tls ULP (not used: "
                            "ursa's TLS is in user space)"
                          : "ktls: not available: %s%s",
             strerror(e), e == ENOENT ? " (CONFIG_TLS is not set)" : "");
  return ok;
}
