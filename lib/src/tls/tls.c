/* tls.c - TLS over ursa streams with OpenSSL's memory BIOs, on the public
 * API only (a layer above the library).  Ciphertext the stream reads goes
 * into the read BIO; what OpenSSL writes into the write BIO is taken out
 * after each step and sent with ursa_write(); plaintext comes out of
 * SSL_read() into the reader's callback.  Contexts are in tls_ctx.c. */
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

enum { T_HANDSHAKE, T_OPEN, T_FAILED, T_CLOSING };

struct ursa__tls {
  ursa_tls *t;
  ursa_tls_ctx *ctx;
  SSL *ssl;
  BIO *rbio, *wbio; /* owned by ssl */
  int state;
  int shut;      /* ursa_tls_shutdown() called */
  int reading;   /* the reader started */
  int read_ended;
  int in_cb;     /* inside a callback of ours: a close waits for it */
  int close_asked;
  ursa_tls_handshake_cb hs_cb;
  ursa_tls_read_cb read_cb;
  ursa_tls_shutdown_cb shutdown_cb;
  ursa_tls_close_cb close_cb;
  ursa_timer hs_timer;
  ursa_write_req shut_w; /* close_notify's records */
  void *shut_buf;
};

/* ---- the record path ---- */

static void on_cipher_read(ursa_stream *s, ssize_t n, const void *buf);
static void progress(struct ursa__tls *p);

/* Handshake records and alerts: a write of its own each time. */
typedef struct hs_write {
  ursa_write_req w;
  char bytes[];
} hs_write;

static void on_hs_written(ursa_write_req *w, int status) {
  (void)status;
  free(w->data);
}

static int send_pending(struct ursa__tls *p) {
  size_t n = BIO_ctrl_pending(p->wbio);
  if (!n) return 0;
  hs_write *h = malloc(sizeof(*h) + n);
  if (!h) return -ENOMEM;
  int got = BIO_read(p->wbio, h->bytes, (int)n);
  if (got <= 0) {
    free(h);
    return -EIO;
  }
  h->w = (ursa_write_req){0};
  h->w.data = h;
  int r = ursa_write(&h->w, p->t->stream, h->bytes, (size_t)got, 0,
                     on_hs_written);
  if (r < 0) free(h);
  return r;
}

/* Why a handshake or record step failed, as a code and a detail. */
static int failure(struct ursa__tls *p, int ssl_err, const char *when) {
  long v = SSL_get_verify_mode(p->ssl) == SSL_VERIFY_NONE
               ? X509_V_OK
               : SSL_get_verify_result(p->ssl);
  if (v != X509_V_OK) {
    const char *what = X509_verify_cert_error_string(v);
    const char *means =
        v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
                v == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
                v == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
            ? "unknown CA: the certificate is not signed by a root this "
              "side trusts (ca_file, ca_dir)"
        : v == X509_V_ERR_HOSTNAME_MISMATCH
            ? "host name mismatch: the certificate is not for the name "
              "asked for"
        : v == X509_V_ERR_CERT_HAS_EXPIRED ? "the certificate has expired"
                                           : "the certificate was refused";
    ursa__tls_refuse(0, "TLS %s: %s (%s)", when, means, what);
    return -EKEYREJECTED;
  }
  unsigned long e = ERR_peek_last_error();
  int reason = ERR_GET_REASON(e);
  const char *means =
      reason == SSL_R_UNSUPPORTED_PROTOCOL ||
              reason == SSL_R_TLSV1_ALERT_PROTOCOL_VERSION ||
              reason == SSL_R_NO_PROTOCOLS_AVAILABLE ||
              reason == SSL_R_WRONG_VERSION_NUMBER
          ? "protocol version: no version both sides allow, or not TLS"
      : reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA ||
              reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE ||
              reason == SSL_R_TLSV1_ALERT_DECRYPT_ERROR ||
              reason == SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN
          ? "the peer refused this side's certificate"
      : reason == SSL_R_PACKET_LENGTH_TOO_LONG ||
              reason == SSL_R_RECORD_LENGTH_MISMATCH ||
              reason == SSL_R_HTTP_REQUEST || reason == SSL_R_HTTPS_PROXY_REQUEST
          ? "the peer does not speak TLS (garbage or plain text)"
          : "the TLS protocol failed";
  ursa__tls_refuse(0, "TLS %s: %s (%s, SSL error %d)", when,
           means, e ? ursa__tls_reason() : "no reason given", ssl_err);
  return -EPROTO;
}

static void end_handshake(struct ursa__tls *p, int status) {
  ursa_timer_stop(&p->hs_timer);
  p->state = status == 0 ? T_OPEN : T_FAILED;
  if (status < 0) ursa_read_stop(p->t->stream);
  p->in_cb++;
  p->hs_cb(p->t, status);
  p->in_cb--;
}

static void deliver_eof(struct ursa__tls *p, ssize_t why) {
  if (p->read_ended) return;
  p->read_ended = 1;
  ursa_read_stop(p->t->stream);
  if (!p->reading) return;
  p->in_cb++;
  p->read_cb(p->t, why, NULL);
  p->in_cb--;
}

static void progress(struct ursa__tls *p) {
  if (p->state == T_HANDSHAKE) {
    ERR_clear_error();
    int r = SSL_do_handshake(p->ssl);
    send_pending(p);
    if (r == 1) {
      end_handshake(p, 0);
      if (p->close_asked || p->state != T_OPEN) return;
    } else {
      int e = SSL_get_error(p->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return;
      end_handshake(p, failure(p, e, "handshake"));
      return;
    }
  }
  if (p->state != T_OPEN || !p->reading || p->read_ended) return;
  char buf[16384];
  while (!p->close_asked && p->reading && !p->read_ended) {
    ERR_clear_error();
    int n = SSL_read(p->ssl, buf, sizeof(buf));
    if (n > 0) {
      p->in_cb++;
      p->read_cb(p->t, n, buf);
      p->in_cb--;
      continue;
    }
    int e = SSL_get_error(p->ssl, n);
    send_pending(p); /* a key update's answer, an alert */
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
    if (e == SSL_ERROR_ZERO_RETURN) {
      deliver_eof(p, URSA_EOF);
    } else {
      int code = failure(p, e, "record");
      deliver_eof(p, code);
    }
    break;
  }
}

static void on_cipher_read(ursa_stream *s, ssize_t n, const void *buf) {
  ursa_tls *t = s->data;
  struct ursa__tls *p = t->p;
  if (n < 0) {
    if (p->state == T_HANDSHAKE) {
      if (n == URSA_EOF || n == -ECONNRESET) {
        ursa__tls_refuse(0, "TLS handshake: the peer closed "
                 "the connection before the handshake finished");
        end_handshake(p, -ECONNRESET);
      } else {
        ursa__tls_refuse(0, "TLS handshake: %s",
                 ursa_strerror((int)n));
        end_handshake(p, (int)n);
      }
      return;
    }
    if (n == URSA_EOF) {
      ursa__tls_refuse(0, "TLS: the peer closed without "
               "close_notify: what came may have been cut short");
      deliver_eof(p, -ECONNABORTED);
    } else {
      deliver_eof(p, n);
    }
    return;
  }
  if (BIO_write(p->rbio, buf, (int)n) != (int)n) {
    deliver_eof(p, -ENOMEM);
    return;
  }
  progress(p);
}

static void on_hs_timeout(ursa_timer *tm, int status) {
  struct ursa__tls *p = tm->data;
  if (status < 0 || p->state != T_HANDSHAKE) return;
  ursa__tls_refuse(0, "TLS handshake: not finished after %u "
           "ms", p->ctx->handshake_ms);
  end_handshake(p, -ETIMEDOUT);
}

int ursa_tls_start(ursa_tls *t, ursa_tls_ctx *ctx, ursa_stream *s,
                   const char *server_name, ursa_tls_handshake_cb cb) {
  if (!t || !ctx || !s || !cb)
    return ursa__tls_refuse(-EINVAL, "ursa_tls_start: NULL %s",
                  !t ? "TLS stream" : !ctx ? "context" : !s ? "stream"
                                                           : "callback");
  if (!ctx->server && !server_name &&
      SSL_CTX_get_verify_mode(ctx->ssl) != SSL_VERIFY_NONE)
    return ursa__tls_refuse(-EINVAL, "ursa_tls_start: a client that verifies needs "
                  "the server's name");
  struct ursa__tls *p = calloc(1, sizeof(*p));
  if (!p) return -ENOMEM;
  p->ssl = SSL_new(ctx->ssl);
  p->rbio = BIO_new(BIO_s_mem());
  p->wbio = BIO_new(BIO_s_mem());
  if (!p->ssl || !p->rbio || !p->wbio) {
    SSL_free(p->ssl);
    BIO_free(p->rbio);
    BIO_free(p->wbio);
    free(p);
    return -ENOMEM;
  }
  /* An empty read BIO says "retry", not EOF. */
  BIO_set_mem_eof_return(p->rbio, -1);
  SSL_set_bio(p->ssl, p->rbio, p->wbio);
  if (ctx->server) {
    SSL_set_accept_state(p->ssl);
  } else {
    SSL_set_connect_state(p->ssl);
    if (server_name) {
      SSL_set_tlsext_host_name(p->ssl, server_name);
      if (SSL_CTX_get_verify_mode(ctx->ssl) != SSL_VERIFY_NONE)
        SSL_set1_host(p->ssl, server_name);
    }
  }
  p->t = t;
  p->ctx = ctx;
  p->hs_cb = cb;
  t->p = p;
  t->stream = s;
  s->data = t;
  int r = ursa_read_start(s, on_cipher_read);
  if (r < 0) {
    SSL_free(p->ssl);
    free(p);
    t->p = NULL;
    return r;
  }
  ctx->refs++;
  p->hs_timer.data = p;
  ursa_timer_start(s->loop, &p->hs_timer, ctx->handshake_ms, 0,
                   on_hs_timeout);
  if (!ctx->server) progress(p); /* the ClientHello */
  return 0;
}

int ursa_tls_read_start(ursa_tls *t, ursa_tls_read_cb cb) {
  if (!t || !t->p || !cb)
    return ursa__tls_refuse(-EINVAL, "ursa_tls_read_start: NULL %s",
                  !cb ? "callback" : "TLS stream");
  struct ursa__tls *p = t->p;
  if (p->state != T_OPEN) return -ENOTCONN;
  p->read_cb = cb;
  p->reading = 1;
  /* Records that came with the handshake's last flight are in the BIO. */
  progress(p);
  return 0;
}

static void on_user_written(ursa_write_req *w, int status) {
  ursa_tls_write_req *u = w->data;
  free(u->cipher);
  u->cipher = NULL;
  u->cb(u, status);
}

int ursa_tls_write(ursa_tls_write_req *w, ursa_tls *t, const void *buf,
                   size_t len, ursa_tls_write_cb cb) {
  if (!w || !t || !t->p || !buf || !len || !cb)
    return ursa__tls_refuse(-EINVAL, "ursa_tls_write: %s",
                  !len ? "len 0" : "NULL argument");
  struct ursa__tls *p = t->p;
  if (p->state != T_OPEN) return -ENOTCONN;
  if (p->shut) return -EPIPE;
  if (len > (size_t)1 << 30)
    return ursa__tls_refuse(-EINVAL, "ursa_tls_write: over 1 GiB at once");
  ERR_clear_error();
  size_t done = 0;
  while (done < len) {
    /* SSL_write takes an int: large writes go in parts. */
    size_t part = len - done > (1u << 28) ? (1u << 28) : len - done;
    int r = SSL_write(p->ssl, (const char *)buf + done, (int)part);
    if (r <= 0) return failure(p, SSL_get_error(p->ssl, r), "write");
    done += (size_t)r;
  }
  size_t n = BIO_ctrl_pending(p->wbio);
  char *c = malloc(n ? n : 1);
  if (!c) return -ENOMEM;
  int got = BIO_read(p->wbio, c, (int)n);
  w->tls = t;
  w->cb = cb;
  w->len = len;
  w->cipher = c;
  w->w = (ursa_write_req){0};
  w->w.data = w;
  int r = ursa_write(&w->w, t->stream, c, (size_t)(got > 0 ? got : 0), 0,
                     on_user_written);
  if (r < 0) {
    free(c);
    w->cipher = NULL;
  }
  return r;
}

static void on_tls_shut(ursa_stream *s, int status) {
  ursa_tls *t = s->data;
  struct ursa__tls *p = t->p;
  if (p->shutdown_cb) {
    p->in_cb++;
    p->shutdown_cb(t, status);
    p->in_cb--;
  }
}

int ursa_tls_shutdown(ursa_tls *t, ursa_tls_shutdown_cb cb) {
  if (!t || !t->p) return ursa__tls_refuse(-EINVAL, "ursa_tls_shutdown: NULL");
  struct ursa__tls *p = t->p;
  if (p->state != T_OPEN) return -ENOTCONN;
  if (p->shut) return -EALREADY;
  p->shut = 1;
  p->shutdown_cb = cb;
  ERR_clear_error();
  SSL_shutdown(p->ssl); /* writes close_notify into the BIO */
  int r = send_pending(p);
  if (r < 0) return r;
  return ursa_shutdown(t->stream, on_tls_shut);
}

static void on_stream_closed(ursa_handle *h) {
  ursa_tls *t = h->data;
  struct ursa__tls *p = t->p;
  ursa_tls_close_cb cb = p->close_cb;
  SSL_free(p->ssl);
  ursa__tls_ctx_unref(p->ctx);
  free(p);
  t->p = NULL;
  if (cb) cb(t);
}

int ursa_tls_close(ursa_tls *t, ursa_tls_close_cb cb) {
  if (!t || !t->p) return ursa__tls_refuse(-EINVAL, "ursa_tls_close: NULL");
  struct ursa__tls *p = t->p;
  if (p->close_asked) return -EALREADY;
  p->close_asked = 1;
  p->close_cb = cb;
  p->state = T_CLOSING;
  ursa_timer_stop(&p->hs_timer);
  return ursa_stream_close(t->stream, on_stream_closed);
}

const char *ursa_tls_alpn(const ursa_tls *t) {
  static __thread char buf[256];
  const unsigned char *a = NULL;
  unsigned n = 0;
  if (t && t->p) SSL_get0_alpn_selected(t->p->ssl, &a, &n);
  snprintf(buf, sizeof(buf), "%.*s", (int)n, a ? (const char *)a : "");
  return buf;
}

const char *ursa_tls_version(const ursa_tls *t) {
  return t && t->p ? SSL_get_version(t->p->ssl) : "";
}

