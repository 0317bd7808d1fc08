/* ursa.h - the public contract of ursa, a completion-based networking runtime
 * on io_uring. */
#ifndef URSA_URSA_H
#define URSA_URSA_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define URSA_EXPORT __attribute__((visibility("default")))
#else
#define URSA_EXPORT
#endif

/* ------------------------------------------------------------------------
 * Rules that hold for every function below
 *
 * Errors.  Functions return 0 (or a count) on success and a negative errno on
 * failure; they never set errno for the caller to read.  Callbacks receive
 * the operation's result the same way.  URSA_EOF is the one code of ursa's
 * own: the peer closed its side of a stream.
 *
 * Callbacks.  A callback never runs inside the call that started the
 * operation; it runs from ursa_loop_run() on the loop's thread.  When a
 * function returns an error, the callback it was given is never called.
 * When it returns 0, the callback is called exactly once (multishot reads
 * and accepts: once per event, and the operation says when it has ended).
 *
 * Ownership.  The caller owns every handle (ursa_listener, ursa_stream,
 * ursa_dgram, ursa_poll, ursa_signal, ursa_process; each starts with an ursa_handle and
 * closes with ursa_close()), every timer (ursa_timer) and every request
 * (ursa_write_req, ursa_send_req, ursa_post_req, ursa_resolve_req,
 * ursa_handoff_req, ursa_work, ursa_fs_req).  ursa initialises them and uses their memory until:
 *   - a request or a timer: its callback has been called (it may be freed
 *     or reused inside that callback; a repeating timer, until stopped);
 *   - a handle: its close callback has been called (likewise), or, with a
 *     NULL close callback, the loop has run until it ended.
 * Timers and requests must be zero-filled before their first use
 * (`ursa_timer t = {0};`, calloc, not malloc), so that ursa can tell an
 * active one: a malloc'd request is refused with -EBUSY.
 * Buffers handed to ursa_write() must stay valid and unchanged until the
 * write's callback.  Buffers handed to a read callback are borrowed: they
 * belong to the loop again as soon as the callback returns.
 *
 * Threads.  A loop and everything on it belong to the thread that created
 * the loop (the ring is set up SINGLE_ISSUER).  Use one loop per thread.
 * The exceptions, callable from any thread, are ursa_post(),
 * ursa_post_call(), ursa_loop_stop_async(), ursa_loop_retain() and
 * ursa_loop_release() ("threads" below).  After fork() the child must not
 * use the parent's loops.
 *
 * Fields.  Structs are public so that callers can embed them without
 * allocation; only the fields marked "public" may be read or written by the
 * caller, "read-only" ones may be read, the rest are private.
 * ------------------------------------------------------------------------ */

#define URSA_VERSION_MAJOR 0
#define URSA_VERSION_MINOR 1
#define URSA_VERSION_PATCH 0
#define URSA_VERSION_HEX \
  ((URSA_VERSION_MAJOR << 16) | (URSA_VERSION_MINOR << 8) | URSA_VERSION_PATCH)

/* The version of the library actually linked, as URSA_VERSION_HEX / "0.1.0". */
URSA_EXPORT unsigned ursa_version(void);
URSA_EXPORT const char *ursa_version_string(void);

/* ---- errors ------------------------------------------------------------ */

#define URSA_EOF (-4095) /* end of stream: the peer shut down its side */

/* Why the last refusal on this thread happened, naming the argument or
 * path ("ursa_loop_new: buf_count 100 is not a power of two").  Set with
 * every -EINVAL an ursa function returns, and with -EEXIST/-EADDRINUSE for
 * Unix socket paths; not cleared by later successes. */
URSA_EXPORT const char *ursa_error_detail(void);

/* A short message for an error code (negative errno or URSA_EOF); never NULL. */
URSA_EXPORT const char *ursa_strerror(int err);
/* The symbolic name ("ECONNREFUSED", "EOF"); never NULL ("UNKNOWN"). */
URSA_EXPORT const char *ursa_err_name(int err);

/* ---- loop -------------------------------------------------------------- */

typedef struct ursa_loop ursa_loop; /* opaque; one io_uring ring, or one
                                       epoll instance (see ursa_backend) */

/* What a loop runs on.  Every function in this header behaves the same on
 * both; what differs is said where it does (features that exist only on
 * io_uring are reported as not in use on epoll, never imitated). */
typedef enum ursa_backend {
  URSA_BACKEND_AUTO = 0, /* io_uring, else epoll when io_uring cannot be set
                            up (seccomp, kernel.io_uring_disabled, an old
                            kernel, the memlock limit); the loop records
                            why.  The environment variable URSA_BACKEND
                            (auto, uring or epoll) overrides AUTO, and only
                            AUTO, without a rebuild. */
  URSA_BACKEND_URING = 1, /* io_uring or fail (benchmarks use it, so as
                             never to measure the wrong thing silently) */
  URSA_BACKEND_EPOLL = 2, /* epoll(7) and non-blocking system calls */
} ursa_backend;

/* io_uring features the loop can use, one row each:
 *   X(NAME, bit, "name", "kernel", opt_in, epoll)
 * Each is probed at run time; kernel is the release it first appeared in;
 * opt_in: used only when ursa_loop_options.enable asks for it; epoll: the
 * epoll backend gives the layers the same behaviour.  The enum, the count,
 * URSA_FEAT_OPT_IN, ursa_feature_name() and the probe's report all come
 * from this one table. */
#define URSA_FEATURES(X)                                                   \
  X(SUBMIT_ALL, 0, "submit_all", "5.18", 0, 0)       /* setup flag */      \
  X(COOP_TASKRUN, 1, "coop_taskrun", "5.19", 0, 0)   /* setup flag */      \
  X(SINGLE_ISSUER, 2, "single_issuer", "6.0", 0, 0)  /* setup flag */      \
  X(DEFER_TASKRUN, 3, "defer_taskrun", "6.1", 0, 0)  /* setup flag */      \
  X(REG_RING_FD, 4, "reg_ring_fd", "5.18", 0, 0)     /* registered fd */   \
  X(BUF_RING, 5, "buf_ring", "5.19", 0, 1) /* provided buffer ring */      \
  X(MULTISHOT_ACCEPT, 6, "multishot_accept", "5.19", 0, 1)                 \
  X(MULTISHOT_RECV, 7, "multishot_recv", "6.0", 0, 1)                      \
  X(SEND_ZC, 8, "send_zc", "6.0", 0, 0) /* zero-copy send */               \
  X(FAST_POLL, 9, "fast_poll", "5.7", 0, 0) /* internal poll, sockets */   \
  X(NODROP, 10, "nodrop", "5.5", 0, 0) /* CQ overflow keeps completions */ \
  X(CQE_SKIP, 11, "cqe_skip", "5.17", 0, 0) /* IOSQE_CQE_SKIP_SUCCESS */   \
  /* accept into direct descriptors, slots allocated by the kernel; only   \
   * with ursa_loop_options.direct_files */                                \
  X(DIRECT_FILES, 12, "direct_files", "5.19", 0, 0)                        \
  /* a stream recv fills several buffers at once */                        \
  X(RECV_BUNDLE, 13, "recv_bundle", "6.10", 1, 0)                          \
  /* stream buffers filled by parts (incremental consumption) */           \
  X(BUF_INC, 14, "buf_inc", "6.12", 1, 0)                                  \
  /* one ring posts a completion into another: ursa_post() from a loop's   \
   * thread wakes an io_uring loop without a system call */                \
  X(MSG_RING, 15, "msg_ring", "5.18", 0, 0)                                \
  /* a wait for several completions bounded by a minimum timeout:          \
   * batch_policy, batch_wait_us */                                        \
  X(MIN_WAIT, 16, "min_wait", "6.12", 0, 0)                                \
  /* file reads tried at once on the loop's thread, without blocking,     \
   * before the ring or the pool: preadv2(RWF_NOWAIT) (pages cached), or   \
   * pread on tmpfs and ramfs, which refuse RWF_NOWAIT */                  \
  X(FILE_INLINE, 17, "file_inline", "4.14", 0, 1)                         \
  /* a child's exit waited for by IORING_OP_WAITID on its pidfd (else a   \
   * poll of the pidfd, then waitid(2) at once) */                         \
  X(WAITID, 18, "waitid", "6.7", 0, 1)                                     \
  /* a pipe, FIFO, terminal or device stream read by one multishot read   \
   * (else one read per buffer, armed again); opt-in: pipe reads measured  \
   * 0.8x the rate of one read at a time (docs/measurements.md) */         \
  X(READ_MULTISHOT, 19, "read_multishot", "6.7", 1, 1)                     \
  /* ursa_post() from a plain thread wakes an io_uring loop with a ring    \
   * message sent by io_uring_register, without a ring of the sender's     \
   * (else by the loop's eventfd, which the loop then reads and re-arms);  \
   * opt-in: on 6.18 its post-to-callback latency was 5x the eventfd's     \
   * (docs/measurements.md) */                                             \
  X(SYNC_MSG_RING, 20, "sync_msg_ring", "6.13", 1, 0)                      \
  /* a bounded wait's argument read from a region registered with the     \
   * ring, not copied in on every wait; opt-in until the A/B block          \
   * resolves a gain (docs/measurements.md) */                            \
  X(REG_WAIT, 21, "reg_wait", "6.13", 1, 0)                               \
  /* ursa_write_file() by IORING_OP_SPLICE through a pipe from a bounded   \
   * pool of the loop's (file to pipe, pipe to socket), in place of        \
   * sendfile(2) on the loop's thread for cached ranges and reads into a   \
   * buffer for the rest; opt-in: the static block's A/B measured it      \
   * costlier (docs/measurements.md) */                                    \
  X(FILE_SPLICE, 22, "file_splice", "5.7", 1, 0)

#define URSA__FEAT_ENUM(N, bit, name, kernel, opt_in, epoll) \
  URSA_FEAT_##N = 1u << (bit),
enum ursa_feature { URSA_FEATURES(URSA__FEAT_ENUM) };
#undef URSA__FEAT_ENUM
#define URSA__FEAT_ONE(N, bit, name, kernel, opt_in, epoll) +1
#define URSA__FEAT_IF_OPT_IN(N, bit, name, kernel, opt_in, epoll) \
  | ((opt_in) ? (uint32_t)URSA_FEAT_##N : 0u)
/* How many features there are (bits 0 to URSA_FEAT_COUNT - 1). */
#define URSA_FEAT_COUNT (0 URSA_FEATURES(URSA__FEAT_ONE))
/* The features used only when ursa_loop_options.enable asks for them. */
#define URSA_FEAT_OPT_IN (0u URSA_FEATURES(URSA__FEAT_IF_OPT_IN))

/* When an io_uring wait asks for several completions at once and lets the
 * kernel hold the first back (up to batch_wait_us) until the rest are in:
 * one wake-up per batch instead of one per completion, which pays where
 * the loop idles between completions from many peers (a server whose
 * clients are the bottleneck).  docs/DESIGN.md, "Batched waits", gives the
 * measurements behind the rules. */
typedef enum ursa_batch_policy {
  /* Batch only while the arrivals support it: never with fewer than 8
   * handles (streams, listeners, datagram sockets), and then for at most a
   * quarter of them, so peers that wait on the loop's answers are never
   * all held back (the lockstep a few connections fall into); a batch
   * asks for one more than the last one got, and a batched wait that ends
   * short of its count (the bound passed first) and whose handling
   * queued new work (the hold delayed it) turns batching off for the next
   * 1, 2, 4 ... 256 waits; a full batch of 4 or more starts batching
   * over, a smaller one steps the back-off down by one. */
  URSA_BATCH_AUTO = 0,
  /* Every wait asks for as many completions as its own submissions post
   * at once plus as many as the last wait got from outside (up to 32). */
  URSA_BATCH_ALWAYS = 1,
  /* Every wait returns at the first completion. */
  URSA_BATCH_NEVER = 2,
} ursa_batch_policy;

typedef struct ursa_loop_options {
  unsigned sq_entries; /* submission queue size; 0: 256 */
  unsigned cq_entries; /* completion queue size; 0: 4 x sq_entries */
  unsigned buf_count;  /* receive buffers in the provided ring, a power of
                          two up to 32768; 0: 256 */
  unsigned buf_size;   /* bytes per receive buffer; 0: 16384 */
  uint32_t disable;    /* URSA_FEAT_* bits the loop must not use, for A/B
                          runs and to exercise the fallback paths */
  uint32_t enable;     /* opt-in URSA_FEAT_* bits, used when the kernel
                          offers them: those of URSA_FEAT_OPT_IN (the
                          table above marks them; any other bit is
                          refused).
                          Off by default; docs/DESIGN.md says why. */
  unsigned write_batch;/* queued writes one send may carry, 1 to
                          URSA_WRITE_BATCH_MAX; 0: URSA_WRITE_BATCH */
  unsigned zc_threshold;/* a write of at least this many bytes that goes out
                          alone is sent with SEND_ZC (zero copy; its
                          callback waits for the kernel's notification that
                          the pages are free).  0 (the default): never.
                          A send the kernel refuses to pin (RLIMIT_MEMLOCK)
                          goes again as a copy, and that stream stays on
                          copies (stats.zc_refused); Unix streams never
                          use it.  docs/DESIGN.md says when it pays. */
  unsigned buf_keep_max;/* receive buffers the application may keep at once
                          with ursa_buf_keep(); 0: half of buf_count */
  unsigned direct_files;/* slots in a table of direct descriptors (io_uring's
                          fixed files) that accepted streams go into: their
                          operations skip the per-call descriptor lookup and
                          they use no entry of the process's descriptor
                          table.  Such a stream has fd -1, so nothing can be
                          done to it outside ursa (set TCP_NODELAY on the
                          listener with URSA_LISTEN_NODELAY: accepted sockets
                          inherit it).  Accepts are then single-shot, each
                          with a slot reserved: the kernel resets a
                          connection that meets a full table, so ursa never
                          lets one.  While every slot is taken the listener
                          reports -ENFILE and backs off as for EMFILE; the
                          connections wait in the backlog.  Capped at
                          RLIMIT_NOFILE.  0 (the default): ordinary
                          descriptors.  Not used on epoll. */
  ursa_backend backend;/* URSA_BACKEND_AUTO (0, the default), _URING or
                          _EPOLL */
  unsigned post_ring;  /* entries in the bounded ring ursa_post_call()
                          fills, a power of two up to 1 << 20; 0: 1024
                          (32 bytes each) */
  unsigned batch_wait_us;/* a batched wait (batch_policy): the longest the
                          first completion of a batch waits for the rest,
                          so the most latency batching adds.  Sends already
                          submitted never wait for it.  1 to 10000; 0: 200 */
  unsigned large_bufs; /* 64 KiB receive buffers, in a ring of their own,
                          for datagram receives with URSA_RECV_LARGE or
                          URSA_RECV_GRO: a power of two up to 4096; 0: 64.
                          Made at the first such receive.  Few, so that a
                          coalesced receive's copy stays in cache */
  ursa_batch_policy batch_policy; /* when a wait asks the kernel for a
                          batch of completions (URSA_FEAT_MIN_WAIT, io_uring
                          on 6.12+; elsewhere every wait is plain):
                          URSA_BATCH_AUTO (0, the default), _ALWAYS or
                          _NEVER (the same as disabling URSA_FEAT_MIN_WAIT) */
} ursa_loop_options;

/* Creates a loop with its backend and receive buffers (all memory the
 * loop needs up front is taken here).  opts may be NULL.  On io_uring,
 * set-up flags the kernel refuses are dropped one by one, newest first; with
 * URSA_BACKEND_AUTO, a ring that cannot be set up at all (any of the errors
 * below but -EINVAL) gives an epoll loop instead, and ursa_loop_features()
 * says why.  Returns 0 and sets *loop, or:
 *   -EINVAL   bad options, or a bad URSA_BACKEND value (the reason is in
 *             ursa_error_detail());
 *   -EPERM, -ENOSYS  (URSA_BACKEND_URING) io_uring is blocked (seccomp,
 *             kernel.io_uring_disabled) or absent:
 *             ursa_explain_setup_error() says which and the fix;
 *   -ENOMEM   memory or the locked-memory limit;
 *   -EOPNOTSUPP (URSA_BACKEND_URING) the kernel lacks an operation ursa
 *             cannot do without (provided buffer rings, Linux 5.19). */
URSA_EXPORT int ursa_loop_new(ursa_loop **loop, const ursa_loop_options *opts);


/* Writes a sentence that names the cause of an io_uring set-up error and the
 * fix into buf (always NUL-terminated when len > 0).  Returns the length it
 * needed, as snprintf. */
URSA_EXPORT int ursa_explain_setup_error(int err, char *buf, size_t len);

typedef enum ursa_run_mode {
  URSA_RUN_DEFAULT = 0, /* until no operation is active, or ursa_loop_stop() */
  URSA_RUN_ONCE,        /* wait for at least one completion (a timer's
                           expiry or a cancelled operation's callback
                           counts; a signal that interrupts the wait does
                           not), dispatch, return */
  URSA_RUN_NOWAIT,      /* dispatch what is ready without blocking, return */
} ursa_run_mode;

/* Submits everything queued, waits (io_uring: one io_uring_enter,
 * submit-and-wait; epoll: the operations are tried at once and what would
 * block waits in one epoll_wait) and dispatches completions.  Returns 1 when operations are still active, 0 when
 * none are, or a negative errno when the ring failed.  Not reentrant: a
 * callback that calls it gets -EBUSY.  In a child after fork() it returns
 * -EPERM: the ring and everything on it belong to the parent. */
URSA_EXPORT int ursa_loop_run(ursa_loop *loop, ursa_run_mode mode);

/* How many operations are active (started and not yet called back): the
 * loop runs while this is above 0. */
URSA_EXPORT unsigned ursa_loop_alive(const ursa_loop *loop);

/* Makes ursa_loop_run() return after the current dispatch round.  Safe from
 * callbacks. */
URSA_EXPORT void ursa_loop_stop(ursa_loop *loop);

/* Frees the loop.  Returns -EBUSY (and frees nothing) while any operation is
 * active or any handle is open (a stream, listener or datagram socket whose
 * close callback has not run yet, with or without operations in flight):
 * close them and run the loop first.  From then on ursa_post() gets
 * -ESHUTDOWN; posts already made that have not run are called back here
 * with -ECANCELED, and posts in progress on other threads are waited for.
 * The memory goes with the last ursa_loop_release() (see there). */
URSA_EXPORT int ursa_loop_close(ursa_loop *loop);

/* The loop's clock in milliseconds (CLOCK_MONOTONIC), read once per round. */
URSA_EXPORT uint64_t ursa_loop_now(const ursa_loop *loop);

/* Counters the loop keeps; cheap enough to be always on. */
typedef struct ursa_stats {
  uint64_t enters;       /* io_uring_enter calls; on epoll, every system
                            call the backend makes (epoll_wait, epoll_ctl
                            and each socket call) */
  uint64_t sqes;         /* SQEs submitted (on epoll: operations started,
                            which the backend runs from the same SQEs) */
  uint64_t cqes;         /* CQEs reaped (on epoll: completions) */
  uint64_t rearms;       /* multishot operations armed again after ending */
  uint64_t enobufs;      /* receives that found the buffer ring empty */
  uint64_t cq_overflows; /* rounds that found the CQ full, the kernel
                            holding completions back for later */
  uint64_t cq_dropped;   /* completions the kernel lost (0 with NODROP;
                            always 0 on epoll, whose queue grows) */
  uint64_t sq_full;      /* times an SQE was not at hand and had to wait */
  uint64_t bytes_in;     /* bytes received on streams */
  uint64_t bytes_out;    /* bytes sent on streams */
  uint64_t zc_sends;     /* sends that went zero-copy (SEND_ZC) */
  uint64_t zc_refused;   /* zero-copy sends refused (pinned pages over
                            RLIMIT_MEMLOCK, or a Unix socket) and sent
                            again as copies */
  uint64_t bufs_out;     /* receive buffers the kernel filled that are not
                            back in the ring yet: 0 outside callbacks */
  uint64_t posts;        /* ursa_post() callbacks run (status 0) */
  uint64_t wakeups;      /* wake-ups sent to this loop, from any thread
                            (eventfd writes and MSG_RINGs; posts coalesce,
                            so wakeups <= posts + ursa_loop_stop_async()s) */
  uint64_t msg_ring_sent;/* wake-ups this loop sent another by MSG_RING */
  uint64_t batch_waits;  /* waits that asked for a batch (batch_policy) */
  uint64_t batch_short;  /* of those, waits the bound ended short of their
                            count (URSA_BATCH_AUTO then waits plainly for a
                            while) */
} ursa_stats;

/* Copies the loop's counters into *out (cheap: no system call). */
URSA_EXPORT void ursa_loop_stats(const ursa_loop *loop, ursa_stats *out);

/* ---- feature probe ----------------------------------------------------- */

typedef struct ursa_features {
  int setup_error;  /* 0, or why io_uring could not be set up at all */
  uint32_t kernel;  /* URSA_FEAT_* the running kernel offers */
  uint32_t used;    /* URSA_FEAT_* the loop uses (0 from ursa_probe()) */
  uint32_t disabled;/* URSA_FEAT_* switched off by the loop's options */
  char kernel_release[64]; /* uname -r */
  ursa_backend backend; /* what the loop runs on (URSA_BACKEND_URING or
                           _EPOLL); AUTO (0) from ursa_probe() */
  char backend_why[320]; /* why: "asked for", "URSA_BACKEND=epoll", or the
                            io_uring set-up error and its explanation */
} ursa_features;

/* Probes the running kernel with a short-lived ring.  Returns 0, or the
 * set-up error (also stored in out->setup_error). */
URSA_EXPORT int ursa_probe(ursa_features *out);

/* What this loop's kernel offers, what the loop uses, and its backend.
 * On epoll, multishot accept and receive and the buffer ring show as used:
 * the backend gives the same behaviour (each readiness event is read into a
 * buffer of the loop's pool); the features that only io_uring has (set-up
 * flags, direct descriptors, SEND_ZC, bundles, buffers by parts) show as
 * not used. */
URSA_EXPORT void ursa_loop_features(const ursa_loop *loop, ursa_features *out);

/* "io_uring" or "epoll". */
URSA_EXPORT const char *ursa_loop_backend(const ursa_loop *loop);

/* The name of one URSA_FEAT_* bit ("multishot_recv"), or NULL. */
URSA_EXPORT const char *ursa_feature_name(uint32_t bit);

/* Writes the names of mask's features ("recv_bundle, buf_inc and
 * min_wait"; "" for none) into buf, NUL-terminated and cut to len;
 * returns the length the whole list takes, as snprintf. */
URSA_EXPORT size_t ursa_feature_list(uint32_t mask, char *buf, size_t len);

/* Formats a probe as text (one line per feature: offered, used, and why
 * not) or, with json != 0, as one JSON object.  Returns the length needed,
 * as snprintf; buf is NUL-terminated when len > 0. */
URSA_EXPORT int ursa_features_format(const ursa_features *f, int json,
                                     char *buf, size_t len);

/* ---- addresses --------------------------------------------------------- */

typedef struct ursa_addr {
  struct sockaddr_storage ss; /* public */
  socklen_t len;              /* public */
} ursa_addr;

/* Parses what a user types:
 *   127.0.0.1:7000     IPv4
 *   [::1]:7000         IPv6 (brackets required; [fe80::1%eth0]:7000 too)
 *   localhost:7000     a host name, resolved here with getaddrinfo(3),
 *                      which BLOCKS the calling thread (a slow DNS server
 *                      stalls it): the first answer.  Inside a running loop
 *                      use ursa_resolve(), which does not block and gives
 *                      every answer
 *   :7000              any address: [::]:7000, which ursa_listen() makes
 *                      dual-stack; 0.0.0.0:7000 where IPv6 is off
 *   unix:/run/x.sock   a Unix socket path (relative paths too)
 *   unix:@name         a Linux abstract-namespace name
 * Returns 0, or -EINVAL with ursa_error_detail() naming the fault (missing
 * port, port out of range, path longer than sun_path, unknown host, stray
 * characters), or -EAGAIN when the name could not be resolved for now (a
 * temporary failure: try again). */
URSA_EXPORT int ursa_addr_parse(const char *text, ursa_addr *out);

/* Writes addr in the form ursa_addr_parse() reads ("127.0.0.1:7000",
 * "[::1]:7000", "unix:/path", "unix:@name", "unix:" for an unnamed socket).
 * Returns the length needed, as snprintf; -EINVAL for an unknown family. */
URSA_EXPORT int ursa_addr_format(const struct sockaddr *addr, socklen_t len,
                                 char *buf, size_t size);

/* ---- socket files ------------------------------------------------------ */

/* The socket file that a bind to a Unix path made, so that it alone is
 * removed later (another process may have put its own on the path since). */
typedef struct ursa_sockfile {
  char path[109]; /* read-only: "" when no file was made (IP, abstract);
                     sun_path may fill all 108 bytes, then the NUL */
  /* private */
  uint64_t dev;
  uint64_t ino;
} ursa_sockfile;

/* Binds fd, a socket the caller made, to addr and, with backlog >= 0,
 * listens (0: SOMAXCONN; < 0: bind only, for datagram sockets).  On a Unix
 * path: a socket file that nobody listens on (left by a crash) is replaced,
 * one with a live socket behind it gives -EADDRINUSE (a full backlog counts
 * as live; the probe never blocks), anything else -EEXIST (never removed).
 * Probe, replacement, bind and listen happen under an flock(2) of the
 * path's directory, so two ursa programs started together on one stale
 * path never both succeed; a program that binds without that lock can
 * still race.  file (may be NULL) gets the file made.  Returns 0 or a
 * negative errno; ursa_error_detail() names the path for -EADDRINUSE and
 * -EEXIST. */
URSA_EXPORT int ursa_socket_bind(int fd, const struct sockaddr *addr,
                                 socklen_t addrlen, int backlog,
                                 ursa_sockfile *file);

/* Removes the file ursa_socket_bind() made, if the path still holds that
 * same file, and clears file->path.  Safe on a file that holds nothing. */
URSA_EXPORT void ursa_sockfile_remove(ursa_sockfile *file);

/* ---- operations -------------------------------------------------------- */

/* A kernel timespec (struct __kernel_timespec's layout, checked at build
 * time), private to the requests that carry a linked timeout. */
typedef struct ursa_timespec {
  int64_t tv_sec;
  long long tv_nsec;
} ursa_timespec;

/* The part every operation shares.  Private; embedded first in timers and
 * requests, and inside handles for their own operations. */
typedef struct ursa_op {
  struct ursa_op *next; /* wait and cancel lists */
  uint8_t kind;
  uint8_t state;
  uint8_t flags;
  uint8_t nsqe;
  int32_t res;
} ursa_op;

/* Cancels an operation that was started: a timer (&t->op), a write
 * (&w->op) or a datagram send (&req->op); ursa_timer_stop(),
 * ursa_write_cancel() and ursa_dgram_send_cancel() say the same without
 * naming the op.  Its callback then runs with -ECANCELED, or with its own
 * result if the operation finished first.  Returns 0, -ENOENT when the
 * operation is not active (never started, or its callback already ran), or
 * -EALREADY when its result is in and only the callback is still to come. */
URSA_EXPORT int ursa_cancel(ursa_loop *loop, ursa_op *op);

/* ---- handles: their one life and their one close ---------------------- */

/* What a handle is. */
typedef enum ursa_handle_type {
  URSA_HANDLE_STREAM = 1, /* an ursa_stream */
  URSA_HANDLE_LISTENER,   /* an ursa_listener */
  URSA_HANDLE_DGRAM,      /* an ursa_dgram */
  URSA_HANDLE_POLL,       /* an ursa_poll */
  URSA_HANDLE_SIGNAL,     /* an ursa_signal */
  URSA_HANDLE_PROCESS,    /* an ursa_process */
} ursa_handle_type;

typedef struct ursa_handle ursa_handle;
/* Called once, from the loop, when a handle has closed: every operation
 * it started has been called back and its descriptor is closed.  From
 * here on its memory is the caller's again (free it here if you like). */
typedef void (*ursa_close_cb)(ursa_handle *h);
struct ursa__handle_kind; /* what closing one of its kind takes */

/* The part every handle starts with: a pointer to any handle is a pointer
 * to its ursa_handle (&stream->handle, or (ursa_handle *)stream), and
 * handle->data is the handle's own data (stream->data names the same
 * field).  The handle is open from the call that made it (ursa_accept(),
 * ursa_connect(), ursa_listen(), ursa_dgram_bind(), ursa_poll_open(),
 * ursa_signal_start()) until its close callback. */
struct ursa_handle {
  void *data;      /* public */
  ursa_loop *loop; /* read-only */
  uint8_t type;    /* read-only: ursa_handle_type */
  /* private */
  uint8_t closing; /* close asked for */
  uint8_t closed;  /* its close op is on its way */
  int nops;        /* the handle's operations not yet called back */
  const struct ursa__handle_kind *kind; /* NULL: not open */
  ursa_close_cb close_cb;
  ursa_op close_op;
  ursa_handle *hnext, *hprev; /* the loop's open handles */
};

/* Closes any handle: stops what it has in flight (a stream's writes and
 * reads, a listener's accepts, a datagram socket's sends; their callbacks
 * get -ECANCELED), closes its descriptor (a watcher's stays the caller's),
 * then calls cb (NULL: nothing is called) once, from the loop.  Returns 0,
 * -EALREADY when the handle is closing already (cb is not taken), or
 * -EINVAL (NULL, or a handle that is not open).  The typed closes below
 * (ursa_stream_close(), ...) are this close. */
URSA_EXPORT int ursa_close(ursa_handle *h, ursa_close_cb cb);

/* 1 when the handle's close has been asked for (it may still be open
 * until its callback), else 0. */
URSA_EXPORT int ursa_handle_closing(const ursa_handle *h);

typedef void (*ursa_walk_cb)(ursa_handle *h, void *arg);

/* Calls cb for every open handle of the loop (from its open to its close
 * callback, so closing ones too: ursa_handle_closing() tells), in the
 * order they were opened.  cb may close any handle, itself included. */
URSA_EXPORT void ursa_loop_walk(ursa_loop *loop, ursa_walk_cb cb, void *arg);

/* Closes every open handle that is not closing yet, for shutdown, each as
 * ursa_close(h, cb) does; handles already closing keep the callback their
 * own close gave them.  cb (may be NULL) tells the handles apart by
 * h->type and h->data, and frees what it must.  Run the loop afterwards
 * until it ends.  Returns how many it closed. */
URSA_EXPORT unsigned ursa_loop_close_all(ursa_loop *loop, ursa_close_cb cb);

/* ---- threads: posting to a loop, stopping it, its lifetime ------------- */

typedef struct ursa_post_req ursa_post_req;
/* status 0: runs on the loop's thread, from ursa_loop_run().  -ECANCELED:
 * the loop was closed before it ran; the callback then runs inside
 * ursa_loop_close(), on the thread that called it. */
typedef void (*ursa_post_cb)(ursa_post_req *req, int status);

struct ursa_post_req {
  void *data; /* public */
  /* private */
  ursa_post_req *next;
  ursa_post_cb cb;
  int busy;
};

/* Hands cb to the loop, from any thread (the loop's own too): it runs
 * once, on the loop's thread, in the order the posts were made (so in
 * order per sender).  The request is the caller's memory, zero-filled
 * before its first use, and must not be posted again or freed until its
 * callback; no memory is allocated per post.  Posts coalesce: the first
 * post after the loop last took its posts wakes it, the ones behind it
 * ride along.  The wake-up is an IORING_OP_MSG_RING when the poster is
 * running an io_uring loop of its own and the target is on io_uring too
 * (it leaves with the poster's next submit: no system call of its own),
 * otherwise a write to the loop's eventfd, whose read the loop keeps
 * posted.  Posting does not keep a loop alive (ursa_loop_hold() does):
 * posts to a loop that is not running wait for its next run.
 * Not safe from a signal handler (ursa_loop_stop_async() is).
 * Returns 0, -EINVAL (NULL), -EBUSY (req is still posted) or -ESHUTDOWN
 * (ursa_loop_close() has begun: cb will not be called). */
URSA_EXPORT int ursa_post(ursa_loop *loop, ursa_post_req *req,
                          ursa_post_cb cb);

/* fn(arg, 0) runs once on the loop's thread; -ECANCELED when the loop
 * closed first (then inside ursa_loop_close(), on its caller's thread). */
typedef void (*ursa_call_fn)(void *arg, int status);

/* ursa_post() without a request: the pair (fn, arg) goes into a bounded
 * ring of the loop's (ursa_loop_options.post_ring entries), so nothing of
 * the caller's is read by the loop but arg itself, and a post costs one
 * compare-and-swap.  Calls from one thread run in the order made; calls
 * and ursa_post() requests are not ordered against each other.  Wakes the
 * loop as ursa_post() does, coalesced the same way.  Returns 0, -EINVAL
 * (NULL), -EAGAIN (the ring is full: the loop has yet to take post_ring
 * calls; nothing was posted: try again later, or use ursa_post(), which
 * has no bound) or -ESHUTDOWN (ursa_loop_close() has begun).  Not safe
 * from a signal handler. */
URSA_EXPORT int ursa_post_call(ursa_loop *loop, ursa_call_fn fn, void *arg);

/* ursa_loop_stop() from any thread, and async-signal-safe: makes the
 * loop's ursa_loop_run() return after its current round, waking it if it
 * waits.  A stop asked for while the loop is not running ends its next
 * run at once. */
URSA_EXPORT void ursa_loop_stop_async(ursa_loop *loop);

/* Keeps the loop running (ursa_loop_run(URSA_RUN_DEFAULT) does not return
 * for want of operations) until as many ursa_loop_unhold() calls: for a
 * loop that only waits for posts or handed-off streams.  Loop thread. */
URSA_EXPORT void ursa_loop_hold(ursa_loop *loop);
URSA_EXPORT void ursa_loop_unhold(ursa_loop *loop);

/* A reference on the loop's memory, for threads that may post to it while
 * it closes: ursa_loop_close() frees the loop's resources, but its memory
 * (and the ring's descriptor, so that a wake-up in flight cannot reach a
 * descriptor reused by another ring) stays until the last reference is
 * released, and posts get -ESHUTDOWN meanwhile.  Without a reference,
 * posting to a loop after its ursa_loop_close() has returned is a use
 * after free, as with any freed handle.  Any thread. */
URSA_EXPORT void ursa_loop_retain(ursa_loop *loop);
URSA_EXPORT void ursa_loop_release(ursa_loop *loop);

/* ---- work on a pool of threads ----------------------------------------- */

/* For what cannot run on the loop without stalling it: a blocking call
 * (getaddrinfo, a read from a disk that stalls), or a long computation.
 * One pool serves every loop of the process (ursa_resolve() runs on it
 * too).  Its threads (named "ursa-work") start as work queues, up to the
 * pool's size, and stay for the next; more work waits its turn in order.
 * The size is 4 unless URSA_WORK_THREADS (1 to 1024) is set in the
 * environment when the pool is first used, or ursa_work_pool_size() says
 * otherwise.  A child after fork() starts threads of its own; work queued
 * in the parent is the parent's. */

typedef struct ursa_work ursa_work;
/* Runs on a pool thread.  It may block; it must not touch the loop or any
 * of its handles (ursa_post() to a loop is fine). */
typedef void (*ursa_work_fn)(ursa_work *w);
/* Runs on the loop's thread: status 0 after fn returned, or -ECANCELED
 * when ursa_work_cancel() took it off the queue before fn ran. */
typedef void (*ursa_work_cb)(ursa_work *w, int status);

struct ursa__task { /* private: an entry of the pool's queue */
  struct ursa__task *next;
  void (*run)(struct ursa__task *t);
};

struct ursa_work {
  ursa_op op;
  void *data; /* public */
  /* private */
  ursa_loop *loop;
  ursa_work_fn fn;
  ursa_work_cb cb;
  struct ursa__task task;
  ursa_post_req post; /* how the result comes back to the loop */
};

/* Queues fn to run on a pool thread; cb then runs on the loop's thread
 * (a post: ursa_post()'s wake-up).  The request must be zero-filled before
 * its first use and stays ursa's until cb; the loop is active (it runs,
 * and ursa_loop_close() refuses) until then.  Loop thread.  Returns 0,
 * -EINVAL (NULL, or a URSA_WORK_THREADS that is not a number from 1 to
 * 1024, named by ursa_error_detail()), -EBUSY (w is queued already), or
 * -EAGAIN / -ENOMEM when the pool has no thread and none can be started. */
URSA_EXPORT int ursa_work_queue(ursa_loop *loop, ursa_work *w,
                                ursa_work_fn fn, ursa_work_cb cb);

/* Cancels work that no thread has taken yet: fn never runs and cb gets
 * -ECANCELED.  Returns 0, -EBUSY when fn is running or has run (cb comes
 * with 0: a pool thread cannot be interrupted), -EALREADY when its cancel
 * is already on its way, -ENOENT when it is not queued.  ursa_cancel(loop,
 * &w->op) is the same.  Loop thread. */
URSA_EXPORT int ursa_work_cancel(ursa_work *w);

/* Sets the most threads the pool runs (1 to 1024), for every loop of the
 * process; it overrides URSA_WORK_THREADS.  Threads start as work needs
 * them; when the size shrinks, threads above it end once idle.  Any
 * thread.  Returns 0 or -EINVAL. */
URSA_EXPORT int ursa_work_pool_size(unsigned threads);

/* The pool's size now (as set, from the environment, or 4; 0 when
 * URSA_WORK_THREADS is bad, and work is refused), and in *running (may be
 * NULL) the threads it runs, busy or idle. */
URSA_EXPORT unsigned ursa_work_pool_threads(unsigned *running);

/* ---- timers ------------------------------------------------------------ */

typedef struct ursa_timer ursa_timer;
/* status: 0 when the time is up, -ECANCELED when stopped or cancelled. */
typedef void (*ursa_timer_cb)(ursa_timer *timer, int status);

/* A node of a heap of deadlines (the loop's timers; the epoll backend's
 * linked timeouts).  Private. */
struct ursa__hnode {
  struct ursa__hnode *child, *sibling, *prev;
  uint64_t due_ns; /* on the loop's clock */
  uint64_t seq;    /* insertion order: equal deadlines come out in it */
};

struct ursa_timer {
  ursa_op op;
  void *data; /* public */
  ursa_loop *loop; /* read-only */
  /* private: the loop keeps its timers in a heap of its own, and bounds
   * its wait by the nearest */
  ursa_timer_cb cb;
  uint64_t repeat_ms;
  struct ursa__hnode node;
};

/* Starts a timer that fires after timeout_ms and then, if repeat_ms > 0,
 * every repeat_ms until stopped (the callback runs once per expiry; the
 * timer stays active between).  Never early: timeout_ms counts from this
 * call.  Many timers are cheap: starting and stopping one costs O(log n)
 * in user space and no system call.  -EBUSY if the timer is already
 * active. */
URSA_EXPORT int ursa_timer_start(ursa_loop *loop, ursa_timer *timer,
                                 uint64_t timeout_ms, uint64_t repeat_ms,
                                 ursa_timer_cb cb);

/* 1 from ursa_timer_start() until the callback that ends it (a one-shot
 * expiry, or -ECANCELED) has run, else 0. */
URSA_EXPORT int ursa_timer_active(const ursa_timer *timer);

/* Stops a timer: its callback runs once more with -ECANCELED (a stop before
 * the expiry's callback always wins), after which the timer is inactive and
 * its memory free.  Same returns as ursa_cancel(). */
URSA_EXPORT int ursa_timer_stop(ursa_timer *timer);

/* ---- the end of a round -------------------------------------------------- */

typedef struct ursa_round ursa_round;
typedef void (*ursa_round_cb)(ursa_round *r);

struct ursa_round {
  void *data; /* public */
  /* private */
  ursa_loop *loop;
  ursa_round_cb cb;
  ursa_round *next, *prev;
  uint64_t gen;
};

/* Calls cb once at the end of every loop round, after that round's
 * callbacks (completions, timers, posts), until ursa_round_stop(): the
 * place to coalesce what the round's callbacks asked for (flush a batch
 * of writes, send one reply for several reads), as libuv's check
 * handles.  What cb submits goes out with the next round's wait.  A hook
 * started by a callback of this round runs at this round's end; one
 * started by another hook, from the next round on.  Hooks run in the
 * order started.  A hook does not keep the loop running (a loop with
 * nothing else active ends).  The request must be zero-filled before its
 * first use and stays ursa's until stopped.  Loop thread.  Returns 0,
 * -EINVAL (NULL) or -EBUSY (started already). */
URSA_EXPORT int ursa_round_start(ursa_loop *loop, ursa_round *r,
                                 ursa_round_cb cb);
/* Stops the hook (also from inside any hook's callback, its own
 * included): cb is not called again.  Returns 0, or -ENOENT when it was
 * not started. */
URSA_EXPORT int ursa_round_stop(ursa_round *r);

/* ---- streams: TCP and Unix stream sockets ------------------------------ */

typedef struct ursa_stream ursa_stream;
typedef struct ursa_listener ursa_listener;
typedef struct ursa_write_req ursa_write_req;

/* status: 0 when connected, or -ECONNREFUSED, -ETIMEDOUT, -ECANCELED, ... */
typedef void (*ursa_connect_cb)(ursa_stream *stream, int status);
/* nread > 0: nread bytes at buf (borrowed until the callback returns); on
 * a seqpacket stream, exactly one whole message.
 * nread < 0: URSA_EOF or an error; reading has then stopped.  -EMSGSIZE: a
 * seqpacket message was larger than a receive buffer (loop option
 * buf_size); it is never passed on cut short. */
typedef void (*ursa_read_cb)(ursa_stream *stream, ssize_t nread,
                             const void *buf);
/* status: 0 when every byte was sent, else the error; w->done says how many
 * bytes went out. */
typedef void (*ursa_write_cb)(ursa_write_req *w, int status);
typedef void (*ursa_shutdown_cb)(ursa_stream *stream, int status);
/* The write queue has drained to the write mark's low after reaching its
 * high (see ursa_stream_write_marks()). */
typedef void (*ursa_writable_cb)(ursa_stream *stream);
/* status 0: a connection is ready; accept it with ursa_accept() inside the
 * callback, or it is closed when the callback returns.  status < 0: accept
 * failed (-EMFILE, -ENFILE: out of descriptors; the listener waits
 * URSA_ACCEPT_BACKOFF_MS and tries again; other errors are reported and the
 * listener carries on, except -EBADF/-EINVAL which end it). */
typedef void (*ursa_connection_cb)(ursa_listener *listener, int status);

#define URSA_ACCEPT_BACKOFF_MS 20
/* Queued writes a stream hands to the kernel in one sendmsg by default,
 * and at most (IOV_MAX); a send also stops adding writes once it carries
 * URSA_SEND_BUDGET bytes.  256 drained 100-byte writes 2.9x faster than 8
 * (docs/measurements.md, The write queue). */
#define URSA_WRITE_BATCH 256
#define URSA_WRITE_BATCH_MAX 1024
#define URSA_SEND_BUDGET (256u << 10)

struct ursa_write_req {
  ursa_op op;
  void *data;  /* public */
  size_t done; /* read-only: bytes sent so far, across all its buffers */
  /* private */
  ursa_stream *stream;
  ursa_write_req *wnext;
  const struct iovec *iov; /* its buffers (&one for ursa_write()) */
  unsigned iovcnt;
  unsigned cur;   /* the first buffer not wholly sent */
  size_t cur_off; /* bytes of that buffer sent */
  size_t len;     /* bytes in all */
  ursa_write_cb cb;
  uint64_t deadline_ms;
  ursa_timespec ts; /* a linked timeout's time */
  struct iovec one;
  int file_fd;       /* a file write's file; -1: a write of buffers */
  uint8_t fstep;     /* what a file write's op in flight does */
  int8_t fpipe;      /* a spliced file write's pipe of the loop's; -1 */
  uint64_t file_off; /* the file's next byte to read or send */
  uint64_t file_cached; /* the end of the range last found cached */
  char *chunk;       /* a file write's buffer, while it reads (NULL) */
  uint32_t chunk_len, chunk_sent; /* bytes in the buffer or the pipe */
};

struct ursa__sendv;      /* a batched send's msghdr and iovecs */
struct ursa__connecting; /* a connect's op, address and timeout */
struct ursa__peer;       /* a direct stream's peer address */
struct ursa__readtimer;  /* a read timeout's timer and clock */

/* What an idle stream holds is kept small (the bench's memory case counts
 * it): state that only a batched send, a connect or a read timeout needs
 * is taken from the loop or the heap while it is needed. */
struct ursa_stream {
  union { /* the handle: data and loop are its fields, by name */
    ursa_handle handle;
    struct {
      void *data;      /* public */
      ursa_loop *loop; /* read-only */
    };
  };
  int fd; /* read-only: the socket; -1 when it is a direct descriptor
             (accepted on a loop with direct_files) */
  /* private */
  uint32_t flags;
  int32_t slot;    /* the direct descriptor's slot */
  int32_t write_error;
  ursa_op send_op; /* one send in flight, carrying up to batch writes */
  unsigned batch;
  int32_t zc_res;  /* a zero-copy send's result, kept until its notice */
  struct iovec iov1;          /* a send of one write */
  struct ursa__sendv *sendv;  /* a send of several, from the loop's pool */
  ursa_op recv_op;
  ursa_op shutdown_op;
  union { /* never both: connected streams are not direct descriptors */
    struct ursa__connecting *connecting; /* ursa_connect() to its callback */
    struct ursa__peer *direct_peer;      /* recorded at accept */
  };
  struct ursa__readtimer *read_timer; /* made by the first ursa_read_timeout() */
  ursa_read_cb read_cb;
  ursa_shutdown_cb shutdown_cb;
  ursa_write_req *wq_head;
  ursa_write_req *wq_tail;
  size_t wq_bytes;
  uint32_t high_water; /* reading pauses at this many queued bytes (0: off) */
  uint32_t low_water;  /* and resumes at this many */
  uint32_t write_high; /* not writable from this many queued bytes (0: off) */
  uint32_t write_low;  /* writable again, and writable_cb, at this many */
  ursa_writable_cb writable_cb;
};

/* Flags for ursa_listen() and ursa_connect(). */
#define URSA_LISTEN_REUSEPORT 1u /* SO_REUSEPORT: one listener per thread */
#define URSA_LISTEN_V6ONLY 2u    /* IPv6 only (default: dual-stack) */
#define URSA_SEQPACKET 4u        /* AF_UNIX SOCK_SEQPACKET: every read is one
                                    whole message, every write one message */
#define URSA_LISTEN_NODELAY 8u   /* TCP_NODELAY on the listener, which
                                    accepted sockets inherit */

struct ursa_listener {
  union { /* the handle: data and loop are its fields, by name */
    ursa_handle handle;
    struct {
      void *data;      /* public */
      ursa_loop *loop; /* read-only */
    };
  };
  int fd; /* read-only */
  /* private */
  uint32_t flags;
  ursa_op accept_op;
  ursa_timer backoff;
  int pending_fd; /* or the direct slot, when accepts are direct */
  ursa_connection_cb cb;
  ursa_sockfile file; /* the socket file it made, removed at close */
  struct sockaddr_storage peer; /* a direct accept's peer address */
  socklen_t peer_len;
  socklen_t local_len; /* direct: bytes of its own address in local, which
                          its streams keep; 0 when bound to any address */
  struct sockaddr_storage local;
};

/* Binds and listens on addr (TCP, or AF_UNIX stream, or with URSA_SEQPACKET
 * AF_UNIX seqpacket; port 0 picks one, see ursa_listener_addr()) and accepts
 * with multishot accept, armed again whenever the kernel ends it.  backlog
 * <= 0 means SOMAXCONN.  A Unix path that holds a socket nobody listens on
 * (left by a crash) is replaced; one that holds a live socket gives
 * -EADDRINUSE, and one that holds anything else -EEXIST (never removed).
 * Closing the listener removes the socket file it made.  flags:
 * URSA_LISTEN_REUSEPORT, URSA_LISTEN_V6ONLY, URSA_LISTEN_NODELAY,
 * URSA_SEQPACKET.  On a loop with direct_files, connections are accepted
 * into direct descriptors.  Returns 0, -EINVAL (NULL, bad address, bad
 * flags), or the error of socket/bind/listen. */
URSA_EXPORT int ursa_listen(ursa_loop *loop, ursa_listener *l,
                            const struct sockaddr *addr, socklen_t addrlen,
                            int backlog, unsigned flags,
                            ursa_connection_cb cb);

/* The address the listener is bound to (port 0 resolved). */
URSA_EXPORT int ursa_listener_addr(const ursa_listener *l,
                                   struct sockaddr_storage *addr,
                                   socklen_t *addrlen);

/* Takes the connection announced to the connection callback into client,
 * which becomes an open stream.  Only valid inside that callback with status
 * 0, once; -EINVAL otherwise.  On a loop with direct_files it keeps the
 * two addresses (40 bytes for IPv4, until close): -ENOMEM when there is
 * no memory for them, and the connection is refused. */
URSA_EXPORT int ursa_accept(ursa_listener *l, ursa_stream *client);

typedef struct ursa_handoff_req ursa_handoff_req;
typedef void (*ursa_handoff_cb)(ursa_handoff_req *req, int status);
struct ursa_handoff_req {
  ursa_post_req post; /* private */
  void *data;          /* public */
  ursa_stream *stream; /* public: set before the call */
  /* private */
  ursa_loop *target;
  ursa_handoff_cb cb;
  int fd;     /* the descriptor, or the accepting loop's direct slot */
  int slot;   /* the target's direct slot, once it is there */
  uint32_t flags;
  int parts;  /* MSG_RING: its two completions still to come */
  int err;    /* MSG_RING: why the move failed, or -ECANCELED */
  ursa_op send_op;   /* the MSG_RING on the accepting loop */
  ursa_op arrive_op; /* its completion on the target */
  struct ursa__peer *peer;
};
/* Hands the connection announced to the connection callback to another
 * loop (on another thread) instead of accepting it here: a hand-off.
 * req->stream must point to a zero-filled ursa_stream, which becomes an
 * open stream of target; cb then runs on target's thread with status 0,
 * and may start reading.  If target closes first, cb runs with
 * -ECANCELED inside its ursa_loop_close() (the connection is closed, the
 * stream never opened).  A plain descriptor travels through ursa_post(),
 * so target may be on either backend.  A direct descriptor (a listener on
 * a loop with direct_files) moves from this ring's table into target's by
 * IORING_OP_MSG_RING with IORING_MSG_SEND_FD, so target must be an
 * io_uring loop with direct_files of its own (-EOPNOTSUPP otherwise); the
 * stream keeps its addresses.  When that move fails (target's table full:
 * -ENFILE) cb gets the error on target's thread, the connection closed;
 * when target has begun closing by the time the move is known, cb gets
 * -ECANCELED on this loop's thread.  Only valid inside the connection
 * callback with status 0, once.  Returns 0, -EINVAL (no connection
 * waiting, NULL), -EBUSY (req still in flight), -ESHUTDOWN (target is
 * closing: the connection is refused, as if not taken), -EOPNOTSUPP, or
 * -ENOMEM. */
URSA_EXPORT int ursa_accept_handoff(ursa_listener *l, ursa_loop *target,
                                    ursa_handoff_req *req,
                                    ursa_handoff_cb cb);

/* Stops accepting, cancels what is in flight and closes the socket; cb runs
 * once at the end (it may free l).  -EALREADY when already closing. */
URSA_EXPORT int ursa_listener_close(ursa_listener *l,
                                    ursa_close_cb cb);

/* Makes an open stream of a descriptor the caller owns; the stream owns
 * fd from then on (its close closes it).  It takes:
 *   - a connected stream or seqpacket socket (one end of a socketpair, a
 *     library's connection): read by recv, written by send, as any stream;
 *   - a pipe, FIFO, terminal or character device: read by READ, 64 KiB
 *     at a time (multishot with URSA_FEAT_READ_MULTISHOT, opt-in) into
 *     receive buffers of its own kind (ursa_buf_keep() keeps them as any
 *     other), written
 *     by WRITE and WRITEV, with the stream's contract (ordered full
 *     writes, read callbacks, URSA_EOF when every writer has closed, read
 *     and write marks).  Such a stream has no socket options (TCP_NODELAY,
 *     addresses: -ENOTSOCK) and no zero copy; ursa_shutdown() closes its
 *     descriptor once the queue is out (a pipe has no half-close), so it
 *     is refused while the stream reads.  A write to a pipe whose reader
 *     has gone fails with -EPIPE, and the kernel also raises SIGPIPE,
 *     which ends a process that neither ignores nor blocks it (sockets
 *     send with MSG_NOSIGNAL; pipes have no such flag).  The descriptor
 *     is made non-blocking (a terminal's write would otherwise stall the
 *     loop); O_NONBLOCK is a property of the open file, shared with every
 *     process that has it: give a terminal or an inherited stdin with
 *     that in mind.
 * Returns 0, -EINVAL (NULL, fd < 0, or a descriptor of another kind: a
 * datagram socket, a listening one, a regular file (use ursa_fs_read()
 * and ursa_write_file()), a directory; named), or -EBADF. */
URSA_EXPORT int ursa_stream_open(ursa_loop *loop, ursa_stream *s, int fd);

/* Opens a socket and connects it to addr (flags: 0, or URSA_SEQPACKET for
 * an AF_UNIX seqpacket socket).  timeout_ms > 0 bounds the
 * connect (a linked timeout; the callback then gets -ETIMEDOUT).  The
 * address is copied (into a block of about 200 bytes held until the
 * callback: -ENOMEM when there is none).  When it returns an error nothing was opened and
 * there is nothing to close; after 0 the stream must be closed in the end,
 * whatever the callback's status. */
URSA_EXPORT int ursa_connect(ursa_loop *loop, ursa_stream *s,
                             const struct sockaddr *addr, socklen_t addrlen,
                             unsigned flags, uint32_t timeout_ms,
                             ursa_connect_cb cb);

/* The stream's peer address (the other end) and local address (this end)
 * into *addr, *addrlen (sizeof(*addr) is enough for every family).  A
 * stream on an ordinary descriptor asks the kernel (getpeername(2),
 * getsockname(2)).  A direct-descriptor stream has no descriptor to ask
 * with: its peer address was recorded by its accept, and its local address
 * is the listener's.  Under a listener bound to any address (:7000,
 * 0.0.0.0) only the socket knows which address the peer reached: the call
 * then installs the slot as a plain descriptor for a moment
 * (IORING_OP_FIXED_FD_INSTALL, Linux 6.8), asks it and closes it, waiting
 * for that one operation inside the call (on the loop's thread; other
 * completions that come meanwhile are delivered by the loop as usual);
 * -EOPNOTSUPP on a kernel without it.  Returns 0, -ENOTCONN before a
 * connect has completed, or -EINVAL. */
URSA_EXPORT int ursa_stream_peer_addr(const ursa_stream *s,
                                      struct sockaddr_storage *addr,
                                      socklen_t *addrlen);
URSA_EXPORT int ursa_stream_local_addr(const ursa_stream *s,
                                       struct sockaddr_storage *addr,
                                       socklen_t *addrlen);

/* Sets TCP_NODELAY (ignored on Unix sockets).  -EOPNOTSUPP on a direct
 * descriptor (see direct_files): use URSA_LISTEN_NODELAY there. */
URSA_EXPORT int ursa_stream_nodelay(ursa_stream *s, int on);

/* Starts receiving: multishot recv into the loop's buffer ring.  cb runs for
 * every chunk, in order, until URSA_EOF, an error, ursa_read_stop() or
 * close.  -EALREADY if reading, -EINVAL if closing or after EOF. */
URSA_EXPORT int ursa_read_start(ursa_stream *s, ursa_read_cb cb);

/* Keeps the buffer a read (or datagram receive) callback was given out of
 * the ring after the callback returns, so that it can be written without a
 * copy; buf is the pointer the callback got.  Only inside that callback.
 * The bytes are the application's until ursa_buf_release(), which must come
 * before the loop is closed.  Returns 0, -EALREADY if already kept,
 * -ENOBUFS when the loop's buf_keep_max buffers are kept already, or half
 * of the large_bufs ring for a large or coalesced datagram (copy the bytes
 * instead: the caps keep the rings from running dry), or -EINVAL
 * outside a callback or for another pointer. */
URSA_EXPORT int ursa_buf_keep(ursa_loop *loop, const void *buf);

/* Gives a kept buffer back to the ring (any pointer into it will do).
 * Returns 0, or -EINVAL for a pointer that is not a kept buffer. */
URSA_EXPORT int ursa_buf_release(ursa_loop *loop, const void *buf);

/* Stops receiving.  Data the kernel had already placed in buffers before the
 * stop took effect is still delivered to cb (ursa never drops received
 * bytes); after that cb is not called until ursa_read_start() again. */
URSA_EXPORT int ursa_read_stop(ursa_stream *s);

/* While reading, ends the read with -ETIMEDOUT when no byte has arrived for
 * ms milliseconds (0 turns it off).  The first call with ms > 0 gives the
 * stream its timer (about 90 bytes, until close; -ENOMEM when there is
 * none).  While reading is paused by the high
 * watermark, a send that completes counts as activity too, so a peer that
 * neither sends nor takes its replies times out as well (one send carries
 * up to write_batch writes, so a peer must take that much per timeout).  Checked on
 * the loop's clock, so it may fire up to one timer round late.  It bounds
 * silence, not rate: a peer that sends a byte now and then stays; see
 * docs/limits.md for a rate check built on ursa_timer. */
URSA_EXPORT int ursa_read_timeout(ursa_stream *s, uint32_t ms);

/* Queues len bytes of buf for sending.  Writes on one stream go out in the
 * order queued, each whole: short sends continue where they stopped.
 * Writes that queue up behind a send in flight leave together in one
 * sendmsg (up to the loop's write_batch and URSA_SEND_BUDGET bytes).
 * timeout_ms > 0 bounds this write from when it reaches the socket (-ETIMEDOUT);
 * such a write is sent alone, since its linked timeout bounds one send and
 * would time out any write sharing it.  Draining a queue costs the same per
 * write however long it is.
 * After a write fails, every later queued write fails with -ECANCELED and
 * new writes return the first error.  Returns 0, -EINVAL (len 0, NULL), -EPIPE
 * after ursa_shutdown(), -EBADF when closing, or the earlier write error. */
URSA_EXPORT int ursa_write(ursa_write_req *w, ursa_stream *s, const void *buf,
                           size_t len, uint32_t timeout_ms, ursa_write_cb cb);

/* ursa_write() of several buffers as one write: one request, one callback,
 * the bytes of iov[0..iovcnt) in order, whole (w->done counts across them).
 * The array and the buffers must stay valid and unchanged until the
 * callback.  iovcnt from 1 to URSA_WRITE_BATCH_MAX; empty buffers are
 * skipped, but the total must be above 0.  On a seqpacket stream the
 * buffers are one message, and iovcnt may not exceed the loop's
 * write_batch.  Returns as ursa_write(), and -EINVAL for a NULL array, a
 * bad count, a NULL buffer of non-zero length or a total that overflows. */
URSA_EXPORT int ursa_writev(ursa_write_req *w, ursa_stream *s,
                            const struct iovec *iov, unsigned iovcnt,
                            uint32_t timeout_ms, ursa_write_cb cb);

/* Queues len bytes of the file fd, from offset off, for sending, in order
 * with the stream's other writes: a write request as ursa_write()'s, its
 * callback once every byte went out.  Where the bytes are in the page
 * cache (cachestat(2), Linux 6.5) and the stream has a descriptor of its
 * own (not a direct one), they go from the cache to the socket without a
 * copy: sendfile(2) on the loop's thread, paced by the socket's
 * writability, at most 1 MiB before the loop's other work.  Otherwise
 * they are read through the ring (the work pool on epoll) into a 128 KiB
 * buffer the request holds while it is at the head, and sent from there;
 * so a stream holds no more than that for a file, whatever its size and
 * however slowly the peer reads.  With URSA_FEAT_FILE_SPLICE enabled
 * (opt-in) the bytes go instead by IORING_OP_SPLICE from the file into a
 * pipe of the loop's and from the pipe into the socket; the loop keeps at
 * most 16 such pipes of 256 KiB, one per file write at the head of its
 * stream (not on a direct stream), and a write that finds none free goes
 * as above.  The file stays the caller's, open and at least off + len
 * bytes long, until the callback: a file that ends sooner fails the write
 * with -ENODATA after the bytes it had (w->done says how many), and the
 * stream is torn, as after any write that failed part-way: nothing queued
 * after it goes out.  No timeout.  Returns 0,
 * -EINVAL (NULL, fd < 0, off < 0, len 0), -EBUSY, -EPIPE after
 * ursa_shutdown(), or the stream's write error. */
URSA_EXPORT int ursa_write_file(ursa_write_req *w, ursa_stream *s, int fd,
                                int64_t off, size_t len, ursa_write_cb cb);

/* Cancels a queued or sending write, as ursa_cancel(): its callback runs
 * with -ECANCELED (or its own result if it finished first); a write the
 * kernel had started on that put bytes out tears the stream.  Returns 0,
 * -ENOENT (not active) or -EALREADY (result in, callback to come). */
URSA_EXPORT int ursa_write_cancel(ursa_write_req *w);

/* 1 from ursa_write() until the write's callback has run, else 0. */
URSA_EXPORT int ursa_write_active(const ursa_write_req *w);

/* Bytes queued and not yet sent on the stream. */
URSA_EXPORT size_t ursa_write_queue_size(const ursa_stream *s);

/* Bounds what a peer that does not read can make the stream hold: while
 * reading, once high bytes wait to be sent, receiving pauses (the kernel's
 * buffers then fill and TCP flow control stops the peer); when the queue
 * drains to low, receiving resumes.  The read callback is not told.  Data
 * the kernel had already put in ring buffers when the pause took effect is
 * still delivered, so the queue can pass high by at most the ring's size
 * (buf_count x buf_size).  high 0 turns it off (the default); low must be
 * below high, and high below 4 GiB. */
URSA_EXPORT int ursa_stream_read_marks(ursa_stream *s, size_t high,
                                       size_t low);

/* A mark on the write side, for a writer that feeds many peers (Netty's
 * writability): once high bytes or more wait to be sent, the stream is not
 * writable (ursa_stream_writable() says 0; writes are still taken); when
 * the queue has drained to low or below it is writable again and cb runs,
 * from the loop, after the callbacks of the writes that drained it.  A
 * fan-out server stops feeding a peer that is not writable and resumes in
 * cb, so one slow reader holds at most about high bytes.  high 0 turns it
 * off (the default); low must be below high, and high below 4 GiB; cb may
 * be NULL (then only ursa_stream_writable() tells). */
URSA_EXPORT int ursa_stream_write_marks(ursa_stream *s, size_t high,
                                        size_t low, ursa_writable_cb cb);

/* 0 from when the write queue reaches the write mark's high until it has
 * drained to its low, else 1 (always 1 without a write mark). */
URSA_EXPORT int ursa_stream_writable(const ursa_stream *s);

/* Shuts down the sending side once every queued write is out. */
URSA_EXPORT int ursa_shutdown(ursa_stream *s, ursa_shutdown_cb cb);

/* Closes a stream: cancels the read, the connect, the shutdown and every
 * write (their callbacks run with -ECANCELED, the read callback is not called
 * again), closes the socket, then calls cb exactly once.  -EALREADY when
 * already closing. */
URSA_EXPORT int ursa_stream_close(ursa_stream *s, ursa_close_cb cb);

/* ---- datagrams: UDP, Unix datagram, raw and ICMP sockets ------------- */

typedef struct ursa_dgram ursa_dgram;
typedef struct ursa_send_req ursa_send_req;
typedef struct ursa_dgram_info ursa_dgram_info;
typedef struct ursa_sendmsgs_req ursa_sendmsgs_req;

/* Set in the receive callback's flags: the datagram was larger than the
 * room in a receive buffer (buf_size less 144 bytes of header and address,
 * and 192 more when ursa_dgram_recvmsg_start() asks for control data) and
 * n bytes of it arrived.  A cut datagram is never passed on as whole. */
#define URSA_DGRAM_TRUNC 1u

/* n >= 0: one datagram of n bytes at buf (borrowed until the callback
 * returns; 0 is a valid, empty datagram), sent from `from` (fromlen bytes;
 * 0 when the kernel gives no address).  n < 0: an error; receiving has then
 * stopped. */
typedef void (*ursa_recv_cb)(ursa_dgram *d, ssize_t n, const void *buf,
                             const struct sockaddr *from, socklen_t fromlen,
                             unsigned flags);
/* status: 0 when the datagram went out, else the error. */
typedef void (*ursa_send_cb)(ursa_send_req *req, int status);

struct ursa_send_req {
  ursa_op op;
  void *data; /* public */
  /* private */
  ursa_dgram *dgram;
  ursa_send_req *snext, *sprev; /* the socket's sends in flight */
  ursa_send_cb cb;
  struct msghdr msg;
  struct iovec iov;
  struct sockaddr_storage to;
};

struct ursa_dgram {
  union { /* the handle: data and loop are its fields, by name */
    ursa_handle handle;
    struct {
      void *data;      /* public */
      ursa_loop *loop; /* read-only */
    };
  };
  int fd; /* read-only */
  /* private */
  uint32_t flags;
  ursa_op recv_op;
  ursa_recv_cb recv_cb;
  ursa_send_req *sends;
  struct msghdr msg; /* what receives are asked for */
  struct iovec iov;
  struct sockaddr_storage from;
  ursa_sockfile file;
  struct ursa_sendmsgs_req *bsends; /* ursa_dgram_sendmsgs() in flight */
  void (*recvmsg_cb)(ursa_dgram *, ssize_t, const void *,
                     const ursa_dgram_info *);
  unsigned recv_what; /* URSA_RECV_* asked for */
  unsigned opts_set;  /* socket options set so far (URSA_RECV_* bits) */
  int family;         /* AF_INET, AF_INET6, AF_UNIX, or 0 (unknown) */
  uint8_t udp;        /* a UDP socket: GSO and GRO apply */
  uint8_t armed_ring; /* the buffer ring the receive was armed on */
  union { /* single-shot receives' control data */
    size_t align; /* as a struct cmsghdr */
    char control[192];
  };
};

/* Flags for ursa_dgram_bind(). */
#define URSA_DGRAM_REUSEPORT 1u /* SO_REUSEPORT: one socket per thread */
#define URSA_DGRAM_V6ONLY 2u    /* IPv6 only (default: dual-stack) */

/* Opens a datagram socket of addr's family and binds it: UDP for IPv4 and
 * IPv6 (port 0 picks one), SOCK_DGRAM for AF_UNIX (a path, with the same
 * stale-file rules as ursa_listen(), an abstract name, or just the family
 * for an automatic abstract name).  flags: URSA_DGRAM_REUSEPORT,
 * URSA_DGRAM_V6ONLY.  Returns 0, -EINVAL, or the error of socket/bind. */
URSA_EXPORT int ursa_dgram_bind(ursa_loop *loop, ursa_dgram *d,
                                const struct sockaddr *addr,
                                socklen_t addrlen, unsigned flags);

/* Makes a datagram handle of a socket the caller made (a raw or ICMP
 * socket, say); the handle owns fd from then on. */
URSA_EXPORT int ursa_dgram_open(ursa_loop *loop, ursa_dgram *d, int fd);

/* Sets the default peer (connect(2), done at once: no operation).  Sends
 * with no address then go there, and only its datagrams are received. */
URSA_EXPORT int ursa_dgram_connect(ursa_dgram *d, const struct sockaddr *addr,
                                   socklen_t addrlen);

/* The address the socket is bound to. */
URSA_EXPORT int ursa_dgram_addr(const ursa_dgram *d,
                                struct sockaddr_storage *addr,
                                socklen_t *addrlen);

/* Starts receiving: multishot recvmsg into the loop's buffer ring; cb runs
 * once per datagram until an error, ursa_dgram_recv_stop() or close. */
URSA_EXPORT int ursa_dgram_recv_start(ursa_dgram *d, ursa_recv_cb cb);

/* Stops receiving; datagrams already in buffers are still delivered. */
URSA_EXPORT int ursa_dgram_recv_stop(ursa_dgram *d);

/* Sends one datagram of len bytes (0 is allowed) to `to`, or to the
 * connected peer when to is NULL.  The address is copied; buf must stay
 * valid until cb.  Datagrams sent at once may leave in any order.  Returns
 * 0, -EINVAL, -EBUSY (req active) or -EBADF when closing. */
URSA_EXPORT int ursa_dgram_send(ursa_send_req *req, ursa_dgram *d,
                                const void *buf, size_t len,
                                const struct sockaddr *to, socklen_t tolen,
                                ursa_send_cb cb);

/* Cancels a send, as ursa_cancel(); the same returns. */
URSA_EXPORT int ursa_dgram_send_cancel(ursa_send_req *req);

/* 1 from ursa_dgram_send() until its callback has run, else 0. */
URSA_EXPORT int ursa_dgram_send_active(const ursa_send_req *req);

/* Closes: cancels the receive and every send (their callbacks get
 * -ECANCELED; the receive callback is not called again), closes the
 * socket, removes a socket file it made, then calls cb once. */
URSA_EXPORT int ursa_dgram_close(ursa_dgram *d, ursa_close_cb cb);

/* ---- datagrams with their metadata: GSO, GRO, PKTINFO, TOS/ECN ------- *
 *
 * What a QUIC stack needs of UDP: many datagrams per system call or SQE
 * (segmentation offload out, coalesced receive in), the local address each
 * datagram came to and the source each reply leaves from, the TOS byte
 * (ECN) both ways, and receive timestamps.  Everything here works the same
 * on both backends; what the kernel or the socket lacks is refused by name
 * (the ursa_last_error() text says which). */

/* What ursa_dgram_recvmsg_start() asks for (bits). */
#define URSA_RECV_GRO 0x01u /* coalesced receive (UDP_GRO): one callback
                               carries up to 64 datagrams of the same
                               sender, each info->segment bytes but the
                               last, which may be shorter; implies LARGE */
#define URSA_RECV_LARGE 0x02u /* receive into the loop's 64 KiB buffers
                                 (large_bufs): datagrams up to 65,507 bytes
                                 arrive whole */
#define URSA_RECV_PKTINFO 0x04u /* info->local and info->ifindex: the
                                   address each datagram was sent to (on a
                                   wildcard socket, which of the host's) */
#define URSA_RECV_TOS 0x08u /* info->tos: the IPv4 TOS / IPv6 traffic class
                               byte; ECN is its low two bits */
#define URSA_RECV_TIMESTAMP 0x10u /* info->timestamp_ns: when the kernel
                                     took it in (CLOCK_REALTIME) */

/* What came with a receive.  Valid only during the callback. */
struct ursa_dgram_info {
  const struct sockaddr *from; /* the sender; NULL when the kernel gives
                                  none */
  socklen_t fromlen;
  socklen_t locallen;          /* PKTINFO: the size of local, else 0 */
  struct sockaddr_in6 local;   /* PKTINFO: the address it came to, an
                                  AF_INET or AF_INET6 address with port 0
                                  (the port is the socket's); cast it to
                                  struct sockaddr */
  unsigned ifindex;            /* PKTINFO: the interface it came in on */
  unsigned segment;            /* the size of each datagram in buf (GRO;
                                  the last may be shorter); without GRO, or
                                  when the kernel did not coalesce: n */
  int tos;                     /* TOS: the byte, or -1 when not given */
  int64_t timestamp_ns;        /* TIMESTAMP: realtime ns, or 0 */
  unsigned flags;              /* URSA_DGRAM_TRUNC */
};

/* n >= 0: n bytes at buf (borrowed until the callback returns, or kept
 * with ursa_buf_keep()): one datagram, or with GRO several of
 * info->segment bytes each.  n < 0: an error; receiving has then
 * stopped (info is NULL). */
typedef void (*ursa_recvmsg_cb)(ursa_dgram *d, ssize_t n, const void *buf,
                                const ursa_dgram_info *info);

/* Starts receiving with what (URSA_RECV_* bits; 0 is ursa_dgram_recv_start
 * with info): sets the socket options each bit needs, then receives as
 * ursa_dgram_recv_start() does.  -EINVAL for an unknown bit, GRO on a
 * socket that is not UDP or a kernel without UDP_GRO, PKTINFO or TOS on
 * a socket that is not IPv4 or IPv6; -EALREADY when receiving.  Stop with
 * ursa_dgram_recv_stop(); the options stay set. */
URSA_EXPORT int ursa_dgram_recvmsg_start(ursa_dgram *d, unsigned what,
                                         ursa_recvmsg_cb cb);

/* Splits a receive into its datagrams: the i-th datagram of a receive of
 * n bytes cut at info->segment, its length in *len (0 when i is past the
 * last).  For code that would rather not do the arithmetic. */
URSA_EXPORT const void *ursa_dgram_segment(const void *buf, ssize_t n,
                                           const ursa_dgram_info *info,
                                           unsigned i, size_t *len);

/* One message of a send request. */
typedef struct ursa_dgram_msg {
  const void *buf;             /* the payload, len bytes (0 is allowed) */
  size_t len;
  const struct sockaddr *to;   /* the destination, or NULL: the connected
                                  peer */
  socklen_t tolen;
  socklen_t srclen;
  const struct sockaddr *src;  /* the source address (IP_PKTINFO /
                                  IPV6_PKTINFO: the reply to a datagram
                                  leaves from the address info->local
                                  said it came to), or NULL: the kernel's
                                  choice.  Its port is ignored */
  unsigned segment;            /* with URSA_MSG_GSO: len is cut into
                                  datagrams of this many bytes (the last may
                                  be shorter), at most
                                  URSA_DGRAM_MAX_SEGMENTS of them */
  unsigned flags;              /* URSA_MSG_GSO, URSA_MSG_TOS */
  int tos;                     /* with URSA_MSG_TOS: the TOS / traffic
                                  class byte for this send (ECN: its low
                                  two bits), 0 to 255 */
} ursa_dgram_msg;

#define URSA_MSG_GSO 0x01u /* segment is set: UDP segmentation offload */
#define URSA_MSG_TOS 0x02u /* tos is set */
#define URSA_DGRAM_MAX_SEGMENTS 64
#define URSA_DGRAM_BATCH 16 /* messages one request carries */

/* status: 0 when every message went out whole, else the error of the
 * first (in order) that did not; ursa_sendmsgs_result() gives each. */
typedef void (*ursa_sendmsgs_cb)(ursa_sendmsgs_req *req, int status);

/* One message's part of a request (private). */
typedef struct ursa__dmsg {
  ursa_op op; /* first */
  struct ursa_sendmsgs_req *req;
  struct msghdr msg;
  struct iovec iov;
  union {
    size_t align; /* as a struct cmsghdr */
    char control[96];
  };
} ursa__dmsg;

struct ursa_sendmsgs_req {
  void *data; /* public */
  /* private */
  ursa_dgram *dgram;
  ursa_sendmsgs_req *bnext, *bprev; /* the socket's requests in flight */
  ursa_sendmsgs_cb cb;
  unsigned n, left;
  int res[URSA_DGRAM_BATCH];
  ursa__dmsg m[URSA_DGRAM_BATCH];
};

/* Sends n messages (1 to URSA_DGRAM_BATCH) as one request: on io_uring one
 * SQE each, submitted together; on epoll one sendmmsg for the lot.  The
 * messages are read at the call (their headers are built then); every
 * buffer and address they point at must stay valid until cb.  They may
 * leave in any order.  Returns 0, -EBUSY (req active), -EBADF when
 * closing, or -EINVAL naming the bad message and field: a segment of 0,
 * above len, or more than URSA_DGRAM_MAX_SEGMENTS segments; GSO, TOS or a
 * source on a socket that is not UDP; a source of another family; tos over
 * 255.  Nothing is sent when it fails. */
URSA_EXPORT int ursa_dgram_sendmsgs(ursa_sendmsgs_req *req, ursa_dgram *d,
                                    const ursa_dgram_msg *msgs, unsigned n,
                                    ursa_sendmsgs_cb cb);

/* Message i's result once cb runs: bytes sent (len), or a negative errno. */
URSA_EXPORT int ursa_sendmsgs_result(const ursa_sendmsgs_req *req,
                                     unsigned i);

/* Cancels the request's messages not yet sent; cb runs once with the
 * first error.  0, or -ENOENT when not active. */
URSA_EXPORT int ursa_sendmsgs_cancel(ursa_sendmsgs_req *req);

/* 1 from ursa_dgram_sendmsgs() until its callback has run, else 0. */
URSA_EXPORT int ursa_sendmsgs_active(const ursa_sendmsgs_req *req);

/* ---- name resolution without blocking the loop ------------------------ */

typedef struct ursa_resolve_req ursa_resolve_req;
struct ursa__job;

/* status 0: n answers (1 or more) at addrs, IPv4 and IPv6 in getaddrinfo's
 * order, each with the port; valid during the callback.  status < 0:
 * -ENOENT the name does not exist (or has no address of that family);
 * -EAGAIN a temporary failure (a DNS server that did not answer: try
 * again later); -ECANCELED; -ENOMEM; -EIO any other resolver failure
 * (ursa_error_detail() has getaddrinfo's words). */
typedef void (*ursa_resolve_cb)(ursa_resolve_req *req, int status,
                                const ursa_addr *addrs, size_t n);

struct ursa_resolve_req {
  ursa_op op;
  void *data; /* public */
  /* private */
  ursa_loop *loop;
  struct ursa__job *job;
  ursa_resolve_cb cb;
};

/* Resolves host (a name or a numeric address) and service (a port number,
 * or a name from /etc/services such as "http"; NULL for port 0), for
 * streams (SOCK_STREAM) of family AF_UNSPEC (both), AF_INET or AF_INET6.
 * getaddrinfo(3) (the system's resolver: /etc/hosts, nsswitch, DNS) runs
 * on the work pool (see ursa_work_queue(): 4 threads unless sized
 * otherwise; more lookups wait their turn), so the loop never waits; cb
 * runs from the loop.  The request must be zero-filled before first use.
 * Returns 0, -EINVAL (NULL, an empty or overlong name, a bad family),
 * -EBUSY (req active), -ENOMEM / -EAGAIN (no thread could be started), or
 * the work pool's -EINVAL for a bad URSA_WORK_THREADS. */
URSA_EXPORT int ursa_resolve(ursa_loop *loop, ursa_resolve_req *req,
                             const char *host, const char *service,
                             int family, ursa_resolve_cb cb);

/* Cancels a resolve: its callback runs from the loop with -ECANCELED, and
 * the loop may end or close at once.  A lookup no thread has taken yet
 * never runs; a running one cannot be stopped: its thread finishes it and
 * drops the answer.  Same returns as ursa_cancel(). */
URSA_EXPORT int ursa_resolve_cancel(ursa_resolve_req *req);

/* ---- files: operations on descriptors and paths ---------------------- */

/* File requests, one operation each, on plain descriptors (numbers from
 * ursa_fs_open() or anywhere else).  On io_uring they go through the
 * loop's ring like its sockets (no SQPOLL, no thread of ursa's: what the
 * kernel cannot do at once it hands to its own workers); on the epoll
 * backend each runs as a system call on the work pool (see
 * ursa_work_queue()).  Either way the loop never blocks on a file.
 *
 * The request must be zero-filled before its first use and is ursa's
 * until its callback; the buffers, iovecs and the statx answer named in
 * the call must stay valid until then too.  Paths are copied: they need
 * not outlive the call (a copy costs a malloc; the kernel, or a pool
 * thread, reads a path only when the operation starts).  Results: >= 0 as the
 * system call's (a descriptor, bytes, 0), or a negative errno: -ENOENT,
 * -EACCES, -EISDIR, -EBADF, -EINVAL and the rest, as open(2), pread(2),
 * statx(2) and the others give them.  Loop thread.  The calls return 0,
 * -EINVAL for a bad argument (named by ursa_error_detail()) or -EBUSY
 * when the request is active. */

typedef struct ursa_fs_req ursa_fs_req;
typedef void (*ursa_fs_cb)(ursa_fs_req *req, int result);
struct statx; /* <sys/stat.h> with _GNU_SOURCE, glibc 2.28 */

struct ursa_fs_req {
  ursa_op op;
  void *data;      /* public */
  ursa_loop *loop; /* read-only: the loop of the request under way */
  /* private */
  ursa_fs_cb cb;
  uint8_t type;
  uint8_t counted;   /* a read counted in the loop's reads out */
  uint8_t fixed;     /* a fixed read or write: counted in the set's busy */
  uint16_t index;    /* its registered buffer */
  int fd;            /* the descriptor, or the directory for a path */
  int fd2;           /* rename: the new name's directory */
  uint32_t len;      /* bytes, iovecs, statx mask, mkdir's mode */
  int flags;         /* O_*, AT_*, fsync's datasync, RWF_* */
  int64_t off;
  const void *ptr;   /* buffer, iovecs, path */
  const char *path2; /* rename: the new name */
  char *names;       /* the copies of the paths, freed before the callback */
  void *out;         /* statx's answer */
  struct {           /* openat2's struct open_how, read at submission */
    uint64_t flags, mode, resolve;
  } how;
};

/* Opens path (relative to dirfd, or AT_FDCWD) as openat2(2): flags are
 * open(2)'s (O_CLOEXEC is always added), mode applies with O_CREAT or
 * O_TMPFILE, resolve is RESOLVE_* (RESOLVE_BENEATH keeps the name inside
 * dirfd, RESOLVE_NO_SYMLINKS refuses every link; 0 for none).  The result
 * is the new descriptor.  Where openat2 is missing (the epoll backend
 * before Linux 5.6, or a seccomp filter that refuses it) a request without
 * resolve rules runs as openat(2); one with rules gets -ENOSYS.  A FIFO opened for reading waits for a writer
 * unless flags has O_NONBLOCK: open what you did not create with it. */
URSA_EXPORT int ursa_fs_open(ursa_loop *loop, ursa_fs_req *req, int dirfd,
                             const char *path, int flags, unsigned mode,
                             uint64_t resolve, ursa_fs_cb cb);

/* Reads up to len bytes at off (-1: at the descriptor's position, which
 * then moves), as pread(2): the result is the bytes read (0 at the end of
 * the file; fewer than len is not an error).  len above 2 GiB - 4 KiB
 * reads that much, as the kernel caps every read. */
URSA_EXPORT int ursa_fs_read(ursa_loop *loop, ursa_fs_req *req, int fd,
                             void *buf, size_t len, int64_t off,
                             ursa_fs_cb cb);
/* Writes len bytes at off (-1: at the position, or the end with O_APPEND)
 * as pwrite(2); a short write is a result, not an error. */
URSA_EXPORT int ursa_fs_write(ursa_loop *loop, ursa_fs_req *req, int fd,
                              const void *buf, size_t len, int64_t off,
                              ursa_fs_cb cb);
/* preadv2(2) and pwritev2(2): iovcnt (1 to IOV_MAX) buffers, flags RWF_*
 * (0 for none). */
URSA_EXPORT int ursa_fs_readv(ursa_loop *loop, ursa_fs_req *req, int fd,
                              const struct iovec *iov, unsigned iovcnt,
                              int64_t off, int flags, ursa_fs_cb cb);
URSA_EXPORT int ursa_fs_writev(ursa_loop *loop, ursa_fs_req *req, int fd,
                               const struct iovec *iov, unsigned iovcnt,
                               int64_t off, int flags, ursa_fs_cb cb);
/* Registered buffers: n buffers (iov[i], 1 to 1024 of them, each 1 byte
 * to 1 GiB) given to the loop once for ursa_fs_read_fixed() and
 * ursa_fs_write_fixed().  On io_uring the kernel pins their pages at
 * registration (io_uring_register_buffers), so a fixed read or write
 * skips mapping the buffer on every call; pinned memory counts against
 * RLIMIT_MEMLOCK (-ENOMEM past it) and each buffer must be anonymous or
 * file-backed memory the kernel can pin (-EFAULT otherwise).  On the epoll
 * backend they are only recorded, and fixed requests run as the plain
 * ones.  The memory stays the caller's and must stay valid until
 * ursa_fs_buffers_unregister() or the loop's close.  One set per loop:
 * -EBUSY while one is registered.  Returns 0, -EINVAL for a bad argument
 * (named by ursa_error_detail()) or the kernel's -errno.  Opt-in: reads
 * and writes of unregistered memory need nothing of this (the A/B in
 * docs/measurements.md decides whether it helps). */
URSA_EXPORT int ursa_fs_buffers_register(ursa_loop *loop,
                                         const struct iovec *iov, unsigned n);
/* Drops the set: 0, -ENOENT when none is registered, -EBUSY while a fixed
 * request is under way (its callback has not run). */
URSA_EXPORT int ursa_fs_buffers_unregister(ursa_loop *loop);
/* ursa_fs_read() and ursa_fs_write() into and from registered buffer
 * index: buf to buf + len must lie inside it (-EINVAL, named, if not; or
 * if no set is registered). */
URSA_EXPORT int ursa_fs_read_fixed(ursa_loop *loop, ursa_fs_req *req, int fd,
                                   unsigned index, void *buf, size_t len,
                                   int64_t off, ursa_fs_cb cb);
URSA_EXPORT int ursa_fs_write_fixed(ursa_loop *loop, ursa_fs_req *req,
                                    int fd, unsigned index, const void *buf,
                                    size_t len, int64_t off, ursa_fs_cb cb);
/* fsync(2), or fdatasync(2) when datasync is non-zero. */
URSA_EXPORT int ursa_fs_fsync(ursa_loop *loop, ursa_fs_req *req, int fd,
                              int datasync, ursa_fs_cb cb);
/* statx(2) into *out: path relative to dirfd (flags AT_EMPTY_PATH with ""
 * for dirfd itself, AT_SYMLINK_NOFOLLOW, ...), mask STATX_* (STATX_BASIC_
 * STATS for what stat(2) gives).  An open descriptor's own attributes with
 * AT_STATX_DONT_SYNC (cached ones: no network file system's server asked)
 * are taken at once on the loop's thread (URSA_FEAT_FILE_INLINE): they
 * never wait. */
URSA_EXPORT int ursa_fs_statx(ursa_loop *loop, ursa_fs_req *req, int dirfd,
                              const char *path, int flags, unsigned mask,
                              struct statx *out, ursa_fs_cb cb);
/* close(2).  The number is free for reuse once the result is in: no other
 * request may use it from the call on. */
URSA_EXPORT int ursa_fs_close(ursa_loop *loop, ursa_fs_req *req, int fd,
                              ursa_fs_cb cb);
/* unlinkat(2): a file, or with flags AT_REMOVEDIR an empty directory. */
URSA_EXPORT int ursa_fs_unlink(ursa_loop *loop, ursa_fs_req *req, int dirfd,
                               const char *path, int flags, ursa_fs_cb cb);
/* renameat2(2); flags RENAME_NOREPLACE, RENAME_EXCHANGE or 0. */
URSA_EXPORT int ursa_fs_rename(ursa_loop *loop, ursa_fs_req *req,
                               int olddirfd, const char *oldpath,
                               int newdirfd, const char *newpath, int flags,
                               ursa_fs_cb cb);
/* mkdirat(2). */
URSA_EXPORT int ursa_fs_mkdir(ursa_loop *loop, ursa_fs_req *req, int dirfd,
                              const char *path, unsigned mode, ursa_fs_cb cb);

/* Cancels a file request: its callback runs with -ECANCELED if it had not
 * started; one the kernel (or a pool thread) is already running finishes
 * and calls back with its own result (a read of a FIFO or a socket may
 * end with -EINTR instead).  Same returns as ursa_cancel(). */
URSA_EXPORT int ursa_fs_cancel(ursa_fs_req *req);

/* ---- any descriptor: readiness, and signals ----------------------------- */

typedef struct ursa_poll ursa_poll;
typedef struct ursa_signal ursa_signal;

#define URSA_READABLE 1u
#define URSA_WRITABLE 2u

/* status 0: some of the events watched for became ready (an error or a
 * hang-up on the descriptor shows as every event watched for); status < 0:
 * watching ended on that error. */
typedef void (*ursa_poll_cb)(ursa_poll *p, int status, unsigned events);
/* signum arrived (once per delivery; the kernel merges repeats of a
 * standard signal that come before the loop reads them). */
typedef void (*ursa_signal_cb)(ursa_signal *sig, int signum);

struct ursa_poll {
  union { /* the handle: data and loop are its fields, by name */
    ursa_handle handle;
    struct {
      void *data;      /* public */
      ursa_loop *loop; /* read-only */
    };
  };
  int fd; /* read-only: the descriptor watched (the caller's) */
  /* private */
  uint32_t flags;
  unsigned events;
  ursa_op poll_op;
  ursa_poll_cb cb;
};

/* Makes a watcher of fd, any descriptor poll(2) takes (an eventfd,
 * signalfd, timerfd, pipe, or a library's socket).  The descriptor stays
 * the caller's: ursa never reads, writes or changes it, closing the
 * watcher does not close it, and it must stay open until the close
 * callback.  Returns 0 or -EINVAL. */
URSA_EXPORT int ursa_poll_open(ursa_loop *loop, ursa_poll *p, int fd);

/* Watches for events (URSA_READABLE, URSA_WRITABLE) with a multishot poll:
 * cb runs each time the descriptor becomes ready (an edge, as EPOLLET:
 * readiness it already had when watching started counts once), until
 * ursa_poll_stop() or close.  Consume what is ready (read or write until
 * EAGAIN): readiness that is left over is not reported again until
 * something new arrives.  -EALREADY if watching, -EINVAL for no events. */
URSA_EXPORT int ursa_poll_start(ursa_poll *p, unsigned events,
                                ursa_poll_cb cb);

/* Stops watching; cb is not called again until ursa_poll_start(). */
URSA_EXPORT int ursa_poll_stop(ursa_poll *p);

/* Stops and calls cb once, after which p may be freed (fd is not closed).
 * -EALREADY when already closing. */
URSA_EXPORT int ursa_poll_close(ursa_poll *p, ursa_close_cb cb);

struct ursa_signal {
  union { /* the handle: data and loop are its fields, by name */
    ursa_handle handle;
    struct {
      void *data;      /* public */
      ursa_loop *loop; /* read-only */
    };
    ursa_poll poll; /* private: a watcher of its own signalfd */
  };
  int signum; /* read-only */
  /* private */
  ursa_signal_cb cb;
  int was_blocked;
};

/* Delivers signum as callbacks on the loop (SIGINT, SIGTERM, SIGHUP, ...,
 * without a self-pipe): the signal is blocked in the calling thread with
 * pthread_sigmask() and read from a signalfd that the loop watches.  Block
 * it in every thread of the process (before starting others, which inherit
 * the mask), or another thread may take it the default way.  The blocked
 * mask is inherited by children the thread spawns (fork, posix_spawn,
 * exec): a child that should see the signal must unblock it (for
 * posix_spawn, POSIX_SPAWN_SETSIGMASK).  One watcher per signal and loop.  Returns 0, -EINVAL (a bad signum, SIGKILL, SIGSTOP,
 * NULL), or the error of signalfd(2). */
URSA_EXPORT int ursa_signal_start(ursa_loop *loop, ursa_signal *sig,
                                  int signum, ursa_signal_cb cb);

/* Stops: closes the signalfd, unblocks the signal if ursa_signal_start()
 * blocked it (a signal pending then takes its default action, or its
 * handler), and calls cb once.  -EALREADY when already closing. */
URSA_EXPORT int ursa_signal_close(ursa_signal *sig, ursa_close_cb cb);

/* ---- child processes ----------------------------------------------------- */

typedef struct ursa_process ursa_process;

/* The child has ended: exit_code is its exit status (0-255) and
 * term_signal 0, or it was killed by term_signal (exit_code 0).  A
 * negative exit_code is an error and the status is unknown: -ECHILD when
 * something else in the process reaped the child first (a SIGCHLD handler
 * calling waitpid(-1), or SIGCHLD set to SIG_IGN, which has the kernel
 * reap every child at once). */
typedef void (*ursa_exit_cb)(ursa_process *p, int exit_code, int term_signal);

/* What one of the child's descriptors is (ursa_spawn_options.stdio). */
typedef enum ursa_stdio_kind {
  URSA_STDIO_INHERIT = 0, /* the caller's descriptor of the same number */
  URSA_STDIO_IGNORE,      /* /dev/null, open for reading and writing */
  URSA_STDIO_FD,          /* the caller's descriptor fd (it stays the
                             caller's: the child gets a copy) */
  URSA_STDIO_PIPE,        /* a new pipe: the child reads it as descriptor
                             0, writes it as any other; the caller's end
                             becomes the open stream *stream */
  URSA_STDIO_PIPE_IN,     /* a new pipe the child reads, at any number */
} ursa_stdio_kind;

typedef struct ursa_stdio {
  ursa_stdio_kind kind;
  int fd;              /* URSA_STDIO_FD */
  ursa_stream *stream; /* URSA_STDIO_PIPE, _PIPE_IN: the caller's memory,
                          opened by ursa_spawn() (closed with ursa_close()
                          as any stream; it outlives the child as long as
                          the caller likes) */
  /* URSA_STDIO_PIPE, _PIPE_IN: the pipe's capacity in bytes (F_SETPIPE_SZ;
   * the kernel rounds it up to a power of two pages), and ursa_spawn()
   * fails with the kernel's refusal (EPERM: above
   * /proc/sys/fs/pipe-max-size, or the user's pipe pages used up).
   * 0: URSA_SPAWN_PIPE_SIZE where the kernel allows it, else its default
   * (64 KiB).  A larger pipe lets the writer run ahead and the reader take
   * more per wake-up: fewer wake-ups per byte (docs/measurements.md). */
  unsigned pipe_size;
} ursa_stdio;

#define URSA_SPAWN_PIPE_SIZE (256u * 1024u)

/* Flags for ursa_spawn_options.flags. */
#define URSA_SPAWN_SETSID 1u  /* the child leads a new session (setsid) */
#define URSA_SPAWN_SETPGID 2u /* the child leads a new process group */

#define URSA_SPAWN_MAX_STDIO 64

typedef struct ursa_spawn_options {
  /* The program: a path, or a name without '/' looked up in the caller's
   * PATH.  Required. */
  const char *file;
  /* Its arguments, NULL-terminated, argv[0] first; NULL: {file, NULL}. */
  char *const *argv;
  /* Its environment, NULL-terminated "NAME=value"; NULL: the caller's. */
  char *const *env;
  /* Its working directory; NULL: the caller's. */
  const char *cwd;
  /* stdio[i] becomes the child's descriptor i, for i < nstdio (at most
   * URSA_SPAWN_MAX_STDIO); 0, 1 and 2 beyond nstdio are inherited.  No
   * other descriptor reaches the child: every one above the last named
   * is closed in it, whatever its close-on-exec flag. */
  const ursa_stdio *stdio;
  unsigned nstdio;
  unsigned flags; /* URSA_SPAWN_* */
} ursa_spawn_options;

struct ursa_process {
  union { /* the handle: data and loop are its fields, by name */
    ursa_handle handle;
    struct {
      void *data;      /* public */
      ursa_loop *loop; /* read-only */
    };
  };
  int pid; /* read-only: the child's process id */
  /* private */
  int pidfd;
  uint32_t flags;
  ursa_exit_cb exit_cb;
  ursa_op wait_op;
  uint64_t info[16]; /* the waitid siginfo_t the kernel fills */
};

/* Starts a child process running o->file and opens p on the loop.  The
 * child is made without copying the caller's memory (posix_spawn: vfork's
 * way, so a large parent spawns as fast as a small one), with every
 * signal unblocked and every disposition at its default (so a signal that
 * ursa_signal_start() blocks in the caller, or a SIGPIPE it ignores, acts
 * normally in the child), and only the descriptors o->stdio names.  Its
 * exit is watched through a pidfd (IORING_OP_WAITID, URSA_FEAT_WAITID; or
 * a poll of the pidfd), so ursa never waits for, reaps or takes a signal
 * of a child it did not make, and leaves SIGCHLD and its handler alone.
 * cb runs once, from the loop, when the child ends (the handle stays open
 * until ursa_close()); an open process keeps the loop running until then.
 * Returns 0, or, with nothing started or opened: -EINVAL (NULL, no file,
 * nstdio over URSA_SPAWN_MAX_STDIO, a bad kind or flag, a pipe without a
 * stream; named), -ENOENT (the program or cwd is not there, named),
 * -EACCES, -ENOEXEC and the other errors of execve(2) and chdir(2) as the
 * child met them, -EMFILE, -ENOMEM, or -ENOSYS when the kernel has no
 * pidfds (Linux 5.4). */
URSA_EXPORT int ursa_spawn(ursa_loop *loop, ursa_process *p,
                           const ursa_spawn_options *o, ursa_exit_cb cb);

/* Sends signum to the child through its pidfd (never to a process that
 * took its number after it ended).  Returns 0, -ESRCH once its exit has
 * been called back (before, a child that has just ended takes the signal
 * as a zombie: 0),
 * -EINVAL (NULL, a closed handle, a bad signum), or -EPERM. */
URSA_EXPORT int ursa_process_kill(ursa_process *p, int signum);

/* Closes the handle (ursa_close() of it), before or after the child's
 * exit.  The child is not signalled.  Closed after the exit callback, it
 * has been reaped; closed before, its exit callback never runs, and the
 * loop reaps it when it has ended: at the next ursa_spawn() or at
 * ursa_loop_close(), whichever comes first after its end (one still
 * running at ursa_loop_close() is left to run, and is reaped by init once
 * the caller's process ends).  -EALREADY when already closing. */
URSA_EXPORT int ursa_process_close(ursa_process *p, ursa_close_cb cb);

#ifdef __cplusplus
}
#endif

#endif /* URSA_URSA_H */
