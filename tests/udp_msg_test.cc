// udp_msg_test.cc - datagrams with their metadata, on both backends and
// with multishot and single-shot receives: a GSO send arrives at a plain
// socket as the right separate datagrams; a GRO receive is split back into
// its exact datagrams; PKTINFO lets a wildcard socket answer from the
// address each datagram came to; ECN bits and timestamps come through; a
// 65,507-byte datagram arrives whole; a batch goes out with one sendmmsg on
// epoll; bad segment sizes, TOS and sources are refused by name.
#include <errno.h>
#include <net/if.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "tests/testutil.h"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

namespace {

const t::Variant kUdpVariants[] = {
    {"default", 0},
    {"single_shot", URSA_FEAT_MULTISHOT_RECV},
    {"epoll", 0, 0, 0, 0, URSA_BACKEND_EPOLL},
    {"epoll_single_shot", URSA_FEAT_MULTISHOT_RECV, 0, 0, 0,
     URSA_BACKEND_EPOLL},
};

using Param = std::tuple<t::Variant, int>;  // variant, family

std::string ParamName(const ::testing::TestParamInfo<Param> &info) {
  return std::string(std::get<0>(info.param).name) +
         (std::get<1>(info.param) == AF_INET6 ? "_udp6" : "_udp4");
}

// One receive, as the callback saw it.
struct Got {
  std::string bytes;
  unsigned segment;
  int tos;
  int64_t ts;
  unsigned flags;
  sockaddr_storage local;
  socklen_t locallen;
  unsigned ifindex;
  sockaddr_storage from;
  socklen_t fromlen;
};

struct Rx {
  ursa_dgram d{};
  std::vector<Got> got;
  int errors = 0;
  static void OnRecv(ursa_dgram *d, ssize_t n, const void *buf,
                     const ursa_dgram_info *info) {
    auto *r = static_cast<Rx *>(d->data);
    if (n < 0) {
      r->errors++;
      return;
    }
    ASSERT_NE(nullptr, info);
    Got g{};
    g.bytes.assign((const char *)buf, (size_t)n);
    g.segment = info->segment;
    g.tos = info->tos;
    g.ts = info->timestamp_ns;
    g.flags = info->flags;
    memcpy(&g.local, &info->local, sizeof(info->local));
    g.locallen = info->locallen;
    g.ifindex = info->ifindex;
    if (info->from) memcpy(&g.from, info->from, info->fromlen);
    g.fromlen = info->fromlen;
    r->got.push_back(g);
  }
  // Every datagram received so far, split at each receive's segment size.
  std::vector<std::string> Datagrams() const {
    std::vector<std::string> out;
    for (const Got &g : got) {
      ursa_dgram_info info{};
      info.segment = g.segment;
      size_t len;
      const void *p;
      for (unsigned i = 0; (p = ursa_dgram_segment(g.bytes.data(),
                                                   (ssize_t)g.bytes.size(),
                                                   &info, i, &len));
           i++)
        out.emplace_back((const char *)p, len);
      if (g.bytes.empty()) out.emplace_back();
    }
    return out;
  }
};

struct Batch {
  ursa_sendmsgs_req req{};
  int calls = 0;
  int status = 1;
  static void OnSent(ursa_sendmsgs_req *q, int st) {
    auto *b = static_cast<Batch *>(q->data);
    b->calls++;
    b->status = st;
  }
};

void Closed(ursa_handle *h) { (*static_cast<int *>(h->data))++; }

// A plain blocking UDP socket with a receive timeout, for the other end.
int PlainSocket(int family, const char *ip, sockaddr_storage *addr,
                socklen_t *len) {
  int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  int big = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  ursa_addr a;
  std::string text = family == AF_INET6 ? std::string("[") + ip + "]:0"
                                        : std::string(ip) + ":0";
  if (ursa_addr_parse(text.c_str(), &a) ||
      bind(fd, (sockaddr *)&a.ss, a.len) < 0) {
    close(fd);
    return -1;
  }
  *len = sizeof(*addr);
  getsockname(fd, (sockaddr *)addr, len);
  return fd;
}

class UdpMsg : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    t::ApplyVariant(std::get<0>(GetParam()), &opts_);
    lp_.reset(new t::Loop(&opts_));
    ASSERT_EQ(0, lp_->status());
  }
  void TearDown() override {
    if (lp_) lp_->Finish();
  }
  int family() const { return std::get<1>(GetParam()); }
  const char *lo() const { return family() == AF_INET6 ? "::1" : "127.0.0.1"; }
  ursa_loop *loop() { return lp_->get(); }
  void Bind(ursa_dgram *d, const char *ip, ursa_addr *bound) {
    ursa_addr a;
    std::string text = family() == AF_INET6 ? std::string("[") + ip + "]:0"
                                            : std::string(ip) + ":0";
    ASSERT_EQ(0, ursa_addr_parse(text.c_str(), &a));
    ASSERT_EQ(0, ursa_dgram_bind(loop(), d, (sockaddr *)&a.ss, a.len, 0))
        << ursa_error_detail();
    ASSERT_EQ(0, ursa_dgram_addr(d, &bound->ss, &bound->len));
  }
  void Close(std::initializer_list<ursa_dgram *> ds) {
    int closed = 0;
    for (ursa_dgram *d : ds) {
      d->data = &closed;
      ASSERT_EQ(0, ursa_dgram_close(d, Closed));
    }
    int want = (int)ds.size();
    ASSERT_TRUE(lp_->RunUntil([&] { return closed == want; }));
  }
  ursa_loop_options opts_{};
  std::unique_ptr<t::Loop> lp_;
};

std::string Pattern(size_t n, uint32_t seed) {
  std::vector<char> v = t::RandomBytes(n, seed);
  return std::string(v.begin(), v.end());
}

TEST_P(UdpMsg, AGsoSendArrivesAsSeparateDatagrams) {
  ursa_dgram tx{};
  ursa_addr ta;
  Bind(&tx, lo(), &ta);
  sockaddr_storage pa;
  socklen_t pl;
  int plain = PlainSocket(family(), lo(), &pa, &pl);
  ASSERT_GE(plain, 0);
  // One GSO message of 10 full segments and a short one, then two plain.
  std::string big = Pattern(10 * 1200 + 500, 1), a = Pattern(77, 2), b;
  ursa_dgram_msg m[3] = {};
  m[0].buf = big.data();
  m[0].len = big.size();
  m[0].flags = URSA_MSG_GSO;
  m[0].segment = 1200;
  m[1].buf = a.data();
  m[1].len = a.size();
  m[2].buf = b.data();  // an empty datagram
  m[2].len = 0;
  for (auto &x : m) {
    x.to = (sockaddr *)&pa;
    x.tolen = pl;
  }
  Batch batch;
  batch.req.data = &batch;
  ASSERT_EQ(0, ursa_dgram_sendmsgs(&batch.req, &tx, m, 3, Batch::OnSent))
      << ursa_error_detail();
  EXPECT_EQ(1, ursa_sendmsgs_active(&batch.req));
  ASSERT_TRUE(lp_->RunUntil([&] { return batch.calls == 1; }));
  EXPECT_EQ(0, batch.status) << ursa_err_name(batch.status);
  EXPECT_EQ((int)big.size(), ursa_sendmsgs_result(&batch.req, 0));
  EXPECT_EQ((int)a.size(), ursa_sendmsgs_result(&batch.req, 1));
  EXPECT_EQ(0, ursa_sendmsgs_result(&batch.req, 2));
  EXPECT_EQ(0, ursa_sendmsgs_active(&batch.req));
  // The plain socket sees 13 datagrams (order between messages is free).
  std::string joined;
  std::vector<size_t> lens;
  char buf[2048];
  for (int i = 0; i < 13; i++) {
    ssize_t n = recv(plain, buf, sizeof(buf), 0);
    ASSERT_GE(n, 0) << "datagram " << i << ": " << strerror(errno);
    lens.push_back((size_t)n);
    if (n == 1200 || n == 500) joined.append(buf, (size_t)n);
    if (n == 77) {
      EXPECT_EQ(a, std::string(buf, 77));
    }
  }
  std::vector<size_t> segs;
  for (size_t n : lens)
    if (n == 1200 || n == 500) segs.push_back(n);
  ASSERT_EQ(11u, segs.size()) << "10 of 1200 and one of 500";
  EXPECT_EQ(500u, segs.back()) << "the short one is the last";
  EXPECT_EQ(big.size(), joined.size());
  EXPECT_EQ(t::Checksum(big.data(), big.size()),
            t::Checksum(joined.data(), joined.size()));
  EXPECT_EQ(1, std::count(lens.begin(), lens.end(), 0u));
  EXPECT_EQ(1, std::count(lens.begin(), lens.end(), 77u));
  close(plain);
  Close({&tx});
}

TEST_P(UdpMsg, AGroReceiveIsSplitBackIntoExactDatagrams) {
  Rx rx;
  rx.d.data = &rx;
  ursa_addr ra;
  Bind(&rx.d, lo(), &ra);
  ASSERT_EQ(0, ursa_dgram_recvmsg_start(&rx.d, URSA_RECV_GRO, Rx::OnRecv))
      << ursa_error_detail();
  sockaddr_storage pa;
  socklen_t pl;
  int plain = PlainSocket(family(), lo(), &pa, &pl);
  ASSERT_GE(plain, 0);
  // Bursts sent with GSO: the receiving socket takes each whole.
  struct Burst {
    size_t seg, count, tail;
  } bursts[] = {{1200, 40, 300}, {1000, 7, 0}, {900, 1, 0}, {1452, 45, 1}};
  std::vector<std::string> want;
  uint32_t seed = 10;
  for (const Burst &bu : bursts) {
    std::string payload;
    for (size_t i = 0; i < bu.count; i++) {
      want.push_back(Pattern(bu.seg, seed++));
      payload += want.back();
    }
    if (bu.tail) {
      want.push_back(Pattern(bu.tail, seed++));
      payload += want.back();
    }
    iovec iov{(void *)payload.data(), payload.size()};
    union {
      cmsghdr align;
      char room[CMSG_SPACE(sizeof(uint16_t))];
    } c{};
    msghdr h{};
    h.msg_name = &ra.ss;
    h.msg_namelen = ra.len;
    h.msg_iov = &iov;
    h.msg_iovlen = 1;
    h.msg_control = c.room;
    h.msg_controllen = sizeof(c.room);
    cmsghdr *cm = CMSG_FIRSTHDR(&h);
    cm->cmsg_level = IPPROTO_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t seg = (uint16_t)bu.seg;
    memcpy(CMSG_DATA(cm), &seg, sizeof(seg));
    ASSERT_EQ((ssize_t)payload.size(), sendmsg(plain, &h, 0))
        << strerror(errno);
  }
  ASSERT_TRUE(lp_->RunUntil([&] { return rx.Datagrams().size() >= want.size(); }));
  std::vector<std::string> got = rx.Datagrams();
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); i++) {
    ASSERT_EQ(want[i].size(), got[i].size()) << "datagram " << i;
    EXPECT_EQ(t::Checksum(want[i].data(), want[i].size()),
              t::Checksum(got[i].data(), got[i].size()))
        << "datagram " << i;
  }
  size_t coalesced = 0;
  for (const Got &g : rx.got) {
    EXPECT_EQ(0u, g.flags & URSA_DGRAM_TRUNC);
    if (g.segment < g.bytes.size()) coalesced++;
    EXPECT_EQ(pl, g.fromlen);
    EXPECT_EQ(t::PortOf(pa), t::PortOf(g.from));
  }
  EXPECT_GE(coalesced, 2u) << "the 40- and 45-datagram bursts came as one each";
  EXPECT_EQ(0, rx.errors);
  close(plain);
  Close({&rx.d});
}

TEST_P(UdpMsg, PktinfoAnswersFromTheAddressTheDatagramCameTo) {
  // On a wildcard socket: 127.0.0.1 and 127.0.0.2 are both lo's (IPv6 has
  // only ::1 there, so it checks the one address).
  Rx rx;
  rx.d.data = &rx;
  ursa_addr ra;
  Bind(&rx.d, family() == AF_INET6 ? "::" : "0.0.0.0", &ra);
  ASSERT_EQ(0, ursa_dgram_recvmsg_start(&rx.d, URSA_RECV_PKTINFO, Rx::OnRecv))
      << ursa_error_detail();
  std::vector<const char *> dests = {lo()};
  if (family() == AF_INET) dests.push_back("127.0.0.2");
  sockaddr_storage pa;
  socklen_t pl;
  int plain = PlainSocket(family(), lo(), &pa, &pl);
  ASSERT_GE(plain, 0);
  for (size_t k = 0; k < dests.size(); k++) {
    ursa_addr to;
    std::string text = family() == AF_INET6
                           ? std::string("[") + dests[k] + "]:" +
                                 std::to_string(t::PortOf(ra.ss))
                           : std::string(dests[k]) + ":" +
                                 std::to_string(t::PortOf(ra.ss));
    ASSERT_EQ(0, ursa_addr_parse(text.c_str(), &to));
    std::string q = "question " + std::to_string(k);
    ASSERT_EQ((ssize_t)q.size(),
              sendto(plain, q.data(), q.size(), 0, (sockaddr *)&to.ss, to.len));
    ASSERT_TRUE(lp_->RunUntil([&] { return rx.got.size() == k + 1; }));
    const Got &g = rx.got[k];
    EXPECT_EQ(q, g.bytes);
    ASSERT_GT(g.locallen, 0u) << "no PKTINFO";
    char lbuf[128];
    ASSERT_GT(ursa_addr_format((sockaddr *)&g.local, g.locallen, lbuf,
                               sizeof(lbuf)), 0);
    std::string local = lbuf;
    EXPECT_NE(std::string::npos, local.find(dests[k])) << local;
    EXPECT_EQ(if_nametoindex("lo"), g.ifindex);
    // The answer leaves from the address the question came to.
    ursa_dgram_msg m{};
    std::string ans = "answer " + std::to_string(k);
    m.buf = ans.data();
    m.len = ans.size();
    m.to = (sockaddr *)&g.from;
    m.tolen = g.fromlen;
    m.src = (sockaddr *)&g.local;
    m.srclen = g.locallen;
    Batch batch;
    batch.req.data = &batch;
    ASSERT_EQ(0, ursa_dgram_sendmsgs(&batch.req, &rx.d, &m, 1, Batch::OnSent))
        << ursa_error_detail();
    ASSERT_TRUE(lp_->RunUntil([&] { return batch.calls == 1; }));
    EXPECT_EQ(0, batch.status) << ursa_err_name(batch.status);
    char buf[64];
    sockaddr_storage src;
    socklen_t sl = sizeof(src);
    ssize_t n = recvfrom(plain, buf, sizeof(buf), 0, (sockaddr *)&src, &sl);
    ASSERT_EQ((ssize_t)ans.size(), n) << strerror(errno);
    EXPECT_EQ(ans, std::string(buf, (size_t)n));
    char sbuf[128];
    ASSERT_GT(ursa_addr_format((sockaddr *)&src, sl, sbuf, sizeof(sbuf)), 0);
    EXPECT_NE(std::string::npos, std::string(sbuf).find(dests[k]))
        << "answered from " << sbuf << " to a question sent to " << dests[k];
  }
  close(plain);
  Close({&rx.d});
}

TEST_P(UdpMsg, EcnBitsAndTimestampsComeThrough) {
  Rx rx;
  rx.d.data = &rx;
  ursa_addr ra, ta;
  Bind(&rx.d, lo(), &ra);
  ASSERT_EQ(0, ursa_dgram_recvmsg_start(
                   &rx.d, URSA_RECV_TOS | URSA_RECV_TIMESTAMP, Rx::OnRecv))
      << ursa_error_detail();
  ursa_dgram tx{};
  Bind(&tx, lo(), &ta);
  // Not-ECT, ECT(1), ECT(0), CE; then a DSCP with ECT(0); then no TOS.
  const int tos[] = {0x00, 0x01, 0x02, 0x03, 0xb8 | 0x02, -1};
  const int n = sizeof(tos) / sizeof(tos[0]);
  std::vector<std::string> bodies;
  ursa_dgram_msg m[n] = {};
  for (int i = 0; i < n; i++) bodies.push_back("ecn " + std::to_string(i));
  for (int i = 0; i < n; i++) {
    m[i].buf = bodies[i].data();
    m[i].len = bodies[i].size();
    m[i].to = (sockaddr *)&ra.ss;
    m[i].tolen = ra.len;
    if (tos[i] >= 0) {
      m[i].flags = URSA_MSG_TOS;
      m[i].tos = tos[i];
    }
  }
  timespec t0;
  clock_gettime(CLOCK_REALTIME, &t0);
  Batch batch;
  batch.req.data = &batch;
  ASSERT_EQ(0, ursa_dgram_sendmsgs(&batch.req, &tx, m, n, Batch::OnSent))
      << ursa_error_detail();
  ASSERT_TRUE(lp_->RunUntil(
      [&] { return batch.calls == 1 && rx.got.size() == (size_t)n; }));
  EXPECT_EQ(0, batch.status);
  int64_t start = (int64_t)t0.tv_sec * 1000000000 + t0.tv_nsec;
  for (const Got &g : rx.got) {
    int i = g.bytes.back() - '0';
    ASSERT_GE(i, 0);
    ASSERT_LT(i, n);
    EXPECT_EQ(tos[i] < 0 ? 0 : tos[i], g.tos) << "message " << i;
    EXPECT_GE(g.ts, start - 1000000) << "message " << i;
    EXPECT_LT(g.ts, start + 5000000000LL) << "message " << i;
  }
  Close({&rx.d, &tx});
}

TEST_P(UdpMsg, ALargeDatagramArrivesWhole) {
  Rx rx;
  rx.d.data = &rx;
  ursa_addr ra, ta;
  Bind(&rx.d, lo(), &ra);
  // The loop's ordinary buffers are 16 KiB: LARGE takes the 64 KiB ring.
  ASSERT_EQ(0, ursa_dgram_recvmsg_start(&rx.d, URSA_RECV_LARGE, Rx::OnRecv))
      << ursa_error_detail();
  ursa_dgram tx{};
  Bind(&tx, lo(), &ta);
  size_t max = family() == AF_INET6 ? 65527 : 65507;
  std::string big = Pattern(max, 7), mid = Pattern(20000, 8);
  ursa_dgram_msg m[2] = {};
  m[0].buf = big.data();
  m[0].len = big.size();
  m[1].buf = mid.data();
  m[1].len = mid.size();
  for (auto &x : m) {
    x.to = (sockaddr *)&ra.ss;
    x.tolen = ra.len;
  }
  Batch batch;
  batch.req.data = &batch;
  ASSERT_EQ(0, ursa_dgram_sendmsgs(&batch.req, &tx, m, 2, Batch::OnSent));
  ASSERT_TRUE(lp_->RunUntil(
      [&] { return batch.calls == 1 && rx.got.size() == 2; }));
  EXPECT_EQ(0, batch.status) << ursa_err_name(batch.status);
  for (const Got &g : rx.got) {
    EXPECT_EQ(0u, g.flags & URSA_DGRAM_TRUNC);
    const std::string &w = g.bytes.size() == big.size() ? big : mid;
    ASSERT_EQ(w.size(), g.bytes.size());
    EXPECT_EQ(t::Checksum(w.data(), w.size()),
              t::Checksum(g.bytes.data(), g.bytes.size()));
    EXPECT_EQ((unsigned)g.bytes.size(), g.segment);
  }
  Close({&rx.d, &tx});
}

TEST_P(UdpMsg, ABatchIsOneSystemCallOnEpoll) {
  ursa_dgram tx{};
  ursa_addr ta;
  Bind(&tx, lo(), &ta);
  sockaddr_storage pa;
  socklen_t pl;
  int plain = PlainSocket(family(), lo(), &pa, &pl);
  ASSERT_GE(plain, 0);
  std::vector<std::string> bodies;
  ursa_dgram_msg m[URSA_DGRAM_BATCH] = {};
  for (int i = 0; i < URSA_DGRAM_BATCH; i++)
    bodies.push_back(Pattern(100 + i, 30 + i));
  for (int i = 0; i < URSA_DGRAM_BATCH; i++) {
    m[i].buf = bodies[i].data();
    m[i].len = bodies[i].size();
    m[i].to = (sockaddr *)&pa;
    m[i].tolen = pl;
  }
  ursa_stats before, after;
  ASSERT_EQ(0, ursa_loop_run(loop(), URSA_RUN_NOWAIT));
  ursa_loop_stats(loop(), &before);
  Batch batch;
  batch.req.data = &batch;
  ASSERT_EQ(0, ursa_dgram_sendmsgs(&batch.req, &tx, m, URSA_DGRAM_BATCH,
                                   Batch::OnSent));
  ASSERT_TRUE(lp_->RunUntil([&] { return batch.calls == 1; }));
  ursa_loop_stats(loop(), &after);
  EXPECT_EQ(0, batch.status);
  // On either backend a handful of calls, never one per datagram.
  EXPECT_LT(after.enters - before.enters, 6u);
  std::vector<bool> seen(URSA_DGRAM_BATCH);
  char buf[256];
  for (int i = 0; i < URSA_DGRAM_BATCH; i++) {
    ssize_t n = recv(plain, buf, sizeof(buf), 0);
    ASSERT_GE(n, 100) << strerror(errno);
    ASSERT_LT(n, 100 + URSA_DGRAM_BATCH);
    EXPECT_EQ(bodies[n - 100], std::string(buf, (size_t)n));
    seen[n - 100] = true;
  }
  for (int i = 0; i < URSA_DGRAM_BATCH; i++) EXPECT_TRUE(seen[i]) << i;
  close(plain);
  Close({&tx});
}

// A burst waiting in the socket is taken in a few calls, not one per
// datagram: multishot recvmsg on io_uring, recvmmsg on epoll.
TEST_P(UdpMsg, ABurstIsReceivedInAFewCalls) {
  if (std::get<0>(GetParam()).disable & URSA_FEAT_MULTISHOT_RECV)
    GTEST_SKIP() << "single-shot receives take one call each by design";
  Rx rx;
  rx.d.data = &rx;
  ursa_addr ra;
  Bind(&rx.d, lo(), &ra);
  sockaddr_storage pa;
  socklen_t pl;
  int plain = PlainSocket(family(), lo(), &pa, &pl);
  ASSERT_GE(plain, 0);
  const int kN = 32;
  for (int i = 0; i < kN; i++) {
    std::string b = Pattern(100 + i, 50 + i);
    ASSERT_EQ((ssize_t)b.size(), sendto(plain, b.data(), b.size(), 0,
                                        (sockaddr *)&ra.ss, ra.len));
  }
  ursa_stats before, after;
  ASSERT_EQ(0, ursa_loop_run(loop(), URSA_RUN_NOWAIT));
  ursa_loop_stats(loop(), &before);
  ASSERT_EQ(0, ursa_dgram_recvmsg_start(&rx.d, 0, Rx::OnRecv));
  ASSERT_TRUE(lp_->RunUntil([&] { return rx.got.size() == (size_t)kN; }));
  ursa_loop_stats(loop(), &after);
  EXPECT_LT(after.enters - before.enters, (uint64_t)kN / 2);
  for (int i = 0; i < kN; i++) {
    std::string b = Pattern(100 + i, 50 + i);
    EXPECT_EQ(b, rx.got[i].bytes) << "datagram " << i;
  }
  close(plain);
  Close({&rx.d});
}

TEST_P(UdpMsg, CloseWithABatchInFlightCallsItBackOnce) {
  ursa_dgram tx{};
  ursa_addr ta;
  Bind(&tx, lo(), &ta);
  sockaddr_storage pa;
  socklen_t pl;
  int plain = PlainSocket(family(), lo(), &pa, &pl);
  ASSERT_GE(plain, 0);
  std::string body = Pattern(64, 3);
  ursa_dgram_msg m[4] = {};
  for (auto &x : m) {
    x.buf = body.data();
    x.len = body.size();
    x.to = (sockaddr *)&pa;
    x.tolen = pl;
  }
  Batch batch;
  batch.req.data = &batch;
  ASSERT_EQ(0, ursa_dgram_sendmsgs(&batch.req, &tx, m, 4, Batch::OnSent));
  EXPECT_EQ(-EBUSY, ursa_dgram_sendmsgs(&batch.req, &tx, m, 4, Batch::OnSent));
  Close({&tx});
  EXPECT_EQ(1, batch.calls);
  // Sent before the close, or cancelled: never anything else.
  for (unsigned i = 0; i < 4; i++) {
    int r = ursa_sendmsgs_result(&batch.req, i);
    EXPECT_TRUE(r == 64 || r == -ECANCELED) << i << ": " << r;
  }
  close(plain);
}

INSTANTIATE_TEST_SUITE_P(
    Variants, UdpMsg,
    ::testing::Combine(::testing::ValuesIn(kUdpVariants),
                       ::testing::Values(AF_INET, AF_INET6)),
    ParamName);

// Every refusal names its field; nothing refused is left active.
TEST(UdpMsgArgs, BadMessagesAreRefusedByName) {
  for (ursa_backend be : t::kBackends) {
    ursa_loop_options o = t::OptionsFor(be);
    t::Loop lp(&o);
    ASSERT_EQ(0, lp.status());
    ursa_dgram d{}, u{};
    ursa_addr a, ua{};
    ASSERT_EQ(0, ursa_addr_parse("127.0.0.1:0", &a));
    ASSERT_EQ(0, ursa_dgram_bind(lp.get(), &d, (sockaddr *)&a.ss, a.len, 0));
    ASSERT_EQ(0, ursa_dgram_addr(&d, &a.ss, &a.len));
    ua.ss.ss_family = AF_UNIX;
    ua.len = sizeof(sa_family_t);
    ASSERT_EQ(0, ursa_dgram_bind(lp.get(), &u, (sockaddr *)&ua.ss, ua.len, 0));
    std::string body(3000, 'x');
    ursa_dgram_msg m{};
    m.buf = body.data();
    m.len = body.size();
    m.to = (sockaddr *)&a.ss;
    m.tolen = a.len;
    Batch b;
    b.req.data = &b;
    struct Case {
      const char *what;
      std::function<void(ursa_dgram_msg *)> set;
      ursa_dgram *on;
    } cases[] = {
        {"segment 0", [](ursa_dgram_msg *x) { x->flags = URSA_MSG_GSO; }, &d},
        {"segment 3001 is above its length 3000",
         [](ursa_dgram_msg *x) {
           x->flags = URSA_MSG_GSO;
           x->segment = 3001;
         },
         &d},
        {"more than 64 segments",
         [](ursa_dgram_msg *x) {
           x->flags = URSA_MSG_GSO;
           x->segment = 46;  // 66 segments
         },
         &d},
        {"tos 256",
         [](ursa_dgram_msg *x) {
           x->flags = URSA_MSG_TOS;
           x->tos = 256;
         },
         &d},
        {"unknown flags", [](ursa_dgram_msg *x) { x->flags = 0x80; }, &d},
        {"a segment size needs a UDP socket",
         [](ursa_dgram_msg *x) {
           x->flags = URSA_MSG_GSO;
           x->segment = 1000;
           x->to = nullptr;
         },
         &u},
        {"source is not a whole IPv4 or IPv6 address",
         [&](ursa_dgram_msg *x) {
           x->src = (sockaddr *)&a.ss;
           x->srclen = 4;
         },
         &d},
    };
    for (const Case &c : cases) {
      ursa_dgram_msg x = m;
      c.set(&x);
      EXPECT_EQ(-EINVAL, ursa_dgram_sendmsgs(&b.req, c.on, &x, 1,
                                             Batch::OnSent))
          << c.what;
      EXPECT_NE(nullptr, strstr(ursa_error_detail(), c.what))
          << c.what << " / " << ursa_error_detail();
      EXPECT_EQ(0, ursa_sendmsgs_active(&b.req));
    }
    ursa_dgram_msg many[URSA_DGRAM_BATCH + 1] = {};
    EXPECT_EQ(-EINVAL, ursa_dgram_sendmsgs(&b.req, &d, many, 0, Batch::OnSent));
    EXPECT_EQ(-EINVAL, ursa_dgram_sendmsgs(&b.req, &d, many,
                                           URSA_DGRAM_BATCH + 1,
                                           Batch::OnSent));
    EXPECT_NE(nullptr, strstr(ursa_error_detail(), "17 messages"));
    // A bad second message stops the first as well.
    ursa_dgram_msg two[2] = {m, m};
    two[1].flags = URSA_MSG_GSO;
    EXPECT_EQ(-EINVAL, ursa_dgram_sendmsgs(&b.req, &d, two, 2, Batch::OnSent));
    EXPECT_NE(nullptr, strstr(ursa_error_detail(), "message 1"));
    EXPECT_EQ(0, ursa_sendmsgs_active(&b.req));
    EXPECT_EQ(-ENOENT, ursa_sendmsgs_cancel(&b.req));
    // Receive options on the wrong socket, and unknown bits.
    EXPECT_EQ(-EINVAL, ursa_dgram_recvmsg_start(&u, URSA_RECV_GRO,
                                                Rx::OnRecv));
    EXPECT_NE(nullptr, strstr(ursa_error_detail(), "GRO needs a UDP socket"));
    EXPECT_EQ(-EINVAL, ursa_dgram_recvmsg_start(&u, URSA_RECV_PKTINFO,
                                                Rx::OnRecv));
    EXPECT_EQ(-EINVAL, ursa_dgram_recvmsg_start(&d, 0x400, Rx::OnRecv));
    EXPECT_NE(nullptr, strstr(ursa_error_detail(), "unknown flags 0x400"));
    EXPECT_EQ(-EINVAL, ursa_dgram_recvmsg_start(&d, 0, nullptr));
    EXPECT_EQ(0, b.calls);
    int closed = 0;
    d.data = u.data = &closed;
    ASSERT_EQ(0, ursa_dgram_close(&d, Closed));
    ASSERT_EQ(0, ursa_dgram_close(&u, Closed));
    ASSERT_TRUE(lp.RunUntil([&] { return closed == 2; }));
    lp.Finish();
  }
}

TEST(UdpMsgArgs, LargeBufsMustBeAPowerOfTwo) {
  ursa_loop_options o{};
  o.large_bufs = 100;
  ursa_loop *loop = nullptr;
  EXPECT_EQ(-EINVAL, ursa_loop_new(&loop, &o));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "large_bufs 100"));
  EXPECT_EQ(nullptr, loop);
}

}  // namespace
