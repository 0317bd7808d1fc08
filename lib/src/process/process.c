/* process.c - child processes: ursa_spawn() (posix_spawn, which makes the
 * child without copying the caller's memory), the exit through a pidfd
 * (IORING_OP_WAITID, or a poll of the pidfd and then waitid(2)), kill
 * through the pidfd, and a close before or after the exit.  Pipes to the
 * child are streams (the socket layer reads them with READ). */
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

URSA__STATIC_ASSERT(sizeof(((ursa_process *)0)->info) >= sizeof(siginfo_t),
                    "room for the siginfo_t waitid fills");

#define P_EXITED 1u /* reaped: its status taken (or taken by another) */
#define P_WAITID 2u /* the wait in flight is a WAITID, not a poll */

/* Children closed before their exit, by pidfd: each is reaped once it has
 * ended (at a later spawn, or the loop's close). */
struct ursa__orphans {
  unsigned n, cap;
  int *fd;
};

URSA__OP_DECLARE(proc_wait);
static const ursa__handle_kind process_kind;

static siginfo_t *info_of(ursa_process *p) {
  return (siginfo_t *)(void *)p->info;
}

/* waitid(2) of a pidfd without waiting: 1 reaped (info filled), 0 still
 * running, or -errno (-ECHILD: reaped by someone else). */
static int reap_now(int pidfd, siginfo_t *info) {
  memset(info, 0, sizeof(*info));
  if (waitid((idtype_t)URSA__P_PIDFD, (id_t)pidfd, info, WEXITED | WNOHANG) < 0)
    return -errno;
  return info->si_pid != 0;
}

static void orphans_reap(ursa_loop *loop, bool all) {
  struct ursa__orphans *o = loop->orphans;
  if (!o) return;
  unsigned k = 0;
  for (unsigned i = 0; i < o->n; i++) {
    siginfo_t info;
    if (reap_now(o->fd[i], &info) == 0 && !all) {
      o->fd[k++] = o->fd[i];
      continue;
    }
    /* Its wait was cancelled rounds ago, so no backend watches it. */
    close(o->fd[i]);
  }
  o->n = k;
}

static bool orphan_add(ursa_loop *loop, int pidfd) {
  struct ursa__orphans *o = loop->orphans;
  if (!o && !(o = loop->orphans = calloc(1, sizeof(*o)))) return false;
  if (o->n == o->cap) {
    unsigned cap = o->cap ? 2 * o->cap : 8;
    int *fd = realloc(o->fd, cap * sizeof(*fd));
    if (!fd) return false;
    o->fd = fd;
    o->cap = cap;
  }
  o->fd[o->n++] = pidfd;
  return true;
}

void ursa__proc_free(ursa_loop *loop) {
  orphans_reap(loop, true);
  if (loop->orphans) free(loop->orphans->fd);
  free(loop->orphans);
  loop->orphans = NULL;
}

/* ---- spawn ---- */

/* What ursa_spawn() holds while it sets the child up. */
struct spawn {
  int parent[URSA_SPAWN_MAX_STDIO]; /* a pipe's end that stays: a stream */
  bool open[URSA_SPAWN_MAX_STDIO];  /* the caller's descriptor i was open
                                       before any pipe was made */
  int drop[2 * URSA_SPAWN_MAX_STDIO]; /* the child's ends and copies */
  unsigned ndrop;
  unsigned bad_size; /* 1 + the slot whose pipe_size the kernel refused */
};

static void drop_all(struct spawn *sp, bool parents) {
  for (unsigned i = 0; i < sp->ndrop; i++) close(sp->drop[i]);
  sp->ndrop = 0;
  for (unsigned i = 0; parents && i < URSA_SPAWN_MAX_STDIO; i++)
    if (sp->parent[i] >= 0) close(sp->parent[i]);
}

static int check_options(const ursa_spawn_options *o) {
  if (!o->file || !*o->file)
    return ursa__invalid("ursa_spawn: no program (file is %s)",
                         o->file ? "empty" : "NULL");
  if (o->nstdio > URSA_SPAWN_MAX_STDIO)
    return ursa__invalid("ursa_spawn: nstdio %u is over %d", o->nstdio,
                         URSA_SPAWN_MAX_STDIO);
  if (o->nstdio && !o->stdio)
    return ursa__invalid("ursa_spawn: nstdio %u with NULL stdio", o->nstdio);
  if (o->flags & ~(URSA_SPAWN_SETSID | URSA_SPAWN_SETPGID))
    return ursa__invalid("ursa_spawn: flags 0x%x has unknown bits", o->flags);
  if ((o->flags & URSA_SPAWN_SETSID) && (o->flags & URSA_SPAWN_SETPGID))
    return ursa__invalid("ursa_spawn: URSA_SPAWN_SETSID already makes the "
                         "child lead a process group of its own: drop "
                         "URSA_SPAWN_SETPGID");
  for (unsigned i = 0; i < o->nstdio; i++) {
    const ursa_stdio *d = &o->stdio[i];
    switch (d->kind) {
      case URSA_STDIO_INHERIT:
      case URSA_STDIO_IGNORE:
      case URSA_STDIO_FD:
        if (d->pipe_size)
          return ursa__invalid("ursa_spawn: stdio[%u]: pipe_size %u, but "
                               "the slot is not a new pipe", i, d->pipe_size);
        if (d->kind != URSA_STDIO_FD) break;
        if (d->fd < 0 || fcntl(d->fd, F_GETFD) < 0)
          return ursa__refuse(-EBADF, "ursa_spawn: stdio[%u]: fd %d is not "
                              "an open descriptor", i, d->fd);
        break;
      case URSA_STDIO_PIPE:
      case URSA_STDIO_PIPE_IN:
        if (!d->stream)
          return ursa__invalid("ursa_spawn: stdio[%u]: a pipe needs a "
                               "stream for the caller's end", i);
        if (d->pipe_size > (1u << 30))
          return ursa__invalid("ursa_spawn: stdio[%u]: pipe_size %u is over "
                               "1 GiB", i, d->pipe_size);
        for (unsigned j = 0; j < i; j++)
          if (o->stdio[j].stream == d->stream &&
              (o->stdio[j].kind == URSA_STDIO_PIPE ||
               o->stdio[j].kind == URSA_STDIO_PIPE_IN))
            return ursa__invalid("ursa_spawn: stdio[%u] and stdio[%u] name "
                                 "the same stream", j, i);
        break;
      default:
        return ursa__invalid("ursa_spawn: stdio[%u]: kind %d is unknown", i,
                             (int)d->kind);
    }
  }
  return 0;
}

/* Sets up child descriptor i from sp and o: the file actions posix_spawn
 * runs in the child, and the pipe's ends here.  top: the lowest number no
 * slot takes; a source below it is first copied above it, so that no
 * slot's dup2 can overwrite another slot's source. */
static int plan_slot(ursa_loop *loop, const ursa_spawn_options *o,
                     unsigned i, unsigned top, struct spawn *sp,
                     posix_spawn_file_actions_t *fa) {
  const ursa_stdio *d = &o->stdio[i];
  int src = -1, e;
  switch (d->kind) {
    case URSA_STDIO_INHERIT:
      /* dup2 onto itself clears close-on-exec, as POSIX asks.  Whether i
       * was open is asked before the pipes are made, one of which may
       * have taken the number of a descriptor the caller had closed. */
      if (sp->open[i])
        return posix_spawn_file_actions_adddup2(fa, (int)i, (int)i);
      return 0;
    case URSA_STDIO_IGNORE:
      return posix_spawn_file_actions_addopen(fa, (int)i, "/dev/null",
                                              O_RDWR, 0);
    case URSA_STDIO_FD:
      src = d->fd;
      break;
    default: { /* a pipe */
      int pf[2];
      if (pipe2(pf, O_CLOEXEC) < 0) return errno;
      /* The size is the pipe's, asked on either end. */
      if (fcntl(pf[0], F_SETPIPE_SZ,
                (int)(d->pipe_size ? d->pipe_size : URSA_SPAWN_PIPE_SIZE)) <
              0 &&
          d->pipe_size) {
        e = errno;
        close(pf[0]);
        close(pf[1]);
        sp->bad_size = i + 1;
        return e;
      }
      bool child_reads = d->kind == URSA_STDIO_PIPE_IN || i == 0;
      sp->parent[i] = child_reads ? pf[1] : pf[0];
      src = child_reads ? pf[0] : pf[1];
      sp->drop[sp->ndrop++] = src;
      /* The backend's part now (the epoll backend's table grows here),
       * so that opening the stream after the spawn is left with a
       * stat and an fcntl of a new pipe, which do not fail. */
      if (loop->be->stream_fd && (e = loop->be->stream_fd(loop, sp->parent[i])))
        return -e;
      break;
    }
  }
  if ((unsigned)src < top) {
    int c = fcntl(src, F_DUPFD_CLOEXEC, (int)top);
    if (c < 0) return errno;
    sp->drop[sp->ndrop++] = c;
    src = c;
  }
  return posix_spawn_file_actions_adddup2(fa, src, (int)i);
}

static int spawn_child(ursa_loop *loop, const ursa_spawn_options *o,
                       struct spawn *sp, pid_t *pid) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  int e = posix_spawn_file_actions_init(&fa);
  if (e) return e;
  if ((e = posix_spawnattr_init(&at))) {
    posix_spawn_file_actions_destroy(&fa);
    return e;
  }
  unsigned top = o->nstdio < 3 ? 3 : o->nstdio;
  for (unsigned i = 0; i < o->nstdio; i++)
    sp->open[i] = fcntl((int)i, F_GETFD) >= 0;
  for (unsigned i = 0; !e && i < o->nstdio; i++)
    e = plan_slot(loop, o, i, top, sp, &fa);
  if (!e && o->cwd) e = posix_spawn_file_actions_addchdir_np(&fa, o->cwd);
  /* Everything above the slots, close-on-exec or not. */
  if (!e) e = posix_spawn_file_actions_addclosefrom_np(&fa, (int)top);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  /* glibc's sigfillset leaves out its two internal signals (32 and 33),
   * and its posix_spawn then leaves them ignored in the child, through
   * exec; sigaddset refuses them, so their bits are set directly (bit
   * n - 1 for signal n, as the kernel's sigset). */
  for (int sig = 32; sig < SIGRTMIN; sig++)
    ((unsigned long *)(void *)&all)[(sig - 1) / (8 * sizeof(long))] |=
        1ul << ((sig - 1) % (8 * sizeof(long)));
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (o->flags & URSA_SPAWN_SETSID) flags |= POSIX_SPAWN_SETSID;
  if (o->flags & URSA_SPAWN_SETPGID) flags |= POSIX_SPAWN_SETPGROUP;
  if (!e) e = posix_spawnattr_setsigmask(&at, &none);
  if (!e) e = posix_spawnattr_setsigdefault(&at, &all);
  if (!e) e = posix_spawnattr_setpgroup(&at, 0);
  if (!e) e = posix_spawnattr_setflags(&at, flags);
  if (!e) {
    char *one[2] = {(char *)o->file, NULL};
    char *const *argv = o->argv ? o->argv : one;
    char *const *env = o->env ? o->env : environ;
    e = strchr(o->file, '/') ? posix_spawn(pid, o->file, &fa, &at, argv, env)
                             : posix_spawnp(pid, o->file, &fa, &at, argv, env);
  }
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  return e;
}

int ursa_spawn(ursa_loop *loop, ursa_process *p, const ursa_spawn_options *o,
               ursa_exit_cb cb) {
  if (!loop || !p || !o || !cb)
    return ursa__invalid("ursa_spawn: NULL %s", !loop ? "loop"
                                                : !p  ? "process"
                                                : !o  ? "options"
                                                      : "callback");
  int r = check_options(o);
  if (r) return r;
  orphans_reap(loop, false);
  struct spawn sp;
  sp.ndrop = 0;
  sp.bad_size = 0;
  for (unsigned i = 0; i < URSA_SPAWN_MAX_STDIO; i++) sp.parent[i] = -1;
  pid_t pid = -1;
  int e = spawn_child(loop, o, &sp, &pid);
  drop_all(&sp, e != 0);
  if (e && sp.bad_size)
    return ursa__refuse(-e, "ursa_spawn: stdio[%u]: the kernel refused "
                        "pipe_size %u (%s; the most it allows is in "
                        "/proc/sys/fs/pipe-max-size)", sp.bad_size - 1,
                        o->stdio[sp.bad_size - 1].pipe_size, strerror(e));
  if (e)
    return ursa__refuse(-e, "ursa_spawn: cannot run %s%s%s: %s", o->file,
                        o->cwd ? " in " : "", o->cwd ? o->cwd : "",
                        strerror(e));
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd < 0) {
    e = errno;
    kill(pid, SIGKILL); /* ours, never reaped: the number is still its */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    drop_all(&sp, true);
    return ursa__refuse(-e, "ursa_spawn: pidfd_open refused (%s): child "
                        "processes need pidfds (Linux 5.4)", strerror(e));
  }
  for (unsigned i = 0; i < o->nstdio; i++)
    if (sp.parent[i] >= 0) /* cannot fail: checked and prepared above */
      ursa_stream_open(loop, o->stdio[i].stream, sp.parent[i]);
  void *data = p->data;
  memset(p, 0, sizeof(*p));
  p->data = data;
  p->pid = pid;
  p->pidfd = pidfd;
  p->exit_cb = cb;
  p->wait_op.kind = URSA__KIND(proc_wait);
  p->wait_op.nsqe = 1;
  ursa__handle_init(loop, &p->handle, &process_kind, URSA_HANDLE_PROCESS);
  ursa__handle_submit(loop, &p->handle, &p->wait_op);
  return 0;
}

/* ---- the exit ---- */

static void wait_prep(ursa_loop *loop, ursa_op *op) {
  ursa_process *p = URSA__CONTAINER(op, ursa_process, wait_op);
  struct io_uring_sqe *sqe = ursa__get_sqe(loop);
  if (loop->used & URSA_FEAT_WAITID) {
    memset(p->info, 0, sizeof(p->info));
    io_uring_prep_rw(URSA__IORING_OP_WAITID, sqe, p->pidfd, NULL,
                     URSA__P_PIDFD, 0);
    sqe->file_index = WEXITED;
    sqe->addr2 = (uint64_t)(uintptr_t)p->info;
    p->flags |= P_WAITID;
  } else {
    io_uring_prep_poll_add(sqe, p->pidfd, POLLIN);
    p->flags &= ~P_WAITID;
  }
  io_uring_sqe_set_data(sqe, op);
}

static void wait_complete(ursa_loop *loop, ursa_op *op, int res,
                          uint32_t flags) {
  ursa_process *p = URSA__CONTAINER(op, ursa_process, wait_op);
  bool closing = p->handle.closing;
  (void)flags;
  if (res == -EINVAL && (p->flags & P_WAITID) && !closing) {
    loop->used &= ~URSA_FEAT_WAITID; /* refused: poll the pidfd instead */
    ursa__op_resubmit(loop, op);
    return;
  }
  if (!(p->flags & P_WAITID) && res > 0) { /* the pidfd is readable */
    int r = reap_now(p->pidfd, info_of(p));
    if (r == 0 && !closing) {
      ursa__op_resubmit(loop, op);
      return;
    }
    res = r < 0 ? r : r ? 0 : -ECANCELED;
  }
  ursa__handle_op_end(loop, &p->handle, op);
  if (res == 0 || res == -ECHILD) p->flags |= P_EXITED;
  if (!closing && res != -ECANCELED) {
    const siginfo_t *si = info_of(p);
    int code = res, sig = 0;
    if (res == 0 && si->si_code == CLD_EXITED)
      code = si->si_status;
    else if (res == 0)
      sig = si->si_status; /* CLD_KILLED, CLD_DUMPED */
    p->exit_cb(p, code, sig);
  }
  ursa__handle_maybe_close(&p->handle);
}

URSA__OP_TYPE(proc_wait) = {
    .name = "proc_wait",
    .prep = wait_prep,
    .complete = wait_complete,
};

/* ---- kill, close ---- */

int ursa_process_kill(ursa_process *p, int signum) {
  if (!p) return ursa__invalid("ursa_process_kill: NULL process");
  if (!p->handle.kind || p->handle.closing)
    return ursa__invalid("ursa_process_kill: the process handle is not open");
  if (signum < 0 || signum >= NSIG)
    return ursa__invalid("ursa_process_kill: signal %d is out of range",
                         signum);
  if (p->flags & P_EXITED) return -ESRCH;
  if (syscall(SYS_pidfd_send_signal, p->pidfd, signum, NULL, 0) < 0)
    return -errno;
  return 0;
}

static void process_close(ursa_handle *h) {
  ursa_process *p = (ursa_process *)h;
  ursa__op_cancel(h->loop, &p->wait_op);
}

static void process_prep_close(ursa_loop *loop, ursa_handle *h) {
  ursa_process *p = (ursa_process *)h;
  siginfo_t info;
  if (!(p->flags & P_EXITED) && reap_now(p->pidfd, &info) == 0 &&
      orphan_add(loop, p->pidfd)) {
    /* Still running: the loop reaps it once it has ended. */
    p->pidfd = -1;
    struct io_uring_sqe *sqe = ursa__get_sqe(loop);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data(sqe, &h->close_op);
    return;
  }
  ursa__handle_prep_close(loop, h, p->pidfd, -1);
}

static void process_closed(ursa_handle *h) {
  ursa_process *p = (ursa_process *)h;
  p->pidfd = -1;
  p->flags = 0;
}

static const ursa__handle_kind process_kind = {
    .name = "process",
    .close = process_close,
    .prep_close = process_prep_close,
    .closed = process_closed,
};

int ursa_process_close(ursa_process *p, ursa_close_cb cb) {
  return ursa_close(p ? &p->handle : NULL, cb);
}
