// timer_test.cc - timers: expiry, repetition, stop and cancel.
#include <errno.h>

#include "tests/testutil.h"

namespace {

struct Fired {
  ursa_timer t{};
  int calls = 0;
  int last = 1;
  uint64_t at = 0;
  int stop_after = 0;
};

void OnFire(ursa_timer *tm, int status) {
  auto *f = static_cast<Fired *>(tm->data);
  f->calls++;
  f->last = status;
  f->at = ursa_loop_now(tm->loop);
  if (f->stop_after && f->calls == f->stop_after) ursa_timer_stop(tm);
}

class Timer : public ::testing::TestWithParam<t::Variant> {
 protected:
  void SetUp() override {
    opts_.disable = GetParam().disable;
    opts_.direct_files = GetParam().direct_files;
    opts_.zc_threshold = GetParam().zc_threshold;
    lp_.reset(new t::Loop(&opts_));
    ASSERT_EQ(0, lp_->status());
  }
  void TearDown() override { lp_->Finish(); }
  ursa_loop *loop() { return lp_->get(); }
  ursa_loop_options opts_{};
  std::unique_ptr<t::Loop> lp_;
};

TEST_P(Timer, FiresAfterItsTimeout) {
  Fired f;
  f.t.data = &f;
  uint64_t t0 = ursa_loop_now(loop());
  ASSERT_EQ(0, ursa_timer_start(loop(), &f.t, 50, 0, OnFire));
  EXPECT_EQ(-EBUSY, ursa_timer_start(loop(), &f.t, 50, 0, OnFire));
  EXPECT_EQ(0, ursa_loop_run(loop(), URSA_RUN_DEFAULT));
  EXPECT_EQ(1, f.calls);
  EXPECT_EQ(0, f.last);
  EXPECT_GE(f.at - t0, 49u);
  EXPECT_LT(f.at - t0, 2000u);
  // Finished: cancel and stop are refused.
  EXPECT_EQ(-ENOENT, ursa_timer_stop(&f.t));
  EXPECT_EQ(-ENOENT, ursa_cancel(loop(), &f.t.op));
}

TEST_P(Timer, RepeatsUntilStopped) {
  Fired f;
  f.t.data = &f;
  f.stop_after = 4;
  ASSERT_EQ(0, ursa_timer_start(loop(), &f.t, 5, 5, OnFire));
  EXPECT_EQ(0, ursa_loop_run(loop(), URSA_RUN_DEFAULT));
  EXPECT_EQ(5, f.calls) << "four expiries and one cancelled call";
  EXPECT_EQ(-ECANCELED, f.last);
}

TEST_P(Timer, StopGivesOneCancelledCallback) {
  Fired f;
  f.t.data = &f;
  ASSERT_EQ(0, ursa_timer_start(loop(), &f.t, 60000, 0, OnFire));
  ASSERT_EQ(0, ursa_timer_stop(&f.t));
  EXPECT_EQ(0, ursa_timer_stop(&f.t)) << "a second stop while pending";
  EXPECT_EQ(0, ursa_loop_run(loop(), URSA_RUN_DEFAULT));
  EXPECT_EQ(1, f.calls);
  EXPECT_EQ(-ECANCELED, f.last);
}

TEST_P(Timer, ManyTimersFireInDeadlineOrder) {
  const int kTimers = 100;
  std::vector<Fired> fs(kTimers);
  static std::vector<int> order;
  order.clear();
  for (int i = 0; i < kTimers; i++) {
    fs[i].t.data = &fs[i];
    ASSERT_EQ(0, ursa_timer_start(loop(), &fs[i].t,
                                  (uint64_t)(kTimers - i) * 2, 0,
                                  [](ursa_timer *tm, int st) {
                                    EXPECT_EQ(0, st);
                                    order.push_back(
                                        static_cast<Fired *>(tm->data)->calls++);
                                    static_cast<Fired *>(tm->data)->at =
                                        ursa_loop_now(tm->loop);
                                  }));
  }
  EXPECT_EQ(0, ursa_loop_run(loop(), URSA_RUN_DEFAULT));
  ASSERT_EQ((size_t)kTimers, order.size());
  for (int i = 1; i < kTimers; i++) EXPECT_LE(fs[i].at, fs[i - 1].at);
}

TEST_P(Timer, RestartsFromItsOwnCallback) {
  Fired f;
  f.t.data = &f;
  ASSERT_EQ(0, ursa_timer_start(loop(), &f.t, 1, 0, [](ursa_timer *tm, int) {
              auto *ff = static_cast<Fired *>(tm->data);
              if (++ff->calls < 3) {
                EXPECT_EQ(0, ursa_timer_start(tm->loop, tm, 1, 0, tm->cb));
              }
            }));
  EXPECT_EQ(0, ursa_loop_run(loop(), URSA_RUN_DEFAULT));
  EXPECT_EQ(3, f.calls);
}

INSTANTIATE_TEST_SUITE_P(Rings, Timer,
                         ::testing::ValuesIn(t::kVariants,
                                             t::kVariants + t::kNumVariants),
                         t::VariantName);

}  // namespace
