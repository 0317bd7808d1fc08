/* server.h - what the comparison servers share: options, counters, and the
 * backend table's entry.  Every backend serves the same wire behaviour. */
#ifndef URSA_APPS_SERVER_H
#define URSA_APPS_SERVER_H

#include <stdint.h>
#include <sys/socket.h>

#include "ursa/ursa.h"

enum { PROTO_TCP, PROTO_UDP, PROTO_UNIX, PROTO_SEQPACKET, PROTO_UNIXGRAM };
enum { MODE_ECHO, MODE_GREET, MODE_SINK };
/* --dispatch: how --threads N loops share the connections. */
enum { DISPATCH_REUSEPORT, DISPATCH_HANDOFF, DISPATCH_FEWEST };
#define MAX_THREADS 64

#define GREETING "Thank you for connecting"
/* Reading pauses while this many bytes wait to be sent to one peer
 * (--high-water); it resumes at half. */
#define HIGH_WATER (1u << 20)

typedef struct server_opts {
  const char *backend;
  ursa_backend lib_backend; /* the library's backend for uring and
                               ursa-epoll */
  int proto;
  int mode;
  ursa_addr listen;
  int stop_fd;         /* signalfd for SIGINT/SIGTERM: readable = stop */
  uint64_t deadline_ms;/* CLOCK_MONOTONIC ms to stop at; 0: none */
  int max_conns;       /* 0: no cap */
  uint32_t uring_disable; /* URSA_FEAT_* off, for A/B runs */
  uint32_t uring_enable;  /* opt-in URSA_FEAT_* on */
  unsigned write_batch;   /* uring: writes per send, 0: the default */
  unsigned batch_wait_us; /* uring, batched waits: a batch's bound, 0: 200 */
  ursa_batch_policy batch_policy; /* uring: when waits batch */
  size_t high_water;      /* uring, libuv: bytes queued per peer before
                             reading pauses (epoll, select: one receive's
                             worth by design; blocking: none, it blocks) */
  unsigned buf_count;      /* uring: receive ring size, 0: ursa's default */
  unsigned buf_size;       /* uring: bytes per receive buffer, 0: default */
  int echo_copy;           /* uring: copy every echo (no ursa_buf_keep) */
  unsigned zc_threshold;   /* uring: writes this large go zero-copy */
  uint64_t idle_ms;       /* close a connection silent this long; 0: never */
  uint64_t min_rate;      /* bytes/s a connection must send, judged over
                             windows of idle_ms; 0: no rate check */
  int threads;            /* uring, ursa-epoll, epoll: loops on threads of
                             their own (0 or 1: one, on the main thread) */
  int workers;            /* uring, ursa-epoll: messages handled on this
                             many pool threads, replies written from the
                             loop (0: on the loop) */
  const char *tls_cert;   /* uring, ursa-epoll, epoll: serve TLS with this
                             certificate chain (PEM) */
  const char *tls_key;    /* and its key */
  int dispatch;           /* DISPATCH_*: SO_REUSEPORT listeners, or one
                             acceptor handing connections out (round robin,
                             or to the loop with the fewest open) */
  int gro;                /* udp: coalesced receives (UDP_GRO) */
  unsigned large_bufs;    /* with gro: the 64 KiB ring's size, 0: 64 */
  int gso;                /* udp with gro: a coalesced receive's echo goes
                             back as one GSO send */
} server_opts;

/* What --idle-timeout and --min-rate watch on one connection.  "Silent"
 * means no byte arrived and, while reading waits on the peer taking its
 * replies, no byte left either. */
typedef struct conn_clock {
  uint64_t last_ms;   /* last progress */
  uint64_t win_ms;    /* start of the current rate window */
  uint64_t win_bytes; /* received in that window */
} conn_clock;

static inline void clock_start(conn_clock *k, uint64_t now) {
  k->last_ms = k->win_ms = now;
  k->win_bytes = 0;
}

static inline void clock_rx(conn_clock *k, uint64_t now, uint64_t n) {
  k->last_ms = now;
  k->win_bytes += n;
}

/* 0: the connection may stay; otherwise it is to be closed (idle or too
 * slow).  Moves the rate window on when one has passed. */
int clock_expired(const server_opts *o, conn_clock *k, uint64_t now);
/* The rate half alone, for a backend whose runtime times silence itself. */
int clock_slow(const server_opts *o, conn_clock *k, uint64_t now);

/* How often a backend that sweeps its connections should look. */
uint64_t clock_sweep_ms(const server_opts *o);

typedef struct server_stats {
  uint64_t connections;
  uint64_t refused;     /* connections closed at once (limits) */
  uint64_t timed_out;   /* closed by --idle-timeout or --min-rate */
  uint64_t bytes_in;
  uint64_t bytes_out;
  uint64_t reads;       /* receives that returned data: one echo each */
  uint64_t syscalls;    /* counted by the backend itself; UINT64_MAX: the
                           backend cannot count them (libuv) */
  uint64_t enters;      /* io_uring_enter calls (uring only) */
  uint64_t batch_waits; /* of those, waits that asked for a batch */
  uint64_t sqes;        /* SQEs submitted (uring only) */
  uint64_t enobufs;     /* receives that found the ring empty (uring) */
  uint64_t handshakes;  /* --tls-cert: TLS handshakes completed */
  uint64_t tls_failed;  /* and failed (bad client, garbage, timeout) */
} server_stats;

/* The listening socket is already bound (fd >= 0) for the poll-based and
 * blocking backends; the uring backend binds through ursa.  A backend
 * returns 0 after a clean stop, 2 when it could not set up (bad address,
 * busy port), or 1 when serving failed, with a message on stderr. */
/* What a server can do beyond one loop's TCP, UDP and Unix stream echo;
 * each option that needs one is refused, naming the servers that have
 * it, on any other. */
#define CAP_THREADS 0x01     /* --threads: a loop per thread */
#define CAP_ANY_PROTO_THREADS 0x02 /* --threads over every --proto, not
                                      only tcp and udp */
#define CAP_DISPATCH 0x04    /* --dispatch handoff|fewest */
#define CAP_TLS 0x08         /* --tls-cert, --tls-key */
#define CAP_WORKERS 0x10     /* --workers */
#define CAP_MESSAGES 0x20    /* --proto seqpacket|unixgram */
#define CAP_OWN_LISTENER 0x40 /* makes its own listening socket (main binds
                                 one for the others) */
#define CAP_LIB 0x80         /* runs on the library: its --uring-* options */
#define CAP_UDP_OFFLOAD 0x100 /* --gro, --gso */
#define CAP_UDP_ONLY 0x200    /* serves --proto udp and nothing else: the
                                 suites and the bench keep it out of the
                                 stream cases */

typedef struct backend {
  const char *name;
  int (*serve)(const server_opts *o, int listen_fd, server_stats *st);
  unsigned caps;     /* CAP_* */
  int lib_backend;   /* URSA_BACKEND_* for CAP_LIB servers */
  const char *about; /* one line for --help and --list-backends */
} backend;

int serve_uring(const server_opts *o, int listen_fd, server_stats *st);
int serve_epoll(const server_opts *o, int listen_fd, server_stats *st);
int serve_select(const server_opts *o, int listen_fd, server_stats *st);
int serve_blocking(const server_opts *o, int listen_fd, server_stats *st);
int serve_libuv(const server_opts *o, int listen_fd, server_stats *st);
int serve_mmsg(const server_opts *o, int listen_fd, server_stats *st);

/* --proto udp: every server asks for socket buffers this large (the
 * kernel caps them at net.core.rmem_max / wmem_max), as QUIC servers do, so
 * that a burst from many peers is not dropped while the server is busy. */
#define UDP_SOCKET_BUFFER (4 << 20)
void udp_buffers(int fd);

uint64_t now_ms(void);
/* Prints "server: BACKEND PROTO listening on ADDR": the line scripts wait
 * for before they connect. */
void announce(const server_opts *o, const struct sockaddr *sa, socklen_t len);
/* True once SIGINT/SIGTERM arrived or the deadline passed (one syscall:
 * a poll of the signalfd, counted). */
int should_stop(const server_opts *o, server_stats *st);
/* True once --duration has run out (no syscall beyond the clock). */
int past_deadline(const server_opts *o);

#endif /* URSA_APPS_SERVER_H */
