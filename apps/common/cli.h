/* cli.h - command-line pieces the programs in apps/ share, so that they
 * read numbers and report bad ones the same way. */
#ifndef URSA_APPS_CLI_H
#define URSA_APPS_CLI_H

#include <getopt.h>
#include <stdint.h>

/* Reads a whole number from lo to hi into *out; otherwise prints
 * "PROG: FLAG wants a whole number from LO to HI, not 'V'" and returns -1. */
int cli_long(const char *prog, const char *flag, const char *v, long lo,
             long hi, long *out);

/* The same for a number of seconds, fractions allowed. */
int cli_seconds(const char *prog, const char *flag, const char *v, double lo,
                double hi, double *out);

/* The next option, by getopt_long (GNU conventions: --flag=value, "--"
 * ends options, unambiguous abbreviations, options and operands in any
 * order; operands are argv[optind..] afterwards).  Returns the option's
 * val with *flag its name as typed ("--size", "-c") and *value its
 * argument (NULL when it takes none); 0 when none are left; -1 after
 * printing "PROG: unknown option 'X'" or "PROG: option 'X' needs a value". */
int cli_next(const char *prog, int argc, char **argv, const char *shorts,
             const struct option *longs, const char **flag,
             const char **value);

/* Adds the URSA_FEAT_* bits a comma-separated list of feature names
 * (ursa_feature_name's) gives to *out; otherwise prints "PROG: FLAG:
 * unknown feature 'X'" and returns -1. */
int cli_features(const char *prog, const char *flag, const char *list,
                 uint32_t *out);

/* cli_features() for a flag that takes only the bits of allowed (the
 * opt-in ones): otherwise prints "PROG: FLAG: only A, B and C are
 * opt-in, not 'LIST'" and returns -1. */
int cli_opt_in(const char *prog, const char *flag, const char *list,
               uint32_t allowed, uint32_t *out);

/* Reads a batched-wait policy (ursa.h, ursa_batch_policy) named auto,
 * always or never into *out; otherwise prints "PROG: FLAG 'V' is not
 * auto, always or never" and returns -1. */
int cli_batch_policy(const char *prog, const char *flag, const char *v,
                     int *out);

/* A server's stop signals: SIGINT and SIGTERM blocked and delivered to the
 * returned signalfd (non-blocking, close-on-exec) for a loop to watch,
 * SIGPIPE ignored.  Call before starting threads, which inherit the mask.
 * Prints why and returns -1 when the signalfd cannot be made. */
int cli_stop_fd(const char *prog);

/* The monotonic clock, in nanoseconds. */
uint64_t cli_now_ns(void);
/* CPU time this process has used (user and system, every thread), in
 * seconds. */
double cli_cpu_s(void);

/* Pins the whole process to one CPU; prints why not and returns -1. */
int cli_pin(const char *prog, long cpu);

#endif /* URSA_APPS_CLI_H */
