/* ursa-fileio - random reads of one file at a fixed queue depth, for the
 * bench's file block: ursa's file requests on either backend, or libuv's
 * uv_fs_read (its thread pool), with the same offsets and the same
 * accounting.  Prints one line (or JSON) with reads, IOPS, CPU per read
 * and how much of the file was in the page cache before and after
 * (mincore), since a read's cost depends on that more than on anything
 * here.  --residency only measures that. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "apps/common/cli.h"
#include "ursa/ursa.h"

#define PROG "ursa-fileio"

static struct {
  const char *file, *backend;
  long bs, depth;
  double duration;
  int json, residency_only, no_inline, fixed;
} O = {.backend = "uring", .bs = 4096, .depth = 1, .duration = 2};

static int fd = -1;
static uint64_t blocks; /* bs-sized blocks in the file */
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t reads, errors, short_reads;
static uint64_t end_ns;
static int stopping;

static uint64_t next_off(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (rng % blocks) * (uint64_t)O.bs;
}

/* The share of the file's pages in the page cache, 0 to 1; -1 when the
 * file cannot be mapped. */
static double residency(void) {
  struct stat st;
  if (fstat(fd, &st) < 0 || st.st_size == 0) return -1;
  void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) return -1;
  long pg = sysconf(_SC_PAGESIZE);
  size_t n = ((size_t)st.st_size + (size_t)pg - 1) / (size_t)pg;
  unsigned char *v = malloc(n);
  double r = -1;
  if (v && mincore(m, (size_t)st.st_size, v) == 0) {
    size_t in = 0;
    for (size_t i = 0; i < n; i++) in += v[i] & 1;
    r = (double)in / (double)n;
  }
  free(v);
  munmap(m, (size_t)st.st_size);
  return r;
}

/* ---- ursa ---- */

typedef struct slot {
  ursa_fs_req req;
  char *buf;
  unsigned index; /* its registered buffer (--fixed) */
} slot;

static ursa_loop *loop;

static void on_read(ursa_fs_req *req, int res);

static void issue(slot *s) {
  int r = O.fixed ? ursa_fs_read_fixed(loop, &s->req, fd, s->index, s->buf,
                                       (size_t)O.bs, (int64_t)next_off(),
                                       on_read)
                  : ursa_fs_read(loop, &s->req, fd, s->buf, (size_t)O.bs,
                                 (int64_t)next_off(), on_read);
  if (r < 0) {
    fprintf(stderr, PROG ": ursa_fs_read%s: %s\n", O.fixed ? "_fixed" : "",
            ursa_strerror(r));
    errors++;
  }
}

/* Counts a read's result; true while the run goes on (the clock is read
 * every 64 reads). */
static int counted(long res) {
  if (res < 0)
    errors++;
  else if (res != O.bs)
    short_reads++;
  else
    reads++;
  if (stopping) return 0;
  if ((reads & 63) == 0 && cli_now_ns() >= end_ns) stopping = 1;
  return !stopping;
}

static void on_read(ursa_fs_req *req, int res) {
  if (counted(res)) issue((slot *)req);
}

static int run_ursa(void) {
  ursa_loop_options lo = {0};
  lo.backend = !strcmp(O.backend, "uring") ? URSA_BACKEND_URING
                                           : URSA_BACKEND_EPOLL;
  if (O.no_inline) lo.disable = URSA_FEAT_FILE_INLINE;
  int r = ursa_loop_new(&loop, &lo);
  if (r < 0) {
    char why[512];
    ursa_explain_setup_error(r, why, sizeof(why));
    fprintf(stderr, PROG ": the %s backend cannot start: %s\n", O.backend,
            why);
    return -1;
  }
  slot *s = calloc((size_t)O.depth, sizeof(*s));
  if (!s) return -1;
  struct iovec *iov = calloc((size_t)O.depth, sizeof(*iov));
  if (!iov) return -1;
  for (long i = 0; i < O.depth; i++) {
    if (posix_memalign((void **)&s[i].buf, 4096, (size_t)O.bs)) return -1;
    s[i].index = (unsigned)i;
    iov[i] = (struct iovec){s[i].buf, (size_t)O.bs};
  }
  /* --fixed: each slot's buffer registered once, read into by index. */
  if (O.fixed &&
      (r = ursa_fs_buffers_register(loop, iov, (unsigned)O.depth)) < 0) {
    fprintf(stderr, PROG ": --fixed: %s\n", ursa_error_detail());
  } else {
    for (long i = 0; i < O.depth; i++) issue(&s[i]);
    r = ursa_loop_run(loop, URSA_RUN_DEFAULT);
    if (r < 0) fprintf(stderr, PROG ": loop: %s\n", ursa_strerror(r));
  }
  free(iov);
  ursa_loop_close(loop);
  for (long i = 0; i < O.depth; i++) free(s[i].buf);
  free(s);
  return r < 0 ? -1 : 0;
}

/* ---- libuv: uv_fs_read on its thread pool ---- */

typedef struct uslot {
  uv_fs_t req;
  uv_buf_t buf;
} uslot;

static void uv_issue(uslot *s);

static void uv_on_read(uv_fs_t *req) {
  uslot *s = (uslot *)req;
  ssize_t res = req->result;
  uv_fs_req_cleanup(req);
  if (counted((long)res)) uv_issue(s);
}

static void uv_issue(uslot *s) {
  int r = uv_fs_read(uv_default_loop(), &s->req, fd, &s->buf, 1,
                     (int64_t)next_off(), uv_on_read);
  if (r < 0) {
    fprintf(stderr, PROG ": uv_fs_read: %s\n", uv_strerror(r));
    errors++;
  }
}

static int run_libuv(void) {
  uslot *s = calloc((size_t)O.depth, sizeof(*s));
  if (!s) return -1;
  for (long i = 0; i < O.depth; i++) {
    char *b;
    if (posix_memalign((void **)&b, 4096, (size_t)O.bs)) return -1;
    s[i].buf = uv_buf_init(b, (unsigned)O.bs);
    uv_issue(&s[i]);
  }
  uv_run(uv_default_loop(), UV_RUN_DEFAULT);
  for (long i = 0; i < O.depth; i++) free(s[i].buf.base);
  free(s);
  return 0;
}

static void usage(void) {
  printf(
      "usage: " PROG " --file PATH [options]\n"
      "  --file PATH      the file to read (it is not written)\n"
      "  --backend B      uring (default), ursa-epoll or libuv\n"
      "  --bs BYTES       bytes per read, at offsets that are multiples of "
      "it\n"
      "                   (default 4096)\n"
      "  --depth N        reads in flight (default 1; libuv's pool runs 4 "
      "at\n"
      "                   once unless UV_THREADPOOL_SIZE says more)\n"
      "  --duration S     seconds of reading (default 2)\n"
      "  --no-inline      every read through the ring or the pool (the "
      "A/B of\n"
      "                   URSA_FEAT_FILE_INLINE)\n"
      "  --fixed          read into registered buffers "
      "(ursa_fs_read_fixed)\n"
      "  --residency      print the share of the file in the page cache "
      "and exit\n"
      "  --json           one JSON object instead of the line\n"
      "  -h, --help       this text\n");
}

int main(int argc, char **argv) {
  static const struct option longs[] = {
      {"file", required_argument, NULL, 'f'},
      {"backend", required_argument, NULL, 'b'},
      {"bs", required_argument, NULL, 's'},
      {"depth", required_argument, NULL, 'q'},
      {"duration", required_argument, NULL, 'd'},
      {"residency", no_argument, NULL, 'r'},
      {"no-inline", no_argument, NULL, 'n'},
      {"fixed", no_argument, NULL, 'x'},
      {"json", no_argument, NULL, 'j'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  const char *flag, *v;
  int ch;
  while ((ch = cli_next(PROG, argc, argv, "h", longs, &flag, &v)) != 0) {
    switch (ch) {
      case -1: return 2;
      case 'h': usage(); return 0;
      case 'f': O.file = v; break;
      case 'b':
        if (strcmp(v, "uring") && strcmp(v, "ursa-epoll") &&
            strcmp(v, "libuv")) {
          fprintf(stderr, PROG ": unknown --backend '%s' (want uring, "
                  "ursa-epoll or libuv)\n", v);
          return 2;
        }
        O.backend = v;
        break;
      case 's':
        if (cli_long(PROG, flag, v, 512, 16 << 20, &O.bs) < 0) return 2;
        break;
      case 'q':
        if (cli_long(PROG, flag, v, 1, 4096, &O.depth) < 0) return 2;
        break;
      case 'd':
        if (cli_seconds(PROG, flag, v, 0.05, 3600, &O.duration) < 0) return 2;
        break;
      case 'r': O.residency_only = 1; break;
      case 'n': O.no_inline = 1; break;
      case 'x': O.fixed = 1; break;
      case 'j': O.json = 1; break;
    }
  }
  if (optind < argc) {
    fprintf(stderr, PROG ": unexpected argument '%s' (see --help)\n",
            argv[optind]);
    return 2;
  }
  if (!O.file) {
    fprintf(stderr, PROG ": --file is required (see --help)\n");
    return 2;
  }
  if (O.fixed && !strcmp(O.backend, "libuv")) {
    fprintf(stderr, PROG ": --fixed is ursa's registered buffers; libuv "
            "has none\n");
    return 2;
  }
  fd = open(O.file, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    fprintf(stderr, PROG ": --file '%s': %s\n", O.file, strerror(errno));
    return 2;
  }
  if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size < (uint64_t)O.bs) {
    fprintf(stderr, PROG ": --file '%s' is not a regular file of at least "
            "--bs (%ld) bytes\n", O.file, O.bs);
    return 2;
  }
  blocks = (uint64_t)st.st_size / (uint64_t)O.bs;
  double before = residency();
  if (O.residency_only) {
    printf(O.json ? "{\"residency\":%.4f}\n" : "residency %.4f\n", before);
    return 0;
  }
  double cpu0 = cli_cpu_s();
  uint64_t t0 = cli_now_ns();
  end_ns = t0 + (uint64_t)(O.duration * 1e9);
  int r = !strcmp(O.backend, "libuv") ? run_libuv() : run_ursa();
  double secs = (double)(cli_now_ns() - t0) / 1e9;
  double cpu = cli_cpu_s() - cpu0;
  double after = residency();
  close(fd);
  if (r < 0) return 1;
  double iops = (double)reads / secs;
  double us = reads ? cpu * 1e6 / (double)reads : 0;
  if (O.json)
    printf("{\"backend\":\"%s\",\"inline\":%s,\"bs\":%ld,\"depth\":%ld,\"reads\":%llu,"
           "\"errors\":%llu,\"short\":%llu,\"seconds\":%.3f,\"iops\":%.0f,"
           "\"cpu_s\":%.4f,\"cpu_us_per_read\":%.3f,"
           "\"residency_before\":%.4f,\"residency_after\":%.4f}\n",
           O.backend, O.no_inline ? "false" : "true", O.bs, O.depth,
           (unsigned long long)reads, (unsigned long long)errors, (unsigned long long)short_reads, secs,
           iops, cpu, us, before, after);
  else
    printf(PROG ": %s bs %ld depth %ld: %llu reads in %.2f s, %.0f IOPS, "
           "%.2f us CPU per read, %llu errors, residency %.2f -> %.2f\n",
           O.backend, O.bs, O.depth, (unsigned long long)reads, secs, iops,
           us, (unsigned long long)errors, before, after);
  return errors || short_reads ? 1 : 0;
}
