/* ursa-spawn-bench - child processes and pipes, for the bench's process
 * block: ursa_spawn() and pipe streams on either backend, or libuv's
 * uv_spawn() (Debian's 1.44 forks) and uv_pipe, doing the same work.
 *
 *   --mode spawn   runs --program (/bin/true) --count times, --concurrency
 *                  at once, each to its exit; the parent first allocates
 *                  and touches --heap-mib MiB, as a large server would
 *                  have.  Reports spawns/s, ms per spawn (wall time over
 *                  count, at concurrency 1 the whole cycle) and the mean
 *                  time inside the spawn call.
 *   --mode pipe    one child (this program, --child-produce) writes
 *                  --bytes to a pipe the parent reads as a stream to EOF;
 *                  reports MB/s and the parent's CPU per MB.
 *
 * The same child, the same pipe (pipe2: libuv's own UV_CREATE_PIPE would
 * be a socketpair), the same accounting for every backend. */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "apps/common/cli.h"
#include "ursa/ursa.h"

#define PROG "ursa-spawn-bench"
#define CHUNK 65536

static struct {
  const char *mode, *backend, *program;
  long count, concurrency, heap_mib, buf_kib, buf_count, pipe_kib;
  long cpu, child_cpu; /* -1: not pinned */
  uint32_t disable, enable;
  long long bytes;
  int json;
} O = {.mode = "spawn", .backend = "uring", .program = "/bin/true",
       .count = 200, .concurrency = 1, .bytes = 256ll << 20, .cpu = -1,
       .child_cpu = -1};

static char self[4096];
static long started, ended, failed;
static uint64_t call_ns; /* time inside the spawn calls */
static unsigned long long got;
static int read_end; /* EOF seen */

/* ---- the child of pipe mode ---- */

static int produce(long long n) {
  static char buf[CHUNK];
  for (size_t i = 0; i < sizeof(buf); i++) buf[i] = (char)(i * 131 + 7);
  while (n > 0) {
    size_t k = n < CHUNK ? (size_t)n : CHUNK;
    ssize_t w = write(1, buf, k);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return 3;
    n -= w;
  }
  return 0;
}

/* ---- ursa ---- */

static ursa_loop *uloop;
static ursa_process *uprocs;

static void u_exit(ursa_process *p, int code, int sig) {
  if (code != 0 || sig != 0) failed++;
  ended++;
  /* The slot takes the next child once the handle has closed. */
  ursa_process_close(p, NULL);
}

static char *u_argv[2];

static void u_spawn_one(ursa_process *p) {
  ursa_spawn_options so = {0};
  so.file = O.program;
  so.argv = u_argv;
  uint64_t t0 = cli_now_ns();
  int r = ursa_spawn(uloop, p, &so, u_exit);
  call_ns += cli_now_ns() - t0;
  if (r < 0) {
    fprintf(stderr, PROG ": ursa_spawn %s: %s (%s)\n", O.program,
            ursa_strerror(r), ursa_error_detail());
    failed++;
    ended++;
  }
  started++;
}

static int ursa_setup(void) {
  ursa_loop_options lo = {0};
  lo.backend = !strcmp(O.backend, "ursa-epoll") ? URSA_BACKEND_EPOLL
                                                : URSA_BACKEND_URING;
  if (O.buf_kib) lo.buf_size = (unsigned)O.buf_kib << 10;
  if (O.buf_count) lo.buf_count = (unsigned)O.buf_count;
  lo.disable = O.disable;
  lo.enable = O.enable;
  int r = ursa_loop_new(&uloop, &lo);
  if (r < 0)
    fprintf(stderr, PROG ": the %s backend cannot start: %s\n", O.backend,
            ursa_strerror(r));
  return r;
}

static int run_ursa_spawn(void) {
  if (ursa_setup() < 0) return -1;
  u_argv[0] = (char *)O.program;
  /* Two slots per child at once: one may still be closing. */
  long slots = 2 * O.concurrency;
  uprocs = calloc((size_t)slots, sizeof(*uprocs));
  if (!uprocs) return -1;
  long next_slot = 0;
  while (ended < O.count) {
    while (started < O.count && started - ended < O.concurrency) {
      /* A slot whose handle has closed (kind NULL again). */
      long tries = 0;
      while (uprocs[next_slot].handle.kind && tries++ < slots)
        next_slot = (next_slot + 1) % slots;
      if (uprocs[next_slot].handle.kind) break;
      u_spawn_one(&uprocs[next_slot]);
      next_slot = (next_slot + 1) % slots;
    }
    if (ursa_loop_run(uloop, URSA_RUN_ONCE) < 0) return -1;
  }
  ursa_loop_run(uloop, URSA_RUN_DEFAULT); /* the last closes */
  free(uprocs);
  return ursa_loop_close(uloop) < 0 ? -1 : 0;
}

static ursa_stream ustream;
static ursa_process uproc;

static void u_read(ursa_stream *s, ssize_t n, const void *buf) {
  (void)buf;
  if (n > 0) {
    got += (unsigned long long)n;
    return;
  }
  if (n != URSA_EOF) {
    fprintf(stderr, PROG ": read: %s\n", ursa_strerror((int)n));
    failed++;
  }
  read_end = 1;
  ursa_stream_close(s, NULL);
}

static void u_pipe_exit(ursa_process *p, int code, int sig) {
  if (code || sig) failed++;
  ended++;
  ursa_process_close(p, NULL);
}

static int run_ursa_pipe(char **argv) {
  if (ursa_setup() < 0) return -1;
  ursa_stdio io[2] = {{0}};
  io[1].kind = URSA_STDIO_PIPE;
  io[1].stream = &ustream;
  io[1].pipe_size = (unsigned)O.pipe_kib << 10; /* 0: ursa's default */
  ursa_spawn_options so = {0};
  so.file = self;
  so.argv = argv;
  so.stdio = io;
  so.nstdio = 2;
  int r = ursa_spawn(uloop, &uproc, &so, u_pipe_exit);
  if (r < 0) {
    fprintf(stderr, PROG ": ursa_spawn: %s (%s)\n", ursa_strerror(r),
            ursa_error_detail());
    return -1;
  }
  ursa_read_start(&ustream, u_read);
  if (ursa_loop_run(uloop, URSA_RUN_DEFAULT) < 0) return -1;
  return ursa_loop_close(uloop) < 0 ? -1 : 0;
}

/* ---- libuv ---- */

static uv_loop_t *lloop;
static uv_process_t *lprocs;
static char *l_argv[2];

static void l_closed(uv_handle_t *h) { h->data = NULL; }

static void l_exit(uv_process_t *p, int64_t status, int sig) {
  if (status || sig) failed++;
  ended++;
  uv_close((uv_handle_t *)p, l_closed);
}

static void l_spawn_one(uv_process_t *p) {
  uv_process_options_t po = {0};
  po.file = O.program;
  po.args = l_argv;
  po.exit_cb = l_exit;
  uint64_t t0 = cli_now_ns();
  int r = uv_spawn(lloop, p, &po);
  call_ns += cli_now_ns() - t0;
  p->data = p; /* in use until its close callback */
  if (r < 0) {
    fprintf(stderr, PROG ": uv_spawn %s: %s\n", O.program, uv_strerror(r));
    failed++;
    ended++;
    uv_close((uv_handle_t *)p, l_closed);
  }
  started++;
}

static int run_libuv_spawn(void) {
  lloop = uv_default_loop();
  l_argv[0] = (char *)O.program;
  long slots = 2 * O.concurrency;
  lprocs = calloc((size_t)slots, sizeof(*lprocs));
  if (!lprocs) return -1;
  long next_slot = 0;
  while (ended < O.count) {
    while (started < O.count && started - ended < O.concurrency) {
      long tries = 0;
      while (lprocs[next_slot].data && tries++ < slots)
        next_slot = (next_slot + 1) % slots;
      if (lprocs[next_slot].data) break;
      l_spawn_one(&lprocs[next_slot]);
      next_slot = (next_slot + 1) % slots;
    }
    uv_run(lloop, UV_RUN_ONCE);
  }
  uv_run(lloop, UV_RUN_DEFAULT);
  free(lprocs);
  return uv_loop_close(lloop) < 0 ? -1 : 0;
}

static uv_pipe_t lpipe;
static uv_process_t lproc;
static char lbuf[CHUNK];

static void l_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  (void)h;
  (void)suggested;
  *b = uv_buf_init(lbuf, sizeof(lbuf));
}

static void l_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  if (n > 0) {
    got += (unsigned long long)n;
    return;
  }
  if (n == 0) return;
  if (n != UV_EOF) {
    fprintf(stderr, PROG ": read: %s\n", uv_strerror((int)n));
    failed++;
  }
  read_end = 1;
  uv_close((uv_handle_t *)s, NULL);
}

static void l_pipe_exit(uv_process_t *p, int64_t status, int sig) {
  if (status || sig) failed++;
  ended++;
  uv_close((uv_handle_t *)p, NULL);
}

static int run_libuv_pipe(char **argv) {
  lloop = uv_default_loop();
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return -1;
  if (O.pipe_kib && fcntl(fds[0], F_SETPIPE_SZ, (int)(O.pipe_kib << 10)) < 0) {
    fprintf(stderr, PROG ": --pipe-kib %ld: the kernel refused it: %s\n",
            O.pipe_kib, strerror(errno));
    return -1;
  }
  uv_pipe_init(lloop, &lpipe, 0);
  if (uv_pipe_open(&lpipe, fds[0]) < 0) return -1;
  uv_stdio_container_t io[2];
  io[0].flags = UV_INHERIT_FD;
  io[0].data.fd = 0;
  io[1].flags = UV_INHERIT_FD;
  io[1].data.fd = fds[1];
  uv_process_options_t po = {0};
  po.file = self;
  po.args = argv;
  po.exit_cb = l_pipe_exit;
  po.stdio = io;
  po.stdio_count = 2;
  int r = uv_spawn(lloop, &lproc, &po);
  close(fds[1]);
  if (r < 0) {
    fprintf(stderr, PROG ": uv_spawn: %s\n", uv_strerror(r));
    return -1;
  }
  uv_read_start((uv_stream_t *)&lpipe, l_alloc, l_read);
  uv_run(lloop, UV_RUN_DEFAULT);
  return uv_loop_close(lloop) < 0 ? -1 : 0;
}

/* ---- main ---- */

static void usage(void) {
  printf(
      "usage: " PROG " [options]\n"
      "  --mode M          spawn (default) or pipe\n"
      "  --backend B       uring (default), ursa-epoll or libuv\n"
      "  --program PATH    spawn mode: what to run (default /bin/true)\n"
      "  --count N         spawn mode: children in all (default 200)\n"
      "  --concurrency N   spawn mode: children at once (default 1)\n"
      "  --heap-mib N      MiB the parent allocates and touches first\n"
      "  --bytes N         pipe mode: bytes through the pipe (default "
      "256 MiB)\n"
      "  --buf-kib N       ursa: receive buffer size (default the loop's)\n"
      "  --buf-count N     ursa: receive buffers (default the loop's)\n"
      "  --pipe-kib N      pipe mode: the pipe's size (default: ursa's,\n"
      "                    URSA_SPAWN_PIPE_SIZE; libuv's, the kernel's)\n"
      "  --disable LIST    ursa: features to leave off, comma separated\n"
      "                    (waitid)\n"
      "  --enable LIST     ursa: opt-in features to use (read_multishot)\n"
      "  --cpu N           pin this process (and, unless --child-cpu,\n"
      "                    its children) to CPU N\n"
      "  --child-cpu N     pipe mode: pin the child to CPU N\n"
      "  --child-produce N (the pipe mode's child) writes N bytes to stdout\n"
      "  --json            one JSON object instead of the line\n"
      "  -h, --help        this text\n");
}

int main(int argc, char **argv) {
  static const struct option longs[] = {
      {"mode", required_argument, NULL, 'm'},
      {"backend", required_argument, NULL, 'b'},
      {"program", required_argument, NULL, 'p'},
      {"count", required_argument, NULL, 'n'},
      {"concurrency", required_argument, NULL, 'c'},
      {"heap-mib", required_argument, NULL, 'H'},
      {"bytes", required_argument, NULL, 'B'},
      {"buf-kib", required_argument, NULL, 'k'},
      {"buf-count", required_argument, NULL, 'C'},
      {"pipe-kib", required_argument, NULL, 'S'},
      {"disable", required_argument, NULL, 'D'},
      {"enable", required_argument, NULL, 'E'},
      {"child-produce", required_argument, NULL, 'P'},
      {"cpu", required_argument, NULL, 'u'},
      {"child-cpu", required_argument, NULL, 'U'},
      {"json", no_argument, NULL, 'j'},
      {"help", no_argument, NULL, 'h'},
      {0, 0, 0, 0}};
  const char *flag, *v;
  long l, child_produce = -1;
  int ch;
  while ((ch = cli_next(PROG, argc, argv, "h", longs, &flag, &v)) != 0) {
    switch (ch) {
      case -1: return 2;
      case 'h': usage(); return 0;
      case 'P':
        if (cli_long(PROG, flag, v, 0, 1L << 40, &l) < 0) return 2;
        child_produce = l;
        break;
      case 'm':
        if (strcmp(v, "spawn") && strcmp(v, "pipe")) {
          fprintf(stderr, PROG ": unknown --mode '%s' (want spawn or pipe)\n",
                  v);
          return 2;
        }
        O.mode = v;
        break;
      case 'b':
        if (strcmp(v, "uring") && strcmp(v, "ursa-epoll") &&
            strcmp(v, "libuv")) {
          fprintf(stderr, PROG ": unknown --backend '%s' (want uring, "
                  "ursa-epoll or libuv)\n", v);
          return 2;
        }
        O.backend = v;
        break;
      case 'p': O.program = v; break;
      case 'n':
        if (cli_long(PROG, flag, v, 1, 10000000, &O.count) < 0) return 2;
        break;
      case 'c':
        if (cli_long(PROG, flag, v, 1, 1024, &O.concurrency) < 0) return 2;
        break;
      case 'H':
        if (cli_long(PROG, flag, v, 0, 65536, &O.heap_mib) < 0) return 2;
        break;
      case 'B':
        if (cli_long(PROG, flag, v, 1, 1L << 40, &l) < 0) return 2;
        O.bytes = l;
        break;
      case 'k':
        if (cli_long(PROG, flag, v, 1, 16384, &O.buf_kib) < 0) return 2;
        break;
      case 'C':
        if (cli_long(PROG, flag, v, 1, 32768, &O.buf_count) < 0) return 2;
        break;
      case 'S':
        if (cli_long(PROG, flag, v, 4, 1L << 20, &O.pipe_kib) < 0) return 2;
        break;
      case 'D':
        if (cli_features(PROG, flag, v, &O.disable) < 0) return 2;
        break;
      case 'E':
        if (cli_opt_in(PROG, flag, v, URSA_FEAT_OPT_IN, &O.enable) < 0)
          return 2;
        break;
      case 'u':
        if (cli_long(PROG, flag, v, 0, 4095, &O.cpu) < 0) return 2;
        break;
      case 'U':
        if (cli_long(PROG, flag, v, 0, 4095, &O.child_cpu) < 0) return 2;
        break;
      case 'j': O.json = 1; break;
    }
  }
  if (optind < argc) {
    fprintf(stderr, PROG ": unexpected argument '%s' (see --help)\n",
            argv[optind]);
    return 2;
  }
  if (O.cpu >= 0 && cli_pin(PROG, O.cpu) < 0) return 1;
  if (child_produce >= 0) return produce(child_produce);
  if (O.child_cpu >= 0 && strcmp(O.mode, "pipe")) {
    fprintf(stderr, PROG ": --child-cpu is for --mode pipe\n");
    return 2;
  }
  long ncpu = sysconf(_SC_NPROCESSORS_CONF);
  if (O.child_cpu >= 0 && ncpu > 0 && O.child_cpu >= ncpu) {
    fprintf(stderr, PROG ": --child-cpu %ld: this machine has %ld CPUs\n",
            O.child_cpu, ncpu);
    return 2;
  }
  ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (sl <= 0) {
    fprintf(stderr, PROG ": /proc/self/exe: %s\n", strerror(errno));
    return 1;
  }
  self[sl] = 0;
  /* A large parent's memory, touched so that its pages are mapped. */
  char *heap = NULL;
  if (O.heap_mib) {
    size_t n = (size_t)O.heap_mib << 20;
    heap = malloc(n);
    if (!heap) {
      fprintf(stderr, PROG ": --heap-mib %ld: out of memory\n", O.heap_mib);
      return 1;
    }
    for (size_t i = 0; i < n; i += 4096) heap[i] = (char)i;
  }
  bool pipe_mode = !strcmp(O.mode, "pipe");
  bool uv = !strcmp(O.backend, "libuv");
  char nbuf[32];
  snprintf(nbuf, sizeof(nbuf), "%lld", O.bytes);
  char cbuf[32];
  snprintf(cbuf, sizeof(cbuf), "%ld", O.child_cpu);
  char *cargv[] = {self, (char *)"--child-produce", nbuf,
                   O.child_cpu >= 0 ? (char *)"--cpu" : NULL, cbuf, NULL};
  double cpu0 = cli_cpu_s();
  uint64_t t0 = cli_now_ns();
  int r = pipe_mode ? (uv ? run_libuv_pipe(cargv) : run_ursa_pipe(cargv))
                    : (uv ? run_libuv_spawn() : run_ursa_spawn());
  double secs = (double)(cli_now_ns() - t0) / 1e9;
  double cpu = cli_cpu_s() - cpu0;
  free(heap);
  if (r < 0) return 1;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  if (pipe_mode) {
    double mb = (double)got / 1e6;
    if (got != (unsigned long long)O.bytes) {
      fprintf(stderr, PROG ": read %llu bytes of %lld\n", got, O.bytes);
      failed++;
    }
    if (O.json)
      printf("{\"mode\":\"pipe\",\"backend\":\"%s\",\"bytes\":%llu,"
             "\"seconds\":%.4f,\"mb_per_s\":%.1f,\"cpu_s\":%.4f,"
             "\"cpu_us_per_mb\":%.2f,\"failed\":%ld}\n",
             O.backend, got, secs, mb / secs, cpu, cpu * 1e6 / mb, failed);
    else
      printf(PROG ": pipe %s: %llu bytes in %.3f s, %.1f MB/s, %.2f us CPU "
             "per MB, %ld+%ld context switches\n", O.backend, got, secs,
             mb / secs, cpu * 1e6 / mb, ru.ru_nvcsw, ru.ru_nivcsw);
  } else {
    if (O.json)
      printf("{\"mode\":\"spawn\",\"backend\":\"%s\",\"heap_mib\":%ld,"
             "\"count\":%ld,\"concurrency\":%ld,\"seconds\":%.4f,"
             "\"spawns_per_s\":%.1f,\"ms_per_spawn\":%.4f,"
             "\"call_ms\":%.4f,\"cpu_s\":%.4f,\"failed\":%ld}\n",
             O.backend, O.heap_mib, O.count, O.concurrency, secs,
             (double)O.count / secs, secs * 1e3 / (double)O.count,
             (double)call_ns / 1e6 / (double)O.count, cpu, failed);
    else
      printf(PROG ": spawn %s heap %ld MiB: %ld children (%ld at once) in "
             "%.3f s, %.1f/s, %.3f ms each, %.3f ms in the call\n",
             O.backend, O.heap_mib, O.count, O.concurrency, secs,
             (double)O.count / secs, secs * 1e3 / (double)O.count,
             (double)call_ns / 1e6 / (double)O.count);
  }
  return failed ? 1 : 0;
}
