// post_test.cc - ursa_post() from many threads and from other loops, stops
// from afar and from a signal handler, posts racing a loop's close, and the
// loop's memory kept by references.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <string.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "tests/testutil.h"

namespace {

struct Setup {
  const char *name;
  ursa_backend backend;
  uint32_t disable;
  uint32_t enable;
};
const Setup kSetups[] = {
    {"uring", URSA_BACKEND_URING, 0},
    // No SINGLE_ISSUER/DEFER_TASKRUN: MSG_RING lands as the kernel likes.
    {"uring_plain", URSA_BACKEND_URING,
     URSA_FEAT_DEFER_TASKRUN | URSA_FEAT_SINGLE_ISSUER},
    // Loop-to-loop posts wake by eventfd, as from a plain thread.
    {"uring_no_msg_ring", URSA_BACKEND_URING, URSA_FEAT_MSG_RING},
    // Posts from plain threads wake by a ring message sent without a ring
    // (6.13, opt-in), not by the eventfd.
    {"uring_sync_msg_ring", URSA_BACKEND_URING, 0, URSA_FEAT_SYNC_MSG_RING},
    {"epoll", URSA_BACKEND_EPOLL, 0},
};

std::string SetupName(const ::testing::TestParamInfo<Setup> &info) {
  return info.param.name;
}

ursa_loop_options OptionsOf(const Setup &s) {
  ursa_loop_options o{};
  o.backend = s.backend;
  o.disable = s.disable;
  o.enable = s.enable;
  return o;
}

ursa_stats Stats(ursa_loop *loop) {
  ursa_stats st;
  ursa_loop_stats(loop, &st);
  return st;
}

// Stops the loop from afar if the test has not ended it in time, so that a
// lost post fails the test instead of hanging it.
class Watchdog {
 public:
  Watchdog(ursa_loop *loop, int ms) : loop_(loop) {
    ursa_loop_retain(loop_);
    th_ = std::thread([this, ms] {
      auto until = std::chrono::steady_clock::now() +
                   std::chrono::milliseconds(ms);
      while (!done_.load() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      if (!done_.load()) {
        fired = true;
        ursa_loop_stop_async(loop_);
      }
    });
  }
  ~Watchdog() {
    done_ = true;
    th_.join();
    ursa_loop_release(loop_);
  }
  std::atomic<bool> fired{false};

 private:
  ursa_loop *loop_;
  std::atomic<bool> done_{false};
  std::thread th_;
};

class PostTest : public ::testing::TestWithParam<Setup> {
 protected:
  void SetUp() override {
    opts_ = OptionsOf(GetParam());
    ASSERT_EQ(0, ursa_loop_new(&loop_, &opts_)) << ursa_error_detail();
  }
  void TearDown() override {
    if (loop_) {
      EXPECT_EQ(0, ursa_loop_close(loop_)) << ursa_error_detail();
    }
  }
  // Runs the loop (held) until ok reaches 20,000 callbacks, stops it from
  // another thread and closes it while the posters still post.
  void RunThenCloseUnder(const std::atomic<long> &ok) {
    ursa_loop *loop = loop_;
    ursa_loop_hold(loop);
    std::thread stopper([&] {
      while (ok.load() < 20000) std::this_thread::yield();
      ursa_loop_stop_async(loop);
    });
    Watchdog *wd = new Watchdog(loop, 20000);
    ursa_loop_run(loop, URSA_RUN_DEFAULT);
    stopper.join();
    EXPECT_FALSE(wd->fired);
    delete wd;
    ursa_loop_unhold(loop);
    ASSERT_EQ(0, ursa_loop_close(loop));
    loop_ = nullptr;
  }
  ursa_loop_options opts_{};
  ursa_loop *loop_ = nullptr;
};

// ---- many plain threads at once ----

struct Tally {
  ursa_loop *loop;
  pthread_t loop_thread;
  int senders;
  std::vector<std::vector<int>> calls;  // [sender][i]: callbacks run
  std::vector<int> last;                // [sender]: last seq seen
  int out_of_order = 0;
  int wrong_thread = 0;
  int bad_status = 0;
  long total = 0, want = 0;
};

struct Item {
  ursa_post_req req{};
  Tally *t;
  int sender, seq;
};

void OnItem(ursa_post_req *req, int status) {
  Item *it = static_cast<Item *>(req->data);
  Tally *t = it->t;
  if (status != 0) t->bad_status++;
  if (!pthread_equal(pthread_self(), t->loop_thread)) t->wrong_thread++;
  t->calls[it->sender][it->seq]++;
  if (it->seq <= t->last[it->sender]) t->out_of_order++;
  t->last[it->sender] = it->seq;
  if (++t->total == t->want) {
    ursa_loop_unhold(t->loop);
    ursa_loop_stop(t->loop);
  }
}

TEST_P(PostTest, ManyThreadsPostingAtOnceLoseNothingAndRunOnTheLoop) {
  const int kSenders = 4, kEach = 5000;
  Tally t;
  t.loop = loop_;
  t.loop_thread = pthread_self();
  t.senders = kSenders;
  t.calls.assign(kSenders, std::vector<int>(kEach, 0));
  t.last.assign(kSenders, -1);
  t.want = (long)kSenders * kEach;
  std::vector<std::vector<Item>> items(kSenders, std::vector<Item>(kEach));
  for (int s = 0; s < kSenders; s++)
    for (int i = 0; i < kEach; i++) {
      items[s][i].t = &t;
      items[s][i].sender = s;
      items[s][i].seq = i;
      items[s][i].req.data = &items[s][i];
    }
  std::atomic<int> refused{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> th;
  for (int s = 0; s < kSenders; s++)
    th.emplace_back([&, s] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < kEach; i++)
        if (ursa_post(loop_, &items[s][i].req, OnItem) != 0) refused++;
    });
  ursa_loop_hold(loop_);
  Watchdog wd(loop_, 20000);
  go = true;
  int r = ursa_loop_run(loop_, URSA_RUN_DEFAULT);
  for (auto &x : th) x.join();
  EXPECT_FALSE(wd.fired) << "only " << t.total << " of " << t.want
                         << " posts ran in 20 s";
  if (wd.fired) {
    // Let the rest arrive so that nothing refers to items after the test.
    ursa_loop_run(loop_, URSA_RUN_NOWAIT);
  }
  EXPECT_GE(r, 0);
  EXPECT_EQ(0, refused.load());
  EXPECT_EQ(t.want, t.total);
  EXPECT_EQ(0, t.out_of_order);
  EXPECT_EQ(0, t.wrong_thread);
  EXPECT_EQ(0, t.bad_status);
  int not_once = 0;
  for (auto &v : t.calls)
    for (int c : v) not_once += c != 1;
  EXPECT_EQ(0, not_once);
  ursa_stats st = Stats(loop_);
  EXPECT_EQ((uint64_t)t.want, st.posts);
  EXPECT_GE(st.wakeups, 1u);
  EXPECT_LE(st.wakeups, st.posts);
}

// ---- coalescing, reuse, refusals ----

struct Counter {
  int ok = 0, cancelled = 0, other = 0;
};
void OnCount(ursa_post_req *req, int status) {
  Counter *c = static_cast<Counter *>(req->data);
  if (status == 0)
    c->ok++;
  else if (status == -ECANCELED)
    c->cancelled++;
  else
    c->other++;
}

TEST_P(PostTest, PostsMadeBeforeTheLoopWakesCostOneWakeUp) {
  const int kN = 1000;
  Counter c;
  std::vector<ursa_post_req> reqs(kN);
  for (auto &r : reqs) r.data = &c;
  std::thread([&] {
    for (auto &r : reqs) ASSERT_EQ(0, ursa_post(loop_, &r, OnCount));
  }).join();
  ursa_loop_hold(loop_);
  Watchdog wd(loop_, 10000);
  while (c.ok < kN && !wd.fired) ursa_loop_run(loop_, URSA_RUN_ONCE);
  ursa_loop_unhold(loop_);
  EXPECT_EQ(kN, c.ok);
  ursa_stats st = Stats(loop_);
  EXPECT_EQ(1u, st.wakeups) << "posts made while the loop slept coalesce";
  EXPECT_EQ((uint64_t)kN, st.posts);
}

// One post at a time from a plain thread, each waiting for its callback:
// every one wakes the loop.  With URSA_FEAT_SYNC_MSG_RING (asked for) the
// wake-up is a ring message, so the loop re-arms no eventfd read (no SQE
// per post); by eventfd it reads and re-arms one per post.
TEST_P(PostTest, EachPostFromAPlainThreadWakesTheLoopByItsPath) {
  const int kN = 200;
  Counter c;
  ursa_post_req req{};
  req.data = &c;
  ursa_features f;
  ursa_loop_features(loop_, &f);
  bool sync = f.used & URSA_FEAT_SYNC_MSG_RING;
  if (GetParam().enable & URSA_FEAT_SYNC_MSG_RING) {
    EXPECT_TRUE(sync) << "the kernel here (6.13 and later) has it";
  }
  ursa_stats before = Stats(loop_);
  std::atomic<int> seen{0};
  std::thread poster([&] {
    for (int i = 0; i < kN; i++) {
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (__atomic_load_n(&req.busy, __ATOMIC_ACQUIRE) &&
             std::chrono::steady_clock::now() < until)
        sched_yield();
      if (ursa_post(loop_, &req, OnCount) != 0) break;
      seen++;
      // Let the loop go back to sleep before the next one.
      usleep(200);
    }
  });
  ursa_loop_hold(loop_);
  Watchdog wd(loop_, 20000);
  while (c.ok < kN && !wd.fired) ursa_loop_run(loop_, URSA_RUN_ONCE);
  ursa_loop_unhold(loop_);
  poster.join();
  EXPECT_EQ(kN, seen.load());
  EXPECT_EQ(kN, c.ok);
  ursa_stats st = Stats(loop_);
  EXPECT_EQ((uint64_t)kN, st.posts - before.posts);
  uint64_t wakes = st.wakeups - before.wakeups;
  EXPECT_GE(wakes, (uint64_t)kN / 2) << "each post found the loop asleep";
  EXPECT_LE(wakes, (uint64_t)kN);
  if (GetParam().backend == URSA_BACKEND_URING) {
    uint64_t sqes = st.sqes - before.sqes;
    if (sync) {
      EXPECT_LT(sqes, (uint64_t)kN / 10) << "no eventfd read re-armed";
    } else {
      EXPECT_GE(sqes, wakes) << "an eventfd read re-armed per wake-up";
    }
  }
}

TEST_P(PostTest, ARequestStillPostedIsRefusedAndMayBePostedAgainFromItsCallback) {
  // The same loop posts to itself: no wake-up leaves the thread.
  struct Self {
    ursa_post_req req{};
    ursa_loop *loop;
    int runs = 0;
  } s;
  s.req.data = &s;
  ursa_post_cb again = [](ursa_post_req *req, int status) {
    Self *s = static_cast<Self *>(req->data);
    EXPECT_EQ(0, status);
    if (++s->runs < 3) {
      ursa_post_cb me = req->cb;
      EXPECT_EQ(0, ursa_post(s->loop, req, me));
    } else {
      ursa_loop_unhold(s->loop);
    }
  };
  s.loop = loop_;
  ASSERT_EQ(0, ursa_post(loop_, &s.req, again));
  EXPECT_EQ(-EBUSY, ursa_post(loop_, &s.req, again));
  EXPECT_EQ(-EINVAL, ursa_post(nullptr, &s.req, again));
  EXPECT_EQ(-EINVAL, ursa_post(loop_, nullptr, again));
  EXPECT_EQ(-EINVAL, ursa_post(loop_, &s.req, nullptr));
  ursa_loop_hold(loop_);
  Watchdog wd(loop_, 10000);
  EXPECT_EQ(0, ursa_loop_run(loop_, URSA_RUN_DEFAULT));
  EXPECT_FALSE(wd.fired);
  EXPECT_EQ(3, s.runs);
  ursa_stats st = Stats(loop_);
  EXPECT_EQ(3u, st.posts);
  EXPECT_EQ(1u, st.wakeups) << "only the first post came from outside a run";
}

TEST_P(PostTest, CloseCallsBackWhatWaitsAndRefusesLaterPosts) {
  Counter c;
  std::vector<ursa_post_req> reqs(10);
  for (auto &r : reqs) {
    r.data = &c;
    ASSERT_EQ(0, ursa_post(loop_, &r, OnCount));
  }
  ursa_loop *loop = loop_;
  ursa_loop_retain(loop);
  ASSERT_EQ(0, ursa_loop_close(loop));
  loop_ = nullptr;
  EXPECT_EQ(10, c.cancelled);
  EXPECT_EQ(0, c.ok);
  ursa_post_req late{};
  late.data = &c;
  EXPECT_EQ(-ESHUTDOWN, ursa_post(loop, &late, OnCount));
  EXPECT_EQ(-EBADF, ursa_loop_close(loop));
  ursa_loop_stop_async(loop);  // harmless on a closed loop
  ursa_loop_release(loop);     // frees it (LeakSanitizer checks)
  EXPECT_EQ(0, c.other);
}

// ---- stops from afar ----

TEST_P(PostTest, StopAsyncEndsAHeldLoopFromAnotherThread) {
  ursa_loop_hold(loop_);
  std::thread th([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ursa_loop_stop_async(loop_);
  });
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(1, ursa_loop_run(loop_, URSA_RUN_DEFAULT));  // still held
  th.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  // A stop asked for while the loop is not running ends its next run.
  ursa_loop_stop_async(loop_);
  EXPECT_EQ(1, ursa_loop_run(loop_, URSA_RUN_DEFAULT));
  ursa_loop_unhold(loop_);
  EXPECT_EQ(0, ursa_loop_run(loop_, URSA_RUN_DEFAULT));
}

ursa_loop *g_signal_loop;
void OnUsr1(int) { ursa_loop_stop_async(g_signal_loop); }

TEST_P(PostTest, StopAsyncIsSafeFromASignalHandler) {
  g_signal_loop = loop_;
  struct sigaction sa {}, old{};
  sa.sa_handler = OnUsr1;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(0, sigaction(SIGUSR1, &sa, &old));
  ursa_loop_hold(loop_);
  pthread_t self = pthread_self();
  std::thread th([self] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    pthread_kill(self, SIGUSR1);  // lands on the loop's thread, mid-wait
  });
  Watchdog wd(loop_, 10000);
  EXPECT_EQ(1, ursa_loop_run(loop_, URSA_RUN_DEFAULT));
  th.join();
  EXPECT_FALSE(wd.fired) << "the handler's stop did not end the run";
  ursa_loop_unhold(loop_);
  sigaction(SIGUSR1, &old, nullptr);
}

// ---- a post racing the loop's close ----

TEST_P(PostTest, PostsRacingCloseAreEachCalledBackOnceOrRefused) {
  const int kPosters = 3;
  std::atomic<long> made{0}, refused_other{0};
  std::atomic<long> ok{0}, cancelled{0};
  struct Req {
    ursa_post_req req{};
    std::atomic<long> *ok, *cancelled;
    std::atomic<bool> idle{true};
  };
  ursa_post_cb cb = [](ursa_post_req *req, int status) {
    Req *r = static_cast<Req *>(req->data);
    (status == 0 ? r->ok : r->cancelled)->fetch_add(1);
    r->idle.store(true);
  };
  ursa_loop *loop = loop_;
  std::atomic<bool> loop_gone{false};
  std::vector<std::thread> th;
  for (int p = 0; p < kPosters; p++) {
    ursa_loop_retain(loop);  // the poster's, released when it is done
    th.emplace_back([&, loop] {
      std::vector<Req> reqs(64);
      for (auto &r : reqs) {
        r.req.data = &r;
        r.ok = &ok;
        r.cancelled = &cancelled;
      }
      bool shut = false;
      while (!shut) {
        for (auto &r : reqs) {
          if (!r.idle.load()) continue;
          r.idle.store(false);
          int e = ursa_post(loop, &r.req, cb);
          if (e == 0) {
            made++;
          } else {
            r.idle.store(true);
            if (e == -ESHUTDOWN)
              shut = true;
            else
              refused_other++;
            if (shut) break;
          }
        }
        std::this_thread::yield();
      }
      // Every request this thread made is called back before close returns.
      for (auto &r : reqs)
        while (!r.idle.load()) std::this_thread::yield();
      ursa_loop_release(loop);
    });
  }
  // Run the loop a while under the posts, then close it under them.
  ASSERT_NO_FATAL_FAILURE(RunThenCloseUnder(ok));
  loop_gone = true;
  for (auto &x : th) x.join();
  EXPECT_EQ(0, refused_other.load());
  EXPECT_GE(ok.load(), 20000);
  EXPECT_EQ(made.load(), ok.load() + cancelled.load())
      << "a post made was called back other than once";
}

// ---- loop to loop ----

struct Peer {
  ursa_loop *loop = nullptr;
  ursa_loop_options opts{};
  std::thread th;
  std::atomic<bool> ready{false};
  ursa_stats stats{};
  ursa_features feat{};
};

struct Ping {
  ursa_post_req req{};
  ursa_loop *a, *b;  // a sends to b, b answers on a
  pthread_t a_thread, b_thread;
  int rounds = 0, want = 0;
  std::atomic<int> wrong_thread{0};
  bool at_b = false;
};

void OnPingAtA(ursa_post_req *req, int status);
void OnPingAtB(ursa_post_req *req, int status) {
  Ping *p = static_cast<Ping *>(req->data);
  if (status) return;
  if (!pthread_equal(pthread_self(), p->b_thread)) p->wrong_thread++;
  EXPECT_EQ(0, ursa_post(p->a, req, OnPingAtA));
}
void OnPingAtA(ursa_post_req *req, int status) {
  Ping *p = static_cast<Ping *>(req->data);
  if (status) return;
  if (!pthread_equal(pthread_self(), p->a_thread)) p->wrong_thread++;
  if (++p->rounds == p->want) {
    ursa_loop_unhold(p->a);
    return;
  }
  EXPECT_EQ(0, ursa_post(p->b, req, OnPingAtB));
}

TEST_P(PostTest, TwoLoopsOnTwoThreadsPingPongByPosts) {
  // b on a thread of its own (a SINGLE_ISSUER ring is its maker's).
  Peer b;
  b.opts = opts_;
  Ping p;
  p.want = 2000;
  p.a = loop_;
  p.a_thread = pthread_self();
  b.th = std::thread([&] {
    ASSERT_EQ(0, ursa_loop_new(&b.loop, &b.opts));
    p.b_thread = pthread_self();
    ursa_loop_hold(b.loop);
    b.ready = true;
    ursa_loop_run(b.loop, URSA_RUN_DEFAULT);  // until a stops it
    ursa_loop_stats(b.loop, &b.stats);
    ursa_loop_features(b.loop, &b.feat);
    ursa_loop_unhold(b.loop);
    EXPECT_EQ(0, ursa_loop_close(b.loop));
  });
  while (!b.ready.load()) std::this_thread::yield();
  p.b = b.loop;
  p.req.data = &p;
  ursa_loop_retain(p.b);
  ursa_loop_hold(loop_);
  // The first post leaves from inside a's run, as every later one does.
  ursa_post_req kick{};
  kick.data = &p;
  ASSERT_EQ(0, ursa_post(loop_, &kick, [](ursa_post_req *req, int) {
              Ping *p = static_cast<Ping *>(req->data);
              EXPECT_EQ(0, ursa_post(p->b, &p->req, OnPingAtB));
            }));
  {
    Watchdog wd(loop_, 20000);
    ursa_loop_run(loop_, URSA_RUN_DEFAULT);
    EXPECT_FALSE(wd.fired) << p.rounds << " of " << p.want << " rounds";
  }
  ursa_loop_stop_async(p.b);
  b.th.join();
  ursa_loop_release(p.b);
  EXPECT_EQ(p.want, p.rounds);
  EXPECT_EQ(0, p.wrong_thread.load());
  ursa_stats a = Stats(loop_);
  ursa_features fa;
  ursa_loop_features(loop_, &fa);
  bool msg_ring = (fa.used & URSA_FEAT_MSG_RING) &&
                  (b.feat.used & URSA_FEAT_MSG_RING);
  if (GetParam().backend == URSA_BACKEND_URING && !GetParam().disable) {
    EXPECT_TRUE(msg_ring) << "this kernel offers MSG_RING";
  }
  if (msg_ring) {
    // Every wake-up between the loops went by MSG_RING: a sent one per
    // round (the posts alternate, so none coalesce).
    EXPECT_EQ((uint64_t)p.want, a.msg_ring_sent);
    EXPECT_EQ((uint64_t)p.want, b.stats.msg_ring_sent);
  } else {
    EXPECT_EQ(0u, a.msg_ring_sent);
    EXPECT_EQ(0u, b.stats.msg_ring_sent);
  }
  EXPECT_EQ((uint64_t)p.want, b.stats.posts);
  EXPECT_EQ((uint64_t)p.want + 1, a.posts);  // the kick too
}

// ---- ursa_post_call: the bounded ring ----

struct CallTally {
  pthread_t loop_thread;
  ursa_loop *loop;
  std::vector<std::vector<int>> calls;
  std::vector<int> last;
  std::atomic<int> out_of_order{0}, wrong_thread{0}, cancelled{0};
  long total = 0, want = 0;
};
struct CallArg {
  CallTally *t;
  int sender, seq;
};
void OnCall(void *arg, int status) {
  CallArg *a = static_cast<CallArg *>(arg);
  CallTally *t = a->t;
  if (status == -ECANCELED) {
    t->cancelled++;
    return;
  }
  if (!pthread_equal(pthread_self(), t->loop_thread)) t->wrong_thread++;
  t->calls[a->sender][a->seq]++;
  if (a->seq <= t->last[a->sender]) t->out_of_order++;
  t->last[a->sender] = a->seq;
  if (++t->total == t->want) {
    ursa_loop_unhold(t->loop);
    ursa_loop_stop(t->loop);
  }
}

TEST_P(PostTest, CallsFromManyThreadsThroughASmallRingRunOnceInOrder) {
  // A ring of 64 for 4 x 5,000 calls: full often, each full a retry.
  ursa_loop_close(loop_);
  loop_ = nullptr;
  ursa_loop_options o = opts_;
  o.post_ring = 64;
  ASSERT_EQ(0, ursa_loop_new(&loop_, &o));
  const int kSenders = 4, kEach = 5000;
  CallTally t;
  t.loop = loop_;
  t.loop_thread = pthread_self();
  t.calls.assign(kSenders, std::vector<int>(kEach, 0));
  t.last.assign(kSenders, -1);
  t.want = (long)kSenders * kEach;
  std::vector<std::vector<CallArg>> args(kSenders,
                                         std::vector<CallArg>(kEach));
  std::atomic<long> full{0}, other{0};
  std::vector<std::thread> th;
  for (int s = 0; s < kSenders; s++)
    th.emplace_back([&, s] {
      for (int i = 0; i < kEach; i++) {
        args[s][i] = {&t, s, i};
        int e;
        while ((e = ursa_post_call(loop_, OnCall, &args[s][i])) == -EAGAIN) {
          full++;
          std::this_thread::yield();
        }
        if (e) other++;
      }
    });
  ursa_loop_hold(loop_);
  Watchdog *wd = new Watchdog(loop_, 20000);
  ursa_loop_run(loop_, URSA_RUN_DEFAULT);
  for (auto &x : th) x.join();
  EXPECT_FALSE(wd->fired) << t.total << " of " << t.want;
  delete wd;
  EXPECT_EQ(0, other.load());
  EXPECT_EQ(t.want, t.total);
  EXPECT_EQ(0, t.out_of_order.load());
  EXPECT_EQ(0, t.wrong_thread.load());
  int not_once = 0;
  for (auto &v : t.calls)
    for (int c : v) not_once += c != 1;
  EXPECT_EQ(0, not_once);
  ursa_stats st = Stats(loop_);
  EXPECT_EQ((uint64_t)t.want, st.posts);
  EXPECT_LE(st.wakeups, st.posts);
}

TEST_P(PostTest, AFullRingRefusesWithEAGAINAndCloseCancelsWhatWaits) {
  ursa_loop_close(loop_);
  loop_ = nullptr;
  ursa_loop_options o = opts_;
  o.post_ring = 8;
  ASSERT_EQ(0, ursa_loop_new(&loop_, &o));
  CallTally t;
  t.loop = loop_;
  t.loop_thread = pthread_self();
  t.calls.assign(1, std::vector<int>(32, 0));
  t.last.assign(1, -1);
  t.want = 8;
  std::vector<CallArg> args(32);
  for (int i = 0; i < 32; i++) args[i] = {&t, 0, i};
  for (int i = 0; i < 8; i++)
    ASSERT_EQ(0, ursa_post_call(loop_, OnCall, &args[i])) << i;
  EXPECT_EQ(-EAGAIN, ursa_post_call(loop_, OnCall, &args[8]));
  ursa_loop_hold(loop_);
  {
    Watchdog wd(loop_, 10000);
    while (t.total < 8 && !wd.fired) ursa_loop_run(loop_, URSA_RUN_ONCE);
  }
  ursa_loop_unhold(loop_);
  EXPECT_EQ(8, t.total);
  // Room again: 8 more wait, unrun, for the close to cancel.
  for (int i = 8; i < 16; i++)
    ASSERT_EQ(0, ursa_post_call(loop_, OnCall, &args[i])) << i;
  ursa_loop *loop = loop_;
  ursa_loop_retain(loop);
  ASSERT_EQ(0, ursa_loop_close(loop));
  loop_ = nullptr;
  EXPECT_EQ(8, t.cancelled.load());
  EXPECT_EQ(-ESHUTDOWN, ursa_post_call(loop, OnCall, &args[16]));
  EXPECT_EQ(-EINVAL, ursa_post_call(loop, nullptr, nullptr));
  ursa_loop_release(loop);
  EXPECT_EQ(0, t.out_of_order.load());
}

TEST_P(PostTest, CallsRacingCloseAreEachCalledBackOnceOrRefused) {
  ursa_loop *loop = loop_;
  std::atomic<long> made{0}, ok{0}, cancelled{0}, other{0};
  struct Ctr {
    std::atomic<long> *ok, *cancelled;
  } ctr{&ok, &cancelled};
  ursa_call_fn cb = [](void *arg, int status) {
    Ctr *c = static_cast<Ctr *>(arg);
    (status == 0 ? c->ok : c->cancelled)->fetch_add(1);
  };
  std::vector<std::thread> th;
  for (int p = 0; p < 3; p++) {
    ursa_loop_retain(loop);
    th.emplace_back([&, loop] {
      for (;;) {
        int e = ursa_post_call(loop, cb, &ctr);
        if (e == 0) {
          made++;
        } else if (e == -ESHUTDOWN) {
          break;
        } else if (e != -EAGAIN) {
          other++;
          break;
        }
      }
      ursa_loop_release(loop);
    });
  }
  ASSERT_NO_FATAL_FAILURE(RunThenCloseUnder(ok));
  for (auto &x : th) x.join();
  EXPECT_EQ(0, other.load());
  EXPECT_EQ(made.load(), ok.load() + cancelled.load());
}

TEST(PostRing, ASizeThatIsNotAPowerOfTwoIsRefused) {
  ursa_loop_options o{};
  o.post_ring = 1000;
  ursa_loop *loop = nullptr;
  EXPECT_EQ(-EINVAL, ursa_loop_new(&loop, &o));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "post_ring"));
  o.post_ring = 1u << 21;
  EXPECT_EQ(-EINVAL, ursa_loop_new(&loop, &o));
}

// ---- hand-off of accepted connections ----

// An echo on the loop the connection was handed to.
struct HConn {
  ursa_stream s{};
  ursa_handoff_req req{};
  struct HServer *srv;
};
struct HWr {
  ursa_write_req w{};
  std::vector<char> buf;
};
struct HServer {
  ursa_loop *home = nullptr;  // the loop the streams must be on
  pthread_t home_thread;
  std::atomic<int> arrived{0}, cancelled{0}, wrong{0}, open{0};
  std::atomic<int> direct{0}, peer_ok{0}, enfile{0};
  std::atomic<bool> hold_open{false};  // keep the streams, unread
  std::atomic<long> bytes{0};
  std::vector<ursa_stream *> held;  // on the home loop's thread only
};

void OnHClosed(ursa_handle *h) {
  HConn *c = static_cast<HConn *>(h->data);
  c->srv->open--;
  delete c;
}
void OnHWritten(ursa_write_req *w, int status) {
  delete static_cast<HWr *>(w->data);
}
void OnHRead(ursa_stream *s, ssize_t n, const void *buf) {
  HConn *c = static_cast<HConn *>(s->data);
  if (n < 0) {
    ursa_stream_close(s, OnHClosed);
    return;
  }
  c->srv->bytes += n;
  HWr *w = new HWr;
  w->buf.assign((const char *)buf, (const char *)buf + n);
  w->w.data = w;
  if (ursa_write(&w->w, s, w->buf.data(), w->buf.size(), 0, OnHWritten) < 0)
    delete w;
}
void OnArrived(ursa_handoff_req *req, int status) {
  HConn *c = static_cast<HConn *>(req->data);
  HServer *srv = c->srv;
  if (status < 0) {
    srv->cancelled++;
    if (status == -ENFILE) srv->enfile++;
    if (!pthread_equal(pthread_self(), srv->home_thread) &&
        status != -ECANCELED)
      srv->wrong++;
    delete c;
    return;
  }
  srv->arrived++;
  if (req->stream->fd < 0) srv->direct++;
  sockaddr_storage pa;
  socklen_t pl = sizeof(pa);
  if (ursa_stream_peer_addr(req->stream, &pa, &pl) == 0 &&
      pa.ss_family == AF_INET && t::PortOf(pa) != 0)
    srv->peer_ok++;
  if (srv->hold_open) {
    srv->open++;
    c->s.data = c;
    srv->held.push_back(&c->s);
    return;
  }
  if (req->stream->loop != srv->home ||
      !pthread_equal(pthread_self(), srv->home_thread))
    srv->wrong++;
  srv->open++;
  c->s.data = c;
  if (ursa_read_start(&c->s, OnHRead) < 0) ursa_stream_close(&c->s, OnHClosed);
}

void OnHConnection(ursa_listener *l, int status);
void OnLClosed(ursa_handle *h);

struct Acceptor {
  ursa_listener l{};
  ursa_loop *target;
  HServer *srv;
  int handed = 0, refused = 0, last_error = 0;
  sockaddr_storage ss{};  // where it listens
  socklen_t len = 0;
  // Listens on 127.0.0.1 (port 0) on loop, handing each connection to to.
  void Listen(ursa_loop *loop, ursa_loop *to, HServer *s) {
    target = to;
    srv = s;
    l.data = this;
    len = t::LoopbackAddr(AF_INET, &ss);
    ASSERT_EQ(0, ursa_listen(loop, &l, (sockaddr *)&ss, len, 0, 0,
                             OnHConnection));
    ASSERT_EQ(0, ursa_listener_addr(&l, &ss, &len));
  }
  // Closes the listener and runs loop until it has gone (a stop a client
  // asked for may still be pending: run again).
  void Close(ursa_loop *loop) {
    ursa_listener_close(&l, OnLClosed);
    for (int i = 0; i < 3 && ursa_loop_run(loop, URSA_RUN_DEFAULT) > 0; i++) {
    }
  }
};
void OnHConnection(ursa_listener *l, int status) {
  Acceptor *a = static_cast<Acceptor *>(l->data);
  if (status < 0) return;
  HConn *c = new HConn;
  c->srv = a->srv;
  c->req.data = c;
  c->req.stream = &c->s;
  int r = ursa_accept_handoff(l, a->target, &c->req, OnArrived);
  if (r == 0) {
    a->handed++;
  } else {
    a->refused++;
    a->last_error = r;
    delete c;
  }
}
void OnLClosed(ursa_handle *) {}

// kClients clients at once, client i echoing base + step * i random bytes
// (seed + i) through the server at ss, while loop runs (bounded; the last
// client stops it).  Each client's verdict: the bytes came back whole.
std::vector<int> EchoClients(ursa_loop *loop, const sockaddr_storage &ss,
                             socklen_t len, int n, size_t base, size_t step,
                             uint32_t seed) {
  std::vector<int> ok(n, 0);
  std::atomic<int> finished{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < n; i++)
    clients.emplace_back([&, i] {
      std::vector<char> out = t::RandomBytes(base + step * i, seed + i);
      std::vector<char> back(out.size());
      int fd = t::BlockingConnect(ss, len);
      if (fd >= 0) {
        std::thread w([&] { t::WriteAll(fd, out.data(), out.size()); });
        bool got = t::ReadExactly(fd, back.data(), back.size());
        w.join();
        ok[i] = got && t::SameBytes(out, back);
        close(fd);
      }
      if (++finished == n) ursa_loop_stop_async(loop);
    });
  {
    Watchdog wd(loop, 20000);
    while (finished.load() < n && !wd.fired)
      ursa_loop_run(loop, URSA_RUN_ONCE);
  }
  for (auto &c : clients) c.join();
  return ok;
}

// A loop on a thread of its own, held until stopped from afar.
struct LoopThread {
  ursa_loop_options opts{};
  ursa_loop *loop = nullptr;
  pthread_t thread;
  std::thread th;
  std::atomic<bool> ready{false}, go{false};
  ursa_stats stats{};
  int close_rc = 1;
  // run: run the loop until stopped, then close it; otherwise only wait
  // for go and close it without running.
  void Start(bool run) {
    th = std::thread([this, run] {
      if (ursa_loop_new(&loop, &opts) != 0) {
        ready = true;
        return;
      }
      thread = pthread_self();
      ursa_loop_retain(loop);  // the test's, released at Join
      ready = true;
      if (run) {
        ursa_loop_hold(loop);
        ursa_loop_run(loop, URSA_RUN_DEFAULT);
        ursa_loop_unhold(loop);
        // Streams a test held open are freed as they close.
        ursa_loop_close_all(loop, [](ursa_handle *h) {
          if (h->type != URSA_HANDLE_STREAM) return;
          HConn *c = static_cast<HConn *>(h->data);
          c->srv->open--;
          delete c;
        });
        ursa_loop_run(loop, URSA_RUN_DEFAULT);
      } else {
        while (!go.load()) std::this_thread::yield();
      }
      ursa_loop_stats(loop, &stats);
      close_rc = ursa_loop_close(loop);
    });
    while (!ready.load()) std::this_thread::yield();
  }
  void Join() {
    go = true;
    th.join();
    if (loop) ursa_loop_release(loop);
  }
};

TEST_P(PostTest, HandedOffConnectionsEchoByteExactOnTheOtherLoop) {
  HServer srv;
  LoopThread b;
  b.opts = opts_;
  b.opts.direct_files = 256;  // the target's own table does not matter
  b.Start(true);
  ASSERT_NE(nullptr, b.loop);
  srv.home = b.loop;
  srv.home_thread = b.thread;
  Acceptor a;
  ASSERT_NO_FATAL_FAILURE(a.Listen(loop_, b.loop, &srv));
  const sockaddr_storage &ss = a.ss;
  socklen_t len = a.len;
  const int kClients = 12;
  std::vector<int> ok =
      EchoClients(loop_, ss, len, kClients, 1000, 37000, 7);
  a.Close(loop_);
  ursa_loop_stop_async(b.loop);
  b.Join();
  for (int i = 0; i < kClients; i++) EXPECT_TRUE(ok[i]) << "client " << i;
  EXPECT_EQ(kClients, a.handed);
  EXPECT_EQ(kClients, srv.arrived.load());
  EXPECT_EQ(0, srv.wrong.load()) << "a stream arrived off its loop";
  EXPECT_EQ(0, srv.open.load());
  EXPECT_EQ(0, b.close_rc);
}

TEST_P(PostTest, AHandOffToALoopThatClosesIsCalledBackOrRefused) {
  HServer srv;
  LoopThread b;
  b.opts = opts_;
  b.Start(false);  // never runs: hand-offs wait in its posts
  ASSERT_NE(nullptr, b.loop);
  srv.home = b.loop;
  Acceptor a;
  ASSERT_NO_FATAL_FAILURE(a.Listen(loop_, b.loop, &srv));
  const sockaddr_storage &ss = a.ss;
  socklen_t len = a.len;
  int c1 = t::BlockingConnect(ss, len);
  ASSERT_GE(c1, 0);
  {
    Watchdog wd(loop_, 10000);
    while (a.handed < 1 && !wd.fired) ursa_loop_run(loop_, URSA_RUN_ONCE);
  }
  ASSERT_EQ(1, a.handed);
  b.Join();  // closes b with the hand-off still waiting in it
  EXPECT_EQ(0, b.close_rc);
  EXPECT_EQ(1, srv.cancelled.load()) << "the waiting hand-off was called "
                                        "back with -ECANCELED";
  EXPECT_EQ(0, srv.arrived.load());
  char x;
  EXPECT_EQ(0, read(c1, &x, 1)) << "the connection was closed";
  close(c1);
  // A target whose close has begun refuses the hand-off at once.
  ursa_loop *dying = nullptr;
  ursa_loop_options o = opts_;
  ASSERT_EQ(0, ursa_loop_new(&dying, &o));
  ursa_loop_retain(dying);
  ASSERT_EQ(0, ursa_loop_close(dying));
  a.target = dying;
  int c2 = t::BlockingConnect(ss, len);
  ASSERT_GE(c2, 0);
  {
    Watchdog wd(loop_, 10000);
    while (a.refused < 1 && !wd.fired) ursa_loop_run(loop_, URSA_RUN_ONCE);
  }
  EXPECT_EQ(1, a.refused);
  EXPECT_EQ(-ESHUTDOWN, a.last_error);
  EXPECT_EQ(0, read(c2, &x, 1)) << "a refused connection is closed";
  close(c2);
  ursa_loop_release(dying);
  ursa_listener_close(&a.l, OnLClosed);
  // (b's memory went with the last reference, on this thread: its ring
  // must not have taken this thread's registered ring with it)
  EXPECT_EQ(0, ursa_loop_run(loop_, URSA_RUN_DEFAULT));
}

// A direct descriptor moves by MSG_RING into the target's own table; a
// target without one (or on epoll) refuses.
TEST_P(PostTest, DirectDescriptorsMoveByMsgRingAndKeepTheirAddresses) {
  if (GetParam().backend != URSA_BACKEND_URING) GTEST_SKIP() << "io_uring's";
  ursa_loop_close(loop_);
  loop_ = nullptr;
  ursa_loop_options o = opts_;
  o.direct_files = 64;
  ASSERT_EQ(0, ursa_loop_new(&loop_, &o));
  ursa_features f;
  ursa_loop_features(loop_, &f);
  if (!(f.used & URSA_FEAT_DIRECT_FILES)) GTEST_SKIP() << "no direct files";
  bool msg_ring = (f.used & URSA_FEAT_MSG_RING) != 0;
  HServer srv;
  LoopThread b;
  b.opts = o;
  b.opts.direct_files = 256;
  b.Start(true);
  ASSERT_NE(nullptr, b.loop);
  srv.home = b.loop;
  srv.home_thread = b.thread;
  Acceptor a;
  ASSERT_NO_FATAL_FAILURE(a.Listen(loop_, b.loop, &srv));
  const sockaddr_storage &ss = a.ss;
  socklen_t len = a.len;
  const int kClients = msg_ring ? 8 : 1;
  std::vector<int> ok =
      EchoClients(loop_, ss, len, kClients, 500, 51000, 70);
  a.Close(loop_);
  ursa_loop_stop_async(b.loop);
  b.Join();
  if (!msg_ring) {
    EXPECT_EQ(-EOPNOTSUPP, a.last_error);
    return;
  }
  for (int i = 0; i < kClients; i++) EXPECT_TRUE(ok[i]) << "client " << i;
  EXPECT_EQ(kClients, a.handed);
  EXPECT_EQ(kClients, srv.arrived.load());
  EXPECT_EQ(0, srv.wrong.load());
  EXPECT_EQ(kClients, srv.direct.load()) << "streams on direct descriptors";
  EXPECT_EQ(kClients, srv.peer_ok.load()) << "the peer's address came along";
  EXPECT_EQ(0, b.close_rc);
}

TEST_P(PostTest, ADirectHandOffToAFullTableIsCalledBackWithENFILE) {
  if (GetParam().backend != URSA_BACKEND_URING) GTEST_SKIP() << "io_uring's";
  ursa_loop_close(loop_);
  loop_ = nullptr;
  ursa_loop_options o = opts_;
  o.direct_files = 64;
  ASSERT_EQ(0, ursa_loop_new(&loop_, &o));
  ursa_features f;
  ursa_loop_features(loop_, &f);
  if (!(f.used & URSA_FEAT_DIRECT_FILES) || !(f.used & URSA_FEAT_MSG_RING))
    GTEST_SKIP() << "no direct files or MSG_RING";
  HServer srv;
  LoopThread b;
  b.opts = o;
  b.opts.direct_files = 2;  // room for two
  b.Start(true);
  ASSERT_NE(nullptr, b.loop);
  srv.home = b.loop;
  srv.home_thread = b.thread;
  srv.hold_open = true;  // keep the two that fit, so the table stays full
  Acceptor a;
  ASSERT_NO_FATAL_FAILURE(a.Listen(loop_, b.loop, &srv));
  const sockaddr_storage &ss = a.ss;
  socklen_t len = a.len;
  std::vector<int> fds;
  for (int i = 0; i < 4; i++) {
    fds.push_back(t::BlockingConnect(ss, len));
    Watchdog wd(loop_, 10000);
    while (a.handed < i + 1 && !wd.fired) ursa_loop_run(loop_, URSA_RUN_ONCE);
    // one at a time, so that which two fit is known
    while (srv.arrived.load() + srv.cancelled.load() < i + 1 && !wd.fired)
      ursa_loop_run(loop_, URSA_RUN_NOWAIT);
  }
  EXPECT_EQ(2, srv.arrived.load());
  EXPECT_EQ(2, srv.cancelled.load());
  EXPECT_EQ(2, srv.enfile.load()) << "the move into a full table is -ENFILE";
  char x;
  for (int i = 2; i < 4; i++)
    EXPECT_EQ(0, read(fds[i], &x, 1)) << "a connection that did not fit "
                                          "is closed";
  for (int fd : fds) close(fd);
  srv.hold_open = false;
  a.Close(loop_);
  ursa_loop_stop_async(b.loop);
  b.Join();
  EXPECT_EQ(0, b.close_rc);
}

TEST_P(PostTest, ADirectHandOffNeedsATargetWithATable) {
  if (GetParam().backend != URSA_BACKEND_URING) GTEST_SKIP() << "io_uring's";
  ursa_loop_close(loop_);
  loop_ = nullptr;
  ursa_loop_options o = opts_;
  o.direct_files = 64;
  ASSERT_EQ(0, ursa_loop_new(&loop_, &o));
  Acceptor a;
  HServer srv;
  ursa_loop *plain = nullptr;
  ursa_loop_options po = opts_;  // no direct_files
  ASSERT_EQ(0, ursa_loop_new(&plain, &po));
  ASSERT_NO_FATAL_FAILURE(a.Listen(loop_, plain, &srv));
  const sockaddr_storage &ss = a.ss;
  socklen_t len = a.len;
  int c = t::BlockingConnect(ss, len);
  {
    Watchdog wd(loop_, 10000);
    while (a.refused < 1 && !wd.fired) ursa_loop_run(loop_, URSA_RUN_ONCE);
  }
  EXPECT_EQ(-EOPNOTSUPP, a.last_error);
  close(c);
  a.Close(loop_);
  EXPECT_EQ(0, ursa_loop_close(plain));
}

INSTANTIATE_TEST_SUITE_P(Setups, PostTest, ::testing::ValuesIn(kSetups),
                         SetupName);

}  // namespace
