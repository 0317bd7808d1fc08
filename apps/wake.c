/* wake.c - ursa-wake: what it costs to hand work to a loop on another
 * thread.  Two figures per mode: posts per second (N posts made as fast as
 * the sender can, until the last callback ran) and post-to-callback
 * latency (one post at a time, the sender waiting for the callback's
 * answer; the time from the post to its callback, read on the loop).
 *
 * Modes:
 *   post-thread  ursa_post() from a plain thread (the loop's eventfd)
 *   call-thread  ursa_post_call() from a plain thread (the bounded ring)
 *   post-loop    ursa_post() from another ursa loop's callback (MSG_RING
 *                on io_uring; the eventfd on epoll)
 *   eventfd      hand-written: a mutex-guarded queue and an eventfd that
 *                an epoll loop waits on, written only by the post that
 *                finds the queue empty (the same coalescing as ursa's)
 *   uv-async     libuv: a mutex-guarded queue and uv_async_send()
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "apps/common/cli.h"
#include "ursa/ursa.h"

#define PROG "ursa-wake"

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void pin(long cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET((int)cpu, &set);
  sched_setaffinity(0, sizeof(set), &set);
}

/* One post: the same item for every mode. */
typedef struct item {
  ursa_post_req req; /* ursa modes */
  struct item *next; /* queue modes */
  uint64_t stamp;    /* latency: when it was posted */
} item;

static struct {
  int mode;
  ursa_backend backend;
  long n, samples, cpu_loop, cpu_sender;
  int spin; /* post-loop: the sender loop polls instead of sleeping */
  long gap_us; /* latency: the sender waits this long between samples */
  long senders; /* the rate: threads posting at once, N/senders each */
  uint32_t enable; /* --uring-enable: opt-in URSA_FEAT_* the loops use */
  item *items;
  uint64_t *lat; /* per sample, ns */
  int ack;       /* latency: the callback ran */
  int phase;     /* 0 throughput, 1 latency */
  uint64_t end_ns;
  uint64_t wakeups;
  /* the target loop */
  ursa_loop *loop;
  int ready, quit;
  /* queue modes */
  pthread_mutex_t mu;
  item *qhead, *qtail;
  int efd;
  uv_loop_t uv;
  uv_async_t async, quit_async;
} W;

/* Callbacks run: the loop's thread writes it per callback, so it has a
 * cache line of its own (beside the sender's fields it would make every
 * post wait for the line). */
static struct {
  long done;
  char pad[64 - sizeof(long)];
} D __attribute__((aligned(64)));
#define DONE D.done

enum { M_POST_THREAD, M_POST_LOOP, M_EVENTFD, M_UV, M_CALL };
static const char *const mode_names[] = {"post-thread", "post-loop",
                                         "eventfd", "uv-async", "call-thread"};
#define NMODES 5

/* What every mode's callback does with an item. */
static void ran(item *it) {
  long k = __atomic_load_n(&DONE, __ATOMIC_RELAXED);
  if (W.phase == 1) {
    W.lat[k] = cli_now_ns() - it->stamp;
    __atomic_store_n(&DONE, k + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&W.ack, 1, __ATOMIC_RELEASE);
    return;
  }
  /* The clock only at the end: a read per callback would be the rate. */
  if (k + 1 == W.n) W.end_ns = cli_now_ns();
  __atomic_store_n(&DONE, k + 1, __ATOMIC_RELEASE);
}

static void wait_ack(void) {
  while (!__atomic_load_n(&W.ack, __ATOMIC_ACQUIRE)) {
  }
  W.ack = 0;
  /* --gap: long enough for the loop's CPU to go idle, as it does between
   * requests that are not back to back (busy: the sender's CPU stays on). */
  if (W.gap_us) {
    uint64_t until = cli_now_ns() + (uint64_t)W.gap_us * 1000u;
    while (cli_now_ns() < until) {
    }
  }
}

/* ---- ursa: the target loop, and a plain thread posting ---- */

static void on_post(ursa_post_req *req, int status) {
  if (status == 0) ran((item *)req);
}

static void *ursa_target(void *arg) {
  (void)arg;
  pin(W.cpu_loop);
  ursa_loop_options o = {0};
  o.backend = W.backend;
  o.enable = W.enable;
  o.post_ring = 65536;
  if (ursa_loop_new(&W.loop, &o) < 0) {
    fprintf(stderr, "%s: no loop: %s\n", PROG, ursa_error_detail());
    __atomic_store_n(&W.ready, -1, __ATOMIC_RELEASE);
    return NULL;
  }
  ursa_loop_retain(W.loop);
  ursa_loop_hold(W.loop);
  __atomic_store_n(&W.ready, 1, __ATOMIC_RELEASE);
  ursa_loop_run(W.loop, URSA_RUN_DEFAULT); /* until stop_async */
  ursa_loop_unhold(W.loop);
  ursa_stats st;
  ursa_loop_stats(W.loop, &st);
  W.wakeups = st.wakeups;
  ursa_loop_close(W.loop);
  return NULL;
}

/* The rate: every item pushed, by one sender or by --senders threads
 * at once (each its own slice, all on the sender CPU). */
typedef struct slice {
  void (*push)(item *);
  long lo, hi;
  pthread_t th;
} slice;

static void *push_slice(void *arg) {
  slice *sl = arg;
  pin(W.cpu_sender);
  for (long i = sl->lo; i < sl->hi; i++) sl->push(&W.items[i]);
  return NULL;
}

static void push_all(void (*push)(item *)) {
  if (W.senders <= 1) {
    for (long i = 0; i < W.n; i++) push(&W.items[i]);
    return;
  }
  slice sl[64];
  for (long k = 0; k < W.senders; k++) {
    sl[k].push = push;
    sl[k].lo = W.n * k / W.senders;
    sl[k].hi = W.n * (k + 1) / W.senders;
    pthread_create(&sl[k].th, NULL, push_slice, &sl[k]);
  }
  for (long k = 0; k < W.senders; k++) pthread_join(sl[k].th, NULL);
}

static void post_one(item *it) {
  if (ursa_post(W.loop, &it->req, on_post) < 0) abort();
}

static void on_call(void *arg, int status) {
  if (status == 0) ran(arg);
}

/* ursa_post_call: a full ring is retried (the loop is taking calls). */
static void call_one(item *it) {
  int e;
  while ((e = ursa_post_call(W.loop, on_call, it)) == -EAGAIN) {
  }
  if (e < 0) abort();
}

/* Both figures with one way to post from a plain thread: the rate (every
 * item at once, until the last callback), then the latency (one at a
 * time, each waited for). */
static void run_phases(void (*push)(item *)) {
  W.phase = 0;
  uint64_t t0 = cli_now_ns();
  push_all(push);
  while (__atomic_load_n(&DONE, __ATOMIC_ACQUIRE) < W.n) {
  }
  W.end_ns -= t0;
  W.phase = 1;
  DONE = 0;
  for (long i = 0; i < W.samples; i++) {
    item *it = &W.items[i % W.n];
    it->stamp = cli_now_ns();
    push(it);
    wait_ack();
  }
}

/* ---- ursa: another loop posting from its callbacks ---- */

static ursa_loop *sender;
static ursa_post_req kick, answer;
static long sent;

static void send_next(void);

/* On the sender's loop: the target ran the last one. */
static void on_answer(ursa_post_req *req, int status) {
  (void)req;
  if (status == 0) send_next();
}

static void on_post_answer(ursa_post_req *req, int status) {
  if (status != 0) return;
  ran((item *)req);
  if (W.phase == 1 || DONE == W.n) ursa_post(sender, &answer, on_answer);
}

static void send_next(void) {
  if (W.phase == 0) {
    /* All of them from one callback: they leave with the next submit. */
    if (sent == 0) {
      for (long i = 0; i < W.n; i++)
        if (ursa_post(W.loop, &W.items[i].req, on_post_answer) < 0) abort();
      sent = W.n;
      return;
    }
    W.phase = 1;
    DONE = 0;
    sent = 0;
  }
  if (sent == W.samples) {
    ursa_loop_unhold(sender);
    return;
  }
  item *it = &W.items[sent++ % W.n];
  it->stamp = cli_now_ns();
  if (ursa_post(W.loop, &it->req, on_post_answer) < 0) abort();
}

static void on_kick(ursa_post_req *req, int status) {
  (void)req;
  if (status == 0) send_next();
}

static int post_loop_run(uint64_t *t0) {
  ursa_loop_options o = {0};
  o.backend = W.backend;
  o.enable = W.enable;
  if (ursa_loop_new(&sender, &o) < 0) return -1;
  ursa_loop_hold(sender);
  *t0 = cli_now_ns();
  ursa_post(sender, &kick, on_kick);
  if (W.spin) {
    /* The sender never sleeps: what the other modes' senders do. */
    while (ursa_loop_run(sender, URSA_RUN_NOWAIT) > 0) {
    }
  } else {
    ursa_loop_run(sender, URSA_RUN_DEFAULT);
  }
  ursa_loop_close(sender);
  return 0;
}

/* ---- hand-written: a queue and an eventfd with epoll ---- */

static void q_push(item *it) {
  pthread_mutex_lock(&W.mu);
  int was_empty = !W.qhead;
  it->next = NULL;
  if (W.qtail) W.qtail->next = it; else W.qhead = it;
  W.qtail = it;
  pthread_mutex_unlock(&W.mu);
  if (was_empty) {
    if (W.mode == M_EVENTFD) {
      uint64_t one = 1;
      (void)!write(W.efd, &one, sizeof(one));
    } else {
      uv_async_send(&W.async);
    }
    __atomic_fetch_add(&W.wakeups, 1, __ATOMIC_RELAXED);
  }
}

static void q_drain(void) {
  pthread_mutex_lock(&W.mu);
  item *it = W.qhead;
  W.qhead = W.qtail = NULL;
  pthread_mutex_unlock(&W.mu);
  while (it) {
    item *n = it->next;
    ran(it);
    it = n;
  }
}

static void *eventfd_target(void *arg) {
  (void)arg;
  pin(W.cpu_loop);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = W.efd};
  epoll_ctl(ep, EPOLL_CTL_ADD, W.efd, &ev);
  __atomic_store_n(&W.ready, 1, __ATOMIC_RELEASE);
  while (!__atomic_load_n(&W.quit, __ATOMIC_ACQUIRE)) {
    struct epoll_event got;
    if (epoll_wait(ep, &got, 1, -1) <= 0) continue;
    uint64_t v;
    (void)!read(W.efd, &v, sizeof(v));
    q_drain();
  }
  close(ep);
  return NULL;
}

static void on_async(uv_async_t *a) {
  (void)a;
  q_drain();
}

static void on_quit(uv_async_t *a) {
  (void)a;
  uv_close((uv_handle_t *)&W.async, NULL);
  uv_close((uv_handle_t *)&W.quit_async, NULL);
}

static void *uv_target(void *arg) {
  (void)arg;
  pin(W.cpu_loop);
  __atomic_store_n(&W.ready, 1, __ATOMIC_RELEASE);
  uv_run(&W.uv, UV_RUN_DEFAULT);
  return NULL;
}


static void usage(FILE *f) {
  fprintf(f,
          "usage: ursa-wake [options]\n"
          "  --mode M        post-thread (default), call-thread "
          "(ursa_post_call),\n"
          "                  post-loop, eventfd, uv-async\n"
          "  --backend B     uring (default) or ursa-epoll, for the post "
          "modes\n"
          "  --posts N       posts for the rate (default 200000)\n"
          "  --samples K     one-at-a-time posts for the latency (default "
          "20000)\n"
          "  --cpu-loop A    pin the loop's thread to CPU A\n"
          "  --cpu-sender B  pin the sender to CPU B\n"
          "  --spin          post-loop: the sender's loop polls "
          "(URSA_RUN_NOWAIT)\n"
          "                  instead of sleeping between samples\n"
          "  --senders K     post-thread, eventfd, uv-async: K threads make "
          "the rate's\n"
          "                  posts at once (default 1)\n"
          "  --gap US        post-thread, eventfd, uv-async: wait US "
          "microseconds\n"
          "                  (busy) between latency samples\n"
          "  --uring-enable LIST  ursa modes: opt-in loop features to use "
          "(comma\n"
          "                  separated), e.g. sync_msg_ring\n"
          "  --json FILE     write the results as JSON\n"
          "  -h, --help      this text\n");
}

int main(int argc, char **argv) {
  const char *json = NULL;
  W.n = 200000;
  W.samples = 20000;
  W.cpu_loop = W.cpu_sender = -1;
  W.backend = URSA_BACKEND_URING;
  enum { O_MODE = 256, O_BACKEND, O_POSTS, O_SAMPLES, O_CL, O_CS, O_JSON,
         O_SPIN, O_GAP, O_SENDERS, O_ENABLE };
  static const struct option longs[] = {
      {"help", no_argument, NULL, 'h'},
      {"mode", required_argument, NULL, O_MODE},
      {"backend", required_argument, NULL, O_BACKEND},
      {"posts", required_argument, NULL, O_POSTS},
      {"samples", required_argument, NULL, O_SAMPLES},
      {"cpu-loop", required_argument, NULL, O_CL},
      {"cpu-sender", required_argument, NULL, O_CS},
      {"json", required_argument, NULL, O_JSON},
      {"spin", no_argument, NULL, O_SPIN},
      {"gap", required_argument, NULL, O_GAP},
      {"senders", required_argument, NULL, O_SENDERS},
      {"uring-enable", required_argument, NULL, O_ENABLE},
      {NULL, 0, NULL, 0},
  };
  const char *a, *v;
  int c;
  while ((c = cli_next(PROG, argc, argv, "h", longs, &a, &v)) > 0) {
    switch (c) {
      case 'h':
        usage(stdout);
        return 0;
      case O_MODE: {
        int m = -1;
        for (int i = 0; i < NMODES; i++)
          if (!strcmp(v, mode_names[i])) m = i;
        if (m < 0) {
          fprintf(stderr, "%s: unknown --mode '%s' (want post-thread, "
                  "call-thread, post-loop, eventfd or uv-async)\n", PROG, v);
          return 2;
        }
        W.mode = m;
        break;
      }
      case O_BACKEND:
        if (!strcmp(v, "uring")) {
          W.backend = URSA_BACKEND_URING;
        } else if (!strcmp(v, "ursa-epoll")) {
          W.backend = URSA_BACKEND_EPOLL;
        } else {
          fprintf(stderr, "%s: unknown --backend '%s' (want uring or "
                  "ursa-epoll)\n", PROG, v);
          return 2;
        }
        break;
      case O_POSTS:
        if (cli_long(PROG, a, v, 1, 10000000, &W.n) < 0) return 2;
        break;
      case O_SAMPLES:
        if (cli_long(PROG, a, v, 1, 10000000, &W.samples) < 0) return 2;
        break;
      case O_CL:
        if (cli_long(PROG, a, v, 0, CPU_SETSIZE - 1, &W.cpu_loop) < 0)
          return 2;
        break;
      case O_CS:
        if (cli_long(PROG, a, v, 0, CPU_SETSIZE - 1, &W.cpu_sender) < 0)
          return 2;
        break;
      case O_JSON:
        json = v;
        break;
      case O_SPIN:
        W.spin = 1;
        break;
      case O_SENDERS:
        if (cli_long(PROG, a, v, 1, 64, &W.senders) < 0) return 2;
        break;
      case O_ENABLE:
        if (cli_features(PROG, a, v, &W.enable) < 0) return 2;
        break;
      case O_GAP:
        if (cli_long(PROG, a, v, 0, 1000000, &W.gap_us) < 0) return 2;
        break;
    }
  }
  if (c < 0 || optind < argc) {
    if (optind < argc)
      fprintf(stderr, "%s: unexpected argument '%s'\n", PROG, argv[optind]);
    usage(stderr);
    return 2;
  }
  W.items = calloc((size_t)W.n, sizeof(item));
  W.lat = calloc((size_t)W.samples, sizeof(uint64_t));
  if (!W.items || !W.lat) {
    fprintf(stderr, "%s: out of memory\n", PROG);
    return 1;
  }
  /* Fault the pages in now: first touches inside the timed rate would
   * cost more than the posts. */
  memset(W.items, 0, (size_t)W.n * sizeof(item));
  memset(W.lat, 0, (size_t)W.samples * sizeof(uint64_t));
  pthread_mutex_init(&W.mu, NULL);
  pin(W.cpu_sender);
  pthread_t th;
  uint64_t t0 = 0;
  int rc = 0;
  if (W.mode == M_POST_THREAD || W.mode == M_POST_LOOP || W.mode == M_CALL) {
    pthread_create(&th, NULL, ursa_target, NULL);
    int r;
    while (!(r = __atomic_load_n(&W.ready, __ATOMIC_ACQUIRE))) {
    }
    if (r < 0) return 1;
    if (W.mode == M_POST_THREAD || W.mode == M_CALL) {
      run_phases(W.mode == M_CALL ? call_one : post_one);
    } else {
      if (post_loop_run(&t0) < 0) return 1;
      /* the rate's end was stamped on the target, its start here */
      W.end_ns -= t0;
    }
    ursa_loop_stop_async(W.loop);
    pthread_join(th, NULL);
    ursa_loop_release(W.loop);
  } else if (W.mode == M_EVENTFD) {
    W.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    pthread_create(&th, NULL, eventfd_target, NULL);
    while (!__atomic_load_n(&W.ready, __ATOMIC_ACQUIRE)) {
    }
    run_phases(q_push);
    __atomic_store_n(&W.quit, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    (void)!write(W.efd, &one, sizeof(one));
    pthread_join(th, NULL);
    close(W.efd);
  } else {
    uv_loop_init(&W.uv);
    uv_async_init(&W.uv, &W.async, on_async);
    uv_async_init(&W.uv, &W.quit_async, on_quit);
    pthread_create(&th, NULL, uv_target, NULL);
    while (!__atomic_load_n(&W.ready, __ATOMIC_ACQUIRE)) {
    }
    run_phases(q_push);
    uv_async_send(&W.quit_async);
    pthread_join(th, NULL);
    uv_loop_close(&W.uv);
  }
  if (DONE != W.samples) {
    fprintf(stderr, "%s: %ld of %ld latency samples came back\n", PROG,
            DONE, W.samples);
    rc = 1;
  }
  qsort(W.lat, (size_t)W.samples, sizeof(uint64_t), cmp_u64);
  double secs = (double)W.end_ns / 1e9;
  double rate = secs > 0 ? (double)W.n / secs : 0;
  uint64_t p50 = W.lat[W.samples / 2];
  uint64_t p99 = W.lat[(size_t)((double)W.samples * 0.99)];
  /* Each latency sample is one post to an empty queue: one wake-up. */
  uint64_t rate_wakeups =
      W.wakeups > (uint64_t)W.samples ? W.wakeups - (uint64_t)W.samples : 0;
  const char *be = W.mode <= M_POST_LOOP || W.mode == M_CALL
                       ? (W.backend == URSA_BACKEND_EPOLL ? "ursa-epoll"
                                                          : "uring")
                       : W.mode == M_EVENTFD ? "epoll" : "libuv";
  printf("%s (%s): %ld posts in %.3f s: %.0f posts/s, %llu wake-ups; "
         "post to callback p50 %.2f us, p99 %.2f us over %ld\n",
         mode_names[W.mode], be, W.n, secs, rate,
         (unsigned long long)rate_wakeups, (double)p50 / 1e3,
         (double)p99 / 1e3, W.samples);
  if (json) {
    FILE *f = fopen(json, "w");
    if (!f) {
      fprintf(stderr, "%s: cannot write %s: %s\n", PROG, json,
              strerror(errno));
      return 1;
    }
    fprintf(f,
            "{\"mode\":\"%s\",\"backend\":\"%s\",\"posts\":%ld,"
            "\"seconds\":%.6f,\"posts_per_s\":%.1f,\"wakeups\":%llu,"
            "\"samples\":%ld,\"lat_p50_ns\":%llu,\"lat_p99_ns\":%llu}\n",
            mode_names[W.mode], be, W.n, secs, rate,
            (unsigned long long)rate_wakeups, W.samples,
            (unsigned long long)p50, (unsigned long long)p99);
    fclose(f);
  }
  free(W.items);
  free(W.lat);
  return rc;
}
