// unix_test.cc - Unix domain stream and seqpacket sockets: byte-exact
// transfers over paths and abstract names, message boundaries, oversized
// messages, and the socket file's life (stale, live, not a socket, removed).
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <pthread.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "tests/testutil.h"

namespace {

struct Msgs;

class Unix : public ::testing::TestWithParam<t::Variant> {
 protected:
  void SetUp() override {
    dir_ = tmp_.path();
    t::ApplyVariant(GetParam(), &opts_);
    lp_.reset(new t::Loop(&opts_));
    ASSERT_EQ(0, lp_->status());
  }
  void TearDown() override {
    if (lp_) lp_->Finish();
  }
  ursa_addr Addr(const std::string &name) {
    ursa_addr a;
    std::string text = name[0] == '@' ? "unix:" + name + std::to_string(getpid())
                                      : "unix:" + dir_ + "/" + name;
    EXPECT_EQ(0, ursa_addr_parse(text.c_str(), &a)) << ursa_error_detail();
    return a;
  }
  std::string Path(const std::string &name) { return dir_ + "/" + name; }
  // A seqpacket listener at name, a plain socket connected to it (*fd),
  // and that connection accepted into m->s.
  void SeqpacketPair(const std::string &name, ursa_listener *l, Msgs *m,
                     int *fd);
  // Closes the listener and the accepted stream (the test closes *fd).
  void CloseSeqpacketPair(ursa_listener *l, Msgs *m);
  ursa_loop *loop() { return lp_->get(); }
  bool RunUntil(const std::function<bool()> &f) { return lp_->RunUntil(f); }
  void Echo(const ursa_addr &at, unsigned flags, size_t bytes, size_t chunk) {
    t::EchoServer srv(loop(), at, flags);
    std::vector<std::unique_ptr<t::EchoClient>> cs;
    for (int i = 0; i < 4; i++)
      cs.emplace_back(new t::EchoClient(loop(), at.ss, at.len,
                                        t::RandomBytes(bytes, 60 + i), chunk,
                                        flags));
    ASSERT_TRUE(RunUntil([&] { return t::AllDone(cs); }));
    for (auto &c : cs) {
      EXPECT_EQ(0, c->connect_status) << ursa_err_name(c->connect_status);
      EXPECT_TRUE(t::SameBytes(c->payload, c->got));
    }
    srv.Close();
    ASSERT_TRUE(RunUntil([&] { return srv.closed(); }));
  }
  t::TempDir tmp_{"ursa-unix"};
  std::string dir_;
  ursa_loop_options opts_{};
  std::unique_ptr<t::Loop> lp_;
};

TEST_P(Unix, StreamOverPathEchoesByteForByte) {
  Echo(Addr("s.sock"), 0, 3 << 20, 0);
  struct stat st;
  EXPECT_NE(0, lstat(Path("s.sock").c_str(), &st))
      << "closing the listener leaves its socket file";
}

TEST_P(Unix, StreamOverAbstractNameEchoesByteForByte) {
  Echo(Addr("@ursa-test-stream-"), 0, 1 << 20, 1000);
}

TEST_P(Unix, SeqpacketEchoesByteForByte) {
  Echo(Addr("q.sock"), URSA_SEQPACKET, 200000, 1500);
}

struct Msgs {
  ursa_stream s{};
  bool have = false;
  std::vector<std::vector<char>> got;
  int status = 0;
  bool closed = false;
};
void TakeOne(ursa_listener *l, int st) {
  auto *m = static_cast<Msgs *>(l->data);
  if (st < 0 || m->have) return;
  ASSERT_EQ(0, ursa_accept(l, &m->s));
  m->s.data = m;
  m->have = true;
}
void ReadMsg(ursa_stream *s, ssize_t n, const void *buf) {
  auto *m = static_cast<Msgs *>(s->data);
  if (n < 0) {
    m->status = (int)n;
    return;
  }
  m->got.emplace_back((const char *)buf, (const char *)buf + n);
}
void MsgsClosed(ursa_handle *h) { static_cast<Msgs *>(h->data)->closed = true; }
void ListenerClosed(ursa_handle *h) { *static_cast<bool *>(h->data) = true; }

void Unix::SeqpacketPair(const std::string &name, ursa_listener *l, Msgs *m,
                         int *fd) {
  ursa_addr at = Addr(name);
  l->data = m;
  ASSERT_EQ(0, ursa_listen(loop(), l, (sockaddr *)&at.ss, at.len, 0,
                           URSA_SEQPACKET, TakeOne));
  *fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  ASSERT_EQ(0, connect(*fd, (sockaddr *)&at.ss, at.len));
  ASSERT_TRUE(RunUntil([&] { return m->have; }));
}

void Unix::CloseSeqpacketPair(ursa_listener *l, Msgs *m) {
  bool lclosed = false;
  l->data = &lclosed;
  ASSERT_EQ(0, ursa_listener_close(l, ListenerClosed));
  ASSERT_EQ(0, ursa_stream_close(&m->s, MsgsClosed));
  ASSERT_TRUE(RunUntil([&] { return lclosed && m->closed; }));
}

TEST_P(Unix, SeqpacketKeepsMessageBoundaries) {
  Msgs m;
  ursa_listener l{};
  int fd = -1;
  SeqpacketPair("b.sock", &l, &m, &fd);
  if (HasFatalFailure()) return;
  ASSERT_EQ(0, ursa_read_start(&m.s, ReadMsg));
  std::vector<std::vector<char>> sent;
  fcntl(fd, F_SETFL, O_NONBLOCK);
  for (int i = 0; i < 200; i++) {
    sent.push_back(t::RandomBytes(1 + (i * 97) % 16000, 500 + i));
    ssize_t r;
    // The socket's queue is short: let the loop drain it when full.
    while ((r = send(fd, sent.back().data(), sent.back().size(), 0)) < 0 &&
           errno == EAGAIN)
      ursa_loop_run(loop(), URSA_RUN_ONCE);
    ASSERT_EQ((ssize_t)sent.back().size(), r) << strerror(errno);
  }
  ASSERT_TRUE(RunUntil([&] { return m.got.size() >= sent.size(); }));
  ASSERT_EQ(sent.size(), m.got.size());
  for (size_t i = 0; i < sent.size(); i++)
    EXPECT_TRUE(t::SameBytes(sent[i], m.got[i])) << "message " << i;
  close(fd);
  ASSERT_TRUE(RunUntil([&] { return m.status != 0; }));
  EXPECT_EQ(URSA_EOF, m.status);
  CloseSeqpacketPair(&l, &m);
}

// Writes queued together on a seqpacket stream leave as one message each,
// never joined into one sendmsg.
TEST_P(Unix, QueuedSeqpacketWritesStayMessages) {
  Msgs m;
  ursa_listener l{};
  int fd = -1;
  SeqpacketPair("w.sock", &l, &m, &fd);
  if (HasFatalFailure()) return;
  std::vector<std::vector<char>> sent;
  std::vector<ursa_write_req> ws(40);
  int done = 0;
  for (size_t i = 0; i < ws.size(); i++) {
    sent.push_back(t::RandomBytes(100 + i, 700 + (uint32_t)i));
    ws[i].data = &done;
    ASSERT_EQ(0, ursa_write(&ws[i], &m.s, sent[i].data(), sent[i].size(), 0,
                            [](ursa_write_req *w, int st) {
                              EXPECT_EQ(0, st);
                              ++*static_cast<int *>(w->data);
                            }));
  }
  ASSERT_TRUE(RunUntil([&] { return done == (int)ws.size(); }));
  char buf[4096];
  for (size_t i = 0; i < sent.size(); i++) {
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    ASSERT_EQ((ssize_t)sent[i].size(), n) << "message " << i;
    EXPECT_EQ(0, memcmp(buf, sent[i].data(), sent[i].size()));
  }
  close(fd);
  CloseSeqpacketPair(&l, &m);
}

// A gather write on a seqpacket stream is one message of all its buffers,
// and the writes around it stay messages of their own; one of more buffers
// than the loop's write_batch is refused (it could not be one sendmsg).
TEST_P(Unix, SeqpacketGatherWriteIsOneMessage) {
  Msgs m;
  ursa_listener l{};
  int fd = -1;
  SeqpacketPair("g.sock", &l, &m, &fd);
  if (HasFatalFailure()) return;
  std::vector<char> a = t::RandomBytes(100, 1), b = t::RandomBytes(2000, 2),
                    c = t::RandomBytes(37, 3);
  iovec v[12];
  std::vector<char> whole;
  for (int i = 0; i < 12; i++) {
    const std::vector<char> &src = i % 3 == 0 ? a : i % 3 == 1 ? b : c;
    v[i] = {(void *)src.data(), src.size()};
    whole.insert(whole.end(), src.begin(), src.end());
  }
  int done = 0;
  auto cb = [](ursa_write_req *w, int st) {
    EXPECT_EQ(0, st);
    ++*static_cast<int *>(w->data);
  };
  ursa_write_req w0{}, w1{}, w2{};
  w0.data = w1.data = w2.data = &done;
  ASSERT_EQ(0, ursa_write(&w0, &m.s, c.data(), c.size(), 0, cb));
  ASSERT_EQ(0, ursa_writev(&w1, &m.s, v, 12, 0, cb));
  ASSERT_EQ(0, ursa_write(&w2, &m.s, a.data(), a.size(), 0, cb));
  ASSERT_TRUE(RunUntil([&] { return done == 3; }));
  EXPECT_EQ(whole.size(), w1.done);
  std::vector<char> buf(65536);
  const std::vector<char> *want[3] = {&c, &whole, &a};
  for (int i = 0; i < 3; i++) {
    ssize_t n = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    ASSERT_EQ((ssize_t)want[i]->size(), n) << "message " << i;
    EXPECT_EQ(0, memcmp(buf.data(), want[i]->data(), want[i]->size()));
  }
  std::vector<iovec> many(URSA_WRITE_BATCH + 1, iovec{(void *)a.data(), 1});
  ursa_write_req w3{};
  EXPECT_EQ(-EINVAL, ursa_writev(&w3, &m.s, many.data(),
                                 (unsigned)many.size(), 0, cb));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "seqpacket"));
  close(fd);
  CloseSeqpacketPair(&l, &m);
}

TEST_P(Unix, SeqpacketMessageLargerThanABufferIsAnError) {
  lp_->Finish();
  opts_.buf_size = 1024;
  lp_.reset(new t::Loop(&opts_));
  ASSERT_EQ(0, lp_->status());
  Msgs m;
  ursa_listener l{};
  int fd = -1;
  SeqpacketPair("big.sock", &l, &m, &fd);
  if (HasFatalFailure()) return;
  ASSERT_EQ(0, ursa_read_start(&m.s, ReadMsg));
  std::vector<char> fits = t::RandomBytes(1024, 1), big = t::RandomBytes(1025, 2);
  ASSERT_EQ(1024, send(fd, fits.data(), fits.size(), 0));
  ASSERT_EQ(1025, send(fd, big.data(), big.size(), 0));
  ASSERT_TRUE(RunUntil([&] { return m.status != 0; }));
  EXPECT_EQ(-EMSGSIZE, m.status) << ursa_err_name(m.status);
  ASSERT_EQ(1u, m.got.size()) << "the cut message was passed on";
  EXPECT_TRUE(t::SameBytes(fits, m.got[0]));
  close(fd);
  CloseSeqpacketPair(&l, &m);
}

TEST_P(Unix, StaleSocketFileIsReplacedLiveOneIsNot) {
  ursa_addr at = Addr("stale.sock");
  // A socket bound and closed without unlinking: what a crash leaves.
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_EQ(0, bind(fd, (sockaddr *)&at.ss, at.len));
  close(fd);
  ursa_listener l{}, l2{};
  ASSERT_EQ(0, ursa_listen(loop(), &l, (sockaddr *)&at.ss, at.len, 0, 0,
                           TakeOne))
      << ursa_error_detail();
  // Now someone listens there: a second listener must not steal the path.
  EXPECT_EQ(-EADDRINUSE, ursa_listen(loop(), &l2, (sockaddr *)&at.ss, at.len,
                                     0, 0, TakeOne));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "listening"));
  struct stat st;
  ASSERT_EQ(0, lstat(Path("stale.sock").c_str(), &st));
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  bool lclosed = false;
  l.data = &lclosed;
  ASSERT_EQ(0, ursa_listener_close(&l, ListenerClosed));
  ASSERT_TRUE(RunUntil([&] { return lclosed; }));
  EXPECT_NE(0, lstat(Path("stale.sock").c_str(), &st)) << "file left behind";
}

TEST_P(Unix, FileThatIsNotASocketIsNeverRemoved) {
  std::string p = Path("data.txt");
  int fd = open(p.c_str(), O_CREAT | O_WRONLY, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(5, write(fd, "keep!", 5));
  close(fd);
  ursa_addr at = Addr("data.txt");
  ursa_listener l{};
  EXPECT_EQ(-EEXIST, ursa_listen(loop(), &l, (sockaddr *)&at.ss, at.len, 0, 0,
                                 TakeOne));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "not a socket"));
  struct stat st;
  ASSERT_EQ(0, stat(p.c_str(), &st));
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(5, st.st_size);
}

TEST_P(Unix, ReplacedFileIsNotRemovedByTheOldListener) {
  ursa_addr at = Addr("moved.sock");
  ursa_listener l{};
  ASSERT_EQ(0, ursa_listen(loop(), &l, (sockaddr *)&at.ss, at.len, 0, 0,
                           TakeOne));
  // Another program takes the path over while we run.
  std::string p = Path("moved.sock");
  ASSERT_EQ(0, unlink(p.c_str()));
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_EQ(0, bind(fd, (sockaddr *)&at.ss, at.len));
  bool lclosed = false;
  l.data = &lclosed;
  ASSERT_EQ(0, ursa_listener_close(&l, ListenerClosed));
  ASSERT_TRUE(RunUntil([&] { return lclosed; }));
  struct stat st;
  EXPECT_EQ(0, lstat(p.c_str(), &st)) << "removed a file it did not make";
  close(fd);
}

void NoteStatus(ursa_stream *s, int st) { *static_cast<int *>(s->data) = st; }

// A connect to a Unix listener whose backlog is full waits for room (as a
// blocking connect(2) does: on io_uring in the kernel, on epoll by trying
// again every few milliseconds), and a timeout bounds the wait.  The one
// that gets in carries its bytes.
TEST_P(Unix, ConnectToAFullBacklogWaitsForRoomOrTimesOut) {
  ursa_addr at = Addr("full.sock");
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  ASSERT_GE(l, 0);
  ASSERT_EQ(0, bind(l, (sockaddr *)&at.ss, at.len));
  ASSERT_EQ(0, listen(l, 0));
  std::vector<int> fillers;
  for (;;) {
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ASSERT_GE(c, 0);
    if (connect(c, (sockaddr *)&at.ss, at.len) == 0) {
      fillers.push_back(c);
      continue;
    }
    ASSERT_EQ(EAGAIN, errno) << strerror(errno);
    close(c);
    break;
  }
  ASSERT_FALSE(fillers.empty());

  ursa_stream a{};
  int sa = 1;
  a.data = &sa;
  uint64_t t0 = ursa_loop_now(loop());
  ASSERT_EQ(0, ursa_connect(loop(), &a, (sockaddr *)&at.ss, at.len, 0, 150,
                            NoteStatus));
  ASSERT_TRUE(RunUntil([&] { return sa != 1; }));
  EXPECT_EQ(-ETIMEDOUT, sa) << ursa_err_name(sa);
  EXPECT_GE(ursa_loop_now(loop()) - t0, 140u);
  ASSERT_TRUE(lp_->CloseStreams({&a}));

  ursa_stream b{};
  int sb = 1;
  b.data = &sb;
  ASSERT_EQ(0, ursa_connect(loop(), &b, (sockaddr *)&at.ss, at.len, 0, 0,
                            NoteStatus));
  ursa_timer wait{};
  static bool waited;
  waited = false;
  ASSERT_EQ(0, ursa_timer_start(loop(), &wait, 100, 0,
                                [](ursa_timer *, int) { waited = true; }));
  // RUN_ONCE waits for a callback: the connect's tries on epoll wake the
  // loop without one, and it waits on.
  ASSERT_EQ(1, ursa_loop_run(loop(), URSA_RUN_ONCE));
  EXPECT_TRUE(waited) << "RUN_ONCE returned with nothing called back";
  ASSERT_TRUE(RunUntil([&] { return waited; }));
  EXPECT_EQ(1, sb) << "connected into a full backlog: "
                   << ursa_err_name(sb);
  int first = accept(l, nullptr, nullptr); /* room for one */
  ASSERT_GE(first, 0) << strerror(errno);
  ASSERT_TRUE(RunUntil([&] { return sb != 1; }));
  ASSERT_EQ(0, sb) << ursa_err_name(sb);
  ursa_write_req w{};
  static int wst;
  wst = 1;
  ASSERT_EQ(0, ursa_write(&w, &b, "hello", 5, 0,
                          [](ursa_write_req *, int st) { wst = st; }));
  ASSERT_TRUE(RunUntil([&] { return wst != 1; }));
  EXPECT_EQ(0, wst);
  // b's connection waits behind the other fillers: exactly one of the
  // accepted sockets has its bytes.
  int got = 0;
  for (int c; (c = accept(l, nullptr, nullptr)) >= 0; close(c)) {
    char buf[8];
    if (recv(c, buf, sizeof(buf), MSG_DONTWAIT) == 5 &&
        memcmp(buf, "hello", 5) == 0)
      got++;
  }
  EXPECT_EQ(1, got);
  ASSERT_TRUE(lp_->CloseStreams({&b}));
  close(first);
  for (int c : fillers) close(c);
  close(l);
}

TEST_P(Unix, SeqpacketFlagNeedsAUnixAddress) {
  sockaddr_storage ss;
  socklen_t len = t::LoopbackAddr(AF_INET, &ss);
  ursa_listener l{};
  EXPECT_EQ(-EINVAL, ursa_listen(loop(), &l, (sockaddr *)&ss, len, 0,
                                 URSA_SEQPACKET, TakeOne));
  EXPECT_NE(nullptr, strstr(ursa_error_detail(), "seqpacket"));
}

// A live listener whose backlog is full still counts as live: the probe
// that tells a stale socket file from a live one must not wait for room in
// that backlog.
TEST(UnixPath, ListenerWithAFullBacklogIsLiveAndListenDoesNotBlock) {
  t::TempDir dir("ursa-full");
  ursa_addr at;
  std::string text = "unix:" + dir.path() + "/full.sock";
  ASSERT_EQ(0, ursa_addr_parse(text.c_str(), &at));
  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_EQ(0, bind(lfd, (sockaddr *)&at.ss, at.len));
  ASSERT_EQ(0, listen(lfd, 0));
  std::vector<int> clients;
  for (int i = 0; i < 64; i++) {
    int c = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int r = connect(c, (sockaddr *)&at.ss, at.len);
    clients.push_back(c);
    if (r < 0 && errno == EAGAIN) break;
  }
  ASSERT_LT(clients.size(), 64u) << "the backlog never filled";
  std::atomic<int> result{1};
  std::thread th([&] {
    ursa_loop *loop = nullptr;
    if (ursa_loop_new(&loop, nullptr)) return;
    ursa_listener l{};
    result = ursa_listen(loop, &l, (sockaddr *)&at.ss, at.len, 0, 0, TakeOne);
    ursa_loop_close(loop);
  });
  for (int i = 0; i < 300 && result == 1; i++) usleep(10000);
  bool blocked = result == 1;
  EXPECT_FALSE(blocked) << "ursa_listen blocked on a full backlog";
  // Unblock a blocked probe (room in the backlog lets its connect finish).
  while (result == 1) {
    int c = accept(lfd, nullptr, nullptr);
    if (c >= 0) close(c);
    usleep(10000);
  }
  th.join();
  EXPECT_EQ(-EADDRINUSE, result.load()) << ursa_err_name(result);
  for (int c : clients) close(c);
  close(lfd);
  struct stat st;
  EXPECT_EQ(0, lstat((dir.path() + "/full.sock").c_str(), &st))
      << "the live listener's file was removed";
}

// Two listeners, each on a loop of its own on its own thread, race for one
// stale socket file, round after round: exactly one wins, the other hears
// -EADDRINUSE, and the file on the path is the winner's, reachable.
TEST(UnixPath, ListenersRacingForAStaleFileNeverBothWin) {
  t::TempDir dir("ursa-race");
  ursa_addr at;
  std::string path = dir.path() + "/race.sock";
  ASSERT_EQ(0, ursa_addr_parse(("unix:" + path).c_str(), &at));
  const int kRounds = 300;
  // Each round: go (the stale file is there), listened, checked, cleaned.
  pthread_barrier_t go, listened, checked, cleaned;
  for (auto *b : {&go, &listened, &checked, &cleaned})
    pthread_barrier_init(b, nullptr, 3);
  std::atomic<int> rs[2];
  std::atomic<int> made[2];
  auto contender = [&](int k) {
    ursa_loop *loop = nullptr;
    made[k] = ursa_loop_new(&loop, nullptr);
    for (int round = 0; round < kRounds; round++) {
      ursa_listener l{};
      pthread_barrier_wait(&go);
      rs[k] = made[k] ? made[k].load()
                      : ursa_listen(loop, &l, (sockaddr *)&at.ss, at.len, 0,
                                    0, TakeOne);
      pthread_barrier_wait(&listened);
      pthread_barrier_wait(&checked);
      if (rs[k] == 0) {
        bool closed = false;
        l.data = &closed;
        ursa_listener_close(&l, ListenerClosed);
        while (!closed) ursa_loop_run(loop, URSA_RUN_ONCE);
      }
      pthread_barrier_wait(&cleaned);
    }
    if (!made[k]) ursa_loop_close(loop);
  };
  std::thread a(contender, 0), b(contender, 1);
  int both = 0, neither = 0, unreachable = 0;
  for (int round = 0; round < kRounds; round++) {
    int stale = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_EQ(0, bind(stale, (sockaddr *)&at.ss, at.len)) << strerror(errno);
    close(stale);
    pthread_barrier_wait(&go);
    pthread_barrier_wait(&listened);
    // The path is checked while both listeners are still open.
    int wins = (rs[0] == 0) + (rs[1] == 0);
    if (wins == 2) both++;
    if (wins == 0 && neither++ == 0)
      ADD_FAILURE() << "neither listened: " << ursa_err_name(rs[0]) << " and "
                    << ursa_err_name(rs[1]);
    if (wins == 1) {
      int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (connect(c, (sockaddr *)&at.ss, at.len) != 0) unreachable++;
      close(c);
      EXPECT_EQ(-EADDRINUSE, rs[0] == 0 ? rs[1].load() : rs[0].load());
    }
    pthread_barrier_wait(&checked);
    pthread_barrier_wait(&cleaned);
    unlink(path.c_str());
  }
  a.join();
  b.join();
  for (auto *bar : {&go, &listened, &checked, &cleaned})
    pthread_barrier_destroy(bar);
  EXPECT_EQ(0, made[0].load());
  EXPECT_EQ(0, made[1].load());
  EXPECT_EQ(0, both) << "both listeners said they listen, in " << both
                     << " of " << kRounds << " rounds";
  EXPECT_EQ(0, neither);
  EXPECT_EQ(0, unreachable);
}

INSTANTIATE_TEST_SUITE_P(Rings, Unix,
                         ::testing::ValuesIn(t::kVariants,
                                             t::kVariants + t::kNumVariants),
                         t::VariantName);

}  // namespace
