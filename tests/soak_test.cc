// soak_test.cc - many connections doing random things against an echo
// server on one loop with a tiny buffer ring: whole echoes, resets in the
// middle, closes without reading, reconnects.  Bounded in time (2 s, or
// URSA_SOAK_SECONDS); at the end every completed echo matched byte for byte,
// every receive buffer is back in the ring, descriptors are back to where
// they started and the loop closes clean.
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/time.h>
#include <unistd.h>

#include <memory>
#include <random>

#include "tests/testutil.h"

namespace {

int OpenFds() {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

enum Plan { kWhole, kReset, kNoRead };

struct Agent {
  ursa_loop *loop;
  const sockaddr_storage *addr;
  socklen_t len;
  std::mt19937 *rng;
  const bool *stop;
  ursa_stream s{};
  Plan plan;
  std::vector<char> sent, got;
  std::vector<std::unique_ptr<ursa_write_req>> writes;
  int writes_left = 0;
  bool busy = false;  // a connection is open or closing
  bool closing = false;
  int cycles = 0, whole = 0, mismatched = 0, errors = 0;
  uint64_t bytes = 0;

  void Start() {
    if (*stop) return;
    plan = (Plan)((*rng)() % 3);
    sent = t::RandomBytes(1 + (*rng)() % 60000, (*rng)());
    got.clear();
    writes.clear();
    writes_left = 0;
    closing = false;
    s = ursa_stream{};
    s.data = this;
    busy = true;
    if (ursa_connect(loop, &s, (const sockaddr *)addr, len, 0, 2000,
                     OnConnect) < 0) {
      errors++;
      busy = false;
    }
  }
  void Close() {
    if (closing) return;
    closing = true;
    ursa_stream_close(&s, OnClosed);
  }
  static void OnConnect(ursa_stream *s, int st) {
    auto *a = static_cast<Agent *>(s->data);
    if (st < 0) {
      a->errors++;
      a->Close();
      return;
    }
    if (a->plan != kNoRead) ursa_read_start(s, OnRead);
    size_t off = 0;
    while (off < a->sent.size()) {
      size_t n = std::min<size_t>(1 + (*a->rng)() % 9000, a->sent.size() - off);
      a->writes.emplace_back(new ursa_write_req{});
      a->writes.back()->data = a;
      if (ursa_write(a->writes.back().get(), s, a->sent.data() + off, n, 0,
                     OnWritten) == 0)
        a->writes_left++;
      off += n;
    }
    if (a->plan == kWhole) ursa_shutdown(s, [](ursa_stream *, int) {});
    if (a->plan == kReset || a->plan == kNoRead) {
      // Part way: reset (SO_LINGER 0) or just close without reading.
      if (a->plan == kReset) {
        struct linger lg = {1, 0};
        setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
      }
      a->Close();
    }
  }
  static void OnWritten(ursa_write_req *w, int st) {
    auto *a = static_cast<Agent *>(w->data);
    a->writes_left--;
    if (st < 0 && st != -ECANCELED && a->plan == kWhole) a->errors++;
  }
  static void OnRead(ursa_stream *s, ssize_t n, const void *buf) {
    auto *a = static_cast<Agent *>(s->data);
    if (n > 0) {
      a->got.insert(a->got.end(), (const char *)buf, (const char *)buf + n);
      return;
    }
    if (a->plan == kWhole) {
      if (n == URSA_EOF && a->got == a->sent) {
        a->whole++;
        a->bytes += a->sent.size();
      } else {
        a->mismatched++;
      }
    }
    a->Close();
  }
  static void OnClosed(ursa_handle *h) {
    auto *a = static_cast<Agent *>(h->data);
    a->busy = false;
    a->cycles++;
    a->Start();  // reconnect with a new plan, until time is up
  }
};

// A signal every millisecond: waits interrupted by EINTR lose nothing.
void OnAlarm(int) {}

class Soak : public ::testing::TestWithParam<ursa_backend> {};

TEST_P(Soak, RandomResetsHalfClosesAndReconnectsLoseNothing) {
  double secs = getenv("URSA_SOAK_SECONDS") ? atof(getenv("URSA_SOAK_SECONDS"))
                                            : 2.0;
  int fds0 = OpenFds();
  struct sigaction sa = {};
  sa.sa_handler = OnAlarm;
  sigaction(SIGALRM, &sa, nullptr);
  struct itimerval it = {{0, 1000}, {0, 1000}};
  setitimer(ITIMER_REAL, &it, nullptr);
  {
    ursa_loop_options o = t::OptionsFor(GetParam());
    o.buf_count = 16;
    o.buf_size = 1024;
    t::Loop lp(&o);
    ASSERT_EQ(0, lp.status());
    t::EchoServer srv(lp.get(), AF_INET);
    std::mt19937 rng(12345);
    bool stop = false;
    std::vector<std::unique_ptr<Agent>> agents;
    for (int i = 0; i < 32; i++) {
      agents.emplace_back(new Agent);
      Agent &a = *agents.back();
      a.loop = lp.get();
      a.addr = &srv.addr();
      a.len = srv.addrlen();
      a.rng = &rng;
      a.stop = &stop;
      a.Start();
    }
    uint64_t end = ursa_loop_now(lp.get()) + (uint64_t)(secs * 1000);
    ASSERT_TRUE(lp.RunUntil([&] { return ursa_loop_now(lp.get()) >= end; },
                            (int)(secs * 1000) + 20000));
    stop = true;
    ASSERT_TRUE(lp.RunUntil([&] {
      for (auto &a : agents)
        if (a->busy) return false;
      return true;
    }));
    srv.Close();
    ASSERT_TRUE(lp.RunUntil([&] { return srv.closed(); }));
    int cycles = 0, whole = 0, mismatched = 0, errors = 0;
    uint64_t bytes = 0;
    for (auto &a : agents) {
      cycles += a->cycles;
      whole += a->whole;
      mismatched += a->mismatched;
      errors += a->errors;
      bytes += a->bytes;
    }
    ursa_stats st;
    ursa_loop_stats(lp.get(), &st);
    printf("soak: %.1f s, %d connections, %d whole echoes (%llu bytes), "
           "%llu ENOBUFS, %llu re-arms\n", secs, cycles, whole,
           (unsigned long long)bytes, (unsigned long long)st.enobufs,
           (unsigned long long)st.rearms);
    EXPECT_EQ(0, mismatched) << "an echo came back different";
    EXPECT_EQ(0, errors);
    EXPECT_GT(whole, 10) << "too little work to mean anything";
    EXPECT_GT(st.enobufs, 0u) << "the tiny ring never ran dry";
    EXPECT_EQ(0u, st.bufs_out) << "buffers missing from the ring";
    lp.Finish();
  }
  struct itimerval off = {};
  setitimer(ITIMER_REAL, &off, nullptr);
  EXPECT_EQ(fds0, OpenFds()) << "descriptors leaked";
}

INSTANTIATE_TEST_SUITE_P(Backends, Soak,
                         ::testing::ValuesIn(t::kBackends, t::kBackends + 2),
                         t::BackendName);

}  // namespace
