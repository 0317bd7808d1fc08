// dgram_test.cc - datagram sockets (UDP over IPv4 and IPv6, Unix datagram
// over paths and abstract names) under every ring variant: echo of every
// size, sender addresses, truncation, buffer exhaustion, connected sends.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <string>

#include "tests/testutil.h"

namespace {

enum Kind { kUdp4, kUdp6, kUnixPath, kUnixAbstract };
using Param = std::tuple<t::Variant, Kind>;

std::string ParamName(const ::testing::TestParamInfo<Param> &info) {
  static const char *names[] = {"udp4", "udp6", "unix_path", "unix_abstract"};
  return std::string(std::get<0>(info.param).name) + "_" +
         names[std::get<1>(info.param)];
}

std::string Fmt(const sockaddr *sa, socklen_t len) {
  char buf[256];
  if (ursa_addr_format(sa, len, buf, sizeof(buf)) < 0) return "?";
  return buf;
}

// Echoes every datagram back to its sender.
struct Echo {
  ursa_dgram d{};
  int got = 0;
  int truncated = 0;
  std::vector<std::string> senders;
  struct Reply {
    ursa_send_req req{};
    std::vector<char> buf;
  };
  static void OnRecv(ursa_dgram *d, ssize_t n, const void *buf,
                     const sockaddr *from, socklen_t fromlen, unsigned flags) {
    auto *e = static_cast<Echo *>(d->data);
    ASSERT_GE(n, 0) << ursa_err_name((int)n);
    e->got++;
    if (flags & URSA_DGRAM_TRUNC) e->truncated++;
    ASSERT_NE(nullptr, from);
    e->senders.push_back(Fmt(from, fromlen));
    auto *r = new Reply;
    r->buf.assign((const char *)buf, (const char *)buf + n);
    r->req.data = r;
    int rc = ursa_dgram_send(&r->req, d, r->buf.data(), r->buf.size(), from,
                             fromlen, [](ursa_send_req *q, int st) {
                               EXPECT_EQ(0, st) << ursa_err_name(st);
                               delete static_cast<Reply *>(q->data);
                             });
    EXPECT_EQ(0, rc) << ursa_error_detail();
    if (rc) delete r;
  }
};

// Sends datagrams and collects the replies.
struct Sender {
  ursa_dgram d{};
  std::vector<std::vector<char>> replies;
  std::vector<unsigned> flags;
  int sent = 0;
  int send_errors = 0;
  static void OnRecv(ursa_dgram *d, ssize_t n, const void *buf,
                     const sockaddr *, socklen_t, unsigned flags) {
    auto *s = static_cast<Sender *>(d->data);
    ASSERT_GE(n, 0) << ursa_err_name((int)n);
    s->replies.emplace_back((const char *)buf, (const char *)buf + n);
    s->flags.push_back(flags);
  }
  static void OnSent(ursa_send_req *q, int st) {
    auto *s = static_cast<Sender *>(q->data);
    s->sent++;
    if (st) s->send_errors++;
  }
};

void Closed(ursa_handle *h) { *static_cast<bool *>(h->data) = true; }

class Dgram : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    dir_ = tmp_.path();
    t::ApplyVariant(std::get<0>(GetParam()), &opts_);
    opts_.buf_size = 65536 + 1024;
    opts_.buf_count = 64;
    Make();
  }
  void Make() {
    lp_.reset(new t::Loop(&opts_));
    ASSERT_EQ(0, lp_->status());
  }
  void TearDown() override {
    if (lp_) lp_->Finish();
  }
  Kind kind() const { return std::get<1>(GetParam()); }
  ursa_loop *loop() { return lp_->get(); }
  // The server's address; the client binds to an automatic one.
  ursa_addr ServerAddr() {
    ursa_addr a;
    std::string text;
    switch (kind()) {
      case kUdp4: text = "127.0.0.1:0"; break;
      case kUdp6: text = "[::1]:0"; break;
      case kUnixPath: text = "unix:" + dir_ + "/srv.sock"; break;
      case kUnixAbstract:
        text = "unix:@ursa-dgram-" + std::to_string(getpid());
        break;
    }
    EXPECT_EQ(0, ursa_addr_parse(text.c_str(), &a)) << ursa_error_detail();
    return a;
  }
  ursa_addr ClientAddr() {
    ursa_addr a{};
    if (kind() == kUdp4 || kind() == kUdp6) {
      a.len = t::LoopbackAddr(kind() == kUdp6 ? AF_INET6 : AF_INET, &a.ss);
    } else {
      a.ss.ss_family = AF_UNIX;  // autobind: the kernel picks a name
      a.len = sizeof(sa_family_t);
    }
    return a;
  }
  void Bind(ursa_dgram *d, const ursa_addr &a, ursa_addr *bound) {
    ASSERT_EQ(0, ursa_dgram_bind(loop(), d, (const sockaddr *)&a.ss, a.len, 0))
        << ursa_error_detail();
    ASSERT_EQ(0, ursa_dgram_addr(d, &bound->ss, &bound->len));
  }
  // A receiving server socket and a client socket, both bound.
  void ReceivingPair(Sender *rx, Sender *tx, ursa_addr *ra, ursa_addr *ta) {
    rx->d.data = rx;
    tx->d.data = tx;
    Bind(&rx->d, ServerAddr(), ra);
    Bind(&tx->d, ClientAddr(), ta);
    ASSERT_EQ(0, ursa_dgram_recv_start(&rx->d, Sender::OnRecv));
  }
  void CloseAll(std::initializer_list<ursa_dgram *> ds) {
    int i = 0;
    static bool flag[8];
    for (ursa_dgram *d : ds) {
      flag[i] = false;
      d->data = &flag[i];
      ASSERT_EQ(0, ursa_dgram_close(d, Closed));
      i++;
    }
    int n = i;
    ASSERT_TRUE(lp_->RunUntil([&] {
      for (int j = 0; j < n; j++)
        if (!flag[j]) return false;
      return true;
    }));
  }
  t::TempDir tmp_{"ursa-dgram"};
  std::string dir_;
  ursa_loop_options opts_{};
  std::unique_ptr<t::Loop> lp_;
};

TEST_P(Dgram, EchoesEverySizeByteForByteWithSenderAddress) {
  Echo srv;
  Sender cli;
  srv.d.data = &srv;
  cli.d.data = &cli;
  ursa_addr sa, ca;
  Bind(&srv.d, ServerAddr(), &sa);
  Bind(&cli.d, ClientAddr(), &ca);
  ASSERT_EQ(0, ursa_dgram_recv_start(&srv.d, Echo::OnRecv));
  ASSERT_EQ(0, ursa_dgram_recv_start(&cli.d, Sender::OnRecv));
  const size_t sizes[] = {0, 1, 2, 100, 1400, 1473, 9000, 32768, 65507};
  const size_t n = sizeof(sizes) / sizeof(sizes[0]);
  std::vector<std::vector<char>> payloads;
  std::vector<ursa_send_req> reqs(n);
  for (size_t i = 0; i < n; i++) {
    payloads.push_back(t::RandomBytes(sizes[i], 40 + (uint32_t)i));
    reqs[i].data = &cli;
    // One at a time: datagrams sent at once may be reordered.
    ASSERT_EQ(
        0, ursa_dgram_send(&reqs[i], &cli.d, payloads[i].data(), sizes[i],
                           (const sockaddr *)&sa.ss, sa.len, Sender::OnSent));
    ASSERT_TRUE(lp_->RunUntil([&] { return cli.replies.size() == i + 1; }));
    EXPECT_TRUE(t::SameBytes(payloads[i], cli.replies[i])) << sizes[i];
    EXPECT_EQ(0u, cli.flags[i]);
  }
  EXPECT_EQ((int)n, cli.sent);
  EXPECT_EQ(0, cli.send_errors);
  EXPECT_EQ(0, srv.truncated);
  std::string me = Fmt((const sockaddr *)&ca.ss, ca.len);
  for (const std::string &s : srv.senders) EXPECT_EQ(me, s);
  CloseAll({&srv.d, &cli.d});
  if (kind() == kUnixPath) {
    struct stat st;
    EXPECT_NE(0, lstat((dir_ + "/srv.sock").c_str(), &st)) << "file left";
  }
}

TEST_P(Dgram, TruncatedDatagramIsReportedNotPassedAsWhole) {
  lp_->Finish();
  opts_.buf_size = 1024;
  Make();
  Sender rx, tx;
  ursa_addr ra, ta;
  ReceivingPair(&rx, &tx, &ra, &ta);
  std::vector<char> big = t::RandomBytes(3000, 8), small = t::RandomBytes(50, 9);
  ursa_send_req q1{}, q2{};
  q1.data = q2.data = &tx;
  ASSERT_EQ(0,
            ursa_dgram_send(&q1, &tx.d, big.data(), big.size(),
                            (const sockaddr *)&ra.ss, ra.len, Sender::OnSent));
  ASSERT_TRUE(lp_->RunUntil([&] { return rx.replies.size() == 1; }));
  ASSERT_EQ(0,
            ursa_dgram_send(&q2, &tx.d, small.data(), small.size(),
                            (const sockaddr *)&ra.ss, ra.len, Sender::OnSent));
  ASSERT_TRUE(lp_->RunUntil([&] { return rx.replies.size() == 2; }));
  EXPECT_EQ(URSA_DGRAM_TRUNC, rx.flags[0]);
  ASSERT_LT(rx.replies[0].size(), big.size());
  EXPECT_GT(rx.replies[0].size(), 0u);
  EXPECT_EQ(0, memcmp(big.data(), rx.replies[0].data(), rx.replies[0].size()));
  EXPECT_EQ(0u, rx.flags[1]) << "the next datagram is whole";
  EXPECT_TRUE(t::SameBytes(small, rx.replies[1]));
  CloseAll({&rx.d, &tx.d});
}

TEST_P(Dgram, EmptyBufferRingRecoversWithoutLoss) {
  lp_->Finish();
  opts_.buf_size = 512;
  opts_.buf_count = 2;
  Make();
  Sender rx, tx;
  ursa_addr ra, ta;
  ReceivingPair(&rx, &tx, &ra, &ta);
  const int kCount = 100;
  std::vector<std::vector<char>> ps;
  std::vector<ursa_send_req> qs(kCount);
  for (int i = 0; i < kCount; i++) {
    ps.push_back(t::RandomBytes(100, 7000 + i));
    qs[i].data = &tx;
    // Straight to the socket, so that many wait in its queue at once; a
    // Unix receiver's queue is short, so let the loop drain it when full.
    ssize_t r;
    while ((r = sendto(tx.d.fd, ps[i].data(), 100, MSG_DONTWAIT,
                       (const sockaddr *)&ra.ss, ra.len)) < 0 &&
           errno == EAGAIN)
      ursa_loop_run(loop(), URSA_RUN_ONCE);
    ASSERT_EQ(100, r) << strerror(errno);
  }
  ASSERT_TRUE(lp_->RunUntil([&] { return (int)rx.replies.size() == kCount; }));
  std::map<uint64_t, int> want;
  for (auto &p : ps) want[t::Checksum(p.data(), p.size())]++;
  for (auto &r : rx.replies) want[t::Checksum(r.data(), r.size())]--;
  for (auto &w : want) EXPECT_EQ(0, w.second);
  ursa_stats st;
  ursa_loop_stats(loop(), &st);
  EXPECT_GT(st.enobufs + st.rearms, 0u);
  CloseAll({&rx.d, &tx.d});
}

TEST_P(Dgram, ConnectedSocketSendsWithoutAnAddress) {
  Echo srv;
  Sender cli;
  srv.d.data = &srv;
  cli.d.data = &cli;
  ursa_addr sa, ca;
  Bind(&srv.d, ServerAddr(), &sa);
  Bind(&cli.d, ClientAddr(), &ca);
  ASSERT_EQ(0, ursa_dgram_connect(&cli.d, (const sockaddr *)&sa.ss, sa.len));
  ASSERT_EQ(0, ursa_dgram_recv_start(&srv.d, Echo::OnRecv));
  ASSERT_EQ(0, ursa_dgram_recv_start(&cli.d, Sender::OnRecv));
  std::vector<char> p = t::RandomBytes(777, 5);
  ursa_send_req q{};
  q.data = &cli;
  ASSERT_EQ(0, ursa_dgram_send(&q, &cli.d, p.data(), p.size(), nullptr, 0,
                               Sender::OnSent));
  EXPECT_EQ(-EBUSY, ursa_dgram_send(&q, &cli.d, p.data(), p.size(), nullptr, 0,
                                    Sender::OnSent));
  EXPECT_EQ(1, ursa_dgram_send_active(&q));
  ASSERT_TRUE(lp_->RunUntil([&] { return cli.replies.size() == 1; }));
  EXPECT_TRUE(t::SameBytes(p, cli.replies[0]));
  EXPECT_EQ(0, ursa_dgram_send_active(&q)) << "its callback has run";
  CloseAll({&srv.d, &cli.d});
}

TEST_P(Dgram, CloseWhileReceivingCallsBackOnce) {
  Sender rx;
  rx.d.data = &rx;
  ursa_addr ra;
  Bind(&rx.d, ServerAddr(), &ra);
  ASSERT_EQ(0, ursa_dgram_recv_start(&rx.d, Sender::OnRecv));
  EXPECT_EQ(-EALREADY, ursa_dgram_recv_start(&rx.d, Sender::OnRecv));
  ursa_loop_run(loop(), URSA_RUN_NOWAIT);
  static int closes;
  closes = 0;
  ASSERT_EQ(0, ursa_dgram_close(&rx.d, [](ursa_handle *) { closes++; }));
  EXPECT_EQ(-EALREADY, ursa_dgram_close(&rx.d, [](ursa_handle *) {}));
  ASSERT_TRUE(lp_->RunUntil([&] { return closes == 1; }));
  EXPECT_EQ(0, ursa_loop_run(loop(), URSA_RUN_NOWAIT));
  EXPECT_EQ(1, closes);
  EXPECT_TRUE(rx.replies.empty());
  EXPECT_EQ(-EINVAL, ursa_dgram_recv_start(&rx.d, Sender::OnRecv));
}

INSTANTIATE_TEST_SUITE_P(
    Rings, Dgram,
    ::testing::Combine(::testing::ValuesIn(t::kVariants,
                                           t::kVariants + t::kNumVariants),
                       ::testing::Values(kUdp4, kUdp6, kUnixPath,
                                         kUnixAbstract)),
    ParamName);

TEST(DgramArgs, BadArgumentsAreRefused) {
  ursa_loop_options o{};
  o.buf_size = 100;
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  ursa_dgram d{};
  ursa_addr a;
  ASSERT_EQ(0, ursa_addr_parse("127.0.0.1:0", &a));
  EXPECT_EQ(-EINVAL, ursa_dgram_bind(lp.get(), &d, (sockaddr *)&a.ss, a.len,
                                     0x40));
  // Listener flags are not datagram flags.
  EXPECT_EQ(-EINVAL, ursa_dgram_bind(lp.get(), &d, (sockaddr *)&a.ss, a.len,
                                     URSA_LISTEN_NODELAY));
  ASSERT_EQ(0, ursa_dgram_bind(lp.get(), &d, (sockaddr *)&a.ss, a.len,
                               URSA_DGRAM_REUSEPORT));
  EXPECT_EQ(-EINVAL, ursa_dgram_recv_start(&d, Sender::OnRecv));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "buf_size 100"));
  ursa_send_req q{};
  EXPECT_EQ(0, ursa_dgram_send_active(&q));
  EXPECT_EQ(-ENOENT, ursa_dgram_send_cancel(&q)) << "never started";
  EXPECT_EQ(-EINVAL,
            ursa_dgram_send(&q, &d, nullptr, 5, nullptr, 0, Sender::OnSent));
  EXPECT_EQ(0, ursa_dgram_send_active(&q)) << "a refused send is not active";
  sockaddr_storage bad{};
  bad.ss_family = AF_APPLETALK;
  EXPECT_EQ(-EINVAL, ursa_dgram_send(&q, &d, "x", 1, (sockaddr *)&bad,
                                     sizeof(bad), Sender::OnSent));
  int pfd[2];
  ASSERT_EQ(0, pipe(pfd));
  ursa_dgram p{};
  EXPECT_EQ(-ENOTSOCK, ursa_dgram_open(lp.get(), &p, pfd[0]));
  close(pfd[0]);
  close(pfd[1]);
  bool closed = false;
  d.data = &closed;
  ASSERT_EQ(0, ursa_dgram_close(&d, Closed));
  ASSERT_TRUE(lp.RunUntil([&] { return closed; }));
  lp.Finish();
}

}  // namespace
