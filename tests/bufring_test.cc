// bufring_test.cc - the buffer layer from inside: a completion's bytes
// handed out as slices, a buffer out of ring order refused, keeping a
// buffer past its callback, and the cap on kept buffers.  Completions are
// made up as the kernel would post them (the buffer at the ring's head, its
// id in the flags); no receive is armed, so the kernel never reads the
// ring.
#include <errno.h>
#include <string.h>

#include <set>

#include "lib/src/buffers/bufring.h"
#include "tests/testutil.h"

namespace {

// A completion of n bytes in the buffer at the head of ring r.
uint32_t Fill(ursa__bufring *r, unsigned n, char byte) {
  unsigned bid = r->br->bufs[r->head & (unsigned)r->mask].bid;
  memset(ursa__buf_addr(r, bid), byte, n < r->size ? n : r->size);
  return IORING_CQE_F_BUFFER | (bid << IORING_CQE_BUFFER_SHIFT);
}

uint64_t BufsOut(ursa_loop *loop) {
  ursa_stats st;
  ursa_loop_stats(loop, &st);
  return st.bufs_out;
}

class Bufring : public ::testing::TestWithParam<ursa_backend> {
 protected:
  void SetUp() override {
    ursa_loop_options o = t::OptionsFor(GetParam());
    o.buf_count = 8;
    o.buf_size = 4096;
    o.buf_keep_max = 2;
    lp_.reset(new t::Loop(&o));
    ASSERT_EQ(0, lp_->status());
  }
  void TearDown() override { lp_->Finish(); }
  ursa_loop *loop() { return lp_->get(); }
  ursa__bufring *ring() { return &loop()->bufs->rings[0]; }
  std::unique_ptr<t::Loop> lp_;
};

TEST_P(Bufring, APlainCompletionIsOneSliceOfOneBuffer) {
  uint32_t cf = Fill(ring(), 100, 'a');
  ursa__slices it;
  ASSERT_TRUE(ursa__slices_begin(loop(), ring(), &it, 100, cf, false));
  ASSERT_TRUE(ursa__slices_next(loop(), &it));
  EXPECT_EQ(100u, it.len);
  EXPECT_EQ(ursa__buf_addr(ring(), cf >> IORING_CQE_BUFFER_SHIFT), it.data);
  EXPECT_EQ(std::string(100, 'a'), std::string(it.data, it.len));
  EXPECT_EQ(1u, BufsOut(loop())) << "lent while the callback runs";
  ursa__slice_done(loop(), &it);
  EXPECT_EQ(0u, BufsOut(loop())) << "back in the ring after it";
  EXPECT_FALSE(ursa__slices_next(loop(), &it));
}

TEST_P(Bufring, AResultLargerThanABufferIsCutToTheBuffer) {
  // A datagram cut short reports its whole length; the slice is the buffer.
  uint32_t cf = Fill(ring(), 4096, 'b');
  ursa__slices it;
  ASSERT_TRUE(ursa__slices_begin(loop(), ring(), &it, 5000, cf, false));
  ASSERT_TRUE(ursa__slices_next(loop(), &it));
  EXPECT_EQ(4096u, it.len);
  ursa__slice_done(loop(), &it);
  EXPECT_FALSE(ursa__slices_next(loop(), &it));
  EXPECT_EQ(0u, BufsOut(loop()));
}

TEST_P(Bufring, ABufferOutOfRingOrderIsRefused) {
  unsigned head_bid = ring()->br->bufs[ring()->head & ring()->mask].bid;
  unsigned other = (head_bid + 1) % ring()->count;
  ursa__slices it;
  EXPECT_FALSE(ursa__slices_begin(loop(), ring(), &it, 10,
                                  IORING_CQE_F_BUFFER |
                                      (other << IORING_CQE_BUFFER_SHIFT),
                                  false));
  EXPECT_FALSE(ursa__slices_begin(loop(), ring(), &it, 10,
                                  IORING_CQE_F_BUFFER |
                                      (99u << IORING_CQE_BUFFER_SHIFT),
                                  false))
      << "a buffer id past the ring";
  EXPECT_EQ(0u, BufsOut(loop()));
}

TEST_P(Bufring, AKeptBufferStaysOutUntilReleased) {
  EXPECT_EQ(-EINVAL, ursa_buf_keep(loop(), ring()->bufs))
      << "keeping outside a callback";
  uint32_t cf = Fill(ring(), 10, 'c');
  ursa__slices it;
  ASSERT_TRUE(ursa__slices_begin(loop(), ring(), &it, 10, cf, false));
  ASSERT_TRUE(ursa__slices_next(loop(), &it));
  EXPECT_EQ(-EINVAL, ursa_buf_keep(loop(), ring()->bufs + 4096 * 7 + 1))
      << "another buffer than the one lent";
  ASSERT_EQ(0, ursa_buf_keep(loop(), it.data + 3)) << "any pointer into it";
  EXPECT_EQ(-EALREADY, ursa_buf_keep(loop(), it.data));
  const char *kept = it.data;
  ursa__slice_done(loop(), &it);
  EXPECT_EQ(1u, BufsOut(loop())) << "a kept buffer went back to the ring";
  EXPECT_EQ('c', kept[9]) << "the kept bytes changed";
  ASSERT_EQ(0, ursa_buf_release(loop(), kept));
  EXPECT_EQ(0u, BufsOut(loop()));
  EXPECT_EQ(-EINVAL, ursa_buf_release(loop(), kept)) << "released twice";
  int local;
  EXPECT_EQ(-EINVAL, ursa_buf_release(loop(), &local));
}

// A ring holds URSA__RING_DEPTH entries at first (the rest are spares),
// a buffer given back is the next one in, so that completions taken one
// at a time reuse the same few buffers instead of cycling through all of
// them, and a starved ring doubles its depth up to every buffer.
TEST(BufringDepth, AStreamReusesFewBuffersAndStarvingDeepensTheRing) {
  ursa_loop_options o{};
  o.buf_count = 256;
  o.buf_size = 1024;
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  ursa__bufring *r = &lp.get()->bufs->rings[0];
  EXPECT_EQ(URSA__RING_DEPTH, r->depth);
  EXPECT_EQ(URSA__RING_DEPTH, (unsigned)(uint16_t)(r->tail - r->head));
  EXPECT_EQ(256u - URSA__RING_DEPTH, r->nspare);
  std::set<const char *> used;
  for (int i = 0; i < 1000; i++) {
    uint32_t cf = Fill(r, 100, (char)i);
    ursa__slices it;
    ASSERT_TRUE(ursa__slices_begin(lp.get(), r, &it, 100, cf, false)) << i;
    ASSERT_TRUE(ursa__slices_next(lp.get(), &it));
    ASSERT_EQ((char)i, it.data[99]);
    used.insert(it.data);
    ursa__slice_done(lp.get(), &it);
  }
  EXPECT_LE(used.size(), (size_t)URSA__RING_DEPTH + 1)
      << "1000 completions went through " << used.size() << " buffers";
  EXPECT_EQ(URSA__RING_DEPTH, (unsigned)(uint16_t)(r->tail - r->head));
  for (unsigned want = 64; want <= 256; want *= 2) {
    ursa__bufs_starved(lp.get());
    EXPECT_EQ(want, r->depth);
    EXPECT_EQ(want, (unsigned)(uint16_t)(r->tail - r->head));
  }
  ursa__bufs_starved(lp.get());
  EXPECT_EQ(256u, r->depth) << "never past its buffers";
  EXPECT_EQ(0u, r->nspare);
  lp.Finish();
}

// The pipe ring, made on first use: 64 KiB buffers, URSA__PIPE_DEPTH of
// them in the ring, so that reads taken one at a time land in the same
// few buffers; half of it at most may be kept.
TEST(BufringPipe, FewWarmBuffersAndHalfKeptAtMost) {
  ursa_loop_options o{};
  o.buf_keep_max = 64; /* not the cap here */
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  ursa__bufring *r = &lp.get()->bufs->rings[URSA__PIPE_RING];
  EXPECT_EQ(nullptr, r->br) << "made before any pipe read";
  ASSERT_EQ(0, ursa__bufring_pipe(lp.get()));
  ASSERT_EQ(0, ursa__bufring_pipe(lp.get())) << "a second call keeps it";
  EXPECT_EQ(URSA__PIPE_SIZE, r->size);
  EXPECT_EQ(URSA__PIPE_COUNT, r->count);
  EXPECT_EQ(URSA__PIPE_DEPTH, (unsigned)(uint16_t)(r->tail - r->head));
  std::set<const char *> used;
  for (int i = 0; i < 200; i++) {
    uint32_t cf = Fill(r, 65536, (char)i);
    ursa__slices it;
    ASSERT_TRUE(ursa__slices_begin(lp.get(), r, &it, 65536, cf, false)) << i;
    ASSERT_TRUE(ursa__slices_next(lp.get(), &it));
    ASSERT_EQ(65536u, it.len);
    ASSERT_EQ((char)i, it.data[65535]);
    used.insert(it.data);
    ursa__slice_done(lp.get(), &it);
  }
  EXPECT_LE(used.size(), (size_t)URSA__PIPE_DEPTH + 1)
      << "200 reads went through " << used.size() << " buffers";
  std::vector<const char *> kept;
  int refused = 0;
  for (unsigned i = 0; i < URSA__PIPE_COUNT / 2 + 1; i++) {
    uint32_t cf = Fill(r, 10, 'k');
    ursa__slices it;
    ASSERT_TRUE(ursa__slices_begin(lp.get(), r, &it, 10, cf, false));
    ASSERT_TRUE(ursa__slices_next(lp.get(), &it));
    int k = ursa_buf_keep(lp.get(), it.data);
    if (k == 0) kept.push_back(it.data);
    refused += k == -ENOBUFS;
    ursa__slice_done(lp.get(), &it);
    ursa__bufs_starved(lp.get()); /* as a read that found the ring empty */
  }
  EXPECT_EQ(URSA__PIPE_COUNT / 2, kept.size());
  EXPECT_EQ(1, refused);
  for (const char *k : kept) EXPECT_EQ(0, ursa_buf_release(lp.get(), k));
  EXPECT_EQ(0u, BufsOut(lp.get()));
  lp.Finish();
}

TEST_P(Bufring, KeepingIsCappedAtBufKeepMax) {
  const char *kept[3] = {};
  int results[3];
  for (int i = 0; i < 3; i++) {
    uint32_t cf = Fill(ring(), 8, (char)('x' + i));
    ursa__slices it;
    ASSERT_TRUE(ursa__slices_begin(loop(), ring(), &it, 8, cf, false));
    ASSERT_TRUE(ursa__slices_next(loop(), &it));
    results[i] = ursa_buf_keep(loop(), it.data);
    kept[i] = it.data;
    ursa__slice_done(loop(), &it);
  }
  EXPECT_EQ(0, results[0]);
  EXPECT_EQ(0, results[1]);
  EXPECT_EQ(-ENOBUFS, results[2]) << "over buf_keep_max (2)";
  EXPECT_EQ(2u, BufsOut(loop())) << "the refused one went back at once";
  ASSERT_EQ(0, ursa_buf_release(loop(), kept[0]));
  ASSERT_EQ(0, ursa_buf_release(loop(), kept[1]));
  EXPECT_EQ(0u, BufsOut(loop()));
}

INSTANTIATE_TEST_SUITE_P(Backends, Bufring,
                         ::testing::ValuesIn(t::kBackends, t::kBackends + 2),
                         t::BackendName);

}  // namespace
