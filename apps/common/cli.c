/* cli.c - see cli.h. */
#include "apps/common/cli.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>

#include "ursa/ursa.h"

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

int cli_stop_fd(const char *prog) {
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  signal(SIGPIPE, SIG_IGN);
  int fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (fd < 0) fprintf(stderr, "%s: signalfd: %s\n", prog, strerror(errno));
  return fd;
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

int cli_next(const char *prog, int argc, char **argv, const char *shorts,
             const struct option *longs, const char **flag,
             const char **value) {
  static char name[64];
  char spec[64];
  /* A leading ':' makes a missing value ':' rather than '?'. */
  snprintf(spec, sizeof(spec), ":%s", shorts);
  opterr = 0;
  int idx = -1;
  int c = getopt_long(argc, argv, spec, longs, &idx);
  if (c == -1) return 0;
  const char *typed = argv[optind - 1];
  if (c == '?' || c == ':') {
    if (optopt && optopt < 256 && typed[1] != '-')
      snprintf(name, sizeof(name), "-%c", optopt);
    else
      snprintf(name, sizeof(name), "%.*s", (int)strcspn(typed, "="), typed);
    if (c == ':') {
      fprintf(stderr, "%s: option '%s' needs a value\n", prog, name);
      return -1;
    }
    if (typed[1] == '-' && optopt) {
      /* A known long option given a value it does not take. */
      fprintf(stderr, "%s: option '%s' takes no value\n", prog, name);
      return -1;
    }
    int matches = 0;
    size_t n = strlen(name + 2);
    for (const struct option *o = longs; typed[1] == '-' && o->name; o++)
      if (!strncmp(o->name, name + 2, n)) matches++;
    if (matches > 1)
      fprintf(stderr, "%s: option '%s' is ambiguous (the start of %d "
              "options)\n", prog, name, matches);
    else
      fprintf(stderr, "%s: unknown option '%s'\n", prog, name);
    return -1;
  }
  if (idx >= 0)
    snprintf(name, sizeof(name), "--%s", longs[idx].name);
  else
    snprintf(name, sizeof(name), "-%c", c);
  *flag = name;
  *value = optarg;
  return c;
}

uint64_t cli_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double cli_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

int cli_batch_policy(const char *prog, const char *flag, const char *v,
                     int *out) {
  static const struct {
    const char *name;
    ursa_batch_policy policy;
  } names[] = {{"auto", URSA_BATCH_AUTO},
               {"always", URSA_BATCH_ALWAYS},
               {"never", URSA_BATCH_NEVER}};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (!strcmp(v, names[i].name)) {
      *out = (int)names[i].policy;
      return 0;
    }
  fprintf(stderr, "%s: %s '%s' is not auto, always or never\n", prog, flag, v);
  return -1;
}

int cli_features(const char *prog, const char *flag, const char *list,
                 uint32_t *out) {
  char buf[256];
  snprintf(buf, sizeof(buf), "%s", list);
  char *save = NULL;
  for (char *tok = strtok_r(buf, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    uint32_t bit = 0;
    for (unsigned i = 0; i < URSA_FEAT_COUNT; i++)
      if (!strcmp(tok, ursa_feature_name(1u << i))) bit = 1u << i;
    if (!bit) {
      fprintf(stderr, "%s: %s: unknown feature '%s'\n", prog, flag, tok);
      return -1;
    }
    *out |= bit;
  }
  return 0;
}

int cli_opt_in(const char *prog, const char *flag, const char *list,
               uint32_t allowed, uint32_t *out) {
  if (cli_features(prog, flag, list, out) < 0) return -1;
  if (!(*out & ~allowed)) return 0;
  char names[256];
  ursa_feature_list(allowed, names, sizeof(names));
  fprintf(stderr, "%s: %s: only %s are opt-in, not '%s'\n", prog, flag,
          names, list);
  return -1;
}
