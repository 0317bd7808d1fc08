// stream_test.cc - making and closing TCP streams over IPv4 and IPv6 under
// every ring variant (stream.c, listener.c): accept, both addresses,
// direct descriptors, resets, half-close, close with operations in
// flight, connect errors and timeouts, bad arguments, dual-stack.
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

#include "tests/stream_util.h"

namespace {

using namespace st;

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
  // A descriptor that is no stream at all (a pipe is one: process_test).
  int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ursa_stream notstream{};
  EXPECT_EQ(-EINVAL, ursa_stream_open(lp.get(), &notstream, u));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "not a stream socket"));
  close(u);
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

ON_EACH_BACKEND(StreamArgs);
ON_EACH_BACKEND(Ipv6);
INSTANTIATE_TEST_SUITE_P(
    Rings, Stream,
    ::testing::Combine(::testing::ValuesIn(t::kVariants,
                                           t::kVariants + t::kNumVariants),
                       ::testing::Values(AF_INET, AF_INET6)),
    ParamName);

}  // namespace
