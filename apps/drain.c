/* drain.c - ursa-drain: the write-queue drain, for the bench.  Queues N
 * small writes on one TCP stream at once, lets the loop send them while a
 * reader thread takes and checksums every byte at the other end, and says
 * how long the drain took per write.  A queue that costs the same per write
 * at 10,000 and at 160,000 writes drains in linear time. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "apps/common/cli.h"
#include "ursa/ursa.h"

#define PROG "ursa-drain"

static uint64_t fnv(uint64_t h, const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

typedef struct {
  int fd;
  size_t want;
  size_t got;
  uint64_t sum;
} reader;

static void *read_all(void *arg) {
  reader *r = arg;
  static unsigned char buf[1 << 16];
  r->sum = 1469598103934665603ull;
  while (r->got < r->want) {
    ssize_t n = read(r->fd, buf, sizeof(buf));
    if (n <= 0) break;
    r->sum = fnv(r->sum, buf, (size_t)n);
    r->got += (size_t)n;
  }
  return NULL;
}

static long done_writes, failed_writes;

static void on_write(ursa_write_req *w, int status) {
  (void)w;
  if (status) failed_writes++;
  done_writes++;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: ursa-drain [options]\n"
          "  --writes N      writes queued at once (default 40000)\n"
          "  --size B        bytes per write (default 100)\n"
          "  --backend B     uring (default) or epoll\n"
          "  --write-batch N writes per sendmsg (default: the library's)\n"
          "  --json FILE     the result as JSON\n"
          "  -h, --help      this text\n");
}

int main(int argc, char **argv) {
  long writes = 40000, size = 100, batch = 0;
  const char *backend = "uring", *json = NULL;
  static const struct option longs[] = {
      {"writes", required_argument, NULL, 'n'},
      {"size", required_argument, NULL, 's'},
      {"backend", required_argument, NULL, 'b'},
      {"write-batch", required_argument, NULL, 'w'},
      {"json", required_argument, NULL, 'j'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  const char *flag, *v;
  int c;
  while ((c = cli_next(PROG, argc, argv, "h", longs, &flag, &v)) > 0) {
    if (c == 'n' && cli_long(PROG, flag, v, 1, 10000000, &writes) < 0) return 2;
    if (c == 's' && cli_long(PROG, flag, v, 1, 1 << 20, &size) < 0) return 2;
    if (c == 'b') backend = v;
    if (c == 'w' &&
        cli_long(PROG, flag, v, 1, URSA_WRITE_BATCH_MAX, &batch) < 0)
      return 2;
    if (c == 'j') json = v;
    if (c == 'h') {
      usage(stdout);
      return 0;
    }
  }
  if (c < 0) {
    usage(stderr);
    return 2;
  }
  ursa_loop_options lo = {0};
  lo.write_batch = (unsigned)batch;
  if (!strcmp(backend, "uring")) {
    lo.backend = URSA_BACKEND_URING;
  } else if (!strcmp(backend, "epoll")) {
    lo.backend = URSA_BACKEND_EPOLL;
  } else {
    fprintf(stderr, "%s: unknown --backend '%s' (want uring or epoll)\n",
            PROG, backend);
    return 2;
  }

  /* A loopback TCP pair: the loop writes into one end. */
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof(sa);
  if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sl) < 0 || listen(ls, 1) < 0 ||
      getsockname(ls, (struct sockaddr *)&sa, &sl) < 0) {
    perror(PROG ": listen");
    return 1;
  }
  int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (cfd < 0 || connect(cfd, (struct sockaddr *)&sa, sl) < 0) {
    perror(PROG ": connect");
    return 1;
  }
  int sfd = accept(ls, NULL, NULL);
  close(ls);
  if (sfd < 0) {
    perror(PROG ": accept");
    return 1;
  }

  size_t total = (size_t)writes * (size_t)size;
  unsigned char *data = malloc(total);
  ursa_write_req *reqs = calloc((size_t)writes, sizeof(*reqs));
  if (!data || !reqs) {
    fprintf(stderr, "%s: out of memory for %ld writes\n", PROG, writes);
    return 1;
  }
  for (size_t i = 0; i < total; i++) data[i] = (unsigned char)(i * 31 + i / 97);
  uint64_t want_sum = fnv(1469598103934665603ull, data, total);

  ursa_loop *loop;
  int r = ursa_loop_new(&loop, &lo);
  if (r < 0) {
    char why[512];
    ursa_explain_setup_error(r, why, sizeof(why));
    fprintf(stderr, "%s: %s\n", PROG, why);
    return 2;
  }
  ursa_stream s = {0};
  if ((r = ursa_stream_open(loop, &s, sfd)) < 0) {
    fprintf(stderr, "%s: %s\n", PROG, ursa_strerror(r));
    return 1;
  }
  reader rd = {.fd = cfd, .want = total};
  pthread_t th;
  pthread_create(&th, NULL, read_all, &rd);

  double t0 = (cli_now_ns() / 1e9), c0 = cpu_s();
  for (long i = 0; i < writes; i++) {
    r = ursa_write(&reqs[i], &s, data + (size_t)i * (size_t)size,
                   (size_t)size, 0, on_write);
    if (r < 0) {
      fprintf(stderr, "%s: write %ld: %s\n", PROG, i, ursa_strerror(r));
      return 1;
    }
  }
  double queued = (cli_now_ns() / 1e9) - t0;
  while (done_writes < writes && ursa_loop_run(loop, URSA_RUN_ONCE) >= 0) {
  }
  double wall = (cli_now_ns() / 1e9) - t0, cpu = cpu_s() - c0;
  ursa_stats st;
  ursa_loop_stats(loop, &st);
  ursa_stream_close(&s, NULL);
  ursa_loop_run(loop, URSA_RUN_DEFAULT);
  pthread_join(th, NULL);
  close(cfd);
  int ok = rd.got == total && rd.sum == want_sum && !failed_writes;
  printf("%s: %s, %ld writes of %ld B: %.3f s (%.0f ns per write, %.0f ns "
         "of loop CPU), %llu sends, %zu of %zu bytes read, checksum %s\n",
         PROG, backend, writes, size, wall, wall * 1e9 / (double)writes,
         cpu * 1e9 / (double)writes, (unsigned long long)st.sqes, rd.got,
         total, ok ? "ok" : "WRONG");
  if (json) {
    FILE *f = fopen(json, "w");
    if (!f) {
      perror(PROG ": --json");
      return 1;
    }
    fprintf(f,
            "{\"backend\":\"%s\",\"writes\":%ld,\"size\":%ld,\"seconds\":%.6f,"
            "\"queue_seconds\":%.6f,\"cpu_seconds\":%.6f,"
            "\"ns_per_write\":%.1f,\"sends\":%llu,\"write_batch\":%ld,"
            "\"ok\":%s}\n",
            backend, writes, size, wall, queued, cpu,
            wall * 1e9 / (double)writes, (unsigned long long)st.sqes,
            batch, ok ? "true" : "false");
    fclose(f);
  }
  free(reqs);
  free(data);
  if (ursa_loop_close(loop) < 0) return 1;
  return ok ? 0 : 1;
}
