// batch_test.cc - the batch policy (ursa_loop_options.batch_policy) on an
// echo server whose clients are plain blocking sockets on a thread of
// their own, so that the loop idles between their messages as it does
// behind an outside client: URSA_BATCH_AUTO batches a burst from many
// peers, never batches for a few, backs off when arrivals are sparse, and
// every echo comes back byte-exact under each policy.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "tests/testutil.h"

namespace {

constexpr size_t kMsg = 64;

// One client thread's traffic: rounds of one message on each of `burst`
// sockets (rotating over all of them), then every echo read back and
// compared; `gap_us` of sleep after each round.
struct Traffic {
  int conns;
  int burst;
  int rounds;
  int gap_us;
};

struct Result {
  ursa_stats st{};
  uint32_t used = 0; /* URSA_FEAT_* the loop used */
  uint64_t messages = 0;
  bool exact = true;
  std::string what;
};

Result RunEcho(ursa_batch_policy policy, const Traffic &tr,
               uint32_t enable = 0) {
  Result res;
  ursa_loop_options o{};
  o.backend = URSA_BACKEND_URING;
  o.batch_policy = policy;
  o.enable = enable;
  t::Loop lp(&o);
  EXPECT_EQ(0, lp.status());
  if (lp.status()) return res;
  ursa_features f;
  ursa_loop_features(lp.get(), &f);
  res.used = f.used;
  t::EchoServer srv(lp.get(), AF_INET);
  std::vector<int> fds;
  for (int i = 0; i < tr.conns; i++) {
    int fd = t::BlockingConnect(srv.addr(), srv.addrlen());
    EXPECT_GE(fd, 0);
    if (fd < 0) break;
    fds.push_back(fd);
  }
  EXPECT_TRUE(lp.RunUntil([&] { return srv.accepted == tr.conns; }));
  ursa_stats before;
  ursa_loop_stats(lp.get(), &before);
  std::atomic<bool> done{false};
  std::thread client([&] {
    int next = 0;
    for (int r = 0; r < tr.rounds && res.exact; r++) {
      std::vector<std::vector<char>> sent;
      std::vector<int> used;
      for (int b = 0; b < tr.burst; b++) {
        int i = next++ % (int)fds.size();
        sent.push_back(t::RandomBytes(kMsg, (uint32_t)(r * 1000 + b)));
        used.push_back(fds[i]);
        if (!t::WriteAll(fds[i], sent.back().data(), kMsg)) {
          res.exact = false;
          res.what = "write failed";
        }
      }
      for (size_t b = 0; b < used.size() && res.exact; b++) {
        std::vector<char> got(kMsg);
        if (!t::ReadExactly(used[b], got.data(), kMsg) || got != sent[b]) {
          res.exact = false;
          res.what = "round " + std::to_string(r) + " message " +
                     std::to_string(b) + ": echo differs or ended";
        }
        res.messages++;
      }
      if (tr.gap_us) usleep((useconds_t)tr.gap_us);
    }
    done = true;
    // Wakes the loop, which may be waiting with nothing more to come.
    shutdown(fds[0], SHUT_WR);
  });
  bool ran = lp.RunUntil([&] { return done.load(); }, 60000);
  client.join();
  EXPECT_TRUE(ran);
  ursa_stats after;
  ursa_loop_stats(lp.get(), &after);
  res.st = after;
  res.st.enters -= before.enters;
  res.st.batch_waits -= before.batch_waits;
  res.st.batch_short -= before.batch_short;
  res.st.cqes -= before.cqes;
  for (int fd : fds) close(fd);
  srv.Close();
  EXPECT_TRUE(lp.RunUntil([&] { return srv.closed(); }));
  return res;
}

// The kernel offers feat (URSA_FEAT_*).
bool KernelHas(uint32_t feat) {
  ursa_features f;
  return ursa_probe(&f) == 0 && (f.kernel & feat);
}

// The registered wait region (URSA_FEAT_REG_WAIT, opt-in): a loop asked
// for it uses it, every batched wait reads its argument from it (a wrong
// offset or size would fail the enter, and the loop with it), and every
// echo comes back whole; disabling it wins over enabling it.
TEST(Batch, RegisteredWaitRegionCarriesTheWaits) {
  if (!KernelHas(URSA_FEAT_REG_WAIT))
    GTEST_SKIP() << "the kernel has no wait regions (6.13)";
  Traffic tr{64, 32, 100, 0};
  Result a = RunEcho(URSA_BATCH_ALWAYS, tr, URSA_FEAT_REG_WAIT);
  EXPECT_TRUE(a.used & URSA_FEAT_REG_WAIT);
  EXPECT_TRUE(a.exact) << a.what;
  EXPECT_EQ(3200u, a.messages);
  EXPECT_GT(a.st.batch_waits, 0u);
  Result d = RunEcho(URSA_BATCH_AUTO, tr, 0);
  EXPECT_FALSE(d.used & URSA_FEAT_REG_WAIT) << "opt-in";
  EXPECT_TRUE(d.exact) << d.what;
  ursa_loop_options o{};
  o.backend = URSA_BACKEND_URING;
  o.enable = o.disable = URSA_FEAT_REG_WAIT;
  t::Loop off(&o);
  ASSERT_EQ(0, off.status());
  ursa_features f;
  ursa_loop_features(off.get(), &f);
  EXPECT_FALSE(f.used & URSA_FEAT_REG_WAIT) << "disable wins";
}

// A timed wait through the region keeps its bound: a 30 ms timer on an
// otherwise idle loop fires once, not before its time, on both the plain
// and the batched path.
TEST(Batch, RegisteredWaitRegionKeepsTimers) {
  if (!KernelHas(URSA_FEAT_REG_WAIT))
    GTEST_SKIP() << "the kernel has no wait regions (6.13)";
  for (ursa_batch_policy pol : {URSA_BATCH_NEVER, URSA_BATCH_ALWAYS}) {
    ursa_loop_options o{};
    o.backend = URSA_BACKEND_URING;
    o.enable = URSA_FEAT_REG_WAIT;
    o.batch_policy = pol;
    t::Loop lp(&o);
    ASSERT_EQ(0, lp.status());
    struct Fired {
      int count = 0;
      std::chrono::steady_clock::time_point at;
    } fired;
    ursa_timer timer{};
    timer.data = &fired;
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_EQ(0, ursa_timer_start(lp.get(), &timer, 30, 0,
                                  [](ursa_timer *tm, int status) {
                                    auto *f = static_cast<Fired *>(tm->data);
                                    EXPECT_EQ(0, status);
                                    f->count++;
                                    f->at = std::chrono::steady_clock::now();
                                  }));
    EXPECT_TRUE(lp.RunUntil([&] { return fired.count > 0; }, 5000));
    EXPECT_EQ(1, fired.count);
    EXPECT_GE(fired.at - t0, std::chrono::milliseconds(30)) << "early";
    lp.Finish();
  }
}

// Four peers, each waiting on its echo before it sends again: a batch
// would hold back the peers the loop's answers wait for (lockstep), so the
// adaptive policy never asks for one, and ALWAYS does.
TEST(Batch, AutoNeverBatchesForFewPeers) {
  if (!KernelHas(URSA_FEAT_MIN_WAIT))
    GTEST_SKIP() << "the kernel has no min-wait (6.12)";
  Traffic tr{4, 4, 300, 0};
  Result a = RunEcho(URSA_BATCH_AUTO, tr);
  EXPECT_TRUE(a.exact) << a.what;
  EXPECT_EQ(1200u, a.messages);
  EXPECT_EQ(0u, a.st.batch_waits) << "5 handles: below the policy's 8";
  Result al = RunEcho(URSA_BATCH_ALWAYS, tr);
  EXPECT_TRUE(al.exact) << al.what;
  EXPECT_GT(al.st.batch_waits, 0u) << "ALWAYS batches whatever the peers";
}

// Bursts of 32 messages from 64 peers while the loop idles in between: the
// adaptive policy batches them (fewer enters than messages by far), and
// NEVER makes no batched wait at all.
TEST(Batch, AutoBatchesBurstsFromManyPeers) {
  if (!KernelHas(URSA_FEAT_MIN_WAIT))
    GTEST_SKIP() << "the kernel has no min-wait (6.12)";
  Traffic tr{64, 32, 150, 0};
  Result a = RunEcho(URSA_BATCH_AUTO, tr);
  EXPECT_TRUE(a.exact) << a.what;
  EXPECT_EQ(4800u, a.messages);
  EXPECT_GT(a.st.batch_waits, 0u);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  // Under ThreadSanitizer the client thread writes a burst slowly enough
  // that a fifth of the batches end short, and the policy rightly backs
  // off (a short batch idles the loop for batch_wait_us); the count holds
  // for the uninstrumented loop.
  EXPECT_LT(a.st.enters * 2, a.messages)
      << a.st.enters << " enters for " << a.messages << " messages, "
      << a.st.batch_waits << " batched (" << a.st.batch_short << " short)";
#endif
  Result n = RunEcho(URSA_BATCH_NEVER, tr);
  EXPECT_TRUE(n.exact) << n.what;
  EXPECT_EQ(0u, n.st.batch_waits);
  EXPECT_EQ(0u, n.st.batch_short);
}

// One message at a time, 1 ms apart, over 64 peers: every batched wait ends
// short (its bound passes with one arrival), and the adaptive policy backs
// off 1, 2, 4 ... waits after each, so only a handful of the waits batch
// (ALWAYS batches every one).
TEST(Batch, AutoBacksOffWhenArrivalsAreSparse) {
  if (!KernelHas(URSA_FEAT_MIN_WAIT))
    GTEST_SKIP() << "the kernel has no min-wait (6.12)";
  Traffic tr{64, 1, 120, 1000};
  Result a = RunEcho(URSA_BATCH_AUTO, tr);
  EXPECT_TRUE(a.exact) << a.what;
  EXPECT_EQ(120u, a.messages);
  EXPECT_GE(a.st.batch_short, 1u);
  // 120 messages make at least 240 waits: backing off 1, 2, 4 ... 128
  // after successive short batches leaves at most 8 of them batched, and
  // a stray full batch (two arrivals together) starts it over once.
  EXPECT_LE(a.st.batch_waits, 16u)
      << a.st.batch_waits << " batched waits of " << a.st.enters;
  Result al = RunEcho(URSA_BATCH_ALWAYS, tr);
  EXPECT_TRUE(al.exact) << al.what;
  EXPECT_GE(al.st.batch_waits, 100u) << "every wait asks for a batch";
}

}  // namespace
