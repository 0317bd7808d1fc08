/* addr_fuzz.c - libFuzzer target: any text into ursa_addr_parse; what
 * parses must format and parse back to the same address. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ursa/ursa.h"

/* Names would go to the resolver: slow, and not the parser's code. */
static int would_resolve(const char *s) {
  if (!strncmp(s, "unix:", 5) || s[0] == '[') return 0;
  for (const char *p = s; *p && *p != ':'; p++)
    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')) return 1;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 300) return 0;
  char text[301];
  memcpy(text, data, size);
  text[size] = '\0';
  if (would_resolve(text)) return 0;
  ursa_addr a;
  if (ursa_addr_parse(text, &a) != 0) {
    if (!ursa_error_detail()[0]) abort(); /* every refusal names a reason */
    return 0;
  }
  char out[300];
  int n = ursa_addr_format((struct sockaddr *)&a.ss, a.len, out, sizeof(out));
  if (n < 0 || (size_t)n >= sizeof(out)) abort();
  ursa_addr b;
  if (ursa_addr_parse(out, &b) != 0) abort();
  if (a.len != b.len || memcmp(&a.ss, &b.ss, a.len) != 0) abort();
  return 0;
}
