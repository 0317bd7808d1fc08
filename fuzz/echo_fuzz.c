/* echo_fuzz.c - libFuzzer target: bytes fed into an echo server on ursa
 * over a socketpair, in chunk sizes the input picks; every byte must come
 * back, in order, and the loop must end clean. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ursa/ursa.h"

typedef struct reply {
  ursa_write_req w;
  char buf[];
} reply;

static ursa_loop *loop;
static int closed;

static void on_written(ursa_write_req *w, int status) {
  (void)status;
  free(w->data);
}
static void on_close(ursa_handle *h) {
  (void)h;
  closed = 1;
}
static void on_shut(ursa_stream *s, int status) {
  (void)status;
  ursa_stream_close(s, on_close);
}
static void on_read(ursa_stream *s, ssize_t n, const void *buf) {
  if (n < 0) {
    if (n != URSA_EOF || ursa_shutdown(s, on_shut) < 0)
      ursa_stream_close(s, on_close);
    return;
  }
  reply *r = calloc(1, sizeof(*r) + (size_t)n);
  if (!r) abort();
  memcpy(r->buf, buf, (size_t)n);
  r->w.data = r;
  if (ursa_write(&r->w, s, r->buf, (size_t)n, 0, on_written) < 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!loop) {
    ursa_loop_options o = {0};
    o.buf_count = 4; /* small, so that the ring runs dry */
    o.buf_size = 64;
    if (ursa_loop_new(&loop, &o) != 0) abort();
  }
  if (size < 1) return 0;
  unsigned chunk = 1u + data[0]; /* the first byte picks the write size */
  data++;
  size--;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv))
    abort();
  ursa_stream s = {0};
  if (ursa_stream_open(loop, &s, sv[0]) != 0 ||
      ursa_read_start(&s, on_read) != 0)
    abort();
  closed = 0;
  size_t off = 0, back = 0;
  char *got = malloc(size + 1);
  while (!closed) {
    if (off < size) {
      size_t n = size - off < chunk ? size - off : chunk;
      ssize_t w = send(sv[1], data + off, n, MSG_NOSIGNAL);
      if (w > 0) off += (size_t)w;
      if (off == size) shutdown(sv[1], SHUT_WR);
    } else if (size == 0 && off == 0) {
      shutdown(sv[1], SHUT_WR);
      off = 1; /* once */
    }
    ssize_t r = recv(sv[1], got + back, size + 1 - back, 0);
    if (r > 0) back += (size_t)r;
    if (ursa_loop_run(loop, URSA_RUN_NOWAIT) < 0) abort();
  }
  for (;;) { /* what was echoed before the close */
    ssize_t r = recv(sv[1], got + back, size + 1 - back, 0);
    if (r <= 0) break;
    back += (size_t)r;
  }
  if (back != size || memcmp(got, data, size) != 0) abort();
  free(got);
  close(sv[1]);
  while (ursa_loop_alive(loop)) ursa_loop_run(loop, URSA_RUN_ONCE);
  return 0;
}
