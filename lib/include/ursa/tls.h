/* tls.h - TLS over ursa streams, in user space with OpenSSL 3: a TLS
 * stream with the contract of ursa_stream (reads deliver plaintext, writes
 * are whole and ordered, shutdown sends close_notify, close has one
 * callback).  The ciphertext moves through the stream's own reads and
 * writes (memory BIOs): nothing blocks, and it works on either backend.
 * A separate library (libursa_tls, //lib:ursa_tls), so that programs
 * without TLS do not link OpenSSL.
 *
 * Rules: those of ursa.h.  A TLS stream and its context belong to the
 * loop's thread; a context may be shared by many TLS streams of one
 * thread.  Errors are negative errnos, with ursa_tls_error_detail() naming
 * the cause in OpenSSL's words and what it means:
 *   -EKEYREJECTED  the peer's certificate was refused: unknown CA, host
 *                  name mismatch, expired, ... (the detail says which)
 *   -EPROTO        the TLS protocol failed: no common version or cipher,
 *                  a bad record, garbage from the peer, an alert
 *   -ETIMEDOUT     the handshake did not finish in time
 *   -ECONNRESET    the peer closed before the handshake finished
 *   -ECONNABORTED  (reads) the peer closed without close_notify: the data
 *                  may have been cut short
 *   URSA_EOF       (reads) the peer sent close_notify: a clean end
 * kTLS (handing the keys to the kernel) is probed by ursa_tls_ktls() and
 * not used: see docs/DESIGN.md. */
#ifndef URSA_TLS_H
#define URSA_TLS_H

#include "ursa/ursa.h"

#ifdef __cplusplus
extern "C" {
#endif

#define URSA_TLS_1_2 0x0303
#define URSA_TLS_1_3 0x0304

typedef struct ursa_tls_ctx ursa_tls_ctx; /* opaque: OpenSSL's SSL_CTX */

typedef struct ursa_tls_options {
  const char *cert_file; /* PEM certificate chain: a server's (required), or
                            a client's own for client verification */
  const char *key_file;  /* its PEM private key */
  const char *ca_file;   /* PEM roots to verify the peer against; NULL with
                            ca_dir NULL: the system's default roots */
  const char *ca_dir;    /* a directory of hashed roots (c_rehash) */
  int no_verify;         /* client: 1 accepts any certificate and name
                            (--tls-insecure); 0, the default, verifies
                            both.  Server: ignored */
  int verify_client;     /* server: 1 asks for and verifies a client
                            certificate against ca_file/ca_dir */
  const char *alpn;      /* protocols, comma separated ("h2,http/1.1");
                            a server picks the first of the client's it
                            has; NULL: none */
  int min_version;       /* URSA_TLS_1_2 (0: the default) or URSA_TLS_1_3 */
  int max_version;       /* 0: the newest OpenSSL has */
  uint32_t handshake_timeout_ms; /* 0: 10000 */
} ursa_tls_options;

/* Why the last TLS refusal or failure on this thread happened ("TLS
 * handshake: unknown CA: ... (unable to get local issuer certificate)"). */
URSA_EXPORT const char *ursa_tls_error_detail(void);

/* Makes a context for servers (server != 0) or clients.  Files are read
 * now.  Returns 0 and sets *ctx, -EINVAL (a NULL, a bad version, a server
 * without certificate or key; the detail names it), -ENOENT (a file that
 * cannot be read, named), -EKEYREJECTED (a key that does not match its
 * certificate, a file that is not PEM), -ENOMEM. */
URSA_EXPORT int ursa_tls_ctx_new(ursa_tls_ctx **ctx, int server,
                                 const ursa_tls_options *opts);
/* Frees a context; TLS streams made with it keep it until they close. */
URSA_EXPORT void ursa_tls_ctx_free(ursa_tls_ctx *ctx);

typedef struct ursa_tls ursa_tls;
typedef struct ursa_tls_write_req ursa_tls_write_req;
struct ursa__tls;

/* status 0: the handshake is done (ursa_tls_alpn() and
 * ursa_tls_version() say what was agreed); < 0: it failed (see above),
 * and the TLS stream is to be closed. */
typedef void (*ursa_tls_handshake_cb)(ursa_tls *t, int status);
/* As ursa_read_cb: n > 0 bytes of plaintext, valid during the call;
 * URSA_EOF, -ECONNABORTED or another error ends reading. */
typedef void (*ursa_tls_read_cb)(ursa_tls *t, ssize_t n, const void *buf);
typedef void (*ursa_tls_write_cb)(ursa_tls_write_req *w, int status);
typedef void (*ursa_tls_shutdown_cb)(ursa_tls *t, int status);
typedef void (*ursa_tls_close_cb)(ursa_tls *t);

struct ursa_tls {
  void *data;          /* public */
  ursa_stream *stream; /* read-only: the stream under it */
  struct ursa__tls *p; /* private */
};

struct ursa_tls_write_req {
  void *data;  /* public */
  size_t len;  /* read-only */
  /* private */
  ursa_tls *tls;
  ursa_tls_write_cb cb;
  ursa_write_req w; /* the ciphertext it became */
  void *cipher;
};

/* Starts TLS on an open stream (accepted, connected or opened), as a
 * server or a client by the context's kind.  The TLS stream takes the
 * stream over: its data field and read callback are ursa's from now on
 * (use t->data), and it is closed by ursa_tls_close().  A client checks
 * the server's certificate against server_name (NULL with no_verify
 * only) and sends it as SNI.  cb runs once.  Returns 0, -EINVAL, -EBUSY
 * (the stream is reading already) or -ENOMEM. */
URSA_EXPORT int ursa_tls_start(ursa_tls *t, ursa_tls_ctx *ctx,
                               ursa_stream *s, const char *server_name,
                               ursa_tls_handshake_cb cb);

/* Starts delivering plaintext (after the handshake callback). */
URSA_EXPORT int ursa_tls_read_start(ursa_tls *t, ursa_tls_read_cb cb);

/* Encrypts len bytes of buf now (buf may be reused when this returns) and
 * queues the records; cb runs when they are sent.  Writes are whole and
 * in order.  Returns 0, -ENOTCONN before the handshake is done, -EPIPE
 * after ursa_tls_shutdown(), -EINVAL, -ENOMEM. */
URSA_EXPORT int ursa_tls_write(ursa_tls_write_req *w, ursa_tls *t,
                               const void *buf, size_t len,
                               ursa_tls_write_cb cb);

/* Sends close_notify after the writes queued, then shuts the stream's
 * write side; cb runs once it is sent. */
URSA_EXPORT int ursa_tls_shutdown(ursa_tls *t, ursa_tls_shutdown_cb cb);

/* Closes the stream and frees the TLS state; cb runs once at the end. */
URSA_EXPORT int ursa_tls_close(ursa_tls *t, ursa_tls_close_cb cb);

/* After the handshake: the ALPN protocol agreed ("" when none), and the
 * version ("TLSv1.3"). */
URSA_EXPORT const char *ursa_tls_alpn(const ursa_tls *t);
URSA_EXPORT const char *ursa_tls_version(const ursa_tls *t);

/* Whether the kernel could take the keys (the tls ULP): 1 when it knows
 * the ULP (setsockopt(TCP_ULP, "tls") on an unconnected TCP socket gives
 * ENOTCONN, not ENOENT), else 0; why says which in words ("ktls: not
 * available: No such file or directory (CONFIG_TLS is not set)"). */
URSA_EXPORT int ursa_tls_ktls(char *why, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* URSA_TLS_H */
