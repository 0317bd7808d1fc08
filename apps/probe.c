/* probe.c - ursa-probe: what io_uring offers on this machine, which
 * backend a default ursa loop gets and why, and what it uses, as text or
 * (--json) JSON.  Exit 0 when a loop can be made (on either backend). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ursa/ursa.h"

int main(int argc, char **argv) {
  int json = argc > 1 && !strcmp(argv[1], "--json");
  if (argc > 1 && !json) {
    fprintf(stderr, "usage: ursa-probe [--json]\n");
    return 2;
  }
  ursa_features f;
  ursa_loop *loop;
  int r = ursa_loop_new(&loop, NULL);
  if (r == 0) {
    ursa_loop_features(loop, &f);
    ursa_loop_close(loop);
  } else {
    ursa_probe(&f);
    if (!f.setup_error) f.setup_error = r;
  }
  int n = ursa_features_format(&f, json, NULL, 0);
  char *buf = malloc((size_t)n + 1);
  if (!buf) return 1;
  ursa_features_format(&f, json, buf, (size_t)n + 1);
  printf("%s%s", buf, json ? "\n" : "");
  free(buf);
  return r == 0 ? 0 : 1;
}
