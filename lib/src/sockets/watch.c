/* watch.c - watching any descriptor (a multishot poll, on both backends)
 * and signals as loop callbacks on top of it (a signalfd). */
#include "sock.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define P_OPEN 0x01
#define P_WATCHING 0x02 /* the application wants events */

#define POLL_OF(op, member) URSA__CONTAINER(op, ursa_poll, member)

static int check_poll(const ursa_poll *p, const char *fn) {
  if (!p) return ursa__invalid("%s: NULL watcher", fn);
  if (!(p->flags & P_OPEN)) return ursa__invalid("%s: watcher is not open", fn);
  return 0;
}

static const ursa__handle_kind poll_kind;

int ursa_poll_open(ursa_loop *loop, ursa_poll *p, int fd) {
  if (!loop || !p)
    return ursa__invalid("ursa_poll_open: NULL %s", loop ? "watcher" : "loop");
  if (fd < 0) return ursa__invalid("ursa_poll_open: fd %d is negative", fd);
  void *data = p->data;
  memset(p, 0, sizeof(*p));
  p->data = data;
  p->fd = fd;
  p->flags = P_OPEN;
  p->poll_op.kind = URSA__KIND(poll);
  p->poll_op.nsqe = 1;
  ursa__handle_init(loop, &p->handle, &poll_kind, URSA_HANDLE_POLL);
  return 0;
}

int ursa_poll_start(ursa_poll *p, unsigned events, ursa_poll_cb cb) {
  int r = check_poll(p, "ursa_poll_start");
  if (r) return r;
  if (!cb) return ursa__invalid("ursa_poll_start: NULL callback");
  if (!events || (events & ~(URSA_READABLE | URSA_WRITABLE)))
    return ursa__invalid("ursa_poll_start: events 0x%x (want URSA_READABLE "
                         "and/or URSA_WRITABLE)", events);
  if (p->handle.closing) return -EBADF;
  if (p->flags & P_WATCHING) return -EALREADY;
  p->flags |= P_WATCHING;
  p->cb = cb;
  p->events = events;
  /* A stop still on its way: the poll is armed again when it ends. */
  if (p->poll_op.state == URSA__IDLE)
    ursa__handle_submit(p->loop, &p->handle, &p->poll_op);
  return 0;
}

int ursa_poll_stop(ursa_poll *p) {
  int r = check_poll(p, "ursa_poll_stop");
  if (r) return r;
  if (!(p->flags & P_WATCHING)) return 0;
  p->flags &= ~P_WATCHING;
  ursa__op_cancel(p->loop, &p->poll_op);
  return 0;
}

static void poll_prep(ursa_loop *loop, ursa_op *op) {
  ursa_poll *p = POLL_OF(op, poll_op);
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  unsigned mask = ((p->events & URSA_READABLE) ? POLLIN : 0) |
                  ((p->events & URSA_WRITABLE) ? POLLOUT : 0);
  io_uring_prep_poll_multishot(sqe, p->fd, mask);
  op->flags |= URSA__F_MULTISHOT;
  io_uring_sqe_set_data(sqe, op);
}

static void poll_complete(ursa_loop *loop, ursa_op *op, int res,
                         uint32_t flags) {
  ursa_poll *p = POLL_OF(op, poll_op);
  bool watching = (p->flags & P_WATCHING) && !p->handle.closing;
  if (res >= 0 && watching) {
    unsigned ev = 0;
    if (res & (POLLERR | POLLHUP)) ev = p->events;
    if (res & POLLIN) ev |= URSA_READABLE;
    if (res & POLLOUT) ev |= URSA_WRITABLE;
    ev &= p->events;
    if (ev) p->cb(p, 0, ev);
  }
  if (flags & IORING_CQE_F_MORE) return;
  /* The poll ended: a stop or close (-ECANCELED), an error, or the kernel
   * ending a multishot (a full CQ), which is armed again while wanted. */
  watching = (p->flags & P_WATCHING) && !p->handle.closing;
  if (watching && (res >= 0 || res == -ECANCELED)) {
    loop->stats.rearms++;
    op->flags &= (uint8_t)~URSA__F_CANCEL;
    ursa__op_resubmit(loop, op);
    return;
  }
  ursa__handle_op_end(loop, &p->handle, op);
  if (watching && res < 0) {
    p->flags &= ~P_WATCHING;
    p->cb(p, res, 0);
  }
  ursa__handle_maybe_close(&p->handle);
}

URSA__OP_TYPE(poll) = {
    .name = "poll",
    .prep = poll_prep,
    .complete = poll_complete,
};

/* The watcher's close closes nothing (the descriptor is the caller's). */
static void poll_close(ursa_handle *h) {
  ursa_poll *p = (ursa_poll *)h;
  p->flags &= ~P_WATCHING;
  ursa__op_cancel(p->loop, &p->poll_op);
}

static void poll_closed(ursa_handle *h) { ((ursa_poll *)h)->flags = 0; }

static const ursa__handle_kind poll_kind = {
    .name = "poll",
    .close = poll_close,
    .closed = poll_closed,
};

int ursa_poll_close(ursa_poll *p, ursa_close_cb cb) {
  return ursa_close(p ? &p->handle : NULL, cb);
}

/* ---- signals ---- */

static void on_signalfd(ursa_poll *p, int status, unsigned events) {
  ursa_signal *sig = URSA__CONTAINER(p, ursa_signal, poll);
  (void)events;
  if (status < 0) return; /* the signalfd failed: nothing more comes */
  struct signalfd_siginfo si[8];
  ssize_t n;
  while ((n = read(p->fd, si, sizeof(si))) > 0) {
    for (size_t i = 0; i < (size_t)n / sizeof(si[0]); i++) {
      sig->cb(sig, (int)si[i].ssi_signo);
      if (p->handle.closing) return; /* closed by the callback */
    }
  }
}

/* A signal is a watcher of its own signalfd, which its close closes. */
static void signal_closed(ursa_handle *h) {
  ursa_signal *sig = (ursa_signal *)h;
  poll_closed(h);
  close(sig->poll.fd);
  if (!sig->was_blocked) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig->signum);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  }
}

static const ursa__handle_kind signal_kind = {
    .name = "signal",
    .close = poll_close,
    .closed = signal_closed,
};

int ursa_signal_start(ursa_loop *loop, ursa_signal *sig, int signum,
                      ursa_signal_cb cb) {
  if (!loop || !sig || !cb)
    return ursa__invalid("ursa_signal_start: NULL %s",
                         !loop ? "loop" : !sig ? "signal" : "callback");
  if (signum <= 0 || signum >= NSIG || signum == SIGKILL || signum == SIGSTOP)
    return ursa__invalid("ursa_signal_start: signal %d cannot be caught",
                         signum);
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, signum);
  int r = pthread_sigmask(SIG_BLOCK, &set, &old);
  if (r) return -r;
  int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) {
    r = -errno;
    if (!sigismember(&old, signum)) pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    return r;
  }
  void *data = sig->data;
  memset(sig, 0, sizeof(*sig));
  ursa_poll_open(loop, &sig->poll, fd);
  sig->data = data;
  sig->signum = signum;
  sig->cb = cb;
  sig->was_blocked = sigismember(&old, signum);
  sig->handle.kind = &signal_kind;
  sig->handle.type = URSA_HANDLE_SIGNAL;
  ursa_poll_start(&sig->poll, URSA_READABLE, on_signalfd);
  return 0;
}

int ursa_signal_close(ursa_signal *sig, ursa_close_cb cb) {
  return ursa_close(sig ? &sig->handle : NULL, cb);
}
