/* udp_bulk.h - ursa-load's UDP bulk mode (--proto udp --bulk): streams of
 * datagrams from many peers, each echoed, with a window per peer so that
 * a loss is counted, never hidden. */
#ifndef URSA_APPS_LOAD_UDP_BULK_H
#define URSA_APPS_LOAD_UDP_BULK_H

#include "ursa/ursa.h"

typedef struct udp_bulk_opts {
  ursa_addr to;
  long peers;   /* sockets, each with its own port (--connections) */
  long window;  /* datagrams in flight per peer (--inflight) */
  long size;    /* bytes per datagram (--size) */
  double warmup_s, duration_s;
  int gso;      /* send each window as GSO sends (else one sendmmsg) */
  long server_pid;
  const char *json;
} udp_bulk_opts;

/* Runs it and prints the results (and the JSON); 0, 1 on a failure or a
 * corrupted datagram, 2 when it cannot start. */
int udp_bulk_run(const udp_bulk_opts *o);

/* load.c: CPU seconds of another process, -1 when unreadable. */
double load_proc_cpu_s(long pid);

#endif
