// watch_test.cc - watching any descriptor (an eventfd, a pipe) with its
// edge-triggered callbacks, stop and start, close that leaves the
// descriptor open, and signals delivered as loop callbacks, on every ring
// variant and both backends.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "tests/testutil.h"

namespace {

class Watch : public t::LoopTest {
 protected:
  // Runs the loop for ms with a timer holding it open.
  void RunFor(int ms) {
    ursa_timer tm{};
    static bool fired;
    fired = false;
    ASSERT_EQ(0, ursa_timer_start(loop(), &tm, (uint64_t)ms, 0,
                                  [](ursa_timer *, int) { fired = true; }));
    ASSERT_TRUE(RunUntil([&] { return fired; }));
  }
};

struct Seen {
  int calls = 0;
  unsigned events = 0;
  int status = 0;
  uint64_t sum = 0; /* what the eventfd reads added up to */
  bool drain = true;
  bool closed = false;
};

void OnEvent(ursa_poll *p, int status, unsigned events) {
  auto *s = static_cast<Seen *>(p->data);
  s->calls++;
  s->events |= events;
  s->status = status;
  uint64_t v;
  if (s->drain && (events & URSA_READABLE))
    while (read(p->fd, &v, sizeof(v)) == sizeof(v)) s->sum += v;
}
void OnPollClosed(ursa_handle *h) {
  static_cast<Seen *>(h->data)->closed = true;
}

// An eventfd written from another thread while the loop waits: a callback
// per write that it consumes, the values summed exactly, and none while
// nothing new arrives (edge-triggered).
TEST_P(Watch, EventfdWritesWakeTheLoop) {
  int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(efd, 0);
  ursa_poll p{};
  Seen seen;
  p.data = &seen;
  ASSERT_EQ(0, ursa_poll_open(loop(), &p, efd));
  EXPECT_EQ(-EINVAL, ursa_poll_start(&p, 0, OnEvent));
  EXPECT_EQ(-EINVAL, ursa_poll_start(&p, 8, OnEvent));
  ASSERT_EQ(0, ursa_poll_start(&p, URSA_READABLE, OnEvent));
  EXPECT_EQ(-EALREADY, ursa_poll_start(&p, URSA_READABLE, OnEvent));
  std::thread writer([&] {
    for (uint64_t v = 1; v <= 3; v++) {
      usleep(20000);
      uint64_t x = v;
      EXPECT_EQ((ssize_t)sizeof(x), write(efd, &x, sizeof(x)));
    }
  });
  ASSERT_TRUE(RunUntil([&] { return seen.sum == 6; }));
  writer.join();
  EXPECT_GE(seen.calls, 1);
  EXPECT_LE(seen.calls, 3);
  EXPECT_EQ(URSA_READABLE, seen.events);
  int calls = seen.calls;
  RunFor(60);
  EXPECT_EQ(calls, seen.calls) << "called with nothing new";

  // Stopped: a write is not reported; started again, the readiness it
  // left counts once.
  ASSERT_EQ(0, ursa_poll_stop(&p));
  uint64_t x = 10;
  ASSERT_EQ((ssize_t)sizeof(x), write(efd, &x, sizeof(x)));
  RunFor(40);
  EXPECT_EQ(calls, seen.calls) << "called while stopped";
  ASSERT_EQ(0, ursa_poll_start(&p, URSA_READABLE, OnEvent));
  ASSERT_TRUE(RunUntil([&] { return seen.sum == 16; }));
  EXPECT_EQ(calls + 1, seen.calls);

  ASSERT_EQ(0, ursa_poll_close(&p, OnPollClosed));
  EXPECT_EQ(-EALREADY, ursa_poll_close(&p, OnPollClosed));
  ASSERT_TRUE(RunUntil([&] { return seen.closed; }));
  EXPECT_GE(fcntl(efd, F_GETFD), 0) << "the watcher closed the caller's fd";
  close(efd);
}

// A pipe's write end is writable at once: reported, and again only after
// the reader has made room it was waiting for.  Readable and writable
// watched together on a socket pair report each.
TEST_P(Watch, WritableAndBothAtOnce) {
  int sv[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                          0, sv));
  ursa_poll p{};
  Seen seen;
  seen.drain = false;
  p.data = &seen;
  ASSERT_EQ(0, ursa_poll_open(loop(), &p, sv[0]));
  ASSERT_EQ(0, ursa_poll_start(&p, URSA_READABLE | URSA_WRITABLE, OnEvent));
  ASSERT_TRUE(RunUntil([&] { return seen.calls > 0; }));
  EXPECT_EQ(URSA_WRITABLE, seen.events) << "readable with nothing sent";
  ASSERT_EQ(1, write(sv[1], "x", 1));
  ASSERT_TRUE(RunUntil([&] { return seen.events & URSA_READABLE; }));
  EXPECT_EQ(0, seen.status);
  ASSERT_EQ(0, ursa_poll_close(&p, OnPollClosed));
  ASSERT_TRUE(RunUntil([&] { return seen.closed; }));
  close(sv[0]);
  close(sv[1]);
}

struct SigSeen {
  std::atomic<int> got{0};
  int signum = 0;
  bool closed = false;
};

// A signal sent while the loop waits arrives as a callback, and the
// callback can stop the loop (a server's clean exit); close unblocks the
// signal again.
TEST_P(Watch, SignalArrivesAsACallbackWhileTheLoopWaits) {
  sigset_t cur;
  pthread_sigmask(SIG_SETMASK, nullptr, &cur);
  ASSERT_FALSE(sigismember(&cur, SIGUSR1));
  ursa_signal sig{};
  SigSeen seen;
  sig.data = &seen;
  EXPECT_EQ(-EINVAL, ursa_signal_start(loop(), &sig, SIGKILL,
                                       [](ursa_signal *, int) {}));
  EXPECT_EQ(-EINVAL, ursa_signal_start(loop(), &sig, 0,
                                       [](ursa_signal *, int) {}));
  ASSERT_EQ(0, ursa_signal_start(loop(), &sig, SIGUSR1,
                                 [](ursa_signal *s, int signum) {
                                   auto *k = static_cast<SigSeen *>(s->data);
                                   k->got++;
                                   k->signum = signum;
                                   ursa_loop_stop(s->loop);
                                 }));
  pthread_sigmask(SIG_SETMASK, nullptr, &cur);
  EXPECT_TRUE(sigismember(&cur, SIGUSR1));
  pid_t me = getpid();
  std::thread sender([&] {
    usleep(50000); /* the loop is waiting by then */
    kill(me, SIGUSR1);
  });
  // The callback's ursa_loop_stop() ends this run.
  int r = ursa_loop_run(loop(), URSA_RUN_DEFAULT);
  sender.join();
  EXPECT_EQ(1, r) << "the loop ended for another reason";
  EXPECT_EQ(1, seen.got.load());
  EXPECT_EQ(SIGUSR1, seen.signum);
  ASSERT_EQ(0, ursa_signal_close(&sig, [](ursa_handle *h) {
              static_cast<SigSeen *>(h->data)->closed = true;
            }));
  ASSERT_TRUE(RunUntil([&] { return seen.closed; }));
  pthread_sigmask(SIG_SETMASK, nullptr, &cur);
  EXPECT_FALSE(sigismember(&cur, SIGUSR1)) << "left blocked after close";
}

INSTANTIATE_TEST_SUITE_P(Rings, Watch,
                         ::testing::ValuesIn(t::kVariants,
                                             t::kVariants + t::kNumVariants),
                         t::VariantName);

}  // namespace
