// hist_test.cc - ursa-load's latency histogram reports every value within
// 1% and its quantiles from the right bucket.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "apps/load/hist.h"

namespace {

TEST(Hist, EveryValueComesBackWithinOnePercent) {
  std::mt19937_64 rng(5);
  for (int i = 0; i < 200000; i++) {
    uint64_t v = rng() >> (rng() % 60);  // spread over many magnitudes
    if (v > (1ull << 45)) v >>= 10;
    uint64_t back = hist_value(hist_index(v));
    double err = v ? std::fabs((double)back - (double)v) / (double)v : 0;
    ASSERT_LE(err, 0.01) << v << " came back as " << back;
  }
  for (uint64_t v = 0; v < 256; v++) EXPECT_EQ(v, hist_value(hist_index(v)));
}

TEST(Hist, QuantilesMatchTheSortedValues) {
  static hist h;  // large: off the stack
  h = hist{};
  std::mt19937_64 rng(9);
  std::lognormal_distribution<double> d(11.0, 1.0);  // ~60 us, long tail
  std::vector<uint64_t> vs;
  for (int i = 0; i < 100000; i++) {
    uint64_t v = (uint64_t)d(rng);
    vs.push_back(v);
    hist_add(&h, v);
  }
  std::sort(vs.begin(), vs.end());
  for (double q : {0.5, 0.9, 0.99, 0.999}) {
    uint64_t want = vs[(size_t)(q * vs.size())];
    uint64_t got = hist_quantile(&h, q);
    EXPECT_NEAR((double)got, (double)want, 0.01 * (double)want) << q;
  }
  EXPECT_EQ(vs.back(), h.max);
  EXPECT_EQ(vs.back(), hist_quantile(&h, 1.0));
  hist empty{};
  EXPECT_EQ(0u, hist_quantile(&empty, 0.5));
}

}  // namespace
