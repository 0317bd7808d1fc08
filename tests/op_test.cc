// op_test.cc - the core layer's operations from inside: deferred results,
// cancel in each state, the wait list an op joins when the SQ stays full
// (ops leave it in the order they joined), and the cancel list.
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "lib/src/core/core.h"
#include "tests/testutil.h"

namespace {

struct Seen {
  std::vector<int> order;
  std::vector<int> status;
};

struct Tm {
  ursa_timer t{};
  int id = 0;
  Seen *seen = nullptr;
  Tm *then = nullptr;  // deferred from this one's callback
};

void Record(ursa_timer *t, int status) {
  auto *m = reinterpret_cast<Tm *>(t);
  m->seen->order.push_back(m->id);
  m->seen->status.push_back(status);
  if (m->then) ursa__op_defer(t->loop, &m->then->t.op, -m->then->id);
}

// A timer-kind op that was never started, made ready for a deferred result.
void Prepare(ursa_loop *loop, Tm *m, int id, Seen *seen) {
  m->id = id;
  m->seen = seen;
  m->t.loop = loop;
  m->t.cb = Record;
  m->t.op.kind = URSA__KIND(timer);
}

class OpOnEachBackend : public ::testing::TestWithParam<ursa_backend> {};

// The kinds each layer registers next to its code make one table without
// gaps: every row has a name and a completion, and a kind number indexes
// its own row.
TEST(OpKinds, EveryRegisteredKindIsARowOfTheTable) {
  unsigned n = ursa__op_kinds();
  // The core's three (timer, post_wake, close) and the socket layer's
  // twelve, at least: a row the linker dropped, or padding between rows,
  // would break this count.
  EXPECT_GE(n, 15u);
  EXPECT_LT(n, 256u) << "op->kind is a byte";
  EXPECT_EQ(0u, (uintptr_t)__start_ursa_ops % 32);
  EXPECT_EQ(sizeof(ursa__op_type) * n,
            (size_t)((const char *)__stop_ursa_ops -
                     (const char *)__start_ursa_ops));
  for (unsigned i = 0; i < n; i++) {
    const ursa__op_type *t = &__start_ursa_ops[i];
    ASSERT_NE(nullptr, t->name) << "row " << i;
    EXPECT_NE(nullptr, t->complete) << t->name;
  }
  EXPECT_EQ(&ursa__op_timer, &__start_ursa_ops[URSA__KIND(timer)]);
  EXPECT_STREQ("timer", __start_ursa_ops[URSA__KIND(timer)].name);
  EXPECT_STREQ("read", __start_ursa_ops[URSA__KIND(post_wake)].name);
  unsigned closes = 0;
  for (unsigned i = 0; i < n; i++)
    closes += !strcmp(__start_ursa_ops[i].name, "close");
  EXPECT_EQ(1u, closes) << "every handle closes through one kind";
}

TEST_P(OpOnEachBackend, DeferredResultsRunFromTheLoopInOrderOnceEach) {
  ursa_loop_options o = t::OptionsFor(GetParam());
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  Seen seen;
  Tm a, b, c;
  Prepare(lp.get(), &a, 1, &seen);
  Prepare(lp.get(), &b, 2, &seen);
  Prepare(lp.get(), &c, 3, &seen);
  ursa__op_defer(lp.get(), &a.t.op, -1);
  ursa__op_defer(lp.get(), &b.t.op, -2);
  ursa__op_defer(lp.get(), &c.t.op, -3);
  EXPECT_TRUE(seen.order.empty()) << "a deferred result ran at once";
  EXPECT_EQ(3u, ursa_loop_alive(lp.get()));
  EXPECT_EQ(URSA__PENDING, a.t.op.state);
  EXPECT_EQ(3u, ursa__run_pending(lp.get()));
  EXPECT_EQ((std::vector<int>{1, 2, 3}), seen.order);
  EXPECT_EQ((std::vector<int>{-1, -2, -3}), seen.status);
  EXPECT_EQ(0u, ursa_loop_alive(lp.get()));
  EXPECT_EQ(0u, ursa__run_pending(lp.get())) << "each runs once";
  lp.Finish();
}

TEST_P(OpOnEachBackend, AResultDeferredByACallbackWaitsForTheNextPass) {
  ursa_loop_options o = t::OptionsFor(GetParam());
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  Seen seen;
  Tm a, b;
  Prepare(lp.get(), &a, 1, &seen);
  Prepare(lp.get(), &b, 2, &seen);
  a.then = &b;
  ursa__op_defer(lp.get(), &a.t.op, -1);
  EXPECT_EQ(1u, ursa__run_pending(lp.get()));
  EXPECT_EQ((std::vector<int>{1}), seen.order);
  EXPECT_EQ(1u, ursa__run_pending(lp.get()));
  EXPECT_EQ((std::vector<int>{1, 2}), seen.order);
  lp.Finish();
}

TEST_P(OpOnEachBackend, CancelFollowsTheOpsState) {
  ursa_loop_options o = t::OptionsFor(GetParam());
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  Seen seen;
  Tm idle, deferred;
  Prepare(lp.get(), &idle, 1, &seen);
  EXPECT_EQ(-ENOENT, ursa__op_cancel(lp.get(), &idle.t.op)) << "idle";
  // A result that is in: the callback is still to come.
  Prepare(lp.get(), &deferred, 2, &seen);
  ursa__op_defer(lp.get(), &deferred.t.op, -7);
  EXPECT_EQ(-EALREADY, ursa__op_cancel(lp.get(), &deferred.t.op));
  // Armed (a timer in the heap): taken out, -ECANCELED deferred, and a
  // second cancel is the same request again.
  Tm armed;
  Prepare(lp.get(), &armed, 3, &seen);
  ASSERT_EQ(0, ursa_timer_start(lp.get(), &armed.t, 60000, 0, Record));
  EXPECT_EQ(URSA__ARMED, armed.t.op.state);
  EXPECT_EQ(0, ursa__op_cancel(lp.get(), &armed.t.op));
  EXPECT_EQ(URSA__PENDING, armed.t.op.state);
  EXPECT_EQ(0, ursa__op_cancel(lp.get(), &armed.t.op));
  EXPECT_EQ(nullptr, lp.get()->timers.root) << "still in the heap";
  EXPECT_EQ(2u, ursa__run_pending(lp.get()));
  EXPECT_EQ((std::vector<int>{2, 3}), seen.order);
  EXPECT_EQ((std::vector<int>{-7, -ECANCELED}), seen.status);
  // An unknown kind is refused by ursa_cancel, not indexed.
  ursa_op bogus{};
  bogus.kind = (uint8_t)ursa__op_kinds();
  bogus.state = URSA__INFLIGHT;
  EXPECT_EQ(-EINVAL, ursa_cancel(lp.get(), &bogus));
  lp.Finish();
}

struct Sent {
  ursa_write_req w{};
  int status = 1;
};

// Without SUBMIT_ALL the kernel stops a batch at the first SQE it
// refuses, so an SQ full of refused SQEs frees one slot per submit: a
// two-SQE op (a write with its linked timeout) cannot get room and joins
// the wait list, and an op after it waits behind it although one slot is
// free, so that ops reach the kernel in the order they were started.
TEST(Op, AFullSqQueuesOpsThatLeaveInOrder) {
  ursa_loop_options o{};
  o.sq_entries = 4;
  o.cq_entries = 64;
  o.disable = URSA_FEAT_SUBMIT_ALL;
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  ursa_loop *loop = lp.get();
  int a[2], b[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a));
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b));
  ursa_stream sa{}, sb{};
  ASSERT_EQ(0, ursa_stream_open(loop, &sa, a[0]));
  ASSERT_EQ(0, ursa_stream_open(loop, &sb, b[0]));
  // The loop's eventfd read, armed at creation, leaves first.
  io_uring_submit(&loop->ring);
  unsigned refused = 0;
  while (io_uring_sq_space_left(&loop->ring) > 0) {
    struct io_uring_sqe *sqe = ursa__get_sqe(loop);
    io_uring_prep_nop(sqe);
    sqe->opcode = 250; /* no such operation: refused at submit */
    sqe->user_data = 0;
    refused++;
  }
  ASSERT_EQ(4u, refused);
  ursa_stats before;
  ursa_loop_stats(loop, &before);
  Sent w1, w2;
  w1.w.data = &w1;
  w2.w.data = &w2;
  auto done = [](ursa_write_req *w, int st) {
    static_cast<Sent *>(w->data)->status = st;
  };
  ASSERT_EQ(0, ursa_write(&w1.w, &sa, "first", 5, 5000, done));
  EXPECT_EQ(URSA__WAITING, sa.send_op.state) << "room was found after all";
  ASSERT_EQ(0, ursa_write(&w2.w, &sb, "second", 6, 0, done));
  EXPECT_EQ(URSA__WAITING, sb.send_op.state) << "it jumped the wait list";
  EXPECT_EQ(&sa.send_op, loop->wait_head);
  EXPECT_EQ(&sb.send_op, loop->wait_tail);
  // A third, cancelled while it waits: it never reaches the kernel, and
  // the list stays whole around it.
  int c[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, c));
  ursa_stream sc{};
  ASSERT_EQ(0, ursa_stream_open(loop, &sc, c[0]));
  Sent w3;
  w3.w.data = &w3;
  ASSERT_EQ(0, ursa_write(&w3.w, &sc, "third", 5, 0, done));
  EXPECT_EQ(URSA__WAITING, sc.send_op.state);
  ASSERT_EQ(0, ursa_write_cancel(&w3.w));
  EXPECT_EQ(&sb.send_op, loop->wait_tail) << "the cancelled op stayed";
  ursa_stats mid;
  ursa_loop_stats(loop, &mid);
  EXPECT_GE(mid.sq_full - before.sq_full, 2u);
  ASSERT_TRUE(lp.RunUntil(
      [&] { return w1.status != 1 && w2.status != 1 && w3.status != 1; }));
  EXPECT_EQ(0, w1.status) << ursa_err_name(w1.status);
  EXPECT_EQ(0, w2.status) << ursa_err_name(w2.status);
  EXPECT_EQ(-ECANCELED, w3.status) << ursa_err_name(w3.status);
  EXPECT_EQ(0u, w3.w.done);
  EXPECT_EQ(nullptr, loop->wait_head);
  char got[16] = {0};
  ASSERT_TRUE(t::ReadExactly(a[1], got, 5));
  EXPECT_EQ(0, memcmp(got, "first", 5));
  ASSERT_TRUE(t::ReadExactly(b[1], got, 6));
  EXPECT_EQ(0, memcmp(got, "second", 6));
  ASSERT_TRUE(lp.CloseStreams({&sa, &sb, &sc}));
  char rest;
  EXPECT_EQ(0, read(c[1], &rest, 1)) << "the cancelled write reached the peer";
  close(a[1]);
  close(b[1]);
  close(c[1]);
  lp.Finish();
}

// A cancel that finds no SQE waits on the cancel list and goes out on the
// next round.  The SQ is made unsubmittable for the moment of the cancel
// (the ring's descriptor hidden from liburing), so that handing the queue
// to the kernel frees nothing.
TEST(Op, ACancelThatFindsNoSqeWaitsOnTheCancelList) {
  ursa_loop_options o{};
  o.sq_entries = 4;
  o.disable = URSA_FEAT_REG_RING_FD;
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  ursa_loop *loop = lp.get();
  int sv[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
  ursa_stream s{};
  ASSERT_EQ(0, ursa_stream_open(loop, &s, sv[0]));
  Sent w;
  w.w.data = &w;
  std::vector<char> msg = t::RandomBytes(1000, 5);
  ASSERT_EQ(0, ursa_write(&w.w, &s, msg.data(), msg.size(), 0,
                          [](ursa_write_req *r, int st) {
                            static_cast<Sent *>(r->data)->status = st;
                          }));
  EXPECT_EQ(URSA__INFLIGHT, s.send_op.state) << "in the SQ, not submitted";
  while (io_uring_sq_space_left(&loop->ring) > 0) {
    struct io_uring_sqe *sqe = ursa__get_sqe(loop);
    io_uring_prep_nop(sqe);
    sqe->user_data = 0;
  }
  int fd = loop->ring.enter_ring_fd;
  loop->ring.enter_ring_fd = -1;
  int r = ursa_write_cancel(&w.w);
  loop->ring.enter_ring_fd = fd;
  EXPECT_EQ(0, r);
  EXPECT_EQ(&s.send_op, loop->cancel_head) << "the cancel found an SQE";
  EXPECT_TRUE(s.send_op.flags & URSA__F_CANCELQ);
  ASSERT_TRUE(lp.RunUntil([&] { return w.status != 1; }));
  EXPECT_EQ(nullptr, loop->cancel_head);
  // The send went first, so it may have finished before its cancel.
  EXPECT_TRUE(w.status == 0 || w.status == -ECANCELED)
      << ursa_err_name(w.status);
  std::vector<char> got(w.w.done);
  ASSERT_TRUE(t::ReadExactly(sv[1], got.data(), got.size()));
  EXPECT_TRUE(t::SameBytes(std::vector<char>(msg.begin(),
                                             msg.begin() + w.w.done),
                           got));
  ASSERT_TRUE(lp.CloseStreams({&s}));
  close(sv[1]);
  lp.Finish();
}

INSTANTIATE_TEST_SUITE_P(Backends, OpOnEachBackend,
                         ::testing::ValuesIn(t::kBackends, t::kBackends + 2),
                         t::BackendName);

}  // namespace
