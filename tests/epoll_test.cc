// epoll_test.cc - the epoll backend's interpreter driven directly: SQEs
// filled by hand go through the backend's table (get_sqe, enter, reap),
// as the layers above would fill them, and each completion is checked:
// what it refuses and with which error, a linked timeout's expiry, a
// cancel by user_data, a Unix connect retried against a full backlog,
// and a multishot receive that takes buffers from a provided ring.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "lib/src/core/core.h"
#include "tests/testutil.h"

namespace {

struct Got {
  int res;
  uint32_t flags;
};

class Interp : public ::testing::Test {
 protected:
  void SetUp() override {
    ursa_loop_options o = t::OptionsFor(URSA_BACKEND_EPOLL);
    lp_.reset(new t::Loop(&o));
    ASSERT_EQ(0, lp_->status());
    loop_ = lp_->get();
    ASSERT_EQ(&ursa__epoll_backend, loop_->be);
  }
  void TearDown() override { lp_->Finish(); }

  io_uring_sqe *Sqe() {
    io_uring_sqe *sqe = loop_->be->get_sqe(loop_);
    memset(sqe, 0, sizeof(*sqe));
    return sqe;
  }
  // Enters once, waiting up to ms, and files every completion of ours
  // (user_data from 0x1000) by user_data, in order.
  void Enter(int ms) {
    loop_->be->enter(loop_, (int64_t)ms * 1000000);
    ursa__cqe c[64];
    unsigned n;
    while ((n = loop_->be->reap(loop_, c, 64)) > 0)
      for (unsigned i = 0; i < n; i++)
        if (c[i].ud >= 0x1000) {
          got_[c[i].ud].push_back({c[i].res, c[i].flags});
          seq_.push_back(c[i].ud);
        }
  }
  // Enters until ud has n completions or 2 s pass.
  bool EnterUntil(uint64_t ud, size_t n) {
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (got_[ud].size() < n && std::chrono::steady_clock::now() < end)
      Enter(10);
    return got_[ud].size() >= n;
  }
  int One(uint64_t ud) {
    EXPECT_TRUE(EnterUntil(ud, 1)) << "no completion for " << ud;
    return got_[ud].empty() ? 1 : got_[ud][0].res;
  }

  std::unique_ptr<t::Loop> lp_;
  ursa_loop *loop_ = nullptr;
  std::map<uint64_t, std::vector<Got>> got_;
  std::vector<uint64_t> seq_;  // every completion's user_data, as reaped
};

TEST_F(Interp, RefusesWhatOnlyIoUringHas) {
  int sv[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv));
  char buf[8];
  uint64_t ud = 0x1000;
  auto expect = [&](io_uring_sqe *q, const char *what, int want) {
    q->user_data = ud;
    Enter(0);
    EXPECT_EQ(want, One(ud)) << what;
    ud++;
  };
  io_uring_sqe *q = Sqe();
  io_uring_prep_send_zc(q, sv[0], "x", 1, 0, 0);
  expect(q, "SEND_ZC", -EOPNOTSUPP);
  q = Sqe();
  io_uring_prep_recv(q, 0, buf, sizeof(buf), 0);
  q->flags |= IOSQE_FIXED_FILE;
  expect(q, "a direct descriptor", -EBADF);
  q = Sqe();
  io_uring_prep_recv(q, sv[0], nullptr, 0, 0);
  q->flags |= IOSQE_BUFFER_SELECT;
  q->ioprio |= IORING_RECVSEND_BUNDLE;
  expect(q, "a recv bundle", -EINVAL);
  q = Sqe();
  io_uring_prep_fallocate(q, sv[0], 0, 0, 4096);
  expect(q, "IORING_OP_FALLOCATE, which no layer uses here", -EINVAL);
  q = Sqe();
  io_uring_prep_rw(IORING_OP_LAST + 3, q, sv[0], nullptr, 0, 0);
  expect(q, "an opcode past the table", -EINVAL);
  sockaddr_storage peer;
  socklen_t plen = sizeof(peer);
  q = Sqe();
  io_uring_prep_accept(q, sv[0], (sockaddr *)&peer, &plen, 0);
  expect(q, "an accept asking for the peer's address", -EINVAL);
  q = Sqe();
  io_uring_prep_close_direct(q, 3);
  expect(q, "a direct close", -EBADF);
  q = Sqe();
  io_uring_prep_recv(q, -1, buf, sizeof(buf), 0);
  expect(q, "a negative descriptor", -EBADF);
  // And what it does run at once.
  q = Sqe();
  io_uring_prep_nop(q);
  expect(q, "a nop", 0);
  q = Sqe();
  io_uring_prep_shutdown(q, sv[1], SHUT_WR);
  expect(q, "a shutdown", 0);
  EXPECT_EQ(0, recv(sv[0], buf, sizeof(buf), MSG_DONTWAIT)) << "EOF";
  close(sv[0]);
  close(sv[1]);
}

TEST_F(Interp, ALinkedTimeoutEndsAWaitingReceive) {
  int sv[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv));
  char buf[8];
  io_uring_sqe *q = Sqe();
  io_uring_prep_recv(q, sv[0], buf, sizeof(buf), 0);
  q->flags |= IOSQE_IO_LINK;
  q->user_data = 0x1000;
  __kernel_timespec ts = {0, 30 * 1000000};
  q = Sqe();
  io_uring_prep_link_timeout(q, &ts, 0);
  q->user_data = 0;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(-ECANCELED, One(0x1000));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::steady_clock::now() - t0)
                .count();
  EXPECT_GE(ms, 29) << "expired early";
  EXPECT_LT(ms, 1000);
  EXPECT_EQ(1u, got_[0x1000].size());
  // The descriptor no longer has a reader: a byte sent now stays unread.
  ASSERT_EQ(1, write(sv[1], "z", 1));
  Enter(10);
  EXPECT_EQ(1u, got_[0x1000].size());
  EXPECT_EQ(1, recv(sv[0], buf, sizeof(buf), MSG_DONTWAIT));
  close(sv[0]);
  close(sv[1]);
}

// Linked timeouts wait in the core's heap of deadlines: twenty timed
// receives expire in the order of their deadlines, whatever the order they
// were started in; the ones cancelled first give their place back, and a
// second batch reuses it.
TEST_F(Interp, LinkedTimeoutsExpireInDeadlineOrder) {
  const int kN = 20;
  std::vector<std::array<int, 2>> sv(kN);
  char buf[8];
  for (int round = 0; round < 2; round++) {
    got_.clear();
    std::vector<__kernel_timespec> ts(kN);
    std::vector<int> ms(kN);
    for (int i = 0; i < kN; i++) {
      ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0,
                              sv[i].data()));
      ms[i] = 10 + (i * 7) % kN * 3;  // 10 to 67 ms, started out of order
      io_uring_sqe *q = Sqe();
      io_uring_prep_recv(q, sv[i][0], buf, sizeof(buf), 0);
      q->flags |= IOSQE_IO_LINK;
      q->user_data = 0x1000 + i;
      ts[i] = {0, ms[i] * 1000000LL};
      q = Sqe();
      io_uring_prep_link_timeout(q, &ts[i], 0);
      q->user_data = 0;
    }
    Enter(0);
    for (int i = 0; i < kN; i += 5) {  // cancelled before they expire
      io_uring_sqe *q = Sqe();
      io_uring_prep_cancel64(q, 0x1000 + i, 0);
      q->user_data = 0x2000 + i;
    }
    // The order is the order of reaping: two deadlines a few ms apart can
    // expire within one wait when this thread is late.
    seq_.clear();
    std::vector<int> order;
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (order.size() < (size_t)kN &&
           std::chrono::steady_clock::now() < end) {
      Enter(5);
      for (uint64_t ud : seq_)
        if (ud >= 0x1000 && ud < 0x1000 + (uint64_t)kN &&
            std::find(order.begin(), order.end(), (int)(ud - 0x1000)) ==
                order.end())
          order.push_back((int)(ud - 0x1000));
    }
    ASSERT_EQ((size_t)kN, order.size()) << "round " << round;
    std::vector<int> timed;
    for (int i : order) {
      EXPECT_EQ(-ECANCELED, got_[0x1000 + i][0].res) << i;
      EXPECT_EQ(1u, got_[0x1000 + i].size()) << i;
      if (i % 5) timed.push_back(i);
    }
    for (int i = 0; i < kN; i += 5) EXPECT_EQ(0, One(0x2000 + i)) << i;
    // The cancelled ones came first (at once), then the rest by deadline.
    for (size_t k = 0; k < kN / 5; k++) EXPECT_EQ(0, order[k] % 5) << k;
    for (size_t k = 1; k < timed.size(); k++)
      EXPECT_LE(ms[timed[k - 1]], ms[timed[k]])
          << "expired out of deadline order: " << timed[k - 1] << " then "
          << timed[k];
    for (auto &p : sv) {
      close(p[0]);
      close(p[1]);
    }
  }
}

TEST_F(Interp, ACancelFindsItsOperationByUserData) {
  int sv[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv));
  char buf[8];
  io_uring_sqe *q = Sqe();
  io_uring_prep_recv(q, sv[0], buf, sizeof(buf), 0);
  q->user_data = 0x1000;
  Enter(0);
  EXPECT_TRUE(got_[0x1000].empty()) << "nothing to read: it waits";
  q = Sqe();
  io_uring_prep_cancel64(q, 0x1000, 0);
  q->user_data = 0x1001;
  Enter(0);
  EXPECT_EQ(-ECANCELED, One(0x1000));
  EXPECT_EQ(0, One(0x1001));
  q = Sqe();
  io_uring_prep_cancel64(q, 0x1000, 0);
  q->user_data = 0x1002;
  EXPECT_EQ(-ENOENT, One(0x1002)) << "gone already";
  close(sv[0]);
  close(sv[1]);
}

// io_uring blocks a worker in a Unix connect to a full backlog; the epoll
// backend tries it again every 2 ms until there is room.
TEST_F(Interp, AUnixConnectToAFullBacklogIsTriedAgain) {
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
  ASSERT_GE(l, 0);
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  // The pid alone can repeat: sandboxed runs may each be pid 2 in their
  // own pid namespace while sharing the abstract namespace.
  snprintf(sun.sun_path + 1, sizeof(sun.sun_path) - 1,
           "ursa-epoll-test-%d-%llx", (int)getpid(),
           (unsigned long long)std::chrono::steady_clock::now()
               .time_since_epoch()
               .count());
  socklen_t slen = offsetof(sockaddr_un, sun_path) + 1 +
                   strlen(sun.sun_path + 1);
  ASSERT_EQ(0, bind(l, (sockaddr *)&sun, slen));
  ASSERT_EQ(0, listen(l, 0));
  std::vector<int> filled;
  for (int i = 0; i < 64; i++) {
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (connect(c, (sockaddr *)&sun, slen) < 0) {
      ASSERT_EQ(EAGAIN, errno);
      close(c);
      break;
    }
    filled.push_back(c);
  }
  ASSERT_FALSE(filled.empty());
  int c = socket(AF_UNIX, SOCK_STREAM, 0);  // blocking: the backend sets it
  io_uring_sqe *q = Sqe();
  io_uring_prep_connect(q, c, (sockaddr *)&sun, slen);
  q->user_data = 0x1000;
  for (int i = 0; i < 5; i++) Enter(5);
  EXPECT_TRUE(got_[0x1000].empty()) << "the backlog is full: it waits";
  EXPECT_NE(0, fcntl(c, F_GETFL) & O_NONBLOCK);
  // Room: accept what waits; the retry gets in.
  for (size_t i = 0; i < filled.size() + 1; i++) {
    int a = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    if (a >= 0) close(a);
  }
  EXPECT_EQ(0, One(0x1000));
  for (int f : filled) close(f);
  close(c);
  close(l);
}

// A multishot receive with buffer select takes buffers from the group's
// ring in ring order, posts a completion per read with the buffer's id,
// and keeps going (IORING_CQE_F_MORE); the bytes land whole.
TEST_F(Interp, AMultishotReceiveTakesBuffersFromTheRing) {
  int sv[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv));
  const unsigned kBufs = 4, kSize = 64;
  void *mem = nullptr;
  ASSERT_EQ(0, posix_memalign(&mem, 4096, 4096));
  memset(mem, 0, 4096);
  auto *br = static_cast<io_uring_buf_ring *>(mem);
  std::vector<char> bufs(kBufs * kSize);
  io_uring_buf_ring_init(br);
  for (unsigned i = 0; i < kBufs; i++)
    io_uring_buf_ring_add(br, &bufs[i * kSize], kSize, (unsigned short)i,
                          io_uring_buf_ring_mask(kBufs), (int)i);
  io_uring_buf_ring_advance(br, (int)kBufs);
  const uint16_t kGroup = 3;
  ASSERT_EQ(0, loop_->be->buf_ring_register(loop_, br, kBufs, kGroup, false));
  EXPECT_EQ(-EOPNOTSUPP,
            loop_->be->buf_ring_register(loop_, br, kBufs, 2, true))
      << "buffers filled by parts are io_uring's";
  io_uring_sqe *q = Sqe();
  io_uring_prep_recv_multishot(q, sv[0], nullptr, 0, 0);
  q->flags |= IOSQE_BUFFER_SELECT;
  q->buf_group = kGroup;
  q->user_data = 0x1000;
  std::vector<std::string> sent = {"one", "second message", "3"};
  for (auto &m : sent) ASSERT_EQ((ssize_t)m.size(), send(sv[1], m.data(), m.size(), 0));
  ASSERT_TRUE(EnterUntil(0x1000, sent.size()));
  for (size_t i = 0; i < sent.size(); i++) {
    const Got &g = got_[0x1000][i];
    ASSERT_EQ((int)sent[i].size(), g.res) << i;
    EXPECT_TRUE(g.flags & IORING_CQE_F_MORE) << i;
    ASSERT_TRUE(g.flags & IORING_CQE_F_BUFFER) << i;
    unsigned bid = g.flags >> IORING_CQE_BUFFER_SHIFT;
    EXPECT_EQ(i, bid) << "buffers are taken in ring order";
    EXPECT_EQ(sent[i], std::string(&bufs[bid * kSize], (size_t)g.res)) << i;
  }
  // The ring's last buffer, then none: the receive ends with ENOBUFS.
  ASSERT_EQ(1, send(sv[1], "4", 1, 0));
  ASSERT_EQ(1, send(sv[1], "5", 1, 0));
  ASSERT_TRUE(EnterUntil(0x1000, 5));
  EXPECT_EQ(1, got_[0x1000][3].res);
  EXPECT_EQ(-ENOBUFS, got_[0x1000][4].res);
  EXPECT_FALSE(got_[0x1000][4].flags & IORING_CQE_F_MORE) << "it ended";
  loop_->be->buf_ring_unregister(loop_, kGroup);
  close(sv[0]);
  close(sv[1]);
  free(mem);
}

}  // namespace
