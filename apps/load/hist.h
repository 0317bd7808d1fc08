/* hist.h - a latency histogram with log-linear buckets: 128 sub-buckets per
 * power of two, so any recorded value is reported within 1% (HDR-style). */
#ifndef URSA_APPS_HIST_H
#define URSA_APPS_HIST_H

#include <stdint.h>
#include <string.h>

#define HIST_SUB 128u /* values below 2 * HIST_SUB are exact */
#define HIST_BUCKETS (2 * HIST_SUB + 48 * HIST_SUB)

typedef struct hist {
  uint64_t counts[HIST_BUCKETS];
  uint64_t n;
  uint64_t max;
} hist;

static inline unsigned hist_index(uint64_t v) {
  if (v < 2 * HIST_SUB) return (unsigned)v;
  unsigned msb = 63u - (unsigned)__builtin_clzll(v);
  unsigned shift = msb - 7u; /* v >> shift lands in [128, 255] */
  unsigned idx = 2 * HIST_SUB + (shift - 1u) * HIST_SUB +
                 (unsigned)((v >> shift) - HIST_SUB);
  return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* The middle of the values bucket idx holds. */
static inline uint64_t hist_value(unsigned idx) {
  if (idx < 2 * HIST_SUB) return idx;
  unsigned shift = (idx - 2 * HIST_SUB) / HIST_SUB + 1u;
  uint64_t base = (uint64_t)(HIST_SUB + (idx - 2 * HIST_SUB) % HIST_SUB)
                  << shift;
  return base + ((1ull << shift) >> 1);
}

static inline void hist_add(hist *h, uint64_t v) {
  h->counts[hist_index(v)]++;
  h->n++;
  if (v > h->max) h->max = v;
}

static inline void hist_merge(hist *into, const hist *from) {
  for (unsigned i = 0; i < HIST_BUCKETS; i++) into->counts[i] += from->counts[i];
  into->n += from->n;
  if (from->max > into->max) into->max = from->max;
}

/* The value at quantile q (0..1); 0 for an empty histogram. */
static inline uint64_t hist_quantile(const hist *h, double q) {
  if (!h->n) return 0;
  uint64_t rank = (uint64_t)(q * (double)h->n);
  if (rank >= h->n - 1) return h->max; /* the top is known exactly */
  uint64_t seen = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen > rank) {
      uint64_t v = hist_value(i);
      return v > h->max ? h->max : v;
    }
  }
  return h->max;
}

#endif /* URSA_APPS_HIST_H */
