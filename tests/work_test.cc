// work_test.cc - the work pool: functions run on pool threads and call
// back on the loop's thread with byte-exact results, cancel takes queued
// work off the pool (never a running one), the pool's size comes from the
// option or the environment and shrinks, and bad arguments are refused;
// on both backends.
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/testutil.h"

namespace {

uint32_t Fnv(const std::vector<unsigned char> &b) {
  uint32_t h = 2166136261u;
  for (unsigned char c : b) h = (h ^ c) * 16777619u;
  return h;
}

std::vector<unsigned char> Pattern(size_t len, unsigned seed) {
  std::vector<unsigned char> b(len);
  for (size_t i = 0; i < len; i++) b[i] = (unsigned char)(i * 31 + seed * 7);
  return b;
}

struct Job {
  ursa_work w{};
  unsigned seed = 0;
  std::vector<unsigned char> in;  // filled on the pool thread
  uint32_t sum = 0;
  pthread_t ran_on{}, called_on{};
  bool ran = false;
  int status = 1;
  int calls = 0;
};

void Checksum(ursa_work *w) {
  auto *j = reinterpret_cast<Job *>(w);
  j->in = Pattern(65536, j->seed);
  j->sum = Fnv(j->in);
  j->ran_on = pthread_self();
  j->ran = true;
}

void Done(ursa_work *w, int status) {
  auto *j = reinterpret_cast<Job *>(w);
  j->status = status;
  j->calls++;
  j->called_on = pthread_self();
}

class Work : public ::testing::TestWithParam<ursa_backend> {
 protected:
  void SetUp() override { ASSERT_EQ(0, ursa_work_pool_size(4)); }
};

TEST_P(Work, RunsOnAPoolThreadAndCallsBackOnTheLoop) {
  ursa_loop_options o = t::OptionsFor(GetParam());
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  std::vector<Job> jobs(32);
  for (unsigned i = 0; i < jobs.size(); i++) {
    jobs[i].seed = i;
    ASSERT_EQ(0, ursa_work_queue(lp.get(), &jobs[i].w, Checksum, Done));
  }
  EXPECT_GE(ursa_loop_alive(lp.get()), 32u) << "queued work is active";
  EXPECT_EQ(-EBUSY, ursa_loop_close(lp.get()));
  ASSERT_TRUE(lp.RunUntil([&] {
    for (auto &j : jobs)
      if (!j.calls) return false;
    return true;
  }));
  for (unsigned i = 0; i < jobs.size(); i++) {
    EXPECT_EQ(1, jobs[i].calls) << i;
    EXPECT_EQ(0, jobs[i].status) << i;
    EXPECT_TRUE(jobs[i].ran) << i;
    EXPECT_EQ(65536u, jobs[i].in.size()) << i;
    EXPECT_EQ(Fnv(Pattern(65536, i)), jobs[i].sum) << i;
    EXPECT_FALSE(pthread_equal(jobs[i].ran_on, pthread_self())) << i;
    EXPECT_TRUE(pthread_equal(jobs[i].called_on, pthread_self())) << i;
    EXPECT_EQ(-ENOENT, ursa_work_cancel(&jobs[i].w)) << "called back";
  }
  unsigned running = 0;
  EXPECT_EQ(4u, ursa_work_pool_threads(&running));
  EXPECT_GE(running, 1u);
  EXPECT_LE(running, 4u) << "never more threads than the pool's size";
  // A request may be queued again from the start once called back.
  Job again;
  again.seed = 99;
  ASSERT_EQ(0, ursa_work_queue(lp.get(), &again.w, Checksum, Done));
  ASSERT_TRUE(lp.RunUntil([&] { return again.calls > 0; }));
  EXPECT_EQ(Fnv(Pattern(65536, 99)), again.sum);
  lp.Finish();
}

// One thread, held by a blocker: the work behind it is queued, and a
// cancel takes it off the pool (its function never runs, its callback
// gets -ECANCELED); the blocker itself is running and cannot be.  The
// rest runs in the order queued.
std::atomic<bool> release_blocker;
std::atomic<bool> blocker_started;
std::mutex order_mu;
std::vector<unsigned> order;

void Blocker(ursa_work *) {
  blocker_started = true;
  while (!release_blocker.load()) std::this_thread::yield();
}

void Record(ursa_work *w) {
  std::lock_guard<std::mutex> g(order_mu);
  order.push_back(reinterpret_cast<Job *>(w)->seed);
  reinterpret_cast<Job *>(w)->ran = true;
}

TEST_P(Work, CancelTakesQueuedWorkOffThePool) {
  ASSERT_EQ(0, ursa_work_pool_size(1));
  ursa_loop_options o = t::OptionsFor(GetParam());
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  release_blocker = false;
  blocker_started = false;
  order.clear();
  Job blocker;
  ASSERT_EQ(0, ursa_work_queue(lp.get(), &blocker.w, Blocker, Done));
  auto t0 = std::chrono::steady_clock::now();
  while (!blocker_started.load() &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5))
    std::this_thread::yield();
  ASSERT_TRUE(blocker_started.load());
  std::vector<Job> jobs(6);
  for (unsigned i = 0; i < jobs.size(); i++) {
    jobs[i].seed = i;
    ASSERT_EQ(0, ursa_work_queue(lp.get(), &jobs[i].w, Record, Done));
  }
  EXPECT_EQ(-EBUSY, ursa_work_queue(lp.get(), &jobs[0].w, Record, Done))
      << "queued twice";
  EXPECT_EQ(0, ursa_work_cancel(&jobs[2].w));
  EXPECT_EQ(0, ursa_cancel(lp.get(), &jobs[4].w.op));
  EXPECT_EQ(-EALREADY, ursa_work_cancel(&jobs[2].w));
  EXPECT_EQ(-EBUSY, ursa_work_cancel(&blocker.w)) << "it is running";
  release_blocker = true;
  ASSERT_TRUE(lp.RunUntil([&] {
    for (auto &j : jobs)
      if (!j.calls) return false;
    return blocker.calls > 0;
  }));
  EXPECT_EQ(0, blocker.status);
  for (unsigned i = 0; i < jobs.size(); i++) {
    bool cancelled = i == 2 || i == 4;
    EXPECT_EQ(1, jobs[i].calls) << i;
    EXPECT_EQ(cancelled ? -ECANCELED : 0, jobs[i].status) << i;
    EXPECT_EQ(!cancelled, jobs[i].ran) << i;
  }
  EXPECT_EQ((std::vector<unsigned>{0, 1, 3, 5}), order);
  lp.Finish();
}

TEST_P(Work, BadArgumentsAreRefused) {
  ursa_loop_options o = t::OptionsFor(GetParam());
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  Job j;
  EXPECT_EQ(-EINVAL, ursa_work_queue(nullptr, &j.w, Checksum, Done));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "NULL loop"));
  EXPECT_EQ(-EINVAL, ursa_work_queue(lp.get(), nullptr, Checksum, Done));
  EXPECT_EQ(-EINVAL, ursa_work_queue(lp.get(), &j.w, nullptr, Done));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "NULL fn"));
  EXPECT_EQ(-EINVAL, ursa_work_queue(lp.get(), &j.w, Checksum, nullptr));
  EXPECT_EQ(-EINVAL, ursa_work_cancel(nullptr));
  EXPECT_EQ(-ENOENT, ursa_work_cancel(&j.w)) << "never queued";
  EXPECT_EQ(-EINVAL, ursa_work_pool_size(0));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "0 threads"))
      << ursa_error_detail();
  EXPECT_EQ(-EINVAL, ursa_work_pool_size(1025));
  EXPECT_EQ(0u, ursa_loop_alive(lp.get())) << "nothing was queued";
  lp.Finish();
}

INSTANTIATE_TEST_SUITE_P(Backends, Work, ::testing::ValuesIn(t::kBackends),
                         t::BackendName);

// Threads above a smaller size end once idle.
TEST(WorkPool, ShrinkingEndsIdleThreads) {
  ASSERT_EQ(0, ursa_work_pool_size(3));
  t::Loop lp;
  ASSERT_EQ(0, lp.status());
  release_blocker = false;
  std::vector<Job> jobs(3);
  for (auto &j : jobs)
    ASSERT_EQ(0, ursa_work_queue(lp.get(), &j.w, Blocker, Done));
  unsigned running = 0;
  auto t0 = std::chrono::steady_clock::now();
  while (ursa_work_pool_threads(&running), running < 3) {
    ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
    std::this_thread::yield();
  }
  release_blocker = true;
  ASSERT_TRUE(lp.RunUntil([&] {
    for (auto &j : jobs)
      if (!j.calls) return false;
    return true;
  }));
  ASSERT_EQ(0, ursa_work_pool_size(1));
  EXPECT_EQ(1u, ursa_work_pool_threads(nullptr));
  t0 = std::chrono::steady_clock::now();
  while (ursa_work_pool_threads(&running), running > 1) {
    ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5))
        << running << " threads still run";
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(1u, running);
  ASSERT_EQ(0, ursa_work_pool_size(4));
  lp.Finish();
}

// URSA_WORK_THREADS sizes a pool that nothing sized before it: each case
// runs in a fresh process (a death test re-runs this binary), whose exit
// code says what it saw.
int SizeSeenWithEnv() {
  ursa_loop *loop = nullptr;
  if (ursa_loop_new(&loop, nullptr) != 0) return 100;
  release_blocker = false;
  std::vector<Job> jobs(6);
  for (auto &j : jobs)
    if (ursa_work_queue(loop, &j.w, Blocker, Done) != 0) return 101;
  unsigned running = 0;
  for (int i = 0; i < 200; i++) {  // up to 0.2 s for threads to start
    ursa_work_pool_threads(&running);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  release_blocker = true;
  while (ursa_loop_run(loop, URSA_RUN_ONCE) > 0) {
  }
  if (ursa_loop_close(loop) != 0) return 102;
  return (int)running;
}

int BadEnvRefused() {
  ursa_loop *loop = nullptr;
  if (ursa_loop_new(&loop, nullptr) != 0) return 100;
  Job j;
  int r = ursa_work_queue(loop, &j.w, Checksum, Done);
  bool named = strstr(ursa_error_detail(), "URSA_WORK_THREADS=lots") != nullptr;
  bool zero = ursa_work_pool_threads(nullptr) == 0;
  ursa_loop_close(loop);
  return r == -EINVAL && named && zero ? 0 : 1;
}

TEST(WorkPoolEnv, TheEnvironmentSizesThePool) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  setenv("URSA_WORK_THREADS", "2", 1);
  EXPECT_EXIT(exit(SizeSeenWithEnv()), ::testing::ExitedWithCode(2), "");
  setenv("URSA_WORK_THREADS", "lots", 1);
  EXPECT_EXIT(exit(BadEnvRefused()), ::testing::ExitedWithCode(0), "");
  unsetenv("URSA_WORK_THREADS");
}

}  // namespace
