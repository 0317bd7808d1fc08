// stream_test.cc - TCP streams over IPv4 and IPv6 under every ring variant:
// accept, echo, write order, buffer exhaustion, resets, half-close, close
// with operations in flight, connect errors and timeouts.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <thread>

#include "tests/testutil.h"

namespace {

using Param = std::tuple<t::Variant, int>;

class Stream : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    t::ApplyVariant(std::get<0>(GetParam()), &opts_);
    Make();
  }
  void Make() {
    loop_.reset(new t::Loop(&opts_));
    ASSERT_EQ(0, loop_->status()) << ursa_strerror(loop_->status());
  }
  void TearDown() override {
    if (loop_ && loop_->get()) loop_->Finish();
  }
  int family() const { return std::get<1>(GetParam()); }
  ursa_loop *loop() { return loop_->get(); }
  bool RunUntil(const std::function<bool()> &f, int ms = 20000) {
    return loop_->RunUntil(f, ms);
  }
  ursa_loop_options opts_{};
  std::unique_ptr<t::Loop> loop_;
};

std::string ParamName(const ::testing::TestParamInfo<Param> &info) {
  return std::string(std::get<0>(info.param).name) +
         (std::get<1>(info.param) == AF_INET6 ? "_ipv6" : "_ipv4");
}

TEST_P(Stream, AcceptsManyClients) {
  t::EchoServer srv(loop(), family());
  const int kClients = 200;
  std::vector<std::unique_ptr<t::EchoClient>> clients;
  for (int i = 0; i < kClients; i++)
    clients.emplace_back(new t::EchoClient(loop(), srv.addr(), srv.addrlen(),
                                           t::RandomBytes(100, (uint32_t)i)));
  ASSERT_TRUE(RunUntil([&] { return t::AllDone(clients); }));
  EXPECT_EQ(kClients, srv.accepted);
  for (auto &c : clients) {
    EXPECT_EQ(0, c->connect_status);
    EXPECT_TRUE(t::SameBytes(c->payload, c->got));
  }
  srv.Close();
  ASSERT_TRUE(RunUntil([&] { return srv.closed(); }));
  ursa_stats st;
  ursa_loop_stats(loop(), &st);
  EXPECT_EQ(kClients * 100u * 2, st.bytes_in);
  EXPECT_EQ(st.bytes_in, st.bytes_out);
}

TEST_P(Stream, EchoesRandomPayloadsByteForByte) {
  t::EchoServer srv(loop(), family());
  const size_t sizes[] = {1, 7, 100, 4096, 65536, 1 << 20, 8 << 20};
  std::vector<std::unique_ptr<t::EchoClient>> clients;
  uint32_t seed = 1;
  for (size_t n : sizes)
    clients.emplace_back(new t::EchoClient(loop(), srv.addr(), srv.addrlen(),
                                           t::RandomBytes(n, seed++)));
  ASSERT_TRUE(RunUntil([&] { return t::AllDone(clients); }));
  for (auto &c : clients) {
    EXPECT_EQ(0, c->connect_status);
    EXPECT_EQ(0, c->read_status);
    EXPECT_EQ(0, c->write_status);
    EXPECT_TRUE(t::SameBytes(c->payload, c->got)) << c->payload.size();
  }
  srv.Close();
  ASSERT_TRUE(RunUntil([&] { return srv.closed(); }));
}

TEST_P(Stream, QueuedWritesKeepOrder) {
  t::EchoServer srv(loop(), family());
  // 2000 writes of 1..997 bytes queued at once on one stream.
  t::EchoClient c(loop(), srv.addr(), srv.addrlen(),
                  t::RandomBytes(997 * 2000, 77), 997);
  t::EchoClient odd(loop(), srv.addr(), srv.addrlen(),
                    t::RandomBytes(123457, 78), 13);
  ASSERT_TRUE(RunUntil([&] { return c.done() && odd.done(); }));
  EXPECT_TRUE(t::SameBytes(c.payload, c.got));
  EXPECT_TRUE(t::SameBytes(odd.payload, odd.got));
  srv.Close();
  ASSERT_TRUE(RunUntil([&] { return srv.closed(); }));
}

TEST_P(Stream, SmallBufferRingDeliversEveryByteInOrder) {
  loop_->Finish();
  opts_.buf_count = 2;
  opts_.buf_size = 64;
  Make();
  t::EchoServer srv(loop(), family());
  std::vector<std::unique_ptr<t::EchoClient>> clients;
  for (int i = 0; i < 8; i++)
    clients.emplace_back(new t::EchoClient(loop(), srv.addr(), srv.addrlen(),
                                           t::RandomBytes(256 << 10, 900 + i),
                                           4096));
  ASSERT_TRUE(RunUntil([&] { return t::AllDone(clients); }));
  for (auto &c : clients) EXPECT_TRUE(t::SameBytes(c->payload, c->got));
  ursa_stats st;
  ursa_loop_stats(loop(), &st);
  EXPECT_GT(st.enobufs, 0u) << "the ring was never exhausted";
  EXPECT_EQ(0, srv.read_errors);
  srv.Close();
  ASSERT_TRUE(RunUntil([&] { return srv.closed(); }));
}

// A server-side stream with a plain blocking socket as the peer.
struct Accepted {
  ursa_stream s{};
  bool have = false;
  std::vector<char> got;
  int read_status = 0;
  bool closed = false;
  int shutdown_status = 1;
  void *user = nullptr;
};

void AcceptOne(ursa_listener *l, int status) {
  auto *a = static_cast<Accepted *>(l->data);
  if (status < 0 || a->have) return;
  ASSERT_EQ(0, ursa_accept(l, &a->s));
  a->s.data = a;
  a->have = true;
}
void ReadInto(ursa_stream *s, ssize_t n, const void *buf) {
  auto *a = static_cast<Accepted *>(s->data);
  if (n < 0) {
    a->read_status = (int)n;
    return;
  }
  a->got.insert(a->got.end(), (const char *)buf, (const char *)buf + n);
}
void MarkClosed(ursa_handle *h) {
  static_cast<Accepted *>(h->data)->closed = true;
}
void MarkListenerClosed(ursa_handle *h) {
  *static_cast<bool *>(h->data) = true;
}

class Peer {
 public:
  Peer(Stream *, ursa_loop *loop, int family, Accepted *a, unsigned flags = 0)
      : loop_(loop) {
    sockaddr_storage ss;
    socklen_t len = t::LoopbackAddr(family, &ss);
    l_.data = a;
    EXPECT_EQ(0, ursa_listen(loop, &l_, (sockaddr *)&ss, len, 0, flags,
                             AcceptOne));
    socklen_t al;
    EXPECT_EQ(0, ursa_listener_addr(&l_, &addr_, &al));
    fd_ = t::BlockingConnect(addr_, al);
    EXPECT_GE(fd_, 0);
  }
  void CloseListener(t::Loop *lp) {
    bool done = false;
    l_.data = &done;
    ASSERT_EQ(0, ursa_listener_close(&l_, MarkListenerClosed));
    ASSERT_TRUE(lp->RunUntil([&] { return done; }));
  }
  ~Peer() {
    if (fd_ >= 0) close(fd_);
  }
  int fd_ = -1;

 private:
  ursa_loop *loop_;
  ursa_listener l_{};
  sockaddr_storage addr_{};
};

// Gather writes: one request, one callback, every buffer's bytes in order
// (empty buffers skipped), mixed with plain writes and with one that is
// sent alone under a timeout; a writev of 600 buffers spans more than one
// send.  The peer reads on a thread; lengths and checksums compared.
TEST_P(Stream, GatherWritesArriveWholeAndInOrder) {
  Accepted a;
  Peer peer(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  std::vector<std::vector<char>> bufs;
  auto piece = [&](size_t n) {
    bufs.push_back(t::RandomBytes(n, 900 + (uint32_t)bufs.size()));
    return iovec{n ? bufs.back().data() : nullptr, n};
  };
  bufs.reserve(1000);
  std::vector<iovec> v1 = {piece(0), piece(1), piece(100000), piece(0),
                           piece(3000)};
  std::vector<iovec> v2;
  for (int i = 0; i < 600; i++) v2.push_back(piece(1 + (i * 37) % 200));
  std::vector<iovec> v3 = {piece(5000), piece(7)};
  std::vector<char> plain = t::RandomBytes(4321, 999);
  std::vector<char> want;
  auto add = [&](const std::vector<iovec> &v) {
    for (auto &e : v)
      want.insert(want.end(), (char *)e.iov_base,
                  (char *)e.iov_base + e.iov_len);
  };
  add(v1);
  want.insert(want.end(), plain.begin(), plain.end());
  add(v2);
  add(v3);
  struct Req {
    ursa_write_req w{};
    int status = 1;
    int calls = 0;
  } r[4];
  auto cb = [](ursa_write_req *w, int st) {
    auto *q = static_cast<Req *>(w->data);
    q->status = st;
    q->calls++;
  };
  for (auto &q : r) q.w.data = &q;
  ASSERT_EQ(0, ursa_writev(&r[0].w, &a.s, v1.data(), (unsigned)v1.size(), 0,
                           cb));
  ASSERT_EQ(0, ursa_write(&r[1].w, &a.s, plain.data(), plain.size(), 0, cb));
  ASSERT_EQ(0, ursa_writev(&r[2].w, &a.s, v2.data(), (unsigned)v2.size(), 0,
                           cb));
  ASSERT_EQ(0, ursa_writev(&r[3].w, &a.s, v3.data(), (unsigned)v3.size(),
                           5000, cb));
  std::vector<char> got(want.size());
  bool read_ok = false;
  std::thread reader(
      [&] { read_ok = t::ReadExactly(peer.fd_, got.data(), got.size()); });
  bool all = RunUntil([&] {
    for (auto &q : r)
      if (q.status == 1) return false;
    return true;
  });
  reader.join();
  ASSERT_TRUE(all);
  ASSERT_TRUE(read_ok);
  EXPECT_TRUE(t::SameBytes(want, got));
  size_t sizes[4] = {103001, plain.size(), 0, 5007};
  for (auto &e : v2) sizes[2] += e.iov_len;
  for (int i = 0; i < 4; i++) {
    EXPECT_EQ(0, r[i].status) << i << ": " << ursa_err_name(r[i].status);
    EXPECT_EQ(1, r[i].calls) << i;
    EXPECT_EQ(sizes[i], r[i].w.done) << i;
  }
  // Refused, each with a reason; nothing queued.
  ursa_write_req bad{};
  iovec one = {plain.data(), 1}, null_base = {nullptr, 5}, empty = {nullptr, 0};
  iovec huge[2] = {{plain.data(), SIZE_MAX}, {plain.data(), 2}};
  EXPECT_EQ(-EINVAL, ursa_writev(&bad, &a.s, nullptr, 1, 0, cb));
  EXPECT_EQ(-EINVAL, ursa_writev(&bad, &a.s, &one, 0, 0, cb));
  EXPECT_EQ(-EINVAL, ursa_writev(&bad, &a.s, &one, URSA_WRITE_BATCH_MAX + 1,
                                 0, cb));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "iovcnt"));
  EXPECT_EQ(-EINVAL, ursa_writev(&bad, &a.s, &null_base, 1, 0, cb));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "buffer 0 is NULL"));
  EXPECT_EQ(-EINVAL, ursa_writev(&bad, &a.s, &empty, 1, 0, cb));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "0 bytes"));
  EXPECT_EQ(-EINVAL, ursa_writev(&bad, &a.s, huge, 2, 0, cb));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "overflows"));
  EXPECT_EQ(0u, ursa_write_queue_size(&a.s));
  ursa_stream_close(&a.s, MarkClosed);
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
  peer.CloseListener(loop_.get());
}

// The write mark: writes past high make the stream not writable; once the
// peer has taken enough that the queue is at low, it is writable again and
// the callback runs, once per crossing.  Every byte arrives.
struct Marked {
  int writable_calls = 0;
  size_t queue_at_call = SIZE_MAX;
};
void OnWritable(ursa_stream *s) {
  auto *a = static_cast<Accepted *>(s->data);
  auto *m = static_cast<Marked *>(a->user);
  m->writable_calls++;
  m->queue_at_call = ursa_write_queue_size(s);
  EXPECT_EQ(1, ursa_stream_writable(s));
}

TEST_P(Stream, WriteMarkTellsWhenASlowPeerHasDrained) {
  Accepted a;
  Marked mk;
  a.user = &mk;
  Peer peer(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  const size_t kHigh = 256 << 10, kLow = 64 << 10;
  EXPECT_EQ(-EINVAL, ursa_stream_write_marks(&a.s, kLow, kHigh, OnWritable));
  EXPECT_EQ(-EINVAL,
            ursa_stream_write_marks(&a.s, (size_t)1 << 33, kLow, OnWritable));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "4 GiB"));
  ASSERT_EQ(0, ursa_stream_write_marks(&a.s, kHigh, kLow, OnWritable));
  EXPECT_EQ(1, ursa_stream_writable(&a.s));
  std::vector<char> chunk = t::RandomBytes(64 << 10, 4242);
  std::vector<ursa_write_req> ws(800);
  static int done;
  done = 0;
  size_t queued = 0, written = 0;
  for (int round = 0; round < 2; round++) {
    // Feed until not writable (the peer reads nothing meanwhile).
    while (ursa_stream_writable(&a.s)) {
      ASSERT_LT(queued, ws.size()) << "never stopped being writable";
      ASSERT_EQ(0, ursa_write(&ws[queued++], &a.s, chunk.data(), chunk.size(),
                              0, [](ursa_write_req *, int st) {
                                EXPECT_EQ(0, st);
                                done++;
                              }));
      ursa_loop_run(loop(), URSA_RUN_NOWAIT);
    }
    EXPECT_GE(ursa_write_queue_size(&a.s), kHigh);
    EXPECT_EQ(round, mk.writable_calls) << "called while still backed up";
    // The peer takes everything written so far.
    size_t want = queued * chunk.size() - written;
    std::vector<char> got(want);
    bool read_ok = false;
    std::thread reader(
        [&] { read_ok = t::ReadExactly(peer.fd_, got.data(), got.size()); });
    bool drained = RunUntil([&] { return done == (int)queued; });
    reader.join();
    ASSERT_TRUE(drained && read_ok);
    written += want;
    for (size_t off = 0; off < got.size(); off += chunk.size())
      ASSERT_EQ(0, memcmp(got.data() + off, chunk.data(), chunk.size()))
          << "round " << round << " at " << off;
    EXPECT_EQ(round + 1, mk.writable_calls);
    EXPECT_LE(mk.queue_at_call, kLow);
    EXPECT_EQ(1, ursa_stream_writable(&a.s));
  }
  ASSERT_EQ(0, ursa_stream_write_marks(&a.s, 0, 0, nullptr));
  ursa_stream_close(&a.s, MarkClosed);
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
  peer.CloseListener(loop_.get());
}

bool SameAddr(const sockaddr_storage &a, socklen_t al,
              const sockaddr_storage &b, socklen_t bl) {
  return al == bl && memcmp(&a, &b, al) == 0;
}

// Both ends' addresses, on an accepted stream (recorded at accept when it
// is a direct descriptor) and on a connected one, against what the plain
// socket at the other end says; a direct stream under a wildcard listener
// says it cannot know its local address.
TEST_P(Stream, StreamsKnowBothAddresses) {
  Accepted a;
  Peer peer(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  sockaddr_storage cl, sv, got;
  socklen_t cll = sizeof(cl), svl = sizeof(sv), gl = 0;
  ASSERT_EQ(0, getsockname(peer.fd_, (sockaddr *)&cl, &cll));
  ASSERT_EQ(0, getpeername(peer.fd_, (sockaddr *)&sv, &svl));
  ASSERT_EQ(0, ursa_stream_peer_addr(&a.s, &got, &gl));
  EXPECT_TRUE(SameAddr(cl, cll, got, gl)) << "accepted stream's peer";
  ASSERT_EQ(0, ursa_stream_local_addr(&a.s, &got, &gl));
  EXPECT_TRUE(SameAddr(sv, svl, got, gl)) << "accepted stream's local";
  EXPECT_EQ(-EINVAL, ursa_stream_peer_addr(&a.s, nullptr, &gl));

  // A connected stream, to a listener of plain sockets.
  sockaddr_storage ls;
  socklen_t lsl = t::LoopbackAddr(family(), &ls);
  int lfd = socket(family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(0, bind(lfd, (sockaddr *)&ls, lsl));
  ASSERT_EQ(0, listen(lfd, 4));
  ASSERT_EQ(0, getsockname(lfd, (sockaddr *)&ls, &lsl));
  ursa_stream c{};
  int cs = 1;
  c.data = &cs;
  ASSERT_EQ(0, ursa_connect(loop(), &c, (sockaddr *)&ls, lsl, 0, 0,
                            [](ursa_stream *s, int st) {
                              *static_cast<int *>(s->data) = st;
                            }));
  EXPECT_EQ(-ENOTCONN, ursa_stream_peer_addr(&c, &got, &gl));
  ASSERT_TRUE(RunUntil([&] { return cs != 1; }));
  ASSERT_EQ(0, cs);
  int afd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(afd, 0);
  sockaddr_storage ap;
  socklen_t apl = sizeof(ap);
  ASSERT_EQ(0, getpeername(afd, (sockaddr *)&ap, &apl));
  ASSERT_EQ(0, ursa_stream_peer_addr(&c, &got, &gl));
  EXPECT_TRUE(SameAddr(ls, lsl, got, gl)) << "connected stream's peer";
  ASSERT_EQ(0, ursa_stream_local_addr(&c, &got, &gl));
  EXPECT_TRUE(SameAddr(ap, apl, got, gl)) << "connected stream's local";
  ASSERT_TRUE(loop_->CloseStreams({&c, &a.s}));
  close(afd);
  close(lfd);
  peer.CloseListener(loop_.get());

  if (!(std::get<0>(GetParam()).direct_files)) return;
  // A direct stream accepted on a wildcard listener: the peer is as the
  // accept recorded it.
  ursa_addr any;
  ASSERT_EQ(0, ursa_addr_parse(family() == AF_INET6 ? "[::]:0" : "0.0.0.0:0",
                               &any));
  ursa_listener wl{};
  Accepted b;
  wl.data = &b;
  ASSERT_EQ(0, ursa_listen(loop(), &wl, (sockaddr *)&any.ss, any.len, 0, 0,
                           AcceptOne));
  sockaddr_storage wa;
  socklen_t wal;
  ASSERT_EQ(0, ursa_listener_addr(&wl, &wa, &wal));
  sockaddr_storage to;
  socklen_t tol = t::LoopbackAddr(family(), &to, t::PortOf(wa));
  int fd = t::BlockingConnect(to, tol);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(RunUntil([&] { return b.have; }));
  cll = sizeof(cl);
  ASSERT_EQ(0, getsockname(fd, (sockaddr *)&cl, &cll));
  ASSERT_EQ(0, ursa_stream_peer_addr(&b.s, &got, &gl));
  EXPECT_TRUE(SameAddr(cl, cll, got, gl));
  // The local one is asked of the socket, installed for a moment as a
  // plain descriptor (IORING_OP_FIXED_FD_INSTALL, Linux 6.8).
  int lr = ursa_stream_local_addr(&b.s, &got, &gl);
  if (lr == -EOPNOTSUPP) {
    EXPECT_NE(nullptr, strstr(ursa_error_detail(), "FIXED_FD_INSTALL"));
  } else {
    ASSERT_EQ(0, lr) << ursa_strerror(lr);
    EXPECT_TRUE(SameAddr(to, tol, got, gl)) << "the address it came in on";
    // Again from inside read callbacks, with the stream's receives still
    // coming: what completes while the call waits is held for the loop,
    // and 2 MiB arrive byte for byte.
    struct Ask {
      Accepted *a;
      sockaddr_storage *to;
      socklen_t tol;
      int asked = 0, wrong = 0;
    } ask{&b, &to, tol};
    b.user = &ask;
    ASSERT_EQ(0, ursa_read_start(&b.s, [](ursa_stream *s, ssize_t n,
                                          const void *buf) {
      auto *a = static_cast<Accepted *>(s->data);
      auto *k = static_cast<Ask *>(a->user);
      if (n < 0) {
        a->read_status = (int)n;
        return;
      }
      a->got.insert(a->got.end(), (const char *)buf, (const char *)buf + n);
      sockaddr_storage la;
      socklen_t ll;
      if (ursa_stream_local_addr(s, &la, &ll) != 0 ||
          !SameAddr(*k->to, k->tol, la, ll))
        k->wrong++;
      k->asked++;
    }));
    std::vector<char> out = t::RandomBytes(2 << 20, 99);
    std::thread w([&] { t::WriteAll(fd, out.data(), out.size()); });
    bool all = RunUntil([&] { return b.got.size() >= out.size(); });
    w.join();
    ASSERT_TRUE(all);
    EXPECT_TRUE(t::SameBytes(out, b.got));
    EXPECT_GT(ask.asked, 1);
    EXPECT_EQ(0, ask.wrong);
  }
  ASSERT_TRUE(loop_->CloseStreams({&b.s}));
  close(fd);
  bool lclosed = false;
  wl.data = &lclosed;
  ASSERT_EQ(0, ursa_listener_close(&wl, MarkListenerClosed));
  ASSERT_TRUE(RunUntil([&] { return lclosed; }));
}

// With direct_files the accepted stream has no descriptor (fd -1, nothing
// added to the process's table), TCP_NODELAY comes from the listener, and
// receive, send, shutdown and close all work on the slot.
TEST_P(Stream, AcceptedStreamUsesDirectDescriptorWhenAsked) {
  bool direct = std::get<0>(GetParam()).direct_files > 0;
  ursa_features f;
  ursa_loop_features(loop(), &f);
  if (direct && !(f.used & URSA_FEAT_DIRECT_FILES))
    GTEST_SKIP() << "the kernel refused a direct-descriptor table";
  EXPECT_EQ(direct, (f.used & URSA_FEAT_DIRECT_FILES) != 0);
  Accepted a;
  Peer p(this, loop(), family(), &a, URSA_LISTEN_NODELAY);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  int nodelay = 0;
  socklen_t nl = sizeof(nodelay);
  ASSERT_EQ(0, getsockopt(p.fd_, IPPROTO_TCP, TCP_NODELAY, &nodelay, &nl));
  if (direct) {
    EXPECT_EQ(-1, a.s.fd);
    EXPECT_EQ(-EOPNOTSUPP, ursa_stream_nodelay(&a.s, 1));
    EXPECT_NE(nullptr, strstr(ursa_error_detail(), "URSA_LISTEN_NODELAY"));
  } else {
    ASSERT_GE(a.s.fd, 0);
    int on = 0;
    nl = sizeof(on);
    ASSERT_EQ(0, getsockopt(a.s.fd, IPPROTO_TCP, TCP_NODELAY, &on, &nl));
    EXPECT_EQ(1, on) << "TCP_NODELAY not inherited from the listener";
  }
  // Bytes both ways, then our half-close and close reach the peer.
  std::vector<char> msg = t::RandomBytes(300000, 41);
  std::thread writer([&] { t::WriteAll(p.fd_, msg.data(), msg.size()); });
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  ASSERT_TRUE(RunUntil([&] { return a.got.size() >= msg.size(); }));
  writer.join();
  EXPECT_TRUE(t::SameBytes(msg, a.got));
  ursa_write_req w{};
  int wst = 1;
  w.data = &wst;
  ASSERT_EQ(0, ursa_write(&w, &a.s, msg.data(), msg.size(), 0,
                          [](ursa_write_req *r, int st) {
                            *static_cast<int *>(r->data) = st;
                          }));
  std::vector<char> back;
  std::thread reader([&] {
    char buf[65536];
    for (;;) {
      ssize_t n = recv(p.fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      back.insert(back.end(), buf, buf + n);
    }
  });
  ASSERT_EQ(0, ursa_shutdown(&a.s, [](ursa_stream *s, int st) {
              static_cast<Accepted *>(s->data)->shutdown_status = st;
            }));
  ASSERT_TRUE(RunUntil([&] { return wst != 1 && a.shutdown_status != 1; }));
  EXPECT_EQ(0, wst);
  EXPECT_EQ(0, a.shutdown_status);
  reader.join();  // ends at our FIN
  EXPECT_TRUE(t::SameBytes(msg, back));
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
  // Closed for real: the peer's next write meets a reset, not a live socket.
  char c = 'x';
  send(p.fd_, &c, 1, MSG_NOSIGNAL);
  usleep(20000);
  EXPECT_LT(send(p.fd_, &c, 1, MSG_NOSIGNAL), 0);
}

TEST_P(Stream, PeerResetIsReported) {
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  ASSERT_TRUE(t::WriteAll(p.fd_, "abc", 3));
  ASSERT_TRUE(RunUntil([&] { return a.got.size() == 3; }));
  // SO_LINGER 0: close sends RST.
  struct linger lg = {1, 0};
  ASSERT_EQ(0, setsockopt(p.fd_, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
  close(p.fd_);
  p.fd_ = -1;
  ASSERT_TRUE(RunUntil([&] { return a.read_status != 0; }));
  EXPECT_EQ(-ECONNRESET, a.read_status) << ursa_err_name(a.read_status);
  // A write to a reset stream fails with an error, not a signal.
  static ursa_write_req w{};
  static int wstatus = 1;
  w = ursa_write_req{};
  wstatus = 1;
  int r = ursa_write(&w, &a.s, "x", 1, 0,
                     [](ursa_write_req *, int st) { wstatus = st; });
  if (r == 0) {
    ASSERT_TRUE(RunUntil([&] { return wstatus != 1; }));
    EXPECT_TRUE(wstatus == -EPIPE || wstatus == -ECONNRESET)
        << ursa_err_name(wstatus);
  }
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
}

TEST_P(Stream, HalfCloseIsReportedAndReplyStillFlows) {
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  std::vector<char> msg = t::RandomBytes(5000, 5);
  ASSERT_TRUE(t::WriteAll(p.fd_, msg.data(), msg.size()));
  ASSERT_EQ(0, shutdown(p.fd_, SHUT_WR));
  ASSERT_TRUE(RunUntil([&] { return a.read_status != 0; }));
  EXPECT_EQ(URSA_EOF, a.read_status);
  EXPECT_TRUE(t::SameBytes(msg, a.got));
  // Reading again after EOF is refused.
  EXPECT_EQ(-EINVAL, ursa_read_start(&a.s, ReadInto));
  // The other direction is still open: reply, then shut down.
  ursa_write_req w{};
  static int wst;
  wst = 1;
  ASSERT_EQ(0, ursa_write(&w, &a.s, msg.data(), msg.size(), 0,
                          [](ursa_write_req *, int st) { wst = st; }));
  ASSERT_EQ(0, ursa_shutdown(&a.s, [](ursa_stream *s, int st) {
              static_cast<Accepted *>(s->data)->shutdown_status = st;
            }));
  EXPECT_EQ(-EBUSY, ursa_write(&w, &a.s, "x", 1, 0,
                               [](ursa_write_req *, int) {}));
  ursa_write_req w2{};
  EXPECT_EQ(-EPIPE, ursa_write(&w2, &a.s, "x", 1, 0,
                               [](ursa_write_req *, int) {}));
  ASSERT_TRUE(RunUntil([&] { return wst != 1 && a.shutdown_status != 1; }));
  EXPECT_EQ(0, wst);
  EXPECT_EQ(0, a.shutdown_status);
  std::vector<char> back(msg.size());
  ASSERT_TRUE(t::ReadExactly(p.fd_, back.data(), back.size()));
  EXPECT_TRUE(t::SameBytes(msg, back));
  char extra;
  EXPECT_EQ(0, read(p.fd_, &extra, 1)) << "expected EOF after shutdown";
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  EXPECT_EQ(-EALREADY, ursa_stream_close(&a.s, MarkClosed));
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
  // A closed stream refuses everything.
  EXPECT_EQ(-EINVAL, ursa_read_start(&a.s, ReadInto));
  EXPECT_EQ(-EINVAL, ursa_stream_close(&a.s, MarkClosed));
}

struct Counted {
  int calls = 0;
  int last = 1;
  size_t done = 0;
};
void CountWrite(ursa_write_req *w, int st) {
  auto *c = static_cast<Counted *>(w->data);
  c->calls++;
  c->last = st;
  c->done = w->done;
}

TEST_P(Stream, CloseWithOperationsInFlightCallsBackOnce) {
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  // The peer never reads: big writes stay in flight and queued.
  int small = 4096;
  setsockopt(p.fd_, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  ASSERT_EQ(0, ursa_read_timeout(&a.s, 60000));
  std::vector<char> big(32 << 20, 'x');
  const int kWrites = 5;
  std::vector<ursa_write_req> ws(kWrites);
  std::vector<Counted> cs(kWrites);
  for (int i = 0; i < kWrites; i++) {
    ws[i].data = &cs[i];
    ASSERT_EQ(0, ursa_write(&ws[i], &a.s, big.data(), big.size(), 0,
                            CountWrite));
  }
  ASSERT_TRUE(RunUntil([&] { return ursa_write_queue_size(&a.s) <
                                    big.size() * kWrites; }));
  static int closes;
  closes = 0;
  ASSERT_EQ(0, ursa_stream_close(&a.s, [](ursa_handle *h) {
              closes++;
              static_cast<Accepted *>(h->data)->closed = true;
            }));
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
  EXPECT_EQ(1, closes);
  for (int i = 0; i < kWrites; i++) {
    EXPECT_EQ(1, cs[i].calls) << i;
    EXPECT_EQ(-ECANCELED, cs[i].last) << i << " " << ursa_err_name(cs[i].last);
  }
  EXPECT_GT(cs[0].done, 0u);
  EXPECT_EQ(0, a.read_status) << "the read callback ran after close";
  // Nothing more arrives for the closed stream.
  EXPECT_EQ(0, ursa_loop_run(loop(), URSA_RUN_NOWAIT));
  EXPECT_EQ(1, closes);
}

TEST_P(Stream, CancelOfQueuedWriteKeepsTheStreamWhole) {
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  std::vector<char> m1 = t::RandomBytes(3000, 1), m2 = t::RandomBytes(3000, 2),
                    m3 = t::RandomBytes(3000, 3);
  ursa_write_req w1{}, w2{}, w3{};
  Counted c1, c2, c3;
  w1.data = &c1;
  w2.data = &c2;
  w3.data = &c3;
  ASSERT_EQ(0, ursa_write(&w1, &a.s, m1.data(), m1.size(), 0, CountWrite));
  ASSERT_EQ(0, ursa_write(&w2, &a.s, m2.data(), m2.size(), 0, CountWrite));
  ASSERT_EQ(0, ursa_write(&w3, &a.s, m3.data(), m3.size(), 0, CountWrite));
  EXPECT_EQ(1, ursa_write_active(&w2));
  EXPECT_EQ(0, ursa_write_cancel(&w2));
  EXPECT_EQ(-EALREADY, ursa_write_cancel(&w2));
  EXPECT_EQ(1, ursa_write_active(&w2)) << "active until its callback";
  ASSERT_TRUE(RunUntil([&] { return c1.calls && c2.calls && c3.calls; }));
  EXPECT_EQ(0, c1.last);
  EXPECT_EQ(-ECANCELED, c2.last);
  EXPECT_EQ(0, c3.last);
  EXPECT_EQ(0, ursa_write_active(&w1));
  EXPECT_EQ(0, ursa_write_active(&w2));
  // Cancelling finished operations is refused, not crashed on, through
  // either call.
  EXPECT_EQ(-ENOENT, ursa_cancel(loop(), &w1.op));
  EXPECT_EQ(-ENOENT, ursa_write_cancel(&w2));
  std::vector<char> want = m1;
  want.insert(want.end(), m3.begin(), m3.end());
  std::vector<char> got(want.size());
  ASSERT_TRUE(t::ReadExactly(p.fd_, got.data(), got.size()));
  EXPECT_TRUE(t::SameBytes(want, got));
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
}

TEST_P(Stream, WriteTimeoutFiresWhenPeerDoesNotRead) {
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  std::vector<char> big(64 << 20, 'y');
  ursa_write_req w{}, after{};
  Counted c, c2;
  w.data = &c;
  after.data = &c2;
  ASSERT_EQ(0, ursa_write(&w, &a.s, big.data(), big.size(), 200, CountWrite));
  ASSERT_EQ(0, ursa_write(&after, &a.s, "z", 1, 0, CountWrite));
  ASSERT_TRUE(RunUntil([&] { return c.calls && c2.calls; }, 10000));
  EXPECT_EQ(-ETIMEDOUT, c.last) << ursa_err_name(c.last);
  EXPECT_LT(c.done, big.size());
  EXPECT_EQ(-ECANCELED, c2.last);
  // The stream is torn: new writes get the first error.
  ursa_write_req w3{};
  EXPECT_EQ(-ETIMEDOUT, ursa_write(&w3, &a.s, "q", 1, 0, CountWrite));
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
}

TEST_P(Stream, ReadTimeoutFiresOnSilentPeer) {
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  ASSERT_EQ(0, ursa_read_timeout(&a.s, 150));
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  // Bytes at 50 ms push the deadline on.
  usleep(50 * 1000);
  ASSERT_TRUE(t::WriteAll(p.fd_, "hi", 2));
  uint64_t t0 = ursa_loop_now(loop());
  ASSERT_TRUE(RunUntil([&] { return a.read_status != 0; }, 5000));
  uint64_t waited = ursa_loop_now(loop()) - t0;
  EXPECT_EQ(-ETIMEDOUT, a.read_status) << ursa_err_name(a.read_status);
  EXPECT_EQ(2u, a.got.size());
  EXPECT_GE(waited, 100u);
  EXPECT_LT(waited, 3000u);
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
}

// A stop and a start in the same turn leave the first timer's cancel in
// flight; the timeout must still end the read of a silent peer.
TEST_P(Stream, ReadTimeoutSurvivesStopAndStart) {
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  ASSERT_EQ(0, ursa_read_timeout(&a.s, 100));
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  ASSERT_EQ(0, ursa_loop_run(loop(), URSA_RUN_NOWAIT) < 0);
  ASSERT_EQ(0, ursa_read_stop(&a.s));
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  ASSERT_TRUE(RunUntil([&] { return a.read_status != 0; }, 5000));
  EXPECT_EQ(-ETIMEDOUT, a.read_status) << ursa_err_name(a.read_status);
  // Again with the timer's cancelled callback run in between.
  a.read_status = 0;
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  ASSERT_EQ(0, ursa_read_stop(&a.s));
  ASSERT_EQ(0, ursa_loop_run(loop(), URSA_RUN_NOWAIT) < 0);
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  ASSERT_TRUE(RunUntil([&] { return a.read_status != 0; }, 5000));
  EXPECT_EQ(-ETIMEDOUT, a.read_status) << ursa_err_name(a.read_status);
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
}

// Echo without a copy: each read's buffer is kept and written back as it
// is, then released when the write is done.  Beyond buf_keep_max keeping
// fails with -ENOBUFS and the bytes are copied instead; every byte comes
// back in order either way and every buffer returns to the ring.
struct Keeper {
  ursa_stream *s = nullptr;
  int kept = 0, copied = 0, refused = 0;
  int outstanding = 0;
  size_t echoed = 0;
  bool closed = false;
};
struct KeptWrite {
  ursa_write_req req{};
  Keeper *k;
  const void *kept;  // ring buffer to release, or null for a copy
  std::vector<char> copy;
};

void EchoKept(ursa_stream *s, ssize_t n, const void *buf) {
  auto *k = static_cast<Keeper *>(s->data);
  if (n <= 0) return;
  auto *w = new KeptWrite;
  w->k = k;
  w->req.data = w;
  int r = ursa_buf_keep(s->loop, buf);
  EXPECT_EQ(-EALREADY, r == 0 ? ursa_buf_keep(s->loop, buf) : -EALREADY);
  const void *out = buf;
  if (r == 0) {
    w->kept = buf;
    k->kept++;
  } else {
    EXPECT_EQ(-ENOBUFS, r) << ursa_err_name(r);
    k->refused++;
    w->kept = nullptr;
    w->copy.assign((const char *)buf, (const char *)buf + n);
    out = w->copy.data();
    k->copied++;
  }
  k->outstanding++;
  k->echoed += (size_t)n;
  ASSERT_EQ(0, ursa_write(&w->req, s, out, (size_t)n, 0,
                          [](ursa_write_req *req, int st) {
                            auto *kw = static_cast<KeptWrite *>(req->data);
                            EXPECT_EQ(0, st);
                            if (kw->kept) {
                              EXPECT_EQ(0, ursa_buf_release(kw->k->s->loop,
                                                            kw->kept));
                            }
                            kw->k->outstanding--;
                            delete kw;
                          }));
}

TEST_P(Stream, KeptBuffersEchoWithoutACopy) {
  loop_->Finish();
  opts_.buf_count = 16;
  opts_.buf_size = 4096;
  opts_.buf_keep_max = 4;
  Make();
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  // Outside a callback, and for memory that is not a ring buffer.
  char stack[8];
  EXPECT_EQ(-EINVAL, ursa_buf_keep(loop(), stack));
  EXPECT_EQ(-EINVAL, ursa_buf_release(loop(), stack));
  Keeper k;
  k.s = &a.s;
  a.s.data = &k;
  ASSERT_EQ(0, ursa_read_start(&a.s, EchoKept));
  std::vector<char> msg = t::RandomBytes(2 << 20, 51);
  std::vector<char> back;
  std::thread peer([&] {
    std::thread w([&] { t::WriteAll(p.fd_, msg.data(), msg.size()); });
    char buf[65536];
    while (back.size() < msg.size()) {
      ssize_t n = recv(p.fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      back.insert(back.end(), buf, buf + n);
    }
    w.join();
  });
  // Until every byte was echoed and every write is done (the peer's side
  // is checked after it joins).
  bool ok = RunUntil([&] {
    return k.echoed >= msg.size() && k.outstanding == 0;
  });
  if (!ok) shutdown(p.fd_, SHUT_RDWR);  // unblock the peer thread
  peer.join();
  ASSERT_TRUE(ok) << "kept " << k.kept << " copied " << k.copied
                  << " outstanding " << k.outstanding << " back "
                  << back.size();
  EXPECT_TRUE(t::SameBytes(msg, back));
  EXPECT_GT(k.kept, 0);
  ursa_stats st;
  ursa_loop_stats(loop(), &st);
  EXPECT_EQ(0u, st.bufs_out) << "a kept buffer never went back";
  ASSERT_EQ(0, ursa_stream_close(&a.s, [](ursa_handle *h) {
              static_cast<Keeper *>(h->data)->closed = true;
            }));
  ASSERT_TRUE(RunUntil([&] { return k.closed; }));
  printf("kept %d, copied %d (keep limit reached %d times)\n", k.kept,
         k.copied, k.refused);
}

// Reads as the read callback saw them: where each slice was and its bytes.
struct Slices {
  ursa_stream *s = nullptr;
  std::vector<const char *> at;
  std::vector<size_t> len;
  std::vector<char> got;
  const char *kept = nullptr; // the first slice, kept
  std::vector<char> kept_copy;
  int keep = 0; // keep the first slice
};
void RecordSlices(ursa_stream *s, ssize_t n, const void *buf) {
  auto *r = static_cast<Slices *>(s->data);
  if (n <= 0) return;
  const char *p = static_cast<const char *>(buf);
  if (r->keep && !r->kept) {
    ASSERT_EQ(0, ursa_buf_keep(s->loop, p));
    r->kept = p;
    r->kept_copy.assign(p, p + n);
  }
  r->at.push_back(p);
  r->len.push_back((size_t)n);
  r->got.insert(r->got.end(), p, p + n);
}

bool Uses(ursa_loop *loop, uint32_t feat) {
  ursa_features f;
  ursa_loop_features(loop, &f);
  return (f.used & feat) != 0;
}

// Small reads each take a buffer of their own, unless the kernel fills
// buffers by parts (buf_inc): then they follow each other in one buffer.
// A kept slice stays intact while later bytes land in the same buffer, and
// the buffer goes back only when the kernel is done with it and the slice
// is released.
TEST_P(Stream, SmallReadsShareABufferFilledByParts) {
  loop_->Finish();
  opts_.buf_count = 8;
  opts_.buf_size = 1024;
  Make();
  bool by_parts = Uses(loop(), URSA_FEAT_BUF_INC);
  EXPECT_EQ((std::get<0>(GetParam()).enable & URSA_FEAT_BUF_INC) != 0,
            by_parts) << "the kernel here (6.12 and later) offers buf_inc";
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  Slices r;
  r.s = &a.s;
  r.keep = 1;
  a.s.data = &r;
  ASSERT_EQ(0, ursa_read_start(&a.s, RecordSlices));
  std::vector<char> msg = t::RandomBytes(12 * 200, 61);
  // One 200-byte message at a time, each read before the next is sent, so
  // that every read is one small completion: 2400 bytes fill 2.3 buffers.
  for (size_t i = 0; i < 12; i++) {
    ASSERT_TRUE(t::WriteAll(p.fd_, msg.data() + i * 200, 200));
    ASSERT_TRUE(RunUntil([&] { return r.got.size() == (i + 1) * 200; }));
  }
  EXPECT_TRUE(t::SameBytes(msg, r.got));
  // By parts, the messages at 1000 and 2000 are cut at the buffer ends.
  ASSERT_EQ(by_parts ? 14u : 12u, r.at.size());
  // Buffers are 1 KiB and 1 KiB-aligned: a read that starts one starts
  // at a multiple of 1024; any other continues the read before it.
  int starts = 0;
  for (size_t i = 0; i < r.at.size(); i++) {
    if ((uintptr_t)r.at[i] % 1024 == 0)
      starts++;
    else
      EXPECT_EQ(r.at[i - 1] + r.len[i - 1], r.at[i]) << "read " << i;
  }
  EXPECT_EQ(by_parts ? 3 : 12, starts)
      << (by_parts ? "reads should share buffers" : "one buffer per read");
  // The kept first slice: its bytes unchanged by what came after.
  ASSERT_NE(nullptr, r.kept);
  EXPECT_EQ(0, memcmp(r.kept, r.kept_copy.data(), r.kept_copy.size()));
  ursa_stats st;
  ursa_loop_stats(loop(), &st);
  // Whole buffers: the kept one.  By parts: its buffer, full and done.
  EXPECT_EQ(1u, st.bufs_out);
  ASSERT_EQ(0, ursa_buf_release(loop(), r.kept));
  EXPECT_EQ(-EINVAL, ursa_buf_release(loop(), r.kept)) << "released twice";
  ursa_loop_stats(loop(), &st);
  EXPECT_EQ(0u, st.bufs_out);
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  a.s.data = &a;
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
}

// Bytes already queued on the socket come in one bundle that fills several
// buffers: the read callback then runs once per buffer for one completion.
TEST_P(Stream, BundleFillsSeveralBuffersAtOnce) {
  loop_->Finish();
  opts_.buf_count = 64;
  opts_.buf_size = 1024;
  Make();
  bool bundles = Uses(loop(), URSA_FEAT_RECV_BUNDLE);
  EXPECT_EQ((std::get<0>(GetParam()).enable & URSA_FEAT_RECV_BUNDLE) != 0,
            bundles) << "the kernel here (6.10 and later) offers bundles";
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  std::vector<char> msg = t::RandomBytes(32 << 10, 62);
  ASSERT_TRUE(t::WriteAll(p.fd_, msg.data(), msg.size()));
  usleep(20000); // let it all reach the receive queue
  Slices r;
  a.s.data = &r;
  ursa_stats before, after;
  ursa_loop_stats(loop(), &before);
  ASSERT_EQ(0, ursa_read_start(&a.s, RecordSlices));
  ASSERT_TRUE(RunUntil([&] { return r.got.size() == msg.size(); }));
  ursa_loop_stats(loop(), &after);
  EXPECT_TRUE(t::SameBytes(msg, r.got));
  uint64_t cqes = after.cqes - before.cqes;
  if (bundles)
    EXPECT_LT(cqes * 4, r.at.size())
        << cqes << " completions for " << r.at.size() << " slices";
  else
    EXPECT_GE(cqes, r.at.size()) << "one completion per buffer";
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  a.s.data = &a;
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
}

// Under the batched_waits variant the loop waits for batches (min-wait):
// many streams echoing in chunks stay byte-exact, the counter shows the
// batched path was taken, and no variant without it takes it.
TEST_P(Stream, BatchedWaitsKeepEveryByte) {
  bool batched = Uses(loop(), URSA_FEAT_MIN_WAIT);
  EXPECT_EQ((std::get<0>(GetParam()).enable & URSA_FEAT_MIN_WAIT) != 0,
            batched) << "the kernel here (6.12 and later) has min-wait";
  t::EchoServer srv(loop(), family());
  std::vector<std::unique_ptr<t::EchoClient>> clients;
  for (int i = 0; i < 16; i++)
    clients.emplace_back(new t::EchoClient(
        loop(), srv.addr(), srv.addrlen(),
        t::RandomBytes(64 << 10, 900 + (uint32_t)i), 512));
  ASSERT_TRUE(RunUntil([&] { return t::AllDone(clients); }));
  for (auto &c : clients) EXPECT_TRUE(t::SameBytes(c->payload, c->got));
  ursa_stats st;
  ursa_loop_stats(loop(), &st);
  if (batched)
    EXPECT_GT(st.batch_waits, 0u);
  else
    EXPECT_EQ(0u, st.batch_waits);
  srv.Close();
  ASSERT_TRUE(RunUntil([&] { return srv.closed(); }));
}

// Under the zero_copy variant big writes go out with SEND_ZC; the echo
// stays byte-exact and the counter shows the path was taken.
TEST_P(Stream, ZeroCopySendsWhenAsked) {
  unsigned zc = std::get<0>(GetParam()).zc_threshold;
  ursa_features f;
  ursa_loop_features(loop(), &f);
  if (zc && !(f.kernel & URSA_FEAT_SEND_ZC))
    GTEST_SKIP() << "the kernel has no SEND_ZC";
  EXPECT_EQ(zc != 0, (f.used & URSA_FEAT_SEND_ZC) != 0);
  t::EchoServer srv(loop(), family());
  t::EchoClient c(loop(), srv.addr(), srv.addrlen(),
                  t::RandomBytes(1 << 20, 61), 64 << 10);
  ASSERT_TRUE(RunUntil([&] { return c.done(); }));
  EXPECT_TRUE(t::SameBytes(c.payload, c.got));
  srv.Close();
  ASSERT_TRUE(RunUntil([&] { return srv.closed(); }));
  ursa_stats st;
  ursa_loop_stats(loop(), &st);
  if (zc)
    EXPECT_GT(st.zc_sends, 0u);
  else
    EXPECT_EQ(0u, st.zc_sends);
  if (!zc) return;
  // With RLIMIT_MEMLOCK at 256 KiB a 4 MiB zero-copy send cannot pin its
  // pages: it goes again as a copy, and every byte still arrives.
  struct rlimit old_rl, low;
  ASSERT_EQ(0, getrlimit(RLIMIT_MEMLOCK, &old_rl));
  low = old_rl;
  low.rlim_cur = 256 << 10;
  ASSERT_EQ(0, setrlimit(RLIMIT_MEMLOCK, &low));
  t::EchoServer srv2(loop(), family());
  t::EchoClient big(loop(), srv2.addr(), srv2.addrlen(),
                    t::RandomBytes(4 << 20, 62));
  bool ok = RunUntil([&] { return big.done(); });
  setrlimit(RLIMIT_MEMLOCK, &old_rl);
  ASSERT_TRUE(ok);
  EXPECT_TRUE(t::SameBytes(big.payload, big.got));
  srv2.Close();
  ASSERT_TRUE(RunUntil([&] { return srv2.closed(); }));
  ursa_loop_stats(loop(), &st);
  EXPECT_GT(st.zc_refused, 0u) << "the 4 MiB send was pinned after all";
}

TEST_P(Stream, ReadStopAndStartLoseNothing) {
  Accepted a;
  Peer p(this, loop(), family(), &a);
  ASSERT_TRUE(RunUntil([&] { return a.have; }));
  p.CloseListener(loop_.get());
  std::vector<char> msg = t::RandomBytes(200000, 9);
  std::thread writer([&] { t::WriteAll(p.fd_, msg.data(), msg.size()); });
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  for (int i = 0; i < 50 && a.got.size() < msg.size(); i++) {
    ursa_loop_run(loop(), URSA_RUN_ONCE);
    ASSERT_EQ(0, ursa_read_stop(&a.s));
    ursa_loop_run(loop(), URSA_RUN_NOWAIT);
    ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  }
  ASSERT_TRUE(RunUntil([&] { return a.got.size() >= msg.size(); }));
  writer.join();
  EXPECT_TRUE(t::SameBytes(msg, a.got));
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
}

struct ConnectResult {
  ursa_stream s{};
  int status = 1;
  bool closed = false;
};
void OnConnectResult(ursa_stream *s, int st) {
  static_cast<ConnectResult *>(s->data)->status = st;
}
void OnConnectClosed(ursa_handle *h) {
  static_cast<ConnectResult *>(h->data)->closed = true;
}

TEST_P(Stream, ConnectToClosedPortIsRefused) {
  // A port that was just free: bind, read it, close.
  sockaddr_storage ss;
  socklen_t len = t::LoopbackAddr(family(), &ss);
  int fd = socket(family(), SOCK_STREAM, 0);
  ASSERT_EQ(0, bind(fd, (sockaddr *)&ss, len));
  ASSERT_EQ(0, getsockname(fd, (sockaddr *)&ss, &len));
  close(fd);
  ConnectResult c;
  c.s.data = &c;
  ASSERT_EQ(0, ursa_connect(loop(), &c.s, (sockaddr *)&ss, len, 0, 0,
                            OnConnectResult));
  ASSERT_TRUE(RunUntil([&] { return c.status != 1; }));
  EXPECT_EQ(-ECONNREFUSED, c.status) << ursa_err_name(c.status);
  ASSERT_EQ(0, ursa_stream_close(&c.s, OnConnectClosed));
  ASSERT_TRUE(RunUntil([&] { return c.closed; }));
}

TEST_P(Stream, ConnectTimeoutFires) {
  // A listener whose backlog is full drops further SYNs, so a connect to it
  // hangs until its timeout.
  sockaddr_storage ss;
  socklen_t len = t::LoopbackAddr(family(), &ss);
  int lfd = socket(family(), SOCK_STREAM, 0);
  ASSERT_EQ(0, bind(lfd, (sockaddr *)&ss, len));
  ASSERT_EQ(0, listen(lfd, 0));
  ASSERT_EQ(0, getsockname(lfd, (sockaddr *)&ss, &len));
  std::vector<int> fill;
  for (int i = 0; i < 4; i++) {
    int fd = socket(family(), SOCK_STREAM | SOCK_NONBLOCK, 0);
    connect(fd, (sockaddr *)&ss, len);
    fill.push_back(fd);
  }
  usleep(100 * 1000);
  ConnectResult c;
  c.s.data = &c;
  uint64_t t0 = ursa_loop_now(loop());
  ASSERT_EQ(0, ursa_connect(loop(), &c.s, (sockaddr *)&ss, len, 0, 300,
                            OnConnectResult));
  ASSERT_TRUE(RunUntil([&] { return c.status != 1; }, 10000));
  uint64_t waited = ursa_loop_now(loop()) - t0;
  EXPECT_EQ(-ETIMEDOUT, c.status) << ursa_err_name(c.status);
  EXPECT_GE(waited, 250u);
  EXPECT_LT(waited, 5000u);
  ASSERT_EQ(0, ursa_stream_close(&c.s, OnConnectClosed));
  ASSERT_TRUE(RunUntil([&] { return c.closed; }));
  for (int fd : fill) close(fd);
  close(lfd);
}

TEST_P(Stream, CloseDuringConnectCancelsIt) {
  t::EchoServer srv(loop(), family());
  ConnectResult c;
  c.s.data = &c;
  ASSERT_EQ(0, ursa_connect(loop(), &c.s, (const sockaddr *)&srv.addr(),
                            srv.addrlen(), 0, 1000, OnConnectResult));
  ASSERT_EQ(0, ursa_stream_close(&c.s, OnConnectClosed));
  ASSERT_TRUE(RunUntil([&] { return c.closed; }));
  EXPECT_NE(1, c.status) << "connect callback never ran";
  EXPECT_TRUE(c.status == -ECANCELED || c.status == 0 ||
              c.status == -ECONNABORTED)
      << ursa_err_name(c.status);
  srv.Close();
  ASSERT_TRUE(RunUntil([&] { return srv.closed(); }));
}

TEST_P(Stream, SocketpairStreamCarriesBytes) {
  int sv[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
  Accepted a;
  ASSERT_EQ(0, ursa_stream_open(loop(), &a.s, sv[0]));
  a.s.data = &a;
  ASSERT_EQ(0, ursa_read_start(&a.s, ReadInto));
  std::vector<char> msg = t::RandomBytes(300000, 44);
  std::thread w([&] {
    t::WriteAll(sv[1], msg.data(), msg.size());
    close(sv[1]);
  });
  ASSERT_TRUE(RunUntil([&] { return a.read_status != 0; }));
  w.join();
  EXPECT_EQ(URSA_EOF, a.read_status);
  EXPECT_TRUE(t::SameBytes(msg, a.got));
  ASSERT_EQ(0, ursa_stream_close(&a.s, MarkClosed));
  ASSERT_TRUE(RunUntil([&] { return a.closed; }));
}

INSTANTIATE_TEST_SUITE_P(
    Rings, Stream,
    ::testing::Combine(::testing::ValuesIn(t::kVariants,
                                           t::kVariants + t::kNumVariants),
                       ::testing::Values(AF_INET, AF_INET6)),
    ParamName);

// Bad arguments are refused with EINVAL and a reason, never a crash.
class StreamArgs : public ::testing::TestWithParam<ursa_backend> {};

TEST_P(StreamArgs, BadArgumentsAreRefused) {
  ursa_loop_options o0 = t::OptionsFor(GetParam());
  t::Loop lp(&o0);
  ASSERT_EQ(0, lp.status());
  ursa_stream s{};
  EXPECT_EQ(-EINVAL, ursa_read_start(nullptr, ReadInto));
  EXPECT_EQ(-EINVAL, ursa_read_start(&s, ReadInto));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "not open"));
  EXPECT_EQ(-EINVAL, ursa_connect(lp.get(), &s, nullptr, 0, 0, 0,
                                  OnConnectResult));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "address"));
  sockaddr_storage ss{};
  ss.ss_family = AF_APPLETALK;
  EXPECT_EQ(-EINVAL, ursa_connect(lp.get(), &s, (sockaddr *)&ss,
                                  sizeof(sockaddr_in), 0, 0, OnConnectResult));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "family"));
  ursa_listener l{};
  socklen_t len = t::LoopbackAddr(AF_INET, &ss);
  EXPECT_EQ(-EINVAL, ursa_listen(lp.get(), &l, (sockaddr *)&ss, len, 0, 0x80,
                                 AcceptOne));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "flags"));
  EXPECT_EQ(-EINVAL, ursa_accept(&l, &s));
  ursa_write_req w{};
  int fds[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, fds));
  ASSERT_EQ(0, ursa_stream_open(lp.get(), &s, fds[0]));
  EXPECT_EQ(-EINVAL, ursa_write(&w, &s, "x", 0, 0, CountWrite));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "length"));
  EXPECT_EQ(-EINVAL, ursa_write(&w, &s, nullptr, 1, 0, CountWrite));
  int pfd[2];
  ASSERT_EQ(0, pipe(pfd));
  ursa_stream notsock{};
  EXPECT_EQ(-ENOTSOCK, ursa_stream_open(lp.get(), &notsock, pfd[0]));
  close(pfd[0]);
  close(pfd[1]);
  static bool closed;
  closed = false;
  ASSERT_EQ(0, ursa_stream_close(&s, [](ursa_handle *) { closed = true; }));
  ASSERT_TRUE(lp.RunUntil([&] { return closed; }));
  close(fds[1]);
  // A port in use is reported as such.
  ursa_listener l1{}, l2{};
  ASSERT_EQ(0, ursa_listen(lp.get(), &l1, (sockaddr *)&ss, len, 0, 0,
                           AcceptOne));
  socklen_t al;
  sockaddr_storage bound;
  ASSERT_EQ(0, ursa_listener_addr(&l1, &bound, &al));
  EXPECT_EQ(-EADDRINUSE, ursa_listen(lp.get(), &l2, (sockaddr *)&bound, al, 0,
                                     0, AcceptOne));
  bool lclosed = false;
  l1.data = &lclosed;
  ASSERT_EQ(0, ursa_listener_close(&l1, MarkListenerClosed));
  EXPECT_EQ(-EALREADY, ursa_listener_close(&l1, MarkListenerClosed));
  ASSERT_TRUE(lp.RunUntil([&] { return lclosed; }));
  lp.Finish();
}

}  // namespace

namespace {

void NoteConnect(ursa_stream *s, int st) { *static_cast<int *>(s->data) = st; }

// [::] without URSA_LISTEN_V6ONLY takes IPv4 clients too; with it, not.
class Ipv6 : public ::testing::TestWithParam<ursa_backend> {};

TEST_P(Ipv6, DualStackAndV6OnlyListeners) {
  for (unsigned flags : {0u, (unsigned)URSA_LISTEN_V6ONLY}) {
    ursa_loop_options o0 = t::OptionsFor(GetParam());
    t::Loop lp(&o0);
    ASSERT_EQ(0, lp.status());
    ursa_addr any;
    ASSERT_EQ(0, ursa_addr_parse("[::]:0", &any));
    ursa_listener l{};
    ASSERT_EQ(0, ursa_listen(lp.get(), &l, (sockaddr *)&any.ss, any.len, 0,
                             flags, [](ursa_listener *, int) {}));
    sockaddr_storage bound;
    socklen_t bl;
    ASSERT_EQ(0, ursa_listener_addr(&l, &bound, &bl));
    sockaddr_storage v4;
    socklen_t v4len = t::LoopbackAddr(AF_INET, &v4, t::PortOf(bound));
    ursa_stream c{};
    int st = 1;
    c.data = &st;
    ASSERT_EQ(0, ursa_connect(lp.get(), &c, (sockaddr *)&v4, v4len, 0, 2000,
                              NoteConnect));
    ASSERT_TRUE(lp.RunUntil([&] { return st != 1; }));
    if (flags)
      EXPECT_EQ(-ECONNREFUSED, st) << ursa_err_name(st);
    else
      EXPECT_EQ(0, st) << ursa_err_name(st);
    static bool done[2];
    done[0] = done[1] = false;
    ASSERT_EQ(0, ursa_stream_close(&c, [](ursa_handle *) { done[0] = true; }));
    ASSERT_EQ(0,
              ursa_listener_close(&l, [](ursa_handle *) { done[1] = true; }));
    ASSERT_TRUE(lp.RunUntil([&] { return done[0] && done[1]; }));
    lp.Finish();
  }
}

}  // namespace

namespace {

// Writes queued behind a send in flight leave together: with the default
// write_batch (256) or 8, 64 queued writes take far fewer than 64 sends;
// with 1, exactly 64.  Writes of 8 KiB leave at most 256 KiB to a send
// (URSA_SEND_BUDGET), so 64 of them take at least 3.
class WriteBatch : public ::testing::TestWithParam<ursa_backend> {};

TEST_P(WriteBatch, QueuedWritesShareSends) {
  for (unsigned batch : {0u, 8u, 1u, 1000u}) {
    ursa_loop_options o = t::OptionsFor(GetParam());
    o.write_batch = batch;
    size_t base = batch == 1000 ? 8192 : 100;
    t::Loop lp(&o);
    ASSERT_EQ(0, lp.status());
    int sv[2];
    ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    ursa_stream s{};
    ASSERT_EQ(0, ursa_stream_open(lp.get(), &s, sv[0]));
    const int kWrites = 64;
    std::vector<std::vector<char>> msgs;
    std::vector<ursa_write_req> ws(kWrites);
    static int done;
    done = 0;
    ursa_stats before;
    ursa_loop_stats(lp.get(), &before);
    for (int i = 0; i < kWrites; i++) {
      msgs.push_back(t::RandomBytes(base + i, 300 + i));
      ASSERT_EQ(0, ursa_write(&ws[i], &s, msgs[i].data(), msgs[i].size(), 0,
                              [](ursa_write_req *, int st) {
                                EXPECT_EQ(0, st);
                                done++;
                              }));
    }
    // The peer reads as the loop sends: 64 writes of 8 KiB fill a socket
    // pair.
    std::vector<char> want, got;
    for (auto &m : msgs) want.insert(want.end(), m.begin(), m.end());
    got.resize(want.size());
    bool read_ok = false;
    std::thread reader(
        [&] { read_ok = t::ReadExactly(sv[1], got.data(), got.size()); });
    bool all = lp.RunUntil([&] { return done == kWrites; });
    reader.join();
    ASSERT_TRUE(all);
    ASSERT_TRUE(read_ok);
    ursa_stats after;
    ursa_loop_stats(lp.get(), &after);
    // Timers (RunUntil's guard) take no SQE: every one counted is a send.
    uint64_t sends = after.sqes - before.sqes;
    unsigned per = batch ? batch : URSA_WRITE_BATCH;
    if (batch == 1)
      EXPECT_EQ((uint64_t)kWrites, sends);
    else if (batch == 1000)
      EXPECT_GE(sends, 3u) << "a send carried more than the byte budget";
    else
      EXPECT_LE(sends, (uint64_t)(1 + kWrites / per + 1)) << "not batched";
    EXPECT_TRUE(t::SameBytes(want, got));
    static bool closed;
    closed = false;
    ASSERT_EQ(0, ursa_stream_close(&s, [](ursa_handle *) { closed = true; }));
    ASSERT_TRUE(lp.RunUntil([&] { return closed; }));
    close(sv[1]);
    lp.Finish();
  }
  ursa_loop_options bad{};
  bad.write_batch = URSA_WRITE_BATCH_MAX + 1;
  ursa_loop *l = nullptr;
  EXPECT_EQ(-EINVAL, ursa_loop_new(&l, &bad));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "write_batch"));
}

}  // namespace

namespace {

struct Bounded {
  ursa_stream s{};
  size_t max_queued = 0;
  uint64_t echoed = 0;
  ssize_t ended = 0; /* the read's final status */
  bool closed = false;
};

void EchoBounded(ursa_stream *s, ssize_t n, const void *buf) {
  auto *b = static_cast<Bounded *>(s->data);
  if (n < 0) b->ended = n;
  if (n <= 0) return;
  struct W {
    ursa_write_req req{};
    std::vector<char> data;
  };
  auto *w = new W;
  w->data.assign((const char *)buf, (const char *)buf + n);
  w->req.data = w;
  ASSERT_EQ(0, ursa_write(&w->req, s, w->data.data(), w->data.size(), 0,
                          [](ursa_write_req *r, int) {
                            delete static_cast<W *>(r->data);
                          }));
  b->echoed += (uint64_t)n;
  b->max_queued = std::max(b->max_queued, ursa_write_queue_size(s));
}

// A stream over a socketpair on a loop with a small ring (8 x 16 KiB),
// echoing through EchoBounded; the test plays the peer on peer_
// (non-blocking).  The stream is closed and the loop finished at the end.
class Watermarks : public ::testing::TestWithParam<ursa_backend> {
 protected:
  void SetUp() override {
    ursa_loop_options o = t::OptionsFor(GetParam());
    o.buf_count = 8;
    o.buf_size = 16384;
    lp_.reset(new t::Loop(&o));
    ASSERT_EQ(0, lp_->status());
    int sv[2];
    ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
    peer_ = sv[1];
    fcntl(peer_, F_SETFL, O_NONBLOCK);
    ASSERT_EQ(0, ursa_stream_open(lp_->get(), &b_.s, sv[0]));
    b_.s.data = &b_;
  }
  // Sets the marks (and a read timeout unless 0) and starts echoing.
  void Start(size_t high, size_t low, uint32_t timeout_ms = 0) {
    ASSERT_EQ(0, ursa_stream_read_marks(&b_.s, high, low));
    if (timeout_ms) {
      ASSERT_EQ(0, ursa_read_timeout(&b_.s, timeout_ms));
    }
    ASSERT_EQ(0, ursa_read_start(&b_.s, EchoBounded));
  }
  void TearDown() override {
    if (b_.s.loop) {
      ASSERT_EQ(0, ursa_stream_close(&b_.s, [](ursa_handle *h) {
                  static_cast<Bounded *>(h->data)->closed = true;
                }));
      ASSERT_TRUE(lp_->RunUntil([&] { return b_.closed; }));
    }
    if (peer_ >= 0) close(peer_);
    if (lp_ && lp_->get()) lp_->Finish();
  }
  ursa_loop *loop() { return lp_->get(); }
  uint64_t Now() { return ursa_loop_now(loop()); }
  std::unique_ptr<t::Loop> lp_;
  Bounded b_;
  int peer_ = -1;
};

// A peer that sends and does not read cannot make the stream hold more
// than the high watermark plus what the kernel had already received into
// ring buffers when the pause took effect (here 8 x 16 KiB); once it reads,
// every byte arrives.
TEST_P(Watermarks, PeerThatDoesNotReadIsBounded) {
  EXPECT_EQ(-EINVAL, ursa_stream_read_marks(&b_.s, 1000, 1000));
  const size_t high = 256 << 10, low = 64 << 10;
  Start(high, low);
  std::vector<char> msg = t::RandomBytes(16 << 20, 77);
  size_t off = 0;
  // Push without reading anything back until the mark is reached, then
  // 300 ms more to see the queue stop growing (10 s at most: sanitizers are
  // slow).
  uint64_t cap = Now() + 10000, until = cap;
  while (Now() < until && off < msg.size()) {
    if (b_.max_queued >= high && until == cap) until = Now() + 300;
    ssize_t w = send(peer_, msg.data() + off, msg.size() - off, MSG_NOSIGNAL);
    if (w > 0) off += (size_t)w;
    ursa_loop_run(loop(), URSA_RUN_NOWAIT);
  }
  EXPECT_LE(b_.max_queued, high + 8 * 16384 + 16384)
      << "queue grew past the mark and the ring";
  EXPECT_GE(b_.max_queued, high) << "the mark was never reached";
  EXPECT_LT(off, msg.size()) << "the peer was never held back";
  // Now read everything: the rest flows and arrives whole.
  std::vector<char> got;
  char buf[65536];
  while (got.size() < msg.size()) {
    ssize_t w = off < msg.size() ? send(peer_, msg.data() + off,
                                        msg.size() - off, MSG_NOSIGNAL)
                                 : 0;
    if (w > 0) off += (size_t)w;
    ssize_t r = recv(peer_, buf, sizeof(buf), 0);
    if (r > 0) got.insert(got.end(), buf, buf + r);
    ursa_loop_run(loop(), URSA_RUN_NOWAIT);
  }
  EXPECT_TRUE(t::SameBytes(msg, got));
}

// A peer that fills the high watermark and then neither sends nor reads
// is the stall the read timeout is for: the read ends with -ETIMEDOUT
// although no recv is in flight while reading is paused.
TEST_P(Watermarks, ReadTimeoutEndsAPausedStall) {
  Start(64 << 10, 16 << 10, 200);
  std::vector<char> msg = t::RandomBytes(16 << 20, 78);
  size_t off = 0;
  // Push until the kernel's buffers are full too and reading stays paused
  // (queue above the low mark, 100 ms of sends refused), 10 s at most.
  uint64_t cap = Now() + 10000, last_sent = 0;
  while (Now() < cap) {
    ssize_t w = send(peer_, msg.data() + off, msg.size() - off, MSG_NOSIGNAL);
    if (w > 0) {
      off += (size_t)w;
      last_sent = Now();
    } else if (b_.max_queued >= (64u << 10) &&
               ursa_write_queue_size(&b_.s) > (16u << 10) &&
               Now() - last_sent >= 100) {
      break;
    }
    ursa_loop_run(loop(), URSA_RUN_NOWAIT);
  }
  ASSERT_GT(ursa_write_queue_size(&b_.s), 16u << 10)
      << "reading never stayed paused";
  uint64_t t0 = Now();
  ASSERT_TRUE(lp_->RunUntil([&] { return b_.ended != 0; }, 5000))
      << "a paused stall never timed out";
  uint64_t waited = Now() - t0;
  EXPECT_EQ(-ETIMEDOUT, b_.ended) << ursa_err_name((int)b_.ended);
  // The stream's last progress came at about the peer's last send (the
  // queues fill within milliseconds), so the 200 ms timer cannot have run
  // out much before 200 ms after it.
  EXPECT_GE(Now() - last_sent, 150u);
  EXPECT_LT(waited, 3000u);
}

// The same stall, but the peer drains its replies slowly: each send that
// gets through is progress, so the read timeout does not fire.
TEST_P(Watermarks, DrainingPeerIsNotTimedOut) {
  Start(64 << 10, 16 << 10, 300);
  std::vector<char> msg = t::RandomBytes(4 << 20, 79);
  size_t off = 0;
  std::vector<char> got;
  static char buf[65536];
  uint64_t end = Now() + 1500;
  // Send freely, read 64 KiB every 50 ms: slower than the sender, but one
  // send (at most a batch of 8 x 16 KiB) still completes well inside the
  // 300 ms the timeout allows.
  uint64_t next_read = 0;
  while (Now() < end) {
    ssize_t w = send(peer_, msg.data() + off, msg.size() - off, MSG_NOSIGNAL);
    if (w > 0) off += (size_t)w;
    if (Now() >= next_read) {
      ssize_t r = recv(peer_, buf, sizeof(buf), MSG_DONTWAIT);
      if (r > 0) got.insert(got.end(), buf, buf + r);
      next_read = Now() + 50;
    }
    ursa_loop_run(loop(), URSA_RUN_NOWAIT);
    usleep(1000);
  }
  EXPECT_EQ(0, b_.ended) << ursa_err_name((int)b_.ended);
  EXPECT_GE(b_.max_queued, 64u << 10) << "reading was never paused";
  EXPECT_TRUE(std::equal(got.begin(), got.end(), msg.begin()))
      << "replies arrived out of order or changed";
}

}  // namespace

namespace {

// Joins a reader thread on every way out of a test, failed asserts too:
// shutting the socket down ends a read that still waits.
struct JoinReader {
  std::thread &t;
  int fd;
  ~JoinReader() {
    if (!t.joinable()) return;
    shutdown(fd, SHUT_RDWR);
    t.join();
  }
};

// memcmp for 8 GiB, without the sanitizers' per-byte checks (the bytes
// compared are plain memory the test owns; the sanitizers still watch the
// library that moved them).
__attribute__((no_sanitize("address", "thread", "undefined"))) bool
SameMemory(const char *a, const char *b, size_t n) {
  uint64_t x, y;
  for (; n >= 8; n -= 8, a += 8, b += 8) {
    __builtin_memcpy(&x, a, 8);
    __builtin_memcpy(&y, b, 8);
    if (x != y) return false;
  }
  for (; n; n--)
    if (*a++ != *b++) return false;
  return true;
}

// Writes of 4 GiB and more: a send carries at most what the kernel's
// 32-bit lengths hold, so each goes out in pieces and arrives whole.  The
// first goes alone (4 GiB + 4 KiB); the second (exactly 4 GiB) starts
// alone, and a small write queued behind it later shares its sends.  The
// big buffer is mostly the zero page (untouched private memory), with
// patterns at its start and across the 4 GiB mark; the reader compares
// every byte with what was written.
class BigWrite : public ::testing::TestWithParam<ursa_backend> {};

TEST_P(BigWrite, WritesOf4GiBAndMoreArriveWhole) {
  const size_t kBig = (4ull << 30) + 4096, k4G = 4ull << 30;
  char *big = static_cast<char *>(mmap(nullptr, kBig, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS |
                                           MAP_NORESERVE,
                                       -1, 0));
  ASSERT_NE(MAP_FAILED, big) << strerror(errno);
  std::vector<char> head = t::RandomBytes(1 << 20, 71);
  std::vector<char> mark = t::RandomBytes(1 << 20, 72);
  memcpy(big, head.data(), head.size());
  memcpy(big + kBig - mark.size(), mark.data(), mark.size()); /* across 4 GiB */
  const char tail[8] = {'t', 'a', 'i', 'l', '-', 'e', 'n', 'd'};
  // The stream the reader must see: big[0, kBig), big[0, k4G), tail.
  auto expected = [&](size_t off, size_t *run) -> const char * {
    if (off < kBig) {
      *run = kBig - off;
      return big + off;
    }
    off -= kBig;
    if (off < k4G) {
      *run = k4G - off;
      return big + off;
    }
    off -= k4G;
    *run = off < sizeof(tail) ? sizeof(tail) - off : 0;
    return tail + off;
  };
  const size_t kTotal = kBig + k4G + sizeof(tail);
  int sv[2];
  ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
  size_t got = 0, bad_at = SIZE_MAX;
  std::thread reader([&] {
    std::vector<char> b(1 << 20);
    for (;;) {
      ssize_t n = read(sv[1], b.data(), b.size());
      if (n <= 0) break;
      for (size_t i = 0; i < (size_t)n;) {
        size_t run = 0;
        const char *want = expected(got + i, &run);
        run = std::min(run, (size_t)n - i);
        if (!run || !SameMemory(b.data() + i, want, run)) {
          if (bad_at == SIZE_MAX) bad_at = got + i;
          break;
        }
        i += run;
      }
      got += (size_t)n;
    }
  });
  JoinReader join{reader, sv[1]};
  {
    ursa_loop_options o0 = t::OptionsFor(GetParam());
    t::Loop lp(&o0);
    ASSERT_EQ(0, lp.status());
    struct W {
      ursa_write_req w{};
      int status = 1;
    } w1, w2, w3;
    ursa_stream s{};
    ASSERT_EQ(0, ursa_stream_open(lp.get(), &s, sv[0]));
    auto done = [](ursa_write_req *w, int st) {
      static_cast<W *>(w->data)->status = st;
    };
    w1.w.data = &w1;
    w2.w.data = &w2;
    w3.w.data = &w3;
    ASSERT_EQ(0, ursa_write(&w1.w, &s, big, kBig, 0, done));
    EXPECT_TRUE(lp.RunUntil([&] { return w1.status != 1; }, 120000));
    EXPECT_EQ(0, w1.status) << ursa_err_name(w1.status);
    EXPECT_EQ(kBig, w1.w.done);
    ASSERT_EQ(0, ursa_write(&w2.w, &s, big, k4G, 0, done));
    ASSERT_GE(ursa_loop_run(lp.get(), URSA_RUN_NOWAIT), 0);
    ASSERT_EQ(0, ursa_write(&w3.w, &s, tail, sizeof(tail), 0, done));
    EXPECT_TRUE(lp.RunUntil([&] { return w2.status != 1 && w3.status != 1; },
                            120000));
    EXPECT_EQ(0, w2.status) << ursa_err_name(w2.status);
    EXPECT_EQ(k4G, w2.w.done);
    EXPECT_EQ(0, w3.status) << ursa_err_name(w3.status);
    ASSERT_TRUE(lp.CloseStreams({&s}));
    lp.Finish();
  }
  reader.join();
  close(sv[1]);
  EXPECT_EQ(kTotal, got);
  EXPECT_EQ(SIZE_MAX, bad_at) << "first wrong byte at " << bad_at;
  munmap(big, kBig);
}

// A connected pair of plain sockets: AF_UNIX from socketpair, or TCP over
// 127.0.0.1.
bool ConnectedPair(int family, int sv[2]) {
  if (family == AF_UNIX)
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0;
  sockaddr_storage ss;
  socklen_t len = t::LoopbackAddr(family, &ss);
  int l = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0 || bind(l, (sockaddr *)&ss, len) || listen(l, 1) ||
      getsockname(l, (sockaddr *)&ss, &len))
    return false;
  sv[1] = t::BlockingConnect(ss, len);
  sv[0] = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  close(l);
  return sv[0] >= 0 && sv[1] >= 0;
}

struct Zw {
  ursa_write_req w{};
  int status = 1;
};
void ZwDone(ursa_write_req *w, int st) { static_cast<Zw *>(w->data)->status = st; }

// A zero-copy send the kernel refuses (a Unix socket has no zero-copy
// path; a TCP send over RLIMIT_MEMLOCK cannot pin its pages) while a
// cancel or a close is pending ends as cancelled, never as the refusal:
// the stream stays whole and later writes go out.
void ZeroCopyRefusalUnderCancel(int family, size_t size, bool low_memlock) {
  ursa_loop_options o{};
  o.zc_threshold = 1024;
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  ursa_features f;
  ursa_loop_features(lp.get(), &f);
  if (!(f.used & URSA_FEAT_SEND_ZC)) GTEST_SKIP() << "needs SEND_ZC (6.0)";
  // 4 MiB cannot be pinned under a 256 KiB RLIMIT_MEMLOCK.
  struct rlimit old_rl, low;
  ASSERT_EQ(0, getrlimit(RLIMIT_MEMLOCK, &old_rl));
  low = old_rl;
  low.rlim_cur = 256 << 10;
  if (low_memlock) {
    ASSERT_EQ(0, setrlimit(RLIMIT_MEMLOCK, &low));
  }
  struct Restore {
    rlimit rl;
    ~Restore() { setrlimit(RLIMIT_MEMLOCK, &rl); }
  } restore{old_rl};
  int sv[2];
  ASSERT_TRUE(ConnectedPair(family, sv));
  std::vector<char> first = t::RandomBytes(size, 81),
                    second = t::RandomBytes(size, 82);
  std::vector<char> got;
  std::thread reader([&] {
    std::vector<char> b(1 << 16);
    ssize_t n;
    while ((n = read(sv[1], b.data(), b.size())) > 0)
      got.insert(got.end(), b.data(), b.data() + n);
  });
  JoinReader join{reader, sv[1]};
  ursa_stream s{};
  ASSERT_EQ(0, ursa_stream_open(lp.get(), &s, sv[0]));
  Zw w1, w2, w3;
  w1.w.data = &w1;
  w2.w.data = &w2;
  w3.w.data = &w3;
  ASSERT_EQ(0, ursa_write(&w1.w, &s, first.data(), first.size(), 0, ZwDone));
  ASSERT_EQ(0, ursa_cancel(lp.get(), &w1.w.op));
  ASSERT_TRUE(lp.RunUntil([&] { return w1.status != 1; }));
  EXPECT_TRUE(w1.status == 0 || w1.status == -ECANCELED)
      << ursa_err_name(w1.status);
  ASSERT_EQ(0, ursa_write(&w2.w, &s, second.data(), second.size(), 0, ZwDone))
      << "the stream was torn by a cancelled write";
  ASSERT_TRUE(lp.RunUntil([&] { return w2.status != 1; }));
  EXPECT_EQ(0, w2.status) << ursa_err_name(w2.status);
  // Closed with a write in flight: cancelled (or sent), not refused.
  ASSERT_EQ(0, ursa_write(&w3.w, &s, second.data(), second.size(), 0, ZwDone));
  ASSERT_TRUE(lp.CloseStreams({&s}));
  EXPECT_NE(1, w3.status) << "the write was not called back before close";
  EXPECT_TRUE(w3.status == 0 || w3.status == -ECANCELED)
      << ursa_err_name(w3.status);
  lp.Finish();
  reader.join();
  close(sv[1]);
  // What each write reports as sent is what arrived, in order (a close
  // may cut the last one short).
  std::vector<char> want(first.begin(), first.begin() + w1.w.done);
  EXPECT_EQ(second.size(), w2.w.done);
  want.insert(want.end(), second.begin(), second.begin() + w2.w.done);
  want.insert(want.end(), second.begin(), second.begin() + w3.w.done);
  EXPECT_TRUE(t::SameBytes(want, got));
}

TEST(ZeroCopy, RefusedSendUnderCancelKeepsAUnixStreamWhole) {
  ZeroCopyRefusalUnderCancel(AF_UNIX, 64 << 10, false);
}

TEST(ZeroCopy, RefusedSendUnderCancelKeepsATcpStreamWhole) {
  ZeroCopyRefusalUnderCancel(AF_INET, 4 << 20, true);
}

// The suites above that take no ring variant run on each backend.
#define ON_EACH_BACKEND(suite)                                         \
  INSTANTIATE_TEST_SUITE_P(Backends, suite,                            \
                           ::testing::ValuesIn(t::kBackends,           \
                                               t::kBackends + 2),      \
                           t::BackendName)
ON_EACH_BACKEND(StreamArgs);
ON_EACH_BACKEND(Ipv6);
ON_EACH_BACKEND(WriteBatch);
ON_EACH_BACKEND(Watermarks);
ON_EACH_BACKEND(BigWrite);

}  // namespace
