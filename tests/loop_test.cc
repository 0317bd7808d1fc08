// loop_test.cc - loop creation and options, run modes, stop, the feature
// probe, error names, and a ring under pressure.
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "tests/block_uring.h"
#include "tests/testutil.h"

namespace {

TEST(Loop, CreatesAndClosesEmpty) {
  ursa_loop *loop = nullptr;
  ASSERT_EQ(0, ursa_loop_new(&loop, nullptr));
  EXPECT_EQ(0u, ursa_loop_alive(loop));
  EXPECT_EQ(0, ursa_loop_run(loop, URSA_RUN_DEFAULT));
  EXPECT_EQ(0, ursa_loop_run(loop, URSA_RUN_ONCE));
  EXPECT_EQ(0, ursa_loop_run(loop, URSA_RUN_NOWAIT));
  EXPECT_EQ(0, ursa_loop_close(loop));
}

// A walk sees every open handle of every kind, in the order opened, with
// closing ones marked; close-all closes the rest with its one callback,
// which runs once for each, and the loop can then be freed.  On both
// backends.
struct Walked {
  std::vector<std::pair<int, ursa_handle *>> seen;
  std::vector<int> closing;
  std::vector<std::pair<int, ursa_handle *>> closed_all;
};
Walked *walked;

// One open handle of every kind on a loop: a stream (a socketpair's end),
// a listener and a datagram socket on 127.0.0.1, a watcher of an eventfd
// and a signal (SIGUSR2).
struct OneOfEach {
  int sv[2] = {-1, -1};
  int efd = -1;
  ursa_stream s{};
  ursa_listener l{};
  ursa_dgram d{};
  ursa_poll p{};
  ursa_signal sig{};
  void Open(ursa_loop *loop) {
    ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    ASSERT_EQ(0, ursa_stream_open(loop, &s, sv[0]));
    sockaddr_storage ss;
    socklen_t len = t::LoopbackAddr(AF_INET, &ss);
    ASSERT_EQ(0, ursa_listen(loop, &l, (sockaddr *)&ss, len, 0, 0,
                             [](ursa_listener *, int) {}));
    ASSERT_EQ(0, ursa_dgram_bind(loop, &d, (sockaddr *)&ss, len, 0));
    efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    ASSERT_EQ(0, ursa_poll_open(loop, &p, efd));
    ASSERT_EQ(0, ursa_poll_start(&p, URSA_READABLE,
                                 [](ursa_poll *, int, unsigned) {}));
    ASSERT_EQ(0, ursa_signal_start(loop, &sig, SIGUSR2,
                                   [](ursa_signal *, int) {}));
  }
};

TEST(Loop, WalkAndCloseAllCoverEveryKindOfHandle) {
  for (ursa_backend b : t::kBackends) {
    ursa_loop_options o = t::OptionsFor(b);
    ursa_loop *loop = nullptr;
    ASSERT_EQ(0, ursa_loop_new(&loop, &o));
    OneOfEach h;
    ASSERT_NO_FATAL_FAILURE(h.Open(loop));
    ursa_stream &s = h.s;
    ursa_stream s2{};
    ursa_listener &l = h.l;
    ursa_dgram &d = h.d;
    ursa_poll &p = h.p;
    ursa_signal &sig = h.sig;
    int efd = h.efd;
    ASSERT_EQ(0, ursa_stream_open(loop, &s2, h.sv[1]));
    static bool s2_closed;
    s2_closed = false;
    ASSERT_EQ(0,
              ursa_stream_close(&s2, [](ursa_handle *) { s2_closed = true; }));

    Walked w;
    walked = &w;
    ursa_loop_walk(
        loop,
        [](ursa_handle *h, void *arg) {
          auto *k = static_cast<Walked *>(arg);
          k->seen.emplace_back(h->type, h);
          k->closing.push_back(ursa_handle_closing(h));
        },
        &w);
    std::vector<std::pair<int, ursa_handle *>> want = {
        {URSA_HANDLE_STREAM, &s.handle},   {URSA_HANDLE_LISTENER, &l.handle},
        {URSA_HANDLE_DGRAM, &d.handle},    {URSA_HANDLE_POLL, &p.handle},
        {URSA_HANDLE_SIGNAL, &sig.handle}, {URSA_HANDLE_STREAM, &s2.handle}};
    EXPECT_EQ(want, w.seen);
    EXPECT_EQ((std::vector<int>{0, 0, 0, 0, 0, 1}), w.closing);

    EXPECT_EQ(5u, ursa_loop_close_all(loop, [](ursa_handle *h) {
                walked->closed_all.emplace_back(h->type, h);
              }));
    EXPECT_EQ(-EBUSY, ursa_loop_close(loop));
    for (int i = 0; i < 1000 && ursa_loop_run(loop, URSA_RUN_ONCE) > 0; i++) {
    }
    EXPECT_TRUE(s2_closed) << "a handle closing already keeps its callback";
    std::vector<std::pair<int, ursa_handle *>> got = w.closed_all;
    std::sort(got.begin(), got.end());
    want.pop_back();
    std::sort(want.begin(), want.end());
    EXPECT_EQ(want, got) << "backend " << (int)b;
    w.seen.clear();
    ursa_loop_walk(
        loop,
        [](ursa_handle *h, void *arg) {
          static_cast<Walked *>(arg)->seen.emplace_back(h->type, h);
        },
        &w);
    EXPECT_TRUE(w.seen.empty());
    EXPECT_EQ(0, ursa_loop_close(loop)) << ursa_error_detail();
    EXPECT_GE(fcntl(efd, F_GETFD), 0);
    close(efd);
  }
}

// End-of-round hooks run once per round, after all of that round's
// callbacks (three timers due together: one run after the three), in the
// order started; a hook started by a callback of the round runs at its
// end, one started by a hook waits a round; a hook stopped by another is
// not called; and hooks keep no loop running.  On both backends.
struct Rounds {
  std::vector<std::string> seen;
  ursa_round a{}, b{}, c{}, late{};
  ursa_timer t[3]{};
  int a_runs = 0;
};
Rounds *rounds;

TEST(Loop, EndOfRoundHooksRunAfterTheRoundsCallbacks) {
  for (ursa_backend be : t::kBackends) {
    ursa_loop_options o = t::OptionsFor(be);
    t::Loop lp(&o);
    ASSERT_EQ(0, lp.status());
    Rounds r;
    rounds = &r;
    ASSERT_EQ(0, ursa_round_start(lp.get(), &r.a, [](ursa_round *) {
      rounds->seen.push_back("A");
      if (++rounds->a_runs == 1) {
        // From inside a hook: waits for the next round.
        ASSERT_EQ(0, ursa_round_start(rounds->a.loop, &rounds->late,
                                      [](ursa_round *h) {
                                        rounds->seen.push_back("L");
                                        ursa_round_stop(h);
                                      }));
        // A hook stopped by another is not called.
        EXPECT_EQ(0, ursa_round_stop(&rounds->b));
      }
    }));
    ASSERT_EQ(0, ursa_round_start(lp.get(), &r.b, [](ursa_round *) {
      rounds->seen.push_back("B");
    }));
    EXPECT_EQ(-EBUSY, ursa_round_start(lp.get(), &r.a, [](ursa_round *) {}));
    for (int i = 0; i < 3; i++)
      ASSERT_EQ(0, ursa_timer_start(lp.get(), &r.t[i], 0, 0,
                                    [](ursa_timer *t, int) {
                                      int i = (int)(t - rounds->t);
                                      rounds->seen.push_back("t" +
                                                             std::to_string(i));
                                      if (i == 2) {
                                        // From a callback: this round's end.
                                        ursa_round_start(
                                            t->loop, &rounds->c,
                                            [](ursa_round *h) {
                                              rounds->seen.push_back("C");
                                              ursa_round_stop(h);
                                            });
                                      }
                                    }));
    ASSERT_TRUE(lp.RunUntil([&] { return r.seen.size() >= 5; }));
    // One more round with nothing but a post, to see the late hook.
    static bool posted;
    posted = false;
    ASSERT_EQ(0, ursa_post_call(lp.get(), [](void *, int) { posted = true; },
                                nullptr));
    ASSERT_TRUE(lp.RunUntil([&] { return posted && r.a_runs >= 2; }));
    ASSERT_GE(r.seen.size(), 7u);
    EXPECT_EQ((std::vector<std::string>{"t0", "t1", "t2", "A", "C", "A", "L"}),
              std::vector<std::string>(r.seen.begin(), r.seen.begin() + 7))
        << "backend " << (int)be;
    EXPECT_EQ(-ENOENT, ursa_round_stop(&r.b));
    EXPECT_EQ(-ENOENT, ursa_round_stop(&r.c)) << "it stopped itself";
    // Only a hook is left: the loop ends instead of waiting for ever.
    EXPECT_EQ(0, ursa_loop_run(lp.get(), URSA_RUN_DEFAULT));
    EXPECT_EQ(0, ursa_round_stop(&r.a));
    EXPECT_EQ(-EINVAL, ursa_round_start(nullptr, &r.a, [](ursa_round *) {}));
    EXPECT_EQ(-ENOENT, ursa_round_stop(nullptr));
    lp.Finish();
  }
}

// The feature table is the one source: 23 features, a name each, unique;
// the opt-in mask the six that the enable option takes; the list text
// the apps and the refusals print.
TEST(Features, OneTableGivesNamesCountAndOptIn) {
  EXPECT_EQ(23, URSA_FEAT_COUNT);
  std::vector<std::string> names;
  for (uint32_t i = 0; i < URSA_FEAT_COUNT; i++) {
    const char *n = ursa_feature_name(1u << i);
    ASSERT_NE(nullptr, n) << i;
    for (auto &m : names) EXPECT_NE(m, n);
    names.push_back(n);
  }
  EXPECT_EQ(nullptr, ursa_feature_name(1u << URSA_FEAT_COUNT));
  EXPECT_EQ(nullptr, ursa_feature_name(3));
  EXPECT_STREQ("multishot_recv", ursa_feature_name(URSA_FEAT_MULTISHOT_RECV));
  EXPECT_EQ(URSA_FEAT_READ_MULTISHOT | URSA_FEAT_RECV_BUNDLE |
                URSA_FEAT_BUF_INC | URSA_FEAT_SYNC_MSG_RING |
                URSA_FEAT_REG_WAIT | URSA_FEAT_FILE_SPLICE,
            URSA_FEAT_OPT_IN);
  const char *opt_in =
      "recv_bundle, buf_inc, read_multishot, sync_msg_ring, reg_wait and "
      "file_splice";
  char buf[128];
  EXPECT_EQ(strlen(opt_in),
            ursa_feature_list(URSA_FEAT_OPT_IN, buf, sizeof(buf)));
  EXPECT_STREQ(opt_in, buf);
  ursa_feature_list(URSA_FEAT_MSG_RING, buf, sizeof(buf));
  EXPECT_STREQ("msg_ring", buf);
  ursa_feature_list(URSA_FEAT_SEND_ZC | URSA_FEAT_NODROP, buf, sizeof(buf));
  EXPECT_STREQ("send_zc and nodrop", buf);
  ursa_feature_list(0, buf, sizeof(buf));
  EXPECT_STREQ("", buf);
  char small[8];
  EXPECT_EQ(strlen(opt_in),
            ursa_feature_list(URSA_FEAT_OPT_IN, small, sizeof(small)));
  EXPECT_STREQ("recv_bu", small);
  EXPECT_EQ(7u, strlen(small)) << "cut, and terminated";
  // A loop refuses a feature that is not opt-in, naming those that are.
  ursa_loop_options o{};
  o.enable = URSA_FEAT_SEND_ZC;
  ursa_loop *loop = nullptr;
  EXPECT_EQ(-EINVAL, ursa_loop_new(&loop, &o));
  EXPECT_NE(nullptr,
            strstr(ursa_error_detail(), "only recv_bundle, buf_inc, "
                                        "read_multishot, sync_msg_ring, "
                                        "reg_wait and file_splice"))
      << ursa_error_detail();
}

// One close for any handle: ursa_close() and each typed close take a NULL
// callback (the handle closes, its descriptor goes, the loop ends and
// frees), refuse a second close with -EALREADY, and a handle that is not
// open (never opened, or closed) with -EINVAL, naming it.  data survives.
TEST(Loop, EveryHandleClosesWithANullCallback) {
  for (ursa_backend b : t::kBackends) {
    ursa_loop_options o = t::OptionsFor(b);
    ursa_loop *loop = nullptr;
    ASSERT_EQ(0, ursa_loop_new(&loop, &o));
    OneOfEach h;
    int mark = 7;
    h.s.data = &mark;
    ASSERT_NO_FATAL_FAILURE(h.Open(loop));
    ursa_stream &s = h.s;
    ursa_stream s2{};
    ursa_listener &l = h.l;
    ursa_dgram &d = h.d;
    ursa_poll &p = h.p;
    ursa_signal &sig = h.sig;
    int efd = h.efd, sv0 = h.sv[0];
    ASSERT_EQ(0, ursa_stream_open(loop, &s2, h.sv[1]));
    EXPECT_EQ(&mark, s.data) << "open keeps data";
    EXPECT_EQ(&mark, s.handle.data) << "data is the handle's";
    EXPECT_EQ(loop, s.handle.loop);
    EXPECT_EQ((void *)&s, (void *)&s.handle) << "the handle comes first";
    int sigfd = sig.poll.fd;

    EXPECT_EQ(0, ursa_stream_close(&s, nullptr));
    EXPECT_EQ(-EALREADY, ursa_stream_close(&s, nullptr));
    EXPECT_EQ(-EALREADY, ursa_close(&s.handle, nullptr));
    EXPECT_TRUE(ursa_handle_closing(&s.handle));
    EXPECT_EQ(0, ursa_close(&s2.handle, nullptr));
    EXPECT_EQ(0, ursa_listener_close(&l, nullptr));
    EXPECT_EQ(0, ursa_close(&d.handle, nullptr));
    EXPECT_EQ(0, ursa_poll_close(&p, nullptr));
    EXPECT_EQ(0, ursa_close((ursa_handle *)&sig, nullptr));
    for (int i = 0; i < 1000 && ursa_loop_run(loop, URSA_RUN_ONCE) > 0; i++) {
    }
    EXPECT_EQ(0u, ursa_loop_alive(loop));
    EXPECT_FALSE(ursa_handle_closing(&s.handle)) << "closed: not open";
    EXPECT_EQ(&mark, s.data);
    EXPECT_EQ(-EINVAL, ursa_close(&s.handle, nullptr));
    EXPECT_NE(nullptr, strstr(ursa_error_detail(), "not open"))
        << ursa_error_detail();
    EXPECT_EQ(-EINVAL, ursa_stream_close(&s, nullptr));
    ursa_stream never{};
    EXPECT_EQ(-EINVAL, ursa_close(&never.handle, nullptr));
    EXPECT_EQ(-EINVAL, ursa_close(nullptr, nullptr));
    EXPECT_EQ(-1, fcntl(sv0, F_GETFD)) << "the stream's socket is closed";
    EXPECT_EQ(-1, fcntl(sigfd, F_GETFD)) << "the signalfd is closed";
    EXPECT_GE(fcntl(efd, F_GETFD), 0) << "a watcher's fd stays the caller's";
    EXPECT_EQ(0, ursa_loop_close(loop)) << ursa_error_detail();
    close(efd);
  }
}

// The loop is freed only once every handle is closed: an open stream, a
// bound datagram socket and a listener each keep ursa_loop_close() at
// -EBUSY, even with no operation in flight.
TEST(Loop, CloseIsRefusedWhileAHandleIsOpen) {
  ursa_loop *loop = nullptr;
  ASSERT_EQ(0, ursa_loop_new(&loop, nullptr));
  int sv[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
  ursa_stream s{};
  ASSERT_EQ(0, ursa_stream_open(loop, &s, sv[0]));
  ursa_dgram d{};
  sockaddr_storage ss;
  socklen_t len = t::LoopbackAddr(AF_INET, &ss);
  ASSERT_EQ(0, ursa_dgram_bind(loop, &d, (sockaddr *)&ss, len, 0));
  ursa_listener l{};
  ASSERT_EQ(0, ursa_listen(loop, &l, (sockaddr *)&ss, len, 0, 0,
                           [](ursa_listener *, int) {}));
  EXPECT_EQ(-EBUSY, ursa_loop_close(loop)) << "a stream, a socket, a listener";
  static int closed;
  closed = 0;
  ASSERT_EQ(0, ursa_listener_close(&l, [](ursa_handle *) { closed++; }));
  while (closed < 1) ASSERT_GE(ursa_loop_run(loop, URSA_RUN_ONCE), 0);
  EXPECT_EQ(0u, ursa_loop_alive(loop));
  EXPECT_EQ(-EBUSY, ursa_loop_close(loop)) << "a stream and a socket open";
  ASSERT_EQ(0, ursa_stream_close(&s, [](ursa_handle *) { closed++; }));
  while (closed < 2) ASSERT_GE(ursa_loop_run(loop, URSA_RUN_ONCE), 0);
  EXPECT_EQ(-EBUSY, ursa_loop_close(loop)) << "a bound socket open";
  ASSERT_EQ(0, ursa_dgram_close(&d, [](ursa_handle *) { closed++; }));
  while (closed < 3) ASSERT_GE(ursa_loop_run(loop, URSA_RUN_ONCE), 0);
  EXPECT_EQ(0, ursa_loop_close(loop));
  close(sv[1]);
}

TEST(Loop, RefusesBadOptionsNamingThem) {
  ursa_loop *loop = nullptr;
  ursa_loop_options o{};
  o.buf_count = 100;
  EXPECT_EQ(-EINVAL, ursa_loop_new(&loop, &o));
  EXPECT_EQ(nullptr, loop);
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "buf_count 100"));
  o = ursa_loop_options{};
  o.sq_entries = 1u << 20;
  EXPECT_EQ(-EINVAL, ursa_loop_new(&loop, &o));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "sq_entries"));
  o = ursa_loop_options{};
  o.sq_entries = 64;
  o.cq_entries = 8;
  EXPECT_EQ(-EINVAL, ursa_loop_new(&loop, &o));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "cq_entries"));
  o = ursa_loop_options{};
  o.disable = 1u << 30;
  EXPECT_EQ(-EINVAL, ursa_loop_new(&loop, &o));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "disable"));
  o = ursa_loop_options{};
  o.enable = URSA_FEAT_SEND_ZC; // has its own option: not opt-in here
  EXPECT_EQ(-EINVAL, ursa_loop_new(&loop, &o));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "enable 0x100"));
  o = ursa_loop_options{};
  o.batch_wait_us = 10001;
  EXPECT_EQ(-EINVAL, ursa_loop_new(&loop, &o));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "batch_wait_us 10001"));
  o = ursa_loop_options{};
  o.batch_policy = (ursa_batch_policy)3;
  EXPECT_EQ(-EINVAL, ursa_loop_new(&loop, &o));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "batch_policy 3"));
  o = ursa_loop_options{};
  o.enable = URSA_FEAT_MIN_WAIT; // on by default now: batch_policy rules it
  EXPECT_EQ(-EINVAL, ursa_loop_new(&loop, &o));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "enable 0x10000"));
  EXPECT_EQ(-EINVAL, ursa_loop_new(nullptr, nullptr));
  EXPECT_EQ(-EINVAL, ursa_loop_run(nullptr, URSA_RUN_DEFAULT));
  EXPECT_EQ(-EINVAL, ursa_loop_close(nullptr));
}

// The opt-in features are used only when asked for, and disable wins.
TEST(Loop, OptInFeaturesFollowTheEnableOption) {
  ursa_features f;
  ASSERT_EQ(0, ursa_probe(&f));
  const uint32_t both = URSA_FEAT_RECV_BUNDLE | URSA_FEAT_BUF_INC;
  struct {
    uint32_t enable, disable;
  } cases[] = {{0, 0}, {both, 0}, {URSA_FEAT_BUF_INC, 0},
               {both, URSA_FEAT_RECV_BUNDLE}, {both, both}};
  for (auto &c : cases) {
    ursa_loop_options o{};
    o.enable = c.enable;
    o.disable = c.disable;
    ursa_loop *loop;
    ASSERT_EQ(0, ursa_loop_new(&loop, &o));
    ursa_features lf;
    ursa_loop_features(loop, &lf);
    EXPECT_EQ(c.enable & ~c.disable & f.kernel, lf.used & both)
        << "enable " << c.enable << " disable " << c.disable;
    EXPECT_EQ(0, ursa_loop_close(loop));
  }
}

// Minimum waits are used by default where the kernel has them; the batch
// policy NEVER and disabling the feature both leave them off.
TEST(Loop, MinWaitFollowsTheBatchPolicy) {
  ursa_features f;
  ASSERT_EQ(0, ursa_probe(&f));
  EXPECT_TRUE(f.kernel & URSA_FEAT_MIN_WAIT) << "the kernel here (6.12 and "
                                                "later) has min-wait";
  struct {
    ursa_batch_policy policy;
    uint32_t disable;
    bool used;
  } cases[] = {{URSA_BATCH_AUTO, 0, true},
               {URSA_BATCH_ALWAYS, 0, true},
               {URSA_BATCH_NEVER, 0, false},
               {URSA_BATCH_AUTO, URSA_FEAT_MIN_WAIT, false},
               {URSA_BATCH_ALWAYS, URSA_FEAT_MIN_WAIT, false}};
  for (auto &c : cases) {
    ursa_loop_options o{};
    o.batch_policy = c.policy;
    o.disable = c.disable;
    ursa_loop *loop;
    ASSERT_EQ(0, ursa_loop_new(&loop, &o));
    ursa_features lf;
    ursa_loop_features(loop, &lf);
    EXPECT_EQ(c.used && (f.kernel & URSA_FEAT_MIN_WAIT),
              (lf.used & URSA_FEAT_MIN_WAIT) != 0)
        << "policy " << c.policy << " disable " << c.disable;
    char why[4096];
    ursa_features_format(&lf, 0, why, sizeof(why));
    if (!c.used) {
      EXPECT_NE(nullptr, strstr(why, "disabled by option")) << why;
    }
    EXPECT_EQ(0, ursa_loop_close(loop));
  }
  ursa_loop_options o{};
  o.backend = URSA_BACKEND_EPOLL;
  o.batch_policy = URSA_BATCH_ALWAYS;
  ursa_loop *loop;
  ASSERT_EQ(0, ursa_loop_new(&loop, &o)) << "epoll takes the policy, unused";
  ursa_features lf;
  ursa_loop_features(loop, &lf);
  EXPECT_EQ(0u, lf.used & URSA_FEAT_MIN_WAIT);
  EXPECT_EQ(0, ursa_loop_close(loop));
}

TEST(Loop, ProbeReportsKernelFeaturesAsTextAndJson) {
  ursa_features f;
  ASSERT_EQ(0, ursa_probe(&f)) << ursa_strerror(f.setup_error);
  EXPECT_EQ(0, f.setup_error);
  EXPECT_TRUE(f.kernel & URSA_FEAT_BUF_RING);
  EXPECT_NE('\0', f.kernel_release[0]);
  char text[4096];
  int n = ursa_features_format(&f, 0, text, sizeof(text));
  ASSERT_GT(n, 0);
  ASSERT_LT(n, (int)sizeof(text));
  for (uint32_t i = 0; i < URSA_FEAT_COUNT; i++)
    EXPECT_NE(nullptr, strstr(text, ursa_feature_name(1u << i))) << i;
  char json[4096];
  n = ursa_features_format(&f, 1, json, sizeof(json));
  ASSERT_LT(n, (int)sizeof(json));
  EXPECT_EQ('{', json[0]);
  EXPECT_EQ('}', json[n - 1]);
  int depth = 0;
  for (int i = 0; i < n; i++) {
    depth += json[i] == '{';
    depth -= json[i] == '}';
    ASSERT_GE(depth, 0);
  }
  EXPECT_EQ(0, depth);
  EXPECT_NE(nullptr, strstr(json, "\"io_uring\":true"));
  EXPECT_NE(nullptr, strstr(json, "\"multishot_recv\":{"));
  // A short buffer is cut, NUL-terminated, and the length needed returned.
  char tiny[8];
  EXPECT_EQ(n, ursa_features_format(&f, 1, tiny, sizeof(tiny)));
  EXPECT_EQ('\0', tiny[7]);
  EXPECT_EQ(nullptr, ursa_feature_name(3));
}

TEST(Loop, UsesModernSetupAndHonoursDisable) {
  ursa_features k;
  ASSERT_EQ(0, ursa_probe(&k));
  if (!(k.kernel & URSA_FEAT_DEFER_TASKRUN))
    GTEST_SKIP() << "needs DEFER_TASKRUN (Linux 6.1)";
  t::Loop a;
  ASSERT_EQ(0, a.status());
  ursa_features f;
  ursa_loop_features(a.get(), &f);
  EXPECT_TRUE(f.used & URSA_FEAT_DEFER_TASKRUN);
  EXPECT_TRUE(f.used & URSA_FEAT_SINGLE_ISSUER);
  EXPECT_TRUE(f.used & URSA_FEAT_BUF_RING);
  EXPECT_TRUE(f.used & URSA_FEAT_MULTISHOT_RECV);
  EXPECT_TRUE(f.used & URSA_FEAT_MULTISHOT_ACCEPT);
  ursa_loop_options o{};
  o.disable = URSA_FEAT_SINGLE_ISSUER | URSA_FEAT_MULTISHOT_RECV;
  t::Loop b(&o);
  ASSERT_EQ(0, b.status());
  ursa_loop_features(b.get(), &f);
  EXPECT_FALSE(f.used & URSA_FEAT_SINGLE_ISSUER);
  EXPECT_FALSE(f.used & URSA_FEAT_DEFER_TASKRUN) << "needs SINGLE_ISSUER";
  EXPECT_FALSE(f.used & URSA_FEAT_MULTISHOT_RECV);
  char text[4096];
  ursa_features_format(&f, 0, text, sizeof(text));
  EXPECT_NE(nullptr, strstr(text, "disabled by option"));
}

void StopAtThree(ursa_timer *tm, int status) {
  int *n = static_cast<int *>(tm->data);
  if (status == 0 && ++*n == 3) ursa_loop_stop(tm->loop);
}

TEST(Loop, StopFromCallbackReturnsWithWorkLeft) {
  t::Loop lp;
  ASSERT_EQ(0, lp.status());
  ursa_timer tm{};
  int n = 0;
  tm.data = &n;
  ASSERT_EQ(0, ursa_timer_start(lp.get(), &tm, 1, 1, StopAtThree));
  EXPECT_EQ(1, ursa_loop_run(lp.get(), URSA_RUN_DEFAULT));
  EXPECT_EQ(3, n);
  EXPECT_EQ(-EBUSY, ursa_loop_close(lp.get()));
  ASSERT_EQ(0, ursa_timer_stop(&tm));
  lp.Finish();
}

TEST(Loop, RunIsNotReentrant) {
  t::Loop lp;
  ASSERT_EQ(0, lp.status());
  ursa_timer tm{};
  static int inner;
  inner = 1;
  ASSERT_EQ(0, ursa_timer_start(lp.get(), &tm, 0, 0, [](ursa_timer *t, int) {
              inner = ursa_loop_run(t->loop, URSA_RUN_NOWAIT);
            }));
  EXPECT_EQ(0, ursa_loop_run(lp.get(), URSA_RUN_DEFAULT));
  EXPECT_EQ(-EBUSY, inner);
  lp.Finish();
}

TEST(Loop, NowaitDoesNotBlock) {
  t::Loop lp;
  ASSERT_EQ(0, lp.status());
  ursa_timer tm{};
  ASSERT_EQ(0, ursa_timer_start(lp.get(), &tm, 60000, 0,
                                [](ursa_timer *, int) {}));
  uint64_t t0 = ursa_loop_now(lp.get());
  for (int i = 0; i < 10; i++)
    EXPECT_EQ(1, ursa_loop_run(lp.get(), URSA_RUN_NOWAIT));
  EXPECT_LT(ursa_loop_now(lp.get()) - t0, 1000u);
  ursa_timer_stop(&tm);
  lp.Finish();
}

// RUN_ONCE waits for a callback: a signal that interrupts its wait
// (EINTR from io_uring_enter or epoll_wait) dispatches nothing, so it
// waits on until the timer is due.  On both backends.
void NoteSignal(int) {}

TEST(Loop, OnceWaitsOnThroughASignal) {
  struct sigaction sa {}, old{};
  sa.sa_handler = NoteSignal; /* no SA_RESTART: the wait sees EINTR */
  ASSERT_EQ(0, sigaction(SIGUSR1, &sa, &old));
  for (ursa_backend b : t::kBackends) {
    ursa_loop_options o{};
    o.backend = b;
    t::Loop lp(&o);
    ASSERT_EQ(0, lp.status());
    ursa_timer tm{};
    static int fired;
    fired = 0;
    ASSERT_EQ(0, ursa_timer_start(lp.get(), &tm, 150, 0,
                                  [](ursa_timer *, int) { fired++; }));
    pthread_t self = pthread_self();
    std::thread kicker([self] {
      for (int i = 0; i < 3; i++) {
        usleep(20000);
        pthread_kill(self, SIGUSR1);
      }
    });
    uint64_t t0 = ursa_loop_now(lp.get());
    EXPECT_EQ(0, ursa_loop_run(lp.get(), URSA_RUN_ONCE));
    kicker.join();
    EXPECT_EQ(1, fired) << ursa_loop_backend(lp.get())
                        << ": RUN_ONCE returned with nothing called back";
    EXPECT_GE(ursa_loop_now(lp.get()) - t0, 140u);
    ursa_timer_stop(&tm);
    lp.Finish();
  }
  sigaction(SIGUSR1, &old, nullptr);
}

// 500 datagram sends at once through an SQ of 4: a full SQ is handed to
// the kernel before more is queued, and every datagram arrives once,
// intact.
TEST(Loop, TinySubmissionQueueDropsNothing) {
  ursa_loop_options o{};
  o.sq_entries = 4;
  o.cq_entries = 8;
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  // A Unix datagram pair: a full receive queue holds senders back rather
  // than dropping.
  int sv[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv));
  ursa_dgram tx{}, rx{};
  ASSERT_EQ(0, ursa_dgram_open(lp.get(), &tx, sv[0]));
  ASSERT_EQ(0, ursa_dgram_open(lp.get(), &rx, sv[1]));
  const int kSends = 500;
  static std::vector<int> seen;
  seen.assign(kSends, 0);
  static int bad;
  bad = 0;
  ASSERT_EQ(
      0, ursa_dgram_recv_start(&rx, [](ursa_dgram *, ssize_t n, const void *buf,
                                       const sockaddr *, socklen_t, unsigned) {
        uint16_t v;
        if (n != (ssize_t)sizeof(v)) {
          bad++;
          return;
        }
        memcpy(&v, buf, sizeof(v));
        if (v < seen.size())
          seen[v]++;
        else
          bad++;
      }));
  std::vector<ursa_send_req> reqs(kSends);
  std::vector<uint16_t> payload(kSends);
  static int sent;
  sent = 0;
  for (int i = 0; i < kSends; i++) {
    payload[i] = (uint16_t)i;
    ASSERT_EQ(0, ursa_dgram_send(&reqs[i], &tx, &payload[i], sizeof(uint16_t),
                                 nullptr, 0, [](ursa_send_req *, int st) {
                                   if (st == 0) sent++;
                                 }));
  }
  ASSERT_TRUE(lp.RunUntil([&] {
    int got = 0;
    for (int c : seen) got += c;
    return sent == kSends && got >= kSends;
  }));
  for (int i = 0; i < kSends; i++) EXPECT_EQ(1, seen[i]) << "datagram " << i;
  EXPECT_EQ(0, bad);
  ursa_stats st;
  ursa_loop_stats(lp.get(), &st);
  EXPECT_GE(st.sqes, (uint64_t)kSends);
  EXPECT_GT(st.enters, (uint64_t)kSends / 4 - 1) << "SQ of 4 needs submits";
  static int closed;
  closed = 0;
  ASSERT_EQ(0, ursa_dgram_close(&tx, [](ursa_handle *) { closed++; }));
  ASSERT_EQ(0, ursa_dgram_close(&rx, [](ursa_handle *) { closed++; }));
  ASSERT_TRUE(lp.RunUntil([&] { return closed == 2; }));
  lp.Finish();
}

TEST(Loop, ErrorNamesAndMessages) {
  EXPECT_STREQ("ECONNREFUSED", ursa_err_name(-ECONNREFUSED));
  EXPECT_STREQ("connection refused", ursa_strerror(-ECONNREFUSED));
  EXPECT_STREQ("EOF", ursa_err_name(URSA_EOF));
  EXPECT_STREQ("end of stream", ursa_strerror(URSA_EOF));
  EXPECT_STREQ("UNKNOWN", ursa_err_name(-99999));
  EXPECT_STREQ("unknown error", ursa_strerror(12345));
  EXPECT_STREQ("0.1.0", ursa_version_string());
  EXPECT_EQ((unsigned)URSA_VERSION_HEX, ursa_version());
}

// One round trip of n bytes through an echo server on loop, byte-exact.
bool EchoRoundTrip(ursa_loop *loop, size_t n) {
  t::EchoServer srv(loop, AF_INET);
  std::vector<char> payload = t::RandomBytes(n, 7);
  t::EchoClient c(loop, srv.addr(), srv.addrlen(), payload, 4096);
  for (int i = 0; i < 100000 && !c.done(); i++)
    if (ursa_loop_run(loop, URSA_RUN_ONCE) < 0) return false;
  srv.Close();
  for (int i = 0; i < 100000 && !srv.closed(); i++)
    if (ursa_loop_run(loop, URSA_RUN_ONCE) < 0) return false;
  return c.done() && c.got.size() == payload.size() && c.got == payload &&
         srv.closed();
}

// Where io_uring_setup is refused, URING fails with the reason and AUTO
// (the default) runs the same program on epoll, saying why.
TEST(Loop, BlockedIoUringFallsBackToEpollUnderAuto) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (t_block_io_uring() != 0) _exit(10);
    ursa_loop *loop = nullptr;
    ursa_loop_options o{};
    o.backend = URSA_BACKEND_URING;
    int r = ursa_loop_new(&loop, &o);
    if (r != -EPERM || loop) _exit(11);
    char why[512];
    ursa_explain_setup_error(r, why, sizeof(why));
    if (!strstr(why, "seccomp") && !strstr(why, "io_uring_disabled")) _exit(12);
    ursa_features f;
    if (ursa_probe(&f) != -EPERM || f.setup_error != -EPERM) _exit(13);
    char json[8192];
    ursa_features_format(&f, 1, json, sizeof(json));
    if (!strstr(json, "\"io_uring\":false") || !strstr(json, "EPERM"))
      _exit(14);
    /* Nothing was asked of a kernel that refused the ring. */
    if (strstr(json, "kernel lacks it") || !strstr(json, "not probed"))
      _exit(21);
    if (ursa_loop_new(&loop, nullptr) != 0 || !loop) _exit(15);
    if (strcmp("epoll", ursa_loop_backend(loop))) _exit(16);
    ursa_loop_features(loop, &f);
    if (f.backend != URSA_BACKEND_EPOLL || !strstr(f.backend_why, "EPERM") ||
        !strstr(f.backend_why, "seccomp"))
      _exit(17);
    ursa_features_format(&f, 0, json, sizeof(json));
    if (!strstr(json, "backend: epoll (auto: io_uring set-up failed")) _exit(18);
    if (!EchoRoundTrip(loop, 1 << 20)) _exit(19);
    if (ursa_loop_close(loop) != 0) _exit(20);
    _exit(0);
  }
  int st = 0;
  ASSERT_EQ(pid, waitpid(pid, &st, 0));
  ASSERT_TRUE(WIFEXITED(st));
  if (WEXITSTATUS(st) == 10) GTEST_SKIP() << "needs seccomp filters";
  EXPECT_EQ(0, WEXITSTATUS(st)) << "child step " << WEXITSTATUS(st) << " failed";
}

// The backend asked for is the one used, and the report says so: on epoll
// the features only io_uring has are never shown in use, even when their
// options ask for them.
TEST(Loop, EpollBackendReportsItselfHonestly) {
  ursa_loop_options o{};
  o.backend = URSA_BACKEND_EPOLL;
  o.direct_files = 64;
  o.zc_threshold = 1024;
  o.enable = URSA_FEAT_RECV_BUNDLE | URSA_FEAT_BUF_INC;
  ursa_loop *loop = nullptr;
  ASSERT_EQ(0, ursa_loop_new(&loop, &o));
  EXPECT_STREQ("epoll", ursa_loop_backend(loop));
  ursa_features f;
  ursa_loop_features(loop, &f);
  EXPECT_EQ(URSA_BACKEND_EPOLL, f.backend);
  EXPECT_NE(nullptr, strstr(f.backend_why, "asked for")) << f.backend_why;
  const uint32_t only_uring =
      URSA_FEAT_SUBMIT_ALL | URSA_FEAT_COOP_TASKRUN | URSA_FEAT_SINGLE_ISSUER |
      URSA_FEAT_DEFER_TASKRUN | URSA_FEAT_REG_RING_FD | URSA_FEAT_SEND_ZC |
      URSA_FEAT_DIRECT_FILES | URSA_FEAT_RECV_BUNDLE | URSA_FEAT_BUF_INC |
      URSA_FEAT_FAST_POLL | URSA_FEAT_NODROP;
  EXPECT_EQ(0u, f.used & only_uring) << std::hex << f.used;
  EXPECT_EQ((uint32_t)(URSA_FEAT_BUF_RING | URSA_FEAT_MULTISHOT_ACCEPT |
                       URSA_FEAT_MULTISHOT_RECV | URSA_FEAT_FILE_INLINE |
                       URSA_FEAT_WAITID),
            f.used);
  char text[8192];
  ursa_features_format(&f, 0, text, sizeof(text));
  EXPECT_NE(nullptr, strstr(text, "backend: epoll (asked for")) << text;
  EXPECT_NE(nullptr, strstr(text, "io_uring only; backend is epoll")) << text;
  ursa_features_format(&f, 1, text, sizeof(text));
  EXPECT_NE(nullptr, strstr(text, "\"backend\":\"epoll\"")) << text;
  // A direct-descriptor loop's streams still get ordinary descriptors.
  ursa_stats st0;
  ursa_loop_stats(loop, &st0);
  EXPECT_TRUE(EchoRoundTrip(loop, 256 << 10));
  ursa_stats st1;
  ursa_loop_stats(loop, &st1);
  // enters counts the backend's system calls: at least a recv and a send
  // per 16 KiB each way.
  EXPECT_GT(st1.enters - st0.enters, 2u * (256 / 16));
  EXPECT_EQ(0u, st1.zc_sends);
  EXPECT_EQ(0u, st1.bufs_out);
  EXPECT_EQ(0, ursa_loop_close(loop));
}

// URSA_BACKEND overrides AUTO, and only AUTO; a bad value is refused by
// name.
TEST(Loop, BackendEnvironmentVariableOverridesAutoOnly) {
  struct Env {
    ~Env() { unsetenv("URSA_BACKEND"); }
  } restore;
  ursa_loop *loop = nullptr;
  ursa_features f;
  ASSERT_EQ(0, setenv("URSA_BACKEND", "epoll", 1));
  ASSERT_EQ(0, ursa_loop_new(&loop, nullptr));
  EXPECT_STREQ("epoll", ursa_loop_backend(loop));
  ursa_loop_features(loop, &f);
  EXPECT_NE(nullptr, strstr(f.backend_why, "URSA_BACKEND=epoll"));
  EXPECT_EQ(0, ursa_loop_close(loop));

  ursa_loop_options o{};
  o.backend = URSA_BACKEND_URING;
  ASSERT_EQ(0, ursa_loop_new(&loop, &o));
  EXPECT_STREQ("io_uring", ursa_loop_backend(loop));
  EXPECT_EQ(0, ursa_loop_close(loop));

  ASSERT_EQ(0, setenv("URSA_BACKEND", "uring", 1));
  o.backend = URSA_BACKEND_EPOLL;
  ASSERT_EQ(0, ursa_loop_new(&loop, &o));
  EXPECT_STREQ("epoll", ursa_loop_backend(loop));
  EXPECT_EQ(0, ursa_loop_close(loop));
  ASSERT_EQ(0, ursa_loop_new(&loop, nullptr));
  EXPECT_STREQ("io_uring", ursa_loop_backend(loop));
  EXPECT_EQ(0, ursa_loop_close(loop));

  ASSERT_EQ(0, setenv("URSA_BACKEND", "kqueue", 1));
  EXPECT_EQ(-EINVAL, ursa_loop_new(&loop, nullptr));
  EXPECT_EQ(nullptr, loop);
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "URSA_BACKEND=kqueue"))
      << ursa_error_detail();
  o.backend = (ursa_backend)7;
  EXPECT_EQ(-EINVAL, ursa_loop_new(&loop, &o));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "backend 7"));
}

TEST(Loop, ExplainsEachSetupError) {
  char buf[512];
  ursa_explain_setup_error(-ENOMEM, buf, sizeof(buf));
  EXPECT_NE(nullptr, strstr(buf, "RLIMIT_MEMLOCK"));
  ursa_explain_setup_error(-ENOSYS, buf, sizeof(buf));
  EXPECT_NE(nullptr, strstr(buf, "CONFIG_IO_URING"));
  ursa_explain_setup_error(-EOPNOTSUPP, buf, sizeof(buf));
  EXPECT_NE(nullptr, strstr(buf, "5.19"));
}

}  // namespace

namespace {

// After fork the child must not drive the parent's ring: run refuses.
TEST(Loop, ForkedChildCannotRunTheParentsLoop) {
  t::Loop lp;
  ASSERT_EQ(0, lp.status());
  ursa_timer tm{};
  ASSERT_EQ(0, ursa_timer_start(lp.get(), &tm, 1, 0, [](ursa_timer *, int) {}));
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int r = ursa_loop_run(lp.get(), URSA_RUN_NOWAIT);
    bool named = strstr(ursa_error_detail(), "after fork") != nullptr;
    // A loop of its own works.
    ursa_loop *mine = nullptr;
    int r2 = ursa_loop_new(&mine, nullptr);
    if (r2 == 0) r2 = ursa_loop_close(mine);
    _exit(r == -EPERM && named && r2 == 0 ? 0 : 1);
  }
  int st = 0;
  ASSERT_EQ(pid, waitpid(pid, &st, 0));
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  EXPECT_EQ(0, ursa_loop_run(lp.get(), URSA_RUN_DEFAULT));  // the parent's
  lp.Finish();
}

}  // namespace
