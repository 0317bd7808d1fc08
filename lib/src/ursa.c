/* ursa.c - the top of the library, the one file that sees every layer:
 * making and freeing a loop, which sets up every layer's part of it. */
#include "files.h"
#include "process.h"
#include "sock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_ENTRIES 32768u

static int check_options(const ursa_loop_options *in, ursa_loop_options *o) {
  memset(o, 0, sizeof(*o));
  if (in) *o = *in;
  if (!o->sq_entries) o->sq_entries = 256;
  if (!o->cq_entries) o->cq_entries = 4 * o->sq_entries;
  if (!o->buf_count) o->buf_count = 256;
  if (!o->buf_size) o->buf_size = 16384;
  if (o->sq_entries > MAX_ENTRIES)
    return ursa__invalid("ursa_loop_new: sq_entries %u is over %u",
                         o->sq_entries, MAX_ENTRIES);
  if (o->cq_entries < o->sq_entries || o->cq_entries > 4 * MAX_ENTRIES)
    return ursa__invalid(
        "ursa_loop_new: cq_entries %u must be from sq_entries (%u) to %u",
        o->cq_entries, o->sq_entries, 4 * MAX_ENTRIES);
  if (o->buf_count > MAX_ENTRIES || (o->buf_count & (o->buf_count - 1)))
    return ursa__invalid(
        "ursa_loop_new: buf_count %u is not a power of two up to %u",
        o->buf_count, MAX_ENTRIES);
  if (o->buf_size > (1u << 24))
    return ursa__invalid("ursa_loop_new: buf_size %u is over 16 MiB",
                         o->buf_size);
  if (o->disable & ~((1u << URSA_FEAT_COUNT) - 1))
    return ursa__invalid("ursa_loop_new: disable 0x%x has unknown bits",
                         o->disable);
  if (!o->write_batch) o->write_batch = URSA_WRITE_BATCH;
  if (o->write_batch > URSA_WRITE_BATCH_MAX)
    return ursa__invalid("ursa_loop_new: write_batch %u is over %d",
                         o->write_batch, URSA_WRITE_BATCH_MAX);
  if (!o->buf_keep_max) o->buf_keep_max = o->buf_count / 2;
  if (o->buf_keep_max > o->buf_count)
    return ursa__invalid("ursa_loop_new: buf_keep_max %u is over buf_count "
                         "%u", o->buf_keep_max, o->buf_count);
  if (o->enable & ~(uint32_t)URSA_FEAT_OPT_IN) {
    char opt_in[128];
    ursa_feature_list(URSA_FEAT_OPT_IN, opt_in, sizeof(opt_in));
    return ursa__invalid("ursa_loop_new: enable 0x%x names features that "
                         "are not opt-in (only %s are)", o->enable, opt_in);
  }
  if (!o->batch_wait_us) o->batch_wait_us = 200;
  if (o->batch_wait_us > 10000)
    return ursa__invalid("ursa_loop_new: batch_wait_us %u is over 10000",
                         o->batch_wait_us);
  if ((unsigned)o->batch_policy > URSA_BATCH_NEVER)
    return ursa__invalid("ursa_loop_new: batch_policy %d is unknown (want "
                         "URSA_BATCH_AUTO, _ALWAYS or _NEVER)",
                         (int)o->batch_policy);
  if (o->batch_policy == URSA_BATCH_NEVER) o->disable |= URSA_FEAT_MIN_WAIT;
  o->enable &= ~o->disable;
  if (o->disable & URSA_FEAT_BUF_RING)
    return ursa__invalid(
        "ursa_loop_new: buf_ring cannot be disabled (receives need it)");
  if (!o->large_bufs) o->large_bufs = 64;
  if (o->large_bufs > 4096 || (o->large_bufs & (o->large_bufs - 1)))
    return ursa__invalid("ursa_loop_new: large_bufs %u is not a power of "
                         "two up to 4096", o->large_bufs);
  if (!o->post_ring) o->post_ring = 1024;
  if (o->post_ring > (1u << 20) || (o->post_ring & (o->post_ring - 1)))
    return ursa__invalid("ursa_loop_new: post_ring %u is not a power of two "
                         "up to %u", o->post_ring, 1u << 20);
  if ((unsigned)o->backend > URSA_BACKEND_EPOLL)
    return ursa__invalid("ursa_loop_new: backend %d is unknown (want "
                         "URSA_BACKEND_AUTO, _URING or _EPOLL)",
                         (int)o->backend);
  if (o->backend == URSA_BACKEND_AUTO) {
    const char *env = getenv("URSA_BACKEND");
    if (env && *env && strcmp(env, "auto")) {
      if (!strcmp(env, "uring") || !strcmp(env, "io_uring"))
        o->backend = URSA_BACKEND_URING;
      else if (!strcmp(env, "epoll"))
        o->backend = URSA_BACKEND_EPOLL;
      else
        return ursa__invalid("ursa_loop_new: URSA_BACKEND=%.40s is unknown "
                             "(want auto, uring or epoll)", env);
    }
  }
  return 0;
}

/* Sets up one backend and the receive buffers on it. */
static int open_backend(ursa_loop *loop, const ursa_loop_options *o,
                        ursa_backend which) {
  loop->backend = which;
  loop->be = which == URSA_BACKEND_EPOLL ? &ursa__epoll_backend
                                         : &ursa__uring_backend;
  int r = which == URSA_BACKEND_EPOLL ? ursa__epoll_setup(loop, o)
                                      : ursa__ring_setup(loop, o);
  if (r < 0) return r;
  r = ursa__bufring_init(loop, o->buf_count, o->buf_size, o->enable,
                         o->buf_keep_max);
  if (r < 0) {
    loop->be->free(loop);
    return r;
  }
  loop->bufs->large_count = o->large_bufs;
  ursa__direct_init(loop, o->direct_files, o->disable);
  return 0;
}

int ursa_loop_new(ursa_loop **out, const ursa_loop_options *opts) {
  if (!out) return ursa__invalid("ursa_loop_new: NULL loop pointer");
  *out = NULL;
  ursa_loop_options o;
  int r = check_options(opts, &o);
  if (r < 0) return r;
  ursa_loop *loop = calloc(1, sizeof(*loop));
  if (!loop) return -ENOMEM;
  if (o.backend == URSA_BACKEND_EPOLL) {
    snprintf(loop->backend_why, sizeof(loop->backend_why), "%s",
             opts && opts->backend == URSA_BACKEND_EPOLL
                 ? "asked for (URSA_BACKEND_EPOLL)"
                 : "URSA_BACKEND=epoll in the environment");
    r = open_backend(loop, &o, URSA_BACKEND_EPOLL);
  } else {
    r = open_backend(loop, &o, URSA_BACKEND_URING);
    if (r == 0) {
      snprintf(loop->backend_why, sizeof(loop->backend_why), "%s",
               o.backend == URSA_BACKEND_AUTO
                   ? "io_uring set up (auto)"
                   : opts && opts->backend == URSA_BACKEND_URING
                         ? "asked for (URSA_BACKEND_URING)"
                         : "URSA_BACKEND=uring in the environment");
    } else if (o.backend == URSA_BACKEND_AUTO && r != -EINVAL) {
      /* Blocked, absent or short of something: the same loop on epoll. */
      char why[256];
      ursa__setup_cause(r, why, sizeof(why));
      memset(loop, 0, sizeof(*loop));
      snprintf(loop->backend_why, sizeof(loop->backend_why), "auto: %s", why);
      r = open_backend(loop, &o, URSA_BACKEND_EPOLL);
    }
  }
  if (r < 0) goto err_free;
  r = ursa__post_init(loop, o.post_ring);
  if (r < 0) {
    ursa__bufring_free(loop);
    loop->be->free(loop);
    goto err_free;
  }
  loop->zc_threshold = o.zc_threshold;
  ursa__set_clock(loop);
  loop->write_batch = o.write_batch;
  loop->batch_wait_us = o.batch_wait_us;
  loop->batch_policy = o.batch_policy;
  loop->batch_backoff = 1;
  loop->owner_pid = (int)getpid();
  *out = loop;
  return 0;
err_free:
  free(loop);
  return r;
}

int ursa_loop_close(ursa_loop *loop) {
  if (!loop) return ursa__invalid("ursa_loop_close: NULL loop");
  if (loop->running || loop->active || loop->pend_head)
    return ursa__refuse(-EBUSY, "ursa_loop_close: %llu operations active",
                        (unsigned long long)loop->active);
  if (loop->handles)
    return ursa__refuse(-EBUSY, "ursa_loop_close: %u handles (streams, "
                        "listeners, datagram sockets) still open; close "
                        "them and run the loop first", loop->handles);
  if (loop->closed)
    return ursa__refuse(-EBADF, "ursa_loop_close: closed already");
  ursa__post_shutdown(loop);
  ursa__sendv_free_all(loop);
  ursa__stream_pipes_free(loop);
  ursa__bufring_free(loop);
  ursa__fs_free(loop);
  ursa__proc_free(loop);
  /* A registered ring descriptor lives in the registering thread's table:
   * the last release may come on another thread, where unregistering it
   * would unregister that thread's own ring. */
  if (loop->used & URSA_FEAT_REG_RING_FD)
    io_uring_unregister_ring_fd(&loop->ring);
  loop->closed = true;
  /* The backend (the ring's descriptor) and the memory go with the last
   * reference: this one, unless a thread or a wake-up in flight holds
   * another. */
  ursa_loop_release(loop);
  return 0;
}

