// loop_test.cc - loop creation and options, run modes, stop, the feature
// probe, error names, and a ring under pressure.
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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
               {both, URSA_FEAT_RECV_BUNDLE}};
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

TEST(Loop, TinySubmissionQueueDropsNothing) {
  ursa_loop_options o{};
  o.sq_entries = 4;
  o.cq_entries = 8;
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  const int kTimers = 500;
  std::vector<ursa_timer> ts(kTimers);
  static int fired;
  fired = 0;
  for (auto &tm : ts)
    ASSERT_EQ(0, ursa_timer_start(lp.get(), &tm, 1, 0,
                                  [](ursa_timer *, int st) {
                                    if (st == 0) fired++;
                                  }));
  EXPECT_EQ(0, ursa_loop_run(lp.get(), URSA_RUN_DEFAULT));
  EXPECT_EQ(kTimers, fired);
  ursa_stats st;
  ursa_loop_stats(lp.get(), &st);
  EXPECT_EQ((uint64_t)kTimers, st.sqes);
  EXPECT_EQ((uint64_t)kTimers, st.cqes);
  EXPECT_GT(st.enters, (uint64_t)kTimers / 4 - 1) << "SQ of 4 needs submits";
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

TEST(Loop, BlockedIoUringGivesAClearError) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (t_block_io_uring() != 0) _exit(10);
    ursa_loop *loop = nullptr;
    int r = ursa_loop_new(&loop, nullptr);
    if (r != -EPERM || loop) _exit(11);
    char why[512];
    ursa_explain_setup_error(r, why, sizeof(why));
    if (!strstr(why, "seccomp") && !strstr(why, "io_uring_disabled")) _exit(12);
    ursa_features f;
    if (ursa_probe(&f) != -EPERM || f.setup_error != -EPERM) _exit(13);
    char json[4096];
    ursa_features_format(&f, 1, json, sizeof(json));
    if (!strstr(json, "\"io_uring\":false") || !strstr(json, "EPERM"))
      _exit(14);
    _exit(0);
  }
  int st = 0;
  ASSERT_EQ(pid, waitpid(pid, &st, 0));
  ASSERT_TRUE(WIFEXITED(st));
  if (WEXITSTATUS(st) == 10) GTEST_SKIP() << "needs seccomp filters";
  EXPECT_EQ(0, WEXITSTATUS(st)) << "child step " << WEXITSTATUS(st) << " failed";
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
