/* probe.c - ursa-probe: what io_uring offers on this machine, which
 * backend a default ursa loop gets and why, what it uses, and whether the
 * kernel could take TLS keys (kTLS), as text or (--json) JSON.  Exit 0
 * when a loop can be made (on either backend). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ursa/tls.h"
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
  char why[256];
  int ktls = ursa_tls_ktls(why, sizeof(why));
  if (json) {
    /* One object: kTLS goes in before its closing brace. */
    size_t len = strlen(buf);
    while (len && buf[len - 1] != '}') len--;
    if (len) buf[len - 1] = '\0';
    for (char *p = why; *p; p++)
      if (*p == '"' || *p == '\\') *p = '\'';
    printf("%s,\"ktls\":{\"available\":%s,\"why\":\"%s\"}}\n", buf,
           ktls ? "true" : "false", why);
  } else {
    printf("%s%s\n", buf, why);
  }
  free(buf);
  return r == 0 ? 0 : 1;
}
