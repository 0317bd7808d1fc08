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

int ursa_poll_open(ursa_loop *loop, ursa_poll *p, int fd) {
  if (!loop || !p)
    return ursa__invalid("ursa_poll_open: NULL %s", loop ? "watcher" : "loop");
  if (fd < 0) return ursa__invalid("ursa_poll_open: fd %d is negative", fd);
  void *data = p->data;
  memset(p, 0, sizeof(*p));
  p->data = data;
  p->fd = fd;
  p->loop = loop;
  p->flags = P_OPEN;
  p->poll_op.kind = URSA__KIND(poll);
  p->poll_op.nsqe = 1;
  ursa__handle_init(loop, &p->base, URSA__KIND(close_poll), URSA_HANDLE_POLL);
  return 0;
}

int ursa_poll_start(ursa_poll *p, unsigned events, ursa_poll_cb cb) {
  int r = check_poll(p, "ursa_poll_start");
  if (r) return r;
  if (!cb) return ursa__invalid("ursa_poll_start: NULL callback");
  if (!events || (events & ~(URSA_READABLE | URSA_WRITABLE)))
    return ursa__invalid("ursa_poll_start: events 0x%x (want URSA_READABLE "
                         "and/or URSA_WRITABLE)", events);
  if (p->base.closing) return -EBADF;
  if (p->flags & P_WATCHING) return -EALREADY;
  p->flags |= P_WATCHING;
  p->cb = cb;
  p->events = events;
  /* A stop still on its way: the poll is armed again when it ends. */
  if (p->poll_op.state == URSA__IDLE)
    ursa__handle_submit(p->loop, &p->base, &p->poll_op);
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

int ursa_poll_close(ursa_poll *p, ursa_poll_close_cb cb) {
  int r = check_poll(p, "ursa_poll_close");
  if (r) return r;
  if (!cb) return ursa__invalid("ursa_poll_close: NULL callback");
  if (ursa__handle_begin_close(&p->base) < 0) return -EALREADY;
  p->flags &= ~P_WATCHING;
  p->close_cb = cb;
  ursa__op_cancel(p->loop, &p->poll_op);
  ursa__handle_maybe_close(p->loop, &p->base);
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
  bool watching = (p->flags & P_WATCHING) && !p->base.closing;
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
  watching = (p->flags & P_WATCHING) && !p->base.closing;
  if (watching && (res >= 0 || res == -ECANCELED)) {
    loop->stats.rearms++;
    op->flags &= (uint8_t)~URSA__F_CANCEL;
    ursa__op_resubmit(loop, op);
    return;
  }
  ursa__handle_op_end(loop, &p->base, op);
  if (watching && res < 0) {
    p->flags &= ~P_WATCHING;
    p->cb(p, res, 0);
  }
  ursa__handle_maybe_close(loop, &p->base);
}

URSA__OP_TYPE(poll) = {
    .name = "poll",
    .prep = poll_prep,
    .complete = poll_complete,
};

/* The watcher's close op closes nothing (the descriptor is the caller's):
 * a NOP completes it in order with the rest. */
static void pclose_prep(ursa_loop *loop, ursa_op *op) {
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  io_uring_prep_nop(sqe);
  io_uring_sqe_set_data(sqe, op);
}

static void pclose_complete(ursa_loop *loop, ursa_op *op, int res,
                           uint32_t flags) {
  ursa_poll *p = POLL_OF(op, base.close_op);
  (void)res;
  (void)flags;
  ursa__handle_closed(loop, &p->base);
  p->flags = 0;
  /* A signal's watcher: the signal's own close finishes (and notes). */
  if (p->base.type == URSA_HANDLE_SIGNAL ||
      !ursa__handle_close_all_note(loop, &p->base))
    p->close_cb(p); /* the last touch: it may free p */
}

URSA__OP_TYPE(close_poll) = {
    .name = "close",
    .prep = pclose_prep,
    .complete = pclose_complete,
};

/* ---- signals ---- */

static void on_signalfd(ursa_poll *p, int status, unsigned events) {
  ursa_signal *sig = p->data;
  (void)events;
  if (status < 0) return; /* the signalfd failed: nothing more comes */
  struct signalfd_siginfo si[8];
  ssize_t n;
  while ((n = read(p->fd, si, sizeof(si))) > 0) {
    for (size_t i = 0; i < (size_t)n / sizeof(si[0]); i++) {
      sig->cb(sig, (int)si[i].ssi_signo);
      if (p->base.closing) return; /* closed by the callback */
    }
  }
}

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
  sig->data = data;
  sig->signum = signum;
  sig->loop = loop;
  sig->cb = cb;
  sig->was_blocked = sigismember(&old, signum);
  ursa_poll_open(loop, &sig->poll, fd);
  sig->poll.base.type = URSA_HANDLE_SIGNAL;
  sig->poll.data = sig;
  ursa_poll_start(&sig->poll, URSA_READABLE, on_signalfd);
  return 0;
}

static void on_signal_poll_closed(ursa_poll *p) {
  ursa_signal *sig = p->data;
  close(p->fd);
  if (!sig->was_blocked) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig->signum);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
  }
  if (!ursa__handle_close_all_note(sig->loop, &p->base))
    sig->close_cb(sig); /* the last touch: it may free sig */
}

int ursa_signal_close(ursa_signal *sig, ursa_signal_close_cb cb) {
  if (!sig || !cb)
    return ursa__invalid("ursa_signal_close: NULL %s",
                         sig ? "callback" : "signal");
  if (!(sig->poll.flags & P_OPEN))
    return ursa__invalid("ursa_signal_close: signal watcher is not open");
  sig->close_cb = cb;
  return ursa_poll_close(&sig->poll, on_signal_poll_closed);
}
