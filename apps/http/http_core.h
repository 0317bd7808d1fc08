/* http_core.h - ursa-http's HTTP/1.1 server side without any I/O: bytes in
 * (as they arrive, split anywhere), responses out (appended to a buffer
 * the caller writes), over llhttp.  Kept apart from the event loop so that
 * unit tests and the fuzz target drive exactly what the server runs.
 *
 * Routes: GET/HEAD /plaintext ("Hello, World!", text/plain) and /json
 * ({"message":"Hello, World!"}), POST /upload (reads a Content-Length or
 * chunked body and answers its length and FNV-1a checksum), and, with a
 * root, GET/HEAD of any other path as a file under it.  Each limit
 * answers its status and closes: 400 (bad request), 413 (body), 414
 * (URL), 431 (header section or header count); the caller's timers
 * answer 408 through http_conn_timeout(). */
#ifndef URSA_APPS_HTTP_CORE_H
#define URSA_APPS_HTTP_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "llhttp.h"

typedef struct http_cfg {
  size_t max_url;          /* bytes of the request target */
  size_t max_header_bytes; /* bytes of the request line and headers */
  unsigned max_headers;    /* header fields */
  uint64_t max_body;       /* bytes of a request body */
  uint64_t max_file;       /* bytes of a file served from the root */
  int root_fd;             /* the --root directory, or -1: no files */
  const char *date;        /* "Date: ...\r\n", kept current by the caller
                              (http_date_line) */
} http_cfg;

/* The responses of one feed, appended; the caller writes buf[0..len). */
typedef struct http_out {
  char *buf;
  size_t len, cap;
  int failed; /* an allocation failed: the caller closes */
} http_out;

/* Counters, per connection, that the server sums. */
typedef struct http_counts {
  uint64_t requests;
  uint64_t by_class[6]; /* responses by status / 100 (1xx .. 5xx) */
} http_counts;

typedef struct http_conn {
  llhttp_t parser;
  const http_cfg *cfg;
  http_out *out; /* during a feed */
  http_counts counts;
  /* the request being read */
  char *url;
  size_t url_len, url_cap;
  size_t header_bytes;
  unsigned headers;
  char field[16]; /* the current header's name, lower case, cut short */
  size_t field_len;
  int field_expect; /* the current header is Expect */
  int expect_continue;
  uint64_t body_bytes;
  uint32_t body_hash;
  int in_request; /* bytes of a request have come, its response not yet */
  int in_headers; /* ... and its header section is not complete */
  int status;     /* a limit's status, answered at the end of the feed */
  int closing;    /* nothing more is read: close once out is written */
} http_conn;

void http_conn_init(http_conn *c, const http_cfg *cfg);
void http_conn_free(http_conn *c);

/* Feeds n bytes.  Responses are appended to out.  Returns 0 to go on
 * reading, 1 when the connection is to close once out is written
 * (Connection: close, HTTP/1.0 without keep-alive, or an error answered),
 * after which no more bytes are taken. */
int http_conn_feed(http_conn *c, const char *data, size_t n, http_out *out);

/* The caller's timer fired with a request's header section incomplete
 * (status 408): appends the answer and marks the connection closing. */
void http_conn_timeout(http_conn *c, http_out *out);

/* Appends to out; 0, or -1 (out->failed set) when memory ran out. */
int http_out_put(http_out *out, const void *p, size_t n);
void http_out_free(http_out *out);

/* "Date: Tue, 01 Dec 2026 18:36:49 GMT\r\n" for time t, into buf (at
 * least 40 bytes). */
void http_date_line(long long t, char *buf);

/* FNV-1a, 32 bits, continued from h (start with 2166136261). */
uint32_t http_fnv1a(uint32_t h, const void *p, size_t n);

/* Decodes a request target's path (the part before '?') into dst (cap
 * bytes): %XX decoded, a NUL or a bad escape refused.  Returns its length,
 * or -1. */
long http_decode_path(const char *src, size_t n, char *dst, size_t cap);

#endif /* URSA_APPS_HTTP_CORE_H */
