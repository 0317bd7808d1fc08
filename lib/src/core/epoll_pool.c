/* epoll_pool.c - the epoll backend's way with operations that readiness
 * cannot make non-blocking (files: a regular file is always "ready", and
 * its reads still wait on the disk): each SQE is copied into a job, run as
 * its system call on the work pool, and its result posted back to the loop
 * (ursa_post), where it becomes a completion like any other.  A cancel
 * takes a job off the pool's queue if no thread has it yet; a running one
 * finishes (as io_uring's own workers do). */
#include "epoll.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h> /* renameat2 */
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

struct ep_job {
  struct ursa__task task; /* on the pool's queue */
  ursa_post_req post;     /* the result's way back */
  ursa_loop *loop;
  ep_job *next, *prev;    /* the loop's jobs out (circular), or the free
                             list */
  struct io_uring_sqe sqe;
  int res;
};

/* The system call an SQE stands for, run to its end: its result, or a
 * negative errno.  On a pool thread. */
static int run_sqe(const struct io_uring_sqe *s) {
  void *p = (void *)(uintptr_t)s->addr;
  long r = -1;
  bool at_pos = s->off == (uint64_t)-1; /* read and write at the position */
  switch (s->opcode) {
    case IORING_OP_READ:
    case IORING_OP_READ_FIXED: /* the buffers are only recorded here */
      r = at_pos ? read(s->fd, p, s->len)
                 : pread(s->fd, p, s->len, (off_t)s->off);
      break;
    case IORING_OP_WRITE_FIXED:
    case IORING_OP_WRITE:
      r = at_pos ? write(s->fd, p, s->len)
                 : pwrite(s->fd, p, s->len, (off_t)s->off);
      break;
    case IORING_OP_READV:
      r = preadv2(s->fd, p, (int)s->len, (off_t)s->off, (int)s->rw_flags);
      break;
    case IORING_OP_WRITEV:
      r = pwritev2(s->fd, p, (int)s->len, (off_t)s->off, (int)s->rw_flags);
      break;
    case IORING_OP_FSYNC:
      r = (s->fsync_flags & IORING_FSYNC_DATASYNC) ? fdatasync(s->fd)
                                                   : fsync(s->fd);
      break;
    case IORING_OP_OPENAT2: {
      const struct open_how *how = (const void *)(uintptr_t)s->addr2;
      r = syscall(SYS_openat2, s->fd, p, how, (size_t)s->len);
      /* Before 5.6 (where the epoll backend may well run), or a seccomp
       * filter that knows only openat: openat does the same without
       * resolve rules, and a request with rules gets the ENOSYS. */
      if (r < 0 && errno == ENOSYS && !how->resolve)
        r = openat(s->fd, p, (int)how->flags, (mode_t)how->mode);
      break;
    }
    case IORING_OP_STATX:
      r = statx(s->fd, p, (int)s->statx_flags, s->len,
                (struct statx *)(uintptr_t)s->addr2);
      break;
    case IORING_OP_UNLINKAT:
      r = unlinkat(s->fd, p, (int)s->unlink_flags);
      break;
    case IORING_OP_RENAMEAT:
      r = renameat2(s->fd, p, (int)s->len,
                    (const char *)(uintptr_t)s->addr2, s->rename_flags);
      break;
    case IORING_OP_MKDIRAT:
      r = mkdirat(s->fd, p, (mode_t)s->len);
      break;
    default:
      errno = EINVAL;
  }
  return r < 0 ? -errno : (int)r;
}

static void unlink_job(struct ursa__ep *ep, ep_job *j) {
  if (j->next == j) {
    ep->jobs = NULL;
  } else {
    j->prev->next = j->next;
    j->next->prev = j->prev;
    if (ep->jobs == j) ep->jobs = j->next;
  }
  j->next = ep->free_jobs; /* kept for the next job */
  ep->free_jobs = j;
}

/* On the loop's thread: the result becomes a completion.  The operation
 * is active until then, so the loop is neither closed nor closing. */
static void job_posted(ursa_post_req *p, int status) {
  ep_job *j = URSA__CONTAINER(p, ep_job, post);
  ursa_loop *loop = j->loop;
  post(loop, j->sqe.user_data, status ? status : j->res, 0);
  unlink_job(loop->ep, j);
}

static void job_run(struct ursa__task *t) {
  ep_job *j = URSA__CONTAINER(t, ep_job, task);
  j->res = run_sqe(&j->sqe);
  ursa_post(j->loop, &j->post, job_posted);
}

int ursa__ep_decode_pool(ursa_loop *loop, const struct io_uring_sqe *sqe,
                         ep_req *r) {
  struct ursa__ep *ep = loop->ep;
  (void)r;
  ep_job *j = ep->free_jobs;
  if (j)
    ep->free_jobs = j->next;
  else if (!(j = calloc(1, sizeof(*j))))
    return -ENOMEM;
  j->loop = loop;
  j->sqe = *sqe;
  j->task.run = job_run;
  if (ep->jobs) {
    j->next = ep->jobs;
    j->prev = ep->jobs->prev;
    j->prev->next = j;
    ep->jobs->prev = j;
  } else {
    ep->jobs = j->next = j->prev = j;
  }
  int e = ursa__pool_submit(&j->task);
  if (e < 0) {
    unlink_job(ep, j);
    return e;
  }
  return 1;
}

int ursa__ep_cancel_job(ursa_loop *loop, uint64_t ud) {
  struct ursa__ep *ep = loop->ep;
  ep_job *j = ep->jobs;
  if (!j) return -ENOENT;
  do {
    if (j->sqe.user_data == ud) {
      if (!ursa__pool_unqueue(&j->task)) return -EALREADY; /* running */
      post(loop, ud, -ECANCELED, 0);
      unlink_job(ep, j);
      return 0;
    }
    j = j->next;
  } while (j != ep->jobs);
  return -ENOENT;
}

void ursa__ep_jobs_free(struct ursa__ep *ep) {
  for (ep_job *j = ep->free_jobs, *n; j; j = n) {
    n = j->next;
    free(j);
  }
  ep->free_jobs = NULL;
}
