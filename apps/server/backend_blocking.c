/* backend_blocking.c - a thread per connection with blocking calls: the
 * model of the classic tutorial server. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "apps/server/server.h"

#define BUF (64 * 1024)
#define STACK (256 * 1024)

typedef struct worker {
  pthread_t tid;
  int fd;
  int done;
  struct worker *next;
} worker;

static struct {
  const server_opts *o;
  server_stats *st;
  pthread_mutex_t mu;
  worker *workers;
  long open;
} B = {.mu = PTHREAD_MUTEX_INITIALIZER};

#define COUNT(field, n) __atomic_fetch_add(&B.st->field, (n), __ATOMIC_RELAXED)

static int timed_out(void) {
  if (errno != EAGAIN && errno != EWOULDBLOCK) return 0;
  COUNT(timed_out, 1); /* SO_RCVTIMEO/SO_SNDTIMEO: --idle-timeout */
  return 1;
}

static int send_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    COUNT(syscalls, 1);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) timed_out();
    if (w <= 0) return -1;
    COUNT(bytes_out, (uint64_t)w);
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void *serve_conn(void *arg) {
  worker *w = arg;
  char *buf = malloc(BUF);
  int greet = B.o->mode == MODE_GREET;
  conn_clock clock;
  clock_start(&clock, now_ms());
  if (B.o->idle_ms) {
    /* The kernel times each blocking call out: silence, either way. */
    struct timeval tv = {(time_t)(B.o->idle_ms / 1000),
                         (suseconds_t)(B.o->idle_ms % 1000) * 1000};
    setsockopt(w->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(w->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    COUNT(syscalls, 2);
  }
  if (buf && greet) {
    /* Greet, shut our side, and read until the peer closes: closing with
     * its bytes unread would reset the connection under the greeting. */
    send_all(w->fd, GREETING, sizeof(GREETING) - 1);
    shutdown(w->fd, SHUT_WR);
    COUNT(syscalls, 1);
  }
  while (buf) {
    ssize_t n = recv(w->fd, buf, BUF, 0);
    COUNT(syscalls, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) timed_out();
    if (n <= 0) break;
    COUNT(bytes_in, (uint64_t)n);
    if (!greet) {
      COUNT(reads, 1);
      if (B.o->mode == MODE_ECHO && send_all(w->fd, buf, (size_t)n) < 0) break;
    } /* greeted: drained, not counted as reads */
    if (B.o->min_rate) {
      uint64_t now = now_ms();
      clock_rx(&clock, now, (uint64_t)n);
      if (clock_expired(B.o, &clock, now)) {
        COUNT(timed_out, 1);
        break;
      }
    }
  }
  free(buf);
  pthread_mutex_lock(&B.mu);
  close(w->fd); /* under the lock: stop() must not shut a reused number */
  w->fd = -1;
  w->done = 1;
  B.open--;
  pthread_mutex_unlock(&B.mu);
  COUNT(syscalls, 1);
  return NULL;
}

/* Joins workers that have finished, so that their stacks go back. */
static void reap(int all) {
  pthread_mutex_lock(&B.mu);
  worker **pp = &B.workers;
  while (*pp) {
    worker *w = *pp;
    if (all && !w->done && w->fd >= 0) shutdown(w->fd, SHUT_RDWR);
    if (w->done || all) {
      *pp = w->next;
      pthread_mutex_unlock(&B.mu);
      pthread_join(w->tid, NULL);
      free(w);
      pthread_mutex_lock(&B.mu);
    } else {
      pp = &w->next;
    }
  }
  pthread_mutex_unlock(&B.mu);
}

static int wait_readable(int lfd) {
  for (;;) {
    if (should_stop(B.o, B.st)) return 0;
    struct pollfd p[2] = {{lfd, POLLIN, 0}, {B.o->stop_fd, POLLIN, 0}};
    int n = poll(p, 2, 200);
    COUNT(syscalls, 1);
    if (n > 0 && (p[1].revents & POLLIN)) return 0;
    if (n > 0 && (p[0].revents & POLLIN)) return 1;
  }
}

static void serve_datagrams(int fd) {
  char *buf = malloc(BUF);
  if (!buf) return;
  while (wait_readable(fd)) {
    struct sockaddr_storage from;
    socklen_t fl = sizeof(from);
    ssize_t n = recvfrom(fd, buf, BUF, MSG_TRUNC, (struct sockaddr *)&from, &fl);
    COUNT(syscalls, 1);
    if (n < 0) continue;
    COUNT(bytes_in, (uint64_t)n);
    COUNT(reads, 1);
    if (n > BUF || B.o->mode == MODE_SINK) continue; /* never echo a cut one */
    const void *out = B.o->mode == MODE_GREET ? GREETING : buf;
    size_t len = B.o->mode == MODE_GREET ? sizeof(GREETING) - 1 : (size_t)n;
    ssize_t w = sendto(fd, out, len, MSG_NOSIGNAL, (struct sockaddr *)&from, fl);
    COUNT(syscalls, 1);
    if (w > 0) COUNT(bytes_out, (uint64_t)w);
  }
  free(buf);
}

int serve_blocking(const server_opts *o, int lfd, server_stats *st) {
  B.o = o;
  B.st = st;
  B.workers = NULL;
  B.open = 0;
  if (o->proto == PROTO_UDP) {
    serve_datagrams(lfd);
    return 0;
  }
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, STACK);
  while (wait_readable(lfd)) {
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    COUNT(syscalls, 1);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) usleep(20000);
      continue;
    }
    reap(0);
    pthread_mutex_lock(&B.mu);
    long open = B.open;
    pthread_mutex_unlock(&B.mu);
    if (o->max_conns && open >= o->max_conns) {
      close(fd);
      COUNT(refused, 1);
      continue;
    }
    if (o->proto == PROTO_TCP) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      COUNT(syscalls, 1);
    }
    worker *w = calloc(1, sizeof(*w));
    if (!w) {
      close(fd);
      continue;
    }
    w->fd = fd;
    pthread_mutex_lock(&B.mu);
    w->next = B.workers;
    B.workers = w;
    B.open++;
    if (pthread_create(&w->tid, &attr, serve_conn, w) != 0) {
      B.workers = w->next;
      B.open--;
      pthread_mutex_unlock(&B.mu);
      close(fd);
      free(w);
      fprintf(stderr, "server: blocking: cannot start a thread\n");
      continue;
    }
    pthread_mutex_unlock(&B.mu);
    COUNT(connections, 1);
  }
  pthread_attr_destroy(&attr);
  reap(1);
  return 0;
}
