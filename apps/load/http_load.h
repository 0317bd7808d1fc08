/* http_load.h - ursa-load's HTTP mode (--http URL): keep-alive connections
 * on the runtime, each with a pipeline of requests, every response parsed
 * (llhttp) and checked for its status and framing. */
#ifndef URSA_APPS_LOAD_HTTP_LOAD_H
#define URSA_APPS_LOAD_HTTP_LOAD_H

#include "ursa/ursa.h"

typedef struct http_load_opts {
  const char *url;  /* http://HOST:PORT/PATH */
  long conns;       /* --connections */
  long depth;       /* requests in flight per connection (--inflight) */
  long reconnect;   /* a new connection every N requests, 0: never */
  long body;        /* POST this many bytes, -1: GET (--http-body) */
  int json;         /* POST a small JSON document (--http-json) */
  int status;       /* the status every response must have (200) */
  long length;      /* the body length every response must have, -1: any */
  long fragment;    /* write requests in pieces of this many bytes, 0: whole */
  int batch_policy; /* the loop's ursa_batch_policy */
  double warmup_s, duration_s;
  long server_pid;
  const char *json_out;
} http_load_opts;

/* Runs it, prints the results (and the JSON); 0, 1 when a response was
 * wrong or none came, 2 when it cannot start (a bad URL, named). */
int http_load_run(const http_load_opts *o);

#endif
