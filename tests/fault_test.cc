// fault_test.cc - the runtime under resource exhaustion: out of descriptors
// (or direct-descriptor slots) while accepting, and rings too small for the
// load.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/testutil.h"

namespace {

int CountOpenFds() {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  while (readdir(d)) n++;
  closedir(d);
  return n - 3;  // ".", ".." and the DIR's own descriptor
}

struct EmfileServer {
  ursa_listener l{};
  ursa_stream streams[64]{};
  bool open[64]{};
  int accepted = 0;
  int emfile = 0;
  int closed = 0;
};

void CloseStreamCb(ursa_handle *h) {
  static_cast<EmfileServer *>(h->data)->closed++;
}

void OnEmfileConnection(ursa_listener *l, int status) {
  auto *srv = static_cast<EmfileServer *>(l->data);
  if (status == -EMFILE || status == -ENFILE) {
    // Out of descriptors: free every one this server holds.
    srv->emfile++;
    for (int i = 0; i < srv->accepted && i < 64; i++) {
      if (!srv->open[i]) continue;
      srv->open[i] = false;
      ursa_stream_close(&srv->streams[i], CloseStreamCb);
    }
    return;
  }
  if (status < 0 || srv->accepted >= 64) return;
  int i = srv->accepted++;
  if (ursa_accept(l, &srv->streams[i]) == 0) {
    srv->streams[i].data = srv;
    srv->open[i] = true;
  }
}

// The child serves with RLIMIT_NOFILE three above what it has open; the
// parent connects ten clients.  Exit status 0 when all ten were accepted
// after at least one EMFILE, without spinning on it.
int EmfileChild(int port_pipe, ursa_backend backend) {
  // Valgrind keeps setrlimit(RLIMIT_NOFILE) to itself: the kernel, which
  // allocates the accepted descriptors, never sees the lower limit.
  const char *pre = getenv("LD_PRELOAD");
  if (pre && strstr(pre, "vgpreload")) return 10;
  ursa_loop_options o = t::OptionsFor(backend);
  t::Loop lp(&o);
  if (lp.status()) return 20;
  EmfileServer srv;
  srv.l.data = &srv;
  sockaddr_storage ss;
  socklen_t len = t::LoopbackAddr(AF_INET, &ss);
  if (ursa_listen(lp.get(), &srv.l, (sockaddr *)&ss, len, 64, 0,
                  OnEmfileConnection))
    return 21;
  socklen_t al;
  if (ursa_listener_addr(&srv.l, &ss, &al)) return 22;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = (rlim_t)CountOpenFds() + 3 + 1 /* the port pipe */;
  if (setrlimit(RLIMIT_NOFILE, &rl)) return 23;
  uint16_t port = t::PortOf(ss);
  if (write(port_pipe, &port, sizeof(port)) != sizeof(port)) return 24;
  close(port_pipe);
  uint64_t t0 = ursa_loop_now(lp.get());
  if (!lp.RunUntil([&] { return srv.accepted == 10; }, 10000)) return 25;
  uint64_t ms = ursa_loop_now(lp.get()) - t0;
  if (srv.emfile == 0) return 26;
  // The listener waits URSA_ACCEPT_BACKOFF_MS between tries: no spinning.
  if ((uint64_t)srv.emfile > ms / URSA_ACCEPT_BACKOFF_MS + 5) return 27;
  for (int i = 0; i < srv.accepted; i++)
    if (srv.open[i]) {
      srv.open[i] = false;
      ursa_stream_close(&srv.streams[i], CloseStreamCb);
    }
  static bool lclosed;
  lclosed = false;
  ursa_listener_close(&srv.l, [](ursa_handle *) { lclosed = true; });
  if (!lp.RunUntil([&] { return lclosed && srv.closed == srv.accepted; }))
    return 28;
  lp.Finish();
  return ::testing::Test::HasFailure() ? 29 : 0;
}

class FaultOnEachBackend : public ::testing::TestWithParam<ursa_backend> {};

TEST_P(FaultOnEachBackend, EmfileDuringAcceptBacksOffAndRecovers) {
  int p[2];
  ASSERT_EQ(0, pipe(p));
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(p[0]);
    int step = EmfileChild(p[1], GetParam());
    if (step) fprintf(stderr, "emfile child: failed at step %d\n", step);
    _exit(step);
  }
  close(p[1]);
  uint16_t port = 0;
  ssize_t got = read(p[0], &port, sizeof(port));
  close(p[0]);
  if (got != (ssize_t)sizeof(port)) {
    int st = 0;
    ASSERT_EQ(pid, waitpid(pid, &st, 0));
    if (WIFEXITED(st) && WEXITSTATUS(st) == 10)
      GTEST_SKIP() << "valgrind does not lower the kernel's RLIMIT_NOFILE";
    FAIL() << "child ended before listening, status " << st;
  }
  sockaddr_storage ss;
  socklen_t len = t::LoopbackAddr(AF_INET, &ss, port);
  std::vector<int> fds;
  for (int i = 0; i < 10; i++) {
    int fd = t::BlockingConnect(ss, len);
    EXPECT_GE(fd, 0) << ursa_strerror(fd);
    fds.push_back(fd);
  }
  int st = 0;
  ASSERT_EQ(pid, waitpid(pid, &st, 0));
  for (int fd : fds) close(fd);
  ASSERT_TRUE(WIFEXITED(st));
  if (WEXITSTATUS(st) == 10) GTEST_SKIP() << "valgrind does not lower the kernel's RLIMIT_NOFILE";
  EXPECT_EQ(0, WEXITSTATUS(st)) << "child failed at step " << WEXITSTATUS(st);
}

// A direct-descriptor table of 3 slots and 10 clients: while every slot is
// taken the listener reports -ENFILE and backs off instead of spinning, no
// connection is reset for want of a slot (the kernel would reset one that
// met a full table), and every client is accepted once slots are freed.
// None of it uses the process's descriptor table.
TEST(Fault, DirectTableFullBacksOffAndRecovers) {
  ursa_loop_options o{};
  o.direct_files = 3;
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  ursa_features f;
  ursa_loop_features(lp.get(), &f);
  if (!(f.used & URSA_FEAT_DIRECT_FILES))
    GTEST_SKIP() << "the kernel refused a direct-descriptor table";
  EmfileServer srv;
  srv.l.data = &srv;
  sockaddr_storage ss;
  socklen_t len = t::LoopbackAddr(AF_INET, &ss);
  ASSERT_EQ(0, ursa_listen(lp.get(), &srv.l, (sockaddr *)&ss, len, 64, 0,
                           OnEmfileConnection));
  socklen_t al;
  ASSERT_EQ(0, ursa_listener_addr(&srv.l, &ss, &al));
  std::vector<int> fds;
  for (int i = 0; i < 10; i++) {
    int fd = t::BlockingConnect(ss, al);
    ASSERT_GE(fd, 0) << ursa_strerror(fd);
    fds.push_back(fd);
  }
  int open0 = CountOpenFds();
  uint64_t t0 = ursa_loop_now(lp.get());
  ASSERT_TRUE(lp.RunUntil([&] { return srv.accepted == 10; }, 10000))
      << "accepted " << srv.accepted << " with " << srv.emfile << " ENFILE";
  uint64_t ms = ursa_loop_now(lp.get()) - t0;
  EXPECT_GT(srv.emfile, 0) << "the 3-slot table never filled";
  EXPECT_LE((uint64_t)srv.emfile, ms / URSA_ACCEPT_BACKOFF_MS + 5)
      << "ENFILE " << srv.emfile << " times in " << ms << " ms: spinning";
  EXPECT_EQ(open0, CountOpenFds()) << "accepted streams took descriptors";
  // Every client still has a live connection: none was reset.
  for (int fd : fds) {
    char c = 'x';
    EXPECT_EQ(1, send(fd, &c, 1, MSG_NOSIGNAL));
  }
  for (int i = 0; i < srv.accepted; i++) {
    EXPECT_EQ(-1, srv.streams[i].fd);
    if (srv.open[i]) {
      srv.open[i] = false;
      ursa_stream_close(&srv.streams[i], CloseStreamCb);
    }
  }
  static bool lclosed;
  lclosed = false;
  ursa_listener_close(&srv.l, [](ursa_handle *) { lclosed = true; });
  ASSERT_TRUE(lp.RunUntil([&] { return lclosed && srv.closed == 10; }));
  for (int fd : fds) close(fd);
  lp.Finish();
}

// Rings far too small for the load: the SQ fills (ops wait their turn) and
// the CQ overflows (the kernel holds completions back and ends multishot
// operations, which are armed again; epoll's queue grows instead), and the
// buffers run dry.  Every byte still arrives.
TEST_P(FaultOnEachBackend, TinyRingsLoseNothing) {
  ursa_loop_options o = t::OptionsFor(GetParam());
  o.sq_entries = 2;
  o.cq_entries = 2;
  o.buf_count = 4;
  o.buf_size = 512;
  t::Loop lp(&o);
  ASSERT_EQ(0, lp.status());
  t::EchoServer srv(lp.get(), AF_INET);
  std::vector<std::unique_ptr<t::EchoClient>> clients;
  for (int i = 0; i < 64; i++)
    clients.emplace_back(new t::EchoClient(lp.get(), srv.addr(), srv.addrlen(),
                                           t::RandomBytes(20000, 3000 + i),
                                           1000));
  ASSERT_TRUE(lp.RunUntil([&] { return t::AllDone(clients); }));
  for (auto &c : clients) {
    EXPECT_EQ(0, c->connect_status);
    EXPECT_TRUE(t::SameBytes(c->payload, c->got));
  }
  ursa_stats st;
  ursa_loop_stats(lp.get(), &st);
  if (GetParam() == URSA_BACKEND_URING) {
    EXPECT_GT(st.cq_overflows, 0u) << "the CQ never overflowed";
  }
  EXPECT_GT(st.rearms, 0u);
  EXPECT_GT(st.enobufs, 0u) << "the 4 buffers never ran out";
  EXPECT_EQ(0u, st.cq_dropped);
  srv.Close();
  ASSERT_TRUE(lp.RunUntil([&] { return srv.closed(); }));
  clients.clear();
  lp.Finish();
}

INSTANTIATE_TEST_SUITE_P(Backends, FaultOnEachBackend,
                         ::testing::ValuesIn(t::kBackends, t::kBackends + 2),
                         t::BackendName);

}  // namespace
