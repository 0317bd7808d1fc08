/* loops.h - N ursa loops, each on a thread of its own, that start in
 * order, share one address, hand connections to each other and stop
 * together: the skeleton of a multi-loop server, for any program on ursa
 * (ursa-echo-server's uring and ursa-epoll backends use it).
 *
 * Threads: loop_group_run() starts them and waits for them; everything
 * else is called from the loops' own threads, as each says. */
#ifndef URSA_APPS_LOOPS_H
#define URSA_APPS_LOOPS_H

#include <pthread.h>
#include <sys/socket.h>

#include "ursa/ursa.h"

#define LOOPS_MAX 64

typedef struct loop_group loop_group;

/* Runs on thread i: makes loop i there (a SINGLE_ISSUER ring is its
 * maker's), registers it with loop_group_join(), sets it up in step with
 * the others, runs and closes it.  Returns the thread's exit code. */
typedef int (*loop_main_fn)(loop_group *g, int i, void *arg);
/* Runs on loop i's thread, from its loop: begin a clean stop. */
typedef void (*loop_stop_fn)(loop_group *g, int i, void *arg);

struct loop_group {
  int n;     /* read-only: loops */
  void *arg; /* read-only: loop_group_run()'s */
  loop_main_fn main;
  loop_stop_fn on_stop;
  ursa_loop *loop[LOOPS_MAX]; /* read-only once set-up is over (publish,
                                 ready): retained from join to the end
                                 of run, so posts to it stay valid */
  long open[LOOPS_MAX];       /* connections each serves (atomic) */
  ursa_post_req stop_req[LOOPS_MAX];
  int stopping;
  unsigned next; /* round robin: the picking loop's thread only */
  struct sockaddr_storage addr;
  socklen_t addr_len;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int phase; /* 1: loop 0's address is out; 2: every loop is set up */
  int ready; /* loops other than 0 that are set up */
  int failed;
  pthread_t th[LOOPS_MAX];
  int rc[LOOPS_MAX];
};

/* Runs fn on n threads (1 to LOOPS_MAX; with n == 1 on the calling thread)
 * and waits for them all.  Returns the highest exit code, 1 when a thread
 * could not start. */
int loop_group_run(loop_group *g, int n, loop_main_fn fn, loop_stop_fn stop,
                   void *arg);

/* Thread i: loop i exists; others may post to it from now on. */
void loop_group_join(loop_group *g, int i, ursa_loop *loop);

/* Loop 0, listening: hands its address (port 0 resolved) to the others and
 * waits until every loop is set up.  0, or -1 when one failed. */
int loop_group_publish(loop_group *g, const struct sockaddr_storage *addr,
                       socklen_t len);
/* Loop i > 0: waits for loop 0's address.  0, or -1 when set-up failed. */
int loop_group_address(loop_group *g, struct sockaddr_storage *addr,
                       socklen_t *len);
/* Loop i > 0, set up: says so and waits for the rest.  0, or -1. */
int loop_group_ready(loop_group *g);
/* Any thread, set-up failed: every loop's wait returns -1. */
void loop_group_fail(loop_group *g);

/* Loop self's thread: asks every other loop to stop (its stop function
 * runs on its thread, by ursa_post); the first call does, later ones do
 * nothing.  The caller stops its own loop itself. */
void loop_group_stop(loop_group *g, int self);

/* The loop the next connection goes to: in turn, or (fewest) the one with
 * the fewest open.  From one picking thread. */
int loop_group_pick(loop_group *g, int fewest);
/* Loop i's thread: one connection more (+1) or fewer (-1) on it. */
void loop_group_count(loop_group *g, int i, int delta);
/* Connections open over every loop. */
long loop_group_open(const loop_group *g);

#endif /* URSA_APPS_LOOPS_H */
