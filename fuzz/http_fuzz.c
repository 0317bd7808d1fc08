/* http_fuzz.c - libFuzzer over ursa-http's request path (http_core):
 * arbitrary bytes fed in pieces the input itself chooses, with a root that
 * holds a file and a symlink out of it.  Checks that every byte written
 * belongs to whole responses with a status line, that nothing follows a
 * closing answer, that the file outside the root is never sent, and that
 * the path decoder stays within its buffer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>

#include "apps/http/http_core.h"

static http_cfg cfg;
static const char outside_mark[] = "OUTSIDE-THE-ROOT-7f3a";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  char dir[] = "/tmp/ursa-http-fuzz-XXXXXX";
  if (!mkdtemp(dir)) abort();
  char path[256];
  snprintf(path, sizeof(path), "%s/root", dir);
  mkdir(path, 0700);
  snprintf(path, sizeof(path), "%s/root/a.txt", dir);
  FILE *f = fopen(path, "w");
  fputs("inside", f);
  fclose(f);
  snprintf(path, sizeof(path), "%s/secret", dir);
  f = fopen(path, "w");
  fputs(outside_mark, f);
  fclose(f);
  char link[256];
  snprintf(link, sizeof(link), "%s/root/s", dir);
  if (symlink(path, link) < 0) abort();
  snprintf(path, sizeof(path), "%s/root", dir);
  cfg = (http_cfg){.max_url = 512, .max_header_bytes = 2048,
                   .max_headers = 16, .max_body = 4096, .max_out = 1024,
                   .root_fd = open(path, O_RDONLY | O_DIRECTORY),
                   .date = "Date: Tue, 01 Dec 2026 00:00:00 GMT\r\n"};
  return 0;
}

/* Every response starts "HTTP/1.1 NNN " and carries Content-Length; the
 * bytes after its header are its body (none for HEAD: not checked). */
static void check_out(const http_out *o) {
  if (o->len == 0) return;
  if (o->len < 13 || memcmp(o->buf, "HTTP/1.1 ", 9) != 0) abort();
  if (memmem(o->buf, o->len, outside_mark, sizeof(outside_mark) - 1))
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  http_conn c;
  http_conn_init(&c, &cfg);
  http_out out = {0};
  size_t at = 0;
  int closed = 0;
  while (at < size) {
    /* The next byte says how long the next piece is. */
    size_t n = 1 + data[at] % 64;
    at++;
    if (at + n > size) n = size - at;
    size_t before = out.len;
    const char *piece = (const char *)data + at;
    size_t left = n;
    int r = http_conn_feed(&c, piece, left, &out);
    if (closed && out.len != before) abort(); /* nothing after closing */
    if (closed && !r) abort();
    /* A file request stops the feed: answered, then the rest fed; so does
     * a full out: written (checked, emptied), then the rest fed. */
    while (r == HTTP_FEED_FILE || r == HTTP_FEED_FULL) {
      if (c.fed > left) abort();
      if (r == HTTP_FEED_FULL) {
        if (out.len < cfg.max_out) abort();
        check_out(&out);
        out.len = 0;
      } else if (http_file_answer_sync(&c, &out) < 0) {
        abort(); /* no file shrinks */
      }
      piece += c.fed;
      left -= c.fed;
      r = c.closing ? 1 : http_conn_feed(&c, piece, left, &out);
    }
    closed = r;
    at += n;
  }
  if (!closed && (size & 1)) http_conn_timeout(&c, &out);
  check_out(&out);
  http_out_free(&out);
  http_conn_free(&c);
  char dst[64];
  long n = http_decode_path((const char *)data, size, dst, sizeof(dst));
  if (n >= (long)sizeof(dst) || (n >= 0 && (long)strlen(dst) != n)) abort();
  return 0;
}
