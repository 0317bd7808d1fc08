/* http_core.h - ursa-http's HTTP/1.1 server side without any I/O: bytes in
 * (as they arrive, split anywhere), responses out (appended to a buffer
 * the caller writes), over llhttp.  Kept apart from the event loop so that
 * unit tests and the fuzz target drive exactly what the server runs.
 *
 * Routes: GET/HEAD /plaintext ("Hello, World!", text/plain) and /json
 * ({"message":"Hello, World!"}), POST /upload (reads a Content-Length or
 * chunked body and answers its length and CRC-32), and, with a
 * root, GET/HEAD of any other path as a file under it.  Each limit
 * answers its status and closes: 400 (bad request), 413 (body), 414
 * (URL), 431 (header section or header count); the caller's timers
 * answer 408 through http_conn_timeout().
 *
 * Files are the caller's I/O: a request for one stops the feed there
 * (HTTP_FEED_FILE, with c->file saying what), the caller opens and stats
 * the file as it likes (without blocking), http_file_head() writes the
 * status and headers (200, 206 for a single Range, 304 for a matching
 * If-None-Match or If-Modified-Since, 416, 403 for what is not a regular
 * file, 404) and says which bytes of the file the body is; the caller
 * sends them, then feeds the rest of its input again. */
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
  size_t max_out;          /* responses waiting in out: a feed stops after
                              the request that reaches it (0: no bound) */
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

/* A file request, from its request line and headers. */
typedef struct http_file {
  char path[4096]; /* under the root, decoded, no leading '/' */
  int is_head;
  /* Header values kept for the answer ("" when absent; a value too long
   * for its room is dropped, as a field the server does not use). */
  char range[128], if_range[64], if_modified_since[48], if_none_match[256];
} http_file;

/* What the caller found of the file. */
typedef struct http_file_info {
  int err;         /* 0, or the errno that open or stat gave */
  int regular;     /* a regular file (else 403: FIFO, device, directory) */
  uint64_t size;
  uint64_t ino;
  int64_t mtime_sec;
  uint32_t mtime_nsec;
} http_file_info;

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
  char field[20]; /* the current header's name, lower case, cut short */
  size_t field_len;
  int field_kind;   /* the current header is one the protocol checks
                       (Host, Expect, Transfer-Encoding) */
  size_t name_len;  /* the current header name's length */
  char expect[16];  /* the Expect value, cut short */
  size_t expect_len;
  char te[64];      /* the Transfer-Encoding values, cut short */
  size_t te_len;
  unsigned hosts;   /* Host fields */
  int host_bad;     /* a Host value with a byte no host has */
  int absolute;     /* the target is in absolute form */
  uint64_t begun;   /* requests whose first byte has come */
  int in_body;      /* the request's body is being read */
  int out_full;     /* the feed stopped at max_out */
  uint64_t body_bytes;
  uint32_t body_hash;
  int in_request; /* bytes of a request have come, its response not yet */
  int in_headers; /* ... and its header section is not complete */
  int status;     /* a limit's status, answered at the end of the feed */
  int closing;    /* nothing more is read: close once out is written */
  int field_which; /* the current header is one a file request keeps */
  int file_pending; /* the feed stopped at a file request: c->file */
  size_t fed;       /* bytes of the last feed taken */
  http_file *file;  /* allocated at the first file request */
} http_conn;

/* http_conn_feed()'s answer when it stopped at a file request. */
#define HTTP_FEED_FILE 2
/* ... and when it stopped because out reached cfg->max_out: the caller
 * writes out and feeds the rest (from c->fed) once it has gone. */
#define HTTP_FEED_FULL 3

void http_conn_init(http_conn *c, const http_cfg *cfg);
void http_conn_free(http_conn *c);

/* Feeds n bytes.  Responses are appended to out.  Returns 0 to go on
 * reading, 1 when the connection is to close once out is written
 * (Connection: close, HTTP/1.0 without keep-alive, or an error answered),
 * after which no more bytes are taken, HTTP_FEED_FULL (above), or
 * HTTP_FEED_FILE: the feed
 * stopped after a file request, having taken c->fed bytes; the caller
 * answers it (http_file_head) and feeds the rest after.  c->closing then
 * says whether the connection closes after the file. */
int http_conn_feed(http_conn *c, const char *data, size_t n, http_out *out);

/* Appends the file response's status and headers for what the caller
 * found, and sets *off and *len to the bytes of the file its body is (len
 * 0: none: HEAD, 304, 416, an error).  The caller then sends exactly len
 * bytes of the file from off, or closes the connection: a body cut short
 * cannot be framed. */
void http_file_head(http_conn *c, const http_file_info *fi, http_out *out,
                    uint64_t *off, uint64_t *len);

/* Opens path under the directory root for reading, refusing any way out
 * of it and any symlink: openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS),
 * else (ENOSYS: before 5.6, or a sandbox) one component at a time with
 * O_NOFOLLOW.  O_NONBLOCK, so that a FIFO does not wait for a writer.
 * Blocks: for a caller without an event loop, or on a worker thread.  A
 * descriptor, or -1 with errno. */
int http_open_beneath(int root, const char *path);

/* Answers c->file whole, blocking (http_open_beneath, fstat, pread into
 * out): for callers without an event loop (the unit tests, the fuzz
 * target).  Returns 0, or -1 when the body was cut short (the file shrank,
 * or out of memory: the caller must close). */
int http_file_answer_sync(http_conn *c, http_out *out);

/* An HTTP-date (IMF-fixdate, RFC 850 or asctime) as seconds since the
 * epoch, or -1. */
int64_t http_parse_date(const char *s);

/* The caller's timer fired with a request's header section, or its body,
 * incomplete (status 408): appends the answer and marks the connection
 * closing. */
void http_conn_timeout(http_conn *c, http_out *out);

/* Appends to out; 0, or -1 (out->failed set) when memory ran out. */
int http_out_put(http_out *out, const void *p, size_t n);
void http_out_free(http_out *out);

/* "Date: Tue, 01 Dec 2026 18:36:49 GMT\r\n" for time t, into buf (at
 * least 40 bytes). */
void http_date_line(long long t, char *buf);

/* CRC-32 (zlib's), continued from crc (start with 0). */
uint32_t http_crc32(uint32_t crc, const void *p, size_t n);

/* Decodes a request target's path (the part before '?') into dst (cap
 * bytes): %XX decoded, a NUL or a bad escape refused.  Returns its length,
 * or -1. */
long http_decode_path(const char *src, size_t n, char *dst, size_t cap);

#endif /* URSA_APPS_HTTP_CORE_H */
