/* resolve.c - name resolution off the loop: getaddrinfo(3) as a job on
 * the core's work pool, its answer posted back to the loop.  A job holds a
 * reference on its loop, not an active op: a cancelled lookup calls back
 * at once and lets the loop end or close, and its late answer is dropped
 * (the post finds the loop closing, or finds the request gone). */
#include "addr.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

URSA__OP_DECLARE(resolve);

struct ursa__job {
  struct ursa__task task; /* on the pool */
  ursa_post_req post;     /* the answer's way back */
  ursa_loop *loop;        /* referenced until the job is freed */
  ursa_resolve_req *req;  /* loop side only; NULL once cancelled */
  int family;
  int has_service;
  char host[256];
  char service[64];
  /* the answer, written on the pool thread before it is posted */
  int status;
  ursa_addr *addrs;
  size_t n;
  char detail[160];
};

static void free_job(struct ursa__job *j) {
  ursa_loop *loop = j->loop;
  free(j->addrs);
  free(j);
  ursa_loop_release(loop);
}

static int gai_status(int g, char *detail, size_t len, const char *host) {
  snprintf(detail, len, "resolving '%.100s': %s", host, gai_strerror(g));
  switch (g) {
    case EAI_NONAME:
    case EAI_NODATA:
    case EAI_ADDRFAMILY:
    case EAI_SERVICE:
      return -ENOENT;
    case EAI_AGAIN:
      return -EAGAIN;
    case EAI_MEMORY:
      return -ENOMEM;
    case EAI_SYSTEM:
      return errno ? -errno : -EIO;
    default:
      return -EIO;
  }
}

/* On the loop's thread, or inside its close with -ECANCELED (the request
 * was cancelled then: an active one keeps the loop from closing). */
static void answered(ursa_post_req *p, int status) {
  struct ursa__job *j = URSA__CONTAINER(p, struct ursa__job, post);
  ursa_resolve_req *req = j->req;
  if (req && status == 0) {
    req->job = NULL;
    ursa__op_done(j->loop, &req->op);
    if (j->status < 0 && j->detail[0])
      ursa__refuse(j->status, "%s", j->detail);
    req->cb(req, j->status, j->addrs, j->n);
  }
  free_job(j);
}

/* On a pool thread. */
static void lookup(struct ursa__task *t) {
  struct ursa__job *j = URSA__CONTAINER(t, struct ursa__job, task);
  struct addrinfo *res = NULL;
  int g = ursa__getaddrinfo(j->host, j->has_service ? j->service : NULL,
                            j->family, &res);
  if (g) {
    j->status = gai_status(g, j->detail, sizeof(j->detail), j->host);
  } else {
    size_t n = 0;
    for (struct addrinfo *a = res; a; a = a->ai_next)
      if (a->ai_addrlen <= sizeof(struct sockaddr_storage)) n++;
    j->addrs = calloc(n ? n : 1, sizeof(*j->addrs));
    if (!j->addrs) {
      j->status = -ENOMEM;
    } else {
      for (struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_addrlen > sizeof(struct sockaddr_storage)) continue;
        memcpy(&j->addrs[j->n].ss, a->ai_addr, a->ai_addrlen);
        j->addrs[j->n++].len = a->ai_addrlen;
      }
      j->status = j->n ? 0 : -ENOENT;
    }
    freeaddrinfo(res);
  }
  /* A loop that is closing refuses the post: nobody waits for it. */
  if (ursa_post(j->loop, &j->post, answered) < 0) free_job(j);
}

int ursa_resolve(ursa_loop *loop, ursa_resolve_req *req, const char *host,
                 const char *service, int family, ursa_resolve_cb cb) {
  if (!loop || !req || !host || !cb)
    return ursa__invalid("ursa_resolve: NULL %s",
                         !loop ? "loop" : !req ? "request"
                                   : !host ? "host" : "callback");
  size_t hl = strlen(host);
  if (!hl || hl >= sizeof(((struct ursa__job *)0)->host))
    return ursa__invalid("ursa_resolve: host name of %zu bytes (want 1 to "
                         "255)", hl);
  if (service && strlen(service) >= sizeof(((struct ursa__job *)0)->service))
    return ursa__invalid("ursa_resolve: service name too long");
  if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6)
    return ursa__invalid("ursa_resolve: family %d (want AF_UNSPEC, AF_INET "
                         "or AF_INET6)", family);
  if (req->op.state != URSA__IDLE) return -EBUSY;
  struct ursa__job *j = calloc(1, sizeof(*j));
  if (!j) return -ENOMEM;
  ursa_loop_retain(loop);
  j->loop = loop;
  j->req = req;
  j->family = family;
  j->task.run = lookup;
  memcpy(j->host, host, hl + 1);
  if (service) {
    j->has_service = 1;
    snprintf(j->service, sizeof(j->service), "%s", service);
  }
  int r = ursa__pool_submit(&j->task);
  if (r < 0) {
    free_job(j);
    return r;
  }
  req->loop = loop;
  req->job = j;
  req->cb = cb;
  req->op.kind = URSA__KIND(resolve);
  req->op.flags = 0;
  req->op.state = URSA__QUEUED; /* with the pool */
  loop->active++;
  return 0;
}

static int resolve_cancel(ursa_loop *loop, ursa_op *op) {
  ursa_resolve_req *req = (ursa_resolve_req *)op;
  if (op->state == URSA__PENDING) return -EALREADY;
  struct ursa__job *j = req->job;
  req->job = NULL;
  j->req = NULL; /* its answer is dropped when it comes */
  if (ursa__pool_unqueue(&j->task)) free_job(j); /* it never ran */
  op->flags |= URSA__F_CANCEL;
  ursa__op_defer(loop, op, -ECANCELED);
  return 0;
}

int ursa_resolve_cancel(ursa_resolve_req *req) {
  if (!req) return ursa__invalid("ursa_resolve_cancel: NULL request");
  if (req->op.state == URSA__IDLE) return -ENOENT;
  return resolve_cancel(req->loop, &req->op);
}

/* A cancelled request's deferred result. */
static void resolve_complete(ursa_loop *loop, ursa_op *op, int res,
                             uint32_t flags) {
  ursa_resolve_req *req = (ursa_resolve_req *)op;
  (void)flags;
  ursa__op_done(loop, op);
  req->cb(req, res, NULL, 0);
}

URSA__OP_TYPE(resolve) = {
    .name = "resolve",
    .complete = resolve_complete,
    .cancel = resolve_cancel,
};
