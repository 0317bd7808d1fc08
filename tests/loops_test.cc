// loops_test.cc - apps/common/loops: N loops on N threads that start in
// order, share loop 0's address, stop together by posts, and pick where a
// connection goes.
#include <arpa/inet.h>
#include <pthread.h>

#include <atomic>
#include <thread>

#include "tests/testutil.h"

extern "C" {
#include "apps/common/loops.h"
}

namespace {

struct GroupRun {
  ursa_backend backend = URSA_BACKEND_URING;
  int fail_at = -1;  // this loop fails its set-up
  std::atomic<int> stops[LOOPS_MAX];
  std::atomic<int> wrong_thread{0};
  pthread_t thread[LOOPS_MAX];
  uint16_t port_seen[LOOPS_MAX];
  int publish_rc = 9;
  ursa_loop *loop[LOOPS_MAX];
  ursa_timer t{};
  GroupRun() {
    for (auto &s : stops) s = 0;
  }
};

void OnStop(loop_group *g, int i, void *arg) {
  GroupRun *r = static_cast<GroupRun *>(arg);
  r->stops[i]++;
  if (!pthread_equal(pthread_self(), r->thread[i])) r->wrong_thread++;
  ursa_loop_unhold(r->loop[i]);
  (void)g;
}

int Main(loop_group *g, int i, void *arg) {
  GroupRun *r = static_cast<GroupRun *>(arg);
  r->thread[i] = pthread_self();
  ursa_loop_options o = t::OptionsFor(r->backend);
  ursa_loop *loop;
  if (ursa_loop_new(&loop, &o) != 0) {
    loop_group_fail(g);
    return 2;
  }
  r->loop[i] = loop;
  loop_group_join(g, i, loop);
  if (i == r->fail_at) {
    loop_group_fail(g);
    ursa_loop_close(loop);
    return 2;
  }
  if (i == 0) {
    sockaddr_storage ss;
    socklen_t len = t::LoopbackAddr(AF_INET, &ss, 4242);
    r->publish_rc = loop_group_publish(g, &ss, len);
    if (r->publish_rc < 0) {
      ursa_loop_close(loop);
      return 2;
    }
    r->port_seen[0] = 4242;
  } else {
    sockaddr_storage ss;
    socklen_t len = 0;
    if (loop_group_address(g, &ss, &len) < 0 || loop_group_ready(g) < 0) {
      ursa_loop_close(loop);
      return 2;
    }
    r->port_seen[i] = t::PortOf(ss);
  }
  ursa_loop_hold(loop);
  if (i == 0) {
    // Loop 0 stops the group from a timer's callback, and itself.
    r->t.data = g;
    ursa_timer_start(loop, &r->t, 20, 0, [](ursa_timer *t, int) {
      loop_group *g = static_cast<loop_group *>(t->data);
      GroupRun *r = static_cast<GroupRun *>(g->arg);
      loop_group_stop(g, 0);
      loop_group_stop(g, 0);  // a second call does nothing
      ursa_loop_unhold(r->loop[0]);
    });
  }
  ursa_loop_run(loop, URSA_RUN_DEFAULT);
  return ursa_loop_close(loop) == 0 ? 0 : 1;
}

class LoopsTest : public ::testing::TestWithParam<ursa_backend> {};

TEST_P(LoopsTest, FourLoopsShareTheFirstsAddressAndStopTogether) {
  GroupRun r;
  r.backend = GetParam();
  loop_group g;
  EXPECT_EQ(0, loop_group_run(&g, 4, Main, OnStop, &r));
  EXPECT_EQ(0, r.publish_rc);
  for (int i = 0; i < 4; i++) EXPECT_EQ(4242, r.port_seen[i]) << i;
  EXPECT_EQ(0, r.stops[0].load()) << "the stopping loop stops itself";
  for (int i = 1; i < 4; i++) EXPECT_EQ(1, r.stops[i].load()) << i;
  EXPECT_EQ(0, r.wrong_thread.load());
}

TEST_P(LoopsTest, ALoopThatFailsItsSetUpEndsEveryLoop) {
  GroupRun r;
  r.backend = GetParam();
  r.fail_at = 2;
  loop_group g;
  EXPECT_EQ(2, loop_group_run(&g, 3, Main, OnStop, &r));
  EXPECT_EQ(-1, r.publish_rc);
}

TEST(Loops, PickGoesInTurnOrToTheFewest) {
  GroupRun r;
  loop_group g;
  // A group of one on this thread, just for the bookkeeping.
  loop_group_run(&g, 1, [](loop_group *, int, void *) { return 0; }, OnStop,
                 &r);
  g.n = 3;
  int seq[4];
  for (int &s : seq) s = loop_group_pick(&g, 0);
  EXPECT_EQ(0, seq[0]);
  EXPECT_EQ(1, seq[1]);
  EXPECT_EQ(2, seq[2]);
  EXPECT_EQ(0, seq[3]);
  loop_group_count(&g, 0, 2);
  loop_group_count(&g, 1, 1);
  loop_group_count(&g, 2, 3);
  EXPECT_EQ(1, loop_group_pick(&g, 1));
  loop_group_count(&g, 1, 5);
  EXPECT_EQ(0, loop_group_pick(&g, 1));
  EXPECT_EQ(11, loop_group_open(&g));
}

INSTANTIATE_TEST_SUITE_P(Backends, LoopsTest, ::testing::ValuesIn(t::kBackends),
                         [](const ::testing::TestParamInfo<ursa_backend> &i) {
                           return t::BackendName(i);
                         });

}  // namespace
