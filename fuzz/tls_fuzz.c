/* tls_fuzz.c - libFuzzer target over the TLS record path: the input is
 * what a peer sends a TLS server (and, with its first byte odd, a TLS
 * client) on ursa, over a socketpair, in chunks the input picks; whatever
 * it is, the handshake ends in a callback (0 or an error), the stream
 * closes and nothing leaks.  The certificate is made once, in memory. */
#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ursa/tls.h"

static ursa_loop *loop;
static ursa_tls_ctx *server_ctx, *client_ctx;
static int hs_done, closed;

/* A self-signed P-256 certificate and its key, written to files the
 * context reads (the API takes paths). */
static void make_cert(const char *cert, const char *key) {
  EVP_PKEY *pk = EVP_EC_gen("P-256");
  X509 *x = X509_new();
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, pk);
  X509_NAME *n = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                             (const unsigned char *)"fuzz", -1, -1, 0);
  X509_set_issuer_name(x, n);
  X509_sign(x, pk, EVP_sha256());
  FILE *f = fopen(cert, "w");
  PEM_write_X509(f, x);
  fclose(f);
  f = fopen(key, "w");
  PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
  fclose(f);
  X509_free(x);
  EVP_PKEY_free(pk);
}

static void on_closed(ursa_tls *t) {
  (void)t;
  closed = 1;
}
static void on_read(ursa_tls *t, ssize_t n, const void *buf) {
  (void)buf;
  if (n < 0) ursa_tls_close(t, on_closed);
}
static void on_hs(ursa_tls *t, int status) {
  hs_done = 1;
  if (status < 0 || ursa_tls_read_start(t, on_read) < 0)
    ursa_tls_close(t, on_closed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!loop) {
    if (ursa_loop_new(&loop, NULL) != 0) abort();
    char cert[] = "/tmp/ursa-tls-fuzz-cert.pem", key[] = "/tmp/ursa-tls-fuzz-key.pem";
    make_cert(cert, key);
    ursa_tls_options so = {0};
    so.cert_file = cert;
    so.key_file = key;
    so.handshake_timeout_ms = 1000;
    if (ursa_tls_ctx_new(&server_ctx, 1, &so) != 0) abort();
    ursa_tls_options co = {0};
    co.no_verify = 1;
    co.handshake_timeout_ms = 1000;
    if (ursa_tls_ctx_new(&client_ctx, 0, &co) != 0) abort();
  }
  if (size < 1) return 0;
  unsigned chunk = 1u + (data[0] >> 1);
  int as_client = data[0] & 1;
  data++;
  size--;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv))
    abort();
  ursa_stream s = {0};
  ursa_tls t = {0};
  if (ursa_stream_open(loop, &s, sv[0]) != 0) abort();
  if (ursa_tls_start(&t, as_client ? client_ctx : server_ctx, &s,
                     as_client ? "fuzz" : NULL, on_hs) != 0)
    abort();
  hs_done = closed = 0;
  size_t off = 0;
  char sink[65536];
  int rounds = 0;
  while (!closed && rounds++ < 100000) {
    if (off < size) {
      size_t n = size - off < chunk ? size - off : chunk;
      ssize_t w = send(sv[1], data + off, n, MSG_NOSIGNAL);
      if (w > 0) off += (size_t)w;
      if (off == size) shutdown(sv[1], SHUT_WR);
    }
    (void)!recv(sv[1], sink, sizeof(sink), 0);
    if (ursa_loop_run(loop, URSA_RUN_NOWAIT) < 0) abort();
  }
  if (!closed) { /* a handshake still waiting: the peer said nothing more */
    ursa_tls_close(&t, on_closed);
    while (!closed) ursa_loop_run(loop, URSA_RUN_ONCE);
  }
  close(sv[1]);
  return 0;
}
