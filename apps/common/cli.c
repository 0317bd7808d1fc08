/* cli.c - see cli.h. */
#include "apps/common/cli.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_long(const char *prog, const char *flag, const char *v, long lo,
             long hi, long *out) {
  char *end;
  errno = 0;
  long x = strtol(v, &end, 10);
  if (errno || *end || end == v || x < lo || x > hi) {
    fprintf(stderr, "%s: %s wants a whole number from %ld to %ld, not '%s'\n",
            prog, flag, lo, hi, v);
    return -1;
  }
  *out = x;
  return 0;
}

int cli_seconds(const char *prog, const char *flag, const char *v, double lo,
                double hi, double *out) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  if (errno || *end || end == v || !(x >= lo && x <= hi)) {
    fprintf(stderr, "%s: %s wants a number of seconds from %g to %g, not "
                    "'%s'\n", prog, flag, lo, hi, v);
    return -1;
  }
  *out = x;
  return 0;
}

int cli_pin(const char *prog, long cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET((int)cpu, &set);
  if (sched_setaffinity(0, sizeof(set), &set) < 0) {
    fprintf(stderr, "%s: --cpu %ld: %s\n", prog, cpu, strerror(errno));
    return -1;
  }
  return 0;
}
