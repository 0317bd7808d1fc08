/* probe.c - ring set-up with fallbacks, and the feature report. */
#include "core.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#define NAME(N, bit, name, kernel, opt_in, epoll) [bit] = name,
#define KERNEL(N, bit, name, kernel, opt_in, epoll) [bit] = kernel,
#define EPOLL(N, bit, name, kernel, opt_in, epoll) \
  | ((epoll) ? (uint32_t)URSA_FEAT_##N : 0u)
static const char *const feature_names[URSA_FEAT_COUNT] = {
    URSA_FEATURES(NAME)};
static const char *const feature_kernel[URSA_FEAT_COUNT] = {
    URSA_FEATURES(KERNEL)};
/* What the epoll backend gives the layers in the same way. */
#define EPOLL_GIVES (0u URSA_FEATURES(EPOLL))

const char *ursa_feature_name(uint32_t bit) {
  for (unsigned i = 0; i < URSA_FEAT_COUNT; i++)
    if (bit == 1u << i) return feature_names[i];
  return NULL;
}

size_t ursa_feature_list(uint32_t mask, char *buf, size_t len) {
  size_t n = 0;
  unsigned left = (unsigned)__builtin_popcount(mask & ((1u << URSA_FEAT_COUNT) - 1));
  for (unsigned i = 0; i < URSA_FEAT_COUNT; i++) {
    if (!(mask & (1u << i))) continue;
    left--;
    const char *sep = n == 0 ? "" : left == 0 ? " and " : ", ";
    size_t room = n < len ? len - n : 0;
    int w = snprintf(room ? buf + n : NULL, room, "%s%s", sep,
                     feature_names[i]);
    if (w > 0) n += (size_t)w;
  }
  if (len && n == 0) buf[0] = 0;
  return n;
}

/* Set-up flags in the order they are dropped when the kernel refuses. */
static const struct {
  uint32_t feat;
  unsigned flag;
} setup_flags[] = {
    {URSA_FEAT_DEFER_TASKRUN, IORING_SETUP_DEFER_TASKRUN},
    {URSA_FEAT_SINGLE_ISSUER, IORING_SETUP_SINGLE_ISSUER},
    {URSA_FEAT_COOP_TASKRUN, IORING_SETUP_COOP_TASKRUN},
    {URSA_FEAT_SUBMIT_ALL, IORING_SETUP_SUBMIT_ALL},
};
#define NSETUP (sizeof(setup_flags) / sizeof(setup_flags[0]))

static unsigned to_ring_flags(uint32_t feats) {
  unsigned flags = 0;
  for (unsigned i = 0; i < NSETUP; i++)
    if (feats & setup_flags[i].feat) flags |= setup_flags[i].flag;
  return flags;
}

/* Sets up ring with as many of the wanted set-up features as the kernel
 * takes.  Returns 0 with *got filled, or the first error that is not a
 * refused flag. */
static int setup_ring(struct io_uring *ring, unsigned sq, unsigned cq,
                      uint32_t want, unsigned extra, uint32_t *got,
                      uint32_t *kfeat) {
  /* DEFER_TASKRUN is only valid together with SINGLE_ISSUER. */
  if (!(want & URSA_FEAT_SINGLE_ISSUER)) want &= ~URSA_FEAT_DEFER_TASKRUN;
  for (unsigned drop = 0;; drop++) {
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = to_ring_flags(want) | IORING_SETUP_CQSIZE | extra;
    p.cq_entries = cq;
    int r = io_uring_queue_init_params(sq, ring, &p);
    if (r == 0) {
      *got = want;
      *kfeat = 0;
      if (p.features & IORING_FEAT_FAST_POLL) *kfeat |= URSA_FEAT_FAST_POLL;
      if (p.features & IORING_FEAT_NODROP) *kfeat |= URSA_FEAT_NODROP;
      if (p.features & IORING_FEAT_CQE_SKIP) *kfeat |= URSA_FEAT_CQE_SKIP;
      if (p.features & IORING_FEAT_RECVSEND_BUNDLE)
        *kfeat |= URSA_FEAT_RECV_BUNDLE;
      if (p.features & IORING_FEAT_MIN_TIMEOUT) *kfeat |= URSA_FEAT_MIN_WAIT;
      return 0;
    }
    if (r != -EINVAL || drop >= NSETUP) return r;
    /* Drop the newest flag still asked for and try again. */
    unsigned i = 0;
    while (i < NSETUP && !(want & setup_flags[i].feat)) i++;
    if (i == NSETUP) return r;
    want &= ~setup_flags[i].feat;
    if (!(want & URSA_FEAT_SINGLE_ISSUER)) want &= ~URSA_FEAT_DEFER_TASKRUN;
  }
}

/* Registers a one-page region as the home of ring's wait arguments; the
 * ring must still be disabled (the kernel refuses otherwise: a waiter
 * could be reading the region).  Returns the page, or NULL when the
 * kernel refuses (before 6.13: -EINVAL for an unknown opcode). */
static struct ursa__reg_wait *reg_wait_region(struct io_uring *ring) {
  long page = sysconf(_SC_PAGESIZE);
  void *mem = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return NULL;
  struct ursa__region_desc rd = {0};
  rd.user_addr = (uint64_t)(uintptr_t)mem;
  rd.size = (uint64_t)page;
  rd.flags = URSA__IORING_MEM_REGION_TYPE_USER;
  struct ursa__mem_region_reg mr = {0};
  mr.region_uptr = (uint64_t)(uintptr_t)&rd;
  mr.flags = URSA__IORING_MEM_REGION_REG_WAIT_ARG;
  long r = syscall(__NR_io_uring_register, ring->ring_fd,
                   URSA__IORING_REGISTER_MEM_REGION, &mr, 1);
  if (r < 0) {
    munmap(mem, (size_t)page);
    return NULL;
  }
  return mem;
}

void ursa__reg_wait_free(ursa_loop *loop) {
  if (loop->wait_region)
    munmap(loop->wait_region, (size_t)sysconf(_SC_PAGESIZE));
  loop->wait_region = NULL;
}

/* Opcode-level features, inferred from opcodes of the same kernel release
 * since multishot has no opcode of its own. */
static uint32_t probe_ops(struct io_uring *ring, int *missing,
                          bool *send_addr) {
  uint32_t f = 0;
  *missing = -1;
  struct io_uring_probe *p = io_uring_get_probe_ring(ring);
  if (!p) return 0;
  /* A send with a destination came in 6.1, with SENDMSG_ZC. */
  if (send_addr)
    *send_addr = io_uring_opcode_supported(p, IORING_OP_SENDMSG_ZC);
  static const int needed[] = {
      IORING_OP_ACCEPT,  IORING_OP_CONNECT,      IORING_OP_RECV,
      IORING_OP_SEND,    IORING_OP_TIMEOUT,      IORING_OP_LINK_TIMEOUT,
      IORING_OP_CLOSE,   IORING_OP_ASYNC_CANCEL, IORING_OP_SHUTDOWN,
      /* the files layer's, all older than the 5.19 the ring needs */
      IORING_OP_OPENAT2, IORING_OP_STATX,        IORING_OP_READ,
      IORING_OP_WRITE,   IORING_OP_READV,        IORING_OP_WRITEV,
      IORING_OP_FSYNC,   IORING_OP_UNLINKAT,     IORING_OP_RENAMEAT,
      IORING_OP_MKDIRAT,
  };
  for (unsigned i = 0; i < sizeof(needed) / sizeof(needed[0]); i++)
    if (!io_uring_opcode_supported(p, needed[i])) *missing = needed[i];
  if (io_uring_opcode_supported(p, IORING_OP_SOCKET))
    f |= URSA_FEAT_MULTISHOT_ACCEPT | URSA_FEAT_DIRECT_FILES;
  if (io_uring_opcode_supported(p, IORING_OP_SEND_ZC))
    f |= URSA_FEAT_MULTISHOT_RECV | URSA_FEAT_SEND_ZC;
  if (io_uring_opcode_supported(p, IORING_OP_MSG_RING))
    f |= URSA_FEAT_MSG_RING;
  if (io_uring_opcode_supported(p, URSA__IORING_OP_WAITID))
    f |= URSA_FEAT_WAITID;
  if (io_uring_opcode_supported(p, URSA__IORING_OP_READ_MULTISHOT))
    f |= URSA_FEAT_READ_MULTISHOT;
  if (io_uring_opcode_supported(p, IORING_OP_SPLICE))
    f |= URSA_FEAT_FILE_SPLICE;
  f |= URSA_FEAT_FILE_INLINE; /* a system call's, older than the ring */
  io_uring_free_probe(p);
  return f;
}

int ursa__ring_setup(ursa_loop *loop, const ursa_loop_options *o) {
  uint32_t want = (URSA_FEAT_SUBMIT_ALL | URSA_FEAT_COOP_TASKRUN |
                   URSA_FEAT_SINGLE_ISSUER | URSA_FEAT_DEFER_TASKRUN) &
                  ~o->disable;
  uint32_t got = 0, kfeat = 0;
  /* A wait region can only be registered before the ring is enabled. */
  bool reg_wait = o->enable & ~o->disable & URSA_FEAT_REG_WAIT;
  int r = setup_ring(&loop->ring, o->sq_entries, o->cq_entries, want,
                     reg_wait ? IORING_SETUP_R_DISABLED : 0, &got, &kfeat);
  if (r < 0) return r;
  if (reg_wait) {
    loop->wait_region = reg_wait_region(&loop->ring);
    /* (Debian's liburing 2.3 declares io_uring_enable_rings, without
     * exporting it.) */
    r = syscall(__NR_io_uring_register, loop->ring.ring_fd,
                IORING_REGISTER_ENABLE_RINGS, NULL, 0) < 0 ? -errno : 0;
    if (r < 0) {
      io_uring_queue_exit(&loop->ring);
      ursa__reg_wait_free(loop);
      return r;
    }
  }
  loop->disabled = o->disable;
  /* Fast poll and no-drop apply by themselves, and minimum waits are the
   * batch policy's to use; CQE skipping is opt-in per SQE and ursa does
   * not ask for it; buffers by parts are taken up when their ring is
   * registered. */
  loop->used = got | (kfeat & (URSA_FEAT_FAST_POLL | URSA_FEAT_NODROP)) |
               (kfeat & URSA_FEAT_MIN_WAIT & ~o->disable) |
               (kfeat & URSA_FEAT_OPT_IN & o->enable & ~o->disable);

  int missing;
  uint32_t ops = probe_ops(&loop->ring, &missing, &loop->send_addr);
  if (missing >= 0) {
    io_uring_queue_exit(&loop->ring);
    ursa__reg_wait_free(loop);
    return -EOPNOTSUPP;
  }
  /* Only bounded waits read the region: with minimum waits (batches). */
  if (loop->wait_region && (loop->used & URSA_FEAT_MIN_WAIT))
    loop->used |= URSA_FEAT_REG_WAIT;
  else
    ursa__reg_wait_free(loop);
  /* Direct descriptors are used once their table is registered. */
  loop->used |= ops & ~o->disable & ~(URSA_FEAT_SEND_ZC |
                                      URSA_FEAT_DIRECT_FILES |
                                      URSA_FEAT_OPT_IN);
  loop->used |= ops & URSA_FEAT_OPT_IN & o->enable & ~o->disable;
  /* Zero-copy sends only when a threshold asks for them. */
  if (o->zc_threshold && !(o->disable & URSA_FEAT_SEND_ZC))
    loop->used |= ops & URSA_FEAT_SEND_ZC;

  if ((o->enable & ~o->disable & URSA_FEAT_SYNC_MSG_RING) &&
      (ops & URSA_FEAT_MSG_RING) &&
      ursa__sync_msg_ring(NULL) == -EINVAL) /* refused the message, not -1 */
    loop->used |= URSA_FEAT_SYNC_MSG_RING;
  if (!(o->disable & URSA_FEAT_REG_RING_FD) &&
      io_uring_register_ring_fd(&loop->ring) == 1)
    loop->used |= URSA_FEAT_REG_RING_FD;
  return 0;
}

int ursa__sync_msg_ring(const struct io_uring_sqe *sqe) {
  long r = syscall(__NR_io_uring_register, -1,
                   URSA__IORING_REGISTER_SEND_MSG_RING, sqe, 1);
  return r < 0 ? -errno : (int)r;
}

int ursa_probe(ursa_features *out) {
  memset(out, 0, sizeof(*out));
  struct utsname u;
  if (uname(&u) == 0)
    snprintf(out->kernel_release, sizeof(out->kernel_release), "%.63s",
             u.release);
  struct io_uring ring;
  uint32_t got = 0, kfeat = 0;
  int r = setup_ring(&ring, 8, 16, URSA_FEAT_SUBMIT_ALL |
                     URSA_FEAT_COOP_TASKRUN | URSA_FEAT_SINGLE_ISSUER |
                     URSA_FEAT_DEFER_TASKRUN, 0, &got, &kfeat);
  if (r < 0) {
    out->setup_error = r;
    return r;
  }
  int missing;
  out->kernel = got | kfeat | probe_ops(&ring, &missing, NULL);
  if (io_uring_register_ring_fd(&ring) == 1)
    out->kernel |= URSA_FEAT_REG_RING_FD;
  if ((out->kernel & URSA_FEAT_MSG_RING) && ursa__sync_msg_ring(NULL) == -EINVAL)
    out->kernel |= URSA_FEAT_SYNC_MSG_RING;
  /* A one-entry buffer ring tells whether registration is known. */
  static char page[4096] __attribute__((aligned(4096)));
  struct io_uring_buf_reg reg = {0};
  reg.ring_addr = (uint64_t)(uintptr_t)page;
  reg.ring_entries = 1;
  reg.bgid = 0;
  if (io_uring_register_buf_ring(&ring, &reg, 0) == 0) {
    out->kernel |= URSA_FEAT_BUF_RING;
    io_uring_unregister_buf_ring(&ring, 0);
    reg.pad = URSA__PBUF_RING_INC; /* refused before 6.12 */
    if (io_uring_register_buf_ring(&ring, &reg, 0) == 0) {
      out->kernel |= URSA_FEAT_BUF_INC;
      io_uring_unregister_buf_ring(&ring, 0);
    }
  }
  io_uring_queue_exit(&ring);
  /* A wait region wants a ring of its own, still disabled. */
  if (setup_ring(&ring, 8, 16, 0, IORING_SETUP_R_DISABLED, &got, &kfeat) ==
      0) {
    struct ursa__reg_wait *w = reg_wait_region(&ring);
    io_uring_queue_exit(&ring);
    if (w) {
      out->kernel |= URSA_FEAT_REG_WAIT;
      munmap(w, (size_t)sysconf(_SC_PAGESIZE));
    }
  }
  return 0;
}

/* What the kernel offers does not change while a process runs: probed
 * once, on the first call. */
static ursa_features probed;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static void probe_kernel(void) { ursa_probe(&probed); }

void ursa_loop_features(const ursa_loop *loop, ursa_features *out) {
  pthread_once(&probe_once, probe_kernel);
  *out = probed;
  out->used = loop->used;
  out->disabled = loop->disabled;
  out->backend = loop->backend;
  snprintf(out->backend_why, sizeof(out->backend_why), "%s",
           loop->backend_why);
}

static int read_sysctl(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  int v = -1;
  if (fscanf(f, "%d", &v) != 1) v = -1;
  fclose(f);
  return v;
}

int ursa__setup_cause(int err, char *buf, size_t len) {
  int dis = read_sysctl("/proc/sys/kernel/io_uring_disabled");
  const char *cause;
  switch (err) {
    case -EPERM:
      cause = dis == 2   ? "kernel.io_uring_disabled=2"
              : dis == 1 ? "kernel.io_uring_disabled=1 and this process is "
                           "not in kernel.io_uring_group"
                         : "refused, most likely by a seccomp filter";
      break;
    case -ENOSYS:
      cause = "no io_uring in this kernel, or a seccomp filter answering "
              "ENOSYS";
      break;
    case -ENOMEM:
      cause = "not enough memory for the ring (RLIMIT_MEMLOCK before 5.12)";
      break;
    case -EOPNOTSUPP:
      cause = "the kernel lacks provided buffer rings (Linux 5.19)";
      break;
    default:
      cause = ursa_strerror(err);
  }
  return snprintf(buf, len, "io_uring set-up failed with %s: %s",
                  ursa_err_name(err), cause);
}

int ursa_explain_setup_error(int err, char *buf, size_t len) {
  int dis = read_sysctl("/proc/sys/kernel/io_uring_disabled");
  switch (err) {
    case -EPERM:
      if (dis == 2)
        return snprintf(buf, len,
                        "io_uring is switched off on this machine "
                        "(kernel.io_uring_disabled=2); set it to 0 with "
                        "'sysctl -w kernel.io_uring_disabled=0', or run on "
                        "ursa's epoll backend (URSA_BACKEND_AUTO picks it)");
      if (dis == 1)
        return snprintf(buf, len,
                        "io_uring is limited to root and the group in "
                        "kernel.io_uring_group (kernel.io_uring_disabled=1); "
                        "run as a member of that group, set the sysctl to 0, "
                        "or run on ursa's epoll backend (URSA_BACKEND_AUTO "
                        "picks it)");
      return snprintf(buf, len,
                      "io_uring_setup was refused with EPERM, most likely "
                      "by a seccomp filter (container runtimes' default "
                      "profiles block io_uring); allow io_uring_setup, "
                      "io_uring_enter and io_uring_register in the profile, "
                      "or run on ursa's epoll backend (URSA_BACKEND_AUTO "
                      "picks it)");
    case -ENOSYS:
      return snprintf(buf, len,
                      "io_uring_setup does not exist here (a kernel built "
                      "without CONFIG_IO_URING, older than 5.1, or a "
                      "seccomp filter answering ENOSYS); use a kernel with "
                      "io_uring or ursa's epoll backend (URSA_BACKEND_AUTO "
                      "picks it)");
    case -ENOMEM:
      return snprintf(buf, len,
                      "not enough memory for the ring (kernels before 5.12 "
                      "charge it to RLIMIT_MEMLOCK); raise 'ulimit -l' or "
                      "ask for a smaller ring");
    case -EOPNOTSUPP:
      return snprintf(buf, len,
                      "the kernel lacks io_uring operations ursa needs "
                      "(provided buffer rings and socket operations: Linux "
                      "5.19 or newer)");
    case -EINVAL:
      return snprintf(buf, len, "invalid loop options: %s",
                      ursa_error_detail());
    default:
      return snprintf(buf, len, "io_uring set-up failed: %s (%s)",
                      ursa_strerror(err), ursa_err_name(err));
  }
}

/* Appends to a buffer like snprintf, counting what did not fit. */
typedef struct {
  char *buf;
  size_t len;
  size_t n;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#include <stdarg.h>
static void sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t room = b->n < b->len ? b->len - b->n : 0;
  int w = vsnprintf(room ? b->buf + b->n : NULL, room, fmt, ap);
  va_end(ap);
  if (w > 0) b->n += (size_t)w;
}

static const char *why_not(const ursa_features *f, uint32_t bit) {
  if (f->backend == URSA_BACKEND_EPOLL) {
    if (f->used & bit) return "given by the epoll backend";
    if (f->disabled & bit) return "disabled by option";
    return (bit & EPOLL_GIVES) ? "not used" : "io_uring only; backend is epoll";
  }
  if (f->used & bit) return "";
  if (f->disabled & bit) return "disabled by option";
  /* A ring that could not be set up answered nothing about its features. */
  if (f->setup_error && !(f->kernel & bit))
    return "not probed: io_uring could not be set up";
  if (!(f->kernel & bit)) return "kernel lacks it";
  if (bit == URSA_FEAT_CQE_SKIP) return "not used by ursa yet";
  if (bit == URSA_FEAT_SEND_ZC && f->used)
    return "not asked for (zc_threshold 0)";
  if (bit == URSA_FEAT_DIRECT_FILES && f->used)
    return "not asked for (direct_files 0)";
  if ((bit & URSA_FEAT_OPT_IN) && f->used)
    return "not asked for (enable option)";
  return f->used ? "not used" : "no loop";
}

static const char *backend_name(ursa_backend b) {
  return b == URSA_BACKEND_EPOLL   ? "epoll"
         : b == URSA_BACKEND_URING ? "io_uring"
                                   : "null";
}

int ursa_features_format(const ursa_features *f, int json, char *buf,
                         size_t len) {
  sbuf b = {buf, len, 0};
  if (len) buf[0] = '\0';
  char why[512] = "";
  if (f->setup_error) ursa_explain_setup_error(f->setup_error, why, sizeof(why));
  if (json) {
    sb_printf(&b, "{\"kernel_release\":\"%s\",\"io_uring\":%s,",
              f->kernel_release, f->setup_error ? "false" : "true");
    sb_printf(&b, "\"backend\":%s%s%s,\"backend_why\":\"%s\",",
              f->backend ? "\"" : "", backend_name(f->backend),
              f->backend ? "\"" : "", f->backend_why);
    if (f->setup_error)
      sb_printf(&b, "\"setup_error\":\"%s\",\"explain\":\"%s\",",
                ursa_err_name(f->setup_error), why);
    else
      sb_printf(&b, "\"setup_error\":null,");
    sb_printf(&b, "\"features\":{");
    for (unsigned i = 0; i < URSA_FEAT_COUNT; i++) {
      uint32_t bit = 1u << i;
      sb_printf(&b,
                "%s\"%s\":{\"since\":\"%s\",\"kernel\":%s,\"used\":%s,"
                "\"why_not\":\"%s\"}",
                i ? "," : "", feature_names[i], feature_kernel[i],
                (f->kernel & bit) ? "true" : "false",
                (f->used & bit) ? "true" : "false", why_not(f, bit));
    }
    sb_printf(&b, "}}");
  } else {
    sb_printf(&b, "kernel %s: io_uring %s\n", f->kernel_release,
              f->setup_error ? "unavailable" : "available");
    if (f->setup_error) sb_printf(&b, "  %s\n", why);
    if (f->backend)
      sb_printf(&b, "backend: %s (%s)\n", backend_name(f->backend),
                f->backend_why);
    sb_printf(&b, "  %-17s %-6s %-6s %-4s %s\n", "feature", "since", "kernel",
              "used", "why not");
    for (unsigned i = 0; i < URSA_FEAT_COUNT; i++) {
      uint32_t bit = 1u << i;
      sb_printf(&b, "  %-17s %-6s %-6s %-4s %s\n", feature_names[i],
                feature_kernel[i], (f->kernel & bit) ? "yes" : "no",
                (f->used & bit) ? "yes" : "no", why_not(f, bit));
    }
  }
  return (int)b.n;
}
